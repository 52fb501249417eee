//! The LLM seam: a chat request in, a stream of text deltas and usage out; [`resilient`]
//! keeps one answer's call bounded (retries before the first token, deadlines, a token cap).
pub mod openai;
pub mod resilient;

use async_trait::async_trait;
use futures::stream::BoxStream;

use std::time::Duration;

/// Why a call failed. The text may name internal hosts and carry the provider's own words: it
/// goes to the log, never to a learner (they get [`LlmError::kind`]'s stable code).
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error("llm endpoint unreachable or failed: {0}")]
    Endpoint(String),
    #[error("llm answered http {status}: {detail}")]
    Status {
        status: u16,
        /// The endpoint's `Retry-After`, when it sent one.
        retry_after: Option<Duration>,
        detail: String,
    },
    #[error("llm sent nothing for {0:?}")]
    Idle(Duration),
    #[error("llm sent no text within {0:?}")]
    FirstTokenTimeout(Duration),
    #[error("llm answer ran past its deadline of {0:?}")]
    Deadline(Duration),
    #[error("llm answer passed the cap of {0} tokens")]
    TooLong(usize),
    #[error("llm response could not be read: {0}")]
    Protocol(String),
    #[error("llm failed {attempts} times; the last: {last}")]
    GaveUp { attempts: u32, last: Box<LlmError> },
}

/// What a learner is told about a failed answer: a stable code, never the provider's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LlmFailure {
    /// The endpoint refused, failed or dropped the answer (after retries, if any were allowed).
    Unavailable,
    /// The endpoint stayed silent, or the answer ran past its deadline.
    Timeout,
    /// The answer passed the token cap.
    TooLong,
}

impl LlmFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unavailable => "llm_unavailable",
            Self::Timeout => "llm_timeout",
            Self::TooLong => "answer_too_long",
        }
    }
}

impl LlmError {
    pub fn kind(&self) -> LlmFailure {
        match self {
            Self::Endpoint(_) | Self::Status { .. } | Self::Protocol(_) => LlmFailure::Unavailable,
            Self::Idle(_) | Self::FirstTokenTimeout(_) | Self::Deadline(_) => LlmFailure::Timeout,
            Self::TooLong(_) => LlmFailure::TooLong,
            Self::GaveUp { last, .. } => last.kind(),
        }
    }

    /// Worth another attempt, if no text has been streamed yet: rate limits, server errors,
    /// refused or dropped connections, silence. Not a refusal of the request itself (400, 401,
    /// 403, 404...), which would fail the same way again.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Status { status, .. } => *status == 429 || *status >= 500,
            Self::Endpoint(_) | Self::Protocol(_) | Self::Idle(_) | Self::FirstTokenTimeout(_) => {
                true
            }
            Self::Deadline(_) | Self::TooLong(_) | Self::GaveUp { .. } => false,
        }
    }

    /// How long the endpoint asked us to wait before trying again.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
}

#[derive(Debug, Clone)]
pub struct ChatRequest {
    pub messages: Vec<ChatMessage>,
    pub max_tokens: usize,
    pub temperature: f32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum LlmEvent {
    Delta(String),
    Usage { tokens_in: u32, tokens_out: u32 },
}

pub type LlmStream = BoxStream<'static, Result<LlmEvent, LlmError>>;

#[async_trait]
pub trait Llm: Send + Sync {
    fn model(&self) -> &str;
    /// Starts a streamed completion.
    async fn stream(&self, request: ChatRequest) -> Result<LlmStream, LlmError>;
}
