//! Indicator tables: kept current by every sync, equal to a rebuild, and right.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use sync_protocol::{FormId, RecordId};

use crate::harness::{commune, Database, Phone, Rng, Server};

/// Three communes of two districts (2020 map): Thuận Lộc and Kim Long in Huế (474), Phong
/// Điền town in Phong Điền (476).
const COMMUNES: [&str; 3] = ["19753", "19774", "19819"];

fn date(day_of_2020: u64) -> String {
    sync_protocol::expr::date_of_day(
        sync_protocol::expr::day_number("2020-01-01").unwrap() + day_of_2020 as i64,
    )
}

/// What the test expects of one birth, computed here from the values it sent.
#[derive(Clone, Debug, Default)]
struct Birth {
    commune: usize,
    born: String,
    registered: Option<String>,
    card: bool,
    deleted: bool,
    conflicted: bool,
}

impl Birth {
    fn half(&self) -> &'static str {
        if self.born.as_str() < "2020-07-01" {
            "2020-H1"
        } else {
            "2020-H2"
        }
    }

    fn on_time(&self) -> bool {
        let days = |d: &str| sync_protocol::expr::day_number(d).unwrap();
        self.registered
            .as_deref()
            .is_some_and(|r| days(r) - days(&self.born) <= 60)
    }
}

