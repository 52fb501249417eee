//! The in-process dense embedder: all-MiniLM-L6-v2 (a 6-layer BERT, 384 dimensions) on the CPU;
//! mean pooling over real tokens, L2-normalised, inputs cut at 256 tokens.
//!
//! The files, one job each, importing only downwards (`mod.rs` → `files` → `encoder` →
//! `packed`, `math`):
//! - `files`: the model directory, `config.json`, `model.safetensors`, the tokenizer, batching
//!   by length;
//! - `encoder`: the lean forward pass, for questions and documents alike;
//! - `packed`: the packed linear layers, their kernels, CPU feature detection, and all of the
//!   `unsafe` code;
//! - `math`: exp, erf and GELU, softmax, layer norm, normalisation;
//! - `reference`: candle's BERT on the same files, the reference the encoder is tested (and,
//!   with the `candle-reference` feature, benchmarked) against; not in the service build.
#![deny(unsafe_code)]
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;

use super::embed::{DenseEmbedder, EmbedError};

mod encoder;
mod files;
mod math;
mod packed;
#[cfg(any(test, feature = "candle-reference"))]
mod reference;

pub(crate) use encoder::{Depth, Encoder, Q4_BLOCK_BYTES, Words, add_q4_block};
pub(crate) use files::by_length;

pub use files::{BATCH_SIZE, MAX_TOKENS, MODEL_FILES};
pub(crate) use math::normalise;
pub use packed::Kernel;
#[cfg(any(test, feature = "candle-reference"))]
pub use reference::Reference;

const DIMENSIONS: usize = 384;
/// all-MiniLM-L6-v2's 12 attention heads, each 32 wide.
const HEAD_DIM: usize = 32;

/// all-MiniLM-L6-v2 held in memory; cheap to clone (the model is shared).
#[derive(Clone)]
pub struct MiniLm {
    inner: Arc<Inner>,
}

struct Inner {
    /// The forward pass that embeds questions and documents.
    encoder: encoder::Encoder<DIMENSIONS, HEAD_DIM>,
    tokens: files::Tokens,
    /// How many questions, and how many batches of documents, are embedded at once (see
    /// [`lanes`]).
    query_lanes: tokio::sync::Semaphore,
    document_lanes: tokio::sync::Semaphore,
}

/// The encodes of each kind that run at once: one per CPU. The model is pure CPU work on the
/// blocking pool, which has no bound of its own: under load, every question embedded at once
/// would share the cores with each other and with the tasks that store, stream and answer, all
/// of them slowed alike (1,000 learners, hybrid, 2 cores: server-side added p50 19 / p99 345 ms
/// unbounded; one lane per CPU 12.2 / 85.8 ms; half a lane per CPU let the queue grow whenever
/// the machine slowed, p99 61 to 639 ms). Questions and documents have lanes of their own, so
/// that a learner's files being indexed never holds a question up.
pub(crate) fn lanes() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Runs `work`, CPU-heavy, on the blocking pool once `lane` lets it in (see [`lanes`]).
pub(crate) async fn in_lane<T: Send + 'static>(
    lane: &tokio::sync::Semaphore,
    work: impl FnOnce() -> Result<T, EmbedError> + Send + 'static,
) -> Result<T, EmbedError> {
    let _lane = lane.acquire().await;
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| EmbedError::Embed(format!("embedding task failed: {e}")))?
}

impl MiniLm {
    /// Loads `config.json`, `model.safetensors` and `tokenizer.json` from `dir`; questions run
    /// on the widest matrix kernel this CPU has.
    pub fn load(dir: &Path) -> Result<MiniLm, EmbedError> {
        Self::load_with_kernel(dir, Kernel::detect())
    }

    /// [`Self::load`] with questions on a given kernel (the benchmark compares them).
    pub fn load_with_kernel(dir: &Path, kernel: Kernel) -> Result<MiniLm, EmbedError> {
        files::check_present(dir)?;
        let encoder = files::load_encoder(dir, kernel)?;
        let tokens = files::Tokens::load(dir)?;
        Ok(MiniLm {
            inner: Arc::new(Inner {
                encoder,
                tokens,
                query_lanes: tokio::sync::Semaphore::new(lanes()),
                document_lanes: tokio::sync::Semaphore::new(lanes()),
            }),
        })
    }

    /// Embeds `texts` on the calling thread (blocking; CPU-heavy). Vectors come back in the
    /// order of `texts`. Async callers should use the [`DenseEmbedder`] methods instead.
    pub fn embed_blocking<S: AsRef<str>>(&self, texts: &[S]) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.inner.embed(texts)
    }

    /// Embeds one question on the calling thread.
    pub fn embed_query_blocking(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
        self.inner.embed_one(text)
    }

    /// The kernel the model's matrix products run on.
    pub fn kernel(&self) -> Kernel {
        self.inner.encoder.kernel()
    }
}

impl Inner {
    fn embed_one(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
        self.encoder.embed(&self.tokens.encode(text)?)
    }

    fn embed<S: AsRef<str>>(&self, texts: &[S]) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.tokens
            .by_batches(texts, |ids| self.encoder.embed_batch(ids))
    }
}

#[async_trait]
impl DenseEmbedder for MiniLm {
    fn dimensions(&self) -> usize {
        DIMENSIONS
    }

    fn id(&self) -> String {
        "minilm:all-MiniLM-L6-v2".to_string()
    }

