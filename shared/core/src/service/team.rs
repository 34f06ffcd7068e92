//! Who is calling: API keys and signed-in users, their roles, and the sign-in flows (invites,
//! passwords, sessions, lockout).

use std::net::IpAddr;
use std::sync::OnceLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use chrono::{DateTime, TimeDelta, Utc};
use rand::Rng;
use tracing::{info, warn};
use uuid::Uuid;

use super::{hash_api_key, AuthScope, ServiceError, Services};
use crate::domain::TenantId;
use crate::ports::StoreError;
use crate::team::{Actor, ActorType, Invite, Permission, Role, Session, User, UserRecord};

/// Every session token starts with this.
pub const SESSION_PREFIX: &str = "oms_";

/// Every invite token starts with this.
pub const INVITE_PREFIX: &str = "omi_";

/// How long an invite may be accepted.
pub const INVITE_TTL: TimeDelta = TimeDelta::hours(72);

/// A session unused this long is over.
pub const SESSION_IDLE: TimeDelta = TimeDelta::hours(12);

/// How stale a session's stored expiry may get before a request moves it: to the minute is
/// enough, and a write per request would double the store's traffic.
const SESSION_TOUCH_EVERY: TimeDelta = TimeDelta::minutes(1);

/// Fewest characters of a password.
pub const MIN_PASSWORD_CHARS: usize = 12;

/// Most characters of a password (Argon2 hashes anything, but a megabyte would be a
/// denial of service).
const MAX_PASSWORD_CHARS: usize = 256;

/// Passwords refused however long they are: the common ones of 12 characters or more.
const COMMON_PASSWORDS: &str = include_str!("common_passwords.txt");

/// How a caller proved who they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// A tenant API key, by id.
    ApiKey(String),
    /// A signed-in user's session.
    Session {
        /// The session's token hash (logout ends it).
        token_hash: String,
        /// The user.
        user_id: Uuid,
    },
}

/// An authenticated caller of the tenant API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The tenant every read and write is keyed by.
    pub tenant: TenantId,
    /// What the caller may do.
    pub role: Role,
    /// Who it is, as history records it.
    pub actor: Actor,
    /// How it signed in.
    pub credential: Credential,
}

impl Caller {
    /// [`ServiceError::Forbidden`] unless the caller's role holds `permission`.
    pub fn require(&self, permission: Permission) -> Result<(), ServiceError> {
        if self.role.allows(permission) {
            Ok(())
        } else {
            Err(ServiceError::Forbidden(permission))
        }
    }

    /// The signed-in user's id; none for an API key.
    pub fn user_id(&self) -> Option<Uuid> {
        match &self.credential {
            Credential::Session { user_id, .. } => Some(*user_id),
            Credential::ApiKey(_) => None,
        }
    }

    /// What the caller's dashboards are registered under: the key's id, or `user:<id>`.
    pub fn connection_owner(&self) -> String {
        match &self.credential {
            Credential::ApiKey(id) => id.clone(),
            Credential::Session { user_id, .. } => format!("user:{user_id}"),
        }
    }
}

/// A session just opened: the only time its token is seen.
#[derive(Debug, Clone)]
pub struct SignedIn {
    /// The session token (`oms_…`).
    pub token: String,
    /// When it expires unless used.
    pub expires_at: DateTime<Utc>,
    /// Who signed in.
    pub user: User,
}

/// What `PATCH /v1/users/{id}` may change.
#[derive(Debug, Clone, Default)]
pub struct UserChange {
    /// A new display name.
    pub name: Option<String>,
    /// A new role.
    pub role: Option<Role>,
    /// Disable (true) or enable again (false).
    pub disabled: Option<bool>,
}

/// A random token with `prefix`: 256 bits, hex.
fn new_token(prefix: &str) -> String {
    let bytes: [u8; 32] = rand::thread_rng().gen();
    format!("{prefix}{}", hex::encode(bytes))
}

/// The e-mail as stored: trimmed, lower case; refused unless it looks like an address.
pub fn normalize_email(raw: &str) -> Result<String, ServiceError> {
    let email = raw.trim().to_lowercase();
    let valid = email.len() <= 254
        && email
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'))
        && !email.chars().any(char::is_whitespace);
    if valid {
        Ok(email)
    } else {
        Err(ServiceError::InvalidRequest(
            "email must be an e-mail address".into(),
        ))
    }
}

