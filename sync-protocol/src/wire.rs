//! The v1 wire messages (`POST /v1/sync`, `POST /v1/enroll`) and their error codes.
//!
//! Keys are a contract with phones outside this repository: `PROTOCOL.md` describes them and
//! the golden vectors in `vectors/` freeze them byte for byte. New optional keys may be added;
//! existing keys never change meaning. Codes a peer does not know are kept as
//! [`RejectCode::Other`] / [`ErrorCode::Other`] rather than refused.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use crate::codes::{ErrorBody, ErrorCode, RejectCode, Rejection};
use crate::dot::DeviceId;
pub use crate::edit::{CheckedEdit, Edit, FieldEdit};
use crate::ids::RecordId;
use crate::record::Record;

/// The protocol number every message carries.
pub const PROTOCOL_VERSION: u32 = 1;

/// The page size a pull uses when the request does not name one.
pub const DEFAULT_MAX_BYTES: u64 = 65_536;

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
