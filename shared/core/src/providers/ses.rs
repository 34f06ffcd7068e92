//! Amazon SES v2: email out through `SendEmail`, signed with AWS Signature Version 4.
//!
//! Wire facts (SES API v2 reference): a send is `POST {base}/v2/email/outbound-emails` with a
//! JSON body of `FromEmailAddress`, `Destination.ToAddresses`,
//! `Content.Simple.{Subject,Body.Text}.{Data,Charset}` and `EmailTags` (`Name`/`Value`, letters,
//! digits, `_` and `-`; they come back in SES's event records); it answers `200
//! {"MessageId"}`. Errors are JSON with the exception name in `X-Amzn-ErrorType` (or the
//! body's `__type`/`code`) and `message`: throttling and `TooManyRequestsException`, `429` and
//! `5xx` are worth retrying; `MessageRejected`, `MailFromDomainNotVerifiedException`,
//! `AccountSuspendedException`, `BadRequestException`, `NotFoundException` and signature or
//! credential errors are not.
//!
//! The base URL is `https://email.{region}.amazonaws.com`, or `OMNI_SES_API_URL` (a sandbox or
//! an emulator). Requests are signed with SigV4 (service `ses`, the tenant's region) by a short
//! implementation on the tree's hmac and sha2, tested against AWS's published example, rather
//! than with the AWS SDK, which omni-core does not depend on.
//!
//! Receiving email and delivery events go through SNS with SES; they are not wired: SES
//! messages are `sent` once SES accepts them.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::{
    carries, email_text, named_failure, network_error, retry_after, Credentials,
    MessagingProviderAdapter, ParseError, VerifyError, WebhookRequest,
};
use crate::domain::{
    Channel, DeliveryStatus, OutboundMessage, ProviderKind, SendError, SendResult, WebhookEvent,
};

/// The SigV4 service name of SES (v1 and v2 alike).
const SERVICE: &str = "ses";
/// SES error names a retry can fix (besides 429 and 5xx).
const TRANSIENT_ERRORS: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "TooManyRequestsException",
];
/// Carrier strings echoed into errors are cut to this length (they are untrusted input).
const MAX_ECHO: usize = 200;

/// The Amazon SES v2 carrier.
#[derive(Clone)]
pub struct SesAdapter {
    http: reqwest::Client,
    /// `OMNI_SES_API_URL`; empty for AWS's regional endpoint.
    base_url: String,
}

impl SesAdapter {
    /// An adapter calling `base_url`, or `https://email.{region}.amazonaws.com` of each
    /// tenant's region when it is empty (`/v2/email/outbound-emails` is appended).
    pub fn new(http: reqwest::Client, base_url: &str) -> Self {
        SesAdapter {
            http,
            base_url: base_url.trim_end_matches('/').to_string(),
        }
    }

    fn endpoint(&self, region: &str) -> String {
        if self.base_url.is_empty() {
            format!("https://email.{region}.amazonaws.com")
        } else {
            self.base_url.clone()
        }
    }
}

/// Whether a region name is one SES could have: it goes into the endpoint's host name.
pub fn valid_region(region: &str) -> bool {
    (1..=32).contains(&region.len())
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !region.starts_with('-')
        && !region.ends_with('-')
}

/// AWS Signature Version 4 (header form), as far as SES needs it.
pub mod sigv4 {
    use super::*;

    type HmacSha256 = Hmac<Sha256>;

    fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
        let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
        mac.update(data);
        mac.finalize().into_bytes().to_vec()
    }

    fn sha256_hex(data: &[u8]) -> String {
        hex::encode(Sha256::digest(data))
    }

    /// RFC 3986 percent-encoding of everything but unreserved characters (SigV4's
    /// `UriEncode`); `/` kept when encoding a path.
    fn uri_encode(input: &str, keep_slash: bool) -> String {
        let mut out = String::with_capacity(input.len());
        for b in input.bytes() {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) || (keep_slash && b == b'/') {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    }

    /// What signing needs from a request.
    pub struct Request<'a> {
        /// `GET`, `POST`, …
        pub method: &'a str,
        /// The full URL (scheme, host, optional port, path, query).
        pub url: &'a url::Url,
        /// Headers to sign besides `host` and `x-amz-date` (lower-case names).
        pub headers: &'a [(&'a str, &'a str)],
        /// The body.
        pub payload: &'a [u8],
    }

    /// The signing identity and scope.
    pub struct Scope<'a> {
        /// Access key id.
        pub access_key_id: &'a str,
        /// Secret access key.
        pub secret_access_key: &'a str,
        /// Region, e.g. `us-east-1`.
        pub region: &'a str,
        /// Service, e.g. `ses`.
        pub service: &'a str,
    }

    /// The headers to add to the request: `x-amz-date` and `authorization`.
    pub fn sign(
        request: &Request<'_>,
        scope: &Scope<'_>,
        at: DateTime<Utc>,
    ) -> [(String, String); 2] {
        let amz_date = at.format("%Y%m%dT%H%M%SZ").to_string();
        let date = &amz_date[..8];
        let host = match (request.url.host_str(), request.url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            (None, _) => String::new(),
        };
        let mut headers: Vec<(String, String)> = request
            .headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_string()))
            .chain([
                ("host".into(), host),
                ("x-amz-date".into(), amz_date.clone()),
            ])
            .collect();
        headers.sort();
        let canonical_headers: String = headers.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
        let signed_headers = headers
            .iter()
            .map(|(k, _)| k.as_str())
            .collect::<Vec<_>>()
            .join(";");
        let mut query: Vec<(String, String)> = request
            .url
            .query_pairs()
            .map(|(k, v)| (uri_encode(&k, false), uri_encode(&v, false)))
            .collect();
        query.sort();
        let canonical_query = query
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&");
        let path = uri_encode(request.url.path(), true);
        let canonical_request = format!(
            "{}\n{path}\n{canonical_query}\n{canonical_headers}\n{signed_headers}\n{}",
            request.method,
            sha256_hex(request.payload)
        );
        let credential_scope = format!("{date}/{}/{}/aws4_request", scope.region, scope.service);
        let string_to_sign = format!(
            "AWS4-HMAC-SHA256\n{amz_date}\n{credential_scope}\n{}",
            sha256_hex(canonical_request.as_bytes())
        );
        let key = [date, scope.region, scope.service, "aws4_request"]
            .iter()
            .fold(
                format!("AWS4{}", scope.secret_access_key).into_bytes(),
                |key, part| hmac(&key, part.as_bytes()),
            );
        let signature = hex::encode(hmac(&key, string_to_sign.as_bytes()));
        [
            ("x-amz-date".into(), amz_date),
            (
                "authorization".into(),
                format!(
                    "AWS4-HMAC-SHA256 Credential={}/{credential_scope}, SignedHeaders={signed_headers}, Signature={signature}",
                    scope.access_key_id
                ),
            ),
        ]
    }
}

/// The JSON body of a `SendEmail`.
fn message_body(message: &OutboundMessage) -> Value {
    let text = email_text(message);
    json!({
        "FromEmailAddress": message.from.as_str(),
        "Destination": { "ToAddresses": [message.to.as_str()] },
        "Content": { "Simple": {
            "Subject": { "Data": message.subject.as_deref().unwrap_or_default(), "Charset": "UTF-8" },
            "Body": { "Text": { "Data": text, "Charset": "UTF-8" } },
        }},
        "EmailTags": [{ "Name": "omni_message_id", "Value": message.id.to_string() }],
    })
}

/// SES's error answer: the exception name (header, or the body's `__type`/`code`) as the
/// code, its `message`.
fn failure(
    status: reqwest::StatusCode,
    error_type: Option<String>,
    body: &[u8],
    wait: Option<std::time::Duration>,
) -> SendError {
    let parsed: Value = serde_json::from_slice(body).unwrap_or_default();
    let name = error_type
        .or_else(|| {
            ["__type", "code", "Code"]
                .iter()
                .find_map(|k| parsed.get(*k).and_then(Value::as_str).map(str::to_owned))
        })
        // `X-Amzn-ErrorType` may carry `Name:http://…`, `__type` a `namespace#Name`.
        .map(|n| {
            let n = n.split(':').next().unwrap_or_default();
            n.rsplit('#')
                .next()
                .unwrap_or_default()
                .chars()
                .take(MAX_ECHO)
                .collect::<String>()
        })
        .filter(|n| !n.is_empty());
    let text = ["message", "Message"]
        .iter()
        .find_map(|k| parsed.get(*k).and_then(Value::as_str))
        .map(|m| format!("SES: {}", m.chars().take(MAX_ECHO).collect::<String>()))
        .unwrap_or_else(|| format!("SES answered HTTP {}", status.as_u16()));
    if name
        .as_deref()
        .is_some_and(|n| TRANSIENT_ERRORS.contains(&n))
    {
        return SendError::Transient {
            code: name,
            message: text,
            retry_after: wait,
        };
    }
    named_failure(status, name, text, wait)
}

