//! PostgreSQL: the production database, and the way out of one machine. Several `mam`
//! processes may serve one database; any of them can serve any phone.
//!
//! Concurrency: a push locks its device row, then its records in id order. Its changes are
//! numbered from its own transaction id, `change_base + (xid << 20) + k`, so pushes take no
//! common lock and their commits overlap. A pull's cursor stops below the oldest transaction
//! of the database still running: every transaction under it has committed or rolled back, and
//! every one still to commit has a higher id, so a cursor never skips a change committed
//! later. What is committed above that point is sent as well, up to a page (and again next
//! time), so a record edited again while an older push runs does not hide from a phone.
//!
//! A new record is INSERTed, never upserted, so two pushes creating the same record cannot
//! overwrite each other: the loser fails with a unique violation and the whole push is
//! retried.
//!
//! Transaction ids are the cluster's: a database restored into another cluster meets lower
//! ones. At every start, and whenever the epoch is renewed, the base is raised above the
//! highest number stored, under an exclusive advisory lock that every numbering push shares.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::PgPoolOptions;
use sqlx::{FromRow, PgPool, Postgres, QueryBuilder, Row, Transaction};
use sync_protocol::{CommuneCode, DeviceId, Record, RecordId, Rejection};

use super::cells::{Amount, CellKey};

use super::rows::{CellRow, DeviceRow, RejectionRow, StoredRejectionRow, SummaryRow};
use super::{
    communes_text, page, parse_id, parse_move, push_rejections, Device, DeviceSummary, EditLog,
    Lockout, Move, NewUser, Pull, RecordQuery, RecordRow, Result, StoreError, StoredRejection,
    SyncTx, UploadRefusal, User, WriteBatch,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Bits of a change number under its transaction id: the changes one transaction numbers.
const CHANGE_SHIFT: u32 = 20;

/// The advisory lock a numbering push holds shared, and whatever moves the base (or must see
/// no push commit, as a rebuild of the cells) holds exclusive.
const NUMBERING_LOCK: i64 = 0x6d61_6d00_0001;

/// The highest change number that every transaction which may still write one lies above:
/// what a pull may read up to. It stops below the oldest transaction of this database still
/// running (transactions of other databases of the cluster hold nothing back), and below
/// every transaction still to begin (the snapshot's `xmax`). The statement's snapshot is taken
/// before `pg_stat_activity` is read, so a transaction with an id under `xmax` has it by then.
/// `backend_xid` is 32 bits: it is widened against `xmax`, from which it is less than 2^31
/// away.
const WATERMARK: &str = "(SELECT (SELECT value FROM counters WHERE name = 'change_base') \
     + (LEAST(s.x, COALESCE((SELECT min(s.x - ((((s.x & 4294967295) \
         - a.backend_xid::text::bigint + 6442450944) % 4294967296) - 2147483648)) \
       FROM pg_stat_activity a \
       WHERE a.datname = current_database() AND a.backend_xid IS NOT NULL), s.x)) << 20) - 1 \
     FROM (SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS x) s)";

/// The cursor after a page whose last change is `last`, and whether there is more to pull.
/// Under the watermark the page's end is the cursor (or the watermark, once nothing is left).
/// A page that reached above it holds every change left under it, and moves the cursor to the
/// watermark only: its changes above are sent again from there next time. It never asks for
/// more, which would only send the same changes again while an older transaction runs.
fn after_page(cursor: u64, last: u64, more: bool, watermark: u64) -> (u64, bool) {
    match (last <= watermark, more) {
        (true, true) => (last, true),
        _ => (watermark.max(cursor), false),
    }
}

/// Above any number written so far or handed out as a cursor: the epoch's counter.
const HIGHEST: &str = "(SELECT value FROM counters WHERE name = 'change_base') \
     + (pg_snapshot_xmax(pg_current_snapshot())::text::bigint << 20) - 1";

pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(30))
            .connect(url)
            .await?;
        MIGRATOR.run(&pool).await?;
        let store = Self { pool };
        store.check_cluster().await?;
        store.check_numbers().await?;
        Ok(store)
    }

    /// Change numbers must go on rising. Stored numbers above any this cluster's transaction
    /// ids can make mean a database restored into another cluster (or a dump loaded into a new
    /// one), even where the cluster's identity cannot be read: a new epoch, whose base puts
    /// the next numbers above the stored ones, and every phone pulls again.
    async fn check_numbers(&self) -> Result<()> {
        let ahead: bool = sqlx::query_scalar(&format!(
            "SELECT COALESCE((SELECT max(changed_at) FROM records), 0) > {HIGHEST}"
        ))
        .fetch_one(&self.pool)
        .await?;
        if ahead {
            let epoch = super::SyncStore::renew_epoch(self, crate::now_ms()).await?;
            tracing::warn!(%epoch,
                "change numbers stored are ahead of this cluster's transaction ids (a restore \
                 into another cluster): new epoch, phones pull again");
        }
        Ok(())
    }

    /// A database that finds itself on another cluster (restored into a new one) or on a new
    /// timeline (a promoted replica, a point-in-time recovery) may have lost commits that phones
    /// saw acknowledged: it takes a new epoch, so that every phone pulls again from the start
    /// and pushes what it kept. The cluster is read where the role may read it; elsewhere,
    /// `mam epoch renew` does the same by hand.
    async fn check_cluster(&self) -> Result<()> {
        let identity: Option<String> = match sqlx::query_scalar(
            "SELECT s.system_identifier::text || '/' || c.timeline_id::text
             FROM pg_control_system() s, pg_control_checkpoint() c",
        )
        .fetch_one(&self.pool)
        .await
        {
            Ok(identity) => Some(identity),
            Err(e) => {
                tracing::info!(error = %e, "cannot read the cluster's identity; a restore needs `mam epoch renew`");
                None
            }
        };
        let Some(identity) = identity else {
            return Ok(());
        };
        let known: Option<String> =
            sqlx::query_scalar("SELECT value FROM meta WHERE name = 'cluster'")
                .fetch_optional(&self.pool)
                .await?;
        match known {
            Some(known) if known == identity => {}
            Some(known) => {
                let epoch = super::SyncStore::renew_epoch(self, crate::now_ms()).await?;
                tracing::warn!(was = %known, now = %identity, %epoch,
                    "the database is on another cluster or timeline than before: new epoch, phones pull again");
                self.set_cluster(&identity).await?;
            }
            None => self.set_cluster(&identity).await?,
        }
        Ok(())
    }

    async fn set_cluster(&self, identity: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO meta (name, value) VALUES ('cluster', $1)
             ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
        )
        .bind(identity)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

