//! Forms as the sync protocol needs them: field names and types, and checking a value.
//!
//! A form version is immutable once published; an edit is checked against the version the
//! phone used. `null` clears a field and fits every type.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::{FormId, DELETED_FIELD};
use crate::wire::{CheckedEdit, RejectCode, Rejection};

/// The longest text a field may hold, in characters.
pub const MAX_TEXT_CHARS: usize = 10_000;

/// One version of a form. Keys this build does not use (titles, help, rules) are ignored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Form {
    pub id: FormId,
    pub version: u32,
    pub fields: Vec<FormField>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FormField {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: FieldType,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub choices: Vec<Choice>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    pub code: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    Text,
    Integer,
    Decimal,
    Date,
    Boolean,
    SelectOne,
    SelectMany,
    Geopoint,
    Reference,
}

impl Form {
    pub fn field(&self, name: &str) -> Option<&FormField> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// Checks every field of `edit` against this version; the error names the first bad field.
    pub fn check_edit(&self, edit: &CheckedEdit) -> Result<(), Rejection> {
        for (name, change) in &edit.fields {
            let reject =
                |code, message: String| Rejection::new(edit.seq, code, Some(name), message);
            if name == DELETED_FIELD {
                if !(change.value.is_boolean() || change.value.is_null()) {
                    return Err(reject(
                        RejectCode::InvalidValue,
                        format!(
                            "{DELETED_FIELD} must be true or false, got {}",
                            brief(&change.value)
                        ),
                    ));
                }
                continue;
            }
            let Some(field) = self.field(name) else {
                return Err(reject(
                    RejectCode::UnknownField,
                    format!(
                        "form {} version {} has no field {name:?}",
                        self.id, self.version
                    ),
                ));
            };
            field
                .check_value(&change.value)
                .map_err(|m| reject(RejectCode::InvalidValue, format!("{name}: {m}")))?;
        }
        Ok(())
    }
}

impl FormField {
    /// Whether `value` fits this field's type; the error says which rule and which value.
    pub fn check_value(&self, value: &Value) -> Result<(), String> {
        if value.is_null() {
            return Ok(());
        }
        let ok = match self.kind {
            FieldType::Text => {
                let s = value.as_str().ok_or_else(|| expected("text", value))?;
                let n = s.chars().count();
                if n > MAX_TEXT_CHARS {
                    return Err(format!("text of {n} characters is over {MAX_TEXT_CHARS}"));
                }
                true
            }
            FieldType::Integer => value.is_i64() || value.is_u64(),
            FieldType::Decimal => value.is_number(),
            FieldType::Boolean => value.is_boolean(),
            FieldType::Date => {
                let s = value
                    .as_str()
                    .ok_or_else(|| expected("a date YYYY-MM-DD", value))?;
                parse_date(s).ok_or_else(|| format!("{s:?} is not a date YYYY-MM-DD"))?;
                true
            }
            FieldType::Reference => {
                let s = value
                    .as_str()
                    .ok_or_else(|| expected("a record id", value))?;
                uuid::Uuid::parse_str(s).map_err(|_| format!("{s:?} is not a record id"))?;
                true
            }
            FieldType::Geopoint => {
                let lat = value.get("lat").and_then(Value::as_f64);
                let lon = value.get("lon").and_then(Value::as_f64);
                match (lat, lon) {
                    (Some(lat), Some(lon))
                        if (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon) =>
                    {
                        true
                    }
                    _ => return Err(expected("{\"lat\": -90..90, \"lon\": -180..180}", value)),
                }
            }
            FieldType::SelectOne => {
                let s = value
                    .as_str()
                    .ok_or_else(|| expected("a choice code", value))?;
                self.check_choice(s)?;
                true
            }
            FieldType::SelectMany => {
                let items = value
                    .as_array()
                    .ok_or_else(|| expected("a list of choice codes", value))?;
                for (i, item) in items.iter().enumerate() {
                    let s = item
                        .as_str()
                        .ok_or_else(|| expected("a choice code", item))?;
                    self.check_choice(s)?;
                    if items[..i].contains(item) {
                        return Err(format!("choice {s:?} is listed twice"));
                    }
                }
                true
            }
        };
        if ok {
            Ok(())
        } else {
            Err(expected(self.kind.describe(), value))
        }
    }

