//! Scale-out on PostgreSQL: several real `tidings serve` processes share one database. Every event is
//! delivered, none twice without a fault, a killed process loses nothing, and the diff chain of one candidate
//! stays exact when two processes update it at once.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::db::{Backend, TestDb, postgres_server, skip_notice};
use crate::helpers::*;
use crate::process::{Server, create_org, serve_flags};

/// A fresh PostgreSQL database, or `None` (with a notice) where none is configured.
async fn postgres(test: &str) -> Option<TestDb> {
    if postgres_server().is_none() {
        skip_notice(test);
        return None;
    }
    TestDb::new(Backend::Postgres).await
}

async fn start_servers(database: &str, count: usize, extra: &[&str], log: &Path) -> Vec<Server> {
    let mut servers = Vec::new();
    for _ in 0..count {
        let port = free_port();
        let mut flags = serve_flags(database, port);
        flags.extend(extra.iter().map(|s| s.to_string()));
        servers.push(Server::start(&flags, &[], port, log).await);
    }
    servers
}

/// PATCHes `count` distinct candidates, spread over `bases`, 32 at a time; answers the acknowledged event ids.
async fn update_many(bases: &[String], key: &str, prefix: &str, count: usize) -> Vec<String> {
    let apis: Vec<Api> = bases.iter().map(|b| Api::new(b.clone(), Some(key.to_owned()))).collect();
    futures_util::stream::iter(0..count)
        .map(|n| {
            let api = apis[n % apis.len()].clone();
            let candidate = format!("{prefix}_{n}");
            async move {
                let answer = api.patch_interview(&candidate, json!({"interview_summary": format!("s{n}")})).await;
                answer["event"]["id"].as_str().expect("each update emits an event").to_owned()
            }
        })
        .buffer_unordered(32)
        .collect()
        .await
}

/// Waits until every receiver has seen every one of `events`.
async fn wait_all_seen(receivers: &[Receiver], events: &[String], timeout: Duration, servers: &[Server]) {
    let wanted: HashSet<&String> = events.iter().collect();
    let deadline = Instant::now() + timeout;
    loop {
        let missing: usize = receivers
            .iter()
            .map(|r| {
                let seen: HashSet<String> = r.received().iter().map(|x| x.webhook_id()).collect();
                wanted.iter().filter(|id| !seen.contains(**id)).count()
            })
            .sum();
        if missing == 0 {
            return;
        }
        if Instant::now() >= deadline {
            let log = servers.first().map(Server::log_text).unwrap_or_default();
            panic!("{missing} deliveries never arrived within {timeout:?}; log:\n{log}");
        }
        tokio::time::sleep(ms(50)).await;
    }
}

