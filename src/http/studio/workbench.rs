//! What the studio page needs while a version is being edited, before it is saved:
//! `POST .../prompts/{template}/validate` (the checks a save runs, the error with its line, as
//! data rather than a refusal), `POST .../prompts/{template}/preview` (the prompt a chosen learner
//! of the course would get), `POST .../prompts/{template}/eval` (the shipped eval cases,
//! `prompts/evals`, run in-process for the candidate beside the shipped prompt).
use std::sync::Arc;

use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};

use super::{check_access, check_version, template};
use crate::auth::Claims;
use crate::chat::Learner;
use crate::http::extract::{Json, NamedBody, NamedJson};
use crate::http::{ApiError, AppState};
use crate::prompt::versions::{VersionError, strip_front_matter, validate};
use crate::prompt::{Template, TemplateName};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ValidateBody {
    pub text: String,
}

impl NamedBody for ValidateBody {
    const NAME: &'static str = "template";
}

/// Whether a text would be saved, and if not why (with the line of a syntax error).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Validation {
    pub valid: bool,
    pub line: Option<usize>,
    pub message: Option<String>,
}

#[utoipa::path(
    post,
    path = "/api/v1/courses/{course}/prompts/{template}/validate",
    tag = "courses",
    params(
        ("course" = String, Path, description = "The course's id, or `*` (admins)"),
        ("template" = String, Path, description = "`system`, `offline`, `coaching` or `digest`"),
    ),
    request_body = ValidateBody,
    responses(
        (status = 200, description = "Whether the text passes the checks a save runs, and why not", body = Validation),
        crate::http::error::refusals::BadInput,
        crate::http::error::refusals::Unauthenticated,
        crate::http::error::refusals::WrongRole,
        crate::http::error::refusals::NoSuchPrompt,
    )
)]
pub async fn validate_text(
    State(state): State<AppState>,
    Path((course, template_name)): Path<(String, String)>,
    claims: Claims,
    NamedJson(body): NamedJson<ValidateBody>,
) -> Result<Json<Validation>, ApiError> {
    check_access(&claims, &course)?;
    let template = template(&template_name)?;
    Ok(Json(
        match validate(template, &body.text, "validate", &state.chat.budget) {
            Ok(()) => Validation {
                valid: true,
                line: None,
                message: None,
            },
            Err(error) => Validation {
                valid: false,
                line: match &error {
                    VersionError::Syntax { line, .. } => Some(*line),
                    _ => None,
                },
                message: Some(error.to_string()),
            },
        },
    ))
}

/// Previews and evals are of system prompts (the offline reply has no model to ask).
fn system_only(name: &str) -> Result<(), ApiError> {
    match template(name)? {
        TemplateName::System => Ok(()),
        other => Err(ApiError::Unprocessable(format!(
            "previews and evals are of the system prompt, not {}",
            other.as_str()
        ))),
    }
}

/// A candidate system prompt: unsaved `text`, or a `version` (stored or the default).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CandidateBody {
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub version: Option<String>,
    /// Preview only: the learner of the course whose context is used.
    #[serde(default)]
    pub learner: Option<String>,
    /// Preview only: the question (a sample one otherwise).
    #[serde(default)]
    pub question: Option<String>,
}

impl NamedBody for CandidateBody {
    const NAME: &'static str = "candidate";
}

/// The candidate's id and text, checked.
async fn candidate_text(
    state: &AppState,
    course: &str,
    body: &CandidateBody,
) -> Result<(String, String), ApiError> {
    let system = TemplateName::System;
    match (&body.text, &body.version) {
        (Some(text), None) => {
            validate(system, text, "candidate", &state.chat.budget)?;
            Ok(("unsaved".to_string(), text.clone()))
        }
        (None, Some(version)) => {
            check_version(state, course, system, version).await?;
            if *version == system.default_version_id() {
                return Ok((
                    version.clone(),
                    strip_front_matter(system.shipped()).to_string(),
                ));
            }
            let stored = state.review.prompt_version(version).await?;
            let stored = stored.ok_or_else(|| VersionError::NotFound(version.clone()))?;
            Ok((version.clone(), stored.text))
        }
        _ => Err(ApiError::BadRequest(
            "give the candidate's `text` or its `version`, one of the two".into(),
        )),
    }
}

