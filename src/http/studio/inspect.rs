//! `GET /api/v1/messages/{id}/prompt`, the prompt inspector: for a stored model answer, the
//! exact messages the model received (role, text, tokens), each part's tokens and what the
//! budget left out. For the course's team, the learner's mentor and admins; a learner (even
//! their own answer) and the platform get 403, anyone else the same 404 as a missing answer.
use axum::extract::{Path, State};
use serde::Serialize;

use crate::auth::{Claims, Role};
use crate::http::access::can_inspect_prompt;
use crate::http::extract::Json;
use crate::http::{ApiError, AppState};
use crate::prompt::Dropped;
use crate::prompt::record::{PartTokens, RecordedMessage};

/// What the model received for one answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PromptView {
    pub message_id: String,
    pub learner_id: String,
    pub course: Option<String>,
    /// The system prompt's version the answer was written from.
    pub prompt_version: Option<String>,
    pub model: Option<String>,
    pub created_at: i64,
    /// Every chat message, in order: `role`, `content`, `tokens`.
    #[schema(value_type = Vec<Object>)]
    pub messages: Vec<RecordedMessage>,
    /// The prompt's tokens, overheads included.
    pub tokens: usize,
    /// The window minus the answer's reserve.
    pub limit: usize,
    /// Each part's tokens (`system`, `profile`, `mentor`, `brief`, `attachments`, `snippets`,
    /// `passages`, `history`, `earlier_questions`, `question`, `framing`), adding up to `tokens`.
    #[schema(value_type = Vec<Object>)]
    pub parts: Vec<PartTokens>,
    /// What the budget left out or cut: `part`, `dropped` of `of`, `detail`.
    #[schema(value_type = Vec<Object>)]
    pub dropped: Vec<Dropped>,
}

#[utoipa::path(
    get,
    path = "/api/v1/messages/{id}/prompt",
    tag = "courses",
    params(("id" = String, Path, description = "An assistant message's id")),
    responses(
        (status = 200, description = "The prompt the model received for this answer", body = PromptView),
        crate::http::error::refusals::Staff,
        (status = 404, description = "No such model answer, one without a kept prompt (an offline reply), or one the caller may not see", body = crate::http::error::ErrorBody),
    )
)]
pub async fn prompt(
    State(state): State<AppState>,
    Path(id): Path<String>,
    claims: Claims,
) -> Result<Json<PromptView>, ApiError> {
    if matches!(claims.role, Role::Learner | Role::Service) {
        return Err(ApiError::Forbidden(
            "only the course's team, the learner's mentor or an admin may inspect a prompt".into(),
        ));
    }
    let missing = || ApiError::NotFound("answer with a kept prompt".into());
    let stored = state.review.answer_prompt(&id).await?.ok_or_else(missing)?;
    if claims.role == Role::CourseTeam
        && !can_inspect_prompt(&claims, stored.course_id.as_deref(), None)
    {
        return Err(ApiError::Forbidden(
            "this answer is not of your course".into(),
        ));
    }
    let profile = match claims.role {
        Role::Mentor => state.chat.learners.learner(&stored.learner_id).await?,
        _ => None,
    };
    if !can_inspect_prompt(&claims, stored.course_id.as_deref(), profile.as_ref()) {
        return Err(missing());
    }
    let record = stored.record;
    Ok(Json(PromptView {
        message_id: stored.message_id,
        learner_id: stored.learner_id,
        course: stored.course_id,
        prompt_version: stored.prompt_version,
        model: stored.model,
        created_at: stored.created_at,
        messages: record.messages,
        tokens: record.tokens,
        limit: record.limit,
        parts: record.parts,
        dropped: record.dropped,
    }))
}
