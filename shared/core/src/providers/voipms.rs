//! VoIP.ms: REST `sendSMS` / `sendMMS` out, the per-DID "SMS URL Callback" in.
//!
//! Wire facts (dossier §3, VoIP.ms wiki "SMS-MMS"): every API call is a plain request to
//! `rest.php` carrying `api_username`, `api_password` and `method`; numbers are 10-digit NANP
//! (VoIP.ms only messages US and Canadian numbers); the answer is HTTP 200 with a JSON `status`
//! even when the call failed. Inbound messages arrive on a URL the tenant configures with the
//! placeholders `{TO}` `{FROM}` `{MESSAGE}` `{ID}` `{TIMESTAMP}` `{MEDIA}`; VoIP.ms signs
//! nothing, so the URL also carries a shared `secret` we check. There are no delivery-status
//! callbacks and no documented JSON webhook body.

use async_trait::async_trait;
use chrono::Utc;
use serde_json::Value;
use uuid::Uuid;

use super::carrier::{
    random_digits, require, strong, ApiUrlSetting, Carrier, CarrierConfig, EnvLookup, Receives,
    SigningKey, TestInbound, TestWebhook, WebhookRoute,
};
use super::Secret;
use super::{
    check_url_secret, phones, post_form_for_json, Credentials, MessagingProviderAdapter,
    ParseError, VerifyError, WebhookRequest,
};
use crate::domain::{
    Channel, DeliveryStatus, InboundMessage, Media, OutboundMessage, ProviderKind, SendError,
    SendResult, WebhookEvent, E164,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// `sendSMS` rejects bodies longer than this many UTF-8 bytes with `sms_toolong`.
const SMS_MAX_BYTES: usize = 160;
/// The longest `message` `sendMMS` takes, in characters.
const MMS_MAX_CHARS: usize = 2048;
/// `sendMMS` has three attachment slots, `media1`..`media3`.
const MAX_MEDIA: usize = 3;
/// Carrier strings echoed into errors are cut to this length (they are untrusted input).
const MAX_ECHO: usize = 64;

/// The VoIP.ms carrier.
#[derive(Clone)]
pub struct VoipmsAdapter {
    http: reqwest::Client,
    base_url: String,
}

impl VoipmsAdapter {
    /// Builds the adapter; `base_url` is the full `rest.php` endpoint
    /// (`https://voip.ms/api/v1/rest.php` in production, a fake in tests).
    pub fn new(http: reqwest::Client, base_url: &str) -> Self {
        VoipmsAdapter {
            http,
            base_url: base_url.to_string(),
        }
    }

    /// Sends the prepared form and maps VoIP.ms's answer.
    async fn call(&self, form: &[(&str, &str)]) -> Result<SendResult, SendError> {
        // POST form rather than the documented GET so the API password never sits in a URL.
        let body = post_form_for_json(&self.http, &self.base_url, form, "VoIP.ms").await?;
        map_response(&body)
    }
}

/// Maps the JSON VoIP.ms returns (always with HTTP 200) to a send outcome.
fn map_response(body: &Value) -> Result<SendResult, SendError> {
    let Some(status) = body.get("status").and_then(Value::as_str) else {
        return Err(SendError::transient(
            "VoIP.ms answered without a status",
            None,
        ));
    };
    match status {
        "success" => {
            // sendSMS answers `sms`, sendMMS `mms`; captures show the id as number or string.
            let id = ["sms", "mms"]
                .iter()
                .filter_map(|key| body.get(*key))
                .find_map(|v| match v {
                    Value::Number(n) => Some(n.to_string()),
                    Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
                    _ => None,
                });
            // Success without an id still means the message went out: a permanent error
            // (never retried) avoids sending it twice.
            let id = id.ok_or_else(|| {
                SendError::permanent(
                    Some("success".into()),
                    "VoIP.ms accepted the message but returned no id",
                )
            })?;
            Ok(SendResult {
                provider: ProviderKind::Voipms,
                provider_message_id: id,
                status: DeliveryStatus::Sent,
                raw_status: "success".into(),
            })
        }
        // The daily API quota (100 messages by default) resets; a later attempt can pass.
        "limit_reached" => Err(SendError::Transient {
            code: Some("limit_reached".into()),
            message: "VoIP.ms daily sending limit reached".into(),
            retry_after: None,
        }),
        other => {
            let code: String = other.chars().take(MAX_ECHO).collect();
            let message = describe_error(&code);
            Err(SendError::permanent(Some(code), message))
        }
    }
}

/// A readable reason for a VoIP.ms error status (they are terse snake_case words).
fn describe_error(code: &str) -> String {
    let text = match code {
        "invalid_credentials" => "VoIP.ms rejected the API username or password",
        "ip_not_authorized" | "ip_not_enabled" => {
            "this server's IP address is not on the VoIP.ms API allow-list"
        }
        "api_not_enabled" => "the VoIP.ms API is not enabled on this account",
        "sms_toolong" => "the message is too long for VoIP.ms SMS",
        "invalid_did" => "the sender number is not an SMS-enabled DID of this VoIP.ms account",
        "invalid_dst" => "VoIP.ms rejected the destination number",
        "permission_denied" => "VoIP.ms denied permission for this request",
        c if c.starts_with("missing_") => "VoIP.ms says a required field is missing",
        _ => "VoIP.ms refused the message",
    };
    format!("{text} ({code})")
}

/// The request parameters of a callback: the query string, plus the body of a form POST.
///
/// Values are percent-decoded. One integration reports VoIP.ms delimiting with `;` instead of
/// `&`; a string with no `&` at all is therefore split on `;`. Mixed strings are split on `&`
/// only, so a literal `;` inside a value of a normal query is never cut.
fn callback_params(request: &WebhookRequest) -> Vec<(String, String)> {
    let mut params = decode_params(request.query());
    if request.method.eq_ignore_ascii_case("POST") && request.is_form() {
        params.extend(decode_params(&String::from_utf8_lossy(&request.body)));
    }
    params
}

fn decode_params(raw: &str) -> Vec<(String, String)> {
    let separator = if raw.contains('&') { '&' } else { ';' };
    raw.split(separator)
        .flat_map(|pair| url::form_urlencoded::parse(pair.as_bytes()).into_owned())
        .collect()
}

/// The first value of a parameter.
fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Reads a callback number: 10-digit NANP or E.164, depending on the DID's portal setting.
fn number(params: &[(String, String)], name: &str) -> Result<E164, ParseError> {
    let raw = param(params, name)
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| ParseError::new(format!("missing {name}")))?;
    E164::from_carrier(raw).map_err(|e| ParseError::new(format!("{name}: {e}")))
}

