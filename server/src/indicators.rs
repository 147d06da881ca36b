//! The plan's targets as indicators, and the tables that keep them current.
//!
//! An indicator (`schemas/indicators/*.json`) is a numerator and a denominator, each a *part*:
//! records of one form, placed in periods by a date field, counted where a condition holds or
//! summed over an expression. Every record contributes to cells keyed by
//! (indicator, part, commune, period): a value, 1 contributing record, and 1 if it is in
//! conflict. When an edit changes a record, the server removes the old record's contributions
//! and adds the new one's in the same transaction ([`deltas`]), so the cells are always those a
//! full rebuild from the records would give; `mam indicators rebuild` proves it.
//!
//! Areas and roll-ups (commune → district → province, for a geography version) and values
//! (percent, per 100,000, count; targets; provisional periods) are computed when read.

pub use crate::store::cells::{Amount, CellKey, DENOMINATOR, NUMERATOR, PENDING};
use std::collections::BTreeMap;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sync_protocol::expr::{day_number, eval};
use sync_protocol::{Labels, Record};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Indicator {
    pub id: String,
    /// The row of the plan's target table this indicator measures; none for a figure the
    /// programme reports that is not a target of the 2020 plan (wasting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_row: Option<u32>,
    /// The report sheet it belongs to: health, education, protection, birth, participation.
    pub group: String,
    pub title: Labels,
    /// How it is counted, in words: what is left out and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definition: Option<Labels>,
    /// `percent`, `per_100000` or `count`.
    pub unit: String,
    pub target: Option<f64>,
    /// `at_least`, `above`, `at_most`, `below`, or `increase` (no numeric target).
    pub direction: String,
    /// Days after a period's end during which its figures may still change (a birth in the
    /// last days of June may be registered on time in August).
    #[serde(default)]
    pub lag_days: u32,
    /// A record of the denominator that is not (yet) in the numerator has an outcome that is
    /// not known until this many days after its date (a birth may still be registered on
    /// time): until then it is pending, counted apart and left out of the value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_days: Option<u32>,
    pub numerator: Part,
    pub denominator: Part,
    /// Display order.
    pub order: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Part {
    pub form: String,
    /// The date field that places a record in a period.
    pub date: String,
    /// An annual figure (a population, a commune's status): counts in its year and in both of
    /// the year's halves.
    #[serde(default)]
    pub whole_year: bool,
    /// Count or sum only records where this expression is true (default: all).
    #[serde(default)]
    pub r#where: Option<Value>,
    /// Sum this expression instead of counting records.
    #[serde(default)]
    pub sum: Option<Value>,
    /// Count communes with at least one such record instead of records.
    #[serde(default)]
    pub communes: bool,
}

/// The indicator definitions of `source` (built in, or a configured folder), in report order.
pub fn load(source: &crate::schemas::Source) -> anyhow::Result<Vec<Indicator>> {
    let mut out = Vec::new();
    for (name, text) in source.json_files()? {
        let ind: Indicator = serde_json::from_str(&text)
            .with_context(|| format!("indicator {name} is not valid"))?;
        for part in [&ind.numerator, &ind.denominator] {
            for expr in [&part.r#where, &part.sum].into_iter().flatten() {
                eval(expr, &|_| None).map_err(|e| anyhow::anyhow!("indicator {}: {e}", ind.id))?;
            }
        }
        if !matches!(ind.unit.as_str(), "percent" | "per_100000" | "count") {
            anyhow::bail!(
                "indicator {}: unit {:?} is not percent, per_100000 or count",
                ind.id,
                ind.unit
            );
        }
        out.push(ind);
    }
    out.sort_by_key(|i| i.order);
    Ok(out)
}

/// The periods a date falls in: its half-year and its year (and, for annual figures, the
/// year's other half too).
pub fn periods_of(date: &str, whole_year: bool) -> Vec<String> {
    let (Some(year), Some(month)) = (date.get(0..4), date.get(5..7)) else {
        return vec![];
    };
    if whole_year {
        return vec![year.to_owned(), format!("{year}-H1"), format!("{year}-H2")];
    }
    let half = if month <= "06" { "H1" } else { "H2" };
    vec![year.to_owned(), format!("{year}-{half}")]
}

/// First and last day of a period (`2020`, `2020-H1`, `2020-H2`).
pub fn period_bounds(period: &str) -> Option<(String, String)> {
    crate::store::cells::days_of(period)
}

/// Whether a period's figures may still change on `today`.
pub fn provisional(period: &str, lag_days: u32, today: &str) -> bool {
    match period_bounds(period).and_then(|(_, end)| day_number(&end)) {
        Some(end) => day_number(today).is_some_and(|t| t <= end + lag_days as i64),
        None => false,
    }
}

/// What one record adds to the cells. A deleted record adds nothing.
pub fn contributions(indicators: &[Indicator], record: &Record) -> Vec<(CellKey, Amount)> {
    let mut out = Vec::new();
    if record.is_deleted() {
        return out;
    }
    let lookup = |name: &str| {
        record
            .derived
            .get(name)
            .cloned()
            .or_else(|| record.value(name).cloned())
    };
    let conflicted = i64::from(record.is_conflicted());
    for ind in indicators {
        // Whether the record counts in the numerator, and its date when in the denominator.
        let mut counted = false;
        let mut denominator_date = None;
        for (side, part) in [(NUMERATOR, &ind.numerator), (DENOMINATOR, &ind.denominator)] {
            if part.form != record.form.as_str() {
                continue;
            }
            let Some(date) = lookup(&part.date).and_then(|v| v.as_str().map(str::to_owned)) else {
                continue;
            };
            let holds = part
                .r#where
                .as_ref()
                .is_none_or(|w| eval(w, &lookup) == Ok(Value::Bool(true)));
            if !holds {
                continue;
            }
            let value = match &part.sum {
                Some(expr) => match eval(expr, &lookup).ok().and_then(|v| v.as_f64()) {
                    Some(x) => x.round() as i64,
                    None => continue,
                },
                None => 1,
            };
            match side {
                NUMERATOR => counted = true,
                _ => denominator_date = Some(date.clone()),
            }
            for period in periods_of(&date, part.whole_year) {
                let key = CellKey {
                    indicator: ind.id.clone(),
                    part: side,
                    commune: record.commune.to_string(),
                    period,
                };
                out.push((
                    key,
                    Amount {
                        value,
                        records: 1,
                        conflicted,
                    },
                ));
            }
        }
        if let (Some(_), Some(date), false) = (ind.pending_days, denominator_date, counted) {
            out.push((
                CellKey {
                    indicator: ind.id.clone(),
                    part: PENDING,
                    commune: record.commune.to_string(),
                    period: date,
                },
                Amount {
                    value: 1,
                    records: 1,
                    conflicted,
                },
            ));
        }
    }
    out
}

/// Whether a pending cell of `day` is still pending on `today`: the outcome can still change
/// through the last of the `pending_days` (a birth registered on its 60th day is on time).
pub fn still_pending(day: &str, pending_days: u32, today: &str) -> bool {
    match (day_number(day), day_number(today)) {
        (Some(d), Some(t)) => t <= d + i64::from(pending_days),
        _ => false,
    }
}

/// The change to the cells when `before` becomes `after` (either may be absent).
pub fn deltas(
    indicators: &[Indicator],
    before: Option<&Record>,
    after: Option<&Record>,
) -> BTreeMap<CellKey, Amount> {
    let mut out: BTreeMap<CellKey, Amount> = BTreeMap::new();
    for (record, sign) in [(before, -1), (after, 1)] {
        if let Some(record) = record {
            for (key, amount) in contributions(indicators, record) {
                out.entry(key).or_default().add(amount, sign);
            }
        }
    }
    out.retain(|_, a| !a.is_zero());
    out
}

/// What derived fields and cells are computed by: the rules of the shared crate, every
/// published form's derived fields, every indicator. When it changes (a new release's rules, a
/// new form version, an indicator redefined), stored records are derived again and the cells
/// rebuilt ([`refresh`]).
pub fn fingerprint(forms: &crate::forms::FormRegistry, indicators: &[Indicator]) -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    hash.update(sync_protocol::who::RULES.as_bytes());
    for form in forms.all() {
        hash.update(format!("{}@{}", form.id, form.version).as_bytes());
        hash.update(
            serde_json::to_string(&form.derived)
                .unwrap_or_default()
                .as_bytes(),
        );
    }
    for ind in indicators {
        hash.update(serde_json::to_string(ind).unwrap_or_default().as_bytes());
    }
    crate::auth::hex(&hash.finalize())
}

