//! The store conformance suite: the same checks of the queue and its leases on SQLite and PostgreSQL.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use tidings::domain::interview::{EVENT_TYPE, InterviewPatch};
use tidings::domain::retry::Next;
use tidings::store::{
    AttemptRecord, AttemptResult, Claim, DeliveryFilter, DeliveryStatus, Fanout, Handoff, InterviewUpdate, NewEndpoint,
    PageRequest, Store, StoreError, Trigger,
};

use crate::db::{Backend, TestDb};
use crate::on_both_stores;

struct Fixture {
    store: Arc<dyn Store>,
    org: String,
    /// Kept as long as the store; its URL reaches the database itself.
    db: TestDb,
}

async fn fixture() -> Fixture {
    fixture_with(None).await
}

/// A store whose new deliveries are handed to this process's workers through `handoff`.
async fn fixture_with(handoff: Option<Arc<Handoff>>) -> Fixture {
    let db = TestDb::new(Backend::current()).await.expect("a database");
    fixture_in(db, handoff).await
}

/// A store in `db`, with an organization.
async fn fixture_in(db: TestDb, handoff: Option<Arc<Handoff>>) -> Fixture {
    let store = tidings::store::open_with(&db.url, handoff).await.expect("open the store");
    let org = store.create_org("Acme", &format!("hash-{}", rand::random::<u64>())).await.expect("org");
    Fixture { store, org, db }
}

impl Fixture {
    async fn endpoint(&self, enabled: bool) -> String {
        let new = NewEndpoint {
            url: "http://127.0.0.1:9/hook".into(),
            description: String::new(),
            event_types: vec![EVENT_TYPE.into()],
            enabled,
            secret: SecretString::from("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned()),
        };
        self.store.create_endpoint(&self.org, new).await.expect("endpoint").id
    }

    /// `n` enabled endpoints subscribed to the test events.
    async fn endpoints(&self, n: usize) {
        for _ in 0..n {
            self.endpoint(true).await;
        }
    }

    /// Two enabled endpoints, `events` events to both, and every delivery claimed: the endpoints and the claims.
    async fn claimed_over_two_endpoints(&self, events: usize) -> (String, String, Vec<Claim>) {
        let first = self.endpoint(true).await;
        let second = self.endpoint(true).await;
        self.events(events).await;
        let claims = self.store.claim_due(NOW, NOW + 1_000, 2 * events as u32, &[]).await.unwrap();
        assert_eq!(claims.len(), 2 * events);
        (first, second, claims)
    }

    async fn events(&self, n: usize) {
        for i in 0..n {
            self.store
                .create_event(&self.org, EVENT_TYPE, &format!("{{\"n\":{i}}}"), Fanout::Subscribed)
                .await
                .expect("event");
        }
    }
}

fn result(claim: &Claim, next: Next) -> AttemptResult {
    AttemptResult {
        delivery_id: claim.delivery_id.clone(),
        row: claim.row,
        lease_token: claim.lease_token.clone(),
        attempt: AttemptRecord {
            number: 0,
            trigger: claim.trigger,
            started_at: 0,
            duration_ms: 1,
            status_code: Some(500),
            error: Some("status".into()),
            response_body: "no".into(),
        },
        next,
    }
}

const NOW: i64 = 4_000_000_000_000;

on_both_stores! {
    /// A claimed delivery is not claimed again until its lease runs out; then it is, under a new lease, and a
    /// result recorded under the old lease is logged but does not move the delivery.
    async fn leases_expire_and_stale_results_do_not_win() {
        let f = fixture().await;
        f.endpoint(true).await;
        f.events(1).await;
        let first = f.store.claim_due(NOW, NOW + 1_000, 10, &[]).await.unwrap();
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].payload.as_ref(), b"{\"n\":0}");
        assert!(f.store.claim_due(NOW + 500, NOW + 1_500, 10, &[]).await.unwrap().is_empty());
        let second = f.store.claim_due(NOW + 1_001, NOW + 2_000, 10, &[]).await.unwrap();
        assert_eq!(second.len(), 1);
        assert_ne!(second[0].lease_token, first[0].lease_token);

        f.store.record_attempts(Arc::from([result(&first[0], Next::Undeliverable)])).await.unwrap();
        let (delivery, attempts) = f.store.get_delivery(&f.org, &first[0].delivery_id).await.unwrap().unwrap();
        assert_eq!(delivery.status, DeliveryStatus::Pending, "the stale lease must not finish the delivery");
        assert_eq!(attempts.len(), 1);

