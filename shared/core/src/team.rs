//! A tenant's team: users and their roles, the permissions each role holds, sign-in records
//! (invites and sessions), and who did something ([`Actor`]).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::TenantId;

/// What a user or an API key may do in its tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything in the tenant: carriers, numbers, routing, users, API keys, settings.
    Admin,
    /// A dispatcher's rights, assigning anyone, and the audit log.
    Supervisor,
    /// Conversations and messages, notes, assigning to self, resolving and reopening.
    Dispatcher,
    /// A dispatch system's API key: sends messages and reads the ones it sent.
    Sender,
}

/// Every role, strongest first.
pub const ROLES: [Role; 4] = [
    Role::Admin,
    Role::Supervisor,
    Role::Dispatcher,
    Role::Sender,
];

impl Role {
    /// The role's name in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Supervisor => "supervisor",
            Role::Dispatcher => "dispatcher",
            Role::Sender => "sender",
        }
    }

    /// Whether a person may hold the role (`sender` is for API keys only).
    pub fn is_for_users(self) -> bool {
        self != Role::Sender
    }

    /// Whether the role holds `permission`: the one table the server enforces.
    pub fn allows(self, permission: Permission) -> bool {
        use Permission::*;
        match self {
            Role::Admin => true,
            Role::Supervisor => !matches!(permission, TenantManage | UsersManage | ApiKeysManage),
            Role::Dispatcher => !matches!(
                permission,
                TenantManage
                    | UsersManage
                    | ApiKeysManage
                    | AuditRead
                    | ConversationsAssignOthers
                    | DeliveryLogRead
                    | MessagesRetry
                    | TemplatesManage
            ),
            Role::Sender => matches!(permission, MessagesSend | MessagesRead),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name that is not one of [`ROLES`].
#[derive(Debug, thiserror::Error)]
#[error("unknown role {0:?} (admin, supervisor, dispatcher or sender)")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ROLES
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownRole(s.to_owned()))
    }
}

/// A right a route needs; a refusal names it (`403 forbidden`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// Send messages.
    MessagesSend,
    /// Read a message by id (a sender: only the ones it sent).
    MessagesRead,
    /// List conversations and their timelines; the live feed.
    ConversationsRead,
    /// Mark read, star, resolve, reopen, assign to oneself.
    ConversationsWrite,
    /// Assign a conversation to someone else.
    ConversationsAssignOthers,
    /// Write private notes.
    NotesWrite,
    /// Read the audit log.
    AuditRead,
    /// Search and export every message; read the inbound webhook log.
    DeliveryLogRead,
    /// Send a failed message again.
    MessagesRetry,
    /// List and read the tenant's message templates (canned replies).
    TemplatesRead,
    /// Write, submit, approve and reject templates; sync Meta's statuses.
    TemplatesManage,
    /// Invite users, change their role, disable them.
    UsersManage,
    /// Issue, list and revoke API keys.
    ApiKeysManage,
    /// Carriers, numbers, routing and the tenant's other settings.
    TenantManage,
}

/// Every permission.
pub const PERMISSIONS: [Permission; 14] = [
    Permission::MessagesSend,
    Permission::MessagesRead,
    Permission::ConversationsRead,
    Permission::ConversationsWrite,
    Permission::ConversationsAssignOthers,
    Permission::NotesWrite,
    Permission::AuditRead,
    Permission::DeliveryLogRead,
    Permission::MessagesRetry,
    Permission::TemplatesRead,
    Permission::TemplatesManage,
    Permission::UsersManage,
    Permission::ApiKeysManage,
    Permission::TenantManage,
];