/// The `meta` entry that holds the [`fingerprint`] the stored records were derived by.
const DERIVED_BY: &str = "derived_by";

/// Derive every stored record again by today's rules and rebuild the cells, when what they
/// are computed by has changed since the last time (or always, with `force`). `None`: nothing
/// had changed.
pub async fn refresh(
    store: &dyn crate::store::Store,
    forms: &crate::forms::FormRegistry,
    indicators: &[Indicator],
    force: bool,
) -> anyhow::Result<Option<crate::store::Rebuilt>> {
    let now = fingerprint(forms, indicators);
    if !force && store.meta(DERIVED_BY).await?.as_deref() == Some(now.as_str()) {
        return Ok(None);
    }
    let derive = |record: &mut Record| {
        let Some(form) = forms
            .get(&record.form, record.version)
            .or_else(|| forms.latest(&record.form))
        else {
            return false;
        };
        let derived = form.derive(record);
        let changed = derived != record.derived;
        record.derived = derived;
        changed
    };
    let build = |records: &[Record]| rebuild(indicators, records).into_iter().collect::<Vec<_>>();
    let rebuilt = store.rebuild_cells(&derive, &build).await?;
    store.set_meta(DERIVED_BY, &now).await?;
    Ok(Some(rebuilt))
}

/// Cells from scratch.
pub fn rebuild<'a>(
    indicators: &[Indicator],
    records: impl IntoIterator<Item = &'a Record>,
) -> BTreeMap<CellKey, Amount> {
    let mut out: BTreeMap<CellKey, Amount> = BTreeMap::new();
    for record in records {
        for (key, amount) in contributions(indicators, record) {
            out.entry(key).or_default().add(amount, 1);
        }
    }
    out
}

