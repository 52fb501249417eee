//! The prompt studio's API for course teams (their own course) and admins (every course, and
//! `*`, the versions every course uses unless it labels its own): prompt versions
//! ([`versions`]), labels, promotion and rollback ([`labels`]), A/B experiments
//! ([`experiments`]). The rules are `prompt::versions` and `prompt::experiment`; the SQL is
//! `store::prompts`. After a change, this node reads the live versions again at once; the
//! others see the generation move before their next turn. Also the prompt inspector
//! ([`inspect`]), replays of past turns with a candidate ([`replays`]) and what the `/studio`
//! page needs while editing ([`workbench`]: validate, preview for a learner, run the evals).
pub mod experiments;
pub mod inspect;
pub mod labels;
pub mod replays;
pub mod versions;
pub mod workbench;

use std::path::PathBuf;
use std::sync::Arc;

use axum::http::Method;

use super::access::can_manage_course_prompts;
use super::{ApiError, ApiRoute, AppState};
use crate::auth::Claims;
use crate::prompt::TemplateName;
use crate::prompt::versions::{VersionError, check_course};

pub fn routes() -> Vec<ApiRoute> {
    vec![
        ApiRoute::new(
            Method::GET,
            "/api/v1/courses/{course}/prompts",
            versions::overview,
        ),
        ApiRoute::new(
            Method::POST,
            "/api/v1/courses/{course}/prompts/{template}/versions",
            versions::save,
        ),
        ApiRoute::new(
            Method::GET,
            "/api/v1/courses/{course}/prompts/{template}/versions/{version}",
            versions::version,
        ),
        ApiRoute::new(
            Method::PUT,
            "/api/v1/courses/{course}/prompts/{template}/labels/{label}",
            labels::move_label,
        ),
        ApiRoute::new(
            Method::POST,
            "/api/v1/courses/{course}/prompts/{template}/labels/{label}/rollback",
            labels::roll_back,
        ),
        ApiRoute::new(
            Method::GET,
            "/api/v1/courses/{course}/experiments",
            experiments::list,
        ),
        ApiRoute::new(
            Method::POST,
            "/api/v1/courses/{course}/experiments",
            experiments::start,
        ),
        ApiRoute::new(
            Method::POST,
            "/api/v1/courses/{course}/experiments/{id}/stop",
            experiments::stop,
        ),
        ApiRoute::new(
            Method::POST,
            "/api/v1/courses/{course}/experiments/{id}/promote",
            experiments::promote,
        ),
        ApiRoute::new(Method::GET, "/api/v1/messages/{id}/prompt", inspect::prompt),
        ApiRoute::new(
            Method::POST,
            "/api/v1/courses/{course}/prompts/{template}/validate",
            workbench::validate_text,
        ),
        ApiRoute::new(
            Method::POST,
            "/api/v1/courses/{course}/prompts/{template}/preview",
            workbench::preview,
        ),
        ApiRoute::new(
            Method::POST,
            "/api/v1/courses/{course}/prompts/{template}/eval",
            workbench::eval,
        ),
        ApiRoute::new(
            Method::GET,
            "/api/v1/courses/{course}/replays",
            replays::list,
        ),
        ApiRoute::new(
            Method::POST,
            "/api/v1/courses/{course}/replays",
            replays::start,
        ),
        ApiRoute::new(
            Method::GET,
            "/api/v1/courses/{course}/replays/{id}",
            replays::read,
        ),
        ApiRoute::new(
            Method::POST,
            "/api/v1/courses/{course}/replays/{id}/cancel",
            replays::cancel,
        ),
    ]
}

/// What the studio keeps per node: the replays running here, and where the content and the
/// eval cases are read from.
pub struct StudioState {
    pub running: Arc<crate::chat::rerun::Running>,
    pub content_dir: PathBuf,
    /// `prompts/evals` of the working directory, as `companion eval prompts` reads it.
    pub evals_dir: PathBuf,
}

impl StudioState {
    pub fn new(content_dir: PathBuf) -> Self {
        Self {
            running: Arc::default(),
            content_dir,
            evals_dir: PathBuf::from("prompts/evals"),
        }
    }
}

/// The caller may manage `course`'s prompts (403 otherwise), and `course` is a course id.
fn check_access(claims: &Claims, course: &str) -> Result<(), ApiError> {
    if !can_manage_course_prompts(claims, course) {
        return Err(ApiError::Forbidden(format!(
            "only the team of course {course:?} or an admin may manage its prompts"
        )));
    }
    Ok(check_course(course)?)
}

fn template(name: &str) -> Result<TemplateName, ApiError> {
    Ok(name.parse::<TemplateName>()?)
}

/// `version` is a version `course` may use for `template`: the shipped default's id, or a
/// stored version of that template, the course's own or `*`'s. 404 otherwise.
async fn check_version(
    state: &AppState,
    course: &str,
    template: TemplateName,
    version: &str,
) -> Result<(), ApiError> {
    if version == template.default_version_id() {
        return Ok(());
    }
    match state.review.prompt_version(version).await? {
        Some(v) if v.template == template && (v.course == course || v.course == "*") => Ok(()),
        _ => Err(VersionError::NotFound(version.chars().take(80).collect()).into()),
    }
}

/// Reads the live versions again on this node, so its next turn uses the change at once. A
/// failure is only logged: the change is stored, and the next turn's check reads it anyway.
async fn reload_live(state: &AppState) {
    if let Some(live) = &state.chat.studio
        && let Err(error) = live.reload().await
    {
        tracing::warn!(
            ?error,
            "cannot read the prompt versions again after a change"
        );
    }
}
