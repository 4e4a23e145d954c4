//! Fresh deliveries handed straight to this process's workers. When a process runs both the API and the
//! workers, the transaction that writes an event also leases its new deliveries to this process, and once it
//! has committed their claims go to the local dispatcher in memory: no claim query, no second write of the
//! row before its attempt.
//!
//! Durability is unchanged: a handed-off delivery is committed like any other, leased as if claimed, and due
//! again when its lease runs out, so a crash delays it by one lease and loses nothing. The queue is bounded;
//! once it is full, new deliveries are written unleased and claimed from the store as before.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use secrecy::SecretString;
use tokio::sync::Notify;

use super::{Claim, Trigger};
use crate::domain::ids;
use crate::domain::time::{Millis, now_ms};

/// Most queued claims passed over in one [`Handoff::take`].
const SCAN: usize = 256;

/// The queue between ingest and the local dispatcher.
pub struct Handoff {
    /// Most claims queued or reserved at once.
    capacity: usize,
    /// How long a handed-off delivery is leased: long enough to wait in the queue and make its attempt.
    lease: Millis,
    state: Mutex<State>,
    /// Closed at shutdown: deliveries written from then on are left for the store's queue.
    open: AtomicBool,
    /// Rung when claims are queued and when a slot to start one may have freed.
    ready: Notify,
    /// Rung when a committed write left deliveries for the store's queue, for want of room here.
    left: Notify,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Claim>,
    /// Places promised to transactions not yet committed.
    reserved: usize,
}

/// A delivery just written leased under a reservation: what its claim needs beyond the lease.
pub struct Handed {
    pub delivery_id: String,
    /// [`Claim::row`].
    pub row: i64,
    pub event_id: String,
    pub endpoint_id: String,
    pub url: String,
    /// The event's body, shared by every claim of the event.
    pub payload: Bytes,
    pub secrets: Vec<SecretString>,
}

/// Places in the queue promised to one transaction: it leases at most this many of its deliveries. Places
/// not filled go back when the reservation is dropped, whether the transaction committed or not.
pub struct Reservation {
    handoff: Option<Arc<Handoff>>,
    places: usize,
    /// The lease of every delivery handed off by this transaction.
    pub token: String,
    pub until: Millis,
    /// The claims made so far, queued on [`Reservation::commit`].
    claims: Vec<Claim>,
    /// Whether the transaction also wrote deliveries it did not lease, for the store's queue.
    left: bool,
}

impl Handoff {
    pub fn new(capacity: usize, lease: Duration) -> Self {
        Self {
            capacity,
            lease: lease.as_millis() as Millis,
            state: Mutex::default(),
            open: AtomicBool::new(true),
            ready: Notify::new(),
            left: Notify::new(),
        }
    }

    /// Waits until claims may be ready to start.
    pub async fn ready(&self) {
        self.ready.notified().await;
    }

    /// Says that a slot may have freed, so queued claims waiting for one can be looked at again.
    pub fn ring(&self) {
        self.ready.notify_one();
    }

