//! The PostgreSQL store: shared by many `tidings` processes. Claims use `FOR UPDATE SKIP LOCKED` so processes
//! never work on the same delivery at once; new work is announced with `NOTIFY` so whichever process is free
//! picks it up at once; updates of one candidate are serialized with a transaction-scoped advisory lock.
//! Interview updates and attempt results are written in batches, a few statements per batch.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use sqlx::{Connection, PgConnection, Postgres, Transaction};
use tokio::sync::{Notify, OwnedMutexGuard, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::handoff::{Handed, Handoff, Reservation};
use super::rows::{
    ATTEMPT_COLUMNS, AttemptRow, ClaimRow, DELIVERY_COLUMNS, DeliveryRow, ENDPOINT_COLUMNS, EVENT_COLUMNS, EndpointRow,
    EventRow, NewDeliveryRow, records,
};
use super::{
    AttemptRecord, AttemptResult, Claim, DeliveryFilter, DeliveryRecord, EndpointChanges, EndpointRecord, EventRecord,
    Fanout, InterviewUpdate, KEEP_SETTLED, NewEndpoint, Page, PageRequest, Result, SharedBodies, Store, StoreError,
    Trigger, next_columns, signing_secrets, stored_interview,
};
use crate::domain::ids;
use crate::domain::interview::{self, Interview, InterviewPatch};
use crate::domain::time::{Millis, now_ms};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The channel on which new work is announced.
const WORK_CHANNEL: &str = "tidings_work";

/// Attempt results as columns, to be sent as arrays and unnested in one statement.
#[derive(Default)]
struct AttemptColumns {
    delivery_id: Vec<String>,
    lease_token: Vec<String>,
    trigger: Vec<&'static str>,
    started_at: Vec<i64>,
    duration_ms: Vec<i64>,
    status_code: Vec<Option<i64>>,
    error: Vec<Option<String>>,
    response_body: Vec<String>,
    status: Vec<&'static str>,
    next_at: Vec<Option<i64>>,
    scheduled: Vec<i64>,
}

impl AttemptColumns {
    fn push(&mut self, result: &AttemptResult) {
        let a = &result.attempt;
        let (status, next_at) = next_columns(result.next);
        self.delivery_id.push(result.delivery_id.clone());
        self.lease_token.push(result.lease_token.clone());
        self.trigger.push(a.trigger.as_str());
        self.started_at.push(a.started_at);
        self.duration_ms.push(a.duration_ms);
        self.status_code.push(a.status_code);
        self.error.push(a.error.clone());
        self.response_body.push(a.response_body.clone());
        self.status.push(status);
        self.next_at.push(next_at);
        self.scheduled.push(i64::from(a.trigger == Trigger::Scheduled));
    }
}

/// The shared store.
pub struct PostgresStore {
    pool: PgPool,
    /// Interview updates waiting for the group committer.
    updates: mpsc::Sender<UpdateJob>,
    /// This process's workers, when it runs any: new deliveries are leased and handed to them.
    handoff: Option<Arc<Handoff>>,
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

/// Starts the group committer on a thread of its own, with a runtime and a connection of its own. Each batch is
/// a handful of round trips to the database, and on the service's runtime the committer waited after every
/// one of them behind the tasks serving requests and sending webhooks (half a millisecond or more each under
/// load), which held every update in flight; its own thread is run by the system as soon as an answer comes.
fn spawn_committer(
    options: PgConnectOptions,
    jobs: mpsc::Receiver<UpdateJob>,
    handoff: Option<Arc<Handoff>>,
) -> Result<()> {
    let run = move || match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime.block_on(run_committers(options, jobs, handoff)),
        // Dropping `jobs` answers every update `Closed`.
        Err(error) => tracing::error!(%error, "cannot start the update committer"),
    };
    std::thread::Builder::new()
        .name("pg-committer".into())
        .spawn(run)
        .map_err(|e| StoreError::Start(format!("no thread for the update committer: {e}")))?;
    Ok(())
}

/// Group committers, each with its connection: while one waits for its commit to reach the disk, the other
/// takes the updates that came meanwhile and writes them.
const COMMITTERS: usize = 2;

/// The updates waiting, held by the committer whose turn it is to take a batch. It keeps them until its batch
/// holds the locks of its candidates, so batches lock in the order they were taken and the updates of one
/// candidate apply in the order they arrived, whichever committer writes them.
type Turn = Arc<tokio::sync::Mutex<mpsc::Receiver<UpdateJob>>>;

/// Runs the [`COMMITTERS`] until the store is dropped.
async fn run_committers(options: PgConnectOptions, jobs: mpsc::Receiver<UpdateJob>, handoff: Option<Arc<Handoff>>) {
    let turn: Turn = Arc::new(tokio::sync::Mutex::new(jobs));
    let mut committers = tokio::task::JoinSet::new();
    for _ in 0..COMMITTERS {
        committers.spawn(Committer::new(options.clone()).run(turn.clone(), handoff.clone()));
    }
    while committers.join_next().await.is_some() {}
}

/// The longest the committer waits for a connection, as long as the pool waits for one of its own.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the committer's connection may sit unused before it is checked (one round trip) before a batch:
/// a restart or an idle timeout may have closed it meanwhile, and the batch would fail on it.
pub const CHECK_AFTER_IDLE: Duration = Duration::from_secs(1);

/// The `application_name` of the committer's connection, as `pg_stat_activity` shows it.
pub const COMMITTER_NAME: &str = "tidings-committer";

/// The group committer and its connection, opened when it first has work.
struct Committer {
    options: PgConnectOptions,
    connection: Option<(PgConnection, Instant)>,
}

impl Committer {
    fn new(options: PgConnectOptions) -> Self {
        Self { options, connection: None }
    }

    /// On its turn, takes every update waiting and commits them in one transaction, in a handful of statements
    /// whatever their number, until the store is dropped.
    async fn run(mut self, turn: Turn, handoff: Option<Arc<Handoff>>) {
        let mut batch = Vec::with_capacity(UPDATE_BATCH);
        loop {
            let mut jobs = turn.clone().lock_owned().await;
            if jobs.recv_many(&mut batch, UPDATE_BATCH).await == 0 {
                break;
            }
            match self.commit(&batch, handoff.as_ref(), jobs).await {
                Ok(done) => {
                    for (job, update) in batch.drain(..).zip(done) {
                        let _ = job.reply.send(update);
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
        if let Some((connection, _)) = self.connection.take() {
            let _ = connection.close().await;
        }
    }

    /// Commits one batch on the connection, opened or checked first as needed. After an error of the database
    /// or of the connection (a lost connection may be reported either way) the connection is dropped: the
    /// next batch connects again.
    async fn commit(
        &mut self,
        batch: &[UpdateJob],
        handoff: Option<&Arc<Handoff>>,
        turn: OwnedMutexGuard<mpsc::Receiver<UpdateJob>>,
    ) -> Result<Vec<Result<InterviewUpdate>>> {
        let mut connection = self.connection().await?;
        let outcome = apply_updates(&mut connection, batch, handoff, turn).await;
        if !matches!(outcome, Err(StoreError::Database(_))) {
            self.connection = Some((connection, Instant::now()));
        }
        outcome
    }

    /// The open connection if it is still good, or a new one.
    async fn connection(&mut self) -> Result<PgConnection> {
        if let Some((mut open, last_used)) = self.connection.take()
            && (last_used.elapsed() < CHECK_AFTER_IDLE || open.ping().await.is_ok())
        {
            return Ok(open);
        }
        match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&self.options)).await {
            Ok(connected) => Ok(connected?),
            Err(_) => Err(StoreError::Database(sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no connection to the database within {CONNECT_TIMEOUT:?}"),
            )))),
        }
    }
}

/// Applies a batch of interview updates in one transaction, answering each job's outcome in order. Every
/// candidate in it is locked first, in one order for every process (so two processes' batches cannot
/// deadlock), which serializes updates of a candidate across processes; updates of one candidate inside the
/// batch apply in arrival order. An update for an organization that does not exist fails alone.
async fn apply_updates(
    connection: &mut PgConnection,
    jobs: &[UpdateJob],
    handoff: Option<&Arc<Handoff>>,
    turn: OwnedMutexGuard<mpsc::Receiver<UpdateJob>>,
) -> Result<Vec<Result<InterviewUpdate>>> {
    let now = now_ms();
    let mut tx = connection.begin().await?;
    let mut keys: Vec<String> = jobs.iter().map(|j| format!("{}/{}", j.org, j.candidate_id)).collect();
    keys.sort();
    keys.dedup();
    let orgs: Vec<&str> = jobs.iter().map(|j| j.org.as_str()).collect();
    // The candidates' locks, then the organizations that exist (locked against deletion), in one round trip:
    // the locks are counted before any organization row can be answered.
    let known: HashSet<String> = sqlx::query_scalar(
        "WITH locked AS MATERIALIZED ( \
           SELECT count(pg_advisory_xact_lock(hashtextextended(k, 0))) FROM unnest($1::text[]) AS k \
         ) \
         SELECT o.id FROM locked, organizations o WHERE o.id = ANY($2) FOR KEY SHARE OF o",
    )
    .bind(&keys)
    .bind(&orgs)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .collect();
    // The candidates are locked: the next batch may take its own locks.
    drop(turn);
    // Reserved once locked, so a batch waiting for a connection or a lock holds no places in the handoff.
    let mut reservation = Reservation::of(handoff, now, COMMITTERS);
    let candidates: Vec<&str> = jobs.iter().map(|j| j.candidate_id.as_str()).collect();
    let stored: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT org_id, candidate_id, data FROM interviews \
         WHERE (org_id, candidate_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))",
    )
    .bind(&orgs)
    .bind(&candidates)
    .fetch_all(&mut *tx)
    .await?;
    let mut current: HashMap<(String, String), (Interview, bool)> = HashMap::with_capacity(jobs.len());
    for (org, candidate, data) in stored {
        let interview = stored_interview(&data, &candidate)?;
        current.insert((org, candidate), (interview, true));
    }

    let mut updates = Vec::with_capacity(jobs.len());
    let mut events = EventColumns::default();
    let mut written: HashMap<(String, String), String> = HashMap::new();
    for job in jobs {
        if !known.contains(&job.org) {
            updates.push(Err(StoreError::UnknownOrganization(job.org.clone())));
            continue;
        }
        let key = (job.org.clone(), job.candidate_id.clone());
        let (interview, existed) =
            current.get(&key).cloned().unwrap_or_else(|| (Interview::empty(&job.candidate_id), false));
        let applied = interview.apply(&job.patch);
        if !existed || applied.event_body.is_some() {
            written.insert(key.clone(), applied.data.clone());
            current.insert(key, (applied.interview, true));
        }
        let event = applied.event_body.map(|body| {
            let id = ids::new_id(ids::EVENT);
            events.push(&id, &job.org, &body);
            EventRecord { seq: 0, id, event_type: interview::EVENT_TYPE.to_owned(), payload: body, created_at: now }
        });
        updates.push(Ok(InterviewUpdate { data: applied.data, event }));
    }

    // Interviews and their events in one statement (an event always comes with its interview written).
    let upsert = "INSERT INTO interviews (org_id, candidate_id, data, updated_at) \
                  SELECT o, c, d, $4 FROM unnest($1::text[], $2::text[], $3::text[]) AS u(o, c, d) \
                  ON CONFLICT (org_id, candidate_id) DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at";
    let (keys, data): (Vec<(String, String)>, Vec<String>) = written.into_iter().unzip();
    let (orgs, candidates): (Vec<String>, Vec<String>) = keys.into_iter().unzip();
    if events.id.is_empty() {
        // No deliveries in this batch: the places go back at once.
        reservation.settle();
        if !orgs.is_empty() {
            sqlx::query(upsert).bind(orgs).bind(candidates).bind(data).bind(now).execute(&mut *tx).await?;
        }
    } else {
        let seqs: Vec<(String, i64)> = sqlx::query_as(&format!(
            "WITH written AS ({upsert}) \
             INSERT INTO events (id, org_id, type, payload, created_at) \
             SELECT i, o, $8, p, $4 FROM unnest($5::text[], $6::text[], $7::text[]) AS u(i, o, p) \
             RETURNING id, seq"
        ))
        .bind(orgs)
        .bind(candidates)
        .bind(data)
        .bind(now)
        .bind(&events.id)
        .bind(&events.org)
        .bind(&events.payload)
        .bind(interview::EVENT_TYPE)
        .fetch_all(&mut *tx)
        .await?;
        let seqs: HashMap<String, i64> = seqs.into_iter().collect();
        for event in updates.iter_mut().filter_map(|u| u.as_mut().ok()?.event.as_mut()) {
            event.seq = seqs.get(&event.id).copied().unwrap_or_default();
        }
        let events = events.id.into_iter().zip(events.org).zip(events.payload);
        let new = events.map(|((id, org), payload)| NewEvent { id, org, payload }).collect::<Vec<_>>();
        insert_deliveries(&mut tx, &new, &Fanout::Subscribed, interview::EVENT_TYPE, now, &mut reservation).await?;
    }
    tx.commit().await?;
    reservation.commit();
    Ok(updates)
}

