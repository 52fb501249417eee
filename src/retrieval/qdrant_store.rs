//! The server vector index: one collection on a Qdrant server, reached over gRPC with
//! qdrant-client, holding the same schema, payload and filters as the embedded [`EdgeStore`].
//!
//! [`EdgeStore`]: super::edge_store::EdgeStore
use std::time::Duration;

use async_trait::async_trait;
use qdrant_client::qdrant::r#match::MatchValue;
use qdrant_client::qdrant::point_id::PointIdOptions;
use qdrant_client::qdrant::vectors_config::Config as VectorsConfigKind;
use qdrant_client::qdrant::{
    CollectionStatus, Condition, CountPointsBuilder, CreateCollectionBuilder,
    CreateFieldIndexCollectionBuilder, DeletePointsBuilder, Distance, FieldType, Filter,
    GetCollectionInfoResponse, Modifier, NamedVectors, PayloadSchemaType, PointStruct,
    PrefetchQueryBuilder, Query, QueryPointsBuilder, RrfBuilder, SparseVectorParamsBuilder,
    SparseVectorsConfigBuilder, UpsertPointsBuilder, Vector, VectorInput, VectorParamsBuilder,
    VectorsConfigBuilder,
};
use qdrant_client::{Payload, Qdrant};

use crate::config::CollectionLayout;

use super::store::{
    DENSE_VECTOR, Hit, INDEXED_FIELDS, IndexSchema, IndexedPoint, SPARSE_VECTOR, SearchQuery,
    StoreError, VectorStore, from_payload, payload,
};

/// The RRF constant the embedded store uses. Qdrant's parameterless `Fusion::Rrf` means k = 2,
/// so the server is given k explicitly to rank the same way.
const RRF_K: u32 = 60;
/// Points per upsert request: keeps each gRPC message and each `wait` short.
const UPSERT_BATCH: usize = 256;
/// Per-request timeout; writes wait until the server has applied them.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

pub struct QdrantStore {
    client: Qdrant,
    collection: String,
    layout: CollectionLayout,
}

impl QdrantStore {
    /// A store for `collection` on the server at `url` (the gRPC port, e.g.
    /// `http://localhost:6334`). Connects lazily: an unreachable server shows on first use.
    pub fn new(url: &str, api_key: Option<String>, collection: &str) -> Result<Self, StoreError> {
        let client = Qdrant::from_url(url)
            .api_key(api_key)
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(10))
            // The version check is a blocking round trip that prints to stdout; skip it.
            .skip_compatibility_check()
            .build()
            .map_err(|e| backend("connect", e))?;
        Ok(Self {
            client,
            collection: collection.to_string(),
            layout: CollectionLayout::default(),
        })
    }

    /// The shards, replication and write consistency the collection is created with.
    pub fn with_layout(mut self, layout: CollectionLayout) -> Self {
        self.layout = layout;
        self
    }

    pub fn collection(&self) -> &str {
        &self.collection
    }

    /// Drops the collection, if it exists (for tests and tooling).
    pub async fn delete_collection(&self) -> Result<(), StoreError> {
        if self.exists().await? {
            self.client
                .delete_collection(self.collection.as_str())
                .await
                .map_err(|e| backend("delete collection", e))?;
        }
        Ok(())
    }

    async fn exists(&self) -> Result<bool, StoreError> {
        self.client
            .collection_exists(self.collection.as_str())
            .await
            .map_err(|e| backend("collection exists", e))
    }

    async fn info(&self) -> Result<GetCollectionInfoResponse, StoreError> {
        self.client
            .collection_info(self.collection.as_str())
            .await
            .map_err(|e| backend("collection info", e))
    }

    async fn create(&self, schema: IndexSchema) -> Result<(), StoreError> {
        let mut sparse = SparseVectorsConfigBuilder::default();
        sparse.add_named_vector_params(
            SPARSE_VECTOR,
            SparseVectorParamsBuilder::default().modifier(Modifier::Idf),
        );
        let mut request = CreateCollectionBuilder::new(self.collection.as_str())
            .sparse_vectors_config(sparse)
            .shard_number(self.layout.shards)
            .replication_factor(self.layout.replication_factor)
            .write_consistency_factor(self.layout.write_consistency);
        if let Some(dim) = schema.dense_dim {
            let mut dense = VectorsConfigBuilder::default();
            dense.add_named_vector_params(
                DENSE_VECTOR,
                VectorParamsBuilder::new(dim as u64, Distance::Cosine),
            );
            request = request.vectors_config(dense);
        }
        if let Err(e) = self.client.create_collection(request).await {
            // Another process may have created it meanwhile; that is fine if it matches.
            let info = self
                .info()
                .await
                .map_err(|_| backend("create collection", &e))?;
            if !matches_schema(&info, schema) {
                return Err(backend("create collection", e));
            }
        }
        Ok(())
    }

    /// Creates the keyword indexes the filters use, where missing.
    async fn ensure_indexes(
        &self,
        info: Option<&GetCollectionInfoResponse>,
    ) -> Result<(), StoreError> {
        for field in INDEXED_FIELDS {
            let present = info
                .and_then(|info| info.result.as_ref())
                .and_then(|result| result.payload_schema.get(field))
                .is_some_and(|s| s.data_type == PayloadSchemaType::Keyword as i32);
            if present {
                continue;
            }
            self.client
                .create_field_index(
                    CreateFieldIndexCollectionBuilder::new(
                        self.collection.as_str(),
                        field,
                        FieldType::Keyword,
                    )
                    .wait(true),
                )
                .await
                .map_err(|e| backend("create payload index", e))?;
        }
        Ok(())
    }
}

