//! The record's commune is a register: a move is not undone by an edit made from an older
//! view, two concurrent moves are a conflict a person settles, and pulls and evictions follow
//! the commune the record has.

use serde_json::json;
use sync_protocol::{SyncResponse, COMMUNE_FIELD};

use sync_protocol::{Record, RecordId};

use crate::harness::{commune, Database, Phone, Server, COMMUNE, OTHER_COMMUNE};

/// A third ward of the same city.
const THIRD_COMMUNE: &str = "19777";

pub async fn moves_merge_as_a_register(db: Database) {
    let server = Server::start(&db);
    let all = [COMMUNE, OTHER_COMMUNE, THIRD_COMMUNE];
    let mut officer = server.enroll("officer", &all).await;
    let mut nurse = server.enroll("nurse", &all).await;
    let mut hoa = server.enroll("Hoa", &[COMMUNE]).await;
    // Reads what the server holds: a phone of the whole city that never writes.
    let mut watcher = server.enroll("watcher", &all).await;
    let id = officer.create(COMMUNE, &[("child_name", json!("Lan"))]);
    officer.sync().await;
    nurse.sync().await;
    hoa.sync().await;

    // The family moved: the officer files the record under Kim Long the way a v1 phone does,
    // by naming the other ward in an ordinary edit.
    let seq = officer.edit(id, &[("notes", json!("moved to Kim Long"))]);
    let mut request = officer.client.sync_request();
    request.push[0].commune = OTHER_COMMUNE.into();
    let response: SyncResponse = officer.send(&request).await.json().await.unwrap();
    assert_eq!(response.acked_through, seq, "{:?}", response.rejected);
    let pulled = response.records.iter().find(|r| r.id == id).unwrap();
    assert_eq!(pulled.commune.as_str(), OTHER_COMMUNE, "{pulled:?}");
    officer.client.apply_response(&response);
    assert_eq!(officer.view(id).commune.as_str(), OTHER_COMMUNE);

    // The nurse, who had not pulled since, writes the registration date: her edit names Thuận
    // Lộc, where she saw the record. It is an edit, not a move back.
    nurse.edit(id, &[("registration_date", json!("2020-02-01"))]);
    let responses = nurse.sync().await;
    assert!(
        responses.iter().all(|r| r.rejected.is_empty()),
        "{responses:?}"
    );
    let record = stored(&mut watcher, id).await;
    assert_eq!(record.commune.as_str(), OTHER_COMMUNE, "the move stands");
    assert_eq!(
        record.value("registration_date"),
        Some(&json!("2020-02-01"))
    );
    assert_eq!(record.value("notes"), Some(&json!("moved to Kim Long")));
    assert!(!record.is_conflicted(), "{record:?}");
    // Hoa covers Thuận Lộc only: the record left her phone.
    let responses = hoa.sync().await;
    assert!(
        responses.iter().any(|r| r.evicted.contains(&id)),
        "{responses:?}"
    );
    assert!(hoa.client.view(id).is_none());

    // Two concurrent moves from the same view: the officer finds the family back in Thuận Lộc,
    // the nurse finds them in Vỹ Dạ. Neither move is lost: the commune is in conflict.
    officer.sync().await;
    nurse.sync().await;
    officer
        .client
        .move_to(id, &commune(COMMUNE))
        .expect("the officer holds the record");
    officer.sync().await;
    let seq = nurse.edit(id, &[("notes", json!("living in Vỹ Dạ now"))]);
    let mut request = nurse.client.sync_request();
    let at = request.push.iter().position(|e| e.seq == seq).unwrap();
    request.push[at].commune = THIRD_COMMUNE.into();
    let response: SyncResponse = nurse.send(&request).await.json().await.unwrap();
    assert!(response.rejected.is_empty(), "{:?}", response.rejected);
    nurse.client.apply_response(&response);
    let record = stored(&mut watcher, id).await;
    let mut held: Vec<String> = record.fields[COMMUNE_FIELD]
        .values()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    held.sort();
    assert_eq!(held, [COMMUNE, THIRD_COMMUNE], "{record:?}");
    assert!(record.is_conflicted());

    // The record sits in its provisional commune (the last move applied) while in conflict.
    assert_eq!(record.commune.as_str(), THIRD_COMMUNE);
    hoa.sync().await;
    assert!(hoa.client.view(id).is_none(), "Vỹ Dạ is not Hoa's");

    // The officer settles it: Thuận Lộc, superseding both moves shown. The record comes back to
    // Hoa's phone, settled, with everything written along the way.
    officer.sync().await;
    assert!(officer.view(id).is_conflicted());
    officer.client.move_to(id, &commune(COMMUNE)).unwrap();
    let responses = officer.sync().await;
    assert!(
        responses.iter().all(|r| r.rejected.is_empty()),
        "{responses:?}"
    );
    let record = stored(&mut watcher, id).await;
    assert_eq!(record.commune.as_str(), COMMUNE);
    assert!(!record.is_conflicted(), "{record:?}");
    hoa.sync().await;
    let back = hoa.view(id);
    assert_eq!(back.commune.as_str(), COMMUNE);
    assert_eq!(back.value("registration_date"), Some(&json!("2020-02-01")));
    assert_eq!(back.value("notes"), Some(&json!("living in Vỹ Dạ now")));

    // A move must name its own commune: a `_commune` value that is not the edit's is refused.
    let seq = officer.client.move_to(id, &commune(OTHER_COMMUNE)).unwrap();
    let mut request = officer.client.sync_request();
    let at = request.push.iter().position(|e| e.seq == seq).unwrap();
    request.push[at].commune = THIRD_COMMUNE.into();
    let response: SyncResponse = officer.send(&request).await.json().await.unwrap();
    let refused = response.rejected.iter().find(|r| r.seq == seq).unwrap();
    assert_eq!(refused.field.as_deref(), Some(COMMUNE_FIELD), "{refused:?}");
    assert_eq!(stored(&mut watcher, id).await.commune.as_str(), COMMUNE);
}

/// The record as the server holds it, pulled by a phone that never writes.
async fn stored(watcher: &mut Phone, id: RecordId) -> Record {
    watcher.sync().await;
    watcher.view(id)
}
