//! `out = x · W + b` for rows of tokens (one question's few dozen, or a batch of documents'
//! thousands) against a weight matrix that never changes. `W` is packed once, when the model
//! loads, into column panels laid out in the order the kernel reads them; each product then runs
//! a register-tiled kernel for the widest vector unit the CPU has (AVX-512, AVX2 with FMA, SSE2,
//! or plain Rust), with the panels shared out between threads. A general-purpose matrix library
//! packs its right-hand side on every call; for a 20-token question against MiniLM's weights
//! that costs more than the arithmetic.
use rayon::prelude::*;

/// The kernel a machine runs, chosen once from the CPU's features.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    Avx512,
    Avx2,
    /// Every x86-64 CPU has SSE2.
    Sse2,
    Portable,
}

impl Kernel {
    /// The widest kernel this CPU can run.
    pub fn detect() -> Self {
        Self::available()[0]
    }

    /// Every kernel this CPU can run, widest first (the narrower ones are there to compare).
    pub fn available() -> Vec<Kernel> {
        [Kernel::Avx512, Kernel::Avx2, Kernel::Sse2, Kernel::Portable]
            .into_iter()
            .filter(|k| k.supported())
            .collect()
    }

    /// Whether this CPU has the instructions the kernel uses.
    pub fn supported(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            match self {
                Kernel::Avx512 => has!("avx512f"),
                Kernel::Avx2 => has!("avx2") && has!("fma"),
                Kernel::Sse2 | Kernel::Portable => true,
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self == Kernel::Portable
        }
    }

    /// The kernel's name, as the benchmark prints it.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Avx512 => "avx512",
            Kernel::Avx2 => "avx2",
            Kernel::Sse2 => "sse2",
            Kernel::Portable => "portable",
        }
    }

    /// Columns in a panel: whole vector registers per row of the tile.
    fn panel_width(self) -> usize {
        match self {
            Kernel::Avx512 => 48,
            Kernel::Avx2 => 16,
            Kernel::Sse2 => 8,
            Kernel::Portable => 8,
        }
    }

    /// The most rows of `x` one tile holds: what the register file keeps as accumulators.
    fn max_tile_rows(self) -> usize {
        match self {
            Kernel::Avx512 => 9,
            Kernel::Avx2 => 6,
            Kernel::Sse2 => 6,
            Kernel::Portable => 4,
        }
    }
}

/// Panels are 64-byte aligned so that no vector load straddles two cache lines.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([f32; 16]);

/// A linear layer, `in_dim → out_dim`, with its weights packed for one kernel.
pub struct PackedLinear {
    in_dim: usize,
    out_dim: usize,
    kernel: Kernel,
    /// Panel `p` holds columns `p·w .. p·w + w` of `W` (`w` the panel width) for every input row
    /// in turn, padded with zero columns past `out_dim`.
    panels: Vec<Line>,
    /// The bias, padded with zeros like the panels.
    bias: Vec<f32>,
}

/// Products smaller than this many multiply-adds run on the calling thread: below it, waking
/// another thread costs more than it saves.
const PARALLEL_MIN_MACS: usize = 200_000;

impl PackedLinear {
    /// Packs `w`, given as PyTorch stores a linear layer's weight: `out_dim` rows of `in_dim`.
    ///
    /// # Panics
    /// When this CPU cannot run `kernel` (see [`Kernel::supported`]).
    pub fn new(w: &[f32], bias: &[f32], in_dim: usize, out_dim: usize, kernel: Kernel) -> Self {
        assert!(
            kernel.supported(),
            "this CPU cannot run the {kernel:?} kernel"
        );
        assert_eq!(
            w.len(),
            in_dim * out_dim,
            "weights are not out_dim × in_dim"
        );
        assert_eq!(bias.len(), out_dim, "bias is not out_dim long");
        let width = kernel.panel_width();
        let panel_count = out_dim.div_ceil(width);
        let mut packed = vec![0f32; panel_count * in_dim * width];
        for p in 0..panel_count {
            let cols = width.min(out_dim - p * width);
            for c in 0..cols {
                let column = &w[(p * width + c) * in_dim..][..in_dim];
                for (i, v) in column.iter().enumerate() {
                    packed[(p * in_dim + i) * width + c] = *v;
                }
            }
        }
        let mut panels = vec![Line([0.0; 16]); packed.len().div_ceil(16)];
        for (line, chunk) in panels.iter_mut().zip(packed.chunks(16)) {
            line.0[..chunk.len()].copy_from_slice(chunk);
        }
        let mut padded_bias = bias.to_vec();
        padded_bias.resize(panel_count * width, 0.0);
        Self {
            in_dim,
            out_dim,
            kernel,
            panels,
            bias: padded_bias,
        }
    }

