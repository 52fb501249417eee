//! Code written outside fences: whether a line of an answer reads as code (a statement, a
//! definition, an indented line that is not a sentence) or as prose, so that the splitter can
//! hold runs of such lines and the guard check them as it checks fenced blocks. Judged a line
//! at a time, when the line ends; a line whose start can only be prose (a sentence's capitalised
//! first word, a Markdown list item or heading, or three plain words, the first of them no
//! keyword) is let through from there on, so prose keeps streaming.

/// Words that open a statement in the languages a course teaches; a line starting with one is
/// held to its end.
const KEYWORDS: &[&str] = &[
    "def",
    "class",
    "return",
    "import",
    "from",
    "if",
    "elif",
    "else",
    "for",
    "while",
    "with",
    "try",
    "except",
    "finally",
    "lambda",
    "yield",
    "raise",
    "assert",
    "del",
    "global",
    "nonlocal",
    "pass",
    "break",
    "continue",
    "async",
    "await",
    "print",
    "const",
    "let",
    "var",
    "function",
    "fn",
    "pub",
    "use",
    "struct",
    "impl",
    "match",
    "public",
    "private",
    "protected",
    "static",
    "void",
    "int",
    "package",
    "func",
    "SELECT",
    "INSERT",
    "UPDATE",
    "DELETE",
    "CREATE",
    "WITH",
];

/// The Python keywords that open a block: a line starting with one and ending with `:` is code.
const BLOCK_OPENERS: &[&str] = &[
    "if", "elif", "else", "for", "while", "with", "try", "except", "finally", "def", "class",
    "async", "match", "case",
];

/// Statements that stand alone or before an expression.
const STATEMENTS: &[&str] = &[
    "return", "yield", "raise", "assert", "del", "global", "nonlocal", "await", "import",
];

/// Lines this many columns in (a tab counts four) are Markdown's indented code, unless they
/// read as a sentence (a list item's second paragraph).
const INDENTED_CODE: usize = 4;

fn indent_of(line: &str) -> usize {
    line.chars()
        .take_while(|c| *c == ' ' || *c == '\t')
        .map(|c| if c == '\t' { 4 } else { 1 })
        .sum()
}

/// The line without a Markdown block marker (`- `, `* `, `+ `, `1. `, `> `, `# `), if it has one.
fn markdown_item(t: &str) -> Option<&str> {
    for marker in ["- ", "* ", "+ ", "> "] {
        if let Some(rest) = t.strip_prefix(marker) {
            return Some(rest);
        }
    }
    let hashes = t.chars().take_while(|c| *c == '#').count();
    if (1..=6).contains(&hashes) && t[hashes..].starts_with(' ') {
        return Some(&t[hashes + 1..]);
    }
    let digits = t.chars().take_while(char::is_ascii_digit).count();
    if (1..=3).contains(&digits) && (t[digits..].starts_with(". ") || t[digits..].starts_with(") "))
    {
        return Some(&t[digits + 2..]);
    }
    None
}

/// A word of a sentence: letters and digits (apostrophes and hyphens inside), or a number, with
/// punctuation around it; or an inline code span.
fn is_prose_word(word: &str) -> bool {
    if word.starts_with('`') {
        return true;
    }
    let core = word
        .trim_start_matches(['(', '"', '\'', '«', '“', '¿', '¡', '*', '_'])
        .trim_end_matches([
            ',', '.', ';', ':', '!', '?', ')', '"', '\'', '»', '”', '*', '_',
        ]);
    let word = core
        .chars()
        .all(|c| c.is_alphanumeric() || matches!(c, '\'' | '’' | '-'));
    let number = core
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '.' | ',' | '%'));
    !core.is_empty() && (word || number)
}

/// Whether the start of a line, still being written, can only be prose: not indented as code,
/// and its first three words (after a list or heading marker) plain words, the first no
/// keyword. Such a line is let through as it comes.
pub fn starts_as_prose(partial: &str) -> bool {
    prose_start(partial) == Some(true)
}

