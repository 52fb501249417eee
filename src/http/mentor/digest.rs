//! `GET /api/v1/mentor/learners/{id}/digest`: the digest since the last session
//! ([`crate::review::digest`]).
use axum::extract::{Path, State};

use crate::auth::Claims;
use crate::http::access::reviewable_history;
use crate::http::extract::Json;
use crate::http::{ApiError, AppState};
use crate::review::digest::{Digest, DigestWriter};

pub async fn digest(
    State(state): State<AppState>,
    Path(id): Path<String>,
    claims: Claims,
) -> Result<Json<Digest>, ApiError> {
    reviewable_history(&state, &claims, &id).await?;
    let writer = DigestWriter {
        review: state.review.clone(),
        learners: state.chat.learners.clone(),
        llm: state.chat.llm.clone(),
    };
    Ok(Json(writer.digest(&id).await?))
}
