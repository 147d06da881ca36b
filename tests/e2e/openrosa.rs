//! ODK Collect against Mầm over OpenRosa, step by step as Collect does it: the QR code, the
//! form list and each XForm checked against its md5, manifests, entity lists and their
//! integrity, `HEAD /submission`, multipart submissions (split, resent, edited). And ODK
//! Central's offline-entity scenarios, each with the outcome Mầm gives.

use std::io::Read;

use base64::Engine as _;
use mam::openrosa::submission::{parse_tree, Node};
use md5::{Digest, Md5};
use serde_json::{json, Value};
use sync_protocol::{Record, RecordId};

use crate::attachments::publish_photo_form;
use crate::harness::{Database, Phone, Server, COMMUNE, OTHER_COMMUNE};

/// A phone with ODK Collect, as enrolled from the command line.
pub(crate) struct Collect {
    pub http: reqwest::Client,
    /// The server URL Collect is given (it holds the phone's key).
    pub url: String,
    pub device: u32,
    /// The settings text of the QR code.
    pub qr: String,
}

/// A form as the form list announces it.
#[derive(Debug, Clone)]
pub(crate) struct Listed {
    pub id: String,
    pub name: String,
    pub version: String,
    pub hash: String,
    pub download: String,
    pub manifest: Option<String>,
}

/// A file of a form's manifest.
#[derive(Debug, Clone)]
pub(crate) struct Media {
    pub kind: Option<String>,
    pub filename: String,
    pub hash: String,
    pub download: String,
    pub integrity: Option<String>,
}

fn md5_hex(bytes: &[u8]) -> String {
    let d = Md5::digest(bytes);
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(node: &Node, name: &str) -> Option<String> {
    node.child(name).map(|n| n.text.trim().to_owned())
}

impl Collect {
    pub async fn enroll(server: &Server, name: &str, communes: &[&str]) -> Collect {
        let mut args = vec!["device", "enroll", "--name", name, "--odk", "--json"];
        for c in communes {
            args.push("--commune");
            args.push(c);
        }
        args.extend(["--public-url", &server.url]);
        let out: Value = serde_json::from_str(&server.cli(&args)).unwrap();
        Collect {
            http: reqwest::Client::new(),
            url: out["server_url"].as_str().unwrap().to_owned(),
            device: out["device"].as_u64().unwrap() as u32,
            qr: out["qr"].as_str().unwrap().to_owned(),
        }
    }

    /// A GET as Collect sends it, with `X-OpenRosa-Version: 1.0`.
    pub async fn get(&self, url: &str) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
        let r = self
            .http
            .get(url)
            .header("X-OpenRosa-Version", "1.0")
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        (status, headers, r.bytes().await.unwrap().to_vec())
    }

    pub async fn form_list(&self) -> Vec<Listed> {
        let (status, headers, body) = self.get(&format!("{}/formList", self.url)).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        assert_eq!(headers["x-openrosa-version"], "1.0");
        let root = parse_tree(&body).unwrap();
        assert_eq!(root.name, "xforms");
        root.children
            .iter()
            .filter(|c| c.name == "xform")
            .map(|x| Listed {
                id: text(x, "formID").unwrap(),
                name: text(x, "name").unwrap(),
                version: text(x, "version").unwrap(),
                hash: text(x, "hash").unwrap(),
                download: text(x, "downloadUrl").unwrap(),
                manifest: text(x, "manifestUrl"),
            })
            .collect()
    }

    /// A form's XForm, checked against the hash the list announced.
    pub async fn xform(&self, listed: &Listed) -> String {
        let (status, _, body) = self.get(&listed.download).await;
        assert_eq!(status, 200);
        assert_eq!(
            listed.hash,
            format!("md5:{}", md5_hex(&body)),
            "the form list announces the md5 of the bytes served for {}",
            listed.id
        );
        String::from_utf8(body).unwrap()
    }

    pub async fn manifest(&self, listed: &Listed) -> Vec<Media> {
        let Some(url) = &listed.manifest else {
            return Vec::new();
        };
        let (status, headers, body) = self.get(url).await;
        assert_eq!(status, 200);
        assert_eq!(headers["x-openrosa-version"], "1.0");
        let root = parse_tree(&body).unwrap();
        assert_eq!(root.name, "manifest");
        root.children
            .iter()
            .map(|m| Media {
                kind: m.attr("type").map(str::to_owned),
                filename: text(m, "filename").unwrap(),
                hash: text(m, "hash").unwrap(),
                download: text(m, "downloadUrl").unwrap(),
                integrity: text(m, "integrityUrl"),
            })
            .collect()
    }

    /// An entity list: its rows by name (`name`, `label`, `__version` and the properties).
    pub async fn entity_list(
        &self,
        media: &Media,
    ) -> Vec<std::collections::BTreeMap<String, String>> {
        let (status, _, body) = self.get(&media.download).await;
        assert_eq!(status, 200);
        assert_eq!(media.hash, format!("md5:{}", md5_hex(&body)));
        let csv = String::from_utf8(body).unwrap();
        let mut lines = csv.lines();
        let header: Vec<String> = lines
            .next()
            .unwrap()
            .split(',')
            .map(str::to_owned)
            .collect();
        assert_eq!(&header[..3], ["name", "label", "__version"]);
        lines
            .map(|l| header.iter().cloned().zip(csv_cells(l)).collect())
            .collect()
    }

    /// `HEAD /submission`, then a multipart POST as Collect sends it: the XML first, then
    /// each attachment, and `*isIncomplete*` when more requests follow.
    pub async fn submit(
        &self,
        xml: &str,
        files: &[(&str, &str, &[u8])],
        incomplete: bool,
    ) -> (u16, String) {
        let head = self
            .http
            .head(format!("{}/submission", self.url))
            .header("X-OpenRosa-Version", "1.0")
            .send()
            .await
            .unwrap();
        assert_eq!(head.status(), 204);
        let limit: usize = head.headers()["x-openrosa-accept-content-length"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let boundary = "----mam-collect-test-boundary";
        let mut body = Vec::new();
        let mut part = |headers: String, bytes: &[u8]| {
            body.extend_from_slice(format!("--{boundary}\r\n{headers}\r\n\r\n").as_bytes());
            body.extend_from_slice(bytes);
            body.extend_from_slice(b"\r\n");
        };
        part(
            "Content-Disposition: form-data; name=\"xml_submission_file\"; filename=\"submission.xml\"\r\nContent-Type: text/xml".into(),
            xml.as_bytes(),
        );
        for (name, media_type, bytes) in files {
            part(
                format!("Content-Disposition: form-data; name=\"{name}\"; filename=\"{name}\"\r\nContent-Type: {media_type}"),
                bytes,
            );
        }
        if incomplete {
            part(
                "Content-Disposition: form-data; name=\"*isIncomplete*\"".into(),
                b"yes",
            );
        }
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        assert!(body.len() <= limit);
        let r = self
            .http
            .post(format!("{}/submission", self.url))
            .header("X-OpenRosa-Version", "1.0")
            .header(
                "Content-Type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        assert_eq!(r.headers()["x-openrosa-version"], "1.0");
        let body = r.bytes().await.unwrap();
        let root =
            parse_tree(&body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&body)));
        assert_eq!(root.name, "OpenRosaResponse");
        (status, text(&root, "message").unwrap_or_default())
    }
}

