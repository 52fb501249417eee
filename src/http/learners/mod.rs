//! The learner API, every `/api/v1/learners/{id}...` route: the profile (the course platform's
//! service token or an admin writes it; a learner's token fills one on first use), mentor
//! sessions, project files (single files, archives, git imports), the export and the erasure.
//! Access follows [`super::access`]: a learner the caller may not read answers like a missing
//! one (404); writing to another learner's project is a 403 whether or not they exist.
pub mod erase;
pub mod export;
pub mod files;
pub mod import;
pub mod profile;
pub mod sessions;

use axum::body::Body;
use axum::http::Method;
use serde::Serialize;

use super::{ApiError, ApiRoute};
use crate::learner::{LearnerProfile, ProjectFile};
use crate::project::WriteReport;

/// Every `/api/v1/learners/{id}...` route.
pub fn routes() -> Vec<ApiRoute> {
    const FILES: &str = "/api/v1/learners/{id}/projects/{project}/files";
    const FILE: &str = "/api/v1/learners/{id}/projects/{project}/files/{*path}";
    vec![
        ApiRoute::new(Method::GET, "/api/v1/learners/{id}", profile::profile),
        ApiRoute::new(Method::PUT, "/api/v1/learners/{id}", profile::put_profile),
        ApiRoute::new(
            Method::DELETE,
            "/api/v1/learners/{id}",
            erase::erase_learner,
        ),
        ApiRoute::new(
            Method::GET,
            "/api/v1/learners/{id}/sessions",
            sessions::sessions,
        ),
        ApiRoute::new(
            Method::POST,
            "/api/v1/learners/{id}/sessions",
            sessions::add_session,
        ),
        ApiRoute::new(Method::GET, "/api/v1/learners/{id}/export", export::export),
        ApiRoute::new(Method::GET, FILES, files::list_files),
        ApiRoute::new(Method::GET, FILE, files::get_file),
        ApiRoute::new(Method::PUT, FILE, files::put_file),
        ApiRoute::new(Method::DELETE, FILE, files::delete_file),
        ApiRoute::new(
            Method::POST,
            "/api/v1/learners/{id}/projects/{project}/archive",
            import::post_archive,
        ),
        ApiRoute::new(
            Method::POST,
            "/api/v1/learners/{id}/projects/{project}/git",
            import::post_git,
        ),
    ]
}

/// A stored project file without its content.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
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

/// What a write of project files did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Written {
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub report: WriteReport,
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
