//! Delivery workers: claim due deliveries in batches under a lease, send them, record every attempt, and
//! schedule the next one or finish.
//!
//! Deliveries this process wrote come from the store's handoff and are started by a task of their own; the
//! rest (retries, deliveries written elsewhere or beyond the handoff's room) by one claim loop per process.
//! Bounds on in-flight attempts (overall and per endpoint) keep one slow receiver from taking every slot.
//! Results go to a recorder task that writes them in batches, one transaction per batch (a group commit), so
//! the disk is synced once for many attempts.

pub mod sender;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::domain::retry::{Next, RetryPolicy};
use crate::domain::time::{Millis, now_ms};
use crate::metrics::Metrics;
use crate::store::{AttemptResult, Claim, Handoff, Store, Trigger};
pub use sender::Sender;

/// Most deliveries claimed in one query.
const CLAIM_BATCH: usize = 128;
/// Fewest free slots worth a claim query while other attempts are in flight.
const CLAIM_MIN: usize = 16;
/// Most attempt results written in one transaction.
const RECORD_BATCH: usize = 512;
/// How long the recorder waits for more results before writing a batch that is not full. Recording does not
/// delay delivery, only the freeing of the slot.
const RECORD_LINGER: Duration = Duration::from_millis(2);
/// How much longer than the attempt timeout a claim is held: time to record the result.
const LEASE_MARGIN: Duration = Duration::from_secs(10);
/// The least time left on a handed-off claim's lease, beyond the attempt timeout, for it to be started.
const START_MARGIN: Duration = Duration::from_secs(1);

/// How long a claim is held: past it, any process may take the delivery again. Longer than any attempt can
/// take, so a live worker's claim never expires under it.
pub fn lease_for(attempt_timeout: Duration) -> Duration {
    attempt_timeout + LEASE_MARGIN
}

/// Tunables of the workers, taken from the service configuration.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub max_in_flight: usize,
    pub endpoint_concurrency: usize,
    pub attempt_timeout: Duration,
    pub poll_interval: Duration,
    /// Shared by every attempt's task rather than copied into each.
    pub retry: Arc<RetryPolicy>,
}

/// How many attempts, per slot of `max_in_flight`, may be claimed and not yet recorded: those in flight and
/// those answered whose results wait for the store's next group commit. A slot is free again once its request
/// is answered, rather than once its result is written, while results waiting stay within this bound.
const UNRECORDED_PER_SLOT: usize = 2;

/// Attempts in flight in this process.
#[derive(Default)]
struct InFlight {
    /// Claimed and not yet recorded: what a crash could make repeat, bounded by [`UNRECORDED_PER_SLOT`] times
    /// `max_in_flight`.
    total: usize,
    /// Claimed and not yet answered: the requests open, bounded by `max_in_flight`.
    requests: usize,
    /// Requests open to each endpoint, bounded by `endpoint_concurrency` to spare the receiver.
    per_endpoint: HashMap<String, usize>,
}

impl InFlight {
    /// How many more attempts may start: open requests below `max_in_flight`, and results not yet recorded
    /// below their bound.
    fn free(&self, max_in_flight: usize) -> usize {
        let unrecorded = (UNRECORDED_PER_SLOT * max_in_flight).saturating_sub(self.total);
        max_in_flight.saturating_sub(self.requests).min(unrecorded)
    }

    /// Takes a slot for `claim` if one is free ([`Self::free`]) and its endpoint has one free.
    fn admit(&mut self, claim: &Claim, endpoint_concurrency: usize, max_in_flight: usize) -> bool {
        if self.free(max_in_flight) == 0 {
            return false;
        }
        let count = self.per_endpoint.entry(claim.endpoint_id.clone()).or_insert(0);
        if *count >= endpoint_concurrency {
            return false;
        }
        *count += 1;
        self.total += 1;
        self.requests += 1;
        true
    }

    /// An endpoint answered (or failed): its request slot is free.
    fn answered(&mut self, endpoint_id: &str) {
        self.requests = self.requests.saturating_sub(1);
        if let Some(count) = self.per_endpoint.get_mut(endpoint_id) {
            *count -= 1;
            if *count == 0 {
                self.per_endpoint.remove(endpoint_id);
            }
        }
    }
}

/// The attempts in flight, even if a task panicked while holding them (the counts stay usable).
fn lock(in_flight: &Mutex<InFlight>) -> std::sync::MutexGuard<'_, InFlight> {
    in_flight.lock().unwrap_or_else(|e| e.into_inner())
}

