//! One content file read into a [`Document`]: front matter (or fallbacks from the path and the
//! first heading) and the body, with the reasons a file is refused.
use std::path::Path;

/// A course page or project brief, as read from the content folder.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// Path relative to the content folder, with `/` separators.
    pub source: String,
    pub course: String,
    pub chapter: String,
    pub chapter_title: String,
    pub title: String,
    pub url: String,
    /// `lesson`, `project`, or whatever the front matter says.
    pub kind: String,
    pub body: String,
    pub is_markdown: bool,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DocumentError {
    #[error("file is larger than {limit} bytes ({size} bytes)")]
    TooLarge { size: u64, limit: u64 },
    #[error("file is empty")]
    Empty,
    #[error("file looks binary (it contains NUL bytes)")]
    Binary,
    #[error("file is not valid UTF-8 (first bad byte at offset {0})")]
    NotUtf8(usize),
    #[error("front matter block opened with --- is never closed")]
    UnclosedFrontMatter,
    #[error("front matter line {line} is not `key: value`: {text:?}")]
    BadFrontMatterLine { line: usize, text: String },
}

/// Reads `bytes` of the file at `relative` (inside the content folder named `root_name`).
pub fn parse(
    relative: &Path,
    root_name: &str,
    bytes: &[u8],
    max_bytes: u64,
) -> Result<Document, DocumentError> {
    if bytes.len() as u64 > max_bytes {
        return Err(DocumentError::TooLarge {
            size: bytes.len() as u64,
            limit: max_bytes,
        });
    }
    if bytes.iter().take(8192).any(|b| *b == 0) {
        return Err(DocumentError::Binary);
    }
    let text = std::str::from_utf8(bytes).map_err(|e| DocumentError::NotUtf8(e.valid_up_to()))?;
    let text = text
        .strip_prefix('\u{feff}')
        .unwrap_or(text)
        .replace("\r\n", "\n");
    if text.trim().is_empty() {
        return Err(DocumentError::Empty);
    }
    let source = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/");
    let is_markdown = matches!(
        relative.extension().and_then(|e| e.to_str()),
        Some("md" | "markdown")
    );
    let (front, body) = split_front_matter(&text)?;
    if body.trim().is_empty() {
        return Err(DocumentError::Empty);
    }
    let field = |key: &str| {
        front
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty())
    };
    let mut parts: Vec<&str> = source.split('/').collect();
    let file_name = parts.pop().unwrap_or_default();
    let stem = file_name.rsplit_once('.').map_or(file_name, |(s, _)| s);
    let course = field("course").unwrap_or_else(|| {
        parts
            .first()
            .map(|s| s.to_string())
            .unwrap_or_else(|| root_name.to_string())
    });
    let chapter = field("chapter").unwrap_or_else(|| {
        parts
            .last()
            .map(|s| s.to_string())
            .unwrap_or_else(|| "main".to_string())
    });
    let chapter_title = field("chapter_title").unwrap_or_else(|| humanize(&chapter));
    let title = field("title")
        .or_else(|| first_heading(body))
        .unwrap_or_else(|| humanize(stem));
    let url = field("url").unwrap_or_else(|| {
        let without_ext = source.rsplit_once('.').map_or(source.as_str(), |(s, _)| s);
        format!("/course/{without_ext}")
    });
    Ok(Document {
        kind: field("kind").unwrap_or_else(|| "lesson".to_string()),
        body: body.to_string(),
        source,
        course,
        chapter,
        chapter_title,
        title,
        url,
        is_markdown,
    })
}

type FrontMatter = Vec<(String, String)>;

