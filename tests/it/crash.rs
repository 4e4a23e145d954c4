//! The real binary: `org create`, `serve` configured from flags or `TIDINGS_*` variables, and a process killed
//! with SIGKILL in the middle of deliveries that, restarted on the same database, loses no event.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::helpers::*;
use crate::process::{Server, create_org, serve_flags};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_reads_its_settings_from_the_environment() {
    let dir = TempDir::new().unwrap();
    let database = dir.path().join("env.db").to_string_lossy().into_owned();
    let key = create_org(&database, "env org");
    let port = free_port();
    let env = [
        ("TIDINGS_DATABASE", database.clone()),
        ("TIDINGS_LISTEN", format!("127.0.0.1:{port}")),
        ("TIDINGS_ALLOW_PRIVATE_TARGETS", "true".to_owned()),
        ("TIDINGS_RETRY_SCHEDULE", "50ms".to_owned()),
        ("TIDINGS_RETRY_JITTER", "0".to_owned()),
        ("TIDINGS_ATTEMPT_TIMEOUT", "2s".to_owned()),
    ];
    let server = Server::start(&[], &env, port, &dir.path().join("serve.log")).await;
    let api = Api::new(server.base.clone(), Some(key));

    // A loopback receiver is accepted only because TIDINGS_ALLOW_PRIVATE_TARGETS was read, and the
    // database is the one `org create` wrote, or the key would not be known.
    let receiver = Receiver::start(Reply::Status(500)).await;
    api.create_endpoint(&receiver.url()).await;
    let answer = api.patch_interview("cand_env", json!({ "interview_outcome": "qualified" })).await;
    let delivery = api.delivery_of_event(answer["event"]["id"].as_str().unwrap()).await;
    let delivery = api.wait_delivery_status(delivery["id"].as_str().unwrap(), "undeliverable").await;
    assert_eq!(delivery["attempt_count"], 2, "TIDINGS_RETRY_SCHEDULE=50ms means one retry: {delivery:#}");
    assert_eq!(receiver.count(), 2);
}

