//! `out = x · W + b` for rows of tokens (one question's few dozen, or a batch of documents'
//! thousands) against a weight matrix that never changes, and all of the model's `unsafe` code.
//! `W` is packed once, when the model loads, into column panels laid out in the order the kernel
//! reads them; each product then runs a register-tiled kernel for the widest vector unit the CPU
//! has (AVX-512, AVX2 with FMA, SSE2, or plain Rust), with the panels shared out between threads.
//! A general-purpose matrix library packs its right-hand side on every call; for a 20-token
//! question against MiniLM's weights that costs more than the arithmetic.
//!
//! Safety rules, each stated once and checked:
//! - a kernel runs only on a CPU that reports every feature it needs ([`Kernel::features`],
//!   detected at run time; [`PackedLinear::new`] asserts it, and [`VectorUnit`] can only be
//!   made from what was detected);
//! - packing and the kernels agree on one [`TileShape`] per kernel (panel width, lanes, tile
//!   rows), and panels start on a [`PANEL_ALIGN`]-byte boundary that every aligned load needs
//!   (const assertions below, and an assertion when a layer is packed).
#![deny(clippy::undocumented_unsafe_blocks)]
#![allow(unsafe_code)]
use rayon::prelude::*;

/// The kernel a machine runs, chosen once from the CPU's features.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// AVX-512 with BF16 dot products: weights and inputs rounded to bfloat16 (8 bits of
    /// mantissa), products summed in f32, twice the arithmetic per instruction of [`Avx512`].
    ///
    /// [`Avx512`]: Kernel::Avx512
    Avx512Bf16,
    Avx512,
    Avx2,
    /// Every x86-64 CPU has SSE2 (it is still detected, like the others).
    Sse2,
    Portable,
}

/// Every kernel, widest first.
const KERNELS: [Kernel; 5] = [
    Kernel::Avx512Bf16,
    Kernel::Avx512,
    Kernel::Avx2,
    Kernel::Sse2,
    Kernel::Portable,
];

impl Kernel {
    /// The widest kernel this CPU can run.
    ///
    /// # Panics
    /// Never in practice: the chosen kernel's features were just detected, and this asserts it.
    pub fn detect() -> Self {
        let kernel = Self::widest(cpu_has);
        assert!(
            kernel.supported(),
            "the {} kernel was selected on a CPU that lacks its features",
            kernel.name()
        );
        kernel
    }

    /// The widest kernel whose features `has` reports (the portable one needs none).
    fn widest(has: impl Fn(&str) -> bool) -> Self {
        let kernel = KERNELS
            .into_iter()
            .find(|k| k.features().iter().all(|f| has(f)))
            .unwrap_or(Kernel::Portable);
        assert!(
            kernel.features().iter().all(|f| has(f)),
            "the {} kernel lacks a feature",
            kernel.name()
        );
        kernel
    }

    /// Every kernel this CPU can run, widest first (the narrower ones are there to compare).
    pub fn available() -> Vec<Kernel> {
        KERNELS.into_iter().filter(|k| k.supported()).collect()
    }

