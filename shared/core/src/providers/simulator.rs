//! The demo carrier: accepts every message and reports it delivered at once.
//!
//! Registered only by `omni serve --demo`, so a newcomer can see the whole loop with no
//! carrier account. It has no webhooks: demo inbound traffic is signed as a real carrier
//! would sign it (`omni webhook send`).

use async_trait::async_trait;
use uuid::Uuid;

use super::{Credentials, MessagingProviderAdapter, ParseError, VerifyError, WebhookRequest};
use crate::domain::{
    Channel, DeliveryStatus, OutboundMessage, ProviderKind, SendError, SendResult, WebhookEvent,
};

/// The built-in demo carrier.
#[derive(Debug, Clone, Copy, Default)]
pub struct SimulatorAdapter;

#[async_trait]
impl MessagingProviderAdapter for SimulatorAdapter {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Simulator
    }

    fn channels(&self) -> &'static [Channel] {
        Channel::ALL
    }

    async fn send(
        &self,
        _credentials: &Credentials,
        _message: &OutboundMessage,
    ) -> Result<SendResult, SendError> {
        Ok(SendResult {
            provider: ProviderKind::Simulator,
            provider_message_id: format!("SIM{}", Uuid::now_v7().simple()),
            status: DeliveryStatus::Delivered,
            raw_status: "simulated".into(),
        })
    }

    fn verify_inbound(
        &self,
        _request: &WebhookRequest,
        _credentials: &Credentials,
    ) -> Result<(), VerifyError> {
        Err(VerifyError::Unsupported(
            "the simulator has no webhooks".into(),
        ))
    }

    fn normalize_inbound(
        &self,
        _request: &WebhookRequest,
    ) -> Result<Vec<WebhookEvent>, ParseError> {
        Err(ParseError::new("the simulator has no webhooks"))
    }
}
