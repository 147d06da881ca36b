//! Idle phones are cheap: a sync with nothing to push writes nothing to the database in its
//! request; when the phone was last seen is written in batches, and when the server stops.

use serde_json::Value;

use crate::harness::{Database, Server, COMMUNE};

/// The PostgreSQL row version (`xmin`) of the device's row: it changes when the row is
/// written.
async fn row_version(url: &str, device: u32) -> String {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query_scalar("SELECT xmin::text FROM devices WHERE id = $1")
        .bind(i64::from(device))
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

fn last_seen(server: &Server, device: u32) -> i64 {
    let devices: Value = serde_json::from_str(&server.cli(&["device", "list", "--json"])).unwrap();
    devices
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == device)
        .unwrap()["last_sync_at"]
        .as_i64()
        .expect("a last sync")
}

/// A sync with nothing to push commits nothing: on SQLite `data_version` (it changes when
/// another connection commits) stays the same, on PostgreSQL the device's row is not written.
/// When the phone was last seen is written when the server stops.
pub async fn idle_syncs_write_nothing(db: Database) {
    use sqlx::Connection;
    let mut server = Server::start(&db);
    let mut phone = server.enroll("Hoa", &[COMMUNE]).await;
    phone.create(COMMUNE, &[("child_name", "Bé Một".into())]);
    phone.sync().await;
    let device = phone.device();
    // The request an idle phone sends: its cursor, nothing to push.
    let request = phone.client.sync_request();
    assert!(request.push.is_empty());
    let idle = serde_json::to_string(&request).unwrap();
    let pushed_at = last_seen(&server, device);
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    match db.url() {
        Some(url) => {
            let before = row_version(url, device).await;
            for _ in 0..20 {
                let r = phone.send_text(idle.clone()).await;
                assert_eq!(r.status(), 200);
            }
            assert_eq!(
                row_version(url, device).await,
                before,
                "the device row is not written"
            );
        }
        None => {
            let file = std::path::Path::new(&db.args[1]).join("mam.db");
            let options = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(file)
                .read_only(true);
            let mut conn = sqlx::SqliteConnection::connect_with(&options)
                .await
                .unwrap();
            let before: i64 = sqlx::query_scalar("PRAGMA data_version")
                .fetch_one(&mut conn)
                .await
                .unwrap();
            for _ in 0..20 {
                let r = phone.send_text(idle.clone()).await;
                assert_eq!(r.status(), 200);
            }
            let after: i64 = sqlx::query_scalar("PRAGMA data_version")
                .fetch_one(&mut conn)
                .await
                .unwrap();
            assert_eq!(after, before, "nothing committed");
        }
    }
    assert_eq!(last_seen(&server, device), pushed_at, "not written yet");
    // Stopped (SIGTERM), the server writes when it last saw the phone.
    let killed = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(server.pid().to_string())
        .status()
        .unwrap();
    assert!(killed.success());
    assert!(server.wait().success());
    assert!(
        last_seen(&server, device) > pushed_at,
        "written when the server stopped"
    );
}