        f.store.record_attempts(Arc::from([result(&second[0], Next::Succeeded)])).await.unwrap();
        let (delivery, attempts) = f.store.get_delivery(&f.org, &first[0].delivery_id).await.unwrap().unwrap();
        assert_eq!(delivery.status, DeliveryStatus::Succeeded);
        assert_eq!(delivery.attempt_count, 2);
        assert_eq!(attempts.iter().map(|a| a.number).collect::<Vec<_>>(), vec![1, 2]);
        assert!(f.store.claim_due(NOW + 10_000, NOW + 11_000, 10, &[]).await.unwrap().is_empty());
    }

    /// A batch of claims over several events and endpoints gives every claim its own event's body.
    async fn claims_carry_their_own_events_body() {
        let f = fixture().await;
        f.endpoint(true).await;
        f.endpoint(true).await;
        f.events(3).await;
        let claims = f.store.claim_due(NOW, NOW + 1_000, 10, &[]).await.unwrap();
        assert_eq!(claims.len(), 6);
        let events: HashSet<&str> = claims.iter().map(|c| c.event_id.as_str()).collect();
        assert_eq!(events.len(), 3);
        for claim in &claims {
            let event = f.store.get_event(&f.org, &claim.event_id).await.unwrap().expect("the claim's event");
            assert_eq!(claim.payload.as_ref(), event.payload.as_bytes(), "{}", claim.delivery_id);
        }
    }

    /// Claimers racing over one backlog never get the same delivery twice, and together get all of it.
    async fn concurrent_claims_never_overlap() {
        let f = fixture().await;
        f.endpoint(true).await;
        f.events(200).await;
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let store = f.store.clone();
            tasks.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let claims = store.claim_due(NOW, NOW + 60_000, 7, &[]).await.unwrap();
                    if claims.is_empty() {
                        return mine;
                    }
                    mine.extend(claims.into_iter().map(|c| c.delivery_id));
                }
            }));
        }
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await.unwrap());
        }
        let unique: HashSet<_> = all.iter().collect();
        assert_eq!(all.len(), 200, "every delivery claimed exactly once");
        assert_eq!(unique.len(), 200);
    }

    /// Retries come due at the time the policy chose; excluded and disabled endpoints are passed over.
    async fn retries_exclusions_and_disabled_endpoints() {
        let f = fixture().await;
        let busy = f.endpoint(true).await;
        f.events(1).await;
        assert!(f.store.claim_due(NOW, NOW + 1_000, 10, std::slice::from_ref(&busy)).await.unwrap().is_empty());
        let claim = f.store.claim_due(NOW, NOW + 1_000, 10, &[]).await.unwrap().remove(0);
        assert_eq!(claim.trigger, Trigger::Scheduled);
        assert_eq!(claim.scheduled_count, 0);
        f.store.record_attempts(Arc::from([result(&claim, Next::RetryAt(NOW + 5_000))])).await.unwrap();
        assert_eq!(f.store.next_due_after(NOW).await.unwrap(), Some(NOW + 5_000));
        assert!(f.store.claim_due(NOW + 4_999, NOW + 9_000, 10, &[]).await.unwrap().is_empty());
        let again = f.store.claim_due(NOW + 5_000, NOW + 9_000, 10, &[]).await.unwrap().remove(0);
        assert_eq!(again.scheduled_count, 1);
        f.store.record_attempts(Arc::from([result(&again, Next::Undeliverable)])).await.unwrap();

        // A manual retry makes it due now, as a manual attempt.
        let retried = f.store.request_retry(&f.org, &claim.delivery_id).await.unwrap().unwrap();
        assert_eq!(retried.status, DeliveryStatus::Pending);
        let manual = f.store.claim_due(i64::MAX - 1, i64::MAX - 1, 10, &[]).await.unwrap().remove(0);
        assert_eq!(manual.trigger, Trigger::Manual);

        // Nothing is claimed for a disabled endpoint.
        let f = fixture().await;
        f.endpoint(false).await;
        let enabled = f.endpoint(true).await;
        f.events(1).await;
        let claims = f.store.claim_due(NOW, NOW + 1_000, 10, &[]).await.unwrap();
        assert_eq!(claims.iter().map(|c| c.endpoint_id.clone()).collect::<Vec<_>>(), vec![enabled]);
    }

    /// A manual attempt that fails puts a delivery that had settled back to its status, whatever the policy
    /// would schedule; one waiting for a scheduled retry goes on with the schedule. A success under a lease lost
    /// meanwhile holds against a later failure, and ends an `undeliverable` status.
    async fn a_failed_manual_attempt_leaves_a_settled_delivery_as_it_was() {
        let f = fixture().await;
        f.endpoint(true).await;
        let retry_later = Next::RetryAt(NOW + 5_000);
        let status = |id: String| {
            let store = f.store.clone();
            let org = f.org.clone();
            async move {
                let (delivery, _) = store.get_delivery(&org, &id).await.unwrap().unwrap();
                (delivery.status, delivery.next_attempt_at, delivery.attempt_count)
            }
        };
        let manual_claim = || f.store.claim_due(NOW, NOW + 1_000, 10, &[]);
        // Each case starts from a claim of its own event's delivery, settled by `first`.
        let f = &f;
        let settled = |first: Next| async move {
            f.events(1).await;
            let claim = f.store.claim_due(NOW, NOW + 1_000, 10, &[]).await.unwrap().remove(0);
            f.store.record_attempts(Arc::from([result(&claim, first)])).await.unwrap();
            claim.delivery_id
        };

        for (first, expected) in [
            (Next::Succeeded, DeliveryStatus::Succeeded),
            (Next::Undeliverable, DeliveryStatus::Undeliverable),
        ] {
            let id = settled(first).await;
            f.store.request_retry(&f.org, &id).await.unwrap().unwrap();
            let manual = manual_claim().await.unwrap().remove(0);
            assert_eq!((manual.trigger, manual.delivery_id.as_str()), (Trigger::Manual, id.as_str()));
            f.store.record_attempts(Arc::from([result(&manual, retry_later)])).await.unwrap();
            assert_eq!(status(id).await, (expected, None, 2), "back to {expected:?}");
            assert_eq!(f.store.next_due_after(NOW).await.unwrap(), None, "nothing queued");
        }

        // Waiting for a scheduled retry: the failed manual attempt leaves the schedule to go on.
        let id = settled(retry_later).await;
        f.store.request_retry(&f.org, &id).await.unwrap().unwrap();
        let manual = manual_claim().await.unwrap().remove(0);
        f.store.record_attempts(Arc::from([result(&manual, Next::RetryAt(NOW + 7_000))])).await.unwrap();
        assert_eq!(status(id.clone()).await, (DeliveryStatus::Pending, Some(NOW + 7_000), 2));
        // Settled now: the next attempt succeeds, and a later manual failure goes back to that.
        let scheduled = f.store.claim_due(NOW + 7_000, NOW + 8_000, 10, &[]).await.unwrap().remove(0);
        assert_eq!(scheduled.trigger, Trigger::Scheduled);
        f.store.record_attempts(Arc::from([result(&scheduled, Next::Succeeded)])).await.unwrap();
        f.store.request_retry(&f.org, &id).await.unwrap().unwrap();
        let manual = manual_claim().await.unwrap().remove(0);
        f.store.record_attempts(Arc::from([result(&manual, retry_later)])).await.unwrap();
        assert_eq!(status(id).await, (DeliveryStatus::Succeeded, None, 4));

        // An attempt in flight when a manual retry ends its lease succeeds; the manual attempt then fails.
        f.events(1).await;
        let in_flight = f.store.claim_due(NOW, NOW + 1_000, 10, &[]).await.unwrap().remove(0);
        let id = in_flight.delivery_id.clone();
        f.store.request_retry(&f.org, &id).await.unwrap().unwrap();
        f.store.record_attempts(Arc::from([result(&in_flight, Next::Succeeded)])).await.unwrap();
        assert_eq!(status(id.clone()).await.0, DeliveryStatus::Pending, "the manual attempt is still owed");
        let manual = manual_claim().await.unwrap().remove(0);
        f.store.record_attempts(Arc::from([result(&manual, retry_later)])).await.unwrap();
        assert_eq!(status(id).await, (DeliveryStatus::Succeeded, None, 2), "acknowledged once, so succeeded");
        assert_eq!(f.store.next_due_after(NOW).await.unwrap(), None);

        // A lease that ran out: the attempt under the next one uses the schedule up, then the first succeeds.
        f.events(1).await;
        let slow = f.store.claim_due(NOW, NOW + 1_000, 10, &[]).await.unwrap().remove(0);
        let last = f.store.claim_due(NOW + 1_000, NOW + 2_000, 10, &[]).await.unwrap().remove(0);
        assert_eq!(last.delivery_id, slow.delivery_id);
        f.store.record_attempts(Arc::from([result(&last, Next::Undeliverable)])).await.unwrap();
        f.store.record_attempts(Arc::from([result(&slow, Next::Succeeded)])).await.unwrap();
        assert_eq!(status(slow.delivery_id.clone()).await, (DeliveryStatus::Succeeded, None, 2));
    }

    /// Deleting an endpoint takes its deliveries and their attempts with it, and only those; a late result for
    /// one is dropped without an error.
    async fn deleting_an_endpoint_drops_its_queue() {
        let f = fixture().await;
        let (endpoint, kept, claims) = f.claimed_over_two_endpoints(3).await;
        let (doomed, others): (Vec<_>, Vec<_>) = claims.iter().partition(|c| c.endpoint_id == endpoint);
        // One attempt logged for each before the delete, and a result for one of the doomed after it.
        let failed: Vec<_> = claims.iter().map(|c| result(c, Next::RetryAt(NOW))).collect();
        f.store.record_attempts(Arc::from(failed)).await.unwrap();
        assert!(f.store.delete_endpoint(&f.org, &endpoint).await.unwrap());
        assert!(!f.store.delete_endpoint(&f.org, &endpoint).await.unwrap(), "already gone");
        f.store.record_attempts(Arc::from([result(doomed[0], Next::Succeeded)])).await.unwrap();
        assert!(f.store.get_delivery(&f.org, &doomed[0].delivery_id).await.unwrap().is_none());

        let due = f.store.claim_due(NOW + 5_000, NOW + 6_000, 10, &[]).await.unwrap();
        assert!(due.iter().all(|c| c.endpoint_id == kept), "{due:?}");
        let all = DeliveryFilter::default();
        let page = f.store.list_deliveries(&f.org, &all, PageRequest { limit: 10, before: None }).await.unwrap();
        assert_eq!(page.items.len(), 3);
        assert!(page.items.iter().all(|d| d.endpoint_id == kept));
        let (_, attempts) = f.store.get_delivery(&f.org, &others[0].delivery_id).await.unwrap().unwrap();
        assert_eq!(attempts.len(), 1, "the other endpoint's log is kept");
        // Neither store checks references on these tables: the delete itself must leave no attempt behind.
        let left: i64 = match Backend::current() {
            Backend::Postgres => {
                use sqlx::Connection;
                let mut connection = sqlx::PgConnection::connect(&f.db.url).await.unwrap();
                sqlx::query_scalar("SELECT count(*) FROM attempts").fetch_one(&mut connection).await.unwrap()
            }
            Backend::Sqlite => sqlite_number(&f.db.url, "SELECT count(*) FROM attempts"),
        };
        assert_eq!(left, 3, "only the kept endpoint's attempts remain");
    }

    /// Lists are newest first and their cursors walk every row once.
    async fn cursors_walk_every_row_once() {
        let f = fixture().await;
        f.endpoint(true).await;
        f.events(7).await;
        let mut seen = Vec::new();
        let mut before = None;
        loop {
            let page = f.store.list_events(&f.org, PageRequest { limit: 3, before }).await.unwrap();
            seen.extend(page.items.iter().map(|e| e.payload.clone()));
            match page.next_cursor {
                Some(cursor) => before = Some(cursor),
                None => break,
            }
        }
        let expected: Vec<String> = (0..7).rev().map(|i| format!("{{\"n\":{i}}}")).collect();
        assert_eq!(seen, expected);
    }

    /// Interview updates diff against the stored state and write an event only when something changed.
    async fn interview_updates_write_events_only_on_change() {
        let f = fixture().await;
        f.endpoint(true).await;
        let patch = InterviewPatch::parse(&serde_json::json!({"interview_outcome": "qualified"})).unwrap();
        let first = f.store.update_interview(&f.org, "cand_1", &patch).await.unwrap();
        assert!(first.event.is_some());
        let again = f.store.update_interview(&f.org, "cand_1", &patch).await.unwrap();
        assert!(again.event.is_none());
        let stored = f.store.get_interview(&f.org, "cand_1").await.unwrap().unwrap();
        assert_eq!(stored.interview_outcome.as_deref(), Some("qualified"));
        assert!(f.store.get_interview(&f.org, "cand_2").await.unwrap().is_none());
        let deliveries = f.store.claim_due(NOW, NOW + 1_000, 10, &[]).await.unwrap();
        assert_eq!(deliveries.len(), 1);
    }

    /// A delivery written by a process with workers is leased to them and handed over once committed: the
    /// store's queue does not offer it while the lease lasts, offers it again once it runs out (the crash
    /// case), and a result recorded under the handed-over lease finishes it.
    async fn handed_off_deliveries_skip_the_queue_until_their_lease_ends() {
        let handoff = Arc::new(Handoff::new(8, Duration::from_secs(60)));
        let f = fixture_with(Some(handoff.clone())).await;
        let endpoint = f.endpoint(true).await;
        let patch = InterviewPatch::parse(&serde_json::json!({"interview_outcome": "qualified"})).unwrap();
        let update = f.store.update_interview(&f.org, "cand_1", &patch).await.unwrap();
        let event = update.event.expect("an event");

        let handed = handoff.take(10, Duration::from_secs(1), |_| true);
        assert_eq!(handed.len(), 1);
        let claim = &handed[0];
        assert_eq!(claim.endpoint_id, endpoint);
        assert_eq!(claim.event_id, event.id);
        assert_eq!(claim.payload.as_ref(), event.payload.as_bytes());
        assert_eq!(claim.secrets.len(), 1);
        let now = tidings::domain::time::now_ms();
        assert!(f.store.claim_due(now, now + 1_000, 10, &[]).await.unwrap().is_empty(), "leased to this process");
        let after = claim.lease_until + 1;
        let reclaimed = f.store.claim_due(after, after + 1_000, 10, &[]).await.unwrap();
        assert_eq!(reclaimed.len(), 1, "due again once the lease runs out");
        assert_eq!(reclaimed[0].delivery_id, claim.delivery_id);

        // The newer claim wins; the handed-over lease's result is logged without moving the delivery.
        f.store.record_attempts(vec![result(claim, Next::Succeeded)].into()).await.unwrap();
        let (record, attempts) = f.store.get_delivery(&f.org, &claim.delivery_id).await.unwrap().unwrap();
        assert_eq!(attempts.len(), 1);
        assert_eq!(record.status, DeliveryStatus::Pending);
        f.store.record_attempts(vec![result(&reclaimed[0], Next::Succeeded)].into()).await.unwrap();
        let (record, _) = f.store.get_delivery(&f.org, &claim.delivery_id).await.unwrap().unwrap();
        assert_eq!(record.status, DeliveryStatus::Succeeded);
    }

    /// The handoff is bounded: deliveries beyond its room, and deliveries to a disabled endpoint, wait in the
    /// store's queue; handed-off claims given back are due at once; a closed handoff takes nothing.
    async fn the_handoff_is_bounded_and_gives_back_what_it_holds() {
        let handoff = Arc::new(Handoff::new(2, Duration::from_secs(60)));
        let f = fixture_with(Some(handoff.clone())).await;
        f.endpoints(3).await;
        let disabled = f.endpoint(false).await;
        f.events(1).await;
        let now = tidings::domain::time::now_ms();
        let queued = f.store.claim_due(now, now + 1_000, 10, &[]).await.unwrap();
        assert_eq!(queued.len(), 1, "the third enabled endpoint's delivery is left for the queue");

        let handed = handoff.take(10, Duration::from_secs(1), |_| true);
        assert_eq!(handed.len(), 2);
        assert!(handed.iter().all(|c| c.endpoint_id != disabled));
        // With room again, a delivery to a disabled endpoint is still not handed off.
        let (test, deliveries) =
            f.store.create_event(&f.org, EVENT_TYPE, "{}", Fanout::Endpoint(disabled.clone())).await.unwrap();
        assert_eq!(deliveries.len(), 1, "the disabled endpoint's delivery is written");
        assert!(handoff.take(10, Duration::from_secs(1), |_| true).is_empty(), "and not handed off ({})", test.id);
        // A claim whose endpoint has no free slot keeps its place.
        f.events(1).await;
        assert!(handoff.take(10, Duration::from_secs(1), |_| false).is_empty());
        let kept = handoff.close();
        assert_eq!(kept.len(), 2);
        f.store.release(&kept).await.unwrap();
        let now = tidings::domain::time::now_ms();
        let due = f.store.claim_due(now, now + 1_000, 10, &[]).await.unwrap();
        let released: HashSet<&str> = kept.iter().map(|c| c.delivery_id.as_str()).collect();
        assert!(released.iter().all(|id| due.iter().any(|c| c.delivery_id == *id)), "given back, due now");

        f.events(1).await;
        assert!(handoff.take(10, Duration::from_secs(1), |_| true).is_empty(), "closed");
    }

    /// An update fanned out to fifty endpoints is written in a few statements of many deliveries: each
    /// handed-off claim still names its own delivery (a result recorded under it finishes that one), and the
    /// deliveries beyond the handoff's room, written in the same statements, wait in the queue.
    async fn a_wide_fan_out_hands_off_each_delivery_under_its_own_row() {
        let handoff = Arc::new(Handoff::new(45, Duration::from_secs(60)));
        let f = fixture_with(Some(handoff.clone())).await;
        f.endpoints(50).await;
        f.events(1).await;
        let handed = handoff.take(100, Duration::from_secs(1), |_| true);
        assert_eq!(handed.len(), 45);
        let now = tidings::domain::time::now_ms();
        let queued = f.store.claim_due(now, now + 1_000, 100, &[]).await.unwrap();
        assert_eq!(queued.len(), 5, "beyond the handoff's room");
        let endpoints: HashSet<&str> = handed.iter().chain(&queued).map(|c| c.endpoint_id.as_str()).collect();
        assert_eq!(endpoints.len(), 50, "one delivery per endpoint");

        let results: Vec<AttemptResult> = handed.iter().chain(&queued).map(|c| result(c, Next::Succeeded)).collect();
        f.store.record_attempts(results.into()).await.unwrap();
        for claim in handed.iter().chain(&queued) {
            let (delivery, attempts) = f.store.get_delivery(&f.org, &claim.delivery_id).await.unwrap().unwrap();
            assert_eq!((delivery.status, attempts.len()), (DeliveryStatus::Succeeded, 1), "{}", claim.delivery_id);
        }
    }

    /// Two results for one delivery in one batch (a late one under an expired lease, and the new lease's) are
    /// written in their order, among results for other deliveries: two attempts numbered 1 and 2, and only
    /// the new lease's result moves the delivery.
    async fn results_for_one_delivery_in_one_batch_are_written_in_order() {
        let f = fixture().await;
        f.endpoints(12).await;
        f.events(1).await;
        let first = f.store.claim_due(NOW, NOW + 1_000, 100, &[]).await.unwrap();
        assert_eq!(first.len(), 12);
        let late = &first[0];
        let again = f.store.claim_due(NOW + 1_001, NOW + 2_000, 1, &[]).await.unwrap();
        assert_eq!(again.len(), 1);
        let fresh = &again[0];
        assert_eq!(fresh.delivery_id, late.delivery_id);
        // Both within the first eight, as one statement would take them.
        let mut batch: Vec<AttemptResult> = first[1..].iter().map(|c| result(c, Next::Succeeded)).collect();
        batch.insert(1, result(late, Next::Undeliverable));
        batch.insert(4, result(fresh, Next::Succeeded));
        f.store.record_attempts(batch.into()).await.unwrap();

        let (delivery, attempts) = f.store.get_delivery(&f.org, &late.delivery_id).await.unwrap().unwrap();
        assert_eq!(attempts.iter().map(|a| a.number).collect::<Vec<_>>(), [1, 2]);
        assert_eq!((delivery.status, delivery.attempt_count), (DeliveryStatus::Succeeded, 2));
        for claim in &first[1..] {
            let (delivery, attempts) = f.store.get_delivery(&f.org, &claim.delivery_id).await.unwrap().unwrap();
            assert_eq!((delivery.status, attempts.len()), (DeliveryStatus::Succeeded, 1), "{}", claim.delivery_id);
        }
    }

    /// Updates of one candidate sent together, without waiting for each answer, apply in the order they were
    /// sent, whichever transaction (and on PostgreSQL whichever committer) writes each: every diff starts
    /// where the one before ended.
    async fn updates_of_one_candidate_sent_together_apply_in_order() {
        let f = fixture().await;
        let summaries: Vec<String> = (0..60).map(|i| format!("summary {i}")).collect();
        let patches: Vec<InterviewPatch> = summaries
            .iter()
            .map(|s| InterviewPatch::parse(&serde_json::json!({"interview_summary": s})).unwrap())
            .collect();
        // Polled in this order, each future sends its update before the next is polled; other candidates'
        // updates in between make several batches.
        let others: Vec<String> = (0..patches.len()).map(|i| format!("cand_other_{i}")).collect();
        let (store, org) = (&f.store, &f.org);
        let updates = patches.iter().zip(&others).flat_map(|(patch, other)| {
            [store.update_interview(org, "cand_1", patch), store.update_interview(org, other, patch)]
        });
        let outcomes = futures_util::future::join_all(updates).await;
        let mut before: Option<&str> = None;
        for (i, outcome) in outcomes.iter().step_by(2).enumerate() {
            let event = outcome.as_ref().unwrap().event.as_ref().expect("a change");
            let body: serde_json::Value = serde_json::from_str(&event.payload).unwrap();
            let change = &body["changes"]["interview_summary"];
            assert_eq!(change["from"].as_str(), before, "update {i} starts where the one before ended");
            assert_eq!(change["to"].as_str(), Some(summaries[i].as_str()));
            before = Some(&summaries[i]);
        }
        let last = f.store.get_interview(&f.org, "cand_1").await.unwrap().unwrap();
        assert_eq!(last.interview_summary.as_deref(), Some("summary 59"));
    }

    /// Writes committed together stand or fall alone: one that fails (an event for an organization that does
    /// not exist) among many sent at once is refused, and every other is kept.
    async fn a_failing_write_leaves_the_others_of_its_batch_alone() {
        let f = fixture().await;
        f.endpoint(true).await;
        let mut writes = tokio::task::JoinSet::new();
        for i in 0..40 {
            let (store, org) = (f.store.clone(), if i == 20 { "org_missing".to_owned() } else { f.org.clone() });
            writes.spawn(async move {
                let payload = format!("{{\"n\":{i}}}");
                (i, store.create_event(&org, EVENT_TYPE, &payload, Fanout::Subscribed).await.is_ok())
            });
        }
        let mut outcomes = Vec::new();
        while let Some(outcome) = writes.join_next().await {
            outcomes.push(outcome.unwrap());
        }
        outcomes.sort();
        for (i, ok) in &outcomes {
            assert_eq!(*ok, *i != 20, "write {i}");
        }
        let events = f.store.list_events(&f.org, PageRequest { limit: 100, before: None }).await.unwrap();
        assert_eq!(events.items.len(), 39);
        let due = f.store.claim_due(NOW, NOW + 1_000, 100, &[]).await.unwrap();
        assert_eq!(due.len(), 39, "each kept event has its delivery");
    }

    /// Interview updates are committed in groups too: one for an organization that does not exist is refused
    /// alone, as that, and writes nothing; the updates grouped with it are kept, each with its event and
    /// delivery. (On PostgreSQL the group is made sure of: the committer waits on a candidate locked from
    /// elsewhere while the forty queue behind it.)
    async fn an_update_for_an_unknown_organization_fails_alone() {
        let f = fixture().await;
        f.endpoint(true).await;
        let patch = InterviewPatch::parse(&serde_json::json!({"interview_outcome": "qualified"})).unwrap();
        let held = match Backend::current() {
            Backend::Postgres => Some(hold_candidate(&f, &patch).await),
            Backend::Sqlite => None,
        };
        let mut updates = tokio::task::JoinSet::new();
        for i in 0..40 {
            let (store, patch) = (f.store.clone(), patch.clone());
            let org = if i == 20 { "org_missing".to_owned() } else { f.org.clone() };
            updates.spawn(async move { (i, store.update_interview(&org, &format!("cand_{i}"), &patch).await) });
        }
        if let Some((lock, waiting)) = held {
            tokio::time::sleep(Duration::from_millis(100)).await;
            drop(lock);
            waiting.await.unwrap().expect("the held candidate's update");
        }
        let mut outcomes = Vec::new();
        while let Some(outcome) = updates.join_next().await {
            outcomes.push(outcome.unwrap());
        }
        outcomes.sort_by_key(|(i, _)| *i);
        for (i, outcome) in &outcomes {
            match outcome {
                Err(StoreError::UnknownOrganization(org)) if *i == 20 => assert_eq!(org, "org_missing"),
                Ok(_) if *i != 20 => {}
                other => panic!("update {i}: {other:?}"),
            }
        }
        assert!(f.store.get_interview("org_missing", "cand_20").await.unwrap().is_none());
        assert!(f.store.get_interview(&f.org, "cand_19").await.unwrap().is_some());
        let events = f.store.list_events(&f.org, PageRequest { limit: 100, before: None }).await.unwrap();
        let updated = if Backend::current() == Backend::Postgres { 40 } else { 39 };
        assert_eq!(events.items.len(), updated);
        let due = f.store.claim_due(NOW, NOW + 1_000, 100, &[]).await.unwrap();
        assert_eq!(due.len(), updated, "each kept update has its delivery");
    }

    /// A page's event types come in one lookup, only for the organization's own events.
    async fn event_types_are_read_for_a_page_of_the_organizations_events() {
        let f = fixture().await;
        let (update, _) = f.store.create_event(&f.org, EVENT_TYPE, "{}", Fanout::Subscribed).await.unwrap();
        let (call, _) = f.store.create_event(&f.org, "call_completed", "{}", Fanout::Subscribed).await.unwrap();
        let other = f.store.create_org("Other", &format!("hash-{}", rand::random::<u64>())).await.unwrap();
        let (theirs, _) = f.store.create_event(&other, EVENT_TYPE, "{}", Fanout::Subscribed).await.unwrap();
        let ids = [update.id.clone(), call.id.clone(), theirs.id.clone(), "evt_missing".to_owned()];
        let types = f.store.event_types(&f.org, &ids).await.unwrap();
        assert_eq!(types.len(), 2, "{types:?}");
        assert_eq!(types[&update.id], EVENT_TYPE);
        assert_eq!(types[&call.id], "call_completed");
        assert!(f.store.event_types(&f.org, &[]).await.unwrap().is_empty());
    }

    /// Deleting an endpoint while a batch of results for it (finished deliveries and retries, beside another
    /// endpoint's) is being recorded: both succeed, whichever goes first, and nothing of the endpoint is left
    /// to claim.
    async fn an_endpoint_deleted_while_its_results_are_recorded() {
        let f = fixture().await;
        let (gone, kept, claims) = f.claimed_over_two_endpoints(60).await;
        // Every other one is retried, so the batch both takes deliveries out of the queue and puts them back.
        let results: Vec<AttemptResult> = claims
            .iter()
            .enumerate()
            .map(|(i, c)| result(c, if i % 2 == 0 { Next::Succeeded } else { Next::RetryAt(NOW + 2_000) }))
            .collect();
        let retried: HashSet<&str> = claims
            .iter()
            .enumerate()
            .filter(|(i, c)| i % 2 == 1 && c.endpoint_id == kept)
            .map(|(_, c)| c.delivery_id.as_str())
            .collect();
        let (recorded, deleted) =
            tokio::join!(f.store.record_attempts(Arc::from(results)), f.store.delete_endpoint(&f.org, &gone));
        recorded.expect("the results are recorded");
        assert!(deleted.expect("the endpoint is deleted"));

        let again = f.store.claim_due(NOW + 10_000, NOW + 11_000, 200, &[]).await.unwrap();
        let again: HashSet<&str> = again.iter().map(|c| c.delivery_id.as_str()).collect();
        assert_eq!(again, retried, "the kept endpoint's retries, and nothing of the deleted one");
        for claim in claims.iter().filter(|c| c.endpoint_id == gone) {
            assert!(f.store.get_delivery(&f.org, &claim.delivery_id).await.unwrap().is_none());
        }
    }
}

