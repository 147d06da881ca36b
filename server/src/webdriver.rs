//! A small WebDriver client: Debian's chromedriver driving headless Chromium, spoken to over
//! HTTP with the W3C protocol (sessions, navigation, elements, screenshots, DevTools
//! commands). `mam bench phone` drives the phone app with it, and so do the browser tests.
//! A WebDriver error is a panic: this is a tool for benches and tests, not for serving.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    http: reqwest::Client,
    session: String,
    driver: Child,
    /// Chromium's profile directory: also how its processes are found if a test fails.
    profile: PathBuf,
    /// Where screenshots go.
    pub shots: PathBuf,
}

pub struct Element(String);

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

impl Browser {
    /// Headless Chromium at this window size with these extra flags, screenshots saved under
    /// `shots`; `None` when Chromium or chromedriver is not installed (outside CI; under CI a
    /// missing browser is a failure).
    pub async fn start_with(
        width: u32,
        height: u32,
        shots: PathBuf,
        flags: &[String],
    ) -> Option<Browser> {
        let driver_path = std::env::var_os("MAM_CHROMEDRIVER")
            .map(PathBuf::from)
            .or_else(|| which("chromedriver"));
        let chromium = std::env::var_os("MAM_CHROMIUM")
            .map(PathBuf::from)
            .or_else(|| which("chromium"));
        let (Some(driver_path), Some(chromium)) = (driver_path, chromium) else {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("chromium and chromedriver must be installed under CI (apt-get install chromium chromium-driver)");
            }
            eprintln!("chromium or chromedriver not found: skipping the browser test");
            return None;
        };
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new(driver_path)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        for _ in 0..300 {
            let ready = http
                .get(format!("{base}/status"))
                .send()
                .await
                .ok()
                .map(|r| r.status().is_success())
                .unwrap_or(false);
            if ready {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile =
            std::env::temp_dir().join(format!("mam-chromium-{}-{}", std::process::id(), port));
        let mut args: Vec<String> = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--lang=vi",
        ]
        .map(str::to_owned)
        .to_vec();
        args.push(format!("--window-size={width},{height}"));
        args.push(format!("--user-data-dir={}", profile.display()));
        args.extend(flags.iter().cloned());
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": chromium, "args": args }
        }}});
        let created: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .expect("create a WebDriver session")
            .json()
            .await
            .unwrap();
        let session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {created}"))
            .to_owned();
        std::fs::create_dir_all(&shots).unwrap();
        let browser = Browser {
            http,
            session: format!("{base}/session/{session}"),
            driver,
            profile,
            shots,
        };
        browser.resize(width, height).await;
        Some(browser)
    }

    async fn try_call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.session));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response: Value = request
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        match response["value"].get("error") {
            Some(error) => Err(format!(
                "WebDriver {method} {path}: {error} {}",
                response["value"]["message"]
            )),
            None => Ok(response["value"].clone()),
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        self.try_call(method, path, body)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Click the element `css` names, finding it again if the page redrew it meanwhile.
    pub async fn click_on(&self, css: &str) {
        self.on_fresh(css, reqwest::Method::POST, "click", Some(json!({})))
            .await;
    }

    /// `method` on `/element/{id}/{tail}` for the element `css` names, finding it again
    /// whenever the page redrew it before the call reached it.
    async fn on_fresh(
        &self,
        css: &str,
        method: reqwest::Method,
        tail: &str,
        body: Option<Value>,
    ) -> Value {
        for _ in 0..20 {
            let e = self.find(css).await;
            let path = format!("/element/{}/{tail}", e.0);
            match self.try_call(method.clone(), &path, body.clone()).await {
                Ok(v) => return v,
                Err(m) if m.contains("stale") => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Err(m) => panic!("{m}"),
            }
        }
        panic!("{css:?} kept going stale");
    }

    pub async fn resize(&self, width: u32, height: u32) {
        self.call(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({ "width": width, "height": height })),
        )
        .await;
    }

    pub async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    pub async fn url(&self) -> String {
        self.call(reqwest::Method::GET, "/url", None)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub async fn find_all(&self, css: &str) -> Vec<Element> {
        let found = self
            .call(
                reqwest::Method::POST,
                "/elements",
                Some(json!({ "using": "css selector", "value": css })),
            )
            .await;
        found
            .as_array()
            .unwrap()
            .iter()
            .map(|e| Element(e[ELEMENT].as_str().unwrap().to_owned()))
            .collect()
    }

    /// The first element matching `css`, waiting up to thirty seconds for a page to arrive.
    pub async fn find(&self, css: &str) -> Element {
        for _ in 0..300 {
            if let Some(e) = self.find_all(css).await.into_iter().next() {
                return e;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let url = self.url().await;
        let source = self.call(reqwest::Method::GET, "/source", None).await;
        panic!(
            "no element {css:?} on {url}:\n{}",
            source.as_str().unwrap_or("")
        );
    }

    pub async fn text(&self, e: &Element) -> String {
        self.call(
            reqwest::Method::GET,
            &format!("/element/{}/text", e.0),
            None,
        )
        .await
        .as_str()
        .unwrap_or("")
        .to_owned()
    }

    /// An attribute of the element `css` names, finding it again if the page redrew it
    /// meanwhile.
    pub async fn attribute_of(&self, css: &str, name: &str) -> Option<String> {
        let tail = format!("attribute/{name}");
        self.on_fresh(css, reqwest::Method::GET, &tail, None)
            .await
            .as_str()
            .map(str::to_owned)
    }

    pub async fn attribute(&self, e: &Element, name: &str) -> Option<String> {
        self.call(
            reqwest::Method::GET,
            &format!("/element/{}/attribute/{name}", e.0),
            None,
        )
        .await
        .as_str()
        .map(str::to_owned)
    }

    pub async fn click(&self, e: &Element) {
        self.call(
            reqwest::Method::POST,
            &format!("/element/{}/click", e.0),
            Some(json!({})),
        )
        .await;
    }

    pub async fn type_into(&self, e: &Element, text: &str) {
        self.call(
            reqwest::Method::POST,
            &format!("/element/{}/value", e.0),
            Some(json!({ "text": text })),
        )
        .await;
    }

    /// Run a script in the page (a function body; `args` arrive as `arguments`): what it
    /// returns.
    pub async fn execute(&self, script: &str, args: Vec<Value>) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
        .await
    }

    /// Run an async script in the page: `args` arrive as `arguments`, and the script calls
    /// the last argument with its result.
    pub async fn execute_async(&self, script: &str, args: Vec<Value>) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/async",
            Some(json!({ "script": script, "args": args })),
        )
        .await
    }

    /// Emulate a phone with no network at all (or give it back).
    pub async fn set_offline(&self, offline: bool) {
        self.call(
            reqwest::Method::POST,
            "/chromium/network_conditions",
            Some(json!({ "network_conditions": {
                "offline": offline, "latency": 0,
                "download_throughput": -1, "upload_throughput": -1,
            }})),
        )
        .await;
    }

    /// Emulate a slow network: `latency_ms` each way, throughputs in bytes per second.
    pub async fn set_network(&self, latency_ms: u32, down: u32, up: u32) {
        self.call(
            reqwest::Method::POST,
            "/chromium/network_conditions",
            Some(json!({ "network_conditions": {
                "offline": false, "latency": latency_ms,
                "download_throughput": down, "upload_throughput": up,
            }})),
        )
        .await;
    }

    /// A Chrome DevTools Protocol command.
    pub async fn cdp(&self, cmd: &str, params: Value) -> Value {
        self.call(
            reqwest::Method::POST,
            "/goog/cdp/execute",
            Some(json!({ "cmd": cmd, "params": params })),
        )
        .await
    }

    /// The phone is at this place, read with this accuracy (metres), and the page may ask.
    pub async fn set_position(&self, origin: &str, lat: f64, lon: f64, accuracy: f64) {
        self.cdp(
            "Browser.grantPermissions",
            json!({ "origin": origin, "permissions": ["geolocation"] }),
        )
        .await;
        self.cdp(
            "Emulation.setGeolocationOverride",
            json!({ "latitude": lat, "longitude": lon, "accuracy": accuracy }),
        )
        .await;
    }

    /// Open a new tab of the same browser (same profile, same origin's storage) and go there.
    /// Returns its handle.
    pub async fn new_tab(&self) -> String {
        let opened = self
            .call(
                reqwest::Method::POST,
                "/window/new",
                Some(json!({ "type": "tab" })),
            )
            .await;
        let handle = opened["handle"].as_str().unwrap().to_owned();
        self.switch_to(&handle).await;
        handle
    }

    /// The handle of the tab commands go to.
    pub async fn tab(&self) -> String {
        self.call(reqwest::Method::GET, "/window", None)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Send the next commands to the tab `handle`.
    pub async fn switch_to(&self, handle: &str) {
        self.call(
            reqwest::Method::POST,
            "/window",
            Some(json!({ "handle": handle })),
        )
        .await;
    }

    pub async fn reload(&self) {
        self.call(reqwest::Method::POST, "/refresh", Some(json!({})))
            .await;
    }

    /// The visible texts of every element `css` matches, read in one step (no element
    /// references to go stale while the page redraws).
    pub async fn texts(&self, css: &str) -> Vec<String> {
        let found = self
            .call(
                reqwest::Method::POST,
                "/execute/sync",
                Some(json!({
                    "script": "return Array.from(document.querySelectorAll(arguments[0])).map(e => e.innerText);",
                    "args": [css],
                })),
            )
            .await;
        found
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|t| t.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Wait until `css` matches an element whose text contains `text`.
    pub async fn wait_text(&self, css: &str, text: &str) -> String {
        let mut last = String::new();
        for _ in 0..300 {
            for t in self.texts(css).await {
                if t.contains(text) {
                    return t;
                }
                last = t;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.screenshot("failed-wait").await;
        panic!(
            "{css:?} never showed {text:?} (last: {last:?}) on {}:\n{}",
            self.url().await,
            self.texts("body").await.join("")
        );
    }

    pub async fn body_text(&self) -> String {
        let body = self.find("body").await;
        self.text(&body).await
    }

    /// Save a PNG of the window as `<shots>/<name>.png`.
    pub async fn screenshot(&self, name: &str) {
        let data = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let png = decode_base64(data.as_str().unwrap());
        assert!(png.starts_with(b"\x89PNG"), "the screenshot is a PNG");
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        eprintln!("screenshot: {}", path.display());
    }
}

impl Browser {
    /// End the session (Chromium exits) and stop the driver.
    pub async fn quit(self) {
        let _ = self
            .http
            .delete(&self.session)
            .timeout(Duration::from_secs(30))
            .send()
            .await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        // A test that failed never ended its session: its Chromium outlives the driver.
        let _ = Command::new("pkill")
            .arg("-f")
            .arg(self.profile.as_os_str())
            .status();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

fn decode_base64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let clean: Vec<u8> = text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
        .collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= (value(c) as u32) << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}
