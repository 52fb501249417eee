//! The mentor's API: learners with activity since their last session, conversations with
//! sources and annotations, search across the caller's learners, annotations, flags and the
//! digest. Access follows [`super::access`]; a learner the caller may not see answers exactly
//! like a learner that does not exist. The page itself is a static asset ([`super::assets`]).
mod conversations;
mod dashboard;
mod digest;
mod flags;
mod search;

use axum::Router;
use axum::routing::{get, post};

use super::AppState;
use super::learners::export::export;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/mentor/learners", get(dashboard::learners))
        .route(
            "/api/v1/mentor/learners/{id}/conversations",
            get(conversations::learner_conversations),
        )
        .route("/api/v1/mentor/learners/{id}/digest", get(digest::digest))
        .route("/api/v1/mentor/learners/{id}/flags", get(flags::flags))
        .route("/api/v1/mentor/learners/{id}/export", get(export))
        .route(
            "/api/v1/mentor/conversations/{id}",
            get(conversations::conversation),
        )
        .route(
            "/api/v1/mentor/messages/{id}/annotations",
            post(conversations::annotate),
        )
        .route("/api/v1/mentor/flags/{id}/resolve", post(flags::resolve))
        .route("/api/v1/mentor/search", get(search::search))
}
