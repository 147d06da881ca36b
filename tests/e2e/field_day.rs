//! The first day in the field, as a district office lives it: figures that do not count what
//! is not known yet, the command line piped into other tools.

use std::io::Read;
use std::process::Stdio;

use serde_json::{json, Value};
use sync_protocol::date::date_of_day;

use crate::harness::{self, Database, Server};
use crate::indicators::{get, token};

const HUE: &str = "19753";

/// Today in Việt Nam (UTC+7), as the server reckons it.
fn today() -> i64 {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    (ms + 7 * 3_600_000).div_euclid(86_400_000)
}

/// The half-year of a day: `2026-H2`.
fn half_of(day: i64) -> String {
    let date = date_of_day(day);
    let half = if date[5..7] <= *"06" { "H1" } else { "H2" };
    format!("{}-{half}", &date[..4])
}

/// A birth whose 60 days have not passed and is not registered is not known yet: pending, left
/// out of the on-time rate, and counted as late once the 60 days are over.
pub async fn outcomes_not_yet_known_are_pending(db: Database) {
    let server = Server::start(&db);
    let mut phone = server.enroll("Hoa", &[HUE]).await;
    let now = today();
    let born = |days_ago: i64| json!(date_of_day(now - days_ago));
    // Twelve days old, not registered: the outcome is not known.
    phone.create(
        HUE,
        &[
            ("child_name", json!("Bé mười hai ngày")),
            ("date_of_birth", born(12)),
            ("birth_registered", json!(false)),
        ],
    );
    // Twelve days old, registered at five days: on time.
    phone.create(
        HUE,
        &[
            ("child_name", json!("Bé đã đăng ký")),
            ("date_of_birth", born(12)),
            ("birth_registered", json!(true)),
            ("registration_date", born(7)),
        ],
    );
    // A hundred days old and not registered: late, for good.
    phone.create(
        HUE,
        &[
            ("child_name", json!("Bé một trăm ngày")),
            ("date_of_birth", born(100)),
            ("birth_registered", json!(false)),
        ],
    );
    phone.sync().await;
    let reader = token(&server, &["--scope", "province"]);
    let row_of = |table: &Value| {
        table["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["indicator"] == "birth-registered-on-time")
            .cloned()
            .unwrap()
    };
    let (young, old) = (half_of(now - 12), half_of(now - 100));
    let path = |period: &str| format!("/v1/indicators?period={period}&level=province");
    let row = row_of(&get(&server, &reader, &path(&young)).await);
    if young == old {
        // All three in one half-year: one on time, one late, one not known.
        assert_eq!(
            (&row["numerator"], &row["denominator"], &row["pending"]),
            (&json!(1), &json!(3), &json!(1)),
            "{row}"
        );
        assert_eq!(row["value"], json!(50.0), "over the two outcomes known");
    } else {
        assert_eq!(
            (&row["numerator"], &row["denominator"], &row["pending"]),
            (&json!(1), &json!(2), &json!(1)),
            "{row}"
        );
        assert_eq!(row["value"], json!(100.0), "the one known is on time");
        let row = row_of(&get(&server, &reader, &path(&old)).await);
        assert_eq!(
            (&row["numerator"], &row["denominator"], &row["pending"]),
            (&json!(0), &json!(1), &json!(0)),
            "{row}"
        );
        assert_eq!(row["value"], json!(0.0));
    }
    // The office names them beside the fraction.
    crate::office::add_user(&server, "hue", "district", "474");
    let page =
        crate::office::signed_in_page(&server, "hue", &format!("/office?period={young}")).await;
    assert!(page.contains("chưa đến hạn"), "{page}");
    // The cells hold the pending record by its day: a rebuild from the records agrees.
    let before = server.cli(&["indicators", "cells"]);
    assert!(before.contains(&format!("\"period\": \"{}\"", date_of_day(now - 12))));
    server.cli(&["indicators", "rebuild"]);
    assert_eq!(server.cli(&["indicators", "cells"]), before);
}

/// The report a district sends: its own name on the total, every commune listed (those
/// without records too), a header saying whose, which period and map, when and by whom; frozen
/// headers and number formats; a CSV Excel reads in Vietnamese; periods, maps, places and dates
/// as people write them.
pub async fn reports_an_office_can_send(db: Database) {
    use calamine::{Data, Reader};
    let server = Server::start(&db);
    crate::office::add_user(&server, "hue", "district", "474");
    let mut phone = server.enroll("Hoa", &[HUE]).await;
    // One birth registered on time, two late: a third, 33,33 %.
    for (name, registered) in [
        ("Một", "2020-03-10"),
        ("Hai", "2020-06-20"),
        ("Ba", "2020-06-25"),
    ] {
        phone.create(
            HUE,
            &[
                ("child_name", json!(name)),
                ("date_of_birth", json!("2020-03-01")),
                ("birth_registered", json!(true)),
                ("registration_date", json!(registered)),
            ],
        );
    }
    phone.sync().await;
    let mut office = crate::office::Office::new(&server);
    office.login("hue", crate::office::PASSWORD).await;

    let (status, _, bytes) = office.download("/office/reports/2020-H1.xlsx").await;
    assert_eq!(status, 200);
    let path = db.scratch("report.xlsx");
    std::fs::write(&path, &bytes).unwrap();
    let mut book = calamine::open_workbook_auto(&path).unwrap();
    let sheet = book.worksheet_range("Khai sinh").unwrap();
    let text = |row: u32, col: u32| match sheet.get_value((row, col)) {
        Some(Data::String(s)) => s.clone(),
        Some(Data::Float(f)) => f.to_string(),
        Some(other) => other.to_string(),
        None => String::new(),
    };
    let head: Vec<String> = (0..5).map(|r| text(r, 0)).collect();
    assert_eq!(head[1], "Đơn vị: Thành phố Huế (474)", "{head:?}");
    assert_eq!(head[2], "Kỳ báo cáo: 6 tháng đầu năm 2020");
    assert_eq!(head[3], "Địa giới hành chính: từ 01/01/2020");
    assert!(
        head[4].starts_with("Ngày lập: ") && head[4].ends_with("Người lập: hue"),
        "{head:?}"
    );
    // Every commune the district had on the 2020 map, then the district's own total.
    let listed: Vec<String> = (7..sheet.height() as u32)
        .map(|r| text(r, 1))
        .take_while(|name| !name.is_empty())
        .collect();
    assert_eq!(listed.len(), 27 + 1, "{listed:?}");
    assert!(listed.contains(&"Phường Thuận Lộc".to_owned()));
    assert!(
        listed.contains(&"Phường Phú Thuận".to_owned()),
        "a commune with no records"
    );
    assert_eq!(listed.last().unwrap(), "Tổng: Thành phố Huế");
    assert!(!listed.iter().any(|n| n.contains("Toàn tỉnh")));
    let row = 7 + listed.iter().position(|n| n == "Phường Thuận Lộc").unwrap() as u32;
    let value = match sheet.get_value((row, 2)) {
        Some(Data::Float(v)) => *v,
        other => panic!("{other:?}"),
    };
    assert!((value - 33.33).abs() < 0.01, "{value}");
    // The sheet's own XML: headers frozen, the rate's number format.
    let xml = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); \
             print(z.read('xl/worksheets/sheet1.xml').decode()); print(z.read('xl/styles.xml').decode())",
        ])
        .arg(&path)
        .output()
        .unwrap();
    let xml = String::from_utf8(xml.stdout).unwrap();
    assert!(
        xml.contains("<pane ") && xml.contains("state=\"frozen\""),
        "{xml}"
    );
    assert!(xml.contains("formatCode=\"0.0&quot; %&quot;\""), "{xml}");

    // The CSV: a byte order mark, Vietnamese headers and decimals; English on request.
    let (_, headers, csv) = office
        .download("/office/targets.csv?period=2020-H1&level=commune")
        .await;
    assert!(headers["content-type"].to_str().unwrap().contains("utf-8"));
    let csv = String::from_utf8(csv).unwrap();
    assert!(csv.starts_with("\u{feff}Mã chỉ tiêu,Chỉ tiêu,"), "{csv}");
    assert!(
        csv.contains("\"Phường Thuận Lộc\"") && csv.contains("\"33,33\""),
        "{csv}"
    );
    let (_, _, english) = office
        .download("/office/targets.csv?period=2020-H1&level=commune&lang=en")
        .await;
    let english = String::from_utf8(english).unwrap();
    assert!(english.starts_with("\u{feff}Indicator,Title,"), "{english}");
    assert!(english.contains(",33.33,"));

    // Periods, maps and dates as people write them.
    let (_, page) = office.get("/office?period=2020-H1").await;
    assert!(page.contains("6 tháng đầu năm 2020") && page.contains("Địa giới từ 01/07/2025"));
    assert!(
        page.contains("Thành phố Huế (474)") && !page.contains("Huyện Huế"),
        "{page}"
    );
    let id = phone.named("Một");
    let (_, record) = office.get(&format!("/office/records/{id}")).await;
    assert!(record.contains("01/03/2020"), "{record}");
    assert!(
        record.contains("<h1>Một · "),
        "a record is titled by its name: {record}"
    );
    // The records list finds a name without its marks, and says which date it shows.
    let (_, list) = office.get("/office/records?name=mot").await;
    assert!(
        list.contains("id=\"found\">1<") && list.contains("Một"),
        "{list}"
    );
    assert!(list.contains("01/03/2020 (Ngày sinh)"), "{list}");

    // A form's records, exported: codes and labels, the area's records only.
    let mut far = server.enroll("Lan", &["20047"]).await;
    far.create("20047", &[("child_name", json!("Bé A Lưới"))]);
    far.sync().await;
    let (status, _, csv) = office
        .download("/office/records.csv?form=birth-registration")
        .await;
    assert_eq!(status, 200);
    let csv = String::from_utf8(csv).unwrap();
    let header = csv.lines().next().unwrap();
    assert!(header.starts_with("\u{feff}Mã hồ sơ,Mã xã,"), "{header}");
    assert!(
        header.contains("Giới tính [sex]") && header.contains("Giới tính (nhãn)"),
        "{header}"
    );
    assert_eq!(csv.lines().count(), 1 + 3, "{csv}");
    assert!(
        csv.contains("Phường Phú Xuân") && csv.contains(",f,Nữ,"),
        "{csv}"
    );
    assert!(!csv.contains("Bé A Lưới"));
    let (status, _, _) = office
        .download("/office/records.csv?form=birth-registration&commune=20047")
        .await;
    assert_eq!(status, 404, "another district's commune");
    let (_, page) = office.get("/office/records?form=birth-registration").await;
    assert!(page.contains("/office/records.xlsx?form=birth-registration"));
    // A repeat group gets a sheet of its own, a line per item.
    phone.client.create(
        sync_protocol::RecordId::new_v7(),
        &sync_protocol::FormId::parse("commune-annual").unwrap(),
        1,
        &harness::commune(HUE),
        [
            ("year", json!(2020)),
            ("report_date", json!("2020-12-31")),
            ("population_under_16", json!(22)),
            (
                "population_under_16_by_age",
                json!([{"age": 0, "boys": 5, "girls": 6}, {"age": 1, "boys": 4, "girls": 7}]),
            ),
        ],
    );
    phone.sync().await;
    assert!(
        phone.client.rejected().is_empty(),
        "{:?}",
        phone.client.rejected()
    );
    let (status, _, bytes) = office
        .download("/office/records.xlsx?form=commune-annual")
        .await;
    assert_eq!(status, 200);
    std::fs::write(&path, &bytes).unwrap();
    let mut book = calamine::open_workbook_auto(&path).unwrap();
    assert_eq!(book.sheet_names(), ["Hồ sơ", "population_under_16_by_age"]);
    let items = book.worksheet_range("population_under_16_by_age").unwrap();
    assert_eq!(items.height(), 1 + 2);
    let _ = std::fs::remove_file(&path);
}

