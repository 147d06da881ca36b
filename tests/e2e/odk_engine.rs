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

/// Runs a script of `tests/odk-engine` on ODK's engine with `request` on its standard input:
/// its JSON answer.
pub(crate) fn run_engine(script: &str, request: &Value) -> Vec<Value> {
    let engine = repo_root().join("tests/odk-engine");
    let mut node = Command::new("node")
        .arg(engine.join(script))
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
    serde_json::from_slice(&done.stdout).unwrap()
}

/// Whether a tool the test needs is here; under CI a missing one is a failure.
pub(crate) fn have(what: &str, ok: bool, how: &str) -> bool {
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

/// The questions a person answers among `fields`: shown, holding a value (a repeat holds its
/// items' answers).
fn answerable(fields: &[FormField]) -> impl Iterator<Item = &FormField> {
    fields.iter().filter(|f| {
        f.shown()
            && !matches!(
                f.kind,
                FieldType::Note | FieldType::Time | FieldType::Datetime | FieldType::Geopoint
            )
    })
}

/// What random answers are drawn from: the numbers and words the form's rules name.
struct Pools {
    numbers: Vec<i64>,
    words: Vec<String>,
}

impl Pools {
    fn of(form: &Form) -> Pools {
        let rules = serde_json::to_value(form).unwrap();
        let mut numbers = BTreeSet::from([-1, 0, 1, 2, 3, 5, 10, 18, 25, 60, 100]);
        numbers_in(&rules["fields"], &mut numbers);
        numbers_in(&rules["derived"], &mut numbers);
        let mut words = BTreeSet::from(["a".to_owned(), "Lan".to_owned(), "12".to_owned()]);
        strings_in(&rules["fields"], &mut words);
        Pools {
            numbers: numbers.into_iter().collect(),
            words: words.into_iter().collect(),
        }
    }
}

/// One random answer set for `fields`, filled in order as a person fills them: a question is
/// answered only when it is asked, and a choice only when it is offered, given the answers
/// before it (`outer` reads the rest of the form). A repeat gets 0 to 3 items, each filled
/// the same way. Each value as Mầm holds it.
fn answers(
    fields: &[FormField],
    defaults: &dyn Fn(&str) -> Option<Value>,
    outer: &dyn Fn(&str) -> Option<Value>,
    pools: &Pools,
    rng: &mut Rng,
) -> BTreeMap<String, Value> {
    let mut out: BTreeMap<String, Value> = BTreeMap::new();
    for f in answerable(fields) {
        if rng.below(4) == 0 {
            continue;
        }
        let so_far = |name: &str| {
            out.get(name)
                .cloned()
                .or_else(|| defaults(name))
                .or_else(|| outer(name))
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
        let value = match f.kind {
            FieldType::Repeat => {
                let mut items: Vec<Value> = Vec::new();
                for position in 1..=rng.below(4) as usize {
                    let none = json!({});
                    let item_defaults = |name: &str| {
                        f.fields
                            .iter()
                            .find(|s| s.name == name)
                            .and_then(|s| s.default.clone())
                    };
                    // An item's rules read its own answers, its place, then the form's.
                    let mut item: BTreeMap<String, Value> = BTreeMap::new();
                    let filled = {
                        let inner = f.item_values(&none, position, &so_far);
                        answers(&f.fields, &item_defaults, &inner, pools, rng)
                    };
                    item.extend(filled);
                    items.push(json!(item));
                }
                json!(items)
            }
            FieldType::SelectOne if !offered.is_empty() => {
                json!(offered[rng.below(offered.len() as u64) as usize])
            }
            FieldType::SelectMany if !offered.is_empty() => {
                let mut codes: Vec<&str> = Vec::new();
                for c in &offered {
                    if rng.below(3) == 0 && !codes.contains(c) {
                        codes.push(c);
                    }
                }
                json!(codes)
            }
            FieldType::Integer => {
                json!(pools.numbers[rng.below(pools.numbers.len() as u64) as usize])
            }
            FieldType::Decimal => {
                let n = pools.numbers[rng.below(pools.numbers.len() as u64) as usize] as f64;
                match rng.below(3) {
                    0 => json!(n + 0.5),
                    _ => json!(n),
                }
            }
            FieldType::Text => json!(pools.words[rng.below(pools.words.len() as u64) as usize]),
            FieldType::Date => json!(format!(
                "{}-{:02}-{:02}",
                1995 + rng.below(32),
                1 + rng.below(12),
                1 + rng.below(28)
            )),
            FieldType::Boolean => json!(true),
            _ => continue,
        };
        out.insert(f.name.clone(), value);
    }
    out
}

/// Answers as the XForm writes them, for ODK's engine: a repeat as a list of items.
fn xform_answers(fields: &[FormField], set: &BTreeMap<String, Value>, ack: &str) -> Value {
    Value::Object(
        set.iter()
            .map(|(k, v)| {
                let f = fields.iter().find(|f| &f.name == k).unwrap();
                let text = match (f.kind, v) {
                    (FieldType::Repeat, Value::Array(items)) => Value::Array(
                        items
                            .iter()
                            .map(|item| {
                                let item: BTreeMap<String, Value> =
                                    serde_json::from_value(item.clone()).unwrap();
                                xform_answers(&f.fields, &item, ack)
                            })
                            .collect(),
                    ),
                    _ => json!(xform_text(f, v, ack)),
                };
                (k.clone(), text)
            })
            .collect(),
    )
}

/// A value as the XForm writes it.
fn xform_text(f: &FormField, v: &Value, ack: &str) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(a) => a
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" "),
        Value::Bool(true) if f.kind == FieldType::Boolean => ack.into(),
        other => other.to_string(),
    }
}

