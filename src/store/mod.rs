//! The store: the only module that speaks SQL. One trait, [`Store`], with a SQLite implementation; every
//! other module works with the records defined here.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use secrecy::SecretString;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::domain::interview::{Interview, InterviewPatch};
use crate::domain::retry::Next;
use crate::domain::time::Millis;

pub mod handoff;
pub mod postgres;
mod rows;
pub mod sqlite;

pub use handoff::Handoff;

/// A store failure. Callers treat it as internal: it is logged and answered as an opaque 500.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is damaged: {0}")]
    Corrupt(String),
    #[error("no organization {0}")]
    UnknownOrganization(String),
    #[error("the transaction this write was grouped into failed: {0}")]
    Batch(String),
    #[error("cannot start the store: {0}")]
    Start(String),
    #[error("the store is shutting down")]
    Closed,
}

impl StoreError {
    /// Whether the database refused the write itself (a value it cannot store, a constraint), so the same write
    /// fails again however often it is tried; not whether the database is out of reach or busy.
    pub fn refused(&self) -> bool {
        match self {
            // SQLSTATE classes 22 (data exception) and 23 (integrity constraint violation).
            Self::Database(error) => {
                sqlstate(error).is_some_and(|code| code.starts_with("22") || code.starts_with("23"))
            }
            Self::Sqlite(rusqlite::Error::SqliteFailure(error, _)) => matches!(
                error.code,
                rusqlite::ErrorCode::ConstraintViolation
                    | rusqlite::ErrorCode::TooBig
                    | rusqlite::ErrorCode::TypeMismatch
            ),
            _ => false,
        }
    }
}

/// The SQLSTATE code PostgreSQL ended a statement with, if it did.
pub(crate) fn sqlstate(error: &sqlx::Error) -> Option<std::borrow::Cow<'_, str>> {
    error.as_database_error().and_then(|e| e.code())
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// Opens the store named by `database` and brings its schema up to date: a `postgres://` URL opens
/// PostgreSQL; a file path or `sqlite:` URL opens SQLite (created if missing).
pub async fn open(database: &str) -> Result<Arc<dyn Store>> {
    open_with(database, None).await
}

/// Like [`open`], for a process that runs delivery workers: new deliveries are leased to them at once and
/// handed over through `handoff` (see [`handoff`]).
pub async fn open_with(database: &str, handoff: Option<Arc<Handoff>>) -> Result<Arc<dyn Store>> {
    if is_postgres(database) {
        return Ok(Arc::new(postgres::PostgresStore::open(database, handoff).await?));
    }
    Ok(Arc::new(sqlite::SqliteStore::open(database, handoff).await?))
}

/// Whether `database` names a PostgreSQL database rather than a SQLite file.
pub fn is_postgres(database: &str) -> bool {
    database.starts_with("postgres://") || database.starts_with("postgresql://")
}

/// A database as it may be shown (printed, logged): a URL's password is replaced by `***`, and a URL that does
/// not parse is not shown at all, since where its password ends is unknown.
pub fn shown_database(database: &str) -> String {
    if !is_postgres(database) {
        return database.to_owned();
    }
    match url::Url::parse(database) {
        Ok(mut url) => {
            if url.password().is_some() {
                let _ = url.set_password(Some("***"));
            }
            url.into()
        }
        Err(_) => "(a PostgreSQL URL that does not parse)".to_owned(),
    }
}

/// A page of a newest-first list.
#[derive(Debug, Clone, Copy)]
pub struct PageRequest {
    /// How many rows at most.
    pub limit: u32,
    /// Only rows older than this cursor (a row's `seq`, as a previous page gave it).
    pub before: Option<i64>,
}

/// Rows of a list and the cursor of the next page, if there is one.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<i64>,
}

impl<T> Page<T> {
    /// Builds a page from up to `limit + 1` rows fetched newest first: the extra row only tells that
    /// there is more.
    pub fn from_rows(mut rows: Vec<T>, limit: u32, seq: impl Fn(&T) -> i64) -> Self {
        let more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let next_cursor = if more { rows.last().map(seq) } else { None };
        Self { items: rows, next_cursor }
    }
}

/// A registered webhook URL, with its signing secrets.
#[derive(Debug, Clone)]
pub struct EndpointRecord {
    pub seq: i64,
    pub id: String,
    pub url: String,
    pub description: String,
    pub event_types: Vec<String>,
    pub enabled: bool,
    pub secret: SecretString,
    /// The secret before the last rotation, still signing until `previous_secret_until`.
    pub previous_secret: Option<SecretString>,
    pub previous_secret_until: Option<Millis>,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// An endpoint to register; every field already validated.
#[derive(Debug, Clone)]
pub struct NewEndpoint {
    pub url: String,
    pub description: String,
    pub event_types: Vec<String>,
    pub enabled: bool,
    pub secret: SecretString,
}

/// An edit of an endpoint: `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct EndpointChanges {
    pub url: Option<String>,
    pub description: Option<String>,
    pub event_types: Option<Vec<String>>,
    pub enabled: Option<bool>,
}

