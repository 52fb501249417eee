//! A lean forward pass of all-MiniLM-L6-v2, for a learner's question and for batches of
//! documents: the same weights and arithmetic as candle's BERT, without its per-operation
//! tensors. Every linear layer is a [`PackedLinear`] (weights packed once at load, Q, K and V
//! fused into one); a batch's tokens are stacked with no padding, so each layer runs once over
//! all of them, and only attention runs input by input, head by head, on its own loops. Tests in
//! `minilm.rs` check the vectors against candle's.
use rayon::prelude::*;

use super::embed::EmbedError;
use super::packed_linear::{Kernel, PackedLinear};

const HIDDEN: usize = 384;
const HEADS: usize = 12;
const HEAD_DIM: usize = HIDDEN / HEADS;
const FFN: usize = 1536;
const LAYERS: usize = 6;
const EPS: f32 = 1e-12;

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

pub struct LeanEncoder {
    word: Vec<f32>,
    position: Vec<f32>,
    token_type: Vec<f32>,
    ln_g: Vec<f32>,
    ln_b: Vec<f32>,
    layers: Vec<Layer>,
    max_positions: usize,
    /// The CPU has AVX2 and FMA and the kernel is at least that wide (see `layers_avx2`).
    avx2: bool,
}

impl LeanEncoder {
    /// Builds the encoder from the model's weights: `get` returns the values of one tensor of
    /// `model.safetensors` by its name without the `bert.` prefix, flattened row-major. The
    /// matrix products run on `kernel`, which this CPU must support.
    pub fn from_weights(
        get: impl Fn(&str) -> Result<Vec<f32>, EmbedError>,
        kernel: Kernel,
    ) -> Result<Self, EmbedError> {
        if !kernel.supported() {
            return Err(EmbedError::Load(format!(
                "this CPU cannot run the {} kernel",
                kernel.name()
            )));
        }
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
        for i in 0..LAYERS {
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
                up: linear(&p("intermediate.dense"), HIDDEN, FFN)?,
                down: linear(&p("output.dense"), FFN, HIDDEN)?,
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
        let word = get("embeddings.word_embeddings.weight")?;
        if word.is_empty() || word.len() % HIDDEN != 0 {
            return Err(EmbedError::Load(format!(
                "word embeddings have {} values, not a multiple of {HIDDEN}",
                word.len()
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
            // A supported AVX2 or AVX-512 kernel means the CPU has AVX2 and FMA.
            avx2: matches!(kernel, Kernel::Avx2 | Kernel::Avx512),
        })
    }

    /// The mean-pooled, L2-normalised embedding of one tokenised input (no padding).
    pub fn embed(&self, ids: &[u32]) -> Result<Vec<f32>, EmbedError> {
        Ok(self.embed_batch(&[ids])?.remove(0))
    }

    /// The embeddings of several tokenised inputs, in order. Their tokens are stacked into one
    /// matrix with no padding: every linear layer runs once over all of them, and only
    /// attention (which must not look across inputs) runs input by input.
    pub fn embed_batch(&self, inputs: &[&[u32]]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let vocab = self.word.len() / HIDDEN;
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
                let w = &self.word[id as usize * HIDDEN..][..HIDDEN];
                let p = &self.position[t * HIDDEN..][..HIDDEN];
                for j in 0..HIDDEN {
                    row[j] = w[j] + p[j] + ty[j];
                }
            }
        }
        layer_norm(&mut x, &self.ln_g, &self.ln_b);
        #[cfg(target_arch = "x86_64")]
        if self.avx2 {
            // SAFETY: `avx2` is set only when the CPU has AVX2 and FMA.
            unsafe { self.layers_avx2(&mut x, &lens) };
        } else {
            self.layers(&mut x, &lens);
        }
        #[cfg(not(target_arch = "x86_64"))]
        self.layers(&mut x, &lens);

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
            super::minilm::normalise(&mut pooled);
            out.push(pooled);
            at += n;
        }
        Ok(out)
    }

    /// [`Self::layers`] compiled for AVX2 and FMA, so that attention, layer norm and GELU
    /// (everything between the matrix products, which dispatch on their own) run 8 wide.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn layers_avx2(&self, x: &mut Vec<f32>, lens: &[usize]) {
        self.layers(x, lens)
    }

    /// The six transformer layers over `x`, the stacked tokens of inputs `lens` long, in place.
    #[inline(always)]
    fn layers(&self, x: &mut Vec<f32>, lens: &[usize]) {
        let n: usize = lens.iter().sum();
        let mut qkv = vec![0f32; n * 3 * HIDDEN];
        let mut ctx = vec![0f32; n * HIDDEN];
        let mut attn = vec![0f32; n * HIDDEN];
        let mut up = vec![0f32; n * FFN];
        let mut down = vec![0f32; n * HIDDEN];
        for layer in &self.layers {
            layer.qkv.apply(x, n, &mut qkv);
            attention(&qkv, lens, &mut ctx);
            layer.out.apply(&ctx, n, &mut attn);
            for (a, r) in attn.iter_mut().zip(x.iter()) {
                *a += r;
            }
            layer_norm(&mut attn, &layer.ln1_g, &layer.ln1_b);
            layer.up.apply(&attn, n, &mut up);
            for v in up.iter_mut() {
                *v = gelu(*v);
            }
            layer.down.apply(&up, n, &mut down);
            for (d, r) in down.iter_mut().zip(&attn) {
                *d += r;
            }
            layer_norm(&mut down, &layer.ln2_g, &layer.ln2_b);
            std::mem::swap(x, &mut down);
        }
    }
}

