//! Rules that link two fields are checked against what the edit's author saw. A rule broken
//! only by merging two accepted edits refuses neither: the record is flagged, in conflict until
//! a person mends it.

use serde_json::json;
use sync_protocol::{RejectCode, SyncResponse};

use crate::harness::{Database, Server, COMMUNE};
use crate::office::{add_user, hidden, Office, PASSWORD};

pub async fn rules_broken_only_by_a_merge_flag_the_record(db: Database) {
    let server = Server::start(&db);
    let mut hoa = server.enroll("Hoa", &[COMMUNE]).await;
    let mut lan = server.enroll("Lan", &[COMMUNE]).await;
    let mut watcher = server.enroll("watcher", &[COMMUNE]).await;
    let id = hoa.create(
        COMMUNE,
        &[
            ("child_name", json!("Minh")),
            ("date_of_birth", json!("2020-01-15")),
            ("birth_registered", json!(true)),
            ("registration_date", json!("2020-02-01")),
        ],
    );
    hoa.sync().await;
    lan.sync().await;

    // Hoa corrects the birth date to the 25th, Lan the registration date to the 20th. Each is
    // right against what its author saw; together the registration precedes the birth.
    hoa.edit(id, &[("date_of_birth", json!("2020-01-25"))]);
    lan.edit(id, &[("registration_date", json!("2020-01-20"))]);
    for phone in [&mut hoa, &mut lan] {
        let responses: Vec<SyncResponse> = phone.sync().await;
        assert!(
            responses.iter().all(|r| r.rejected.is_empty()),
            "neither edit is refused: {responses:?}"
        );
    }
    watcher.sync().await;
    let record = watcher.view(id);
    assert_eq!(record.value("date_of_birth"), Some(&json!("2020-01-25")));
    assert_eq!(
        record.value("registration_date"),
        Some(&json!("2020-01-20"))
    );
    assert!(record.is_conflicted(), "{record:?}");
    assert_eq!(record.broken.len(), 1, "{record:?}");
    assert_eq!(
        (
            record.broken[0].field.as_str(),
            record.broken[0].rule.as_str()
        ),
        ("registration_date", "not_before")
    );

    // Hoa, who now sees both, cannot make it worse: the rule is hers to keep.
    hoa.sync().await;
    let seq = hoa.edit(id, &[("registration_date", json!("2020-01-10"))]);
    hoa.sync().await;
    let refused = hoa.client.rejected();
    let refused = refused.iter().find(|r| r.rejection.seq == seq).unwrap();
    assert_eq!(refused.rejection.code, RejectCode::InvalidValue);
    assert_eq!(refused.rejection.rule.as_deref(), Some("not_before"));
    hoa.client.dismiss_rejected(seq);

    // The district's queue lists it with the rule, and the officer mends it by typing the
    // right registration date: the flag goes and the record is no longer in conflict.
    add_user(&server, "hue", "district", "474");
    let mut office = Office::new(&server);
    assert_eq!(office.login("hue", PASSWORD).await.0, 303);
    let (status, queue) = office.get("/office/conflicts").await;
    assert_eq!(status, 200);
    assert!(queue.contains("Ngày đăng ký khai sinh"), "{queue}");
    assert!(
        queue.contains("Ngày đăng ký khai sinh (20/01/2020) không được trước Ngày sinh"),
        "{queue}"
    );
    let path = format!("/office/records/{id}");
    let (_, page) = office.get(&path).await;
    let csrf = hidden(&page, "csrf");
    let shown = hidden(&page, "shown");
    let response = office
        .post(
            &format!("{path}/settle"),
            &[
                ("csrf", &csrf),
                ("shown", &shown),
                ("pick:registration_date", "other"),
                ("other:registration_date", "2020-02-03"),
            ],
        )
        .await;
    assert_eq!(response.status(), 303, "{}", response.text().await.unwrap());
    watcher.sync().await;
    let record = watcher.view(id);
    assert!(record.broken.is_empty(), "{record:?}");
    assert!(!record.is_conflicted());
    assert_eq!(
        record.value("registration_date"),
        Some(&json!("2020-02-03"))
    );

    // The same for a rule that makes a field required: Lan, seeing the birth not registered,
    // clears the date; Hoa concurrently records the registration. Both stand, flagged.
    hoa.edit(id, &[("birth_registered", json!(false))]);
    hoa.sync().await;
    lan.sync().await;
    lan.edit(id, &[("registration_date", serde_json::Value::Null)]);
    hoa.edit(id, &[("birth_registered", json!(true))]);
    for phone in [&mut lan, &mut hoa] {
        let responses = phone.sync().await;
        assert!(
            responses.iter().all(|r| r.rejected.is_empty()),
            "{responses:?}"
        );
    }
    watcher.sync().await;
    let record = watcher.view(id);
    assert_eq!(record.value("birth_registered"), Some(&json!(true)));
    assert_eq!(
        record.value("registration_date"),
        Some(&serde_json::Value::Null)
    );
    assert_eq!(record.broken.len(), 1, "{record:?}");
    assert_eq!(record.broken[0].rule, "required_if");
    assert!(record.is_conflicted());
}
