//! XLSForm import: the spreadsheet format survey designers already use, converted into a Mầm
//! form.
//!
//! `schemas/README.md` ("XLSForm") lists what converts, construct by construct: the `survey`,
//! `choices` and `settings` sheets; names as written; the question types Mầm has (and their
//! older spellings); `range`, `or_other`; groups as sections with their relevance; repeats;
//! labels and hints per language; `required`; simple constraints and relevance. Everything
//! else is named in the report, row by row, never silently dropped.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use calamine::{open_workbook_auto, Data, Reader};
use serde_json::{json, Value};
use sync_protocol::{xpath, Form, FormId};

/// A converted form and what could not be converted.
#[derive(Debug)]
pub struct Import {
    pub form: Form,
    pub not_converted: Vec<Named>,
}

/// One construct the import did not convert: where it is and what it is, in English and in
/// Vietnamese (the office shows the report in the officer's language).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Named {
    pub en: String,
    pub vi: String,
}

impl std::fmt::Display for Named {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.en)
    }
}

fn named(en: impl Into<String>, vi: impl Into<String>) -> Named {
    Named {
        en: en.into(),
        vi: vi.into(),
    }
}

struct Sheet {
    header: Vec<String>,
    rows: Vec<(usize, Vec<String>)>,
    /// The settings' `default_language`: the label a language missing here falls back to.
    default_language: Option<String>,
}

/// Whether a column's language (`Tiếng Việt (vi)`, `English (en)`, `vi`) is `code`'s.
fn is_language(lang: &str, code: &str, names: &[&str]) -> bool {
    let lang = lang.trim().to_lowercase();
    lang == code || lang.contains(&format!("({code})")) || names.iter().any(|n| lang.starts_with(n))
}

/// A column's name as XLSForm means it: the older spellings (`bind:relevant`,
/// `bind:jr:constraintMsg`, `control:appearance`…) as today's, in lower case; a language
/// suffix (`::English (en)`) is kept.
fn canonical(header: &str) -> String {
    let lower = header.trim().to_lowercase();
    let (name, lang) = match lower.find("::") {
        Some(i) => (&lower[..i], &lower[i..]),
        None => (lower.as_str(), ""),
    };
    let name = name
        .strip_prefix("bind:")
        .or_else(|| name.strip_prefix("control:"))
        .unwrap_or(name);
    let name = match name {
        "jr:constraintmsg" => "constraint_message",
        "jr:requiredmsg" => "required_message",
        "calculate" => "calculation",
        "readonly" => "read_only",
        "jr:count" | "count" => "repeat_count",
        "jr:choice_filter" => "choice_filter",
        other => other,
    };
    format!("{name}{lang}")
}

impl Sheet {
    fn column(&self, names: &[&str]) -> Option<usize> {
        self.header.iter().position(|h| {
            let h = canonical(h);
            names.iter().any(|n| h.eq_ignore_ascii_case(n))
        })
    }

    fn cell<'a>(&self, row: &'a [String], names: &[&str]) -> &'a str {
        self.column(names)
            .and_then(|i| row.get(i))
            .map(|s| s.trim())
            .unwrap_or("")
    }

    /// `{vi, en}` from `label::…(vi)` / `label::…(en)` columns, or a plain `label` for both.
    /// A language missing takes the form's default language, then the plain column, then
    /// the first language given.
    fn labels(&self, row: &[String], key: &str) -> Option<Value> {
        let mut plain = None;
        let mut given: Vec<(String, &str)> = Vec::new();
        for (i, h) in self.header.iter().enumerate() {
            let lower = canonical(h);
            let text = row.get(i).map(|s| s.trim()).filter(|s| !s.is_empty());
            let Some(text) = text else { continue };
            if lower == key {
                plain = Some(text);
            } else if let Some(lang) = lower
                .strip_prefix(&format!("{key}::"))
                .or_else(|| lower.strip_prefix(&format!("{key}:")))
            {
                given.push((lang.to_owned(), text));
            }
        }
        let find = |code: &str, names: &[&str]| {
            given
                .iter()
                .find(|(l, _)| is_language(l, code, names))
                .map(|(_, t)| *t)
        };
        let default = self.default_language.as_deref().and_then(|d| {
            let d = d.to_lowercase();
            given
                .iter()
                .find(|(l, _)| *l == d || l.contains(&d))
                .map(|(_, t)| *t)
        });
        let first = given.first().map(|(_, t)| *t);
        let vi_own = find("vi", &["vi", "tiếng việt", "vietnam"]);
        let en_own = find("en", &["en"]);
        let vi = vi_own.or(default).or(plain).or(en_own).or(first)?;
        let en = en_own.or(default).or(plain).unwrap_or(vi);
        use unicode_normalization::UnicodeNormalization;
        Some(json!({ "vi": vi.nfc().collect::<String>(), "en": en.nfc().collect::<String>() }))
    }

    /// The languages of this sheet's label columns other than Vietnamese and English.
    fn other_languages(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for h in &self.header {
            let lower = h.to_lowercase();
            for key in ["label", "hint"] {
                let Some(lang) = lower
                    .strip_prefix(&format!("{key}::"))
                    .or_else(|| lower.strip_prefix(&format!("{key}:")))
                else {
                    continue;
                };
                let ours = is_language(lang, "vi", &["vi", "tiếng việt", "vietnam"])
                    || is_language(lang, "en", &["en"]);
                let name = h[h.find(':').map_or(0, |i| i + 1)..]
                    .trim_start_matches(':')
                    .to_owned();
                if !ours && !out.contains(&name) {
                    out.push(name);
                }
            }
        }
        out
    }
}

fn read_sheet(
    workbook: &mut calamine::Sheets<std::io::BufReader<std::fs::File>>,
    name: &str,
) -> anyhow::Result<Option<Sheet>> {
    let Some(sheet_name) = workbook
        .sheet_names()
        .into_iter()
        .find(|s| s.eq_ignore_ascii_case(name))
    else {
        return Ok(None);
    };
    let range = workbook
        .worksheet_range(&sheet_name)
        .with_context(|| format!("cannot read sheet {name}"))?;
    let mut rows = range
        .rows()
        .enumerate()
        .map(|(i, r)| (i + 1, r.iter().map(text).collect::<Vec<String>>()));
    let Some((_, header)) = rows.next() else {
        return Ok(None);
    };
    let header = header.into_iter().map(|h| h.trim().to_owned()).collect();
    Ok(Some(Sheet {
        default_language: None,
        header,
        rows: rows
            .filter(|(_, r)| r.iter().any(|c| !c.trim().is_empty()))
            .collect(),
    }))
}

