//! Transcripts: conversations and their messages, durable before anything else happens.
//! One seam, [`TranscriptStore`], served by SQL over SQLite or PostgreSQL.
pub mod sql;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum TranscriptError {
    #[error("transcript database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("transcript migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored sources are not valid JSON: {0}")]
    Corrupt(String),
}

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

impl MessageStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Complete => "complete",
            Self::Streaming => "streaming",
            Self::Cancelled => "cancelled",
            Self::Interrupted => "interrupted",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Self {
        match s {
            "complete" => Self::Complete,
            "streaming" => Self::Streaming,
            "cancelled" => Self::Cancelled,
            "failed" => Self::Failed,
            _ => Self::Interrupted,
        }
    }
}

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
    pub model: Option<String>,
    pub offline: bool,
    pub tokens_in: Option<i64>,
    pub tokens_out: Option<i64>,
    pub retrieval_ms: Option<i64>,
    pub first_token_ms: Option<i64>,
    pub total_ms: Option<i64>,
}

#[derive(Debug, Clone)]
pub enum QuestionInsert {
    Inserted,
    /// The client id was already used by this learner.
    Duplicate {
        message_id: String,
        conversation_id: String,
    },
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
}

#[derive(Debug, Clone, Serialize)]
pub struct Conversation {
    pub id: String,
    pub learner_id: String,
    pub course_id: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[async_trait]
pub trait TranscriptStore: Send + Sync {
    async fn conversation(&self, id: &str) -> Result<Option<Conversation>, TranscriptError>;
    /// Stores a question (creating its conversation if needed) in one transaction, unless the
    /// learner already used this client id.
    async fn insert_question(&self, q: &NewQuestion) -> Result<QuestionInsert, TranscriptError>;
    /// Creates the answer row as `streaming`, so a crash leaves a visible trace.
    async fn start_answer(
        &self,
        id: &str,
        question_id: &str,
        conversation_id: &str,
        learner_id: &str,
    ) -> Result<(), TranscriptError>;
    /// Saves the text so far of a streaming answer.
    async fn checkpoint_answer(&self, id: &str, text: &str) -> Result<(), TranscriptError>;
    async fn finish_answer(
        &self,
        id: &str,
        status: MessageStatus,
        record: &AnswerRecord,
    ) -> Result<(), TranscriptError>;
    /// The answer to a question, if one was started.
    async fn answer_to(&self, question_id: &str) -> Result<Option<StoredMessage>, TranscriptError>;
    async fn messages(&self, conversation_id: &str) -> Result<Vec<StoredMessage>, TranscriptError>;
    /// Answers left `streaming` by a crash become `interrupted`; returns how many.
    async fn mark_interrupted(&self) -> Result<u64, TranscriptError>;
    /// Closes the pool after pending writes.
    async fn close(&self);
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
