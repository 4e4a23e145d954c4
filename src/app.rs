//! Wiring: open the store, start the API and the delivery workers, and stop them together.

use std::future::Future;
use std::io::ErrorKind;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;

use secrecy::SecretString;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::ServeConfig;
use crate::delivery::{Dispatcher, Sender, WorkerConfig, lease_for};
use crate::domain::apikey;
use crate::domain::retry::RetryPolicy;
use crate::http::{AppState, router};
use crate::metrics::Metrics;
use crate::store::{self, Handoff};

/// Deliveries that may wait in the handoff per attempt slot: enough that a burst of fan-out is started
/// from memory rather than claimed back from the store, few enough that a claim waits well under its lease.
const HANDOFF_PER_SLOT: usize = 4;

/// Runs the service on `listener` until `shutdown` resolves: the API (unless `config.api` is false, when only
/// health and metrics are served) and the delivery workers (unless `config.workers` is false). On shutdown
/// the server stops taking requests, workers stop claiming, and attempts in flight are finished and recorded.
pub async fn run(
    config: ServeConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    config.validate().map_err(anyhow::Error::msg)?;
    let wake = Arc::new(Notify::new());
    // A process that delivers takes the deliveries it writes straight to its own workers.
    let handoff = config
        .workers
        .then(|| Arc::new(Handoff::new(HANDOFF_PER_SLOT * config.max_in_flight, lease_for(config.attempt_timeout))));
    let store = store::open_with(&config.database, handoff.clone()).await?;
    let metrics = Arc::new(Metrics::new());
    let stop = CancellationToken::new();

    let workers = if config.workers {
        // Every attempt in flight may go to one host (endpoints often share one), and each connection it used
        // should stay open for the next: a smaller idle pool closes and reopens connections under load.
        let sender = Sender::new(config.attempt_timeout, config.allow_private_targets, config.max_in_flight);
        let worker_config = WorkerConfig {
            max_in_flight: config.max_in_flight,
            endpoint_concurrency: config.endpoint_concurrency,
            attempt_timeout: config.attempt_timeout,
            poll_interval: config.poll_interval,
            retry: Arc::new(RetryPolicy { schedule: config.retry_schedule.clone(), jitter: config.retry_jitter }),
        };
        let dispatcher = Dispatcher::new(store.clone(), sender, worker_config, wake.clone(), metrics.clone(), handoff);
        Some(tokio::spawn(dispatcher.run(stop.clone())))
    } else {
        None
    };

    let api = config.api;
    let client_timeout = config.client_timeout;
    let state = AppState { store, config: Arc::new(config), wake, metrics, keys: Arc::default() };
    let app = router(state, api);
    tracing::info!(address = %listener.local_addr()?, api, workers = workers.is_some(), "tidings is listening");
    serve(listener, app, client_timeout, {
        let stop = stop.clone();
        async move {
            tokio::select! {
                _ = shutdown => {},
                _ = stop.cancelled() => {},
            }
        }
    })
    .await;
    stop.cancel();
    if let Some(workers) = workers {
        workers.await?;
    }
    Ok(())
}

/// How long requests in progress at shutdown have to finish before their connections are closed.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves HTTP/1.1 on `listener` until `shutdown` resolves, then lets requests in progress finish (for up to
/// [`DRAIN_TIMEOUT`]) and closes every connection. A client has `client_timeout` to send each request's head;
/// a kept-alive connection waiting that long for its next request is closed.
async fn serve(listener: TcpListener, app: Router, client_timeout: Duration, shutdown: impl Future<Output = ()>) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(client_timeout);
    let graceful = GracefulShutdown::new();
    // Ends the connections that outlive the drain.
    let closed = CancellationToken::new();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // A connection the client gave up on before it was taken: only that one is lost.
                Err(error) if matches!(
                    error.kind(),
                    ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::ConnectionRefused
                ) => continue,
                Err(error) => {
                    // Out of file descriptors, say: wait for some to close rather than spin.
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let connection =
            graceful.watch(http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone())));
        let closed = closed.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = connection => {},
                () = closed.cancelled() => {},
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await.is_err() {
        tracing::warn!("requests still in progress {DRAIN_TIMEOUT:?} after shutdown began; closing their connections");
    }
    closed.cancel();
}

/// An organization just made, with its first API key (shown this once; only its hash is stored).
pub struct CreatedOrg {
    pub id: String,
    pub api_key: SecretString,
}

/// Makes an organization and its first API key in `database` (migrating it first).
pub async fn create_org(database: &str, name: &str) -> anyhow::Result<CreatedOrg> {
    let name = name.trim();
    anyhow::ensure!(!name.is_empty(), "the organization needs a name");
    let store = store::open(database).await?;
    let api_key = apikey::generate();
    let id = store.create_org(name, &apikey::hash(&api_key)).await?;
    Ok(CreatedOrg { id, api_key })
}
