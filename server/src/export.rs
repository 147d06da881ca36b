//! A form's records as a table an office can open: CSV (with a byte order mark, so that Excel
//! on Windows reads Vietnamese) and XLSX (a sheet for the records, one for each repeat group).
//! Every field gives its code (what was stored) and, for choices and yes/no, its label beside.
//! No HTTP here: the office pages ask for it over the records their officer may read.

use serde_json::Value;
use sync_protocol::form::{FieldType, Form, FormField};
use sync_protocol::{Labels, Record};

use crate::units::Units;

/// One column of the table.
struct Column<'a> {
    header: String,
    cell: Box<dyn Fn(&Record) -> String + Send + Sync + 'a>,
}

fn pick(labels: Option<&Labels>, english: bool, fallback: &str) -> String {
    labels
        .map(|l| if english { l.en.clone() } else { l.vi.clone() })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| fallback.to_owned())
}

/// A stored value as text: codes as stored, numbers as numbers, a list joined by spaces (as
/// XLSForm writes a multiple choice).
fn code_text(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => items
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" "),
        Some(other) => other.to_string(),
    }
}

/// A value as a person reads it: the choice's label, yes/no in words.
fn label_text(field: &FormField, value: Option<&Value>, english: bool) -> String {
    let choice = |code: &str| {
        field
            .choices
            .iter()
            .find(|c| c.code == code)
            .map(|c| pick(c.label.as_ref(), english, code))
            .unwrap_or_else(|| code.to_owned())
    };
    match value {
        Some(Value::Bool(b)) => match (b, english) {
            (true, false) => "Có",
            (false, false) => "Không",
            (true, true) => "Yes",
            (false, true) => "No",
        }
        .to_owned(),
        Some(Value::String(s)) => choice(s),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(choice)
            .collect::<Vec<_>>()
            .join(", "),
        _ => String::new(),
    }
}

fn has_label(field: &FormField) -> bool {
    matches!(
        field.kind,
        FieldType::SelectOne | FieldType::SelectMany | FieldType::Rank | FieldType::Boolean
    )
}

/// The columns of a form's main table: the record, its commune and state, then every field
/// (its code, and its label where it has one), then the derived fields.
fn columns<'a>(
    form: &'a Form,
    units: &'a Units,
    geography: &'a str,
    english: bool,
) -> Vec<Column<'a>> {
    let t = |vi: &str, en: &str| {
        if english {
            en.to_owned()
        } else {
            vi.to_owned()
        }
    };
    let mut out: Vec<Column> = vec![
        Column {
            header: t("Mã hồ sơ", "Record"),
            cell: Box::new(|r: &Record| r.id.to_string()),
        },
        Column {
            header: t("Mã xã", "Commune code"),
            cell: Box::new(|r: &Record| r.commune.to_string()),
        },
        Column {
            header: t("Xã, phường", "Commune"),
            cell: Box::new(move |r: &Record| {
                units.commune_full_in(r.commune.as_str(), geography).1
            }),
        },
        Column {
            header: t("Trạng thái", "State"),
            cell: Box::new(move |r: &Record| {
                let conflicted: Vec<&str> = r.conflicted_fields().collect();
                match (r.is_deleted(), conflicted.is_empty(), english) {
                    (true, _, false) => "đã xoá".to_owned(),
                    (true, _, true) => "deleted".to_owned(),
                    (false, false, false) => format!("xung đột: {}", conflicted.join(", ")),
                    (false, false, true) => format!("in conflict: {}", conflicted.join(", ")),
                    (false, true, _) => String::new(),
                }
            }),
        },
    ];
    for field in &form.fields {
        let label = pick(field.label.as_ref(), english, &field.name);
        let name = field.name.as_str();
        if field.kind == FieldType::Repeat {
            out.push(Column {
                header: format!("{label} [{name}] ({})", t("số mục", "items")),
                cell: Box::new(move |r: &Record| match r.value(name) {
                    Some(Value::Array(items)) => items.len().to_string(),
                    _ => String::new(),
                }),
            });
            continue;
        }
        out.push(Column {
            header: format!("{label} [{name}]"),
            cell: Box::new(move |r: &Record| code_text(r.value(name))),
        });
        if has_label(field) {
            out.push(Column {
                header: format!("{label} ({})", t("nhãn", "label")),
                cell: Box::new(move |r: &Record| label_text(field, r.value(name), english)),
            });
        }
    }
    for derived in &form.derived {
        let label = pick(derived.label.as_ref(), english, &derived.name);
        let name = derived.name.as_str();
        out.push(Column {
            header: format!("{label} [{name}]"),
            cell: Box::new(move |r: &Record| code_text(r.derived.get(name))),
        });
    }
    out
}

