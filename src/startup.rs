//! Start-up: builds every backend from [`Settings`], binds first (port 0 works), indexes the
//! content in the background, serves, and shuts down gracefully.
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{TokenKeys, resolve_secret};
use crate::chat::ChatDeps;
use crate::config::{EmbeddingProvider, IndexSettings, Settings};
use crate::http::{self, AppState, RateLimiter, pages::CoursePages};
use crate::llm::{Llm, openai::OpenAiLlm};
use crate::prompt::{Budget, Prompts};
use crate::retrieval::Retriever;
use crate::retrieval::chunk::ChunkSizes;
use crate::retrieval::edge_store::EdgeStore;
use crate::retrieval::embed::{DenseEmbedder, EmbedError};
use crate::retrieval::ingest::{IngestOptions, ingest};
use crate::retrieval::minilm::MiniLm;
use crate::retrieval::openai_embed::OpenAiEmbedder;
use crate::retrieval::qdrant_store::QdrantStore;
use crate::retrieval::store::VectorStore;
use crate::store::Store;
use secrecy::ExposeSecret;

pub struct Application {
    listener: TcpListener,
    state: AppState,
    settings: Settings,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        settings
            .ensure_data_dir()
            .with_context(|| format!("cannot create data dir {}", settings.data_dir.display()))?;
        let secret = resolve_secret(settings.auth.secret.as_ref(), &settings.data_dir)?;
        let keys = TokenKeys::new(&secret, settings.auth.leeway_secs);
        let store = Store::connect(&settings.database.url, settings.database.max_connections)
            .await
            .with_context(|| "cannot open the transcript database")?;
        let interrupted = store.mark_interrupted().await?;
        if interrupted > 0 {
            tracing::warn!(
                interrupted,
                "answers left unfinished by the last run are marked interrupted"
            );
        }
        let retriever = build_retriever(&settings).await?;
        let llm: Option<Arc<dyn Llm>> = settings
            .llm
            .as_ref()
            .map(|llm| Arc::new(OpenAiLlm::new(llm)) as Arc<dyn Llm>);
        match &settings.llm {
            Some(llm) => {
                tracing::info!(base_url = %llm.base_url, model = %llm.model, "llm configured")
            }
            None => tracing::warn!("no LLM endpoint configured: answering in offline mode"),
        }
        let prompts = Prompts::builtin()?;
        let pages = CoursePages::load(&settings.content.dir, settings.content.max_file_bytes);
        let listener = TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("cannot listen on {}", settings.listen))?;
        let moderation = settings.moderation.as_ref().map(|m| {
            tracing::info!(base_url = %m.base_url, model = %m.model, "moderation endpoint configured");
            crate::review::flags::Moderation::new(
                &m.base_url,
                m.api_key.expose_secret(),
                &m.model,
                m.timeout,
            )
        });
        let flagger = Arc::new(crate::review::flags::Flagger::new(
            store.clone(),
            moderation,
        ));
        // One pool behind every handle: the turn's and the digest's seams, and the review.
        let store = Arc::new(store);
        let projects = Arc::new(crate::project::Projects::new(
            store.clone(),
            retriever.clone(),
            settings.projects.clone(),
            settings.content.dir.clone(),
        ));
        let state = AppState {
            chat: ChatDeps {
                store: store.clone(),
                learners: store.clone(),
                flagger: Some(flagger),
                retriever,
                llm,
                prompts: Arc::new(prompts),
                projects,
                budget: budget(&settings),
                top_k: settings.retrieval.top_k,
                temperature: settings.llm.as_ref().map_or(0.3, |l| l.temperature),
            },
            keys: Arc::new(keys),
            limits: settings.limits.clone(),
            demo: settings.demo.clone(),
            pages: Arc::new(pages),
            ready: Arc::new(AtomicBool::new(false)),
            turns: TaskTracker::new(),
            shutdown: CancellationToken::new(),
            turn_shutdown: CancellationToken::new(),
            rate: Arc::new(RateLimiter::new(settings.limits.asks_per_minute)),
            review: store,
        };
        Ok(Self {
            listener,
            state,
            settings,
        })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Serves until `signal` completes, then drains: no new questions, answers in flight get
    /// the grace period, the rest are stored as interrupted, the store is closed.
    pub async fn run_until(
        self,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Self {
            listener,
            state,
            settings,
        } = self;
        let addr = listener.local_addr()?;
        tracing::info!(%addr, "listening");
        println!("companion listening on http://{addr}");
        let ingest_state = state.clone();
        let ingest_settings = settings.clone();
        tokio::spawn(async move {
            match index_content(&ingest_state.chat.retriever, &ingest_settings, false).await {
                Ok(report) => {
                    tracing::info!(
                        indexed = report.files_indexed,
                        unchanged = report.files_unchanged,
                        removed = report.files_removed,
                        skipped = report.skipped.len(),
                        chunks = report.chunks_written,
                        elapsed_ms = report.elapsed_ms,
                        "content indexed"
                    );
                    for (file, reason) in &report.skipped {
                        tracing::warn!(%file, %reason, "content file skipped");
                    }
                    // A rebuilt index starts empty: learners' private files go back in.
                    if report.rebuilt {
                        match ingest_state.chat.projects.reindex_all().await {
                            Ok(0) => {}
                            Ok(chunks) => {
                                tracing::info!(chunks, "learners' project files indexed again")
                            }
                            Err(error) => {
                                tracing::error!(%error, "cannot index learners' project files again")
                            }
                        }
                    }
                    ingest_state.ready.store(true, Ordering::Release);
                }
                Err(error) => tracing::error!(%error, "indexing failed; the service stays unready"),
            }
        });
        if let Some(keep_for) = settings.retention.keep_for {
            tokio::spawn(purge_old_transcripts(
                state.review.clone(),
                keep_for,
                settings.retention.purge_every,
                state.shutdown.clone(),
            ));
        }
        let shutdown = state.shutdown.clone();
        tokio::spawn(async move {
            signal.await;
            shutdown.cancel();
        });
        let app = http::router(state.clone());
        let serve_shutdown = state.shutdown.clone();
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { serve_shutdown.cancelled().await })
                .await
        });
        state.shutdown.cancelled().await;
        tracing::info!("shutting down: letting answers in flight finish");
        state.turns.close();
        if tokio::time::timeout(settings.shutdown_grace, state.turns.wait())
            .await
            .is_err()
        {
            tracing::warn!("grace period over: storing unfinished answers as interrupted");
            state.turn_shutdown.cancel();
            let _ =
                tokio::time::timeout(std::time::Duration::from_secs(5), state.turns.wait()).await;
        }
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), server).await;
        state.review.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// The prompt's token budget from settings, counted with the configured model's tokenizer.