    /// `out` (`rows × out_dim`) = `x` (`rows × in_dim`) · W + b.
    pub fn apply(&self, x: &[f32], rows: usize, out: &mut [f32]) {
        assert!(
            x.len() >= rows * self.in_dim,
            "x is shorter than rows × in_dim"
        );
        assert!(
            out.len() >= rows * self.out_dim,
            "out is shorter than rows × out_dim"
        );
        if rows == 0 {
            return;
        }
        let width = self.kernel.panel_width();
        let panel_count = self.out_dim.div_ceil(width);
        let threads = rayon::current_num_threads().min(panel_count);
        let out_ptr = SharedOut(out.as_mut_ptr());
        if threads <= 1 || rows * self.in_dim * self.out_dim < PARALLEL_MIN_MACS {
            // SAFETY: the assertions above bound every row of x and out this reads or writes.
            unsafe { self.run_panels(x, rows, out_ptr, 0..panel_count) };
            return;
        }
        let per_thread = panel_count.div_ceil(threads);
        (0..threads).into_par_iter().for_each(|t| {
            let start = (t * per_thread).min(panel_count);
            let end = ((t + 1) * per_thread).min(panel_count);
            // SAFETY: as above; each thread writes only the columns of its own panels, so no
            // element of `out` is written twice, and `out` outlives the parallel loop.
            unsafe { self.run_panels(x, rows, out_ptr, start..end) };
        });
    }

    /// Runs the kernel for `panels` over every row of `x`, in tiles of near-equal height.
    ///
    /// # Safety
    /// `x` holds `rows × in_dim` values and `out` points at `rows × out_dim` writable values
    /// that nothing else reads or writes in the columns of these panels meanwhile.
    unsafe fn run_panels(
        &self,
        x: &[f32],
        rows: usize,
        out: SharedOut,
        panels: std::ops::Range<usize>,
    ) {
        let width = self.kernel.panel_width();
        let tiles = rows.div_ceil(self.kernel.max_tile_rows());
        let tile_rows = rows.div_ceil(tiles);
        let base = self.panels.as_ptr().cast::<f32>();
        for p in panels {
            let cols = width.min(self.out_dim - p * width);
            let mut r0 = 0;
            while r0 < rows {
                let r = tile_rows.min(rows - r0);
                let tile = Tile {
                    x: x[r0 * self.in_dim..].as_ptr(),
                    x_stride: self.in_dim,
                    k: self.in_dim,
                    // SAFETY: panel p starts p · in_dim · width values into the packed weights.
                    panel: unsafe { base.add(p * self.in_dim * width) },
                    bias: self.bias[p * width..].as_ptr(),
                    // SAFETY: row r0, column p · width is inside `out` by the caller's contract.
                    out: unsafe { out.0.add(r0 * self.out_dim + p * width) },
                    out_stride: self.out_dim,
                    cols,
                };
                // SAFETY: the tile's pointers cover r rows of k inputs and `cols` outputs, and
                // `new` checked that this CPU runs `self.kernel`.
                unsafe { tile.run(self.kernel, r) };
                r0 += r;
            }
        }
    }
}