#[utoipa::path(
    post,
    path = "/api/v1/courses/{course}/prompts/{template}/preview",
    tag = "courses",
    params(
        ("course" = String, Path, description = "The course's id"),
        ("template" = String, Path, description = "`system`: the preview and the evals are of system prompts"),
    ),
    request_body = CandidateBody,
    responses(
        (status = 200, description = "The prompt the learner would get with this candidate: messages, tokens per part, what the budget left out", body = crate::http::studio::inspect::PromptView),
        crate::http::error::refusals::BadInput,
        crate::http::error::refusals::Unauthenticated,
        crate::http::error::refusals::WrongRole,
        (status = 404, description = "No such learner of this course, or no such version", body = crate::http::error::ErrorBody),
        crate::http::error::refusals::InvalidPrompt,
    )
)]
pub async fn preview(
    State(state): State<AppState>,
    Path((course, template_name)): Path<(String, String)>,
    claims: Claims,
    NamedJson(body): NamedJson<CandidateBody>,
) -> Result<Json<super::inspect::PromptView>, ApiError> {
    check_access(&claims, &course)?;
    system_only(&template_name)?;
    let learner_id = body
        .learner
        .clone()
        .ok_or_else(|| ApiError::BadRequest("a preview needs a `learner`".into()))?;
    let (version, text) = candidate_text(&state, &course, &body).await?;
    // A learner of this course only: whom a course team may see in an inspected prompt.
    let profile = state.chat.learners.learner(&learner_id).await?;
    let profile = profile
        .filter(|p| p.course.as_deref() == Some(course.as_str()))
        .ok_or_else(|| ApiError::NotFound("learner of this course".into()))?;
    let compiled = Template::compile(TemplateName::System, &version, &text)
        .map_err(|e| VersionError::Render(e.to_string()))?;
    let prompts = state.chat.prompts.with(Arc::new(compiled));
    let question = body
        .question
        .clone()
        .filter(|q| !q.trim().is_empty())
        .unwrap_or_else(|| "How do I stop a while loop?".to_string());
    let learner = Learner {
        name: profile.name.clone().unwrap_or_else(|| learner_id.clone()),
        id: learner_id.clone(),
    };
    let record = crate::chat::rerun::preview(&state.chat, &prompts, learner, &course, &question)
        .await
        .map_err(|e| VersionError::Render(e.to_string()))?;
    Ok(Json(super::inspect::PromptView {
        message_id: String::new(),
        learner_id,
        course: Some(course),
        prompt_version: Some(version),
        model: None,
        created_at: crate::transcript::now_ms(),
        messages: record.messages,
        tokens: record.tokens,
        limit: record.limit,
        parts: record.parts,
        dropped: record.dropped,
    }))
}

#[utoipa::path(
    post,
    path = "/api/v1/courses/{course}/prompts/{template}/eval",
    tag = "courses",
    params(
        ("course" = String, Path, description = "The course's id, or `*` (admins)"),
        ("template" = String, Path, description = "`system`: the preview and the evals are of system prompts"),
    ),
    request_body = CandidateBody,
    responses(
        (status = 200, description = "Each shipped eval case with the shipped prompt and the candidate, side by side, and the candidate's regressions", body = Object),
        crate::http::error::refusals::BadInput,
        crate::http::error::refusals::Unauthenticated,
        crate::http::error::refusals::WrongRole,
        crate::http::error::refusals::NoSuchPrompt,
        crate::http::error::refusals::InvalidPrompt,
    )
)]
pub async fn eval(
    State(state): State<AppState>,
    Path((course, template_name)): Path<(String, String)>,
    claims: Claims,
    NamedJson(body): NamedJson<CandidateBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    check_access(&claims, &course)?;
    system_only(&template_name)?;
    let (version, text) = candidate_text(&state, &course, &body).await?;
    let cases = crate::eval::prompts::read_cases(&state.studio.evals_dir)
        .map_err(|e| ApiError::Unavailable(format!("the eval cases cannot be read: {e:#}")))?;
    let candidate = crate::eval::prompts::Contender {
        name: "candidate".into(),
        version,
        text,
    };
    let report = crate::eval::prompts::run(
        &state.studio.content_dir,
        &cases,
        &crate::eval::prompts::Contender::shipped(),
        &candidate,
        state.chat.llm.clone(),
    )
    .await
    .map_err(|e| ApiError::Unprocessable(format!("the eval did not run: {e:#}")))?;
    let regressions: Vec<String> = report
        .regressions()
        .into_iter()
        .map(str::to_string)
        .collect();
    let offline = state.chat.llm.is_none();
    let mut value = serde_json::to_value(&report)
        .map_err(|e| ApiError::Unprocessable(format!("the eval report: {e}")))?;
    value["regressions"] = serde_json::json!(regressions);
    value["offline"] = serde_json::json!(offline);
    Ok(Json(value))
}
