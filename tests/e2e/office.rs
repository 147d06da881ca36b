//! The office web app: accounts, sessions, CSRF, lockout and scope over real HTTP on both
//! backends, and one story in headless Chromium against a real `mam`.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use sync_protocol::RecordId;

use crate::browser::Browser;
use crate::harness::{Database, Server};

/// Thuận Lộc and Kim Long are in Huế (district 474); Phong Điền town is in Phong Điền (476).
const HUE_A: &str = "19753";
const HUE_B: &str = "19774";
const PHONG_DIEN: &str = "19819";
pub(crate) const PASSWORD: &str = "mật khẩu đủ dài";

pub(crate) fn add_user(server: &Server, name: &str, role: &str, area: &str) {
    let out = server.cli(&[
        "user",
        "add",
        "--name",
        name,
        "--role",
        role,
        "--area",
        area,
        "--password",
        PASSWORD,
    ]);
    assert!(out.contains(name), "{out}");
}

/// A browser-like HTTP client: keeps cookies, reads the forms' hidden tokens.
pub(crate) struct Office {
    http: reqwest::Client,
    pub(crate) url: String,
    cookies: BTreeMap<String, String>,
}

pub(crate) fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no hidden {name} in the page"))
        + marker.len();
    unescape(&html[start..start + html[start..].find('"').unwrap()])
}

/// An attribute's text as a browser reads it.
pub(crate) fn unescape(text: &str) -> String {
    text.replace("&quot;", "\"")
        .replace("&#34;", "\"")
        .replace("&#x22;", "\"")
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The value of the radio button that picks `value` for `field` on a settle form.
fn choice_for(html: &str, field: &str, value: &str) -> String {
    let set = &html[html
        .find(&format!("class=\"field-conflict\" data-field=\"{field}\""))
        .unwrap_or_else(|| panic!("no conflict on {field} in the page"))..];
    let set = &set[..set.find("</fieldset>").unwrap()];
    let at = set
        .find(&format!("<span class=\"value\">{value}</span>"))
        .unwrap_or_else(|| panic!("{value} is not offered for {field}"));
    let before = &set[..at];
    let marker = "value=\"";
    let start = before.rfind(marker).unwrap() + marker.len();
    unescape(&before[start..start + before[start..].find('"').unwrap()])
}

impl Office {
    pub(crate) fn new(server: &Server) -> Office {
        Office {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            url: server.url.clone(),
            cookies: BTreeMap::new(),
        }
    }

    pub(crate) fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn keep_cookies(&mut self, response: &reqwest::Response) -> Vec<String> {
        let mut raw = Vec::new();
        for value in response.headers().get_all("set-cookie") {
            let text = value.to_str().unwrap().to_owned();
            let pair = text.split(';').next().unwrap();
            let (k, v) = pair.split_once('=').unwrap();
            if v.is_empty() {
                self.cookies.remove(k);
            } else {
                self.cookies.insert(k.to_owned(), v.to_owned());
            }
            raw.push(text);
        }
        raw
    }

    pub(crate) async fn get(&mut self, path: &str) -> (u16, String) {
        let response = self
            .http
            .get(format!("{}{path}", self.url))
            .header("cookie", self.cookie_header())
            .send()
            .await
            .unwrap();
        self.keep_cookies(&response);
        (response.status().as_u16(), response.text().await.unwrap())
    }

    /// A download: its status, its headers and its bytes.
    pub(crate) async fn download(
        &mut self,
        path: &str,
    ) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
        let response = self
            .http
            .get(format!("{}{path}", self.url))
            .header("cookie", self.cookie_header())
            .send()
            .await
            .unwrap();
        let (status, headers) = (response.status().as_u16(), response.headers().clone());
        (status, headers, response.bytes().await.unwrap().to_vec())
    }

    pub(crate) async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        let response = self
            .http
            .post(format!("{}{path}", self.url))
            .header("cookie", self.cookie_header())
            .form(form)
            .send()
            .await
            .unwrap();
        self.keep_cookies(&response);
        response
    }

    /// Sign in; returns the status and the Set-Cookie lines of the answer.
    pub(crate) async fn login(&mut self, name: &str, password: &str) -> (u16, Vec<String>) {
        let (_, page) = self.get("/login").await;
        let csrf = hidden(&page, "csrf");
        let response = self
            .http
            .post(format!("{}/login", self.url))
            .header("cookie", self.cookie_header())
            .form(&[
                ("name", name),
                ("password", password),
                ("csrf", &csrf),
                ("next", "/office"),
            ])
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let cookies = self.keep_cookies(&response);
        (status, cookies)
    }

    /// The CSRF token of the signed-in session, as its pages carry it.
    pub(crate) async fn csrf(&mut self) -> String {
        let (status, page) = self.get("/office/phones").await;
        assert_eq!(status, 200);
        hidden(&page, "csrf")
    }
}