fn parse_record(body: &str) -> Result<Record> {
    serde_json::from_str(body)
        .map_err(|e| StoreError::Other(format!("stored record is not valid: {e}")))
}

fn scope(communes: &[CommuneCode]) -> Vec<String> {
    communes.iter().map(|c| c.to_string()).collect()
}

#[async_trait]
impl super::SyncStore for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn epoch(&self) -> Result<super::Epoch> {
        let (id, counter, renewed_at): (String, i64, Option<String>) = sqlx::query_as(&format!(
            "SELECT (SELECT value FROM meta WHERE name = 'epoch'), {HIGHEST},
                    (SELECT value FROM meta WHERE name = 'renewed_at')"
        ))
        .fetch_one(&self.pool)
        .await?;
        Ok(super::Epoch {
            id,
            counter: counter as u64,
            renewed_at: renewed_at.and_then(|t| t.parse().ok()),
        })
    }

    async fn renew_epoch(&self, now: i64) -> Result<String> {
        let epoch = super::new_epoch();
        let mut tx = self.pool.begin().await?;
        // A restore is what calls for a new epoch, and one into another cluster also for a
        // higher base.
        raise_base(&mut tx).await?;
        sqlx::query("UPDATE meta SET value = $1 WHERE name = 'epoch'")
            .bind(&epoch)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO meta (name, value) VALUES ('renewed_at', $1)
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        )
        .bind(now.to_string())
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE devices SET restored_seq = last_seq")
            .execute(&mut *tx)
            .await?;
        // An office account's edits are numbered by the server, not kept by a phone: the ones
        // the restored database lost may already be on phones, so its next numbers must not
        // be used again. Each account writes under a new device number from here on.
        let users: Vec<(i64, i64)> = sqlx::query_as("SELECT id, device FROM users")
            .fetch_all(&mut *tx)
            .await?;
        for (user, device) in users {
            let successor: i64 = sqlx::query_scalar(
                "INSERT INTO devices (name, communes, created_at, predecessor)
                 SELECT name, communes, $1, id FROM devices WHERE id = $2 RETURNING id",
            )
            .bind(now)
            .bind(device)
            .fetch_one(&mut *tx)
            .await?;
            sqlx::query("UPDATE users SET device = $1 WHERE id = $2")
                .bind(successor)
                .bind(user)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(epoch)
    }

    async fn backup(&self, _to: &std::path::Path) -> Result<()> {
        Err(StoreError::Other(
            "a PostgreSQL database is backed up with PostgreSQL's tools (pg_dump, or a base \
             backup); after restoring one, run `mam epoch renew`"
                .into(),
        ))
    }

    async fn touch_devices(&self, seen: &[(DeviceId, i64)]) -> Result<()> {
        if seen.is_empty() {
            return Ok(());
        }
        // Each row on its own: a device row a push holds is waited for alone, and no batch
        // holds rows that pushes wait for.
        for (device, at) in seen {
            sqlx::query(
                "UPDATE devices SET last_sync_at = $1 WHERE id = $2 \
                 AND (last_sync_at IS NULL OR last_sync_at < $1)",
            )
            .bind(*at)
            .bind(*device as i64)
            .execute(&self.pool)
            .await?;
        }
        Ok(())
    }

    async fn begin_sync(&self) -> Result<Box<dyn SyncTx>> {
        Ok(Box::new(PgSyncTx {
            tx: self.pool.begin().await?,
        }))
    }

    async fn pull(
        &self,
        communes: &[CommuneCode],
        cursor: u64,
        max_bytes: u64,
        max_records: usize,
    ) -> Result<Pull> {
        if communes.is_empty() {
            return Ok(Pull {
                records: vec![],
                evicted: vec![],
                cursor,
                more: false,
            });
        }
        let scope = scope(communes);
        let mut conn = self.pool.acquire().await?;
        // Read the watermark first: every transaction that may have numbered a change at or
        // below it has ended, so the later statements see all of them.
        let watermark: i64 = sqlx::query_scalar(&format!("SELECT {WATERMARK}"))
            .fetch_one(&mut *conn)
            .await?;
        let watermark = watermark.max(0) as u64;
        // Changes above it are read too: they are committed, and a record edited again while
        // an older push still runs holds only its newer version, which a phone must not wait
        // for. The cursor stops at the watermark all the same, so they come again next time.
        let rows = sqlx::query(
            "SELECT body, changed_at FROM records
             WHERE commune = ANY($1) AND changed_at > $2
             ORDER BY changed_at LIMIT $3",
        )
        .bind(&scope)
        .bind(cursor as i64)
        .bind(max_records as i64 + 1)
        .fetch_all(&mut *conn)
        .await?;
        let (records, last, more) = page(
            rows.into_iter()
                .map(|r| Ok((r.try_get::<String, _>(0)?, r.try_get::<i64, _>(1)? as u64))),
            max_bytes,
            max_records,
        )?;
        let (next, more) = after_page(cursor, last, more, watermark);
        let evicted: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT m.record FROM moves m JOIN records r ON r.id = m.record
             WHERE m.at > $1 AND m.at <= $2 AND m.from_commune = ANY($3) AND NOT (r.commune = ANY($3))",
        )
        .bind(cursor as i64)
        .bind(next as i64)
        .bind(&scope)
        .fetch_all(&mut *conn)
        .await?;
        let evicted = evicted
            .iter()
            .map(|id| RecordId::parse(id).map_err(StoreError::Other))
            .collect::<Result<Vec<_>>>()?;
        Ok(Pull {
            records,
            evicted,
            cursor: next,
            more,
        })
    }

    async fn rejections(
        &self,
        devices: Option<&[DeviceId]>,
        offset: u64,
        limit: u32,
    ) -> Result<Vec<StoredRejection>> {
        let sql = format!(
            "SELECT device, seq, code, field, rule, message, message_vi, body, received_at
             FROM rejections{} ORDER BY id DESC LIMIT $1 OFFSET $2",
            super::of_devices(devices)
        );
        let rows = sqlx::query_as::<_, StoredRejectionRow>(&sql)
            .bind(limit as i64)
            .bind(offset as i64)
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(StoredRejection::try_from).collect()
    }

    async fn count_rejections(&self, devices: Option<&[DeviceId]>) -> Result<u64> {
        let sql = format!(
            "SELECT COUNT(*) FROM rejections{}",
            super::of_devices(devices)
        );
        let n: i64 = sqlx::query_scalar(&sql).fetch_one(&self.pool).await?;
        Ok(n as u64)
    }

    async fn rejections_between(
        &self,
        device: DeviceId,
        from: u64,
        to: u64,
    ) -> Result<Vec<Rejection>> {
        let rows = sqlx::query_as::<_, RejectionRow>(
            "SELECT seq, code, field, message, message_vi, rule FROM rejections
             WHERE device = $1 AND seq >= $2 AND seq <= $3 AND code <> 'seq_reused' ORDER BY seq",
        )
        .bind(device as i64)
        .bind(from as i64)
        .bind(to as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(Rejection::from).collect())
    }
}