/// The records as CSV, a line at a time: a byte order mark and one header line, then one
/// line per record.
pub struct CsvLines<'a> {
    columns: Vec<Column<'a>>,
}

impl<'a> CsvLines<'a> {
    pub fn new(form: &'a Form, units: &'a Units, geography: &'a str, english: bool) -> Self {
        Self {
            columns: columns(form, units, geography, english),
        }
    }

    /// The byte order mark (Excel on Windows reads the file as UTF-8 only with it) and the
    /// header line.
    pub fn header(&self) -> String {
        let mut out = String::from("\u{feff}");
        push_line(&mut out, self.columns.iter().map(|c| c.header.clone()));
        out
    }

    /// A record's line, onto `out`.
    pub fn push(&self, out: &mut String, record: &Record) {
        push_line(out, self.columns.iter().map(|c| (c.cell)(record)));
    }
}

fn push_line(out: &mut String, cells: impl Iterator<Item = String>) {
    for (i, cell) in cells.enumerate() {
        if i > 0 {
            out.push(',');
        }
        if cell.contains([',', '"', '\n', '\r']) {
            out.push('"');
            out.push_str(&cell.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(&cell);
        }
    }
    out.push_str("\r\n");
}

/// The records as a workbook: the records on the first sheet, and a sheet for each repeat
/// group with a line per item (the record it belongs to, its number, its fields).
pub fn records_xlsx(
    form: &Form,
    records: &[Record],
    units: &Units,
    geography: &str,
    english: bool,
) -> Result<Vec<u8>, String> {
    use rust_xlsxwriter::{Format, Workbook};
    let err = |e: rust_xlsxwriter::XlsxError| e.to_string();
    let header = Format::new().set_bold().set_text_wrap();
    let mut book = Workbook::new();
    let main = book.add_worksheet();
    main.set_name(if english { "Records" } else { "Hồ sơ" })
        .map_err(err)?;
    let columns = columns(form, units, geography, english);
    for (c, column) in columns.iter().enumerate() {
        main.write_string_with_format(0, c as u16, &column.header, &header)
            .map_err(err)?;
        main.set_column_width(c as u16, 18).map_err(err)?;
    }
    for (r, record) in records.iter().enumerate() {
        for (c, column) in columns.iter().enumerate() {
            main.write_string(r as u32 + 1, c as u16, (column.cell)(record))
                .map_err(err)?;
        }
    }
    main.set_freeze_panes(1, 1).map_err(err)?;
    for group in form.fields.iter().filter(|f| f.kind == FieldType::Repeat) {
        let sheet = book.add_worksheet();
        // Sheet names hold at most 31 characters.
        let name: String = group.name.chars().take(31).collect();
        sheet.set_name(&name).map_err(err)?;
        let mut heads = vec![
            if english { "Record" } else { "Mã hồ sơ" }.to_owned(),
            if english { "Item" } else { "STT" }.to_owned(),
        ];
        for f in &group.fields {
            let label = pick(f.label.as_ref(), english, &f.name);
            heads.push(format!("{label} [{}]", f.name));
            if has_label(f) {
                heads.push(format!(
                    "{label} ({})",
                    if english { "label" } else { "nhãn" }
                ));
            }
        }
        for (c, head) in heads.iter().enumerate() {
            sheet
                .write_string_with_format(0, c as u16, head, &header)
                .map_err(err)?;
        }
        let mut row = 1u32;
        for record in records {
            let Some(Value::Array(items)) = record.value(&group.name) else {
                continue;
            };
            for (i, item) in items.iter().enumerate() {
                let mut cells = vec![record.id.to_string(), (i + 1).to_string()];
                for f in &group.fields {
                    let value = item.get(&f.name);
                    cells.push(code_text(value));
                    if has_label(f) {
                        cells.push(label_text(f, value, english));
                    }
                }
                for (c, cell) in cells.iter().enumerate() {
                    sheet.write_string(row, c as u16, cell).map_err(err)?;
                }
                row += 1;
            }
        }
        sheet.set_freeze_panes(1, 2).map_err(err)?;
    }
    book.save_to_buffer().map_err(err)
}
