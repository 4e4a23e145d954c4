//! Delivery outcomes: what acknowledges, what fails (status, timeout, redirect, refused connection), the retry
//! schedule, `undeliverable`, and manual retry.

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::on_both_stores;

/// Creates an endpoint to `receiver`, PATCHes one interview and answers (event id, delivery id).
async fn one_delivery(app: &TestApp, url: &str, candidate: &str) -> (String, String) {
    let endpoint = app.a.create_endpoint(url).await;
    let answer = app.a.patch_interview(candidate, json!({ "interview_outcome": "qualified" })).await;
    let event_id = answer["event"]["id"].as_str().expect("an event").to_owned();
    let query = format!("event_id={event_id}&endpoint_id={}", endpoint["id"].as_str().unwrap());
    let delivery = app.a.only_delivery(&query).await;
    (event_id, delivery["id"].as_str().unwrap().to_owned())
}

fn attempts(delivery: &Value) -> &Vec<Value> {
    delivery["attempts"].as_array().unwrap_or_else(|| panic!("GET /v1/deliveries/{{id}} has attempts: {delivery}"))
}

fn assert_attempt_shape(attempt: &Value) {
    assert!(attempt["number"].is_u64(), "attempt number: {attempt}");
    assert!(matches!(attempt["trigger"].as_str(), Some("scheduled" | "manual")), "attempt trigger: {attempt}");
    assert_utc_timestamp(&attempt["started_at"], "attempt started_at");
    assert!(attempt["duration_ms"].is_u64(), "attempt duration_ms: {attempt}");
    assert!(attempt.get("status_code").is_some(), "attempt status_code missing: {attempt}");
    assert!(attempt.get("error").is_some(), "attempt error missing: {attempt}");
    assert!(attempt.get("response_body").is_some(), "attempt response_body missing: {attempt}");
}

