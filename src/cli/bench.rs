//! `tidings bench`: an end-to-end load run on this machine, bounded in count and time, loopback only. It starts
//! a fresh store, a `tidings serve` child process and a minimal receiver, then measures the ceiling (a plain
//! client posting straight to the receiver), throughput to one endpoint, fan-out to many, change-to-receipt
//! latency, and the server's peak resident memory.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use clap::Args;
use hdrhistogram::Histogram;
use secrecy::ExposeSecret;
use serde::Serialize;
use serde_json::json;

use crate::config::parse_duration;
use crate::domain::interview::EXAMPLE_BODY;

#[derive(Args)]
pub struct BenchArgs {
    /// Webhooks per run of each rate measured (ceiling, throughput, fan-out); each is run three times.
    #[arg(long, default_value_t = 20_000)]
    n: usize,
    /// Requests in flight at once from the load generator.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Endpoints of the fan-out measurement (each update goes to all of them).
    #[arg(long, default_value_t = 50)]
    endpoints: usize,
    /// Updates per second of the open-loop latency measurement.
    #[arg(long, default_value_t = 1_000)]
    rate: u64,
    /// How long each open-loop latency run lasts.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    latency_duration: Duration,
    /// Store to use: a fresh SQLite file in a temporary folder by default, or a `postgres://` URL (which should
    /// name an empty database).
    #[arg(long)]
    database: Option<String>,
    /// Longest any one measurement may take before the run gives up.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    phase_timeout: Duration,
    /// Old succeeded deliveries to add before measuring throughput a second time (0: skip), to show that the
    /// queue's cost does not grow with history.
    #[arg(long, default_value_t = 0)]
    history: u64,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Latency figures, in milliseconds.
#[derive(Serialize, Default, Clone)]
struct Latency {
    rate_per_s: f64,
    count: u64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    max_ms: f64,
    /// The server's CPU time per webhook of this run: at a fixed rate, what the service costs when it is not
    /// pressed.
    server_cpu_us_per_webhook: f64,
}

#[derive(Serialize, Default)]
struct Report {
    store: String,
    n: usize,
    concurrency: usize,
    ceiling_per_s: f64,
    ingest_per_s: f64,
    delivery_per_s: f64,
    delivery_vs_ceiling: f64,
    history_deliveries: u64,
    delivery_with_history_per_s: f64,
    with_history_vs_without: f64,
    fanout_endpoints: usize,
    fanout_deliveries_per_s: f64,
    fanout_vs_ceiling: f64,
    /// The server's CPU time (user and system, all threads) per webhook of the throughput and fan-out runs: a
    /// figure of cost that moves less with a shared machine's noise than rates do.
    throughput_server_cpu_us_per_webhook: f64,
    fanout_server_cpu_us_per_webhook: f64,
    /// On a PostgreSQL running on this machine, the CPU time of its processes per webhook of the same runs
    /// (every `postgres` process, whatever it serves); 0 on SQLite, which runs inside the server and is
    /// counted in its CPU, and on a database elsewhere.
    throughput_database_cpu_us_per_webhook: f64,
    fanout_database_cpu_us_per_webhook: f64,
    latency_unloaded: Latency,
    latency_fixed: Latency,
    latency_half_throughput: Latency,
    server_peak_rss_mib: f64,
}

/// What the receiver has seen.
struct Sink {
    base: Instant,
    count: AtomicU64,
    /// Nanoseconds after `base` of the last receipt.
    last_ns: AtomicU64,
    /// When set, receipts are timed per candidate id.
    track: AtomicBool,
    arrivals: Mutex<HashMap<String, Instant>>,
    /// Rung on every tracked receipt, so a waiter sleeps instead of spinning on a core the server needs.
    arrived: tokio::sync::Notify,
}

async fn receive(State(sink): State<Arc<Sink>>, body: Bytes) -> StatusCode {
    let now = Instant::now();
    if sink.track.load(Ordering::Relaxed)
        && let Some(candidate) = candidate_of(&body)
    {
        sink.arrivals.lock().unwrap_or_else(|e| e.into_inner()).insert(candidate, now);
        sink.arrived.notify_waiters();
    }
    sink.last_ns.fetch_max(now.duration_since(sink.base).as_nanos() as u64, Ordering::Relaxed);
    sink.count.fetch_add(1, Ordering::Relaxed);
    StatusCode::OK
}

/// The candidate id of an `interview.updated` body, found without parsing the whole body.
fn candidate_of(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let start = text.find("\"candidate_id\":\"")? + "\"candidate_id\":\"".len();
    let end = text[start..].find('"')? + start;
    Some(text[start..end].to_owned())
}

/// The `tidings serve` under test; killed when dropped.
struct Server {
    child: Child,
    base: String,
    /// Whether its database is a PostgreSQL on this machine, whose CPU can be read too.
    local_database: bool,
}

/// What the server, and a local database, had spent when a run began.
struct Spent {
    server: f64,
    database: Option<HashMap<String, f64>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The command name and the CPU time used so far (user and system, every thread), in seconds, of a process,
/// from `/proc` (Linux only; `None` elsewhere or once it is gone). `/proc` counts in clock ticks, 100 per second
/// on Linux.
fn process_cpu(pid: &str) -> Option<(String, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces, inside parentheses; of the fields after it, utime is the 12th and stime
    // the 13th.
    let (head, rest) = stat.rsplit_once(')')?;
    let name = head.split_once('(')?.1.to_owned();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    Some((name, (ticks(11) + ticks(12)) / 100.0))
}

/// CPU time used so far by every `postgres` process on this machine, by process id: a local database's share
/// of a run is the growth of this between two readings (a process started meanwhile counts from zero).
fn database_cpu() -> HashMap<String, f64> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return HashMap::new() };
    entries
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|pid| pid.bytes().all(|b| b.is_ascii_digit()))
        .filter_map(|pid| process_cpu(&pid).filter(|(name, _)| name == "postgres").map(|(_, cpu)| (pid, cpu)))
        .collect()
}

