//! The prompt studio's API for course teams (their own course) and admins (every course, and
//! `*`, the versions every course uses unless it labels its own): prompt versions
//! ([`versions`]), labels, promotion and rollback ([`labels`]), A/B experiments
//! ([`experiments`]). The rules are `prompt::versions` and `prompt::experiment`; the SQL is
//! `store::prompts`. After a change, this node reads the live versions again at once; the
//! others see the generation move before their next turn.
pub mod experiments;
pub mod labels;
pub mod versions;

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
    ]
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