/// `{MEDIA}` as a list: comma-separated URLs, empty for a plain SMS.
fn media(params: &[(String, String)]) -> Vec<Media> {
    param(params, "media")
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .filter(|u| {
            // Only http(s) links are kept: Omni later fetches these, and anything else is not a
            // VoIP.ms media link. Dropping one is logged, without the value.
            let ok = url::Url::parse(u).is_ok_and(|p| matches!(p.scheme(), "http" | "https"));
            if !ok {
                tracing::warn!("dropping a VoIP.ms media entry that is not an http(s) URL");
            }
            ok
        })
        .map(|u| Media {
            url: u.to_string(),
            content_type: None,
        })
        .collect()
}

/// Builds the `sendSMS` / `sendMMS` form for a message, or says why it cannot be sent.
fn build_form<'a>(
    creds: &'a VoipmsCredentials,
    message: &'a OutboundMessage,
) -> Result<Vec<(&'a str, &'a str)>, SendError> {
    if !matches!(message.channel, Channel::Sms | Channel::Mms) {
        return Err(SendError::permanent(
            None,
            format!("VoIP.ms cannot send on the {} channel", message.channel),
        ));
    }
    let (from, to) = phones("VoIP.ms", message)?;
    let did = from.nanp_national().ok_or_else(|| {
        SendError::permanent(None, "VoIP.ms sends only from US/Canadian (+1) numbers")
    })?;
    let dst = to.nanp_national().ok_or_else(|| {
        SendError::permanent(None, "VoIP.ms delivers only to US/Canadian (+1) numbers")
    })?;
    let body = message.body.as_deref().unwrap_or("");
    if body.is_empty() && message.media.is_empty() {
        return Err(SendError::permanent(
            None,
            "nothing to send: no text and no media",
        ));
    }
    if message.media.len() > MAX_MEDIA {
        return Err(SendError::permanent(
            None,
            format!("VoIP.ms takes at most {MAX_MEDIA} media per message"),
        ));
    }
    if body.chars().count() > MMS_MAX_CHARS {
        return Err(SendError::permanent(
            None,
            format!("message longer than VoIP.ms's {MMS_MAX_CHARS} characters"),
        ));
    }
    // Media needs sendMMS; so does text over the SMS limit, which sendSMS would reject with
    // `sms_toolong` rather than split.
    let mms = !message.media.is_empty() || body.len() > SMS_MAX_BYTES;
    let mut form = vec![
        ("api_username", creds.api_username.as_str()),
        ("api_password", creds.api_password.expose()),
        ("method", if mms { "sendMMS" } else { "sendSMS" }),
        ("did", did),
        ("dst", dst),
        ("message", body),
    ];
    for (slot, item) in ["media1", "media2", "media3"]
        .into_iter()
        .zip(&message.media)
    {
        form.push((slot, item.url.as_str()));
    }
    Ok(form)
}

