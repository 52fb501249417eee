//! The mentor's API and page: learners with activity since their last session, conversations
//! with sources and annotations, search across the caller's learners, annotations, flags, the
//! digest, a learner's export and deletion. Access follows [`super::access`]; a learner the
//! caller may not see answers exactly like a learner that does not exist.
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::access::{can_read_learner, can_review_learner};
use super::extract::{Json, NamedBody, NamedJson, Query, Reviewer};
use super::{ApiError, AppState};
use crate::auth::{Claims, Role};
use crate::learner::LearnerProfile;
use crate::review::digest::{DigestWriter, since_session};
use crate::review::{Annotation, AnnotationKind, Cursor};
use crate::review::erase::erase;
use crate::review::export;
use crate::review::search::{parse_query, snippet};
use crate::transcript::now_ms;

const PAGE_HTML: &str = include_str!("../../web/mentor.html");
const PAGE_JS: &str = include_str!("../../web/mentor.js");
const PAGE_CSS: &str = include_str!("../../web/mentor.css");

const DEFAULT_SEARCH_HITS: usize = 50;
const MAX_SEARCH_HITS: usize = 200;
const MAX_ANNOTATION_CHARS: usize = 4000;
const MAX_RESOLUTION_CHARS: usize = 2000;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/mentor", get(page))
        .route("/mentor/mentor.js", get(script))
        .route("/mentor/mentor.css", get(style))
        .route("/api/v1/mentor/learners", get(learners))
        .route(
            "/api/v1/mentor/learners/{id}/conversations",
            get(conversations),
        )
        .route("/api/v1/mentor/learners/{id}/digest", get(digest))
        .route("/api/v1/mentor/learners/{id}/flags", get(flags))
        .route("/api/v1/mentor/learners/{id}/export", get(export))
        .route("/api/v1/mentor/conversations/{id}", get(conversation))
        .route("/api/v1/mentor/messages/{id}/annotations", post(annotate))
        .route("/api/v1/mentor/flags/{id}/resolve", post(resolve_flag))
        .route("/api/v1/mentor/search", get(search))
        .route("/api/v1/learners/{id}/export", get(export))
        .route("/api/v1/learners/{id}", delete(delete_learner))
}

async fn page() -> Html<&'static str> {
    Html(PAGE_HTML)
}

async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        PAGE_JS,
    )
        .into_response()
}

async fn style() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        PAGE_CSS,
    )
        .into_response()
}

fn learner_not_found() -> ApiError {
    ApiError::NotFound("learner".into())
}

/// Whether anything is stored about a learner without a profile (an admin may see those).
async fn has_history(state: &AppState, learner_id: &str) -> Result<bool, ApiError> {
    Ok(!state
        .review
        .learner_conversations(learner_id)
        .await?
        .is_empty())
}

/// The learner's profile when `claims` may review them; the same 404 otherwise.
async fn reviewable(
    state: &AppState,
    claims: &Claims,
    learner_id: &str,
) -> Result<Option<LearnerProfile>, ApiError> {
    let profile = state.chat.learners.learner(learner_id).await?;
    if !can_review_learner(claims, profile.as_ref()) {
        return Err(learner_not_found());
    }
    if profile.is_none() && !has_history(state, learner_id).await? {
        return Err(learner_not_found());
    }
    Ok(profile)
}

