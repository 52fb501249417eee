//! The model's files: the three a model directory must hold, `config.json` read and checked
//! against the encoder, `model.safetensors` read into the encoder (no tensor library: the
//! format is a JSON header and raw little-endian values), and `tokenizer.json` set to cut
//! inputs at [`MAX_TOKENS`], with the batching of inputs by length.
use std::path::Path;

use serde::Deserialize;
use tokenizers::{Encoding, Tokenizer, TruncationParams};

use super::encoder::{Depth, Encoder};
use super::math::f16_to_f32;
use super::packed::Kernel;
use crate::retrieval::embed::EmbedError;

/// Files the model directory must hold (`scripts/fetch-model.sh` puts them there).
pub const MODEL_FILES: [&str; 3] = ["config.json", "model.safetensors", "tokenizer.json"];
/// Inputs longer than this many tokens (special tokens included) are cut, as
/// sentence-transformers does for this model.
pub const MAX_TOKENS: usize = 256;
/// Documents are run through the model this many at a time.
pub const BATCH_SIZE: usize = 32;

/// `EmbedError::ModelMissing` naming every file of [`MODEL_FILES`] that `dir` lacks.
pub(crate) fn check_present(dir: &Path) -> Result<(), EmbedError> {
    let missing: Vec<&str> = MODEL_FILES
        .iter()
        .copied()
        .filter(|f| !dir.join(f).is_file())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(EmbedError::ModelMissing {
        dir: dir.display().to_string(),
        missing: missing.join(", "),
        fetch: "scripts/fetch-model.sh",
    })
}

/// A load error that names the directory and what was being done.
pub(crate) fn load_error(dir: &Path, what: &str, e: &dyn std::fmt::Display) -> EmbedError {
    EmbedError::Load(format!("{}: {what}: {e}", dir.display()))
}

/// The fields of a BERT `config.json` the encoder depends on.
#[derive(Debug, Deserialize)]
struct BertConfig {
    hidden_size: usize,
    num_attention_heads: usize,
    num_hidden_layers: usize,
    intermediate_size: usize,
    hidden_act: String,
    layer_norm_eps: f64,
    #[serde(default = "absolute")]
    position_embedding_type: String,
}

fn absolute() -> String {
    "absolute".into()
}

/// `dir/config.json`, checked to describe a BERT `HIDDEN` wide with heads `HEAD_DIM` wide, erf
/// GELU and absolute positions (what the encoder computes).
fn read_depth<const HIDDEN: usize, const HEAD_DIM: usize>(dir: &Path) -> Result<Depth, EmbedError> {
    let load = |what: &str, e: &dyn std::fmt::Display| load_error(dir, what, e);
    let text = std::fs::read_to_string(dir.join("config.json"))
        .map_err(|e| load("reading config.json", &e))?;
    let config: BertConfig =
        serde_json::from_str(&text).map_err(|e| load("parsing config.json", &e))?;
    let expect = |what: &str, found: String, expected: String| {
        if found == expected {
            Ok(())
        } else {
            Err(load(
                "config.json",
                &format!("{what} is {found}, expected {expected}"),
            ))
        }
    };
    expect(
        "hidden_size",
        config.hidden_size.to_string(),
        HIDDEN.to_string(),
    )?;
    expect(
        "num_attention_heads",
        config.num_attention_heads.to_string(),
        (HIDDEN / HEAD_DIM).to_string(),
    )?;
    // BERT's "gelu" is the erf one; "gelu_new" and others are approximations we do not run.
    expect("hidden_act", config.hidden_act, "gelu".into())?;
    expect(
        "position_embedding_type",
        config.position_embedding_type,
        "absolute".into(),
    )?;
    Ok(Depth {
        layers: config.num_hidden_layers,
        ffn: config.intermediate_size,
        layer_norm_eps: config.layer_norm_eps as f32,
    })
}

/// The encoder of the model in `dir` (`config.json` and `model.safetensors`), its products on
/// `kernel`.
pub(crate) fn load_encoder<const HIDDEN: usize, const HEAD_DIM: usize>(
    dir: &Path,
    kernel: Kernel,
) -> Result<Encoder<HIDDEN, HEAD_DIM>, EmbedError> {
    let depth = read_depth::<HIDDEN, HEAD_DIM>(dir)?;
    // Read into memory rather than mapped (no `unsafe`; the weights are copied out of the
    // file either way, about 90 MB).
    let bytes = std::fs::read(dir.join("model.safetensors"))
        .map_err(|e| load_error(dir, "reading model.safetensors", &e))?;
    let tensors = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| load_error(dir, "parsing model.safetensors", &e))?;
    Encoder::from_weights(
        depth,
        |name| {
            let tensor = tensors
                .tensor(name)
                .or_else(|_| tensors.tensor(&format!("bert.{name}")))
                .map_err(|_| EmbedError::Load(format!("model.safetensors has no {name}")))?;
            to_f32(tensor.dtype(), tensor.data())
                .map_err(|e| EmbedError::Load(format!("{name}: {e}")))
        },
        kernel,
    )
}