/// A display name: 1 to 100 characters once trimmed.
fn display_name(raw: &str) -> Result<String, ServiceError> {
    let name = raw.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(ServiceError::InvalidRequest(
            "name must be 1 to 100 characters".into(),
        ));
    }
    Ok(name.to_owned())
}

/// Refuses a password that is too short, too long or common.
fn check_password(password: &str) -> Result<(), ServiceError> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Err(ServiceError::InvalidRequest(format!(
            "password must be at least {MIN_PASSWORD_CHARS} characters"
        )));
    }
    if chars > MAX_PASSWORD_CHARS {
        return Err(ServiceError::InvalidRequest(format!(
            "password must be at most {MAX_PASSWORD_CHARS} characters"
        )));
    }
    let lower = password.to_lowercase();
    let first = lower.chars().next();
    let one_character = lower.chars().all(|c| Some(c) == first);
    if one_character || COMMON_PASSWORDS.lines().any(|common| common == lower) {
        return Err(ServiceError::InvalidRequest(
            "password is too common; choose another".into(),
        ));
    }
    Ok(())
}

/// Argon2id with the crate's defaults (19 MiB, two passes: OWASP's recommendation), off the
/// async threads.
async fn hash_password(password: String) -> Result<String, ServiceError> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
    })
    .await
    .map_err(|e| ServiceError::Upstream(format!("password hashing: {e}")))?
    .map_err(|e| ServiceError::Upstream(format!("password hashing: {e}")))
}

/// Whether `password` matches the PHC string `hash` (constant time inside argon2).
async fn verify_password(password: String, hash: String) -> bool {
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash).is_ok_and(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
    })
    .await
    .unwrap_or(false)
}

/// A hash nobody's password matches, verified against for an unknown e-mail so that it
/// takes as long as a wrong password.
async fn decoy_hash() -> String {
    static DECOY: OnceLock<String> = OnceLock::new();
    if let Some(hash) = DECOY.get() {
        return hash.clone();
    }
    let hash = hash_password(new_token("")).await.unwrap_or_default();
    DECOY.get_or_init(|| hash).clone()
}

impl Services {
    /// The caller behind a bearer token: a tenant API key (`omk_…`) or a session
    /// (`oms_…`). Failures count against the address, as for API keys.
    pub async fn authenticate_caller(
        &self,
        token: &str,
        client: Option<IpAddr>,
    ) -> Result<Caller, ServiceError> {
        if !token.starts_with(SESSION_PREFIX) {
            let owner = self.authenticate_key(token, client).await?;
            return Ok(Caller {
                tenant: owner.tenant.clone(),
                role: owner.role,
                actor: owner.actor(),
                credential: Credential::ApiKey(owner.key_id),
            });
        }
        self.auth_allowed(client, &AuthScope::ApiKey)?;
        match self.session_caller(token).await? {
            Some(caller) => Ok(caller),
            None => {
                self.auth_failed(client, &AuthScope::ApiKey).await;
                Err(ServiceError::Unauthorized)
            }
        }
    }

    /// The live session of `token` and its user, the session's expiry moved on.
    async fn session_caller(&self, token: &str) -> Result<Option<Caller>, ServiceError> {
        let hash = hash_api_key(token);
        let now = Utc::now();
        let Some(session) = self.team.get_session(&hash).await? else {
            return Ok(None);
        };
        if session.expires_at <= now {
            return Ok(None);
        }
        let Some(record) = self
            .team
            .get_user(&session.tenant_id, session.user_id)
            .await?
        else {
            return Ok(None);
        };
        if record.user.disabled || record.generation != session.generation {
            return Ok(None);
        }
        let expires_at = now + SESSION_IDLE;
        if expires_at - session.expires_at >= SESSION_TOUCH_EVERY {
            // Bookkeeping: a failed write must not refuse a live session.
            if let Err(e) = self.team.touch_session(&hash, expires_at).await {
                warn!(error = %e, "could not extend a session");
            }
        }
        Ok(Some(Caller {
            tenant: session.tenant_id,
            role: record.user.role,
            actor: record.user.actor(),
            credential: Credential::Session {
                token_hash: hash,
                user_id: record.user.id,
            },
        }))
    }