/// Locks candidate `cand_held` of the fixture's organization from a connection of the test's own, and starts
/// an update of it; answers once the store's committer is waiting for that lock, with the lock (dropping the
/// connection lets it go) and the update.
async fn hold_candidate(
    f: &Fixture,
    patch: &InterviewPatch,
) -> (sqlx::PgConnection, tokio::task::JoinHandle<tidings::store::Result<InterviewUpdate>>) {
    use sqlx::Connection;

    let mut lock = sqlx::PgConnection::connect(&f.db.url).await.expect("connect");
    sqlx::query("SELECT pg_advisory_lock(hashtextextended($1, 0))")
        .bind(format!("{}/cand_held", f.org))
        .execute(&mut lock)
        .await
        .unwrap();
    let (store, org, patch) = (f.store.clone(), f.org.clone(), patch.clone());
    let waiting = tokio::spawn(async move { store.update_interview(&org, "cand_held", &patch).await });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let blocked: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .fetch_one(&mut lock)
        .await
        .unwrap();
        if blocked > 0 {
            return (lock, waiting);
        }
        assert!(std::time::Instant::now() < deadline, "the committer never waited for the held candidate");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A fresh, empty PostgreSQL database, or `None` (after saying the test is skipped) when there is no server.
async fn postgres_database(test: &str) -> Option<TestDb> {
    if crate::db::postgres_server().is_none() {
        crate::db::skip_notice(test);
        return None;
    }
    Some(TestDb::new(Backend::Postgres).await.expect("a database"))
}

/// A freshly migrated PostgreSQL database, or `None` when there is no server.
async fn migrated_postgres(test: &str) -> Option<TestDb> {
    let db = postgres_database(test).await?;
    tidings::store::open(&db.url).await.expect("open and migrate the store");
    Some(db)
}

/// A plan made for the store's connections while its tables are empty still reads them through their indexes,
/// as it must once they hold millions of rows (a cached plan is not made again as a table grows).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_plans_made_on_empty_tables_use_the_indexes() {
    use sqlx::Connection;

    let Some(db) = migrated_postgres("store::postgres_plans_made_on_empty_tables_use_the_indexes").await else {
        return;
    };
    let options = tidings::store::postgres::connect_options(&db.url).expect("connection options");
    let mut connection = sqlx::PgConnection::connect_with(&options).await.expect("connect");
    // The shapes of the store's batch statements: a batch of rows named by id, joined to a growing table.
    // Without the store's options, PostgreSQL scans these (nearly empty) tables whole for a batch this big.
    let ids: Vec<String> = (0..200).map(|i| format!("dlv_{i}")).collect();
    let statements = [
        ("deliveries", "SELECT d.status FROM unnest($1::text[]) AS r(id) JOIN deliveries d ON d.id = r.id"),
        (
            "interviews",
            "SELECT i.data FROM interviews i WHERE (i.org_id, i.candidate_id) IN \
             (SELECT * FROM unnest($1::text[], $1::text[]))",
        ),
    ];
    for (table, statement) in statements {
        let explain = format!("EXPLAIN (FORMAT TEXT) {statement}");
        let plan: Vec<String> = sqlx::query_scalar(&explain).bind(&ids).fetch_all(&mut connection).await.unwrap();
        let plan = plan.join("\n");
        assert!(!plan.contains(&format!("Seq Scan on {table}")), "{table} is scanned whole:\n{plan}");
        assert!(plan.contains("Index"), "{table} is not read through an index:\n{plan}");
    }
}