fn csv_cells(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cell = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                cell.push('"');
            }
            ('"', _) => quoted = !quoted,
            (',', false) => out.push(std::mem::take(&mut cell)),
            (c, _) => cell.push(c),
        }
    }
    out.push(cell);
    out
}

/// A submission of the child register as an XForm instance.
pub(crate) fn child_xml(instance: &str, values: &[(&str, &str)], meta: &str) -> String {
    let mut fields = String::new();
    for (k, v) in values {
        fields.push_str(&format!("<{k}>{v}</{k}>"));
    }
    format!(
        "<?xml version='1.0' ?><data id=\"child\" version=\"2\" xmlns:jr=\"http://openrosa.org/javarosa\"><mam_commune>{COMMUNE}</mam_commune>{fields}<meta><instanceID>{instance}</instanceID>{meta}</meta></data>"
    )
}

fn uuid() -> String {
    format!("uuid:{}", uuid_v4())
}

fn uuid_v4() -> String {
    uuid::Builder::from_random_bytes(rand::random())
        .into_uuid()
        .to_string()
}

const CHILD: &[(&str, &str)] = &[
    ("child_name", "Lê Thị Mai"),
    ("sex", "f"),
    ("date_of_birth", "2023-05-04"),
    ("village", "Thôn 1"),
    ("consent_guardian", "true"),
];

/// A child of `commune` made on a `/v1` phone and synced: its record id.
async fn register_child(phone: &mut Phone, commune: &str, name: &str, village: &str) -> RecordId {
    let id = RecordId::new_v7();
    phone.client.create(
        id,
        &sync_protocol::FormId::parse("child").unwrap(),
        2,
        &crate::harness::commune(commune),
        vec![
            ("child_name", json!(name)),
            ("sex", json!("m")),
            ("date_of_birth", json!("2022-01-02")),
            ("village", json!(village)),
            ("consent_guardian", json!(true)),
        ],
    );
    phone.sync().await;
    id
}

/// The record as a `/v1` phone of the commune pulls it.
async fn pulled(phone: &mut Phone, id: &str) -> Record {
    phone.sync().await;
    phone.view(RecordId::parse(id).unwrap())
}

fn values(record: &Record, field: &str) -> Vec<Value> {
    record
        .fields
        .get(field)
        .map(|r| r.values().cloned().collect())
        .unwrap_or_default()
}

