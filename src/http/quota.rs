//! Per-learner quotas and rates ([`crate::config::Quotas`], `limits.asks_per_minute`), counted in
//! the shared database ([`crate::store::Store::take_usage`]) so that they hold across every node
//! that shares it. A refusal says which quota, and `retry_after` when waiting helps; the
//! gateway turns it into an `error` frame, a handler into a 429.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config;
use crate::store::{Store, StoreError};
use crate::transcript::now_ms;

use super::ApiError;

/// The quota settings, and what this node counts itself: the git clones running (clones are
/// processes of one node).
pub struct Quotas {
    pub settings: config::Quotas,
    git_clones: Arc<Semaphore>,
    cloning: Arc<Mutex<HashMap<String, usize>>>,
}

/// A git clone under way, counted until dropped.
pub struct ClonePermit {
    _global: OwnedSemaphorePermit,
    cloning: Arc<Mutex<HashMap<String, usize>>>,
    learner: String,
}

impl Drop for ClonePermit {
    fn drop(&mut self) {
        let mut cloning = self.cloning.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = cloning.get_mut(&self.learner) {
            *n -= 1;
            if *n == 0 {
                cloning.remove(&self.learner);
            }
        }
    }
}

impl Quotas {
    pub fn new(settings: config::Quotas) -> Self {
        Self {
            git_clones: Arc::new(Semaphore::new(settings.git_clones)),
            cloning: Arc::new(Mutex::new(HashMap::new())),
            settings,
        }
    }

    /// A place for one more git clone of `learner`, or the 429 saying which cap is reached.
    pub fn git_clone(&self, learner: &str) -> Result<ClonePermit, ApiError> {
        let mut cloning = self.cloning.lock().unwrap_or_else(|e| e.into_inner());
        let running = cloning.get(learner).copied().unwrap_or(0);
        if running >= self.settings.git_clones_per_learner {
            return Err(ApiError::TooMany {
                message: format!(
                    "learner {learner} already has {running} git imports running, the limit; wait for it to end"
                ),
                retry_after: None,
            });
        }
        let global = self.git_clones.clone().try_acquire_owned().map_err(|_| {
            ApiError::TooMany {
                message: format!(
                    "{} git imports are running on this server, the limit; try again in a minute",
                    self.settings.git_clones
                ),
                retry_after: Some(60),
            }
        })?;
        *cloning.entry(learner.to_string()).or_default() += 1;
        Ok(ClonePermit {
            _global: global,
            cloning: self.cloning.clone(),
            learner: learner.to_string(),
        })
    }

    /// Counts `bytes` of project files uploaded by `learner` today, or the 429 past the quota.
    pub async fn take_upload(
        &self,
        store: &Store,
        learner: &str,
        bytes: u64,
    ) -> Result<(), ApiError> {
        let limit = self.settings.upload_bytes_per_day;
        take(
            store,
            learner,
            Kind::UploadBytes,
            bytes,
            limit,
            "bytes of uploads",
        )
        .await?
        .map_err(ApiError::from)
    }
}

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 86_400_000;

/// What a learner uses, one counter each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Questions,
    Tokens,
    UploadBytes,
    Attaches,
    Feedback,
    MentorRequests,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Self::Questions => "questions",
            Self::Tokens => "tokens",
            Self::UploadBytes => "upload_bytes",
            Self::Attaches => "attaches",
            Self::Feedback => "feedback",
            Self::MentorRequests => "mentor_requests",
        }
    }

    fn window_ms(self) -> i64 {
        match self {
            Self::Questions | Self::Attaches | Self::Feedback => MINUTE_MS,
            Self::MentorRequests => HOUR_MS,
            Self::Tokens | Self::UploadBytes => DAY_MS,
        }
    }

    /// "per minute", "per hour", "per day (UTC)".
    fn per(self) -> &'static str {
        match self.window_ms() {
            MINUTE_MS => "per minute",
            HOUR_MS => "per hour",
            _ => "per day (UTC)",
        }
    }

    /// Rates (a few per minute or hour) are `rate_limited`; daily amounts `quota_exceeded`.
    pub fn is_rate(self) -> bool {
        self.window_ms() < DAY_MS
    }
}

