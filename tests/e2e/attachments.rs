//! Photos that survive 2G: an edit names a photo by its SHA-256 and is acknowledged before the
//! photo arrives; the photo goes in chunks, cut at random points and resumed, a chunk sent
//! twice changing nothing; a wrong hash, a type not taken and a photo over the limit are
//! refused and kept; only a phone of the record's commune reads it back.

use std::io::Write;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use sync_protocol::{FormId, RecordId};
use tokio::io::AsyncWriteExt;

use crate::harness::{commune, Database, Rng, Server, COMMUNE, OTHER_COMMUNE};

const CHUNK: usize = 64 * 1024;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A form with a photo and a place, published on the server.
pub(crate) fn publish_photo_form(server: &mut Server, db: &Database) -> FormId {
    let form = json!({ "id": "play-photo", "version": 1,
        "title": { "vi": "Ảnh sân chơi", "en": "Play area photo" },
        "fields": [
            { "name": "place_name", "type": "text", "label": { "vi": "Tên sân chơi", "en": "Play area" } },
            { "name": "photo", "type": "image", "label": { "vi": "Ảnh", "en": "Photo" }, "max_pixels": 1024 },
            { "name": "where", "type": "geopoint", "label": { "vi": "Vị trí", "en": "Place" }, "accuracy": 10 }
        ]
    });
    let path = db.scratch("play-photo.json");
    std::fs::write(&path, form.to_string()).unwrap();
    let published = server.cli(&["form", "publish", path.to_str().unwrap()]);
    assert!(published.contains("Published play-photo"), "{published}");
    server.restart();
    FormId::parse("play-photo").unwrap()
}

