//! The plain baseline retrieval is measured against: textbook Okapi BM25 (k1 1.2, b 0.75, the
//! corpus's own average length) over chunks of at most 400 tokens cut at headings, no overlap,
//! words lowercased and split on anything not alphanumeric, no stemming, no stop words. A few
//! dozen lines that any retriever of ours should beat on every set.
use std::collections::HashMap;
use std::path::Path;

use anyhow::Context;

use crate::retrieval::chunk::{self, ChunkSizes};
use crate::retrieval::document;

const K1: f64 = 1.2;
const B: f64 = 0.75;
const CHUNK_TOKENS: usize = 400;

/// An in-memory BM25 index of a content folder.
pub struct Baseline {
    sources: Vec<String>,
    lengths: Vec<f64>,
    average_length: f64,
    /// term -> (chunk index, term frequency)
    postings: HashMap<String, Vec<(usize, u32)>>,
}

/// Lowercased runs of alphanumeric characters.
pub fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
}

impl Baseline {
    /// Chunks and indexes every content file under `dir`.
    pub fn build(dir: &Path, max_file_bytes: u64) -> anyhow::Result<Self> {
        let root_name = dir
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_else(|| "content".into());
        let mut texts = Vec::new();
        for path in crate::retrieval::ingest::content_files(dir) {
            let relative = path.strip_prefix(dir).unwrap_or(&path);
            let bytes =
                std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
            let Ok(doc) = document::parse(relative, &root_name, &bytes, max_file_bytes) else {
                continue;
            };
            let sizes = ChunkSizes {
                max_tokens: CHUNK_TOKENS,
                overlap_tokens: 0,
            };
            for c in chunk::chunk(&doc, sizes) {
                texts.push((
                    c.source.clone(),
                    format!("{}\n{}", c.heading_path.join(" "), c.text),
                ));
            }
        }
        Ok(Self::from_texts(texts))
    }

    /// Indexes `(source, text)` chunks.
    pub fn from_texts(texts: Vec<(String, String)>) -> Self {
        let mut postings: HashMap<String, Vec<(usize, u32)>> = HashMap::new();
        let mut sources = Vec::with_capacity(texts.len());
        let mut lengths = Vec::with_capacity(texts.len());
        for (idx, (source, text)) in texts.into_iter().enumerate() {
            let mut counts: HashMap<String, u32> = HashMap::new();
            let mut length = 0;
            for word in words(&text) {
                *counts.entry(word).or_default() += 1;
                length += 1;
            }
            for (word, count) in counts {
                postings.entry(word).or_default().push((idx, count));
            }
            sources.push(source);
            lengths.push(length as f64);
        }
        let average_length = lengths.iter().sum::<f64>() / lengths.len().max(1) as f64;
        Self {
            sources,
            lengths,
            average_length: average_length.max(1.0),
            postings,
        }
    }

    /// The sources of the `limit` best chunks for `question`, best first.
    pub fn search(&self, question: &str, limit: usize) -> Vec<String> {
        let n = self.sources.len() as f64;
        let mut scores = vec![0.0f64; self.sources.len()];
        for word in words(question) {
            let Some(postings) = self.postings.get(&word) else {
                continue;
            };
            let df = postings.len() as f64;
            let idf = ((n - df + 0.5) / (df + 0.5) + 1.0).ln();
            for &(idx, tf) in postings {
                let tf = f64::from(tf);
                let norm = K1 * (1.0 - B + B * self.lengths[idx] / self.average_length);
                scores[idx] += idf * tf * (K1 + 1.0) / (tf + norm);
            }
        }
        let mut ranked: Vec<usize> = (0..scores.len()).filter(|&i| scores[i] > 0.0).collect();
        ranked.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
        ranked
            .into_iter()
            .take(limit)
            .map(|i| self.sources[i].clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chunk_sharing_rare_words_ranks_first() {
        let index = Baseline::from_texts(vec![
            ("a.md".into(), "loops repeat the body of a loop".into()),
            ("b.md".into(), "a dictionary maps keys to values".into()),
            (
                "c.md".into(),
                "the body of a function runs when called".into(),
            ),
        ]);
        assert_eq!(index.search("what maps keys?", 3), vec!["b.md"]);
        assert_eq!(index.search("loop body", 3)[0], "a.md");
        assert!(index.search("nothing matches", 3).is_empty());
    }

    #[test]
    fn words_are_lowercased_and_split_on_punctuation() {
        let got: Vec<String> = words("Dict.get(KEY_name)").collect();
        assert_eq!(got, ["dict", "get", "key", "name"]);
    }
}
