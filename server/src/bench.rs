//! `mam bench ingest`: how close the sync path comes to the database's own write limit.
//!
//! (a) writes the records as raw batched upserts, straight into the store: the ceiling.
//! (b) pushes the same kind of records through `POST /v1/sync` over loopback from N concurrent
//! simulated phones (the `sync-protocol` client state machine), each in its own commune, each
//! pulling its records back as a real phone does. It prints records/s for both, their ratio,
//! the CPU time the process spent per record in each, and the p50 and p99 latency of a sync
//! request.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{json, Value};
use sync_protocol::{Client, CommuneCode, EnrollResponse, Form, Record, RecordId, SyncResponse};
use tokio::net::TcpListener;

use crate::app;
use crate::config::Settings;
use crate::forms::FormRegistry;
use crate::state::AppState;
use crate::store::{self, record_row};
use crate::units::Units;
use crate::{auth, now_ms};

mod phone;
pub use phone::{phone, Network};

const FORM: &str = "bench-survey";
const FIELDS: usize = 20;

/// A 20-field form of the usual mix of types.
fn bench_form() -> Form {
    let kinds = ["text", "integer", "decimal", "date", "boolean"];
    let fields: Vec<Value> = (0..FIELDS)
        .map(|i| json!({"name": format!("field_{i:02}"), "type": kinds[i % kinds.len()]}))
        .collect();
    serde_json::from_value(json!({"id": FORM, "version": 1, "fields": fields})).expect("valid form")
}

fn values(n: usize) -> Vec<(String, Value)> {
    (0..FIELDS)
        .map(|i| {
            let v = match i % 5 {
                0 => json!(format!("Nguyễn Thị Lan {n} — thôn {i}")),
                1 => json!(n * 7 + i),
                2 => json!(12.5 + i as f64),
                3 => json!(format!("2020-{:02}-{:02}", 1 + n % 12, 1 + i)),
                _ => json!(n.is_multiple_of(2)),
            };
            (format!("field_{i:02}"), v)
        })
        .collect()
}

/// What a simulated phone reads of a response: records are read for their ids, not built.
#[derive(serde::Deserialize)]
struct Reply {
    acked_through: u64,
    rejected: Vec<sync_protocol::Rejection>,
    cursor: u64,
    more: bool,
    records: Vec<PulledId>,
}

/// A pulled record's id, the rest of it skipped.
#[derive(serde::Deserialize)]
struct PulledId {
    id: String,
}

/// One half of a round: how fast, and at what CPU cost.
struct Half {
    rate: f64,
    secs: f64,
    cpu_per_record: Option<f64>,
}

impl Half {
    fn measured(records: usize, started: Instant, cpu_before: Option<f64>) -> Self {
        let secs = started.elapsed().as_secs_f64();
        let cpu = crate::metrics::cpu_seconds()
            .zip(cpu_before)
            .map(|(after, before)| (after - before) * 1e6 / records as f64);
        Half {
            rate: records as f64 / secs,
            secs,
            cpu_per_record: cpu,
        }
    }
}

