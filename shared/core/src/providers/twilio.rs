//! Twilio Programmable Messaging: SMS, MMS, WhatsApp (`whatsapp:`) and RCS (`rcs:`).
//!
//! Sends go to `POST /2010-04-01/Accounts/{AccountSid}/Messages.json` with Basic auth.
//! Webhooks are form posts signed with `X-Twilio-Signature`, checked exactly as Twilio's
//! official SDKs check them (see [`signature`]).

use std::borrow::Cow;
use std::collections::BTreeMap;

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use chrono::Utc;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::carrier::{
    guess_content_type, require, strong, ApiUrlSetting, Carrier, CarrierConfig, EnvLookup,
    Receives, SigningKey, TestInbound, TestWebhook, WebhookReply, WebhookRoute,
};
use super::Secret;
use super::{
    carries, coded_failure, ct_eq, network_error, retry_after, Credentials,
    MessagingProviderAdapter, ParseError, VerifyError, WebhookRequest,
};
use crate::domain::{
    Address, Channel, DeliveryStatus, InboundMessage, Media, OutboundMessage, ProviderKind,
    SendError, SendResult, StatusUpdate, WebhookEvent, E164,
};
use std::sync::Arc;

/// Twilio error codes that are worth retrying: 20429 (too many requests), 30003 (handset
/// unreachable; Twilio itself advises retrying later) and 30008 (unknown error). Every other
/// 4xx code is permanent: retrying an invalid number or an opted-out recipient cannot help.
const TRANSIENT_CODES: [i64; 3] = [20429, 30003, 30008];

/// Twilio adapter.
#[derive(Clone)]
pub struct TwilioAdapter {
    http: reqwest::Client,
    base_url: String,
}

impl TwilioAdapter {
    /// An adapter calling the Twilio REST API at `base_url` (`https://api.twilio.com`).
    pub fn new(http: reqwest::Client, base_url: &str) -> Self {
        TwilioAdapter {
            http,
            base_url: base_url.trim_end_matches('/').to_string(),
        }
    }
}

/// `X-Twilio-Signature` of a request: base64 HMAC-SHA1 with the auth token over the URL
/// followed by each parameter name and value, names in byte order, a repeated name's
/// distinct values sorted (as the official SDKs do).
pub fn signature<K: AsRef<str>, V: AsRef<str>>(
    url: &str,
    params: &[(K, V)],
    auth_token: &str,
) -> String {
    let payload = string_to_sign(url, params);
    let mut mac =
        Hmac::<Sha1>::new_from_slice(auth_token.as_bytes()).expect("HMAC takes any key length");
    mac.update(payload.as_bytes());
    BASE64.encode(mac.finalize().into_bytes())
}

fn string_to_sign<K: AsRef<str>, V: AsRef<str>>(url: &str, params: &[(K, V)]) -> String {
    // Sorting (name, value) pairs orders names and, within a name, its values; dedup then
    // keeps each distinct value once, exactly the SDKs' grouping.
    let mut pairs: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_ref(), v.as_ref()))
        .collect();
    pairs.sort_unstable();
    pairs.dedup();
    let mut out = String::with_capacity(
        url.len() + pairs.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>(),
    );
    out.push_str(url);
    for (k, v) in pairs {
        out.push_str(k);
        out.push_str(v);
    }
    out
}

fn hmac_sha256_base64(key: &[u8], payload: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(payload.as_bytes());
    BASE64.encode(mac.finalize().into_bytes())
}

/// The URL as signed, as given, without its port, and with the default port added: the
/// SDKs accept any of these because Twilio has signed both ways over the years. Done on the
/// text, since a URL parser would normalise the very port we need to keep or add.
fn url_variants(url: &str) -> Vec<String> {
    let mut variants = vec![url.to_string()];
    let Some((scheme, rest)) = url.split_once("://") else {
        return variants;
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    // A port is the digits after the last ':' that is not inside an IPv6 literal.
    let port_at = authority.rfind(':').filter(|&i| {
        let digits = &authority[i + 1..];
        !digits.is_empty()
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !authority[i..].contains(']')
    });
    match port_at {
        Some(i) => variants.push(format!("{scheme}://{}{tail}", &authority[..i])),
        None => {
            let default = if scheme.eq_ignore_ascii_case("https") {
                443
            } else {
                80
            };
            variants.push(format!("{scheme}://{authority}:{default}{tail}"));
        }
    }
    variants
}

type Params<'a> = Vec<(Cow<'a, str>, Cow<'a, str>)>;

/// The parameters Twilio signed: the form body of a POST, none for GET or JSON.
fn signed_params(request: &WebhookRequest) -> Params<'_> {
    if request.method.eq_ignore_ascii_case("GET") || !request.is_form() {
        return Vec::new();
    }
    url::form_urlencoded::parse(&request.body).collect()
}

fn query_param(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Reads `X-Twilio-Webhooks-Signature-Settings: key=<id>,algorithm=<alg>`.
fn signature_settings(header: &str) -> (Option<&str>, Option<&str>) {
    let mut key = None;
    let mut algorithm = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("key", v)) => key = Some(v.trim()),
            Some(("algorithm", v)) => algorithm = Some(v.trim()),
            _ => {}
        }
    }
    (key, algorithm)
}

