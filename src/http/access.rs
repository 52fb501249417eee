//! Who may see or change what about a learner. One place, so the REST API, the mentor page and
//! the WebSocket agree. A refusal never says whether the learner exists: the rules' `false`
//! becomes the same 404 a missing learner gets (the `readable_*`/`reviewable_*`/`writable_*`
//! functions below apply them to the stored profile).
use super::{ApiError, AppState};
use crate::auth::{Claims, Role};
use crate::chat::attach::ensure_profile;
use crate::learner::LearnerProfile;
use crate::learner::validate::check_learner_id;

/// Read a learner's transcripts, profile, project files, flags and digest.
/// - the learner themself;
/// - their mentor (the profile's `mentor_id`);
/// - an admin, or the platform's service token.
///
/// Course teams tune prompts; they do not read individual learners' conversations.
pub fn can_read_learner(
    claims: &Claims,
    learner_id: &str,
    profile: Option<&LearnerProfile>,
) -> bool {
    match claims.role {
        Role::Admin | Role::Service => true,
        Role::Learner => claims.sub == learner_id,
        Role::Mentor => {
            profile.is_some_and(|p| p.mentor_id.as_deref() == Some(claims.sub.as_str()))
        }
        Role::CourseTeam => false,
    }
}

/// Annotate, resolve flags, record mentor sessions: the learner's mentor or an admin.
pub fn can_review_learner(claims: &Claims, profile: Option<&LearnerProfile>) -> bool {
    match claims.role {
        Role::Admin => true,
        Role::Mentor => {
            profile.is_some_and(|p| p.mentor_id.as_deref() == Some(claims.sub.as_str()))
        }
        _ => false,
    }
}

/// Create or change a profile (the platform's job): the service token or an admin.
pub fn can_write_profile(claims: &Claims) -> bool {
    matches!(claims.role, Role::Admin | Role::Service)
}

/// Write a learner's project files: the learner themself, the service token or an admin.
/// Never an anonymous demo visitor (see [`writable_project`]).
pub fn can_write_project(claims: &Claims, learner_id: &str) -> bool {
    match claims.role {
        Role::Admin | Role::Service => true,
        Role::Learner => claims.sub == learner_id && !claims.is_demo(),
        _ => false,
    }
}

/// Read and change a course's answer policies (and read its answers' citations): that course's
/// team (its token names the course) or an admin.
pub fn can_manage_course_policy(claims: &Claims, course: &str) -> bool {
    match claims.role {
        Role::Admin => true,
        Role::CourseTeam => claims.course.as_deref() == Some(course),
        _ => false,
    }
}

/// Who may read and change a course's prompt versions, labels and experiments: its team and
/// admins; `*` (every course) admins only.
pub fn can_manage_course_prompts(claims: &Claims, course: &str) -> bool {
    match claims.role {
        Role::Admin => true,
        Role::CourseTeam => course != "*" && claims.course.as_deref() == Some(course),
        _ => false,
    }
}

/// Whether `claims` may read the prompt of an answer given to `learner_id` in `course`: the
/// course's team, the learner's mentor, an admin. Not the learner (the prompt holds the
/// mentor's notes), nor the platform's service token.
pub fn can_inspect_prompt(
    claims: &Claims,
    course: Option<&str>,
    profile: Option<&LearnerProfile>,
) -> bool {
    match claims.role {
        Role::Admin => true,
        Role::CourseTeam => course.is_some() && claims.course.as_deref() == course,
        Role::Mentor => {
            profile.is_some_and(|p| p.mentor_id.as_deref() == Some(claims.sub.as_str()))
        }
        Role::Learner | Role::Service => false,
    }
}

/// The refusal a demo visitor gets for storing files.
pub fn demo_cannot_store_files() -> ApiError {
    ApiError::Forbidden(
        "demo visitors cannot upload or import project files; sign in through your course platform"
            .into(),
    )
}

/// Erase a learner: an admin or the platform's service token.
pub fn can_erase_learner(claims: &Claims) -> bool {
    matches!(claims.role, Role::Admin | Role::Service)
}

/// The one answer for a learner the caller may not see and for one that does not exist.
pub fn learner_not_found() -> ApiError {
    ApiError::NotFound("learner".into())
}

