//! Records: one filled form, a register per field.
//!
//! [`Record`] is the state the server stores and sends: siblings with their dots, nothing else.
//! It is merged under the server's causal delivery, where "seen" is the device table.
//! [`ReplicaRecord`] adds a version vector per field so replicas that receive edits in any
//! order, duplicated or reordered, still converge; the property tests hold both to the same
//! values as `crdts::MVReg`.
//!
//! A delete is an edit of [`DELETED_FIELD`] to `true` that also writes `null` over every field
//! the deleting phone saw. A concurrent edit therefore shows as a conflict on its field, and an
//! edit to a field the deleter never saw leaves a non-null value on a deleted record: both are
//! reported by [`Record::is_conflicted`] for a person to settle, never silently dropped.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::dot::{DeviceId, Dot, Seen};
use crate::edit::CheckedEdit;
use crate::ids::{CommuneCode, FormId, RecordId, COMMUNE_FIELD, DELETED_FIELD};
use crate::register::{Field, Register, Write};

/// A record as the server stores it and as it travels in `SyncResponse.records`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub id: RecordId,
    pub form: FormId,
    /// The newest form version any applied edit used; every version stays readable.
    pub version: u32,
    /// The record's place for scope, pulls and reports: the commune of the edit that made it,
    /// or, once it has moved, the provisional value of its [`COMMUNE_FIELD`] register.
    pub commune: CommuneCode,
    pub fields: BTreeMap<String, Register>,
    /// Fields the server computed from the others with the form's rules (e.g.
    /// `registered_on_time`); read-only for phones.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub derived: BTreeMap<String, Value>,
    /// Rules linking fields that hold in what each edit's author saw but break on the merged
    /// record (two phones changed the two fields concurrently): the record is in conflict
    /// until a person settles them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub broken: Vec<BrokenRule>,
}

/// A rule linking fields that only the merge of concurrent edits broke.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokenRule {
    /// The field the rule is on (`registration_date` for `not_before: date_of_birth`).
    pub field: String,
    /// `not_before` or `required_if`.
    pub rule: String,
    /// What breaks, in English and Vietnamese.
    pub en: String,
    pub vi: String,
}

impl Record {
    pub fn new(id: RecordId, form: FormId, version: u32, commune: CommuneCode) -> Self {
        Self {
            id,
            form,
            version,
            commune,
            fields: BTreeMap::new(),
            derived: BTreeMap::new(),
            broken: Vec::new(),
        }
    }

    /// A new, empty record shaped by `edit`.
    pub fn from_edit(edit: &CheckedEdit) -> Self {
        Self::new(
            edit.record,
            edit.form.clone(),
            edit.version,
            edit.commune.clone(),
        )
    }

    /// Apply `edit`, written by `device`, to this record. `seen` answers for the state before
    /// the edit. Takes the edit by value: its values move into the record without a copy.
    ///
    /// The record's commune changes only by a write of [`COMMUNE_FIELD`]: an edit's own
    /// `commune` names where its author saw the record (the server turns a v1 phone's move into
    /// such a write, see `sync.rs`).
    pub fn apply(&mut self, device: DeviceId, edit: CheckedEdit, seen: &impl Seen) {
        let dot = Dot::new(device, edit.seq);
        self.version = self.version.max(edit.version);
        let moves = edit.fields.contains_key(COMMUNE_FIELD);
        if self.fields.is_empty() && !seen.has_seen(dot) {
            // A new record, which is most edits: each field gets the edit's value, as a write
            // to an empty register would give it. Built at once from the edit's sorted fields.
            self.fields = edit
                .fields
                .into_iter()
                .map(|(name, change)| (name, Register::single(dot, change.value)))
                .collect();
        } else {
            for (name, change) in edit.fields {
                let write = Write::new(dot, change.value, &change.supersedes);
                match self.fields.get_mut(&name) {
                    Some(register) => register.apply(seen, write),
                    None => self.fields.entry(name).or_default().apply(seen, write),
                };
            }
        }
        if moves {
            self.follow_commune();
        }
    }

