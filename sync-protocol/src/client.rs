//! The phone's side of sync, as pure logic: the model for any phone app and the simulated
//! phones of the server's tests.
//!
//! A phone holds records as last pulled and a queue of its own pending edits, numbered 1, 2, 3…
//! What it shows is the pulled state with the pending edits applied on top. An edit's
//! `supersedes` are the dots of the siblings the phone showed for that field, so the phone needs
//! no CRDT of its own: it echoes dots.
//!
//! ```
//! use serde_json::json;
//! use sync_protocol::{Client, CommuneCode, FormId, RecordId};
//!
//! let mut phone = Client::new(7);
//! let id = RecordId::new_v7();
//! let form = FormId::parse("birth-registration").unwrap();
//! let commune = CommuneCode::parse("19753").unwrap();
//! phone.create(id, &form, 1, &commune, [("child_name", json!("Lan"))]);
//! let request = phone.sync_request();
//! assert_eq!(request.push.len(), 1);
//! assert_eq!(request.push[0].seq, 1);
//! // Nothing is dropped until the server acknowledges it.
//! assert_eq!(phone.view(id).unwrap().value("child_name"), Some(&json!("Lan")));
//! ```

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::dot::DeviceId;
use crate::ids::{CommuneCode, FormId, RecordId, COMMUNE_FIELD, DELETED_FIELD};
use crate::record::Record;
use crate::wire::{
    Edit, FieldEdit, RejectCode, Rejection, SyncRequest, SyncResponse, DEFAULT_MAX_BYTES,
    PROTOCOL_VERSION,
};

/// Edits sent in one request at most; the server refuses larger batches.
pub const DEFAULT_MAX_PUSH: usize = 500;

/// An edit the server refused, kept on the phone with the reason until the person has seen it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RejectedEdit {
    pub edit: Edit,
    pub rejection: Rejection,
}

/// How long a phone keeps an acknowledged edit, to push it again should the server's database
/// be restored from a backup that predates it: 30 days.
pub const DEFAULT_RETENTION_MS: i64 = 30 * 24 * 3600 * 1000;

/// Acknowledged edits kept at most, whatever their age.
pub const MAX_KEPT: usize = 50_000;

/// An acknowledged edit, kept for the retention period.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KeptEdit {
    pub edit: Edit,
    /// When the acknowledgement came, in the phone's milliseconds ([`Client::set_now`]).
    pub acked_at: i64,
}

/// A phone's sync state. Serializable, so a phone can persist it between runs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Client {
    device: DeviceId,
    next_seq: u64,
    cursor: u64,
    /// Records as the server last sent them.
    pulled: BTreeMap<RecordId, Record>,
    /// Edits not yet acknowledged, in seq order.
    pending: Vec<Edit>,
    /// Acknowledged edits whose record has not been pulled since: still shown, so the phone
    /// never supersedes around its own edit while a paged pull is under way.
    acked_unpulled: Vec<Edit>,
    rejected: Vec<RejectedEdit>,
    forms: BTreeMap<String, u32>,
    max_push: usize,
    max_bytes: u64,
    /// The database epoch the cursor belongs to.
    #[serde(default)]
    epoch: Option<String>,
    /// The seqs of the edits the last request carried: only those can be acknowledged by
    /// its response.
    #[serde(default)]
    in_flight: Vec<u64>,
    /// Consumed edits of this device number (applied or refused), oldest first, kept for the
    /// retention period.
    #[serde(default)]
    kept: Vec<KeptEdit>,
    /// The highest seq the server ever acknowledged to this device number.
    #[serde(default)]
    acked_max: u64,
    /// Seqs the server lost in a restore that this phone no longer holds: told to the server
    /// with the next request, which consumes them as lost.
    #[serde(default)]
    lost_through: Option<u64>,
    /// The server holds another history under this device number: take a successor
    /// ([`Client::adopt_successor`]) before syncing again.
    #[serde(default)]
    successor_needed: bool,
    /// A pull from the start is under way: its pages replace every pulled record.
    #[serde(default)]
    resetting: bool,
    #[serde(default = "default_retention")]
    retention_ms: i64,
    #[serde(default)]
    now_ms: i64,
}

fn default_retention() -> i64 {
    DEFAULT_RETENTION_MS
}

impl Client {
    pub fn new(device: DeviceId) -> Self {
        Self {
            device,
            next_seq: 1,
            max_push: DEFAULT_MAX_PUSH,
            max_bytes: DEFAULT_MAX_BYTES,
            retention_ms: DEFAULT_RETENTION_MS,
            ..Self::default()
        }
    }

    /// The phone's clock, in milliseconds, for the retention of acknowledged edits. A client
    /// never told the time keeps them by count alone ([`MAX_KEPT`]).
    pub fn set_now(&mut self, now_ms: i64) {
        self.now_ms = now_ms;
    }

