//! The form registry: every published version of every form.
//!
//! Published versions live in the database, so every `mam` process serving it sees the same
//! forms. At start-up the form files are published (the built-in `schemas/forms/`, or the
//! configured folder; a file whose version is already published must be identical to it: a
//! published version never changes), and `mam form publish FILE` adds versions while servers
//! run; they pick them up within [`REFRESH`].

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sync_protocol::{FieldType, Form, FormId, Record};

use crate::schemas::Source;
use crate::store::{Store, StoreError};
use sync_protocol::RecordId;

/// How often a running server reloads the published forms.
pub const REFRESH: Duration = Duration::from_secs(15);

#[derive(Debug, Default)]
pub struct FormRegistry {
    forms: HashMap<(FormId, u32), Published>,
    current: BTreeMap<String, u32>,
}

/// A form version as published: the form and its canonical JSON with the ETag phones cache by.
#[derive(Debug)]
pub struct Published {
    pub form: Form,
    pub body: String,
    pub etag: String,
}

/// The one text of a form: what is stored, served and compared.
pub fn canonical(form: &Form) -> String {
    serde_json::to_string(form).expect("forms always serialize")
}

impl FormRegistry {
    /// Reads every `*.json` of `source` (built in, or a configured folder), in name order. A
    /// file that does not parse stops with its name and the reason.
    pub fn read_source(source: &Source) -> anyhow::Result<Vec<Form>> {
        source
            .json_files()?
            .into_iter()
            .map(|(name, text)| {
                serde_json::from_str(&text).with_context(|| format!("form {name} is not valid"))
            })
            .collect()
    }

    /// The registry of what the database holds.
    pub async fn from_store(store: &dyn Store) -> anyhow::Result<Self> {
        let mut registry = Self::default();
        for body in store.published_forms().await? {
            let form: Form = serde_json::from_str(&body).context("a stored form is not valid")?;
            registry.add(form)?;
        }
        Ok(registry)
    }

    pub fn add(&mut self, form: Form) -> anyhow::Result<()> {
        form.validate()
            .map_err(|e| anyhow::anyhow!("form {} version {}: {e}", form.id, form.version))?;
        let key = (form.id.clone(), form.version);
        if self.forms.contains_key(&key) {
            anyhow::bail!("{} version {} is defined twice", form.id, form.version);
        }
        let current = self
            .current
            .entry(form.id.to_string())
            .or_insert(form.version);
        *current = (*current).max(form.version);
        let body = canonical(&form);
        let etag = format!("\"{}\"", &hex(&Sha256::digest(body.as_bytes()))[..32]);
        self.forms.insert(key, Published { form, body, etag });
        Ok(())
    }

    pub fn get(&self, id: &FormId, version: u32) -> Option<&Form> {
        self.published(id, version).map(|p| &p.form)
    }

    pub fn published(&self, id: &FormId, version: u32) -> Option<&Published> {
        self.forms.get(&(id.clone(), version))
    }

    /// The newest version of a form.
    /// Every published version, by form and version.
    pub fn all(&self) -> Vec<&Form> {
        let mut out: Vec<&Form> = self.forms.values().map(|p| &p.form).collect();
        out.sort_by(|a, b| (a.id.as_str(), a.version).cmp(&(b.id.as_str(), b.version)));
        out
    }

    pub fn latest(&self, id: &FormId) -> Option<&Form> {
        let version = *self.current.get(id.as_str())?;
        self.get(id, version)
    }

    pub fn knows(&self, id: &FormId) -> bool {
        self.current.contains_key(id.as_str())
    }

    /// The current version of every form.
    pub fn current(&self) -> &BTreeMap<String, u32> {
        &self.current
    }

