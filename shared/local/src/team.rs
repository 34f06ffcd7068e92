//! [`TeamStore`] on SQLite: users, invites and sessions.

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use omni_core::domain::TenantId;
use omni_core::ports::{StoreError, StoreResult, TeamStore};
use omni_core::team::{Invite, Session, User, UserRecord};
use rusqlite::{params, OptionalExtension, Row};
use uuid::Uuid;

use crate::db::{corrupt, db, parse, parse_ts, ts, Cached};
use crate::SqliteBackend;

const USER_COLS: &str = "id, tenant_id, email, name, role, disabled, password_hash, generation, \
    created_at, updated_at";

fn user_row(row: &Row) -> rusqlite::Result<[Option<String>; 10]> {
    Ok([
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        Some(row.get::<_, i64>(5)?.to_string()),
        row.get(6)?,
        Some(row.get::<_, i64>(7)?.to_string()),
        row.get(8)?,
        row.get(9)?,
    ])
}

fn user_record(cols: [Option<String>; 10]) -> StoreResult<UserRecord> {
    let [id, tenant, email, name, role, disabled, password_hash, generation, created, updated] =
        cols;
    let text = |v: Option<String>, what| v.ok_or_else(|| corrupt(what));
    Ok(UserRecord {
        user: User {
            id: Uuid::parse_str(&text(id, "user id")?).map_err(|_| corrupt("user id"))?,
            tenant_id: Some(
                TenantId::parse(&text(tenant, "tenant id")?).map_err(|_| corrupt("tenant id"))?,
            ),
            email: text(email, "email")?,
            name: text(name, "name")?,
            role: parse(&text(role, "role")?, "role")?,
            disabled: text(disabled, "disabled")? != "0",
            active: password_hash.is_some(),
            created_at: parse_ts(&text(created, "created_at")?)?,
            updated_at: parse_ts(&text(updated, "updated_at")?)?,
        },
        password_hash,
        generation: parse(&text(generation, "generation")?, "generation")?,
    })
}

fn tenant_of(user: &User) -> StoreResult<&TenantId> {
    user.tenant_id
        .as_ref()
        .ok_or_else(|| StoreError::Backend("a user must name its tenant".into()))
}

impl SqliteBackend {
    async fn one_user(
        &self,
        condition: &'static str,
        tenant: &TenantId,
        value: String,
    ) -> StoreResult<Option<UserRecord>> {
        let tenant = tenant.clone();
        self.read(move |conn| {
            conn.row(
                &format!("SELECT {USER_COLS} FROM users WHERE tenant_id = ?1 AND {condition} = ?2"),
                params![tenant.as_str(), value],
                user_row,
            )
            .optional()
            .map_err(db)?
            .map(user_record)
            .transpose()
        })
        .await
    }
}

#[async_trait]
impl TeamStore for SqliteBackend {
    async fn create_user(&self, record: &UserRecord) -> StoreResult<()> {
        let record = record.clone();
        self.write(move |tx| {
            let u = &record.user;
            let inserted = tx
                .exec(
                    "INSERT INTO users (id, tenant_id, email, name, role, disabled, password_hash,
                         generation, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                     ON CONFLICT (tenant_id, email) DO NOTHING",
                    params![
                        u.id.to_string(),
                        tenant_of(u)?.as_str(),
                        u.email,
                        u.name,
                        u.role.as_str(),
                        u.disabled,
                        record.password_hash,
                        record.generation,
                        ts(u.created_at),
                        ts(u.updated_at)
                    ],
                )
                .map_err(db)?;
            if inserted == 0 {
                return Err(StoreError::Conflict(
                    "the tenant already has a user with that email".into(),
                ));
            }
            Ok(())
        })
        .await
    }

    async fn get_user(&self, tenant: &TenantId, id: Uuid) -> StoreResult<Option<UserRecord>> {
        self.one_user("id", tenant, id.to_string()).await
    }

    async fn user_by_email(
        &self,
        tenant: &TenantId,
        email: &str,
    ) -> StoreResult<Option<UserRecord>> {
        self.one_user("email", tenant, email.to_owned()).await
    }

