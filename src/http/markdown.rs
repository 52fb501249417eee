//! Markdown to HTML for the pages (course content) and the mentor's digest, with pulldown-cmark.
//! The text may come from a model or a learner, so the HTML can never carry markup of its own:
//! raw HTML in the Markdown is shown as text, links and images go only to `http(s)`, `mailto`
//! or relative addresses (a `javascript:` link keeps its text and loses its target). Headings
//! get the anchors chunks cite; task items (`- [x] ...`) become `<li class="goal touched">`.
use pulldown_cmark::{CowStr, Event, HeadingLevel, Options, Parser, Tag, TagEnd};

use crate::retrieval::chunk::slug;

/// Markdown to safe HTML.
pub fn render(markdown: &str) -> String {
    let options =
        Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TASKLISTS;
    let mut events = Vec::new();
    let mut heading: Option<(HeadingLevel, Vec<Event>)> = None;
    // Per open link or image: whether it was kept (its end is kept too).
    let mut links_kept: Vec<bool> = Vec::new();
    let mut parser = Parser::new_ext(markdown, options).peekable();
    while let Some(event) = parser.next() {
        let event = match event {
            Event::Start(Tag::Heading { level, .. }) => {
                heading = Some((level, Vec::new()));
                continue;
            }
            Event::End(TagEnd::Heading(_)) => {
                if let Some((level, inner)) = heading.take() {
                    events.push(heading_start(level, &inner));
                    events.extend(inner);
                    events.push(Event::End(TagEnd::Heading(level)));
                }
                continue;
            }
            // Raw HTML is shown, never executed.
            Event::Html(raw) | Event::InlineHtml(raw) => Event::Text(raw),
            Event::Start(Tag::Item) => match parser.peek() {
                Some(Event::TaskListMarker(done)) => {
                    let class = if *done {
                        "goal touched"
                    } else {
                        "goal untouched"
                    };
                    parser.next();
                    Event::Html(CowStr::from(format!("<li class=\"{class}\">")))
                }
                _ => Event::Start(Tag::Item),
            },
            Event::Start(tag @ (Tag::Link { .. } | Tag::Image { .. })) => {
                let safe = match &tag {
                    Tag::Link { dest_url, .. } | Tag::Image { dest_url, .. } => {
                        is_safe_url(dest_url)
                    }
                    _ => false,
                };
                links_kept.push(safe);
                if !safe {
                    continue;
                }
                Event::Start(tag)
            }
            Event::End(end @ (TagEnd::Link | TagEnd::Image)) => {
                if !links_kept.pop().unwrap_or(false) {
                    continue;
                }
                Event::End(end)
            }
            other => other,
        };
        match heading.as_mut() {
            Some((_, inner)) => inner.push(event),
            None => events.push(event),
        }
    }
    let mut html = String::new();
    pulldown_cmark::html::push_html(&mut html, events.into_iter());
    html
}

/// A heading's start with the id its chunks cite: the slug of its text.
fn heading_start<'a>(level: HeadingLevel, inner: &[Event<'a>]) -> Event<'a> {
    let text: String = inner
        .iter()
        .filter_map(|e| match e {
            Event::Text(t) | Event::Code(t) => Some(t.as_ref()),
            _ => None,
        })
        .collect();
    Event::Start(Tag::Heading {
        level,
        id: Some(slug(&text).into()),
        classes: Vec::new(),
        attrs: Vec::new(),
    })
}

/// Relative addresses, anchors, and `http`, `https` and `mailto` ones. Browsers ignore
/// whitespace and control characters inside a scheme, so they are ignored here too.
fn is_safe_url(url: &str) -> bool {
    let url: String = url
        .chars()
        .filter(|c| !c.is_ascii_whitespace() && !c.is_control())
        .collect();
    let Some(colon) = url.find(':') else {
        return true;
    };
    let scheme = &url[..colon];
    // A colon after a path, query or fragment begins no scheme.
    if scheme.contains(['/', '?', '#']) {
        return true;
    }
    matches!(
        scheme.to_ascii_lowercase().as_str(),
        "http" | "https" | "mailto"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headings_get_the_anchor_that_chunks_cite() {
        let html = render("## Common mistakes: `while True`\n\nText");
        assert!(html.contains("id=\"common-mistakes-while-true\""), "{html}");
    }

    #[test]
    fn raw_html_in_content_is_escaped() {
        let html = render("Hello <script>alert(1)</script>");
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;"), "{html}");
    }

    #[test]
    fn model_or_learner_text_cannot_inject_markup() {
        let markdown = "# Digest\n\n\
            - \"<img src=x onerror=alert(1)>\"\n\
            - <script>alert(2)</script>\n\
            - [click me](javascript:alert(3)) and [also](JaVaScRiPt:alert(4))\n\
            - <javascript:alert(5)> and ![pic](javascript:alert(6))\n\
            - [tabbed](java\tscript:alert(7))\n\n\
            <div onclick=\"alert(8)\">block</div>\n";
        let html = render(markdown);
        // Every link above is unsafe: none is left, only its text.
        for bad in ["<img", "<script", "<div", "<a ", "href"] {
            assert!(!html.contains(bad), "{bad} in {html}");
        }
        assert!(
            html.contains("&lt;img src=x onerror=alert(1)&gt;"),
            "{html}"
        );
        assert!(html.contains("click me"), "{html}");
    }

    #[test]
    fn safe_links_are_kept() {
        let html =
            render("[course](/course/x#loops), [site](https://example.org), [me](mailto:a@b.c)");
        assert!(html.contains("href=\"/course/x#loops\""), "{html}");
        assert!(html.contains("href=\"https://example.org\""), "{html}");
        assert!(html.contains("href=\"mailto:a@b.c\""), "{html}");
    }

    #[test]
    fn task_items_become_goal_lines() {
        let html = render("- [x] loops — touched: file\n- [ ] tests — not touched yet\n- plain\n");
        assert!(html.contains("<li class=\"goal touched\">loops"), "{html}");
        assert!(
            html.contains("<li class=\"goal untouched\">tests"),
            "{html}"
        );
        assert!(html.contains("<li>plain</li>"), "{html}");
        assert!(!html.contains("checkbox"), "{html}");
    }
}
