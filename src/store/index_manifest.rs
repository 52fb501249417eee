//! The shared index's record of what it holds (migration 0013) and the lock that lets one node
//! at a time bring it in line with the content: nodes starting together index once.
use sha2::Digest;
use sqlx::pool::PoolConnection;
use sqlx::{Any, Connection, Row};

use super::{Dialect, Store, StoreError};
use crate::transcript::now_ms;

/// Held while a node ingests into a shared index. On PostgreSQL a session advisory lock on a
/// connection of its own, which [`IndexLock::release`] closes; a node that dies mid-ingest
/// drops its connection and the lock with it. On SQLite (one node) it holds nothing.
pub struct IndexLock {
    connection: Option<PoolConnection<Any>>,
}

impl IndexLock {
    /// Gives the lock up (closing its connection: the lock goes with the session).
    pub async fn release(mut self) {
        if let Some(connection) = self.connection.take()
            && let Err(error) = connection.detach().close().await
        {
            tracing::warn!(%error, "closing the index lock's connection");
        }
    }
}

impl Drop for IndexLock {
    fn drop(&mut self) {
        // Never back into the pool still holding the lock: detached, the connection closes.
        if let Some(connection) = self.connection.take() {
            drop(connection.detach());
        }
    }
}

/// The advisory lock's key for `name`: the first 8 bytes of its SHA-256.
fn lock_key(name: &str) -> i64 {
    let digest = sha2::Sha256::digest(format!("companion-index:{name}").as_bytes());
    i64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

impl Store {
    /// Waits for, then takes, the lock on the shared index `name`.
    pub async fn lock_index(&self, name: &str) -> Result<IndexLock, StoreError> {
        if self.dialect == Dialect::Sqlite {
            return Ok(IndexLock { connection: None });
        }
        let mut connection = self.pool.acquire().await?;
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(lock_key(name))
            .execute(&mut *connection)
            .await?;
        Ok(IndexLock {
            connection: Some(connection),
        })
    }

    /// The manifest recorded for the shared index `name`, if any.
    pub async fn index_manifest(&self, name: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT manifest FROM index_manifests WHERE collection = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|row| row.try_get("manifest")).transpose()?)
    }

    /// Records `manifest` for the shared index `name`, written by node `by`.
    pub async fn save_index_manifest(
        &self,
        name: &str,
        manifest: &str,
        by: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO index_manifests (collection, manifest, updated_at, updated_by) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (collection) DO UPDATE SET manifest = excluded.manifest, \
             updated_at = excluded.updated_at, updated_by = excluded.updated_by",
        )
        .bind(name)
        .bind(manifest)
        .bind(now_ms())
        .bind(by)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