fn text(cell: &Data) -> String {
    match cell {
        Data::Empty => String::new(),
        Data::Float(f) if f.fract() == 0.0 => format!("{}", *f as i64),
        // As the spreadsheet shows it (and pyxform reads it).
        Data::Bool(b) => if *b { "TRUE" } else { "FALSE" }.to_owned(),
        other => other.to_string(),
    }
}

/// Convert `path`. The form's id and version come from the settings sheet (`form_id`,
/// `version`), or from the file name and 1.
/// The choices of a CSV file (`select_one_from_file`): its `name` column is the code, its
/// `label` columns the labels, its other columns what a choice filter reads.
fn choices_from_file(path: &Path) -> anyhow::Result<Vec<Value>> {
    if path
        .extension()
        .is_none_or(|x| !x.eq_ignore_ascii_case("csv"))
    {
        anyhow::bail!("only CSV choice lists are read");
    }
    let text = std::fs::read_to_string(path).context("cannot read the file")?;
    let mut rows = csv_rows(text.trim_start_matches('\u{feff}')).into_iter();
    let header = rows.next().unwrap_or_default();
    let sheet = Sheet {
        header: std::iter::once("list_name".to_owned())
            .chain(header)
            .collect(),
        rows: rows
            .enumerate()
            .map(|(i, row)| {
                (
                    i + 2,
                    std::iter::once("file".to_owned()).chain(row).collect(),
                )
            })
            .collect(),
        default_language: None,
    };
    Ok(read_lists(&sheet).remove("file").unwrap_or_default())
}

/// The rows of a CSV text (RFC 4180: quoted fields, doubled quotes, line breaks in quotes).
fn csv_rows(text: &str) -> Vec<Vec<String>> {
    let (mut rows, mut row, mut cell) = (Vec::new(), Vec::new(), String::new());
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cell.push('"');
                chars.next();
            }
            ('"', true) => quoted = false,
            ('"', false) if cell.is_empty() => quoted = true,
            (',', false) => row.push(std::mem::take(&mut cell)),
            ('\r', false) => {}
            ('\n', false) => {
                row.push(std::mem::take(&mut cell));
                if row.iter().any(|c| !c.is_empty()) {
                    rows.push(std::mem::take(&mut row));
                }
                row.clear();
            }
            (c, _) => cell.push(c),
        }
    }
    row.push(cell);
    if row.iter().any(|c| !c.is_empty()) {
        rows.push(row);
    }
    rows
}

/// The choice lists of a choices sheet (`choices`, or `external_choices`), by list name: each
/// choice's code, labels, and its other columns for choice filters.
fn read_lists(sheet: &Sheet) -> BTreeMap<String, Vec<Value>> {
    let mut lists: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for (_, row) in &sheet.rows {
        let list = sheet.cell(row, &["list_name", "list name"]);
        let code = sheet.cell(row, &["name", "value"]);
        if list.is_empty() || code.is_empty() {
            continue;
        }
        let mut choice = json!({ "code": code });
        if let Some(label) = sheet.labels(row, "label") {
            choice["label"] = label;
        }
        // The other columns, for choice filters.
        let mut props = serde_json::Map::new();
        for (i, h) in sheet.header.iter().enumerate() {
            let key = h.to_ascii_lowercase();
            let known = ["list_name", "list name", "name", "value"].contains(&key.as_str())
                || ["label", "image", "audio", "video", "media", "big-image"]
                    .iter()
                    .any(|k| key == *k || key.starts_with(&format!("{k}:")));
            let value = row.get(i).map(|v| v.trim()).unwrap_or("");
            if !known && !h.is_empty() && !value.is_empty() {
                props.insert(h.clone(), json!(value));
            }
        }
        if !props.is_empty() {
            choice["props"] = Value::Object(props);
        }
        lists.entry(list.to_owned()).or_default().push(choice);
    }
    lists
}

