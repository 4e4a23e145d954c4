//! The SQLite store: one file in WAL mode. Every write runs on one writer thread that takes whatever writes
//! are waiting (interview updates, claims, attempt results) and commits them together in one transaction: one
//! disk sync for many writes, and no hand-off between threads per statement. Reads run on a few reader
//! connections beside it, which WAL allows.

use std::borrow::Cow;
use std::cell::{RefCell, RefMut};
use std::collections::{HashMap, VecDeque};
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use rusqlite::types::Type;
use rusqlite::{Connection, OpenFlags, OptionalExtension, PrepFlags, Row, Statement, params};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::oneshot;

use super::handoff::{Handed, Handoff, Reservation};
use super::{
    AttemptRecord, AttemptResult, Claim, DeliveryFilter, DeliveryRecord, DeliveryStatus, EndpointChanges,
    EndpointRecord, EventRecord, Fanout, InterviewUpdate, KEEP_SETTLED, NewEndpoint, Page, PageRequest, Result,
    SharedBodies, Store, StoreError, Trigger, next_columns, signing_secrets, stored_interview,
};
use crate::domain::ids;
use crate::domain::interview::{self, Interview, InterviewPatch};
use crate::domain::time::{Millis, now_ms};

/// The schema, in order; each runs once, in a transaction, and is remembered in `schema_migrations`.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/sqlite/0001_init.sql")),
    (2, include_str!("../../migrations/sqlite/0002_lease_column.sql")),
    (3, include_str!("../../migrations/sqlite/0003_hot_path_without_foreign_keys.sql")),
    (4, include_str!("../../migrations/sqlite/0004_settled_status_kept.sql")),
];

/// Most writes committed in one transaction.
const WRITE_BATCH: usize = 512;
/// How long a transaction takes on more waiting writes before it commits: an update fanned out to fifty
/// endpoints writes fifty deliveries, and sixty-four of them at once would hold the attempts' results (and
/// with them the slots of the next attempts) for tens of milliseconds.
const WRITE_TIME: Duration = Duration::from_millis(4);
/// Reader connections kept open.
const READERS: usize = 4;
/// How long the checkpointer rests after each checkpoint: while writes keep coming, it copies the log into the
/// database file about this often rather than after every commit.
const CHECKPOINT_REST: Duration = Duration::from_millis(50);

const ENDPOINT_COLUMNS: &str = "seq, id, url, description, event_types, enabled, secret, previous_secret, \
                                previous_secret_until, created_at, updated_at";
const DELIVERY_COLUMNS: &str =
    "seq, id, event_id, endpoint_id, status, attempt_count, next_attempt_at, created_at, updated_at";
const EVENT_COLUMNS: &str = "seq, id, type, payload, created_at";

