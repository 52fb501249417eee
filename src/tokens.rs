//! Token sequences back into text. A cut between two tokens can fall inside a multi-byte
//! character (accented letters, Chinese, emoji are often several tokens): decoding such a
//! slice as UTF-8 fails, and treating that failure as "no text" emptied whole questions and
//! dropped index chunks. These functions lose at most the one character a cut goes through,
//! and nothing when consecutive parts are cut from one sequence.
use tiktoken_rs::{CoreBPE, Rank};

/// The bytes of `tokens`; ids the encoding does not know contribute nothing.
fn bytes_of(bpe: &CoreBPE, tokens: &[Rank]) -> Vec<u8> {
    tokens
        .iter()
        .flat_map(|&t| bpe.decode_bytes(&[t]).unwrap_or_default())
        .collect()
}

/// The longest valid UTF-8 prefix of `bytes` and the incomplete character left after it.
fn split_valid(bytes: &[u8]) -> (&str, &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(text) => (text, &[]),
        Err(error) => {
            let (valid, rest) = bytes.split_at(error.valid_up_to());
            (std::str::from_utf8(valid).unwrap_or_default(), rest)
        }
    }
}

/// The text of a slice cut out of a longer sequence: a character cut at either end is left out.
pub fn window_text(bpe: &CoreBPE, tokens: &[Rank]) -> String {
    let bytes = bytes_of(bpe, tokens);
    let start = bytes
        .iter()
        .position(|b| b & 0b1100_0000 != 0b1000_0000)
        .unwrap_or(bytes.len());
    let mut text = String::new();
    let mut rest = &bytes[start..];
    // Past the start only the end can be cut, but skip any stray byte rather than stop.
    while !rest.is_empty() {
        let (valid, tail) = split_valid(rest);
        text.push_str(valid);
        rest = tail.get(1..).unwrap_or_default();
        while rest.first().is_some_and(|b| b & 0b1100_0000 == 0b1000_0000) {
            rest = &rest[1..];
        }
    }
    text
}

/// The first `max` tokens of `tokens` as text (fewer bytes if the cut goes through a character).
pub fn prefix_text(bpe: &CoreBPE, tokens: &[Rank], max: usize) -> String {
    window_text(bpe, &tokens[..max.min(tokens.len())])
}

