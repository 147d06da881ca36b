//! Forms, places and validation, end to end.

use serde_json::{json, Value};
use sync_protocol::{FormId, RecordId, RejectCode, SyncResponse};

use crate::harness::{commune, Database, Server, COMMUNE};

pub async fn invalid_values_are_refused_in_both_languages_and_kept(db: Database) {
    let server = Server::start(&db);
    let mut a = server.enroll("Hoa", &[COMMUNE]).await;
    let good = a.create(COMMUNE, &[("child_name", json!("Lan"))]);
    a.create(COMMUNE, &[("date_of_birth", json!("2020-02-30"))]);
    a.create(COMMUNE, &[("date_of_birth", json!("2999-01-01"))]);
    a.create(COMMUNE, &[("registration_date", json!("2019-12-31"))]);
    a.create(COMMUNE, &[("bhyt_card_number", json!("12345"))]);
    a.create(COMMUNE, &[("sex", json!(null))]);
    a.create(COMMUNE, &[("birth_registered", json!(true))]);
    a.create(
        COMMUNE,
        &[(
            "follow_up_visits",
            json!([{"visit_date": "2020-02-01"}, {"result": "not_yet"}]),
        )],
    );
    a.create(COMMUNE, &[("registered_on_time", json!(true))]);
    let after = a.create(COMMUNE, &[("child_name", json!("Minh"))]);
    let responses = a.sync().await;
    assert_eq!(responses[0].acked_through, 10, "every edit is consumed");
    let expect = [
        (2, "date_of_birth", "type"),
        (3, "date_of_birth", "not_future"),
        (4, "registration_date", "not_before"),
        (5, "bhyt_card_number", "pattern"),
        (6, "sex", "required"),
        (7, "registration_date", "required_if"),
        (8, "follow_up_visits[2].visit_date", "required"),
    ];
    let rejected = &responses[0].rejected;
    assert_eq!(rejected.len(), expect.len() + 1, "{rejected:#?}");
    for (seq, field, rule) in expect {
        let r = rejected
            .iter()
            .find(|r| r.seq == seq)
            .unwrap_or_else(|| panic!("seq {seq} not rejected"));
        assert_eq!(r.code, RejectCode::InvalidValue, "{r:?}");
        assert_eq!(r.field.as_deref(), Some(field), "{r:?}");
        assert_eq!(r.rule.as_deref(), Some(rule), "{r:?}");
        assert!(
            r.message.starts_with(field),
            "the message names the field: {r:?}"
        );
        assert!(
            r.message_vi
                .as_deref()
                .is_some_and(|m| m.starts_with(field)),
            "{r:?}"
        );
    }
    let derived = rejected.iter().find(|r| r.seq == 9).unwrap();
    assert_eq!(derived.code, RejectCode::UnknownField);
    assert!(derived.message.contains("derived"));
    // The good edits before and after the bad ones landed; the bad ones are on the phone.
    assert!(a.client.view(good).is_some() && a.client.view(after).is_some());
    assert_eq!(a.client.records().len(), 2);
    assert_eq!(a.client.rejected().len(), 8);
    // The whole edit is kept for review, with both messages.
    let listed: Value = serde_json::from_str(&server.cli(&["rejected", "list", "--json"])).unwrap();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 8);
    let first = listed.iter().find(|r| r["seq"] == 2).unwrap();
    assert_eq!(
        first["edit"]["fields"]["date_of_birth"]["value"],
        "2020-02-30"
    );
    assert_eq!(
        first["edit"]["fields"]["child_name"],
        Value::Null,
        "the edit as sent: {first}"
    );
    assert!(first["message_vi"].as_str().unwrap().contains("ngày"));
}

pub async fn derived_fields_follow_the_edits(db: Database) {
    let server = Server::start(&db);
    let mut a = server.enroll("Hoa", &[COMMUNE]).await;
    let id = a.create(COMMUNE, &[("date_of_birth", json!("2020-01-15"))]);
    a.sync().await;
    assert_eq!(
        a.view(id).derived["registered_on_time"],
        Value::Null,
        "unknown until registered"
    );
    a.edit(
        id,
        &[
            ("birth_registered", json!(true)),
            ("registration_date", json!("2020-03-02")),
        ],
    );
    a.sync().await;
    let record = a.view(id);
    assert_eq!(record.derived["days_to_registration"], json!(47));
    assert_eq!(record.derived["registered_on_time"], json!(true));
    a.edit(id, &[("registration_date", json!("2020-03-20"))]);
    a.sync().await;
    assert_eq!(
        a.view(id).derived["registered_on_time"],
        json!(false),
        "65 days is late"
    );
    // The WHO check value through the whole path: girl, 1,522 days, 17 kg → WAZ 0.24.
    let nutrition = FormId::parse("nutrition").unwrap();
    let child = RecordId::new_v7();
    a.client.create(
        child,
        &nutrition,
        1,
        &commune(COMMUNE),
        [
            ("child_name", json!("Lan")),
            ("sex", json!("f")),
            ("date_of_birth", json!("2020-01-01")),
            ("measurement_date", json!("2024-03-02")),
            ("weight_kg", json!(17.0)),
            ("length_height_cm", json!(80.0)),
            ("measured_lying", json!(false)),
        ],
    );
    a.sync().await;
    let record = a.view(child);
    assert_eq!(record.derived["age_days"], json!(1522));
    assert_eq!(record.derived["waz"], json!(0.24));
    assert_eq!(record.derived["underweight"], json!(false));
    assert_eq!(
        record.derived["stunted"],
        json!(true),
        "80 cm at 50 months: {:?}",
        record.derived
    );
}

