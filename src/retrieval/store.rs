//! The vector index seam: one schema (a named dense vector `dense` and a sparse `bm25` vector
//! with the IDF modifier; the chunk as payload) and the operations the service needs, served
//! by the embedded qdrant-edge shard or a Qdrant server.
use async_trait::async_trait;
use serde_json::json;

use super::chunk::Chunk;

pub const DENSE_VECTOR: &str = "dense";
pub const SPARSE_VECTOR: &str = "bm25";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("vector index: {0}")]
    Backend(String),
    #[error("vector index payload is not a chunk: {0}")]
    Payload(String),
    #[error("vector index task failed: {0}")]
    Task(String),
}

/// What the index holds: a dense vector of this size (if any dense embedder) and always BM25.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IndexSchema {
    pub dense_dim: Option<usize>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct SparseVec {
    pub indices: Vec<u32>,
    pub values: Vec<f32>,
}

/// A chunk ready to index.
#[derive(Debug, Clone)]
pub struct IndexedPoint {
    pub id: u64,
    pub chunk: Chunk,
    /// Set for a learner's private files; course material has none.
    pub learner: Option<String>,
    pub dense: Option<Vec<f32>>,
    pub sparse: SparseVec,
}

/// One search: the vectors present select the retrievers; both present means RRF fusion.
#[derive(Debug, Clone, Default)]
pub struct SearchQuery {
    pub dense: Option<Vec<f32>>,
    pub sparse: Option<SparseVec>,
    pub course: Option<String>,
    /// Whose private files may match besides course material; `None`: course material only.
    pub learner: Option<String>,
    /// Candidates taken from each retriever before fusion.
    pub candidates: usize,
    pub limit: usize,
}

#[derive(Debug, Clone)]
pub struct Hit {
    pub id: u64,
    pub score: f32,
    pub chunk: Chunk,
    pub learner: Option<String>,
}

#[async_trait]
pub trait VectorStore: Send + Sync {
    /// Creates the collection for `schema`, or recreates it empty when `reset` is set or the
    /// existing one does not match.
    async fn prepare(&self, schema: IndexSchema, reset: bool) -> Result<(), StoreError>;
    async fn upsert(&self, points: Vec<IndexedPoint>) -> Result<(), StoreError>;
    /// Removes every chunk of one source file (of one learner, when given).
    async fn delete_source(&self, source: &str, learner: Option<&str>) -> Result<(), StoreError>;
    /// Removes every private chunk of one learner (their deletion; course material stays).
    async fn delete_learner(&self, learner: &str) -> Result<(), StoreError>;
    async fn search(&self, query: SearchQuery) -> Result<Vec<Hit>, StoreError>;
    async fn count(&self) -> Result<usize, StoreError>;
    /// Makes writes durable and builds indexes after a batch of upserts.
    async fn commit(&self) -> Result<(), StoreError>;
}

/// The payload stored with each point: the chunk's fields plus `learner` when private.
pub(crate) fn payload(point: &IndexedPoint) -> serde_json::Value {
    let mut value = serde_json::to_value(&point.chunk).unwrap_or_else(|_| json!({}));
    if let (Some(learner), Some(map)) = (&point.learner, value.as_object_mut()) {
        map.insert("learner".into(), json!(learner));
    }
    value
}

/// Reads a payload back into a chunk and its owner.
pub(crate) fn from_payload(
    map: serde_json::Map<String, serde_json::Value>,
) -> Result<(Chunk, Option<String>), StoreError> {
    let learner = map
        .get("learner")
        .and_then(|v| v.as_str())
        .map(str::to_string);
    let chunk = serde_json::from_value(serde_json::Value::Object(map))
        .map_err(|e| StoreError::Payload(e.to_string()))?;
    Ok((chunk, learner))
}

/// Payload fields the filters use; both stores give each a keyword index, so that a filtered
/// query does not read every candidate's payload.
pub(crate) const INDEXED_FIELDS: [&str; 3] = ["course", "source", "learner"];

/// The Qdrant filter for a query, in Qdrant's JSON filter shape (shared by both backends).
pub(crate) fn filter_json(course: Option<&str>, learner: Option<&str>) -> serde_json::Value {
    let mut must = Vec::new();
    if let Some(course) = course {
        must.push(json!({"key": "course", "match": {"value": course}}));
    }
    match learner {
        None => must.push(json!({"is_empty": {"key": "learner"}})),
        Some(learner) => must.push(json!({"should": [
            {"is_empty": {"key": "learner"}},
            {"key": "learner", "match": {"value": learner}}
        ]})),
    }
    json!({ "must": must })
}

/// A stable point id for a chunk of a source (of a learner).
pub fn point_id(source: &str, learner: Option<&str>, chunk_idx: usize) -> u64 {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    hasher.update(learner.unwrap_or("").as_bytes());
    hasher.update([0]);
    hasher.update(source.as_bytes());
    hasher.update([0]);
    hasher.update((chunk_idx as u64).to_le_bytes());
    let digest = hasher.finalize();
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    // Qdrant ids are unsigned 64-bit; keep them below 2^63 so every client agrees.
    u64::from_le_bytes(bytes) >> 1
}
