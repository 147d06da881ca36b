//! The collaborators' phone app in headless Chromium at phone size: its protocol logic against
//! the golden vectors and the server's own rules, and the field stories: enrol, fill a form
//! offline, reload, sync, conflicts on two phones, a refused value, fifty records in one request.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use sync_protocol::{Form, Record};

use crate::browser::Browser;
use crate::harness::{repo_root, Database, Rng, Server};

const WIDTH: u32 = 360;
const HEIGHT: u32 = 740;

fn vector(name: &str) -> Value {
    let path = repo_root().join("sync-protocol/vectors").join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn forms() -> Vec<(Value, Form)> {
    let mut out = Vec::new();
    let dir = repo_root().join("schemas/forms");
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    for path in paths {
        let text = std::fs::read_to_string(&path).unwrap();
        out.push((
            serde_json::from_str(&text).unwrap(),
            serde_json::from_str(&text).unwrap(),
        ));
    }
    out
}

/// Run `body` (which sees `P`, the protocol module, and `args`) in the app's page.
async fn in_page(browser: &Browser, body: &str, args: Vec<Value>) -> Value {
    let script = format!(
        "const done = arguments[arguments.length - 1]; const args = Array.from(arguments).slice(0, -1);
         window.mam.ready.then(async () => {{ const P = window.mam.protocol; try {{ {body} }} catch (e) {{ done({{ error: String(e && e.stack || e) }}); }} }});"
    );
    let result = browser.execute_async(&script, args).await;
    if let Some(error) = result.get("error") {
        panic!("script failed: {error}");
    }
    result
}

fn random_value(rng: &mut Rng, field: &Value) -> Value {
    let choices: Vec<Value> = field["choices"]
        .as_array()
        .map(|c| c.iter().map(|c| c["code"].clone()).collect())
        .unwrap_or_default();
    match field["type"].as_str().unwrap() {
        "integer" => json!(rng.below(60) as i64),
        "decimal" => json!((rng.below(1200) as f64) / 10.0 + 0.5),
        "boolean" => json!(rng.below(2) == 0),
        "date" => json!(sync_protocol::expr::date_of_day(
            sync_protocol::expr::day_number("2019-06-01").unwrap() + rng.below(1500) as i64
        )),
        "select_one" if !choices.is_empty() => {
            choices[rng.below(choices.len() as u64) as usize].clone()
        }
        "select_many" if !choices.is_empty() => {
            json!([choices[rng.below(choices.len() as u64) as usize]])
        }
        "repeat" => json!([]),
        "geopoint" => json!({ "lat": 16.46, "lon": 107.59 }),
        _ => json!("Thôn 1"),
    }
}

/// The app's protocol code reads and writes the v1 messages exactly as the golden vectors, and
/// checks and derives values with the server's rules and messages.
pub async fn phone_protocol_matches_the_server() {
    let Some(browser) = crate::browser::start(WIDTH, HEIGHT, "phone-screenshots").await else {
        return;
    };
    let db = Database::fresh(crate::harness::Backend::Sqlite)
        .await
        .unwrap();
    let server = Server::start(&db);
    browser.goto(&format!("{}/app/", server.url)).await;

    // A request for the vector's edit is the vector, key for key.
    let edit = vector("edit.json");
    let made = in_page(
        &browser,
        "const s = P.newState(9);
         s.pulled[args[0].record] = { id: args[0].record, form: args[0].form, version: 1, commune: args[0].commune,
           fields: { registration_date: [{ value: '2020-02-01', dot: [7, 12] }] } };
         s.next_seq = 41;
         P.edit(s, args[0].record, { birth_registered: true, registration_date: '2020-03-02' });
         s.cursor = 1893;
         done({ edit: s.pending[0], request: P.syncRequest(s, 200, 65536) });",
        vec![edit.clone()],
    )
    .await;
    assert_eq!(made["edit"], edit);
    assert_eq!(made["request"], vector("sync-request.json"));

    // The vector response: its refusal kept with the reason, the acknowledged edit gone, the
    // record in conflict with both values, the evicted record forgotten.
    let response = vector("sync-response.json");
    let applied = in_page(
        &browser,
        "const s = P.newState(9);
         const r = args[0];
         s.pulled[r.evicted[0]] = { id: r.evicted[0], form: 'birth-registration', version: 1, commune: '19753', fields: {} };
         P.create(s, 'x', 'birth-registration', 1, '19753', {});
         s.pending[0].seq = 40; s.next_seq = 41;
         P.create(s, r.records[0].id, 'birth-registration', 1, '19753', { child_name: 'Lan' });
         P.create(s, '01937a4e-0000-7000-8000-000000000099', 'birth-registration', 1, '19753', { child_name: 'Mai' });
         P.syncRequest(s, 200, 65536);
         P.applyResponse(s, r);
         const v = P.view(s, r.records[0].id);
         done({ pending: s.pending.map(e => e.seq), rejected: s.rejected.map(x => x.rejection),
                evicted_gone: !(r.evicted[0] in s.pulled), cursor: s.cursor, forms: s.forms,
                conflicted: P.isConflicted(v), shown: P.valueOf(v, 'child_name'),
                values: v.fields.child_name.map(x => x.value), next_seq: s.next_seq });",
        vec![response.clone()],
    )
    .await;
    assert_eq!(
        applied["pending"],
        json!([42]),
        "the unacknowledged edit stays"
    );
    assert_eq!(applied["rejected"], response["rejected"]);
    assert_eq!(applied["evicted_gone"], json!(true));
    assert_eq!(applied["cursor"], json!(1931));
    assert_eq!(applied["forms"], response["forms"]);
    assert_eq!(applied["conflicted"], json!(true));
    assert_eq!(applied["shown"], json!("Nguyễn Thị Lân"));
    assert_eq!(
        applied["values"],
        json!(["Nguyễn Thị Lan", "Nguyễn Thị Lân"])
    );
    assert_eq!(applied["next_seq"], json!(43));

    // A reused seq is not a refusal: the edit stays pending under its seq, and until the phone
    // has a successor number it pushes nothing.
    let reused = in_page(
        &browser,
        "const s = P.newState(3);
         P.create(s, 'a', 'birth-registration', 1, '19753', { child_name: 'A' });
         P.syncRequest(s);
         P.applyResponse(s, { protocol: 1, acked_through: 5, rejected: [{ seq: 1, code: 'seq_reused', message: 'x' }],
           records: [], evicted: [], cursor: 0, more: false, forms: {}, epoch: 'e', next_seq: 6 });
         done({ pending: s.pending.map(e => e.seq), rejected: s.rejected.length,
                successor_needed: s.successor_needed, push: P.syncRequest(s).push.length });",
        vec![],
    )
    .await;
    assert_eq!(
        reused,
        json!({ "pending": [1], "rejected": 0, "successor_needed": true, "push": 0 })
    );

    // The vectors of a request with its epoch and lost seqs, and of a response that starts
    // the pull again from the beginning.
    let epoch = in_page(
        &browser,
        "const [edit, response] = args;
         const s = P.newState(9);
         s.pulled[edit.record] = { id: edit.record, form: edit.form, version: 1, commune: edit.commune,
           fields: { registration_date: [{ value: '2020-02-01', dot: [7, 12] }] } };
         s.pulled['01937a4e-0000-7000-8000-0000000000aa'] = { id: '01937a4e-0000-7000-8000-0000000000aa',
           form: 'birth-registration', version: 1, commune: '19753', fields: {} };
         s.next_seq = 41;
         P.edit(s, edit.record, { birth_registered: true, registration_date: '2020-03-02' });
         s.cursor = 1893; s.epoch = response.epoch; s.lost_through = 40;
         const request = P.syncRequest(s, 200, 65536);
         const { cleared } = P.applyResponse(s, response);
         done({ request, cleared, pulled: Object.keys(s.pulled), cursor: s.cursor, epoch: s.epoch,
                lost_through: s.lost_through, pending: s.pending.length });",
        vec![edit.clone(), vector("sync-response-epoch.json")],
    )
    .await;
    assert_eq!(epoch["request"], vector("sync-request-epoch.json"));
    assert_eq!(epoch["cleared"], json!(true));
    assert_eq!(
        epoch["pulled"],
        json!(["01937a4e-8f3c-7d2a-9b1e-5c6d7e8f9a0b"]),
        "a reset drops every record pulled before its first page"
    );
    assert_eq!(epoch["cursor"], json!(1931));
    assert_eq!(epoch["epoch"], json!("0193a1b2c3d47e5f8a9b0c1d2e3f4a5b"));
    assert_eq!(epoch["lost_through"], Value::Null);
    assert_eq!(epoch["pending"], json!(0));

    // Every field of every form, probed with awkward values: the same verdict, rule and
    // messages in both languages as the server.
    let day = "2024-06-15";
    let mut cases = Vec::new();
    let mut expected = Vec::new();
    // Besides the province's forms, one of the types only imported forms use.
    let imported = json!({ "id": "imported", "version": 1, "fields": [
        { "name": "intro", "type": "note", "label": { "vi": "Lời dặn", "en": "Note" } },
        { "name": "Start.Time", "type": "time" },
        { "name": "seen-at", "type": "datetime" },
        { "name": "needs", "type": "rank", "choices": [{ "code": "a" }, { "code": "b" }] },
        { "name": "photo", "type": "image" },
        { "name": "voice", "type": "audio" },
        { "name": "paper", "type": "file" },
        { "name": "path", "type": "geotrace" },
        { "name": "area", "type": "geoshape" },
        { "name": "spot", "type": "geopoint" },
    ]});
    let extra = (
        imported.clone(),
        serde_json::from_value::<Form>(imported).unwrap(),
    );
    for (raw, form) in forms().into_iter().chain(std::iter::once(extra)) {
        for (field_json, field) in raw["fields"].as_array().unwrap().iter().zip(&form.fields) {
            let mut probes = vec![
                json!("12:30"),
                json!("24:00"),
                json!("12:60"),
                json!("12:30:15"),
                json!("12:30:15.5"),
                json!("12:30:15."),
                json!("2020-06-01T12:30"),
                json!("2020-06-01T12:30:00+07:00"),
                json!("2020-06-01T12:30Z"),
                json!("2020-02-30T10:00"),
                json!("2020-06-01 12:30"),
                json!("2020-06-01T12:30+7:00"),
                json!(null),
                json!("x"),
                json!(""),
                json!(1.5),
                json!(-5),
                json!(42),
                json!(1_000_000_000),
                json!(true),
                json!("2020-02-30"),
                json!("2999-01-01"),
                json!("1900-01-01"),
                json!("2020-06-01"),
                json!(["a", "a"]),
                json!([{}]),
                json!([{ "nope": 1 }]),
                json!({ "lat": 100, "lon": 0 }),
                json!("12345"),
                json!("01937a4e-8f3c-7d2a-9b1e-5c6d7e8f9a0b"),
                json!("AB1234567890123"),
                json!(["b", "a"]),
                json!({ "lat": 16.46, "lon": 107.59, "acc": 4.5, "alt": 12 }),
                json!({ "lat": 16.46, "lon": 107.59, "acc": -1 }),
                json!([{ "lat": 16.46, "lon": 107.59 }, { "lat": 16.47, "lon": 107.6 }]),
                json!([{ "lat": 1, "lon": 1 }, { "lat": 2, "lon": 1 }, { "lat": 2, "lon": 2 }, { "lat": 1, "lon": 1 }]),
                json!([{ "lat": 1, "lon": 1 }, { "lat": 2, "lon": 1 }, { "lat": 2, "lon": 2 }, { "lat": 3, "lon": 1 }]),
                json!({ "sha256": "ab".repeat(32), "size": 1200, "type": "image/jpeg", "name": "IMG_1.jpg" }),
                json!({ "sha256": "ab".repeat(32), "size": 1200, "type": "audio/ogg" }),
                json!({ "sha256": "ab".repeat(32), "size": 0, "type": "image/jpeg" }),
                json!({ "sha256": "AB".repeat(32), "size": 5, "type": "application/pdf" }),
                json!({ "sha256": "ab".repeat(32), "size": 5, "type": "image/jpeg", "name": "../x" }),
            ];
            for c in &field.choices {
                probes.push(json!(c.code));
                probes.push(json!([c.code]));
            }
            for value in probes {
                let verdict = field.check_value(&value, day).err().map(|v| {
                    json!({
                        "rule": v.rule,
                        "message": format!("{}: {}", v.field, v.en),
                        "message_vi": format!("{}: {}", v.field, v.vi),
                    })
                });
                cases.push(json!({ "field": field_json, "value": value }));
                expected.push(verdict.unwrap_or(Value::Null));
            }
        }
    }
    let got = in_page(
        &browser,
        "done(args[0].map(c => { const v = P.checkValue(c.field, c.value, args[1]);
           return v ? { rule: v.rule, message: v.message, message_vi: v.message_vi } : null; }));",
        vec![json!(cases), json!(day)],
    )
    .await;
    let got = got.as_array().unwrap();
    assert_eq!(got.len(), expected.len());
    for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
        assert_eq!(
            g, e,
            "field {} value {}",
            cases[i]["field"]["name"], cases[i]["value"]
        );
    }
    eprintln!(
        "{} values checked the same on the phone and the server",
        expected.len()
    );

    // Every expression function, parsed from XLSForm's XPath once (by the server's crate),
    // evaluates alike on the phone and on the server.
    let values = json!({
        "x": 7, "age": 18, "name": "Nguyễn Thị Lan", "s": "a c", "many": ["a", "c"],
        "one": "c", "d": 2.5, "t": "12", "neg": -7, "empty": "",
        "dob": "2020-03-01", "at": "2024-05-06T10:30:00+07:00", "@today": "2026-12-03"
    });
    let mut exprs = Vec::new();
    let mut expected_values = Vec::new();
    for text in [
        ". > 0 and . < 10 or . = 99",
        "${age} + ${x} * 2 - -1",
        "${x} mod 3",
        "${neg} mod 3",
        "${x} div 2",
        "string-length(${name})",
        "string-length(.)",
        "if(${age} >= 18, 'adult', 'child')",
        "not(selected(${many}, 'c'))",
        "selected(${one}, 'c')",
        "selected(${s}, 'c')",
        "count-selected(${many})",
        "count-selected(${s})",
        "count-selected(${missing})",
        "regex(${name}, '^Nguy')",
        "regex(${missing}, 'x')",
        "contains(${name}, 'Thị')",
        "starts-with(${name}, 'Ng')",
        "ends-with(${name}, 'Lan')",
        "concat(${name}, ' (', ${age}, ')')",
        "concat(${d}, ${many})",
        "substr(${name}, 0, 6)",
        "substr(${name}, 8)",
        "substr(${name}, 40, 2)",
        "substr(${name}, 4, 2)",
        "round(-2.5)",
        "round(-2.345, 2)",
        "coalesce(${missing}, 'none')",
        "coalesce(${empty}, ${name})",
        "int(${d})",
        "int(-2.5)",
        "int(${t})",
        "number(${t}) + 1",
        "number('x')",
        "number(true())",
        "round(${d})",
        "round(2.345, 2)",
        "string(${x})",
        "${missing} > 3",
        "${missing} = ''",
        "true() and false()",
        "${t} = 12",
        "${t} > 3",
        "${one} = 1",
        "${missing} != ''",
        "${empty} = ${missing}",
        "substr(${name}, -3, 2)",
        "false() or ${missing} > 1",
        "today() - ${dob}",
        "int((today() - ${dob}) div 365.25)",
        "${dob} < today()",
        "date(${at})",
        "date(18000)",
        "date(${dob} + 30)",
        "decimal-date-time(${at})",
        "decimal-date-time(${dob})",
        "format-date(${dob}, '%e/%n/%Y %b %a %y')",
        "format-date-time(${at}, '%H:%M:%S %d-%m')",
        "${missing} + 1",
        "not(${missing})",
        "if(${name}, 1, 0)",
        "${missing} < 3",
        "${missing} != 3",
        "selected-at(${many}, 1)",
        "selected-at(${s}, 0)",
        "selected-at(${many}, 5)",
        "selected-at(${missing}, 0)",
    ] {
        let rule =
            sync_protocol::xpath::parse(text, Some("x")).unwrap_or_else(|e| panic!("{text}: {e}"));
        let lookup = |name: &str| values.get(name).cloned();
        expected_values.push(
            sync_protocol::expr::eval(&rule, &lookup).unwrap_or_else(|e| panic!("{text}: {e}")),
        );
        exprs.push(json!({ "text": text, "rule": rule }));
    }
    let got = in_page(
        &browser,
        "done(args[0].map(e => P.evaluate(e.rule, (n) => args[1][n])));",
        vec![json!(exprs), values.clone()],
    )
    .await;
    for (i, (g, e)) in got
        .as_array()
        .unwrap()
        .iter()
        .zip(&expected_values)
        .enumerate()
    {
        let same = match (g.as_f64(), e.as_f64()) {
            (Some(a), Some(b)) => (a - b).abs() < 1e-9,
            _ => g == e,
        };
        assert!(same, "{}: server {e}, phone {g}", exprs[i]["text"]);
    }
    eprintln!(
        "{} expressions evaluated the same on the phone and the server",
        exprs.len()
    );

    // Derived fields: the phone computes what the server will.
    let seed: u64 = std::env::var("MAM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_241_129);
    eprintln!("derived fields: MAM_SEED={seed}");
    let mut rng = Rng(seed);
    let mut records = Vec::new();
    let mut derived = Vec::new();
    for (raw, form) in forms().into_iter().filter(|(_, f)| !f.derived.is_empty()) {
        for _ in 0..40 {
            let mut fields = BTreeMap::new();
            for f in raw["fields"].as_array().unwrap() {
                if rng.below(5) > 0 {
                    fields.insert(
                        f["name"].as_str().unwrap().to_owned(),
                        json!([{ "value": random_value(&mut rng, f), "dot": [1, 1] }]),
                    );
                }
            }
            let wire = json!({ "id": "01937a4e-8f3c-7d2a-9b1e-5c6d7e8f9a0b", "form": form.id.to_string(),
                "version": form.version, "commune": "19753", "fields": fields });
            let record: Record = serde_json::from_value(wire.clone()).unwrap();
            derived.push(json!(form.derive(&record)));
            records.push(json!({ "form": raw, "record": wire }));
        }
    }
    let got = in_page(
        &browser,
        "done(args[0].map(c => P.derive(c.form, c.record)));",
        vec![json!(records)],
    )
    .await;
    for (i, (g, e)) in got.as_array().unwrap().iter().zip(&derived).enumerate() {
        let same = e.as_object().unwrap().iter().all(|(k, v)| {
            let g = &g[k];
            match (v.as_f64(), g.as_f64()) {
                (Some(a), Some(b)) => (a - b).abs() < 1e-9,
                _ => v == g,
            }
        });
        assert!(
            same,
            "record {i} of {}: server {e}, phone {g}",
            records[i]["form"]["id"]
        );
    }
    eprintln!(
        "{} records derived the same on the phone and the server",
        derived.len()
    );
    browser.quit().await;
}

