//! Nothing lost at the edges: two edits under one seq, a phone restored from its own backup,
//! a server restored from a backup (SQLite: `mam backup` / `mam restore`; PostgreSQL: its own
//! dump and `mam epoch renew`), and an indicator rebuild racing the pushes.

use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};
use sqlx::Connection;
use sync_protocol::{Client, RejectCode, SyncRequest, SyncResponse};

use crate::harness::{self, Backend, Database, Phone, Server, COMMUNE};

/// Two different edits under one seq in one push: the first is taken, the second is refused
/// `seq_reused` and kept for review, and nothing after that seq is applied.
pub async fn two_edits_under_one_seq_are_refused_and_kept(db: Database) {
    let server = Server::start(&db);
    let mut a = server.enroll("Hoa", &[COMMUNE]).await;
    let first = a.create(COMMUNE, &[("child_name", json!("Một"))]);
    let second = a.create(COMMUNE, &[("child_name", json!("Hai"))]);
    a.create(COMMUNE, &[("child_name", json!("Ba"))]);
    let mut request = a.client.sync_request();
    // The second edit sent under the first one's seq, then the third after it.
    request.push[1].seq = 1;
    request.push[2].seq = 2;
    let response: SyncResponse = a.send(&request).await.json().await.unwrap();
    assert_eq!(response.acked_through, 1, "nothing after the reused seq");
    assert_eq!(response.rejected.len(), 1, "{:?}", response.rejected);
    assert_eq!(response.rejected[0].seq, 1);
    assert_eq!(response.rejected[0].code, RejectCode::SeqReused);
    let ids: Vec<_> = response.records.iter().map(|r| r.id).collect();
    assert_eq!(
        ids,
        vec![first],
        "only the first edit under seq 1 was applied"
    );
    let listed = server.cli(&["rejected", "list", "--json"]);
    let listed: Value = serde_json::from_str(&listed).unwrap();
    let refusal = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["code"] == "seq_reused")
        .expect("the refusal is kept");
    assert_eq!(refusal["edit"]["record"], json!(second.to_string()));
    // The same push sent again (a lost response): still one record, the refusal repeated.
    let again: SyncResponse = a.send(&request).await.json().await.unwrap();
    assert_eq!(again.acked_through, 1);
    assert!(again
        .rejected
        .iter()
        .any(|r| r.code == RejectCode::SeqReused));
}

