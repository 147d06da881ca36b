//! A Mầm form as an XForm, the form ODK Collect and ODK's web forms fill.
//!
//! The XForm is made from the form's definition alone (and the communes of the phone that
//! asks), in a fixed order: the same published version gives the same bytes, so the `md5:`
//! hash the form list announces never changes under a phone.
//!
//! Each question becomes an instance element under `/data`, a `bind` with its type and
//! rules, and a body control labelled in Vietnamese (the default) and English. Rules are
//! written in XPath where they can be: `required`, `required_if`, `relevant`, `constraint`,
//! `min`, `max`, `pattern`, `not_future` and `not_before` (one constraint, with the form's
//! message). A rule that XPath cannot say (a WHO z-score, say) is left to the server, which
//! checks every submission against the whole form and answers with the rule's words.
//!
//! A yes/no question is a choice of `true` or `false`; a reference to a record of another
//! form is a choice from that form's entity list (`jr://file-csv/<form>.csv`); a form whose
//! records others reference declares an entity of its own in `meta/entity`, so that ODK
//! Collect keeps the list current offline.

use std::collections::BTreeSet;
use std::fmt::Write;

use serde_json::Value;
use sync_protocol::{FieldType, Form, FormField, Labels};

/// The instance element for the commune a new record belongs to (one of the phone's).
pub const COMMUNE: &str = "mam_commune";

/// What the XForm of one form needs beyond the form: the phone's communes, the entity lists
/// its references read, and whether its own records are an entity list.
pub struct Context<'a> {
    /// The phone's communes, code and name, in order: the first is the default.
    pub communes: &'a [(String, String)],
    /// The entity list this form's records make (its form id), when other forms reference it.
    pub entity_list: Option<&'a str>,
    /// The form that updates an entity of that list (see [`update_form`]) rather than the one
    /// that creates one.
    pub update: bool,
}

/// The instance element of the entity an update form changes.
pub const ENTITY: &str = "mam_entity";

/// The form id of the form that updates the entities of the list `list`.
pub fn update_id(list: &str) -> String {
    format!("{list}.update")
}

/// The form that updates an entity of a list: the entity to change, chosen from the list,
/// and the properties, each filled from the list when it is chosen. Offline, ODK Collect keeps
/// its own updates in the list and says what it had seen (`baseVersion`, `trunkVersion`,
/// `branchId`).
pub fn update_form(form: &Form) -> Form {
    let mut f = form.clone();
    f.fields.retain(is_property);
    f.sections.clear();
    f.derived.retain(|d| reads_only(&d.expr, &f.fields));
    if let Some(t) = f.title.as_mut() {
        t.vi = format!("{} – cập nhật", t.vi);
        t.en = format!("{} – update", t.en);
    }
    f
}

/// Whether an expression reads only these fields.
fn reads_only(expr: &Value, fields: &[FormField]) -> bool {
    sync_protocol::expr::vars(expr)
        .iter()
        .all(|v| v.starts_with('@') || fields.iter().any(|f| &f.name == v))
}

/// The entity lists a form reads: the forms its references point to.
pub fn lists_read(form: &Form) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for f in all_fields(&form.fields) {
        if f.kind == FieldType::Reference {
            out.insert(f.references.clone().unwrap_or_else(|| "child".into()));
        }
    }
    out
}

fn all_fields(fields: &[FormField]) -> Vec<&FormField> {
    let mut out = Vec::new();
    for f in fields {
        out.push(f);
        out.extend(all_fields(&f.fields));
    }
    out
}

/// Whether an entity list may carry the field as a property (ODK reserves `name`, `label`
/// and names starting `__`).
pub fn is_property(f: &FormField) -> bool {
    !matches!(f.name.as_str(), "name" | "label")
        && !f.name.starts_with("__")
        && !f.retired
        && f.auto.is_none()
        && !matches!(
            f.kind,
            FieldType::Repeat
                | FieldType::Note
                | FieldType::Image
                | FieldType::Audio
                | FieldType::Video
                | FieldType::File
        )
}

/// A form's questions as ODK names their types in a bind.
fn bind_type(kind: FieldType) -> &'static str {
    match kind {
        FieldType::Integer => "int",
        FieldType::Decimal => "decimal",
        FieldType::Date => "date",
        FieldType::Time => "time",
        FieldType::Datetime => "dateTime",
        FieldType::Geopoint => "geopoint",
        FieldType::Geotrace => "geotrace",
        FieldType::Geoshape => "geoshape",
        FieldType::Image | FieldType::Audio | FieldType::Video | FieldType::File => "binary",
        FieldType::Rank => "odk:rank",
        _ => "string",
    }
}