#[async_trait]
impl MessagingProviderAdapter for SesAdapter {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Ses
    }

    fn channels(&self) -> &'static [Channel] {
        &[Channel::Email]
    }

    async fn send(
        &self,
        credentials: &Credentials,
        message: &OutboundMessage,
    ) -> Result<SendResult, SendError> {
        let Credentials::Ses(creds) = credentials else {
            return Err(SendError::permanent(None, "credentials are not SES's"));
        };
        carries("SES", self.channels(), message)?;
        let url = url::Url::parse(&format!(
            "{}/v2/email/outbound-emails",
            self.endpoint(&creds.region)
        ))
        .map_err(|_| SendError::permanent(None, "the SES endpoint is not a URL"))?;
        let payload = serde_json::to_vec(&message_body(message))
            .map_err(|_| SendError::permanent(None, "the message does not serialise"))?;
        let content_type = "application/json";
        let signed = sigv4::sign(
            &sigv4::Request {
                method: "POST",
                url: &url,
                headers: &[("content-type", content_type)],
                payload: &payload,
            },
            &sigv4::Scope {
                access_key_id: &creds.access_key_id,
                secret_access_key: creds.secret_access_key.expose(),
                region: &creds.region,
                service: SERVICE,
            },
            Utc::now(),
        );
        let mut request = self
            .http
            .post(url)
            .header("content-type", content_type)
            .body(payload);
        for (name, value) in signed {
            request = request.header(name, value);
        }
        let response = request.send().await.map_err(network_error)?;
        let status = response.status();
        let wait = retry_after(response.headers());
        let error_type = response
            .headers()
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = response.bytes().await.map_err(network_error)?;
        if !status.is_success() {
            return Err(failure(status, error_type, &bytes, wait));
        }
        // Accepted without an id still means accepted: never retried, never sent twice.
        let id = serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|v| {
                v.get("MessageId")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .filter(|id| !id.is_empty())
            .ok_or_else(|| {
                SendError::permanent(None, "SES accepted the message without a MessageId")
            })?;
        Ok(SendResult {
            provider: ProviderKind::Ses,
            provider_message_id: id,
            status: DeliveryStatus::Sent,
            raw_status: "accepted".into(),
        })
    }

    /// SES reports through SNS, which is not wired: no webhook is ever SES's.
    fn verify_inbound(
        &self,
        _request: &WebhookRequest,
        _credentials: &Credentials,
    ) -> Result<(), VerifyError> {
        Err(VerifyError::Unsupported(
            "SES has no webhook in Omni".into(),
        ))
    }

    fn normalize_inbound(
        &self,
        _request: &WebhookRequest,
    ) -> Result<Vec<WebhookEvent>, ParseError> {
        Err(ParseError::new("SES has no webhook in Omni"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Address, TenantId};
    use crate::providers::{Secret, SesCredentials};
    use uuid::Uuid;
    use wiremock::matchers::{header_regex, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    /// AWS's published SigV4 example ("Examples of the complete Signature Version 4 signing
    /// process", IAM `ListUsers`, 2015-08-30T12:36:00Z).
    #[test]
    fn signs_the_aws_documentation_example() {
        let url = url::Url::parse("https://iam.amazonaws.com/?Action=ListUsers&Version=2010-05-08")
            .unwrap();
        let at = DateTime::parse_from_rfc3339("2015-08-30T12:36:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let [(date_name, date), (auth_name, authorization)] = sigv4::sign(
            &sigv4::Request {
                method: "GET",
                url: &url,
                headers: &[(
                    "Content-Type",
                    "application/x-www-form-urlencoded; charset=utf-8",
                )],
                payload: b"",
            },
            &sigv4::Scope {
                access_key_id: "AKIDEXAMPLE",
                secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
                region: "us-east-1",
                service: "iam",
            },
            at,
        );
        assert_eq!(
            (date_name.as_str(), date.as_str()),
            ("x-amz-date", "20150830T123600Z")
        );
        assert_eq!(auth_name, "authorization");
        assert_eq!(
            authorization,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date, \
             Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
        );
    }

    fn creds() -> Credentials {
        Credentials::Ses(SesCredentials {
            access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_access_key: Secret::new("ses-secret-access-key"),
            region: "eu-west-1".into(),
        })
    }

    fn outbound() -> OutboundMessage {
        OutboundMessage {
            id: Uuid::now_v7(),
            tenant_id: TenantId::parse("north").unwrap(),
            channel: Channel::Email,
            from: Address::from_stored("dispatch@north.example").unwrap(),
            to: Address::from_stored("jane@example.org").unwrap(),
            body: Some("Units are on the way".into()),
            media: Vec::new(),
            template: None,
            subject: Some("Your call".into()),
            status_callback: None,
        }
    }

    #[tokio::test]
    async fn send_posts_send_email_signed_for_ses() {
        let api = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/v2/email/outbound-emails"))
            .and(header_regex(
                "authorization",
                "^AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/[0-9]{8}/eu-west-1/ses/aws4_request, \
                 SignedHeaders=content-type;host;x-amz-date, Signature=[0-9a-f]{64}$",
            ))
            .and(header_regex("x-amz-date", "^[0-9]{8}T[0-9]{6}Z$"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"MessageId": "0100018c-ses-id"})))
            .expect(1)
            .mount(&api)
            .await;
        let message = outbound();
        let sent = SesAdapter::new(reqwest::Client::new(), &api.uri())
            .send(&creds(), &message)
            .await
            .unwrap();
        assert_eq!(sent.provider_message_id, "0100018c-ses-id");
        let requests = api.received_requests().await.unwrap();
        let body: Value = serde_json::from_slice(&requests[0].body).unwrap();
        assert_eq!(
            body,
            json!({
                "FromEmailAddress": "dispatch@north.example",
                "Destination": {"ToAddresses": ["jane@example.org"]},
                "Content": {"Simple": {
                    "Subject": {"Data": "Your call", "Charset": "UTF-8"},
                    "Body": {"Text": {"Data": "Units are on the way", "Charset": "UTF-8"}}}},
                "EmailTags": [{"Name": "omni_message_id", "Value": message.id.to_string()}],
            })
        );
    }

    /// HTTP status, `X-Amzn-ErrorType`, body, transient, expected code.
    type ErrorCase = (u16, Option<&'static str>, Value, bool, Option<&'static str>);

    #[tokio::test]
    async fn send_errors_are_mapped() {
        let cases: [ErrorCase; 5] = [
            (
                400,
                Some("MessageRejected:http://internal.amazon.com/coral/"),
                json!({"message": "Email address is not verified."}),
                false,
                Some("MessageRejected"),
            ),
            (
                429,
                None,
                json!({"__type": "com.amazonaws#TooManyRequestsException", "message": "slow down"}),
                true,
                Some("TooManyRequestsException"),
            ),
            (
                400,
                None,
                json!({"__type": "ThrottlingException", "message": "Rate exceeded"}),
                false,
                Some("ThrottlingException"),
            ),
            (503, None, json!({}), true, None),
            (
                403,
                None,
                json!({"message": "The request signature we calculated does not match"}),
                false,
                None,
            ),
        ];
        for (status, error_type, body, transient, code) in cases {
            let api = MockServer::start().await;
            let mut response = ResponseTemplate::new(status).set_body_json(body.clone());
            if let Some(t) = error_type {
                response = response.insert_header("x-amzn-errortype", t);
            }
            Mock::given(method("POST"))
                .respond_with(response)
                .mount(&api)
                .await;
            let err = SesAdapter::new(reqwest::Client::new(), &api.uri())
                .send(&creds(), &outbound())
                .await
                .unwrap_err();
            // ThrottlingException is SES's throttling even as a 400.
            let transient = transient || code == Some("ThrottlingException");
            assert_eq!(err.is_transient(), transient, "{status}: {err:?}");
            assert_eq!(err.code(), code, "{err:?}");
            if let Some(text) = body["message"].as_str() {
                assert!(err.message().contains(text), "{err:?}");
            }
        }
        let api = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
            .mount(&api)
            .await;
        let err = SesAdapter::new(reqwest::Client::new(), &api.uri())
            .send(&creds(), &outbound())
            .await
            .unwrap_err();
        assert!(!err.is_transient());
    }

    #[test]
    fn the_regional_endpoint_is_used_without_an_override_and_regions_are_checked() {
        let adapter = SesAdapter::new(reqwest::Client::new(), "");
        assert_eq!(
            adapter.endpoint("eu-west-1"),
            "https://email.eu-west-1.amazonaws.com"
        );
        for bad in ["", "EU-WEST-1", "eu-west-1.evil.example", "-x", "a/b"] {
            assert!(!valid_region(bad), "{bad}");
        }
        let ok = json!({"access_key_id": "AKIAIOSFODNN7EXAMPLE", "secret_access_key": "very-secret-key", "region": "us-east-1"});
        let c = Credentials::from_admin_json(ProviderKind::Ses, ok.clone()).unwrap();
        let shown = format!("{c:?} {}", c.redacted());
        assert!(!shown.contains("very-secret-key"), "{shown}");
        assert_eq!(c.secrets(), vec!["very-secret-key"]);
        for (field, value) in [
            ("access_key_id", "AKIA/x"),
            ("secret_access_key", ""),
            ("region", "us east"),
        ] {
            let mut bad = ok.clone();
            bad[field] = json!(value);
            let err = Credentials::from_admin_json(ProviderKind::Ses, bad).unwrap_err();
            assert!(err.contains(field), "{err}");
        }
    }
}
