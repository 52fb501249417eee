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
use crate::auth::{Claims, Role};
use crate::learner::{LearnerProfile, MentorSession};
use crate::project::{IncomingFile, Origin, ProjectError, archive, git, normalise_path};
use crate::prompt::Attachment;

const MAX_TEXT_CHARS: usize = 200;
const MAX_NOTES_CHARS: usize = 10_000;
const MAX_GOALS: usize = 20;
const MAX_GOAL_CHARS: usize = 500;
const MAX_CHAPTERS: usize = 1000;

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

/// Learner ids as the platform sends them: 1 to 128 letters, digits, `.`, `_`, `-`, `@`.
fn check_learner_id(id: &str) -> Result<(), ApiError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "learner id {:?} is not valid: use 1 to 128 letters, digits, '.', '_', '-' or '@'",
            id.chars().take(140).collect::<String>()
        )))
    }
}

/// A learner's own token fills their profile the first time it is seen: name and course from
/// the claims (and later fills those two if they are still empty). Other roles get the stored
/// profile, if any.
pub async fn ensure_profile(
    state: &AppState,
    claims: &Claims,
) -> Result<Option<LearnerProfile>, ApiError> {
    let stored = state.chat.learners.learner(&claims.sub).await?;
    if claims.role != Role::Learner || check_learner_id(&claims.sub).is_err() {
        return Ok(stored);
    }
    let mut profile = stored
        .clone()
        .unwrap_or_else(|| LearnerProfile::new(&claims.sub));
    if profile.name.is_none() {
        profile.name = claims.name.clone();
    }
    if profile.course.is_none() {
        profile.course = claims.course.clone();
    }
    if stored.as_ref() != Some(&profile) {
        state.chat.learners.put_learner(&profile).await?;
        tracing::info!(learner = %claims.sub, "learner profile filled from the token");
    }
    Ok(Some(profile))
}

/// The profile when `claims` may read it; the same 404 for a missing learner otherwise.
async fn readable(
    state: &AppState,
    claims: &Claims,
    learner_id: &str,
) -> Result<LearnerProfile, ApiError> {
    let profile = if claims.sub == learner_id {
        ensure_profile(state, claims).await?
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
        ensure_profile(state, claims).await?
    } else {
        state.chat.learners.learner(learner_id).await?
    };
    profile.ok_or_else(learner_not_found)
}

/// The course that tags a learner's indexed chunks.
fn course_of(profile: &LearnerProfile) -> String {
    profile.course.clone().unwrap_or_default()
}

/// `ProjectError` to status: bad names and archives 400, sizes 413, binaries and failed
/// clones 422, storage 500.
fn project_error(error: ProjectError) -> ApiError {
    let message = error.to_string();
    match error {
        ProjectError::InvalidProject(_)
        | ProjectError::InvalidPath { .. }
        | ProjectError::Duplicate { .. }
        | ProjectError::Link { .. }
        | ProjectError::UnknownArchive
        | ProjectError::BadArchive(_)
        | ProjectError::NoFiles(_)
        | ProjectError::GitUrl { .. } => ApiError::BadRequest(message),
        ProjectError::FileTooLarge { .. }
        | ProjectError::ProjectTooLarge { .. }
        | ProjectError::ArchiveTooLarge { .. }
        | ProjectError::TooManyEntries { .. }
        | ProjectError::Bomb { .. }
        | ProjectError::GitTooLarge { .. } => ApiError::TooLarge(message),
        ProjectError::Binary { .. }
        | ProjectError::GitFailed { .. }
        | ProjectError::GitTimeout { .. } => ApiError::Unprocessable(message),
        ProjectError::Store(_) | ProjectError::Index(_) => ApiError::Internal(message),
    }
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

/// A profile as the platform sends it. Absent (or null) fields keep their stored value; an
/// empty string clears an optional one.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileBody {
    name: Option<String>,
    locale: Option<String>,
    program: Option<String>,
    course: Option<String>,
    chapter: Option<String>,
    project: Option<String>,
    chapters_completed: Option<Vec<String>>,
    mentor_id: Option<String>,
}

