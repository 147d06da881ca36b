//! XLSForm import: the spreadsheet format survey designers already use, converted into a Mầm
//! form.
//!
//! The common subset converts: the `survey`, `choices` and `settings` sheets; the types text,
//! integer, decimal, date, select_one, select_multiple and geopoint; `begin group`/`end group`
//! (flattened: groups only arrange the screen) and `begin repeat`/`end repeat` (a repeat
//! field); `required`; simple constraints (`. >= n`, `. <= n`, `. <= today()`,
//! `regex(., '…')`, joined by `and`); simple relevance (`${a} = 'x'`, `!=`, `<`, `>`, `<=`,
//! `>=`, `selected(${a}, 'x')`, joined by `and` or `or`); labels and hints per language
//! (`label::Tiếng Việt (vi)`, `label::English (en)`, or a plain `label`). Everything else is
//! named in the report, row by row, never silently dropped.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use calamine::{open_workbook_auto, Data, Reader};
use serde_json::{json, Value};
use sync_protocol::{Form, FormId};

/// A converted form and what could not be converted.
#[derive(Debug)]
pub struct Import {
    pub form: Form,
    pub not_converted: Vec<String>,
}

struct Sheet {
    header: Vec<String>,
    rows: Vec<(usize, Vec<String>)>,
}

impl Sheet {
    fn column(&self, names: &[&str]) -> Option<usize> {
        self.header
            .iter()
            .position(|h| names.iter().any(|n| h.eq_ignore_ascii_case(n)))
    }

    fn cell<'a>(&self, row: &'a [String], names: &[&str]) -> &'a str {
        self.column(names)
            .and_then(|i| row.get(i))
            .map(|s| s.trim())
            .unwrap_or("")
    }

    /// `{vi, en}` from `label::…(vi)` / `label::…(en)` columns, or a plain `label` for both.
    fn labels(&self, row: &[String], key: &str) -> Option<Value> {
        let mut vi = None;
        let mut en = None;
        let mut plain = None;
        for (i, h) in self.header.iter().enumerate() {
            let h = h.to_ascii_lowercase();
            let text = row.get(i).map(|s| s.trim()).filter(|s| !s.is_empty());
            let Some(text) = text else { continue };
            if h == key {
                plain = Some(text);
            } else if let Some(lang) = h.strip_prefix(&format!("{key}::")) {
                if lang.contains("(vi)")
                    || lang.starts_with("vi")
                    || lang.contains("việt")
                    || lang.contains("vietnam")
                {
                    vi = Some(text);
                } else if lang.contains("(en)") || lang.starts_with("en") {
                    en = Some(text);
                }
            }
        }
        let vi = vi.or(plain).or(en)?;
        let en = en.or(plain).unwrap_or(vi);
        use unicode_normalization::UnicodeNormalization;
        Some(json!({ "vi": vi.nfc().collect::<String>(), "en": en }))
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
        other => other.to_string(),
    }
}