    /// How long acknowledged edits are kept (default [`DEFAULT_RETENTION_MS`]).
    pub fn with_retention(mut self, retention_ms: i64) -> Self {
        self.retention_ms = retention_ms;
        self
    }

    /// Whether the server holds another history under this device number (the phone was
    /// restored from a backup, or its data copied to another phone). The phone asks for a
    /// successor identity (`POST /v1/successor`) and gives it to [`Client::adopt_successor`].
    pub fn successor_needed(&self) -> bool {
        self.successor_needed
    }

    /// Become the successor device: every pending edit is numbered again from 1 under the new
    /// device number, in the same order, each keeping the supersedes it was made with (its own
    /// earlier pending edits renamed to their new dots). Nothing pending is dropped.
    pub fn adopt_successor(&mut self, device: DeviceId) {
        if device == self.device {
            return;
        }
        let old = self.device;
        let renumbered: BTreeMap<u64, u64> = self
            .pending
            .iter()
            .enumerate()
            .map(|(i, e)| (e.seq, i as u64 + 1))
            .collect();
        for edit in &mut self.pending {
            edit.seq = renumbered[&edit.seq];
            for change in edit.fields.values_mut() {
                for dot in &mut change.supersedes {
                    if dot.device == old {
                        if let Some(&seq) = renumbered.get(&dot.seq) {
                            *dot = crate::Dot::new(device, seq);
                        }
                    }
                }
            }
        }
        // The old number's acknowledged edits are the server's now; a restore of them is the
        // old number's to repair.
        self.acked_unpulled.clear();
        self.kept.clear();
        self.device = device;
        self.next_seq = self.pending.len() as u64 + 1;
        self.acked_max = 0;
        self.lost_through = None;
        self.in_flight.clear();
        self.successor_needed = false;
    }

    /// Seqs the phone will declare lost with its next push, if a restore lost them.
    pub fn lost_through(&self) -> Option<u64> {
        self.lost_through
    }

    /// Acknowledged edits still kept, oldest first.
    pub fn kept(&self) -> &[KeptEdit] {
        &self.kept
    }

    /// The database epoch the phone's cursor belongs to.
    pub fn epoch(&self) -> Option<&str> {
        self.epoch.as_deref()
    }

    /// Limits for the requests this client builds.
    pub fn with_limits(mut self, max_push: usize, max_bytes: u64) -> Self {
        self.max_push = max_push.max(1);
        self.max_bytes = max_bytes;
        self
    }

    pub fn device(&self) -> DeviceId {
        self.device
    }

    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    pub fn pending(&self) -> &[Edit] {
        &self.pending
    }

    pub fn rejected(&self) -> &[RejectedEdit] {
        &self.rejected
    }

    /// Form versions the server last announced.
    pub fn forms(&self) -> &BTreeMap<String, u32> {
        &self.forms
    }

    /// The record as the phone shows it: as pulled, with this phone's unacknowledged edits on
    /// top.
    pub fn view(&self, id: RecordId) -> Option<Record> {
        let mut record = self.pulled.get(&id).cloned();
        for edit in self.acked_unpulled.iter().chain(&self.pending) {
            let Ok(checked) = edit.check() else { continue };
            if checked.record != id {
                continue;
            }
            let record = record.get_or_insert_with(|| Record::from_edit(&checked));
            record.apply(self.device, checked, &|_| false);
        }
        record
    }

    /// Every record the phone shows.
    pub fn records(&self) -> Vec<Record> {
        let ids: BTreeSet<RecordId> = self
            .pulled
            .keys()
            .copied()
            .chain(
                self.acked_unpulled
                    .iter()
                    .chain(&self.pending)
                    .filter_map(|e| RecordId::parse(&e.record).ok()),
            )
            .collect();
        ids.into_iter().filter_map(|id| self.view(id)).collect()
    }

    /// Start a new record.
    pub fn create<'a>(
        &mut self,
        id: RecordId,
        form: &FormId,
        version: u32,
        commune: &CommuneCode,
        values: impl IntoIterator<Item = (&'a str, Value)>,
    ) -> u64 {
        let edit = Edit {
            seq: self.take_seq(),
            record: id.to_string(),
            form: form.to_string(),
            version,
            commune: commune.to_string(),
            fields: values
                .into_iter()
                .map(|(name, value)| {
                    (
                        name.to_owned(),
                        FieldEdit {
                            value,
                            supersedes: vec![],
                        },
                    )
                })
                .collect(),
        };
        self.push(edit)
    }