/// The output pointer, shared by threads that write disjoint columns of it.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
// SAFETY: threads given a SharedOut write disjoint elements (see `apply`).
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

/// One kernel call: up to `max_tile_rows` rows of x against one panel.
struct Tile {
    x: *const f32,
    x_stride: usize,
    k: usize,
    panel: *const f32,
    bias: *const f32,
    out: *mut f32,
    out_stride: usize,
    cols: usize,
}

macro_rules! by_rows {
    ($f:ident, $tile:expr, $rows:expr, [$($r:literal)*]) => {
        match $rows {
            $($r => $f::<$r>($tile),)*
            _ => unreachable!("a tile has at most as many rows as the kernel's registers hold"),
        }
    };
}

impl Tile {
    /// # Safety
    /// The pointers cover `rows` rows of `k` inputs and `cols` outputs, and the panel
    /// `k × panel_width` values; the CPU has the kernel's features.
    unsafe fn run(&self, kernel: Kernel, rows: usize) {
        match kernel {
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => unsafe { by_rows!(tile_avx512, self, rows, [1 2 3 4 5 6 7 8 9]) },
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => unsafe { by_rows!(tile_avx2, self, rows, [1 2 3 4 5 6]) },
            #[cfg(target_arch = "x86_64")]
            Kernel::Sse2 => unsafe { by_rows!(tile_sse2, self, rows, [1 2 3 4 5 6]) },
            _ => unsafe { by_rows!(tile_portable, self, rows, [1 2 3 4]) },
        }
    }
}

/// The tile kernel for one instruction set: `R` rows × `NV` vectors of `LANES` accumulators,
/// each step of k loading the panel's row once and broadcasting one x value per tile row.
macro_rules! simd_tile {
    ($name:ident, $feature:literal, $lanes:literal, $nv:literal,
     $zero:ident, $load:ident, $loadu:ident, $set1:ident, $fmadd:ident, $add:ident, $storeu:ident) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $feature)]
        unsafe fn $name<const R: usize>(t: &Tile) {
            use std::arch::x86_64::*;
            // SAFETY: the caller's contract on `Tile::run` bounds every pointer used here.
            unsafe {
                let mut acc = [[$zero(); $nv]; R];
                let mut p = t.panel;
                for i in 0..t.k {
                    let mut b = [$zero(); $nv];
                    for (v, b) in b.iter_mut().enumerate() {
                        *b = $load(p.add(v * $lanes));
                    }
                    for (r, acc) in acc.iter_mut().enumerate() {
                        let a = $set1(*t.x.add(r * t.x_stride + i));
                        for (acc, b) in acc.iter_mut().zip(&b) {
                            *acc = $fmadd(a, *b, *acc);
                        }
                    }
                    p = p.add($nv * $lanes);
                }
                let mut bias = [$zero(); $nv];
                for (v, b) in bias.iter_mut().enumerate() {
                    *b = $loadu(t.bias.add(v * $lanes));
                }
                for (r, acc) in acc.iter().enumerate() {
                    let row = t.out.add(r * t.out_stride);
                    let mut tmp = [0f32; $nv * $lanes];
                    let full = t.cols == $nv * $lanes;
                    for (v, (acc, b)) in acc.iter().zip(&bias).enumerate() {
                        let dst = if full { row } else { tmp.as_mut_ptr() };
                        $storeu(dst.add(v * $lanes), $add(*acc, *b));
                    }
                    if !full {
                        std::ptr::copy_nonoverlapping(tmp.as_ptr(), row, t.cols);
                    }
                }
            }
        }
    };
}

simd_tile!(
    tile_avx512,
    "avx512f",
    16,
    3,
    _mm512_setzero_ps,
    _mm512_load_ps,
    _mm512_loadu_ps,
    _mm512_set1_ps,
    _mm512_fmadd_ps,
    _mm512_add_ps,
    _mm512_storeu_ps
);

