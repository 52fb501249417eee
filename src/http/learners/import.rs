//! `POST .../archive` and `POST .../git`: a whole project at once, from a zip, tar or tar.gz
//! body or from a shallow git clone. Everything is checked before anything is stored.
use axum::body::Body;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};

use super::{Written, body_bytes, course_of};
use crate::auth::Claims;
use crate::http::access::writable_project;
use crate::http::extract::{Json, Query};
use crate::http::{ApiError, AppState};
use crate::project::{Origin, WriteReport, archive, check_project_name, git};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ImportQuery {
    /// Replace the project's files (default) or add to them.
    #[serde(default = "yes")]
    replace: bool,
}

fn yes() -> bool {
    true
}

/// `POST .../archive[?replace=false]`: the archive's files become the project's (all of
/// them, or added to them).
#[utoipa::path(
    post,
    path = "/api/v1/learners/{id}/projects/{project}/archive",
    tag = "learners",
    params(("id" = String, Path, description = "The learner's id"), ("project" = String, Path, description = "The project's name"), ImportQuery),
    request_body(content = Vec<u8>, description = "A zip, tar or tar.gz archive", content_type = "application/octet-stream"),
    responses(
        (status = 200, description = "The archive's files, stored and indexed", body = Written),
        crate::http::error::refusals::FileUpload,
    )
)]
pub async fn post_archive(
    State(state): State<AppState>,
    Path((id, project)): Path<(String, String)>,
    claims: Claims,
    Query(query): Query<ImportQuery>,
    body: Body,
) -> Result<Json<Written>, ApiError> {
    let profile = writable_project(&state, &claims, &id).await?;
    check_project_name(&project)?;
    let projects = state.chat.projects.clone();
    let bytes = body_bytes(body, projects.settings().max_archive_bytes, "the archive").await?;
    let settings = projects.settings().clone();
    let files =
        tokio::task::spawn_blocking(move || archive::read_archive(&bytes, &settings)).await??;
    let expanded: u64 = files.iter().map(|f| f.bytes.len() as u64).sum();
    state
        .quotas
        .take_upload(&state.review, &id, expanded)
        .await?;
    let course = course_of(&profile);
    let report = projects
        .write(
            &id,
            &course,
            &project,
            files,
            Origin::Archive,
            query.replace,
        )
        .await?;
    Ok(Json(Written { report }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitImport {
    url: String,
    #[serde(default)]
    branch: Option<String>,
    #[serde(default = "yes")]
    replace: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct GitImported {
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub report: WriteReport,
    /// The repository's binary files, left out.
    pub skipped: Vec<SkippedFile>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SkippedFile {
    pub path: String,
    pub reason: String,
}

/// `POST .../git` `{"url": ..., "branch"?: ..., "replace"?: true}`: a shallow clone becomes
/// the project's files; binary files of the repository are skipped and listed.
#[utoipa::path(
    post,
    path = "/api/v1/learners/{id}/projects/{project}/git",
    tag = "learners",
    params(("id" = String, Path, description = "The learner's id"), ("project" = String, Path, description = "The project's name")),
    request_body(content = inline(Object), description = "`url`, optional `branch`, `replace` (default true)"),
    responses(
        (status = 200, description = "The repository's files, stored and indexed; binaries skipped", body = GitImported),
        crate::http::error::refusals::FileUpload,
    )
)]
pub async fn post_git(
    State(state): State<AppState>,
    Path((id, project)): Path<(String, String)>,
    claims: Claims,
    Json(import): Json<GitImport>,
) -> Result<Json<GitImported>, ApiError> {
    let profile = writable_project(&state, &claims, &id).await?;
    check_project_name(&project)?;
    let projects = &state.chat.projects;
    let branch = import.branch.as_deref();
    let cloning = state.quotas.git_clone(&id)?;
    let cloned = git::clone_files(&import.url, branch, projects.settings()).await?;
    drop(cloning);
    let bytes: u64 = cloned.files.iter().map(|f| f.bytes.len() as u64).sum();
    state.quotas.take_upload(&state.review, &id, bytes).await?;
    let course = course_of(&profile);
    let report = projects
        .write(
            &id,
            &course,
            &project,
            cloned.files,
            Origin::Git,
            import.replace,
        )
        .await?;
    let skipped = cloned
        .skipped
        .into_iter()
        .map(|(path, reason)| SkippedFile { path, reason })
        .collect();
    Ok(Json(GitImported { report, skipped }))
}
