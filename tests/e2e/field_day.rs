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
