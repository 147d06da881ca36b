//! Upgrades keep the data: a database made by the release before (`tests/upgrade/fixture`)
//! opens with this one, is migrated, and serves the same records and indicators; migrations a
//! database may have applied are never edited.

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::harness::{repo_root, Database, Server};

/// Every record as a phone of these communes pulls it from cursor 0, by id.
async fn everything(server: &Server, communes: &[&str]) -> Vec<Value> {
    let phone = server.enroll("Kiểm tra nâng cấp", communes).await;
    let mut records = Vec::new();
    let mut cursor = 0u64;
    loop {
        let page: Value = phone
            .send_text(serde_json::json!({"protocol": 1, "cursor": cursor, "push": []}).to_string())
            .await
            .json()
            .await
            .unwrap();
        records.extend(page["records"].as_array().unwrap().iter().cloned());
        cursor = page["cursor"].as_u64().unwrap();
        if !page["more"].as_bool().unwrap() {
            break;
        }
    }
    records.sort_by_key(|r| r["id"].as_str().unwrap().to_owned());
    records
}

pub async fn a_database_of_the_release_before_opens_and_serves_the_same(db: Database) {
    let fixture = repo_root().join("tests/upgrade/fixture");
    match db.url() {
        Some(url) => {
            use sqlx::Connection;
            let dump = std::fs::read_to_string(fixture.join("postgres.sql")).unwrap();
            let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
            sqlx::raw_sql(&dump).execute(&mut conn).await.unwrap();
        }
        None => {
            let dir = std::path::Path::new(&db.args[1]);
            std::fs::create_dir_all(dir).unwrap();
            std::fs::copy(fixture.join("sqlite.db"), dir.join("mam.db")).unwrap();
        }
    }
    let server = Server::start(&db);
    let expected: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(fixture.join("records.json")).unwrap())
            .unwrap();
    let served = everything(&server, &["19753", "19774"]).await;
    assert_eq!(served.len(), expected.len(), "every record is still there");
    for (ours, theirs) in served.iter().zip(&expected) {
        assert_eq!(
            ours, theirs,
            "record {} as the release before served it",
            theirs["id"]
        );
    }
    let cells = server.cli(&["indicators", "cells"]);
    assert_eq!(
        cells,
        std::fs::read_to_string(fixture.join("cells.txt")).unwrap(),
        "the indicator tables as the release before kept them"
    );
    // Names written before the office searched them in the database are filled in at start.
    crate::office::add_user(&server, "kiemtra", "province", "46");
    let page =
        crate::office::signed_in_page(&server, "kiemtra", "/office/records?name=tre+1").await;
    assert!(page.contains("Trẻ 1") && !page.contains("Trẻ 0"), "{page}");
    // And the upgraded database takes new edits.
    let mut phone = server.enroll("Sau nâng cấp", &["19753"]).await;
    let id = phone.create("19753", &[("child_name", "Bé Mới".into())]);
    phone.sync().await;
    assert!(phone.client.view(id).is_some());
}

/// A migration a database may already have applied is never edited: each is listed with its
/// SHA-256 in `tests/upgrade/migrations.sha256`, and a new one is added to the list.
pub fn applied_migrations_are_never_edited() {
    let root = repo_root();
    let listed = std::fs::read_to_string(root.join("tests/upgrade/migrations.sha256")).unwrap();
    let mut names = Vec::new();
    for line in listed.lines().filter(|l| !l.trim().is_empty()) {
        let (hash, name) = line.split_once("  ").unwrap();
        let text = std::fs::read(root.join("server/migrations").join(name))
            .unwrap_or_else(|_| panic!("migration {name} is gone: migrations are never removed"));
        let got: String = Sha256::digest(&text)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            got, hash,
            "migration {name} was edited: add a new migration instead"
        );
        names.push(name.to_owned());
    }
    for backend in ["sqlite", "postgres"] {
        for entry in std::fs::read_dir(root.join("server/migrations").join(backend)).unwrap() {
            let name = format!("{backend}/{}", entry.unwrap().file_name().to_string_lossy());
            assert!(
                names.contains(&name),
                "{name} is not in tests/upgrade/migrations.sha256: add it with its SHA-256"
            );
        }
    }
}
