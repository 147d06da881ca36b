//! The codes of the v1 protocol: why an edit was refused ([`RejectCode`], [`Rejection`]) and
//! why a request failed ([`ErrorCode`], [`ErrorBody`]). Codes a peer does not know are kept as
//! `Other` rather than refused.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

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
        /// The seq is 0: a device numbers its edits from 1.
        InvalidSeq = "invalid_seq",
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
        /// Too many attempts from this client (or at this code) for now; `Retry-After` says
        /// when to try again (429).
        RateLimited = "rate_limited",
        /// Something failed inside the server; it is logged there (500).
        Internal = "internal",
        /// An attachment of a media type the server does not take (415).
        UnsupportedMediaType = "unsupported_media_type",
        /// A chunk that does not start where the upload stands; the body's `received` says
        /// where it does (409).
        UploadOffset = "upload_offset",
        /// The bytes received do not have the SHA-256 they were sent under; the upload starts
        /// again (422).
        HashMismatch = "hash_mismatch",
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
