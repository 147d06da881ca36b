//! The validator against random JSON, over every field of every form in `schemas/forms/`:
//! it never panics, and every value it accepts satisfies the field's rules as checked here
//! independently.

mod common;

use common::{for_seeds, Rng};
use serde_json::{json, Map, Value};
use sync_protocol::expr::{date_of_day, day_number};
use sync_protocol::form::{FieldType, Form, FormField, MAX_REPEAT_ITEMS, MAX_TEXT_CHARS};

const TODAY: &str = "2026-06-15";

fn forms() -> Vec<Form> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/forms");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        let form: Form = serde_json::from_str(&text).unwrap();
        form.validate().unwrap();
        out.push(form);
    }
    assert!(out.len() >= 10);
    // And the types only imported forms use.
    out.push(
        serde_json::from_value(json!({ "id": "imported", "version": 1, "fields": [
            { "name": "intro", "type": "note" },
            { "name": "Start.Time", "type": "time" },
            { "name": "seen-at", "type": "datetime" },
            { "name": "needs", "type": "rank", "choices": [{ "code": "a" }, { "code": "b" }] },
            { "name": "photo", "type": "image" },
            { "name": "voice", "type": "audio" },
            { "name": "clip", "type": "video" },
            { "name": "paper", "type": "file" },
            { "name": "path", "type": "geotrace" },
            { "name": "field", "type": "geoshape" },
        ]}))
        .unwrap(),
    );
    out
}

fn random_string(rng: &mut Rng) -> String {
    let pool = [
        "",
        "a",
        "Nguyễn",
        "2020-01-15",
        "2021-02-29",
        "2020-13-01",
        "TE4464600123456",
        "m",
        "f",
        "in_use",
        "01937a4e-8f3c-7d2a-9b1e-5c6d7e8f9a0b",
        "19753",
        "0",
        "-1",
        "\u{0}",
        "ờ",
        "  ",
        "2026-06-16",
        "9999-12-31",
        "12:30",
        "23:59:59.999",
        "24:00",
        "2020-06-01T12:30",
        "2020-06-01T12:30:00+07:00",
        "2020-02-30T10:00Z",
    ];
    let mut s = pool[rng.below(pool.len())].to_owned();
    if rng.chance(20) {
        s = s.repeat(1 + rng.below(800));
    }
    s
}

fn random_value(rng: &mut Rng, field: &FormField, depth: usize) -> Value {
    match rng.below(12) {
        0 => Value::Null,
        1 => json!(rng.chance(50)),
        2 => json!(rng.next_u64() as i64 % 2000 - 500),
        3 => json!((rng.next_u64() % 100_000) as f64 / 37.0 - 100.0),
        4 | 5 => json!(random_string(rng)),
        6 => {
            // Near a valid date: any day of any month of a few years.
            let day = day_number("2019-01-01").unwrap() + rng.below(3000) as i64;
            let s = date_of_day(day);
            if rng.chance(20) {
                json!(s.replace("-0", "-"))
            } else {
                json!(s)
            }
        }
        7 if !field.choices.is_empty() => {
            let code = &field.choices[rng.below(field.choices.len())].code;
            if rng.chance(50) {
                json!(code)
            } else if rng.chance(50) {
                json!([code, code])
            } else {
                // Every choice, in a random order.
                let mut codes: Vec<&str> = field.choices.iter().map(|c| c.code.as_str()).collect();
                for i in (1..codes.len()).rev() {
                    codes.swap(i, rng.below(i + 1));
                }
                json!(codes)
            }
        }
        8 => {
            let lat = (rng.next_u64() % 400) as f64 - 200.0;
            let point = json!({"lat": lat / 2.0, "lon": (rng.next_u64() % 400) as f64 - 200.0});
            match rng.below(3) {
                0 => point,
                // A line or an area, sometimes closed.
                1 => {
                    let mut points: Vec<Value> = (0..rng.below(6))
                        .map(|i| json!({"lat": 16.4 + i as f64 / 100.0, "lon": 107.5}))
                        .collect();
                    if rng.chance(50) && !points.is_empty() {
                        points.push(points[0].clone());
                    }
                    json!(points)
                }
                // An attachment's reference, near a valid one.
                _ => {
                    let types = [
                        "image/jpeg",
                        "audio/ogg",
                        "video/mp4",
                        "application/pdf",
                        "jpeg",
                    ];
                    let hex = if rng.chance(80) {
                        "ab".repeat(32)
                    } else {
                        "AB".repeat(32)
                    };
                    let mut r = json!({
                        "sha256": hex,
                        "size": rng.below(3000) as u64,
                        "type": types[rng.below(types.len())],
                    });
                    if rng.chance(30) {
                        r["name"] = json!(["IMG_1.jpg", "../x", "ảnh.jpg"][rng.below(3)]);
                    }
                    r
                }
            }
        }
        9 if depth < 2 => {
            let n = rng.below(4);
            Value::Array(
                (0..n)
                    .map(|_| random_value(rng, field, depth + 1))
                    .collect(),
            )
        }
        10 if depth < 2 && !field.fields.is_empty() => {
            let n = rng.below(4);
            Value::Array(
                (0..n)
                    .map(|_| {
                        let mut item = Map::new();
                        for sub in &field.fields {
                            if rng.chance(70) {
                                item.insert(sub.name.clone(), random_value(rng, sub, depth + 1));
                            }
                        }
                        if rng.chance(10) {
                            item.insert("stray".into(), json!(1));
                        }
                        Value::Object(item)
                    })
                    .collect(),
            )
        }
        _ => {
            let n = rng.next_u64() as i64 % 300;
            json!(n)
        }
    }
}

