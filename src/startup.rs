//! Start-up: builds every backend from [`Settings`], binds first (port 0 works), indexes the
//! content in the background, serves, and shuts down gracefully.
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{TokenKeys, TokenPolicy, resolve_secret};
use crate::chat::ChatDeps;
use crate::config::Settings;
use crate::http::{self, AppState, pages::CoursePages};
use crate::index::{build_retriever, index_content};
use crate::llm::resilient::{Policy, Resilient};
use crate::llm::{Llm, openai::OpenAiLlm};
use crate::prompt::{Budget, Prompts};
use crate::store::Store;
use secrecy::ExposeSecret;

pub struct Application {
    listener: TcpListener,
    state: AppState,
    settings: Settings,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        // Settings built in Rust skip `Settings::load`: the demo's exposure is checked again.
        settings.check_demo_exposure()?;
        settings
            .ensure_data_dir()
            .with_context(|| format!("cannot create data dir {}", settings.data_dir.display()))?;
        let keys = token_keys(&settings)?;
        let store = Store::connect_with(
            &settings.database.url,
            settings.database.max_connections,
            settings.database.acquire_timeout,
        )
        .await
        .with_context(|| "cannot open the transcript database")?;
        let owner = answer_owner(&settings);
        tracing::info!(node_id = %owner.node_id, "this node's id on the answers it streams");
        // Only answers no live node is writing: another node's, on the same database, keep
        // their fresh heartbeat and are left alone.
        let mut interrupted = store.interrupt_stale(owner.stale_before_ms()).await?;
        if settings.transcripts.node_id.is_some() {
            // A stable id: what this node left streaming in an earlier run is orphaned now.
            interrupted += store.interrupt_node(&owner.node_id).await?;
        }
        if interrupted > 0 {
            tracing::warn!(
                interrupted,
                "answers left unfinished by a stopped node are marked interrupted"
            );
        }
        let retriever = build_retriever(&settings).await?;
        // Every call keeps to the retry, deadline and token-cap policy of the settings.
        let llm: Option<Arc<dyn Llm>> = settings.llm.as_ref().map(|llm| {
            Arc::new(Resilient::new(
                Arc::new(OpenAiLlm::new(llm)),
                Policy::from_settings(llm),
                crate::retrieval::chunk::count_tokens,
            )) as Arc<dyn Llm>
        });
        match &settings.llm {
            Some(llm) => {
                tracing::info!(base_url = %llm.base_url, model = %llm.model, "llm configured")
            }
            None => tracing::warn!("no LLM endpoint configured: answering in offline mode"),
        }
        let prompts = Prompts::builtin()?;
        // A broken policy stops the start: a course would otherwise run without its rules.
        let policies = Arc::new(
            crate::guard::policy::Policies::load(&settings.content.dir)
                .context("cannot load the course policies")?,
        );
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
        let mut flagger = crate::review::flags::Flagger::new(store.clone(), moderation);
        // Intent read against labelled examples with the multilingual model (or the retrieval
        // embedder); keyword rules alone without either. The bank is embedded in the
        // background, before the first question.
        if let Some(embedder) =
            crate::index::build_flags_embedder(&settings, || Ok(retriever.dense().cloned()))?
        {
            let intents = Arc::new(crate::review::intent::Intents::builtin(embedder)?);
            let warming = intents.clone();
            tokio::spawn(async move {
                if let Err(error) = warming.warm_up().await {
                    tracing::warn!(%error, "cannot embed the intent examples");
                }
            });
            flagger = flagger.with_intents(intents);
        }
        let flagger = Arc::new(flagger);
        // One pool behind every handle: the turn's and the digest's seams, and the review.
        let store = Arc::new(store);
        let projects = Arc::new(
            crate::project::Projects::new(
                store.clone(),
                retriever.clone(),
                settings.projects.clone(),
                settings.content.dir.clone(),
            )
            .with_max_projects(settings.quotas.projects_per_learner),
        );
        let state = AppState {
            chat: ChatDeps {
                store: store.clone(),
                learners: store.clone(),
                flagger: Some(flagger),
                retriever,
                llm,
                studio: Some(Arc::new(crate::chat::prompt_choice::LivePrompts::new(
                    store.clone(),
                    prompts.clone(),
                ))),
                prompts: Arc::new(prompts),
                projects,
                budget: budget(&settings),
                top_k: settings.retrieval.top_k,
                retrieval_timeout: settings.retrieval.timeout,
                temperature: settings.llm.as_ref().map_or(0.3, |l| l.temperature),
                policy_overrides: Some(Arc::new(crate::chat::policy_choice::LivePolicies::new(
                    store.clone(),
                    policies.clone(),
                ))),
                policies,
                clock: crate::guard::window::Clock::default(),
                owner,
                history_messages: settings.transcripts.history_messages,
            },
            transcripts: settings.transcripts.clone(),
            keys: Arc::new(keys),
            limits: settings.limits.clone(),
            demo: settings.demo.clone(),
            frame_ancestors: settings.frame_ancestors.as_str().into(),
            pages: Arc::new(pages),
            ready: Arc::new(AtomicBool::new(false)),
            indexed: Arc::default(),
            turns: TaskTracker::new(),
            shutdown: CancellationToken::new(),
            turn_shutdown: CancellationToken::new(),
            sockets: Arc::new(http::ws::sockets::Sockets::new(
                settings.sockets.clone(),
                settings.auth.leeway_secs,
            )),
            quotas: Arc::new(http::quota::Quotas::new(settings.quotas.clone())),
            review: store,
            metrics: Arc::default(),
            retention: settings.retention.keep_for,
            widget_libs: Arc::new(http::widget::WidgetLibs::load(&settings.widget_libs_dir)),
            studio: Arc::new(http::studio::StudioState::new(settings.content.dir.clone())),
        };
        // The policies course teams wrote through the API stand instead of their files from
        // the first turn.
        if let Some(live) = &state.chat.policy_overrides {
            live.reload()
                .await
                .context("cannot read the course policy overrides")?;
        }
        Ok(Self {
            listener,
            state,
            settings,
        })
    }

    /// The clock assessment windows are read against (tests move it).
    pub fn clock(&self) -> crate::guard::window::Clock {
        self.state.chat.clock.clone()
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
        spawn_policy_reloads(&state);
        let ingest_state = state.clone();
        let ingest_settings = settings.clone();
        tokio::spawn(async move {
            let database = (
                ingest_state.review.as_ref(),
                &*ingest_state.chat.owner.node_id,
            );
            let retriever = &ingest_state.chat.retriever;
            match index_content(retriever, &ingest_settings, false, Some(database)).await {
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
                    let _ = ingest_state.indexed.set(report);
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
        tokio::spawn(purge_usage(state.review.clone(), state.shutdown.clone()));
        tokio::spawn(sweep_orphaned_answers(
            state.review.clone(),
            state.chat.owner.clone(),
            settings.transcripts.sweep_every,
            state.shutdown.clone(),
        ));
        let shutdown = state.shutdown.clone();
        tokio::spawn(async move {
            signal.await;
            shutdown.cancel();
        });
        let app = http::router(state.clone());
        let serve_shutdown = state.shutdown.clone();
        let server = tokio::spawn(async move {
            // The peer's address: the per-address socket cap.
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
            )
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

/// The keys tokens are minted and verified with: the configured secret (at least 32 bytes) or
/// the generated one, under the configured issuer, audience and longest lifetime.
pub fn token_keys(settings: &Settings) -> anyhow::Result<TokenKeys> {
    let secret = resolve_secret(settings.auth.secret.as_ref(), &settings.data_dir)?;
    let auth = &settings.auth;
    Ok(
        TokenKeys::new(&secret, auth.leeway_secs).with_policy(TokenPolicy {
            issuer: auth.issuer.clone(),
            audience: auth.audience.clone(),
            max_lifetime_secs: Some(auth.max_token_lifetime_secs),
        }),
    )
}

/// This process's name on the answers it streams (the configured one, else a random id) and
/// the heartbeat that keeps them from looking orphaned.
fn answer_owner(settings: &Settings) -> crate::chat::AnswerOwner {
    let transcripts = &settings.transcripts;
    let node_id = transcripts
        .node_id
        .clone()
        .unwrap_or_else(crate::chat::AnswerOwner::random_node_id);
    crate::chat::AnswerOwner {
        node_id: node_id.into(),
        stale_after: transcripts.stale_after,
        heartbeat_every: transcripts.heartbeat_every(),
    }
}

/// Every `every` until shutdown, answers still `streaming` with a stale heartbeat (their node
/// died, or could not store them) become `interrupted`. A failed sweep is logged and tried
/// again next time.
async fn sweep_orphaned_answers(
    store: Arc<Store>,
    owner: crate::chat::AnswerOwner,
    every: std::time::Duration,
    shutdown: CancellationToken,
) {
    let mut ticks = tokio::time::interval(every);
    // The first tick is immediate, and start-up has just swept.
    ticks.tick().await;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        match store.interrupt_stale(owner.stale_before_ms()).await {
            Ok(0) => {}
            Ok(interrupted) => {
                tracing::warn!(
                    interrupted,
                    "orphaned answers (stale heartbeat) marked interrupted"
                )
            }
            Err(error) => tracing::warn!(?error, "sweeping orphaned answers failed"),
        }
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

/// How often the course policies are read again: a course team's edit is live this soon.
const POLICY_RELOAD_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Re-reads the policies now and then; a broken file is logged with its file and key, and its
/// last good policy stays live.
fn spawn_policy_reloads(state: &AppState) {
    let policies = state.chat.policies.clone();
    let shutdown = state.shutdown.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(POLICY_RELOAD_EVERY);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.cancelled() => return,
            }
            let policies = policies.clone();
            let errors = tokio::task::spawn_blocking(move || policies.reload())
                .await
                .unwrap_or_default();
            for error in errors {
                tracing::error!(%error, "a course policy did not load; its last good version stays live");
            }
        }
    });
}

/// Deletes quota counters of past windows, hourly, until shutdown.
async fn purge_usage(store: Arc<Store>, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        if let Err(error) = http::quota::purge(&store).await {
            tracing::warn!(%error, "cannot delete old quota counters");
        }
    }
}
