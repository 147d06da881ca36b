//! Identifiers checked once, at the edge: a value of these types is always well formed.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A record's id: a UUID made on the phone (version 7 recommended, so ids sort by creation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RecordId(pub Uuid);

impl RecordId {
    /// A fresh time-ordered id, as a phone makes one.
    pub fn new_v7() -> Self {
        Self(Uuid::now_v7())
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        Uuid::parse_str(s)
            .map(Self)
            .map_err(|_| format!("record id {s:?} is not a UUID"))
    }
}

impl fmt::Display for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $check:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn parse(s: impl Into<String>) -> Result<Self, String> {
                let s = s.into();
                let check: fn(&str) -> Result<(), String> = $check;
                check(&s)?;
                Ok(Self(s))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                Self::parse(s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

string_id!(
    /// A commune's 5-digit GSO code, kept as text ("00001" is not 1).
    CommuneCode,
    |s| {
        if s.len() == 5 && s.bytes().all(|b| b.is_ascii_digit()) {
            Ok(())
        } else {
            Err(format!("commune code {s:?} is not 5 digits"))
        }
    }
);

string_id!(
    /// A form's id: lower-case letters, digits and '-', at most 64 characters.
    FormId,
    |s| {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-');
        if ok {
            Ok(())
        } else {
            Err(format!("form id {s:?} must be 1-64 of a-z, 0-9 and '-'"))
        }
    }
);

/// The field that marks a record deleted. Deleting is an ordinary edit of this field.
pub const DELETED_FIELD: &str = "_deleted";

/// The field that holds the record's commune as a register: a move is an edit of this field,
/// superseding the commune values its author saw, so two concurrent moves are a conflict and an
/// edit made from an older view does not move the record back.
pub const COMMUNE_FIELD: &str = "_commune";

/// The longest field name.
pub const MAX_FIELD_NAME: usize = 128;

/// Checks a field name: an XML name as XLSForm writes them — a letter or `_` first, then
/// letters of either case, digits, `_`, `-` and `.` — at most [`MAX_FIELD_NAME`] bytes.
/// Names are case-sensitive. `_deleted` and `_commune` are the record's own.
pub fn check_field_name(name: &str) -> Result<(), String> {
    if name == DELETED_FIELD || name == COMMUNE_FIELD {
        return Ok(());
    }
    let mut chars = name.chars();
    let ok = name.len() <= MAX_FIELD_NAME
        && chars.next().is_some_and(|c| c.is_alphabetic() || c == '_')
        && chars.all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "field name {name:?} must start with a letter or '_' and hold only letters, digits, '_', '-' and '.' ({MAX_FIELD_NAME} bytes at most)"
        ))
    }
}