/// Microseconds of a local database's CPU per webhook since `before` (a [`database_cpu`] reading).
fn database_cpu_us_per_webhook(before: &HashMap<String, f64>, webhooks: usize) -> f64 {
    let spent: f64 = database_cpu().iter().map(|(pid, cpu)| cpu - before.get(pid).copied().unwrap_or(0.0)).sum();
    spent.max(0.0) * 1e6 / webhooks.max(1) as f64
}

/// Whether a `postgres://` URL names a server on this machine (a loopback address, `localhost` or a socket), read
/// as the store's connections read it (so with `PGHOST` and the other defaults they take).
fn is_local(database: &str) -> bool {
    let Ok(options) = crate::store::postgres::connect_options(database) else { return false };
    let host = options.get_host().trim_start_matches('[').trim_end_matches(']');
    options.get_socket().is_some()
        || host.starts_with('/')
        || host == "localhost"
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl Server {
    /// CPU time used so far by every thread of the server, in seconds (0 where `/proc` cannot tell).
    fn cpu_seconds(&self) -> f64 {
        process_cpu(&self.child.id().to_string()).map_or(0.0, |(_, cpu)| cpu)
    }

    /// What the server and a local database have spent so far.
    fn spent(&self) -> Spent {
        Spent { server: self.cpu_seconds(), database: self.local_database.then(database_cpu) }
    }

    /// Microseconds of server CPU and of a local database's CPU (0 for none) per webhook since `before`.
    fn cost_since(&self, before: &Spent, webhooks: usize) -> (f64, f64) {
        let database = before.database.as_ref().map_or(0.0, |before| database_cpu_us_per_webhook(before, webhooks));
        (self.cpu_us_per_webhook(before.server, webhooks), database)
    }

    /// Microseconds of server CPU per webhook since `before` (a [`Self::cpu_seconds`] reading).
    fn cpu_us_per_webhook(&self, before: f64, webhooks: usize) -> f64 {
        (self.cpu_seconds() - before) * 1e6 / webhooks.max(1) as f64
    }

    /// Runs a latency measurement and adds the server's CPU per webhook while it ran.
    async fn costed(&self, run: impl Future<Output = anyhow::Result<Latency>>) -> anyhow::Result<Latency> {
        let cpu = self.cpu_seconds();
        let latency = run.await?;
        Ok(Latency { server_cpu_us_per_webhook: self.cpu_us_per_webhook(cpu, latency.count as usize), ..latency })
    }

    /// Peak resident memory so far, from `/proc` (Linux only; 0 elsewhere).
    fn peak_rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    }
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.n > 0 && args.concurrency > 0 && args.endpoints > 0 && args.rate > 0,
        "counts must be positive"
    );
    // The open-loop runs keep one entry per update sent; bound them so a typo cannot exhaust memory.
    anyhow::ensure!(
        args.rate as f64 * args.latency_duration.as_secs_f64() <= 1_000_000.0,
        "--rate × --latency-duration must be at most 1,000,000 updates"
    );
    let dir = tempfile::tempdir()?;
    let database = args.database.clone().unwrap_or_else(|| dir.path().join("bench.db").to_string_lossy().into_owned());
    let store = if crate::store::is_postgres(&database) { "postgres" } else { "sqlite" };
    let mut report = Report { store: store.into(), n: args.n, concurrency: args.concurrency, ..Report::default() };
    progress(&format!("bench: {} webhooks per run, {} in flight, store {store}", args.n, args.concurrency));

    let sink = Arc::new(Sink {
        base: Instant::now(),
        count: AtomicU64::new(0),
        last_ns: AtomicU64::new(0),
        track: AtomicBool::new(false),
        arrivals: Mutex::new(HashMap::new()),
        arrived: tokio::sync::Notify::new(),
    });
    let receiver_url = spawn_receiver(sink.clone())?;

    let server = start_server(&database).await?;
    // No request may outlast a phase, so every phase ends within its timeout even if the server stops answering.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .tcp_nodelay(true)
        .timeout(args.phase_timeout)
        .build()?;

    progress("ceiling: a plain client posting straight to the receiver");
    let mut ceilings = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let started = Instant::now();
        let before = sink.count.load(Ordering::Relaxed);
        let (ceiling_client, ceiling_url) = (client.clone(), receiver_url.clone());
        run_concurrently(args.n, args.concurrency, move |_| {
            let (client, url) = (ceiling_client.clone(), ceiling_url.clone());
            async move {
                let _ = client.post(url).header("content-type", "application/json").body(EXAMPLE_BODY).send().await;
            }
        })
        .await;
        anyhow::ensure!(sink.count.load(Ordering::Relaxed) - before == args.n as u64, "the receiver missed posts");
        ceilings.push(args.n as f64 / started.elapsed().as_secs_f64());
    }
    report.ceiling_per_s = median(ceilings);

    progress("throughput: interview updates to one endpoint");
    let api = Api::new(&client, &server.base, &database, "bench-throughput").await?;
    let endpoint = api.endpoint(&receiver_url).await?;
    // A warm-up, not measured: connection pools, page caches and the WAL reach their working size.
    deliver(&api, &sink, "w", (args.n / 10).max(1), 1, args.concurrency, args.phase_timeout).await?;
    let spent = server.spent();
    let (ingest, delivery) = deliver_runs(&api, &sink, "t", args.n, 1, &args).await?;
    (report.throughput_server_cpu_us_per_webhook, report.throughput_database_cpu_us_per_webhook) =
        server.cost_since(&spent, args.n * RUNS);
    report.ingest_per_s = ingest;
    report.delivery_per_s = delivery;
    report.delivery_vs_ceiling = delivery / report.ceiling_per_s;

    if args.history > 0 {
        progress(&format!("throughput again, with {} old deliveries in the store", args.history));
        crate::store::open(&database).await?.seed_history(&api.org, &endpoint, args.history).await?;
        // Warmed up like the first measurement: the caches now hold different pages.
        deliver(&api, &sink, "w2", (args.n / 10).max(1), 1, args.concurrency, args.phase_timeout).await?;
        let (_, again) = deliver_runs(&api, &sink, "old", args.n, 1, &args).await?;
        report.history_deliveries = args.history;
        report.delivery_with_history_per_s = again;
        report.with_history_vs_without = again / delivery;
    }

    progress(&format!("fan-out: updates to {} endpoints", args.endpoints));
    let api = Api::new(&client, &server.base, &database, "bench-fanout").await?;
    for _ in 0..args.endpoints {
        api.endpoint(&receiver_url).await?;
    }
    let updates = (args.n / args.endpoints).max(1);
    let spent = server.spent();
    let (_, fanout) = deliver_runs(&api, &sink, "f", updates, args.endpoints, &args).await?;
    (report.fanout_server_cpu_us_per_webhook, report.fanout_database_cpu_us_per_webhook) =
        server.cost_since(&spent, updates * args.endpoints * RUNS);
    report.fanout_endpoints = args.endpoints;
    report.fanout_deliveries_per_s = fanout;
    report.fanout_vs_ceiling = fanout / report.ceiling_per_s;

    let api = Api::new(&client, &server.base, &database, "bench-latency").await?;
    api.endpoint(&receiver_url).await?;
    sink.track.store(true, Ordering::Relaxed);
    progress("latency: one update at a time");
    report.latency_unloaded = server.costed(unloaded_latency(&api, &sink, 500, args.phase_timeout)).await?;
    progress(&format!("latency: {} updates/s, open loop", args.rate));
    let fixed = open_loop_latency(&api, &sink, "r", args.rate, args.latency_duration, args.phase_timeout);
    report.latency_fixed = server.costed(fixed).await?;
    let half = ((delivery / 2.0) as u64).max(1);
    progress(&format!("latency: {half} updates/s (half the measured throughput), open loop"));
    let halved = open_loop_latency(&api, &sink, "h", half, args.latency_duration, args.phase_timeout);
    report.latency_half_throughput = server.costed(halved).await?;
    report.server_peak_rss_mib = server.peak_rss_mib();
    drop(server);

    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    Ok(())
}

