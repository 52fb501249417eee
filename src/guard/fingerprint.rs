//! Fingerprints of code that survive renaming, reformatting and re-commenting: the code is cut
//! into tokens with comments dropped, identifiers and literals replaced by their kind (keywords
//! and common built-in names kept, they carry the structure), then hashed in k-grams of tokens,
//! as MOSS does. References are small (a project's solution files), so every gram is kept rather
//! than a winnowed sample: a copy of any run of `GRAM` tokens is seen.
use std::collections::HashMap;

/// Tokens in one hashed gram: long enough that `for i in range(n):` alone matches nothing.
pub const GRAM: usize = 6;

/// The normalised tokens of a piece of code.
pub fn tokens(code: &str) -> Vec<String> {
    let chars: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '#' || starts_with(&chars, i, "//") || starts_with(&chars, i, "--") {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if starts_with(&chars, i, "/*") {
            i = find(&chars, i + 2, "*/").map_or(chars.len(), |end| end + 2);
        } else if starts_with(&chars, i, "\"\"\"") || starts_with(&chars, i, "'''") {
            let quote: String = chars[i..i + 3].iter().collect();
            i = find(&chars, i + 3, &quote).map_or(chars.len(), |end| end + 3);
            // A docstring is a comment in all but name: it carries no structure.
        } else if c == '"' || c == '\'' || c == '`' {
            i = skip_string(&chars, i);
            out.push("S".to_string());
        } else if c.is_ascii_digit() {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
            out.push("N".to_string());
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            if is_kept_word(&word) {
                out.push(word);
            } else {
                out.push("I".to_string());
            }
        } else {
            out.push(c.to_string());
            i += 1;
        }
    }
    out
}

/// A piece of code that must not reach a learner, indexed by its token grams.
#[derive(Debug, Clone)]
pub struct Reference {
    pub name: String,
    n_tokens: usize,
    /// Each gram's hash and where it starts in the reference's tokens.
    grams: HashMap<u64, Vec<usize>>,
    /// The grams that the course's own code does not show (all of them without a base).
    specific: std::collections::HashSet<u64>,
}

/// How a block of code stands against one reference.
#[derive(Debug, Clone, PartialEq)]
pub struct Overlap {
    /// The share of the block's grams found in the reference.
    pub containment: f32,
    /// How many of the block's tokens stand in a gram of the reference that the course's own
    /// code does not show.
    pub copied: usize,
    /// Which of the reference's tokens the block reproduces.
    pub covered: Vec<bool>,
}

impl Overlap {
    pub fn covered_tokens(&self) -> usize {
        self.covered.iter().filter(|c| **c).count()
    }
}

impl Reference {
    pub fn new(name: impl Into<String>, code: &str) -> Self {
        let tokens = tokens(code);
        let mut grams: HashMap<u64, Vec<usize>> = HashMap::new();
        for (start, hash) in gram_hashes(&tokens).into_iter().enumerate() {
            grams.entry(hash).or_default().push(start);
        }
        Self {
            name: name.into(),
            n_tokens: tokens.len(),
            specific: grams.keys().copied().collect(),
            grams,
        }
    }

    pub fn n_tokens(&self) -> usize {
        self.n_tokens
    }

    /// This reference without the grams that also stand in `base` (what the course itself
    /// shows: MOSS's "base code"), so idioms the course teaches never count as a copy.
    pub fn without(mut self, base: &Reference) -> Self {
        self.specific.retain(|hash| !base.grams.contains_key(hash));
        self
    }

