//! Administrative units of Thừa Thiên Huế over time: each version of the commune list with the
//! dates it was valid, and the July 2025 crosswalk that carries old communes onto new ones.
//!
//! Loaded from `schemas/admin-units/` (built in, or a configured folder): `versions.json` names
//! each CSV and its validity; codes are the key (names change spelling), kept as text and
//! compared as such.

use std::collections::BTreeMap;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::schemas::Source;

#[derive(Clone, Debug, Serialize)]
pub struct Commune {
    pub code: String,
    pub name: String,
    /// `phuong`, `xa` or `thi_tran`.
    pub kind: String,
    /// The name with its kind, as the map writes it: "Phường Phú Xuân".
    pub full_name: String,
    pub district_code: Option<String>,
    pub district_name: Option<String>,
    /// `thanh_pho`, `quan`, `thi_xa` or `huyen`.
    pub district_type: Option<String>,
}

impl Commune {
    /// The kind in Vietnamese: phường, xã, thị trấn.
    pub fn kind_vi(&self) -> &str {
        kind_vi(&self.kind)
    }

    /// The district with its kind, as this version of the map names it: "Thành phố Huế",
    /// "Quận Thuận Hóa", "Thị xã Hương Thủy", "Huyện A Lưới".
    pub fn district_full_name(&self) -> Option<String> {
        let name = self.district_name.as_deref()?;
        Some(match self.district_type.as_deref().map(kind_vi) {
            Some(kind) if !kind.is_empty() => format!("{} {name}", upper_first(kind)),
            _ => name.to_owned(),
        })
    }
}

/// A unit kind of the map in Vietnamese, with its diacritics.
pub fn kind_vi(kind: &str) -> &str {
    match kind {
        "phuong" => "phường",
        "xa" => "xã",
        "thi_tran" => "thị trấn",
        "thanh_pho" => "thành phố",
        "quan" => "quận",
        "thi_xa" => "thị xã",
        "huyen" => "huyện",
        "tinh" => "tỉnh",
        other => other,
    }
}

fn upper_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct UnitVersion {
    pub file: String,
    pub valid_from: String,
    /// The last day it was valid; `None` while current.
    pub valid_to: Option<String>,
    /// The province as this version names it: "Tỉnh Thừa Thiên Huế", then from 1 January 2025
    /// "Thành phố Huế".
    pub province_name: String,
    pub communes: BTreeMap<String, Commune>,
}

#[derive(Debug, Default)]
pub struct Units {
    versions: Vec<UnitVersion>,
    /// Old commune code → its successor from 1 July 2025.
    crosswalk: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct Manifest {
    versions: Vec<ManifestVersion>,
    crosswalk: Option<String>,
}

#[derive(Deserialize)]
struct ManifestVersion {
    file: String,
    valid_from: String,
    valid_to: Option<String>,
}

fn csv_rows(text: &str) -> Vec<BTreeMap<String, String>> {
    let mut lines = text.lines();
    let header: Vec<String> = lines
        .next()
        .unwrap_or_default()
        .split(',')
        .map(|h| h.trim().to_owned())
        .collect();
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            header
                .iter()
                .cloned()
                .zip(line.split(',').map(|c| c.trim().to_owned()))
                .collect()
        })
        .collect()
}

impl Units {
    pub fn load(source: &Source) -> anyhow::Result<Self> {
        let manifest: Manifest = serde_json::from_str(&source.read("versions.json")?)
            .context("admin-units/versions.json is not valid")?;
        let mut units = Units::default();
        for v in manifest.versions {
            let rows = csv_rows(&source.read(&v.file)?);
            let province_name = rows
                .iter()
                .find_map(|row| row.get("province_name").filter(|s| !s.is_empty()))
                .cloned()
                .unwrap_or_else(|| "Tỉnh Thừa Thiên Huế".to_owned());
            let communes = rows
                .into_iter()
                .map(|row| {
                    let get = |k: &str| row.get(k).cloned().unwrap_or_default();
                    let opt = |k: &str| row.get(k).filter(|s| !s.is_empty()).cloned();
                    let (name, kind) = (get("name"), get("type"));
                    let full_name = opt("full_name")
                        .unwrap_or_else(|| format!("{} {name}", upper_first(kind_vi(&kind))));
                    let commune = Commune {
                        code: get("code"),
                        name,
                        kind,
                        full_name,
                        district_code: opt("district_code"),
                        district_name: opt("district_name"),
                        district_type: opt("district_type"),
                    };
                    (commune.code.clone(), commune)
                })
                .collect();
            units.versions.push(UnitVersion {
                file: v.file,
                valid_from: v.valid_from,
                valid_to: v.valid_to,
                province_name,
                communes,
            });
        }
        units
            .versions
            .sort_by(|a, b| a.valid_from.cmp(&b.valid_from));
        if let Some(file) = manifest.crosswalk {
            for row in csv_rows(&source.read(&file)?) {
                if let (Some(old), Some(new)) = (row.get("old_code"), row.get("new_code")) {
                    units.crosswalk.insert(old.clone(), new.clone());
                }
            }
        }
        Ok(units)
    }