/// Convert `path`. The form's id and version come from the settings sheet (`form_id`,
/// `version`), or from the file name and 1.
pub fn convert(path: &Path) -> anyhow::Result<Import> {
    let mut workbook =
        open_workbook_auto(path).with_context(|| format!("cannot open {}", path.display()))?;
    let survey =
        read_sheet(&mut workbook, "survey")?.context("the workbook has no survey sheet")?;
    let choices = read_sheet(&mut workbook, "choices")?;
    let settings = read_sheet(&mut workbook, "settings")?;
    let mut not_converted = Vec::new();

    let mut lists: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    if let Some(sheet) = &choices {
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
            lists.entry(list.to_owned()).or_default().push(choice);
        }
    }

    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("form")
        .to_ascii_lowercase()
        .replace(['_', ' '], "-");
    let (mut id, mut version, mut title) = (stem, 1u32, None);
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
                    _ => not_converted.push(format!(
                        "settings: version {v:?} is not a whole number from 1; using 1"
                    )),
                }
            }
            title = sheet.labels(row, "form_title");
        }
    }

    // Fields are collected into a stack of scopes: the form, then each open repeat.
    let mut scopes: Vec<(String, Vec<Value>, Option<Value>)> =
        vec![(String::new(), Vec::new(), None)];
    for (n, row) in &survey.rows {
        let kind = survey.cell(row, &["type"]);
        let name = survey.cell(row, &["name"]);
        let here = |what: String| format!("survey row {n} ({name}): {what}");
        let mut words = kind.split_whitespace();
        let head = words.next().unwrap_or("");
        let arg = words.next();
        let mut field = json!({ "name": name });
        let ty = match (head, arg) {
            ("begin", Some("group"))
            | ("begin_group", None)
            | ("end", Some("group"))
            | ("end_group", None) => continue,
            ("begin", Some("repeat")) | ("begin_repeat", None) => {
                scopes.push((name.to_owned(), Vec::new(), survey.labels(row, "label")));
                continue;
            }
            ("end", Some("repeat")) | ("end_repeat", None) => {
                if scopes.len() == 1 {
                    not_converted.push(here("end repeat without begin repeat".into()));
                    continue;
                }
                let (group, fields, label) = scopes.pop().expect("checked above");
                let mut repeat = json!({ "name": group, "type": "repeat", "fields": fields });
                if let Some(label) = label {
                    repeat["label"] = label;
                }
                scopes.last_mut().expect("the form scope").1.push(repeat);
                continue;
            }
            ("text" | "string", None) => "text",
            ("integer" | "int", None) => "integer",
            ("decimal", None) => "decimal",
            ("date", None) => "date",
            ("geopoint", None) => "geopoint",
            ("select_one" | "select_multiple", Some(list)) => {
                match lists.get(list) {
                    Some(choices) => field["choices"] = Value::Array(choices.clone()),
                    None => {
                        not_converted.push(here(format!(
                            "choice list {list:?} is not on the choices sheet"
                        )));
                        continue;
                    }
                }
                if head == "select_one" {
                    "select_one"
                } else {
                    "select_many"
                }
            }
            ("", None) => continue,
            _ => {
                not_converted.push(here(format!("type {kind:?} is not supported")));
                continue;
            }
        };
        if name.is_empty() {
            not_converted.push(format!("survey row {n}: a {kind} question without a name"));
            continue;
        }
        field["type"] = json!(ty);
        if let Some(label) = survey.labels(row, "label") {
            field["label"] = label;
        }
        if let Some(hint) = survey.labels(row, "hint") {
            field["hint"] = hint;
        }
        let required = survey.cell(row, &["required"]).to_ascii_lowercase();
        if matches!(required.as_str(), "yes" | "true" | "true()" | "1") {
            field["required"] = json!(true);
        } else if !matches!(required.as_str(), "" | "no" | "false" | "false()" | "0") {
            not_converted.push(here(format!("required {required:?} (only yes/no)")));
        }
        let constraint = survey.cell(row, &["constraint"]);
        if !constraint.is_empty() {
            if let Err(part) = constraint_rules(constraint, ty, &mut field) {
                not_converted.push(here(format!("constraint {part:?}")));
            }
        }
        let relevant = survey.cell(row, &["relevant"]);
        if !relevant.is_empty() {
            match condition(relevant) {
                Some(expr) => field["relevant"] = expr,
                None => not_converted.push(here(format!("relevant {relevant:?}"))),
            }
        }
        for column in [
            "calculation",
            "default",
            "choice_filter",
            "repeat_count",
            "read_only",
            "trigger",
        ] {
            let value = survey.cell(row, &[column]);
            if !value.is_empty() {
                not_converted.push(here(format!("{column} {value:?}")));
            }
        }
        scopes.last_mut().expect("the form scope").1.push(field);
    }
    if scopes.len() > 1 {
        not_converted.push(format!(
            "repeat {:?} is never closed",
            scopes.last().map(|s| &s.0)
        ));
    }
    let fields = scopes.swap_remove(0).1;
    let mut form = json!({ "id": id, "version": version, "fields": fields });
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
        if let Some(inner) = compact
            .strip_prefix("regex(.,")
            .and_then(|r| r.strip_suffix(')'))
        {
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

/// Simple relevance into an expression: comparisons of `${field}` with a literal, and
/// `selected(${field}, 'code')`, joined by `and` or `or` (not both).
fn condition(text: &str) -> Option<Value> {
    let (joiner, parts): (&str, Vec<&str>) = if text.contains(" or ") && !text.contains(" and ") {
        ("or", text.split(" or ").collect())
    } else {
        ("and", text.split(" and ").collect())
    };
    let mut terms = Vec::new();
    for part in parts {
        terms.push(comparison(part.trim())?);
    }
    Some(if terms.len() == 1 {
        terms.remove(0)
    } else {
        json!({ joiner: terms })
    })
}

fn comparison(text: &str) -> Option<Value> {
    let var = |s: &str| -> Option<Value> {
        let name = s.trim().strip_prefix("${")?.strip_suffix('}')?;
        Some(json!({ "var": name }))
    };
    let literal = |s: &str| -> Option<Value> {
        let s = s.trim();
        if let Some(q) = s.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
            return Some(json!(q));
        }
        match s {
            "true()" | "'yes'" => Some(json!(true)),
            "false()" => Some(json!(false)),
            _ => s.parse::<f64>().ok().map(|x| {
                if x.fract() == 0.0 {
                    json!(x as i64)
                } else {
                    json!(x)
                }
            }),
        }
    };
    if let Some(args) = text
        .strip_prefix("selected(")
        .and_then(|r| r.strip_suffix(')'))
    {
        let (field, code) = args.split_once(',')?;
        return Some(json!({ "in": [literal(code)?, var(field)?] }));
    }
    for op in ["!=", ">=", "<=", "=", ">", "<"] {
        if let Some((left, right)) = text.split_once(op) {
            let op = if op == "=" { "==" } else { op };
            return Some(json!({ op: [var(left)?, literal(right)?] }));
        }
    }
    None
}
