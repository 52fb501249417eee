//! A course's answer policies, for its team and admins: `GET /api/v1/courses/{course}/policy`,
//! the policies in force (the course's and its projects', each with where it comes from: the
//! file, or an override with who wrote it, when and its version; reference solutions by name
//! and size only, their content never leaves the guard); `PUT` and `DELETE` of the course's
//! own policy and of a project's (`.../projects/{project}/policy`): an override kept in the
//! database, checked by the rules of a policy file, that stands instead of the file on every
//! node until it is deleted; and `GET .../policy/history`, every change with who made it and
//! when. The rules are `guard::policy`; the SQL is `store::policies`; after a change this node
//! reads the overrides again at once, the others see the generation move before their next
//! turn.
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};

use super::access::can_manage_course_policy;
use super::extract::{Json, NamedBody, NamedJson};
use super::{ApiError, AppState};
use crate::auth::Claims;
use crate::guard::policy::{Policy, PolicyChange};
use crate::store::PolicyWrite;

/// The largest policy text accepted (a policy names files, it does not hold them).
const MAX_POLICY_BYTES: usize = 64 * 1024;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CoursePolicyView {
    pub course: String,
    /// The course's own policy; `null` when it has none (the defaults hold).
    #[schema(value_type = Option<Object>)]
    pub policy: Option<Policy>,
    /// Each project's policy by project name.
    #[schema(value_type = Object)]
    pub projects: std::collections::BTreeMap<String, Policy>,
}

/// A policy's new text, in the format of `policy.toml`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyText {
    /// TOML: `answer`, `max_code_lines`, `forbidden`, `reference_solutions`, `protected`
    /// (files already in the project's `<project>.solution/` folder) and `[[window]]`s.
    pub text: String,
}

impl NamedBody for PolicyText {
    const NAME: &'static str = "policy";
}

/// One policy after a change: what is now in force for the course or project.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PolicyInForce {
    pub course: String,
    /// `null` for the course's own policy.
    pub project: Option<String>,
    /// `false` when a delete found no override (the file already held).
    pub changed: bool,
    /// The policy in force, with its `source`; `null` when neither file nor override holds one.
    #[schema(value_type = Option<Object>)]
    pub policy: Option<Policy>,
}

/// Every change of a course's policies through the API, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PolicyHistory {
    pub course: String,
    /// `{project, version, text, by, at}`: `project` `null` for the course's own policy, `text`
    /// `null` where the override was deleted.
    #[schema(value_type = Vec<Object>)]
    pub changes: Vec<PolicyChange>,
}

fn check_access(claims: &Claims, course: &str) -> Result<(), ApiError> {
    if can_manage_course_policy(claims, course) {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "only the team of course {course:?} or an admin may read or change its policy"
        )))
    }
}

/// What `course` (or its `project`) is held to on this node now.
fn in_force(state: &AppState, course: &str, project: Option<&str>) -> Option<Policy> {
    let policies = state.chat.policies.course(course);
    match project {
        None => policies.course.as_deref().cloned(),
        Some(project) => policies.projects.get(project).map(|p| p.as_ref().clone()),
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/courses/{course}/policy",
    tag = "courses",
    params(("course" = String, Path, description = "The course's id")),
    responses(
        (status = 200, description = "The course's policy and its projects', with where each comes from", body = CoursePolicyView),
        crate::http::error::refusals::Staff,
    )
)]
pub async fn policy(
    State(state): State<AppState>,
    Path(course): Path<String>,
    claims: Claims,
) -> Result<Json<CoursePolicyView>, ApiError> {
    check_access(&claims, &course)?;
    state.chat.refresh_policies().await;
    let policies = state.chat.policies.course(&course);
    Ok(Json(CoursePolicyView {
        course,
        policy: policies.course.as_deref().cloned(),
        projects: policies
            .projects
            .iter()
            .map(|(name, policy)| (name.clone(), policy.as_ref().clone()))
            .collect(),
    }))
}