pub fn convert(path: &Path) -> anyhow::Result<Import> {
    let mut workbook =
        open_workbook_auto(path).with_context(|| format!("cannot open {}", path.display()))?;
    // A workbook of one sheet is its survey, whatever the sheet is called (as pyxform reads it).
    let only = match workbook.sheet_names().as_slice() {
        [one] => Some(one.clone()),
        _ => None,
    };
    let survey = match read_sheet(&mut workbook, "survey")? {
        Some(sheet) => sheet,
        None => match only {
            Some(name) => {
                read_sheet(&mut workbook, &name)?.context("the workbook's only sheet is empty")?
            }
            None => anyhow::bail!("the workbook has no survey sheet"),
        },
    };
    let mut survey = survey;
    let mut choices = read_sheet(&mut workbook, "choices")?;
    let settings = read_sheet(&mut workbook, "settings")?;
    let mut not_converted = Vec::new();
    let default_language = settings.as_ref().and_then(|sheet| {
        let (_, row) = sheet.rows.first()?;
        Some(sheet.cell(row, &["default_language"]).to_owned()).filter(|l| !l.is_empty())
    });
    survey.default_language = default_language.clone();
    if let Some(sheet) = choices.as_mut() {
        sheet.default_language = default_language.clone();
    }
    let languages = survey.other_languages();
    if !languages.is_empty() {
        not_converted.push(named(
            format!("languages {}: the phone and the office show Vietnamese and English; a label without them is shown in {}", languages.join(", "), default_language.as_deref().unwrap_or(&languages[0])),
            format!("ngôn ngữ {}: điện thoại và văn phòng hiện tiếng Việt và tiếng Anh; nhãn không có hai thứ tiếng này hiện bằng {}", languages.join(", "), default_language.as_deref().unwrap_or(&languages[0])),
        ));
    }

    let lists = choices.as_ref().map(read_lists).unwrap_or_default();
    // Lists ODK keeps outside the form (select_one_external): here, choices like any other.
    let external = read_sheet(&mut workbook, "external_choices")?
        .as_ref()
        .map(read_lists)
        .unwrap_or_default();
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("form")
        .to_ascii_lowercase()
        .replace(['_', ' '], "-");
    let (mut id, mut version, mut title) = (stem, 1u32, None);
    let mut instance_name: Option<Value> = None;
    if let Some(sheet) = &settings {
        if let Some((_, row)) = sheet.rows.first() {
            let form_id = sheet.cell(row, &["form_id", "id_string"]);
            if !form_id.is_empty() {
                id = form_id.to_ascii_lowercase().replace(['_', ' '], "-");
            }
            let v = sheet.cell(row, &["version"]);
            if !v.is_empty() {
                match v.parse::<u32>() {
                    Ok(n) if n > 0 => version = n,
                    _ => not_converted.push(named(
                        format!("settings: version {v:?} is not a whole number from 1; using 1"),
                        format!("settings: phiên bản {v:?} không phải số nguyên từ 1; dùng 1"),
                    )),
                }
            }
            title = sheet.labels(row, "form_title");
            let name_rule = sheet.cell(row, &["instance_name"]);
            if !name_rule.is_empty() {
                match xpath::parse(name_rule, None) {
                    Ok(rule) => instance_name = Some(rule),
                    Err(e) => not_converted.push(named(
                        format!("settings: instance_name {name_rule:?}: {e}"),
                        format!(
                            "settings: tên hồ sơ (instance_name) {name_rule:?}: {}",
                            e.vi
                        ),
                    )),
                }
            }
        }
    }

    // Fields are collected into a stack of scopes: the form, then each open repeat.
    // Each scope: its name, its fields, its label, its calculations, its own relevance.
    let mut scopes: Vec<Scope> = vec![Scope::default()];
    // Open groups, each with its relevance (converted; `None` when it has none), and for each
    // scope how many groups were open when it began: a group's relevance applies to the fields
    // it holds in the same scope.
    let mut groups: Vec<Option<Value>> = Vec::new();
    let mut group_base: Vec<usize> = vec![0];
    // The form's sections: each top-level group, and the fields between groups.
    let mut sections: Vec<(Value, Vec<String>, bool)> = Vec::new();
    let mut in_group_section = false;
    let mut derived: Vec<Value> = Vec::new();
    for (n, row) in &survey.rows {
        let kind = survey.cell(row, &["type"]);
        let name = survey.cell(row, &["name"]);
        let here = |en: String, vi: String| {
            named(
                format!("survey row {n} ({name}): {en}"),
                format!("dòng {n} ({name}): {vi}"),
            )
        };
        let (head, arg, or_other) = type_words(kind);
        let (head, arg) = (head.as_str(), arg.as_deref());
        let mut field = json!({ "name": name });
        let mut other_field = None;
        let ty = match (head, arg) {
            ("begin", Some("group")) | ("begin_group", None) => {
                let relevant = survey.cell(row, &["relevant"]);
                let converted = if relevant.is_empty() {
                    None
                } else {
                    match xpath::parse(relevant, None) {
                        Ok(expr) => Some(expr),
                        Err(e) => {
                            not_converted.push(here(
                                format!("group relevant {relevant:?}: {e} (the group's questions are shown always)"),
                                format!("điều kiện hiển thị của nhóm {relevant:?}: {} (các câu hỏi của nhóm luôn hiện)", e.vi),
                            ));
                            None
                        }
                    }
                };
                groups.push(converted);
                if groups.len() == 1 && scopes.len() == 1 {
                    let label = survey
                        .labels(row, "label")
                        .unwrap_or_else(|| json!({ "vi": name, "en": name }));
                    sections.push((label, Vec::new(), true));
                    in_group_section = true;
                }
                continue;
            }
            ("end", Some("group")) | ("end_group", None) => {
                if groups.pop().is_none() {
                    not_converted.push(here(
                        "end group without begin group".into(),
                        "end group không có begin group".into(),
                    ));
                }
                if groups.is_empty() {
                    in_group_section = false;
                }
                continue;
            }
            ("begin", Some("repeat")) | ("begin_repeat", None) => {
                let count = survey.cell(row, &["repeat_count", "jr:count"]);
                let mut repeat_count = None;
                if !count.is_empty() {
                    match xpath::parse(count, None) {
                        Ok(rule) => repeat_count = Some(rule),
                        Err(e) => not_converted.push(here(
                            format!("repeat_count {count:?}: {e} (the phone lets the person add and remove items)"),
                            format!("số lần lặp (repeat_count) {count:?}: {} (điện thoại cho người nhập thêm hay bớt mục)", e.vi),
                        )),
                    }
                    // pyxform's calculation of a count that is not a plain reference, kept
                    // as a derived field of the same name.
                    let plain = count.starts_with("${")
                        && count.ends_with('}')
                        && count.matches("${").count() == 1;
                    if !plain && scopes.len() == 1 {
                        if let Ok(expr) = xpath::parse(count, None) {
                            let mut d = json!({ "name": format!("{name}_count"), "type": "text", "expr": expr });
                            // Empty where the groups holding the repeat are not shown.
                            let held: Vec<Value> = groups.iter().flatten().cloned().collect();
                            if let Some(rule) = all_of(held) {
                                d["relevant"] = rule;
                            }
                            derived.push(d);
                        }
                    }
                }
                let relevant = survey.cell(row, &["relevant"]);
                let own = match relevant {
                    "" => None,
                    text => match xpath::parse(text, None) {
                        Ok(rule) => Some(rule),
                        Err(e) => {
                            not_converted.push(here(
                                format!("repeat relevant {text:?}: {e} (the repeat is shown always)"),
                                format!("điều kiện hiển thị của nhóm lặp {text:?}: {} (nhóm lặp luôn hiện)", e.vi),
                            ));
                            None
                        }
                    },
                };
                scopes.push(Scope {
                    name: name.to_owned(),
                    label: survey.labels(row, "label"),
                    relevant: own,
                    repeat_count,
                    ..Scope::default()
                });
                group_base.push(groups.len());
                continue;
            }
            ("end", Some("repeat")) | ("end_repeat", None) => {
                if scopes.len() == 1 {
                    not_converted.push(here(
                        "end repeat without begin repeat".into(),
                        "end repeat không có begin repeat".into(),
                    ));
                    continue;
                }
                let scope = scopes.pop().expect("checked above");
                group_base.pop();
                let mut repeat =
                    json!({ "name": scope.name, "type": "repeat", "fields": scope.fields });
                if let Some(label) = scope.label {
                    repeat["label"] = label;
                }
                if !scope.derived.is_empty() {
                    repeat["derived"] = Value::Array(scope.derived);
                }
                if let Some(rule) = scope.relevant {
                    repeat["relevant"] = rule;
                }
                if let Some(rule) = scope.repeat_count {
                    repeat["repeat_count"] = rule;
                }
                let base = *group_base.last().expect("the form's base");
                place(
                    repeat,
                    &groups[base.min(groups.len())..],
                    scopes.len() == 1,
                    in_group_section,
                    &mut sections,
                    &mut scopes.last_mut().expect("the form scope").fields,
                );
                continue;
            }
            ("calculate", None) => {
                // A derived field, computed by the server and the phone alike.
                let calculation = survey.cell(row, &["calculation"]);
                if name.is_empty() {
                    not_converted.push(named(
                        format!("survey row {n}: a calculate without a name"),
                        format!("dòng {n}: phép tính không có tên"),
                    ));
                } else {
                    match xpath::parse(calculation, None) {
                        Ok(expr) => {
                            let mut d = json!({ "name": name, "type": "text", "expr": expr });
                            if let Some(label) = survey.labels(row, "label") {
                                d["label"] = label;
                            }
                            // Empty where its groups, or its own condition, are not shown.
                            let base = *group_base.last().expect("the form's base");
                            let mut all: Vec<Value> = groups[base.min(groups.len())..]
                                .iter()
                                .flatten()
                                .cloned()
                                .collect();
                            let relevant = survey.cell(row, &["relevant"]);
                            if !relevant.is_empty() {
                                match xpath::parse(relevant, None) {
                                    Ok(own) => all.push(own),
                                    Err(e) => not_converted.push(here(
                                        format!("relevant {relevant:?}: {e}"),
                                        format!(
                                            "điều kiện hiển thị (relevant) {relevant:?}: {}",
                                            e.vi
                                        ),
                                    )),
                                }
                            }
                            if let Some(rule) = all_of(all) {
                                d["relevant"] = rule;
                            }
                            let trigger = survey.cell(row, &["trigger"]);
                            let trigger = trigger
                                .strip_prefix("${")
                                .and_then(|t| t.strip_suffix('}'))
                                .unwrap_or(trigger);
                            if !trigger.is_empty() {
                                // Worked out when its trigger changes, and kept: a hidden
                                // field the phone fills, not a derived field made again.
                                let mut kept = json!({
                                    "name": name, "type": "text", "appearance": "hidden",
                                    "calculate": d["expr"].clone(), "trigger": trigger,
                                });
                                if let Some(label) = d.get("label") {
                                    kept["label"] = label.clone();
                                }
                                scopes.last_mut().expect("a scope").fields.push(kept);
                            } else {
                                // Inside a repeat, made for each item.
                                match scopes.len() {
                                    1 => derived.push(d),
                                    _ => scopes.last_mut().expect("a repeat").derived.push(d),
                                }
                            }
                        }
                        Err(e) => not_converted.push(here(
                            format!("calculation {calculation:?}: {e}"),
                            format!("phép tính {calculation:?}: {}", e.vi),
                        )),
                    }
                }
                continue;
            }
            // Metadata the phone fills itself.
            ("start" | "end", None) => {
                field["auto"] = json!(head);
                "datetime"
            }
            ("today", None) => {
                field["auto"] = json!("today");
                "date"
            }
            ("deviceid" | "username", None) => {
                field["auto"] = json!(head);
                "text"
            }
            ("hidden", None) => {
                // Never shown; holds what a tool or an officer puts there.
                field["appearance"] = json!("hidden");
                "text"
            }
            ("image" | "photo", None) => {
                // parameters: max-pixels=N, the longer side the phone scales a photo to.
                let params = survey.cell(row, &["parameters"]);
                for word in params.split_whitespace() {
                    match word.split_once('=') {
                        Some(("max-pixels", v)) => match v.parse::<u32>() {
                            Ok(n) if n > 0 => field["max_pixels"] = json!(n),
                            _ => not_converted.push(here(
                                format!(
                                    "parameter {word:?}: max-pixels is a whole number of pixels"
                                ),
                                format!("tham số {word:?}: max-pixels là số điểm ảnh nguyên"),
                            )),
                        },
                        _ => not_converted.push(here(
                            format!("parameter {word:?} of a photo"),
                            format!("tham số {word:?} của câu hỏi ảnh"),
                        )),
                    }
                }
                "image"
            }
            ("audio", None) => "audio",
            ("video", None) => "video",
            ("file", None) => "file",
            ("background-audio", None) => {
                not_converted.push(here(
                    "background-audio: a phone's browser does not record while the form is filled".into(),
                    "background-audio: trình duyệt của điện thoại không ghi âm trong khi điền biểu mẫu".into(),
                ));
                continue;
            }
            ("geotrace", None) => "geotrace",
            ("geoshape", None) => "geoshape",
            ("phonenumber" | "simserial" | "subscriberid", None) => {
                // Kept as a hidden column that stays empty, as ODK Collect leaves it on
                // Android 10 and later; said so in the report.
                not_converted.push(here(
                    format!("metadata {head:?} stays empty: a phone's browser cannot read its phone number or SIM"),
                    format!("thông tin máy {head:?} để trống: trình duyệt của điện thoại không đọc được số điện thoại hay SIM"),
                ));
                field["appearance"] = json!("hidden");
                "text"
            }
            ("text" | "string", None) => "text",
            // Typed in; a scanner where the phone's browser offers one.
            ("barcode", None) => {
                field["appearance"] = json!("barcode");
                "text"
            }
            ("integer" | "int", None) => "integer",
            ("decimal", None) => "decimal",
            ("date", None) => "date",
            ("time", None) => "time",
            ("datetime", None) => "datetime",
            ("note", None) => "note",
            // `trigger` is the older name of `acknowledge`.
            ("acknowledge" | "trigger", None) => "boolean",
            ("geopoint", None) => {
                // parameters: capture-accuracy=N, the accuracy in metres to wait for.
                let params = survey.cell(row, &["parameters"]);
                for word in params.split_whitespace() {
                    match word.split_once('=') {
                        Some(("capture-accuracy", v)) => match v.parse::<f64>() {
                            Ok(m) if m > 0.0 => field["accuracy"] = json!(m),
                            _ => not_converted.push(here(
                                format!("parameter {word:?}: capture-accuracy is metres"),
                                format!("tham số {word:?}: capture-accuracy tính bằng mét"),
                            )),
                        },
                        // The warning threshold is the phone's own colouring of the reading.
                        Some(("warning-accuracy", _)) => {}
                        _ => not_converted.push(here(
                            format!("parameter {word:?} of a place"),
                            format!("tham số {word:?} của câu hỏi vị trí"),
                        )),
                    }
                }
                "geopoint"
            }
            ("range", None) => {
                // parameters: start=1 end=10 step=1 (XLSForm's defaults 1, 10, 1).
                let params = survey.cell(row, &["parameters"]);
                let mut bounds = [1.0, 10.0, 1.0];
                for word in params.split_whitespace() {
                    if let Some((key, v)) = word.split_once('=') {
                        let at = ["start", "end", "step"].iter().position(|k| *k == key);
                        match (at, v.parse::<f64>()) {
                            (Some(i), Ok(x)) => bounds[i] = x,
                            _ => not_converted.push(here(
                                format!("range parameter {word:?}"),
                                format!("tham số range {word:?}"),
                            )),
                        }
                    }
                }
                let whole = bounds.iter().all(|x| x.fract() == 0.0);
                let number = |x: f64| if whole { json!(x as i64) } else { json!(x) };
                let (low, high) = (bounds[0].min(bounds[1]), bounds[0].max(bounds[1]));
                field["min"] = number(low);
                field["max"] = number(high);
                if whole {
                    "integer"
                } else {
                    "decimal"
                }
            }
            ("select_one_from_file" | "select_multiple_from_file", Some(file)) => {
                // A choice list in a CSV file beside the spreadsheet, attached to this version
                // of the form as its choices.
                match choices_from_file(&path.with_file_name(file)) {
                    Ok(choices) if !choices.is_empty() => field["choices"] = Value::Array(choices),
                    Ok(_) => {
                        not_converted.push(here(
                            format!("{file}: a choice list with no choices"),
                            format!("{file}: danh sách lựa chọn trống"),
                        ));
                        continue;
                    }
                    Err(e) => {
                        not_converted.push(here(
                            format!("{file}: {e} (put the file beside the spreadsheet)"),
                            format!("{file}: {e} (hãy để tệp cạnh bảng tính)"),
                        ));
                        continue;
                    }
                }
                if head == "select_one_from_file" {
                    "select_one"
                } else {
                    "select_many"
                }
            }
            ("rank", Some(list)) => match lists.get(list) {
                Some(choices) => {
                    field["choices"] = Value::Array(choices.clone());
                    "rank"
                }
                None => {
                    not_converted.push(here(
                        format!("choice list {list:?} is not on the choices sheet"),
                        format!("danh sách lựa chọn {list:?} không có trong trang choices"),
                    ));
                    continue;
                }
            },
            ("select_one" | "select_multiple" | "select_one_external", Some(list)) => {
                let from = if head == "select_one_external" {
                    &external
                } else {
                    &lists
                };
                match from.get(list) {
                    Some(choices) => {
                        let mut choices = choices.clone();
                        if or_other {
                            // XLSForm's `or_other`: an "other" choice, and the text box for it.
                            choices.push(json!({ "code": "other", "label": { "vi": "Khác", "en": "Other" } }));
                            other_field = Some(json!({
                                "name": format!("{name}_other"),
                                "type": "text",
                                "label": { "vi": "Khác (ghi rõ)", "en": "Specify other" },
                                "relevant": { "xpath": [{ "selected": [{ "var": name }, "other"] }] },
                            }));
                        }
                        field["choices"] = Value::Array(choices);
                    }
                    None => {
                        not_converted.push(here(
                            format!("choice list {list:?} is not on the choices sheet"),
                            format!("danh sách lựa chọn {list:?} không có trong trang choices"),
                        ));
                        continue;
                    }
                }
                if head != "select_multiple" {
                    "select_one"
                } else {
                    "select_many"
                }
            }
            ("", None) => continue,
            _ => {
                not_converted.push(here(
                    format!("type {kind:?} is not supported"),
                    format!("kiểu câu hỏi {kind:?} chưa được hỗ trợ"),
                ));
                continue;
            }
        };
        if name.is_empty() && ty == "note" {
            // A note holds nothing: it takes the name pyxform gives it.
            field["name"] = json!(format!("generated_note_name_{n}"));
        } else if name.is_empty() {
            not_converted.push(named(
                format!("survey row {n}: a {kind} question without a name"),
                format!("dòng {n}: câu hỏi {kind} không có tên"),
            ));
            continue;
        }
        field["type"] = json!(ty);
        if let Some(label) = survey.labels(row, "label") {
            field["label"] = label;
        }
        if let Some(hint) = survey.labels(row, "hint") {
            field["hint"] = hint;
        }
        if let Some(guidance) = survey.labels(row, "guidance_hint") {
            field["guidance"] = guidance;
        }
        let read_only = survey.cell(row, &["read_only"]);
        match read_only.to_ascii_lowercase().as_str() {
            "yes" | "true" | "true()" | "1" => field["read_only"] = json!(true),
            "" | "no" | "false" | "false()" | "0" => {}
            _ => not_converted.push(here(
                format!("read_only {read_only:?}: only yes or no (the question can be typed into)"),
                format!("chỉ đọc (read_only) {read_only:?}: chỉ nhận yes hoặc no (câu hỏi vẫn nhập được)"),
            )),
        }
        // How the question shows (`multiline`, `numbers`, …): a hint to the phone, which
        // ignores those it does not know.
        let appearance = survey.cell(row, &["appearance"]);
        if !appearance.is_empty()
            && (field.get("appearance").is_none() || field["appearance"] == "barcode")
        {
            field["appearance"] = json!(appearance);
        }
        let required = survey.cell(row, &["required"]);
        match required.to_ascii_lowercase().as_str() {
            "yes" | "true" | "true()" | "1" => field["required"] = json!(true),
            "" | "no" | "false" | "false()" | "0" => {}
            _ => match xpath::parse(required, Some(name)) {
                Ok(rule) => field["required_if"] = rule,
                Err(e) => not_converted.push(here(
                    format!("required {required:?}: {e}"),
                    format!("bắt buộc (required) {required:?}: {}", e.vi),
                )),
            },
        }
        if let Some(m) = survey.labels(row, "required_message") {
            field["required_message"] = m;
        }
        let constraint = survey.cell(row, &["constraint"]);
        if !constraint.is_empty() {
            // Bounds and patterns where they say it all (their messages name the bound);
            // any other rule as an expression.
            let mut simple = field.clone();
            if constraint_rules(constraint, ty, &mut simple).is_ok() {
                field = simple;
            } else {
                match xpath::parse(constraint, Some(name)) {
                    Ok(rule) => field["constraint"] = rule,
                    Err(e) => not_converted.push(here(
                        format!("constraint {constraint:?}: {e}"),
                        format!("ràng buộc (constraint) {constraint:?}: {}", e.vi),
                    )),
                }
            }
        }
        if let Some(m) = survey.labels(row, "constraint_message") {
            field["constraint_message"] = m;
        }
        let relevant = survey.cell(row, &["relevant"]);
        if !relevant.is_empty() {
            match xpath::parse(relevant, None) {
                Ok(expr) => field["relevant"] = expr,
                Err(e) => not_converted.push(here(
                    format!("relevant {relevant:?}: {e}"),
                    format!("điều kiện hiển thị (relevant) {relevant:?}: {}", e.vi),
                )),
            }
        }
        let filter = survey.cell(row, &["choice_filter"]);
        if !filter.is_empty() {
            match xpath::parse_choice_filter(filter) {
                Ok(rule) => field["choice_filter"] = rule,
                Err(e) => not_converted.push(here(
                    format!("choice_filter {filter:?}: {e}"),
                    format!("lọc lựa chọn (choice_filter) {filter:?}: {}", e.vi),
                )),
            }
        }
        // A code listed twice is kept only where a choice filter tells the two apart.
        if field.get("choice_filter").is_none() {
            if let Some(choices) = field.get_mut("choices").and_then(Value::as_array_mut) {
                let mut seen = std::collections::BTreeSet::new();
                let mut twice = Vec::new();
                choices.retain(|c| {
                    let first = seen.insert(c["code"].to_string());
                    if !first {
                        twice.push(c["code"].to_string());
                    }
                    first
                });
                for code in twice {
                    not_converted.push(here(
                        format!("choice {code} is listed twice without a choice_filter: the second is left out"),
                        format!("lựa chọn {code} có hai lần mà không có choice_filter: bỏ lần thứ hai"),
                    ));
                }
            }
        }
        let default = survey.cell(row, &["default"]);
        if !default.is_empty() {
            // A value of the question's type, or an expression the phone computes when a
            // new record is opened.
            match typed_default(default, ty) {
                Some(v) => field["default"] = v,
                None => match xpath::parse(default, None) {
                    Ok(rule) if default.contains("${") || default.contains('(') => {
                        field["default_expr"] = rule
                    }
                    Ok(_) | Err(_) => not_converted.push(here(
                        format!("default {default:?} (neither a value of the question's type nor an expression Mầm reads)"),
                        format!("giá trị mặc định {default:?} (không phải giá trị đúng kiểu câu hỏi, cũng không phải biểu thức Mầm đọc được)"),
                    )),
                },
            }
        }
        for column in ["calculation", "repeat_count", "trigger"] {
            let value = survey.cell(row, &[column]);
            if !value.is_empty() {
                not_converted.push(here(
                    format!("{column} {value:?}"),
                    format!("cột {column} {value:?} chưa được hỗ trợ"),
                ));
            }
        }
        let base = *group_base.last().expect("the form's base");
        let top = scopes.len() == 1;
        for f in std::iter::once(field).chain(other_field) {
            place(
                f,
                &groups[base.min(groups.len())..],
                top,
                in_group_section,
                &mut sections,
                &mut scopes.last_mut().expect("the form scope").fields,
            );
        }
    }
    if !groups.is_empty() {
        not_converted.push(named(
            format!("{} group(s) never closed", groups.len()),
            format!("{} nhóm không được đóng", groups.len()),
        ));
    }
    if scopes.len() > 1 {
        let open = scopes.last().map(|s| s.name.clone()).unwrap_or_default();
        not_converted.push(named(
            format!("repeat {open:?} is never closed"),
            format!("nhóm lặp {open:?} không được đóng"),
        ));
    }
    let mut fields = scopes.swap_remove(0).fields;
    keep_what_reads_known_names(&mut fields, &mut derived, &mut not_converted);
    let mut form = json!({ "id": id, "version": version, "fields": fields });
    if !derived.is_empty() {
        form["derived"] = Value::Array(derived);
    }
    if let Some(rule) = instance_name {
        let names: std::collections::BTreeSet<String> = form["fields"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f["name"].as_str().map(str::to_owned))
            .collect();
        match sync_protocol::expr::vars(&rule)
            .into_iter()
            .find(|v| !names.contains(v))
        {
            Some(v) => not_converted.push(named(
                format!("settings: instance_name reads ${{{v}}}, which is not a question of this form"),
                format!("settings: tên hồ sơ (instance_name) đọc ${{{v}}}, không phải câu hỏi của biểu mẫu này"),
            )),
            None => form["instance_name"] = rule,
        }
    }
    // Groups are the form's sections (pages on the phone), when it has any.
    if sections.iter().any(|(_, _, group)| *group) {
        form["sections"] = sections
            .into_iter()
            .filter(|(_, names, _)| !names.is_empty())
            .map(|(label, fields, _)| json!({ "label": label, "fields": fields }))
            .collect();
    }
    if let Some(title) = title {
        form["title"] = title;
    }
    FormId::parse(id.as_str()).map_err(anyhow::Error::msg)?;
    let form: Form = serde_json::from_value(form).context("the converted form is not valid")?;
    form.validate()
        .map_err(|e| anyhow::anyhow!("the converted form is not valid: {e}"))?;
    Ok(Import {
        form,
        not_converted,
    })
}