fn backend(operation: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("qdrant {operation}: {e}"))
}

/// Whether an existing collection has exactly the vectors `schema` asks for: the named dense
/// vector (size, cosine) only when there is a dense dimension, and the IDF-modified sparse one.
fn matches_schema(info: &GetCollectionInfoResponse, schema: IndexSchema) -> bool {
    let Some(params) = info
        .result
        .as_ref()
        .and_then(|r| r.config.as_ref())
        .and_then(|c| c.params.as_ref())
    else {
        return false;
    };
    let dense_ok = match params
        .vectors_config
        .as_ref()
        .and_then(|v| v.config.as_ref())
    {
        // An unnamed default vector is not this schema.
        Some(VectorsConfigKind::Params(_)) => false,
        Some(VectorsConfigKind::ParamsMap(map)) => match schema.dense_dim {
            Some(dim) => {
                map.map.len() == 1
                    && map.map.get(DENSE_VECTOR).is_some_and(|v| {
                        v.size == dim as u64 && v.distance == Distance::Cosine as i32
                    })
            }
            None => map.map.is_empty(),
        },
        None => schema.dense_dim.is_none(),
    };
    let sparse_ok = params.sparse_vectors_config.as_ref().is_some_and(|s| {
        s.map.len() == 1
            && s.map
                .get(SPARSE_VECTOR)
                .is_some_and(|v| v.modifier == Some(Modifier::Idf as i32))
    });
    dense_ok && sparse_ok
}

/// An exact keyword match. (`Condition::matches` with a `String` would turn a value with a
/// space into a full-text match.)
fn keyword(field: &str, value: &str) -> Condition {
    Condition::matches(field, MatchValue::Keyword(value.to_string()))
}

/// The search filter, the same as `store::filter_json`: the course when given, and course
/// material (no `learner`) plus, when a learner is given, that learner's own files.
fn scope_filter(course: Option<&str>, learner: Option<&str>) -> Filter {
    let mut must = Vec::new();
    if let Some(course) = course {
        must.push(keyword("course", course));
    }
    match learner {
        None => must.push(Condition::is_empty("learner")),
        Some(learner) => must.push(Condition::from(Filter::should([
            Condition::is_empty("learner"),
            keyword("learner", learner),
        ]))),
    }
    Filter::must(must)
}

/// The chunks of one source file: course material, or one learner's.
fn source_filter(source: &str, learner: Option<&str>) -> Filter {
    Filter::must([
        keyword("source", source),
        match learner {
            Some(learner) => keyword("learner", learner),
            None => Condition::is_empty("learner"),
        },
    ])
}

fn point_struct(point: &IndexedPoint) -> Result<PointStruct, StoreError> {
    let mut vectors = NamedVectors::default().add_vector(
        SPARSE_VECTOR,
        Vector::new_sparse(point.sparse.indices.clone(), point.sparse.values.clone()),
    );
    if let Some(dense) = &point.dense {
        vectors = vectors.add_vector(DENSE_VECTOR, Vector::new_dense(dense.clone()));
    }
    let payload =
        Payload::try_from(payload(point)).map_err(|e| StoreError::Payload(e.to_string()))?;
    Ok(PointStruct::new(point.id, vectors, payload))
}

