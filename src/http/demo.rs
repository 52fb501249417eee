//! `POST /api/v1/demo/token`: a token for one demo visitor, when the demo is enabled. Each call
//! mints a new learner (a random id under `demo.learner_prefix`, marked `demo` in the token,
//! valid for `demo.token_ttl_secs`): visitors never share a history, files or a rate limit, and
//! a demo identity may chat but not store files.
use axum::extract::State;
use serde::Serialize;

use super::extract::Json;
use super::{ApiError, AppState, ErrorBody};
use crate::auth::demo_claims;

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
        (status = 200, description = "A token for a new demo visitor (a learner of its own)", body = DemoToken),
        (status = 404, description = "The demo is off", body = ErrorBody)
    )
)]
pub async fn demo_token(State(state): State<AppState>) -> Result<Json<DemoToken>, ApiError> {
    let demo = state
        .demo
        .as_ref()
        .ok_or_else(|| ApiError::NotFound("demo".into()))?;
    let claims = demo_claims(
        &demo.learner_prefix,
        &demo.learner_name,
        demo.token_ttl_secs,
    );
    let token = state.keys.mint(&claims)?;
    Ok(Json(DemoToken { token }))
}
