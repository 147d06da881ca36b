//! What a hostile client tries, against real `mam` processes: bursts of guesses at sign-in and
//! enrolment, redirects elsewhere, other areas' numbers and refusals, the metrics, seq 0.

use serde_json::{json, Value};
use sync_protocol::{FormId, RecordId, RejectCode, SyncRequest, SyncResponse};

use crate::harness::{self, Database, Server};
use crate::office::{add_user, hidden, signed_in_page, Office, PASSWORD};

/// Thuận Lộc (Huế, district 474) and Hồng Vân (A Lưới, district 481).
const HUE: &str = "19753";
const A_LUOI: &str = "20047";

/// One sign-in from `client` (as a trusted proxy names it in `X-Forwarded-For`): its status,
/// its `Retry-After`, and the message it shows.
async fn sign_in_as(
    server: &Server,
    client: &str,
    name: &str,
    password: &str,
) -> (u16, Option<u64>, String) {
    let mut office = Office::new(server);
    let (_, page) = office.get("/login").await;
    let csrf = hidden(&page, "csrf");
    let response = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(format!("{}/login", server.url))
        .header("cookie", office.cookie_header())
        .header("x-forwarded-for", client)
        .form(&[
            ("csrf", csrf.as_str()),
            ("name", name),
            ("password", password),
            ("next", "/office"),
        ])
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let retry = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    let page = response.text().await.unwrap();
    let message = page
        .split("role=\"alert\"")
        .nth(1)
        .and_then(|rest| rest.split('>').nth(1))
        .and_then(|rest| rest.split('<').next())
        .unwrap_or_default()
        .to_owned();
    (status, retry, message)
}

/// `/lang?back=` and the sign-in's `next=` lead only to this server's own pages: a tab or a
/// line break that browsers drop, a backslash they read as a slash, never a 500.
pub async fn redirects_stay_on_this_server(db: Database) {
    let server = Server::start(&db);
    add_user(&server, "hue", "district", "474");
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for back in [
        "/%09/evil.example/",
        "/%0d%0aSet-Cookie:%20x=1",
        "/%0a/evil.example",
        "/%5cevil.example",
        "//evil.example/",
        "https://evil.example/",
    ] {
        let url = format!("{}/lang?to=en&back={back}", server.url);
        let response = http.get(&url).send().await.unwrap();
        assert_eq!(response.status(), 303, "{back}");
        let to = response.headers()["location"].to_str().unwrap();
        assert_eq!(to, "/office", "{back}");
    }
    let fine = format!("{}/lang?to=en&back=/office/records%3Fpage%3D2", server.url);
    let response = http.get(&fine).send().await.unwrap();
    assert_eq!(response.headers()["location"], "/office/records?page=2");

    // The sign-in form's `next` is held to the same rule.
    let mut office = Office::new(&server);
    let (_, page) = office.get("/login").await;
    let csrf = hidden(&page, "csrf");
    let response = office
        .post(
            "/login",
            &[
                ("csrf", &csrf),
                ("name", "hue"),
                ("password", PASSWORD),
                ("next", "/\t/evil.example/"),
            ],
        )
        .await;
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()["location"], "/office");
}