#[async_trait]
impl super::DeviceStore for PgStore {
    async fn add_device(
        &self,
        name: &str,
        communes: &[CommuneCode],
        code_hash: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<DeviceId> {
        let mut tx = self.pool.begin().await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO devices (name, communes, created_at) VALUES ($1, $2, $3) RETURNING id",
        )
        .bind(name)
        .bind(communes_text(communes))
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO enrollments (code_hash, device, expires_at) VALUES ($1, $2, $3)")
            .bind(code_hash)
            .bind(id)
            .bind(expires_at)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(id as DeviceId)
    }

    async fn enroll(&self, code_hash: &str, token_hash: &str, now: i64) -> Result<Device> {
        let mut tx = self.pool.begin().await?;
        let device: Option<i64> = sqlx::query_scalar(
            "UPDATE enrollments SET used_at = $1
             WHERE code_hash = $2 AND used_at IS NULL AND expires_at > $1
             RETURNING device",
        )
        .bind(now)
        .bind(code_hash)
        .fetch_optional(&mut *tx)
        .await?;
        let device = device.ok_or(StoreError::NotFound)?;
        let row = sqlx::query_as::<_, DeviceRow>(
            "UPDATE devices SET token_hash = $1, enrolled_at = $2
             WHERE id = $3 AND revoked_at IS NULL
             RETURNING id, name, communes, revoked_at, last_seq",
        )
        .bind(token_hash)
        .bind(now)
        .bind(device)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        let device = Device::from(row);
        tx.commit().await?;
        Ok(device)
    }

    async fn device_by_token(&self, token_hash: &str) -> Result<Option<Device>> {
        let row = sqlx::query_as::<_, DeviceRow>(
            "SELECT id, name, communes, revoked_at, last_seq FROM devices WHERE token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(Device::from))
    }

    async fn devices(&self) -> Result<Vec<DeviceSummary>> {
        let rows = sqlx::query_as::<_, SummaryRow>(
            "SELECT d.id, d.name, d.communes, d.token_hash IS NOT NULL AS enrolled,
                    d.revoked_at IS NOT NULL AS revoked, d.last_seq, d.last_sync_at,
                    (SELECT COUNT(*) FROM rejections r WHERE r.device = d.id) AS rejected,
                    d.predecessor, d.restored_seq,
                    (SELECT COUNT(*) FROM rejections r WHERE r.device = d.id AND r.code = 'lost')
                        AS lost
             FROM devices d ORDER BY d.id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(DeviceSummary::from).collect())
    }

    async fn revoke(&self, device: DeviceId, now: i64) -> Result<()> {
        let done =
            sqlx::query("UPDATE devices SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2")
                .bind(now)
                .bind(device as i64)
                .execute(&self.pool)
                .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn add_successor(
        &self,
        old: DeviceId,
        request: &str,
        token_hash: &str,
        now: i64,
    ) -> Result<Device> {
        let mut tx = self.pool.begin().await?;
        // The predecessor's row, locked: two requests for successors of one device take turns.
        sqlx::query("SELECT id FROM devices WHERE id = $1 FOR UPDATE")
            .bind(old as i64)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound)?;
        let again = sqlx::query_as::<_, DeviceRow>(
            "UPDATE devices SET token_hash = $1 WHERE predecessor = $2 AND successor_request = $3
               AND revoked_at IS NULL
             RETURNING id, name, communes, revoked_at, last_seq",
        )
        .bind(token_hash)
        .bind(old as i64)
        .bind(request)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = again {
            tx.commit().await?;
            return Ok(Device::from(row));
        }
        let taken: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM devices WHERE predecessor = $1")
            .bind(old as i64)
            .fetch_one(&mut *tx)
            .await?;
        if taken >= super::MAX_SUCCESSORS {
            return Err(StoreError::Other(format!(
                "device {old} has taken {taken} successor numbers already; enrol the phone again"
            )));
        }
        let row = sqlx::query_as::<_, DeviceRow>(
            "INSERT INTO devices (name, communes, token_hash, created_at, enrolled_at,
                                  predecessor, successor_request)
             SELECT name, communes, $1, $2, $2, id, $3 FROM devices
             WHERE id = $4 AND revoked_at IS NULL
             RETURNING id, name, communes, revoked_at, last_seq",
        )
        .bind(token_hash)
        .bind(now)
        .bind(request)
        .bind(old as i64)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        tx.commit().await?;
        Ok(Device::from(row))
    }