fn media_of(kind: FieldType) -> Option<&'static str> {
    match kind {
        FieldType::Image => Some("image/*"),
        FieldType::Audio => Some("audio/*"),
        FieldType::Video => Some("video/*"),
        FieldType::File => Some("application/*"),
        _ => None,
    }
}

/// Text for XML, in an element or an attribute.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// The XForm of `form` for a phone of `ctx.communes`.
pub fn xform(form: &Form, ctx: &Context) -> String {
    let mut g = Gen {
        form,
        itext: Vec::new(),
        binds: String::new(),
        body: String::new(),
        instances: String::new(),
        lists: BTreeSet::new(),
    };
    let title = form
        .title
        .as_ref()
        .map(|t| t.vi.clone())
        .unwrap_or_else(|| form.id.as_str().to_owned());

    let mut data = String::new();
    let list = ctx.entity_list.unwrap_or("child");
    if ctx.update {
        // The entity to change, from the list; choosing it fills in its properties.
        let path = format!("/data/{ENTITY}");
        let _ = write!(data, "<{ENTITY}/>");
        let _ = write!(
            g.binds,
            "<bind nodeset=\"{path}\" type=\"string\" required=\"true()\"/>"
        );
        g.text(
            &format!("{path}:label"),
            &Labels {
                vi: "Chọn hồ sơ cần cập nhật".into(),
                en: "The record to update".into(),
            },
        );
        let _ = write!(
            g.body,
            "<select1 ref=\"{path}\" appearance=\"search\"><label ref=\"jr:itext('{path}:label')\"/>"
        );
        for f in &form.fields {
            let _ = write!(
                g.body,
                "<setvalue event=\"xforms-value-changed\" ref=\"/data/{0}\" \
                 value=\"instance('{1}')/root/item[name=/data/{ENTITY}]/{0}\"/>",
                f.name,
                esc(list)
            );
        }
        let _ = write!(
            g.body,
            "<itemset nodeset=\"instance('{0}')/root/item\"><value ref=\"name\"/><label ref=\"label\"/></itemset></select1>",
            esc(list)
        );
        g.lists.insert(list.to_owned());
    }
    // The commune a new record is in: one of the phone's.
    if !ctx.update {
        let first = ctx.communes.first().map(|c| c.0.as_str()).unwrap_or("");
        let _ = write!(data, "<{COMMUNE}>{}</{COMMUNE}>", esc(first));
        let path = format!("/data/{COMMUNE}");
        let _ = write!(
            g.binds,
            "<bind nodeset=\"{path}\" type=\"string\" required=\"true()\"{}/>",
            if ctx.communes.len() == 1 {
                " readonly=\"true()\""
            } else {
                ""
            }
        );
        g.text(
            &format!("{path}:label"),
            &Labels {
                vi: "Xã/phường".into(),
                en: "Commune".into(),
            },
        );
        let _ = write!(
            g.body,
            "<select1 ref=\"{path}\"><label ref=\"jr:itext('{path}:label')\"/>"
        );
        for (code, name) in ctx.communes {
            let _ = write!(
                g.body,
                "<item><label>{}</label><value>{}</value></item>",
                esc(name),
                esc(code)
            );
        }
        g.body.push_str("</select1>");
    }

    for f in &form.fields {
        g.instance_of(f, &mut data);
    }
    // Calculations the form's rules may read.
    for d in &form.derived {
        if let Some(x) = g.xpath(&d.expr, &Scope::top()) {
            let _ = write!(data, "<{}/>", d.name);
            let _ = write!(
                g.binds,
                "<bind nodeset=\"/data/{}\" type=\"{}\" calculate=\"{}\"{}/>",
                d.name,
                bind_type(d.kind),
                esc(&x),
                g.relevant_attr(d.relevant.as_ref(), &Scope::top())
            );
        }
    }
    // The body: sections as pages, then what no section holds.
    let mut placed = BTreeSet::new();
    for (i, s) in form.sections.iter().enumerate() {
        let id = format!("/data/section_{}:label", i + 1);
        g.text(&id, &s.label);
        let fields: Vec<&FormField> = s.fields.iter().filter_map(|n| form.field(n)).collect();
        let list = fields.iter().all(|f| f.kind != FieldType::Repeat);
        let _ = write!(
            g.body,
            "<group{}><label ref=\"jr:itext('{id}')\"/>",
            if list {
                " appearance=\"field-list\""
            } else {
                ""
            }
        );
        for f in fields {
            placed.insert(f.name.as_str());
            g.control(f, &format!("/data/{}", f.name), &Scope::top());
        }
        g.body.push_str("</group>");
    }
    for f in form
        .fields
        .iter()
        .filter(|f| !placed.contains(f.name.as_str()))
    {
        g.control(f, &format!("/data/{}", f.name), &Scope::top());
    }
    for f in &form.fields {
        g.bind(
            f,
            &format!("/data/{}", f.name),
            &Scope::top(),
            ctx.entity_list,
        );
    }

    // meta: the instance's id and name, and the entity the record is.
    data.push_str("<meta><instanceID/>");
    let _ = write!(
        g.binds,
        "<bind nodeset=\"/data/meta/instanceID\" type=\"string\" readonly=\"true()\" \
         jr:preload=\"uid\"/>"
    );
    let name = form
        .instance_name
        .as_ref()
        .and_then(|n| g.xpath(n, &Scope::top()));
    let label = name.clone().or_else(|| {
        form.fields
            .iter()
            .find(|f| f.kind == FieldType::Text && f.auto.is_none() && !f.retired)
            .map(|f| format!("/data/{}", f.name))
    });
    if let Some(n) = &name {
        data.push_str("<instanceName/>");
        let _ = write!(
            g.binds,
            "<bind nodeset=\"/data/meta/instanceName\" type=\"string\" calculate=\"{}\"/>",
            esc(n)
        );
    }
    let mut setvalues = String::new();
    if ctx.update {
        let _ = write!(
            data,
            "<entity dataset=\"{}\" id=\"\" update=\"1\" baseVersion=\"\" trunkVersion=\"\" \
             branchId=\"\"><label/></entity>",
            esc(list)
        );
        let item = format!(
            "instance('{}')/root/item[name=/data/meta/entity/@id]",
            esc(list)
        );
        let _ = write!(
            g.binds,
            "<bind nodeset=\"/data/meta/entity/@id\" type=\"string\" readonly=\"true()\" \
             calculate=\"/data/{ENTITY}\"/>\
             <bind nodeset=\"/data/meta/entity/@baseVersion\" type=\"string\" readonly=\"true()\" \
             calculate=\"{item}/__version\"/>\
             <bind nodeset=\"/data/meta/entity/@trunkVersion\" type=\"string\" readonly=\"true()\" \
             calculate=\"{item}/__trunkVersion\"/>\
             <bind nodeset=\"/data/meta/entity/@branchId\" type=\"string\" readonly=\"true()\" \
             calculate=\"{item}/__branchId\"/>\
             <bind nodeset=\"/data/meta/entity/label\" type=\"string\" readonly=\"true()\" \
             calculate=\"{}\"/>",
            esc(label.as_deref().unwrap_or("''"))
        );
    } else if let Some(list) = ctx.entity_list {
        let _ = write!(
            data,
            "<entity dataset=\"{}\" id=\"\" create=\"1\" update=\"\" baseVersion=\"\" \
             trunkVersion=\"\" branchId=\"\"><label/></entity>",
            esc(list)
        );
        g.binds.push_str(
            "<bind nodeset=\"/data/meta/entity/@id\" type=\"string\" readonly=\"true()\"/>",
        );
        setvalues.push_str(
            "<setvalue event=\"odk-instance-first-load\" ref=\"/data/meta/entity/@id\" \
             value=\"uuid()\"/>",
        );
        let _ = write!(
            g.binds,
            "<bind nodeset=\"/data/meta/entity/label\" type=\"string\" readonly=\"true()\" \
             calculate=\"{}\"/>",
            esc(label.as_deref().unwrap_or("''"))
        );
    }
    data.push_str("</meta>");

    let mut itext = String::new();
    for (lang, default, pick) in [
        ("Tiếng Việt (vi)", " default=\"true()\"", 0),
        ("English (en)", "", 1),
    ] {
        let _ = write!(itext, "<translation lang=\"{lang}\"{default}>");
        for (id, labels) in &g.itext {
            let text = if pick == 0 { &labels.vi } else { &labels.en };
            let text = if text.is_empty() { &labels.vi } else { text };
            let _ = write!(
                itext,
                "<text id=\"{}\"><value>{}</value></text>",
                esc(id),
                esc(text)
            );
        }
        itext.push_str("</translation>");
    }
    for list in &g.lists {
        let _ = write!(
            g.instances,
            "<instance id=\"{0}\" src=\"jr://file-csv/{0}.csv\"/>",
            esc(list)
        );
    }

    let mut out = String::new();
    out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    out.push_str(
        "<h:html xmlns=\"http://www.w3.org/2002/xforms\" xmlns:h=\"http://www.w3.org/1999/xhtml\" \
         xmlns:ev=\"http://www.w3.org/2001/xml-events\" xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\" \
         xmlns:jr=\"http://openrosa.org/javarosa\" xmlns:orx=\"http://openrosa.org/xforms\" \
         xmlns:odk=\"http://www.opendatakit.org/xforms\" \
         xmlns:entities=\"http://www.opendatakit.org/xforms/entities\">\n",
    );
    let _ = writeln!(out, "<h:head><h:title>{}</h:title>", esc(&title));
    let _ = writeln!(
        out,
        "<model odk:xforms-version=\"1.0.0\"{}>",
        if ctx.entity_list.is_some() || ctx.update {
            " entities:entities-version=\"2024.1.0\""
        } else {
            ""
        }
    );
    let _ = writeln!(out, "<itext>{itext}</itext>");
    let _ = writeln!(
        out,
        "<instance><data id=\"{}\" version=\"{}\">{data}</data></instance>",
        esc(&match ctx.update {
            true => update_id(form.id.as_str()),
            false => form.id.as_str().to_owned(),
        }),
        form.version
    );
    if !g.instances.is_empty() {
        let _ = writeln!(out, "{}", g.instances);
    }
    let _ = writeln!(out, "{}", g.binds);
    if !setvalues.is_empty() {
        let _ = writeln!(out, "{setvalues}");
    }
    out.push_str("</model></h:head>\n");
    let _ = writeln!(out, "<h:body>{}</h:body>", g.body);
    out.push_str("</h:html>\n");
    out
}

