//! Signal through a signal-cli daemon in HTTP JSON-RPC mode (`signal-cli daemon --http`).
//!
//! Wire facts (dossier §4, signal-cli `man/signal-cli-jsonrpc.5`): requests are JSON-RPC 2.0
//! posted to `/api/v1/rpc`; results and JSON-RPC errors both come back with HTTP 200. Nothing
//! pushes to Omni: incoming envelopes are pulled, either with the `receive` method
//! ([`SignalAdapter::receive`], what Omni's poller calls) or from the daemon's
//! `/api/v1/events` SSE stream, and either body can be handed to `normalize_inbound`.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::carrier::{require, Carrier, CarrierConfig, TestWebhook};
use super::{
    http_failure, network_error, Credentials, MessagingProviderAdapter, ParseError, VerifyError,
    WebhookRequest,
};
use crate::domain::{
    Channel, DeliveryStatus, InboundMessage, Media, OutboundMessage, ProviderKind, SendError,
    SendResult, StatusUpdate, WebhookEvent, E164,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// How long one `receive` call waits for messages, in seconds: short, the poller loops.
const RECEIVE_TIMEOUT_SECS: u64 = 1;
/// Daemon-supplied strings echoed into errors are cut to this length.
const MAX_ECHO: usize = 200;

/// The signal-cli carrier.
#[derive(Clone)]
pub struct SignalAdapter {
    http: reqwest::Client,
}

/// A JSON-RPC error object as signal-cli returns it.
struct RpcError {
    code: i64,
    message: String,
    data: Value,
}

impl SignalAdapter {
    /// Builds the adapter; the daemon's URL comes with each tenant's [`SignalConfig`].
    pub fn new(http: reqwest::Client) -> Self {
        SignalAdapter { http }
    }

    /// Pulls the envelopes waiting in the daemon (JSON-RPC `receive`) and normalises them.
    ///
    /// The daemon is expected to run with `--receive-mode manual`: in the default `on-start`
    /// mode it pushes envelopes to connected clients instead of queueing them for `receive`
    /// (read from signal-cli's documentation, not verified against a running daemon). Envelopes the daemon handed over but that carry
    /// nothing for Omni (typing, sync, undecryptable) are dropped, never reported as errors,
    /// since signal-cli has already dequeued them.
    pub async fn receive(&self, config: &SignalConfig) -> Result<Vec<WebhookEvent>, SendError> {
        let mut params = Map::new();
        if let Some(account) = configured_account(config) {
            params.insert("account".into(), account.into());
        }
        params.insert("timeout".into(), RECEIVE_TIMEOUT_SECS.into());
        let response = self.rpc(config, "receive", Value::Object(params)).await?;
        let result = response.map_err(|e| rpc_send_error(&e))?;
        let fallback = configured_account(config).and_then(|a| E164::from_e164(a).ok());
        let mut events = Vec::new();
        // Not a ParseError path: a `result` that is not a list of envelopes simply holds none.
        if let Value::Array(items) = &result {
            for item in items {
                events.extend(item_events(item, fallback.as_ref()));
            }
        }
        Ok(events)
    }

    /// Posts one JSON-RPC call; the outer error is transport (HTTP, network, unreadable),
    /// the inner one is the daemon's JSON-RPC error.
    async fn rpc(
        &self,
        config: &SignalConfig,
        method: &str,
        params: Value,
    ) -> Result<Result<Value, RpcError>, SendError> {
        let request = json!({
            "jsonrpc": "2.0",
            "id": Uuid::now_v7().to_string(),
            "method": method,
            "params": params,
        });
        let response = self
            .http
            .post(&config.rpc_url)
            .json(&request)
            .send()
            .await
            .map_err(network_error)?;
        // 400/404/405/415/421 are configuration problems (wrong URL, Host pinning).
        if let Some(error) = http_failure("signal-cli", &response) {
            return Err(error);
        }
        let body: Value = response.json().await.map_err(|_| {
            SendError::transient("signal-cli answered with an unreadable body", None)
        })?;
        if let Some(error) = body.get("error") {
            return Ok(Err(RpcError {
                code: error
                    .get("code")
                    .and_then(Value::as_i64)
                    .unwrap_or_default(),
                message: error
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("signal-cli error")
                    .chars()
                    .take(MAX_ECHO)
                    .collect(),
                data: error.get("data").cloned().unwrap_or(Value::Null),
            }));
        }
        match body.get("result") {
            Some(result) => Ok(Ok(result.clone())),
            None => Err(SendError::transient(
                "signal-cli answered without a result",
                None,
            )),
        }
    }
}

/// The configured account, if any (empty counts as none).
fn configured_account(config: &SignalConfig) -> Option<&str> {
    config
        .account
        .as_deref()
        .map(str::trim)
        .filter(|a| !a.is_empty())
}

/// The longest `retryAfterSeconds` among per-recipient results.
fn results_retry_after(results: Option<&Value>) -> Option<Duration> {
    results?
        .as_array()?
        .iter()
        .filter_map(|r| r.get("retryAfterSeconds").and_then(Value::as_u64))
        .max()
        .map(Duration::from_secs)
}

/// Maps a JSON-RPC error: -3 (I/O) and -5 (every recipient rate-limited) can pass later.
fn rpc_send_error(error: &RpcError) -> SendError {
    let code = Some(error.code.to_string());
    match error.code {
        -3 | -5 => {
            let results = error.data.get("response").and_then(|r| r.get("results"));
            SendError::Transient {
                code,
                message: error.message.clone(),
                retry_after: results_retry_after(results),
            }
        }
        _ => SendError::Permanent {
            code,
            message: error.message.clone(),
        },
    }
}

/// Maps a successful `send` result, judged by our single recipient's entry.
fn map_send_result(result: &Value) -> Result<SendResult, SendError> {
    let timestamp = result
        .get("timestamp")
        .and_then(Value::as_u64)
        .ok_or_else(|| SendError::transient("signal-cli send result without a timestamp", None))?;
    let first = result
        .get("results")
        .and_then(Value::as_array)
        .and_then(|r| r.first());
    let Some(first) = first else {
        return Err(SendError::transient(
            "signal-cli reported no recipient result",
            None,
        ));
    };
    let kind: String = first
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("UNKNOWN")
        .chars()
        .take(MAX_ECHO)
        .collect();
    match kind.as_str() {
        "SUCCESS" => Ok(SendResult {
            provider: ProviderKind::Signal,
            provider_message_id: timestamp.to_string(),
            status: DeliveryStatus::Sent,
            raw_status: kind,
        }),
        "NETWORK_FAILURE" | "RATE_LIMIT_FAILURE" => Err(SendError::Transient {
            message: format!("Signal could not deliver yet ({kind})"),
            retry_after: first
                .get("retryAfterSeconds")
                .and_then(Value::as_u64)
                .map(Duration::from_secs),
            code: Some(kind),
        }),
        _ => Err(SendError::Permanent {
            message: describe_failure(&kind),
            code: Some(kind),
        }),
    }
}

/// A readable reason for a permanent per-recipient failure.
fn describe_failure(kind: &str) -> String {
    match kind {
        "UNREGISTERED_FAILURE" => "the recipient is not registered on Signal".into(),
        "IDENTITY_FAILURE" => {
            "the recipient's safety number changed; an operator must trust it in signal-cli".into()
        }
        "INVALID_PRE_KEY_FAILURE" => "the recipient's Signal keys are invalid".into(),
        other => format!("Signal refused the message ({other})"),
    }
}

/// Finds the `{envelope, account}` items in a JSON body: a `receive` notification (automatic
/// or manual-subscription mode), a response to a `receive` call, a bare SSE `data` object, or
/// a JSON-RPC batch of those.
fn json_items<'a>(value: &'a Value, out: &mut Vec<&'a Value>) -> Result<(), ParseError> {
    match value {
        Value::Array(batch) => {
            for v in batch {
                json_items(v, out)?;
            }
            Ok(())
        }
        Value::Object(obj) => {
            if obj.contains_key("envelope") {
                out.push(value);
            } else if let Some(method) = obj.get("method") {
                // Other notifications carry no messages.
                if method == "receive" {
                    let params = obj.get("params").unwrap_or(&Value::Null);
                    out.push(params.get("result").unwrap_or(params));
                }
            } else if let Some(result) = obj.get("result") {
                match result {
                    Value::Array(items) => out.extend(items),
                    other => out.push(other),
                }
            } else if let Some(error) = obj.get("error") {
                let code = error
                    .get("code")
                    .and_then(Value::as_i64)
                    .unwrap_or_default();
                return Err(ParseError::new(format!(
                    "signal-cli returned JSON-RPC error {code}"
                )));
            } else {
                return Err(ParseError::new("not a signal-cli receive payload"));
            }
            Ok(())
        }
        _ => Err(ParseError::new("not a signal-cli receive payload")),
    }
}

