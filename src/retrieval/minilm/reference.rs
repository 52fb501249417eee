//! candle's BERT on the same model files: the reference the lean encoder is tested against
//! (and, with the `candle-reference` feature, benchmarked against). Compiled only for the tests
//! and that feature, so the service does not build candle. Inputs are tokenised and batched as
//! the service does ([`files::Tokens`]); each batch is padded to its longest input and masked.
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};

use super::files::{self, Tokens, load_error};
use super::math::normalise;
use crate::retrieval::embed::EmbedError;

/// candle's BERT and the tokenizer of one model directory.
pub struct Reference {
    model: BertModel,
    tokens: Tokens,
}

impl Reference {
    /// Loads the model in `dir` (the files [`MiniLm::load`](super::MiniLm::load) reads).
    pub fn load(dir: &Path) -> Result<Self, EmbedError> {
        files::check_present(dir)?;
        let load = |what: &str, e: &dyn std::fmt::Display| load_error(dir, what, e);
        let text = std::fs::read_to_string(dir.join("config.json"))
            .map_err(|e| load("reading config.json", &e))?;
        let config: Config =
            serde_json::from_str(&text).map_err(|e| load("parsing config.json", &e))?;
        let weights = std::fs::read(dir.join("model.safetensors"))
            .map_err(|e| load("reading model.safetensors", &e))?;
        let tensors = candle_core::safetensors::load_buffer(&weights, &Device::Cpu)
            .map_err(|e| load("parsing model.safetensors", &e))?;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
        let model = BertModel::load(vb, &config).map_err(|e| load("building the model", &e))?;
        Ok(Self {
            model,
            tokens: Tokens::load(dir)?,
        })
    }

