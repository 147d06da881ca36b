//! The edit log across an upgrade. Earlier versions logged one row per edit; the log is now
//! one row per push. A database written by an earlier version is carried over: its edits
//! still answer repeats, still tell a reused seq, and still make up their record's history.

use serde_json::{json, Value};
use sqlx::Connection;
use sync_protocol::{Client, RejectCode, SyncResponse};

use crate::harness::{repo_root, Database, Phone, Server, COMMUNE};

/// The first migrations of a backend: the schema of the versions with a per-edit log.
const EARLIER: &[&str] = &[
    "0001_sync.sql",
    "0002_forms_villages.sql",
    "0003_indicators.sql",
    "0004_accounts.sql",
];

/// SQL text literal (test values only).
fn text(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

pub async fn an_earlier_edit_log_is_carried_over(db: Database) {
    // The schema as an earlier version left it.
    let postgres = db.args[0] == "--database-url";
    let earlier =
        std::env::temp_dir().join(format!("mam_earlier_{}_{}", std::process::id(), postgres));
    std::fs::create_dir_all(&earlier).unwrap();
    let backend = if postgres { "postgres" } else { "sqlite" };
    for name in EARLIER {
        std::fs::copy(
            repo_root()
                .join("server/migrations")
                .join(backend)
                .join(name),
            earlier.join(name),
        )
        .unwrap();
    }
    let migrator = sqlx::migrate::Migrator::new(earlier.as_path())
        .await
        .unwrap();
    let url = if postgres {
        db.args[1].clone()
    } else {
        std::fs::create_dir_all(&db.args[1]).unwrap();
        format!("sqlite://{}/mam.db?mode=rwc", db.args[1])
    };

    // What it held: a phone's record made by its edit 1, and its edit 2 refused.
    let token = "an-earlier-token";
    let device = 7;
    let mut phone = Phone {
        client: Client::new(device),
        token: token.into(),
        http: reqwest::Client::new(),
        url: String::new(),
    };
    let id = phone.create(COMMUNE, &[("child_name", json!("Lê Văn Cũ"))]);
    let body = serde_json::to_string(&phone.view(id)).unwrap();
    phone.edit(id, &[("date_of_birth", json!("2031-01-01"))]);
    let sent: Vec<String> = phone
        .client
        .sync_request()
        .push
        .iter()
        .map(|e| serde_json::to_string(e).unwrap())
        .collect();
    let script = format!(
        "INSERT INTO devices (id, name, communes, token_hash, last_seq, created_at, enrolled_at)
           VALUES ({device}, 'Hoa', '{COMMUNE}', {hash}, 2, 0, 0);
         INSERT INTO records (id, form, version, commune, body, changed_at, conflicted, deleted, created_at, updated_at)
           VALUES ('{id}', 'birth-registration', 1, '{COMMUNE}', {body}, 1, FALSE, FALSE, 1000, 1000);
         UPDATE counters SET value = 1 WHERE name = 'changes';
         INSERT INTO edits (device, seq, record, body, rejected, received_at)
           VALUES ({device}, 1, '{id}', {one}, FALSE, 1000), ({device}, 2, '{id}', {two}, TRUE, 2000);
         INSERT INTO rejections (device, seq, code, field, message, body, received_at)
           VALUES ({device}, 2, 'invalid_value', 'date_of_birth', 'the date of birth is in the future', {two}, 2000);",
        hash = text(&mam::auth::hash(token)),
        body = text(&body),
        one = text(&sent[0]),
        two = text(&sent[1]),
    );
    if postgres {
        let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
        migrator.run(&mut conn).await.unwrap();
        sqlx::raw_sql(&script).execute(&mut conn).await.unwrap();
    } else {
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        migrator.run(&mut conn).await.unwrap();
        sqlx::raw_sql(&script).execute(&mut conn).await.unwrap();
    }
    let _ = std::fs::remove_dir_all(&earlier);

    // This version opens it and migrates it.
    let server = Server::start(&db);
    phone.url = server.url.clone();
    let request = |push: &[&str]| {
        format!(
            "{{\"protocol\":1,\"cursor\":0,\"max_bytes\":1048576,\"push\":[{}]}}",
            push.join(",")
        )
    };

    // Edit 1 sent again is a repeat, and the refusal of edit 2 is told again.
    let response = phone.send_text(request(&[&sent[0]])).await;
    assert_eq!(response.status(), 200);
    let reply: SyncResponse = response.json().await.unwrap();
    assert_eq!(reply.acked_through, 2);
    let codes: Vec<(u64, RejectCode)> = reply
        .rejected
        .iter()
        .map(|r| (r.seq, r.code.clone()))
        .collect();
    assert_eq!(
        codes,
        vec![(2, RejectCode::InvalidValue)],
        "a repeat, not a reused seq"
    );
    assert_eq!(reply.records.len(), 1, "the record is still there");

    // Another edit under seq 1 is told from it.
    let mut other: Value = serde_json::from_str(&sent[0]).unwrap();
    other["fields"]["child_name"]["value"] = json!("Lê Văn Khác");
    let reply: SyncResponse = phone
        .send_text(request(&[&other.to_string()]))
        .await
        .json()
        .await
        .unwrap();
    assert!(
        reply
            .rejected
            .iter()
            .any(|r| r.seq == 1 && r.code == RejectCode::SeqReused),
        "{:?}",
        reply.rejected
    );

    // A new edit lands in the new log.
    phone.sync().await;
    phone.edit(id, &[("child_name", json!("Lê Văn Mới"))]);
    phone.sync().await;
    assert_eq!(
        phone.view(id).value("child_name"),
        Some(&json!("Lê Văn Mới"))
    );

    // The record's history holds all three edits, the old ones as they were received.
    let mut settings = mam::config::Settings::default();
    if postgres {
        settings.database.url = Some(url);
        settings.database.max_connections = 2;
    } else {
        settings.storage.data_dir = db.args[1].clone().into();
    }
    let store = mam::store::open(&settings).await.unwrap();
    let history = store.record_edits(id).await.unwrap();
    let seen: Vec<(i64, bool, Option<&str>)> = history
        .iter()
        .map(|e| (e.seq, e.rejected, e.device_name.as_deref()))
        .collect();
    assert_eq!(
        seen,
        vec![
            (1, false, Some("Hoa")),
            (2, true, Some("Hoa")),
            (3, false, Some("Hoa"))
        ]
    );
    assert_eq!(history[0].body, sent[0]);
    assert_eq!(history[1].body, sent[1]);
    assert!(history[2].body.contains("Lê Văn Mới"));

    // The records list still finds it among records with a refused edit.
    let query = mam::store::RecordQuery {
        forms: vec!["birth-registration".into()],
        communes: vec![COMMUNE.into()],
        refused_edit: true,
        ..Default::default()
    };
    let (found, total) = store.find_records(&query).await.unwrap();
    assert_eq!(total, 1);
    assert_eq!(found[0].id, id);
}
