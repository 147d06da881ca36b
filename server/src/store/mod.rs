//! Storage, behind one trait typed in domain words: devices, enrolments, records, edits,
//! rejections, cursors. One implementation per backend ([`sqlite`], [`postgres`]), each owning
//! its pool options and its embedded migrations. Handlers never see `sqlx::Error`.
//!
//! The sync write path is shared: [`crate::sync`] runs one algorithm over a [`SyncTx`], a
//! transaction each backend opens with the locks it needs.

pub mod postgres;
pub mod sqlite;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write;
use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;
use sync_protocol::{CommuneCode, DeviceId, Record, RecordId, Rejection};

pub mod cells;

use cells::{Amount, CellKey};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// A concurrent writer got there first (unique violation, deadlock, serialization
    /// failure): the whole transaction may be retried.
    #[error("conflict with a concurrent writer")]
    Conflict,
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Other(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::RowNotFound => StoreError::NotFound,
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                StoreError::Unavailable(e.to_string())
            }
            sqlx::Error::Database(db) => {
                // 23505 unique violation, 40001 serialization failure, 40P01 deadlock (PG);
                // SQLITE_BUSY (5) and SQLITE_CONSTRAINT_PRIMARYKEY (1555) for SQLite.
                match db.code().as_deref() {
                    Some("23505" | "40001" | "40P01" | "5" | "1555" | "2067") => {
                        StoreError::Conflict
                    }
                    _ => StoreError::Other(e.to_string()),
                }
            }
            _ => StoreError::Other(e.to_string()),
        }
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        StoreError::Other(format!("migration failed: {e}"))
    }
}

/// An enrolled (or awaiting enrolment) phone.
/// An attachment upload refused.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct UploadRefusal {
    pub device: i64,
    pub sha256: String,
    pub code: String,
    pub message: String,
    pub at: i64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Device {
    pub id: DeviceId,
    pub name: String,
    pub communes: Vec<CommuneCode>,
    pub revoked: bool,
    /// Last consumed seq: what an idle sync acknowledges.
    pub last_seq: u64,
}

impl Device {
    pub fn in_scope(&self, commune: &CommuneCode) -> bool {
        self.communes.contains(commune)
    }
}

/// A device as the office sees it.
#[derive(Clone, Debug, Serialize)]
pub struct DeviceSummary {
    pub id: DeviceId,
    pub name: String,
    pub communes: Vec<String>,
    pub enrolled: bool,
    pub revoked: bool,
    pub last_seq: u64,
    pub last_sync_at: Option<i64>,
    pub rejected: u64,
    /// The device this one succeeds (a phone that took a new number, `POST /v1/successor`).
    pub predecessor: Option<DeviceId>,
    /// The device's last consumed seq when the database was last restored: the seqs after it
    /// are what came back from the phone (its kept edits first), `None` with no restore.
    pub restored_seq: Option<u64>,
    /// Refusals `lost`: seqs the database lost that the phone no longer held.
    pub lost: u64,
}

/// What `rebuild_cells` computes the cells with.
pub type CellBuilder<'a> = dyn Fn(&[Record]) -> Vec<(CellKey, Amount)> + Send + Sync + 'a;

/// How many records a rebuild of the cells reads at a time: it holds one chunk of records and
/// the cells, not every record (a million records parsed at once took about 4 GB).
pub(crate) const REBUILD_CHUNK: i64 = 1_000;

/// A chunk's cells added into the whole's (each record counts in its own cells only, so the
/// cells of the chunks add up to the cells of all).
pub(crate) fn add_chunk_cells(
    total: &mut BTreeMap<CellKey, Amount>,
    chunk: Vec<(CellKey, Amount)>,
) {
    for (key, amount) in chunk {
        total.entry(key).or_default().add(amount, 1);
    }
}

/// What `rebuild_cells` derives each record's computed fields with, before it counts them:
/// true when the record's derived values changed (and so its stored body is rewritten).
pub type Rederive<'a> = dyn Fn(&mut Record) -> bool + Send + Sync + 'a;

/// What a rebuild read and wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rebuilt {
    pub records: usize,
    /// Records whose derived values the rules of today changed.
    pub rederived: usize,
    pub cells: usize,
}

/// Successor numbers one device may take: a phone restored a few times, not a device factory.
pub const MAX_SUCCESSORS: i64 = 10;

/// Which life of the database this is: made with the database, renewed by a restore.
#[derive(Clone, Debug, PartialEq)]
pub struct Epoch {
    pub id: String,
    /// The change counter: the highest cursor this database has handed out.
    pub counter: u64,
    /// When the epoch was last renewed (unix milliseconds); `None` for the first one.
    pub renewed_at: Option<i64>,
}

/// For how long after a restore phones may bring back edits that name other edits the database
/// lost: the phones' retention of acknowledged edits.
pub const RECOVERY_MS: i64 = sync_protocol::client::DEFAULT_RETENTION_MS;

impl Epoch {
    /// Whether edits lost by a restore may still be coming back from phones.
    pub fn recovering(&self, now: i64) -> bool {
        self.renewed_at.is_some_and(|at| now - at < RECOVERY_MS)
    }
}

/// A new epoch: 32 hex digits.
pub fn new_epoch() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

/// A refused edit, kept for review.
#[derive(Clone, Debug, Serialize)]
pub struct StoredRejection {
    pub device: DeviceId,
    pub seq: u64,
    pub code: String,
    pub field: Option<String>,
    pub rule: Option<String>,
    pub message: String,
    pub message_vi: Option<String>,
    /// The edit as the phone sent it.
    pub edit: Box<RawValue>,
    pub received_at: i64,
}

/// An office account. The role and area make its scope; `device` is the device number the
/// person's edits carry.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct User {
    pub id: i64,
    pub name: String,
    pub role: String,
    pub area: String,
    pub password_hash: String,
    pub device: i64,
    pub failed_logins: i64,
    pub locked_until: Option<i64>,
    pub last_login_at: Option<i64>,
}

