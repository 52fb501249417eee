//! Index set-up shared by the service and the tools (`ingest`, `eval`, `bench`): the retriever
//! built from settings (vector store backend and dense embedder), content folders ingested into
//! it, learners' project files indexed again. Knows nothing of HTTP, so the tools do not pull it.
use std::sync::Arc;

use anyhow::Context;
use secrecy::ExposeSecret;

use crate::config::{EmbeddingProvider, FlagsModel, IndexSettings, Settings};
use crate::retrieval::Retriever;
use crate::retrieval::chunk::ChunkSizes;
use crate::retrieval::e5::E5;
use crate::retrieval::edge_store::EdgeStore;
use crate::retrieval::embed::{DenseEmbedder, EmbedError};
use crate::retrieval::embed_memo::MemoEmbedder;
use crate::retrieval::fusion::FusionWeights;
use crate::retrieval::ingest::{IngestOptions, Manifest, ingest};
use crate::retrieval::minilm::MiniLm;
use crate::retrieval::openai_embed::OpenAiEmbedder;
use crate::retrieval::qdrant_store::QdrantStore;
use crate::retrieval::store::VectorStore;
use crate::store::Store;

/// The retriever from settings: the vector store backend and the dense embedder.
pub async fn build_retriever(settings: &Settings) -> anyhow::Result<Retriever> {
    let store: Arc<dyn VectorStore> = match &settings.index {
        IndexSettings::Edge { path } => Arc::new(EdgeStore::new(path.clone())),
        IndexSettings::Qdrant {
            url,
            api_key,
            collection,
            layout,
        } => Arc::new(
            QdrantStore::new(
                url,
                api_key.as_ref().map(|k| k.expose_secret().to_string()),
                collection,
            )
            .with_context(|| format!("cannot set up the Qdrant client for {url}"))?
            .with_layout(*layout),
        ),
    };
    // Shared with the flag classifier, which reads the same question: embedded once.
    let dense = build_dense(settings)?
        .map(|inner| Arc::new(MemoEmbedder::new(inner)) as Arc<dyn DenseEmbedder>);
    Ok(Retriever::new(
        store,
        dense,
        settings.retrieval.mode,
        settings.retrieval.candidates,
    )
    .with_fusion(FusionWeights::dense_share(settings.retrieval.dense_weight)))
}

/// The dense embedder from settings. A missing local model is fatal unless
/// `embedding.allow_bm25_fallback` is set, in which case the service runs on BM25 alone.
pub fn build_dense(settings: &Settings) -> anyhow::Result<Option<Arc<dyn DenseEmbedder>>> {
    match &settings.embedding.provider {
        EmbeddingProvider::None => Ok(None),
        EmbeddingProvider::Local { model_dir } => in_process(
            settings,
            MiniLm::load(model_dir).map(|m| Arc::new(m) as Arc<dyn DenseEmbedder>),
            "all-MiniLM-L6-v2",
        ),
        EmbeddingProvider::E5 { dir } => in_process(
            settings,
            E5::load(dir).map(|m| Arc::new(m) as Arc<dyn DenseEmbedder>),
            "multilingual-e5-small",
        ),
        EmbeddingProvider::OpenAi {
            model,
            dimensions,
            base_url,
            api_key,
            input_type,
        } => {
            let llm = settings.llm.as_ref();
            let Some(endpoint) = base_url.as_deref().or(llm.map(|l| l.base_url.as_str())) else {
                anyhow::bail!(
                    "embedding.provider \"openai\" needs an endpoint: set embedding.openai_base_url, llm.base_url or OPENAI_BASE_URL"
                );
            };
            let key = api_key
                .as_ref()
                .or(llm.map(|l| &l.api_key))
                .map_or("unused", |k| k.expose_secret());
            tracing::info!(
                endpoint,
                model,
                "dense embedder: an OpenAI-compatible endpoint"
            );
            Ok(Some(Arc::new(
                OpenAiEmbedder::new(endpoint, key, model, *dimensions)
                    .sending_input_type(*input_type),
            )))
        }
    }
}