/// Each row written per webhook has one unique index, its key: the id it is found by (for an attempt, its
/// delivery's id with `seq`). `seq` orders rows through the listing indexes only.
#[tokio::test]
async fn postgres_rows_are_keyed_by_their_ids_alone() {
    let Some(db) = migrated_postgres("store::postgres_rows_are_keyed_by_their_ids_alone").await else {
        return;
    };
    let pool = sqlx::PgPool::connect(&db.url).await.expect("connect");
    for (table, key) in [("events", "id"), ("deliveries", "id"), ("attempts", "delivery_id, seq")] {
        let unique: Vec<(bool, String)> = sqlx::query_as(
            "SELECT i.indisprimary, pg_get_indexdef(i.indexrelid) FROM pg_index i \
             WHERE i.indrelid = $1::regclass AND i.indisunique",
        )
        .bind(table)
        .fetch_all(&pool)
        .await
        .unwrap();
        assert_eq!(unique.len(), 1, "{table}: {unique:?}");
        assert!(unique[0].0, "{table}: {unique:?}");
        assert!(unique[0].1.ends_with(&format!("btree ({key})")), "{table}: {unique:?}");
    }
    let indexes: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_indexes WHERE tablename = 'attempts'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(indexes, 1, "the key is the only index attempts need");
}