fn time() -> regex_lite::Regex {
    regex_lite::Regex::new(r"^([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]{1,3})?)?$").unwrap()
}

/// What the field's rules say, checked without the validator's code.
fn allowed(field: &FormField, value: &Value) -> Result<(), String> {
    if value.is_null() {
        return Ok(());
    }
    let num_ok = |x: f64| {
        field
            .min
            .as_ref()
            .and_then(Value::as_f64)
            .is_none_or(|m| x >= m)
            && field
                .max
                .as_ref()
                .and_then(Value::as_f64)
                .is_none_or(|m| x <= m)
    };
    let ok = match field.kind {
        FieldType::Text => value.as_str().is_some_and(|s| {
            s.chars().count() <= MAX_TEXT_CHARS
                && field.pattern.as_ref().is_none_or(|p| {
                    regex_lite::Regex::new(&format!("^(?:{p})$"))
                        .unwrap()
                        .is_match(s)
                })
        }),
        FieldType::Integer => value.as_i64().is_some_and(|x| num_ok(x as f64)),
        FieldType::Decimal => value.as_f64().is_some_and(num_ok),
        FieldType::Boolean => value.is_boolean(),
        FieldType::Date => value.as_str().is_some_and(|s| {
            day_number(s).is_some_and(|d| date_of_day(d) == s)
                && (!field.not_future || s <= TODAY)
                && field
                    .min
                    .as_ref()
                    .and_then(Value::as_str)
                    .is_none_or(|m| s >= m)
                && field
                    .max
                    .as_ref()
                    .and_then(Value::as_str)
                    .is_none_or(|m| s <= m)
        }),
        FieldType::SelectOne => value
            .as_str()
            .is_some_and(|s| field.choices.iter().any(|c| c.code == s)),
        FieldType::SelectMany => value.as_array().is_some_and(|items| {
            items.iter().enumerate().all(|(i, v)| {
                v.as_str()
                    .is_some_and(|s| field.choices.iter().any(|c| c.code == s))
                    && !items[..i].contains(v)
            })
        }),
        FieldType::Rank => value.as_array().is_some_and(|items| {
            items.iter().enumerate().all(|(i, v)| {
                v.as_str()
                    .is_some_and(|s| field.choices.iter().any(|c| c.code == s))
                    && !items[..i].contains(v)
            }) && field
                .choices
                .iter()
                .all(|c| items.contains(&json!(c.code)))
        }),
        FieldType::Image | FieldType::Audio | FieldType::Video | FieldType::File => {
            value.as_object().is_some_and(|o| {
                let hex = o.get("sha256").and_then(Value::as_str).is_some_and(|h| {
                    h.len() == 64 && h.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
                });
                let size = o
                    .get("size")
                    .and_then(Value::as_u64)
                    .is_some_and(|n| (1..=64 << 20).contains(&n));
                let family = match field.kind {
                    FieldType::Image => "image/",
                    FieldType::Audio => "audio/",
                    FieldType::Video => "video/",
                    _ => "",
                };
                let kind = o.get("type").and_then(Value::as_str).is_some_and(|t| {
                    t.starts_with(family)
                        && t.split_once('/').is_some_and(|(a, b)| !a.is_empty() && !b.is_empty())
                });
                let name = o.get("name").is_none_or(|n| {
                    n.as_str()
                        .is_some_and(|n| n.chars().count() <= 255 && !n.contains('/') && !n.contains('\\'))
                });
                let keys = o.keys().all(|k| ["sha256", "size", "type", "name"].contains(&k.as_str()));
                hex && size && kind && name && keys
            })
        }
        FieldType::Geotrace | FieldType::Geoshape => value.as_array().is_some_and(|points| {
            let point = |p: &Value| {
                let lat = p.get("lat").and_then(Value::as_f64);
                let lon = p.get("lon").and_then(Value::as_f64);
                lat.is_some_and(|x| x.abs() <= 90.0) && lon.is_some_and(|x| x.abs() <= 180.0)
            };
            let shape = field.kind == FieldType::Geoshape;
            let enough = points.len() >= if shape { 4 } else { 2 };
            let closed = !shape
                || (points.first().map(|p| (&p["lat"], &p["lon"]))
                    == points.last().map(|p| (&p["lat"], &p["lon"])));
            enough && closed && points.iter().all(point)
        }),
        FieldType::Note => false,
        FieldType::Time => value.as_str().is_some_and(|s| time().is_match(s)),
        FieldType::Datetime => value.as_str().is_some_and(|s| {
            s.split_once('T').is_some_and(|(d, t)| {
                day_number(d).is_some_and(|n| date_of_day(n) == d)
                    && regex_lite::Regex::new(
                        r"^([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]{1,3})?)?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])?$",
                    )
                    .unwrap()
                    .is_match(t)
            })
        }),
        FieldType::Geopoint => {
            let lat = value.get("lat").and_then(Value::as_f64);
            let lon = value.get("lon").and_then(Value::as_f64);
            lat.is_some_and(|x| x.abs() <= 90.0) && lon.is_some_and(|x| x.abs() <= 180.0)
        }
        FieldType::Reference => value
            .as_str()
            .is_some_and(|s| uuid::Uuid::parse_str(s).is_ok()),
        FieldType::Repeat => value.as_array().is_some_and(|items| {
            items.len() <= MAX_REPEAT_ITEMS
                && items.iter().all(|item| {
                    // Each item's values fit their fields; what an item requires is a rule
                    // of the record (asked or not by the item's own answers).
                    item.as_object().is_some_and(|map| {
                        map.iter().all(|(k, v)| {
                            field
                                .fields
                                .iter()
                                .any(|f| &f.name == k && allowed(f, v).is_ok())
                        })
                    })
                })
        }),
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{} ({:?}) must not accept {value}",
            field.name, field.kind
        ))
    }
}

#[test]
fn validator_never_panics_and_never_accepts_what_a_rule_forbids() {
    let forms = forms();
    for_seeds("validator_never_accepts_what_a_rule_forbids", 40, |seed| {
        let mut rng = Rng::new(seed);
        let mut accepted = 0;
        for _ in 0..2000 {
            let form = &forms[rng.below(forms.len())];
            let field = &form.fields[rng.below(form.fields.len())];
            let value = random_value(&mut rng, field, 0);
            match field.check_value(&value, TODAY) {
                Ok(()) => {
                    accepted += 1;
                    allowed(field, &value).unwrap();
                }
                Err(v) => {
                    assert!(v.field.starts_with(&field.name), "{v:?}");
                    assert!(!v.en.is_empty() && !v.vi.is_empty());
                }
            }
        }
        assert!(
            accepted > 100,
            "the generator must also make valid values ({accepted})"
        );
    });
}
