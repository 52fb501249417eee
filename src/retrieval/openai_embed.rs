//! The dense embedder behind any OpenAI-compatible `/embeddings` endpoint, through async-openai:
//! inputs sent in batches, vector lengths checked, vectors L2-normalised.
use std::time::Duration;

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::types::embeddings::{CreateEmbeddingRequest, EmbeddingInput};
use async_trait::async_trait;
use serde::Deserialize;

use super::embed::{DenseEmbedder, EmbedError};

/// At most this many inputs go in one request.
pub const BATCH_SIZE: usize = 64;
/// A request that takes longer than this fails.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

pub struct OpenAiEmbedder {
    client: Client<OpenAIConfig>,
    model: String,
    dimensions: usize,
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
        }
    }

    async fn embed_batch(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let request = CreateEmbeddingRequest {
            model: self.model.clone(),
            input: EmbeddingInput::StringArray(texts.to_vec()),
            ..Default::default()
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
        format!("openai:{}:{}", self.model, self.dimensions)
    }

    async fn embed_documents(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut out = Vec::with_capacity(texts.len());
        for batch in texts.chunks(BATCH_SIZE) {
            out.extend(self.embed_batch(batch).await?);
        }
        Ok(out)
    }

    async fn embed_query(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
        let mut vectors = self.embed_batch(&[text.to_string()]).await?;
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
    }
}
