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

/// Checks a field name: `_deleted`, `_commune`, or lower-case letters, digits and '_' starting
/// with a letter, at most 64 characters. Other names starting with '_' are reserved.
pub fn check_field_name(name: &str) -> Result<(), String> {
    if name == DELETED_FIELD || name == COMMUNE_FIELD {
        return Ok(());
    }
    let mut bytes = name.bytes();
    let ok = name.len() <= 64
        && bytes.next().is_some_and(|b| b.is_ascii_lowercase())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "field name {name:?} must start with a-z and hold only a-z, 0-9 and '_' (64 at most)"
        ))
    }
}