/// Bench phone `p` of `commune`, enrolled over the server's own `/v1/enroll` with a code made
/// in the store (not one process per phone).
async fn enrol_bench_phone(
    store: &store::DynStore,
    http: &reqwest::Client,
    addr: std::net::SocketAddr,
    p: usize,
    commune: &CommuneCode,
) -> anyhow::Result<EnrollResponse> {
    let code = auth::new_code();
    store
        .add_device(
            &format!("bench phone {p}"),
            std::slice::from_ref(commune),
            &auth::code_hash(&code),
            now_ms() + 3_600_000,
            now_ms(),
        )
        .await?;
    Ok(http
        .post(format!("http://{addr}/v1/enroll"))
        .json(&json!({ "code": code }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}

/// A simulated phone of the bench: its token and its state machine, kept across rounds.
struct BenchPhone {
    token: String,
    client: Client,
    commune: CommuneCode,
}

pub async fn ingest(
    mut settings: Settings,
    phones: usize,
    records: usize,
    batch: usize,
    rounds: usize,
) -> anyhow::Result<()> {
    let scratch =
        std::env::temp_dir().join(format!("mam-bench-{}-{}", std::process::id(), now_ms()));
    if settings.database.url.is_none() {
        settings.storage.data_dir = scratch.clone();
    }
    settings.sync.max_push = settings.sync.max_push.max(batch);
    let (store, bench_store) = store::open_for_bench(&settings).await?;
    let backend = store.backend();
    println!("mam bench ingest: {backend}, {records} records of {FIELDS} fields, {phones} phones, batches of {batch}");

    let units = Units::load(&settings.forms.units())?;
    // The bench writes and then deletes records: never in a database that holds any.
    let every_commune: Vec<CommuneCode> = units
        .all_codes()
        .iter()
        .filter_map(|c| CommuneCode::parse(c).ok())
        .collect();
    if !store
        .pull(&every_commune, 0, 1024, 1)
        .await?
        .records
        .is_empty()
    {
        anyhow::bail!(
            "this database holds records; `mam bench ingest` needs an empty one (after its first half it deletes every record)"
        );
    }
    let today_units = units
        .version_on(&crate::today())
        .context("no admin units loaded")?;
    let communes: Vec<CommuneCode> = today_units
        .communes
        .keys()
        .cycle()
        .take(phones)
        .map(|c| CommuneCode::parse(c.as_str()).map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<_>>()?;
    let form = bench_form();

    // The server of (b), and its phones, enrolled once.
    let mut forms = FormRegistry::default();
    forms.add(form.clone())?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let state = AppState::new(store.clone(), forms, units, vec![], settings.clone());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app::serve(listener, state, async move {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::builder().no_gzip().build()?;
    let url = format!("http://{addr}/v1/sync");
    let mut bench_phones = Vec::new();
    for (p, commune) in communes.iter().enumerate() {
        let enrolled = enrol_bench_phone(&store, &http, addr, p, commune).await?;
        bench_phones.push(BenchPhone {
            token: enrolled.token,
            client: Client::new(enrolled.device).with_limits(records.div_ceil(phones).max(1), 0),
            commune: commune.clone(),
        });
    }

    // (a)'s records as rows, ready to write.
    let rows = || -> Vec<_> {
        (0..records)
            .map(|n| {
                let mut phone = Client::new(1);
                let id = RecordId::new_v7();
                let v = values(n);
                phone.create(
                    id,
                    &form.id,
                    1,
                    &communes[n % phones],
                    v.iter().map(|(k, v)| (k.as_str(), v.clone())),
                );
                let record: Record = phone.view(id).expect("created");
                record_row(&record, n as u64 + 1, false)
            })
            .collect()
    };
    // Untimed: the records written once and deleted, so that every timed half writes into
    // room the half before it freed. Otherwise the first (a) alone would pay for growing the
    // database, and (b) would find the room (a) made.
    for chunk in rows().chunks(batch) {
        bench_store.bench_upsert(chunk).await?;
    }
    bench_store.bench_clear().await?;

    let mut ratios = Vec::new();
    let mut all_latencies = Vec::new();
    let mut all_enrolments = Vec::new();
    for round in 1..=rounds {
        if rounds > 1 {
            println!("round {round} of {rounds}:");
        }
        // (a) The ceiling: whole records upserted in batches, no sync logic.
        let rows = rows();
        // Each half starts with nothing deferred and ends when its writes are settled.
        bench_store.bench_settle().await?;
        let started = Instant::now();
        let cpu_before = crate::metrics::cpu_seconds();
        for chunk in rows.chunks(batch) {
            bench_store.bench_upsert(chunk).await?;
        }
        bench_store.bench_settle().await?;
        let raw = Half::measured(records, started, cpu_before);
        drop(rows);
        // (b) starts from the same empty store, and its phones do not pull the records of (a).
        bench_store.bench_clear().await?;

        // (b) The same volume through /v1/sync over loopback. The phones are other machines in
        // real life: their work (making edits, encoding JSON, reading responses) is done before
        // the clock starts or kept to a minimum, so the figure is the server's. Each push is
        // made by the client state machine and encoded up front.
        let per_phone = records.div_ceil(phones);
        let mut prepared = Vec::new();
        for (p, phone) in bench_phones.iter_mut().enumerate() {
            let count = per_phone.min(records.saturating_sub(p * per_phone));
            for n in 0..count {
                let v = values(p * per_phone + n);
                phone.client.create(
                    RecordId::new_v7(),
                    &form.id,
                    1,
                    &phone.commune,
                    v.iter().map(|(k, v)| (k.as_str(), v.clone())),
                );
            }
            let pushes: Vec<String> = phone
                .client
                .sync_request()
                .push
                .chunks(batch)
                .map(|chunk| serde_json::to_string(chunk).expect("edits encode"))
                .collect();
            prepared.push((phone.token.clone(), phone.client.cursor(), pushes));
        }
        bench_store.bench_settle().await?;
        let started = Instant::now();
        let cpu_before = crate::metrics::cpu_seconds();
        let mut tasks = Vec::new();
        for (token, cursor, pushes) in prepared {
            tasks.push(tokio::spawn(sync_phone(
                http.clone(),
                url.clone(),
                token,
                cursor,
                pushes,
            )));
        }
        // Meanwhile a phone is enrolled every 50 ms: a write that is not a push, which the
        // pushes' group commits must not keep waiting.
        let streaming = Arc::new(AtomicBool::new(true));
        let enroller = tokio::spawn(enrol_during(
            store.clone(),
            http.clone(),
            addr,
            communes[0].clone(),
            streaming.clone(),
        ));
        let mut done = Vec::with_capacity(tasks.len());
        for task in tasks {
            done.push(task.await.context("phone task panicked")??);
        }
        streaming.store(false, Ordering::Relaxed);
        let mut enrolments = enroller.await.context("enrolling task panicked")??;
        enrolments.sort();
        bench_store.bench_settle().await?;
        let sync = Half::measured(records, started, cpu_before);
        bench_store.bench_clear().await?;

        // Untimed, as the phones' own bookkeeping: their edits are consumed, and the next
        // round pushes only their new ones.
        let mut latencies: Vec<Duration> = Vec::new();
        let mut pulled = 0;
        for ((times, records, cursor, acked), phone) in done.into_iter().zip(&mut bench_phones) {
            latencies.extend(times);
            pulled += records;
            phone.client.apply_response(&SyncResponse {
                protocol: sync_protocol::PROTOCOL_VERSION,
                acked_through: acked,
                rejected: vec![],
                records: vec![],
                evicted: vec![],
                cursor,
                more: false,
                forms: Default::default(),
                epoch: None,
                next_seq: None,
                reset: false,
            });
        }

        latencies.sort();
        println!(
            "(a) raw batched upserts: {:>9.0} records/s ({:.2} s)",
            raw.rate, raw.secs
        );
        println!(
            "(b) through /v1/sync:    {:>9.0} records/s ({:.2} s, {} requests, {pulled} records pulled back)",
            sync.rate,
            sync.secs,
            latencies.len()
        );
        println!("ratio (b)/(a): {:.0} %", 100.0 * sync.rate / raw.rate);
        if let (Some(raw), Some(sync)) = (raw.cpu_per_record, sync.cpu_per_record) {
            println!(
                "CPU per record (every thread of this process, phones included): (a) {raw:.1} µs, (b) {sync:.1} µs"
            );
        }
        println!(
            "sync latency: p50 {:.1} ms, p99 {:.1} ms",
            percentile_ms(&latencies, 0.5),
            percentile_ms(&latencies, 0.99)
        );
        println!(
            "enrolments during (b): {}, p50 {:.1} ms, p99 {:.1} ms",
            enrolments.len(),
            percentile_ms(&enrolments, 0.5),
            percentile_ms(&enrolments, 0.99)
        );
        ratios.push(sync.rate / raw.rate);
        all_latencies.extend(latencies);
        all_enrolments.extend(enrolments);
    }
    if rounds > 1 {
        ratios.sort_by(f64::total_cmp);
        all_latencies.sort();
        println!(
            "over {rounds} rounds: ratio (b)/(a) median {:.0} % (lowest {:.0} %, highest {:.0} %); sync latency p50 {:.1} ms, p99 {:.1} ms",
            100.0 * ratios[ratios.len() / 2],
            100.0 * ratios[0],
            100.0 * ratios[ratios.len() - 1],
            percentile_ms(&all_latencies, 0.5),
            percentile_ms(&all_latencies, 0.99)
        );
        all_enrolments.sort();
        println!(
            "over {rounds} rounds: enrolments during (b) p50 {:.1} ms, p99 {:.1} ms",
            percentile_ms(&all_enrolments, 0.5),
            percentile_ms(&all_enrolments, 0.99)
        );
    }
    let _ = stop.send(());
    let _ = server.await;
    drop(store);
    if scratch.exists() {
        let _ = std::fs::remove_dir_all(&scratch);
    }
    Ok(())
}

/// One simulated phone's syncs: its pushes in turn, then pulls until nothing is left. Returns
/// the latency of each request, the records pulled, the last cursor and the seq acknowledged.
async fn sync_phone(
    http: reqwest::Client,
    url: String,
    token: String,
    mut cursor: u64,
    pushes: Vec<String>,
) -> anyhow::Result<(Vec<Duration>, usize, u64, u64)> {
    let mut latencies = Vec::new();
    // Records, not answers: PostgreSQL sends what is committed above its cursor again later.
    let mut pulled = std::collections::HashSet::new();
    let mut pushes = pushes.into_iter();
    loop {
        let push = pushes.next();
        let body = format!(
            "{{\"protocol\":1,\"cursor\":{cursor},\"max_bytes\":1048576,\"push\":{}}}",
            push.as_deref().unwrap_or("[]")
        );
        let t = Instant::now();
        let response = http
            .post(&url)
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?;
        latencies.push(t.elapsed());
        let reply: Reply = serde_json::from_slice(&response)?;
        if !reply.rejected.is_empty() {
            anyhow::bail!("bench edits were refused: {:?}", reply.rejected[0]);
        }
        cursor = reply.cursor;
        pulled.extend(reply.records.into_iter().map(|r| r.id));
        if push.is_none() && !reply.more {
            return Ok((latencies, pulled.len(), cursor, reply.acked_through));
        }
    }
}

/// The `p` quantile of sorted durations, in milliseconds.
/// Enrol a phone every 50 ms while `streaming` holds (creating its device and exchanging the
/// code, as an officer and a collaborator would), and return how long each took.
async fn enrol_during(
    store: crate::store::DynStore,
    http: reqwest::Client,
    addr: std::net::SocketAddr,
    commune: CommuneCode,
    streaming: Arc<AtomicBool>,
) -> anyhow::Result<Vec<Duration>> {
    let mut times = Vec::new();
    while streaming.load(Ordering::Relaxed) {
        let started = Instant::now();
        let code = auth::new_code();
        store
            .add_device(
                "bench enrolment",
                std::slice::from_ref(&commune),
                &auth::code_hash(&code),
                now_ms() + 3_600_000,
                now_ms(),
            )
            .await?;
        http.post(format!("http://{addr}/v1/enroll"))
            .json(&json!({ "code": code }))
            .send()
            .await?
            .error_for_status()?;
        times.push(started.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(times)
}

fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1000.0
}

/// `mam bench indicators`: with `records` birth records loaded, the time of a full rebuild of
/// the indicator tables, and what keeping them current adds to an edit: single-edit pushes
/// alternate with and without indicator maintenance, and the p50 and p99 of each are compared.
pub async fn indicators(
    mut settings: Settings,
    records: usize,
    edits: usize,
) -> anyhow::Result<()> {
    let scratch =
        std::env::temp_dir().join(format!("mam-bench-ind-{}-{}", std::process::id(), now_ms()));
    if settings.database.url.is_none() {
        settings.storage.data_dir = scratch.clone();
    }
    let (store, bench_store) = store::open_for_bench(&settings).await?;
    crate::forms::publish_all(store.as_ref(), &settings.forms.forms(), now_ms()).await?;
    let forms = FormRegistry::from_store(store.as_ref()).await?;
    let units = Units::load(&settings.forms.units())?;
    let defs = crate::indicators::load(&settings.forms.indicators())?;
    let form_id = sync_protocol::FormId::parse("birth-registration").map_err(anyhow::Error::msg)?;
    let form = forms
        .get(&form_id, 1)
        .context("birth-registration v1 is not published")?;
    let communes: Vec<CommuneCode> = units
        .version_on("2020-06-01")
        .context("no 2020 admin units")?
        .communes
        .keys()
        .map(|c| CommuneCode::parse(c.as_str()).map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<_>>()?;
    println!(
        "mam bench indicators: {}, {records} birth records, {edits} edits",
        store.backend()
    );

    // Load the records directly, in batches.
    let started = Instant::now();
    let mut ids = Vec::with_capacity(records);
    let mut n = 0;
    while n < records {
        let mut rows = Vec::new();
        for _ in 0..10_000.min(records - n) {
            let id = RecordId::new_v7();
            let day = sync_protocol::expr::day_number("2020-01-01").unwrap_or(0) + (n % 366) as i64;
            let values = [
                ("child_name", json!(format!("Bé {n}"))),
                ("sex", json!(if n % 2 == 0 { "f" } else { "m" })),
                (
                    "date_of_birth",
                    json!(sync_protocol::expr::date_of_day(day)),
                ),
                ("village", json!("Thôn 1")),
                ("bhyt_card_issued", json!(n % 3 != 0)),
            ];
            let edit = sync_protocol::CheckedEdit {
                seq: n as u64 + 1,
                record: id,
                form: form_id.clone(),
                version: 1,
                commune: communes[n % communes.len()].clone(),
                fields: first_values(values),
            };
            let mut record = Record::from_edit(&edit);
            record.apply(1, edit, &|_| false);
            record.derived = form.derive(&record);
            rows.push(record_row(&record, n as u64 + 1, false));
            ids.push(id);
            n += 1;
        }
        bench_store.bench_upsert(&rows).await?;
    }
    println!(
        "loaded {records} records in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // The rebuild `mam serve` runs after a change of the rules, and `mam indicators rebuild`.
    println!(
        "before the rebuild: {}",
        anon_memory().unwrap_or_else(|| "?".into())
    );
    let started = Instant::now();
    let rebuilt = crate::indicators::refresh(store.as_ref(), &forms, &defs, true)
        .await?
        .context("a forced rebuild rebuilds")?;
    let rebuild_secs = started.elapsed().as_secs_f64();
    println!(
        "full rebuild: {rebuild_secs:.1} s ({} cells); this process's memory then: {}",
        rebuilt.cells,
        anon_memory().unwrap_or_else(|| "?".into())
    );

    // One device, single-edit pushes that register a birth (and so move the on-time tables).
    let code = auth::new_code();
    store
        .add_device(
            "bench",
            &communes,
            &auth::code_hash(&code),
            now_ms() + 3_600_000,
            now_ms(),
        )
        .await?;
    let device = store
        .enroll(
            &auth::code_hash(&code),
            &auth::hash(&auth::new_token()),
            now_ms(),
        )
        .await?;
    let none: Vec<crate::indicators::Indicator> = Vec::new();
    let today = crate::today();
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for i in 0..edits {
        let id = ids[(i * 7919) % ids.len()];
        let record = store.record(id).await?.context("loaded record")?;
        let born = record
            .value("date_of_birth")
            .and_then(|v| v.as_str())
            .unwrap_or("2020-01-01")
            .to_owned();
        let registered = sync_protocol::expr::date_of_day(
            sync_protocol::expr::day_number(&born).unwrap_or(0) + (i % 90) as i64,
        );
        let edit = sync_protocol::Edit {
            seq: i as u64 + 1,
            record: id.to_string(),
            form: form_id.to_string(),
            version: 1,
            commune: record.commune.to_string(),
            fields: [
                (
                    "birth_registered".to_owned(),
                    sync_protocol::FieldEdit {
                        value: json!(true),
                        supersedes: record.dots("birth_registered"),
                    },
                ),
                (
                    "registration_date".to_owned(),
                    sync_protocol::FieldEdit {
                        value: json!(registered),
                        supersedes: record.dots("registration_date"),
                    },
                ),
            ]
            .into_iter()
            .collect(),
        };
        let keep = i % 2 == 0;
        let catalog = crate::sync::Catalog {
            forms: &forms,
            units: &units,
            indicators: if keep { &defs } else { &none },
        };
        let t = Instant::now();
        let prepared = crate::sync::prepare(vec![edit.into()], catalog, &device, &today);
        let outcome = crate::sync::push(
            store.as_ref(),
            catalog,
            &device,
            &prepared,
            now_ms(),
            &today,
        )
        .await?;
        let took = t.elapsed();
        if let Some(r) = outcome.rejected.first() {
            anyhow::bail!("bench edit refused: {r:?}");
        }
        if keep {
            with.push(took)
        } else {
            without.push(took)
        }
    }
    with.sort();
    without.sort();
    let (w50, w99) = (percentile_ms(&with, 0.5), percentile_ms(&with, 0.99));
    let (o50, o99) = (percentile_ms(&without, 0.5), percentile_ms(&without, 0.99));
    println!("edit with tables kept current:    p50 {w50:.2} ms, p99 {w99:.2} ms");
    println!("edit without indicator tables:    p50 {o50:.2} ms, p99 {o99:.2} ms");
    println!(
        "extra cost of the tables per edit: p50 {:.2} ms, p99 {:.2} ms",
        w50 - o50,
        w99 - o99
    );
    drop(store);
    if scratch.exists() {
        let _ = std::fs::remove_dir_all(&scratch);
    }
    Ok(())
}

/// `mam bench attachments`: photos of `size` bytes through `PUT /v1/uploads/{sha256}` in
/// chunks of `chunk`, from `phones` phones at once, over loopback to a server in this process
/// on a scratch SQLite directory.
pub async fn attachments(
    mut settings: Settings,
    photos: usize,
    size: usize,
    chunk: usize,
    phones: usize,
) -> anyhow::Result<()> {
    use sha2::Digest;
    let scratch =
        std::env::temp_dir().join(format!("mam-bench-att-{}-{}", std::process::id(), now_ms()));
    settings.database.url = None;
    settings.storage.data_dir = scratch.clone();
    settings.attachments.dir = None;
    settings.attachments.max_bytes = settings.attachments.max_bytes.max(size as u64);
    let (store, _) = store::open_for_bench(&settings).await?;
    let units = Units::load(&settings.forms.units())?;
    let commune = units
        .version_on(&crate::today())
        .and_then(|u| u.communes.keys().next().cloned())
        .context("no admin units loaded")?;
    let commune = CommuneCode::parse(commune.as_str()).map_err(anyhow::Error::msg)?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let state = AppState::new(
        store.clone(),
        FormRegistry::default(),
        units,
        vec![],
        settings.clone(),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app::serve(listener, state, async move {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::builder().no_gzip().build()?;
    let mut tokens = Vec::new();
    for p in 0..phones {
        tokens.push(
            enrol_bench_phone(&store, &http, addr, p, &commune)
                .await?
                .token,
        );
    }
    println!(
        "mam bench attachments: {photos} photos of {size} bytes, chunks of {chunk} bytes, {phones} phones, loopback, SQLite"
    );
    // Each phone its share of photos, each photo different (random bytes: nothing compresses).
    let mut seed = now_ms() as u64 | 1;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut work: Vec<Vec<Vec<u8>>> = vec![Vec::new(); phones];
    for i in 0..photos {
        let photo: Vec<u8> = (0..size).map(|_| next() as u8).collect();
        work[i % phones].push(photo);
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (token, photos) in tokens.into_iter().zip(work) {
        let http = http.clone();
        tasks.push(tokio::spawn(async move {
            // (latency of each chunk in µs, bytes on the wire)
            let mut latencies = Vec::new();
            let mut wire = 0u64;
            for photo in photos {
                let sha = auth::hex(&sha2::Sha256::digest(&photo));
                let url = format!("http://{addr}/v1/uploads/{sha}");
                let mut at = 0;
                while at < photo.len() {
                    let end = (at + chunk).min(photo.len());
                    let range = format!("bytes {at}-{}/{}", end - 1, photo.len());
                    let t = Instant::now();
                    let response = http
                        .put(&url)
                        .bearer_auth(&token)
                        .header("content-type", "image/jpeg")
                        .header("content-range", &range)
                        .body(photo[at..end].to_vec())
                        .send()
                        .await?;
                    // What the request and its answer carry in HTTP/1.1: the request line
                    // and headers as sent, the body, the status line, headers and body back.
                    let sent_head = format!(
                        "PUT /v1/uploads/{sha} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {token}\r\ncontent-type: image/jpeg\r\ncontent-range: {range}\r\ncontent-length: {}\r\naccept: */*\r\n\r\n",
                        end - at
                    );
                    let back_head: usize = 17
                        + response
                            .headers()
                            .iter()
                            .map(|(k, v)| k.as_str().len() + v.len() + 4)
                            .sum::<usize>()
                        + 2;
                    let status = response.status();
                    let body = response.bytes().await?;
                    anyhow::ensure!(status.is_success(), "chunk refused: {status} {body:?}");
                    latencies.push(t.elapsed().as_micros() as u64);
                    wire += (sent_head.len() + (end - at) + back_head + body.len()) as u64;
                    at = end;
                }
            }
            anyhow::Ok((latencies, wire))
        }));
    }
    let mut latencies = Vec::new();
    let mut wire = 0;
    for t in tasks {
        let (l, w) = t.await??;
        latencies.extend(l);
        wire += w;
    }
    let secs = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)] as f64 / 1000.0
    };
    let payload = (photos * size) as f64;
    println!(
        "{:.1} MB/s of photos ({photos} in {secs:.2} s), {} chunks: p50 {:.2} ms, p99 {:.2} ms per chunk",
        payload / secs / 1e6,
        latencies.len(),
        pct(0.50),
        pct(0.99),
    );
    println!(
        "bytes sent per photo: {:.0} for {size} ({:.2} % over the photo; {} requests each)",
        wire as f64 / photos as f64,
        (wire as f64 / payload - 1.0) * 100.0,
        size.div_ceil(chunk),
    );
    let _ = stop.send(());
    let _ = server.await;
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}

/// `mam bench openrosa`: submissions of a 20-field form through `POST /submission` over
/// loopback from ODK Collect phones (each a multipart request as Collect sends it, after one
/// `HEAD`), then the time to serve an entity list of `entities` children to one phone.
pub async fn openrosa(
    mut settings: Settings,
    submissions: usize,
    phones: usize,
    entities: usize,
) -> anyhow::Result<()> {
    let scratch =
        std::env::temp_dir().join(format!("mam-bench-odk-{}-{}", std::process::id(), now_ms()));
    if settings.database.url.is_none() {
        settings.storage.data_dir = scratch.clone();
    }
    settings.attachments.dir = Some(scratch.join("attachments"));
    let (store, bench_store) = store::open_for_bench(&settings).await?;
    crate::forms::publish_all(store.as_ref(), &settings.forms.forms(), now_ms()).await?;
    crate::forms::publish(store.as_ref(), bench_form(), now_ms()).await?;
    let forms = FormRegistry::from_store(store.as_ref()).await?;
    let units = Units::load(&settings.forms.units())?;
    let communes: Vec<CommuneCode> = units
        .version_on(&crate::today())
        .context("no admin units loaded")?
        .communes
        .keys()
        .map(|c| CommuneCode::parse(c.as_str()).map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<_>>()?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let state = AppState::new(store.clone(), forms, units, vec![], settings.clone());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app::serve(listener, state, async move {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::builder().no_gzip().build()?;
    let mut keys = Vec::new();
    for p in 0..phones {
        let commune = communes[p % communes.len()].clone();
        let (_, token) = crate::openrosa::enroll(
            store.as_ref(),
            &format!("ODK bench {p}"),
            std::slice::from_ref(&commune),
        )
        .await?;
        keys.push((format!("http://{addr}/key/{token}"), commune));
    }
    println!(
        "mam bench openrosa: {submissions} submissions of a {FIELDS}-field form from {phones} ODK Collect phones, loopback, {}",
        store.backend()
    );
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (p, (base, commune)) in keys.iter().cloned().enumerate() {
        let http = http.clone();
        let share = submissions / phones + usize::from(p < submissions % phones);
        tasks.push(tokio::spawn(async move {
            let head = http
                .head(format!("{base}/submission"))
                .header("X-OpenRosa-Version", "1.0")
                .send()
                .await?;
            anyhow::ensure!(head.status() == 204, "HEAD /submission: {}", head.status());
            let mut latencies = Vec::with_capacity(share);
            for n in 0..share {
                let mut xml = format!("<data id=\"{FORM}\" version=\"1\"><mam_commune>{commune}</mam_commune>");
                for (name, value) in values(p * 1_000_000 + n) {
                    let text = crate::openrosa::submission::text_of(&value);
                    xml.push_str(&format!("<{name}>{}</{name}>", crate::openrosa::xform::esc(&text)));
                }
                let instance = RecordId::new_v7();
                xml.push_str(&format!("<meta><instanceID>uuid:{instance}</instanceID></meta></data>"));
                let boundary = "----mam-bench-boundary";
                let body = format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"xml_submission_file\"; filename=\"submission.xml\"\r\nContent-Type: text/xml\r\n\r\n{xml}\r\n--{boundary}--\r\n"
                );
                let t = Instant::now();
                let response = http
                    .post(format!("{base}/submission"))
                    .header("X-OpenRosa-Version", "1.0")
                    .header("Content-Type", format!("multipart/form-data; boundary={boundary}"))
                    .body(body)
                    .send()
                    .await?;
                let status = response.status();
                let text = response.text().await?;
                anyhow::ensure!(status == 201, "submission refused: {status} {text}");
                latencies.push(t.elapsed().as_micros() as u64);
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await??);
    }
    let secs = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)] as f64 / 1000.0
    };
    println!(
        "{:.0} submissions/s ({submissions} in {secs:.2} s); latency p50 {:.1} ms, p99 {:.1} ms (ODK Central publishes about 41/s)",
        submissions as f64 / secs,
        pct(0.50),
        pct(0.99),
    );

    // The child register of one commune, as the entity list of a form that reads it.
    let child = sync_protocol::FormId::parse("child").map_err(anyhow::Error::msg)?;
    let commune = keys[0].1.clone();
    let started = Instant::now();
    let mut n = 0;
    while n < entities {
        let mut rows = Vec::new();
        for _ in 0..10_000.min(entities - n) {
            let id = RecordId::new_v7();
            let values = [
                ("child_name", json!(format!("Nguyễn Văn Bé {n}"))),
                ("sex", json!(if n % 2 == 0 { "f" } else { "m" })),
                ("date_of_birth", json!("2022-03-04")),
                ("village", json!(format!("Thôn {}", n % 12 + 1))),
                ("consent_guardian", json!(true)),
            ];
            let edit = sync_protocol::CheckedEdit {
                seq: n as u64 + 1,
                record: id,
                form: child.clone(),
                version: 2,
                commune: commune.clone(),
                fields: values
                    .into_iter()
                    .map(|(k, v)| {
                        (
                            k.to_owned(),
                            sync_protocol::FieldEdit {
                                value: v,
                                supersedes: vec![],
                            },
                        )
                    })
                    .collect(),
            };
            let mut record = Record::from_edit(&edit);
            record.apply(1, edit, &|_| false);
            rows.push(record_row(&record, n as u64 + 1, false));
            n += 1;
        }
        bench_store.bench_upsert(&rows).await?;
    }
    bench_store.bench_settle().await?;
    println!(
        "loaded {entities} children in one commune in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let list = format!("{}/forms/child-labour/attachments/child.csv", keys[0].0);
    for (i, what) in [
        "first download (every entity gets its version 1)",
        "second download",
    ]
    .iter()
    .enumerate()
    {
        let t = Instant::now();
        let response = http
            .get(&list)
            .header("X-OpenRosa-Version", "1.0")
            .send()
            .await?;
        anyhow::ensure!(
            response.status() == 200,
            "entity list: {}",
            response.status()
        );
        let body = response.bytes().await?;
        let rows = body
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            .saturating_sub(1);
        anyhow::ensure!(rows >= entities, "the list has {rows} rows, not {entities}");
        println!(
            "entity list of {rows} rows ({:.1} MB): {:.2} s, {what}",
            body.len() as f64 / 1e6,
            t.elapsed().as_secs_f64(),
        );
        let _ = i;
    }
    let t = Instant::now();
    let manifest = http
        .get(format!("{}/forms/child-labour/manifest", keys[0].0))
        .header("X-OpenRosa-Version", "1.0")
        .send()
        .await?;
    anyhow::ensure!(manifest.status() == 200, "manifest: {}", manifest.status());
    println!("manifest with its md5: {:.2} s", t.elapsed().as_secs_f64());
    let _ = stop.send(());
    let _ = server.await;
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}

/// One simulated phone of the fleet bench.
struct FleetPhone {
    token: String,
    client: Client,
    commune: CommuneCode,
}

/// An edit a fleet phone made to one field: its dot and the dots it superseded.
struct FieldNote {
    record: RecordId,
    field: String,
    dot: sync_protocol::Dot,
    supersedes: Vec<sync_protocol::Dot>,
}

#[derive(Default)]
struct FleetStats {
    latencies: Vec<u32>,
    errors: std::collections::BTreeMap<String, usize>,
    syncs: usize,
    edits: usize,
    notes: Vec<FieldNote>,
}

/// Each server's `/metrics` samples without labels, by name (empty where the metrics are
/// not served on the port the phones use).
async fn scrape_all(http: &reqwest::Client, urls: &[String]) -> Vec<HashMap<String, f64>> {
    let mut out = Vec::new();
    for url in urls {
        let text = match http.get(format!("{url}/metrics")).send().await {
            Ok(r) if r.status().is_success() => r.text().await.unwrap_or_default(),
            _ => String::new(),
        };
        out.push(
            text.lines()
                .filter(|l| !l.starts_with('#') && !l.contains('{'))
                .filter_map(|l| {
                    let (name, value) = l.split_once(' ')?;
                    Some((name.to_owned(), value.trim().parse().ok()?))
                })
                .collect(),
        );
    }
    out
}

/// How often the fleet's phones sync, and with what.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pace {
    /// 10–30 s between a phone's syncs, 1–20 edits each: a province at work.
    Field,
    /// No think time: as fast as the servers answer.
    Burst,
    /// A sync a minute with nothing to push: phones left on.
    Idle,
}

/// `mam bench fleet`: `phones` simulated phones (the sync-protocol client) over `communes`
/// communes, each syncing against a random one of `urls` every time, for `duration` seconds:
/// think time of 10–30 s between syncs (none with [`Pace::Burst`]; one a minute with nothing to
/// send with [`Pace::Idle`]), creating birth records and editing the records of their commune (so phones of a commune edit one field concurrently), a
/// request sent twice now and then. Phones are enrolled straight into the servers' database
/// (`settings`). It reports syncs/s, edits/s, latency, errors by status and the servers'
/// memory, then checks: nothing left unacknowledged, every acknowledged edit present or
/// superseded by an edit whose author saw it, every phone of a commune holding the same
/// records, and a phone that pulls from cursor 0 holding them too.
pub async fn fleet(
    settings: Settings,
    urls: Vec<String>,
    phones: usize,
    communes: usize,
    duration: u64,
    pace: Pace,
    seed: u64,
) -> anyhow::Result<()> {
    use tokio::sync::Mutex;
    let store = store::open(&settings).await?;
    let units = Units::load(&settings.forms.units())?;
    let all: Vec<CommuneCode> = units
        .version_on(&crate::today())
        .context("no admin units loaded")?
        .communes
        .keys()
        .take(communes.max(1))
        .map(|c| CommuneCode::parse(c.as_str()).map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<_>>()?;
    let form = sync_protocol::FormId::parse("birth-registration").map_err(anyhow::Error::msg)?;
    println!(
        "mam bench fleet: {phones} phones over {} communes, {} server(s), {duration} s, {}, seed {seed}",
        all.len(),
        urls.len(),
        match pace {
            Pace::Field => "10–30 s between syncs",
            Pace::Burst => "no think time",
            Pace::Idle => "a sync a minute with nothing to send",
        }
    );
    let enrol = |name: String, commune: CommuneCode| {
        let store = store.clone();
        async move {
            let (device, token) =
                crate::openrosa::enroll(store.as_ref(), &name, std::slice::from_ref(&commune))
                    .await?;
            anyhow::Ok(FleetPhone {
                token,
                client: Client::new(device),
                commune,
            })
        }
    };
    let started = Instant::now();
    let mut fleet = Vec::with_capacity(phones);
    for p in 0..phones {
        fleet.push(enrol(format!("fleet phone {p}"), all[p % all.len()].clone()).await?);
    }
    println!(
        "enrolled {phones} phones in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let http = reqwest::Client::builder()
        .no_gzip()
        .pool_max_idle_per_host(64)
        .timeout(Duration::from_secs(60))
        .build()?;
    let stats = Arc::new(Mutex::new(FleetStats::default()));
    let urls = Arc::new(urls);
    let before = scrape_all(&http, &urls).await;
    let bench_cpu_before = crate::metrics::cpu_seconds();
    let load_started = Instant::now();
    let deadline = load_started + Duration::from_secs(duration);

    /// One sync round trip: the answer applied, or the error counted.
    async fn round(
        http: &reqwest::Client,
        url: &str,
        phone: &mut FleetPhone,
        twice: bool,
        stats: &Mutex<FleetStats>,
    ) -> bool {
        let request = phone.client.sync_request();
        let body = serde_json::to_string(&request).expect("serializes");
        let mut answer = None;
        for _ in 0..if twice { 2 } else { 1 } {
            let t = Instant::now();
            let sent = http
                .post(format!("{url}/v1/sync"))
                .bearer_auth(&phone.token)
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await;
            let took = t.elapsed().as_millis() as u32;
            let mut s = stats.lock().await;
            match sent {
                Ok(r) if r.status().is_success() => {
                    drop(s);
                    match r.json::<SyncResponse>().await {
                        Ok(resp) => {
                            let mut s = stats.lock().await;
                            s.latencies.push(took);
                            s.syncs += 1;
                            answer = Some(resp);
                        }
                        Err(e) => {
                            *stats
                                .lock()
                                .await
                                .errors
                                .entry(format!("body: {e}"))
                                .or_default() += 1
                        }
                    }
                }
                Ok(r) => *s.errors.entry(r.status().as_u16().to_string()).or_default() += 1,
                Err(e) => {
                    let kind = if e.is_timeout() {
                        "timeout"
                    } else {
                        "transport"
                    };
                    *s.errors.entry(kind.into()).or_default() += 1
                }
            }
        }
        match answer {
            Some(resp) => {
                phone.client.apply_response(&resp);
                resp.more
            }
            None => false,
        }
    }

    let mut tasks = Vec::new();
    for (p, mut phone) in fleet.into_iter().enumerate() {
        let (http, stats, urls) = (http.clone(), stats.clone(), urls.clone());
        let form = form.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = (seed ^ (p as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1;
            let mut next = move |n: u64| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng % n.max(1)
            };
            // The think time, cut short at the end of the load.
            let think = |ms: u64| {
                tokio::time::sleep_until(
                    (Instant::now() + Duration::from_millis(ms))
                        .min(deadline)
                        .into(),
                )
            };
            // Spread the first syncs over the think time.
            match pace {
                Pace::Field => think(next(20_000)).await,
                Pace::Idle => think(next(60_000)).await,
                Pace::Burst => {}
            }
            let mut made = 0u64;
            // The highest seq of this phone's edits noted for the check.
            let mut noted = 0u64;
            while Instant::now() < deadline {
                // 1–20 edits: new births, and edits of the commune's records.
                let edits = if pace == Pace::Idle { 0 } else { 1 + next(20) };
                let mut ids: Vec<RecordId> =
                    phone.client.records().into_iter().map(|r| r.id).collect();
                for _ in 0..edits {
                    if ids.is_empty() || next(10) < 3 {
                        made += 1;
                        let id = RecordId::new_v7();
                        let commune = phone.commune.clone();
                        ids.push(id);
                        phone.client.create(
                            id,
                            &form,
                            1,
                            &commune,
                            vec![
                                ("child_name", json!(format!("Bé {p}-{made}"))),
                                ("sex", json!(if made.is_multiple_of(2) { "f" } else { "m" })),
                                ("date_of_birth", json!("2020-03-04")),
                                ("village", json!(format!("Thôn {}", next(9) + 1))),
                            ],
                        );
                    } else {
                        let id = ids[next(ids.len() as u64) as usize];
                        let field = ["village", "child_name", "mother_name"][next(3) as usize];
                        let value = json!(format!("{field} {p}-{}", next(1_000_000)));
                        let _ = phone.client.edit(id, [(field, value)]);
                    }
                }
                {
                    let device = phone.client.device();
                    let mut s = stats.lock().await;
                    for e in phone.client.pending() {
                        if e.seq <= noted {
                            continue;
                        }
                        noted = e.seq;
                        s.edits += 1;
                        let Ok(record) = RecordId::parse(&e.record) else {
                            continue;
                        };
                        for (field, change) in &e.fields {
                            s.notes.push(FieldNote {
                                record,
                                field: field.clone(),
                                dot: sync_protocol::Dot::new(device, e.seq),
                                supersedes: change.supersedes.clone(),
                            });
                        }
                    }
                }
                loop {
                    let url = &urls[next(urls.len() as u64) as usize];
                    let more = round(&http, url, &mut phone, next(20) == 0, &stats).await;
                    if !more {
                        break;
                    }
                }
                match pace {
                    Pace::Field => think(10_000 + next(20_000)).await,
                    Pace::Idle => think(60_000).await,
                    Pace::Burst => {}
                }
            }
            phone
        }));
    }
    let mut fleet = Vec::new();
    for t in tasks {
        fleet.push(t.await?);
    }
    let secs = duration.max(1) as f64;
    let load_secs = load_started.elapsed().as_secs_f64();
    let after = scrape_all(&http, &urls).await;
    let bench_cpu = crate::metrics::cpu_seconds()
        .zip(bench_cpu_before)
        .map(|(after, before)| (after - before) / load_secs);
    let memory: Vec<String> = after
        .iter()
        .map(|m| match m.get("process_resident_memory_bytes") {
            Some(b) => format!("{:.0} MB", b / 1e6),
            None => "? (metrics not on this port)".into(),
        })
        .collect();
    let cpu: Vec<String> = after
        .iter()
        .zip(&before)
        .map(|(a, b)| {
            match (
                a.get("process_cpu_seconds_total"),
                b.get("process_cpu_seconds_total"),
            ) {
                (Some(a), Some(b)) => format!("{:.2}", (a - b) / load_secs),
                _ => "?".into(),
            }
        })
        .collect();
    {
        let mut s = stats.lock().await;
        s.latencies.sort_unstable();
        let pct = |p: f64| {
            s.latencies
                .get(
                    ((s.latencies.len() as f64 * p) as usize)
                        .min(s.latencies.len().saturating_sub(1)),
                )
                .copied()
                .unwrap_or(0)
        };
        println!(
            "{:.1} syncs/s, {:.1} edits/s; latency p50 {} ms, p95 {} ms, p99 {} ms; errors {:?}; servers' memory {}; CPU cores used: servers {}, this load generator {}",
            s.syncs as f64 / secs,
            s.edits as f64 / secs,
            pct(0.50),
            pct(0.95),
            pct(0.99),
            s.errors,
            memory.join(", "),
            cpu.join(", "),
            bench_cpu.map_or("?".into(), |c| format!("{c:.2}")),
        );
    }

    // Settle: every phone syncs until nothing is pending and nothing more to pull, twice
    // over, so that each pulls what the others pushed last.
    for _ in 0..2 {
        let mut tasks = Vec::new();
        for mut phone in std::mem::take(&mut fleet) {
            let (http, stats, urls) = (http.clone(), stats.clone(), urls.clone());
            tasks.push(tokio::spawn(async move {
                for i in 0..200 {
                    let more = round(&http, &urls[i % urls.len()], &mut phone, false, &stats).await;
                    if !more && phone.client.pending().is_empty() {
                        break;
                    }
                }
                phone
            }));
        }
        for t in tasks {
            fleet.push(t.await?);
        }
    }
    let mut failures = Vec::new();
    let unsent: usize = fleet.iter().map(|p| p.client.pending().len()).sum();
    if unsent > 0 {
        failures.push(format!("{unsent} edits never acknowledged"));
    }
    // Every phone of a commune holds the same records; a new phone pulling from 0 too.
    let state = |c: &Client| -> BTreeMap<String, Value> {
        c.records()
            .into_iter()
            .map(|r| {
                (
                    r.id.to_string(),
                    serde_json::to_value(&r.fields).expect("serializes"),
                )
            })
            .collect()
    };
    let mut by_commune: BTreeMap<String, BTreeMap<String, Value>> = BTreeMap::new();
    let mut differ: BTreeMap<String, usize> = BTreeMap::new();
    for phone in &fleet {
        let mine = state(&phone.client);
        match by_commune.get(phone.commune.as_str()) {
            Some(first) if *first != mine => {
                *differ.entry(phone.commune.to_string()).or_default() += 1;
            }
            Some(_) => {}
            None => {
                by_commune.insert(phone.commune.to_string(), mine);
            }
        }
    }
    if !differ.is_empty() {
        failures.push(format!(
            "phones holding other records than the first of their commune, by commune: {differ:?}"
        ));
    }
    let mut fresh_differ = Vec::new();
    for (commune, held) in &by_commune {
        let code = CommuneCode::parse(commune).map_err(anyhow::Error::msg)?;
        let mut fresh = enrol(format!("fleet check {commune}"), code).await?;
        for i in 0..1000 {
            if !round(&http, &urls[i % urls.len()], &mut fresh, false, &stats).await {
                break;
            }
        }
        if state(&fresh.client) != *held {
            fresh_differ.push(commune.clone());
        }
    }
    if !fresh_differ.is_empty() {
        failures.push(format!(
            "a phone pulling from cursor 0 gets other records in communes {fresh_differ:?}"
        ));
    }
    // Every acknowledged edit is there, or was superseded by one whose author saw it.
    let s = stats.lock().await;
    let mut superseded = std::collections::HashSet::new();
    for n in &s.notes {
        for d in &n.supersedes {
            superseded.insert((n.record, n.field.clone(), *d));
        }
    }
    let mut records: std::collections::HashMap<RecordId, Record> = std::collections::HashMap::new();
    for phone in &fleet {
        for r in phone.client.records() {
            records.entry(r.id).or_insert(r);
        }
    }
    let rejected: std::collections::HashSet<sync_protocol::Dot> = fleet
        .iter()
        .flat_map(|p| {
            let device = p.client.device();
            p.client
                .rejected()
                .iter()
                .map(move |r| sync_protocol::Dot::new(device, r.rejection.seq))
        })
        .collect();
    let mut lost = 0;
    for n in s.notes.iter().filter(|n| !rejected.contains(&n.dot)) {
        let present = records
            .get(&n.record)
            .is_some_and(|r| r.dots(&n.field).contains(&n.dot));
        if !present && !superseded.contains(&(n.record, n.field.clone(), n.dot)) {
            lost += 1;
        }
    }
    if lost > 0 {
        failures.push(format!(
            "{lost} acknowledged field edits neither present nor superseded"
        ));
    }
    println!(
        "checked {} field edits over {} records in {} communes: {}",
        s.notes.len(),
        records.len(),
        by_commune.len(),
        if failures.is_empty() {
            "nothing lost, every phone converged, a fresh phone agrees".to_owned()
        } else {
            failures.join("; ")
        }
    );
    anyhow::ensure!(failures.is_empty(), "the fleet check failed");
    Ok(())
}

/// `mam bench office`: the office at `records` birth records of one year in one province. The
/// records are loaded straight into the database (one in 200 with two values of its village
/// side by side, for the conflict pages), the indicator tables rebuilt, a province account
/// signed in, and every office page timed over real HTTP (the slowest of three), then the CSV
/// of every record of the year downloaded while the process's memory is sampled.
/// Birth records of a year as the benches load them: a name, a sex, a birth date in the
/// year, a village, a card; every 200th with a second phone's village beside the first (a
/// conflict).
struct Births {
    form_id: sync_protocol::FormId,
    form: Form,
    first_day: i64,
}

impl Births {
    fn new(forms: &FormRegistry, year: &str) -> anyhow::Result<Births> {
        let form_id =
            sync_protocol::FormId::parse("birth-registration").map_err(anyhow::Error::msg)?;
        let form = forms
            .latest(&form_id)
            .context("birth-registration is not published")?
            .clone();
        let first_day = sync_protocol::expr::day_number(&format!("{year}-01-01")).unwrap_or(0);
        Ok(Births {
            form_id,
            form,
            first_day,
        })
    }

    /// The name of record `n`.
    fn name(n: usize) -> String {
        let families = [
            "Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Phan", "Võ", "Đặng",
        ];
        let given_names = [
            "Lan", "Minh", "Hoa", "An", "Bình", "Châu", "Dũng", "Mai", "Nam",
        ];
        format!(
            "{} Thị {} {n}",
            families[n % families.len()],
            given_names[(n / 7) % given_names.len()]
        )
    }

    fn row(
        &self,
        n: usize,
        commune: &CommuneCode,
        forms: &FormRegistry,
    ) -> (RecordId, store::RecordRow) {
        let id = RecordId::new_v7();
        let edit = sync_protocol::CheckedEdit {
            seq: n as u64 + 1,
            record: id,
            form: self.form_id.clone(),
            version: self.form.version,
            commune: commune.clone(),
            fields: first_values([
                ("child_name", json!(Self::name(n))),
                ("sex", json!(if n.is_multiple_of(2) { "f" } else { "m" })),
                (
                    "date_of_birth",
                    json!(sync_protocol::expr::date_of_day(
                        self.first_day + (n % 330) as i64
                    )),
                ),
                ("village", json!(format!("Thôn {}", n % 9 + 1))),
                ("bhyt_card_issued", json!(!n.is_multiple_of(3))),
            ]),
        };
        let mut record = Record::from_edit(&edit);
        record.apply(1, edit, &|_| false);
        if n.is_multiple_of(200) {
            // A second phone's village, typed without seeing the first.
            let other = sync_protocol::CheckedEdit {
                seq: n as u64 + 1,
                record: id,
                form: self.form_id.clone(),
                version: self.form.version,
                commune: commune.clone(),
                fields: first_values([("village", json!("Thôn 10"))]),
            };
            record.apply(2, other, &|_| false);
        }
        record.derived = self.form.derive(&record);
        let row = store::RecordRow {
            name: Some(crate::forms::search_name(&record, forms)),
            ..record_row(&record, n as u64 + 1, false)
        };
        (id, row)
    }
}

/// A bench's own database: a scratch data folder (unless `settings` name a PostgreSQL
/// database), the built-in forms published, and what the records are made and counted by.
struct Scratch {
    dir: std::path::PathBuf,
    store: Arc<dyn store::Store>,
    bench_store: Arc<dyn store::BenchStore>,
    forms: FormRegistry,
    units: Units,
    defs: Vec<crate::indicators::Indicator>,
}

impl Scratch {
    async fn open(settings: &mut Settings, bench: &str) -> anyhow::Result<Scratch> {
        let dir = std::env::temp_dir().join(format!(
            "mam-bench-{bench}-{}-{}",
            std::process::id(),
            now_ms()
        ));
        if settings.database.url.is_none() {
            settings.storage.data_dir = dir.clone();
        }
        let (store, bench_store) = store::open_for_bench(settings).await?;
        crate::forms::publish_all(store.as_ref(), &settings.forms.forms(), now_ms()).await?;
        let forms = FormRegistry::from_store(store.as_ref()).await?;
        let units = Units::load(&settings.forms.units())?;
        let defs = crate::indicators::load(&settings.forms.indicators())?;
        Ok(Scratch {
            dir,
            store,
            bench_store,
            forms,
            units,
            defs,
        })
    }
}

/// Field edits that supersede nothing: a record's first values.
fn first_values<'a>(
    values: impl IntoIterator<Item = (&'a str, Value)>,
) -> BTreeMap<String, sync_protocol::FieldEdit> {
    values
        .into_iter()
        .map(|(k, v)| {
            (
                k.to_owned(),
                sync_protocol::FieldEdit {
                    value: v,
                    supersedes: vec![],
                },
            )
        })
        .collect()
}

/// `mam serve` in a process of its own on `settings`' database (so that its memory is its
/// own), once it answers.
async fn serve_child(
    settings: &Settings,
    http: &reqwest::Client,
) -> anyhow::Result<(std::process::Child, String)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut serve = std::process::Command::new(std::env::current_exe()?);
    serve
        .args(["serve", "--listen", &addr, "--data-dir"])
        .arg(&settings.storage.data_dir)
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(std::process::Stdio::null());
    if let Some(url) = &settings.database.url {
        serve.args(["--database-url", url]);
    }
    let server = serve.spawn().context("start mam serve")?;
    let started = Instant::now();
    while http
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .is_err()
    {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(120),
            "mam serve did not answer on {addr}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok((server, addr))
}

pub async fn office(mut settings: Settings, records: usize) -> anyhow::Result<()> {
    let Scratch {
        dir: scratch,
        store,
        bench_store,
        forms,
        units,
        defs,
    } = Scratch::open(&mut settings, "office").await?;
    let year = "2026";
    let communes: Vec<CommuneCode> = units
        .version_on(&format!("{year}-06-01"))
        .context("no admin units for the year")?
        .communes
        .keys()
        .map(|c| CommuneCode::parse(c.as_str()).map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<_>>()?;
    println!(
        "mam bench office: {}, {records} birth records of {year} over {} communes",
        store.backend(),
        communes.len()
    );

    let started = Instant::now();
    let births = Births::new(&forms, year)?;
    let (mut sample_id, mut sample_commune, mut n) = (None, None, 0);
    while n < records {
        let mut rows = Vec::new();
        for _ in 0..10_000.min(records - n) {
            let commune = &communes[n % communes.len()];
            let (id, row) = births.row(n, commune, &forms);
            rows.push(row);
            if n == records / 2 {
                sample_id = Some(id);
                sample_commune = Some(commune.clone());
            }
            n += 1;
        }
        bench_store.bench_upsert(&rows).await?;
    }
    // As `mam serve` would at its first start, so that the server started below has nothing
    // left to derive.
    let rebuilt = crate::indicators::refresh(store.as_ref(), &forms, &defs, true)
        .await?
        .context("a forced refresh rebuilds")?;
    bench_store.bench_analyze().await?;
    println!(
        "loaded {records} records, rebuilt {} cells and analyzed in {:.1} s",
        rebuilt.cells,
        started.elapsed().as_secs_f64()
    );
    let (sample_id, sample_commune) = (
        sample_id.context("no records")?,
        sample_commune.context("no records")?,
    );

    let user = crate::accounts::add_user(
        store.as_ref(),
        &units,
        "bench-office",
        "province",
        "46",
        "a bench password of its own 1".into(),
        now_ms(),
    )
    .await?;
    let token = crate::accounts::start_session(store.as_ref(), &user, now_ms()).await?;
    drop((forms, units, defs, store, bench_store));
    let http = reqwest::Client::builder()
        .no_gzip()
        .timeout(Duration::from_secs(600))
        .build()?;
    let (mut server, addr) = serve_child(&settings, &http).await?;
    let pid = server.id();
    let cookie = format!("{}={token}", crate::respond::SESSION_COOKIE);
    // The body read as it comes, and only counted.
    let get = |path: String| {
        let (http, cookie, addr) = (http.clone(), cookie.clone(), addr.clone());
        async move {
            let started = Instant::now();
            let mut response = http
                .get(format!("http://{addr}{path}"))
                .header(reqwest::header::COOKIE, cookie)
                .send()
                .await?;
            let status = response.status();
            let mut bytes = 0;
            while let Some(chunk) = response.chunk().await? {
                bytes += chunk.len();
            }
            anyhow::ensure!(status.is_success(), "GET {path}: {status}");
            anyhow::Ok((started.elapsed(), bytes))
        }
    };
    let pages = [
        ("dashboard", "/office".to_owned()),
        ("records, newest first", "/office/records".to_owned()),
        ("records, page 100", "/office/records?page=100".to_owned()),
        (
            "records of a form in a commune",
            format!(
                "/office/records?form={}&commune={sample_commune}",
                births.form_id
            ),
        ),
        (
            "records in conflict",
            "/office/records?status=conflict".to_owned(),
        ),
        (
            "records by name",
            "/office/records?name=nguyen+thi+lan+4711".to_owned(),
        ),
        ("a record", format!("/office/records/{sample_id}")),
        ("conflict queue", "/office/conflicts".to_owned()),
        (
            "year's report (XLSX)",
            format!("/office/reports/{year}.xlsx"),
        ),
    ];
    println!("| page | slowest of 3 | bytes |");
    println!("|---|---|---|");
    for (label, path) in &pages {
        let mut slowest = Duration::ZERO;
        let mut size = 0;
        for _ in 0..3 {
            let (took, bytes) = get(path.clone()).await?;
            slowest = slowest.max(took);
            size = bytes;
        }
        println!(
            "| {label} | {:.0} ms | {size} |",
            slowest.as_secs_f64() * 1e3
        );
    }

    // The year's CSV, with the server's resident memory sampled while it streams: its own
    // (anonymous: heap, SQLite's page caches) apart from the database file mapped into it,
    // which is the kernel's page cache.
    let resident = move || -> Option<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let kib = |key: &str| -> Option<u64> {
            let line = status.lines().find(|l| l.starts_with(key))?;
            line[key.len()..]
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()
        };
        Some((kib("RssAnon:")? * 1024, kib("RssFile:")? * 1024))
    };
    let before = resident().unwrap_or((0, 0));
    let peak = Arc::new(std::sync::Mutex::new(before));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (peak.clone(), sampling.clone());
        tokio::spawn(async move {
            while sampling.load(Ordering::Relaxed) {
                if let Some((anon, file)) = resident() {
                    let mut p = peak.lock().unwrap_or_else(|e| e.into_inner());
                    *p = (p.0.max(anon), p.1.max(file));
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let (took, bytes) = get(format!("/office/records.csv?form={}", births.form_id)).await?;
    sampling.store(false, Ordering::Relaxed);
    sampler.await?;
    let peak = *peak.lock().unwrap_or_else(|e| e.into_inner());
    let mb = |b: u64| b as f64 / 1e6;
    println!(
        "year's CSV of records: {records} records, {:.1} MB in {:.1} s; the server's own memory {:.0} MB before, {:.0} MB at most while it streamed (the database file mapped into it: {:.0} MB, at most {:.0} MB)",
        bytes as f64 / 1e6,
        took.as_secs_f64(),
        mb(before.0),
        mb(peak.0),
        mb(before.1),
        mb(peak.1),
    );
    let _ = server.kill();
    let _ = server.wait();
    if settings.database.url.is_none() {
        let _ = std::fs::remove_dir_all(&scratch);
    }
    Ok(())
}

/// This process's own resident memory (anonymous: heap and SQLite's caches, apart from the
/// database file mapped into it), as "N MB".
fn anon_memory() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("RssAnon:"))?;
    let kib: u64 = line["RssAnon:".len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(format!("{} MB anonymous", kib / 1024))
}
