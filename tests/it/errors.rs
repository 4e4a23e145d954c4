//! Every caller mistake answers the right 4xx in the one envelope `{"error":{"code","message"[,"field"]}}`.

use std::collections::BTreeSet;

use axum::http::{HeaderMap, Method, StatusCode, header};
use serde_json::{Value, json};

use crate::helpers::*;
use crate::on_both_stores;

/// Expects 422 naming `field`; answers the error object.
fn assert_422(status: StatusCode, body: &Value, field: &str, what: &str) -> Value {
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{what}: {body}");
    let error = assert_error_envelope(body);
    assert_eq!(error["field"], field, "{what}: the error names the field: {body}");
    error.clone()
}

/// Expects the envelope with this status and code; answers the error object.
fn assert_error(status: StatusCode, body: &Value, expected: StatusCode, code: &str, what: &str) -> Value {
    assert_eq!(status, expected, "{what}: {body}");
    let error = assert_error_envelope(body);
    assert_eq!(error["code"], code, "{what}: {body}");
    error.clone()
}

/// The methods of an `Allow` header, upper-cased.
fn allowed(headers: &HeaderMap, what: &str) -> BTreeSet<String> {
    let allow = headers
        .get(header::ALLOW)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("{what}: a 405 carries an Allow header: {headers:?}"));
    allow.split(',').map(|m| m.trim().to_uppercase()).filter(|m| !m.is_empty()).collect()
}

