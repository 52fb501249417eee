//! What the chat widget asks about the learner using it (`/api/v1/me/...`, the caller's own
//! data only, for whoever may chat: learners, demo visitors and admins): their conversations,
//! most recently active first, and what the transparency panel shows (who can read their
//! conversations, what the companion knows about them, how long transcripts are kept).
use axum::extract::State;
use serde::Serialize;

use super::conversations::{cursor, page_limit};
use super::extract::{Json, Query};
use super::mentor::conversations::ListQuery;
use super::{ApiError, AppState};
use crate::auth::{Claims, Role};
use crate::review::ConversationSummary;

/// The caller, if they may chat (the widget's user).
fn chatter(claims: &Claims) -> Result<&str, ApiError> {
    match claims.role {
        Role::Learner | Role::Admin => Ok(&claims.sub),
        _ => Err(ApiError::Forbidden(
            "only learners and admins have conversations".into(),
        )),
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MyConversations {
    #[schema(value_type = Vec<Object>)]
    pub conversations: Vec<ConversationSummary>,
    /// More conversations follow: pass this as `after`.
    pub next_cursor: Option<String>,
}

/// `GET /api/v1/me/conversations`: the caller's conversations, most recently active first.
#[utoipa::path(
    get,
    path = "/api/v1/me/conversations",
    tag = "chat",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of the caller's conversations, most recently active first", body = MyConversations),
        crate::http::error::refusals::StaffInput,
    )
)]
pub async fn conversations(
    State(state): State<AppState>,
    claims: Claims,
    Query(query): Query<ListQuery>,
) -> Result<Json<MyConversations>, ApiError> {
    let learner = chatter(&claims)?;
    let limit = page_limit(&state, query.limit)?;
    let after = query
        .after
        .as_deref()
        .map(|a| cursor("after", a))
        .transpose()?;
    let (conversations, next) = state
        .review
        .learner_conversations_page(learner, after.as_ref(), limit)
        .await?;
    Ok(Json(MyConversations {
        conversations,
        next_cursor: next.map(|c| c.encode()),
    }))
}

/// Who can read the caller's conversations.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Readers {
    /// Their mentor's id, when the platform named one in the profile.
    pub mentor: Option<String>,
    /// Their mentor's name, when the platform gave it (`mentor_name` in the profile).
    pub mentor_name: Option<String>,
    /// The course team of this course, when the profile names one (they read answer policies
    /// and what the guard withheld, not the learner's profile).
    pub course: Option<String>,
    /// Companion's administrators can read every conversation.
    pub admins: bool,
}

/// What the companion knows about the caller when it answers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Knowledge {
    /// The platform sent a profile (name, language, course, chapter, project).
    pub profile: bool,
    pub locale: Option<String>,
    pub project: Option<String>,
    /// Files of their projects, searched for their questions only.
    pub project_files: usize,
    /// What their mentor asked them to do at the last session.
    pub mentor_goals: Vec<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Transparency {
    pub learner_id: String,
    pub readers: Readers,
    pub knows: Knowledge,
    /// Conversations untouched for this many days are deleted; `null`: kept until erased.
    pub retention_days: Option<u64>,
    /// Where the learner downloads everything stored about them (JSON).
    pub export_url: String,
}

/// `GET /api/v1/me/transparency`: what the widget's transparency panel shows.
#[utoipa::path(
    get,
    path = "/api/v1/me/transparency",
    tag = "chat",
    responses(
        (status = 200, description = "Who can read the caller's conversations, what the companion knows, how long they are kept", body = Transparency),
        crate::http::error::refusals::Staff,
    )
)]
pub async fn transparency(
    State(state): State<AppState>,
    claims: Claims,
) -> Result<Json<Transparency>, ApiError> {
    let learner = chatter(&claims)?.to_string();
    let learners = &state.chat.learners;
    let profile = learners.learner(&learner).await?;
    let files = learners.project_files(&learner, None).await?;
    let goals = learners
        .mentor_sessions(&learner)
        .await?
        .into_iter()
        .max_by(|a, b| (&a.held_on, a.created_at).cmp(&(&b.held_on, b.created_at)))
        .map(|s| s.goals)
        .unwrap_or_default();
    Ok(Json(Transparency {
        readers: Readers {
            mentor: profile.as_ref().and_then(|p| p.mentor_id.clone()),
            mentor_name: profile.as_ref().and_then(|p| p.mentor_name.clone()),
            course: profile.as_ref().and_then(|p| p.course.clone()),
            admins: true,
        },
        knows: Knowledge {
            profile: profile.is_some(),
            locale: profile.as_ref().map(|p| p.locale.clone()),
            project: profile.as_ref().and_then(|p| p.project.clone()),
            project_files: files.len(),
            mentor_goals: goals,
        },
        retention_days: state.retention.map(|d| d.as_secs() / 86_400),
        export_url: format!("/api/v1/learners/{learner}/export"),
        learner_id: learner,
    }))
}