/// An event with its exact body.
#[derive(Debug, Clone)]
pub struct EventRecord {
    pub seq: i64,
    pub id: String,
    pub event_type: String,
    /// The JSON body, byte for byte as every attempt sends it.
    pub payload: String,
    pub created_at: Millis,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    Pending,
    Succeeded,
    Undeliverable,
}

impl DeliveryStatus {
    /// Every status, in the order lists show them.
    pub const ALL: [Self; 3] = [Self::Pending, Self::Succeeded, Self::Undeliverable];

    /// A `status` filter as the caller wrote it; an unknown one is refused in the words both the API and the
    /// settings pages show.
    pub fn parse_filter(text: &str) -> std::result::Result<Self, crate::domain::Invalid> {
        Self::parse(text).ok_or_else(|| {
            let names: Vec<&str> = Self::ALL.iter().map(|s| s.as_str()).collect();
            crate::domain::Invalid::new("status", format!("must be one of {}", names.join(", ")))
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Succeeded => "succeeded",
            Self::Undeliverable => "undeliverable",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "pending" => Some(Self::Pending),
            "succeeded" => Some(Self::Succeeded),
            "undeliverable" => Some(Self::Undeliverable),
            _ => None,
        }
    }
}

/// One event to one endpoint.
#[derive(Debug, Clone)]
pub struct DeliveryRecord {
    pub seq: i64,
    pub id: String,
    pub event_id: String,
    pub endpoint_id: String,
    pub status: DeliveryStatus,
    pub attempt_count: i64,
    /// When the next attempt is scheduled; `None` once finished.
    pub next_attempt_at: Option<Millis>,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// Filters of the deliveries list; `None` matches everything.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    pub endpoint_id: Option<String>,
    pub event_id: Option<String>,
    pub status: Option<DeliveryStatus>,
}

impl DeliveryFilter {
    /// The filter as SQL conditions (` AND endpoint_id = <p3> …`, present only for what is set, so the planner
    /// can use the index of the column filtered on) and their values in order. Values are numbered from 3:
    /// 1 and 2 are the organization and the cursor; the page size comes after them.
    pub(crate) fn conditions(&self, placeholder: impl Fn(usize) -> String) -> (String, Vec<String>) {
        let mut sql = String::new();
        let mut values = Vec::new();
        let wanted = [
            ("endpoint_id", self.endpoint_id.clone()),
            ("event_id", self.event_id.clone()),
            ("status", self.status.map(|s| s.as_str().to_owned())),
        ];
        for (column, value) in wanted {
            if let Some(value) = value {
                values.push(value);
                sql.push_str(&format!(" AND {column} = {}", placeholder(2 + values.len())));
            }
        }
        (sql, values)
    }
}

/// Why an attempt was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The first attempt or a retry of the schedule.
    Scheduled,
    /// Someone asked for it (`POST /v1/deliveries/{id}/retry`).
    Manual,
}

impl Trigger {
    /// Every trigger, in the order the API documents them.
    pub const ALL: [Trigger; 2] = [Trigger::Scheduled, Trigger::Manual];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Manual => "manual",
        }
    }

    pub fn parse(text: &str) -> Self {
        if text == "manual" { Self::Manual } else { Self::Scheduled }
    }
}

/// One logged POST of a delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRecord {
    pub number: i64,
    pub trigger: Trigger,
    pub started_at: Millis,
    pub duration_ms: i64,
    pub status_code: Option<i64>,
    /// `None` for a 2xx; otherwise `timeout`, `connect`, `dns`, `blocked`, `status`, …
    pub error: Option<String>,
    /// The first 4 KiB of the response body.
    pub response_body: String,
}

/// Which endpoints a new event goes to.
#[derive(Debug, Clone)]
pub enum Fanout {
    /// Every enabled endpoint of the organization subscribed to the event's type.
    Subscribed,
    /// This endpoint alone (a test event).
    Endpoint(String),
}

/// A delivery claimed by a worker under a lease: everything needed to make the attempt without another
/// query.
#[derive(Debug, Clone)]
pub struct Claim {
    pub delivery_id: String,
    /// The delivery's row number where the store has one it finds rows by faster than by id (SQLite's
    /// `seq`); 0 otherwise. Carried to the result, so recording it needs no search of the id index.
    pub row: i64,
    /// Proves the lease when the result is recorded; a newer claim or a manual retry replaces it.
    pub lease_token: String,
    /// When the lease runs out and the delivery is due again.
    pub lease_until: Millis,
    pub event_id: String,
    pub endpoint_id: String,
    pub url: String,
    /// The stored body, sent as it is.
    pub payload: Bytes,
    /// Secrets to sign with: the current one, then the previous one while its grace period lasts.
    pub secrets: Vec<SecretString>,
    /// Scheduled attempts already made.
    pub scheduled_count: u32,
    pub trigger: Trigger,
}