/// Successful attempts a process made, read from its `/metrics`.
async fn successes(server: &Server) -> u64 {
    let text = reqwest::get(format!("{}/metrics", server.base)).await.unwrap().text().await.unwrap();
    text.lines()
        .find(|l| l.starts_with("tidings_attempts_total{outcome=\"success\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

fn duplicates(receiver: &Receiver) -> usize {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for r in receiver.received() {
        *counts.entry(r.webhook_id()).or_default() += 1;
    }
    counts.values().map(|n| n - 1).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_deliver_every_event_once() {
    let Some(db) = postgres("scale::three_processes_deliver_every_event_once").await else { return };
    let dir = tempfile::tempdir().unwrap();
    let key = create_org(&db.url, "scale");
    let servers = start_servers(&db.url, 3, &[], &dir.path().join("serve.log")).await;
    let receivers = vec![Receiver::ok().await, Receiver::ok().await, Receiver::ok().await];
    let api = Api::new(servers[0].base.clone(), Some(key.clone()));
    for receiver in &receivers {
        api.create_endpoint(&receiver.url()).await;
    }

    let bases: Vec<String> = servers.iter().map(|s| s.base.clone()).collect();
    let events = update_many(&bases, &key, "scale", 3_000).await;
    assert_eq!(events.iter().collect::<HashSet<_>>().len(), 3_000);
    wait_all_seen(&receivers, &events, Duration::from_secs(120), &servers).await;

    for receiver in &receivers {
        assert_eq!(receiver.count(), 3_000, "each endpoint gets each event exactly once");
        assert_eq!(duplicates(receiver), 0);
    }
    // Attempts are counted once recorded, which may come just after the receiver has them.
    let shares = eventually("every attempt recorded", WAIT, || async {
        let mut shares = Vec::new();
        for server in &servers {
            shares.push(successes(server).await);
        }
        (shares.iter().sum::<u64>() == 9_000).then_some(shares)
    })
    .await;
    eprintln!("scale: 3 processes, 3000 events x 3 endpoints, deliveries per process {shares:?}");
    assert!(shares.iter().all(|n| *n > 0), "every process delivered some: {shares:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_process_loses_nothing() {
    const MAX_IN_FLIGHT: usize = 32;
    let Some(db) = postgres("scale::a_killed_process_loses_nothing").await else { return };
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("serve.log");
    let key = create_org(&db.url, "scale kill");
    let in_flight = MAX_IN_FLIGHT.to_string();
    let mut servers = start_servers(&db.url, 3, &["--max-in-flight", &in_flight], &log).await;
    // Slow answers keep deliveries in flight when the process dies.
    let receivers = vec![
        Receiver::start(Reply::Slow(ms(20), 200)).await,
        Receiver::start(Reply::Slow(ms(20), 200)).await,
        Receiver::start(Reply::Slow(ms(20), 200)).await,
    ];
    let api = Api::new(servers[0].base.clone(), Some(key.clone()));
    for receiver in &receivers {
        api.create_endpoint(&receiver.url()).await;
    }
    // Updates go through the two processes that survive, so every acknowledgement stands.
    let bases: Vec<String> = servers[1..].iter().map(|s| s.base.clone()).collect();
    let updates = tokio::spawn({
        let key = key.clone();
        async move { update_many(&bases, &key, "kill", 3_000).await }
    });
    let started = Instant::now();
    while receivers.iter().map(Receiver::count).sum::<usize>() < 1_500 {
        assert!(started.elapsed() < Duration::from_secs(60), "deliveries did not start:\n{}", servers[0].log_text());
        tokio::time::sleep(ms(10)).await;
    }
    servers[0].kill();
    let events = updates.await.unwrap();
    // The killed process's claims come back when their leases run out (attempt timeout 2 s + 10 s).
    wait_all_seen(&receivers, &events, Duration::from_secs(90), &servers[1..]).await;

    // Deliveries the killed process sent but never recorded are sent again once their leases run out; only
    // then is everything finished, and only then are the duplicates all in.
    let api = api_of(&servers[1], &key);
    eventually("every delivery finished", Duration::from_secs(60), || async {
        api.deliveries("status=pending").await.is_empty().then_some(())
    })
    .await;
    let duplicated: usize = receivers.iter().map(duplicates).sum();
    eprintln!(
        "scale: killed 1 of 3 processes mid-run; 3000 events x 3 endpoints all delivered, {duplicated} duplicates"
    );
    // Claimed and not recorded: the attempts in flight, and as many answered whose results were not yet written.
    assert!(
        duplicated <= 2 * MAX_IN_FLIGHT,
        "only attempts the killed process had not recorded may repeat: {duplicated} > 2 x {MAX_IN_FLIGHT}"
    );
}

fn api_of(server: &Server, key: &str) -> Api {
    Api::new(server.base.clone(), Some(key.to_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_updating_one_candidate_keep_the_chain_exact() {
    let Some(db) = postgres("scale::two_processes_updating_one_candidate_keep_the_chain_exact").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let key = create_org(&db.url, "scale chain");
    let servers = start_servers(&db.url, 2, &[], &dir.path().join("serve.log")).await;
    let apis: Vec<Api> = servers.iter().map(|s| api_of(s, &key)).collect();
    let answers: Vec<Value> = futures_util::stream::iter(0..60)
        .map(|n| {
            let api = apis[n % 2].clone();
            async move { api.patch_interview("cand_shared", json!({"interview_summary": format!("v{n}")})).await }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert!(answers.iter().all(|a| a["event"].is_object()), "every update changed the summary");

    let mut events = apis[0].all("/v1/events").await;
    events.reverse(); // oldest first
    assert_eq!(events.len(), 60);
    let mut previous = Value::Null;
    for event in &events {
        let change = &event["payload"]["changes"]["interview_summary"];
        assert_eq!(change["from"], previous, "each event's `from` is the previous event's `to`: {event}");
        previous = change["to"].clone();
    }
    let last = apis[1].get("/v1/interviews/cand_shared").await.1;
    assert_eq!(last["interview_summary"], previous, "the stored state is the last event's `to`");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_starting_together_migrate_once() {
    let Some(db) = postgres("scale::processes_starting_together_migrate_once").await else { return };
    let children: Vec<_> = (0..4)
        .map(|_| {
            std::process::Command::new(crate::process::BIN)
                .args(["migrate", "--database", &db.url])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn tidings migrate")
        })
        .collect();
    for child in children {
        let output = child.wait_with_output().expect("tidings migrate ends");
        assert!(output.status.success(), "migrate failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    // Each migration is recorded once, and the schema works.
    let mut connection = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url).await.unwrap();
    let applied: i64 =
        sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations").fetch_one(&mut connection).await.unwrap();
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres")).unwrap().count();
    assert_eq!(applied as usize, files);
    let key = create_org(&db.url, "after a crowded start");
    assert!(key.starts_with("tdk_"));
    let dir = tempfile::tempdir().unwrap();
    let servers = start_servers(&db.url, 1, &[], &dir.path().join("serve.log")).await;
    let (status, _) = api_of(&servers[0], &key).get("/v1/endpoints").await;
    assert_eq!(status, axum::http::StatusCode::OK);
}