#[async_trait]
impl MessagingProviderAdapter for VoipmsAdapter {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Voipms
    }

    fn channels(&self) -> &'static [Channel] {
        &[Channel::Sms, Channel::Mms]
    }

    async fn send(
        &self,
        credentials: &Credentials,
        message: &OutboundMessage,
    ) -> Result<SendResult, SendError> {
        let Credentials::Voipms(creds) = credentials else {
            return Err(SendError::permanent(
                None,
                "credentials are not for VoIP.ms",
            ));
        };
        let form = build_form(creds, message)?;
        self.call(&form).await
    }

    /// VoIP.ms signs nothing: the tenant's callback URL carries `secret=<webhook_secret>`,
    /// compared here in constant time.
    fn verify_inbound(
        &self,
        request: &WebhookRequest,
        credentials: &Credentials,
    ) -> Result<(), VerifyError> {
        let Credentials::Voipms(creds) = credentials else {
            return Err(VerifyError::WrongCredentials);
        };
        let params = callback_params(request);
        check_url_secret(param(&params, "secret"), &creds.webhook_secret)
    }

    /// Reads one inbound SMS/MMS from the callback's `id`, `from`, `to`, `message` and
    /// `media` parameters. `date` ({TIMESTAMP}) is not used: its format and time zone are
    /// undocumented, and Omni stamps `received_at` itself.
    fn normalize_inbound(&self, request: &WebhookRequest) -> Result<Vec<WebhookEvent>, ParseError> {
        let params = callback_params(request);
        let id = param(&params, "id")
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| ParseError::new("missing id"))?;
        let from = number(&params, "from")?;
        let to = number(&params, "to")?;
        let body = param(&params, "message")
            .filter(|m| !m.is_empty())
            .map(str::to_string);
        let media = media(&params);
        Ok(vec![WebhookEvent::Message(InboundMessage {
            id: Uuid::now_v7(),
            provider: ProviderKind::Voipms,
            provider_message_id: id.to_string(),
            channel: if media.is_empty() {
                Channel::Sms
            } else {
                Channel::Mms
            },
            from: from.into(),
            to: to.into(),
            body,
            media,
            profile_name: None,
            received_at: Utc::now(),
            auto_submitted: false,
        })])
    }
}

/// VoIP.ms API credentials and the secret placed in the callback URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoipmsCredentials {
    /// Portal login e-mail (not secret).
    pub api_username: String,
    /// API password.
    pub api_password: Secret,
    /// The `secret=` query value VoIP.ms must send back on callbacks.
    pub webhook_secret: Secret,
}