/// A `default` cell as a value of the question's type; `None` for an expression or a value
/// that is not of the type.
fn typed_default(text: &str, ty: &str) -> Option<Value> {
    if text.contains("${") || text.contains('(') {
        return None;
    }
    let text = text.trim_matches(|c| c == '\'' || c == '"');
    match ty {
        "integer" => text.parse::<i64>().ok().map(Value::from),
        "decimal" => text
            .parse::<f64>()
            .ok()
            .filter(|x| x.is_finite())
            .map(|x| json!(x)),
        "date" => sync_protocol::form::parse_date(text).map(|_| json!(text)),
        "time" => match text.parse::<f64>() {
            // A time cell, as a spreadsheet stores it: a fraction of a day.
            Ok(day) if (0.0..1.0).contains(&day) => {
                let minutes = (day * 24.0 * 60.0).round() as i64;
                Some(json!(format!(
                    "{:02}:{:02}",
                    minutes / 60 % 24,
                    minutes % 60
                )))
            }
            _ => sync_protocol::form::is_time(text).then(|| json!(text)),
        },
        "select_many" => Some(json!(text.split_whitespace().collect::<Vec<_>>())),
        "text" | "select_one" | "datetime" => Some(json!(text)),
        _ => None,
    }
}

/// An expression may read only the form's questions (and a calculation only those and the
/// calculations before it): one that reads anything else loses that rule, named in the report.
fn keep_what_reads_known_names(
    fields: &mut [Value],
    derived: &mut Vec<Value>,
    not_converted: &mut Vec<Named>,
) {
    use std::collections::BTreeSet;
    let questions: BTreeSet<String> = fields
        .iter()
        .filter_map(|f| f["name"].as_str().map(str::to_owned))
        .collect();
    let calculations: BTreeSet<String> = derived
        .iter()
        .filter_map(|d| d["name"].as_str().map(str::to_owned))
        .collect();
    // A repeat group's questions and calculations: read in their own item, or across the
    // items from outside.
    let inner: BTreeSet<String> = fields
        .iter()
        .filter(|f| f["type"] == "repeat")
        .flat_map(|f| {
            let subs = f["fields"].as_array().into_iter().flatten();
            let calcs = f["derived"].as_array().into_iter().flatten();
            subs.chain(calcs)
                .filter_map(|x| x["name"].as_str().map(str::to_owned))
                .collect::<Vec<_>>()
        })
        .collect();
    let known = |v: &String| questions.contains(v) || calculations.contains(v) || inner.contains(v);
    let check = |f: &mut Value, not_converted: &mut Vec<Named>| {
        let name = f["name"].as_str().unwrap_or_default().to_owned();
        for key in [
            "relevant",
            "required_if",
            "constraint",
            "choice_filter",
            "default_expr",
            "repeat_count",
            "calculate",
        ] {
            let Some(rule) = f.get(key) else { continue };
            let unknown = sync_protocol::expr::vars(rule).into_iter().find(|v| {
                // A choice filter reads the choice's own columns as `@column`.
                let column = key == "choice_filter" && v.starts_with('@');
                !(known(v) || column)
            });
            if let Some(v) = unknown {
                not_converted.push(named(
                    format!("question {name}: {key} reads ${{{v}}}, which is not a question of this form"),
                    format!("câu hỏi {name}: {key} đọc ${{{v}}}, không phải câu hỏi của biểu mẫu này"),
                ));
                f.as_object_mut().expect("a field").remove(key);
            }
        }
    };
    for f in fields.iter_mut() {
        check(f, not_converted);
        if let Some(subs) = f.get_mut("fields").and_then(Value::as_array_mut) {
            for sub in subs.iter_mut() {
                check(sub, not_converted);
            }
        }
        // An item's calculation reading what the form does not have is left out.
        if let Some(calcs) = f.get_mut("derived").and_then(Value::as_array_mut) {
            calcs.retain(|d| {
                let name = d["name"].as_str().unwrap_or_default();
                let reads = sync_protocol::expr::vars(&d["expr"])
                    .into_iter()
                    .chain(d.get("relevant").map(sync_protocol::expr::vars).unwrap_or_default());
                match reads.into_iter().find(|v| !known(v)) {
                    Some(v) => {
                        not_converted.push(named(
                            format!("calculation {name}: reads ${{{v}}}, which is not a question of this form"),
                            format!("phép tính {name}: đọc ${{{v}}}, không phải câu hỏi của biểu mẫu này"),
                        ));
                        false
                    }
                    None => true,
                }
            });
        }
    }
    for d in derived.iter_mut() {
        let name = d["name"].as_str().unwrap_or_default().to_owned();
        let unknown = d.get("relevant").and_then(|rule| {
            sync_protocol::expr::vars(rule)
                .into_iter()
                .find(|v| !known(v))
        });
        if let Some(v) = unknown {
            not_converted.push(named(
                format!("calculation {name}: relevant reads ${{{v}}}, which is not a question of this form"),
                format!("phép tính {name}: điều kiện đọc ${{{v}}}, không phải câu hỏi của biểu mẫu này"),
            ));
            d.as_object_mut().expect("a calculation").remove("relevant");
        }
    }
    let mut earlier: BTreeSet<String> = questions.union(&inner).cloned().collect();
    derived.retain(|d| {
        let name = d["name"].as_str().unwrap_or_default().to_owned();
        let unknown = sync_protocol::expr::vars(&d["expr"])
            .into_iter()
            .find(|v| !earlier.contains(v));
        match unknown {
            Some(v) => {
                not_converted.push(named(
                    format!("calculation {name}: reads ${{{v}}}, which is not a question or an earlier calculation"),
                    format!("phép tính {name}: đọc ${{{v}}}, không phải câu hỏi hay phép tính đứng trước"),
                ));
                false
            }
            None => {
                earlier.insert(name);
                true
            }
        }
    });
}

