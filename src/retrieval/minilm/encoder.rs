//! A lean forward pass of a BERT encoder (all-MiniLM-L6-v2 in the service), for a learner's
//! question and for batches of documents: the same weights and arithmetic as candle's BERT,
//! without its per-operation tensors. Every linear layer is a [`PackedLinear`] (weights packed
//! once at load, Q, K and V fused into one); a batch's tokens are stacked with no padding, so
//! each layer runs once over all of them, and only attention runs input by input, head by head
//! (its two products per head packed on the fly, on the exact kernel of the layers' width).
//! The hidden width and the head width are compile-time constants; depth, feed-forward width
//! and vocabulary come from the weights.
//! `reference.rs` checks the vectors against candle's.
use rayon::prelude::*;

use super::math::{f16_to_f32, gelu, layer_norm, normalise, softmax};
use super::packed::{Kernel, PackedLinear, VectorUnit, Vectorised};
use crate::retrieval::embed::EmbedError;

/// Inputs shorter than this many tokens in all attend on the calling thread.
const SEQUENTIAL_ATTENTION_TOKENS: usize = 256;
/// One input at least this long shares its heads out between the pool's threads (a question
/// with pasted code; a plain question is a few dozen tokens).
const PARALLEL_HEADS_TOKENS: usize = 128;

/// What the encoder takes from `config.json` besides its two compile-time widths.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Depth {
    pub layers: usize,
    /// The feed-forward layer's width (`intermediate_size`).
    pub ffn: usize,
    pub layer_norm_eps: f32,
}

struct Layer {
    /// Q, K and V as one layer: HIDDEN → 3 · HIDDEN.
    qkv: PackedLinear,
    out: PackedLinear,
    ln1_g: Vec<f32>,
    ln1_b: Vec<f32>,
    up: PackedLinear,
    down: PackedLinear,
    ln2_g: Vec<f32>,
    ln2_b: Vec<f32>,
}

/// The word embeddings: one row of the model's width per token id.
pub(crate) enum Words {
    /// Rows of f32, row-major.
    Dense(Vec<f32>),
    /// Rows quantised in GGML's Q4_0 blocks (per 32 values: an f16 scale, then 16 bytes of
    /// 4-bit values, byte `j` holding value `j` in its low half and `j + 16` in its high
    /// half, each less 8): how a large multilingual vocabulary stays about 55 MB instead of
    /// 380. A row is widened when a token is looked up.
    Q4 { blocks: Vec<u8>, row_bytes: usize },
}

/// Bytes of one Q4_0 block of 32 values.
pub(crate) const Q4_BLOCK_BYTES: usize = 18;

impl Words {
    /// Rows of `width` values quantised in Q4_0 blocks, checked to be whole.
    pub(crate) fn q4(blocks: Vec<u8>, width: usize) -> Result<Self, EmbedError> {
        let row_bytes = width / 32 * Q4_BLOCK_BYTES;
        if !width.is_multiple_of(32) || blocks.is_empty() || !blocks.len().is_multiple_of(row_bytes)
        {
            return Err(EmbedError::Load(format!(
                "word embeddings of {} bytes are not whole Q4_0 rows of {width} values",
                blocks.len()
            )));
        }
        Ok(Self::Q4 { blocks, row_bytes })
    }

    fn vocab(&self, width: usize) -> usize {
        match self {
            Self::Dense(rows) => rows.len() / width,
            Self::Q4 { blocks, row_bytes } => blocks.len() / row_bytes,
        }
    }

    /// Adds row `id` to `out`.
    fn add_row(&self, id: usize, out: &mut [f32]) {
        match self {
            Self::Dense(rows) => {
                let row = &rows[id * out.len()..][..out.len()];
                out.iter_mut().zip(row).for_each(|(o, w)| *o += w);
            }
            Self::Q4 { blocks, row_bytes } => {
                let row = &blocks[id * row_bytes..][..*row_bytes];
                for (block, out) in row
                    .chunks_exact(Q4_BLOCK_BYTES)
                    .zip(out.chunks_exact_mut(32))
                {
                    add_q4_block(block, out);
                }
            }
        }
    }
}

