//! The store conformance suite: the same checks of the queue and its leases on SQLite and PostgreSQL.

use std::collections::HashSet;
use std::sync::Arc;

use secrecy::SecretString;
use tidings::domain::interview::{EVENT_TYPE, InterviewPatch};
use tidings::domain::retry::Next;
use tidings::store::{
    AttemptRecord, AttemptResult, Claim, DeliveryFilter, DeliveryStatus, Fanout, NewEndpoint, PageRequest, Store,
    Trigger,
};

use crate::db::{Backend, TestDb};
use crate::on_both_stores;

struct Fixture {
    store: Arc<dyn Store>,
    org: String,
    _db: TestDb,
}

async fn fixture() -> Fixture {
    let db = TestDb::new(Backend::current()).await.expect("a database");
    let store = tidings::store::open(&db.url).await.expect("open the store");
    let org = store.create_org("Acme", &format!("hash-{}", rand::random::<u64>())).await.expect("org");
    Fixture { store, org, _db: db }
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

    /// Deleting an endpoint takes its deliveries with it; a late result for one is dropped without an error.
    async fn deleting_an_endpoint_drops_its_queue() {
        let f = fixture().await;
        let endpoint = f.endpoint(true).await;
        f.events(3).await;
        let claims = f.store.claim_due(NOW, NOW + 1_000, 1, &[]).await.unwrap();
        assert!(f.store.delete_endpoint(&f.org, &endpoint).await.unwrap());
        f.store.record_attempts(Arc::from([result(&claims[0], Next::Succeeded)])).await.unwrap();
        assert!(f.store.claim_due(NOW + 5_000, NOW + 6_000, 10, &[]).await.unwrap().is_empty());
        let all = DeliveryFilter::default();
        let page = f.store.list_deliveries(&f.org, &all, PageRequest { limit: 10, before: None }).await.unwrap();
        assert!(page.items.is_empty());
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
}
