//! The mentor's review of what happened between sessions: learners' feedback on answers, flags
//! that need a human ([`flags`]), mentors' annotations, search, export, retention, and the
//! digest since the last session ([`digest`]). Plain data, stored by [`crate::store::Store`];
//! what the digest reads goes through [`LearnerActivity`], so a fake can stand in for it.
pub mod digest;
pub mod erase;
pub mod export;
pub mod flags;
pub mod intent;
pub mod search;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::store::StoreError;
use crate::transcript::{StoredMessage, stored_as_words};

/// A learner's verdict on an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rating {
    Up,
    Down,
}

stored_as_words!(Rating, "rating", {
    Up => "up",
    Down => "down",
});

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Feedback {
    pub id: String,
    pub message_id: String,
    pub learner_id: String,
    pub rating: Rating,
    pub comment: Option<String>,
    pub created_at: i64,
}

/// Why a flag was raised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlagKind {
    /// The learner asked for a human, in words or with the "ask my mentor" button.
    HumanRequested,
    /// The same question again and again, or several thumbs-down.
    Stuck,
    /// The learner sounds discouraged or about to give up or drop out: not urgent, shown with
    /// its trend over the last weeks.
    Discouraged,
    /// Distress or safety wording.
    Distress,
    /// The configured moderation endpoint flagged the message.
    Moderation,
    /// The output guard withheld part of an answer (a course policy fired).
    Policy,
}

stored_as_words!(FlagKind, "flag kind", {
    HumanRequested => "human_requested",
    Stuck => "stuck",
    Discouraged => "discouraged",
    Distress => "distress",
    Moderation => "moderation",
    Policy => "policy",
});

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Normal,
    Urgent,
}

stored_as_words!(Severity, "severity", {
    Normal => "normal",
    Urgent => "urgent",
});

/// Something that needs the mentor, with its reason and the message it points to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Flag {
    pub id: String,
    pub learner_id: String,
    pub conversation_id: Option<String>,
    pub message_id: Option<String>,
    pub kind: FlagKind,
    pub severity: Severity,
    pub reason: String,
    /// How sure the rule that raised it is, 0 to 1 (none for the button and older flags).
    #[serde(default)]
    pub score: Option<f64>,
    /// The learner's messages grouped under this flag (a repeated signal joins the open flag
    /// of its kind instead of stacking a new one).
    #[serde(default)]
    pub signals: i64,
    pub created_at: i64,
    pub resolved_at: Option<i64>,
    pub resolved_by: Option<String>,
    pub resolution: Option<String>,
}

impl Flag {
    pub fn new(
        learner_id: &str,
        conversation_id: Option<&str>,
        message_id: Option<&str>,
        kind: FlagKind,
        severity: Severity,
        reason: impl Into<String>,
    ) -> Self {
        Self {
            id: uuid::Uuid::now_v7().to_string(),
            learner_id: learner_id.to_string(),
            conversation_id: conversation_id.map(str::to_string),
            message_id: message_id.map(str::to_string),
            kind,
            severity,
            reason: reason.into(),
            score: None,
            signals: 0,
            created_at: crate::transcript::now_ms(),
            resolved_at: None,
            resolved_by: None,
            resolution: None,
        }
    }

    /// With the score of the rule that raised it.
    pub fn with_score(mut self, score: f64) -> Self {
        self.score = Some(score);
        self
    }

    pub fn is_open(&self) -> bool {
        self.resolved_at.is_none()
    }
}

/// Open flags of one learner, counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FlagCounts {
    pub open: u64,
    pub urgent: u64,
}

/// How the answers written from one prompt version cited the course: of the model's answers
/// that were given passages, how many cited none of them (the output guard's `uncited`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptCitations {
    /// The exact version the answers were written from (a stored version's id or a shipped
    /// default's `default:<template>@<sha>`).
    pub prompt_version: String,
    /// Complete model answers (offline replies and failed or cancelled answers left out).
    pub answers: u64,
    /// Of those, the ones given passages to cite.
    pub with_passages: u64,
    /// Of those, the ones that cited none.
    pub uncited: u64,
}

impl PromptCitations {
    /// `uncited / with_passages`; `None` before any answer had passages.
    pub fn uncited_rate(&self) -> Option<f64> {
        (self.with_passages > 0).then(|| self.uncited as f64 / self.with_passages as f64)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AnnotationKind {
    /// The companion said something wrong; this is the right version.
    Correction,
    Comment,
}

stored_as_words!(AnnotationKind, "annotation kind", {
    Correction => "correction",
    Comment => "comment",
});

/// A mentor's note on one message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Annotation {
    pub id: String,
    pub message_id: String,
    pub learner_id: String,
    pub author_id: String,
    pub kind: AnnotationKind,
    pub text: String,
    pub created_at: i64,
}

/// One conversation of a learner, with its size.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConversationSummary {
    pub id: String,
    pub learner_id: String,
    pub course_id: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub n_messages: i64,
    /// The first question, to recognise the conversation by.
    pub first_question: Option<String>,
}

