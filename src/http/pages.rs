//! The demo course site: course Markdown rendered into `web/page.html` with the chat panel
//! (the widget's files are [`super::assets`]).
use std::collections::BTreeMap;
use std::path::Path;

use axum::extract::{Path as UrlPath, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use pulldown_cmark::{Event, HeadingLevel, Options, Parser, Tag, TagEnd};

use super::AppState;
use crate::retrieval::chunk::slug;
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

/// Every renderable page of the content folder, by URL.
#[derive(Default)]
pub struct CoursePages {
    pages: BTreeMap<String, Page>,
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
                    html: render_markdown(&doc.body),
                },
            );
        }
        Self { pages }
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
    fn nav(&self, course: &str, current: &str) -> String {
        let mut chapters: BTreeMap<(&str, &str), Vec<&Page>> = BTreeMap::new();
        for page in self.pages.values().filter(|p| p.course == course) {
            chapters
                .entry((page.chapter.as_str(), page.chapter_title.as_str()))
                .or_default()
                .push(page);
        }
        let mut html = String::from("<ul class=\"chapters\">");
        for ((_, title), pages) in chapters {
            html.push_str(&format!("<li><span>{}</span><ul>", escape(title)));
            for page in pages {
                let class = if page.url == current {
                    " class=\"current\""
                } else {
                    ""
                };
                html.push_str(&format!(
                    "<li{class}><a href=\"{}\">{}</a></li>",
                    escape(&page.url),
                    escape(&page.title)
                ));
            }
            html.push_str("</ul></li>");
        }
        html.push_str("</ul>");
        html
    }
}

/// Markdown to HTML, with heading ids equal to the anchors chunks cite.
pub fn render_markdown(body: &str) -> String {
    let mut events = Vec::new();
    let mut heading: Option<(HeadingLevel, Vec<Event>)> = None;
    for event in Parser::new_ext(body, Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH) {
        match event {
            Event::Start(Tag::Heading { level, .. }) => heading = Some((level, Vec::new())),
            Event::End(TagEnd::Heading(_)) => {
                if let Some((level, inner)) = heading.take() {
                    let text: String = inner
                        .iter()
                        .filter_map(|e| match e {
                            Event::Text(t) | Event::Code(t) => Some(t.to_string()),
                            _ => None,
                        })
                        .collect();
                    events.push(Event::Start(Tag::Heading {
                        level,
                        id: Some(slug(&text).into()),
                        classes: Vec::new(),
                        attrs: Vec::new(),
                    }));
                    events.extend(inner);
                    events.push(Event::End(TagEnd::Heading(level)));
                }
            }
            // Raw HTML in course files is shown, not executed.
            Event::Html(raw) | Event::InlineHtml(raw) => {
                let text = Event::Text(raw);
                match heading.as_mut() {
                    Some((_, inner)) => inner.push(text),
                    None => events.push(text),
                }
            }
            other => match heading.as_mut() {
                Some((_, inner)) => inner.push(other),
                None => events.push(other),
            },
        }
    }
    let mut html = String::new();
    pulldown_cmark::html::push_html(&mut html, events.into_iter());
    html
}

pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `GET /`: the course overview page. The query goes along: `/?token=…` is how a platform
/// hands the widget its learner's token.
pub async fn home(State(state): State<AppState>, RawQuery(query): RawQuery) -> Response {
    match state.pages.first() {
        Some(page) => match query {
            Some(query) => Redirect::temporary(&format!("{}?{query}", page.url)).into_response(),
            None => Redirect::temporary(&page.url).into_response(),
        },
        None => (StatusCode::NOT_FOUND, "no course content is loaded").into_response(),
    }
}

/// `GET /course/{*path}`: one course page with the chat panel.
pub async fn page(State(state): State<AppState>, UrlPath(path): UrlPath<String>) -> Response {
    let url = format!("/course/{path}");
    let Some(page) = state.pages.get(&url) else {
        return (StatusCode::NOT_FOUND, Html("<h1>Page not found</h1>")).into_response();
    };
    let html = PAGE_TEMPLATE
        .replace("{{title}}", &escape(&page.title))
        .replace("{{nav}}", &state.pages.nav(&page.course, &page.url))
        .replace("{{course}}", &escape(&page.course))
        .replace("{{page_url}}", &escape(&page.url))
        .replace("{{content}}", &page.html);
    Html(html).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headings_get_the_anchor_that_chunks_cite() {
        let html = render_markdown("## Common mistakes: `while True`\n\nText");
        assert!(html.contains("id=\"common-mistakes-while-true\""), "{html}");
    }

    #[test]
    fn raw_html_in_content_is_escaped() {
        let html = render_markdown("Hello <script>alert(1)</script>");
        assert!(!html.contains("<script>"), "{html}");
    }
}