/// The delivery side of a process.
pub struct Dispatcher {
    store: Arc<dyn Store>,
    sender: Sender,
    config: WorkerConfig,
    /// Rung when the store may hold due work this process has not claimed (another process's notice, a
    /// manual retry, a retry recorded) and, while the last claim was short of slots, when one frees: the claim
    /// loop never waits for a poll interval when there is work, and does not query when there is none.
    wake: Arc<Notify>,
    /// Whether the last claim was cut short by the slots in flight (or skipped for want of them), so that a
    /// freed slot is worth another query.
    backlog: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    in_flight: Arc<Mutex<InFlight>>,
    /// Deliveries the store leased to this process as they were written, started by [`Starter`].
    handoff: Option<Arc<Handoff>>,
}

impl Dispatcher {
    pub fn new(
        store: Arc<dyn Store>,
        sender: Sender,
        config: WorkerConfig,
        wake: Arc<Notify>,
        metrics: Arc<Metrics>,
        handoff: Option<Arc<Handoff>>,
    ) -> Self {
        let backlog = Arc::new(AtomicBool::new(true));
        Self { store, sender, config, wake, backlog, metrics, in_flight: Arc::default(), handoff }
    }

    fn lease(&self) -> Millis {
        lease_for(self.config.attempt_timeout).as_millis() as Millis
    }