/// An event just inserted, whose deliveries are to be made.
struct NewEvent {
    id: String,
    org: String,
    payload: String,
}

/// Inserts the deliveries of `events` in one statement: to every enabled endpoint of the event's organization
/// subscribed to `event_type`, or to the one endpoint of `fanout`. As many as `reservation` has room for are
/// leased to this process and their claims added to it; if any are left for the queue, this process's workers
/// and other processes are told on commit.
async fn insert_deliveries(
    tx: &mut PgConnection,
    events: &[NewEvent],
    fanout: &Fanout,
    event_type: &str,
    now: Millis,
    reservation: &mut Reservation,
) -> Result<()> {
    let (filter, target) = match fanout {
        Fanout::Subscribed => ("e.enabled AND jsonb_exists(e.event_types::jsonb, $4)", event_type),
        Fanout::Endpoint(endpoint) => ("e.id = $4", endpoint.as_str()),
    };
    // The endpoints are locked against deletion (not against edits) until the deliveries are committed, so a
    // delete waits and then takes these deliveries with it. `targets` is read more than once and calls
    // random(), so it is computed once: the ids inserted are the ids answered. Only the leased ones come back
    // (their claims are handed off), and one of those left for the queue if there are any.
    let sql = format!(
        "WITH chosen AS ( \
           SELECT e.* FROM endpoints e WHERE e.org_id = ANY($2) AND {filter} FOR KEY SHARE \
         ), targets AS ( \
           SELECT 'dlv_' || lpad(to_hex($3::bigint), 12, '0') || substr(md5(random()::text), 1, 12) AS id, \
                  u.i AS event_id, e.org_id, e.id AS endpoint_id, e.url, e.secret, e.previous_secret, \
                  e.previous_secret_until, \
                  e.enabled AND row_number() OVER (ORDER BY NOT e.enabled) <= $5 AS leased \
           FROM unnest($1::text[], $2::text[]) AS u(i, o) JOIN chosen e ON e.org_id = u.o \
         ), inserted AS ( \
           INSERT INTO deliveries (id, org_id, event_id, endpoint_id, status, next_attempt_at, created_at, updated_at) \
           SELECT id, org_id, event_id, endpoint_id, 'pending', $3, $3, $3 FROM targets \
         ), queued AS ( \
           INSERT INTO delivery_queue (delivery_id, endpoint_id, run_at, lease_until, lease_token) \
           SELECT id, endpoint_id, CASE WHEN leased THEN $6 ELSE $3 END, CASE WHEN leased THEN $6 END, \
                  CASE WHEN leased THEN $7 END \
           FROM targets \
         ) \
         SELECT {columns} FROM targets WHERE leased \
         UNION ALL (SELECT {columns} FROM targets WHERE NOT leased LIMIT 1)",
        columns = "id, event_id, endpoint_id, url, secret, previous_secret, previous_secret_until, leased"
    );
    let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    let orgs: Vec<&str> = events.iter().map(|e| e.org.as_str()).collect();
    let rows: Vec<NewDeliveryRow> = sqlx::query_as(&sql)
        .bind(&ids)
        .bind(&orgs)
        .bind(now)
        .bind(target)
        .bind(reservation.room() as i64)
        .bind(reservation.until)
        .bind(&reservation.token)
        .fetch_all(&mut *tx)
        .await?;
    let mut left_for_queue = false;
    let texts: HashMap<&str, &str> = events.iter().map(|e| (e.id.as_str(), e.payload.as_str())).collect();
    let mut bodies = SharedBodies::default();
    for row in rows {
        if !row.leased || !reservation.has_room() {
            left_for_queue |= !row.leased;
            continue;
        }
        // Every row is of one of `events`: its body is copied once, the first time one of its rows is leased.
        let Some(text) = texts.get(row.event_id.as_str()) else { continue };
        let Ok(payload) = bodies.share(&row.event_id, || Ok::<_, Infallible>(Bytes::copy_from_slice(text.as_bytes())));
        reservation.push(Handed {
            secrets: signing_secrets(row.secret, row.previous_secret, row.previous_secret_until, now),
            url: row.url,
            payload,
            delivery_id: row.id,
            row: 0,
            event_id: row.event_id,
            endpoint_id: row.endpoint_id,
        });
    }
    // The places not filled go back now, not at the commit: an API write beside this one may use them.
    reservation.settle();
    if left_for_queue {
        // Other processes hear of them; this one's dispatcher is told directly once committed.
        reservation.leave_for_queue();
        sqlx::query("SELECT pg_notify($1, '')").bind(WORK_CHANNEL).execute(&mut *tx).await?;
    }
    Ok(())
}

