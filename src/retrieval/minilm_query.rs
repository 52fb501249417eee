//! A lean forward pass of all-MiniLM-L6-v2 for one short input (a learner's question): the same
//! weights and arithmetic as candle's BERT, without its per-operation tensors. Q, K and V are
//! one fused matrix product, buffers are sized once per call, and every product goes straight to
//! `gemm` (the kernel candle itself uses). Documents, which come in padded batches, still go
//! through candle (`minilm.rs`); a test checks both give the same vectors.
use std::collections::HashMap;

use candle_core::Tensor;

use super::embed::EmbedError;

const HIDDEN: usize = 384;
const HEADS: usize = 12;
const HEAD_DIM: usize = HIDDEN / HEADS;
const FFN: usize = 1536;
const EPS: f32 = 1e-12;

/// Weights are kept transposed, (in × out) row-major, so each product streams them in the
/// order the kernel reads them.
struct Layer {
    /// Q, K and V weights side by side: HIDDEN rows of 3 * HIDDEN.
    qkv_w: Vec<f32>,
    qkv_b: Vec<f32>,
    out_w: Vec<f32>,
    out_b: Vec<f32>,
    ln1_g: Vec<f32>,
    ln1_b: Vec<f32>,
    up_w: Vec<f32>,
    up_b: Vec<f32>,
    down_w: Vec<f32>,
    down_b: Vec<f32>,
    ln2_g: Vec<f32>,
    ln2_b: Vec<f32>,
}

pub struct QueryEncoder {
    word: Vec<f32>,
    position: Vec<f32>,
    token_type: Vec<f32>,
    ln_g: Vec<f32>,
    ln_b: Vec<f32>,
    layers: Vec<Layer>,
    max_positions: usize,
    parallelism: gemm::Parallelism,
}

impl QueryEncoder {
    /// Builds the encoder from the tensors of `model.safetensors` (names with or without a
    /// `bert.` prefix).
    pub fn from_tensors(tensors: &HashMap<String, Tensor>) -> Result<Self, EmbedError> {
        let get = |name: &str| -> Result<Vec<f32>, EmbedError> {
            let tensor = tensors
                .get(name)
                .or_else(|| tensors.get(&format!("bert.{name}")))
                .ok_or_else(|| EmbedError::Load(format!("model.safetensors has no {name}")))?;
            tensor
                .to_dtype(candle_core::DType::F32)
                .and_then(|t| t.flatten_all())
                .and_then(|t| t.to_vec1::<f32>())
                .map_err(|e| EmbedError::Load(format!("{name}: {e}")))
        };
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
        let position = get("embeddings.position_embeddings.weight")?;
        let mut layers = Vec::new();
        for i in 0..6 {
            let p = |s: &str| format!("encoder.layer.{i}.{s}");
            let mut qkv_w = sized(&p("attention.self.query.weight"), HIDDEN * HIDDEN)?;
            qkv_w.extend(sized(&p("attention.self.key.weight"), HIDDEN * HIDDEN)?);
            qkv_w.extend(sized(&p("attention.self.value.weight"), HIDDEN * HIDDEN)?);
            let mut qkv_b = sized(&p("attention.self.query.bias"), HIDDEN)?;
            qkv_b.extend(sized(&p("attention.self.key.bias"), HIDDEN)?);
            qkv_b.extend(sized(&p("attention.self.value.bias"), HIDDEN)?);
            layers.push(Layer {
                qkv_w: transpose(&qkv_w, 3 * HIDDEN, HIDDEN),
                qkv_b,
                out_w: transpose(
                    &sized(&p("attention.output.dense.weight"), HIDDEN * HIDDEN)?,
                    HIDDEN,
                    HIDDEN,
                ),
                out_b: sized(&p("attention.output.dense.bias"), HIDDEN)?,
                ln1_g: sized(&p("attention.output.LayerNorm.weight"), HIDDEN)?,
                ln1_b: sized(&p("attention.output.LayerNorm.bias"), HIDDEN)?,
                up_w: transpose(
                    &sized(&p("intermediate.dense.weight"), FFN * HIDDEN)?,
                    FFN,
                    HIDDEN,
                ),
                up_b: sized(&p("intermediate.dense.bias"), FFN)?,
                down_w: transpose(
                    &sized(&p("output.dense.weight"), HIDDEN * FFN)?,
                    HIDDEN,
                    FFN,
                ),
                down_b: sized(&p("output.dense.bias"), HIDDEN)?,
                ln2_g: sized(&p("output.LayerNorm.weight"), HIDDEN)?,
                ln2_b: sized(&p("output.LayerNorm.bias"), HIDDEN)?,
            });
        }
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        Ok(Self {
            word: get("embeddings.word_embeddings.weight")?,
            max_positions: position.len() / HIDDEN,
            position,
            token_type: get("embeddings.token_type_embeddings.weight")?,
            ln_g: sized("embeddings.LayerNorm.weight", HIDDEN)?,
            ln_b: sized("embeddings.LayerNorm.bias", HIDDEN)?,
            layers,
            parallelism: if threads > 1 {
                gemm::Parallelism::Rayon(threads)
            } else {
                gemm::Parallelism::None
            },
        })
    }

