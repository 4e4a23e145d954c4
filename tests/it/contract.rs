//! The public contract: what receivers get equals the document's examples, field for field.

use axum::http::{Method, StatusCode};
use serde_json::json;

use crate::helpers::*;
use crate::on_both_stores;

on_both_stores! {
    async fn documented_example_update_is_delivered_field_for_field() {
        let app = TestApp::spawn().await;

        // The interview as it stood before the documented update; no endpoint exists yet, so nothing is sent.
        app.a
            .patch_interview(
                "cand_12345678",
                json!({
                    "interview_sent_at": "2025-04-14T12:00:00Z",
                    "interview_summary": "Example of customizable interview summary text",
                    "interview_custom_data": { "can_lift_50lbs": true, "eligible_to_work": true }
                }),
            )
            .await;

        let receiver = Receiver::ok().await;
        app.a.create_endpoint(&receiver.url()).await;

        let answer = app
            .a
            .patch_interview(
                "cand_12345678",
                json!({ "interview_completed_at": "2025-04-15T16:00:00Z", "interview_outcome": "completed" }),
            )
            .await;
        let expected = doc_interview_example();
        assert_eq!(answer["interview"], expected["data"], "PATCH answers the data object");
        let event = &answer["event"];
        assert_event_shape(event);
        assert_eq!(event["type"], "candidate.interview.updated");
        assert_eq!(event["payload"], expected, "the event's payload is the documented body");

        let got = receiver.wait_for(1).await;
        let request = &got[0];
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/hook");
        assert_eq!(request.json(), expected, "the body received equals the document's example");
        assert!(
            request.header("content-type").is_some_and(|ct| ct.starts_with("application/json")),
            "content-type: {:?}",
            request.header("content-type")
        );
        assert!(
            request.header("user-agent").is_some_and(|ua| ua.starts_with("tidings/")),
            "user-agent: {:?}",
            request.header("user-agent")
        );
        assert_eq!(request.webhook_id(), event["id"].as_str().unwrap(), "webhook-id is the event id");
        let timestamp: i64 = request.header("webhook-timestamp").expect("webhook-timestamp").parse().expect("unix seconds");
        let now = chrono::Utc::now().timestamp();
        assert!((timestamp - now).abs() <= 60, "webhook-timestamp {timestamp} should be about now ({now})");
        assert!(request.header("webhook-signature").is_some_and(|s| s.starts_with("v1,")), "webhook-signature");

        // The event as stored equals the one answered, and the delivery succeeds; nothing else arrives.
        let (status, stored) = app.a.get(&format!("/v1/events/{}", event["id"].as_str().unwrap())).await;
        assert_eq!(status, StatusCode::OK, "{stored}");
        assert_eq!(&stored, event);
        let delivery = app.a.delivery_of_event(event["id"].as_str().unwrap()).await;
        let delivery = app.a.wait_delivery_status(delivery["id"].as_str().unwrap(), "succeeded").await;
        assert_delivery_shape(&delivery);
        assert_eq!(delivery["attempt_count"], 1);
        assert!(delivery["next_attempt_at"].is_null());
        assert_eq!(receiver.count(), 1, "only the update made after subscribing is delivered");

        let (status, interview) = app.a.get("/v1/interviews/cand_12345678").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(interview, expected["data"]);
    }

    async fn test_endpoint_sends_the_document_example_to_that_endpoint_alone() {
        let app = TestApp::spawn().await;
        let receiver = Receiver::ok().await;
        let bystander = Receiver::ok().await;
        let ep = app.a.create_endpoint(&receiver.url()).await;
        let other = app.a.create_endpoint(&bystander.url()).await;
        let ep_id = ep["id"].as_str().unwrap();

        let (status, delivery) = app.a.post_empty(&format!("/v1/endpoints/{ep_id}/test")).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{delivery}");
        assert_delivery_shape(&delivery);
        assert_eq!(delivery["endpoint_id"], ep["id"]);

        let got = receiver.wait_for(1).await;
        assert_eq!(got[0].json(), doc_interview_example(), "/test sends the document's example");
        assert_eq!(got[0].webhook_id(), delivery["event_id"].as_str().unwrap());
        let secret = ep["secret"].as_str().unwrap();
        standardwebhooks::Webhook::new(secret)
            .unwrap()
            .verify(&got[0].body, &got[0].headers)
            .expect("the test delivery is signed like any other");

        app.a.wait_delivery_status(delivery["id"].as_str().unwrap(), "succeeded").await;
        let others = app.a.deliveries(&format!("endpoint_id={}", other["id"].as_str().unwrap())).await;
        assert!(others.is_empty(), "the other endpoint gets no delivery: {others:?}");
        assert_eq!(bystander.count(), 0);
        assert_eq!(receiver.count(), 1);
    }

    async fn call_completed_body_is_delivered_as_received() {
        let app = TestApp::spawn().await;
        let receiver = Receiver::ok().await;
        app.a.create_endpoint_with(json!({ "url": receiver.url(), "event_types": ["call_completed"] })).await;

        let mut body = doc_call_example();
        body["extra_field_we_do_not_know"] = json!({ "kept": [1, 2.5, "three"], "nested": null });
        let event = app.a.post_call(body.clone()).await;
        assert_event_shape(&event);
        assert_eq!(event["type"], "call_completed");
        assert_eq!(event["payload"], body, "the event payload is the call as sent, unknown fields kept");

        let got = receiver.wait_for(1).await;
        assert_eq!(got[0].json(), body, "the receiver gets the call as sent");
        assert_eq!(got[0].webhook_id(), event["id"].as_str().unwrap());
    }

    /// The bytes a receiver gets are the bytes posted: spacing, key order and number spellings (`1e2`, `1.50`)
    /// are kept, which re-serializing would change. A documented field may be `null`.
    async fn call_completed_bytes_are_sent_as_posted() {
        let app = TestApp::spawn().await;
        let receiver = Receiver::ok().await;
        app.a.create_endpoint_with(json!({ "url": receiver.url(), "event_types": ["call_completed"] })).await;
        let posted = "{ \"call_id\" : \"c1\",\n  \"candidate_id\": \"12345\", \"recording_url\": null,\n  \
                      \"call_details\": {\"duration\": 1e2, \"e2e_latency\": 1.50}, \"z\": \"\\u00e9\" }";
        let (status, event) =
            app.a.raw(Method::POST, "/v1/calls", Some("application/json"), Some(posted.as_bytes().to_vec())).await;
        assert_eq!(status, StatusCode::CREATED, "{event}");
        let got = receiver.wait_for(1).await;
        assert_eq!(got[0].body, posted.as_bytes(), "the receiver gets the posted bytes");
        assert_eq!(got[0].webhook_id(), event["event"]["id"].as_str().unwrap());
    }

    async fn documented_call_example_is_accepted_as_is() {
        let app = TestApp::spawn().await;
        let event = app.a.post_call(doc_call_example()).await;
        assert_eq!(event["payload"], doc_call_example());
        let (status, stored) = app.a.get(&format!("/v1/events/{}", event["id"].as_str().unwrap())).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(stored, event);
    }
}
