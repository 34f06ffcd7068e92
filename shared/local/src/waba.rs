//! [`WabaRouteStore`] on SQLite: one row per business account, its app secret sealed with
//! the master key like carrier credentials, its counters moved in single statements.

use async_trait::async_trait;
use omni_core::ports::{StoreResult, WabaRouteStore};
use omni_core::providers::Secret;
use omni_core::waba::{ForwardCount, WabaId, WabaRoute};
use rusqlite::{params, OptionalExtension, Row};

use crate::db::{corrupt, db, parse_ts, ts, Cached};
use crate::key::MasterKey;
use crate::SqliteBackend;

const COLS: &str = "waba_id, url, note, forwarded, pending, failed, last_forwarded_at, \
                    created_at, updated_at";

fn route_row(row: &Row) -> StoreResult<WabaRoute> {
    let text = |i: usize| row.get::<_, String>(i).map_err(db);
    let count = |i: usize| -> StoreResult<u64> {
        let n: i64 = row.get(i).map_err(db)?;
        Ok(n.max(0) as u64)
    };
    Ok(WabaRoute {
        waba_id: WabaId::parse(&text(0)?).ok_or_else(|| corrupt("waba id"))?,
        url: text(1)?,
        note: row.get(2).map_err(db)?,
        forwarded: count(3)?,
        pending: count(4)?,
        failed: count(5)?,
        last_forwarded_at: row
            .get::<_, Option<String>>(6)
            .map_err(db)?
            .map(|t| parse_ts(&t))
            .transpose()?,
        created_at: parse_ts(&text(7)?)?,
        updated_at: parse_ts(&text(8)?)?,
    })
}

#[async_trait]
impl WabaRouteStore for SqliteBackend {
    async fn put_waba_route(
        &self,
        route: &WabaRoute,
        app_secret: &Secret,
    ) -> StoreResult<WabaRoute> {
        // Sealed on the caller's task: the plaintext never reaches the database thread.
        let aad = MasterKey::waba_associated_data(route.waba_id.as_str());
        let (nonce, ciphertext) = self.key.seal_for(&aad, app_secret.expose().as_bytes())?;
        let route = route.clone();
        self.write(move |tx| {
            tx.exec(
                "INSERT INTO waba_routes (waba_id, url, note, nonce, ciphertext, created_at,
                     updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)
                 ON CONFLICT (waba_id) DO UPDATE SET url = excluded.url, note = excluded.note,
                     nonce = excluded.nonce, ciphertext = excluded.ciphertext,
                     updated_at = excluded.updated_at",
                params![
                    route.waba_id.as_str(),
                    route.url,
                    route.note,
                    nonce,
                    ciphertext,
                    ts(route.updated_at)
                ],
            )
            .map_err(db)?;
            tx.row(
                &format!("SELECT {COLS} FROM waba_routes WHERE waba_id = ?1"),
                [route.waba_id.as_str()],
                |r| Ok(route_row(r)),
            )
            .map_err(db)?
        })
        .await
    }

    async fn get_waba_route(&self, waba_id: &WabaId) -> StoreResult<Option<(WabaRoute, Secret)>> {
        let id = waba_id.clone();
        let found = self
            .read(move |conn| {
                conn.row(
                    &format!(
                        "SELECT {COLS}, nonce, ciphertext FROM waba_routes WHERE waba_id = ?1"
                    ),
                    [id.as_str()],
                    |r| {
                        Ok(route_row(r).and_then(|route| {
                            let nonce: Vec<u8> = r.get(9).map_err(db)?;
                            let sealed: Vec<u8> = r.get(10).map_err(db)?;
                            Ok((route, nonce, sealed))
                        }))
                    },
                )
                .optional()
                .map_err(db)?
                .transpose()
            })
            .await?;
        let Some((route, nonce, sealed)) = found else {
            return Ok(None);
        };
        let aad = MasterKey::waba_associated_data(waba_id.as_str());
        let plain = self.key.open_for(&aad, &nonce, &sealed)?;
        let secret = String::from_utf8(plain).map_err(|_| corrupt("app secret"))?;
        Ok(Some((route, Secret::new(secret))))
    }

    async fn list_waba_routes(&self) -> StoreResult<Vec<WabaRoute>> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached(&format!("SELECT {COLS} FROM waba_routes ORDER BY waba_id"))
                .map_err(db)?;
            let rows = stmt.query_map([], |r| Ok(route_row(r))).map_err(db)?;
            rows.map(|r| r.map_err(db)?).collect()
        })
        .await
    }

    async fn delete_waba_route(&self, waba_id: &WabaId) -> StoreResult<bool> {
        let id = waba_id.clone();
        self.write(move |tx| {
            let n = tx
                .exec("DELETE FROM waba_routes WHERE waba_id = ?1", [id.as_str()])
                .map_err(db)?;
            Ok(n > 0)
        })
        .await
    }

    async fn count_forward(&self, waba_id: &WabaId, count: ForwardCount) -> StoreResult<()> {
        let id = waba_id.clone();
        let (sql, at) = match count {
            ForwardCount::Queued => (
                "UPDATE waba_routes SET pending = pending + 1 WHERE waba_id = ?1",
                None,
            ),
            ForwardCount::Forwarded(at) => (
                "UPDATE waba_routes SET pending = MAX(pending - 1, 0), forwarded = forwarded + 1,
                     last_forwarded_at = MAX(COALESCE(last_forwarded_at, ''), ?2)
                 WHERE waba_id = ?1",
                Some(ts(at)),
            ),
            ForwardCount::Failed => (
                "UPDATE waba_routes SET pending = MAX(pending - 1, 0), failed = failed + 1
                 WHERE waba_id = ?1",
                None,
            ),
        };
        self.write_statement(move |tx| {
            match at {
                Some(at) => tx.exec(sql, params![id.as_str(), at]),
                None => tx.exec(sql, params![id.as_str()]),
            }
            .map_err(db)?;
            Ok(())
        })
        .await
    }
}
