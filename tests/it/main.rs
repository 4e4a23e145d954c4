//! Integration tests: the real app on 127.0.0.1:0 with a fresh store per test, real receivers, no mocks. Tests
//! declared with `on_both_stores!` run twice: on a SQLite file and on a fresh PostgreSQL database (when
//! `TIDINGS_TEST_POSTGRES_URL` is set; see `db`).
//!
//! | module | what it pins |
//! |---|---|
//! | `contract` | the bodies receivers get equal the document's examples |
//! | `diff` | `changes` rules, no-op updates, serialized concurrent updates |
//! | `retries` | attempts, backoff, timeouts, redirects, manual retry |
//! | `signing` | Standard Webhooks signatures and secret rotation |
//! | `endpoints` | endpoint lifecycle, event-type filtering, lists and filters |
//! | `errors` | every caller mistake answers the right 4xx in the one envelope |
//! | `isolation` | one organization never sees another's rows |
//! | `openapi` | `/openapi.json` equals the snapshot in `docs/openapi.json` and describes every route |
//! | `crash` | the real binary killed with SIGKILL loses no event |
//! | `store` | the store conformance suite: leases, claims, retries, cursors |
//! | `scale` | several `tidings` processes on one PostgreSQL: all delivered once, a killed one loses nothing |
//! | `bench` | `tidings bench` runs with tiny counts and reports every figure |
//! | `process` | the real binary as a child process |
//! | `db` | fresh databases per test and the `on_both_stores!` macro |

mod bench;
mod browser;
mod contract;
mod crash;
mod db;
mod diff;
mod endpoints;
mod errors;
mod helpers;
mod isolation;
mod openapi;
mod process;
mod retries;
mod scale;
mod settings;
mod signing;
mod store;