pub(crate) async fn get(server: &Server, token: &str, path: &str) -> Value {
    let response = reqwest::Client::new()
        .get(format!("{}{path}", server.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        200,
        "{path}: {}",
        response.text().await.unwrap()
    );
    response.json().await.unwrap()
}

pub(crate) fn token(server: &Server, scope: &[&str]) -> String {
    let mut args = vec!["token", "create", "--json"];
    args.extend_from_slice(scope);
    let out: Value = serde_json::from_str(&server.cli(&args)).unwrap();
    out["token"].as_str().unwrap().to_owned()
}

pub async fn indicators_follow_every_edit_and_equal_a_rebuild(db: Database) {
    let seed = std::env::var("MAM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_200_610u64);
    eprintln!("indicators test: seed {seed} (replay with MAM_SEED={seed})");
    let mut rng = Rng(seed);
    let server = Server::start(&db);
    let mut phones: Vec<Phone> = Vec::new();
    for c in COMMUNES {
        phones.push(server.enroll(&format!("collaborator {c}"), &[c]).await);
    }
    let mut second = server.enroll("officer 19753", &[COMMUNES[0]]).await;

    // Births: registered within 0–120 days or not at all, some with a health insurance card.
    let mut births: BTreeMap<RecordId, Birth> = BTreeMap::new();
    for (i, phone) in phones.iter_mut().enumerate() {
        for _ in 0..800 {
            let born = date(rng.below(366));
            let registered = (rng.below(4) > 0).then(|| {
                let d = sync_protocol::expr::day_number(&born).unwrap() + rng.below(121) as i64;
                sync_protocol::expr::date_of_day(d)
            });
            let card = rng.below(3) > 0;
            let mut values = vec![
                ("date_of_birth", json!(born)),
                ("bhyt_card_issued", json!(card)),
            ];
            if let Some(r) = &registered {
                values.push(("birth_registered", json!(true)));
                values.push(("registration_date", json!(r)));
            }
            let id = phone.create(COMMUNES[i], &values);
            births.insert(
                id,
                Birth {
                    commune: i,
                    born,
                    registered,
                    card,
                    ..Birth::default()
                },
            );
        }
        phone.sync().await;
    }
    // A few deleted, a few corrected; in the first commune two people correct the same
    // registration date at once: a conflict whose provisional value is the last one applied.
    let ids: Vec<RecordId> = births.keys().copied().collect();
    second.sync().await;
    for (n, id) in ids.iter().enumerate() {
        let b = births.get_mut(id).unwrap();
        let phone = &mut phones[b.commune];
        match n % 17 {
            0 => {
                phone.client.delete(*id).unwrap();
                b.deleted = true;
            }
            1 | 2 => {
                let r = date(rng.below(366).max(1)).max(b.born.clone());
                phone.edit(
                    *id,
                    &[
                        ("birth_registered", json!(true)),
                        ("registration_date", json!(r)),
                    ],
                );
                b.registered = Some(r);
            }
            3 if b.commune == 0 => {
                let mine = b.born.clone();
                let late = sync_protocol::expr::date_of_day(
                    sync_protocol::expr::day_number(&mine).unwrap() + 90,
                );
                phone.edit(
                    *id,
                    &[
                        ("birth_registered", json!(true)),
                        ("registration_date", json!(mine)),
                    ],
                );
                second.edit(
                    *id,
                    &[
                        ("birth_registered", json!(true)),
                        ("registration_date", json!(late.clone())),
                    ],
                );
                b.registered = Some(late);
                b.conflicted = true;
            }
            _ => {}
        }
    }
    for phone in &mut phones {
        phone.sync().await;
    }
    second.sync().await;

    // Commune annual status: population under 16 and the protection fund; injuries.
    let mut population = [0i64; 3];
    let mut expected: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    let add = |old: Option<&(i64, i64)>, n: i64, d: i64| {
        let (a, b) = old.copied().unwrap_or((0, 0));
        (a + n, b + d)
    };
    let mut fund = [false; 3];
    let mut injuries: BTreeMap<(usize, &str), i64> = BTreeMap::new();
    let annual = FormId::parse("commune-annual").unwrap();
    let injury = FormId::parse("injury").unwrap();
    for (i, phone) in phones.iter_mut().enumerate() {
        population[i] = 1000 + rng.below(4000) as i64;
        fund[i] = i != 1;
        phone.client.create(
            RecordId::new_v7(),
            &annual,
            1,
            &commune(COMMUNES[i]),
            [
                ("year", json!(2020)),
                ("report_date", json!("2020-11-20")),
                ("population_under_16", json!(population[i])),
                ("has_child_protection_fund", json!(fund[i])),
                (
                    "population_under_16_by_age",
                    json!([{"age": 5, "boys": 50 + i, "girls": 48}, {"age": 6, "boys": 51, "girls": 47 + i}]),
                ),
                ("decisions_about_children", json!(10 + i)),
                ("decisions_with_consultation", json!(8 + i)),
                ("universal_preschool_5", json!(true)),
                ("primary_level_3", json!(i != 2)),
                ("lower_secondary_level_2", json!(i == 0)),
                ("registered_child_friendly", json!(i != 1)),
            ],
        );
        *expected.entry("children-consulted").or_default() = add(
            expected.get("children-consulted"),
            8 + i as i64,
            10 + i as i64,
        );
        *expected.entry("universal-preschool-5").or_default() =
            add(expected.get("universal-preschool-5"), 1, 1);
        *expected.entry("primary-level-3").or_default() =
            add(expected.get("primary-level-3"), i64::from(i != 2), 1);
        *expected.entry("lower-secondary-level-2").or_default() = add(
            expected.get("lower-secondary-level-2"),
            i64::from(i == 0),
            1,
        );
        *expected.entry("child-friendly-registered").or_default() = add(
            expected.get("child-friendly-registered"),
            i64::from(i != 1),
            1,
        );
        *expected.entry("child-protection-fund").or_default() =
            add(expected.get("child-protection-fund"), i64::from(fund[i]), 1);
        // Kindergarten and grade 1: the schools' enrolment over the communes' children of that age.
        *expected.entry("kindergarten-age-5").or_default() =
            add(expected.get("kindergarten-age-5"), 90, 98 + i as i64);
        *expected.entry("grade-1-age-6").or_default() =
            add(expected.get("grade-1-age-6"), 97, 98 + i as i64);
        let school = FormId::parse("school-aggregate").unwrap();
        phone.client.create(
            RecordId::new_v7(),
            &school,
            1,
            &commune(COMMUNES[i]),
            [
                ("school_name", json!(format!("Trường {i}"))),
                ("school_level", json!("primary")),
                ("school_year", json!("2019-2020")),
                ("report_date", json!("2020-05-30")),
                ("pupils", json!(400)),
                ("pupils_taught_skills", json!(350 + i)),
                ("enrolled_age_5", json!(90)),
                ("enrolled_age_6_grade_1", json!(97)),
            ],
        );
        *expected.entry("pupils-taught-skills").or_default() =
            add(expected.get("pupils-taught-skills"), 350 + i as i64, 400);
        // A play area meeting the criteria in two communes of three.
        let play = FormId::parse("play-area").unwrap();
        phone.client.create(
            RecordId::new_v7(),
            &play,
            1,
            &commune(COMMUNES[i]),
            [
                ("name", json!("Sân chơi")),
                ("survey_date", json!("2020-09-01")),
                ("area_type", json!("park")),
                ("status", json!(if i == 2 { "closed" } else { "in_use" })),
                ("free_open_to_all", json!(true)),
                ("near_water_hazard", json!(false)),
            ],
        );
        *expected.entry("communes-with-play-area").or_default() = add(
            expected.get("communes-with-play-area"),
            i64::from(i != 2),
            1,
        );
        // Children assessed for swimming; measurements; cases — each with its answer known here.
        let swim = FormId::parse("swimming-skills").unwrap();
        let nutrition = FormId::parse("nutrition").unwrap();
        let special = FormId::parse("special-circumstances").unwrap();
        let labour = FormId::parse("child-labour").unwrap();
        for k in 0..20 {
            let (distance, float, entry) = (rng.below(50), rng.below(180), rng.below(2) == 0);
            phone.client.create(
                RecordId::new_v7(),
                &swim,
                1,
                &commune(COMMUNES[i]),
                [
                    ("child_name", json!(format!("Em {k}"))),
                    ("date_of_birth", json!("2010-03-01")),
                    ("assessment_date", json!("2020-10-10")),
                    ("round", json!("annual")),
                    ("assessment_method", json!("practical_test")),
                    ("distance_swum_m", json!(distance)),
                    ("float_tread_seconds", json!(float)),
                    ("safe_entry_exit", json!(entry)),
                ],
            );
            let can = distance >= 25 && float >= 90 && entry;
            *expected.entry("can-swim-safely").or_default() =
                add(expected.get("can-swim-safely"), i64::from(can), 1);
            // A girl of 36 months: 9.5 kg is far below −2 SD (≈ −2.9), 14 kg is the median;
            // 85 cm standing is far below −2 SD (≈ −2.7), 95 cm is the median.
            let (light, short) = (rng.below(3) == 0, rng.below(3) == 0);
            phone.client.create(
                RecordId::new_v7(),
                &nutrition,
                1,
                &commune(COMMUNES[i]),
                [
                    ("child_name", json!(format!("Bé {k}"))),
                    ("sex", json!("f")),
                    ("date_of_birth", json!("2017-03-15")),
                    ("measurement_date", json!("2020-03-15")),
                    ("weight_kg", json!(if light { 9.5 } else { 14.0 })),
                    ("length_height_cm", json!(if short { 85.0 } else { 95.0 })),
                    ("measured_lying", json!(false)),
                ],
            );
            *expected.entry("underweight-under-5").or_default() =
                add(expected.get("underweight-under-5"), i64::from(light), 1);
            *expected.entry("stunting-under-5").or_default() =
                add(expected.get("stunting-under-5"), i64::from(short), 1);
            let (cared, eligible, receiving) =
                (rng.below(10) > 0, rng.below(2) == 0, rng.below(4) > 0);
            let mut values = vec![
                ("child_name", json!(format!("Cháu {k}"))),
                ("groups", json!(["d"])),
                ("report_received_at", json!("2020-04-04")),
                ("cared_for", json!(cared)),
                ("welfare_eligible", json!(eligible)),
            ];
            if eligible {
                values.push(("welfare_received", json!(receiving)));
            }
            phone.client.create(
                RecordId::new_v7(),
                &special,
                1,
                &commune(COMMUNES[i]),
                values,
            );
            *expected
                .entry("special-circumstances-cared-for")
                .or_default() = add(
                expected.get("special-circumstances-cared-for"),
                i64::from(cared),
                1,
            );
            *expected.entry("special-circumstances-welfare").or_default() = add(
                expected.get("special-circumstances-welfare"),
                i64::from(eligible && receiving),
                i64::from(eligible),
            );
            // A 14-year-old in hazardous work is child labour; in household chores is not.
            let (hazardous, supported) = (rng.below(2) == 0, rng.below(3) > 0);
            let mut values = vec![
                ("child_name", json!(format!("Cháu {k}"))),
                ("date_of_birth", json!("2006-01-01")),
                ("detected_on", json!("2020-08-08")),
                (
                    "work_type",
                    json!(if hazardous {
                        "hazardous_listed"
                    } else {
                        "household_chores"
                    }),
                ),
                ("support_given", json!(supported)),
            ];
            if supported {
                values.push(("support_date", json!("2020-08-20")));
            }
            phone.client.create(
                RecordId::new_v7(),
                &labour,
                1,
                &commune(COMMUNES[i]),
                values,
            );
            *expected.entry("child-labour-supported").or_default() = add(
                expected.get("child-labour-supported"),
                i64::from(hazardous && supported),
                i64::from(hazardous),
            );
        }
        for _ in 0..rng.below(8) + 1 {
            let day = date(rng.below(366));
            let half = if day.as_str() < "2020-07-01" {
                "2020-H1"
            } else {
                "2020-H2"
            };
            *injuries.entry((i, half)).or_default() += 1;
            phone.client.create(
                RecordId::new_v7(),
                &injury,
                1,
                &commune(COMMUNES[i]),
                [
                    ("sex", json!("m")),
                    ("age_years", json!(7)),
                    ("incident_date", json!(day)),
                    ("injury_type", json!("08")),
                    ("place", json!("community")),
                    ("outcome", json!("injured")),
                ],
            );
        }
        let responses = phone.sync().await;
        assert!(
            responses.iter().all(|r| r.rejected.is_empty()),
            "{:?}",
            responses[0].rejected
        );
    }

    // The tables as kept by the syncs equal the tables rebuilt from the records.
    let kept = server.cli(&["indicators", "cells"]);
    assert!(server
        .cli(&["indicators", "rebuild"])
        .starts_with("Rebuilt"));
    let rebuilt = server.cli(&["indicators", "cells"]);
    assert_eq!(kept, rebuilt, "incremental tables differ from a rebuild");

    // The API's figures against the test's own count.
    let province = token(&server, &["--scope", "province"]);
    for period in ["2020-H1", "2020-H2"] {
        let table = get(
            &server,
            &province,
            &format!("/v1/indicators?period={period}&level=commune"),
        )
        .await;
        let rows = table["rows"].as_array().unwrap();
        for (i, code) in COMMUNES.iter().enumerate() {
            let row = |id: &str| {
                rows.iter()
                    .find(|r| r["indicator"] == id && r["area"] == *code)
                    .cloned()
            };
            let mine: Vec<&Birth> = births
                .values()
                .filter(|b| b.commune == i && !b.deleted && b.half() == period)
                .collect();
            let on_time = row("birth-registered-on-time").unwrap();
            assert_eq!(on_time["denominator"], json!(mine.len()), "{code} {period}");
            assert_eq!(
                on_time["numerator"],
                json!(mine.iter().filter(|b| b.on_time()).count()),
                "{code} {period}"
            );
            assert_eq!(
                on_time["conflicted"],
                json!(mine.iter().filter(|b| b.conflicted).count()),
                "{code} {period}"
            );
            assert_eq!(on_time["provisional"], json!(false));
            let cards = row("bhyt-card-under-6").unwrap();
            assert_eq!(
                cards["numerator"],
                json!(mine.iter().filter(|b| b.card).count())
            );
            let rate = row("injury-rate").unwrap();
            let hurt = injuries.get(&(i, period)).copied().unwrap_or(0);
            assert_eq!(
                (rate["numerator"].clone(), rate["denominator"].clone()),
                (json!(hurt), json!(population[i]))
            );
            let expected = (hurt as f64 * 100_000.0 / population[i] as f64 * 100.0).round() / 100.0;
            assert_eq!(rate["value"], json!(expected));
        }
    }
    // Districts and the province add their communes up.
    let year = get(
        &server,
        &province,
        "/v1/indicators?period=2020&level=district&geography=2020",
    )
    .await;
    let fund_rows: Vec<&Value> = year["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["indicator"] == "child-protection-fund")
        .collect();
    assert_eq!(fund_rows.len(), 2, "{fund_rows:?}");
    let hue = fund_rows.iter().find(|r| r["area"] == "474").unwrap();
    assert_eq!(
        (hue["numerator"].clone(), hue["denominator"].clone()),
        (json!(1), json!(2))
    );
    assert_eq!(hue["value"], json!(50.0));
    assert_eq!(
        hue["meets_target"],
        json!(false),
        "the target is above 50 %"
    );
    let whole = get(
        &server,
        &province,
        "/v1/indicators?period=2020&level=province",
    )
    .await;
    let births_row = whole["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["indicator"] == "birth-registered-on-time")
        .unwrap()
        .clone();
    let alive: Vec<&Birth> = births.values().filter(|b| !b.deleted).collect();
    assert_eq!(births_row["denominator"], json!(alive.len()));
    assert_eq!(
        births_row["numerator"],
        json!(alive.iter().filter(|b| b.on_time()).count())
    );
    // The province as the 2020 map names it (from 2025 it is Thành phố Huế).
    assert_eq!(births_row["area_name"], "Tỉnh Thừa Thiên Huế");

    // Every indicator of the province for 2020 against the answers worked out above.
    let alive_count = alive.len() as i64;
    expected.insert(
        "birth-registered-on-time",
        (
            alive.iter().filter(|b| b.on_time()).count() as i64,
            alive_count,
        ),
    );
    expected.insert(
        "bhyt-card-under-6",
        (alive.iter().filter(|b| b.card).count() as i64, alive_count),
    );
    expected.insert(
        "injury-rate",
        (injuries.values().sum(), population.iter().sum()),
    );
    assert_eq!(expected.len(), 19, "{expected:?}");
    for (id, (n, d)) in &expected {
        let row = whole["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["indicator"] == *id)
            .unwrap_or_else(|| panic!("no row for {id}"));
        assert_eq!(
            (
                row["numerator"].as_i64().unwrap(),
                row["denominator"].as_i64().unwrap()
            ),
            (*n, *d),
            "{id}"
        );
    }
    for r in whole["rows"].as_array().unwrap() {
        eprintln!(
            "province 2020: {:<32} {:>6} / {:<6} = {:>8} {}",
            r["indicator"].as_str().unwrap(),
            r["numerator"],
            r["denominator"],
            r["value"],
            r["unit"].as_str().unwrap()
        );
    }

    // The annual report as a workbook: a sheet per group, districts as rows, the province last.
    let xlsx = reqwest::Client::new()
        .get(format!("{}/v1/reports/2020.xlsx", server.url))
        .bearer_auth(&province)
        .send()
        .await
        .unwrap();
    assert_eq!(xlsx.status(), 200);
    let path = std::env::temp_dir().join(format!(
        "mam-report-{}-{}.xlsx",
        std::process::id(),
        db.args.join("").len()
    ));
    std::fs::write(&path, xlsx.bytes().await.unwrap()).unwrap();
    {
        use calamine::Reader;
        let mut book: calamine::Xlsx<_> = calamine::open_workbook(&path).unwrap();
        assert_eq!(
            book.sheet_names(),
            [
                "Khai sinh",
                "Y tế, dinh dưỡng",
                "Giáo dục, kỹ năng",
                "Bảo vệ trẻ em",
                "Tham gia, xã phù hợp"
            ]
        );
        let sheet = book.worksheet_range("Khai sinh").unwrap();
        let rows: Vec<Vec<String>> = sheet
            .rows()
            .map(|r| r.iter().map(|c| c.to_string()).collect())
            .collect();
        assert!(
            rows[6][2].starts_with("Trẻ em sinh ra được đăng ký khai sinh đúng hạn"),
            "{:?}",
            rows[6]
        );
        // Every district of the 2020 map, by name, then the province's total under its name.
        let districts: Vec<&str> = rows[7..]
            .iter()
            .map(|r| r[1].as_str())
            .take_while(|n| !n.is_empty())
            .collect();
        assert_eq!(districts.len(), 9 + 1, "{districts:?}");
        assert!(districts.contains(&"Thành phố Huế") && districts.contains(&"Huyện Phong Điền"));
        assert!(
            districts.contains(&"Huyện A Lưới"),
            "a district with no records"
        );
        assert_eq!(districts[9], "Tổng: Tỉnh Thừa Thiên Huế");
        let total = rows
            .iter()
            .find(|r| r[1] == "Tổng: Tỉnh Thừa Thiên Huế")
            .unwrap();
        assert_eq!(total[3], births_row["numerator"].to_string());
        assert_eq!(total[4], births_row["denominator"].to_string());
    }
    let _ = std::fs::remove_file(&path);

    // The 2025 map has no districts; the old communes are carried onto their successors.
    let response = reqwest::Client::new()
        .get(format!(
            "{}/v1/indicators?period=2020&level=district&geography=2025-07",
            server.url
        ))
        .bearer_auth(&province)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let merged = get(
        &server,
        &province,
        "/v1/indicators?period=2020&level=commune&geography=2025-07",
    )
    .await;
    let phu_xuan = merged["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["indicator"] == "child-protection-fund" && r["area"] == "19753")
        .unwrap()
        .clone();
    assert_eq!(phu_xuan["area_name"], "Phường Phú Xuân");

    // A commune's token sees its commune only; every number opens onto its records.
    let own = token(&server, &["--commune", COMMUNES[2]]);
    let table = get(&server, &own, "/v1/indicators?period=2020-H1&level=commune").await;
    assert!(table["rows"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["area"] == COMMUNES[2]));
    let csv = reqwest::Client::new()
        .get(format!(
            "{}/v1/indicators?period=2020-H1&level=commune&format=csv",
            server.url
        ))
        .bearer_auth(&own)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        csv.starts_with("indicator,title,unit,target,area,area_name,numerator"),
        "{csv}"
    );
    assert_eq!(
        csv.lines().count(),
        table["rows"].as_array().unwrap().len() + 1
    );
    let behind = get(
        &server,
        &own,
        &format!(
            "/v1/indicators/birth-registered-on-time/records?area={}&period=2020-H1",
            COMMUNES[2]
        ),
    )
    .await;
    let row = table["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["indicator"] == "birth-registered-on-time")
        .unwrap();
    let listed = behind["records"].as_array().unwrap();
    let numerator = listed.iter().filter(|r| r["part"] == "numerator").count();
    assert_eq!(json!(numerator), row["numerator"]);
    let distinct: std::collections::BTreeSet<String> =
        listed.iter().map(|r| r["record"].to_string()).collect();
    assert_eq!(distinct.len() as i64, row["records"].as_i64().unwrap());
    let refused = reqwest::Client::new()
        .get(format!("{}/v1/indicators?period=2020", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
}