/// A phone restored from its own earlier backup edits before it syncs: its seqs were used by
/// the history the server holds. It takes a successor number and replays every edit: the other
/// history's values stay, its own "first", "second", "third" end as "third", unflagged.
pub async fn a_restored_phone_takes_a_successor_and_loses_nothing(db: Database) {
    let server = Server::start(&db);
    let mut a = server.enroll("Hoa", &[COMMUNE]).await;
    let shared = a.create(COMMUNE, &[("child_name", json!("Lan"))]);
    a.sync().await;
    let backup = a.client.clone();
    let kept = a.create(COMMUNE, &[("child_name", json!("Của bản gốc"))]);
    a.edit(shared, &[("notes", json!("ghi chú của bản gốc"))]);
    a.sync().await;

    let mut restored = Phone {
        client: backup,
        token: a.token.clone(),
        http: reqwest::Client::new(),
        url: server.url.clone(),
    };
    let mine = restored.create(COMMUNE, &[("child_name", json!("first"))]);
    restored.edit(mine, &[("child_name", json!("second"))]);
    restored.edit(mine, &[("child_name", json!("third"))]);
    restored.edit(shared, &[("village", json!("Thôn 9"))]);
    let old = restored.device();
    restored.sync().await;
    assert_ne!(
        restored.device(),
        old,
        "the restored phone took a successor number"
    );
    assert!(
        restored.client.rejected().is_empty(),
        "{:?}",
        restored.client.rejected()
    );
    restored.sync().await;
    a.sync().await;
    for phone in [&a, &restored] {
        let view = phone.view(mine);
        assert_eq!(view.value("child_name"), Some(&json!("third")));
        assert!(!view.is_conflicted(), "{view:?}");
        assert_eq!(
            phone.view(kept).value("child_name"),
            Some(&json!("Của bản gốc"))
        );
        let shared = phone.view(shared);
        assert_eq!(shared.value("notes"), Some(&json!("ghi chú của bản gốc")));
        assert_eq!(shared.value("village"), Some(&json!("Thôn 9")));
        assert!(!shared.is_conflicted(), "{shared:?}");
    }
    // The office sees the successor, linked to the phone it follows.
    let devices: Value = serde_json::from_str(&server.cli(&["device", "list", "--json"])).unwrap();
    let successor = devices
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == json!(restored.device()))
        .expect("the successor is listed");
    assert_eq!(successor["predecessor"], json!(old));
    assert_eq!(successor["name"], json!("Hoa"));
    assert_eq!(successor["communes"], json!([COMMUNE]));
    // And so does the office's Phones page.
    crate::office::add_user(&server, "tinh", "province", "46");
    let mut office = crate::office::Office::new(&server);
    assert_eq!(office.login("tinh", crate::office::PASSWORD).await.0, 303);
    let (_, page) = office.get("/office/phones").await;
    assert!(
        page.contains(&format!("tiếp nối máy #{old}")),
        "the Phones page links the successor to the phone it follows"
    );
    // Asking again with the same request id names the same successor, with a new token.
    let request = json!({"protocol": 1, "request": "again"});
    let ask = || {
        reqwest::Client::new()
            .post(format!("{}/v1/successor", server.url))
            .bearer_auth(&a.token)
            .json(&request)
            .send()
    };
    let one: Value = ask().await.unwrap().json().await.unwrap();
    let two: Value = ask().await.unwrap().json().await.unwrap();
    assert_eq!(one["device"], two["device"]);
    assert_ne!(one["token"], two["token"]);
    // Without a token, nothing.
    let anonymous = reqwest::Client::new()
        .post(format!("{}/v1/successor", server.url))
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
}

pub(crate) fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run a command");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A backup taken while the server runs.
pub(crate) fn back_up(server: &Server, db: &Database, file: &Path) {
    match db.backend() {
        Backend::Sqlite => {
            let out = server.cli(&["backup", file.to_str().unwrap()]);
            assert!(out.contains("Backed up"), "{out}");
        }
        Backend::Postgres => {
            run(Command::new("pg_dump")
                .args(["-Fc", "-f", file.to_str().unwrap()])
                .arg(db.url().unwrap()));
        }
    }
}

/// Stop the server, put the backup back, start it again.
pub(crate) async fn restore(server: &mut Server, db: &Database, file: &Path) {
    match db.backend() {
        Backend::Sqlite => {
            // Not under a running server.
            let out = harness::mam()
                .args(["restore", file.to_str().unwrap()])
                .args(&db.args)
                .output()
                .unwrap();
            assert!(!out.status.success(), "restore refused while serving");
            assert!(String::from_utf8_lossy(&out.stderr).contains("stop it"));
            server.kill();
            let out = run(harness::mam()
                .args(["restore", file.to_str().unwrap()])
                .args(&db.args));
            assert!(out.contains("new epoch"), "{out}");
        }
        Backend::Postgres => {
            server.kill();
            db.recreate_postgres().await;
            run(Command::new("pg_restore")
                .args(["--no-owner", "-d", db.url().unwrap()])
                .arg(file));
            let out = run(harness::mam().args(["epoch", "renew"]).args(&db.args));
            assert!(out.contains("New epoch"), "{out}");
        }
    }
    *server = Server::start(db);
}