/// The `data` payloads of the `receive` events of an SSE stream (`/api/v1/events`).
fn sse_payloads(text: &str) -> Result<Vec<String>, ParseError> {
    let mut payloads = Vec::new();
    let mut event = String::new();
    let mut data: Vec<&str> = Vec::new();
    // A trailing empty line dispatches the last event even if the body lacks one.
    for line in text.lines().chain(std::iter::once("")) {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            // SSE's default event name is "message"; the daemon names its events "receive".
            if !data.is_empty() && (event.is_empty() || event == "receive" || event == "message") {
                payloads.push(data.join("\n"));
            }
            event.clear();
            data.clear();
            continue;
        }
        if line.starts_with(':') {
            continue; // keep-alive comment
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => event = value.to_string(),
            "data" => data.push(value),
            "id" | "retry" => {}
            _ => {
                return Err(ParseError::new(
                    "body is neither JSON nor a server-sent event stream",
                ))
            }
        }
    }
    Ok(payloads)
}

/// The events of one `{envelope, account}` item; `fallback` is our number when the item has
/// no `account` (single-account daemons answering `receive`).
///
/// Items that cannot be routed or hold nothing for Omni yield no events rather than an
/// error: one odd envelope must not cost the rest of a batch.
fn item_events(item: &Value, fallback: Option<&E164>) -> Vec<WebhookEvent> {
    let Some(envelope) = item.get("envelope").and_then(Value::as_object) else {
        return vec![];
    };
    let account = item
        .get("account")
        .and_then(Value::as_str)
        .and_then(|a| E164::from_e164(a).ok());
    let Some(account) = account.or_else(|| fallback.cloned()) else {
        tracing::warn!("skipping a signal-cli envelope without a usable account");
        return vec![];
    };
    if let Some(data) = envelope.get("dataMessage") {
        return data_message(envelope, data, account).into_iter().collect();
    }
    if let Some(receipt) = envelope.get("receiptMessage") {
        return receipt_events(receipt, &account);
    }
    // Typing, sync, story, call and edit envelopes carry nothing Omni records.
    vec![]
}

