//! The real binary as a child process: `tidings org create` and `tidings serve`, for the tests that kill
//! processes or run several of them against one database.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::http::StatusCode;

use crate::helpers::ms;

pub const BIN: &str = env!("CARGO_BIN_EXE_tidings");

/// `tidings org create NAME --database PATH`: answers the key, the last line of its output.
pub fn create_org(database: &str, name: &str) -> String {
    let output = Command::new(BIN)
        .args(["org", "create", name, "--database", database])
        .stdin(Stdio::null())
        .output()
        .expect("run tidings org create");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "tidings org create failed: {}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let key = stdout.lines().map(str::trim).rfind(|l| !l.is_empty()).unwrap_or_default().to_owned();
    assert!(key.starts_with("tdk_"), "the last line of `org create` is the key, got {stdout:?}");
    key
}

/// A `tidings serve` child process, killed (SIGKILL) when dropped.
pub struct Server {
    child: Child,
    log: PathBuf,
    pub base: String,
}

impl Server {
    /// Starts `tidings serve` with `flags` and `env`, logging to `log`, and waits for `/healthz`.
    pub async fn start(flags: &[String], env: &[(&str, String)], port: u16, log: &Path) -> Server {
        let out = File::options().create(true).append(true).open(log).expect("log file");
        let mut command = Command::new(BIN);
        command.arg("serve").args(flags).stdin(Stdio::null()).stdout(out.try_clone().unwrap()).stderr(out);
        for (name, value) in env {
            command.env(name, value);
        }
        let child = command.spawn().expect("spawn tidings serve");
        let mut server = Server { child, log: log.to_owned(), base: format!("http://127.0.0.1:{port}") };
        server.wait_healthy().await;
        server
    }

    async fn wait_healthy(&mut self) {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().unwrap();
        let url = format!("{}/healthz", self.base);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(response) = http.get(&url).send().await
                && response.status() == StatusCode::OK
            {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("tidings serve exited with {status} before it was healthy:\n{}", self.log_text());
            }
            if Instant::now() >= deadline {
                panic!("{url} did not answer 200 in time:\n{}", self.log_text());
            }
            tokio::time::sleep(ms(25)).await;
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL (`Child::kill` on Unix) and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn serve_flags(database: &str, port: u16) -> Vec<String> {
    [
        "--database",
        database,
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--allow-private-targets",
        "--retry-schedule",
        "50ms,100ms,200ms",
        "--retry-jitter",
        "0",
        "--attempt-timeout",
        "2s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}