/// New events as columns, to be inserted in one statement.
#[derive(Default)]
struct EventColumns {
    id: Vec<String>,
    org: Vec<String>,
    payload: Vec<String>,
}

impl EventColumns {
    fn push(&mut self, id: &str, org: &str, payload: &str) {
        self.id.push(id.to_owned());
        self.org.push(org.to_owned());
        self.payload.push(payload.to_owned());
    }
}

/// Whether PostgreSQL ended the statement to break a deadlock (SQLSTATE 40P01).
pub fn is_deadlock(error: &sqlx::Error) -> bool {
    super::sqlstate(error).is_some_and(|code| code == "40P01")
}

type Tx = Transaction<'static, Postgres>;

/// How the store's connections are made. Every statement of the store is answered from an index, and each is
/// prepared once per connection, where PostgreSQL keeps a generic plan made from the table's size at the time.
/// A plan made while a table was nearly empty would scan it whole, and go on scanning it as it grows (nothing
/// replans it until the table is analyzed, and nothing analyzes it when autovacuum is off). So sequential scans
/// are turned off for these connections: the planner takes an index whenever one applies.
pub fn connect_options(url: &str) -> Result<PgConnectOptions> {
    Ok(PgConnectOptions::from_str(url)?.options([("enable_seqscan", "off")]))
}

