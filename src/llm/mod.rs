//! The LLM seam: a chat request in, a stream of text deltas and usage out.
pub mod openai;

use async_trait::async_trait;
use futures::stream::BoxStream;

#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error("llm endpoint unreachable or failed: {0}")]
    Endpoint(String),
    #[error("llm sent nothing for {0:?}")]
    Idle(std::time::Duration),
    #[error("llm response could not be read: {0}")]
    Protocol(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
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