/// Adds one Q4_0 block's 32 values to `out`.
pub(crate) fn add_q4_block(block: &[u8], out: &mut [f32]) {
    let scale = f16_to_f32(u16::from_le_bytes([block[0], block[1]]));
    for (j, &byte) in block[2..].iter().enumerate() {
        out[j] += (f32::from(byte & 0x0f) - 8.0) * scale;
        out[j + 16] += (f32::from(byte >> 4) - 8.0) * scale;
    }
}

/// The encoder of a BERT `HIDDEN` wide with attention heads `HEAD_DIM` wide: mean-pooled,
/// L2-normalised embeddings of tokenised inputs.
pub(crate) struct Encoder<const HIDDEN: usize, const HEAD_DIM: usize> {
    word: Words,
    position: Vec<f32>,
    token_type: Vec<f32>,
    ln_g: Vec<f32>,
    ln_b: Vec<f32>,
    layers: Vec<Layer>,
    max_positions: usize,
    ffn: usize,
    eps: f32,
    /// What attention, layer norm and GELU are compiled for, detected for the kernel.
    unit: VectorUnit,
    /// What the matrix products run on.
    kernel: Kernel,
}

impl<const HIDDEN: usize, const HEAD_DIM: usize> Encoder<HIDDEN, HEAD_DIM> {
    const HEADS: usize = {
        assert!(
            HEAD_DIM > 0 && HIDDEN.is_multiple_of(HEAD_DIM),
            "heads split the hidden width"
        );
        HIDDEN / HEAD_DIM
    };

    /// Builds the encoder from the model's weights: `get` returns the values of one tensor of
    /// `model.safetensors` by its name without the `bert.` prefix, flattened row-major. The
    /// matrix products run on `kernel`, which this CPU must support.
    pub(crate) fn from_weights(
        depth: Depth,
        get: impl Fn(&str) -> Result<Vec<f32>, EmbedError>,
        kernel: Kernel,
    ) -> Result<Self, EmbedError> {
        let word = get("embeddings.word_embeddings.weight")?;
        if word.is_empty() || word.len() % HIDDEN != 0 {
            return Err(EmbedError::Load(format!(
                "word embeddings have {} values, not a multiple of {HIDDEN}",
                word.len()
            )));
        }
        Self::from_weights_and_words(depth, get, Words::Dense(word), kernel)
    }

    /// [`Self::from_weights`] with the word embeddings given apart (`get` is not asked for
    /// them), as a quantised table may be.
    pub(crate) fn from_weights_and_words(
        depth: Depth,
        get: impl Fn(&str) -> Result<Vec<f32>, EmbedError>,
        word: Words,
        kernel: Kernel,
    ) -> Result<Self, EmbedError> {
        if !kernel.supported() {
            return Err(EmbedError::Load(format!(
                "this CPU cannot run the {} kernel",
                kernel.name()
            )));
        }
        let Depth {
            layers: n_layers,
            ffn,
            layer_norm_eps,
        } = depth;
        let sized = |name: &str, len: usize| -> Result<Vec<f32>, EmbedError> {
            let v = get(name)?;
            if v.len() != len {
                return Err(EmbedError::Load(format!(
                    "{name} has {} values, expected {len}",
                    v.len()
                )));
            }
            Ok(v)
        };
        let linear = |name: &str, in_dim: usize, out_dim: usize| {
            Ok::<_, EmbedError>(PackedLinear::new(
                &sized(&format!("{name}.weight"), in_dim * out_dim)?,
                &sized(&format!("{name}.bias"), out_dim)?,
                in_dim,
                out_dim,
                kernel,
            ))
        };
        let position = get("embeddings.position_embeddings.weight")?;
        if position.is_empty() || position.len() % HIDDEN != 0 {
            return Err(EmbedError::Load(format!(
                "position embeddings have {} values, not a multiple of {HIDDEN}",
                position.len()
            )));
        }
        let mut layers = Vec::new();
        for i in 0..n_layers {
            let p = |s: &str| format!("encoder.layer.{i}.{s}");
            let mut qkv_w = Vec::with_capacity(3 * HIDDEN * HIDDEN);
            let mut qkv_b = Vec::with_capacity(3 * HIDDEN);
            for part in ["query", "key", "value"] {
                qkv_w.extend(sized(
                    &p(&format!("attention.self.{part}.weight")),
                    HIDDEN * HIDDEN,
                )?);
                qkv_b.extend(sized(&p(&format!("attention.self.{part}.bias")), HIDDEN)?);
            }
            layers.push(Layer {
                qkv: PackedLinear::new(&qkv_w, &qkv_b, HIDDEN, 3 * HIDDEN, kernel),
                out: linear(&p("attention.output.dense"), HIDDEN, HIDDEN)?,
                ln1_g: sized(&p("attention.output.LayerNorm.weight"), HIDDEN)?,
                ln1_b: sized(&p("attention.output.LayerNorm.bias"), HIDDEN)?,
                up: linear(&p("intermediate.dense"), HIDDEN, ffn)?,
                down: linear(&p("output.dense"), ffn, HIDDEN)?,
                ln2_g: sized(&p("output.LayerNorm.weight"), HIDDEN)?,
                ln2_b: sized(&p("output.LayerNorm.bias"), HIDDEN)?,
            });
        }
        let token_type = get("embeddings.token_type_embeddings.weight")?;
        if token_type.len() < HIDDEN {
            return Err(EmbedError::Load(format!(
                "token type embeddings have {} values, fewer than {HIDDEN}",
                token_type.len()
            )));
        }
        Ok(Self {
            word,
            max_positions: position.len() / HIDDEN,
            position,
            token_type,
            ln_g: sized("embeddings.LayerNorm.weight", HIDDEN)?,
            ln_b: sized("embeddings.LayerNorm.bias", HIDDEN)?,
            layers,
            ffn,
            eps: layer_norm_eps,
            unit: VectorUnit::for_kernel(kernel),
            kernel,
        })
    }