/// Collect's sequence, step by step: enrolment by QR code, the form list and every XForm
/// against its md5 (the same bytes after a restart), manifests, the child register as an
/// entity list of the phone's communes with its integrity, and submissions: new, resent,
/// changed (409), split with a photo, refused, edited (deprecatedID) beside another phone's
/// concurrent edit; then revocation.
pub async fn odk_collect_follows_its_sequence(db: Database) {
    let mut server = Server::start(&db);
    let collect = Collect::enroll(&server, "Trần Thị Hoa (ODK)", &[COMMUNE]).await;

    // The QR code: base64 of zlib-compressed settings holding the server URL.
    let packed = base64::engine::general_purpose::STANDARD
        .decode(&collect.qr)
        .unwrap();
    let mut settings = String::new();
    flate2::read::ZlibDecoder::new(&packed[..])
        .read_to_string(&mut settings)
        .unwrap();
    let settings: Value = serde_json::from_str(&settings).unwrap();
    assert_eq!(settings["general"]["server_url"], collect.url.as_str());
    assert!(settings["admin"].is_object(), "Collect needs an admin key");
    assert!(collect.url.starts_with(&format!("{}/key/", server.url)));

    // The form list: the collaborators' forms, each XForm the bytes its md5 names.
    let list = collect.form_list().await;
    let ids: Vec<&str> = list.iter().map(|l| l.id.as_str()).collect();
    for id in ["child", "birth-registration", "injury", "play-area"] {
        assert!(ids.contains(&id), "{id} offered: {ids:?}");
    }
    for id in ["school-aggregate", "commune-annual"] {
        assert!(!ids.contains(&id), "{id} is not a collaborator's form");
    }
    let mut xforms = std::collections::BTreeMap::new();
    for l in &list {
        let xml = collect.xform(l).await;
        assert_eq!(collect.xform(l).await, xml, "the same bytes twice");
        assert!(xml.contains(&format!("<data id=\"{}\" version=\"{}\"", l.id, l.version)));
        assert!(
            xml.contains(&format!("<h:title>{}</h:title>", l.name)),
            "the list names the form by its title"
        );
        parse_tree(xml.as_bytes()).unwrap();
        xforms.insert(l.id.clone(), xml);
    }
    let before = server.url.clone();
    server.restart();
    // The restarted server listens on another port.
    let collect = Collect {
        url: collect.url.replace(&before, &server.url),
        ..collect
    };
    let list = collect.form_list().await;
    for l in &list {
        assert_eq!(
            collect.xform(l).await,
            xforms[&l.id],
            "{} unchanged by a restart",
            l.id
        );
    }

    // A child of the phone's commune from a `/v1` phone, and one of another commune.
    let mut phone = server.enroll("Hoa", &[COMMUNE]).await;
    let mut other = server.enroll("Lan", &[OTHER_COMMUNE]).await;
    let here = register_child(&mut phone, COMMUNE, "Phan Văn Tí", "Thôn 3").await;
    let away = register_child(&mut other, OTHER_COMMUNE, "Ngoài Xã", "Thôn 9").await;

    // A form that references children carries the child register as an entity list.
    let labour = list.iter().find(|l| l.id == "child-labour").unwrap();
    let media = collect.manifest(labour).await;
    let children = media
        .iter()
        .find(|m| m.filename == "child.csv")
        .expect("child.csv");
    assert_eq!(children.kind.as_deref(), Some("entityList"));
    let rows = collect.entity_list(children).await;
    assert_eq!(rows.len(), 1, "only the phone's commune: {rows:?}");
    assert_eq!(rows[0]["name"], here.to_string());
    assert_eq!(rows[0]["label"], "Phan Văn Tí");
    assert_eq!(rows[0]["__version"], "1");
    assert_eq!(rows[0]["village"], "Thôn 3");
    let xform = &xforms["child-labour"];
    assert!(
        xform.contains("jr://file-csv/child.csv"),
        "the list is read as an instance"
    );
    // Integrity: present, gone, and out of scope.
    let (status, _, body) = collect
        .get(&format!(
            "{}?id={here},{away},{}",
            children.integrity.as_ref().unwrap(),
            uuid_v4()
        ))
        .await;
    assert_eq!(status, 200);
    let root = parse_tree(&body).unwrap();
    let deleted: Vec<(String, String)> = root
        .child("entities")
        .unwrap()
        .children
        .iter()
        .map(|e| {
            (
                e.attr("id").unwrap().to_owned(),
                text(e, "deleted").unwrap(),
            )
        })
        .collect();
    assert_eq!(deleted[0], (here.to_string(), "false".into()));
    assert_eq!(
        deleted[1].1, "true",
        "another commune's child is not this phone's"
    );
    assert_eq!(deleted[2].1, "true", "an unknown entity is gone");
    // A child deleted on a `/v1` phone: out of the list, and gone by its integrity.
    let gone = register_child(&mut phone, COMMUNE, "Nhập Nhầm", "Thôn 3").await;
    assert_eq!(
        collect
            .entity_list(&collect.manifest(labour).await[0])
            .await
            .len(),
        2
    );
    phone.client.delete(gone).unwrap();
    phone.sync().await;
    let media = collect.manifest(labour).await;
    let rows = collect.entity_list(&media[0]).await;
    assert_eq!(rows.len(), 1, "the deleted child is not listed");
    let (_, _, body) = collect
        .get(&format!(
            "{}?id={gone}",
            media[0].integrity.as_ref().unwrap()
        ))
        .await;
    assert!(String::from_utf8(body)
        .unwrap()
        .contains("<deleted>true</deleted>"));

    // A new submission becomes a record that `/v1` phones and the office see.
    let instance = uuid();
    let entity = uuid_v4();
    let meta = format!(
        "<entity dataset=\"child\" id=\"{entity}\" create=\"1\"><label>Lê Thị Mai</label></entity>"
    );
    let xml = child_xml(&instance, CHILD, &meta);
    let (status, message) = collect.submit(&xml, &[], false).await;
    assert_eq!(status, 201, "{message}");
    let record = pulled(&mut phone, &entity).await;
    assert_eq!(record.value("child_name"), Some(&json!("Lê Thị Mai")));
    assert_eq!(record.value("consent_guardian"), Some(&json!(true)));
    assert_eq!(record.value("date_of_birth"), Some(&json!("2023-05-04")));
    crate::office::add_user(&server, "tinh", "province", "46");
    let page =
        crate::office::signed_in_page(&server, "tinh", &format!("/office/records/{entity}")).await;
    assert!(page.contains("Lê Thị Mai"), "the office shows it");

    // Sent again (no answer reached the phone): one record; other XML under its id: 409.
    let (status, _) = collect.submit(&xml, &[], false).await;
    assert_eq!(status, 201);
    let changed = xml.replace("Thôn 1", "Thôn 2");
    let (status, message) = collect.submit(&changed, &[], false).await;
    assert_eq!(status, 409, "{message}");
    assert!(message.contains("nội dung khác"), "{message}");
    let record = pulled(&mut phone, &entity).await;
    assert_eq!(values(&record, "village"), [json!("Thôn 1")]);

    // A value the form refuses: refused in Vietnamese, kept for the office.
    let bad = child_xml(
        &uuid(),
        &[
            ("child_name", "Bé Tương Lai"),
            ("sex", "f"),
            ("date_of_birth", "2999-01-01"),
            ("village", "Thôn 1"),
            ("consent_guardian", "true"),
        ],
        "",
    );
    let (status, message) = collect.submit(&bad, &[], false).await;
    assert_eq!(status, 400);
    assert!(message.contains("Ngày sinh"), "{message}");
    let refused = server.cli(&["rejected", "list", "--json"]);
    assert!(refused.contains("date_of_birth"), "{refused}");
    // A form the server does not have: refused and kept too.
    let unknown = "<data id=\"no-such-form\" version=\"1\"><meta><instanceID>uuid:x</instanceID></meta></data>";
    let (status, message) = collect.submit(unknown, &[], false).await;
    assert_eq!(status, 400);
    assert!(message.contains("no-such-form"), "{message}");
    let uploads = server.cli(&["rejected", "uploads"]);
    assert!(uploads.contains("no-such-form"), "{uploads}");

    // An edit of the sent instance (deprecatedID) while a `/v1` phone edits the record: the
    // phone's edits stay; the same field edited by both keeps both values.
    let id = RecordId::parse(&entity).unwrap();
    phone.edit(
        id,
        &[
            ("carer_name", json!("Lê Văn Bố")),
            ("village", json!("Thôn 5")),
        ],
    );
    phone.sync().await;
    let edit_instance = uuid();
    let edited = child_xml(
        &edit_instance,
        &[
            ("child_name", "Lê Thị Mai"),
            ("sex", "f"),
            ("date_of_birth", "2023-05-04"),
            ("village", "Thôn 4"),
            ("consent_guardian", "true"),
            ("notes", "Đã chuyển nhà"),
        ],
        &format!("<deprecatedID>{instance}</deprecatedID>"),
    );
    let (status, message) = collect.submit(&edited, &[], false).await;
    assert_eq!(status, 201, "{message}");
    let record = pulled(&mut phone, &entity).await;
    assert_eq!(
        values(&record, "carer_name"),
        [json!("Lê Văn Bố")],
        "the other phone's edit kept"
    );
    assert_eq!(values(&record, "notes"), [json!("Đã chuyển nhà")]);
    let mut village = values(&record, "village");
    village.sort_by_key(|v| v.to_string());
    assert_eq!(
        village,
        [json!("Thôn 4"), json!("Thôn 5")],
        "both kept for a person to settle"
    );
    assert_eq!(
        values(&record, "child_name"),
        [json!("Lê Thị Mai")],
        "unchanged answers write nothing"
    );

    // Split in two requests, with a photo: one record once the last part arrives.
    drop(server);
    let mut server = Server::start(&db);
    publish_photo_form(&mut server, &db);
    let collect = Collect::enroll(&server, "Ảnh (ODK)", &[COMMUNE]).await;
    let photo_form = collect
        .form_list()
        .await
        .into_iter()
        .find(|l| l.id == "play-photo")
        .unwrap();
    let photo_xform = collect.xform(&photo_form).await;
    assert!(
        photo_xform.contains("mediatype=\"image/*\""),
        "{photo_xform}"
    );
    let png: Vec<u8> = (0..3000u32).map(|i| (i * 7 % 251) as u8).collect();
    let instance = uuid();
    let xml = format!(
        "<data id=\"play-photo\" version=\"1\"><mam_commune>{COMMUNE}</mam_commune><place_name>Sân thôn 2</place_name><photo>1700000000.png</photo><where>16.46 107.59 12 4.5</where><meta><instanceID>{instance}</instanceID></meta></data>"
    );
    let (status, _) = collect.submit(&xml, &[], true).await;
    assert_eq!(status, 201);
    let (status, message) = collect
        .submit(&xml, &[("1700000000.png", "image/png", &png)], false)
        .await;
    assert_eq!(status, 201, "{message}");
    let mut phone = server.enroll("Hoa", &[COMMUNE]).await;
    let record = pulled(&mut phone, instance.trim_start_matches("uuid:")).await;
    let photo = record.value("photo").unwrap();
    assert_eq!(photo["type"], "image/png");
    assert_eq!(photo["size"], png.len());
    assert_eq!(record.value("where").unwrap()["lat"], json!(16.46));
    let sha = photo["sha256"].as_str().unwrap();
    let got = phone
        .http
        .get(format!(
            "{}/v1/records/{}/attachments/{sha}",
            server.url, record.id
        ))
        .bearer_auth(&phone.token)
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.bytes().await.unwrap().to_vec(), png);

    // Enrolled on the office's Phones page: a QR code of Collect's settings and the URL.
    crate::office::add_user(&server, "xa", "commune", COMMUNE);
    let mut office = crate::office::Office::new(&server);
    assert_eq!(office.login("xa", crate::office::PASSWORD).await.0, 303);
    let csrf = office.csrf().await;
    let response = office
        .post(
            "/office/phones",
            &[
                ("csrf", &csrf),
                ("name", "Máy ODK xã"),
                ("commune", COMMUNE),
                ("odk", "1"),
            ],
        )
        .await;
    assert_eq!(response.status(), 200);
    let page = response.text().await.unwrap();
    assert!(page.contains("<svg"), "a QR code");
    let link = page
        .split("id=\"enrol-link\">")
        .nth(1)
        .unwrap()
        .split('<')
        .next()
        .unwrap();
    let link = crate::office::unescape(link);
    assert!(link.starts_with(&format!("{}/key/", server.url)), "{link}");
    let officers = Collect {
        http: reqwest::Client::new(),
        url: link,
        device: 0,
        qr: String::new(),
    };
    assert!(officers
        .form_list()
        .await
        .iter()
        .any(|l| l.id == "play-photo"));

    // A collaborator's account by Basic authentication, over HTTPS only (as a TLS proxy in
    // front says): its area's forms, its submissions written as its own.
    let root = format!("{}/formList", server.url);
    let basic = |r: reqwest::RequestBuilder| {
        r.basic_auth("xa", Some(crate::office::PASSWORD))
            .header("X-OpenRosa-Version", "1.0")
    };
    let plain = basic(reqwest::Client::new().get(&root))
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 403, "no password over plain HTTP");
    let asked = reqwest::Client::new()
        .get(&root)
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    assert_eq!(asked.status(), 401);
    assert!(asked.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Basic"));
    let listed = basic(reqwest::Client::new().get(&root))
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);
    let listed = listed.text().await.unwrap();
    assert!(listed.contains("<formID>play-photo</formID>"));
    assert!(
        listed.contains("<formID>commune-annual</formID>"),
        "a commune officer is offered the commune's own forms too"
    );
    let instance = uuid();
    let xml = format!(
        "<data id=\"play-photo\" version=\"1\"><mam_commune>{COMMUNE}</mam_commune><place_name>Sân UBND xã</place_name><meta><instanceID>{instance}</instanceID></meta></data>"
    );
    let boundary = "b0undary";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"xml_submission_file\"; filename=\"s.xml\"\r\nContent-Type: text/xml\r\n\r\n{xml}\r\n--{boundary}--\r\n"
    );
    let sent = basic(reqwest::Client::new().post(format!("{}/submission", server.url)))
        .header("x-forwarded-proto", "https")
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 201, "{}", sent.text().await.unwrap());
    let record = pulled(&mut phone, instance.trim_start_matches("uuid:")).await;
    assert_eq!(record.value("place_name"), Some(&json!("Sân UBND xã")));
    let devices = server.cli(&["device", "list"]);
    assert!(
        devices.contains("ODK Collect: xa"),
        "numbered apart from the office's edits: {devices}"
    );

    // Revoked: the key opens nothing.
    server.cli(&["device", "revoke", &collect.device.to_string()]);
    let (status, _, _) = collect.get(&format!("{}/formList", collect.url)).await;
    assert_eq!(status, 403);
}

