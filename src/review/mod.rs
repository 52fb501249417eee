//! The mentor's review of what happened between sessions: learners' feedback on answers, flags
//! that need a human ([`flags`]), mentors' annotations, search, export, retention, and the
//! digest since the last session ([`digest`]). Stored beside the transcripts, behind
//! [`ReviewStore`].
pub mod digest;
pub mod erase;
pub mod export;
pub mod flags;
pub mod search;
pub mod sql;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::transcript::{StoredMessage, TranscriptError};

/// A learner's verdict on an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rating {
    Up,
    Down,
}

impl Rating {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Down => "down",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "up" => Some(Self::Up),
            "down" => Some(Self::Down),
            _ => None,
        }
    }
}

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
    /// Distress or safety wording.
    Distress,
    /// The configured moderation endpoint flagged the message.
    Moderation,
}

impl FlagKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HumanRequested => "human_requested",
            Self::Stuck => "stuck",
            Self::Distress => "distress",
            Self::Moderation => "moderation",
        }
    }

    pub fn parse(s: &str) -> Self {
        match s {
            "human_requested" => Self::HumanRequested,
            "stuck" => Self::Stuck,
            "distress" => Self::Distress,
            _ => Self::Moderation,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Normal,
    Urgent,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "normal",
            Self::Urgent => "urgent",
        }
    }

    pub fn parse(s: &str) -> Self {
        if s == "urgent" {
            Self::Urgent
        } else {
            Self::Normal
        }
    }
}

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
            created_at: crate::transcript::now_ms(),
            resolved_at: None,
            resolved_by: None,
            resolution: None,
        }
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AnnotationKind {
    /// The companion said something wrong; this is the right version.
    Correction,
    Comment,
}

impl AnnotationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Correction => "correction",
            Self::Comment => "comment",
        }
    }

    pub fn parse(s: &str) -> Self {
        if s == "correction" {
            Self::Correction
        } else {
            Self::Comment
        }
    }
}

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

#[async_trait]
pub trait ReviewStore: Send + Sync {
    /// One message, whoever it belongs to (callers check access with its `learner_id`).
    async fn message(&self, id: &str) -> Result<Option<StoredMessage>, TranscriptError>;
    /// Records a rating, replacing the learner's earlier one on the same answer.
    async fn put_feedback(&self, feedback: &Feedback) -> Result<(), TranscriptError>;
    /// A learner's feedback created at or after `since_ms`, oldest first.
    async fn feedback_since(
        &self,
        learner_id: &str,
        since_ms: i64,
    ) -> Result<Vec<Feedback>, TranscriptError>;
    /// Feedback on the messages of one conversation.
    async fn conversation_feedback(
        &self,
        conversation_id: &str,
    ) -> Result<Vec<Feedback>, TranscriptError>;
    async fn add_flag(&self, flag: &Flag) -> Result<(), TranscriptError>;
    /// Whether an open flag of this kind already exists for the learner (and message, if given).
    async fn has_open_flag(
        &self,
        learner_id: &str,
        kind: FlagKind,
        message_id: Option<&str>,
    ) -> Result<bool, TranscriptError>;
    async fn flag(&self, id: &str) -> Result<Option<Flag>, TranscriptError>;
    /// A learner's flags, newest first; only open ones with `open_only`.
    async fn flags(&self, learner_id: &str, open_only: bool) -> Result<Vec<Flag>, TranscriptError>;
    /// Open flags per learner, for those of `learner_ids`.
    async fn open_flag_counts(
        &self,
        learner_ids: &[String],
    ) -> Result<std::collections::HashMap<String, FlagCounts>, TranscriptError>;
    /// Marks a flag resolved; false when it was already resolved or does not exist.
    async fn resolve_flag(
        &self,
        id: &str,
        resolved_by: &str,
        resolution: Option<&str>,
    ) -> Result<bool, TranscriptError>;
    async fn add_annotation(&self, annotation: &Annotation) -> Result<(), TranscriptError>;
    /// Annotations on the messages of one conversation, oldest first.
    async fn conversation_annotations(
        &self,
        conversation_id: &str,
    ) -> Result<Vec<Annotation>, TranscriptError>;
    /// Annotations on the messages of a learner, oldest first.
    async fn learner_annotations(
        &self,
        learner_id: &str,
    ) -> Result<Vec<Annotation>, TranscriptError>;
    /// A learner's conversations, most recently active first.
    async fn learner_conversations(
        &self,
        learner_id: &str,
    ) -> Result<Vec<ConversationSummary>, TranscriptError>;
    /// Up to `limit` of a learner's messages created at or after `since_ms`, after `after`.
    async fn learner_messages(
        &self,
        learner_id: &str,
        since_ms: i64,
        after: Option<&Cursor>,
        limit: usize,
    ) -> Result<MessagePage, TranscriptError>;
    /// Messages containing every term (case-insensitive substring), newest first, of the given
    /// learners (all learners with `None`).
    async fn search(
        &self,
        learner_ids: Option<&[String]>,
        terms: &[String],
        limit: usize,
    ) -> Result<Vec<StoredMessage>, TranscriptError>;
    /// Removes conversations (and everything hanging off them) not updated since `cutoff_ms`;
    /// returns how many conversations went.
    async fn purge_before(&self, cutoff_ms: i64) -> Result<u64, TranscriptError>;
    /// Removes a learner's feedback, flags and annotations.
    async fn delete_learner_review(&self, learner_id: &str) -> Result<u64, TranscriptError>;
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