    /// Invites a person: a user without a password, and a one-time token (valid
    /// [`INVITE_TTL`]) that sets it. An address already invited that never set a password gets
    /// a new token; one in use is a [`ServiceError::Conflict`].
    pub async fn invite_user(
        &self,
        tenant: &TenantId,
        email: &str,
        name: &str,
        role: Role,
        by: &Actor,
    ) -> Result<(User, String), ServiceError> {
        if !role.is_for_users() {
            return Err(ServiceError::InvalidRequest(
                "role must be admin, supervisor or dispatcher".into(),
            ));
        }
        let now = Utc::now();
        let user = User {
            id: Uuid::now_v7(),
            tenant_id: Some(tenant.clone()),
            email: normalize_email(email)?,
            name: display_name(name)?,
            role,
            disabled: false,
            active: false,
            created_at: now,
            updated_at: now,
        };
        let record = UserRecord {
            user: user.clone(),
            password_hash: None,
            generation: 0,
        };
        let user = match self.team.create_user(&record).await {
            Ok(()) => user,
            // Someone invited before who never set a password (the invite may have expired)
            // is invited again, as they are.
            Err(StoreError::Conflict(conflict)) => self
                .team
                .user_by_email(tenant, &user.email)
                .await?
                .filter(|r| r.password_hash.is_none() && !r.user.disabled)
                .map(|r| r.user)
                .ok_or(ServiceError::Conflict(conflict))?,
            Err(e) => return Err(e.into()),
        };
        let token = new_token(INVITE_PREFIX);
        self.team
            .put_invite(&Invite {
                token_hash: hash_api_key(&token),
                tenant_id: tenant.clone(),
                user_id: user.id,
                expires_at: now + INVITE_TTL,
            })
            .await?;
        info!(tenant_id = %tenant, user_id = %user.id, "user invited");
        self.audit(
            tenant,
            by,
            "user.invite",
            Some(format!("user:{}", user.id)),
            serde_json::json!({"email": user.email, "role": user.role}),
        )
        .await;
        Ok((user, token))
    }

    /// Sets the invited user's password (the invite is used up) and returns the user.
    pub async fn accept_invite(&self, token: &str, password: &str) -> Result<User, ServiceError> {
        check_password(password)?;
        let invalid = || ServiceError::InvalidRequest("the invite is invalid or expired".into());
        if !token.starts_with(INVITE_PREFIX) {
            return Err(invalid());
        }
        let invite = self
            .team
            .take_invite(&hash_api_key(token))
            .await?
            .filter(|i| i.expires_at > Utc::now())
            .ok_or_else(invalid)?;
        let mut record = self
            .team
            .get_user(&invite.tenant_id, invite.user_id)
            .await?
            .filter(|r| !r.user.disabled)
            .ok_or_else(invalid)?;
        record.password_hash = Some(hash_password(password.to_owned()).await?);
        record.generation += 1;
        record.user.active = true;
        record.user.updated_at = Utc::now();
        self.team.update_user(&record).await?;
        info!(tenant_id = %invite.tenant_id, user_id = %record.user.id, "invite accepted");
        self.audit(
            &invite.tenant_id,
            &record.user.actor(),
            "user.invite_accepted",
            Some(format!("user:{}", record.user.id)),
            serde_json::Value::Null,
        )
        .await;
        Ok(record.user)
    }