    pub fn len(&self) -> usize {
        self.forms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.forms.is_empty()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What publishing did.
#[derive(Debug, PartialEq)]
pub enum Publication {
    Published,
    AlreadyPublished,
}

/// Publish one form version: a new version must be a valid successor of the newest published
/// one (fields added or retired, choices added, no type changed, no choice removed that a
/// record uses); a version already published must be identical. Errors say which and why.
pub async fn publish(store: &dyn Store, form: Form, now: i64) -> anyhow::Result<Publication> {
    let registry = FormRegistry::from_store(store).await?;
    form.validate()
        .map_err(|e| anyhow::anyhow!("form {} version {}: {e}", form.id, form.version))?;
    let body = canonical(&form);
    if let Some(existing) = registry.published(&form.id, form.version) {
        if existing.body == body {
            return Ok(Publication::AlreadyPublished);
        }
        anyhow::bail!(
            "form {} version {} is already published with other content; a published version never changes: publish it as version {}",
            form.id,
            form.version,
            registry.current()[form.id.as_str()] + 1
        );
    }
    if let Some(previous) = registry.latest(&form.id) {
        let evolution = previous.evolve_to(&form).map_err(|problems| {
            anyhow::anyhow!(
                "form {} version {} cannot follow version {}:\n  - {}",
                form.id,
                form.version,
                previous.version,
                problems.join("\n  - ")
            )
        })?;
        if !evolution.removed_choices.is_empty() {
            let records = store.all_records().await?;
            for (path, code) in &evolution.removed_choices {
                let users = records
                    .iter()
                    .filter(|r| r.form == form.id && uses_choice(r, path, code))
                    .count();
                if users > 0 {
                    anyhow::bail!(
                        "form {} version {}: field {path} drops choice {code:?}, which {users} record(s) use; keep the choice (it may be hidden from new entries by a rule) or correct those records first",
                        form.id,
                        form.version
                    );
                }
            }
        }
    }
    match store
        .publish_form(form.id.as_str(), form.version, &body, now)
        .await
    {
        Ok(()) => Ok(Publication::Published),
        Err(StoreError::Conflict) => {
            // Published meanwhile by another process (several `mam serve` starting at once
            // on one database publish the same built-in forms): the same content is fine.
            let now = FormRegistry::from_store(store).await?;
            match now.published(&form.id, form.version) {
                Some(p) if p.body == body => Ok(Publication::AlreadyPublished),
                _ => anyhow::bail!(
                    "form {} version {} was just published by someone else, with other content",
                    form.id,
                    form.version
                ),
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Publishes every form file of `source` (in version order per form).
pub async fn publish_all(store: &dyn Store, source: &Source, now: i64) -> anyhow::Result<usize> {
    let mut forms = FormRegistry::read_source(source)?;
    forms.sort_by(|a, b| (a.id.as_str(), a.version).cmp(&(b.id.as_str(), b.version)));
    let mut published = 0;
    for form in forms {
        if publish(store, form, now).await? == Publication::Published {
            published += 1;
        }
    }
    Ok(published)
}

/// Whether any value of the field at `path` (`field` or `group.field`) holds `code`.
fn uses_choice(record: &Record, path: &str, code: &str) -> bool {
    let (field, rest) = match path.split_once('.') {
        Some((f, r)) => (f, Some(r)),
        None => (path, None),
    };
    let Some(register) = record.fields.get(field) else {
        return false;
    };
    register.values().any(|v| value_uses(v, rest, code))
}

fn value_uses(value: &Value, rest: Option<&str>, code: &str) -> bool {
    match rest {
        None => match value {
            Value::String(s) => s == code,
            Value::Array(items) => items.iter().any(|i| i.as_str() == Some(code)),
            _ => false,
        },
        Some(path) => {
            let (field, deeper) = match path.split_once('.') {
                Some((f, r)) => (f, Some(r)),
                None => (path, None),
            };
            value.as_array().is_some_and(|items| {
                items
                    .iter()
                    .any(|item| item.get(field).is_some_and(|v| value_uses(v, deeper, code)))
            })
        }
    }
}

/// One line about a form version: its fields, repeat groups and derived fields.
pub fn describe(form: &Form) -> String {
    let repeats = form
        .fields
        .iter()
        .filter(|f| f.kind == FieldType::Repeat)
        .count();
    format!(
        "{} v{}: {} fields{}, derived: {}",
        form.id,
        form.version,
        form.fields.len(),
        if repeats > 0 {
            format!(" ({repeats} repeat groups)")
        } else {
            String::new()
        },
        if form.derived.is_empty() {
            "-".to_owned()
        } else {
            form.derived
                .iter()
                .map(|d| d.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        }
    )
}

/// A text as a search finds it: without its marks, đ as d, lowercase ("Nguyễn Thị Lan" →
/// "nguyen thi lan").
pub fn folded(text: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    text.nfd()
        .filter(|c| !('\u{300}'..='\u{36f}').contains(c))
        .map(|c| if c == 'đ' || c == 'Đ' { 'd' } else { c })
        .collect::<String>()
        .to_lowercase()
}

/// What the office's search by name reads, kept beside the record: its name, folded.
pub fn search_name(record: &Record, forms: &FormRegistry) -> String {
    record_name(record, forms.latest(&record.form))
        .map(|name| folded(&name))
        .unwrap_or_default()
}

/// Fill in the search names of records written before they were kept (after an upgrade), a
/// thousand at a time. Returns how many.
pub async fn fill_search_names(store: &dyn Store, forms: &FormRegistry) -> anyhow::Result<usize> {
    let mut filled = 0;
    loop {
        let records = store.unnamed_records(1000).await?;
        if records.is_empty() {
            return Ok(filled);
        }
        let names: Vec<(RecordId, String)> = records
            .iter()
            .map(|r| (r.id, search_name(r, forms)))
            .collect();
        let done = store.set_names(&names).await?;
        filled += done as usize;
        // Whatever could not be filled in (written meanwhile) is not read again forever.
        if done == 0 || records.len() < 1000 {
            return Ok(filled);
        }
    }
}

/// A record's name: its form's first text field that holds something (a child's name).
pub fn record_name(record: &Record, form: Option<&Form>) -> Option<String> {
    // The form's own name for its records (XLSForm's instance_name), when it gives one.
    if let Some(rule) = form.and_then(|f| f.instance_name.as_ref()) {
        let named = sync_protocol::expr::eval(rule, &|n| record.value(n).cloned());
        if let Ok(Value::String(s)) = named {
            if !s.trim().is_empty() {
                return Some(s.trim().to_owned());
            }
        }
    }
    form?
        .fields
        .iter()
        // The first text a person typed (not one the phone filled, nor a hidden one).
        .filter(|f| {
            f.kind == FieldType::Text
                && f.auto.is_none()
                && f.appearance.as_deref() != Some("hidden")
        })
        .find_map(|f| {
            record
                .value(&f.name)
                .and_then(Value::as_str)
                .filter(|s| !s.trim().is_empty())
                .map(str::to_owned)
        })
}
