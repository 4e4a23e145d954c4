//! `tidings bench` runs end to end with tiny counts and reports every figure. (What the figures are is the
//! benchmark's business; this only proves the command works.)

use std::process::{Command, Stdio};

use serde_json::Value;

use crate::process::BIN;

/// Runs a tiny `tidings bench --json` (on `database` if given) and answers its report, after checking what every
/// store reports.
fn bench_report(database: Option<&str>) -> Value {
    let mut command = Command::new(BIN);
    command.args(["bench", "--n", "200", "--concurrency", "8", "--endpoints", "4", "--rate", "100"]).args([
        "--latency-duration",
        "300ms",
        "--phase-timeout",
        "60s",
        "--json",
    ]);
    if let Some(database) = database {
        command.args(["--database", database]);
    }
    let output = command.stdin(Stdio::null()).output().expect("run tidings bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "tidings bench failed: {}\n{stdout}\n{stderr}", output.status);
    assert!(stderr.contains("throughput"), "progress is shown while it runs: {stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("--json prints JSON ({e}): {stdout}"));
    let figures = ["ceiling_per_s", "ingest_per_s", "delivery_per_s", "fanout_deliveries_per_s", "server_peak_rss_mib"];
    for figure in figures {
        assert!(report[figure].as_f64().is_some_and(|v| v > 0.0), "{figure} is a positive number: {report:#}");
    }
    // A tiny run may take less CPU than /proc can count (10 ms), so the cost figures are only present.
    let costs = [
        "throughput_server_cpu_us_per_webhook",
        "fanout_server_cpu_us_per_webhook",
        "throughput_database_cpu_us_per_webhook",
        "fanout_database_cpu_us_per_webhook",
    ];
    for figure in costs {
        assert!(report[figure].as_f64().is_some_and(|v| v >= 0.0), "{figure} is a number: {report:#}");
    }
    for run in ["latency_unloaded", "latency_fixed", "latency_half_throughput"] {
        let latency = &report[run];
        assert!(latency["count"].as_u64().is_some_and(|n| n > 0), "{run} measured something: {latency}");
        let (p50, max) = (latency["p50_ms"].as_f64().expect("p50_ms"), latency["max_ms"].as_f64().expect("max_ms"));
        assert!(p50 <= max, "{run}: p50 ≤ max: {latency}");
        let cpu = latency["server_cpu_us_per_webhook"].as_f64();
        assert!(cpu.is_some_and(|v| v >= 0.0), "{run}: the server's CPU per webhook is a number: {latency}");
    }
    report
}

#[test]
fn bench_runs_and_reports_every_figure() {
    let report = bench_report(None);
    assert_eq!(report["store"], "sqlite");
    // SQLite runs inside the server: its CPU is the server's, with nothing beside it.
    assert_eq!(report["fanout_database_cpu_us_per_webhook"], 0.0, "{report:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_runs_on_postgres() {
    if crate::db::postgres_server().is_none() {
        crate::db::skip_notice("bench::bench_runs_on_postgres");
        return;
    }
    let db = crate::db::TestDb::new(crate::db::Backend::Postgres).await.expect("a database");
    let url = db.url.clone();
    let report = tokio::task::spawn_blocking(move || bench_report(Some(&url))).await.expect("the bench run");
    assert_eq!(report["store"], "postgres");
}