    async fn embed_documents(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let inner = Arc::clone(&self.inner);
        in_lane(&self.inner.document_lanes, move || inner.embed(&texts)).await
    }

    async fn embed_query(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
        let inner = Arc::clone(&self.inner);
        let text = text.to_string();
        in_lane(&self.inner.query_lanes, move || inner.embed_one(&text)).await
    }
}

/// The model fetched by `scripts/fetch-model.sh`, for tests: they skip, saying so, without it.
#[cfg(test)]
pub(crate) mod fetched {
    use std::path::{Path, PathBuf};

    use super::MiniLm;

    pub(crate) fn dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("data/models/all-MiniLM-L6-v2")
    }

    /// The model, or None (the test then skips).
    pub(crate) fn model() -> Option<MiniLm> {
        crate::retrieval::embed::fetched_or_skip(MiniLm::load(&dir()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retrieval::minilm::encoder::{assert_same_embedding, max_difference};

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn a_missing_model_directory_names_the_missing_files() {
        let dir = std::env::temp_dir().join("companion-no-such-model-dir");
        match MiniLm::load(&dir) {
            Err(EmbedError::ModelMissing { missing, .. }) => {
                assert!(missing.contains("model.safetensors"), "{missing}");
                assert!(missing.contains("tokenizer.json"), "{missing}");
            }
            Err(e) => panic!("expected ModelMissing, got {e}"),
            Ok(_) => panic!("expected ModelMissing, got a model"),
        }
    }

    #[tokio::test]
    async fn similar_sentences_score_higher_than_unrelated_ones() {
        let Some(m) = fetched::model() else { return };
        let q = m
            .embed_query("How do I loop over a list in Python?")
            .await
            .unwrap();
        let docs = m
            .embed_documents(vec![
                "Use a for loop to iterate through the items of a Python list.".to_string(),
                "The recipe calls for two eggs and a cup of flour.".to_string(),
            ])
            .await
            .unwrap();
        let (similar, unrelated) = (cosine(&q, &docs[0]), cosine(&q, &docs[1]));
        assert!(
            similar > unrelated + 0.2,
            "similar {similar}, unrelated {unrelated}"
        );
    }

    #[tokio::test]
    async fn vectors_are_unit_length_and_384_long() {
        let Some(m) = fetched::model() else { return };
        let texts = vec![
            "hello world".to_string(),
            String::new(),
            "word ".repeat(1000), // longer than MAX_TOKENS: truncated, not an error
        ];
        for v in m.embed_documents(texts).await.unwrap() {
            assert_eq!(v.len(), m.dimensions());
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
        }
        let q = m.embed_query("hello world").await.unwrap();
        eprintln!("hello world -> {:?}", &q[..5]);
    }

    #[tokio::test]
    async fn a_batch_gives_the_same_vectors_as_one_by_one_and_as_candle() {
        let Some(m) = fetched::model() else { return };
        let reference = Reference::load(&fetched::dir()).unwrap();
        let mut texts: Vec<String> = [
            "Variables hold values.",
            "A function is a named block of code that you can call with arguments and that may return a value.",
            "Lists are ordered; sets are not.",
            "What does the keyword return do?",
            "Recursion is when a function calls itself, and it needs a base case so that it stops.",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // Longer than MAX_TOKENS: cut, the same way on every path.
        texts.push("A while loop repeats its body as long as its condition holds. ".repeat(30));
        let batched = m.embed_documents(texts.clone()).await.unwrap();
        let candle = reference.embed_blocking(&texts).unwrap();
        for ((text, b), c) in texts.iter().zip(&batched).zip(&candle) {
            let single = m.embed_query(text).await.unwrap();
            let diff = max_difference(&single, b);
            assert!(diff < 1e-4, "{text:?} one by one: max difference {diff}");
            assert_same_embedding(m.kernel(), b, c, &format!("{text:?} vs candle"));
        }
    }

    #[test]
    fn every_kernel_gives_the_question_the_vector_candle_gives() {
        if fetched::model().is_none() {
            return;
        }
        let dir = fetched::dir();
        let reference = Reference::load(&dir).unwrap();
        let question = "Why does my while loop never stop when I count down to zero?";
        let candle = reference.embed_blocking(&[question]).unwrap().remove(0);
        for kernel in Kernel::available() {
            let m = MiniLm::load_with_kernel(&dir, kernel).unwrap();
            let lean = m.embed_query_blocking(question).unwrap();
            assert_same_embedding(kernel, &lean, &candle, question);
        }
    }

    #[test]
    fn the_files_import_only_downwards() {
        let siblings = ["files", "encoder", "packed", "math", "reference"];
        let files: [(&str, &str, &[&str]); 5] = [
            (
                "files",
                include_str!("files.rs"),
                &["encoder", "packed", "math"],
            ),
            ("encoder", include_str!("encoder.rs"), &["packed", "math"]),
            ("packed", include_str!("packed.rs"), &[]),
            ("math", include_str!("math.rs"), &[]),
            (
                "reference",
                include_str!("reference.rs"),
                &["files", "encoder", "packed", "math"],
            ),
        ];
        for (file, text, allowed) in files {
            for sibling in siblings.iter().filter(|s| **s != file) {
                let imports = [format!("super::{sibling}"), format!("minilm::{sibling}")]
                    .iter()
                    .any(|path| text.contains(path.as_str()));
                assert!(
                    !imports || allowed.contains(sibling),
                    "{file}.rs imports {sibling}, which it must not"
                );
            }
        }
    }
}