impl PostgresStore {
    /// Connects and migrates. Migrations take an advisory lock, so processes starting together migrate once.
    pub async fn open(url: &str, handoff: Option<Arc<Handoff>>) -> Result<Self> {
        let options = connect_options(url)?;
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_with(options.clone())
            .await?;
        MIGRATOR.run(&pool).await?;
        let (updates, jobs) = mpsc::channel(UPDATE_BATCH * 4);
        spawn_committer(options.application_name(COMMITTER_NAME), jobs, handoff.clone())?;
        Ok(Self { pool, updates, handoff })
    }

    /// Inserts an event and its deliveries inside `tx`.
    async fn insert_event(
        tx: &mut Tx,
        org: &str,
        event_type: &str,
        payload: &str,
        fanout: &Fanout,
        now: Millis,
        reservation: &mut Reservation,
    ) -> Result<EventRecord> {
        let id = ids::new_id(ids::EVENT);
        // Written only if its organization exists, which stays locked against deletion until the commit
        // (events do not check it row by row: migration 5).
        let seq: Option<i64> = sqlx::query_scalar(
            "WITH o AS (SELECT 1 FROM organizations WHERE id = $2 FOR KEY SHARE) \
             INSERT INTO events (id, org_id, type, payload, created_at) SELECT $1, $2, $3, $4, $5 FROM o \
             RETURNING seq",
        )
        .bind(&id)
        .bind(org)
        .bind(event_type)
        .bind(payload)
        .bind(now)
        .fetch_optional(&mut **tx)
        .await?;
        let seq = seq.ok_or_else(|| StoreError::UnknownOrganization(org.to_owned()))?;
        let new = [NewEvent { id: id.clone(), org: org.to_owned(), payload: payload.to_owned() }];
        insert_deliveries(tx, &new, fanout, event_type, now, reservation).await?;
        Ok(EventRecord { seq, id, event_type: event_type.to_owned(), payload: payload.to_owned(), created_at: now })
    }
}

