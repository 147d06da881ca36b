//! End to end: real `mam` processes on port 0, simulated phones over real HTTP. Every story
//! runs on SQLite and on PostgreSQL (`MAM_TEST_DATABASE_URL`).

mod attachments;
mod attacks;
mod browser;
mod built_in;
mod deploy;
mod edit_log;
mod field_day;
mod forms;
mod harness;
mod histories;
mod idle;
mod indicators;
mod linked_rules;
mod moves;
mod odk_engine;
mod office;
mod openrosa;
mod phone_app;
mod recovery;
mod upgrade;
#[path = "../../sync-protocol/tests/who_oracle/mod.rs"]
mod who_oracle;

use std::io::Write;
use std::time::Duration;

use attachments::attachments_arrive_in_resumable_chunks;
use attacks::{
    areas_outside_scope_are_not_found, clients_are_rate_limited, metrics_stay_off_the_public_port,
    redirects_stay_on_this_server, refusals_belong_to_the_phone_that_sent_them,
    seq_zero_has_its_own_code, sign_in_bursts_hold,
};
use built_in::serve_runs_in_an_empty_folder_on_built_in_schemas;
use edit_log::an_earlier_edit_log_is_carried_over;
use field_day::{
    commands_end_quietly_on_a_closed_pipe, outcomes_not_yet_known_are_pending,
    reports_an_office_can_send,
};
use forms::{
    commune_must_exist_on_the_collection_date, derived_fields_follow_the_edits,
    growth_scores_follow_todays_rules, invalid_values_are_refused_in_both_languages_and_kept,
    phones_fetch_forms_by_manifest_and_etag, published_versions_only_grow_compatibly,
    xlsform_imports_the_common_subset_and_names_the_rest,
};
use harness::{Backend, Database, Server, COMMUNE, OTHER_COMMUNE};
use histories::random_histories_lose_nothing;
use idle::idle_syncs_write_nothing;
use indicators::indicators_follow_every_edit_and_equal_a_rebuild;
use linked_rules::rules_broken_only_by_a_merge_flag_the_record;
use moves::moves_merge_as_a_register;
use office::{
    long_exports_and_lists_read_in_chunks, office_accounts_are_scoped_and_guarded,
    office_in_a_browser, office_pages_fit_a_phone, settles_supersede_only_what_the_page_showed,
};
use openrosa::{
    a_resend_after_a_crash_is_applied_once, odk_collect_follows_its_sequence,
    odks_engine_fills_what_mam_serves, offline_entities_merge_field_by_field,
};
use recovery::{
    a_database_on_a_younger_cluster_numbers_above_what_it_holds,
    a_rebuild_racing_pushes_loses_no_push, a_restored_phone_takes_a_successor_and_loses_nothing,
    a_restored_server_gets_back_what_phones_kept, office_settles_after_a_restore_are_kept,
    two_edits_under_one_seq_are_refused_and_kept,
};
use serde_json::{json, Value};
use sync_protocol::{Record, RecordId, RejectCode, SyncRequest, SyncResponse};
use upgrade::a_database_of_the_release_before_opens_and_serves_the_same;

/// Runs one story on both backends, as two tests.
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                if let Some(db) = super::Database::fresh(super::Backend::Sqlite).await {
                    super::$name(db).await;
                }
            })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                if let Some(db) = super::Database::fresh(super::Backend::Postgres).await {
                    super::$name(db).await;
                }
            })*
        }
    };
}

both_backends!(
    idle_syncs_write_nothing,
    a_database_of_the_release_before_opens_and_serves_the_same,
    a_resend_after_a_crash_is_applied_once,
    odk_collect_follows_its_sequence,
    offline_entities_merge_field_by_field,
    attachments_arrive_in_resumable_chunks,
    offline_creation_reaches_every_phone,
    concurrent_edits_to_one_field_conflict_then_resolve,
    different_fields_merge,
    delete_against_edit_is_kept_as_a_conflict,
    replayed_requests_change_nothing,
    gaps_wait_and_reused_seqs_are_refused,
    other_communes_see_nothing_and_cannot_write,
    revoked_phone_is_refused,
    a_record_that_moves_away_is_evicted,
    moves_merge_as_a_register,
    redirects_stay_on_this_server,
    sign_in_bursts_hold,
    clients_are_rate_limited,
    refusals_belong_to_the_phone_that_sent_them,
    areas_outside_scope_are_not_found,
    metrics_stay_off_the_public_port,
    seq_zero_has_its_own_code,
    outcomes_not_yet_known_are_pending,
    commands_end_quietly_on_a_closed_pipe,
    reports_an_office_can_send,
    rules_broken_only_by_a_merge_flag_the_record,
    pulls_page_by_max_bytes,
    http_hygiene,
    nothing_acknowledged_is_lost_on_sigkill,
    concurrent_pushers_never_make_a_puller_skip,
    sigterm_drains_in_flight_syncs,
    invalid_values_are_refused_in_both_languages_and_kept,
    derived_fields_follow_the_edits,
    growth_scores_follow_todays_rules,
    commune_must_exist_on_the_collection_date,
    phones_fetch_forms_by_manifest_and_etag,
    published_versions_only_grow_compatibly,
    xlsform_imports_the_common_subset_and_names_the_rest,
    indicators_follow_every_edit_and_equal_a_rebuild,
    office_accounts_are_scoped_and_guarded,
    settles_supersede_only_what_the_page_showed,
    long_exports_and_lists_read_in_chunks,
    an_earlier_edit_log_is_carried_over,
    bench_ingest_runs_in_rounds,
    bench_fleet_checks_what_it_measured,
    two_edits_under_one_seq_are_refused_and_kept,
    a_restored_phone_takes_a_successor_and_loses_nothing,
    a_restored_server_gets_back_what_phones_kept,
    office_settles_after_a_restore_are_kept,
    a_rebuild_racing_pushes_loses_no_push,
    random_histories_lose_nothing,
    serve_runs_in_an_empty_folder_on_built_in_schemas,
);