/// The learner's profile when `claims` may read them (the learner too); the same 404 otherwise.
async fn readable(
    state: &AppState,
    claims: &Claims,
    learner_id: &str,
) -> Result<Option<LearnerProfile>, ApiError> {
    let profile = state.chat.learners.learner(learner_id).await?;
    if !can_read_learner(claims, learner_id, profile.as_ref()) {
        return Err(learner_not_found());
    }
    if profile.is_none() && !has_history(state, learner_id).await? {
        return Err(learner_not_found());
    }
    Ok(profile)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LearnersQuery {
    #[serde(default)]
    active: Option<bool>,
}

/// `GET /api/v1/mentor/learners[?active=true]`: the caller's learners, each with activity since
/// their last session and open flags; urgent first.
async fn learners(
    State(state): State<AppState>,
    reviewer: Reviewer,
    Query(query): Query<LearnersQuery>,
) -> Result<Json<Value>, ApiError> {
    let profiles = state
        .chat
        .learners
        .learners(reviewer.mentor.as_deref())
        .await?;
    let ids: Vec<String> = profiles.iter().map(|p| p.id.clone()).collect();
    let counts = state.review.open_flag_counts(&ids).await?;
    let mut rows = Vec::new();
    for profile in &profiles {
        let sessions = state.chat.learners.mentor_sessions(&profile.id).await?;
        let last = sessions.first();
        let since = since_session(last);
        let page = state
            .review
            .learner_messages(&profile.id, since, None, 5000)
            .await?;
        let questions = page.messages.iter().filter(|m| m.role == "learner").count();
        let last_activity = page.messages.last().map(|m| m.created_at);
        let flags = counts.get(&profile.id).copied().unwrap_or_default();
        if query.active == Some(true) && questions == 0 {
            continue;
        }
        rows.push(json!({
            "id": profile.id,
            "name": profile.name,
            "course": profile.course,
            "chapter": profile.chapter,
            "project": profile.project,
            "mentor_id": profile.mentor_id,
            "last_session": last.map(|s| json!({"held_on": s.held_on, "goals": s.goals})),
            "since": since,
            "questions_since": questions,
            "active_since_last_session": questions > 0,
            "last_activity": last_activity,
            "flags": flags,
        }));
    }
    rows.sort_by_key(|r| {
        (
            std::cmp::Reverse(r["flags"]["urgent"].as_u64().unwrap_or(0)),
            std::cmp::Reverse(r["flags"]["open"].as_u64().unwrap_or(0)),
            std::cmp::Reverse(r["last_activity"].as_i64().unwrap_or(0)),
        )
    });
    Ok(Json(json!({ "learners": rows })))
}

/// `GET /api/v1/mentor/learners/{id}/conversations`
async fn conversations(
    State(state): State<AppState>,
    Path(id): Path<String>,
    claims: Claims,
) -> Result<Json<Value>, ApiError> {
    reviewable(&state, &claims, &id).await?;
    let conversations = state.review.learner_conversations(&id).await?;
    Ok(Json(
        json!({ "learner_id": id, "conversations": conversations }),
    ))
}

/// `GET /api/v1/mentor/conversations/{id}`: messages with sources and prompt version, the
/// mentor's annotations, the learner's feedback and the flags raised in it.
async fn conversation(
    State(state): State<AppState>,
    Path(id): Path<String>,
    claims: Claims,
) -> Result<Json<Value>, ApiError> {
    let not_found = || ApiError::NotFound("conversation".into());
    let conversation = state
        .chat
        .store
        .conversation(&id)
        .await?
        .ok_or_else(not_found)?;
    let profile = state
        .chat
        .learners
        .learner(&conversation.learner_id)
        .await?;
    if !can_review_learner(&claims, profile.as_ref()) {
        return Err(not_found());
    }
    let messages = state.chat.store.messages(&id).await?;
    let annotations = state.review.conversation_annotations(&id).await?;
    let feedback = state.review.conversation_feedback(&id).await?;
    let flags: Vec<_> = state
        .review
        .flags(&conversation.learner_id, false)
        .await?
        .into_iter()
        .filter(|f| f.conversation_id.as_deref() == Some(id.as_str()))
        .collect();
    Ok(Json(json!({
        "conversation": conversation,
        "messages": messages,
        "annotations": annotations,
        "feedback": feedback,
        "flags": flags,
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FlagsQuery {
    #[serde(default)]
    status: Option<String>,
}

/// `GET /api/v1/mentor/learners/{id}/flags[?status=open|all]`
async fn flags(
    State(state): State<AppState>,
    Path(id): Path<String>,
    claims: Claims,
    Query(query): Query<FlagsQuery>,
) -> Result<Json<Value>, ApiError> {
    reviewable(&state, &claims, &id).await?;
    let open_only = match query.status.as_deref() {
        None | Some("open") => true,
        Some("all") => false,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "status {other:?} is not one of open, all"
            )));
        }
    };
    let flags = state.review.flags(&id, open_only).await?;
    Ok(Json(json!({ "learner_id": id, "flags": flags })))
}

/// `GET /api/v1/mentor/learners/{id}/digest`: the digest since the last session.
async fn digest(
    State(state): State<AppState>,
    Path(id): Path<String>,
    claims: Claims,
) -> Result<Json<Value>, ApiError> {
    reviewable(&state, &claims, &id).await?;
    let writer = DigestWriter {
        review: state.review.clone(),
        learners: state.chat.learners.clone(),
        llm: state.chat.llm.clone(),
    };
    let digest = writer.digest(&id).await?;
    Ok(Json(json!(digest)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AnnotationBody {
    kind: AnnotationKind,
    text: String,
}

impl NamedBody for AnnotationBody {
    const NAME: &'static str = "annotation";
}

/// `POST /api/v1/mentor/messages/{id}/annotations` with `{"kind": "correction"|"comment",
/// "text": "..."}`: the mentor's note on a message.
async fn annotate(
    State(state): State<AppState>,
    Path(message_id): Path<String>,
    claims: Claims,
    NamedJson(body): NamedJson<AnnotationBody>,
) -> Result<Response, ApiError> {
    let not_found = || ApiError::NotFound("message".into());
    let message = state
        .review
        .message(&message_id)
        .await?
        .ok_or_else(not_found)?;
    let profile = state.chat.learners.learner(&message.learner_id).await?;
    if !can_review_learner(&claims, profile.as_ref()) {
        return Err(not_found());
    }
    let text = body.text.trim();
    let chars = text.chars().count();
    if chars == 0 || chars > MAX_ANNOTATION_CHARS {
        return Err(ApiError::BadRequest(format!(
            "annotation text must be 1 to {MAX_ANNOTATION_CHARS} characters, not {chars}"
        )));
    }
    let annotation = Annotation {
        id: uuid::Uuid::now_v7().to_string(),
        message_id: message.id.clone(),
        learner_id: message.learner_id.clone(),
        author_id: claims.sub.clone(),
        kind: body.kind,
        text: text.to_string(),
        created_at: now_ms(),
    };
    state.review.add_annotation(&annotation).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "annotation": annotation })),
    )
        .into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResolveBody {
    #[serde(default)]
    note: Option<String>,
}

impl NamedBody for ResolveBody {
    const NAME: &'static str = "resolve";

    fn when_empty() -> Option<Self> {
        Some(Self::default())
    }
}

/// `POST /api/v1/mentor/flags/{id}/resolve` with an optional `{"note": "..."}`.
async fn resolve_flag(
    State(state): State<AppState>,
    Path(flag_id): Path<String>,
    claims: Claims,
    NamedJson(body): NamedJson<ResolveBody>,
) -> Result<Json<Value>, ApiError> {
    let not_found = || ApiError::NotFound("flag".into());
    let flag = state.review.flag(&flag_id).await?.ok_or_else(not_found)?;
    let profile = state.chat.learners.learner(&flag.learner_id).await?;
    if !can_review_learner(&claims, profile.as_ref()) {
        return Err(not_found());
    }
    let note = body
        .note
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty());
    if let Some(note) = note {
        let chars = note.chars().count();
        if chars > MAX_RESOLUTION_CHARS {
            return Err(ApiError::BadRequest(format!(
                "note has {chars} characters; the limit is {MAX_RESOLUTION_CHARS}"
            )));
        }
    }
    let resolved_now = state
        .review
        .resolve_flag(&flag_id, &claims.sub, note)
        .await?;
    let flag = state.review.flag(&flag_id).await?.ok_or_else(not_found)?;
    Ok(Json(
        json!({ "flag": flag, "already_resolved": !resolved_now }),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchQuery {
    #[serde(default)]
    q: Option<String>,
    #[serde(default)]
    limit: Option<String>,
}

fn parse_limit(raw: Option<&str>, default: usize, max: usize) -> Result<usize, ApiError> {
    match raw {
        None => Ok(default),
        Some(raw) => match raw.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(ApiError::BadRequest(format!(
                "limit {raw:?} must be a number from 1 to {max}"
            ))),
        },
    }
}

/// `GET /api/v1/mentor/search?q=...[&limit=N]`: messages of the caller's learners containing
/// every term, newest first.
async fn search(
    State(state): State<AppState>,
    reviewer: Reviewer,
    Query(query): Query<SearchQuery>,
) -> Result<Json<Value>, ApiError> {
    let terms = parse_query(query.q.as_deref().unwrap_or_default())?;
    let limit = parse_limit(query.limit.as_deref(), DEFAULT_SEARCH_HITS, MAX_SEARCH_HITS)?;
    let scope: Option<Vec<String>> = match reviewer.mentor.as_deref() {
        Some(mentor) => Some(
            state
                .chat
                .learners
                .learners(Some(mentor))
                .await?
                .into_iter()
                .map(|p| p.id)
                .collect(),
        ),
        None => None,
    };
    let hits = state.review.search(scope.as_deref(), &terms, limit).await?;
    let hits: Vec<Value> = hits
        .iter()
        .map(|m| {
            json!({
                "learner_id": m.learner_id,
                "conversation_id": m.conversation_id,
                "message_id": m.id,
                "role": m.role,
                "status": m.status,
                "created_at": m.created_at,
                "snippet": snippet(&m.text, &terms),
            })
        })
        .collect();
    Ok(Json(json!({ "terms": terms, "hits": hits })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportQuery {
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    limit: Option<String>,
}

/// `GET /api/v1/learners/{id}/export` (also under `/api/v1/mentor/learners/{id}/export`):
/// a learner's history as JSON (default) or Markdown (`format=md`), page by page; each page is
/// bounded in messages and bytes, and `next_cursor` (or the `x-next-cursor` header) continues.
async fn export(
    State(state): State<AppState>,
    Path(id): Path<String>,
    claims: Claims,
    Query(query): Query<ExportQuery>,
) -> Result<Response, ApiError> {
    let profile = readable(&state, &claims, &id).await?;
    let markdown = match query.format.as_deref() {
        None | Some("json") => false,
        Some("md" | "markdown") => true,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "format {other:?} is not one of json, md"
            )));
        }
    };
    let cursor = match query.cursor.as_deref() {
        None | Some("") => None,
        Some(raw) => Some(
            Cursor::decode(raw)
                .ok_or_else(|| ApiError::BadRequest(format!("cursor {raw:?} is malformed")))?,
        ),
    };
    let limit = parse_limit(
        query.limit.as_deref(),
        export::DEFAULT_PAGE_MESSAGES,
        export::MAX_PAGE_MESSAGES,
    )?;
    let page = export::page(state.review.as_ref(), &id, cursor.as_ref(), limit).await?;
    let first_page = cursor.is_none();
    let next_cursor = page.next.as_ref().map(Cursor::encode);
    let mut response = if markdown {
        let text = export::markdown(&id, profile.as_ref(), &page, first_page);
        (
            [
                (header::CONTENT_TYPE, "text/markdown; charset=utf-8"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"export.md\"",
                ),
            ],
            text,
        )
            .into_response()
    } else {
        let mut body = json!({
            "learner_id": id,
            "exported_at": now_ms(),
            "messages": page.messages,
            "annotations": page.annotations,
            "next_cursor": next_cursor,
        });
        if first_page {
            body["profile"] = json!(profile);
            body["mentor_sessions"] = json!(state.chat.learners.mentor_sessions(&id).await?);
            body["flags"] = json!(state.review.flags(&id, false).await?);
            body["feedback"] = json!(state.review.feedback_since(&id, 0).await?);
            let files = state.chat.learners.project_files(&id, None).await?;
            body["project_files"] = json!(
                files
                    .iter()
                    .map(
                        |f| json!({"project": f.project, "path": f.path, "bytes": f.bytes,
                        "sha256": f.sha256, "origin": f.origin, "updated_at": f.updated_at})
                    )
                    .collect::<Vec<_>>()
            );
        }
        Json(body).into_response()
    };
    if let Some(next) = next_cursor.and_then(|c| HeaderValue::from_str(&c).ok()) {
        response.headers_mut().insert("x-next-cursor", next);
    }
    Ok(response)
}

/// `DELETE /api/v1/learners/{id}` (admin or the platform's service token): removes the
/// learner's transcripts, review data, profile, sessions, project files and their vectors.
async fn delete_learner(
    State(state): State<AppState>,
    Path(id): Path<String>,
    claims: Claims,
) -> Result<Json<Value>, ApiError> {
    if !matches!(claims.role, Role::Admin | Role::Service) {
        return Err(learner_not_found());
    }
    let erased = erase(
        state.chat.retriever.store().as_ref(),
        state.review.as_ref(),
        state.chat.learners.as_ref(),
        &id,
    )
    .await?
    .ok_or_else(learner_not_found)?;
    tracing::info!(learner = %id, rows = erased.rows_removed, files = erased.project_files_removed, by = %claims.sub, "learner deleted");
    Ok(Json(json!({
        "deleted": id,
        "rows_removed": erased.rows_removed,
        "project_files_removed": erased.project_files_removed,
    })))
}
