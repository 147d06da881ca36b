//! The v1 wire messages (`POST /v1/sync`, `POST /v1/enroll`) and their error codes.
//!
//! Keys are a contract with phones outside this repository: `PROTOCOL.md` describes them and
//! the golden vectors in `vectors/` freeze them byte for byte. New optional keys may be added;
//! existing keys never change meaning. Codes a peer does not know are kept as
//! [`RejectCode::Other`] / [`ErrorCode::Other`] rather than refused.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::dot::{DeviceId, Dot};
use crate::ids::{check_field_name, CommuneCode, FormId, RecordId};
use crate::record::Record;

/// The protocol number every message carries.
pub const PROTOCOL_VERSION: u32 = 1;

/// The page size a pull uses when the request does not name one.
pub const DEFAULT_MAX_BYTES: u64 = 65_536;

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

/// `POST /v1/sync` request: push pending edits and pull what changed after `cursor`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SyncRequest {
    pub protocol: u32,
    #[serde(default)]
    pub push: Vec<Edit>,
    #[serde(default)]
    pub cursor: u64,
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// The database epoch of the response the cursor came from. A cursor of another epoch is
    /// answered with a pull from the start (`reset`). Absent: the cursor is taken as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
    /// After a restore lost acknowledged edits (`next_seq` below what the phone had
    /// acknowledged), the last of those seqs the phone no longer holds: the server consumes
    /// them as lost for good, records that for the office, and takes the edits after them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost_through: Option<u64>,
}

fn default_max_bytes() -> u64 {
    DEFAULT_MAX_BYTES
}

/// `POST /v1/sync` response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SyncResponse {
    pub protocol: u32,
    /// Every edit of this device with `seq <= acked_through` is durably consumed: applied, or
    /// rejected and listed in `rejected`.
    pub acked_through: u64,
    pub rejected: Vec<Rejection>,
    /// Current state of the records in scope changed after the request's cursor.
    pub records: Vec<Record>,
    /// Records that left this device's scope after the request's cursor: drop them.
    pub evicted: Vec<RecordId>,
    pub cursor: u64,
    /// More changes wait after `cursor`: sync again at once.
    pub more: bool,
    /// The current version of each form in scope.
    pub forms: BTreeMap<String, u32>,
    /// The database's epoch: made with the database, renewed when it is restored from a
    /// backup. Send it back with the cursor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
    /// The seq the server expects next from this device. Below a seq the phone had seen
    /// acknowledged, the server lost those edits (a restore): the phone pushes them again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_seq: Option<u64>,
    /// This pull starts from the beginning (the request's cursor was of another epoch, or
    /// ahead of the database): the phone replaces every pulled record with what follows, over
    /// this and the next pages.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reset: bool,
}

/// Why one edit was not applied. The edit is consumed (acknowledged) and kept for review.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rejection {
    pub seq: u64,
    pub code: RejectCode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// In English.
    pub message: String,
    /// The same in Vietnamese, for the collaborator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_vi: Option<String>,
    /// The rule the value broke (`type`, `required`, `min`, `choice`, …) for `invalid_value`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
}

/// `POST /v1/enroll` request: the one-time code an officer gave.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EnrollRequest {
    pub code: String,
}

/// `POST /v1/enroll` response: the device number that makes dots, and the bearer token.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EnrollResponse {
    pub device: DeviceId,
    pub token: String,
    pub communes: Vec<String>,
    /// For a successor identity (`POST /v1/successor`): the device it follows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predecessor: Option<DeviceId>,
}

/// `POST /v1/successor` request, with the old device's token: a phone whose seqs were used by
/// another history (restored from a backup, or its data copied to another phone) takes a new
/// device number for the same collaborator and communes. `request` is an id the phone makes
/// once per successor it needs: sent again after a lost response, it names the same successor
/// (with a fresh token, which replaces the one lost).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SuccessorRequest {
    pub protocol: u32,
    pub request: String,
}

/// The body of every HTTP error.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

macro_rules! code_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal,)* }) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)*
            /// A code this build does not know, kept as sent.
            Other(String),
        }

        impl $name {
            /// Every code this build knows, for documentation and tests.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            pub fn as_str(&self) -> &str {
                match self {
                    $($name::$variant => $text,)*
                    $name::Other(s) => s,
                }
            }

            pub fn from_text(s: &str) -> Self {
                match s {
                    $($text => $name::$variant,)*
                    other => $name::Other(other.to_owned()),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Ok($name::from_text(&s))
            }
        }
    };
}

code_enum!(
    /// Why an edit was rejected (the `code` of an entry in `rejected`).
    RejectCode {
        /// The record id, form id, commune code or a field name is malformed, or no field is set.
        InvalidEdit = "invalid_edit",
        /// The form id is not published on this server.
        UnknownForm = "unknown_form",
        /// The form exists but not in this version.
        UnknownVersion = "unknown_version",
        /// The field is not in the form version the edit names.
        UnknownField = "unknown_field",
        /// The value does not fit the field's type or rules.
        InvalidValue = "invalid_value",
        /// The edit's commune, or the record's current commune, is outside the device's scope.
        OutOfScope = "out_of_scope",
        /// The record exists with another form.
        FormMismatch = "form_mismatch",
        /// `supersedes` names a dot the server has not applied yet.
        InvalidSupersedes = "invalid_supersedes",
        /// The seq was already used by this device for an edit with other content.
        SeqReused = "seq_reused",
        /// Acknowledged once, then lost with a database restored from a backup, and no longer
        /// on the phone: gone for good (kept so that the office sees which).
        Lost = "lost",
    }
);

code_enum!(
    /// The `code` of an HTTP error body.
    ErrorCode {
        /// The body is not JSON of the expected shape (400).
        MalformedRequest = "malformed_request",
        /// The request's `protocol` is not one this server speaks (400).
        UnsupportedProtocol = "unsupported_protocol",
        /// The body is compressed in an encoding other than gzip (415).
        UnsupportedEncoding = "unsupported_encoding",
        /// Missing, wrong or revoked bearer token (401).
        Unauthorized = "unauthorized",
        /// The enrolment code is unknown, used or expired (401).
        InvalidCode = "invalid_code",
        /// The caller may not do this (403).
        Forbidden = "forbidden",
        /// No such resource (404).
        NotFound = "not_found",
        /// The body is over the size limit (413).
        PayloadTooLarge = "payload_too_large",
        /// The push holds more edits than one request may (413).
        BatchTooLarge = "batch_too_large",
        /// The request took longer than the server allows (408).
        Timeout = "timeout",
        /// The server is starting, draining or cannot reach its database; retry later (503).
        Unavailable = "unavailable",
        /// Something failed inside the server; it is logged there (500).
        Internal = "internal",
    }
);

impl Rejection {
    pub fn new(
        seq: u64,
        code: RejectCode,
        field: Option<&str>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            seq,
            code,
            field: field.map(str::to_owned),
            message: message.into(),
            message_vi: None,
            rule: None,
        }
    }
}