/// Yesterday's backup put back: every edit still on a phone comes back, a phone whose cursor is
/// ahead of the restored database gets what changed after the restore, and the seqs a phone no
/// longer holds are consumed as lost and shown to the office instead of blocking it.
pub async fn a_restored_server_gets_back_what_phones_kept(db: Database) {
    let mut server = Server::start(&db);
    let mut a = server.enroll("Hoa", &[COMMUNE]).await;
    let mut b = server.enroll("Lan", &[COMMUNE]).await;
    let mut c = server.enroll("Minh", &[COMMUNE]).await;
    let mut d = server.enroll("Mai", &[COMMUNE]).await;
    let one = a.create(COMMUNE, &[("child_name", json!("Một"))]);
    a.sync().await;
    for p in [&mut b, &mut c, &mut d] {
        p.sync().await;
    }
    let file = db.scratch("backup.db");
    back_up(&server, &db, &file);

    // Acknowledged after the backup, so lost by the restore.
    let two = a.create(COMMUNE, &[("child_name", json!("Hai"))]);
    a.sync().await;
    b.edit(one, &[("child_name", json!("Một Một"))]);
    b.sync().await;
    // Mai's edit is acknowledged, then forgotten by her phone (past its retention).
    let gone = d.create(COMMUNE, &[("child_name", json!("Mất"))]);
    d.sync().await;
    d.client = std::mem::take(&mut d.client).with_retention(0);
    d.client.set_now(i64::MAX / 2);
    d.sync().await;
    assert!(d.client.kept().is_empty());
    c.sync().await;
    a.sync().await;
    b.sync().await;

    restore(&mut server, &db, &file).await;
    for p in [&mut a, &mut b, &mut c, &mut d] {
        p.url = server.url.clone();
    }
    // Every phone syncs: pulls from the start, pushes again what the restore lost.
    for _ in 0..2 {
        for p in [&mut a, &mut b, &mut c, &mut d] {
            p.sync().await;
        }
    }
    // Mai types again: her next push declares the seq she no longer holds.
    let again = d.create(COMMUNE, &[("child_name", json!("Mất, nhập lại"))]);
    d.sync().await;
    assert!(d.client.pending().is_empty() && d.client.lost_through().is_none());
    for p in [&mut a, &mut b, &mut c] {
        p.sync().await;
    }
    for p in [&a, &b, &c, &d] {
        assert_eq!(p.view(two).value("child_name"), Some(&json!("Hai")));
        let first = p.view(one);
        assert_eq!(first.value("child_name"), Some(&json!("Một Một")));
        assert!(!first.is_conflicted(), "{first:?}");
        assert_eq!(
            p.view(again).value("child_name"),
            Some(&json!("Mất, nhập lại"))
        );
        // Pulled before the restore, gone from the restored database: the pull that started
        // again from the beginning dropped it, on the phone that made it too.
        assert!(
            p.client.view(gone).is_none(),
            "an edit no phone kept is gone for good"
        );
    }
    // What the restore lost for good is shown to the office, and per phone what came back.
    let listed = server.cli(&["rejected", "list"]);
    assert!(listed.contains("lost"), "{listed}");
    let phones = server.cli(&["device", "list"]);
    let line = |device: u32| {
        phones
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{device} ")))
            .unwrap_or_else(|| panic!("no line for #{device}: {phones}"))
            .to_owned()
    };
    assert!(
        line(a.device()).contains("since the restore: seqs 2–2, 0 of them lost"),
        "{phones}"
    );
    assert!(
        line(d.device()).contains("since the restore: seqs 1–2, 1 of them lost"),
        "{phones}"
    );
    assert!(
        line(c.device()).contains("nothing sent since the restore"),
        "{phones}"
    );
    // A phone that speaks no epoch still gets a correct answer.
    let old = SyncRequest {
        epoch: None,
        ..Client::new(c.device()).sync_request()
    };
    let text = serde_json::to_string(&old).unwrap();
    assert!(!text.contains("epoch"));
    let answer: SyncResponse = c.send_text(text).await.json().await.unwrap();
    assert!(answer.epoch.is_some() && answer.next_seq.is_some());
}