/// `tokens` cut into consecutive parts of at most `max` tokens each, as text; a character the
/// cut goes through is carried whole into the next part, so the parts join to the original.
pub fn split_text(bpe: &CoreBPE, tokens: &[Rank], max: usize) -> Vec<String> {
    let mut parts = Vec::new();
    let mut carry: Vec<u8> = Vec::new();
    for slice in tokens.chunks(max.max(1)) {
        carry.extend(bytes_of(bpe, slice));
        let (valid, rest) = split_valid(&carry);
        let (valid, rest) = (valid.to_string(), rest.to_vec());
        if !valid.is_empty() {
            parts.push(valid);
        }
        carry = rest;
    }
    if !carry.is_empty() {
        parts.push(String::from_utf8_lossy(&carry).into_owned());
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bpe() -> CoreBPE {
        tiktoken_rs::cl100k_base().unwrap()
    }

    const MIXED: &str = "循环是编程的基础：for 循环遍历列表中的每一个元素。Les élèves aiment les boucles 🐍🚀 et les fonctions.";

    #[test]
    fn a_prefix_cut_inside_a_character_keeps_the_text_before_it() {
        let bpe = bpe();
        let tokens = bpe.encode_ordinary(MIXED);
        for max in 1..tokens.len() {
            let text = prefix_text(&bpe, &tokens, max);
            assert!(MIXED.starts_with(&text), "max {max}: {text:?}");
            let whole = bpe.decode(&tokens[..max]).is_ok();
            if max > 4 {
                assert!(!text.is_empty(), "max {max} emptied the text");
            }
            if whole {
                assert_eq!(text, bpe.decode(&tokens[..max]).unwrap());
            }
        }
        assert_eq!(prefix_text(&bpe, &tokens, tokens.len() + 5), MIXED);
    }

    #[test]
    fn some_token_cut_of_chinese_text_goes_through_a_character() {
        // The case the old code turned into an empty string: decode fails on such a cut.
        let bpe = bpe();
        let tokens = bpe.encode_ordinary(MIXED);
        assert!((1..tokens.len()).any(|max| bpe.decode(&tokens[..max]).is_err()));
    }

    #[test]
    fn a_window_drops_only_the_characters_cut_at_its_ends() {
        let bpe = bpe();
        let tokens = bpe.encode_ordinary(MIXED);
        for start in 0..tokens.len() {
            for end in start + 1..=tokens.len() {
                let text = window_text(&bpe, &tokens[start..end]);
                assert!(MIXED.contains(&text), "{start}..{end}: {text:?}");
                let bytes = bpe.decode_bytes(&tokens[start..end]).unwrap().len();
                assert!(
                    text.len() + 8 >= bytes,
                    "{start}..{end} lost more than the ends"
                );
            }
        }
    }

    #[test]
    fn split_parts_join_back_to_the_original() {
        let bpe = bpe();
        let tokens = bpe.encode_ordinary(MIXED);
        for max in 1..12 {
            let parts = split_text(&bpe, &tokens, max);
            assert_eq!(parts.concat(), MIXED, "max {max}");
            assert!(parts.iter().all(|p| !p.is_empty()));
        }
    }
    mod properties {
        use std::sync::OnceLock;

        use proptest::prelude::*;

        use super::*;

        fn bpe() -> &'static CoreBPE {
            static BPE: OnceLock<CoreBPE> = OnceLock::new();
            BPE.get_or_init(|| tiktoken_rs::cl100k_base().unwrap())
        }

        /// Text of every kind: ASCII, accents, CJK, emoji, combining marks, mixed.
        fn any_text() -> impl Strategy<Value = String> {
            prop_oneof![
                any::<String>(),
                "[a-z ]{0,40}",
                "[é à ü ç]{0,40}",
                "[循环是编程的基础列表中元素]{0,40}",
                "[🐍🚀😀👩‍💻🇫🇷 ]{0,20}",
                "\\PC{0,60}",
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(400))]

            #[test]
            fn a_truncated_text_is_a_prefix_within_budget_and_never_empty_when_it_could_hold_a_character(
                text in any_text(),
                max in 0usize..64,
            ) {
                let bpe = bpe();
                let tokens = bpe.encode_ordinary(&text);
                let cut = prefix_text(bpe, &tokens, max);
                // A `String`, so valid UTF-8; and a prefix of what was given.
                prop_assert!(text.starts_with(&cut), "{cut:?} is not a prefix of {text:?}");
                // Within budget: no more bytes than the tokens allowed, no more tokens either.
                let allowed = bytes_of(bpe, &tokens[..max.min(tokens.len())]).len();
                prop_assert!(cut.len() <= allowed);
                prop_assert!(bpe.encode_ordinary(&cut).len() <= max);
                // Empty only when the budget could not hold the first character whole (a
                // character is at most four bytes, a token at least one).
                if let Some(first) = text.chars().next() {
                    if allowed >= first.len_utf8() {
                        prop_assert!(!cut.is_empty(), "max {max} emptied {text:?}");
                    }
                    if max >= 4 {
                        prop_assert!(!cut.is_empty(), "max {max} emptied {text:?}");
                    }
                }
                if tokens.len() <= max {
                    prop_assert_eq!(&cut, &text);
                }
            }

            #[test]
            fn a_window_is_a_piece_of_the_text_within_its_tokens(
                text in any_text(),
                start in 0usize..64,
                len in 0usize..64,
            ) {
                let bpe = bpe();
                let tokens = bpe.encode_ordinary(&text);
                let start = start.min(tokens.len());
                let end = (start + len).min(tokens.len());
                let window = window_text(bpe, &tokens[start..end]);
                prop_assert!(text.contains(&window), "{window:?} is not in {text:?}");
                prop_assert!(window.len() <= bytes_of(bpe, &tokens[start..end]).len());
                // Only the characters cut at the two ends are lost (each at most 4 bytes).
                prop_assert!(window.len() + 8 >= bytes_of(bpe, &tokens[start..end]).len());
                if end - start >= 8 {
                    prop_assert!(!window.is_empty(), "{start}..{end} of {text:?} is empty");
                }
            }

            #[test]
            fn split_parts_always_join_back_to_the_text(text in any_text(), max in 1usize..16) {
                let bpe = bpe();
                let tokens = bpe.encode_ordinary(&text);
                let parts = split_text(bpe, &tokens, max);
                prop_assert_eq!(parts.concat(), text);
                prop_assert!(parts.iter().all(|p| !p.is_empty()));
            }
        }
    }
}
