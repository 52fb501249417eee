//! Erasing a learner: their vectors in the index, their review data (feedback, flags,
//! annotations), then their profile, sessions, project files and transcripts. Vectors go
//! first: if that fails nothing else is gone and the erasure can be repeated. Here beside the
//! retention purge, since `learner` is a leaf the review module already reads.
use crate::learner::{LearnerStore, WriteLocks};
use crate::retrieval::store::{StoreError as IndexError, VectorStore};
use crate::store::{Store, StoreError};

/// What an erasure removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Erased {
    /// Rows of every table, review data included.
    pub rows_removed: u64,
    pub project_files_removed: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum EraseError {
    #[error("cannot delete the vectors of learner {learner}")]
    Vectors {
        learner: String,
        #[source]
        source: IndexError,
    },
    #[error("cannot commit the vector index after deleting learner {learner}")]
    Commit {
        learner: String,
        #[source]
        source: IndexError,
    },
    #[error("cannot erase the stored data of a learner")]
    Store(#[from] StoreError),
}

/// Erases everything stored about `learner_id`; `None` when nothing was (no profile, no
/// files, no conversation). Holds the learner's project write lock (`locks`) throughout, so an
/// upload in flight finishes before (and is erased too) or starts after: never half of it
/// left behind as rows without vectors or vectors without rows.
pub async fn erase(
    vectors: &dyn VectorStore,
    review: &Store,
    learners: &dyn LearnerStore,
    locks: &WriteLocks,
    learner_id: &str,
) -> Result<Option<Erased>, EraseError> {
    let _writes = locks.lock(learner_id).await;
    let profile = learners.learner(learner_id).await?;
    let files = learners.project_files(learner_id, None).await?;
    if profile.is_none()
        && files.is_empty()
        && review.learner_conversations(learner_id).await?.is_empty()
    {
        return Ok(None);
    }
    let learner = || learner_id.to_string();
    // First: from now on the learner's tokens neither chat nor bring the profile back, even
    // while the rest is being deleted.
    review.mark_erased(learner_id).await?;
    vectors
        .delete_learner(learner_id)
        .await
        .map_err(|source| EraseError::Vectors {
            learner: learner(),
            source,
        })?;
    vectors
        .commit()
        .await
        .map_err(|source| EraseError::Commit {
            learner: learner(),
            source,
        })?;
    let review_rows = review.delete_learner_review(learner_id).await?;
    let rows = learners.delete_learner(learner_id).await?;
    Ok(Some(Erased {
        rows_removed: rows + review_rows,
        project_files_removed: files.len(),
    }))
}
