//! REST endpoints: the demo token and reading a conversation back.
use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use serde_json::{Value, json};

use super::{ApiError, AppState};
use crate::auth::{Claims, Role, claims_for};

/// The caller's claims from `Authorization: Bearer <token>`.
pub fn bearer_claims(state: &AppState, headers: &HeaderMap) -> Result<Claims, ApiError> {
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| ApiError::Unauthorized("missing bearer token".into()))?;
    state
        .keys
        .verify(token.trim())
        .map_err(|e| ApiError::Unauthorized(e.to_string()))
}

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
    let token = state
        .keys
        .mint(&claims)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Json(json!({ "token": token })))
}

/// `GET /api/v1/conversations/{id}`: the conversation's messages, for its learner or an admin.
pub async fn conversation(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let claims = bearer_claims(&state, &headers)?;
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