pub async fn attachments_arrive_in_resumable_chunks(db: Database) {
    let mut server = Server::start(&db);
    let form = publish_photo_form(&mut server, &db);
    let mut phone = server.enroll("Lan", &[COMMUNE]).await;
    let other = server.enroll("Xã khác", &[OTHER_COMMUNE]).await;
    let seed: u64 = std::env::var("MAM_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_261_203);
    eprintln!("attachments: seed {seed} (replay with MAM_SEED={seed})");
    let mut rng = Rng(seed);
    // A photo of 200 KB, as the phone keeps it after scaling it down.
    let photo: Vec<u8> = (0..200_000).map(|_| rng.below(256) as u8).collect();
    let sha = hex(&Sha256::digest(&photo));
    let reference =
        json!({ "sha256": sha, "size": photo.len(), "type": "image/jpeg", "name": "IMG_0041.jpg" });

    // The edit first: acknowledged before its photo has arrived.
    let id = RecordId::new_v7();
    phone.client.create(
        id,
        &form,
        1,
        &commune(COMMUNE),
        vec![
            ("place_name", json!("Sân chơi thôn 3")),
            ("photo", reference.clone()),
            (
                "where",
                json!({ "lat": 16.4637, "lon": 107.5909, "acc": 4.5 }),
            ),
        ],
    );
    let responses = phone.sync().await;
    assert!(
        responses.iter().all(|r| r.rejected.is_empty()),
        "{:?}",
        responses.iter().map(|r| &r.rejected).collect::<Vec<_>>()
    );
    let http = reqwest::Client::new();
    let read = |token: &str, record: RecordId| {
        http.get(format!(
            "{}/v1/records/{record}/attachments/{sha}",
            server.url
        ))
        .bearer_auth(token.to_owned())
        .send()
    };
    let waiting = read(&phone.token, id).await.unwrap();
    assert_eq!(waiting.status(), 404, "not arrived yet");

    let status = |token: String| {
        let http = http.clone();
        let url = format!("{}/v1/uploads/{sha}", server.url);
        async move {
            let r = http.get(url).bearer_auth(token).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.unwrap()
        }
    };
    let put = |token: String, start: usize, bytes: Vec<u8>, total: usize, kind: &str| {
        let http = http.clone();
        let url = format!("{}/v1/uploads/{sha}", server.url);
        let range = format!("bytes {start}-{}/{total}", start + bytes.len() - 1);
        let kind = kind.to_owned();
        async move {
            http.put(url)
                .bearer_auth(token)
                .header("content-range", range)
                .header("content-type", kind)
                .body(bytes)
                .send()
                .await
                .unwrap()
        }
    };
    let first = status(phone.token.clone()).await;
    assert_eq!(first["received"], 0);
    assert_eq!(first["chunk_bytes"], CHUNK);

    // A connection that breaks inside a chunk's body: nothing of it is kept.
    let addr = server.url.trim_start_matches("http://").to_owned();
    let mut raw = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "PUT /v1/uploads/{sha} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {}\r\ncontent-type: image/jpeg\r\ncontent-range: bytes 0-{}/{}\r\ncontent-length: {CHUNK}\r\n\r\n",
        phone.token,
        CHUNK - 1,
        photo.len()
    );
    raw.write_all(head.as_bytes()).await.unwrap();
    raw.write_all(&photo[..CHUNK / 3]).await.unwrap();
    drop(raw);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(status(phone.token.clone()).await["received"], 0);

    // Then chunk by chunk, each cut at a random point about half the time (the phone asks
    // where the upload stands, and goes on from there); one chunk sent twice; one sent at
    // the wrong place.
    let mut attempts = 0;
    let mut repeated = false;
    loop {
        let at = status(phone.token.clone()).await;
        if at["complete"] == json!(true) {
            break;
        }
        attempts += 1;
        assert!(attempts < 100, "the upload does not finish");
        let from = at["received"].as_u64().unwrap() as usize;
        let to = (from + CHUNK).min(photo.len());
        let cut = if rng.below(2) == 0 {
            from + 1 + rng.below((to - from) as u64) as usize
        } else {
            to
        };
        let sent = put(
            phone.token.clone(),
            from,
            photo[from..cut].to_vec(),
            photo.len(),
            "image/jpeg",
        )
        .await;
        assert_eq!(sent.status(), 200, "{}", sent.text().await.unwrap());
        let body: Value = sent.json().await.unwrap();
        assert_eq!(body["received"], cut);
        if !repeated && cut < photo.len() {
            repeated = true;
            let again = put(
                phone.token.clone(),
                from,
                photo[from..cut].to_vec(),
                photo.len(),
                "image/jpeg",
            )
            .await;
            assert_eq!(again.status(), 200);
            assert_eq!(
                again.json::<Value>().await.unwrap()["received"],
                cut,
                "the same chunk twice changes nothing"
            );
            let ahead = put(
                phone.token.clone(),
                cut + 10,
                photo[cut + 10..cut + 20].to_vec(),
                photo.len(),
                "image/jpeg",
            )
            .await;
            assert_eq!(ahead.status(), 409);
            let body: Value = ahead.json().await.unwrap();
            assert_eq!(body["code"], "upload_offset");
            assert_eq!(body["received"], cut, "{body}");
        }
    }
    eprintln!("200 KB photo uploaded in {attempts} chunks with random cuts");

    let back = read(&phone.token, id).await.unwrap();
    assert_eq!(back.status(), 200);
    assert_eq!(back.headers()["content-type"], "image/jpeg");
    assert_eq!(back.bytes().await.unwrap().as_ref(), &photo[..]);
    // One range of it, as a video player seeks.
    let part = http
        .get(format!("{}/v1/records/{id}/attachments/{sha}", server.url))
        .bearer_auth(phone.token.clone())
        .header("range", "bytes=1000-1999")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(
        part.headers()["content-range"],
        format!("bytes 1000-1999/{}", photo.len())
    );
    assert_eq!(part.bytes().await.unwrap().as_ref(), &photo[1000..2000]);
    // Another commune's phone: nothing there, by this record or by one of its own.
    let theirs = read(&other.token, id).await.unwrap();
    assert_eq!(theirs.status(), 404);
    let stranger = RecordId::new_v7();
    assert_eq!(read(&other.token, stranger).await.unwrap().status(), 404);
    // The same photo again, from another phone: stored once, complete at once.
    assert_eq!(status(other.token.clone()).await["complete"], true);
    let stored: Vec<_> = walk(&db.args)
        .into_iter()
        .filter(|p| p.ends_with(&sha))
        .collect();
    assert_eq!(stored.len(), 1, "{stored:?}");

    // Refused, with the reason, and kept: bytes that are not what their name says, a type not
    // taken, over the limit.
    let wrong = "0".repeat(64);
    let bad_put = |kind: &str, total: usize| {
        let http = http.clone();
        let url = format!("{}/v1/uploads/{wrong}", server.url);
        let range = format!("bytes 0-{}/{total}", 999);
        let (kind, token) = (kind.to_owned(), phone.token.clone());
        let body = photo[..1000].to_vec();
        async move {
            http.put(url)
                .bearer_auth(token)
                .header("content-range", range)
                .header("content-type", kind)
                .body(body)
                .send()
                .await
                .unwrap()
        }
    };
    let hash = bad_put("image/jpeg", 1000).await;
    assert_eq!(hash.status(), 422);
    assert_eq!(hash.json::<Value>().await.unwrap()["code"], "hash_mismatch");
    let kind = bad_put("text/html", 1000).await;
    assert_eq!(kind.status(), 415);
    let large = bad_put("image/jpeg", 50 * 1024 * 1024).await;
    assert_eq!(large.status(), 413);
    let refusals = server.cli(&["rejected", "uploads"]);
    for code in [
        "hash_mismatch",
        "unsupported_media_type",
        "payload_too_large",
    ] {
        assert!(refusals.contains(code), "{refusals}");
    }
    assert!(refusals.contains("Lan"), "the phone is named: {refusals}");
    // And in the office: the province sees them; another commune's officer does not.
    crate::office::add_user(&server, "tinh", "province", "46");
    crate::office::add_user(&server, "xa-khac", "commune", OTHER_COMMUNE);
    let page = crate::office::signed_in_page(&server, "tinh", "/office/rejected").await;
    assert!(page.contains("Ảnh và tệp bị từ chối"), "{page}");
    assert!(
        page.contains("tệp nhận được không khớp mã băm") && page.contains("Lan"),
        "{page}"
    );
    let page = crate::office::signed_in_page(&server, "xa-khac", "/office/rejected").await;
    assert!(!page.contains("refused-uploads"), "{page}");

    // The office shows the photo, the place with its accuracy and a map; the list finds the
    // records with a photo; an attachment URL is scoped as its record is.
    let page =
        crate::office::signed_in_page(&server, "tinh", &format!("/office/records/{id}")).await;
    let photo_url = format!("/office/records/{id}/attachments/{sha}");
    assert!(page.contains(&format!("{photo_url}?size=thumb")), "{page}");
    assert!(
        page.contains("openstreetmap.org/?mlat=16.4637&#38;mlon=107.5909"),
        "{page}"
    );
    assert!(page.contains("(±5 m)"), "{page}");
    let mut other_birth = server.enroll("Hoa", &[COMMUNE]).await;
    other_birth.create(COMMUNE, &[("child_name", json!("Bé Na"))]);
    other_birth.sync().await;
    let list = crate::office::signed_in_page(&server, "tinh", "/office/records?status=photo").await;
    assert!(
        list.contains("Sân chơi thôn 3") && !list.contains("Bé Na"),
        "{list}"
    );
    let mut province = crate::office::Office::new(&server);
    province.login("tinh", crate::office::PASSWORD).await;
    let (status, _) = province.get(&photo_url).await;
    assert_eq!(status, 200);
    let mut stranger = crate::office::Office::new(&server);
    stranger.login("xa-khac", crate::office::PASSWORD).await;
    let (status, _) = stranger.get(&photo_url).await;
    assert_eq!(status, 404, "another commune's officer");

    // `mam backup` keeps the photos beside the database, and `mam restore` puts back those the
    // data folder lost (SQLite; with PostgreSQL the folder is copied with the database's own
    // backups).
    if db.backend() == crate::harness::Backend::Sqlite {
        let file = db.scratch("backup.db");
        let out = server.cli(&["backup", file.to_str().unwrap()]);
        assert!(out.contains("Backed up 1 attachments"), "{out}");
        server.kill();
        let dir = data_dir(&db.args).join("attachments");
        std::fs::remove_dir_all(&dir).unwrap();
        let out = crate::harness::mam()
            .args(["restore", file.to_str().unwrap()])
            .args(&db.args)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            said.contains("Restored 1 attachments"),
            "{said}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        server = Server::start(&db);
        let mut phone = phone;
        phone.url = server.url.clone();
        phone.sync().await;
        let back = http
            .get(format!("{}/v1/records/{id}/attachments/{sha}", server.url))
            .bearer_auth(phone.token.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(back.status(), 200);
        assert_eq!(back.bytes().await.unwrap().as_ref(), &photo[..]);
    }
    let _ = std::io::stderr().flush();
}

fn data_dir(args: &[String]) -> std::path::PathBuf {
    args.iter()
        .position(|a| a == "--data-dir")
        .map(|i| std::path::PathBuf::from(&args[i + 1]))
        .expect("a data folder")
}

/// The files under a test's folders.
fn walk(args: &[String]) -> Vec<std::path::PathBuf> {
    let dir = data_dir(args);
    let mut out = Vec::new();
    let mut todo = vec![dir];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// With an S3-compatible object store (`moto`'s server, started here on loopback), two `mam`
/// processes in front of one PostgreSQL share no folder: a photo uploaded through one is read
/// through the other, and comes back from the store when a process's own copy is gone.
pub async fn attachments_live_in_an_object_store() {
    let moto_ok = std::process::Command::new("python3")
        .args(["-c", "import moto.server"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !moto_ok {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        assert!(
            !ci,
            "moto is missing under CI: pip install \"moto[server]\""
        );
        eprintln!("moto is missing (pip install \"moto[server]\"): skipping the object store test");
        return;
    }
    let Some(db) = Database::fresh(crate::harness::Backend::Postgres).await else {
        return;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut moto = std::process::Command::new("python3")
        .args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let endpoint = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    for _ in 0..100 {
        if http.get(&endpoint).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let folder = |name: &str| db.scratch(name).with_extension("");
    let (dir_a, dir_b) = (folder("attachments-a"), folder("attachments-b"));
    let env = |dir: &std::path::Path| {
        vec![
            ("MAM__ATTACHMENTS__S3_ENDPOINT".to_owned(), endpoint.clone()),
            (
                "MAM__ATTACHMENTS__S3_BUCKET".to_owned(),
                "mam-test".to_owned(),
            ),
            (
                "MAM__ATTACHMENTS__S3_ACCESS_KEY".to_owned(),
                "test".to_owned(),
            ),
            (
                "MAM__ATTACHMENTS__S3_SECRET_KEY".to_owned(),
                "secret".to_owned(),
            ),
            (
                "MAM__ATTACHMENTS__DIR".to_owned(),
                dir.display().to_string(),
            ),
        ]
    };
    let start = |dir: &std::path::Path| {
        let env = env(dir);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        Server::start_with(&db, &env)
    };
    let mut a = start(&dir_a);
    let form = publish_photo_form(&mut a, &db);
    let a = start(&dir_a);
    let b = start(&dir_b);
    let mut phone = a.enroll("Lan", &[COMMUNE]).await;
    let photo: Vec<u8> = (0..150_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let sha = hex(&Sha256::digest(&photo));
    let id = RecordId::new_v7();
    phone.client.create(
        id,
        &form,
        1,
        &commune(COMMUNE),
        vec![(
            "photo",
            json!({ "sha256": sha, "size": photo.len(), "type": "image/jpeg" }),
        )],
    );
    phone.sync().await;
    // Uploaded through A, chunk by chunk.
    let mut at = 0;
    while at < photo.len() {
        let end = (at + CHUNK).min(photo.len());
        let sent = http
            .put(format!("{}/v1/uploads/{sha}", a.url))
            .bearer_auth(&phone.token)
            .header("content-type", "image/jpeg")
            .header(
                "content-range",
                format!("bytes {at}-{}/{}", end - 1, photo.len()),
            )
            .body(photo[at..end].to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(sent.status(), 200, "{}", sent.text().await.unwrap());
        at = end;
    }
    // Private in the store: a request without the credentials is refused.
    let anonymous = http
        .get(format!("{endpoint}/mam-test/objects/{sha}"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 403);
    // B, which shares no folder with A (and holds no copy): complete, and the bytes.
    let status: Value = http
        .get(format!("{}/v1/uploads/{sha}", b.url))
        .bearer_auth(&phone.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["complete"], true, "{status}");
    let read = |url: String| {
        let (http, token, sha) = (http.clone(), phone.token.clone(), sha.clone());
        async move {
            let r = http
                .get(format!("{url}/v1/records/{id}/attachments/{sha}"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
        }
    };
    assert!(
        !dir_b.join("objects").exists(),
        "B holds no copy before it reads"
    );
    assert_eq!(read(b.url.clone()).await, (200, photo.clone()));
    // A's own copy gone: read back from the store.
    std::fs::remove_dir_all(dir_a.join("objects")).unwrap();
    assert_eq!(read(a.url.clone()).await, (200, photo.clone()));
    let _ = moto.kill();
    let _ = moto.wait();
}
