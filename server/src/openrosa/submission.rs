//! A submission as ODK Collect sends it: the filled instance of an XForm, read into a form's
//! field values.

use std::collections::{BTreeMap, HashMap};

use quick_xml::events::Event;
use quick_xml::Reader;
use serde_json::{json, Map, Value};
use sync_protocol::media::Attachment;
use sync_protocol::{FieldType, Form, FormField};

use super::xform::{COMMUNE, ENTITY};

/// Elements a submission may have in all, and how deep they may nest.
const MAX_NODES: usize = 100_000;
const MAX_DEPTH: usize = 32;

/// An element of the instance: its name (without a prefix), attributes and children, and its
/// text.
#[derive(Clone, Debug, Default)]
pub struct Node {
    pub name: String,
    pub attrs: Vec<(String, String)>,
    pub children: Vec<Node>,
    pub text: String,
}

impl Node {
    pub fn child(&self, name: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.name == name)
    }

    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads an XML document into its root element.
pub fn parse_tree(xml: &[u8]) -> Result<Node, String> {
    let mut reader = Reader::from_reader(xml);
    let mut stack: Vec<Node> = Vec::new();
    let mut root = None;
    let mut count = 0;
    let mut buf = Vec::new();
    let decoder = reader.decoder();
    let open = |e: &quick_xml::events::BytesStart| -> Result<Node, String> {
        let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
        let mut attrs = Vec::new();
        for a in e.attributes() {
            let a = a.map_err(|e| format!("an attribute of <{name}> cannot be read: {e}"))?;
            let key = String::from_utf8_lossy(a.key.local_name().as_ref()).into_owned();
            let value = a
                .decode_and_unescape_value(decoder)
                .map_err(|e| format!("an attribute of <{name}> cannot be read: {e}"))?
                .into_owned();
            attrs.push((key, value));
        }
        Ok(Node {
            name,
            attrs,
            ..Node::default()
        })
    };
    loop {
        let event = reader.read_event_into(&mut buf).map_err(|e| {
            format!(
                "the XML cannot be read at byte {}: {e}",
                reader.buffer_position()
            )
        })?;
        match event {
            Event::Start(e) => {
                count += 1;
                if count > MAX_NODES || stack.len() >= MAX_DEPTH {
                    return Err(format!(
                        "the XML has more than {MAX_NODES} elements or nests deeper than {MAX_DEPTH}"
                    ));
                }
                stack.push(open(&e)?);
            }
            Event::Empty(e) => {
                count += 1;
                if count > MAX_NODES {
                    return Err(format!("the XML has more than {MAX_NODES} elements"));
                }
                let node = open(&e)?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(node),
                    None => root = Some(node),
                }
            }
            Event::End(_) => {
                let node = stack
                    .pop()
                    .ok_or("the XML closes an element it never opened")?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(node),
                    None => root = Some(node),
                }
            }
            Event::Text(t) => {
                if let Some(top) = stack.last_mut() {
                    top.text
                        .push_str(&t.decode().map_err(|e| format!("the XML's text: {e}"))?);
                }
            }
            Event::CData(t) => {
                if let Some(top) = stack.last_mut() {
                    top.text
                        .push_str(&t.decode().map_err(|e| format!("the XML's text: {e}"))?);
                }
            }
            Event::GeneralRef(r) => {
                let c = match r.resolve_char_ref() {
                    Ok(Some(c)) => c.to_string(),
                    _ => match r.decode().map_err(|e| e.to_string())?.as_ref() {
                        "amp" => "&".into(),
                        "lt" => "<".into(),
                        "gt" => ">".into(),
                        "quot" => "\"".into(),
                        "apos" => "'".into(),
                        other => return Err(format!("the XML names an unknown entity &{other};")),
                    },
                };
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&c);
                }
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    if !stack.is_empty() {
        return Err("the XML ends before its elements are closed".into());
    }
    root.ok_or_else(|| "the XML holds no element".into())
}

/// An entity the submission creates or updates (`meta/entity`).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EntityMeta {
    pub dataset: String,
    pub id: String,
    pub create: bool,
    pub update: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_version: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trunk_version: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch_id: Option<String>,
}

/// What the server reads of a submission before its form.
#[derive(Debug)]
pub struct Submission {
    pub form: String,
    pub version: String,
    pub instance_id: String,
    pub deprecated_id: Option<String>,
    pub entity: Option<EntityMeta>,
    pub root: Node,
    /// The XML as sent.
    pub xml: String,
}

/// Reads a submission's form, version, ids and entity.
pub fn read(xml: &[u8]) -> Result<Submission, String> {
    let root = parse_tree(xml)?;
    let form = root
        .attr("id")
        .filter(|s| !s.is_empty())
        .ok_or("the submission's root element has no form id (its \"id\" attribute)")?
        .to_owned();
    let version = root.attr("version").unwrap_or("").to_owned();
    let meta = root.child("meta");
    let text = |name: &str| {
        meta.and_then(|m| m.child(name))
            .map(|n| n.text.trim().to_owned())
            .filter(|s| !s.is_empty())
    };
    let instance_id = text("instanceID").ok_or("the submission has no meta/instanceID")?;
    let deprecated_id = text("deprecatedID");
    let entity = meta.and_then(|m| m.child("entity")).map(|e| {
        let flag = |k: &str| e.attr(k).is_some_and(|v| v == "1" || v == "true");
        let number = |k: &str| e.attr(k).and_then(|v| v.trim().parse::<u64>().ok());
        EntityMeta {
            dataset: e.attr("dataset").unwrap_or("").to_owned(),
            id: e.attr("id").unwrap_or("").trim().to_owned(),
            create: flag("create"),
            update: flag("update"),
            base_version: number("baseVersion"),
            trunk_version: number("trunkVersion"),
            branch_id: e
                .attr("branchId")
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
        }
    });
    Ok(Submission {
        form,
        version,
        instance_id,
        deprecated_id,
        entity,
        root,
        xml: String::from_utf8_lossy(xml).into_owned(),
    })
}

