//! `GET /api/v1/mentor/learners/{id}/digest`: the digest since the last session
//! ([`crate::review::digest`]), its Markdown summary also rendered to safe HTML for the page.
//! A model writes it from the `digest` template's version live for the learner's course.
use axum::extract::{Path, State};
use serde::Serialize;

use crate::auth::Claims;
use crate::http::access::reviewable_history;
use crate::http::extract::Json;
use crate::http::markdown;
use crate::http::{ApiError, AppState};
use crate::review::digest::{Digest, DigestWriter};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DigestView {
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub digest: Digest,
    /// `summary` as HTML, with any markup of the model's or the learner's shown as text.
    pub summary_html: String,
}

#[utoipa::path(
    get,
    path = "/api/v1/mentor/learners/{id}/digest",
    tag = "mentor",
    params(("id" = String, Path, description = "The learner's id")),
    responses(
        (status = 200, description = "The digest since the last session", body = DigestView),
        crate::http::error::refusals::Unauthenticated,
        crate::http::error::refusals::NoSuchLearner
    )
)]
pub async fn digest(
    State(state): State<AppState>,
    Path(id): Path<String>,
    claims: Claims,
) -> Result<Json<DigestView>, ApiError> {
    reviewable_history(&state, &claims, &id).await?;
    let writer = DigestWriter {
        review: state.review.clone(),
        learners: state.chat.learners.clone(),
        llm: state.chat.llm.clone(),
        prompts: state.chat.live_templates(),
    };
    let digest = writer.digest(&id).await?;
    Ok(Json(DigestView {
        summary_html: markdown::render(&digest.summary),
        digest,
    }))
}