/// The resident memory of a process, in KiB, from `/proc`.
fn resident_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// A burst of wrong passwords for one account gets no more guesses than the lockout allows,
/// and a burst of sign-ins of any size holds a bounded amount of memory.
pub async fn sign_in_bursts_hold(db: Database) {
    // The per-client throttle is off here: this is what holds when guesses come from many
    // addresses at once.
    let server = Server::start_with(&db, &[("MAM__LIMITS__SIGN_IN_FAILURES_PER_MINUTE", "0")]);
    add_user(&server, "hue", "district", "474");
    add_user(&server, "phong", "district", "476");
    // A server in use: an officer signed in and read a page. What a burst adds is measured
    // from here.
    let fresh = resident_kib(server.pid());
    let _ = signed_in_page(&server, "phong", "/office").await;
    let idle = resident_kib(server.pid());
    println!("resident memory of a fresh server: {fresh} KiB, after one sign-in: {idle} KiB");
    let mut office = Office::new(&server);
    let (_, page) = office.get("/login").await;
    let csrf = hidden(&page, "csrf");
    let cookies = office.cookie_header();
    // `count` sign-ins at once, all for `name`, or each for a name of its own when `distinct`.
    let burst = |count: usize, name: &'static str, distinct: bool| {
        let (url, csrf, cookies) = (
            format!("{}/login", server.url),
            csrf.clone(),
            cookies.clone(),
        );
        async move {
            let http = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap();
            let attempts = (0..count).map(|i| {
                let (http, url, csrf, cookies) =
                    (http.clone(), url.clone(), csrf.clone(), cookies.clone());
                tokio::spawn(async move {
                    let password = format!("sai mật khẩu số {i}");
                    let name = match distinct {
                        true => format!("{name}-{i}"),
                        false => name.to_owned(),
                    };
                    let response = http
                        .post(url)
                        .header("cookie", cookies)
                        .form(&[
                            ("csrf", csrf.as_str()),
                            ("name", name.as_str()),
                            ("password", password.as_str()),
                            ("next", "/office"),
                        ])
                        .send()
                        .await
                        .unwrap();
                    let retry = response.headers().get("retry-after").is_some();
                    (response.status().as_u16(), retry)
                })
            });
            let mut out = Vec::new();
            for a in attempts.collect::<Vec<_>>() {
                out.push(a.await.unwrap());
            }
            out
        }
    };

    // Thirty wrong guesses at once: five are checked, the rest find the account locked.
    let answers = burst(30, "hue", false).await;
    let checked = answers.iter().filter(|(s, _)| *s == 401).count();
    assert_eq!(checked, 5, "{answers:?}");
    assert!(
        answers.iter().all(|(s, _)| *s == 401 || *s == 429),
        "{answers:?}"
    );
    let listed = server.cli(&["user", "list"]);
    assert!(listed.contains("locked"), "{listed}");

    // An unknown name answers as an account does, attempt by attempt: five wrong, then
    // locked for fifteen minutes, in the same words.
    for attempt in 1..=7 {
        let known = sign_in_as(&server, "127.0.0.1", "phong", "sai mật khẩu").await;
        let unknown = sign_in_as(&server, "127.0.0.1", "không-có-ai", "sai mật khẩu").await;
        assert_eq!(known.0, if attempt <= 5 { 401 } else { 429 }, "{known:?}");
        assert_eq!(
            known.0, unknown.0,
            "attempt {attempt}: {known:?} / {unknown:?}"
        );
        // The same words; the time they name may fall on either side of a minute.
        let words = |m: &str| m.replace(|c: char| c.is_ascii_digit(), "");
        assert_eq!(words(&known.2), words(&unknown.2), "attempt {attempt}");
        assert_eq!(known.1.is_some(), unknown.1.is_some());
        if let (Some(a), Some(b)) = (known.1, unknown.1) {
            assert!(a.abs_diff(b) <= 2 && a > 800, "{a} / {b}");
        }
    }

    // Two hundred sign-ins with unknown names at once: memory stays bounded, those beyond the
    // queue are told to come back later.
    let before = resident_kib(server.pid());
    println!(
        "resident memory after 44 sign-ins: {idle} KiB → {before} KiB (+{} MiB)",
        before.saturating_sub(idle) / 1024
    );
    let answers = burst(200, "không-có-ai", true).await;
    let after = resident_kib(server.pid());
    let rise_mib = after.saturating_sub(idle) / 1024;
    println!(
        "resident memory under a 200 sign-in burst: {before} KiB → {after} KiB; \
         +{rise_mib} MiB since idle"
    );
    // One argon2id (19 MiB) per hashing thread, one thread per core, and a little for the
    // requests themselves.
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get()) as u64;
    let bound = cores * 19 + 40;
    assert!(
        rise_mib < bound,
        "memory rose by {rise_mib} MiB (bound {bound} MiB)"
    );
    let busy: Vec<_> = answers.iter().filter(|(s, _)| *s == 429).collect();
    assert!(busy.iter().all(|(_, retry)| *retry), "{answers:?}");
    assert!(
        answers.iter().all(|(s, _)| *s == 401 || *s == 429),
        "{answers:?}"
    );
}

