//! The PostgreSQL store: shared by many `tidings` processes. Claims use `FOR UPDATE SKIP LOCKED` so processes
//! never work on the same delivery at once; new work is announced with `NOTIFY` so whichever process is free
//! picks it up at once; updates of one candidate are serialized with a transaction-scoped advisory lock.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::{PgListener, PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::rows::{
    ATTEMPT_COLUMNS, AttemptRow, ClaimRow, DELIVERY_COLUMNS, DeliveryRow, ENDPOINT_COLUMNS, EVENT_COLUMNS, EndpointRow,
    EventRow, records,
};
use super::{
    AttemptRecord, AttemptResult, Claim, DeliveryFilter, DeliveryRecord, EndpointChanges, EndpointRecord, EventRecord,
    Fanout, InterviewUpdate, NewEndpoint, Page, PageRequest, Result, Store, StoreError, Trigger, next_columns,
};
use crate::domain::ids;
use crate::domain::interview::{self, Interview, InterviewPatch};
use crate::domain::time::{Millis, now_ms};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The channel on which new work is announced.
const WORK_CHANNEL: &str = "tidings_work";

/// The shared store.
pub struct PostgresStore {
    pool: PgPool,
}

type Tx = Transaction<'static, Postgres>;

impl PostgresStore {
    /// Connects and migrates. Migrations take an advisory lock, so processes starting together migrate once.
    pub async fn open(url: &str) -> Result<Self> {
        let pool =
            PgPoolOptions::new().max_connections(16).acquire_timeout(Duration::from_secs(10)).connect(url).await?;
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool })
    }

    /// Inserts an event and its deliveries inside `tx`, and announces the work on commit.
    async fn insert_event(
        tx: &mut Tx,
        org: &str,
        event_type: &str,
        payload: &str,
        fanout: &Fanout,
        now: Millis,
    ) -> Result<EventRecord> {
        let id = ids::new_id(ids::EVENT);
        let seq: i64 = sqlx::query_scalar(
            "INSERT INTO events (id, org_id, type, payload, created_at) VALUES ($1, $2, $3, $4, $5) RETURNING seq",
        )
        .bind(&id)
        .bind(org)
        .bind(event_type)
        .bind(payload)
        .bind(now)
        .fetch_one(&mut **tx)
        .await?;
        let insert = "INSERT INTO deliveries (id, org_id, event_id, endpoint_id, status, next_attempt_at, run_at, \
                      created_at, updated_at) \
                      SELECT 'dlv_' || lpad(to_hex($2::bigint), 12, '0') || substr(md5(random()::text), 1, 12), \
                             e.org_id, $1, e.id, \
                             'pending', $2, $2, $2, $2 \
                      FROM endpoints e WHERE e.org_id = $3";
        let (filter, target) = match fanout {
            Fanout::Subscribed => ("AND e.enabled AND jsonb_exists(e.event_types::jsonb, $4)", event_type),
            Fanout::Endpoint(endpoint) => ("AND e.id = $4", endpoint.as_str()),
        };
        sqlx::query(&format!("{insert} {filter}"))
            .bind(&id)
            .bind(now)
            .bind(org)
            .bind(target)
            .execute(&mut **tx)
            .await?;
        sqlx::query("SELECT pg_notify($1, '')").bind(WORK_CHANNEL).execute(&mut **tx).await?;
        Ok(EventRecord { seq, id, event_type: event_type.to_owned(), payload: payload.to_owned(), created_at: now })
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn create_org(&self, name: &str, key_hash: &str) -> Result<String> {
        let id = ids::new_id(ids::ORG);
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO organizations (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(&id)
            .bind(name)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO api_keys (key_hash, org_id, created_at) VALUES ($1, $2, $3)")
            .bind(key_hash)
            .bind(&id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(id)
    }

    async fn org_for_key(&self, key_hash: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar("SELECT org_id FROM api_keys WHERE key_hash = $1")
            .bind(key_hash)
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn create_endpoint(&self, org: &str, new: NewEndpoint) -> Result<EndpointRecord> {
        let now = now_ms();
        let types = serde_json::to_string(&new.event_types).unwrap_or_else(|_| "[]".into());
        let sql = format!(
            "INSERT INTO endpoints (id, org_id, url, description, event_types, enabled, secret, created_at, \
             updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) RETURNING {ENDPOINT_COLUMNS}"
        );
        let row: EndpointRow = sqlx::query_as(&sql)
            .bind(ids::new_id(ids::ENDPOINT))
            .bind(org)
            .bind(&new.url)
            .bind(&new.description)
            .bind(&types)
            .bind(new.enabled)
            .bind(new.secret.expose_secret())
            .bind(now)
            .fetch_one(&self.pool)
            .await?;
        row.try_into()
    }

    async fn list_endpoints(&self, org: &str, page: PageRequest) -> Result<Page<EndpointRecord>> {
        let sql = format!(
            "SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE org_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3"
        );
        let rows: Vec<EndpointRow> = sqlx::query_as(&sql)
            .bind(org)
            .bind(page.before.unwrap_or(i64::MAX))
            .bind(i64::from(page.limit) + 1)
            .fetch_all(&self.pool)
            .await?;
        Ok(Page::from_rows(records(rows)?, page.limit, |e| e.seq))
    }

    async fn get_endpoint(&self, org: &str, id: &str) -> Result<Option<EndpointRecord>> {
        let sql = format!("SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE org_id = $1 AND id = $2");
        let row: Option<EndpointRow> = sqlx::query_as(&sql).bind(org).bind(id).fetch_optional(&self.pool).await?;
        row.map(EndpointRecord::try_from).transpose()
    }

    async fn update_endpoint(&self, org: &str, id: &str, changes: EndpointChanges) -> Result<Option<EndpointRecord>> {
        let types = changes.event_types.as_ref().map(|t| serde_json::to_string(t).unwrap_or_else(|_| "[]".into()));
        let sql = format!(
            "UPDATE endpoints SET url = COALESCE($1, url), description = COALESCE($2, description), \
             event_types = COALESCE($3, event_types), enabled = COALESCE($4, enabled), updated_at = $5 \
             WHERE org_id = $6 AND id = $7 RETURNING {ENDPOINT_COLUMNS}"
        );
        let row: Option<EndpointRow> = sqlx::query_as(&sql)
            .bind(changes.url)
            .bind(changes.description)
            .bind(types)
            .bind(changes.enabled)
            .bind(now_ms())
            .bind(org)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(EndpointRecord::try_from).transpose()
    }

    async fn delete_endpoint(&self, org: &str, id: &str) -> Result<bool> {
        let deleted = sqlx::query("DELETE FROM endpoints WHERE org_id = $1 AND id = $2")
            .bind(org)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(deleted.rows_affected() > 0)
    }

    async fn rotate_secret(
        &self,
        org: &str,
        id: &str,
        secret: SecretString,
        previous_until: Millis,
    ) -> Result<Option<EndpointRecord>> {
        let sql = format!(
            "UPDATE endpoints SET previous_secret = secret, previous_secret_until = $1, secret = $2, updated_at = $3 \
             WHERE org_id = $4 AND id = $5 RETURNING {ENDPOINT_COLUMNS}"
        );
        let row: Option<EndpointRow> = sqlx::query_as(&sql)
            .bind(previous_until)
            .bind(secret.expose_secret())
            .bind(now_ms())
            .bind(org)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(EndpointRecord::try_from).transpose()
    }

    async fn update_interview(&self, org: &str, candidate_id: &str, patch: &InterviewPatch) -> Result<InterviewUpdate> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        // Serializes updates of this candidate across every process, including its very first write, when
        // there is no row yet to lock.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1 || '/' || $2, 0))")
            .bind(org)
            .bind(candidate_id)
            .execute(&mut *tx)
            .await?;
        let stored: Option<String> =
            sqlx::query_scalar("SELECT data FROM interviews WHERE org_id = $1 AND candidate_id = $2")
                .bind(org)
                .bind(candidate_id)
                .fetch_optional(&mut *tx)
                .await?;
        let existed = stored.is_some();
        let applied = Interview::load(stored.as_deref(), candidate_id)
            .ok_or_else(|| StoreError::Corrupt(format!("interview {candidate_id}")))?
            .apply(patch);
        if existed && applied.event_body.is_none() {
            return Ok(InterviewUpdate { interview: applied.interview, event: None });
        }
        sqlx::query(
            "INSERT INTO interviews (org_id, candidate_id, data, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (org_id, candidate_id) DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at",
        )
        .bind(org)
        .bind(candidate_id)
        .bind(applied.interview.to_json())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let event = match &applied.event_body {
            Some(body) => {
                Some(Self::insert_event(&mut tx, org, interview::EVENT_TYPE, body, &Fanout::Subscribed, now).await?)
            }
            None => None,
        };
        tx.commit().await?;
        Ok(InterviewUpdate { interview: applied.interview, event })
    }

    async fn get_interview(&self, org: &str, candidate_id: &str) -> Result<Option<Interview>> {
        let stored: Option<String> =
            sqlx::query_scalar("SELECT data FROM interviews WHERE org_id = $1 AND candidate_id = $2")
                .bind(org)
                .bind(candidate_id)
                .fetch_optional(&self.pool)
                .await?;
        stored
            .map(|text| {
                Interview::from_json(&text).ok_or_else(|| StoreError::Corrupt(format!("interview {candidate_id}")))
            })
            .transpose()
    }

    async fn create_event(
        &self,
        org: &str,
        event_type: &str,
        payload: &str,
        fanout: Fanout,
    ) -> Result<(EventRecord, Vec<DeliveryRecord>)> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let event = Self::insert_event(&mut tx, org, event_type, payload, &fanout, now).await?;
        let sql = format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE event_id = $1 ORDER BY seq");
        let rows: Vec<DeliveryRow> = sqlx::query_as(&sql).bind(&event.id).fetch_all(&mut *tx).await?;
        tx.commit().await?;
        Ok((event, records(rows)?))
    }

    async fn list_events(&self, org: &str, page: PageRequest) -> Result<Page<EventRecord>> {
        let sql =
            format!("SELECT {EVENT_COLUMNS} FROM events WHERE org_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3");
        let rows: Vec<EventRow> = sqlx::query_as(&sql)
            .bind(org)
            .bind(page.before.unwrap_or(i64::MAX))
            .bind(i64::from(page.limit) + 1)
            .fetch_all(&self.pool)
            .await?;
        Ok(Page::from_rows(rows.into_iter().map(EventRecord::from).collect(), page.limit, |e| e.seq))
    }

    async fn get_event(&self, org: &str, id: &str) -> Result<Option<EventRecord>> {
        let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE org_id = $1 AND id = $2");
        let row: Option<EventRow> = sqlx::query_as(&sql).bind(org).bind(id).fetch_optional(&self.pool).await?;
        Ok(row.map(EventRecord::from))
    }

    async fn list_deliveries(
        &self,
        org: &str,
        filter: &DeliveryFilter,
        page: PageRequest,
    ) -> Result<Page<DeliveryRecord>> {
        let (conditions, values) = filter.conditions(|n| format!("${n}"));
        let limit = 3 + values.len();
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE org_id = $1 AND seq < $2{conditions} \
             ORDER BY seq DESC LIMIT ${limit}"
        );
        let mut query = sqlx::query_as::<_, DeliveryRow>(&sql).bind(org).bind(page.before.unwrap_or(i64::MAX));
        for value in values {
            query = query.bind(value);
        }
        let rows = query.bind(i64::from(page.limit) + 1).fetch_all(&self.pool).await?;
        Ok(Page::from_rows(records(rows)?, page.limit, |d| d.seq))
    }

    async fn get_delivery(&self, org: &str, id: &str) -> Result<Option<(DeliveryRecord, Vec<AttemptRecord>)>> {
        let sql = format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE org_id = $1 AND id = $2");
        let Some(row) = sqlx::query_as::<_, DeliveryRow>(&sql).bind(org).bind(id).fetch_optional(&self.pool).await?
        else {
            return Ok(None);
        };
        let sql = format!("SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE delivery_id = $1 ORDER BY seq");
        let attempts: Vec<AttemptRow> = sqlx::query_as(&sql).bind(id).fetch_all(&self.pool).await?;
        Ok(Some((row.try_into()?, attempts.into_iter().map(AttemptRecord::from).collect())))
    }

    async fn request_retry(&self, org: &str, id: &str) -> Result<Option<DeliveryRecord>> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let sql = format!(
            "UPDATE deliveries SET status = 'pending', manual = TRUE, run_at = $1, next_attempt_at = $1, \
             lease_token = NULL, updated_at = $1 WHERE org_id = $2 AND id = $3 RETURNING {DELIVERY_COLUMNS}"
        );
        let row: Option<DeliveryRow> =
            sqlx::query_as(&sql).bind(now).bind(org).bind(id).fetch_optional(&mut *tx).await?;
        sqlx::query("SELECT pg_notify($1, '')").bind(WORK_CHANNEL).execute(&mut *tx).await?;
        tx.commit().await?;
        row.map(DeliveryRecord::try_from).transpose()
    }

    async fn last_deliveries(&self, org: &str, endpoint_ids: &[String]) -> Result<Vec<DeliveryRecord>> {
        // One correlated subquery per endpoint, each answered from deliveries_by_endpoint (endpoint_id, seq).
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE seq IN ( \
               SELECT (SELECT d.seq FROM deliveries d WHERE d.endpoint_id = e.id AND d.org_id = $1 \
                       ORDER BY d.seq DESC LIMIT 1) \
               FROM unnest($2::text[]) AS e(id))"
        );
        let rows: Vec<DeliveryRow> = sqlx::query_as(&sql).bind(org).bind(endpoint_ids).fetch_all(&self.pool).await?;
        records(rows)
    }

    async fn claim_due(&self, now: Millis, lease_until: Millis, limit: u32, exclude: &[String]) -> Result<Vec<Claim>> {
        let token = ids::new_id("lease");
        let rows: Vec<ClaimRow> = sqlx::query_as(
            "WITH due AS ( \
               SELECT d.seq FROM deliveries d \
               WHERE d.run_at <= $1 AND NOT (d.endpoint_id = ANY($2)) \
                 AND EXISTS (SELECT 1 FROM endpoints e WHERE e.id = d.endpoint_id AND e.enabled) \
               ORDER BY d.run_at LIMIT $3 \
               FOR UPDATE OF d SKIP LOCKED \
             ), claimed AS ( \
               UPDATE deliveries d SET run_at = $4, lease_token = $5 FROM due WHERE d.seq = due.seq \
               RETURNING d.id, d.event_id, d.endpoint_id, d.scheduled_count, d.manual \
             ) \
             SELECT c.id, c.event_id, c.endpoint_id, c.scheduled_count, c.manual, ev.payload, e.url, e.secret, \
                    e.previous_secret, e.previous_secret_until \
             FROM claimed c JOIN events ev ON ev.id = c.event_id JOIN endpoints e ON e.id = c.endpoint_id",
        )
        .bind(now)
        .bind(exclude)
        .bind(i64::from(limit))
        .bind(lease_until)
        .bind(&token)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|row| row.into_claim(&token, now)).collect())
    }

    async fn release(&self, claims: &[Claim], now: Millis) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for claim in claims {
            sqlx::query("UPDATE deliveries SET run_at = $1, lease_token = NULL WHERE id = $2 AND lease_token = $3")
                .bind(now)
                .bind(&claim.delivery_id)
                .bind(&claim.lease_token)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn record_attempts(&self, results: &[AttemptResult]) -> Result<()> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        for result in results {
            let a = &result.attempt;
            sqlx::query(
                "INSERT INTO attempts (delivery_id, number, trigger, started_at, duration_ms, status_code, error, \
                 response_body) SELECT id, attempt_count + 1, $1, $2, $3, $4, $5, $6 FROM deliveries WHERE id = $7",
            )
            .bind(a.trigger.as_str())
            .bind(a.started_at)
            .bind(a.duration_ms)
            .bind(a.status_code)
            .bind(&a.error)
            .bind(&a.response_body)
            .bind(&result.delivery_id)
            .execute(&mut *tx)
            .await?;
            let (status, next_at) = next_columns(result.next);
            sqlx::query(
                "UPDATE deliveries SET attempt_count = attempt_count + 1, updated_at = $1, \
                   scheduled_count = scheduled_count + CASE WHEN lease_token = $2 THEN $3 ELSE 0 END, \
                   status = CASE WHEN lease_token = $2 THEN $4 ELSE status END, \
                   next_attempt_at = CASE WHEN lease_token = $2 THEN $5 ELSE next_attempt_at END, \
                   run_at = CASE WHEN lease_token = $2 THEN $5 ELSE run_at END, \
                   manual = CASE WHEN lease_token = $2 THEN FALSE ELSE manual END, \
                   lease_token = CASE WHEN lease_token = $2 THEN NULL ELSE lease_token END \
                 WHERE id = $6",
            )
            .bind(now)
            .bind(&result.lease_token)
            .bind(i64::from(a.trigger == Trigger::Scheduled))
            .bind(status)
            .bind(next_at)
            .bind(&result.delivery_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn seed_history(&self, org: &str, endpoint_id: &str, count: u64) -> Result<()> {
        let then = now_ms() - 86_400_000;
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO events (id, org_id, type, payload, created_at) \
             SELECT 'evt_' || lpad(to_hex($3::bigint), 12, '0') || substr(md5(random()::text || i), 1, 12), $2, \
                    'candidate.interview.updated', '{}', $3 FROM generate_series(1, $1) AS i",
        )
        .bind(count as i64)
        .bind(org)
        .bind(then)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO deliveries (id, org_id, event_id, endpoint_id, status, attempt_count, scheduled_count, \
             created_at, updated_at) \
             SELECT 'dlv_' || lpad(to_hex(created_at), 12, '0') || substr(md5(random()::text || id), 1, 12), org_id, id, \
                    $1, 'succeeded', \
                    1, 1, created_at, created_at \
             FROM events WHERE org_id = $2 AND payload = '{}' AND created_at = $3",
        )
        .bind(endpoint_id)
        .bind(org)
        .bind(then)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        sqlx::query("ANALYZE deliveries").execute(&self.pool).await?;
        Ok(())
    }

    async fn next_due_after(&self, now: Millis) -> Result<Option<Millis>> {
        Ok(sqlx::query_scalar("SELECT MIN(run_at) FROM deliveries WHERE run_at > $1")
            .bind(now)
            .fetch_one(&self.pool)
            .await?)
    }

    async fn watch_for_work(&self, wake: Arc<Notify>, stop: CancellationToken) {
        loop {
            let listener = async {
                let mut listener = PgListener::connect_with(&self.pool).await?;
                listener.listen(WORK_CHANNEL).await?;
                Ok::<_, sqlx::Error>(listener)
            };
            let mut listener = tokio::select! {
                _ = stop.cancelled() => return,
                listener = listener => match listener {
                    Ok(listener) => listener,
                    Err(error) => {
                        tracing::warn!(%error, "cannot listen for new work; polling until it can");
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        }
                    }
                },
            };
            // Anything announced while not listening is found now.
            wake.notify_one();
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    received = listener.recv() => match received {
                        Ok(_) => wake.notify_one(),
                        Err(error) => {
                            tracing::warn!(%error, "lost the work channel; reconnecting");
                            break;
                        }
                    },
                }
            }
        }
    }
}
