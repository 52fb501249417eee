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
    /// What this node's ingest of the content did, once done. With a shared index, the node
    /// that indexed shows the files it indexed and the others find them all unchanged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<IndexedSummary>,
}

#[derive(Debug, Serialize)]
pub struct IndexedSummary {
    pub files_indexed: usize,
    pub files_unchanged: usize,
    pub files_removed: usize,
    pub rebuilt: bool,
}

pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let index = state.indexed.get().map(|report| IndexedSummary {
        files_indexed: report.files_indexed,
        files_unchanged: report.files_unchanged,
        files_removed: report.files_removed,
        rebuilt: report.rebuilt,
    });
    if state.is_ready() {
        let ready = Readiness {
            status: "ready",
            index,
        };
        (StatusCode::OK, Json(ready))
    } else {
        let starting = Readiness {
            status: "starting",
            index,
        };
        (StatusCode::SERVICE_UNAVAILABLE, Json(starting))
    }
}