    /// Signs a user in. An unknown tenant or e-mail and a wrong password are the same
    /// [`ServiceError::InvalidCredentials`]; after the policy's failures for the account or
    /// the address, [`ServiceError::LockedOut`].
    pub async fn login(
        &self,
        tenant: &str,
        email: &str,
        password: &str,
        client: Option<IpAddr>,
    ) -> Result<SignedIn, ServiceError> {
        let email = email.trim().to_lowercase();
        // Counted in the store, so the lockout holds across processes and Lambda instances.
        let mut subjects = vec![format!("account:{tenant}:{email}")];
        subjects.extend(client.map(|ip| format!("address:{ip}")));
        let policy = self.settings.login_lockout;
        let now = Utc::now();
        for subject in &subjects {
            if let Some((failures, since)) = self
                .team
                .login_failures(subject, now, policy.window)
                .await?
            {
                if policy.max_failures > 0 && failures >= policy.max_failures {
                    let left = (since + policy.window - now).num_seconds().max(1);
                    return Err(ServiceError::LockedOut(left.unsigned_abs()));
                }
            }
        }
        let tenant = match TenantId::parse(tenant) {
            Ok(id) => self.tenants.get_tenant(&id).await?.map(|t| t.id),
            Err(_) => None,
        };
        let record = match &tenant {
            Some(tenant) => self.team.user_by_email(tenant, &email).await?,
            None => None,
        };
        let hash = match record.as_ref().and_then(|r| r.password_hash.clone()) {
            Some(hash) => hash,
            None => decoy_hash().await,
        };
        let matches = verify_password(password.to_owned(), hash).await;
        let record = match record {
            Some(record) if matches && !record.user.disabled => record,
            _ => {
                for subject in &subjects {
                    self.team
                        .count_login_failure(subject, now, policy.window)
                        .await?;
                }
                // Only a tenant that exists gets an entry: a guesser cannot fill the store.
                if let Some(tenant) = &tenant {
                    let actor = match &record {
                        Some(r) => r.user.actor(),
                        None => Actor {
                            kind: ActorType::User,
                            id: "unknown".into(),
                            name: email.clone(),
                        },
                    };
                    let details = serde_json::json!({"email": email, "address": client});
                    self.audit(tenant, &actor, "auth.login_failed", None, details)
                        .await;
                }
                return Err(ServiceError::InvalidCredentials);
            }
        };
        let token = new_token(SESSION_PREFIX);
        let expires_at = Utc::now() + SESSION_IDLE;
        self.team
            .put_session(&Session {
                token_hash: hash_api_key(&token),
                tenant_id: record
                    .user
                    .tenant_id
                    .clone()
                    .ok_or(ServiceError::NotFound("user"))?,
                user_id: record.user.id,
                generation: record.generation,
                expires_at,
            })
            .await?;
        info!(user_id = %record.user.id, "signed in");
        if let Some(tenant) = &tenant {
            let details = serde_json::json!({"address": client});
            self.audit(tenant, &record.user.actor(), "auth.login", None, details)
                .await;
        }
        Ok(SignedIn {
            token,
            expires_at,
            user: record.user,
        })
    }

    /// Ends the caller's session (an API key has none to end) and closes the user's
    /// dashboards: one opened with this token must not outlive it (the user's other signed-in
    /// consoles reconnect with their own).
    pub async fn logout(&self, caller: &Caller) -> Result<(), ServiceError> {
        if let Credential::Session { token_hash, .. } = &caller.credential {
            self.team.delete_session(token_hash).await?;
            let owner = caller.connection_owner();
            if let Err(e) = self.push.disconnect_api_key(&caller.tenant, &owner).await {
                warn!(error = %e, "could not close a signed-out user's dashboards");
            }
        }
        Ok(())
    }

    /// Changes the signed-in caller's password after checking the current one: every session
    /// of theirs ends (this one too) and their dashboards close, so whoever held an old session
    /// is out. A wrong current password counts towards the account's sign-in lockout.
    pub async fn change_password(
        &self,
        caller: &Caller,
        current: &str,
        new: &str,
    ) -> Result<(), ServiceError> {
        let Some(id) = caller.user_id() else {
            return Err(ServiceError::InvalidRequest(
                "only a signed-in user has a password; API keys are rotated instead".into(),
            ));
        };
        check_password(new)?;
        let mut record = self
            .team
            .get_user(&caller.tenant, id)
            .await?
            .ok_or(ServiceError::NotFound("user"))?;
        let subject = format!("account:{}:{}", caller.tenant, record.user.email);
        let policy = self.settings.login_lockout;
        let now = Utc::now();
        if let Some((failures, since)) = self
            .team
            .login_failures(&subject, now, policy.window)
            .await?
        {
            if policy.max_failures > 0 && failures >= policy.max_failures {
                let left = (since + policy.window - now).num_seconds().max(1);
                return Err(ServiceError::LockedOut(left.unsigned_abs()));
            }
        }
        let hash = record.password_hash.clone().unwrap_or_default();
        if !verify_password(current.to_owned(), hash).await {
            self.team
                .count_login_failure(&subject, now, policy.window)
                .await?;
            return Err(ServiceError::InvalidCredentials);
        }
        record.password_hash = Some(hash_password(new.to_owned()).await?);
        // Sessions carry the generation they were opened under: all of them end here.
        record.generation += 1;
        record.user.updated_at = Utc::now();
        self.team.update_user(&record).await?;
        if let Err(e) = self
            .push
            .disconnect_api_key(&caller.tenant, &caller.connection_owner())
            .await
        {
            warn!(error = %e, user_id = %id, "could not close the dashboards of a changed password");
        }
        info!(tenant_id = %caller.tenant, user_id = %id, "password changed");
        self.audit(
            &caller.tenant,
            &caller.actor,
            "user.password_changed",
            Some(format!("user:{id}")),
            serde_json::Value::Null,
        )
        .await;
        Ok(())
    }