/// An in-process model as loaded: a missing one means BM25 alone where
/// `embedding.allow_bm25_fallback` allows it.
fn in_process(
    settings: &Settings,
    loaded: Result<Arc<dyn DenseEmbedder>, EmbedError>,
    name: &str,
) -> anyhow::Result<Option<Arc<dyn DenseEmbedder>>> {
    match loaded {
        Ok(model) => {
            tracing::info!(model = name, "dense embedder in-process");
            Ok(Some(model))
        }
        Err(error @ EmbedError::ModelMissing { .. }) if settings.embedding.allow_bm25_fallback => {
            tracing::warn!(%error, "serving with BM25 only (embedding.allow_bm25_fallback = true)");
            eprintln!("warning: {error}; serving with BM25 only");
            Ok(None)
        }
        Err(error) => Err(anyhow::anyhow!(
            "{error} (or set embedding.provider = \"none\", or embedding.allow_bm25_fallback = true)"
        )),
    }
}

/// The embedder the flag classifier reads learners' messages with (`embedding.flags_model`):
/// multilingual-e5-small when configured and its file is present, otherwise the retrieval's
/// dense embedder (if any), saying so in the log. `retrieval` is asked for only when it is
/// used: when retrieval runs on the same e5 file (one model in memory, not two) or as the
/// fallback.
pub fn build_flags_embedder(
    settings: &Settings,
    retrieval: impl FnOnce() -> anyhow::Result<Option<Arc<dyn DenseEmbedder>>>,
) -> anyhow::Result<Option<Arc<dyn DenseEmbedder>>> {
    let FlagsModel::E5 { dir } = &settings.embedding.flags_model else {
        return retrieval();
    };
    if matches!(&settings.embedding.provider, EmbeddingProvider::E5 { dir: same } if same == dir) {
        return retrieval();
    }
    match E5::load(dir) {
        Ok(model) => {
            tracing::info!(dir = %dir.display(), kernel = model.kernel().name(), "flags read with multilingual-e5-small in-process");
            Ok(Some(Arc::new(model)))
        }
        Err(error @ EmbedError::ModelMissing { .. }) => {
            tracing::warn!(%error, "flags read with the retrieval embedder (embedding.flags_model = \"e5\")");
            retrieval()
        }
        Err(error) => Err(anyhow::anyhow!(
            "{error} (or set embedding.flags_model = \"retrieval\")"
        )),
    }
}

/// Indexes every learner's project files again, into `retriever`'s store (after a rebuild
/// emptied it); the number of chunks written.
pub async fn reindex_projects(settings: &Settings, retriever: &Retriever) -> anyhow::Result<usize> {
    let store = Arc::new(
        Store::connect(&settings.database.url, settings.database.max_connections)
            .await
            .with_context(|| "cannot open the transcript database")?,
    );
    let projects = crate::project::Projects::new(
        store.clone(),
        retriever.clone(),
        settings.projects.clone(),
        settings.content.dir.clone(),
    );
    let chunks = projects.reindex_all().await?;
    store.close().await;
    Ok(chunks)
}

/// For a tool run beside the nodes (`companion ingest`): the database that holds a shared
/// index's manifest and lock, when the index is a Qdrant server; `None` for an embedded one.
pub async fn shared_database(settings: &Settings) -> anyhow::Result<Option<Store>> {
    if !matches!(settings.index, IndexSettings::Qdrant { .. }) {
        return Ok(None);
    }
    let store = Store::connect(&settings.database.url, 2)
        .await
        .with_context(|| "cannot open the database that records the shared index")?;
    Ok(Some(store))
}

/// Ingests the configured content folder (see [`index_dir`] for `database`).
pub async fn index_content(
    retriever: &Retriever,
    settings: &Settings,
    progress: bool,
    database: Option<(&Store, &str)>,
) -> anyhow::Result<crate::retrieval::ingest::IngestReport> {
    index_dir(
        retriever,
        settings,
        &settings.content.dir,
        progress,
        false,
        database,
    )
    .await
}