/// A new office account.
pub struct NewUser<'a> {
    pub name: &'a str,
    pub role: &'a str,
    pub area: &'a str,
    pub password_hash: &'a str,
    /// The communes its edits may touch (the scope of its device).
    pub communes: &'a [CommuneCode],
}

/// Repeated failed sign-ins lock an account for a while.
#[derive(Clone, Copy, Debug)]
pub struct Lockout {
    /// Failures in a row that lock the account.
    pub after: i64,
    /// For how long, in milliseconds.
    pub for_ms: i64,
}

/// One edit of a record's history, as received.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct EditLog {
    pub device: i64,
    pub device_name: Option<String>,
    pub seq: i64,
    pub body: String,
    pub rejected: bool,
    pub received_at: i64,
}

/// Which records an office list shows: forms and communes (both required), their state, and
/// a page. Newest first (record ids are version 7 UUIDs: they sort by creation time).
#[derive(Clone, Debug, Default)]
pub struct RecordQuery {
    pub forms: Vec<String>,
    pub communes: Vec<String>,
    pub conflicted: Option<bool>,
    pub deleted: Option<bool>,
    /// Only records with at least one refused edit.
    pub refused_edit: bool,
    /// (limit, offset); `None` for every match.
    pub page: Option<(u32, u32)>,
    /// Only records older than this one (ids below it): a page that goes on from the last
    /// record of the one before, as long exports read, at the same cost however deep.
    pub before: Option<String>,
    /// Only records whose name holds this, folded ([`crate::forms::folded`]).
    pub name: Option<String>,
}

impl RecordQuery {
    /// The WHERE clause, for either backend's query builder. `by_id` (SQLite) keeps form
    /// and commune off the indexes (`+form`), so that a page newest first walks the ids in
    /// order and stops at its last row, instead of sorting every match; a count leaves it off
    /// and reads the office index alone.
    pub(crate) fn push_filter<'a, DB>(&'a self, q: &mut sqlx::QueryBuilder<'a, DB>, by_id: bool)
    where
        DB: sqlx::Database,
        &'a str: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
        bool: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
        String: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    {
        let plus = if by_id { "+" } else { "" };
        q.push(format!(" WHERE {plus}form IN ("));
        let mut list = q.separated(", ");
        for f in &self.forms {
            list.push_bind(f.as_str());
        }
        q.push(format!(") AND {plus}commune IN ("));
        let mut list = q.separated(", ");
        for c in &self.communes {
            list.push_bind(c.as_str());
        }
        q.push(")");
        if self.refused_edit {
            // A refused edit under a reused seq is not part of the record's history.
            q.push(
                " AND EXISTS (SELECT 1 FROM rejections j WHERE j.record = records.id AND j.code <> 'seq_reused')",
            );
        }
        if let Some(c) = self.conflicted {
            q.push(" AND conflicted = ").push_bind(c);
        }
        if let Some(d) = self.deleted {
            q.push(" AND deleted = ").push_bind(d);
        }
        if let Some(before) = &self.before {
            q.push(" AND id < ").push_bind(before.as_str());
        }
        if let Some(name) = &self.name {
            let escaped = name
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            q.push(" AND name LIKE ")
                .push_bind(format!("%{escaped}%"))
                .push(" ESCAPE '\\'");
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.forms.is_empty() || self.communes.is_empty()
    }
}

/// One page of a pull.
#[derive(Debug)]
pub struct Pull {
    /// Records as stored JSON (the wire `Record`), passed through without re-encoding.
    pub records: Vec<String>,
    pub evicted: Vec<RecordId>,
    pub cursor: u64,
    pub more: bool,
}

/// A record row as the sync path writes it.
#[derive(Clone, Debug)]
pub struct RecordRow {
    pub id: RecordId,
    pub form: String,
    pub version: u32,
    pub commune: String,
    /// The record as wire JSON, shared rather than copied between the phases of a push.
    pub body: Arc<str>,
    /// The change seq. In a [`WriteBatch`], the row's place among the push's changes
    /// (0, 1, …): the store turns it into a change seq as it writes.
    pub changed_at: u64,
    pub conflicted: bool,
    pub deleted: bool,
    /// Whether the row exists already (UPDATE) or is new (INSERT: a concurrent insert of the
    /// same id then fails and the transaction is retried, never overwritten).
    pub existed: bool,
    /// The record's name folded for the office's search ([`crate::forms::search_name`]);
    /// `None` leaves it to be filled in at the next start.
    pub name: Option<String>,
    /// The edits this write applies, "device:seq,…": appended to the record's list.
    pub edits: String,
}

/// The edits a push consumed, as received: one row of the edit log (the audit trail, and how
/// a repeat is told from a reused seq).
#[derive(Clone, Debug)]
pub struct PushLog {
    /// The JSON array of the edits with seqs `first_seq..=last_seq`, each as the phone sent it,
    /// packed.
    pub edits: PackedEdits,
    /// JSON array of the seqs among them that were refused.
    pub refused: String,
}

impl PushLog {
    /// The log of consecutive edits, given in seq order with whether each was refused. The
    /// edits come packed already when `packed` holds exactly them; otherwise they are packed
    /// here.
    pub fn new(edits: &[(u64, &str, bool)], packed: Option<&PackedEdits>) -> Option<Self> {
        let (first, last) = (edits.first()?.0, edits.last()?.0);
        let edits_packed = match packed {
            Some(p) if (p.first_seq, p.last_seq) == (first, last) => p.clone(),
            _ => PackedEdits::pack(edits.iter().map(|(seq, text, _)| (*seq, *text)))?,
        };
        let mut refused = String::from("[");
        for (seq, _, _) in edits.iter().filter(|(_, _, refused)| *refused) {
            if refused.len() > 1 {
                refused.push(',');
            }
            let _ = write!(refused, "{seq}");
        }
        refused.push(']');
        Some(PushLog {
            edits: edits_packed,
            refused,
        })
    }