/// Self-attention over `qkv` (rows of Q | K | V) into `ctx` (rows of HIDDEN), each input (`lens`
/// rows in turn) attending to its own tokens only. One question runs on the calling thread (a
/// few dozen tokens: waking another costs more); a batch of documents spreads its inputs over
/// the thread pool.
#[inline(always)]
fn attention(qkv: &[f32], lens: &[usize], ctx: &mut [f32]) {
    if lens.len() == 1 {
        attend(qkv, lens[0], ctx);
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
    parts
        .into_par_iter()
        .for_each(|(n, qkv, ctx)| attend(qkv, n, ctx));
}

/// Attention of one input's `n` tokens to each other, head by head.
#[inline(always)]
fn attend(qkv: &[f32], n: usize, ctx: &mut [f32]) {
    let mut scores = vec![0f32; n];
    let scores = scores.as_mut_slice();
    let scale = 1.0 / (HEAD_DIM as f32).sqrt();
    let head = |row: usize, part: usize, h: usize| head_of(qkv, row, part, h);
    for h in 0..HEADS {
        for i in 0..n {
            let q = head(i, 0, h);
            for (j, s) in scores.iter_mut().enumerate() {
                *s = dot(q, head(j, 1, h)) * scale;
            }
            softmax(scores);
            let mut acc = [0f32; HEAD_DIM];
            for (j, &p) in scores.iter().enumerate() {
                let v = *head(j, 2, h);
                for d in 0..HEAD_DIM {
                    acc[d] += p * v[d];
                }
            }
            ctx[i * HIDDEN + h * HEAD_DIM..][..HEAD_DIM].copy_from_slice(&acc);
        }
    }
}

/// Head `h` of part `part` (0 Q, 1 K, 2 V) of token `row`.
#[inline(always)]
fn head_of(qkv: &[f32], row: usize, part: usize, h: usize) -> &[f32; HEAD_DIM] {
    qkv[row * 3 * HIDDEN + part * HIDDEN + h * HEAD_DIM..][..HEAD_DIM]
        .try_into()
        .expect("a head is HEAD_DIM wide")
}

/// A dot product in eight running lanes, which the compiler keeps in vector registers.
#[inline(always)]
fn dot(a: &[f32; HEAD_DIM], b: &[f32; HEAD_DIM]) -> f32 {
    let mut lanes = [0f32; 8];
    for (a, b) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        for l in 0..8 {
            lanes[l] += a[l] * b[l];
        }
    }
    lanes.iter().sum()
}

/// The sum of a row in eight running lanes (a plain running sum cannot be vectorised).
#[inline(always)]
fn lane_sum(row: &[f32; HIDDEN], f: impl Fn(f32) -> f32) -> f32 {
    let mut lanes = [0f32; 8];
    for chunk in row.chunks_exact(8) {
        for l in 0..8 {
            lanes[l] += f(chunk[l]);
        }
    }
    lanes.iter().sum()
}

#[inline(always)]
fn layer_norm(x: &mut [f32], gamma: &[f32], beta: &[f32]) {
    for row in x.chunks_exact_mut(HIDDEN) {
        let row: &mut [f32; HIDDEN] = row.try_into().expect("rows are HIDDEN wide");
        let mean = lane_sum(row, |v| v) / HIDDEN as f32;
        let var = lane_sum(row, |v| (v - mean) * (v - mean)) / HIDDEN as f32;
        let inv = 1.0 / (var + EPS).sqrt();
        for ((v, g), b) in row.iter_mut().zip(gamma).zip(beta) {
            *v = (*v - mean) * inv * g + b;
        }
    }
}

#[inline(always)]
fn softmax(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in row.iter_mut() {
        *v = exp(*v - max);
        sum += *v;
    }
    row.iter_mut().for_each(|v| *v /= sum);
}

/// BERT's erf GELU, with erf from Abramowitz & Stegun 7.1.26 (absolute error under 1.5e-7):
/// a quarter of the cost of `libm::erff`, which took 3.5 ms of a question's 20.
#[inline(always)]
fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

#[inline(always)]
fn erf(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_6,
        -0.284_496_74,
        1.421_413_8,
        -1.453_152_1,
        1.061_405_4,
    ];
    let z = x.abs();
    let t = 1.0 / (1.0 + P * z);
    let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    (1.0 - poly * exp(-z * z)).copysign(x)
}

/// e^x by Cody–Waite range reduction and Cephes' `expf` polynomial (within a few units in the
/// last place), in plain arithmetic the compiler can vectorise: `f32::exp` is one libm call per
/// value, and softmax and GELU make a quarter of a million of them per question.
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and taking away 1.5 · 2²³ rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let n = (x * LOG2_E + ROUND) - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = ((((1.987_569_2e-4 * r + 1.398_2e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 0.166_666_65)
        * r
        + 0.5;
    let e = p * r * r + r + 1.0;
    e * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_fast_exp_matches_std() {
        let worst = (-87_000..=88_000)
            .map(|i| i as f32 / 1000.0)
            .map(|x| ((super::exp(x) - x.exp()) / x.exp()).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 1e-6, "worst relative error {worst}");
        let tiny = super::exp(-1000.0);
        assert!((0.0..1e-37).contains(&tiny), "e^-1000 gave {tiny}");
    }

    #[test]
    fn the_fast_erf_matches_libm() {
        let worst = (-4000..=4000)
            .map(|i| i as f32 / 1000.0)
            .map(|x| (super::erf(x) - libm::erff(x)).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 5e-7, "worst error {worst}");
    }
}
