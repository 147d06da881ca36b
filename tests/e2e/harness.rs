//! Shared helpers: real `mam` processes on port 0, a fresh database per test (a SQLite
//! directory or a PostgreSQL database), and simulated phones driven by the `sync-protocol`
//! client state machine over real HTTP.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use sqlx::Connection;
use sync_protocol::{
    Client, CommuneCode, EnrollResponse, FormId, Record, RecordId, SyncRequest, SyncResponse,
};

pub const COMMUNE: &str = "19753";
pub const OTHER_COMMUNE: &str = "19774";

/// A small seeded generator (splitmix64), so a failing case can be replayed (`MAM_SEED`).
pub struct Rng(pub u64);

impl Rng {
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % n
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The PostgreSQL URL tests run against. Missing: the PostgreSQL half is skipped, except under
/// CI, where it is a failure.
pub fn postgres_url() -> Option<String> {
    match std::env::var("MAM_TEST_DATABASE_URL") {
        Ok(url) => Some(url),
        Err(_) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("MAM_TEST_DATABASE_URL must be set under CI: the PostgreSQL tests may not be skipped")
        }
        Err(_) => {
            eprintln!("MAM_TEST_DATABASE_URL is not set: skipping the PostgreSQL run");
            None
        }
    }
}

/// A database of its own for one test.
pub struct Database {
    pub args: Vec<String>,
    dir: Option<PathBuf>,
    /// (server URL, database name) of a PostgreSQL database to drop afterwards.
    postgres: Option<(String, String)>,
}

impl Database {
    pub async fn fresh(backend: Backend) -> Option<Database> {
        match backend {
            Backend::Sqlite => {
                let dir = std::env::temp_dir().join(unique("mam_e2e"));
                Some(Database {
                    args: vec!["--data-dir".into(), dir.display().to_string()],
                    dir: Some(dir),
                    postgres: None,
                })
            }
            Backend::Postgres => {
                let base = postgres_url()?;
                let name = unique("mam_e2e");
                let mut conn = sqlx::PgConnection::connect(&base)
                    .await
                    .expect("connect to PostgreSQL");
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut conn)
                    .await
                    .expect("create database");
                let url = match base.rfind('/') {
                    Some(i) if base[..i].contains("//") && i > base.find("//").unwrap() + 1 => {
                        format!("{}/{name}", &base[..i])
                    }
                    _ => format!("{base}/{name}"),
                };
                // Attachments live in a folder of its own, as the processes of a PostgreSQL
                // deployment share one.
                let dir = std::env::temp_dir().join(unique("mam_e2e_files"));
                Some(Database {
                    args: vec![
                        "--database-url".into(),
                        url,
                        "--data-dir".into(),
                        dir.display().to_string(),
                    ],
                    dir: Some(dir),
                    postgres: Some((base, name)),
                })
            }
        }
    }
}

impl Database {
    pub fn backend(&self) -> Backend {
        match self.postgres {
            Some(_) => Backend::Postgres,
            None => Backend::Sqlite,
        }
    }

    /// The PostgreSQL URL of this database.
    pub fn url(&self) -> Option<&str> {
        self.postgres.as_ref().map(|_| self.args[1].as_str())
    }

    /// A file of its own beside the database, for backups.
    pub fn scratch(&self, name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(unique("mam_e2e_files"));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    /// Drop and create the PostgreSQL database again, empty (no server may be using it).
    pub async fn recreate_postgres(&self) {
        let (base, name) = self.postgres.as_ref().expect("a PostgreSQL database");
        let mut conn = sqlx::PgConnection::connect(base).await.unwrap();
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap();
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
        if let Some((base, name)) = self.postgres.take() {
            // Drop runs inside the test's runtime: use a thread with a runtime of its own.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    if let Ok(mut conn) = sqlx::PgConnection::connect(&base).await {
                        let _ =
                            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                                .execute(&mut conn)
                                .await;
                    }
                });
            })
            .join();
        }
    }
}

