//! The prose side of the guard: citations `[n]` that name no passage of the turn are removed,
//! and words the policy keeps out of answers are replaced. Text flows through at once; only a
//! tail that might still become a citation (`[1`) or a forbidden word (`sol` of `solution`) is
//! held until the next delta says what it is.

/// What the prose filter removed, for the turn's report.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProseReport {
    pub citations_kept: usize,
    pub citations_removed: Vec<u32>,
    pub words_removed: Vec<String>,
}

#[derive(Debug)]
pub struct ProseFilter {
    n_passages: u32,
    /// Lowercase; single words or identifiers.
    forbidden: Vec<String>,
    pending: String,
    /// Whether the last released character was part of a word (a word goes on across deltas).
    after_word: bool,
    in_inline_code: bool,
    pub report: ProseReport,
}

/// The longest `[12, 3]` held while it might still be a citation.
const MAX_CITATION_CHARS: usize = 24;

impl ProseFilter {
    pub fn new(n_passages: usize, forbidden: &[String]) -> Self {
        Self {
            n_passages: u32::try_from(n_passages).unwrap_or(u32::MAX),
            forbidden: forbidden.iter().map(|w| w.to_lowercase()).collect(),
            pending: String::new(),
            after_word: false,
            in_inline_code: false,
            report: ProseReport::default(),
        }
    }

    /// Takes prose; returns what may be shown now.
    pub fn push(&mut self, text: &str) -> String {
        self.pending.push_str(text);
        let hold_from = self.hold_from();
        let rest = self.pending.split_off(hold_from);
        let release = std::mem::replace(&mut self.pending, rest);
        self.clean(&release)
    }

    /// The end of the answer (or of a run of prose before a code block): nothing more is held.
    pub fn flush(&mut self) -> String {
        let release = std::mem::take(&mut self.pending);
        let out = self.clean(&release);
        self.after_word = false;
        out
    }

    /// Where the tail that must wait begins (`pending.len()` when nothing waits): a possible
    /// citation or forbidden word, with the spaces before it (a removed citation takes its
    /// space with it).
    fn hold_from(&self) -> usize {
        let held = self.held_tail();
        self.pending[..held].trim_end_matches(' ').len()
    }

    fn held_tail(&self) -> usize {
        let text = &self.pending;
        if let Some(open) = text.rfind('[') {
            let inside = &text[open + 1..];
            if text.len() - open <= MAX_CITATION_CHARS
                && inside
                    .chars()
                    .all(|c| c.is_ascii_digit() || c == ',' || c == ' ')
            {
                return open;
            }
        }
        if !self.forbidden.is_empty() {
            let word_start = text
                .char_indices()
                .rev()
                .take_while(|(_, c)| is_word_char(*c))
                .last()
                .map(|(i, _)| i);
            if let Some(start) = word_start {
                let tail = text[start..].to_lowercase();
                if self.forbidden.iter().any(|w| w.starts_with(&tail)) {
                    return start;
                }
            }
        }
        text.len()
    }

    fn clean(&mut self, text: &str) -> String {
        let chars: Vec<char> = text.chars().collect();
        let mut out = String::with_capacity(text.len());
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            if c == '`' {
                self.in_inline_code = !self.in_inline_code;
            }
            if c == '['
                && !self.in_inline_code
                && !self.after_word
                && let Some((numbers, end)) = citation_at(&chars, i)
            {
                self.rewrite_citation(&numbers, &mut out);
                i = end;
                self.after_word = false;
                continue;
            }
            if is_word_char(c) && !self.after_word {
                let end = (i..chars.len())
                    .find(|&j| !is_word_char(chars[j]))
                    .unwrap_or(chars.len());
                let word: String = chars[i..end].iter().collect();
                if self.forbidden.contains(&word.to_lowercase()) {
                    self.report.words_removed.push(word);
                    out.push('…');
                } else {
                    out.push_str(&word);
                }
                self.after_word = true;
                i = end;
                continue;
            }
            self.after_word = is_word_char(c) || c == ']';
            out.push(c);
            i += 1;
        }
        out
    }

    fn rewrite_citation(&mut self, numbers: &[u32], out: &mut String) {
        let kept: Vec<String> = numbers
            .iter()
            .filter(|&&n| n >= 1 && n <= self.n_passages)
            .map(u32::to_string)
            .collect();
        for &n in numbers {
            if n == 0 || n > self.n_passages {
                self.report.citations_removed.push(n);
            }
        }
        self.report.citations_kept += kept.len();
        if kept.is_empty() {
            if out.ends_with(' ') {
                out.pop();
            }
        } else {
            out.push('[');
            out.push_str(&kept.join(", "));
            out.push(']');
        }
    }
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// A citation `[1]` or `[1, 2]` starting at `start`: its numbers and the index after `]`.
fn citation_at(chars: &[char], start: usize) -> Option<(Vec<u32>, usize)> {
    let end =
        (start + 1..chars.len().min(start + MAX_CITATION_CHARS)).find(|&j| chars[j] == ']')?;
    let inside: String = chars[start + 1..end].iter().collect();
    let numbers: Option<Vec<u32>> = inside
        .split(',')
        .map(|part| part.trim().parse::<u32>().ok())
        .collect();
    let numbers = numbers.filter(|n| !n.is_empty())?;
    Some((numbers, end + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(filter: &mut ProseFilter, text: &str, step: usize) -> String {
        let chars: Vec<char> = text.chars().collect();
        let mut out = String::new();
        for chunk in chars.chunks(step) {
            out.push_str(&filter.push(&chunk.iter().collect::<String>()));
        }
        out + &filter.flush()
    }

    #[test]
    fn a_citation_of_a_passage_not_given_is_removed_whatever_the_deltas() {
        for step in 1..9 {
            let mut filter = ProseFilter::new(2, &[]);
            let out = run(
                &mut filter,
                "Loops repeat [1]. See also [7] and [2][3], or [1, 9].",
                step,
            );
            assert_eq!(
                out, "Loops repeat [1]. See also and [2], or [1].",
                "step {step}"
            );
            assert_eq!(filter.report.citations_removed, vec![7, 3, 9]);
            assert_eq!(filter.report.citations_kept, 3);
        }
    }

    #[test]
    fn indexing_and_inline_code_are_not_citations() {
        let mut filter = ProseFilter::new(1, &[]);
        let out = run(
            &mut filter,
            "Use `xs[5]` or items[4]; the list [a] stays.",
            2,
        );
        assert_eq!(out, "Use `xs[5]` or items[4]; the list [a] stays.");
        assert!(filter.report.citations_removed.is_empty());
    }

    #[test]
    fn a_forbidden_word_is_replaced_even_when_split_across_deltas() {
        let mut filter = ProseFilter::new(0, &["Solution".to_string()]);
        let out = run(&mut filter, "The solution is not solutions, SOLUTION.", 3);
        assert_eq!(out, "The … is not solutions, ….");
        assert_eq!(filter.report.words_removed, vec!["solution", "SOLUTION"]);
    }

    #[test]
    fn prose_without_a_pending_tail_is_released_at_once() {
        let mut filter = ProseFilter::new(1, &["answer".to_string()]);
        // Only a trailing space (invisible) waits: a citation may follow and take it away.
        assert_eq!(filter.push("Hello there "), "Hello there");
        assert_eq!(filter.push("an"), "");
        assert_eq!(filter.push("d more [1"), " and more");
        assert_eq!(filter.push("]"), " [1]");
    }
}