/// A write waiting for the writer thread.
trait Job: Send {
    /// Runs the write inside the group transaction and says whether it succeeded. It may run again after the
    /// transaction was rolled back, so it keeps nothing from an earlier run.
    fn run(&mut self, tx: &Tx<'_>) -> bool;
    /// Whether the write goes ahead of the others waiting: the workers' writes (claims, releases, results),
    /// which hold attempts in flight, and of which there are only ever a few waiting.
    fn first(&self) -> bool;
    /// Answers the caller once the transaction has ended (`commit_error` when the commit failed).
    fn finish(self: Box<Self>, commit_error: Option<&str>);
}

/// A write made of a closure, its last outcome, and where the answer goes.
struct Write<T, F> {
    f: F,
    first: bool,
    handoff: Option<Arc<Handoff>>,
    outcome: Option<(Result<T>, Reservation)>,
    answer: oneshot::Sender<Result<T>>,
}

impl<T, F> Job for Write<T, F>
where
    T: Send,
    F: FnMut(&Tx<'_>, &mut Reservation) -> Result<T> + Send,
{
    fn run(&mut self, tx: &Tx<'_>) -> bool {
        // An earlier run's reservation gives its places back here.
        self.outcome = None;
        let now = now_ms();
        let mut reservation = Reservation::of(self.handoff.as_ref(), now, 1);
        let result = (self.f)(tx, &mut reservation);
        reservation.settle();
        let ok = result.is_ok();
        self.outcome = Some((result, reservation));
        ok
    }

    fn first(&self) -> bool {
        self.first
    }

    fn finish(self: Box<Self>, commit_error: Option<&str>) {
        let result = match (self.outcome, commit_error) {
            (None, _) => Err(StoreError::Batch("the write was not run".into())),
            (Some((Ok(_), _)), Some(error)) => Err(StoreError::Batch(error.to_owned())),
            (Some((result, reservation)), _) => {
                if result.is_ok() {
                    reservation.commit();
                }
                result
            }
        };
        let _ = self.answer.send(result);
    }
}

/// The statements run for every webhook, kept prepared by the writer for as long as it runs: fetching them
/// from rusqlite's statement cache hashes their text twice per use, which cost the writer a twentieth of its
/// time.
#[derive(Clone, Copy)]
enum Hot {
    /// The interview of (`?1` organization, `?2` candidate), and whether the organization exists (no row).
    ReadInterview,
    UpsertInterview,
    InsertEvent,
    SubscribedEndpoints,
    OneEndpoint,
    /// Deliveries, one, eight or 32 at a time ([`delivery_rows`]): an update fanned out to fifty endpoints is
    /// written in five statements rather than fifty.
    InsertDelivery,
    InsertDeliveries8,
    InsertDeliveries32,
    /// Attempts' results, one, eight or 32 at a time ([`result_rows`]).
    LogAttempt,
    AdvanceDelivery,
    LogAttempts8,
    AdvanceDeliveries8,
    LogAttempts32,
    AdvanceDeliveries32,
}

impl Hot {
    /// One slot per statement: the last one's number, plus one.
    const COUNT: usize = Hot::AdvanceDeliveries32 as usize + 1;

    fn sql(self) -> Cow<'static, str> {
        Cow::Borrowed(match self {
            // The organization check rides on the interview's read: the tables written per update check no
            // foreign keys, and no row means no organization.
            Hot::ReadInterview => {
                "SELECT i.data FROM organizations o \
                 LEFT JOIN interviews i ON i.org_id = o.id AND i.candidate_id = ?2 WHERE o.id = ?1"
            }
            Hot::UpsertInterview => {
                "INSERT OR FAIL INTO interviews (org_id, candidate_id, data, updated_at) VALUES (?, ?, ?, ?) \
                 ON CONFLICT (org_id, candidate_id) DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at"
            }
            Hot::InsertEvent => {
                "INSERT OR FAIL INTO events (id, org_id, type, payload, created_at) VALUES (?, ?, ?, ?, ?)"
            }
            Hot::SubscribedEndpoints => {
                "SELECT id, enabled, url, secret, previous_secret, previous_secret_until FROM endpoints \
                 WHERE org_id = ?1 AND enabled = 1 AND EXISTS (SELECT 1 FROM json_each(event_types) WHERE value = ?2)"
            }
            Hot::OneEndpoint => {
                "SELECT id, enabled, url, secret, previous_secret, previous_secret_until FROM endpoints \
                 WHERE org_id = ?1 AND id = ?2"
            }
            Hot::InsertDelivery => return delivery_rows(1).into(),
            Hot::InsertDeliveries8 => return delivery_rows(8).into(),
            Hot::InsertDeliveries32 => return delivery_rows(32).into(),
            // One result by its own statements, not `result_rows(1)`: joining a list of values costs a
            // temporary table per run, which for a single row is a third more of the writer's result work.
            // Numbered as `result_rows` numbers its first row. Selecting from deliveries both numbers the attempt
            // and skips deliveries deleted meanwhile; both find the delivery by its row number (`?7`, `?6`), as
            // claimed, and check its id: a row number freed by a delete can be given to a later row.
            Hot::LogAttempt => {
                "INSERT OR FAIL INTO attempts (delivery_id, number, trigger, started_at, duration_ms, status_code, \
                 error, response_body) SELECT id, attempt_count + 1, ?1, ?2, ?3, ?4, ?5, ?6 FROM deliveries \
                 WHERE seq = ?7 AND id = ?8"
            }
            Hot::AdvanceDelivery => {
                return format!(
                    "UPDATE OR FAIL deliveries SET {} WHERE seq = ?6 AND id = ?7",
                    advance_columns("?2", "?3", "?4", "?5")
                )
                .into();
            }
            Hot::LogAttempts8 => return result_rows(8).0.into(),
            Hot::AdvanceDeliveries8 => return result_rows(8).1.into(),
            Hot::LogAttempts32 => return result_rows(32).0.into(),
            Hot::AdvanceDeliveries32 => return result_rows(32).1.into(),
        })
    }

    /// The statement for the next of `left` deliveries to insert, and how many it writes: the most of the
    /// sizes kept prepared (32, 8 and 1).
    fn insert_deliveries(left: usize) -> (usize, Hot) {
        match left {
            32.. => (32, Hot::InsertDeliveries32),
            8.. => (8, Hot::InsertDeliveries8),
            _ => (1, Hot::InsertDelivery),
        }
    }

    /// The statements for the next of `left` results to write (the log and the advance), and how many they
    /// write, as [`Hot::insert_deliveries`] chooses.
    fn write_results(left: usize) -> (usize, Hot, Hot) {
        match left {
            32.. => (32, Hot::LogAttempts32, Hot::AdvanceDeliveries32),
            8.. => (8, Hot::LogAttempts8, Hot::AdvanceDeliveries8),
            _ => (1, Hot::LogAttempt, Hot::AdvanceDelivery),
        }
    }
}

/// Inserts `n` deliveries of one event: `?1` organization, `?2` event, `?3` now, then five values per delivery
/// (id, endpoint, queue position, lease end, lease token).
fn delivery_rows(n: usize) -> String {
    let rows: Vec<String> = (0..n)
        .map(|i| {
            let at = 4 + DELIVERY_VALUES * i;
            format!("(?{at}, ?1, ?2, ?{}, 'pending', ?3, ?{}, ?{}, ?{}, ?3, ?3)", at + 1, at + 2, at + 3, at + 4)
        })
        .collect();
    format!(
        "INSERT OR FAIL INTO deliveries (id, org_id, event_id, endpoint_id, status, next_attempt_at, run_at, \
         lease_until, lease_token, created_at, updated_at) VALUES {}",
        rows.join(", ")
    )
}

/// The values of one delivery in [`delivery_rows`].
const DELIVERY_VALUES: usize = 5;

/// Records `n` attempts' results, as [`Hot::LogAttempt`] and [`Hot::AdvanceDelivery`] record one, each
/// statement joining its rows of values to the deliveries by row number (and id). The log takes eight values
/// per result (trigger, start, duration, status code, error, response body, row, id); the advance takes `?1`
/// now, then six per result (lease token, scheduled attempts to add, status, next attempt, row, id). No two
/// results of one statement may be for the same delivery: the second would not see the first.
fn result_rows(n: usize) -> (String, String) {
    let values = |per: usize, from: usize| -> String {
        let rows: Vec<String> = (0..n)
            .map(|i| {
                let at = from + per * i;
                let row: Vec<String> = (at..at + per).map(|k| format!("?{k}")).collect();
                format!("({})", row.join(", "))
            })
            .collect();
        rows.join(", ")
    };
    let log = format!(
        "INSERT OR FAIL INTO attempts (delivery_id, number, trigger, started_at, duration_ms, status_code, error, \
         response_body) SELECT d.id, d.attempt_count + 1, v.column1, v.column2, v.column3, v.column4, v.column5, \
         v.column6 FROM (VALUES {}) AS v JOIN deliveries d ON d.seq = v.column7 AND d.id = v.column8",
        values(8, 1)
    );
    let advance = format!(
        "UPDATE OR FAIL deliveries SET {} FROM (VALUES {}) AS v WHERE deliveries.seq = v.column5 AND deliveries.id = v.column6",
        advance_columns("v.column1", "v.column2", "v.column3", "v.column4"),
        values(6, 2)
    );
    (log, advance)
}

/// What recording an attempt sets on its delivery, `?1` being now and the others the names given: `lease` the
/// lease the attempt was made under, `scheduled` the scheduled attempts to add, `status` and `next` what the
/// retry policy decided. A result under the delivery's lease sets that, except that a failed attempt of a
/// delivery that had settled before a manual retry goes back to its settled status (see [`KEEP_SETTLED`]); a
/// success under a lost lease is kept in `settled`, so a failure under the live one does not undo it, and ends
/// an `undeliverable` status. Anything else is only counted.
fn advance_columns(lease: &str, scheduled: &str, status: &str, next: &str) -> String {
    let owned = format!("lease_token = {lease}");
    let back = format!("{status} <> 'succeeded' AND settled IS NOT NULL");
    format!(
        "attempt_count = attempt_count + 1, updated_at = ?1, \
         scheduled_count = scheduled_count + CASE WHEN {owned} THEN {scheduled} ELSE 0 END, \
         status = CASE WHEN {owned} THEN CASE WHEN {back} THEN settled ELSE {status} END \
           WHEN {status} = 'succeeded' AND status = 'undeliverable' THEN {status} ELSE status END, \
         next_attempt_at = CASE WHEN {owned} THEN CASE WHEN {back} THEN NULL ELSE {next} END ELSE next_attempt_at END, \
         run_at = CASE WHEN {owned} THEN CASE WHEN {back} THEN NULL ELSE {next} END ELSE run_at END, \
         settled = CASE WHEN {owned} THEN NULL WHEN {status} = 'succeeded' THEN {status} ELSE settled END, \
         lease_until = CASE WHEN {owned} THEN NULL ELSE lease_until END, \
         manual = CASE WHEN {owned} THEN 0 ELSE manual END, \
         lease_token = CASE WHEN {owned} THEN NULL ELSE lease_token END"
    )
}

/// The writer's connection as its writes see it: the connection itself, and the [`Hot`] statements.
pub struct Tx<'c> {
    connection: &'c Connection,
    hot: [RefCell<Option<Statement<'c>>>; Hot::COUNT],
}

impl<'c> Tx<'c> {
    fn new(connection: &'c Connection) -> Self {
        Self { connection, hot: Default::default() }
    }

    /// One of the hot statements, prepared on first use. Two may be in use at once, not the same one twice.
    fn hot(&self, which: Hot) -> Result<RefMut<'_, Statement<'c>>> {
        let slot = self.hot[which as usize]
            .try_borrow_mut()
            .map_err(|_| StoreError::Corrupt("a prepared statement was asked for while in use".into()))?;
        let mut slot = match RefMut::filter_map(slot, Option::as_mut) {
            Ok(statement) => return Ok(statement),
            Err(empty) => empty,
        };
        // Persistent, as rusqlite's cache prepares them: a statement kept for good that held lookaside memory
        // would leave too little of it for every other statement's values.
        *slot = Some(self.connection.prepare_with_flags(&which.sql(), PrepFlags::SQLITE_PREPARE_PERSISTENT)?);
        Ok(RefMut::map(slot, |s| s.as_mut().expect("just prepared")))
    }
}

impl Deref for Tx<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        self.connection
    }
}

/// The embedded store.
pub struct SqliteStore {
    /// Writes waiting for the writer thread.
    jobs: mpsc::Sender<Box<dyn Job>>,
    readers: Arc<Readers>,
    /// This process's workers, when it runs any: new deliveries are leased and handed to them.
    handoff: Option<Arc<Handoff>>,
    /// Set once a sync of the log has failed: the store takes no more writes ([`sync_loop`]).
    sync_failed: Arc<AtomicBool>,
}

/// Reader connections: at most [`READERS`] in use at once, kept open between reads.
struct Readers {
    path: String,
    idle: Mutex<Vec<Connection>>,
    /// Bounds the connections in use, so a burst of reads waits for one instead of opening more.
    permits: tokio::sync::Semaphore,
}

impl Readers {
    fn take(&self) -> Result<Connection> {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match idle {
            Some(connection) => Ok(connection),
            None => connect(&self.path),
        }
    }

    fn give_back(&self, connection: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < READERS {
            idle.push(connection);
        }
    }
}

