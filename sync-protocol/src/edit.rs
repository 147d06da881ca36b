//! Edits: what a phone writes, one or more fields of one record under one dot, and the same
//! edit once its strings are checked.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::codes::{RejectCode, Rejection};
use crate::dot::Dot;
use crate::ids::{check_field_name, CommuneCode, FormId, RecordId};

/// One edit from a phone: one or more fields of one record, all written with the dot
/// `[device, seq]`.
///
/// Strings are checked per edit ([`Edit::check`]), not while parsing, so one bad edit is
/// rejected on its own and never blocks the edits queued behind it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Edit {
    pub seq: u64,
    pub record: String,
    pub form: String,
    pub version: u32,
    pub commune: String,
    pub fields: BTreeMap<String, FieldEdit>,
}

/// The new value of one field and the dots of the siblings the phone showed when it was made.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FieldEdit {
    pub value: Value,
    #[serde(default)]
    pub supersedes: Vec<Dot>,
}

/// An edit whose ids and field names are well formed.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckedEdit {
    pub seq: u64,
    pub record: RecordId,
    pub form: FormId,
    pub version: u32,
    pub commune: CommuneCode,
    pub fields: BTreeMap<String, FieldEdit>,
}

impl Edit {
    /// Checks the edit's shape; the error names the first offending key.
    pub fn check(&self) -> Result<CheckedEdit, Rejection> {
        self.clone().into_checked()
    }

    /// [`Edit::check`], keeping the values instead of copying them.
    pub fn into_checked(self) -> Result<CheckedEdit, Rejection> {
        let (record, form, commune) = self.shape()?;
        Ok(CheckedEdit {
            seq: self.seq,
            record,
            form,
            version: self.version,
            commune,
            fields: self.fields,
        })
    }

    fn shape(&self) -> Result<(RecordId, FormId, CommuneCode), Rejection> {
        let reject = |field: Option<&str>, message: String| {
            Rejection::new(self.seq, RejectCode::InvalidEdit, field, message)
        };
        if self.seq == 0 {
            return Err(reject(None, "seq starts at 1".into()));
        }
        let record = RecordId::parse(&self.record).map_err(|m| reject(None, m))?;
        let form = FormId::parse(self.form.as_str()).map_err(|m| reject(None, m))?;
        let commune = CommuneCode::parse(self.commune.as_str()).map_err(|m| reject(None, m))?;
        if self.fields.is_empty() {
            return Err(reject(None, "an edit must set at least one field".into()));
        }
        for name in self.fields.keys() {
            check_field_name(name).map_err(|m| reject(Some(name), m))?;
        }
        Ok((record, form, commune))
    }
}
