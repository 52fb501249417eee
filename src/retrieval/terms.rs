//! Text into the terms BM25 counts, for course prose and pasted code alike: words split on
//! anything that is not a letter, digit or `_`; code identifiers kept whole *and* split into
//! their parts (`read_csv` → `read_csv`, `read`, `csv`; `toUpperCase` → `touppercase`, `to`,
//! `upper`, `case`); accents folded (learners often type without them); English and French
//! function words dropped, but never a word that is also a keyword (`if`, `for`, `while`, `in`,
//! `not`, `and`, `or`, `is`, `with`, `return`...), which a generic stop list would remove from
//! every question about them. Each term says whether it is prose (stemmed in the text's
//! language) or code (stemmed the same way whatever the language, so `append` in a French
//! question meets `append` in English code).
use std::borrow::Cow;

/// The language a text's prose is stemmed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    English,
    French,
}

/// One term of a text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    pub text: String,
    /// An identifier or a word inside code: stemmed as English whatever the text's language.
    pub code: bool,
}

/// Function words that carry no topic. Kept out on purpose: words that are also keywords or
/// built-ins of common teaching languages (`if`, `for`, `while`, `in`, `is`, `not`, `and`, `or`,
/// `with`, `as`, `from`, `return`, `all`, `any`, `each`, `do`, `case`, `then`, `else`...).
const ENGLISH_STOP: &[&str] = &[
    "a",
    "about",
    "above",
    "after",
    "again",
    "am",
    "an",
    "are",
    "at",
    "be",
    "been",
    "before",
    "being",
    "below",
    "between",
    "both",
    "but",
    "by",
    "can",
    "could",
    "did",
    "doing",
    "down",
    "during",
    "few",
    "further",
    "had",
    "has",
    "have",
    "having",
    "he",
    "her",
    "here",
    "hers",
    "herself",
    "him",
    "himself",
    "his",
    "how",
    "i",
    "im",
    "into",
    "it",
    "its",
    "itself",
    "just",
    "me",
    "more",
    "most",
    "my",
    "myself",
    "no",
    "nor",
    "of",
    "off",
    "on",
    "once",
    "only",
    "other",
    "our",
    "ours",
    "ourselves",
    "out",
    "over",
    "own",
    "same",
    "she",
    "should",
    "so",
    "some",
    "such",
    "than",
    "that",
    "the",
    "their",
    "theirs",
    "them",
    "themselves",
    "there",
    "these",
    "they",
    "this",
    "those",
    "through",
    "to",
    "too",
    "under",
    "until",
    "up",
    "very",
    "was",
    "we",
    "were",
    "what",
    "when",
    "where",
    "which",
    "who",
    "whom",
    "why",
    "would",
    "you",
    "your",
    "yours",
    "yourself",
    "yourselves",
    "dont",
    "doesnt",
    "didnt",
    "cant",
    "ive",
    "get",
    "got",
    "does",
    "want",
    "need",
    "please",
    "thanks",
    "hi",
    "hello",
    "also",
    "like",
    "use",
    "using",
    "used",
    "way",
    "something",
    "thing",
    "things",
];

/// French function words (accents folded).
const FRENCH_STOP: &[&str] = &[
    "au", "aux", "avec", "ce", "ces", "cet", "cette", "dans", "de", "des", "du", "elle", "elles",
    "en", "et", "eux", "il", "ils", "je", "la", "le", "les", "leur", "leurs", "lui", "ma", "mais",
    "me", "meme", "mes", "moi", "mon", "ne", "nos", "notre", "nous", "ou", "par", "pas", "pour",
    "qu", "que", "qui", "sa", "se", "ses", "son", "sur", "ta", "te", "tes", "toi", "ton", "tu",
    "un", "une", "vos", "votre", "vous", "c", "d", "j", "l", "m", "n", "s", "t", "y", "est",
    "sont", "suis", "etre", "ai", "as", "avons", "avez", "ont", "fait", "faire", "comment",
    "pourquoi", "quoi", "quel", "quelle", "quels", "quelles", "ca", "cela", "ceci", "donc",
    "alors", "tres", "plus", "moins", "aussi", "bien", "peut", "peux", "dois", "doit", "faut",
    "veux", "voudrais", "merci", "bonjour", "svp", "ya", "quand", "dont", "ici",
];