    /// Resolves once a committed write has left deliveries for the store's queue: the dispatcher claims them.
    pub async fn left_for_queue(&self) {
        self.left.notified().await;
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Promises one write its share of the free places, for `writers` such writes that may run at once: every
    /// place for SQLite's one writer, half for each of PostgreSQL's two committers, so the other finds room too.
    /// Each write gives back what it did not use as soon as it has written its deliveries
    /// ([`Reservation::settle`]), so taking the room does not starve the next one. A write that finds no room
    /// (a test event beside a PostgreSQL batch) leaves its deliveries to the queue.
    pub fn reserve(self: &Arc<Self>, now: Millis, writers: usize) -> Reservation {
        let places = if self.open.load(Ordering::Relaxed) {
            let mut state = self.state();
            let free = self.capacity.saturating_sub(state.queue.len() + state.reserved).div_ceil(writers.max(1));
            state.reserved += free;
            free
        } else {
            0
        };
        Reservation {
            handoff: Some(self.clone()),
            places,
            token: ids::new_id("lease"),
            until: now + self.lease,
            claims: Vec::new(),
            left: false,
        }
    }

    /// Takes queued claims for the dispatcher, oldest first, as long as `admit` accepts them (it says no to a
    /// claim whose endpoint has no free slot: that claim stays queued) and at most `limit`. Looks at no more
    /// than 256 claims past those taken, so a long queue for one busy endpoint costs little per call. A
    /// claim whose lease would run out before an attempt of `attempt` could finish is dropped: the store makes
    /// it due again when the lease ends, and sending it now could overlap with that.
    pub fn take(&self, limit: usize, attempt: Duration, mut admit: impl FnMut(&Claim) -> bool) -> Vec<Claim> {
        let latest_start = now_ms() + attempt.as_millis() as Millis;
        let mut state = self.state();
        let mut taken = Vec::new();
        let mut kept = VecDeque::new();
        // Endpoints refused once in this call: their later claims are passed over without asking again.
        let mut full: Vec<String> = Vec::new();
        while taken.len() < limit && kept.len() < SCAN {
            let Some(claim) = state.queue.pop_front() else { break };
            if claim.lease_until <= latest_start {
                continue;
            }
            if full.contains(&claim.endpoint_id) {
                kept.push_back(claim);
            } else if admit(&claim) {
                taken.push(claim);
            } else {
                full.push(claim.endpoint_id.clone());
                kept.push_back(claim);
            }
        }
        // Claims passed over keep their place ahead of the rest.
        while let Some(claim) = kept.pop_back() {
            state.queue.push_front(claim);
        }
        taken
    }

    /// Queues claims taken from the store that could not start yet (their endpoint had no free slot), so they
    /// start as slots free instead of being given back and claimed again. Answers those there is no room for.
    pub fn requeue(&self, mut claims: Vec<Claim>) -> Vec<Claim> {
        if !self.open.load(Ordering::Relaxed) {
            return claims;
        }
        let rest = {
            let mut state = self.state();
            let room = self.capacity.saturating_sub(state.queue.len() + state.reserved).min(claims.len());
            let rest = claims.split_off(room);
            state.queue.extend(claims);
            rest
        };
        self.ring();
        rest
    }

    /// Stops handing off, and answers the claims still queued so they can be given back to the store.
    pub fn close(&self) -> Vec<Claim> {
        self.open.store(false, Ordering::Relaxed);
        self.state().queue.drain(..).collect()
    }
}

impl Reservation {
    /// The places `handoff` can promise one of `writers` writes that may run at once ([`Handoff::reserve`]), or
    /// none for a store without local workers.
    pub fn of(handoff: Option<&Arc<Handoff>>, now: Millis, writers: usize) -> Self {
        match handoff {
            Some(handoff) => handoff.reserve(now, writers),
            None => {
                Self { handoff: None, places: 0, token: String::new(), until: now, claims: Vec::new(), left: false }
            }
        }
    }

    /// Whether another delivery can be handed off.
    pub fn has_room(&self) -> bool {
        self.claims.len() < self.places
    }

    /// How many more deliveries can be handed off.
    pub fn room(&self) -> usize {
        self.places - self.claims.len()
    }

    /// Adds the claim of a delivery just written leased under this reservation: its first, scheduled attempt.
    pub fn push(&mut self, delivery: Handed) {
        debug_assert!(self.has_room());
        self.claims.push(Claim {
            delivery_id: delivery.delivery_id,
            row: delivery.row,
            lease_token: self.token.clone(),
            lease_until: self.until,
            event_id: delivery.event_id,
            endpoint_id: delivery.endpoint_id,
            url: delivery.url,
            payload: delivery.payload,
            secrets: delivery.secrets,
            scheduled_count: 0,
            trigger: Trigger::Scheduled,
        });
    }

    /// Notes that the transaction wrote a delivery it did not lease: once committed, the dispatcher is told.
    pub fn leave_for_queue(&mut self) {
        self.left = true;
    }

    /// Gives back the places not filled, once the transaction has written its deliveries, so the next
    /// transaction of the same group commit can use them.
    pub fn settle(&mut self) {
        let unused = self.room();
        if unused > 0
            && let Some(handoff) = &self.handoff
        {
            handoff.state().reserved -= unused;
            self.places -= unused;
        }
    }

