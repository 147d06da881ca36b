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
        Level::Province => Ok(("46".into(), units.province_name(geography))),
        Level::Commune => Ok(units.commune_full_in(commune, geography)),
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
    let by_id: BTreeMap<&str, &Indicator> = indicators.iter().map(|i| (i.id.as_str(), i)).collect();
    let bounds = indicators::period_bounds(period);
    let pending_days = |id: &str| by_id.get(id).and_then(|i| i.pending_days);
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

/// Rows as a spreadsheet reads them: a UTF-8 byte order mark (Excel on Windows otherwise
/// reads Vietnamese as Latin-1), headers in the reader's language, decimals written as that
/// language writes them (`"7,2"` in Vietnamese, quoted), yes/no in words.
pub fn csv_for_people(rows: &[Row], english: bool) -> String {
    let headers = if english {
        "Indicator,Title,Unit,Target,Area code,Area,Numerator,Denominator,Not due yet,Value,Meets target,Records in conflict,Provisional"
    } else {
        "Mã chỉ tiêu,Chỉ tiêu,Đơn vị,Mục tiêu,Mã địa bàn,Địa bàn,Tử số,Mẫu số,Chưa đến hạn,Giá trị,Đạt mục tiêu,Hồ sơ tranh chấp,Tạm tính"
    };
    let mut out = format!("\u{feff}{headers}\r\n");
    let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let number = |v: Option<f64>| match v {
        None => String::new(),
        Some(v) if english => v.to_string(),
        Some(v) => quote(&v.to_string().replace('.', ",")),
    };
    let yes_no = |b: bool| match (b, english) {
        (true, true) => "yes",
        (false, true) => "no",
        (true, false) => "có",
        (false, false) => "không",
    };
    let unit = |u: &str| match u {
        "percent" => "%",
        "per_100000" => "/100.000",
        _ if english => "count",
        _ => "số",
    };
    for r in rows {
        let title = if english { &r.title_en } else { &r.title };
        let line = [
            r.indicator.clone(),
            quote(title),
            unit(&r.unit).to_owned(),
            number(r.target),
            r.area.clone(),
            quote(&r.area_name),
            r.numerator.to_string(),
            r.denominator.to_string(),
            r.pending.to_string(),
            number(r.value),
            r.meets_target.map(yes_no).unwrap_or_default().to_owned(),
            r.conflicted.to_string(),
            yes_no(r.provisional).to_owned(),
        ];
        out.push_str(&line.join(","));
        out.push_str("\r\n");
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

/// Who made a report, and on which day (`YYYY-MM-DD`).
pub struct Made<'a> {
    pub by: &'a str,
    pub on: &'a str,
}

/// A period as people say it: "6 tháng đầu năm 2026", "Năm 2026" (English: "First half of
/// 2026", "Year 2026").
pub fn period_label(period: &str, english: bool) -> String {
    match (period.split_once('-'), english) {
        (Some((y, "H1")), false) => format!("6 tháng đầu năm {y}"),
        (Some((y, "H2")), false) => format!("6 tháng cuối năm {y}"),
        (Some((y, "H1")), true) => format!("First half of {y}"),
        (Some((y, "H2")), true) => format!("Second half of {y}"),
        (None, false) => format!("Năm {period}"),
        (None, true) => format!("Year {period}"),
        _ => period.to_owned(),
    }
}

/// A date as Việt Nam writes it: `2026-07-01` → `01/07/2026`. Anything else is left as is.
pub fn day_label(date: &str) -> String {
    sync_protocol::form::day_text(date)
}

/// The area a scope covers, named as the map of `geography` names it: (code, name).
pub fn scope_area(scope: &Scope, units: &Units, geography: &str) -> (String, String) {
    match scope {
        Scope::Province => ("46".to_owned(), units.province_name(geography)),
        Scope::District(code) => {
            // As the period's map names it, else as the newest map that had it.
            let named = |v: &crate::units::UnitVersion| {
                v.communes
                    .values()
                    .find(|c| c.district_code.as_deref() == Some(code.as_str()))
                    .and_then(|c| c.district_full_name())
            };
            let name = units
                .geography(geography)
                .and_then(named)
                .or_else(|| units.versions().iter().rev().find_map(named))
                .unwrap_or_else(|| code.clone());
            (code.clone(), name)
        }
        Scope::Communes(list) => {
            let names: Vec<String> = list
                .iter()
                .map(|c| units.commune_full_in(c, geography).1)
                .collect();
            (list.join(", "), names.join(", "))
        }
    }
}

/// The level a report of `scope` lists: a province its districts (or its communes where the
/// map has none), a district or a commune its communes.
pub fn report_level(scope: &Scope, units: &Units, geography: &str) -> Level {
    let has_districts = units
        .geography(geography)
        .is_some_and(|g| g.communes.values().any(|c| c.district_code.is_some()));
    match scope {
        Scope::Province if has_districts => Level::District,
        _ => Level::Commune,
    }
}

/// Every area of `level` on the map of `geography` that `scope` reaches, (code, name), by name.
fn areas_in(units: &Units, scope: &Scope, level: Level, geography: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = units
        .geography(geography)
        .map(|g| {
            let has_districts = g.communes.values().any(|c| c.district_code.is_some());
            g.communes
                .values()
                // A district's communes on this map; on a map without districts, those the
                // district ever held.
                .filter(|c| match scope {
                    Scope::District(d) if has_districts => c.district_code.as_ref() == Some(d),
                    _ => scope.allows(&c.code, units),
                })
                .filter_map(|c| area_of(units, &c.code, level, geography).ok())
                .collect()
        })
        .unwrap_or_default();
    out.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)));
    out.dedup();
    out
}

