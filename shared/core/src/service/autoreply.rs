//! Automatic replies after an inbound message: the tenant's rules ([`crate::autoreply`]),
//! one reply per conversation per cooldown, never to an opted-out contact or a machine.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::json;
use tracing::{info, warn};

use super::{SendRequest, ServiceError, Services};
use crate::autoreply::{AutoReplies, Reply};
use crate::domain::{Direction, TenantId};
use crate::model::{Conversation, Message};
use crate::team::{Actor, ActorType};

/// How long a process trusts the auto-replies it read: a change made through another
/// process (another Lambda function) applies within this.
const CACHE_TTL: Duration = Duration::from_secs(30);

/// Each tenant's auto-replies as recently read, shared by every clone of the services: the
/// updater consults them on every inbound message.
#[derive(Debug, Default)]
pub struct AutoReplyCache {
    entries: Mutex<HashMap<TenantId, (Instant, Arc<AutoReplies>)>>,
}

impl AutoReplyCache {
    fn get(&self, tenant: &TenantId) -> Option<Arc<AutoReplies>> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(tenant)
            .filter(|(at, _)| at.elapsed() < CACHE_TTL)
            .map(|(_, settings)| settings.clone())
    }

    fn put(&self, tenant: &TenantId, settings: Arc<AutoReplies>) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.insert(tenant.clone(), (Instant::now(), settings));
    }
}

impl Services {
    /// Replaces an existing tenant's auto-replies after checking them; this process uses them
    /// at once.
    pub async fn put_auto_replies(
        &self,
        tenant: &TenantId,
        settings: AutoReplies,
        by: &Actor,
    ) -> Result<AutoReplies, ServiceError> {
        settings.validate().map_err(ServiceError::InvalidRequest)?;
        // A template reply must name one of the tenant's templates (its approval, variables
        // and language are checked when it is sent, as for any send).
        for reply in settings.replies() {
            if let Reply::Template { template } = reply {
                if self
                    .templates
                    .get_template(tenant, &template.name)
                    .await?
                    .is_none()
                {
                    return Err(ServiceError::InvalidRequest(format!(
                        "the auto-reply's template {:?} does not exist",
                        template.name
                    )));
                }
            }
        }
        self.tenants.put_auto_replies(tenant, &settings).await?;
        self.auto_reply_cache
            .put(tenant, Arc::new(settings.clone()));
        self.audit(tenant, by, "auto_replies.update", None, json!({}))
            .await;
        Ok(settings)
    }

    /// A tenant's auto-replies, read from the store at most every 30 s by this process.
    pub async fn auto_replies(&self, tenant: &TenantId) -> Result<Arc<AutoReplies>, ServiceError> {
        if let Some(settings) = self.auto_reply_cache.get(tenant) {
            return Ok(settings);
        }
        let settings = Arc::new(self.tenants.get_auto_replies(tenant).await?);
        self.auto_reply_cache.put(tenant, settings.clone());
        Ok(settings)
    }

    /// Answers an inbound message as the tenant's auto-replies say, if they say to. The
    /// caller has ruled out keywords (STOP, START, HELP) and machine-sent email. Failures are
    /// logged: an auto-reply never fails the message's apply.
    pub(super) async fn auto_reply(
        &self,
        tenant: &TenantId,
        message: &Message,
        conversation: &Conversation,
    ) {
        if message.direction != Direction::Inbound || conversation.opted_out {
            return;
        }
        if let Err(e) = self.try_auto_reply(tenant, message, conversation).await {
            warn!(error = %e, "auto-reply not sent");
        }
    }

    async fn try_auto_reply(
        &self,
        tenant: &TenantId,
        message: &Message,
        conversation: &Conversation,
    ) -> Result<(), ServiceError> {
        let settings = self.auto_replies(tenant).await?;
        if settings.is_empty() {
            return Ok(());
        }
        // A greeting needs to know whether anything came before: one read, only then.
        let first = settings.greeting.is_some()
            && self
                .messages
                .list_messages(tenant, conversation.id, 2, None)
                .await?
                .items
                .len()
                == 1;
        let Some((trigger, reply)) =
            settings.decide(message.body.as_deref(), message.created_at, first)
        else {
            return Ok(());
        };
        let cooldown = Duration::from_secs(u64::from(settings.cooldown_minutes) * 60);
        if !self
            .messages
            .claim_auto_reply(tenant, conversation.id, Utc::now(), cooldown)
            .await?
        {
            return Ok(()); // answered automatically within the cooldown already
        }
        let (body, template) = match reply {
            Reply::Body(body) => (Some(body.clone()), None),
            // The stored-template form of a send (it has `variables`), rendered for the channel.
            Reply::Template { template } => (
                None,
                Some(json!({
                    "name": template.name,
                    "language": template.language,
                    "variables": template.variables,
                })),
            ),
        };
        let by = Actor {
            kind: ActorType::AutoReply,
            id: trigger.as_str().into(),
            name: format!("Auto-reply ({})", trigger.as_str().replace('_', " ")),
        };
        let request = SendRequest {
            channel: message.channel.thread(),
            to: message.from.to_string(),
            from: Some(message.to.to_string()),
            body,
            media_urls: vec![],
            template,
            subject: None,
            // One auto-reply per inbound message, however often its job runs.
            idempotency_key: Some(format!("auto-reply:{}", message.id)),
            // Someone who just wrote is waiting: never behind a campaign.
            priority: crate::domain::Priority::High,
            send_at: None,
            fallback: Some(Vec::new()),
        };
        let (sent, created) = self.send_message(tenant, request, by.clone()).await?;
        if created {
            info!(trigger = trigger.as_str(), "auto-reply sent");
            self.audit(
                tenant,
                &by,
                "message.auto_reply",
                Some(format!("message:{}", sent.id)),
                json!({"trigger": trigger.as_str(), "in_reply_to": message.id}),
            )
            .await;
        }
        Ok(())
    }
}