/// Conditions that must all hold, as one rule (`None` for none).
fn all_of(mut rules: Vec<Value>) -> Option<Value> {
    match rules.len() {
        0 => None,
        1 => rules.pop(),
        _ => Some(json!({ "and": rules })),
    }
}

/// Where converted questions go: the form, or a repeat group being read.
#[derive(Default)]
struct Scope {
    name: String,
    fields: Vec<Value>,
    label: Option<Value>,
    derived: Vec<Value>,
    relevant: Option<Value>,
    repeat_count: Option<Value>,
}

/// Adds a converted field to its scope: the relevance of the groups that hold it joined to its
/// own, and, at the form's top level, to the section it is in (its group's, or the one for the
/// questions between groups).
fn place(
    mut field: Value,
    groups: &[Option<Value>],
    top: bool,
    in_group_section: bool,
    sections: &mut Vec<(Value, Vec<String>, bool)>,
    scope: &mut Vec<Value>,
) {
    let mut all: Vec<Value> = groups.iter().flatten().cloned().collect();
    if let Some(own) = field.get("relevant").cloned() {
        all.push(own);
    }
    if let Some(rule) = all_of(all) {
        field["relevant"] = rule;
    }
    // What the phone never shows (metadata, hidden questions) is in no section.
    let shown = field.get("auto").is_none() && field["appearance"] != json!("hidden");
    if top && shown {
        let name = field["name"].as_str().unwrap_or_default().to_owned();
        match sections.last_mut() {
            Some((_, names, group)) if *group == in_group_section => names.push(name),
            _ => sections.push((
                json!({ "vi": "Câu hỏi chung", "en": "General questions" }),
                vec![name],
                false,
            )),
        }
    }
    scope.push(field);
}