    pub fn first_seq(&self) -> u64 {
        self.edits.first_seq
    }

    pub fn last_seq(&self) -> u64 {
        self.edits.last_seq
    }
}

/// Consecutive edits of one push as the log keeps them: their JSON array, each edit as the
/// phone sent it, compressed with LZ4 (a block, its length first). The log's text is about as
/// many bytes as the records themselves, and every byte the database stores is also written to
/// its WAL, flushed and copied; packed, the bench's pushes take a tenth of it.
#[derive(Clone, Debug)]
pub struct PackedEdits {
    pub first_seq: u64,
    pub last_seq: u64,
    pub bytes: Vec<u8>,
}

impl PackedEdits {
    /// Edits with consecutive seqs, in order; `None` for none.
    pub fn pack<'a>(edits: impl IntoIterator<Item = (u64, &'a str)>) -> Option<Self> {
        let mut text = String::from("[");
        let (mut first, mut last) = (None, 0);
        for (seq, edit) in edits {
            if first.is_none() {
                first = Some(seq);
            } else {
                text.push(',');
            }
            last = seq;
            text.push_str(edit);
        }
        text.push(']');
        Some(Self {
            first_seq: first?,
            last_seq: last,
            bytes: lz4_flex::compress_prepend_size(text.as_bytes()),
        })
    }
}

/// The JSON text of packed edits. A packed value that does not unpack is an error, not a
/// guess; so is one that claims more than any push could hold, before anything that long is
/// made.
fn unpack(packed: &[u8]) -> Result<String> {
    let broken = |e: String| StoreError::Other(format!("a logged push cannot be unpacked: {e}"));
    let claimed = packed
        .get(..4)
        .map(|n| u32::from_le_bytes([n[0], n[1], n[2], n[3]]))
        .ok_or_else(|| broken("it is shorter than its length".into()))?;
    if claimed > 1 << 30 {
        return Err(broken(format!("it claims {claimed} bytes")));
    }
    let bytes = lz4_flex::decompress_size_prepended(packed).map_err(|e| broken(e.to_string()))?;
    String::from_utf8(bytes).map_err(|e| broken(e.to_string()))
}

/// The edits with the wanted seqs out of a logged push: its `first_seq`, `edits` and `packed`
/// columns. Pushes logged before the log was packed keep their text in `edits`.
pub(crate) fn logged_edits(
    first_seq: u64,
    edits: &str,
    packed: Option<&[u8]>,
    wanted: impl Fn(u64) -> bool,
) -> Result<Vec<(u64, String)>> {
    let unpacked;
    let edits = match packed {
        Some(packed) => {
            unpacked = unpack(packed)?;
            unpacked.as_str()
        }
        None => edits,
    };
    let edits: Vec<&serde_json::value::RawValue> = serde_json::from_str(edits)
        .map_err(|e| StoreError::Other(format!("a logged push is not valid: {e}")))?;
    Ok(edits
        .into_iter()
        .zip(first_seq..)
        .filter(|(_, seq)| wanted(*seq))
        .map(|(text, seq)| (seq, text.get().to_owned()))
        .collect())
}

/// The logged texts of a device's edits with these seqs, read on `conn` from the pushes that
/// cover them (for either backend; `mark` spells the backend's n-th bind placeholder).
pub(crate) async fn stored_edits<DB>(
    conn: &mut DB::Connection,
    device: DeviceId,
    seqs: &[u64],
    mark: fn(usize) -> String,
) -> Result<HashMap<u64, String>>
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'r> (i64, String, Option<Vec<u8>>): sqlx::FromRow<'r, DB::Row>,
{
    let (Some(low), Some(high)) = (seqs.iter().min(), seqs.iter().max()) else {
        return Ok(HashMap::new());
    };
    let sql = format!(
        "SELECT first_seq, edits, packed FROM pushes WHERE device = {} AND first_seq <= {} AND last_seq >= {}",
        mark(1),
        mark(2),
        mark(3)
    );
    let pushes: Vec<(i64, String, Option<Vec<u8>>)> = sqlx::query_as(&sql)
        .bind(device as i64)
        .bind(*high as i64)
        .bind(*low as i64)
        .fetch_all(&mut *conn)
        .await?;
    let wanted: HashSet<u64> = seqs.iter().copied().collect();
    let mut out = HashMap::new();
    for (first, edits, packed) in pushes {
        let wanted = |s| wanted.contains(&s);
        out.extend(logged_edits(
            first as u64,
            &edits,
            packed.as_deref(),
            wanted,
        )?);
    }
    Ok(out)
}

/// The (device, seq) of each edit applied to a record, from its `edits` column.
pub(crate) fn applied_edits(list: &str) -> Vec<(i64, i64)> {
    list.split(',')
        .filter_map(|pair| {
            let (device, seq) = pair.split_once(':')?;
            Some((device.parse().ok()?, seq.parse().ok()?))
        })
        .collect()
}

/// A logged push, as a record's history reads it.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct LoggedPush {
    pub device: i64,
    pub device_name: Option<String>,
    pub first_seq: i64,
    pub last_seq: i64,
    pub edits: String,
    pub packed: Option<Vec<u8>>,
    pub received_at: i64,
}

impl LoggedPush {
    pub(crate) fn holds(&self, device: i64, seq: i64) -> bool {
        self.device == device && (self.first_seq..=self.last_seq).contains(&seq)
    }
}