/// Where an expression is read: at the top of the form, or inside the items of a repeat
/// (whose own fields are read beside the question, `../name`).
struct Scope<'a> {
    repeat: Option<&'a FormField>,
    /// The question `.` stands for, in a constraint.
    current: Option<&'a str>,
}

impl<'a> Scope<'a> {
    fn top() -> Self {
        Self {
            repeat: None,
            current: None,
        }
    }
}

struct Gen<'a> {
    form: &'a Form,
    itext: Vec<(String, Labels)>,
    binds: String,
    body: String,
    instances: String,
    lists: BTreeSet<String>,
}

impl<'a> Gen<'a> {
    fn text(&mut self, id: &str, labels: &Labels) {
        self.itext.push((id.to_owned(), labels.clone()));
    }

    fn instance_of(&self, f: &FormField, out: &mut String) {
        if f.kind == FieldType::Repeat {
            let _ = write!(out, "<{} jr:template=\"\">", f.name);
            for sub in &f.fields {
                self.instance_of(sub, out);
            }
            let inside = Scope {
                repeat: Some(f),
                current: None,
            };
            for d in &f.derived {
                if self.xpath(&d.expr, &inside).is_some() {
                    let _ = write!(out, "<{}/>", d.name);
                }
            }
            let _ = write!(out, "</{}>", f.name);
            return;
        }
        match f.default.as_ref().map(default_text) {
            Some(text) if !text.is_empty() => {
                let _ = write!(out, "<{0}>{1}</{0}>", f.name, esc(&text));
            }
            _ => {
                let _ = write!(out, "<{}/>", f.name);
            }
        }
    }

