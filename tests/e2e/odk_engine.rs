//! The proof against an engine nobody here wrote: ODK's own form engine
//! (`@getodk/xforms-engine`, the engine of ODK Web Forms, in `tests/odk-engine`) loads the XForm
//! pyxform makes of each spreadsheet of the corpus, and Mầm loads what `mam form import` makes
//! of the same spreadsheet. Both are given the same seeded random answers, and must agree on
//! every question: whether it is shown, whether it is required, whether its value breaks its
//! constraint, its value, and every calculation.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{json, Value};
use sync_protocol::form::{FieldType, Form, FormField};

use crate::harness::{mam, repo_root, Rng};

/// Answer sets per spreadsheet.
const SETS: usize = 40;

/// Whether a tool the test needs is here; under CI a missing one is a failure.
fn have(what: &str, ok: bool, how: &str) -> bool {
    if !ok {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        assert!(!ci, "{what} is missing under CI: {how}");
        eprintln!("{what} is missing ({how}): skipping the ODK engine comparison");
    }
    ok
}

/// The converted form of a spreadsheet, or `None` when `mam form import` refuses it.
fn import(path: &Path, dir: &Path) -> Option<Form> {
    let out = dir.join(format!(
        "{}.json",
        path.file_name().unwrap().to_string_lossy()
    ));
    let run = mam()
        .args(["form", "import"])
        .arg(path)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    run.status
        .success()
        .then(|| serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).expect("a form"))
}

/// Every number written in the form's rules, and its neighbours: the values where verdicts
/// change.
fn numbers_in(v: &Value, out: &mut BTreeSet<i64>) {
    match v {
        Value::Number(n) => {
            if let Some(x) = n.as_f64() {
                let x = x.round() as i64;
                out.extend([x - 1, x, x + 1]);
            }
        }
        Value::String(s) => {
            if let Ok(x) = s.parse::<i64>() {
                out.extend([x - 1, x, x + 1]);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| numbers_in(x, out)),
        Value::Object(o) => o.values().for_each(|x| numbers_in(x, out)),
        _ => {}
    }
}

fn strings_in(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::String(s) if !s.is_empty() && s.len() < 40 => {
            out.insert(s.clone());
        }
        Value::Array(a) => a.iter().for_each(|x| strings_in(x, out)),
        Value::Object(o) => o
            .iter()
            .filter(|(k, _)| k.as_str() != "var")
            .for_each(|(_, x)| strings_in(x, out)),
        _ => {}
    }
}

/// The questions a person answers: shown, outside repeats, holding a value.
fn answerable(form: &Form) -> impl Iterator<Item = &FormField> {
    form.fields.iter().filter(|f| {
        f.shown()
            && !matches!(
                f.kind,
                FieldType::Repeat
                    | FieldType::Note
                    | FieldType::Time
                    | FieldType::Datetime
                    | FieldType::Geopoint
            )
    })
}

/// One random answer set, filled in the form's order as a person fills it: a question is
/// answered only when it is asked, and a choice only when it is offered, given the answers
/// before it. Each value as Mầm holds it.
fn answers(form: &Form, rng: &mut Rng) -> BTreeMap<String, Value> {
    let rules = serde_json::to_value(form).unwrap();
    let mut numbers = BTreeSet::from([-1, 0, 1, 2, 3, 5, 10, 18, 25, 60, 100]);
    numbers_in(&rules["fields"], &mut numbers);
    numbers_in(&rules["derived"], &mut numbers);
    let numbers: Vec<i64> = numbers.into_iter().collect();
    let mut words = BTreeSet::from(["a".to_owned(), "Lan".to_owned(), "12".to_owned()]);
    strings_in(&rules["fields"], &mut words);
    let words: Vec<String> = words.into_iter().collect();
    let mut out: BTreeMap<String, Value> = BTreeMap::new();
    for f in answerable(form) {
        if rng.below(4) == 0 {
            continue;
        }
        let so_far = |name: &str| {
            out.get(name)
                .cloned()
                .or_else(|| form.field(name).and_then(|f| f.default.clone()))
        };
        if !f.asked(&so_far) {
            continue;
        }
        let offered: Vec<&str> = f
            .choices
            .iter()
            .filter(|c| f.offered(c, &so_far))
            .map(|c| c.code.as_str())
            .collect();
        let mut pick = |n: usize| rng.below(n as u64) as usize;
        let value = match f.kind {
            FieldType::SelectOne if !offered.is_empty() => json!(offered[pick(offered.len())]),
            FieldType::SelectMany if !offered.is_empty() => {
                let mut codes: Vec<&str> = Vec::new();
                for c in &offered {
                    if pick(3) == 0 && !codes.contains(c) {
                        codes.push(c);
                    }
                }
                json!(codes)
            }
            FieldType::Integer => json!(numbers[pick(numbers.len())]),
            FieldType::Decimal => match pick(3) {
                0 => json!(numbers[pick(numbers.len())] as f64 + 0.5),
                _ => json!(numbers[pick(numbers.len())]),
            },
            FieldType::Text => json!(words[pick(words.len())]),
            FieldType::Date => json!(format!(
                "{}-{:02}-{:02}",
                1995 + pick(32),
                1 + pick(12),
                1 + pick(28)
            )),
            FieldType::Boolean => json!(true),
            _ => continue,
        };
        out.insert(f.name.clone(), value);
    }
    out
}