#[cfg(test)]
impl Claim {
    /// A first, scheduled attempt's claim of a `{}` body to `endpoint_id` at `url`, for unit tests.
    pub(crate) fn for_test(endpoint_id: &str, url: &str, secrets: Vec<SecretString>) -> Self {
        Self {
            delivery_id: "dlv_1".into(),
            row: 0,
            lease_token: "lease_1".into(),
            lease_until: 0,
            event_id: "evt_1".into(),
            endpoint_id: endpoint_id.into(),
            url: url.into(),
            payload: Bytes::from_static(b"{}"),
            secrets,
            scheduled_count: 0,
            trigger: Trigger::Scheduled,
        }
    }
}

/// The result of one attempt, to be recorded.
#[derive(Debug, Clone)]
pub struct AttemptResult {
    pub delivery_id: String,
    /// [`Claim::row`].
    pub row: i64,
    pub lease_token: String,
    pub attempt: AttemptRecord,
    /// Where the delivery goes next, decided by the retry policy.
    pub next: Next,
}

/// What a manual retry keeps in `settled` as it makes a delivery pending: the status it had settled at
/// (succeeded or undeliverable), to go back to if the manual attempt fails; a delivery already pending keeps
/// what it had kept. A result under the lease then goes back to it on failure, or clears it either way.
pub(crate) const KEEP_SETTLED: &str = "CASE WHEN status = 'pending' THEN settled ELSE status END";

/// Where a delivery goes after an attempt, as stored: its status and when it is next due (if ever).
pub(crate) fn next_columns(next: Next) -> (&'static str, Option<Millis>) {
    match next {
        Next::Succeeded => (DeliveryStatus::Succeeded.as_str(), None),
        Next::Undeliverable => (DeliveryStatus::Undeliverable.as_str(), None),
        Next::RetryAt(at) => (DeliveryStatus::Pending.as_str(), Some(at)),
    }
}

/// The secrets a delivery is signed with: the endpoint's current one, then its previous one while the grace
/// period after a rotation lasts.
pub(crate) fn signing_secrets(
    secret: String,
    previous: Option<String>,
    previous_until: Option<Millis>,
    now: Millis,
) -> Vec<SecretString> {
    let mut secrets = vec![SecretString::from(secret)];
    if let Some(previous) = previous
        && previous_until.is_some_and(|until| until > now)
    {
        secrets.push(SecretString::from(previous));
    }
    secrets
}

/// One copy of each event's body, shared by the claims of its deliveries: a fan-out makes many claims of one
/// event, and each would otherwise hold a copy of its own.
#[derive(Default)]
pub(crate) struct SharedBodies(HashMap<String, Bytes>);

impl SharedBodies {
    /// The body of `event_id`: the copy already made, or else the one `make` makes.
    pub(crate) fn share<E>(
        &mut self,
        event_id: &str,
        make: impl FnOnce() -> std::result::Result<Bytes, E>,
    ) -> std::result::Result<Bytes, E> {
        if let Some(body) = self.0.get(event_id) {
            return Ok(body.clone());
        }
        let body = make()?;
        self.0.insert(event_id.to_owned(), body.clone());
        Ok(body)
    }

    /// Keeps `body` as the copy of `event_id`'s body, unless one was made already.
    pub(crate) fn insert(&mut self, event_id: &str, body: Bytes) {
        self.0.entry(event_id.to_owned()).or_insert(body);
    }

    /// The copy of `event_id`'s body, if one was made.
    pub(crate) fn get(&self, event_id: &str) -> Option<Bytes> {
        self.0.get(event_id).cloned()
    }
}

/// An interview read back from its stored form; a form that does not read is a damaged store.
pub(crate) fn stored_interview(text: &str, candidate_id: &str) -> Result<Interview> {
    Interview::from_json(text).ok_or_else(|| StoreError::Corrupt(format!("interview {candidate_id}")))
}

/// The interview after an update, and the event it caused (none when nothing changed).
#[derive(Debug, Clone)]
pub struct InterviewUpdate {
    /// The interview after the update, in its stored JSON form (as the event body carries it in `data`).
    pub data: String,
    pub event: Option<EventRecord>,
}

