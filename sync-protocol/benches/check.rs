//! Checking a pushed edit against its form: a birth registered with a health-insurance card,
//! as a collaborator sends it, through `Form::check_edit`. Two of its fields carry patterns
//! (the registration commune and the card number).
//!
//! `cargo bench -p sync-protocol --bench check`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_json::json;
use sync_protocol::{Edit, Form};

fn birth_registration() -> Form {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../schemas/forms/birth-registration.v1.json"
    );
    let text = std::fs::read_to_string(path).expect("the birth registration form");
    serde_json::from_str(&text).expect("a valid form")
}

fn check(c: &mut Criterion) {
    let form = birth_registration();
    let edit: Edit = serde_json::from_value(json!({
        "seq": 1,
        "record": "0190f5a2-7c1e-7d3a-9b1e-3f2a1c4d5e6f",
        "form": "birth-registration",
        "version": 1,
        "commune": "19753",
        "fields": {
            "child_name": {"value": "Nguyễn Thị Lan"},
            "sex": {"value": "f"},
            "date_of_birth": {"value": "2020-03-02"},
            "village": {"value": "Thôn 3"},
            "birth_registered": {"value": true},
            "registration_date": {"value": "2020-03-20"},
            "registration_commune": {"value": "19753"},
            "bhyt_card_issued": {"value": true},
            "bhyt_card_date": {"value": "2020-03-25"},
            "bhyt_card_number": {"value": "TE4464600123456"},
            "notes": {"value": "Gia đình đã nhận thẻ tại trạm y tế xã."}
        }
    }))
    .expect("a valid edit");
    let edit = edit.into_checked().expect("a well-formed edit");
    form.check_edit(&edit, "2020-06-01")
        .expect("the edit fits its form");
    let mut group = c.benchmark_group("check_edit");
    group.throughput(Throughput::Elements(1));
    group.bench_function("birth registration, 11 fields, 2 with patterns", |b| {
        b.iter(|| form.check_edit(&edit, "2020-06-01"))
    });
    group.finish();
}

criterion_group!(benches, check);
criterion_main!(benches);
