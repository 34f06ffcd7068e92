//! Amazon SNS HTTP(S) subscription messages, the way SES reaches Omni without EventBridge
//! (`POST /webhooks/ses`): received email (a receipt rule's SNS action) and event publishing
//! (a configuration set's SNS destination).
//!
//! Wire facts (SNS developer guide, "Verifying the signatures of Amazon SNS messages" and
//! "Parsing message formats"): the body is JSON, sent as `text/plain`, with `Type`
//! (`SubscriptionConfirmation`, `Notification`, `UnsubscribeConfirmation`), `MessageId`,
//! `TopicArn`, `Message` (for SES a JSON document as a string), `Timestamp`,
//! `SignatureVersion` (`1`: RSA PKCS#1 v1.5 over SHA-1, `2`: over SHA-256), `Signature`
//! (base64), `SigningCertURL` and, for the confirmations, `SubscribeURL` and `Token`. The
//! signed string is `key\nvalue\n` for each of a fixed list of keys in a fixed order
//! ([`SnsMessage::string_to_sign`]); the key is the RSA public key of the PEM X.509 certificate
//! at `SigningCertURL`.
//!
//! Trust: the certificate is fetched only over HTTPS from `sns.<region>.amazonaws.com` (or
//! `.amazonaws.com.cn`) with a `.pem` path, so TLS (the web PKI roots of rustls) vouches that it
//! is AWS's; its own chain is not walked again. `OMNI_SNS_CERT_URL_PREFIX` replaces that rule
//! for tests and emulators (any URL starting with the prefix, e.g. `http://127.0.0.1:9000/`).
//! The `SubscribeURL` Omni calls to confirm a subscription is held to the same rule.
//!
//! No freshness window is enforced on `Timestamp`: AWS recommends none, SNS redelivers with the
//! original `Timestamp` and signature for as long as the topic's delivery policy says (up to
//! hours), and a replayed message is harmless: received email is deduplicated by SES's
//! `mail.messageId` and statuses only move forward.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::Engine;
use serde::Deserialize;
use tracing::warn;

/// The largest SNS body read: SNS messages are at most 256 KiB, SES receipt notifications
/// carry at most 150 KB of email; JSON escaping can double that.
pub const MAX_BODY: usize = 1024 * 1024;
/// Certificates kept in memory: SNS signs with one certificate per region at a time.
const MAX_CACHED_CERTS: usize = 32;
/// The largest certificate read (SNS's are under 2 KiB).
const MAX_CERT: usize = 16 * 1024;

/// Why an SNS message is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SnsError {
    /// Not an SNS message Omni can read.
    #[error("not an SNS message: {0}")]
    Malformed(&'static str),
    /// The certificate or subscription URL is not AWS's (or the configured test prefix's).
    #[error("the SNS {0} is not an Amazon SNS URL")]
    UntrustedUrl(&'static str),
    /// The signature does not verify under the certificate's key.
    #[error("the SNS signature does not verify")]
    BadSignature,
    /// The certificate URL answered, but with no usable RSA certificate (SNS always has one
    /// at the URLs it signs with: the message is not SNS's).
    #[error("the SNS signing certificate is unusable: {0}")]
    UnusableCertificate(&'static str),
    /// The certificate host could not be reached or failed (5xx); a retry may work.
    #[error("the SNS signing certificate is unavailable: {0}")]
    Certificate(String),
    /// SNS refused the confirmation (4xx: e.g. an expired token); no retry helps.
    #[error("SNS refused the subscription confirmation (HTTP {0})")]
    ConfirmationRefused(u16),
    /// The `SubscribeURL` could not be reached or failed (5xx); a retry may work.
    #[error("the SNS subscription could not be confirmed: {0}")]
    Confirmation(String),
}

/// What an SNS message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SnsType {
    /// Sent once a subscription is created: confirmed by calling `SubscribeURL`.
    SubscriptionConfirmation,
    /// A published message.
    Notification,
    /// Sent once the subscription is deleted.
    UnsubscribeConfirmation,
}

/// An SNS HTTP(S) message, as posted.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SnsMessage {
    /// What it is.
    #[serde(rename = "Type")]
    pub kind: SnsType,
    /// SNS's id of the message (unique per publish, kept across redeliveries).
    pub message_id: String,
    /// The topic it was published to.
    pub topic_arn: String,
    /// Notifications only, when the publisher gave one.
    #[serde(default)]
    pub subject: Option<String>,
    /// The payload (for SES, a JSON document as a string).
    pub message: String,
    /// When SNS published it (ISO 8601).
    pub timestamp: String,
    /// `1` (SHA-1) or `2` (SHA-256).
    pub signature_version: String,
    /// Base64 RSA signature.
    pub signature: String,
    /// Where the signing certificate is.
    #[serde(rename = "SigningCertURL")]
    pub signing_cert_url: String,
    /// Confirmations only: the URL that confirms the subscription.
    #[serde(default, rename = "SubscribeURL")]
    pub subscribe_url: Option<String>,
    /// Confirmations only: the confirmation token.
    #[serde(default)]
    pub token: Option<String>,
}