/// A tensor's little-endian values as f32 (from f32, f16 or bf16, as candle's `to_dtype`).
fn to_f32(dtype: safetensors::Dtype, data: &[u8]) -> Result<Vec<f32>, String> {
    use safetensors::Dtype;
    let halves = || {
        data.chunks_exact(2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    match dtype {
        Dtype::F32 => Ok(data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()),
        Dtype::BF16 => Ok(halves()
            .map(|h| f32::from_bits(u32::from(h) << 16))
            .collect()),
        Dtype::F16 => Ok(halves().map(f16_to_f32).collect()),
        other => Err(format!(
            "values of type {other:?}, expected F32, F16 or BF16"
        )),
    }
}

/// `tokenizer.json`, cutting inputs at [`MAX_TOKENS`] and padding nothing.
pub(crate) struct Tokens {
    tokenizer: Tokenizer,
}

impl Tokens {
    /// Reads `dir/tokenizer.json`.
    pub(crate) fn load(dir: &Path) -> Result<Self, EmbedError> {
        let load = |what: &str, e: &dyn std::fmt::Display| load_error(dir, what, e);
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
        Ok(Self { tokenizer })
    }

    /// The token ids of one input, special tokens included.
    pub(crate) fn encode(&self, text: &str) -> Result<Vec<u32>, EmbedError> {
        let encoding = self.tokenizer.encode_fast(text, true).map_err(tokenizing)?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Tokenises `texts` and runs `embed` over them [`by_length`]; the vectors come back in
    /// the order of `texts`.
    pub(crate) fn by_batches<S: AsRef<str>>(
        &self,
        texts: &[S],
        embed: impl Fn(&[&[u32]]) -> Result<Vec<Vec<f32>>, EmbedError>,
    ) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let encodings: Vec<Encoding> = if texts.len() == 1 {
            vec![
                self.tokenizer
                    .encode_fast(texts[0].as_ref(), true)
                    .map_err(tokenizing)?,
            ]
        } else {
            let inputs: Vec<&str> = texts.iter().map(|t| t.as_ref()).collect();
            self.tokenizer
                .encode_batch_fast(inputs, true)
                .map_err(tokenizing)?
        };
        let ids: Vec<&[u32]> = encodings.iter().map(Encoding::get_ids).collect();
        by_length(&ids, embed)
    }
}

/// Runs `embed` over batches of up to [`BATCH_SIZE`] inputs of similar length (so that the
/// encoder's batches are even); the vectors come back in the order of `inputs`.
pub(crate) fn by_length(
    inputs: &[&[u32]],
    embed: impl Fn(&[&[u32]]) -> Result<Vec<Vec<f32>>, EmbedError>,
) -> Result<Vec<Vec<f32>>, EmbedError> {
    let mut order: Vec<usize> = (0..inputs.len()).collect();
    order.sort_by_key(|&i| inputs[i].len());
    let mut out: Vec<Vec<f32>> = vec![Vec::new(); inputs.len()];
    for batch in order.chunks(BATCH_SIZE) {
        let group: Vec<&[u32]> = batch.iter().map(|&i| inputs[i]).collect();
        for (&i, v) in batch.iter().zip(embed(&group)?) {
            out[i] = v;
        }
    }
    Ok(out)
}

fn tokenizing(e: tokenizers::Error) -> EmbedError {
    EmbedError::Embed(format!("tokenizing: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_and_bfloat_values_widen_exactly() {
        let f16 = [
            (0x3c00u16, 1.0f32),
            (0xc000, -2.0),
            (0x3800, 0.5),
            (0x7bff, 65504.0),
            (0x0001, f32::powi(2.0, -24)),
            (0x8000, -0.0),
            (0x7c00, f32::INFINITY),
        ];
        for (bits, want) in f16 {
            assert_eq!(f16_to_f32(bits), want, "{bits:#06x}");
        }
        assert!(f16_to_f32(0x7e00).is_nan());
        let bf16: Vec<u8> = [0x3f80u16, 0xc040]
            .iter()
            .flat_map(|h| h.to_le_bytes())
            .collect();
        assert_eq!(
            to_f32(safetensors::Dtype::BF16, &bf16).unwrap(),
            vec![1.0, -3.0]
        );
        let f32s: Vec<u8> = [1.5f32, -0.25]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(
            to_f32(safetensors::Dtype::F32, &f32s).unwrap(),
            vec![1.5, -0.25]
        );
        assert!(to_f32(safetensors::Dtype::I64, &[0; 8]).is_err());
    }

    #[test]
    fn a_config_for_another_width_or_activation_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let write = |hidden: usize, act: &str| {
            let config = serde_json::json!({
                "hidden_size": hidden, "num_attention_heads": 4, "num_hidden_layers": 2,
                "intermediate_size": 128, "hidden_act": act, "layer_norm_eps": 1e-12,
            });
            std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
        };
        write(64, "gelu");
        let depth = read_depth::<64, 16>(dir.path()).unwrap();
        assert_eq!((depth.layers, depth.ffn), (2, 128));
        write(32, "gelu");
        let e = read_depth::<64, 16>(dir.path()).unwrap_err().to_string();
        assert!(e.contains("hidden_size is 32, expected 64"), "{e}");
        write(64, "gelu_new");
        let e = read_depth::<64, 16>(dir.path()).unwrap_err().to_string();
        assert!(e.contains("hidden_act is gelu_new, expected gelu"), "{e}");
    }
}