/// Ingests `dir` into `retriever`'s store (every file again when `rebuild`), with a progress
/// bar when `progress`.
///
/// An embedded index keeps its manifest beside it in the data dir. A Qdrant server's collection
/// is shared by every node: given the shared `database` (and this node's name), its manifest
/// is kept there and the ingest holds the database's lock on the collection, so nodes starting
/// together index once (the others wait, then find it up to date) and a node with an empty data
/// dir never rebuilds what the others serve.
pub async fn index_dir(
    retriever: &Retriever,
    settings: &Settings,
    dir: &std::path::Path,
    progress: bool,
    rebuild: bool,
    database: Option<(&Store, &str)>,
) -> anyhow::Result<crate::retrieval::ingest::IngestReport> {
    let shared = match (&settings.index, database) {
        (IndexSettings::Qdrant { collection, .. }, Some((store, node))) => {
            Some((store, node, collection.as_str()))
        }
        _ => None,
    };
    let options = |manifest| IngestOptions {
        content_dir: dir,
        manifest,
        sizes: ChunkSizes {
            max_tokens: settings.content.chunk_tokens,
            overlap_tokens: settings.content.chunk_overlap_tokens,
        },
        max_file_bytes: settings.content.max_file_bytes,
        progress,
        rebuild,
    };
    let Some((store, node, collection)) = shared else {
        let path = settings.data_dir.join("index-manifest.json");
        let (report, manifest) = ingest(retriever, options(Manifest::read(&path)?)).await?;
        manifest.write(&path)?;
        return Ok(report);
    };
    let lock = store
        .lock_index(collection)
        .await
        .context("cannot take the shared index's lock")?;
    let recorded = store
        .index_manifest(collection)
        .await
        .context("cannot read the shared index's manifest")?;
    let manifest = recorded
        .as_deref()
        .map(Manifest::from_json)
        .unwrap_or_default();
    let outcome = ingest(retriever, options(manifest)).await;
    let saved = match &outcome {
        Ok((_, manifest)) => store
            .save_index_manifest(collection, &manifest.to_json(), node)
            .await
            .context("cannot record the shared index's manifest"),
        Err(_) => Ok(()),
    };
    lock.release().await;
    saved?;
    Ok(outcome?.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_retriever_fuses_with_the_configured_dense_weight() {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = Settings::defaults(dir.path());
        settings.embedding.provider = EmbeddingProvider::None;
        assert_eq!(
            build_retriever(&settings).await.unwrap().fusion(),
            FusionWeights::dense_share(0.5)
        );
        settings.retrieval.dense_weight = 0.7;
        let fusion = build_retriever(&settings).await.unwrap().fusion();
        assert_eq!(fusion.dense, 0.7);
        assert!((fusion.sparse - 0.3).abs() < 1e-6, "{fusion:?}");
    }

    #[test]
    fn an_embeddings_endpoint_of_its_own_needs_no_llm() {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = Settings::defaults(dir.path());
        settings.llm = None;
        let provider = |base_url: Option<&str>| EmbeddingProvider::OpenAi {
            model: "multilingual-e5-small".into(),
            dimensions: 384,
            base_url: base_url.map(String::from),
            api_key: None,
            input_type: true,
        };
        settings.embedding.provider = provider(None);
        let err = build_dense(&settings).err().expect("no endpoint at all");
        assert!(
            err.to_string().contains("embedding.openai_base_url"),
            "{err}"
        );
        settings.embedding.provider = provider(Some("http://127.0.0.1:9/v1"));
        let dense = build_dense(&settings).unwrap().expect("an embedder");
        assert_eq!(dense.id(), "openai:multilingual-e5-small:384:typed");
    }

    #[test]
    fn flags_on_the_retrieval_s_own_e5_file_reuse_its_model() {
        let dir = tempfile::tempdir().unwrap();
        // A file that does not load: only a second load of it could fail.
        std::fs::write(crate::retrieval::e5::model_path(dir.path()), b"not a model").unwrap();
        let mut settings = Settings::defaults(dir.path());
        let e5 = dir.path().to_path_buf();
        settings.embedding.flags_model = FlagsModel::E5 { dir: e5.clone() };
        let err = build_flags_embedder(&settings, || Ok(None)).err();
        assert!(
            err.is_some(),
            "a file of its own is loaded, and this one fails"
        );
        settings.embedding.provider = EmbeddingProvider::E5 { dir: e5 };
        let asked = std::cell::Cell::new(false);
        let reused = build_flags_embedder(&settings, || {
            asked.set(true);
            Ok(None)
        });
        assert!(reused.unwrap().is_none() && asked.get());
    }

    /// The tools build their index through this module, so none of the three may reach the
    /// HTTP stack (the names are spelled in pieces so this test does not find itself).
    #[test]
    fn index_eval_and_bench_do_not_import_http_or_startup() {
        let banned = [
            concat!("crate::", "http"),
            concat!("crate::", "startup"),
            concat!("ax", "um::"),
        ];
        for (file, text) in [
            ("index.rs", include_str!("index.rs")),
            ("eval.rs", include_str!("eval.rs")),
            ("bench.rs", include_str!("bench.rs")),
        ] {
            for name in banned {
                assert!(!text.contains(name), "{file} mentions {name}");
            }
        }
    }
}