/// A record's history, read on `conn` (one snapshot, for either backend; `mark` spells the
/// backend's n-th bind placeholder): its applied edits, out of the pushes that hold them, and
/// the edits refused on it, in the order they arrived.
pub(crate) async fn read_history<DB>(
    conn: &mut DB::Connection,
    record: RecordId,
    mark: fn(usize) -> String,
) -> Result<Vec<EditLog>>
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    for<'q> String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'r> (String,): sqlx::FromRow<'r, DB::Row>,
    for<'r> LoggedPush: sqlx::FromRow<'r, DB::Row>,
    for<'r> EditLog: sqlx::FromRow<'r, DB::Row>,
{
    let id = record.to_string();
    let sql = format!("SELECT edits FROM records WHERE id = {}", mark(1));
    let list: Option<(String,)> = sqlx::query_as(&sql)
        .bind(id.clone())
        .fetch_optional(&mut *conn)
        .await?;
    let applied = applied_edits(list.as_ref().map_or("", |(l,)| l.as_str()));
    let sql = format!(
        "SELECT p.device, d.name AS device_name, p.first_seq, p.last_seq, p.edits, p.packed,
                p.received_at
         FROM pushes p LEFT JOIN devices d ON d.id = p.device
         WHERE p.device = {} AND p.first_seq <= {} ORDER BY p.first_seq DESC LIMIT 1",
        mark(1),
        mark(2)
    );
    let mut pushes: Vec<LoggedPush> = Vec::new();
    for &(device, seq) in &applied {
        if !pushes.iter().any(|p| p.holds(device, seq)) {
            pushes.extend(
                sqlx::query_as(&sql)
                    .bind(device)
                    .bind(seq)
                    .fetch_optional(&mut *conn)
                    .await?,
            );
        }
    }
    // A refused edit under a reused seq is another edit than the one logged under it. (The
    // comparison, always true here, is how both backends spell a boolean column.)
    let sql = format!(
        "SELECT j.device, d.name AS device_name, j.seq, j.body, j.code <> 'seq_reused' AS rejected,
                j.received_at
         FROM rejections j LEFT JOIN devices d ON d.id = j.device
         WHERE j.code <> 'seq_reused' AND j.record = {}",
        mark(1)
    );
    let refused: Vec<EditLog> = sqlx::query_as(&sql).bind(id).fetch_all(&mut *conn).await?;
    history(&applied, &pushes, refused)
}

fn history(
    applied: &[(i64, i64)],
    pushes: &[LoggedPush],
    mut refused: Vec<EditLog>,
) -> Result<Vec<EditLog>> {
    let mut out = Vec::with_capacity(applied.len() + refused.len());
    for push in pushes {
        let wanted = |seq: u64| applied.contains(&(push.device, seq as i64));
        let packed = push.packed.as_deref();
        for (seq, body) in logged_edits(push.first_seq as u64, &push.edits, packed, wanted)? {
            out.push(EditLog {
                device: push.device,
                device_name: push.device_name.clone(),
                seq: seq as i64,
                body,
                rejected: false,
                received_at: push.received_at,
            });
        }
    }
    out.append(&mut refused);
    out.sort_by_key(|e| (e.received_at, e.device, e.seq));
    Ok(out)
}

/// An edit refused by a push, with the text the phone sent and the record it named.
#[derive(Clone, Debug)]
pub struct Refused {
    pub rejection: Rejection,
    pub body: Arc<str>,
    pub record: String,
}

/// Everything one sync request writes, in one transaction.
///
/// Change seqs are handed out by the store as it writes, as late in the transaction as it
/// can, so that concurrent pushes wait for each other only for the last writes and the
/// commit: the records carry their place among this push's changes (0, 1, …), and the moves
/// the place of the record that moved.
#[derive(Debug, Default)]
pub struct WriteBatch {
    pub device: DeviceId,
    pub last_seq: u64,
    pub records: Vec<RecordRow>,
    pub log: Option<PushLog>,
    pub rejections: Vec<Refused>,
    /// (record, from commune, to commune, place of the record's change).
    pub moves: Vec<(RecordId, CommuneCode, CommuneCode, u64)>,
    /// What the changed records add to or take from the indicator tables.
    pub cells: Vec<(CellKey, Amount)>,
    pub now: i64,
}

/// A record's move between communes: its provisional commune changed at change `at`.
#[derive(Clone, Debug, PartialEq)]
pub struct Move {
    pub from: CommuneCode,
    pub to: CommuneCode,
    pub at: u64,
}

/// The transaction one push runs in. Implementations lock what they hand out (the device row,
/// the records) until commit, so concurrent pushes serialize where they overlap.
#[async_trait]
pub trait SyncTx: Send {
    /// The device's last consumed seq, locking the device row.
    async fn lock_device(&mut self, device: DeviceId) -> Result<u64>;
    /// The stored bodies of this device's edits with these seqs.
    async fn stored_edits(
        &mut self,
        device: DeviceId,
        seqs: &[u64],
    ) -> Result<HashMap<u64, String>>;
    /// The last consumed seq of each named device.
    async fn device_seqs(&mut self, devices: &[DeviceId]) -> Result<HashMap<DeviceId, u64>>;
    /// Current state of these records, locked for update.
    async fn load_records(&mut self, ids: &[RecordId]) -> Result<HashMap<RecordId, Record>>;
    /// The moves between communes of these records, oldest first.
    async fn record_moves(&mut self, ids: &[RecordId]) -> Result<HashMap<RecordId, Vec<Move>>>;
    /// Write the batch, giving its records the next change seqs: commit order equals seq
    /// order.
    async fn write(&mut self, batch: &WriteBatch) -> Result<()>;
    async fn commit(self: Box<Self>) -> Result<()>;
}