fn hit(point: qdrant_client::qdrant::ScoredPoint) -> Result<Hit, StoreError> {
    let id = match point.id.and_then(|id| id.point_id_options) {
        Some(PointIdOptions::Num(n)) => n,
        // Never written by this store; the embedded store reads these as 0 too.
        Some(PointIdOptions::Uuid(_)) | None => 0,
    };
    let map: serde_json::Map<String, serde_json::Value> = point
        .payload
        .into_iter()
        .map(|(key, value)| (key, value.into_json()))
        .collect();
    let (chunk, learner) = from_payload(map)?;
    Ok(Hit {
        id,
        score: point.score,
        chunk,
        learner,
    })
}

#[async_trait]
impl VectorStore for QdrantStore {
    async fn prepare(&self, schema: IndexSchema, reset: bool) -> Result<(), StoreError> {
        let info = if self.exists().await? {
            let info = self.info().await?;
            if reset || !matches_schema(&info, schema) {
                if !reset {
                    tracing::warn!(
                        collection = %self.collection,
                        "index collection does not match the schema, recreating it"
                    );
                }
                self.delete_collection().await?;
                None
            } else {
                Some(info)
            }
        } else {
            None
        };
        if info.is_none() {
            self.create(schema).await?;
        }
        self.ensure_indexes(info.as_ref()).await
    }

    async fn upsert(&self, points: Vec<IndexedPoint>) -> Result<(), StoreError> {
        for batch in points.chunks(UPSERT_BATCH) {
            let structs = batch
                .iter()
                .map(point_struct)
                .collect::<Result<Vec<_>, _>>()?;
            self.client
                .upsert_points(
                    UpsertPointsBuilder::new(self.collection.as_str(), structs).wait(true),
                )
                .await
                .map_err(|e| backend("upsert", e))?;
        }
        Ok(())
    }

    async fn delete_source(&self, source: &str, learner: Option<&str>) -> Result<(), StoreError> {
        self.client
            .delete_points(
                DeletePointsBuilder::new(self.collection.as_str())
                    .points(source_filter(source, learner))
                    .wait(true),
            )
            .await
            .map_err(|e| backend("delete", e))?;
        Ok(())
    }

    async fn delete_learner(&self, learner: &str) -> Result<(), StoreError> {
        self.client
            .delete_points(
                DeletePointsBuilder::new(self.collection.as_str())
                    .points(Filter::must([keyword("learner", learner)]))
                    .wait(true),
            )
            .await
            .map_err(|e| backend("delete", e))?;
        Ok(())
    }

    async fn search(&self, query: SearchQuery) -> Result<Vec<Hit>, StoreError> {
        // The server reads a limit of 0 as "default"; the embedded store returns nothing.
        if query.limit == 0 {
            return Ok(Vec::new());
        }
        let filter = scope_filter(query.course.as_deref(), query.learner.as_deref());
        let mut retrievers: Vec<(&str, VectorInput)> = Vec::new();
        if let Some(sparse) = &query.sparse
            && !sparse.indices.is_empty()
        {
            retrievers.push((
                SPARSE_VECTOR,
                VectorInput::new_sparse(sparse.indices.clone(), sparse.values.clone()),
            ));
        }
        if let Some(dense) = &query.dense {
            retrievers.push((DENSE_VECTOR, VectorInput::new_dense(dense.clone())));
        }
        let mut request = QueryPointsBuilder::new(self.collection.as_str())
            .filter(filter.clone())
            .limit(query.limit as u64)
            .with_payload(true)
            .with_vectors(false);
        request = match retrievers.len() {
            0 => return Ok(Vec::new()),
            1 => {
                let (name, vector) = retrievers.pop().expect("one retriever");
                request.query(Query::new_nearest(vector)).using(name)
            }
            _ => {
                if query.candidates == 0 {
                    return Ok(Vec::new());
                }
                for (name, vector) in retrievers {
                    request = request.add_prefetch(
                        PrefetchQueryBuilder::default()
                            .query(Query::new_nearest(vector))
                            .using(name)
                            .filter(filter.clone())
                            .limit(query.candidates as u64),
                    );
                }
                request.query(Query::new_rrf(RrfBuilder::with_k(RRF_K)))
            }
        };
        let response = self
            .client
            .query(request)
            .await
            .map_err(|e| backend("query", e))?;
        response.result.into_iter().map(hit).collect()
    }

    async fn count(&self) -> Result<usize, StoreError> {
        let response = self
            .client
            .count(CountPointsBuilder::new(self.collection.as_str()).exact(true))
            .await
            .map_err(|e| backend("count", e))?;
        Ok(response.result.map_or(0, |r| r.count as usize))
    }