impl SnsMessage {
    /// Parses a posted body (whatever its content type: SNS says `text/plain`).
    pub fn parse(body: &[u8]) -> Result<Self, SnsError> {
        if body.len() > MAX_BODY {
            return Err(SnsError::Malformed("the body is too large"));
        }
        serde_json::from_slice(body).map_err(|_| SnsError::Malformed("the body is not SNS JSON"))
    }

    /// The string SNS signed: each present key of the documented list as `key\nvalue\n`, in
    /// the documented order.
    pub fn string_to_sign(&self) -> Result<String, SnsError> {
        let mut fields: Vec<(&str, &str)> =
            vec![("Message", &self.message), ("MessageId", &self.message_id)];
        match self.kind {
            SnsType::Notification => {
                if let Some(subject) = &self.subject {
                    fields.push(("Subject", subject));
                }
                fields.push(("Timestamp", &self.timestamp));
            }
            SnsType::SubscriptionConfirmation | SnsType::UnsubscribeConfirmation => {
                let url = self
                    .subscribe_url
                    .as_deref()
                    .ok_or(SnsError::Malformed("a confirmation has no SubscribeURL"))?;
                let token = self
                    .token
                    .as_deref()
                    .ok_or(SnsError::Malformed("a confirmation has no Token"))?;
                fields.extend([
                    ("SubscribeURL", url),
                    ("Timestamp", &self.timestamp),
                    ("Token", token),
                ]);
            }
        }
        fields.push(("TopicArn", &self.topic_arn));
        let kind = match self.kind {
            SnsType::SubscriptionConfirmation => "SubscriptionConfirmation",
            SnsType::Notification => "Notification",
            SnsType::UnsubscribeConfirmation => "UnsubscribeConfirmation",
        };
        fields.push(("Type", kind));
        Ok(fields
            .into_iter()
            .map(|(k, v)| format!("{k}\n{v}\n"))
            .collect())
    }

    /// Checks the signature against a certificate's RSA public key (the SPKI's subject public
    /// key: the PKCS#1 `RSAPublicKey` DER).
    pub fn verify_with_key(&self, public_key: &[u8]) -> Result<(), SnsError> {
        let algorithm: &dyn ring::signature::VerificationAlgorithm =
            match self.signature_version.as_str() {
                "1" => &ring::signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
                "2" => &ring::signature::RSA_PKCS1_2048_8192_SHA256,
                _ => return Err(SnsError::Malformed("unknown SignatureVersion")),
            };
        let signature = base64::engine::general_purpose::STANDARD
            .decode(self.signature.trim())
            .map_err(|_| SnsError::BadSignature)?;
        let signed = self.string_to_sign()?;
        ring::signature::UnparsedPublicKey::new(algorithm, public_key)
            .verify(signed.as_bytes(), &signature)
            .map_err(|_| SnsError::BadSignature)
    }
}

