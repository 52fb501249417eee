//! `/api/v1/learners/{id}/projects/{project}/files[/{*path}]`: a project's files, one by one.
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Serialize;

use super::{FileInfo, Written, body_bytes, course_of};
use crate::auth::Claims;
use crate::http::access::{readable_profile, writable_project};
use crate::http::extract::Json;
use crate::http::{ApiError, AppState, ErrorBody};
use crate::learner::ProjectFile;
use crate::project::{IncomingFile, Origin, check_project_name, normalise_path};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProjectFiles {
    pub project: String,
    pub files: Vec<FileInfo>,
}

/// `GET .../files`: the project's files, without content.
#[utoipa::path(
    get,
    path = "/api/v1/learners/{id}/projects/{project}/files",
    tag = "learners",
    params(("id" = String, Path, description = "The learner's id"), ("project" = String, Path, description = "The project's name")),
    responses(
        (status = 200, description = "The project's files, without content", body = ProjectFiles),
        crate::http::error::refusals::LearnerInput,
    )
)]
pub async fn list_files(
    State(state): State<AppState>,
    Path((id, project)): Path<(String, String)>,
    claims: Claims,
) -> Result<Json<ProjectFiles>, ApiError> {
    readable_profile(&state, &claims, &id).await?;
    check_project_name(&project)?;
    let files = stored_files(&state, &id, &project).await?;
    Ok(Json(ProjectFiles {
        files: files.iter().map(FileInfo::from).collect(),
        project,
    }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FileView {
    #[serde(flatten)]
    pub info: FileInfo,
    pub content: String,
}

/// `GET .../files/{*path}`: one file with its content.
#[utoipa::path(
    get,
    path = "/api/v1/learners/{id}/projects/{project}/files/{path}",
    tag = "learners",
    params(("id" = String, Path, description = "The learner's id"), ("project" = String, Path, description = "The project's name"), ("path" = String, Path, description = "The file's path in the project")),
    responses(
        (status = 200, description = "One file with its content", body = FileView),
        crate::http::error::refusals::BadInput,
        crate::http::error::refusals::Unauthenticated,
        (status = 404, description = "No such learner or file", body = ErrorBody)
    )
)]
pub async fn get_file(
    State(state): State<AppState>,
    Path((id, project, path)): Path<(String, String, String)>,
    claims: Claims,
) -> Result<Json<FileView>, ApiError> {
    readable_profile(&state, &claims, &id).await?;
    check_project_name(&project)?;
    let path = normalise_path(&path)?;
    let file = stored_files(&state, &id, &project)
        .await?
        .into_iter()
        .find(|f| f.path == path)
        .ok_or_else(|| ApiError::NotFound(format!("file {path:?} of project {project:?}")))?;
    Ok(Json(FileView {
        info: FileInfo::from(&file),
        content: file.content,
    }))
}

async fn stored_files(
    state: &AppState,
    id: &str,
    project: &str,
) -> Result<Vec<ProjectFile>, ApiError> {
    Ok(state.chat.learners.project_files(id, Some(project)).await?)
}

/// `PUT .../files/{*path}`: stores one file (the body, as text) and indexes it.
#[utoipa::path(
    put,
    path = "/api/v1/learners/{id}/projects/{project}/files/{path}",
    tag = "learners",
    params(("id" = String, Path, description = "The learner's id"), ("project" = String, Path, description = "The project's name"), ("path" = String, Path, description = "The file's path in the project")),
    request_body(content = String, description = "The file's text", content_type = "text/plain"),
    responses(
        (status = 200, description = "The file, stored and indexed", body = Written),
        crate::http::error::refusals::FileUpload,
    )
)]
pub async fn put_file(
    State(state): State<AppState>,
    Path((id, project, path)): Path<(String, String, String)>,
    claims: Claims,
    body: Body,
) -> Result<Json<Written>, ApiError> {
    let profile = writable_project(&state, &claims, &id).await?;
    let projects = &state.chat.projects;
    let limit = projects.settings().max_file_bytes;
    let bytes = body_bytes(body, limit, &format!("file {path:?}")).await?;
    state
        .quotas
        .take_upload(&state.review, &id, bytes.len() as u64)
        .await?;
    let file = IncomingFile { path, bytes };
    let course = course_of(&profile);
    let report = projects
        .write(&id, &course, &project, vec![file], Origin::Api, false)
        .await?;
    Ok(Json(Written { report }))
}

/// `DELETE .../files/{*path}`: removes one file and its chunks.
#[utoipa::path(
    delete,
    path = "/api/v1/learners/{id}/projects/{project}/files/{path}",
    tag = "learners",
    params(("id" = String, Path, description = "The learner's id"), ("project" = String, Path, description = "The project's name"), ("path" = String, Path, description = "The file's path in the project")),
    responses(
        (status = 204, description = "The file and its chunks, removed"),
        crate::http::error::refusals::StaffInput,
        (status = 404, description = "No such learner or file", body = ErrorBody)
    )
)]
pub async fn delete_file(
    State(state): State<AppState>,
    Path((id, project, path)): Path<(String, String, String)>,
    claims: Claims,
) -> Result<StatusCode, ApiError> {
    writable_project(&state, &claims, &id).await?;
    if !state.chat.projects.delete(&id, &project, &path).await? {
        return Err(ApiError::NotFound(format!(
            "file {path:?} of project {project:?}"
        )));
    }
    Ok(StatusCode::NO_CONTENT)
}
