//! The SQLite store: one file in WAL mode, one writer connection (SQLite serializes writers anyway, and a
//! single connection makes that explicit) and a few readers.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, Transaction};
use tokio::sync::{mpsc, oneshot};

use super::rows::{
    ATTEMPT_COLUMNS, AttemptRow, ClaimRow, DELIVERY_COLUMNS, DeliveryRow, ENDPOINT_COLUMNS, EVENT_COLUMNS, EndpointRow,
    EventRow, next_columns, records,
};
use super::{
    AttemptRecord, AttemptResult, Claim, DeliveryFilter, DeliveryRecord, DeliveryStatus, EndpointChanges,
    EndpointRecord, EventRecord, Fanout, InterviewUpdate, NewEndpoint, Page, PageRequest, Result, Store, StoreError,
    Trigger,
};
use crate::domain::ids;
use crate::domain::interview::{self, Interview, InterviewPatch};
use crate::domain::time::{Millis, now_ms};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// The embedded store.
pub struct SqliteStore {
    /// The only connection that writes: transactions queue here instead of failing with SQLITE_BUSY.
    writer: SqlitePool,
    /// Connections for reads, which WAL lets run beside the writer.
    reader: SqlitePool,
    /// Interview updates waiting for the group committer.
    updates: mpsc::Sender<UpdateJob>,
}

/// One interview update waiting to be committed, and where its answer goes.
struct UpdateJob {
    org: String,
    candidate_id: String,
    patch: InterviewPatch,
    reply: oneshot::Sender<Result<InterviewUpdate>>,
}

/// Most interview updates committed in one transaction.
const UPDATE_BATCH: usize = 256;

/// The group committer: takes every update waiting, applies them in order in one transaction, and syncs the
/// disk once for all of them. Updates of one candidate in a batch see each other, so the diff chain stays exact.
async fn commit_updates(writer: SqlitePool, mut jobs: mpsc::Receiver<UpdateJob>) {
    let mut batch = Vec::with_capacity(UPDATE_BATCH);
    while jobs.recv_many(&mut batch, UPDATE_BATCH).await > 0 {
        let now = now_ms();
        let outcome: Result<Vec<InterviewUpdate>> = async {
            let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
            let mut done = Vec::with_capacity(batch.len());
            for job in &batch {
                done.push(SqliteStore::apply_update(&mut tx, job, now).await?);
            }
            tx.commit().await?;
            Ok(done)
        }
        .await;
        match outcome {
            Ok(done) => {
                for (job, update) in batch.drain(..).zip(done) {
                    let _ = job.reply.send(Ok(update));
                }
            }
            Err(error) => {
                let message = error.to_string();
                for job in batch.drain(..) {
                    let _ = job.reply.send(Err(StoreError::Batch(message.clone())));
                }
            }
        }
    }
}

type Tx = Transaction<'static, Sqlite>;

