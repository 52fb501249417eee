//! Replays of real past turns with a candidate system prompt: `POST .../replays` chooses the
//! turns (a filter, at most `prompt::replay::MAX_REPLAY_TURNS`) and starts answering them again
//! in the background (`chat::rerun`), `GET .../replays` lists them, `GET .../replays/{id}`
//! reads one with its progress and a page of turns (the original answer beside the
//! candidate's), `POST .../replays/{id}/cancel` stops it. The candidate's answers are stored
//! beside the originals, never as messages: no learner sees them.
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::{check_access, check_version};
use crate::auth::Claims;
use crate::chat::rerun::{self, Rerun};
use crate::http::extract::{Json, NamedBody, NamedJson, Query};
use crate::http::{ApiError, AppState};
use crate::llm::Llm;
use crate::prompt::replay::{
    MAX_REPLAY_PAGE, Replay, ReplayError, ReplayFilter, ReplayStatus, ReplayTurn,
};
use crate::prompt::versions::strip_front_matter;
use crate::prompt::{Template, TemplateName};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartReplay {
    /// The candidate system prompt: a stored version's id or the shipped default's.
    pub candidate: String,
    /// Which past answers: `thumbs_down`, `flagged`, `from_ms`, `to_ms`, `prompt_version`,
    /// `limit` (1 to 200, default 50).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub filter: ReplayFilter,
}

impl NamedBody for StartReplay {
    const NAME: &'static str = "replay";
}

/// A replay, its progress, and a page of its turns.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReplayView {
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub replay: Replay,
    /// Side by side: `question`, `original`, `candidate`, per turn (a page of them).
    #[schema(value_type = Vec<Object>)]
    pub turns: Vec<ReplayTurn>,
    /// The `after` of the next page; `null` at the end.
    pub next: Option<i64>,
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TurnsPage {
    /// Turns after this one (a `next` from an earlier page).
    pub after: Option<i64>,
    /// At most this many turns (1 to 100, default 20).
    pub limit: Option<usize>,
}

async fn load(state: &AppState, course: &str, id: &str) -> Result<Replay, ApiError> {
    match state.review.replay(id).await? {
        Some(replay) if replay.course == course => Ok(replay),
        _ => Err(ReplayError::NotFound(id.chars().take(80).collect()).into()),
    }
}

async fn view(state: &AppState, replay: Replay, page: &TurnsPage) -> Result<ReplayView, ApiError> {
    let limit = page.limit.unwrap_or(20).clamp(1, MAX_REPLAY_PAGE);
    let turns = state
        .review
        .replay_turns(&replay.id, page.after, limit + 1)
        .await?;
    let (turns, next) = if turns.len() > limit {
        let turns: Vec<ReplayTurn> = turns.into_iter().take(limit).collect();
        let next = turns.last().map(|t| t.n);
        (turns, next)
    } else {
        (turns, None)
    };
    Ok(ReplayView {
        replay,
        turns,
        next,
    })
}

/// The candidate's compiled template: the shipped default, or a stored version.
async fn candidate(state: &AppState, version: &str) -> Result<Arc<Template>, ApiError> {
    let template = TemplateName::System;
    let text = if version == template.default_version_id() {
        strip_front_matter(template.shipped()).to_string()
    } else {
        match state.review.prompt_version(version).await? {
            Some(v) => v.text,
            None => {
                return Err(crate::prompt::versions::VersionError::NotFound(
                    version.chars().take(80).collect(),
                )
                .into());
            }
        }
    };
    let compiled = Template::compile(template, version, &text)
        .map_err(|e| crate::prompt::versions::VersionError::Render(e.to_string()))?;
    Ok(Arc::new(compiled))
}