/// [`starts_as_prose`], or `None` while the line has too few words to say.
pub fn prose_start(partial: &str) -> Option<bool> {
    if indent_of(partial) >= INDENTED_CODE {
        return Some(false);
    }
    let t = partial.trim_start();
    if opens_as_prose(t) {
        return Some(true);
    }
    let t = markdown_item(t).unwrap_or(t);
    let mut words = t.split_whitespace();
    let first: Vec<&str> = words.by_ref().take(3).collect();
    // The third word is complete only once something follows it.
    let complete = first.len() == 3 && (words.next().is_some() || t.ends_with(char::is_whitespace));
    complete.then(|| !KEYWORDS.contains(&first[0]) && first.iter().all(|w| is_prose_word(w)))
}

/// Whether the first characters of a line (indentation aside) open prose, so that it can flow
/// from its first letter:
/// - a heading, a table row, a list item or a quote, which [`is_code_line`] reads as prose
///   whatever follows;
/// - a sentence's first word: a capital followed by a small letter (`The`, `Voici`), a lone
///   capital followed by a word (`A loop`, ``A `for` loop``, `I think`; not `A = …`), or a
///   letter of a script without case (中, ع), after any `*` or `_` of emphasis.
///
/// The second is a bet: a line of code opened by a capitalised name (Java's `String s = …;`,
/// Python's `Total = 0`) flows too. The splitter still reads that line whole when it ends and,
/// if it was code, holds the lines after it as a run of code (see `Splitter`).
fn opens_as_prose(t: &str) -> bool {
    t.starts_with(['#', '|']) || markdown_item(t).is_some() || opens_as_sentence(t)
}

/// Whether the start of a line still being written, after a run of code, opens a sentence
/// (see [`opens_as_prose`]; Markdown markers do not count here: `#` opens a comment in a run
/// of Python). Such a line ends the run at its first letters.
pub fn starts_as_sentence(partial: &str) -> bool {
    indent_of(partial) < INDENTED_CODE && opens_as_sentence(partial.trim_start())
}

fn opens_as_sentence(t: &str) -> bool {
    if let Some(span) = t.strip_prefix('`') {
        // Inline code that closes and is followed by a word's space: "`print` sends text".
        return span
            .find('`')
            .is_some_and(|close| close > 0 && span[close + 1..].starts_with(' '));
    }
    let mut chars = t.trim_start_matches(['*', '_']).chars();
    match (chars.next(), chars.next()) {
        (Some(a), Some(' ')) if a.is_uppercase() => chars.next().is_some_and(|c| {
            c.is_alphabetic() || matches!(c, '`' | '"' | '\'' | '“' | '«' | '*' | '_')
        }),
        // French elision: L'erreur, D'abord, J'ai.
        (Some(a), Some('\'' | '’')) if a.is_uppercase() => {
            chars.next().is_some_and(char::is_lowercase)
        }
        (Some(a), Some(b)) if a.is_uppercase() => b.is_lowercase(),
        (Some(a), _) => a.is_alphabetic() && !a.is_uppercase() && !a.is_lowercase(),
        _ => false,
    }
}

/// Four words or more, nearly all of them words of a sentence.
fn mostly_words(t: &str) -> bool {
    let words: Vec<&str> = t.split_whitespace().collect();
    let prose = words.iter().filter(|w| is_prose_word(w)).count();
    words.len() >= 4 && prose * 10 >= words.len() * 8
}

/// Whether a whole line reads as a sentence: mostly words, and not opened by a keyword.
fn reads_as_sentence(t: &str) -> bool {
    let first = t.split_whitespace().next().unwrap_or_default();
    mostly_words(t) && !KEYWORDS.contains(&first)
}