/// PostgreSQL alone numbers changes from its transaction ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_on_a_younger_cluster_numbers_above_what_it_holds() {
    if let Some(db) = Database::fresh(Backend::Postgres).await {
        a_database_on_a_younger_cluster_numbers_above_what_it_holds(db).await;
    }
}

/// A transaction left open in Mầm's database (a tool's session, an older push still running)
/// holds every cursor below it. What is committed meanwhile still reaches the phones in the
/// sync that follows: a record edited again, whose row holds only its newer version, and a
/// new record, on a phone that has everything and on one pulling from the start. No sync
/// asks for more while it runs, and once it ends the cursors move on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_long_transaction_hides_nothing_committed() {
    use sqlx::{Connection, Executor};
    let Some(db) = Database::fresh(Backend::Postgres).await else {
        return;
    };
    let server = Server::start(&db);
    let mut a = server.enroll("Hoa", &[COMMUNE]).await;
    let mut b = server.enroll("Lan", &[COMMUNE]).await;
    let old = a.create(COMMUNE, &[("child_name", json!("Trước"))]);
    a.sync().await;
    b.sync().await;
    let before = b.client.cursor();

    let mut side = sqlx::PgConnection::connect(db.url().unwrap())
        .await
        .unwrap();
    side.execute("BEGIN").await.unwrap();
    side.execute("SELECT pg_current_xact_id()").await.unwrap();

    a.edit(old, &[("child_name", json!("Sửa lại"))]);
    let new = a.create(COMMUNE, &[("child_name", json!("Mới"))]);
    a.sync().await;
    let responses = b.sync().await;
    assert_eq!(responses.len(), 1, "one request, asking for no more");
    assert_eq!(b.view(old).value("child_name"), Some(&json!("Sửa lại")));
    assert_eq!(b.view(new).value("child_name"), Some(&json!("Mới")));
    assert_eq!(
        b.client.cursor(),
        before,
        "the cursor waits below the open transaction"
    );
    let mut c = server.enroll("Minh", &[COMMUNE]).await;
    c.sync().await;
    assert_eq!(
        c.client.records().len(),
        2,
        "a phone pulling from the start"
    );
    assert_eq!(c.view(old).value("child_name"), Some(&json!("Sửa lại")));

    side.execute("ROLLBACK").await.unwrap();
    b.sync().await;
    assert!(
        b.client.cursor() > before,
        "the cursor moves on once it ends"
    );
    assert_eq!(b.client.records(), c.client.records());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phone_app_protocol_matches_the_server() {
    phone_app::phone_protocol_matches_the_server().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phone_app_in_headless_chromium() {
    phone_app::phone_app_works_offline_and_syncs().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phone_app_protocol_follows_the_reference_client() {
    phone_app::phone_protocol_follows_the_reference_client().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phone_app_drafts_write_only_what_the_person_changed() {
    phone_app::phone_drafts_write_only_what_the_person_changed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phone_app_draft_outlives_a_restored_server() {
    phone_app::phone_draft_outlives_a_restored_server().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phone_app_two_tabs_keep_each_others_edits() {
    phone_app::phone_two_tabs_keep_each_others_edits().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewed_certificates_are_served_without_a_restart() {
    field_day::renewed_certificates_are_served_without_a_restart().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phone_app_works_offline_over_https_from_a_network_name() {
    phone_app::phone_app_works_offline_over_https_from_a_network_name().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phone_app_form_shows_every_problem_under_its_field() {
    phone_app::phone_form_shows_every_problem_under_its_field().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phone_app_list_searches_filters_and_discards_drafts() {
    phone_app::phone_list_searches_filters_and_discards_drafts().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phone_app_list_pages_a_big_commune() {
    phone_app::phone_list_pages_a_big_commune().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phone_app_first_sync_takes_bigger_pages() {
    phone_app::phone_first_sync_takes_bigger_pages().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phone_app_village_is_a_choice_with_other() {
    phone_app::phone_village_is_a_choice_with_other().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phone_app_form_in_sections_goes_page_by_page() {
    phone_app::phone_form_in_sections_goes_page_by_page().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phone_app_scores_children_as_who_does() {
    phone_app::phone_scores_children_as_who_does().await;
}

#[test]
fn xlsform_corpus_imports_without_a_crash() {
    forms::xlsform_corpus_imports_without_a_crash();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attachments_live_in_an_object_store() {
    attachments::attachments_live_in_an_object_store().await;
}

#[test]
fn xlsform_choices_from_a_file_and_ranks() {
    forms::xlsform_choices_from_a_file_and_ranks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odks_engine_fills_and_sends_what_mam_serves() {
    if let Some(db) = Database::fresh(Backend::Sqlite).await {
        odks_engine_fills_what_mam_serves(db).await;
    }
}

#[test]
fn systemd_units_run_real_commands() {
    deploy::systemd_units_run_real_commands();
}

#[test]
fn applied_migrations_are_never_edited() {
    upgrade::applied_migrations_are_never_edited();
}

#[test]
fn xlsform_expressions_agree_with_odks_engine() {
    odk_engine::expressions_agree_with_odks_engine(odk_engine::Source::Pyxform);
}

/// The XForms ODK Collect gets from Mầm mean what Mầm's forms mean: ODK's engine on them
/// agrees with Mầm on every question of the corpus.
#[test]
fn served_xforms_agree_with_odks_engine() {
    odk_engine::expressions_agree_with_odks_engine(odk_engine::Source::Mam);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phone_app_photo_and_place_survive_2g() {
    phone_app::phone_photo_and_place_survive_2g().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phone_app_fills_an_imported_form() {
    phone_app::phone_fills_an_imported_form().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phone_app_reference_is_a_picker() {
    phone_app::phone_reference_is_a_picker().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phone_app_revoked_sets_aside_and_enrols_again() {
    phone_app::revoked_phone_sets_aside_and_enrols_again().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phone_app_takes_a_successor_when_its_seqs_were_used() {
    phone_app::phone_takes_a_successor_when_its_seqs_were_used().await;
}

/// The browser story runs once, on SQLite: the pages read the store through the calls the
/// story above checks on both backends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn office_pages_in_headless_chromium() {
    if let Some(db) = Database::fresh(Backend::Sqlite).await {
        office_in_a_browser(db).await;
    }
}

/// The office at a phone's width, once, on SQLite.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn office_pages_on_a_phone_in_headless_chromium() {
    if let Some(db) = Database::fresh(Backend::Sqlite).await {
        office_pages_fit_a_phone(db).await;
    }
}

/// The README's walkthrough holds: the phone it enrols pushes the edit it shows, which is
/// accepted, and the push without `sex` is refused as the README says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_sync_example_is_what_the_server_answers() {
    let Some(db) = Database::fresh(Backend::Sqlite).await else {
        return;
    };
    let readme = std::fs::read_to_string(harness::repo_root().join("README.md")).unwrap();
    let section = &readme[readme
        .find("## Enrolling a phone and syncing, with curl")
        .expect("the README's curl section")..];
    let commune = section
        .split("--commune ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the enrol command names a commune");
    let sync = &section[section.find("/v1/sync").expect("the sync example")..];
    let body = &sync[sync.find("-d '").expect("the sync body") + 4..];
    let body = &body[..body.find('\'').expect("the body's closing quote")];
    let answer = &sync[sync
        .find("{\"protocol\":1,\"acked_through\":")
        .expect("the answer")..];

    let server = Server::start(&db);
    let phone = server.enroll("README", &[commune]).await;
    let response = phone.send_text(body.to_owned()).await;
    assert_eq!(response.status(), 200);
    let reply: Value = response.json().await.unwrap();
    assert_eq!(reply["acked_through"], 1, "{reply}");
    assert_eq!(reply["rejected"], json!([]), "{reply}");
    assert!(answer.starts_with("{\"protocol\":1,\"acked_through\":1,\"rejected\":[]"));
    let request: Value = serde_json::from_str(body).unwrap();
    let edit = &request["push"][0];
    let record = &reply["records"][0];
    assert_eq!(record["id"], edit["record"]);
    for (name, set) in edit["fields"].as_object().unwrap() {
        assert_eq!(record["fields"][name][0]["value"], set["value"], "{name}");
    }

    // The same birth, as another record without `sex`, under the next seq.
    let mut refused = request.clone();
    let edit = &mut refused["push"][0];
    edit["seq"] = json!(2);
    edit["record"] = json!(RecordId::new_v7());
    edit["fields"].as_object_mut().unwrap().remove("sex");
    let reply: Value = phone
        .send_text(refused.to_string())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(reply["acked_through"], 2, "{reply}");
    let shown = &section[section.find("`\"rejected\":[").expect("the refusal") + 12..];
    let shown: String = shown[..shown.find("]`").expect("the refusal's end") + 1]
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let mut shown: Value = serde_json::from_str(&shown).unwrap();
    shown[0]["seq"] = json!(2);
    assert_eq!(reply["rejected"], shown);
}

/// SQLite keeps each commit in its WAL first. While the server runs, what the phones pushed
/// must reach the database file itself, without a commit having to wait for the copy: the WAL
/// does not grow without bound, and the file a backup copies holds the data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_copies_its_wal_into_the_database_file_while_serving() {
    let Some(db) = Database::fresh(Backend::Sqlite).await else {
        return;
    };
    let dir = std::path::PathBuf::from(&db.args[1]);
    let server = Server::start(&db);
    let file = dir.join("mam.db");
    let before = std::fs::metadata(&file).expect("the database file").len();
    let mut phone = server.enroll("phone", &[COMMUNE]).await;
    let note = "Ghi chú của cộng tác viên thôn. ".repeat(40);
    for i in 0..1500 {
        phone.create(COMMUNE, &[("notes", json!(format!("{i}: {note}")))]);
    }
    phone.sync().await;
    let pushed = 1500 * note.len() as u64;
    let mut grown = 0;
    for _ in 0..100 {
        grown = std::fs::metadata(&file).expect("the database file").len() - before;
        if grown >= pushed {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        grown >= pushed,
        "the database file grew by {grown} bytes in 10 s after {pushed} bytes of notes were pushed: the WAL was not copied into it"
    );
}

/// Under a steady stream of pushes, with a phone pulling between them, SQLite never finds a
/// moment to start its WAL over by itself: the WAL would grow until the writer's own
/// checkpoint at 256 MiB. The server starts it over once it passes 16 MiB, so the file stays
/// near that size however much is pushed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_starts_its_wal_over_under_a_stream_of_pushes() {
    let Some(db) = Database::fresh(Backend::Sqlite).await else {
        return;
    };
    let dir = std::path::PathBuf::from(&db.args[1]);
    let server = Server::start(&db);
    let mut writer = server.enroll("writer", &[COMMUNE]).await;
    let mut reader = server.enroll("reader", &[COMMUNE]).await;
    let note = "Ghi chú của cộng tác viên thôn về hoàn cảnh gia đình. ".repeat(60);
    let mut pushed = 0;
    for round in 0..16 {
        for i in 0..500 {
            writer.create(COMMUNE, &[("notes", json!(format!("{round}.{i}: {note}")))]);
        }
        writer.sync().await;
        reader.sync().await;
        pushed += 500 * note.len() as u64;
    }
    let wal = std::fs::metadata(dir.join("mam.db-wal"))
        .expect("the WAL file")
        .len();
    // Each note is written twice (the record and the edit log): well over 2 × 16 MiB.
    assert!(pushed > 16 << 20, "the test pushes {pushed} bytes");
    assert!(
        wal < pushed,
        "the WAL file is {wal} bytes after {pushed} bytes of notes were pushed twice over: it was never started over"
    );
}

fn values(record: &Record, field: &str) -> Vec<Value> {
    let mut v: Vec<Value> = record
        .fields
        .get(field)
        .map(|r| r.values().cloned().collect())
        .unwrap_or_default();
    v.sort_by_key(|v| v.to_string());
    v
}

async fn offline_creation_reaches_every_phone(db: Database) {
    let server = Server::start(&db);
    let mut a = server.enroll("Hoa", &[COMMUNE]).await;
    let mut b = server.enroll("Lan", &[COMMUNE]).await;
    // Days offline: three births recorded and one corrected before any sync.
    let ids: Vec<RecordId> = (0..3)
        .map(|i| {
            a.create(
                COMMUNE,
                &[
                    ("child_name", json!(format!("Bé {i}"))),
                    ("sex", json!("f")),
                ],
            )
        })
        .collect();
    a.edit(ids[1], &[("date_of_birth", json!("2020-03-02"))]);
    assert_eq!(a.client.pending().len(), 4);
    let responses = a.sync().await;
    assert_eq!(responses[0].acked_through, 4);
    assert!(responses[0].rejected.is_empty());
    assert!(a.client.pending().is_empty());
    b.sync().await;
    for id in &ids {
        assert_eq!(b.view(*id), a.view(*id), "both phones hold the same record");
    }
    assert_eq!(
        b.view(ids[1]).value("date_of_birth"),
        Some(&json!("2020-03-02"))
    );
    assert!(b.view(ids[0]).value("child_name").is_some());
}

async fn concurrent_edits_to_one_field_conflict_then_resolve(db: Database) {
    let server = Server::start(&db);
    let mut a = server.enroll("Hoa", &[COMMUNE]).await;
    let mut b = server.enroll("Lan", &[COMMUNE]).await;
    let id = a.create(COMMUNE, &[("child_name", json!("Nguyễn Thị Lan"))]);
    a.sync().await;
    b.sync().await;
    // Both edit the same field from the same view, offline.
    a.edit(id, &[("child_name", json!("Nguyễn Thị Lân"))]);
    b.edit(id, &[("child_name", json!("Nguyễn Thị Lang"))]);
    a.sync().await;
    b.sync().await;
    a.sync().await;
    for phone in [&a, &b] {
        let record = phone.view(id);
        assert_eq!(
            values(&record, "child_name"),
            vec![json!("Nguyễn Thị Lang"), json!("Nguyễn Thị Lân")]
        );
        assert!(record.is_conflicted());
    }
    assert_eq!(a.view(id), b.view(id));
    // Whoever settles it supersedes both; the other phone sees it settled.
    b.edit(id, &[("child_name", json!("Nguyễn Thị Lân"))]);
    b.sync().await;
    a.sync().await;
    let record = a.view(id);
    assert_eq!(values(&record, "child_name"), vec![json!("Nguyễn Thị Lân")]);
    assert!(!record.is_conflicted());
    assert_eq!(a.view(id), b.view(id));
}

async fn different_fields_merge(db: Database) {
    let server = Server::start(&db);
    let mut a = server.enroll("Hoa", &[COMMUNE]).await;
    let mut b = server.enroll("Lan", &[COMMUNE]).await;
    let id = a.create(COMMUNE, &[("child_name", json!("Lan"))]);
    a.sync().await;
    b.sync().await;
    a.edit(id, &[("sex", json!("f"))]);
    b.edit(id, &[("village", json!("Thôn 3"))]);
    a.sync().await;
    b.sync().await;
    a.sync().await;
    let record = a.view(id);
    assert!(!record.is_conflicted());
    assert_eq!(record.value("sex"), Some(&json!("f")));
    assert_eq!(record.value("village"), Some(&json!("Thôn 3")));
    assert_eq!(record.value("child_name"), Some(&json!("Lan")));
    assert_eq!(a.view(id), b.view(id));
}

async fn delete_against_edit_is_kept_as_a_conflict(db: Database) {
    let server = Server::start(&db);
    let mut a = server.enroll("Hoa", &[COMMUNE]).await;
    let mut b = server.enroll("Lan", &[COMMUNE]).await;
    let id = a.create(
        COMMUNE,
        &[("child_name", json!("Lan")), ("notes", json!("twin"))],
    );
    a.sync().await;
    b.sync().await;
    a.client.delete(id).unwrap();
    b.edit(id, &[("notes", json!("family moved to Huế"))]);
    a.sync().await;
    b.sync().await;
    a.sync().await;
    for phone in [&a, &b] {
        let record = phone.view(id);
        assert!(record.is_deleted());
        assert!(
            record.is_conflicted(),
            "the edit made meanwhile must not vanish"
        );
        assert!(values(&record, "notes").contains(&json!("family moved to Huế")));
    }
}

async fn replayed_requests_change_nothing(db: Database) {
    let server = Server::start(&db);
    let mut a = server.enroll("Hoa", &[COMMUNE]).await;
    let id = a.create(COMMUNE, &[("child_name", json!("Lan"))]);
    a.edit(id, &[("sex", json!("m"))]);
    let old = a.client.sync_request();
    let first = a.sync_once().await;
    assert_eq!(first.acked_through, 2);
    let before = a.view(id);
    // The same request again (a retry whose first response was lost), twice.
    for _ in 0..2 {
        let again: SyncResponse = a.send(&old).await.json().await.unwrap();
        assert_eq!(again.acked_through, 2);
        assert!(again.rejected.is_empty());
        assert_eq!(again.records.len(), 1);
        assert_eq!(again.records[0], before, "a repeat changes nothing");
    }
    // A phone that encodes its queue again may lay the same edits out otherwise: keys in
    // another order, spaces. Still the same edits, so still repeats, not reused seqs.
    let relaid = serde_json::to_string_pretty(&json!({
        "push": old.push.iter().map(|e| json!({
            "fields": e.fields, "commune": e.commune, "version": e.version,
            "form": e.form, "record": e.record, "seq": e.seq,
        })).collect::<Vec<_>>(),
        "cursor": old.cursor,
        "protocol": old.protocol,
    }))
    .unwrap();
    let again: SyncResponse = a.send_text(relaid).await.json().await.unwrap();
    assert_eq!(again.acked_through, 2);
    assert!(again.rejected.is_empty(), "{:?}", again.rejected);
    assert_eq!(again.records[0], before);
    let later = a.sync_once().await;
    assert!(later.records.is_empty(), "nothing changed after the cursor");
}

async fn gaps_wait_and_reused_seqs_are_refused(db: Database) {
    let server = Server::start(&db);
    let mut a = server.enroll("Hoa", &[COMMUNE]).await;
    a.create(COMMUNE, &[("child_name", json!("one"))]);
    a.create(COMMUNE, &[("child_name", json!("two"))]);
    a.create(COMMUNE, &[("child_name", json!("three"))]);
    let mut request = a.client.sync_request();
    let gap = SyncRequest {
        push: vec![request.push[0].clone(), request.push[2].clone()],
        ..request.clone()
    };
    let response: SyncResponse = a.send(&gap).await.json().await.unwrap();
    assert_eq!(
        response.acked_through, 1,
        "nothing after the gap is applied"
    );
    assert_eq!(response.records.len(), 1);
    let response = a.sync_once().await;
    assert_eq!(response.acked_through, 3);
    assert_eq!(a.client.records().len(), 3);
    // Seq 2 again with other content: refused and reported, the record unchanged.
    request.push[1].fields.insert(
        "notes".into(),
        sync_protocol::FieldEdit {
            value: json!("x"),
            supersedes: vec![],
        },
    );
    let reuse = SyncRequest {
        push: vec![request.push[1].clone()],
        ..request
    };
    let response: SyncResponse = a.send(&reuse).await.json().await.unwrap();
    assert_eq!(response.rejected.len(), 1);
    assert_eq!(response.rejected[0].code, RejectCode::SeqReused);
    assert!(server.cli(&["rejected", "list"]).contains("seq_reused"));
}

async fn other_communes_see_nothing_and_cannot_write(db: Database) {
    let server = Server::start(&db);
    let mut a = server.enroll("Hoa", &[COMMUNE]).await;
    let mut c = server.enroll("Minh", &[OTHER_COMMUNE]).await;
    let id = a.create(COMMUNE, &[("child_name", json!("Lan"))]);
    a.sync().await;
    c.create(OTHER_COMMUNE, &[("child_name", json!("Bình"))]);
    c.sync().await;
    assert_eq!(c.client.records().len(), 1, "only its own commune");
    a.sync().await;
    assert_eq!(a.client.records().len(), 1);
    // Writing into the other commune, and editing a record of it by id while claiming its
    // own commune: both refused, and kept for review.
    c.create(COMMUNE, &[("child_name", json!("intruder"))]);
    c.client.create(
        id,
        &harness::form(),
        1,
        &harness::commune(OTHER_COMMUNE),
        [("notes", json!("from elsewhere"))],
    );
    c.sync().await;
    let rejected = c.client.rejected();
    assert_eq!(rejected.len(), 2);
    assert!(rejected
        .iter()
        .all(|r| r.rejection.code == RejectCode::OutOfScope));
    a.sync().await;
    assert_eq!(a.client.records().len(), 1);
    assert_eq!(a.view(id).value("notes"), None, "the record is untouched");
    let listed = server.cli(&["rejected", "list", "--device", &c.device().to_string()]);
    assert_eq!(listed.matches("out_of_scope").count(), 2, "{listed}");
}

async fn a_record_that_moves_away_is_evicted(db: Database) {
    let server = Server::start(&db);
    // The officer covers both wards; the collaborator only the first.
    let mut officer = server.enroll("officer", &[COMMUNE, OTHER_COMMUNE]).await;
    let mut collaborator = server.enroll("Hoa", &[COMMUNE]).await;
    let id = officer.create(COMMUNE, &[("child_name", json!("Lan"))]);
    officer.sync().await;
    collaborator.sync().await;
    assert!(collaborator.client.view(id).is_some());
    // The family moved: the officer files the record under the other ward.
    let record = officer.view(id);
    let mut request = officer.client.sync_request();
    assert!(request.push.is_empty());
    let seq = officer.edit(id, &[("notes", json!("moved to Kim Long"))]);
    request = officer.client.sync_request();
    request.push[0].commune = OTHER_COMMUNE.into();
    let response: SyncResponse = officer.send(&request).await.json().await.unwrap();
    assert_eq!(response.acked_through, seq, "{:?}", response.rejected);
    assert!(response.rejected.is_empty(), "{:?}", response.rejected);
    let pulled = response.records.iter().find(|r| r.id == id).unwrap();
    assert_eq!(pulled.commune.as_str(), OTHER_COMMUNE);
    assert_eq!(pulled.fields["child_name"], record.fields["child_name"]);
    let responses = collaborator.sync().await;
    assert!(
        responses.iter().any(|r| r.evicted.contains(&id)),
        "{responses:?}"
    );
    assert!(
        collaborator.client.view(id).is_none(),
        "the record left the collaborator's phone"
    );
    // And the collaborator can no longer write to it.
    collaborator.client.create(
        id,
        &harness::form(),
        1,
        &harness::commune(COMMUNE),
        [("notes", json!("still here?"))],
    );
    collaborator.sync().await;
    let refused = collaborator.client.rejected();
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].rejection.code, RejectCode::OutOfScope);
}

async fn revoked_phone_is_refused(db: Database) {
    let server = Server::start(&db);
    let mut a = server.enroll("Hoa", &[COMMUNE]).await;
    a.sync().await;
    server.cli(&["device", "revoke", &a.device().to_string()]);
    let request = a.client.sync_request();
    let response = a.send(&request).await;
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "unauthorized");
}

async fn pulls_page_by_max_bytes(db: Database) {
    let server = Server::start(&db);
    let mut a = server.enroll("Hoa", &[COMMUNE]).await;
    let mut b = server.enroll("Lan", &[COMMUNE]).await;
    b.client = sync_protocol::Client::new(b.device()).with_limits(10, 1024);
    for i in 0..40 {
        a.create(
            COMMUNE,
            &[
                ("child_name", json!(format!("Bé {i}"))),
                ("notes", json!("x".repeat(200))),
            ],
        );
    }
    a.sync().await;
    let pages = b.sync().await;
    assert!(pages.len() > 5, "small pages: got {}", pages.len());
    assert!(pages.iter().all(|p| p.records.len() <= 5));
    assert!(pages[..pages.len() - 1].iter().all(|p| p.more));
    assert_eq!(b.client.records(), a.client.records());
}

async fn http_hygiene(db: Database) {
    let server = Server::start_with(&db, &[("MAM__SERVER__BODY_LIMIT_BYTES", "65536")]);
    let mut a = server.enroll("Hoa", &[COMMUNE]).await;
    let http = reqwest::Client::new();
    let sync = format!("{}/v1/sync", server.url);
    // No token, a wrong token.
    let r = http
        .post(&sync)
        .json(&json!({"protocol": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .post(&sync)
        .bearer_auth("mam_nope")
        .json(&json!({"protocol": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Malformed requests: 400 with a readable message, nothing changed.
    let refused = |body: String| {
        let request = http
            .post(&sync)
            .bearer_auth(&a.token)
            .header("content-type", "application/json")
            .body(body);
        async move {
            let r = request.send().await.unwrap();
            assert_eq!(r.status(), 400);
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["code"], "malformed_request");
            body["message"].as_str().unwrap().to_owned()
        }
    };
    let message = refused("{\"protocol\": 1, \"push\": [".into()).await;
    assert!(message.contains("line 1"), "{message}");
    // Valid JSON, but the second edit is not an edit: the message says which and why, and the
    // first, valid one is not applied either.
    let edit = json!({"seq": 1, "record": "0190b0a0-0000-7000-8000-000000000001",
        "form": "birth-registration", "version": 1, "commune": COMMUNE,
        "fields": {"child_name": {"value": "Lan"}}});
    let message = refused(json!({"protocol": 1, "push": [edit, {"seq": "two"}]}).to_string()).await;
    assert!(
        message.contains("push[1]") && message.contains("\"two\""),
        "{message}"
    );
    let pull: SyncResponse = a
        .send_text(json!({"protocol": 1}).to_string())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(pull.acked_through, 0);
    let r = http
        .post(&sync)
        .bearer_auth(&a.token)
        .json(&json!({"protocol": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // Over the body limit.
    let big = json!({"protocol": 1, "push": [], "pad": "x".repeat(70_000)});
    let r = http
        .post(&sync)
        .bearer_auth(&a.token)
        .json(&big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(
        r.json::<Value>().await.unwrap()["code"],
        "payload_too_large"
    );
    let r = http
        .post(&sync)
        .bearer_auth(&a.token)
        .header("content-encoding", "br")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    assert_eq!(
        r.json::<Value>().await.unwrap()["code"],
        "unsupported_encoding"
    );
    // A gzip request body, and a gzip response.
    let id = a.create(
        COMMUNE,
        &[
            ("child_name", json!("Lan")),
            ("notes", json!("n".repeat(3000))),
        ],
    );
    let plain = serde_json::to_vec(&a.client.sync_request()).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&plain).unwrap();
    let raw = reqwest::Client::builder().no_gzip().build().unwrap();
    let r = raw
        .post(&sync)
        .bearer_auth(&a.token)
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .header("accept-encoding", "gzip")
        .body(gz.finish().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers().get("content-encoding").unwrap(), "gzip");
    let mut text = String::new();
    std::io::Read::read_to_string(
        &mut flate2::read::GzDecoder::new(&r.bytes().await.unwrap()[..]),
        &mut text,
    )
    .unwrap();
    let response: SyncResponse = serde_json::from_str(&text).unwrap();
    assert_eq!(response.acked_through, 1);
    a.client.apply_response(&response);
    assert_eq!(a.view(id).value("child_name"), Some(&json!("Lan")));
    // Health, readiness, metrics.
    for path in ["/healthz", "/readyz"] {
        assert_eq!(
            http.get(format!("{}{path}", server.url))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    let metrics = http
        .get(format!("{}/metrics", server.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // Two syncs: the pull after the refused push, and the push above.
    assert!(metrics.contains("mam_syncs_total 2"), "{metrics}");
    assert!(metrics.contains("mam_edits_applied_total 1"));
    assert!(metrics.contains("mam_sync_seconds_count 2"));
    assert!(metrics.contains("route=\"/v1/sync\",status=\"401\""));
}

async fn nothing_acknowledged_is_lost_on_sigkill(db: Database) {
    let mut server = Server::start(&db);
    let mut phones = Vec::new();
    for i in 0..4 {
        phones.push(server.enroll(&format!("phone {i}"), &[COMMUNE]).await);
    }
    // Each phone pushes small batches in a loop; the server is killed mid-storm.
    let url = server.url.clone();
    let storm = phones.into_iter().map(|mut phone| {
        let url = url.clone();
        tokio::spawn(async move {
            phone.client = sync_protocol::Client::new(phone.device()).with_limits(5, 4096);
            let mut acked: Vec<(RecordId, String)> = Vec::new();
            let mut created: Vec<(u64, RecordId, String)> = Vec::new();
            for round in 0..100_000 {
                for i in 0..5 {
                    let name = format!("{}-{round}-{i}", phone.device());
                    let id = phone.create(COMMUNE, &[("child_name", json!(name.clone()))]);
                    created.push((phone.client.pending().last().unwrap().seq, id, name));
                }
                let request = phone.client.sync_request();
                let sent = phone
                    .http
                    .post(format!("{url}/v1/sync"))
                    .bearer_auth(&phone.token)
                    .json(&request)
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await;
                let Ok(response) = sent else { break };
                let Ok(response) = response.json::<SyncResponse>().await else {
                    break;
                };
                phone.client.apply_response(&response);
                acked.extend(
                    created
                        .iter()
                        .filter(|(seq, _, _)| *seq <= response.acked_through)
                        .map(|(_, id, n)| (*id, n.clone())),
                );
                created.retain(|(seq, _, _)| *seq > response.acked_through);
            }
            acked
        })
    });
    let storm: Vec<_> = storm.collect();
    tokio::time::sleep(Duration::from_millis(700)).await;
    server.kill();
    let mut acknowledged = Vec::new();
    for task in storm {
        acknowledged.extend(task.await.unwrap());
    }
    assert!(
        !acknowledged.is_empty(),
        "the storm acknowledged nothing before the kill"
    );
    server.restart();
    let mut reader = server.enroll("reader", &[COMMUNE]).await;
    reader.sync().await;
    for (id, name) in &acknowledged {
        let record = reader
            .client
            .view(*id)
            .unwrap_or_else(|| panic!("acknowledged record {id} lost"));
        assert_eq!(record.value("child_name"), Some(&json!(name)));
    }
    eprintln!(
        "{} acknowledged records all survived SIGKILL",
        acknowledged.len()
    );
}

async fn concurrent_pushers_never_make_a_puller_skip(db: Database) {
    let server = Server::start(&db);
    let mut writers = Vec::new();
    for i in 0..8 {
        writers.push(server.enroll(&format!("writer {i}"), &[COMMUNE]).await);
    }
    let mut puller = server.enroll("puller", &[COMMUNE]).await;
    // Shared records, so writers also contend on the same rows.
    let mut first = writers.remove(0);
    let shared: Vec<RecordId> = (0..5)
        .map(|i| first.create(COMMUNE, &[("child_name", json!(format!("shared {i}")))]))
        .collect();
    first.sync().await;
    writers.insert(0, first);
    let tasks: Vec<_> = writers
        .into_iter()
        .map(|mut w| {
            let shared = shared.clone();
            tokio::spawn(async move {
                w.sync().await;
                for round in 0..25 {
                    w.create(
                        COMMUNE,
                        &[("child_name", json!(format!("{}:{round}", w.device())))],
                    );
                    let id = shared[round % shared.len()];
                    w.edit(
                        id,
                        &[(
                            "notes",
                            json!(format!("{} was here at {round}", w.device())),
                        )],
                    );
                    w.sync_once().await;
                }
                w.sync().await;
            })
        })
        .collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopped = stop.clone();
    let pulling = tokio::spawn(async move {
        let mut rounds = 0;
        loop {
            let response = puller.sync_once().await;
            rounds += 1;
            if rounds > 5000 {
                break;
            }
            tokio::task::yield_now().await;
            if response.records.is_empty() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            if stopped.load(std::sync::atomic::Ordering::Relaxed) {
                break;
            }
        }
        puller
    });
    for t in tasks {
        t.await.unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut puller = pulling.await.unwrap();
    // One last pull from where it stopped: the cursor must have skipped nothing.
    puller.sync().await;
    let mut fresh = server.enroll("fresh", &[COMMUNE]).await;
    fresh.sync().await;
    assert_eq!(fresh.client.records().len(), 5 + 8 * 25);
    assert_eq!(
        puller.client.records(),
        fresh.client.records(),
        "the puller's state equals the server's"
    );
}

async fn sigterm_drains_in_flight_syncs(db: Database) {
    // A push big enough to be still running when the signal comes.
    let mut server = Server::start_with(&db, &[("MAM__SYNC__MAX_PUSH", "3000")]);
    let mut a = server.enroll("Hoa", &[COMMUNE]).await;
    a.client = sync_protocol::Client::new(a.device()).with_limits(3000, 65_536);
    for i in 0..3000 {
        a.create(
            COMMUNE,
            &[
                ("child_name", json!(format!("Bé {i}"))),
                ("notes", json!("n".repeat(200))),
            ],
        );
    }
    let request = a.client.sync_request();
    assert_eq!(request.push.len(), 3000);
    let http = a.http.clone();
    let (url, token) = (format!("{}/v1/sync", server.url), a.token.clone());
    // The body is encoded and a connection open before the clock starts, so that on a busy
    // machine the request is on the wire, not still being built, when the signal comes.
    let body = serde_json::to_vec(&request).unwrap();
    let health = http.get(format!("{}/healthz", server.url)).send().await;
    assert!(health.is_ok_and(|r| r.status() == 200));
    let in_flight = tokio::spawn(async move {
        http.post(url)
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let killed = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(server.pid().to_string())
        .status()
        .unwrap();
    assert!(killed.success());
    let response = in_flight
        .await
        .unwrap()
        .expect("the in-flight sync is answered");
    assert_eq!(response.status(), 200);
    let response: SyncResponse = response.json().await.unwrap();
    assert_eq!(response.acked_through, 3000);
    assert!(server.wait().success(), "mam exits cleanly on SIGTERM");
}

/// `mam bench ingest` in rounds: each round writes the records raw, then pushes the same
/// number through `/v1/sync` from the phones, which pull every one of them back.
async fn bench_ingest_runs_in_rounds(db: Database) {
    let mut args = vec![
        "bench",
        "ingest",
        "--records",
        "300",
        "--phones",
        "2",
        "--batch",
        "50",
        "--rounds",
        "2",
    ];
    args.extend(db.args.iter().map(String::as_str));
    let out = harness::mam().args(&args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.matches("8 requests, 300 records pulled back").count(),
        2,
        "each round, each phone pushes 3 batches, syncs once more, and pulls its records back:\n{stdout}"
    );
    assert!(
        stdout.contains("over 2 rounds: ratio (b)/(a) median"),
        "{stdout}"
    );
}

/// `mam bench fleet` against two `mam` processes on one database: phones of a commune editing
/// its records at once through both, then the check that nothing acknowledged was lost and
/// every phone (and one pulling from cursor 0) holds the same records.
async fn bench_fleet_checks_what_it_measured(db: Database) {
    // SQLite: one process (the data folder is one server's); PostgreSQL: two, started at once
    // on the empty database (both publish the built-in forms).
    let (a, b) = match db.backend() {
        Backend::Postgres => std::thread::scope(|s| {
            let one = s.spawn(|| Server::start(&db));
            let two = s.spawn(|| Server::start(&db));
            (one.join().unwrap(), Some(two.join().unwrap()))
        }),
        Backend::Sqlite => (Server::start(&db), None),
    };
    let mut args = vec![
        "bench".to_owned(),
        "fleet".into(),
        "--phones".into(),
        "24".into(),
        "--communes".into(),
        "3".into(),
        "--duration".into(),
        "3".into(),
        "--burst".into(),
        "--url".into(),
        a.url.clone(),
    ];
    if let Some(b) = &b {
        args.extend(["--url".into(), b.url.clone()]);
    }
    args.extend(db.args.iter().cloned());
    let out = harness::mam().args(&args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("nothing lost, every phone converged, a fresh phone agrees"),
        "{stdout}"
    );
    assert!(stdout.contains("errors {}"), "{stdout}");
}