/// A request over a learner's quota.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub kind: Kind,
    /// For people: which quota, and its limit.
    pub message: String,
    /// Seconds until the window turns.
    pub retry_after: u64,
}

impl From<Refused> for ApiError {
    fn from(refused: Refused) -> Self {
        ApiError::TooMany {
            message: refused.message,
            retry_after: Some(refused.retry_after),
        }
    }
}

/// The start of the window `kind` counts in at `now` (ms), and the seconds left in it.
fn window(kind: Kind, now: i64) -> (i64, u64) {
    let len = kind.window_ms();
    let start = now - now.rem_euclid(len);
    let left_ms = start + len - now;
    (start, ((left_ms + 999) / 1000).max(1) as u64)
}

fn refused(kind: Kind, limit: u64, what: &str, now: i64) -> Refused {
    let (_, retry_after) = window(kind, now);
    Refused {
        kind,
        message: format!(
            "more than {limit} {what} {}; try again in {retry_after} s",
            kind.per()
        ),
        retry_after,
    }
}

/// Counts `amount` of `kind` for `learner` if it stays within `limit` (0: no limit); `what`
/// names the unit in the refusal ("questions", "bytes of uploads").
pub async fn take(
    store: &Store,
    learner: &str,
    kind: Kind,
    amount: u64,
    limit: u64,
    what: &str,
) -> Result<Result<(), Refused>, StoreError> {
    if limit == 0 {
        return Ok(Ok(()));
    }
    let now = now_ms();
    let (start, _) = window(kind, now);
    let taken = store
        .take_usage(
            learner,
            kind.name(),
            start,
            i64::try_from(amount).unwrap_or(i64::MAX),
            i64::try_from(limit).unwrap_or(i64::MAX),
        )
        .await?;
    Ok(match taken {
        Some(_) => Ok(()),
        None => Err(refused(kind, limit, what, now)),
    })
}

/// Refuses when `learner` has already used `limit` of `kind` in this window (the amount is
/// known only afterwards, like an answer's tokens: see [`record`]).
pub async fn check(
    store: &Store,
    learner: &str,
    kind: Kind,
    limit: u64,
    what: &str,
) -> Result<Result<(), Refused>, StoreError> {
    if limit == 0 {
        return Ok(Ok(()));
    }
    let now = now_ms();
    let (start, _) = window(kind, now);
    let used = store.usage(learner, kind.name(), start).await?;
    Ok(if used >= i64::try_from(limit).unwrap_or(i64::MAX) {
        Err(refused(kind, limit, what, now))
    } else {
        Ok(())
    })
}

/// Counts what was used, whatever the limit.
pub async fn record(
    store: &Store,
    learner: &str,
    kind: Kind,
    amount: u64,
) -> Result<(), StoreError> {
    if amount == 0 {
        return Ok(());
    }
    let (start, _) = window(kind, now_ms());
    store
        .add_usage(
            learner,
            kind.name(),
            start,
            i64::try_from(amount).unwrap_or(i64::MAX),
        )
        .await
}

