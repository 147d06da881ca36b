//! Our register against `crdts::MVReg` on the same random histories of 20-field records, and
//! the merge metadata per field the server stores, for records edited by 1, 5 and 50 devices.
//!
//! `cargo bench -p sync-protocol --bench merge`

use std::collections::BTreeMap;

use crdts::{CmRDT, CvRDT, MVReg};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use serde_json::{json, Value};
use sync_protocol::{Dot, Register, ReplicaRecord, VersionVector, Write};

const FIELDS: usize = 20;
const RECORDS: usize = 200;

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

/// One field write, in both representations.
struct Op {
    field: usize,
    dot: Dot,
    value: Value,
    supersedes: Vec<Dot>,
    theirs: crdts::mvreg::Op<Value, u32>,
}

type TheirRecord = Vec<MVReg<Value, u32>>;

/// A record's history as the server receives it: device 1 fills every field, then devices
/// edit one to three fields from views they pulled at random earlier times.
fn history(rng: &mut Rng, devices: u32) -> Vec<Op> {
    let mut server: Vec<Register> = vec![Register::default(); FIELDS];
    let mut theirs: TheirRecord = vec![MVReg::new(); FIELDS];
    let mut views: Vec<(Vec<Register>, TheirRecord)> = (0..devices)
        .map(|_| (server.clone(), theirs.clone()))
        .collect();
    let mut seqs = vec![0u64; devices as usize];
    let mut ops = Vec::new();
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
        let dot = Dot::new(d as u32 + 1, seqs[d]);
        let fields: Vec<usize> = if e == 0 {
            (0..FIELDS).collect()
        } else {
            (0..1 + rng.below(3)).map(|_| rng.below(FIELDS)).collect()
        };
        for field in fields {
            let value = json!(format!(
                "value {e} of field {field} by device {}",
                dot.device
            ));
            let (view, their_view) = &mut views[d];
            let supersedes: Vec<Dot> = view[field].dots().collect();
            let op = their_view[field].write(
                value.clone(),
                their_view[field].read_ctx().derive_add_ctx(dot.device),
            );
            let write = Write::new(dot, value.clone(), &supersedes);
            view[field].apply(&|_| false, &write);
            their_view[field].apply(op.clone());
            server[field].apply(&|_| false, &write);
            theirs[field].apply(op.clone());
            ops.push(Op {
                field,
                dot,
                value,
                supersedes,
                theirs: op,
            });
        }
    }
    ops
}

fn apply_ours(ops: &[Op]) -> Vec<Register> {
    let mut record = vec![Register::default(); FIELDS];
    let mut seen = VersionVector::new();
    for (i, op) in ops.iter().enumerate() {
        let write = Write {
            dot: op.dot,
            value: op.value.clone(),
            supersedes: &op.supersedes,
            at: Some(i as u64),
        };
        record[op.field].apply(&seen, &write);
        seen.insert(op.dot);
    }
    record
}

fn apply_theirs(ops: &[Op]) -> TheirRecord {
    let mut record: TheirRecord = vec![MVReg::new(); FIELDS];
    for op in ops {
        record[op.field].apply(op.theirs.clone());
    }
    record
}

fn replica(ops: &[Op]) -> ReplicaRecord {
    let id = sync_protocol::RecordId::new_v7();
    let mut edit = sync_protocol::CheckedEdit {
        seq: 0,
        record: id,
        form: sync_protocol::FormId::parse("bench").unwrap(),
        version: 1,
        commune: sync_protocol::CommuneCode::parse("19753").unwrap(),
        fields: BTreeMap::new(),
    };
    let mut r = ReplicaRecord::from_edit(&edit);
    for (i, op) in ops.iter().enumerate() {
        edit.seq = op.dot.seq;
        edit.fields = BTreeMap::from([(
            format!("f{}", op.field),
            sync_protocol::FieldEdit {
                value: op.value.clone(),
                supersedes: op.supersedes.clone(),
            },
        )]);
        r.apply(op.dot.device, &edit, Some(i as u64));
    }
    r
}

