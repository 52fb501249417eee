//! `PUT .../prompts/{template}/labels/{label}` (promote: point a label at a version) and
//! `POST .../labels/{label}/rollback` (back to where it pointed before the last move, or to a
//! named version). `production` is the label turns use.
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};

use super::{check_access, check_version, reload_live, template};
use crate::auth::Claims;
use crate::http::extract::{Json, NamedBody, NamedJson};
use crate::http::{ApiError, AppState};
use crate::prompt::versions::{VersionError, check_label};

/// Where a label points now and where it pointed before; `null`: nowhere (for `production`,
/// the shipped default serves).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LabelMoved {
    pub label: String,
    pub from: Option<String>,
    pub to: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MoveLabel {
    /// A stored version's id or the shipped default's.
    pub version: String,
}

impl NamedBody for MoveLabel {
    const NAME: &'static str = "label move";
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollBack {
    /// Roll back to this version; absent: to where the label pointed before its last move.
    #[serde(default)]
    pub version: Option<String>,
}

impl NamedBody for RollBack {
    const NAME: &'static str = "rollback";

    fn when_empty() -> Option<Self> {
        Some(Self::default())
    }
}

#[utoipa::path(
    put,
    path = "/api/v1/courses/{course}/prompts/{template}/labels/{label}",
    tag = "courses",
    params(
        ("course" = String, Path, description = "The course's id, or `*` (admins)"),
        ("template" = String, Path, description = "`system`, `offline`, `coaching` or `digest`"),
        ("label" = String, Path, description = "`production`, `candidate` or any name"),
    ),
    request_body = MoveLabel,
    responses(
        (status = 200, description = "The label, moved", body = LabelMoved),
        crate::http::error::refusals::BadInput,
        crate::http::error::refusals::Unauthenticated,
        crate::http::error::refusals::WrongRole,
        crate::http::error::refusals::NoSuchPrompt,
        crate::http::error::refusals::InvalidPrompt,
    )
)]
pub async fn move_label(
    State(state): State<AppState>,
    Path((course, template_name, label)): Path<(String, String, String)>,
    claims: Claims,
    NamedJson(body): NamedJson<MoveLabel>,
) -> Result<Json<LabelMoved>, ApiError> {
    check_access(&claims, &course)?;
    let template = template(&template_name)?;
    check_label(&label)?;
    check_version(&state, &course, template, &body.version).await?;
    let moved = state
        .review
        .move_prompt_label(&course, template, &label, &body.version, &claims.sub)
        .await?;
    reload_live(&state).await;
    Ok(Json(LabelMoved {
        label,
        from: moved.from,
        to: moved.to,
    }))
}

#[utoipa::path(
    post,
    path = "/api/v1/courses/{course}/prompts/{template}/labels/{label}/rollback",
    tag = "courses",
    params(
        ("course" = String, Path, description = "The course's id, or `*` (admins)"),
        ("template" = String, Path, description = "`system`, `offline`, `coaching` or `digest`"),
        ("label" = String, Path, description = "The label to roll back"),
    ),
    request_body(content = RollBack, description = "An optional `version`; the body may be empty"),
    responses(
        (status = 200, description = "The label, back", body = LabelMoved),
        crate::http::error::refusals::BadInput,
        crate::http::error::refusals::Unauthenticated,
        crate::http::error::refusals::WrongRole,
        crate::http::error::refusals::NoSuchPrompt,
        (status = 409, description = "The label was never moved: nothing to roll back", body = crate::http::ErrorBody),
    )
)]
pub async fn roll_back(
    State(state): State<AppState>,
    Path((course, template_name, label)): Path<(String, String, String)>,
    claims: Claims,
    NamedJson(body): NamedJson<RollBack>,
) -> Result<Json<LabelMoved>, ApiError> {
    check_access(&claims, &course)?;
    let template = template(&template_name)?;
    check_label(&label)?;
    let moved = match body.version {
        Some(version) => {
            check_version(&state, &course, template, &version).await?;
            state
                .review
                .move_prompt_label(&course, template, &label, &version, &claims.sub)
                .await?
        }
        None => state
            .review
            .roll_back_prompt_label(&course, template, &label, &claims.sub)
            .await?
            .ok_or_else(|| {
                VersionError::Conflict(format!(
                    "label {label:?} of {} has no move to roll back",
                    template.as_str()
                ))
            })?,
    };
    reload_live(&state).await;
    Ok(Json(LabelMoved {
        label,
        from: moved.from,
        to: moved.to,
    }))
}