    fn control(&mut self, f: &'a FormField, path: &str, scope: &Scope) {
        if f.auto.is_some() || f.calculate.is_some() || f.retired {
            return;
        }
        let label = f.label.clone().unwrap_or_else(|| Labels {
            vi: f.name.clone(),
            en: f.name.clone(),
        });
        self.text(&format!("{path}:label"), &label);
        let mut inner = format!("<label ref=\"jr:itext('{path}:label')\"/>");
        if let Some(hint) = &f.hint {
            self.text(&format!("{path}:hint"), hint);
            let _ = write!(inner, "<hint ref=\"jr:itext('{path}:hint')\"/>");
        }
        // Calculations made when this question changes (`trigger`).
        let siblings = match scope.repeat {
            Some(rep) => &rep.fields,
            None => &self.form.fields,
        };
        for calc in siblings
            .iter()
            .filter(|c| c.trigger.as_deref() == Some(&f.name))
        {
            let Some(x) = calc.calculate.as_ref().and_then(|c| self.xpath(c, scope)) else {
                continue;
            };
            let target = match path.rsplit_once('/') {
                Some((parent, _)) => format!("{parent}/{}", calc.name),
                None => calc.name.clone(),
            };
            let _ = write!(
                inner,
                "<setvalue event=\"xforms-value-changed\" ref=\"{target}\" value=\"{}\"/>",
                esc(&x)
            );
        }
        let appearance = f
            .appearance
            .as_deref()
            .filter(|a| *a != "commune")
            .map(|a| format!(" appearance=\"{}\"", esc(a)))
            .unwrap_or_default();
        match f.kind {
            FieldType::Repeat => {
                let _ = write!(
                    self.body,
                    "<group ref=\"{path}\">{inner}<repeat nodeset=\"{path}\"{}>",
                    f.repeat_count
                        .as_ref()
                        .and_then(|c| self.xpath(c, scope))
                        .map(|c| format!(" jr:count=\"{}\"", esc(&c)))
                        .unwrap_or_default()
                );
                let inside = Scope {
                    repeat: Some(f),
                    current: None,
                };
                for sub in &f.fields {
                    self.control(sub, &format!("{path}/{}", sub.name), &inside);
                }
                self.body.push_str("</repeat></group>");
            }
            FieldType::Boolean => {
                let _ = write!(self.body, "<select1 ref=\"{path}\"{appearance}>{inner}");
                for (code, vi, en) in [("true", "Có", "Yes"), ("false", "Không", "No")] {
                    let id = format!("{path}/{code}:label");
                    self.text(
                        &id,
                        &Labels {
                            vi: vi.into(),
                            en: en.into(),
                        },
                    );
                    let _ = write!(
                        self.body,
                        "<item><label ref=\"jr:itext('{id}')\"/><value>{code}</value></item>"
                    );
                }
                self.body.push_str("</select1>");
            }
            FieldType::SelectOne | FieldType::SelectMany | FieldType::Rank => {
                let tag = match f.kind {
                    FieldType::SelectOne => "select1",
                    FieldType::SelectMany => "select",
                    _ => "odk:rank",
                };
                let _ = write!(self.body, "<{tag} ref=\"{path}\"{appearance}>{inner}");
                match f.choice_filter.as_ref() {
                    Some(filter) => {
                        // The choices as a secondary instance, filtered by their columns.
                        let list = format!(
                            "{}_choices",
                            path.trim_start_matches("/data/").replace('/', "_")
                        );
                        let mut items = String::new();
                        for c in &f.choices {
                            let label = c.label.as_ref().map(|l| l.vi.as_str()).unwrap_or(&c.code);
                            let _ = write!(
                                items,
                                "<item><name>{}</name><label>{}</label>",
                                esc(&c.code),
                                esc(label)
                            );
                            for (k, v) in c.props.iter().filter(|(k, _)| is_xml_name(k)) {
                                let _ = write!(items, "<{k}>{}</{k}>", esc(v));
                            }
                            items.push_str("</item>");
                        }
                        let _ = write!(
                            self.instances,
                            "<instance id=\"{list}\"><root>{items}</root></instance>"
                        );
                        let cond = self.xpath_filter(filter, scope);
                        let _ = write!(
                            self.body,
                            "<itemset nodeset=\"instance('{list}')/root/item{}\"><value ref=\"name\"/><label ref=\"label\"/></itemset>",
                            cond.map(|c| format!("[{}]", esc(&c))).unwrap_or_default()
                        );
                    }
                    None => {
                        for (i, c) in f.choices.iter().enumerate() {
                            let id = format!("{path}/choice-{i}:label");
                            let labels = c.label.clone().unwrap_or_else(|| Labels {
                                vi: c.code.clone(),
                                en: c.code.clone(),
                            });
                            self.text(&id, &labels);
                            let _ = write!(
                                self.body,
                                "<item><label ref=\"jr:itext('{}')\"/><value>{}</value></item>",
                                esc(&id),
                                esc(&c.code)
                            );
                        }
                    }
                }
                let _ = write!(self.body, "</{tag}>");
            }
            FieldType::Reference => {
                let list = f.references.clone().unwrap_or_else(|| "child".into());
                let _ = write!(
                    self.body,
                    "<select1 ref=\"{path}\" appearance=\"search\">{inner}<itemset nodeset=\"instance('{0}')/root/item\"><value ref=\"name\"/><label ref=\"label\"/></itemset></select1>",
                    esc(&list)
                );
                self.lists.insert(list);
            }
            kind if media_of(kind).is_some() => {
                let _ = write!(
                    self.body,
                    "<upload ref=\"{path}\" mediatype=\"{}\"{appearance}>{inner}</upload>",
                    media_of(kind).unwrap_or("*/*")
                );
            }
            _ => {
                let _ = write!(
                    self.body,
                    "<input ref=\"{path}\"{appearance}>{inner}</input>"
                );
            }
        }
    }