    /// Writes are durable once a `wait`ed request returns and the server builds its indexes in
    /// the background, so this only reports a collection the server marks as failed.
    async fn commit(&self) -> Result<(), StoreError> {
        let info = self.info().await?;
        if let Some(result) = info.result
            && result.status == CollectionStatus::Red as i32
        {
            let detail = result.optimizer_status.map(|s| s.error).unwrap_or_default();
            return Err(StoreError::Backend(format!(
                "qdrant collection {} is in error: {detail}",
                self.collection
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde_json::Value as Json;

    use super::super::store::filter_json;
    use super::*;

    /// Reads the JSON filter shape `filter_json` writes, to check `scope_filter` against it.
    fn filter_of(json: &Json) -> Filter {
        let conditions = |key: &str| -> Vec<Condition> {
            json.get(key)
                .and_then(Json::as_array)
                .map(|items| items.iter().map(condition_of).collect())
                .unwrap_or_default()
        };
        let mut filter = Filter::must(conditions("must"));
        filter.should = conditions("should");
        filter.must_not = conditions("must_not");
        filter
    }

    fn condition_of(json: &Json) -> Condition {
        if let Some(is_empty) = json.get("is_empty") {
            return Condition::is_empty(is_empty["key"].as_str().expect("is_empty key"));
        }
        if let (Some(key), Some(m)) = (json.get("key"), json.get("match")) {
            return keyword(
                key.as_str().expect("match key"),
                m["value"].as_str().expect("keyword value"),
            );
        }
        Condition::from(filter_of(json))
    }

    #[test]
    fn scope_filter_is_the_shared_json_filter() {
        for course in [None, Some("python foundations")] {
            for learner in [None, Some("ada")] {
                assert_eq!(
                    scope_filter(course, learner),
                    filter_of(&filter_json(course, learner)),
                    "course {course:?}, learner {learner:?}"
                );
            }
        }
    }

    #[test]
    fn values_with_spaces_stay_keyword_matches() {
        let filter = source_filter("notes/my file.md", Some("ada"));
        let text = format!("{filter:?}");
        assert!(text.contains("Keyword(\"notes/my file.md\")"), "{text}");
    }

    #[test]
    fn schema_check_wants_exactly_the_schema_vectors() {
        use qdrant_client::qdrant::{
            CollectionConfig, CollectionInfo, CollectionParams, SparseVectorConfig,
            SparseVectorParams, VectorParamsMap, VectorsConfig,
        };
        let info = |dense: Option<(&str, u64, Distance)>, modifier: Option<Modifier>| {
            let map: HashMap<_, _> = dense
                .map(|(name, size, distance)| {
                    (
                        name.to_string(),
                        VectorParamsBuilder::new(size, distance).build(),
                    )
                })
                .into_iter()
                .collect();
            GetCollectionInfoResponse {
                result: Some(CollectionInfo {
                    config: Some(CollectionConfig {
                        params: Some(CollectionParams {
                            vectors_config: Some(VectorsConfig {
                                config: Some(VectorsConfigKind::ParamsMap(VectorParamsMap { map })),
                            }),
                            sparse_vectors_config: Some(SparseVectorConfig {
                                map: HashMap::from([(
                                    SPARSE_VECTOR.to_string(),
                                    SparseVectorParams {
                                        index: None,
                                        modifier: modifier.map(|m| m as i32),
                                    },
                                )]),
                            }),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                time: 0.0,
            }
        };
        let with_dense = |dim| IndexSchema {
            dense_dim: Some(dim),
        };
        let bm25_only = IndexSchema { dense_dim: None };
        let cosine4 = info(
            Some((DENSE_VECTOR, 4, Distance::Cosine)),
            Some(Modifier::Idf),
        );
        assert!(matches_schema(&cosine4, with_dense(4)));
        assert!(!matches_schema(&cosine4, with_dense(8)));
        assert!(!matches_schema(&cosine4, bm25_only));
        let dot4 = info(Some((DENSE_VECTOR, 4, Distance::Dot)), Some(Modifier::Idf));
        assert!(!matches_schema(&dot4, with_dense(4)));
        let other_name = info(Some(("other", 4, Distance::Cosine)), Some(Modifier::Idf));
        assert!(!matches_schema(&other_name, with_dense(4)));
        let sparse_only = info(None, Some(Modifier::Idf));
        assert!(matches_schema(&sparse_only, bm25_only));
        assert!(!matches_schema(&sparse_only, with_dense(4)));
        let no_idf = info(None, None);
        assert!(!matches_schema(&no_idf, bm25_only));
    }
}
