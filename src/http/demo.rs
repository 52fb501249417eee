//! `POST /api/v1/demo/token`: a learner token for the demo page, when the demo is enabled.
use axum::extract::State;
use serde::Serialize;

use super::extract::Json;
use super::{ApiError, AppState};
use crate::auth::{Role, claims_for};

/// How long a demo token lasts.
const DEMO_TOKEN_SECS: u64 = 3600;

#[derive(Debug, Serialize)]
pub struct DemoToken {
    pub token: String,
}

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
