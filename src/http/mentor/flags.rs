//! A learner's flags (what needs the mentor) and their resolution.
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};

use crate::auth::Claims;
use crate::http::access::{can_review_learner, reviewable_history};
use crate::http::extract::{Json, NamedBody, NamedJson, Query};
use crate::http::{ApiError, AppState, ErrorBody};
use crate::review::flags::{TREND_WEEKS, weekly_counts};
use crate::review::{Flag, FlagKind};

const MAX_RESOLUTION_CHARS: usize = 2000;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct FlagsQuery {
    #[serde(default)]
    status: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LearnerFlags {
    pub learner_id: String,
    #[schema(value_type = Vec<Object>)]
    pub flags: Vec<Flag>,
    /// Messages that sounded discouraged, per week over the last weeks, oldest first (the
    /// last week ends now): the trend shown with a discouragement flag.
    pub discouraged_weeks: Vec<u32>,
}

/// `GET /api/v1/mentor/learners/{id}/flags[?status=open|all]`: newest first.
#[utoipa::path(
    get,
    path = "/api/v1/mentor/learners/{id}/flags",
    tag = "mentor",
    params(("id" = String, Path, description = "The learner's id"), FlagsQuery),
    responses(
        (status = 200, description = "The learner's flags, newest first", body = LearnerFlags),
        crate::http::error::refusals::LearnerInput,
    )
)]
pub async fn flags(
    State(state): State<AppState>,
    Path(id): Path<String>,
    claims: Claims,
    Query(query): Query<FlagsQuery>,
) -> Result<Json<LearnerFlags>, ApiError> {
    reviewable_history(&state, &claims, &id).await?;
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
    let now = crate::transcript::now_ms();
    let since = now - TREND_WEEKS as i64 * crate::review::flags::WEEK_MS;
    let times = state
        .review
        .flag_signal_times(&id, FlagKind::Discouraged, since)
        .await?;
    Ok(Json(LearnerFlags {
        learner_id: id,
        flags,
        discouraged_weeks: weekly_counts(&times, now, TREND_WEEKS),
    }))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resolution {
    #[serde(default)]
    note: Option<String>,
}

impl NamedBody for Resolution {
    const NAME: &'static str = "resolve";

    fn when_empty() -> Option<Self> {
        Some(Self::default())
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Resolved {
    #[schema(value_type = Object)]
    pub flag: Flag,
    /// The flag was resolved before this call, which changed nothing.
    pub already_resolved: bool,
}

/// `POST /api/v1/mentor/flags/{id}/resolve` with an optional `{"note": "..."}`.
#[utoipa::path(
    post,
    path = "/api/v1/mentor/flags/{id}/resolve",
    tag = "mentor",
    params(("id" = String, Path, description = "The flag's id")),
    request_body(content = inline(Object), description = "An optional `note`; the body may be empty"),
    responses(
        (status = 200, description = "The flag, resolved", body = Resolved),
        crate::http::error::refusals::BadInput,
        crate::http::error::refusals::Unauthenticated,
        (status = 404, description = "No such flag, or one the caller may not review", body = ErrorBody)
    )
)]
pub async fn resolve(
    State(state): State<AppState>,
    Path(flag_id): Path<String>,
    claims: Claims,
    NamedJson(resolution): NamedJson<Resolution>,
) -> Result<Json<Resolved>, ApiError> {
    let not_found = || ApiError::NotFound("flag".into());
    let flag = state.review.flag(&flag_id).await?.ok_or_else(not_found)?;
    let profile = state.chat.learners.learner(&flag.learner_id).await?;
    if !can_review_learner(&claims, profile.as_ref()) {
        return Err(not_found());
    }
    let note = resolution.note.as_deref().map(str::trim);
    let note = note.filter(|n| !n.is_empty());
    if let Some(chars) = note.map(|n| n.chars().count())
        && chars > MAX_RESOLUTION_CHARS
    {
        return Err(ApiError::BadRequest(format!(
            "note has {chars} characters; the limit is {MAX_RESOLUTION_CHARS}"
        )));
    }
    let resolved_now = state
        .review
        .resolve_flag(&flag_id, &claims.sub, note)
        .await?;
    let flag = state.review.flag(&flag_id).await?.ok_or_else(not_found)?;
    Ok(Json(Resolved {
        flag,
        already_resolved: !resolved_now,
    }))
}