/// Guesses are throttled per client: failed sign-ins, wrong enrolment codes (per client and
/// per code), read-token requests, each answered 429 with `Retry-After`; successes do not
/// count; `X-Forwarded-For` names the client only when the proxy is trusted.
pub async fn clients_are_rate_limited(db: Database) {
    let limits = [
        ("MAM__LIMITS__SIGN_IN_FAILURES_PER_MINUTE", "3"),
        ("MAM__LIMITS__ENROL_FAILURES_PER_MINUTE", "4"),
        ("MAM__LIMITS__ENROL_PER_CODE_PER_MINUTE", "2"),
        ("MAM__LIMITS__READ_PER_MINUTE", "5"),
    ];
    let mut env = limits.to_vec();
    env.push(("MAM__LIMITS__TRUSTED_PROXIES", "127.0.0.1"));
    let server = Server::start_with(&db, &env);
    add_user(&server, "hue", "district", "474");

    // Sign-in: three failures from one client, then 429 even with the right password; another
    // client is not held up.
    for i in 0..3 {
        let (status, ..) = sign_in_as(&server, "203.0.113.7", &format!("ai-{i}"), "sai").await;
        assert_eq!(status, 401);
    }
    let (status, retry, message) = sign_in_as(&server, "203.0.113.7", "hue", PASSWORD).await;
    assert_eq!(status, 429, "{message}");
    assert!(retry.is_some_and(|s| (1..=20).contains(&s)), "{retry:?}");
    assert!(message.contains("Thử lại sau"), "{message}");
    let (status, ..) = sign_in_as(&server, "203.0.113.8", "hue", PASSWORD).await;
    assert_eq!(status, 303, "another client signs in");
    // Successes give their turn back: many in a row from one client are never throttled.
    for _ in 0..5 {
        let (status, ..) = sign_in_as(&server, "203.0.113.9", "hue", PASSWORD).await;
        assert_eq!(status, 303);
    }
    // The province office sees the throttled attempt among the refused sign-ins.
    add_user(&server, "tinh", "province", "46");
    let page = signed_in_page(&server, "tinh", "/office/rejected").await;
    assert!(page.contains("quá nhiều lượt sai từ một địa chỉ"), "{page}");

    // Enrolment: four wrong codes from one client, then 429 with the JSON code.
    let http = reqwest::Client::new();
    let enrol = |client: &'static str, code: String| {
        let (http, url) = (http.clone(), format!("{}/v1/enroll", server.url));
        async move {
            let response = http
                .post(url)
                .header("x-forwarded-for", client)
                .json(&json!({ "code": code }))
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let retry = response.headers().get("retry-after").cloned();
            let body: Value = response.json().await.unwrap();
            (status, retry, body)
        }
    };
    for i in 0..4 {
        let (status, _, body) = enrol("198.51.100.1", format!("WRONG-{i}")).await;
        assert_eq!((status, body["code"].as_str()), (401, Some("invalid_code")));
    }
    let (status, retry, body) = enrol("198.51.100.1", "WRONG-5".into()).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (429, Some("rate_limited")),
        "{body}"
    );
    assert!(retry.is_some());
    // One code from many clients: two tries, then 429.
    let mut tried = Vec::new();
    for client in ["198.51.100.2", "198.51.100.3", "198.51.100.4"] {
        tried.push(enrol(client, "SAME-CODE".into()).await.0);
    }
    assert_eq!(tried, [401, 401, 429]);
    // Six phones enrolled from one network with good codes: none is held up.
    for i in 0..6 {
        let made: Value = serde_json::from_str(&server.cli(&[
            "device",
            "enroll",
            "--name",
            &format!("Máy {i}"),
            "--commune",
            HUE,
            "--json",
        ]))
        .unwrap();
        let code = made["code"].as_str().unwrap().to_owned();
        let (status, _, body) = enrol("198.51.100.9", code).await;
        assert_eq!(status, 200, "{body}");
    }

    // Read tokens: five requests a minute from one client, right token or wrong.
    let token = crate::indicators::token(&server, &["--district", "474"]);
    let read = |client: &'static str, token: String| {
        let (http, url) = (
            http.clone(),
            format!("{}/v1/indicators?period=2020&level=commune", server.url),
        );
        async move {
            let response = http
                .get(url)
                .bearer_auth(token)
                .header("x-forwarded-for", client)
                .send()
                .await
                .unwrap();
            response.status().as_u16()
        }
    };
    assert_eq!(read("192.0.2.1", "wrong".into()).await, 401);
    for _ in 0..4 {
        assert_eq!(read("192.0.2.1", token.clone()).await, 200);
    }
    assert_eq!(read("192.0.2.1", token.clone()).await, 429);
    assert_eq!(read("192.0.2.2", token.clone()).await, 200);

    // Without a trusted proxy, `X-Forwarded-For` is the client's own claim: changing it does
    // not make a new client.
    drop(server);
    let server = Server::start_with(&db, &limits);
    for i in 0..3 {
        let claimed = format!("10.9.9.{i}");
        let (status, ..) = sign_in_as(&server, &claimed, &format!("ai-{i}"), "sai").await;
        assert_eq!(status, 401);
    }
    let (status, ..) = sign_in_as(&server, "10.9.9.200", "ai-x", "sai").await;
    assert_eq!(status, 429);
}

