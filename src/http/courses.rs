//! `GET /api/v1/courses/{course}/policy`: a course's answer policy and its projects', as the
//! output guard enforces them, for the course's team and admins. Reference solutions appear by
//! name and size only: their content never leaves the guard.
use axum::extract::{Path, State};
use serde::Serialize;

use super::access::can_read_course_policy;
use super::extract::Json;
use super::{ApiError, AppState};
use crate::auth::Claims;
use crate::guard::policy::Policy;

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

#[utoipa::path(
    get,
    path = "/api/v1/courses/{course}/policy",
    tag = "courses",
    params(("course" = String, Path, description = "The course's id")),
    responses(
        (status = 200, description = "The course's policy and its projects'", body = CoursePolicyView),
        crate::http::error::refusals::Unauthenticated,
        crate::http::error::refusals::WrongRole,
    )
)]
pub async fn policy(
    State(state): State<AppState>,
    Path(course): Path<String>,
    claims: Claims,
) -> Result<Json<CoursePolicyView>, ApiError> {
    if !can_read_course_policy(&claims, &course) {
        return Err(ApiError::Forbidden(format!(
            "only the team of course {course:?} or an admin may read its policy"
        )));
    }
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
