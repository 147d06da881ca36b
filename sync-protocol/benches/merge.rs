//! Our records against `crdts::Map<String, MVReg>` on the same random histories of 20-field
//! records, and the merge metadata per field the server stores, for records edited by 1, 5
//! and 50 devices.
//!
//! `cargo bench -p sync-protocol --bench merge`

use std::collections::BTreeMap;

use crdts::{CmRDT, CvRDT, MVReg};
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use serde_json::{json, Value};
use sync_protocol::{
    CheckedEdit, CommuneCode, DeviceId, Dot, FieldEdit, FormId, Record, RecordId, ReplicaRecord,
    VersionVector,
};

const FIELDS: usize = 20;
const RECORDS: usize = 200;

type Theirs = crdts::Map<String, MVReg<Value, DeviceId>, DeviceId>;
type TheirOp = crdts::map::Op<String, MVReg<Value, DeviceId>, DeviceId>;

struct Rng(u64);
impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) % n as u64) as usize
    }
}

/// One edit in both representations: ours sets several fields under one dot; crdts needs one
/// map op per field.
#[derive(Clone)]
struct Step {
    device: DeviceId,
    edit: CheckedEdit,
    theirs: Vec<TheirOp>,
}

fn name(field: usize) -> String {
    format!("field_{field:02}")
}

/// A record's history as the server receives it: device 1 fills every field, then devices
/// edit one to three fields from views they pulled at random earlier times.
fn history(rng: &mut Rng, devices: u32) -> Vec<Step> {
    let id = RecordId::new_v7();
    let mut server: Option<Record> = None;
    let mut server_seen = VersionVector::new();
    let mut theirs = Theirs::default();
    let mut views: Vec<(Option<Record>, Theirs)> =
        vec![(None, Theirs::default()); devices as usize];
    let mut seqs = vec![0u64; devices as usize];
    let mut steps = Vec::new();
    let edits = 1 + (2 * devices as usize).max(10);
    for e in 0..edits {
        let d = if e == 0 {
            0
        } else {
            rng.below(devices as usize)
        };
        if rng.below(10) < 3 {
            views[d] = (server.clone(), theirs.clone());
        }
        seqs[d] += 1;
        let device = d as DeviceId + 1;
        let fields: Vec<usize> = if e == 0 {
            (0..FIELDS).collect()
        } else {
            (0..1 + rng.below(3)).map(|_| rng.below(FIELDS)).collect()
        };
        let (view, their_view) = &mut views[d];
        let mut edit = CheckedEdit {
            seq: seqs[d],
            record: id,
            form: FormId::parse("bench").unwrap(),
            version: 1,
            commune: CommuneCode::parse("19753").unwrap(),
            fields: BTreeMap::new(),
        };
        let mut ops = Vec::new();
        for field in fields {
            let value = json!(format!("value {e} of field {field} by device {device}"));
            let supersedes = view
                .as_ref()
                .map(|r| r.dots(&name(field)))
                .unwrap_or_default();
            edit.fields.insert(
                name(field),
                FieldEdit {
                    value: value.clone(),
                    supersedes,
                },
            );
            let op = their_view.update(
                name(field),
                their_view.read_ctx().derive_add_ctx(device),
                |reg, ctx| reg.write(value, ctx),
            );
            their_view.apply(op.clone());
            theirs.apply(op.clone());
            ops.push(op);
        }
        view.get_or_insert_with(|| Record::from_edit(&edit))
            .apply(device, edit.clone(), &|_| false);
        let record = server.get_or_insert_with(|| Record::from_edit(&edit));
        record.apply(device, edit.clone(), &server_seen);
        server_seen.insert(Dot::new(device, edit.seq));
        steps.push(Step {
            device,
            edit,
            theirs: ops,
        });
    }
    steps
}

type OurEdits = Vec<(DeviceId, CheckedEdit)>;

fn ours_of(steps: &[Step]) -> OurEdits {
    steps.iter().map(|s| (s.device, s.edit.clone())).collect()
}

fn theirs_of(steps: &[Step]) -> Vec<TheirOp> {
    steps
        .iter()
        .flat_map(|s| s.theirs.iter().cloned())
        .collect()
}

/// What the server does: apply each edit in arrival order, "seen" being the device table.
/// Both sides take their edits by value, as they arrive off the wire.
fn apply_ours(edits: OurEdits) -> Record {
    let mut record = Record::from_edit(&edits[0].1);
    let mut seen = VersionVector::new();
    for (device, edit) in edits {
        let dot = Dot::new(device, edit.seq);
        record.apply(device, edit, &seen);
        seen.insert(dot);
    }
    record
}

fn apply_theirs(ops: Vec<TheirOp>) -> Theirs {
    let mut map = Theirs::default();
    for op in ops {
        map.apply(op);
    }
    map
}

fn replica(steps: &[&Step]) -> ReplicaRecord {
    let mut r = ReplicaRecord::from_edit(&steps[0].edit);
    for step in steps {
        r.apply(step.device, step.edit.clone());
    }
    r
}