    fn in_flight(&self) -> std::sync::MutexGuard<'_, InFlight> {
        lock(&self.in_flight)
    }

    /// Runs until `shutdown` is cancelled, then stops claiming, lets attempts in flight finish and records
    /// them.
    pub async fn run(self, shutdown: CancellationToken) {
        let (results, receiver) = mpsc::channel::<AttemptResult>(RECORD_BATCH * 4);
        let recorder = tokio::spawn(record_loop(self.store.clone(), receiver, self.metrics.clone(), self.slots()));
        let watcher = {
            let (store, wake, stop) = (self.store.clone(), self.wake.clone(), shutdown.clone());
            tokio::spawn(async move { store.watch_for_work(wake, stop).await })
        };
        let starter = self.handoff.clone().map(|handoff| {
            let starter = Starter {
                handoff,
                attempt: self.attempt(&results),
                max_in_flight: self.config.max_in_flight,
                endpoint_concurrency: self.config.endpoint_concurrency,
                attempt_timeout: self.config.attempt_timeout,
            };
            tokio::spawn(starter.run(shutdown.clone()))
        });
        let mut tasks = tokio::task::JoinSet::new();
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            // Reap finished tasks so the set does not grow.
            while tasks.try_join_next().is_some() {}
            let (free, exclude) = self.capacity();
            let mut claimed = 0;
            let claimed_at = now_ms();
            if free > 0 {
                match self.claim(claimed_at, free.min(CLAIM_BATCH), &exclude).await {
                    Ok(claims) => {
                        claimed = claims.len();
                        // Claims over an endpoint's bound may go back to the store: from now on a freed slot is
                        // worth a look, unless none did (then only full endpoints may still hold work back).
                        self.backlog.store(true, Ordering::SeqCst);
                        if !self.dispatch(claims, &results, &mut tasks).await {
                            self.backlog.store(!exclude.is_empty(), Ordering::SeqCst);
                        }
                    }
                    Err(error) => {
                        tracing::error!(%error, "claiming deliveries failed");
                    }
                }
            }
            if free > 0 && claimed == free.min(CLAIM_BATCH) {
                continue; // there may be more due right now
            }
            let wait = self.idle_wait(free > 0, claimed_at).await;
            let left_for_queue = async {
                match &self.handoff {
                    Some(handoff) => handoff.left_for_queue().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.wake.notified() => {}
                _ = left_for_queue => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
        if let Some(handoff) = &self.handoff {
            // Not started: due again now rather than when their leases run out.
            let queued = handoff.close();
            if !queued.is_empty()
                && let Err(error) = self.store.release(&queued).await
            {
                tracing::warn!(%error, count = queued.len(), "giving back handed-off deliveries failed");
            }
        }
        let drain = self.config.attempt_timeout + Duration::from_secs(5);
        let _ = tokio::time::timeout(drain, async { while tasks.join_next().await.is_some() {} }).await;
        if let Some(starter) = starter {
            let _ = starter.await;
        }
        drop(results);
        let _ = recorder.await;
        let _ = watcher.await;
    }

    /// The slots worth claiming for (none while only a few are free: attempts in flight will free more soon,
    /// and one query claims for several then), and the endpoints that have no free slot. Whether either limits
    /// what can be claimed is left in [`Self::backlog`] before the lock is let go, so any slot freed after this
    /// reading wakes the loop again.
    fn capacity(&self) -> (usize, Vec<String>) {
        let in_flight = self.in_flight();
        let mut free = in_flight.free(self.config.max_in_flight);
        // A small `--max-in-flight` still claims once a quarter of it is free.
        let worth_a_query = CLAIM_MIN.min(self.config.max_in_flight / 4).max(1);
        if free < worth_a_query && free < self.config.max_in_flight {
            free = 0;
        }
        let full: Vec<String> = in_flight
            .per_endpoint
            .iter()
            .filter(|(_, n)| **n >= self.config.endpoint_concurrency)
            .map(|(id, _)| id.clone())
            .collect();
        self.backlog.store(free == 0 || !full.is_empty(), Ordering::SeqCst);
        (free, full)
    }

    async fn claim(
        &self,
        now: Millis,
        limit: usize,
        exclude: &[String],
    ) -> Result<Vec<Claim>, crate::store::StoreError> {
        self.store.claim_due(now, now + self.lease(), limit as u32, exclude).await
    }

    /// Starts a task per claim that fits the bounds: the slots may have been taken since they were counted (by
    /// the handoff's starter), and the claim's endpoint may be at its own bound. The rest wait in the
    /// handoff's queue for a slot, or, when it is full (or there is none), are given back at once. Answers
    /// whether any were.
    async fn dispatch(
        &self,
        claims: Vec<Claim>,
        results: &mpsc::Sender<AttemptResult>,
        tasks: &mut tokio::task::JoinSet<()>,
    ) -> bool {
        let mut overflow = Vec::new();
        for claim in claims {
            if self.in_flight().admit(&claim, self.config.endpoint_concurrency, self.config.max_in_flight) {
                self.start(claim, results, tasks);
            } else {
                overflow.push(claim);
            }
        }
        if let Some(handoff) = &self.handoff {
            overflow = handoff.requeue(overflow);
        }
        if !overflow.is_empty()
            && let Err(error) = self.store.release(&overflow).await
        {
            // Their leases run out and they come due again; nothing is lost.
            tracing::warn!(%error, count = overflow.len(), "releasing claims over an endpoint's bound failed");
        }
        !overflow.is_empty()
    }

    /// What an attempt's task needs.
    fn attempt(&self, results: &mpsc::Sender<AttemptResult>) -> Attempt {
        Attempt {
            sender: self.sender.clone(),
            retry: self.config.retry.clone(),
            results: results.clone(),
            slots: self.slots(),
        }
    }

    fn slots(&self) -> Slots {
        Slots {
            in_flight: self.in_flight.clone(),
            wake: self.wake.clone(),
            backlog: self.backlog.clone(),
            handoff: self.handoff.clone(),
        }
    }

    /// Starts the attempt of a claim that has its slots.
    fn start(&self, claim: Claim, results: &mpsc::Sender<AttemptResult>, tasks: &mut tokio::task::JoinSet<()>) {
        tasks.spawn(self.attempt(results).run(claim));
    }

    /// How long to sleep when there is nothing to claim now: until the next scheduled retry, at most one poll
    /// interval (a wake-up cuts it short). `claimed_at` is the time the last claim looked for due work: work
    /// that came due since then is found too, and claimed at once.
    async fn idle_wait(&self, could_claim: bool, claimed_at: Millis) -> Duration {
        let poll = self.config.poll_interval;
        if !could_claim {
            return poll;
        }
        match self.store.next_due_after(claimed_at).await {
            Ok(Some(at)) => Duration::from_millis((at - now_ms()).max(1) as u64).min(poll),
            Ok(None) => poll,
            Err(error) => {
                tracing::error!(%error, "reading the next due time failed");
                poll
            }
        }
    }
}

/// Starts handed-off deliveries as soon as they are queued and have slots, on a task of its own so they never
/// wait behind the claim loop's queries.
struct Starter {
    handoff: Arc<Handoff>,
    attempt: Attempt,
    max_in_flight: usize,
    endpoint_concurrency: usize,
    attempt_timeout: Duration,
}

impl Starter {
    async fn run(self, shutdown: CancellationToken) {
        let mut tasks = tokio::task::JoinSet::new();
        loop {
            while tasks.try_join_next().is_some() {}
            for claim in self.take() {
                tasks.spawn(self.attempt.clone().run(claim));
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.handoff.ready() => {}
            }
        }
        let drain = self.attempt_timeout + Duration::from_secs(5);
        let _ = tokio::time::timeout(drain, async { while tasks.join_next().await.is_some() {} }).await;
    }

    /// The queued claims there are slots for, their slots taken.
    fn take(&self) -> Vec<Claim> {
        let mut in_flight = lock(&self.attempt.slots.in_flight);
        let free = in_flight.free(self.max_in_flight);
        if free == 0 {
            return Vec::new();
        }
        let (per_endpoint, most) = (self.endpoint_concurrency, self.max_in_flight);
        self.handoff.take(free, self.attempt_timeout + START_MARGIN, |claim| in_flight.admit(claim, per_endpoint, most))
    }
}

/// One attempt's task, with what it needs once the claim loop has moved on.
#[derive(Clone)]
struct Attempt {
    sender: Sender,
    retry: Arc<RetryPolicy>,
    results: mpsc::Sender<AttemptResult>,
    slots: Slots,
}

/// The attempts in flight, and who is told when one's slot frees.
#[derive(Clone)]
struct Slots {
    in_flight: Arc<Mutex<InFlight>>,
    /// The claim loop's: rung for a freed slot only while it is short of slots ([`Dispatcher::backlog`]), and
    /// by the recorder for a recorded retry.
    wake: Arc<Notify>,
    backlog: Arc<AtomicBool>,
    /// Rung for handed-off claims waiting for a slot.
    handoff: Option<Arc<Handoff>>,
}

impl Slots {
    /// A slot may have freed: the handoff may start more, and so may the claim loop if it was short of slots.
    fn freed(&self) {
        if self.backlog.load(Ordering::SeqCst) {
            self.wake.notify_one();
        }
        if let Some(handoff) = &self.handoff {
            handoff.ring();
        }
    }
}

impl Attempt {
    async fn run(self, claim: Claim) {
        let attempt = self.sender.send(&claim).await;
        lock(&self.slots.in_flight).answered(&claim.endpoint_id);
        self.slots.freed();
        let scheduled = claim.scheduled_count + u32::from(claim.trigger == Trigger::Scheduled);
        let next = self.retry.next(attempt.error.is_none(), scheduled, now_ms());
        if attempt.error.is_some() {
            tracing::info!(
                delivery.id = %claim.delivery_id,
                endpoint.id = %claim.endpoint_id,
                error = attempt.error.as_deref().unwrap_or(""),
                status_code = attempt.status_code,
                duration_ms = attempt.duration_ms,
                "attempt failed"
            );
        }
        let result = AttemptResult {
            delivery_id: claim.delivery_id,
            row: claim.row,
            lease_token: claim.lease_token,
            attempt,
            next,
        };
        // The recorder only stops after every sender is dropped, so this cannot fail while we hold one.
        // It counts among the unrecorded until it is written, so a crash can repeat at most twice
        // `max_in_flight` attempts.
        let _ = self.results.send(result).await;
    }
}

/// Writes attempt results in batches until every sender is gone. A batch that cannot be written is tried
/// again; if the store stays down, the leases run out and the deliveries are attempted again later.
async fn record_loop(
    store: Arc<dyn Store>,
    mut receiver: mpsc::Receiver<AttemptResult>,
    metrics: Arc<Metrics>,
    slots: Slots,
) {
    let mut batch = Vec::with_capacity(RECORD_BATCH);
    while receiver.recv_many(&mut batch, RECORD_BATCH).await > 0 {
        // Results come back one by one; a moment's wait gathers the ones close behind into the same write.
        let linger = tokio::time::Instant::now() + RECORD_LINGER;
        while batch.len() < RECORD_BATCH {
            let room = RECORD_BATCH - batch.len();
            match tokio::time::timeout_at(linger, receiver.recv_many(&mut batch, room)).await {
                Ok(n) if n > 0 => {}
                _ => break,
            }
        }
        let results: Arc<[AttemptResult]> = batch.drain(..).collect();
        let mut tries = 0;
        loop {
            match store.record_attempts(results.clone()).await {
                Ok(()) => break,
                Err(error) if results.len() > 1 && error.refused() => {
                    // One result the database refuses must not keep the others unrecorded (and their receivers
                    // sent the same webhooks again): each is written on its own. (Not when the store is out of
                    // reach: each write would wait for it in turn.)
                    tracing::warn!(%error, count = results.len(), "recording attempts failed; recording them one by one");
                    for result in results.iter() {
                        if let Err(error) = store.record_attempts(Arc::new([result.clone()])).await {
                            tracing::error!(%error, delivery.id = %result.delivery_id, "recording an attempt failed; its lease will expire");
                        }
                    }
                    break;
                }
                Err(error) if tries < 5 && !error.refused() => {
                    tries += 1;
                    tracing::warn!(%error, tries, "recording attempts failed; trying again");
                    tokio::time::sleep(Duration::from_millis(100 * tries)).await;
                }
                Err(error) => {
                    tracing::error!(%error, count = results.len(), "recording attempts failed; their leases will expire");
                    break;
                }
            }
        }
        for result in results.iter() {
            metrics.attempt_recorded(&result.attempt, result.next);
        }
        {
            let mut in_flight = lock(&slots.in_flight);
            in_flight.total = in_flight.total.saturating_sub(results.len());
        }
        // A recorded retry changes when work is next due: the claim loop looks again.
        if results.iter().any(|r| matches!(r.next, Next::RetryAt(_))) {
            slots.wake.notify_one();
        }
        slots.freed();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use secrecy::SecretString;
    use tokio::sync::Notify;

    use super::{Dispatcher, InFlight, Sender, WorkerConfig};
    use crate::domain::retry::RetryPolicy;
    use crate::domain::time::now_ms;
    use crate::metrics::Metrics;
    use crate::store::sqlite::SqliteStore;
    use crate::store::{Claim, Fanout, NewEndpoint, Store};

    fn claim(endpoint: &str) -> Claim {
        Claim::for_test(endpoint, "http://127.0.0.1:9/hook", Vec::new())
    }

    /// A slot frees when its request is answered, not when its result is written; results waiting to be
    /// written hold starts back once they reach twice the slots.
    #[test]
    fn slots_free_on_answers_while_unrecorded_results_stay_bounded() {
        let mut in_flight = InFlight::default();
        assert_eq!(in_flight.free(2), 2);
        assert!(in_flight.admit(&claim("ep_a"), 64, 2) && in_flight.admit(&claim("ep_b"), 64, 2));
        assert_eq!(in_flight.free(2), 0, "two requests open");
        assert!(!in_flight.admit(&claim("ep_c"), 64, 2), "no slot is free");
        in_flight.answered("ep_a");
        assert_eq!(in_flight.free(2), 1, "an answer frees its slot before its result is written");
        assert!(in_flight.admit(&claim("ep_a"), 64, 2));
        in_flight.answered("ep_a");
        in_flight.answered("ep_b");
        assert_eq!(in_flight.free(2), 1, "three results unwritten: one more may start");
        assert!(in_flight.admit(&claim("ep_a"), 64, 2));
        assert_eq!(in_flight.free(2), 0, "four claimed and unwritten, though only one request is open");
        assert!(!in_flight.admit(&claim("ep_b"), 64, 2), "the unwritten results hold starts back");
        in_flight.total -= 3;
        assert_eq!(in_flight.free(2), 1);
    }

    /// A delivery that came due after the last claim looked for work, and before the loop chose how long to
    /// sleep, is claimed at once: the loop does not sleep a poll interval past it (a retry due 50 ms after its
    /// failure was once missed so, when a slow claim query ended after the retry's time).
    #[tokio::test]
    async fn work_due_since_the_claim_looked_is_not_slept_past() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("t.db").to_str().unwrap(), None).await.unwrap();
        let org = store.create_org("acme", "key-hash").await.unwrap();
        let endpoint = NewEndpoint {
            url: "http://127.0.0.1:9/hook".into(),
            description: String::new(),
            event_types: vec!["test".into()],
            enabled: true,
            secret: SecretString::from("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned()),
        };
        store.create_endpoint(&org, endpoint).await.unwrap();
        // The claim looked just before the delivery was written, which is due from then on: by the time the
        // loop chooses its wait, it is due (or comes due within the millisecond).
        let claimed_at = now_ms() - 1;
        let (_, deliveries) = store.create_event(&org, "test", "{}", Fanout::Subscribed).await.unwrap();
        assert_eq!(deliveries.len(), 1);

        let poll_interval = Duration::from_secs(3600);
        let config = WorkerConfig {
            max_in_flight: 4,
            endpoint_concurrency: 4,
            attempt_timeout: Duration::from_secs(1),
            poll_interval,
            retry: Arc::new(RetryPolicy { schedule: Vec::new(), jitter: 0.0 }),
        };
        let sender = Sender::new(config.attempt_timeout, true, 1);
        let metrics = Arc::new(Metrics::new());
        let dispatcher = Dispatcher::new(Arc::new(store), sender, config, Arc::new(Notify::new()), metrics, None);
        let wait = dispatcher.idle_wait(true, claimed_at).await;
        assert!(wait < poll_interval, "the loop would sleep {wait:?} past a due delivery");
    }
}