    /// The mean-pooled, L2-normalised embedding of one tokenised input (no padding).
    pub fn embed(&self, ids: &[u32]) -> Result<Vec<f32>, EmbedError> {
        let n = ids.len();
        if n == 0 || n > self.max_positions {
            return Err(EmbedError::Embed(format!(
                "{n} tokens: outside 1..={}",
                self.max_positions
            )));
        }
        let vocab = self.word.len() / HIDDEN;
        let mut x = vec![0f32; n * HIDDEN];
        for (t, &id) in ids.iter().enumerate() {
            let id = id as usize;
            if id >= vocab {
                return Err(EmbedError::Embed(format!(
                    "token id {id} outside the vocabulary"
                )));
            }
            let row = &mut x[t * HIDDEN..(t + 1) * HIDDEN];
            let w = &self.word[id * HIDDEN..(id + 1) * HIDDEN];
            let p = &self.position[t * HIDDEN..(t + 1) * HIDDEN];
            let ty = &self.token_type[..HIDDEN];
            for j in 0..HIDDEN {
                row[j] = w[j] + p[j] + ty[j];
            }
        }
        layer_norm(&mut x, &self.ln_g, &self.ln_b);

        let mut qkv = vec![0f32; n * 3 * HIDDEN];
        let mut scores = vec![0f32; n * n];
        let mut ctx = vec![0f32; n * HIDDEN];
        let mut attn = vec![0f32; n * HIDDEN];
        let mut up = vec![0f32; n * FFN];
        let mut down = vec![0f32; n * HIDDEN];
        let scale = 1.0 / (HEAD_DIM as f32).sqrt();
        for layer in &self.layers {
            self.linear(
                &x,
                n,
                HIDDEN,
                &layer.qkv_w,
                &layer.qkv_b,
                3 * HIDDEN,
                &mut qkv,
            );
            for h in 0..HEADS {
                let q = h * HEAD_DIM;
                let k = HIDDEN + h * HEAD_DIM;
                let v = 2 * HIDDEN + h * HEAD_DIM;
                // scores = Q_h K_h^T * scale
                matmul(
                    Mat {
                        data: &qkv[q..],
                        rs: 3 * HIDDEN,
                        cs: 1,
                    },
                    Mat {
                        data: &qkv[k..],
                        rs: 1,
                        cs: 3 * HIDDEN,
                    },
                    (n, n, HEAD_DIM),
                    &mut scores,
                    (n, 1),
                    scale,
                    gemm::Parallelism::None,
                );
                for row in scores.chunks_mut(n) {
                    softmax(row);
                }
                // ctx_h = P V_h, written into the head's columns of ctx.
                matmul(
                    Mat {
                        data: &scores,
                        rs: n,
                        cs: 1,
                    },
                    Mat {
                        data: &qkv[v..],
                        rs: 3 * HIDDEN,
                        cs: 1,
                    },
                    (n, HEAD_DIM, n),
                    &mut ctx[h * HEAD_DIM..],
                    (HIDDEN, 1),
                    1.0,
                    gemm::Parallelism::None,
                );
            }
            self.linear(
                &ctx,
                n,
                HIDDEN,
                &layer.out_w,
                &layer.out_b,
                HIDDEN,
                &mut attn,
            );
            for (a, r) in attn.iter_mut().zip(&x) {
                *a += r;
            }
            layer_norm(&mut attn, &layer.ln1_g, &layer.ln1_b);
            self.linear(&attn, n, HIDDEN, &layer.up_w, &layer.up_b, FFN, &mut up);
            up.iter_mut().for_each(|v| *v = gelu(*v));
            self.linear(&up, n, FFN, &layer.down_w, &layer.down_b, HIDDEN, &mut down);
            for (d, r) in down.iter_mut().zip(&attn) {
                *d += r;
            }
            layer_norm(&mut down, &layer.ln2_g, &layer.ln2_b);
            std::mem::swap(&mut x, &mut down);
        }
        let mut pooled = vec![0f32; HIDDEN];
        for row in x.chunks(HIDDEN) {
            for (p, v) in pooled.iter_mut().zip(row) {
                *p += v;
            }
        }
        pooled.iter_mut().for_each(|p| *p /= n as f32);
        super::minilm::normalise(&mut pooled);
        Ok(pooled)
    }

