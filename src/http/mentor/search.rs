//! `GET /api/v1/mentor/search?q=...[&limit=N]`: messages of the caller's learners holding
//! every term, newest first ([`crate::review::search`]).
use axum::extract::State;
use serde::{Deserialize, Serialize};

use crate::http::extract::{Json, Query, Reviewer, parse_limit};
use crate::http::{ApiError, AppState};
use crate::review::search::{parse_query, snippet};
use crate::transcript::{MessageStatus, StoredMessage};

const DEFAULT_HITS: usize = 50;
const MAX_HITS: usize = 200;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SearchQuery {
    #[serde(default)]
    q: Option<String>,
    #[serde(default)]
    limit: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SearchResults {
    pub terms: Vec<String>,
    pub hits: Vec<SearchHit>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SearchHit {
    pub learner_id: String,
    pub conversation_id: String,
    pub message_id: String,
    pub role: String,
    #[schema(value_type = String)]
    pub status: MessageStatus,
    pub created_at: i64,
    /// The text around the first term found.
    pub snippet: String,
}

impl SearchHit {
    fn new(m: StoredMessage, terms: &[String]) -> Self {
        Self {
            snippet: snippet(&m.text, terms),
            learner_id: m.learner_id,
            conversation_id: m.conversation_id,
            message_id: m.id,
            role: m.role,
            status: m.status,
            created_at: m.created_at,
        }
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/mentor/search",
    tag = "mentor",
    params(SearchQuery),
    responses(
        (status = 200, description = "Messages holding every term, newest first", body = SearchResults),
        crate::http::error::refusals::StaffInput,
    )
)]
pub async fn search(
    State(state): State<AppState>,
    reviewer: Reviewer,
    Query(query): Query<SearchQuery>,
) -> Result<Json<SearchResults>, ApiError> {
    let terms = parse_query(query.q.as_deref().unwrap_or_default())?;
    let limit = parse_limit(query.limit.as_deref(), DEFAULT_HITS, MAX_HITS)?;
    // A mentor searches their own learners; an admin everyone's.
    let scope: Option<Vec<String>> = match reviewer.mentor.as_deref() {
        Some(mentor) => {
            let learners = state.chat.learners.learners(Some(mentor)).await?;
            Some(learners.into_iter().map(|p| p.id).collect())
        }
        None => None,
    };
    let found = state.review.search(scope.as_deref(), &terms, limit).await?;
    let hits = found
        .into_iter()
        .map(|m| SearchHit::new(m, &terms))
        .collect();
    Ok(Json(SearchResults { terms, hits }))
}
