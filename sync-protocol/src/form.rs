//! Forms: fields, their types and rules, derived fields, and checking values against them.
//!
//! A form version is immutable once published; an edit is checked against the version the
//! phone used. `null` clears a field and fits every type (whether the field may be empty is the
//! `required` rule's business, checked on the record). Every violation names the field, the rule
//! and the value, in English and Vietnamese. `schemas/README.md` documents the file format.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::codes::{RejectCode, Rejection};
pub use crate::date::parse_date;
use crate::edit::CheckedEdit;
use crate::expr;
use crate::ids::{FormId, COMMUNE_FIELD, DELETED_FIELD};
use crate::record::{BrokenRule, Record};

/// The longest text a field may hold, in characters.
pub const MAX_TEXT_CHARS: usize = 10_000;
/// The most items a repeat group may hold.
pub const MAX_REPEAT_ITEMS: usize = 200;
/// The most places a line or an area holds.
pub const MAX_POINTS: usize = 2000;

/// A text in both languages of the forms (Vietnamese in Unicode NFC).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Labels {
    pub vi: String,
    pub en: String,
}

/// One version of a form.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Form {
    pub id: FormId,
    pub version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<Labels>,
    /// The date field that says when the record was collected: it picks the admin units the
    /// record's commune must belong to, and the reporting period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collected_on: Option<String>,
    /// Who collects it: `collaborator` (the village phones), `commune` (the commune office),
    /// … Empty: anyone. A phone offers a collaborator only the forms that name them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub collected_by: Vec<String>,
    /// What a record is called in lists (XLSForm's `instance_name`): an expression over its
    /// fields, e.g. `{"concat": [{"var": "child_name"}, " – ", {"var": "village"}]}`. Without
    /// it, the first text a person typed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_name: Option<Value>,
    pub fields: Vec<FormField>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub derived: Vec<Derived>,
    /// The form's parts, in order: the phone shows each as a page, with its progress. When
    /// given, every field the phone shows ([`FormField::shown`]) is in exactly one of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sections: Vec<Section>,
    /// Where each field is in `fields`, by name: an edit looks up every field it sets.
    #[serde(skip)]
    index: FieldIndex,
}

/// Something worked out from a form on first use and kept: not part of the form's value, so it
/// compares equal always and starts empty in a clone.
struct Memo<T>(std::sync::OnceLock<T>);

impl<T> Default for Memo<T> {
    fn default() -> Self {
        Self(std::sync::OnceLock::new())
    }
}

impl<T> Clone for Memo<T> {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl<T> PartialEq for Memo<T> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl<T> std::fmt::Debug for Memo<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Memo")
    }
}

/// Positions of a form's fields by name.
type FieldIndex = Memo<HashMap<String, usize>>;

/// A field's `pattern`, compiled, so that checking a value does not compile it again; with the
/// source it was compiled from, so that a `pattern` changed since is compiled anew.
type CompiledPattern = Memo<(String, Option<regex_lite::Regex>)>;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FormField {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: FieldType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<Labels>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<Labels>,
    /// Longer guidance for the person filling the form (XLSForm's `guidance_hint`), shown on
    /// request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guidance: Option<Labels>,
    /// Shown but not typed into (XLSForm's `read_only`): it keeps the value the form gives it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub read_only: bool,
    /// Must have a value when the record is created, and may not be cleared later.
    #[serde(default, skip_serializing_if = "is_false")]
    pub required: bool,
    /// An expression: when it is true, the field must have a value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_if: Option<Value>,
    /// An expression the field's value must make true (XLSForm's `constraint`), reading the
    /// field as `{"var": <its name>}` and any other field; checked when the field or a field
    /// it reads is edited, with `constraint_message` as its words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraint: Option<Value>,
    /// An expression: the phone shows the field only when it is true. Display logic only: a
    /// value entered is kept either way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relevant: Option<Value>,
    /// Smallest number, or earliest date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<Value>,
    /// Largest number, or latest date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<Value>,
    /// A regular expression the whole text must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// A date that may not lie after the day it is entered.
    #[serde(default, skip_serializing_if = "is_false")]
    pub not_future: bool,
    /// A date that may not lie before the date in this other field (e.g. date_of_birth).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<String>,
    /// Kept so old records stay readable, but no longer accepted in edits of this version.
    #[serde(default, skip_serializing_if = "is_false")]
    pub retired: bool,
    /// The form's own words when a value breaks one of this field's rules (pattern, min, max,
    /// not_future, not_before), as XLSForm's `constraint_message`: "Số thẻ BHYT gồm 2 chữ cái
    /// và 13 chữ số, ví dụ TE1464620123456".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraint_message: Option<Labels>,
    /// The form's own words when the field is required and empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_message: Option<Labels>,
    /// How the phone shows the field, as XLSForm's `appearance`: `commune` makes a text field
    /// of a commune code a choice among the province's communes by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub appearance: Option<String>,
    /// For a reference: the form of the records it points to (default: `child`, the child
    /// register). The phone offers those records to pick from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub references: Option<String>,
    /// Filled by the phone, not by the person (XLSForm's metadata questions): `start` and
    /// `end` (a `datetime`: when a new record's form was opened, and saved), `today` (a
    /// `date`), `deviceid` and `username` (`text`: the phone's device number, its
    /// collaborator's name). Not shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto: Option<String>,
    /// Which choices the phone offers (XLSForm's `choice_filter`): an expression true for the
    /// choices to offer, reading the other fields by name and the choice's own code and
    /// columns as `{"var": "@name"}`, `{"var": "@column"}`. With one, a code may be listed
    /// more than once (under different columns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub choice_filter: Option<Value>,
    /// The value a new record starts with, which the person may change (XLSForm's `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    /// A default computed when a new record is opened on the phone (XLSForm's `default` as an
    /// expression: `today()`, `${other}`), which the person may change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_expr: Option<Value>,
    /// A value the phone works out and keeps when the question named by `trigger` changes
    /// (XLSForm's `calculate` with a `trigger`: the time a question was answered, say): a
    /// hidden field, stored like an answer, not made again later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calculate: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    /// For a photo: the most pixels on its longer side, to which the phone scales it down
    /// before it is kept (XLSForm's `max-pixels` parameter; 1024 when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pixels: Option<u32>,
    /// For a place: the accuracy in metres the phone waits for before it takes a reading
    /// (XLSForm's `capture-accuracy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    /// For a repeat group: how many items it has (XLSForm's `repeat_count`), an expression the
    /// phone follows, adding items and removing empty ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat_count: Option<Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub choices: Vec<Choice>,
    /// The fields of each item of a repeat group.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FormField>,
    /// A repeat group's calculations, made for each item from its fields (which its rules
    /// read by name, as `${name}`), the item's place (`position`), and the form's fields.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub derived: Vec<Derived>,
    #[serde(skip)]
    compiled: CompiledPattern,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// One part of a form: a title and the fields it holds, in display order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Section {
    pub label: Labels,
    pub fields: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    pub code: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<Labels>,
    /// The choice's other columns (XLSForm's choices sheet), which a `choice_filter` reads
    /// as `{"var": "@column"}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub props: BTreeMap<String, String>,
}

/// A field the server computes from others (`expr`, see [`crate::expr`]); phones may compute it
/// too, with the same expression.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Derived {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: FieldType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<Labels>,
    pub expr: Value,
    /// When this condition is not true, the value is `null` (XLSForm: a calculation in a
    /// group that is not shown is empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relevant: Option<Value>,
    /// Names the version of a configured rule (e.g. the swimming rule), carried into reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_version: Option<String>,
}

