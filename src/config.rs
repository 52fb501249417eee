//! Layered settings: compiled-in defaults, an optional file, the environment, CLI overrides;
//! validated once into typed [`Settings`].
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use secrecy::SecretString;
use serde::Deserialize;

const DEFAULT_TOML: &str = include_str!("../config/default.toml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("configuration key `{key}`: {reason}")]
    Invalid { key: &'static str, reason: String },
}

fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        reason: reason.into(),
    }
}

/// Values given on the command line; they win over every other layer.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub config_file: Option<PathBuf>,
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    server: RawServer,
    auth: RawAuth,
    content: RawContent,
    retrieval: RawRetrieval,
    embedding: RawEmbedding,
    index: RawIndex,
    llm: RawLlm,
    database: RawDatabase,
    limits: RawLimits,
    demo: RawDemo,
    retention: RawRetention,
    transcripts: RawTranscripts,
    moderation: RawModeration,
    projects: RawProjects,
    context: RawContext,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: String,
    data_dir: PathBuf,
    shutdown_grace_secs: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    secret: String,
    token_ttl_secs: u64,
    leeway_secs: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawContent {
    dir: PathBuf,
    chunk_tokens: usize,
    chunk_overlap_tokens: usize,
    max_file_bytes: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetrieval {
    top_k: usize,
    candidates: usize,
    mode: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEmbedding {
    provider: String,
    model_dir: String,
    allow_bm25_fallback: bool,
    openai_model: String,
    openai_dimensions: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIndex {
    backend: String,
    url: String,
    api_key: String,
    collection: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLlm {
    base_url: String,
    api_key: String,
    model: String,
    context_window: usize,
    max_answer_tokens: usize,
    temperature: f32,
    idle_timeout_secs: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDatabase {
    url: String,
    max_connections: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_question_chars: usize,
    max_frame_bytes: usize,
    asks_per_minute: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetention {
    days: u64,
    purge_every_secs: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTranscripts {
    node_id: String,
    stale_after_secs: u64,
    sweep_every_secs: u64,
    history_messages: usize,
    page_size: usize,
    max_page_size: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModeration {
    enabled: bool,
    base_url: String,
    api_key: String,
    model: String,
    timeout_secs: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProjects {
    max_file_bytes: u64,
    max_project_bytes: u64,
    max_archive_bytes: u64,
    max_archive_entries: usize,
    git_timeout_secs: u64,
    git_max_bytes: u64,
    git_allow_local: bool,
    git_schemes: Vec<String>,
    git_allowed_hosts: Vec<String>,
    chunk_tokens: usize,
    top_k: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawContext {
    profile_tokens: usize,
    mentor_tokens: usize,
    brief_tokens: usize,
    snippet_tokens: usize,
    passage_tokens: usize,
    history_tokens: usize,
    question_tokens: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDemo {
    enabled: bool,
    learner_id: String,
    learner_name: String,
}

/// Everything the service needs, checked.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub shutdown_grace: std::time::Duration,
    pub auth: AuthSettings,
    pub content: ContentSettings,
    pub retrieval: RetrievalSettings,
    pub embedding: EmbeddingSettings,
    pub index: IndexSettings,
    pub llm: Option<LlmSettings>,
    pub llm_model: String,
    pub llm_context_window: usize,
    pub llm_max_answer_tokens: usize,
    pub database: DatabaseSettings,
    pub limits: Limits,
    pub demo: Option<DemoSettings>,
    pub retention: RetentionSettings,
    pub transcripts: TranscriptSettings,
    /// Present only when `moderation.enabled`.
    pub moderation: Option<ModerationSettings>,
    pub projects: ProjectSettings,
    pub context: ContextSettings,
}

/// Learners' project files: limits on what is accepted, and how they are chunked and retrieved.
#[derive(Debug, Clone)]
pub struct ProjectSettings {
    pub max_file_bytes: u64,
    pub max_project_bytes: u64,
    pub max_archive_bytes: u64,
    pub max_archive_entries: usize,
    pub git_timeout: std::time::Duration,
    pub git_max_bytes: u64,
    /// Accept local paths and `file://` URLs as git sources.
    pub git_allow_local: bool,
    /// Remote URL schemes a git import may use (`https`, `http`, `git`).
    pub git_schemes: Vec<String>,
    /// Hosts a git import may reach whatever their address; when not empty, the only ones.
    pub git_allowed_hosts: Vec<String>,
    pub chunk_tokens: usize,
    /// Project snippets retrieved for one question.
    pub top_k: usize,
}

/// Token budget of each part of the prompt, in the order they are filled.
#[derive(Debug, Clone, Copy)]
pub struct ContextSettings {
    pub profile_tokens: usize,
    pub mentor_tokens: usize,
    pub brief_tokens: usize,
    pub snippet_tokens: usize,
    pub passage_tokens: usize,
    pub history_tokens: usize,
    pub question_tokens: usize,
}

/// How long transcripts are kept.
#[derive(Debug, Clone)]
pub struct RetentionSettings {
    /// Conversations untouched for this long are purged; `None`: kept forever.
    pub keep_for: Option<std::time::Duration>,
    pub purge_every: std::time::Duration,
}

/// Who owns a streaming answer and when it counts as orphaned; how much of a conversation is
/// read at once.
#[derive(Debug, Clone)]
pub struct TranscriptSettings {
    /// A stable name for this node; `None`: a random id per process (see `startup`).
    pub node_id: Option<String>,
    /// A `streaming` answer whose heartbeat is older than this is orphaned.
    pub stale_after: std::time::Duration,
    pub sweep_every: std::time::Duration,
    /// Newest messages of a conversation read for a turn's history.
    pub history_messages: usize,
    pub page_size: usize,
    pub max_page_size: usize,
}

impl TranscriptSettings {
    /// How often a streaming answer proves its node alive: often enough that a live one never
    /// looks stale.
    pub fn heartbeat_every(&self) -> std::time::Duration {
        (self.stale_after / 4).max(std::time::Duration::from_millis(50))
    }
}

/// An OpenAI-compatible `/moderations` endpoint asked about every question.
#[derive(Debug, Clone)]
pub struct ModerationSettings {
    pub base_url: String,
    pub api_key: SecretString,
    pub model: String,
    pub timeout: std::time::Duration,
}

#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// `None`: use (or create) the secret file under the data directory.
    pub secret: Option<SecretString>,
    pub token_ttl_secs: u64,
    pub leeway_secs: u64,
}

#[derive(Debug, Clone)]
pub struct ContentSettings {
    pub dir: PathBuf,
    pub chunk_tokens: usize,
    pub chunk_overlap_tokens: usize,
    pub max_file_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RetrievalMode {
    Hybrid,
    Bm25,
    Dense,
}

impl std::str::FromStr for RetrievalMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "hybrid" => Ok(Self::Hybrid),
            "bm25" => Ok(Self::Bm25),
            "dense" => Ok(Self::Dense),
            other => Err(format!(
                "unknown retrieval mode {other:?}, expected hybrid, bm25 or dense"
            )),
        }
    }
}

#[derive(Debug, Clone)]
pub struct RetrievalSettings {
    pub top_k: usize,
    pub candidates: usize,
    pub mode: RetrievalMode,
}

#[derive(Debug, Clone)]
pub enum EmbeddingProvider {
    None,
    Local { model_dir: PathBuf },
    OpenAi { model: String, dimensions: usize },
}

#[derive(Debug, Clone)]
pub struct EmbeddingSettings {
    pub provider: EmbeddingProvider,
    pub allow_bm25_fallback: bool,
}

#[derive(Debug, Clone)]
pub enum IndexSettings {
    Edge {
        path: PathBuf,
    },
    Qdrant {
        url: String,
        api_key: Option<SecretString>,
        collection: String,
    },
}

/// Present only when an LLM endpoint is configured.
#[derive(Debug, Clone)]
pub struct LlmSettings {
    pub base_url: String,
    pub api_key: SecretString,
    pub model: String,
    pub temperature: f32,
    pub max_answer_tokens: usize,
    pub idle_timeout: std::time::Duration,
}

#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// A `sqlite://` or `postgres://` URL.
    pub url: String,
    pub max_connections: u32,
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_question_chars: usize,
    pub max_frame_bytes: usize,
    pub asks_per_minute: u32,
}

#[derive(Debug, Clone)]
pub struct DemoSettings {
    pub learner_id: String,
    pub learner_name: String,
}

/// Variables read from the process environment, passed in so tests can control them.
pub trait EnvSource {
    fn var(&self, name: &str) -> Option<String>;
}

/// The real process environment.
pub struct ProcessEnv;

impl EnvSource for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

impl Settings {
    /// Loads every layer and validates the result.
    pub fn load(overrides: &Overrides) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder().add_source(config::File::from_str(
            DEFAULT_TOML,
            config::FileFormat::Toml,
        ));
        let file = overrides
            .config_file
            .clone()
            .or_else(|| ProcessEnv.var("COMPANION_CONFIG").map(PathBuf::from));
        if let Some(file) = file {
            if !file.exists() {
                return Err(invalid(
                    "--config",
                    format!("file {} does not exist", file.display()),
                ));
            }
            builder = builder.add_source(config::File::from(file).required(true));
        }
        builder = builder.add_source(
            config::Environment::with_prefix("COMPANION")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true),
        );
        if let Some(listen) = &overrides.listen {
            builder = builder.set_override("server.listen", listen.as_str())?;
        }
        if let Some(dir) = &overrides.data_dir {
            builder = builder.set_override("server.data_dir", dir.to_string_lossy().as_ref())?;
        }
        let raw: RawSettings = builder.build()?.try_deserialize()?;
        Self::validate(raw, &ProcessEnv)
    }

    /// The compiled-in defaults with `data_dir` (and the paths under it), no file and no
    /// environment: for tests and tools that set fields in Rust.
    pub fn defaults(data_dir: &Path) -> Self {
        let raw = default_raw(data_dir).expect("the compiled-in defaults parse");
        Self::validate(raw, &NoEnv).expect("the compiled-in defaults are valid")
    }

    /// Answers with `model` from the OpenAI-compatible endpoint at `base_url`; the other LLM
    /// settings keep their compiled-in defaults.
    pub fn use_llm(&mut self, base_url: &str, api_key: &str, model: &str) {
        let raw = default_raw(&self.data_dir).expect("the compiled-in defaults parse");
        let raw_llm = RawLlm {
            model: model.to_string(),
            max_answer_tokens: self.llm_max_answer_tokens,
            ..raw.llm
        };
        self.llm = Some(llm_settings(
            &raw_llm,
            base_url.to_string(),
            Some(api_key.to_string()),
        ));
        self.llm_model = model.to_string();
    }

    fn validate(raw: RawSettings, env: &dyn EnvSource) -> Result<Self, ConfigError> {
        let listen: SocketAddr = raw.server.listen.parse().map_err(|_| {
            invalid(
                "server.listen",
                format!("{:?} is not an address:port", raw.server.listen),
            )
        })?;
        let data_dir = raw.server.data_dir;
        if data_dir.as_os_str().is_empty() {
            return Err(invalid("server.data_dir", "must not be empty"));
        }
        if raw.content.chunk_tokens < 32 {
            return Err(invalid("content.chunk_tokens", "must be at least 32"));
        }
        if raw.content.chunk_overlap_tokens >= raw.content.chunk_tokens / 2 {
            return Err(invalid(
                "content.chunk_overlap_tokens",
                "must be less than half of content.chunk_tokens",
            ));
        }
        if raw.retrieval.top_k == 0 || raw.retrieval.top_k > 50 {
            return Err(invalid("retrieval.top_k", "must be between 1 and 50"));
        }
        if raw.retrieval.candidates < raw.retrieval.top_k {
            return Err(invalid(
                "retrieval.candidates",
                "must be at least retrieval.top_k",
            ));
        }
        let mode: RetrievalMode = raw
            .retrieval
            .mode
            .parse()
            .map_err(|e: String| invalid("retrieval.mode", e))?;
        let provider = match raw.embedding.provider.as_str() {
            "none" => EmbeddingProvider::None,
            "local" => EmbeddingProvider::Local {
                model_dir: if raw.embedding.model_dir.is_empty() {
                    data_dir.join("models").join("all-MiniLM-L6-v2")
                } else {
                    PathBuf::from(raw.embedding.model_dir)
                },
            },
            "openai" => {
                if raw.embedding.openai_dimensions == 0 {
                    return Err(invalid("embedding.openai_dimensions", "must be positive"));
                }
                EmbeddingProvider::OpenAi {
                    model: raw.embedding.openai_model,
                    dimensions: raw.embedding.openai_dimensions,
                }
            }
            other => {
                return Err(invalid(
                    "embedding.provider",
                    format!("unknown provider {other:?}, expected local, openai or none"),
                ));
            }
        };
        let index = match raw.index.backend.as_str() {
            "edge" => IndexSettings::Edge {
                path: data_dir.join("index"),
            },
            "qdrant" => {
                if raw.index.url.is_empty() {
                    return Err(invalid(
                        "index.url",
                        "must be set when index.backend is \"qdrant\"",
                    ));
                }
                IndexSettings::Qdrant {
                    url: raw.index.url,
                    api_key: non_empty(raw.index.api_key).map(SecretString::from),
                    collection: raw.index.collection,
                }
            }
            other => {
                return Err(invalid(
                    "index.backend",
                    format!("unknown backend {other:?}, expected edge or qdrant"),
                ));
            }
        };
        if raw.llm.max_answer_tokens == 0 || raw.llm.max_answer_tokens * 2 > raw.llm.context_window
        {
            return Err(invalid(
                "llm.max_answer_tokens",
                "must be positive and at most half of llm.context_window",
            ));
        }
        if !(0.0..=2.0).contains(&raw.llm.temperature) {
            return Err(invalid("llm.temperature", "must be between 0 and 2"));
        }
        let base_url = non_empty(raw.llm.base_url.clone()).or_else(|| env.var("OPENAI_BASE_URL"));
        let api_key = non_empty(raw.llm.api_key.clone()).or_else(|| env.var("OPENAI_API_KEY"));
        let llm = match (base_url, api_key) {
            (None, None) => None,
            (base_url, api_key) => {
                let base_url = base_url.unwrap_or_else(|| "https://api.openai.com/v1".into());
                if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
                    return Err(invalid(
                        "llm.base_url",
                        format!("{base_url:?} is not an http(s) URL"),
                    ));
                }
                Some(llm_settings(&raw.llm, base_url, api_key))
            }
        };
        let database_url = if raw.database.url.is_empty() {
            format!(
                "sqlite://{}?mode=rwc",
                data_dir.join("transcripts.db").display()
            )
        } else {
            raw.database.url
        };
        if !(database_url.starts_with("sqlite:")
            || database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://"))
        {
            return Err(invalid(
                "database.url",
                "must start with sqlite:, postgres:// or postgresql://",
            ));
        }
        if raw.limits.max_question_chars == 0 {
            return Err(invalid("limits.max_question_chars", "must be positive"));
        }
        if raw.limits.max_frame_bytes < 1024 {
            return Err(invalid("limits.max_frame_bytes", "must be at least 1024"));
        }
        if raw.retention.purge_every_secs == 0 {
            return Err(invalid("retention.purge_every_secs", "must be positive"));
        }
        if raw.retention.days > 365 * 100 {
            return Err(invalid(
                "retention.days",
                "must be at most 36500 (0 keeps transcripts forever)",
            ));
        }
        let transcripts = validate_transcripts(raw.transcripts)?;
        let moderation = if raw.moderation.enabled {
            let base_url = non_empty(raw.moderation.base_url)
                .or_else(|| llm.as_ref().map(|l| l.base_url.clone()))
                .ok_or_else(|| {
                    invalid(
                        "moderation.base_url",
                        "must be set when moderation.enabled is true and no LLM endpoint is configured",
                    )
                })?;
            if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
                return Err(invalid(
                    "moderation.base_url",
                    format!("{base_url:?} is not an http(s) URL"),
                ));
            }
            let api_key = non_empty(raw.moderation.api_key)
                .map(SecretString::from)
                .or_else(|| llm.as_ref().map(|l| l.api_key.clone()))
                .unwrap_or_else(|| SecretString::from("unused".to_string()));
            Some(ModerationSettings {
                base_url: base_url.trim_end_matches('/').to_string(),
                api_key,
                model: raw.moderation.model,
                timeout: std::time::Duration::from_secs(raw.moderation.timeout_secs.max(1)),
            })
        } else {
            None
        };
        let projects = validate_projects(raw.projects)?;
        let context = validate_context(raw.context, raw.llm.context_window)?;
        if raw.demo.enabled && raw.demo.learner_id.is_empty() {
            return Err(invalid(
                "demo.learner_id",
                "must be set when demo.enabled is true",
            ));
        }
        Ok(Settings {
            listen,
            shutdown_grace: std::time::Duration::from_secs(raw.server.shutdown_grace_secs),
            auth: AuthSettings {
                secret: non_empty(raw.auth.secret).map(SecretString::from),
                token_ttl_secs: raw.auth.token_ttl_secs,
                leeway_secs: raw.auth.leeway_secs,
            },
            content: ContentSettings {
                dir: raw.content.dir,
                chunk_tokens: raw.content.chunk_tokens,
                chunk_overlap_tokens: raw.content.chunk_overlap_tokens,
                max_file_bytes: raw.content.max_file_bytes,
            },
            retrieval: RetrievalSettings {
                top_k: raw.retrieval.top_k,
                candidates: raw.retrieval.candidates,
                mode,
            },
            embedding: EmbeddingSettings {
                provider,
                allow_bm25_fallback: raw.embedding.allow_bm25_fallback,
            },
            index,
            llm,
            llm_model: raw.llm.model,
            llm_context_window: raw.llm.context_window,
            llm_max_answer_tokens: raw.llm.max_answer_tokens,
            database: DatabaseSettings {
                url: database_url,
                max_connections: raw.database.max_connections.max(1),
            },
            limits: Limits {
                max_question_chars: raw.limits.max_question_chars,
                max_frame_bytes: raw.limits.max_frame_bytes,
                asks_per_minute: raw.limits.asks_per_minute,
            },
            retention: RetentionSettings {
                keep_for: (raw.retention.days > 0)
                    .then(|| std::time::Duration::from_secs(raw.retention.days * 86_400)),
                purge_every: std::time::Duration::from_secs(raw.retention.purge_every_secs),
            },
            transcripts,
            moderation,
            projects,
            context,
            demo: raw.demo.enabled.then_some(DemoSettings {
                learner_id: raw.demo.learner_id,
                learner_name: raw.demo.learner_name,
            }),
            data_dir,
        })
    }

    /// The data directory, created if missing.
    pub fn ensure_data_dir(&self) -> std::io::Result<&Path> {
        std::fs::create_dir_all(&self.data_dir)?;
        Ok(&self.data_dir)
    }
}

/// The LLM endpoint at `base_url` (already checked to be an http(s) URL) with `raw`'s model and
/// limits.
fn llm_settings(raw: &RawLlm, base_url: String, api_key: Option<String>) -> LlmSettings {
    LlmSettings {
        base_url: base_url.trim_end_matches('/').to_string(),
        // Local OpenAI-compatible servers often need no key; the client still sends one.
        api_key: SecretString::from(api_key.unwrap_or_else(|| "unused".into())),
        model: raw.model.clone(),
        temperature: raw.temperature,
        max_answer_tokens: raw.max_answer_tokens,
        idle_timeout: std::time::Duration::from_secs(raw.idle_timeout_secs.max(1)),
    }
}

fn validate_transcripts(raw: RawTranscripts) -> Result<TranscriptSettings, ConfigError> {
    let node_id = raw.node_id.trim().to_string();
    if node_id.chars().count() > 64
        || !node_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(invalid(
            "transcripts.node_id",
            format!("{node_id:?} must be at most 64 letters, digits, '-', '_' or '.'"),
        ));
    }
    if raw.stale_after_secs < 4 || raw.stale_after_secs > 86_400 {
        return Err(invalid(
            "transcripts.stale_after_secs",
            format!("must be between 4 and 86400, not {}", raw.stale_after_secs),
        ));
    }
    if raw.sweep_every_secs == 0 || raw.sweep_every_secs > 86_400 {
        return Err(invalid(
            "transcripts.sweep_every_secs",
            format!("must be between 1 and 86400, not {}", raw.sweep_every_secs),
        ));
    }
    if !(2..=10_000).contains(&raw.history_messages) {
        return Err(invalid(
            "transcripts.history_messages",
            format!("must be between 2 and 10000, not {}", raw.history_messages),
        ));
    }
    if raw.max_page_size == 0 || raw.max_page_size > 10_000 {
        return Err(invalid(
            "transcripts.max_page_size",
            format!("must be between 1 and 10000, not {}", raw.max_page_size),
        ));
    }
    if raw.page_size == 0 || raw.page_size > raw.max_page_size {
        return Err(invalid(
            "transcripts.page_size",
            format!(
                "must be between 1 and transcripts.max_page_size ({}), not {}",
                raw.max_page_size, raw.page_size
            ),
        ));
    }
    Ok(TranscriptSettings {
        node_id: (!node_id.is_empty()).then_some(node_id),
        stale_after: std::time::Duration::from_secs(raw.stale_after_secs),
        sweep_every: std::time::Duration::from_secs(raw.sweep_every_secs),
        history_messages: raw.history_messages,
        page_size: raw.page_size,
        max_page_size: raw.max_page_size,
    })
}

/// The compiled-in defaults alone, with `data_dir`.
fn default_raw(data_dir: &Path) -> Result<RawSettings, config::ConfigError> {
    config::Config::builder()
        .add_source(config::File::from_str(
            DEFAULT_TOML,
            config::FileFormat::Toml,
        ))
        .set_override("server.data_dir", data_dir.to_string_lossy().as_ref())?
        .build()?
        .try_deserialize()
}

/// No environment: settings built in Rust see no `OPENAI_*` variable.
struct NoEnv;

impl EnvSource for NoEnv {
    fn var(&self, _: &str) -> Option<String> {
        None
    }
}

fn validate_projects(raw: RawProjects) -> Result<ProjectSettings, ConfigError> {
    if raw.max_file_bytes == 0 {
        return Err(invalid("projects.max_file_bytes", "must be positive"));
    }
    if raw.max_project_bytes < raw.max_file_bytes {
        return Err(invalid(
            "projects.max_project_bytes",
            "must be at least projects.max_file_bytes",
        ));
    }
    if raw.max_archive_bytes == 0 {
        return Err(invalid("projects.max_archive_bytes", "must be positive"));
    }
    if raw.max_archive_entries == 0 {
        return Err(invalid("projects.max_archive_entries", "must be positive"));
    }
    if raw.git_timeout_secs == 0 {
        return Err(invalid("projects.git_timeout_secs", "must be positive"));
    }
    if raw.git_max_bytes == 0 {
        return Err(invalid("projects.git_max_bytes", "must be positive"));
    }
    if let Some(scheme) = raw
        .git_schemes
        .iter()
        .find(|s| !matches!(s.as_str(), "https" | "http" | "git"))
    {
        return Err(invalid(
            "projects.git_schemes",
            format!("{scheme:?} is not one of \"https\", \"http\", \"git\""),
        ));
    }
    if let Some(host) = raw
        .git_allowed_hosts
        .iter()
        .find(|h| h.is_empty() || h.contains(['/', ':', ' ', '@']))
    {
        return Err(invalid(
            "projects.git_allowed_hosts",
            format!("{host:?} is not a host name"),
        ));
    }
    if raw.chunk_tokens < 32 {
        return Err(invalid("projects.chunk_tokens", "must be at least 32"));
    }
    if raw.top_k > 50 {
        return Err(invalid("projects.top_k", "must be at most 50"));
    }
    Ok(ProjectSettings {
        max_file_bytes: raw.max_file_bytes,
        max_project_bytes: raw.max_project_bytes,
        max_archive_bytes: raw.max_archive_bytes,
        max_archive_entries: raw.max_archive_entries,
        git_timeout: std::time::Duration::from_secs(raw.git_timeout_secs),
        git_max_bytes: raw.git_max_bytes,
        git_allow_local: raw.git_allow_local,
        git_schemes: raw.git_schemes,
        git_allowed_hosts: raw
            .git_allowed_hosts
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect(),
        chunk_tokens: raw.chunk_tokens,
        top_k: raw.top_k,
    })
}

fn validate_context(raw: RawContext, window: usize) -> Result<ContextSettings, ConfigError> {
    if raw.question_tokens < 16 {
        return Err(invalid("context.question_tokens", "must be at least 16"));
    }
    for (key, value) in [
        ("context.profile_tokens", raw.profile_tokens),
        ("context.mentor_tokens", raw.mentor_tokens),
        ("context.brief_tokens", raw.brief_tokens),
        ("context.snippet_tokens", raw.snippet_tokens),
        ("context.passage_tokens", raw.passage_tokens),
        ("context.history_tokens", raw.history_tokens),
        ("context.question_tokens", raw.question_tokens),
    ] {
        if value > window {
            return Err(invalid(
                key,
                format!("must be at most llm.context_window ({window})"),
            ));
        }
    }
    Ok(ContextSettings {
        profile_tokens: raw.profile_tokens,
        mentor_tokens: raw.mentor_tokens,
        brief_tokens: raw.brief_tokens,
        snippet_tokens: raw.snippet_tokens,
        passage_tokens: raw.passage_tokens,
        history_tokens: raw.history_tokens,
        question_tokens: raw.question_tokens,
    })
}

fn non_empty(s: String) -> Option<String> {
    (!s.trim().is_empty()).then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw_from(extra: &str) -> Result<RawSettings, config::ConfigError> {
        config::Config::builder()
            .add_source(config::File::from_str(
                DEFAULT_TOML,
                config::FileFormat::Toml,
            ))
            .add_source(config::File::from_str(extra, config::FileFormat::Toml))
            .build()?
            .try_deserialize()
    }

    #[test]
    fn defaults_validate_into_offline_settings() {
        let settings = Settings::validate(raw_from("").unwrap(), &NoEnv).unwrap();
        assert!(settings.llm.is_none());
        assert_eq!(settings.retrieval.mode, RetrievalMode::Hybrid);
        assert!(settings.database.url.starts_with("sqlite://"));
    }

    #[test]
    fn unknown_key_is_rejected_by_name() {
        let err = raw_from("[server]\nlisten_port = 3")
            .unwrap_err()
            .to_string();
        assert!(err.contains("listen_port"), "{err}");
    }

    #[test]
    fn bad_value_names_the_key() {
        let err = Settings::validate(raw_from("[server]\nlisten = \"nowhere\"").unwrap(), &NoEnv)
            .unwrap_err()
            .to_string();
        assert!(err.contains("server.listen"), "{err}");
    }

    #[test]
    fn transcript_settings_default_to_a_random_node_and_refuse_bad_values_by_name() {
        let settings = Settings::validate(raw_from("").unwrap(), &NoEnv).unwrap();
        let t = &settings.transcripts;
        assert_eq!(t.node_id, None);
        assert_eq!(t.stale_after, std::time::Duration::from_secs(60));
        assert_eq!(t.heartbeat_every(), std::time::Duration::from_secs(15));
        assert!(t.page_size <= t.max_page_size);
        let settings = Settings::validate(
            raw_from("[transcripts]\nnode_id = \"eu-1\"").unwrap(),
            &NoEnv,
        )
        .unwrap();
        assert_eq!(settings.transcripts.node_id.as_deref(), Some("eu-1"));
        for (extra, key) in [
            ("node_id = \"a b\"", "transcripts.node_id"),
            ("stale_after_secs = 1", "transcripts.stale_after_secs"),
            ("sweep_every_secs = 0", "transcripts.sweep_every_secs"),
            ("history_messages = 0", "transcripts.history_messages"),
            ("max_page_size = 0", "transcripts.max_page_size"),
            ("page_size = 501", "transcripts.page_size"),
        ] {
            let err = Settings::validate(
                raw_from(&format!("[transcripts]\n{extra}")).unwrap(),
                &NoEnv,
            )
            .unwrap_err()
            .to_string();
            assert!(err.contains(key), "{extra}: {err}");
        }
    }

    #[test]
    fn retention_zero_keeps_forever_and_moderation_borrows_the_llm_endpoint() {
        let settings = Settings::validate(raw_from("").unwrap(), &NoEnv).unwrap();
        assert!(settings.retention.keep_for.is_none());
        assert!(settings.moderation.is_none());
        let settings = Settings::validate(
            raw_from(
                "[retention]\ndays = 30\n[moderation]\nenabled = true\n\
                 [llm]\nbase_url = \"http://127.0.0.1:9/v1\"",
            )
            .unwrap(),
            &NoEnv,
        )
        .unwrap();
        assert_eq!(
            settings.retention.keep_for,
            Some(std::time::Duration::from_secs(30 * 86_400))
        );
        assert_eq!(
            settings.moderation.unwrap().base_url,
            "http://127.0.0.1:9/v1"
        );
        let err = Settings::validate(raw_from("[moderation]\nenabled = true").unwrap(), &NoEnv)
            .unwrap_err()
            .to_string();
        assert!(err.contains("moderation.base_url"), "{err}");
    }

    #[test]
    fn project_limits_and_context_budgets_are_validated_by_key() {
        let settings = Settings::validate(raw_from("").unwrap(), &NoEnv).unwrap();
        assert!(!settings.projects.git_allow_local);
        assert!(settings.projects.max_file_bytes <= settings.projects.max_project_bytes);
        assert_eq!(settings.context.question_tokens, 1500);
        for (extra, key) in [
            (
                "[projects]\nmax_project_bytes = 10",
                "projects.max_project_bytes",
            ),
            (
                "[projects]\nmax_archive_entries = 0",
                "projects.max_archive_entries",
            ),
            ("[projects]\nchunk_tokens = 8", "projects.chunk_tokens"),
            ("[context]\nbrief_tokens = 99999999", "context.brief_tokens"),
            ("[context]\nquestion_tokens = 1", "context.question_tokens"),
        ] {
            let err = Settings::validate(raw_from(extra).unwrap(), &NoEnv)
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{extra}: {err}");
        }
    }

    #[test]
    fn defaults_built_in_rust_ignore_the_environment_and_take_an_llm() {
        let dir = Path::new("/tmp/companion-defaults");
        let mut settings = Settings::defaults(dir);
        assert!(settings.llm.is_none());
        assert_eq!(settings.data_dir, dir);
        assert!(
            settings
                .database
                .url
                .contains("/tmp/companion-defaults/transcripts.db")
        );
        assert!(
            matches!(&settings.index, IndexSettings::Edge { path } if path == &dir.join("index"))
        );
        settings.llm_max_answer_tokens = 500;
        settings.use_llm("http://127.0.0.1:9/v1/", "k", "fake-model");
        let llm = settings.llm.as_ref().unwrap();
        assert_eq!(llm.base_url, "http://127.0.0.1:9/v1");
        assert_eq!(
            (llm.model.as_str(), llm.max_answer_tokens),
            ("fake-model", 500)
        );
        assert_eq!(llm.temperature, 0.3);
        assert_eq!(settings.llm_model, "fake-model");
    }

    #[test]
    fn openai_environment_variables_select_an_llm() {
        struct Env;
        impl EnvSource for Env {
            fn var(&self, name: &str) -> Option<String> {
                (name == "OPENAI_BASE_URL").then(|| "http://127.0.0.1:9/v1/".to_string())
            }
        }
        let settings = Settings::validate(raw_from("").unwrap(), &Env).unwrap();
        assert_eq!(settings.llm.unwrap().base_url, "http://127.0.0.1:9/v1");
    }
}
