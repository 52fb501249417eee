//! `GET /api/v1/mentor/learners[?active=true]`: the caller's learners, each with their activity
//! since their last session and their open flags; urgent first.
use std::cmp::Reverse;

use axum::extract::State;
use serde::{Deserialize, Serialize};

use crate::http::extract::{Json, Query, Reviewer};
use crate::http::{ApiError, AppState};
use crate::learner::LearnerProfile;
use crate::review::FlagCounts;
use crate::review::digest::since_session;

/// The most messages read per learner to count their questions since the last session.
const MAX_MESSAGES_SINCE: usize = 5000;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LearnersQuery {
    #[serde(default)]
    active: Option<bool>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Dashboard {
    pub learners: Vec<LearnerRow>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LearnerRow {
    pub id: String,
    pub name: Option<String>,
    pub course: Option<String>,
    pub chapter: Option<String>,
    pub project: Option<String>,
    pub mentor_id: Option<String>,
    pub last_session: Option<LastSession>,
    /// Start of the period counted: when the last session was recorded, or 0.
    pub since: i64,
    pub questions_since: usize,
    pub active_since_last_session: bool,
    pub last_activity: Option<i64>,
    #[schema(value_type = Object)]
    pub flags: FlagCounts,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LastSession {
    pub held_on: String,
    pub goals: Vec<String>,
}

#[utoipa::path(
    get,
    path = "/api/v1/mentor/learners",
    tag = "mentor",
    params(LearnersQuery),
    responses(
        (status = 200, description = "The caller's learners, urgent first", body = Dashboard),
        crate::http::error::refusals::BadInput,
        crate::http::error::refusals::Unauthenticated,
        crate::http::error::refusals::WrongRole
    )
)]
pub async fn learners(
    State(state): State<AppState>,
    reviewer: Reviewer,
    Query(query): Query<LearnersQuery>,
) -> Result<Json<Dashboard>, ApiError> {
    let mentor = reviewer.mentor.as_deref();
    let profiles = state.chat.learners.learners(mentor).await?;
    let ids: Vec<String> = profiles.iter().map(|p| p.id.clone()).collect();
    let counts = state.review.open_flag_counts(&ids).await?;
    let mut rows = Vec::new();
    // Two queries per learner (sessions, messages): the store has no batched form of either.
    for profile in profiles {
        let flags = counts.get(&profile.id).copied().unwrap_or_default();
        let row = row(&state, profile, flags).await?;
        if query.active != Some(true) || row.active_since_last_session {
            rows.push(row);
        }
    }
    rows.sort_by_key(|r| {
        let urgency = (Reverse(r.flags.urgent), Reverse(r.flags.open));
        (urgency, Reverse(r.last_activity.unwrap_or(0)))
    });
    Ok(Json(Dashboard { learners: rows }))
}

async fn row(
    state: &AppState,
    profile: LearnerProfile,
    flags: FlagCounts,
) -> Result<LearnerRow, ApiError> {
    let sessions = state.chat.learners.mentor_sessions(&profile.id).await?;
    let last = sessions.into_iter().next();
    let since = since_session(last.as_ref());
    let page = state
        .review
        .learner_messages(&profile.id, since, None, MAX_MESSAGES_SINCE)
        .await?;
    let questions = page.messages.iter().filter(|m| m.role == "learner").count();
    Ok(LearnerRow {
        last_activity: page.messages.last().map(|m| m.created_at),
        last_session: last.map(|s| LastSession {
            held_on: s.held_on,
            goals: s.goals,
        }),
        id: profile.id,
        name: profile.name,
        course: profile.course,
        chapter: profile.chapter,
        project: profile.project,
        mentor_id: profile.mentor_id,
        since,
        questions_since: questions,
        active_since_last_session: questions > 0,
        flags,
    })
}
