//! A learner's history exported page by page: each page bounded in messages and in bytes, with
//! the mentors' annotations on its messages; as data or as Markdown.
use std::collections::{BTreeMap, HashSet};

use super::{Annotation, Cursor};
use crate::learner::LearnerProfile;
use crate::store::{Store, StoreError};
use crate::transcript::StoredMessage;

/// Messages in one page when the caller does not say.
pub const DEFAULT_PAGE_MESSAGES: usize = 500;
/// The most messages a caller may ask for in one page.
pub const MAX_PAGE_MESSAGES: usize = 1000;
/// One page stays under this size; the rest follows through the next cursor.
const MAX_PAGE_BYTES: usize = 2 * 1024 * 1024;

/// One page of a learner's history.
#[derive(Debug, Clone)]
pub struct ExportPage {
    pub messages: Vec<StoredMessage>,
    /// The annotations on this page's messages, oldest first.
    pub annotations: Vec<Annotation>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<Cursor>,
}

/// Up to `limit` messages of the learner after `after` (from the start with `None`), cut
/// short before the page passes its byte bound.
pub async fn page(
    review: &Store,
    learner_id: &str,
    after: Option<&Cursor>,
    limit: usize,
) -> Result<ExportPage, StoreError> {
    let stored = review.learner_messages(learner_id, 0, after, limit).await?;
    let mut next = stored.next;
    let mut messages = stored.messages;
    let fit = fitting(messages.iter().map(weight), MAX_PAGE_BYTES);
    if fit < messages.len() {
        messages.truncate(fit);
        next = messages.last().map(|m| Cursor {
            created_at: m.created_at,
            id: m.id.clone(),
        });
    }
    let ids: HashSet<&str> = messages.iter().map(|m| m.id.as_str()).collect();
    let annotations = review
        .learner_annotations(learner_id)
        .await?
        .into_iter()
        .filter(|a| ids.contains(a.message_id.as_str()))
        .collect();
    Ok(ExportPage {
        messages,
        annotations,
        next,
    })
}

/// How many of the first items (of these sizes) fit in `max` bytes; at least one, so that a
/// cursor always moves on.
fn fitting(sizes: impl Iterator<Item = usize>, max: usize) -> usize {
    let mut total = 0;
    let mut n = 0;
    for size in sizes {
        total += size;
        if total > max && n > 0 {
            break;
        }
        n += 1;
    }
    n
}

/// About what one message weighs in an export.
fn weight(m: &StoredMessage) -> usize {
    let sources: usize = m
        .sources
        .iter()
        .map(|s| s.title.len() + s.section.len() + s.url.len() + s.snippet.len() + 40)
        .sum();
    m.text.len() + sources + 400
}

/// A page as Markdown: a title on the first page, a heading per conversation, each message
/// with its time, status, sources and the mentors' annotations as quotes.
pub fn markdown(
    learner_id: &str,
    profile: Option<&LearnerProfile>,
    page: &ExportPage,
    first_page: bool,
) -> String {
    let mut out = String::new();
    if first_page {
        let name = profile
            .and_then(|p| p.name.as_deref())
            .unwrap_or(learner_id);
        out.push_str(&format!(
            "# Companion history of {name} (`{learner_id}`)\n\n"
        ));
    }
    let mut by_message: BTreeMap<&str, Vec<&Annotation>> = BTreeMap::new();
    for a in &page.annotations {
        by_message.entry(a.message_id.as_str()).or_default().push(a);
    }
    let mut conversation = "";
    for m in &page.messages {
        if m.conversation_id != conversation {
            conversation = &m.conversation_id;
            out.push_str(&format!("## Conversation `{conversation}`\n\n"));
        }
        let when = chrono::DateTime::from_timestamp_millis(m.created_at)
            .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
            .unwrap_or_default();
        let who = if m.role == "learner" {
            "Learner"
        } else {
            "Companion"
        };
        out.push_str(&format!("### {who}, {when}"));
        if m.role != "learner" {
            out.push_str(&format!(" ({})", m.status.as_str()));
        }
        out.push_str("\n\n");
        out.push_str(m.text.trim());
        out.push_str("\n\n");
        if !m.sources.is_empty() {
            out.push_str("Sources:\n");
            for s in &m.sources {
                out.push_str(&format!("- [{}] {} <{}>\n", s.n, s.section, s.url));
            }
            out.push('\n');
        }
        for a in by_message.get(m.id.as_str()).into_iter().flatten() {
            out.push_str(&format!(
                "> **Mentor {}** ({}): {}\n\n",
                a.kind.as_str(),
                a.author_id,
                a.text.replace('\n', "\n> ")
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::review::AnnotationKind;
    use crate::transcript::MessageStatus;

    #[test]
    fn an_export_page_stops_before_the_byte_bound_but_holds_at_least_one_message() {
        assert_eq!(fitting([10, 10, 10].into_iter(), 25), 2);
        assert_eq!(fitting([10, 10].into_iter(), 100), 2);
        assert_eq!(fitting([500, 10].into_iter(), 100), 1);
        assert_eq!(fitting(std::iter::empty(), 100), 0);
    }

    fn message(id: &str, role: &str, text: &str) -> StoredMessage {
        StoredMessage {
            id: id.into(),
            conversation_id: "c1".into(),
            learner_id: "ada".into(),
            client_id: None,
            role: role.into(),
            text: text.into(),
            status: MessageStatus::Complete,
            reply_to: None,
            sources: Vec::new(),
            prompt_version: None,
            model: None,
            offline: false,
            tokens_in: None,
            tokens_out: None,
            retrieval_ms: None,
            first_token_ms: None,
            total_ms: None,
            page_url: None,
            created_at: 1_700_000_000_000,
            retrieval: None,
            failure: None,
        }
    }

    #[test]
    fn the_markdown_export_titles_the_first_page_and_quotes_annotations() {
        let page = ExportPage {
            messages: vec![
                message("m1", "learner", "Why a loop?"),
                message("m2", "assistant", "Because."),
            ],
            annotations: vec![Annotation {
                id: "a1".into(),
                message_id: "m2".into(),
                learner_id: "ada".into(),
                author_id: "grace".into(),
                kind: AnnotationKind::Correction,
                text: "Line one\nline two".into(),
                created_at: 0,
            }],
            next: None,
        };
        let text = markdown("ada", None, &page, true);
        assert!(
            text.starts_with("# Companion history of ada (`ada`)"),
            "{text}"
        );
        assert!(text.contains("## Conversation `c1`"), "{text}");
        assert!(
            text.contains("### Learner, 2023-11-14 22:13 UTC\n\nWhy a loop?"),
            "{text}"
        );
        assert!(
            text.contains("### Companion, 2023-11-14 22:13 UTC (complete)"),
            "{text}"
        );
        assert!(
            text.contains("> **Mentor correction** (grace): Line one\n> line two"),
            "{text}"
        );
        assert!(!markdown("ada", None, &page, false).contains("# Companion history"));
    }
}