fn verify(request: &WebhookRequest, credentials: &Credentials) -> Result<(), VerifyError> {
    let Credentials::Twilio(creds) = credentials else {
        return Err(VerifyError::WrongCredentials);
    };
    let given = request
        .header("x-twilio-signature")
        .ok_or(VerifyError::Missing)?;

    // Choose the key and MAC: the auth token with HMAC-SHA1 unless the settings header
    // announces a SharedKey with HMAC-SHA256.
    let sha256_key = match request.header("x-twilio-webhooks-signature-settings") {
        None => None,
        Some(settings) => match signature_settings(settings) {
            (_, Some("HMAC_SHA1")) | (_, None) => None,
            (Some(id), Some("HMAC_SHA256")) => Some(
                creds
                    .webhook_keys
                    .get(id)
                    .ok_or_else(|| VerifyError::Unsupported("unknown SharedKey id".into()))?,
            ),
            (None, Some("HMAC_SHA256")) => {
                return Err(VerifyError::Unsupported("SharedKey id missing".into()))
            }
            (_, Some(_)) => {
                return Err(VerifyError::Unsupported(
                    "unknown signature algorithm".into(),
                ))
            }
        },
    };

    // A JSON body is covered through the bodySHA256 query parameter, which must match it.
    let params = match query_param(&request.url, "bodySHA256") {
        Some(expected) if !request.is_form() => {
            let actual = hex::encode(Sha256::digest(&request.body));
            if !ct_eq(actual.as_bytes(), expected.to_ascii_lowercase().as_bytes()) {
                return Err(VerifyError::Mismatch);
            }
            Vec::new()
        }
        _ => signed_params(request),
    };

    // The URL as given is tried first; the port variants only when it does not match. Which
    // variant matched is no secret, so stopping early leaks nothing.
    let matches = |url: &str| {
        let expected = match sha256_key {
            Some(secret) => {
                hmac_sha256_base64(secret.expose().as_bytes(), &string_to_sign(url, &params))
            }
            None => signature(url, &params, creds.auth_token.expose()),
        };
        ct_eq(expected.as_bytes(), given.as_bytes())
    };
    if matches(&request.url)
        || url_variants(&request.url)
            .iter()
            .skip(1)
            .any(|url| matches(url))
    {
        Ok(())
    } else {
        Err(VerifyError::Mismatch)
    }
}

/// The webhook's parameters: the form body of a POST, the query string of a GET. Values
/// borrow from the request where no decoding was needed.
fn webhook_params(request: &WebhookRequest) -> Result<Params<'_>, ParseError> {
    let raw: &[u8] = if request.method.eq_ignore_ascii_case("GET") {
        request.query().as_bytes()
    } else {
        &request.body
    };
    if std::str::from_utf8(raw).is_err() {
        return Err(ParseError::new("the body is not a valid form"));
    }
    Ok(url::form_urlencoded::parse(raw).collect())
}

/// A parameter's first value; a linear scan beats a map for Twilio's ~20 fields.
fn param<'a>(params: &'a Params<'_>, key: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_ref())
}

/// Maps Twilio's status words to ours; None for inbound-only words.
fn map_status(raw: &str) -> Option<DeliveryStatus> {
    Some(match raw {
        "accepted" | "scheduled" | "queued" => DeliveryStatus::Queued,
        "sending" => DeliveryStatus::Sending,
        // partially_delivered is deprecated; some parts reached the handset, none failed yet.
        "sent" | "partially_delivered" => DeliveryStatus::Sent,
        "delivered" => DeliveryStatus::Delivered,
        "read" => DeliveryStatus::Read,
        "failed" | "canceled" => DeliveryStatus::Failed,
        "undelivered" => DeliveryStatus::Undelivered,
        _ => return None,
    })
}

fn number(params: &Params<'_>, key: &str) -> Result<E164, ParseError> {
    let raw = param(params, key).ok_or_else(|| ParseError::new(format!("{key} is missing")))?;
    E164::from_carrier(raw)
        .map_err(|_| ParseError::new(format!("{key} is not a valid phone number")))
}

fn normalize(request: &WebhookRequest) -> Result<Vec<WebhookEvent>, ParseError> {
    let p = webhook_params(request)?;
    let get = |key: &str| param(&p, key).filter(|v| !v.is_empty());
    let sid = get("MessageSid")
        .or_else(|| get("SmsMessageSid"))
        .ok_or_else(|| ParseError::new("MessageSid is missing"))?
        .to_string();

    if let Some(raw_status) = param(&p, "MessageStatus") {
        // WhatsApp/RCS read receipts also arrive as EventType=READ.
        let raw = if get("EventType").is_some_and(|e| e.eq_ignore_ascii_case("READ")) {
            "read"
        } else {
            raw_status
        };
        let status = map_status(raw)
            .ok_or_else(|| ParseError::new("MessageStatus is not an outbound status"))?;
        return Ok(vec![WebhookEvent::Status(StatusUpdate {
            provider: ProviderKind::Twilio,
            provider_message_id: sid,
            status,
            raw_status: raw.to_string(),
            error_code: get("ErrorCode").map(str::to_owned),
            error_message: get("ChannelStatusMessage")
                .or_else(|| get("ErrorMessage"))
                .map(str::to_owned),
            tenant_number: get("From")
                .and_then(|f| E164::from_carrier(f).ok())
                .map(Address::from),
            at: Utc::now(),
        })]);
    }

    let from = number(&p, "From")?;
    let to = number(&p, "To")?;
    let num_media: usize = match param(&p, "NumMedia") {
        None => 0,
        Some(n) => n
            .parse()
            .map_err(|_| ParseError::new("NumMedia is not a number"))?,
    };
    // Twilio sends at most 10 media; more would be a forged or broken request.
    if num_media > 10 {
        return Err(ParseError::new("NumMedia is over 10"));
    }
    let media = (0..num_media)
        .filter_map(|i| {
            let url = param(&p, &format!("MediaUrl{i}"))?.to_string();
            Some(Media {
                url,
                content_type: param(&p, &format!("MediaContentType{i}")).map(str::to_owned),
            })
        })
        .collect::<Vec<_>>();
    let from_raw = param(&p, "From").unwrap_or_default();
    let has_prefix = |prefix: &str| {
        from_raw
            .get(..prefix.len())
            .is_some_and(|h| h.eq_ignore_ascii_case(prefix))
    };
    let channel = if has_prefix("whatsapp:") {
        Channel::Whatsapp
    } else if has_prefix("rcs:") {
        Channel::Rcs
    } else if media.is_empty() {
        Channel::Sms
    } else {
        Channel::Mms
    };
    Ok(vec![WebhookEvent::Message(InboundMessage {
        id: Uuid::now_v7(),
        provider: ProviderKind::Twilio,
        provider_message_id: sid,
        channel,
        from: from.into(),
        to: to.into(),
        body: get("Body").map(str::to_owned),
        media,
        profile_name: get("ProfileName").map(str::to_owned),
        received_at: Utc::now(),
        auto_submitted: false,
    })])
}

