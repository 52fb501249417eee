//! The learner API: profiles (the course platform's service token or an admin writes them; a
//! learner's token fills one on first use), mentor sessions, and the files of a learner's
//! projects: single files, archives (zip, tar, tar.gz) and git imports; plus the chat's
//! `attach`. Access follows [`super::access`]: a learner the caller may not read answers like a
//! missing one (404); writing to another learner's project is a 403 whether or not they exist.
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Deserialize;
use serde_json::json;

use super::access::{can_read_learner, can_review_learner, can_write_project};
use super::extract::{Json, ProfileWriter, Query};
use super::{ApiError, AppState};
use crate::auth::Claims;
use crate::chat::attach::ensure_profile;
use crate::learner::LearnerProfile;
use crate::learner::validate::{ProfileUpdate, SessionNotes, check_learner_id};
use crate::project::{IncomingFile, Origin, archive, git, normalise_path};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/learners/{id}", get(profile).put(put_profile))
        .route(
            "/api/v1/learners/{id}/sessions",
            post(add_session).get(sessions),
        )
        .route(
            "/api/v1/learners/{id}/projects/{project}/files",
            get(list_files),
        )
        .route(
            "/api/v1/learners/{id}/projects/{project}/files/{*path}",
            put(put_file).get(get_file).delete(delete_file),
        )
        .route(
            "/api/v1/learners/{id}/projects/{project}/archive",
            post(post_archive),
        )
        .route(
            "/api/v1/learners/{id}/projects/{project}/git",
            post(post_git),
        )
}

fn learner_not_found() -> ApiError {
    ApiError::NotFound("learner".into())
}

/// The profile when `claims` may read it; the same 404 for a missing learner otherwise.
async fn readable(
    state: &AppState,
    claims: &Claims,
    learner_id: &str,
) -> Result<LearnerProfile, ApiError> {
    let profile = if claims.sub == learner_id {
        ensure_profile(state.chat.learners.as_ref(), claims).await?
    } else {
        state.chat.learners.learner(learner_id).await?
    };
    if !can_read_learner(claims, learner_id, profile.as_ref()) {
        return Err(learner_not_found());
    }
    profile.ok_or_else(learner_not_found)
}

/// The profile when `claims` may write the learner's project files: 403 for anyone else
/// (before looking the learner up), 404 for a learner that does not exist.
async fn writable(
    state: &AppState,
    claims: &Claims,
    learner_id: &str,
) -> Result<LearnerProfile, ApiError> {
    check_learner_id(learner_id)?;
    if !can_write_project(claims, learner_id) {
        return Err(ApiError::Forbidden(
            "only the learner themself, the platform or an admin may change a learner's project files"
                .into(),
        ));
    }
    let profile = if claims.sub == learner_id {
        ensure_profile(state.chat.learners.as_ref(), claims).await?
    } else {
        state.chat.learners.learner(learner_id).await?
    };
    profile.ok_or_else(learner_not_found)
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

/// `GET /api/v1/learners/{id}`: the profile, the latest mentor session and the project files
/// (without their content).
async fn profile(
    State(state): State<AppState>,
    Path(id): Path<String>,
    claims: Claims,
) -> Result<Json<serde_json::Value>, ApiError> {
    let profile = readable(&state, &claims, &id).await?;
    let latest_session = state
        .chat
        .learners
        .mentor_sessions(&id)
        .await?
        .into_iter()
        .next();
    let files: Vec<serde_json::Value> = state
        .chat
        .learners
        .project_files(&id, None)
        .await?
        .into_iter()
        .map(|f| file_summary(&f))
        .collect();
    Ok(Json(json!({
        "profile": profile,
        "latest_session": latest_session,
        "files": files,
    })))
}

fn file_summary(f: &crate::learner::ProjectFile) -> serde_json::Value {
    json!({
        "project": f.project, "path": f.path, "bytes": f.bytes, "sha256": f.sha256,
        "origin": f.origin, "updated_at": f.updated_at,
    })
}

/// `PUT /api/v1/learners/{id}`: creates or updates a profile (service token or admin).
async fn put_profile(
    State(state): State<AppState>,
    Path(id): Path<String>,
    _writer: ProfileWriter,
    Json(update): Json<ProfileUpdate>,
) -> Result<Response, ApiError> {
    check_learner_id(&id)?;
    let stored = state.chat.learners.learner(&id).await?;
    let mut profile = stored.clone().unwrap_or_else(|| LearnerProfile::new(&id));
    update.apply(&mut profile)?;
    if let Some(project) = &profile.project {
        crate::project::check_project_name(project)?;
    }
    state.chat.learners.put_learner(&profile).await?;
    let course_changed = stored.as_ref().is_some_and(|s| s.course != profile.course);
    if course_changed {
        // The learner's chunks are tagged with their course: tag them again.
        state
            .chat
            .projects
            .reindex_learner(&id, &course_of(&profile))
            .await
            ?;
    }
    let profile = state.chat.learners.learner(&id).await?.unwrap_or(profile);
    let status = if stored.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(json!({ "profile": profile }))).into_response())
}

/// `POST /api/v1/learners/{id}/sessions`: the learner's mentor (or an admin) records a session.
async fn add_session(
    State(state): State<AppState>,
    Path(id): Path<String>,
    claims: Claims,
    Json(notes): Json<SessionNotes>,
) -> Result<Response, ApiError> {
    let profile = state.chat.learners.learner(&id).await?;
    if profile.is_none() || !can_review_learner(&claims, profile.as_ref()) {
        return Err(learner_not_found());
    }
    let session = notes.into_session(&id, &claims.sub)?;
    state.chat.learners.add_mentor_session(&session).await?;
    tracing::info!(learner = %id, mentor = %claims.sub, "mentor session recorded");
    Ok((StatusCode::CREATED, Json(json!({ "session": session }))).into_response())
}

