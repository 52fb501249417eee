//! The mentor's API: learners with activity since their last session, conversations with
//! sources and annotations, search across the caller's learners, annotations, flags and the
//! digest. Access follows [`super::access`]; a learner the caller may not see answers exactly
//! like a learner that does not exist. The page itself is a static asset ([`super::assets`]).
pub mod conversations;
pub mod dashboard;
pub mod digest;
pub mod flags;
pub mod search;

use axum::http::Method;

use super::ApiRoute;
use super::learners::export::mentor_export;

/// Every `/api/v1/mentor/...` route.
pub fn routes() -> Vec<ApiRoute> {
    vec![
        ApiRoute::new(Method::GET, "/api/v1/mentor/learners", dashboard::learners),
        ApiRoute::new(
            Method::GET,
            "/api/v1/mentor/learners/{id}/conversations",
            conversations::learner_conversations,
        ),
        ApiRoute::new(
            Method::GET,
            "/api/v1/mentor/learners/{id}/digest",
            digest::digest,
        ),
        ApiRoute::new(
            Method::GET,
            "/api/v1/mentor/learners/{id}/flags",
            flags::flags,
        ),
        // The learner's export, where the mentor page looks for it.
        ApiRoute::new(
            Method::GET,
            "/api/v1/mentor/learners/{id}/export",
            mentor_export,
        ),
        ApiRoute::new(
            Method::GET,
            "/api/v1/mentor/conversations/{id}",
            conversations::conversation,
        ),
        ApiRoute::new(
            Method::POST,
            "/api/v1/mentor/messages/{id}/annotations",
            conversations::annotate,
        ),
        ApiRoute::new(
            Method::POST,
            "/api/v1/mentor/flags/{id}/resolve",
            flags::resolve,
        ),
        ApiRoute::new(Method::GET, "/api/v1/mentor/search", search::search),
    ]
}