/// An incoming text and/or attachments; group messages are kept, the contact is the sender.
fn data_message(
    envelope: &Map<String, Value>,
    data: &Value,
    account: E164,
) -> Option<WebhookEvent> {
    let source = envelope.get("sourceNumber").and_then(Value::as_str)?;
    let Ok(from) = E164::from_e164(source) else {
        tracing::warn!("skipping a signal-cli envelope whose sourceNumber is not E.164");
        return None;
    };
    let timestamp = envelope
        .get("timestamp")
        .and_then(Value::as_u64)
        .or_else(|| data.get("timestamp").and_then(Value::as_u64))?;
    let body = data
        .get("message")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .map(str::to_string);
    let media: Vec<Media> = data
        .get("attachments")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|a| {
                    let id = a
                        .get("id")
                        .and_then(Value::as_str)
                        .filter(|id| !id.is_empty())?;
                    Some(Media {
                        // The bytes live in the daemon (`getAttachment`), not at a public URL.
                        url: format!("signal-attachment:{id}"),
                        content_type: a
                            .get("contentType")
                            .and_then(Value::as_str)
                            .map(str::to_string),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    if body.is_none() && media.is_empty() {
        return None; // reactions, deletions, expiry-timer updates
    }
    // The sender's UUID is stable across number changes; the number is the fallback.
    let sender = envelope
        .get("sourceUuid")
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty())
        .unwrap_or(source);
    Some(WebhookEvent::Message(InboundMessage {
        id: Uuid::now_v7(),
        provider: ProviderKind::Signal,
        provider_message_id: format!("{sender}:{timestamp}"),
        channel: Channel::Signal,
        from: from.into(),
        to: account.into(),
        body,
        media,
        profile_name: envelope
            .get("sourceName")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .map(str::to_string),
        received_at: Utc::now(),
        auto_submitted: false,
    }))
}

/// A delivery/read receipt: one update per message timestamp it covers.
fn receipt_events(receipt: &Value, account: &E164) -> Vec<WebhookEvent> {
    let flag = |name: &str| receipt.get(name).and_then(Value::as_bool).unwrap_or(false);
    let (status, raw) = if flag("isRead") {
        (DeliveryStatus::Read, "read")
    } else if flag("isViewed") {
        (DeliveryStatus::Read, "viewed")
    } else if flag("isDelivery") {
        (DeliveryStatus::Delivered, "delivered")
    } else {
        return vec![];
    };
    let at = receipt
        .get("when")
        .and_then(Value::as_i64)
        .and_then(DateTime::from_timestamp_millis)
        .unwrap_or_else(Utc::now);
    receipt
        .get("timestamps")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_u64)
        .map(|ts| {
            WebhookEvent::Status(StatusUpdate {
                provider: ProviderKind::Signal,
                provider_message_id: ts.to_string(),
                status,
                raw_status: raw.into(),
                error_code: None,
                error_message: None,
                tenant_number: Some(account.clone().into()),
                at,
            })
        })
        .collect()
}

#[async_trait]
impl MessagingProviderAdapter for SignalAdapter {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Signal
    }

    fn channels(&self) -> &'static [Channel] {
        &[Channel::Signal]
    }

    async fn send(
        &self,
        credentials: &Credentials,
        message: &OutboundMessage,
    ) -> Result<SendResult, SendError> {
        let Credentials::Signal(config) = credentials else {
            return Err(SendError::permanent(
                None,
                "credentials are not for signal-cli",
            ));
        };
        if message.channel != Channel::Signal {
            return Err(SendError::permanent(
                None,
                format!("signal-cli cannot send on the {} channel", message.channel),
            ));
        }
        let body = message.body.as_deref().filter(|b| !b.is_empty());
        if body.is_none() && message.media.is_empty() {
            return Err(SendError::permanent(
                None,
                "nothing to send: no text and no media",
            ));
        }
        let mut params = Map::new();
        params.insert("recipient".into(), json!([message.to.as_str()]));
        if let Some(body) = body {
            params.insert("message".into(), body.into());
        }
        if !message.media.is_empty() {
            let attachments: Vec<&str> = message.media.iter().map(|m| m.url.as_str()).collect();
            params.insert("attachments".into(), json!(attachments));
        }
        if let Some(account) = configured_account(config) {
            params.insert("account".into(), account.into());
        }
        let result = self.rpc(config, "send", Value::Object(params)).await?;
        map_send_result(&result.map_err(|e| rpc_send_error(&e))?)
    }

    /// signal-cli has no webhook signature: Omni pulls from its own daemon (over loopback or
    /// a private network), so authenticity comes from whom we connect to, not from the body.
    fn verify_inbound(
        &self,
        _request: &WebhookRequest,
        credentials: &Credentials,
    ) -> Result<(), VerifyError> {
        match credentials {
            Credentials::Signal(_) => Ok(()),
            _ => Err(VerifyError::WrongCredentials),
        }
    }

    /// Reads a JSON-RPC `receive` notification or response, or an SSE stream body.
    fn normalize_inbound(&self, request: &WebhookRequest) -> Result<Vec<WebhookEvent>, ParseError> {
        let text =
            std::str::from_utf8(&request.body).map_err(|_| ParseError::new("body is not UTF-8"))?;
        let trimmed = text.trim_start();
        if trimmed.is_empty() {
            return Err(ParseError::new("empty body"));
        }
        let mut events = Vec::new();
        if trimmed.starts_with('{') || trimmed.starts_with('[') {
            let value: Value = serde_json::from_str(trimmed)
                .map_err(|e| ParseError::new(format!("invalid JSON: {e}")))?;
            let mut items = Vec::new();
            json_items(&value, &mut items)?;
            for item in items {
                events.extend(item_events(item, None));
            }
        } else {
            for payload in sse_payloads(text)? {
                let value: Value = serde_json::from_str(&payload)
                    .map_err(|e| ParseError::new(format!("invalid JSON in SSE data: {e}")))?;
                // The daemon sends bare `{envelope, account}` objects; json_items also takes
                // them wrapped, so a relay that forwards whole notifications still works.
                let mut items = Vec::new();
                json_items(&value, &mut items)?;
                for item in items {
                    events.extend(item_events(item, None));
                }
            }
        }
        Ok(events)
    }
}

