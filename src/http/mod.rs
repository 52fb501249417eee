//! HTTP: the router and shared state; a file or folder per resource (zero2prod's `routes/`):
//! every `/api/v1/learners/{id}...` route in [`learners`], the mentor's API in [`mentor`], the
//! WebSocket in [`ws`], the course teams' prompt studio in [`studio`] and their course policies
//! in [`policies`]. Who may do what is
//! [`access`], who is calling and what they sent is
//! [`extract`], every failure is one [`ApiError`]. Only this module knows axum, status codes and
//! wire JSON; the rules live in the domain modules.
pub mod access;
pub mod assets;
pub mod conversations;
pub mod courses;
pub mod demo;
mod error;
pub mod extract;
pub mod health;
pub mod learners;
pub mod markdown;
pub mod me;
pub mod mentor;
pub mod metrics;
pub mod openapi;
pub mod pages;
pub mod policies;
pub mod quota;
pub mod security;
pub mod studio;
pub mod widget;
pub mod ws;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{MethodFilter, MethodRouter, get, on};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use error::{ApiError, ErrorBody, ErrorChain};

use crate::auth::TokenKeys;
use crate::chat::ChatDeps;
use crate::config::{DemoSettings, Limits};

/// Shared by every handler; clones are cheap handles.
#[derive(Clone)]
pub struct AppState {
    pub chat: ChatDeps,
    pub keys: Arc<TokenKeys>,
    pub limits: Limits,
    pub demo: Option<DemoSettings>,
    /// Who may frame the pages (`server.frame_ancestors`).
    pub frame_ancestors: Arc<str>,
    pub pages: Arc<pages::CoursePages>,
    pub ready: Arc<AtomicBool>,
    /// What this node's ingest of the content did, once it is done (shown on `/readyz`).
    pub indexed: Arc<std::sync::OnceLock<crate::retrieval::ingest::IngestReport>>,
    /// Answers in flight, waited for at shutdown.
    pub turns: TaskTracker,
    /// Stop taking new questions and close sockets once their answer is done.
    pub shutdown: CancellationToken,
    /// The grace period is over: answers still streaming stop and are stored as interrupted.
    pub turn_shutdown: CancellationToken,
    /// Sockets open on this node, counted against `sockets.*`; the socket settings.
    pub sockets: Arc<ws::sockets::Sockets>,
    /// Per-learner quotas, counted in the database ([`quota`]).
    pub quotas: Arc<quota::Quotas>,
    /// Feedback, flags, annotations, search: what the mentor's review reads and writes.
    pub review: Arc<crate::store::Store>,
    /// Page sizes of the conversation endpoints (and the answers' ownership settings).
    pub transcripts: crate::config::TranscriptSettings,
    /// This node's figures, served at `/metrics`.
    pub metrics: Arc<metrics::Metrics>,
    /// Conversations untouched this long are purged (`retention.days`); `None`: kept.
    pub retention: Option<std::time::Duration>,
    /// The chat widget's rendering libraries, read at start-up ([`widget`]).
    pub widget_libs: Arc<widget::WidgetLibs>,
    /// The prompt studio's replays running on this node and the files its evals read.
    pub studio: Arc<studio::StudioState>,
}

impl AppState {
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}

pub fn router(state: AppState) -> Router {
    let api = api_routes()
        .into_iter()
        .fold(Router::new(), |router, route| {
            router.route(route.path, route.handler)
        });
    let headers = security::SecurityHeaders::new(&state.frame_ancestors);
    // A course site that embeds the widget (`sockets.allowed_origins`) reads the learner's
    // history and transparency panel from another origin.
    let api = api.layer(security::cors(&state.sockets.settings.allowed_origins));
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics::metrics))
        .route("/", get(pages::home))
        .route("/course/{*path}", get(pages::page))
        .merge(assets::routes())
        .merge(widget::routes())
        .merge(api)
        .with_state(state.clone())
        // Every socket holds the state for its life: one shared copy, not a 632-byte clone each.
        .merge(
            Router::new()
                .route("/ws", get(ws::upgrade))
                .with_state(Arc::new(state)),
        )
        .layer(axum::middleware::map_response(
            move |response: axum::response::Response| {
                let headers = headers.clone();
                async move { headers.apply(response) }
            },
        ))
        .layer(
            tower_http::trace::TraceLayer::new_for_http()
                .make_span_with(security::span_without_query),
        )
}

/// Every `/api/...` route: the router is built from this table, and a test checks that the
/// OpenAPI document ([`openapi`]) describes each entry.
pub fn api_routes() -> Vec<ApiRoute> {
    let mut routes = vec![
        ApiRoute::new(Method::GET, "/api/openapi.json", openapi::document),
        ApiRoute::new(Method::POST, "/api/v1/demo/token", demo::demo_token),
        ApiRoute::new(
            Method::GET,
            "/api/v1/conversations/{id}",
            conversations::conversation,
        ),
        ApiRoute::new(
            Method::GET,
            "/api/v1/courses/{course}/policy",
            policies::policy,
        ),
        ApiRoute::new(
            Method::PUT,
            "/api/v1/courses/{course}/policy",
            policies::put_course,
        ),
        ApiRoute::new(
            Method::DELETE,
            "/api/v1/courses/{course}/policy",
            policies::delete_course,
        ),
        ApiRoute::new(
            Method::GET,
            "/api/v1/courses/{course}/policy/history",
            policies::history,
        ),
        ApiRoute::new(
            Method::PUT,
            "/api/v1/courses/{course}/projects/{project}/policy",
            policies::put_project,
        ),
        ApiRoute::new(
            Method::DELETE,
            "/api/v1/courses/{course}/projects/{project}/policy",
            policies::delete_project,
        ),
        ApiRoute::new(
            Method::GET,
            "/api/v1/courses/{course}/citations",
            courses::citations,
        ),
        ApiRoute::new(Method::GET, "/api/v1/me/conversations", me::conversations),
        ApiRoute::new(Method::GET, "/api/v1/me/transparency", me::transparency),
    ];
    routes.extend(learners::routes());
    routes.extend(mentor::routes());
    routes.extend(studio::routes());
    routes
}

/// One REST route: a method, a path and the handler that serves them.
pub struct ApiRoute {
    pub method: Method,
    pub path: &'static str,
    handler: MethodRouter<AppState>,
}

impl ApiRoute {
    pub fn new<H, T>(method: Method, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        let filter = MethodFilter::try_from(method.clone())
            .unwrap_or_else(|_| panic!("{method} is not a method axum routes"));
        Self {
            handler: on(filter, handler),
            method,
            path,
        }
    }
}
