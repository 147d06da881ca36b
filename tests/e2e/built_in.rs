//! `mam serve` in an empty folder: the province's forms, admin units and indicators are built
//! into the binary; a configured folder replaces the built-in copy.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{mam_in, repo_root, Database, Server, COMMUNE};

/// Waits until the server's log holds `text`.
fn wait_for_log(server: &Server, text: &str) {
    let started = Instant::now();
    while !server.log().contains(text) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the log never said {text:?}:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub async fn serve_runs_in_an_empty_folder_on_built_in_schemas(db: Database) {
    let empty = db.scratch("empty");
    std::fs::create_dir(&empty).unwrap();
    let server = Server::start_in(&db, &empty, &[("RUST_LOG", "info")]);
    for kind in ["forms", "admin units", "indicators"] {
        wait_for_log(&server, &format!("{kind}: built-in"));
    }

    let mut hoa = server.enroll("Hoa", &[COMMUNE]).await;
    let mut lan = server.enroll("Lan", &[COMMUNE]).await;
    let manifest: Value = hoa
        .http
        .get(format!("{}/v1/forms", server.url))
        .bearer_auth(&hoa.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let forms = manifest["forms"].as_array().unwrap();
    assert_eq!(forms.len(), 10, "{manifest}");
    assert!(forms.iter().any(|f| f["id"] == "birth-registration"));

    // The built-in form checks the edit, the built-in admin units its commune.
    let id = hoa.create(COMMUNE, &[("child_name", json!("Minh"))]);
    let pushed = hoa.sync().await;
    assert!(
        pushed.iter().all(|r| r.rejected.is_empty()),
        "{:?}",
        pushed.iter().map(|r| &r.rejected).collect::<Vec<_>>()
    );
    lan.sync().await;
    assert_eq!(lan.view(id).value("child_name"), Some(&json!("Minh")));
    let derived = &lan.view(id).derived;
    assert!(
        derived.contains_key("days_to_registration"),
        "derived: {derived:?}"
    );

    // Other commands resolve the same way.
    assert!(server
        .cli(&["units", "list", "--on", "2020-06-01"])
        .starts_with("145 communes"));
    let rebuilt = server.cli(&["indicators", "rebuild"]);
    assert!(
        rebuilt.contains("of 21 indicators from 1 records"),
        "{rebuilt}"
    );

    // A configured folder replaces the built-in copy.
    let one = db.scratch("one-indicator");
    std::fs::create_dir(&one).unwrap();
    std::fs::copy(
        repo_root().join("schemas/indicators/17-birth-registered-on-time.json"),
        one.join("17-birth-registered-on-time.json"),
    )
    .unwrap();
    let out = mam_in(&empty)
        .args(["indicators", "rebuild"])
        .args(&server.db)
        .env("MAM__FORMS__INDICATORS_DIR", &one)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("of 1 indicators"),
        "{text}"
    );
    let out = mam_in(&empty)
        .args(["units", "list"])
        .args(&server.db)
        .env("MAM__FORMS__UNITS_DIR", &empty)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let expected = format!("cannot read {}", empty.join("versions.json").display());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&expected),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(server);

    // `mam serve` says which folder it used.
    let forms_dir = db.scratch("forms");
    std::fs::create_dir(&forms_dir).unwrap();
    std::fs::copy(
        repo_root().join("schemas/forms/birth-registration.v1.json"),
        forms_dir.join("birth-registration.v1.json"),
    )
    .unwrap();
    let forms_dir_text = forms_dir.display().to_string();
    let server = Server::start_in(
        &db,
        &empty,
        &[("RUST_LOG", "info"), ("MAM__FORMS__DIR", &forms_dir_text)],
    );
    wait_for_log(&server, &format!("forms: {forms_dir_text}"));
    wait_for_log(&server, "admin units: built-in");
    let mut hoa_again = server.enroll("Hoa again", &[COMMUNE]).await;
    hoa_again.sync().await;
    assert_eq!(hoa_again.view(id).value("child_name"), Some(&json!("Minh")));
}