    /// The CPU features the kernel's instructions need, as `is_x86_feature_detected!` names
    /// them.
    pub fn features(self) -> &'static [&'static str] {
        match self {
            // As AVX-512, with the BF16 dot product (and the conversion of inputs to BF16).
            Kernel::Avx512Bf16 => &["avx512f", "avx512bf16"],
            // Loads, stores, broadcasts, adds and fused multiply-adds on 512-bit registers.
            Kernel::Avx512 => &["avx512f"],
            // 256-bit float arithmetic is AVX (implied by AVX2); the fused multiply-add is FMA.
            Kernel::Avx2 => &["avx2", "fma"],
            Kernel::Sse2 => &["sse2"],
            Kernel::Portable => &[],
        }
    }

    /// Whether this CPU has the instructions the kernel uses (detected at run time).
    pub fn supported(self) -> bool {
        self.features().iter().all(|f| cpu_has(f))
    }

    /// The kernel's name, as the benchmark prints it.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Avx512Bf16 => "avx512-bf16",
            Kernel::Avx512 => "avx512",
            Kernel::Avx2 => "avx2",
            Kernel::Sse2 => "sse2",
            Kernel::Portable => "portable",
        }
    }

    /// The kernel itself, or for the BF16 kernel the f32 one of the same width: what attention
    /// runs on, whose scores feed a softmax.
    pub fn exact(self) -> Self {
        match self {
            Kernel::Avx512Bf16 => Kernel::Avx512,
            other => other,
        }
    }

    /// Whether the kernel rounds weights and inputs to bfloat16: its products then differ from
    /// f32 ones by about 2⁻⁹ of each operand, where the f32 kernels differ only in the order
    /// they sum.
    pub fn rounds_to_bf16(self) -> bool {
        self == Kernel::Avx512Bf16
    }

    /// The one shape packing and the kernel agree on.
    fn shape(self) -> TileShape {
        match self {
            Kernel::Avx512Bf16 => AVX512_BF16,
            Kernel::Avx512 => AVX512,
            Kernel::Avx2 => AVX2,
            Kernel::Sse2 => SSE2,
            Kernel::Portable => PORTABLE,
        }
    }
}

/// Whether this CPU has `feature` (an `is_x86_feature_detected!` name), detected at run time.
/// Unknown names, and every name off x86-64, are `false`.
fn cpu_has(feature: &str) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        match feature {
            "avx512f" => has!("avx512f"),
            "avx512bf16" => has!("avx512bf16"),
            "avx2" => has!("avx2"),
            "fma" => has!("fma"),
            "sse2" => has!("sse2"),
            _ => false,
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = feature;
        false
    }
}

/// What the code between the matrix products (attention's softmax, layer norm, GELU) is
/// compiled for: AVX-512 (with AVX2 and FMA) beside an AVX-512 kernel, AVX2 with FMA when the
/// CPU has both and the layers' kernel is at least that wide, otherwise the baseline. Only
/// [`VectorUnit::for_kernel`] makes one, from detected features. (AVX-512 halves GELU and
/// softmax against AVX2: 256 tokens, 3.6 → 1.8 ms and 4.9 → 3.3 ms on one core.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct VectorUnit(Unit);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Unit {
    Avx512,
    Avx2Fma,
    Baseline,
}

/// Work that [`VectorUnit::run`] compiles for a vector unit: its `run` is `#[inline(always)]`,
/// and so is what it calls, so the whole body is generated again inside the feature-enabled
/// function.
pub(crate) trait Vectorised {
    fn run(&mut self);
}

impl VectorUnit {
    /// The unit to run the layers around `kernel`'s products on, from this CPU's features.
    pub(crate) fn for_kernel(kernel: Kernel) -> Self {
        let unit = Self::select(kernel, cpu_has);
        assert!(
            unit == Unit::Baseline || (cpu_has("avx2") && cpu_has("fma")),
            "AVX2 code selected on a CPU without AVX2 and FMA"
        );
        assert!(
            unit != Unit::Avx512 || cpu_has("avx512f"),
            "AVX-512 code selected on a CPU without AVX-512"
        );
        VectorUnit(unit)
    }

    fn select(kernel: Kernel, has: impl Fn(&str) -> bool) -> Unit {
        let avx512 = matches!(kernel, Kernel::Avx512 | Kernel::Avx512Bf16);
        let wide = avx512 || kernel == Kernel::Avx2;
        if !(wide && has("avx2") && has("fma")) {
            Unit::Baseline
        } else if avx512 && has("avx512f") {
            Unit::Avx512
        } else {
            Unit::Avx2Fma
        }
    }