/// Enrol a phone in the app and wait until it holds the forms.
async fn enrol(browser: &Browser, server: &Server, name: &str, communes: &[&str]) -> u32 {
    let mut args = vec!["device", "enroll", "--name", name, "--json"];
    for c in communes {
        args.push("--commune");
        args.push(c);
    }
    let out: Value = serde_json::from_str(&server.cli(&args)).unwrap();
    let code = out["code"].as_str().unwrap();
    // The QR code's link carries the code: the field comes filled in.
    browser
        .goto(&format!("{}/app/#code={code}", server.url))
        .await;
    assert_eq!(
        browser.attribute_of("#code", "value").await.as_deref(),
        Some(code)
    );
    browser.click_on("form button[type=submit]").await;
    browser.wait_text("#status", "đồng bộ lúc").await;
    let device = in_page(browser, "done(window.mam.state().device);", vec![]).await;
    device.as_u64().unwrap() as u32
}

async fn fill_birth(browser: &Browser, child: &str, born: &str) {
    browser.click_on("#new").await;
    browser
        .click_on("a[data-form=\"birth-registration\"]")
        .await;
    let input = |name: &str| format!("[data-name=\"{name}\"] input, [data-name=\"{name}\"] select");
    browser
        .type_into(&browser.find(&input("child_name")).await, child)
        .await;
    let sex = browser
        .find("[data-name=\"sex\"] select option[value=\"f\"]")
        .await;
    browser.click(&sex).await;
    browser
        .execute_async(
            "const [v, done] = arguments; const el = document.querySelector('[data-name=\"date_of_birth\"] input');
             el.value = v; el.dispatchEvent(new Event('input', { bubbles: true })); done(true);",
            vec![json!(born)],
        )
        .await;
    browser
        .type_into(&browser.find(&input("village")).await, "Thôn 3")
        .await;
}

async fn status_of(browser: &Browser, child: &str) -> String {
    let found = browser
        .execute_async(
            "const [child, done] = arguments;
             const li = Array.from(document.querySelectorAll('li.record[data-status]')).find(e => e.innerText.includes(child));
             done(li ? li.dataset.status || '' : '');",
            vec![json!(child)],
        )
        .await;
    found.as_str().unwrap_or("").to_owned()
}