/// The sync path: the push transaction, pulls, refusals, the epoch and backups.
#[async_trait]
pub trait SyncStore: Send + Sync + 'static {
    fn backend(&self) -> &'static str;
    async fn ping(&self) -> Result<()>;
    /// The database's epoch and its change counter (the highest cursor it has handed out).
    async fn epoch(&self) -> Result<Epoch>;
    /// Give the database a new epoch (after a restore) and return it.
    async fn renew_epoch(&self, now: i64) -> Result<String>;
    /// A consistent copy of the whole database in a new file, taken while writes go on.
    /// `Unsupported` where the backend has tools of its own (PostgreSQL).
    async fn backup(&self, to: &std::path::Path) -> Result<()>;
    async fn begin_sync(&self) -> Result<Box<dyn SyncTx>>;
    /// Records in `communes` changed after `cursor`, and records that left them, in change
    /// order, up to `max_bytes` of record JSON (at least one record) or `max_records`.
    async fn pull(
        &self,
        communes: &[CommuneCode],
        cursor: u64,
        max_bytes: u64,
        max_records: usize,
    ) -> Result<Pull>;
    /// The refusals of these devices (every device's when `None`), newest first, from the
    /// `offset`-th on.
    async fn rejections(
        &self,
        devices: Option<&[DeviceId]>,
        offset: u64,
        limit: u32,
    ) -> Result<Vec<StoredRejection>>;
    /// How many refusals these devices have (every device's when `None`).
    async fn count_rejections(&self, devices: Option<&[DeviceId]>) -> Result<u64>;
    /// The stored rejections of a device with seq in `from..=to`.
    async fn rejections_between(
        &self,
        device: DeviceId,
        from: u64,
        to: u64,
    ) -> Result<Vec<Rejection>>;
    /// When these devices last synced with nothing to push, batched: `(device, when)`; a later
    /// time already stored is kept.
    async fn touch_devices(&self, seen: &[(DeviceId, i64)]) -> Result<()>;
}

/// Phones: enrolment, tokens, successors, revocation.
#[async_trait]
pub trait DeviceStore: Send + Sync + 'static {
    /// Create a device awaiting enrolment with its one-time code (hashed).
    async fn add_device(
        &self,
        name: &str,
        communes: &[CommuneCode],
        code_hash: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<DeviceId>;
    /// Exchange an unused, unexpired code for a token (hashed). `NotFound` otherwise.
    async fn enroll(&self, code_hash: &str, token_hash: &str, now: i64) -> Result<Device>;
    async fn device_by_token(&self, token_hash: &str) -> Result<Option<Device>>;
    async fn devices(&self) -> Result<Vec<DeviceSummary>>;
    async fn revoke(&self, device: DeviceId, now: i64) -> Result<()>;
    /// A successor of `old` (not revoked): the same name and communes under a new number,
    /// enrolled with `token_hash`. The same `request` again names the same successor, whose
    /// token becomes `token_hash`. At most [`MAX_SUCCESSORS`] per device.
    async fn add_successor(
        &self,
        old: DeviceId,
        request: &str,
        token_hash: &str,
        now: i64,
    ) -> Result<Device>;
    /// One device, whether enrolled or not.
    async fn device(&self, id: DeviceId) -> Result<Option<Device>>;
}

/// Office accounts, sign-ins, sessions and read tokens.
#[async_trait]
pub trait AccountStore: Send + Sync + 'static {
    /// Store a read token (hashed) with its scope (JSON).
    async fn add_api_token(
        &self,
        name: &str,
        token_hash: &str,
        scope: &str,
        now: i64,
    ) -> Result<i64>;
    /// The scope (JSON) of an unrevoked read token.
    async fn api_token_scope(&self, token_hash: &str) -> Result<Option<String>>;
    /// Create an office account and the device its edits carry. `Conflict` if the name is
    /// taken.
    async fn add_user(&self, user: &NewUser<'_>, now: i64) -> Result<User>;
    async fn user_by_name(&self, name: &str) -> Result<Option<User>>;
    async fn users(&self) -> Result<Vec<User>>;
    /// Replace a password (hashed) and lift any lockout. `NotFound` for an unknown name.
    async fn set_password(&self, name: &str, password_hash: &str) -> Result<()>;
    /// Count a failed sign-in, locking the account once `lockout.after` failures are reached.
    async fn login_failed(&self, user: i64, lockout: Lockout, now: i64) -> Result<()>;
    async fn login_succeeded(&self, user: i64, now: i64) -> Result<()>;
    /// Keep a sign-in attempt: who, whether it succeeded, why it was refused.
    async fn log_login(&self, name: &str, reason: Option<&str>, now: i64) -> Result<()>;
    /// The latest refused sign-ins: (name tried, reason, when), newest first.
    async fn refused_logins(&self, limit: u32) -> Result<Vec<(String, String, i64)>>;
    /// An OpenRosa document (see migration 0013): its record and body.
    async fn openrosa(&self, kind: &str, key: &str) -> Result<Option<(String, String)>>;
    /// Writes OpenRosa documents `(kind, key, record, body)`, replacing those with their keys,
    /// all at once.
    async fn put_openrosa(&self, rows: &[(&str, String, String, String)]) -> Result<()>;
    /// The OpenRosa documents of one kind about one record: `(key, body)`, by key.
    async fn openrosa_of(&self, kind: &str, record: &str) -> Result<Vec<(String, String)>>;
    /// Every OpenRosa document of one kind: `(key, body)`.
    async fn openrosa_all(&self, kind: &str) -> Result<Vec<(String, String)>>;
    /// Keeps an attachment upload refused.
    async fn add_upload_refusal(
        &self,
        device: DeviceId,
        sha256: &str,
        code: &str,
        message: &str,
        now: i64,
    ) -> Result<()>;
    /// The latest upload refusals of these devices (all with `None`), newest first.
    async fn upload_refusals(
        &self,
        devices: Option<&[DeviceId]>,
        limit: u32,
    ) -> Result<Vec<UploadRefusal>>;
    /// The latest sign-in attempts under one name: (reason refused, or none; when), newest
    /// first.
    async fn logins_of(&self, name: &str, limit: u32) -> Result<Vec<(Option<String>, i64)>>;
    /// Store a session (its token hashed) with its CSRF token.
    async fn add_session(
        &self,
        token_hash: &str,
        user: i64,
        csrf: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<()>;
    /// The account and CSRF token of an unexpired session.
    async fn session(&self, token_hash: &str, now: i64) -> Result<Option<(User, String)>>;
    async fn end_session(&self, token_hash: &str) -> Result<()>;
}

/// Published form versions and village lists.
#[async_trait]
pub trait FormStore: Send + Sync + 'static {
    /// Every published form version, as stored JSON.
    async fn published_forms(&self) -> Result<Vec<String>>;
    /// Store a new form version. `Conflict` if that version exists already.
    async fn publish_form(&self, id: &str, version: u32, body: &str, now: i64) -> Result<()>;
    /// Replace a commune's village list.
    async fn set_villages(&self, commune: &CommuneCode, names: &[String]) -> Result<()>;
    /// The village lists of these communes.
    async fn villages(&self, communes: &[CommuneCode]) -> Result<BTreeMap<String, Vec<String>>>;
}

