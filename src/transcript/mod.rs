//! Transcripts: conversations and their messages, durable before anything else happens.
//! Plain data, and the seam a turn reads and writes them through, [`TranscriptStore`]: served
//! by [`crate::store::Store`], and by an in-memory fake in unit tests.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::store::StoreError;

/// A word (stored, or received) that names no variant of an enum.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {value:?}")]
pub struct UnknownValue {
    /// What the word should have named ("message status").
    pub kind: &'static str,
    pub value: String,
}

impl UnknownValue {
    pub fn new(kind: &'static str, value: &str) -> Self {
        Self {
            kind,
            value: value.to_string(),
        }
    }
}

/// `as_str` and a strict `FromStr` for an enum stored as a word, from one table of variants and
/// words, so that the two directions cannot drift apart: a word not in the table is an
/// [`UnknownValue`], never a plausible wrong variant.
macro_rules! stored_as_words {
    ($ty:ident, $kind:literal, { $($variant:ident => $word:literal,)+ }) => {
        impl $ty {
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $word,)+
                }
            }
        }

        impl std::str::FromStr for $ty {
            type Err = $crate::transcript::UnknownValue;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($word => Ok(Self::$variant),)+
                    _ => Err($crate::transcript::UnknownValue::new($kind, s)),
                }
            }
        }
    };
}
pub(crate) use stored_as_words;

/// Final state of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageStatus {
    Complete,
    Streaming,
    Cancelled,
    Interrupted,
    Failed,
}

stored_as_words!(MessageStatus, "message status", {
    Complete => "complete",
    Streaming => "streaming",
    Cancelled => "cancelled",
    Interrupted => "interrupted",
    Failed => "failed",
});

/// Whether an answer could search the course. `Unavailable`: the vector index failed or was too
/// slow, and the answer was written without passages (the model was told so).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RetrievalStatus {
    #[default]
    Ok,
    Unavailable,
}

stored_as_words!(RetrievalStatus, "retrieval status", {
    Ok => "ok",
    Unavailable => "unavailable",
});

/// A source cited by an answer, as stored and as sent to the client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceRef {
    pub n: usize,
    pub title: String,
    pub section: String,
    pub url: String,
    pub snippet: String,
}

#[derive(Debug, Clone)]
pub struct NewQuestion {
    pub id: String,
    pub conversation_id: String,
    pub learner_id: String,
    pub course_id: Option<String>,
    pub client_id: String,
    pub text: String,
    pub page_url: Option<String>,
}

/// Everything known about an answer when it ends (or at a checkpoint).
#[derive(Debug, Clone, Default)]
pub struct AnswerRecord {
    pub text: String,
    pub sources: Vec<SourceRef>,
    pub prompt_version: Option<String>,
    /// The A/B experiment the answer was written under, whose arm is `prompt_version`.
    pub prompt_experiment: Option<String>,
    pub model: Option<String>,
    pub offline: bool,
    pub tokens_in: Option<i64>,
    pub tokens_out: Option<i64>,
    pub retrieval_ms: Option<i64>,
    pub first_token_ms: Option<i64>,
    pub total_ms: Option<i64>,
    /// What the output guard did, when it changed the answer or found it uncited.
    pub guard: Option<serde_json::Value>,
    /// Whether the course could be searched; `None` for rows written before it was recorded.
    pub retrieval: Option<RetrievalStatus>,
    /// For a failed answer, the stable code of why (`llm_unavailable`, `llm_timeout`...).
    pub failure: Option<String>,
    /// Where each delta sent ends in `text` (byte offsets, by `seq`): see [`delta_texts`].
    pub delta_ends: Vec<usize>,
    /// What the model received (`prompt::PromptRecord` as JSON), for a model answer; kept
    /// beside the message for the inspector and replays.
    pub prompt: Option<serde_json::Value>,
}

#[derive(Debug, Clone)]
pub enum QuestionInsert {
    Inserted,
    /// The client id was already used by this learner.
    Duplicate {
        message_id: String,
        conversation_id: String,
    },
    /// The conversation belongs to another learner: nothing was stored.
    ForeignConversation,
}

#[derive(Debug, Clone, Serialize)]
pub struct StoredMessage {
    pub id: String,
    pub conversation_id: String,
    pub learner_id: String,
    pub client_id: Option<String>,
    pub role: String,
    pub text: String,
    pub status: MessageStatus,
    pub reply_to: Option<String>,
    pub sources: Vec<SourceRef>,
    pub prompt_version: Option<String>,
    pub model: Option<String>,
    pub offline: bool,
    pub tokens_in: Option<i64>,
    pub tokens_out: Option<i64>,
    pub retrieval_ms: Option<i64>,
    pub first_token_ms: Option<i64>,
    pub total_ms: Option<i64>,
    pub page_url: Option<String>,
    pub created_at: i64,
    /// Answers only: whether the course could be searched (`None` before it was recorded).
    pub retrieval: Option<RetrievalStatus>,
    /// Failed answers only: the stable code of why.
    pub failure: Option<String>,
    /// What the output guard did (withheld blocks as the model wrote them): for mentors and
    /// course teams only, so never serialised with the message; views that may show it ask.
    #[serde(skip)]
    pub guard: Option<serde_json::Value>,
    /// Answers only: where each delta ends in `text`, as far as it was stored (see
    /// [`delta_texts`]); empty for questions and older rows.
    #[serde(skip)]
    pub delta_ends: Vec<usize>,
}