/// Starts the receiver on a runtime and thread of its own, as a separate service would be, and answers its
/// URL. Sharing the load generator's worker threads made the ceiling swing between runs with how the
/// connections happened to be spread over them.
fn spawn_receiver(sink: Arc<Sink>) -> anyhow::Result<String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    std::thread::Builder::new().name("bench-receiver".into()).spawn(move || {
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener)?;
            let app = Router::new().fallback(receive).with_state(sink);
            axum::serve(listener, app).await
        })
    })?;
    Ok(url)
}

fn progress(text: &str) {
    eprintln!("… {text}");
}

async fn start_server(database: &str) -> anyhow::Result<Server> {
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
        probe.local_addr()?.port()
    };
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let child = Command::new(std::env::current_exe()?)
        .args(["serve", "--allow-private-targets", "--database", database, "--listen", &address.to_string()])
        .env("TIDINGS_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?;
    let local_database = crate::store::is_postgres(database) && is_local(database);
    let mut server = Server { child, base: format!("http://{address}"), local_database };
    let client = reqwest::Client::builder().timeout(Duration::from_secs(1)).build()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if client.get(format!("{}/readyz", server.base)).send().await.is_ok_and(|r| r.status().is_success()) {
            return Ok(server);
        }
        if let Some(status) = server.child.try_wait()? {
            anyhow::bail!("the server exited before it was ready ({status})");
        }
        anyhow::ensure!(Instant::now() < deadline, "the server did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One organization's view of the server under test.
#[derive(Clone)]
struct Api {
    client: reqwest::Client,
    base: String,
    key: String,
    org: String,
}

impl Api {
    async fn new(client: &reqwest::Client, base: &str, database: &str, name: &str) -> anyhow::Result<Self> {
        let org = crate::create_org(database, name).await?;
        let key = org.api_key.expose_secret().to_owned();
        Ok(Self { client: client.clone(), base: base.to_owned(), key, org: org.id })
    }

    /// Registers `url`; answers the endpoint's id.
    async fn endpoint(&self, url: &str) -> anyhow::Result<String> {
        let response = self
            .client
            .post(format!("{}/v1/endpoints", self.base))
            .bearer_auth(&self.key)
            .json(&json!({ "url": url }))
            .send()
            .await?;
        anyhow::ensure!(response.status().is_success(), "creating an endpoint answered {}", response.status());
        let created: serde_json::Value = response.json().await?;
        created["id"].as_str().map(str::to_owned).ok_or_else(|| anyhow::anyhow!("no id in {created}"))
    }

    /// Updates candidate `id` with the document's example fields.
    async fn update(&self, id: &str) -> anyhow::Result<()> {
        let response = self
            .client
            .patch(format!("{}/v1/interviews/{id}", self.base))
            .bearer_auth(&self.key)
            .header("content-type", "application/json")
            .body(UPDATE_BODY)
            .send()
            .await?;
        anyhow::ensure!(response.status().is_success(), "an update answered {}", response.status());
        Ok(())
    }
}

/// The document's example fields, as every measured update sends them: written once, so the load generator
/// spends its time sending rather than serializing.
const UPDATE_BODY: &str = r#"{"interview_completed_at":"2025-04-15T16:00:00Z","interview_sent_at":"2025-04-14T12:00:00Z","interview_outcome":"completed","interview_summary":"Example of customizable interview summary text","interview_custom_data":{"can_lift_50lbs":true,"eligible_to_work":true}}"#;

/// Runs `count` jobs with at most `concurrency` at once.
async fn run_concurrently<F, Fut>(count: usize, concurrency: usize, job: F)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let job = Arc::new(job);
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency.min(count) {
        let (next, job) = (next.clone(), job.clone());
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return;
                }
                job(i).await;
            }
        });
    }
    while workers.join_next().await.is_some() {}
}

