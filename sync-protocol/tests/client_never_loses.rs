//! The phone's state machine never loses an edit, whatever happens to its syncs: requests
//! lost on the way, responses lost on the way back, old requests replayed, small pages, small
//! batches. At the end every edit is on the server or listed as rejected on the phone, and
//! every phone shows what the server holds.

mod common;

use common::{for_seeds, ModelServer, Rng};
use serde_json::json;
use sync_protocol::{Client, CommuneCode, FormId, RecordId, RejectCode, SyncRequest};

#[test]
fn client_never_loses_a_pending_edit() {
    for_seeds("client_never_loses_a_pending_edit", 200, |seed| {
        let mut rng = Rng::new(seed);
        let mut server = ModelServer::default();
        let form = FormId::parse("nutrition").unwrap();
        let commune = CommuneCode::parse("19753").unwrap();
        let n = 2 + rng.below(3);
        let mut phones: Vec<Client> = (1..=n as u32)
            .map(|d| Client::new(d).with_limits(1 + rng.below(4), 200 + rng.below(800) as u64))
            .collect();
        // Every edit each phone ever made: (device, seq, was it a bad one).
        let mut made: Vec<(u32, u64, bool)> = Vec::new();
        let mut old_requests: Vec<(u32, SyncRequest)> = Vec::new();
        let mut ids: Vec<RecordId> = Vec::new();
        for step in 0..120 {
            let p = rng.below(n);
            let device = phones[p].device();
            match rng.below(8) {
                0 | 1 => {
                    let id = RecordId::new_v7();
                    ids.push(id);
                    let seq =
                        phones[p].create(id, &form, 1, &commune, [("weight_kg", json!(step))]);
                    made.push((device, seq, false));
                }
                2 | 3 if !ids.is_empty() => {
                    let id = ids[rng.below(ids.len())];
                    let name = ["weight_kg", "height_cm", "notes"][rng.below(3)];
                    if let Some(seq) =
                        phones[p].edit(id, [(name, json!(format!("{device}@{step}")))])
                    {
                        made.push((device, seq, false));
                    }
                }
                4 => {
                    // A malformed edit (bad field name): must come back as rejected, not vanish.
                    let id = RecordId::new_v7();
                    let seq = phones[p].create(id, &form, 1, &commune, [("Bad Name", json!(1))]);
                    made.push((device, seq, true));
                }
                _ => {
                    let request = phones[p].sync_request();
                    old_requests.push((device, request.clone()));
                    match rng.below(10) {
                        // The request never reaches the server.
                        0 => {}
                        // The server applies it but the response is lost.
                        1 => {
                            server.sync(device, &request);
                        }
                        // An old request of some phone arrives again (a retry from long ago);
                        // its connection is gone, so nobody reads the response.
                        2 => {
                            let (d, old) = &old_requests[rng.below(old_requests.len())];
                            server.sync(*d, old);
                        }
                        // The phone retries the same request after a timeout: the server sees
                        // it twice and the phone reads the second answer.
                        3 => {
                            server.sync(device, &request);
                            let response = server.sync(device, &request);
                            phones[p].apply_response(&response);
                        }
                        _ => {
                            let response = server.sync(device, &request);
                            phones[p].apply_response(&response);
                        }
                    }
                }
            }
            // The invariant at every step: each edit is pending, rejected on the phone, or
            // acknowledged and held by the server.
            for &(device, seq, _) in &made {
                let phone = &phones[device as usize - 1];
                let pending = phone.pending().iter().any(|e| e.seq == seq);
                let rejected = phone.rejected().iter().any(|r| r.edit.seq == seq);
                let on_server = server.edits.contains_key(&(device, seq));
                assert!(
                    pending || rejected || on_server,
                    "edit ({device}, {seq}) lost at step {step}"
                );
            }
        }
        // Sync everyone until quiet; twice round so each phone sees the others' last edits.
        for _ in 0..2 {
            for phone in &mut phones {
                loop {
                    let response = server.sync(phone.device(), &phone.sync_request());
                    phone.apply_response(&response);
                    if !response.more && phone.pending().is_empty() {
                        break;
                    }
                }
            }
        }
        for &(device, seq, bad) in &made {
            let phone = &phones[device as usize - 1];
            assert!(phone.pending().is_empty());
            let rejected = phone.rejected().iter().any(|r| r.edit.seq == seq);
            assert_eq!(rejected, bad, "edit ({device}, {seq}) rejected: {rejected}");
            assert!(
                server.edits.contains_key(&(device, seq)),
                "edit ({device}, {seq}) never arrived"
            );
        }
        let state = server.state();
        for phone in &phones {
            let shown: Vec<_> = phone.records();
            assert_eq!(
                shown,
                state.values().cloned().collect::<Vec<_>>(),
                "phone {} differs",
                phone.device()
            );
        }
    });
}

