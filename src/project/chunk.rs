//! Code-aware chunking of project files: source code is cut at top-level definitions (`def`,
//! `class`, `function`, `fn`, `func`, ...), with the comments and decorators just above each
//! one; a definition longer than the limit is cut by lines. Other files (and languages not
//! recognised) fall back to the course's token chunker.
use crate::retrieval::chunk::{self as token_chunker, ChunkSizes, count_tokens};
use crate::retrieval::document::Document;

/// A piece of a project file.
#[derive(Debug, Clone, PartialEq)]
pub struct CodePiece {
    /// 1-based, inclusive; `None` when the token chunker cut the file.
    pub lines: Option<(usize, usize)>,
    /// The definition the piece starts with (`def parse_amount(text):`), when code.
    pub name: Option<String>,
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lang {
    Python,
    Script,
    Rust,
    Go,
    Ruby,
    CLike,
}

fn lang_of(path: &str) -> Option<Lang> {
    let ext = path.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match ext.as_str() {
        "py" | "pyw" => Lang::Python,
        "js" | "mjs" | "cjs" | "jsx" | "ts" | "tsx" => Lang::Script,
        "rs" => Lang::Rust,
        "go" => Lang::Go,
        "rb" => Lang::Ruby,
        "java" | "kt" | "kts" | "cs" | "c" | "h" | "cc" | "cpp" | "hpp" | "cxx" | "swift"
        | "php" | "scala" => Lang::CLike,
        _ => return None,
    })
}

/// Cuts one file into pieces of at most `max_tokens` (cl100k) tokens.
pub fn chunk_file(path: &str, text: &str, max_tokens: usize) -> Vec<CodePiece> {
    let text = text.replace("\r\n", "\n");
    match lang_of(path) {
        Some(lang) => chunk_code(lang, &text, max_tokens),
        None => chunk_prose(path, &text, max_tokens),
    }
}

fn chunk_prose(path: &str, text: &str, max_tokens: usize) -> Vec<CodePiece> {
    let lower = path.to_ascii_lowercase();
    let doc = Document {
        source: path.to_string(),
        course: String::new(),
        chapter: String::new(),
        chapter_title: String::new(),
        title: path.to_string(),
        url: String::new(),
        kind: String::new(),
        body: text.to_string(),
        is_markdown: lower.ends_with(".md") || lower.ends_with(".markdown"),
    };
    let sizes = ChunkSizes {
        max_tokens,
        overlap_tokens: max_tokens / 8,
    };
    token_chunker::chunk(&doc, sizes)
        .into_iter()
        .map(|c| CodePiece {
            lines: None,
            name: c.heading_path.last().filter(|h| *h != path).cloned(),
            text: c.text,
        })
        .collect()
}

fn chunk_code(lang: Lang, text: &str, max_tokens: usize) -> Vec<CodePiece> {
    let lines: Vec<&str> = text.lines().collect();
    // Start line (0-based) of each unit: the preamble, then every top-level definition with
    // the comments and decorators directly above it.
    let mut starts = vec![0];
    for (idx, line) in lines.iter().enumerate() {
        if idx > 0 && is_definition(lang, line) {
            let mut start = idx;
            while start > 0 && is_leading(lang, lines[start - 1]) {
                start -= 1;
            }
            if start > *starts.last().unwrap_or(&0) {
                starts.push(start);
            }
        }
    }
    starts.push(lines.len());
    let mut pieces = Vec::new();
    for bounds in starts.windows(2) {
        let (mut first, mut last) = (bounds[0], bounds[1]);
        while first < last && lines[first].trim().is_empty() {
            first += 1;
        }
        while last > first && lines[last - 1].trim().is_empty() {
            last -= 1;
        }
        if first == last {
            continue;
        }
        let name = lines[first..last]
            .iter()
            .find(|l| is_definition(lang, l))
            .map(|l| signature(l));
        pieces.extend(split_by_lines(&lines, first, last, name, max_tokens));
    }
    pieces
}