/// How many times each rate is measured; the report gives the median. Other work on a shared machine moves a
/// single run by a tenth or more, and the ratios divide two rates measured seconds apart.
const RUNS: usize = 3;

/// The middle value (of an odd count; the upper middle of an even one).
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or_default()
}

/// [`deliver`] run [`RUNS`] times, with distinct candidates each time: the median ingest and delivery rates.
async fn deliver_runs(
    api: &Api,
    sink: &Arc<Sink>,
    tag: &str,
    updates: usize,
    per_update: usize,
    args: &BenchArgs,
) -> anyhow::Result<(f64, f64)> {
    let (mut ingest, mut delivery) = (Vec::with_capacity(RUNS), Vec::with_capacity(RUNS));
    for run in 0..RUNS {
        let tag = format!("{tag}{run}");
        let (i, d) = deliver(api, sink, &tag, updates, per_update, args.concurrency, args.phase_timeout).await?;
        ingest.push(i);
        delivery.push(d);
    }
    Ok((median(ingest), median(delivery)))
}

/// Sends `updates` distinct updates, each fanning out to `per_update` endpoints, and waits for every webhook.
/// Answers the ingest rate (updates/s) and the delivery rate (webhooks/s, first send to last receipt).
async fn deliver(
    api: &Api,
    sink: &Arc<Sink>,
    tag: &str,
    updates: usize,
    per_update: usize,
    concurrency: usize,
    timeout: Duration,
) -> anyhow::Result<(f64, f64)> {
    let expected = sink.count.load(Ordering::Relaxed) + (updates * per_update) as u64;
    let failures = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tag = tag.to_owned();
    let api = Arc::new(api.clone());
    {
        let failures = failures.clone();
        run_concurrently(updates, concurrency, move |i| {
            let (api, failures, id) = (api.clone(), failures.clone(), format!("{tag}_{i}"));
            async move {
                if api.update(&id).await.is_err() {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
        .await;
    }
    let ingest = updates as f64 / started.elapsed().as_secs_f64();
    anyhow::ensure!(failures.load(Ordering::Relaxed) == 0, "{} updates failed", failures.load(Ordering::Relaxed));
    wait_for(sink, expected, timeout).await?;
    let last = sink.base + Duration::from_nanos(sink.last_ns.load(Ordering::Relaxed));
    let delivery = (updates * per_update) as f64 / last.duration_since(started).as_secs_f64();
    Ok((ingest, delivery))
}

async fn wait_for(sink: &Sink, expected: u64, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while sink.count.load(Ordering::Relaxed) < expected {
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {} of {expected} webhooks arrived within {timeout:?}",
            sink.count.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}

/// Change-to-receipt latency with one update in flight at a time.
async fn unloaded_latency(api: &Api, sink: &Sink, count: usize, timeout: Duration) -> anyhow::Result<Latency> {
    let mut histogram = new_histogram();
    let started = Instant::now();
    for i in 0..count {
        let id = format!("u_{i}");
        let sent = Instant::now();
        api.update(&id).await?;
        let deadline = Instant::now() + timeout;
        let received = loop {
            // Registered before looking, so a receipt between the look and the wait still wakes us.
            let mut arrived = std::pin::pin!(sink.arrived.notified());
            arrived.as_mut().enable();
            if let Some(at) = sink.arrivals.lock().unwrap_or_else(|e| e.into_inner()).remove(&id) {
                break at;
            }
            anyhow::ensure!(Instant::now() < deadline, "webhook for {id} did not arrive");
            let _ = tokio::time::timeout(Duration::from_millis(100), arrived).await;
        };
        let _ = histogram.record(received.duration_since(sent).as_micros().max(1) as u64);
    }
    Ok(latency(&histogram, count as f64 / started.elapsed().as_secs_f64()))
}

/// Change-to-receipt latency of an open-loop stream: updates start on schedule whatever the answers.
async fn open_loop_latency(
    api: &Api,
    sink: &Arc<Sink>,
    tag: &str,
    rate: u64,
    duration: Duration,
    timeout: Duration,
) -> anyhow::Result<Latency> {
    let count = ((rate as f64) * duration.as_secs_f64()).ceil().max(1.0) as usize;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::new(Mutex::new(HashMap::with_capacity(count)));
    let api = Arc::new(api.clone());
    let start = tokio::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..count {
        tokio::time::sleep_until(start + interval * i as u32).await;
        let (api, sent, id) = (api.clone(), sent.clone(), format!("{tag}_{i}"));
        tasks.spawn(async move {
            sent.lock().unwrap_or_else(|e| e.into_inner()).insert(id.clone(), Instant::now());
            api.update(&id).await
        });
    }
    while let Some(result) = tasks.join_next().await {
        result??;
    }
    let deadline = Instant::now() + timeout;
    let mut histogram = new_histogram();
    let sent = std::mem::take(&mut *sent.lock().unwrap_or_else(|e| e.into_inner()));
    for (id, at) in sent {
        let received = loop {
            if let Some(received) = sink.arrivals.lock().unwrap_or_else(|e| e.into_inner()).remove(&id) {
                break received;
            }
            anyhow::ensure!(Instant::now() < deadline, "webhook for {id} did not arrive");
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        let _ = histogram.record(received.saturating_duration_since(at).as_micros().max(1) as u64);
    }
    Ok(latency(&histogram, rate as f64))
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

fn latency(histogram: &Histogram<u64>, rate: f64) -> Latency {
    let ms = |micros: u64| micros as f64 / 1000.0;
    Latency {
        rate_per_s: rate,
        count: histogram.len(),
        p50_ms: ms(histogram.value_at_quantile(0.5)),
        p99_ms: ms(histogram.value_at_quantile(0.99)),
        p999_ms: ms(histogram.value_at_quantile(0.999)),
        max_ms: ms(histogram.max()),
        server_cpu_us_per_webhook: 0.0,
    }
}

fn print_report(r: &Report) {
    println!(
        "tidings bench — store {}, {} webhooks per run, {} in flight, rates the median of {RUNS} runs",
        r.store, r.n, r.concurrency
    );
    println!("  ceiling     {:>9.0} posts/s      (plain client straight to the receiver)", r.ceiling_per_s);
    // A local PostgreSQL's share is shown beside the server's; SQLite's is inside it.
    let cost = |server: f64, database: f64| {
        if database > 0.0 {
            format!("server CPU {server:.0} µs, database CPU {database:.0} µs per webhook")
        } else {
            format!("server CPU {server:.0} µs per webhook")
        }
    };
    println!(
        "  throughput  {:>9.0} webhooks/s   {:.2} × ceiling   (ingest {:.0} updates/s; {})",
        r.delivery_per_s,
        r.delivery_vs_ceiling,
        r.ingest_per_s,
        cost(r.throughput_server_cpu_us_per_webhook, r.throughput_database_cpu_us_per_webhook)
    );
    println!(
        "  fan-out     {:>9.0} webhooks/s   {:.2} × ceiling   ({} endpoints; {})",
        r.fanout_deliveries_per_s,
        r.fanout_vs_ceiling,
        r.fanout_endpoints,
        cost(r.fanout_server_cpu_us_per_webhook, r.fanout_database_cpu_us_per_webhook)
    );
    if r.history_deliveries > 0 {
        println!(
            "  with {} old deliveries {:>9.0} webhooks/s   {:.2} × without",
            r.history_deliveries, r.delivery_with_history_per_s, r.with_history_vs_without
        );
    }
    for (name, l) in
        [("unloaded", &r.latency_unloaded), ("fixed rate", &r.latency_fixed), ("half rate", &r.latency_half_throughput)]
    {
        println!(
            "  latency {:<10} {:>6.0}/s  p50 {:>7.2} ms  p99 {:>7.2} ms  p99.9 {:>7.2} ms  max {:>7.2} ms  (n={}; \
             server CPU {:.0} µs per webhook)",
            name, l.rate_per_s, l.p50_ms, l.p99_ms, l.p999_ms, l.max_ms, l.count, l.server_cpu_us_per_webhook
        );
    }
    println!("  server peak resident memory {:.1} MiB", r.server_peak_rss_mib);
}

#[cfg(test)]
mod tests {
    use super::{is_local, median, process_cpu};

    #[test]
    fn a_database_on_this_machine_is_told_from_one_elsewhere() {
        for local in [
            "postgres://postgres@127.0.0.1:5432/db",
            "postgres://localhost/db",
            "postgresql://u:p@[::1]:5432/db",
            "postgres:///db?host=/run/postgresql",
            "postgres://127.0.0.2/db",
        ] {
            assert!(is_local(local), "{local}");
        }
        for elsewhere in
            ["postgres://db.example.com/db", "postgres://u:p@10.0.0.5:5432/db", "postgres://[2001:db8::1]/db"]
        {
            assert!(!is_local(elsewhere), "{elsewhere}");
        }
    }

    /// This test's own process is found by its name (the kernel keeps 15 bytes of it), and the CPU it spends
    /// is counted.
    #[test]
    fn a_process_cpu_is_read_from_proc() {
        let exe = std::env::current_exe().unwrap();
        let file = exe.file_name().unwrap().to_string_lossy().into_owned();
        let (name, before) = process_cpu("self").expect("/proc/self/stat");
        assert_eq!(name, file[..file.len().min(15)]);
        // Busy until the kernel has counted a tick of it (10 ms), for at most ten seconds.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut spent = 0.0;
        while spent == 0.0 && std::time::Instant::now() < deadline {
            std::hint::black_box((0..100_000u64).sum::<u64>());
            spent = process_cpu("self").unwrap().1 - before;
        }
        assert!(spent > 0.0, "no CPU counted after ten seconds of work");
        assert_eq!(process_cpu("0"), None, "no process 0 in /proc");
    }

    #[test]
    fn the_median_is_the_middle_run() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![5.0]), 5.0);
        assert_eq!(median(Vec::new()), 0.0);
    }
}
