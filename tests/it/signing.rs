//! Standard Webhooks signatures, checked with an independent implementation (the `standardwebhooks` crate),
//! and secret rotation with its grace period.

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::json;
use standardwebhooks::Webhook;

use crate::helpers::*;
use crate::on_both_stores;

fn verifies(secret: &str, request: &Received) -> bool {
    Webhook::new(secret).expect("a whsec_ secret decodes").verify(&request.body, &request.headers).is_ok()
}

/// The request's headers with `webhook-signature` replaced by one of its signatures.
fn with_only_signature(request: &Received, signature: &str) -> HeaderMap {
    let mut headers = request.headers.clone();
    headers.insert("webhook-signature", HeaderValue::from_str(signature).unwrap());
    headers
}

on_both_stores! {
    async fn deliveries_verify_with_the_standardwebhooks_crate() {
        let app = TestApp::spawn().await;
        let receiver = Receiver::ok().await;
        let endpoint = app.a.create_endpoint(&receiver.url()).await;
        let secret = endpoint["secret"].as_str().expect("POST /v1/endpoints answers the secret").to_owned();
        assert!(secret.starts_with("whsec_"), "{secret}");

        let (status, shown) = app.a.get(&format!("/v1/endpoints/{}/secret", endpoint["id"].as_str().unwrap())).await;
        assert_eq!(status, StatusCode::OK, "{shown}");
        assert_eq!(shown, json!({ "secret": secret }));

        let answer = app.a.patch_interview("cand_signed", json!({ "interview_outcome": "qualified" })).await;
        let got = receiver.wait_for(1).await;
        let request = &got[0];
        assert_eq!(request.webhook_id(), answer["event"]["id"].as_str().unwrap());
        let signature = request.header("webhook-signature").unwrap();
        assert_eq!(signature.split(' ').count(), 1, "one signature without a rotation: {signature}");
        Webhook::new(&secret).unwrap().verify(&request.body, &request.headers).expect("the signature verifies");

        // And it is really checked: another secret, another body or another id do not verify.
        let other = app.a.create_endpoint(&receiver.url()).await;
        assert!(!verifies(other["secret"].as_str().unwrap(), request), "another endpoint's secret must not verify");
        let mut tampered = request.clone();
        tampered.body = axum::body::Bytes::from([&request.body[..], b" "].concat());
        assert!(!verifies(&secret, &tampered), "a changed body must not verify");
    }

    async fn retries_are_signed_and_verify_too() {
        let app = TestApp::spawn_with(|c| c.retry_schedule = vec![ms(30), ms(60)]).await;
        let receiver = Receiver::start(Reply::Status(500)).await;
        let endpoint = app.a.create_endpoint(&receiver.url()).await;
        let secret = endpoint["secret"].as_str().unwrap();
        app.a.patch_interview("cand_resigned", json!({ "interview_summary": "x" })).await;
        for request in receiver.wait_for(3).await {
            assert!(verifies(secret, &request), "every attempt verifies: {:?}", request.headers);
        }
    }

    async fn rotation_signs_with_both_secrets_during_the_grace_period() {
        let app = TestApp::spawn().await;
        let receiver = Receiver::ok().await;
        let endpoint = app.a.create_endpoint(&receiver.url()).await;
        let id = endpoint["id"].as_str().unwrap();
        let old = endpoint["secret"].as_str().unwrap().to_owned();

        let new = app.a.rotate_secret(id).await;
        assert!(new.starts_with("whsec_"));
        assert_ne!(new, old);
        let (_, shown) = app.a.get(&format!("/v1/endpoints/{id}/secret")).await;
        assert_eq!(shown["secret"], new.as_str(), "GET secret shows the new secret");

        app.a.patch_interview("cand_rotated", json!({ "interview_outcome": "completed" })).await;
        let got = receiver.wait_for(1).await;
        let request = &got[0];
        let header = request.header("webhook-signature").unwrap();
        let signatures: Vec<&str> = header.split(' ').collect();
        assert_eq!(signatures.len(), 2, "two space-separated signatures during the grace period: {header}");
        assert!(signatures.iter().all(|s| s.starts_with("v1,")), "{header}");

        let verify = |secret: &str, signature: &str| {
            Webhook::new(secret).unwrap().verify(&request.body, &with_only_signature(request, signature)).is_ok()
        };
        let by_new: Vec<&&str> = signatures.iter().filter(|s| verify(&new, s)).collect();
        let by_old: Vec<&&str> = signatures.iter().filter(|s| verify(&old, s)).collect();
        assert_eq!(by_new.len(), 1, "exactly one signature is made with the new secret: {header}");
        assert_eq!(by_old.len(), 1, "exactly one signature is made with the old secret: {header}");
        assert_ne!(by_new[0], by_old[0]);
        assert!(verifies(&new, request) && verifies(&old, request), "receivers on either secret accept it");
    }

    async fn after_the_grace_period_only_the_new_secret_signs() {
        let app = TestApp::spawn_with(|c| c.secret_grace = ms(1)).await;
        let receiver = Receiver::ok().await;
        let endpoint = app.a.create_endpoint(&receiver.url()).await;
        let id = endpoint["id"].as_str().unwrap();
        let old = endpoint["secret"].as_str().unwrap().to_owned();
        let new = app.a.rotate_secret(id).await;

        tokio::time::sleep(ms(50)).await; // well past the 1 ms grace
        app.a.patch_interview("cand_grace", json!({ "interview_outcome": "completed" })).await;
        let got = receiver.wait_for(1).await;
        let header = got[0].header("webhook-signature").unwrap();
        assert_eq!(header.split(' ').count(), 1, "the old secret no longer signs: {header}");
        assert!(verifies(&new, &got[0]));
        assert!(!verifies(&old, &got[0]));
    }
}