/// An entity the server does not hold: the `meta/entity` of a child register submission.
fn entity_meta(
    id: &str,
    create: bool,
    base: Option<u64>,
    trunk: Option<u64>,
    branch: Option<&str>,
) -> String {
    let n = |v: Option<u64>| v.map(|x| x.to_string()).unwrap_or_default();
    format!(
        "<entity dataset=\"child\" id=\"{id}\" create=\"{}\" update=\"{}\" baseVersion=\"{}\" trunkVersion=\"{}\" branchId=\"{}\"><label>x</label></entity>",
        if create { "1" } else { "" },
        if create { "" } else { "1" },
        n(base),
        n(trunk),
        branch.unwrap_or("")
    )
}

/// The register of one field of an entity, sorted.
async fn field_of(phone: &mut Phone, id: &str, field: &str) -> Vec<Value> {
    let record = pulled(phone, id).await;
    let mut v = values(&record, field);
    v.sort_by_key(|x| x.to_string());
    v
}

/// ODK Central's offline-entity scenarios (`test/integration/api/offline-entities.js`), each
/// with Mầm's outcome: properties merge field by field, a property two people changed
/// concurrently keeps both values, nothing waits for order (only an update whose create has
/// not arrived waits, for there is nothing to merge it into), and an update that arrives
/// after a later one of its own branch does not undo it.
pub async fn offline_entities_merge_field_by_field(db: Database) {
    let server = Server::start(&db);
    let collect = Collect::enroll(&server, "Offline (ODK)", &[COMMUNE]).await;
    let mut phone = server.enroll("Hoa", &[COMMUNE]).await;
    let send = |xml: String| {
        let collect = &collect;
        async move {
            let (status, message) = collect.submit(&xml, &[], false).await;
            assert_eq!(status, 201, "{message}");
            message
        }
    };
    // A child created offline from Collect: version 1.
    let create = |id: &str| child_xml(&uuid(), CHILD, &entity_meta(id, true, None, None, None));
    let update =
        |id: &str, values: &[(&str, &str)], base: u64, trunk: Option<u64>, branch: Option<&str>| {
            child_xml(
                &uuid(),
                values,
                &entity_meta(id, false, Some(base), trunk, branch),
            )
        };
    let list_version = |id: String| {
        let collect = &collect;
        async move {
            let labour = collect
                .form_list()
                .await
                .into_iter()
                .find(|l| l.id == "child-labour")
                .unwrap();
            let media = collect.manifest(&labour).await;
            let rows = collect.entity_list(&media[0]).await;
            rows.into_iter()
                .find(|r| r["name"] == id)
                .map(|r| r["__version"].parse::<u64>().unwrap())
        }
    };

    // 1. Create: the entity exists at version 1 with its properties.
    let e = uuid_v4();
    send(create(&e)).await;
    assert_eq!(list_version(e.clone()).await, Some(1));
    assert_eq!(field_of(&mut phone, &e, "village").await, [json!("Thôn 1")]);

    // 2. Update with a branch, base 1 = trunk 1: applied.
    let b = uuid_v4();
    send(update(&e, &[("village", "Thôn 2")], 1, Some(1), Some(&b))).await;
    assert_eq!(field_of(&mut phone, &e, "village").await, [json!("Thôn 2")]);
    assert_eq!(list_version(e.clone()).await, Some(2));

    // 3. Empty trunkVersion and branchId: an ordinary online update.
    send(update(&e, &[("notes", "một")], 2, None, None)).await;
    assert_eq!(field_of(&mut phone, &e, "notes").await, [json!("một")]);

    // 4. trunkVersion without branchId (Central: an error, nothing applied): applied from
    //    its trunk version.
    let v = list_version(e.clone()).await.unwrap();
    send(update(&e, &[("carer_name", "Mẹ")], v, Some(v), None)).await;
    assert_eq!(field_of(&mut phone, &e, "carer_name").await, [json!("Mẹ")]);

    // 5. Two updates of one branch in order (base 1, base 2 on trunk 1): both applied, the
    //    second reads the first.
    let e = uuid_v4();
    send(create(&e)).await;
    let b = uuid_v4();
    send(update(
        &e,
        &[("village", "Thôn 2"), ("notes", "đến")],
        1,
        Some(1),
        Some(&b),
    ))
    .await;
    send(update(
        &e,
        &[("village", "Thôn 2"), ("notes", "đi")],
        2,
        Some(1),
        Some(&b),
    ))
    .await;
    assert_eq!(field_of(&mut phone, &e, "village").await, [json!("Thôn 2")]);
    assert_eq!(field_of(&mut phone, &e, "notes").await, [json!("đi")]);

    // 6, 7. The server moved on (another phone's edit of another property) before and inside
    //    the branch: everything kept, nothing in conflict.
    let e = uuid_v4();
    send(create(&e)).await;
    let id = RecordId::parse(&e).unwrap();
    pulled(&mut phone, &e).await;
    phone.edit(id, &[("carer_name", "Bà ngoại".into())]);
    phone.sync().await;
    let b = uuid_v4();
    send(update(&e, &[("notes", "một")], 1, Some(1), Some(&b))).await;
    phone.edit(id, &[("ethnicity", "Kinh".into())]);
    phone.sync().await;
    send(update(&e, &[("notes", "hai")], 2, Some(1), Some(&b))).await;
    let record = pulled(&mut phone, &e).await;
    assert_eq!(values(&record, "carer_name"), [json!("Bà ngoại")]);
    assert_eq!(values(&record, "ethnicity"), [json!("Kinh")]);
    assert_eq!(values(&record, "notes"), [json!("hai")]);
    assert!(!record.is_conflicted(), "different properties merge");

    // 8, 9. A branch that starts with a create, interleaved with online edits of another
    //    property: the online edits are kept.
    let e = uuid_v4();
    let b = uuid_v4();
    send(create(&e)).await;
    let id = RecordId::parse(&e).unwrap();
    pulled(&mut phone, &e).await;
    phone.edit(id, &[("school_grade", json!(1))]);
    phone.sync().await;
    send(update(&e, &[("notes", "đang khám")], 1, None, Some(&b))).await;
    phone.edit(id, &[("school_grade", json!(2))]);
    phone.sync().await;
    send(update(&e, &[("notes", "xong")], 2, Some(1), Some(&b))).await;
    let record = pulled(&mut phone, &e).await;
    assert_eq!(values(&record, "school_grade"), [json!(2)]);
    assert_eq!(values(&record, "notes"), [json!("xong")]);
    assert!(!record.is_conflicted());

    // 10, 11, 13. Out of order in one branch: base 2 before base 1 (Central holds it in a
    //    backlog for up to 5 days). Applied at once; base 1, arriving late, leaves what base
    //    2 wrote and adds what only it changed.
    let e = uuid_v4();
    send(create(&e)).await;
    let b = uuid_v4();
    send(update(
        &e,
        &[("notes", "đi"), ("village", "Thôn 7")],
        2,
        Some(1),
        Some(&b),
    ))
    .await;
    assert_eq!(
        field_of(&mut phone, &e, "notes").await,
        [json!("đi")],
        "not held"
    );
    send(update(
        &e,
        &[
            ("notes", "đến"),
            ("village", "Thôn 7"),
            ("carer_name", "Cha"),
        ],
        1,
        Some(1),
        Some(&b),
    ))
    .await;
    let record = pulled(&mut phone, &e).await;
    assert_eq!(
        values(&record, "notes"),
        [json!("đi")],
        "the later update stands"
    );
    assert_eq!(values(&record, "carer_name"), [json!("Cha")]);
    assert!(!record.is_conflicted());

    // 12. A trunkVersion the server never had (Central: an error, nothing applied): the
    //    update is applied as made from nothing, so a property the server holds otherwise
    //    keeps both values for a person to settle.
    let e = uuid_v4();
    send(create(&e)).await;
    send(update(
        &e,
        &[("village", "Thôn 8")],
        9,
        Some(9),
        Some(&uuid_v4()),
    ))
    .await;
    assert_eq!(
        field_of(&mut phone, &e, "village").await,
        [json!("Thôn 1"), json!("Thôn 8")]
    );

    // 14, 15, 38. Updates before their create (one phone, backwards): kept until the create
    //    arrives, then applied at once in base order.
    let e = uuid_v4();
    let b = uuid_v4();
    let message = send(update(&e, &[("notes", "lần 2")], 2, None, Some(&b))).await;
    assert!(message.contains("chưa có"), "{message}");
    send(update(
        &e,
        &[("notes", "lần 1"), ("carer_name", "Dì")],
        1,
        None,
        Some(&b),
    ))
    .await;
    send(create(&e)).await;
    let record = pulled(&mut phone, &e).await;
    assert_eq!(values(&record, "notes"), [json!("lần 2")]);
    assert_eq!(values(&record, "carer_name"), [json!("Dì")]);
    assert_eq!(values(&record, "village"), [json!("Thôn 1")]);

    // 30, 31. The same property changed online and in an offline branch from one version:
    //    both values kept (Central: a conflict flag, last write wins); the branch's other
    //    property merges.
    let e = uuid_v4();
    send(create(&e)).await;
    let id = RecordId::parse(&e).unwrap();
    pulled(&mut phone, &e).await;
    phone.edit(id, &[("village", "Thôn 24".into())]);
    phone.sync().await;
    let b = uuid_v4();
    send(update(
        &e,
        &[("notes", "đã đến"), ("village", "Thôn 1")],
        1,
        Some(1),
        Some(&b),
    ))
    .await;
    assert_eq!(
        field_of(&mut phone, &e, "village").await,
        [json!("Thôn 24")],
        "unchanged by the branch: no conflict"
    );
    send(update(
        &e,
        &[("notes", "đã đến"), ("village", "Thôn 26")],
        2,
        Some(1),
        Some(&b),
    ))
    .await;
    let record = pulled(&mut phone, &e).await;
    let mut village = values(&record, "village");
    village.sort_by_key(|v| v.to_string());
    assert_eq!(village, [json!("Thôn 24"), json!("Thôn 26")]);
    assert_eq!(values(&record, "notes"), [json!("đã đến")]);
    assert!(record.is_conflicted());

    // 32, 33. A person settles the conflict; the branch's next update, made offline before
    //    the settle, changes the property again: it stands beside the settled value.
    pulled(&mut phone, &e).await;
    phone.edit(id, &[("village", "Thôn 25".into())]);
    phone.sync().await;
    assert_eq!(
        field_of(&mut phone, &e, "village").await,
        [json!("Thôn 25")],
        "settled"
    );
    send(update(
        &e,
        &[("notes", "đã đến"), ("village", "Thôn 27")],
        3,
        Some(1),
        Some(&b),
    ))
    .await;
    assert_eq!(
        field_of(&mut phone, &e, "village").await,
        [json!("Thôn 25"), json!("Thôn 27")]
    );

    // 29. The entity deleted while an update was on its way (Central: an error, the update
    //    dropped): the deleted record holds the update's value, a conflict for a person.
    let e = uuid_v4();
    send(create(&e)).await;
    let id = RecordId::parse(&e).unwrap();
    pulled(&mut phone, &e).await;
    phone.client.delete(id).unwrap();
    phone.sync().await;
    send(update(
        &e,
        &[("notes", "vẫn ở đây")],
        1,
        Some(1),
        Some(&uuid_v4()),
    ))
    .await;
    let record = pulled(&mut phone, &e).await;
    assert!(record.is_deleted());
    assert_eq!(values(&record, "notes"), [json!("vẫn ở đây")]);
    assert!(
        record.is_conflicted(),
        "a delete against an edit is for a person to settle"
    );

    // 34. An offline create and a contiguous update of its branch: no conflict.
    let e = uuid_v4();
    let b = uuid_v4();
    send(create(&e)).await;
    send(update(&e, &[("village", "Thôn 3")], 1, Some(1), Some(&b))).await;
    let record = pulled(&mut phone, &e).await;
    assert!(!record.is_conflicted());
    assert_eq!(values(&record, "village"), [json!("Thôn 3")]);

    // 37. A create and its update sent at once, many times: always both applied.
    for _ in 0..10 {
        let e = uuid_v4();
        let (c, u) = (
            create(&e),
            update(&e, &[("notes", "cùng lúc")], 1, Some(1), Some(&uuid_v4())),
        );
        let (a, b) = tokio::join!(
            collect.submit(&c, &[], false),
            collect.submit(&u, &[], false)
        );
        assert_eq!((a.0, b.0), (201, 201));
        let mut notes = Vec::new();
        for _ in 0..50 {
            notes = field_of(&mut phone, &e, "notes").await;
            if !notes.is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(notes, [json!("cùng lúc")]);
    }
}

/// An answer for ODK's engine to give a question, as the XForm writes it (`None`: left
/// unanswered).
fn engine_answer(f: &sync_protocol::FormField, child: &str) -> Option<String> {
    use sync_protocol::FieldType as T;
    if f.auto.is_some()
        || f.calculate.is_some()
        || f.retired
        || f.pattern.is_some()
        || f.choice_filter.is_some()
    {
        return None;
    }
    let number = |fallback: f64| {
        let min = f.min.as_ref().and_then(Value::as_f64);
        let max = f.max.as_ref().and_then(Value::as_f64);
        let x = min.map_or(fallback, |m| m.max(fallback.min(max.unwrap_or(fallback))));
        x.min(max.unwrap_or(x))
    };
    Some(match f.kind {
        T::Text => "Nguyễn Thị Ba".into(),
        T::Integer => format!("{}", number(1.0) as i64),
        T::Decimal => format!("{}", number(12.5)),
        T::Date => "2024-03-01".into(),
        T::Time => "10:30".into(),
        T::Boolean => "true".into(),
        T::SelectOne | T::SelectMany => f.choices.first()?.code.clone(),
        T::Reference => child.into(),
        T::Geopoint => "16.46 107.59 0 5".into(),
        _ => return None,
    })
}

/// ODK's own form engine (`@getodk/xforms-engine`) loads every XForm Mầm offers a phone, with
/// its entity list, and fills it as a person would; its submissions, posted as Collect posts
/// them, become records that `/v1` phones pull with the answers given. An instance it opens
/// for editing and sends back with `deprecatedID` changes the same record.
pub async fn odks_engine_fills_what_mam_serves(db: Database) {
    let engine = crate::harness::repo_root().join("tests/odk-engine");
    let ready = engine.join("node_modules/@getodk/xforms-engine").is_dir();
    if !crate::odk_engine::have(
        "ODK's form engine",
        ready,
        "npm ci --prefix tests/odk-engine",
    ) {
        return;
    }
    let server = Server::start(&db);
    let mut phone = server.enroll("Hoa", &[COMMUNE]).await;
    let child = register_child(&mut phone, COMMUNE, "Phan Văn Tí", "Thôn 3").await;
    let collect = Collect::enroll(&server, "Máy ODK", &[COMMUNE]).await;

    let mut forms = Vec::new();
    let mut updates = Vec::new();
    for listed in collect.form_list().await {
        let xform = collect.xform(&listed).await;
        let mut attachments = serde_json::Map::new();
        for media in collect.manifest(&listed).await {
            let (_, _, body) = collect.get(&media.download).await;
            attachments.insert(
                media.filename.clone(),
                json!(String::from_utf8(body).unwrap()),
            );
        }
        let (id, update) = match listed.id.strip_suffix(".update") {
            Some(base) => (base, true),
            None => (listed.id.as_str(), false),
        };
        if update {
            // The update form: the child chosen from the list fills in its answers; one is
            // changed.
            updates.push(json!({ "xform": xform, "attachments": attachments,
                "answers": { "mam_entity": child.to_string(), "village": "Thôn 9" } }));
            continue;
        }
        let file = crate::harness::repo_root()
            .join(format!("schemas/forms/{id}.v{}.json", listed.version));
        let form: sync_protocol::Form =
            serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
        let answers: serde_json::Map<String, Value> = form
            .fields
            .iter()
            .filter_map(|f| Some((f.name.clone(), json!(engine_answer(f, &child.to_string())?))))
            .collect();
        forms.push((
            form,
            json!({ "xform": xform, "attachments": attachments, "answers": answers }),
        ));
    }
    let run = |request: Value| crate::odk_engine::run_engine("submit.mjs", &request);
    let made = run(json!({ "forms": forms.iter().map(|(_, r)| r.clone()).collect::<Vec<_>>() }));
    assert!(forms.len() >= 8, "{} forms", forms.len());
    let mut sent = Vec::new();
    for ((form, request), result) in forms.iter().zip(&made) {
        let id = form.id.as_str();
        assert!(result["error"].is_null(), "{id}: {}", result["error"]);
        assert_eq!(
            result["status"], "ready",
            "{id}: the engine finds {}",
            result["violations"]
        );
        let xml = result["xml"].as_str().unwrap().to_owned();
        // Every other form split in two requests, as Collect splits a large one: a first part
        // marked incomplete, then the whole.
        if sent.len() % 2 == 1 {
            let (status, message) = collect.submit(&xml, &[], true).await;
            assert_eq!(status, 201, "{id}: {message}");
        }
        let (status, message) = collect.submit(&xml, &[], false).await;
        assert_eq!(status, 201, "{id}: {message}");
        // Sent again, as after a lost answer: still one record.
        let (status, _) = collect.submit(&xml, &[], false).await;
        assert_eq!(status, 201);
        let instance = parse_tree(xml.as_bytes()).unwrap();
        let instance = text(instance.child("meta").unwrap(), "instanceID").unwrap();
        sent.push((form.clone(), request["answers"].clone(), instance, xml));
    }
    phone.sync().await;
    for (form, answers, instance, _) in &sent {
        let record = phone
            .client
            .records()
            .into_iter()
            .find(|r| {
                r.form == form.id
                    && (r.id.to_string() == instance.trim_start_matches("uuid:")
                        || form.id.as_str() == "child"
                            && r.id != child
                            && r.value("child_name") == Some(&json!("Nguyễn Thị Ba")))
            })
            .unwrap_or_else(|| panic!("{}: no record", form.id.as_str()));
        for f in &form.fields {
            let Some(given) = answers.get(&f.name).and_then(Value::as_str) else {
                continue;
            };
            let held = record.value(&f.name);
            if f.kind == sync_protocol::FieldType::Text || f.kind == sync_protocol::FieldType::Date
            {
                assert_eq!(held, Some(&json!(given)), "{}.{}", form.id.as_str(), f.name);
            } else {
                assert!(
                    held.is_some(),
                    "{}.{}: the answer {given:?} is kept",
                    form.id.as_str(),
                    f.name
                );
            }
        }
    }

    // The office sees them.
    crate::office::add_user(&server, "tinh", "province", "46");
    let page = crate::office::signed_in_page(
        &server,
        "tinh",
        "/office/records?name=Nguy%E1%BB%85n%20Th%E1%BB%8B%20Ba",
    )
    .await;
    assert!(
        page.contains("Nguyễn Thị Ba"),
        "the office lists the engine's records"
    );

    // The child register's update form, filled from the entity list: only the answer changed
    // is written, nothing the child's record holds is put in conflict.
    assert_eq!(updates.len(), 1, "one entity list, one update form");
    let updated = run(json!({ "forms": updates }));
    assert_eq!(updated[0]["status"], "ready", "{}", updated[0]);
    let xml = updated[0]["xml"].as_str().unwrap();
    assert!(
        xml.contains("update=\"1\"") && xml.contains("baseVersion=\"1\""),
        "{xml}"
    );
    assert!(
        xml.contains("<child_name>Phan Văn Tí</child_name>"),
        "filled from the list: {xml}"
    );
    let (status, message) = collect.submit(xml, &[], false).await;
    assert_eq!(status, 201, "{message}");
    phone.sync().await;
    let record = phone.view(child);
    assert_eq!(values(&record, "village"), [json!("Thôn 9")]);
    assert_eq!(values(&record, "child_name"), [json!("Phan Văn Tí")]);
    assert!(!record.is_conflicted(), "{record:?}");

    // The child register edited in the engine and sent back as an edit of its instance.
    let (form, _, instance, xml) = sent
        .iter()
        .find(|(f, ..)| f.id.as_str() == "child")
        .unwrap();
    let (_, request) = forms.iter().find(|(f, _)| f.id == form.id).unwrap();
    let edited = run(json!({ "forms": [{
        "xform": request["xform"], "attachments": request["attachments"],
        "answers": { "village": "Thôn 9" }, "edit": xml,
    }]}));
    assert_eq!(edited[0]["status"], "ready", "{}", edited[0]);
    let edit = edited[0]["xml"].as_str().unwrap();
    assert!(
        edit.contains(&format!("<deprecatedID>{instance}</deprecatedID>")),
        "{edit}"
    );
    let (status, message) = collect.submit(edit, &[], false).await;
    assert_eq!(status, 201, "{message}");
    phone.sync().await;
    let records: Vec<Record> = phone
        .client
        .records()
        .into_iter()
        .filter(|r| r.form == form.id && r.value("child_name") == Some(&json!("Nguyễn Thị Ba")))
        .collect();
    assert_eq!(records.len(), 1, "an edit, not a new record");
    assert_eq!(values(&records[0], "village"), [json!("Thôn 9")]);
}

/// Rewrites the server's note of a submission, as a crash at a given moment would leave it.
async fn rewrite_note(db: &Database, instance: &str, body: Value) {
    use sqlx::Connection;
    let text = body.to_string();
    match db.url() {
        Some(url) => {
            let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
            sqlx::query(
                "INSERT INTO openrosa (kind, key, record, body) VALUES ('submission', $1, $2, $3) \
                 ON CONFLICT (kind, key) DO UPDATE SET body = excluded.body",
            )
            .bind(instance)
            .bind(body["record"].as_str().unwrap_or(""))
            .bind(&text)
            .execute(&mut conn)
            .await
            .unwrap();
        }
        None => {
            let file = std::path::Path::new(&db.args[1]).join("mam.db");
            let options = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(file)
                .busy_timeout(std::time::Duration::from_secs(10));
            let mut conn = sqlx::SqliteConnection::connect_with(&options)
                .await
                .unwrap();
            sqlx::query(
                "INSERT INTO openrosa (kind, key, record, body) VALUES ('submission', ?, ?, ?) \
                 ON CONFLICT (kind, key) DO UPDATE SET body = excluded.body",
            )
            .bind(instance)
            .bind(body["record"].as_str().unwrap_or(""))
            .bind(&text)
            .execute(&mut conn)
            .await
            .unwrap();
        }
    }
}

async fn read_note(db: &Database, instance: &str) -> Value {
    use sqlx::Connection;
    let body: String = match db.url() {
        Some(url) => {
            let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
            sqlx::query_scalar("SELECT body FROM openrosa WHERE kind = 'submission' AND key = $1")
                .bind(instance)
                .fetch_one(&mut conn)
                .await
                .unwrap()
        }
        None => {
            let file = std::path::Path::new(&db.args[1]).join("mam.db");
            let options = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(file)
                .busy_timeout(std::time::Duration::from_secs(10));
            let mut conn = sqlx::SqliteConnection::connect_with(&options)
                .await
                .unwrap();
            sqlx::query_scalar("SELECT body FROM openrosa WHERE kind = 'submission' AND key = ?")
                .bind(instance)
                .fetch_one(&mut conn)
                .await
                .unwrap()
        }
    };
    serde_json::from_str(&body).unwrap()
}

/// A submission's edit is noted before its push and the note completed after it. A crash
/// after the push's commit leaves the note unfinished: Collect, never told, sends it again,
/// and the server finds the edit already there (applied once, no value beside itself). A
/// crash before the commit leaves a note of an edit that never happened: sent again, it is
/// applied.
pub async fn a_resend_after_a_crash_is_applied_once(db: Database) {
    let server = Server::start(&db);
    let collect = Collect::enroll(&server, "ODK", &[COMMUNE]).await;
    let mut phone = server.enroll("Hoa", &[COMMUNE]).await;
    let first = uuid();
    let (status, _) = collect
        .submit(&child_xml(&first, CHILD, ""), &[], false)
        .await;
    assert_eq!(status, 201);
    let record_id = first.trim_start_matches("uuid:").to_owned();
    // An edit of it, and a crash between its push's commit and the note's completion.
    let edit = uuid();
    let mut edited = CHILD.to_vec();
    edited.retain(|(k, _)| *k != "village");
    edited.push(("village", "Thôn 6"));
    let xml = child_xml(
        &edit,
        &edited,
        &format!("<deprecatedID>{first}</deprecatedID>"),
    );
    let (status, _) = collect.submit(&xml, &[], false).await;
    assert_eq!(status, 201);
    let mut note = read_note(&db, &edit).await;
    note["pending"] = json!({ "seq": note["seq"], "before": null });
    rewrite_note(&db, &edit, note).await;
    let (status, message) = collect.submit(&xml, &[], false).await;
    assert_eq!(status, 201, "{message}");
    let record = pulled(&mut phone, &record_id).await;
    assert_eq!(
        values(&record, "village"),
        [json!("Thôn 6")],
        "applied once"
    );
    assert!(
        read_note(&db, &edit).await.get("pending").is_none(),
        "the note is completed"
    );

    // A crash before the commit: the note names a seq the device never used.
    let lost = uuid();
    let mut lost_values = CHILD.to_vec();
    lost_values.retain(|(k, _)| *k != "child_name");
    lost_values.push(("child_name", "Chưa Kịp Ghi"));
    let xml = child_xml(&lost, &lost_values, "");
    use sha2::Digest;
    let sha: String = sha2::Sha256::digest(xml.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let lost_record = lost.trim_start_matches("uuid:").to_owned();
    rewrite_note(
        &db,
        &lost,
        json!({ "xml": sha, "device": collect.device, "seq": 1000, "record": lost_record,
                "form": "child", "view": {}, "wrote": {}, "pending": { "seq": 1000, "before": null } }),
    )
    .await;
    let (status, message) = collect.submit(&xml, &[], false).await;
    assert_eq!(status, 201, "{message}");
    let record = pulled(&mut phone, &lost_record).await;
    assert_eq!(values(&record, "child_name"), [json!("Chưa Kịp Ghi")]);
}