on_both_stores! {
    async fn malformed_json_is_400() {
        let app = TestApp::spawn().await;
        let receiver = Receiver::ok().await;
        let ep = app.a.create_endpoint(&receiver.url()).await;
        let ep_path = format!("/v1/endpoints/{}", ep["id"].as_str().unwrap());
        let cases = [
            (Method::POST, "/v1/endpoints".to_owned()),
            (Method::PATCH, ep_path),
            (Method::PATCH, "/v1/interviews/cand_bad".to_owned()),
            (Method::POST, "/v1/calls".to_owned()),
        ];
        for (method, path) in cases {
            for bad in [&b"{\"url\": "[..], b"not json at all", b"{\"a\":1}}"] {
                let (status, body) = app.a.raw(method.clone(), &path, Some("application/json"), Some(bad.to_vec())).await;
                assert_eq!(
                    status,
                    StatusCode::BAD_REQUEST,
                    "{method} {path} with {:?}: {body}",
                    String::from_utf8_lossy(bad)
                );
                assert_error_envelope(&body);
            }
        }
        let (status, _) = app.a.get("/v1/interviews/cand_bad").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "a refused PATCH writes nothing");
    }

    async fn wrong_types_and_values_are_422_naming_the_field() {
        let app = TestApp::spawn().await;
        let receiver = Receiver::ok().await;
        let url = receiver.url();

        let endpoint_cases = [
            (json!({}), "url"),
            (json!({ "url": 5 }), "url"),
            (json!({ "url": url, "description": 7 }), "description"),
            (json!({ "url": url, "event_types": "call_completed" }), "event_types"),
            (json!({ "url": url, "event_types": ["interview.exploded"] }), "event_types"),
            (json!({ "url": url, "enabled": "yes" }), "enabled"),
        ];
        for (body, field) in endpoint_cases {
            let (status, answer) = app.a.post("/v1/endpoints", body.clone()).await;
            assert_422(status, &answer, field, &format!("POST /v1/endpoints {body}"));
        }
        assert!(app.a.list("/v1/endpoints").await.is_empty(), "no refused endpoint was created");

        let ep = app.a.create_endpoint(&url).await;
        let ep_path = format!("/v1/endpoints/{}", ep["id"].as_str().unwrap());
        for (body, field) in [
            (json!({ "url": "ftp://example.com/x" }), "url"),
            (json!({ "enabled": 1 }), "enabled"),
            (json!({ "event_types": ["nope"] }), "event_types"),
        ] {
            let (status, answer) = app.a.patch(&ep_path, body.clone()).await;
            assert_422(status, &answer, field, &format!("PATCH endpoint {body}"));
        }
        let (_, unchanged) = app.a.get(&ep_path).await;
        assert_eq!(unchanged["url"], url.as_str(), "a refused PATCH changes nothing");

        let interview_cases = [
            (json!({ "interview_completed_at": "yesterday" }), "interview_completed_at"),
            (json!({ "interview_completed_at": 1737073800 }), "interview_completed_at"),
            (json!({ "interview_sent_at": "2025-13-45T99:00:00Z" }), "interview_sent_at"),
            (json!({ "interview_outcome": 3 }), "interview_outcome"),
            (json!({ "interview_summary": 5 }), "interview_summary"),
            (json!({ "interview_custom_data": "not an object" }), "interview_custom_data"),
            (json!({ "interview_custom_data": [1, 2] }), "interview_custom_data"),
        ];
        for (body, field) in interview_cases {
            let (status, answer) = app.a.patch("/v1/interviews/cand_types", body.clone()).await;
            assert_422(status, &answer, field, &format!("PATCH interview {body}"));
        }
        let (status, _) = app.a.get("/v1/interviews/cand_types").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "refused PATCHes write nothing");
        assert!(app.a.list("/v1/events").await.is_empty(), "refused PATCHes emit nothing");

        let with = |path: &str, value: Value| {
            let mut body = doc_call_example();
            let mut target = &mut body;
            let parts: Vec<&str> = path.split('.').collect();
            for part in &parts[..parts.len() - 1] {
                target = &mut target[*part];
            }
            match value {
                Value::Null => {
                    target.as_object_mut().unwrap().remove(parts[parts.len() - 1]);
                }
                v => target[parts[parts.len() - 1]] = v,
            }
            body
        };
        let call_cases = [
            (with("candidate_id", Value::Null), "candidate_id"),
            (with("call_id", Value::Null), "call_id"),
            (with("candidate_id", json!(12345)), "candidate_id"),
            (with("call_id", json!(["a"])), "call_id"),
            (with("call_details.duration", json!("long")), "call_details.duration"),
            (with("call_details.start_time", json!("noon")), "call_details.start_time"),
            (with("call_details.call_analysis.user_sentiment", json!(1)), "call_details.call_analysis.user_sentiment"),
            (with("transcript", json!("hello")), "transcript"),
            (with("job_title", json!(false)), "job_title"),
        ];
        for (body, field) in call_cases {
            let (status, answer) = app.a.post("/v1/calls", body).await;
            assert_422(status, &answer, field, &format!("POST /v1/calls with a bad {field}"));
        }
        assert!(app.a.list("/v1/events").await.is_empty(), "refused calls emit nothing");
    }

    async fn unknown_outcome_is_422_listing_the_allowed_values() {
        let app = TestApp::spawn().await;
        let (status, body) = app.a.patch("/v1/interviews/cand_outcome", json!({ "interview_outcome": "hired" })).await;
        let error = assert_422(status, &body, "interview_outcome", "an unknown outcome");
        let message = error["message"].as_str().unwrap();
        for allowed in
            ["candidate_not_interested", "ai_opt_out", "qualified", "unqualified", "candidate_not_responsive", "completed"]
        {
            assert!(message.contains(allowed), "the message lists {allowed}: {message}");
        }
        // Every documented value (and null) is accepted.
        for allowed in [
            json!("candidate_not_interested"),
            json!("ai_opt_out"),
            json!("qualified"),
            json!("unqualified"),
            json!("candidate_not_responsive"),
            json!("completed"),
            Value::Null,
        ] {
            let answer = app.a.patch_interview("cand_outcome", json!({ "interview_outcome": allowed })).await;
            assert_eq!(answer["interview"]["interview_outcome"], allowed);
        }
    }

    async fn body_over_the_limit_is_413() {
        let app = TestApp::spawn_with(|c| c.max_body_bytes = 4096).await;
        let big = "x".repeat(8192);
        let (status, body) = app.a.patch("/v1/interviews/cand_big", json!({ "interview_summary": big })).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
        assert_error_envelope(&body);
        let mut call = doc_call_example();
        call["padding"] = json!(big);
        let (status, body) = app.a.post("/v1/calls", call).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
        assert_error_envelope(&body);
        // Just under the limit is fine.
        let (status, body) = app.a.patch("/v1/interviews/cand_big", json!({ "interview_summary": "x".repeat(3000) })).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    async fn missing_or_wrong_key_is_401() {
        let app = TestApp::spawn().await;
        let receiver = Receiver::ok().await;
        let ep = app.a.create_endpoint(&receiver.url()).await;
        let ep_id = ep["id"].as_str().unwrap().to_owned();
        let wrong = app.a.with_key(Some("tdk_thisisnotarealkey0000000000000000"));
        let garbage = app.a.with_key(Some("hunter2"));
        let routes: Vec<(Method, String, Option<Value>)> = vec![
            (Method::GET, "/v1/endpoints".into(), None),
            (Method::POST, "/v1/endpoints".into(), Some(json!({ "url": receiver.url() }))),
            (Method::GET, format!("/v1/endpoints/{ep_id}"), None),
            (Method::PATCH, format!("/v1/endpoints/{ep_id}"), Some(json!({ "enabled": false }))),
            (Method::DELETE, format!("/v1/endpoints/{ep_id}"), None),
            (Method::GET, format!("/v1/endpoints/{ep_id}/secret"), None),
            (Method::POST, format!("/v1/endpoints/{ep_id}/rotate-secret"), None),
            (Method::POST, format!("/v1/endpoints/{ep_id}/test"), None),
            (Method::PATCH, "/v1/interviews/cand_x".into(), Some(json!({ "interview_summary": "x" }))),
            (Method::GET, "/v1/interviews/cand_x".into(), None),
            (Method::POST, "/v1/calls".into(), Some(doc_call_example())),
            (Method::GET, "/v1/events".into(), None),
            (Method::GET, "/v1/deliveries".into(), None),
        ];
        for (method, path, body) in &routes {
            for (who, api) in [("no key", &app.anon), ("a wrong key", &wrong), ("a malformed key", &garbage)] {
                let (status, answer) = api.send(method.clone(), path, body.as_ref()).await;
                assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path} with {who}: {answer}");
                assert_error_envelope(&answer);
            }
        }
        // A key given some other way than Bearer is not a key.
        let key = app.a.key.clone().unwrap();
        for scheme in ["Token", "Basic", ""] {
            let response = reqwest::Client::new()
                .get(format!("{}/v1/endpoints", app.base))
                .header("authorization", format!("{scheme} {key}").trim().to_owned())
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "authorization: {scheme:?} <key>");
        }
        // Nothing the refused calls asked for happened.
        let (status, still) = app.a.get(&format!("/v1/endpoints/{ep_id}")).await;
        assert_eq!(status, StatusCode::OK, "{still}");
        assert_eq!(still["enabled"], true);
        assert_eq!(app.a.list("/v1/endpoints").await.len(), 1);
        assert!(app.a.list("/v1/events").await.is_empty());
        // The probes need no key.
        for probe in ["/healthz", "/readyz"] {
            let (status, body) = app.anon.get(probe).await;
            assert_eq!(status, StatusCode::OK, "{probe}: {body}");
        }
    }

    async fn urls_breaking_the_rules_are_422() {
        let app = TestApp::spawn().await;
        let long_ok = format!("http://127.0.0.1:9/{}", "a".repeat(2048 - "http://127.0.0.1:9/".len()));
        assert_eq!(long_ok.len(), 2048);
        let long_bad = format!("{long_ok}a");
        for bad in [
            "ftp://127.0.0.1/hook",
            "file:///etc/passwd",
            "javascript:alert(1)",
            "not a url",
            "/relative/path",
            "",
            long_bad.as_str(),
            "http://user:password@127.0.0.1:9/hook",
        ] {
            let (status, body) = app.a.post("/v1/endpoints", json!({ "url": bad })).await;
            let shown: String = bad.chars().take(60).collect();
            assert_422(status, &body, "url", &format!("url {shown:?}"));
        }
        let ep = app.a.create_endpoint(&long_ok).await;
        assert_eq!(ep["url"], long_ok, "2048 bytes is allowed");
        app.a.create_endpoint("https://127.0.0.1:9/secure").await;
    }

    async fn private_targets_are_422_unless_allowed() {
        let app = TestApp::spawn_with(|c| c.allow_private_targets = false).await;
        let private = [
            "http://127.0.0.1:8080/hook",
            "http://127.0.0.2/hook",
            "http://10.0.0.1/hook",
            "http://10.255.1.2:9000/hook",
            "http://172.16.0.1/hook",
            "http://192.168.1.1/hook",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]:8080/hook",
            "http://[::ffff:127.0.0.1]/hook",
            "http://localhost:8080/hook",
            "https://localhost/hook",
        ];
        for url in private {
            let (status, body) = app.a.post("/v1/endpoints", json!({ "url": url })).await;
            assert_422(status, &body, "url", &format!("private target {url}"));
        }
        let ep = app.a.create_endpoint("https://example.com/webhooks").await;
        let (status, body) = app
            .a
            .patch(&format!("/v1/endpoints/{}", ep["id"].as_str().unwrap()), json!({ "url": "http://10.1.1.1/x" }))
            .await;
        assert_422(status, &body, "url", "PATCH to a private target");

        // With the operator's permission the same targets are fine.
        let allowed = TestApp::spawn().await;
        for url in private {
            allowed.a.create_endpoint(url).await;
        }
    }

    /// A host name that resolves to loopback (the machine's own name, from /etc/hosts) passes the literal checks;
    /// the resolved address is checked at connect time.
    async fn a_name_resolving_to_loopback_is_blocked_at_connect_time() {
        let hostname = std::fs::read_to_string("/etc/hostname").unwrap_or_default().trim().to_owned();
        let receiver = Receiver::ok().await;
        let resolved: Vec<std::net::SocketAddr> = match tokio::net::lookup_host((hostname.as_str(), 80)).await {
            Ok(addrs) => addrs.collect(),
            Err(_) => Vec::new(),
        };
        if hostname.is_empty()
            || hostname == "localhost"
            || resolved.is_empty()
            || !resolved.iter().all(|a| a.ip().is_loopback())
        {
            eprintln!("skipped: the host name {hostname:?} does not resolve to loopback only ({resolved:?})");
            return;
        }
        let app = TestApp::spawn_with(|c| {
            c.allow_private_targets = false;
            c.retry_schedule = vec![ms(20)];
        })
        .await;
        let url = format!("http://{hostname}:{}/hook", receiver.addr.port());
        let (status, body) = app.a.post("/v1/endpoints", json!({ "url": url })).await;
        if status == StatusCode::UNPROCESSABLE_ENTITY {
            assert_422(status, &body, "url", "a name resolving to loopback");
            eprintln!("{url} was refused at creation (the name was resolved then): also fine");
            return;
        }
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let answer = app.a.patch_interview("cand_ssrf", json!({ "interview_summary": "x" })).await;
        let delivery = app.a.delivery_of_event(answer["event"]["id"].as_str().unwrap()).await;
        let delivery = app.a.wait_delivery_status(delivery["id"].as_str().unwrap(), "undeliverable").await;
        let attempts = delivery["attempts"].as_array().unwrap();
        assert!(!attempts.is_empty(), "{delivery:#}");
        for attempt in attempts {
            assert_eq!(attempt["error"], "blocked", "{attempt}");
        }
        assert_eq!(receiver.count(), 0, "nothing reached the loopback receiver");
    }

    async fn unknown_ids_are_404() {
        let app = TestApp::spawn().await;
        let ep = "ep_000000000000000000000000";
        let evt = "evt_000000000000000000000000";
        let dlv = "dlv_000000000000000000000000";
        let cases: Vec<(Method, String)> = vec![
            (Method::GET, format!("/v1/endpoints/{ep}")),
            (Method::PATCH, format!("/v1/endpoints/{ep}")),
            (Method::DELETE, format!("/v1/endpoints/{ep}")),
            (Method::GET, format!("/v1/endpoints/{ep}/secret")),
            (Method::POST, format!("/v1/endpoints/{ep}/rotate-secret")),
            (Method::POST, format!("/v1/endpoints/{ep}/test")),
            (Method::GET, format!("/v1/events/{evt}")),
            (Method::GET, format!("/v1/deliveries/{dlv}")),
            (Method::POST, format!("/v1/deliveries/{dlv}/retry")),
            (Method::GET, "/v1/endpoints/not-an-id".into()),
            (Method::GET, "/v1/events/ep_000000000000000000000000".into()),
            (Method::GET, "/v1/interviews/cand_never_written".into()),
        ];
        for (method, path) in cases {
            let body = (method == Method::PATCH).then(|| json!({ "description": "x" }));
            let (status, answer) = app.a.send(method.clone(), &path, body.as_ref()).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {answer}");
            assert_error_envelope(&answer);
        }
    }

    async fn list_parameters_out_of_range_are_422() {
        let app = TestApp::spawn().await;
        for list in ["/v1/endpoints", "/v1/events", "/v1/deliveries"] {
            for limit in ["0", "251", "-1"] {
                let (status, body) = app.a.get(&format!("{list}?limit={limit}")).await;
                assert_422(status, &body, "limit", &format!("{list}?limit={limit}"));
            }
            let (status, body) = app.a.get(&format!("{list}?limit=250")).await;
            assert_eq!(status, StatusCode::OK, "{list}?limit=250: {body}");
        }
        let (status, body) = app.a.get("/v1/deliveries?status=lost").await;
        assert_422(status, &body, "status", "an unknown delivery status");
        for ok in ["pending", "succeeded", "undeliverable"] {
            let (status, body) = app.a.get(&format!("/v1/deliveries?status={ok}")).await;
            assert_eq!(status, StatusCode::OK, "status={ok}: {body}");
        }
    }

    async fn probes_and_metrics_answer() {
        let app = TestApp::spawn().await;
        for probe in ["/healthz", "/readyz"] {
            let (status, _) = app.anon.get(probe).await;
            assert_eq!(status, StatusCode::OK, "{probe}");
        }
        let (status, body) = app.anon.get("/metrics").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let text = body.as_str().unwrap_or_default();
        assert!(text.contains("# TYPE"), "Prometheus text exposition: {text}");
    }

    async fn wrong_method_is_405_naming_the_allowed_ones() {
        let app = TestApp::spawn().await;
        let receiver = Receiver::ok().await;
        let ep = app.a.create_endpoint(&receiver.url()).await;
        let ep_id = ep["id"].as_str().unwrap().to_owned();
        let cases: Vec<(Method, String, &[&str])> = vec![
            (Method::PUT, "/v1/endpoints".into(), &["GET", "POST"]),
            (Method::DELETE, "/v1/endpoints".into(), &["GET", "POST"]),
            (Method::POST, format!("/v1/endpoints/{ep_id}"), &["GET", "PATCH", "DELETE"]),
            (Method::PUT, format!("/v1/endpoints/{ep_id}"), &["GET", "PATCH", "DELETE"]),
            (Method::DELETE, format!("/v1/endpoints/{ep_id}/secret"), &["GET"]),
            (Method::GET, format!("/v1/endpoints/{ep_id}/rotate-secret"), &["POST"]),
            (Method::POST, "/v1/interviews/cand_x".into(), &["GET", "PATCH"]),
            (Method::GET, "/v1/calls".into(), &["POST"]),
            (Method::POST, "/v1/events".into(), &["GET"]),
            (Method::PATCH, "/v1/deliveries".into(), &["GET"]),
            (Method::GET, "/v1/deliveries/dlv_x/retry".into(), &["POST"]),
            (Method::POST, "/healthz".into(), &["GET"]),
        ];
        for (method, path, expected) in cases {
            // With a key and without: the method is wrong whoever asks.
            for api in [&app.a, &app.anon] {
                let what = format!("{method} {path}");
                let body = Some(serde_json::to_vec(&json!({ "url": receiver.url() })).unwrap());
                let (status, headers, answer) =
                    api.raw_with_headers(method.clone(), &path, Some("application/json"), body).await;
                let error = assert_error(status, &answer, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", &what);
                let allow = allowed(&headers, &what);
                let message = error["message"].as_str().unwrap();
                assert!(message.contains(method.as_str()), "{what}: the message names the method: {message}");
                for m in expected {
                    assert!(allow.contains(*m), "{what}: Allow {allow:?} has {m}");
                    assert!(message.contains(m), "{what}: the message names {m}: {message}");
                }
                assert!(!allow.contains(method.as_str()), "{what}: Allow {allow:?} does not list the method refused");
            }
        }
        assert_eq!(app.a.list("/v1/endpoints").await.len(), 1, "the refused PUT and POST created nothing");
    }

    async fn unknown_paths_under_v1_are_404_in_the_envelope() {
        let app = TestApp::spawn().await;
        for path in [
            "/v1",
            "/v1/",
            "/v1/nope",
            "/v1/endpoint",
            "/v1/endpoints/",
            "/v1/endpoints/ep_x/secrets",
            "/v1/endpoints/ep_x/test/again",
            "/v1/deliveries/dlv_x/attempts",
            "/v2/endpoints",
        ] {
            for (method, api) in [(Method::GET, &app.a), (Method::POST, &app.a), (Method::GET, &app.anon)] {
                let what = format!("{method} {path}");
                let (status, answer) = api.send(method.clone(), path, None).await;
                assert_error(status, &answer, StatusCode::NOT_FOUND, "not_found", &what);
            }
        }
    }

    async fn the_bearer_scheme_is_case_insensitive() {
        let app = TestApp::spawn().await;
        let receiver = Receiver::ok().await;
        let key = app.a.key.clone().unwrap();
        let http = reqwest::Client::new();
        for scheme in ["bearer", "BEARER", "bEaReR", "Bearer "] {
            let response = http
                .post(format!("{}/v1/endpoints", app.base))
                .header("authorization", format!("{scheme} {key}"))
                .header("content-type", "application/json")
                .body(json!({ "url": receiver.url(), "description": scheme }).to_string())
                .send()
                .await
                .unwrap();
            let status = response.status();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            assert_eq!(status, StatusCode::CREATED, "authorization: {scheme:?} <key>: {body}");
            assert_eq!(body["description"], scheme, "the endpoint belongs to the key's organization");
        }
        assert_eq!(app.a.list("/v1/endpoints").await.len(), 4);
        assert!(app.b.list("/v1/endpoints").await.is_empty(), "none went to another organization");
        // Any case of the scheme, but still only a known key.
        for header in ["bearer tdk_thisisnotarealkey0000000000000000", "BEARER hunter2", "bearer", "bearerx {key}"] {
            let response = http
                .get(format!("{}/v1/endpoints", app.base))
                .header("authorization", header.replace("{key}", &key))
                .send()
                .await
                .unwrap();
            let status = response.status();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized", &format!("authorization: {header}"));
        }
    }

    async fn lists_refuse_query_parameters_they_do_not_take() {
        let app = TestApp::spawn().await;
        let receiver = Receiver::ok().await;
        let ep = app.a.create_endpoint(&receiver.url()).await;
        let ep_id = ep["id"].as_str().unwrap().to_owned();
        let event = app.a.patch_interview("cand_params", json!({ "interview_summary": "x" })).await["event"].clone();
        let evt_id = event["id"].as_str().unwrap().to_owned();

        let refused: Vec<(&str, String, &str)> = vec![
            ("/v1/events", "status=bogus".into(), "status"),
            ("/v1/events", "status=pending".into(), "status"),
            ("/v1/events", format!("endpoint_id={ep_id}"), "endpoint_id"),
            ("/v1/events", "event_id=evt_x&limit=5".into(), "event_id"),
            ("/v1/events", "Limit=5".into(), "Limit"),
            ("/v1/endpoints", "status=pending".into(), "status"),
            ("/v1/endpoints", format!("event_id={evt_id}"), "event_id"),
            ("/v1/endpoints", "endpoint_id=ep_x".into(), "endpoint_id"),
            ("/v1/endpoints", "enabled=true".into(), "enabled"),
            ("/v1/deliveries", "endpoint=ep_x".into(), "endpoint"),
            ("/v1/deliveries", "status=pending&state=pending".into(), "state"),
        ];
        for (list, query, name) in refused {
            let what = format!("GET {list}?{query}");
            let (status, body) = app.a.get(&format!("{list}?{query}")).await;
            let error = assert_error(status, &body, StatusCode::BAD_REQUEST, "bad_request", &what);
            let message = error["message"].as_str().unwrap();
            assert!(message.contains(&format!("`{name}`")), "{what}: the message names {name}: {message}");
            assert!(message.contains("cursor") && message.contains("limit"), "{what}: the message says what it takes");
        }

        // Each list's own parameters are still read, and bad values keep their 422.
        for list in ["/v1/endpoints", "/v1/events"] {
            let (status, body) = app.a.get(&format!("{list}?limit=1&cursor=")).await;
            assert_eq!(status, StatusCode::OK, "{list}: {body}");
            assert_eq!(body["data"].as_array().map(Vec::len), Some(1), "{list}: {body}");
        }
        let query = format!("endpoint_id={ep_id}&event_id={evt_id}&status=pending&limit=5&cursor=");
        let (status, body) = app.a.get(&format!("/v1/deliveries?{query}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (status, body) = app.a.get("/v1/deliveries?endpoint_id=ep_000000000000000000000000").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["data"], json!([]), "the filter is applied: {body}");
        // An id filter that cannot name a row matches none, whatever it holds (PostgreSQL cannot compare a NUL).
        for filter in ["endpoint_id=%00", "event_id=ev%00t", "endpoint_id=nope", &format!("event_id={ep_id}")] {
            let (status, body) = app.a.get(&format!("/v1/deliveries?{filter}")).await;
            assert_eq!(status, StatusCode::OK, "{filter}: {body}");
            assert_eq!(body["data"], json!([]), "{filter}: {body}");
        }
        let (status, body) = app.a.get("/v1/deliveries?status=bogus").await;
        assert_422(status, &body, "status", "an unknown delivery status");
        let (status, body) = app.a.get("/v1/events?limit=0").await;
        assert_422(status, &body, "limit", "a limit out of range");
    }

    async fn null_is_refused_for_endpoint_fields_that_cannot_be_null() {
        let app = TestApp::spawn().await;
        let receiver = Receiver::ok().await;
        let url = receiver.url();
        let ep = app
            .a
            .create_endpoint_with(json!({
                "url": url,
                "description": "kept",
                "event_types": ["call_completed"],
                "enabled": false
            }))
            .await;
        let ep_path = format!("/v1/endpoints/{}", ep["id"].as_str().unwrap());
        for field in ["url", "event_types", "enabled"] {
            let what = format!("PATCH {{\"{field}\": null}}");
            let (status, answer) = app.a.patch(&ep_path, json!({ field: null })).await;
            let error = assert_422(status, &answer, field, &what);
            let message = error["message"].as_str().unwrap();
            assert!(message.contains("cannot be null"), "{what}: {message}");
            // Alongside a good change, the null still refuses the whole edit.
            let (status, answer) = app.a.patch(&ep_path, json!({ "description": "changed", field: null })).await;
            assert_422(status, &answer, field, &format!("{what} with a description"));
        }
        let (_, unchanged) = app.a.get(&ep_path).await;
        assert_eq!(unchanged["url"], url.as_str(), "refused edits change nothing: {unchanged}");
        assert_eq!(unchanged["description"], "kept");
        assert_eq!(unchanged["event_types"], json!(["call_completed"]));
        assert_eq!(unchanged["enabled"], false);
        // description is the one field that takes null: it clears it.
        let (status, cleared) = app.a.patch(&ep_path, json!({ "description": null })).await;
        assert_eq!(status, StatusCode::OK, "{cleared}");
        assert_eq!(cleared["description"], "");

        // Registration follows the same rule: leave a field out for its default.
        for field in ["url", "event_types", "enabled"] {
            let mut body = json!({ "url": url });
            body[field] = Value::Null;
            let (status, answer) = app.a.post("/v1/endpoints", body.clone()).await;
            assert_422(status, &answer, field, &format!("POST {body}"));
        }
        assert_eq!(app.a.list("/v1/endpoints").await.len(), 1, "no refused endpoint was created");
        let created = app.a.create_endpoint_with(json!({ "url": url, "description": null })).await;
        assert_eq!(created["description"], "");
        assert_eq!(created["enabled"], true);
        assert_eq!(created["event_types"], json!(["candidate.interview.updated"]));
    }

    async fn a_body_declared_as_not_json_is_415() {
        let app = TestApp::spawn().await;
        let receiver = Receiver::ok().await;
        let ep = app.a.create_endpoint(&receiver.url()).await;
        let ep_path = format!("/v1/endpoints/{}", ep["id"].as_str().unwrap());
        let cases = [
            (Method::POST, "/v1/endpoints".to_owned(), json!({ "url": receiver.url_for("/other") })),
            (Method::PATCH, ep_path.clone(), json!({ "enabled": false })),
            (Method::PATCH, "/v1/interviews/cand_media".to_owned(), json!({ "interview_summary": "x" })),
            (Method::POST, "/v1/calls".to_owned(), doc_call_example()),
        ];
        for (method, path, body) in &cases {
            let bytes = serde_json::to_vec(body).unwrap();
            for declared in ["text/plain", "application/x-www-form-urlencoded", "text/json", "application/jsonp", ""] {
                let what = format!("{method} {path} declared as {declared:?}");
                let (status, answer) = app.a.raw(method.clone(), path, Some(declared), Some(bytes.clone())).await;
                let error =
                    assert_error(status, &answer, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", &what);
                let message = error["message"].as_str().unwrap();
                assert!(message.contains("content-type: application/json"), "{what}: says what to send: {message}");
            }
        }
        assert_eq!(app.a.list("/v1/endpoints").await.len(), 1, "no endpoint was created");
        let (_, unchanged) = app.a.get(&ep_path).await;
        assert_eq!(unchanged["enabled"], true, "no endpoint was edited");
        let (status, _) = app.a.get("/v1/interviews/cand_media").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "no interview was written");
        assert!(app.a.list("/v1/events").await.is_empty(), "no event was emitted");

        // JSON in any of its spellings is read, and so is a body that declares no type at all.
        for declared in
            [Some("application/json; charset=utf-8"), Some("Application/JSON"), Some("application/merge-patch+json"), None]
        {
            let what = format!("declared as {declared:?}");
            for (method, path, body) in &cases {
                let bytes = serde_json::to_vec(body).unwrap();
                let (status, answer) = app.a.raw(method.clone(), path, declared, Some(bytes)).await;
                assert!(status.is_success(), "{method} {path} {what}: {status} {answer}");
            }
        }
    }
}

/// Clients that stall: a body that does not arrive within `client_timeout` answers 408, a head that does not
/// is cut off, and neither holds up shutdown.
#[tokio::test]
async fn stalled_clients_time_out_and_do_not_hold_up_shutdown() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let timeout = ms(300);
    let mut app = TestApp::spawn_with(|c| c.client_timeout = timeout).await;
    let address = app.base.trim_start_matches("http://").to_owned();
    let key = app.a.key.clone().unwrap();
    let connect = || tokio::net::TcpStream::connect(address.clone());
    // What the server sends before it closes the connection (or 10 s pass).
    async fn answer(stream: &mut tokio::net::TcpStream) -> String {
        let mut got = Vec::new();
        let read = tokio::time::timeout(std::time::Duration::from_secs(10), stream.read_to_end(&mut got)).await;
        assert!(read.is_ok(), "the connection is still open after 10 s: {}", String::from_utf8_lossy(&got));
        String::from_utf8_lossy(&got).into_owned()
    }

    // A body promised and never sent.
    let mut body = connect().await.unwrap();
    let head = format!(
        "POST /v1/endpoints HTTP/1.1\r\nhost: {address}\r\nauthorization: Bearer {key}\r\n\
         content-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"url\""
    );
    body.write_all(head.as_bytes()).await.unwrap();
    let got = answer(&mut body).await;
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    assert!(got.contains("request_timeout"), "{got}");

    // A head never finished: the connection is closed.
    let mut partial = connect().await.unwrap();
    partial.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n").await.unwrap();
    answer(&mut partial).await;

    // Shutdown with a request stalled mid-body: it ends once the request has timed out, not when the client
    // finally goes away.
    let mut stalled = connect().await.unwrap();
    stalled.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(ms(50)).await;
    app.shut_down(std::time::Duration::from_secs(5)).await;
    drop(stalled);
}