/// A value as the XForm writes it.
fn xform_text(f: &FormField, v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(a) => a
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" "),
        Value::Bool(true) if f.kind == FieldType::Boolean => "OK".into(),
        other => other.to_string(),
    }
}

/// Whether ODK's text of a value is Mầm's value. An acknowledgement is "OK" in an XForm, and
/// a calculation that is not a number is "NaN" where Mầm has none.
fn same(odk: &str, mam: Option<&Value>, kind: Option<FieldType>) -> bool {
    match mam {
        None | Some(Value::Null) => odk.is_empty() || odk == "NaN",
        Some(Value::Bool(true)) if kind == Some(FieldType::Boolean) => odk == "OK",
        Some(Value::String(s)) => odk == s,
        Some(Value::Number(n)) => odk.parse::<f64>().is_ok_and(|x| {
            let y = n.as_f64().unwrap();
            (x - y).abs() <= 1e-9 * y.abs().max(1.0)
        }),
        Some(Value::Bool(b)) => odk == if *b { "true" } else { "false" },
        Some(Value::Array(a)) => {
            let ours: Vec<&str> = a.iter().filter_map(Value::as_str).collect();
            odk.split_whitespace().collect::<Vec<_>>() == ours
        }
        Some(other) => *other == odk,
    }
}

struct Spreadsheet {
    name: String,
    form: Form,
    xform: String,
    sets: Vec<BTreeMap<String, Value>>,
}

