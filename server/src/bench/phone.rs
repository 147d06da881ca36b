//! `mam bench phone`: the phone app with a big commune, in headless Chromium at a cheap phone's
//! size, with its CPU slowed and a mobile network emulated by DevTools. It loads the records
//! into a scratch database, starts `mam serve`, enrols the browser with a code as a
//! collaborator would, and times the first sync, opening the app again, the list's search and
//! pages, and opening a record; then gives what IndexedDB holds.

use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{json, Value};
use sync_protocol::CommuneCode;

use super::{serve_child, Births, Scratch};
use crate::config::Settings;
use crate::webdriver::Browser;
use crate::{auth, now_ms};

/// A network as Chromium's DevTools emulates it (its presets).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Network {
    /// DevTools' "3G": 2 s round trips, 400 kbit/s each way.
    #[value(name = "3g")]
    ThreeG,
    /// DevTools' "Slow 4G" (its former "Fast 3G"): 562.5 ms, 1.44 Mbit/s down, 675 kbit/s up.
    #[value(name = "slow-4g")]
    Slow4g,
    /// No emulation: loopback.
    #[value(name = "none")]
    Loopback,
}

impl Network {
    /// Latency in milliseconds, then download and upload in bytes per second.
    fn conditions(self) -> Option<(u32, u32, u32)> {
        match self {
            Network::ThreeG => Some((2000, 50_000, 50_000)),
            Network::Slow4g => Some((563, 180_000, 84_375)),
            Network::Loopback => None,
        }
    }
}

/// How long to wait for the page to reach a state before the bench gives up: two minutes and
/// 40 ms a record.
fn patience(records: usize) -> Duration {
    Duration::from_secs(120) + Duration::from_millis(40 * records as u64)
}

