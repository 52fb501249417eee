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
const JS: &str = "text/javascript; charset=utf-8";
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

pub const ASSETS: &[Asset] = &[
    Asset {
        url: "/widget.js",
        content_type: JS,
        body: WIDGET_JS,
    },
    Asset {
        url: "/widget.css",
        content_type: CSS,
        body: include_str!("../../web/widget/widget.css"),
    },
    Asset {
        url: "/static/demo.js",
        content_type: JS,
        body: include_str!("../../web/demo.js"),
    },
    Asset {
        url: "/static/site.css",
        content_type: CSS,
        body: include_str!("../../web/site.css"),
    },
    Asset {
        url: "/static/staff.js",
        content_type: JS,
        body: include_str!("../../web/staff.js"),
    },
    Asset {
        url: "/static/staff.css",
        content_type: CSS,
        body: include_str!("../../web/staff.css"),
    },
    Asset {
        url: "/mentor",
        content_type: HTML,
        body: include_str!("../../web/mentor.html"),
    },
    Asset {
        url: "/mentor/mentor.js",
        content_type: JS,
        body: include_str!("../../web/mentor.js"),
    },
    Asset {
        url: "/mentor/mentor.css",
        content_type: CSS,
        body: include_str!("../../web/mentor.css"),
    },
    Asset {
        url: "/studio",
        content_type: HTML,
        body: include_str!("../../web/studio.html"),
    },
    Asset {
        url: "/studio/studio.js",
        content_type: JS,
        body: include_str!("../../web/studio.js"),
    },
    Asset {
        url: "/studio/studio.css",
        content_type: CSS,
        body: include_str!("../../web/studio.css"),
    },
];

/// Each asset's `ETag`, in the order of [`ASSETS`].
static ETAGS: LazyLock<Vec<String>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|a| format!("\"{}\"", &hex::encode(Sha256::digest(a.body))[..16]))
        .collect()
});

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
    let etag = ETAGS[idx].as_str();
    let cache = [(header::ETAG, etag), (header::CACHE_CONTROL, "no-cache")];
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|t| t.trim() == etag));
    if fresh {
        return (StatusCode::NOT_MODIFIED, cache).into_response();
    }
    let content_type = [(header::CONTENT_TYPE, asset.content_type)];
    (content_type, cache, asset.body).into_response()
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
