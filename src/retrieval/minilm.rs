//! The in-process dense embedder: all-MiniLM-L6-v2 (a 6-layer BERT, 384 dimensions) on the CPU;
//! mean pooling over real tokens, L2-normalised, inputs cut at 256 tokens. Questions and
//! documents go through the lean encoder (`minilm_lean`); candle's BERT, loaded from the same
//! weights, is the reference it is tested and benchmarked against.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use async_trait::async_trait;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::{Encoding, Tokenizer, TruncationParams};

use super::embed::{DenseEmbedder, EmbedError};
use super::minilm_lean::LeanEncoder;
use super::packed_linear::Kernel;

/// Files the model directory must hold (`scripts/fetch-model.sh` puts them there).
pub const MODEL_FILES: [&str; 3] = ["config.json", "model.safetensors", "tokenizer.json"];
/// Inputs longer than this many tokens (special tokens included) are cut, as
/// sentence-transformers does for this model.
pub const MAX_TOKENS: usize = 256;
/// Documents are run through the model this many at a time.
pub const BATCH_SIZE: usize = 32;
const DIMENSIONS: usize = 384;

/// all-MiniLM-L6-v2 held in memory; cheap to clone (the model is shared).
#[derive(Clone)]
pub struct MiniLm {
    inner: Arc<Inner>,
}

struct Inner {
    /// The forward pass that embeds questions and documents.
    lean: LeanEncoder,
    tokenizer: Tokenizer,
    dir: PathBuf,
    config: Config,
    /// candle's BERT from the same weights, built on first use: only the tests and the
    /// benchmark compare against it, so the service never holds this second copy.
    candle: OnceLock<BertModel>,
}

impl MiniLm {
    /// Loads `config.json`, `model.safetensors` and `tokenizer.json` from `dir`; questions run
    /// on the widest matrix kernel this CPU has.
    pub fn load(dir: &Path) -> Result<MiniLm, EmbedError> {
        Self::load_with_kernel(dir, Kernel::detect())
    }