    /// Change fields of a record the phone shows. Each field supersedes exactly the siblings
    /// shown, so setting a field in conflict is its resolution. Returns the edit's seq, or
    /// `None` when the phone does not hold the record.
    pub fn edit<'a>(
        &mut self,
        id: RecordId,
        values: impl IntoIterator<Item = (&'a str, Value)>,
    ) -> Option<u64> {
        let record = self.view(id)?;
        let fields = values
            .into_iter()
            .map(|(name, value)| {
                (
                    name.to_owned(),
                    FieldEdit {
                        value,
                        supersedes: record.dots(name),
                    },
                )
            })
            .collect();
        Some(self.push_for(&record, fields))
    }

    /// Change fields of a record with the dots each one showed when the person began: what a
    /// draft opened earlier saves. `opened` is the record as the draft showed it. Each field
    /// supersedes exactly the dots given for it, so a value that arrived after the draft was
    /// opened stays beside the new one as a conflict. The draft is saved even when the record
    /// is no longer on the phone (a server restored from a backup has not got it back yet):
    /// the edit goes under the record as it was opened, and the server files it or refuses it
    /// visibly, never the phone silently.
    pub fn edit_from<'a>(
        &mut self,
        opened: &Record,
        values: impl IntoIterator<Item = (&'a str, Value, Vec<crate::Dot>)>,
    ) -> u64 {
        let record = self.view(opened.id).unwrap_or_else(|| opened.clone());
        let fields = values
            .into_iter()
            .map(|(name, value, supersedes)| (name.to_owned(), FieldEdit { value, supersedes }))
            .collect();
        self.push_for(&record, fields)
    }

    /// Move a record to another commune (the family moved): the edit writes the commune
    /// register over the communes the phone shows, so a move made elsewhere meanwhile stays
    /// beside this one as a conflict for a person to settle.
    pub fn move_to(&mut self, id: RecordId, commune: &CommuneCode) -> Option<u64> {
        let mut record = self.view(id)?;
        let change = FieldEdit {
            value: Value::String(commune.to_string()),
            supersedes: record.dots(COMMUNE_FIELD),
        };
        record.commune = commune.clone();
        let fields = BTreeMap::from([(COMMUNE_FIELD.to_owned(), change)]);
        Some(self.push_for(&record, fields))
    }

    /// Delete a record: `_deleted` becomes true and every field the phone shows becomes
    /// `null`, so an edit made elsewhere meanwhile surfaces as a conflict instead of vanishing.
    pub fn delete(&mut self, id: RecordId) -> Option<u64> {
        let record = self.view(id)?;
        // Every field but the commune, which says where the deleted record stays.
        let mut fields: BTreeMap<String, FieldEdit> = record
            .fields
            .keys()
            .filter(|name| *name != COMMUNE_FIELD)
            .map(|name| {
                (
                    name.clone(),
                    FieldEdit {
                        value: Value::Null,
                        supersedes: record.dots(name),
                    },
                )
            })
            .collect();
        fields.insert(
            DELETED_FIELD.to_owned(),
            FieldEdit {
                value: Value::Bool(true),
                supersedes: record.dots(DELETED_FIELD),
            },
        );
        Some(self.push_for(&record, fields))
    }

    fn push_for(&mut self, record: &Record, fields: BTreeMap<String, FieldEdit>) -> u64 {
        let edit = Edit {
            seq: self.take_seq(),
            record: record.id.to_string(),
            form: record.form.to_string(),
            version: record.version,
            commune: record.commune.to_string(),
            fields,
        };
        self.push(edit)
    }

    fn take_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    fn push(&mut self, edit: Edit) -> u64 {
        let seq = edit.seq;
        self.pending.push(edit);
        seq
    }

    /// The next request: the oldest pending edits (at most `max_push`), the cursor and its
    /// epoch. Sending the same request again after a failure is always safe. While a successor
    /// is needed the request pushes nothing (it still pulls).
    pub fn sync_request(&mut self) -> SyncRequest {
        let push: Vec<Edit> = match self.successor_needed {
            true => Vec::new(),
            false => self.pending.iter().take(self.max_push).cloned().collect(),
        };
        self.in_flight = push.iter().map(|e| e.seq).collect();
        SyncRequest {
            protocol: PROTOCOL_VERSION,
            push,
            cursor: self.cursor,
            max_bytes: self.max_bytes,
            epoch: self.epoch.clone(),
            lost_through: self.lost_through,
        }
    }