/// A unit too long for one piece is cut between lines; a single overlong line by tokens.
fn split_by_lines(
    lines: &[&str],
    first: usize,
    last: usize,
    name: Option<String>,
    max_tokens: usize,
) -> Vec<CodePiece> {
    let mut pieces = Vec::new();
    let mut start = first;
    let mut text = String::new();
    let mut tokens = 0;
    let push = |start: usize, end: usize, text: String, pieces: &mut Vec<CodePiece>| {
        pieces.push(CodePiece {
            lines: Some((start + 1, end)),
            name: name.clone(),
            text,
        });
    };
    for (idx, line) in lines.iter().enumerate().take(last).skip(first) {
        let line = *line;
        let line_tokens = count_tokens(line) + 1;
        if tokens + line_tokens > max_tokens && !text.is_empty() {
            push(start, idx, std::mem::take(&mut text), &mut pieces);
            tokens = 0;
            start = idx;
        }
        if line_tokens > max_tokens {
            let bpe = token_chunker::tokenizer();
            let ids = bpe.encode_ordinary(line);
            for part in crate::tokens::split_text(bpe, &ids, max_tokens) {
                push(idx, idx + 1, part, &mut pieces);
            }
            start = idx + 1;
            continue;
        }
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(line);
        tokens += line_tokens;
    }
    if !text.trim().is_empty() {
        push(start, last, text, &mut pieces);
    }
    pieces
}

/// Whether a line starts a top-level definition (it must start at column 0).
fn is_definition(lang: Lang, line: &str) -> bool {
    if line.starts_with(char::is_whitespace) || line.is_empty() {
        return false;
    }
    let starts = |prefixes: &[&str]| prefixes.iter().any(|p| line.starts_with(p));
    match lang {
        Lang::Python => starts(&["def ", "async def ", "class "]),
        Lang::Script => {
            let rest = line
                .strip_prefix("export default ")
                .or_else(|| line.strip_prefix("export "))
                .unwrap_or(line);
            [
                "function ",
                "function*",
                "async function",
                "class ",
                "abstract class ",
                "interface ",
                "type ",
                "enum ",
                "const ",
                "let ",
                "var ",
            ]
            .iter()
            .any(|p| rest.starts_with(p))
        }
        Lang::Rust => {
            let mut rest = line;
            if let Some(after) = rest.strip_prefix("pub") {
                rest = match after.strip_prefix('(') {
                    Some(scoped) => scoped.split_once(") ").map_or(after, |(_, tail)| tail),
                    None => after.trim_start(),
                };
            }
            [
                "fn ",
                "async fn ",
                "const fn ",
                "unsafe fn ",
                "struct ",
                "enum ",
                "union ",
                "impl",
                "trait ",
                "mod ",
                "type ",
                "const ",
                "static ",
                "macro_rules!",
            ]
            .iter()
            .any(|p| rest.starts_with(p))
        }
        Lang::Go => starts(&["func ", "type ", "var ", "const "]),
        Lang::Ruby => starts(&["def ", "class ", "module "]),
        Lang::CLike => {
            !starts(&[
                "}", "{", "#", "//", "/*", "*", "import ", "package ", "using ", "@",
            ]) && (line.contains('(')
                || ["class ", "struct ", "interface ", "enum ", "namespace "]
                    .iter()
                    .any(|k| line.contains(k)))
        }
    }
}

/// Comments, decorators and attributes that belong to the definition below them.
fn is_leading(lang: Lang, line: &str) -> bool {
    if line.trim().is_empty() || line.starts_with(char::is_whitespace) {
        return false;
    }
    match lang {
        Lang::Python | Lang::Ruby => line.starts_with('#') || line.starts_with('@'),
        Lang::Rust => line.starts_with("//") || line.starts_with("#["),
        Lang::Script | Lang::Go | Lang::CLike => {
            line.starts_with("//")
                || line.starts_with("/*")
                || line.starts_with(" *")
                || line.starts_with("*")
                || line.starts_with('@')
        }
    }
}