fn connect(path: &str) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let connection = Connection::open_with_flags(path, flags)?;
    connection.busy_timeout(Duration::from_secs(10))?;
    // FULL: a transaction is on disk when COMMIT returns, so an acknowledged write survives power loss. (The
    // writer alone commits with NORMAL, and syncs on a thread of its own before it answers: see `sync_loop`.)
    connection.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")?;
    // An 8 MiB page cache per connection keeps the hot end of the tables and indexes in memory; the operating
    // system's cache holds the rest. (16 MiB ran no faster, and cost 8 MiB more resident memory for each
    // connection that filled it.) The checkpointer thread copies the log into the database file as it grows;
    // the writer checkpoints too once the log holds 16 MiB (then little is left to copy), which lets the next
    // write start the log over from the beginning.
    // Savepoints journal the pages they change: in memory, not in a temporary file.
    connection
        .execute_batch("PRAGMA cache_size = -8192; PRAGMA wal_autocheckpoint = 4000; PRAGMA temp_store = MEMORY;")?;
    connection.set_prepared_statement_cache_capacity(64);
    Ok(connection)
}

fn migrate(connection: &mut Connection) -> Result<()> {
    connection.execute_batch("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY)")?;
    let mut any_ran = false;
    for (version, sql) in MIGRATIONS {
        let tx = connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let done: Option<i64> = tx
            .query_row("SELECT version FROM schema_migrations WHERE version = ?", [version], |r| r.get(0))
            .optional()?;
        if done.is_none() {
            tx.execute_batch(sql)?;
            tx.execute("INSERT INTO schema_migrations (version) VALUES (?)", [version])?;
            any_ran = true;
        }
        tx.commit()?;
    }
    if any_ran {
        // A migration that copies tables leaves a log as large as they are: copied into the database file and
        // cut back once all have run, rather than kept at that size on disk.
        connection.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    }
    Ok(())
}

/// The writer thread: waits for a write, takes every other one waiting (the workers' first), runs them in one
/// transaction for up to [`WRITE_TIME`], commits once, tells the checkpointer, and hands those it ran to the
/// syncer, which answers them once the commit is on disk. The rest wait for the next transaction, ahead of later
/// writes. The writer stops when the syncer has (a sync failed): nothing more can be acknowledged.
fn write_loop(
    connection: Connection,
    jobs: mpsc::Receiver<Box<dyn Job>>,
    committed: mpsc::SyncSender<()>,
    synced: mpsc::Sender<Committed>,
    sync_failed: Arc<AtomicBool>,
) {
    let tx = Tx::new(&connection);
    let (mut first, mut rest) = (VecDeque::new(), VecDeque::new());
    loop {
        // Nothing left from the last transaction: wait for a write.
        let arrived = if first.is_empty() && rest.is_empty() {
            match jobs.recv() {
                Ok(job) => Some(job),
                Err(_) => return,
            }
        } else {
            None
        };
        for job in arrived.into_iter().chain(jobs.try_iter()) {
            if job.first() { first.push_back(job) } else { rest.push_back(job) }
        }
        // A sync failed: nothing more is run, so nothing more can be committed and left unanswered.
        if sync_failed.load(Ordering::SeqCst) {
            return fail(first.into_iter().chain(rest));
        }
        let mut batch: Vec<Box<dyn Job>> = first.drain(..).collect();
        let room = WRITE_BATCH.saturating_sub(batch.len()).min(rest.len());
        batch.extend(rest.drain(..room));
        let (commit_error, not_run) = run_batch(&tx, &mut batch);
        for job in not_run.into_iter().rev() {
            rest.push_front(job);
        }
        // Full when the checkpointer has already been told.
        let _ = committed.try_send(());
        if let Err(mpsc::SendError(Committed { batch, .. })) = synced.send(Committed { batch, commit_error }) {
            return fail(batch.into_iter().chain(first).chain(rest));
        }
    }
}

/// A transaction the writer has committed, and the writes run in it, to be answered once it is on disk.
struct Committed {
    batch: Vec<Box<dyn Job>>,
    commit_error: Option<String>,
}

/// What a write is answered when the log could not be synced, before or after it ran.
const SYNC_FAILED: &str = "the write-ahead log could not be synced to disk; the store takes no more writes";

/// Answers writes with [`SYNC_FAILED`].
fn fail(jobs: impl IntoIterator<Item = Box<dyn Job>>) {
    for job in jobs {
        job.finish(Some(SYNC_FAILED));
    }
}

/// The syncer thread: syncs the log to disk, then answers the writes of every transaction committed before the
/// sync began. Meanwhile the writer runs the next transaction, so a write waits for one sync, not for the sync
/// and the statements of the transactions before it; one sync covers every commit made while the last ran.
///
/// The writer commits with `synchronous = NORMAL`: SQLite writes the log but does not sync it, and syncs it
/// itself only before a checkpoint copies it into the database file. A crash keeps a prefix of the committed
/// transactions (SQLite reads the log up to its first torn or missing frame), and that prefix holds every one
/// this thread answered. A write can be read by others in the moment between its commit and its sync.
///
/// A failed sync leaves it unknown what is on disk: the writes are answered with an error, and the thread
/// stops, which stops the writer. The writer runs nothing more once it sees the failure; a transaction it was
/// already running may still commit, and is answered with the error too. The store's health check fails from
/// then on.
fn sync_loop(log: std::fs::File, committed: mpsc::Receiver<Committed>, sync_failed: Arc<AtomicBool>) {
    while let Ok(one) = committed.recv() {
        let mut all = vec![one];
        all.extend(committed.try_iter());
        let failed = log.sync_data().err();
        if let Some(error) = &failed {
            sync_failed.store(true, Ordering::SeqCst);
            tracing::error!(%error, "cannot sync the write-ahead log; the store takes no more writes");
        }
        for Committed { batch, commit_error } in all {
            let error = if failed.is_some() { Some(SYNC_FAILED) } else { commit_error.as_deref() };
            for job in batch {
                job.finish(error);
            }
        }
        if failed.is_some() {
            // What the writer committed meanwhile is answered too, not dropped unanswered.
            return fail(committed.try_iter().flat_map(|c| c.batch));
        }
    }
}

/// The checkpointer thread: after each write it hears of, copies the committed log into the database file,
/// then rests. Copying takes milliseconds of writing and two syncs; on the writer thread every write waiting
/// would wait for it. PASSIVE waits for no one: it copies what no reader still needs, and does nothing while
/// the writer's own checkpoint runs.
fn checkpoint_loop(connection: Connection, committed: mpsc::Receiver<()>) {
    while committed.recv().is_ok() {
        if let Err(error) = connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(%error, "cannot copy the write-ahead log into the database file");
        }
        std::thread::sleep(CHECKPOINT_REST);
    }
}

/// Runs a batch of writes in one transaction and commits it; answers the commit's error, if any, and the writes
/// it left for the next transaction: those after [`WRITE_TIME`] had passed since the first of them that does
/// not go first (and those after a write that failed).
/// Writes almost always succeed, so they first run side by side with nothing in between. If one fails, that
/// transaction is rolled back and the batch runs again with each write in a savepoint of its own, so the one
/// that fails is undone alone. (A savepoint around every write would copy each page it touches, on every
/// write: a tenth of the writer's time.) For the same reason the statements run for every webhook say
/// `OR FAIL`: no statement is ever undone alone, so SQLite need not journal the pages each one changes. An error
/// that rolls back the whole transaction even so (SQLite does for some I/O errors and a full disk) fails the
/// writes run in it, and leaves the rest for the next transaction.
fn run_batch(connection: &Tx<'_>, batch: &mut Vec<Box<dyn Job>>) -> (Option<String>, Vec<Box<dyn Job>>) {
    let mut not_run = Vec::new();
    if connection.execute_batch("BEGIN IMMEDIATE").is_ok() {
        // Timed from the first of the writes that do not go first, so those always get their share however
        // long the workers' writes took.
        let mut started: Option<Instant> = None;
        let (mut ran, mut failed) = (0, false);
        for job in batch.iter_mut() {
            if !job.first() {
                started.get_or_insert_with(Instant::now);
            }
            ran += 1;
            if !job.run(connection) {
                failed = true;
                break;
            }
            if started.is_some_and(|at| at.elapsed() >= WRITE_TIME) {
                break;
            }
        }
        not_run = batch.split_off(ran);
        if !failed {
            return (commit(connection), not_run);
        }
        let _ = connection.execute_batch("ROLLBACK");
    }
    let in_transaction = connection.execute_batch("BEGIN IMMEDIATE").is_ok();
    for index in 0..batch.len() {
        // Outside a transaction (BEGIN failed) a savepoint is a transaction of its own.
        let _ = run_cached(connection, "SAVEPOINT job");
        if !batch[index].run(connection) {
            if in_transaction && connection.is_autocommit() {
                // The whole transaction is gone, and the writes run in it with it: they fail, the rest wait.
                let mut rest = batch.split_off(index + 1);
                rest.append(&mut not_run);
                return (Some("the transaction was rolled back by an error".into()), rest);
            }
            let _ = run_cached(connection, "ROLLBACK TO job");
        }
        let _ = run_cached(connection, "RELEASE job");
    }
    (if in_transaction { commit(connection) } else { None }, not_run)
}