/// Reading records: one, by form and commune, by query, and their edit history.
#[async_trait]
pub trait RecordStore: Send + Sync + 'static {
    async fn record(&self, id: RecordId) -> Result<Option<Record>>;
    /// Every record, for checks and exports.
    async fn all_records(&self) -> Result<Vec<Record>>;
    /// The records of these forms in these communes.
    async fn records_of(&self, forms: &[String], communes: &[String]) -> Result<Vec<Record>>;
    /// A page of the records a query matches, newest first, and how many match in all.
    async fn find_records(&self, query: &RecordQuery) -> Result<(Vec<Record>, u64)>;
    /// A page of the records a query matches, newest first, without counting them all.
    async fn list_records(&self, query: &RecordQuery) -> Result<Vec<Record>>;
    /// Every edit received for a record, oldest first, with the name of its device.
    async fn record_edits(&self, record: RecordId) -> Result<Vec<EditLog>>;
    /// Up to `limit` records whose search name is not filled in (written before it was kept).
    async fn unnamed_records(&self, limit: u32) -> Result<Vec<Record>>;
    /// Fill in records' search names, where a write has not filled them in meanwhile. Returns
    /// how many it filled in.
    async fn set_names(&self, names: &[(RecordId, String)]) -> Result<u64>;
}

/// The stored indicator tables.
#[async_trait]
pub trait CellStore: Send + Sync + 'static {
    /// Indicator cells of one period (or all), rows whose records add up to zero left out.
    async fn cells(&self, period: Option<&str>) -> Result<Vec<(CellKey, Amount)>>;
    /// Replace every indicator cell (a rebuild), in one transaction.
    async fn replace_cells(&self, cells: &[(CellKey, Amount)]) -> Result<()>;
    /// Derive every record's computed fields again with `derive` (rewriting the bodies it
    /// changes, each only if no push changed it since it was read, and with no new change
    /// number: phones compute derived fields themselves), then replace every indicator cell
    /// with what `build` makes of the records as `derive` derives them, reading the records
    /// and writing the cells in one transaction that no push can commit into: a push either
    /// lands before the read (and counts) or after the write (and adds its deltas).
    async fn rebuild_cells(
        &self,
        derive: &Rederive<'_>,
        build: &CellBuilder<'_>,
    ) -> Result<Rebuilt>;
    /// A fact kept in the database's `meta` table.
    async fn meta(&self, name: &str) -> Result<Option<String>>;
    async fn set_meta(&self, name: &str, value: &str) -> Result<()>;
}

/// What `mam bench ingest` needs and production never calls: raw upserts, emptying the
/// records, settling deferred work. Not part of [`Store`].
#[async_trait]
pub trait BenchStore: Send + Sync + 'static {
    /// Batched upserts of whole records with no sync logic: the ceiling `mam bench ingest`
    /// measures the sync path against.
    async fn bench_upsert(&self, rows: &[RecordRow]) -> Result<()>;
    /// Empty the records table, so that the sync half of `mam bench ingest` starts from the
    /// same empty store as the raw half. Only for a database the bench found empty.
    async fn bench_clear(&self) -> Result<()>;
    /// Finish the work a backend defers after its commits, so that each half of `mam bench
    /// ingest` pays for its own writes: SQLite copies its WAL into the database file (which its
    /// commits otherwise do now and then, landing in whichever half crosses the threshold);
    /// PostgreSQL checkpoints in a process of its own, and has nothing to do here.
    async fn bench_settle(&self) -> Result<()>;
    /// After a bulk load, the planner's statistics brought up to date, as an administrator does
    /// after loading a dump and as PostgreSQL's autovacuum does by itself within a minute or
    /// so: without them PostgreSQL plans for an empty table (a page of a million records took
    /// 1.3 s instead of half a millisecond). SQLite plans by its indexes and has nothing to do.
    async fn bench_analyze(&self) -> Result<()>;
}

/// Everything the server stores, by concern; each backend implements every part.
pub trait Store:
    SyncStore + DeviceStore + AccountStore + FormStore + RecordStore + CellStore
{
}

impl<T: SyncStore + DeviceStore + AccountStore + FormStore + RecordStore + CellStore> Store for T {}

pub type DynStore = Arc<dyn Store>;

/// Open the store the settings name: PostgreSQL for a `postgres://` URL, else SQLite.
pub async fn open(settings: &crate::config::Settings) -> anyhow::Result<DynStore> {
    Ok(open_for_bench(settings).await?.0)
}

