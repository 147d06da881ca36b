//! What the office pages share: the page frame, names of places and forms, values as people
//! read them, and the officer's communes.

use axum::http::Uri;
use axum::response::{Html, IntoResponse, Response};
use serde_json::Value;
use sync_protocol::{FieldType, Form as SurveyForm, FormField, FormId, Record, RecordId};

use super::{encode_query, Lang, Officer};
use crate::report::Scope;
use crate::state::AppState;

/// Records on one page of a list.
pub(super) const PAGE: usize = 50;
/// Conflicts on one page of the queue.
pub(super) const CONFLICT_PAGE: usize = 20;

/// What every page's frame shows.
pub struct Ctx {
    pub lang: Lang,
    pub user: String,
    pub area_name: String,
    pub csrf: String,
    pub nav: Vec<Nav>,
    pub lang_href: String,
    pub title: String,
}

pub struct Nav {
    pub href: &'static str,
    pub label: &'static str,
    pub current: bool,
}

impl Ctx {
    pub fn t(&self, key: &str) -> &'static str {
        self.lang.t(key)
    }
}

pub(super) const MENU: &[(&str, &str)] = &[
    ("/office", "dashboard"),
    ("/office/records", "records"),
    ("/office/conflicts", "conflicts"),
    ("/office/phones", "phones"),
    ("/office/forms", "forms"),
    ("/office/rejected", "rejected"),
];

pub(super) fn ctx(
    state: &AppState,
    officer: &Officer,
    current: &str,
    uri: &Uri,
    title: String,
) -> Ctx {
    let lang = officer.lang;
    let back = uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/office");
    Ctx {
        lang,
        user: officer.user.name.clone(),
        area_name: scope_name(state, &officer.scope, lang),
        csrf: officer.csrf.clone(),
        nav: MENU
            .iter()
            .map(|(href, key)| Nav {
                href,
                label: lang.t(key),
                current: *key == current,
            })
            .collect(),
        lang_href: format!(
            "/lang?to={}&back={}",
            lang.other().code(),
            encode_query(back)
        ),
        title,
    }
}

