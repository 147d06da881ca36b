//! Golden vectors: the v1 wire format, byte for byte. A change that alters any of these files
//! breaks phones in the field; add optional keys instead. `MAM_BLESS=1` rewrites the files,
//! for a new vector only.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{de::DeserializeOwned, Serialize};
use serde_json::json;
use sync_protocol::{
    Dot, Edit, EnrollRequest, EnrollResponse, ErrorBody, ErrorCode, FieldEdit, Record, RecordId,
    Register, RejectCode, Rejection, Sibling, SuccessorRequest, SyncRequest, SyncResponse,
};

fn check<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(name: &str, value: &T) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("vectors")
        .join(name);
    let text = serde_json::to_string_pretty(value).unwrap() + "\n";
    if std::env::var_os("MAM_BLESS").is_some() && !path.exists() {
        std::fs::write(&path, &text).unwrap();
    }
    let golden =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(text, golden, "{name}: serialization changed");
    let parsed: T = serde_json::from_str(&golden).unwrap();
    assert_eq!(&parsed, value, "{name}: does not decode to the same value");
}

fn record_id() -> RecordId {
    RecordId::parse("01937a4e-8f3c-7d2a-9b1e-5c6d7e8f9a0b").unwrap()
}

fn edit() -> Edit {
    Edit {
        seq: 41,
        record: record_id().to_string(),
        form: "birth-registration".into(),
        version: 1,
        commune: "19753".into(),
        fields: BTreeMap::from([
            (
                "registration_date".into(),
                FieldEdit {
                    value: json!("2020-03-02"),
                    supersedes: vec![Dot::new(7, 12)],
                },
            ),
            (
                "birth_registered".into(),
                FieldEdit {
                    value: json!(true),
                    supersedes: vec![],
                },
            ),
        ]),
    }
}

#[test]
fn edit_vector() {
    check("edit.json", &edit());
}

#[test]
fn sync_request_vector() {
    check(
        "sync-request.json",
        &SyncRequest {
            protocol: 1,
            push: vec![edit()],
            cursor: 1893,
            max_bytes: 65536,
            epoch: None,
            lost_through: None,
        },
    );
}

/// A request of a phone that knows epochs: its cursor's epoch, and after a restore lost some of
/// its acknowledged edits, the seqs it no longer holds.
#[test]
fn sync_request_with_epoch_vector() {
    check(
        "sync-request-epoch.json",
        &SyncRequest {
            protocol: 1,
            push: vec![edit()],
            cursor: 1893,
            max_bytes: 65536,
            epoch: Some("0193a1b2c3d47e5f8a9b0c1d2e3f4a5b".into()),
            lost_through: Some(40),
        },
    );
}

#[test]
fn sync_response_vector() {
    check("sync-response.json", &sync_response());
}

/// The keys a response carries since epochs: `epoch`, `next_seq`, and `reset` on a pull that
/// starts again from the beginning.
#[test]
fn sync_response_with_epoch_vector() {
    check(
        "sync-response-epoch.json",
        &SyncResponse {
            epoch: Some("0193a1b2c3d47e5f8a9b0c1d2e3f4a5b".into()),
            next_seq: Some(42),
            reset: true,
            ..sync_response()
        },
    );
}

fn sync_response() -> SyncResponse {
    let record = Record {
        id: record_id(),
        form: sync_protocol::FormId::parse("birth-registration").unwrap(),
        version: 1,
        commune: sync_protocol::CommuneCode::parse("19753").unwrap(),
        fields: BTreeMap::from([
            (
                "child_name".into(),
                Register::from_siblings(vec![
                    Sibling {
                        value: json!("Nguyễn Thị Lan"),
                        dot: Dot::new(7, 13),
                    },
                    Sibling {
                        value: json!("Nguyễn Thị Lân"),
                        dot: Dot::new(9, 4),
                    },
                ]),
            ),
            (
                "date_of_birth".into(),
                Register::from_siblings(vec![Sibling {
                    value: json!("2020-01-15"),
                    dot: Dot::new(7, 13),
                }]),
            ),
        ]),
        derived: BTreeMap::new(),
        broken: Vec::new(),
    };
    SyncResponse {
        protocol: 1,
        acked_through: 41,
        rejected: vec![Rejection::new(
            40,
            RejectCode::InvalidValue,
            Some("date_of_birth"),
            "date_of_birth: \"2020-02-30\" is not a date YYYY-MM-DD",
        )],
        records: vec![record],
        evicted: vec![RecordId::parse("01937a4e-0000-7000-8000-000000000001").unwrap()],
        cursor: 1931,
        more: false,
        forms: BTreeMap::from([("birth-registration".into(), 1)]),
        epoch: None,
        next_seq: None,
        reset: false,
    }
}

#[test]
fn enroll_vectors() {
    check(
        "enroll-request.json",
        &EnrollRequest {
            code: "K7QF-3M9X".into(),
        },
    );
    check(
        "enroll-response.json",
        &EnrollResponse {
            device: 7,
            token: "mam_d7_9f2c4e1a6b8d3f5e7a9c1b3d5f7e9a2c".into(),
            communes: vec!["19753".into()],
            predecessor: None,
        },
    );
}

#[test]
fn successor_vectors() {
    check(
        "successor-request.json",
        &SuccessorRequest {
            protocol: 1,
            request: "01937a4e-9d0e-7f1a-8b2c-3d4e5f6a7b8c".into(),
        },
    );
    check(
        "successor-response.json",
        &EnrollResponse {
            device: 23,
            token: "mam_d23_4b6d8f0a2c4e6a8c0e2b4d6f8a0c2e4b".into(),
            communes: vec!["19753".into()],
            predecessor: Some(7),
        },
    );
}

#[test]
fn error_vector() {
    check(
        "error.json",
        &ErrorBody {
            code: ErrorCode::Unauthorized,
            message: "the bearer token is missing, wrong or revoked".into(),
            field: None,
        },
    );
}

/// The smallest request a v1 phone may send, with no optional keys, must keep decoding.
#[test]
fn minimal_v1_request_still_decodes() {
    let text = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("vectors/sync-request-minimal.json"),
    )
    .unwrap();
    let request: SyncRequest = serde_json::from_str(&text).unwrap();
    assert_eq!(request.protocol, 1);
    assert_eq!(request.cursor, 0);
    assert_eq!(request.max_bytes, 65536);
    assert_eq!(request.push[0].fields["child_name"].supersedes, vec![]);
}

/// Codes a newer server sends are kept, not refused.
#[test]
fn unknown_codes_are_kept() {
    let r: Rejection =
        serde_json::from_str(r#"{"seq":3,"code":"some_future_rule","message":"m"}"#).unwrap();
    assert_eq!(r.code, RejectCode::Other("some_future_rule".into()));
    assert_eq!(
        serde_json::to_value(&r).unwrap()["code"],
        "some_future_rule"
    );
}
