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
    let Some(browser) = Browser::start(WIDTH, HEIGHT, "phone-screenshots").await else {
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
    for (raw, form) in forms() {
        for (field_json, field) in raw["fields"].as_array().unwrap().iter().zip(&form.fields) {
            let mut probes = vec![
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
    let input = browser.find("#code").await;
    assert_eq!(
        browser.attribute(&input, "value").await.as_deref(),
        Some(code)
    );
    browser
        .click(&browser.find("form button[type=submit]").await)
        .await;
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
             const li = Array.from(document.querySelectorAll('li.record')).find(e => e.innerText.includes(child));
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
    let Some(hoa) = Browser::start(WIDTH, HEIGHT, "phone-screenshots").await else {
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
        "app.css",
        "sw.js",
        "manifest.webmanifest",
        "icon.svg",
        "who/wfa.csv",
        "who/lhfa.csv",
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
    // the server's reason, and correctable.
    fill_birth(&hoa, "Trần Văn Tèo", "2025-08-01").await;
    let commune = hoa.find("#commune option[value=\"19750\"]").await;
    hoa.click(&commune).await;
    hoa.click_on("#save").await;
    hoa.wait_text("li.record .reason", "không phải là xã/phường")
        .await;
    hoa.screenshot("05-refused").await;
    hoa.click_on("li.record.refused a").await;
    hoa.click(&hoa.find("#commune option[value=\"19753\"]").await)
        .await;
    hoa.click_on("#save").await;
    wait_status(&hoa, "Trần Văn Tèo", "synced").await;

    // Two phones edit the same field offline: both end up showing both values.
    let Some(lan) = Browser::start(WIDTH, HEIGHT, "phone-screenshots").await else {
        return;
    };
    enrol(&lan, &server, "Lan", &["19753"]).await;
    wait_status(&lan, "Lê Thị Bống", "synced").await;
    let id = in_page(
        &hoa,
        "done(P.records(window.mam.state()).find(r => P.valueOf(r, 'child_name') === 'Lê Thị Bống').id);",
        vec![],
    )
    .await;
    let id = id.as_str().unwrap().to_owned();
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
        assert!(text.contains("máy"), "with whose they are: {text}");
        phone.screenshot(shot).await;
    }

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