    /// The version in force on `date` (`YYYY-MM-DD`); dates before the first version use it.
    pub fn version_on(&self, date: &str) -> Option<&UnitVersion> {
        self.versions
            .iter()
            .rev()
            .find(|v| v.valid_from.as_str() <= date)
            .or(self.versions.first())
    }

    /// Whether `code` is a commune on `date`.
    pub fn valid_on(&self, code: &str, date: &str) -> bool {
        self.versions.is_empty()
            || self
                .version_on(date)
                .is_some_and(|v| v.communes.contains_key(code))
    }

    /// The commune that carries `code` on today's map (itself, or its July 2025 successor).
    pub fn successor(&self, code: &str) -> Option<&str> {
        self.crosswalk.get(code).map(String::as_str)
    }

    pub fn versions(&self) -> &[UnitVersion] {
        &self.versions
    }

    /// Every commune code any version has had.
    pub fn all_codes(&self) -> std::collections::BTreeSet<String> {
        self.versions
            .iter()
            .flat_map(|v| v.communes.keys().cloned())
            .collect()
    }

    /// A geography version by its key: the month it took effect (`2020-01`, `2021-07`,
    /// `2025-01`, `2025-07`), or a prefix of it (`2020`).
    pub fn geography(&self, key: &str) -> Option<&UnitVersion> {
        self.versions.iter().find(|v| v.valid_from.starts_with(key))
    }

    /// The key of a version.
    pub fn key(version: &UnitVersion) -> String {
        version.valid_from[..7].to_owned()
    }

    /// Where a commune's figures go on the map of geography `key`: itself if it exists there,
    /// its successor through the July 2025 crosswalk, or else itself under its last name.
    /// (code, short name: "Phú Xuân").
    pub fn commune_in(&self, code: &str, key: &str) -> (String, String) {
        match self.unit_in(code, key) {
            Some(c) => (c.code.clone(), c.name.clone()),
            None => (code.to_owned(), code.to_owned()),
        }
    }

    /// [`Units::commune_in`] with the name as the map writes it: "Phường Phú Xuân".
    pub fn commune_full_in(&self, code: &str, key: &str) -> (String, String) {
        match self.unit_in(code, key) {
            Some(c) => (c.code.clone(), c.full_name.clone()),
            None => (code.to_owned(), code.to_owned()),
        }
    }

    fn unit_in(&self, code: &str, key: &str) -> Option<&Commune> {
        let geography = self.geography(key);
        if let Some(c) = geography.and_then(|g| g.communes.get(code)) {
            return Some(c);
        }
        if let (Some(g), Some(next)) = (geography, self.successor(code)) {
            if let Some(c) = g.communes.get(next) {
                return Some(c);
            }
        }
        self.versions
            .iter()
            .rev()
            .find_map(|v| v.communes.get(code))
    }

    /// The province as the map of geography `key` names it.
    pub fn province_name(&self, key: &str) -> String {
        self.geography(key)
            .or(self.versions.last())
            .map(|g| g.province_name.clone())
            .unwrap_or_else(|| "Tỉnh Thừa Thiên Huế".to_owned())
    }

    /// A commune's district (code, name with its kind: "Thành phố Huế") in geography `key` (or the latest that has one);
    /// `None` where there is no district level.
    pub fn district_of(&self, code: &str, key: Option<&str>) -> Option<(String, String)> {
        let district = |c: &Commune| Some((c.district_code.clone()?, c.district_full_name()?));
        if let Some(g) = key.and_then(|k| self.geography(k)) {
            if g.communes.values().all(|c| c.district_code.is_none()) {
                return None;
            }
            if let Some(found) = g.communes.get(code).and_then(district) {
                return Some(found);
            }
        }
        self.versions
            .iter()
            .rev()
            .find_map(|v| v.communes.get(code).and_then(district))
    }
}