/// Counters older than two days are of no use: deleted now and then.
pub async fn purge(store: &Store) -> Result<u64, StoreError> {
    store.purge_usage(now_ms() - 2 * DAY_MS).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_starts_on_its_boundary_and_says_how_long_is_left() {
        assert_eq!(window(Kind::Questions, 125_000), (120_000, 55));
        assert_eq!(window(Kind::Questions, 120_000), (120_000, 60));
        assert_eq!(window(Kind::Tokens, DAY_MS + 1), (DAY_MS, 86_400));
        assert_eq!(window(Kind::MentorRequests, HOUR_MS - 1), (0, 1));
    }

    #[test]
    fn a_refusal_names_the_quota_and_when_to_retry() {
        let refusal = refused(Kind::Questions, 3, "questions", 125_000);
        assert_eq!(refusal.retry_after, 55);
        assert_eq!(
            refusal.message,
            "more than 3 questions per minute; try again in 55 s"
        );
        assert!(Kind::Questions.is_rate() && !Kind::Tokens.is_rate());
    }

    fn quotas(git_clones: usize, per_learner: usize) -> Quotas {
        let mut settings =
            crate::config::Settings::defaults(std::path::Path::new("/nonexistent")).quotas;
        settings.git_clones = git_clones;
        settings.git_clones_per_learner = per_learner;
        Quotas::new(settings)
    }

    #[test]
    fn git_clones_are_capped_per_learner_and_in_all_until_one_ends() {
        let quotas = quotas(2, 1);
        let ada = quotas.git_clone("ada").unwrap();
        let error = quotas.git_clone("ada").err().unwrap();
        assert!(
            error
                .to_string()
                .contains("learner ada already has 1 git imports running"),
            "{error}"
        );
        let _bob = quotas.git_clone("bob").unwrap();
        let error = quotas.git_clone("cy").err().unwrap();
        assert!(
            error.to_string().contains("2 git imports are running"),
            "{error}"
        );
        drop(ada);
        assert!(quotas.git_clone("cy").is_ok());
        assert!(quotas.git_clone("ada").is_ok());
    }

    async fn temp_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let store = Store::connect(&url, 2).await.unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn the_database_counter_refuses_past_the_limit_per_learner() {
        let (_dir, store) = temp_store().await;
        let take = |learner: &'static str| {
            let store = store.clone();
            async move {
                take(&store, learner, Kind::Questions, 1, 2, "questions")
                    .await
                    .unwrap()
            }
        };
        assert!(take("a").await.is_ok());
        assert!(take("a").await.is_ok());
        let refusal = take("a").await.unwrap_err();
        assert!(refusal.retry_after >= 1 && refusal.retry_after <= 60);
        assert!(take("b").await.is_ok());
    }

    #[tokio::test]
    async fn tokens_are_recorded_after_use_and_checked_before_the_next_question() {
        let (_dir, store) = temp_store().await;
        assert!(
            check(&store, "a", Kind::Tokens, 100, "tokens")
                .await
                .unwrap()
                .is_ok()
        );
        record(&store, "a", Kind::Tokens, 150).await.unwrap();
        assert!(
            check(&store, "a", Kind::Tokens, 100, "tokens")
                .await
                .unwrap()
                .is_err()
        );
        assert!(
            check(&store, "a", Kind::Tokens, 0, "tokens")
                .await
                .unwrap()
                .is_ok()
        );
    }

    #[tokio::test]
    async fn stream_slots_are_held_until_released_and_never_shared() {
        let (_dir, store) = temp_store().await;
        let one = store.take_stream_slot("a", "t1", 2, 60_000).await.unwrap();
        let two = store.take_stream_slot("a", "t2", 2, 60_000).await.unwrap();
        assert_eq!((one, two), (Some(0), Some(1)));
        assert_eq!(
            store.take_stream_slot("a", "t3", 2, 60_000).await.unwrap(),
            None
        );
        assert_eq!(
            store.take_stream_slot("b", "t4", 2, 60_000).await.unwrap(),
            Some(0)
        );
        store.release_stream_slot("a", 0, "t1").await.unwrap();
        assert_eq!(
            store.take_stream_slot("a", "t3", 2, 60_000).await.unwrap(),
            Some(0)
        );
        // An expired lease (a node that died) frees its slot.
        assert_eq!(
            store.take_stream_slot("c", "t5", 1, -1).await.unwrap(),
            Some(0)
        );
        assert_eq!(
            store.take_stream_slot("c", "t6", 1, 60_000).await.unwrap(),
            Some(0)
        );
    }
}