fn signature(line: &str) -> String {
    let line = line.trim().trim_end_matches('{').trim_end();
    if line.chars().count() <= 80 {
        line.to_string()
    } else {
        let cut: String = line.chars().take(80).collect();
        format!("{cut}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUDGET_PY: &str = "\
import csv
from pathlib import Path

TRANSACTIONS = Path(\"transactions.csv\")


def parse_amount(text):
    \"\"\"Reads '12,50' or '-3.4' as a float.\"\"\"
    return float(text.replace(',', '.'))


# Loads every row of the file.
@cache
def load(path):
    with open(path) as f:
        return list(csv.DictReader(f))


class Summary:
    def __init__(self):
        self.totals = {}

    def add(self, row):
        self.totals[row['category']] = self.totals.get(row['category'], 0) + row['amount']
";

    #[test]
    fn python_is_cut_at_top_level_definitions_with_their_decorators() {
        let pieces = chunk_file("budget.py", BUDGET_PY, 200);
        let names: Vec<Option<&str>> = pieces.iter().map(|p| p.name.as_deref()).collect();
        assert_eq!(
            names,
            vec![
                None,
                Some("def parse_amount(text):"),
                Some("def load(path):"),
                Some("class Summary:")
            ]
        );
        assert!(pieces[0].text.starts_with("import csv"));
        assert_eq!(pieces[1].lines, Some((7, 9)));
        assert!(
            pieces[2].text.starts_with("# Loads every row"),
            "{}",
            pieces[2].text
        );
        assert!(pieces[2].text.contains("@cache\ndef load"));
        // Methods stay inside their class.
        assert!(pieces[3].text.contains("def add(self, row)"));
        assert_eq!(pieces[3].lines, Some((19, 24)));
    }

    #[test]
    fn javascript_rust_and_go_definitions_are_boundaries() {
        let js = "import x from 'y';\n\nexport function total(rows) {\n  return 1;\n}\n\nconst avg = (a) => a;\n";
        let names: Vec<_> = chunk_file("app.ts", js, 200)
            .into_iter()
            .map(|p| p.name)
            .collect();
        assert_eq!(
            names,
            vec![
                None,
                Some("export function total(rows)".to_string()),
                Some("const avg = (a) => a;".to_string())
            ]
        );
        let rs = "use std::io;\n\n/// Doc.\npub(crate) fn run() {\n}\n\n#[derive(Debug)]\npub struct A;\n";
        let pieces = chunk_file("main.rs", rs, 200);
        assert_eq!(pieces.len(), 3);
        assert!(pieces[1].text.starts_with("/// Doc.\npub(crate) fn run()"));
        assert!(pieces[2].text.starts_with("#[derive(Debug)]"));
        let go = "package main\n\nfunc main() {\n}\n\nfunc helper() int {\n\treturn 1\n}\n";
        assert_eq!(chunk_file("main.go", go, 200).len(), 3);
    }

    #[test]
    fn a_definition_longer_than_the_limit_is_cut_by_lines_within_the_limit() {
        let body: String = (0..200)
            .map(|i| format!("    total_{i} = compute_value({i}) + other_value({i})\n"))
            .collect();
        let code = format!("def huge():\n{body}");
        let pieces = chunk_file("big.py", &code, 64);
        assert!(pieces.len() > 5, "{}", pieces.len());
        for p in &pieces {
            assert!(count_tokens(&p.text) <= 64, "{}", count_tokens(&p.text));
            assert_eq!(p.name.as_deref(), Some("def huge():"));
        }
        // The pieces cover every line, in order, without gaps.
        let mut next = 1;
        for p in &pieces {
            let (start, end) = p.lines.unwrap();
            assert_eq!(start, next);
            next = end + 1;
        }
        assert_eq!(next, 202);
    }

    #[test]
    fn one_overlong_line_is_cut_by_tokens() {
        let code = format!("x = [{}]\n", "1, ".repeat(400));
        let pieces = chunk_file("data.py", &code, 50);
        assert!(pieces.len() > 3);
        assert!(pieces.iter().all(|p| count_tokens(&p.text) <= 50));
    }

    #[test]
    fn an_overlong_line_of_chinese_loses_no_character() {
        let line = format!(
            "message = \"{}\"",
            "计数器一直在增加，循环永远不会结束。".repeat(40)
        );
        let pieces = chunk_file("messages.py", &format!("{line}\n"), 50);
        assert!(pieces.len() > 3);
        assert_eq!(
            pieces.iter().map(|p| p.text.as_str()).collect::<String>(),
            line
        );
    }

    #[test]
    fn other_files_fall_back_to_the_token_chunker() {
        let readme = "# Budget\n\nHow to run it.\n\n## Tests\n\nRun pytest.\n";
        let pieces = chunk_file("README.md", readme, 100);
        assert_eq!(pieces.len(), 2);
        assert!(pieces.iter().all(|p| p.lines.is_none()));
        assert_eq!(pieces[1].name.as_deref(), Some("Tests"));
        let notes = "word ".repeat(400);
        let pieces = chunk_file("notes.txt", &notes, 60);
        assert!(pieces.len() > 3);
        assert!(pieces.iter().all(|p| count_tokens(&p.text) <= 61));
    }
}