    /// The kernel the matrix products run on.
    pub(crate) fn kernel(&self) -> Kernel {
        self.kernel
    }

    /// The mean-pooled, L2-normalised embedding of one tokenised input (no padding).
    pub(crate) fn embed(&self, ids: &[u32]) -> Result<Vec<f32>, EmbedError> {
        Ok(self.embed_batch(&[ids])?.remove(0))
    }

    /// The embeddings of several tokenised inputs, in order. Their tokens are stacked into one
    /// matrix with no padding: every linear layer runs once over all of them, and only
    /// attention (which must not look across inputs) runs input by input.
    pub(crate) fn embed_batch(&self, inputs: &[&[u32]]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let vocab = self.word.vocab(HIDDEN);
        let mut lens = Vec::with_capacity(inputs.len());
        for ids in inputs {
            let n = ids.len();
            if n == 0 || n > self.max_positions {
                return Err(EmbedError::Embed(format!(
                    "{n} tokens: outside 1..={}",
                    self.max_positions
                )));
            }
            if let Some(id) = ids.iter().find(|&&id| id as usize >= vocab) {
                return Err(EmbedError::Embed(format!(
                    "token id {id} outside the vocabulary"
                )));
            }
            lens.push(n);
        }
        let total: usize = lens.iter().sum();
        let mut x = vec![0f32; total * HIDDEN];
        let ty = &self.token_type[..HIDDEN];
        let mut rows = x.chunks_exact_mut(HIDDEN);
        for ids in inputs {
            for (t, &id) in ids.iter().enumerate() {
                let row = rows.next().expect("one row per token");
                let p = &self.position[t * HIDDEN..][..HIDDEN];
                for j in 0..HIDDEN {
                    row[j] = p[j] + ty[j];
                }
                self.word.add_row(id as usize, row);
            }
        }
        layer_norm::<HIDDEN>(&mut x, &self.ln_g, &self.ln_b, self.eps);
        self.unit.run(&mut Layers {
            encoder: self,
            x: &mut x,
            lens: &lens,
        });

        let mut out = Vec::with_capacity(lens.len());
        let mut at = 0;
        for &n in &lens {
            let mut pooled = vec![0f32; HIDDEN];
            for row in x[at * HIDDEN..(at + n) * HIDDEN].chunks_exact(HIDDEN) {
                for (p, v) in pooled.iter_mut().zip(row) {
                    *p += v;
                }
            }
            pooled.iter_mut().for_each(|p| *p /= n as f32);
            normalise(&mut pooled);
            out.push(pooled);
            at += n;
        }
        Ok(out)
    }