    /// Runs `work`, compiled for this unit.
    pub(crate) fn run(self, work: &mut impl Vectorised) {
        match self.0 {
            #[cfg(target_arch = "x86_64")]
            Unit::Avx512 => {
                // SAFETY: `Unit::Avx512` is only made by `for_kernel`, after detecting (and
                // asserting) that this CPU has AVX-512F, AVX2 and FMA.
                unsafe { run_avx512(work) }
            }
            #[cfg(target_arch = "x86_64")]
            Unit::Avx2Fma => {
                // SAFETY: `Unit::Avx2Fma` is only made by `for_kernel`, after detecting (and
                // asserting) that this CPU has AVX2 and FMA.
                unsafe { run_avx2_fma(work) }
            }
            _ => work.run(),
        }
    }
}

/// # Safety
/// The CPU has AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn run_avx2_fma(work: &mut impl Vectorised) {
    work.run()
}

/// # Safety
/// The CPU has AVX-512F, AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn run_avx512(work: &mut impl Vectorised) {
    work.run()
}

/// One kernel's register tile, the shape packing and the kernel must agree on: `rows` rows of
/// x, each against `vectors` registers of `lanes` f32. A panel is `lanes × vectors` columns
/// wide; the kernel keeps `rows × vectors` accumulators in registers. For the BF16 kernel a
/// value of x or of a panel is a pair of bfloat16 (two steps of the sum) in one f32's bits.
#[derive(Clone, Copy)]
struct TileShape {
    lanes: usize,
    vectors: usize,
    rows: usize,
}

impl TileShape {
    /// Columns in a panel.
    const fn width(self) -> usize {
        self.lanes * self.vectors
    }
}

const AVX512: TileShape = TileShape {
    lanes: 16,
    vectors: 3,
    rows: 9,
};
const AVX512_BF16: TileShape = AVX512;
const AVX2: TileShape = TileShape {
    lanes: 8,
    vectors: 2,
    rows: 6,
};
const SSE2: TileShape = TileShape {
    lanes: 4,
    vectors: 2,
    rows: 6,
};
/// Plain Rust: one row of eight, which the compiler vectorises itself.
const PORTABLE: TileShape = TileShape {
    lanes: 8,
    vectors: 1,
    rows: 4,
};

/// Panels start on this boundary, so no vector load straddles two cache lines and the SIMD
/// kernels may use aligned loads.
const PANEL_ALIGN: usize = 64;

/// A cache line of packed weights: the unit panels are allocated in, for their alignment.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([f32; PANEL_ALIGN / size_of::<f32>()]);

// The alignment rules, checked when this file compiles.
const _: () = {
    assert!(align_of::<Line>() == PANEL_ALIGN && size_of::<Line>() == PANEL_ALIGN);
    let shapes = [AVX512_BF16, AVX512, AVX2, SSE2, PORTABLE];
    let mut i = 0;
    while i < shapes.len() {
        let s = shapes[i];
        // A panel starts `p · in_dim · width` values into the 64-byte aligned packing, and the
        // kernel steps `lanes` values at a time; both are whole registers apart when the
        // panel is whole registers wide, so every aligned load lands on a register boundary
        // as long as one register divides the panels' alignment.
        assert!(s.width().is_multiple_of(s.lanes));
        assert!(PANEL_ALIGN.is_multiple_of(s.lanes * size_of::<f32>()));
        assert!(s.rows >= 1);
        i += 1;
    }
};

/// A linear layer, `in_dim → out_dim`, with its weights packed for one kernel.
pub struct PackedLinear {
    in_dim: usize,
    /// Steps of the sum the kernel takes per output: `in_dim`, or for the BF16 kernel
    /// `in_dim / 2` rounded up (each step a pair of inputs).
    depth: usize,
    out_dim: usize,
    /// Checked at packing to run on this CPU.
    kernel: Kernel,
    /// Panel `p` holds columns `p·w .. p·w + w` of `W` (`w` the panel width) for every input row
    /// in turn, padded with zero columns past `out_dim`.
    panels: Vec<Line>,
    /// The bias, padded with zeros like the panels (a whole number of panels long).
    bias: Vec<f32>,
}

