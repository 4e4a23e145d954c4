//! Endpoints: their lifecycle, what each one receives (event types, enabled, deleted), and the lists with
//! their cursors and filters.

use std::collections::HashSet;

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::on_both_stores;

fn id(value: &Value) -> &str {
    value["id"].as_str().unwrap_or_else(|| panic!("no id in {value}"))
}

on_both_stores! {
    async fn endpoint_lifecycle_create_read_update_delete() {
        let app = TestApp::spawn().await;
        let receiver = Receiver::ok().await;

        let created = app.a.create_endpoint(&receiver.url()).await;
        assert_endpoint_shape(&created);
        assert_eq!(created["url"], receiver.url());
        assert_eq!(created["event_types"], json!(["candidate.interview.updated"]), "the default subscription");
        assert_eq!(created["enabled"], true);
        assert!(created["secret"].as_str().is_some_and(|s| s.starts_with("whsec_")), "{created}");
        let ep = id(&created).to_owned();
        let path = format!("/v1/endpoints/{ep}");

        let (status, read) = app.a.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{read}");
        assert_endpoint_shape(&read);
        for field in ["id", "url", "description", "event_types", "enabled", "created_at", "updated_at"] {
            assert_eq!(read[field], created[field], "GET shows the same {field}");
        }
        let listed = app.a.list("/v1/endpoints").await;
        assert_eq!(listed.len(), 1);
        assert_eq!(id(&listed[0]), ep);

        let full = app
            .a
            .create_endpoint_with(json!({
                "url": receiver.url_for("/calls"),
                "description": "calls and interviews",
                "event_types": ["call_completed", "candidate.interview.updated"],
                "enabled": false
            }))
            .await;
        assert_eq!(full["description"], "calls and interviews");
        let mut types: Vec<&str> = full["event_types"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
        types.sort();
        assert_eq!(types, vec!["call_completed", "candidate.interview.updated"]);
        assert_eq!(full["enabled"], false);

        let (status, patched) = app.a.patch(&path, json!({ "description": "renamed", "enabled": false })).await;
        assert_eq!(status, StatusCode::OK, "{patched}");
        assert_endpoint_shape(&patched);
        assert_eq!(patched["description"], "renamed");
        assert_eq!(patched["enabled"], false);
        assert_eq!(patched["url"], created["url"], "fields not sent are unchanged");
        assert_eq!(patched["event_types"], created["event_types"], "fields not sent are unchanged");
        assert_eq!(patched["created_at"], created["created_at"]);
        assert!(patched["updated_at"].as_str().unwrap() >= created["updated_at"].as_str().unwrap());

        let (status, patched) = app
            .a
            .patch(&path, json!({ "url": receiver.url_for("/moved"), "event_types": ["call_completed"], "enabled": true }))
            .await;
        assert_eq!(status, StatusCode::OK, "{patched}");
        assert_eq!(patched["url"], receiver.url_for("/moved"));
        assert_eq!(patched["event_types"], json!(["call_completed"]));
        assert_eq!(patched["enabled"], true);
        let (_, read) = app.a.get(&path).await;
        assert_eq!(read["url"], receiver.url_for("/moved"), "the PATCH is stored");

        let (status, body) = app.a.delete(&path).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
        let (status, body) = app.a.get(&path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        assert_error_envelope(&body);
        let (status, _) = app.a.delete(&path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "deleting twice answers 404");
        let (status, _) = app.a.patch(&path, json!({ "description": "ghost" })).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let listed = app.a.list("/v1/endpoints").await;
        assert_eq!(listed.len(), 1, "only the other endpoint is left");
        assert_eq!(id(&listed[0]), id(&full));
    }

    async fn endpoints_get_only_the_event_types_they_subscribe_to() {
        let app = TestApp::spawn().await;
        let interviews_rx = Receiver::ok().await;
        let calls_rx = Receiver::ok().await;
        let both_rx = Receiver::ok().await;
        let interviews = app.a.create_endpoint(&interviews_rx.url()).await;
        let calls = app.a.create_endpoint_with(json!({ "url": calls_rx.url(), "event_types": ["call_completed"] })).await;
        let both = app
            .a
            .create_endpoint_with(json!({
                "url": both_rx.url(),
                "event_types": ["candidate.interview.updated", "call_completed"]
            }))
            .await;

        let interview_event =
            app.a.patch_interview("cand_types", json!({ "interview_outcome": "qualified" })).await["event"]["id"]
                .as_str()
                .unwrap()
                .to_owned();
        let call_event = app.a.post_call(doc_call_example()).await["id"].as_str().unwrap().to_owned();

        let got = both_rx.wait_for(2).await;
        let mut ids: Vec<String> = got.iter().map(|r| r.webhook_id()).collect();
        ids.sort();
        let mut expected = vec![interview_event.clone(), call_event.clone()];
        expected.sort();
        assert_eq!(ids, expected, "the endpoint subscribed to both gets both");
        let got = interviews_rx.wait_for(1).await;
        assert_eq!(got[0].webhook_id(), interview_event);
        assert_eq!(got[0].json()["event"], "interview.updated");
        let got = calls_rx.wait_for(1).await;
        assert_eq!(got[0].webhook_id(), call_event);
        assert_eq!(got[0].json(), doc_call_example());

        // The deliveries say the same, so the receivers' counts are final.
        let for_interviews = app.a.deliveries(&format!("endpoint_id={}", id(&interviews))).await;
        assert_eq!(for_interviews.len(), 1, "{for_interviews:?}");
        assert_eq!(for_interviews[0]["event_id"], interview_event.as_str());
        let for_calls = app.a.deliveries(&format!("endpoint_id={}", id(&calls))).await;
        assert_eq!(for_calls.len(), 1, "{for_calls:?}");
        assert_eq!(for_calls[0]["event_id"], call_event.as_str());
        assert_eq!(app.a.deliveries(&format!("endpoint_id={}", id(&both))).await.len(), 2);
        tokio::time::sleep(ms(200)).await;
        assert_eq!(interviews_rx.count(), 1, "no call_completed for an interview-only endpoint");
        assert_eq!(calls_rx.count(), 1, "no interview event for a call-only endpoint");
    }

    async fn disabled_endpoint_gets_nothing() {
        let app = TestApp::spawn().await;
        let control = Receiver::ok().await;
        let off_rx = Receiver::ok().await;
        let later_off_rx = Receiver::ok().await;
        app.a.create_endpoint(&control.url()).await;
        let off = app.a.create_endpoint_with(json!({ "url": off_rx.url(), "enabled": false })).await;
        let later_off = app.a.create_endpoint(&later_off_rx.url()).await;
        let (status, body) = app.a.patch(&format!("/v1/endpoints/{}", id(&later_off)), json!({ "enabled": false })).await;
        assert_eq!(status, StatusCode::OK, "{body}");

        app.a.patch_interview("cand_off", json!({ "interview_outcome": "qualified" })).await;
        control.wait_for(1).await;
        for ep in [&off, &later_off] {
            let deliveries = app.a.deliveries(&format!("endpoint_id={}", id(ep))).await;
            assert!(deliveries.is_empty(), "a disabled endpoint gets no delivery: {deliveries:?}");
        }
        tokio::time::sleep(ms(200)).await;
        assert_eq!(off_rx.count(), 0);
        assert_eq!(later_off_rx.count(), 0);

        // Enabled again, it gets the next event (and only that one).
        let (status, _) = app.a.patch(&format!("/v1/endpoints/{}", id(&off)), json!({ "enabled": true })).await;
        assert_eq!(status, StatusCode::OK);
        let answer = app.a.patch_interview("cand_off", json!({ "interview_outcome": "completed" })).await;
        let got = off_rx.wait_for(1).await;
        assert_eq!(got[0].webhook_id(), answer["event"]["id"].as_str().unwrap());
        assert_eq!(later_off_rx.count(), 0);
    }

    async fn test_on_a_disabled_endpoint_is_a_conflict() {
        let app = TestApp::spawn().await;
        let receiver = Receiver::ok().await;
        let off = app.a.create_endpoint_with(json!({ "url": receiver.url(), "enabled": false })).await;
        let (status, body) = app.a.post_empty(&format!("/v1/endpoints/{}/test", id(&off))).await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert_error_envelope(&body);
        assert!(app.a.deliveries("").await.is_empty());
        assert_eq!(receiver.count(), 0);
    }

    async fn deleted_endpoint_gets_nothing_more() {
        // Long enough between retries that the delete comes first, however slow the machine.
        let app = TestApp::spawn_with(|c| c.retry_schedule = vec![ms(2000)]).await;
        let doomed_rx = Receiver::start(Reply::Status(500)).await;
        let control = Receiver::ok().await;
        let doomed = app.a.create_endpoint(&doomed_rx.url()).await;

        app.a.patch_interview("cand_gone", json!({ "interview_outcome": "qualified" })).await;
        doomed_rx.wait_for(1).await;
        let (status, _) = app.a.delete(&format!("/v1/endpoints/{}", id(&doomed))).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let deleted_at = std::time::Instant::now();

        app.a.create_endpoint(&control.url()).await;
        app.a.patch_interview("cand_gone", json!({ "interview_outcome": "completed" })).await;
        control.wait_for(1).await;
        let pending = app.a.deliveries(&format!("endpoint_id={}&status=pending", id(&doomed))).await;
        assert!(pending.is_empty(), "nothing pending for a deleted endpoint: {pending:?}");
        // Past the whole retry schedule: the pending retries of the deleted endpoint never came.
        tokio::time::sleep_until((deleted_at + ms(3000)).into()).await;
        assert_eq!(doomed_rx.count(), 1, "a deleted endpoint gets no retry and no new event");
    }

    async fn lists_are_newest_first_and_cursor_paginated() {
        let app = TestApp::spawn().await;
        let receiver = Receiver::ok().await;
        let mut endpoint_ids = Vec::new();
        for n in 0..5 {
            endpoint_ids.push(id(&app.a.create_endpoint(&receiver.url_for(&format!("/e{n}"))).await).to_owned());
        }
        let mut event_ids = Vec::new();
        for n in 0..3 {
            let answer = app.a.patch_interview(&format!("cand_page_{n}"), json!({ "interview_summary": "s" })).await;
            event_ids.push(answer["event"]["id"].as_str().unwrap().to_owned());
        }
        // 3 events x 5 endpoints
        eventually("15 deliveries", WAIT, || async { (app.a.deliveries("").await.len() == 15).then_some(()) }).await;

        async fn walk(api: &Api, path: &str, limit: usize) -> Vec<String> {
            let mut ids = Vec::new();
            let mut cursor: Option<String> = None;
            for _ in 0..50 {
                let sep = if path.contains('?') { '&' } else { '?' };
                let url = match &cursor {
                    Some(c) => format!("{path}{sep}limit={limit}&cursor={}", encode(c)),
                    None => format!("{path}{sep}limit={limit}"),
                };
                let (status, page) = api.get(&url).await;
                assert_eq!(status, StatusCode::OK, "GET {url}: {page}");
                let data = page["data"].as_array().unwrap();
                assert!(data.len() <= limit, "a page holds at most limit items");
                ids.extend(data.iter().map(|v| v["id"].as_str().unwrap().to_owned()));
                match page["next_cursor"].as_str() {
                    Some(next) => cursor = Some(next.to_owned()),
                    None => {
                        assert!(page["next_cursor"].is_null(), "next_cursor is a string or null: {page}");
                        return ids;
                    }
                }
            }
            panic!("{path} never ended");
        }

        let listed = walk(&app.a, "/v1/endpoints", 2).await;
        let mut newest_first = endpoint_ids.clone();
        newest_first.reverse();
        assert_eq!(listed, newest_first, "endpoints newest first, every one once");

        let listed = walk(&app.a, "/v1/events", 2).await;
        let mut newest_first = event_ids.clone();
        newest_first.reverse();
        assert_eq!(listed, newest_first, "events newest first, every one once");

        let listed = walk(&app.a, "/v1/deliveries", 4).await;
        assert_eq!(listed.len(), 15);
        assert_eq!(listed.iter().collect::<HashSet<_>>().len(), 15, "no delivery twice across pages");
        let all = app.a.deliveries("").await;
        let in_one_page: Vec<String> = all.iter().map(|d| id(d).to_owned()).collect();
        assert_eq!(listed, in_one_page, "pages follow the same order as one big page");
        // Newest first: the deliveries of the last event come before those of the first.
        let first_of_last = all.iter().position(|d| d["event_id"] == event_ids[2].as_str()).unwrap();
        let last_of_first = all.iter().rposition(|d| d["event_id"] == event_ids[0].as_str()).unwrap();
        assert!(first_of_last < last_of_first, "deliveries newest first");

        let (status, page) = app.a.get("/v1/endpoints").await;
        assert_eq!(status, StatusCode::OK);
        assert!(page["next_cursor"].is_null(), "5 endpoints fit the default page: {page}");
        let (status, page) = app.a.get("/v1/events?limit=250").await;
        assert_eq!(status, StatusCode::OK, "250 is allowed: {page}");
        let (status, page) = app.a.get("/v1/events?limit=1").await;
        assert_eq!(status, StatusCode::OK, "1 is allowed: {page}");
        assert_eq!(page["data"].as_array().unwrap().len(), 1);
        assert!(page["next_cursor"].is_string());
    }

    async fn deliveries_filter_by_endpoint_event_and_status() {
        let app = TestApp::spawn_with(|c| c.retry_schedule = vec![std::time::Duration::from_secs(60)]).await;
        let good_rx = Receiver::ok().await;
        let bad_rx = Receiver::start(Reply::Status(500)).await;
        let good = app.a.create_endpoint(&good_rx.url()).await;
        let bad = app.a.create_endpoint(&bad_rx.url()).await;
        let e1 = app.a.patch_interview("cand_f1", json!({ "interview_summary": "one" })).await["event"]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let e2 = app.a.patch_interview("cand_f2", json!({ "interview_summary": "two" })).await["event"]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        good_rx.wait_for(2).await;
        bad_rx.wait_for(2).await;
        eventually("both good deliveries succeeded", WAIT, || async {
            (app.a.deliveries("status=succeeded").await.len() == 2).then_some(())
        })
        .await;
        // The failures' results may be written in a later batch than the successes'.
        eventually("both failures recorded", WAIT, || async {
            let pending = app.a.deliveries("status=pending").await;
            (pending.len() == 2 && pending.iter().all(|d| d["attempt_count"] == 1)).then_some(())
        })
        .await;

        let by_endpoint = app.a.deliveries(&format!("endpoint_id={}", id(&good))).await;
        assert_eq!(by_endpoint.len(), 2);
        assert!(by_endpoint.iter().all(|d| d["endpoint_id"] == good["id"]));
        let by_event = app.a.deliveries(&format!("event_id={e1}")).await;
        assert_eq!(by_event.len(), 2);
        assert!(by_event.iter().all(|d| d["event_id"] == e1.as_str()));
        let succeeded = app.a.deliveries("status=succeeded").await;
        assert!(succeeded.iter().all(|d| d["endpoint_id"] == good["id"] && d["status"] == "succeeded"));
        let pending = app.a.deliveries("status=pending").await;
        assert_eq!(pending.len(), 2, "the failing endpoint's deliveries wait for their retry: {pending:?}");
        for d in &pending {
            assert_eq!(d["endpoint_id"], bad["id"]);
            assert_eq!(d["attempt_count"], 1);
            assert_utc_timestamp(&d["next_attempt_at"], "a scheduled retry has next_attempt_at");
        }
        let combined = app.a.deliveries(&format!("endpoint_id={}&event_id={e2}&status=pending", id(&bad))).await;
        assert_eq!(combined.len(), 1);
        assert_eq!(combined[0]["event_id"], e2.as_str());
        assert!(app.a.deliveries("status=undeliverable").await.is_empty());
    }
}