/// A page of a learner's messages in (created_at, id) order; `next` continues after the last.
#[derive(Debug, Clone)]
pub struct MessagePage {
    pub messages: Vec<StoredMessage>,
    pub next: Option<Cursor>,
}

impl MessagePage {
    /// The page of `limit` messages out of up to `limit + 1` read in order: an extra one only
    /// says that a next page exists.
    pub fn of(mut messages: Vec<StoredMessage>, limit: usize) -> Self {
        let next = if messages.len() > limit {
            messages.truncate(limit);
            messages.last().map(|m| Cursor {
                created_at: m.created_at,
                id: m.id.clone(),
            })
        } else {
            None
        };
        Self { messages, next }
    }
}

/// A position in a learner's history: strictly after this message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: i64,
    pub id: String,
}

impl Cursor {
    /// `"<created_at>.<id>"`, opaque to clients.
    pub fn encode(&self) -> String {
        format!("{}.{}", self.created_at, self.id)
    }

    pub fn decode(text: &str) -> Option<Self> {
        let (at, id) = text.split_once('.')?;
        let created_at = at.parse().ok()?;
        (!id.is_empty() && id.len() <= 100).then(|| Self {
            created_at,
            id: id.to_string(),
        })
    }
}

/// Where a page of a conversation's messages starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageAt {
    /// The oldest messages.
    First,
    /// Strictly after this message, oldest first; `next` continues forwards.
    After(Cursor),
    /// The messages just before this one (still oldest first in the page); `next` continues
    /// backwards, to be passed as `before`.
    Before(Cursor),
}

/// A learner's last mentor session and what they did since, for the mentor's list.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Overview {
    pub last_session: Option<crate::learner::MentorSession>,
    /// Start of the period counted: see [`digest::since_session`].
    pub since: i64,
    /// Questions asked since `since`.
    pub questions_since: u64,
    /// When the newest message since `since` was written.
    pub last_activity: Option<i64>,
}

/// Activity counted since a time: questions asked and the newest message's time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Activity {
    pub questions: u64,
    pub last_at: Option<i64>,
}

/// The overview of each of `learner_ids`, read in a number of queries that does not grow with
/// the number of learners (two: their latest sessions, then their activity since).
pub async fn overviews(
    activity: &dyn LearnerActivity,
    learner_ids: &[String],
) -> Result<std::collections::HashMap<String, Overview>, StoreError> {
    let mut sessions = activity.latest_sessions(learner_ids).await?;
    let since: Vec<(String, i64)> = learner_ids
        .iter()
        .map(|id| (id.clone(), digest::since_session(sessions.get(id))))
        .collect();
    let counted = activity.activity_since(&since).await?;
    Ok(since
        .into_iter()
        .map(|(id, since)| {
            let counted = counted.get(&id).copied().unwrap_or_default();
            let overview = Overview {
                last_session: sessions.remove(&id),
                since,
                questions_since: counted.questions,
                last_activity: counted.last_at,
            };
            (id, overview)
        })
        .collect())
}

