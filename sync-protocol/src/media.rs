//! Attachments: photos, sound, video and files that a record's field names by their content.
//!
//! A media field's value is a reference, `{"sha256": "…", "size": 183211, "type":
//! "image/jpeg", "name": "IMG_0041.jpg"}`: the SHA-256 of the bytes (64 lower-case hex
//! digits), their size, their media type and, when known, the file's original name. The bytes
//! travel apart from the edit that names them, in chunks, and are stored once however many
//! records name them. The value merges like any other: two photos taken concurrently are two
//! siblings of the field.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The largest attachment a field may name (the server's limit may be lower).
pub const MAX_BYTES: u64 = 64 * 1024 * 1024;

/// A reference to an attachment, as a media field holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub sha256: String,
    pub size: u64,
    #[serde(rename = "type")]
    pub media_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl Attachment {
    /// The reference a value holds, if it is a well-formed one.
    pub fn of(value: &Value) -> Option<Attachment> {
        let a: Attachment = serde_json::from_value(value.clone()).ok()?;
        let known = value
            .as_object()?
            .keys()
            .all(|k| matches!(k.as_str(), "sha256" | "size" | "type" | "name"));
        (known
            && is_sha256(&a.sha256)
            && (1..=MAX_BYTES).contains(&a.size)
            && is_media_type(&a.media_type)
            && a.name
                .as_ref()
                .is_none_or(|n| n.chars().count() <= 255 && !n.contains(['/', '\\'])))
        .then_some(a)
    }
}

/// 64 lower-case hexadecimal digits.
pub fn is_sha256(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `type/subtype` in the characters RFC 6838 allows.
pub fn is_media_type(s: &str) -> bool {
    let ok = |p: &str| {
        !p.is_empty()
            && p.len() <= 127
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    s.split_once('/').is_some_and(|(t, sub)| ok(t) && ok(sub))
}

/// Every attachment a value names (a media field's, or inside a repeat group's items).
pub fn named_in(value: &Value, out: &mut Vec<Attachment>) {
    if let Some(a) = Attachment::of(value) {
        out.push(a);
        return;
    }
    match value {
        Value::Array(items) => items.iter().for_each(|v| named_in(v, out)),
        Value::Object(map) => map.values().for_each(|v| named_in(v, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_reference_is_checked_whole() {
        let sha = "ab".repeat(32);
        let good = json!({"sha256": sha, "size": 1200, "type": "image/jpeg", "name": "a.jpg"});
        assert!(Attachment::of(&good).is_some());
        for bad in [
            json!({"sha256": "AB".repeat(32), "size": 1, "type": "image/jpeg"}),
            json!({"sha256": sha, "size": 0, "type": "image/jpeg"}),
            json!({"sha256": sha, "size": 1, "type": "jpeg"}),
            json!({"sha256": sha, "size": 1, "type": "image/jpeg", "name": "../x"}),
            json!({"sha256": sha, "size": 1, "type": "image/jpeg", "extra": 1}),
            json!("photo.jpg"),
        ] {
            assert!(Attachment::of(&bad).is_none(), "{bad}");
        }
        let mut found = Vec::new();
        named_in(&json!([{"photo": good}, {"n": 1}]), &mut found);
        assert_eq!(found.len(), 1);
    }
}