impl Derived {
    /// Its value from the values `lookup` gives: `null` while its condition is not true, or
    /// when an input is unknown.
    pub fn value(&self, lookup: &dyn Fn(&str) -> Option<Value>) -> Value {
        let asked = self
            .relevant
            .as_ref()
            .is_none_or(|r| expr::eval(r, lookup) == Ok(Value::Bool(true)));
        match asked {
            true => expr::eval(&self.expr, lookup).unwrap_or(Value::Null),
            false => Value::Null,
        }
    }
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
    Repeat,
    /// Words shown to the person filling the form; never holds a value.
    Note,
    /// A time of day, `HH:MM` or `HH:MM:SS`.
    Time,
    /// A date and time, `YYYY-MM-DDTHH:MM[:SS]`, with an offset (`Z`, `+07:00`) or without.
    Datetime,
    /// The choices put in order (XLSForm's `rank`): every code once, the first ranked first.
    Rank,
    /// A photo: a reference to an attachment (see [`crate::media`]).
    Image,
    /// A sound recording: a reference to an attachment.
    Audio,
    /// A video: a reference to an attachment.
    Video,
    /// Any file: a reference to an attachment.
    File,
    /// A line of places: at least two points, each `{lat, lon}` (and `alt`, `acc`).
    Geotrace,
    /// An area: at least four points, the last the same place as the first.
    Geoshape,
}

impl FieldType {
    /// Whether the field's value is a reference to an attachment.
    pub fn is_media(self) -> bool {
        matches!(self, Self::Image | Self::Audio | Self::Video | Self::File)
    }

    /// Whether a field of this type takes an attachment of `media_type`.
    pub fn takes(self, media_type: &str) -> bool {
        match self {
            Self::Image => media_type.starts_with("image/"),
            Self::Audio => media_type.starts_with("audio/"),
            Self::Video => media_type.starts_with("video/"),
            Self::File => true,
            _ => false,
        }
    }

    /// What a field of this type takes, in English and Vietnamese.
    fn wanted(self) -> (&'static str, &'static str) {
        match self {
            Self::Image => ("a photo (image/…)", "ảnh (image/…)"),
            Self::Audio => ("a sound recording (audio/…)", "bản ghi âm (audio/…)"),
            Self::Video => ("a video (video/…)", "video (video/…)"),
            _ => ("a file", "một tệp"),
        }
    }
}

/// A place as the forms hold it: `{lat, lon}` within range, with its altitude and accuracy in
/// metres when known.
fn is_point(v: &Value) -> bool {
    let lat = v.get("lat").and_then(Value::as_f64);
    let lon = v.get("lon").and_then(Value::as_f64);
    let optional = |k: &str| v.get(k).is_none_or(|x| x.is_null() || x.is_number());
    matches!((lat, lon), (Some(lat), Some(lon))
        if (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon))
        && optional("alt")
        && optional("acc")
        && v.get("acc")
            .and_then(Value::as_f64)
            .is_none_or(|a| a >= 0.0)
}

/// A value that breaks a rule: which field, which rule, which value, in both languages.
#[derive(Clone, Debug, PartialEq)]
pub struct Violation {
    pub field: String,
    pub rule: &'static str,
    pub value: Value,
    pub en: String,
    pub vi: String,
}

impl Violation {
    fn new(field: &str, rule: &'static str, value: &Value, en: String, vi: String) -> Self {
        Self {
            field: field.to_owned(),
            rule,
            value: value.clone(),
            en,
            vi,
        }
    }

    /// As a rejection of the edit `seq`.
    pub fn reject(self, seq: u64) -> Rejection {
        Rejection {
            seq,
            code: RejectCode::InvalidValue,
            message: format!("{}: {}", self.field, self.en),
            message_vi: Some(format!("{}: {}", self.field, self.vi)),
            rule: Some(self.rule.to_owned()),
            field: Some(self.field),
        }
    }
}

impl Form {
    pub fn field(&self, name: &str) -> Option<&FormField> {
        let index = self.index.0.get_or_init(|| {
            let mut index = HashMap::with_capacity(self.fields.len());
            for (i, f) in self.fields.iter().enumerate() {
                index.entry(f.name.clone()).or_insert(i);
            }
            index
        });
        match index.get(name).and_then(|&i| self.fields.get(i)) {
            Some(f) if f.name == name => Some(f),
            // `fields` changed since the index was built: look the slow way.
            _ => self.fields.iter().find(|f| f.name == name),
        }
    }

    /// Checks the form itself: unique names and codes, rules that refer to fields it has,
    /// expressions that parse, patterns that compile.
    pub fn validate(&self) -> Result<(), String> {
        self.check_labels()?;
        let mut names = BTreeSet::new();
        check_fields(&self.fields, &mut names)?;
        self.check_sections()?;
        if let Some(d) = &self.collected_on {
            if self.field(d).map(|f| f.kind) != Some(FieldType::Date) {
                return Err(format!(
                    "collected_on names {d:?}, which is not a date field"
                ));
            }
        }
        // The fields and calculations of repeat groups' items.
        let inner: BTreeSet<String> = self
            .fields
            .iter()
            .filter(|f| f.kind == FieldType::Repeat)
            .flat_map(|f| {
                f.fields
                    .iter()
                    .map(|s| s.name.clone())
                    .chain(f.derived.iter().map(|d| d.name.clone()))
            })
            .collect();
        let items = self
            .fields
            .iter()
            .filter(|f| f.kind == FieldType::Repeat)
            .flat_map(|f| f.fields.iter());
        for f in self.fields.iter().chain(items) {
            if let Some(other) = &f.not_before {
                if self.field(other).map(|o| o.kind) != Some(FieldType::Date) {
                    return Err(format!(
                        "{}: not_before names {other:?}, which is not a date field",
                        f.name
                    ));
                }
            }
            for (rule, cond) in [
                ("required_if", &f.required_if),
                ("relevant", &f.relevant),
                ("constraint", &f.constraint),
                ("choice_filter", &f.choice_filter),
                ("default_expr", &f.default_expr),
                ("repeat_count", &f.repeat_count),
                ("calculate", &f.calculate),
            ] {
                let Some(cond) = cond else { continue };
                for v in expr::vars(cond) {
                    // A choice filter reads the choice's own columns as `@column`.
                    if rule == "choice_filter" && v.starts_with('@') {
                        continue;
                    }
                    // A rule may read a derived field (XLSForm: a calculation), and a repeat
                    // group's fields (across its items, or in its own item).
                    if !names.contains(&v)
                        && !self.derived.iter().any(|d| d.name == v)
                        && !inner.contains(&v)
                    {
                        return Err(format!(
                            "{}: {rule} reads {v:?}, which the form does not have",
                            f.name
                        ));
                    }
                }
                expr::eval(cond, &|_| None).map_err(|e| format!("{}: {rule}: {e}", f.name))?;
            }
        }
        for f in &self.fields {
            if let Some(t) = &f.trigger {
                if self.field(t).is_none() || f.calculate.is_none() {
                    return Err(format!(
                        "{}: trigger names {t:?}, which the form does not have, or there is no calculate",
                        f.name
                    ));
                }
            }
        }
        if let Some(name) = &self.instance_name {
            if let Some(v) = expr::vars(name).into_iter().find(|v| !names.contains(v)) {
                return Err(format!(
                    "instance_name reads {v:?}, which the form does not have"
                ));
            }
            expr::eval(name, &|_| None).map_err(|e| format!("instance_name: {e}"))?;
        }
        for f in self.fields.iter().filter(|f| f.kind == FieldType::Repeat) {
            for d in &f.derived {
                crate::ids::check_field_name(&d.name).map_err(|e| format!("derived {e}"))?;
                for rule in std::iter::once(&d.expr).chain(&d.relevant) {
                    if let Some(v) = expr::vars(rule).into_iter().find(|v| {
                        !names.contains(v)
                            && !inner.contains(v)
                            && !self.derived.iter().any(|d| &d.name == v)
                    }) {
                        return Err(format!(
                            "{}: derived {}: reads {v:?}, which the form does not have",
                            f.name, d.name
                        ));
                    }
                    expr::eval(rule, &|_| None)
                        .map_err(|e| format!("{}: derived {}: {e}", f.name, d.name))?;
                }
            }
        }
        for d in &self.derived {
            crate::ids::check_field_name(&d.name).map_err(|e| format!("derived {e}"))?;
            for v in expr::vars(&d.expr) {
                if !names.contains(&v) && !inner.contains(&v) {
                    return Err(format!(
                        "derived {}: reads {v:?}, which is not an earlier field",
                        d.name
                    ));
                }
            }
            expr::eval(&d.expr, &|_| None).map_err(|e| format!("derived {}: {e}", d.name))?;
            if let Some(cond) = &d.relevant {
                if let Some(v) = expr::vars(cond)
                    .into_iter()
                    .find(|v| !names.contains(v) && !self.derived.iter().any(|d| &d.name == v))
                {
                    return Err(format!(
                        "derived {}: relevant reads {v:?}, which the form does not have",
                        d.name
                    ));
                }
                expr::eval(cond, &|_| None)
                    .map_err(|e| format!("derived {} relevant: {e}", d.name))?;
            }
            if !names.insert(d.name.clone()) {
                return Err(format!("{} is defined twice", d.name));
            }
        }
        Ok(())
    }