impl PostgresStore {
    /// One newest-first page of `org`'s rows of `table` (`seq` is the cursor): up to `limit + 1` rows, so
    /// [`Page::from_rows`] can tell whether there is more.
    async fn org_page<R>(&self, columns: &str, table: &str, org: &str, page: PageRequest) -> Result<Vec<R>>
    where
        R: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
    {
        let sql = format!("SELECT {columns} FROM {table} WHERE org_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3");
        Ok(sqlx::query_as(&sql)
            .bind(org)
            .bind(page.before.unwrap_or(i64::MAX))
            .bind(i64::from(page.limit) + 1)
            .fetch_all(&self.pool)
            .await?)
    }

    /// One try at deleting an endpoint with its queue, deliveries and attempts (see `delete_endpoint`).
    async fn delete_endpoint_once(&self, org: &str, id: &str) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        // Waits for batches still making deliveries to this endpoint (they lock it), so those are seen below.
        let deleted = sqlx::query("DELETE FROM endpoints WHERE org_id = $1 AND id = $2")
            .bind(org)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if deleted.rows_affected() == 0 {
            return Ok(false);
        }
        // Its deliveries are locked before they go, their queue's rows first and each in the order of ids (as
        // results lock them): attempts being recorded for them finish first (and are seen below), and later
        // ones find them gone and log nothing. (A retry queued anew by results that finished while this waited
        // is not locked here, and may be claimed once meanwhile, like an attempt already in flight; the last
        // statement still deletes it.) The queue holds only deliveries waiting for an attempt, and is read by its
        // rows' endpoint without an index, as rarely as endpoints are deleted.
        sqlx::query("SELECT 1 FROM delivery_queue WHERE endpoint_id = $1 ORDER BY delivery_id FOR UPDATE")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("SELECT 1 FROM deliveries WHERE endpoint_id = $1 ORDER BY id FOR UPDATE")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "WITH gone AS (DELETE FROM deliveries WHERE endpoint_id = $1 RETURNING id), \
             unqueued AS (DELETE FROM delivery_queue WHERE endpoint_id = $1) \
             DELETE FROM attempts WHERE delivery_id IN (SELECT id FROM gone)",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Records a batch of attempt results in one transaction.
    async fn record_slice(&self, results: &[AttemptResult]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        // An attempt is logged for the deliveries the second statement of a part updated, numbered by the count
        // it set, so a delivery deleted meanwhile gets none. A delivery twice in one part (a stale lease's result
        // beside the newer one) would be updated only once, so the batch is written in parts without one.
        let mut rest = results;
        while !rest.is_empty() {
            let mut seen = HashSet::with_capacity(rest.len());
            let split = rest.iter().position(|r| !seen.insert(r.delivery_id.as_str())).unwrap_or(rest.len());
            record_part(&mut tx, &rest[..split]).await?;
            rest = &rest[split..];
        }
        tx.commit().await?;
        Ok(())
    }
}