    /// Changes a user's name, role or disabled flag; disabling ends their sessions and closes
    /// their dashboards.
    pub async fn change_user(
        &self,
        tenant: &TenantId,
        id: Uuid,
        change: UserChange,
        by: &Actor,
    ) -> Result<User, ServiceError> {
        let mut record = self
            .team
            .get_user(tenant, id)
            .await?
            .ok_or(ServiceError::NotFound("user"))?;
        if let Some(name) = &change.name {
            record.user.name = display_name(name)?;
        }
        if let Some(role) = change.role {
            if !role.is_for_users() {
                return Err(ServiceError::InvalidRequest(
                    "role must be admin, supervisor or dispatcher".into(),
                ));
            }
            record.user.role = role;
        }
        let disabling = change.disabled == Some(true) && !record.user.disabled;
        if disabling {
            record.generation += 1;
        }
        if let Some(disabled) = change.disabled {
            record.user.disabled = disabled;
        }
        record.user.updated_at = Utc::now();
        self.team.update_user(&record).await?;
        if disabling {
            // Their sessions are over; so are the dashboards those opened.
            let owner = format!("user:{id}");
            if let Err(e) = self.push.disconnect_api_key(tenant, &owner).await {
                warn!(error = %e, user_id = %id, "could not close a disabled user's dashboards");
            }
        }
        info!(tenant_id = %tenant, user_id = %id, "user changed");
        let details = serde_json::json!({
            "name": change.name.is_some(),
            "role": change.role,
            "disabled": change.disabled,
        });
        self.audit(
            tenant,
            by,
            "user.change",
            Some(format!("user:{id}")),
            details,
        )
        .await;
        Ok(record.user)
    }

    /// A user of the tenant's.
    pub async fn user(&self, tenant: &TenantId, id: Uuid) -> Result<User, ServiceError> {
        self.team
            .get_user(tenant, id)
            .await?
            .map(|r| r.user)
            .ok_or(ServiceError::NotFound("user"))
    }
}

/// When failed sign-ins lock an account or an address out: `max_failures` within `window`
/// refuse it until the window ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginLockout {
    /// Failures that lock out (0: never).
    pub max_failures: u32,
    /// How long failures count, from the first.
    pub window: TimeDelta,
}

impl Default for LoginLockout {
    /// 5 failures in 15 minutes.
    fn default() -> Self {
        LoginLockout {
            max_failures: 5,
            window: TimeDelta::minutes(15),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_need_length_and_must_not_be_common() {
        assert!(check_password("short").is_err());
        assert!(check_password("Password1234").is_err(), "common");
        assert!(check_password("aaaaaaaaaaaaaa").is_err(), "one character");
        assert!(check_password("correct horse battery").is_ok());
    }

    #[test]
    fn emails_are_normalised() {
        assert_eq!(
            normalize_email(" Alex@Example.ORG ").unwrap(),
            "alex@example.org"
        );
        for bad in ["alex", "@example.org", "alex@localhost", "a b@example.org"] {
            assert!(normalize_email(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn hashes_are_argon2id_and_verify() {
        let hash = hash_password("correct horse battery".into()).await.unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password("correct horse battery".into(), hash.clone()).await);
        assert!(!verify_password("correct horse batterY".into(), hash).await);
    }
}
