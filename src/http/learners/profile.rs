//! `GET` and `PUT /api/v1/learners/{id}`: the profile, with the latest mentor session and the
//! project files.
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Serialize;

use super::{FileInfo, course_of};
use crate::auth::Claims;
use crate::http::access::readable_profile;
use crate::http::extract::{Json, ProfileWriter};
use crate::http::{ApiError, AppState};
use crate::learner::validate::{ProfileUpdate, check_learner_id};
use crate::learner::{LearnerProfile, MentorSession};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProfileView {
    #[schema(value_type = Object)]
    pub profile: LearnerProfile,
    #[schema(value_type = Option<Object>)]
    pub latest_session: Option<MentorSession>,
    pub files: Vec<FileInfo>,
}

/// `GET /api/v1/learners/{id}`: the profile, the latest mentor session and the project files
/// (without their content).
#[utoipa::path(
    get,
    path = "/api/v1/learners/{id}",
    tag = "learners",
    params(("id" = String, Path, description = "The learner's id")),
    responses(
        (status = 200, description = "The profile, the latest mentor session and the project files", body = ProfileView),
        crate::http::error::refusals::Unauthenticated,
        crate::http::error::refusals::NoSuchLearner
    )
)]
pub async fn profile(
    State(state): State<AppState>,
    Path(id): Path<String>,
    claims: Claims,
) -> Result<Json<ProfileView>, ApiError> {
    let profile = readable_profile(&state, &claims, &id).await?;
    let learners = &state.chat.learners;
    let latest_session = learners.mentor_sessions(&id).await?.into_iter().next();
    let files = learners.project_files(&id, None).await?;
    Ok(Json(ProfileView {
        profile,
        latest_session,
        files: files.iter().map(FileInfo::from).collect(),
    }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProfileWritten {
    #[schema(value_type = Object)]
    pub profile: LearnerProfile,
}

/// `PUT /api/v1/learners/{id}`: creates (201) or updates (200) a profile; absent fields keep
/// their value. A changed course tags the learner's indexed files again.
#[utoipa::path(
    put,
    path = "/api/v1/learners/{id}",
    tag = "learners",
    params(("id" = String, Path, description = "The learner's id")),
    request_body(content = inline(Object), description = "Profile fields; absent ones keep their value, an empty string clears"),
    responses(
        (status = 200, description = "The profile, updated", body = ProfileWritten),
        (status = 201, description = "The profile, created", body = ProfileWritten),
        crate::http::error::refusals::StaffInput,
    )
)]
pub async fn put_profile(
    State(state): State<AppState>,
    Path(id): Path<String>,
    _writer: ProfileWriter,
    Json(update): Json<ProfileUpdate>,
) -> Result<(StatusCode, Json<ProfileWritten>), ApiError> {
    check_learner_id(&id)?;
    let learners = &state.chat.learners;
    let stored = learners.learner(&id).await?;
    let mut profile = stored.clone().unwrap_or_else(|| LearnerProfile::new(&id));
    update.apply(&mut profile)?;
    if let Some(project) = &profile.project {
        crate::project::check_project_name(project)?;
    }
    learners.put_learner(&profile).await?;
    if stored.as_ref().is_some_and(|s| s.course != profile.course) {
        let course = course_of(&profile);
        state.chat.projects.reindex_learner(&id, &course).await?;
    }
    let profile = learners.learner(&id).await?.unwrap_or(profile);
    let status = match stored {
        Some(_) => StatusCode::OK,
        None => {
            // The platform creating a learner whose id was erased registers them again: the
            // erasure's tombstone (which refuses the old tokens a socket) is lifted.
            state.review.clear_erased(&id).await?;
            StatusCode::CREATED
        }
    };
    Ok((status, Json(ProfileWritten { profile })))
}
