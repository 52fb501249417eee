//! The embedder seams: BM25 sparse vectors (qdrant-edge's own BM25, so a Qdrant server agrees
//! on token ids and formula) and dense embedders (in-process model or an embeddings endpoint).
use async_trait::async_trait;
use qdrant_edge::bm25_embed::{EdgeBm25, EdgeBm25Config};

use super::store::SparseVec;

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error(
        "embedding model files missing in {dir}: {missing}. Fetch them with `scripts/fetch-model.sh` (see README)"
    )]
    ModelMissing { dir: String, missing: String },
    #[error("embedding model failed to load: {0}")]
    Load(String),
    #[error("embedding failed: {0}")]
    Embed(String),
    #[error("embeddings endpoint failed: {0}")]
    Endpoint(String),
}

/// A dense text embedder; vectors are L2-normalised.
#[async_trait]
pub trait DenseEmbedder: Send + Sync {
    /// Length of every vector this embedder returns.
    fn dimensions(&self) -> usize;
    /// A stable name; a change of embedder rebuilds the index.
    fn id(&self) -> String;
    async fn embed_documents(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError>;
    async fn embed_query(&self, text: &str) -> Result<Vec<f32>, EmbedError>;
}

/// BM25 with English stemming and stop words; documents and queries are embedded differently
/// (IDF is applied by the index through the `Idf` modifier).
pub struct Bm25 {
    inner: EdgeBm25,
}

impl Bm25 {
    pub fn new() -> Self {
        let config = EdgeBm25Config {
            language: Some("english".to_string()),
            ..Default::default()
        };
        Self {
            inner: EdgeBm25::new(config).expect("the default English BM25 configuration is valid"),
        }
    }

    pub fn embed_document(&self, text: &str) -> SparseVec {
        let v = self.inner.embed_document(text);
        SparseVec {
            indices: v.indices,
            values: v.values,
        }
    }

    pub fn embed_query(&self, text: &str) -> SparseVec {
        let v = self.inner.embed_query(text);
        SparseVec {
            indices: v.indices,
            values: v.values,
        }
    }
}

impl Default for Bm25 {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stemming_makes_loops_and_loop_share_a_token() {
        let bm25 = Bm25::new();
        let doc = bm25.embed_document("while loops repeat");
        let query = bm25.embed_query("loop");
        assert!(query.indices.iter().all(|i| doc.indices.contains(i)));
        assert!(!query.indices.is_empty());
    }
}