/// Whether a topic ARN is well formed: `arn:<partition>:sns:<region>:<12-digit account>:<name>`.
pub fn valid_topic_arn(arn: &str) -> bool {
    let parts: Vec<&str> = arn.split(':').collect();
    let [scheme, partition, service, region, account, name] = parts.as_slice() else {
        return false;
    };
    *scheme == "arn"
        && partition.starts_with("aws")
        && partition
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b == b'-')
        && *service == "sns"
        && super::valid_region(region)
        && account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && (1..=256).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// Which URLs Omni trusts as SNS's: AWS's hosts, or a configured prefix (tests, emulators).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlRule {
    prefix: String,
}

impl UrlRule {
    /// AWS's rule when `prefix` is empty; otherwise any URL starting with `prefix`, taken as
    /// ending in `/` (so `http://127.0.0.1:9000` does not also allow port 90001).
    pub fn new(prefix: &str) -> Self {
        let prefix = match prefix {
            "" => String::new(),
            p if p.ends_with('/') => p.to_string(),
            p => format!("{p}/"),
        };
        UrlRule { prefix }
    }

    /// Whether `url` may be fetched; `pem` for a signing certificate (its path must end in
    /// `.pem`).
    pub fn allows(&self, url: &str, pem: bool) -> bool {
        if !self.prefix.is_empty() {
            return url.starts_with(&self.prefix);
        }
        let Ok(parsed) = url::Url::parse(url) else {
            return false;
        };
        let host = parsed.host_str().unwrap_or_default();
        let region = host
            .strip_prefix("sns.")
            .and_then(|h| {
                h.strip_suffix(".amazonaws.com")
                    .or_else(|| h.strip_suffix(".amazonaws.com.cn"))
            })
            .unwrap_or_default();
        parsed.scheme() == "https"
            && parsed.port().is_none()
            && parsed.username().is_empty()
            && parsed.password().is_none()
            && super::valid_region(region)
            && (!pem || parsed.path().ends_with(".pem"))
    }
}

/// Verifies SNS messages (certificates cached by URL) and confirms subscriptions.
pub struct SnsVerifier {
    http: reqwest::Client,
    rule: UrlRule,
    /// Certificate URL → RSA public key; bounded, emptied when full.
    keys: Mutex<HashMap<String, Arc<Vec<u8>>>>,
}

impl SnsVerifier {
    /// A verifier fetching with `http` under `rule`.
    pub fn new(http: reqwest::Client, rule: UrlRule) -> Self {
        SnsVerifier {
            http,
            rule,
            keys: Mutex::new(HashMap::new()),
        }
    }

    /// Checks that `message` is SNS's: trusted certificate URL, valid signature.
    pub async fn verify(&self, message: &SnsMessage) -> Result<(), SnsError> {
        if !self.rule.allows(&message.signing_cert_url, true) {
            return Err(SnsError::UntrustedUrl("SigningCertURL"));
        }
        let key = self.public_key(&message.signing_cert_url).await?;
        message.verify_with_key(&key)
    }

    /// Confirms a (verified) subscription by calling its `SubscribeURL`.
    pub async fn confirm(&self, message: &SnsMessage) -> Result<(), SnsError> {
        let url = message
            .subscribe_url
            .as_deref()
            .ok_or(SnsError::Malformed("a confirmation has no SubscribeURL"))?;
        if !self.rule.allows(url, false) {
            return Err(SnsError::UntrustedUrl("SubscribeURL"));
        }
        let response = self.http.get(url).send().await.map_err(|e| {
            if e.is_builder() {
                SnsError::UntrustedUrl("SubscribeURL")
            } else {
                SnsError::Confirmation(e.without_url().to_string())
            }
        })?;
        let status = response.status();
        if status.is_client_error() {
            return Err(SnsError::ConfirmationRefused(status.as_u16()));
        }
        if !status.is_success() {
            return Err(SnsError::Confirmation(format!(
                "SNS answered HTTP {}",
                status.as_u16()
            )));
        }
        Ok(())
    }

