//! Reading the indicator tables: scope, areas for a geography version, roll-ups and values.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::indicators::{self, Amount, CellKey, Indicator, NUMERATOR, PENDING};
use crate::units::Units;

/// Whose figures a reader may see.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Province,
    District(String),
    Communes(Vec<String>),
}

impl Scope {
    pub fn allows(&self, commune: &str, units: &Units) -> bool {
        match self {
            Scope::Province => true,
            // Every commune the district has held on any version of the map: a district office
            // keeps reading its communes' records from before a reorganisation.
            Scope::District(d) => units.versions().iter().any(|v| {
                v.communes
                    .get(commune)
                    .is_some_and(|c| c.district_code.as_deref() == Some(d.as_str()))
            }),
            Scope::Communes(list) => list.iter().any(|c| c == commune),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Commune,
    District,
    Province,
}

impl Level {
    pub fn parse(s: &str) -> Option<Level> {
        match s {
            "commune" => Some(Level::Commune),
            "district" => Some(Level::District),
            "province" => Some(Level::Province),
            _ => None,
        }
    }
}

/// One row of an indicator table.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Row {
    pub indicator: String,
    pub title: String,
    pub title_en: String,
    pub unit: String,
    pub target: Option<f64>,
    pub direction: String,
    pub area: String,
    pub area_name: String,
    pub numerator: i64,
    pub denominator: i64,
    /// Records of the denominator whose outcome is not known yet (left out of `value`).
    pub pending: i64,
    pub value: Option<f64>,
    pub meets_target: Option<bool>,
    /// Contributing records with a field in conflict (their provisional values are counted).
    pub conflicted: i64,
    /// The period may still change (its lag has not passed).
    pub provisional: bool,
    pub records: i64,
}

/// The area a commune's figures go to at `level` in the geography version `geography`.
pub fn area_of(
    units: &Units,
    commune: &str,
    level: Level,
    geography: &str,
) -> Result<(String, String), String> {
    match level {
        Level::Province => Ok(("46".into(), "Thừa Thiên Huế".into())),
        Level::Commune => Ok(units.commune_in(commune, geography)),
        Level::District => {
            let (code, _) = units.commune_in(commune, geography);
            units
                .district_of(&code, Some(geography))
                .ok_or_else(|| format!("there is no district level in geography {geography} (from July 2025 communes report to the province)"))
        }
    }
}

/// What a reader asks for.
pub struct Query<'a> {
    pub period: &'a str,
    pub level: Level,
    pub geography: &'a str,
    pub scope: &'a Scope,
    pub today: &'a str,
}