    /// out (n × out_dim) = x (n × in_dim) · Wᵀ + b, with Wᵀ stored (in_dim × out_dim).
    #[allow(clippy::too_many_arguments)]
    fn linear(
        &self,
        x: &[f32],
        n: usize,
        in_dim: usize,
        w: &[f32],
        b: &[f32],
        out_dim: usize,
        out: &mut [f32],
    ) {
        matmul(
            Mat {
                data: x,
                rs: in_dim,
                cs: 1,
            },
            Mat {
                data: w,
                rs: out_dim,
                cs: 1,
            },
            (n, out_dim, in_dim),
            out,
            (out_dim, 1),
            1.0,
            self.parallelism,
        );
        for row in out[..n * out_dim].chunks_mut(out_dim) {
            for (o, bias) in row.iter_mut().zip(b) {
                *o += bias;
            }
        }
    }
}

/// `w` (rows × cols, row-major) transposed to (cols × rows, row-major).
fn transpose(w: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0f32; w.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = w[r * cols + c];
        }
    }
    t
}

/// A strided view of a row-major buffer: element (r, c) is `data[r * rs + c * cs]`.
struct Mat<'a> {
    data: &'a [f32],
    rs: usize,
    cs: usize,
}

impl Mat<'_> {
    /// The last element (r, c) of an `rows × cols` view must lie inside `data`.
    fn fits(&self, rows: usize, cols: usize) -> bool {
        rows == 0 || cols == 0 || (rows - 1) * self.rs + (cols - 1) * self.cs < self.data.len()
    }
}

/// dst (m × n, strides `dst_strides` = (row, col)) = scale · lhs (m × k) · rhs (k × n).
fn matmul(
    lhs: Mat<'_>,
    rhs: Mat<'_>,
    (m, n, k): (usize, usize, usize),
    dst: &mut [f32],
    (dst_rs, dst_cs): (usize, usize),
    scale: f32,
    parallelism: gemm::Parallelism,
) {
    let dst_view = Mat {
        data: dst,
        rs: dst_rs,
        cs: dst_cs,
    };
    assert!(
        lhs.fits(m, k) && rhs.fits(k, n) && dst_view.fits(m, n),
        "matmul out of bounds"
    );
    // SAFETY: the assertion above bounds every element gemm reads or writes within the
    // slices, which outlive the call; `dst` is borrowed mutably, so it aliases neither input.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            dst_cs as isize,
            dst_rs as isize,
            false,
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
            0.0,
            scale,
            false,
            false,
            false,
            parallelism,
        );
    }
}

fn layer_norm(x: &mut [f32], gamma: &[f32], beta: &[f32]) {
    for row in x.chunks_mut(HIDDEN) {
        let mean = row.iter().sum::<f32>() / HIDDEN as f32;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / HIDDEN as f32;
        let inv = 1.0 / (var + EPS).sqrt();
        for ((v, g), b) in row.iter_mut().zip(gamma).zip(beta) {
            *v = (*v - mean) * inv * g + b;
        }
    }
}

fn softmax(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in row.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    row.iter_mut().for_each(|v| *v /= sum);
}

/// BERT's erf GELU, with erf from Abramowitz & Stegun 7.1.26 (absolute error under 1.5e-7):
/// a quarter of the cost of `libm::erff`, which took 3.5 ms of a question's 20.
fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

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
    (1.0 - poly * (-z * z).exp()).copysign(x)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_fast_erf_matches_libm() {
        let worst = (-4000..=4000)
            .map(|i| i as f32 / 1000.0)
            .map(|x| (super::erf(x) - libm::erff(x)).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 5e-7, "worst error {worst}");
    }
}