/// Words whose presence says a text is French rather than English (accents folded).
const FRENCH_MARKERS: &[&str] = &[
    "le", "la", "les", "des", "est", "une", "et", "pour", "dans", "que", "qui", "du", "avec",
    "pas", "sur", "au", "aux", "ce", "cette", "je", "vous", "nous", "comment", "pourquoi", "mon",
    "ma", "mes", "ne", "sont", "il", "elle", "quoi", "quel", "quelle", "ou", "votre", "leur",
];

/// Words whose presence says a text is English.
const ENGLISH_MARKERS: &[&str] = &[
    "the", "is", "and", "to", "of", "for", "with", "that", "this", "how", "what", "why", "my",
    "it", "you", "do", "does", "are", "be", "an", "can", "when", "which", "from", "your", "we",
    "they", "there", "have", "has", "i",
];

fn is_stop(word: &str) -> bool {
    ENGLISH_STOP.contains(&word) || FRENCH_STOP.contains(&word)
}

/// The language of `text`'s prose: French when French function words outnumber English ones.
pub fn detect_language(text: &str) -> Lang {
    let (mut french, mut english) = (0usize, 0usize);
    for raw in raw_tokens(text) {
        let word = fold(&raw.text.to_lowercase()).into_owned();
        french += usize::from(FRENCH_MARKERS.contains(&word.as_str()));
        english += usize::from(ENGLISH_MARKERS.contains(&word.as_str()));
    }
    if french > english {
        Lang::French
    } else {
        Lang::English
    }
}

/// Accented Latin letters to their base letter (`é` → `e`, `œ` → `oe`); others unchanged.
pub fn fold(text: &str) -> Cow<'_, str> {
    if text.is_ascii() {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' => out.push('a'),
            'ç' => out.push('c'),
            'è' | 'é' | 'ê' | 'ë' => out.push('e'),
            'ì' | 'í' | 'î' | 'ï' => out.push('i'),
            'ñ' => out.push('n'),
            'ò' | 'ó' | 'ô' | 'õ' | 'ö' => out.push('o'),
            'ù' | 'ú' | 'û' | 'ü' => out.push('u'),
            'ý' | 'ÿ' => out.push('y'),
            'œ' => out.push_str("oe"),
            'æ' => out.push_str("ae"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

struct RawToken<'a> {
    text: &'a str,
    /// Inside a fenced block or inline backticks, or followed by `(` or preceded by `.`.
    in_code: bool,
}

/// Runs of letters, digits and `_`, each marked when it sits in code.
fn raw_tokens(text: &str) -> Vec<RawToken<'_>> {
    let mut tokens = Vec::new();
    let mut in_fence = false;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let line_start = offset;
        offset += line.len();
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            in_fence = !in_fence;
            continue;
        }
        let mut in_backticks = false;
        let mut start: Option<usize> = None;
        let mut previous = ' ';
        let mut word_previous = ' ';
        for (i, c) in line.char_indices() {
            let word_char = c.is_alphanumeric() || c == '_';
            match (word_char, start) {
                (true, None) => {
                    start = Some(i);
                    word_previous = previous;
                }
                (false, Some(s)) => {
                    tokens.push(RawToken {
                        text: &text[line_start + s..line_start + i],
                        in_code: in_fence || in_backticks || word_previous == '.' || c == '(',
                    });
                    start = None;
                }
                _ => {}
            }
            if c == '`' {
                in_backticks = !in_backticks;
            }
            previous = c;
        }
        if let Some(s) = start {
            tokens.push(RawToken {
                text: &text[line_start + s..line_start + line.len()],
                in_code: in_fence || in_backticks || word_previous == '.',
            });
        }
    }
    tokens
}

