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
    let erased = erase(vectors.as_ref(), state.review.as_ref(), learners, &id)
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
