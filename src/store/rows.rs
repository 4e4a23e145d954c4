//! Row shapes of the PostgreSQL store, decoded by sqlx and turned into the store's records.

use bytes::Bytes;
use secrecy::SecretString;

use super::{
    AttemptRecord, Claim, DeliveryRecord, DeliveryStatus, EndpointRecord, EventRecord, SharedBodies, StoreError,
    Trigger, signing_secrets,
};
use crate::domain::time::Millis;

/// Endpoint columns, in the order of [`EndpointRow`].
pub const ENDPOINT_COLUMNS: &str = "seq, id, url, description, event_types, enabled, secret, previous_secret, \
                                    previous_secret_until, created_at, updated_at";
/// Delivery columns, in the order of [`DeliveryRow`].
pub const DELIVERY_COLUMNS: &str =
    "seq, id, event_id, endpoint_id, status, attempt_count, next_attempt_at, created_at, updated_at";
/// Event columns, in the order of [`EventRow`].
pub const EVENT_COLUMNS: &str = "seq, id, type, payload, created_at";
/// Attempt columns, in the order of [`AttemptRow`].
pub const ATTEMPT_COLUMNS: &str = "number, trigger, started_at, duration_ms, status_code, error, response_body";

#[derive(sqlx::FromRow)]
pub struct EndpointRow {
    seq: i64,
    id: String,
    url: String,
    description: String,
    /// A JSON array of strings.
    event_types: String,
    enabled: bool,
    secret: String,
    previous_secret: Option<String>,
    previous_secret_until: Option<i64>,
    created_at: i64,
    updated_at: i64,
}

impl TryFrom<EndpointRow> for EndpointRecord {
    type Error = StoreError;

    fn try_from(row: EndpointRow) -> Result<Self, StoreError> {
        let event_types = serde_json::from_str(&row.event_types)
            .map_err(|e| StoreError::Corrupt(format!("event_types of {}: {e}", row.id)))?;
        Ok(Self {
            seq: row.seq,
            id: row.id,
            url: row.url,
            description: row.description,
            event_types,
            enabled: row.enabled,
            secret: SecretString::from(row.secret),
            previous_secret: row.previous_secret.map(SecretString::from),
            previous_secret_until: row.previous_secret_until,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub struct DeliveryRow {
    seq: i64,
    id: String,
    event_id: String,
    endpoint_id: String,
    status: String,
    attempt_count: i64,
    next_attempt_at: Option<i64>,
    created_at: i64,
    updated_at: i64,
}

impl TryFrom<DeliveryRow> for DeliveryRecord {
    type Error = StoreError;

    fn try_from(row: DeliveryRow) -> Result<Self, StoreError> {
        let status = DeliveryStatus::parse(&row.status)
            .ok_or_else(|| StoreError::Corrupt(format!("status {} of {}", row.status, row.id)))?;
        Ok(Self {
            seq: row.seq,
            id: row.id,
            event_id: row.event_id,
            endpoint_id: row.endpoint_id,
            status,
            attempt_count: row.attempt_count,
            next_attempt_at: row.next_attempt_at,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub struct EventRow {
    seq: i64,
    id: String,
    r#type: String,
    payload: String,
    created_at: i64,
}

impl From<EventRow> for EventRecord {
    fn from(row: EventRow) -> Self {
        Self { seq: row.seq, id: row.id, event_type: row.r#type, payload: row.payload, created_at: row.created_at }
    }
}

#[derive(sqlx::FromRow)]
pub struct AttemptRow {
    number: i64,
    trigger: String,
    started_at: i64,
    duration_ms: i64,
    status_code: Option<i64>,
    error: Option<String>,
    response_body: String,
}

impl From<AttemptRow> for AttemptRecord {
    fn from(row: AttemptRow) -> Self {
        Self {
            number: row.number,
            trigger: Trigger::parse(&row.trigger),
            started_at: row.started_at,
            duration_ms: row.duration_ms,
            status_code: row.status_code,
            error: row.error,
            response_body: row.response_body,
        }
    }
}

/// What a claim reads: the delivery, its event's body and its endpoint's URL and secrets.
#[derive(sqlx::FromRow)]
pub struct ClaimRow {
    id: String,
    event_id: String,
    endpoint_id: String,
    scheduled_count: i64,
    manual: bool,
    /// The event's body, on one claim of each event only (the others share it).
    payload: Option<String>,
    url: String,
    secret: String,
    previous_secret: Option<String>,
    previous_secret_until: Option<i64>,
}

impl ClaimRow {
    /// The claims of `rows`, signing with the previous secret too while its grace period lasts at `now`; the
    /// claims of one event share the body that one of its rows carries.
    pub fn into_claims(mut rows: Vec<Self>, lease_token: &str, lease_until: Millis, now: Millis) -> Vec<Claim> {
        let mut bodies = SharedBodies::default();
        for row in &mut rows {
            if let Some(payload) = row.payload.take() {
                bodies.insert(&row.event_id, Bytes::from(payload));
            }
        }
        rows.into_iter()
            .map(|row| {
                // Every event's body came on one of its rows.
                let payload = bodies.get(&row.event_id).unwrap_or_default();
                row.into_claim(payload, lease_token, lease_until, now)
            })
            .collect()
    }

    fn into_claim(self, payload: Bytes, lease_token: &str, lease_until: Millis, now: Millis) -> Claim {
        let secrets = signing_secrets(self.secret, self.previous_secret, self.previous_secret_until, now);
        Claim {
            delivery_id: self.id,
            row: 0,
            lease_token: lease_token.to_owned(),
            lease_until,
            event_id: self.event_id,
            endpoint_id: self.endpoint_id,
            url: self.url,
            payload,
            secrets,
            scheduled_count: self.scheduled_count.max(0) as u32,
            trigger: if self.manual { Trigger::Manual } else { Trigger::Scheduled },
        }
    }
}

/// Converts rows to records, failing on the first damaged one.
pub fn records<R, T: TryFrom<R, Error = StoreError>>(rows: Vec<R>) -> Result<Vec<T>, StoreError> {
    rows.into_iter().map(T::try_from).collect()
}

/// A delivery just written by ingest, with what its claim needs if it was handed off.
#[derive(sqlx::FromRow)]
pub struct NewDeliveryRow {
    pub id: String,
    pub event_id: String,
    pub endpoint_id: String,
    pub url: String,
    pub secret: String,
    pub previous_secret: Option<String>,
    pub previous_secret_until: Option<i64>,
    /// Leased to this process, to be handed to its workers.
    pub leased: bool,
}