/// A channel address as Twilio wants it in `To`/`From` (a number: [`carries`] checked it).
fn address(channel: Channel, number: &str) -> String {
    match channel {
        Channel::Whatsapp => format!("whatsapp:{number}"),
        Channel::Rcs => format!("rcs:{number}"),
        _ => number.to_string(),
    }
}

#[derive(Deserialize)]
struct MessageResource {
    sid: String,
    status: String,
}

#[derive(Deserialize)]
struct TwilioErrorBody {
    code: Option<i64>,
    message: Option<String>,
}

#[async_trait]
impl MessagingProviderAdapter for TwilioAdapter {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Twilio
    }

    fn channels(&self) -> &'static [Channel] {
        &[Channel::Sms, Channel::Mms, Channel::Whatsapp, Channel::Rcs]
    }

    async fn send(
        &self,
        credentials: &Credentials,
        message: &OutboundMessage,
    ) -> Result<SendResult, SendError> {
        let Credentials::Twilio(creds) = credentials else {
            return Err(SendError::permanent(None, "credentials are not Twilio's"));
        };
        carries("Twilio", self.channels(), message)?;
        let mut form = vec![
            ("To", address(message.channel, &message.to)),
            ("From", address(message.channel, &message.from)),
        ];
        if let Some(body) = &message.body {
            form.push(("Body", body.clone()));
        }
        form.extend(message.media.iter().map(|m| ("MediaUrl", m.url.clone())));
        if let Some(callback) = &message.status_callback {
            form.push(("StatusCallback", callback.clone()));
        }
        let url = format!(
            "{}/2010-04-01/Accounts/{}/Messages.json",
            self.base_url, creds.account_sid
        );
        let response = self
            .http
            .post(url)
            .basic_auth(&creds.account_sid, Some(creds.auth_token.expose()))
            .form(&form)
            .send()
            .await
            .map_err(network_error)?;
        let status = response.status();
        let wait = retry_after(response.headers());
        let bytes = response.bytes().await.map_err(network_error)?;
        if status.is_success() {
            let resource: MessageResource = serde_json::from_slice(&bytes).map_err(|_| {
                SendError::transient("Twilio answered with an unreadable message resource", None)
            })?;
            return Ok(SendResult {
                provider: ProviderKind::Twilio,
                status: map_status(&resource.status).unwrap_or(DeliveryStatus::Queued),
                provider_message_id: resource.sid,
                raw_status: resource.status,
            });
        }
        let error: Option<TwilioErrorBody> = serde_json::from_slice(&bytes).ok();
        let code = error.as_ref().and_then(|e| e.code);
        let message = error
            .and_then(|e| e.message)
            .unwrap_or_else(|| format!("Twilio answered HTTP {}", status.as_u16()));
        Err(coded_failure(status, code, message, &TRANSIENT_CODES, wait))
    }

    fn verify_inbound(
        &self,
        request: &WebhookRequest,
        credentials: &Credentials,
    ) -> Result<(), VerifyError> {
        verify(request, credentials)
    }

    fn normalize_inbound(&self, request: &WebhookRequest) -> Result<Vec<WebhookEvent>, ParseError> {
        normalize(request)
    }
}

/// Twilio account credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TwilioCredentials {
    /// `AC…` account SID (not secret).
    pub account_sid: String,
    /// Auth token: Basic auth password and webhook HMAC-SHA1 key.
    pub auth_token: Secret,
    /// SharedKey id → secret, for HMAC-SHA256 webhook signing.
    #[serde(default)]
    pub webhook_keys: BTreeMap<String, Secret>,
}