/// What the digest and the mentor's list read of learners' activity: served by
/// [`crate::store::Store`], and by an in-memory fake in unit tests.
#[async_trait]
pub trait LearnerActivity: Send + Sync {
    /// Up to `limit` of a learner's messages created at or after `since_ms`, after `after`.
    async fn learner_messages(
        &self,
        learner_id: &str,
        since_ms: i64,
        after: Option<&Cursor>,
        limit: usize,
    ) -> Result<MessagePage, StoreError>;
    /// A learner's feedback created at or after `since_ms`, oldest first.
    async fn feedback_since(
        &self,
        learner_id: &str,
        since_ms: i64,
    ) -> Result<Vec<Feedback>, StoreError>;
    /// A learner's flags, newest first; only open ones with `open_only`.
    async fn flags(&self, learner_id: &str, open_only: bool) -> Result<Vec<Flag>, StoreError>;
    /// The newest `limit` of a learner's messages created at or after `since_ms`, oldest first.
    async fn latest_learner_messages(
        &self,
        learner_id: &str,
        since_ms: i64,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError>;
    /// The latest mentor session of each of `learner_ids` that has one, in one query.
    async fn latest_sessions(
        &self,
        learner_ids: &[String],
    ) -> Result<std::collections::HashMap<String, crate::learner::MentorSession>, StoreError>;
    /// Each learner's activity since their own time, for all of `since` in one query.
    async fn activity_since(
        &self,
        since: &[(String, i64)],
    ) -> Result<std::collections::HashMap<String, Activity>, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transcript::UnknownValue;
    use std::str::FromStr;

    /// `learners` learners, each with two sessions and, around the latest, questions before
    /// and after it; their overviews and the seam calls they took.
    async fn overviews_of(learners: usize) -> (std::collections::HashMap<String, Overview>, usize) {
        use crate::learner::{LearnerStore, MentorSession};
        use crate::store::memory::Memory;

        let store = Memory::default();
        // Noon UTC on 2025-03-04, and on the day after.
        let (day1, day2) = (1_741_089_600_000_i64, 1_741_176_000_000_i64);
        let mut ids = Vec::new();
        for n in 0..learners {
            let id = format!("learner-{n:03}");
            for (held_on, at) in [("2025-03-03", day1 - 86_400_000), ("2025-03-04", day1)] {
                store
                    .add_mentor_session(&MentorSession {
                        id: format!("{id}-{held_on}"),
                        learner_id: id.clone(),
                        mentor_id: "mia".into(),
                        held_on: held_on.into(),
                        notes: String::new(),
                        goals: vec![format!("goal of {held_on}")],
                        created_at: at,
                    })
                    .await
                    .unwrap();
            }
            // One question before the latest session, `n % 3` after it, each answered.
            for (k, at) in std::iter::once(day1 - 1000)
                .chain((0..n % 3).map(|k| day2 + k as i64 * 1000))
                .enumerate()
            {
                for (role, suffix) in [("learner", "q"), ("assistant", "a")] {
                    store.put_message(StoredMessage::new(
                        format!("{id}-{k}-{suffix}"),
                        format!("{id}-conv"),
                        id.clone(),
                        role,
                        "text",
                        at + i64::from(role == "assistant"),
                    ));
                }
            }
            ids.push(id);
        }
        let before = store.calls();
        let overviews = overviews(&store, &ids).await.unwrap();
        (overviews, store.calls() - before)
    }

    #[tokio::test]
    async fn overviews_take_the_same_few_reads_whatever_the_number_of_learners() {
        let (few, reads_for_3) = overviews_of(3).await;
        let (many, reads_for_60) = overviews_of(60).await;
        assert_eq!(reads_for_3, 2);
        assert_eq!(reads_for_60, reads_for_3);
        assert_eq!((few.len(), many.len()), (3, 60));
        // What each says: the latest session, and only what came after it counted.
        let o = &many["learner-005"];
        assert_eq!(o.last_session.as_ref().unwrap().held_on, "2025-03-04");
        assert_eq!(o.since, 1_741_089_600_000);
        assert_eq!(o.questions_since, 2);
        assert_eq!(o.last_activity, Some(1_741_176_000_000 + 1001));
        let idle = &many["learner-003"];
        assert_eq!(idle.questions_since, 0);
        assert_eq!(idle.last_activity, None);
    }

    #[test]
    fn a_cursor_survives_encoding_and_garbage_is_refused() {
        let cursor = Cursor {
            created_at: 1_700_000_000_123,
            id: "0190-abc".into(),
        };
        assert_eq!(Cursor::decode(&cursor.encode()), Some(cursor));
        assert_eq!(Cursor::decode("nope"), None);
        assert_eq!(Cursor::decode("12."), None);
        assert_eq!(Cursor::decode("x.y"), None);
    }

    /// `word.parse()` of every variant's `as_str()` gives the variant back.
    fn round_trips<T>(variants: &[T], as_str: fn(T) -> &'static str)
    where
        T: Copy + PartialEq + std::fmt::Debug + FromStr<Err = UnknownValue>,
    {
        for &variant in variants {
            assert_eq!(as_str(variant).parse::<T>(), Ok(variant));
        }
    }

    #[test]
    fn every_stored_review_word_round_trips() {
        round_trips(&[Rating::Up, Rating::Down], Rating::as_str);
        round_trips(
            &[
                FlagKind::HumanRequested,
                FlagKind::Stuck,
                FlagKind::Distress,
                FlagKind::Moderation,
                FlagKind::Policy,
            ],
            FlagKind::as_str,
        );
        round_trips(&[Severity::Normal, Severity::Urgent], Severity::as_str);
        round_trips(
            &[AnnotationKind::Correction, AnnotationKind::Comment],
            AnnotationKind::as_str,
        );
    }

    #[test]
    fn an_unknown_stored_word_is_an_error_not_a_plausible_variant() {
        assert_eq!(
            "abuse".parse::<FlagKind>(),
            Err(UnknownValue::new("flag kind", "abuse"))
        );
        assert_eq!(
            "high".parse::<Severity>(),
            Err(UnknownValue::new("severity", "high"))
        );
        assert_eq!(
            "note".parse::<AnnotationKind>(),
            Err(UnknownValue::new("annotation kind", "note"))
        );
        assert_eq!(
            "meh".parse::<Rating>(),
            Err(UnknownValue::new("rating", "meh"))
        );
        // Case matters: the stored words are written by `as_str` only.
        assert!("Urgent".parse::<Severity>().is_err());
    }
}