/// The commune the submission names for its record.
pub fn commune(root: &Node) -> Option<String> {
    root.child(COMMUNE)
        .map(|n| n.text.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// The submission's value of every field of `form` it holds (`null` for an empty answer),
/// attachments read from `files` by the file name the instance holds. An element the form does not know is an
/// error that names it.
pub fn values(
    form: &Form,
    root: &Node,
    files: &HashMap<String, Attachment>,
) -> Result<BTreeMap<String, Value>, String> {
    for c in &root.children {
        let known = c.name == "meta"
            || c.name == COMMUNE
            || c.name == ENTITY
            || form.field(&c.name).is_some()
            || form.derived.iter().any(|d| d.name == c.name);
        if !known {
            return Err(format!(
                "the form {} has no question {:?}",
                form.id.as_str(),
                c.name
            ));
        }
    }
    let mut out = BTreeMap::new();
    for f in &form.fields {
        // A question the instance does not hold is not answered by it (an entity update
        // holds only the properties it saves): left as it is.
        if f.retired || f.kind == FieldType::Note || root.child(&f.name).is_none() {
            continue;
        }
        let value = if f.kind == FieldType::Repeat {
            let items: Vec<Value> = root
                .children
                .iter()
                .filter(|c| c.name == f.name && c.attr("template").is_none())
                .map(|item| {
                    let mut map = Map::new();
                    for sub in &f.fields {
                        if let Some(n) = item.child(&sub.name) {
                            let v = value_of(sub, &n.text, files);
                            if !v.is_null() {
                                map.insert(sub.name.clone(), v);
                            }
                        }
                    }
                    Value::Object(map)
                })
                .collect();
            match items.is_empty() {
                true => Value::Null,
                false => Value::Array(items),
            }
        } else {
            root.child(&f.name)
                .map(|n| value_of(f, &n.text, files))
                .unwrap_or(Value::Null)
        };
        out.insert(f.name.clone(), value);
    }
    Ok(out)
}

/// A question's text as a field value. Text that is not what the type takes is kept as text,
/// so that the form's check refuses it by name and rule.
pub fn value_of(f: &FormField, text: &str, files: &HashMap<String, Attachment>) -> Value {
    let t = text.trim();
    if t.is_empty() {
        return Value::Null;
    }
    let raw = || Value::String(t.to_owned());
    match f.kind {
        FieldType::Text | FieldType::Reference => Value::String(text.to_owned()),
        FieldType::Integer => t.parse::<i64>().map(|n| json!(n)).unwrap_or_else(|_| raw()),
        FieldType::Decimal => t
            .parse::<f64>()
            .ok()
            .filter(|x| x.is_finite())
            .map(|x| json!(x))
            .unwrap_or_else(raw),
        FieldType::Boolean => match t {
            "true" | "1" | "yes" => json!(true),
            "false" | "0" | "no" => json!(false),
            _ => raw(),
        },
        FieldType::SelectMany | FieldType::Rank => {
            Value::Array(t.split_whitespace().map(|s| json!(s)).collect())
        }
        FieldType::Time => {
            // ODK's `10:30:00.000+07:00`: the hour and minute.
            match t.get(..5) {
                Some(hm) if sync_protocol::form::is_time(hm) => json!(hm),
                _ => raw(),
            }
        }
        FieldType::Datetime => match t.split_once('T') {
            // `2024-05-01T10:30:00.000+07:00`, the fraction of a second dropped.
            Some((d, rest)) => {
                let (clock, zone) = match rest.find(['+', '-', 'Z']) {
                    Some(i) => rest.split_at(i),
                    None => (rest, ""),
                };
                let clock = clock.split('.').next().unwrap_or(clock);
                json!(format!("{d}T{clock}{zone}"))
            }
            None => raw(),
        },
        FieldType::Geopoint => point(t).unwrap_or_else(raw),
        FieldType::Geotrace | FieldType::Geoshape => t
            .split(';')
            .map(|p| point(p.trim()))
            .collect::<Option<Vec<_>>>()
            .map(Value::Array)
            .unwrap_or_else(raw),
        FieldType::Image | FieldType::Audio | FieldType::Video | FieldType::File => {
            match files.get(t) {
                Some(a) => serde_json::to_value(a).unwrap_or_else(|_| raw()),
                None => Value::Null,
            }
        }
        _ => raw(),
    }
}

/// ODK's `lat lon alt accuracy`.
fn point(t: &str) -> Option<Value> {
    let parts: Vec<f64> = t
        .split_whitespace()
        .map(|p| p.parse::<f64>().ok())
        .collect::<Option<_>>()?;
    let mut v = json!({"lat": parts.first()?, "lon": parts.get(1)?});
    if let Some(alt) = parts.get(2) {
        v["alt"] = json!(alt);
    }
    if let Some(acc) = parts.get(3) {
        v["acc"] = json!(acc);
    }
    Some(v)
}

/// A field value as an entity list or an XForm instance writes it.
pub fn text_of(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Array(items) if items.iter().all(Value::is_string) => items
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" "),
        Value::Array(points) => points.iter().map(point_text).collect::<Vec<_>>().join(";"),
        Value::Object(_) if v.get("lat").is_some() => point_text(v),
        other => other.to_string(),
    }
}

fn point_text(p: &Value) -> String {
    let n = |k: &str| p.get(k).and_then(Value::as_f64).unwrap_or(0.0);
    format!("{} {} {} {}", n("lat"), n("lon"), n("alt"), n("acc"))
}