/// Every text key of every index compares byte by byte ("C"), whatever the database's own collation: ids are
/// opaque, and a language's collation made each comparison a locale-aware one of two copied strings.
#[tokio::test]
async fn postgres_index_keys_compare_byte_by_byte() {
    let Some(db) = migrated_postgres("store::postgres_index_keys_compare_byte_by_byte").await else {
        return;
    };
    let pool = sqlx::PgPool::connect(&db.url).await.expect("connect");
    let keys: Vec<(String, String)> = sqlx::query_as(
        "SELECT c.relname::text, coll.collname::text FROM pg_index i \
         JOIN pg_class c ON c.oid = i.indexrelid \
         CROSS JOIN LATERAL unnest(i.indcollation::oid[]) AS k(collation_oid) \
         JOIN pg_collation coll ON coll.oid = k.collation_oid \
         WHERE c.relnamespace = 'public'::regnamespace AND c.relname NOT LIKE '\\_sqlx%'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    for index in ["deliveries_pkey", "deliveries_by_event", "events_pkey", "attempts_pkey", "interviews_pkey"] {
        assert!(keys.iter().any(|(name, _)| name == index), "{index} has no text key: {keys:?}");
    }
    let other: Vec<_> = keys.iter().filter(|(_, collation)| collation != "C").collect();
    assert!(other.is_empty(), "text keys under another collation: {other:?}");
}

