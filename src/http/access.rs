//! Who may see or change what about a learner. One place, so the REST API, the mentor page and
//! the WebSocket agree. A refusal never says whether the learner exists: callers turn `false`
//! into the same 404 a missing learner gets.
use crate::auth::{Claims, Role};
use crate::learner::LearnerProfile;

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
pub fn can_write_project(claims: &Claims, learner_id: &str) -> bool {
    match claims.role {
        Role::Admin | Role::Service => true,
        Role::Learner => claims.sub == learner_id,
        _ => false,
    }
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