/// A type cell in its words, as XLSForm spells them in every version: `select_one list`,
/// `select one from list`, `select all that apply from list`, `select_multiple list or_other`,
/// `begin group`… Returns the type, its list (for selects) and whether `or_other` follows.
fn type_words(kind: &str) -> (String, Option<String>, bool) {
    let lower = kind.trim().to_ascii_lowercase();
    let mut words: Vec<&str> = lower.split_whitespace().collect();
    let mut or_other = false;
    if words.last() == Some(&"or_other") {
        words.pop();
        or_other = true;
    } else if words.ends_with(&["or", "specify", "other"]) {
        words.truncate(words.len() - 3);
        or_other = true;
    }
    let (head, rest): (&str, &[&str]) = match words.as_slice() {
        // Metadata in the older spellings.
        ["get", "start", "time"] => ("start", &[]),
        ["get", "end", "time"] => ("end", &[]),
        ["get", "today"] => ("today", &[]),
        ["get", "device", "id"] | ["uri:deviceid"] | ["imei"] => ("deviceid", &[]),
        ["get", "phone", "number"] | ["phone", "number"] => ("phonenumber", &[]),
        ["get", "sim", "id"] => ("simserial", &[]),
        ["get", "subscriber", "id"] => ("subscriberid", &[]),
        ["gps"] => ("geopoint", &[]),
        ["select", "one", "from", rest @ ..] | ["select", "one", rest @ ..] => ("select_one", rest),
        ["select", "all", "that", "apply", "from", rest @ ..]
        | ["select", "all", "that", "apply", rest @ ..]
        | ["select", "multiple", rest @ ..] => ("select_multiple", rest),
        ["select_one", rest @ ..] => ("select_one", rest),
        ["select_multiple", rest @ ..] => ("select_multiple", rest),
        [head, rest @ ..] => (*head, rest),
        [] => ("", &[]),
    };
    // A list or a file name keeps its case (find it in the original cell); the words of
    // `begin Group` are XLSForm's own, in any case.
    let arg = rest.first().map(|w| match head {
        "begin" | "end" => (*w).to_owned(),
        _ => kind
            .split_whitespace()
            .find(|orig| orig.eq_ignore_ascii_case(w))
            .unwrap_or(w)
            .to_owned(),
    });
    let head = match head {
        "datetime" | "date_time" => "datetime",
        "begin_group" | "begin_repeat" | "end_group" | "end_repeat" => head,
        h => h,
    };
    (head.to_owned(), arg, or_other)
}

