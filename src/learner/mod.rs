//! What the companion knows about a learner: the profile (from the token and the course
//! platform), the mentor's sessions (notes and goals), and the files of the learner's project.
//! Plain data, and the seam it is read and written through, [`LearnerStore`]: served by
//! [`crate::store::Store`], and by an in-memory fake in unit tests of the turn and the digest.
pub mod validate;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::store::StoreError;

/// One writer at a time per learner of their project files and of their erasure: a lock per
/// learner id, so that an upload in flight and a deletion never interleave their database and
/// index writes (which would leave rows without vectors, or vectors without rows).
#[derive(Default)]
pub struct WriteLocks {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// Past this many learners' locks, those nobody holds or waits for are dropped.
const KEPT_LOCKS: usize = 1024;

impl WriteLocks {
    /// Waits for `learner`'s other writers, then holds them off until the guard is dropped.
    pub async fn lock(&self, learner: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
            if locks.len() > KEPT_LOCKS {
                // Held or awaited locks have clones outside the map.
                locks.retain(|_, lock| Arc::strong_count(lock) > 1);
            }
            locks.entry(learner.to_string()).or_default().clone()
        };
        lock.lock_owned().await
    }
}

/// A learner as the course platform describes them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LearnerProfile {
    pub id: String,
    pub name: Option<String>,
    /// Language the answers follow: "en" or "fr" (others are kept and passed to the model).
    pub locale: String,
    pub program: Option<String>,
    pub course: Option<String>,
    pub chapter: Option<String>,
    /// Id of the current professional project (a brief under `course-content/<course>/projects/`).
    pub project: Option<String>,
    pub chapters_completed: Vec<String>,
    pub mentor_id: Option<String>,
    /// The mentor's name as the platform gives it, shown to the learner.
    pub mentor_name: Option<String>,
    pub updated_at: i64,
}

impl LearnerProfile {
    pub fn new(id: &str) -> Self {
        Self {
            id: id.to_string(),
            name: None,
            locale: "en".to_string(),
            program: None,
            course: None,
            chapter: None,
            project: None,
            chapters_completed: Vec::new(),
            mentor_id: None,
            mentor_name: None,
            updated_at: 0,
        }
    }
}

/// One mentor session: when, what was said, and what the learner should do next.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MentorSession {
    pub id: String,
    pub learner_id: String,
    pub mentor_id: String,
    /// YYYY-MM-DD.
    pub held_on: String,
    pub notes: String,
    pub goals: Vec<String>,
    pub created_at: i64,
}

/// A file of a learner's project, as stored (text only; binaries are refused before this).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProjectFile {
    pub learner_id: String,
    pub project: String,
    /// Relative, normalised, `/`-separated.
    pub path: String,
    pub content: String,
    pub sha256: String,
    pub bytes: i64,
    /// api | archive | chat | git
    pub origin: String,
    pub updated_at: i64,
}

/// A learner's records: profile, mentor sessions, project files.
#[async_trait]
pub trait LearnerStore: Send + Sync {
    async fn learner(&self, id: &str) -> Result<Option<LearnerProfile>, StoreError>;
    /// Creates or replaces the profile.
    async fn put_learner(&self, profile: &LearnerProfile) -> Result<(), StoreError>;
    /// Learners of one mentor, or every learner when `mentor_id` is `None`.
    async fn learners(&self, mentor_id: Option<&str>) -> Result<Vec<LearnerProfile>, StoreError>;
    async fn add_mentor_session(&self, session: &MentorSession) -> Result<(), StoreError>;
    /// A learner's sessions, latest first.
    async fn mentor_sessions(&self, learner_id: &str) -> Result<Vec<MentorSession>, StoreError>;
    /// Writes `files` (all of one learner and project) in one transaction; with `replace_all`
    /// the project's other files are removed. Either everything is written or nothing.
    async fn put_project_files(
        &self,
        learner_id: &str,
        project: &str,
        files: &[ProjectFile],
        replace_all: bool,
    ) -> Result<(), StoreError>;
    /// A learner's files of one project (or of every project), ordered by path.
    async fn project_files(
        &self,
        learner_id: &str,
        project: Option<&str>,
    ) -> Result<Vec<ProjectFile>, StoreError>;
    /// The names of a learner's projects, sorted.
    async fn project_names(&self, learner_id: &str) -> Result<Vec<String>, StoreError> {
        let mut names: Vec<String> = self
            .project_files(learner_id, None)
            .await?
            .into_iter()
            .map(|f| f.project)
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }
    /// Removes one file; false when there was none.
    async fn delete_project_file(
        &self,
        learner_id: &str,
        project: &str,
        path: &str,
    ) -> Result<bool, StoreError>;
    /// Removes everything stored about a learner: profile, sessions, files, conversations and
    /// messages (and, through the review tables' cascades, what hangs off them).
    async fn delete_learner(&self, learner_id: &str) -> Result<u64, StoreError>;
}
