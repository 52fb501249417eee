//! A learner's question read for each retriever: pasted code, tracebacks and prose told apart,
//! so the dense embedder (which reads at most 256 tokens and reads prose best) gets the words
//! first and only the head of long code, while BM25 keeps every identifier and error name.
use std::borrow::Cow;

/// At most this many characters of code go to the dense embedder (about 100 tokens).
const DENSE_CODE_CHARS: usize = 400;

/// Whether a line (outside a fence) reads as code or program output rather than prose.
fn looks_like_code(line: &str) -> bool {
    let trimmed = line.trim();
    if trimmed.is_empty() {
        return false;
    }
    // An error line ("IndexError: list index out of range") is the learner's best description.
    if let Some((name, _)) = trimmed.split_once(':')
        && (name.ends_with("Error") || name.ends_with("Exception") || name.ends_with("Warning"))
        && !name.contains(' ')
    {
        return false;
    }
    if line.starts_with("    ") || line.starts_with('\t') || trimmed.starts_with(">>>") {
        return true;
    }
    let first = trimmed.split([' ', '(', ':']).next().unwrap_or("");
    let keyword = [
        "if", "for", "while", "def", "class", "elif", "else", "try", "except", "with", "return",
        "import", "from", "fn", "let", "const", "var", "function", "print",
    ]
    .contains(&first);
    if keyword && (trimmed.ends_with(':') || trimmed.ends_with('{') || trimmed.contains('(')) {
        return true;
    }
    // An assignment: `name = ...`, `a[0] += 1`.
    if let Some((target, _)) = trimmed.split_once('=')
        && !target.is_empty()
        && !trimmed.contains("==")
        && target
            .trim_end_matches(['+', '-', '*', '/'])
            .trim()
            .chars()
            .all(|c| c.is_alphanumeric() || "_.[]'\"".contains(c))
    {
        return true;
    }
    let symbols = trimmed
        .chars()
        .filter(|c| "=()[]{}<>;:#'\"_.,+-*/\\|&^%$@!~`".contains(*c))
        .count();
    let words = trimmed.split_whitespace().count();
    symbols * 4 >= trimmed.chars().count() || (words <= 3 && symbols >= 2)
}

/// The question split into prose and code (fenced blocks and code-looking lines), each in
/// order.
pub fn split(question: &str) -> (String, String) {
    let mut prose = String::new();
    let mut code = String::new();
    let mut in_fence = false;
    for line in question.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            in_fence = !in_fence;
            continue;
        }
        let target = if in_fence || looks_like_code(line) {
            &mut code
        } else {
            &mut prose
        };
        target.push_str(line);
        target.push('\n');
    }
    (prose, code)
}

/// What the dense embedder reads for `question`: the prose, then the head of the code. A
/// question without code, or with too little prose to stand alone, is read whole.
pub fn dense_text(question: &str) -> Cow<'_, str> {
    let (prose, code) = split(question);
    if code.trim().is_empty() || prose.split_whitespace().count() < 3 {
        return Cow::Borrowed(question);
    }
    let mut head: String = code.chars().take(DENSE_CODE_CHARS).collect();
    if head.len() < code.len()
        && let Some(cut) = head.rfind('\n')
    {
        head.truncate(cut);
    }
    Cow::Owned(format!("{}\n{}", prose.trim(), head.trim_end()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fenced_code_and_code_lines_are_told_from_prose() {
        let question = "my loop never stops\n```python\nwhile x > 0:\n    print(x)\n```\nx = x + 1\nIndexError: list index out of range\nwhere should I read?";
        let (prose, code) = split(question);
        assert_eq!(
            prose,
            "my loop never stops\nIndexError: list index out of range\nwhere should I read?\n"
        );
        assert_eq!(code, "while x > 0:\n    print(x)\nx = x + 1\n");
    }

    #[test]
    fn the_dense_side_reads_the_prose_first_and_the_head_of_long_code() {
        let code: String = (0..100)
            .map(|i| format!("value_{i} = compute({i})\n"))
            .collect();
        let question = format!("```\n{code}```\nwhy is this so slow? where do I read about loops");
        let text = dense_text(&question);
        assert!(
            text.starts_with(
                "why is this so slow? where do I read about loops\nvalue_0 = compute(0)"
            )
        );
        assert!(text.len() < 500, "{}", text.len());
        assert!(text.ends_with(')'), "cut at a line end: {text:?}");
    }

    #[test]
    fn questions_without_code_or_without_prose_are_read_whole() {
        assert_eq!(dense_text("how do I sort a list?"), "how do I sort a list?");
        let only_code = "```python\nprint(x[0])\n```";
        assert_eq!(dense_text(only_code), only_code);
    }
}