    /// Embeds `texts` in the service's tokens and batches (blocking; CPU-heavy).
    pub fn embed_blocking<S: AsRef<str>>(&self, texts: &[S]) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.tokens.by_batches(texts, |ids| self.embed_ids(ids))
    }

    /// Runs one padded batch of token ids through candle's BERT; mean-pools over the attention
    /// mask and normalises.
    pub(crate) fn embed_ids(&self, batch: &[&[u32]]) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.forward(batch)
            .map_err(|e| EmbedError::Embed(e.to_string()))
    }

    fn forward(&self, batch: &[&[u32]]) -> candle_core::Result<Vec<Vec<f32>>> {
        let rows = batch.len();
        let len = batch.iter().map(|ids| ids.len()).max().unwrap_or(0).max(1);
        let mut ids = vec![0u32; rows * len];
        let mut mask = vec![0u32; rows * len];
        for (r, input) in batch.iter().enumerate() {
            let n = input.len();
            ids[r * len..r * len + n].copy_from_slice(input);
            mask[r * len..r * len + n].fill(1);
        }
        let ids = Tensor::from_vec(ids, (rows, len), &Device::Cpu)?;
        let mask = Tensor::from_vec(mask, (rows, len), &Device::Cpu)?;
        let token_types = ids.zeros_like()?;

        let hidden = self.model.forward(&ids, &token_types, Some(&mask))?; // (rows, len, hidden)
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?; // (rows, len, 1)
        let summed = hidden.broadcast_mul(&mask)?.sum(1)?; // (rows, hidden)
        let counts = mask.sum(1)?.clamp(1e-9f32, f32::MAX)?; // (rows, 1)
        let pooled = summed.broadcast_div(&counts)?;

        let mut vectors = pooled.to_vec2::<f32>()?;
        for v in &mut vectors {
            normalise(v);
        }
        Ok(vectors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retrieval::minilm::encoder::{assert_same_embedding, max_difference, tiny};
    use crate::retrieval::minilm::files::MAX_TOKENS;
    use crate::retrieval::minilm::packed::Kernel;

    /// The tiny random model written as a model directory: `config.json`, `model.safetensors`
    /// and a word-level `tokenizer.json` ("w0" … "w44" after [UNK], [CLS] and [SEP]).
    fn write_tiny_model(dir: &Path, seed: u64) {
        let config = serde_json::json!({
            "architectures": ["BertModel"],
            "attention_probs_dropout_prob": 0.1,
            "hidden_act": "gelu",
            "hidden_dropout_prob": 0.1,
            "hidden_size": tiny::HIDDEN,
            "initializer_range": 0.02,
            "intermediate_size": tiny::FFN,
            "layer_norm_eps": tiny::EPS,
            "max_position_embeddings": tiny::POSITIONS,
            "model_type": "bert",
            "num_attention_heads": tiny::HEADS,
            "num_hidden_layers": tiny::LAYERS,
            "pad_token_id": 0,
            "position_embedding_type": "absolute",
            "type_vocab_size": 2,
            "use_cache": true,
            "vocab_size": tiny::VOCAB,
        });
        std::fs::write(dir.join("config.json"), config.to_string()).unwrap();

        let weights = tiny::weights(seed);
        let bytes: Vec<Vec<u8>> = weights
            .values()
            .map(|(_, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
            .collect();
        let views = weights
            .iter()
            .zip(&bytes)
            .map(|((name, (shape, _)), data)| {
                let view = safetensors::tensor::TensorView::new(
                    safetensors::Dtype::F32,
                    shape.clone(),
                    data,
                )
                .unwrap();
                (name.clone(), view)
            });
        let file = safetensors::serialize(views, None).unwrap();
        std::fs::write(dir.join("model.safetensors"), file).unwrap();

        let mut vocab = serde_json::Map::new();
        for (id, token) in ["[UNK]", "[CLS]", "[SEP]"].iter().enumerate() {
            vocab.insert(token.to_string(), id.into());
        }
        for id in 3..tiny::VOCAB {
            vocab.insert(format!("w{}", id - 3), id.into());
        }
        let special = |token: &str, id: u32| serde_json::json!({ "id": token, "ids": [id], "tokens": [token] });
        let tokenizer = serde_json::json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": [],
            "normalizer": null,
            "pre_tokenizer": { "type": "WhitespaceSplit" },
            "post_processor": {
                "type": "TemplateProcessing",
                "single": [
                    { "SpecialToken": { "id": "[CLS]", "type_id": 0 } },
                    { "Sequence": { "id": "A", "type_id": 0 } },
                    { "SpecialToken": { "id": "[SEP]", "type_id": 0 } }
                ],
                "pair": [
                    { "SpecialToken": { "id": "[CLS]", "type_id": 0 } },
                    { "Sequence": { "id": "A", "type_id": 0 } },
                    { "SpecialToken": { "id": "[SEP]", "type_id": 0 } },
                    { "Sequence": { "id": "B", "type_id": 1 } },
                    { "SpecialToken": { "id": "[SEP]", "type_id": 1 } }
                ],
                "special_tokens": { "[CLS]": special("[CLS]", 1), "[SEP]": special("[SEP]", 2) }
            },
            "decoder": null,
            "model": { "type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]" }
        });
        std::fs::write(dir.join("tokenizer.json"), tokenizer.to_string()).unwrap();
    }

    /// Texts of the tiny vocabulary, 1 to 300 words long (the last cut at MAX_TOKENS), with an
    /// unknown word or two.
    fn tiny_texts() -> Vec<String> {
        let mut texts: Vec<String> = (0..12)
            .map(|i| {
                (0..1 + (i * 11) % 37)
                    .map(|t| format!("w{}", (i * 5 + t * 3) % (tiny::VOCAB - 3)))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        texts.push("w1 unknown w2".into());
        texts.push(
            (0..300)
                .map(|t| format!("w{}", t % 40))
                .collect::<Vec<_>>()
                .join(" "),
        );
        texts
    }

    #[test]
    fn the_lean_encoder_equals_candle_on_a_random_model_for_every_kernel() {
        let dir = tempfile::tempdir().unwrap();
        write_tiny_model(dir.path(), 42);
        let reference = Reference::load(dir.path()).unwrap();
        let texts = tiny_texts();
        let tokens = Tokens::load(dir.path()).unwrap();
        assert_eq!(tokens.encode("w0 w1").unwrap(), vec![1, 3, 4, 2]);
        assert_eq!(
            tokens.encode(texts.last().unwrap()).unwrap().len(),
            MAX_TOKENS
        );
        let candle = reference.embed_blocking(&texts).unwrap();
        for kernel in Kernel::available() {
            let encoder =
                files::load_encoder::<{ tiny::HIDDEN }, { tiny::HEAD_DIM }>(dir.path(), kernel)
                    .unwrap();
            let lean = tokens
                .by_batches(&texts, |ids| encoder.embed_batch(ids))
                .unwrap();
            for ((text, l), c) in texts.iter().zip(&lean).zip(&candle) {
                assert_same_embedding(kernel, l, c, &format!("{text:?}"));
            }
            // One by one, unbatched and unpadded, as a question runs.
            for (text, c) in texts.iter().zip(&candle) {
                let alone = encoder.embed(&tokens.encode(text).unwrap()).unwrap();
                assert_same_embedding(kernel, &alone, c, &format!("{text:?} alone"));
            }
        }
    }

    #[test]
    fn candle_pads_and_masks_a_batch_to_the_vectors_of_its_inputs_alone() {
        let dir = tempfile::tempdir().unwrap();
        write_tiny_model(dir.path(), 7);
        let reference = Reference::load(dir.path()).unwrap();
        let inputs = tiny::inputs(5);
        let ids: Vec<&[u32]> = inputs.iter().map(Vec::as_slice).collect();
        let padded = reference.embed_ids(&ids).unwrap();
        for (input, p) in ids.iter().zip(&padded) {
            let alone = reference.embed_ids(&[input]).unwrap().remove(0);
            let diff = max_difference(&alone, p);
            assert!(diff < 1e-5, "{input:?}: max difference {diff}");
        }
    }
}