    fn bind(&mut self, f: &'a FormField, path: &str, scope: &Scope, entity: Option<&str>) {
        if f.retired {
            return;
        }
        if f.kind == FieldType::Repeat {
            let _ = write!(
                self.binds,
                "<bind nodeset=\"{path}\"{}/>",
                self.relevant_attr(f.relevant.as_ref(), scope)
            );
            let inside = Scope {
                repeat: Some(f),
                current: None,
            };
            for sub in &f.fields {
                self.bind(sub, &format!("{path}/{}", sub.name), &inside, None);
            }
            for d in &f.derived {
                if let Some(x) = self.xpath(&d.expr, &inside) {
                    let _ = write!(
                        self.binds,
                        "<bind nodeset=\"{path}/{}\" type=\"{}\" calculate=\"{}\"{}/>",
                        d.name,
                        bind_type(d.kind),
                        esc(&x),
                        self.relevant_attr(d.relevant.as_ref(), &inside)
                    );
                }
            }
            return;
        }
        let mut attrs = format!("nodeset=\"{path}\" type=\"{}\"", bind_type(f.kind));
        match f.auto.as_deref() {
            Some("start") | Some("end") => {
                let _ = write!(
                    attrs,
                    " jr:preload=\"timestamp\" jr:preloadParams=\"{}\"",
                    f.auto.as_deref().unwrap_or_default()
                );
            }
            Some("today") => attrs.push_str(" jr:preload=\"date\" jr:preloadParams=\"today\""),
            Some(p @ ("deviceid" | "username")) => {
                let _ = write!(attrs, " jr:preload=\"property\" jr:preloadParams=\"{p}\"");
            }
            _ => {}
        }
        if f.kind == FieldType::Image {
            // Scaled down on the phone before it is kept, as Mầm's phone app does.
            let _ = write!(
                attrs,
                " orx:max-pixels=\"{}\"",
                f.max_pixels.unwrap_or(1024)
            );
        }
        if f.read_only || f.kind == FieldType::Note {
            attrs.push_str(" readonly=\"true()\"");
        }
        if f.required {
            attrs.push_str(" required=\"true()\"");
        } else if let Some(x) = f
            .required_if
            .as_ref()
            .and_then(|r| self.condition(r, scope))
        {
            let _ = write!(attrs, " required=\"{}\"", esc(&x));
        }
        if f.required || f.required_if.is_some() {
            if let Some(m) = &f.required_message {
                let id = format!("{path}:jr:requiredMsg");
                self.text(&id, m);
                let _ = write!(attrs, " jr:requiredMsg=\"jr:itext('{id}')\"");
            }
        }
        attrs.push_str(&self.relevant_attr(f.relevant.as_ref(), scope));
        let own = Scope {
            repeat: scope.repeat,
            current: Some(&f.name),
        };
        let mut rules = Vec::new();
        let is_date = f.kind == FieldType::Date;
        let bound = |v: &Value| -> Option<String> {
            match v {
                Value::Number(n) => Some(number_text(n.as_f64()?)),
                Value::String(s) if is_date => Some(format!("date({})", literal(s))),
                _ => None,
            }
        };
        if let Some(min) = f.min.as_ref().and_then(bound) {
            rules.push(format!(". >= {min}"));
        }
        if let Some(max) = f.max.as_ref().and_then(bound) {
            rules.push(format!(". <= {max}"));
        }
        if let Some(p) = &f.pattern {
            rules.push(format!("regex(., {})", literal(&format!("^(?:{p})$"))));
        }
        if f.not_future {
            rules.push(". <= today()".into());
        }
        if let Some(other) = &f.not_before {
            let p = self.path_of(other, scope);
            rules.push(format!("(string-length({p}) = 0 or . >= {p})"));
        }
        if let Some(x) = f.constraint.as_ref().and_then(|c| self.condition(c, &own)) {
            rules.push(format!("({x})"));
        }
        if !rules.is_empty() {
            let _ = write!(attrs, " constraint=\"{}\"", esc(&rules.join(" and ")));
            if let Some(m) = &f.constraint_message {
                let id = format!("{path}:jr:constraintMsg");
                self.text(&id, m);
                let _ = write!(attrs, " jr:constraintMsg=\"jr:itext('{id}')\"");
            }
        }
        if let Some(x) = f.calculate.as_ref().filter(|_| f.trigger.is_none()) {
            if let Some(x) = self.xpath(x, scope) {
                let _ = write!(attrs, " calculate=\"{}\"", esc(&x));
            }
        }
        if let Some(x) = f.default_expr.as_ref().and_then(|d| self.xpath(d, scope)) {
            // Made when a new record is opened, as `default` with an expression.
            let _ = write!(
                self.binds,
                "<setvalue event=\"odk-instance-first-load\" ref=\"{path}\" value=\"{}\"/>",
                esc(&x)
            );
        }
        if entity.is_some() && is_property(f) && scope.repeat.is_none() {
            let _ = write!(attrs, " entities:saveto=\"{}\"", f.name);
        }
        let _ = write!(self.binds, "<bind {attrs}/>");
    }

