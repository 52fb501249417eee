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
    sockets: RawSockets,
    quotas: RawQuotas,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: String,
    data_dir: PathBuf,
    shutdown_grace_secs: u64,
    frame_ancestors: String,
    widget_libs_dir: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    secret: String,
    token_ttl_secs: u64,
    leeway_secs: u64,
    issuer: String,
    audience: String,
    max_token_lifetime_secs: u64,
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
    dense_weight: f32,
    timeout_ms: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEmbedding {
    provider: String,
    model_dir: String,
    allow_bm25_fallback: bool,
    openai_model: String,
    openai_dimensions: usize,
    openai_base_url: String,
    openai_api_key: String,
    openai_input_type: bool,
    flags_model: String,
    e5_dir: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIndex {
    backend: String,
    url: String,
    api_key: String,
    collection: String,
    shards: u32,
    replication_factor: u32,
    write_consistency: u32,
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
    first_token_timeout_secs: u64,
    retry_deadline_secs: u64,
    max_attempts: u32,
    retry_backoff_ms: u64,
    answer_deadline_secs: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDatabase {
    url: String,
    max_connections: u32,
    acquire_timeout_secs: u64,
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
struct RawSockets {
    max_connections: usize,
    max_connections_per_learner: usize,
    max_connections_per_address: usize,
    idle_timeout_secs: u64,
    ping_every_secs: u64,
    pong_timeout_secs: u64,
    outbound_frames: usize,
    allowed_origins: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQuotas {
    tokens_per_day: u64,
    streams_per_learner: u32,
    stream_lease_secs: u64,
    projects_per_learner: usize,
    upload_bytes_per_day: u64,
    git_clones: usize,
    git_clones_per_learner: usize,
    attaches_per_minute: u32,
    feedback_per_minute: u32,
    mentor_requests_per_hour: u32,
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
    learner_prefix: String,
    learner_name: String,
    token_ttl_secs: u64,
    allow_public: bool,
}

/// Everything the service needs, checked.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub shutdown_grace: std::time::Duration,
    /// The `frame-ancestors` of every response's `Content-Security-Policy`: who may frame the
    /// pages (`'none'`, or the course platform's origin).
    pub frame_ancestors: String,
    /// Where the chat widget's bundled rendering libraries are (`libs.js`, made by
    /// `scripts/fetch-widget-libs.sh`); served at `/widget/libs.js`.
    pub widget_libs_dir: PathBuf,
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
    pub sockets: SocketSettings,
    pub quotas: Quotas,
}

/// What one node accepts of WebSocket connections, and how long it keeps a quiet one.
#[derive(Debug, Clone)]
pub struct SocketSettings {
    /// Open sockets on this node, all learners together.
    pub max_connections: usize,
    pub max_connections_per_learner: usize,
    /// Per client address (the TCP peer: behind a proxy, the proxy's).
    pub max_connections_per_address: usize,
    /// A socket that sends no frame for this long (and has no answer streaming) is closed.
    pub idle_timeout: std::time::Duration,
    /// The server pings this often, and closes a socket not heard from for
    /// `ping_every + pong_timeout`.
    pub ping_every: std::time::Duration,
    pub pong_timeout: std::time::Duration,
    /// Frames queued for one socket; a client that lets more pile up is dropped.
    pub outbound_frames: usize,
    /// `Origin`s allowed to open a socket (`scheme://host[:port]`). Empty: same origin only.
    pub allowed_origins: Vec<String>,
}

/// Per-learner quotas, counted in the shared database so that they hold across nodes.
/// A zero disables the quota it names.
#[derive(Debug, Clone)]
pub struct Quotas {
    /// LLM tokens (prompt and answer) one learner may use per UTC day.
    pub tokens_per_day: u64,
    /// Answers one learner may have streaming at once, all connections and nodes together.
    pub streams_per_learner: u32,
    /// A stream's slot is freed at the latest this long after it was taken (a crashed node).
    pub stream_lease: std::time::Duration,
    pub projects_per_learner: usize,
    /// Bytes of project files one learner may upload (files, archives, git, chat) per UTC day.
    pub upload_bytes_per_day: u64,
    /// Git clones running at once on one node, and per learner.
    pub git_clones: usize,
    pub git_clones_per_learner: usize,
    pub attaches_per_minute: u32,
    pub feedback_per_minute: u32,
    pub mentor_requests_per_hour: u32,
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
    /// Tokens must carry this `iss` (and minted ones do); `None`: not checked.
    pub issuer: Option<String>,
    /// Tokens must carry this `aud` (and minted ones do); `None`: not checked.
    pub audience: Option<String>,
    /// Tokens whose `exp - iat` is longer are refused.
    pub max_token_lifetime_secs: u64,
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
    /// The dense list's share of a hybrid score, 0 to 1 (BM25 gets the rest).
    pub dense_weight: f32,
    /// A search that takes longer is abandoned: the answer is written without passages.
    pub timeout: std::time::Duration,
}

#[derive(Debug, Clone)]
pub enum EmbeddingProvider {
    None,
    Local {
        model_dir: PathBuf,
    },
    /// multilingual-e5-small in-process, from `dir`.
    E5 {
        dir: PathBuf,
    },
    OpenAi {
        model: String,
        dimensions: usize,
        /// The embeddings endpoint when it is not the LLM's (`None`: the LLM's).
        base_url: Option<String>,
        /// Its key when it is not the LLM's.
        api_key: Option<SecretString>,
        /// Send `input_type` (`query` or `passage`) with each request.
        input_type: bool,
    },
}

#[derive(Debug, Clone)]
pub struct EmbeddingSettings {
    pub provider: EmbeddingProvider,
    pub allow_bm25_fallback: bool,
    /// What the flag classifier reads learners' messages with.
    pub flags_model: FlagsModel,
}

/// The embedder of the flag classifier (`embedding.flags_model`).
#[derive(Debug, Clone, PartialEq)]
pub enum FlagsModel {
    /// multilingual-e5-small in-process, from `dir` (French and English alike); the retrieval
    /// embedder when its file is missing.
    E5 { dir: PathBuf },
    /// The dense embedder retrieval uses.
    Retrieval,
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
        layout: CollectionLayout,
    },
}

/// How a new collection on a Qdrant server or cluster is spread: shards, the copies of each
/// shard, and how many copies a write must reach before it is acknowledged. An existing
/// collection keeps the layout it was created with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CollectionLayout {
    pub shards: u32,
    pub replication_factor: u32,
    pub write_consistency: u32,
}

impl Default for CollectionLayout {
    fn default() -> Self {
        Self {
            shards: 1,
            replication_factor: 1,
            write_consistency: 1,
        }
    }
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
    /// An attempt that has produced no text after this long is abandoned (and retried).
    pub first_token_timeout: std::time::Duration,
    /// Failed attempts are retried, before the first token only, until this long after the
    /// question.
    pub retry_deadline: std::time::Duration,
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// The first wait between attempts (doubled each time, with jitter).
    pub retry_backoff: std::time::Duration,
    /// The whole answer ends by then, retries included.
    pub answer_deadline: std::time::Duration,
}

#[derive(Clone)]
pub struct DatabaseSettings {
    /// A `sqlite://` or `postgres://` URL; it may hold a password, so its `Debug` hides that.
    pub url: String,
    pub max_connections: u32,
    /// How long a query waits for a connection (the database down: how long until a question
    /// is refused).
    pub acquire_timeout: std::time::Duration,
}

impl std::fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseSettings")
            .field("url", &without_credentials(&self.url))
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

/// `url` with its user info (`user:password@`) replaced by `***@`, for logs and `Debug`.
pub fn without_credentials(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let (head, tail) = url.split_at(scheme_end + 3);
    let authority_end = tail.find(['/', '?', '#']).unwrap_or(tail.len());
    match tail[..authority_end].rfind('@') {
        Some(at) => format!("{head}***{}", &tail[at..]),
        None => url.to_string(),
    }
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_question_chars: usize,
    pub max_frame_bytes: usize,
    pub asks_per_minute: u32,
}

#[derive(Debug, Clone)]
pub struct DemoSettings {
    /// Each visitor gets a learner id of its own: this prefix and a random part.
    pub learner_prefix: String,
    pub learner_name: String,
    pub token_ttl_secs: u64,
    /// Serve the demo on an address other than loopback (checked at start-up).
    pub allow_public: bool,
}

impl Settings {
    /// Refuses the demo (anonymous visitors get learner tokens) on an address reachable from
    /// other machines unless `demo.allow_public` says it is meant; checked by
    /// [`Settings::load`] and again at start-up, for settings built in Rust.
    pub fn check_demo_exposure(&self) -> Result<(), ConfigError> {
        match &self.demo {
            Some(demo) if !demo.allow_public && !self.listen.ip().is_loopback() => Err(invalid(
                "demo.enabled",
                format!(
                    "the demo hands a learner token to anyone who asks; it is on while \
                     server.listen is {}, which is not a loopback address. Turn the demo off \
                     (demo.enabled = false) or set demo.allow_public = true if this is meant",
                    self.listen
                ),
            )),
            _ => Ok(()),
        }
    }
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
        if !(0.0..=1.0).contains(&raw.retrieval.dense_weight) {
            return Err(invalid(
                "retrieval.dense_weight",
                "must be between 0 and 1 (the dense list's share of a hybrid score)",
            ));
        }
        let mode: RetrievalMode = raw
            .retrieval
            .mode
            .parse()
            .map_err(|e: String| invalid("retrieval.mode", e))?;
        let e5_dir = if raw.embedding.e5_dir.is_empty() {
            data_dir.join("models").join("multilingual-e5-small")
        } else {
            PathBuf::from(&raw.embedding.e5_dir)
        };
        let provider = match raw.embedding.provider.as_str() {
            "none" => EmbeddingProvider::None,
            "local" => EmbeddingProvider::Local {
                model_dir: if raw.embedding.model_dir.is_empty() {
                    data_dir.join("models").join("all-MiniLM-L6-v2")
                } else {
                    PathBuf::from(raw.embedding.model_dir)
                },
            },
            "e5" => EmbeddingProvider::E5 {
                dir: e5_dir.clone(),
            },
            "openai" => {
                if raw.embedding.openai_dimensions == 0 {
                    return Err(invalid("embedding.openai_dimensions", "must be positive"));
                }
                EmbeddingProvider::OpenAi {
                    model: raw.embedding.openai_model,
                    dimensions: raw.embedding.openai_dimensions,
                    base_url: non_empty(raw.embedding.openai_base_url),
                    api_key: non_empty(raw.embedding.openai_api_key).map(SecretString::from),
                    input_type: raw.embedding.openai_input_type,
                }
            }
            other => {
                return Err(invalid(
                    "embedding.provider",
                    format!("unknown provider {other:?}, expected local, e5, openai or none"),
                ));
            }
        };
        let flags_model = match raw.embedding.flags_model.as_str() {
            "e5" => FlagsModel::E5 { dir: e5_dir },
            "retrieval" => FlagsModel::Retrieval,
            other => {
                return Err(invalid(
                    "embedding.flags_model",
                    format!("unknown model {other:?}, expected e5 or retrieval"),
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
                let layout = CollectionLayout {
                    shards: raw.index.shards,
                    replication_factor: raw.index.replication_factor,
                    write_consistency: raw.index.write_consistency,
                };
                if layout.shards == 0 {
                    return Err(invalid("index.shards", "must be at least 1"));
                }
                if layout.replication_factor == 0 {
                    return Err(invalid("index.replication_factor", "must be at least 1"));
                }
                if layout.write_consistency == 0
                    || layout.write_consistency > layout.replication_factor
                {
                    return Err(invalid(
                        "index.write_consistency",
                        "must be between 1 and index.replication_factor",
                    ));
                }
                IndexSettings::Qdrant {
                    url: raw.index.url,
                    api_key: non_empty(raw.index.api_key).map(SecretString::from),
                    collection: raw.index.collection,
                    layout,
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
        validate_llm_bounds(&raw.llm)?;
        if raw.retrieval.timeout_ms == 0 {
            return Err(invalid("retrieval.timeout_ms", "must be positive"));
        }
        if raw.database.acquire_timeout_secs == 0 {
            return Err(invalid("database.acquire_timeout_secs", "must be positive"));
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
        let auth = validate_auth(raw.auth)?;
        let demo = validate_demo(raw.demo, &auth)?;
        let frame_ancestors = raw.server.frame_ancestors.trim().to_string();
        if frame_ancestors.is_empty()
            || frame_ancestors
                .chars()
                .any(|c| c.is_control() || matches!(c, ';' | ',' | '"'))
        {
            return Err(invalid(
                "server.frame_ancestors",
                format!(
                    "{:?} is not a list of CSP sources such as 'none' or https://platform.example",
                    raw.server.frame_ancestors
                ),
            ));
        }
        let settings = Settings {
            listen,
            shutdown_grace: std::time::Duration::from_secs(raw.server.shutdown_grace_secs),
            frame_ancestors,
            widget_libs_dir: if raw.server.widget_libs_dir.as_os_str().is_empty() {
                PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/web/widget-libs/dist"))
            } else {
                raw.server.widget_libs_dir
            },
            auth,
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
                dense_weight: raw.retrieval.dense_weight,
                timeout: std::time::Duration::from_millis(raw.retrieval.timeout_ms),
            },
            embedding: EmbeddingSettings {
                provider,
                allow_bm25_fallback: raw.embedding.allow_bm25_fallback,
                flags_model,
            },
            index,
            llm,
            llm_model: raw.llm.model,
            llm_context_window: raw.llm.context_window,
            llm_max_answer_tokens: raw.llm.max_answer_tokens,
            database: DatabaseSettings {
                url: database_url,
                max_connections: raw.database.max_connections.max(1),
                acquire_timeout: std::time::Duration::from_secs(raw.database.acquire_timeout_secs),
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
            sockets: validate_sockets(raw.sockets)?,
            quotas: validate_quotas(raw.quotas)?,
            demo,
            data_dir,
        };
        settings.check_demo_exposure()?;
        Ok(settings)
    }

    /// The data directory (secrets, transcripts, the index), created if missing, readable by
    /// this user only (0700; a directory others could read is made private).
    pub fn ensure_data_dir(&self) -> std::io::Result<&Path> {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
            builder.mode(0o700);
            builder.create(&self.data_dir)?;
            let mode = std::fs::metadata(&self.data_dir)?.permissions().mode();
            if mode & 0o077 != 0 {
                std::fs::set_permissions(&self.data_dir, std::fs::Permissions::from_mode(0o700))?;
            }
        }
        #[cfg(not(unix))]
        builder.create(&self.data_dir)?;
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
        first_token_timeout: std::time::Duration::from_secs(raw.first_token_timeout_secs),
        retry_deadline: std::time::Duration::from_secs(raw.retry_deadline_secs),
        max_attempts: raw.max_attempts,
        retry_backoff: std::time::Duration::from_millis(raw.retry_backoff_ms),
        answer_deadline: std::time::Duration::from_secs(raw.answer_deadline_secs),
    }
}

/// The bounds of an answer's LLM call: each positive, the answer's deadline past the first
/// token's.
fn validate_llm_bounds(raw: &RawLlm) -> Result<(), ConfigError> {
    if raw.first_token_timeout_secs == 0 {
        return Err(invalid("llm.first_token_timeout_secs", "must be positive"));
    }
    if raw.max_attempts == 0 || raw.max_attempts > 10 {
        return Err(invalid("llm.max_attempts", "must be between 1 and 10"));
    }
    if raw.retry_backoff_ms == 0 || raw.retry_backoff_ms > 60_000 {
        return Err(invalid(
            "llm.retry_backoff_ms",
            "must be between 1 and 60000",
        ));
    }
    if raw.answer_deadline_secs <= raw.first_token_timeout_secs {
        return Err(invalid(
            "llm.answer_deadline_secs",
            format!(
                "must be more than llm.first_token_timeout_secs ({})",
                raw.first_token_timeout_secs
            ),
        ));
    }
    Ok(())
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

fn validate_auth(raw: RawAuth) -> Result<AuthSettings, ConfigError> {
    let secret = non_empty(raw.secret).map(SecretString::from);
    if let Some(secret) = &secret {
        use secrecy::ExposeSecret;
        let bytes = secret.expose_secret().len();
        if bytes < MIN_SECRET_BYTES {
            return Err(invalid(
                "auth.secret",
                format!(
                    "has {bytes} bytes; at least {MIN_SECRET_BYTES} are required (leave it empty \
                     to have a random one generated)"
                ),
            ));
        }
    }
    if raw.max_token_lifetime_secs == 0 {
        return Err(invalid("auth.max_token_lifetime_secs", "must be positive"));
    }
    if raw.token_ttl_secs == 0 || raw.token_ttl_secs > raw.max_token_lifetime_secs {
        return Err(invalid(
            "auth.token_ttl_secs",
            format!(
                "{} must be positive and at most auth.max_token_lifetime_secs ({})",
                raw.token_ttl_secs, raw.max_token_lifetime_secs
            ),
        ));
    }
    Ok(AuthSettings {
        secret,
        token_ttl_secs: raw.token_ttl_secs,
        leeway_secs: raw.leeway_secs,
        issuer: non_empty(raw.issuer),
        audience: non_empty(raw.audience),
        max_token_lifetime_secs: raw.max_token_lifetime_secs,
    })
}

/// The shortest `auth.secret` accepted, as `auth::MIN_SECRET_BYTES` (config imports nothing).
const MIN_SECRET_BYTES: usize = 32;

fn validate_demo(raw: RawDemo, auth: &AuthSettings) -> Result<Option<DemoSettings>, ConfigError> {
    if !raw.enabled {
        return Ok(None);
    }
    let prefix_ok = !raw.learner_prefix.is_empty()
        && raw.learner_prefix.len() <= 40
        && raw
            .learner_prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !prefix_ok {
        return Err(invalid(
            "demo.learner_prefix",
            format!(
                "{:?} must be 1 to 40 letters, digits, '.', '_' or '-'",
                raw.learner_prefix
            ),
        ));
    }
    if raw.token_ttl_secs == 0 || raw.token_ttl_secs > auth.max_token_lifetime_secs {
        return Err(invalid(
            "demo.token_ttl_secs",
            format!(
                "{} must be positive and at most auth.max_token_lifetime_secs ({})",
                raw.token_ttl_secs, auth.max_token_lifetime_secs
            ),
        ));
    }
    Ok(Some(DemoSettings {
        learner_prefix: raw.learner_prefix,
        learner_name: raw.learner_name,
        token_ttl_secs: raw.token_ttl_secs,
        allow_public: raw.allow_public,
    }))
}

fn validate_sockets(raw: RawSockets) -> Result<SocketSettings, ConfigError> {
    let positive = [
        ("sockets.max_connections", raw.max_connections as u64),
        (
            "sockets.max_connections_per_learner",
            raw.max_connections_per_learner as u64,
        ),
        (
            "sockets.max_connections_per_address",
            raw.max_connections_per_address as u64,
        ),
        ("sockets.idle_timeout_secs", raw.idle_timeout_secs),
        ("sockets.ping_every_secs", raw.ping_every_secs),
        ("sockets.pong_timeout_secs", raw.pong_timeout_secs),
    ];
    for (key, value) in positive {
        if value == 0 {
            return Err(invalid(key, "must be positive"));
        }
    }
    if raw.outbound_frames < 16 {
        return Err(invalid("sockets.outbound_frames", "must be at least 16"));
    }
    let mut allowed_origins = Vec::new();
    for origin in raw.allowed_origins {
        let trimmed = origin.trim().trim_end_matches('/').to_ascii_lowercase();
        let valid = trimmed.split_once("://").is_some_and(|(scheme, host)| {
            matches!(scheme, "http" | "https") && !host.is_empty() && !host.contains('/')
        });
        if !valid {
            return Err(invalid(
                "sockets.allowed_origins",
                format!("{origin:?} is not an origin like https://school.example"),
            ));
        }
        allowed_origins.push(trimmed);
    }
    Ok(SocketSettings {
        max_connections: raw.max_connections,
        max_connections_per_learner: raw.max_connections_per_learner,
        max_connections_per_address: raw.max_connections_per_address,
        idle_timeout: std::time::Duration::from_secs(raw.idle_timeout_secs),
        ping_every: std::time::Duration::from_secs(raw.ping_every_secs),
        pong_timeout: std::time::Duration::from_secs(raw.pong_timeout_secs),
        outbound_frames: raw.outbound_frames,
        allowed_origins,
    })
}

fn validate_quotas(raw: RawQuotas) -> Result<Quotas, ConfigError> {
    if raw.stream_lease_secs < 60 {
        return Err(invalid("quotas.stream_lease_secs", "must be at least 60"));
    }
    if raw.git_clones == 0 {
        return Err(invalid("quotas.git_clones", "must be positive"));
    }
    if raw.git_clones_per_learner == 0 {
        return Err(invalid("quotas.git_clones_per_learner", "must be positive"));
    }
    Ok(Quotas {
        tokens_per_day: raw.tokens_per_day,
        streams_per_learner: raw.streams_per_learner,
        stream_lease: std::time::Duration::from_secs(raw.stream_lease_secs),
        projects_per_learner: raw.projects_per_learner,
        upload_bytes_per_day: raw.upload_bytes_per_day,
        git_clones: raw.git_clones,
        git_clones_per_learner: raw.git_clones_per_learner,
        attaches_per_minute: raw.attaches_per_minute,
        feedback_per_minute: raw.feedback_per_minute,
        mentor_requests_per_hour: raw.mentor_requests_per_hour,
    })
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
    fn secrets_never_show_in_the_settings_debug_output() {
        let settings = Settings::validate(
            raw_from(
                "[auth]\nsecret = \"auth-secret-0123456789abcdef0123456789\"\n\
                 [llm]\nbase_url = \"http://127.0.0.1:9/v1\"\napi_key = \"sk-llm-key-42\"\n\
                 [database]\nurl = \"postgres://app:db-pass-77@db.internal/companion\"\n\
                 [index]\nbackend = \"qdrant\"\nurl = \"http://q:6334\"\napi_key = \"qdrant-key-9\"",
            )
            .unwrap(),
            &NoEnv,
        )
        .unwrap();
        let debug = format!("{settings:?} {settings:#?}");
        for secret in [
            "auth-secret-0123456789",
            "sk-llm-key-42",
            "db-pass-77",
            "qdrant-key-9",
        ] {
            assert!(!debug.contains(secret), "{secret} in {debug}");
        }
        assert!(
            debug.contains("postgres://***@db.internal/companion"),
            "{debug}"
        );
    }

    #[test]
    fn a_short_auth_secret_and_an_unbounded_token_lifetime_are_refused() {
        for (extra, key) in [
            ("[auth]\nsecret = \"short-secret\"", "auth.secret"),
            (
                "[auth]\nmax_token_lifetime_secs = 60\ntoken_ttl_secs = 3600",
                "auth.token_ttl_secs",
            ),
            ("[demo]\ntoken_ttl_secs = 99999999", "demo.token_ttl_secs"),
            ("[demo]\nlearner_prefix = \"a b\"", "demo.learner_prefix"),
        ] {
            let err = Settings::validate(raw_from(extra).unwrap(), &NoEnv)
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{extra}: {err}");
        }
        let settings = Settings::validate(
            raw_from("[auth]\nissuer = \"platform\"\naudience = \"companion\"").unwrap(),
            &NoEnv,
        )
        .unwrap();
        assert_eq!(settings.auth.issuer.as_deref(), Some("platform"));
        assert_eq!(settings.auth.audience.as_deref(), Some("companion"));
    }

    #[test]
    fn a_qdrant_cluster_layout_is_read_and_checked() {
        let qdrant = "[index]\nbackend = \"qdrant\"\nurl = \"http://q:6334\"\n";
        let settings = Settings::validate(
            raw_from(&format!(
                "{qdrant}shards = 6\nreplication_factor = 2\nwrite_consistency = 2"
            ))
            .unwrap(),
            &NoEnv,
        )
        .unwrap();
        let IndexSettings::Qdrant { layout, .. } = settings.index else {
            panic!("not the qdrant backend");
        };
        assert_eq!(
            layout,
            CollectionLayout {
                shards: 6,
                replication_factor: 2,
                write_consistency: 2
            }
        );
        for (extra, key) in [
            ("shards = 0", "index.shards"),
            ("replication_factor = 0", "index.replication_factor"),
            ("write_consistency = 3", "index.write_consistency"),
        ] {
            let err = Settings::validate(raw_from(&format!("{qdrant}{extra}")).unwrap(), &NoEnv)
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{extra}: {err}");
        }
    }

    #[test]
    fn the_demo_is_refused_on_a_public_address_unless_allowed() {
        let err = Settings::validate(
            raw_from("[server]\nlisten = \"0.0.0.0:8080\"").unwrap(),
            &NoEnv,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("demo.enabled") && err.contains("0.0.0.0:8080"),
            "{err}"
        );
        for allowed in [
            "[server]\nlisten = \"0.0.0.0:8080\"\n[demo]\nallow_public = true",
            "[server]\nlisten = \"0.0.0.0:8080\"\n[demo]\nenabled = false",
            "[server]\nlisten = \"[::1]:8080\"",
        ] {
            Settings::validate(raw_from(allowed).unwrap(), &NoEnv)
                .unwrap_or_else(|e| panic!("{allowed}: {e}"));
        }
        // Settings changed in Rust after validation are checked again at start-up.
        let mut settings = Settings::defaults(Path::new("/tmp/companion-demo"));
        settings.listen = "10.0.0.5:80".parse().unwrap();
        assert!(settings.check_demo_exposure().is_err());
    }

    #[test]
    fn unknown_key_is_rejected_by_name() {
        let err = raw_from("[server]\nlisten_port = 3")
            .unwrap_err()
            .to_string();
        assert!(err.contains("listen_port"), "{err}");
    }

    #[test]
    fn the_fusion_weight_defaults_to_even_and_is_refused_outside_zero_to_one() {
        let settings = Settings::validate(raw_from("").unwrap(), &NoEnv).unwrap();
        assert_eq!(settings.retrieval.dense_weight, 0.5);
        let settings =
            Settings::validate(raw_from("[retrieval]\ndense_weight = 0.7").unwrap(), &NoEnv)
                .unwrap();
        assert_eq!(settings.retrieval.dense_weight, 0.7);
        for bad in ["-0.1", "1.5", "nan"] {
            let err = Settings::validate(
                raw_from(&format!("[retrieval]\ndense_weight = {bad}")).unwrap(),
                &NoEnv,
            )
            .unwrap_err()
            .to_string();
            assert!(err.contains("retrieval.dense_weight"), "{bad}: {err}");
        }
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
    fn the_llm_call_bounds_are_validated_by_key() {
        let settings = Settings::validate(
            raw_from("[llm]\nbase_url = \"http://127.0.0.1:9/v1\"").unwrap(),
            &NoEnv,
        )
        .unwrap();
        let llm = settings.llm.unwrap();
        assert_eq!(llm.max_attempts, 4);
        assert!(llm.first_token_timeout < llm.answer_deadline);
        for (extra, key) in [
            (
                "[llm]\nfirst_token_timeout_secs = 0",
                "llm.first_token_timeout_secs",
            ),
            ("[llm]\nmax_attempts = 0", "llm.max_attempts"),
            ("[llm]\nretry_backoff_ms = 0", "llm.retry_backoff_ms"),
            (
                "[llm]\nfirst_token_timeout_secs = 30\nanswer_deadline_secs = 30",
                "llm.answer_deadline_secs",
            ),
            ("[retrieval]\ntimeout_ms = 0", "retrieval.timeout_ms"),
            (
                "[database]\nacquire_timeout_secs = 0",
                "database.acquire_timeout_secs",
            ),
        ] {
            let err = Settings::validate(raw_from(extra).unwrap(), &NoEnv)
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{extra}: {err}");
        }
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