/// Run `script` (a function body returning a value) in the page until it returns something
/// other than null, false or 0; what it returned then.
async fn until(
    browser: &Browser,
    patience: Duration,
    what: &str,
    script: &str,
) -> anyhow::Result<Value> {
    let started = Instant::now();
    loop {
        let got = browser.execute(script, vec![]).await;
        let done = match &got {
            Value::Null | Value::Bool(false) => false,
            Value::Number(n) => n.as_f64() != Some(0.0),
            _ => true,
        };
        if done {
            eprintln!("  {what} after {:.1} s", started.elapsed().as_secs_f64());
            return Ok(got);
        }
        if started.elapsed() > patience {
            browser.screenshot("gave-up").await;
            let shown = browser
                .execute(
                    "const s = window.mam && window.mam.state && window.mam.state();
                     return JSON.stringify({ requests: window.mam && window.mam.requests, cursor: s && s.cursor,
                       pulled: s && Object.keys(s.pulled).length }) + '\\n' + document.body.innerText;",
                    vec![],
                )
                .await;
            anyhow::bail!(
                "the app never {what} in {} s; it shows: {}",
                patience.as_secs(),
                shown.as_str().unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The slowdowns, again: DevTools' CPU emulation belongs to the page and a navigation may
/// start a new one.
async fn slow_down(browser: &Browser, cpu: f64) {
    browser
        .cdp("Emulation.setCPUThrottlingRate", json!({ "rate": cpu }))
        .await;
}

pub async fn phone(
    mut settings: Settings,
    records: usize,
    cpu: f64,
    network: Network,
) -> anyhow::Result<()> {
    let Scratch {
        dir: scratch,
        store,
        bench_store,
        forms,
        units,
        defs,
    } = Scratch::open(&mut settings, "phone").await?;
    let year = "2026";
    let commune: CommuneCode = units
        .version_on(&format!("{year}-06-01"))
        .context("no admin units for the year")?
        .communes
        .keys()
        .next()
        .map(|c| CommuneCode::parse(c.as_str()).map_err(anyhow::Error::msg))
        .context("no communes")??;
    println!(
        "mam bench phone: {records} birth records of commune {commune} on {}; Chromium at 360×740, CPU {cpu}× slower, network {network:?}",
        store.backend(),
    );
    let births = Births::new(&forms, year)?;
    let sample = records / 2;
    let mut sample_id = None;
    let mut n = 0;
    while n < records {
        let mut rows = Vec::new();
        for _ in 0..10_000.min(records - n) {
            let (id, row) = births.row(n, &commune, &forms);
            if n == sample {
                sample_id = Some(id);
            }
            rows.push(row);
            n += 1;
        }
        bench_store.bench_upsert(&rows).await?;
    }
    crate::indicators::refresh(store.as_ref(), &forms, &defs, true).await?;
    let sample_id = sample_id.context("no records")?;
    let sample_name = Births::name(sample);
    let code = auth::new_code();
    store
        .add_device(
            "bench phone",
            std::slice::from_ref(&commune),
            &auth::code_hash(&code),
            now_ms() + 3_600_000,
            now_ms(),
        )
        .await?;
    drop((forms, units, defs, store, bench_store));

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    let (mut server, addr) = serve_child(&settings, &http).await?;
    let outcome = drive(&addr, &code, records, cpu, network, sample_id, &sample_name).await;
    let _ = server.kill();
    let _ = server.wait();
    if settings.database.url.is_none() {
        let _ = std::fs::remove_dir_all(&scratch);
    }
    outcome
}

async fn drive(
    addr: &str,
    code: &str,
    records: usize,
    cpu: f64,
    network: Network,
    sample_id: sync_protocol::RecordId,
    sample_name: &str,
) -> anyhow::Result<()> {
    let shots = std::env::temp_dir().join("mam-bench-phone-shots");
    let browser = Browser::start_with(360, 740, shots, &[])
        .await
        .context("mam bench phone needs Debian's chromium and chromium-driver")?;
    if let Some((latency, down, up)) = network.conditions() {
        browser.set_network(latency, down, up).await;
    }
    let base = format!("http://{addr}");
    let wait = patience(records);

    // The first visit: the app's files over the network, then the enrolment.
    slow_down(&browser, cpu).await;
    let started = Instant::now();
    browser.goto(&format!("{base}/app/#code={code}")).await;
    until(
        &browser,
        wait,
        "showed the enrolment",
        "return !!document.querySelector('#code') && document.querySelector('#code').value.length > 0;",
    )
    .await?;
    let first_visit = started.elapsed();
    let started = Instant::now();
    browser.click_on("form button[type=submit]").await;
    let count = format!(
        "const s = window.mam && window.mam.state && window.mam.state();
         return !!s && Object.keys(s.pulled).length >= {records} && !!document.querySelector('#records li.record')
           && document.body.innerText.includes('Phiếu ({records})');"
    );
    until(&browser, wait, "held every record", &count).await?;
    until(
        &browser,
        wait,
        "finished its first sync",
        "return !!document.querySelector('#status') && !document.querySelector('#status').textContent.includes('đang đồng bộ') && document.querySelector('#status').textContent.includes('đồng bộ lúc');",
    )
    .await?;
    let first_sync = started.elapsed();
    let wire = browser
        .execute(
            "return performance.getEntriesByType('resource').filter(e => e.name.includes('/v1/sync'))
               .reduce((a, e) => [a[0] + 1, a[1] + e.transferSize, a[2] + e.decodedBodySize], [0, 0, 0]);",
            vec![],
        )
        .await;

    // Opening the app again, from the phone's storage, as a collaborator does each morning:
    // from navigation to the list shown with its records.
    let mut opening = Vec::new();
    for _ in 0..3 {
        browser.goto("about:blank").await;
        slow_down(&browser, cpu).await;
        browser.goto(&format!("{base}/app/")).await;
        slow_down(&browser, cpu).await;
        let at = until(
            &browser,
            wait,
            "showed its list again",
            "return window.mam && window.mam.openedAt && document.querySelector('#records li.record') ? window.mam.openedAt : 0;",
        )
        .await?;
        opening.push(at.as_f64().unwrap_or(0.0));
    }
    // Let the sync that opening starts finish before timing the list.
    until(
        &browser,
        wait,
        "synced after opening",
        "return !document.querySelector('#status').textContent.includes('đang đồng bộ');",
    )
    .await?;

    // The list: a search by name (without marks), clearing it, a filter, the next page; each
    // from the input to the list drawn (two animation frames).
    let timed = r#"
        const [selector, value, done] = arguments;
        const el = document.querySelector(selector);
        const t0 = performance.now();
        if (selector === '#more') el.click();
        else {
          el.value = value;
          el.dispatchEvent(new Event(el.tagName === 'SELECT' ? 'change' : 'input'));
        }
        requestAnimationFrame(() => requestAnimationFrame(() => done([
          performance.now() - t0,
          document.querySelectorAll('#records li.record').length,
        ])));
    "#;
    let search = crate::forms::folded(sample_name);
    let steps = [
        ("search by name", "#search", search.as_str()),
        ("clear the search", "#search", ""),
        ("filter: in conflict", "#filter", "conflict"),
        ("filter: all", "#filter", "all"),
        ("next page of 50", "#more", ""),
    ];
    let mut list = Vec::new();
    for (label, selector, value) in steps {
        let got = browser
            .execute_async(timed, vec![json!(selector), json!(value)])
            .await;
        list.push((
            label,
            got[0].as_f64().unwrap_or(f64::NAN),
            got[1].as_u64().unwrap_or(0),
        ));
    }
    anyhow::ensure!(list[0].2 >= 1, "the search for {search:?} found nothing");

    // Opening a record from the list.
    let open = browser
        .execute_async(
            r#"
            const [id, name, done] = arguments;
            const t0 = performance.now();
            location.hash = `#record/${id}`;
            const look = () => {
              const h1 = document.querySelector('#app h1');
              if (h1 && h1.textContent === name) done(performance.now() - t0);
              else requestAnimationFrame(look);
            };
            look();
            "#,
            vec![json!(sample_id.to_string()), json!(sample_name)],
        )
        .await;

    let storage = browser
        .execute_async(
            "const done = arguments[0];
             navigator.storage.estimate().then(e => done([e.usage, (e.usageDetails || {}).indexedDB || null,
               performance.memory ? performance.memory.usedJSHeapSize : null]));",
            vec![],
        )
        .await;
    browser.quit().await;

    let mb = |v: &Value| v.as_f64().map(|b| format!("{:.1} MB", b / 1e6));
    println!("| step | time |");
    println!("|---|---|");
    println!(
        "| first visit: the app's files, the enrolment shown | {:.1} s |",
        first_visit.as_secs_f64()
    );
    println!(
        "| first sync: enrol, then every record pulled and listed ({} requests, {} on the wire, {} unpacked) | {:.1} s |",
        wire[0],
        mb(&wire[1]).unwrap_or_default(),
        mb(&wire[2]).unwrap_or_default(),
        first_sync.as_secs_f64()
    );
    opening.sort_by(f64::total_cmp);
    println!(
        "| opening the app (navigation to the list shown), slowest of 3 | {:.2} s (fastest {:.2} s) |",
        opening[opening.len() - 1] / 1e3,
        opening[0] / 1e3
    );
    for (label, ms, rows) in &list {
        println!("| list: {label} ({rows} rows shown) | {ms:.0} ms |");
    }
    println!(
        "| opening a record from the list | {:.0} ms |",
        open.as_f64().unwrap_or(f64::NAN)
    );
    println!(
        "storage: {} in all, IndexedDB {}; the page's JavaScript heap {}",
        mb(&storage[0]).unwrap_or_else(|| "?".into()),
        mb(&storage[1]).unwrap_or_else(|| "?".into()),
        mb(&storage[2]).unwrap_or_else(|| "?".into()),
    );
    Ok(())
}