    /// Set `commune` from the provisional value of the commune register.
    fn follow_commune(&mut self) {
        let provisional = self
            .value(COMMUNE_FIELD)
            .and_then(Value::as_str)
            .and_then(|c| CommuneCode::parse(c).ok());
        if let Some(commune) = provisional {
            self.commune = commune;
        }
    }

    /// The commune values the record holds, with their dots: the register's siblings once it
    /// has moved; before, the commune it was made in, with no dot (every editor saw it).
    pub fn communes(&self) -> Vec<(CommuneCode, Option<Dot>)> {
        match self.fields.get(COMMUNE_FIELD).filter(|r| !r.is_empty()) {
            Some(register) => register
                .siblings()
                .iter()
                .filter_map(|s| {
                    let code = CommuneCode::parse(s.value.as_str()?).ok()?;
                    Some((code, Some(s.dot)))
                })
                .collect(),
            None => vec![(self.commune.clone(), None)],
        }
    }

    /// Whether the record is deleted (its `_deleted` field's provisional value is `true`).
    pub fn is_deleted(&self) -> bool {
        self.value(DELETED_FIELD) == Some(&Value::Bool(true))
    }

    /// The field's settled value, or its provisional value while in conflict.
    pub fn value(&self, field: &str) -> Option<&Value> {
        self.fields
            .get(field)
            .and_then(|r| r.provisional())
            .map(|s| &s.value)
    }

    /// Fields with two or more siblings.
    pub fn conflicted_fields(&self) -> impl Iterator<Item = &str> {
        self.fields
            .iter()
            .filter(|(_, r)| r.is_conflict())
            .map(|(n, _)| n.as_str())
    }

    /// A deleted record that still holds a value: an edit the deleter had not seen.
    pub fn has_delete_conflict(&self) -> bool {
        self.is_deleted()
            && self.fields.iter().any(|(name, r)| {
                name != DELETED_FIELD && name != COMMUNE_FIELD && r.values().any(|v| !v.is_null())
            })
    }

    /// Anything here a person has to settle.
    pub fn is_conflicted(&self) -> bool {
        self.conflicted_fields().next().is_some()
            || self.has_delete_conflict()
            || !self.broken.is_empty()
    }

    /// Bytes of merge metadata the server stores: one dot (device u32, seq u64) per value.
    pub fn metadata_bytes(&self) -> usize {
        self.fields.values().flat_map(|r| r.siblings()).count() * 12
    }

    /// The dots of a field's siblings, for the `supersedes` of a resolution.
    pub fn dots(&self, field: &str) -> Vec<Dot> {
        self.fields
            .get(field)
            .map(|r| r.dots().collect())
            .unwrap_or_default()
    }
}

/// A record that merges in any order: each field keeps its own causal context.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReplicaRecord {
    pub id: RecordId,
    pub form: FormId,
    pub version: u32,
    pub commune: CommuneCode,
    /// The dot of the edit that set `commune`: the highest dot wins on every replica.
    commune_dot: Dot,
    pub fields: BTreeMap<String, Field>,
}

impl ReplicaRecord {
    pub fn from_edit(edit: &CheckedEdit) -> Self {
        Self {
            id: edit.record,
            form: edit.form.clone(),
            version: 0,
            commune: edit.commune.clone(),
            commune_dot: Dot::new(0, 0),
            fields: BTreeMap::new(),
        }
    }

    /// Apply an edit from `device`, in any order, any number of times.
    pub fn apply(&mut self, device: DeviceId, edit: CheckedEdit) {
        let dot = Dot::new(device, edit.seq);
        self.version = self.version.max(edit.version);
        if dot > self.commune_dot {
            self.commune = edit.commune;
            self.commune_dot = dot;
        }
        for (name, change) in edit.fields {
            let write = Write::new(dot, change.value, &change.supersedes);
            self.fields.entry(name).or_default().apply(write);
        }
        self.follow_commune();
    }

    /// Once the commune register holds a value, it is the commune on every replica.
    fn follow_commune(&mut self) {
        let provisional = self
            .fields
            .get(COMMUNE_FIELD)
            .and_then(|f| f.register.provisional())
            .and_then(|s| CommuneCode::parse(s.value.as_str()?).ok());
        if let Some(commune) = provisional {
            self.commune = commune;
        }
    }

