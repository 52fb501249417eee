//! The arithmetic between the encoder's matrix products, written so the compiler vectorises
//! it: a fast `exp`, erf and BERT's GELU, softmax, layer norm, sums in eight
//! running lanes, and L2 normalisation. Everything is `#[inline(always)]`, so it is compiled
//! again for whatever vector unit the layers run on.

/// Running lanes of the sums below: eight f32, one AVX2 register (two SSE ones).
const LANES: usize = 8;

/// Scales `v` to unit length (left as is when it is all zeros).
pub(crate) fn normalise(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

/// The sum of `f` over a row in eight running lanes (a plain running sum cannot be vectorised).
#[inline(always)]
fn lane_sum<const H: usize>(row: &[f32; H], f: impl Fn(f32) -> f32) -> f32 {
    const { assert!(H.is_multiple_of(LANES), "rows are whole lanes long") };
    let mut lanes = [0f32; LANES];
    for chunk in row.chunks_exact(LANES) {
        for l in 0..LANES {
            lanes[l] += f(chunk[l]);
        }
    }
    lanes.iter().sum()
}

/// Normalises each row of `H` values of `x` to mean 0 and variance 1, then scales by `gamma`
/// and shifts by `beta`.
#[inline(always)]
pub(super) fn layer_norm<const H: usize>(x: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    for row in x.chunks_exact_mut(H) {
        let row: &mut [f32; H] = row.try_into().expect("rows are H wide");
        let mean = lane_sum(row, |v| v) / H as f32;
        let var = lane_sum(row, |v| (v - mean) * (v - mean)) / H as f32;
        let inv = 1.0 / (var + eps).sqrt();
        for ((v, g), b) in row.iter_mut().zip(gamma).zip(beta) {
            *v = (*v - mean) * inv * g + b;
        }
    }
}

/// Softmax of `row`, in place. The maximum and the sum run in eight lanes, and the
/// exponentials in a loop of their own: a running sum beside them kept the whole loop scalar
/// (attention's softmax took half of a 256-token question's time).
#[inline(always)]
pub(super) fn softmax(row: &mut [f32]) {
    let max = lane_fold(row, f32::NEG_INFINITY, f32::max);
    for v in row.iter_mut() {
        *v = exp(*v - max);
    }
    let sum = lane_fold(row, 0.0, |a, b| a + b);
    row.iter_mut().for_each(|v| *v /= sum);
}

/// `op` folded over a row of any length in eight running lanes, then over the lanes and the
/// row's last few values.
#[inline(always)]
fn lane_fold(row: &[f32], init: f32, op: impl Fn(f32, f32) -> f32) -> f32 {
    let (whole, rest) = row.split_at(row.len() / LANES * LANES);
    let mut lanes = [init; LANES];
    for chunk in whole.chunks_exact(LANES) {
        for l in 0..LANES {
            lanes[l] = op(lanes[l], chunk[l]);
        }
    }
    lanes.into_iter().chain(rest.iter().copied()).fold(init, op)
}

/// BERT's erf GELU, with erf from Abramowitz & Stegun 7.1.26 (absolute error under 1.5e-7):
/// a quarter of the cost of `libm::erff`, which took 3.5 ms of a question's 20.
#[inline(always)]
pub(super) fn gelu(x: f32) -> f32 {
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
    // 2ⁿ from n's bits: n + 127 is a whole number in 1..=254, and adding 2²³ puts it in the
    // mantissa's low bits, which the shift moves into the exponent (the rest shifts out). A
    // float-to-integer conversion here kept GELU's loop from vectorising.
    const BIAS: f32 = 127.0 + 8_388_608.0;
    e * f32::from_bits((n + BIAS).to_bits() << 23)
}

/// An IEEE half-precision value widened to f32 (exactly: every f16 is an f32).
pub(crate) fn f16_to_f32(h: u16) -> f32 {
    let negative = h >> 15 == 1;
    let exponent = u32::from((h >> 10) & 0x1f);
    let mantissa = u32::from(h & 0x3ff);
    let magnitude = match exponent {
        // Zero and subnormals: mantissa · 2⁻²⁴.
        0 => mantissa as f32 * f32::powi(2.0, -24),
        // Infinity and NaN.
        0x1f => f32::from_bits(0x7f80_0000 | (mantissa << 13)),
        e => f32::from_bits(((e + 127 - 15) << 23) | (mantissa << 13)),
    };
    if negative { -magnitude } else { magnitude }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in [-scale, scale).
    fn values(len: usize, scale: f32) -> Vec<f32> {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        (0..len)
            .map(|_| {
                state ^= state >> 12;
                state ^= state << 25;
                state ^= state >> 27;
                let unit =
                    (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40) as f32 / (1u64 << 24) as f32;
                (unit * 2.0 - 1.0) * scale
            })
            .collect()
    }

    #[test]
    fn the_fast_exp_matches_std() {
        let worst = (-87_000..=88_000)
            .map(|i| i as f32 / 1000.0)
            .map(|x| ((exp(x) - x.exp()) / x.exp()).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 1e-6, "worst relative error {worst}");
        let tiny = exp(-1000.0);
        assert!((0.0..1e-37).contains(&tiny), "e^-1000 gave {tiny}");
    }

    #[test]
    fn the_fast_erf_matches_libm() {
        let worst = (-4000..=4000)
            .map(|i| i as f32 / 1000.0)
            .map(|x| (erf(x) - libm::erff(x)).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 5e-7, "worst error {worst}");
    }

    #[test]
    fn gelu_is_the_erf_gelu() {
        for i in -800..=800 {
            let x = i as f32 / 100.0;
            let want = 0.5 * x as f64 * (1.0 + libm::erf(x as f64 / std::f64::consts::SQRT_2));
            let got = gelu(x) as f64;
            assert!(
                (got - want).abs() < 1e-6 * (1.0 + x.abs() as f64),
                "gelu({x}) = {got}, want {want}"
            );
        }
    }

    #[test]
    fn softmax_sums_to_one_even_for_large_scores_and_matches_the_exact_one() {
        let mut row = vec![1.0f32, 3.0, 2.0, 1000.0, -1000.0];
        softmax(&mut row);
        let sum: f32 = row.iter().sum();
        assert!((sum - 1.0).abs() < 1e-6, "sum {sum}");
        assert!(row[3] > 0.999, "{row:?}");
        assert!(row.iter().all(|p| p.is_finite() && *p >= 0.0), "{row:?}");
        let mut small = vec![0.5f32, -0.25, 1.0];
        softmax(&mut small);
        let denom: f64 = [0.5f64, -0.25, 1.0].iter().map(|v| v.exp()).sum();
        for (got, x) in small.iter().zip([0.5f64, -0.25, 1.0]) {
            assert!((*got as f64 - x.exp() / denom).abs() < 1e-6);
        }
    }

    #[test]
    fn layer_norm_gives_each_row_mean_zero_and_unit_variance_before_gamma_and_beta() {
        const H: usize = 16;
        let mut x = values(3 * H, 5.0);
        let ones = [1.0f32; H];
        let zeros = [0.0f32; H];
        layer_norm::<H>(&mut x, &ones, &zeros, 1e-12);
        for row in x.chunks_exact(H) {
            let mean = row.iter().sum::<f32>() / H as f32;
            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / H as f32;
            assert!(
                mean.abs() < 1e-5 && (var - 1.0).abs() < 1e-4,
                "mean {mean}, var {var}"
            );
        }
        let mut y = x.clone();
        layer_norm::<H>(&mut y, &[2.0; H], &[0.5; H], 1e-12);
        for (a, b) in x.iter().zip(&y) {
            assert!((a * 2.0 + 0.5 - b).abs() < 1e-4, "{a} -> {b}");
        }
    }

    #[test]
    fn lane_sums_match_plain_sums() {
        let a: [f32; 32] = values(32, 1.0).try_into().unwrap();
        let squares: f32 = a.iter().map(|x| x * x).sum();
        assert!((lane_sum(&a, |v| v * v) - squares).abs() < 1e-5);
    }

    #[test]
    fn normalise_gives_unit_length_and_leaves_zeros_alone() {
        let mut v = vec![3.0f32, 4.0];
        normalise(&mut v);
        assert_eq!(v, vec![0.6, 0.8]);
        let mut zeros = vec![0.0f32; 4];
        normalise(&mut zeros);
        assert_eq!(zeros, vec![0.0; 4]);
    }
}
