//! Amazon SES over Amazon SNS (`POST /webhooks/ses`): subscription handshakes, received email
//! and SES event records, each checked against AWS's signature and the tenant owning its topic.
//! Nothing is fetched for a topic no tenant lists, and nothing stored before the signature
//! checks out.

use chrono::Utc;
use tracing::{info, instrument, warn};

use super::{ServiceError, Services};
use crate::domain::{Address, ProviderKind, TenantId, WebhookEvent};
use crate::providers::ses::sns::{SnsError, SnsMessage, SnsType};
use crate::providers::ses::{self, SesNotification};
use crate::providers::Credentials;

impl From<SnsError> for ServiceError {
    fn from(e: SnsError) -> Self {
        match e {
            SnsError::Malformed(_) => ServiceError::InvalidRequest(e.to_string()),
            SnsError::UntrustedUrl(_)
            | SnsError::BadSignature
            | SnsError::UnusableCertificate(_) => ServiceError::InvalidSignature,
            SnsError::ConfirmationRefused(_) => ServiceError::InvalidRequest(e.to_string()),
            SnsError::Certificate(_) | SnsError::Confirmation(_) => {
                ServiceError::Upstream(e.to_string())
            }
        }
    }
}

impl Services {
    /// Handles one SNS message posted to `/webhooks/ses` end to end. A successful return
    /// means everything it carried is committed: the caller may answer SNS 2xx.
    #[instrument(skip_all, fields(tenant_id))]
    pub async fn handle_ses_sns(&self, body: &[u8]) -> Result<(), ServiceError> {
        let message = SnsMessage::parse(body)?;
        match message.kind {
            SnsType::SubscriptionConfirmation | SnsType::UnsubscribeConfirmation => {
                let tenant = self
                    .sns_topic_owner(&message.topic_arn)
                    .await?
                    .ok_or(ServiceError::NotFound("SNS topic"))?;
                tracing::Span::current().record("tenant_id", tenant.as_str());
                self.verify_sns(&message).await?;
                if message.kind == SnsType::UnsubscribeConfirmation {
                    info!(topic = %message.topic_arn, "SNS subscription removed");
                    return Ok(());
                }
                self.providers.sns().confirm(&message).await?;
                info!(topic = %message.topic_arn, "SNS subscription confirmed");
                Ok(())
            }
            SnsType::Notification => self.ses_notification(&message, body).await,
        }
    }

    async fn ses_notification(
        &self,
        message: &SnsMessage,
        body: &[u8],
    ) -> Result<(), ServiceError> {
        let event = match ses::parse_notification(&message.message)
            .map_err(|e| ServiceError::InvalidRequest(e.to_string()))?
        {
            SesNotification::Received(email) => {
                let mut inbound = email.message;
                let mut routed = None;
                for recipient in email.recipients {
                    let address = Address::Email(recipient);
                    if let Some(route) = self.tenants.number_route(&address).await? {
                        routed = Some((route.tenant_id, address));
                        break;
                    }
                }
                let (tenant, address) = routed.ok_or(ServiceError::NotFound("address"))?;
                inbound.to = address;
                Some((tenant, WebhookEvent::Message(inbound)))
            }
            SesNotification::Status(Some(update)) => {
                let event = WebhookEvent::Status(update);
                Some((self.status_tenant(&event).await?, event))
            }
            SesNotification::Status(None) => None,
            SesNotification::Ignored(why) => {
                self.verify_sns(message).await?;
                info!(reason = why, "SES notification acknowledged and dropped");
                return Ok(());
            }
        };
        let Some((tenant, event)) = event else {
            // Not Omni's mail, or an event that moves nothing: acknowledged once authentic.
            self.verify_sns(message).await?;
            return Ok(());
        };
        tracing::Span::current().record("tenant_id", tenant.as_str());
        // The topic must be this tenant's: another tenant's topic never lands here.
        if !self.owns_sns_topic(&tenant, &message.topic_arn).await? {
            warn!("SNS message on a topic the routed tenant does not own");
            return Err(ServiceError::NotFound("SNS topic"));
        }
        self.verify_sns(message).await?;
        let expires = Utc::now() + self.settings.raw_retention;
        let fresh = self
            .messages
            .save_raw_webhook(
                &tenant,
                ProviderKind::Ses,
                &event.dedupe_key(),
                body,
                expires,
            )
            .await?;
        // Queued even for a redelivery (the updater drops duplicates by SES's message id): an
        // earlier attempt may have kept the raw payload and lost the event.
        self.enqueue_events(&tenant, std::iter::once(event)).await?;
        info!(duplicate = !fresh, "SES notification accepted");
        Ok(())
    }

    /// The tenant holding the address an SES status names (the sender of the email).
    pub(super) async fn status_tenant(
        &self,
        event: &WebhookEvent,
    ) -> Result<TenantId, ServiceError> {
        let address = event
            .tenant_number()
            .ok_or(ServiceError::NotFound("number"))?;
        Ok(self
            .tenants
            .number_route(address)
            .await?
            .ok_or(ServiceError::NotFound("number"))?
            .tenant_id)
    }

    async fn verify_sns(&self, message: &SnsMessage) -> Result<(), ServiceError> {
        self.providers.sns().verify(message).await.map_err(|e| {
            warn!(error = %e, "SNS message rejected");
            ServiceError::from(e)
        })
    }

    /// Whether `tenant`'s SES configuration lists `topic`.
    async fn owns_sns_topic(&self, tenant: &TenantId, topic: &str) -> Result<bool, ServiceError> {
        Ok(matches!(
            self.credentials_for(tenant, ProviderKind::Ses).await?,
            Some(Credentials::Ses(c)) if c.sns_topic_arns.iter().any(|t| t == topic)
        ))
    }

    /// The tenant whose SES configuration lists `topic`. A handshake names no address, so
    /// every SES tenant is looked at; it happens once per subscription.
    async fn sns_topic_owner(&self, topic: &str) -> Result<Option<TenantId>, ServiceError> {
        for tenant in self
            .secrets
            .tenants_with_provider(ProviderKind::Ses)
            .await?
        {
            if self.owns_sns_topic(&tenant, topic).await? {
                return Ok(Some(tenant));
            }
        }
        warn!(topic, "SNS handshake for a topic no tenant lists");
        Ok(None)
    }
}