/// The parts of an identifier: split at `_` and at lower-to-upper case changes.
fn identifier_parts(token: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    for piece in token.split('_').filter(|p| !p.is_empty()) {
        let mut start = 0;
        let mut previous_lower = false;
        for (i, c) in piece.char_indices() {
            if c.is_uppercase() && previous_lower {
                parts.push(&piece[start..i]);
                start = i;
            }
            previous_lower = c.is_lowercase() || c.is_ascii_digit();
        }
        parts.push(&piece[start..]);
    }
    parts
}

fn keep_word(word: &str) -> bool {
    let long_enough = word.chars().count() >= 2;
    let short_number = !word.chars().all(|c| c.is_ascii_digit()) || word.len() <= 6;
    long_enough && short_number && !is_stop(word)
}

/// The terms of `text`, in order (repeats kept: they are counted).
pub fn terms(text: &str) -> Vec<Term> {
    let mut out = Vec::new();
    for raw in raw_tokens(text) {
        let core = raw.text.trim_matches('_');
        if core.is_empty() {
            continue;
        }
        let parts = identifier_parts(core);
        let is_identifier = parts.len() > 1;
        if is_identifier {
            let whole = fold(&core.to_lowercase()).into_owned();
            out.push(Term {
                text: whole,
                code: true,
            });
            for part in parts {
                let word = fold(&part.to_lowercase()).into_owned();
                if keep_word(&word) {
                    out.push(Term {
                        text: word,
                        code: true,
                    });
                }
            }
            continue;
        }
        let word = fold(&core.to_lowercase()).into_owned();
        if keep_word(&word) {
            out.push(Term {
                text: word,
                code: raw.in_code,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(text: &str) -> Vec<String> {
        terms(text).into_iter().map(|t| t.text).collect()
    }

    #[test]
    fn identifiers_are_kept_whole_and_split_into_parts() {
        assert_eq!(
            texts("call read_csv then toUpperCase"),
            [
                "call",
                "read_csv",
                "read",
                "csv",
                "then",
                "touppercase",
                "upper",
                "case"
            ]
        );
        assert_eq!(texts("__init__"), ["init"]);
        assert_eq!(texts("HTTPServer"), ["httpserver"]);
    }

    #[test]
    fn keywords_survive_while_function_words_go() {
        assert_eq!(
            texts("what is the difference between for and while in my loop"),
            ["is", "difference", "for", "and", "while", "in", "loop"]
        );
        assert_eq!(
            texts("pourquoi ma boucle ne s'arrête pas"),
            ["boucle", "arrete"]
        );
    }

    #[test]
    fn error_names_stay_one_term_and_accents_are_folded() {
        assert_eq!(
            texts("IndexError: list index out of range"),
            ["indexerror", "index", "error", "list", "index", "range"]
        );
        assert_eq!(texts("Écriture formatée"), ["ecriture", "formatee"]);
    }

    #[test]
    fn code_is_marked_by_fences_backticks_calls_and_attributes() {
        let got =
            terms("use `append` now\n```python\nvalues.sort()\n```\nthen df.iloc and print(x)");
        let code: Vec<(&str, bool)> = got.iter().map(|t| (t.text.as_str(), t.code)).collect();
        assert_eq!(
            code,
            [
                ("append", true),
                ("now", false),
                ("values", true),
                ("sort", true),
                ("then", false),
                ("df", false),
                ("iloc", true),
                ("and", false),
                ("print", true),
            ]
        );
    }

    #[test]
    fn long_numbers_and_single_letters_are_dropped() {
        assert_eq!(texts("x = 1234567 + 2002 + 404"), ["2002", "404"]);
    }

    #[test]
    fn the_language_is_the_one_with_more_function_words() {
        assert_eq!(
            detect_language("comment lire un fichier csv avec pandas ?"),
            Lang::French
        );
        assert_eq!(
            detect_language("how do I read a csv file with pandas?"),
            Lang::English
        );
        assert_eq!(detect_language("df.groupby('x').mean()"), Lang::English);
    }
}