    async fn public_key(&self, url: &str) -> Result<Arc<Vec<u8>>, SnsError> {
        if let Some(key) = self.cached(url) {
            return Ok(key);
        }
        let unavailable = |e: reqwest::Error| {
            if e.is_builder() {
                SnsError::UntrustedUrl("SigningCertURL")
            } else {
                SnsError::Certificate(e.without_url().to_string())
            }
        };
        let mut response = self.http.get(url).send().await.map_err(unavailable)?;
        let status = response.status();
        if status.is_server_error() {
            return Err(SnsError::Certificate(format!("HTTP {}", status.as_u16())));
        }
        if !status.is_success() {
            return Err(SnsError::UnusableCertificate("no certificate at that URL"));
        }
        let mut pem = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(unavailable)? {
            if pem.len() + chunk.len() > MAX_CERT {
                return Err(SnsError::UnusableCertificate("too large"));
            }
            pem.extend_from_slice(&chunk);
        }
        let key = Arc::new(public_key_from_pem(&pem)?);
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        if keys.len() >= MAX_CACHED_CERTS {
            warn!("SNS certificate cache full: emptied");
            keys.clear();
        }
        keys.insert(url.to_string(), key.clone());
        Ok(key)
    }

    fn cached(&self, url: &str) -> Option<Arc<Vec<u8>>> {
        self.keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(url)
            .cloned()
    }
}

/// The RSA public key (PKCS#1 `RSAPublicKey` DER, as ring takes it) of a PEM X.509
/// certificate.
pub fn public_key_from_pem(pem: &[u8]) -> Result<Vec<u8>, SnsError> {
    use x509_cert::der::DecodePem;
    let certificate = x509_cert::Certificate::from_pem(pem)
        .map_err(|_| SnsError::UnusableCertificate("not a PEM X.509 certificate"))?;
    let spki = certificate.tbs_certificate.subject_public_key_info;
    // rsaEncryption (1.2.840.113549.1.1.1): SNS signs with RSA only.
    if spki.algorithm.oid.to_string() != "1.2.840.113549.1.1.1" {
        return Err(SnsError::UnusableCertificate("not an RSA key"));
    }
    spki.subject_public_key
        .as_bytes()
        .map(<[u8]>::to_vec)
        .ok_or(SnsError::UnusableCertificate("the key is not whole bytes"))
}

#[cfg(test)]
pub(crate) mod test_key {
    //! The test-only SNS signing key, `tests/fixtures/keys/sns-test-private.pem` (made with
    //! `openssl genrsa 2048 | openssl pkcs8 -topk8 -nocrypt`), and its self-signed certificate
    //! `sns-test-cert.pem` (`openssl req -new -x509 -days 36500 -subj
    //! /CN=sns.test-only.omni.invalid`). Used nowhere but tests. ring signs SHA-256 only:
    //! `tests/fixtures/sns_ses_received_v1.json` is a SignatureVersion 1 (SHA-1) message signed
    //! with `openssl dgst -sha1 -sign sns-test-private.pem` over its string to sign.
    use super::*;