/// Commits the open transaction; answers its error after rolling back.
fn commit(connection: &Connection) -> Option<String> {
    connection.execute_batch("COMMIT").err().map(|e| {
        let _ = connection.execute_batch("ROLLBACK");
        e.to_string()
    })
}

/// The file a `--database` value names: a plain path, or a `sqlite:` / `sqlite://` URL (any `?options` ignored).
fn file_path(database: &str) -> &str {
    let path = database.strip_prefix("sqlite://").or_else(|| database.strip_prefix("sqlite:")).unwrap_or(database);
    if database.starts_with("sqlite:") { path.split('?').next().unwrap_or(path) } else { path }
}

/// The write-ahead log of the database at `path`, opened for [`sync_loop`]. It exists once a connection has
/// run a transaction, and stays while one is open. Its folder is synced too, once, so the file itself survives a
/// crash: SQLite would sync it on its first sync of a new log, and the writer leaves the syncs to this.
fn open_log(path: &str) -> Result<std::fs::File> {
    let log_path = format!("{path}-wal");
    let cannot = |e: std::io::Error| StoreError::Start(format!("cannot open the write-ahead log {log_path}: {e}"));
    let log = std::fs::File::open(&log_path).map_err(cannot)?;
    let folder = std::path::Path::new(&log_path).parent().filter(|p| !p.as_os_str().is_empty());
    std::fs::File::open(folder.unwrap_or(std::path::Path::new("."))).and_then(|f| f.sync_all()).map_err(cannot)?;
    Ok(log)
}

/// Runs a statement without parameters, prepared once per connection.
fn run_cached(connection: &Connection, sql: &str) -> rusqlite::Result<usize> {
    connection.prepare_cached(sql)?.execute([])
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `database` (a path or a `sqlite:` URL) and migrates it.
    pub async fn open(database: &str, handoff: Option<Arc<Handoff>>) -> Result<Self> {
        let path = file_path(database).to_owned();
        let writer_path = path.clone();
        let (writer, checkpointer) = tokio::task::spawn_blocking(move || -> Result<(Connection, Connection)> {
            let mut connection = connect(&writer_path)?;
            migrate(&mut connection)?;
            Ok((connection, connect(&writer_path)?))
        })
        .await
        .map_err(|_| StoreError::Closed)??;
        // SQLite's own name for the database file (links resolved): its log is beside it.
        let log = open_log(writer.path().filter(|p| !p.is_empty()).unwrap_or(&path))?;
        writer.execute_batch("PRAGMA synchronous = NORMAL")?;
        let (jobs, receiver) = mpsc::channel();
        let (committed, heard) = mpsc::sync_channel(1);
        let (to_sync, synced) = mpsc::channel();
        let thread = |name: &str| std::thread::Builder::new().name(format!("sqlite-{name}"));
        let cannot_start = |e: std::io::Error| StoreError::Start(format!("no thread for the store: {e}"));
        thread("checkpt").spawn(move || checkpoint_loop(checkpointer, heard)).map_err(cannot_start)?;
        let sync_failed = Arc::new(AtomicBool::new(false));
        let failed = sync_failed.clone();
        thread("sync").spawn(move || sync_loop(log, synced, failed)).map_err(cannot_start)?;
        let failed = sync_failed.clone();
        thread("writer")
            .spawn(move || write_loop(writer, receiver, committed, to_sync, failed))
            .map_err(cannot_start)?;
        let readers = Readers { path, idle: Mutex::new(Vec::new()), permits: tokio::sync::Semaphore::new(READERS) };
        Ok(Self { jobs, readers: Arc::new(readers), handoff, sync_failed })
    }

    /// Runs `f` on the writer thread, in the next group transaction; answers once that has committed. `f` may
    /// run more than once (see [`run_batch`]).
    async fn write<T: Send + 'static>(&self, mut f: impl FnMut(&Tx<'_>) -> Result<T> + Send + 'static) -> Result<T> {
        // It makes no deliveries, so it reserves nothing in the handoff.
        self.submit(false, None, move |c, _| f(c)).await
    }

    /// Like [`Self::write`], for the workers' writes (claims, releases, results): it goes ahead of the writes
    /// waiting ([`Job::first`]).
    async fn write_first<T: Send + 'static>(
        &self,
        mut f: impl FnMut(&Tx<'_>) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.submit(true, None, move |c, _| f(c)).await
    }

    /// Like [`Self::write`], for a write that makes deliveries: `f` may lease them to this process's workers
    /// under the reservation it is given, whose claims are handed over as soon as the transaction commits
    /// (on the writer thread, so they are handed over even if the caller has stopped waiting).
    async fn write_handing_off<T: Send + 'static>(
        &self,
        f: impl FnMut(&Tx<'_>, &mut Reservation) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.submit(false, self.handoff.clone(), f).await
    }

    /// Queues a write for the writer thread and waits for its answer; `first` as [`Job::first`] says.
    async fn submit<T: Send + 'static>(
        &self,
        first: bool,
        handoff: Option<Arc<Handoff>>,
        f: impl FnMut(&Tx<'_>, &mut Reservation) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (answer, answered) = oneshot::channel();
        let job = Write { f, first, handoff, outcome: None, answer };
        self.jobs.send(Box::new(job)).map_err(|_| StoreError::Closed)?;
        answered.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs `f` on a reader connection.
    async fn read<T: Send + 'static>(&self, f: impl FnOnce(&Connection) -> Result<T> + Send + 'static) -> Result<T> {
        let permit = self.readers.permits.acquire().await.map_err(|_| StoreError::Closed)?;
        let readers = self.readers.clone();
        let result = tokio::task::spawn_blocking(move || {
            let connection = readers.take()?;
            let result = f(&connection);
            readers.give_back(connection);
            result
        })
        .await
        .map_err(|_| StoreError::Closed)?;
        drop(permit);
        result
    }
}

fn endpoint(row: &Row) -> rusqlite::Result<EndpointRecord> {
    let types: String = row.get(4)?;
    let event_types = serde_json::from_str(&types)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(4, Type::Text, Box::new(e)))?;
    Ok(EndpointRecord {
        seq: row.get(0)?,
        id: row.get(1)?,
        url: row.get(2)?,
        description: row.get(3)?,
        event_types,
        enabled: row.get(5)?,
        secret: SecretString::from(row.get::<_, String>(6)?),
        previous_secret: row.get::<_, Option<String>>(7)?.map(SecretString::from),
        previous_secret_until: row.get(8)?,
        created_at: row.get(9)?,
        updated_at: row.get(10)?,
    })
}

fn delivery(row: &Row) -> rusqlite::Result<DeliveryRecord> {
    let status: String = row.get(4)?;
    let status = DeliveryStatus::parse(&status).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(4, Type::Text, format!("unknown status {status}").into())
    })?;
    Ok(DeliveryRecord {
        seq: row.get(0)?,
        id: row.get(1)?,
        event_id: row.get(2)?,
        endpoint_id: row.get(3)?,
        status,
        attempt_count: row.get(5)?,
        next_attempt_at: row.get(6)?,
        created_at: row.get(7)?,
        updated_at: row.get(8)?,
    })
}

fn event(row: &Row) -> rusqlite::Result<EventRecord> {
    Ok(EventRecord {
        seq: row.get(0)?,
        id: row.get(1)?,
        event_type: row.get(2)?,
        payload: row.get(3)?,
        created_at: row.get(4)?,
    })
}

fn attempt(row: &Row) -> rusqlite::Result<AttemptRecord> {
    Ok(AttemptRecord {
        number: row.get(0)?,
        trigger: Trigger::parse(&row.get::<_, String>(1)?),
        started_at: row.get(2)?,
        duration_ms: row.get(3)?,
        status_code: row.get(4)?,
        error: row.get(5)?,
        response_body: row.get(6)?,
    })
}

