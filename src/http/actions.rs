//! What the JSON API and the Developer Settings pages both do: each action once, so the two surfaces cannot
//! drift apart (an id that cannot exist answers nothing without a query; writes that make work wake the workers).

use super::AppState;
use crate::domain::ids;
use crate::domain::interview::{EVENT_TYPE, EXAMPLE_BODY};
use crate::domain::signing;
use crate::domain::time::now_ms;
use crate::store::{
    AttemptRecord, DeliveryFilter, DeliveryRecord, EndpointRecord, Fanout, Page, PageRequest, StoreError,
};

/// Why a test event is refused, in the words both surfaces show.
pub const TEST_ON_DISABLED: &str = "the endpoint is disabled; enable it to send a test event";

/// Why a manual retry is refused, in the words both surfaces show.
pub const RETRY_ON_DISABLED: &str = "the endpoint is disabled; enable it to retry this delivery";

/// What asking for a manual retry did.
pub enum Retry {
    /// The delivery, due now.
    Queued(DeliveryRecord),
    /// Its endpoint is disabled, so no worker would take it: nothing was changed.
    Disabled,
    /// There is no such delivery.
    Gone,
}

/// What sending a test event did.
pub enum TestEvent {
    /// The delivery to the endpoint, due now.
    Sent(DeliveryRecord),
    /// The endpoint is disabled, so nothing was sent.
    Disabled,
    /// The endpoint was deleted meanwhile.
    Gone,
}

impl AppState {
    /// The organization an API key belongs to, by the key's hash: the API and the settings pages both ask
    /// through the cache of known keys.
    pub async fn org_for_key_hash(&self, key_hash: &str) -> Result<Option<String>, StoreError> {
        self.keys.org_for_key(self.store.as_ref(), key_hash).await
    }

    /// The organization's endpoint with this id.
    pub async fn endpoint(&self, org: &str, id: &str) -> Result<Option<EndpointRecord>, StoreError> {
        if !ids::has_prefix(id, ids::ENDPOINT) {
            return Ok(None);
        }
        self.store.get_endpoint(org, id).await
    }

    /// Deletes the organization's endpoint with this id; `false` if there is none.
    pub async fn delete_endpoint(&self, org: &str, id: &str) -> Result<bool, StoreError> {
        Ok(ids::has_prefix(id, ids::ENDPOINT) && self.store.delete_endpoint(org, id).await?)
    }

    /// A page of the organization's deliveries, newest first. A filter by an id that cannot exist (not an
    /// endpoint's or an event's, as the filter names) matches nothing, without a query: such text may hold
    /// what a database cannot compare, like a NUL.
    pub async fn deliveries(
        &self,
        org: &str,
        filter: &DeliveryFilter,
        page: PageRequest,
    ) -> Result<Page<DeliveryRecord>, StoreError> {
        let cannot_exist = |id: &Option<String>, prefix| id.as_deref().is_some_and(|id| !ids::has_prefix(id, prefix));
        if cannot_exist(&filter.endpoint_id, ids::ENDPOINT) || cannot_exist(&filter.event_id, ids::EVENT) {
            return Ok(Page { items: Vec::new(), next_cursor: None });
        }
        self.store.list_deliveries(org, filter, page).await
    }

    /// The organization's delivery with this id, with its attempts.
    pub async fn delivery(
        &self,
        org: &str,
        id: &str,
    ) -> Result<Option<(DeliveryRecord, Vec<AttemptRecord>)>, StoreError> {
        if !ids::has_prefix(id, ids::DELIVERY) {
            return Ok(None);
        }
        self.store.get_delivery(org, id).await
    }

    /// A new signing secret for the endpoint; the old one keeps signing for the configured grace period.
    pub async fn rotate_secret(&self, org: &str, id: &str) -> Result<Option<EndpointRecord>, StoreError> {
        if !ids::has_prefix(id, ids::ENDPOINT) {
            return Ok(None);
        }
        let previous_until = now_ms() + self.config.secret_grace.as_millis() as i64;
        self.store.rotate_secret(org, id, signing::generate_secret(), previous_until).await
    }

    /// Sends the document's example `interview.updated` body to this endpoint alone.
    pub async fn send_test_event(&self, org: &str, endpoint: &EndpointRecord) -> Result<TestEvent, StoreError> {
        if !endpoint.enabled {
            return Ok(TestEvent::Disabled);
        }
        let target = Fanout::Endpoint(endpoint.id.clone());
        let (_, deliveries) = self.store.create_event(org, EVENT_TYPE, EXAMPLE_BODY, target).await?;
        self.event_written(EVENT_TYPE);
        // One delivery, to this endpoint, unless it was deleted in between.
        Ok(deliveries.into_iter().next().map_or(TestEvent::Gone, TestEvent::Sent))
    }

    /// Makes a delivery due now for one manual attempt, whatever its status, and wakes the workers; refused
    /// while its endpoint is disabled (an endpoint disabled right after the check holds the retry until it is
    /// enabled again, like any delivery of it).
    pub async fn retry_delivery(&self, org: &str, id: &str) -> Result<Retry, StoreError> {
        let Some((delivery, _)) = self.delivery(org, id).await? else { return Ok(Retry::Gone) };
        match self.store.get_endpoint(org, &delivery.endpoint_id).await? {
            Some(endpoint) if !endpoint.enabled => return Ok(Retry::Disabled),
            _ => {}
        }
        let Some(delivery) = self.store.request_retry(org, id).await? else { return Ok(Retry::Gone) };
        self.wake.notify_one();
        Ok(Retry::Queued(delivery))
    }
}
