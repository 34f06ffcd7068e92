//! The dispatchers' desk: assigning, resolving and reopening conversations, private notes,
//! and the audit log every action by a person or key is written to.

use chrono::Utc;
use serde_json::Value;
use tracing::error;
use uuid::Uuid;

use super::updater::conversation_event;
use super::{Caller, ServiceError, Services};
use crate::domain::TenantId;
use crate::model::{Assignee, AuditEntry, Conversation, ConversationStatus, Note};
use crate::ports::PushEvent;
use crate::team::{Actor, Permission};

/// Longest note, in characters.
pub const MAX_NOTE_CHARS: usize = 4000;

impl Services {
    /// Appends to the tenant's audit log, kept `settings.audit_retention`. The action has
    /// happened by now, so a failed write is logged loudly rather than undoing it.
    pub async fn audit(
        &self,
        tenant: &TenantId,
        actor: &Actor,
        action: &str,
        target: Option<String>,
        details: Value,
    ) {
        let at = Utc::now();
        let entry = AuditEntry {
            id: Uuid::now_v7(),
            at,
            actor: actor.clone(),
            action: action.to_owned(),
            target,
            details,
        };
        let expires_at = at + self.settings.audit_retention;
        if let Err(e) = self.messages.append_audit(tenant, &entry, expires_at).await {
            error!(error = %e, tenant_id = %tenant, action, "audit entry not written");
        }
    }

    /// Assigns a conversation to `user` (none: unassigns). Anyone may take an unassigned
    /// conversation or let go of their own; giving it to, or taking it from, someone else needs
    /// [`Permission::ConversationsAssignOthers`].
    pub async fn assign(
        &self,
        caller: &Caller,
        id: Uuid,
        user: Option<Uuid>,
    ) -> Result<Conversation, ServiceError> {
        let tenant = &caller.tenant;
        let current = self
            .messages
            .get_conversation(tenant, id)
            .await?
            .ok_or(ServiceError::NotFound("conversation"))?;
        let me = caller.user_id();
        // Nobody else's: unassigned, or the caller's own.
        let free = current.assignee.as_ref().is_none_or(|a| Some(a.id) == me);
        let own_move = free && (user.is_none() || user == me);
        if !own_move {
            caller.require(Permission::ConversationsAssignOthers)?;
        }
        let assignee = match user {
            Some(user) => {
                let record = self
                    .team
                    .get_user(tenant, user)
                    .await?
                    .filter(|r| !r.user.disabled)
                    .ok_or_else(|| {
                        ServiceError::InvalidRequest("user_id names no active user".into())
                    })?;
                Some(Assignee {
                    id: user,
                    name: record.user.name,
                })
            }
            None => None,
        };
        let conversation = self
            .messages
            .update_conversation(tenant, id, None, Some(assignee))
            .await?
            .ok_or(ServiceError::NotFound("conversation"))?;
        self.push_events(&[conversation_event(
            tenant,
            "conversation.assigned",
            &conversation,
        )])
        .await;
        self.audit(
            tenant,
            &caller.actor,
            "conversation.assign",
            Some(format!("conversation:{id}")),
            serde_json::json!({"user_id": user}),
        )
        .await;
        Ok(conversation)
    }

    /// Resolves or reopens a conversation.
    pub async fn set_status(
        &self,
        caller: &Caller,
        id: Uuid,
        status: ConversationStatus,
    ) -> Result<Conversation, ServiceError> {
        let tenant = &caller.tenant;
        let conversation = self
            .messages
            .update_conversation(tenant, id, Some(status), None)
            .await?
            .ok_or(ServiceError::NotFound("conversation"))?;
        self.push_events(&[conversation_event(
            tenant,
            "conversation.status",
            &conversation,
        )])
        .await;
        let action = match status {
            ConversationStatus::Open => "conversation.reopen",
            ConversationStatus::Resolved => "conversation.resolve",
        };
        self.audit(
            tenant,
            &caller.actor,
            action,
            Some(format!("conversation:{id}")),
            Value::Null,
        )
        .await;
        Ok(conversation)
    }

    /// Adds a private note to a conversation: kept in its timeline, never sent.
    pub async fn add_note(
        &self,
        caller: &Caller,
        conversation: Uuid,
        body: &str,
    ) -> Result<Note, ServiceError> {
        let tenant = &caller.tenant;
        let body = body.trim();
        if body.is_empty() || body.chars().count() > MAX_NOTE_CHARS {
            return Err(ServiceError::InvalidRequest(format!(
                "body must be 1 to {MAX_NOTE_CHARS} characters"
            )));
        }
        if self
            .messages
            .get_conversation(tenant, conversation)
            .await?
            .is_none()
        {
            return Err(ServiceError::NotFound("conversation"));
        }
        let note = Note {
            id: Uuid::now_v7(),
            conversation_id: conversation,
            body: body.to_owned(),
            author: caller.actor.clone(),
            created_at: Utc::now(),
        };
        self.messages.add_note(tenant, &note).await?;
        self.push_events(&[PushEvent {
            note: Some(note.clone()),
            ..PushEvent::about("note.created", tenant, conversation)
        }])
        .await;
        // The note's text stays out of the log, as message text does.
        self.audit(
            tenant,
            &caller.actor,
            "note.create",
            Some(format!("conversation:{conversation}")),
            serde_json::json!({"note_id": note.id}),
        )
        .await;
        Ok(note)
    }
}