/// Rows for the query's period and level, over the cells its scope allows.
pub fn table(
    indicators: &[Indicator],
    units: &Units,
    cells: &[(CellKey, Amount)],
    q: &Query,
) -> Result<Vec<Row>, String> {
    let Query {
        period,
        level,
        geography,
        scope,
        today,
    } = *q;
    // Cells onto the geography's communes first: a "communes with at least one" count must
    // not count two merged communes twice.
    let mut by_commune: BTreeMap<(String, &'static str, String), Amount> = BTreeMap::new();
    let bounds = indicators::period_bounds(period);
    let pending_days = |id: &str| {
        indicators
            .iter()
            .find(|i| i.id == id)
            .and_then(|i| i.pending_days)
    };
    let in_period = |key: &CellKey| match key.part {
        // Pending cells are by day: those of the period's days still pending today.
        PENDING => bounds.as_ref().is_some_and(|(from, to)| {
            (from.as_str()..=to.as_str()).contains(&key.period.as_str())
                && pending_days(&key.indicator)
                    .is_some_and(|days| indicators::still_pending(&key.period, days, today))
        }),
        _ => key.period == period,
    };
    for (key, amount) in cells.iter().filter(|(k, _)| in_period(k)) {
        if !scope.allows(&key.commune, units) {
            continue;
        }
        let (commune, _) = units.commune_in(&key.commune, geography);
        let cell = by_commune
            .entry((key.indicator.clone(), key.part, commune))
            .or_default();
        cell.value += amount.value;
        cell.records += amount.records;
        cell.conflicted += amount.conflicted;
    }
    let by_id: BTreeMap<&str, &Indicator> = indicators.iter().map(|i| (i.id.as_str(), i)).collect();
    let mut areas: BTreeMap<(u32, String, String), AreaSums> = BTreeMap::new();
    for ((indicator, part, commune), amount) in by_commune {
        let Some(ind) = by_id.get(indicator.as_str()) else {
            continue;
        };
        let (area, name) = area_of(units, &commune, level, geography)?;
        let entry = areas
            .entry((ind.order, ind.id.clone(), area))
            .or_insert_with(|| (Amount::default(), Amount::default(), name, 0));
        if part == PENDING {
            entry.3 += amount.value;
            continue;
        }
        let communes_rule = part == NUMERATOR && ind.numerator.communes;
        let value = if communes_rule {
            amount.value.min(1)
        } else {
            amount.value
        };
        let side = if part == NUMERATOR {
            &mut entry.0
        } else {
            &mut entry.1
        };
        side.value += value;
        side.records += amount.records;
        side.conflicted += amount.conflicted;
    }
    Ok(areas
        .into_iter()
        .map(|((_, id, area), (num, den, area_name, pending))| {
            let ind = by_id[id.as_str()];
            // The value is over the outcomes known: pending records are left out of it.
            let value = indicators::value(ind, num.value, den.value - pending);
            Row {
                indicator: id.clone(),
                title: ind.title.vi.clone(),
                title_en: ind.title.en.clone(),
                unit: ind.unit.clone(),
                target: ind.target,
                direction: ind.direction.clone(),
                area,
                area_name,
                numerator: num.value,
                denominator: den.value,
                pending,
                value: value.map(|v| (v * 100.0).round() / 100.0),
                meets_target: indicators::meets_target(ind, value),
                conflicted: distinct(ind, num.conflicted, den.conflicted),
                provisional: indicators::provisional(period, ind.lag_days, today),
                records: distinct(ind, num.records, den.records),
            }
        })
        .collect())
}

/// An area's numerator, denominator, name and pending records, as they are summed.
type AreaSums = (Amount, Amount, String, i64);

/// Records counted on both sides once: when both sides read one form, the numerator's records
/// are among the denominator's.
fn distinct(ind: &Indicator, numerator: i64, denominator: i64) -> i64 {
    if ind.numerator.form == ind.denominator.form {
        numerator.max(denominator)
    } else {
        numerator + denominator
    }
}

/// Rows as CSV with a header line.
pub fn csv(rows: &[Row]) -> String {
    let mut out = String::from(
        "indicator,title,unit,target,area,area_name,numerator,denominator,value,meets_target,conflicted,provisional,pending\n",
    );
    let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let opt = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
    for r in rows {
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
            r.indicator,
            quote(&r.title),
            r.unit,
            opt(r.target),
            r.area,
            quote(&r.area_name),
            r.numerator,
            r.denominator,
            opt(r.value),
            r.meets_target.map(|b| b.to_string()).unwrap_or_default(),
            r.conflicted,
            r.provisional,
            r.pending
        ));
    }
    out
}

/// Report sheets: the plan's targets in groups, Vietnamese names.
const GROUPS: [(&str, &str); 5] = [
    ("birth", "Khai sinh"),
    ("health", "Y tế, dinh dưỡng"),
    ("education", "Giáo dục, kỹ năng"),
    ("protection", "Bảo vệ trẻ em"),
    ("participation", "Tham gia, xã phù hợp"),
];