fn check_text(field: &str, value: &str) -> Result<(), ApiError> {
    let chars = value.chars().count();
    if chars > MAX_TEXT_CHARS {
        return Err(ApiError::BadRequest(format!(
            "`{field}` has {chars} characters; the limit is {MAX_TEXT_CHARS}"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(format!(
            "`{field}` contains control characters"
        )));
    }
    Ok(())
}

/// `Some("")` clears, `Some(x)` sets, `None` keeps.
fn merge(field: &str, target: &mut Option<String>, value: Option<String>) -> Result<(), ApiError> {
    if let Some(value) = value {
        let value = value.trim().to_string();
        check_text(field, &value)?;
        *target = (!value.is_empty()).then_some(value);
    }
    Ok(())
}

fn check_locale(locale: &str) -> Result<(), ApiError> {
    let mut parts = locale.split(['-', '_']);
    let primary = parts.next().unwrap_or_default();
    let ok = (2..=3).contains(&primary.len())
        && primary.chars().all(|c| c.is_ascii_alphabetic())
        && parts
            .all(|p| (1..=8).contains(&p.len()) && p.chars().all(|c| c.is_ascii_alphanumeric()));
    if ok {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "`locale` {locale:?} is not a language tag such as \"en\" or \"fr-FR\""
        )))
    }
}

/// `PUT /api/v1/learners/{id}`: creates or updates a profile (service token or admin).
async fn put_profile(
    State(state): State<AppState>,
    Path(id): Path<String>,
    _writer: ProfileWriter,
    Json(body): Json<ProfileBody>,
) -> Result<Response, ApiError> {
    check_learner_id(&id)?;
    let stored = state.chat.learners.learner(&id).await?;
    let mut profile = stored.clone().unwrap_or_else(|| LearnerProfile::new(&id));
    merge("name", &mut profile.name, body.name)?;
    merge("program", &mut profile.program, body.program)?;
    merge("course", &mut profile.course, body.course)?;
    merge("chapter", &mut profile.chapter, body.chapter)?;
    merge("project", &mut profile.project, body.project)?;
    merge("mentor_id", &mut profile.mentor_id, body.mentor_id)?;
    if let Some(locale) = body.locale {
        check_locale(locale.trim())?;
        profile.locale = locale.trim().to_string();
    }
    if let Some(project) = &profile.project {
        crate::project::check_project_name(project).map_err(project_error)?;
    }
    if let Some(mentor) = &profile.mentor_id {
        check_learner_id(mentor).map_err(|_| {
            ApiError::BadRequest(format!("`mentor_id` {mentor:?} is not a valid id"))
        })?;
    }
    if let Some(chapters) = body.chapters_completed {
        if chapters.len() > MAX_CHAPTERS {
            return Err(ApiError::BadRequest(format!(
                "`chapters_completed` has {} entries; the limit is {MAX_CHAPTERS}",
                chapters.len()
            )));
        }
        for chapter in &chapters {
            check_text("chapters_completed", chapter)?;
        }
        profile.chapters_completed = chapters;
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
            .map_err(project_error)?;
    }
    let profile = state.chat.learners.learner(&id).await?.unwrap_or(profile);
    let status = if stored.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(json!({ "profile": profile }))).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionBody {
    held_on: String,
    #[serde(default)]
    notes: String,
    #[serde(default)]
    goals: Vec<String>,
}

/// `POST /api/v1/learners/{id}/sessions`: the learner's mentor (or an admin) records a session.
async fn add_session(
    State(state): State<AppState>,
    Path(id): Path<String>,
    claims: Claims,
    Json(body): Json<SessionBody>,
) -> Result<Response, ApiError> {
    let profile = state.chat.learners.learner(&id).await?;
    if profile.is_none() || !can_review_learner(&claims, profile.as_ref()) {
        return Err(learner_not_found());
    }
    let held_on = body.held_on.trim();
    if chrono::NaiveDate::parse_from_str(held_on, "%Y-%m-%d").is_err() {
        return Err(ApiError::BadRequest(format!(
            "`held_on` {held_on:?} is not a date written YYYY-MM-DD"
        )));
    }
    let notes = body.notes.trim().to_string();
    if notes.chars().count() > MAX_NOTES_CHARS {
        return Err(ApiError::BadRequest(format!(
            "`notes` are longer than {MAX_NOTES_CHARS} characters"
        )));
    }
    let goals: Vec<String> = body
        .goals
        .into_iter()
        .map(|g| g.trim().to_string())
        .filter(|g| !g.is_empty())
        .collect();
    if goals.len() > MAX_GOALS {
        return Err(ApiError::BadRequest(format!(
            "{} goals given; the limit is {MAX_GOALS}",
            goals.len()
        )));
    }
    if let Some(goal) = goals.iter().find(|g| g.chars().count() > MAX_GOAL_CHARS) {
        return Err(ApiError::BadRequest(format!(
            "the goal starting {:?} is longer than {MAX_GOAL_CHARS} characters",
            goal.chars().take(40).collect::<String>()
        )));
    }
    if notes.is_empty() && goals.is_empty() {
        return Err(ApiError::BadRequest(
            "a session needs `notes` or `goals`".into(),
        ));
    }
    let session = MentorSession {
        id: uuid::Uuid::now_v7().to_string(),
        learner_id: id.clone(),
        mentor_id: claims.sub.clone(),
        held_on: held_on.to_string(),
        notes,
        goals,
        created_at: crate::transcript::now_ms(),
    };
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
    crate::project::check_project_name(&project).map_err(project_error)?;
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
    crate::project::check_project_name(&project).map_err(project_error)?;
    let path = normalise_path(&path).map_err(project_error)?;
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
        .map_err(project_error)?;
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
        .map_err(project_error)?;
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
    crate::project::check_project_name(&project).map_err(project_error)?;
    let projects = state.chat.projects.clone();
    let bytes = body_bytes(body, projects.settings().max_archive_bytes, "the archive").await?;
    let settings = projects.settings().clone();
    let files = tokio::task::spawn_blocking(move || archive::read_archive(&bytes, &settings))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(project_error)?;
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
        .map_err(project_error)?;
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
    crate::project::check_project_name(&project).map_err(project_error)?;
    let projects = &state.chat.projects;
    let cloned = git::clone_files(&body.url, body.branch.as_deref(), projects.settings())
        .await
        .map_err(project_error)?;
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
        .map_err(project_error)?;
    let skipped: Vec<serde_json::Value> = cloned
        .skipped
        .iter()
        .map(|(path, reason)| json!({"path": path, "reason": reason}))
        .collect();
    let mut body = json!(report);
    body["skipped"] = json!(skipped);
    Ok((StatusCode::OK, Json(body)).into_response())
}