    /// The transformer layers over `x`, the stacked tokens of inputs `lens` long, in place.
    #[inline(always)]
    fn layers(&self, x: &mut Vec<f32>, lens: &[usize]) {
        let n: usize = lens.iter().sum();
        let mut qkv = vec![0f32; n * 3 * HIDDEN];
        let mut ctx = vec![0f32; n * HIDDEN];
        let mut attn = vec![0f32; n * HIDDEN];
        let mut up = vec![0f32; n * self.ffn];
        let mut down = vec![0f32; n * HIDDEN];
        for layer in &self.layers {
            layer.qkv.apply(x, n, &mut qkv);
            Self::attention(self.unit, self.kernel.exact(), &qkv, lens, &mut ctx);
            layer.out.apply(&ctx, n, &mut attn);
            for (a, r) in attn.iter_mut().zip(x.iter()) {
                *a += r;
            }
            layer_norm::<HIDDEN>(&mut attn, &layer.ln1_g, &layer.ln1_b, self.eps);
            layer.up.apply(&attn, n, &mut up);
            for v in up.iter_mut() {
                *v = gelu(*v);
            }
            layer.down.apply(&up, n, &mut down);
            for (d, r) in down.iter_mut().zip(&attn) {
                *d += r;
            }
            layer_norm::<HIDDEN>(&mut down, &layer.ln2_g, &layer.ln2_b, self.eps);
            std::mem::swap(x, &mut down);
        }
    }

    /// Self-attention over `qkv` (rows of Q | K | V) into `ctx` (rows of HIDDEN), each input
    /// (`lens` rows in turn) attending to its own tokens only. One short question runs on the
    /// calling thread (a few dozen tokens: waking another costs more); one long input (pasted
    /// code, up to the model's 256 tokens) shares its heads out between the pool's threads; a
    /// batch of documents spreads its inputs over them.
    #[inline(always)]
    fn attention(unit: VectorUnit, kernel: Kernel, qkv: &[f32], lens: &[usize], ctx: &mut [f32]) {
        if let [n] = *lens {
            if n >= PARALLEL_HEADS_TOKENS {
                let heads: Vec<Vec<f32>> = (0..Self::HEADS)
                    .into_par_iter()
                    .map(|h| {
                        // A pool thread runs baseline code: compile the head for the unit again.
                        let mut work = Head::<HIDDEN, HEAD_DIM> {
                            qkv,
                            n,
                            h,
                            kernel,
                            out: Vec::new(),
                        };
                        unit.run(&mut work);
                        work.out
                    })
                    .collect();
                for (h, out) in heads.iter().enumerate() {
                    Self::place_head(out, h, ctx);
                }
            } else {
                Self::attend(qkv, n, kernel, ctx);
            }
            return;
        }
        let mut parts = Vec::with_capacity(lens.len());
        let (mut qkv, mut ctx) = (qkv, ctx);
        for &n in lens {
            let (q_here, q_rest) = qkv.split_at(n * 3 * HIDDEN);
            let (c_here, c_rest) = std::mem::take(&mut ctx).split_at_mut(n * HIDDEN);
            parts.push((n, q_here, c_here));
            qkv = q_rest;
            ctx = c_rest;
        }
        let attend = |(n, qkv, ctx): (usize, &[f32], &mut [f32])| Self::attend(qkv, n, kernel, ctx);
        // A few short inputs (a message's sentences) stay on the calling thread, like their
        // linear layers (see `packed::PARALLEL_MIN_MACS`).
        if lens.iter().sum::<usize>() < SEQUENTIAL_ATTENTION_TOKENS {
            parts.into_iter().for_each(attend);
        } else {
            parts.into_par_iter().for_each(attend);
        }
    }

    /// Attention of one input's `n` tokens to each other, head by head.
    #[inline(always)]
    fn attend(qkv: &[f32], n: usize, kernel: Kernel, ctx: &mut [f32]) {
        for h in 0..Self::HEADS {
            Self::place_head(&Self::attend_head(qkv, n, h, kernel), h, ctx);
        }
    }

    /// Copies head `h`'s context rows (`n × HEAD_DIM`) into its columns of `ctx`.
    #[inline(always)]
    fn place_head(head: &[f32], h: usize, ctx: &mut [f32]) {
        for (row, ctx) in head
            .chunks_exact(HEAD_DIM)
            .zip(ctx.chunks_exact_mut(HIDDEN))
        {
            ctx[h * HEAD_DIM..][..HEAD_DIM].copy_from_slice(row);
        }
    }

