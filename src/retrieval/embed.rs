//! The embedder seams: BM25 sparse vectors (qdrant-edge's own BM25, so a Qdrant server agrees
//! on token ids and formula) and dense embedders (in-process model or an embeddings endpoint).
use async_trait::async_trait;
use qdrant_edge::bm25_embed::{EdgeBm25, EdgeBm25Config};

use std::collections::BTreeMap;

use super::store::SparseVec;
use super::terms;

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error(
        "embedding model files missing in {dir}: {missing}. Fetch them with `{fetch}` (see README)"
    )]
    ModelMissing {
        dir: String,
        missing: String,
        /// The script that fetches them.
        fetch: &'static str,
    },
    #[error("embedding model failed to load: {0}")]
    Load(String),
    #[error("embedding failed: {0}")]
    Embed(String),
    #[error("embeddings endpoint failed: {0}")]
    Endpoint(String),
}

/// A model fetched by a script, for tests: `None` when its files are missing (the test then
/// skips, saying which files and which script fetches them); any other failure panics.
#[cfg(test)]
pub(crate) fn fetched_or_skip<T>(loaded: Result<T, EmbedError>) -> Option<T> {
    match loaded {
        Ok(model) => Some(model),
        Err(error @ EmbedError::ModelMissing { .. }) => {
            eprintln!("skipping: {error}");
            None
        }
        Err(error) => panic!("model present but failed to load: {error}"),
    }
}

/// A dense text embedder; vectors are L2-normalised.
#[async_trait]
pub trait DenseEmbedder: Send + Sync {
    /// Length of every vector this embedder returns.
    fn dimensions(&self) -> usize;
    /// A stable name; a change of embedder rebuilds the index.
    fn id(&self) -> String;
    async fn embed_documents(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError>;
    async fn embed_query(&self, text: &str) -> Result<Vec<f32>, EmbedError>;
}

/// BM25 term weights, computed here over [`terms`](super::terms): prose stemmed with
/// Snowball in its language (English or French), code identifiers whole and in parts, function
/// words out but keywords in. Token ids are qdrant's (murmur3 of the stem, through qdrant-edge's
/// BM25 with a whitespace tokenizer and no stop words), so any Qdrant store holds them. A
/// document's terms get BM25's saturated, length-normalised term frequency; a question's get
/// one each (IDF is applied by the index through the `Idf` modifier).
pub struct Bm25 {
    english: EdgeBm25,
    french: EdgeBm25,
    params: Bm25Params,
}

/// BM25's constants; `avg_len` is the expected length of a chunk in terms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bm25Params {
    pub k1: f32,
    pub b: f32,
    pub avg_len: f32,
}

impl Default for Bm25Params {
    fn default() -> Self {
        Self {
            k1: 1.2,
            b: 0.75,
            avg_len: 150.0,
        }
    }
}

/// A term's id: qdrant's BM25 on the single, already normalised term (it stems it).
fn stemmer(language: &str) -> EdgeBm25 {
    let config: EdgeBm25Config = serde_json::from_value(serde_json::json!({
        "tokenizer": "whitespace",
        "language": language,
        "lowercase": true,
        "stopwords": {"custom": []},
        "stemmer": {"type": "snowball", "language": language},
    }))
    .expect("a whitespace BM25 configuration with a Snowball stemmer is valid");
    EdgeBm25::new(config).expect("English and French are Snowball languages")
}

impl Bm25 {
    pub fn new() -> Self {
        Self::with_params(Bm25Params::default())
    }

    pub fn with_params(params: Bm25Params) -> Self {
        Self {
            english: stemmer("english"),
            french: stemmer("french"),
            params,
        }
    }

    /// A name for the tokenisation and weights; a change rebuilds the index.
    pub fn id(&self) -> String {
        format!(
            "bm25v2(k1={},b={},avg={})",
            self.params.k1, self.params.b, self.params.avg_len
        )
    }

    /// Term ids of `text`, repeats kept.
    fn term_ids(&self, text: &str) -> Vec<u32> {
        let prose = match terms::detect_language(text) {
            terms::Lang::English => &self.english,
            terms::Lang::French => &self.french,
        };
        terms::terms(text)
            .into_iter()
            .filter_map(|term| {
                let model = if term.code { &self.english } else { prose };
                model.embed_query(&term.text).indices.first().copied()
            })
            .collect()
    }

    pub fn embed_document(&self, text: &str) -> SparseVec {
        let ids = self.term_ids(text);
        let length = ids.len() as f32;
        let mut counts: BTreeMap<u32, f32> = BTreeMap::new();
        for id in ids {
            *counts.entry(id).or_default() += 1.0;
        }
        let Bm25Params { k1, b, avg_len } = self.params;
        let norm = k1 * (1.0 - b + b * length / avg_len);
        let (indices, values) = counts
            .into_iter()
            .map(|(id, tf)| (id, tf * (k1 + 1.0) / (tf + norm)))
            .unzip();
        SparseVec { indices, values }
    }

    pub fn embed_query(&self, text: &str) -> SparseVec {
        let mut indices = self.term_ids(text);
        indices.sort_unstable();
        indices.dedup();
        let values = vec![1.0; indices.len()];
        SparseVec { indices, values }
    }
}

impl Default for Bm25 {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stemming_makes_loops_and_loop_share_a_token() {
        let bm25 = Bm25::new();
        let doc = bm25.embed_document("while loops repeat");
        let query = bm25.embed_query("loop");
        assert!(query.indices.iter().all(|i| doc.indices.contains(i)));
        assert!(!query.indices.is_empty());
    }

    #[test]
    fn french_plurals_meet_their_singular_and_keywords_are_terms() {
        let bm25 = Bm25::new();
        let doc = bm25.embed_document("Les boucles permettent de répéter des instructions");
        let query = bm25.embed_query("comment écrire une boucle ?");
        assert!(
            query.indices.iter().any(|i| doc.indices.contains(i)),
            "boucle / boucles"
        );
        assert_eq!(bm25.embed_query("while").indices.len(), 1);
        assert_eq!(bm25.embed_query("the of a").indices.len(), 0);
    }

    #[test]
    fn a_document_weight_grows_with_its_term_count_and_shrinks_with_length() {
        let bm25 = Bm25::new();
        let id = bm25.embed_query("loop").indices[0];
        let weight = |text: &str| {
            let v = bm25.embed_document(text);
            let at = v.indices.iter().position(|i| *i == id).unwrap();
            v.values[at]
        };
        assert!(weight("loop loop list") > weight("loop list list"));
        assert!(weight("loop list") > weight(&format!("loop {}", "list ".repeat(300))));
    }
}