/// Inserts an event and its deliveries. Deliveries to enabled endpoints are leased to this process while
/// `reservation` has room, and their claims added to it; the rest wait in the queue for any worker.
fn insert_event(
    c: &Tx<'_>,
    org: &str,
    event_type: &str,
    payload: &str,
    fanout: &Fanout,
    now: Millis,
    reservation: &mut Reservation,
) -> Result<EventRecord> {
    let id = ids::new_id(ids::EVENT);
    c.hot(Hot::InsertEvent)?.execute(params![id, org, event_type, payload, now])?;
    let seq = c.last_insert_rowid();
    let (mut targets, target) = match fanout {
        Fanout::Subscribed => (c.hot(Hot::SubscribedEndpoints)?, event_type),
        Fanout::Endpoint(endpoint) => (c.hot(Hot::OneEndpoint)?, endpoint.as_str()),
    };
    // One copy of the body for every claim of this event.
    let body = reservation.has_room().then(|| Bytes::copy_from_slice(payload.as_bytes()));
    let mut room = reservation.room();
    let mut deliveries = Vec::new();
    let mut rows = targets.query(params![org, target])?;
    while let Some(row) = rows.next()? {
        let endpoint_id: String = row.get(0)?;
        let enabled: bool = row.get(1)?;
        // Leased to this process while the reservation has room, and due again (for any worker) only when the
        // lease runs out; the rest wait in the queue.
        let leased = match &body {
            Some(body) if enabled && room > 0 => {
                room -= 1;
                let secrets = signing_secrets(row.get(3)?, row.get(4)?, row.get(5)?, now);
                Some(Leased { url: row.get(2)?, payload: body.clone(), secrets })
            }
            _ => None,
        };
        deliveries.push(NewDelivery { id: ids::new_id(ids::DELIVERY), endpoint_id, leased });
    }
    let mut deliveries = deliveries.into_iter().peekable();
    while deliveries.peek().is_some() {
        let (n, statement) = Hot::insert_deliveries(deliveries.len());
        let chunk: Vec<NewDelivery> = deliveries.by_ref().take(n).collect();
        let mut insert = c.hot(statement)?;
        insert.raw_bind_parameter(1, org)?;
        insert.raw_bind_parameter(2, &id)?;
        insert.raw_bind_parameter(3, now)?;
        for (i, delivery) in chunk.iter().enumerate() {
            let at = 4 + DELIVERY_VALUES * i;
            let (run_at, lease) = match delivery.leased {
                Some(_) => (reservation.until, Some((reservation.until, reservation.token.as_str()))),
                None => (now, None),
            };
            insert.raw_bind_parameter(at, &delivery.id)?;
            insert.raw_bind_parameter(at + 1, &delivery.endpoint_id)?;
            insert.raw_bind_parameter(at + 2, run_at)?;
            insert.raw_bind_parameter(at + 3, lease.map(|(until, _)| until))?;
            insert.raw_bind_parameter(at + 4, lease.map(|(_, token)| token))?;
        }
        insert.raw_execute()?;
        // The rows of one statement take consecutive numbers, the last one's known.
        let first = c.last_insert_rowid() - chunk.len() as i64 + 1;
        for (i, delivery) in chunk.into_iter().enumerate() {
            match delivery.leased {
                Some(Leased { url, payload, secrets }) => reservation.push(Handed {
                    delivery_id: delivery.id,
                    row: first + i as i64,
                    event_id: id.clone(),
                    endpoint_id: delivery.endpoint_id,
                    url,
                    payload,
                    secrets,
                }),
                None => reservation.leave_for_queue(),
            }
        }
    }
    Ok(EventRecord { seq, id, event_type: event_type.to_owned(), payload: payload.to_owned(), created_at: now })
}

/// Writes the results of distinct deliveries with the statements for their number ([`result_rows`]).
fn write_results(c: &Tx<'_>, results: &[AttemptResult], log: Hot, advance: Hot, now: Millis) -> Result<()> {
    let (mut log, mut advance) = (c.hot(log)?, c.hot(advance)?);
    advance.raw_bind_parameter(1, now)?;
    for (i, result) in results.iter().enumerate() {
        let a = &result.attempt;
        let at = 1 + 8 * i;
        log.raw_bind_parameter(at, a.trigger.as_str())?;
        log.raw_bind_parameter(at + 1, a.started_at)?;
        log.raw_bind_parameter(at + 2, a.duration_ms)?;
        log.raw_bind_parameter(at + 3, a.status_code)?;
        log.raw_bind_parameter(at + 4, &a.error)?;
        log.raw_bind_parameter(at + 5, &a.response_body)?;
        log.raw_bind_parameter(at + 6, result.row)?;
        log.raw_bind_parameter(at + 7, &result.delivery_id)?;
        let (status, next_at) = next_columns(result.next);
        let at = 2 + 6 * i;
        advance.raw_bind_parameter(at, &result.lease_token)?;
        advance.raw_bind_parameter(at + 1, i64::from(a.trigger == Trigger::Scheduled))?;
        advance.raw_bind_parameter(at + 2, status)?;
        advance.raw_bind_parameter(at + 3, next_at)?;
        advance.raw_bind_parameter(at + 4, result.row)?;
        advance.raw_bind_parameter(at + 5, &result.delivery_id)?;
    }
    log.raw_execute()?;
    advance.raw_execute()?;
    Ok(())
}

/// A delivery [`insert_event`] is about to write.
struct NewDelivery {
    id: String,
    endpoint_id: String,
    /// What its claim needs, when it is leased to this process.
    leased: Option<Leased>,
}

struct Leased {
    url: String,
    payload: Bytes,
    secrets: Vec<SecretString>,
}

/// Refuses a write for an organization that does not exist (the tables written per webhook check no
/// foreign keys).
fn check_organization(c: &Connection, org: &str) -> Result<()> {
    let known = c.prepare_cached("SELECT 1 FROM organizations WHERE id = ?")?.exists([org])?;
    if known { Ok(()) } else { Err(StoreError::UnknownOrganization(org.to_owned())) }
}

/// Reads, diffs and writes one interview update, with its event when something changed.
fn apply_update(
    c: &Tx<'_>,
    org: &str,
    candidate_id: &str,
    patch: &InterviewPatch,
    reservation: &mut Reservation,
) -> Result<InterviewUpdate> {
    let now = now_ms();
    let stored: Option<String> = c
        .hot(Hot::ReadInterview)?
        .query_row(params![org, candidate_id], |r| r.get(0))
        .optional()?
        .ok_or_else(|| StoreError::UnknownOrganization(org.to_owned()))?;
    let existed = stored.is_some();
    let current = match &stored {
        Some(text) => stored_interview(text, candidate_id)?,
        None => Interview::empty(candidate_id),
    };
    let applied = current.apply(patch);
    if existed && applied.event_body.is_none() {
        return Ok(InterviewUpdate { data: applied.data, event: None });
    }
    c.hot(Hot::UpsertInterview)?.execute(params![org, candidate_id, applied.data, now])?;
    let event = match &applied.event_body {
        Some(body) => Some(insert_event(c, org, interview::EVENT_TYPE, body, &Fanout::Subscribed, now, reservation)?),
        None => None,
    };
    Ok(InterviewUpdate { data: applied.data, event })
}

