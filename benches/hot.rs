//! Micro-benchmarks of the pure code on the hot path: the interview diff (which also serializes the event
//! body), parsing an update, and signing a delivery. `cargo bench` runs them.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use secrecy::SecretString;
use serde_json::json;
use tidings::domain::interview::{EXAMPLE_BODY, Interview, InterviewPatch};
use tidings::domain::signing::{SigningKey, signature_header};

fn interview(c: &mut Criterion) {
    let before = InterviewPatch::parse(&json!({
        "interview_sent_at": "2025-04-14T12:00:00Z",
        "interview_summary": "Example of customizable interview summary text",
        "interview_custom_data": {"can_lift_50lbs": true, "eligible_to_work": true}
    }))
    .unwrap();
    let current = Interview::empty("cand_12345678").apply(&before).interview;
    let body = json!({"interview_completed_at": "2025-04-15T16:00:00Z", "interview_outcome": "completed"});
    let update = InterviewPatch::parse(&body).unwrap();

    c.bench_function("parse an update", |b| b.iter(|| InterviewPatch::parse(black_box(&body)).unwrap()));
    c.bench_function("diff and serialize the event body", |b| b.iter(|| black_box(&current).apply(black_box(&update))));
    let stored = current.to_json();
    c.bench_function("load the stored interview", |b| b.iter(|| Interview::from_json(black_box(&stored)).unwrap()));
}

fn signing(c: &mut Criterion) {
    let key =
        SigningKey::from_secret(&SecretString::from("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned())).unwrap();
    let keys = [key.clone()];
    let two = [key.clone(), key];
    let body = EXAMPLE_BODY.as_bytes();
    c.bench_function("sign the example body", |b| {
        b.iter(|| signature_header(black_box(&keys), "evt_0123456789abcdef01234567", 1_700_000_000, body))
    });
    c.bench_function("sign with two secrets (rotation)", |b| {
        b.iter(|| signature_header(black_box(&two), "evt_0123456789abcdef01234567", 1_700_000_000, body))
    });
}

criterion_group!(benches, interview, signing);
criterion_main!(benches);