impl Permission {
    /// The permission's name, as a refusal and the README name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::MessagesSend => "messages.send",
            Permission::MessagesRead => "messages.read",
            Permission::ConversationsRead => "conversations.read",
            Permission::ConversationsWrite => "conversations.write",
            Permission::ConversationsAssignOthers => "conversations.assign_others",
            Permission::NotesWrite => "notes.write",
            Permission::AuditRead => "audit.read",
            Permission::DeliveryLogRead => "delivery_log.read",
            Permission::MessagesRetry => "messages.retry",
            Permission::TemplatesRead => "templates.read",
            Permission::TemplatesManage => "templates.manage",
            Permission::UsersManage => "users.manage",
            Permission::ApiKeysManage => "api_keys.manage",
            Permission::TenantManage => "tenant.manage",
        }
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What kind of principal did something.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorType {
    /// A person signed in.
    User,
    /// An API key.
    ApiKey,
    /// An automatic reply.
    AutoReply,
    /// Omni itself, or the platform operator.
    System,
}

/// Who did something: `sent_by` on messages, `actor` in the audit log, a note's author.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// User, API key, automatic reply or system.
    #[serde(rename = "type")]
    pub kind: ActorType,
    /// The user's or key's id.
    pub id: String,
    /// Its name when it acted (a key without a name: its id).
    pub name: String,
}

impl Actor {
    /// The platform operator (the admin token).
    pub fn platform() -> Actor {
        Actor {
            kind: ActorType::System,
            id: "platform".into(),
            name: "platform admin".into(),
        }
    }
}

/// A person of a tenant, as the API shows them (never a password hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// UUID v7.
    pub id: Uuid,
    /// The tenant; never serialised.
    #[serde(skip)]
    pub tenant_id: Option<TenantId>,
    /// Lower-case e-mail address, unique in the tenant.
    pub email: String,
    /// Display name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// A disabled user cannot sign in; their name stays in history.
    pub disabled: bool,
    /// Whether the invite was accepted (a password is set).
    pub active: bool,
    /// When invited.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

impl User {
    /// The user as an actor.
    pub fn actor(&self) -> Actor {
        Actor {
            kind: ActorType::User,
            id: self.id.to_string(),
            name: self.name.clone(),
        }
    }
}

/// A user as stored: with the password hash and the session generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// The user.
    pub user: User,
    /// The Argon2id PHC string; none until the invite is accepted.
    pub password_hash: Option<String>,
    /// Bumped when every session of the user must end (password change, disabling); a
    /// session made under another generation is refused.
    pub generation: i64,
}

/// A one-time invite (its token stored hashed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invite {
    /// SHA-256 of the token, hex.
    pub token_hash: String,
    /// Whose.
    pub tenant_id: TenantId,
    /// For which user.
    pub user_id: Uuid,
    /// Unusable after.
    pub expires_at: DateTime<Utc>,
}

/// A signed-in user's session (its token stored hashed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// SHA-256 of the token, hex.
    pub token_hash: String,
    /// Whose.
    pub tenant_id: TenantId,
    /// Which user.
    pub user_id: Uuid,
    /// The user's [`UserRecord::generation`] at sign-in.
    pub generation: i64,
    /// Expires unless used before (inactivity).
    pub expires_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse_and_nest() {
        for role in ROLES {
            assert_eq!(role.as_str().parse::<Role>().unwrap(), role);
        }
        assert!("root".parse::<Role>().is_err());
        use Permission::*;
        for p in PERMISSIONS {
            // Each role holds what the one below it holds.
            assert!(!Role::Sender.allows(p) || Role::Dispatcher.allows(p), "{p}");
            assert!(
                !Role::Dispatcher.allows(p) || Role::Supervisor.allows(p),
                "{p}"
            );
            assert!(!Role::Supervisor.allows(p) || Role::Admin.allows(p), "{p}");
        }
        assert!(!Role::Sender.allows(ConversationsRead));
        assert!(Role::Supervisor.allows(AuditRead) && !Role::Dispatcher.allows(AuditRead));
        assert!(
            Role::Supervisor.allows(TemplatesManage) && !Role::Dispatcher.allows(TemplatesManage)
        );
        assert!(Role::Dispatcher.allows(TemplatesRead) && !Role::Sender.allows(TemplatesRead));
    }
}