/// Everything the service keeps. Implementations differ only in SQL; the rules (diffs, retries, policy) are
/// in [`crate::domain`].
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Checks that the database answers.
    async fn ping(&self) -> Result<()>;

    /// Makes an organization whose first API key has this hash; returns its id.
    async fn create_org(&self, name: &str, key_hash: &str) -> Result<String>;
    /// The organization an API key (by hash) belongs to.
    async fn org_for_key(&self, key_hash: &str) -> Result<Option<String>>;

    async fn create_endpoint(&self, org: &str, new: NewEndpoint) -> Result<EndpointRecord>;
    async fn list_endpoints(&self, org: &str, page: PageRequest) -> Result<Page<EndpointRecord>>;
    async fn get_endpoint(&self, org: &str, id: &str) -> Result<Option<EndpointRecord>>;
    async fn update_endpoint(&self, org: &str, id: &str, changes: EndpointChanges) -> Result<Option<EndpointRecord>>;
    /// Deletes an endpoint with its deliveries and their attempts; nothing pending is tried again.
    async fn delete_endpoint(&self, org: &str, id: &str) -> Result<bool>;
    /// Installs a new secret; the old one keeps signing until `previous_until`.
    async fn rotate_secret(
        &self,
        org: &str,
        id: &str,
        secret: SecretString,
        previous_until: Millis,
    ) -> Result<Option<EndpointRecord>>;

    /// Applies a merge update to a candidate's interview and, if anything changed, writes the event and its
    /// deliveries in the same transaction. Updates of one candidate are serialized.
    async fn update_interview(&self, org: &str, candidate_id: &str, patch: &InterviewPatch) -> Result<InterviewUpdate>;
    async fn get_interview(&self, org: &str, candidate_id: &str) -> Result<Option<Interview>>;

    /// Writes an event and its deliveries in one transaction; returns the deliveries made.
    async fn create_event(
        &self,
        org: &str,
        event_type: &str,
        payload: &str,
        fanout: Fanout,
    ) -> Result<(EventRecord, Vec<DeliveryRecord>)>;
    async fn list_events(&self, org: &str, page: PageRequest) -> Result<Page<EventRecord>>;
    async fn get_event(&self, org: &str, id: &str) -> Result<Option<EventRecord>>;
    /// The type of each of these events of `org`, by id, in one query that leaves the bodies unread: what a
    /// page of deliveries shows of its events.
    async fn event_types(&self, org: &str, event_ids: &[String]) -> Result<HashMap<String, String>>;

    async fn list_deliveries(
        &self,
        org: &str,
        filter: &DeliveryFilter,
        page: PageRequest,
    ) -> Result<Page<DeliveryRecord>>;
    /// A delivery with its attempts, oldest attempt first.
    async fn get_delivery(&self, org: &str, id: &str) -> Result<Option<(DeliveryRecord, Vec<AttemptRecord>)>>;
    /// Makes a delivery due now for one manual attempt, whatever its status.
    async fn request_retry(&self, org: &str, id: &str) -> Result<Option<DeliveryRecord>>;
    /// The newest delivery of each of `endpoint_ids` in `org` (nothing for an endpoint without any), in no
    /// particular order: each webhook's last delivery on the settings page. One descent of the endpoint's index
    /// per endpoint, where a [`Store::list_deliveries`] filtered by endpoint walks the organization's history.
    async fn last_deliveries(&self, org: &str, endpoint_ids: &[String]) -> Result<Vec<DeliveryRecord>>;

    /// Claims up to `limit` due deliveries of enabled endpoints not in `exclude`, earliest first, leasing
    /// them until `lease_until`.
    async fn claim_due(&self, now: Millis, lease_until: Millis, limit: u32, exclude: &[String]) -> Result<Vec<Claim>>;
    /// Gives claimed deliveries back without an attempt: due again at once.
    async fn release(&self, claims: &[Claim]) -> Result<()>;
    /// Logs attempts and moves their deliveries on, in one transaction. The batch is shared, not copied, so
    /// a writer on another thread can hold it and a failed write can be tried again with the same batch. A result whose lease was taken over
    /// is still logged, but leaves the delivery's state to the newer claim.
    async fn record_attempts(&self, results: Arc<[AttemptResult]>) -> Result<()>;
    /// The earliest time after `now` at which a delivery becomes due.
    async fn next_due_after(&self, now: Millis) -> Result<Option<Millis>>;

    /// Writes `count` old events, each with a succeeded delivery to `endpoint_id`: the history a long-running
    /// service accumulates. Used by `tidings bench` to show that claims do not slow down as history grows.
    async fn seed_history(&self, org: &str, endpoint_id: &str, count: u64) -> Result<()>;

    /// Rings `wake` whenever another process announces new work, until `stop`. A store used by one process
    /// only has nothing to announce and just waits.
    async fn watch_for_work(&self, wake: Arc<Notify>, stop: CancellationToken) {
        let _ = wake;
        stop.cancelled().await;
    }
}
