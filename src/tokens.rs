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
}
