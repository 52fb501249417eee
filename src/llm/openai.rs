//! Any OpenAI-compatible chat completions endpoint, streamed through async-openai. One call is
//! one attempt: async-openai's own retries are left out (see [`OneAttempt`]); the retries, with
//! their deadline and jitter, are [`super::resilient`]'s.
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::middleware::{HttpRequestFactory, ReqwestService};
use async_trait::async_trait;
use futures::StreamExt;
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::json;
use tower::Service;

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
            client: Client::with_config(config).with_http_service(OneAttempt::default()),
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
        .map_err(llm_error)?;
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

/// async-openai's HTTP layer without its retries (they sleep on any `Retry-After`, keep no
/// deadline and would run again under ours): a response that is not a success becomes an error
/// that keeps its status and `Retry-After`, which async-openai's own error would drop.
#[derive(Clone, Default)]
struct OneAttempt {
    inner: ReqwestService,
}

/// A response that was not a success, as [`OneAttempt`] saw it.
#[derive(Debug, thiserror::Error)]
#[error("http {status}: {body}")]
struct HttpStatus {
    status: u16,
    retry_after: Option<Duration>,
    body: String,
}

/// The most of an error body kept for the log.
const ERROR_BODY_CHARS: usize = 500;

impl Service<HttpRequestFactory> for OneAttempt {
    type Response = reqwest::Response;
    type Error = OpenAIError;
    type Future = Pin<Box<dyn Future<Output = Result<reqwest::Response, OpenAIError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), OpenAIError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: HttpRequestFactory) -> Self::Future {
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            let status = response.status();
            if status.is_success() {
                return Ok(response);
            }
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let body = response.text().await.unwrap_or_default();
            Err(OpenAIError::Boxed(Box::new(HttpStatus {
                status: status.as_u16(),
                retry_after,
                body: body.chars().take(ERROR_BODY_CHARS).collect(),
            })))
        })
    }
}

/// The seam's error for a failed request: a status (with its `Retry-After`) when the endpoint
/// answered, else the endpoint could not be reached.
fn llm_error(error: OpenAIError) -> LlmError {
    match error {
        OpenAIError::Boxed(boxed) => match boxed.downcast::<HttpStatus>() {
            Ok(http) => LlmError::Status {
                status: http.status,
                retry_after: http.retry_after,
                detail: http.body,
            },
            Err(other) => LlmError::Endpoint(other.to_string()),
        },
        OpenAIError::ApiError(api) => LlmError::Status {
            status: api.status_code.as_u16(),
            retry_after: None,
            detail: api.api_error.to_string(),
        },
        other => LlmError::Endpoint(other.to_string()),
    }
}
