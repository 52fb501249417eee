//! Heading-aware chunking: a [`Document`] cut into [`Chunk`]s of at most N tokens (tiktoken
//! cl100k), never across a heading, with overlap inside long sections; each chunk keeps its
//! heading path and the URL of its section.
use tiktoken_rs::CoreBPE;

use super::document::Document;

/// A piece of a document, the unit that is embedded, indexed and cited.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Chunk {
    pub source: String,
    pub course: String,
    pub chapter: String,
    pub chapter_title: String,
    pub title: String,
    /// Page title, then the headings below it that contain this chunk.
    pub heading_path: Vec<String>,
    /// The page URL with the section's anchor.
    pub url: String,
    pub kind: String,
    pub chunk_idx: usize,
    pub text: String,
}

impl Chunk {
    /// The text that is embedded: the heading path gives the chunk its context.
    pub fn embedding_text(&self) -> String {
        format!(
            "{} > {}\n\n{}",
            self.chapter_title,
            self.heading_path.join(" > "),
            self.text
        )
    }

    /// "Control flow › While loops › Termination" for citations.
    pub fn section_label(&self) -> String {
        let mut parts = vec![self.chapter_title.as_str()];
        parts.extend(self.heading_path.iter().map(String::as_str));
        parts.join(" › ")
    }
}

#[derive(Debug, Clone, Copy)]
pub struct ChunkSizes {
    pub max_tokens: usize,
    pub overlap_tokens: usize,
}

/// The tokenizer used for chunk sizes and prompt budgets.
pub fn tokenizer() -> &'static CoreBPE {
    tiktoken_rs::cl100k_base_singleton()
}

pub fn count_tokens(text: &str) -> usize {
    tokenizer().encode_ordinary(text).len()
}

struct Section {
    headings: Vec<String>,
    anchor: Option<String>,
    body: String,
}

/// Cuts `doc` into chunks.
pub fn chunk(doc: &Document, sizes: ChunkSizes) -> Vec<Chunk> {
    let sections = if doc.is_markdown {
        split_sections(doc)
    } else {
        vec![Section {
            headings: vec![doc.title.clone()],
            anchor: None,
            body: doc.body.clone(),
        }]
    };
    let mut chunks = Vec::new();
    for section in sections {
        let url = match &section.anchor {
            Some(anchor) => format!("{}#{anchor}", doc.url),
            None => doc.url.clone(),
        };
        for text in pack(&section.body, sizes) {
            chunks.push(Chunk {
                source: doc.source.clone(),
                course: doc.course.clone(),
                chapter: doc.chapter.clone(),
                chapter_title: doc.chapter_title.clone(),
                title: doc.title.clone(),
                heading_path: section.headings.clone(),
                url: url.clone(),
                kind: doc.kind.clone(),
                chunk_idx: chunks.len(),
                text,
            });
        }
    }
    chunks
}

fn split_sections(doc: &Document) -> Vec<Section> {
    let mut sections = Vec::new();
    // Heading stack by level (1..=6); level 1 is the page title.
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut body = String::new();
    let mut in_fence: Option<&str> = None;
    let flush = |stack: &Vec<(usize, String)>, body: &mut String, sections: &mut Vec<Section>| {
        if !body.trim().is_empty() {
            let mut headings = vec![doc.title.clone()];
            headings.extend(
                stack
                    .iter()
                    .filter(|(level, _)| *level > 1)
                    .map(|(_, h)| h.clone()),
            );
            let anchor = stack
                .iter()
                .rev()
                .find(|(level, _)| *level > 1)
                .map(|(_, h)| slug(h));
            sections.push(Section {
                headings,
                anchor,
                body: body.trim().to_string(),
            });
        }
        body.clear();
    };
    for line in doc.body.lines() {
        let trimmed = line.trim_start();
        if let Some(fence) = in_fence {
            if trimmed.starts_with(fence) {
                in_fence = None;
            }
        } else if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            in_fence = Some(&trimmed[..3]);
        } else if let Some((level, heading)) = heading(line) {
            flush(&stack, &mut body, &mut sections);
            stack.retain(|(l, _)| *l < level);
            stack.push((level, heading));
            continue;
        }
        body.push_str(line);
        body.push('\n');
    }
    flush(&stack, &mut body, &mut sections);
    sections
}

fn heading(line: &str) -> Option<(usize, String)> {
    let level = line.chars().take_while(|c| *c == '#').count();
    if !(1..=6).contains(&level) {
        return None;
    }
    let rest = &line[level..];
    if !rest.starts_with(' ') {
        return None;
    }
    let text = rest.trim().trim_end_matches('#').trim();
    (!text.is_empty()).then(|| (level, text.to_string()))
}

/// GitHub-style anchor: lowercase, spaces to hyphens, punctuation dropped.
pub fn slug(heading: &str) -> String {
    heading
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            c if c.is_alphanumeric() => Some(c),
            ' ' | '-' => Some('-'),
            '_' => Some('_'),
            _ => None,
        })
        .collect()
}

