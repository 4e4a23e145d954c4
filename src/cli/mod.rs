//! The command line: `serve`, `worker`, `migrate`, `org create`, `listen`. Flags also read `TIDINGS_*`
//! environment variables.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use secrecy::ExposeSecret;

use crate::config::{ServeConfig, defaults, parse_duration, parse_schedule};

mod bench;
mod listen;

#[derive(Parser)]
#[command(name = "tidings", version, about = "Webhook delivery: interview changes in, signed webhooks out.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the API and the delivery workers.
    Serve(ServeArgs),
    /// Run the delivery workers only (health and metrics are still served on --listen).
    Worker(ServeArgs),
    /// Create or update the database schema, then exit.
    Migrate(DatabaseArg),
    /// Manage organizations.
    Org {
        #[command(subcommand)]
        command: OrgCommand,
    },
    /// Run a local receiver that prints every webhook it gets and checks its signature.
    Listen(listen::ListenArgs),
    /// Measure throughput, fan-out, latency and memory end to end on this machine (loopback only).
    Bench(bench::BenchArgs),
}

#[derive(Subcommand)]
enum OrgCommand {
    /// Create an organization and its first API key (printed once, as the last line).
    Create {
        /// The organization's name.
        name: String,
        #[command(flatten)]
        database: DatabaseArg,
    },
}

#[derive(Args)]
struct DatabaseArg {
    /// SQLite file path (or `sqlite:` URL), or a `postgres://` URL.
    #[arg(long, env = "TIDINGS_DATABASE", default_value = "tidings.db", hide_env_values = true)]
    database: String,
}

#[derive(Args)]
struct ServeArgs {
    /// Address the HTTP API listens on.
    #[arg(long, env = "TIDINGS_LISTEN", default_value = defaults::LISTEN)]
    listen: SocketAddr,
    #[command(flatten)]
    database: DatabaseArg,
    /// Delays before retry 1, 2, 3…; the count is the number of retries after the first attempt.
    #[arg(long, env = "TIDINGS_RETRY_SCHEDULE", default_value = defaults::RETRY_SCHEDULE, value_parser = parse_schedule)]
    retry_schedule: std::vec::Vec<Duration>,
    /// Each retry delay is scaled by a random factor in 1 ± this.
    #[arg(long, env = "TIDINGS_RETRY_JITTER", default_value_t = defaults::RETRY_JITTER)]
    retry_jitter: f64,
    /// Longest one delivery attempt may take.
    #[arg(long, env = "TIDINGS_ATTEMPT_TIMEOUT", default_value = defaults::ATTEMPT_TIMEOUT, value_parser = parse_duration)]
    attempt_timeout: Duration,
    /// Allow endpoints on loopback, private and link-local addresses.
    #[arg(long, env = "TIDINGS_ALLOW_PRIVATE_TARGETS")]
    allow_private_targets: bool,
    /// Largest API request body, in bytes.
    #[arg(long, env = "TIDINGS_MAX_BODY_BYTES", default_value_t = defaults::MAX_BODY_BYTES)]
    max_body_bytes: usize,
    /// Serve the API only; deliveries are left to `tidings worker` processes.
    #[arg(long, env = "TIDINGS_NO_WORKERS")]
    no_workers: bool,
    /// Attempts in flight at once in this process.
    #[arg(long, env = "TIDINGS_MAX_IN_FLIGHT", default_value_t = defaults::MAX_IN_FLIGHT)]
    max_in_flight: usize,
    /// Attempts in flight at once to one endpoint.
    #[arg(long, env = "TIDINGS_ENDPOINT_CONCURRENCY", default_value_t = defaults::ENDPOINT_CONCURRENCY)]
    endpoint_concurrency: usize,
    /// How long a rotated-out signing secret keeps signing.
    #[arg(long, env = "TIDINGS_SECRET_GRACE", default_value = defaults::SECRET_GRACE, value_parser = parse_duration)]
    secret_grace: Duration,
    /// How often workers look for due retries when nothing woke them.
    #[arg(long, env = "TIDINGS_POLL_INTERVAL", default_value = defaults::POLL_INTERVAL, value_parser = parse_duration)]
    poll_interval: Duration,
    /// Secret (32+ characters) that signs Developer Settings sessions; the same on every API process.
    #[arg(long, env = "TIDINGS_SESSION_KEY", hide_env_values = true)]
    session_key: Option<String>,
    /// How long an API client may take to send a request's head (and an idle kept-alive connection may wait
    /// for its next one), and then its body.
    #[arg(long, env = "TIDINGS_CLIENT_TIMEOUT", default_value = defaults::CLIENT_TIMEOUT, value_parser = parse_duration)]
    client_timeout: Duration,
}

impl ServeArgs {
    fn into_config(self, worker_only: bool) -> ServeConfig {
        ServeConfig {
            listen: self.listen,
            database: self.database.database,
            retry_schedule: self.retry_schedule,
            retry_jitter: self.retry_jitter,
            attempt_timeout: self.attempt_timeout,
            allow_private_targets: self.allow_private_targets,
            max_body_bytes: self.max_body_bytes,
            workers: !self.no_workers,
            api: !worker_only,
            max_in_flight: self.max_in_flight,
            endpoint_concurrency: self.endpoint_concurrency,
            secret_grace: self.secret_grace,
            poll_interval: self.poll_interval,
            session_key: self.session_key.map(secrecy::SecretString::from),
            client_timeout: self.client_timeout,
        }
    }
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(execute(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TIDINGS_LOG")
        // PostgreSQL's notices (a migration's "already exists, skipping" on every start) say nothing to act on.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx::postgres::notice=warn"));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

async fn execute(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => serve(args.into_config(false)).await,
        Command::Worker(args) => serve(args.into_config(true)).await,
        Command::Migrate(args) => {
            crate::store::open(&args.database).await?;
            println!("database {} is up to date", crate::store::shown_database(&args.database));
            Ok(())
        }
        Command::Org { command: OrgCommand::Create { name, database } } => {
            let org = crate::create_org(&database.database, &name).await?;
            println!("organization {} ({}) created", org.id, name.trim());
            println!("API key, shown this once:");
            println!("{}", org.api_key.expose_secret());
            Ok(())
        }
        Command::Listen(args) => listen::run(args).await,
        Command::Bench(args) => bench::run(args).await,
    }
}

async fn serve(config: ServeConfig) -> anyhow::Result<()> {
    config.validate().map_err(anyhow::Error::msg)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
    crate::run(config, listener, shutdown_signal()).await
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down");
}
