//! `GET /api/v1/courses/{course}/prompts` (every template: its default, labels and versions),
//! `POST .../prompts/{template}/versions` (a new immutable version, checked before it is
//! stored) and `GET .../prompts/{template}/versions/{version}`.
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::{check_access, template};
use crate::auth::Claims;
use crate::http::error::ErrorBody;
use crate::http::extract::{Json, NamedBody, NamedJson};
use crate::http::{ApiError, AppState};
use crate::prompt::TemplateName;
use crate::prompt::versions::{
    Label, NewVersion, PromptVersion, VersionError, strip_front_matter, validate,
};
use crate::store::Saved;

/// One template of a course: what it falls back to, its labels and its versions.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TemplateView {
    #[schema(value_type = String)]
    pub template: TemplateName,
    /// The shipped default's id, `default:<template>@<sha>`.
    pub default_version: String,
    /// The variables a version may use, as the shipped default documents them.
    pub variables: Vec<String>,
    #[schema(value_type = Vec<Object>)]
    pub labels: Vec<Label>,
    /// The newest version (the parent of the next save); `null` before the first.
    pub head: Option<String>,
    /// Newest first, without their texts.
    pub versions: Vec<VersionSummary>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VersionSummary {
    pub id: String,
    pub author: String,
    pub message: String,
    pub parent: Option<String>,
    pub created_at: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PromptsView {
    pub course: String,
    pub templates: Vec<TemplateView>,
}

/// One version with its text.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VersionView {
    pub id: String,
    pub course: String,
    #[schema(value_type = String)]
    pub template: TemplateName,
    pub text: String,
    pub author: String,
    pub message: String,
    pub parent: Option<String>,
    pub created_at: i64,
}

impl From<PromptVersion> for VersionView {
    fn from(v: PromptVersion) -> Self {
        Self {
            id: v.id,
            course: v.course,
            template: v.template,
            text: v.text,
            author: v.author,
            message: v.message,
            parent: v.parent,
            created_at: v.created_at,
        }
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/courses/{course}/prompts",
    tag = "courses",
    params(("course" = String, Path, description = "The course's id, or `*` (admins)")),
    responses(
        (status = 200, description = "Every template the course may override", body = PromptsView),
        crate::http::error::refusals::Staff,
    )
)]
pub async fn overview(
    State(state): State<AppState>,
    Path(course): Path<String>,
    claims: Claims,
) -> Result<Json<PromptsView>, ApiError> {
    check_access(&claims, &course)?;
    let labels = state.review.prompt_labels(&course).await?;
    let mut templates = Vec::new();
    for template in TemplateName::ALL {
        let versions = state
            .review
            .prompt_versions(&course, Some(template))
            .await?;
        templates.push(TemplateView {
            template,
            default_version: template.default_version_id(),
            variables: template.documented_variables().into_iter().collect(),
            labels: labels
                .iter()
                .filter(|l| l.template == template)
                .cloned()
                .collect(),
            head: versions.first().map(|v| v.id.clone()),
            versions: versions
                .into_iter()
                .map(|v| VersionSummary {
                    id: v.id,
                    author: v.author,
                    message: v.message,
                    parent: v.parent,
                    created_at: v.created_at,
                })
                .collect(),
        });
    }
    Ok(Json(PromptsView { course, templates }))
}

/// A new version: its text, what changed, and the version it was edited from.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SaveVersion {
    pub text: String,
    pub message: String,
    /// The version the editor started from; when another was saved since, the save is
    /// refused (409). Absent: saved on the newest.
    #[serde(default)]
    pub parent: Option<String>,
}

impl NamedBody for SaveVersion {
    const NAME: &'static str = "prompt version";
}

#[utoipa::path(
    post,
    path = "/api/v1/courses/{course}/prompts/{template}/versions",
    tag = "courses",
    params(
        ("course" = String, Path, description = "The course's id, or `*` (admins)"),
        ("template" = String, Path, description = "`system`, `offline`, `coaching` or `digest`"),
    ),
    request_body = SaveVersion,
    responses(
        (status = 201, description = "The version, stored", body = VersionView),
        crate::http::error::refusals::PromptWrite,
    )
)]
pub async fn save(
    State(state): State<AppState>,
    Path((course, template_name)): Path<(String, String)>,
    claims: Claims,
    NamedJson(body): NamedJson<SaveVersion>,
) -> Result<(StatusCode, Json<VersionView>), ApiError> {
    check_access(&claims, &course)?;
    let template = template(&template_name)?;
    validate(template, &body.text, &body.message, &state.chat.budget)?;
    let new = NewVersion {
        course,
        template,
        text: body.text,
        author: claims.sub,
        message: body.message.trim().to_string(),
        parent: body.parent,
    };
    match state.review.save_prompt_version(&new).await? {
        Saved::Saved(version) => Ok((StatusCode::CREATED, Json(version.into()))),
        Saved::Stale { head } => Err(VersionError::StaleParent {
            parent: new.parent,
            head,
        }
        .into()),
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/courses/{course}/prompts/{template}/versions/{version}",
    tag = "courses",
    params(
        ("course" = String, Path, description = "The course's id, or `*` (admins)"),
        ("template" = String, Path, description = "`system`, `offline`, `coaching` or `digest`"),
        ("version" = String, Path, description = "A stored version's id or the default's"),
    ),
    responses(
        (status = 200, description = "The version with its text", body = VersionView),
        crate::http::error::refusals::Staff,
        (status = 404, description = "No such version of this course's template", body = ErrorBody),
    )
)]
pub async fn version(
    State(state): State<AppState>,
    Path((course, template_name, id)): Path<(String, String, String)>,
    claims: Claims,
) -> Result<Json<VersionView>, ApiError> {
    check_access(&claims, &course)?;
    let template = template(&template_name)?;
    if id == template.default_version_id() {
        return Ok(Json(VersionView {
            id,
            course: "*".into(),
            template,
            text: strip_front_matter(template.shipped()).to_string(),
            author: "companion".into(),
            message: "the shipped default".into(),
            parent: None,
            created_at: 0,
        }));
    }
    match state.review.prompt_version(&id).await? {
        Some(v) if v.template == template && (v.course == course || v.course == "*") => {
            Ok(Json(v.into()))
        }
        _ => Err(VersionError::NotFound(id.chars().take(80).collect()).into()),
    }
}