/// Packs paragraphs (code fences kept whole where they fit) into pieces of at most
/// `max_tokens`, repeating `overlap_tokens` of the previous piece when a section continues.
fn pack(body: &str, sizes: ChunkSizes) -> Vec<String> {
    let bpe = tokenizer();
    let mut pieces: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut current_tokens = 0;
    for block in blocks(body) {
        let block_tokens = bpe.encode_ordinary(&block).len();
        if current_tokens + block_tokens > sizes.max_tokens && !current.is_empty() {
            let overlap = tail_tokens(&current, sizes.overlap_tokens);
            pieces.push(std::mem::take(&mut current));
            current_tokens = bpe.encode_ordinary(&overlap).len();
            current = overlap;
        }
        if block_tokens > sizes.max_tokens {
            // A single block bigger than a chunk: cut it by tokens.
            let tokens = bpe.encode_ordinary(&block);
            let step = sizes.max_tokens - sizes.overlap_tokens;
            let mut start = 0;
            while start < tokens.len() {
                let end = (start + sizes.max_tokens).min(tokens.len());
                let text = crate::tokens::window_text(bpe, &tokens[start..end]);
                if !text.is_empty() {
                    if !current.is_empty() {
                        pieces.push(std::mem::take(&mut current));
                        current_tokens = 0;
                    }
                    pieces.push(text);
                }
                if end == tokens.len() {
                    break;
                }
                start += step;
            }
            continue;
        }
        if !current.is_empty() {
            current.push_str("\n\n");
        }
        current.push_str(&block);
        current_tokens += block_tokens;
    }
    if !current.trim().is_empty() {
        pieces.push(current);
    }
    pieces
}

/// Paragraphs split on blank lines, but a fenced code block is one block.
fn blocks(body: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current = String::new();
    let mut in_fence = false;
    for line in body.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            in_fence = !in_fence;
        }
        if line.trim().is_empty() && !in_fence {
            if !current.trim().is_empty() {
                blocks.push(std::mem::take(&mut current).trim_end().to_string());
            }
            current.clear();
            continue;
        }
        current.push_str(line);
        current.push('\n');
    }
    if !current.trim().is_empty() {
        blocks.push(current.trim_end().to_string());
    }
    blocks
}

fn tail_tokens(text: &str, n: usize) -> String {
    if n == 0 {
        return String::new();
    }
    let bpe = tokenizer();
    let tokens = bpe.encode_ordinary(text);
    let start = tokens.len().saturating_sub(n);
    crate::tokens::window_text(bpe, &tokens[start..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(body: &str) -> Document {
        Document {
            source: "py/02/loops.md".into(),
            course: "py".into(),
            chapter: "02".into(),
            chapter_title: "Control flow".into(),
            title: "Loops".into(),
            url: "/course/py/02/loops".into(),
            kind: "lesson".into(),
            body: body.into(),
            is_markdown: true,
        }
    }

    const SIZES: ChunkSizes = ChunkSizes {
        max_tokens: 60,
        overlap_tokens: 10,
    };

    #[test]
    fn chunks_never_cross_a_heading_and_keep_their_path_and_anchor() {
        let chunks = chunk(
            &doc(
                "# Loops\n\nIntro text.\n\n## While loops\n\nA while loop repeats.\n\n### Stopping\n\nUse a condition.\n",
            ),
            SIZES,
        );
        assert_eq!(chunks.len(), 3);
        assert_eq!(chunks[0].heading_path, vec!["Loops"]);
        assert_eq!(chunks[0].url, "/course/py/02/loops");
        assert_eq!(
            chunks[2].heading_path,
            vec!["Loops", "While loops", "Stopping"]
        );
        assert_eq!(chunks[2].url, "/course/py/02/loops#stopping");
        assert!(
            chunks[2]
                .embedding_text()
                .starts_with("Control flow > Loops > While loops > Stopping")
        );
    }

    #[test]
    fn a_hash_inside_a_code_fence_is_not_a_heading() {
        let chunks = chunk(&doc("## Code\n\n```python\n# comment\nx = 1\n```\n"), SIZES);
        assert_eq!(chunks.len(), 1);
        assert!(chunks[0].text.contains("# comment"));
    }

    #[test]
    fn long_sections_are_cut_within_the_token_limit_with_overlap() {
        let para = "Iteration repeats a block of statements until a condition is false. ".repeat(4);
        let body = format!("## Long\n\n{para}\n\n{para}\n\n{para}\n\n{para}\n");
        let chunks = chunk(&doc(&body), SIZES);
        assert!(chunks.len() >= 3, "{}", chunks.len());
        for c in &chunks {
            assert!(count_tokens(&c.text) <= SIZES.max_tokens + SIZES.overlap_tokens + 2);
        }
    }

    #[test]
    fn one_huge_paragraph_is_split_by_tokens() {
        let body = "word ".repeat(500);
        let chunks = chunk(&doc(&body), SIZES);
        assert!(chunks.len() > 5);
        assert!(
            chunks
                .iter()
                .all(|c| count_tokens(&c.text) <= SIZES.max_tokens + 1)
        );
    }

    #[test]
    fn a_huge_paragraph_of_chinese_keeps_every_piece() {
        let body = "循环让程序重复执行同一段代码，直到条件不再成立。".repeat(60);
        let chunks = chunk(&doc(&body), SIZES);
        // One chunk per token window: a window whose edges cut a character is kept, not dropped.
        let n = count_tokens(&body);
        let step = SIZES.max_tokens - SIZES.overlap_tokens;
        let windows = (n - SIZES.max_tokens).div_ceil(step) + 1;
        assert_eq!(chunks.len(), windows);
        assert!(chunks.iter().all(|c| c.text.chars().count() > 10));
    }

    #[test]
    fn slugs_match_github_style_anchors() {
        assert_eq!(
            slug("Common mistakes: off-by-one!"),
            "common-mistakes-off-by-one"
        );
    }
}