    /// [`Self::load`] with questions on a given kernel (the benchmark compares them).
    pub fn load_with_kernel(dir: &Path, kernel: Kernel) -> Result<MiniLm, EmbedError> {
        let missing: Vec<&str> = MODEL_FILES
            .iter()
            .copied()
            .filter(|f| !dir.join(f).is_file())
            .collect();
        if !missing.is_empty() {
            return Err(EmbedError::ModelMissing {
                dir: dir.display().to_string(),
                missing: missing.join(", "),
            });
        }
        let load = |what: &str, e: &dyn std::fmt::Display| {
            EmbedError::Load(format!("{}: {what}: {e}", dir.display()))
        };

        let config_text = std::fs::read_to_string(dir.join("config.json"))
            .map_err(|e| load("reading config.json", &e))?;
        let config: Config =
            serde_json::from_str(&config_text).map_err(|e| load("parsing config.json", &e))?;
        if config.hidden_size != DIMENSIONS {
            return Err(load(
                "config.json",
                &format!(
                    "hidden_size is {}, expected {DIMENSIONS}",
                    config.hidden_size
                ),
            ));
        }

        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| load("reading tokenizer.json", &e))?;
        // tokenizer.json ships with truncation at 128 and fixed padding to 128; we cut at 256
        // and pad each batch ourselves to its longest input.
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                ..Default::default()
            }))
            .map_err(|e| load("setting truncation", &e))?;
        tokenizer.with_padding(None);

        let tensors = read_tensors(dir)?;
        let lean = LeanEncoder::from_weights(
            |name| {
                let tensor = tensors
                    .get(name)
                    .or_else(|| tensors.get(&format!("bert.{name}")))
                    .ok_or_else(|| EmbedError::Load(format!("model.safetensors has no {name}")))?;
                tensor
                    .to_dtype(DType::F32)
                    .and_then(|t| t.flatten_all())
                    .and_then(|t| t.to_vec1::<f32>())
                    .map_err(|e| EmbedError::Load(format!("{name}: {e}")))
            },
            kernel,
        )?;

        Ok(MiniLm {
            inner: Arc::new(Inner {
                lean,
                tokenizer,
                dir: dir.to_path_buf(),
                config,
                candle: OnceLock::new(),
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

    /// Embeds `texts` with candle's BERT instead of the lean encoder: the reference the
    /// benchmark and the tests compare against.
    pub fn embed_with_candle_blocking<S: AsRef<str>>(
        &self,
        texts: &[S],
    ) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.inner.embed_with_candle(texts)
    }
}

impl Inner {
    fn embed_one(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
        let encoding = self
            .tokenizer
            .encode_fast(text, true)
            .map_err(|e| EmbedError::Embed(format!("tokenizing: {e}")))?;
        self.lean.embed(encoding.get_ids())
    }

    fn embed<S: AsRef<str>>(&self, texts: &[S]) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.by_batches(texts, |group| {
            let ids: Vec<&[u32]> = group.iter().map(|e| e.get_ids()).collect();
            self.lean.embed_batch(&ids)
        })
    }

    /// candle's BERT over the same texts, in the same batches: the reference the lean encoder
    /// is tested and benchmarked against.
    fn embed_with_candle<S: AsRef<str>>(&self, texts: &[S]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let model = self.candle()?;
        self.by_batches(texts, |group| {
            forward(model, group).map_err(|e| EmbedError::Embed(e.to_string()))
        })
    }

    /// candle's BERT, read from the model directory the first time it is asked for.
    fn candle(&self) -> Result<&BertModel, EmbedError> {
        if let Some(model) = self.candle.get() {
            return Ok(model);
        }
        let vb = VarBuilder::from_tensors(read_tensors(&self.dir)?, DType::F32, &Device::Cpu);
        let model = BertModel::load(vb, &self.config).map_err(|e| {
            EmbedError::Load(format!("{}: building the model: {e}", self.dir.display()))
        })?;
        // Two first callers at once both build it; one of them is kept.
        let _ = self.candle.set(model);
        Ok(self.candle.get().expect("set just above"))
    }

    /// Tokenises `texts` and runs `embed` over batches of up to BATCH_SIZE inputs of similar
    /// length (so that candle pads little, and the lean encoder's batches are even); the
    /// vectors come back in the order of `texts`.
    fn by_batches<S: AsRef<str>>(
        &self,
        texts: &[S],
        embed: impl Fn(&[&Encoding]) -> Result<Vec<Vec<f32>>, EmbedError>,
    ) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let tokenize = |e: tokenizers::Error| EmbedError::Embed(format!("tokenizing: {e}"));
        let encodings: Vec<Encoding> = if texts.len() == 1 {
            vec![
                self.tokenizer
                    .encode_fast(texts[0].as_ref(), true)
                    .map_err(tokenize)?,
            ]
        } else {
            let inputs: Vec<&str> = texts.iter().map(|t| t.as_ref()).collect();
            self.tokenizer
                .encode_batch_fast(inputs, true)
                .map_err(tokenize)?
        };
        let mut order: Vec<usize> = (0..encodings.len()).collect();
        order.sort_by_key(|&i| encodings[i].get_ids().len());

        let mut out: Vec<Vec<f32>> = vec![Vec::new(); encodings.len()];
        for batch in order.chunks(BATCH_SIZE) {
            let group: Vec<&Encoding> = batch.iter().map(|&i| &encodings[i]).collect();
            for (&i, v) in batch.iter().zip(embed(&group)?) {
                out[i] = v;
            }
        }
        Ok(out)
    }
}

/// The tensors of `dir/model.safetensors`, read into memory rather than mapped (no `unsafe`;
/// the weights are copied out of them either way, about 90 MB).
fn read_tensors(dir: &Path) -> Result<HashMap<String, Tensor>, EmbedError> {
    let load = |what: &str, e: &dyn std::fmt::Display| {
        EmbedError::Load(format!("{}: {what}: {e}", dir.display()))
    };
    let weights = std::fs::read(dir.join("model.safetensors"))
        .map_err(|e| load("reading model.safetensors", &e))?;
    candle_core::safetensors::load_buffer(&weights, &Device::Cpu)
        .map_err(|e| load("parsing model.safetensors", &e))
}

