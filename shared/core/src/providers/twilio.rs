//! Twilio adapter (placeholder, being written).

use async_trait::async_trait;

use super::{Credentials, MessagingProviderAdapter, ParseError, VerifyError, WebhookRequest};
use crate::domain::{Channel, OutboundMessage, ProviderKind, SendError, SendResult, WebhookEvent};

/// Twilio.
#[derive(Clone)]
pub struct TwilioAdapter {
    #[allow(dead_code)]
    http: reqwest::Client,
}

impl TwilioAdapter {
    /// Builds the adapter.
    pub fn new(http: reqwest::Client, _base_url: &str) -> Self {
        TwilioAdapter { http }
    }
}

#[async_trait]
impl MessagingProviderAdapter for TwilioAdapter {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Twilio
    }
    fn channels(&self) -> &'static [Channel] {
        &[]
    }
    async fn send(&self, _c: &Credentials, _m: &OutboundMessage) -> Result<SendResult, SendError> {
        Err(SendError::permanent(None, "not implemented"))
    }
    fn verify_inbound(&self, _r: &WebhookRequest, _c: &Credentials) -> Result<(), VerifyError> {
        Err(VerifyError::Mismatch)
    }
    fn normalize_inbound(&self, _r: &WebhookRequest) -> Result<Vec<WebhookEvent>, ParseError> {
        Err(ParseError::new("not implemented"))
    }
}

/// Placeholder.
pub fn signature(_url: &str, _params: &[(String, String)], _token: &str) -> String {
    String::new()
}
