//! Signal adapter (placeholder, being written).

use async_trait::async_trait;

use super::{Credentials, MessagingProviderAdapter, ParseError, VerifyError, WebhookRequest};
use crate::domain::{Channel, OutboundMessage, ProviderKind, SendError, SendResult, WebhookEvent};

/// Signal.
#[derive(Clone)]
pub struct SignalAdapter {
    #[allow(dead_code)]
    http: reqwest::Client,
}

impl SignalAdapter {
    /// Builds the adapter.
    pub fn new(http: reqwest::Client) -> Self {
        SignalAdapter { http }
    }
}

impl SignalAdapter {
    /// Polls the daemon (placeholder).
    pub async fn receive(
        &self,
        _config: &super::SignalConfig,
    ) -> Result<Vec<WebhookEvent>, SendError> {
        Ok(vec![])
    }
}

#[async_trait]
impl MessagingProviderAdapter for SignalAdapter {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Signal
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