fn split_front_matter(text: &str) -> Result<(FrontMatter, &str), DocumentError> {
    let Some(rest) = text.strip_prefix("---\n") else {
        return Ok((Vec::new(), text));
    };
    let closed = rest
        .lines()
        .any(|line| matches!(line.trim_end(), "---" | "..."));
    if !closed {
        return Err(DocumentError::UnclosedFrontMatter);
    }
    let mut fields = Vec::new();
    let mut offset = 0;
    for (idx, line) in rest.split_inclusive('\n').enumerate() {
        offset += line.len();
        let trimmed = line.trim_end();
        if trimmed == "---" || trimmed == "..." {
            return Ok((fields, &rest[offset..]));
        }
        if trimmed.trim().is_empty() || trimmed.trim_start().starts_with('#') {
            continue;
        }
        let Some((key, value)) = trimmed.split_once(':') else {
            return Err(DocumentError::BadFrontMatterLine {
                line: idx + 2,
                text: trimmed.to_string(),
            });
        };
        let key = key.trim();
        if key.is_empty() || key.contains(' ') {
            return Err(DocumentError::BadFrontMatterLine {
                line: idx + 2,
                text: trimmed.to_string(),
            });
        }
        fields.push((key.to_string(), unquote(value.trim())));
    }
    Err(DocumentError::UnclosedFrontMatter)
}

fn unquote(value: &str) -> String {
    let quoted = value.len() >= 2
        && ((value.starts_with('"') && value.ends_with('"'))
            || (value.starts_with('\'') && value.ends_with('\'')));
    if quoted {
        value[1..value.len() - 1].replace("\\\"", "\"")
    } else {
        value.to_string()
    }
}

fn first_heading(body: &str) -> Option<String> {
    body.lines()
        .find_map(|l| l.strip_prefix("# "))
        .map(|h| h.trim().to_string())
}

/// `02-control-flow` -> `Control flow`.
fn humanize(name: &str) -> String {
    let trimmed = name.trim_start_matches(|c: char| c.is_ascii_digit() || c == '-' || c == '_');
    let words = trimmed.replace(['-', '_'], " ");
    let mut chars = words.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => name.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(path: &str, text: &str) -> Result<Document, DocumentError> {
        parse(Path::new(path), "content", text.as_bytes(), 1_000_000)
    }

    #[test]
    fn front_matter_fields_are_read_and_unquoted() {
        let doc = parse_str(
            "py/02-flow/01-while.md",
            "---\ncourse: \"py\"\ntitle: 'While loops'\nurl: \"/c/w\"\n---\n# While loops\n\nText.\n",
        )
        .unwrap();
        assert_eq!(doc.course, "py");
        assert_eq!(doc.title, "While loops");
        assert_eq!(doc.url, "/c/w");
        assert_eq!(doc.chapter, "02-flow");
        assert_eq!(doc.chapter_title, "Flow");
        assert!(doc.body.starts_with("# While loops"));
    }

    #[test]
    fn missing_front_matter_falls_back_to_path_and_first_heading() {
        let doc = parse_str("algo/intro/notes.md", "# Sorting basics\n\nBody.").unwrap();
        assert_eq!(doc.course, "algo");
        assert_eq!(doc.title, "Sorting basics");
        assert_eq!(doc.url, "/course/algo/intro/notes");
    }

    #[test]
    fn an_unclosed_front_matter_block_is_refused() {
        let err = parse_str("a.md", "---\ntitle: x\nno end").unwrap_err();
        assert_eq!(err, DocumentError::UnclosedFrontMatter);
    }

    #[test]
    fn binary_empty_and_invalid_utf8_files_are_refused() {
        let bin = parse(Path::new("a.md"), "c", b"ab\0cd", 100).unwrap_err();
        assert_eq!(bin, DocumentError::Binary);
        assert_eq!(parse_str("a.md", "  \n").unwrap_err(), DocumentError::Empty);
        let bad = parse(Path::new("a.md"), "c", &[b'a', 0xff, 0xfe], 100).unwrap_err();
        assert_eq!(bad, DocumentError::NotUtf8(1));
        let big = parse(Path::new("a.md"), "c", b"abcdef", 3).unwrap_err();
        assert!(matches!(big, DocumentError::TooLarge { .. }));
    }
}