/// The six-month or annual report as a workbook: one sheet per group of targets. Each sheet
/// says whose it is (the unit), the period, the map, the day it was made and by whom; lists
/// every area of the report's level in the scope, those without records too; and ends with
/// the unit's total, named as the unit. Headers stay in view (frozen); numbers carry number
/// formats, so Excel shows them the reader's way (7,2 % in Vietnamese).
pub fn workbook(
    indicators: &[Indicator],
    units: &Units,
    cells: &[(CellKey, Amount)],
    q: &Query,
    made: &Made,
) -> Result<Vec<u8>, String> {
    use rust_xlsxwriter::{Format, Workbook};
    let total = table(
        indicators,
        units,
        cells,
        &Query {
            level: Level::Province,
            ..*q
        },
    )?;
    let rows = table(indicators, units, cells, q)?;
    let areas = areas_in(units, q.scope, q.level, q.geography);
    let (unit_code, unit_name) = scope_area(q.scope, units, q.geography);
    let from = units
        .geography(q.geography)
        .map(|g| day_label(&g.valid_from))
        .unwrap_or_default();
    let bold = Format::new().set_bold();
    let title = Format::new().set_bold().set_font_size(13);
    let header = Format::new()
        .set_bold()
        .set_text_wrap()
        .set_border_bottom(rust_xlsxwriter::FormatBorder::Thin);
    let total_text = Format::new()
        .set_bold()
        .set_border_top(rust_xlsxwriter::FormatBorder::Thin);
    let count = Format::new().set_num_format("#,##0");
    let count_total = count.clone().set_bold();
    let mut book = Workbook::new();
    let err = |e: rust_xlsxwriter::XlsxError| e.to_string();
    const HEADER_ROW: u32 = 6;
    for (group, name) in GROUPS {
        let members: Vec<&Indicator> = indicators.iter().filter(|i| i.group == group).collect();
        if members.is_empty() {
            continue;
        }
        let sheet = book.add_worksheet();
        sheet.set_name(name).map_err(err)?;
        let lines = [
            format!("Báo cáo kết quả bảo vệ, chăm sóc trẻ em — {name}"),
            format!("Đơn vị: {unit_name} ({unit_code})"),
            format!("Kỳ báo cáo: {}", period_label(q.period, false)),
            format!("Địa giới hành chính: từ {from}"),
            format!("Ngày lập: {} — Người lập: {}", day_label(made.on), made.by),
        ];
        for (i, line) in lines.iter().enumerate() {
            let format = if i == 0 { &title } else { &bold };
            sheet
                .write_string_with_format(i as u32, 0, line, format)
                .map_err(err)?;
        }
        let area_label = match q.level {
            Level::District => "Huyện, thị xã, thành phố",
            _ => "Xã, phường, thị trấn",
        };
        sheet
            .write_string_with_format(HEADER_ROW, 0, "Mã", &header)
            .map_err(err)?;
        sheet
            .write_string_with_format(HEADER_ROW, 1, area_label, &header)
            .map_err(err)?;
        sheet.set_column_width(1, 30).map_err(err)?;
        for (i, ind) in members.iter().enumerate() {
            let col = 2 + (i as u16) * 5;
            let unit = match ind.unit.as_str() {
                "percent" => " %",
                "per_100000" => " /100.000",
                _ => "",
            };
            let heads = [
                format!("{} ({})", ind.title.vi, unit.trim()),
                "Tử số".to_owned(),
                "Mẫu số".to_owned(),
                "Chưa đến hạn".to_owned(),
                "Hồ sơ tranh chấp".to_owned(),
            ];
            for (k, head) in heads.iter().enumerate() {
                sheet
                    .write_string_with_format(HEADER_ROW, col + k as u16, head, &header)
                    .map_err(err)?;
            }
            sheet.set_column_width(col, 26).map_err(err)?;
            let target = match ind.target {
                _ if ind.target_row.is_none() => "Không phải chỉ tiêu của Kế hoạch 2020".to_owned(),
                Some(t) => format!(
                    "Mục tiêu: {} {}{unit}",
                    direction_vi(&ind.direction),
                    t.to_string().replace('.', ",")
                ),
                None => "Mục tiêu: tăng".to_owned(),
            };
            sheet
                .write_string(HEADER_ROW - 1, col, target)
                .map_err(err)?;
        }
        sheet.set_row_height(HEADER_ROW, 45).map_err(err)?;
        sheet.set_freeze_panes(HEADER_ROW + 1, 2).map_err(err)?;
        let mut line = HEADER_ROW + 1;
        let listed = areas
            .iter()
            .map(|(code, area_name)| (code, area_name, &rows, false))
            .chain(std::iter::once((&unit_code, &unit_name, &total, true)));
        for (code, area_name, source, is_total) in listed {
            let text = if is_total {
                &total_text
            } else {
                &Format::new()
            };
            let label = if is_total {
                format!("Tổng: {area_name}")
            } else {
                area_name.clone()
            };
            sheet
                .write_string_with_format(line, 0, code.as_str(), text)
                .map_err(err)?;
            sheet
                .write_string_with_format(line, 1, &label, text)
                .map_err(err)?;
            for (i, ind) in members.iter().enumerate() {
                let col = 2 + (i as u16) * 5;
                let found = source
                    .iter()
                    .find(|r| r.indicator == ind.id && (is_total || &r.area == code));
                let value_format = match ind.unit.as_str() {
                    "percent" => Format::new().set_num_format("0.0\" %\""),
                    "per_100000" => Format::new().set_num_format("#,##0.0"),
                    _ => Format::new().set_num_format("#,##0"),
                };
                let (value_format, numbers) = match is_total {
                    true => (value_format.set_bold(), &count_total),
                    false => (value_format, &count),
                };
                let r = found.cloned();
                if let Some(v) = r.as_ref().and_then(|r| r.value) {
                    sheet
                        .write_number_with_format(line, col, v, &value_format)
                        .map_err(err)?;
                }
                let (n, d, p, c) = r
                    .map(|r| (r.numerator, r.denominator, r.pending, r.conflicted))
                    .unwrap_or_default();
                for (k, x) in [n, d, p, c].into_iter().enumerate() {
                    sheet
                        .write_number_with_format(line, col + 1 + k as u16, x as f64, numbers)
                        .map_err(err)?;
                }
            }
            line += 1;
        }
        if rows.iter().chain(&total).any(|r| r.provisional) {
            sheet
                .write_string(
                    line + 1,
                    0,
                    "Số liệu tạm tính: kỳ báo cáo chưa hết thời hạn cập nhật.",
                )
                .map_err(err)?;
        }
        if rows.iter().chain(&total).any(|r| r.pending > 0) {
            sheet
                .write_string(
                    line + 2,
                    0,
                    "Chưa đến hạn: hồ sơ chưa biết kết quả (trẻ chưa đủ 60 ngày tuổi, chưa đăng ký), \
                     không tính vào tỷ lệ.",
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