/// A command whose reader stops early (`mam units list | head`) ends quietly: no panic, no
/// backtrace.
pub async fn commands_end_quietly_on_a_closed_pipe(db: Database) {
    let server = Server::start(&db);
    for args in [
        vec!["units", "list"],
        vec!["device", "list"],
        vec!["form", "list"],
    ] {
        let mut child = harness::mam()
            .args(&args)
            .args(&server.db)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The reader goes away before a line is read: every write finds the pipe closed.
        drop(child.stdout.take());
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        let status = child.wait().unwrap();
        assert!(!stderr.contains("panicked"), "mam {args:?}: {stderr}");
        assert!(status.success(), "mam {args:?}: {status:?} {stderr}");
    }
}

/// A certificate renewed on disk (by certbot or any ACME client, or by hand) is served from
/// the next connection on, with no restart; a renewal that does not make a certificate and its
/// key leaves the one in use serving.
pub async fn renewed_certificates_are_served_without_a_restart() {
    let dir = std::env::temp_dir().join(format!("mam-renew-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let make = |name: &str| {
        let (c, k) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        harness::test_certificate(&c, &k, name);
        (c, k)
    };
    // Put in place as a renewal does: whole files, renamed over the old ones.
    let install = |(c, k): &(std::path::PathBuf, std::path::PathBuf)| {
        std::fs::copy(c, dir.join("next.crt")).unwrap();
        std::fs::copy(k, dir.join("next.key")).unwrap();
        std::fs::rename(dir.join("next.crt"), &cert).unwrap();
        std::fs::rename(dir.join("next.key"), &key).unwrap();
    };
    let first = make("mam-first.test");
    install(&first);
    let db = Database::fresh(crate::harness::Backend::Sqlite)
        .await
        .unwrap();
    let server = Server::start_in(
        &db,
        &dir,
        &[
            ("MAM__SERVER__TLS_CERT", cert.to_str().unwrap()),
            ("MAM__SERVER__TLS_KEY", key.to_str().unwrap()),
            ("RUST_LOG", "info"),
        ],
    );
    let port = server.url.rsplit(':').next().unwrap().to_owned();
    let subject = || {
        let out = std::process::Command::new("openssl")
            .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines()
            .find(|l| l.starts_with("subject="))
            .unwrap_or_else(|| panic!("no certificate: {text}"))
            .to_owned()
    };
    assert!(subject().contains("mam-first.test"));
    // Change times must differ from the first files'.
    std::thread::sleep(std::time::Duration::from_millis(20));
    install(&make("mam-renewed.test"));
    assert!(
        subject().contains("mam-renewed.test"),
        "served from the next connection"
    );
    // A key that is not this certificate's: the renewed one stays.
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::copy(&first.1, dir.join("next.key")).unwrap();
    std::fs::rename(dir.join("next.key"), &key).unwrap();
    assert!(subject().contains("mam-renewed.test"));
    let started = std::time::Instant::now();
    while !server.log().contains("still serving the one before") {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{}",
            server.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
