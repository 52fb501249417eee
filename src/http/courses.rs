//! What a course's team reads of its answers: `GET /api/v1/courses/{course}/citations`, how
//! the answers of each prompt version cited the course (its policies: `http::policies`).
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};

use super::access::can_manage_course_policy;
use super::extract::{Json, Query};
use super::{ApiError, AppState};
use crate::auth::Claims;

/// The longest window `citations` counts over.
const MAX_CITATION_DAYS: u32 = 365;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct CitationsQuery {
    /// Answers written in the last `days` days (1 to 365; default 30).
    #[serde(default)]
    days: Option<u32>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VersionCitations {
    pub prompt_version: String,
    /// Complete model answers written from this version.
    pub answers: u64,
    /// Of those, the ones given passages to cite.
    pub with_passages: u64,
    /// Of those, the ones that cited none (the output guard marked them `uncited`).
    pub uncited: u64,
    /// `uncited / with_passages`; `null` before any answer had passages.
    pub uncited_rate: Option<f64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CourseCitations {
    pub course: String,
    pub days: u32,
    /// One row per prompt version that answered in the window.
    pub versions: Vec<VersionCitations>,
}

/// `GET /api/v1/courses/{course}/citations[?days=30]`: per prompt version, the course's model
/// answers and how many of those given passages cited none.
#[utoipa::path(
    get,
    path = "/api/v1/courses/{course}/citations",
    tag = "courses",
    params(("course" = String, Path, description = "The course's id"), CitationsQuery),
    responses(
        (status = 200, description = "Uncited answers per prompt version", body = CourseCitations),
        crate::http::error::refusals::StaffInput,
    )
)]
pub async fn citations(
    State(state): State<AppState>,
    Path(course): Path<String>,
    claims: Claims,
    Query(query): Query<CitationsQuery>,
) -> Result<Json<CourseCitations>, ApiError> {
    if !can_manage_course_policy(&claims, &course) {
        return Err(ApiError::Forbidden(format!(
            "only the team of course {course:?} or an admin may read its answers' citations"
        )));
    }
    let days = query.days.unwrap_or(30);
    if !(1..=MAX_CITATION_DAYS).contains(&days) {
        return Err(ApiError::BadRequest(format!(
            "days must be between 1 and {MAX_CITATION_DAYS}, not {days}"
        )));
    }
    let since = crate::transcript::now_ms() - i64::from(days) * 86_400_000;
    let versions = state
        .review
        .prompt_citations(&course, since)
        .await?
        .into_iter()
        .map(|c| VersionCitations {
            uncited_rate: c.uncited_rate(),
            prompt_version: c.prompt_version,
            answers: c.answers,
            with_passages: c.with_passages,
            uncited: c.uncited,
        })
        .collect();
    Ok(Json(CourseCitations {
        course,
        days,
        versions,
    }))
}