/// A refusal belongs to the phone that sent it: an A Lưới phone's edit naming a Huế commune
/// shows to A Lưới, not to Huế; one careless phone's thousand refusals hide nobody else's;
/// the counts are exact and the pages reach them all.
pub async fn refusals_belong_to_the_phone_that_sent_them(db: Database) {
    let server = Server::start(&db);
    add_user(&server, "hue", "district", "474");
    add_user(&server, "aluoi", "district", "481");
    add_user(&server, "tinh", "province", "46");
    let mut far = server.enroll("Lan A Lưới", &[A_LUOI]).await;
    far.create(HUE, &[("child_name", json!("Bé ngoài vùng"))]);
    far.sync().await;
    assert_eq!(
        far.client.rejected()[0].rejection.code,
        RejectCode::OutOfScope
    );

    // A Huế phone sends 1,100 edits of a form nobody published.
    let mut careless = server.enroll("Hoa Huế", &[HUE]).await;
    let nothing = FormId::parse("no-such-form").unwrap();
    for _ in 0..1100 {
        careless.client.create(
            RecordId::new_v7(),
            &nothing,
            1,
            &harness::commune(HUE),
            [("x", json!(1))],
        );
    }
    careless.sync().await;
    assert_eq!(careless.client.rejected().len(), 1100);

    let aluoi = signed_in_page(&server, "aluoi", "/office/rejected").await;
    assert!(
        aluoi.contains("Lan A Lưới") && aluoi.contains("out_of_scope"),
        "{aluoi}"
    );
    assert!(aluoi.contains("id=\"found\">1<"), "{aluoi}");
    assert!(!aluoi.contains("Hoa Huế"));
    let hue = signed_in_page(&server, "hue", "/office/rejected").await;
    assert!(!hue.contains("Lan A Lưới") && !hue.contains("Bé ngoài vùng"));
    assert!(hue.contains("id=\"found\">1100<"), "{hue}");
    assert!(hue.contains("1/11") && hue.contains("rel=\"next\""));
    let last = signed_in_page(&server, "hue", "/office/rejected?page=11").await;
    assert_eq!(last.matches("unknown_form").count(), 100);
    assert!(!last.contains("rel=\"next\"") && last.contains("rel=\"prev\""));
    let province = signed_in_page(&server, "tinh", "/office/rejected").await;
    assert!(province.contains("id=\"found\">1101<"), "{province}");
    // One phone's refusals, from the Phones page's count; another area's phone is not found.
    let phones = signed_in_page(&server, "hue", "/office/phones").await;
    let own = format!("/office/rejected?device={}", careless.device());
    assert!(phones.contains(&own), "{phones}");
    let one = signed_in_page(&server, "hue", &own).await;
    assert!(one.contains("id=\"found\">1100<"));
    let mut office = Office::new(&server);
    office.login("hue", PASSWORD).await;
    let (status, _) = office
        .get(&format!("/office/rejected?device={}", far.device()))
        .await;
    assert_eq!(status, 404);
    // The command line still lists them all.
    let listed = server.cli(&["rejected", "list", "--limit", "5000"]);
    assert_eq!(
        listed.lines().filter(|l| l.starts_with("device ")).count(),
        1101
    );
}