#[utoipa::path(
    post,
    path = "/api/v1/courses/{course}/replays",
    tag = "courses",
    params(("course" = String, Path, description = "The course's id")),
    request_body = StartReplay,
    responses(
        (status = 202, description = "The replay, started in the background", body = ReplayView),
        crate::http::error::refusals::BadInput,
        crate::http::error::refusals::Unauthenticated,
        crate::http::error::refusals::WrongRole,
        crate::http::error::refusals::NoSuchPrompt,
        (status = 422, description = "A filter over the bounds (more than 200 turns, an empty date range) or one no stored answer matches", body = crate::http::error::ErrorBody),
    )
)]
pub async fn start(
    State(state): State<AppState>,
    Path(course): Path<String>,
    claims: Claims,
    NamedJson(body): NamedJson<StartReplay>,
) -> Result<(StatusCode, Json<ReplayView>), ApiError> {
    check_access(&claims, &course)?;
    let limit = body.filter.checked_limit()?;
    check_version(&state, &course, TemplateName::System, &body.candidate).await?;
    let template = candidate(&state, &body.candidate).await?;
    let turns = state
        .review
        .replay_candidates(&course, &body.filter, limit)
        .await?;
    if turns.is_empty() {
        return Err(ReplayError::NothingMatches.into());
    }
    let (llm, offline): (Arc<dyn Llm>, bool) = match &state.chat.llm {
        Some(llm) => (llm.clone(), false),
        None => (Arc::new(crate::eval::prompts::InstructedModel), true),
    };
    let replay = Replay {
        id: uuid::Uuid::now_v7().to_string(),
        course,
        candidate: body.candidate,
        filter: body.filter,
        status: ReplayStatus::Running,
        total_turns: turns.len() as i64,
        done_turns: 0,
        model: llm.model().to_string(),
        offline,
        created_by: claims.sub,
        created_at: crate::transcript::now_ms(),
        finished_at: None,
        error: None,
    };
    // The coaching note of the course's label: no experiment splits coaching notes, so no
    // learner is needed to choose it.
    let coaching = state
        .chat
        .live_templates()
        .live(Some(&replay.course), "")
        .await
        .coaching();
    state.review.create_replay(&replay, &turns).await?;
    rerun::spawn(
        Rerun {
            store: state.review.clone(),
            llm,
            candidate: template,
            coaching,
            budget: state.chat.budget,
            temperature: state.chat.temperature,
            policies: state.chat.policies.clone(),
        },
        state.studio.running.clone(),
        replay.id.clone(),
        replay.total_turns,
    );
    let page = TurnsPage::default();
    Ok((
        StatusCode::ACCEPTED,
        Json(view(&state, replay, &page).await?),
    ))
}

#[utoipa::path(
    get,
    path = "/api/v1/courses/{course}/replays",
    tag = "courses",
    params(("course" = String, Path, description = "The course's id")),
    responses(
        (status = 200, description = "The course's newest replays, without their turns", body = Vec<Object>),
        crate::http::error::refusals::Staff,
    )
)]
pub async fn list(
    State(state): State<AppState>,
    Path(course): Path<String>,
    claims: Claims,
) -> Result<Json<Vec<Replay>>, ApiError> {
    check_access(&claims, &course)?;
    Ok(Json(state.review.replays(&course).await?))
}

#[utoipa::path(
    get,
    path = "/api/v1/courses/{course}/replays/{id}",
    tag = "courses",
    params(
        ("course" = String, Path, description = "The course's id"),
        ("id" = String, Path, description = "The replay's id"),
        TurnsPage,
    ),
    responses(
        (status = 200, description = "The replay, its progress and a page of its turns, side by side", body = ReplayView),
        crate::http::error::refusals::Staff,
        (status = 404, description = "No such replay of this course", body = crate::http::error::ErrorBody),
    )
)]
pub async fn read(
    State(state): State<AppState>,
    Path((course, id)): Path<(String, String)>,
    claims: Claims,
    Query(page): Query<TurnsPage>,
) -> Result<Json<ReplayView>, ApiError> {
    check_access(&claims, &course)?;
    let replay = load(&state, &course, &id).await?;
    Ok(Json(view(&state, replay, &page).await?))
}

#[utoipa::path(
    post,
    path = "/api/v1/courses/{course}/replays/{id}/cancel",
    tag = "courses",
    params(
        ("course" = String, Path, description = "The course's id"),
        ("id" = String, Path, description = "The replay's id"),
    ),
    responses(
        (status = 200, description = "The replay, cancelled: the turns not yet answered stay unanswered", body = ReplayView),
        crate::http::error::refusals::Staff,
        (status = 404, description = "No such replay of this course", body = crate::http::error::ErrorBody),
        (status = 409, description = "The replay has already ended", body = crate::http::error::ErrorBody),
    )
)]
pub async fn cancel(
    State(state): State<AppState>,
    Path((course, id)): Path<(String, String)>,
    claims: Claims,
) -> Result<Json<ReplayView>, ApiError> {
    check_access(&claims, &course)?;
    load(&state, &course, &id).await?;
    if !state
        .review
        .end_replay(&id, ReplayStatus::Cancelled, None)
        .await?
    {
        return Err(ReplayError::NotRunning(id).into());
    }
    state.studio.running.cancel(&id);
    let replay = load(&state, &course, &id).await?;
    let page = TurnsPage::default();
    Ok(Json(view(&state, replay, &page).await?))
}
