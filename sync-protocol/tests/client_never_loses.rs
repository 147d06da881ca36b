//! The phone's state machine never loses an edit, whatever happens to its syncs: requests
//! lost on the way, responses lost on the way back, old requests replayed, small pages, small
//! batches. At the end every edit is on the server or listed as rejected on the phone, and
//! every phone shows what the server holds.

mod common;

use common::{for_seeds, ModelServer, Rng};
use serde_json::json;
use sync_protocol::{Client, CommuneCode, FormId, RecordId, SyncRequest};

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
    phone.apply_response(&server.sync(4, &phone.sync_request()));
    let mut restored = backup;
    restored.apply_response(&server.sync(4, &restored.sync_request()));
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