/// Products smaller than this many multiply-adds run on the calling thread. A question (or a
/// message's few sentences: under ~100 tokens) stays on its own thread: a server embeds many
/// at once, and splitting each of a question's 24 products between the pool's threads made it
/// queue behind every other question's at each of them (hybrid retrieval under 1,000 learners:
/// p50 138 ms added before the first token). Batches of documents, thousands of rows, are
/// still shared out.
pub(crate) const PARALLEL_MIN_MACS: usize = 64_000_000;
/// Products over at least this many rows are shared out whatever their size: a question with
/// pasted code (up to the model's 256 tokens) is split in every layer, attention's output
/// projection included, as its heads are (`encoder::PARALLEL_HEADS_TOKENS`).
pub(crate) const PARALLEL_MIN_ROWS: usize = 128;

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
        let width = kernel.shape().width();
        let panel_count = out_dim.div_ceil(width);
        let depth = if kernel.rounds_to_bf16() {
            in_dim.div_ceil(2)
        } else {
            in_dim
        };
        let mut packed = vec![0f32; panel_count * depth * width];
        for p in 0..panel_count {
            let cols = width.min(out_dim - p * width);
            for c in 0..cols {
                let column = &w[(p * width + c) * in_dim..][..in_dim];
                let mut put = |i: usize, v: f32| packed[(p * depth + i) * width + c] = v;
                if kernel.rounds_to_bf16() {
                    for (i, pair) in column.chunks(2).enumerate() {
                        put(i, bf16_pair(pair));
                    }
                } else {
                    for (i, v) in column.iter().enumerate() {
                        put(i, *v);
                    }
                }
            }
        }
        let line = size_of::<Line>() / size_of::<f32>();
        let mut panels =
            vec![Line([0.0; PANEL_ALIGN / size_of::<f32>()]); packed.len().div_ceil(line)];
        for (dst, chunk) in panels.iter_mut().zip(packed.chunks(line)) {
            dst.0[..chunk.len()].copy_from_slice(chunk);
        }
        assert_eq!(
            panels.as_ptr() as usize % PANEL_ALIGN,
            0,
            "panels start on a {PANEL_ALIGN}-byte boundary"
        );
        let mut padded_bias = bias.to_vec();
        padded_bias.resize(panel_count * width, 0.0);
        Self {
            in_dim,
            depth,
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
        let pairs;
        let x = if self.kernel.rounds_to_bf16() {
            pairs = bf16_rows(&x[..rows * self.in_dim], self.in_dim);
            &pairs[..]
        } else {
            x
        };
        let width = self.kernel.shape().width();
        let panel_count = self.out_dim.div_ceil(width);
        let threads = rayon::current_num_threads().min(panel_count);
        let out_ptr = SharedOut(out.as_mut_ptr());
        let small =
            rows * self.in_dim * self.out_dim < PARALLEL_MIN_MACS && rows < PARALLEL_MIN_ROWS;
        if threads <= 1 || small {
            // SAFETY: the assertions above bound every row of x and out this reads or writes,
            // and `out` is borrowed mutably for the whole call.
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
    /// `x` holds `rows × depth` values (for the BF16 kernel, pairs from [`bf16_rows`]) and `out`
    /// points at `rows × out_dim` writable values
    /// that nothing else reads or writes in the columns of these panels meanwhile.
    unsafe fn run_panels(
        &self,
        x: &[f32],
        rows: usize,
        out: SharedOut,
        panels: std::ops::Range<usize>,
    ) {
        let shape = self.kernel.shape();
        let width = shape.width();
        let tiles = rows.div_ceil(shape.rows);
        let tile_rows = rows.div_ceil(tiles);
        let base = self.panels.as_ptr().cast::<f32>();
        for p in panels {
            let cols = width.min(self.out_dim - p * width);
            let mut r0 = 0;
            while r0 < rows {
                let r = tile_rows.min(rows - r0);
                let tile = Tile {
                    x: x[r0 * self.depth..].as_ptr(),
                    x_stride: self.depth,
                    k: self.depth,
                    // SAFETY: panel p starts p · depth · width values into the packed weights,
                    // which hold panel_count · depth · width values.
                    panel: unsafe { base.add(p * self.depth * width) },
                    bias: self.bias[p * width..].as_ptr(),
                    // SAFETY: row r0, column p · width is inside `out` by the caller's contract.
                    out: unsafe { out.0.add(r0 * self.out_dim + p * width) },
                    out_stride: self.out_dim,
                    cols,
                };
                // SAFETY: the tile's pointers cover r rows of k inputs and `cols` outputs, the
                // panel holds k · width values and the bias `width` from here, r is at most the
                // kernel's tile rows, and `new` checked that this CPU runs `self.kernel`.
                unsafe { tile.run(self.kernel, r) };
                r0 += r;
            }
        }
    }
}

/// The output pointer, shared by threads that write disjoint columns of it.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
// SAFETY: a SharedOut is only handed to threads that write disjoint elements of the output
// while `apply` holds it borrowed mutably (see `apply`).
unsafe impl Send for SharedOut {}
// SAFETY: as for Send: shared between threads that never touch the same element.
unsafe impl Sync for SharedOut {}

/// One kernel call: up to the kernel's tile rows of x against one panel.
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

/// Calls `$f::<rows>` for the tile's row count. The list of row counts must be exactly
/// `1..=shape.rows` (checked when this file compiles), so every tile `run_panels` cuts has its
/// instance of the kernel.
macro_rules! by_rows {
    ($f:ident, $tile:expr, $rows:expr, $shape:expr, [$($r:literal)*]) => {{
        const _: () = {
            let listed = [$($r),*];
            assert!(listed.len() == $shape.rows);
            let mut i = 0;
            while i < listed.len() {
                assert!(listed[i] == i + 1);
                i += 1;
            }
        };
        match $rows {
            $($r => $f::<$r>($tile),)*
            _ => unreachable!("a tile has at most as many rows as the kernel's registers hold"),
        }
    }};
}

impl Tile {
    /// # Safety
    /// The pointers cover `rows` rows of `k` inputs and `cols` outputs, the panel
    /// `k × width` values and the bias `width` values (`width` the kernel's panel width);
    /// `rows` is at most the kernel's tile rows; the CPU has the kernel's features.
    unsafe fn run(&self, kernel: Kernel, rows: usize) {
        match kernel {
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Bf16 => {
                // SAFETY: this function's contract, passed on.
                unsafe { by_rows!(tile_avx512_bf16, self, rows, AVX512_BF16, [1 2 3 4 5 6 7 8 9]) }
            }
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => {
                // SAFETY: this function's contract, passed on.
                unsafe { by_rows!(tile_avx512, self, rows, AVX512, [1 2 3 4 5 6 7 8 9]) }
            }
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => {
                // SAFETY: this function's contract, passed on.
                unsafe { by_rows!(tile_avx2, self, rows, AVX2, [1 2 3 4 5 6]) }
            }
            #[cfg(target_arch = "x86_64")]
            Kernel::Sse2 => {
                // SAFETY: this function's contract, passed on.
                unsafe { by_rows!(tile_sse2, self, rows, SSE2, [1 2 3 4 5 6]) }
            }
            _ => {
                // SAFETY: this function's contract, passed on (the portable kernel needs no
                // CPU feature).
                unsafe { by_rows!(tile_portable, self, rows, PORTABLE, [1 2 3 4]) }
            }
        }
    }
}

/// The tile kernel for one instruction set: `R` rows × `vectors` registers of `lanes`
/// accumulators (from the kernel's [`TileShape`]), each step of k loading the panel's row once
/// and broadcasting one x value per tile row.
macro_rules! simd_tile {
    ($name:ident, $feature:literal, $shape:ident,
     $zero:ident, $load:ident, $loadu:ident, $set1:ident, $fmadd:ident, $add:ident, $storeu:ident) => {
        /// # Safety
        /// As [`Tile::run`].
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $feature)]
        unsafe fn $name<const R: usize>(t: &Tile) {
            use std::arch::x86_64::*;
            const LANES: usize = $shape.lanes;
            const NV: usize = $shape.vectors;
            // SAFETY: the caller's contract on `Tile::run` bounds every pointer used here; the
            // panel's aligned loads land on register boundaries (the const assertions on
            // PANEL_ALIGN and the tile shapes).
            unsafe {
                let mut acc = [[$zero(); NV]; R];
                let mut p = t.panel;
                for i in 0..t.k {
                    let mut b = [$zero(); NV];
                    for (v, b) in b.iter_mut().enumerate() {
                        *b = $load(p.add(v * LANES));
                    }
                    for (r, acc) in acc.iter_mut().enumerate() {
                        let a = $set1(*t.x.add(r * t.x_stride + i));
                        for (acc, b) in acc.iter_mut().zip(&b) {
                            *acc = $fmadd(a, *b, *acc);
                        }
                    }
                    p = p.add(NV * LANES);
                }
                let mut bias = [$zero(); NV];
                for (v, b) in bias.iter_mut().enumerate() {
                    *b = $loadu(t.bias.add(v * LANES));
                }
                for (r, acc) in acc.iter().enumerate() {
                    let row = t.out.add(r * t.out_stride);
                    let mut tmp = [0f32; NV * LANES];
                    let full = t.cols == NV * LANES;
                    for (v, (acc, b)) in acc.iter().zip(&bias).enumerate() {
                        let dst = if full { row } else { tmp.as_mut_ptr() };
                        $storeu(dst.add(v * LANES), $add(*acc, *b));
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
    AVX512,
    _mm512_setzero_ps,
    _mm512_load_ps,
    _mm512_loadu_ps,
    _mm512_set1_ps,
    _mm512_fmadd_ps,
    _mm512_add_ps,
    _mm512_storeu_ps
);

simd_tile!(
    tile_avx512_bf16,
    "avx512f,avx512bf16",
    AVX512_BF16,
    _mm512_setzero_ps,
    _mm512_load_ps,
    _mm512_loadu_ps,
    _mm512_set1_ps,
    bf16_mul_add,
    _mm512_add_ps,
    _mm512_storeu_ps
);

/// `c` plus the products of the bfloat16 pairs in `a` and `b` (pairs held in f32 lanes, as
/// packed by [`bf16_pair`]), summed in f32.
///
/// # Safety
/// The CPU has AVX-512F and AVX-512 BF16.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
#[inline]
unsafe fn bf16_mul_add(
    a: std::arch::x86_64::__m512,
    b: std::arch::x86_64::__m512,
    c: std::arch::x86_64::__m512,
) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::{__m512bh, _mm512_dpbf16_ps};
    // SAFETY: __m512 and __m512bh are both 64 bytes of plain bits: this reads each f32 lane as
    // the two bfloat16 it was packed from.
    let (a, b) = unsafe {
        (
            std::mem::transmute::<std::arch::x86_64::__m512, __m512bh>(a),
            std::mem::transmute::<std::arch::x86_64::__m512, __m512bh>(b),
        )
    };
    _mm512_dpbf16_ps(c, a, b)
}

/// `v` rounded to the nearest bfloat16 (ties to even), as its 16 bits; a NaN stays a NaN.
#[inline(always)]
fn bf16(v: f32) -> u32 {
    let bits = v.to_bits();
    let rounded = (bits.wrapping_add(0x7fff + ((bits >> 16) & 1))) >> 16;
    if v.is_nan() {
        (bits >> 16) | 0x40
    } else {
        rounded
    }
}

/// Two consecutive values (the second taken as zero when missing) as one BF16 step: the first
/// in the low half, as the dot-product instruction pairs them.
fn bf16_pair(pair: &[f32]) -> f32 {
    let second = pair.get(1).copied().unwrap_or(0.0);
    f32::from_bits(bf16(pair[0]) | (bf16(second) << 16))
}

/// Each row of `x` (`in_dim` wide) as `in_dim / 2` (rounded up) BF16 steps.
fn bf16_rows(x: &[f32], in_dim: usize) -> Vec<f32> {
    let depth = in_dim.div_ceil(2);
    // Written into place: collecting a `flat_map` took four times as long.
    let mut out = vec![0f32; x.len() / in_dim * depth];
    for (row, out) in x.chunks_exact(in_dim).zip(out.chunks_exact_mut(depth)) {
        for (o, pair) in out.iter_mut().zip(row.chunks(2)) {
            *o = bf16_pair(pair);
        }
    }
    out
}

simd_tile!(
    tile_avx2,
    "avx2,fma",
    AVX2,
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
    SSE2,
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
    // SAFETY: only inlined into `tile_sse2`, which runs where SSE2 was detected (and SSE2 is
    // part of every x86-64 CPU).
    unsafe { _mm_add_ps(_mm_mul_ps(a, b), c) }
}

/// The same tile in plain Rust, for CPUs other than x86-64: what the compiler vectorises itself.
///
/// # Safety
/// As [`Tile::run`].
unsafe fn tile_portable<const R: usize>(t: &Tile) {
    const W: usize = PORTABLE.width();
    // SAFETY: the caller's contract on `Tile::run` bounds every pointer used here: the panel
    // holds k · W values, each row of x k values, and the bias W from here (it is padded to a
    // whole number of panels).
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
                // Past PARALLEL_MIN_MACS: panels shared out between threads.
                (200, 384, 1152),
            ] {
                let x = values(rows * k, 1);
                let w = values(n * k, 2);
                let b = values(n, 3);
                let layer = PackedLinear::new(&w, &b, k, n, kernel);
                // A sentinel past the end shows the kernel writes nothing beyond rows × n.
                let mut out = vec![f32::NAN; rows * n + 1];
                out[rows * n] = 7.0;
                layer.apply(&x, rows, &mut out);
                // The BF16 kernel multiplies the operands rounded to bfloat16 exactly and sums
                // in f32: the naive product of the rounded operands is what it must give.
                let operand = |v: &[f32]| -> Vec<f32> {
                    if kernel.rounds_to_bf16() {
                        v.iter().map(|&v| f32::from_bits(bf16(v) << 16)).collect()
                    } else {
                        v.to_vec()
                    }
                };
                let want = naive(&operand(&x), &operand(&w), &b, rows, k, n);
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

    #[test]
    fn the_widest_kernel_is_chosen_from_the_detected_features_only() {
        let cpu = |features: &'static [&'static str]| move |f: &str| features.contains(&f);
        assert_eq!(Kernel::widest(cpu(&[])), Kernel::Portable);
        assert_eq!(Kernel::widest(cpu(&["sse2"])), Kernel::Sse2);
        // AVX2 without FMA cannot run the AVX2 kernel (its multiply-add is FMA).
        assert_eq!(Kernel::widest(cpu(&["sse2", "avx2"])), Kernel::Sse2);
        assert_eq!(Kernel::widest(cpu(&["sse2", "fma"])), Kernel::Sse2);
        assert_eq!(Kernel::widest(cpu(&["sse2", "avx2", "fma"])), Kernel::Avx2);
        assert_eq!(
            Kernel::widest(cpu(&["sse2", "avx2", "fma", "avx512f"])),
            Kernel::Avx512
        );
        assert_eq!(
            Kernel::widest(cpu(&["sse2", "avx2", "fma", "avx512f", "avx512bf16"])),
            Kernel::Avx512Bf16
        );
    }

    #[test]
    fn bf16_rounds_to_nearest_with_ties_to_even_and_keeps_nan_and_infinity() {
        let back = |v: f32| f32::from_bits(bf16(v) << 16);
        assert_eq!(back(1.0), 1.0);
        assert_eq!(back(-2.5), -2.5);
        // 1 + 2⁻⁸ is halfway between 1 and 1 + 2⁻⁷: ties go to the even mantissa, 1.
        assert_eq!(back(1.0 + 1.0 / 256.0), 1.0);
        // 1 + 3·2⁻⁸ is halfway between 1 + 2⁻⁷ and 1 + 2⁻⁶: the even one is 1 + 2⁻⁶.
        assert_eq!(back(1.0 + 3.0 / 256.0), 1.0 + 1.0 / 64.0);
        assert_eq!(back(1.0 + 1.5 / 256.0), 1.0 + 1.0 / 128.0);
        assert_eq!(back(f32::INFINITY), f32::INFINITY);
        assert!(back(f32::NAN).is_nan());
        for v in values(1000, 9) {
            assert!((back(v) - v).abs() <= v.abs() / 256.0, "{v} -> {}", back(v));
        }
        // A pair keeps its first value in the low half; a missing second is zero.
        assert_eq!(bf16_pair(&[1.0, -2.0]).to_bits(), 0xc000_3f80);
        assert_eq!(bf16_pair(&[1.0]).to_bits(), 0x0000_3f80);
        assert_eq!(
            bf16_rows(&[1.0, -2.0, 3.0, 1.0, -2.0, 3.0], 3)
                .iter()
                .map(|v| v.to_bits())
                .collect::<Vec<_>>(),
            [0xc000_3f80, 0x0000_4040, 0xc000_3f80, 0x0000_4040]
        );
    }

    #[test]
    fn the_layers_run_on_the_widest_unit_the_detected_features_and_the_kernel_allow() {
        let cpu = |features: &'static [&'static str]| move |f: &str| features.contains(&f);
        let all = cpu(&["sse2", "avx2", "fma", "avx512f", "avx512bf16"]);
        assert_eq!(VectorUnit::select(Kernel::Avx512Bf16, all), Unit::Avx512);
        assert_eq!(VectorUnit::select(Kernel::Avx512, all), Unit::Avx512);
        assert_eq!(VectorUnit::select(Kernel::Avx2, all), Unit::Avx2Fma);
        // A narrower kernel keeps the whole pass narrow (the benchmark compares them).
        assert_eq!(VectorUnit::select(Kernel::Sse2, all), Unit::Baseline);
        assert_eq!(VectorUnit::select(Kernel::Portable, all), Unit::Baseline);
        // AVX-512 alone does not imply AVX2 and FMA: detected, not inferred.
        let avx512_only = cpu(&["sse2", "avx512f"]);
        assert_eq!(
            VectorUnit::select(Kernel::Avx512, avx512_only),
            Unit::Baseline
        );
    }

    #[test]
    fn this_cpu_runs_exactly_the_kernels_whose_features_it_reports() {
        let detected = Kernel::detect();
        assert_eq!(Kernel::available()[0], detected);
        for kernel in KERNELS {
            let has_all = kernel.features().iter().all(|f| cpu_has(f));
            assert_eq!(kernel.supported(), has_all, "{kernel:?}");
            assert_eq!(Kernel::available().contains(&kernel), has_all, "{kernel:?}");
            if !has_all {
                let packing =
                    std::panic::catch_unwind(|| PackedLinear::new(&[0.0], &[0.0], 1, 1, kernel));
                assert!(packing.is_err(), "{kernel:?} packed on a CPU without it");
            }
        }
        let unit = VectorUnit::for_kernel(detected);
        let avx2 = cpu_has("avx2") && cpu_has("fma");
        let avx512 = matches!(detected, Kernel::Avx512 | Kernel::Avx512Bf16);
        assert_eq!(unit.0 == Unit::Avx512, avx512 && avx2 && cpu_has("avx512f"));
        assert_eq!(
            unit.0 == Unit::Avx2Fma,
            (avx512 || detected == Kernel::Avx2) && avx2 && !(avx512 && cpu_has("avx512f"))
        );
        assert!(Kernel::available().contains(&Kernel::Portable));
        assert!(!cpu_has("no-such-feature"));
    }
}
