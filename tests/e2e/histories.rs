//! The proof that nothing is lost: seeded random histories driven through a real `mam` and
//! the sync-protocol client, on both backends. Phones go offline for stretches, edit from
//! stale views and from drafts opened long before, lose responses and retry, send a second
//! edit under a used seq; one phone is restored from its own earlier backup; an officer
//! settles conflicts through the real settle form while phones push; the server is killed
//! with SIGKILL, and later restored from a backup taken mid-way.
//!
//! At the end every phone and a newly enrolled one hold the same records, and an oracle that
//! knows which values each write's author saw agrees on every field: a value is gone only if a
//! write whose author saw it superseded it. `MAM_SEED` replays one seed; `MAM_HISTORIES` sets
//! how many run per backend.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};
use sync_protocol::{Client, Dot, RecordId, RejectCode, SyncRequest, SyncResponse};

use crate::harness::{Database, Phone, Rng, Server, COMMUNE};
use crate::office::{add_user, hidden, unescape, Office, PASSWORD};

const FIELDS: [&str; 2] = ["child_name", "notes"];

/// One write of one value to one field, and the values its author saw there.
#[derive(Debug)]
struct Written {
    record: RecordId,
    field: &'static str,
    value: String,
    seen: BTreeSet<String>,
    /// Which phone made it (`None`: the office).
    phone: Option<usize>,
    /// The server acknowledged it (an office settle is acknowledged when it answers).
    acked: bool,
    /// It never left its phone, whose state was then replaced by an older backup.
    dropped: bool,
}

/// A draft: the record as it was opened, the field, the dots it showed and their values.
type Draft = (
    sync_protocol::Record,
    &'static str,
    Vec<Dot>,
    BTreeSet<String>,
);

struct Sim {
    server: Server,
    phones: Vec<Phone>,
    online: Vec<bool>,
    /// A draft per phone: the record, the field and what the field showed when it was opened.
    drafts: Vec<Option<Draft>>,
    office: Office,
    csrf: String,
    written: Vec<Written>,
    values: u64,
    log: Vec<String>,
}