fn budget(settings: &Settings) -> Budget {
    let context = &settings.context;
    Budget {
        max_question_tokens: context.question_tokens,
        parts: crate::prompt::PartBudgets {
            profile: context.profile_tokens,
            mentor: context.mentor_tokens,
            brief: context.brief_tokens,
            snippets: context.snippet_tokens,
            passages: context.passage_tokens,
            history: context.history_tokens,
        },
        ..Budget::new(
            settings.llm_context_window,
            settings.llm_max_answer_tokens,
            &settings.llm_model,
        )
    }
}

/// Retention: purges conversations untouched for `keep_for`, now and every `every`, until
/// shutdown. A failed purge is logged and tried again next time.
async fn purge_old_transcripts(
    review: Arc<Store>,
    keep_for: std::time::Duration,
    every: std::time::Duration,
    shutdown: CancellationToken,
) {
    let mut ticks = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let cutoff = crate::transcript::now_ms() - keep_for.as_millis() as i64;
        match review.purge_before(cutoff).await {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, "old conversations purged (retention)"),
            Err(error) => tracing::warn!(%error, "retention purge failed"),
        }
    }
}

/// The retriever from settings: the vector store backend and the dense embedder.
pub async fn build_retriever(settings: &Settings) -> anyhow::Result<Retriever> {
    let store: Arc<dyn VectorStore> = match &settings.index {
        IndexSettings::Edge { path } => Arc::new(EdgeStore::new(path.clone())),
        IndexSettings::Qdrant {
            url,
            api_key,
            collection,
        } => Arc::new(
            QdrantStore::new(
                url,
                api_key.as_ref().map(|k| k.expose_secret().to_string()),
                collection,
            )
            .with_context(|| format!("cannot set up the Qdrant client for {url}"))?,
        ),
    };
    let dense = build_dense(settings)?;
    Ok(Retriever::new(
        store,
        dense,
        settings.retrieval.mode,
        settings.retrieval.candidates,
    ))
}

/// The dense embedder from settings. A missing local model is fatal unless
/// `embedding.allow_bm25_fallback` is set, in which case the service runs on BM25 alone.
pub fn build_dense(settings: &Settings) -> anyhow::Result<Option<Arc<dyn DenseEmbedder>>> {
    match &settings.embedding.provider {
        EmbeddingProvider::None => Ok(None),
        EmbeddingProvider::Local { model_dir } => match MiniLm::load(model_dir) {
            Ok(model) => {
                tracing::info!(dir = %model_dir.display(), "dense embedder: all-MiniLM-L6-v2 in-process");
                Ok(Some(Arc::new(model)))
            }
            Err(error @ EmbedError::ModelMissing { .. })
                if settings.embedding.allow_bm25_fallback =>
            {
                tracing::warn!(%error, "serving with BM25 only (embedding.allow_bm25_fallback = true)");
                eprintln!("warning: {error}; serving with BM25 only");
                Ok(None)
            }
            Err(error) => Err(anyhow::anyhow!(
                "{error} (or set embedding.provider = \"none\", or embedding.allow_bm25_fallback = true)"
            )),
        },
        EmbeddingProvider::OpenAi { model, dimensions } => {
            let Some(llm) = &settings.llm else {
                anyhow::bail!(
                    "embedding.provider \"openai\" needs an endpoint: set llm.base_url or OPENAI_BASE_URL"
                );
            };
            Ok(Some(Arc::new(OpenAiEmbedder::new(
                &llm.base_url,
                llm.api_key.expose_secret(),
                model,
                *dimensions,
            ))))
        }
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

/// Ingests the configured content folder.
pub async fn index_content(
    retriever: &Retriever,
    settings: &Settings,
    progress: bool,
) -> anyhow::Result<crate::retrieval::ingest::IngestReport> {
    index_dir(retriever, settings, &settings.content.dir, progress, false).await
}

pub async fn index_dir(
    retriever: &Retriever,
    settings: &Settings,
    dir: &std::path::Path,
    progress: bool,
    rebuild: bool,
) -> anyhow::Result<crate::retrieval::ingest::IngestReport> {
    let manifest_path = settings.data_dir.join("index-manifest.json");
    Ok(ingest(
        retriever,
        IngestOptions {
            content_dir: dir,
            manifest_path,
            sizes: ChunkSizes {
                max_tokens: settings.content.chunk_tokens,
                overlap_tokens: settings.content.chunk_overlap_tokens,
            },
            max_file_bytes: settings.content.max_file_bytes,
            progress,
            rebuild,
        },
    )
    .await?)
}
