//! A/B experiments per course: `POST .../experiments` starts one (a split between versions of
//! one template adding up to 100, at most one running per template), `GET` lists them with each
//! arm's figures, `.../{id}/stop` stops one, `.../{id}/promote` stops it and points
//! `production` at the chosen arm.
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::{check_access, check_version, reload_live, template};
use crate::auth::Claims;
use crate::http::extract::{Json, NamedBody, NamedJson};
use crate::http::{ApiError, AppState};
use crate::prompt::TemplateName;
use crate::prompt::experiment::{Arm, ArmStats, Experiment, check_split, check_template};
use crate::prompt::versions::VersionError;

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ArmBody {
    /// A stored version's id or the shipped default's.
    pub version: String,
    /// Whole percent of the course's learners.
    pub percent: u32,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartExperiment {
    /// `system` or `offline` (a `coaching` or `digest` version is chosen by label: 422).
    pub template: String,
    pub arms: Vec<ArmBody>,
}

impl NamedBody for StartExperiment {
    const NAME: &'static str = "experiment";
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Promote {
    /// The arm's version that becomes `production`.
    pub version: String,
}

impl NamedBody for Promote {
    const NAME: &'static str = "promotion";
}

/// An experiment and, per arm, what its answers show.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ExperimentView {
    pub id: String,
    pub course: String,
    #[schema(value_type = String)]
    pub template: TemplateName,
    pub arms: Vec<ArmBody>,
    pub running: bool,
    pub created_by: String,
    pub started_at: i64,
    pub stopped_at: Option<i64>,
    /// Per arm: answers, thumbs up and down, comments, flags, cancellations, mean length,
    /// citation rate, first-token latency, the thumbs-up rate with its Wilson 95% interval.
    #[schema(value_type = Vec<Object>)]
    pub stats: Vec<ArmStats>,
}

async fn view(state: &AppState, experiment: Experiment) -> Result<ExperimentView, ApiError> {
    let counts = state.review.experiment_counts(&experiment.id).await?;
    let stats = experiment
        .arms
        .iter()
        .map(|arm| {
            let mut stats = counts
                .iter()
                .find(|c| c.version == arm.version)
                .map(|c| c.stats())
                .unwrap_or_default();
            stats.version = arm.version.clone();
            stats
        })
        .collect();
    Ok(ExperimentView {
        id: experiment.id,
        course: experiment.course,
        template: experiment.template,
        arms: experiment
            .arms
            .into_iter()
            .map(|a| ArmBody {
                version: a.version,
                percent: a.percent,
            })
            .collect(),
        running: experiment.running,
        created_by: experiment.created_by,
        started_at: experiment.started_at,
        stopped_at: experiment.stopped_at,
        stats,
    })
}

#[utoipa::path(
    get,
    path = "/api/v1/courses/{course}/experiments",
    tag = "courses",
    params(("course" = String, Path, description = "The course's id")),
    responses(
        (status = 200, description = "The course's experiments, newest first, with each arm's figures", body = Vec<ExperimentView>),
        crate::http::error::refusals::Staff,
    )
)]
pub async fn list(
    State(state): State<AppState>,
    Path(course): Path<String>,
    claims: Claims,
) -> Result<Json<Vec<ExperimentView>>, ApiError> {
    check_access(&claims, &course)?;
    let mut views = Vec::new();
    for experiment in state.review.experiments(&course).await? {
        views.push(view(&state, experiment).await?);
    }
    Ok(Json(views))
}

#[utoipa::path(
    post,
    path = "/api/v1/courses/{course}/experiments",
    tag = "courses",
    params(("course" = String, Path, description = "The course's id")),
    request_body = StartExperiment,
    responses(
        (status = 201, description = "The experiment, running", body = ExperimentView),
        crate::http::error::refusals::PromptWrite,
    )
)]
pub async fn start(
    State(state): State<AppState>,
    Path(course): Path<String>,
    claims: Claims,
    NamedJson(body): NamedJson<StartExperiment>,
) -> Result<(StatusCode, Json<ExperimentView>), ApiError> {
    check_access(&claims, &course)?;
    let template = template(&body.template)?;
    check_template(template)?;
    let arms: Vec<Arm> = body
        .arms
        .into_iter()
        .map(|a| Arm {
            version: a.version,
            percent: a.percent,
        })
        .collect();
    check_split(&arms)?;
    for arm in &arms {
        check_version(&state, &course, template, &arm.version).await?;
    }
    let experiment = state
        .review
        .start_experiment(&course, template, &arms, &claims.sub)
        .await?
        .map_err(|running| {
            VersionError::Conflict(format!(
                "experiment {running} is already running on the {} template of this course; stop it first",
                template.as_str()
            ))
        })?;
    reload_live(&state).await;
    Ok((StatusCode::CREATED, Json(view(&state, experiment).await?)))
}

#[utoipa::path(
    post,
    path = "/api/v1/courses/{course}/experiments/{id}/stop",
    tag = "courses",
    params(
        ("course" = String, Path, description = "The course's id"),
        ("id" = String, Path, description = "The experiment's id"),
    ),
    responses(
        (status = 200, description = "The experiment, stopped: the labels serve again", body = ExperimentView),
        crate::http::error::refusals::Unauthenticated,
        crate::http::error::refusals::WrongRole,
        crate::http::error::refusals::NoSuchPrompt,
        crate::http::error::refusals::Conflict,
    )
)]
pub async fn stop(
    State(state): State<AppState>,
    Path((course, id)): Path<(String, String)>,
    claims: Claims,
) -> Result<Json<ExperimentView>, ApiError> {
    finish(state, course, id, claims, None).await
}

#[utoipa::path(
    post,
    path = "/api/v1/courses/{course}/experiments/{id}/promote",
    tag = "courses",
    params(
        ("course" = String, Path, description = "The course's id"),
        ("id" = String, Path, description = "The experiment's id"),
    ),
    request_body = Promote,
    responses(
        (status = 200, description = "The experiment, stopped, its arm's version now `production`", body = ExperimentView),
        crate::http::error::refusals::PromptWrite,
    )
)]
pub async fn promote(
    State(state): State<AppState>,
    Path((course, id)): Path<(String, String)>,
    claims: Claims,
    NamedJson(body): NamedJson<Promote>,
) -> Result<Json<ExperimentView>, ApiError> {
    finish(state, course, id, claims, Some(body.version)).await
}

/// Stops the experiment, promoting `version` (one of its arms) when given.
async fn finish(
    state: AppState,
    course: String,
    id: String,
    claims: Claims,
    version: Option<String>,
) -> Result<Json<ExperimentView>, ApiError> {
    check_access(&claims, &course)?;
    let experiment = state
        .review
        .experiment(&course, &id)
        .await?
        .ok_or_else(|| VersionError::NotFound(id.chars().take(80).collect()))?;
    if let Some(version) = &version
        && !experiment.arms.iter().any(|a| &a.version == version)
    {
        return Err(VersionError::Invalid(format!(
            "{version:?} is not an arm of experiment {}",
            experiment.id
        ))
        .into());
    }
    if !state
        .review
        .stop_experiment(&experiment, version.as_deref(), &claims.sub)
        .await?
    {
        return Err(
            VersionError::Conflict(format!("experiment {} is not running", experiment.id)).into(),
        );
    }
    reload_live(&state).await;
    let experiment = state
        .review
        .experiment(&course, &id)
        .await?
        .ok_or_else(|| VersionError::NotFound(id.chars().take(80).collect()))?;
    Ok(Json(view(&state, experiment).await?))
}