pub async fn commune_must_exist_on_the_collection_date(db: Database) {
    let server = Server::start(&db);
    // Tây Lộc (19750) was a ward until 30 June 2025, then merged into Phú Xuân (19753).
    let mut a = server.enroll("Hoa", &["19750", COMMUNE]).await;
    let old = a.create("19750", &[("date_of_birth", json!("2020-05-01"))]);
    a.create("19750", &[("date_of_birth", json!("2025-08-01"))]);
    let response = a.sync().await.remove(0);
    assert!(
        a.client.view(old).is_some(),
        "a 2020 birth in 2020's ward is accepted"
    );
    assert_eq!(response.rejected.len(), 1, "{:?}", response.rejected);
    let r = &response.rejected[0];
    assert_eq!(
        (r.field.as_deref(), r.rule.as_deref()),
        (Some("commune"), Some("commune_on_date"))
    );
    assert!(r.message.contains("successor is 19753"), "{}", r.message);
    // The units list answers for any day.
    let out = server.cli(&["units", "list", "--on", "2020-06-01"]);
    assert!(out.starts_with("145 communes on 2020-06-01"), "{out}");
    assert!(server
        .cli(&["units", "list", "--on", "2025-07-01"])
        .starts_with("40 communes"));
    // Kinds with their diacritics, the district and the province as that map names them.
    assert!(
        out.contains("19750  Phường Tây Lộc  (Thành phố Huế)"),
        "{out}"
    );
    assert!(out.contains("Tỉnh Thừa Thiên Huế"));
    assert!(out.contains("20047  Xã Hồng Vân  (Huyện A Lưới)"));
    let today = server.cli(&["units", "list", "--on", "2025-07-01"]);
    assert!(today.contains("Thành phố Huế") && !today.contains("Tỉnh Thừa Thiên Huế"));
}

