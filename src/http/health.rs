//! `/healthz` (the process answers) and `/readyz` (the content is indexed: 503 until then).
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;

use super::AppState;
use super::extract::Json;

pub async fn healthz() -> &'static str {
    "ok"
}

#[derive(Debug, Serialize)]
pub struct Readiness {
    /// `ready` or `starting`.
    pub status: &'static str,
}

pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Readiness>) {
    if state.is_ready() {
        (StatusCode::OK, Json(Readiness { status: "ready" }))
    } else {
        let starting = Readiness { status: "starting" };
        (StatusCode::SERVICE_UNAVAILABLE, Json(starting))
    }
}
