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
use crate::ids::{CommuneCode, FormId, RecordId, DELETED_FIELD};
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
}

impl Client {
    pub fn new(device: DeviceId) -> Self {
        Self {
            device,
            next_seq: 1,
            max_push: DEFAULT_MAX_PUSH,
            max_bytes: DEFAULT_MAX_BYTES,
            ..Self::default()
        }
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

    /// Delete a record: `_deleted` becomes true and every field the phone shows becomes
    /// `null`, so an edit made elsewhere meanwhile surfaces as a conflict instead of vanishing.
    pub fn delete(&mut self, id: RecordId) -> Option<u64> {
        let record = self.view(id)?;
        let mut fields: BTreeMap<String, FieldEdit> = record
            .fields
            .keys()
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

    /// The next request: the oldest pending edits (at most `max_push`) and the cursor.
    /// Sending the same request again after a failure is always safe.
    pub fn sync_request(&self) -> SyncRequest {
        SyncRequest {
            protocol: PROTOCOL_VERSION,
            push: self.pending.iter().take(self.max_push).cloned().collect(),
            cursor: self.cursor,
            max_bytes: self.max_bytes,
        }
    }

    /// Take in a response: drop acknowledged edits, keep rejected ones with their reason,
    /// replace pulled records, forget evicted ones. Pending edits stay and keep showing on top.
    pub fn apply_response(&mut self, response: &SyncResponse) {
        let acked = response.acked_through;
        // A phone restored from an old backup must never reuse a seq the server consumed.
        self.next_seq = self.next_seq.max(acked + 1);
        let (done, still_pending): (Vec<Edit>, Vec<Edit>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|e| e.seq <= acked);
        self.pending = still_pending;
        for mut edit in done {
            match response.rejected.iter().find(|r| r.seq == edit.seq) {
                // The server holds another edit under this seq (the phone was restored from a
                // backup): nothing is wrong with this one, so it goes again under a new seq.
                Some(r) if r.code == RejectCode::SeqReused => {
                    edit.seq = self.take_seq();
                    self.pending.push(edit);
                }
                Some(rejection) => self.rejected.push(RejectedEdit {
                    edit,
                    rejection: rejection.clone(),
                }),
                None => self.acked_unpulled.push(edit),
            }
        }
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
        self.cursor = self.cursor.max(response.cursor);
        self.forms = response.forms.clone();
    }

    /// Forget a rejected edit once the person has seen it (and perhaps entered it again).
    pub fn dismiss_rejected(&mut self, seq: u64) {
        self.rejected.retain(|r| r.edit.seq != seq);
    }
}