impl StoredMessage {
    /// A complete message with nothing but its text: the other columns empty, for the stores
    /// and tests to fill in what they know.
    pub fn new(
        id: impl Into<String>,
        conversation_id: impl Into<String>,
        learner_id: impl Into<String>,
        role: impl Into<String>,
        text: impl Into<String>,
        created_at: i64,
    ) -> Self {
        Self {
            id: id.into(),
            conversation_id: conversation_id.into(),
            learner_id: learner_id.into(),
            client_id: None,
            role: role.into(),
            text: text.into(),
            status: MessageStatus::Complete,
            reply_to: None,
            sources: Vec::new(),
            prompt_version: None,
            model: None,
            offline: false,
            tokens_in: None,
            tokens_out: None,
            retrieval_ms: None,
            first_token_ms: None,
            total_ms: None,
            page_url: None,
            created_at,
            guard: None,
            delta_ends: Vec::new(),
            retrieval: None,
            failure: None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Conversation {
    pub id: String,
    pub learner_id: String,
    pub course_id: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// What a turn reads and writes of the transcripts.
#[async_trait]
pub trait TranscriptStore: Send + Sync {
    async fn conversation(&self, id: &str) -> Result<Option<Conversation>, StoreError>;
    /// Stores a question (creating its conversation if needed) in one transaction, unless the
    /// learner already used this client id, or the conversation is another learner's (decided
    /// in the same transaction, so racing learners cannot both own one).
    async fn insert_question(&self, q: &NewQuestion) -> Result<QuestionInsert, StoreError>;
    /// Creates the answer row as `streaming`, owned by node `owner` with a fresh heartbeat, so
    /// a crash leaves a visible trace and a live node's answer is told from an orphaned one.
    async fn start_answer(
        &self,
        id: &str,
        question_id: &str,
        conversation_id: &str,
        learner_id: &str,
        owner: &str,
    ) -> Result<(), StoreError>;
    /// Saves the text so far of an answer still `streaming` (later checkpoints change nothing),
    /// and its heartbeat.
    async fn checkpoint_answer(
        &self,
        id: &str,
        text: &str,
        delta_ends: &[usize],
    ) -> Result<(), StoreError>;
    /// Says that the answer, still `streaming`, is still being written.
    async fn heartbeat_answer(&self, id: &str) -> Result<(), StoreError>;
    /// Marks the answer `interrupted` if it is still `streaming` with a heartbeat older than
    /// `stale_before_ms` (its node died); true when it did.
    async fn interrupt_if_stale(&self, id: &str, stale_before_ms: i64) -> Result<bool, StoreError>;
    async fn finish_answer(
        &self,
        id: &str,
        status: MessageStatus,
        record: &AnswerRecord,
    ) -> Result<(), StoreError>;
    /// The latest answer to a question, if one was started.
    async fn answer_to(&self, question_id: &str) -> Result<Option<StoredMessage>, StoreError>;
    /// A conversation's messages in the order they were written.
    async fn messages(&self, conversation_id: &str) -> Result<Vec<StoredMessage>, StoreError>;
    /// The newest `limit` messages of a conversation, in the order they were written.
    async fn recent_messages(
        &self,
        conversation_id: &str,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError>;
}

/// The deltas of an answer after `after` (`None`: from the first), as `(seq, text)`, from its
/// stored text and where each delta ends; a boundary past the text or inside a character (a
/// row written by an older version) ends the list.
pub fn delta_texts(text: &str, delta_ends: &[usize], after: Option<u64>) -> Vec<(u64, String)> {
    let first = after.map_or(0, |seq| seq as usize + 1);
    let mut deltas = Vec::new();
    for (seq, end) in delta_ends.iter().copied().enumerate().skip(first) {
        let start = if seq == 0 { 0 } else { delta_ends[seq - 1] };
        match text.get(start..end) {
            Some(part) => deltas.push((seq as u64, part.to_string())),
            None => break,
        }
    }
    deltas
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deltas_after_a_seq_are_cut_from_the_text_at_their_ends() {
        let text = "héllo wörld";
        let ends = [3, 6, text.len()];
        assert_eq!(
            delta_texts(text, &ends, None),
            vec![(0, "hé".into()), (1, "llo".into()), (2, " wörld".into())]
        );
        assert_eq!(
            delta_texts(text, &ends, Some(1)),
            vec![(2, " wörld".into())]
        );
        assert!(delta_texts(text, &ends, Some(2)).is_empty());
        // An end inside a character or past the text stops the list there.
        assert_eq!(delta_texts(text, &[2, 50], None), vec![]);
        assert_eq!(delta_texts(text, &[3, 50], None), vec![(0, "hé".into())]);
    }

    #[test]
    fn every_retrieval_status_round_trips_and_an_unknown_one_is_an_error() {
        for status in [RetrievalStatus::Ok, RetrievalStatus::Unavailable] {
            assert_eq!(status.as_str().parse::<RetrievalStatus>(), Ok(status));
        }
        assert_eq!(
            "down".parse::<RetrievalStatus>(),
            Err(UnknownValue::new("retrieval status", "down"))
        );
    }

    #[test]
    fn every_message_status_round_trips_and_an_unknown_one_is_an_error() {
        for status in [
            MessageStatus::Complete,
            MessageStatus::Streaming,
            MessageStatus::Cancelled,
            MessageStatus::Interrupted,
            MessageStatus::Failed,
        ] {
            assert_eq!(status.as_str().parse::<MessageStatus>(), Ok(status));
        }
        assert_eq!(
            "done".parse::<MessageStatus>(),
            Err(UnknownValue::new("message status", "done"))
        );
    }
}