impl CarrierConfig for TwilioCredentials {
    const SECRET_FIELDS: &'static [&'static str] = &["auth_token", "webhook_keys"];

    fn validate(&self) -> Result<(), String> {
        // The SID goes into the API path: only the documented shape is accepted.
        let sid_ok = self.account_sid.len() == 34
            && self.account_sid.starts_with("AC")
            && self.account_sid[2..].bytes().all(|b| b.is_ascii_hexdigit());
        require(sid_ok, "account_sid (AC + 32 hex)")?;
        strong(&self.auth_token, "auth_token")?;
        self.webhook_keys
            .values()
            .try_for_each(|k| strong(k, "webhook_keys"))
    }

    fn secrets(&self) -> Vec<&str> {
        std::iter::once(self.auth_token.expose())
            .chain(self.webhook_keys.values().map(Secret::expose))
            .collect()
    }

    fn example() -> Self {
        TwilioCredentials {
            account_sid: format!("AC{}", Uuid::new_v4().simple()),
            auth_token: Secret::new("tw-auth-token-secret"),
            webhook_keys: BTreeMap::from([("k1".into(), Secret::new("tw-shared-key-secret"))]),
        }
    }
}

/// The Omni declaration of Twilio.
pub const CARRIER: Carrier = Carrier {
    kind: ProviderKind::Twilio,
    api_url: Some(ApiUrlSetting {
        env: "OMNI_TWILIO_API_URL",
        default: "https://api.twilio.com",
        help: "Twilio API base URL.",
    }),
    webhooks: &[
        WebhookRoute::post("/webhooks/twilio", Receives::Inbound)
            .replying(WebhookReply::EmptyTwiml),
        WebhookRoute::post("/webhooks/twilio/status", Receives::Status)
            .replying(WebhookReply::EmptyTwiml),
    ],
    adapter: |http, base_url| Arc::new(TwilioAdapter::new(http, base_url)),
    platform_config: Some(platform_config),
    test_webhook: TestWebhook::Signer {
        help: "form POST signed with X-Twilio-Signature; --secret: the auth token",
        sign: sign_test_webhook,
    },
    openapi: OPENAPI,
};

/// `TWILIO_ACCOUNT_SID` + `TWILIO_AUTH_TOKEN`: the platform's account, for tenants with none.
fn platform_config(var: &EnvLookup) -> Option<Credentials> {
    Some(Credentials::Twilio(TwilioCredentials {
        account_sid: var("TWILIO_ACCOUNT_SID")?,
        auth_token: Secret::new(var("TWILIO_AUTH_TOKEN")?),
        webhook_keys: Default::default(),
    }))
}

/// An inbound message as Twilio posts it, signed with the auth token.
fn sign_test_webhook(
    message: &TestInbound,
    key: SigningKey<'_>,
) -> Result<Vec<WebhookRequest>, String> {
    message.unsplit("Twilio")?;
    let (from, to) = message.numbers()?;
    let sid = message.id_or(|| format!("SM{}", Uuid::new_v4().simple()));
    let mut params = vec![
        ("MessageSid".to_string(), sid.clone()),
        ("SmsMessageSid".into(), sid.clone()),
        ("SmsSid".into(), sid),
        ("AccountSid".into(), TEST_ACCOUNT_SID.into()),
        ("From".into(), from.to_string()),
        ("To".into(), to.to_string()),
        ("Body".into(), message.body.clone()),
        ("NumMedia".into(), message.media.len().to_string()),
        ("NumSegments".into(), "1".into()),
        ("SmsStatus".into(), "received".into()),
        ("ApiVersion".into(), "2010-04-01".into()),
    ];
    for (i, url) in message.media.iter().enumerate() {
        params.push((format!("MediaUrl{i}"), url.clone()));
        params.push((
            format!("MediaContentType{i}"),
            guess_content_type(url).into(),
        ));
    }
    let token = key.secret(|c| TwilioCredentials::of(c).map(|c| &c.auth_token))?;
    Ok(vec![signed_form(
        message,
        "/webhooks/twilio",
        &params,
        &token,
    )?])
}

/// The account SID test webhooks name (Twilio checks nothing of it on our side).
const TEST_ACCOUNT_SID: &str = "AC00000000000000000000000000000000";

/// A status callback as Twilio posts it for a message we sent (`omni webhook status`).
pub fn test_status_callback(
    base_url: &str,
    sid: &str,
    status: &str,
    (from, to): (&E164, &E164),
    error_code: Option<&str>,
    auth_token: &str,
) -> Result<WebhookRequest, String> {
    let mut params = vec![
        ("MessageSid".to_string(), sid.to_string()),
        ("SmsSid".into(), sid.to_string()),
        ("MessageStatus".into(), status.to_string()),
        ("SmsStatus".into(), status.to_string()),
        ("AccountSid".into(), TEST_ACCOUNT_SID.into()),
        ("From".into(), from.to_string()),
        ("To".into(), to.to_string()),
        ("ApiVersion".into(), "2010-04-01".into()),
    ];
    if let Some(code) = error_code {
        params.push(("ErrorCode".into(), code.to_string()));
    }
    let target = TestInbound {
        base_url: base_url.to_string(),
        ..TestInbound::default()
    };
    signed_form(&target, "/webhooks/twilio/status", &params, auth_token)
}

/// A form POST to `path` signed as Twilio signs it.
fn signed_form(
    target: &TestInbound,
    path: &str,
    params: &[(String, String)],
    auth_token: &str,
) -> Result<WebhookRequest, String> {
    let url = format!("{}{path}", target.base_url);
    let signature = signature(&url, params, auth_token);
    let body = serde_urlencoded::to_string(params).map_err(|e| e.to_string())?;
    Ok(target.post(
        path,
        "application/x-www-form-urlencoded",
        vec![("x-twilio-signature".into(), signature)],
        body.into_bytes(),
    ))
}

