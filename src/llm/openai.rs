//! Any OpenAI-compatible chat completions endpoint, streamed through async-openai.
use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_trait::async_trait;
use futures::StreamExt;
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::json;

use super::{ChatRequest, Llm, LlmError, LlmEvent, LlmStream};
use crate::config::LlmSettings;

pub struct OpenAiLlm {
    client: Client<OpenAIConfig>,
    model: String,
    idle_timeout: std::time::Duration,
}

impl OpenAiLlm {
    pub fn new(settings: &LlmSettings) -> Self {
        let config = OpenAIConfig::new()
            .with_api_base(settings.base_url.clone())
            .with_api_key(settings.api_key.expose_secret().to_string());
        Self {
            client: Client::with_config(config),
            model: settings.model.clone(),
            idle_timeout: settings.idle_timeout,
        }
    }
}

/// The parts of a streamed chunk we read; lenient so that compatible servers that omit
/// fields still work.
#[derive(Debug, Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Vec<ChunkChoice>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Debug, Deserialize)]
struct ChunkChoice {
    #[serde(default)]
    delta: Option<Delta>,
}

#[derive(Debug, Deserialize)]
struct Delta {
    #[serde(default)]
    content: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Usage {
    #[serde(default)]
    prompt_tokens: u32,
    #[serde(default)]
    completion_tokens: u32,
}

#[async_trait]
impl Llm for OpenAiLlm {
    fn model(&self) -> &str {
        &self.model
    }

    async fn stream(&self, request: ChatRequest) -> Result<LlmStream, LlmError> {
        let body = json!({
            "model": self.model,
            "messages": request.messages,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "stream": true,
            "stream_options": {"include_usage": true},
        });
        let idle = self.idle_timeout;
        let stream = tokio::time::timeout(
            idle,
            self.client.chat().create_stream_byot::<_, Chunk>(body),
        )
        .await
        .map_err(|_| LlmError::Idle(idle))?
        .map_err(|e| LlmError::Endpoint(e.to_string()))?;
        let events = futures::stream::unfold(stream, move |mut stream| async move {
            match tokio::time::timeout(idle, stream.next()).await {
                Err(_) => Some((vec![Err(LlmError::Idle(idle))], stream)),
                Ok(None) => None,
                Ok(Some(Err(e))) => Some((vec![Err(LlmError::Protocol(e.to_string()))], stream)),
                Ok(Some(Ok(chunk))) => Some((events_of(chunk), stream)),
            }
        })
        .flat_map(futures::stream::iter);
        Ok(events.boxed())
    }
}

fn events_of(chunk: Chunk) -> Vec<Result<LlmEvent, LlmError>> {
    let mut events: Vec<Result<LlmEvent, LlmError>> = chunk
        .choices
        .into_iter()
        .filter_map(|c| c.delta.and_then(|d| d.content))
        .filter(|text| !text.is_empty())
        .map(|text| Ok(LlmEvent::Delta(text)))
        .collect();
    if let Some(usage) = chunk.usage {
        events.push(Ok(LlmEvent::Usage {
            tokens_in: usage.prompt_tokens,
            tokens_out: usage.completion_tokens,
        }));
    }
    events
}
