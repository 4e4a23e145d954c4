//! `tidings bench` runs end to end with tiny counts and reports every figure. (What the figures are is the
//! benchmark's business; this only proves the command works.)

use std::process::{Command, Stdio};

use serde_json::Value;

use crate::process::BIN;

#[test]
fn bench_runs_and_reports_every_figure() {
    let output = Command::new(BIN)
        .args(["bench", "--n", "200", "--concurrency", "8", "--endpoints", "4", "--rate", "100"])
        .args(["--latency-duration", "300ms", "--phase-timeout", "60s", "--json"])
        .stdin(Stdio::null())
        .output()
        .expect("run tidings bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "tidings bench failed: {}\n{stdout}\n{stderr}", output.status);
    assert!(stderr.contains("throughput"), "progress is shown while it runs: {stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("--json prints JSON ({e}): {stdout}"));
    assert_eq!(report["store"], "sqlite");
    let figures = ["ceiling_per_s", "ingest_per_s", "delivery_per_s", "fanout_deliveries_per_s", "server_peak_rss_mib"];
    for figure in figures {
        assert!(report[figure].as_f64().is_some_and(|v| v > 0.0), "{figure} is a positive number: {report:#}");
    }
    // A tiny run may take less CPU than /proc can count (10 ms), so the cost figures are only present.
    for figure in ["throughput_server_cpu_us_per_webhook", "fanout_server_cpu_us_per_webhook"] {
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
}