impl SqliteStore {
    /// Opens (creating if needed) the database at `database`, a path or a `sqlite:` URL, and migrates it.
    pub async fn open(database: &str) -> Result<Self> {
        let options = if database.starts_with("sqlite:") {
            SqliteConnectOptions::from_str(database)?
        } else {
            SqliteConnectOptions::new().filename(database)
        }
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // FULL: a transaction is on disk when COMMIT returns, so an acknowledged update survives power loss.
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(10))
        .foreign_keys(true);
        let writer = SqlitePoolOptions::new().max_connections(1).connect_with(options.clone()).await?;
        MIGRATOR.run(&writer).await?;
        let reader = SqlitePoolOptions::new().max_connections(4).connect_with(options).await?;
        let (updates, jobs) = mpsc::channel(UPDATE_BATCH * 4);
        tokio::spawn(commit_updates(writer.clone(), jobs));
        Ok(Self { writer, reader, updates })
    }

    async fn begin(&self) -> Result<Tx> {
        // IMMEDIATE takes the write lock at BEGIN, so a read-then-write transaction (the interview diff)
        // cannot be overtaken by another process between its read and its write.
        Ok(self.writer.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// Applies one interview update inside `tx`: reads the current state, diffs, and writes the new state and
    /// its event (if anything changed).
    async fn apply_update(tx: &mut Tx, job: &UpdateJob, now: Millis) -> Result<InterviewUpdate> {
        let (org, candidate_id) = (job.org.as_str(), job.candidate_id.as_str());
        let stored: Option<String> =
            sqlx::query_scalar("SELECT data FROM interviews WHERE org_id = ? AND candidate_id = ?")
                .bind(org)
                .bind(candidate_id)
                .fetch_optional(&mut **tx)
                .await?;
        let existed = stored.is_some();
        let applied = Interview::load(stored.as_deref(), candidate_id)
            .ok_or_else(|| StoreError::Corrupt(format!("interview {candidate_id}")))?
            .apply(&job.patch);
        if existed && applied.event_body.is_none() {
            return Ok(InterviewUpdate { interview: applied.interview, event: None });
        }
        sqlx::query(
            "INSERT INTO interviews (org_id, candidate_id, data, updated_at) VALUES (?, ?, ?, ?) \
             ON CONFLICT (org_id, candidate_id) DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at",
        )
        .bind(org)
        .bind(candidate_id)
        .bind(applied.interview.to_json())
        .bind(now)
        .execute(&mut **tx)
        .await?;
        let event = match &applied.event_body {
            Some(body) => Some(Self::insert_event(tx, org, interview::EVENT_TYPE, body, &Fanout::Subscribed, now).await?),
            None => None,
        };
        Ok(InterviewUpdate { interview: applied.interview, event })
    }

    /// Inserts an event and its deliveries inside `tx`.
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
            "INSERT INTO events (id, org_id, type, payload, created_at) VALUES (?, ?, ?, ?, ?) RETURNING seq",
        )
        .bind(&id)
        .bind(org)
        .bind(event_type)
        .bind(payload)
        .bind(now)
        .fetch_one(&mut **tx)
        .await?;
        // Delivery ids are made in SQL so one statement fans out to every endpoint.
        let insert = "INSERT INTO deliveries (id, org_id, event_id, endpoint_id, status, next_attempt_at, run_at, \
                      created_at, updated_at) \
                      SELECT 'dlv_' || lower(hex(randomblob(12))), e.org_id, ?1, e.id, 'pending', ?2, ?2, ?2, ?2 \
                      FROM endpoints e WHERE e.org_id = ?3";
        let (filter, target) = match fanout {
            Fanout::Subscribed => {
                ("AND e.enabled = 1 AND EXISTS (SELECT 1 FROM json_each(e.event_types) WHERE value = ?4)", event_type)
            }
            Fanout::Endpoint(endpoint) => ("AND e.id = ?4", endpoint.as_str()),
        };
        sqlx::query(&format!("{insert} {filter}"))
            .bind(&id)
            .bind(now)
            .bind(org)
            .bind(target)
            .execute(&mut **tx)
            .await?;
        Ok(EventRecord { seq, id, event_type: event_type.to_owned(), payload: payload.to_owned(), created_at: now })
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }

    async fn create_org(&self, name: &str, key_hash: &str) -> Result<String> {
        let id = ids::new_id(ids::ORG);
        let now = now_ms();
        let mut tx = self.begin().await?;
        sqlx::query("INSERT INTO organizations (id, name, created_at) VALUES (?, ?, ?)")
            .bind(&id)
            .bind(name)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO api_keys (key_hash, org_id, created_at) VALUES (?, ?, ?)")
            .bind(key_hash)
            .bind(&id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(id)
    }

    async fn org_for_key(&self, key_hash: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar("SELECT org_id FROM api_keys WHERE key_hash = ?")
            .bind(key_hash)
            .fetch_optional(&self.reader)
            .await?)
    }

    async fn create_endpoint(&self, org: &str, new: NewEndpoint) -> Result<EndpointRecord> {
        let id = ids::new_id(ids::ENDPOINT);
        let now = now_ms();
        let types = serde_json::to_string(&new.event_types).unwrap_or_else(|_| "[]".into());
        let sql = format!(
            "INSERT INTO endpoints (id, org_id, url, description, event_types, enabled, secret, created_at, \
             updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING {ENDPOINT_COLUMNS}"
        );
        let row: EndpointRow = sqlx::query_as(&sql)
            .bind(&id)
            .bind(org)
            .bind(&new.url)
            .bind(&new.description)
            .bind(&types)
            .bind(new.enabled)
            .bind(new.secret.expose_secret())
            .bind(now)
            .bind(now)
            .fetch_one(&self.writer)
            .await?;
        row.try_into()
    }

    async fn list_endpoints(&self, org: &str, page: PageRequest) -> Result<Page<EndpointRecord>> {
        let sql =
            format!("SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE org_id = ? AND seq < ? ORDER BY seq DESC LIMIT ?");
        let rows: Vec<EndpointRow> = sqlx::query_as(&sql)
            .bind(org)
            .bind(page.before.unwrap_or(i64::MAX))
            .bind(i64::from(page.limit) + 1)
            .fetch_all(&self.reader)
            .await?;
        Ok(Page::from_rows(records(rows)?, page.limit, |e| e.seq))
    }

    async fn get_endpoint(&self, org: &str, id: &str) -> Result<Option<EndpointRecord>> {
        let sql = format!("SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE org_id = ? AND id = ?");
        let row: Option<EndpointRow> = sqlx::query_as(&sql).bind(org).bind(id).fetch_optional(&self.reader).await?;
        row.map(EndpointRecord::try_from).transpose()
    }

    async fn update_endpoint(&self, org: &str, id: &str, changes: EndpointChanges) -> Result<Option<EndpointRecord>> {
        let types = changes.event_types.as_ref().map(|t| serde_json::to_string(t).unwrap_or_else(|_| "[]".into()));
        let sql = format!(
            "UPDATE endpoints SET url = COALESCE(?, url), description = COALESCE(?, description), \
             event_types = COALESCE(?, event_types), enabled = COALESCE(?, enabled), updated_at = ? \
             WHERE org_id = ? AND id = ? RETURNING {ENDPOINT_COLUMNS}"
        );
        let row: Option<EndpointRow> = sqlx::query_as(&sql)
            .bind(changes.url)
            .bind(changes.description)
            .bind(types)
            .bind(changes.enabled)
            .bind(now_ms())
            .bind(org)
            .bind(id)
            .fetch_optional(&self.writer)
            .await?;
        row.map(EndpointRecord::try_from).transpose()
    }

    async fn delete_endpoint(&self, org: &str, id: &str) -> Result<bool> {
        let deleted = sqlx::query("DELETE FROM endpoints WHERE org_id = ? AND id = ?")
            .bind(org)
            .bind(id)
            .execute(&self.writer)
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
            "UPDATE endpoints SET previous_secret = secret, previous_secret_until = ?, secret = ?, updated_at = ? \
             WHERE org_id = ? AND id = ? RETURNING {ENDPOINT_COLUMNS}"
        );
        let row: Option<EndpointRow> = sqlx::query_as(&sql)
            .bind(previous_until)
            .bind(secret.expose_secret())
            .bind(now_ms())
            .bind(org)
            .bind(id)
            .fetch_optional(&self.writer)
            .await?;
        row.map(EndpointRecord::try_from).transpose()
    }

    async fn update_interview(&self, org: &str, candidate_id: &str, patch: &InterviewPatch) -> Result<InterviewUpdate> {
        let (reply, answer) = oneshot::channel();
        let job = UpdateJob { org: org.to_owned(), candidate_id: candidate_id.to_owned(), patch: patch.clone(), reply };
        self.updates.send(job).await.map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    async fn get_interview(&self, org: &str, candidate_id: &str) -> Result<Option<Interview>> {
        let stored: Option<String> =
            sqlx::query_scalar("SELECT data FROM interviews WHERE org_id = ? AND candidate_id = ?")
                .bind(org)
                .bind(candidate_id)
                .fetch_optional(&self.reader)
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
        let mut tx = self.begin().await?;
        let event = Self::insert_event(&mut tx, org, event_type, payload, &fanout, now).await?;
        let sql = format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE event_id = ? ORDER BY seq");
        let rows: Vec<DeliveryRow> = sqlx::query_as(&sql).bind(&event.id).fetch_all(&mut *tx).await?;
        tx.commit().await?;
        Ok((event, records(rows)?))
    }

    async fn list_events(&self, org: &str, page: PageRequest) -> Result<Page<EventRecord>> {
        let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE org_id = ? AND seq < ? ORDER BY seq DESC LIMIT ?");
        let rows: Vec<EventRow> = sqlx::query_as(&sql)
            .bind(org)
            .bind(page.before.unwrap_or(i64::MAX))
            .bind(i64::from(page.limit) + 1)
            .fetch_all(&self.reader)
            .await?;
        Ok(Page::from_rows(rows.into_iter().map(EventRecord::from).collect(), page.limit, |e| e.seq))
    }

    async fn get_event(&self, org: &str, id: &str) -> Result<Option<EventRecord>> {
        let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE org_id = ? AND id = ?");
        let row: Option<EventRow> = sqlx::query_as(&sql).bind(org).bind(id).fetch_optional(&self.reader).await?;
        Ok(row.map(EventRecord::from))
    }

    async fn list_deliveries(
        &self,
        org: &str,
        filter: &DeliveryFilter,
        page: PageRequest,
    ) -> Result<Page<DeliveryRecord>> {
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE org_id = ?1 AND seq < ?2 \
             AND (?3 IS NULL OR endpoint_id = ?3) AND (?4 IS NULL OR event_id = ?4) AND (?5 IS NULL OR status = ?5) \
             ORDER BY seq DESC LIMIT ?6"
        );
        let rows: Vec<DeliveryRow> = sqlx::query_as(&sql)
            .bind(org)
            .bind(page.before.unwrap_or(i64::MAX))
            .bind(&filter.endpoint_id)
            .bind(&filter.event_id)
            .bind(filter.status.map(DeliveryStatus::as_str))
            .bind(i64::from(page.limit) + 1)
            .fetch_all(&self.reader)
            .await?;
        Ok(Page::from_rows(records(rows)?, page.limit, |d| d.seq))
    }

    async fn get_delivery(&self, org: &str, id: &str) -> Result<Option<(DeliveryRecord, Vec<AttemptRecord>)>> {
        let sql = format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE org_id = ? AND id = ?");
        let Some(row) = sqlx::query_as::<_, DeliveryRow>(&sql).bind(org).bind(id).fetch_optional(&self.reader).await?
        else {
            return Ok(None);
        };
        let sql = format!("SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE delivery_id = ? ORDER BY seq");
        let attempts: Vec<AttemptRow> = sqlx::query_as(&sql).bind(id).fetch_all(&self.reader).await?;
        Ok(Some((row.try_into()?, attempts.into_iter().map(AttemptRecord::from).collect())))
    }

    async fn request_retry(&self, org: &str, id: &str) -> Result<Option<DeliveryRecord>> {
        let now = now_ms();
        let sql = format!(
            "UPDATE deliveries SET status = 'pending', manual = 1, run_at = ?1, next_attempt_at = ?1, \
             lease_token = NULL, updated_at = ?1 WHERE org_id = ?2 AND id = ?3 RETURNING {DELIVERY_COLUMNS}"
        );
        let row: Option<DeliveryRow> =
            sqlx::query_as(&sql).bind(now).bind(org).bind(id).fetch_optional(&self.writer).await?;
        row.map(DeliveryRecord::try_from).transpose()
    }

    async fn claim_due(&self, now: Millis, lease_until: Millis, limit: u32, exclude: &[String]) -> Result<Vec<Claim>> {
        let token = ids::new_id("lease");
        let exclude = serde_json::to_string(exclude).unwrap_or_else(|_| "[]".into());
        let mut tx = self.begin().await?;
        let claimed: Vec<i64> = sqlx::query_scalar(
            "UPDATE deliveries SET run_at = ?1, lease_token = ?2 WHERE seq IN ( \
               SELECT d.seq FROM deliveries d \
               WHERE d.run_at IS NOT NULL AND d.run_at <= ?3 \
                 AND d.endpoint_id NOT IN (SELECT value FROM json_each(?4)) \
                 AND EXISTS (SELECT 1 FROM endpoints e WHERE e.id = d.endpoint_id AND e.enabled = 1) \
               ORDER BY d.run_at LIMIT ?5) \
             RETURNING seq",
        )
        .bind(lease_until)
        .bind(&token)
        .bind(now)
        .bind(&exclude)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        if claimed.is_empty() {
            tx.rollback().await?;
            return Ok(Vec::new());
        }
        let seqs = serde_json::to_string(&claimed).unwrap_or_else(|_| "[]".into());
        let rows: Vec<ClaimRow> = sqlx::query_as(
            "SELECT d.id, d.event_id, d.endpoint_id, d.scheduled_count, d.manual, ev.payload, e.url, e.secret, \
                    e.previous_secret, e.previous_secret_until \
             FROM deliveries d JOIN events ev ON ev.id = d.event_id JOIN endpoints e ON e.id = d.endpoint_id \
             WHERE d.seq IN (SELECT value FROM json_each(?))",
        )
        .bind(&seqs)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(rows.into_iter().map(|row| row.into_claim(&token, now)).collect())
    }

    async fn release(&self, claims: &[Claim], now: Millis) -> Result<()> {
        let mut tx = self.begin().await?;
        for claim in claims {
            sqlx::query("UPDATE deliveries SET run_at = ?, lease_token = NULL WHERE id = ? AND lease_token = ?")
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
        let mut tx = self.begin().await?;
        for result in results {
            let a = &result.attempt;
            // Selecting from deliveries both numbers the attempt and skips deliveries deleted meanwhile.
            sqlx::query(
                "INSERT INTO attempts (delivery_id, number, trigger, started_at, duration_ms, status_code, error, \
                 response_body) SELECT id, attempt_count + 1, ?, ?, ?, ?, ?, ? FROM deliveries WHERE id = ?",
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
                "UPDATE deliveries SET attempt_count = attempt_count + 1, updated_at = ?1, \
                   scheduled_count = scheduled_count + CASE WHEN lease_token = ?2 THEN ?3 ELSE 0 END, \
                   status = CASE WHEN lease_token = ?2 THEN ?4 ELSE status END, \
                   next_attempt_at = CASE WHEN lease_token = ?2 THEN ?5 ELSE next_attempt_at END, \
                   run_at = CASE WHEN lease_token = ?2 THEN ?5 ELSE run_at END, \
                   manual = CASE WHEN lease_token = ?2 THEN 0 ELSE manual END, \
                   lease_token = CASE WHEN lease_token = ?2 THEN NULL ELSE lease_token END \
                 WHERE id = ?6",
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

    async fn next_due_after(&self, now: Millis) -> Result<Option<Millis>> {
        Ok(sqlx::query_scalar("SELECT MIN(run_at) FROM deliveries WHERE run_at > ?")
            .bind(now)
            .fetch_one(&self.reader)
            .await?)
    }
}