/// One newest-first page of `org`'s rows of `table` (`seq` is the cursor): up to `limit + 1` rows, so
/// [`Page::from_rows`] can tell whether there is more.
fn org_page<T>(
    c: &Connection,
    columns: &str,
    table: &str,
    org: &str,
    page: PageRequest,
    read: fn(&Row) -> rusqlite::Result<T>,
) -> Result<Vec<T>> {
    let sql = format!("SELECT {columns} FROM {table} WHERE org_id = ? AND seq < ? ORDER BY seq DESC LIMIT ?");
    let before = page.before.unwrap_or(i64::MAX);
    let mut statement = c.prepare_cached(&sql)?;
    let rows = statement.query_map(params![org, before, i64::from(page.limit) + 1], read)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

fn get_endpoint(c: &Connection, org: &str, id: &str) -> Result<Option<EndpointRecord>> {
    let sql = format!("SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE org_id = ? AND id = ?");
    Ok(c.prepare_cached(&sql)?.query_row(params![org, id], endpoint).optional()?)
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<()> {
        if self.sync_failed.load(Ordering::SeqCst) {
            return Err(StoreError::Closed);
        }
        self.read(|c| Ok(c.query_row("SELECT 1", [], |_| Ok(()))?)).await
    }

    async fn create_org(&self, name: &str, key_hash: &str) -> Result<String> {
        let (name, key_hash) = (name.to_owned(), key_hash.to_owned());
        self.write(move |c| {
            let id = ids::new_id(ids::ORG);
            let now = now_ms();
            c.execute("INSERT INTO organizations (id, name, created_at) VALUES (?, ?, ?)", params![id, name, now])?;
            c.execute(
                "INSERT INTO api_keys (key_hash, org_id, created_at) VALUES (?, ?, ?)",
                params![key_hash, id, now],
            )?;
            Ok(id)
        })
        .await
    }

    async fn org_for_key(&self, key_hash: &str) -> Result<Option<String>> {
        let key_hash = key_hash.to_owned();
        self.read(move |c| {
            Ok(c.prepare_cached("SELECT org_id FROM api_keys WHERE key_hash = ?")?
                .query_row([key_hash], |r| r.get(0))
                .optional()?)
        })
        .await
    }

    async fn create_endpoint(&self, org: &str, new: NewEndpoint) -> Result<EndpointRecord> {
        let org = org.to_owned();
        self.write(move |c| {
            let now = now_ms();
            let types = serde_json::to_string(&new.event_types).unwrap_or_else(|_| "[]".into());
            let sql = format!(
                "INSERT INTO endpoints (id, org_id, url, description, event_types, enabled, secret, created_at, \
                 updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING {ENDPOINT_COLUMNS}"
            );
            let id = ids::new_id(ids::ENDPOINT);
            let secret = new.secret.expose_secret();
            let args = params![id, org, new.url, new.description, types, new.enabled, secret, now, now];
            Ok(c.prepare_cached(&sql)?.query_row(args, endpoint)?)
        })
        .await
    }

    async fn list_endpoints(&self, org: &str, page: PageRequest) -> Result<Page<EndpointRecord>> {
        let org = org.to_owned();
        self.read(move |c| {
            let rows = org_page(c, ENDPOINT_COLUMNS, "endpoints", &org, page, endpoint)?;
            Ok(Page::from_rows(rows, page.limit, |e| e.seq))
        })
        .await
    }

    async fn get_endpoint(&self, org: &str, id: &str) -> Result<Option<EndpointRecord>> {
        let (org, id) = (org.to_owned(), id.to_owned());
        self.read(move |c| get_endpoint(c, &org, &id)).await
    }

    async fn update_endpoint(&self, org: &str, id: &str, changes: EndpointChanges) -> Result<Option<EndpointRecord>> {
        let (org, id) = (org.to_owned(), id.to_owned());
        self.write(move |c| {
            let types = changes.event_types.as_ref().map(|t| serde_json::to_string(t).unwrap_or_else(|_| "[]".into()));
            let sql = format!(
                "UPDATE endpoints SET url = COALESCE(?, url), description = COALESCE(?, description), \
                 event_types = COALESCE(?, event_types), enabled = COALESCE(?, enabled), updated_at = ? \
                 WHERE org_id = ? AND id = ? RETURNING {ENDPOINT_COLUMNS}"
            );
            let args = params![changes.url, changes.description, types, changes.enabled, now_ms(), org, id];
            Ok(c.prepare_cached(&sql)?.query_row(args, endpoint).optional()?)
        })
        .await
    }

    async fn delete_endpoint(&self, org: &str, id: &str) -> Result<bool> {
        let (org, id) = (org.to_owned(), id.to_owned());
        self.write(move |c| {
            if c.execute("DELETE FROM endpoints WHERE org_id = ? AND id = ?", params![org, id])? == 0 {
                return Ok(false);
            }
            // In the same transaction as the endpoint, on the one writer: no delivery can be made for it or
            // recorded in between.
            c.execute(
                "DELETE FROM attempts WHERE delivery_id IN (SELECT id FROM deliveries WHERE endpoint_id = ?)",
                [&id],
            )?;
            c.execute("DELETE FROM deliveries WHERE endpoint_id = ?", [&id])?;
            Ok(true)
        })
        .await
    }

    async fn rotate_secret(
        &self,
        org: &str,
        id: &str,
        secret: SecretString,
        previous_until: Millis,
    ) -> Result<Option<EndpointRecord>> {
        let (org, id) = (org.to_owned(), id.to_owned());
        self.write(move |c| {
            let sql = format!(
                "UPDATE endpoints SET previous_secret = secret, previous_secret_until = ?, secret = ?, \
                 updated_at = ? WHERE org_id = ? AND id = ? RETURNING {ENDPOINT_COLUMNS}"
            );
            let args = params![previous_until, secret.expose_secret(), now_ms(), org, id];
            Ok(c.prepare_cached(&sql)?.query_row(args, endpoint).optional()?)
        })
        .await
    }

    async fn update_interview(&self, org: &str, candidate_id: &str, patch: &InterviewPatch) -> Result<InterviewUpdate> {
        let (org, candidate_id, patch) = (org.to_owned(), candidate_id.to_owned(), patch.clone());
        // One writer thread applies updates in order, so updates of one candidate are serialized.
        self.write_handing_off(move |c, reservation| apply_update(c, &org, &candidate_id, &patch, reservation)).await
    }

    async fn get_interview(&self, org: &str, candidate_id: &str) -> Result<Option<Interview>> {
        let (org, candidate_id) = (org.to_owned(), candidate_id.to_owned());
        self.read(move |c| {
            let stored: Option<String> = c
                .prepare_cached("SELECT data FROM interviews WHERE org_id = ? AND candidate_id = ?")?
                .query_row(params![org, candidate_id], |r| r.get(0))
                .optional()?;
            stored.map(|text| stored_interview(&text, &candidate_id)).transpose()
        })
        .await
    }

    async fn create_event(
        &self,
        org: &str,
        event_type: &str,
        payload: &str,
        fanout: Fanout,
    ) -> Result<(EventRecord, Vec<DeliveryRecord>)> {
        let (org, event_type, payload) = (org.to_owned(), event_type.to_owned(), payload.to_owned());
        self.write_handing_off(move |c, reservation| {
            check_organization(c, &org)?;
            let event = insert_event(c, &org, &event_type, &payload, &fanout, now_ms(), reservation)?;
            let sql = format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE event_id = ? ORDER BY seq");
            let deliveries =
                c.prepare_cached(&sql)?.query_map([&event.id], delivery)?.collect::<rusqlite::Result<Vec<_>>>()?;
            Ok((event, deliveries))
        })
        .await
    }

    async fn list_events(&self, org: &str, page: PageRequest) -> Result<Page<EventRecord>> {
        let org = org.to_owned();
        self.read(move |c| {
            let rows = org_page(c, EVENT_COLUMNS, "events", &org, page, event)?;
            Ok(Page::from_rows(rows, page.limit, |e| e.seq))
        })
        .await
    }

    async fn get_event(&self, org: &str, id: &str) -> Result<Option<EventRecord>> {
        let (org, id) = (org.to_owned(), id.to_owned());
        self.read(move |c| {
            let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE org_id = ? AND id = ?");
            Ok(c.prepare_cached(&sql)?.query_row(params![org, id], event).optional()?)
        })
        .await
    }

    async fn event_types(&self, org: &str, event_ids: &[String]) -> Result<HashMap<String, String>> {
        let org = org.to_owned();
        let ids = serde_json::to_string(event_ids).unwrap_or_else(|_| "[]".into());
        self.read(move |c| {
            let mut statement = c.prepare_cached(
                "SELECT id, type FROM events WHERE org_id = ?1 AND id IN (SELECT value FROM json_each(?2))",
            )?;
            let rows = statement.query_map(params![org, ids], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<rusqlite::Result<HashMap<_, _>>>()?)
        })
        .await
    }

    async fn list_deliveries(
        &self,
        org: &str,
        filter: &DeliveryFilter,
        page: PageRequest,
    ) -> Result<Page<DeliveryRecord>> {
        let (org, filter) = (org.to_owned(), filter.clone());
        self.read(move |c| {
            let (conditions, values) = filter.conditions(|n| format!("?{n}"));
            let limit = 3 + values.len();
            let sql = format!(
                "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE org_id = ?1 AND seq < ?2{conditions} \
                 ORDER BY seq DESC LIMIT ?{limit}"
            );
            let mut args: Vec<rusqlite::types::Value> = vec![org.into(), page.before.unwrap_or(i64::MAX).into()];
            args.extend(values.into_iter().map(rusqlite::types::Value::from));
            args.push((i64::from(page.limit) + 1).into());
            let rows = c
                .prepare_cached(&sql)?
                .query_map(rusqlite::params_from_iter(args), delivery)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(Page::from_rows(rows, page.limit, |d| d.seq))
        })
        .await
    }

    async fn get_delivery(&self, org: &str, id: &str) -> Result<Option<(DeliveryRecord, Vec<AttemptRecord>)>> {
        let (org, id) = (org.to_owned(), id.to_owned());
        self.read(move |c| {
            let sql = format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE org_id = ? AND id = ?");
            let Some(found) = c.prepare_cached(&sql)?.query_row(params![org, id], delivery).optional()? else {
                return Ok(None);
            };
            let attempts = c
                .prepare_cached(
                    "SELECT number, trigger, started_at, duration_ms, status_code, error, response_body \
                     FROM attempts WHERE delivery_id = ? ORDER BY seq",
                )?
                .query_map([&id], attempt)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(Some((found, attempts)))
        })
        .await
    }

    async fn request_retry(&self, org: &str, id: &str) -> Result<Option<DeliveryRecord>> {
        let (org, id) = (org.to_owned(), id.to_owned());
        self.write(move |c| {
            let sql = format!(
                "UPDATE deliveries SET status = 'pending', settled = {KEEP_SETTLED}, manual = 1, run_at = ?1, \
                 next_attempt_at = ?1, lease_until = NULL, lease_token = NULL, updated_at = ?1 \
                 WHERE org_id = ?2 AND id = ?3 RETURNING {DELIVERY_COLUMNS}"
            );
            Ok(c.prepare_cached(&sql)?.query_row(params![now_ms(), org, id], delivery).optional()?)
        })
        .await
    }

    async fn last_deliveries(&self, org: &str, endpoint_ids: &[String]) -> Result<Vec<DeliveryRecord>> {
        let org = org.to_owned();
        let endpoint_ids = serde_json::to_string(endpoint_ids).unwrap_or_else(|_| "[]".into());
        self.read(move |c| {
            // One correlated subquery per endpoint, each answered from deliveries_by_endpoint (endpoint_id, seq).
            let sql = format!(
                "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE seq IN ( \
                   SELECT (SELECT d.seq FROM deliveries d WHERE d.endpoint_id = e.value AND d.org_id = ?1 \
                           ORDER BY d.seq DESC LIMIT 1) \
                   FROM json_each(?2) e)"
            );
            let mut statement = c.prepare_cached(&sql)?;
            let rows = statement.query_map(params![org, endpoint_ids], delivery)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn claim_due(&self, now: Millis, lease_until: Millis, limit: u32, exclude: &[String]) -> Result<Vec<Claim>> {
        let exclude = serde_json::to_string(exclude).unwrap_or_else(|_| "[]".into());
        self.write_first(move |c| {
            let token = ids::new_id("lease");
            let claimed = c
                .prepare_cached(
                    "UPDATE deliveries SET lease_until = ?1, lease_token = ?2 WHERE seq IN ( \
                       SELECT d.seq FROM deliveries d \
                       WHERE d.run_at IS NOT NULL AND d.run_at <= ?3 \
                         AND (d.lease_until IS NULL OR d.lease_until <= ?3) \
                         AND d.endpoint_id NOT IN (SELECT value FROM json_each(?4)) \
                         AND EXISTS (SELECT 1 FROM endpoints e WHERE e.id = d.endpoint_id AND e.enabled = 1) \
                       ORDER BY d.run_at LIMIT ?5) \
                     RETURNING seq, id, event_id, endpoint_id, scheduled_count, manual",
                )?
                .query_map(params![lease_until, token, now, exclude, i64::from(limit)], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get::<_, i64>(4)?, r.get(5)?))
                })?
                .collect::<rusqlite::Result<Vec<(i64, String, String, String, i64, bool)>>>()?;
            if claimed.is_empty() {
                return Ok(Vec::new());
            }
            // What the claims need of their events and endpoints, read once for each: a fan-out claims many
            // deliveries of one event, and a queue holds many of one endpoint.
            let mut bodies = SharedBodies::default();
            let mut targets: HashMap<String, (String, Vec<SecretString>)> = HashMap::new();
            let mut claims = Vec::with_capacity(claimed.len());
            for (seq, delivery_id, event_id, endpoint_id, scheduled_count, manual) in claimed {
                let payload = bodies.share(&event_id, || {
                    c.prepare_cached("SELECT payload FROM events WHERE id = ?")?
                        .query_row([&event_id], |r| r.get::<_, String>(0))
                        .map(Bytes::from)
                })?;
                let (url, secrets) = match targets.get(&endpoint_id) {
                    Some(target) => target.clone(),
                    None => {
                        let target = c
                            .prepare_cached(
                                "SELECT url, secret, previous_secret, previous_secret_until FROM endpoints WHERE id = ?",
                            )?
                            .query_row([&endpoint_id], |r| {
                                Ok((r.get::<_, String>(0)?, signing_secrets(r.get(1)?, r.get(2)?, r.get(3)?, now)))
                            })?;
                        targets.insert(endpoint_id.clone(), target.clone());
                        target
                    }
                };
                claims.push(Claim {
                    delivery_id,
                    row: seq,
                    lease_token: token.clone(),
                    lease_until,
                    secrets,
                    event_id,
                    endpoint_id,
                    url,
                    payload,
                    scheduled_count: scheduled_count.max(0) as u32,
                    trigger: if manual { Trigger::Manual } else { Trigger::Scheduled },
                });
            }
            Ok(claims)
        })
        .await
    }

    async fn release(&self, claims: &[Claim]) -> Result<()> {
        let held: Vec<(String, String)> =
            claims.iter().map(|c| (c.delivery_id.clone(), c.lease_token.clone())).collect();
        self.write_first(move |c| {
            // A handed-off delivery was queued for the end of its lease: due now instead.
            let mut release = c.prepare_cached(
                "UPDATE deliveries SET lease_until = NULL, lease_token = NULL, run_at = min(run_at, ?1) \
                 WHERE id = ?2 AND lease_token = ?3",
            )?;
            let now = now_ms();
            for (id, token) in &held {
                release.execute(params![now, id, token])?;
            }
            Ok(())
        })
        .await
    }

    async fn record_attempts(&self, results: Arc<[AttemptResult]>) -> Result<()> {
        // Each result holds a slot of the attempts in flight until it is written.
        self.write_first(move |c| {
            let now = now_ms();
            // Runs of results for distinct deliveries, each written by statements of 32, 8 and 1 results.
            let mut rest: &[AttemptResult] = &results;
            while !rest.is_empty() {
                let mut seen = std::collections::HashSet::new();
                let run = rest.iter().take_while(|r| seen.insert(r.row)).count();
                let (mut chunk, after) = rest.split_at(run);
                rest = after;
                while !chunk.is_empty() {
                    let (n, log, advance) = Hot::write_results(chunk.len());
                    let (these, after) = chunk.split_at(n);
                    chunk = after;
                    write_results(c, these, log, advance, now)?;
                }
            }
            Ok(())
        })
        .await
    }

    async fn seed_history(&self, org: &str, endpoint_id: &str, count: u64) -> Result<()> {
        let (org, endpoint_id) = (org.to_owned(), endpoint_id.to_owned());
        self.write(move |c| {
            let then = now_ms() - 86_400_000;
            c.execute(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1) \
                 INSERT INTO events (id, org_id, type, payload, created_at) \
                 SELECT 'evt_' || printf('%012x', ?3) || lower(hex(randomblob(6))), ?2, \
                        'candidate.interview.updated', '{}', ?3 FROM n",
                params![count as i64, org, then],
            )?;
            c.execute(
                "INSERT INTO deliveries (id, org_id, event_id, endpoint_id, status, attempt_count, scheduled_count, \
                 created_at, updated_at) \
                 SELECT 'dlv_' || printf('%012x', created_at) || lower(hex(randomblob(6))), org_id, id, ?1, \
                        'succeeded', 1, 1, created_at, created_at \
                 FROM events WHERE org_id = ?2 AND payload = '{}' AND created_at = ?3",
                params![endpoint_id, org, then],
            )?;
            Ok(())
        })
        .await?;
        // A service that built up this history over time has long since copied it from the WAL into the
        // database; leave it that way rather than to the first commits measured after it. The checkpointer may
        // be copying at the moment (the checkpoint then answers busy without waiting): try again shortly.
        self.read(|c| {
            for _ in 0..500 {
                let busy: bool = c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
                if !busy {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(())
        })
        .await
    }

    async fn next_due_after(&self, now: Millis) -> Result<Option<Millis>> {
        self.read(move |c| {
            Ok(c.prepare_cached("SELECT MIN(run_at) FROM deliveries WHERE run_at > ?")?
                .query_row([now], |r| r.get(0))?)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, mpsc};

    use super::{Committed, Job, SYNC_FAILED, SqliteStore, Tx, connect, file_path, migrate, sync_loop, write_loop};
    use crate::store::{Fanout, Store};

    /// The bundled SQLite is built as `.cargo/config.toml` asks: without memory management (each page cache
    /// keeps its own pages, under no shared lock) and without memory statistics (no lock around every
    /// allocation).
    #[test]
    fn sqlite_is_built_without_shared_page_caches_or_memory_statistics() {
        let dir = tempfile::tempdir().unwrap();
        let connection = connect(dir.path().join("t.db").to_str().unwrap()).unwrap();
        let options: Vec<String> = connection
            .prepare("PRAGMA compile_options")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert!(options.iter().any(|o| o == "DEFAULT_MEMSTATUS=0"), "{options:?}");
        assert!(!options.iter().any(|o| o == "ENABLE_MEMORY_MANAGEMENT"), "{options:?}");
    }

    #[tokio::test]
    async fn the_log_is_copied_into_the_database_file_long_before_the_writer_would() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let store = SqliteStore::open(path.to_str().unwrap(), None).await.unwrap();
        let size = || std::fs::metadata(&path).unwrap().len();
        let log = || std::fs::metadata(format!("{}-wal", path.display())).map(|m| m.len()).unwrap_or(0);
        // The migrations' own checkpoint copied the schema into the file and cut the log back.
        assert_eq!(log(), 0);
        let before = size();
        let org = store.create_org("acme", "key-hash").await.unwrap();
        let padding = "x".repeat(3000);
        for n in 0..20 {
            let payload = format!("{{\"n\":{n},\"padding\":\"{padding}\"}}");
            store.create_event(&org, "test", &payload, Fanout::Subscribed).await.unwrap();
        }
        // A page per event in the log, far below the writer's 4,000: only the checkpointer copies them now.
        let deadline = Instant::now() + Duration::from_secs(10);
        while size() < before + 10 * 4096 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(size() >= before + 10 * 4096, "the database file holds {} bytes, {before} before", size());
        assert!(store.org_for_key("key-hash").await.unwrap().is_some());
    }

    /// A write that only reports how it was answered.
    struct Probe(std::sync::mpsc::Sender<Option<String>>);

    impl Job for Probe {
        fn run(&mut self, _: &Tx<'_>) -> bool {
            true
        }

        fn first(&self) -> bool {
            false
        }

        fn finish(self: Box<Self>, error: Option<&str>) {
            let _ = self.0.send(error.map(str::to_owned));
        }
    }

    fn committed(probes: &mpsc::Sender<Option<String>>, commit_error: Option<&str>) -> Committed {
        Committed { batch: vec![Box::new(Probe(probes.clone()))], commit_error: commit_error.map(str::to_owned) }
    }

    #[test]
    fn the_syncer_answers_each_commit_after_syncing_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(dir.path().join("t.db-wal")).unwrap();
        let (to_sync, synced) = mpsc::channel();
        let (probes, answers) = mpsc::channel();
        to_sync.send(committed(&probes, None)).unwrap();
        to_sync.send(committed(&probes, Some("disk full"))).unwrap();
        drop(to_sync);
        sync_loop(log, synced, Arc::new(AtomicBool::new(false)));
        assert_eq!(answers.try_iter().collect::<Vec<_>>(), [None, Some("disk full".to_owned())]);
    }

    #[test]
    fn a_failed_sync_fails_its_writes_and_stops_the_syncer() {
        // A pipe cannot be synced: the call fails as a failing disk's would.
        let (pipe, _other_end) = std::io::pipe().unwrap();
        let log = std::fs::File::from(std::os::fd::OwnedFd::from(pipe));
        let (to_sync, synced) = mpsc::channel();
        let (probes, answers) = mpsc::channel();
        to_sync.send(committed(&probes, None)).unwrap();
        let failed = Arc::new(AtomicBool::new(false));
        sync_loop(log, synced, failed.clone());
        assert_eq!(answers.try_recv().unwrap().as_deref(), Some(SYNC_FAILED));
        assert!(failed.load(Ordering::SeqCst), "the writer and the health check are not told");
        assert!(to_sync.send(committed(&probes, None)).is_err(), "the syncer still listens");
    }

    /// Runs the writer over `writes` writes, with a syncer that is gone or has failed, until the writer stops;
    /// answers how the writes were answered, and whether a transaction reached the syncer.
    fn run_writer_until_it_stops(writes: usize, syncer_gone: bool, failed: bool) -> (Vec<Option<String>>, bool) {
        let dir = tempfile::tempdir().unwrap();
        let mut connection = connect(dir.path().join("t.db").to_str().unwrap()).unwrap();
        migrate(&mut connection).unwrap();
        let (jobs, waiting) = mpsc::channel::<Box<dyn Job>>();
        let (checkpointer, _heard) = mpsc::sync_channel(1);
        let (to_sync, synced) = mpsc::channel();
        let synced = (!syncer_gone).then_some(synced);
        let (probes, answers) = mpsc::channel();
        for _ in 0..writes {
            jobs.send(Box::new(Probe(probes.clone()))).unwrap();
        }
        write_loop(connection, waiting, checkpointer, to_sync, Arc::new(AtomicBool::new(failed)));
        assert!(jobs.send(Box::new(Probe(probes))).is_err(), "the writer still takes writes");
        let committed = synced.is_some_and(|s| s.try_recv().is_ok());
        (answers.try_iter().collect(), committed)
    }

    #[test]
    fn after_a_failed_sync_the_writer_runs_nothing_more() {
        // The syncer is still there to hear, but has failed.
        let (answers, committed) = run_writer_until_it_stops(1, false, true);
        assert_eq!(answers, [Some(SYNC_FAILED.to_owned())]);
        assert!(!committed, "a transaction was committed after the failure");
    }

    #[test]
    fn the_writer_stops_once_the_syncer_has() {
        let (answers, _) = run_writer_until_it_stops(3, true, false);
        assert_eq!(answers, vec![Some(SYNC_FAILED.to_owned()); 3]);
    }

    /// A database named through a symbolic link has its log beside the file linked to, where SQLite puts it:
    /// the syncer syncs that one.
    #[tokio::test]
    async fn a_linked_database_is_synced_where_its_log_is() {
        let dir = tempfile::tempdir().unwrap();
        let (real, link) = (dir.path().join("real.db"), dir.path().join("link.db"));
        std::fs::File::create(&real).unwrap();
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let store = SqliteStore::open(link.to_str().unwrap(), None).await.expect("opens through the link");
        store.create_org("acme", "key-hash").await.unwrap();
        assert!(dir.path().join("real.db-wal").exists(), "the log is beside the file linked to");
        assert!(!dir.path().join("link.db-wal").exists(), "no log beside the link");
        assert!(store.org_for_key("key-hash").await.unwrap().is_some());
    }

    #[test]
    fn database_values_name_files() {
        assert_eq!(file_path("tidings.db"), "tidings.db");
        assert_eq!(file_path("/var/lib/tidings/t.db"), "/var/lib/tidings/t.db");
        assert_eq!(file_path("sqlite:tidings.db"), "tidings.db");
        assert_eq!(file_path("sqlite://tidings.db?mode=rwc"), "tidings.db");
        assert_eq!(file_path("sqlite:///var/lib/t.db"), "/var/lib/t.db");
        assert_eq!(file_path("odd?name.db"), "odd?name.db");
    }
}
