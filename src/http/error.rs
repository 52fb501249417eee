//! [`ApiError`]: every HTTP failure, mapped once to a status code and a clear JSON message,
//! `{"error": {"code": ..., "message": ...}}`. Domain errors convert into it whole, so their
//! causes stay attached; a 500 is logged here, once, with its chain of causes, and says only
//! "internal error" on the wire.
use std::error::Error as StdError;
use std::fmt;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::auth::AuthError;
use crate::guard::policy::PolicyError;
use crate::learner::validate::InvalidInput;
use crate::project::ProjectError;
use crate::prompt::replay::ReplayError;
use crate::prompt::versions::VersionError;
use crate::review::digest::DigestError;
use crate::review::erase::EraseError;
use crate::review::search::QueryError;
use crate::store::StoreError;

#[derive(thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unavailable(String),
    /// A body, file, archive or repository over a configured limit.
    #[error("{0}")]
    TooLarge(String),
    /// Well-formed but unusable: a binary file, a repository that cannot be cloned.
    #[error("{0}")]
    Unprocessable(String),
    /// A token that is missing, expired or not ours (401); one that cannot be signed (500).
    #[error(transparent)]
    Token(#[from] AuthError),
    /// Project files: bad names and archives 400, sizes 413, binaries and failed clones 422,
    /// storing or indexing 500.
    #[error(transparent)]
    Project(#[from] ProjectError),
    /// A learner id, profile or mentor session that breaks a rule (400).
    #[error(transparent)]
    Invalid(#[from] InvalidInput),
    /// A search query that cannot be searched for (400).
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error("reading or writing the database")]
    Store(#[from] StoreError),
    #[error("writing the digest")]
    Digest(#[from] DigestError),
    #[error("erasing a learner")]
    Erase(#[from] EraseError),
    #[error("a blocking task did not finish")]
    Task(#[from] tokio::task::JoinError),
    /// A prompt version, label or experiment refused: an unknown template or version 404, a
    /// template or split that breaks a rule 422, another editor's save first 409.
    #[error(transparent)]
    Version(#[from] VersionError),
    /// A replay refused: a filter over the bounds or matching nothing 422, an unknown replay
    /// 404, a cancel of one that ended 409.
    #[error(transparent)]
    Replay(#[from] ReplayError),
    /// A course policy refused: an unknown course 404, a text that breaks a rule 422.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// Another write of the same thing came first: nothing was written (409).
    #[error("{0}")]
    Conflict(String),
    /// Over a quota or a rate (429); `retry_after` seconds when waiting helps.
    #[error("{message}")]
    TooMany {
        message: String,
        retry_after: Option<u64>,
    },
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        const INTERNAL: (StatusCode, &str) = (StatusCode::INTERNAL_SERVER_ERROR, "internal");
        const BAD_REQUEST: (StatusCode, &str) = (StatusCode::BAD_REQUEST, "bad_request");
        const TOO_LARGE: (StatusCode, &str) = (StatusCode::PAYLOAD_TOO_LARGE, "too_large");
        const UNPROCESSABLE: (StatusCode, &str) =
            (StatusCode::UNPROCESSABLE_ENTITY, "unprocessable");
        const UNAUTHORIZED: (StatusCode, &str) = (StatusCode::UNAUTHORIZED, "unauthorized");
        match self {
            Self::Unauthorized(_) => UNAUTHORIZED,
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::BadRequest(_) | Self::Invalid(_) | Self::Query(_) => BAD_REQUEST,
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Self::TooLarge(_) => TOO_LARGE,
            Self::Unprocessable(_) => UNPROCESSABLE,
            Self::Token(AuthError::Missing | AuthError::Expired | AuthError::Invalid(_)) => {
                UNAUTHORIZED
            }
            Self::Token(
                AuthError::SecretFile { .. } | AuthError::Sign(_) | AuthError::WeakSecret { .. },
            ) => INTERNAL,
            Self::Project(error) => match error {
                ProjectError::InvalidProject(_)
                | ProjectError::InvalidPath { .. }
                | ProjectError::Duplicate { .. }
                | ProjectError::Link { .. }
                | ProjectError::UnknownArchive
                | ProjectError::BadArchive(_)
                | ProjectError::NoFiles(_)
                | ProjectError::GitUrl { .. } => BAD_REQUEST,
                ProjectError::FileTooLarge { .. }
                | ProjectError::ProjectTooLarge { .. }
                | ProjectError::ArchiveTooLarge { .. }
                | ProjectError::TooManyEntries { .. }
                | ProjectError::Bomb { .. }
                | ProjectError::GitTooLarge { .. } => TOO_LARGE,
                ProjectError::Binary { .. }
                | ProjectError::GitFailed { .. }
                | ProjectError::GitTimeout { .. } => UNPROCESSABLE,
                ProjectError::TooManyProjects { .. } => {
                    (StatusCode::TOO_MANY_REQUESTS, "too_many_requests")
                }
                ProjectError::Store(_)
                | ProjectError::Index(_)
                | ProjectError::Embed(_)
                | ProjectError::Task(_) => INTERNAL,
            },
            Self::Store(_) | Self::Digest(_) | Self::Erase(_) | Self::Task(_) => INTERNAL,
            Self::TooMany { .. } => (StatusCode::TOO_MANY_REQUESTS, "too_many_requests"),
            Self::Policy(error) => match error {
                PolicyError::UnknownCourse(_) => (StatusCode::NOT_FOUND, "not_found"),
                PolicyError::Invalid { .. } => UNPROCESSABLE,
                PolicyError::Read { .. } => INTERNAL,
            },
            Self::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Self::Version(error) => match error {
                VersionError::UnknownTemplate(_) | VersionError::NotFound(_) => {
                    (StatusCode::NOT_FOUND, "not_found")
                }
                VersionError::StaleParent { .. } | VersionError::Conflict(_) => {
                    (StatusCode::CONFLICT, "conflict")
                }
                VersionError::Syntax { .. }
                | VersionError::UnknownVariables { .. }
                | VersionError::Render(_)
                | VersionError::OverBudget { .. }
                | VersionError::Invalid(_) => UNPROCESSABLE,
            },
            Self::Replay(error) => match error {
                ReplayError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
                ReplayError::NotRunning(_) => (StatusCode::CONFLICT, "conflict"),
                ReplayError::TooMany(_)
                | ReplayError::NoTurnAsked
                | ReplayError::EmptyRange { .. }
                | ReplayError::NothingMatches => UNPROCESSABLE,
            },
        }
    }
}

/// The body of every error response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// The refusals most routes share, documented once for the OpenAPI document
/// (`responses((status = 200, ...), Unauthenticated, BadInput)`).
pub mod refusals {
    use super::ErrorBody;

    #[derive(utoipa::IntoResponses)]
    #[response(status = 400, description = "A bad body, query or value")]
    pub struct BadInput(#[allow(dead_code)] ErrorBody);

    #[derive(utoipa::IntoResponses)]
    #[response(status = 401, description = "Missing, bad or expired token")]
    pub struct Unauthenticated(#[allow(dead_code)] ErrorBody);

    #[derive(utoipa::IntoResponses)]
    #[response(status = 403, description = "The caller's role may not do this")]
    pub struct WrongRole(#[allow(dead_code)] ErrorBody);

    #[derive(utoipa::IntoResponses)]
    #[response(
        status = 404,
        description = "No such learner, or one the caller may not see"
    )]
    pub struct NoSuchLearner(#[allow(dead_code)] ErrorBody);

    #[derive(utoipa::IntoResponses)]
    #[response(status = 413, description = "Over a configured limit")]
    pub struct TooLarge(#[allow(dead_code)] ErrorBody);

    #[derive(utoipa::IntoResponses)]
    #[response(
        status = 422,
        description = "A binary file or a repository that cannot be cloned"
    )]
    pub struct Unusable(#[allow(dead_code)] ErrorBody);

    #[derive(utoipa::IntoResponses)]
    #[response(
        status = 404,
        description = "No such prompt template, version or experiment"
    )]
    pub struct NoSuchPrompt(#[allow(dead_code)] ErrorBody);

    #[derive(utoipa::IntoResponses)]
    #[response(
        status = 409,
        description = "Another version was saved on the same parent, or an experiment is already running: nothing was written"
    )]
    pub struct Conflict(#[allow(dead_code)] ErrorBody);

    #[derive(utoipa::IntoResponses)]
    #[response(
        status = 422,
        description = "A template with a syntax error, an undocumented variable or over the token budget (a coaching note that renders empty for a rule, a digest that does not read its data); a split that does not add up to 100, or an experiment on a coaching or digest template"
    )]
    pub struct InvalidPrompt(#[allow(dead_code)] ErrorBody);

    #[derive(utoipa::IntoResponses)]
    #[response(status = 404, description = "No such course in the course content")]
    pub struct NoSuchCourse(#[allow(dead_code)] ErrorBody);

    #[derive(utoipa::IntoResponses)]
    #[response(
        status = 409,
        description = "Another change of the same policy was stored at the same time: nothing was written"
    )]
    pub struct PolicyConflict(#[allow(dead_code)] ErrorBody);

    #[derive(utoipa::IntoResponses)]
    #[response(
        status = 422,
        description = "A policy that does not load: a TOML syntax error or an unknown key (named with its line), a window that ends before it starts, a reference that is not a file of the project's own `.solution/` folder (or is binary or huge), a project name that is not one; nothing was stored"
    )]
    pub struct InvalidPolicy(#[allow(dead_code)] ErrorBody);

    /// Several refusals documented as one (their status codes differ, so none hides another).
    macro_rules! refusal_set {
        ($(#[$doc:meta])* $name:ident = $($part:ident),+) => {
            $(#[$doc])*
            pub struct $name;

            impl utoipa::IntoResponses for $name {
                fn responses() -> std::collections::BTreeMap<
                    String,
                    utoipa::openapi::RefOr<utoipa::openapi::response::Response>,
                > {
                    let mut all = std::collections::BTreeMap::new();
                    $(all.extend(<$part as utoipa::IntoResponses>::responses());)+
                    all
                }
            }
        };
    }

    refusal_set!(
        /// A route for staff (mentors, course teams, admins).
        Staff = Unauthenticated, WrongRole
    );
    refusal_set!(
        /// A staff route that reads a body or a query.
        StaffInput = BadInput, Unauthenticated, WrongRole
    );
    refusal_set!(
        /// A route on one learner's data.
        LearnerInput = BadInput, Unauthenticated, NoSuchLearner
    );
    refusal_set!(
        /// A route that stores a learner's project files.
        FileUpload = BadInput, Unauthenticated, WrongRole, NoSuchLearner, TooLarge, Unusable
    );
    refusal_set!(
        /// A route that writes a prompt version or an experiment.
        PromptWrite = BadInput, Unauthenticated, WrongRole, NoSuchPrompt, Conflict, InvalidPrompt
    );
    refusal_set!(
        /// A route that writes a course's policy.
        PolicyWrite = BadInput, Unauthenticated, WrongRole, NoSuchCourse, PolicyConflict,
            TooLarge, InvalidPolicy
    );
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable, for programs: `unauthorized`, `forbidden`, `not_found`, `bad_request`,
    /// `unavailable`, `too_large`, `unprocessable`, `conflict`, `too_many_requests`, `internal`.
    pub code: &'static str,
    /// For people: what failed and with what input; "internal error" for a 500.
    pub message: String,
    /// Seconds to wait before trying again, on a 429 where waiting helps (also `Retry-After`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let message = if status == StatusCode::INTERNAL_SERVER_ERROR {
            // The one place a failure is logged; the caller learns nothing of the inside.
            tracing::error!(error = ?self, "request failed");
            "internal error".to_string()
        } else {
            self.to_string()
        };
        let retry_after = match &self {
            Self::TooMany { retry_after, .. } => *retry_after,
            _ => None,
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code,
                message,
                retry_after,
            },
        };
        let mut response = (status, Json(body)).into_response();
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}

/// The error and each of its causes, one a line (zero2prod's `error_chain_fmt`). A cause whose
/// text its error already shows (`"database: {0}"`) is not repeated.
impl fmt::Debug for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        error_chain_fmt(self, f)
    }
}

/// Shows an error with its chain of causes, for a log line: `error = %ErrorChain(&error)`.
pub struct ErrorChain<'a>(pub &'a (dyn StdError + 'a));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        error_chain_fmt(self.0, f)
    }
}

fn error_chain_fmt(error: &dyn StdError, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let mut shown = error.to_string();
    write!(f, "{shown}")?;
    let mut cause = error.source();
    while let Some(current) = cause {
        let text = current.to_string();
        if !shown.contains(&text) {
            write!(f, "\nCaused by:\n\t{text}")?;
        }
        shown = text;
        cause = current.source();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_of(error: ApiError) -> (StatusCode, serde_json::Value) {
        let response = error.into_response();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 10_000)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn project_errors_map_to_clear_statuses() {
        let status = |e: ProjectError| ApiError::from(e).status_and_code().0;
        assert_eq!(
            status(ProjectError::InvalidPath {
                path: "../x".into(),
                reason: "r"
            }),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status(ProjectError::Bomb {
                path: "x".into(),
                limit: 1
            }),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(
            status(ProjectError::Binary {
                path: "x".into(),
                reason: "r".into()
            }),
            StatusCode::UNPROCESSABLE_ENTITY
        );
        let (status, body) = body_of(ApiError::from(ProjectError::NoFiles("empty"))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"]["code"], "bad_request");
        assert_eq!(body["error"]["message"], "nothing to store: empty");
    }

    #[tokio::test]
    async fn a_database_failure_is_a_500_that_keeps_its_cause_off_the_wire() {
        let cause = StoreError::Decode {
            column: "status",
            value: "row 7".into(),
        };
        let error = ApiError::from(ProjectError::from(cause));
        let chain = format!("{error:?}");
        assert!(chain.contains("row 7"), "{chain}");
        let (status, body) = body_of(error).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body["error"]["code"], "internal");
        assert_eq!(body["error"]["message"], "internal error");
    }

    #[test]
    fn the_chain_names_each_cause_once() {
        let error = ApiError::from(StoreError::Decode {
            column: "status",
            value: "row 7".into(),
        });
        assert_eq!(
            format!("{error:?}"),
            "reading or writing the database\nCaused by:\n\tcolumn `status` holds \"row 7\", which is not a known value"
        );
    }

    #[tokio::test]
    async fn token_faults_are_401_with_their_reason() {
        let (status, body) = body_of(ApiError::from(AuthError::Expired)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["error"]["code"], "unauthorized");
        assert_eq!(body["error"]["message"], "token expired");
    }
}