impl CarrierConfig for VoipmsCredentials {
    const SECRET_FIELDS: &'static [&'static str] = &["api_password", "webhook_secret"];

    fn validate(&self) -> Result<(), String> {
        require(!self.api_username.is_empty(), "api_username")?;
        require(!self.api_password.expose().is_empty(), "api_password")?;
        strong(&self.webhook_secret, "webhook_secret")
    }

    fn secrets(&self) -> Vec<&str> {
        vec![self.api_password.expose(), self.webhook_secret.expose()]
    }

    fn example() -> Self {
        VoipmsCredentials {
            api_username: "ops@example.org".into(),
            api_password: Secret::new("voipms-api-password"),
            webhook_secret: Secret::new("voipms-webhook-secret"),
        }
    }
}

/// The Omni declaration of Voipms.
pub const CARRIER: Carrier = Carrier {
    kind: ProviderKind::Voipms,
    api_url: Some(ApiUrlSetting {
        env: "OMNI_VOIPMS_API_URL",
        default: "https://voip.ms/api/v1/rest.php",
        help: "VoIP.ms REST endpoint.",
    }),
    webhooks: &[
        WebhookRoute::get("/webhooks/voipms", Receives::Inbound),
        WebhookRoute::post("/webhooks/voipms", Receives::Inbound),
    ],
    adapter: |http, base_url| Arc::new(VoipmsAdapter::new(http, base_url)),
    platform_config: Some(platform_config),
    test_webhook: TestWebhook::Signer {
        help: "URL callback (GET) with the tenant's secret; --secret: the webhook secret",
        sign: sign_test_webhook,
    },
    openapi: OPENAPI,
};

/// `VOIPMS_API_USERNAME` + `VOIPMS_API_PASSWORD` + `VOIPMS_WEBHOOK_SECRET`: the platform's
/// account, for tenants with none.
fn platform_config(var: &EnvLookup) -> Option<Credentials> {
    Some(Credentials::Voipms(VoipmsCredentials {
        api_username: var("VOIPMS_API_USERNAME")?,
        api_password: Secret::new(var("VOIPMS_API_PASSWORD")?),
        webhook_secret: Secret::new(var("VOIPMS_WEBHOOK_SECRET")?),
    }))
}

/// An inbound message as VoIP.ms calls its URL callback: a GET, the secret in the query.
fn sign_test_webhook(
    message: &TestInbound,
    key: SigningKey<'_>,
) -> Result<Vec<WebhookRequest>, String> {
    message.unsplit("VoIP.ms")?;
    let (from, to) = message.numbers()?;
    let secret = key.secret(|c| VoipmsCredentials::of(c).map(|c| &c.webhook_secret))?;
    let nanp = |n: &E164| {
        n.nanp_national()
            .map(str::to_owned)
            .ok_or("VoIP.ms numbers are NANP (+1) only".to_string())
    };
    let id = message.id_or(|| (random_digits() % 1_000_000_000).to_string());
    let query = serde_urlencoded::to_string([
        ("secret", secret.as_str()),
        ("id", id.as_str()),
        ("date", &Utc::now().format("%Y-%m-%d %H:%M:%S").to_string()),
        ("from", &nanp(&from)?),
        ("to", &nanp(&to)?),
        ("message", message.body.as_str()),
        ("media", &message.media.join(",")),
    ])
    .map_err(|e| e.to_string())?;
    Ok(vec![WebhookRequest {
        method: "GET".into(),
        url: format!("{}/webhooks/voipms?{query}", message.base_url),
        headers: Vec::new(),
        body: Vec::new(),
    }])
}