/// What the chat's `attach` did.
#[derive(Debug, Clone)]
pub struct Attached {
    /// Goes with the learner's next question on that connection.
    pub attachment: Attachment,
    /// Where the file was stored, when it was named and a project is known.
    pub stored: Option<(String, String)>,
    pub bytes: usize,
}

/// The chat's `attach`: a named file is stored in the learner's project (the one given, else
/// their current one) and indexed; a pasted snippet (no name) only goes with the next question.
/// Either way it is checked like an uploaded file.
pub async fn attach(
    state: &AppState,
    claims: &Claims,
    name: Option<String>,
    content: String,
    project: Option<String>,
) -> Result<Attached, ProjectError> {
    let settings = state.chat.projects.settings();
    let label = name.clone().unwrap_or_else(|| "pasted snippet".into());
    if content.trim().is_empty() {
        return Err(ProjectError::NoFiles("the attachment is empty"));
    }
    if content.len() as u64 > settings.max_file_bytes {
        return Err(ProjectError::FileTooLarge {
            path: label,
            bytes: content.len() as u64,
            limit: settings.max_file_bytes,
        });
    }
    let text = crate::project::text_of(&label, content.into_bytes())?;
    let bytes = text.len();
    let Some(name) = name else {
        return Ok(Attached {
            attachment: Attachment { name: None, text },
            stored: None,
            bytes,
        });
    };
    let path = normalise_path(&name)?;
    let profile = ensure_profile(state, claims)
        .await
        .map_err(|e| ProjectError::Index(e.to_string()))?;
    let course = profile.as_ref().map(course_of).unwrap_or_default();
    let project = project.or_else(|| profile.and_then(|p| p.project));
    let stored = match project {
        Some(project) => {
            state
                .chat
                .projects
                .write(
                    &claims.sub,
                    &course,
                    &project,
                    vec![IncomingFile {
                        path: path.clone(),
                        bytes: text.clone().into_bytes(),
                    }],
                    Origin::Chat,
                    false,
                )
                .await?;
            Some((project, path.clone()))
        }
        None => None,
    };
    Ok(Attached {
        attachment: Attachment {
            name: Some(path),
            text,
        },
        stored,
        bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learner_ids_and_locales_are_checked() {
        assert!(check_learner_id("ada.lovelace@school-1").is_ok());
        assert!(check_learner_id("../ada").is_err());
        assert!(check_learner_id("").is_err());
        assert!(check_locale("fr").is_ok());
        assert!(check_locale("fr-CA").is_ok());
        assert!(check_locale("french!").is_err());
        assert!(check_locale("").is_err());
    }

    #[test]
    fn project_errors_map_to_clear_statuses() {
        let status = |e: ProjectError| project_error(e).into_response().status();
        assert_eq!(
            status(ProjectError::InvalidPath {
                path: "../x".into(),
                reason: "r"
            }),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status(ProjectError::Bomb {
                path: "x".into(),
                limit: 1
            }),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(
            status(ProjectError::Binary {
                path: "x".into(),
                reason: "r".into()
            }),
            StatusCode::UNPROCESSABLE_ENTITY
        );
    }
}
