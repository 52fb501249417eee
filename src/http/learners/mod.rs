//! The learner API, every `/api/v1/learners/{id}...` route: the profile (the course platform's
//! service token or an admin writes it; a learner's token fills one on first use), mentor
//! sessions, project files (single files, archives, git imports), the export and the erasure.
//! Access follows [`super::access`]: a learner the caller may not read answers like a missing
//! one (404); writing to another learner's project is a 403 whether or not they exist.
mod erase;
pub mod export;
mod files;
mod import;
mod profile;
mod sessions;

use axum::Router;
use axum::body::Body;
use axum::routing::{get, post, put};
use serde::Serialize;

use super::{ApiError, AppState};
use crate::learner::{LearnerProfile, ProjectFile};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/learners/{id}",
            get(profile::profile)
                .put(profile::put_profile)
                .delete(erase::erase_learner),
        )
        .route(
            "/api/v1/learners/{id}/sessions",
            post(sessions::add_session).get(sessions::sessions),
        )
        .route("/api/v1/learners/{id}/export", get(export::export))
        .route(
            "/api/v1/learners/{id}/projects/{project}/files",
            get(files::list_files),
        )
        .route(
            "/api/v1/learners/{id}/projects/{project}/files/{*path}",
            put(files::put_file)
                .get(files::get_file)
                .delete(files::delete_file),
        )
        .route(
            "/api/v1/learners/{id}/projects/{project}/archive",
            post(import::post_archive),
        )
        .route(
            "/api/v1/learners/{id}/projects/{project}/git",
            post(import::post_git),
        )
}

/// A stored project file without its content.
#[derive(Debug, Clone, Serialize)]
pub struct FileInfo {
    pub project: String,
    pub path: String,
    pub bytes: i64,
    pub sha256: String,
    pub origin: String,
    pub updated_at: i64,
}

impl From<&ProjectFile> for FileInfo {
    fn from(f: &ProjectFile) -> Self {
        Self {
            project: f.project.clone(),
            path: f.path.clone(),
            bytes: f.bytes,
            sha256: f.sha256.clone(),
            origin: f.origin.clone(),
            updated_at: f.updated_at,
        }
    }
}

/// The course that tags a learner's indexed chunks.
fn course_of(profile: &LearnerProfile) -> String {
    profile.course.clone().unwrap_or_default()
}

/// The request body, refused past `limit` bytes without reading further.
async fn body_bytes(body: Body, limit: u64, what: &str) -> Result<Vec<u8>, ApiError> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    axum::body::to_bytes(body, limit)
        .await
        .map(|bytes| bytes.to_vec())
        .map_err(|_| {
            ApiError::TooLarge(format!("{what} is larger than the limit of {limit} bytes"))
        })
}