    /// Take in a response: drop acknowledged edits (keeping them for the retention period),
    /// keep rejected ones with their reason, replace pulled records, forget evicted ones.
    /// Pending edits stay and keep showing on top.
    pub fn apply_response(&mut self, response: &SyncResponse) {
        let acked = response.acked_through;
        let in_flight = std::mem::take(&mut self.in_flight);
        let sent = |seq: u64| in_flight.contains(&seq);
        // The server consumed seqs this phone never sent: another history holds this number.
        let forked = response
            .rejected
            .iter()
            .any(|r| r.code == RejectCode::SeqReused && sent(r.seq))
            || self.pending.iter().any(|e| e.seq <= acked && !sent(e.seq));
        let (done, still_pending): (Vec<Edit>, Vec<Edit>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|e| e.seq <= acked && sent(e.seq));
        self.pending = still_pending;
        let mut back = Vec::new();
        for edit in done {
            match response.rejected.iter().find(|r| r.seq == edit.seq) {
                // The server holds another edit under this seq: nothing is wrong with this
                // one, it goes again under a successor's number.
                Some(r) if r.code == RejectCode::SeqReused => back.push(edit),
                Some(rejection) => {
                    // Kept too: a server restored from a backup gets every consumed seq again,
                    // so that it never waits behind a gap.
                    self.kept.push(KeptEdit {
                        edit: edit.clone(),
                        acked_at: self.now_ms,
                    });
                    self.rejected.retain(|r| r.edit.seq != edit.seq);
                    self.rejected.push(RejectedEdit {
                        edit,
                        rejection: rejection.clone(),
                    });
                }
                None => {
                    self.kept.push(KeptEdit {
                        edit: edit.clone(),
                        acked_at: self.now_ms,
                    });
                    self.acked_unpulled.push(edit);
                }
            }
        }
        if !back.is_empty() {
            self.pending.extend(back);
            self.pending.sort_by_key(|e| e.seq);
        }
        if forked {
            self.successor_needed = true;
        } else {
            // A phone must never reuse a seq the server consumed.
            self.next_seq = self.next_seq.max(acked + 1);
        }
        if acked >= self.lost_through.unwrap_or(0) {
            self.lost_through = None;
        }
        if !forked {
            self.acked_max = self.acked_max.max(acked);
        }
        if let Some(next) = response.next_seq.filter(|_| !forked) {
            self.replay_lost(next);
        }
        self.prune_kept();

        if response.reset && !self.resetting {
            // The pull starts again from the beginning: what the server now holds replaces
            // everything pulled before, over this page and the next ones.
            self.pulled.clear();
            self.cursor = 0;
        }
        self.resetting = response.reset && response.more;
        for record in &response.records {
            let id_text = record.id.to_string();
            self.acked_unpulled.retain(|e| e.record != id_text);
            self.pulled.insert(record.id, record.clone());
        }
        for id in &response.evicted {
            let id_text = id.to_string();
            self.acked_unpulled.retain(|e| e.record != id_text);
            self.pulled.remove(id);
        }
        if !response.more {
            self.acked_unpulled.clear();
        }
        self.cursor = match response.reset {
            true => response.cursor,
            false => self.cursor.max(response.cursor),
        };
        if response.epoch.is_some() {
            self.epoch = response.epoch.clone();
        }
        self.forms = response.forms.clone();
    }

    /// The server expects `next` while this phone had seen seqs up to `acked_max`
    /// acknowledged: its database lost them (restored from a backup). Every kept edit from
    /// `next` on goes back to the queue under its own seq; seqs no longer kept are declared
    /// lost, so that the server does not wait behind them.
    fn replay_lost(&mut self, next: u64) {
        if next > self.acked_max {
            return;
        }
        let (again, keep): (Vec<KeptEdit>, Vec<KeptEdit>) = std::mem::take(&mut self.kept)
            .into_iter()
            .partition(|k| k.edit.seq >= next);
        self.kept = keep;
        let first_kept = again.iter().map(|k| k.edit.seq).min();
        let lost_to = first_kept.unwrap_or(self.acked_max + 1) - 1;
        self.lost_through = (lost_to >= next).then_some(lost_to);
        let mut replay: Vec<Edit> = again.into_iter().map(|k| k.edit).collect();
        let pending_seqs: BTreeSet<u64> = self.pending.iter().map(|e| e.seq).collect();
        replay.retain(|e| !pending_seqs.contains(&e.seq));
        self.pending.extend(replay);
        self.pending.sort_by_key(|e| e.seq);
        self.acked_max = next - 1;
    }

    fn prune_kept(&mut self) {
        if self.now_ms > 0 {
            let horizon = self.now_ms - self.retention_ms;
            self.kept.retain(|k| k.acked_at >= horizon);
        }
        if self.kept.len() > MAX_KEPT {
            let excess = self.kept.len() - MAX_KEPT;
            self.kept.drain(..excess);
        }
    }

    /// Forget a rejected edit once the person has seen it (and perhaps entered it again).
    pub fn dismiss_rejected(&mut self, seq: u64) {
        self.rejected.retain(|r| r.edit.seq != seq);
    }
}
