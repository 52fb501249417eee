//! The front end's static files (`web/`), compiled into the binary so it runs from any
//! directory: one table, one handler. `/widget.js` is the files of `web/widget/` in one
//! function scope (nothing of theirs becomes a global of the host page but the element). Each answer carries its content type and an `ETag`
//! (the content's hash) with `Cache-Control: no-cache`, so a browser revalidates and gets a
//! `304` until the binary changes.
use std::sync::LazyLock;

use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

use super::AppState;

const HTML: &str = "text/html; charset=utf-8";
pub(super) const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// A file of `web/` and where it is served.
pub struct Asset {
    pub url: &'static str,
    pub content_type: &'static str,
    pub body: &'static str,
}

/// The `<companion-chat>` element: `web/widget/*.js` in one function scope, which also knows
/// where the script was loaded from (the default `server`).
const WIDGET_JS: &str = concat!(
    "/* Companion chat widget: <companion-chat>. See the README and docs/protocol.md. */\n",
    "(() => {\n'use strict';\n",
    "const SCRIPT_ORIGIN = (() => {\n",
    "  try { return new URL('.', document.currentScript.src).href.replace(/\\/$/, ''); }\n",
    "  catch { return null; }\n",
    "})();\n",
    include_str!("../../web/widget/dom.js"),
    include_str!("../../web/widget/i18n.js"),
    include_str!("../../web/widget/render.js"),
    include_str!("../../web/widget/element.js"),
    "})();\n",
);

/// A file of `web/` served at `url`.
macro_rules! web_file {
    ($url:literal, $content_type:ident, $file:literal) => {
        Asset {
            url: $url,
            content_type: $content_type,
            body: include_str!(concat!("../../web/", $file)),
        }
    };
}

pub const ASSETS: &[Asset] = &[
    Asset {
        url: "/widget.js",
        content_type: JS,
        body: WIDGET_JS,
    },
    web_file!("/widget.css", CSS, "widget/widget.css"),
    web_file!("/static/demo.js", JS, "demo.js"),
    web_file!("/static/site.css", CSS, "site.css"),
    web_file!("/static/staff.js", JS, "staff.js"),
    web_file!("/static/staff.css", CSS, "staff.css"),
    web_file!("/mentor", HTML, "mentor.html"),
    web_file!("/mentor/mentor.js", JS, "mentor.js"),
    web_file!("/mentor/mentor.css", CSS, "mentor.css"),
    web_file!("/studio", HTML, "studio.html"),
    web_file!("/studio/studio.js", JS, "studio.js"),
    web_file!("/studio/studio.css", CSS, "studio.css"),
];

/// Each asset's `ETag`, in the order of [`ASSETS`].
static ETAGS: LazyLock<Vec<String>> =
    LazyLock::new(|| ASSETS.iter().map(|a| etag_of(a.body)).collect());

pub fn routes() -> Router<AppState> {
    ASSETS
        .iter()
        .enumerate()
        .fold(Router::new(), |router, (idx, asset)| {
            router.route(
                asset.url,
                get(move |headers: HeaderMap| serve(idx, headers)),
            )
        })
}

async fn serve(idx: usize, headers: HeaderMap) -> Response {
    let asset = &ASSETS[idx];
    revalidated(&headers, &ETAGS[idx], asset.content_type, asset.body)
}

/// A static body's `ETag`: the first 16 hex digits of its SHA-256, quoted.
pub(super) fn etag_of(body: &str) -> String {
    format!("\"{}\"", &hex::encode(Sha256::digest(body))[..16])
}

/// `body` with its `ETag` and `Cache-Control: no-cache`, or `304 Not Modified` when the
/// request's `If-None-Match` already names that tag.
pub(super) fn revalidated(
    headers: &HeaderMap,
    etag: &str,
    content_type: &'static str,
    body: impl IntoResponse,
) -> Response {
    let cache = [(header::ETAG, etag), (header::CACHE_CONTROL, "no-cache")];
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|t| t.trim() == etag));
    if fresh {
        return (StatusCode::NOT_MODIFIED, cache).into_response();
    }
    let content_type = [(header::CONTENT_TYPE, content_type)];
    (content_type, cache, body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_asset_has_its_type_and_a_revalidated_etag() {
        let idx = ASSETS
            .iter()
            .position(|a| a.url == "/mentor/mentor.js")
            .unwrap();
        let first = serve(idx, HeaderMap::new()).await;
        assert_eq!(first.status(), StatusCode::OK);
        assert_eq!(first.headers()[header::CONTENT_TYPE], JS);
        assert_eq!(first.headers()[header::CACHE_CONTROL], "no-cache");
        let etag = first.headers()[header::ETAG].clone();
        let mut headers = HeaderMap::new();
        headers.insert(header::IF_NONE_MATCH, etag);
        let again = serve(idx, headers).await;
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    }
}
