//! Mầm sync protocol, version 1.
//!
//! The heart of Mầm, shared by the server, the phone app and the reports: ids and [`Dot`]s,
//! the field [`Register`] (a multi-value register with one dot per value), [`Record`]s and
//! their merge, the v1 wire messages, checking a value against a [`Form`], and the phone-side
//! [`Client`] state machine. Pure logic: no I/O, no async runtime, no database, so a phone
//! client or a WebAssembly build can use it as it is.
//!
//! `PROTOCOL.md` beside this crate is the contract in full; `vectors/` freezes the JSON.
#![forbid(unsafe_code)]

pub mod client;
pub mod codes;
pub mod date;
pub mod dot;
pub mod edit;
pub mod expr;
pub mod form;
pub mod ids;
pub mod media;
pub mod record;
pub mod register;
pub mod who;
pub mod wire;
pub mod xpath;

pub use client::{Client, RejectedEdit};
pub use dot::{DeviceId, Dot, Seen, VersionVector};
pub use form::{Evolution, FieldType, Form, FormField, Labels, Violation};
pub use ids::{CommuneCode, FormId, RecordId, COMMUNE_FIELD, DELETED_FIELD};
pub use record::{BrokenRule, Record, ReplicaRecord};
pub use register::{Field, Register, Sibling, Write};
pub use wire::{
    CheckedEdit, Edit, EnrollRequest, EnrollResponse, ErrorBody, ErrorCode, FieldEdit, RejectCode,
    Rejection, SuccessorRequest, SyncRequest, SyncResponse, PROTOCOL_VERSION,
};
