//! `GET /api/v1/conversations/{id}`: a conversation read back by whoever may read its learner
//! ([`super::access::can_read_learner`]).
use axum::extract::{Path, State};
use serde::Serialize;

use super::extract::Json;
use super::{ApiError, AppState, ErrorBody};
use super::access::can_read_learner;
use crate::auth::Claims;
use crate::transcript::{Conversation, StoredMessage};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConversationView {
    #[schema(value_type = Object)]
    pub conversation: Conversation,
    #[schema(value_type = Vec<Object>)]
    pub messages: Vec<StoredMessage>,
}

#[utoipa::path(
    get,
    path = "/api/v1/conversations/{id}",
    tag = "chat",
    params(("id" = String, Path, description = "The conversation's id")),
    responses(
        (status = 200, description = "The conversation and its messages", body = ConversationView),
        crate::http::error::refusals::Unauthenticated,
        (status = 404, description = "No such conversation, or another learner's", body = ErrorBody)
    )
)]
pub async fn conversation(
    State(state): State<AppState>,
    Path(id): Path<String>,
    claims: Claims,
) -> Result<Json<ConversationView>, ApiError> {
    let not_found = || ApiError::NotFound("conversation".into());
    let conversation = state
        .chat
        .store
        .conversation(&id)
        .await?
        .ok_or_else(not_found)?;
    // Who may read it follows the learner's rules (the learner, their mentor, an admin, the
    // platform), whatever the caller's id; a foreign conversation looks like a missing one.
    let profile = state.chat.learners.learner(&conversation.learner_id).await?;
    if !can_read_learner(&claims, &conversation.learner_id, profile.as_ref()) {
        return Err(not_found());
    }
    let messages = state.chat.store.messages(&id).await?;
    Ok(Json(ConversationView {
        conversation,
        messages,
    }))
}