/// The webhook routes' part of the OpenAPI document.
const OPENAPI: &str = r##"{"paths": {
"/webhooks/twilio": {"post": {"summary": "Twilio inbound message webhook", "responses": {"200": {"description": "accepted; empty TwiML", "content": {"text/xml": {"schema": {"type": "string", "example": "<Response/>"}}}}}, "requestBody": {"required": true, "content": {"application/x-www-form-urlencoded": {"schema": {"$ref": "#/components/schemas/TwilioForm"}}}}, "parameters": [{"name": "X-Twilio-Signature", "in": "header", "required": true, "schema": {"type": "string"}}]}},
"/webhooks/twilio/status": {"post": {"summary": "Twilio status callback", "responses": {"200": {"description": "accepted; empty TwiML", "content": {"text/xml": {"schema": {"type": "string", "example": "<Response/>"}}}}}, "requestBody": {"required": true, "content": {"application/x-www-form-urlencoded": {"schema": {"$ref": "#/components/schemas/TwilioForm"}}}}, "parameters": [{"name": "X-Twilio-Signature", "in": "header", "required": true, "schema": {"type": "string"}}]}}
}, "schemas": {
"TwilioForm": {"type": "object", "description": "application/x-www-form-urlencoded fields as Twilio sends them (MessageSid, From, To, Body, NumMedia, MediaUrlN, MessageStatus, ErrorCode, ...)", "additionalProperties": {"type": "string"}}
}}"##;

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::providers::test_support::one;
    use crate::providers::{Secret, TwilioCredentials};
    use proptest::prelude::*;
    use serde_json::Value;
    use wiremock::matchers::{body_string_contains, header, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    const VECTORS: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/vectors/twilio_signature.json"
    ));
    const INDEX: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/index.json"
    ));
    const FIXTURE_TOKEN: &str = "12345abcdef67890fedcba0987654321";
    const SID: &str = "AC0123456789abcdef0123456789abcdef";

    fn creds(token: &str) -> Credentials {
        Credentials::Twilio(TwilioCredentials {
            account_sid: SID.into(),
            auth_token: Secret::new(token),
            webhook_keys: BTreeMap::new(),
        })
    }

    fn form_request(url: &str, params: &[(String, String)], sig: &str) -> WebhookRequest {
        WebhookRequest {
            method: "POST".into(),
            url: url.into(),
            headers: vec![
                (
                    "content-type".into(),
                    "application/x-www-form-urlencoded; charset=UTF-8".into(),
                ),
                ("x-twilio-signature".into(), sig.into()),
            ],
            body: serde_urlencoded::to_string(params).unwrap().into_bytes(),
        }
    }

    /// A vector's params as (name, value) pairs; a list value repeats the name.
    fn vector_params(case: &Value) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (k, v) in case["params"].as_object().into_iter().flatten() {
            match v {
                Value::Array(values) => out.extend(
                    values
                        .iter()
                        .map(|x| (k.clone(), x.as_str().unwrap().to_string())),
                ),
                other => out.push((k.clone(), other.as_str().unwrap().to_string())),
            }
        }
        out
    }

    fn vector_request(case: &Value) -> (WebhookRequest, Credentials) {
        let url = case["url"].as_str().unwrap();
        let sig = case["signature"].as_str().unwrap();
        let token = case["auth_token"].as_str().unwrap();
        let mut request = match case["raw_body"].as_str() {
            Some(raw) => WebhookRequest {
                method: "POST".into(),
                url: url.into(),
                headers: vec![
                    ("content-type".into(), "application/json".into()),
                    ("x-twilio-signature".into(), sig.into()),
                ],
                body: raw.as_bytes().to_vec(),
            },
            None => form_request(url, &vector_params(case), sig),
        };
        let mut credentials = creds(token);
        if let Some(settings) = case["signature_settings_header"].as_str() {
            request.headers.push((
                "x-twilio-webhooks-signature-settings".into(),
                settings.into(),
            ));
            // The SharedKey secret is the vector's "auth_token"; its id is in the header.
            let (id, _) = signature_settings(settings);
            if let Credentials::Twilio(c) = &mut credentials {
                c.auth_token = Secret::new(FIXTURE_TOKEN);
                c.webhook_keys
                    .insert(id.unwrap().to_string(), Secret::new(token));
            }
        }
        (request, credentials)
    }

    #[test]
    fn every_signature_vector_verifies_as_the_official_sdk_says() {
        let doc: Value = serde_json::from_str(VECTORS).unwrap();
        let cases: Vec<&Value> = doc["cases"]
            .as_array()
            .unwrap()
            .iter()
            .chain(doc["negative"].as_array().unwrap())
            .collect();
        assert_eq!(cases.len(), 14);
        for case in cases {
            let (request, credentials) = vector_request(case);
            let valid = case["valid"].as_bool().unwrap();
            let got = verify(&request, &credentials);
            assert_eq!(got.is_ok(), valid, "vector {}: {got:?}", case["name"]);
            // Our own signer agrees with the SDK on the positive HMAC-SHA1 form cases.
            if valid && case["raw_body"].is_null() && case["signature_settings_header"].is_null() {
                let ours = signature(
                    case["url"].as_str().unwrap(),
                    &vector_params(case),
                    case["auth_token"].as_str().unwrap(),
                );
                assert_eq!(
                    ours,
                    case["signature"].as_str().unwrap(),
                    "vector {}",
                    case["name"]
                );
            }
        }
    }

    #[test]
    fn ports_are_handled_like_the_sdks() {
        let params = vec![("Body".to_string(), "hi".to_string())];
        let sign = |url: &str| signature(url, &params, FIXTURE_TOKEN);
        let check = |request_url: &str, sig: String| {
            verify(
                &form_request(request_url, &params, &sig),
                &creds(FIXTURE_TOKEN),
            )
            .is_ok()
        };
        assert!(
            check("https://h.example/w", sign("https://h.example:443/w")),
            "signed with :443, received without"
        );
        assert!(
            check("https://h.example:443/w", sign("https://h.example/w")),
            "signed without, received with :443"
        );
        assert!(
            check("https://h.example:8443/w", sign("https://h.example/w")),
            "any port is stripped"
        );
        assert!(
            !check("https://h.example/w", sign("https://h.example:8443/w")),
            "only the default port is added"
        );
        assert!(
            !check("http://h.example/w", sign("https://h.example:443/w")),
            "the scheme is signed"
        );
        assert!(
            check("http://h.example/w", sign("http://h.example:80/w")),
            "http's default port is 80"
        );
        assert_eq!(
            url_variants("https://[::1]:8443/w?x=1"),
            ["https://[::1]:8443/w?x=1", "https://[::1]/w?x=1"]
        );
        assert_eq!(
            url_variants("https://[::1]/w"),
            ["https://[::1]/w", "https://[::1]:443/w"]
        );
        assert_eq!(url_variants("no scheme"), ["no scheme"]);
    }

    #[test]
    fn missing_and_foreign_credentials_are_refused() {
        let mut request = form_request("https://h.example/w", &[], "x");
        request.headers.retain(|(k, _)| k != "x-twilio-signature");
        assert_eq!(
            verify(&request, &creds(FIXTURE_TOKEN)),
            Err(VerifyError::Missing)
        );
        assert_eq!(
            verify(&request, &Credentials::Simulator),
            Err(VerifyError::WrongCredentials)
        );
        let mut unknown_alg = form_request("https://h.example/w", &[], "x");
        unknown_alg.headers.push((
            "x-twilio-webhooks-signature-settings".into(),
            "key=k,algorithm=MD5".into(),
        ));
        assert!(matches!(
            verify(&unknown_alg, &creds(FIXTURE_TOKEN)),
            Err(VerifyError::Unsupported(_))
        ));
        let mut json = form_request("https://h.example/w?bodySHA256=00", &[], "x");
        json.headers[0].1 = "application/json".into();
        assert_eq!(
            verify(&json, &creds(FIXTURE_TOKEN)),
            Err(VerifyError::Mismatch),
            "body hash must match"
        );
    }

    fn fixture(name: &str) -> (WebhookRequest, String) {
        let index: Value = serde_json::from_str(INDEX).unwrap();
        let entry = index["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["file"] == name)
            .unwrap()
            .clone();
        let path = format!("{}/../../tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        let body = std::fs::read(path).unwrap();
        let headers = entry["headers"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.as_str().unwrap().to_string()))
            .collect();
        (
            WebhookRequest {
                method: "POST".into(),
                url: entry["url"].as_str().unwrap().into(),
                headers,
                body,
            },
            name.to_string(),
        )
    }

    #[test]
    fn fixtures_verify_and_normalise() {
        let e164 = |s: &str| Address::from_stored(s).unwrap();
        for name in [
            "twilio_inbound_sms.form",
            "twilio_inbound_mms.form",
            "twilio_inbound_whatsapp.form",
            "twilio_status_delivered.form",
            "twilio_status_undelivered.form",
            "twilio_status_whatsapp_read.form",
        ] {
            let (request, _) = fixture(name);
            assert_eq!(verify(&request, &creds(FIXTURE_TOKEN)), Ok(()), "{name}");
            assert!(
                verify(&request, &creds("00000000000000000000000000000000")).is_err(),
                "{name}"
            );
        }

        let WebhookEvent::Message(sms) =
            one(normalize(&fixture("twilio_inbound_sms.form").0).unwrap())
        else {
            panic!("sms")
        };
        assert_eq!(
            (sms.provider, sms.channel),
            (ProviderKind::Twilio, Channel::Sms)
        );
        assert_eq!(
            sms.provider_message_id,
            "SMa1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1"
        );
        assert_eq!(
            (sms.from.clone(), sms.to.clone()),
            (e164("+15555550123"), e164("+15555550100"))
        );
        assert_eq!(sms.body.as_deref(), Some("Hi there, is my order ready?"));
        assert!(sms.media.is_empty() && sms.profile_name.is_none());
        assert_eq!(sms.id.get_version_num(), 7);

        let WebhookEvent::Message(mms) =
            one(normalize(&fixture("twilio_inbound_mms.form").0).unwrap())
        else {
            panic!("mms")
        };
        assert_eq!(mms.channel, Channel::Mms);
        assert_eq!(mms.body.as_deref(), Some("pics from today"));
        assert_eq!(mms.media.len(), 2);
        assert_eq!(mms.media[0].content_type.as_deref(), Some("image/jpeg"));
        assert_eq!(mms.media[1].content_type.as_deref(), Some("video/mp4"));
        assert!(mms.media[1]
            .url
            .ends_with("/Media/MEd4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4"));

        let WebhookEvent::Message(wa) =
            one(normalize(&fixture("twilio_inbound_whatsapp.form").0).unwrap())
        else {
            panic!("wa")
        };
        assert_eq!(wa.channel, Channel::Whatsapp);
        assert_eq!(
            (wa.from.as_str(), wa.to.as_str()),
            ("+15555550123", "+15555550100"),
            "prefixes stripped"
        );
        assert_eq!(wa.profile_name.as_deref(), Some("Jane Example"));
        assert_eq!(wa.body.as_deref(), Some("Hola 👋"));

        let WebhookEvent::Status(delivered) =
            one(normalize(&fixture("twilio_status_delivered.form").0).unwrap())
        else {
            panic!("status")
        };
        assert_eq!(delivered.status, DeliveryStatus::Delivered);
        assert_eq!(delivered.tenant_number.as_deref(), Some("+15555550100"));

        let WebhookEvent::Status(undelivered) =
            one(normalize(&fixture("twilio_status_undelivered.form").0).unwrap())
        else {
            panic!("status")
        };
        assert_eq!(
            (undelivered.status, undelivered.raw_status.as_str()),
            (DeliveryStatus::Undelivered, "undelivered")
        );
        assert_eq!(undelivered.error_code.as_deref(), Some("30003"));
        assert_eq!(
            undelivered.provider_message_id,
            "SMf6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6"
        );

        let WebhookEvent::Status(read) =
            one(normalize(&fixture("twilio_status_whatsapp_read.form").0).unwrap())
        else {
            panic!("status")
        };
        assert_eq!(read.status, DeliveryStatus::Read);
        assert_eq!(read.tenant_number.as_deref(), Some("+15555550100"));
    }

    #[test]
    fn malformed_webhooks_are_parse_errors() {
        let req = |body: &str| WebhookRequest {
            method: "POST".into(),
            url: "https://h/w".into(),
            headers: vec![],
            body: body.as_bytes().to_vec(),
        };
        assert!(
            normalize(&req("From=%2B15555550123&To=%2B15555550100")).is_err(),
            "no MessageSid"
        );
        assert!(
            normalize(&req("MessageSid=SM1&From=nobody&To=%2B15555550100")).is_err(),
            "bad From"
        );
        assert!(normalize(&req(
            "MessageSid=SM1&From=%2B15555550123&To=%2B15555550100&NumMedia=x"
        ))
        .is_err());
        assert!(normalize(&req(
            "MessageSid=SM1&From=%2B15555550123&To=%2B15555550100&NumMedia=99999999999"
        ))
        .is_err());
        assert!(
            normalize(&req(
                "MessageSid=SM1&MessageStatus=received&From=%2B15555550100"
            ))
            .is_err(),
            "inbound word as outbound status"
        );
    }

    fn outbound(channel: Channel, media: Vec<Media>) -> OutboundMessage {
        OutboundMessage {
            id: Uuid::now_v7(),
            tenant_id: crate::domain::TenantId::parse("north").unwrap(),
            channel,
            from: Address::from_stored("+15555550100").unwrap(),
            to: Address::from_stored("+15555550123").unwrap(),
            body: Some("Units are on the way".into()),
            media,
            template: None,
            subject: None,
            status_callback: Some("https://omni.example.org/webhooks/twilio/status".into()),
        }
    }

    const MESSAGES: &str = "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Messages.json";

    async fn fake(
        status: u16,
        body: Value,
        retry_after: Option<&str>,
    ) -> (MockServer, TwilioAdapter) {
        let server = MockServer::start().await;
        let mut template = ResponseTemplate::new(status).set_body_json(body);
        if let Some(r) = retry_after {
            template = template.insert_header("retry-after", r);
        }
        Mock::given(method("POST"))
            .and(path(MESSAGES))
            .respond_with(template)
            .mount(&server)
            .await;
        let adapter = TwilioAdapter::new(reqwest::Client::new(), &server.uri());
        (server, adapter)
    }

    #[tokio::test]
    async fn send_posts_the_documented_form_with_basic_auth() {
        let server = MockServer::start().await;
        // base64("AC0123456789abcdef0123456789abcdef:tok")
        Mock::given(method("POST"))
            .and(path(MESSAGES))
            .and(header("authorization", "Basic QUMwMTIzNDU2Nzg5YWJjZGVmMDEyMzQ1Njc4OWFiY2RlZjp0b2s="))
            .and(header("content-type", "application/x-www-form-urlencoded"))
            .and(body_string_contains("StatusCallback="))
            .respond_with(ResponseTemplate::new(201).set_body_json(serde_json::json!({"sid": "MM00000000000000000000000000000001", "status": "queued"})))
            .mount(&server)
            .await;
        let adapter = TwilioAdapter::new(reqwest::Client::new(), &server.uri());
        let media = vec![
            Media {
                url: "https://ex.org/a.jpg".into(),
                content_type: None,
            },
            Media {
                url: "https://ex.org/b.png".into(),
                content_type: None,
            },
        ];
        let result = adapter
            .send(&creds("tok"), &outbound(Channel::Mms, media))
            .await
            .unwrap();
        assert_eq!(
            result.provider_message_id,
            "MM00000000000000000000000000000001"
        );
        assert_eq!(
            (result.status, result.raw_status.as_str()),
            (DeliveryStatus::Queued, "queued")
        );
        let sent = &server.received_requests().await.unwrap()[0];
        let form: Vec<(String, String)> = serde_urlencoded::from_bytes(&sent.body).unwrap();
        let expect = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            form,
            expect(&[
                ("To", "+15555550123"),
                ("From", "+15555550100"),
                ("Body", "Units are on the way"),
                ("MediaUrl", "https://ex.org/a.jpg"),
                ("MediaUrl", "https://ex.org/b.png"),
                (
                    "StatusCallback",
                    "https://omni.example.org/webhooks/twilio/status"
                ),
            ])
        );
    }

    #[tokio::test]
    async fn whatsapp_and_rcs_addresses_carry_their_prefix() {
        for (channel, prefix) in [(Channel::Whatsapp, "whatsapp:"), (Channel::Rcs, "rcs:")] {
            let (server, adapter) = fake(
                201,
                serde_json::json!({"sid": "SM1", "status": "accepted"}),
                None,
            )
            .await;
            adapter
                .send(&creds("tok"), &outbound(channel, vec![]))
                .await
                .unwrap();
            let form: Vec<(String, String)> =
                serde_urlencoded::from_bytes(&server.received_requests().await.unwrap()[0].body)
                    .unwrap();
            assert_eq!(form[0], ("To".into(), format!("{prefix}+15555550123")));
            assert_eq!(form[1], ("From".into(), format!("{prefix}+15555550100")));
        }
    }

    #[tokio::test]
    async fn errors_are_classified() {
        let (_s, a) = fake(
            429,
            serde_json::json!({"code": 20429, "message": "Too Many Requests", "status": 429}),
            Some("7"),
        )
        .await;
        match a.send(&creds("tok"), &outbound(Channel::Sms, vec![])).await {
            Err(SendError::Transient {
                retry_after, code, ..
            }) => {
                assert_eq!(retry_after, Some(std::time::Duration::from_secs(7)));
                assert_eq!(code.as_deref(), Some("20429"));
            }
            other => panic!("{other:?}"),
        }
        let (_s, a) = fake(500, serde_json::json!({}), None).await;
        assert!(a
            .send(&creds("tok"), &outbound(Channel::Sms, vec![]))
            .await
            .unwrap_err()
            .is_transient());
        let (_s, a) = fake(400, serde_json::json!({"code": 21211, "message": "The 'To' number is not a valid phone number.", "status": 400}), None).await;
        let err = a
            .send(&creds("tok"), &outbound(Channel::Sms, vec![]))
            .await
            .unwrap_err();
        assert!(!err.is_transient());
        assert_eq!(err.code(), Some("21211"));
        assert!(err.message().contains("not a valid phone number"));
        for (code, transient) in [
            (21610, false),
            (21614, false),
            (21408, false),
            (30003, true),
            (30006, false),
            (30008, true),
        ] {
            let (_s, a) = fake(
                400,
                serde_json::json!({"code": code, "message": "m", "status": 400}),
                None,
            )
            .await;
            assert_eq!(
                a.send(&creds("tok"), &outbound(Channel::Sms, vec![]))
                    .await
                    .unwrap_err()
                    .is_transient(),
                transient,
                "{code}"
            );
        }
        let (_s, a) = fake(
            401,
            serde_json::json!({"code": 20003, "message": "Authenticate", "status": 401}),
            None,
        )
        .await;
        let err = a
            .send(&creds("tok-secret-value"), &outbound(Channel::Sms, vec![]))
            .await
            .unwrap_err();
        assert!(!err.is_transient() && !err.to_string().contains("tok-secret-value"));
    }

    #[tokio::test]
    async fn network_failures_are_transient_and_channels_are_checked() {
        // Nothing listens on port 9 of loopback.
        let adapter = TwilioAdapter::new(reqwest::Client::new(), "http://127.0.0.1:9");
        assert!(adapter
            .send(&creds("tok"), &outbound(Channel::Sms, vec![]))
            .await
            .unwrap_err()
            .is_transient());
        assert!(!adapter
            .send(&creds("tok"), &outbound(Channel::Signal, vec![]))
            .await
            .unwrap_err()
            .is_transient());
        assert!(!adapter
            .send(&Credentials::Simulator, &outbound(Channel::Sms, vec![]))
            .await
            .unwrap_err()
            .is_transient());
    }

    proptest! {
        #[test]
        fn arbitrary_requests_never_panic(body in prop::collection::vec(any::<u8>(), 0..512), sig in ".{0,40}", url in ".{0,60}", get in any::<bool>(), json in any::<bool>()) {
            let request = WebhookRequest {
                method: if get { "GET".into() } else { "POST".into() },
                url,
                headers: vec![
                    ("content-type".into(), if json { "application/json".into() } else { "application/x-www-form-urlencoded".into() }),
                    ("x-twilio-signature".into(), sig),
                    ("x-twilio-webhooks-signature-settings".into(), "key=k,algorithm=HMAC_SHA256".into()),
                ],
                body,
            };
            let _ = verify(&request, &creds(FIXTURE_TOKEN));
            let _ = normalize(&request);
        }

        #[test]
        fn arbitrary_forms_never_panic(pairs in prop::collection::vec(("(MessageSid|From|To|Body|NumMedia|MediaUrl0|MessageStatus|EventType|[A-Za-z]{1,8})", ".{0,20}"), 0..12)) {
            let body = serde_urlencoded::to_string(&pairs).unwrap();
            let request = WebhookRequest { method: "POST".into(), url: "https://h/w".into(), headers: vec![], body: body.into_bytes() };
            let _ = normalize(&request);
        }
    }
}