/// The second statement of [`record_part`]: the deliveries' update, then `$again` (a CTE that queues retries, or
/// nothing), then the attempts log.
macro_rules! record_statement {
    ($again:literal) => {
        concat!(
            "WITH r AS ( \
               SELECT * FROM unnest($1::text[], $2::bool[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[], \
                                    $7::text[], $8::text[], $9::text[], $10::bigint[], $11::bigint[]) \
                 AS r(delivery_id, owned, trigger, started_at, duration_ms, status_code, error, response_body, \
                      status, next_at, scheduled) \
             ), updated AS ( \
               UPDATE deliveries d SET attempt_count = d.attempt_count + 1, updated_at = $12, \
                 scheduled_count = d.scheduled_count + CASE WHEN r.owned THEN r.scheduled ELSE 0 END, \
                 status = CASE WHEN r.owned THEN \
                     CASE WHEN r.status <> 'succeeded' AND d.settled IS NOT NULL THEN d.settled ELSE r.status END \
                   WHEN r.status = 'succeeded' AND d.status = 'undeliverable' THEN r.status ELSE d.status END, \
                 next_attempt_at = CASE WHEN r.owned THEN \
                     CASE WHEN r.status <> 'succeeded' AND d.settled IS NOT NULL THEN NULL ELSE r.next_at END \
                   ELSE d.next_attempt_at END, \
                 settled = CASE WHEN r.owned THEN NULL WHEN r.status = 'succeeded' THEN r.status ELSE d.settled END \
               FROM r WHERE d.id = r.delivery_id \
               RETURNING d.id, d.endpoint_id, d.attempt_count, d.next_attempt_at, r.owned, r.trigger, r.started_at, \
                         r.duration_ms, r.status_code, r.error, r.response_body \
             )",
            $again,
            " INSERT INTO attempts (delivery_id, number, trigger, started_at, duration_ms, status_code, error, \
                                    response_body) \
             SELECT id, attempt_count, trigger, started_at, duration_ms, status_code, error, response_body \
             FROM updated"
        )
    };
}

/// Results of which none has a next attempt: no delivery is queued again.
const RECORD: &str = record_statement!("");
/// Results of which some have a next attempt: those still owed one once updated are queued again.
const RECORD_WITH_RETRIES: &str = record_statement!(
    ", again AS ( \
       INSERT INTO delivery_queue (delivery_id, endpoint_id, run_at) \
       SELECT id, endpoint_id, next_attempt_at FROM updated WHERE owned AND next_attempt_at IS NOT NULL \
     )"
);

