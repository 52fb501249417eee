//! The demo course site: course Markdown rendered ([`super::markdown`]) into `web/page.html`
//! (a minijinja template, HTML-escaped) with the chat panel; the widget's files are
//! [`super::assets`].
use std::collections::BTreeMap;
use std::path::Path;

use axum::extract::{Path as UrlPath, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use minijinja::value::Serde;
use minijinja::{AutoEscape, Environment, Value, context};
use serde::Serialize;

use super::AppState;
use super::markdown;
use crate::retrieval::document;

const PAGE_TEMPLATE: &str = include_str!("../../web/page.html");

pub struct Page {
    pub url: String,
    pub title: String,
    pub course: String,
    pub chapter: String,
    pub chapter_title: String,
    pub html: String,
}

/// A chapter of the navigation, with its pages.
#[derive(Debug, Serialize)]
struct NavChapter<'a> {
    title: &'a str,
    pages: Vec<NavPage<'a>>,
}

#[derive(Debug, Serialize)]
struct NavPage<'a> {
    url: &'a str,
    title: &'a str,
    current: bool,
}

/// Every renderable page of the content folder, by URL.
pub struct CoursePages {
    pages: BTreeMap<String, Page>,
    templates: Environment<'static>,
}

impl Default for CoursePages {
    fn default() -> Self {
        Self {
            pages: BTreeMap::new(),
            templates: templates(),
        }
    }
}

/// `web/page.html`, every value HTML-escaped unless marked safe (the rendered Markdown).
fn templates() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_auto_escape_callback(|_| AutoEscape::Html);
    env.add_template("page.html", PAGE_TEMPLATE)
        .expect("web/page.html is a valid template (tested)");
    env
}

impl CoursePages {
    /// Reads the content folder; files that cannot be read are left out (ingest reports them).
    pub fn load(dir: &Path, max_bytes: u64) -> Self {
        let mut pages = BTreeMap::new();
        let root_name = dir
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        for entry in walkdir::WalkDir::new(dir)
            .into_iter()
            // A project's reference solutions are never served.
            .filter_entry(|e| {
                e.depth() == 0
                    || !crate::guard::policy::is_private(&e.file_name().to_string_lossy())
            })
            .filter_map(Result::ok)
        {
            let path = entry.path();
            if !entry.file_type().is_file()
                || path.extension().and_then(|e| e.to_str()) != Some("md")
            {
                continue;
            }
            let Ok(bytes) = std::fs::read(path) else {
                continue;
            };
            let relative = path.strip_prefix(dir).unwrap_or(path);
            let Ok(doc) = document::parse(relative, &root_name, &bytes, max_bytes) else {
                continue;
            };
            let url = doc.url.split('#').next().unwrap_or_default().to_string();
            pages.insert(
                url.clone(),
                Page {
                    url,
                    title: doc.title,
                    course: doc.course,
                    chapter: doc.chapter,
                    chapter_title: doc.chapter_title,
                    html: markdown::render(&doc.body),
                },
            );
        }
        Self {
            pages,
            ..Self::default()
        }
    }

    /// Whether `course` is the id of a course whose pages are loaded.
    pub fn has_course(&self, course: &str) -> bool {
        self.pages.values().any(|p| p.course == course)
    }

    pub fn get(&self, url: &str) -> Option<&Page> {
        self.pages.get(url)
    }

    fn first(&self) -> Option<&Page> {
        self.pages
            .values()
            .find(|p| p.url.ends_with("/index"))
            .or_else(|| self.pages.values().next())
    }

    /// Chapters in order, each with its pages, for one course.
    fn nav<'a>(&'a self, course: &str, current: &str) -> Vec<NavChapter<'a>> {
        let mut chapters: BTreeMap<(&str, &str), Vec<&Page>> = BTreeMap::new();
        for page in self.pages.values().filter(|p| p.course == course) {
            chapters
                .entry((page.chapter.as_str(), page.chapter_title.as_str()))
                .or_default()
                .push(page);
        }
        chapters
            .into_iter()
            .map(|((_, title), pages)| NavChapter {
                title,
                pages: pages
                    .into_iter()
                    .map(|p| NavPage {
                        url: &p.url,
                        title: &p.title,
                        current: p.url == current,
                    })
                    .collect(),
            })
            .collect()
    }

    /// One page inside `web/page.html`.
    fn render(&self, page: &Page) -> Result<String, minijinja::Error> {
        self.templates.get_template("page.html")?.render(context! {
            title => page.title.as_str(),
            course => page.course.as_str(),
            page_url => page.url.as_str(),
            nav => Value::from(Serde(self.nav(&page.course, &page.url))),
            content => Value::from_safe_string(page.html.clone()),
        })
    }
}

/// `GET /`: the course overview page. `/?token=…` is how a platform hands the widget its
/// learner's token: with a query, the first page is served here (the widget takes the token
/// and clears the address bar), so the token is never copied into a redirect's `Location`;
/// without one, a redirect to the first page.
pub async fn home(State(state): State<AppState>, RawQuery(query): RawQuery) -> Response {
    match state.pages.first() {
        Some(page) if query.is_some() => {
            let mut response = render_page(&state, page);
            response.headers_mut().insert(
                axum::http::header::CACHE_CONTROL,
                axum::http::HeaderValue::from_static("no-store"),
            );
            response
        }
        Some(page) => Redirect::temporary(&page.url).into_response(),
        None => (StatusCode::NOT_FOUND, "no course content is loaded").into_response(),
    }
}

/// `GET /course/{*path}`: one course page with the chat panel.
pub async fn page(State(state): State<AppState>, UrlPath(path): UrlPath<String>) -> Response {
    let url = format!("/course/{path}");
    let Some(page) = state.pages.get(&url) else {
        return (StatusCode::NOT_FOUND, Html("<h1>Page not found</h1>")).into_response();
    };
    render_page(&state, page)
}

fn render_page(state: &AppState, page: &Page) -> Response {
    let url = &page.url;
    match state.pages.render(page) {
        Ok(html) => Html(html).into_response(),
        Err(error) => {
            tracing::error!(error = %super::ErrorChain(&error), url, "cannot render a page");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(url: &str, title: &str, chapter: &str) -> Page {
        Page {
            url: url.into(),
            title: title.into(),
            course: "python".into(),
            chapter: chapter.into(),
            chapter_title: format!("Chapter {chapter}"),
            html: "<p>Lesson <em>text</em></p>".into(),
        }
    }

    #[test]
    fn a_page_is_rendered_with_its_navigation_and_escaped_values() {
        let mut pages = CoursePages::default();
        for p in [
            page("/course/python/01/a", "Loops & <b>ranges</b>", "01"),
            page("/course/python/02/b", "Files", "02"),
        ] {
            pages.pages.insert(p.url.clone(), p);
        }
        let html = pages
            .render(pages.get("/course/python/01/a").unwrap())
            .unwrap();
        assert!(html.contains("<p>Lesson <em>text</em></p>"), "{html}");
        assert!(
            html.contains("Loops &amp; &lt;b&gt;ranges&lt;&#x2f;b&gt;"),
            "{html}"
        );
        assert!(!html.contains("<b>ranges"), "{html}");
        assert!(html.contains("<span>Chapter 01</span>"), "{html}");
        assert!(html.contains("class=\"current\""), "{html}");
        assert!(html.contains(">Files</a>"), "{html}");
        assert!(!html.contains("{{"), "{html}");
    }
}