/// Where a tenant's signal-cli daemon listens, and which account it sends as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignalConfig {
    /// The JSON-RPC endpoint, e.g. `http://127.0.0.1:8080/api/v1/rpc`.
    pub rpc_url: String,
    /// The account (E.164) when the daemon serves several.
    #[serde(default)]
    pub account: Option<String>,
}

impl CarrierConfig for SignalConfig {
    const SECRET_FIELDS: &'static [&'static str] = &[];

    fn validate(&self) -> Result<(), String> {
        let url =
            url::Url::parse(&self.rpc_url).map_err(|_| "rpc_url must be a URL".to_string())?;
        require(
            matches!(url.scheme(), "http" | "https"),
            "rpc_url (http or https)",
        )
    }

    fn secrets(&self) -> Vec<&str> {
        Vec::new()
    }

    fn example() -> Self {
        SignalConfig {
            rpc_url: "http://127.0.0.1:8080/api/v1/rpc".into(),
            account: Some("+15550001111".into()),
        }
    }
}

/// The Omni declaration of signal-cli: no webhooks (Omni polls the daemon) and no platform
/// URL (each tenant names its daemon).
pub const CARRIER: Carrier = Carrier {
    kind: ProviderKind::Signal,
    api_url: None,
    webhooks: &[],
    adapter: |http, _| Arc::new(SignalAdapter::new(http)),
    platform_config: None,
    test_webhook: TestWebhook::Unsupported(
        "signal-cli does not call Omni: the signal poller receives from the tenant's daemon",
    ),
    openapi: r#"{"paths": {}, "schemas": {}}"#,
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::TenantId;
    use crate::providers::{Secret, VoipmsCredentials};
    use proptest::prelude::*;
    use wiremock::matchers::{body_partial_json, header, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    macro_rules! fixture {
        ($name:literal) => {
            include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../tests/fixtures/",
                $name
            ))
        };
    }

    const TEXT: &str = fixture!("signalcli_receive_text.json");
    const GROUP: &str = fixture!("signalcli_receive_attachment_group.json");
    const MANUAL: &str = fixture!("signalcli_receive_manual_subscription.json");
    const RECEIPT: &str = fixture!("signalcli_receive_receipt.json");
    const TYPING: &str = fixture!("signalcli_receive_typing.json");
    const SSE: &str = fixture!("signalcli_events_sse.txt");
    const SEND_RESPONSE: &str = fixture!("signalcli_send_response.json");
    const RATE_LIMIT: &str = fixture!("signalcli_send_error_ratelimit.json");
    const SEND_REQUEST: &str = fixture!("signalcli_send_request.json");

    const JANE_UUID: &str = "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee";

    fn req(body: &str) -> WebhookRequest {
        WebhookRequest {
            method: "POST".into(),
            url: "internal://signal".into(),
            headers: vec![],
            body: body.as_bytes().to_vec(),
        }
    }

    fn normalize(body: &str) -> Vec<WebhookEvent> {
        SignalAdapter::new(reqwest::Client::new())
            .normalize_inbound(&req(body))
            .unwrap()
    }

    fn only_message(events: Vec<WebhookEvent>) -> InboundMessage {
        assert_eq!(events.len(), 1, "{events:?}");
        match events.into_iter().next().unwrap() {
            WebhookEvent::Message(m) => m,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    fn assert_jane_to_us(m: &InboundMessage) {
        assert_eq!(m.provider, ProviderKind::Signal);
        assert_eq!(m.channel, Channel::Signal);
        assert_eq!(m.provider_message_id, format!("{JANE_UUID}:1735689600123"));
        assert_eq!(m.from.as_str(), "+15555550123");
        assert_eq!(m.to.as_str(), "+15555550100");
        assert_eq!(m.profile_name.as_deref(), Some("Jane Example"));
    }

    fn config(uri: &str, account: Option<&str>) -> SignalConfig {
        SignalConfig {
            rpc_url: format!("{uri}/api/v1/rpc"),
            account: account.map(str::to_string),
        }
    }

    fn message(body: Option<&str>, media: &[&str]) -> OutboundMessage {
        OutboundMessage {
            id: Uuid::now_v7(),
            tenant_id: TenantId::parse("acme").unwrap(),
            channel: Channel::Signal,
            from: crate::domain::Address::from_stored("+15555550100").unwrap(),
            to: crate::domain::Address::from_stored("+15555550123").unwrap(),
            body: body.map(str::to_string),
            media: media
                .iter()
                .map(|u| Media {
                    url: u.to_string(),
                    content_type: None,
                })
                .collect(),
            template: None,
            subject: None,
            status_callback: None,
        }
    }

    #[test]
    fn text_notification_is_normalised() {
        let m = only_message(normalize(TEXT));
        assert_jane_to_us(&m);
        assert_eq!(m.body.as_deref(), Some("Hello over Signal"));
        assert!(m.media.is_empty());
    }

    #[test]
    fn group_attachment_is_normalised_with_the_sender_as_contact() {
        let m = only_message(normalize(GROUP));
        assert_jane_to_us(&m);
        assert_eq!(m.body.as_deref(), Some("photo attached"));
        assert_eq!(
            m.media,
            vec![Media {
                url: "signal-attachment:AbCdEf0123456789.jpg".into(),
                content_type: Some("image/jpeg".into())
            }]
        );
    }

    #[test]
    fn manual_subscription_wrapper_is_unwrapped() {
        let m = only_message(normalize(MANUAL));
        assert_jane_to_us(&m);
        assert_eq!(m.body.as_deref(), Some("hi"));
    }

    #[test]
    fn delivery_receipt_becomes_a_status_update() {
        let events = normalize(RECEIPT);
        assert_eq!(events.len(), 1);
        let WebhookEvent::Status(s) = &events[0] else {
            panic!("expected a status, got {events:?}")
        };
        assert_eq!(s.provider, ProviderKind::Signal);
        assert_eq!(s.provider_message_id, "1735689500000");
        assert_eq!(s.status, DeliveryStatus::Delivered);
        assert_eq!(s.raw_status, "delivered");
        assert_eq!(s.tenant_number.as_deref(), Some("+15555550100"));
        assert_eq!(s.at.timestamp_millis(), 1735689700000);
        assert_eq!(
            (s.error_code.as_deref(), s.error_message.as_deref()),
            (None, None)
        );
    }

    #[test]
    fn read_receipts_cover_every_timestamp() {
        let body = RECEIPT
            .replace(r#""isDelivery": true"#, r#""isDelivery": false"#)
            .replace(r#""isRead": false"#, r#""isRead": true"#)
            .replace("1735689500000", "1735689500000, 1735689500001");
        let ids: Vec<_> = normalize(&body)
            .into_iter()
            .map(|e| match e {
                WebhookEvent::Status(s) => (s.provider_message_id, s.status),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            ids,
            [
                ("1735689500000".to_string(), DeliveryStatus::Read),
                ("1735689500001".to_string(), DeliveryStatus::Read)
            ]
        );
    }

    #[test]
    fn typing_and_other_envelopes_are_ignored() {
        assert!(normalize(TYPING).is_empty());
        let sync = r#"{"jsonrpc":"2.0","method":"receive","params":{"account":"+15555550100","envelope":{"sourceNumber":"+15555550123","timestamp":1,"syncMessage":{}}}}"#;
        assert!(normalize(sync).is_empty());
        let exception = r#"{"jsonrpc":"2.0","method":"receive","params":{"account":"+15555550100","exception":{"message":"x","type":"y"},"envelope":{"sourceNumber":"+15555550123","timestamp":1}}}"#;
        assert!(normalize(exception).is_empty());
        let no_number = TEXT.replace(r#""sourceNumber": "+15555550123","#, "");
        assert!(normalize(&no_number).is_empty());
    }

    #[test]
    fn sse_stream_is_read() {
        let m = only_message(normalize(SSE));
        assert_jane_to_us(&m);
        assert_eq!(m.body.as_deref(), Some("Hello over Signal"));
        assert!(normalize(":\n\n:\n").is_empty(), "keep-alives only");
    }

    #[test]
    fn receive_responses_and_bad_bodies() {
        let params = serde_json::from_str::<Value>(TEXT).unwrap()["params"].clone();
        let response =
            json!({"jsonrpc":"2.0","id":"1","result":[params.clone(), params]}).to_string();
        assert_eq!(normalize(&response).len(), 2);
        let adapter = SignalAdapter::new(reqwest::Client::new());
        for bad in [
            "{not json",
            "",
            "hello world",
            r#"{"jsonrpc":"2.0","id":"1","error":{"code":-1,"message":"x"}}"#,
            "42",
        ] {
            assert!(adapter.normalize_inbound(&req(bad)).is_err(), "{bad}");
        }
        assert!(adapter
            .normalize_inbound(&req("event:receive\ndata:{oops\n\n"))
            .is_err());
    }

    #[test]
    fn verify_accepts_signal_config_only() {
        let adapter = SignalAdapter::new(reqwest::Client::new());
        assert_eq!(
            adapter.verify_inbound(
                &req(TEXT),
                &Credentials::Signal(config("http://127.0.0.1:1", None))
            ),
            Ok(())
        );
        let voipms = Credentials::Voipms(VoipmsCredentials {
            api_username: "u".into(),
            api_password: Secret::new("p"),
            webhook_secret: Secret::new("secret-12"),
        });
        assert_eq!(
            adapter.verify_inbound(&req(TEXT), &voipms),
            Err(VerifyError::WrongCredentials)
        );
    }

    #[tokio::test]
    async fn send_posts_json_rpc_and_maps_success() {
        let server = MockServer::start().await;
        let expected: Value = serde_json::from_str(SEND_REQUEST).unwrap();
        Mock::given(method("POST"))
            .and(path("/api/v1/rpc"))
            .and(header("content-type", "application/json"))
            .and(body_partial_json(
                json!({"jsonrpc": "2.0", "method": "send", "params": expected["params"]}),
            ))
            .respond_with(ResponseTemplate::new(200).set_body_string(SEND_RESPONSE))
            .expect(1)
            .mount(&server)
            .await;
        let adapter = SignalAdapter::new(reqwest::Client::new());
        let creds = Credentials::Signal(config(&server.uri(), Some("+15555550100")));
        let msg = message(
            Some("Your order is ready"),
            &["data:image/png;filename=dot.png;base64,iVBORw0KGgo="],
        );
        let result = adapter.send(&creds, &msg).await.unwrap();
        assert_eq!(
            result,
            SendResult {
                provider: ProviderKind::Signal,
                provider_message_id: "1735689800123".into(),
                status: DeliveryStatus::Sent,
                raw_status: "SUCCESS".into(),
            }
        );
        let requests = server.received_requests().await.unwrap();
        let sent: Value = serde_json::from_slice(&requests[0].body).unwrap();
        assert!(sent["id"].as_str().is_some_and(|id| !id.is_empty()));
        let keys: Vec<_> = sent["params"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert_eq!(keys.len(), 4, "{keys:?}");
    }

    #[tokio::test]
    async fn send_without_account_or_media_omits_them() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(200).set_body_string(SEND_RESPONSE))
            .mount(&server)
            .await;
        let adapter = SignalAdapter::new(reqwest::Client::new());
        adapter
            .send(
                &Credentials::Signal(config(&server.uri(), None)),
                &message(Some("hi"), &[]),
            )
            .await
            .unwrap();
        let requests = server.received_requests().await.unwrap();
        let sent: Value = serde_json::from_slice(&requests[0].body).unwrap();
        assert_eq!(
            sent["params"],
            json!({"recipient": ["+15555550123"], "message": "hi"})
        );
    }

    #[tokio::test]
    async fn send_errors_are_classified() {
        let server = MockServer::start().await;
        let adapter = SignalAdapter::new(reqwest::Client::new());
        let creds = Credentials::Signal(config(&server.uri(), None));
        let unregistered = SEND_RESPONSE.replace("SUCCESS", "UNREGISTERED_FAILURE");
        let network = SEND_RESPONSE.replace(
            r#""type": "SUCCESS""#,
            r#""type": "NETWORK_FAILURE", "retryAfterSeconds": 5"#,
        );
        let user_error =
            r#"{"jsonrpc":"2.0","id":"1","error":{"code":-1,"message":"Failed to send message"}}"#;
        // (HTTP status, body, transient?, code, retry-after seconds)
        let cases = [
            (200, RATE_LIMIT, true, Some("-5"), Some(60)),
            (200, user_error, false, Some("-1"), None),
            (
                200,
                unregistered.as_str(),
                false,
                Some("UNREGISTERED_FAILURE"),
                None,
            ),
            (
                200,
                network.as_str(),
                true,
                Some("NETWORK_FAILURE"),
                Some(5),
            ),
            (503, "", true, None, None),
        ];
        for (http, body, transient, code, wait) in cases {
            server.reset().await;
            Mock::given(method("POST"))
                .respond_with(ResponseTemplate::new(http).set_body_string(body))
                .mount(&server)
                .await;
            let err = adapter
                .send(&creds, &message(Some("hi"), &[]))
                .await
                .unwrap_err();
            assert_eq!(err.is_transient(), transient, "{err:?}");
            assert_eq!(err.code(), code, "{err:?}");
            if let SendError::Transient { retry_after, .. } = &err {
                assert_eq!(*retry_after, wait.map(Duration::from_secs), "{err:?}");
            }
        }
        let down = Credentials::Signal(config("http://127.0.0.1:9", None));
        assert!(adapter
            .send(&down, &message(Some("hi"), &[]))
            .await
            .unwrap_err()
            .is_transient());
    }

    #[tokio::test]
    async fn unsendable_messages_fail_permanently() {
        let adapter = SignalAdapter::new(reqwest::Client::new());
        let creds = Credentials::Signal(config("http://127.0.0.1:9", None));
        let mut sms = message(Some("hi"), &[]);
        sms.channel = Channel::Sms;
        for m in [sms, message(None, &[])] {
            assert!(!adapter.send(&creds, &m).await.unwrap_err().is_transient());
        }
        assert!(!adapter
            .send(&Credentials::Simulator, &message(Some("hi"), &[]))
            .await
            .unwrap_err()
            .is_transient());
    }

    #[tokio::test]
    async fn receive_polls_the_daemon() {
        let server = MockServer::start().await;
        let text = serde_json::from_str::<Value>(TEXT).unwrap()["params"].clone();
        let mut receipt = serde_json::from_str::<Value>(RECEIPT).unwrap()["params"].clone();
        // Single-account daemons may omit `account`: the configured one is used.
        receipt.as_object_mut().unwrap().remove("account");
        Mock::given(method("POST"))
            .and(path("/api/v1/rpc"))
            .and(body_partial_json(json!({"jsonrpc": "2.0", "method": "receive", "params": {"account": "+15555550100", "timeout": 1}})))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"jsonrpc": "2.0", "id": "x", "result": [text, receipt]})))
            .expect(1)
            .mount(&server)
            .await;
        let adapter = SignalAdapter::new(reqwest::Client::new());
        let events = adapter
            .receive(&config(&server.uri(), Some("+15555550100")))
            .await
            .unwrap();
        assert_eq!(events.len(), 2, "{events:?}");
        assert_jane_to_us(&only_message(events[..1].to_vec()));
        assert!(
            matches!(&events[1], WebhookEvent::Status(s) if s.tenant_number.as_deref() == Some("+15555550100"))
        );

        server.reset().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(200).set_body_string(
                r#"{"jsonrpc":"2.0","id":"x","error":{"code":-3,"message":"io"}}"#,
            ))
            .mount(&server)
            .await;
        let err = adapter
            .receive(&config(&server.uri(), None))
            .await
            .unwrap_err();
        assert!(err.is_transient());
        assert_eq!(err.code(), Some("-3"));
    }

    proptest! {
        #[test]
        fn arbitrary_bodies_never_panic(body in prop::collection::vec(any::<u8>(), 0..300)) {
            let adapter = SignalAdapter::new(reqwest::Client::new());
            let request = WebhookRequest { body, ..WebhookRequest::default() };
            let _ = adapter.normalize_inbound(&request);
            let _ = adapter.verify_inbound(&request, &Credentials::Simulator);
        }

        #[test]
        fn arbitrary_strings_never_panic(body in "(event:receive\ndata:)?[{}\\[\\]\":,a-z0-9 +\n-]{0,200}") {
            let _ = SignalAdapter::new(reqwest::Client::new()).normalize_inbound(&req(&body));
        }

        #[test]
        fn mutated_fixtures_never_panic(cut in 0usize..2000, insert in ".{0,5}") {
            for fixture in [TEXT, GROUP, MANUAL, RECEIPT, SSE] {
                let at = fixture.char_indices().map(|(i, _)| i).nth(cut % fixture.chars().count()).unwrap_or(0);
                let mut mutated = fixture.to_string();
                mutated.insert_str(at, &insert);
                let _ = SignalAdapter::new(reqwest::Client::new()).normalize_inbound(&req(&mutated));
            }
        }
    }
}