/// `GET /api/v1/learners/{id}/sessions`: the learner's mentor sessions, latest first.
async fn sessions(
    State(state): State<AppState>,
    Path(id): Path<String>,
    claims: Claims,
) -> Result<Json<serde_json::Value>, ApiError> {
    readable(&state, &claims, &id).await?;
    let sessions = state.chat.learners.mentor_sessions(&id).await?;
    Ok(Json(json!({ "sessions": sessions })))
}

/// `GET /api/v1/learners/{id}/projects/{project}/files`: the project's files, without content.
async fn list_files(
    State(state): State<AppState>,
    Path((id, project)): Path<(String, String)>,
    claims: Claims,
) -> Result<Json<serde_json::Value>, ApiError> {
    readable(&state, &claims, &id).await?;
    crate::project::check_project_name(&project)?;
    let files: Vec<serde_json::Value> = state
        .chat
        .learners
        .project_files(&id, Some(&project))
        .await?
        .iter()
        .map(file_summary)
        .collect();
    Ok(Json(json!({ "project": project, "files": files })))
}

/// `GET .../files/{*path}`: one file with its content.
async fn get_file(
    State(state): State<AppState>,
    Path((id, project, path)): Path<(String, String, String)>,
    claims: Claims,
) -> Result<Json<serde_json::Value>, ApiError> {
    readable(&state, &claims, &id).await?;
    crate::project::check_project_name(&project)?;
    let path = normalise_path(&path)?;
    let file = state
        .chat
        .learners
        .project_files(&id, Some(&project))
        .await?
        .into_iter()
        .find(|f| f.path == path)
        .ok_or_else(|| ApiError::NotFound(format!("file {path:?} of project {project:?}")))?;
    let mut body = file_summary(&file);
    body["content"] = json!(file.content);
    Ok(Json(body))
}

/// `PUT .../files/{*path}`: stores one file (the body, as text) and indexes it.
async fn put_file(
    State(state): State<AppState>,
    Path((id, project, path)): Path<(String, String, String)>,
    claims: Claims,
    body: Body,
) -> Result<Response, ApiError> {
    let profile = writable(&state, &claims, &id).await?;
    let projects = &state.chat.projects;
    let limit = projects.settings().max_file_bytes;
    let bytes = body_bytes(body, limit, &format!("file {path:?}")).await?;
    let report = projects
        .write(
            &id,
            &course_of(&profile),
            &project,
            vec![IncomingFile { path, bytes }],
            Origin::Api,
            false,
        )
        .await
        ?;
    Ok((StatusCode::OK, Json(json!(report))).into_response())
}

/// `DELETE .../files/{*path}`: removes one file and its chunks.
async fn delete_file(
    State(state): State<AppState>,
    Path((id, project, path)): Path<(String, String, String)>,
    claims: Claims,
) -> Result<Response, ApiError> {
    writable(&state, &claims, &id).await?;
    let removed = state
        .chat
        .projects
        .delete(&id, &project, &path)
        .await
        ?;
    if !removed {
        return Err(ApiError::NotFound(format!(
            "file {path:?} of project {project:?}"
        )));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportQuery {
    /// Replace the project's files (default) or add to them.
    #[serde(default = "yes")]
    replace: bool,
}

fn yes() -> bool {
    true
}

/// `POST .../archive`: a zip, tar or tar.gz body becomes the project's files (all of them, or
/// added to them with `?replace=false`). Everything is checked before anything is stored.
async fn post_archive(
    State(state): State<AppState>,
    Path((id, project)): Path<(String, String)>,
    claims: Claims,
    Query(query): Query<ImportQuery>,
    body: Body,
) -> Result<Response, ApiError> {
    let profile = writable(&state, &claims, &id).await?;
    crate::project::check_project_name(&project)?;
    let projects = state.chat.projects.clone();
    let bytes = body_bytes(body, projects.settings().max_archive_bytes, "the archive").await?;
    let settings = projects.settings().clone();
    let files = tokio::task::spawn_blocking(move || archive::read_archive(&bytes, &settings))
        .await??;
    let report = projects
        .write(
            &id,
            &course_of(&profile),
            &project,
            files,
            Origin::Archive,
            query.replace,
        )
        .await
        ?;
    Ok((StatusCode::OK, Json(json!(report))).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GitBody {
    url: String,
    #[serde(default)]
    branch: Option<String>,
    #[serde(default = "yes")]
    replace: bool,
}

/// `POST .../git` `{"url": ..., "branch"?: ..., "replace"?: true}`: a shallow clone becomes
/// the project's files; binary files of the repository are skipped and listed.
async fn post_git(
    State(state): State<AppState>,
    Path((id, project)): Path<(String, String)>,
    claims: Claims,
    Json(body): Json<GitBody>,
) -> Result<Response, ApiError> {
    let profile = writable(&state, &claims, &id).await?;
    crate::project::check_project_name(&project)?;
    let projects = &state.chat.projects;
    let cloned = git::clone_files(&body.url, body.branch.as_deref(), projects.settings())
        .await
        ?;
    let report = projects
        .write(
            &id,
            &course_of(&profile),
            &project,
            cloned.files,
            Origin::Git,
            body.replace,
        )
        .await
        ?;
    let skipped: Vec<serde_json::Value> = cloned
        .skipped
        .iter()
        .map(|(path, reason)| json!({"path": path, "reason": reason}))
        .collect();
    let mut body = json!(report);
    body["skipped"] = json!(skipped);
    Ok((StatusCode::OK, Json(body)).into_response())
}