/// `name`, `obj.attr`, `rows[0]["date"]`: how many bytes of `t` such a target takes.
fn target_len(t: &str) -> usize {
    let bytes = t.as_bytes();
    let mut i = 0;
    if !bytes
        .first()
        .is_some_and(|b| b.is_ascii_alphabetic() || *b == b'_')
    {
        return 0;
    }
    while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || matches!(bytes[i], b'_' | b'.')) {
        i += 1;
    }
    while i < bytes.len() && bytes[i] == b'[' {
        match t[i..].find(']') {
            Some(close) => i += close + 1,
            None => return i,
        }
    }
    i
}

/// `x = ...`, `total += n`, `a, b = ...`, `self.items[k] = v` (not `==`).
fn is_assignment(t: &str) -> bool {
    let mut rest = t;
    loop {
        let n = target_len(rest);
        if n == 0 {
            return false;
        }
        rest = rest[n..].trim_start();
        match rest.strip_prefix(',') {
            Some(more) => rest = more.trim_start(),
            None => break,
        }
    }
    let rest = rest.trim_start_matches(['+', '-', '*', '/', '%', '&', '|', '^', '<', '>', '@']);
    rest.starts_with('=') && !rest.starts_with("==") && rest.len() > 1
}

/// `print(total)`, `rows.append(row)`, `main()`: a call as a whole statement.
fn is_call(t: &str) -> bool {
    let n = target_len(t);
    n > 0 && t[n..].starts_with('(') && (t.ends_with(')') || t.ends_with(");") || t.ends_with("):"))
}

/// Code punctuation as a share of the line's visible characters.
fn symbol_share(t: &str) -> f32 {
    let visible = t.chars().filter(|c| !c.is_whitespace()).count();
    let symbols = t
        .chars()
        .filter(|c| "=(){}[]<>:;,+*/%\"'|&!".contains(*c))
        .count();
    symbols as f32 / visible.max(1) as f32
}

/// Whether a complete line of an answer, outside fences and outside a run of code, reads as code.
pub fn is_code_line(line: &str) -> bool {
    let t = line.trim();
    if t.is_empty() {
        return false;
    }
    // A nested list item is prose however deep it is.
    if markdown_item(t).is_some_and(|_| !t.starts_with('#')) {
        return false;
    }
    if indent_of(line) >= INDENTED_CODE {
        return !reads_as_sentence(t);
    }
    if t.starts_with('#') || t.starts_with('|') {
        return false;
    }
    is_statement(t)
}

/// Whether a complete line goes on a run of code already held: anything indented, a comment,
/// closing brackets, or a line that is code by itself.
pub fn continues_code(line: &str) -> bool {
    let t = line.trim();
    if t.is_empty() {
        return false;
    }
    if line.starts_with([' ', '\t']) || t.starts_with('#') || t.starts_with("//") {
        return !(indent_of(line) < INDENTED_CODE && reads_as_sentence(t));
    }
    is_statement(t)
}

