//! `GET /api/v1/learners/{id}/export` (also under `/api/v1/mentor/learners/{id}/export`): a
//! learner's history as JSON (default) or Markdown (`format=md`), page by page
//! ([`crate::review::export`]); `next_cursor` (or the `x-next-cursor` header) continues.
use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::FileInfo;
use crate::auth::Claims;
use crate::http::access::readable_history;
use crate::http::extract::{Json, Query, parse_limit};
use crate::http::{ApiError, AppState};
use crate::learner::{LearnerProfile, MentorSession};
use crate::review::export::{self, DEFAULT_PAGE_MESSAGES, MAX_PAGE_MESSAGES};
use crate::review::{Annotation, Cursor, Feedback, Flag};
use crate::transcript::{StoredMessage, now_ms};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    limit: Option<String>,
}

/// One page of the export as JSON.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ExportJson {
    pub learner_id: String,
    pub exported_at: i64,
    #[schema(value_type = Vec<Object>)]
    pub messages: Vec<StoredMessage>,
    #[schema(value_type = Vec<Object>)]
    pub annotations: Vec<Annotation>,
    pub next_cursor: Option<String>,
    /// Only on the first page.
    #[serde(flatten)]
    pub first_page: Option<FirstPage>,
}

/// What the first page adds: everything about the learner besides the messages.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FirstPage {
    #[schema(value_type = Option<Object>)]
    pub profile: Option<LearnerProfile>,
    #[schema(value_type = Vec<Object>)]
    pub mentor_sessions: Vec<MentorSession>,
    #[schema(value_type = Vec<Object>)]
    pub flags: Vec<Flag>,
    #[schema(value_type = Vec<Object>)]
    pub feedback: Vec<Feedback>,
    pub project_files: Vec<FileInfo>,
}

#[utoipa::path(
    get,
    path = "/api/v1/learners/{id}/export",
    tag = "learners",
    params(("id" = String, Path, description = "The learner's id"), ExportQuery),
    responses(
        (status = 200, description = "One page of the history as JSON, or Markdown with `format=md`; `x-next-cursor` continues", body = ExportJson),
        crate::http::error::refusals::LearnerInput,
    )
)]
pub async fn export(
    State(state): State<AppState>,
    Path(id): Path<String>,
    claims: Claims,
    Query(query): Query<ExportQuery>,
) -> Result<Response, ApiError> {
    let profile = readable_history(&state, &claims, &id).await?;
    let markdown = wants_markdown(query.format.as_deref())?;
    let cursor = cursor(query.cursor.as_deref())?;
    let limit = parse_limit(
        query.limit.as_deref(),
        DEFAULT_PAGE_MESSAGES,
        MAX_PAGE_MESSAGES,
    )?;
    let page = export::page(state.review.as_ref(), &id, cursor.as_ref(), limit).await?;
    let first_page = cursor.is_none();
    let next_cursor = page.next.as_ref().map(Cursor::encode);
    let mut response = if markdown {
        let text = export::markdown(&id, profile.as_ref(), &page, first_page);
        let disposition = "attachment; filename=\"export.md\"";
        let content_type = "text/markdown; charset=utf-8";
        let headers = [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_DISPOSITION, disposition),
        ];
        (headers, text).into_response()
    } else {
        let first_page = if first_page {
            Some(first_page_of(&state, &id, profile).await?)
        } else {
            None
        };
        Json(ExportJson {
            exported_at: now_ms(),
            messages: page.messages,
            annotations: page.annotations,
            next_cursor: next_cursor.clone(),
            learner_id: id,
            first_page,
        })
        .into_response()
    };
    if let Some(next) = next_cursor.and_then(|c| HeaderValue::from_str(&c).ok()) {
        response.headers_mut().insert("x-next-cursor", next);
    }
    Ok(response)
}

fn wants_markdown(format: Option<&str>) -> Result<bool, ApiError> {
    match format {
        None | Some("json") => Ok(false),
        Some("md" | "markdown") => Ok(true),
        Some(other) => Err(ApiError::BadRequest(format!(
            "format {other:?} is not one of json, md"
        ))),
    }
}

fn cursor(raw: Option<&str>) -> Result<Option<Cursor>, ApiError> {
    match raw {
        None | Some("") => Ok(None),
        Some(raw) => Cursor::decode(raw)
            .map(Some)
            .ok_or_else(|| ApiError::BadRequest(format!("cursor {raw:?} is malformed"))),
    }
}

async fn first_page_of(
    state: &AppState,
    id: &str,
    profile: Option<LearnerProfile>,
) -> Result<FirstPage, ApiError> {
    let files = state.chat.learners.project_files(id, None).await?;
    Ok(FirstPage {
        profile,
        mentor_sessions: state.chat.learners.mentor_sessions(id).await?,
        flags: state.review.flags(id, false).await?,
        feedback: state.review.feedback_since(id, 0).await?,
        project_files: files.iter().map(FileInfo::from).collect(),
    })
}

/// The same export, where the mentor page looks for it.
#[utoipa::path(
    get,
    path = "/api/v1/mentor/learners/{id}/export",
    tag = "mentor",
    params(("id" = String, Path, description = "The learner's id"), ExportQuery),
    responses(
        (status = 200, description = "The same export as `/api/v1/learners/{id}/export`", body = ExportJson),
        crate::http::error::refusals::LearnerInput,
    )
)]
pub async fn mentor_export(
    state: State<AppState>,
    id: Path<String>,
    claims: Claims,
    query: Query<ExportQuery>,
) -> Result<Response, ApiError> {
    export(state, id, claims, query).await
}
