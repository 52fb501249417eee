//! What the platform and mentors may write about a learner: ids, a profile update (merged into
//! the stored profile field by field) and a mentor session, each checked with a reason that
//! names the field.
use serde::Deserialize;

use super::{LearnerProfile, MentorSession};

const MAX_ID_CHARS: usize = 128;
const MAX_TEXT_CHARS: usize = 200;
const MAX_NOTES_CHARS: usize = 10_000;
const MAX_GOALS: usize = 20;
const MAX_GOAL_CHARS: usize = 500;
const MAX_CHAPTERS: usize = 1000;

/// Why a learner id, profile or session is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidInput {
    #[error(
        "learner id {0:?} is not valid: use 1 to {max} letters, digits, '.', '_', '-' or '@'",
        max = MAX_ID_CHARS
    )]
    LearnerId(String),
    #[error("`mentor_id` {0:?} is not a valid id")]
    MentorId(String),
    #[error("`{field}` has {chars} characters; the limit is {max}", max = MAX_TEXT_CHARS)]
    TextTooLong { field: &'static str, chars: usize },
    #[error("`{field}` contains control characters")]
    ControlCharacters { field: &'static str },
    #[error("`locale` {0:?} is not a language tag such as \"en\" or \"fr-FR\"")]
    Locale(String),
    #[error("`chapters_completed` has {0} entries; the limit is {max}", max = MAX_CHAPTERS)]
    TooManyChapters(usize),
    #[error("`held_on` {0:?} is not a date written YYYY-MM-DD")]
    HeldOn(String),
    #[error("`notes` are longer than {max} characters", max = MAX_NOTES_CHARS)]
    NotesTooLong,
    #[error("{0} goals given; the limit is {max}", max = MAX_GOALS)]
    TooManyGoals(usize),
    #[error("the goal starting {0:?} is longer than {max} characters", max = MAX_GOAL_CHARS)]
    GoalTooLong(String),
    #[error("a session needs `notes` or `goals`")]
    EmptySession,
}

/// Learner ids as the platform sends them: 1 to 128 letters, digits, `.`, `_`, `-`, `@`.
pub fn check_learner_id(id: &str) -> Result<(), InvalidInput> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_CHARS
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if ok {
        Ok(())
    } else {
        Err(InvalidInput::LearnerId(id.chars().take(140).collect()))
    }
}

/// A profile as the platform sends it. Absent (or null) fields keep their stored value; an
/// empty string clears an optional one.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileUpdate {
    pub name: Option<String>,
    pub locale: Option<String>,
    pub program: Option<String>,
    pub course: Option<String>,
    pub chapter: Option<String>,
    pub project: Option<String>,
    pub chapters_completed: Option<Vec<String>>,
    pub mentor_id: Option<String>,
    pub mentor_name: Option<String>,
}

impl ProfileUpdate {
    /// Checks every given field and writes it into `profile`. The project's name is the
    /// project module's to check.
    pub fn apply(self, profile: &mut LearnerProfile) -> Result<(), InvalidInput> {
        merge("name", &mut profile.name, self.name)?;
        merge("program", &mut profile.program, self.program)?;
        merge("course", &mut profile.course, self.course)?;
        merge("chapter", &mut profile.chapter, self.chapter)?;
        merge("project", &mut profile.project, self.project)?;
        merge("mentor_id", &mut profile.mentor_id, self.mentor_id)?;
        merge("mentor_name", &mut profile.mentor_name, self.mentor_name)?;
        if let Some(locale) = self.locale {
            check_locale(locale.trim())?;
            profile.locale = locale.trim().to_string();
        }
        if let Some(mentor) = &profile.mentor_id {
            check_learner_id(mentor).map_err(|_| InvalidInput::MentorId(mentor.clone()))?;
        }
        if let Some(chapters) = self.chapters_completed {
            if chapters.len() > MAX_CHAPTERS {
                return Err(InvalidInput::TooManyChapters(chapters.len()));
            }
            for chapter in &chapters {
                check_text("chapters_completed", chapter)?;
            }
            profile.chapters_completed = chapters;
        }
        Ok(())
    }
}

fn check_text(field: &'static str, value: &str) -> Result<(), InvalidInput> {
    let chars = value.chars().count();
    if chars > MAX_TEXT_CHARS {
        return Err(InvalidInput::TextTooLong { field, chars });
    }
    if value.chars().any(char::is_control) {
        return Err(InvalidInput::ControlCharacters { field });
    }
    Ok(())
}

/// `Some("")` clears, `Some(x)` sets, `None` keeps.
fn merge(
    field: &'static str,
    target: &mut Option<String>,
    value: Option<String>,
) -> Result<(), InvalidInput> {
    if let Some(value) = value {
        let value = value.trim().to_string();
        check_text(field, &value)?;
        *target = (!value.is_empty()).then_some(value);
    }
    Ok(())
}

fn check_locale(locale: &str) -> Result<(), InvalidInput> {
    let mut parts = locale.split(['-', '_']);
    let primary = parts.next().unwrap_or_default();
    let ok = (2..=3).contains(&primary.len())
        && primary.chars().all(|c| c.is_ascii_alphabetic())
        && parts
            .all(|p| (1..=8).contains(&p.len()) && p.chars().all(|c| c.is_ascii_alphanumeric()));
    if ok {
        Ok(())
    } else {
        Err(InvalidInput::Locale(locale.to_string()))
    }
}

/// A mentor session as the mentor writes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionNotes {
    pub held_on: String,
    #[serde(default)]
    pub notes: String,
    #[serde(default)]
    pub goals: Vec<String>,
}

