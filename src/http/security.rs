//! What every response says to the browser about itself (`Content-Security-Policy` with
//! `frame-ancestors`, `X-Content-Type-Options: nosniff`, `Referrer-Policy`), and request spans
//! that never record a query string (where `?token=` travels).
use axum::http::header::{
    CONTENT_SECURITY_POLICY, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::{HeaderValue, Request};
use axum::response::Response;

/// The headers added to every response.
#[derive(Clone)]
pub struct SecurityHeaders {
    csp: HeaderValue,
    /// For browsers without CSP level 2, when nobody may frame the pages.
    frame_options: Option<HeaderValue>,
}

impl SecurityHeaders {
    /// The policy for `frame_ancestors` (`'none'`, or the origins that may frame the pages).
    /// The pages load only their own scripts, styles and sockets (`web/`: no inline script,
    /// no CDN); the favicon is a `data:` URL.
    pub fn new(frame_ancestors: &str) -> Self {
        let csp = format!(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
             frame-ancestors {frame_ancestors}"
        );
        Self {
            csp: HeaderValue::from_str(&csp).unwrap_or_else(|_| {
                HeaderValue::from_static("default-src 'self'; frame-ancestors 'none'")
            }),
            frame_options: (frame_ancestors == "'none'").then(|| HeaderValue::from_static("DENY")),
        }
    }

    /// `response` with the headers (a handler's own value of one of them is kept).
    pub fn apply(&self, mut response: Response) -> Response {
        let headers = response.headers_mut();
        headers
            .entry(CONTENT_SECURITY_POLICY)
            .or_insert_with(|| self.csp.clone());
        headers
            .entry(X_CONTENT_TYPE_OPTIONS)
            .or_insert_with(|| HeaderValue::from_static("nosniff"));
        // A URL that carried a token is never sent on as a referrer.
        headers
            .entry(REFERRER_POLICY)
            .or_insert_with(|| HeaderValue::from_static("no-referrer"));
        if let Some(value) = &self.frame_options {
            headers
                .entry(X_FRAME_OPTIONS)
                .or_insert_with(|| value.clone());
        }
        response
    }
}

/// Cross-origin reads of the REST API by the course sites that embed the widget (the origins
/// its socket accepts, `sockets.allowed_origins`), with a bearer token, never cookies. No
/// origin listed: no CORS header is ever sent.
pub fn cors(allowed_origins: &[String]) -> tower_http::cors::CorsLayer {
    use axum::http::{Method, header};
    let origins = allowed_origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect::<Vec<_>>();
    tower_http::cors::CorsLayer::new()
        .allow_origin(tower_http::cors::AllowOrigin::list(origins))
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([header::AUTHORIZATION, header::ACCEPT, header::CONTENT_TYPE])
}

/// The request span: method and path, never the query (`/ws?token=…`, `/?token=…`).
pub fn span_without_query(request: &Request<axum::body::Body>) -> tracing::Span {
    tracing::debug_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        version = ?request.version(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a `fmt` subscriber at `debug` writes while `f` runs.
    fn logs_of(f: impl FnOnce()) -> String {
        use std::sync::{Arc, Mutex};
        let buffer = Arc::new(Mutex::new(Vec::<u8>::new()));
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || Capture(writer.clone()))
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let bytes = buffer.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    struct Capture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_request_span_leaves_the_query_out() {
        let request = Request::get("/ws?token=eyJsecret.part&conversation=x")
            .body(axum::body::Body::empty())
            .unwrap();
        let logs = logs_of(|| {
            span_without_query(&request).in_scope(|| tracing::info!("handled"));
        });
        assert!(logs.contains("handled") && logs.contains("/ws"), "{logs}");
        assert!(!logs.contains("eyJsecret"), "{logs}");
    }

    #[test]
    fn every_response_gets_the_policy_and_a_handlers_own_value_is_kept() {
        let headers = SecurityHeaders::new("'none'");
        let response = headers.apply(Response::new(axum::body::Body::empty()));
        let csp = response.headers()[CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap();
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert_eq!(response.headers()[X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(response.headers()[X_FRAME_OPTIONS], "DENY");
        let mut own = Response::new(axum::body::Body::empty());
        own.headers_mut()
            .insert(REFERRER_POLICY, HeaderValue::from_static("same-origin"));
        let response = SecurityHeaders::new("https://platform.example").apply(own);
        assert_eq!(response.headers()[REFERRER_POLICY], "same-origin");
        assert!(response.headers().get(X_FRAME_OPTIONS).is_none());
    }
}