/// `mam indicators rebuild` while phones push: whatever lands before, during or after it, the
/// tables equal a rebuild made when all is quiet. The rebuild reads the records a thousand at
/// a time: over more than two thousand it gives the tables the syncs kept.
pub async fn a_rebuild_racing_pushes_loses_no_push(db: Database) {
    let server = Server::start(&db);
    let mut early = server.enroll("Mai", &[COMMUNE]).await;
    for i in 0..2_100 {
        early.create(
            COMMUNE,
            &[
                ("child_name", json!(format!("Bé {i}"))),
                ("birth_registered", json!(i % 3 > 0)),
                (
                    "registration_date",
                    json!(format!("2020-{:02}-{:02}", 2 + i % 11, 1 + i % 28)),
                ),
            ],
        );
    }
    let responses = early.sync().await;
    let refused: Vec<_> = responses.iter().flat_map(|r| &r.rejected).collect();
    assert!(refused.is_empty(), "{:?}", &refused[..3.min(refused.len())]);
    let kept = server.cli(&["indicators", "cells"]);
    let rebuilt = server.cli(&["indicators", "rebuild"]);
    assert!(rebuilt.contains("from 2100 records"), "{rebuilt}");
    assert_eq!(
        server.cli(&["indicators", "cells"]),
        kept,
        "a rebuild in chunks gives the tables the syncs kept"
    );
    let mut phones = Vec::new();
    for name in ["Hoa", "Lan"] {
        phones.push(server.enroll(name, &[COMMUNE]).await);
    }
    let url = server.url.clone();
    let pushing = tokio::spawn(async move {
        for round in 0..30 {
            for p in phones.iter_mut() {
                p.url = url.clone();
                p.create(
                    COMMUNE,
                    &[
                        ("child_name", json!(format!("Bé {round}"))),
                        ("birth_registered", json!(true)),
                        ("registration_date", json!("2020-01-20")),
                    ],
                );
                p.sync().await;
            }
        }
    });
    let args = db.args.clone();
    let rebuilding = tokio::task::spawn_blocking(move || {
        for _ in 0..6 {
            run(harness::mam().args(["indicators", "rebuild"]).args(&args));
        }
    });
    pushing.await.unwrap();
    rebuilding.await.unwrap();
    let during = server.cli(&["indicators", "cells"]);
    server.cli(&["indicators", "rebuild"]);
    let quiet = server.cli(&["indicators", "cells"]);
    assert_eq!(
        during, quiet,
        "the tables after the race equal a quiet rebuild"
    );
}