/// The value of a fraction in the indicator's unit.
pub fn value(ind: &Indicator, numerator: i64, denominator: i64) -> Option<f64> {
    match ind.unit.as_str() {
        "count" => Some(numerator as f64),
        _ if denominator == 0 => None,
        "per_100000" => Some(numerator as f64 * 100_000.0 / denominator as f64),
        _ => Some(numerator as f64 * 100.0 / denominator as f64),
    }
}

pub fn meets_target(ind: &Indicator, value: Option<f64>) -> Option<bool> {
    let (v, t) = (value?, ind.target?);
    Some(match ind.direction.as_str() {
        "at_least" => v >= t,
        "above" => v > t,
        "at_most" => v <= t,
        "below" => v < t,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods() {
        assert_eq!(periods_of("2020-06-30", false), ["2020", "2020-H1"]);
        assert_eq!(periods_of("2020-07-01", false), ["2020", "2020-H2"]);
        assert_eq!(
            periods_of("2020-11-30", true),
            ["2020", "2020-H1", "2020-H2"]
        );
        assert_eq!(
            period_bounds("2020-H2"),
            Some(("2020-07-01".into(), "2020-12-31".into()))
        );
        assert_eq!(period_bounds("2020-H3"), None);
        assert!(provisional("2020-H1", 60, "2020-08-29"));
        assert!(!provisional("2020-H1", 60, "2020-08-30"));
    }

    #[test]
    fn the_repository_indicators_load() {
        let all = load(&crate::schemas::Source::built_in("indicators")).unwrap();
        assert_eq!(all.len(), 21);
        let rows: std::collections::BTreeSet<u32> =
            all.iter().filter_map(|i| i.target_row).collect();
        assert_eq!(rows.len(), 14, "every target of the plan has an indicator");
        let beside: Vec<&str> = all
            .iter()
            .filter(|i| i.target_row.is_none())
            .map(|i| i.id.as_str())
            .collect();
        assert_eq!(beside, ["wasting-under-5", "severe-wasting-under-5"]);
    }
}

#[cfg(test)]
mod laws {
    //! Seeded random edit histories: the cells kept by deltas always equal a rebuild.
    use std::collections::BTreeMap;

    use serde_json::json;
    use sync_protocol::{CheckedEdit, CommuneCode, Dot, FieldEdit, FormId, Record, RecordId};

    use super::*;

    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            (z ^ (z >> 31)) % n
        }
    }

    fn defs() -> Vec<Indicator> {
        load(&crate::schemas::Source::built_in("indicators")).unwrap()
    }

    #[test]
    fn deltas_always_sum_to_a_rebuild() {
        let defs = defs();
        let base: u64 = std::env::var("MAM_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(7);
        eprintln!("deltas_always_sum_to_a_rebuild: seed {base} (replay with MAM_SEED={base})");
        let mut filled = 0;
        for case in 0..200 {
            let mut rng = Rng(base.wrapping_add(case));
            let mut records: BTreeMap<RecordId, Record> = BTreeMap::new();
            let mut cells: BTreeMap<CellKey, Amount> = BTreeMap::new();
            let ids: Vec<RecordId> = (0..8).map(|_| RecordId::new_v7()).collect();
            for step in 0..60u64 {
                let id = ids[rng.below(ids.len() as u64) as usize];
                let device = 1 + rng.below(3) as u32;
                let commune = ["19753", "19774", "19819"][rng.below(3) as usize];
                let mut fields = BTreeMap::new();
                let mut set = |name: &str,
                               value: serde_json::Value,
                               rng: &mut Rng,
                               record: Option<&Record>| {
                    // Sometimes supersede what is there, sometimes not: conflicts appear.
                    let supersedes = if rng.below(3) > 0 {
                        record.map(|r| r.dots(name)).unwrap_or_default()
                    } else {
                        vec![]
                    };
                    fields.insert(name.to_owned(), FieldEdit { value, supersedes });
                };
                let current = records.get(&id);
                let born = format!("2020-{:02}-{:02}", 1 + rng.below(12), 1 + rng.below(28));
                match rng.below(6) {
                    0 => set("_deleted", json!(rng.below(2) == 0), &mut rng, current),
                    1 => set("date_of_birth", json!(born), &mut rng, current),
                    2 => set("registration_date", json!(born), &mut rng, current),
                    3 => set(
                        "bhyt_card_issued",
                        json!(rng.below(2) == 0),
                        &mut rng,
                        current,
                    ),
                    4 => set("date_of_birth", json!(null), &mut rng, current),
                    _ => {
                        set("date_of_birth", json!(born), &mut rng, current);
                        set("birth_registered", json!(true), &mut rng, current);
                    }
                }
                let edit = CheckedEdit {
                    seq: step + 1,
                    record: id,
                    form: FormId::parse("birth-registration").unwrap(),
                    version: 1,
                    commune: CommuneCode::parse(commune).unwrap(),
                    fields,
                };
                let before = records.get(&id).cloned();
                let mut after = before.clone().unwrap_or_else(|| Record::from_edit(&edit));
                after.apply(device, edit, &|_: Dot| false);
                // Derived fields as the server computes them: on-time within 60 days.
                let on_time = match (
                    after.value("date_of_birth"),
                    after.value("registration_date"),
                ) {
                    (Some(b), Some(r)) if b.is_string() && r.is_string() => {
                        let days = |v: &serde_json::Value| day_number(v.as_str().unwrap()).unwrap();
                        json!(days(r) - days(b) <= 60)
                    }
                    _ => serde_json::Value::Null,
                };
                after.derived = [("registered_on_time".to_owned(), on_time)]
                    .into_iter()
                    .collect();
                for (key, amount) in deltas(&defs, before.as_ref(), Some(&after)) {
                    cells.entry(key).or_default().add(amount, 1);
                }
                records.insert(id, after);
            }
            cells.retain(|_, a| !a.is_zero());
            let rebuilt = rebuild(&defs, records.values());
            assert_eq!(
                cells,
                rebuilt,
                "case {case} (seed {})",
                base.wrapping_add(case)
            );
            // A rebuild reads the records a chunk at a time: the chunks' cells, added up,
            // are the cells of all of them, wherever the chunks end.
            let all: Vec<&Record> = records.values().collect();
            let mut chunked = BTreeMap::new();
            let mut start = 0;
            while start < all.len() {
                let end = (start + 1 + rng.below(3) as usize).min(all.len());
                let chunk = rebuild(&defs, all[start..end].iter().copied());
                crate::store::add_chunk_cells(&mut chunked, chunk.into_iter().collect());
                start = end;
            }
            assert_eq!(
                chunked,
                rebuilt,
                "chunks, case {case} (seed {})",
                base.wrapping_add(case)
            );
            filled += usize::from(!rebuilt.is_empty());
        }
        assert!(
            filled > 150,
            "most histories must fill cells ({filled} of 200)"
        );
    }
}