pub async fn phones_fetch_forms_by_manifest_and_etag(db: Database) {
    let server = Server::start(&db);
    let a = server.enroll("Hoa", &[COMMUNE]).await;
    let csv = std::env::temp_dir().join(format!("villages-{}.csv", std::process::id()));
    std::fs::write(
        &csv,
        format!("commune,village\n{COMMUNE},Tổ 1\n{COMMUNE},Tổ 2\n19774,Thôn Kim Long\n"),
    )
    .unwrap();
    assert!(server
        .cli(&["villages", "import", csv.to_str().unwrap()])
        .contains("19753: 2 villages"));
    let _ = std::fs::remove_file(&csv);
    let http = reqwest::Client::new();
    let manifest: Value = http
        .get(format!("{}/v1/forms", server.url))
        .bearer_auth(&a.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let forms = manifest["forms"].as_array().unwrap();
    assert_eq!(forms.len(), 10, "{manifest}");
    assert_eq!(
        manifest["villages"],
        json!({ COMMUNE: ["Tổ 1", "Tổ 2"] }),
        "only its own communes"
    );
    let birth = forms
        .iter()
        .find(|f| f["id"] == "birth-registration")
        .unwrap();
    let url = format!("{}{}", server.url, birth["url"].as_str().unwrap());
    let first = http.get(&url).bearer_auth(&a.token).send().await.unwrap();
    assert_eq!(first.status(), 200);
    let etag = first.headers()["etag"].to_str().unwrap().to_owned();
    assert_eq!(Value::String(etag.clone()), birth["etag"]);
    let form: sync_protocol::Form = first.json().await.unwrap();
    assert!(form.fields.iter().any(|f| f.name == "bhyt_card_issued"));
    let again = http
        .get(&url)
        .bearer_auth(&a.token)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    let missing = http
        .get(format!("{}/v1/forms/birth-registration/9", server.url))
        .bearer_auth(&a.token)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(http.get(&url).send().await.unwrap().status(), 401);
    // The sync response names the current versions.
    let mut a = a;
    let response: SyncResponse = a.sync_once().await;
    assert_eq!(response.forms["birth-registration"], 2);
    assert_eq!(response.forms.len(), 10);
}

pub async fn published_versions_only_grow_compatibly(db: Database) {
    let server = Server::start(&db);
    let dir = std::env::temp_dir().join(format!(
        "mam-forms-{}-{}",
        std::process::id(),
        db.args.join("").len()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let v1: Value = serde_json::from_str(
        &std::fs::read_to_string(
            crate::harness::repo_root().join("schemas/forms/play-area.v1.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let write = |name: &str, form: &Value| {
        let path = dir.join(name);
        std::fs::write(&path, serde_json::to_string_pretty(form).unwrap()).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let publish = |path: &str| {
        crate::harness::mam()
            .args(["form", "publish", path])
            .args(&server.db)
            .output()
            .unwrap()
    };
    // Version 2 adds a field and a choice, and retires one: accepted.
    let mut v2 = v1.clone();
    v2["version"] = json!(2);
    v2["fields"].as_array_mut().unwrap().push(
        json!({"name": "cctv", "type": "boolean", "label": {"vi": "Có camera", "en": "CCTV"}}),
    );
    v2["fields"][5]["choices"]
        .as_array_mut()
        .unwrap()
        .push(json!({"code": "beach", "label": {"vi": "Bãi biển", "en": "Beach"}}));
    let fenced = v2["fields"]
        .as_array()
        .unwrap()
        .iter()
        .position(|f| f["name"] == "fenced")
        .unwrap();
    v2["fields"][fenced]["retired"] = json!(true);
    let out = publish(&write("v2.json", &v2));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Published play-area version 2"));
    // Version 3 changes a type: refused, naming the field and why.
    let mut v3 = v2.clone();
    v3["version"] = json!(3);
    let area = v3["fields"]
        .as_array()
        .unwrap()
        .iter()
        .position(|f| f["name"] == "area_m2")
        .unwrap();
    v3["fields"][area]["type"] = json!("text");
    let out = publish(&write("v3.json", &v3));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("area_m2 changes type"), "{err}");
    // A published version never changes.
    let mut v2b = v2.clone();
    v2b["fields"][0]["label"]["en"] = json!("Another name");
    let out = publish(&write("v2b.json", &v2b));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("never changes"));
    // Dropping a choice that a record uses is refused; phones see version 2.
    let mut a = server.enroll("Hoa", &[COMMUNE]).await;
    let play = FormId::parse("play-area").unwrap();
    a.client.create(
        RecordId::new_v7(),
        &play,
        2,
        &commune(COMMUNE),
        [
            ("name", json!("Sân nhà văn hóa thôn 1")),
            ("survey_date", json!("2020-05-05")),
            ("area_type", json!("beach")),
            ("status", json!("in_use")),
        ],
    );
    let response = a.sync_once().await;
    assert!(response.rejected.is_empty(), "{:?}", response.rejected);
    let mut v3 = v2.clone();
    v3["version"] = json!(3);
    v3["fields"][5]["choices"]
        .as_array_mut()
        .unwrap()
        .retain(|c| c["code"] != "beach");
    let out = publish(&write("v3b.json", &v3));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("drops choice \"beach\", which 1 record(s) use"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Writes an .xlsx with the given sheets (name, rows of cells).
fn xlsx(path: &std::path::Path, sheets: &[(&str, Vec<Vec<&str>>)]) {
    let mut workbook = rust_xlsxwriter::Workbook::new();
    for (name, rows) in sheets {
        let sheet = workbook.add_worksheet();
        sheet.set_name(*name).unwrap();
        for (r, row) in rows.iter().enumerate() {
            for (c, cell) in row.iter().enumerate() {
                if !cell.is_empty() {
                    sheet.write_string(r as u32, c as u16, *cell).unwrap();
                }
            }
        }
    }
    workbook.save(path).unwrap();
}

pub async fn xlsform_imports_the_common_subset_and_names_the_rest(db: Database) {
    let server = Server::start(&db);
    let dir = std::env::temp_dir().join(format!(
        "mam-xls-{}-{}",
        std::process::id(),
        db.args.join("").len()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let header = vec![
        "type",
        "name",
        "label::Tiếng Việt (vi)",
        "label::English (en)",
        "hint::English (en)",
        "required",
        "constraint",
        "relevant",
        "calculation",
    ];
    let choices = vec![
        vec![
            "list_name",
            "name",
            "label::Tiếng Việt (vi)",
            "label::English (en)",
        ],
        vec!["yesno", "yes", "Có", "Yes"],
        vec!["yesno", "no", "Không", "No"],
        vec!["strokes", "breaststroke", "Bơi ếch", "Breaststroke"],
        vec!["strokes", "freestyle", "Bơi sải", "Freestyle"],
    ];
    let settings = vec![
        vec!["form_title", "form_id", "version", "instance_name"],
        vec![
            "Khảo sát bơi",
            "swim_survey",
            "3",
            "concat(${child_name}, ' (', ${age}, ')')",
        ],
    ];
    let mut survey = vec![
        header.clone(),
        vec!["begin group", "child", "Trẻ", "Child", "", "", "", "", ""],
        vec![
            "text",
            "child_name",
            "Họ và tên",
            "Name",
            "As on the birth certificate",
            "yes",
            "",
            "",
            "",
        ],
        vec![
            "integer",
            "age",
            "Tuổi",
            "Age",
            "",
            "yes",
            ". >= 6 and . <= 15",
            "",
            "",
        ],
        vec![
            "date",
            "assessed_on",
            "Ngày đánh giá",
            "Assessed on",
            "",
            "",
            ". <= today()",
            "",
            "",
        ],
        vec!["end group", "", "", "", "", "", "", "", ""],
        vec![
            "select_one yesno",
            "attended",
            "Đã học bơi",
            "Attended a class",
            "",
            "",
            "",
            "",
            "",
        ],
        vec![
            "select_multiple strokes",
            "strokes",
            "Kiểu bơi",
            "Strokes",
            "",
            "",
            "",
            "${attended} = 'yes'",
            "",
        ],
        vec![
            "begin repeat",
            "sessions",
            "Buổi học",
            "Sessions",
            "",
            "",
            "",
            "",
            "",
        ],
        vec![
            "date",
            "session_date",
            "Ngày",
            "Date",
            "",
            "yes",
            "",
            "",
            "",
        ],
        vec![
            "decimal",
            "distance_m",
            "Quãng đường",
            "Distance",
            "",
            "",
            ". >= 0",
            "",
            "",
        ],
        vec!["end repeat", "", "", "", "", "", "", "", ""],
        vec![
            "geopoint",
            "where",
            "Vị trí",
            "Location",
            "",
            "",
            "",
            "",
            "",
        ],
        vec![
            "text",
            "card",
            "Số thẻ",
            "Card",
            "",
            "",
            "regex(., '[A-Z]{2}[0-9]{13}')",
            "",
            "",
        ],
    ];
    let clean = dir.join("clean.xlsx");
    xlsx(
        &clean,
        &[
            ("survey", survey.clone()),
            ("choices", choices.clone()),
            ("settings", settings.clone()),
        ],
    );
    survey.push(vec![
        "calculate",
        "total",
        "",
        "",
        "",
        "",
        "",
        "",
        "${age} * 2",
    ]);
    survey.push(vec![
        "note",
        "intro",
        "Xin chào",
        "Hello",
        "",
        "",
        "",
        "",
        "",
    ]);
    survey.push(vec![
        "integer",
        "even",
        "Số chẵn",
        "Even",
        "",
        "",
        ". mod 2 = 0",
        "",
        "",
    ]);
    survey.push(vec![
        "integer",
        "later",
        "Sau",
        "Later",
        "",
        "",
        "",
        "../age > 1",
        "",
    ]);
    for row in [
        [
            "time",
            "start_time",
            "Giờ bắt đầu",
            "Start time",
            "",
            "",
            "",
            "",
            "",
        ],
        [
            "dateTime",
            "seen_at",
            "Lúc gặp",
            "Seen at",
            "",
            "",
            "",
            "",
            "",
        ],
        [
            "acknowledge",
            "consent",
            "Đồng ý",
            "Consent",
            "",
            "",
            "",
            "",
            "",
        ],
        [
            "select_one yesno or_other",
            "swims",
            "Biết bơi",
            "Swims",
            "",
            "",
            "",
            "",
            "",
        ],
        [
            "begin group",
            "lessons",
            "Buổi học bơi",
            "Lessons",
            "",
            "",
            "",
            "${attended} = 'yes'",
            "",
        ],
        [
            "integer",
            "lesson_count",
            "Số buổi",
            "Lessons",
            "",
            "",
            "",
            "${age} > 7",
            "",
        ],
        ["end group", "", "", "", "", "", "", "", ""],
    ] {
        survey.push(row.to_vec());
    }
    let messy = dir.join("messy.xlsx");
    xlsx(
        &messy,
        &[
            ("survey", survey),
            ("choices", choices),
            ("settings", settings),
        ],
    );

    let out = dir.join("messy.json");
    let run = crate::harness::mam()
        .args([
            "form",
            "import",
            messy.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--publish",
        ])
        .args(&server.db)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        !run.status.success(),
        "an incomplete conversion is not published"
    );
    for named in [
        "(later): relevant \"../age > 1\": the path \"..\"",
        "not published",
    ] {
        assert!(stderr.contains(named), "{named} missing from:\n{stderr}");
    }
    let form: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(form["id"], "swim-survey");
    assert_eq!(form["version"], 3);
    assert_eq!(form["title"]["vi"], "Khảo sát bơi");
    assert_eq!(
        form["instance_name"],
        json!({"xpath": [{"concat": [{"var": "child_name"}, " (", {"var": "age"}, ")"]}]})
    );
    let field = |name: &str| {
        form["fields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name}: {form}"))
    };
    assert_eq!(field("child_name")["required"], true);
    assert_eq!(
        field("child_name")["label"],
        json!({"vi": "Họ và tên", "en": "Name"})
    );
    assert_eq!(
        field("child_name")["hint"]["en"],
        "As on the birth certificate"
    );
    assert_eq!(
        (field("age")["min"].clone(), field("age")["max"].clone()),
        (json!(6), json!(15))
    );
    assert_eq!(field("assessed_on")["not_future"], true);
    assert_eq!(
        field("attended")["choices"][1],
        json!({"code": "no", "label": {"vi": "Không", "en": "No"}})
    );
    assert_eq!(field("strokes")["type"], "select_many");
    assert_eq!(
        field("strokes")["relevant"],
        json!({"xpath": [{"==": [{"var": "attended"}, "yes"]}]})
    );
    assert_eq!(field("sessions")["type"], "repeat");
    assert_eq!(field("sessions")["fields"][0]["required"], true);
    assert_eq!(field("sessions")["fields"][1]["min"], 0);
    assert_eq!(field("card")["pattern"], "[A-Z]{2}[0-9]{13}");
    // A calculation is a derived field; a constraint beyond bounds and patterns an expression.
    assert!(form["fields"]
        .as_array()
        .unwrap()
        .iter()
        .all(|f| f["name"] != "total"));
    assert_eq!(
        form["derived"][0],
        json!({"name": "total", "type": "text", "expr": {"xpath": [{"*": [{"var": "age"}, 2]}]}})
    );
    assert_eq!(
        field("even")["constraint"],
        json!({"xpath": [{"==": [{"mod": [{"var": "even"}, 2]}, 0]}]})
    );
    assert!(field("later").get("relevant").is_none());
    // Notes, times, acknowledgements, `or_other` with its text box; groups as sections, a
    // group's relevance joined to its questions' own.
    assert_eq!(field("intro")["type"], "note");
    assert_eq!(field("start_time")["type"], "time");
    assert_eq!(field("seen_at")["type"], "datetime");
    assert_eq!(field("consent")["type"], "boolean");
    assert_eq!(field("swims")["choices"][2]["code"], "other");
    assert_eq!(
        field("swims_other")["relevant"],
        json!({"xpath": [{"selected": [{"var": "swims"}, "other"]}]})
    );
    assert_eq!(
        field("lesson_count")["relevant"],
        json!({"and": [{"xpath": [{"==": [{"var": "attended"}, "yes"]}]}, {"xpath": [{">": [{"var": "age"}, 7]}]}]})
    );
    let sections: Vec<(String, Vec<String>)> = form["sections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["label"]["vi"].as_str().unwrap().to_owned(),
                serde_json::from_value(s["fields"].clone()).unwrap(),
            )
        })
        .collect();
    assert_eq!(
        sections[0],
        (
            "Trẻ".to_owned(),
            vec!["child_name".to_owned(), "age".into(), "assessed_on".into()]
        )
    );
    assert_eq!(
        sections.last().unwrap(),
        &("Buổi học bơi".to_owned(), vec!["lesson_count".to_owned()])
    );

    // The clean sheet converts fully, publishes, and a phone can fill it in.
    let out = dir.join("clean.json");
    let run = crate::harness::mam()
        .args([
            "form",
            "import",
            clean.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--publish",
        ])
        .args(&server.db)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(String::from_utf8_lossy(&run.stdout).contains("Published swim-survey version 3"));
    let mut a = server.enroll("Hoa", &[COMMUNE]).await;
    let form = FormId::parse("swim-survey").unwrap();
    a.client.create(
        RecordId::new_v7(),
        &form,
        3,
        &commune(COMMUNE),
        [
            ("child_name", json!("Lan")),
            ("age", json!(9)),
            (
                "sessions",
                json!([{"session_date": "2020-06-01", "distance_m": 25}]),
            ),
        ],
    );
    a.client.create(
        RecordId::new_v7(),
        &form,
        3,
        &commune(COMMUNE),
        [("child_name", json!("Bình")), ("age", json!(4))],
    );
    let response = a.sync_once().await;
    assert_eq!(response.rejected.len(), 1, "{:?}", response.rejected);
    assert_eq!(response.rejected[0].rule.as_deref(), Some("min"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A child measured at the edge of WHO's rules, as the province would record them: every
/// score as WHO's program gives it, WHO's flags leaving implausible scores out of the
/// prevalence, oedema counted as wasting, each score's class in the office; and records an
/// older release derived are derived again by today's rules when the server starts.
pub async fn growth_scores_follow_todays_rules(db: Database) {
    use sync_protocol::who::{Child, Position, Score, Sex};
    let dir = db.scratch("growth");
    std::fs::create_dir_all(&dir).unwrap();
    let mut server = Server::start_in(&db, &dir, &[("RUST_LOG", "info")]);
    crate::office::add_user(&server, "xa", "commune", COMMUNE);
    let mut phone = server.enroll("Hoa", &[COMMUNE]).await;
    let nutrition = FormId::parse("nutrition").unwrap();
    let mut measure = |version: u32, values: &[(&str, Value)]| {
        let id = RecordId::new_v7();
        let mut all: Vec<(&str, Value)> = vec![
            ("child_name", json!("Bé")),
            ("measurement_date", json!("2020-03-15")),
        ];
        all.extend(values.iter().cloned());
        phone
            .client
            .create(id, &nutrition, version, &commune(COMMUNE), all);
        id
    };
    // A boy of 44 days, 50 cm lying, on the first version of the form: the monthly tables
    // it was first scored by gave −3.232.
    let newborn = measure(
        1,
        &[
            ("sex", json!("m")),
            ("date_of_birth", json!("2020-01-31")),
            ("weight_kg", json!(3.6)),
            ("length_height_cm", json!(50.0)),
            ("measured_lying", json!(true)),
        ],
    );
    // Version 2: a girl of two years measured standing; the same girl with oedema; a boy
    // whose weight WHO finds implausible.
    let girl = [
        ("sex", json!("f")),
        ("date_of_birth", json!("2018-03-15")),
        ("weight_kg", json!(9.0)),
        ("length_height_cm", json!(84.0)),
        ("measured_lying", json!(false)),
    ];
    let thin = measure(2, &girl);
    let mut swollen_values = girl.to_vec();
    swollen_values.push(("oedema", json!(true)));
    let swollen = measure(2, &swollen_values);
    let implausible = measure(
        2,
        &[
            ("sex", json!("m")),
            ("date_of_birth", json!("2018-03-15")),
            ("weight_kg", json!(3.0)),
            ("length_height_cm", json!(86.0)),
            ("measured_lying", json!(false)),
        ],
    );
    phone.sync().await;
    let who = |sex, age_days, kg, cm, position, oedema, score| {
        Child {
            sex,
            age_days,
            weight_kg: Some(kg),
            lenhei_cm: Some(cm),
            position: Some(position),
            oedema,
        }
        .score(score)
    };
    let newborn_haz = who(
        Sex::Boy,
        44.0,
        3.6,
        50.0,
        Position::Lying,
        false,
        Score::Haz,
    )
    .unwrap()
    .z;
    let derived = |id| phone.view(id).derived;
    assert_eq!(derived(newborn)["haz"], json!(newborn_haz));
    for score in Score::ALL {
        let want = who(
            Sex::Girl,
            731.0,
            9.0,
            84.0,
            Position::Standing,
            false,
            score,
        )
        .unwrap();
        assert_eq!(
            derived(thin)[score.name()],
            json!(want.z),
            "{}",
            score.name()
        );
        assert_eq!(
            derived(thin)[&format!("{}_flag", score.name())],
            json!(false)
        );
    }
    assert!(derived(thin)["whz"].as_f64().unwrap() < -2.0);
    assert_eq!(derived(thin)["wasted"], json!(true));
    // Oedema: no weight-based score, and the child counts as wasted, severely.
    let swollen_derived = derived(swollen);
    for name in ["waz", "whz", "baz", "underweight"] {
        assert_eq!(swollen_derived[name], Value::Null, "{name}");
    }
    assert!(swollen_derived["haz"].is_number());
    assert_eq!(swollen_derived["wasted"], json!(true));
    assert_eq!(swollen_derived["severely_wasted"], json!(true));
    assert_eq!(derived(implausible)["waz_flag"], json!(true));
    assert_eq!(derived(implausible)["underweight"], Value::Null);

    // The figures: the implausible weight is left out of underweight, oedema counts as
    // wasting, and wasting stands beside the plan's targets.
    let token = crate::indicators::token(&server, &["--scope", "province"]);
    let figures = |server: &Server| {
        let (server, token) = (server.url.clone(), token.clone());
        async move {
            let table: Value = reqwest::Client::new()
                .get(format!(
                    "{server}/v1/indicators?period=2020-H1&level=commune"
                ))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let rows = table["rows"].as_array().unwrap().clone();
            move |id: &str| {
                let r = rows
                    .iter()
                    .find(|r| r["indicator"] == id && r["area"] == COMMUNE)
                    .unwrap_or_else(|| panic!("{id} in {rows:?}"));
                (
                    r["numerator"].as_i64().unwrap(),
                    r["denominator"].as_i64().unwrap(),
                )
            }
        }
    };
    let row = figures(&server).await;
    // Underweight: the newborn (version 1) and the thin girl are scored; the swollen girl
    // has no weight-for-age and the implausible weight is left out.
    let thin_waz = derived(thin)["waz"].as_f64().unwrap();
    let newborn_waz = derived(newborn)["waz"].as_f64().unwrap();
    assert_eq!(
        row("underweight-under-5"),
        (
            i64::from(thin_waz < -2.0) + i64::from(newborn_waz < -2.0),
            2
        )
    );
    // Wasting: the thin girl and the swollen one; the boy's weight-for-height is implausible
    // too, and the newborn's first form has no weight-for-length.
    assert_eq!(derived(implausible)["whz_flag"], json!(true));
    assert_eq!(row("wasting-under-5"), (2, 2));
    assert_eq!(row("severe-wasting-under-5").1, 2);
    // The office: each score with its class, and WHO's flag.
    let page = |id: RecordId| format!("/office/records/{id}");
    let shown = crate::office::signed_in_page(&server, "xa", &page(newborn)).await;
    assert!(shown.contains("suy dinh dưỡng nặng"), "{shown}");
    let shown = crate::office::signed_in_page(&server, "xa", &page(implausible)).await;
    assert!(
        shown.contains("không hợp lý: WHO loại khỏi tỷ lệ"),
        "{shown}"
    );
    let dashboard = crate::office::signed_in_page(&server, "xa", "/office?period=2020-H1").await;
    assert!(dashboard.contains("Không phải chỉ tiêu của Kế hoạch 2020"));
    assert!(
        dashboard.contains("z-score không hợp lý"),
        "the definitions say what is left out"
    );

    // The workbook: wasting beside the plan's targets, said not to be one.
    {
        use calamine::{Data, Reader};
        let mut office = crate::office::Office::new(&server);
        office.login("xa", crate::office::PASSWORD).await;
        let (status, _, bytes) = office.download("/office/reports/2020-H1.xlsx").await;
        assert_eq!(status, 200);
        let path = db.scratch("growth.xlsx");
        std::fs::write(&path, &bytes).unwrap();
        let mut book = calamine::open_workbook_auto(&path).unwrap();
        let sheet = book.worksheet_range("Y tế, dinh dưỡng").unwrap();
        let cells: Vec<String> = sheet
            .cells()
            .filter_map(|(_, _, v)| match v {
                Data::String(s) => Some(s.clone()),
                _ => None,
            })
            .collect();
        let at = |text: &str| cells.iter().position(|c| c.starts_with(text));
        at("Tỷ lệ trẻ dưới 5 tuổi suy dinh dưỡng gầy còm (%)").expect("wasting");
        assert!(at("Tỷ lệ trẻ dưới 5 tuổi suy dinh dưỡng nhẹ cân").is_some());
        assert!(
            cells
                .iter()
                .any(|c| c == "Không phải chỉ tiêu của Kế hoạch 2020"),
            "{cells:?}"
        );
    }

    // A database an older release wrote: the newborn scored by the monthly tables, and the
    // cells counted by them. Started again, the server derives it anew, once.
    server.kill();
    let stored_body = |body: &str| {
        let mut record: Value = serde_json::from_str(body).unwrap();
        record["derived"]["haz"] = json!(-3.232);
        record.to_string()
    };
    let id = newborn.to_string();
    // The same statements on either backend's connection (placeholders as each spells them).
    macro_rules! written_by_an_older_release {
        ($conn:expr, $read:literal, $write:literal) => {{
            let body: String = sqlx::query_scalar($read)
                .bind(&id)
                .fetch_one(&mut $conn)
                .await
                .unwrap();
            sqlx::query($write)
                .bind(stored_body(&body))
                .bind(&id)
                .execute(&mut $conn)
                .await
                .unwrap();
            sqlx::query("UPDATE meta SET value = 'an older release' WHERE name = 'derived_by'")
                .execute(&mut $conn)
                .await
                .unwrap();
        }};
    }
    {
        use sqlx::Connection;
        match db.url() {
            Some(url) => {
                let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
                written_by_an_older_release!(
                    conn,
                    "SELECT body FROM records WHERE id = $1",
                    "UPDATE records SET body = $1 WHERE id = $2"
                );
            }
            None => {
                let url = format!("sqlite://{}/mam.db", db.args[1]);
                let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
                written_by_an_older_release!(
                    conn,
                    "SELECT body FROM records WHERE id = ?",
                    "UPDATE records SET body = ? WHERE id = ?"
                );
            }
        }
    }
    server.restart();
    let shown =
        crate::office::signed_in_page(&server, "xa", &format!("/office/records/{newborn}")).await;
    let today = format!("{newborn_haz:.2}")
        .replace('.', ",")
        .replace('-', "−");
    assert!(
        !shown.contains("3,232")
            && (shown.contains(&today) || shown.contains(&today.replace('−', "-"))),
        "the newborn's score by today's rules ({today}): {shown}"
    );
    // The start says what it derived again (the log is read as it comes).
    let started = std::time::Instant::now();
    while !server.log().contains("rederived=1") {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{}",
            server.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Once: a second start finds nothing to do.
    server.restart();
    let _ = crate::office::signed_in_page(&server, "xa", "/office").await;
    while !server.log().contains("Mầm started") {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(!server.log().contains("derived again"), "{}", server.log());
    assert_eq!(figures(&server).await("underweight-under-5").1, 2);
}

/// `select_one_from_file` takes its choices from the CSV beside the spreadsheet (kept in the
/// form version), a `rank` puts every choice in order, and a file that is not there is named.
pub fn xlsform_choices_from_a_file_and_ranks() {
    let dir = std::env::temp_dir().join(format!("mam-xls-file-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("communes.csv"),
        "\u{feff}name,label::Tiếng Việt (vi),label::English (en),district\n19753,\"Phường Thuận Hoá\",Thuan Hoa,474\n19774,\"Xã \"\"Hương\"\" Thọ\",Huong Tho,476\n",
    )
    .unwrap();
    let survey = vec![
        vec![
            "type",
            "name",
            "label",
            "choice_filter",
            "calculation",
            "trigger",
        ],
        vec!["select_one district", "district", "District", "", "", ""],
        vec![
            "select_one_from_file communes.csv",
            "commune",
            "Commune",
            "district=${district}",
            "",
            "",
        ],
        vec!["rank needs", "needs", "Needs", "", "", ""],
        vec![
            "select_multiple_from_file missing.csv",
            "gone",
            "Gone",
            "",
            "",
            "",
        ],
        vec!["calculate", "district_at", "", "", "now()", "${district}"],
    ];
    let choices = vec![
        vec!["list_name", "name", "label"],
        vec!["district", "474", "Thuận Hoá"],
        vec!["district", "476", "Phú Vang"],
        vec!["needs", "food", "Food"],
        vec!["needs", "school", "School"],
    ];
    let sheet = dir.join("files.xlsx");
    xlsx(&sheet, &[("survey", survey), ("choices", choices)]);
    let out = dir.join("files.json");
    let run = crate::harness::mam()
        .args([
            "form",
            "import",
            sheet.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let report =
        String::from_utf8_lossy(&run.stderr).into_owned() + &String::from_utf8_lossy(&run.stdout);
    assert!(
        report.contains("missing.csv: cannot read the file (put the file beside the spreadsheet)"),
        "{report}"
    );
    let form: sync_protocol::Form =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let commune = form.field("commune").unwrap();
    assert_eq!(
        serde_json::to_value(&commune.choices).unwrap(),
        json!([
            { "code": "19753", "label": { "vi": "Phường Thuận Hoá", "en": "Thuan Hoa" }, "props": { "district": "474" } },
            { "code": "19774", "label": { "vi": "Xã \"Hương\" Thọ", "en": "Huong Tho" }, "props": { "district": "476" } }
        ])
    );
    let chosen = |d: &str| {
        let values = |n: &str| (n == "district").then(|| json!(d));
        commune
            .choices
            .iter()
            .filter(|c| commune.offered(c, &values))
            .map(|c| c.code.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(chosen("476"), vec!["19774"]);
    let needs = form.field("needs").unwrap();
    assert_eq!(needs.kind, sync_protocol::form::FieldType::Rank);
    assert!(needs
        .check_value(&json!(["school", "food"]), "2026-01-01")
        .is_ok());
    let short = needs
        .check_value(&json!(["school"]), "2026-01-01")
        .unwrap_err();
    assert_eq!(short.rule, "rank", "{short:?}");
    let twice = needs
        .check_value(&json!(["school", "school"]), "2026-01-01")
        .unwrap_err();
    assert_eq!(twice.rule, "unique");
    assert!(form.field("gone").is_none());
    // A calculation with a trigger: worked out by the phone when the district is chosen, and
    // kept as an answer.
    let at = form.field("district_at").unwrap();
    assert_eq!(at.trigger.as_deref(), Some("district"));
    assert_eq!(at.calculate, Some(json!({ "xpath": [{ "now": [] }] })));
    assert!(!at.shown());
    assert!(form.derived.iter().all(|d| d.name != "district_at"));
}

/// Every spreadsheet of pyxform's own examples (`tests/xlsform/pyxform-examples`, BSD) goes
/// through `mam form import` without a crash: each converts, or is refused with the reason, and
/// what is not converted is named. The fields converted are counted against a floor, so that
/// the importer only ever converts more (`tests/xlsform/coverage.py` sets them against
/// pyxform's count).
pub fn xlsform_corpus_imports_without_a_crash() {
    let corpus = crate::harness::repo_root().join("tests/xlsform/pyxform-examples");
    let mut paths: Vec<_> = std::fs::read_dir(&corpus)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "xls" || x == "xlsx"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 40, "{}", corpus.display());
    fn count(fields: &[Value]) -> usize {
        fields
            .iter()
            .map(|f| match f["type"].as_str() {
                Some("repeat") => count(f["fields"].as_array().unwrap()),
                _ => 1,
            })
            .sum()
    }
    let dir = std::env::temp_dir().join(format!("mam-corpus-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (mut converted, mut refused) = (0, 0);
    for path in &paths {
        let out = dir.join("form.json");
        let _ = std::fs::remove_file(&out);
        let run = crate::harness::mam()
            .args([
                "form",
                "import",
                path.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&run.stderr);
        let name = path.file_name().unwrap().to_string_lossy();
        assert!(
            !stderr.contains("panicked") && matches!(run.status.code(), Some(0 | 1)),
            "{name}: {:?}\n{stderr}",
            run.status
        );
        if out.exists() {
            let form: Value =
                serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
            let n = count(form["fields"].as_array().unwrap())
                + form["derived"].as_array().map_or(0, Vec::len);
            eprintln!("{name}: {n} fields");
            converted += n;
        } else {
            assert!(
                stderr.contains("error:"),
                "{name} refused without a reason: {stderr}"
            );
            eprintln!("{name}: refused: {}", stderr.trim());
            refused += 1;
        }
    }
    eprintln!("{converted} fields converted, {refused} spreadsheets refused");
    assert!(
        converted >= 319,
        "{converted} fields converted: fewer than before"
    );
    assert!(refused == 0, "{refused} spreadsheets refused");
}