    /// Checks every field of `edit` on its own; `today` (`YYYY-MM-DD`) is for `not_future`.
    /// The error names the first bad field.
    pub fn check_edit(&self, edit: &CheckedEdit, today: &str) -> Result<(), Rejection> {
        for (name, change) in &edit.fields {
            let reject =
                |code, message: String| Rejection::new(edit.seq, code, Some(name), message);
            if name == DELETED_FIELD {
                if !(change.value.is_boolean() || change.value.is_null()) {
                    return Err(Violation::new(
                        name,
                        "type",
                        &change.value,
                        format!("must be true or false, got {}", brief(&change.value)),
                        format!("phải là đúng hoặc sai, nhận được {}", brief(&change.value)),
                    )
                    .reject(edit.seq));
                }
                continue;
            }
            if name == COMMUNE_FIELD {
                // A move: the value is the commune the record moves to, the edit's own.
                if change.value.as_str() != Some(edit.commune.as_str()) {
                    return Err(Violation::new(
                        name,
                        "commune_matches",
                        &change.value,
                        format!(
                            "a move must name the edit's commune {}, got {}",
                            edit.commune,
                            brief(&change.value)
                        ),
                        format!(
                            "khi chuyển xã phải ghi đúng xã của bản sửa {}, nhận được {}",
                            edit.commune,
                            brief(&change.value)
                        ),
                    )
                    .reject(edit.seq));
                }
                continue;
            }
            if self.derived.iter().any(|d| &d.name == name) {
                return Err(reject(
                    RejectCode::UnknownField,
                    format!("{name} is derived from other fields by the server and cannot be set"),
                ));
            }
            let field = match self.field(name) {
                Some(f) if !f.retired => f,
                Some(_) => {
                    return Err(reject(
                        RejectCode::UnknownField,
                        format!(
                            "{name} is retired in form {} version {}",
                            self.id, self.version
                        ),
                    ))
                }
                None => {
                    return Err(reject(
                        RejectCode::UnknownField,
                        format!(
                            "form {} version {} has no field {name:?}",
                            self.id, self.version
                        ),
                    ))
                }
            };
            field
                .check_value(&change.value, today)
                .map_err(|v| v.reject(edit.seq))?;
        }
        Ok(())
    }

    /// Checks the rules that span fields, on the record as it would be after an edit that
    /// touched the fields for which `touched` is true. Only rules the edit could have broken
    /// are checked, so an old record that a newer rule would refuse can still be corrected field
    /// by field.
    ///
    /// `seen` is true for a field whose current value the edit's author had seen (every field
    /// it touched, and those whose values it provably saw). A rule broken on fields the author
    /// saw is the author's: the error refuses the edit. A rule that holds in the author's view
    /// and breaks only because another phone's concurrent edit merged in is nobody's mistake:
    /// it is returned in the list, for the record to be flagged until a person settles it.
    pub fn check_record(
        &self,
        record: &Record,
        touched: &dyn Fn(&str) -> bool,
        is_new: bool,
        seen: &dyn Fn(&str) -> bool,
    ) -> Result<Vec<Violation>, Violation> {
        let mut merged = Vec::new();
        let mut broken = |v: Violation, fields: &[&str]| {
            if fields.iter().all(|f| seen(f)) {
                Err(v)
            } else {
                merged.push(v);
                Ok(())
            }
        };
        let current = self.values_of(record);
        // A delete clears every field: nothing is required of a deleted record.
        let deleted = record.is_deleted();
        for f in self.fields.iter().filter(|f| !f.retired && !deleted) {
            let value = current(&f.name);
            let mine = touched(&f.name);
            // A question its condition hides is not asked, so it cannot be required (XLSForm's
            // rule; the phone hides it unless the condition is true).
            let asked = f.asked(&current);
            if f.required && asked && value.is_none() && (is_new || mine) {
                return Err(f.missing(&f.name));
            }
            if let Some(cond) = f.required_if.as_ref().filter(|_| asked) {
                let vars = expr::vars(cond);
                let relevant = is_new || mine || vars.iter().any(|v| touched(v));
                if relevant
                    && value.is_none()
                    && expr::eval(cond, &current) == Ok(Value::Bool(true))
                {
                    let (when_en, when_vi) = self.describe(cond);
                    let v = match &f.required_message {
                        Some(m) => Violation::new(
                            &f.name,
                            "required_if",
                            &Value::Null,
                            m.en.clone(),
                            m.vi.clone(),
                        ),
                        None => Violation::new(
                            &f.name,
                            "required_if",
                            &Value::Null,
                            format!("{} is required once {when_en} is filled in.", f.label_en()),
                            format!("Cần nhập {} khi đã có {when_vi}.", f.label_vi()),
                        ),
                    };
                    let mut fields: Vec<&str> = vars.iter().map(String::as_str).collect();
                    fields.push(&f.name);
                    broken(v, &fields)?;
                }
            }
            if let Some(v) = self.not_before_violation(f, record) {
                let other = f.not_before.as_deref().unwrap_or_default();
                if mine || touched(other) {
                    broken(v, &[&f.name, other])?;
                }
            }
            if let (FieldType::Repeat, Some(Value::Array(items)), true) =
                (f.kind, &value, is_new || mine)
            {
                f.check_items(items, &current)?;
            }
            if let Some(rule) = &f.constraint {
                let vars = expr::vars(rule);
                if mine || vars.iter().any(|v| touched(v)) {
                    if let Some(v) = self.constraint_violation(f, record) {
                        let mut fields: Vec<&str> = vars.iter().map(String::as_str).collect();
                        fields.push(&f.name);
                        broken(v, &fields)?;
                    }
                }
            }
        }
        Ok(merged)
    }

    /// A field's `constraint` made false by the record's values (unknown is not false).
    fn constraint_violation(&self, f: &FormField, record: &Record) -> Option<Violation> {
        let current = self.values_of(record);
        let value = current(&f.name)?;
        f.breaks_constraint(&current).then(|| {
            f.constraint(
                "constraint",
                &value,
                format!("{} does not meet the form's rule.", f.label_en()),
                format!("{} không đúng điều kiện của biểu mẫu.", f.label_vi()),
            )
        })
    }

    fn not_before_violation(&self, f: &FormField, record: &Record) -> Option<Violation> {
        let current = |name: &str| record.value(name).filter(|v| !v.is_null());
        let other = f.not_before.as_ref()?;
        let Some(Value::String(date)) = current(&f.name) else {
            return None;
        };
        let Some(Value::String(floor)) = current(other) else {
            return None;
        };
        let (other_en, other_vi) = match self.field(other) {
            Some(o) => (o.label_en().to_owned(), o.label_vi().to_owned()),
            None => (other.clone(), other.clone()),
        };
        (date.as_str() < floor.as_str()).then(|| {
            let (day, floor) = (day_text(date), day_text(floor));
            f.constraint(
                "not_before",
                &Value::String(date.clone()),
                format!(
                    "{} ({day}) cannot be before {other_en} ({floor}).",
                    f.label_en()
                ),
                format!(
                    "{} ({day}) không được trước {other_vi} ({floor}).",
                    f.label_vi()
                ),
            )
        })
    }