/// Runs one padded batch through candle's BERT; mean-pools over the attention mask and
/// normalises.
fn forward(model: &BertModel, batch: &[&Encoding]) -> candle_core::Result<Vec<Vec<f32>>> {
    let rows = batch.len();
    let len = batch
        .iter()
        .map(|e| e.get_ids().len())
        .max()
        .unwrap_or(0)
        .max(1);
    let mut ids = vec![0u32; rows * len];
    let mut mask = vec![0u32; rows * len];
    for (r, enc) in batch.iter().enumerate() {
        let n = enc.get_ids().len();
        ids[r * len..r * len + n].copy_from_slice(enc.get_ids());
        mask[r * len..r * len + n].copy_from_slice(enc.get_attention_mask());
    }
    let ids = Tensor::from_vec(ids, (rows, len), &Device::Cpu)?;
    let mask = Tensor::from_vec(mask, (rows, len), &Device::Cpu)?;
    let token_types = ids.zeros_like()?;

    let hidden = model.forward(&ids, &token_types, Some(&mask))?; // (rows, len, 384)
    let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?; // (rows, len, 1)
    let summed = hidden.broadcast_mul(&mask)?.sum(1)?; // (rows, 384)
    let counts = mask.sum(1)?.clamp(1e-9f32, f32::MAX)?; // (rows, 1)
    let pooled = summed.broadcast_div(&counts)?;

    let mut vectors = pooled.to_vec2::<f32>()?;
    for v in &mut vectors {
        normalise(v);
    }
    Ok(vectors)
}

/// Scales `v` to unit length (left as is when it is all zeros).
pub(crate) fn normalise(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
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
        tokio::task::spawn_blocking(move || inner.embed(&texts))
            .await
            .map_err(|e| EmbedError::Embed(format!("embedding task failed: {e}")))?
    }

    async fn embed_query(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
        let inner = Arc::clone(&self.inner);
        let text = text.to_string();
        tokio::task::spawn_blocking(move || inner.embed_one(&text))
            .await
            .map_err(|e| EmbedError::Embed(format!("embedding task failed: {e}")))?
    }
}

/// The 20-word question the benchmark embeds.
pub const BENCH_QUESTION: &str = "How do I write a for loop in Python that goes over a list and prints each item with its index?";

/// (p50, p99) in milliseconds over `n` synchronous runs of `embed` (after three warm-up runs):
/// what an embedding costs, less the hop to the blocking thread pool.
pub fn latency_ms(n: usize, mut embed: impl FnMut()) -> (f64, f64) {
    for _ in 0..3 {
        embed();
    }
    let n = n.max(1);
    let mut times: Vec<f64> = (0..n)
        .map(|_| {
            let start = Instant::now();
            embed();
            start.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    times.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| times[(((n as f64) * q).ceil() as usize).clamp(1, n) - 1];
    (at(0.50), at(0.99))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The model fetched by `scripts/fetch-model.sh`, or None (tests then skip).
    fn model() -> Option<MiniLm> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/models/all-MiniLM-L6-v2");
        match MiniLm::load(&dir) {
            Ok(m) => Some(m),
            Err(EmbedError::ModelMissing { .. }) => {
                eprintln!(
                    "skipping: no model in {} (run scripts/fetch-model.sh)",
                    dir.display()
                );
                None
            }
            Err(e) => panic!("model present but failed to load: {e}"),
        }
    }

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
        let Some(m) = model() else { return };
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
        let Some(m) = model() else { return };
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
        let Some(m) = model() else { return };
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
        let candle = m.embed_with_candle_blocking(&texts).unwrap();
        for ((text, b), c) in texts.iter().zip(&batched).zip(&candle) {
            let single = m.embed_query(text).await.unwrap();
            for (what, other) in [("one by one", &single), ("candle's padded batch", c)] {
                let diff = other
                    .iter()
                    .zip(b)
                    .map(|(x, y)| (x - y).abs())
                    .fold(0.0f32, f32::max);
                assert!(diff < 1e-4, "{text:?} vs {what}: max difference {diff}");
            }
        }
    }

    #[test]
    fn every_kernel_gives_the_question_the_vector_candle_gives() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/models/all-MiniLM-L6-v2");
        if model().is_none() {
            return;
        }
        let question = "Why does my while loop never stop when I count down to zero?";
        for kernel in Kernel::available() {
            let m = MiniLm::load_with_kernel(&dir, kernel).unwrap();
            let lean = m.embed_query_blocking(question).unwrap();
            let candle = m.embed_with_candle_blocking(&[question]).unwrap().remove(0);
            let diff = lean
                .iter()
                .zip(&candle)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0f32, f32::max);
            assert!(diff < 1e-4, "{kernel:?}: max difference {diff}");
        }
    }

    #[test]
    #[ignore = "benchmark; run with --ignored --nocapture"]
    fn query_latency_is_printed() {
        let Some(m) = model() else { return };
        let (p50, p99) = latency_ms(200, || {
            m.embed_query_blocking(BENCH_QUESTION).expect("embedding");
        });
        println!("minilm query latency over 200 runs: p50 {p50:.2} ms, p99 {p99:.2} ms");
    }
}
