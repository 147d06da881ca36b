//! Shared test helpers: a seeded generator and a model server with the v1 rules.
#![allow(dead_code)]

use std::collections::BTreeMap;

use sync_protocol::{
    wire::PROTOCOL_VERSION, DeviceId, Dot, Edit, Record, RecordId, RejectCode, Rejection,
    SyncRequest, SyncResponse, VersionVector,
};

/// SplitMix64: small, seedable, good enough to drive histories.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }

    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

/// Runs `case` for many seeds. The base seed comes from `MAM_SEED` (to replay a failure) or
/// the clock, and is printed so any failure can be reproduced.
pub fn for_seeds(name: &str, cases: u64, case: impl Fn(u64)) {
    let base = std::env::var("MAM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    let replay = std::env::var("MAM_SEED").is_ok();
    eprintln!("{name}: base seed {base} (replay with MAM_SEED={base})");
    for i in 0..if replay { 1 } else { cases } {
        let seed = base.wrapping_add(i);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| case(seed)));
        if let Err(panic) = result {
            eprintln!("{name}: FAILED with seed {seed}; replay with MAM_SEED={seed}");
            std::panic::resume_unwind(panic);
        }
    }
}

/// The server's rules in memory: a device's edits in seq order, repeats acknowledged,
/// gaps wait, reused seqs rejected, state pulls after a cursor paged by size.
#[derive(Default)]
pub struct ModelServer {
    pub records: BTreeMap<RecordId, (Record, u64)>,
    pub seen: VersionVector,
    pub edits: BTreeMap<(DeviceId, u64), Edit>,
    pub rejected: BTreeMap<(DeviceId, u64), Rejection>,
    pub change: u64,
    pub next_device: DeviceId,
}

impl ModelServer {
    pub fn sync(&mut self, device: DeviceId, request: &SyncRequest) -> SyncResponse {
        let mut rejected = Vec::new();
        let last = self.seen.get(device);
        for edit in request.push.iter().filter(|e| e.seq <= last) {
            if let Some(old) = self.edits.get(&(device, edit.seq)) {
                if old != edit {
                    rejected.push(Rejection::new(
                        edit.seq,
                        RejectCode::SeqReused,
                        None,
                        "seq reused",
                    ));
                }
            }
        }
        // One device number, one history: nothing after a reused seq is applied.
        let fresh = match rejected.is_empty() {
            true => &request.push[..],
            false => &[],
        };
        for edit in fresh {
            let last = self.seen.get(device);
            if edit.seq <= last {
                continue;
            }
            if edit.seq != last + 1 {
                break;
            }
            self.edits.insert((device, edit.seq), edit.clone());
            match edit.check() {
                Ok(checked) => {
                    self.change += 1;
                    let at = self.change;
                    let seen = self.seen.clone();
                    let (record, changed) = self
                        .records
                        .entry(checked.record)
                        .or_insert_with(|| (Record::from_edit(&checked), 0));
                    record.apply(device, checked, &seen);
                    *changed = at;
                }
                Err(rejection) => {
                    self.rejected.insert((device, edit.seq), rejection);
                }
            }
            self.seen.insert(Dot::new(device, edit.seq));
        }
        // Every stored rejection in the pushed range is reported again, so a phone that lost
        // a response still learns why its edit was refused.
        let acked = self.seen.get(device);
        if let Some(first) = request.push.first() {
            rejected.extend(
                self.rejected
                    .range((device, first.seq)..=(device, acked))
                    .map(|(_, r)| r.clone()),
            );
        }
        let mut changed: Vec<&(Record, u64)> = self
            .records
            .values()
            .filter(|(_, at)| *at > request.cursor)
            .collect();
        changed.sort_by_key(|(_, at)| *at);
        let mut records = Vec::new();
        let mut bytes = 0u64;
        let mut cursor = request.cursor;
        let mut more = false;
        for (record, at) in changed {
            let size = serde_json::to_vec(record).unwrap().len() as u64;
            if !records.is_empty() && bytes + size > request.max_bytes {
                more = true;
                break;
            }
            bytes += size;
            records.push(record.clone());
            cursor = *at;
        }
        SyncResponse {
            protocol: PROTOCOL_VERSION,
            acked_through: acked,
            rejected,
            records,
            evicted: vec![],
            cursor,
            more,
            forms: BTreeMap::new(),
            epoch: None,
            next_seq: Some(acked + 1),
            reset: false,
        }
    }

    /// A new device number, as `POST /v1/successor` gives one.
    pub fn successor(&mut self) -> DeviceId {
        self.next_device = self.next_device.max(1000) + 1;
        self.next_device
    }

    pub fn state(&self) -> BTreeMap<RecordId, Record> {
        self.records
            .iter()
            .map(|(id, (r, _))| (*id, r.clone()))
            .collect()
    }
}