/// The six-month or annual report as a workbook: one sheet per group of targets, one row per
/// area (districts, or communes where the map has no districts) and a province row.
pub fn workbook(
    indicators: &[Indicator],
    units: &Units,
    cells: &[(CellKey, Amount)],
    q: &Query,
) -> Result<Vec<u8>, String> {
    use rust_xlsxwriter::{Format, Workbook};
    let province = table(
        indicators,
        units,
        cells,
        &Query {
            level: Level::Province,
            ..*q
        },
    )?;
    let rows = table(indicators, units, cells, q)?;
    let bold = Format::new().set_bold();
    let mut book = Workbook::new();
    let err = |e: rust_xlsxwriter::XlsxError| e.to_string();
    for (group, name) in GROUPS {
        let members: Vec<&Indicator> = indicators.iter().filter(|i| i.group == group).collect();
        if members.is_empty() {
            continue;
        }
        let sheet = book.add_worksheet();
        sheet.set_name(name).map_err(err)?;
        sheet
            .write_string_with_format(
                0,
                0,
                format!(
                    "Báo cáo kết quả bảo vệ, chăm sóc trẻ em — kỳ {} — {name}",
                    q.period
                ),
                &bold,
            )
            .map_err(err)?;
        let area_label = if q.level == Level::Commune {
            "Xã/phường"
        } else {
            "Huyện/thị xã/thành phố"
        };
        sheet
            .write_string_with_format(2, 0, "Mã", &bold)
            .map_err(err)?;
        sheet
            .write_string_with_format(2, 1, area_label, &bold)
            .map_err(err)?;
        sheet.set_column_width(1, 28).map_err(err)?;
        for (i, ind) in members.iter().enumerate() {
            let col = 2 + (i as u16) * 4;
            let unit = match ind.unit.as_str() {
                "percent" => "%",
                "per_100000" => "/100.000",
                _ => "",
            };
            sheet
                .write_string_with_format(2, col, format!("{} ({unit})", ind.title.vi), &bold)
                .map_err(err)?;
            sheet
                .write_string_with_format(2, col + 1, "Tử số", &bold)
                .map_err(err)?;
            sheet
                .write_string_with_format(2, col + 2, "Mẫu số", &bold)
                .map_err(err)?;
            sheet
                .write_string_with_format(2, col + 3, "Hồ sơ tranh chấp", &bold)
                .map_err(err)?;
            sheet.set_column_width(col, 24).map_err(err)?;
            let target = match ind.target {
                Some(t) => format!("Mục tiêu: {} {t}{unit}", direction_vi(&ind.direction)),
                None => "Mục tiêu: tăng".to_owned(),
            };
            sheet.write_string(1, col, target).map_err(err)?;
        }
        let mut areas: Vec<(String, String)> = rows
            .iter()
            .map(|r| (r.area.clone(), r.area_name.clone()))
            .collect();
        areas.sort();
        areas.dedup();
        let mut line = 3;
        let all = [("46".to_owned(), "Toàn tỉnh".to_owned())];
        for ((code, area_name), source) in areas
            .iter()
            .map(|a| (a, &rows))
            .chain(all.iter().map(|a| (a, &province)))
        {
            sheet.write_string(line, 0, code.as_str()).map_err(err)?;
            sheet
                .write_string(line, 1, area_name.as_str())
                .map_err(err)?;
            for (i, ind) in members.iter().enumerate() {
                let col = 2 + (i as u16) * 4;
                let Some(r) = source
                    .iter()
                    .find(|r| r.indicator == ind.id && (&r.area == code || code == "46"))
                else {
                    continue;
                };
                if let Some(v) = r.value {
                    sheet.write_number(line, col, v).map_err(err)?;
                }
                sheet
                    .write_number(line, col + 1, r.numerator as f64)
                    .map_err(err)?;
                sheet
                    .write_number(line, col + 2, r.denominator as f64)
                    .map_err(err)?;
                sheet
                    .write_number(line, col + 3, r.conflicted as f64)
                    .map_err(err)?;
            }
            line += 1;
        }
        if rows.iter().chain(&province).any(|r| r.provisional) {
            sheet
                .write_string(
                    line + 1,
                    0,
                    "Số liệu tạm tính: kỳ báo cáo chưa hết thời hạn cập nhật.",
                )
                .map_err(err)?;
        }
    }
    book.save_to_buffer().map_err(err)
}

fn direction_vi(direction: &str) -> &'static str {
    match direction {
        "at_least" => "≥",
        "above" => ">",
        "at_most" => "≤",
        "below" => "<",
        _ => "",
    }
}
