//! Organizations never see each other's rows: another organization's id answers 404 on every route, lists
//! leave them out, and interviews are kept per organization.

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::*;
use crate::on_both_stores;

struct OrgARows {
    endpoint: Value,
    event_id: String,
    delivery_id: String,
}

async fn rows_of_a(app: &TestApp, receiver: &Receiver) -> OrgARows {
    let endpoint = app.a.create_endpoint(&receiver.url()).await;
    let answer = app.a.patch_interview("cand_shared", json!({ "interview_summary": "A's summary" })).await;
    let event_id = answer["event"]["id"].as_str().unwrap().to_owned();
    let delivery = app.a.delivery_of_event(&event_id).await;
    let delivery_id = delivery["id"].as_str().unwrap().to_owned();
    app.a.wait_delivery_status(&delivery_id, "succeeded").await;
    OrgARows { endpoint, event_id, delivery_id }
}

on_both_stores! {
    async fn another_organizations_ids_answer_404_on_every_route() {
        let app = TestApp::spawn().await;
        let receiver = Receiver::ok().await;
        let a = rows_of_a(&app, &receiver).await;
        let ep = a.endpoint["id"].as_str().unwrap();
        let evt = &a.event_id;
        let dlv = &a.delivery_id;

        let routes: Vec<(Method, String, Option<Value>)> = vec![
            (Method::GET, format!("/v1/endpoints/{ep}"), None),
            (Method::PATCH, format!("/v1/endpoints/{ep}"), Some(json!({ "description": "taken over", "enabled": false }))),
            (Method::GET, format!("/v1/endpoints/{ep}/secret"), None),
            (Method::POST, format!("/v1/endpoints/{ep}/rotate-secret"), None),
            (Method::POST, format!("/v1/endpoints/{ep}/test"), None),
            (Method::DELETE, format!("/v1/endpoints/{ep}"), None),
            (Method::GET, format!("/v1/events/{evt}"), None),
            (Method::GET, format!("/v1/deliveries/{dlv}"), None),
            (Method::POST, format!("/v1/deliveries/{dlv}/retry"), None),
        ];
        for (method, path, body) in &routes {
            let (status, answer) = app.b.send(method.clone(), path, body.as_ref()).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "org B: {method} {path}: {answer}");
            assert_error_envelope(&answer);
        }

        // None of B's calls touched A's rows.
        let (status, endpoint) = app.a.get(&format!("/v1/endpoints/{ep}")).await;
        assert_eq!(status, StatusCode::OK, "B's DELETE must not remove A's endpoint: {endpoint}");
        assert_eq!(endpoint["description"], a.endpoint["description"]);
        assert_eq!(endpoint["enabled"], true);
        let (_, secret) = app.a.get(&format!("/v1/endpoints/{ep}/secret")).await;
        assert_eq!(secret["secret"], a.endpoint["secret"], "B's rotate must not rotate A's secret");
        let delivery = app.a.delivery(dlv).await;
        assert_eq!(delivery["attempt_count"], 1, "B's retry and test must not send anything: {delivery}");
        tokio::time::sleep(ms(200)).await;
        assert_eq!(receiver.count(), 1, "B's test and retry sent nothing to A's endpoint");
        assert_eq!(app.a.deliveries("").await.len(), 1);
    }

    async fn lists_show_only_the_callers_rows() {
        let app = TestApp::spawn().await;
        let receiver = Receiver::ok().await;
        let a = rows_of_a(&app, &receiver).await;
        let ep = a.endpoint["id"].as_str().unwrap();

        assert!(app.b.list("/v1/endpoints").await.is_empty());
        assert!(app.b.list("/v1/events").await.is_empty());
        assert!(app.b.list("/v1/deliveries").await.is_empty());
        for query in [format!("endpoint_id={ep}"), format!("event_id={}", a.event_id)] {
            let (status, body) = app.b.get(&format!("/v1/deliveries?{query}")).await;
            match status {
                StatusCode::OK => assert!(body["data"].as_array().unwrap().is_empty(), "{query}: {body}"),
                StatusCode::NOT_FOUND => {}
                other => panic!("deliveries?{query} for org B answered {other}: {body}"),
            }
        }

        // B's own rows appear to B and not to A.
        let b_ep = app.b.create_endpoint(&receiver.url_for("/b")).await;
        let b_event = app.b.post_call(doc_call_example()).await;
        let b_endpoints = app.b.list("/v1/endpoints").await;
        assert_eq!(b_endpoints.len(), 1);
        assert_eq!(b_endpoints[0]["id"], b_ep["id"]);
        let b_events = app.b.list("/v1/events").await;
        assert_eq!(b_events.len(), 1);
        assert_eq!(b_events[0]["id"], b_event["id"]);
        let a_endpoints = app.a.list("/v1/endpoints").await;
        assert!(a_endpoints.iter().all(|e| e["id"] != b_ep["id"]));
        let a_events = app.a.list("/v1/events").await;
        assert!(a_events.iter().all(|e| e["id"] != b_event["id"]));
    }

    async fn interviews_and_their_events_are_per_organization() {
        let app = TestApp::spawn().await;
        let a_rx = Receiver::ok().await;
        let b_rx = Receiver::ok().await;
        app.a.create_endpoint(&a_rx.url()).await;
        app.b.create_endpoint(&b_rx.url()).await;

        let a_answer = app
            .a
            .patch_interview("cand_same", json!({ "interview_summary": "A's view", "interview_outcome": "qualified" }))
            .await;
        let (status, body) = app.b.get("/v1/interviews/cand_same").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "B never wrote cand_same: {body}");

        // B's first write of the same candidate id diffs against all-null, not against A's interview.
        let b_answer = app.b.patch_interview("cand_same", json!({ "interview_summary": "B's view" })).await;
        assert_eq!(
            b_answer["event"]["payload"]["changes"],
            json!({ "interview_summary": { "from": null, "to": "B's view" } })
        );
        assert!(b_answer["interview"]["interview_outcome"].is_null());

        let (_, a_interview) = app.a.get("/v1/interviews/cand_same").await;
        assert_eq!(a_interview, a_answer["interview"], "A's interview is untouched by B");

        let a_got = a_rx.wait_for(1).await;
        let b_got = b_rx.wait_for(1).await;
        assert_eq!(a_got[0].webhook_id(), a_answer["event"]["id"].as_str().unwrap());
        assert_eq!(b_got[0].webhook_id(), b_answer["event"]["id"].as_str().unwrap());
        // The store made one delivery per organization; absence at the receivers cannot be polled for.
        assert_eq!(app.a.deliveries("").await.len(), 1);
        assert_eq!(app.b.deliveries("").await.len(), 1);
        tokio::time::sleep(ms(200)).await;
        assert_eq!(a_rx.count(), 1, "A's endpoint gets only A's events");
        assert_eq!(b_rx.count(), 1, "B's endpoint gets only B's events");
    }
}