/// A database password given to the binary is not printed: `migrate` shows the URL with `***` for it, and
/// `--help` does not show `TIDINGS_DATABASE`'s value.
#[tokio::test]
async fn the_database_password_is_not_printed() {
    const PASSWORD: &str = "S3cretPW";
    let help = std::process::Command::new(crate::process::BIN)
        .args(["serve", "--help"])
        .env("TIDINGS_DATABASE", format!("postgres://app:{PASSWORD}@db.internal/tidings"))
        .output()
        .expect("run tidings serve --help");
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("TIDINGS_DATABASE"), "{help}");
    assert!(!help.contains(PASSWORD), "--help shows the password: {help}");

    let Some(db) = crate::db::TestDb::new(crate::db::Backend::Postgres).await else {
        return crate::db::skip_notice("the_database_password_is_not_printed");
    };
    // The local server trusts every connection, so any password is accepted.
    let mut url = url::Url::parse(&db.url).unwrap();
    url.set_password(Some(PASSWORD)).unwrap();
    let migrate = std::process::Command::new(crate::process::BIN)
        .args(["migrate", "--database", url.as_str()])
        .output()
        .expect("run tidings migrate");
    let (stdout, stderr) = (String::from_utf8_lossy(&migrate.stdout), String::from_utf8_lossy(&migrate.stderr));
    assert!(migrate.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains(":***@") && stdout.contains("is up to date"), "{stdout}");
    assert!(!stdout.contains(PASSWORD) && !stderr.contains(PASSWORD), "{stdout}{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_in_the_middle_of_deliveries_loses_no_event() {
    const CANDIDATES: usize = 300;
    let dir = TempDir::new().unwrap();
    let database = dir.path().join("crash.db").to_string_lossy().into_owned();
    let log = dir.path().join("serve.log");
    let key = create_org(&database, "crash org");

    // Slow answers keep deliveries in flight when the process dies.
    let receiver = Receiver::start(Reply::Slow(Duration::from_secs(1), 200)).await;
    let port = free_port();
    let mut server = Server::start(&serve_flags(&database, port), &[], port, &log).await;
    let api = Api::new(server.base.clone(), Some(key.clone()));
    api.create_endpoint(&receiver.url()).await;

    // PATCH distinct candidates, 16 at a time, remembering every event the service acknowledged.
    let acknowledged: Arc<Mutex<Vec<String>>> = Arc::default();
    let patcher = {
        let acknowledged = acknowledged.clone();
        let url = format!("{}/v1/interviews", server.base);
        tokio::spawn(async move {
            let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
            futures_util::stream::iter(0..CANDIDATES)
                .for_each_concurrent(16, |n| {
                    let (http, url, key, acknowledged) = (http.clone(), url.clone(), key.clone(), acknowledged.clone());
                    async move {
                        let body =
                            json!({ "interview_outcome": "qualified", "interview_summary": format!("crash {n}") });
                        let sent = http
                            .patch(format!("{url}/cand_crash_{n}"))
                            .header("authorization", format!("Bearer {key}"))
                            .header("content-type", "application/json")
                            .body(body.to_string())
                            .send()
                            .await;
                        let Ok(response) = sent else { return };
                        if response.status() != StatusCode::OK {
                            return;
                        }
                        let Ok(bytes) = response.bytes().await else { return };
                        let answer: Value = serde_json::from_slice(&bytes).expect("PATCH answers JSON");
                        let id = answer["event"]["id"].as_str().expect("each PATCH emits an event").to_owned();
                        acknowledged.lock().unwrap().push(id);
                    }
                })
                .await;
        })
    };

    // Kill once some deliveries were answered and others are still in flight.
    let started = Instant::now();
    loop {
        let answered = receiver.answered();
        if answered >= 150 || (patcher.is_finished() && answered >= 1) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "no delivery was answered:\n{}", server.log_text());
        tokio::time::sleep(ms(10)).await;
    }
    server.kill();
    // Requests the killed process had already written may still be on their way into the receiver: they
    // were in flight at the kill, so the snapshot waits until nothing more arrives.
    let mut seen = receiver.count();
    for _ in 0..40 {
        tokio::time::sleep(ms(50)).await;
        let now = receiver.count();
        if now == seen {
            break;
        }
        seen = now;
    }
    let answered_at_kill = receiver.answered();
    patcher.await.expect("the PATCH task does not panic");
    // Everything that arrives before the restart came from the killed process.
    let arrived_before_kill: HashSet<String> = receiver.received().iter().map(|r| r.webhook_id()).collect();
    let arrived_at_kill = receiver.count();
    let acknowledged: Vec<String> = acknowledged.lock().unwrap().clone();
    eprintln!(
        "crash: killed after {:?} with {} events acknowledged, {arrived_at_kill} requests arrived, {answered_at_kill} answered",
        started.elapsed(),
        acknowledged.len()
    );
    assert!(
        answered_at_kill < acknowledged.len(),
        "the kill came after every delivery was answered ({answered_at_kill} of {}): nothing was in flight",
        acknowledged.len()
    );

    // Restart on the same database; the receiver now answers at once.
    receiver.set_reply(Reply::Status(200));
    let port = free_port();
    let restarted_at = Instant::now();
    let server = Server::start(&serve_flags(&database, port), &[], port, &log).await;
    let api = Api::new(server.base.clone(), api.key.clone());

    // Deliveries the killed process had claimed come back when their leases run out (attempt timeout + 30 s),
    // so the deadline is generous; everything else is delivered at once.
    let deadline = restarted_at + Duration::from_secs(90);
    let wanted: HashSet<&String> = acknowledged.iter().collect();
    loop {
        let seen: HashSet<String> = receiver.received().iter().map(|r| r.webhook_id()).collect();
        let missing: Vec<&&String> = wanted.iter().filter(|id| !seen.contains(**id)).collect();
        if missing.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            let sample: Vec<&&String> = missing.iter().take(5).copied().collect();
            let mut detail = String::new();
            for id in &sample {
                let (_, d) = api.get(&format!("/v1/deliveries?event_id={id}")).await;
                detail.push_str(&format!("{id}: {d}\n"));
            }
            panic!(
                "{} acknowledged events never reached the receiver within {:?} of the restart; some of them:\n{detail}\nlog:\n{}",
                missing.len(),
                restarted_at.elapsed(),
                server.log_text()
            );
        }
        tokio::time::sleep(ms(50)).await;
    }
    let all_seen_in = restarted_at.elapsed();
    loop {
        let pending = api.deliveries("status=pending").await;
        if pending.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} deliveries still pending {:?} after the restart, e.g. {}",
            pending.len(),
            restarted_at.elapsed(),
            pending[0]
        );
        tokio::time::sleep(ms(100)).await;
    }
    let recovered_in = restarted_at.elapsed();
    let succeeded = api.all("/v1/deliveries?status=succeeded").await;
    let succeeded_events: HashSet<&str> = succeeded.iter().map(|d| d["event_id"].as_str().unwrap()).collect();
    for id in &acknowledged {
        assert!(succeeded_events.contains(id.as_str()), "the delivery of {id} ends succeeded");
    }
    assert!(api.deliveries("status=undeliverable").await.is_empty(), "the receiver answered 200 after the restart");

    let mut arrivals: HashMap<String, usize> = HashMap::new();
    for request in receiver.received() {
        *arrivals.entry(request.webhook_id()).or_default() += 1;
    }
    let duplicates: usize = arrivals.values().map(|n| n - 1).sum();
    eprintln!(
        "crash: every acknowledged event seen {all_seen_in:?} and every delivery finished {recovered_in:?} after the restart; \
         {} acknowledged, {} distinct ids, {duplicates} duplicate arrivals",
        acknowledged.len(),
        arrivals.len()
    );
    assert!(duplicates <= 256, "duplicates are bounded by what was in flight (max_in_flight 256): {duplicates}");
    for (id, n) in &arrivals {
        if *n > 1 {
            assert!(arrived_before_kill.contains(id), "{id} arrived {n} times but was not in flight at the kill");
        }
    }
}
