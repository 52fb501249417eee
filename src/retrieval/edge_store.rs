//! The embedded vector index: a qdrant-edge shard in a folder under the data directory.
//! qdrant-edge is synchronous, so every call runs on the blocking pool.
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use qdrant_edge::{
    Distance, EdgeConfig, EdgeShard, EdgeSparseVectorParams, EdgeVectorParamsBuilder, Filter,
    Fusion, Modifier, NamedQuery, PointId, PointInsertOperations, PointOperations, PointStruct,
    Prefetch, QueryEnum, QueryRequest, ScoringQuery, UpdateOperation, Vector, VectorInternal,
    Vectors, WithPayloadInterface, WithVector,
};

use super::store::{
    DENSE_VECTOR, Hit, IndexSchema, IndexedPoint, SPARSE_VECTOR, SearchQuery, StoreError,
    VectorStore, filter_json, from_payload, payload,
};

pub struct EdgeStore {
    path: PathBuf,
    shard: Arc<RwLock<Option<EdgeShard>>>,
}

impl EdgeStore {
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            shard: Arc::new(RwLock::new(None)),
        }
    }

    /// Runs `f` on the open shard on the blocking pool.
    async fn with_shard<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&EdgeShard) -> Result<T, StoreError> + Send + 'static,
    {
        let shard = self.shard.clone();
        tokio::task::spawn_blocking(move || {
            let guard = shard
                .read()
                .map_err(|_| StoreError::Backend("index lock poisoned".into()))?;
            let shard = guard
                .as_ref()
                .ok_or_else(|| StoreError::Backend("index is not prepared".into()))?;
            f(shard)
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
    }
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn edge_config(schema: IndexSchema) -> EdgeConfig {
    let mut config = EdgeConfig {
        sparse_vectors: HashMap::from([(
            SPARSE_VECTOR.to_string(),
            EdgeSparseVectorParams {
                modifier: Some(Modifier::Idf),
                ..Default::default()
            },
        )]),
        ..Default::default()
    };
    if let Some(dim) = schema.dense_dim {
        config.vectors.insert(
            DENSE_VECTOR.to_string(),
            EdgeVectorParamsBuilder::new(dim, Distance::Cosine).build(),
        );
    }
    config
}

fn schema_of(config: &EdgeConfig) -> IndexSchema {
    IndexSchema {
        dense_dim: config.vectors.get(DENSE_VECTOR).map(|v| v.size),
    }
}

#[async_trait]
impl VectorStore for EdgeStore {
    async fn prepare(&self, schema: IndexSchema, reset: bool) -> Result<(), StoreError> {
        let path = self.path.clone();
        let slot = self.shard.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = slot
                .write()
                .map_err(|_| StoreError::Backend("index lock poisoned".into()))?;
            *guard = None;
            let config_file = path.join("edge_config.json");
            let mut reset = reset;
            if !reset && config_file.exists() {
                match EdgeShard::load(&path, None) {
                    Ok(shard) if schema_of(&shard.config()) == schema => {
                        *guard = Some(shard);
                        return Ok(());
                    }
                    Ok(_) => reset = true,
                    Err(e) => {
                        tracing::warn!(error = %e, path = %path.display(), "index unreadable, rebuilding");
                        reset = true;
                    }
                }
            }
            if reset || path.exists() {
                let _ = std::fs::remove_dir_all(&path);
            }
            std::fs::create_dir_all(&path).map_err(backend)?;
            *guard = Some(EdgeShard::new(&path, edge_config(schema)).map_err(backend)?);
            Ok(())
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
    }

    async fn upsert(&self, points: Vec<IndexedPoint>) -> Result<(), StoreError> {
        if points.is_empty() {
            return Ok(());
        }
        self.with_shard(move |shard| {
            let mut structs = Vec::with_capacity(points.len());
            for point in points {
                let sparse =
                    Vector::new_sparse(point.sparse.indices.clone(), point.sparse.values.clone())
                        .map_err(backend)?;
                let mut named: Vec<(&str, Vector)> = vec![(SPARSE_VECTOR, sparse)];
                if let Some(dense) = &point.dense {
                    named.push((DENSE_VECTOR, Vector::new_dense(dense.clone())));
                }
                structs.push(
                    PointStruct::new(point.id, Vectors::new_named(named), payload(&point)).into(),
                );
            }
            shard
                .update(UpdateOperation::PointOperation(
                    PointOperations::UpsertPoints(PointInsertOperations::PointsList(structs)),
                ))
                .map_err(backend)
        })
        .await
    }

    async fn delete_source(&self, source: &str, learner: Option<&str>) -> Result<(), StoreError> {
        let mut must = vec![serde_json::json!({"key": "source", "match": {"value": source}})];
        match learner {
            Some(l) => must.push(serde_json::json!({"key": "learner", "match": {"value": l}})),
            None => must.push(serde_json::json!({"is_empty": {"key": "learner"}})),
        }
        let filter: Filter =
            serde_json::from_value(serde_json::json!({ "must": must })).map_err(backend)?;
        self.with_shard(move |shard| {
            shard
                .update(UpdateOperation::PointOperation(
                    PointOperations::DeletePointsByFilter(filter),
                ))
                .map_err(backend)
        })
        .await
    }

    async fn delete_learner(&self, learner: &str) -> Result<(), StoreError> {
        let filter: Filter = serde_json::from_value(serde_json::json!({
            "must": [{"key": "learner", "match": {"value": learner}}]
        }))
        .map_err(backend)?;
        self.with_shard(move |shard| {
            shard
                .update(UpdateOperation::PointOperation(
                    PointOperations::DeletePointsByFilter(filter),
                ))
                .map_err(backend)
        })
        .await
    }

    async fn search(&self, query: SearchQuery) -> Result<Vec<Hit>, StoreError> {
        let filter: Filter = serde_json::from_value(filter_json(
            query.course.as_deref(),
            query.learner.as_deref(),
        ))
        .map_err(backend)?;
        self.with_shard(move |shard| {
            let mut retrievers = Vec::new();
            if let Some(sparse) = &query.sparse
                && !sparse.indices.is_empty()
            {
                let vector = Vector::new_sparse(sparse.indices.clone(), sparse.values.clone())
                    .map_err(backend)?;
                retrievers.push((SPARSE_VECTOR, vector.0));
            }
            if let Some(dense) = &query.dense {
                retrievers.push((DENSE_VECTOR, VectorInternal::Dense(dense.clone())));
            }
            let nearest = |name: &str, vector: VectorInternal| {
                ScoringQuery::Vector(QueryEnum::Nearest(NamedQuery {
                    query: vector,
                    using: Some(name.to_string()),
                }))
            };
            let (prefetches, scoring) = match retrievers.len() {
                0 => return Ok(Vec::new()),
                1 => {
                    let (name, vector) = retrievers.pop().expect("one retriever");
                    (Vec::new(), nearest(name, vector))
                }
                _ => (
                    retrievers
                        .into_iter()
                        .map(|(name, vector)| Prefetch {
                            prefetches: Vec::new(),
                            query: Some(nearest(name, vector)),
                            limit: query.candidates,
                            params: None,
                            filter: Some(filter.clone()),
                            score_threshold: None,
                        })
                        .collect(),
                    ScoringQuery::Fusion(Fusion::Rrf {
                        k: 60,
                        weights: None,
                    }),
                ),
            };
            let points = shard
                .query(QueryRequest {
                    prefetches,
                    query: Some(scoring),
                    filter: Some(filter),
                    score_threshold: None,
                    limit: query.limit,
                    offset: 0,
                    params: None,
                    with_vector: WithVector::Bool(false),
                    with_payload: WithPayloadInterface::Bool(true),
                })
                .map_err(backend)?;
            points
                .into_iter()
                .map(|p| {
                    let id = match p.id {
                        PointId::NumId(n) => n,
                        PointId::Uuid(_) => 0,
                    };
                    let map = p.payload.map(|p| p.0).unwrap_or_default();
                    let (chunk, learner) = from_payload(map.into_iter().collect())?;
                    Ok(Hit {
                        id,
                        score: p.score,
                        chunk,
                        learner,
                    })
                })
                .collect()
        })
        .await
    }

    async fn count(&self) -> Result<usize, StoreError> {
        self.with_shard(|shard| Ok(shard.info().points_count)).await
    }

    async fn commit(&self) -> Result<(), StoreError> {
        self.with_shard(|shard| {
            shard.optimize().map_err(backend)?;
            shard.flush();
            Ok(())
        })
        .await
    }
}