fn bench(c: &mut Criterion) {
    let mut rng = Rng(20201130);
    for devices in [1u32, 5, 50] {
        let histories: Vec<Vec<Step>> = (0..RECORDS).map(|_| history(&mut rng, devices)).collect();
        let our_edits: Vec<OurEdits> = histories.iter().map(|h| ours_of(h)).collect();
        let their_ops: Vec<Vec<TheirOp>> = histories.iter().map(|h| theirs_of(h)).collect();
        let ours: Vec<Record> = our_edits.iter().map(|h| apply_ours(h.clone())).collect();
        let theirs: Vec<Theirs> = their_ops.iter().map(|h| apply_theirs(h.clone())).collect();
        for (o, t) in ours.iter().zip(&theirs) {
            for field in 0..FIELDS {
                let mut a: Vec<String> = o.fields[&name(field)]
                    .values()
                    .map(|v| v.to_string())
                    .collect();
                let mut b: Vec<String> = t
                    .get(&name(field))
                    .val
                    .map(|r| r.read().val)
                    .unwrap_or_default()
                    .iter()
                    .map(|v| v.to_string())
                    .collect();
                a.sort();
                b.sort();
                assert_eq!(a, b, "the bench's histories must give both the same values");
            }
        }
        let fields = (RECORDS * FIELDS) as f64;
        let meta: usize = ours.iter().map(Record::metadata_bytes).sum();
        let record_json: usize = ours
            .iter()
            .map(|r| serde_json::to_vec(r).unwrap().len())
            .sum();
        let their_json: usize = theirs
            .iter()
            .map(|m| serde_json::to_vec(m).unwrap().len())
            .sum();
        let values: usize = ours
            .iter()
            .flat_map(|r| r.fields.values().flat_map(|f| f.values()))
            .map(|v| serde_json::to_vec(v).unwrap().len())
            .sum();
        let replica_meta: usize = histories
            .iter()
            .map(|h| replica(&h.iter().collect::<Vec<_>>()).metadata_bytes())
            .sum();
        println!(
            "devices={devices}: server-stored merge metadata {:.1} B/field (one dot per value); \
             free-standing replica with per-field context {:.1} B/field; values {:.1} B/field; \
             record JSON {:.0} B, crdts Map<String, MVReg> JSON {:.0} B per record",
            meta as f64 / fields,
            replica_meta as f64 / fields,
            values as f64 / fields,
            record_json as f64 / RECORDS as f64,
            their_json as f64 / RECORDS as f64,
        );

        let mut group = c.benchmark_group(format!("apply-history/{devices}-devices"));
        group.throughput(Throughput::Elements(RECORDS as u64));
        group.bench_with_input(BenchmarkId::new("mam", devices), &our_edits, |b, hs| {
            b.iter_batched(
                || hs.clone(),
                |hs| {
                    hs.into_iter()
                        .map(|h| apply_ours(h).fields.len())
                        .sum::<usize>()
                },
                BatchSize::LargeInput,
            )
        });
        group.bench_with_input(BenchmarkId::new("crdts", devices), &their_ops, |b, hs| {
            b.iter_batched(
                || hs.clone(),
                |hs| {
                    hs.into_iter()
                        .map(|h| apply_theirs(h).len().val)
                        .sum::<usize>()
                },
                BatchSize::LargeInput,
            )
        });
        group.finish();

        // State merge: two replicas that each saw the edits of half of the devices.
        let halves: Vec<(ReplicaRecord, ReplicaRecord, Theirs, Theirs)> = histories
            .iter()
            .map(|h| {
                let (odd, even): (Vec<&Step>, Vec<&Step>) =
                    h.iter().partition(|s| s.device % 2 == 1);
                let even = if even.is_empty() { odd.clone() } else { even };
                let t = |steps: &[&Step]| {
                    let mut m = Theirs::default();
                    for op in steps.iter().flat_map(|s| &s.theirs) {
                        m.apply(op.clone());
                    }
                    m
                };
                (replica(&odd), replica(&even), t(&odd), t(&even))
            })
            .collect();
        let mut group = c.benchmark_group(format!("merge-states/{devices}-devices"));
        group.throughput(Throughput::Elements(RECORDS as u64));
        group.bench_with_input(BenchmarkId::new("mam", devices), &halves, |b, hs| {
            b.iter(|| {
                hs.iter()
                    .map(|(x, y, _, _)| {
                        let mut x = x.clone();
                        x.merge(y);
                        x.fields.len()
                    })
                    .sum::<usize>()
            })
        });
        group.bench_with_input(BenchmarkId::new("crdts", devices), &halves, |b, hs| {
            b.iter(|| {
                hs.iter()
                    .map(|(_, _, x, y)| {
                        let mut x = x.clone();
                        x.merge(y.clone());
                        x.len().val
                    })
                    .sum::<usize>()
            })
        });
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