/// Checks and stores `text` as the policy of `course` (its `project`), or deletes the override
/// with `None`; then puts the change in force on this node.
async fn write(
    state: &AppState,
    claims: &Claims,
    course: String,
    project: Option<String>,
    text: Option<String>,
) -> Result<Json<PolicyInForce>, ApiError> {
    check_access(claims, &course)?;
    if let Some(text) = &text
        && text.len() > MAX_POLICY_BYTES
    {
        return Err(ApiError::TooLarge(format!(
            "a policy of {} bytes, more than {MAX_POLICY_BYTES}",
            text.len()
        )));
    }
    // A delete is checked as an empty policy: the course and project must be names it may have.
    let (policies, c, p, t) = (
        state.chat.policies.clone(),
        course.clone(),
        project.clone(),
        text.clone().unwrap_or_default(),
    );
    // Reference files are read and fingerprinted: off the async workers.
    tokio::task::spawn_blocking(move || policies.check(&c, p.as_deref(), &t)).await??;
    let written = state
        .review
        .write_policy_override(&course, project.as_deref(), text.as_deref(), &claims.sub)
        .await?;
    let changed = match written {
        PolicyWrite::Stored(_) => true,
        PolicyWrite::NoOverride => false,
        PolicyWrite::Conflict => {
            return Err(ApiError::Conflict(
                "another change of this policy was stored at the same time; read it and try again"
                    .into(),
            ));
        }
    };
    if changed
        && let Some(live) = &state.chat.policy_overrides
        && let Err(error) = live.reload().await
    {
        // Stored: the next turn's check of the generation reads it anyway.
        tracing::warn!(
            ?error,
            "cannot read the policy overrides again after a change"
        );
    }
    Ok(Json(PolicyInForce {
        policy: in_force(state, &course, project.as_deref()),
        course,
        project,
        changed,
    }))
}

#[utoipa::path(
    put,
    path = "/api/v1/courses/{course}/policy",
    tag = "courses",
    params(("course" = String, Path, description = "The course's id")),
    request_body = PolicyText,
    responses(
        (status = 200, description = "The override, stored and in force instead of the file", body = PolicyInForce),
        crate::http::error::refusals::PolicyWrite,
    )
)]
pub async fn put_course(
    State(state): State<AppState>,
    Path(course): Path<String>,
    claims: Claims,
    NamedJson(body): NamedJson<PolicyText>,
) -> Result<Json<PolicyInForce>, ApiError> {
    write(&state, &claims, course, None, Some(body.text)).await
}

#[utoipa::path(
    delete,
    path = "/api/v1/courses/{course}/policy",
    tag = "courses",
    params(("course" = String, Path, description = "The course's id")),
    responses(
        (status = 200, description = "The override deleted: the file holds again", body = PolicyInForce),
        crate::http::error::refusals::Unauthenticated,
        crate::http::error::refusals::WrongRole,
        crate::http::error::refusals::NoSuchCourse,
        crate::http::error::refusals::PolicyConflict,
    )
)]
pub async fn delete_course(
    State(state): State<AppState>,
    Path(course): Path<String>,
    claims: Claims,
) -> Result<Json<PolicyInForce>, ApiError> {
    write(&state, &claims, course, None, None).await
}

#[utoipa::path(
    put,
    path = "/api/v1/courses/{course}/projects/{project}/policy",
    tag = "courses",
    params(
        ("course" = String, Path, description = "The course's id"),
        ("project" = String, Path, description = "The project's name (letters, digits, `-`, `_`)"),
    ),
    request_body = PolicyText,
    responses(
        (status = 200, description = "The override, stored and in force instead of the project's file", body = PolicyInForce),
        crate::http::error::refusals::PolicyWrite,
    )
)]
pub async fn put_project(
    State(state): State<AppState>,
    Path((course, project)): Path<(String, String)>,
    claims: Claims,
    NamedJson(body): NamedJson<PolicyText>,
) -> Result<Json<PolicyInForce>, ApiError> {
    write(&state, &claims, course, Some(project), Some(body.text)).await
}

#[utoipa::path(
    delete,
    path = "/api/v1/courses/{course}/projects/{project}/policy",
    tag = "courses",
    params(
        ("course" = String, Path, description = "The course's id"),
        ("project" = String, Path, description = "The project's name"),
    ),
    responses(
        (status = 200, description = "The override deleted: the project's file holds again", body = PolicyInForce),
        crate::http::error::refusals::Unauthenticated,
        crate::http::error::refusals::WrongRole,
        crate::http::error::refusals::NoSuchCourse,
        crate::http::error::refusals::PolicyConflict,
        crate::http::error::refusals::InvalidPolicy,
    )
)]
pub async fn delete_project(
    State(state): State<AppState>,
    Path((course, project)): Path<(String, String)>,
    claims: Claims,
) -> Result<Json<PolicyInForce>, ApiError> {
    write(&state, &claims, course, Some(project), None).await
}

#[utoipa::path(
    get,
    path = "/api/v1/courses/{course}/policy/history",
    tag = "courses",
    params(("course" = String, Path, description = "The course's id")),
    responses(
        (status = 200, description = "Every change of the course's policies through the API, newest first (at most 200)", body = PolicyHistory),
        crate::http::error::refusals::Staff,
    )
)]
pub async fn history(
    State(state): State<AppState>,
    Path(course): Path<String>,
    claims: Claims,
) -> Result<Json<PolicyHistory>, ApiError> {
    check_access(&claims, &course)?;
    let changes = state.review.policy_changes(&course).await?;
    Ok(Json(PolicyHistory { course, changes }))
}