fn is_statement(t: &str) -> bool {
    let first = t
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .next()
        .unwrap_or_default();
    let after = t[first.len()..].chars().next();
    if t.starts_with('@') && target_len(&t[1..]) > 0 {
        return true;
    }
    if t.starts_with("\"\"\"") || t.starts_with("'''") {
        return true;
    }
    let before_comment = t.split(" #").next().unwrap_or(t).trim_end();
    if BLOCK_OPENERS.contains(&first)
        && matches!(after, Some(' ' | ':' | '('))
        && before_comment.ends_with(':')
    {
        return true;
    }
    if matches!(first, "pass" | "break" | "continue") && after.is_none_or(|c| c == ';') {
        return true;
    }
    if STATEMENTS.contains(&first) && (after.is_none() || !mostly_words(t)) {
        return true;
    }
    if first == "from" && t.contains(" import ") {
        return true;
    }
    if matches!(first, "const" | "let" | "var") && t.contains('=') {
        return true;
    }
    if matches!(first, "function" | "fn" | "pub" | "func") && t.contains('(') {
        return true;
    }
    if t.starts_with("#include") {
        return true;
    }
    if is_assignment(t) || is_call(t) {
        return true;
    }
    if t.ends_with(';') || t.ends_with('{') || t.trim_start_matches([')', ']', '}']).is_empty() {
        return true;
    }
    let ends_as_sentence = t.ends_with(['.', '?', '!']);
    !ends_as_sentence && symbol_share(t) >= 0.25 && !reads_as_sentence(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_opened_like_a_sentence_or_a_markdown_block_flows_from_its_first_letters() {
        for start in [
            "Th",
            "Voici",
            "I think",
            "A l",
            "A `for`",
            "A *list",
            "L'erreur",
            "`print` sends",
            "Él",
            "**No",
            "中文",
            "- ",
            "1. ",
            "> ",
            "# ",
            "#",
            "|",
            "  The",
        ] {
            assert!(starts_as_prose(start), "{start:?}");
        }
        // Whatever follows a heading, a list marker or a table's bar, the line reads as prose.
        for (start, line) in [
            ("#", "#x = 1"),
            ("- ", "- total = 0"),
            ("|", "| a | b |"),
            ("1. ", "1. print(x)"),
        ] {
            assert!(starts_as_prose(start) && !is_code_line(line), "{line:?}");
        }
    }

    #[test]
    fn statements_and_definitions_read_as_code() {
        for line in [
            "def monthly_summary(transactions, month):",
            "total = 0",
            "totals[month] += tx[\"amount\"]",
            "a, b = b, a",
            "for row in rows:",
            "else:",
            "return dict(sorted(totals.items()))",
            "print(total)",
            "import csv",
            "from pathlib import Path",
            "\"\"\"Return the month's totals.\"\"\"",
            "@dataclass",
            "}",
            "let x = 3;",
            "    return total",
            "\ttotal += n",
            "\"income\": round(money_in, 2),",
            "pass",
        ] {
            assert!(is_code_line(line), "{line:?}");
        }
    }

    #[test]
    fn sentences_lists_and_headings_read_as_prose() {
        for line in [
            "Here is the whole function:",
            "A `while` loop stops when its condition becomes false [1].",
            "For example, if the list is empty, the sum is 0.",
            "- Use `sum()` to add the amounts.",
            "1. Read the file line by line.",
            "# Reading a CSV file",
            "> Try it yourself first.",
            "What does it print?",
            "    and then you add each amount to the total.",
            "    - a nested item",
            "Voici une fonction qui fait la somme :",
            "x is the amount (in euros).",
            "| name | amount |",
            "return the total at the end of the function, not inside the loop.",
        ] {
            assert!(!is_code_line(line), "{line:?}");
        }
    }

    #[test]
    fn a_run_goes_on_through_indented_lines_comments_and_closing_brackets() {
        for line in [
            "    # step by step",
            "# grouped by month",
            "        }",
            "])",
            "  x",
        ] {
            assert!(continues_code(line), "{line:?}");
        }
        assert!(!continues_code("This should work with your CSV file."));
    }

    #[test]
    fn the_start_of_a_line_is_let_through_only_when_it_can_only_be_prose() {
        assert!(starts_as_prose("part0 part1 part2 "));
        assert!(
            !starts_as_prose("part0 part1"),
            "the third word may still grow"
        );
        assert!(!starts_as_prose("A = np.array"));
        assert!(!starts_as_prose("A "), "a lone capital may still be a name");
        assert!(!starts_as_prose("`x"), "an inline span still open");
        assert!(!starts_as_prose("`x`;"));
        assert!(!starts_as_prose("X_train, X_test = "));
        assert!(!starts_as_prose("SELECT name "));
        assert!(!starts_as_prose("*args"));
        assert!(!starts_as_prose("T"), "one capital may open a name");
        assert!(!starts_as_prose("for each row "));
        assert!(!starts_as_prose("total = 0 "));
        assert!(!starts_as_prose("    return the total "));
        assert!(!starts_as_prose("print(total) and "));
    }
}
