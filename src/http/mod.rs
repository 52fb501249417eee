//! HTTP: the router and shared state; a file or folder per resource (zero2prod's `routes/`):
//! every `/api/v1/learners/{id}...` route in [`learners`], the mentor's API in [`mentor`], the
//! WebSocket in [`ws`]. Who may do what is [`access`], who is calling and what they sent is
//! [`extract`], every failure is one [`ApiError`]. Only this module knows axum, status codes and
//! wire JSON; the rules live in the domain modules.
pub mod access;
pub mod assets;
pub mod conversations;
pub mod demo;
mod error;
pub mod extract;
pub mod health;
pub mod learners;
pub mod markdown;
pub mod mentor;
pub mod openapi;
pub mod pages;
pub mod ws;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    pub pages: Arc<pages::CoursePages>,
    pub ready: Arc<AtomicBool>,
    /// Answers in flight, waited for at shutdown.
    pub turns: TaskTracker,
    /// Stop taking new questions and close sockets once their answer is done.
    pub shutdown: CancellationToken,
    /// The grace period is over: answers still streaming stop and are stored as interrupted.
    pub turn_shutdown: CancellationToken,
    pub rate: Arc<RateLimiter>,
    /// Feedback, flags, annotations, search: what the mentor's review reads and writes.
    pub review: Arc<crate::store::Store>,
    /// Page sizes of the conversation endpoints (and the answers' ownership settings).
    pub transcripts: crate::config::TranscriptSettings,
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
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/ws", get(ws::upgrade))
        .route("/", get(pages::home))
        .route("/course/{*path}", get(pages::page))
        .merge(assets::routes())
        .merge(api)
        .with_state(state)
        .layer(tower_http::trace::TraceLayer::new_for_http())
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
    ];
    routes.extend(learners::routes());
    routes.extend(mentor::routes());
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

/// Questions per learner per minute, across connections and nodes' local view.
pub struct RateLimiter {
    per_minute: u32,
    recent: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl RateLimiter {
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute,
            recent: Mutex::new(HashMap::new()),
        }
    }

    /// Records a question now, or says no if the learner is over the limit.
    pub fn allow(&self, learner: &str) -> bool {
        if self.per_minute == 0 {
            return true;
        }
        let now = Instant::now();
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if recent.len() > 10_000 {
            recent.retain(|_, q| q.back().is_some_and(|t| now - *t < Duration::from_secs(60)));
        }
        let queue = recent.entry(learner.to_string()).or_default();
        while queue
            .front()
            .is_some_and(|t| now - *t >= Duration::from_secs(60))
        {
            queue.pop_front();
        }
        if queue.len() >= self.per_minute as usize {
            return false;
        }
        queue.push_back(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_limiter_refuses_past_the_limit_per_learner() {
        let limiter = RateLimiter::new(2);
        assert!(limiter.allow("a"));
        assert!(limiter.allow("a"));
        assert!(!limiter.allow("a"));
        assert!(limiter.allow("b"));
    }
}
