//! The embedded vector index: a qdrant-edge shard in a folder under the data directory.
//! qdrant-edge is synchronous, so every call runs on the blocking pool.
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use qdrant_edge::{
    CreateIndex, Distance, EdgeConfig, EdgeShard, EdgeSparseVectorParams, EdgeVectorParamsBuilder,
    FieldIndexOperations, Filter, Fusion, JsonPath, Modifier, NamedQuery, PayloadFieldSchema,
    PayloadSchemaType, PointId, PointInsertOperations, PointOperations, PointStruct, Prefetch,
    QueryEnum, QueryRequest, ScoringQuery, UpdateOperation, Vector, VectorInternal, Vectors,
    WithPayloadInterface, WithVector,
};

use super::store::{
    DENSE_VECTOR, Hit, INDEXED_FIELDS, IndexSchema, IndexedPoint, SPARSE_VECTOR, SearchQuery,
    StoreError, VectorStore, filter_json, from_payload, payload,
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

/// Gives each filtered payload field a keyword index, as the server store does; a shard
/// written before the indexes existed gets them when it is opened.
fn ensure_payload_indexes(shard: &EdgeShard) -> Result<(), StoreError> {
    let present = shard.info().payload_schema;
    for field in INDEXED_FIELDS {
        let field_name: JsonPath = field
            .parse()
            .map_err(|_| backend(format!("field {field}")))?;
        if present.contains_key(&field_name) {
            continue;
        }
        shard
            .update(UpdateOperation::FieldIndexOperation(
                FieldIndexOperations::CreateIndex(CreateIndex {
                    field_name,
                    field_schema: Some(PayloadFieldSchema::FieldType(PayloadSchemaType::Keyword)),
                }),
            ))
            .map_err(backend)?;
    }
    Ok(())
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
                        ensure_payload_indexes(&shard)?;
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
            let shard = EdgeShard::new(&path, edge_config(schema)).map_err(backend)?;
            ensure_payload_indexes(&shard)?;
            *guard = Some(shard);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retrieval::chunk::Chunk;
    use crate::retrieval::embed::Bm25;
    use crate::retrieval::store::point_id;

    async fn indexed_fields(store: &EdgeStore) -> Vec<String> {
        let mut fields = store
            .with_shard(|shard| {
                Ok(shard
                    .info()
                    .payload_schema
                    .keys()
                    .map(|k| k.to_string())
                    .collect::<Vec<_>>())
            })
            .await
            .unwrap();
        fields.sort();
        fields
    }

    fn point(i: usize) -> IndexedPoint {
        let chunk = Chunk {
            source: format!("page-{}.md", i % 7),
            course: format!("course-{}", i % 3),
            chapter: "01".into(),
            chapter_title: "One".into(),
            title: "Loops".into(),
            heading_path: vec!["Loops".into()],
            url: format!("/course/c/page-{i}"),
            kind: "course".into(),
            chunk_idx: i,
            text: format!("loop number {i} repeats while its condition holds"),
        };
        IndexedPoint {
            id: point_id(&chunk.source, None, i),
            sparse: Bm25::new().embed_document(&chunk.embedding_text()),
            dense: None,
            learner: i.is_multiple_of(5).then(|| "ada".to_string()),
            chunk,
        }
    }

    #[tokio::test]
    async fn filtered_fields_are_indexed_in_new_written_and_reopened_shards() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index");
        let schema = IndexSchema { dense_dim: None };
        let want = ["course", "learner", "source"];

        let store = EdgeStore::new(path.clone());
        store.prepare(schema, true).await.unwrap();
        assert_eq!(indexed_fields(&store).await, want, "a new shard");
        store.upsert((0..500).map(point).collect()).await.unwrap();
        store.commit().await.unwrap();
        assert_eq!(indexed_fields(&store).await, want, "after writes");
        drop(store);

        let reopened = EdgeStore::new(path);
        reopened.prepare(schema, false).await.unwrap();
        assert_eq!(reopened.count().await.unwrap(), 500);
        assert_eq!(indexed_fields(&reopened).await, want, "reopened");
    }
}