    fn read(name: &str) -> String {
        std::fs::read_to_string(format!(
            "{}/../../tests/fixtures/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    /// The certificate, PEM.
    pub fn cert_pem() -> String {
        read("keys/sns-test-cert.pem")
    }

    /// The OpenSSL-signed SignatureVersion 1 notification (an SES receipt notification).
    pub fn signed_v1() -> SnsMessage {
        SnsMessage::parse(read("sns_ses_received_v1.json").as_bytes()).unwrap()
    }

    /// Signs `message` as SNS would with SignatureVersion 2 (SHA-256).
    pub fn sign(message: &mut SnsMessage) {
        let der: String = read("keys/sns-test-private.pem")
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(der)
            .unwrap();
        let key = ring::signature::RsaKeyPair::from_pkcs8(&der).unwrap();
        message.signature_version = "2".into();
        let mut signature = vec![0; key.public().modulus_len()];
        key.sign(
            &ring::signature::RSA_PKCS1_SHA256,
            &ring::rand::SystemRandom::new(),
            message.string_to_sign().unwrap().as_bytes(),
            &mut signature,
        )
        .unwrap();
        message.signature = base64::engine::general_purpose::STANDARD.encode(signature);
    }
}

#[cfg(test)]
mod tests {
    use super::test_key::*;
    use super::*;
    use serde_json::json;
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    const TOPIC: &str = "arn:aws:sns:eu-west-1:123456789012:omni-ses";

    fn notification(cert_url: &str) -> SnsMessage {
        let mut m: SnsMessage = serde_json::from_value(json!({
            "Type": "Notification",
            "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
            "TopicArn": TOPIC,
            "Subject": "Amazon SES Email Receipt Notification",
            "Message": "{\"notificationType\":\"Received\"}\nline two",
            "Timestamp": "2026-11-30T12:00:00.000Z",
            "SignatureVersion": "2",
            "Signature": "",
            "SigningCertURL": cert_url,
        }))
        .unwrap();
        sign(&mut m);
        m
    }

    #[test]
    fn the_string_to_sign_follows_the_documented_order() {
        let mut m = notification("https://sns.eu-west-1.amazonaws.com/x.pem");
        assert_eq!(
            m.string_to_sign().unwrap(),
            format!(
                "Message\n{{\"notificationType\":\"Received\"}}\nline two\nMessageId\n\
                 22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324\nSubject\nAmazon SES Email Receipt \
                 Notification\nTimestamp\n2026-11-30T12:00:00.000Z\nTopicArn\n{TOPIC}\nType\n\
                 Notification\n"
            )
        );
        m.subject = None;
        assert!(!m.string_to_sign().unwrap().contains("Subject"));
        m.kind = SnsType::SubscriptionConfirmation;
        assert_eq!(
            m.string_to_sign(),
            Err(SnsError::Malformed("a confirmation has no SubscribeURL"))
        );
        m.subscribe_url =
            Some("https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription".into());
        m.token = Some("tok".into());
        assert!(m.string_to_sign().unwrap().ends_with(
            "SubscribeURL\nhttps://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription\n\
             Timestamp\n2026-11-30T12:00:00.000Z\nToken\ntok\nTopicArn\n\
             arn:aws:sns:eu-west-1:123456789012:omni-ses\nType\nSubscriptionConfirmation\n"
        ));
    }

    #[test]
    fn signatures_of_both_versions_verify_and_tampering_does_not() {
        let key = public_key_from_pem(cert_pem().as_bytes()).unwrap();
        let v2 = notification("https://sns.eu-west-1.amazonaws.com/x.pem");
        for m in [signed_v1(), v2] {
            m.verify_with_key(&key).unwrap();
            let mut tampered = m.clone();
            tampered.message.push(' ');
            assert_eq!(tampered.verify_with_key(&key), Err(SnsError::BadSignature));
            let mut other = m.clone();
            other.signature_version = if m.signature_version == "1" { "2" } else { "1" }.into();
            assert_eq!(other.verify_with_key(&key), Err(SnsError::BadSignature));
            let mut garbage = m.clone();
            garbage.signature = "not base64!".into();
            assert_eq!(garbage.verify_with_key(&key), Err(SnsError::BadSignature));
        }
        let mut unknown = notification("https://sns.eu-west-1.amazonaws.com/x.pem");
        unknown.signature_version = "3".into();
        assert!(matches!(
            unknown.verify_with_key(&key),
            Err(SnsError::Malformed(_))
        ));
        assert!(public_key_from_pem(
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
        )
        .is_err());
    }

    #[test]
    fn only_aws_sns_hosts_are_trusted_without_a_prefix() {
        let aws = UrlRule::new("");
        for ok in [
            "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
            "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-abc.pem",
        ] {
            assert!(aws.allows(ok, true), "{ok}");
        }
        for bad in [
            "http://sns.us-east-1.amazonaws.com/x.pem",
            "https://sns.us-east-1.amazonaws.com/x.txt",
            "https://sns.us-east-1.amazonaws.com.evil.example/x.pem",
            "https://evil.example/sns.us-east-1.amazonaws.com/x.pem",
            "https://sns.evil.example.amazonaws.com.attacker.net/x.pem",
            "https://sns..amazonaws.com/x.pem",
            "https://s3.us-east-1.amazonaws.com/x.pem",
            "https://sns.us-east-1.amazonaws.com:8443/x.pem",
            "https://user@sns.us-east-1.amazonaws.com/x.pem",
            "not a url",
        ] {
            assert!(!aws.allows(bad, true), "{bad}");
        }
        assert!(aws.allows(
            "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&Token=x",
            false
        ));
        let local = UrlRule::new("http://127.0.0.1:9");
        assert!(local.allows("http://127.0.0.1:9/cert.pem", true));
        assert!(!local.allows("http://127.0.0.1:90/cert.pem", true));
        assert!(!local.allows("https://sns.us-east-1.amazonaws.com/x.pem", true));
    }

    #[test]
    fn topic_arns_are_checked() {
        assert!(valid_topic_arn(TOPIC));
        assert!(valid_topic_arn(
            "arn:aws-cn:sns:cn-north-1:123456789012:a.fifo"
        ));
        for bad in [
            "",
            "arn:aws:sqs:eu-west-1:123456789012:q",
            "arn:aws:sns:eu-west-1:1234:q",
            "arn:aws:sns:eu-west-1:123456789012:",
            "arn:aws:sns:eu-west-1:123456789012:a:b",
            "arn:aws:sns:EU:123456789012:a",
        ] {
            assert!(!valid_topic_arn(bad), "{bad}");
        }
    }

    #[tokio::test]
    async fn the_certificate_is_fetched_once_and_confirmations_call_the_subscribe_url() {
        let aws = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/cert.pem"))
            .respond_with(ResponseTemplate::new(200).set_body_string(cert_pem()))
            .expect(1)
            .mount(&aws)
            .await;
        Mock::given(method("GET"))
            .and(path("/confirm"))
            .respond_with(ResponseTemplate::new(200))
            .expect(1)
            .mount(&aws)
            .await;
        let verifier = SnsVerifier::new(reqwest::Client::new(), UrlRule::new(&aws.uri()));
        let m = notification(&format!("{}/cert.pem", aws.uri()));
        verifier.verify(&m).await.unwrap();
        verifier.verify(&m).await.unwrap();
        let mut forged = m.clone();
        forged.topic_arn = "arn:aws:sns:eu-west-1:123456789012:other".into();
        assert_eq!(verifier.verify(&forged).await, Err(SnsError::BadSignature));
        let mut elsewhere = m.clone();
        elsewhere.signing_cert_url = "https://sns.eu-west-1.amazonaws.com/cert.pem".into();
        assert_eq!(
            verifier.verify(&elsewhere).await,
            Err(SnsError::UntrustedUrl("SigningCertURL"))
        );

        let mut confirmation = m.clone();
        confirmation.kind = SnsType::SubscriptionConfirmation;
        confirmation.subscribe_url = Some(format!("{}/confirm", aws.uri()));
        confirmation.token = Some("token".into());
        verifier.confirm(&confirmation).await.unwrap();
        confirmation.subscribe_url = Some("https://attacker.example/confirm".into());
        assert_eq!(
            verifier.confirm(&confirmation).await,
            Err(SnsError::UntrustedUrl("SubscribeURL"))
        );
    }

    #[test]
    fn bodies_that_are_not_sns_messages_are_refused() {
        for body in [
            &b"{}"[..],
            b"not json",
            br#"{"Type":"Other","MessageId":"1","TopicArn":"a","Message":"m","Timestamp":"t","SignatureVersion":"1","Signature":"s","SigningCertURL":"u"}"#,
        ] {
            assert!(SnsMessage::parse(body).is_err());
        }
        assert!(SnsMessage::parse(&vec![b' '; MAX_BODY + 1]).is_err());
    }
}