    /// Head `h`'s context rows (`n × HEAD_DIM`): each token's softmax-weighted sum of the values,
    /// weighted by its query against every key. Both products run on the packed kernels, as
    /// the linear layers do: the keys packed as a layer with a column per token (scores =
    /// queries · keysᵀ), then the values transposed, a column per dimension (context = scores
    /// · values). Loops the compiler was left to vectorise stayed scalar in the service's build
    /// (256 tokens: 55 ms of attention on one thread).
    #[inline(always)]
    fn attend_head(qkv: &[f32], n: usize, h: usize, kernel: Kernel) -> Vec<f32> {
        let scale = 1.0 / (HEAD_DIM as f32).sqrt();
        let mut queries = vec![0f32; n * HEAD_DIM];
        let mut keys = vec![0f32; n * HEAD_DIM];
        let mut values = vec![0f32; HEAD_DIM * n];
        for j in 0..n {
            let (q, k, v) = (
                Self::head_of(qkv, j, 0, h),
                Self::head_of(qkv, j, 1, h),
                Self::head_of(qkv, j, 2, h),
            );
            for d in 0..HEAD_DIM {
                queries[j * HEAD_DIM + d] = q[d] * scale;
                values[d * n + j] = v[d];
            }
            keys[j * HEAD_DIM..][..HEAD_DIM].copy_from_slice(k);
        }
        let mut scores = vec![0f32; n * n];
        PackedLinear::new(&keys, &vec![0.0; n], HEAD_DIM, n, kernel).apply(
            &queries,
            n,
            &mut scores,
        );
        for row in scores.chunks_exact_mut(n) {
            softmax(row);
        }
        let mut out = vec![0f32; n * HEAD_DIM];
        PackedLinear::new(&values, &[0.0; HEAD_DIM], n, HEAD_DIM, kernel)
            .apply(&scores, n, &mut out);
        out
    }

    /// Head `h` of part `part` (0 Q, 1 K, 2 V) of token `row`.
    #[inline(always)]
    fn head_of(qkv: &[f32], row: usize, part: usize, h: usize) -> &[f32; HEAD_DIM] {
        qkv[row * 3 * HIDDEN + part * HIDDEN + h * HEAD_DIM..][..HEAD_DIM]
            .try_into()
            .expect("a head is HEAD_DIM wide")
    }
}

/// One call of the layers, handed to the vector unit so that they are compiled for it.
struct Layers<'a, const HIDDEN: usize, const HEAD_DIM: usize> {
    encoder: &'a Encoder<HIDDEN, HEAD_DIM>,
    x: &'a mut Vec<f32>,
    lens: &'a [usize],
}

impl<const HIDDEN: usize, const HEAD_DIM: usize> Vectorised for Layers<'_, HIDDEN, HEAD_DIM> {
    #[inline(always)]
    fn run(&mut self) {
        self.encoder.layers(self.x, self.lens)
    }
}

/// One head of one long input's attention, run on a pool thread through the vector unit.
struct Head<'a, const HIDDEN: usize, const HEAD_DIM: usize> {
    qkv: &'a [f32],
    n: usize,
    h: usize,
    kernel: Kernel,
    out: Vec<f32>,
}

impl<const HIDDEN: usize, const HEAD_DIM: usize> Vectorised for Head<'_, HIDDEN, HEAD_DIM> {
    #[inline(always)]
    fn run(&mut self) {
        self.out = Encoder::<HIDDEN, HEAD_DIM>::attend_head(self.qkv, self.n, self.h, self.kernel);
    }
}

/// Checks that `got`, an embedding made on `kernel`, is the exact one `want` (candle's, or an
/// f32 kernel's): within 1e-4 in every component for the f32 kernels, which differ only in the
/// order they sum; for the BF16 kernel, whose operands carry 8 bits of mantissa, a cosine of at
/// least [`BF16_MIN_COSINE`].
#[cfg(test)]
pub(crate) fn assert_same_embedding(kernel: Kernel, got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    if kernel.rounds_to_bf16() {
        let dot: f32 = got.iter().zip(want).map(|(a, b)| a * b).sum();
        let norms = got.iter().map(|a| a * a).sum::<f32>().sqrt()
            * want.iter().map(|b| b * b).sum::<f32>().sqrt();
        let cosine = dot / norms;
        assert!(
            cosine >= BF16_MIN_COSINE,
            "{what} on {kernel:?}: cosine {cosine} with the f32 embedding"
        );
    } else {
        let diff = max_difference(got, want);
        assert!(diff < 1e-4, "{what} on {kernel:?}: max difference {diff}");
    }
}