pub fn expressions_agree_with_odks_engine() {
    let root = repo_root();
    let engine = root.join("tests/odk-engine");
    let node_ok = engine.join("node_modules/@getodk/xforms-engine").is_dir()
        && Command::new("node").arg("--version").output().is_ok();
    let pyxform_ok = Command::new("python3")
        .args(["-c", "import pyxform"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have(
        "ODK's form engine",
        node_ok,
        "npm ci --prefix tests/odk-engine",
    ) | !have("pyxform", pyxform_ok, "pip install pyxform==4.5.0")
    {
        return;
    }
    let seed: u64 = std::env::var("MAM_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_201_123);
    eprintln!("ODK engine comparison: seed {seed} (replay with MAM_SEED={seed})");
    let mut rng = Rng(seed);

    let corpus = root.join("tests/xlsform/pyxform-examples");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&corpus)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "xls" || x == "xlsx"))
        .collect();
    paths.sort();
    let dir = std::env::temp_dir().join(format!("mam-odk-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let made = Command::new("python3")
        .arg(engine.join("xforms.py"))
        .arg(&dir)
        .args(&paths)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let xforms: BTreeMap<String, Value> = serde_json::from_slice(&made.stdout).unwrap();

    let mut sheets = Vec::new();
    for path in &paths {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let Some(xform) = xforms[path.to_str().unwrap()]["xform"].as_str() else {
            continue; // pyxform refuses it
        };
        let Some(form) = import(path, &dir) else {
            continue; // counted by the corpus test
        };
        let sets = (0..SETS).map(|_| answers(&form, &mut rng)).collect();
        sheets.push(Spreadsheet {
            name,
            form,
            xform: std::fs::read_to_string(xform).unwrap(),
            sets,
        });
    }
    let request = json!({
        "forms": sheets.iter().map(|s| json!({
            "xform": s.xform,
            "answers": s.sets.iter().map(|set| set.iter().map(|(k, v)| {
                let f = s.form.field(k).unwrap();
                (k.clone(), json!(xform_text(f, v)))
            }).collect::<serde_json::Map<_, _>>()).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    });
    let mut node = Command::new("node")
        .arg(engine.join("verdicts.mjs"))
        .current_dir(&engine)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = node.stdin.take().unwrap();
    let body = request.to_string();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        stdin.write_all(body.as_bytes()).unwrap();
    });
    let done = node.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let results: Vec<Value> = serde_json::from_slice(&done.stdout).unwrap();

    let (mut compared, mut differences) = (0usize, Vec::new());
    for (sheet, result) in sheets.iter().zip(&results) {
        if let Some(e) = result["error"].as_str() {
            eprintln!(
                "{}: ODK's engine cannot load pyxform's XForm: {e}",
                sheet.name
            );
            continue;
        }
        let before = compared;
        for (i, (set, odk)) in sheet
            .sets
            .iter()
            .zip(result["sets"].as_array().unwrap())
            .enumerate()
        {
            // The answers ODK's engine took, and each question's default otherwise: what a
            // new record holds on the phone.
            let mut values: BTreeMap<String, Value> = BTreeMap::new();
            for f in answerable(&sheet.form) {
                let taken = odk[&f.name]["set"] == json!(true);
                match (taken, set.get(&f.name), &f.default) {
                    (true, Some(v), _) => {
                        values.insert(f.name.clone(), v.clone());
                    }
                    (false, _, Some(d)) => {
                        values.insert(f.name.clone(), d.clone());
                    }
                    _ => {}
                }
            }
            let today = result["today"].as_str().unwrap_or_default().to_owned();
            let calculated = sheet.form.derive_from(&|name: &str| match name {
                "@today" => Some(json!(today)),
                _ => values.get(name).cloned(),
            });
            // Rules read the answers, then the calculations, and today as ODK's engine saw it.
            let lookup = |name: &str| match name {
                "@today" => Some(json!(today)),
                _ => values
                    .get(name)
                    .or_else(|| calculated.get(name).filter(|v| !v.is_null()))
                    .cloned(),
            };
            let mut differ = |what: &str, ours: String, theirs: &Value| {
                differences.push(format!(
                    "{} set {i} {what}: Mầm {ours}, ODK {theirs}; answers {}",
                    sheet.name,
                    serde_json::to_string(&values).unwrap()
                ));
            };
            for f in answerable(&sheet.form) {
                let theirs = &odk[&f.name];
                if theirs.is_null() {
                    differ(
                        &format!("{}: question", f.name),
                        "has it".into(),
                        &json!("none"),
                    );
                    continue;
                }
                let shown = f.asked(&lookup);
                compared += 1;
                if json!(shown) != theirs["relevant"] {
                    differ(
                        &format!("{}: relevant", f.name),
                        shown.to_string(),
                        &theirs["relevant"],
                    );
                    continue;
                }
                if !shown {
                    continue;
                }
                let required = f.is_required(&lookup);
                compared += 1;
                if json!(required) != theirs["required"] {
                    differ(
                        &format!("{}: required", f.name),
                        required.to_string(),
                        &theirs["required"],
                    );
                }
                let value = values.get(&f.name);
                compared += 1;
                if !same(theirs["value"].as_str().unwrap_or(""), value, Some(f.kind)) {
                    differ(
                        &format!("{}: value", f.name),
                        format!("{value:?}"),
                        &theirs["value"],
                    );
                    continue;
                }
                if let Some(v) = value {
                    let ok = f.check_value(v, &today).is_ok() && !f.breaks_constraint(&lookup);
                    compared += 1;
                    if json!(ok) != theirs["constraint"] {
                        differ(
                            &format!("{}: constraint holds", f.name),
                            ok.to_string(),
                            &theirs["constraint"],
                        );
                    }
                }
            }
            for (name, ours) in &calculated {
                let theirs = &odk[&name];
                compared += 1;
                if !same(theirs["value"].as_str().unwrap_or(""), Some(ours), None) {
                    differ(
                        &format!("{name}: calculation"),
                        ours.to_string(),
                        &theirs["value"],
                    );
                }
            }
        }
        eprintln!("{}: {} verdicts compared", sheet.name, compared - before);
    }
    eprintln!(
        "{} spreadsheets, {compared} verdicts compared, {} differences",
        sheets.len(),
        differences.len()
    );
    // The first instance of each kind of difference (spreadsheet, question, verdict).
    let mut kinds: BTreeMap<String, (usize, &String)> = BTreeMap::new();
    for d in &differences {
        let kind = d.split(" set ").next().unwrap_or(d).to_owned()
            + d.split_once(": ")
                .map_or("", |(_, rest)| rest.split(':').next().unwrap_or(""))
            + " "
            + d.split(" set ")
                .nth(1)
                .and_then(|r| r.split_once(' '))
                .map_or("", |(_, r)| r.split(':').next().unwrap_or(""));
        kinds.entry(kind).or_insert((0, d)).0 += 1;
    }
    for (n, d) in kinds.values() {
        eprintln!("  ×{n} {d}");
    }
    assert!(
        differences.is_empty(),
        "{} differences with ODK's engine (seed {seed})",
        differences.len()
    );
    assert!(compared > 5_000, "only {compared} verdicts compared");
}