/// An area outside the reader's scope is not found, on the office pages and in the API.
pub async fn areas_outside_scope_are_not_found(db: Database) {
    let server = Server::start(&db);
    add_user(&server, "hue", "district", "474");
    let mut phone = server.enroll("Hoa", &[HUE]).await;
    let record = phone.create(HUE, &[("date_of_birth", json!("2020-03-01"))]);
    phone.sync().await;
    // When a record's values were written: its own commune's phones only.
    let elsewhere = server.enroll("Lụa", &[A_LUOI]).await;
    let http = reqwest::Client::new();
    let writes = |token: String| {
        http.get(format!("{}/v1/records/{record}/writes", server.url))
            .bearer_auth(token)
            .send()
    };
    let ours = writes(phone.token.clone()).await.unwrap();
    assert_eq!(ours.status(), 200);
    let body: Value = ours.json().await.unwrap();
    assert_eq!(
        body["writes"][0]["dot"],
        json!([phone.device(), 1]),
        "{body}"
    );
    assert!(body["writes"][0]["received_at"].as_i64().unwrap() > 1_700_000_000_000);
    let theirs = writes(elsewhere.token.clone()).await.unwrap();
    assert_eq!(theirs.status(), 404);
    let mut office = Office::new(&server);
    office.login("hue", PASSWORD).await;
    let behind = "/office/targets/birth-registered-on-time/records?period=2020-H1&area=";
    for (area, expected) in [
        ("474", 200),
        (HUE, 200),
        ("481", 404),
        (A_LUOI, 404),
        ("999", 404),
    ] {
        let (status, _) = office.get(&format!("{behind}{area}")).await;
        assert_eq!(status, expected, "area {area}");
    }
    let (status, _) = office
        .get(&format!("/office/records?commune={A_LUOI}"))
        .await;
    assert_eq!(status, 404);
    let (status, _) = office.get(&format!("/office/records?commune={HUE}")).await;
    assert_eq!(status, 200);
    let token = crate::indicators::token(&server, &["--district", "474"]);
    for (area, expected) in [(HUE, 200), ("474", 200), (A_LUOI, 404), ("481", 404)] {
        let response = http
            .get(format!(
                "{}/v1/indicators/birth-registered-on-time/records?area={area}&period=2020-H1",
                server.url
            ))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), expected, "area {area}");
        if expected == 404 {
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["code"], "not_found");
        }
    }
}

/// With `[server] metrics_listen`, `/metrics` answers there and not on the public port.
pub async fn metrics_stay_off_the_public_port(db: Database) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let at = format!("127.0.0.1:{port}");
    let server = Server::start_with(&db, &[("MAM__SERVER__METRICS_LISTEN", &at)]);
    let http = reqwest::Client::new();
    let public = http
        .get(format!("{}/metrics", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(public.status(), 404);
    let private = http
        .get(format!("http://{at}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(private.status(), 200);
    assert!(private.text().await.unwrap().contains("mam_"));
}

/// Seq 0 is refused under a code of its own, and the edits beside it are applied.
pub async fn seq_zero_has_its_own_code(db: Database) {
    let server = Server::start(&db);
    let mut phone = server.enroll("Hoa", &[HUE]).await;
    phone.create(HUE, &[("child_name", json!("Một"))]);
    let mut request: SyncRequest = phone.client.sync_request();
    let mut zero = request.push[0].clone();
    zero.seq = 0;
    zero.record = RecordId::new_v7().to_string();
    request.push.insert(0, zero);
    let response: SyncResponse = phone.send(&request).await.json().await.unwrap();
    assert_eq!(response.acked_through, 1, "the edit beside it is applied");
    assert_eq!(response.rejected.len(), 1, "{:?}", response.rejected);
    let refused = &response.rejected[0];
    assert_eq!((refused.seq, &refused.code), (0, &RejectCode::InvalidSeq));
    assert!(refused.message.contains("from 1"), "{}", refused.message);
    assert!(!refused.message.contains("already used"));
    assert!(server.cli(&["rejected", "list"]).contains("invalid_seq"));
}