/// A running `mam serve`.
pub struct Server {
    child: Child,
    pub url: String,
    pub db: Vec<String>,
    env: Vec<(String, String)>,
    /// The working directory of the server and of `cli` commands.
    cwd: PathBuf,
    /// What the server wrote to stderr, when started with `start_in`.
    log: Option<Arc<Mutex<String>>>,
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn mam() -> Command {
    mam_in(&repo_root())
}

/// `mam` run in the directory `cwd`.
pub fn mam_in(cwd: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mam"));
    cmd.current_dir(cwd);
    cmd.env("RUST_LOG", "warn");
    cmd
}

impl Server {
    pub fn start(db: &Database) -> Server {
        Self::start_with(db, &[])
    }

    pub fn start_with(db: &Database, env: &[(&str, &str)]) -> Server {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Self::spawn(db.args.clone(), env, repo_root(), false, "127.0.0.1:0")
    }

    /// A server whose working directory (and that of its `cli` commands) is `cwd`, keeping
    /// what it writes to stderr for [`Server::log`].
    pub fn start_in(db: &Database, cwd: &Path, env: &[(&str, &str)]) -> Server {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Self::spawn(db.args.clone(), env, cwd.to_path_buf(), true, "127.0.0.1:0")
    }

    fn spawn(
        db: Vec<String>,
        env: Vec<(String, String)>,
        cwd: PathBuf,
        keep_log: bool,
        listen: &str,
    ) -> Server {
        let mut cmd = mam_in(&cwd);
        cmd.arg("serve").arg("--listen").arg(listen).args(&db);
        cmd.envs(env.iter().cloned());
        let stderr = if keep_log {
            Stdio::piped()
        } else {
            Stdio::inherit()
        };
        cmd.stdout(Stdio::piped()).stderr(stderr);
        let mut child = cmd.spawn().expect("start mam serve");
        let log = child.stderr.take().map(|stderr| {
            let log = Arc::new(Mutex::new(String::new()));
            let kept = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    eprintln!("{line}");
                    let mut kept = kept.lock().unwrap();
                    kept.push_str(&line);
                    kept.push('\n');
                }
            });
            log
        });
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let url = loop {
            let line = lines
                .next()
                .expect("mam serve exited before listening")
                .expect("read mam output");
            if let Some(rest) = line.split("listening on ").nth(1) {
                break rest.split_whitespace().next().unwrap().to_string();
            }
        };
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Server {
            child,
            url,
            db,
            env,
            cwd,
            log,
        }
    }

    /// What the server has written to stderr so far (started with `start_in`).
    pub fn log(&self) -> String {
        let log = self.log.as_ref().expect("a server started with start_in");
        log.lock().unwrap().clone()
    }

    /// SIGKILL: no drain, no cleanup, as a power cut or the OOM killer would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A new process on the same database (and a new port).
    pub fn restart(&mut self) {
        self.kill();
        self.start_again("127.0.0.1:0");
    }

    /// After [`Server::kill`], a new process on the same database and the same port: the
    /// same origin for a browser, whose storage belongs to it.
    pub fn start_again_on_the_same_port(&mut self) {
        let address = self.url.trim_start_matches("http://").to_owned();
        self.start_again(&address);
    }

    fn start_again(&mut self, listen: &str) {
        let next = Self::spawn(
            self.db.clone(),
            self.env.clone(),
            self.cwd.clone(),
            self.log.is_some(),
            listen,
        );
        *self = next;
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn wait(&mut self) -> std::process::ExitStatus {
        self.child.wait().unwrap()
    }

    /// Run a `mam` command against this server's database and return its stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = mam_in(&self.cwd)
            .args(args)
            .args(&self.db)
            .output()
            .expect("run mam");
        assert!(
            out.status.success(),
            "mam {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub async fn enroll(&self, name: &str, communes: &[&str]) -> Phone {
        let mut args = vec!["device", "enroll", "--name", name, "--json"];
        for c in communes {
            args.push("--commune");
            args.push(c);
        }
        let out: Value = serde_json::from_str(&self.cli(&args)).unwrap();
        let http = reqwest::Client::new();
        let response = http
            .post(format!("{}/v1/enroll", self.url))
            .json(&json!({ "code": out["code"] }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let enrolled: EnrollResponse = response.json().await.unwrap();
        Phone {
            client: Client::new(enrolled.device),
            token: enrolled.token,
            http,
            url: self.url.clone(),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A simulated phone: the protocol's client state machine, talking real HTTP.
pub struct Phone {
    pub client: Client,
    pub token: String,
    pub http: reqwest::Client,
    pub url: String,
}

pub fn form() -> FormId {
    FormId::parse("birth-registration").unwrap()
}

pub fn commune(code: &str) -> CommuneCode {
    CommuneCode::parse(code).unwrap()
}

impl Phone {
    pub fn device(&self) -> u32 {
        self.client.device()
    }

    /// A new birth-registration record: the form's required fields filled with plausible
    /// values, then `values` on top.
    pub fn create(&mut self, commune_code: &str, values: &[(&str, Value)]) -> RecordId {
        let id = RecordId::new_v7();
        let mut all: Vec<(&str, Value)> = vec![
            ("sex", json!("f")),
            ("date_of_birth", json!("2020-01-15")),
            ("village", json!("Thôn 1")),
        ];
        for (k, v) in values {
            all.retain(|(name, _)| name != k);
            all.push((k, v.clone()));
        }
        self.client
            .create(id, &form(), 1, &commune(commune_code), all);
        id
    }

    pub fn edit(&mut self, id: RecordId, values: &[(&str, Value)]) -> u64 {
        self.client
            .edit(id, values.iter().map(|(k, v)| (*k, v.clone())))
            .expect("the phone holds the record")
    }

    /// The id of the record this phone holds for the child named `name`.
    pub fn named(&self, name: &str) -> RecordId {
        self.client
            .records()
            .into_iter()
            .find(|r| r.value("child_name").and_then(Value::as_str) == Some(name))
            .unwrap_or_else(|| panic!("the phone holds no record of {name}"))
            .id
    }

    pub fn view(&self, id: RecordId) -> Record {
        self.client.view(id).expect("the phone holds the record")
    }

    pub async fn send(&self, request: &SyncRequest) -> reqwest::Response {
        self.send_text(serde_json::to_string(request).unwrap())
            .await
    }

    /// A sync request as exactly this JSON text.
    pub async fn send_text(&self, body: String) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/sync", self.url))
            .bearer_auth(&self.token)
            .header("content-type", "application/json")
            .body(body)
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .unwrap()
    }

    /// Take a successor number (`POST /v1/successor`), as a phone does when its seqs were
    /// used by another history, and give it to the client.
    pub async fn take_successor(&mut self) -> EnrollResponse {
        let request = RecordId::new_v7().to_string();
        let response = self
            .http
            .post(format!("{}/v1/successor", self.url))
            .bearer_auth(&self.token)
            .json(&json!({"protocol": 1, "request": request}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            200,
            "successor refused: {}",
            response.text().await.unwrap()
        );
        let successor: EnrollResponse = response.json().await.unwrap();
        self.client.adopt_successor(successor.device);
        self.token = successor.token.clone();
        successor
    }

    /// One sync request and its response, applied (and a successor taken when the response
    /// shows that another history holds this device number).
    pub async fn sync_once(&mut self) -> SyncResponse {
        let request = self.client.sync_request();
        let response = self.send(&request).await;
        assert_eq!(
            response.status(),
            200,
            "sync failed: {}",
            response.text().await.unwrap()
        );
        let response: SyncResponse = response.json().await.unwrap();
        self.client.apply_response(&response);
        if self.client.successor_needed() {
            self.take_successor().await;
        }
        response
    }

    /// Sync until nothing is pending and nothing more to pull.
    pub async fn sync(&mut self) -> Vec<SyncResponse> {
        let mut all = Vec::new();
        for _ in 0..1000 {
            let response = self.sync_once().await;
            let done = !response.more && self.client.pending().is_empty();
            all.push(response);
            if done {
                return all;
            }
        }
        panic!("sync did not settle in 1000 rounds");
    }
}

/// A self-signed test certificate and its key (P-256) for the DNS name `name`, made by openssl.
pub fn test_certificate(cert: &Path, key: &Path, name: &str) {
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "2", "-subj", &format!("/CN={name}")])
        .args(["-addext", &format!("subjectAltName=DNS:{name}")])
        .arg("-keyout")
        .arg(key)
        .arg("-out")
        .arg(cert)
        .output()
        .expect("openssl makes a test certificate");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
}