/// A page as an office user sees it (signing in first).
pub async fn signed_in_page(server: &Server, name: &str, path: &str) -> String {
    let mut office = Office::new(server);
    let (status, _) = office.login(name, PASSWORD).await;
    assert_eq!(status, 303);
    let (status, page) = office.get(path).await;
    assert_eq!(status, 200);
    page
}

/// Birth records in three communes of two districts, and one field in conflict in Thuận Lộc.
async fn seed(
    server: &Server,
) -> (
    RecordId,
    RecordId,
    crate::harness::Phone,
    crate::harness::Phone,
) {
    let mut hue = server.enroll("Hoa", &[HUE_A, HUE_B]).await;
    let mut other = server.enroll("Lan", &[HUE_A]).await;
    let mut phong = server.enroll("Minh", &[PHONG_DIEN]).await;
    let mut in_hue = None;
    for (i, commune) in [HUE_A, HUE_B, HUE_A].iter().enumerate() {
        let id = hue.create(
            commune,
            &[
                ("child_name", json!(format!("Bé {i}"))),
                ("date_of_birth", json!("2020-03-01")),
                ("birth_registered", json!(true)),
                ("registration_date", json!("2020-03-20")),
            ],
        );
        in_hue.get_or_insert(id);
    }
    let far = phong.create(
        PHONG_DIEN,
        &[
            ("child_name", json!("Bé Phong Điền")),
            ("date_of_birth", json!("2020-04-01")),
        ],
    );
    hue.sync().await;
    phong.sync().await;
    other.sync().await;
    let disputed = in_hue.unwrap();
    hue.edit(disputed, &[("child_name", json!("Nguyễn Văn An"))]);
    other.edit(disputed, &[("child_name", json!("Nguyễn Văn Ân"))]);
    hue.sync().await;
    other.sync().await;
    hue.sync().await;
    assert!(hue.view(disputed).is_conflicted());
    (disputed, far, hue, other)
}

/// Type the password on the sign-in page and send it; signed in once the browser has left the
/// page (checking the password takes a moment: going elsewhere sooner would abandon it).
async fn sign_in_with_password(browser: &Browser) {
    browser
        .type_into(&browser.find("#password").await, PASSWORD)
        .await;
    browser.click(&browser.find("form button").await).await;
    for _ in 0..300 {
        if !browser.url().await.contains("/login") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        !browser.url().await.contains("/login"),
        "still on the sign-in page: {}",
        browser.body_text().await
    );
}