    /// Merge another replica's state of the same record.
    pub fn merge(&mut self, other: &ReplicaRecord) {
        debug_assert_eq!(self.id, other.id);
        self.version = self.version.max(other.version);
        if other.commune_dot > self.commune_dot {
            self.commune = other.commune.clone();
            self.commune_dot = other.commune_dot;
        }
        for (name, field) in &other.fields {
            match self.fields.get_mut(name) {
                Some(mine) => mine.merge(field),
                None => {
                    self.fields.insert(name.clone(), field.clone());
                }
            }
        }
        self.follow_commune();
    }

    /// The record without causal contexts, as the wire carries it.
    pub fn to_record(&self) -> Record {
        Record {
            id: self.id,
            form: self.form.clone(),
            version: self.version,
            commune: self.commune.clone(),
            fields: self
                .fields
                .iter()
                .filter(|(_, f)| !f.register.is_empty())
                .map(|(n, f)| (n.clone(), f.register.clone()))
                .collect(),
            derived: BTreeMap::new(),
            broken: Vec::new(),
        }
    }

    /// Bytes of merge metadata: 12 per dot held and 12 per context entry.
    pub fn metadata_bytes(&self) -> usize {
        self.fields
            .values()
            .map(|f| (f.register.siblings().len() + f.seen.len()) * 12)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::edit::{Edit, FieldEdit};

    fn edit(seq: u64, fields: &[(&str, Value, Vec<Dot>)]) -> CheckedEdit {
        Edit {
            seq,
            record: RecordId::new_v7().to_string(),
            form: "birth-registration".into(),
            version: 1,
            commune: "19774".into(),
            fields: fields
                .iter()
                .map(|(name, value, supersedes)| {
                    let change = FieldEdit {
                        value: value.clone(),
                        supersedes: supersedes.clone(),
                    };
                    (name.to_string(), change)
                })
                .collect(),
        }
        .into_checked()
        .expect("a well-formed edit")
    }

    /// What writing each field into an empty register gives: the record a first edit makes.
    fn field_by_field(device: DeviceId, edit: &CheckedEdit, seen: &impl Seen) -> Record {
        let mut record = Record::from_edit(edit);
        for (name, change) in &edit.fields {
            let dot = Dot::new(device, edit.seq);
            let mut register = Register::default();
            register.apply(
                seen,
                Write::new(dot, change.value.clone(), &change.supersedes),
            );
            record.fields.insert(name.clone(), register);
        }
        record
    }

    #[test]
    fn a_first_edit_makes_what_writes_to_empty_registers_make() {
        let first = edit(
            3,
            &[
                ("child_name", json!("Lan"), vec![]),
                ("weight_kg", json!(3.1), vec![Dot::new(9, 1)]),
                ("note", Value::Null, vec![]),
                (DELETED_FIELD, json!(false), vec![]),
            ],
        );
        for seen_before in [false, true] {
            let seen = |_: Dot| seen_before;
            let mut record = Record::from_edit(&first);
            record.apply(7, first.clone(), &seen);
            assert_eq!(
                record,
                field_by_field(7, &first, &seen),
                "seen: {seen_before}"
            );
        }
        let mut record = Record::from_edit(&first);
        record.apply(7, first.clone(), &|_| false);
        assert_eq!(record.value("child_name"), Some(&json!("Lan")));
        assert_eq!(record.dots("weight_kg"), vec![Dot::new(7, 3)]);
        assert!(!record.is_conflicted());
    }

    #[test]
    fn a_later_edit_still_merges_field_by_field() {
        let mut record = Record::from_edit(&edit(1, &[("a", json!(1), vec![])]));
        record.apply(1, edit(1, &[("a", json!(1), vec![])]), &|_| false);
        // Another phone, not having seen the first edit, writes the same field.
        record.apply(2, edit(1, &[("a", json!(2), vec![])]), &|_| false);
        assert_eq!(record.dots("a"), vec![Dot::new(1, 1), Dot::new(2, 1)]);
        assert!(record.is_conflicted());
    }
}
