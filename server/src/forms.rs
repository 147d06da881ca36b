//! The form registry: every published version of every form, loaded at start-up from
//! `schemas/forms/*.json`. An edit is checked against the version the phone used.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::Context;
use sync_protocol::{Form, FormId};

#[derive(Debug, Default)]
pub struct FormRegistry {
    forms: HashMap<(FormId, u32), Form>,
    current: BTreeMap<String, u32>,
}

impl FormRegistry {
    /// Loads every `*.json` in `dir`. A file that does not parse stops the start with its
    /// name and the reason.
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let mut registry = Self::default();
        let entries = std::fs::read_dir(dir)
            .with_context(|| format!("cannot read forms directory {}", dir.display()))?;
        let mut paths: Vec<_> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        paths.sort();
        for path in paths {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read form {}", path.display()))?;
            let form: Form = serde_json::from_str(&text)
                .with_context(|| format!("form {} is not valid", path.display()))?;
            registry
                .add(form)
                .with_context(|| format!("form {}", path.display()))?;
        }
        Ok(registry)
    }

    pub fn add(&mut self, form: Form) -> anyhow::Result<()> {
        form.validate().map_err(anyhow::Error::msg)?;
        let key = (form.id.clone(), form.version);
        if self.forms.contains_key(&key) {
            anyhow::bail!("{} version {} is defined twice", form.id, form.version);
        }
        let current = self
            .current
            .entry(form.id.to_string())
            .or_insert(form.version);
        *current = (*current).max(form.version);
        self.forms.insert(key, form);
        Ok(())
    }

    pub fn get(&self, id: &FormId, version: u32) -> Option<&Form> {
        self.forms.get(&(id.clone(), version))
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