/// Whether ODK's text of a value is Mầm's value. An acknowledgement is "OK" in an XForm, and
/// a calculation that is not a number is "NaN" where Mầm has none.
fn same(odk: &str, mam: Option<&Value>, kind: Option<FieldType>, ack: &str) -> bool {
    match mam {
        None | Some(Value::Null) => odk.is_empty() || odk == "NaN",
        Some(Value::Bool(true)) if kind == Some(FieldType::Boolean) => odk == ack,
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

/// The values of `fields` that ODK's engine took from the answers (`odk` says which), and
/// each question's default otherwise; a repeat's items alike.
fn taken(
    fields: &[FormField],
    set: &BTreeMap<String, Value>,
    odk: &Value,
) -> BTreeMap<String, Value> {
    let mut values = BTreeMap::new();
    for f in answerable(fields) {
        if f.kind == FieldType::Repeat {
            let (Some(Value::Array(ours)), Some(theirs)) =
                (set.get(&f.name), odk[&f.name]["items"].as_array())
            else {
                continue;
            };
            let items: Vec<Value> = ours
                .iter()
                .zip(theirs)
                .map(|(item, odk_item)| {
                    let item: BTreeMap<String, Value> =
                        serde_json::from_value(item.clone()).unwrap();
                    json!(taken(&f.fields, &item, odk_item))
                })
                .collect();
            values.insert(f.name.clone(), json!(items));
            continue;
        }
        match (
            odk[&f.name]["set"] == json!(true),
            set.get(&f.name),
            &f.default,
        ) {
            (true, Some(v), _) => {
                values.insert(f.name.clone(), v.clone());
            }
            (false, _, Some(d)) => {
                values.insert(f.name.clone(), d.clone());
            }
            _ => {}
        }
    }
    values
}

/// The verdicts compared, and every one on which Mầm and ODK's engine differ.
struct Check {
    compared: usize,
    differences: Vec<String>,
    /// A yes/no acknowledgement's text: pyxform's `OK`, Mầm's `true`.
    ack: &'static str,
}

impl Check {
    fn differ(&mut self, at: &str, what: &str, ours: String, theirs: &Value) {
        self.differences
            .push(format!("{at} {what}: Mầm {ours}, ODK {theirs}"));
    }

    fn calculation(&mut self, at: &str, name: &str, ours: &Value, theirs: &Value) {
        self.compared += 1;
        if !same(
            theirs["value"].as_str().unwrap_or(""),
            Some(ours),
            None,
            self.ack,
        ) {
            self.differ(
                at,
                &format!("{name}: calculation"),
                ours.to_string(),
                &theirs["value"],
            );
        }
    }

    /// Each question of `fields` (the form's, or an item's), as Mầm's rules read `lookup`,
    /// against what ODK's engine says of it.
    fn scope(
        &mut self,
        at: &str,
        fields: &[FormField],
        values: &BTreeMap<String, Value>,
        lookup: &dyn Fn(&str) -> Option<Value>,
        odk: &Value,
        today: &str,
    ) {
        for f in answerable(fields) {
            let theirs = &odk[&f.name];
            if theirs.is_null() {
                self.differ(
                    at,
                    &format!("{}: question", f.name),
                    "has it".into(),
                    &json!("none"),
                );
                continue;
            }
            let shown = f.asked(lookup);
            self.compared += 1;
            if json!(shown) != theirs["relevant"] {
                self.differ(
                    at,
                    &format!("{}: relevant", f.name),
                    shown.to_string(),
                    &theirs["relevant"],
                );
                continue;
            }
            if !shown {
                continue;
            }
            if f.kind == FieldType::Repeat {
                let ours = values
                    .get(&f.name)
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                let items = theirs["items"].as_array().cloned().unwrap_or_default();
                self.compared += 1;
                if ours.len() != items.len() {
                    // A repeat_count fixes ODK's number of items; Mầm's phone lets the person
                    // choose: nothing to compare item by item.
                    if !theirs["type"]
                        .as_str()
                        .is_some_and(|t| t.ends_with("controlled") && !t.ends_with("uncontrolled"))
                    {
                        self.differ(
                            at,
                            &format!("{}: items", f.name),
                            ours.len().to_string(),
                            &json!(items.len()),
                        );
                    }
                    continue;
                }
                for (i, (item, odk_item)) in ours.iter().zip(&items).enumerate() {
                    let inner = f.item_values(item, i + 1, lookup);
                    let item_values: BTreeMap<String, Value> =
                        serde_json::from_value(item.clone()).unwrap();
                    let here = format!("{at} {}[{}]", f.name, i + 1);
                    self.scope(&here, &f.fields, &item_values, &inner, odk_item, today);
                    for (name, ours) in f.derive_item(item, i + 1, lookup) {
                        self.calculation(&here, &name, &ours, &odk_item[&name]);
                    }
                }
                continue;
            }
            let required = f.is_required(lookup);
            self.compared += 1;
            if json!(required) != theirs["required"] {
                self.differ(
                    at,
                    &format!("{}: required", f.name),
                    required.to_string(),
                    &theirs["required"],
                );
            }
            let value = values.get(&f.name);
            self.compared += 1;
            if !same(
                theirs["value"].as_str().unwrap_or(""),
                value,
                Some(f.kind),
                self.ack,
            ) {
                self.differ(
                    at,
                    &format!("{}: value", f.name),
                    format!("{value:?}"),
                    &theirs["value"],
                );
                continue;
            }
            if let Some(v) = value {
                let ok = f.check_value(v, today).is_ok() && !f.breaks_constraint(lookup);
                self.compared += 1;
                if json!(ok) != theirs["constraint"] {
                    self.differ(
                        at,
                        &format!("{}: constraint holds", f.name),
                        ok.to_string(),
                        &theirs["constraint"],
                    );
                }
            }
        }
    }
}

/// Whose XForm of each spreadsheet ODK's engine is given: pyxform's, or the one Mầm serves
/// ODK Collect of the form it imported.
#[derive(Clone, Copy, PartialEq)]
pub enum Source {
    Pyxform,
    Mam,
}

/// The XForm `mam form xform` makes of a form file.
fn mams_xform(form: &Path) -> String {
    let run = mam()
        .args(["form", "xform"])
        .arg(form)
        .args(["--commune", "19753"])
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    String::from_utf8(run.stdout).unwrap()
}

pub fn expressions_agree_with_odks_engine(source: Source) {
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
        let pools = Pools::of(&form);
        let defaults = |name: &str| form.field(name).and_then(|f| f.default.clone());
        let sets = (0..SETS)
            .map(|_| answers(&form.fields, &defaults, &|_| None, &pools, &mut rng))
            .collect();
        let xform = match source {
            Source::Pyxform => std::fs::read_to_string(xform).unwrap(),
            Source::Mam => mams_xform(&dir.join(format!("{name}.json"))),
        };
        sheets.push(Spreadsheet {
            name,
            form,
            xform,
            sets,
        });
    }
    let ack = match source {
        Source::Pyxform => "OK",
        Source::Mam => "true",
    };
    let request = json!({
        "forms": sheets.iter().map(|s| json!({
            "xform": s.xform,
            "answers": s.sets.iter().map(|set| xform_answers(&s.form.fields, set, ack)).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    });
    let results = run_engine("verdicts.mjs", &request);

    let mut check = Check {
        compared: 0,
        differences: Vec::new(),
        ack,
    };
    for (sheet, result) in sheets.iter().zip(&results) {
        if let Some(e) = result["error"].as_str() {
            eprintln!("{}: ODK's engine cannot load the XForm: {e}", sheet.name);
            assert!(
                source == Source::Pyxform,
                "ODK's engine cannot load the XForm Mầm serves of {}: {e}",
                sheet.name
            );
            continue;
        }
        let before = check.compared;
        let today = result["today"].as_str().unwrap_or_default().to_owned();
        for (i, (set, odk)) in sheet
            .sets
            .iter()
            .zip(result["sets"].as_array().unwrap())
            .enumerate()
        {
            // The answers ODK's engine took, and each question's default otherwise: what a
            // new record holds on the phone.
            let values = taken(&sheet.form.fields, set, odk);
            let clock = |name: &str| (name == "@today").then(|| json!(today));
            let top = |name: &str| values.get(name).cloned().or_else(|| clock(name));
            let calculated = sheet.form.derive_from(&top);
            // Rules read the answers, then the calculations, then a repeat's values across its
            // items, and today as ODK's engine saw it.
            let answered = |name: &str| {
                top(name).or_else(|| calculated.get(name).filter(|v| !v.is_null()).cloned())
            };
            let lookup =
                |name: &str| answered(name).or_else(|| sheet.form.across_items(name, &answered));
            let at = format!("{} set {i}", sheet.name);
            check.scope(&at, &sheet.form.fields, &values, &lookup, odk, &today);
            for (name, ours) in &calculated {
                check.calculation(&at, name, ours, &odk[name]);
            }
        }
        eprintln!(
            "{}: {} verdicts compared",
            sheet.name,
            check.compared - before
        );
    }
    let (compared, differences) = (check.compared, check.differences);
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