/// The learner's profile when `claims` may read it (a learner's own token fills theirs first);
/// the same 404 for a missing learner otherwise.
pub async fn readable_profile(
    state: &AppState,
    claims: &Claims,
    learner_id: &str,
) -> Result<LearnerProfile, ApiError> {
    let profile = if claims.sub == learner_id {
        ensure_profile(state.chat.learners.as_ref(), claims).await?
    } else {
        state.chat.learners.learner(learner_id).await?
    };
    if !can_read_learner(claims, learner_id, profile.as_ref()) {
        return Err(learner_not_found());
    }
    profile.ok_or_else(learner_not_found)
}

/// The profile when `claims` may write the learner's project files: 403 for anyone else
/// (before looking the learner up), 404 for a learner that does not exist.
pub async fn writable_project(
    state: &AppState,
    claims: &Claims,
    learner_id: &str,
) -> Result<LearnerProfile, ApiError> {
    check_learner_id(learner_id)?;
    if claims.is_demo() {
        return Err(demo_cannot_store_files());
    }
    if !can_write_project(claims, learner_id) {
        return Err(ApiError::Forbidden(
            "only the learner themself, the platform or an admin may change a learner's project files"
                .into(),
        ));
    }
    let profile = if claims.sub == learner_id {
        ensure_profile(state.chat.learners.as_ref(), claims).await?
    } else {
        state.chat.learners.learner(learner_id).await?
    };
    profile.ok_or_else(learner_not_found)
}

/// The learner's profile (if any) when `claims` may read their history; the same 404 otherwise
/// and for a learner with neither a profile nor a conversation (an admin may see those).
pub async fn readable_history(
    state: &AppState,
    claims: &Claims,
    learner_id: &str,
) -> Result<Option<LearnerProfile>, ApiError> {
    let profile = state.chat.learners.learner(learner_id).await?;
    if !can_read_learner(claims, learner_id, profile.as_ref()) {
        return Err(learner_not_found());
    }
    existing(state, learner_id, profile).await
}

/// The learner's profile (if any) when `claims` may review them; the same 404 otherwise and for
/// a learner with neither a profile nor a conversation.
pub async fn reviewable_history(
    state: &AppState,
    claims: &Claims,
    learner_id: &str,
) -> Result<Option<LearnerProfile>, ApiError> {
    let profile = state.chat.learners.learner(learner_id).await?;
    if !can_review_learner(claims, profile.as_ref()) {
        return Err(learner_not_found());
    }
    existing(state, learner_id, profile).await
}

/// `profile`, unless neither it nor a conversation of the learner exists.
async fn existing(
    state: &AppState,
    learner_id: &str,
    profile: Option<LearnerProfile>,
) -> Result<Option<LearnerProfile>, ApiError> {
    if profile.is_none()
        && state
            .review
            .learner_conversations(learner_id)
            .await?
            .is_empty()
    {
        return Err(learner_not_found());
    }
    Ok(profile)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::claims_for;

    fn profile(mentor: &str) -> LearnerProfile {
        let mut p = LearnerProfile::new("ada");
        p.mentor_id = Some(mentor.to_string());
        p
    }

    #[test]
    fn only_the_learner_their_mentor_and_admins_read_a_learner() {
        let p = profile("grace");
        let c = |role, id: &str| claims_for(role, id, None, None, 60);
        assert!(can_read_learner(&c(Role::Learner, "ada"), "ada", Some(&p)));
        assert!(!can_read_learner(&c(Role::Learner, "bob"), "ada", Some(&p)));
        assert!(can_read_learner(&c(Role::Mentor, "grace"), "ada", Some(&p)));
        assert!(!can_read_learner(
            &c(Role::Mentor, "linus"),
            "ada",
            Some(&p)
        ));
        assert!(!can_read_learner(&c(Role::Mentor, "grace"), "ada", None));
        assert!(!can_read_learner(
            &c(Role::CourseTeam, "ct"),
            "ada",
            Some(&p)
        ));
        assert!(can_read_learner(&c(Role::Admin, "root"), "ada", None));
    }
}
