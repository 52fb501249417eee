//! Project briefs: `<content>/<course>/projects/<project>.md`, read into titled sections so
//! that the prompt can keep the deliverables and assessment criteria when the brief is long.
use std::path::Path;

use crate::retrieval::document;

/// Largest brief read, in bytes.
const MAX_BRIEF_BYTES: u64 = 512 * 1024;

#[derive(Debug, Clone, PartialEq)]
pub struct Brief {
    pub project: String,
    pub title: String,
    pub sections: Vec<BriefSection>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct BriefSection {
    /// The `##` heading; empty for the text before the first one.
    pub heading: String,
    pub text: String,
}

/// The brief, or `None` when the course or project names are unsafe or the file is missing.
pub fn load(content_dir: &Path, course: &str, project: &str) -> Option<Brief> {
    let safe = |name: &str| {
        !name.is_empty()
            && !name.starts_with('.')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    };
    if !safe(course) || !safe(project) {
        return None;
    }
    let relative = Path::new(course)
        .join("projects")
        .join(format!("{project}.md"));
    let bytes = std::fs::read(content_dir.join(&relative)).ok()?;
    let root = content_dir
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    match document::parse(&relative, &root, &bytes, MAX_BRIEF_BYTES) {
        Ok(doc) => Some(Brief {
            project: project.to_string(),
            title: doc.title,
            sections: sections(&doc.body),
        }),
        Err(error) => {
            tracing::warn!(%error, course, project, "project brief unreadable");
            None
        }
    }
}

/// Splits Markdown at its `##` headings (a `#` title line is dropped: the title is kept apart).
fn sections(body: &str) -> Vec<BriefSection> {
    let mut sections = Vec::new();
    let mut current = BriefSection::default();
    let mut in_fence = false;
    for line in body.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            in_fence = !in_fence;
        }
        if !in_fence {
            if let Some(heading) = line.strip_prefix("## ") {
                push(&mut sections, std::mem::take(&mut current));
                current.heading = heading.trim().to_string();
                continue;
            }
            if line.starts_with("# ") {
                continue;
            }
        }
        current.text.push_str(line);
        current.text.push('\n');
    }
    push(&mut sections, current);
    sections
}

fn push(sections: &mut Vec<BriefSection>, mut section: BriefSection) {
    section.text = section.text.trim().to_string();
    if !section.text.is_empty() || !section.heading.is_empty() {
        sections.push(section);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_brief_is_read_into_its_sections() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("course-content");
        let brief = load(&dir, "python-foundations", "budget-tracker").expect("brief");
        assert_eq!(brief.title, "Project: Personal budget tracker");
        let headings: Vec<&str> = brief.sections.iter().map(|s| s.heading.as_str()).collect();
        assert!(headings.contains(&"Deliverables"), "{headings:?}");
        assert!(headings.contains(&"Assessment criteria"), "{headings:?}");
        assert!(!brief.sections[0].text.starts_with("# Project"));
    }

    #[test]
    fn unsafe_or_unknown_names_give_no_brief() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("course-content");
        assert!(load(&dir, "python-foundations", "no-such-project").is_none());
        assert!(load(&dir, "..", "budget-tracker").is_none());
        assert!(load(&dir, "python-foundations", "../index").is_none());
    }
}