    fn relevant_attr(&self, relevant: Option<&Value>, scope: &Scope) -> String {
        relevant
            .and_then(|r| self.condition(r, scope))
            .map(|x| format!(" relevant=\"{}\"", esc(&x)))
            .unwrap_or_default()
    }

    /// The path of a field read from `scope`: beside the question inside a repeat.
    fn path_of(&self, name: &str, scope: &Scope) -> String {
        if let Some(rep) = scope.repeat {
            if rep.fields.iter().any(|f| f.name == name)
                || rep.derived.iter().any(|d| d.name == name)
            {
                return format!("../{name}");
            }
        }
        if self.form.field(name).is_none() && self.form.derived.iter().all(|d| d.name != name) {
            // A repeat's field read from outside it: its values in every item.
            let inner = self.form.fields.iter().find(|r| {
                r.kind == FieldType::Repeat
                    && (r.fields.iter().any(|f| f.name == name)
                        || r.derived.iter().any(|d| d.name == name))
            });
            if let Some(rep) = inner {
                return format!("/data/{}/{name}", rep.name);
            }
        }
        format!("/data/{name}")
    }

    fn kind_of(&self, name: &str, scope: &Scope) -> Option<FieldType> {
        if let Some(rep) = scope.repeat {
            if let Some(f) = rep.fields.iter().find(|f| f.name == name) {
                return Some(f.kind);
            }
            if let Some(d) = rep.derived.iter().find(|d| d.name == name) {
                return Some(d.kind);
            }
        }
        self.form.field(name).map(|f| f.kind).or_else(|| {
            self.form
                .derived
                .iter()
                .find(|d| d.name == name)
                .map(|d| d.kind)
        })
    }