/// Sessions, CSRF, lockout and scope, with no browser: what every page and API call relies on.
pub async fn office_accounts_are_scoped_and_guarded(db: Database) {
    let server = Server::start(&db);
    add_user(&server, "hue", "district", "474");
    add_user(&server, "tinh", "province", "46");
    // Bad accounts are refused with the field and the rule.
    let out = crate::harness::mam()
        .args([
            "user", "add", "--name", "x", "--role", "district", "--area", "999",
        ])
        .args(["--password", PASSWORD])
        .args(&server.db)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("area"));
    let out = crate::harness::mam()
        .args([
            "user", "add", "--name", "y", "--role", "commune", "--area", HUE_A,
        ])
        .args(["--password", "short"])
        .args(&server.db)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("password"));

    let (_, far, mut hoa, mut lan) = seed(&server).await;
    // One refused edit, to one record.
    let second = hoa.named("Bé 1");
    hoa.edit(second, &[("date_of_birth", json!("2999-01-01"))]);
    hoa.sync().await;
    assert_eq!(hoa.client.rejected().len(), 1);

    // Not signed in: pages send to the sign-in page, the API answers 401.
    let mut anonymous = Office::new(&server);
    let (status, _) = anonymous.get("/office/records").await;
    assert_eq!(status, 303);
    let (status, _) = anonymous.get("/v1/indicators?period=2020-H1").await;
    assert_eq!(status, 401);

    // The session cookie is HttpOnly and SameSite=Strict; the token is not the stored hash.
    let mut hue = Office::new(&server);
    let (status, cookies) = hue.login("hue", PASSWORD).await;
    assert_eq!(status, 303);
    let session = cookies
        .iter()
        .find(|c| c.starts_with("mam_session="))
        .expect("a session cookie");
    assert!(
        session.contains("HttpOnly") && session.contains("SameSite=Strict"),
        "{session}"
    );

    // Scope: the district's records are listed, another district's record is "not found",
    // even by its exact URL.
    let (status, page) = hue.get("/office/records").await;
    assert_eq!(status, 200);
    assert!(page.contains("Bé 1") && !page.contains("Bé Phong Điền"));
    let (status, page) = hue.get(&format!("/office/records/{far}")).await;
    assert_eq!(status, 404);
    assert!(!page.contains("Phong Điền town") && !page.contains("Bé Phong Điền"));
    let (status, page) = hue
        .get(&format!("/office/records?commune={PHONG_DIEN}"))
        .await;
    assert_eq!(status, 404, "another district's commune is not found");
    assert!(!page.contains("Bé Phong Điền"));
    // States filter in the database, on both backends.
    for (path, count) in [
        ("/office/records?status=conflict", 1),
        ("/office/records?status=ok", 2),
        ("/office/records?status=deleted", 0),
        ("/office/records?status=rejected", 1),
        ("/office/conflicts", 1),
    ] {
        let (status, page) = hue.get(path).await;
        assert_eq!(status, 200);
        assert!(
            page.contains(&format!("id=\"found\">{count}<")),
            "{path}: {count}"
        );
    }
    // The API answers within the same scope for the signed-in browser.
    let (status, body) = hue.get("/v1/indicators?period=2020-H1&level=commune").await;
    assert_eq!(status, 200);
    let table: Value = serde_json::from_str(&body).unwrap();
    let areas: Vec<&str> = table["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["area"].as_str().unwrap())
        .collect();
    assert!(
        areas.contains(&HUE_A) && !areas.contains(&PHONG_DIEN),
        "{areas:?}"
    );
    let (_, csv) = hue
        .get("/office/targets.csv?period=2020-H1&level=commune")
        .await;
    assert!(csv.contains(HUE_A) && !csv.contains(PHONG_DIEN));
    let (status, body) = hue
        .get(&format!(
            "/office/targets/birth-registered-on-time/records?area={PHONG_DIEN}&period=2020-H1"
        ))
        .await;
    assert_eq!(status, 404, "another district's number is not found");
    assert!(!body.contains("Bé Phong Điền"));

    // A form without the session's CSRF token changes nothing.
    let phones_before = server.cli(&["device", "list"]);
    let response = hue
        .post(
            "/office/phones",
            &[("csrf", "forged"), ("name", "Kẻ lạ"), ("commune", HUE_A)],
        )
        .await;
    assert_eq!(response.status(), 403);
    assert_eq!(server.cli(&["device", "list"]), phones_before);
    // Another site's form (its Origin) is refused even with the token.
    let csrf = hue.csrf().await;
    let response = hue
        .http
        .post(format!("{}/office/phones", hue.url))
        .header("cookie", hue.cookie_header())
        .header("origin", "http://evil.example")
        .form(&[
            ("csrf", csrf.as_str()),
            ("name", "Kẻ lạ"),
            ("commune", HUE_A),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    // A phone may only be enrolled for communes of the officer's area.
    let response = hue
        .post(
            "/office/phones",
            &[("csrf", &csrf), ("name", "Hoa 2"), ("commune", PHONG_DIEN)],
        )
        .await;
    assert_eq!(response.status(), 422);
    assert_eq!(server.cli(&["device", "list"]), phones_before);

    // A delete against an edit: the officer restores the record and keeps the edit. The
    // choice is an ordinary edit, and the phones receive it.
    let third = hoa.named("Bé 2");
    hoa.client.delete(third);
    lan.edit(third, &[("child_name", json!("Bé Hai"))]);
    hoa.sync().await;
    lan.sync().await;
    hoa.sync().await;
    assert!(hoa.view(third).is_conflicted());
    let (_, page) = hue.get(&format!("/office/records/{third}")).await;
    assert!(
        page.contains("name=\"delete\" value=\"restore\""),
        "the choice to restore"
    );
    let shown = hidden(&page, "shown");
    let response = hue
        .post(
            &format!("/office/records/{third}/settle"),
            &[
                ("csrf", &csrf),
                ("shown", &shown),
                ("delete", "restore"),
                ("pick:child_name", "other"),
                ("other:child_name", "Bé Hai"),
            ],
        )
        .await;
    assert_eq!(response.status(), 303, "{}", response.text().await.unwrap());
    hoa.sync().await;
    let settled = hoa.view(third);
    assert!(
        !settled.is_conflicted() && !settled.is_deleted(),
        "{settled:?}"
    );
    assert_eq!(settled.value("child_name"), Some(&json!("Bé Hai")));
    lan.sync().await;
    assert_eq!(lan.view(third).value("child_name"), Some(&json!("Bé Hai")));

    // Revoking: a phone of the area, yes; a phone of another district, "not found".
    let devices: Value = serde_json::from_str(&server.cli(&["device", "list", "--json"])).unwrap();
    let id_of = |name: &str| {
        devices
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == name)
            .unwrap()["id"]
            .as_u64()
            .unwrap()
    };
    let response = hue
        .post(
            &format!("/office/phones/{}/revoke", id_of("Minh")),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(response.status(), 404);
    let response = hue
        .post(
            &format!("/office/phones/{}/revoke", id_of("Lan")),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(response.status(), 303);
    let devices: Value = serde_json::from_str(&server.cli(&["device", "list", "--json"])).unwrap();
    for d in devices.as_array().unwrap() {
        assert_eq!(d["revoked"], json!(d["name"] == "Lan"), "{d}");
    }

    // Signing out ends the session on the server, not only in the browser.
    let stolen = hue.cookies.clone();
    let response = hue.post("/logout", &[("csrf", &csrf)]).await;
    assert_eq!(response.status(), 303);
    let mut replay = Office::new(&server);
    replay.cookies = stolen;
    let (status, _) = replay.get("/office").await;
    assert_eq!(status, 303, "a signed-out session is dead");

    // Five wrong passwords lock the account: the right one is then refused too.
    let mut guesser = Office::new(&server);
    for _ in 0..5 {
        let (status, _) = guesser.login("tinh", "wrong password!").await;
        assert_eq!(status, 401);
    }
    let (status, _) = guesser.login("tinh", PASSWORD).await;
    assert_eq!(status, 429, "locked");
    assert!(server.cli(&["user", "list"]).contains("locked"));
    // The administrator lifts it by setting a password.
    server.cli(&["user", "password", "--name", "tinh", "--password", PASSWORD]);
    let (status, _) = guesser.login("tinh", PASSWORD).await;
    assert_eq!(status, 303);
    // Refused sign-ins are visible to the province, not to a district.
    let (_, page) = guesser.get("/office/rejected").await;
    assert!(
        page.contains("refused-logins") && page.contains("tinh") && page.contains("sai mật khẩu")
    );
    let mut district = Office::new(&server);
    assert_eq!(district.login("hue", PASSWORD).await.0, 303);
    let (status, page) = district.get("/office/rejected").await;
    assert_eq!(status, 200);
    assert!(!page.contains("refused-logins"));
    // A province officer sees every district.
    let (_, page) = guesser.get("/office/records").await;
    assert!(page.contains("Bé Phong Điền") && page.contains("Bé 1"));

    // The six-month report downloads as a workbook.
    let response = guesser
        .http
        .get(format!("{}/office/reports/2020-H1.xlsx", guesser.url))
        .header("cookie", guesser.cookie_header())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .contains("spreadsheetml"));
    assert!(response.bytes().await.unwrap().starts_with(b"PK"));

    // Publishing a new form version by upload: the province may, a district may not.
    let path = crate::harness::repo_root().join("schemas/forms/birth-registration.v2.json");
    let mut form: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    form["version"] = json!(3);
    form["fields"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "name": "nickname", "type": "text", "label": { "vi": "Tên gọi ở nhà", "en": "Nickname" } }));
    let csrf = guesser.csrf().await;
    let response = upload(&mut guesser, &csrf, &form.to_string()).await;
    assert_eq!(response.status(), 200);
    let page = response.text().await.unwrap();
    assert!(page.contains("birth-registration v3"), "{page}");
    assert!(server.cli(&["form", "list"]).contains("v3"));
    let (_, page) = guesser.get("/office/forms").await;
    assert!(page.contains("nickname"));
    // A broken file is refused with the reason, and nothing is published.
    let response = upload(&mut guesser, &csrf, "{\"id\": \"birth-registration\"").await;
    assert_eq!(response.status(), 422);
    assert!(response
        .text()
        .await
        .unwrap()
        .contains("not a form in JSON"));
    // A spreadsheet with a question Mầm cannot convert (an OpenStreetMap widget): not
    // published, and the officer is told each one, in Vietnamese.
    let osm = std::fs::read(
        crate::harness::repo_root().join("tests/xlsform/pyxform-examples/case_insensitivity.xls"),
    )
    .unwrap();
    let response = upload_file(&mut guesser, &csrf, "case_insensitivity.xls", &osm).await;
    assert_eq!(response.status(), 422);
    let page = response.text().await.unwrap();
    assert!(
        page.contains("chưa công bố: 1 mục chưa chuyển được"),
        "{page}"
    );
    assert!(
        page.contains("dòng 4 (q3): kiểu câu hỏi &#34;osm c1&#34; chưa được hỗ trợ"),
        "{page}"
    );
    assert!(!server.cli(&["form", "list"]).contains("yesno"));
    let csrf = district.csrf().await;
    form["version"] = json!(4);
    let response = upload(&mut district, &csrf, &form.to_string()).await;
    assert_eq!(response.status(), 403);
    assert!(!server.cli(&["form", "list"]).contains("v4"));
}

