//! CRDT laws of the field register and records, as seeded property tests, with `crdts::MVReg`
//! as the reference for the values a register holds.

mod common;

use std::collections::BTreeSet;

use common::{for_seeds, Rng};
use crdts::{CmRDT, CvRDT, MVReg};
use serde_json::{json, Value};
use sync_protocol::{
    CheckedEdit, CommuneCode, DeviceId, Dot, Field, FieldEdit, FormId, Record, RecordId,
    ReplicaRecord, VersionVector, Write,
};

/// One write as both implementations see it.
#[derive(Clone)]
struct Op {
    ours: (Dot, Value, Vec<Dot>),
    theirs: crdts::mvreg::Op<String, DeviceId>,
}

struct Device {
    id: DeviceId,
    seq: u64,
    ours: Field,
    theirs: MVReg<String, DeviceId>,
}

fn apply(device: &mut Device, op: &Op) {
    let (dot, value, supersedes) = &op.ours;
    device
        .ours
        .apply(Write::new(*dot, value.clone(), supersedes));
    device.theirs.apply(op.theirs.clone());
}

fn our_values(field: &Field) -> BTreeSet<String> {
    field
        .register
        .values()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

fn their_values(reg: &MVReg<String, DeviceId>) -> BTreeSet<String> {
    reg.read().val.into_iter().collect()
}

/// Devices write from stale views, exchange ops late, out of order and twice, and merge whole
/// states. Once every op has reached every device, all hold the same values, and the same
/// values as `crdts::MVReg` fed the same history.
fn random_history(seed: u64) {
    let mut rng = Rng::new(seed);
    let n = 2 + rng.below(5);
    let mut devices: Vec<Device> = (1..=n as DeviceId)
        .map(|id| Device {
            id,
            seq: 0,
            ours: Field::default(),
            theirs: MVReg::new(),
        })
        .collect();
    let mut log: Vec<Op> = Vec::new();
    for step in 0..60 {
        let d = rng.below(n);
        match rng.below(10) {
            0..=3 => {
                let device = &mut devices[d];
                // Seqs count edits to every record, so a field sees gaps.
                device.seq += 1 + rng.below(3) as u64;
                let value = format!("d{}-s{}-{step}", device.id, device.seq);
                let dot = Dot::new(device.id, device.seq);
                let supersedes: Vec<Dot> = device.ours.register.dots().collect();
                let theirs = device.theirs.write(
                    value.clone(),
                    device.theirs.read_ctx().derive_add_ctx(device.id),
                );
                let op = Op {
                    ours: (dot, json!(value), supersedes),
                    theirs,
                };
                apply(device, &op);
                log.push(op);
            }
            4..=7 if !log.is_empty() => {
                // Receive a few logged ops, any order, maybe again.
                for _ in 0..1 + rng.below(4) {
                    let op = log[rng.below(log.len())].clone();
                    apply(&mut devices[d], &op);
                }
            }
            _ => {
                let e = rng.below(n);
                let (ours, theirs) = (devices[e].ours.clone(), devices[e].theirs.clone());
                devices[d].ours.merge(&ours);
                devices[d].theirs.merge(theirs);
            }
        }
        for device in &devices {
            // Both agree that concurrent values are kept: never fewer than one value once
            // anything was written, and no value that was never written.
            assert!(device.ours.register.siblings().len() <= log.len());
        }
    }
    for device in &mut devices {
        let mut order: Vec<usize> = (0..log.len()).collect();
        rng.shuffle(&mut order);
        for i in order {
            apply(device, &log[i]);
        }
    }
    let expected = their_values(&devices[0].theirs);
    for device in &devices {
        assert_eq!(
            their_values(&device.theirs),
            expected,
            "crdts replicas diverged"
        );
        assert_eq!(
            our_values(&device.ours),
            expected,
            "device {} differs from MVReg",
            device.id
        );
        assert_eq!(
            device.ours.register, devices[0].ours.register,
            "replicas diverged"
        );
    }
}

#[test]
fn register_agrees_with_crdts_mvreg_and_converges() {
    for_seeds("register_agrees_with_crdts_mvreg", 500, random_history);
}

/// Under the server's delivery (a device's edits in order, views pulled from the server), the
/// server's register equals `crdts::MVReg` after every single edit, not only at the end.
#[test]
fn server_register_equals_mvreg_at_every_step() {
    for_seeds("server_register_equals_mvreg", 300, |seed| {
        let mut rng = Rng::new(seed);
        let n = 1 + rng.below(6) as DeviceId;
        let mut server = sync_protocol::Register::default();
        let mut server_seen = sync_protocol::VersionVector::new();
        let mut reference: MVReg<String, DeviceId> = MVReg::new();
        // Each device's view: what it last pulled, plus its own queued writes.
        let mut views: Vec<(sync_protocol::Register, MVReg<String, DeviceId>, Vec<Op>)> =
            (0..n).map(|_| Default::default()).collect();
        let mut seqs = vec![0u64; n as usize];
        for step in 0..80 {
            let d = rng.below(n as usize);
            match rng.below(3) {
                0 => {
                    seqs[d] += 1;
                    let dot = Dot::new(d as DeviceId + 1, seqs[d]);
                    let (view, ref_view, queue) = &mut views[d];
                    let value = format!("{dot:?}-{step}");
                    let supersedes: Vec<Dot> = view.dots().collect();
                    let theirs = ref_view.write(
                        value.clone(),
                        ref_view.read_ctx().derive_add_ctx(dot.device),
                    );
                    view.apply(&|_| false, Write::new(dot, json!(value), &supersedes));
                    ref_view.apply(theirs.clone());
                    queue.push(Op {
                        ours: (dot, json!(value), supersedes),
                        theirs,
                    });
                }
                1 => {
                    // Push: the server applies this device's queue in order.
                    let (_, _, queue) = &mut views[d];
                    for op in queue.drain(..) {
                        let (dot, value, supersedes) = &op.ours;
                        server.apply(&server_seen, Write::new(*dot, value.clone(), supersedes));
                        server_seen.insert(*dot);
                        reference.apply(op.theirs.clone());
                        let ours: BTreeSet<String> = server
                            .values()
                            .map(|v| v.as_str().unwrap().to_owned())
                            .collect();
                        assert_eq!(ours, their_values(&reference), "after {dot:?}");
                    }
                }
                _ => {
                    // Pull: the view becomes the server's state with the queue on top.
                    let (view, ref_view, queue) = &mut views[d];
                    *view = server.clone();
                    *ref_view = reference.clone();
                    for op in queue.iter() {
                        let (dot, value, supersedes) = &op.ours;
                        view.apply(&|_| false, Write::new(*dot, value.clone(), supersedes));
                        ref_view.apply(op.theirs.clone());
                    }
                }
            }
        }
    });
}

fn edit(seq: u64, record: RecordId, fields: &[(&str, Value, Vec<Dot>)]) -> CheckedEdit {
    CheckedEdit {
        seq,
        record,
        form: FormId::parse("birth-registration").unwrap(),
        version: 1,
        commune: CommuneCode::parse("19753").unwrap(),
        fields: fields
            .iter()
            .map(|(n, v, s)| {
                (
                    n.to_string(),
                    FieldEdit {
                        value: v.clone(),
                        supersedes: s.clone(),
                    },
                )
            })
            .collect(),
    }
}

/// Whole records: many fields, several devices; every interleaving, duplication and
/// reordering of the same edits, applied or merged, converges to one state. Merge is
/// idempotent and commutative.
#[test]
fn records_converge_under_any_order() {
    for_seeds("records_converge_under_any_order", 300, |seed| {
        let mut rng = Rng::new(seed);
        let id = RecordId::new_v7();
        let names = ["child_name", "sex", "date_of_birth", "village", "notes"];
        let devices = 2 + rng.below(4) as DeviceId;
        let mut views: Vec<ReplicaRecord> = Vec::new();
        let first = edit(1, id, &[("child_name", json!("A"), vec![])]);
        let mut log: Vec<(DeviceId, CheckedEdit)> = vec![(1, first.clone())];
        for _ in 0..devices {
            let mut v = ReplicaRecord::from_edit(&first);
            v.apply(1, first.clone());
            views.push(v);
        }
        let mut seqs = vec![1u64; devices as usize];
        for step in 0..40 {
            let d = rng.below(devices as usize);
            if rng.chance(60) {
                seqs[d] += 1;
                let device = d as DeviceId + 1;
                let view = views[d].to_record();
                let fields: Vec<(&str, Value, Vec<Dot>)> = (0..1 + rng.below(3))
                    .map(|_| {
                        let name = names[rng.below(names.len())];
                        (name, json!(format!("{device}:{step}")), view.dots(name))
                    })
                    .collect();
                let e = edit(seqs[d], id, &fields);
                views[d].apply(device, e.clone());
                log.push((device, e));
            } else {
                let other = views[rng.below(devices as usize)].clone();
                views[d].merge(&other);
            }
        }
        // Fresh replicas receive the log in different orders, with duplicates.
        let mut replicas = Vec::new();
        for _ in 0..3 {
            let mut order: Vec<usize> = (0..log.len()).chain(0..log.len() / 2).collect();
            rng.shuffle(&mut order);
            let mut r = ReplicaRecord::from_edit(&first);
            for i in order {
                let (device, e) = &log[i];
                r.apply(*device, e.clone());
            }
            replicas.push(r);
        }
        for r in &replicas[1..] {
            assert_eq!(r.to_record(), replicas[0].to_record());
        }
        // The devices' own views, merged together in any order, reach the same state.
        let mut a = views[0].clone();
        for v in views.iter().rev() {
            a.merge(v);
        }
        let mut b = views[views.len() - 1].clone();
        for v in &views {
            b.merge(v);
        }
        assert_eq!(a.to_record(), b.to_record(), "merge is not commutative");
        let again = {
            let mut x = a.clone();
            x.merge(&a);
            x
        };
        assert_eq!(again, a, "merge is not idempotent");
        for (device, e) in &log {
            a.apply(*device, e.clone());
        }
        assert_eq!(a.to_record(), replicas[0].to_record());
    });
}

#[test]
fn different_fields_never_conflict() {
    let id = RecordId::new_v7();
    let create = edit(1, id, &[("child_name", json!("Lan"), vec![])]);
    let mut r = ReplicaRecord::from_edit(&create);
    r.apply(1, create.clone());
    let a = edit(2, id, &[("village", json!("Thôn 1"), vec![])]);
    let b = edit(1, id, &[("sex", json!("f"), vec![])]);
    r.apply(1, a.clone());
    r.apply(2, b.clone());
    let record = r.to_record();
    assert!(!record.is_conflicted());
    assert_eq!(record.value("village"), Some(&json!("Thôn 1")));
    assert_eq!(record.value("sex"), Some(&json!("f")));
}

#[test]
fn concurrent_edits_keep_both_until_resolved() {
    // As the server applies them: "seen" is the device table.
    let id = RecordId::new_v7();
    let mut seen = VersionVector::new();
    let mut apply = |record: &mut Record, device: DeviceId, e: CheckedEdit| {
        let dot = Dot::new(device, e.seq);
        record.apply(device, e, &seen);
        seen.insert(dot);
    };
    let create = edit(1, id, &[("child_name", json!("Lan"), vec![])]);
    let base = Dot::new(1, 1);
    let mut r = Record::from_edit(&create);
    apply(&mut r, 1, create);
    apply(
        &mut r,
        3,
        edit(9, id, &[("child_name", json!("Lang"), vec![base])]),
    );
    apply(
        &mut r,
        2,
        edit(5, id, &[("child_name", json!("Lân"), vec![base])]),
    );
    assert_eq!(r.conflicted_fields().collect::<Vec<_>>(), ["child_name"]);
    // Reports use the value the server stored last, whatever the dots say.
    assert_eq!(r.value("child_name"), Some(&json!("Lân")));
    let all = r.dots("child_name");
    apply(&mut r, 1, edit(2, id, &[("child_name", json!("Lân"), all)]));
    assert!(!r.is_conflicted());
    assert_eq!(
        r.fields["child_name"].values().collect::<Vec<_>>(),
        [&json!("Lân")]
    );
}

#[test]
fn delete_against_edit_is_a_conflict() {
    use sync_protocol::Client;
    let id = RecordId::new_v7();
    let mut a = Client::new(1);
    let form = FormId::parse("birth-registration").unwrap();
    let commune = CommuneCode::parse("19753").unwrap();
    a.create(
        id,
        &form,
        1,
        &commune,
        [("child_name", json!("Lan")), ("notes", json!("x"))],
    );
    let created = a.sync_request().push[0].check().unwrap();
    // Both phones hold the record; one deletes it, the other edits a field and adds one.
    let mut b = ReplicaRecord::from_edit(&created);
    b.apply(1, created.clone());
    let mut deleter = Client::new(1);
    deleter.create(
        id,
        &form,
        1,
        &commune,
        [("child_name", json!("Lan")), ("notes", json!("x"))],
    );
    deleter.delete(id);
    let delete = deleter.sync_request().push[1].check().unwrap();
    let edit_notes = edit(
        1,
        id,
        &[("notes", json!("moved away"), vec![Dot::new(1, 1)])],
    );
    let edit_new = edit(2, id, &[("village", json!("Thôn 3"), vec![])]);
    for (orders, expect_field_conflict) in [(0, true), (1, true)] {
        let mut r = b.clone();
        if orders == 0 {
            r.apply(1, delete.clone());
            r.apply(2, edit_notes.clone());
        } else {
            r.apply(2, edit_notes.clone());
            r.apply(1, delete.clone());
        }
        let record = r.to_record();
        assert!(record.is_deleted());
        assert_eq!(record.fields["notes"].is_conflict(), expect_field_conflict);
        assert!(record.is_conflicted(), "delete vs edit must be visible");
    }
    // An edit to a field the deleter never saw: no sibling conflict, still flagged.
    let mut r = b.clone();
    r.apply(1, delete.clone());
    r.apply(2, edit_new.clone());
    let record = r.to_record();
    assert!(record.has_delete_conflict());
    assert_eq!(record.value("village"), Some(&json!("Thôn 3")));
}

#[test]
fn repeated_and_superseded_writes_change_nothing() {
    let mut f = Field::default();
    let w1 = Write::new(Dot::new(1, 1), json!(1), &[]);
    let s = [Dot::new(1, 1)];
    let w2 = Write::new(Dot::new(2, 1), json!(2), &s);
    // The superseding write first, then the superseded one (late delivery): it stays gone.
    assert!(f.apply(w2.clone()));
    assert!(!f.apply(w1));
    assert!(!f.apply(w2));
    assert_eq!(f.register.values().collect::<Vec<_>>(), [&json!(2)]);
}