impl SessionNotes {
    /// The session `mentor_id` held with `learner_id`, checked and trimmed: a date, notes or
    /// goals (blank goals dropped), each within its limit.
    pub fn into_session(
        self,
        learner_id: &str,
        mentor_id: &str,
    ) -> Result<MentorSession, InvalidInput> {
        let held_on = self.held_on.trim();
        if chrono::NaiveDate::parse_from_str(held_on, "%Y-%m-%d").is_err() {
            return Err(InvalidInput::HeldOn(held_on.to_string()));
        }
        let notes = self.notes.trim().to_string();
        if notes.chars().count() > MAX_NOTES_CHARS {
            return Err(InvalidInput::NotesTooLong);
        }
        let goals: Vec<String> = self
            .goals
            .into_iter()
            .map(|g| g.trim().to_string())
            .filter(|g| !g.is_empty())
            .collect();
        if goals.len() > MAX_GOALS {
            return Err(InvalidInput::TooManyGoals(goals.len()));
        }
        if let Some(goal) = goals.iter().find(|g| g.chars().count() > MAX_GOAL_CHARS) {
            return Err(InvalidInput::GoalTooLong(goal.chars().take(40).collect()));
        }
        if notes.is_empty() && goals.is_empty() {
            return Err(InvalidInput::EmptySession);
        }
        Ok(MentorSession {
            id: uuid::Uuid::now_v7().to_string(),
            learner_id: learner_id.to_string(),
            mentor_id: mentor_id.to_string(),
            held_on: held_on.to_string(),
            notes,
            goals,
            created_at: crate::transcript::now_ms(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learner_ids_and_locales_are_checked() {
        assert!(check_learner_id("ada.lovelace@school-1").is_ok());
        assert!(check_learner_id("../ada").is_err());
        assert!(check_learner_id("").is_err());
        assert!(check_locale("fr").is_ok());
        assert!(check_locale("fr-CA").is_ok());
        assert!(check_locale("french!").is_err());
        assert!(check_locale("").is_err());
    }

    #[test]
    fn a_profile_update_sets_clears_and_keeps_fields() {
        let mut profile = LearnerProfile::new("ada");
        profile.chapter = Some("loops".into());
        profile.program = Some("python".into());
        let update = ProfileUpdate {
            name: Some("  Ada  ".into()),
            chapter: Some(String::new()),
            locale: Some("fr-FR".into()),
            ..ProfileUpdate::default()
        };
        update.apply(&mut profile).unwrap();
        assert_eq!(profile.name.as_deref(), Some("Ada"));
        assert_eq!(profile.chapter, None);
        assert_eq!(profile.program.as_deref(), Some("python"));
        assert_eq!(profile.locale, "fr-FR");
    }

    #[test]
    fn a_profile_update_names_the_field_it_refuses() {
        let refuse = |update: ProfileUpdate| {
            update
                .apply(&mut LearnerProfile::new("ada"))
                .unwrap_err()
                .to_string()
        };
        let long = ProfileUpdate {
            course: Some("c".repeat(201)),
            ..ProfileUpdate::default()
        };
        assert!(refuse(long).contains("`course` has 201 characters"));
        let control = ProfileUpdate {
            name: Some("a\u{7}b".into()),
            ..ProfileUpdate::default()
        };
        assert!(refuse(control).contains("`name` contains control characters"));
        let mentor = ProfileUpdate {
            mentor_id: Some("../grace".into()),
            ..ProfileUpdate::default()
        };
        assert!(refuse(mentor).contains("`mentor_id`"));
        let mentor_name = ProfileUpdate {
            mentor_name: Some("Grace\nHopper".into()),
            ..ProfileUpdate::default()
        };
        assert!(refuse(mentor_name).contains("`mentor_name` contains control characters"));
        let chapters = ProfileUpdate {
            chapters_completed: Some(vec!["x".into(); 1001]),
            ..ProfileUpdate::default()
        };
        assert!(refuse(chapters).contains("1001 entries"));
    }

    fn notes(held_on: &str, notes: &str, goals: &[&str]) -> SessionNotes {
        SessionNotes {
            held_on: held_on.into(),
            notes: notes.into(),
            goals: goals.iter().map(|g| g.to_string()).collect(),
        }
    }

    #[test]
    fn a_session_is_trimmed_and_keeps_its_authors() {
        let session = notes(" 2026-03-01 ", " talked ", &["  loops ", "  "])
            .into_session("ada", "grace")
            .unwrap();
        assert_eq!(session.held_on, "2026-03-01");
        assert_eq!(session.notes, "talked");
        assert_eq!(session.goals, vec!["loops"]);
        assert_eq!(
            (session.learner_id.as_str(), session.mentor_id.as_str()),
            ("ada", "grace")
        );
    }

    #[test]
    fn a_session_without_a_date_or_content_or_within_limits_is_refused() {
        let refuse = |n: SessionNotes| n.into_session("ada", "grace").unwrap_err();
        assert!(matches!(
            refuse(notes("01/03/2026", "x", &[])),
            InvalidInput::HeldOn(_)
        ));
        assert_eq!(
            refuse(notes("2026-03-01", " ", &[" "])),
            InvalidInput::EmptySession
        );
        let many: Vec<&str> = vec!["g"; 21];
        assert_eq!(
            refuse(notes("2026-03-01", "", &many)),
            InvalidInput::TooManyGoals(21)
        );
        let long = "g".repeat(501);
        assert!(matches!(
            refuse(notes("2026-03-01", "", &[long.as_str()])),
            InvalidInput::GoalTooLong(_)
        ));
        assert_eq!(
            refuse(notes("2026-03-01", &"n".repeat(10_001), &[])),
            InvalidInput::NotesTooLong
        );
    }
}
