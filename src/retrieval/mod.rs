//! Retrieval: course content read into chunks, embedded (BM25 and optionally dense), kept in a
//! vector index, and searched for the passages that answer a question.
pub mod chunk;
pub mod document;
pub mod e5;
pub mod edge_store;
pub mod embed;
pub mod embed_memo;
pub mod fusion;
pub mod ingest;
pub mod minilm;
pub mod openai_embed;
pub mod qdrant_store;
pub mod query;
pub mod store;
pub mod terms;

use std::sync::Arc;

use crate::config::RetrievalMode;
use chunk::Chunk;
use embed::{Bm25, DenseEmbedder, EmbedError};
use store::{IndexSchema, SearchQuery, StoreError, VectorStore};

#[derive(Debug, thiserror::Error)]
pub enum RetrievalError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Embed(#[from] EmbedError),
    #[error("retrieval mode {0:?} needs a dense embedder, and none is configured")]
    NoDenseEmbedder(RetrievalMode),
}

/// A passage retrieved for a question, numbered for citation.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Passage {
    /// 1-based citation number.
    pub n: usize,
    pub score: f32,
    pub chunk: Chunk,
    /// Set when the passage comes from a learner's own files.
    pub learner: Option<String>,
}

/// Where a search looks.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    pub course: Option<String>,
    pub learner: Option<String>,
}

/// Embeds questions and searches the index.
#[derive(Clone)]
pub struct Retriever {
    store: Arc<dyn VectorStore>,
    bm25: Arc<Bm25>,
    dense: Option<Arc<dyn DenseEmbedder>>,
    mode: RetrievalMode,
    candidates: usize,
    fusion: fusion::FusionWeights,
}

impl Retriever {
    pub fn new(
        store: Arc<dyn VectorStore>,
        dense: Option<Arc<dyn DenseEmbedder>>,
        mode: RetrievalMode,
        candidates: usize,
    ) -> Self {
        // Without a dense embedder every mode is BM25.
        let mode = if dense.is_none() {
            RetrievalMode::Bm25
        } else {
            mode
        };
        Self {
            store,
            bm25: Arc::new(Bm25::new()),
            dense,
            mode,
            candidates,
            fusion: fusion::FusionWeights::default(),
        }
    }

    /// How hybrid search weighs BM25 against the dense embedder.
    pub fn with_fusion(mut self, fusion: fusion::FusionWeights) -> Self {
        self.fusion = fusion;
        self
    }

    pub fn fusion(&self) -> fusion::FusionWeights {
        self.fusion
    }

    pub fn schema(&self) -> IndexSchema {
        IndexSchema {
            dense_dim: self.dense.as_ref().map(|d| d.dimensions()),
        }
    }

    /// A name for what produced the vectors; the index is rebuilt when it changes.
    pub fn embedder_id(&self) -> String {
        match &self.dense {
            Some(d) => format!("{}+{}", self.bm25.id(), d.id()),
            None => self.bm25.id(),
        }
    }

    pub fn mode(&self) -> RetrievalMode {
        self.mode
    }

    pub fn store(&self) -> &Arc<dyn VectorStore> {
        &self.store
    }

    pub fn bm25(&self) -> &Bm25 {
        &self.bm25
    }

    pub fn dense(&self) -> Option<&Arc<dyn DenseEmbedder>> {
        self.dense.as_ref()
    }

    /// The `limit` best passages for `question`, one per section.
    pub async fn search(
        &self,
        question: &str,
        scope: &Scope,
        limit: usize,
    ) -> Result<Vec<Passage>, RetrievalError> {
        self.search_with_mode(question, scope, limit, self.mode)
            .await
    }

    pub async fn search_with_mode(
        &self,
        question: &str,
        scope: &Scope,
        limit: usize,
        mode: RetrievalMode,
    ) -> Result<Vec<Passage>, RetrievalError> {
        let wants_dense = matches!(mode, RetrievalMode::Dense | RetrievalMode::Hybrid);
        let wants_sparse = matches!(mode, RetrievalMode::Bm25 | RetrievalMode::Hybrid);
        let dense = match (&self.dense, wants_dense) {
            (Some(embedder), true) => {
                Some(embedder.embed_query(&query::dense_text(question)).await?)
            }
            (None, true) if mode == RetrievalMode::Dense => {
                return Err(RetrievalError::NoDenseEmbedder(mode));
            }
            _ => None,
        };
        let sparse = wants_sparse.then(|| self.bm25.embed_query(question));
        // Extra hits so that collapsing sections still leaves `limit`.
        let wanted = limit * 3;
        let query =
            |dense: Option<Vec<f32>>, sparse: Option<store::SparseVec>, limit: usize| SearchQuery {
                dense,
                sparse,
                course: scope.course.clone(),
                learner: scope.learner.clone(),
                candidates: limit,
                limit,
            };
        let hits = match (sparse, dense) {
            (Some(sparse), Some(dense)) => {
                let candidates = self.candidates.max(wanted);
                let (sparse_hits, dense_hits) = tokio::try_join!(
                    self.store.search(query(None, Some(sparse), candidates)),
                    self.store.search(query(Some(dense), None, candidates)),
                )?;
                let mut fused = fusion::fuse(sparse_hits, dense_hits, self.fusion);
                fused.truncate(wanted);
                fused
            }
            (sparse, dense) => self.store.search(query(dense, sparse, wanted)).await?,
        };
        Ok(collapse_sections(hits, limit))
    }
}

/// Keeps the best chunk of each section (same source and anchor), in rank order.
fn collapse_sections(hits: Vec<store::Hit>, limit: usize) -> Vec<Passage> {
    let mut seen = std::collections::HashSet::new();
    hits.into_iter()
        .filter(|hit| {
            seen.insert((
                hit.learner.clone(),
                hit.chunk.source.clone(),
                hit.chunk.url.clone(),
            ))
        })
        .take(limit)
        .enumerate()
        .map(|(idx, hit)| Passage {
            n: idx + 1,
            score: hit.score,
            chunk: hit.chunk,
            learner: hit.learner,
        })
        .collect()
}
