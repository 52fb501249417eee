//! `/api/v1/learners/{id}/sessions`: the learner's mentor sessions (notes and goals).
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Serialize;

use crate::auth::Claims;
use crate::http::access::{can_review_learner, learner_not_found, readable_profile};
use crate::http::extract::Json;
use crate::http::{ApiError, AppState};
use crate::learner::MentorSession;
use crate::learner::validate::SessionNotes;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionRecorded {
    #[schema(value_type = Object)]
    pub session: MentorSession,
}

/// `POST /api/v1/learners/{id}/sessions`: the learner's mentor (or an admin) records a session.
#[utoipa::path(
    post,
    path = "/api/v1/learners/{id}/sessions",
    tag = "learners",
    params(("id" = String, Path, description = "The learner's id")),
    request_body(content = inline(Object), description = "`held_on` (YYYY-MM-DD), `notes`, `goals`"),
    responses(
        (status = 201, description = "The session, recorded", body = SessionRecorded),
        crate::http::error::refusals::LearnerInput,
    )
)]
pub async fn add_session(
    State(state): State<AppState>,
    Path(id): Path<String>,
    claims: Claims,
    Json(notes): Json<SessionNotes>,
) -> Result<(StatusCode, Json<SessionRecorded>), ApiError> {
    let profile = state.chat.learners.learner(&id).await?;
    if profile.is_none() || !can_review_learner(&claims, profile.as_ref()) {
        return Err(learner_not_found());
    }
    let session = notes.into_session(&id, &claims.sub)?;
    state.chat.learners.add_mentor_session(&session).await?;
    tracing::info!(learner = %id, mentor = %claims.sub, "mentor session recorded");
    Ok((StatusCode::CREATED, Json(SessionRecorded { session })))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Sessions {
    #[schema(value_type = Vec<Object>)]
    pub sessions: Vec<MentorSession>,
}

/// `GET /api/v1/learners/{id}/sessions`: the learner's mentor sessions, latest first.
#[utoipa::path(
    get,
    path = "/api/v1/learners/{id}/sessions",
    tag = "learners",
    params(("id" = String, Path, description = "The learner's id")),
    responses(
        (status = 200, description = "The mentor sessions, latest first", body = Sessions),
        crate::http::error::refusals::Unauthenticated,
        crate::http::error::refusals::NoSuchLearner
    )
)]
pub async fn sessions(
    State(state): State<AppState>,
    Path(id): Path<String>,
    claims: Claims,
) -> Result<Json<Sessions>, ApiError> {
    readable_profile(&state, &claims, &id).await?;
    let sessions = state.chat.learners.mentor_sessions(&id).await?;
    Ok(Json(Sessions { sessions }))
}
