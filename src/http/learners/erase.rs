//! `DELETE /api/v1/learners/{id}`: the learner erased from every store
//! ([`crate::review::erase`]).
use axum::extract::{Path, State};
use serde::Serialize;

use crate::auth::Claims;
use crate::http::access::{can_erase_learner, learner_not_found};
use crate::http::extract::Json;
use crate::http::{ApiError, AppState, ErrorBody};
use crate::review::erase::erase;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Erased {
    pub deleted: String,
    pub rows_removed: u64,
    pub project_files_removed: usize,
}

/// Admin or the platform's service token: removes the learner's transcripts, review data,
/// profile, sessions, project files and their vectors. Anyone else gets the 404 of a learner
/// that does not exist.
#[utoipa::path(
    delete,
    path = "/api/v1/learners/{id}",
    tag = "learners",
    params(("id" = String, Path, description = "The learner's id")),
    responses(
        (status = 200, description = "What was removed", body = Erased),
        crate::http::error::refusals::Unauthenticated,
        (status = 404, description = "No such learner, or the caller is not an admin or the platform", body = ErrorBody)
    )
)]
pub async fn erase_learner(
    State(state): State<AppState>,
    Path(id): Path<String>,
    claims: Claims,
) -> Result<Json<Erased>, ApiError> {
    if !can_erase_learner(&claims) {
        return Err(learner_not_found());
    }
    let vectors = state.chat.retriever.store();
    let learners = state.chat.learners.as_ref();
    let locks = state.chat.projects.write_locks();
    let erased = erase(
        vectors.as_ref(),
        state.review.as_ref(),
        learners,
        locks,
        &id,
    )
    .await?
    .ok_or_else(learner_not_found)?;
    tracing::info!(learner = %id, rows = erased.rows_removed,
        files = erased.project_files_removed, by = %claims.sub, "learner deleted");
    Ok(Json(Erased {
        deleted: id,
        rows_removed: erased.rows_removed,
        project_files_removed: erased.project_files_removed,
    }))
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use async_trait::async_trait;
    use tokio::sync::{Notify, Semaphore};

    use super::*;
    use crate::config::{RetrievalMode, Settings};
    use crate::learner::{LearnerProfile, LearnerStore};
    use crate::project::{IncomingFile, Origin, Projects};
    use crate::retrieval::Retriever;
    use crate::retrieval::store::{
        Hit, IndexSchema, IndexedPoint, SearchQuery, StoreError as IndexError, VectorStore,
    };
    use crate::store::Store;

    /// A vector index that remembers (source, learner) of its points and holds every upsert
    /// until the test opens the gate: an upload caught between its rows and its vectors.
    struct GatedIndex {
        points: Mutex<Vec<(String, Option<String>)>>,
        gate: Semaphore,
        upsert_reached: Notify,
    }

    impl GatedIndex {
        fn closed() -> Self {
            Self {
                points: Mutex::new(Vec::new()),
                gate: Semaphore::new(0),
                upsert_reached: Notify::new(),
            }
        }

        fn sources_of(&self, learner: &str) -> Vec<String> {
            let mut sources: Vec<String> = self
                .points
                .lock()
                .unwrap()
                .iter()
                .filter(|(_, l)| l.as_deref() == Some(learner))
                .map(|(s, _)| s.clone())
                .collect();
            sources.sort();
            sources.dedup();
            sources
        }
    }

    #[async_trait]
    impl VectorStore for GatedIndex {
        async fn prepare(&self, _: IndexSchema, _: bool) -> Result<(), IndexError> {
            Ok(())
        }

        async fn upsert(&self, points: Vec<IndexedPoint>) -> Result<(), IndexError> {
            self.upsert_reached.notify_one();
            let _pass = self.gate.acquire().await.expect("gate open");
            let mut held = self.points.lock().unwrap();
            held.extend(points.into_iter().map(|p| (p.chunk.source, p.learner)));
            Ok(())
        }

        async fn delete_source(
            &self,
            source: &str,
            learner: Option<&str>,
        ) -> Result<(), IndexError> {
            self.points
                .lock()
                .unwrap()
                .retain(|(s, l)| !(s == source && l.as_deref() == learner));
            Ok(())
        }

        async fn delete_learner(&self, learner: &str) -> Result<(), IndexError> {
            self.points
                .lock()
                .unwrap()
                .retain(|(_, l)| l.as_deref() != Some(learner));
            Ok(())
        }

        async fn search(&self, _: SearchQuery) -> Result<Vec<Hit>, IndexError> {
            Ok(Vec::new())
        }

        async fn count(&self) -> Result<usize, IndexError> {
            Ok(self.points.lock().unwrap().len())
        }

        async fn commit(&self) -> Result<(), IndexError> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn an_erasure_during_an_upload_leaves_no_rows_without_vectors_nor_vectors_without_rows() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let store = Arc::new(Store::connect(&url, 4).await.unwrap());
        let index = Arc::new(GatedIndex::closed());
        let retriever = Retriever::new(index.clone(), None, RetrievalMode::Bm25, 50);
        let settings = Settings::defaults(dir.path()).projects;
        let projects = Arc::new(Projects::new(
            store.clone(),
            retriever,
            settings,
            dir.path().to_path_buf(),
        ));
        store
            .put_learner(&LearnerProfile::new("ada"))
            .await
            .unwrap();

        let upload = tokio::spawn({
            let projects = projects.clone();
            async move {
                let file = IncomingFile {
                    path: "main.py".into(),
                    bytes: b"def total(items):\n    return sum(items)\n".to_vec(),
                };
                projects
                    .write("ada", "python", "inventory", vec![file], Origin::Api, false)
                    .await
            }
        });
        // The upload has stored its rows and waits to write its vectors.
        index.upsert_reached.notified().await;
        let erasure = tokio::spawn({
            let (store, index, projects) = (store.clone(), index.clone(), projects.clone());
            async move {
                erase(
                    index.as_ref(),
                    store.as_ref(),
                    store.as_ref(),
                    projects.write_locks(),
                    "ada",
                )
                .await
                .map(|erased| erased.is_some())
            }
        });
        // Let the erasure get as far as it can before the upload goes on.
        tokio::time::sleep(Duration::from_millis(200)).await;
        index.gate.add_permits(1000);
        upload.await.unwrap().unwrap();
        assert!(erasure.await.unwrap().unwrap(), "the learner was erased");

        let rows: Vec<String> = store
            .project_files("ada", None)
            .await
            .unwrap()
            .iter()
            .map(|f| crate::project::source_id(&f.project, &f.path))
            .collect();
        let vectors = index.sources_of("ada");
        assert_eq!(rows, vectors, "rows and vectors of the learner disagree");
        assert!(vectors.is_empty(), "the erasure left {vectors:?}");
    }
}