    /// Called once the transaction has committed: queues its claims and wakes the dispatcher.
    pub fn commit(mut self) {
        let Some(handoff) = self.handoff.take() else { return };
        if self.left {
            handoff.left.notify_one();
        }
        let claims = std::mem::take(&mut self.claims);
        if claims.is_empty() {
            handoff.state().reserved -= self.places;
            return;
        }
        {
            let mut state = handoff.state();
            state.reserved -= self.places;
            state.queue.extend(claims);
        }
        handoff.ring();
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        // Not committed: the rows were rolled back (or their leases run out), and the places are free again.
        if let Some(handoff) = self.handoff.take() {
            handoff.state().reserved -= self.places;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handed(endpoint: &str) -> Handed {
        Handed {
            delivery_id: ids::new_id(ids::DELIVERY),
            row: 0,
            event_id: ids::new_id(ids::EVENT),
            endpoint_id: endpoint.into(),
            url: "http://127.0.0.1:9/hook".into(),
            payload: Bytes::from_static(b"{}"),
            secrets: Vec::new(),
        }
    }

    /// A committed write that handed off one delivery to `endpoint`.
    fn hand_off_one(handoff: &Arc<Handoff>, endpoint: &str) {
        let mut reservation = handoff.reserve(now_ms(), 1);
        reservation.push(handed(endpoint));
        reservation.commit();
    }

    #[test]
    fn places_are_promised_once_and_given_back() {
        let handoff = Arc::new(Handoff::new(3, Duration::from_secs(60)));
        let mut first = handoff.reserve(now_ms(), 1);
        assert_eq!(first.room(), 3);
        assert_eq!(handoff.reserve(now_ms(), 1).room(), 0, "all promised to the first");
        first.push(handed("ep_a"));
        first.settle();
        let second = handoff.reserve(now_ms(), 1);
        assert_eq!(second.room(), 2, "the unused places came back");
        drop(second);
        first.commit();
        assert_eq!(handoff.reserve(now_ms(), 1).room(), 2, "one place holds a queued claim");
        assert_eq!(handoff.take(10, Duration::from_secs(1), |_| true).len(), 1);
        assert_eq!(handoff.reserve(now_ms(), 1).room(), 3);
    }

    #[test]
    fn writers_running_at_once_are_promised_shares_of_the_free_places() {
        let handoff = Arc::new(Handoff::new(10, Duration::from_secs(60)));
        let first = handoff.reserve(now_ms(), 2);
        assert_eq!(first.room(), 5, "half of ten");
        let second = handoff.reserve(now_ms(), 2);
        assert_eq!(second.room(), 3, "half of the five left, rounded up");
        drop(first);
        drop(second);
        assert_eq!(handoff.reserve(now_ms(), 1).room(), 10, "every place came back");
    }

    #[test]
    fn claims_from_the_store_wait_in_the_queue_while_there_is_room() {
        let handoff = Arc::new(Handoff::new(3, Duration::from_secs(60)));
        hand_off_one(&handoff, "ep_a");
        let claimed: Vec<Claim> = (0..3)
            .map(|_| handoff.reserve(now_ms(), 1))
            .map(|mut r| {
                r.push(handed("ep_b"));
                r.claims.pop().unwrap()
            })
            .collect();
        let ids: Vec<String> = claimed.iter().map(|c| c.delivery_id.clone()).collect();
        let rest = handoff.requeue(claimed);
        assert_eq!(rest.len(), 1, "room for two beside the one queued");
        assert_eq!(rest[0].delivery_id, ids[2]);
        let taken: Vec<String> =
            handoff.take(10, Duration::from_secs(1), |_| true).into_iter().map(|c| c.delivery_id).collect();
        assert_eq!(taken.len(), 3);
        assert_eq!(taken[1..], ids[..2], "behind what was queued before");
        handoff.close();
        assert_eq!(handoff.requeue(rest).len(), 1, "a closed handoff takes nothing");
    }

    #[test]
    fn the_dispatcher_hears_of_deliveries_left_for_the_queue_once_they_are_committed() {
        use futures_util::FutureExt;
        let handoff = Arc::new(Handoff::new(1, Duration::from_secs(60)));
        // The signal is given (or not) by the time the write returns, so one look tells.
        let told = || handoff.left_for_queue().now_or_never().is_some();
        hand_off_one(&handoff, "ep_a");
        assert!(!told(), "nothing was left for the queue");

        let mut full = handoff.reserve(now_ms(), 1);
        assert!(!full.has_room());
        full.leave_for_queue();
        drop(full);
        assert!(!told(), "rolled back: nothing to claim");

        let mut full = handoff.reserve(now_ms(), 1);
        full.leave_for_queue();
        full.commit();
        assert!(told(), "committed: the queue has work");
        assert!(!told(), "told once");
    }

    #[test]
    fn claims_without_time_left_on_their_lease_are_not_started() {
        let handoff = Arc::new(Handoff::new(4, Duration::from_millis(500)));
        hand_off_one(&handoff, "ep_a");
        assert!(handoff.take(10, Duration::from_secs(1), |_| true).is_empty());
        assert!(handoff.close().is_empty(), "dropped, left to the store");
    }

    #[test]
    fn a_full_endpoint_does_not_hold_up_the_others() {
        let handoff = Arc::new(Handoff::new(8, Duration::from_secs(60)));
        let mut reservation = handoff.reserve(now_ms(), 1);
        for endpoint in ["ep_busy", "ep_busy", "ep_free", "ep_busy"] {
            reservation.push(handed(endpoint));
        }
        reservation.commit();
        let mut asked = 0;
        let taken = handoff.take(10, Duration::from_secs(1), |c| {
            asked += 1;
            c.endpoint_id == "ep_free"
        });
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].endpoint_id, "ep_free");
        assert_eq!(asked, 2, "a full endpoint is asked about once");
        let left: Vec<String> = handoff.close().into_iter().map(|c| c.endpoint_id).collect();
        assert_eq!(left, ["ep_busy", "ep_busy", "ep_busy"], "in their order");
    }
}