    /// An expression as a condition: a yes/no question read as a test of `true`.
    fn condition(&self, expr: &Value, scope: &Scope) -> Option<String> {
        if let Some(name) = var_name(expr) {
            if self.kind_of(name, scope) == Some(FieldType::Boolean) {
                return Some(format!("{} = 'true'", self.path_of(name, scope)));
            }
        }
        match expr {
            Value::Bool(true) => Some("true()".into()),
            Value::Bool(false) => Some("false()".into()),
            _ => self.xpath(expr, scope),
        }
    }

    /// A choice filter: the choice's columns read from the item itself, the question's
    /// neighbours in a repeat from the question (`current()/../x`).
    fn xpath_filter(&self, expr: &Value, scope: &Scope) -> Option<String> {
        let x = self.xpath(expr, scope)?;
        Some(match scope.repeat {
            Some(_) => x.replace("../", "current()/../"),
            None => x,
        })
    }

    /// The XPath of an expression, or `None` where XPath cannot say it.
    fn xpath(&self, expr: &Value, scope: &Scope) -> Option<String> {
        let map = match expr {
            Value::Null => return Some("''".into()),
            Value::Bool(b) => return Some(format!("'{b}'")),
            Value::Number(n) => return Some(number_text(n.as_f64()?)),
            Value::String(s) => return Some(literal(s)),
            Value::Array(_) => return None,
            Value::Object(map) => map,
        };
        let (op, args) = map.iter().next().filter(|_| map.len() == 1)?;
        if op == "var" {
            let name = args.as_str()?;
            if let Some(column) = name.strip_prefix('@') {
                return match column {
                    "name" => Some("name".into()),
                    "position" | "today" | "now" => None,
                    c => Some(c.to_owned()),
                };
            }
            if scope.current == Some(name) {
                return Some(".".into());
            }
            return Some(self.path_of(name, scope));
        }
        let args: Vec<&Value> = match args {
            Value::Array(items) => items.iter().collect(),
            single => vec![single],
        };
        let x = |i: usize| args.get(i).and_then(|a| self.xpath(a, scope));
        let c = |i: usize| args.get(i).and_then(|a| self.condition(a, scope));
        let all = |f: &dyn Fn(&Value) -> Option<String>| -> Option<Vec<String>> {
            args.iter().map(|a| f(a)).collect()
        };
        Some(match op.as_str() {
            "xpath" => return self.xpath(args.first()?, scope),
            "+" | "-" | "*" | "/" | "mod" => {
                let sym = match op.as_str() {
                    "/" => "div",
                    o => o,
                };
                format!("({} {sym} {})", x(0)?, x(1)?)
            }
            "<" | "<=" | ">" | ">=" | "==" | "!=" => {
                let sym = match op.as_str() {
                    "==" => "=",
                    o => o,
                };
                // A date beside a date: read as dates.
                let side = |i: usize| -> Option<String> {
                    match args.get(i)? {
                        Value::String(s) if is_date_text(s) => {
                            Some(format!("date({})", literal(s)))
                        }
                        a => self.xpath(a, scope),
                    }
                };
                format!("{} {sym} {}", side(0)?, side(1)?)
            }
            "and" | "or" => format!(
                "({})",
                all(&|a| self.condition(a, scope))?.join(&format!(" {op} "))
            ),
            "not" => format!("not({})", c(0)?),
            "if" => format!("if({}, {}, {})", c(0)?, x(1)?, x(2)?),
            "present" => format!("string-length(string({})) > 0", x(0)?),
            "days" => format!(
                "(decimal-date-time({}) - decimal-date-time({}))",
                x(1)?,
                x(0)?
            ),
            "in" => {
                let Value::Array(options) = args.get(1)? else {
                    return None;
                };
                let subject = args.first()?;
                let many = var_name(subject)
                    .and_then(|n| self.kind_of(n, scope))
                    .is_some_and(|k| k == FieldType::SelectMany);
                let s = self.xpath(subject, scope)?;
                let parts: Option<Vec<String>> = options
                    .iter()
                    .map(|o| {
                        let o = self.xpath(o, scope)?;
                        Some(match many {
                            true => format!("selected({s}, {o})"),
                            false => format!("{s} = {o}"),
                        })
                    })
                    .collect();
                format!("({})", parts?.join(" or "))
            }
            "selected" => format!("selected({}, {})", x(0)?, x(1)?),
            "count_selected" => format!("count-selected({})", x(0)?),
            "selected_at" => format!("selected-at({}, {})", x(0)?, x(1)?),
            "string_length" => format!("string-length({})", x(0)?),
            "contains" => format!("contains({}, {})", x(0)?, x(1)?),
            "starts_with" => format!("starts-with({}, {})", x(0)?, x(1)?),
            "ends_with" => format!("ends-with({}, {})", x(0)?, x(1)?),
            "regex" => format!("regex({}, {})", x(0)?, x(1)?),
            "concat" => match args.len() {
                0 => "''".into(),
                1 => format!("string({})", x(0)?),
                _ => format!("concat({})", all(&|a| self.xpath(a, scope))?.join(", ")),
            },
            "substr" => match args.len() {
                2 => format!("substr({}, {})", x(0)?, x(1)?),
                _ => format!("substr({}, {}, {})", x(0)?, x(1)?, x(2)?),
            },
            "coalesce" => format!("coalesce({}, {})", x(0)?, x(1)?),
            "int" => format!("int({})", x(0)?),
            "number" => format!("number({})", x(0)?),
            "round" => format!("round({}, {})", x(0)?, x(1)?),
            "position" => "position(..)".into(),
            "count" | "sum" | "max" | "min" => format!("{op}({})", x(0)?),
            "indexed_repeat" => {
                let field = x(0)?;
                let (repeat, _) = field.rsplit_once('/')?;
                format!("indexed-repeat({field}, {repeat}, {})", x(1)?)
            }
            "today" => "today()".into(),
            "now" => "now()".into(),
            "date" => format!("date({})", x(0)?),
            "decimal_date_time" => format!("decimal-date-time({})", x(0)?),
            "format_date" => format!("format-date({}, {})", x(0)?, x(1)?),
            _ => return None,
        })
    }
}

/// A name an XML element may have (and no prefix): a choice column that is not one is left
/// out of the choices' instance.
fn is_xml_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_alphabetic() || c == '_')
        && chars.all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && !s.to_ascii_lowercase().starts_with("xml")
}

fn var_name(expr: &Value) -> Option<&str> {
    expr.as_object()
        .filter(|m| m.len() == 1)
        .and_then(|m| m.get("var"))
        .and_then(Value::as_str)
}

fn is_date_text(s: &str) -> bool {
    s.len() == 10 && sync_protocol::expr::day_number(s).is_some()
}

/// A number as XPath writes it: whole numbers without a point.
fn number_text(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}

/// A text literal in XPath: in the quotes it does not hold.
fn literal(s: &str) -> String {
    if !s.contains('\'') {
        format!("'{s}'")
    } else if !s.contains('"') {
        format!("\"{s}\"")
    } else {
        let parts: Vec<String> = s.split('\'').map(|p| format!("'{p}'")).collect();
        format!("concat({})", parts.join(", \"'\", "))
    }
}

/// A default value as the instance holds it.
fn default_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}