    /// What `code` reproduces of this reference.
    pub fn overlap(&self, code: &str) -> Overlap {
        let block_tokens = tokens(code);
        let hashes = gram_hashes(&block_tokens);
        let mut covered = vec![false; self.n_tokens];
        let mut block_covered = vec![false; block_tokens.len()];
        let mut matched = 0;
        for (at, hash) in hashes.iter().enumerate() {
            if let Some(starts) = self.grams.get(hash) {
                matched += 1;
                if self.specific.contains(hash) {
                    let end = (at + GRAM).min(block_tokens.len());
                    block_covered[at..end].iter_mut().for_each(|c| *c = true);
                }
                for &start in starts {
                    let end = (start + GRAM).min(self.n_tokens);
                    covered[start..end].iter_mut().for_each(|c| *c = true);
                }
            }
        }
        let containment = if hashes.is_empty() {
            0.0
        } else {
            matched as f32 / hashes.len() as f32
        };
        Overlap {
            containment,
            copied: block_covered.iter().filter(|c| **c).count(),
            covered,
        }
    }
}

/// The top-level units of a file (a definition with its indented body, a statement): what a
/// learner would be asked to write one at a time. Each comes with its first line.
pub fn units(code: &str) -> Vec<(String, String)> {
    let mut units = Vec::new();
    let mut current: Option<(String, String)> = None;
    // Comments and decorators at the top level belong to the unit that follows them.
    let mut preamble = String::new();
    for line in code.lines() {
        let top_level = line.chars().next().is_some_and(|c| !c.is_whitespace());
        let leads_in = line.starts_with(['#', '@']) || line.starts_with("//");
        let closes = line.starts_with(['}', ')', ']']);
        if top_level && !leads_in && !closes {
            units.extend(current.take());
            let mut text = std::mem::take(&mut preamble);
            text.push_str(line);
            text.push('\n');
            current = Some((line.trim().to_string(), text));
        } else if top_level && leads_in {
            preamble.push_str(line);
            preamble.push('\n');
        } else if let Some((_, text)) = current.as_mut() {
            text.push_str(&std::mem::take(&mut preamble));
            text.push_str(line);
            text.push('\n');
        } else {
            preamble.push_str(line);
            preamble.push('\n');
        }
    }
    units.extend(current);
    units
}

/// Every k-gram hash of a token sequence (a short sequence gives one hash of all of it).
pub fn gram_hashes(tokens: &[String]) -> Vec<u64> {
    if tokens.is_empty() {
        return Vec::new();
    }
    if tokens.len() < GRAM {
        return vec![hash_gram(tokens)];
    }
    tokens.windows(GRAM).map(hash_gram).collect()
}

