//! Integration tests: the real app on 127.0.0.1:0 with a fresh SQLite file per test, real receivers, no mocks.
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
//! | `crash` | the real binary killed with SIGKILL loses no event |

mod contract;
mod crash;
mod diff;
mod endpoints;
mod errors;
mod helpers;
mod isolation;
mod retries;
mod signing;