/// Finishing a delivery changes no column any index of deliveries is made of, and its page has room for the
/// new version: PostgreSQL writes it in place, with no index entry (the queue is a table of its own for this).
#[tokio::test]
async fn postgres_finished_deliveries_are_updated_in_place() {
    let Some(db) = postgres_database("store::postgres_finished_deliveries_are_updated_in_place").await else {
        return;
    };
    let f = fixture_in(db, None).await;
    f.endpoints(20).await;
    f.events(5).await;
    let claims = f.store.claim_due(NOW, NOW + 1_000, 200, &[]).await.unwrap();
    assert_eq!(claims.len(), 100);
    let results: Vec<AttemptResult> = claims.iter().map(|c| result(c, Next::Succeeded)).collect();
    f.store.record_attempts(Arc::from(results)).await.unwrap();
    assert!(f.store.claim_due(NOW + 10_000, NOW + 11_000, 200, &[]).await.unwrap().is_empty(), "all finished");

    // Table statistics reach the view when a connection reports them: at the latest when it ends, so the
    // store's connections are ended.
    let pool = sqlx::PgPool::connect(&f.db.url).await.expect("connect");
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .execute(&pool)
    .await
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let (updated, in_place) = loop {
        let (updated, in_place): (i64, i64) =
            sqlx::query_as("SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'deliveries'")
                .fetch_one(&pool)
                .await
                .unwrap();
        if updated >= 100 || std::time::Instant::now() > deadline {
            break (updated, in_place);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(updated, 100, "one update per finished delivery");
    assert_eq!(in_place, updated, "every delivery finished in place");
}

/// A deadlock is told from other database errors (deleting an endpoint tries again after one), and a write
/// the database refuses from one it could not make (results are then written one by one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_deadlock_is_told_from_other_errors() {
    use sqlx::Connection;
    use tidings::store::StoreError;
    use tidings::store::postgres::is_deadlock;

    let Some(db) = migrated_postgres("store::postgres_a_deadlock_is_told_from_other_errors").await else {
        return;
    };
    let mut connection = sqlx::PgConnection::connect(&db.url).await.expect("connect");
    let nul = sqlx::query("SELECT $1::text").bind("a\0b").execute(&mut connection).await.unwrap_err();
    assert!(StoreError::Database(nul).refused(), "a NUL in text is refused");
    let unreachable =
        sqlx::PgConnection::connect(&format!("postgres://postgres@127.0.0.1:{}/x", crate::helpers::free_port()))
            .await
            .unwrap_err();
    assert!(!StoreError::Database(unreachable).refused(), "an unreachable server refused nothing");
    let sqlite = rusqlite::Connection::open_in_memory().unwrap();
    sqlite.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY); INSERT INTO t VALUES (1);").unwrap();
    let constraint = sqlite.execute("INSERT INTO t VALUES (1)", []).unwrap_err();
    assert!(StoreError::Sqlite(constraint).refused(), "a unique constraint refuses");

    let mut setup = sqlx::PgConnection::connect(&db.url).await.expect("connect");
    sqlx::raw_sql("CREATE TABLE pair (id INT PRIMARY KEY); INSERT INTO pair VALUES (1), (2);")
        .execute(&mut setup)
        .await
        .unwrap();
    let duplicate = sqlx::query("INSERT INTO pair VALUES (1)").execute(&mut setup).await.unwrap_err();
    assert!(!is_deadlock(&duplicate), "{duplicate}");
    assert!(StoreError::Database(duplicate).refused());

    // Each locks one row and, once both hold theirs, waits for the other's: PostgreSQL ends one of them.
    let both_hold = Arc::new(tokio::sync::Barrier::new(2));
    let lock_both = |first: i32, second: i32| {
        let (url, both_hold) = (db.url.clone(), both_hold.clone());
        async move {
            let mut connection = sqlx::PgConnection::connect(&url).await.expect("connect");
            let mut tx = connection.begin().await.unwrap();
            sqlx::query("SELECT 1 FROM pair WHERE id = $1 FOR UPDATE").bind(first).execute(&mut *tx).await.unwrap();
            both_hold.wait().await;
            sqlx::query("SELECT 1 FROM pair WHERE id = $1 FOR UPDATE").bind(second).execute(&mut *tx).await.map(|_| ())
        }
    };
    let (a, b) = tokio::join!(lock_both(1, 2), lock_both(2, 1));
    let errors: Vec<sqlx::Error> = [a, b].into_iter().filter_map(Result::err).collect();
    assert_eq!(errors.len(), 1, "one of the two is ended");
    assert!(is_deadlock(&errors[0]), "{}", errors[0]);
    let deadlock = errors.into_iter().next().unwrap();
    assert!(!StoreError::Database(deadlock).refused(), "a deadlock may pass when tried again");
}

