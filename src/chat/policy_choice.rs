//! Which policies a turn is held to: the course content's files, each replaced by the override
//! its course's team wrote through the API (kept in the database, `store::policies`). The
//! overrides are read again when their generation counter moved, which is checked before every
//! turn: an edit made on any node is enforced by the next answer on every node.
use std::sync::{Arc, Mutex};

use crate::guard::policy::Policies;
use crate::store::{Store, StoreError};

/// The overrides of every course, as this node last read them, put in force in `policies`.
pub struct LivePolicies {
    store: Arc<Store>,
    policies: Arc<Policies>,
    /// The generation last read; `None` until the first read.
    generation: Mutex<Option<i64>>,
    /// One reload at a time; the others wait for it and use its result.
    reloading: tokio::sync::Mutex<()>,
}

impl LivePolicies {
    pub fn new(store: Arc<Store>, policies: Arc<Policies>) -> Self {
        Self {
            store,
            policies,
            generation: Mutex::new(None),
            reloading: tokio::sync::Mutex::new(()),
        }
    }

    /// Reads the overrides again if the generation moved since they were read. A database that
    /// cannot be read leaves the overrides last read in force (logged).
    pub async fn refresh(&self) {
        if let Err(error) = self.refresh_if_changed().await {
            tracing::warn!(
                ?error,
                "cannot read the policy overrides; using the ones last read"
            );
        }
    }

    async fn refresh_if_changed(&self) -> Result<(), StoreError> {
        let generation = self.store.policy_generation().await?;
        if self.generation() == Some(generation) {
            return Ok(());
        }
        let _one_at_a_time = self.reloading.lock().await;
        if self.generation() == Some(generation) {
            return Ok(());
        }
        self.load().await
    }

    /// Reads the overrides again now (after a change made through this node) and puts them in
    /// force; one that does not load here is logged and its last good policy stays.
    pub async fn reload(&self) -> Result<(), StoreError> {
        let _one_at_a_time = self.reloading.lock().await;
        self.load().await
    }

    async fn load(&self) -> Result<(), StoreError> {
        let (generation, overrides) = self.store.policy_overrides().await?;
        let policies = self.policies.clone();
        // Reference files are read and fingerprinted: off the async workers.
        let errors = tokio::task::spawn_blocking(move || policies.set_overrides(overrides))
            .await
            .unwrap_or_default();
        for error in errors {
            tracing::error!(%error, "a course policy override did not load; its last good version stays live");
        }
        *self.generation.lock().unwrap_or_else(|e| e.into_inner()) = Some(generation);
        Ok(())
    }

    fn generation(&self) -> Option<i64> {
        *self.generation.lock().unwrap_or_else(|e| e.into_inner())
    }
}