pub(super) fn scope_name(state: &AppState, scope: &Scope, _lang: Lang) -> String {
    let key = current_geography(state);
    match scope {
        Scope::Province => state.units.province_name(&key),
        Scope::District(code) => {
            // The district as the maps named it, newest first ("Thành phố Huế", then
            // "Quận Thuận Hóa" …): a district gone from today's map keeps its last names.
            let mut names: Vec<String> = Vec::new();
            for c in state
                .units
                .versions()
                .iter()
                .rev()
                .flat_map(|v| v.communes.values())
            {
                if c.district_code.as_deref() == Some(code) {
                    if let Some(n) = c.district_full_name() {
                        if !names.contains(&n) {
                            names.push(n);
                        }
                    }
                }
            }
            format!("{} ({code})", names.join(" / "))
        }
        Scope::Communes(list) => list
            .iter()
            .map(|c| state.units.commune_full_in(c, &key).1)
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// A record's commune by the name it had on the day the record was collected (the map changed
/// in 2021 and twice in 2025), or today's name when the record has no date.
pub(super) fn record_commune(state: &AppState, record: &Record) -> String {
    let form = state.forms();
    let date = collected_on(record, form.latest(&record.form));
    match state.units.version_on(&date) {
        Some(v) if !date.is_empty() => {
            state
                .units
                .commune_in(record.commune.as_str(), &crate::units::Units::key(v))
                .1
        }
        _ => commune_name(state, record.commune.as_str()),
    }
}

pub(super) fn commune_name(state: &AppState, code: &str) -> String {
    let key = current_geography(state);
    state.units.commune_in(code, &key).1
}

pub(super) fn current_geography(state: &AppState) -> String {
    state
        .units
        .version_on(&crate::today())
        .or_else(|| state.units.versions().last())
        .map(crate::units::Units::key)
        .unwrap_or_default()
}

pub(super) fn page(html: String) -> Response {
    Html(html).into_response()
}

/// Query values from a form: an empty box means "no filter".
pub(super) fn given(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

pub struct Choice {
    pub value: String,
    pub label: String,
    pub selected: bool,
}

pub(super) fn short_id(id: &RecordId) -> String {
    id.to_string()[..8].to_owned()
}

/// A line that tells a person which record this is: its first text fields.
pub(super) fn summary(record: &Record, form: Option<&SurveyForm>, lang: Lang) -> String {
    let Some(form) = form else {
        return String::new();
    };
    form.fields
        .iter()
        .filter(|f| {
            matches!(
                f.kind,
                FieldType::Text | FieldType::Date | FieldType::SelectOne
            )
        })
        .filter_map(|f| {
            record
                .value(&f.name)
                .filter(|v| !v.is_null())
                .map(|v| show(v, Some(f), lang))
        })
        .take(2)
        .collect::<Vec<_>>()
        .join(" · ")
}

/// A period as people say it: "6 tháng đầu năm 2026" ("First half of 2026").
pub(super) fn period_label(period: &str, lang: Lang) -> String {
    crate::report::period_label(period, lang == Lang::En)
}

/// A version of the map by the day it took effect: "Địa giới từ 01/07/2025".
pub(super) fn geography_label(valid_from: &str, lang: Lang) -> String {
    match lang {
        Lang::Vi => format!("Địa giới từ {}", day_label(valid_from)),
        Lang::En => format!("Boundaries from {}", day_label(valid_from)),
    }
}

pub(super) use crate::report::day_label;

/// A value as a person reads it: choice labels, yes/no, dates as dd/mm/yyyy, decimals as the
/// language writes them.
pub(super) fn show(value: &Value, field: Option<&FormField>, lang: Lang) -> String {
    let label = |code: &str| {
        field
            .and_then(|f| f.choices.iter().find(|c| c.code == code))
            .and_then(|c| c.label.as_ref())
            .map(|l| lang.pick(&l.vi, &l.en).to_owned())
            .unwrap_or_else(|| code.to_owned())
    };
    match value {
        Value::Null => lang.t("empty").to_owned(),
        Value::Bool(true) => lang.t("yes").to_owned(),
        Value::Bool(false) => lang.t("no").to_owned(),
        Value::String(s) if field.is_some_and(|f| f.kind == FieldType::Date) => day_label(s),
        Value::String(s) => label(s),
        // A decimal comma in Vietnamese; whole numbers (years, counts) as they are.
        Value::Number(n) if lang == Lang::Vi => n.to_string().replace('.', ","),
        Value::Number(n) => n.to_string(),
        Value::Array(items) if items.iter().all(Value::is_string) => items
            .iter()
            .filter_map(Value::as_str)
            .map(label)
            .collect::<Vec<_>>()
            .join(", "),
        // A photo or a file by its name and size; a place with its accuracy; a line or an
        // area by its points.
        Value::Object(_) if field.is_some_and(|f| f.kind.is_media()) => {
            match sync_protocol::media::Attachment::of(value) {
                Some(a) => format!(
                    "{} ({} KB)",
                    a.name.unwrap_or(a.media_type),
                    a.size.div_ceil(1024)
                ),
                None => value.to_string(),
            }
        }
        Value::Object(o) if o.contains_key("lat") && o.contains_key("lon") => {
            let n = |k: &str| o.get(k).map(|v| show(v, None, lang)).unwrap_or_default();
            match o.get("acc").and_then(Value::as_f64) {
                Some(acc) => format!("{}; {} (±{} m)", n("lat"), n("lon"), acc.round()),
                None => format!("{}; {}", n("lat"), n("lon")),
            }
        }
        Value::Array(points)
            if field
                .is_some_and(|f| matches!(f.kind, FieldType::Geotrace | FieldType::Geoshape)) =>
        {
            format!("{} {}", points.len(), lang.t("points"))
        }
        other => other.to_string(),
    }
}

/// The communes of the officer's scope on today's map, (code, name), for pickers.
pub(super) fn scope_communes(state: &AppState, scope: &Scope) -> Vec<(String, String)> {
    let key = current_geography(state);
    let mut list: Vec<(String, String)> = state
        .units
        .geography(&key)
        .map(|g| {
            g.communes
                .values()
                .filter(|c| scope.allows(&c.code, &state.units))
                .map(|c| (c.code.clone(), c.name.clone()))
                .collect()
        })
        .unwrap_or_default();
    list.sort_by(|a, b| a.1.cmp(&b.1));
    list
}

pub(super) fn form_title(state: &AppState, form: &FormId, lang: Lang) -> String {
    state
        .forms()
        .latest(form)
        .and_then(|f| f.title.as_ref())
        .map(|t| lang.pick(&t.vi, &t.en).to_owned())
        .unwrap_or_else(|| form.to_string())
}

pub(super) fn collected_on(record: &Record, form: Option<&SurveyForm>) -> String {
    form.and_then(|f| f.collected_on.as_deref())
        .and_then(|field| record.value(field))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned()
}

pub(super) use crate::forms::record_name;

pub(super) use crate::forms::folded;

/// The date a list shows for a record, with what it is: "01/03/2020 (Ngày sinh)".
pub(super) fn dated(record: &Record, form: Option<&SurveyForm>, lang: Lang) -> String {
    let date = collected_on(record, form);
    if date.is_empty() {
        return date;
    }
    let what = form
        .and_then(|f| f.collected_on.as_deref())
        .and_then(|name| form.and_then(|f| f.field(name)))
        .map(|f| lang.pick(f.label_vi(), f.label_en()).to_owned());
    match what {
        Some(w) => format!("{} ({w})", day_label(&date)),
        None => day_label(&date),
    }
}

pub(super) fn badges(r: &Record, lang: Lang) -> Vec<(&'static str, &'static str)> {
    let mut out = Vec::new();
    if r.is_conflicted() {
        out.push(("conflict", lang.t("status_conflict")));
    }
    if r.is_deleted() {
        out.push(("deleted", lang.t("status_deleted")));
    }
    out
}