    /// The fields a condition reads, by their labels: (English, Vietnamese).
    fn describe(&self, cond: &Value) -> (String, String) {
        let names = expr::vars(cond);
        let label = |n: &String, vi: bool| match self.field(n) {
            Some(f) if vi => f.label_vi().to_owned(),
            Some(f) => f.label_en().to_owned(),
            None => n.clone(),
        };
        (
            names
                .iter()
                .map(|n| label(n, false))
                .collect::<Vec<_>>()
                .join(", "),
            names
                .iter()
                .map(|n| label(n, true))
                .collect::<Vec<_>>()
                .join(", "),
        )
    }

    /// Whether a rule linking fields, flagged on a record, still breaks there.
    pub fn still_broken(&self, record: &Record, rule: &BrokenRule) -> bool {
        let Some(f) = self.field(&rule.field) else {
            return false;
        };
        if record.is_deleted() {
            return false;
        }
        let current = self.values_of(record);
        match rule.rule.as_str() {
            "required_if" => f.required_if.as_ref().is_some_and(|cond| {
                current(&f.name).is_none() && expr::eval(cond, &current) == Ok(Value::Bool(true))
            }),
            "not_before" => self.not_before_violation(f, record).is_some(),
            "constraint" => self.constraint_violation(f, record).is_some(),
            _ => false,
        }
    }

    /// The fields a linked rule on `field` reads: the field and the ones it is compared with.
    pub fn rule_fields(&self, rule: &BrokenRule) -> Vec<String> {
        let mut out = vec![rule.field.clone()];
        if let Some(f) = self.field(&rule.field) {
            match rule.rule.as_str() {
                "required_if" => {
                    out.extend(f.required_if.iter().flat_map(expr::vars));
                }
                "not_before" => out.extend(f.not_before.clone()),
                "constraint" => out.extend(f.constraint.iter().flat_map(expr::vars)),
                _ => {}
            }
        }
        out
    }

    /// A record's values as the form's rules read them: its fields, then its derived fields
    /// (a rule may read a calculation). Empty values are `None`.
    pub fn values_of<'a>(&'a self, record: &'a Record) -> impl Fn(&str) -> Option<Value> + 'a {
        let derived = self.derive(record);
        move |name: &str| {
            let top = |name: &str| {
                record
                    .value(name)
                    .filter(|v| !v.is_null())
                    .cloned()
                    .or_else(|| derived.get(name).filter(|v| !v.is_null()).cloned())
            };
            top(name).or_else(|| self.across_items(name, &top))
        }
    }

    /// A field or calculation of a repeat group, read from outside it: its value in each
    /// item, in order (what `count`, `sum` and `indexed-repeat` read).
    pub fn across_items(&self, name: &str, value: &dyn Fn(&str) -> Option<Value>) -> Option<Value> {
        let repeat = self.fields.iter().find(|f| {
            f.kind == FieldType::Repeat
                && (f.fields.iter().any(|s| s.name == name)
                    || f.derived.iter().any(|d| d.name == name))
        })?;
        let items = match value(&repeat.name) {
            Some(Value::Array(items)) => items,
            _ => Vec::new(),
        };
        Some(Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    repeat.item_values(item, i + 1, value)(name).unwrap_or(Value::Null)
                })
                .collect(),
        ))
    }

    /// The derived fields of a record, from its current (provisional) values. Unknown inputs
    /// give `null`.
    pub fn derive(&self, record: &Record) -> BTreeMap<String, Value> {
        self.derive_from(&|name| record.value(name).cloned())
    }

    /// The derived fields, in the form's order, from the values `value` gives (each reads the
    /// ones before it too). Unknown inputs give `null`.
    pub fn derive_from(&self, value: &dyn Fn(&str) -> Option<Value>) -> BTreeMap<String, Value> {
        let mut out: BTreeMap<String, Value> = BTreeMap::new();
        for d in &self.derived {
            let result = {
                let lookup = |name: &str| {
                    out.get(name)
                        .cloned()
                        .or_else(|| value(name))
                        .or_else(|| self.across_items(name, value))
                };
                d.value(&lookup)
            };
            out.insert(d.name.clone(), result);
        }
        out
    }
}

impl Form {
    /// Vietnamese text must be in Unicode NFC: the same word typed two ways must compare equal.
    fn check_labels(&self) -> Result<(), String> {
        use unicode_normalization::is_nfc;
        fn field_labels<'a>(fields: &'a [FormField], out: &mut Vec<(String, &'a Labels)>) {
            for f in fields {
                for l in [&f.label, &f.hint].into_iter().flatten() {
                    out.push((f.name.clone(), l));
                }
                for c in &f.choices {
                    if let Some(l) = &c.label {
                        out.push((format!("{} choice {}", f.name, c.code), l));
                    }
                }
                field_labels(&f.fields, out);
            }
        }
        let mut labels: Vec<(String, &Labels)> =
            self.title.iter().map(|t| ("title".to_owned(), t)).collect();
        field_labels(&self.fields, &mut labels);
        for d in &self.derived {
            if let Some(l) = &d.label {
                labels.push((d.name.clone(), l));
            }
        }
        match labels
            .iter()
            .find(|(_, l)| !is_nfc(&l.vi) || !is_nfc(&l.en))
        {
            Some((what, _)) => Err(format!("the label of {what} is not in Unicode NFC")),
            None => Ok(()),
        }
    }
}

/// What a new version of a form drops, for the publisher to check against stored records.
#[derive(Debug, Default, PartialEq)]
pub struct Evolution {
    /// (field path, choice code) no longer offered; refused if a record uses it.
    pub removed_choices: Vec<(String, String)>,
}

impl Form {
    /// Whether `next` may follow this version: it may add fields and choices and retire fields;
    /// it may not remove a field or change a field's type. Every problem is listed.
    pub fn evolve_to(&self, next: &Form) -> Result<Evolution, Vec<String>> {
        let mut problems = Vec::new();
        if next.id != self.id {
            problems.push(format!("form id {} is not {}", next.id, self.id));
        }
        if next.version <= self.version {
            problems.push(format!(
                "version {} is not above the published version {}",
                next.version, self.version
            ));
        }
        let mut evolution = Evolution::default();
        compare_fields(
            "",
            &self.fields,
            &next.fields,
            &mut problems,
            &mut evolution,
        );
        if problems.is_empty() {
            Ok(evolution)
        } else {
            Err(problems)
        }
    }
}

fn compare_fields(
    prefix: &str,
    old: &[FormField],
    new: &[FormField],
    problems: &mut Vec<String>,
    evolution: &mut Evolution,
) {
    for o in old {
        let path = format!("{prefix}{}", o.name);
        let Some(n) = new.iter().find(|n| n.name == o.name) else {
            problems.push(format!(
                "{path} is removed: retire it instead (\"retired\": true) so the records that hold it stay readable"
            ));
            continue;
        };
        if n.kind != o.kind {
            problems.push(format!(
                "{path} changes type from {:?} to {:?}: a published field keeps its type; add a new field instead",
                o.kind, n.kind
            ));
            continue;
        }
        for c in &o.choices {
            if !n.choices.iter().any(|x| x.code == c.code) {
                evolution
                    .removed_choices
                    .push((path.clone(), c.code.clone()));
            }
        }
        if o.kind == FieldType::Repeat {
            compare_fields(
                &format!("{path}."),
                &o.fields,
                &n.fields,
                problems,
                evolution,
            );
        }
    }
}

impl Form {
    /// Sections name fields the form has, each once, and leave out no field in use.
    fn check_sections(&self) -> Result<(), String> {
        if self.sections.is_empty() {
            return Ok(());
        }
        let mut placed = BTreeSet::new();
        for (i, s) in self.sections.iter().enumerate() {
            let which = format!("section {} ({:?})", i + 1, s.label.en);
            if s.fields.is_empty() {
                return Err(format!("{which} holds no field"));
            }
            for name in &s.fields {
                if self.field(name).is_none() {
                    return Err(format!("{which} names {name:?}, which is not a field"));
                }
                if !placed.insert(name.as_str()) {
                    return Err(format!("{which}: field {name} is in two sections"));
                }
            }
        }
        match self
            .fields
            .iter()
            .find(|f| f.shown() && !placed.contains(f.name.as_str()))
        {
            Some(f) => Err(format!("field {} is in no section", f.name)),
            None => Ok(()),
        }
    }
}

