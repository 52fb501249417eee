//! Per-learner usage counted in the database, so that quotas hold across nodes: counters per
//! window (atomic upsert-increment that refuses to pass a limit), slots of answers streaming
//! at once, and the learners erased (migration 0006).
use sqlx::Row;

use super::{Store, StoreError};
use crate::transcript::now_ms;

impl Store {
    /// Adds `amount` to `learner`'s `kind` counter of the window starting at `window_start`
    /// (ms), unless the total would pass `limit`: the new total, or `None` (nothing added).
    /// One statement, so concurrent callers on any node never pass the limit together.
    pub async fn take_usage(
        &self,
        learner: &str,
        kind: &str,
        window_start: i64,
        amount: i64,
        limit: i64,
    ) -> Result<Option<i64>, StoreError> {
        if amount > limit {
            return Ok(None);
        }
        let row = sqlx::query(
            "INSERT INTO usage_counters (learner_id, kind, window_start, used) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (learner_id, kind, window_start) \
             DO UPDATE SET used = usage_counters.used + excluded.used \
             WHERE usage_counters.used + excluded.used <= $5 \
             RETURNING used",
        )
        .bind(learner)
        .bind(kind)
        .bind(window_start)
        .bind(amount)
        .bind(limit)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|row| row.try_get::<i64, _>("used")).transpose()?)
    }

    /// Adds `amount` whatever the total (what was used already, like an answer's tokens).
    pub async fn add_usage(
        &self,
        learner: &str,
        kind: &str,
        window_start: i64,
        amount: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO usage_counters (learner_id, kind, window_start, used) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (learner_id, kind, window_start) \
             DO UPDATE SET used = usage_counters.used + excluded.used",
        )
        .bind(learner)
        .bind(kind)
        .bind(window_start)
        .bind(amount)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// What `learner` used of `kind` in the window starting at `window_start`.
    pub async fn usage(
        &self,
        learner: &str,
        kind: &str,
        window_start: i64,
    ) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "SELECT used FROM usage_counters \
             WHERE learner_id = $1 AND kind = $2 AND window_start = $3",
        )
        .bind(learner)
        .bind(kind)
        .bind(window_start)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row
            .map(|row| row.try_get::<i64, _>("used"))
            .transpose()?
            .unwrap_or(0))
    }

    /// Deletes counters of windows that started before `before` (ms); the rows removed.
    pub async fn purge_usage(&self, before: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM usage_counters WHERE window_start < $1")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// Takes one of `learner`'s `slots` stream slots for `holder` until `lease_ms` from now:
    /// the slot, or `None` when every one is held by an answer whose lease has not expired.
    pub async fn take_stream_slot(
        &self,
        learner: &str,
        holder: &str,
        slots: u32,
        lease_ms: i64,
    ) -> Result<Option<i64>, StoreError> {
        let now = now_ms();
        for slot in 0..i64::from(slots) {
            let taken = sqlx::query(
                "INSERT INTO stream_slots (learner_id, slot, holder, expires_at) \
                 VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (learner_id, slot) \
                 DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
                 WHERE stream_slots.expires_at < $5 \
                 RETURNING slot",
            )
            .bind(learner)
            .bind(slot)
            .bind(holder)
            .bind(now + lease_ms)
            .bind(now)
            .fetch_optional(&self.pool)
            .await?;
            if taken.is_some() {
                return Ok(Some(slot));
            }
        }
        Ok(None)
    }

    /// Frees a slot taken by [`Store::take_stream_slot`] (if `holder` still holds it).
    pub async fn release_stream_slot(
        &self,
        learner: &str,
        slot: i64,
        holder: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM stream_slots WHERE learner_id = $1 AND slot = $2 AND holder = $3")
            .bind(learner)
            .bind(slot)
            .bind(holder)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records that `learner` was erased now (their counters and slots go): tokens issued
    /// before this no longer chat nor re-create the profile.
    pub async fn mark_erased(&self, learner: &str) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO erased_learners (learner_id, erased_at) VALUES ($1, $2) \
             ON CONFLICT (learner_id) DO UPDATE SET erased_at = excluded.erased_at",
        )
        .bind(learner)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        for sql in [
            "DELETE FROM usage_counters WHERE learner_id = $1",
            "DELETE FROM stream_slots WHERE learner_id = $1",
        ] {
            sqlx::query(sql).bind(learner).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// `learner` was registered again by the platform after an erasure: their tokens chat again.
    pub async fn clear_erased(&self, learner: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM erased_learners WHERE learner_id = $1")
            .bind(learner)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// When `learner` was last erased (ms), if ever.
    pub async fn erased_at(&self, learner: &str) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query("SELECT erased_at FROM erased_learners WHERE learner_id = $1")
            .bind(learner)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row
            .map(|row| row.try_get::<i64, _>("erased_at"))
            .transpose()?)
    }
}