/// A phone restored from an old backup must not reuse a seq the server already consumed.
#[test]
fn restored_phone_skips_consumed_seqs() {
    let mut server = ModelServer::default();
    let form = FormId::parse("nutrition").unwrap();
    let commune = CommuneCode::parse("19753").unwrap();
    let mut phone = Client::new(4);
    let backup = phone.clone();
    for i in 0..3 {
        phone.create(
            RecordId::new_v7(),
            &form,
            1,
            &commune,
            [("weight_kg", json!(i))],
        );
    }
    let request = phone.sync_request();
    phone.apply_response(&server.sync(4, &request));
    let mut restored = backup;
    let request = restored.sync_request();
    restored.apply_response(&server.sync(4, &request));
    let seq = restored.create(
        RecordId::new_v7(),
        &form,
        1,
        &commune,
        [("weight_kg", json!(9))],
    );
    assert_eq!(seq, 4);
    let response = server.sync(4, &restored.sync_request());
    assert!(response.rejected.is_empty());
    assert_eq!(response.acked_through, 4);
}

/// A phone restored from an old backup that edits before it syncs: its edits reuse seqs of the
/// history the server holds. It takes a successor number and replays them all, in order, so a
/// field written "first", "second", "third" ends as "third", and the other history's values
/// stay as they were.
#[test]
fn restored_phone_takes_a_successor_and_loses_nothing() {
    let mut server = ModelServer::default();
    let form = FormId::parse("nutrition").unwrap();
    let commune = CommuneCode::parse("19753").unwrap();
    let mut phone = Client::new(4);
    let shared = RecordId::new_v7();
    phone.create(shared, &form, 1, &commune, [("weight_kg", json!(1))]);
    let request = phone.sync_request();
    phone.apply_response(&server.sync(4, &request));
    let backup = phone.clone();
    // The original goes on: seqs 2 and 3 reach the server.
    let mine = RecordId::new_v7();
    phone.create(mine, &form, 1, &commune, [("weight_kg", json!(2))]);
    phone.edit(shared, [("weight_kg", json!(3))]);
    let request = phone.sync_request();
    phone.apply_response(&server.sync(4, &request));
    assert_eq!(server.seen.get(4), 3);

    // The restored copy edits offline: seqs 2, 3, 4, straddling the server's last seq.
    let mut restored = backup;
    let other = RecordId::new_v7();
    restored.create(other, &form, 1, &commune, [("note", json!("first"))]);
    restored.edit(other, [("note", json!("second"))]);
    restored.edit(other, [("note", json!("third"))]);
    let request = restored.sync_request();
    let response = server.sync(4, &request);
    assert_eq!(
        response.acked_through, 3,
        "nothing after a reused seq is applied"
    );
    assert!(response
        .rejected
        .iter()
        .all(|r| r.code == RejectCode::SeqReused));
    restored.apply_response(&response);
    assert!(restored.successor_needed());
    assert_eq!(restored.pending().len(), 3, "every edit stays pending");
    let successor = server.successor();
    restored.adopt_successor(successor);
    assert_eq!(restored.device(), successor);
    for _ in 0..5 {
        let request = restored.sync_request();
        let response = server.sync(successor, &request);
        restored.apply_response(&response);
    }
    assert!(restored.pending().is_empty() && restored.rejected().is_empty());
    let state = server.state();
    assert_eq!(state[&other].value("note"), Some(&json!("third")));
    assert!(!state[&other].is_conflicted());
    assert_eq!(state[&mine].value("weight_kg"), Some(&json!(2)));
    assert_eq!(state[&shared].value("weight_kg"), Some(&json!(3)));
}

/// A draft opened on a record, saved after the record left the phone (a server restored from
/// a backup made before the record, whose pull starts over without it): the draft still
/// becomes an edit of that record, superseding exactly what it showed, and reaches a server
/// that has the record.
#[test]
fn a_draft_saved_after_its_record_left_the_phone_is_kept() {
    let mut server = ModelServer::default();
    let form = FormId::parse("nutrition").unwrap();
    let commune = CommuneCode::parse("19753").unwrap();
    let (mut maker, mut phone) = (Client::new(1), Client::new(2));
    let id = RecordId::new_v7();
    maker.create(id, &form, 1, &commune, [("notes", json!("first"))]);
    let response = server.sync(1, &maker.sync_request());
    maker.apply_response(&response);
    let response = server.sync(2, &phone.sync_request());
    phone.apply_response(&response);
    let opened = phone.view(id).expect("the phone pulled the record");
    let shown = opened.dots("notes");

    let mut restored = ModelServer::default();
    let mut response = restored.sync(2, &phone.sync_request());
    response.reset = true;
    phone.apply_response(&response);
    assert!(phone.view(id).is_none(), "the pull started over without it");

    let seq = phone.edit_from(&opened, [("notes", json!("second"), shown.clone())]);
    let edit = phone
        .pending()
        .iter()
        .find(|e| e.seq == seq)
        .expect("queued");
    assert_eq!(edit.record, id.to_string());
    assert_eq!(edit.fields["notes"].supersedes, shown);
    let response = server.sync(2, &phone.sync_request());
    phone.apply_response(&response);
    assert!(phone.pending().is_empty() && phone.rejected().is_empty());
    let notes: Vec<_> = server.state()[&id].fields["notes"]
        .values()
        .cloned()
        .collect();
    assert_eq!(notes, [json!("second")]);
}