/// The webhook routes' part of the OpenAPI document.
const OPENAPI: &str = r##"{"paths": {
"/webhooks/voipms": {"get": {"summary": "VoIP.ms SMS/MMS URL callback", "responses": {"200": {"description": "accepted", "content": {"text/plain": {"schema": {"type": "string", "const": "ok"}}}}}, "parameters": [{"name": "secret", "in": "query", "schema": {"type": "string"}, "required": true}, {"name": "id", "in": "query", "schema": {"type": "string"}, "required": false}, {"name": "date", "in": "query", "schema": {"type": "string"}, "required": false}, {"name": "from", "in": "query", "schema": {"type": "string"}, "required": false}, {"name": "to", "in": "query", "schema": {"type": "string"}, "required": false}, {"name": "message", "in": "query", "schema": {"type": "string"}, "required": false}, {"name": "media", "in": "query", "schema": {"type": "string"}, "required": false}]}, "post": {"summary": "VoIP.ms SMS/MMS URL callback (form body)", "responses": {"200": {"description": "accepted", "content": {"text/plain": {"schema": {"type": "string", "const": "ok"}}}}}, "parameters": [{"name": "secret", "in": "query", "schema": {"type": "string"}, "required": true}]}}
}, "schemas": {}}"##;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Address;
    use crate::providers::test_support::{form_of, nanp_outbound as message};
    use crate::providers::{Secret, SignalConfig};
    use proptest::prelude::*;
    use wiremock::matchers::{body_string_contains, header, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    const SMS_QUERY: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/voipms_inbound_sms.query"
    ));
    const MMS_QUERY: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/voipms_inbound_mms.query"
    ));
    const PASSWORD: &str = "api-pass-very-secret";

    fn creds() -> Credentials {
        Credentials::Voipms(VoipmsCredentials {
            api_username: "ops@example.com".into(),
            api_password: Secret::new(PASSWORD),
            webhook_secret: Secret::new("s3cr3t-token"),
        })
    }

    fn get(query: &str) -> WebhookRequest {
        WebhookRequest {
            method: "GET".into(),
            url: format!("https://hooks.example.com/voipms/sms?{}", query.trim()),
            headers: vec![],
            body: vec![],
        }
    }

    fn adapter(base: &str) -> VoipmsAdapter {
        VoipmsAdapter::new(reqwest::Client::new(), base)
    }

    fn only_message(events: Vec<WebhookEvent>) -> InboundMessage {
        assert_eq!(events.len(), 1);
        match events.into_iter().next().unwrap() {
            WebhookEvent::Message(m) => m,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn inbound_sms_fixture_is_normalised() {
        let m = only_message(
            adapter("http://x")
                .normalize_inbound(&get(SMS_QUERY))
                .unwrap(),
        );
        assert_eq!(m.provider, ProviderKind::Voipms);
        assert_eq!(m.provider_message_id, "123456789");
        assert_eq!(m.channel, Channel::Sms);
        assert_eq!(m.from.as_str(), "+15555550123");
        assert_eq!(m.to.as_str(), "+15555550100");
        assert_eq!(m.body.as_deref(), Some("Hello from VoIP.ms"));
        assert!(m.media.is_empty());
        assert_eq!(m.profile_name, None);
    }

    #[test]
    fn inbound_mms_fixture_is_normalised() {
        let m = only_message(
            adapter("http://x")
                .normalize_inbound(&get(MMS_QUERY))
                .unwrap(),
        );
        assert_eq!(m.provider_message_id, "123456790");
        assert_eq!(m.channel, Channel::Mms);
        assert_eq!(m.from.as_str(), "+15555550123");
        assert_eq!(m.to.as_str(), "+15555550100");
        assert_eq!(m.body, None);
        assert_eq!(
            m.media,
            vec![Media {
                url: "https://voip.ms/media/example-0001.jpg".into(),
                content_type: None
            }]
        );
    }

    #[test]
    fn several_media_semicolons_and_form_posts_are_read() {
        let q = "secret=s3cr3t-token;to=5555550100;from=%2B15555550123;message=a%26b;id=9;media=https%3A%2F%2Fa.example%2F1.jpg%2Chttps%3A%2F%2Fa.example%2F2.png%2Cjavascript%3Ax";
        let m = only_message(adapter("http://x").normalize_inbound(&get(q)).unwrap());
        assert_eq!(m.from.as_str(), "+15555550123");
        assert_eq!(m.body.as_deref(), Some("a&b"));
        let urls: Vec<_> = m.media.iter().map(|m| m.url.as_str()).collect();
        assert_eq!(urls, ["https://a.example/1.jpg", "https://a.example/2.png"]);

        let post = WebhookRequest {
            method: "POST".into(),
            url: "https://hooks.example.com/voipms/sms".into(),
            headers: vec![(
                "content-type".into(),
                "application/x-www-form-urlencoded".into(),
            )],
            body: SMS_QUERY.trim().as_bytes().to_vec(),
        };
        let a = adapter("http://x");
        assert_eq!(a.verify_inbound(&post, &creds()), Ok(()));
        assert_eq!(
            only_message(a.normalize_inbound(&post).unwrap()).provider_message_id,
            "123456789"
        );
    }

    #[test]
    fn inbound_without_id_or_with_a_bad_number_is_rejected() {
        let a = adapter("http://x");
        assert!(a
            .normalize_inbound(&get("to=5555550100&from=5555550123&message=hi"))
            .is_err());
        assert!(a
            .normalize_inbound(&get("id=1&to=5555550100&from=12&message=hi"))
            .is_err());
        assert!(a.normalize_inbound(&get("id=1&from=5555550123")).is_err());
    }

    #[test]
    fn secret_is_checked() {
        let a = adapter("http://x");
        assert_eq!(a.verify_inbound(&get(SMS_QUERY), &creds()), Ok(()));
        let wrong = SMS_QUERY.replace("s3cr3t-token", "s3cr3t-tokeX");
        assert_eq!(
            a.verify_inbound(&get(&wrong), &creds()),
            Err(VerifyError::Mismatch)
        );
        let missing = SMS_QUERY.replace("secret=s3cr3t-token&", "");
        assert_eq!(
            a.verify_inbound(&get(&missing), &creds()),
            Err(VerifyError::Missing)
        );
        let signal = Credentials::Signal(SignalConfig {
            rpc_url: "http://127.0.0.1:8080/api/v1/rpc".into(),
            account: None,
        });
        assert_eq!(
            a.verify_inbound(&get(SMS_QUERY), &signal),
            Err(VerifyError::WrongCredentials)
        );
    }

    #[tokio::test]
    async fn sms_is_posted_as_a_form_and_success_is_mapped() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/api/v1/rest.php"))
            .and(header("content-type", "application/x-www-form-urlencoded"))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_string(r#"{"status":"success","sms":40702183}"#),
            )
            .expect(1)
            .mount(&server)
            .await;
        let a = adapter(&format!("{}/api/v1/rest.php", server.uri()));
        let result = a
            .send(&creds(), &message("Hello there", &[]))
            .await
            .unwrap();
        assert_eq!(
            result,
            SendResult {
                provider: ProviderKind::Voipms,
                provider_message_id: "40702183".into(),
                status: DeliveryStatus::Sent,
                raw_status: "success".into(),
            }
        );
        let requests = server.received_requests().await.unwrap();
        let req = requests.first().unwrap();
        assert_eq!(
            req.url.query(),
            None,
            "nothing, least of all the password, goes in the URL"
        );
        let form = form_of(req);
        assert_eq!(field(&form, "api_username"), Some("ops@example.com"));
        assert_eq!(field(&form, "api_password"), Some(PASSWORD));
        assert_eq!(field(&form, "method"), Some("sendSMS"));
        assert_eq!(field(&form, "did"), Some("5555550100"));
        assert_eq!(field(&form, "dst"), Some("5555550123"));
        assert_eq!(field(&form, "message"), Some("Hello there"));
        assert_eq!(field(&form, "media1"), None);
    }

    #[tokio::test]
    async fn mms_sends_media_slots_and_reads_a_string_mms_id() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(body_string_contains("method=sendMMS"))
            .respond_with(
                ResponseTemplate::new(200).set_body_string(r#"{"status":"success","mms":"555"}"#),
            )
            .mount(&server)
            .await;
        let a = adapter(&server.uri());
        let result = a
            .send(
                &creds(),
                &message(
                    "pic",
                    &["https://cdn.example/a.jpg", "https://cdn.example/b.jpg"],
                ),
            )
            .await
            .unwrap();
        assert_eq!(result.provider_message_id, "555");
        let requests = server.received_requests().await.unwrap();
        let form = form_of(requests.first().unwrap());
        assert_eq!(field(&form, "method"), Some("sendMMS"));
        assert_eq!(field(&form, "message"), Some("pic"));
        assert_eq!(field(&form, "media1"), Some("https://cdn.example/a.jpg"));
        assert_eq!(field(&form, "media2"), Some("https://cdn.example/b.jpg"));
        assert_eq!(field(&form, "media3"), None);
    }

    #[tokio::test]
    async fn a_long_text_goes_as_mms() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(body_string_contains("method=sendMMS"))
            .respond_with(
                ResponseTemplate::new(200).set_body_string(r#"{"status":"success","mms":7}"#),
            )
            .expect(1)
            .mount(&server)
            .await;
        // 100 characters but 200 UTF-8 bytes: over the SMS byte limit.
        let long = "é".repeat(100);
        let result = adapter(&server.uri())
            .send(&creds(), &message(&long, &[]))
            .await
            .unwrap();
        assert_eq!(result.provider_message_id, "7");
    }

    #[tokio::test]
    async fn carrier_errors_are_classified_without_leaking_the_password() {
        let server = MockServer::start().await;
        let a = adapter(&server.uri());
        let cases: [(u16, &str, bool, Option<&str>); 4] = [
            (
                200,
                r#"{"status":"invalid_dst"}"#,
                false,
                Some("invalid_dst"),
            ),
            (
                200,
                r#"{"status":"limit_reached"}"#,
                true,
                Some("limit_reached"),
            ),
            (500, "oops", true, None),
            (200, "<html>maintenance</html>", true, None),
        ];
        for (http, body, transient, code) in cases {
            server.reset().await;
            Mock::given(method("POST"))
                .respond_with(ResponseTemplate::new(http).set_body_string(body))
                .mount(&server)
                .await;
            let err = a.send(&creds(), &message("hi", &[])).await.unwrap_err();
            assert_eq!(err.is_transient(), transient, "{body}: {err:?}");
            assert_eq!(err.code(), code, "{body}");
            assert!(!err.message().is_empty());
            assert!(!format!("{err} {err:?}").contains(PASSWORD));
        }
    }

    #[tokio::test]
    async fn unsendable_messages_fail_permanently_before_any_request() {
        let a = adapter("http://127.0.0.1:9/never-called");
        let mut whatsapp = message("hi", &[]);
        whatsapp.channel = Channel::Whatsapp;
        let mut foreign = message("hi", &[]);
        foreign.to = Address::from_stored("+33612345678").unwrap();
        let four = message(
            "hi",
            &["https://a/1", "https://a/2", "https://a/3", "https://a/4"],
        );
        let huge = message(&"x".repeat(MMS_MAX_CHARS + 1), &[]);
        let empty = message("", &[]);
        for m in [whatsapp, foreign, four, huge, empty] {
            let err = a.send(&creds(), &m).await.unwrap_err();
            assert!(!err.is_transient(), "{err:?}");
        }
        let signal = Credentials::Signal(SignalConfig {
            rpc_url: "http://127.0.0.1:9".into(),
            account: None,
        });
        assert!(!a
            .send(&signal, &message("hi", &[]))
            .await
            .unwrap_err()
            .is_transient());
    }

    proptest! {
        #[test]
        fn arbitrary_requests_never_panic(query in ".{0,200}", body in prop::collection::vec(any::<u8>(), 0..200), post in any::<bool>()) {
            let req = WebhookRequest {
                method: if post { "POST".into() } else { "GET".into() },
                url: format!("https://h.example/v?{query}"),
                headers: vec![("content-type".into(), "application/x-www-form-urlencoded".into())],
                body,
            };
            let a = adapter("http://x");
            let _ = a.verify_inbound(&req, &creds());
            let _ = a.normalize_inbound(&req);
        }

        #[test]
        fn arbitrary_callback_values_never_panic(id in ".{0,20}", from in ".{0,20}", msg in ".{0,40}", media in ".{0,60}") {
            let q: String = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("id", &id).append_pair("to", "5555550100").append_pair("from", &from)
                .append_pair("message", &msg).append_pair("media", &media).finish();
            let _ = adapter("http://x").normalize_inbound(&get(&q));
        }
    }
}