    async fn list_users(&self, tenant: &TenantId) -> StoreResult<Vec<User>> {
        let tenant = tenant.clone();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {USER_COLS} FROM users WHERE tenant_id = ?1 ORDER BY id"
                ))
                .map_err(db)?;
            let rows = stmt.query_map([tenant.as_str()], user_row).map_err(db)?;
            rows.map(|r| Ok(user_record(r.map_err(db)?)?.user))
                .collect()
        })
        .await
    }

    async fn update_user(&self, record: &UserRecord) -> StoreResult<()> {
        let record = record.clone();
        self.write(move |tx| {
            let u = &record.user;
            tx.exec(
                "UPDATE users SET name = ?3, role = ?4, disabled = ?5, password_hash = ?6,
                     generation = ?7, updated_at = ?8
                 WHERE tenant_id = ?1 AND id = ?2",
                params![
                    tenant_of(u)?.as_str(),
                    u.id.to_string(),
                    u.name,
                    u.role.as_str(),
                    u.disabled,
                    record.password_hash,
                    record.generation,
                    ts(u.updated_at)
                ],
            )
            .map_err(db)?;
            Ok(())
        })
        .await
    }

    async fn put_invite(&self, invite: &Invite) -> StoreResult<()> {
        let invite = invite.clone();
        self.write(move |tx| {
            tx.exec(
                "INSERT INTO invites (token_hash, tenant_id, user_id, expires_at)
                 VALUES (?1, ?2, ?3, ?4)",
                params![
                    invite.token_hash,
                    invite.tenant_id.as_str(),
                    invite.user_id.to_string(),
                    ts(invite.expires_at)
                ],
            )
            .map_err(db)?;
            Ok(())
        })
        .await
    }

    async fn take_invite(&self, token_hash: &str) -> StoreResult<Option<Invite>> {
        let token_hash = token_hash.to_owned();
        self.write(move |tx| {
            let found: Option<(String, String, String)> = tx
                .row(
                    "DELETE FROM invites WHERE token_hash = ?1
                     RETURNING tenant_id, user_id, expires_at",
                    [&token_hash],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()
                .map_err(db)?;
            found
                .map(|(tenant, user, expires)| {
                    Ok(Invite {
                        token_hash: token_hash.clone(),
                        tenant_id: TenantId::parse(&tenant).map_err(|_| corrupt("tenant id"))?,
                        user_id: Uuid::parse_str(&user).map_err(|_| corrupt("user id"))?,
                        expires_at: parse_ts(&expires)?,
                    })
                })
                .transpose()
        })
        .await
    }

    async fn put_session(&self, session: &Session) -> StoreResult<()> {
        let session = session.clone();
        self.write(move |tx| {
            // Expired sessions are of no use to anyone: each sign-in clears them.
            tx.exec(
                "DELETE FROM sessions WHERE expires_at < ?1",
                [ts(Utc::now())],
            )
            .map_err(db)?;
            tx.exec(
                "INSERT INTO sessions (token_hash, tenant_id, user_id, generation, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    session.token_hash,
                    session.tenant_id.as_str(),
                    session.user_id.to_string(),
                    session.generation,
                    ts(session.expires_at)
                ],
            )
            .map_err(db)?;
            Ok(())
        })
        .await
    }

    async fn get_session(&self, token_hash: &str) -> StoreResult<Option<Session>> {
        let token_hash = token_hash.to_owned();
        self.read(move |conn| {
            let found: Option<(String, String, i64, String)> = conn
                .row(
                    "SELECT tenant_id, user_id, generation, expires_at FROM sessions
                     WHERE token_hash = ?1",
                    [&token_hash],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .optional()
                .map_err(db)?;
            found
                .map(|(tenant, user, generation, expires)| {
                    Ok(Session {
                        token_hash: token_hash.clone(),
                        tenant_id: TenantId::parse(&tenant).map_err(|_| corrupt("tenant id"))?,
                        user_id: Uuid::parse_str(&user).map_err(|_| corrupt("user id"))?,
                        generation,
                        expires_at: parse_ts(&expires)?,
                    })
                })
                .transpose()
        })
        .await
    }

    async fn touch_session(&self, token_hash: &str, expires_at: DateTime<Utc>) -> StoreResult<()> {
        let token_hash = token_hash.to_owned();
        self.write(move |tx| {
            tx.exec(
                "UPDATE sessions SET expires_at = ?2 WHERE token_hash = ?1",
                params![token_hash, ts(expires_at)],
            )
            .map_err(db)?;
            Ok(())
        })
        .await
    }

    async fn delete_session(&self, token_hash: &str) -> StoreResult<()> {
        let token_hash = token_hash.to_owned();
        self.write(move |tx| {
            tx.exec("DELETE FROM sessions WHERE token_hash = ?1", [&token_hash])
                .map_err(db)?;
            Ok(())
        })
        .await
    }

    async fn count_login_failure(
        &self,
        subject: &str,
        now: DateTime<Utc>,
        window: TimeDelta,
    ) -> StoreResult<(u32, DateTime<Utc>)> {
        let subject = subject.to_owned();
        self.write(move |tx| {
            let (failures, since): (u32, String) = tx
                .row(
                    "INSERT INTO login_failures (subject, window_start, failures)
                     VALUES (?1, ?2, 1)
                     ON CONFLICT (subject) DO UPDATE SET
                         failures = CASE WHEN window_start > ?3 THEN failures + 1 ELSE 1 END,
                         window_start = CASE WHEN window_start > ?3 THEN window_start ELSE ?2 END
                     RETURNING failures, window_start",
                    params![subject, ts(now), ts(now - window)],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .map_err(db)?;
            Ok((failures, parse_ts(&since)?))
        })
        .await
    }

    async fn login_failures(
        &self,
        subject: &str,
        now: DateTime<Utc>,
        window: TimeDelta,
    ) -> StoreResult<Option<(u32, DateTime<Utc>)>> {
        let subject = subject.to_owned();
        self.read(move |conn| {
            let found: Option<(u32, String)> = conn
                .row(
                    "SELECT failures, window_start FROM login_failures
                     WHERE subject = ?1 AND window_start > ?2",
                    params![subject, ts(now - window)],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(db)?;
            found
                .map(|(failures, since)| Ok((failures, parse_ts(&since)?)))
                .transpose()
        })
        .await
    }
}