fn check_fields(fields: &[FormField], names: &mut BTreeSet<String>) -> Result<(), String> {
    for f in fields {
        crate::ids::check_field_name(&f.name)?;
        if f.name == DELETED_FIELD || f.name == COMMUNE_FIELD || !names.insert(f.name.clone()) {
            return Err(format!("field {} is defined twice or reserved", f.name));
        }
        let mut codes = BTreeSet::new();
        for c in &f.choices {
            if !codes.insert(c.code.as_str()) && f.choice_filter.is_none() {
                return Err(format!("{}: choice {} is listed twice", f.name, c.code));
            }
        }
        if matches!(
            f.kind,
            FieldType::SelectOne | FieldType::SelectMany | FieldType::Rank
        ) && f.choices.is_empty()
        {
            return Err(format!("{}: a select field needs choices", f.name));
        }
        if let Some(default) = &f.default {
            f.check_value(default, "9999-12-31")
                .map_err(|v| format!("{}: default {default}: {}", f.name, v.en))?;
        }
        if let Some(auto) = &f.auto {
            let wanted = match auto.as_str() {
                "start" | "end" => FieldType::Datetime,
                "today" => FieldType::Date,
                "deviceid" | "username" => FieldType::Text,
                other => {
                    return Err(format!(
                        "{}: auto {other:?} is not start, end, today, deviceid or username",
                        f.name
                    ))
                }
            };
            if f.kind != wanted {
                return Err(format!(
                    "{}: auto {auto:?} fills a {wanted:?} field, not {:?}",
                    f.name, f.kind
                ));
            }
        }
        if let Some(p) = &f.pattern {
            regex_lite::Regex::new(p)
                .map_err(|e| format!("{}: pattern does not compile: {e}", f.name))?;
        }
        if f.kind == FieldType::Repeat {
            if f.fields.is_empty() {
                return Err(format!("{}: a repeat group needs fields", f.name));
            }
            check_fields(&f.fields, &mut BTreeSet::new())
                .map_err(|e| format!("{}: {e}", f.name))?;
        }
    }
    Ok(())
}

/// `HH:MM`, `HH:MM:SS` or `HH:MM:SS.sss`, 24-hour.
pub fn is_time(s: &str) -> bool {
    let b = s.as_bytes();
    let two = |i: usize, max: u8| {
        b.get(i..i + 2).is_some_and(|d| {
            d[0].is_ascii_digit()
                && d[1].is_ascii_digit()
                && (d[0] - b'0') * 10 + (d[1] - b'0') <= max
        })
    };
    let base = b.len() >= 5 && two(0, 23) && b[2] == b':' && two(3, 59);
    match b.len() {
        5 => base,
        8 => base && b[5] == b':' && two(6, 59),
        10..=12 => {
            base && b[5] == b':'
                && two(6, 59)
                && b[8] == b'.'
                && b[9..].iter().all(u8::is_ascii_digit)
        }
        _ => false,
    }
}

/// A time as [`is_time`], then nothing, `Z`, or an offset `±HH:MM`.
fn is_time_with_offset(s: &str) -> bool {
    if let Some(t) = s.strip_suffix('Z') {
        return is_time(t);
    }
    // By bytes: a value is any text a phone sent, and a cut inside a character must not panic.
    let b = s.as_bytes();
    match b.len().checked_sub(6) {
        Some(i) if matches!(b[i], b'+' | b'-') && s.is_char_boundary(i) => {
            is_time(&s[i + 1..]) && is_time(&s[..i])
        }
        _ => is_time(s),
    }
}

/// A date as Việt Nam writes it (`2020-03-01` → `01/03/2020`); other text as it is.
pub fn day_text(date: &str) -> String {
    match (date.get(0..4), date.get(5..7), date.get(8..10)) {
        (Some(y), Some(m), Some(d)) if date.len() == 10 && date.as_bytes()[4] == b'-' => {
            format!("{d}/{m}/{y}")
        }
        _ => date.to_owned(),
    }
}

impl FormField {
    /// Whether the phone shows the field to the person filling the form: not retired, not
    /// filled by the phone itself (`auto`), not hidden.
    pub fn shown(&self) -> bool {
        !self.retired && self.auto.is_none() && self.appearance.as_deref() != Some("hidden")
    }

    /// Whether the field is asked, given the record's values: its `relevant` condition, if it
    /// has one, is true (XLSForm's rule: unknown is not shown).
    pub fn asked(&self, value: &dyn Fn(&str) -> Option<Value>) -> bool {
        self.relevant
            .as_ref()
            .is_none_or(|r| expr::eval(r, value) == Ok(Value::Bool(true)))
    }

    /// The calculations of item `position` (from 1) of this repeat group, in order; `outer`
    /// gives the form's values.
    pub fn derive_item(
        &self,
        item: &Value,
        position: usize,
        outer: &dyn Fn(&str) -> Option<Value>,
    ) -> BTreeMap<String, Value> {
        let mut out: BTreeMap<String, Value> = BTreeMap::new();
        for d in &self.derived {
            let result = {
                let lookup = |name: &str| self.item_value(item, position, &out, name, outer);
                d.value(&lookup)
            };
            out.insert(d.name.clone(), result);
        }
        out
    }

    /// A value as a rule inside an item of this repeat group reads it: the item's own fields
    /// and calculations, its place as `@position`, else the form's.
    fn item_value(
        &self,
        item: &Value,
        position: usize,
        derived: &BTreeMap<String, Value>,
        name: &str,
        outer: &dyn Fn(&str) -> Option<Value>,
    ) -> Option<Value> {
        if name == "@position" {
            return Some(Value::from(position));
        }
        if self.fields.iter().any(|f| f.name == name) {
            return item.get(name).filter(|v| !v.is_null()).cloned();
        }
        if self.derived.iter().any(|d| d.name == name) {
            return derived.get(name).filter(|v| !v.is_null()).cloned();
        }
        outer(name)
    }

