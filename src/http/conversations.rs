//! `GET /api/v1/conversations/{id}`: a conversation read back by its learner or an admin.
use axum::extract::{Path, State};
use serde::Serialize;

use super::extract::Json;
use super::{ApiError, AppState};
use crate::auth::{Claims, Role};
use crate::transcript::{Conversation, StoredMessage};

#[derive(Debug, Serialize)]
pub struct ConversationView {
    pub conversation: Conversation,
    pub messages: Vec<StoredMessage>,
}

pub async fn conversation(
    State(state): State<AppState>,
    Path(id): Path<String>,
    claims: Claims,
) -> Result<Json<ConversationView>, ApiError> {
    let conversation = state.chat.store.conversation(&id).await?;
    // A foreign conversation looks exactly like a missing one.
    let conversation = conversation
        .filter(|c| claims.role == Role::Admin || c.learner_id == claims.sub)
        .ok_or_else(|| ApiError::NotFound("conversation".into()))?;
    let messages = state.chat.store.messages(&id).await?;
    Ok(Json(ConversationView {
        conversation,
        messages,
    }))
}