/// A PostgreSQL database written before migration 7 keeps its queue when the queue moves to a table of its own:
/// a due delivery is claimed, a leased one only once its lease has run out, a finished one never; a result
/// under a lease taken before the migration finishes its delivery while that lease holds, and after it has run
/// out and been taken again is logged but moves nothing.
#[tokio::test]
async fn postgres_migration_7_keeps_the_queue() {
    let Some(db) = postgres_database("store::postgres_migration_7_keeps_the_queue").await else {
        return;
    };
    let earlier = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir("migrations/postgres").unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap().to_string_lossy().as_ref() < "0007" {
            std::fs::copy(&path, earlier.path().join(path.file_name().unwrap())).unwrap();
        }
    }
    let pool = sqlx::PgPool::connect(&db.url).await.expect("connect");
    sqlx::migrate::Migrator::new(earlier.path()).await.unwrap().run(&pool).await.expect("migrations 1 to 6");
    let (org, endpoint, event) =
        ("org_0000000000010000000000aa", "ep_0000000000010000000000aa", "evt_0000000000010000000000aa");
    let [due, held, expired, done] = ["aa", "bb", "cc", "dd"].map(|end| format!("dlv_00000000000100000000{end}00"));
    let pending = |id: &str, lease: &str| {
        format!(
            "INSERT INTO deliveries (id, org_id, event_id, endpoint_id, status, next_attempt_at, run_at, lease_until, \
                                     lease_token, manual, created_at, updated_at) \
             VALUES ('{id}', '{org}', '{event}', '{endpoint}', 'pending', 5, 5, {lease}, {}, {}, 1, 1);",
            if lease == "NULL" { "NULL".to_owned() } else { format!("'lease_{lease}'") },
            id == due,
        )
    };
    sqlx::raw_sql(&format!(
        "INSERT INTO organizations (id, name, created_at) VALUES ('{org}', 'Acme', 1);
         INSERT INTO endpoints (id, org_id, url, description, event_types, enabled, secret, created_at, updated_at)
             VALUES ('{endpoint}', '{org}', 'http://127.0.0.1:9/hook', '', '[\"{EVENT_TYPE}\"]', true,
                     'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', 1, 1);
         INSERT INTO events (id, org_id, type, payload, created_at) VALUES ('{event}', '{org}', '{EVENT_TYPE}', '{{\"n\":1}}', 1);
         {}{}{}
         INSERT INTO deliveries (id, org_id, event_id, endpoint_id, status, attempt_count, scheduled_count, created_at, updated_at)
             VALUES ('{done}', '{org}', '{event}', '{endpoint}', 'succeeded', 1, 1, 1, 2);",
        pending(&due, "NULL"),
        pending(&held, "500"),
        pending(&expired, "8"),
    ))
    .execute(&pool)
    .await
    .expect("rows written before migration 7");

    let store = tidings::store::open(&db.url).await.expect("open and migrate the store");
    let mut claims = store.claim_due(10, 1_000, 10, &[]).await.unwrap();
    claims.sort_by(|a, b| a.delivery_id.cmp(&b.delivery_id));
    let claimed: Vec<&str> = claims.iter().map(|c| c.delivery_id.as_str()).collect();
    assert_eq!(claimed, [due.as_str(), expired.as_str()], "the due one and the one whose lease ran out");
    assert_eq!(claims[0].payload.as_ref(), b"{\"n\":1}");
    assert_eq!((claims[0].trigger, claims[1].trigger), (Trigger::Manual, Trigger::Scheduled), "asked for by hand");

    let under = |id: &str, lease: &str| AttemptResult {
        delivery_id: id.to_owned(),
        lease_token: format!("lease_{lease}"),
        ..result(&claims[0], Next::Succeeded)
    };
    store.record_attempts(Arc::from([under(&held, "500"), under(&expired, "8")])).await.unwrap();
    let status = |id: String| {
        let store = store.clone();
        async move {
            let (delivery, attempts) = store.get_delivery(org, &id).await.unwrap().unwrap();
            (delivery.status, attempts.len())
        }
    };
    assert_eq!(status(held.clone()).await, (DeliveryStatus::Succeeded, 1), "its lease still held");
    assert_eq!(status(expired.clone()).await, (DeliveryStatus::Pending, 1), "logged, but its lease was taken again");
    store.record_attempts(Arc::from([result(&claims[1], Next::Succeeded)])).await.unwrap();
    assert_eq!(status(expired.clone()).await, (DeliveryStatus::Succeeded, 2));
    assert_eq!(status(done.clone()).await, (DeliveryStatus::Succeeded, 0));
    let queued: Vec<String> =
        sqlx::query_scalar("SELECT delivery_id FROM delivery_queue").fetch_all(&pool).await.unwrap();
    assert_eq!(queued, [due], "only the one still leased is left in the queue");
}

/// Each update committer has a connection of its own (they take batches in turn). Lost while idle, it is found
/// out and replaced before the next update; lost under an update, that update fails and writes nothing, and
/// the next one connects again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_updates_go_on_after_the_committers_connection_is_lost() {
    use tidings::store::postgres::{CHECK_AFTER_IDLE, COMMITTER_NAME};

    let Some(db) = migrated_postgres("store::postgres_updates_go_on_after_the_committers_connection_is_lost").await
    else {
        return;
    };
    let store = tidings::store::open(&db.url).await.expect("open the store");
    let org = store.create_org("Acme", &format!("hash-{}", rand::random::<u64>())).await.expect("org");
    let patch = InterviewPatch::parse(&serde_json::json!({"interview_outcome": "qualified"})).unwrap();
    let update = |candidate: &'static str| {
        let (store, org, patch) = (store.clone(), org.clone(), patch.clone());
        async move { store.update_interview(&org, candidate, &patch).await }
    };
    let pool = sqlx::PgPool::connect(&db.url).await.expect("connect");
    let end_committers_connections = || async {
        let ended: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = $1 AND datname = current_database()",
        )
        .bind(COMMITTER_NAME)
        .fetch_all(&pool)
        .await
        .unwrap();
        assert_eq!(ended, [true, true], "each of the two committers has one connection, and they are ended");
    };

    // One update for each committer, in turn: both connect.
    update("cand_before_1").await.expect("an update before the loss");
    update("cand_before_2").await.expect("an update before the loss");
    end_committers_connections().await;
    tokio::time::sleep(CHECK_AFTER_IDLE + Duration::from_millis(100)).await;
    for candidate in ["cand_after_idle_1", "cand_after_idle_2"] {
        update(candidate).await.expect("a connection lost while idle is replaced before the update");
    }

    end_committers_connections().await;
    // Straight after the last updates the connections are used unchecked, so these meet the loss (unless this
    // machine took longer than the idle check to get here, and the check found it).
    for candidate in ["cand_broken_1", "cand_broken_2"] {
        if update(candidate).await.is_err() {
            assert!(store.get_interview(&org, candidate).await.unwrap().is_none(), "a failed update writes nothing");
        }
    }
    for candidate in ["cand_after_1", "cand_after_2"] {
        let after = update(candidate).await.expect("the next update connects again");
        assert!(after.event.is_some());
    }
    for candidate in
        ["cand_before_1", "cand_before_2", "cand_after_idle_1", "cand_after_idle_2", "cand_after_1", "cand_after_2"]
    {
        assert!(store.get_interview(&org, candidate).await.unwrap().is_some(), "{candidate}");
    }
}