async fn upload_file(
    office: &mut Office,
    csrf: &str,
    name: &str,
    file: &[u8],
) -> reqwest::Response {
    let boundary = "mam-test-boundary";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n{csrf}\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(file);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    office
        .http
        .post(format!("{}/office/forms", office.url))
        .header("cookie", office.cookie_header())
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn upload(office: &mut Office, csrf: &str, file: &str) -> reqwest::Response {
    upload_file(office, csrf, "birth-registration.json", file.as_bytes()).await
}

/// The story in a real browser: sign in, read the dashboard, follow a number to its records,
/// settle a conflict and see the phone receive it, enrol a phone, try another district's URL.
pub async fn office_in_a_browser(db: Database) {
    let Some(browser) = crate::browser::start(1366, 768, "office-screenshots").await else {
        return;
    };
    let server = Server::start(&db);
    add_user(&server, "hue", "district", "474");
    let (disputed, far, mut phone, _) = seed(&server).await;
    // A refused edit to show on its page.
    phone.edit(disputed, &[("date_of_birth", json!("2999-01-01"))]);
    phone.sync().await;
    let base = &server.url;

    // Sign in (a wrong password first).
    browser.goto(&format!("{base}/office")).await;
    assert!(browser.url().await.contains("/login"));
    browser.type_into(&browser.find("#name").await, "hue").await;
    browser
        .type_into(&browser.find("#password").await, "not the password")
        .await;
    browser.click(&browser.find("form button").await).await;
    let error = browser.find("#login-error").await;
    assert!(browser.text(&error).await.contains("Sai tên đăng nhập"));
    browser.screenshot("01-login-refused").await;
    sign_in_with_password(&browser).await;

    // The dashboard, in Vietnamese, scoped to Huế.
    browser
        .goto(&format!(
            "{base}/office?period=2020-H1&level=commune&geography=2020"
        ))
        .await;
    let text = browser.body_text().await;
    assert!(
        text.contains("Chỉ tiêu") && text.contains("Thuận Lộc"),
        "{text}"
    );
    assert!(
        !text.contains("Phong Điền"),
        "another district on the dashboard"
    );
    browser.screenshot("02-dashboard").await;
    let section = "#birth-registered-on-time";
    let cell = browser
        .find(&format!("{section} tr[data-area=\"{HUE_A}\"] a.cell"))
        .await;
    assert_eq!(browser.text(&cell).await, "100 %");
    let conflicts = browser
        .find(&format!("{section} tr[data-area=\"{HUE_A}\"] .conflicts"))
        .await;
    assert_eq!(
        browser.text(&conflicts).await,
        "1",
        "one record behind it is in conflict"
    );

    // Follow the number to its records.
    browser.click(&cell).await;
    let found = browser.find("#found").await;
    assert_eq!(browser.text(&found).await, "2", "two births in Thuận Lộc");
    browser.screenshot("03-records-behind-a-number").await;

    // Records list and one record with its history.
    browser
        .goto(&format!("{base}/office/records?status=conflict"))
        .await;
    assert_eq!(browser.text(&browser.find("#found").await).await, "1");
    browser.screenshot("04-records").await;
    browser
        .goto(&format!("{base}/office/records?status=rejected"))
        .await;
    assert_eq!(browser.text(&browser.find("#found").await).await, "1");
    browser
        .goto(&format!(
            "{base}/office/records?village=th%C3%B4n+1&from=2020-01-01&to=2020-03-31"
        ))
        .await;
    assert_eq!(
        browser.text(&browser.find("#found").await).await,
        "3",
        "the district's three births in Thôn 1 in the first quarter"
    );
    browser
        .goto(&format!("{base}/office/records/{disputed}"))
        .await;
    let text = browser.body_text().await;
    assert!(text.contains("Nguyễn Văn An") && text.contains("Nguyễn Văn Ân"));
    assert!(
        text.contains("Hoa") && text.contains("Lan"),
        "who wrote each value"
    );
    browser.screenshot("05-record").await;

    // The conflict queue: choose one value.
    browser.goto(&format!("{base}/office/conflicts")).await;
    browser.screenshot("06-conflicts").await;
    let choices = browser
        .find_all("fieldset[data-field=\"child_name\"] input[type=radio]")
        .await;
    assert_eq!(choices.len(), 3, "two values and another");
    // The values in the order the server applied them: Hoa's An, then Lan's Ân. Each radio
    // names its value by the dot of the edit that wrote it.
    let dot = browser.attribute(&choices[1], "value").await;
    assert!(
        dot.as_deref().is_some_and(|d| d.contains(':')),
        "a choice names a dot, not a place: {dot:?}"
    );
    browser.click(&choices[1]).await;
    browser
        .click(&browser.find("form.settle button[type=submit]").await)
        .await;
    let notice = browser.find("#notice").await;
    assert!(browser.text(&notice).await.contains("Đã lưu"));
    browser.screenshot("07-conflict-settled").await;

    // The phone receives the choice as an ordinary edit.
    phone.sync().await;
    let record = phone.view(disputed);
    assert!(!record.is_conflicted());
    assert_eq!(record.value("child_name"), Some(&json!("Nguyễn Văn Ân")));

    // Enrol a phone: the code works once at /v1/enroll.
    browser.goto(&format!("{base}/office/phones")).await;
    browser
        .type_into(&browser.find("#enrol-name").await, "Trần Thị Mai")
        .await;
    let option = browser
        .find(&format!("#enrol-communes option[value=\"{HUE_B}\"]"))
        .await;
    browser.click(&option).await;
    browser
        .click(&browser.find("form[action=\"/office/phones\"] button").await)
        .await;
    let code = browser.text(&browser.find("#enrol-code").await).await;
    assert_eq!(code.len(), 9, "{code}");
    assert!(!browser.find_all(".qr svg").await.is_empty(), "a QR code");
    browser.screenshot("08-phone-enrolled").await;
    let enrolled: Value = reqwest::Client::new()
        .post(format!("{base}/v1/enroll"))
        .json(&json!({ "code": code }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(enrolled["communes"], json!([HUE_B]));
    browser.goto(&format!("{base}/office/phones")).await;
    let text = browser.body_text().await;
    assert!(
        text.contains("Trần Thị Mai") && !text.contains("Minh"),
        "{text}"
    );

    // Forms and refused edits.
    browser.goto(&format!("{base}/office/forms")).await;
    assert!(browser.body_text().await.contains("birth-registration"));
    browser.screenshot("09-forms").await;
    browser.goto(&format!("{base}/office/rejected")).await;
    let text = browser.body_text().await;
    assert!(
        text.contains("date_of_birth") && text.contains("Hoa"),
        "{text}"
    );
    browser.screenshot("10-rejected").await;

    // Another district's record, by URL: not found, nothing of it shown.
    browser.goto(&format!("{base}/office/records/{far}")).await;
    let text = browser.body_text().await;
    assert!(text.contains("Không tìm thấy") && !text.contains("Bé Phong Điền"));
    browser.screenshot("11-other-district-refused").await;

    // English on request; the dashboard at phone width.
    browser.goto(&format!("{base}/office")).await;
    browser
        .click(&browser.find("a[href^=\"/lang?to=en\"]").await)
        .await;
    assert!(browser.body_text().await.contains("Targets"));
    browser.resize(360, 740).await;
    browser
        .goto(&format!(
            "{base}/office?period=2020-H1&level=commune&geography=2020"
        ))
        .await;
    browser.screenshot("12-dashboard-phone-width").await;
    browser.quit().await;
}

/// A settle supersedes exactly the values its page showed, and names the chosen one by its dot:
/// a value a phone sends while the officer looks at the page is never superseded unseen, and a
/// choice stays the value picked when the list of values changes.
pub async fn settles_supersede_only_what_the_page_showed(db: Database) {
    let server = Server::start(&db);
    add_user(&server, "hue", "district", "474");
    let (disputed, _, mut hoa, mut lan) = seed(&server).await;
    let mut hue = Office::new(&server);
    assert_eq!(hue.login("hue", PASSWORD).await.0, 303);
    let csrf = hue.csrf().await;
    let path = format!("/office/records/{disputed}");
    let (_, page) = hue.get(&path).await;
    let shown = hidden(&page, "shown");
    let pick = choice_for(&page, "child_name", "Nguyễn Văn Ân");

    // While the page is open, a third phone's value arrives for the field, made from a view
    // that showed neither value.
    let mut third = server.enroll("Mai", &[HUE_A]).await;
    third.sync().await;
    concurrent_name(&mut third, disputed, "Nguyễn Văn Anh").await;
    let response = hue
        .post(
            &format!("{path}/settle"),
            &[
                ("csrf", &csrf),
                ("shown", &shown),
                ("pick:child_name", &pick),
            ],
        )
        .await;
    assert_eq!(
        response.status(),
        409,
        "nothing is written over an unseen value"
    );
    let answer = response.text().await.unwrap();
    assert!(answer.contains("Chưa lưu gì"), "the page says why");
    assert!(answer.contains("Nguyễn Văn Anh"), "and shows the new value");
    hoa.sync().await;
    let record = hoa.view(disputed);
    let values: Vec<&Value> = record.fields["child_name"].values().collect();
    assert_eq!(values.len(), 3, "every value is still there: {values:?}");

    // The page as it is now: the choice is by dot, so it stays the value picked even though
    // the list now holds three values in another order.
    let shown = hidden(&answer, "shown");
    let pick = choice_for(&answer, "child_name", "Nguyễn Văn Ân");
    let response = hue
        .post(
            &format!("{path}/settle"),
            &[
                ("csrf", &csrf),
                ("shown", &shown),
                ("pick:child_name", &pick),
            ],
        )
        .await;
    assert_eq!(response.status(), 303, "{}", response.text().await.unwrap());
    for phone in [&mut hoa, &mut lan, &mut third] {
        phone.sync().await;
        let record = phone.view(disputed);
        assert!(!record.is_conflicted(), "{record:?}");
        assert_eq!(record.value("child_name"), Some(&json!("Nguyễn Văn Ân")));
    }

    // "Keep deleted" over a page that did not show a later edit writes nothing either.
    hoa.client.delete(disputed);
    lan.edit(disputed, &[("birth_registered", json!(false))]);
    hoa.sync().await;
    lan.sync().await;
    let (_, page) = hue.get(&path).await;
    assert!(page.contains("name=\"delete\" value=\"keep\""), "{page}");
    let shown = hidden(&page, "shown");
    concurrent_name(&mut third, disputed, "Bé Út").await;
    let response = hue
        .post(
            &format!("{path}/settle"),
            &[("csrf", &csrf), ("shown", &shown), ("delete", "keep")],
        )
        .await;
    assert_eq!(response.status(), 409);
    hoa.sync().await;
    assert!(hoa.view(disputed).fields["child_name"]
        .values()
        .any(|v| v == &json!("Bé Út")));
}

/// Push a `child_name` for `id` that supersedes nothing: an edit made from a view older than
/// every value the field holds, which the server keeps beside them.
async fn concurrent_name(phone: &mut crate::harness::Phone, id: RecordId, name: &str) {
    assert!(phone.client.pending().is_empty());
    let seq = phone
        .client
        .edit(id, [("child_name", json!(name))])
        .expect("the phone holds the record");
    let mut request = phone.client.sync_request();
    assert_eq!(request.push.len(), 1);
    request.push[0]
        .fields
        .get_mut("child_name")
        .unwrap()
        .supersedes
        .clear();
    let response = phone.send(&request).await;
    assert_eq!(response.status(), 200);
    let response: sync_protocol::SyncResponse = response.json().await.unwrap();
    assert!(response.rejected.is_empty(), "{:?}", response.rejected);
    assert_eq!(response.acked_through, seq);
    // The phone's own queue still holds the edit as it made it; the server has the other.
    phone.client.apply_response(&response);
}

/// The office on a phone (360×740): on every page the header takes a small part of the screen
/// and the page never scrolls sideways (a wide table scrolls inside its box).
pub async fn office_pages_fit_a_phone(db: Database) {
    let Some(browser) = crate::browser::start(360, 740, "office-screenshots").await else {
        return;
    };
    let server = Server::start(&db);
    add_user(&server, "hue", "district", "474");
    let (disputed, _, mut phone, _) = seed(&server).await;
    phone.edit(disputed, &[("date_of_birth", json!("2999-01-01"))]);
    phone.sync().await;
    let base = &server.url;
    browser.goto(&format!("{base}/login")).await;
    browser.type_into(&browser.find("#name").await, "hue").await;
    sign_in_with_password(&browser).await;
    for (i, path) in [
        "/office".to_owned(),
        "/office/records".to_owned(),
        format!("/office/records/{disputed}"),
        "/office/conflicts".to_owned(),
        "/office/phones".to_owned(),
        "/office/forms".to_owned(),
        "/office/rejected".to_owned(),
    ]
    .iter()
    .enumerate()
    {
        browser.goto(&format!("{base}{path}")).await;
        let fit = browser
            .execute_async(
                "const done = arguments[arguments.length - 1];
                 const header = document.querySelector('header.top').getBoundingClientRect().height;
                 done([document.documentElement.scrollWidth, window.innerWidth, header, window.innerHeight]);",
                vec![],
            )
            .await;
        let [scroll, width, header, height] =
            serde_json::from_value::<[f64; 4]>(fit.clone()).unwrap();
        browser
            .screenshot(&format!("phone-{:02}-{}", i + 1, path.replace('/', "-")))
            .await;
        assert!(scroll <= width, "{path} scrolls sideways: {fit}");
        assert!(
            header <= height * 0.2,
            "{path}: the header takes {header} of {height} px"
        );
    }
}

/// Exports and filtered lists read the database a chunk at a time (1,000 records for the CSV,
/// 2,000 for a list filtered inside the records), so that a province's year neither waits for
/// nor holds all of it: across those chunks, every record of the area comes out exactly once,
/// newest first, and a filtered list counts and pages as if it had read them all at once. The
/// name is searched in the database, without its marks.
pub async fn long_exports_and_lists_read_in_chunks(db: Database) {
    let server = Server::start(&db);
    let mut hue = server.enroll("Hoa", &[HUE_A]).await;
    let mut phong = server.enroll("Minh", &[PHONG_DIEN]).await;
    let mut ours = Vec::new();
    for i in 0..2_600 {
        ours.push(hue.create(
            HUE_A,
            &[
                ("child_name", json!(format!("Nguyễn Thị Lan {i}"))),
                ("village", json!(format!("Thôn {}", i % 4))),
            ],
        ));
    }
    hue.sync().await;
    phong.create(
        PHONG_DIEN,
        &[("child_name", json!("Nguyễn Thị Lan Phong Điền"))],
    );
    phong.sync().await;
    add_user(&server, "hue", "district", "474");
    let mut office = Office::new(&server);
    assert_eq!(office.login("hue", PASSWORD).await.0, 303);

    let (status, _, csv) = office
        .download("/office/records.csv?form=birth-registration&lang=en")
        .await;
    assert_eq!(status, 200);
    let csv = String::from_utf8(csv).unwrap();
    let csv = csv.strip_prefix('\u{feff}').expect("a byte order mark");
    let ids: Vec<&str> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    let mut expected: Vec<String> = ours.iter().map(|id| id.to_string()).collect();
    expected.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(ids, expected, "every record of the area once, newest first");
    assert!(!csv.contains("Phong Điền"), "nothing outside the area");

    // Thôn 1 is every fourth record: 650 of them over two chunks, the fourth page of 50
    // holding the 151st to the 200th.
    let (status, page) = office
        .get("/office/records?village=th%C3%B4n%201&page=4")
        .await;
    assert_eq!(status, 200);
    assert!(
        page.contains("<strong id=\"found\">650</strong>"),
        "the count of every match"
    );
    // The child numbered `i` is on the page (and not only one whose number begins with it).
    let shows = |page: &str, i: &str| {
        let name = format!("Nguyễn Thị Lan {i}");
        page.match_indices(&name)
            .any(|(at, _)| !page[at + name.len()..].starts_with(|c: char| c.is_ascii_digit()))
    };
    let newest_first: Vec<usize> = (0..2_600).rev().filter(|i| i % 4 == 1).collect();
    for (n, i) in newest_first.iter().enumerate() {
        let shown = shows(&page, &i.to_string());
        assert_eq!(
            shown,
            (150..200).contains(&n),
            "record {i} on page 4: {shown}"
        );
    }
    let (_, page) = office.get("/office/records?name=nguyen+thi+lan+2599").await;
    assert!(page.contains("<strong id=\"found\">1</strong>"), "{page}");
    assert!(shows(&page, "2599"), "{page}");
    let (_, page) = office.get("/office/records?name=lan+phong").await;
    assert!(
        page.contains("<strong id=\"found\">0</strong>"),
        "a search stays in the area"
    );
}
