//! Extractors: who is calling (`Claims` from `Authorization: Bearer <token>`, and the
//! role-checked [`Reviewer`] and [`ProfileWriter`]), and request bodies and queries whose
//! rejections are [`ApiError`]s with the same `{"error": {...}}` shape as every other failure.
//! Handlers take these as arguments; none reads headers or unwraps a rejection itself
//! (axum `examples/jwt` and `examples/customize-extractor-error`).
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use super::{ApiError, AppState};
use crate::auth::{Claims, Role};

impl FromRequestParts<AppState> for Claims {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| ApiError::Unauthorized("missing bearer token".into()))?;
        Ok(state.keys.verify(token.trim())?)
    }
}

/// A mentor (their own learners) or an admin (every learner): the callers of the mentor's
/// collection endpoints. Anyone else gets a 403.
#[derive(Debug, Clone)]
pub struct Reviewer {
    pub claims: Claims,
    /// The mentor whose learners the caller sees; `None` for an admin, who sees everyone.
    pub mentor: Option<String>,
}

impl FromRequestParts<AppState> for Reviewer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let claims = Claims::from_request_parts(parts, state).await?;
        let mentor = match claims.role {
            Role::Admin => None,
            Role::Mentor => Some(claims.sub.clone()),
            _ => {
                return Err(ApiError::Forbidden(
                    "only mentors and admins use the mentor API".into(),
                ));
            }
        };
        Ok(Self { claims, mentor })
    }
}

/// The platform's service token or an admin: who may create or change a profile. Anyone else
/// gets a 403.
#[derive(Debug, Clone)]
pub struct ProfileWriter(pub Claims);

impl FromRequestParts<AppState> for ProfileWriter {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let claims = Claims::from_request_parts(parts, state).await?;
        if !super::access::can_write_profile(&claims) {
            return Err(ApiError::Forbidden(
                "only the platform's service token or an admin may write profiles".into(),
            ));
        }
        Ok(Self(claims))
    }
}

/// A JSON body (`Content-Type: application/json`); a bad one is a 400 that says why.
#[derive(Debug, Clone, Copy, Default, axum::extract::FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Json<T>(pub T);

impl<T> IntoResponse for Json<T>
where
    axum::Json<T>: IntoResponse,
{
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        Self::BadRequest(rejection.body_text())
    }
}

/// A query string; a bad one is a 400 that says why.
#[derive(Debug, Clone, Copy, Default, axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::BadRequest(rejection.body_text())
    }
}

/// A body the mentor page posts: JSON whatever its `Content-Type`, named in its errors
/// ("annotation body is not valid: ...").
pub trait NamedBody: DeserializeOwned {
    /// How the body is called in errors.
    const NAME: &'static str;

    /// What an empty (or all-whitespace) body stands for; `None` when it must not be empty.
    fn when_empty() -> Option<Self> {
        None
    }
}

/// A [`NamedBody`], read from the raw bytes.
#[derive(Debug, Clone)]
pub struct NamedJson<T>(pub T);

impl<T: NamedBody> FromRequest<AppState> for NamedJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(bytes_rejection)?;
        if bytes.iter().all(u8::is_ascii_whitespace)
            && let Some(value) = T::when_empty()
        {
            return Ok(Self(value));
        }
        serde_json::from_slice(&bytes)
            .map(Self)
            .map_err(|e| ApiError::BadRequest(format!("{} body is not valid: {e}", T::NAME)))
    }
}

fn bytes_rejection(rejection: BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::TooLarge(rejection.body_text())
    } else {
        ApiError::BadRequest(rejection.body_text())
    }
}

/// A `limit` query parameter: `default` when absent, else a number from 1 to `max`.
pub fn parse_limit(raw: Option<&str>, default: usize, max: usize) -> Result<usize, ApiError> {
    match raw {
        None => Ok(default),
        Some(raw) => match raw.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(ApiError::BadRequest(format!(
                "limit {raw:?} must be a number from 1 to {max}"
            ))),
        },
    }
}
