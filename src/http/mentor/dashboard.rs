//! `GET /api/v1/mentor/learners[?active=true]`: the caller's learners, each with their activity
//! since their last session and their open flags; urgent first.
use std::cmp::Reverse;

use axum::extract::State;
use serde::{Deserialize, Serialize};

use crate::http::extract::{Json, Query, Reviewer};
use crate::http::{ApiError, AppState};
use crate::learner::LearnerProfile;
use crate::review::{FlagCounts, Overview};

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
        crate::http::error::refusals::StaffInput,
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
    // A fixed number of queries whatever the number of learners: flags, then sessions and
    // activity (counted by the database, no message read).
    let counts = state.review.open_flag_counts(&ids).await?;
    let mut overviews = crate::review::overviews(state.review.as_ref(), &ids).await?;
    let mut rows = Vec::new();
    for profile in profiles {
        let flags = counts.get(&profile.id).copied().unwrap_or_default();
        let overview = overviews.remove(&profile.id).unwrap_or_default();
        let row = row(profile, overview, flags);
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

fn row(profile: LearnerProfile, overview: Overview, flags: FlagCounts) -> LearnerRow {
    let questions = overview.questions_since as usize;
    LearnerRow {
        last_activity: overview.last_activity,
        last_session: overview.last_session.map(|s| LastSession {
            held_on: s.held_on,
            goals: s.goals,
        }),
        id: profile.id,
        name: profile.name,
        course: profile.course,
        chapter: profile.chapter,
        project: profile.project,
        mentor_id: profile.mentor_id,
        since: overview.since,
        questions_since: questions,
        active_since_last_session: questions > 0,
        flags,
    }
}