/// A SQLite database written by a version before migration 3 keeps every row when it drops the foreign keys of
/// the tables written per webhook: the queue, the attempts log and the interviews read as before, the
/// indexes are back, and deleting an endpoint still takes its deliveries and their attempts.
#[tokio::test]
async fn sqlite_migration_3_keeps_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tidings.db").to_string_lossy().into_owned();
    let (org, endpoint) = ("org_0000000000010000000000aa", "ep_0000000000010000000000aa");
    let (event, pending, done) =
        ("evt_0000000000010000000000aa", "dlv_0000000000010000000000aa", "dlv_0000000000010000000000bb");
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch("PRAGMA foreign_keys = ON; CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY);")
            .unwrap();
        c.execute_batch(include_str!("../../migrations/sqlite/0001_init.sql")).unwrap();
        c.execute_batch(include_str!("../../migrations/sqlite/0002_lease_column.sql")).unwrap();
        c.execute_batch(&format!(
            "INSERT INTO schema_migrations VALUES (1), (2);
             INSERT INTO organizations (id, name, created_at) VALUES ('{org}', 'Acme', 1);
             INSERT INTO endpoints (id, org_id, url, description, event_types, enabled, secret, created_at, updated_at)
                 VALUES ('{endpoint}', '{org}', 'http://127.0.0.1:9/hook', '', '[\"{EVENT_TYPE}\"]', 1,
                         'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', 1, 1);
             INSERT INTO interviews VALUES ('{org}', 'cand_1', '{{\"candidate_id\":\"cand_1\"}}', 1);
             INSERT INTO events (id, org_id, type, payload, created_at) VALUES ('{event}', '{org}', '{EVENT_TYPE}', '{{\"n\":1}}', 1);
             INSERT INTO deliveries (id, org_id, event_id, endpoint_id, status, next_attempt_at, run_at, created_at, updated_at)
                 VALUES ('{pending}', '{org}', '{event}', '{endpoint}', 'pending', 5, 5, 1, 1);
             INSERT INTO deliveries (id, org_id, event_id, endpoint_id, status, attempt_count, scheduled_count, created_at, updated_at)
                 VALUES ('{done}', '{org}', '{event}', '{endpoint}', 'succeeded', 1, 1, 1, 2);
             INSERT INTO attempts (delivery_id, number, trigger, started_at, duration_ms, status_code, response_body)
                 VALUES ('{done}', 1, 'scheduled', 2, 3, 200, 'ok');"
        ))
        .unwrap();
    }
    let store = tidings::store::open(&path).await.expect("open and migrate the store");
    let log = std::fs::metadata(format!("{path}-wal")).map(|m| m.len()).unwrap_or(0);
    assert_eq!(log, 0, "the log of the copied tables was cut back");

    let (delivery, attempts) = store.get_delivery(org, done).await.unwrap().expect("the finished delivery");
    assert_eq!((delivery.status, delivery.attempt_count), (DeliveryStatus::Succeeded, 1));
    assert_eq!(attempts.len(), 1);
    assert_eq!((attempts[0].status_code, attempts[0].response_body.as_str()), (Some(200), "ok"));
    let events = store.list_events(org, PageRequest { limit: 10, before: None }).await.unwrap();
    assert_eq!(events.items.iter().map(|e| e.payload.as_str()).collect::<Vec<_>>(), ["{\"n\":1}"]);
    assert!(store.get_interview(org, "cand_1").await.unwrap().is_some());
    let claims = store.claim_due(10, 1_000, 10, &[]).await.unwrap();
    assert_eq!(claims.iter().map(|c| c.delivery_id.as_str()).collect::<Vec<_>>(), [pending], "the queue is intact");
    assert_eq!(claims[0].payload, "{\"n\":1}");

    for table in ["interviews", "events", "deliveries", "attempts"] {
        let keys = sqlite_number(&path, &format!("SELECT count(*) FROM pragma_foreign_key_list('{table}')"));
        assert_eq!(keys, 0, "{table} declares no foreign key");
    }
    let indexes = sqlite_number(
        &path,
        "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name IN ('deliveries_due', \
         'deliveries_by_org', 'deliveries_by_endpoint', 'deliveries_by_event', 'events_by_org', \
         'attempts_by_delivery')",
    );
    assert_eq!(indexes, 6, "every index is built again");

    assert!(store.delete_endpoint(org, endpoint).await.unwrap());
    let left = sqlite_number(&path, "SELECT (SELECT count(*) FROM deliveries) + (SELECT count(*) FROM attempts)");
    assert_eq!(left, 0, "the endpoint's deliveries and attempts went with it");
}

/// The one number `sql` answers, read from the SQLite file at `path` on a connection of the test's own.
fn sqlite_number(path: &str, sql: &str) -> i64 {
    rusqlite::Connection::open(path).unwrap().query_row(sql, [], |r| r.get(0)).unwrap()
}

/// SQLite's writer runs the workers' writes ahead of the updates waiting, and commits a long run of updates in
/// several transactions: an attempt's result, which holds a slot of the attempts in flight, is not written
/// after every update queued before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_writes_results_ahead_of_waiting_updates() {
    use std::sync::atomic::{AtomicUsize, Ordering};

    let f = fixture().await;
    f.endpoints(50).await;
    f.events(1).await;
    let claims = f.store.claim_due(NOW, NOW + 1_000, 1, &[]).await.unwrap();
    let patch = InterviewPatch::parse(&serde_json::json!({"interview_outcome": "qualified"})).unwrap();
    let done = AtomicUsize::new(0);
    // Polled in this order, each future sends its write before the next is polled: the result is queued
    // behind the sixty-four updates, each of which writes fifty deliveries.
    let updates = (0..64).map(|i| {
        let (store, org, patch, done) = (f.store.clone(), f.org.clone(), &patch, &done);
        Box::pin(async move {
            store.update_interview(&org, &format!("cand_{i}"), patch).await.expect("update");
            done.fetch_add(1, Ordering::SeqCst);
            None
        }) as std::pin::Pin<Box<dyn std::future::Future<Output = Option<usize>> + Send + '_>>
    });
    let record = Box::pin(async {
        f.store.record_attempts(Arc::from([result(&claims[0], Next::Succeeded)])).await.expect("record");
        Some(done.load(Ordering::SeqCst))
    });
    let outcomes = futures_util::future::join_all(updates.chain(std::iter::once(record as _))).await;
    let updates_before = outcomes.last().copied().flatten().expect("the result was written");
    assert!(updates_before < 64, "the result waited for every update queued before it");
    assert_eq!(done.load(Ordering::SeqCst), 64);
    let (delivery, _) = f.store.get_delivery(&f.org, &claims[0].delivery_id).await.unwrap().unwrap();
    assert_eq!(delivery.status, DeliveryStatus::Succeeded);
}

/// On SQLite a result finds its delivery by row number, and a row number freed by a delete is given to the next
/// row: a late result for a deleted delivery must not land on the delivery that took its number.
#[tokio::test]
async fn sqlite_a_late_result_does_not_land_on_a_reused_row() {
    let f = fixture().await;
    let doomed_endpoint = f.endpoint(true).await;
    f.events(1).await;
    let doomed = f.store.claim_due(NOW, NOW + 1_000, 10, &[]).await.unwrap().remove(0);
    assert!(f.store.delete_endpoint(&f.org, &doomed_endpoint).await.unwrap());
    f.endpoint(true).await;
    f.events(1).await;
    let fresh = f.store.claim_due(NOW, NOW + 1_000, 10, &[]).await.unwrap().remove(0);
    assert_eq!(fresh.row, doomed.row, "the row number was given again");

    f.store.record_attempts(Arc::from([result(&doomed, Next::Succeeded)])).await.unwrap();
    let (delivery, attempts) = f.store.get_delivery(&f.org, &fresh.delivery_id).await.unwrap().unwrap();
    assert_eq!((delivery.status, delivery.attempt_count), (DeliveryStatus::Pending, 0));
    assert!(attempts.is_empty(), "{attempts:?}");
    f.store.record_attempts(Arc::from([result(&fresh, Next::Succeeded)])).await.unwrap();
    let (delivery, attempts) = f.store.get_delivery(&f.org, &fresh.delivery_id).await.unwrap().unwrap();
    assert_eq!((delivery.status, attempts.len()), (DeliveryStatus::Succeeded, 1));
}
