//! REST endpoints: the demo token and reading a conversation back.
use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Value, json};

use super::{ApiError, AppState};
use crate::auth::{Claims, Role, claims_for};

/// `POST /api/v1/demo/token`: a learner token for the demo page, when the demo is enabled.
pub async fn demo_token(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let demo = state
        .demo
        .as_ref()
        .ok_or_else(|| ApiError::NotFound("demo".into()))?;
    let claims = claims_for(
        Role::Learner,
        &demo.learner_id,
        Some(demo.learner_name.clone()),
        None,
        3600,
    );
    let token = state.keys.mint(&claims)?;
    Ok(Json(json!({ "token": token })))
}

/// `GET /api/v1/conversations/{id}`: the conversation's messages, for its learner or an admin.
pub async fn conversation(
    State(state): State<AppState>,
    Path(id): Path<String>,
    claims: Claims,
) -> Result<Json<Value>, ApiError> {
    let conversation = state.chat.store.conversation(&id).await?;
    // A foreign conversation looks exactly like a missing one.
    let conversation = conversation
        .filter(|c| claims.role == Role::Admin || c.learner_id == claims.sub)
        .ok_or_else(|| ApiError::NotFound("conversation".into()))?;
    let messages = state.chat.store.messages(&id).await?;
    Ok(Json(
        json!({ "conversation": conversation, "messages": messages }),
    ))
}