    fn check_choice(&self, code: &str) -> Result<(), String> {
        if self.choices.is_empty() || self.choices.iter().any(|c| c.code == code) {
            Ok(())
        } else {
            let codes: Vec<&str> = self.choices.iter().map(|c| c.code.as_str()).collect();
            Err(format!("{code:?} is not one of {}", codes.join(", ")))
        }
    }
}

impl FieldType {
    fn describe(self) -> &'static str {
        match self {
            FieldType::Text => "text",
            FieldType::Integer => "a whole number",
            FieldType::Decimal => "a number",
            FieldType::Date => "a date YYYY-MM-DD",
            FieldType::Boolean => "true or false",
            FieldType::SelectOne => "a choice code",
            FieldType::SelectMany => "a list of choice codes",
            FieldType::Geopoint => "a geopoint",
            FieldType::Reference => "a record id",
        }
    }
}

fn expected(what: &str, got: &Value) -> String {
    format!("expected {what}, got {}", brief(got))
}

/// A value shortened for an error message.
fn brief(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(60) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text,
    }
}

/// Parses a calendar date `YYYY-MM-DD` into (year, month, day).
pub fn parse_date(s: &str) -> Option<(i32, u32, u32)> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = &s[r];
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    (y >= 1 && (1..=days).contains(&d)).then_some((y as i32, m, d))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn field(kind: FieldType, choices: &[&str]) -> FormField {
        FormField {
            name: "f".into(),
            kind,
            choices: choices
                .iter()
                .map(|c| Choice {
                    code: c.to_string(),
                })
                .collect(),
        }
    }

    #[test]
    fn values_against_types() {
        use FieldType::*;
        let cases: &[(&str, FieldType, &[&str], Value, bool)] = &[
            ("null clears any field", Integer, &[], json!(null), true),
            ("whole number", Integer, &[], json!(3), true),
            (
                "fraction is not an integer",
                Integer,
                &[],
                json!(3.5),
                false,
            ),
            (
                "number as text is not an integer",
                Integer,
                &[],
                json!("3"),
                false,
            ),
            ("decimal", Decimal, &[], json!(3.5), true),
            ("date", Date, &[], json!("2020-02-29"), true),
            (
                "no 29 February in 2021",
                Date,
                &[],
                json!("2021-02-29"),
                false,
            ),
            (
                "date in another format",
                Date,
                &[],
                json!("02/03/2020"),
                false,
            ),
            ("boolean", Boolean, &[], json!(false), true),
            ("yes is not a boolean", Boolean, &[], json!("yes"), false),
            (
                "listed choice",
                SelectOne,
                &["home", "facility"],
                json!("home"),
                true,
            ),
            (
                "unlisted choice",
                SelectOne,
                &["home", "facility"],
                json!("boat"),
                false,
            ),
            (
                "several choices",
                SelectMany,
                &["a", "b"],
                json!(["a", "b"]),
                true,
            ),
            (
                "a choice twice",
                SelectMany,
                &["a", "b"],
                json!(["a", "a"]),
                false,
            ),
            (
                "geopoint",
                Geopoint,
                &[],
                json!({"lat": 16.46, "lon": 107.59}),
                true,
            ),
            (
                "latitude out of range",
                Geopoint,
                &[],
                json!({"lat": 96.0, "lon": 107.59}),
                false,
            ),
            (
                "reference",
                Reference,
                &[],
                json!("01937a4e-8f3c-7d2a-9b1e-5c6d7e8f9a0b"),
                true,
            ),
            (
                "reference that is not an id",
                Reference,
                &[],
                json!("child-7"),
                false,
            ),
            ("text", Text, &[], json!("Nguyễn Thị Lan"), true),
            ("number is not text", Text, &[], json!(7), false),
        ];
        for (name, kind, choices, value, ok) in cases {
            let result = field(*kind, choices).check_value(value);
            assert_eq!(result.is_ok(), *ok, "{name}: {result:?}");
        }
    }

    #[test]
    fn errors_name_the_rule_and_the_value() {
        let err = field(FieldType::Date, &[])
            .check_value(&json!("2020-02-30"))
            .unwrap_err();
        assert_eq!(err, "\"2020-02-30\" is not a date YYYY-MM-DD");
        let err = field(FieldType::SelectOne, &["m", "f"])
            .check_value(&json!("x"))
            .unwrap_err();
        assert_eq!(err, "\"x\" is not one of m, f");
    }
}