async fn wait_status(browser: &Browser, child: &str, want: &str) {
    for _ in 0..300 {
        if status_of(browser, child).await == want {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!(
        "{child} never showed as {want}: {}",
        browser.texts("body").await.join("")
    );
}

/// The field stories in headless Chromium at 360×740, against a real `mam`.
pub async fn phone_app_works_offline_and_syncs() {
    let Some(hoa) = crate::browser::start(WIDTH, HEIGHT, "phone-screenshots").await else {
        return;
    };
    let db = Database::fresh(crate::harness::Backend::Sqlite)
        .await
        .unwrap();
    let server = Server::start(&db);
    let base = server.url.clone();

    // The first load is small: every file the app caches, gzip-compressed as served.
    let http = reqwest::Client::builder().no_gzip().build().unwrap();
    let mut total = 0;
    for path in [
        "",
        "app.js",
        "protocol.js",
        "store.js",
        "media.js",
        "app.css",
        "sw.js",
        "manifest.webmanifest",
        "icon.svg",
        "who/wei_by_day.csv",
        "who/len_by_day.csv",
        "who/bmi_by_day.csv",
        "who/wfl_by_length.csv",
        "who/wfh_by_height.csv",
    ] {
        let response = http
            .get(format!("{base}/app/{path}"))
            .header("accept-encoding", "gzip")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "/app/{path}");
        total += response.bytes().await.unwrap().len();
    }
    eprintln!("the app's first load: {total} bytes compressed");
    assert!(
        total < 300 * 1024,
        "first load {total} bytes is over 300 KB"
    );

    // Enrol by the code, then lose the network.
    enrol(&hoa, &server, "Hoa", &["19753", "19750"]).await;
    hoa.screenshot("01-enrolled").await;
    hoa.set_offline(true).await;
    hoa.wait_text("#status", "Không có mạng").await;

    // Fill a birth registration with no network: kept on the phone, pending.
    fill_birth(&hoa, "Lê Thị Bống", "2024-03-01").await;
    hoa.screenshot("02-filling-offline").await;
    hoa.click_on("#save").await;
    wait_status(&hoa, "Lê Thị Bống", "pending").await;

    // A half-typed form survives a reload too: the new record's id is in the address and what
    // was typed is in IndexedDB.
    hoa.click_on("#new").await;
    hoa.click_on("a[data-form=\"birth-registration\"]").await;
    hoa.type_into(
        &hoa.find("[data-name=\"child_name\"] input").await,
        "Đang nhập dở",
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(hoa.url().await.contains("#fill/birth-registration/"));
    hoa.reload().await;
    let mut value = Value::Null;
    for _ in 0..100 {
        value = in_page(
            &hoa,
            "const el = document.querySelector('[data-name=\"child_name\"] input'); done(el ? el.value : null);",
            vec![],
        )
        .await;
        if value == json!("Đang nhập dở") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        value,
        json!("Đang nhập dở"),
        "the draft came back after a reload"
    );
    hoa.goto(&format!("{base}/app/#")).await;

    // Reload with no network: the app opens from its cache, the record is still there.
    hoa.reload().await;
    wait_status(&hoa, "Lê Thị Bống", "pending").await;
    hoa.screenshot("03-offline-after-reload").await;

    // The network comes back: it syncs by itself (the button works too).
    hoa.set_offline(false).await;
    hoa.click_on("#sync").await;
    wait_status(&hoa, "Lê Thị Bống", "synced").await;
    hoa.screenshot("04-synced").await;

    // The office sees it.
    server.cli(&[
        "user",
        "add",
        "--name",
        "xa",
        "--role",
        "commune",
        "--area",
        "19753",
        "--password",
        "mật khẩu đủ dài",
    ]);
    let records = crate::office::signed_in_page(&server, "xa", "/office/records").await;
    assert!(
        records.contains("Lê Thị Bống"),
        "the office lists the phone's record"
    );

    // A value the phone cannot know is wrong: a commune gone by the birth date. Refused, with
    // the server's reason, and correctable. Made offline and opened again before it went, a
    // draft of a record only this phone had: corrected after the refusal, the whole record
    // goes again, with what the draft added.
    hoa.set_offline(true).await;
    fill_birth(&hoa, "Trần Văn Tèo", "2025-08-01").await;
    hoa.click_on("#commune option[value=\"19750\"]").await;
    hoa.click_on("#save").await;
    wait_status(&hoa, "Trần Văn Tèo", "pending").await;
    let teo = record_named(&hoa, "Trần Văn Tèo").await;
    hoa.goto(&format!("{base}/app/#fill/birth-registration/{teo}"))
        .await;
    set_field(&hoa, "notes", "Mở lại trước khi gửi").await;
    wait_draft(
        &hoa,
        "the draft keeps the note",
        &format!("birth-registration/{teo}"),
        "notes",
        "Mở lại trước khi gửi",
    )
    .await;
    hoa.goto(&format!("{base}/app/#")).await;
    hoa.set_offline(false).await;
    hoa.click_on("#sync").await;
    hoa.wait_text("li.record .reason", "không phải là xã/phường")
        .await;
    hoa.screenshot("05-refused").await;
    hoa.click_on("li.record.refused a").await;
    hoa.click_on("#commune option[value=\"19753\"]").await;
    hoa.click_on("#save").await;
    wait_status(&hoa, "Trần Văn Tèo", "synced").await;
    wait_for(
        &hoa,
        "the whole record, with the draft's note, on the server",
        "const r = s.pulled[args[0]]; return r ? [P.valueOf(r, 'child_name'), P.valueOf(r, 'date_of_birth'), P.valueOf(r, 'notes')] : null;",
        vec![json!(teo)],
        json!(["Trần Văn Tèo", "2025-08-01", "Mở lại trước khi gửi"]),
    )
    .await;

    // Two phones edit the same field offline: both end up showing both values.
    let Some(lan) = crate::browser::start(WIDTH, HEIGHT, "phone-screenshots").await else {
        return;
    };
    enrol(&lan, &server, "Lan", &["19753"]).await;
    wait_status(&lan, "Lê Thị Bống", "synced").await;
    let id = record_named(&hoa, "Lê Thị Bống").await;
    hoa.set_offline(true).await;
    lan.set_offline(true).await;
    for (phone, name) in [(&hoa, "Lê Thị Bông"), (&lan, "Lê Thị Bóng")] {
        phone
            .goto(&format!("{base}/app/#fill/birth-registration/{id}"))
            .await;
        let field = phone.find("[data-name=\"child_name\"] input").await;
        phone
            .execute_async(
                "const [v, done] = arguments; const el = document.querySelector('[data-name=\"child_name\"] input');
                 el.value = v; el.dispatchEvent(new Event('input', { bubbles: true })); done(true);",
                vec![json!(name)],
            )
            .await;
        let _ = field;
        phone.click_on("#save").await;
        wait_status(phone, name, "pending").await;
    }
    hoa.set_offline(false).await;
    lan.set_offline(false).await;
    for phone in [&hoa, &lan, &hoa] {
        phone.click_on("#sync").await;
        phone.wait_text("#status", "đồng bộ lúc").await;
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    for (phone, shot) in [(&hoa, "06-conflict-hoa"), (&lan, "07-conflict-lan")] {
        phone.goto(&format!("{base}/app/#record/{id}")).await;
        let text = phone
            .wait_text("[data-field=\"child_name\"]", "Lê Thị Bóng")
            .await;
        assert!(
            text.contains("Lê Thị Bông"),
            "both values on each phone: {text}"
        );
        assert!(text.contains("máy này"), "with whose they are: {text}");
        phone.screenshot(shot).await;
    }
    // The other value is named by its collaborator.
    hoa.goto(&format!("{base}/app/#record/{id}")).await;
    hoa.wait_text("[data-field=\"child_name\"]", "(Lan)").await;
    // Hoa settles on her own value, after saying so; Lan's phone then says whose choice
    // replaced the value she had typed.
    let mine = in_page(
        &hoa,
        "const b = [...document.querySelectorAll('[data-field=\"child_name\"] button.sibling')].find(e => e.textContent.includes('Lê Thị Bông')); b.click(); done(true);",
        vec![],
    )
    .await;
    assert_eq!(mine, json!(true));
    hoa.wait_text(".confirm-settle", "Giá trị còn lại sẽ được thay")
        .await;
    hoa.screenshot("06b-confirm-settle").await;
    hoa.click_on("#confirm-settle").await;
    wait_for(
        &hoa,
        "settled on the phone",
        "return P.isConflicted(P.view(s, args[0]));",
        vec![json!(id)],
        json!(false),
    )
    .await;
    hoa.goto(&format!("{base}/app/#")).await;
    wait_status(&hoa, "Lê Thị Bông", "synced").await;
    lan.goto(&format!("{base}/app/#")).await;
    lan.click_on("#sync").await;
    lan.wait_text("#status", "đồng bộ lúc").await;
    lan.goto(&format!("{base}/app/#record/{id}")).await;
    // Who chose, and when (the server's time of receipt, asked for once and kept).
    let said = lan
        .wait_text(
            "[data-field=\"child_name\"] .replaced",
            "“Lê Thị Bóng” đã được thay bằng “Lê Thị Bông” (Hoa, lúc ",
        )
        .await;
    let today = in_page(
        &lan,
        "done(P.dayText(new Date().toLocaleDateString('sv-SE')));",
        vec![],
    )
    .await;
    assert!(
        said.contains(&format!("ngày {})", today.as_str().unwrap())),
        "{said}"
    );
    lan.screenshot("07b-replaced").await;
    // Offline after a reload, the phone still says when.
    lan.set_offline(true).await;
    lan.reload().await;
    lan.wait_text("[data-field=\"child_name\"] .replaced", "(Hoa, lúc ")
        .await;
    lan.set_offline(false).await;

    // Fifty records entered offline go in one request.
    hoa.goto(&format!("{base}/app/#")).await;
    hoa.set_offline(true).await;
    in_page(
        &hoa,
        "for (let i = 0; i < 50; i++) await window.mam.createRecord('birth-registration', 1, '19753',
           { child_name: 'Bé số ' + i, sex: 'm', date_of_birth: '2024-05-01', village: 'Thôn 1' });
         window.mam.pushes.length = 0; done(true);",
        vec![],
    )
    .await;
    hoa.set_offline(false).await;
    hoa.click_on("#sync").await;
    // The list shows a page at a time: the last of them is found by name.
    search(&hoa, "Bé số 49").await;
    wait_status(&hoa, "Bé số 49", "synced").await;
    let pushes = in_page(&hoa, "done(window.mam.pushes);", vec![]).await;
    assert_eq!(
        pushes[0],
        json!(50),
        "fifty pending records in one request: {pushes}"
    );
    hoa.screenshot("08-fifty-synced").await;
    hoa.quit().await;
    lan.quit().await;
}

const R1: &str = "01937a4e-0000-7000-8000-000000000001";
const R2: &str = "01937a4e-0000-7000-8000-000000000002";
const R3: &str = "01937a4e-0000-7000-8000-000000000003";
const R4: &str = "01937a4e-0000-7000-8000-000000000004";
const R5: &str = "01937a4e-0000-7000-8000-000000000005";
const DAY_MS: i64 = 24 * 3600 * 1000;

/// One sibling of a field: its value and its dot's device and seq.
type Sibling = (Value, u32, u64);

/// A record as the server sends it: per field, its siblings.
fn wire_record(id: &str, fields: &[(&str, &[Sibling])]) -> Value {
    let fields: serde_json::Map<String, Value> = fields
        .iter()
        .map(|(name, siblings)| {
            let siblings: Vec<Value> = siblings
                .iter()
                .map(|(value, device, seq)| json!({ "value": value, "dot": [device, seq] }))
                .collect();
            (name.to_string(), json!(siblings))
        })
        .collect();
    json!({ "id": id, "form": "birth-registration", "version": 1, "commune": "19753", "fields": fields })
}

/// A sync response: `acked_through`, `next_seq`, the page and its place.
struct Reply {
    acked: u64,
    next: u64,
    cursor: u64,
    epoch: &'static str,
    records: Vec<Value>,
    rejected: Vec<Value>,
    more: bool,
    reset: bool,
}

impl Reply {
    fn new(acked: u64, cursor: u64, epoch: &'static str) -> Reply {
        Reply {
            acked,
            next: acked + 1,
            cursor,
            epoch,
            records: vec![],
            rejected: vec![],
            more: false,
            reset: false,
        }
    }

    fn step(self) -> Value {
        let mut response = json!({
            "protocol": 1, "acked_through": self.acked, "rejected": self.rejected,
            "records": self.records, "evicted": [], "cursor": self.cursor, "more": self.more,
            "forms": { "birth-registration": 1 }, "epoch": self.epoch, "next_seq": self.next,
        });
        if self.reset {
            response["reset"] = json!(true);
        }
        json!({ "op": "response", "response": response })
    }
}

/// What the phone shows and holds after each step, for both implementations alike.
fn reference_snapshot(c: &sync_protocol::Client) -> Value {
    json!({
        "device": c.device(),
        "cursor": c.cursor(),
        "epoch": c.epoch(),
        "pending": c.pending(),
        "kept": c.kept().iter().map(|k| json!([k.edit.seq, k.acked_at])).collect::<Vec<_>>(),
        "lost_through": c.lost_through(),
        "successor_needed": c.successor_needed(),
        "rejected": c.rejected().iter().map(|r| json!([r.edit.seq, r.rejection.code.as_str()])).collect::<Vec<_>>(),
        "records": c.records(),
    })
}

/// The steps on the Rust reference client: after each, the request it made (or null) and its
/// snapshot.
fn run_reference(steps: &[Value]) -> Vec<Value> {
    use sync_protocol::{Client, CommuneCode, FormId, RecordId, SyncResponse};
    let mut c = Client::new(7).with_limits(200, 65536);
    let values = |step: &Value| -> Vec<(String, Value)> {
        step["values"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    let mut out = Vec::new();
    for step in steps {
        let mut request = Value::Null;
        let id = || RecordId::parse(step["id"].as_str().unwrap()).unwrap();
        match step["op"].as_str().unwrap() {
            "now" => c.set_now(step["ms"].as_i64().unwrap()),
            "create" => {
                let v = values(step);
                c.create(
                    id(),
                    &FormId::parse("birth-registration").unwrap(),
                    1,
                    &CommuneCode::parse("19753").unwrap(),
                    v.iter().map(|(k, v)| (k.as_str(), v.clone())),
                );
            }
            "edit" => {
                let v = values(step);
                c.edit(id(), v.iter().map(|(k, v)| (k.as_str(), v.clone())))
                    .expect("the reference client holds the record");
            }
            "request" => request = json!(c.sync_request()),
            "response" => {
                let response: SyncResponse =
                    serde_json::from_value(step["response"].clone()).unwrap();
                c.apply_response(&response);
            }
            "successor" => c.adopt_successor(step["device"].as_u64().unwrap() as u32),
            other => panic!("no step {other}"),
        }
        out.push(json!({ "request": request, "state": reference_snapshot(&c) }));
    }
    out
}

/// The same steps on the app's protocol.js, in the page.
const RUN_IN_PAGE: &str = "
    const s = P.newState(7); const out = [];
    const snap = () => ({ device: s.device, cursor: s.cursor, epoch: s.epoch, pending: s.pending,
      kept: s.kept.map(k => [k.edit.seq, k.acked_at]), lost_through: s.lost_through,
      successor_needed: s.successor_needed, rejected: s.rejected.map(r => [r.edit.seq, r.rejection.code]),
      records: P.records(s) });
    for (const st of args[0]) {
      let request = null;
      switch (st.op) {
        case 'now': P.setNow(s, st.ms); break;
        case 'create': P.create(s, st.id, 'birth-registration', 1, '19753', st.values); break;
        case 'edit': if (P.edit(s, st.id, st.values) === null) throw new Error('no record ' + st.id); break;
        case 'request': request = P.syncRequest(s, 200, 65536); break;
        case 'response': P.applyResponse(s, st.response); break;
        case 'successor': P.adoptSuccessor(s, st.device); break;
        default: throw new Error('no step ' + st.op);
      }
      out.push(JSON.parse(JSON.stringify({ request, state: snap() })));
    }
    done(out);";

/// protocol.js against the Rust reference client (`sync-protocol/src/client.rs`), step by step
/// through a phone's life: refusals, paged pulls, a reused seq and the successor number it
/// takes, a pull from the start, acknowledged edits kept for 30 days, a restore that lost some
/// of them. Then the rules one by one: exact covering, renaming on a successor, reset pages,
/// replay after `next_seq` drops, with `lost_through`.
pub async fn phone_protocol_follows_the_reference_client() {
    let Some(browser) = crate::browser::start(WIDTH, HEIGHT, "phone-screenshots").await else {
        return;
    };
    let db = Database::fresh(crate::harness::Backend::Sqlite)
        .await
        .unwrap();
    let server = Server::start(&db);
    browser.goto(&format!("{}/app/", server.url)).await;

    let t0 = 1_700_000_000_000i64;
    let create = |id: &str, values: Value| json!({ "op": "create", "id": id, "values": values });
    let edit = |id: &str, values: Value| json!({ "op": "edit", "id": id, "values": values });
    let request = json!({ "op": "request" });
    let now = |ms: i64| json!({ "op": "now", "ms": ms });
    let steps = vec![
        now(t0),
        create(R1, json!({ "child_name": "An", "sex": "m" })),
        create(R2, json!({ "child_name": "Bình" })),
        request.clone(),
        // Made while the request was on its way: not in it, so not acknowledged by it.
        create(R3, json!({ "child_name": "Chi" })),
        Reply {
            records: vec![wire_record(
                R1,
                &[
                    ("child_name", &[(json!("An"), 7, 1)]),
                    ("sex", &[(json!("m"), 7, 1)]),
                ],
            )],
            more: true,
            ..Reply::new(2, 10, "e1")
        }
        .step(),
        edit(R1, json!({ "child_name": "Ân" })),
        edit(R1, json!({ "child_name": "Ẩn" })),
        request.clone(),
        Reply {
            rejected: vec![
                json!({ "seq": 3, "code": "invalid_value", "field": "child_name",
                "message": "child_name: no" }),
            ],
            records: vec![
                wire_record(
                    R1,
                    &[
                        ("child_name", &[(json!("Ẩn"), 7, 5), (json!("Lan"), 9, 2)]),
                        ("sex", &[(json!("m"), 7, 1)]),
                    ],
                ),
                wire_record(R2, &[("child_name", &[(json!("Bình"), 7, 2)])]),
            ],
            ..Reply::new(5, 20, "e1")
        }
        .step(),
        now(t0 + 10 * DAY_MS),
        edit(R2, json!({ "village": "Thôn 2" })),
        edit(R2, json!({ "village": "Thôn 3" })),
        edit(R1, json!({ "child_name": "Ấn" })),
        request.clone(),
        // Another history holds seqs 6 and 7 of this number: both refused as reused, the push
        // stops there, and seq 8 is not acknowledged.
        Reply {
            rejected: vec![
                json!({ "seq": 6, "code": "seq_reused", "message": "reused" }),
                json!({ "seq": 7, "code": "seq_reused", "message": "reused" }),
            ],
            ..Reply::new(7, 20, "e1")
        }
        .step(),
        request.clone(),
        json!({ "op": "successor", "device": 23 }),
        request.clone(),
        // The database was restored: the pull starts again over two pages.
        Reply {
            records: vec![wire_record(R1, &[("child_name", &[(json!("Lan"), 9, 2)])])],
            more: true,
            reset: true,
            ..Reply::new(3, 4, "e2")
        }
        .step(),
        Reply {
            records: vec![wire_record(R5, &[("child_name", &[(json!("Dung"), 9, 3)])])],
            reset: true,
            ..Reply::new(3, 7, "e2")
        }
        .step(),
        now(t0 + 30 * DAY_MS),
        create(R4, json!({ "child_name": "Em" })),
        request.clone(),
        Reply {
            records: vec![wire_record(R4, &[("child_name", &[(json!("Em"), 23, 4)])])],
            ..Reply::new(4, 8, "e2")
        }
        .step(),
        // Past 30 days for the edits acknowledged at day 10: no longer kept.
        now(t0 + 41 * DAY_MS),
        Reply::new(4, 8, "e2").step(),
        edit(R4, json!({ "village": "Thôn 4" })),
        request.clone(),
        // Restored from a backup that had this number's seqs up to 1 only: seq 4 is kept and
        // goes again, 2 and 3 are declared lost.
        Reply {
            records: vec![wire_record(R5, &[("child_name", &[(json!("Dung"), 9, 3)])])],
            reset: true,
            ..Reply::new(1, 3, "e3")
        }
        .step(),
        request.clone(),
        Reply::new(5, 5, "e3").step(),
        request.clone(),
    ];
    let expected = run_reference(&steps);
    let got = in_page(&browser, RUN_IN_PAGE, vec![json!(steps)]).await;
    let got = got.as_array().unwrap();
    assert_eq!(got.len(), expected.len());
    for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
        assert_eq!(
            g, e,
            "step {i} ({}): protocol.js differs from the reference client",
            steps[i]
        );
    }
    // Landmarks of that story, as the app's code reached them.
    let at = |i: usize| &got[i];
    let pushed = |i: usize| -> Vec<u64> {
        at(i)["request"]["push"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["seq"].as_u64().unwrap())
            .collect()
    };
    let pending = |i: usize| -> Vec<u64> {
        at(i)["state"]["pending"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["seq"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(pending(5), [3], "an edit the request did not carry stays");
    assert_eq!(pending(15), [6, 7, 8], "a reused seq and what follows stay");
    assert_eq!(at(15)["state"]["successor_needed"], json!(true));
    assert!(pushed(16).is_empty(), "nothing pushed before a successor");
    let renumbered = &at(17)["state"]["pending"];
    assert_eq!(at(17)["state"]["device"], json!(23));
    assert_eq!(
        renumbered[1]["fields"]["village"]["supersedes"],
        json!([[23, 1]]),
        "a pending edit's own dot is renamed"
    );
    assert_eq!(
        renumbered[2]["fields"]["child_name"]["supersedes"],
        json!([[7, 5], [9, 2]]),
        "acknowledged dots keep their names"
    );
    assert_eq!(
        pushed(18),
        [1, 2, 3],
        "renumbered from 1 under the successor"
    );
    let ids = |i: usize| -> Vec<String> {
        at(i)["state"]["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect()
    };
    // After the reset's first page: R1 as pulled again, R2 as its acknowledged edits make it
    // until the pull is over.
    assert_eq!(ids(19), [R1, R2]);
    assert_eq!(
        at(19)["state"]["cursor"],
        json!(4),
        "the reset's cursor, not the max"
    );
    assert_eq!(ids(20), [R1, R5], "the next page adds, it does not clear");
    assert_eq!(at(26)["state"]["kept"], json!([[4, t0 + 30 * DAY_MS]]));
    assert_eq!(
        pending(29),
        [4, 5],
        "the kept edit goes back under its own seq"
    );
    assert_eq!(at(30)["request"]["lost_through"], json!(3));
    assert_eq!(pushed(30), [4, 5]);
    assert_eq!(at(30)["request"]["epoch"], json!("e3"));
    assert_eq!(at(32)["request"].get("lost_through"), None);
    assert_eq!(at(32)["state"]["kept"].as_array().unwrap().len(), 2);

    // The rules one at a time.
    let rules = in_page(
        &browser,
        "const sib = (value, d, s) => ({ value, dot: [d, s] });
         // Exact covering: only the dots named go, not every lower seq of the same device.
         const covered = P.applyWrite([sib('a', 7, 3), sib('b', 7, 5), sib('c', 7, 9), sib('d', 8, 1)],
           [7, 10], 'e', [[7, 5], [8, 1]]);
         // Successor: own pending dots renamed, others kept; drafts get the same names.
         const s = P.newState(7);
         s.pulled['r'] = { id: 'r', form: 'f', version: 1, commune: '19753', fields: { x: [sib('old', 3, 4)] } };
         s.next_seq = 12;
         P.edit(s, 'r', { x: 'one' });
         P.edit(s, 'r', { x: 'two', y: 'y' });
         s.kept = [{ edit: { seq: 3 }, acked_at: 1 }];
         const rename = P.adoptSuccessor(s, 23);
         const successor = { seqs: s.pending.map(e => e.seq), x: s.pending.map(e => e.fields.x.supersedes),
           next_seq: s.next_seq, kept: s.kept.length, device: s.device, draft: [[7, 13], [3, 4], [7, 2]].map(rename) };
         // Reset pages: the first drops every pulled record, pending edits stay, the cursor is
         // the response's.
         const t = P.newState(5);
         t.pulled = { a: { id: 'a', fields: {} }, b: { id: 'b', fields: {} } };
         t.cursor = 900;
         P.create(t, 'c', 'f', 1, '19753', { x: 1 });
         const page = (records, cursor, more) => ({ protocol: 1, acked_through: 0, rejected: [], records,
           evicted: [], cursor, more, forms: {}, epoch: 'new', next_seq: 1, reset: true });
         const first = P.applyResponse(t, page([{ id: 'a', fields: {} }], 3, true));
         const afterFirst = { pulled: Object.keys(t.pulled).sort(), cursor: t.cursor, cleared: first.cleared };
         const second = P.applyResponse(t, page([{ id: 'd', fields: {} }], 6, false));
         const reset = { first: afterFirst, pulled: Object.keys(t.pulled).sort(), cursor: t.cursor,
           cleared: second.cleared, pending: t.pending.length, epoch: t.epoch };
         // Replay: the server expects 3 again; 3 and 4 are no longer kept, 5 and 6 are.
         const u = P.newState(5);
         P.setNow(u, 1000);
         for (let i = 1; i <= 6; i++) P.create(u, 'r' + i, 'f', 1, '19753', { x: i });
         P.syncRequest(u);
         P.applyResponse(u, { protocol: 1, acked_through: 6, rejected: [], records: [], evicted: [],
           cursor: 1, more: false, forms: {}, epoch: 'e', next_seq: 7 });
         u.kept = u.kept.filter(k => k.edit.seq < 3 || k.edit.seq > 4);
         P.applyResponse(u, { protocol: 1, acked_through: 2, rejected: [], records: [], evicted: [],
           cursor: 1, more: false, forms: {}, epoch: 'f', next_seq: 3 });
         const again = P.syncRequest(u);
         const replay = { pending: u.pending.map(e => e.seq), lost_through: again.lost_through,
           push: again.push.map(e => e.seq), kept: u.kept.map(k => k.edit.seq) };
         // Only what a request carried is acknowledged by its response: an edit made while it
         // was on its way, under a seq the server says it consumed, was another history's.
         const w = P.newState(5);
         P.create(w, 'a', 'f', 1, '19753', { x: 1 });
         P.syncRequest(w);
         P.create(w, 'b', 'f', 1, '19753', { x: 2 });
         P.applyResponse(w, { protocol: 1, acked_through: 2, rejected: [], records: [], evicted: [],
           cursor: 1, more: false, forms: {}, epoch: 'e', next_seq: 3 });
         const unsent = { pending: w.pending.map(e => e.seq), kept: w.kept.map(k => k.edit.seq),
           successor_needed: w.successor_needed };
         done({ covered, successor, reset, replay, unsent });",
        vec![],
    )
    .await;
    assert_eq!(
        rules["covered"],
        json!([
            { "value": "a", "dot": [7, 3] },
            { "value": "c", "dot": [7, 9] },
            { "value": "e", "dot": [7, 10] },
        ]),
        "a write removes exactly the siblings it supersedes"
    );
    assert_eq!(
        rules["successor"],
        json!({ "seqs": [1, 2], "x": [[[3, 4]], [[23, 1]]], "next_seq": 3, "kept": 0,
                "device": 23, "draft": [[23, 2], [3, 4], [7, 2]] })
    );
    assert_eq!(
        rules["reset"],
        json!({ "first": { "pulled": ["a"], "cursor": 3, "cleared": true },
                "pulled": ["a", "d"], "cursor": 6, "cleared": false, "pending": 1, "epoch": "new" })
    );
    assert_eq!(
        rules["replay"],
        json!({ "pending": [5, 6], "lost_through": 4, "push": [5, 6], "kept": [1, 2] })
    );
    assert_eq!(
        rules["unsent"],
        json!({ "pending": [2], "kept": [1], "successor_needed": true }),
        "an edit the request did not carry stays pending"
    );
    browser.quit().await;
}

/// Set a text or date input of the form being filled, as typing into it does.
async fn set_field(browser: &Browser, name: &str, value: &str) {
    browser.find(&format!("[data-name=\"{name}\"] input")).await;
    browser
        .execute_async(
            "const [name, v, done] = arguments; const el = document.querySelector(`[data-name=\"${name}\"] input`);
             el.value = v; el.dispatchEvent(new Event('input', { bubbles: true })); done(true);",
            vec![json!(name), json!(value)],
        )
        .await;
}

/// Wait until the script `body` (which sees `P`, the state `s` and `args`) gives `want`.
async fn wait_for(browser: &Browser, what: &str, body: &str, args: Vec<Value>, want: Value) {
    let script = format!("const s = window.mam.state(); done(await (async () => {{ {body} }})());");
    let mut got = Value::Null;
    for _ in 0..300 {
        got = in_page(browser, &script, args.clone()).await;
        if got == want {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("{what}: {got}, not {want}");
}

/// The id of the record the phone shows for the child named `name`.
async fn record_named(browser: &Browser, name: &str) -> String {
    let id = in_page(
        browser,
        "done(P.records(window.mam.state()).find(r => P.valueOf(r, 'child_name') === args[0]).id);",
        vec![json!(name)],
    )
    .await;
    id.as_str().unwrap().to_owned()
}

/// Wait until the draft stored under `key` holds `value` for `field`.
async fn wait_draft(browser: &Browser, what: &str, key: &str, field: &str, value: &str) {
    wait_for(
        browser,
        what,
        "const d = await window.mam.store.get('drafts', args[0]); return d ? d.values[args[1]] : null;",
        vec![json!(key), json!(field)],
        json!(value),
    )
    .await;
}

fn values_of(record: &Record, field: &str) -> Vec<Value> {
    record
        .fields
        .get(field)
        .map(|r| r.values().cloned().collect())
        .unwrap_or_default()
}

/// A draft writes what the person changed, superseding what the form showed when it was
/// opened: phone A opens a record and types a note (kept as a draft); phone B changes the
/// mother's name, and the father's, which A changes too; A syncs, reopens its draft, changes
/// the father's name and saves. The mother's name stays B's, the father's holds both values as
/// a conflict, the note is A's.
pub async fn phone_drafts_write_only_what_the_person_changed() {
    let Some(a) = crate::browser::start(WIDTH, HEIGHT, "phone-screenshots").await else {
        return;
    };
    let db = Database::fresh(crate::harness::Backend::Sqlite)
        .await
        .unwrap();
    let server = Server::start(&db);
    let base = server.url.clone();

    let mut b = server.enroll("Bình", &["19753"]).await;
    let id = b.create(
        "19753",
        &[
            ("child_name", json!("Phạm Văn Dũng")),
            ("mother_name", json!("Mẹ cũ")),
            ("father_name", json!("Cha cũ")),
        ],
    );
    b.sync().await;

    enrol(&a, &server, "An", &["19753"]).await;
    wait_status(&a, "Phạm Văn Dũng", "synced").await;

    // A opens the record and types a note: a draft, not yet an edit.
    let draft_key = format!("birth-registration/{id}");
    a.goto(&format!("{base}/app/#fill/birth-registration/{id}"))
        .await;
    set_field(&a, "notes", "Ghi chú của An").await;
    wait_draft(
        &a,
        "the draft keeps the note",
        &draft_key,
        "notes",
        "Ghi chú của An",
    )
    .await;
    a.goto(&format!("{base}/app/#")).await;

    // Meanwhile B changes the mother's and the father's names.
    b.edit(
        id,
        &[
            ("mother_name", json!("Mẹ mới")),
            ("father_name", json!("Cha của Bình")),
        ],
    );
    b.sync().await;

    // A syncs and sees B's values, then reopens its draft and changes the father's name.
    a.click_on("#sync").await;
    wait_for(
        &a,
        "A pulled B's edit",
        "return P.valueOf(P.view(s, args[0]), 'mother_name');",
        vec![json!(id.to_string())],
        json!("Mẹ mới"),
    )
    .await;
    a.goto(&format!("{base}/app/#fill/birth-registration/{id}"))
        .await;
    wait_for(
        &a,
        "the draft came back",
        "const el = document.querySelector('[data-name=\"notes\"] input'); return el ? el.value : null;",
        vec![],
        json!("Ghi chú của An"),
    )
    .await;
    set_field(&a, "father_name", "Cha của An").await;
    a.screenshot("09-draft-reopened").await;
    a.click_on("#save").await;
    a.find("#sync").await;
    a.click_on("#sync").await;
    wait_for(
        &a,
        "A's edit acknowledged",
        "return s.pending.length;",
        vec![],
        json!(0),
    )
    .await;

    // What the server holds, as B pulls it.
    b.sync().await;
    let record = b.view(id);
    assert_eq!(
        values_of(&record, "mother_name"),
        [json!("Mẹ mới")],
        "a field only B changed keeps B's value"
    );
    let mut fathers = values_of(&record, "father_name");
    fathers.sort_by_key(|v| v.to_string());
    assert_eq!(
        fathers,
        [json!("Cha của An"), json!("Cha của Bình")],
        "a field both changed is a conflict with both values"
    );
    assert_eq!(values_of(&record, "notes"), [json!("Ghi chú của An")]);
    assert_eq!(values_of(&record, "child_name"), [json!("Phạm Văn Dũng")]);

    // A shows the conflict with both values.
    a.goto(&format!("{base}/app/#")).await;
    wait_status(&a, "Phạm Văn Dũng", "conflict").await;
    a.goto(&format!("{base}/app/#record/{id}")).await;
    let text = a
        .wait_text("[data-field=\"father_name\"]", "Cha của Bình")
        .await;
    assert!(text.contains("Cha của An"), "both values on A: {text}");
    a.screenshot("10-draft-conflict").await;
    a.quit().await;
}

/// A draft of a record, opened before the server is restored from a backup made before that
/// record existed, and saved while the record is off the phone (the restored server has not
/// got it back yet from its author). It is still an edit of that record, of the field the
/// person changed alone. Once the author's phone sends the record back, that field holds both
/// values for a person to settle (the restored server never received the value the draft
/// replaced, so it keeps both, as the README says), and every field the draft left alone
/// holds the author's value, with no conflict.
pub async fn phone_draft_outlives_a_restored_server() {
    let Some(a) = crate::browser::start(WIDTH, HEIGHT, "phone-screenshots").await else {
        return;
    };
    let db = Database::fresh(crate::harness::Backend::Sqlite)
        .await
        .unwrap();
    let mut server = Server::start(&db);
    let base = server.url.clone();
    enrol(&a, &server, "An", &["19753"]).await;
    let mut b = server.enroll("Bình", &["19753"]).await;
    let backup = db.scratch("before-the-record.backup");
    crate::recovery::back_up(&server, &db, &backup);

    let id = b.create(
        "19753",
        &[
            ("child_name", json!("Phạm Văn Dũng")),
            ("mother_name", json!("Mẹ cũ")),
        ],
    );
    b.sync().await;
    a.click_on("#sync").await;
    wait_status(&a, "Phạm Văn Dũng", "synced").await;

    // A opens the record and types the mother's name: a draft, not yet an edit.
    let draft_key = format!("birth-registration/{id}");
    a.goto(&format!("{base}/app/#fill/birth-registration/{id}"))
        .await;
    set_field(&a, "mother_name", "Mẹ của An").await;
    wait_draft(
        &a,
        "the draft keeps the name",
        &draft_key,
        "mother_name",
        "Mẹ của An",
    )
    .await;
    a.goto(&format!("{base}/app/#")).await;

    // The server is put back to the backup, on the same address; A pulls again from the start
    // and the record leaves it.
    server.kill();
    let out = crate::recovery::run(
        crate::harness::mam()
            .args(["restore", backup.to_str().unwrap()])
            .args(&db.args),
    );
    assert!(out.contains("new epoch"), "{out}");
    server.start_again_on_the_same_port();
    assert_eq!(server.url, base);
    a.click_on("#sync").await;
    wait_for(
        &a,
        "the record left A",
        "return P.view(s, args[0]) === null || P.view(s, args[0]) === undefined;",
        vec![json!(id.to_string())],
        json!(true),
    )
    .await;

    // A saves the draft now.
    a.goto(&format!("{base}/app/#fill/birth-registration/{id}"))
        .await;
    wait_for(
        &a,
        "the draft came back",
        "const el = document.querySelector('[data-name=\"mother_name\"] input'); return el ? el.value : null;",
        vec![],
        json!("Mẹ của An"),
    )
    .await;
    a.click_on("#save").await;
    a.find("#sync").await;
    a.click_on("#sync").await;
    wait_for(
        &a,
        "A's edit acknowledged",
        "return s.pending.length;",
        vec![],
        json!(0),
    )
    .await;
    wait_for(
        &a,
        "nothing of A's refused",
        "return s.rejected.length;",
        vec![],
        json!(0),
    )
    .await;
    let sent = in_page(
        &a,
        "const s = window.mam.state(); done(s.kept.map((k) => k.edit).filter((e) => e.record === args[0]));",
        vec![json!(id.to_string())],
    )
    .await;
    assert_eq!(
        sent.as_array().map(Vec::len),
        Some(1),
        "one edit of the record: {sent}"
    );
    assert_eq!(
        sent[0]["fields"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["mother_name"],
        "only what the person changed: {sent}"
    );
    assert_eq!(
        sent[0]["fields"]["mother_name"]["supersedes"],
        json!([[b.device(), 1]]),
        "over the value the draft showed: {sent}"
    );

    // B's phone sends the record back; what the server holds, as B pulls it.
    b.url = server.url.clone();
    b.sync().await;
    b.sync().await;
    let record = b.view(id);
    let mut mothers = values_of(&record, "mother_name");
    mothers.sort_by_key(|v| v.to_string());
    assert_eq!(mothers, [json!("Mẹ cũ"), json!("Mẹ của An")]);
    assert_eq!(values_of(&record, "child_name"), [json!("Phạm Văn Dũng")]);
    assert_eq!(
        record.fields.values().filter(|r| r.is_conflict()).count(),
        1,
        "one field in conflict: {record:?}"
    );
    a.click_on("#sync").await;
    wait_status(&a, "Phạm Văn Dũng", "conflict").await;
    a.quit().await;
}

/// Two tabs of the app on one phone, both offline: each saves a form, then both enter records
/// at once. Every edit of both reaches the server, and each tab shows the other's.
pub async fn phone_two_tabs_keep_each_others_edits() {
    let Some(browser) = crate::browser::start(WIDTH, HEIGHT, "phone-screenshots").await else {
        return;
    };
    let db = Database::fresh(crate::harness::Backend::Sqlite)
        .await
        .unwrap();
    let server = Server::start(&db);
    let base = server.url.clone();
    enrol(&browser, &server, "Hoa", &["19753"]).await;
    let first = browser.tab().await;
    let second = browser.new_tab().await;
    browser.goto(&format!("{base}/app/#")).await;
    browser.find("#sync").await;
    for tab in [&first, &second] {
        browser.switch_to(tab).await;
        browser.set_offline(true).await;
        browser.wait_text("#status", "Không có mạng").await;
    }

    // Each tab saves a form; the other tab's copy of the state was read before.
    for (tab, child) in [(&first, "Tab Một"), (&second, "Tab Hai")] {
        browser.switch_to(tab).await;
        browser.goto(&format!("{base}/app/#")).await;
        fill_birth(&browser, child, "2024-02-01").await;
        browser.click_on("#save").await;
        wait_status(&browser, child, "pending").await;
    }
    // The first tab shows the second's record without a reload.
    browser.switch_to(&first).await;
    wait_status(&browser, "Tab Hai", "pending").await;
    wait_status(&browser, "Tab Một", "pending").await;

    // Both enter records as fast as they can, at the same time.
    let burst = "window.mam.burst = (async () => { let n = 0; const end = Date.now() + 2000;
                   while (Date.now() < end) { await window.mam.createRecord('birth-registration', 1, '19753',
                     { child_name: args[0] + ' ' + n, sex: 'm', date_of_birth: '2024-05-01', village: 'Thôn 1' }); n++; }
                   return n; })(); done(true);";
    for (tab, prefix) in [(&first, "Một"), (&second, "Hai")] {
        browser.switch_to(tab).await;
        in_page(&browser, burst, vec![json!(prefix)]).await;
    }
    let mut made = 2;
    for tab in [&first, &second] {
        browser.switch_to(tab).await;
        let n = in_page(&browser, "done(await window.mam.burst);", vec![]).await;
        made += n.as_u64().unwrap();
    }
    eprintln!("two tabs made {made} records at once");
    for tab in [&first, &second] {
        browser.switch_to(tab).await;
        wait_for(
            &browser,
            "every edit of both tabs pending",
            "return s.pending.length;",
            vec![],
            json!(made),
        )
        .await;
    }

    // Online again: one sync sends everything, and the other tab sees it was sent.
    for tab in [&first, &second] {
        browser.switch_to(tab).await;
        browser.set_offline(false).await;
    }
    browser.switch_to(&first).await;
    browser.click_on("#sync").await;
    wait_for(
        &browser,
        "all sent",
        "return s.pending.length;",
        vec![],
        json!(0),
    )
    .await;
    browser.switch_to(&second).await;
    wait_for(
        &browser,
        "the other tab sees them sent",
        "return s.pending.length;",
        vec![],
        json!(0),
    )
    .await;

    let mut office = server.enroll("Văn phòng", &["19753"]).await;
    office.sync().await;
    let records = office.client.records();
    assert_eq!(
        records.len() as u64,
        made,
        "every record of both tabs on the server"
    );
    for child in ["Tab Một", "Tab Hai"] {
        office.named(child);
    }
    browser.quit().await;
}

/// A phone whose seqs another history used (its data copied to another phone, which synced
/// first) takes a successor number: its pending edit goes under the new number, its token is
/// the new one, and a draft it kept names its own edit by the new dot, so that saving it settles
/// the field instead of leaving the value it replaced beside it.
pub async fn phone_takes_a_successor_when_its_seqs_were_used() {
    let Some(a) = crate::browser::start(WIDTH, HEIGHT, "phone-screenshots").await else {
        return;
    };
    let db = Database::fresh(crate::harness::Backend::Sqlite)
        .await
        .unwrap();
    let server = Server::start(&db);
    let base = server.url.clone();
    let device = enrol(&a, &server, "Mai", &["19753"]).await;
    let auth = in_page(
        &a,
        "done(await window.mam.store.get('meta', 'auth'));",
        vec![],
    )
    .await;

    // Offline, the phone enters a record and starts changing it: a pending edit and a draft
    // that shows it.
    a.set_offline(true).await;
    a.wait_text("#status", "Không có mạng").await;
    fill_birth(&a, "Lý Thị Mai", "2024-04-01").await;
    a.click_on("#save").await;
    wait_status(&a, "Lý Thị Mai", "pending").await;
    let id = record_named(&a, "Lý Thị Mai").await;
    a.goto(&format!("{base}/app/#fill/birth-registration/{id}"))
        .await;
    set_field(&a, "village", "Thôn 9").await;
    wait_for(
        &a,
        "the draft shows the phone's own pending edit",
        "const d = await window.mam.store.get('drafts', args[0]); return d && d.values.village === 'Thôn 9' ? d.dots.village : null;",
        vec![json!(format!("birth-registration/{id}"))],
        json!([[device, 1]]),
    )
    .await;
    a.goto(&format!("{base}/app/#")).await;

    // A copy of the phone, under the same number and token, syncs first.
    let mut copy = crate::harness::Phone {
        client: sync_protocol::Client::new(device),
        token: auth["token"].as_str().unwrap().to_owned(),
        http: reqwest::Client::new(),
        url: base.clone(),
    };
    copy.create("19753", &[("child_name", json!("Bản sao"))]);
    copy.sync().await;

    // The phone syncs: its seq 1 is refused as reused, it takes a successor and sends again.
    a.set_offline(false).await;
    a.click_on("#sync").await;
    wait_for(
        &a,
        "a successor number, its token kept, nothing pending",
        "const auth = await window.mam.store.get('meta', 'auth');
         return [s.device !== args[0], auth.device === s.device, auth.token !== args[1], s.pending.length];",
        vec![json!(device), auth["token"].clone()],
        json!([true, true, true, 0]),
    )
    .await;
    let successor = in_page(&a, "done(window.mam.state().device);", vec![]).await;
    wait_status(&a, "Lý Thị Mai", "synced").await;

    // The draft now names the edit by its new dot; saving it settles the village.
    a.goto(&format!("{base}/app/#fill/birth-registration/{id}"))
        .await;
    wait_for(
        &a,
        "the draft came back",
        "const el = document.querySelector('[data-name=\"village\"] input'); return el ? el.value : null;",
        vec![],
        json!("Thôn 9"),
    )
    .await;
    a.click_on("#save").await;
    a.find("#sync").await;
    a.click_on("#sync").await;
    wait_for(
        &a,
        "the draft sent",
        "return s.pending.length;",
        vec![],
        json!(0),
    )
    .await;

    let mut office = server.enroll("Văn phòng", &["19753"]).await;
    office.sync().await;
    let mai = office.view(office.named("Lý Thị Mai"));
    assert_eq!(values_of(&mai, "village"), [json!("Thôn 9")]);
    assert_eq!(
        mai.fields["village"].siblings()[0].dot,
        sync_protocol::Dot::new(successor.as_u64().unwrap() as u32, 2)
    );
    office.named("Bản sao");
    a.quit().await;
}

/// A phone revoked in the office is told so at its next sync (here: when it opens a new
/// enrolment link): it removes the records it holds, sets aside what it never sent, takes the
/// link's code, and after the new enrolment sends what it set aside. The office asks before it
/// revokes.
pub async fn revoked_phone_sets_aside_and_enrols_again() {
    let Some(a) = crate::browser::start(WIDTH, HEIGHT, "phone-screenshots").await else {
        return;
    };
    let db = Database::fresh(crate::harness::Backend::Sqlite)
        .await
        .unwrap();
    let server = Server::start(&db);
    let base = server.url.clone();
    crate::office::add_user(&server, "hue", "district", "474");
    let device = enrol(&a, &server, "Mai", &["19753"]).await;
    fill_birth(&a, "Đã Gửi", "2024-04-01").await;
    a.click_on("#save").await;
    wait_status(&a, "Đã Gửi", "synced").await;
    // Offline, one more record: it never reaches the server before the phone is revoked.
    a.set_offline(true).await;
    a.wait_text("#status", "Không có mạng").await;
    fill_birth(&a, "Chưa Gửi", "2024-05-01").await;
    a.click_on("#save").await;
    wait_status(&a, "Chưa Gửi", "pending").await;

    // The office revokes it: the Phones page links to a page that asks first.
    let mut office = crate::office::Office::new(&server);
    office.login("hue", crate::office::PASSWORD).await;
    let (_, phones) = office.get("/office/phones").await;
    let confirm = format!("/office/phones/{device}/revoke");
    assert!(phones.contains(&format!("href=\"{confirm}\"")), "{phones}");
    assert!(
        !phones.contains(&format!("action=\"{confirm}\"")),
        "no one-click revoke"
    );
    let (status, page) = office.get(&confirm).await;
    assert_eq!(status, 200);
    assert!(page.contains("id=\"revoke-confirm\"") && page.contains("Không hoàn tác được"));
    let csrf = crate::office::hidden(&page, "csrf");
    let response = office.post(&confirm, &[("csrf", csrf.as_str())]).await;
    assert_eq!(response.status(), 303);

    // A new enrolment link, opened while the phone still thinks it is enrolled.
    let out: Value = serde_json::from_str(&server.cli(&[
        "device",
        "enroll",
        "--name",
        "Mai",
        "--commune",
        "19753",
        "--json",
    ]))
    .unwrap();
    let code = out["code"].as_str().unwrap().to_owned();
    a.set_offline(false).await;
    a.goto(&format!("{base}/app/#code={code}")).await;
    a.wait_text("#revoked", "đã bị thu hồi").await;
    a.wait_text("#aside-count", "1 thay đổi").await;
    a.screenshot("30-revoked").await;
    wait_for(
        &a,
        "the records and the token are gone",
        "const records = await window.mam.store.getAll('records');
         const auth = await window.mam.store.get('meta', 'auth');
         return [Object.keys(records).length, auth === undefined || auth === null, s === null];",
        vec![],
        json!([0, true, true]),
    )
    .await;
    assert_eq!(
        a.attribute_of("#code", "value").await.as_deref(),
        Some(code.as_str())
    );
    a.click_on("form button[type=submit]").await;

    // Enrolled again: what was set aside is shown, and sent under the new number.
    a.wait_text("#aside-count", "1 thay đổi").await;
    a.screenshot("31-set-aside").await;
    a.click_on("#resend-aside").await;
    wait_for(
        &a,
        "nothing pending, nothing aside",
        "const aside = await window.mam.store.get('meta', 'aside');
         return [s.device !== args[0], s.pending.length, !aside];",
        vec![json!(device)],
        json!([true, 0, true]),
    )
    .await;
    let mut check = server.enroll("Kiểm tra", &["19753"]).await;
    check.sync().await;
    let names: Vec<String> = check
        .client
        .records()
        .iter()
        .filter_map(|r| {
            r.value("child_name")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .collect();
    assert!(
        names.contains(&"Đã Gửi".to_owned()) && names.contains(&"Chưa Gửi".to_owned()),
        "{names:?}"
    );
}

/// Served over HTTPS with a certificate for a network name (not `localhost`), as a district
/// laptop serves its phones: the page is a secure context, the app installs its service
/// worker, and after going offline a reload opens it from its cache and a record typed then
/// syncs when the network is back. Over plain HTTP from a network name the app says it cannot
/// work offline.
pub async fn phone_app_works_offline_over_https_from_a_network_name() {
    const NAME: &str = "mam-xa.test";
    let dir = std::env::temp_dir().join(format!("mam-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    crate::harness::test_certificate(&cert, &key, NAME);
    // The certificate's public key, as Chromium is told to trust it.
    let spki = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl x509 -in '{}' -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64",
            cert.display()
        ))
        .output()
        .unwrap();
    let spki = String::from_utf8(spki.stdout).unwrap().trim().to_owned();
    let db = Database::fresh(crate::harness::Backend::Sqlite)
        .await
        .unwrap();
    let (cert_text, key_text) = (cert.display().to_string(), key.display().to_string());
    let server = Server::start_with(
        &db,
        &[
            ("MAM__SERVER__TLS_CERT", cert_text.as_str()),
            ("MAM__SERVER__TLS_KEY", key_text.as_str()),
        ],
    );
    assert!(server.url.starts_with("https://"), "{}", server.url);
    let port = server.url.rsplit(':').next().unwrap().to_owned();
    let flags = [
        format!("--host-resolver-rules=MAP {NAME} 127.0.0.1"),
        format!("--ignore-certificate-errors-spki-list={spki}"),
    ];
    let Some(a) = crate::browser::start_with(WIDTH, HEIGHT, "phone-screenshots", &flags).await
    else {
        return;
    };
    let base = format!("https://{NAME}:{port}");
    let out: Value = serde_json::from_str(&server.cli(&[
        "device",
        "enroll",
        "--name",
        "Hà",
        "--commune",
        "19753",
        "--json",
    ]))
    .unwrap();
    a.goto(&format!(
        "{base}/app/#code={}",
        out["code"].as_str().unwrap()
    ))
    .await;
    a.click(&a.find("form button[type=submit]").await).await;
    a.wait_text("#status", "đồng bộ lúc").await;
    wait_for(
        &a,
        "a secure context with the service worker in control, and no warning",
        "await navigator.serviceWorker.ready;
         return [window.isSecureContext, location.hostname, document.getElementById('insecure').hidden];",
        vec![],
        json!([true, NAME, true]),
    )
    .await;
    // The worker controls the page once it is loaded again.
    a.reload().await;
    wait_for(
        &a,
        "the service worker controls the page",
        "return navigator.serviceWorker.controller !== null;",
        vec![],
        json!(true),
    )
    .await;
    a.set_offline(true).await;
    a.reload().await;
    a.wait_text("#status", "Không có mạng").await;
    fill_birth(&a, "Hồ Thị Hà", "2024-06-01").await;
    a.click_on("#save").await;
    wait_status(&a, "Hồ Thị Hà", "pending").await;
    a.screenshot("40-https-offline").await;
    a.set_offline(false).await;
    a.click_on("#sync").await;
    wait_status(&a, "Hồ Thị Hà", "synced").await;

    // The same app over plain HTTP from a network name: not a secure context, and it says so.
    drop(server);
    let plain = Server::start(&db);
    let port = plain.url.rsplit(':').next().unwrap().to_owned();
    a.goto(&format!("http://{NAME}:{port}/app/")).await;
    wait_for(
        &a,
        "the warning shows on a page that is not a secure context",
        "const w = document.getElementById('insecure');
         return [window.isSecureContext, w.hidden, w.textContent.includes('không an toàn')];",
        vec![],
        json!([false, false, true]),
    )
    .await;
    a.screenshot("41-http-warning").await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A form says what is wrong in words a collaborator understands: under each field, all at
/// once on save (the page moving to the first), and one field at a time on leaving it; the
/// form's own words for a pattern, with an example. The office names the field and the rule of
/// a refusal by their labels.
pub async fn phone_form_shows_every_problem_under_its_field() {
    let Some(a) = crate::browser::start(WIDTH, HEIGHT, "phone-screenshots").await else {
        return;
    };
    let db = Database::fresh(crate::harness::Backend::Sqlite)
        .await
        .unwrap();
    let server = Server::start(&db);
    enrol(&a, &server, "Ngọc", &["19753"]).await;
    a.click_on("#new").await;
    a.click_on("a[data-form=\"birth-registration\"]").await;
    a.type_into(
        &a.find("[data-name=\"child_name\"] input").await,
        "Trần Thị Ngọc",
    )
    .await;
    // The card fields show once the card is issued (and the registration fields once the
    // birth is registered); a wrong number is told on leaving it.
    let hidden = in_page(
        &a,
        "done(['bhyt_card_number', 'registration_date'].map(n => document.querySelector(`[data-name=\"${n}\"]`).hidden));",
        vec![],
    )
    .await;
    assert_eq!(hidden, json!([true, true]));
    a.click(
        &a.find("[data-name=\"bhyt_card_issued\"] input[value=\"true\"]")
            .await,
    )
    .await;
    let card = a.find("[data-name=\"bhyt_card_number\"] input").await;
    a.type_into(&card, "12345").await;
    a.click(
        &a.find("[data-name=\"notes\"] input, [data-name=\"notes\"] textarea")
            .await,
    )
    .await;
    let said = a
        .wait_text("#error-bhyt_card_number", "ví dụ TE1464620123456")
        .await;
    assert!(
        !said.contains("[A-Z]") && !said.contains("bhyt_card_number"),
        "{said}"
    );
    // Save: every problem at once, under its field, and the cursor on the first.
    a.click_on("#save").await;
    a.wait_text("#errors", "Có 4 chỗ cần sửa").await;
    a.screenshot("50-problems").await;
    let shown = in_page(
        &a,
        "done([...document.querySelectorAll('.field-error')].map(e => [e.dataset.errorFor, e.textContent]));",
        vec![],
    )
    .await;
    let shown: Vec<(String, String)> = serde_json::from_value(shown).unwrap();
    let fields: Vec<&str> = shown.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(
        fields,
        ["sex", "date_of_birth", "village", "bhyt_card_number"],
        "{shown:?}"
    );
    assert_eq!(shown[0].1, "Chưa nhập Giới tính.");
    let focused = in_page(
        &a,
        "done(document.activeElement.closest('[data-name]')?.dataset.name);",
        vec![],
    )
    .await;
    assert_eq!(focused, json!("sex"));
    // Mending a field takes its message away when it is left.
    a.click(
        &a.find("[data-name=\"sex\"] select option[value=\"f\"]")
            .await,
    )
    .await;
    a.click(
        &a.find("[data-name=\"notes\"] input, [data-name=\"notes\"] textarea")
            .await,
    )
    .await;
    wait_for(
        &a,
        "the mended field's message is gone",
        "return !document.getElementById('error-sex');",
        vec![],
        json!(true),
    )
    .await;

    // The office: a refused edit names its field and rule by their labels.
    let mut phone = server.enroll("Kiểm tra", &["19753"]).await;
    phone.client.create(
        sync_protocol::RecordId::new_v7(),
        &crate::harness::form(),
        1,
        &crate::harness::commune("19753"),
        [("child_name", json!("Thiếu giới tính"))],
    );
    phone.sync().await;
    crate::office::add_user(&server, "xa", "commune", "19753");
    let page = crate::office::signed_in_page(&server, "xa", "/office/rejected").await;
    assert!(
        page.contains("Giá trị không hợp lệ") && page.contains("Giới tính"),
        "{page}"
    );
    assert!(
        page.contains(">bắt buộc<") || page.contains("bắt buộc<br>"),
        "{page}"
    );
    assert!(page.contains("Chưa nhập Giới tính."));
}

/// The phone's list tells two children apart (name, birth date, village, form, state), finds
/// one by name without its marks, filters by state, and lets a draft be thrown away (asking
/// first).
pub async fn phone_list_searches_filters_and_discards_drafts() {
    let Some(a) = crate::browser::start(WIDTH, HEIGHT, "phone-screenshots").await else {
        return;
    };
    let db = Database::fresh(crate::harness::Backend::Sqlite)
        .await
        .unwrap();
    let server = Server::start(&db);
    enrol(&a, &server, "Mai", &["19753"]).await;
    // A village collaborator is offered the forms collaborators collect, not the commune's.
    a.click_on("#new").await;
    a.find("a[data-form=\"birth-registration\"]").await;
    let offered = in_page(
        &a,
        "done([...document.querySelectorAll('a[data-form]')].map(e => e.dataset.form));",
        vec![],
    )
    .await;
    let offered: Vec<String> = serde_json::from_value(offered).unwrap();
    assert!(
        offered.contains(&"birth-registration".to_owned()),
        "{offered:?}"
    );
    assert!(
        !offered.contains(&"commune-annual".to_owned())
            && !offered.contains(&"school-aggregate".to_owned()),
        "{offered:?}"
    );
    a.goto(&format!("{}/app/#", server.url)).await;
    fill_birth(&a, "Nguyễn Thị Lan", "2024-01-05").await;
    a.click_on("#save").await;
    wait_status(&a, "Nguyễn Thị Lan", "synced").await;
    a.set_offline(true).await;
    a.wait_text("#status", "Không có mạng").await;
    fill_birth(&a, "Nguyễn Thị Lan", "2024-03-09").await;
    a.click_on("#save").await;
    fill_birth(&a, "Trần Văn Bình", "2024-02-01").await;
    a.click_on("#save").await;
    wait_status(&a, "Trần Văn Bình", "pending").await;
    // Two children of one name: their birth dates and villages tell them apart.
    let details = a.texts("li.record .details").await;
    assert!(
        details
            .iter()
            .any(|d| d.starts_with("05/01/2024 · Thôn 3 ·")),
        "{details:?}"
    );
    assert!(
        details
            .iter()
            .any(|d| d.starts_with("09/03/2024 · Thôn 3 ·")),
        "{details:?}"
    );
    // A search without the marks finds both Lans, and not Bình.
    a.type_into(&a.find("#search").await, "nguyen thi lan")
        .await;
    wait_for(
        &a,
        "two records found",
        "return document.querySelectorAll('#records li.record').length;",
        vec![],
        json!(2),
    )
    .await;
    a.screenshot("60-search").await;
    // The pending filter: the two made offline.
    // Backspace, as a person clears the box.
    a.type_into(&a.find("#search").await, &"\u{E003}".repeat(20))
        .await;
    a.click(&a.find("#filter option[value=\"pending\"]").await)
        .await;
    wait_for(
        &a,
        "two pending records",
        "return [...document.querySelectorAll('#records li.record')].map(e => e.dataset.status);",
        vec![],
        json!(["pending", "pending"]),
    )
    .await;
    // A draft, thrown away after saying so.
    a.click(&a.find("#filter option[value=\"all\"]").await)
        .await;
    a.click_on("#new").await;
    a.click_on("a[data-form=\"birth-registration\"]").await;
    a.type_into(&a.find("[data-name=\"child_name\"] input").await, "Nhập dở")
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    a.goto(&format!("{}/app/#", server.url)).await;
    a.wait_text("li.record.draft", "Nhập dở").await;
    a.click_on("li.record.draft .discard").await;
    a.click_on("li.record.draft .confirm-discard").await;
    wait_for(
        &a,
        "the draft is gone",
        "const drafts = await window.mam.store.getAll('drafts');
         return [Object.keys(drafts).length, document.querySelectorAll('li.record.draft').length];",
        vec![],
        json!([0, 0]),
    )
    .await;
}

/// The village is a choice among the commune's villages, with "Khác" to type one not listed;
/// either way the record holds the village's name.
pub async fn phone_village_is_a_choice_with_other() {
    let Some(a) = crate::browser::start(WIDTH, HEIGHT, "phone-screenshots").await else {
        return;
    };
    let db = Database::fresh(crate::harness::Backend::Sqlite)
        .await
        .unwrap();
    let server = Server::start(&db);
    let csv = db.scratch("villages.csv");
    std::fs::write(&csv, "commune,village\n19753,Tổ 1\n19753,Tổ 2\n").unwrap();
    server.cli(&["villages", "import", csv.to_str().unwrap()]);
    enrol(&a, &server, "Hạnh", &["19753"]).await;
    for (child, village) in [("Bé Tổ Hai", None), ("Bé Thôn Mới", Some("Thôn Mới"))] {
        a.click_on("#new").await;
        a.click_on("a[data-form=\"birth-registration\"]").await;
        a.type_into(&a.find("[data-name=\"child_name\"] input").await, child)
            .await;
        a.click(
            &a.find("[data-name=\"sex\"] select option[value=\"m\"]")
                .await,
        )
        .await;
        set_field(&a, "date_of_birth", "2024-02-02").await;
        if village.is_none() {
            // Registered: the commune where it was registered is picked by its name.
            a.click(
                &a.find("[data-name=\"birth_registered\"] input[value=\"true\"]")
                    .await,
            )
            .await;
            set_field(&a, "registration_date", "2024-02-20").await;
            let kim_long = a
                .find("[data-name=\"registration_commune\"] select.choice option[value=\"19774\"]")
                .await;
            assert!(a.text(&kim_long).await.contains("Phường Kim Long"));
            a.click(&kim_long).await;
        }
        match village {
            None => {
                a.click(&a.find("select.choice option[value=\"Tổ 2\"]").await)
                    .await
            }
            Some(name) => {
                a.click(&a.find("select.choice option[value=\"__other\"]").await)
                    .await;
                a.type_into(&a.find("input.other").await, name).await;
            }
        }
        a.screenshot("70-village").await;
        a.click_on("#save").await;
        wait_status(&a, child, "synced").await;
    }
    let villages = in_page(
        &a,
        "done(P.records(window.mam.state()).map(r => [P.valueOf(r, 'child_name'), P.valueOf(r, 'village'), P.valueOf(r, 'registration_commune') ?? null]).sort());",
        vec![],
    )
    .await;
    assert_eq!(
        villages,
        json!([
            ["Bé Thôn Mới", "Thôn Mới", null],
            ["Bé Tổ Hai", "Tổ 2", "19774"]
        ])
    );
}

/// "Hồ sơ trẻ" is a picker: the collaborator searches the child register on the phone (by
/// name without its marks, or by birth date), sees enough to tell two children apart, and the
/// record holds the chosen child's record; offline too.
pub async fn phone_reference_is_a_picker() {
    let Some(a) = crate::browser::start(WIDTH, HEIGHT, "phone-screenshots").await else {
        return;
    };
    let db = Database::fresh(crate::harness::Backend::Sqlite)
        .await
        .unwrap();
    let server = Server::start(&db);
    enrol(&a, &server, "Thu", &["19753"]).await;
    let ids = in_page(
        &a,
        "const one = await window.mam.createRecord('child', 1, '19753', { child_name: 'Phan Thị Lan', sex: 'f',
           date_of_birth: '2021-04-04', village: 'Thôn 1', consent_guardian: true });
         const two = await window.mam.createRecord('child', 1, '19753', { child_name: 'Phan Thị Lan', sex: 'f',
           date_of_birth: '2022-09-09', village: 'Thôn 2', consent_guardian: true });
         done([one, two]);",
        vec![],
    )
    .await;
    let second = ids[1].as_str().unwrap().to_owned();
    a.set_offline(true).await;
    a.wait_text("#status", "Không có mạng").await;
    a.goto(&format!("{}/app/#new", server.url)).await;
    a.click_on("a[data-form=\"nutrition\"]").await;
    a.type_into(
        &a.find("[data-name=\"child\"] input.ref-search").await,
        "phan thi lan",
    )
    .await;
    let options = a.texts("[data-name=\"child\"] .ref-option").await;
    assert_eq!(options.len(), 2, "{options:?}");
    assert!(
        options.iter().any(|o| o.contains("09/09/2022 · Thôn 2")),
        "{options:?}"
    );
    a.screenshot("80-reference-picker").await;
    a.click_on(&format!(
        "[data-name=\"child\"] .ref-option[data-record=\"{second}\"]"
    ))
    .await;
    a.wait_text("[data-name=\"child\"] .ref-chosen", "09/09/2022")
        .await;
    let value = in_page(
        &a,
        "done(document.querySelector('[data-name=\"child\"] input.ref-value').value);",
        vec![],
    )
    .await;
    assert_eq!(value, json!(second));
}

/// A form in sections is filled a page at a time: the progress shows which page of how many,
/// a page is not left with a problem on it, a page's questions follow their conditions, and
/// saving on the last page keeps what every page held.
pub async fn phone_form_in_sections_goes_page_by_page() {
    let Some(a) = crate::browser::start(WIDTH, HEIGHT, "phone-screenshots").await else {
        return;
    };
    let db = Database::fresh(crate::harness::Backend::Sqlite)
        .await
        .unwrap();
    let server = Server::start(&db);
    enrol(&a, &server, "Thủy", &["19753"]).await;
    a.click_on("#new").await;
    a.click_on("a[data-form=\"swimming-skills\"]").await;
    a.wait_text("#progress", "Phần 1/4: Trẻ").await;
    let shown = "done([...document.querySelectorAll('.fields > [data-name]')].filter(e => e.offsetParent !== null).map(e => e.dataset.name));";
    assert_eq!(
        in_page(&a, shown, vec![]).await,
        json!(["child_name", "child", "sex", "date_of_birth", "village"])
    );
    let save_shown = "done(document.getElementById('save').offsetParent !== null);";
    assert_eq!(in_page(&a, save_shown, vec![]).await, json!(false));
    a.screenshot("80-section-1").await;
    // The first page's problems keep the person on it, told under the field.
    a.click_on("#page-next").await;
    a.wait_text("#error-child_name", "Chưa nhập").await;
    a.wait_text("#progress", "Phần 1/4").await;
    a.type_into(
        &a.find("[data-name=\"child_name\"] input").await,
        "Lê Văn Bơi",
    )
    .await;
    set_field(&a, "date_of_birth", "2015-06-01").await;
    a.click_on("#page-next").await;
    a.wait_text("#progress", "Phần 2/4: Buổi đánh giá").await;
    set_field(&a, "assessment_date", "2026-06-15").await;
    a.click(
        &a.find("[data-name=\"round\"] select option[value=\"baseline\"]")
            .await,
    )
    .await;
    a.click(
        &a.find("[data-name=\"assessment_method\"] select option[value=\"practical_test\"]")
            .await,
    )
    .await;
    a.click_on("#page-next").await;
    a.wait_text("#progress", "Phần 3/4: Học bơi").await;
    // The lessons' details show once the child took lessons.
    assert_eq!(
        in_page(&a, shown, vec![]).await,
        json!(["attended_swim_class", "water_safety_quiz_score"])
    );
    a.click(
        &a.find("[data-name=\"attended_swim_class\"] input[value=\"true\"]")
            .await,
    )
    .await;
    assert_eq!(
        in_page(&a, shown, vec![]).await,
        json!([
            "attended_swim_class",
            "swim_programme",
            "swim_sessions",
            "water_safety_quiz_score"
        ])
    );
    set_field(&a, "swim_sessions", "12").await;
    // Back and forth keeps what was typed.
    a.click_on("#page-back").await;
    a.wait_text("#progress", "Phần 2/4").await;
    a.click_on("#page-next").await;
    a.click_on("#page-next").await;
    a.wait_text("#progress", "Phần 4/4: Kỹ năng").await;
    assert_eq!(in_page(&a, save_shown, vec![]).await, json!(true));
    set_field(&a, "distance_swum_m", "25").await;
    a.screenshot("81-section-4").await;
    a.click_on("#save").await;
    wait_status(&a, "Lê Văn Bơi", "synced").await;
    let kept = in_page(
        &a,
        "const r = P.records(window.mam.state())[0]; done([r.version, ...['child_name', 'round', 'swim_sessions', 'distance_swum_m'].map(n => P.valueOf(r, n))]);",
        vec![],
    )
    .await;
    assert_eq!(kept, json!([2, "Lê Văn Bơi", "baseline", 12, 25]));
    a.quit().await;
}

/// The phone scores children as WHO's own program does: every child of the oracle (scored by
/// WHO's R package `anthro`) through the app's JavaScript, each of the four z-scores to 0.01
/// and each flag; and random children score the same in the page as in the server's crate.
pub async fn phone_scores_children_as_who_does() {
    let Some(browser) = crate::browser::start(WIDTH, HEIGHT, "phone-screenshots").await else {
        return;
    };
    let db = Database::fresh(crate::harness::Backend::Sqlite)
        .await
        .unwrap();
    let server = Server::start(&db);
    browser.goto(&format!("{}/app/", server.url)).await;
    use sync_protocol::who::{Child, Position, Score, Sex};
    let oracle = crate::who_oracle::rows();
    let children: Vec<Child> = oracle.iter().map(|r| r.child).collect();
    let who: Vec<Vec<Option<(f64, bool)>>> = oracle
        .iter()
        .map(|r| r.who.iter().map(|(_, w)| *w).collect())
        .collect();
    assert_eq!(children.len(), 3000);
    // Random children besides, seeded.
    let seed: u64 = std::env::var("MAM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("phone_scores_children_as_who_does: MAM_SEED={seed}");
    let mut rng = Rng(seed);
    let random: Vec<Child> = (0..2000)
        .map(|_| Child {
            sex: if rng.below(2) == 0 {
                Sex::Boy
            } else {
                Sex::Girl
            },
            age_days: rng.below(1900) as f64,
            weight_kg: Some(1.0 + rng.below(25_000) as f64 / 1000.0),
            lenhei_cm: Some(40.0 + rng.below(85_000) as f64 / 1000.0),
            position: [Some(Position::Lying), Some(Position::Standing), None]
                [rng.below(3) as usize],
            oedema: rng.below(20) == 0,
        })
        .collect();
    let as_js = |c: &Child| {
        json!({
            "boy": c.sex == Sex::Boy, "ageDays": c.age_days, "weightKg": c.weight_kg,
            "lenheiCm": c.lenhei_cm, "oedema": c.oedema,
            "position": match c.position { Some(Position::Lying) => json!("lying"), Some(Position::Standing) => json!("standing"), None => Value::Null },
        })
    };
    let all: Vec<Value> = children.iter().chain(&random).map(as_js).collect();
    let scored = in_page(
        &browser,
        "done(args[0].map(c => ['waz', 'haz', 'whz', 'baz'].map(s => { const z = P.whoScore(s, c); return z ? [z.z, z.flagged] : null; })));",
        vec![json!(all)],
    )
    .await;
    let scored: Vec<Vec<Option<(f64, bool)>>> = serde_json::from_value(scored).unwrap();
    let mut problems = Vec::new();
    for (i, score) in Score::ALL.into_iter().enumerate() {
        let (mut compared, mut largest) = (0, 0.0f64);
        for (row, child) in children.iter().enumerate() {
            match (who[row][i], scored[row][i]) {
                (None, None) => {}
                (Some((wz, wf)), Some((z, f))) => {
                    compared += 1;
                    largest = largest.max((wz - z).abs());
                    if (wz - z).abs() >= 0.005 || wf != f {
                        problems.push(format!(
                            "oracle line {}: {} WHO {wz} {wf}, phone {z} {f}",
                            oracle[row].line,
                            score.name()
                        ));
                    }
                }
                (w, p) => problems.push(format!(
                    "oracle line {}: {} WHO {w:?}, phone {p:?}: {child:?}",
                    oracle[row].line,
                    score.name()
                )),
            }
        }
        eprintln!(
            "phone {}: {compared} of WHO's scores compared, largest difference {largest:.4}",
            score.name()
        );
        for (k, child) in random.iter().enumerate() {
            let crate_score = child.score(score).map(|z| (z.z, z.flagged));
            let phone = scored[children.len() + k][i];
            if crate_score != phone {
                problems.push(format!(
                    "random child {child:?}: {} server {crate_score:?}, phone {phone:?}",
                    score.name()
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} disagreements:\n{}",
        problems.len(),
        problems[..problems.len().min(30)].join("\n")
    );

    // As the collaborator types, the form shows the four scores.
    enrol(&browser, &server, "Mai", &["19753"]).await;
    browser.click_on("#new").await;
    browser.click_on("a[data-form=\"nutrition\"]").await;
    browser
        .type_into(
            &browser.find("[data-name=\"child_name\"] input").await,
            "Hồ Thị Bé",
        )
        .await;
    browser
        .click(
            &browser
                .find("[data-name=\"sex\"] select option[value=\"f\"]")
                .await,
        )
        .await;
    set_field(&browser, "date_of_birth", "2024-01-10").await;
    set_field(&browser, "measurement_date", "2024-09-20").await;
    set_field(&browser, "weight_kg", "6.1").await;
    set_field(&browser, "length_height_cm", "63.5").await;
    browser
        .click(
            &browser
                .find("[data-name=\"measured_lying\"] input[value=\"true\"]")
                .await,
        )
        .await;
    let girl = Child {
        sex: Sex::Girl,
        age_days: 254.0,
        weight_kg: Some(6.1),
        lenhei_cm: Some(63.5),
        position: Some(Position::Lying),
        oedema: false,
    };
    for score in Score::ALL {
        let z = girl.score(score).unwrap().z;
        let text = browser
            .wait_text(
                &format!("[data-derived=\"{}\"]", score.name()),
                &format!("{z}").replace('.', ","),
            )
            .await;
        assert!(text.contains("Z-score"), "{text}");
    }
    in_page(
        &browser,
        "document.querySelector('[data-derived=\"whz\"]').scrollIntoView({ block: 'center' }); done(true);",
        vec![],
    )
    .await;
    browser.screenshot("90-growth-scores").await;
    browser.quit().await;
}

/// A form imported from XLSForm, as the phone renders it: a note shown as words, times and
/// dates with times typed in, metadata and hidden questions not shown but filled (when the form
/// was opened and saved, the day, the phone), the form's own rule checked with its message, a
/// calculation shown as the person types; what the server stores is what the phone filled.
pub async fn phone_fills_an_imported_form() {
    let Some(a) = crate::browser::start(WIDTH, HEIGHT, "phone-screenshots").await else {
        return;
    };
    let db = Database::fresh(crate::harness::Backend::Sqlite)
        .await
        .unwrap();
    let mut server = Server::start(&db);
    let form = json!({ "id": "visit", "version": 1,
        "title": { "vi": "Thăm hộ gia đình", "en": "Household visit" },
        "instance_name": { "concat": ["Thăm ", { "var": "child_name" }] },
        "fields": [
            { "name": "intro", "type": "note", "label": { "vi": "Hỏi người chăm sóc trẻ.", "en": "Ask the carer." } },
            { "name": "Started", "type": "datetime", "auto": "start" },
            { "name": "visit.day", "type": "date", "auto": "today" },
            { "name": "phone-id", "type": "text", "auto": "deviceid" },
            { "name": "ref", "type": "text", "appearance": "hidden" },
            { "name": "child_name", "type": "text", "label": { "vi": "Họ và tên trẻ", "en": "Name" },
              "hint": { "vi": "Như trong giấy khai sinh", "en": "As on the birth certificate" },
              "guidance": { "vi": "Hỏi cả tên gọi ở nhà.", "en": "Ask for the home name too." } },
            { "name": "arrived", "type": "time", "label": { "vi": "Giờ đến", "en": "Arrived" } },
            { "name": "story", "type": "text", "appearance": "multiline", "label": { "vi": "Ghi chép", "en": "Notes" } },
            { "name": "next_visit", "type": "datetime", "label": { "vi": "Hẹn lần sau", "en": "Next visit" } },
            { "name": "children", "type": "integer", "label": { "vi": "Số trẻ", "en": "Children" },
              "constraint": { "==": [{ "mod": [{ "var": "children" }, 2] }, 0] },
              "constraint_message": { "vi": "Số trẻ phải là số chẵn.", "en": "An even number." } },
            { "name": "province", "type": "select_one", "label": { "vi": "Tỉnh", "en": "Province" },
              "choices": [{ "code": "hue" }, { "code": "hanoi" }] },
            { "name": "ward", "type": "select_one", "label": { "vi": "Phường", "en": "Ward" },
              "choice_filter": { "==": [{ "var": "province" }, { "var": "@in" }] },
              "choices": [
                  { "code": "thuan-hoa", "props": { "in": "hue" } },
                  { "code": "ba-dinh", "props": { "in": "hanoi" } },
                  { "code": "an-cuu", "props": { "in": "hue" } }
              ] },
            { "name": "kind", "type": "text", "read_only": true, "default": "tại nhà",
              "label": { "vi": "Hình thức", "en": "Kind of visit" } },
            { "name": "many", "type": "note", "label": { "vi": "Hộ đông trẻ", "en": "Many children" },
              "relevant": { "xpath": [{ ">": [{ "var": "twice" }, 10] }] } },
            { "name": "children_at", "type": "text", "appearance": "hidden",
              "calculate": { "xpath": [{ "now": [] }] }, "trigger": "children" },
            { "name": "seen_on", "type": "date", "label": { "vi": "Ngày gặp", "en": "Seen on" },
              "default_expr": { "xpath": [{ "today": [] }] } },
            { "name": "kids", "type": "repeat", "label": { "vi": "Từng trẻ", "en": "Each child" },
              "repeat_count": { "xpath": [{ "var": "children" }] },
              "fields": [{ "name": "kid_name", "type": "text", "label": { "vi": "Tên", "en": "Name" } }] },
            { "name": "needs", "type": "rank", "label": { "vi": "Ưu tiên", "en": "Priorities" },
              "choices": [{ "code": "food" }, { "code": "school" }, { "code": "health" }] },
            { "name": "members", "type": "repeat", "label": { "vi": "Thành viên", "en": "Members" },
              "fields": [
                  { "name": "m_age", "type": "integer", "label": { "vi": "Tuổi", "en": "Age" } },
                  { "name": "m_school", "type": "select_one", "required": true,
                    "label": { "vi": "Đi học", "en": "At school" },
                    "relevant": { "xpath": [{ ">=": [{ "var": "m_age" }, 6] }] },
                    "choices": [{ "code": "yes" }, { "code": "no" }] }
              ],
              "derived": [
                  { "name": "m_place", "type": "integer", "label": { "vi": "Thứ tự", "en": "Place" },
                    "expr": { "xpath": [{ "position": [] }] } }
              ] },
            { "name": "Finished", "type": "datetime", "auto": "end" }
        ],
        "derived": [
            { "name": "greeting", "type": "text", "label": { "vi": "Lời chào", "en": "Greeting" },
              "expr": { "concat": ["Chào ", { "var": "child_name" }] } },
            { "name": "twice", "type": "integer", "expr": { "xpath": [{ "*": [{ "var": "children" }, 2] }] } },
            { "name": "ages", "type": "integer", "label": { "vi": "Tổng tuổi", "en": "Ages" },
              "expr": { "xpath": [{ "sum": [{ "var": "m_age" }] }] } }
        ]
    });
    let path = db.scratch("visit.json");
    std::fs::write(&path, form.to_string()).unwrap();
    let published = server.cli(&["form", "publish", path.to_str().unwrap()]);
    assert!(published.contains("Published visit"), "{published}");
    // Served from the next start (a running server picks it up within its refresh).
    server.restart();
    let device = enrol(&a, &server, "Xuân", &["19753"]).await;
    a.click_on("#new").await;
    a.click_on("a[data-form=\"visit\"]").await;
    let note = a
        .wait_text("[data-name=\"intro\"]", "Hỏi người chăm sóc trẻ.")
        .await;
    assert_eq!(note.trim(), "Hỏi người chăm sóc trẻ.");
    let inputs = in_page(
        &a,
        "done([...document.querySelectorAll('.fields > [data-name]')].map(e => [e.dataset.name, (e.querySelector('input, textarea') || {}).type || null]));",
        vec![],
    )
    .await;
    assert_eq!(
        inputs,
        json!([
            ["intro", null],
            ["child_name", "text"],
            ["arrived", "time"],
            ["story", "textarea"],
            ["next_visit", "datetime-local"],
            ["children", "number"],
            ["province", null],
            ["ward", null],
            ["kind", "text"],
            ["many", null],
            ["seen_on", "date"],
            ["kids", null],
            ["needs", null],
            ["members", null]
        ]),
        "metadata and hidden questions are not shown"
    );
    // The hint under the question, the guidance on request, a read-only question as given.
    let shown = in_page(
        &a,
        "const q = (s) => document.querySelector(s); done([q('[data-name=\"child_name\"] .hint').textContent, q('[data-name=\"child_name\"] details summary').textContent, q('[data-name=\"child_name\"] details p').textContent, q('[data-name=\"kind\"] input').disabled, q('[data-name=\"kind\"] input').value, q('[data-name=\"many\"]').hidden]);",
        vec![],
    )
    .await;
    assert_eq!(
        shown,
        json!([
            "Như trong giấy khai sinh",
            "Hướng dẫn",
            "Hỏi cả tên gọi ở nhà.",
            true,
            "tại nhà",
            true
        ])
    );
    a.type_into(&a.find("[data-name=\"child_name\"] input").await, "Bé Na")
        .await;
    a.wait_text("[data-derived=\"greeting\"]", "Chào Bé Na")
        .await;
    set_field(&a, "arrived", "08:30").await;
    set_field(&a, "next_visit", "2026-12-24T09:00").await;
    // The wards offered follow the province chosen.
    for (province, wards) in [
        ("hue", json!(["thuan-hoa", "an-cuu"])),
        ("hanoi", json!(["ba-dinh"])),
    ] {
        // Chosen as a person does, the select changing (a click on an option would leave
        // the browser's own list open over the page).
        in_page(
            &a,
            "const s = document.querySelector('[data-name=\"province\"] select'); s.value = args[0]; s.dispatchEvent(new Event('change', { bubbles: true })); done(true);",
            vec![json!(province)],
        )
        .await;
        wait_for(
            &a,
            "the wards of the province",
            "return [...document.querySelectorAll('[data-name=\"ward\"] option')].filter(o => o.value && !o.hidden).map(o => o.value);",
            vec![],
            wards,
        )
        .await;
    }
    // A default the form computes when it opens: today.
    let today = in_page(
        &a,
        "done([document.querySelector('[data-name=\"seen_on\"] input').value, P.today()]);",
        vec![],
    )
    .await;
    assert_eq!(today[0], today[1]);
    // A question shown by a calculation: twice the children, over 10.
    set_field(&a, "children", "6").await;
    // As many items as the form says (repeat_count: the children).
    wait_for(
        &a,
        "one item per child",
        "return document.querySelectorAll('[data-name=\"kids\"] .item').length;",
        vec![],
        json!(6),
    )
    .await;
    wait_for(
        &a,
        "the note shown by a calculation",
        "return document.querySelector('[data-name=\"many\"]').hidden;",
        vec![],
        json!(false),
    )
    .await;
    // A repeat group: two members; school asked of the one of 6 or more, each item's place
    // shown, the ages summed over the items.
    for _ in 0..2 {
        in_page(
            &a,
            "document.querySelector('[data-name=\"members\"] > button').click(); done(true);",
            vec![],
        )
        .await;
    }
    in_page(
        &a,
        "const items = document.querySelectorAll('[data-name=\"members\"] .item'); args[0].forEach((v, i) => { const el = items[i].querySelector('[data-name=\"m_age\"] input'); el.value = v; el.dispatchEvent(new Event('input', { bubbles: true })); }); done(true);",
        vec![json!(["3", "10"])],
    )
    .await;
    wait_for(
        &a,
        "school asked of the older member, places and the sum of ages",
        "const items = [...document.querySelectorAll('[data-name=\"members\"] .item')]; return [items.map(b => b.querySelector('[data-name=\"m_school\"]').hidden), items.map(b => b.querySelector('[data-derived=\"m_place\"] strong').textContent), document.querySelector('[data-derived=\"ages\"] strong').textContent];",
        vec![],
        json!([[true, false], ["1", "2"], "13"]),
    )
    .await;
    // Ranked: school moved up above food.
    in_page(
        &a,
        "document.querySelector('[data-name=\"needs\"] li[data-code=\"school\"] button[aria-label=\"Lên\"]').click(); done(true);",
        vec![],
    )
    .await;
    set_field(&a, "children", "2").await;
    a.click_on("#save").await;
    a.wait_text("#error-members", "mục 2").await;
    in_page(
        &a,
        "const s = document.querySelectorAll('[data-name=\"members\"] .item')[1].querySelector('select'); s.value = 'yes'; s.dispatchEvent(new Event('change', { bubbles: true })); done(true);",
        vec![],
    )
    .await;
    set_field(&a, "children", "3").await;
    a.click_on("#save").await;
    a.wait_text("#error-children", "Số trẻ phải là số chẵn.")
        .await;
    a.screenshot("95-imported-form").await;
    set_field(&a, "children", "2").await;
    a.click_on("#save").await;
    // The list names the record as the form says (instance_name).
    wait_status(&a, "Thăm Bé Na", "synced").await;
    let mut phone = server.enroll("Kiểm tra", &["19753"]).await;
    phone.sync().await;
    let record = phone
        .client
        .records()
        .into_iter()
        .find(|r| r.form.as_str() == "visit")
        .expect("the visit reached the server");
    let value = |n: &str| record.value(n).cloned().unwrap_or(Value::Null);
    assert_eq!(value("children"), json!(2));
    assert_eq!(value("arrived"), json!("08:30"));
    assert!(value("next_visit")
        .as_str()
        .unwrap()
        .starts_with("2026-12-24T09:00"));
    assert_eq!(value("phone-id"), json!(device.to_string()));
    let start = value("Started");
    let end = value("Finished");
    assert!(
        start.as_str().unwrap() <= end.as_str().unwrap(),
        "{start} {end}"
    );
    assert_eq!(value("visit.day").as_str().unwrap().len(), 10);
    assert_eq!(value("intro"), Value::Null, "a note holds no value");
    assert_eq!(value("ref"), Value::Null);
    assert_eq!(
        value("kind"),
        json!("tại nhà"),
        "a read-only question keeps its value"
    );
    assert_eq!(value("needs"), json!(["school", "food", "health"]));
    // Worked out when the children were given (a trigger), and kept as an answer.
    let at = value("children_at");
    assert!(
        at.as_str()
            .is_some_and(|t| t.len() >= 19 && t.as_bytes()[10] == b'T'),
        "{at}"
    );
    assert_eq!(
        value("kids").as_array().map(Vec::len),
        Some(2),
        "{}",
        value("kids")
    );
    assert_eq!(value("seen_on"), today[1]);
    assert_eq!(
        value("members"),
        json!([{ "m_age": 3 }, { "m_age": 10, "m_school": "yes" }])
    );
    a.quit().await;
}

/// A BMP of `w`×`h` in blocks of random colours (seeded): a camera's photo, big enough that
/// the phone scales it down.
fn test_photo(w: u32, h: u32, seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed);
    let row = (w * 3).div_ceil(4) * 4;
    let size = 54 + row * h;
    let mut out = Vec::with_capacity(size as usize);
    out.extend_from_slice(b"BM");
    out.extend_from_slice(&size.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&54u32.to_le_bytes());
    out.extend_from_slice(&40u32.to_le_bytes());
    out.extend_from_slice(&(w as i32).to_le_bytes());
    out.extend_from_slice(&(h as i32).to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&24u16.to_le_bytes());
    out.extend_from_slice(&[0; 24]);
    let blocks: Vec<[u8; 3]> = (0..(w / 16 + 1) * (h / 16 + 1))
        .map(|_| {
            [
                rng.below(256) as u8,
                rng.below(256) as u8,
                rng.below(256) as u8,
            ]
        })
        .collect();
    for y in 0..h {
        for x in 0..w {
            let b = blocks[((y / 16) * (w / 16 + 1) + x / 16) as usize];
            let noise = rng.below(24) as u8;
            out.extend(b.iter().map(|c| c.saturating_add(noise)));
        }
        out.extend(std::iter::repeat_n(0, (row - w * 3) as usize));
    }
    out
}

/// A photo and a place taken offline at 360×740, kept across a reload, then sent over an
/// emulated 2G network, the upload cut by the network going and resumed when it comes back.
pub async fn phone_photo_and_place_survive_2g() {
    let Some(a) = crate::browser::start(WIDTH, HEIGHT, "phone-screenshots").await else {
        return;
    };
    let db = Database::fresh(crate::harness::Backend::Sqlite)
        .await
        .unwrap();
    let mut server = Server::start(&db);
    let form = json!({ "id": "play-photo", "version": 1,
        "title": { "vi": "Ảnh sân chơi", "en": "Play area photo" },
        "fields": [
            { "name": "place_name", "type": "text", "label": { "vi": "Tên sân chơi", "en": "Play area" } },
            { "name": "photo", "type": "image", "label": { "vi": "Ảnh", "en": "Photo" }, "max_pixels": 640 },
            { "name": "where", "type": "geopoint", "label": { "vi": "Vị trí", "en": "Place" }, "accuracy": 10 }
        ]
    });
    let path = db.scratch("play-photo.json");
    std::fs::write(&path, form.to_string()).unwrap();
    server.cli(&["form", "publish", path.to_str().unwrap()]);
    server.restart();
    enrol(&a, &server, "Hoa", &["19753"]).await;
    a.set_position(&server.url, 16.4637, 107.5909, 8.0).await;

    // Offline: the form, a photo from the phone's files, the place where it stands.
    a.set_offline(true).await;
    a.click_on("#new").await;
    a.click_on("a[data-form=\"play-photo\"]").await;
    set_field(&a, "place_name", "Sân chơi thôn 3").await;
    let photo = db.scratch("IMG_0041.bmp");
    std::fs::write(&photo, test_photo(1600, 1200, 7)).unwrap();
    a.type_into(
        &a.find("[data-name=\"photo\"] input.media-pick").await,
        photo.to_str().unwrap(),
    )
    .await;
    wait_for(
        &a,
        "the photo scaled down",
        "const img = document.querySelector('[data-name=\"photo\"] img.photo'); return img && img.complete ? Math.max(img.naturalWidth, img.naturalHeight) : 0;",
        vec![],
        json!(640),
    )
    .await;
    a.click_on("[data-name=\"where\"] button").await;
    a.wait_text("[data-name=\"where\"] .accuracy", "±8 m").await;
    a.screenshot("96-photo-and-place").await;
    a.click_on("#save").await;
    wait_status(&a, "Sân chơi thôn 3", "pending").await;
    // Kept across a reload, offline: the record, its photo, the notice that it waits.
    a.reload().await;
    wait_status(&a, "Sân chơi thôn 3", "pending").await;
    a.click_on("[data-record] a, .records a").await;
    a.wait_text(".pending-upload", "ảnh đang chờ tải lên").await;

    // 2G (Chrome's preset: 250 kbit/s down, 50 kbit/s up, 300 ms): the edit goes first, then
    // the photo in chunks; the network goes away after the first chunk, and comes back.
    a.set_network(300, 250_000 / 8, 50_000 / 8).await;
    a.click_on(".actions a[href=\"#\"]").await;
    a.click_on("#sync").await;
    wait_for(
        &a,
        "a first chunk of the photo",
        "const u = window.mam.uploaded || {}; return Object.values(u).some(([r]) => r > 0);",
        vec![],
        json!(true),
    )
    .await;
    a.set_offline(true).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let cut = in_page(
        &a,
        "done(Object.values(window.mam.uploaded || {}).map(([r, n]) => [r, n])[0]);",
        vec![],
    )
    .await;
    eprintln!("the upload cut at {cut}");
    assert!(
        cut[0].as_u64().unwrap() < cut[1].as_u64().unwrap(),
        "cut before the end: {cut}"
    );
    a.set_network(300, 250_000 / 8, 50_000 / 8).await;
    a.click_on("#sync").await;
    wait_for(
        &a,
        "the photo uploaded",
        "const u = window.mam.uploaded || {}; return Object.values(u).some(([r, n]) => r === n);",
        vec![],
        json!(true),
    )
    .await;
    a.set_offline(false).await;

    // The server holds the record, its place with its accuracy, and the photo's bytes.
    let mut phone = server.enroll("Kiểm tra", &["19753"]).await;
    phone.sync().await;
    let record = phone
        .client
        .records()
        .into_iter()
        .find(|r| r.form.as_str() == "play-photo")
        .expect("the record reached the server");
    let place = record.value("where").cloned().unwrap();
    assert_eq!(
        (
            place["lat"].as_f64(),
            place["lon"].as_f64(),
            place["acc"].as_f64()
        ),
        (Some(16.4637), Some(107.5909), Some(8.0))
    );
    let reference = record.value("photo").cloned().unwrap();
    assert_eq!(reference["type"], "image/jpeg");
    assert_eq!(reference["name"], "IMG_0041.bmp");
    let sha = reference["sha256"].as_str().unwrap();
    let bytes = phone
        .http
        .get(format!(
            "{}/v1/records/{}/attachments/{sha}",
            server.url, record.id
        ))
        .bearer_auth(&phone.token)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    use sha2::Digest;
    let got: String = sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(got, sha);
    assert_eq!(bytes.len() as u64, reference["size"].as_u64().unwrap());
    eprintln!(
        "photo of {} bytes (from a 1600×1200 image), sent over 2G",
        bytes.len()
    );
    // The office's thumbnail of it, made by the server.
    crate::office::add_user(&server, "tinh", "province", "46");
    let mut office = crate::office::Office::new(&server);
    office.login("tinh", crate::office::PASSWORD).await;
    let (status, headers, thumb) = office
        .download(&format!(
            "/office/records/{}/attachments/{sha}?size=thumb",
            record.id
        ))
        .await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "image/jpeg");
    let small = image::load_from_memory(&thumb).unwrap();
    assert_eq!(
        small.width().max(small.height()),
        320,
        "{}×{}",
        small.width(),
        small.height()
    );
    assert!(thumb.len() < bytes.len());
    // The notice goes once the server has it.
    a.reload().await;
    a.click_on("[data-record] a, .records a").await;
    wait_for(
        &a,
        "the notice gone",
        "return !!document.querySelector('.media-preview img.photo') && !document.querySelector('.pending-upload');",
        vec![],
        json!(true),
    )
    .await;
    a.screenshot("97-photo-uploaded").await;
    a.quit().await;
}

/// A commune with more records than a page: the list shows fifty at a time with how many there
/// are, "Xem thêm" shows the next ones, a search finds a record on any page, and a record
/// edited on this phone shows its new name at once and after it synced.
pub async fn phone_list_pages_a_big_commune() {
    let Some(a) = crate::browser::start(WIDTH, HEIGHT, "phone-screenshots").await else {
        return;
    };
    let db = Database::fresh(crate::harness::Backend::Sqlite)
        .await
        .unwrap();
    let server = Server::start(&db);
    let base = server.url.clone();
    let mut b = server.enroll("Bình", &["19753"]).await;
    let mut ids = Vec::new();
    for i in 0..120 {
        ids.push(b.create(
            "19753",
            &[("child_name", json!(format!("Hồ Thị Bé {i:03}")))],
        ));
    }
    b.sync().await;

    enrol(&a, &server, "An", &["19753"]).await;
    a.wait_text("h2", "Phiếu (120)").await;
    let shown = "return document.querySelectorAll('#records li.record').length;";
    wait_for(&a, "a first page", shown, vec![], json!(50)).await;
    assert_eq!(a.texts("#list-count").await, ["50 / 120 phiếu"]);
    assert_eq!(a.texts("#more").await, ["Xem thêm 50 phiếu"]);
    // The records come in the order they were made.
    let first = a.texts("#records li.record a").await;
    assert_eq!(first[0], "Hồ Thị Bé 000");
    assert_eq!(first[49], "Hồ Thị Bé 049");
    a.click_on("#more").await;
    wait_for(&a, "a second page", shown, vec![], json!(100)).await;
    assert_eq!(a.texts("#more").await, ["Xem thêm 20 phiếu"]);
    a.click_on("#more").await;
    wait_for(&a, "every record", shown, vec![], json!(120)).await;
    wait_for(
        &a,
        "nothing more to show",
        "return document.querySelector('#more').hidden;",
        vec![],
        json!(true),
    )
    .await;
    a.screenshot("70-list-all-pages").await;
    a.execute("window.scrollTo(0, 0);", vec![]).await;

    // A search reaches a record of the last page, without its marks, and starts a page over.
    search(&a, "be 117").await;
    wait_for(&a, "one record found", shown, vec![], json!(1)).await;
    assert_eq!(a.texts("#records li.record a").await, ["Hồ Thị Bé 117"]);
    // A sync landing while the box has the focus redraws the list: the words, the focus and the
    // caret stay.
    let kept = a
        .execute_async(
            "const done = arguments[0]; const el = document.querySelector('#search');
             el.focus(); el.setSelectionRange(3, 3);
             const before = window.mam.listShownAt;
             const look = () => {
               if (window.mam.listShownAt === before) return requestAnimationFrame(look);
               const now = document.querySelector('#search');
               done([now !== el, document.activeElement === now, now.value, now.selectionStart]);
             };
             window.mam.sync().then(look);",
            vec![],
        )
        .await;
    assert_eq!(kept, json!([true, true, "be 117", 3]));
    search(&a, "").await;
    wait_for(&a, "a page again", shown, vec![], json!(50)).await;
    // None of them is An's.
    a.click(&a.find("#filter option[value=\"mine\"]").await)
        .await;
    wait_for(&a, "none of An's", shown, vec![], json!(0)).await;
    assert_eq!(
        a.texts("#records li.muted").await,
        ["Không có phiếu nào khớp."]
    );
    a.click(&a.find("#filter option[value=\"all\"]").await)
        .await;

    // An renames a child: the list shows the new name while it waits, and after it synced.
    let id = ids[70];
    a.goto(&format!("{base}/app/#fill/birth-registration/{id}"))
        .await;
    set_field(&a, "child_name", "Hồ Thị Bé Mới").await;
    a.click_on("#save").await;
    a.goto(&format!("{base}/app/#")).await;
    search(&a, "be moi").await;
    wait_for(&a, "the new name found", shown, vec![], json!(1)).await;
    wait_status(&a, "Hồ Thị Bé Mới", "synced").await;
    a.click(&a.find("#filter option[value=\"mine\"]").await)
        .await;
    wait_for(&a, "one of An's", shown, vec![], json!(1)).await;
    // The old name is gone from the list, on any page.
    search(&a, "").await;
    search(&a, "be 070").await;
    a.click(&a.find("#filter option[value=\"all\"]").await)
        .await;
    wait_for(&a, "the old name gone", shown, vec![], json!(0)).await;
}

/// Type `text` in the list's search box (a sync redrawing the list meanwhile keeps it).
async fn search(browser: &Browser, text: &str) {
    browser
        .execute_async(
            "const [v, done] = arguments; const el = document.querySelector('#search');
             el.focus(); el.value = v; el.dispatchEvent(new Event('input', { bubbles: true })); done(true);",
            vec![json!(text)],
        )
        .await;
}

/// A commune's first sync comes in a few big pages, not in many of the protocol's default size:
/// a full page that came quickly asks for a bigger next one (up to the server's cap).
pub async fn phone_first_sync_takes_bigger_pages() {
    let Some(a) = crate::browser::start(WIDTH, HEIGHT, "phone-screenshots").await else {
        return;
    };
    let db = Database::fresh(crate::harness::Backend::Sqlite)
        .await
        .unwrap();
    let server = Server::start(&db);
    let mut b = server.enroll("Bình", &["19753"]).await;
    for i in 0..3000 {
        b.create(
            "19753",
            &[("child_name", json!(format!("Trẻ số {i} của thôn Phú Mỹ")))],
        );
    }
    b.sync().await;
    // What the default page of 256 KiB would take.
    let mut fresh = server.enroll("Đếm", &["19753"]).await;
    let mut default_pages = 0;
    loop {
        let mut request = fresh.client.sync_request();
        request.max_bytes = 262_144;
        let response: sync_protocol::SyncResponse =
            fresh.send(&request).await.json().await.unwrap();
        fresh.client.apply_response(&response);
        default_pages += 1;
        if !response.more {
            break;
        }
    }
    assert_eq!(fresh.client.records().len(), 3000);
    assert!(default_pages >= 5, "{default_pages} pages of 256 KiB");

    enrol(&a, &server, "An", &["19753"]).await;
    a.wait_text("h2", "Phiếu (3000)").await;
    let asked = in_page(
        &a,
        "done([window.mam.requests, window.mam.pageBytes]);",
        vec![],
    )
    .await;
    let requests = asked[0].as_u64().unwrap();
    assert!(
        requests <= 3,
        "{requests} requests for what takes {default_pages} pages of 256 KiB"
    );
    assert!(asked[1].as_u64().unwrap() > 262_144, "{asked}");
}