fn hash_gram(gram: &[String]) -> u64 {
    // FNV-1a: stable across runs and builds, unlike std's randomly keyed hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for token in gram {
        for byte in token.bytes().chain(std::iter::once(0xff)) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

fn starts_with(chars: &[char], at: usize, pattern: &str) -> bool {
    (at..)
        .zip(pattern.chars())
        .all(|(i, p)| chars.get(i) == Some(&p))
}

fn find(chars: &[char], from: usize, pattern: &str) -> Option<usize> {
    (from..chars.len()).find(|&i| starts_with(chars, i, pattern))
}

fn skip_string(chars: &[char], start: usize) -> usize {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() {
        match chars[i] {
            '\\' => i += 2,
            c if c == quote => return i + 1,
            '\n' if quote != '`' => return i,
            _ => i += 1,
        }
    }
    chars.len()
}

/// Keywords and built-in names of the languages courses teach most (Python, JavaScript, Java,
/// C, Rust, SQL): kept as themselves, since they are what a renamed copy cannot change.
fn is_kept_word(word: &str) -> bool {
    const KEPT: &[&str] = &[
        "and", "as", "assert", "async", "await", "break", "case", "catch", "class", "const",
        "continue", "def", "del", "do", "elif", "else", "enum", "except", "false", "False",
        "finally", "fn", "for", "from", "function", "if", "impl", "import", "in", "is", "lambda",
        "let", "loop", "match", "mut", "new", "None", "not", "null", "or", "pass", "pub", "raise",
        "return", "self", "static", "struct", "switch", "this", "throw", "true", "True", "try",
        "var", "while", "with", "yield", "print", "range", "len", "int", "str", "float", "list",
        "dict", "set", "open", "input", "append", "sum", "min", "max", "sorted", "round", "items",
        "keys", "values", "format", "split", "strip", "join", "console", "log", "select", "where",
        "group", "by", "order", "insert", "update", "delete", "into",
    ];
    KEPT.contains(&word)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOLUTION: &str = r#"
def monthly_totals(transactions):
    """Sum the amounts of each month."""
    totals = {}
    for tx in transactions:
        month = tx["date"][:7]
        totals[month] = totals.get(month, 0) + tx["amount"]
    return dict(sorted(totals.items()))
"#;

    #[test]
    fn renaming_reformatting_and_recommenting_keep_the_whole_overlap() {
        let disguised = r#"
# my own code, honest
def by_month(rows):
    result = {}   # accumulator
    for r in rows:
        m = r['when'][:7]
        result[m] = result.get(m, 0) + r['value']
    return dict(sorted(result.items()))
"#;
        let reference = Reference::new("solution.py", SOLUTION);
        let overlap = reference.overlap(disguised);
        assert_eq!(overlap.containment, 1.0);
        assert_eq!(overlap.covered_tokens(), reference.n_tokens());
    }

    #[test]
    fn unrelated_code_shares_little_with_the_solution() {
        let other = "for name in names:\n    print(f\"hello {name}\")\n";
        let overlap = Reference::new("solution.py", SOLUTION).overlap(other);
        assert!(overlap.containment < 0.3, "{overlap:?}");
    }

    #[test]
    fn a_part_of_the_solution_covers_only_its_part() {
        let reference = Reference::new("solution.py", SOLUTION);
        let part = "totals = {}\nfor tx in transactions:\n    month = tx['date'][:7]\n";
        let overlap = reference.overlap(part);
        assert_eq!(overlap.containment, 1.0);
        assert!(overlap.covered_tokens() < reference.n_tokens() / 2);
    }

    #[test]
    fn a_file_is_cut_into_its_top_level_units_with_their_comments() {
        let code = "import csv\n\n# totals\n@cache\ndef f(x):\n    return x\n\n    # inner\ndef g():\n    pass\n";
        let units = units(code);
        let firsts: Vec<&str> = units.iter().map(|(first, _)| first.as_str()).collect();
        assert_eq!(firsts, ["import csv", "def f(x):", "def g():"]);
        assert_eq!(
            units[1].1,
            "# totals\n@cache\ndef f(x):\n    return x\n\n    # inner\n"
        );
    }

    #[test]
    fn grams_the_course_itself_shows_never_count_as_a_copy() {
        let idiom = "for row in rows:\n    key = row['when'][:7]\n";
        let reference = Reference::new("solution.py", SOLUTION);
        assert!(reference.overlap(idiom).copied > 0);
        let base = Reference::new(
            "course",
            "for entry in entries:\n    year = entry['date'][:4]\n",
        );
        assert_eq!(reference.without(&base).overlap(idiom).copied, 0);
    }

    #[test]
    fn comments_and_docstrings_are_not_tokens() {
        assert_eq!(
            tokens("x = 1 # one\n/* two */ // three\n'''four'''"),
            ["I", "=", "N"]
        );
    }

    #[test]
    fn an_unterminated_string_or_comment_ends_the_code_without_a_panic() {
        assert_eq!(tokens("x = \"abc"), ["I", "=", "S"]);
        assert_eq!(tokens("x /* open"), ["I"]);
        assert_eq!(tokens("'\\"), ["S"]);
    }

    #[test]
    fn hashes_are_the_same_on_every_run() {
        assert_eq!(
            gram_hashes(&tokens(SOLUTION)),
            gram_hashes(&tokens(SOLUTION))
        );
        assert!(gram_hashes(&[]).is_empty());
    }
}
