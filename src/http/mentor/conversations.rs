//! A learner's conversations as the mentor reviews them: the list, one conversation with
//! everything said about it, and the mentor's annotations on its messages.
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use crate::auth::Claims;
use crate::http::access::{can_review_learner, reviewable_history};
use crate::http::conversations::{PageQuery, cursor, page_limit};
use crate::http::extract::{Json, NamedBody, NamedJson, Query};
use crate::http::{ApiError, AppState, ErrorBody};
use crate::review::{Annotation, AnnotationKind, ConversationSummary, Feedback, Flag};
use crate::transcript::{Conversation, StoredMessage, now_ms};

const MAX_ANNOTATION_CHARS: usize = 4000;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LearnerConversations {
    pub learner_id: String,
    #[schema(value_type = Vec<Object>)]
    pub conversations: Vec<ConversationSummary>,
    /// More conversations follow: pass this as `after`.
    pub next_cursor: Option<String>,
}

/// `limit` and `after` (a cursor from an earlier `next_cursor`).
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Conversations in the page (default and maximum from `transcripts.page_size` and
    /// `transcripts.max_page_size`).
    #[serde(default)]
    pub(crate) limit: Option<usize>,
    /// Continue after this cursor.
    #[serde(default)]
    pub(crate) after: Option<String>,
}

/// `GET /api/v1/mentor/learners/{id}/conversations`: most recently active first, a page at a
/// time.
#[utoipa::path(
    get,
    path = "/api/v1/mentor/learners/{id}/conversations",
    tag = "mentor",
    params(("id" = String, Path, description = "The learner's id"), ListQuery),
    responses(
        (status = 200, description = "A page of the learner's conversations, most recently active first", body = LearnerConversations),
        crate::http::error::refusals::LearnerInput,
    )
)]
pub async fn learner_conversations(
    State(state): State<AppState>,
    Path(id): Path<String>,
    claims: Claims,
    Query(query): Query<ListQuery>,
) -> Result<Json<LearnerConversations>, ApiError> {
    let limit = page_limit(&state, query.limit)?;
    let after = query
        .after
        .as_deref()
        .map(|a| cursor("after", a))
        .transpose()?;
    reviewable_history(&state, &claims, &id).await?;
    let (conversations, next) = state
        .review
        .learner_conversations_page(&id, after.as_ref(), limit)
        .await?;
    Ok(Json(LearnerConversations {
        learner_id: id,
        conversations,
        next_cursor: next.map(|c| c.encode()),
    }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConversationReview {
    #[schema(value_type = Object)]
    pub conversation: Conversation,
    #[schema(value_type = Vec<Object>)]
    pub messages: Vec<StoredMessage>,
    #[schema(value_type = Vec<Object>)]
    pub annotations: Vec<Annotation>,
    #[schema(value_type = Vec<Object>)]
    pub feedback: Vec<Feedback>,
    #[schema(value_type = Vec<Object>)]
    pub flags: Vec<Flag>,
    /// What the output guard did, by answer id: the blocks it withheld as the model wrote
    /// them, the rule that fired and why, citations removed, answers that cited nothing.
    #[schema(value_type = Object)]
    pub guard: std::collections::BTreeMap<String, serde_json::Value>,
    /// More messages follow: pass this as `after` (as `before` when paging with `before`).
    pub next_cursor: Option<String>,
}

/// `GET /api/v1/mentor/conversations/{id}`: a page of messages with sources and prompt
/// version, and the mentor's annotations, the learner's feedback and the flags raised in the
/// conversation.
#[utoipa::path(
    get,
    path = "/api/v1/mentor/conversations/{id}",
    tag = "mentor",
    params(("id" = String, Path, description = "The conversation's id"), PageQuery),
    responses(
        (status = 200, description = "A page of messages, annotations, feedback and flags", body = ConversationReview),
        crate::http::error::refusals::BadInput,
        crate::http::error::refusals::Unauthenticated,
        (status = 404, description = "No such conversation, or one the caller may not review", body = ErrorBody)
    )
)]
pub async fn conversation(
    State(state): State<AppState>,
    Path(id): Path<String>,
    claims: Claims,
    Query(query): Query<PageQuery>,
) -> Result<Json<ConversationReview>, ApiError> {
    let (at, limit) = query.page(&state)?;
    let not_found = || ApiError::NotFound("conversation".into());
    let conversation = state.chat.store.conversation(&id).await?;
    let conversation = conversation.ok_or_else(not_found)?;
    let learner_id = conversation.learner_id.clone();
    let profile = state.chat.learners.learner(&learner_id).await?;
    if !can_review_learner(&claims, profile.as_ref()) {
        return Err(not_found());
    }
    let flags = state.review.flags(&learner_id, false).await?;
    let page = state.review.conversation_messages(&id, &at, limit).await?;
    let guard = page
        .messages
        .iter()
        .filter_map(|m| Some((m.id.clone(), m.guard.clone()?)))
        .collect();
    Ok(Json(ConversationReview {
        conversation,
        guard,
        messages: page.messages,
        next_cursor: page.next.map(|c| c.encode()),
        annotations: state.review.conversation_annotations(&id).await?,
        feedback: state.review.conversation_feedback(&id).await?,
        flags: flags
            .into_iter()
            .filter(|f| f.conversation_id.as_deref() == Some(id.as_str()))
            .collect(),
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnnotationBody {
    kind: AnnotationKind,
    text: String,
}

impl NamedBody for AnnotationBody {
    const NAME: &'static str = "annotation";
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Annotated {
    #[schema(value_type = Object)]
    pub annotation: Annotation,
}

/// `POST /api/v1/mentor/messages/{id}/annotations` with `{"kind": "correction"|"comment",
/// "text": "..."}`: the mentor's note on a message.
#[utoipa::path(
    post,
    path = "/api/v1/mentor/messages/{id}/annotations",
    tag = "mentor",
    params(("id" = String, Path, description = "The message's id")),
    request_body(content = inline(Object), description = "`kind` (correction or comment) and `text`"),
    responses(
        (status = 201, description = "The annotation, stored", body = Annotated),
        crate::http::error::refusals::BadInput,
        crate::http::error::refusals::Unauthenticated,
        (status = 404, description = "No such message, or one the caller may not review", body = ErrorBody)
    )
)]
pub async fn annotate(
    State(state): State<AppState>,
    Path(message_id): Path<String>,
    claims: Claims,
    NamedJson(body): NamedJson<AnnotationBody>,
) -> Result<(StatusCode, Json<Annotated>), ApiError> {
    let not_found = || ApiError::NotFound("message".into());
    let message = state.review.message(&message_id).await?;
    let message = message.ok_or_else(not_found)?;
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
        message_id: message.id,
        learner_id: message.learner_id,
        author_id: claims.sub,
        kind: body.kind,
        text: text.to_string(),
        created_at: now_ms(),
    };
    state.review.add_annotation(&annotation).await?;
    Ok((StatusCode::CREATED, Json(Annotated { annotation })))
}
