//! A short-lived memory of which organization an API key (by hash) belongs to, so a busy client's requests
//! do not each read the store to authenticate. Only known keys are remembered; unknown ones are asked every
//! time, so guessing keys cannot fill it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::store::{Store, StoreError};

/// How long a key's organization is trusted without asking the store again.
const TTL: Duration = Duration::from_secs(60);
/// Most keys remembered; past it the memory starts over.
const CAPACITY: usize = 10_000;

#[derive(Default)]
pub struct KeyCache {
    known: Mutex<HashMap<String, (String, Instant)>>,
}

impl KeyCache {
    /// The organization of the key with this hash, from memory when fresh, otherwise from the store.
    pub async fn org_for_key(&self, store: &dyn Store, key_hash: &str) -> Result<Option<String>, StoreError> {
        if let Some((org, at)) = self.known.lock().unwrap_or_else(|e| e.into_inner()).get(key_hash)
            && at.elapsed() < TTL
        {
            return Ok(Some(org.clone()));
        }
        let org = store.org_for_key(key_hash).await?;
        if let Some(org) = &org {
            let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
            if known.len() >= CAPACITY {
                known.clear();
            }
            known.insert(key_hash.to_owned(), (org.clone(), Instant::now()));
        }
        Ok(org)
    }
}