    /// The values a rule inside item `position` of this repeat reads (see
    /// [`FormField::derive_item`]).
    pub fn item_values<'a>(
        &'a self,
        item: &'a Value,
        position: usize,
        outer: &'a dyn Fn(&str) -> Option<Value>,
    ) -> impl Fn(&str) -> Option<Value> + 'a {
        let derived = self.derive_item(item, position, outer);
        move |name: &str| self.item_value(item, position, &derived, name, outer)
    }

    /// The rules of a repeat group's items: each field asked (its condition true in its
    /// item) is required as the form says and keeps its constraint.
    fn check_items(
        &self,
        items: &[Value],
        outer: &dyn Fn(&str) -> Option<Value>,
    ) -> Result<(), Violation> {
        let (en, vi) = (self.label_en(), self.label_vi());
        for (i, item) in items.iter().enumerate() {
            let inner = self.item_values(item, i + 1, outer);
            let place = |mut e: Violation| {
                e.field = format!("{}[{}].{}", self.name, i + 1, e.field);
                e.en = format!("{en}, item {}: {}", i + 1, e.en);
                e.vi = format!("{vi}, mục {}: {}", i + 1, e.vi);
                e
            };
            for sub in self.fields.iter().filter(|s| !s.retired && s.asked(&inner)) {
                match inner(&sub.name) {
                    None if sub.is_required(&inner) => return Err(place(sub.missing(&sub.name))),
                    Some(v) if sub.breaks_constraint(&inner) => {
                        return Err(place(sub.constraint(
                            "constraint",
                            &v,
                            format!("{} does not meet the form's rule.", sub.label_en()),
                            format!("{} không đúng điều kiện của biểu mẫu.", sub.label_vi()),
                        )))
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Whether the phone offers `choice`, given the record's values: the field's
    /// `choice_filter`, reading the choice's code as `@name` and its columns as `@column`, is
    /// true (or there is none).
    pub fn offered(&self, choice: &Choice, value: &dyn Fn(&str) -> Option<Value>) -> bool {
        let Some(filter) = &self.choice_filter else {
            return true;
        };
        let lookup = |name: &str| match name.strip_prefix('@') {
            Some("name") => Some(Value::String(choice.code.clone())),
            Some(column) => choice.props.get(column).cloned().map(Value::String),
            None => value(name),
        };
        expr::eval(filter, &lookup).is_ok_and(|v| v == Value::Bool(true))
    }

    /// Whether the field must have a value, given the record's values: `required`, or a
    /// `required_if` condition that is true.
    pub fn is_required(&self, value: &dyn Fn(&str) -> Option<Value>) -> bool {
        self.required
            || self
                .required_if
                .as_ref()
                .is_some_and(|c| expr::eval(c, value) == Ok(Value::Bool(true)))
    }

    /// Whether the field's value breaks its `constraint` expression (unknown is not broken;
    /// no value breaks nothing).
    pub fn breaks_constraint(&self, value: &dyn Fn(&str) -> Option<Value>) -> bool {
        let Some(rule) = &self.constraint else {
            return false;
        };
        value(&self.name).is_some_and(|v| !v.is_null())
            && expr::eval(rule, value) == Ok(Value::Bool(false))
    }

    /// The field's name as people read it, in English and in Vietnamese.
    pub fn label_en(&self) -> &str {
        self.label
            .as_ref()
            .map(|l| l.en.as_str())
            .filter(|s| !s.is_empty())
            .unwrap_or(&self.name)
    }

    pub fn label_vi(&self) -> &str {
        self.label
            .as_ref()
            .map(|l| l.vi.as_str())
            .filter(|s| !s.is_empty())
            .unwrap_or(&self.name)
    }

    /// A broken constraint of this field: the form's own words when it gives them, else these.
    fn constraint(&self, rule: &'static str, value: &Value, en: String, vi: String) -> Violation {
        match &self.constraint_message {
            Some(m) => Violation::new(&self.name, rule, value, m.en.clone(), m.vi.clone()),
            None => Violation::new(&self.name, rule, value, en, vi),
        }
    }

    /// This field, required and empty.
    fn missing(&self, name: &str) -> Violation {
        match &self.required_message {
            Some(m) => Violation::new(name, "required", &Value::Null, m.en.clone(), m.vi.clone()),
            None => Violation::new(
                name,
                "required",
                &Value::Null,
                format!("{} is required.", self.label_en()),
                format!("Chưa nhập {}.", self.label_vi()),
            ),
        }
    }

    /// Whether the whole of `text` matches `pattern` (this field's). A pattern that does not
    /// compile refuses nothing: forms are validated when they are published.
    fn matches(&self, pattern: &str, text: &str) -> bool {
        let compile = || regex_lite::Regex::new(&format!("^(?:{pattern})$")).ok();
        let (source, regex) = self
            .compiled
            .0
            .get_or_init(|| (pattern.to_owned(), compile()));
        match source == pattern {
            true => regex.as_ref().is_none_or(|r| r.is_match(text)),
            false => compile().is_none_or(|r| r.is_match(text)),
        }
    }

    /// Whether `value` fits this field's type and rules; `today` is `YYYY-MM-DD`.
    pub fn check_value(&self, value: &Value, today: &str) -> Result<(), Violation> {
        if value.is_null() {
            return Ok(());
        }
        let (en, vi) = (self.label_en(), self.label_vi());
        let bad =
            |rule, en: String, vi: String| Err(Violation::new(&self.name, rule, value, en, vi));
        let broken = |rule, en: String, vi: String| Err(self.constraint(rule, value, en, vi));
        let wrong_type = |what: &str, vi_what: &str| {
            Err(Violation::new(
                &self.name,
                "type",
                value,
                format!("{en} must be {what}, not {}.", brief(value)),
                format!("{vi} phải là {vi_what}, không phải {}.", brief(value)),
            ))
        };
        match self.kind {
            FieldType::Text => {
                let Some(s) = value.as_str() else {
                    return wrong_type("text", "chữ");
                };
                let n = s.chars().count();
                if n > MAX_TEXT_CHARS {
                    return bad(
                        "max_length",
                        format!("{en} is {n} characters long, over {MAX_TEXT_CHARS}."),
                        format!("{vi} dài {n} ký tự, quá mức {MAX_TEXT_CHARS}."),
                    );
                }
                if let Some(p) = &self.pattern {
                    if !self.matches(p, s) {
                        return broken(
                            "pattern",
                            format!("{en} is not in the expected form: {}.", brief(value)),
                            format!("{vi} không đúng dạng: {}.", brief(value)),
                        );
                    }
                }
            }
            FieldType::Integer | FieldType::Decimal => {
                let ok = if self.kind == FieldType::Integer {
                    value.is_i64() || value.is_u64()
                } else {
                    value.is_number()
                };
                if !ok {
                    return if self.kind == FieldType::Integer {
                        wrong_type("a whole number", "số nguyên")
                    } else {
                        wrong_type("a number", "một số")
                    };
                }
                let x = value.as_f64().unwrap_or(0.0);
                if let Some(min) = self.min.as_ref().and_then(Value::as_f64) {
                    if x < min {
                        return broken(
                            "min",
                            format!("{en} must be at least {min}; it is {x}."),
                            format!("{vi} phải từ {min} trở lên; đã nhập {x}."),
                        );
                    }
                }
                if let Some(max) = self.max.as_ref().and_then(Value::as_f64) {
                    if x > max {
                        return broken(
                            "max",
                            format!("{en} must be at most {max}; it is {x}."),
                            format!("{vi} tối đa là {max}; đã nhập {x}."),
                        );
                    }
                }
            }
            FieldType::Boolean => {
                if !value.is_boolean() {
                    return wrong_type("yes or no", "có hoặc không");
                }
            }
            FieldType::Date => {
                let Some(s) = value.as_str().filter(|s| parse_date(s).is_some()) else {
                    return wrong_type("a date", "một ngày");
                };
                let day = day_text(s);
                if self.not_future && s > today {
                    return broken(
                        "not_future",
                        format!("{en} ({day}) cannot be after today."),
                        format!("{vi} ({day}) không được sau hôm nay."),
                    );
                }
                if let Some(min) = self.min.as_ref().and_then(Value::as_str) {
                    if s < min {
                        return broken(
                            "min",
                            format!("{en} ({day}) cannot be before {}.", day_text(min)),
                            format!("{vi} ({day}) không được trước {}.", day_text(min)),
                        );
                    }
                }
                if let Some(max) = self.max.as_ref().and_then(Value::as_str) {
                    if s > max {
                        return broken(
                            "max",
                            format!("{en} ({day}) cannot be after {}.", day_text(max)),
                            format!("{vi} ({day}) không được sau {}.", day_text(max)),
                        );
                    }
                }
            }
            FieldType::Note => {
                return bad(
                    "note",
                    format!("{en} is a note: it holds no value."),
                    format!("{vi} là lời dặn: không nhận giá trị."),
                );
            }
            FieldType::Time => {
                if !value.as_str().is_some_and(is_time) {
                    return wrong_type("a time (HH:MM)", "một giờ (HH:MM)");
                }
            }
            FieldType::Datetime => {
                let ok = value.as_str().is_some_and(|s| {
                    s.split_once('T')
                        .is_some_and(|(d, t)| parse_date(d).is_some() && is_time_with_offset(t))
                });
                if !ok {
                    return wrong_type(
                        "a date and time (YYYY-MM-DDTHH:MM)",
                        "ngày và giờ (YYYY-MM-DDTHH:MM)",
                    );
                }
            }
            FieldType::Reference => {
                let Some(s) = value.as_str().filter(|s| uuid::Uuid::parse_str(s).is_ok()) else {
                    return wrong_type("a record", "một hồ sơ");
                };
                let _ = s;
            }
            FieldType::Geopoint => {
                if !is_point(value) {
                    return wrong_type(
                        "a place (latitude, longitude)",
                        "một vị trí (vĩ độ, kinh độ)",
                    );
                }
            }
            FieldType::Geotrace | FieldType::Geoshape => {
                let shape = self.kind == FieldType::Geoshape;
                let points = value
                    .as_array()
                    .filter(|p| p.len() <= MAX_POINTS && p.iter().all(is_point));
                let Some(points) = points else {
                    return wrong_type("a list of places", "danh sách các vị trí");
                };
                let enough = if shape { 4 } else { 2 };
                if points.len() < enough {
                    return bad(
                        "points",
                        format!(
                            "{en} needs at least {enough} places; it has {}.",
                            points.len()
                        ),
                        format!("{vi} cần ít nhất {enough} vị trí; mới có {}.", points.len()),
                    );
                }
                let same = |a: &Value, b: &Value| {
                    a.get("lat") == b.get("lat") && a.get("lon") == b.get("lon")
                };
                if shape && !same(&points[0], &points[points.len() - 1]) {
                    return bad(
                        "closed",
                        format!("{en}: an area ends where it starts."),
                        format!("{vi}: một vùng phải kết thúc ở vị trí bắt đầu."),
                    );
                }
            }
            FieldType::Image | FieldType::Audio | FieldType::Video | FieldType::File => {
                let Some(a) = crate::media::Attachment::of(value) else {
                    return wrong_type(
                        "an attachment (sha256, size, type)",
                        "một tệp đính kèm (sha256, size, type)",
                    );
                };
                if !self.kind.takes(&a.media_type) {
                    let (want_en, want_vi) = self.kind.wanted();
                    return bad(
                        "media_type",
                        format!("{en} takes {want_en}, not {:?}.", a.media_type),
                        format!("{vi} nhận {want_vi}, không nhận {:?}.", a.media_type),
                    );
                }
            }
            FieldType::SelectOne => {
                let Some(s) = value.as_str() else {
                    return wrong_type("one of the choices", "một lựa chọn");
                };
                self.check_choice(s, value)?;
            }
            FieldType::SelectMany => {
                let Some(items) = value.as_array() else {
                    return wrong_type("a list of choices", "danh sách lựa chọn");
                };
                for (i, item) in items.iter().enumerate() {
                    let Some(s) = item.as_str() else {
                        return wrong_type("a list of choices", "danh sách lựa chọn");
                    };
                    self.check_choice(s, value)?;
                    if items[..i].contains(item) {
                        return bad(
                            "unique",
                            format!("{en}: {s:?} is chosen twice."),
                            format!("{vi}: {s:?} bị chọn hai lần."),
                        );
                    }
                }
            }
            FieldType::Rank => {
                let ranked: Option<Vec<&str>> = value
                    .as_array()
                    .and_then(|items| items.iter().map(Value::as_str).collect());
                let Some(ranked) = ranked else {
                    return wrong_type("the choices in order", "các lựa chọn theo thứ tự");
                };
                for (i, s) in ranked.iter().enumerate() {
                    self.check_choice(s, value)?;
                    if ranked[..i].contains(s) {
                        return bad(
                            "unique",
                            format!("{en}: {s:?} is ranked twice."),
                            format!("{vi}: {s:?} được xếp hai lần."),
                        );
                    }
                }
                if let Some(c) = self
                    .choices
                    .iter()
                    .find(|c| !ranked.contains(&c.code.as_str()))
                {
                    return bad(
                        "rank",
                        format!("{en}: every choice is ranked; {:?} is missing.", c.code),
                        format!("{vi}: cần xếp mọi lựa chọn; còn thiếu {:?}.", c.code),
                    );
                }
            }
            FieldType::Repeat => {
                let Some(items) = value.as_array() else {
                    return wrong_type("a list of items", "danh sách các mục");
                };
                if items.len() > MAX_REPEAT_ITEMS {
                    return bad(
                        "max_items",
                        format!("{en} has {} items, over {MAX_REPEAT_ITEMS}.", items.len()),
                        format!("{vi} có {} mục, quá mức {MAX_REPEAT_ITEMS}.", items.len()),
                    );
                }
                for (i, item) in items.iter().enumerate() {
                    let Some(map) = item.as_object() else {
                        return wrong_type("a list of items", "danh sách các mục");
                    };
                    for (key, v) in map {
                        let Some(sub) = self.fields.iter().find(|f| &f.name == key) else {
                            return bad(
                                "unknown_field",
                                format!("{en}, item {}: there is no field {key:?}.", i + 1),
                                format!("{vi}, mục {}: không có trường {key:?}.", i + 1),
                            );
                        };
                        sub.check_value(v, today).map_err(|mut e| {
                            e.field = format!("{}[{}].{}", self.name, i + 1, e.field);
                            e.en = format!("{en}, item {}: {}", i + 1, e.en);
                            e.vi = format!("{vi}, mục {}: {}", i + 1, e.vi);
                            e
                        })?;
                    }
                }
            }
        }
        Ok(())
    }

    fn check_choice(&self, code: &str, value: &Value) -> Result<(), Violation> {
        if self.choices.iter().any(|c| c.code == code) {
            return Ok(());
        }
        let codes: Vec<&str> = self.choices.iter().map(|c| c.code.as_str()).collect();
        Err(Violation::new(
            &self.name,
            "choice",
            value,
            format!(
                "{}: {code:?} is not one of the choices ({}).",
                self.label_en(),
                codes.join(", ")
            ),
            format!(
                "{}: {code:?} không có trong các lựa chọn ({}).",
                self.label_vi(),
                codes.join(", ")
            ),
        ))
    }
}

/// A value shortened for an error message.
fn brief(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(60) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn field(kind: FieldType, choices: &[&str]) -> FormField {
        FormField {
            name: "f".into(),
            kind,
            label: None,
            hint: None,
            guidance: None,
            read_only: false,
            required: false,
            required_if: None,
            constraint: None,
            relevant: None,
            min: None,
            max: None,
            pattern: None,
            not_future: false,
            not_before: None,
            retired: false,
            constraint_message: None,
            required_message: None,
            appearance: None,
            references: None,
            auto: None,
            default: None,
            default_expr: None,
            calculate: None,
            trigger: None,
            max_pixels: None,
            accuracy: None,
            repeat_count: None,
            choice_filter: None,
            derived: Vec::new(),
            choices: choices
                .iter()
                .map(|c| Choice {
                    code: c.to_string(),
                    label: None,
                    props: BTreeMap::new(),
                })
                .collect(),
            fields: vec![],
            compiled: Default::default(),
        }
    }

    const TODAY: &str = "2020-06-01";

    #[test]
    fn fields_are_found_by_name_even_after_the_list_changes() {
        let mut form: Form = serde_json::from_value(json!({
            "id": "play-areas", "version": 1,
            "fields": [{"name": "a", "type": "text"}, {"name": "b", "type": "integer"}]
        }))
        .expect("a valid form");
        assert_eq!(form.field("b").map(|f| f.kind), Some(FieldType::Integer));
        assert!(form.field("c").is_none());
        // The list is public: a field added, or the order changed, after a lookup.
        let mut c = field(FieldType::Boolean, &[]);
        c.name = "c".into();
        form.fields.insert(0, c);
        assert_eq!(form.field("c").map(|f| f.kind), Some(FieldType::Boolean));
        assert_eq!(form.field("b").map(|f| f.kind), Some(FieldType::Integer));
        assert_eq!(form.field("a").map(|f| f.kind), Some(FieldType::Text));
        // A copy and the original are the same form.
        assert_eq!(form.clone(), form);
    }

    #[test]
    fn versions_may_add_and_retire_but_not_retype_or_remove() {
        let v1: Form = serde_json::from_value(json!({"id": "play-area", "version": 1, "fields": [
            {"name": "status", "type": "select_one", "choices": [{"code": "in_use"}, {"code": "closed"}]},
            {"name": "area_m2", "type": "decimal"},
            {"name": "fenced", "type": "boolean"}]})).unwrap();
        let mut v2 = v1.clone();
        v2.version = 2;
        v2.fields[0].choices.push(Choice {
            code: "degraded".into(),
            label: None,
            props: BTreeMap::new(),
        });
        v2.fields[2].retired = true;
        v2.fields.push(field(FieldType::Text, &[]));
        assert_eq!(v1.evolve_to(&v2), Ok(Evolution::default()));
        let mut bad = v2.clone();
        bad.fields[1].kind = FieldType::Integer;
        bad.fields.remove(2);
        bad.fields[0].choices.remove(1);
        let problems = v1.evolve_to(&bad).unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("area_m2 changes type"));
        assert!(problems[1].contains("fenced is removed"));
        let mut fewer = v2.clone();
        fewer.fields[0].choices.remove(1);
        assert_eq!(
            v1.evolve_to(&fewer).unwrap().removed_choices,
            [("status".to_string(), "closed".to_string())]
        );
        assert!(v2.evolve_to(&v1).is_err(), "versions only go up");
    }

    #[test]
    fn labels_must_be_nfc() {
        let mut form: Form = serde_json::from_value(json!({"id": "x", "version": 1, "fields": [
            {"name": "a", "type": "text", "label": {"vi": "Họ và tên", "en": "Name"}}]}))
        .unwrap();
        assert!(form.validate().is_ok());
        form.fields[0].label = Some(Labels {
            vi: "Ho\u{0323} va\u{0300} tên".into(),
            en: "Name".into(),
        });
        assert!(form.validate().unwrap_err().contains("NFC"));
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
            let result = field(*kind, choices).check_value(value, TODAY);
            assert_eq!(result.is_ok(), *ok, "{name}: {result:?}");
        }
    }

    #[test]
    fn times_and_datetimes_of_any_text_never_panic() {
        let field = |kind| FormField {
            kind,
            ..field(FieldType::Text, &[])
        };
        for text in [
            "2026-01-01Tếabcd",
            "2026-01-01T12:00ế0:00",
            "ếếếếếếế",
            "2026-01-01T+07:00",
        ] {
            assert!(
                field(FieldType::Datetime)
                    .check_value(&json!(text), TODAY)
                    .is_err(),
                "{text}"
            );
            assert!(
                field(FieldType::Time)
                    .check_value(&json!(text), TODAY)
                    .is_err(),
                "{text}"
            );
        }
        for text in [
            "2026-01-01T12:00",
            "2026-01-01T12:00:00+07:00",
            "2026-01-01T12:00Z",
        ] {
            assert!(
                field(FieldType::Datetime)
                    .check_value(&json!(text), TODAY)
                    .is_ok(),
                "{text}"
            );
        }
    }

    #[test]
    fn sections_hold_every_field_in_use_once() {
        let form = |sections: Value| -> Result<(), String> {
            serde_json::from_value::<Form>(json!({
                "id": "t", "version": 1,
                "fields": [
                    { "name": "a", "type": "text" },
                    { "name": "b", "type": "text" },
                    { "name": "old", "type": "text", "retired": true }
                ],
                "sections": sections
            }))
            .unwrap()
            .validate()
        };
        let part = |fields: &[&str]| json!({ "label": { "vi": "P", "en": "P" }, "fields": fields });
        assert_eq!(form(json!([part(&["a"]), part(&["b"])])), Ok(()));
        assert_eq!(form(json!([])), Ok(()));
        assert_eq!(
            form(json!([part(&["a"])])),
            Err("field b is in no section".into())
        );
        assert_eq!(
            form(json!([part(&["a", "b"]), part(&["b"])])),
            Err("section 2 (\"P\"): field b is in two sections".into())
        );
        assert_eq!(
            form(json!([part(&["a", "b", "c"])])),
            Err("section 1 (\"P\") names \"c\", which is not a field".into())
        );
        assert_eq!(
            form(json!([part(&["a", "b"]), part(&[])])),
            Err("section 2 (\"P\") holds no field".into())
        );
    }

    #[test]
    fn rules_name_the_field_the_rule_and_the_value_in_both_languages() {
        let err = field(FieldType::Date, &[])
            .check_value(&json!("2020-02-30"), TODAY)
            .unwrap_err();
        assert_eq!((err.field.as_str(), err.rule), ("f", "type"));
        assert_eq!(err.en, "f must be a date, not \"2020-02-30\".");
        assert_eq!(err.vi, "f phải là một ngày, không phải \"2020-02-30\".");
        let mut sex = field(FieldType::SelectOne, &["m", "f"]);
        sex.label = Some(Labels {
            vi: "Giới tính".into(),
            en: "Sex".into(),
        });
        let err = sex.check_value(&json!("x"), TODAY).unwrap_err();
        assert_eq!(err.en, "Sex: \"x\" is not one of the choices (m, f).");
        assert_eq!(
            err.vi,
            "Giới tính: \"x\" không có trong các lựa chọn (m, f)."
        );
        // A form's own words for a broken constraint replace the general ones.
        let mut card = field(FieldType::Text, &[]);
        card.pattern = Some("[A-Z]{2}[0-9]{13}".into());
        card.constraint_message = Some(Labels {
            vi: "Số thẻ BHYT gồm 2 chữ cái và 13 chữ số, ví dụ TE1464620123456".into(),
            en: "Two letters and 13 digits, e.g. TE1464620123456".into(),
        });
        let err = card.check_value(&json!("12345"), TODAY).unwrap_err();
        assert_eq!(
            (err.rule, err.vi.as_str()),
            (
                "pattern",
                "Số thẻ BHYT gồm 2 chữ cái và 13 chữ số, ví dụ TE1464620123456"
            )
        );
        let mut weight = field(FieldType::Decimal, &[]);
        weight.min = Some(json!(0.5));
        weight.max = Some(json!(40));
        assert_eq!(
            weight.check_value(&json!(45.5), TODAY).unwrap_err().rule,
            "max"
        );
        let mut born = field(FieldType::Date, &[]);
        born.not_future = true;
        assert_eq!(
            born.check_value(&json!("2020-06-02"), TODAY)
                .unwrap_err()
                .rule,
            "not_future"
        );
        assert!(born.check_value(&json!("2020-06-01"), TODAY).is_ok());
        let mut card = field(FieldType::Text, &[]);
        card.pattern = Some("[A-Z]{2}[0-9]{13}".into());
        assert!(card.check_value(&json!("TE4464600123456"), TODAY).is_ok());
        assert_eq!(
            card.check_value(&json!("TE44"), TODAY).unwrap_err().rule,
            "pattern"
        );
        // The pattern is compiled once, and again when it changes.
        card.pattern = Some("[0-9]{4}".into());
        assert!(card.check_value(&json!("2020"), TODAY).is_ok());
        assert_eq!(
            card.check_value(&json!("TE4464600123456"), TODAY)
                .unwrap_err()
                .rule,
            "pattern"
        );
        let copy = card.clone();
        assert_eq!(copy, card);
        assert!(copy.check_value(&json!("1999"), TODAY).is_ok());
        assert!(copy.check_value(&json!("199"), TODAY).is_err());
        let mut visits = field(FieldType::Repeat, &[]);
        let mut date = field(FieldType::Date, &[]);
        date.name = "date".into();
        date.required = true;
        visits.fields = vec![date];
        assert!(visits
            .check_value(&json!([{"date": "2020-01-02"}]), TODAY)
            .is_ok());
        // Required in each item where it is asked: a rule of the record.
        let items = [json!({"date": "2020-01-02"}), json!({})];
        let err = visits.check_items(&items, &|_| None).unwrap_err();
        assert_eq!((err.field.as_str(), err.rule), ("f[2].date", "required"));
        visits.fields[0].relevant = Some(json!({"xpath": [{">": [{"position": []}, 1]}]}));
        let err = visits.check_items(&items[1..], &|_| None);
        assert!(err.is_ok(), "not asked in the first item: {err:?}");
        let err = visits
            .check_value(&json!([{"date": "bad"}]), TODAY)
            .unwrap_err();
        assert_eq!(err.field, "f[1].date");
    }
}
