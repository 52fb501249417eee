//! The chat widget's rendering libraries (`/widget/libs.js`): markdown-it, DOMPurify,
//! highlight.js and KaTeX at the versions pinned in `web/widget-libs/package-lock.json`,
//! bundled by `scripts/fetch-widget-libs.sh`, read once at start-up from
//! `server.widget_libs_dir`. They are not compiled in, so a build never needs npm; without
//! the file the route answers 404, the start-up log says how to fetch it, and the widget
//! shows answers as plain text (with citation links) instead of rendered Markdown.
use std::path::Path;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::AppState;

const LIBS_FILE: &str = "libs.js";

/// The bundle, if it was found, with its `ETag`.
#[derive(Debug, Default)]
pub struct WidgetLibs {
    bundle: Option<(String, String)>,
}

impl WidgetLibs {
    /// Reads `<dir>/libs.js`; a missing or unreadable file is logged once, not an error.
    pub fn load(dir: &Path) -> Self {
        let path = dir.join(LIBS_FILE);
        match std::fs::read_to_string(&path) {
            Ok(body) => {
                let etag = super::assets::etag_of(&body);
                tracing::info!(path = %path.display(), bytes = body.len(), "widget libraries loaded");
                Self {
                    bundle: Some((body, etag)),
                }
            }
            Err(error) => {
                tracing::warn!(
                    path = %path.display(),
                    %error,
                    "widget libraries missing: the chat widget shows answers as plain text; \
                     run scripts/fetch-widget-libs.sh (or set server.widget_libs_dir)"
                );
                Self::default()
            }
        }
    }

    pub fn is_loaded(&self) -> bool {
        self.bundle.is_some()
    }
}

pub fn routes() -> Router<AppState> {
    Router::new().route("/widget/libs.js", get(libs))
}

async fn libs(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some((body, etag)) = &state.widget_libs.bundle else {
        return (
            StatusCode::NOT_FOUND,
            "widget libraries not installed: run scripts/fetch-widget-libs.sh",
        )
            .into_response();
    };
    super::assets::revalidated(&headers, etag, super::assets::JS, body.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_bundle_is_not_an_error_and_a_present_one_is_read() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!WidgetLibs::load(dir.path()).is_loaded());
        std::fs::write(
            dir.path().join(LIBS_FILE),
            "window.CompanionWidgetLibs = {};",
        )
        .unwrap();
        assert!(WidgetLibs::load(dir.path()).is_loaded());
    }
}