    async fn device(&self, id: DeviceId) -> Result<Option<Device>> {
        let row = sqlx::query_as::<_, DeviceRow>(
            "SELECT id, name, communes, revoked_at, last_seq FROM devices WHERE id = $1",
        )
        .bind(id as i64)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(Device::from))
    }
}

#[async_trait]
impl super::AccountStore for PgStore {
    async fn add_api_token(
        &self,
        name: &str,
        token_hash: &str,
        scope: &str,
        now: i64,
    ) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "INSERT INTO api_tokens (name, token_hash, scope, created_at) VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(name)
        .bind(token_hash)
        .bind(scope)
        .bind(now)
        .fetch_one(&self.pool)
        .await?)
    }

    async fn api_token_scope(&self, token_hash: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT scope FROM api_tokens WHERE token_hash = $1 AND revoked_at IS NULL",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn add_user(&self, user: &NewUser<'_>, now: i64) -> Result<User> {
        let mut tx = self.pool.begin().await?;
        let device: i64 = sqlx::query_scalar(
            "INSERT INTO devices (name, communes, created_at) VALUES ($1, $2, $3) RETURNING id",
        )
        .bind(format!("{} (office)", user.name))
        .bind(communes_text(user.communes))
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let added = sqlx::query_as::<_, User>(
            "INSERT INTO users (name, role, area, password_hash, device, created_at)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING *",
        )
        .bind(user.name)
        .bind(user.role)
        .bind(user.area)
        .bind(user.password_hash)
        .bind(device)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(added)
    }

    async fn user_by_name(&self, name: &str) -> Result<Option<User>> {
        Ok(
            sqlx::query_as::<_, User>("SELECT * FROM users WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn users(&self) -> Result<Vec<User>> {
        Ok(
            sqlx::query_as::<_, User>("SELECT * FROM users ORDER BY name")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    async fn set_password(&self, name: &str, password_hash: &str) -> Result<()> {
        let done = sqlx::query(
            "UPDATE users SET password_hash = $1, failed_logins = 0, locked_until = NULL WHERE name = $2",
        )
        .bind(password_hash)
        .bind(name)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn login_failed(&self, user: i64, lockout: Lockout, now: i64) -> Result<()> {
        sqlx::query(
            "UPDATE users SET
                 locked_until = CASE WHEN failed_logins + 1 >= $1 THEN $2 ELSE locked_until END,
                 failed_logins = CASE WHEN failed_logins + 1 >= $3 THEN 0 ELSE failed_logins + 1 END
             WHERE id = $4",
        )
        .bind(lockout.after)
        .bind(now + lockout.for_ms)
        .bind(lockout.after)
        .bind(user)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn login_succeeded(&self, user: i64, now: i64) -> Result<()> {
        sqlx::query("UPDATE users SET failed_logins = 0, last_login_at = $1 WHERE id = $2")
            .bind(now)
            .bind(user)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn openrosa(&self, kind: &str, key: &str) -> Result<Option<(String, String)>> {
        Ok(
            sqlx::query_as("SELECT record, body FROM openrosa WHERE kind = $1 AND key = $2")
                .bind(kind)
                .bind(key)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn put_openrosa(&self, rows: &[(&str, String, String, String)]) -> Result<()> {
        // The last of a key wins, as one statement may name a key once.
        let mut last = std::collections::HashMap::new();
        for (i, (kind, key, _, _)) in rows.iter().enumerate() {
            last.insert((*kind, key.as_str()), i);
        }
        let mut kept: Vec<usize> = last.into_values().collect();
        kept.sort_unstable();
        let mut tx = self.pool.begin().await?;
        for chunk in kept.chunks(500) {
            let mut q = sqlx::QueryBuilder::<sqlx::Postgres>::new(
                "INSERT INTO openrosa (kind, key, record, body) ",
            );
            q.push_values(chunk, |mut b, &i| {
                let (kind, key, record, body) = &rows[i];
                b.push_bind(*kind)
                    .push_bind(key.as_str())
                    .push_bind(record.as_str())
                    .push_bind(body.as_str());
            });
            q.push(
                " ON CONFLICT (kind, key) DO UPDATE SET record = excluded.record, body = excluded.body",
            );
            q.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn openrosa_of(&self, kind: &str, record: &str) -> Result<Vec<(String, String)>> {
        Ok(sqlx::query_as(
            "SELECT key, body FROM openrosa WHERE record = $1 AND kind = $2 ORDER BY key",
        )
        .bind(record)
        .bind(kind)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn openrosa_all(&self, kind: &str) -> Result<Vec<(String, String)>> {
        Ok(
            sqlx::query_as("SELECT key, body FROM openrosa WHERE kind = $1")
                .bind(kind)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    async fn add_upload_refusal(
        &self,
        device: DeviceId,
        sha256: &str,
        code: &str,
        message: &str,
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO upload_refusals (device, sha256, code, message, at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(i64::from(device))
        .bind(sha256)
        .bind(code)
        .bind(message)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn upload_refusals(
        &self,
        devices: Option<&[DeviceId]>,
        limit: u32,
    ) -> Result<Vec<UploadRefusal>> {
        let mut q = sqlx::QueryBuilder::<sqlx::Postgres>::new(
            "SELECT device, sha256, code, message, at FROM upload_refusals",
        );
        if let Some(devices) = devices {
            if devices.is_empty() {
                return Ok(Vec::new());
            }
            q.push(" WHERE device IN (");
            let mut each = q.separated(", ");
            for d in devices {
                each.push_bind(i64::from(*d));
            }
            q.push(")");
        }
        q.push(" ORDER BY at DESC, id DESC LIMIT ");
        q.push_bind(i64::from(limit));
        Ok(q.build_query_as::<UploadRefusal>()
            .fetch_all(&self.pool)
            .await?)
    }

    async fn log_login(&self, name: &str, reason: Option<&str>, now: i64) -> Result<()> {
        sqlx::query("INSERT INTO logins (name, succeeded, reason, at) VALUES ($1, $2, $3, $4)")
            .bind(name)
            .bind(reason.is_none())
            .bind(reason)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn logins_of(&self, name: &str, limit: u32) -> Result<Vec<(Option<String>, i64)>> {
        Ok(sqlx::query_as(
            "SELECT reason, at FROM logins WHERE name = $1 ORDER BY at DESC, id DESC LIMIT $2",
        )
        .bind(name)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn refused_logins(&self, limit: u32) -> Result<Vec<(String, String, i64)>> {
        Ok(sqlx::query_as(
            "SELECT name, COALESCE(reason, ''), at FROM logins WHERE NOT succeeded ORDER BY at DESC, id DESC LIMIT $1",
        )
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn add_session(
        &self,
        token_hash: &str,
        user: i64,
        csrf: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<()> {
        sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
            .bind(now)
            .execute(&self.pool)
            .await?;
        sqlx::query(
            "INSERT INTO sessions (token_hash, user_id, csrf, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(token_hash)
        .bind(user)
        .bind(csrf)
        .bind(now)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn session(&self, token_hash: &str, now: i64) -> Result<Option<(User, String)>> {
        let row = sqlx::query(
            "SELECT s.csrf, u.* FROM sessions s JOIN users u ON u.id = s.user_id
             WHERE s.token_hash = $1 AND s.expires_at > $2",
        )
        .bind(token_hash)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| Ok((User::from_row(&r)?, r.try_get("csrf")?)))
            .transpose()
    }

    async fn end_session(&self, token_hash: &str) -> Result<()> {
        sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
            .bind(token_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

#[async_trait]
impl super::FormStore for PgStore {
    async fn published_forms(&self) -> Result<Vec<String>> {
        Ok(
            sqlx::query_scalar("SELECT body FROM forms ORDER BY id, version")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    async fn publish_form(&self, id: &str, version: u32, body: &str, now: i64) -> Result<()> {
        sqlx::query("INSERT INTO forms (id, version, body, published_at) VALUES ($1, $2, $3, $4)")
            .bind(id)
            .bind(version as i64)
            .bind(body)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn set_villages(&self, commune: &CommuneCode, names: &[String]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM villages WHERE commune = $1")
            .bind(commune.as_str())
            .execute(&mut *tx)
            .await?;
        if !names.is_empty() {
            let mut q =
                QueryBuilder::<Postgres>::new("INSERT INTO villages (commune, position, name) ");
            q.push_values(names.iter().enumerate(), |mut b, (i, name)| {
                b.push_bind(commune.as_str())
                    .push_bind(i as i64)
                    .push_bind(name.as_str());
            });
            q.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn villages(&self, communes: &[CommuneCode]) -> Result<BTreeMap<String, Vec<String>>> {
        let mut out: BTreeMap<String, Vec<String>> =
            communes.iter().map(|c| (c.to_string(), vec![])).collect();
        if communes.is_empty() {
            return Ok(out);
        }
        let mut q =
            QueryBuilder::<Postgres>::new("SELECT commune, name FROM villages WHERE commune IN (");
        let mut list = q.separated(", ");
        for c in communes {
            list.push_bind(c.as_str());
        }
        q.push(") ORDER BY commune, position");
        for row in q.build().fetch_all(&self.pool).await? {
            out.entry(row.try_get(0)?)
                .or_default()
                .push(row.try_get(1)?);
        }
        Ok(out)
    }
}

#[async_trait]
impl super::RecordStore for PgStore {
    async fn record(&self, id: RecordId) -> Result<Option<Record>> {
        let body: Option<String> = sqlx::query_scalar("SELECT body FROM records WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        body.as_deref().map(parse_record).transpose()
    }

    async fn all_records(&self) -> Result<Vec<Record>> {
        let bodies: Vec<String> = sqlx::query_scalar("SELECT body FROM records ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        bodies.iter().map(|b| parse_record(b)).collect()
    }

    async fn records_of(&self, forms: &[String], communes: &[String]) -> Result<Vec<Record>> {
        if forms.is_empty() || communes.is_empty() {
            return Ok(vec![]);
        }
        let mut q = QueryBuilder::<Postgres>::new("SELECT body FROM records WHERE form IN (");
        let mut list = q.separated(", ");
        for f in forms {
            list.push_bind(f.as_str());
        }
        q.push(") AND commune IN (");
        let mut list = q.separated(", ");
        for c in communes {
            list.push_bind(c.as_str());
        }
        q.push(") ORDER BY id");
        let rows = q.build().fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| parse_record(r.try_get::<&str, _>(0)?))
            .collect()
    }

    async fn find_records(&self, query: &RecordQuery) -> Result<(Vec<Record>, u64)> {
        if query.is_empty() {
            return Ok((vec![], 0));
        }
        let mut count = QueryBuilder::<Postgres>::new("SELECT COUNT(*) FROM records");
        query.push_filter(&mut count, false);
        let total: i64 = count.build_query_scalar().fetch_one(&self.pool).await?;
        Ok((self.list_records(query).await?, total as u64))
    }

    async fn list_records(&self, query: &RecordQuery) -> Result<Vec<Record>> {
        if query.is_empty() {
            return Ok(vec![]);
        }
        let mut q = QueryBuilder::<Postgres>::new("SELECT body FROM records");
        query.push_filter(&mut q, false);
        q.push(" ORDER BY id DESC");
        if let Some((limit, offset)) = query.page {
            q.push(format!(" LIMIT {limit} OFFSET {offset}"));
        }
        let bodies: Vec<String> = q.build_query_scalar().fetch_all(&self.pool).await?;
        bodies.iter().map(|b| parse_record(b)).collect()
    }

    async fn unnamed_records(&self, limit: u32) -> Result<Vec<Record>> {
        let bodies: Vec<String> =
            sqlx::query_scalar("SELECT body FROM records WHERE name IS NULL LIMIT $1")
                .bind(limit as i64)
                .fetch_all(&self.pool)
                .await?;
        bodies.iter().map(|b| parse_record(b)).collect()
    }

    async fn set_names(&self, names: &[(RecordId, String)]) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        let mut filled = 0;
        for (id, name) in names {
            filled += sqlx::query("UPDATE records SET name = $1 WHERE id = $2 AND name IS NULL")
                .bind(name)
                .bind(id.to_string())
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        tx.commit().await?;
        Ok(filled)
    }

    async fn record_edits(&self, record: RecordId) -> Result<Vec<EditLog>> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        let history = super::read_history::<Postgres>(&mut tx, record, |n| format!("${n}")).await?;
        tx.commit().await?;
        Ok(history)
    }
}

#[async_trait]
impl super::CellStore for PgStore {
    async fn cells(&self, period: Option<&str>) -> Result<Vec<(CellKey, Amount)>> {
        let bounds = period.and_then(super::cells::days_of);
        let rows = sqlx::query_as::<_, CellRow>(
            "SELECT indicator, part, commune, period, value, records, conflicted FROM indicator_cells
             WHERE records <> 0 AND ($1::TEXT IS NULL OR period = $1
                   OR (part = 'u' AND period >= $2 AND period <= $3))
             ORDER BY indicator, part, commune, period",
        )
        .bind(period)
        .bind(bounds.as_ref().map(|b| b.0.clone()))
        .bind(bounds.as_ref().map(|b| b.1.clone()))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    async fn replace_cells(&self, cells: &[(CellKey, Amount)]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM indicator_cells")
            .execute(&mut *tx)
            .await?;
        for chunk in cells.chunks(1000) {
            add_cells(&mut tx, chunk).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn rebuild_cells(
        &self,
        derive: &super::Rederive<'_>,
        build: &super::CellBuilder<'_>,
    ) -> Result<super::Rebuilt> {
        // First the stored records derived again, each row on its own and only if no push has
        // changed it since it was read (a push writes what today's rules derive anyway). Not
        // under the cells' lock: a push holds its records' rows while it waits for the cells,
        // and taking them the other way round would deadlock with it.
        let mut rederived = 0;
        let mut after = String::new();
        loop {
            let rows = records_after(&self.pool, &after).await?;
            let Some((last, _)) = rows.last() else {
                break;
            };
            after = last.clone();
            for (id, body) in rows {
                let mut record = parse_record(&body)?;
                if derive(&mut record) {
                    let written =
                        sqlx::query("UPDATE records SET body = $1 WHERE id = $2 AND body = $3")
                            .bind(super::encode_record(&record))
                            .bind(&id)
                            .bind(&body)
                            .execute(&self.pool)
                            .await?;
                    rederived += written.rows_affected() as usize;
                }
            }
        }
        let mut tx = self.pool.begin().await?;
        // Pushes add to the cells before they take the change counter: the cells first (a
        // push that has touched them finishes before this goes on), then the counter, so no
        // push commits between the records read and the cells written, and none deadlocks.
        sqlx::query("LOCK TABLE indicator_cells IN EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(NUMBERING_LOCK)
            .execute(&mut *tx)
            .await?;
        let mut total = std::collections::BTreeMap::new();
        let mut read = 0;
        let mut after = String::new();
        loop {
            let rows = records_after(&mut *tx, &after).await?;
            let Some((last, _)) = rows.last() else {
                break;
            };
            after = last.clone();
            let mut records = rows
                .iter()
                .map(|(_, b)| parse_record(b))
                .collect::<Result<Vec<_>>>()?;
            drop(rows);
            // Counted by today's rules, whatever a body still says.
            for record in &mut records {
                derive(record);
            }
            read += records.len();
            super::add_chunk_cells(&mut total, build(&records));
        }
        let cells: Vec<_> = total.into_iter().collect();
        sqlx::query("DELETE FROM indicator_cells")
            .execute(&mut *tx)
            .await?;
        for chunk in cells.chunks(1000) {
            add_cells(&mut tx, chunk).await?;
        }
        tx.commit().await?;
        Ok(super::Rebuilt {
            records: read,
            rederived,
            cells: cells.len(),
        })
    }

    async fn meta(&self, name: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar("SELECT value FROM meta WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn set_meta(&self, name: &str, value: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO meta (name, value) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        )
        .bind(name)
        .bind(value)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

#[async_trait]
impl super::BenchStore for PgStore {
    async fn bench_upsert(&self, rows: &[RecordRow]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let cols = RecordColumns::new(rows, 0);
        sqlx::query(
            "INSERT INTO records (id, form, version, commune, body, changed_at, conflicted, deleted, created_at, updated_at, name)
             SELECT id, form, version, commune, body, changed_at, conflicted, deleted, 0, 0, name FROM
             UNNEST($1::TEXT[], $2::TEXT[], $3::BIGINT[], $4::TEXT[], $5::TEXT[], $6::BIGINT[], $7::BOOL[], $8::BOOL[], $9::TEXT[])
               AS v(id, form, version, commune, body, changed_at, conflicted, deleted, name)
             ON CONFLICT (id) DO UPDATE SET version = excluded.version, commune = excluded.commune,
               body = excluded.body, changed_at = excluded.changed_at,
               conflicted = excluded.conflicted, deleted = excluded.deleted, name = excluded.name",
        )
        .bind(&cols.id)
        .bind(&cols.form)
        .bind(&cols.version)
        .bind(&cols.commune)
        .bind(&cols.body)
        .bind(&cols.changed_at)
        .bind(&cols.conflicted)
        .bind(&cols.deleted)
        .bind(&cols.name)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn bench_clear(&self) -> Result<()> {
        sqlx::query("TRUNCATE records").execute(&self.pool).await?;
        Ok(())
    }

    async fn bench_settle(&self) -> Result<()> {
        Ok(())
    }

    async fn bench_analyze(&self) -> Result<()> {
        sqlx::query("ANALYZE").execute(&self.pool).await?;
        Ok(())
    }
}

/// The next chunk of a rebuild's records, `(id, body)` in id order after `after`.
async fn records_after<'e>(
    db: impl sqlx::PgExecutor<'e>,
    after: &str,
) -> Result<Vec<(String, String)>> {
    Ok(
        sqlx::query_as("SELECT id, body FROM records WHERE id > $1 ORDER BY id LIMIT $2")
            .bind(after)
            .bind(super::REBUILD_CHUNK)
            .fetch_all(db)
            .await?,
    )
}

/// Record rows as column arrays, for one `UNNEST` statement instead of a statement a row.
#[derive(Default)]
struct RecordColumns<'a> {
    id: Vec<String>,
    form: Vec<&'a str>,
    version: Vec<i64>,
    commune: Vec<&'a str>,
    body: Vec<&'a str>,
    changed_at: Vec<i64>,
    conflicted: Vec<bool>,
    deleted: Vec<bool>,
    edits: Vec<&'a str>,
    name: Vec<Option<&'a str>>,
}

impl<'a> RecordColumns<'a> {
    /// The rows with their change seqs: `first + changed_at`.
    fn new(rows: impl IntoIterator<Item = &'a RecordRow>, first: u64) -> Self {
        let mut c = RecordColumns::default();
        for row in rows {
            c.id.push(row.id.to_string());
            c.form.push(&row.form);
            c.version.push(row.version as i64);
            c.commune.push(&row.commune);
            c.body.push(&row.body);
            c.changed_at.push((first + row.changed_at) as i64);
            c.conflicted.push(row.conflicted);
            c.deleted.push(row.deleted);
            c.edits.push(&row.edits);
            c.name.push(row.name.as_deref());
        }
        c
    }
}

/// Raise the base of change numbers so that every transaction still running or to come
/// numbers above every change stored and every cursor the old counter handed out: it waits for
/// the pushes numbering now and holds off the next until commit.
async fn raise_base(tx: &mut Transaction<'static, Postgres>) -> Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(NUMBERING_LOCK)
        .execute(&mut **tx)
        .await?;
    sqlx::query(&format!(
        "UPDATE counters SET value = GREATEST(value,
             GREATEST((SELECT max(changed_at) FROM records), (SELECT max(at) FROM moves),
                      (SELECT value FROM counters WHERE name = 'changes'))
             - (pg_snapshot_xmin(pg_current_snapshot())::text::bigint << {CHANGE_SHIFT}))
         WHERE name = 'change_base'"
    ))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Add amounts to cells, creating them as needed.
async fn add_cells(
    tx: &mut Transaction<'static, Postgres>,
    cells: &[(CellKey, Amount)],
) -> Result<()> {
    if cells.is_empty() {
        return Ok(());
    }
    let mut q = QueryBuilder::<Postgres>::new(
        "INSERT INTO indicator_cells (indicator, part, commune, period, value, records, conflicted) ",
    );
    q.push_values(cells, |mut b, (key, amount)| {
        b.push_bind(key.indicator.as_str())
            .push_bind(key.part)
            .push_bind(key.commune.as_str())
            .push_bind(key.period.as_str())
            .push_bind(amount.value)
            .push_bind(amount.records)
            .push_bind(amount.conflicted);
    });
    q.push(
        " ON CONFLICT (indicator, part, commune, period) DO UPDATE SET
           value = indicator_cells.value + excluded.value,
           records = indicator_cells.records + excluded.records,
           conflicted = indicator_cells.conflicted + excluded.conflicted",
    );
    q.build().execute(&mut **tx).await?;
    Ok(())
}

struct PgSyncTx {
    tx: Transaction<'static, Postgres>,
}

#[async_trait]
impl SyncTx for PgSyncTx {
    async fn lock_device(&mut self, device: DeviceId) -> Result<u64> {
        let seq: i64 = sqlx::query_scalar("SELECT last_seq FROM devices WHERE id = $1 FOR UPDATE")
            .bind(device as i64)
            .fetch_one(&mut *self.tx)
            .await?;
        Ok(seq as u64)
    }

    async fn stored_edits(
        &mut self,
        device: DeviceId,
        seqs: &[u64],
    ) -> Result<HashMap<u64, String>> {
        super::stored_edits::<Postgres>(&mut self.tx, device, seqs, |n| format!("${n}")).await
    }

    async fn device_seqs(&mut self, devices: &[DeviceId]) -> Result<HashMap<DeviceId, u64>> {
        let ids: Vec<i64> = devices.iter().map(|d| *d as i64).collect();
        let rows = sqlx::query("SELECT id, last_seq FROM devices WHERE id = ANY($1)")
            .bind(&ids)
            .fetch_all(&mut *self.tx)
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get::<i64, _>(0)? as DeviceId,
                    r.try_get::<i64, _>(1)? as u64,
                ))
            })
            .collect()
    }

    async fn load_records(&mut self, ids: &[RecordId]) -> Result<HashMap<RecordId, Record>> {
        let mut ids: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
        ids.sort();
        let bodies: Vec<String> = sqlx::query_scalar(
            "SELECT body FROM records WHERE id = ANY($1) ORDER BY id FOR UPDATE",
        )
        .bind(&ids)
        .fetch_all(&mut *self.tx)
        .await?;
        bodies
            .iter()
            .map(|b| parse_record(b).map(|r| (r.id, r)))
            .collect()
    }

    async fn record_moves(&mut self, ids: &[RecordId]) -> Result<HashMap<RecordId, Vec<Move>>> {
        let ids: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
        let rows: Vec<(String, String, String, i64)> = sqlx::query_as(
            "SELECT record, from_commune, to_commune, at FROM moves
             WHERE record = ANY($1) ORDER BY at",
        )
        .bind(&ids)
        .fetch_all(&mut *self.tx)
        .await?;
        let mut out: HashMap<RecordId, Vec<Move>> = HashMap::new();
        for (record, from, to, at) in rows {
            out.entry(parse_id(&record)?)
                .or_default()
                .push(parse_move(&from, &to, at)?);
        }
        Ok(out)
    }

    async fn write(&mut self, batch: &WriteBatch) -> Result<()> {
        if let Some(log) = &batch.log {
            sqlx::query(
                "INSERT INTO pushes (device, first_seq, last_seq, edits, packed, refused, received_at)
                 VALUES ($1, $2, $3, '', $4, $5, $6)",
            )
            .bind(batch.device as i64)
            .bind(log.first_seq() as i64)
            .bind(log.last_seq() as i64)
            .bind(&log.edits.bytes)
            .bind(&log.refused)
            .bind(batch.now)
            .execute(&mut *self.tx)
            .await?;
        }
        for chunk in batch.rejections.chunks(1000) {
            let mut q = QueryBuilder::<Postgres>::new("");
            push_rejections(&mut q, batch.device, chunk, batch.now);
            q.build().execute(&mut *self.tx).await?;
        }
        for chunk in batch.cells.chunks(1000) {
            add_cells(&mut self.tx, chunk).await?;
        }
        sqlx::query("UPDATE devices SET last_seq = $1, last_sync_at = $2 WHERE id = $3")
            .bind(batch.last_seq as i64)
            .bind(batch.now)
            .bind(batch.device as i64)
            .execute(&mut *self.tx)
            .await?;
        if batch.records.is_empty() {
            return Ok(());
        }

        if batch.records.len() >= 1 << CHANGE_SHIFT {
            return Err(StoreError::Other(format!(
                "{} records changed in one transaction, at most {}",
                batch.records.len(),
                (1 << CHANGE_SHIFT) - 1
            )));
        }
        // Shared: pushes do not wait for each other, only for a move of the base.
        sqlx::query("SELECT pg_advisory_xact_lock_shared($1)")
            .bind(NUMBERING_LOCK)
            .execute(&mut *self.tx)
            .await?;
        let first: i64 = sqlx::query_scalar(&format!(
            "SELECT value + (pg_current_xact_id()::text::bigint << {CHANGE_SHIFT}) + 1
             FROM counters WHERE name = 'change_base'"
        ))
        .fetch_one(&mut *self.tx)
        .await?;
        let first = first as u64;
        let (new, old): (Vec<&RecordRow>, Vec<&RecordRow>) =
            batch.records.iter().partition(|r| !r.existed);
        if !new.is_empty() {
            let c = RecordColumns::new(new, first);
            sqlx::query(
                "INSERT INTO records (id, form, version, commune, body, changed_at, conflicted, deleted, created_at, updated_at, edits, name)
                 SELECT id, form, version, commune, body, changed_at, conflicted, deleted, $9, $9, edits, name FROM
                 UNNEST($1::TEXT[], $2::TEXT[], $3::BIGINT[], $4::TEXT[], $5::TEXT[], $6::BIGINT[], $7::BOOL[], $8::BOOL[], $10::TEXT[], $11::TEXT[])
                   AS v(id, form, version, commune, body, changed_at, conflicted, deleted, edits, name)",
            )
            .bind(&c.id)
            .bind(&c.form)
            .bind(&c.version)
            .bind(&c.commune)
            .bind(&c.body)
            .bind(&c.changed_at)
            .bind(&c.conflicted)
            .bind(&c.deleted)
            .bind(batch.now)
            .bind(&c.edits)
            .bind(&c.name)
            .execute(&mut *self.tx)
            .await?;
        }
        if !old.is_empty() {
            let c = RecordColumns::new(old, first);
            sqlx::query(
                "UPDATE records AS r SET version = v.version, commune = v.commune, body = v.body,
                   changed_at = v.changed_at, conflicted = v.conflicted, deleted = v.deleted, updated_at = $8,
                   edits = r.edits || ',' || v.edits, name = v.name
                 FROM UNNEST($1::TEXT[], $2::BIGINT[], $3::TEXT[], $4::TEXT[], $5::BIGINT[], $6::BOOL[], $7::BOOL[], $9::TEXT[], $10::TEXT[])
                   AS v(id, version, commune, body, changed_at, conflicted, deleted, edits, name)
                 WHERE r.id = v.id",
            )
            .bind(&c.id)
            .bind(&c.version)
            .bind(&c.commune)
            .bind(&c.body)
            .bind(&c.changed_at)
            .bind(&c.conflicted)
            .bind(&c.deleted)
            .bind(batch.now)
            .bind(&c.edits)
            .bind(&c.name)
            .execute(&mut *self.tx)
            .await?;
        }
        for (record, from, to, at) in &batch.moves {
            sqlx::query(
                "INSERT INTO moves (record, from_commune, to_commune, at) VALUES ($1, $2, $3, $4)",
            )
            .bind(record.to_string())
            .bind(from.as_str())
            .bind(to.as_str())
            .bind((first + at) as i64)
            .execute(&mut *self.tx)
            .await?;
        }
        Ok(())
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        self.tx.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::after_page;

    #[test]
    fn a_page_under_the_watermark_ends_where_it_ends() {
        assert_eq!(after_page(10, 40, true, 100), (40, true));
        assert_eq!(after_page(10, 40, false, 100), (100, false));
        // Nothing new: the cursor still moves up to the watermark.
        assert_eq!(after_page(10, 0, false, 100), (100, false));
    }

    #[test]
    fn a_page_past_the_watermark_stops_the_cursor_at_it() {
        // Changes above the watermark are sent, and sent again from it; a full page asks
        // for no more, which would be the same changes again while the old transaction runs.
        assert_eq!(after_page(10, 140, false, 100), (100, false));
        assert_eq!(after_page(10, 140, true, 100), (100, false));
        assert_eq!(after_page(100, 140, true, 100), (100, false));
        // A cursor is never moved back.
        assert_eq!(after_page(120, 140, false, 100), (120, false));
    }
}