simd_tile!(
    tile_avx2,
    "avx2,fma",
    8,
    2,
    _mm256_setzero_ps,
    _mm256_load_ps,
    _mm256_loadu_ps,
    _mm256_set1_ps,
    _mm256_fmadd_ps,
    _mm256_add_ps,
    _mm256_storeu_ps
);

simd_tile!(
    tile_sse2,
    "sse2",
    4,
    2,
    _mm_setzero_ps,
    _mm_load_ps,
    _mm_loadu_ps,
    _mm_set1_ps,
    sse2_mul_add,
    _mm_add_ps,
    _mm_storeu_ps
);

/// SSE2 has no fused multiply-add.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn sse2_mul_add(
    a: std::arch::x86_64::__m128,
    b: std::arch::x86_64::__m128,
    c: std::arch::x86_64::__m128,
) -> std::arch::x86_64::__m128 {
    use std::arch::x86_64::{_mm_add_ps, _mm_mul_ps};
    // SAFETY: SSE2 is part of every x86-64 CPU.
    unsafe { _mm_add_ps(_mm_mul_ps(a, b), c) }
}

/// The same tile in plain Rust, for CPUs other than x86-64: what the compiler vectorises itself.
unsafe fn tile_portable<const R: usize>(t: &Tile) {
    const W: usize = 8;
    // SAFETY: the caller's contract on `Tile::run` bounds every pointer used here.
    let (panel, rows, bias) = unsafe {
        (
            std::slice::from_raw_parts(t.panel, t.k * W),
            std::array::from_fn::<&[f32], R, _>(|r| {
                std::slice::from_raw_parts(t.x.add(r * t.x_stride), t.k)
            }),
            &*t.bias.cast::<[f32; W]>(),
        )
    };
    let mut acc = [[0f32; W]; R];
    for (i, b) in panel.chunks_exact(W).enumerate() {
        let b: &[f32; W] = b.try_into().expect("chunks_exact gives W values");
        let xs: [f32; R] = std::array::from_fn(|r| rows[r][i]);
        for (acc, a) in acc.iter_mut().zip(xs) {
            for (acc, b) in acc.iter_mut().zip(b) {
                *acc += a * b;
            }
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        // SAFETY: row r of the output holds `cols` values from here (the caller's contract).
        let out = unsafe { std::slice::from_raw_parts_mut(t.out.add(r * t.out_stride), t.cols) };
        for ((o, a), b) in out.iter_mut().zip(acc).zip(bias) {
            *o = a + b;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(x: &[f32], w: &[f32], b: &[f32], rows: usize, k: usize, n: usize) -> Vec<f32> {
        let mut out = vec![0f32; rows * n];
        for r in 0..rows {
            for j in 0..n {
                let mut s = b[j] as f64;
                for i in 0..k {
                    s += x[r * k + i] as f64 * w[j * k + i] as f64;
                }
                out[r * n + j] = s as f32;
            }
        }
        out
    }

    /// Deterministic values in [-1, 1).
    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut state = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..len)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn every_kernel_matches_the_naive_product_for_ragged_shapes() {
        for kernel in Kernel::available() {
            for &(rows, k, n) in &[
                (1, 1, 1),
                (27, 384, 1152),
                (9, 70, 100),
                (17, 33, 48),
                (3, 1536, 384),
            ] {
                let x = values(rows * k, 1);
                let w = values(n * k, 2);
                let b = values(n, 3);
                let layer = PackedLinear::new(&w, &b, k, n, kernel);
                // A sentinel past the end shows the kernel writes nothing beyond rows × n.
                let mut out = vec![f32::NAN; rows * n + 1];
                out[rows * n] = 7.0;
                layer.apply(&x, rows, &mut out);
                let want = naive(&x, &w, &b, rows, k, n);
                let worst = out[..rows * n]
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0f32, f32::max);
                assert!(
                    worst < 1e-3,
                    "{kernel:?} {rows}×{k}×{n}: worst error {worst}"
                );
                assert_eq!(out[rows * n], 7.0, "{kernel:?} wrote past the output");
            }
        }
    }
}
