//! `POST /api/v1/demo/token`: a learner token for the demo page, when the demo is enabled.
use axum::extract::State;
use serde::Serialize;

use super::extract::Json;
use super::{ApiError, AppState, ErrorBody};
use crate::auth::{Role, claims_for};

/// How long a demo token lasts.
const DEMO_TOKEN_SECS: u64 = 3600;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DemoToken {
    pub token: String,
}

#[utoipa::path(
    post,
    path = "/api/v1/demo/token",
    tag = "chat",
    security(()),
    responses(
        (status = 200, description = "A learner token for the demo page", body = DemoToken),
        (status = 404, description = "The demo is off", body = ErrorBody)
    )
)]
pub async fn demo_token(State(state): State<AppState>) -> Result<Json<DemoToken>, ApiError> {
    let demo = state
        .demo
        .as_ref()
        .ok_or_else(|| ApiError::NotFound("demo".into()))?;
    let name = Some(demo.learner_name.clone());
    let claims = claims_for(Role::Learner, &demo.learner_id, name, None, DEMO_TOKEN_SECS);
    let token = state.keys.mint(&claims)?;
    Ok(Json(DemoToken { token }))
}