/// The office settles a conflict, a phone writes over that settle, and the database is put
/// back to a backup taken before both. The office settles again what it sees now, then the
/// phone's edit comes back: the new settle stands beside it, made under a number no phone has
/// seen, not under the lost settle's, which the phone's edit supersedes.
pub async fn office_settles_after_a_restore_are_kept(db: Database) {
    let mut server = Server::start(&db);
    crate::office::add_user(&server, "xa", "commune", COMMUNE);
    let mut a = server.enroll("Hoa", &[COMMUNE]).await;
    let mut b = server.enroll("Lan", &[COMMUNE]).await;
    let id = a.create(COMMUNE, &[("child_name", json!("Một"))]);
    a.sync().await;
    b.sync().await;
    a.edit(id, &[("child_name", json!("Hoa viết"))]);
    b.edit(id, &[("child_name", json!("Lan viết"))]);
    a.sync().await;
    b.sync().await;
    a.sync().await;
    assert!(a.view(id).is_conflicted());
    let file = db.scratch("backup.db");
    back_up(&server, &db, &file);

    // Settles what the page shows, typing `value`.
    async fn settle(server: &Server, id: sync_protocol::RecordId, value: &str) {
        let mut office = crate::office::Office::new(server);
        office.login("xa", crate::office::PASSWORD).await;
        let csrf = office.csrf().await;
        let path = format!("/office/records/{id}");
        let (_, page) = office.get(&path).await;
        let shown = crate::office::hidden(&page, "shown");
        let response = office
            .post(
                &format!("{path}/settle"),
                &[
                    ("csrf", csrf.as_str()),
                    ("shown", shown.as_str()),
                    ("pick:child_name", "other"),
                    ("other:child_name", value),
                ],
            )
            .await;
        assert_eq!(response.status(), 303, "{}", response.text().await.unwrap());
    }
    settle(&server, id, "Văn phòng chọn").await;
    a.sync().await;
    assert_eq!(
        a.view(id).value("child_name"),
        Some(&json!("Văn phòng chọn"))
    );
    a.edit(id, &[("child_name", json!("Hoa sửa sau"))]);
    a.sync().await;

    // Put back; the office settles again before Hoa's phone has brought its edit back.
    restore(&mut server, &db, &file).await;
    for p in [&mut a, &mut b] {
        p.url = server.url.clone();
    }
    b.sync().await;
    settle(&server, id, "Văn phòng chọn lại").await;
    a.sync().await;
    // The number the account wrote under before is not a phone of the Phones page.
    let phones = crate::office::signed_in_page(&server, "xa", "/office/phones").await;
    assert!(!phones.contains("xa (office)"), "{phones}");
    // Hoa's edit superseded the lost settle, not this one: both stand, for a person to settle.
    for p in [&mut a, &mut b] {
        p.sync().await;
        let record = p.view(id);
        let mut values: Vec<&Value> = record.fields["child_name"].values().collect();
        values.sort_by_key(|v| v.to_string());
        assert_eq!(
            values,
            [&json!("Hoa sửa sau"), &json!("Văn phòng chọn lại")],
            "{values:?}"
        );
    }
}

/// PostgreSQL numbers changes from transaction ids, and those are the cluster's: a database
/// dumped from a cluster far along and loaded into a new one holds numbers above any the new
/// cluster makes. Simulated by moving every stored number 2^50 up, as an older cluster's would
/// be. The server sees it at start, takes a new epoch and numbers above what it holds: a new
/// phone gets every record, an old one pulls again, and edits made after are pulled by all.
pub async fn a_database_on_a_younger_cluster_numbers_above_what_it_holds(db: Database) {
    let mut server = Server::start(&db);
    let mut a = server.enroll("Hoa", &[COMMUNE]).await;
    let mut b = server.enroll("Lan", &[COMMUNE]).await;
    let ids: Vec<_> = (0..3)
        .map(|i| a.create(COMMUNE, &[("child_name", json!(format!("trẻ {i}")))]))
        .collect();
    a.sync().await;
    let before = b.sync().await.pop().unwrap().epoch;
    server.kill();

    let mut conn = sqlx::PgConnection::connect(db.url().unwrap())
        .await
        .unwrap();
    for shift in [
        "UPDATE records SET changed_at = changed_at + (1::bigint << 50)",
        "UPDATE moves SET at = at + (1::bigint << 50)",
    ] {
        sqlx::query(shift).execute(&mut conn).await.unwrap();
    }
    server.restart();
    for p in [&mut a, &mut b] {
        p.url = server.url.clone();
    }

    let mut fresh = server.enroll("Minh", &[COMMUNE]).await;
    fresh.sync().await;
    assert_eq!(
        fresh.client.records().len(),
        3,
        "a new phone gets every record"
    );
    a.edit(ids[1], &[("child_name", json!("trẻ một"))]);
    a.sync().await;
    let after = b.sync().await.pop().unwrap().epoch;
    assert_ne!(before, after, "a new epoch: phones pull again");
    fresh.sync().await;
    for p in [&a, &b, &fresh] {
        assert_eq!(p.view(ids[1]).value("child_name"), Some(&json!("trẻ một")));
        assert_eq!(p.client.records(), a.client.records());
    }
    // Numbers are above what is stored now: the next start keeps the epoch.
    server.restart();
    b.url = server.url.clone();
    assert_eq!(b.sync().await.pop().unwrap().epoch, after);
}