on_both_stores! {
    async fn failing_receiver_gets_four_attempts_with_growing_gaps_then_undeliverable() {
        let schedule = [ms(50), ms(250), ms(700)];
        let app = TestApp::spawn_with(|c| c.retry_schedule = schedule.to_vec()).await;
        let receiver = Receiver::start(Reply::Status(500)).await;
        let (event_id, delivery_id) = one_delivery(&app, &receiver.url(), "cand_retry").await;

        let got = receiver.wait_for(4).await;
        // Each retry waits for its own (growing) delay. A stalled machine can only lengthen a gap, so the upper
        // bound is loose: it tells the schedule apart from a poll interval or the production delays.
        let gaps: Vec<Duration> = got.windows(2).map(|w| w[1].at - w[0].at).collect();
        assert_eq!(gaps.len(), schedule.len());
        for (gap, delay) in gaps.iter().zip(schedule) {
            assert!(*gap >= delay.mul_f64(0.9), "a retry came after {gap:?}, before its delay {delay:?}: {gaps:?}");
            assert!(*gap < delay + Duration::from_secs(10), "a retry came {gap:?} after its delay {delay:?}");
        }
        for request in &got {
            assert_eq!(request.webhook_id(), event_id, "webhook-id is the same on every attempt");
            assert_eq!(request.body, got[0].body, "the body bytes are identical on every attempt");
        }

        let delivery = app.a.wait_delivery_status(&delivery_id, "undeliverable").await;
        assert_delivery_shape(&delivery);
        assert_eq!(delivery["attempt_count"], 4);
        assert!(delivery["next_attempt_at"].is_null(), "nothing is scheduled any more: {delivery}");
        let logged = attempts(&delivery);
        assert_eq!(logged.len(), 4, "{delivery:#}");
        let mut numbers: Vec<u64> = logged.iter().map(|a| a["number"].as_u64().unwrap()).collect();
        numbers.sort();
        assert_eq!(numbers, vec![1, 2, 3, 4]);
        for attempt in logged {
            assert_attempt_shape(attempt);
            assert_eq!(attempt["trigger"], "scheduled");
            assert_eq!(attempt["status_code"], 500);
            assert_eq!(attempt["error"], "status");
            assert_eq!(attempt["response_body"], "receiver says 500");
        }

        // Nothing more: wait twice the longest delay beyond the last attempt.
        tokio::time::sleep_until((got[3].at + ms(1400)).into()).await;
        assert_eq!(receiver.count(), 4, "no attempt after the last retry");
        let delivery = app.a.delivery(&delivery_id).await;
        assert_eq!(delivery["status"], "undeliverable");
        assert_eq!(attempts(&delivery).len(), 4);
    }

    async fn receiver_hanging_past_the_timeout_fails_with_timeout() {
        let app = TestApp::spawn_with(|c| {
            // Long enough that a stalled machine does not cut an attempt before its request is written.
            c.attempt_timeout = ms(1000);
            c.retry_schedule = vec![ms(50)];
        })
        .await;
        // The receiver would answer only after a minute: an attempt that ends sooner was cut by the timeout.
        let receiver = Receiver::start(Reply::Slow(Duration::from_secs(60), 200)).await;
        let (_, delivery_id) = one_delivery(&app, &receiver.url(), "cand_slow").await;

        let delivery = app.a.wait_delivery_status(&delivery_id, "undeliverable").await;
        assert_eq!(delivery["attempt_count"], 2);
        assert_eq!(attempts(&delivery).len(), 2, "{delivery:#}");
        for attempt in attempts(&delivery) {
            assert_attempt_shape(attempt);
            assert_eq!(attempt["error"], "timeout", "{attempt}");
            assert!(attempt["status_code"].is_null(), "{attempt}");
            let took = attempt["duration_ms"].as_u64().unwrap();
            assert!((1000..60_000).contains(&took), "an attempt is cut at the timeout, took {took} ms");
        }
        assert_eq!(receiver.count(), 2);
    }

    async fn redirect_is_a_failure_and_is_not_followed() {
        let app = TestApp::spawn_with(|c| c.retry_schedule = vec![ms(50)]).await;
        let receiver = Receiver::ok().await;
        receiver.set_reply(Reply::Redirect(receiver.url_for("/landed")));
        let (_, delivery_id) = one_delivery(&app, &receiver.url(), "cand_redirect").await;

        let delivery = app.a.wait_delivery_status(&delivery_id, "undeliverable").await;
        assert_eq!(delivery["attempt_count"], 2);
        assert_eq!(attempts(&delivery).len(), 2, "{delivery:#}");
        for attempt in attempts(&delivery) {
            assert_eq!(attempt["status_code"], 302, "{attempt}");
            assert_eq!(attempt["error"], "status", "{attempt}");
        }
        let paths: Vec<String> = receiver.received().into_iter().map(|r| r.path).collect();
        assert_eq!(paths, vec!["/hook", "/hook"], "the Location is never followed");
    }

    async fn refused_connection_fails_with_connect() {
        let app = TestApp::spawn_with(|c| c.retry_schedule = vec![ms(50)]).await;
        // A port held but not listened on: connections to it are refused, and no other test can take it.
        let held = tokio::net::TcpSocket::new_v4().unwrap();
        held.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let url = format!("http://127.0.0.1:{}/hook", held.local_addr().unwrap().port());
        let (_, delivery_id) = one_delivery(&app, &url, "cand_refused").await;

        let delivery = app.a.wait_delivery_status(&delivery_id, "undeliverable").await;
        assert_eq!(delivery["attempt_count"], 2);
        assert_eq!(attempts(&delivery).len(), 2, "{delivery:#}");
        for attempt in attempts(&delivery) {
            assert_eq!(attempt["error"], "connect", "{attempt}");
            assert!(attempt["status_code"].is_null(), "{attempt}");
        }
    }

    async fn any_2xx_acknowledges() {
        let app = TestApp::spawn().await;
        for code in [201u16, 202, 204, 299] {
            // Each code gets its own endpoint; the earlier ones are disabled so each receiver gets one request.
            for endpoint in app.a.list("/v1/endpoints").await {
                let path = format!("/v1/endpoints/{}", endpoint["id"].as_str().unwrap());
                let (status, body) = app.a.patch(&path, json!({ "enabled": false })).await;
                assert_eq!(status, StatusCode::OK, "{body}");
            }
            let receiver = Receiver::start(Reply::Status(code)).await;
            let (_, delivery_id) = one_delivery(&app, &receiver.url(), &format!("cand_{code}")).await;
            let delivery = app.a.wait_delivery_status(&delivery_id, "succeeded").await;
            assert_eq!(delivery["attempt_count"], 1, "{code} acknowledges at once: {delivery:#}");
            assert_eq!(attempts(&delivery)[0]["status_code"], code);
            assert!(attempts(&delivery)[0]["error"].is_null());
            assert!(delivery["next_attempt_at"].is_null());
            assert_eq!(receiver.wait_for(1).await.len(), 1);
        }
    }

    async fn success_on_a_retry_stops_the_retries() {
        let app = TestApp::spawn_with(|c| c.retry_schedule = vec![ms(50), ms(100), ms(150)]).await;
        let receiver = Receiver::ok().await;
        receiver.then(Reply::Status(503));
        let (_, delivery_id) = one_delivery(&app, &receiver.url(), "cand_later").await;

        let delivery = app.a.wait_delivery_status(&delivery_id, "succeeded").await;
        assert_eq!(delivery["attempt_count"], 2);
        let mut logged = attempts(&delivery).clone();
        logged.sort_by_key(|a| a["number"].as_u64());
        assert_eq!(logged[0]["status_code"], 503);
        assert_eq!(logged[0]["error"], "status");
        assert_eq!(logged[1]["status_code"], 200);
        assert!(logged[1]["error"].is_null());
        assert!(delivery["next_attempt_at"].is_null());
        tokio::time::sleep(ms(400)).await;
        assert_eq!(receiver.count(), 2, "no attempt after success");
    }

    /// A reply body is logged as text: bytes that are not UTF-8, and NUL characters (which PostgreSQL's text
    /// refuses, and which once failed the whole batch of results they were written with), become U+FFFD.
    async fn a_reply_body_with_nul_and_binary_bytes_is_logged_as_text() {
        let app = TestApp::spawn().await;
        let receiver = Receiver::start(Reply::Bytes(200, b"O\0K\0\xff")).await;
        let (_, delivery_id) = one_delivery(&app, &receiver.url(), "cand_nul").await;
        let delivery = app.a.wait_delivery_status(&delivery_id, "succeeded").await;
        let logged = attempts(&delivery);
        assert_eq!(logged.len(), 1, "{delivery:#}");
        assert_eq!(logged[0]["response_body"], "O\u{FFFD}K\u{FFFD}\u{FFFD}");
        assert_eq!(receiver.count(), 1, "acknowledged once, sent once");
    }

    async fn manual_retry_of_an_undeliverable_delivery_succeeds() {
        let app = TestApp::spawn_with(|c| c.retry_schedule = vec![ms(30)]).await;
        let receiver = Receiver::start(Reply::Status(500)).await;
        let (event_id, delivery_id) = one_delivery(&app, &receiver.url(), "cand_manual").await;
        app.a.wait_delivery_status(&delivery_id, "undeliverable").await;
        assert_eq!(receiver.count(), 2);

        receiver.set_reply(Reply::Status(200));
        let (status, answer) = app.a.post_empty(&format!("/v1/deliveries/{delivery_id}/retry")).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
        assert_delivery_shape(&answer);
        assert_eq!(answer["id"], delivery_id.as_str());

        let delivery = app.a.wait_delivery_status(&delivery_id, "succeeded").await;
        assert_eq!(delivery["attempt_count"], 3);
        let mut logged = attempts(&delivery).clone();
        logged.sort_by_key(|a| a["number"].as_u64());
        assert_eq!(logged.len(), 3);
        assert_eq!(logged[2]["trigger"], "manual");
        assert_eq!(logged[2]["status_code"], 200);
        assert!(logged[2]["error"].is_null());
        assert_eq!(logged[0]["trigger"], "scheduled");

        let got = receiver.wait_for(3).await;
        assert_eq!(got.len(), 3);
        for request in &got {
            assert_eq!(request.webhook_id(), event_id);
            assert_eq!(request.body, got[0].body);
        }
    }

    async fn manual_retry_of_a_succeeded_delivery_makes_one_more_attempt() {
        let app = TestApp::spawn().await;
        let receiver = Receiver::ok().await;
        let (_, delivery_id) = one_delivery(&app, &receiver.url(), "cand_again").await;
        app.a.wait_delivery_status(&delivery_id, "succeeded").await;

        let (status, answer) = app.a.post_empty(&format!("/v1/deliveries/{delivery_id}/retry")).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
        let delivery = app.a.wait_delivery(&delivery_id, "a second attempt", |d| d["attempt_count"] == 2).await;
        assert_eq!(delivery["status"], "succeeded");
        assert!(attempts(&delivery).iter().any(|a| a["trigger"] == "manual"));
        receiver.wait_for(2).await;
        tokio::time::sleep(ms(200)).await;
        assert_eq!(receiver.count(), 2, "exactly one more attempt");
    }

    /// A manual retry of an acknowledged delivery that fails is one logged attempt: the delivery stays
    /// `succeeded`, and its retry schedule does not start over.
    async fn a_failed_manual_retry_of_a_succeeded_delivery_sends_nothing_more() {
        let app = TestApp::spawn_with(|c| c.retry_schedule = vec![ms(30), ms(30), ms(30)]).await;
        let receiver = Receiver::ok().await;
        let (_, delivery_id) = one_delivery(&app, &receiver.url(), "cand_resend").await;
        app.a.wait_delivery_status(&delivery_id, "succeeded").await;

        receiver.set_reply(Reply::Status(500));
        let (status, answer) = app.a.post_empty(&format!("/v1/deliveries/{delivery_id}/retry")).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
        let delivery = app.a.wait_delivery(&delivery_id, "the manual attempt", |d| d["attempt_count"] == 2).await;
        assert_eq!(delivery["status"], "succeeded", "{delivery:#}");
        assert!(delivery["next_attempt_at"].is_null(), "no retry scheduled: {delivery}");
        let manual: Vec<&Value> = attempts(&delivery).iter().filter(|a| a["trigger"] == "manual").collect();
        assert_eq!(manual.len(), 1);
        assert_eq!(manual[0]["status_code"], 500);
        // Well past the whole schedule: nothing more was sent.
        tokio::time::sleep(ms(400)).await;
        assert_eq!(receiver.count(), 2, "the first attempt and the manual one");
        assert_eq!(app.a.delivery(&delivery_id).await["attempt_count"], 2);
    }

    /// A manual retry of a delivery whose endpoint is disabled would wait for no worker: it is refused with 409
    /// and changes nothing.
    async fn a_manual_retry_on_a_disabled_endpoint_is_refused() {
        let app = TestApp::spawn().await;
        let receiver = Receiver::ok().await;
        let (_, delivery_id) = one_delivery(&app, &receiver.url(), "cand_disabled").await;
        let delivery = app.a.wait_delivery_status(&delivery_id, "succeeded").await;
        let endpoint_id = delivery["endpoint_id"].as_str().unwrap();
        let (status, _) = app.a.patch(&format!("/v1/endpoints/{endpoint_id}"), json!({ "enabled": false })).await;
        assert_eq!(status, StatusCode::OK);

        let (status, answer) = app.a.post_empty(&format!("/v1/deliveries/{delivery_id}/retry")).await;
        assert_eq!(status, StatusCode::CONFLICT, "{answer}");
        assert_eq!(assert_error_envelope(&answer)["code"], "endpoint_disabled");
        let after = app.a.delivery(&delivery_id).await;
        assert_eq!((&after["status"], &after["attempt_count"]), (&json!("succeeded"), &json!(1)));
    }

    /// With polling as good as off, work still starts at once: deliveries the handoff had no room for (also
    /// when their endpoint's bound holds them back), a scheduled retry, and a manual retry each wake the
    /// workers themselves.
    async fn work_starts_without_polling() {
        let no_polling = |c: &mut tidings::ServeConfig| {
            c.poll_interval = Duration::from_secs(3600);
            c.retry_schedule = vec![ms(50), ms(100), ms(150)];
        };
        let app = TestApp::spawn_with(|c| {
            no_polling(c);
            c.max_in_flight = 1; // room for four handed-off deliveries
        })
        .await;
        let receiver = Receiver::ok().await;
        for n in 0..8 {
            app.a.create_endpoint(&receiver.url_for(&format!("/e{n}"))).await;
        }
        app.a.patch_interview("cand_burst", json!({ "interview_outcome": "qualified" })).await;
        receiver.wait_for(8).await;

        // One endpoint taking one request at a time, with most of its backlog in the store's queue: every
        // freed slot of it must lead to the next claim.
        let app = TestApp::spawn_with(|c| {
            no_polling(c);
            c.max_in_flight = 2;
            c.endpoint_concurrency = 1;
        })
        .await;
        let slow = Receiver::start(Reply::Slow(ms(5), 200)).await;
        app.a.create_endpoint(&slow.url()).await;
        for n in 0..20 {
            app.a.patch_interview(&format!("cand_queued_{n}"), json!({ "interview_outcome": "qualified" })).await;
        }
        slow.wait_for(20).await;

        // Slots to spare, so only the recorded failure can wake the workers for its retry.
        let app = TestApp::spawn_with(no_polling).await;
        let flaky = Receiver::ok().await;
        flaky.then(Reply::Status(503));
        let (_, delivery_id) = one_delivery(&app, &flaky.url(), "cand_flaky").await;
        app.a.wait_delivery_status(&delivery_id, "succeeded").await;
        assert_eq!(flaky.count(), 2, "the failure and its retry");

        let (status, _) = app.a.post_empty(&format!("/v1/deliveries/{delivery_id}/retry")).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        flaky.wait_for(3).await;
    }
}
