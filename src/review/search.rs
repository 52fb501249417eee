//! The mentor's search: the query typed into the box, parsed into terms (words or `"quoted
//! phrases"`, case-folded), and the snippet shown around a hit. The store finds messages
//! holding every term ([`crate::store::Store::search`]).
const MAX_QUERY_CHARS: usize = 200;
const MAX_TERMS: usize = 8;
const MIN_TERM_CHARS: usize = 2;
const SNIPPET_CHARS: usize = 200;

/// Why a query cannot be searched for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("the search query `q` is empty")]
    Empty,
    #[error("the search query has {chars} characters; the limit is {max}", max = MAX_QUERY_CHARS)]
    TooLong { chars: usize },
    #[error("the search query contains control characters")]
    ControlCharacters,
    #[error("the search query has an unbalanced quote (\")")]
    UnbalancedQuote,
    #[error("search terms need at least {min} characters; got {n_given} shorter ones", min = MIN_TERM_CHARS)]
    TermsTooShort { n_given: usize },
    #[error("the search query has {n_terms} terms; the limit is {max}", max = MAX_TERMS)]
    TooManyTerms { n_terms: usize },
}

/// Search terms from a query: words, or `"quoted phrases"`, lowercased; terms shorter than two
/// characters are dropped, repeats too.
pub fn parse_query(q: &str) -> Result<Vec<String>, QueryError> {
    let q = q.trim();
    if q.is_empty() {
        return Err(QueryError::Empty);
    }
    let chars = q.chars().count();
    if chars > MAX_QUERY_CHARS {
        return Err(QueryError::TooLong { chars });
    }
    if q.chars().any(char::is_control) {
        return Err(QueryError::ControlCharacters);
    }
    if q.matches('"').count() % 2 == 1 {
        return Err(QueryError::UnbalancedQuote);
    }
    let mut terms = Vec::new();
    for (i, part) in q.split('"').enumerate() {
        if i % 2 == 1 {
            let phrase = part.split_whitespace().collect::<Vec<_>>().join(" ");
            if !phrase.is_empty() {
                terms.push(phrase.to_lowercase());
            }
        } else {
            terms.extend(part.split_whitespace().map(str::to_lowercase));
        }
    }
    let n_given = terms.len();
    terms.retain(|t| t.chars().count() >= MIN_TERM_CHARS);
    terms.dedup();
    if terms.is_empty() {
        return Err(QueryError::TermsTooShort { n_given });
    }
    if terms.len() > MAX_TERMS {
        return Err(QueryError::TooManyTerms {
            n_terms: terms.len(),
        });
    }
    Ok(terms)
}

/// Up to `SNIPPET_CHARS` of `text` around the first term found, whitespace collapsed, with `…`
/// where text was cut.
pub fn snippet(text: &str, terms: &[String]) -> String {
    let chars: Vec<char> = text.chars().collect();
    // Case-fold character by character, remembering which character each folded byte came
    // from: folding changes lengths (İ → i̇, K → k), so offsets in the folded text must never
    // index the original.
    let mut lower = String::with_capacity(text.len());
    let mut origin: Vec<usize> = Vec::with_capacity(text.len());
    for (idx, c) in chars.iter().enumerate() {
        lower.extend(c.to_lowercase());
        origin.resize(lower.len(), idx);
    }
    let at = terms
        .iter()
        .filter_map(|t| lower.find(t.as_str()))
        .min()
        .map_or(0, |byte| origin[byte]);
    let start = at.saturating_sub(SNIPPET_CHARS / 3);
    let end = (start + SNIPPET_CHARS).min(chars.len());
    let mut out: String = chars[start..end].iter().collect();
    out = out.split_whitespace().collect::<Vec<_>>().join(" ");
    if start > 0 {
        out.insert(0, '…');
    }
    if end < chars.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(q: &str) -> String {
        parse_query(q).unwrap_err().to_string()
    }

    #[test]
    fn queries_split_into_words_and_quoted_phrases() {
        assert_eq!(
            parse_query(r#"While "never  stops" loop"#).unwrap(),
            vec!["while", "never stops", "loop"]
        );
    }

    #[test]
    fn malformed_queries_are_refused_with_a_reason() {
        assert!(refusal("   ").contains("empty"));
        assert!(refusal("\"open").contains("quote"));
        assert!(refusal("a b c").contains("2 characters"));
        assert!(refusal(&"x".repeat(201)).contains("limit"));
        assert!(refusal("aa bb cc dd ee ff gg hh ii").contains("terms"));
        assert!(refusal("tab\there").contains("control"));
    }

    #[test]
    fn snippets_centre_on_the_match() {
        let text = format!("{} needle {}", "a ".repeat(200), "b ".repeat(200));
        let s = snippet(&text, &["needle".to_string()]);
        assert!(s.contains("needle"));
        assert!(s.starts_with('…') && s.ends_with('…'));
    }

    #[test]
    fn text_whose_case_folding_changes_lengths_never_panics() {
        // K (Kelvin sign, 3 bytes) folds to k (1 byte), İ (2 bytes) to i̇ (3 bytes): the folded
        // text has the original's length but not its offsets.
        let question = "\u{212A}€loop İİ and the loop never stops";
        assert_eq!(snippet(question, &["loop".to_string()]), question);
        let long = format!("{} \u{212A}€loop İİ {}", "İ".repeat(150), "a".repeat(150));
        let s = snippet(&long, &["loop".to_string()]);
        assert!(s.contains("loop"), "{s}");
        for text in ["İİİİ loop", "\u{212A}\u{212A}loop", "ΣΑΣ loop", "ǅ loop ǅ"] {
            assert!(
                snippet(text, &["loop".to_string()]).contains("loop"),
                "{text}"
            );
        }
    }

    #[test]
    fn a_short_text_is_its_own_snippet() {
        assert_eq!(
            snippet("a  while\nloop", &["loop".to_string()]),
            "a while loop"
        );
    }
}