fn shown(record: &sync_protocol::Record, field: &str) -> (Vec<Dot>, BTreeSet<String>) {
    let values = record
        .fields
        .get(field)
        .map(|r| {
            r.values()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    (record.dots(field), values)
}

impl Sim {
    /// A write a phone made, not yet acknowledged.
    fn phone_wrote(
        &mut self,
        p: usize,
        record: RecordId,
        field: &'static str,
        value: String,
        seen: BTreeSet<String>,
    ) {
        self.wrote(Written {
            record,
            field,
            value,
            seen,
            phone: Some(p),
            acked: false,
            dropped: false,
        });
    }

    /// A new record made on phone `p`, its name a value of its own.
    fn create(&mut self, p: usize) {
        let value = self.fresh_value(p);
        let id = self.phones[p].create(COMMUNE, &[("child_name", json!(value.clone()))]);
        self.phone_wrote(p, id, "child_name", value, BTreeSet::new());
    }

    fn wrote(&mut self, w: Written) {
        let seq = w
            .phone
            .and_then(|p| self.phones[p].client.pending().last().map(|e| e.seq));
        self.log.push(format!(
            "write {} to {} of {} by {:?} (seq {seq:?}) over {:?}",
            w.value, w.field, w.record, w.phone, w.seen
        ));
        self.written.push(w);
    }

    /// Values of the phone's edits still waiting for the server.
    fn pending_values(&self, p: usize) -> BTreeSet<String> {
        self.phones[p]
            .client
            .pending()
            .iter()
            .flat_map(|e| e.fields.values())
            .filter_map(|f| f.value.as_str().map(str::to_owned))
            .collect()
    }

    /// Writes of this phone no longer pending are acknowledged (none was refused: checked at
    /// the end).
    fn note_acks(&mut self, p: usize) {
        let pending = self.pending_values(p);
        for w in &mut self.written {
            if w.phone == Some(p) && !w.acked && !w.dropped && !pending.contains(&w.value) {
                w.acked = true;
            }
        }
    }

    fn fresh_value(&mut self, phone: usize) -> String {
        self.values += 1;
        format!("v{}-p{phone}", self.values)
    }

    fn pick_record(&self, rng: &mut Rng, phone: usize) -> Option<RecordId> {
        let records = self.phones[phone].client.records();
        (!records.is_empty()).then(|| records[rng.below(records.len() as u64) as usize].id)
    }

    /// One sync over real HTTP that may fail (the server was killed meanwhile) or lose its
    /// response (then the same request goes again and the second answer is applied).
    async fn sync_once(&mut self, p: usize, lose_response: bool) -> bool {
        let phone = &mut self.phones[p];
        let request = phone.client.sync_request();
        let body = serde_json::to_string(&request).unwrap();
        if lose_response {
            let _ = post_sync(phone, body.clone()).await;
        }
        let Some(response) = post_sync(phone, body).await else {
            return false;
        };
        phone.client.apply_response(&response);
        let phone = &self.phones[p];
        self.log.push(format!(
            "phone {p} (device {}) pushed {:?}: acked {} next {:?} reset {} rejected {:?}",
            phone.device(),
            request.push.iter().map(|e| e.seq).collect::<Vec<_>>(),
            response.acked_through,
            response.next_seq,
            response.reset,
            response
                .rejected
                .iter()
                .map(|r| (r.seq, r.code.to_string()))
                .collect::<Vec<_>>()
        ));
        self.note_acks(p);
        let phone = &mut self.phones[p];
        if phone.client.successor_needed() {
            let old = phone.device();
            phone.take_successor().await;
            self.log.push(format!(
                "phone {p} took successor {} of {old}",
                phone.device()
            ));
        }
        !response.more && phone.client.pending().is_empty()
    }

    async fn sync_all(&mut self, p: usize) {
        for _ in 0..50 {
            if self.sync_once(p, false).await {
                return;
            }
        }
        panic!("phone {p} did not settle");
    }

    /// Another edit under a seq the phone just used, in the same push: refused `seq_reused`
    /// and kept, never applied, never acknowledged as if applied.
    async fn duplicate_seq(&mut self, p: usize) {
        let Some(first) = self.phones[p].client.pending().first().cloned() else {
            return;
        };
        let mut other = first.clone();
        for change in other.fields.values_mut() {
            if change.value.is_string() {
                change.value = json!("a second edit under one seq");
            }
        }
        if other == first {
            return;
        }
        let request = SyncRequest {
            push: vec![first.clone(), other],
            ..self.phones[p].client.clone().sync_request()
        };
        let body = serde_json::to_string(&request).unwrap();
        let Some(response) = post_sync(&self.phones[p], body).await else {
            return;
        };
        // The phone's own edit stands or waits; the other one never lands.
        if response.acked_through >= first.seq {
            let values: BTreeSet<&str> = first
                .fields
                .values()
                .filter_map(|f| f.value.as_str())
                .collect();
            for w in &mut self.written {
                if w.phone == Some(p) && values.contains(w.value.as_str()) {
                    w.acked = true;
                }
            }
            assert!(
                response
                    .rejected
                    .iter()
                    .any(|r| r.seq == first.seq && r.code == RejectCode::SeqReused),
                "a second edit under seq {} was not refused: {:?}",
                first.seq,
                response.rejected
            );
        }
    }

    /// The officer opens a conflicted record, maybe a phone pushes meanwhile, and the officer
    /// saves a choice through the real settle form.
    async fn settle(&mut self, rng: &mut Rng) {
        let Some((id, field)) = self.phones.iter().find_map(|phone| {
            phone.client.records().into_iter().find_map(|r| {
                FIELDS
                    .iter()
                    .find(|f| r.fields.get(**f).is_some_and(|x| x.is_conflict()))
                    .map(|f| (r.id, *f))
            })
        }) else {
            return;
        };
        let path = format!("/office/records/{id}");
        let (status, page) = self.office.get(&path).await;
        if status != 200 {
            return;
        }
        let choices = radios(&page, field);
        if choices.is_empty() {
            return;
        }
        let shown_json = hidden(&page, "shown");
        let seen: BTreeSet<String> = choices.iter().map(|(_, v)| v.clone()).collect();
        // The race: a phone pushes while the page is open.
        if rng.below(2) == 0 {
            let p = rng.below(self.phones.len() as u64) as usize;
            if self.phones[p].client.view(id).is_some() {
                let value = self.fresh_value(p);
                let (_, seen) = shown(&self.phones[p].client.view(id).unwrap(), field);
                self.phones[p]
                    .client
                    .edit(id, [(field, json!(value.clone()))]);
                self.phone_wrote(p, id, field, value, seen);
                self.sync_once(p, false).await;
            }
        }
        let (pick, value) = match rng.below(3) {
            0 => {
                let value = self.fresh_value(99);
                ("other".to_owned(), value)
            }
            _ => choices[rng.below(choices.len() as u64) as usize].clone(),
        };
        let csrf = self.csrf.clone();
        let response = self
            .office
            .post(
                &format!("{path}/settle"),
                &[
                    ("csrf", csrf.as_str()),
                    ("shown", shown_json.as_str()),
                    (&format!("pick:{field}"), pick.as_str()),
                    (&format!("other:{field}"), value.as_str()),
                ],
            )
            .await;
        match response.status().as_u16() {
            303 => {
                self.log.push(format!("office settled {field} of {id}"));
                self.wrote(Written {
                    record: id,
                    field,
                    value,
                    seen,
                    phone: None,
                    acked: true,
                    dropped: false,
                });
            }
            409 => self
                .log
                .push(format!("office settle of {id} refused: stale")),
            other => panic!(
                "settle answered {other}: {}",
                response.text().await.unwrap_or_default()
            ),
        }
    }

    fn point_phones_at_server(&mut self) {
        for phone in &mut self.phones {
            phone.url = self.server.url.clone();
        }
        self.office.url = self.server.url.clone();
    }
}

async fn post_sync(phone: &Phone, body: String) -> Option<SyncResponse> {
    let response = phone
        .http
        .post(format!("{}/v1/sync", phone.url))
        .bearer_auth(&phone.token)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .ok()?;
    if response.status() != 200 {
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        assert!(status.is_server_error(), "sync answered {status}: {text}");
        return None;
    }
    response.json().await.ok()
}

/// The settle form's radios for `field`: (the value sent, the value shown).
fn radios(page: &str, field: &str) -> Vec<(String, String)> {
    let Some(at) = page.find(&format!("class=\"field-conflict\" data-field=\"{field}\"")) else {
        return vec![];
    };
    let set = &page[at..];
    let set = &set[..set.find("</fieldset>").unwrap()];
    let mut out = Vec::new();
    let mut rest = set;
    let marker = "type=\"radio\"";
    while let Some(i) = rest.find(marker) {
        rest = &rest[i + marker.len()..];
        let v = rest.find("value=\"").unwrap() + 7;
        let dot = &rest[v..v + rest[v..].find('"').unwrap()];
        if dot == "other" {
            continue;
        }
        let s = rest.find("<span class=\"value\">").unwrap() + 20;
        let text = &rest[s..s + rest[s..].find("</span>").unwrap()];
        out.push((unescape(dot), unescape(text)));
    }
    out
}

async fn history(db: &Database, seed: u64, steps: usize) {
    let mut rng = Rng(seed);
    let server = Server::start(db);
    add_user(&server, "hue", "district", "474");
    let mut phones = Vec::new();
    for name in ["Hoa", "Lan", "Minh", "Mai"] {
        phones.push(server.enroll(name, &[COMMUNE]).await);
    }
    let mut office = Office::new(&server);
    assert_eq!(office.login("hue", PASSWORD).await.0, 303);
    let csrf = office.csrf().await;
    let n = phones.len();
    let mut sim = Sim {
        server,
        phones,
        online: vec![true; n],
        drafts: vec![None; n],
        office,
        csrf,
        written: Vec::new(),
        values: 0,
        log: Vec::new(),
    };
    let backup_file = db.scratch("history.backup");
    let mut phone_backup: Option<Client> = None;
    let mut backed_up = 0;
    for step in 0..steps {
        let p = rng.below(n as u64) as usize;
        sim.log.push(format!("step {step}"));
        match rng.below(100) {
            0..=14 => {
                sim.create(p);
            }
            15..=39 => {
                if let Some(id) = sim.pick_record(&mut rng, p) {
                    let field = FIELDS[rng.below(2) as usize];
                    let (_, seen) = shown(&sim.phones[p].client.view(id).unwrap(), field);
                    let value = sim.fresh_value(p);
                    sim.phones[p].edit(id, &[(field, json!(value.clone()))]);
                    sim.phone_wrote(p, id, field, value, seen);
                }
            }
            40..=46 => {
                // A draft opened now, saved later: it supersedes what it showed when opened.
                if let Some(id) = sim.pick_record(&mut rng, p) {
                    let field = FIELDS[rng.below(2) as usize];
                    let opened = sim.phones[p].client.view(id).unwrap();
                    let (dots, seen) = shown(&opened, field);
                    sim.drafts[p] = Some((opened, field, dots, seen));
                }
            }
            47..=52 => {
                if let Some((opened, field, dots, seen)) = sim.drafts[p].take() {
                    let value = sim.fresh_value(p);
                    sim.phones[p]
                        .client
                        .edit_from(&opened, [(field, json!(value.clone()), dots)]);
                    sim.phone_wrote(p, opened.id, field, value, seen);
                }
            }
            53..=77 => {
                if sim.online[p] {
                    let lose = rng.below(4) == 0;
                    sim.sync_once(p, lose).await;
                }
            }
            78..=85 => sim.online[p] = !sim.online[p],
            86..=88 => {
                if sim.online[p] {
                    sim.duplicate_seq(p).await;
                }
            }
            _ => sim.settle(&mut rng).await,
        }
        // The events of every history, at fixed places.
        if step == steps / 5 {
            phone_backup = Some(sim.phones[0].client.clone());
        }
        if step == steps * 2 / 5 {
            // Phone 0 is restored from its own earlier backup and goes on at once.
            sim.phones[0].client = phone_backup.take().unwrap();
            // What phone 0 made after its backup and never sent is gone with its state.
            let pending = sim.pending_values(0);
            for w in &mut sim.written {
                if w.phone == Some(0) && !w.acked && !pending.contains(&w.value) {
                    w.dropped = true;
                }
            }
            sim.drafts[0] = None;
            sim.online[0] = true;
            sim.create(0);
            sim.sync_all(0).await;
            sim.log.push(format!("step {step}: phone 0 restored"));
        }
        if step == steps / 2 {
            sim.server.kill();
            sim.server.restart();
            sim.point_phones_at_server();
            sim.log.push(format!("step {step}: SIGKILL"));
        }
        if step == steps * 3 / 5 {
            crate::recovery::back_up(&sim.server, db, &backup_file);
            backed_up = sim.written.len();
            sim.log.push(format!("step {step}: backup"));
        }
        if step == steps * 4 / 5 {
            crate::recovery::restore(&mut sim.server, db, &backup_file).await;
            // The office's own settles live on the server alone: those made after the backup
            // are gone with the restore (the README says so). Phones' edits come back.
            for w in &mut sim.written[backed_up..] {
                if w.phone.is_none() {
                    w.dropped = true;
                }
            }
            sim.point_phones_at_server();
            sim.log.push(format!("step {step}: restore"));
        }
    }

    // Everyone comes online and syncs until quiet; a new phone pulls everything.
    for _ in 0..2 {
        for p in 0..n {
            sim.sync_all(p).await;
        }
    }
    let mut fresh = sim.server.enroll("Mới", &[COMMUNE]).await;
    fresh.sync().await;
    let truth: BTreeMap<RecordId, sync_protocol::Record> = fresh
        .client
        .records()
        .into_iter()
        .map(|r| (r.id, r))
        .collect();
    for (p, phone) in sim.phones.iter().enumerate() {
        assert!(
            phone.client.rejected().is_empty(),
            "phone {p} had edits refused: {:?}\n{}",
            phone.client.rejected(),
            sim.log.join("\n")
        );
        let theirs: BTreeMap<RecordId, sync_protocol::Record> = phone
            .client
            .records()
            .into_iter()
            .map(|r| (r.id, r))
            .collect();
        assert_eq!(
            theirs.keys().collect::<Vec<_>>(),
            truth.keys().collect::<Vec<_>>(),
            "phone {p} holds other records than the server"
        );
        for (id, record) in &truth {
            assert_eq!(
                theirs[id].fields, record.fields,
                "phone {p} differs from the server on {id}"
            );
        }
    }
    // The oracle: every write is there, or a write whose author saw it superseded it.
    let superseded: BTreeSet<(RecordId, &str, &str)> = sim
        .written
        .iter()
        .filter(|w| !w.dropped)
        .flat_map(|w| w.seen.iter().map(move |v| (w.record, w.field, v.as_str())))
        .collect();
    for w in &sim.written {
        sim.log.push(format!("{w:?}"));
    }
    for w in sim.written.iter().filter(|w| !w.dropped) {
        assert!(w.acked, "{w:?} was never acknowledged");
        let now: BTreeSet<String> = truth
            .get(&w.record)
            .and_then(|r| r.fields.get(w.field))
            .map(|r| {
                r.values()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            now.contains(&w.value) || superseded.contains(&(w.record, w.field, w.value.as_str())),
            "{w:?} is gone though no write that saw it superseded it; the field holds {now:?}\n{}",
            sim.log.join("\n")
        );
    }
    // And nothing is there that nobody wrote.
    let written: BTreeSet<(RecordId, &str, &str)> = sim
        .written
        .iter()
        .map(|w| (w.record, w.field, w.value.as_str()))
        .collect();
    for (id, record) in &truth {
        for field in FIELDS {
            for v in record
                .fields
                .get(field)
                .into_iter()
                .flat_map(|r| r.values())
                .filter_map(Value::as_str)
            {
                assert!(
                    written.contains(&(*id, field, v)),
                    "{id} {field} holds {v:?}, which nobody wrote"
                );
            }
        }
    }
    eprintln!(
        "history seed {seed}: {steps} steps, {} writes, {} records, {} office settles",
        sim.written.len(),
        truth.len(),
        sim.written.iter().filter(|w| w.phone.is_none()).count()
    );
}

pub async fn random_histories_lose_nothing(db: Database) {
    let runs: u64 = std::env::var("MAM_HISTORIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let seeds: Vec<u64> = match std::env::var("MAM_SEED").ok().and_then(|v| v.parse().ok()) {
        Some(seed) => vec![seed],
        None => {
            let base = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            (0..runs)
                .map(|i| base.wrapping_mul(31).wrapping_add(i))
                .collect()
        }
    };
    for seed in seeds {
        eprintln!("random history: seed {seed} (replay with MAM_SEED={seed})");
        let db = Database::fresh(db.backend()).await.unwrap();
        history(&db, seed, 150).await;
    }
}
