//! The OpenAPI document: `GET /openapi.json` serves exactly the snapshot committed in `docs/openapi.json`, so a
//! change to the API shows up as a diff in review, and the document describes every route the router has.

use std::collections::BTreeSet;

use axum::http::{Method, StatusCode, header};
use serde_json::Value;

use crate::helpers::*;

/// The committed snapshot.
const SNAPSHOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json");

/// Set to `1` to rewrite the snapshot from what the app serves.
const UPDATE: &str = "TIDINGS_UPDATE_SNAPSHOT";

/// The router's source, read for the `/v1` paths it registers, so a route added there without a line in
/// [`V1_ROUTES`] fails here.
const ROUTER_SOURCE: &str = include_str!("../../src/http/mod.rs");

/// Every `/v1` operation the router serves, with the router's own `{…}` names.
const V1_ROUTES: [(Method, &str); 16] = [
    (Method::POST, "/v1/endpoints"),
    (Method::GET, "/v1/endpoints"),
    (Method::GET, "/v1/endpoints/{id}"),
    (Method::PATCH, "/v1/endpoints/{id}"),
    (Method::DELETE, "/v1/endpoints/{id}"),
    (Method::GET, "/v1/endpoints/{id}/secret"),
    (Method::POST, "/v1/endpoints/{id}/rotate-secret"),
    (Method::POST, "/v1/endpoints/{id}/test"),
    (Method::PATCH, "/v1/interviews/{id}"),
    (Method::GET, "/v1/interviews/{id}"),
    (Method::POST, "/v1/calls"),
    (Method::GET, "/v1/events"),
    (Method::GET, "/v1/events/{id}"),
    (Method::GET, "/v1/deliveries"),
    (Method::GET, "/v1/deliveries/{id}"),
    (Method::POST, "/v1/deliveries/{id}/retry"),
];

/// The routes outside `/v1` the document describes too; none takes an API key.
const OPERATOR_ROUTES: [&str; 4] = ["/healthz", "/readyz", "/metrics", "/openapi.json"];

/// The operation keys of an OpenAPI path item (the other keys are parameters, summaries and the like).
const HTTP_METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

/// `/v1/interviews/{candidate_id}` and `/v1/interviews/{id}` name the same route.
fn normalize(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut in_param = false;
    for c in path.chars() {
        match c {
            '{' => {
                in_param = true;
                out.push_str("{}");
            }
            '}' => in_param = false,
            _ if !in_param => out.push(c),
            _ => {}
        }
    }
    out
}

/// The document as served, without an API key.
async fn fetch(app: &TestApp) -> String {
    let response = reqwest::get(format!("{}/openapi.json", app.base)).await.expect("GET /openapi.json");
    assert_eq!(response.status(), StatusCode::OK, "GET /openapi.json needs no API key");
    let content_type = response.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
    assert_eq!(content_type.as_deref(), Some("application/json"));
    response.text().await.expect("the document's body")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_document_equals_the_snapshot() {
    let app = TestApp::spawn().await;
    let served = fetch(&app).await;
    let committed = std::fs::read_to_string(SNAPSHOT).unwrap_or_default();
    if served == committed {
        return;
    }
    if std::env::var(UPDATE).is_ok_and(|v| v == "1") {
        std::fs::write(SNAPSHOT, &served).unwrap_or_else(|e| panic!("writing {SNAPSHOT}: {e}"));
        eprintln!("note: {UPDATE}=1: rewrote docs/openapi.json; review the diff and commit it");
        return;
    }
    let (line, old, new) = committed
        .lines()
        .map(Some)
        .chain(std::iter::repeat(None))
        .zip(served.lines().map(Some).chain(std::iter::repeat(None)))
        .enumerate()
        .find(|(_, (old, new))| old != new)
        .map(|(n, (old, new))| (n + 1, old.unwrap_or("(end of file)"), new.unwrap_or("(end of file)")))
        .unwrap_or((0, "(same lines, different line endings)", ""));
    panic!(
        "the API changed: GET /openapi.json no longer matches docs/openapi.json, first at line {line}:\n\
         \x20 committed: {old}\n\
         \x20 served:    {new}\n\
         If the change is meant, rewrite the snapshot and commit it with the change:\n\
         \x20 {UPDATE}=1 cargo test --test it openapi"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_is_described() {
    let app = TestApp::spawn().await;
    let document: Value = serde_json::from_str(&fetch(&app).await).expect("the document is JSON");
    assert!(
        document["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "openapi should be a 3.x version: {}",
        document["openapi"]
    );
    let paths = document["paths"].as_object().expect("the document has paths");

    let listed: BTreeSet<(String, String)> =
        V1_ROUTES.iter().map(|(method, path)| (method.to_string(), normalize(path))).collect();
    let in_router: BTreeSet<String> = ROUTER_SOURCE
        .match_indices("\"/v1")
        .filter_map(|(at, _)| ROUTER_SOURCE[at + 1..].split('"').next())
        .map(normalize)
        .collect();
    let listed_paths: BTreeSet<String> = listed.iter().map(|(_, path)| path.clone()).collect();
    assert_eq!(in_router, listed_paths, "src/http/mod.rs routes these /v1 paths; V1_ROUTES should list them all");

    let mut described = BTreeSet::new();
    for (path, item) in paths.iter().filter(|(path, _)| path.starts_with("/v1")) {
        for (method, operation) in item.as_object().expect("a path item").iter() {
            if !HTTP_METHODS.contains(&method.as_str()) {
                continue;
            }
            let key = method.to_uppercase();
            assert_eq!(
                operation["security"],
                serde_json::json!([{"api_key": []}]),
                "{key} {path} should ask for the API key"
            );
            for status in ["401", "500"] {
                assert!(operation["responses"].get(status).is_some(), "{key} {path} should describe {status}");
            }
            described.insert((key, normalize(path)));
        }
    }
    let missing: Vec<_> = listed.difference(&described).collect();
    let extra: Vec<_> = described.difference(&listed).collect();
    assert!(missing.is_empty(), "routes the document does not describe: {missing:?}");
    assert!(extra.is_empty(), "operations the document describes but the router does not serve: {extra:?}");

    // Each listed route is really served, behind the API key: an unknown route would answer 404, a wrong
    // method 405.
    for (method, path) in V1_ROUTES {
        let concrete = path.replace("{id}", "x");
        let (status, body) = app.anon.send(method.clone(), &concrete, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {concrete} without a key: {body}");
    }

    for path in OPERATOR_ROUTES {
        let operation = &paths.get(path).unwrap_or_else(|| panic!("{path} is not described"))["get"];
        assert!(operation.is_object(), "GET {path} is not described");
        assert!(operation.get("security").is_none(), "GET {path} takes no API key");
        let (status, _) = app.anon.get(path).await;
        assert_eq!(status, StatusCode::OK, "GET {path} without a key");
    }
}