/// [`open`], with the same store also as the [`BenchStore`] that `mam bench` drives.
pub async fn open_for_bench(
    settings: &crate::config::Settings,
) -> anyhow::Result<(DynStore, Arc<dyn BenchStore>)> {
    fn both<S: Store + BenchStore>(store: S) -> (DynStore, Arc<dyn BenchStore>) {
        let store = Arc::new(store);
        (store.clone(), store)
    }
    let limits = sqlite::GroupLimits {
        max_pushes: settings.storage.group_max_pushes.max(1),
        max_wait: std::time::Duration::from_millis(settings.storage.group_max_ms),
    };
    match settings.database.url.as_deref() {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => Ok(
            both(postgres::PgStore::connect(url, settings.database.max_connections).await?),
        ),
        Some(url) if url.starts_with("sqlite:") => {
            Ok(both(sqlite::SqliteStore::open_url(url, limits).await?))
        }
        Some(other) => anyhow::bail!(
            "database url must start with postgres:// or sqlite: (got a url of scheme {:?})",
            other.split(':').next().unwrap_or("")
        ),
        None => {
            let dir = &settings.storage.data_dir;
            std::fs::create_dir_all(dir)
                .map_err(|e| anyhow::anyhow!("cannot create data dir {}: {e}", dir.display()))?;
            Ok(both(
                sqlite::SqliteStore::open_file(&dir.join("mam.db"), limits).await?,
            ))
        }
    }
}

/// A record as wire JSON, written into a buffer sized for it up front: growing it step by step
/// would copy the text several times over.
pub(crate) fn encode_record(record: &Record) -> String {
    fn value_len(value: &Value) -> usize {
        match value {
            Value::String(s) => s.len() + 8,
            Value::Number(_) => 24,
            Value::Bool(_) | Value::Null => 5,
            Value::Array(_) | Value::Object(_) => 64,
        }
    }
    let fields: usize = record
        .fields
        .iter()
        .map(|(name, register)| {
            name.len() + 6 + register.values().map(|v| value_len(v) + 48).sum::<usize>()
        })
        .sum();
    let derived: usize = record
        .derived
        .iter()
        .map(|(name, value)| name.len() + 6 + value_len(value))
        .sum();
    let mut body = Vec::with_capacity(192 + fields + derived);
    serde_json::to_writer(&mut body, record).expect("records always serialize");
    String::from_utf8(body).expect("serde_json writes UTF-8")
}

/// The part of a record row both backends derive the same way.
pub fn record_row(record: &Record, changed_at: u64, existed: bool) -> RecordRow {
    RecordRow {
        id: record.id,
        form: record.form.to_string(),
        version: record.version,
        commune: record.commune.to_string(),
        body: encode_record(record).into(),
        changed_at,
        conflicted: record.is_conflicted(),
        deleted: record.is_deleted(),
        existed,
        name: None,
        edits: String::new(),
    }
}

/// An `INSERT` of refused edits with their reasons and bodies, for either backend's query
/// builder.
/// The `WHERE` that keeps the refusals of these devices (all when `None`). The numbers are
/// written out: they are device numbers, not text from a request.
pub(crate) fn of_devices(devices: Option<&[DeviceId]>) -> String {
    match devices {
        None => String::new(),
        Some([]) => " WHERE 1 = 0".to_owned(),
        Some(list) => {
            let ids: Vec<String> = list.iter().map(u32::to_string).collect();
            format!(" WHERE device IN ({})", ids.join(","))
        }
    }
}

pub(crate) fn push_rejections<'a, DB>(
    q: &mut sqlx::QueryBuilder<'a, DB>,
    device: DeviceId,
    rejections: &[Refused],
    now: i64,
) where
    DB: sqlx::Database,
    i64: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    String: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    Option<String>: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    q.push("INSERT INTO rejections (device, seq, code, field, rule, message, message_vi, body, record, received_at) ");
    q.push_values(
        rejections,
        |mut b,
         Refused {
             rejection: r,
             body,
             record,
         }| {
            b.push_bind(device as i64)
                .push_bind(r.seq as i64)
                .push_bind(r.code.as_str().to_owned())
                .push_bind(r.field.clone())
                .push_bind(r.rule.clone())
                .push_bind(r.message.clone())
                .push_bind(r.message_vi.clone())
                .push_bind(body.to_string())
                .push_bind(record.clone())
                .push_bind(now);
        },
    );
}

/// Cuts rows into a page of at most `max_bytes` (at least one record) and `max_records`.
pub(crate) fn page(
    rows: impl Iterator<Item = Result<(String, u64)>>,
    max_bytes: u64,
    max_records: usize,
) -> Result<(Vec<String>, u64, bool)> {
    let mut records = Vec::new();
    let mut bytes = 0u64;
    let mut last = 0;
    for row in rows {
        let (body, changed_at) = row?;
        let size = body.len() as u64 + 1;
        if records.len() == max_records || (!records.is_empty() && bytes + size > max_bytes) {
            return Ok((records, last, true));
        }
        bytes += size;
        last = changed_at;
        records.push(body);
    }
    Ok((records, last, false))
}

/// Rows as both backends read them: one mapping into domain types, whatever the database.
pub(crate) mod rows {
    use super::cells::{DENOMINATOR, NUMERATOR, PENDING};
    use super::*;
    use sync_protocol::RejectCode;

    #[derive(sqlx::FromRow)]
    pub struct DeviceRow {
        id: i64,
        name: String,
        communes: String,
        revoked_at: Option<i64>,
        last_seq: i64,
    }

    impl From<DeviceRow> for Device {
        fn from(r: DeviceRow) -> Device {
            Device {
                id: r.id as DeviceId,
                name: r.name,
                communes: parse_communes(&r.communes),
                revoked: r.revoked_at.is_some(),
                last_seq: r.last_seq as u64,
            }
        }
    }

    #[derive(sqlx::FromRow)]
    pub struct SummaryRow {
        id: i64,
        name: String,
        communes: String,
        enrolled: bool,
        revoked: bool,
        last_seq: i64,
        last_sync_at: Option<i64>,
        rejected: i64,
        predecessor: Option<i64>,
        restored_seq: Option<i64>,
        lost: i64,
    }