/// Records results for distinct deliveries in two statements of `tx`.
async fn record_part(tx: &mut Tx, results: &[AttemptResult]) -> Result<()> {
    // Rows are locked in the order of their ids, the queue's and then the deliveries', as deleting an endpoint
    // locks them, so neither waits for the other while holding what the other waits for.
    let mut sorted: Vec<&AttemptResult> = results.iter().collect();
    sorted.sort_unstable_by(|a, b| a.delivery_id.cmp(&b.delivery_id));
    let mut columns = AttemptColumns::default();
    for result in sorted {
        columns.push(result);
    }
    // First the queue, where the leases are: a result made under the lease its delivery still has takes the
    // delivery out of the queue. A result under a lease that ran out and was taken again, or was ended by a
    // manual retry, leaves the queue as it is.
    let owned: Vec<String> = sqlx::query_scalar(
        "DELETE FROM delivery_queue q USING unnest($1::text[], $2::text[]) AS r(delivery_id, lease_token) \
         WHERE q.delivery_id = r.delivery_id AND q.lease_token = r.lease_token \
         RETURNING q.delivery_id",
    )
    .bind(&columns.delivery_id)
    .bind(&columns.lease_token)
    .fetch_all(&mut **tx)
    .await?;
    let owned: HashSet<String> = owned.into_iter().collect();
    let owned: Vec<bool> = columns.delivery_id.iter().map(|id| owned.contains(id)).collect();
    // Then the deliveries, changing no indexed column (so each stays on its page, with no index written), the
    // queue again for those with a next attempt, and the attempts log. Whether there is a next attempt is
    // read from the updated row: a failed attempt of a delivery that had settled before a manual retry goes
    // back to its settled status (see [`KEEP_SETTLED`]), and `settled` may have been set by a success under a
    // lost lease until this statement locked the row. (A retry queued anew costs what moving it in the due
    // index would: a new version and two index entries.)
    // Only a part with a retry among its results can queue one (a settled delivery only ever loses its next
    // attempt here): the others leave the queue out of the statement.
    let sql = if columns.next_at.iter().any(Option::is_some) { RECORD_WITH_RETRIES } else { RECORD };
    sqlx::query(sql)
        .bind(columns.delivery_id)
        .bind(owned)
        .bind(columns.trigger)
        .bind(columns.started_at)
        .bind(columns.duration_ms)
        .bind(columns.status_code)
        .bind(columns.error)
        .bind(columns.response_body)
        .bind(columns.status)
        .bind(columns.next_at)
        .bind(columns.scheduled)
        .bind(now_ms())
        .execute(&mut **tx)
        .await?;
    Ok(())
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
        let rows: Vec<EndpointRow> = self.org_page(ENDPOINT_COLUMNS, "endpoints", org, page).await?;
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
        // Results lock their rows in the order of ids on every plan the store's connections make, as this does;
        // a connection with other settings (a pooler that dropped `enable_seqscan`) may not, and PostgreSQL
        // then ends one of the two as a deadlock. Results are written again by their recorder, and this tries
        // again too.
        let mut tries = 0;
        loop {
            match self.delete_endpoint_once(org, id).await {
                Err(StoreError::Database(error)) if tries < 2 && is_deadlock(&error) => tries += 1,
                outcome => return outcome,
            }
        }
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
        let (reply, answer) = oneshot::channel();
        let job = UpdateJob { org: org.to_owned(), candidate_id: candidate_id.to_owned(), patch: patch.clone(), reply };
        self.updates.send(job).await.map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    async fn get_interview(&self, org: &str, candidate_id: &str) -> Result<Option<Interview>> {
        let stored: Option<String> =
            sqlx::query_scalar("SELECT data FROM interviews WHERE org_id = $1 AND candidate_id = $2")
                .bind(org)
                .bind(candidate_id)
                .fetch_optional(&self.pool)
                .await?;
        stored.map(|text| stored_interview(&text, candidate_id)).transpose()
    }

    async fn create_event(
        &self,
        org: &str,
        event_type: &str,
        payload: &str,
        fanout: Fanout,
    ) -> Result<(EventRecord, Vec<DeliveryRecord>)> {
        let now = now_ms();
        let mut reservation = Reservation::of(self.handoff.as_ref(), now, 1);
        let mut tx = self.pool.begin().await?;
        let event = Self::insert_event(&mut tx, org, event_type, payload, &fanout, now, &mut reservation).await?;
        let sql = format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE event_id = $1 ORDER BY seq");
        let rows: Vec<DeliveryRow> = sqlx::query_as(&sql).bind(&event.id).fetch_all(&mut *tx).await?;
        tx.commit().await?;
        reservation.commit();
        Ok((event, records(rows)?))
    }

    async fn list_events(&self, org: &str, page: PageRequest) -> Result<Page<EventRecord>> {
        let rows: Vec<EventRow> = self.org_page(EVENT_COLUMNS, "events", org, page).await?;
        Ok(Page::from_rows(rows.into_iter().map(EventRecord::from).collect(), page.limit, |e| e.seq))
    }

    async fn get_event(&self, org: &str, id: &str) -> Result<Option<EventRecord>> {
        let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE org_id = $1 AND id = $2");
        let row: Option<EventRow> = sqlx::query_as(&sql).bind(org).bind(id).fetch_optional(&self.pool).await?;
        Ok(row.map(EventRecord::from))
    }

    async fn event_types(&self, org: &str, event_ids: &[String]) -> Result<HashMap<String, String>> {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT id, type FROM events WHERE org_id = $1 AND id = ANY($2)")
                .bind(org)
                .bind(event_ids)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().collect())
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
        // Queued (again) and due now, first: a lease it had is ended, so an attempt in flight under it no longer
        // counts for the delivery. The queue's row is locked before the delivery's, as results lock them; if
        // the delivery is gone by then (its endpoint deleted), nothing is written.
        sqlx::query(
            "INSERT INTO delivery_queue (delivery_id, endpoint_id, run_at, manual) \
             SELECT id, endpoint_id, $1, TRUE FROM deliveries WHERE org_id = $2 AND id = $3 \
             ON CONFLICT (delivery_id) DO UPDATE SET run_at = $1, lease_until = NULL, lease_token = NULL, manual = TRUE",
        )
        .bind(now)
        .bind(org)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        let sql = format!(
            "UPDATE deliveries SET status = 'pending', settled = {KEEP_SETTLED}, next_attempt_at = $1, updated_at = $1 \
             WHERE org_id = $2 AND id = $3 RETURNING {DELIVERY_COLUMNS}"
        );
        let row: Option<DeliveryRow> =
            sqlx::query_as(&sql).bind(now).bind(org).bind(id).fetch_optional(&mut *tx).await?;
        if row.is_none() {
            // Dropping `tx` rolls the queue's row back.
            return Ok(None);
        }
        sqlx::query("SELECT pg_notify($1, '')").bind(WORK_CHANNEL).execute(&mut *tx).await?;
        tx.commit().await?;
        row.map(DeliveryRecord::try_from).transpose()
    }

    async fn last_deliveries(&self, org: &str, endpoint_ids: &[String]) -> Result<Vec<DeliveryRecord>> {
        // One correlated subquery per endpoint, each answered from deliveries_by_endpoint (endpoint_id, seq).
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id IN ( \
               SELECT (SELECT d.id FROM deliveries d WHERE d.endpoint_id = e.id AND d.org_id = $1 \
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
               SELECT q.delivery_id FROM delivery_queue q \
               WHERE q.run_at <= $1 AND (q.lease_until IS NULL OR q.lease_until <= $1) \
                 AND NOT (q.endpoint_id = ANY($2)) \
                 AND EXISTS (SELECT 1 FROM endpoints e WHERE e.id = q.endpoint_id AND e.enabled) \
               ORDER BY q.run_at LIMIT $3 \
               FOR UPDATE OF q SKIP LOCKED \
             ), claimed AS ( \
               UPDATE delivery_queue q SET lease_until = $4, lease_token = $5 FROM due \
               WHERE q.delivery_id = due.delivery_id \
               RETURNING q.delivery_id, q.manual \
             ) \
             SELECT d.id, d.event_id, d.endpoint_id, d.scheduled_count, c.manual, \
                    CASE WHEN row_number() OVER (PARTITION BY d.event_id) = 1 THEN ev.payload END AS payload, \
                    e.url, e.secret, e.previous_secret, e.previous_secret_until \
             FROM claimed c JOIN deliveries d ON d.id = c.delivery_id JOIN events ev ON ev.id = d.event_id \
                  JOIN endpoints e ON e.id = d.endpoint_id",
        )
        .bind(now)
        .bind(exclude)
        .bind(i64::from(limit))
        .bind(lease_until)
        .bind(&token)
        .fetch_all(&self.pool)
        .await?;
        Ok(ClaimRow::into_claims(rows, &token, lease_until, now))
    }

    async fn release(&self, claims: &[Claim]) -> Result<()> {
        let now = now_ms();
        // In the order of ids, as every other write of several queue rows locks them.
        let mut claims: Vec<&Claim> = claims.iter().collect();
        claims.sort_unstable_by(|a, b| a.delivery_id.cmp(&b.delivery_id));
        let mut tx = self.pool.begin().await?;
        for claim in claims {
            // A handed-off delivery was queued for the end of its lease: due now instead.
            sqlx::query(
                "UPDATE delivery_queue SET lease_until = NULL, lease_token = NULL, run_at = LEAST(run_at, $3) \
                 WHERE delivery_id = $1 AND lease_token = $2",
            )
            .bind(&claim.delivery_id)
            .bind(&claim.lease_token)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn record_attempts(&self, results: Arc<[AttemptResult]>) -> Result<()> {
        self.record_slice(&results).await
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
        Ok(sqlx::query_scalar("SELECT MIN(run_at) FROM delivery_queue WHERE run_at > $1")
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