/// The largest difference between two vectors' components.
#[cfg(test)]
pub(crate) fn max_difference(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max)
}

/// The least cosine a BF16 embedding keeps with the exact one.
#[cfg(test)]
pub(crate) const BF16_MIN_COSINE: f32 = 0.9999;

/// A tiny BERT with seeded random weights, for tests that need no download: 2 layers, 64 wide,
/// 4 heads of 16, a vocabulary of 48 and 300 positions.
#[cfg(test)]
pub(crate) mod tiny {
    use std::collections::BTreeMap;

    use super::{Depth, Encoder};
    use crate::retrieval::embed::EmbedError;
    use crate::retrieval::minilm::packed::Kernel;

    pub(crate) const HIDDEN: usize = 64;
    pub(crate) const HEAD_DIM: usize = 16;
    pub(crate) const HEADS: usize = HIDDEN / HEAD_DIM;
    pub(crate) const LAYERS: usize = 2;
    pub(crate) const FFN: usize = 128;
    pub(crate) const VOCAB: usize = 48;
    pub(crate) const POSITIONS: usize = 300;
    pub(crate) const EPS: f64 = 1e-12;
    pub(crate) const DEPTH: Depth = Depth {
        layers: LAYERS,
        ffn: FFN,
        layer_norm_eps: EPS as f32,
    };