    impl From<SummaryRow> for DeviceSummary {
        fn from(r: SummaryRow) -> DeviceSummary {
            DeviceSummary {
                id: r.id as DeviceId,
                name: r.name,
                communes: parse_communes(&r.communes)
                    .into_iter()
                    .map(String::from)
                    .collect(),
                enrolled: r.enrolled,
                revoked: r.revoked,
                last_seq: r.last_seq as u64,
                last_sync_at: r.last_sync_at,
                rejected: r.rejected as u64,
                predecessor: r.predecessor.map(|p| p as DeviceId),
                restored_seq: r.restored_seq.map(|s| s as u64),
                lost: r.lost as u64,
            }
        }
    }

    #[derive(sqlx::FromRow)]
    pub struct RejectionRow {
        seq: i64,
        code: String,
        field: Option<String>,
        rule: Option<String>,
        message: String,
        message_vi: Option<String>,
    }

    impl From<RejectionRow> for Rejection {
        fn from(r: RejectionRow) -> Rejection {
            Rejection {
                seq: r.seq as u64,
                code: RejectCode::from_text(&r.code),
                field: r.field,
                message: r.message,
                message_vi: r.message_vi,
                rule: r.rule,
            }
        }
    }

    #[derive(sqlx::FromRow)]
    pub struct StoredRejectionRow {
        device: i64,
        #[sqlx(flatten)]
        rejection: RejectionRow,
        body: String,
        received_at: i64,
    }

    impl TryFrom<StoredRejectionRow> for StoredRejection {
        type Error = StoreError;
        fn try_from(r: StoredRejectionRow) -> Result<StoredRejection> {
            let rejection = Rejection::from(r.rejection);
            Ok(StoredRejection {
                device: r.device as DeviceId,
                seq: rejection.seq,
                code: rejection.code.to_string(),
                field: rejection.field,
                rule: rejection.rule,
                message: rejection.message,
                message_vi: rejection.message_vi,
                edit: RawValue::from_string(r.body)
                    .map_err(|e| StoreError::Other(format!("stored edit is not JSON: {e}")))?,
                received_at: r.received_at,
            })
        }
    }

    #[derive(sqlx::FromRow)]
    pub struct CellRow {
        indicator: String,
        part: String,
        commune: String,
        period: String,
        value: i64,
        records: i64,
        conflicted: i64,
    }

    impl From<CellRow> for (CellKey, Amount) {
        fn from(r: CellRow) -> (CellKey, Amount) {
            let part = match r.part.as_str() {
                NUMERATOR => NUMERATOR,
                PENDING => PENDING,
                _ => DENOMINATOR,
            };
            (
                CellKey {
                    indicator: r.indicator,
                    part,
                    commune: r.commune,
                    period: r.period,
                },
                Amount {
                    value: r.value,
                    records: r.records,
                    conflicted: r.conflicted,
                },
            )
        }
    }
}

pub(crate) fn parse_id(text: &str) -> Result<RecordId> {
    RecordId::parse(text).map_err(|e| StoreError::Other(format!("stored record id: {e}")))
}

pub(crate) fn parse_move(from: &str, to: &str, at: i64) -> Result<Move> {
    let code =
        |c: &str| CommuneCode::parse(c).map_err(|e| StoreError::Other(format!("stored move: {e}")));
    Ok(Move {
        from: code(from)?,
        to: code(to)?,
        at: at as u64,
    })
}

pub(crate) fn communes_text(communes: &[CommuneCode]) -> String {
    communes
        .iter()
        .map(|c| c.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

pub(crate) fn parse_communes(text: &str) -> Vec<CommuneCode> {
    text.split(',')
        .filter_map(|c| CommuneCode::parse(c).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const EDITS: [(u64, &str, bool); 3] = [
        (7, r#"{"seq":7,"note":"Gia đình đã nhận thẻ"}"#, false),
        (8, r#"{"seq":8}"#, true),
        (9, r#"{"seq":9,"note":"ok"}"#, false),
    ];

    fn text(log: &PushLog) -> String {
        unpack(&log.edits.bytes).expect("unpacks")
    }

    #[test]
    fn a_logged_push_unpacks_to_the_edits_as_received() {
        let log = PushLog::new(&EDITS, None).expect("a log");
        assert_eq!((log.first_seq(), log.last_seq()), (7, 9));
        assert_eq!(log.refused, "[8]");
        assert_eq!(
            logged_edits(7, "", Some(&log.edits.bytes), |seq| seq != 8).expect("valid"),
            [(7, EDITS[0].1.to_owned()), (9, EDITS[2].1.to_owned())]
        );
    }

    #[test]
    fn edits_packed_ahead_are_used_only_for_the_same_seqs() {
        let ahead = PackedEdits::pack(EDITS.iter().map(|(s, t, _)| (*s, *t))).expect("packed");
        let all = PushLog::new(&EDITS, Some(&ahead)).expect("a log");
        assert_eq!(all.edits.bytes, ahead.bytes);
        // The push consumed fewer edits than it carried (a gap): the log is packed anew.
        let fewer = PushLog::new(&EDITS[..2], Some(&ahead)).expect("a log");
        assert_eq!((fewer.first_seq(), fewer.last_seq()), (7, 8));
        assert_eq!(text(&fewer), format!("[{},{}]", EDITS[0].1, EDITS[1].1));
        assert!(PushLog::new(&[], Some(&ahead)).is_none());
    }

    #[test]
    fn a_push_logged_as_text_reads_as_it_was_and_a_broken_one_is_an_error() {
        let old = r#"[{"seq":1},{"seq":2}]"#;
        assert_eq!(
            logged_edits(1, old, None, |seq| seq == 2).expect("text"),
            [(2, r#"{"seq":2}"#.to_owned())]
        );
        let everything = |_| true;
        assert!(logged_edits(1, "", Some(&[1, 0]), everything).is_err());
        let huge = [0xff, 0xff, 0xff, 0xff, 0];
        assert!(logged_edits(1, "", Some(&huge), everything).is_err());
        let mut packed = PackedEdits::pack([(1, "{}")]).expect("packed").bytes;
        packed.truncate(packed.len() - 1);
        assert!(logged_edits(1, "", Some(&packed), everything).is_err());
    }
}
