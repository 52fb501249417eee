//! `GET /api/v1/conversations/{id}`: a conversation read back by whoever may read its learner
//! ([`super::access::can_read_learner`]), a page of messages at a time; and the page parameters
//! every conversation endpoint takes.
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};

use super::access::can_read_learner;
use super::extract::{Json, Query};
use super::{ApiError, AppState, ErrorBody};
use crate::auth::Claims;
use crate::review::{Cursor, PageAt, Rating};
use crate::transcript::{Conversation, StoredMessage};

/// `limit` and at most one of `after` and `before` (cursors from an earlier `next_cursor`).
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// Messages in the page (default and maximum from `transcripts.page_size` and
    /// `transcripts.max_page_size`).
    #[serde(default)]
    limit: Option<usize>,
    /// Continue after this cursor (oldest first).
    #[serde(default)]
    after: Option<String>,
    /// The messages just before this cursor; `next_cursor` then continues backwards.
    #[serde(default)]
    before: Option<String>,
}

/// The page size asked for, within the configured maximum.
pub(crate) fn page_limit(state: &AppState, limit: Option<usize>) -> Result<usize, ApiError> {
    let max = state.transcripts.max_page_size;
    match limit {
        None => Ok(state.transcripts.page_size),
        Some(limit) if (1..=max).contains(&limit) => Ok(limit),
        Some(limit) => Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {max}, not {limit}"
        ))),
    }
}

/// A cursor parameter, decoded.
pub(crate) fn cursor(name: &str, text: &str) -> Result<Cursor, ApiError> {
    Cursor::decode(text).ok_or_else(|| {
        let shown: String = text.chars().take(40).collect();
        ApiError::BadRequest(format!(
            "{name} is not a cursor from next_cursor: {shown:?}"
        ))
    })
}

impl PageQuery {
    /// Where the page starts and how many messages it holds.
    pub(crate) fn page(&self, state: &AppState) -> Result<(PageAt, usize), ApiError> {
        let limit = page_limit(state, self.limit)?;
        let at = match (&self.after, &self.before) {
            (Some(_), Some(_)) => {
                return Err(ApiError::BadRequest(
                    "give after or before, not both".to_string(),
                ));
            }
            (Some(after), None) => PageAt::After(cursor("after", after)?),
            (None, Some(before)) => PageAt::Before(cursor("before", before)?),
            (None, None) => PageAt::First,
        };
        Ok((at, limit))
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConversationView {
    #[schema(value_type = Object)]
    pub conversation: Conversation,
    /// One page, oldest first.
    #[schema(value_type = Vec<Object>)]
    pub messages: Vec<StoredMessage>,
    /// More messages follow: pass this as `after` (as `before` when paging with `before`).
    pub next_cursor: Option<String>,
    /// The learner's rating of each answer on this page that has one (with its comment), so
    /// that a chat restored from the server shows the thumbs the learner gave.
    pub feedback: Vec<AnswerRating>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AnswerRating {
    pub message_id: String,
    #[schema(value_type = String, example = "down")]
    pub rating: Rating,
    pub comment: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/v1/conversations/{id}",
    tag = "chat",
    params(("id" = String, Path, description = "The conversation's id"), PageQuery),
    responses(
        (status = 200, description = "The conversation and a page of its messages", body = ConversationView),
        crate::http::error::refusals::BadInput,
        crate::http::error::refusals::Unauthenticated,
        (status = 404, description = "No such conversation, or another learner's", body = ErrorBody)
    )
)]
pub async fn conversation(
    State(state): State<AppState>,
    Path(id): Path<String>,
    claims: Claims,
    Query(query): Query<PageQuery>,
) -> Result<Json<ConversationView>, ApiError> {
    let (at, limit) = query.page(&state)?;
    let not_found = || ApiError::NotFound("conversation".into());
    let conversation = state
        .chat
        .store
        .conversation(&id)
        .await?
        .ok_or_else(not_found)?;
    // Who may read it follows the learner's rules (the learner, their mentor, an admin, the
    // platform), whatever the caller's id; a foreign conversation looks like a missing one.
    let profile = state
        .chat
        .learners
        .learner(&conversation.learner_id)
        .await?;
    if !can_read_learner(&claims, &conversation.learner_id, profile.as_ref()) {
        return Err(not_found());
    }
    let page = state.review.conversation_messages(&id, &at, limit).await?;
    let on_page: std::collections::HashSet<&str> =
        page.messages.iter().map(|m| m.id.as_str()).collect();
    // Oldest first: a newer rating of the same answer replaces an older one.
    let mut ratings = std::collections::BTreeMap::new();
    for f in state.review.conversation_feedback(&id).await? {
        if on_page.contains(f.message_id.as_str()) {
            ratings.insert(f.message_id.clone(), f);
        }
    }
    let feedback = ratings
        .into_values()
        .map(|f| AnswerRating {
            message_id: f.message_id,
            rating: f.rating,
            comment: f.comment,
        })
        .collect();
    Ok(Json(ConversationView {
        conversation,
        messages: page.messages,
        next_cursor: page.next.map(|c| c.encode()),
        feedback,
    }))
}