/// `. >= 0 and . <= 120`, `. <= today()`, `regex(., '[0-9]{5}')` into min, max, not_future and
/// pattern. Returns the first part it cannot convert.
fn constraint_rules<'a>(constraint: &'a str, ty: &str, field: &mut Value) -> Result<(), &'a str> {
    for part in constraint.split(" and ") {
        let p = part.trim();
        let compact: String = p.chars().filter(|c| !c.is_whitespace()).collect();
        if compact == ".<=today()" && ty == "date" {
            field["not_future"] = json!(true);
            continue;
        }
        if compact.starts_with("regex(.,") && compact.ends_with(')') {
            // The pattern as written, spaces and all, between its quotes.
            let inner = p[p.find(',').map_or(0, |i| i + 1)..p.len() - 1].trim();
            let pattern = inner.trim_matches(|c| c == '\'' || c == '"');
            field["pattern"] = json!(pattern);
            continue;
        }
        let bound = |rest: &str| -> Option<Value> {
            let rest = rest.trim_matches(|c| c == '\'' || c == '"');
            if ty == "date" {
                sync_protocol::form::parse_date(rest).map(|_| json!(rest))
            } else {
                rest.parse::<f64>().ok().map(|x| {
                    if x.fract() == 0.0 {
                        json!(x as i64)
                    } else {
                        json!(x)
                    }
                })
            }
        };
        let converted = if let Some(rest) = compact.strip_prefix(".>=") {
            bound(rest).map(|v| field["min"] = v)
        } else if let Some(rest) = compact.strip_prefix(".<=") {
            bound(rest).map(|v| field["max"] = v)
        } else {
            None
        };
        if converted.is_none() {
            return Err(p);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constraints_keep_their_patterns_as_written() {
        let mut field = json!({});
        constraint_rules("regex(., '^[A-Z ]+$') and . != 'X'", "text", &mut field).unwrap_err();
        let mut field = json!({});
        constraint_rules("regex(., '^[A-Z ]+$')", "text", &mut field).unwrap();
        assert_eq!(field["pattern"], "^[A-Z ]+$");
    }

    #[test]
    fn type_words_read_every_spelling() {
        let words = |k: &str| type_words(k);
        assert_eq!(
            words("Begin Group"),
            ("begin".into(), Some("group".into()), false)
        );
        assert_eq!(
            words("select one from Sexes or specify other"),
            ("select_one".into(), Some("Sexes".into()), true)
        );
        assert_eq!(words("get start time"), ("start".into(), None, false));
    }
}
