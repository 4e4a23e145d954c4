//! Tidings: a webhook delivery service.
//!
//! It keeps each candidate's interview, turns every change into an `interview.updated` event carrying a diff,
//! fans events out to the endpoints customers registered, delivers them durably with retries, signs them and
//! logs every attempt.
//!
//! | module | owns |
//! |---|---|
//! | [`config`] | the typed configuration of `tidings serve`, parsed from flags and `TIDINGS_*` variables |
//! | [`app`] | wiring: opens the store, starts the HTTP server and the delivery workers, stops them |
//! | [`domain`] | pure code: interview diff, payloads, signing, retry schedule, URL policy, ids, keys |
//! | [`store`] | the only module that speaks SQL: one trait, SQLite and PostgreSQL implementations, and the handoff of fresh deliveries to this process's workers |
//! | [`delivery`] | the claim loop, the starter of handed-off deliveries, the recorder, and the outbound HTTP sender |
//! | [`http`] | the JSON API: handlers, extractors, one error type, the OpenAPI document |
//! | [`settings`] | the Developer Settings page: server-rendered HTML under `/settings`, sessions, CSRF |
//! | [`metrics`] | Prometheus counters shared by the API and the workers |
//! | [`cli`] | the command line: `serve`, `worker`, `migrate`, `org create`, `listen`, `bench` |

pub mod app;
pub mod cli;
pub mod config;
pub mod delivery;
pub mod domain;
pub mod http;
pub mod metrics;
pub mod settings;
pub mod store;

pub use app::{create_org, run};
pub use config::ServeConfig;
