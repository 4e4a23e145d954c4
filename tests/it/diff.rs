//! The `changes` rules of `interview.updated`: only what changed, nothing for a no-op, first write against
//! all-null, and concurrent updates of one candidate serialized into an unbroken chain.

use std::collections::HashSet;
use std::time::Duration;

use axum::http::StatusCode;
use futures_util::future::join_all;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::on_both_stores;

const FIELDS: [&str; 5] =
    ["interview_completed_at", "interview_sent_at", "interview_outcome", "interview_summary", "interview_custom_data"];

fn change_keys(event: &Value) -> Vec<String> {
    let mut keys: Vec<String> =
        event["payload"]["changes"].as_object().expect("changes is an object").keys().cloned().collect();
    keys.sort();
    keys
}

on_both_stores! {
    async fn first_write_diffs_against_all_null() {
        let app = TestApp::spawn().await;
        let answer = app
            .a
            .patch_interview(
                "cand_first",
                json!({ "interview_outcome": "qualified", "interview_custom_data": { "shift": "night" } }),
            )
            .await;
        assert_eq!(
            answer["interview"],
            json!({
                "candidate_id": "cand_first",
                "interview_completed_at": null,
                "interview_sent_at": null,
                "interview_outcome": "qualified",
                "interview_summary": null,
                "interview_custom_data": { "shift": "night" }
            }),
            "data carries every field, null when unknown"
        );
        let event = &answer["event"];
        assert_event_shape(event);
        assert_eq!(
            event["payload"],
            json!({
                "event": "interview.updated",
                "changes": {
                    "interview_outcome": { "from": null, "to": "qualified" },
                    "interview_custom_data": { "from": null, "to": { "shift": "night" } }
                },
                "data": answer["interview"]
            })
        );

        // A first write that sets a field to null changes nothing against all-null.
        let answer = app.a.patch_interview("cand_nulls", json!({ "interview_summary": null })).await;
        assert!(answer["event"].is_null(), "writing null over nothing is no change: {answer}");
    }

    async fn only_changed_fields_are_in_changes() {
        let app = TestApp::spawn().await;
        app.a
            .patch_interview(
                "cand_diff",
                json!({
                    "interview_sent_at": "2025-04-14T12:00:00Z",
                    "interview_summary": "first summary",
                    "interview_custom_data": { "a": 1 }
                }),
            )
            .await;

        // Same summary, same sent_at, a new outcome: only the outcome changed.
        let answer = app
            .a
            .patch_interview(
                "cand_diff",
                json!({
                    "interview_sent_at": "2025-04-14T12:00:00Z",
                    "interview_summary": "first summary",
                    "interview_outcome": "unqualified"
                }),
            )
            .await;
        let event = &answer["event"];
        assert_eq!(change_keys(event), vec!["interview_outcome"]);
        assert_eq!(event["payload"]["changes"]["interview_outcome"], json!({ "from": null, "to": "unqualified" }));
        assert_eq!(answer["interview"]["interview_summary"], "first summary", "absent fields are unchanged");
        assert_eq!(answer["interview"]["interview_custom_data"], json!({ "a": 1 }), "absent fields are unchanged");

        // null clears a field; the custom data diff is the whole object, from and to.
        let answer = app
            .a
            .patch_interview(
                "cand_diff",
                json!({ "interview_summary": null, "interview_custom_data": { "a": 1, "b": [2] } }),
            )
            .await;
        let event = &answer["event"];
        assert_eq!(change_keys(event), vec!["interview_custom_data", "interview_summary"]);
        assert_eq!(event["payload"]["changes"]["interview_summary"], json!({ "from": "first summary", "to": null }));
        assert_eq!(
            event["payload"]["changes"]["interview_custom_data"],
            json!({ "from": { "a": 1 }, "to": { "a": 1, "b": [2] } })
        );
        assert!(answer["interview"]["interview_summary"].is_null());
        assert_eq!(event["payload"]["data"], answer["interview"]);
        for field in FIELDS {
            assert!(answer["interview"].get(field).is_some(), "data always carries {field}: {answer}");
        }
    }

    async fn timestamps_with_an_offset_are_sent_in_utc() {
        let app = TestApp::spawn().await;
        let answer =
            app.a.patch_interview("cand_tz", json!({ "interview_completed_at": "2025-04-15T18:00:00+02:00" })).await;
        assert_eq!(answer["interview"]["interview_completed_at"], "2025-04-15T16:00:00Z");
        assert_eq!(
            answer["event"]["payload"]["changes"]["interview_completed_at"],
            json!({ "from": null, "to": "2025-04-15T16:00:00Z" })
        );
        // The same instant written differently is no change.
        let answer = app.a.patch_interview("cand_tz", json!({ "interview_completed_at": "2025-04-15T16:00:00Z" })).await;
        assert!(answer["event"].is_null(), "the same instant is not a change: {answer}");
    }

    async fn noop_update_emits_no_event_and_delivers_nothing() {
        let app = TestApp::spawn().await;
        let receiver = Receiver::ok().await;
        app.a.create_endpoint(&receiver.url()).await;

        let body = json!({ "interview_outcome": "qualified", "interview_summary": "same" });
        let first = app.a.patch_interview("cand_noop", body.clone()).await;
        assert!(first["event"].is_object());
        receiver.wait_for(1).await;
        let delivery = app.a.delivery_of_event(first["event"]["id"].as_str().unwrap()).await;
        app.a.wait_delivery_status(delivery["id"].as_str().unwrap(), "succeeded").await;

        let again = app.a.patch_interview("cand_noop", body).await;
        assert!(again.get("event").is_some_and(Value::is_null), "a no-op answers event: null, got {again}");
        assert_eq!(again["interview"], first["interview"]);
        let empty = app.a.patch_interview("cand_noop", json!({})).await;
        assert!(empty["event"].is_null(), "an empty PATCH changes nothing: {empty}");

        let events = app.a.list("/v1/events?limit=250").await;
        assert_eq!(events.len(), 1, "no event was written for the no-ops: {events:?}");
        let deliveries = app.a.deliveries("").await;
        assert_eq!(deliveries.len(), 1, "no delivery was made for the no-ops: {deliveries:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(receiver.count(), 1, "nothing more reached the receiver");
    }

    async fn concurrent_updates_of_one_candidate_form_an_unbroken_chain() {
        let app = TestApp::spawn().await;
        let answers =
            join_all((0..50).map(|i| {
                let api = app.a.clone();
                async move {
                    api.patch("/v1/interviews/cand_race", json!({ "interview_summary": format!("summary {i}") })).await
                }
            }))
            .await;

        let mut answered_ids = HashSet::new();
        for (status, answer) in &answers {
            assert_eq!(*status, StatusCode::OK, "{answer}");
            let id = answer["event"]["id"].as_str().unwrap_or_else(|| panic!("every distinct value is a change: {answer}"));
            answered_ids.insert(id.to_owned());
        }
        assert_eq!(answered_ids.len(), 50);

        let mut events: Vec<Value> = app
            .a
            .list("/v1/events?limit=250")
            .await
            .into_iter()
            .filter(|e| e["payload"]["data"]["candidate_id"] == "cand_race")
            .collect();
        assert_eq!(events.len(), 50);
        events.reverse(); // the list is newest first
        let listed_ids: HashSet<String> = events.iter().map(|e| e["id"].as_str().unwrap().to_owned()).collect();
        assert_eq!(listed_ids, answered_ids);

        let mut previous = Value::Null;
        let mut seen_to = HashSet::new();
        for (n, event) in events.iter().enumerate() {
            let changes = &event["payload"]["changes"];
            assert_eq!(change_keys(event), vec!["interview_summary"], "event {n}: {event}");
            let change = &changes["interview_summary"];
            assert_eq!(change["from"], previous, "event {n} must start where event {} ended: {event}", n.wrapping_sub(1));
            assert_eq!(event["payload"]["data"]["interview_summary"], change["to"]);
            previous = change["to"].clone();
            seen_to.insert(previous.as_str().unwrap().to_owned());
        }
        assert_eq!(seen_to.len(), 50, "every update appears once in the chain");

        let (status, interview) = app.a.get("/v1/interviews/cand_race").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(interview["interview_summary"], previous, "the last event's `to` is the current state");
    }
}