fn bench(c: &mut Criterion) {
    let mut rng = Rng(20201130);
    for devices in [1u32, 5, 50] {
        let histories: Vec<Vec<Op>> = (0..RECORDS).map(|_| history(&mut rng, devices)).collect();
        // Metadata the server stores: one dot (12 bytes) and one server order (8) per value.
        let ours: Vec<Vec<Register>> = histories.iter().map(|h| apply_ours(h)).collect();
        let meta: usize = ours
            .iter()
            .flatten()
            .flat_map(|r| r.siblings())
            .map(|s| 12 + if s.at.is_some() { 8 } else { 0 })
            .sum();
        let theirs: Vec<TheirRecord> = histories.iter().map(|h| apply_theirs(h)).collect();
        let their_meta: usize = theirs
            .iter()
            .flatten()
            .map(|r| serde_json::to_vec(r).unwrap().len())
            .sum::<usize>();
        let values: usize = ours
            .iter()
            .flatten()
            .flat_map(|r| r.values())
            .map(|v| serde_json::to_vec(v).unwrap().len())
            .sum();
        let replica_meta: usize = histories.iter().map(|h| replica(h).metadata_bytes()).sum();
        let fields = (RECORDS * FIELDS) as f64;
        println!(
            "devices={devices}: server metadata {:.1} B/field; replica with per-field context {:.1} B/field; \
             crdts MVReg JSON {:.1} B/field (values alone {:.1} B/field)",
            meta as f64 / fields,
            replica_meta as f64 / fields,
            their_meta as f64 / fields,
            values as f64 / fields,
        );

        let mut group = c.benchmark_group(format!("apply-history/{devices}-devices"));
        group.throughput(Throughput::Elements(RECORDS as u64));
        group.bench_with_input(BenchmarkId::new("mam", devices), &histories, |b, hs| {
            b.iter(|| hs.iter().map(|h| apply_ours(h).len()).sum::<usize>())
        });
        group.bench_with_input(BenchmarkId::new("crdts", devices), &histories, |b, hs| {
            b.iter(|| hs.iter().map(|h| apply_theirs(h).len()).sum::<usize>())
        });
        group.finish();

        // State merge: two replicas that each saw half of the history.
        let halves: Vec<(ReplicaRecord, ReplicaRecord)> = histories
            .iter()
            .map(|h| {
                let (a, b): (Vec<&Op>, Vec<&Op>) = h.iter().partition(|op| op.dot.device % 2 == 1);
                let a: Vec<Op> = a.into_iter().map(clone_op).collect();
                let b: Vec<Op> = b.into_iter().map(clone_op).collect();
                (replica(&a), replica(&b))
            })
            .collect();
        let their_halves: Vec<(TheirRecord, TheirRecord)> = histories
            .iter()
            .map(|h| {
                let (a, b): (Vec<&Op>, Vec<&Op>) = h.iter().partition(|op| op.dot.device % 2 == 1);
                let a: Vec<Op> = a.into_iter().map(clone_op).collect();
                let b: Vec<Op> = b.into_iter().map(clone_op).collect();
                (apply_theirs(&a), apply_theirs(&b))
            })
            .collect();
        let mut group = c.benchmark_group(format!("merge-states/{devices}-devices"));
        group.throughput(Throughput::Elements(RECORDS as u64));
        group.bench_with_input(BenchmarkId::new("mam", devices), &halves, |b, hs| {
            b.iter(|| {
                hs.iter()
                    .map(|(x, y)| {
                        let mut x = x.clone();
                        x.merge(y);
                        x.fields.len()
                    })
                    .sum::<usize>()
            })
        });
        group.bench_with_input(
            BenchmarkId::new("crdts", devices),
            &their_halves,
            |b, hs| {
                b.iter(|| {
                    hs.iter()
                        .map(|(x, y)| {
                            let mut x = x.clone();
                            for (f, other) in x.iter_mut().zip(y) {
                                f.merge(other.clone());
                            }
                            x.len()
                        })
                        .sum::<usize>()
                })
            },
        );
        group.finish();
    }
}

fn clone_op(op: &Op) -> Op {
    Op {
        field: op.field,
        dot: op.dot,
        value: op.value.clone(),
        supersedes: op.supersedes.clone(),
        theirs: op.theirs.clone(),
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