    /// Every tensor of the model by name (as in all-MiniLM-L6-v2's safetensors file), with its
    /// shape and row-major values. Linear layers are scaled by 1/√in so activations stay near
    /// one, as in a trained model; layer-norm gains sit around one.
    pub(crate) fn weights(seed: u64) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
        let mut state = seed ^ 0x9e37_79b9_7f4a_7c15;
        let mut uniform = move |len: usize, centre: f32, spread: f32| -> Vec<f32> {
            (0..len)
                .map(|_| {
                    state ^= state >> 12;
                    state ^= state << 25;
                    state ^= state >> 27;
                    let unit = (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40) as f32
                        / (1u64 << 24) as f32;
                    centre + (unit * 2.0 - 1.0) * spread
                })
                .collect()
        };
        let mut out = BTreeMap::new();
        let mut put = |name: String, shape: Vec<usize>, values: Vec<f32>| {
            out.insert(name, (shape, values));
        };
        put(
            "embeddings.word_embeddings.weight".into(),
            vec![VOCAB, HIDDEN],
            uniform(VOCAB * HIDDEN, 0.0, 1.0),
        );
        put(
            "embeddings.position_embeddings.weight".into(),
            vec![POSITIONS, HIDDEN],
            uniform(POSITIONS * HIDDEN, 0.0, 0.5),
        );
        put(
            "embeddings.token_type_embeddings.weight".into(),
            vec![2, HIDDEN],
            uniform(2 * HIDDEN, 0.0, 0.5),
        );
        put(
            "embeddings.LayerNorm.weight".into(),
            vec![HIDDEN],
            uniform(HIDDEN, 1.0, 0.2),
        );
        put(
            "embeddings.LayerNorm.bias".into(),
            vec![HIDDEN],
            uniform(HIDDEN, 0.0, 0.1),
        );
        for i in 0..LAYERS {
            let p = |s: &str| format!("encoder.layer.{i}.{s}");
            let linears = [
                ("attention.self.query", HIDDEN, HIDDEN),
                ("attention.self.key", HIDDEN, HIDDEN),
                ("attention.self.value", HIDDEN, HIDDEN),
                ("attention.output.dense", HIDDEN, HIDDEN),
                ("intermediate.dense", HIDDEN, FFN),
                ("output.dense", FFN, HIDDEN),
            ];
            for (name, in_dim, out_dim) in linears {
                let scale = 1.0 / (in_dim as f32).sqrt();
                put(
                    p(&format!("{name}.weight")),
                    vec![out_dim, in_dim],
                    uniform(out_dim * in_dim, 0.0, 1.7 * scale),
                );
                put(
                    p(&format!("{name}.bias")),
                    vec![out_dim],
                    uniform(out_dim, 0.0, 0.1),
                );
            }
            for norm in ["attention.output.LayerNorm", "output.LayerNorm"] {
                put(
                    p(&format!("{norm}.weight")),
                    vec![HIDDEN],
                    uniform(HIDDEN, 1.0, 0.2),
                );
                put(
                    p(&format!("{norm}.bias")),
                    vec![HIDDEN],
                    uniform(HIDDEN, 0.0, 0.1),
                );
            }
        }
        out
    }

    /// The tiny encoder on `kernel`, from [`weights`] in memory.
    pub(crate) fn encoder(seed: u64, kernel: Kernel) -> Encoder<HIDDEN, HEAD_DIM> {
        let weights = weights(seed);
        Encoder::from_weights(
            DEPTH,
            |name| {
                weights
                    .get(name)
                    .map(|(_, v)| v.clone())
                    .ok_or_else(|| EmbedError::Load(format!("no {name}")))
            },
            kernel,
        )
        .expect("the tiny model's weights fit it")
    }

    /// Token ids of `n` made-up inputs, 1 to 40 tokens long (id 1 first and 2 last, like
    /// [CLS] and [SEP]).
    pub(crate) fn inputs(n: usize) -> Vec<Vec<u32>> {
        (0..n)
            .map(|i| {
                let len = 1 + (i * 13) % 40;
                (0..len)
                    .map(|t| match t {
                        0 => 1,
                        t if t + 1 == len && len > 1 => 2,
                        t => 3 + ((i * 7 + t * 5) % (VOCAB - 3)) as u32,
                    })
                    .collect()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_gives_each_input_the_vector_it_gets_alone_on_every_kernel() {
        let inputs = tiny::inputs(9);
        let ids: Vec<&[u32]> = inputs.iter().map(Vec::as_slice).collect();
        let exact = Kernel::available()
            .into_iter()
            .find(|k| !k.rounds_to_bf16())
            .expect("the portable kernel is exact");
        let widest = tiny::encoder(1, exact).embed_batch(&ids).unwrap();
        for kernel in Kernel::available() {
            let encoder = tiny::encoder(1, kernel);
            let batch = encoder.embed_batch(&ids).unwrap();
            assert_eq!(batch.len(), ids.len());
            for ((input, b), w) in ids.iter().zip(&batch).zip(&widest) {
                assert_eq!(b.len(), tiny::HIDDEN);
                let norm = b.iter().map(|x| x * x).sum::<f32>().sqrt();
                assert!((norm - 1.0).abs() < 1e-4, "{kernel:?}: norm {norm}");
                let alone = encoder.embed(input).unwrap();
                let diff = max_difference(&alone, b);
                assert!(diff < 1e-5, "{kernel:?} {input:?}: batch vs alone {diff}");
                assert_same_embedding(kernel, b, w, &format!("{input:?} vs the widest f32 kernel"));
            }
        }
    }

    #[test]
    fn inputs_that_are_empty_too_long_or_outside_the_vocabulary_are_refused() {
        let encoder = tiny::encoder(2, Kernel::detect());
        let too_long = vec![3u32; tiny::POSITIONS + 1];
        let unknown = [1u32, tiny::VOCAB as u32, 2];
        for (what, ids) in [
            ("empty", &[][..]),
            ("too long", &too_long[..]),
            ("unknown id", &unknown[..]),
        ] {
            match encoder.embed(ids) {
                Err(EmbedError::Embed(message)) => eprintln!("{what}: {message}"),
                other => panic!("{what}: expected an embedding error, got {other:?}"),
            }
        }
        assert!(encoder.embed(&vec![3u32; tiny::POSITIONS]).is_ok());
    }

    #[test]
    fn weights_of_the_wrong_size_are_named() {
        let weights = tiny::weights(3);
        let result = Encoder::<{ tiny::HIDDEN }, { tiny::HEAD_DIM }>::from_weights(
            tiny::DEPTH,
            |name| {
                let (_, v) = &weights[name];
                Ok(if name == "encoder.layer.1.output.dense.bias" {
                    v[1..].to_vec()
                } else {
                    v.clone()
                })
            },
            Kernel::detect(),
        );
        match result {
            Err(EmbedError::Load(message)) => {
                assert!(
                    message.contains("encoder.layer.1.output.dense.bias"),
                    "{message}"
                )
            }
            Err(e) => panic!("expected a load error, got {e}"),
            Ok(_) => panic!("expected a load error, got an encoder"),
        }
    }
}
