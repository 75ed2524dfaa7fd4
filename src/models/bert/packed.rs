//! Dense layers with their weights packed once, at load, for this module's own GEMM
//! microkernels: `dst += x · W` where `W` is `[inputs, outputs]`.
//!
//! A general GEMM (the `gemm` crate) packs the weight matrix again on every call and tiles
//! for square-ish problems; a serving encoder multiplies the same weights by a few to a few
//! hundred token rows, over and over. Here the weights sit in panels of 16 output columns in
//! the order the microkernel reads them, and the token rows are read in place, so a call does
//! no packing at all and a batch of one sentence (16 rows) wastes nothing on padding.
//!
//! A call is cut into tiles of up to 6 rows × 4 panels (64 columns): 24 accumulator registers
//! on AVX-512. Groups of 4 panels are shared out across the rayon pool; each task walks all
//! rows of its columns, so its weights stay in its core's caches while the rows stream by.
//! Each element type has an AVX-512, an AVX2 and a portable kernel, chosen at run time.

use std::ops::Range;

use rayon::prelude::*;

/// Output columns per panel: one zmm register of f32 or i32.
pub const PANEL: usize = 16;
/// An f32 tile, rows × panels: 24 accumulator registers on AVX-512.
const F32_TILE: (usize, usize) = (6, 4);
/// On AVX2 a tile is one panel (12 ymm accumulators), so that a task reads each panel's
/// weights as one stream, block after block, while the kernel prefetches the next panel.
const F32_TILE_AVX2: (usize, usize) = (6, 1);
/// An int8 tile: 12 integer accumulators for the current block of inputs and 12 f32 ones for
/// the scaled sum of the blocks before it.
const INT8_TILE: (usize, usize) = (4, 3);
/// Below this many multiply-adds a call runs on the calling thread: waking a second thread
/// costs more than it saves.
const PARALLEL_MACS: usize = 1 << 20;

/// The instruction sets the kernels come in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// AVX-512 F/BW (and VNNI for int8).
    Avx512,
    /// AVX2 with FMA (and AVX-VNNI for int8).
    Avx2,
    /// Plain Rust.
    Portable,
}

impl Isa {
    /// The best f32 kernels this CPU runs (see [`Isa::cap`]).
    pub fn f32() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512f") {
                return Isa::Avx512.capped();
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                return Isa::Avx2.capped();
            }
        }
        Isa::Portable
    }

    /// The best int8 kernels: AVX-512 VNNI, then AVX2 (with AVX-VNNI's `vpdpbusd` when the
    /// CPU has it, else `vpmaddubsw` on 7-bit weights: see [`Int8Weights`]), then portable.
    pub fn int8() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vnni")
            {
                return Isa::Avx512.capped();
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                return Isa::Avx2.capped();
            }
        }
        Isa::Portable
    }

    /// `CANDLE_SERVING_KERNELS=avx2` (or `portable`) holds the dense-layer kernels below what
    /// the CPU offers, read once: to measure the AVX2 kernels on an AVX-512 host
    /// (`scripts/bench_speed.sh` does). Unset or anything else: no cap.
    fn cap() -> Isa {
        static CAP: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
        *CAP.get_or_init(
            || match std::env::var("CANDLE_SERVING_KERNELS").as_deref() {
                Ok("avx2") => Isa::Avx2,
                Ok("portable") => Isa::Portable,
                _ => Isa::Avx512,
            },
        )
    }

    fn capped(self) -> Isa {
        let rank = |isa: Isa| match isa {
            Isa::Avx512 => 2,
            Isa::Avx2 => 1,
            Isa::Portable => 0,
        };
        if rank(Isa::cap()) < rank(self) {
            Isa::cap()
        } else {
            self
        }
    }

    /// This ISA and every one below it (the tests run them all against the definition).
    #[cfg(test)]
    pub fn with_fallbacks(self) -> Vec<Isa> {
        let all = [Isa::Avx512, Isa::Avx2, Isa::Portable];
        all.iter().copied().skip_while(|&isa| isa != self).collect()
    }

    /// How the benchmarks name the f32 kernel.
    pub fn f32_name(self) -> &'static str {
        match self {
            Isa::Avx512 => "AVX-512",
            Isa::Avx2 => "AVX2+FMA",
            Isa::Portable => "portable",
        }
    }

    /// How the benchmarks and the start-up log name the int8 kernel.
    pub fn int8_name(self) -> &'static str {
        match self {
            Isa::Avx512 => "AVX-512 VNNI",
            Isa::Avx2 if avx_vnni() => "AVX-VNNI",
            Isa::Avx2 => "AVX2 vpmaddubsw (no VNNI)",
            Isa::Portable => "portable (no VNNI: slower than f32)",
        }
    }
}

/// Whether the CPU has AVX-VNNI (`vpdpbusd` on ymm registers).
fn avx_vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avxvnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The output of one product, shared by its tasks, each writing its own columns.
#[derive(Clone, Copy)]
pub struct Out {
    ptr: *mut f32,
}
// SAFETY: tasks write disjoint columns (see `tiles`).
unsafe impl Sync for Out {}
unsafe impl Send for Out {}

/// What a product's destination starts from.
#[derive(Clone, Copy)]
pub enum Start<'a> {
    /// The values already in it.
    Dst,
    /// A dense layer's bias, plus `residual` (shaped like the destination) when given. Each
    /// tile adds its own rows × columns of them to its sums as it stores them after its first
    /// block of inputs (see [`Base::Bias`]), in parallel, instead of a pass of its own over
    /// the whole destination beforehand (megabytes for a batch, written then read back).
    Bias {
        bias: &'a [f32],
        residual: Option<&'a [f32]>,
    },
}

impl Start<'_> {
    fn check(&self, rows: usize, outputs: usize) {
        if let Start::Bias { bias, residual } = self {
            assert!(
                bias.len() == outputs && residual.is_none_or(|r| r.len() == rows * outputs),
                "dense layer: bias or residual shapes"
            );
        }
    }

    /// What a tile at rows `rows..` and columns `cols..` of an output `n` wide adds its sums
    /// to on its first block of inputs.
    fn base(&self, n: usize, rows: usize, cols: usize) -> Base {
        match *self {
            Start::Dst => Base::Dst,
            Start::Bias { bias, residual } => Base::Bias {
                bias: bias[cols..].as_ptr(),
                residual: residual.map_or(std::ptr::null(), |r| r[rows * n + cols..].as_ptr()),
            },
        }
    }
}

/// Keeps [`PackedLayer`] to this module's two kinds of weights: its provided
/// [`compute`](PackedLayer::compute) trusts `product` to write every value of the output
/// before it marks them initialised, which another implementation could break from safe code.
mod sealed {
    pub trait Sealed {}
    impl Sealed for super::F32Weights {}
    impl Sealed for super::Int8Weights {}
}

/// The product of either kind of packed weights, into a destination that holds values
/// already or starts from a bias. Sealed: implemented by [`F32Weights`] and [`Int8Weights`]
/// only.
pub trait PackedLayer: sealed::Sealed {
    /// `(inputs, outputs)`.
    fn shape(&self) -> (usize, usize);

    /// `out` (`len` values) `= start + x · W`, where `x` is `[rows, inputs]` and `len` is
    /// `rows × outputs`; whether GELU was applied.
    fn product(
        &self,
        x: &[f32],
        out: Out,
        len: usize,
        start: Start,
        threads: usize,
        gelu: bool,
    ) -> bool;

    /// `dst += x · W`: `x` is `[rows, inputs]`, `dst` `[rows, outputs]`. With `gelu`, the
    /// AVX-512 and AVX2 kernels apply GELU to each tile as they finish it (the f32 AVX2 one
    /// to its sums in registers, the others to the tile just stored, still in L1), and this
    /// returns true; otherwise (the portable kernels, and the int8 AVX2 ones) the caller
    /// applies it.
    fn accumulate(&self, x: &[f32], dst: &mut [f32], threads: usize, gelu: bool) -> bool {
        let out = Out {
            ptr: dst.as_mut_ptr(),
        };
        self.product(x, out, dst.len(), Start::Dst, threads, gelu)
    }

    /// `dst = bias + residual + x · W` (`residual` shaped like the output, when given), into
    /// `dst` cleared first; GELU as in [`accumulate`](Self::accumulate). Each tile takes its
    /// bias and residual as the kernel reaches it, so the destination is neither zeroed nor
    /// filled in a pass of its own (see [`Start::Bias`]).
    fn compute(
        &self,
        x: &[f32],
        bias: &[f32],
        residual: Option<&[f32]>,
        dst: &mut Vec<f32>,
        threads: usize,
        gelu: bool,
    ) -> bool {
        let (inputs, outputs) = self.shape();
        let len = x.len() / inputs * outputs;
        dst.clear();
        dst.reserve(len);
        let out = Out {
            ptr: dst.spare_capacity_mut().as_mut_ptr().cast::<f32>(),
        };
        let fused = self.product(x, out, len, Start::Bias { bias, residual }, threads, gelu);
        // SAFETY: `product` wrote all `len` values: every tile's first block of inputs wrote
        // its rows × columns (the bias plus its sums, without reading them), and the tiles
        // cover the whole output.
        unsafe { dst.set_len(len) };
        fused
    }
}

/// Calls `tile(rows, panels, inputs, first, out)` for every tile of a `rows × panels` product
/// in tiles of up to `shape` (rows, panels), inputs taken in `k_blocks`, each added into `out`.
/// `first` marks the first tile of a chunk of rows for its panels and inputs: the one that
/// brings that block of weights into the cache, for the rest of the chunk's rows to find there.
///
/// The groups of panels are shared out into `tasks` contiguous runs, one per thread. A task
/// walks the rows in chunks of about [`ROW_CHUNK_BYTES`] of inputs (`row_bytes` per row):
/// each chunk stays in L2 while every group of the task passes over it, and within a group a
/// block of weights stays in L1 while the chunk's rows go by. (Without the chunks, each group
/// read all the rows again: megabytes from L3 per group for a batch of long sentences.)
#[allow(clippy::too_many_arguments)]
fn tiles<F>(
    rows: usize,
    panels: usize,
    k_blocks: &[Range<usize>],
    shape: (usize, usize),
    row_bytes: usize,
    tasks: usize,
    out: Out,
    tile: F,
) where
    F: Fn(Range<usize>, Range<usize>, Range<usize>, bool, Out) + Sync,
{
    let (tile_rows, tile_panels) = shape;
    let groups: Vec<Range<usize>> = (0..panels)
        .step_by(tile_panels)
        .map(|p| p..(p + tile_panels).min(panels))
        .collect();
    let chunk_rows = (ROW_CHUNK_BYTES / row_bytes.max(1) / tile_rows).max(1) * tile_rows;
    let run = |task: &[Range<usize>]| {
        for chunk in (0..rows).step_by(chunk_rows) {
            let chunk_end = (chunk + chunk_rows).min(rows);
            for panels in task {
                for inputs in k_blocks {
                    let mut row = chunk;
                    while row < chunk_end {
                        let end = (row + tile_rows).min(chunk_end);
                        tile(row..end, panels.clone(), inputs.clone(), row == chunk, out);
                        row = end;
                    }
                }
            }
        }
    };
    let tasks = tasks.clamp(1, groups.len().max(1));
    if tasks > 1 {
        groups
            .par_chunks(groups.len().div_ceil(tasks))
            .for_each(run);
    } else {
        run(&groups);
    }
}

/// Packed weights starting on a 64-byte cache line, whatever the allocator hands out: the
/// kernels load a panel's 64 bytes per input as one vector (AVX-512) or two, and a load that
/// straddles two lines costs two. (glibc's large blocks start 16 bytes past a page, and so did
/// the dense bench's weights; the server's, from mimalloc, happened to be aligned.) The
/// tagger's step tables use it for the same reason.
pub(crate) struct Lines<T> {
    buf: Vec<T>,
    start: usize,
    len: usize,
}

impl<T: Copy + Default> Lines<T> {
    pub(crate) fn zeroed(len: usize) -> Self {
        let buf = vec![T::default(); len + 64 / std::mem::size_of::<T>()];
        let start = buf.as_ptr().align_offset(64);
        assert!(start + len <= buf.len(), "Lines: cannot align");
        Lines { buf, start, len }
    }
}

impl<T> std::ops::Deref for Lines<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.buf[self.start..self.start + self.len]
    }
}

impl<T> std::ops::DerefMut for Lines<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.buf[self.start..self.start + self.len]
    }
}

/// Inputs of a chunk of rows, kept in L2 across a task's groups of panels.
const ROW_CHUNK_BYTES: usize = 256 * 1024;

/// How many tasks a product is split into: one per thread, or one when it is too small for
/// waking a second thread to pay.
fn tasks(threads: usize, rows: usize, k: usize, n: usize) -> usize {
    if rows * k * n >= PARALLEL_MACS && threads > 1 {
        // Several per thread, so that a thread held up elsewhere is not waited for.
        4 * threads
    } else {
        1
    }
}

fn check_shape(inputs: usize, outputs: usize, values: usize, step: usize) -> Result<(), String> {
    if inputs == 0 || !inputs.is_multiple_of(step) || !outputs.is_multiple_of(PANEL) {
        return Err(format!(
            "packed dense layer: needs inputs a multiple of {step} and outputs of {PANEL}, got {inputs} × {outputs}"
        ));
    }
    if values != inputs * outputs {
        return Err(format!("{values} weights for {inputs} × {outputs}"));
    }
    Ok(())
}

/// f32 weights in panels: panel `p` holds, for each input `k`, `w[k, 16p..16p + 16]`.
pub struct F32Weights {
    inputs: usize,
    outputs: usize,
    packed: Lines<f32>,
    isa: Isa,
}

impl F32Weights {
    /// From `weight_t`, row-major `[inputs, outputs]`; outputs a multiple of 16.
    pub fn pack(weight_t: &[f32], inputs: usize, outputs: usize) -> Result<Self, String> {
        Self::pack_for(weight_t, inputs, outputs, Isa::f32())
    }

    pub fn pack_for(
        weight_t: &[f32],
        inputs: usize,
        outputs: usize,
        isa: Isa,
    ) -> Result<Self, String> {
        check_shape(inputs, outputs, weight_t.len(), 1)?;
        let mut packed = Lines::zeroed(inputs * outputs);
        for (k, row) in weight_t.chunks_exact(outputs).enumerate() {
            for (p, cols) in row.chunks_exact(PANEL).enumerate() {
                let at = (p * inputs + k) * PANEL;
                packed[at..at + PANEL].copy_from_slice(cols);
            }
        }
        Ok(F32Weights {
            inputs,
            outputs,
            packed,
            isa,
        })
    }

    /// The weights back in `[inputs, outputs]` order (for quantising).
    pub fn unpacked(&self) -> Vec<f32> {
        let (k, n) = (self.inputs, self.outputs);
        let mut w = vec![0f32; k * n];
        for (p, panel) in self.packed.chunks_exact(k * PANEL).enumerate() {
            for (kk, cols) in panel.chunks_exact(PANEL).enumerate() {
                w[kk * n + p * PANEL..kk * n + (p + 1) * PANEL].copy_from_slice(cols);
            }
        }
        w
    }
}

impl PackedLayer for F32Weights {
    fn shape(&self) -> (usize, usize) {
        (self.inputs, self.outputs)
    }

    fn product(
        &self,
        x: &[f32],
        out: Out,
        len: usize,
        start: Start,
        threads: usize,
        gelu: bool,
    ) -> bool {
        let (k, n) = (self.inputs, self.outputs);
        let rows = x.len() / k;
        assert!(rows * k == x.len() && rows * n == len, "f32 layer: shapes");
        start.check(rows, n);
        let isa = self.isa;
        let fuse = gelu && isa != Isa::Portable;
        // Inputs in blocks, so that a tile's panels of a block (4 × 128 inputs on AVX-512:
        // 32 KB; 1 × 384 on AVX2: 24 KB) stay in the L1 cache while the rows go by.
        let block = if isa == Isa::Avx2 {
            F32_BLOCK_AVX2
        } else {
            F32_BLOCK
        };
        let k_blocks: Vec<Range<usize>> = (0..k)
            .step_by(block)
            .map(|s| s..(s + block).min(k))
            .collect();
        let tasks = tasks(threads, rows, k, n);
        let shape = if isa == Isa::Avx2 {
            F32_TILE_AVX2
        } else {
            F32_TILE
        };
        tiles(
            rows,
            n / PANEL,
            &k_blocks,
            shape,
            k * 4,
            tasks,
            out,
            |r, p, kr, first, out| {
                assert!(r.end * k <= x.len() && (p.end * k) * PANEL <= self.packed.len());
                // The first block of inputs adds its sums to the tile's bias and residual as
                // it stores them, and the later ones to what the first stored.
                let base = if kr.start == 0 {
                    start.base(n, r.start, p.start * PANEL)
                } else {
                    Base::Dst
                };
                let tile = F32Tile {
                    // SAFETY (all three): inside x, the packed weights (asserted) and dst, whose
                    // rows r and panels p only this task writes.
                    a: unsafe { x.as_ptr().add(r.start * k + kr.start) },
                    lda: k,
                    b: unsafe { self.packed.as_ptr().add((p.start * k + kr.start) * PANEL) },
                    panel_stride: k * PANEL,
                    inputs: kr.len(),
                    rows: r.len(),
                    panels: p.len(),
                    dst: unsafe { out.ptr.add(r.start * n + p.start * PANEL) },
                    stride: n,
                    base,
                    gelu: fuse && kr.end == k,
                    prefetch: first,
                };
                match isa {
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx512 => x86::f32_avx512(&tile),
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx2 => x86::f32_avx2(&tile),
                    _ => f32_portable(&tile),
                }
            },
        );
        fuse
    }
}

/// Inputs per block of the f32 product.
const F32_BLOCK: usize = 128;
/// The same for the AVX2 kernel, whose tile is one panel wide: a longer block takes the 12
/// accumulators through memory fewer times (MiniLM's 384-input layers in one block) and still
/// fits a 32 KB L1 cache.
const F32_BLOCK_AVX2: usize = 384;

/// One f32 tile: `rows` rows of `inputs` values (`lda` apart) against `panels` panels of
/// weights (`panel_stride` apart, each `inputs` × 16), added into `dst`. The pointers are
/// inside their buffers for all of that (the caller checked).
struct F32Tile {
    a: *const f32,
    lda: usize,
    b: *const f32,
    panel_stride: usize,
    inputs: usize,
    rows: usize,
    panels: usize,
    dst: *mut f32,
    stride: usize,
    /// What the sums are added to as they are stored.
    base: Base,
    /// Apply GELU as the sums are stored (not portable; on the last block of inputs).
    gelu: bool,
    /// Prefetch the weights of the panels that follow, as the first row tile of a chunk
    /// (the later ones would find those lines in cache already).
    prefetch: bool,
}

/// What a tile adds its sums to as it stores them into `dst`.
#[derive(Clone, Copy)]
enum Base {
    /// The values in `dst`.
    Dst,
    /// The tile's columns of a bias (`bias` at its first column) plus, unless `residual` is
    /// null, the tile's rows × columns of a residual laid out as `dst` is (`stride` apart).
    /// `dst` is then written without being read: the tile neither waits for its lines (from
    /// L3 or memory, for a layer wider than L2 holds) nor needs them set beforehand. The sum
    /// is `(bias + residual) + sums`, the same additions in the same order as adding into a
    /// destination filled with them first.
    Bias {
        bias: *const f32,
        residual: *const f32,
    },
}

impl Base {
    /// What the sum at `dst + at`, the tile's column `col`, is added to.
    ///
    /// # Safety
    /// `at` and `col` are inside the tile whose `dst` and base these are.
    #[inline(always)]
    unsafe fn at(self, dst: *const f32, at: usize, col: usize) -> f32 {
        // SAFETY: inside the tile (caller), so inside dst, the bias and the residual.
        unsafe {
            match self {
                Base::Dst => *dst.add(at),
                Base::Bias { bias, residual } if residual.is_null() => *bias.add(col),
                Base::Bias { bias, residual } => *bias.add(col) + *residual.add(at),
            }
        }
    }
}

fn f32_portable(t: &F32Tile) {
    for r in 0..t.rows {
        for p in 0..t.panels {
            let mut sums = [0f32; PANEL];
            for kk in 0..t.inputs {
                // SAFETY: inside the tile (see F32Tile).
                let x = unsafe { *t.a.add(r * t.lda + kk) };
                for (c, s) in sums.iter_mut().enumerate() {
                    *s += x * unsafe { *t.b.add(p * t.panel_stride + kk * PANEL + c) };
                }
            }
            for (c, s) in sums.iter().enumerate() {
                let c = p * PANEL + c;
                // SAFETY: inside the tile.
                let at = r * t.stride + c;
                unsafe { *t.dst.add(at) = t.base.at(t.dst, at, c) + s };
            }
        }
    }
}

/// Inputs per int8 scale: every row of activations and every column of weights has its own
/// scale per block of this many inputs. One scale per whole row and column lost too much on
/// MiniLM (lowest cosine to fp32 0.9959 over the reference and benchmark sentences, 0.9993 with
/// the weights alone quantised per column): a few channels of BERT's activations are far
/// larger than the rest and took the resolution of everything beside them.
pub const INT8_BLOCK: usize = 32;

/// int8 weights in panels of 16 columns × 4 inputs (the four bytes one VNNI lane takes):
/// byte `t` of lane `l` of group `g` of panel `p` is `q[4g + t, 16p + l]`, with a symmetric
/// scale per block of [`INT8_BLOCK`] inputs and column.
///
/// `vpdpbusd` multiplies unsigned by signed bytes, so activations quantised to `q` in
/// [-127, 127] go in as `q + 128`; the `128 · Σ q[k, j]` this adds to a block of column `j`
/// depends on the weights alone and starts each accumulator negated.
///
/// Without VNNI, AVX2's `vpmaddubsw` adds two u8 × i8 products into a saturating i16, where
/// `q + 128` against a weight of ±127 could reach 2 · 255 · 127 and be clipped. That kernel
/// multiplies `|q|` by the weight carrying `q`'s sign (`vpsignb`) instead: a pair is at most
/// 2 · 127 · 127 = 32,258, so its sums are exact and equal to the VNNI kernels' to the bit.
pub struct Int8Weights {
    inputs: usize,
    outputs: usize,
    packed: Lines<i8>,
    /// `[blocks, outputs]`.
    scales: Vec<f32>,
    /// `[blocks, outputs]`.
    neg_shift: Vec<i32>,
    isa: Isa,
    /// With [`Isa::Avx2`]: `vpdpbusd` (AVX-VNNI) rather than `vpmaddubsw`.
    vnni: bool,
}

fn blocks(inputs: usize) -> Vec<Range<usize>> {
    (0..inputs)
        .step_by(INT8_BLOCK)
        .map(|s| s..(s + INT8_BLOCK).min(inputs))
        .collect()
}

impl Int8Weights {
    /// From `weight_t`, row-major `[inputs, outputs]`: inputs a multiple of 4, outputs of 16.
    pub fn quantize(weight_t: &[f32], inputs: usize, outputs: usize) -> Result<Self, String> {
        Self::quantize_for(weight_t, inputs, outputs, Isa::int8())
    }

    pub fn quantize_for(
        weight_t: &[f32],
        inputs: usize,
        outputs: usize,
        isa: Isa,
    ) -> Result<Self, String> {
        Self::quantize_with(weight_t, inputs, outputs, isa, avx_vnni())
    }

    fn quantize_with(
        weight_t: &[f32],
        inputs: usize,
        outputs: usize,
        isa: Isa,
        vnni: bool,
    ) -> Result<Self, String> {
        check_shape(inputs, outputs, weight_t.len(), 4)?;
        let blocks = blocks(inputs);
        let mut scales = vec![0f32; blocks.len() * outputs];
        for (kb, block) in blocks.iter().enumerate() {
            let scales = &mut scales[kb * outputs..(kb + 1) * outputs];
            for row in weight_t[block.start * outputs..block.end * outputs].chunks_exact(outputs) {
                for (s, &w) in scales.iter_mut().zip(row) {
                    *s = s.max(w.abs());
                }
            }
            for s in scales {
                *s = if *s > 0.0 { *s / 127.0 } else { 1.0 };
            }
        }
        let groups = inputs / 4;
        let mut packed = Lines::zeroed(inputs * outputs);
        let mut neg_shift = vec![0i32; blocks.len() * outputs];
        for (k, row) in weight_t.chunks_exact(outputs).enumerate() {
            let kb = k / INT8_BLOCK;
            for (j, &w) in row.iter().enumerate() {
                let q = (w / scales[kb * outputs + j]).round().clamp(-127.0, 127.0) as i8;
                let (p, l) = (j / PANEL, j % PANEL);
                packed[(p * groups + k / 4) * 64 + l * 4 + k % 4] = q;
                neg_shift[kb * outputs + j] -= 128 * q as i32;
            }
        }
        Ok(Int8Weights {
            inputs,
            outputs,
            packed,
            scales,
            neg_shift,
            isa,
            vnni,
        })
    }
}

impl PackedLayer for Int8Weights {
    fn shape(&self) -> (usize, usize) {
        (self.inputs, self.outputs)
    }

    /// Each row of `x` is quantised to int8 first, one scale per block of inputs (its
    /// largest magnitude / 127).
    fn product(
        &self,
        x: &[f32],
        out: Out,
        len: usize,
        start: Start,
        threads: usize,
        gelu: bool,
    ) -> bool {
        let (k, n) = (self.inputs, self.outputs);
        let rows = x.len() / k;
        assert!(rows * k == x.len() && rows * n == len, "int8 layer: shapes");
        start.check(rows, n);
        let blocks = blocks(k);
        let mut a = vec![0u8; rows * k];
        let mut row_scales = vec![0f32; rows * blocks.len()];
        let tasks = tasks(threads, rows, k, n);
        let (isa, vnni) = (self.isa, self.vnni);
        let quantize = |x: &[f32], a: &mut [u8], scales: &mut [f32]| match isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: Isa::Avx512 is only ever chosen on a CPU with AVX-512 F and BW.
            Isa::Avx512 => unsafe { x86::quantize_rows_avx512(x, k, a, scales) },
            _ => quantize_rows(x, k, a, scales),
        };
        if tasks > 1 {
            // Shared out too: left to the calling thread, the other one waited through it
            // (a batch of 32 sentences is 800,000 values to quantise for the FFN's second layer).
            let per = rows.div_ceil(2 * threads);
            x.par_chunks(per * k)
                .zip(a.par_chunks_mut(per * k))
                .zip(row_scales.par_chunks_mut(per * blocks.len()))
                .for_each(|((x, a), scales)| quantize(x, a, scales));
        } else {
            quantize(x, &mut a, &mut row_scales);
        }
        let fuse = gelu && isa == Isa::Avx512;
        tiles(
            rows,
            n / PANEL,
            std::slice::from_ref(&(0..k)),
            INT8_TILE,
            k,
            tasks,
            out,
            |r, p, _, _, out| {
                assert!(r.end * k <= a.len() && p.end * k * PANEL <= self.packed.len());
                let tile = Int8Tile {
                    // SAFETY (pointers): inside `a`, the packed weights (asserted above) and
                    // `dst`, whose rows r and panels p only this task writes.
                    a: unsafe { a.as_ptr().add(r.start * k) },
                    lda: k,
                    b: unsafe { self.packed.as_ptr().add(p.start * k * PANEL) },
                    panel_stride: k * PANEL,
                    inputs: k,
                    rows: r.len(),
                    panels: p.len(),
                    row_scales: &row_scales[r.start * blocks.len()..r.end * blocks.len()],
                    blocks: blocks.len(),
                    col_scales: &self.scales[p.start * PANEL..],
                    neg_shift: &self.neg_shift[p.start * PANEL..],
                    outputs: n,
                    dst: unsafe { out.ptr.add(r.start * n + p.start * PANEL) },
                    stride: n,
                    // One block of inputs (all of them), so every tile starts from `start`.
                    base: start.base(n, r.start, p.start * PANEL),
                    gelu: fuse,
                };
                match isa {
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx512 => x86::int8_avx512(&tile),
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx2 if vnni => x86::int8_avxvnni(&tile),
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx2 => x86::int8_avx2(&tile),
                    _ => int8_portable(&tile),
                }
            },
        );
        fuse
    }
}

/// One int8 tile: `rows` rows of `inputs` bytes (`lda` apart) against `panels` panels of
/// weights (`panel_stride` bytes apart), scaled block by block and added into `dst`. Row
/// `r`'s scale for block `b` is `row_scales[r * blocks + b]`; a column's for block `b` is
/// `col_scales[b * outputs + c]`, its shift `neg_shift[b * outputs + c]`.
struct Int8Tile<'a> {
    a: *const u8,
    lda: usize,
    b: *const i8,
    panel_stride: usize,
    inputs: usize,
    rows: usize,
    panels: usize,
    row_scales: &'a [f32],
    blocks: usize,
    col_scales: &'a [f32],
    neg_shift: &'a [i32],
    outputs: usize,
    dst: *mut f32,
    stride: usize,
    /// What the sums are added to as they are stored.
    base: Base,
    /// Apply GELU as the sums are stored (AVX-512 only).
    gelu: bool,
}

impl Int8Tile<'_> {
    /// Block `b`'s groups of four inputs.
    fn groups(&self, b: usize) -> Range<usize> {
        b * INT8_BLOCK / 4..((b + 1) * INT8_BLOCK).min(self.inputs) / 4
    }
}

fn int8_portable(t: &Int8Tile) {
    for r in 0..t.rows {
        for p in 0..t.panels {
            let mut total = [0f32; PANEL];
            for b in 0..t.blocks {
                let at = b * t.outputs + p * PANEL;
                let mut sums: [i32; PANEL] =
                    t.neg_shift[at..at + PANEL].try_into().expect("a panel");
                for g in t.groups(b) {
                    for (l, s) in sums.iter_mut().enumerate() {
                        for i in 0..4 {
                            // SAFETY: inside the tile (see Int8Tile).
                            let (x, w) = unsafe {
                                (
                                    *t.a.add(r * t.lda + g * 4 + i),
                                    *t.b.add(p * t.panel_stride + g * 64 + l * 4 + i),
                                )
                            };
                            *s += x as i32 * w as i32;
                        }
                    }
                }
                let row_scale = t.row_scales[r * t.blocks + b];
                for ((total, &s), &c) in total.iter_mut().zip(&sums).zip(&t.col_scales[at..]) {
                    *total += s as f32 * (row_scale * c);
                }
            }
            for (c, &v) in total.iter().enumerate() {
                let (at, c) = (r * t.stride + p * PANEL + c, p * PANEL + c);
                // SAFETY: inside the tile.
                unsafe { *t.dst.add(at) = t.base.at(t.dst, at, c) + v };
            }
        }
    }
}

/// A block's scale (`max |x| / 127`, 1 for a block of zeros) and what its values are
/// multiplied by before rounding, from its largest magnitude: one definition for the portable
/// and the AVX-512 quantisers, whose bytes and scales must agree.
#[inline(always)]
fn block_scale(max: f32) -> (f32, f32) {
    if max > 0.0 {
        (max / 127.0, 127.0 / max)
    } else {
        (1.0, 1.0)
    }
}

/// Each row of `x` (`k` wide), block by block of [`INT8_BLOCK`] inputs, to bytes `q + 128`
/// with `q = round(x / s)` in [-127, 127] and `s = max |x| / 127` the block's scale (1 for
/// a block of zeros), rounding ties to even; `scales` is `[rows, blocks]`. The maximum is
/// kept in 16 lanes so that it vectorises.
#[multiversion::multiversion(targets("x86_64+avx512f+avx512vl+avx512bw", "x86_64+avx2+fma"))]
fn quantize_rows(x: &[f32], k: usize, out: &mut [u8], scales: &mut [f32]) {
    const LANES: usize = 16;
    let blocks = x
        .chunks_exact(k)
        .zip(out.chunks_exact_mut(k))
        .flat_map(|(row, q)| row.chunks(INT8_BLOCK).zip(q.chunks_mut(INT8_BLOCK)));
    for ((block, q), s) in blocks.zip(scales) {
        let mut lanes = [0f32; LANES];
        let mut chunks = block.chunks_exact(LANES);
        for chunk in &mut chunks {
            for (m, &v) in lanes.iter_mut().zip(chunk) {
                let v = v.abs();
                *m = if v > *m { v } else { *m };
            }
        }
        let max = chunks.remainder().iter().map(|v| v.abs()).fold(
            super::kernels::fold_lanes(lanes, |a, b| if a > b { a } else { b }),
            |m, v| if v > m { v } else { m },
        );
        let inv;
        (*s, inv) = block_scale(max);
        for (q, &v) in q.iter_mut().zip(block) {
            let v = (v * inv).clamp(-127.0, 127.0);
            // Adding 2²³ rounds to an integer (ties to even) and leaves it in the low bits
            // of the mantissa: no float-to-int conversion, which Rust defines for NaN and
            // out-of-range values and LLVM then will not vectorise.
            *q = (v + (128.0 + 8_388_608.0)).to_bits() as u8;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The vector kernels. Each dispatches on the tile's size to a version with its row and
    //! panel counts fixed at compile time, so the accumulators live in registers.

    use super::{Base, F32Tile, Int8Tile, INT8_BLOCK, PANEL};
    use std::arch::x86_64::*;

    /// [`super::quantize_rows`] with AVX-512, to the same bytes and scales: a block of 32
    /// inputs is two vectors, their largest magnitude is found by four halving steps across
    /// the lanes, and the 32 bytes are stored by two `vpmovdb`. The portable version, as LLVM
    /// vectorised it, folded the lanes in 16 dependent scalar steps per block and branched
    /// around partial blocks. At long batch 32 (int8) the quantising fell from 7.2% to 5.7%
    /// of the encoder's samples, from 0.16 to 0.12 of the int8 tiles'; what is left waits for
    /// its input, the FFN's 12 MB first output, from L3.
    ///
    /// # Safety
    /// The CPU has AVX-512 F and BW; `x` and `out` are whole rows of `k`, and `scales` holds
    /// a value per block of [`INT8_BLOCK`] inputs of each row.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn quantize_rows_avx512(
        x: &[f32],
        k: usize,
        out: &mut [u8],
        scales: &mut [f32],
    ) {
        const _: () = assert!(INT8_BLOCK == 32, "a block is two zmm vectors");
        let per_row = k.div_ceil(INT8_BLOCK);
        assert!(
            x.len().is_multiple_of(k)
                && out.len() == x.len()
                && scales.len() == x.len() / k * per_row,
            "quantize_rows: shapes"
        );
        let low = _mm512_set1_ps(-127.0);
        let high = _mm512_set1_ps(127.0);
        let shift = _mm512_set1_ps(128.0 + 8_388_608.0);
        let lanes = |n: usize| -> __mmask16 { ((1u32 << n.min(16)) - 1) as __mmask16 };
        let mut s = scales.iter_mut();
        for (row, q) in x.chunks_exact(k).zip(out.chunks_exact_mut(k)) {
            for start in (0..k).step_by(INT8_BLOCK) {
                let len = (k - start).min(INT8_BLOCK);
                let (m0, m1) = (lanes(len), lanes(len.saturating_sub(16)));
                // SAFETY: the masks keep the loads and stores to the block's `len` values,
                // inside `row` and `q`; the CPU has the features (caller).
                unsafe {
                    let from = row.as_ptr().add(start);
                    let a = _mm512_maskz_loadu_ps(m0, from);
                    let b = _mm512_maskz_loadu_ps(m1, from.add(16));
                    // A NaN input makes only its own block meaningless, as in the portable
                    // version (whose bytes for it may differ).
                    let mut m = _mm512_max_ps(_mm512_abs_ps(a), _mm512_abs_ps(b));
                    m = _mm512_max_ps(m, _mm512_shuffle_f32x4::<0b01_00_11_10>(m, m));
                    m = _mm512_max_ps(m, _mm512_shuffle_f32x4::<0b10_11_00_01>(m, m));
                    m = _mm512_max_ps(m, _mm512_permute_ps::<0b01_00_11_10>(m));
                    m = _mm512_max_ps(m, _mm512_permute_ps::<0b10_11_00_01>(m));
                    let max = _mm512_cvtss_f32(m);
                    let (scale, inv) = super::block_scale(max);
                    *s.next().expect("a scale per block") = scale;
                    let inv = _mm512_set1_ps(inv);
                    let to_bytes = |v: __m512| {
                        let v = _mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(v, inv), low), high);
                        _mm512_castps_si512(_mm512_add_ps(v, shift))
                    };
                    let into = q.as_mut_ptr().add(start) as *mut i8;
                    _mm512_mask_cvtepi32_storeu_epi8(into, m0, to_bytes(a));
                    _mm512_mask_cvtepi32_storeu_epi8(into.add(16), m1, to_bytes(b));
                }
            }
        }
    }

    /// Calls `$kernel::<PRE.., R, P>($args)` for the run-time `rows` (1..=6) and `panels`
    /// (1..=4); `[PRE..]`, optional, are the kernel's leading const parameters.
    macro_rules! dispatch {
        ($kernel:ident, [$($pre:tt),*], $rows:expr, $panels:expr, ($($arg:expr),*)) => {
            match ($rows, $panels) {
                (1, 1) => $kernel::<$($pre,)* 1, 1>($($arg),*),
                (1, 2) => $kernel::<$($pre,)* 1, 2>($($arg),*),
                (1, 3) => $kernel::<$($pre,)* 1, 3>($($arg),*),
                (1, 4) => $kernel::<$($pre,)* 1, 4>($($arg),*),
                (2, 1) => $kernel::<$($pre,)* 2, 1>($($arg),*),
                (2, 2) => $kernel::<$($pre,)* 2, 2>($($arg),*),
                (2, 3) => $kernel::<$($pre,)* 2, 3>($($arg),*),
                (2, 4) => $kernel::<$($pre,)* 2, 4>($($arg),*),
                (3, 1) => $kernel::<$($pre,)* 3, 1>($($arg),*),
                (3, 2) => $kernel::<$($pre,)* 3, 2>($($arg),*),
                (3, 3) => $kernel::<$($pre,)* 3, 3>($($arg),*),
                (3, 4) => $kernel::<$($pre,)* 3, 4>($($arg),*),
                (4, 1) => $kernel::<$($pre,)* 4, 1>($($arg),*),
                (4, 2) => $kernel::<$($pre,)* 4, 2>($($arg),*),
                (4, 3) => $kernel::<$($pre,)* 4, 3>($($arg),*),
                (4, 4) => $kernel::<$($pre,)* 4, 4>($($arg),*),
                (5, 1) => $kernel::<$($pre,)* 5, 1>($($arg),*),
                (5, 2) => $kernel::<$($pre,)* 5, 2>($($arg),*),
                (5, 3) => $kernel::<$($pre,)* 5, 3>($($arg),*),
                (5, 4) => $kernel::<$($pre,)* 5, 4>($($arg),*),
                (6, 1) => $kernel::<$($pre,)* 6, 1>($($arg),*),
                (6, 2) => $kernel::<$($pre,)* 6, 2>($($arg),*),
                (6, 3) => $kernel::<$($pre,)* 6, 3>($($arg),*),
                (6, 4) => $kernel::<$($pre,)* 6, 4>($($arg),*),
                (r, p) => unreachable!("a tile of {r} rows × {p} panels"),
            }
        };
        ($kernel:ident, $rows:expr, $panels:expr, ($($arg:expr),*)) => {
            dispatch!($kernel, [], $rows, $panels, ($($arg),*))
        };
    }

    /// Defines `$name`, the vector of values that a tile's sums at `dst + at`, its column
    /// `col`, are added to: [`Base::at`] a vector at a time.
    macro_rules! base_vector {
        ($name:ident, $feature:literal, $vector:ty, $load:ident, $add:ident) => {
            /// # Safety
            /// As [`Base::at`], for every value of the vector.
            #[inline]
            #[target_feature(enable = $feature)]
            unsafe fn $name(base: Base, dst: *const f32, at: usize, col: usize) -> $vector {
                // SAFETY: inside the tile (caller).
                unsafe {
                    match base {
                        Base::Dst => $load(dst.add(at)),
                        Base::Bias { bias, residual } if residual.is_null() => $load(bias.add(col)),
                        Base::Bias { bias, residual } => {
                            $add($load(bias.add(col)), $load(residual.add(at)))
                        }
                    }
                }
            }
        };
    }
    base_vector!(base_x16, "avx512f", __m512, _mm512_loadu_ps, _mm512_add_ps);
    base_vector!(base_x8, "avx2", __m256, _mm256_loadu_ps, _mm256_add_ps);

    /// Exact (erf) GELU of 16 values, as `kernels::gelu_in_place` computes it: erf by
    /// Abramowitz and Stegun 7.1.26, with the division done by `rcp14` and one Newton step
    /// and `e^x` by a degree-6 polynomial and `scalef`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(super) fn gelu(x: __m512) -> __m512 {
        let z = _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::FRAC_1_SQRT_2));
        let a = _mm512_abs_ps(z);
        // t = 1 / (1 + p a)
        let d = _mm512_fmadd_ps(a, _mm512_set1_ps(0.327_591_1), _mm512_set1_ps(1.0));
        let t0 = _mm512_rcp14_ps(d);
        let t = _mm512_mul_ps(t0, _mm512_fnmadd_ps(d, t0, _mm512_set1_ps(2.0)));
        let mut poly = _mm512_set1_ps(1.061_405_4);
        for c in [-1.453_152, 1.421_413_7, -0.284_496_74, 0.254_829_6] {
            poly = _mm512_fmadd_ps(poly, t, _mm512_set1_ps(c));
        }
        poly = _mm512_mul_ps(poly, t);
        // e^(-a²), its argument clamped as in kernels::exp.
        let e = _mm512_max_ps(
            _mm512_mul_ps(_mm512_sub_ps(_mm512_setzero_ps(), a), a),
            _mm512_set1_ps(-87.0),
        );
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_mul_ps(e, _mm512_set1_ps(std::f32::consts::LOG2_E)),
        );
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_145_75), e);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428_606_8e-6), r);
        let mut p = _mm512_set1_ps(1.0 / 720.0);
        for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
        }
        let exp = _mm512_scalef_ps(p, n);
        // erf(|z|) = 1 - poly e^(-z²), then the sign of z.
        let erf_abs = _mm512_fnmadd_ps(poly, exp, _mm512_set1_ps(1.0));
        let sign = _mm512_and_si512(_mm512_castps_si512(z), _mm512_set1_epi32(i32::MIN));
        let erf = _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(erf_abs), sign));
        // 0.5 x (1 + erf)
        let half_x = _mm512_mul_ps(x, _mm512_set1_ps(0.5));
        _mm512_fmadd_ps(half_x, erf, half_x)
    }

    /// GELU over an int8 tile just stored (still in L1). Kept out of line: with GELU inside
    /// the tile (as the f32 kernels have it), the loop over blocks of inputs around the int8
    /// tile's inner loop grew from 210 to 245 instructions, and int8 fell at long batch 32
    /// (interleaved, 4 rounds: 277 224 220 216 sentences/s with this pass, 210 191 198 235
    /// without it).
    #[inline(never)]
    #[target_feature(enable = "avx512f")]
    unsafe fn gelu_rows(dst: *mut f32, stride: usize, rows: usize, width: usize) {
        for r in 0..rows {
            for c in (0..width).step_by(PANEL) {
                unsafe {
                    let d = dst.add(r * stride + c);
                    _mm512_storeu_ps(d, gelu(_mm512_loadu_ps(d)));
                }
            }
        }
    }

    /// The lines a tile that starts from the bias (its first block of inputs) stores, and
    /// the residual's it adds as it stores them, to be asked for one by one while its
    /// products run: `(count, line)`, with `line(i)` the `i`-th. When the output is larger
    /// than L2 (3 MB at a batch of 32 short sentences) those lines are in no cache; without
    /// the prefetches the stores queued for them after the last multiply-add, and the samples
    /// piled up on the first stores after the tile returned: 4.1% of the encoder's at short
    /// batch 32, 2.2% with them. Asked for all at once, before the products, the prefetches
    /// themselves stalled, waiting for fill buffers (2.9% of the samples on them).
    #[inline(always)]
    fn destination_lines<const R: usize, const P: usize>(
        base: Base,
        dst: *const f32,
        stride: usize,
    ) -> (usize, impl Fn(usize) -> *const i8) {
        let (count, residual) = match base {
            Base::Bias { residual, .. } if residual.is_null() => (R * P, residual),
            Base::Bias { residual, .. } => (2 * R * P, residual),
            Base::Dst => (0, std::ptr::null()),
        };
        let line = move |i: usize| {
            let (from, j) = if i < R * P {
                (dst, i)
            } else {
                (residual, i - R * P)
            };
            from.wrapping_add(j / P * stride + j % P * PANEL) as *const i8
        };
        (count, line)
    }

    pub(super) fn f32_avx512(t: &F32Tile) {
        // SAFETY: Isa::f32() saw AVX-512 F; the tile lies inside its buffers (F32Tile).
        unsafe {
            match (t.prefetch, t.gelu) {
                (true, false) => dispatch!(f32_avx512_tile, [true, false], t.rows, t.panels, (t)),
                (false, false) => dispatch!(f32_avx512_tile, [false, false], t.rows, t.panels, (t)),
                (true, true) => dispatch!(f32_avx512_tile, [true, true], t.rows, t.panels, (t)),
                (false, true) => dispatch!(f32_avx512_tile, [false, true], t.rows, t.panels, (t)),
            }
        }
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn f32_avx512_tile<const PF: bool, const G: bool, const R: usize, const P: usize>(
        t: &F32Tile,
    ) {
        let (lines, line) = destination_lines::<R, P>(t.base, t.dst, t.stride);
        let mut acc = [[_mm512_setzero_ps(); P]; R];
        for kk in 0..t.inputs {
            if kk < lines {
                _mm_prefetch::<_MM_HINT_T0>(line(kk));
            }
            let mut w = [_mm512_setzero_ps(); P];
            // With PF, the same inputs of the next group of panels into L2: at one or a few
            // rows the product streams its weights from memory, and these requests overlap the
            // FMAs. (Past the weights' end they are hints that touch nothing.)
            if PF {
                for p in 0..P {
                    _mm_prefetch::<_MM_HINT_T1>(
                        t.b.wrapping_add((P + p) * t.panel_stride + kk * PANEL) as *const i8,
                    );
                }
            }
            for (p, w) in w.iter_mut().enumerate() {
                *w = unsafe { _mm512_loadu_ps(t.b.add(p * t.panel_stride + kk * PANEL)) };
            }
            for (r, acc) in acc.iter_mut().enumerate() {
                let x = _mm512_set1_ps(unsafe { *t.a.add(r * t.lda + kk) });
                for (acc, &w) in acc.iter_mut().zip(&w) {
                    *acc = _mm512_fmadd_ps(x, w, *acc);
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            for (p, &v) in acc.iter().enumerate() {
                unsafe {
                    let at = r * t.stride + p * PANEL;
                    let v = _mm512_add_ps(base_x16(t.base, t.dst, at, p * PANEL), v);
                    // With G, GELU in registers before the store, as in the AVX2 kernel: the
                    // pass over the stored tile it replaces was 2% of the encoder's samples
                    // at a batch of long sentences on an Ice Lake Xeon.
                    let v = if G { gelu(v) } else { v };
                    _mm512_storeu_ps(t.dst.add(at), v);
                }
            }
        }
    }

    pub(super) fn f32_avx2(t: &F32Tile) {
        // 16 ymm registers: one panel (two registers) at a time for up to 6 rows.
        for p in 0..t.panels {
            // SAFETY: Isa::f32() saw AVX2 and FMA; the tile lies inside its buffers.
            unsafe {
                match (t.prefetch, t.gelu) {
                    (true, false) => dispatch!(f32_avx2_tile, [true, false], t.rows, 1, (t, p)),
                    (false, false) => dispatch!(f32_avx2_tile, [false, false], t.rows, 1, (t, p)),
                    (true, true) => dispatch!(f32_avx2_tile, [true, true], t.rows, 1, (t, p)),
                    (false, true) => dispatch!(f32_avx2_tile, [false, true], t.rows, 1, (t, p)),
                }
            }
        }
    }

    /// [`gelu`] on eight lanes, for AVX2 (no `scalef`: 2ⁿ is built in the exponent bits).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn gelu_avx2(x: __m256) -> __m256 {
        let z = _mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::FRAC_1_SQRT_2));
        let a = _mm256_andnot_ps(_mm256_set1_ps(-0.0), z);
        let d = _mm256_fmadd_ps(a, _mm256_set1_ps(0.327_591_1), _mm256_set1_ps(1.0));
        let t0 = _mm256_rcp_ps(d);
        let t = _mm256_mul_ps(t0, _mm256_fnmadd_ps(d, t0, _mm256_set1_ps(2.0)));
        let mut poly = _mm256_set1_ps(1.061_405_4);
        for c in [-1.453_152, 1.421_413_7, -0.284_496_74, 0.254_829_6] {
            poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(c));
        }
        poly = _mm256_mul_ps(poly, t);
        // e^(-a²), its argument clamped as in kernels::exp, so 2ⁿ stays a normal number.
        let e = _mm256_max_ps(
            _mm256_mul_ps(_mm256_sub_ps(_mm256_setzero_ps(), a), a),
            _mm256_set1_ps(-87.0),
        );
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_ps(e, _mm256_set1_ps(std::f32::consts::LOG2_E)),
        );
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_145_75), e);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428_606_8e-6), r);
        let mut p = _mm256_set1_ps(1.0 / 720.0);
        for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
        }
        let biased = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
        let exp = _mm256_mul_ps(p, _mm256_castsi256_ps(_mm256_slli_epi32::<23>(biased)));
        let erf_abs = _mm256_fnmadd_ps(poly, exp, _mm256_set1_ps(1.0));
        let sign = _mm256_and_ps(z, _mm256_set1_ps(-0.0));
        let erf = _mm256_or_ps(erf_abs, sign);
        let half_x = _mm256_mul_ps(x, _mm256_set1_ps(0.5));
        _mm256_fmadd_ps(half_x, erf, half_x)
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn f32_avx2_tile<const PF: bool, const G: bool, const R: usize, const P: usize>(
        t: &F32Tile,
        p: usize,
    ) {
        let b = unsafe { t.b.add(p * t.panel_stride) };
        let a: [*const f32; R] = std::array::from_fn(|r| t.a.wrapping_add(r * t.lda));
        let mut acc = [[_mm256_setzero_ps(); 2]; R];
        // One input of the tile: 12 FMAs on two loads of weights and R broadcasts.
        macro_rules! step {
            ($kk:expr) => {{
                let kk = $kk;
                // The next panel's line into L2, as in the AVX-512 kernel.
                if PF {
                    _mm_prefetch::<_MM_HINT_T1>(
                        b.wrapping_add(t.panel_stride + kk * PANEL) as *const i8
                    );
                }
                let lo = unsafe { _mm256_loadu_ps(b.add(kk * PANEL)) };
                let hi = unsafe { _mm256_loadu_ps(b.add(kk * PANEL + 8)) };
                for (acc, a) in acc.iter_mut().zip(&a) {
                    let x = _mm256_set1_ps(unsafe { *a.add(kk) });
                    acc[0] = _mm256_fmadd_ps(x, lo, acc[0]);
                    acc[1] = _mm256_fmadd_ps(x, hi, acc[1]);
                }
            }};
        }
        // Two inputs per pass: half the loop's own instructions, which at 12 FMAs a pass
        // were a third of what the core had to issue.
        let mut kk = 0;
        while kk + 2 <= t.inputs {
            step!(kk);
            step!(kk + 1);
            kk += 2;
        }
        if kk < t.inputs {
            step!(kk);
        }
        for (r, acc) in acc.iter().enumerate() {
            for (half, &v) in acc.iter().enumerate() {
                unsafe {
                    let col = p * PANEL + half * 8;
                    let at = r * t.stride + col;
                    let v = _mm256_add_ps(base_x8(t.base, t.dst, at, col), v);
                    // With G, GELU on the sums in registers before they are stored: a pass
                    // over the stored tile (as the AVX-512 kernel makes) cost the AVX2 kernel
                    // about 4% of the encoder's time at a batch of long sentences, and its
                    // accumulators, spilled once the loop is done, do not slow the loop.
                    let v = if G { gelu_avx2(v) } else { v };
                    _mm256_storeu_ps(t.dst.add(at), v);
                }
            }
        }
    }

    pub(super) fn int8_avx512(t: &Int8Tile) {
        // SAFETY: Isa::int8() saw AVX-512 F/BW and VNNI; the tile lies inside its buffers.
        unsafe { dispatch!(int8_avx512_tile, t.rows, t.panels, (t)) }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn int8_avx512_tile<const R: usize, const P: usize>(t: &Int8Tile) {
        let (lines, line) = destination_lines::<R, P>(t.base, t.dst, t.stride);
        let per_block = lines.div_ceil(t.blocks.max(1));
        let mut total = [[_mm512_setzero_ps(); P]; R];
        for blk in 0..t.blocks {
            for i in (blk * per_block..(blk + 1) * per_block).take_while(|&i| i < lines) {
                _mm_prefetch::<_MM_HINT_T0>(line(i));
            }
            let at = blk * t.outputs;
            let mut start = [_mm512_setzero_si512(); P];
            for (p, s) in start.iter_mut().enumerate() {
                *s = unsafe {
                    _mm512_loadu_si512(t.neg_shift.as_ptr().add(at + p * PANEL) as *const _)
                };
            }
            let mut acc = [start; R];
            for g in t.groups(blk) {
                let mut w = [_mm512_setzero_si512(); P];
                for (p, w) in w.iter_mut().enumerate() {
                    *w = unsafe {
                        _mm512_loadu_si512(t.b.add(p * t.panel_stride + g * 64) as *const _)
                    };
                }
                for (r, acc) in acc.iter_mut().enumerate() {
                    let x = unsafe { (t.a.add(r * t.lda + g * 4) as *const i32).read_unaligned() };
                    let x = _mm512_set1_epi32(x);
                    for (acc, &w) in acc.iter_mut().zip(&w) {
                        *acc = _mm512_dpbusd_epi32(*acc, x, w);
                    }
                }
            }
            let mut cols = [_mm512_setzero_ps(); P];
            for (p, c) in cols.iter_mut().enumerate() {
                *c = unsafe { _mm512_loadu_ps(t.col_scales.as_ptr().add(at + p * PANEL)) };
            }
            for (r, (total, acc)) in total.iter_mut().zip(&acc).enumerate() {
                let row_scale = _mm512_set1_ps(t.row_scales[r * t.blocks + blk]);
                for ((total, &v), &c) in total.iter_mut().zip(acc).zip(&cols) {
                    let scale = _mm512_mul_ps(row_scale, c);
                    *total = _mm512_fmadd_ps(_mm512_cvtepi32_ps(v), scale, *total);
                }
            }
        }
        for (r, total) in total.iter().enumerate() {
            for (p, &v) in total.iter().enumerate() {
                unsafe {
                    let at = r * t.stride + p * PANEL;
                    let base = base_x16(t.base, t.dst, at, p * PANEL);
                    _mm512_storeu_ps(t.dst.add(at), _mm512_add_ps(base, v));
                }
            }
        }
        if t.gelu {
            unsafe { gelu_rows(t.dst, t.stride, R, P * PANEL) };
        }
    }

    pub(super) fn int8_avxvnni(t: &Int8Tile) {
        for p in 0..t.panels {
            // SAFETY: the weights were packed for AVX-VNNI only on a CPU with AVX2 and
            // AVX-VNNI (Int8Weights::quantize_for); the tile lies inside its buffers.
            unsafe { dispatch!(int8_avxvnni_tile, t.rows, 1, (t, p)) }
        }
    }

    pub(super) fn int8_avx2(t: &Int8Tile) {
        for p in 0..t.panels {
            // SAFETY: Isa::int8() saw AVX2 and FMA; the tile lies inside its buffers.
            unsafe { dispatch!(int8_avx2_tile, t.rows, 1, (t, p)) }
        }
    }

    /// `acc + Σ x·w` over each lane's four byte pairs, in one AVX-VNNI instruction.
    #[inline]
    #[target_feature(enable = "avx2,avxvnni")]
    fn dot_vnni(acc: __m256i, x: __m256i, w: __m256i) -> __m256i {
        _mm256_dpbusd_avx_epi32(acc, x, w)
    }

    /// The same sum with AVX2 alone, for `x` as [`signed`] gives it: `|q|` times the weight
    /// with `q`'s sign, byte pairs into i16 (at most 2 · 127 · 127: never saturates), then
    /// pairs of those into i32.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn dot_bytes(acc: __m256i, (x, q): (__m256i, __m256i), w: __m256i) -> __m256i {
        let pairs = _mm256_maddubs_epi16(x, _mm256_sign_epi8(w, q));
        _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
    }

    /// The activations as `vpdpbusd` takes them: `q + 128`.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn shifted(x: __m256i) -> __m256i {
        x
    }

    /// The activations as [`dot_bytes`] takes them: `(|q|, q)` from `q + 128`.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn signed(x: __m256i) -> (__m256i, __m256i) {
        let q = _mm256_xor_si256(x, _mm256_set1_epi8(i8::MIN));
        (_mm256_abs_epi8(q), q)
    }

    /// Where a block's sums start: `-128 · Σ q[k, j]` when the activations come shifted.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn shift_start(shift: *const i32) -> [__m256i; 2] {
        unsafe {
            [
                _mm256_loadu_si256(shift as *const _),
                _mm256_loadu_si256(shift.add(8) as *const _),
            ]
        }
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn zero_start(_: *const i32) -> [__m256i; 2] {
        [_mm256_setzero_si256(); 2]
    }

    /// One panel (two ymm registers of columns) for `R` rows (4 × 2 integer and 4 × 2 f32
    /// accumulators of the 16 registers), with `$dot` for the byte products, `$x` to prepare
    /// the activations for it and `$start` for the sums' starting values.
    macro_rules! int8_ymm_tile {
        ($name:ident, $features:literal, $dot:ident, $x:ident, $start:ident) => {
            #[target_feature(enable = $features)]
            unsafe fn $name<const R: usize, const P: usize>(t: &Int8Tile, p: usize) {
                let b = unsafe { t.b.add(p * t.panel_stride) };
                let mut total = [[_mm256_setzero_ps(); 2]; R];
                for blk in 0..t.blocks {
                    let at = blk * t.outputs + p * PANEL;
                    let start = unsafe { $start(t.neg_shift.as_ptr().add(at)) };
                    let mut acc = [start; R];
                    for g in t.groups(blk) {
                        let lo = unsafe { _mm256_loadu_si256(b.add(g * 64) as *const _) };
                        let hi = unsafe { _mm256_loadu_si256(b.add(g * 64 + 32) as *const _) };
                        for (r, acc) in acc.iter_mut().enumerate() {
                            let x = unsafe {
                                (t.a.add(r * t.lda + g * 4) as *const i32).read_unaligned()
                            };
                            let x = $x(_mm256_set1_epi32(x));
                            acc[0] = $dot(acc[0], x, lo);
                            acc[1] = $dot(acc[1], x, hi);
                        }
                    }
                    for (r, (total, acc)) in total.iter_mut().zip(&acc).enumerate() {
                        let row_scale = _mm256_set1_ps(t.row_scales[r * t.blocks + blk]);
                        for (half, (total, &v)) in total.iter_mut().zip(acc).enumerate() {
                            let c = unsafe {
                                _mm256_loadu_ps(t.col_scales.as_ptr().add(at + half * 8))
                            };
                            let scale = _mm256_mul_ps(row_scale, c);
                            *total = _mm256_fmadd_ps(_mm256_cvtepi32_ps(v), scale, *total);
                        }
                    }
                }
                for (r, total) in total.iter().enumerate() {
                    for (half, &v) in total.iter().enumerate() {
                        unsafe {
                            let col = p * PANEL + half * 8;
                            let at = r * t.stride + col;
                            let base = base_x8(t.base, t.dst, at, col);
                            _mm256_storeu_ps(t.dst.add(at), _mm256_add_ps(base, v));
                        }
                    }
                }
            }
        };
    }
    int8_ymm_tile!(
        int8_avxvnni_tile,
        "avx2,fma,avxvnni",
        dot_vnni,
        shifted,
        shift_start
    );
    int8_ymm_tile!(int8_avx2_tile, "avx2,fma", dot_bytes, signed, zero_start);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in [-1, 1], every 97th eight times larger.
    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut state = seed.wrapping_mul(2_654_435_761).max(1);
        (0..n)
            .map(|i| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                let v = (state % 20_001) as f32 / 10_000.0 - 1.0;
                if i % 97 == 0 {
                    v * 8.0
                } else {
                    v
                }
            })
            .collect()
    }

    /// Integers in [-127, 127], each block of a row of `width` holding a ±127 so that its
    /// scale is exactly 1.
    fn integers(rows: usize, width: usize, seed: u32) -> Vec<f32> {
        let mut v: Vec<f32> = values(rows * width, seed)
            .iter()
            .map(|x| (x.clamp(-1.0, 1.0) * 127.0).round())
            .collect();
        for (r, row) in v.chunks_exact_mut(width).enumerate() {
            for block in row.chunks_mut(INT8_BLOCK) {
                let at = (r * 7) % block.len();
                block[at] = if r % 2 == 0 { 127.0 } else { -127.0 };
            }
        }
        v
    }

    fn transpose(v: &[f32], rows: usize, cols: usize) -> Vec<f32> {
        let mut t = vec![0f32; v.len()];
        for r in 0..rows {
            for c in 0..cols {
                t[c * rows + r] = v[r * cols + c];
            }
        }
        t
    }

    /// Shapes with partial tiles both ways (13 rows = 6 + 6 + 1, 5 and 7 panels), one bigger
    /// than the parallel threshold.
    const SHAPES: [(usize, usize, usize); 4] =
        [(13, 36, 80), (1, 4, 16), (7, 384, 112), (64, 256, 160)];

    #[test]
    fn every_int8_kernel_gives_the_exact_integer_products() {
        for (isa, vnni) in int8_kernels() {
            for (rows, k, n) in SHAPES {
                // Integer inputs whose scales are 1: the product is exact and known. Row 0 and
                // column 0 at the extremes put every byte pair at the top of the kernels'
                // range (2 · 127 · 127 in vpmaddubsw's i16).
                let mut x = integers(rows, k, 11);
                x[..k].fill(127.0);
                let mut w = transpose(&integers(n, k, 3), n, k);
                for kk in 0..k {
                    w[kk * n] = 127.0;
                }
                let want: Vec<f32> = (0..rows * n)
                    .map(|i| {
                        let (r, j) = (i / n, i % n);
                        (0..k)
                            .map(|kk| x[r * k + kk] as f64 * w[kk * n + j] as f64)
                            .sum::<f64>() as f32
                            + 0.5
                    })
                    .collect();
                let weights = Int8Weights::quantize_with(&w, k, n, isa, vnni).unwrap();
                for threads in [1, 2] {
                    let mut dst = vec![0.5f32; rows * n];
                    weights.accumulate(&x, &mut dst, threads, false);
                    let what = format!("{isa:?} (VNNI {vnni}), {rows}×{k}×{n}, {threads} threads");
                    assert_eq!(dst, want, "{what}");
                }
            }
        }
    }

    /// Starting each tile from the bias (and residual) as the kernels reach it gives what
    /// adding the product to a destination filled with them beforehand gives, bit for bit,
    /// and keeps nothing of what the destination held (NaN here).
    #[test]
    fn a_product_started_from_the_bias_equals_one_added_to_it() {
        type Product = Box<dyn Fn(&mut Vec<f32>, Option<(&[f32], Option<&[f32]>)>)>;
        for (rows, k, n) in SHAPES {
            let x = values(rows * k, 5);
            let w = values(k * n, 9);
            let bias = values(n, 13);
            let residual = values(rows * n, 17);
            let mut products: Vec<(String, Product)> = Vec::new();
            for isa in Isa::f32().with_fallbacks() {
                let weights = F32Weights::pack_for(&w, k, n, isa).unwrap();
                let x = x.clone();
                products.push((
                    format!("f32 {isa:?}"),
                    Box::new(move |d, start| match start {
                        None => {
                            weights.accumulate(&x, d, 2, false);
                        }
                        Some((b, r)) => {
                            weights.compute(&x, b, r, d, 2, false);
                        }
                    }),
                ));
            }
            for (isa, vnni) in int8_kernels() {
                let weights = Int8Weights::quantize_with(&w, k, n, isa, vnni).unwrap();
                let x = x.clone();
                products.push((
                    format!("int8 {isa:?} (VNNI {vnni})"),
                    Box::new(move |d, start| match start {
                        None => {
                            weights.accumulate(&x, d, 2, false);
                        }
                        Some((b, r)) => {
                            weights.compute(&x, b, r, d, 2, false);
                        }
                    }),
                ));
            }
            for (what, product) in &products {
                for residual in [None, Some(&residual[..])] {
                    let mut want: Vec<f32> = (0..rows * n)
                        .map(|i| bias[i % n] + residual.map_or(0.0, |r| r[i]))
                        .collect();
                    product(&mut want, None);
                    let mut got = vec![f32::NAN; 3];
                    got.reserve(rows * n);
                    got.spare_capacity_mut().iter_mut().for_each(|v| {
                        v.write(f32::NAN);
                    });
                    product(&mut got, Some((&bias, residual)));
                    let what = format!("{what}, {rows}×{k}×{n}, residual {}", residual.is_some());
                    assert!(got.iter().all(|v| v.is_finite()), "{what}");
                    assert_eq!(got, want, "{what}");
                }
            }
        }
    }

    /// Every int8 kernel this CPU runs: the ISA and, for AVX2, with or without AVX-VNNI.
    fn int8_kernels() -> Vec<(Isa, bool)> {
        let mut all = Vec::new();
        for isa in Isa::int8().with_fallbacks() {
            if isa == Isa::Avx2 && avx_vnni() {
                all.push((isa, true));
            }
            all.push((isa, false));
        }
        all
    }

    #[test]
    fn int8_stays_close_to_f32_on_ordinary_values() {
        let (rows, k, n) = (64, 256, 160);
        let (x, w) = (values(rows * k, 7), values(k * n, 5));
        for (isa, vnni) in int8_kernels() {
            let mut got = vec![0f32; rows * n];
            Int8Weights::quantize_with(&w, k, n, isa, vnni)
                .unwrap()
                .accumulate(&x, &mut got, 2, false);
            let (mut dot, mut gg, mut ww, mut worst) = (0f64, 0f64, 0f64, 0f32);
            for (i, &g) in got.iter().enumerate() {
                let (r, j) = (i / n, i % n);
                let exact: f32 = (0..k).map(|kk| x[r * k + kk] * w[kk * n + j]).sum();
                dot += (g * exact) as f64;
                gg += (g * g) as f64;
                ww += (exact * exact) as f64;
                worst = worst.max((g - exact).abs());
            }
            let cosine = dot / (gg.sqrt() * ww.sqrt());
            assert!(
                cosine > 0.999,
                "{isa:?} (VNNI {vnni}): cosine to f32 {cosine}"
            );
            assert!(
                worst > 0.0,
                "{isa:?}: no rounding error at all: nothing was quantised"
            );
        }
    }

    #[test]
    fn every_f32_kernel_equals_the_plain_product() {
        // f32 also takes any number of inputs: 131 and 389 leave last blocks of 3 and 5 (after
        // 128 on AVX-512, 384 on AVX2), odd counts, which the AVX2 kernel ends with one input
        // after its pairs; 389 also takes the AVX2 kernel through two blocks.
        for (rows, k, n) in SHAPES.into_iter().chain([(5, 131, 48), (3, 389, 32)]) {
            let (x, w) = (values(rows * k, 17), values(k * n, 19));
            for isa in Isa::f32().with_fallbacks() {
                let weights = F32Weights::pack_for(&w, k, n, isa).unwrap();
                assert_eq!(weights.unpacked(), w);
                for threads in [1, 2] {
                    let mut dst = vec![0.25f32; rows * n];
                    weights.accumulate(&x, &mut dst, threads, false);
                    for (i, &got) in dst.iter().enumerate() {
                        let (r, j) = (i / n, i % n);
                        let want: f64 = 0.25
                            + (0..k)
                                .map(|kk| x[r * k + kk] as f64 * w[kk * n + j] as f64)
                                .sum::<f64>();
                        // f32 sums of k products, in another order than f64's.
                        let tolerance = 1e-5 * (k as f64).sqrt() * 8.0;
                        assert!(
                            (got as f64 - want).abs() < tolerance,
                            "{isa:?} {rows}×{k}×{n} at ({r}, {j}): {got} want {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn packed_weights_start_on_a_cache_line() {
        for len in [1, 16, 1000, 384 * 1536] {
            assert_eq!(Lines::<f32>::zeroed(len).as_ptr() as usize % 64, 0);
            assert_eq!(Lines::<i8>::zeroed(len).as_ptr() as usize % 64, 0);
            assert_eq!(Lines::<i8>::zeroed(len).len(), len);
        }
        let weights = F32Weights::pack(&values(36 * 80, 3), 36, 80).unwrap();
        assert_eq!(weights.packed.as_ptr() as usize % 64, 0);
    }

    /// GELU by its definition, with libm's erf.
    fn exact_gelu(x: f32) -> f32 {
        0.5 * x * (1.0 + libm::erff(x * std::f32::consts::FRAC_1_SQRT_2))
    }

    #[test]
    fn the_vector_gelus_match_the_definition() {
        #[cfg(target_arch = "x86_64")]
        for isa in Isa::f32().with_fallbacks() {
            let xs: Vec<f32> = (-12_000..=12_000).map(|i| i as f32 / 1000.0).collect();
            let mut worst = 0f32;
            for chunk in xs.chunks_exact(16) {
                let mut out = [0f32; 16];
                // SAFETY: Isa::f32() saw AVX-512 F, or AVX2 and FMA.
                unsafe {
                    use std::arch::x86_64::*;
                    match isa {
                        Isa::Avx512 => {
                            let v = x86::gelu(_mm512_loadu_ps(chunk.as_ptr()));
                            _mm512_storeu_ps(out.as_mut_ptr(), v);
                        }
                        Isa::Avx2 => {
                            for half in 0..2 {
                                let v = x86::gelu_avx2(_mm256_loadu_ps(chunk[half * 8..].as_ptr()));
                                _mm256_storeu_ps(out[half * 8..].as_mut_ptr(), v);
                            }
                        }
                        Isa::Portable => continue,
                    }
                }
                for (&x, &g) in chunk.iter().zip(&out) {
                    worst = worst.max((g - exact_gelu(x)).abs());
                }
            }
            assert!(
                worst < 2e-6,
                "{isa:?}: largest difference from erf GELU {worst}"
            );
        }
    }

    #[test]
    fn gelu_inside_the_product_equals_gelu_after_it() {
        // 772 inputs: GELU on the last of several blocks only (three on AVX2, seven on
        // AVX-512).
        for k in [384, 772] {
            gelu_inside_the_product(k);
        }
    }

    fn gelu_inside_the_product(k: usize) {
        let (rows, n) = (13, 112);
        let (x, w) = (values(rows * k, 23), values(k * n, 29));
        let bias = values(n, 31);
        let x = &x;
        type Product<'a> = Box<dyn Fn(&mut [f32], bool) -> bool + 'a>;
        let mut products: Vec<(String, Product)> = Vec::new();
        for isa in Isa::f32().with_fallbacks() {
            let weights = F32Weights::pack_for(&w, k, n, isa).unwrap();
            // From the bias, as the model's FFN does: GELU applies to bias plus product.
            let from_bias = F32Weights::pack_for(&w, k, n, isa).unwrap();
            let bias = bias.clone();
            products.push((
                format!("f32 {isa:?}"),
                Box::new(move |d, g| weights.accumulate(x, d, 2, g)),
            ));
            products.push((
                format!("f32 {isa:?} from the bias"),
                Box::new(move |d, g| {
                    let mut out = Vec::new();
                    let fused = from_bias.compute(x, &bias, None, &mut out, 2, g);
                    d.copy_from_slice(&out);
                    fused
                }),
            ));
        }
        for (isa, vnni) in int8_kernels() {
            let weights = Int8Weights::quantize_with(&w, k, n, isa, vnni).unwrap();
            products.push((
                format!("int8 {isa:?} (VNNI {vnni})"),
                Box::new(move |d, g| weights.accumulate(x, d, 2, g)),
            ));
        }
        for (name, product) in products {
            let mut plain = vec![0.1f32; rows * n];
            assert!(!product(&mut plain, false));
            let mut fused = vec![0.1f32; rows * n];
            if !product(&mut fused, true) {
                continue; // not fused on this CPU: the caller applies GELU
            }
            for (i, (&f, &p)) in fused.iter().zip(&plain).enumerate() {
                assert!(
                    (f - exact_gelu(p)).abs() < 2e-6,
                    "{name} at {i}: {f} vs gelu({p})"
                );
            }
        }
    }

    #[test]
    fn quantised_rows_round_to_the_nearest_step() {
        let x = [0.0, 1.0, -2.0, 0.51, -0.49, 2.0, 0.0, 0.0];
        let (mut q, mut s) = ([0u8; 8], [0f32; 2]);
        quantize_rows(&x, 4, &mut q, &mut s);
        assert_eq!(s[0], 2.0 / 127.0);
        // 1.0 / (2 / 127) = 63.5 → 64 (ties to even); -2 → -127.
        assert_eq!(&q[..4], &[128, 128 + 64, 1, 128 + 32]);
        let zero = [0.0f32; 4];
        quantize_rows(&zero, 4, &mut q[..4], &mut s[..1]);
        assert_eq!((s[0], &q[..4]), (1.0, &[128u8; 4][..]));
    }

    #[test]
    fn the_vector_quantiser_equals_the_portable_one() {
        #[cfg(target_arch = "x86_64")]
        if Isa::int8() == Isa::Avx512 {
            // Whole and partial blocks, rows of zeros, and magnitudes from tiny to large.
            for k in [4, 20, 36, 384, 1540] {
                let rows = 5;
                let mut x = values(rows * k, 11);
                for (i, v) in x.iter_mut().enumerate() {
                    *v *= [1e-3, 1.0, 40.0][i % 3];
                }
                x[k..2 * k].fill(0.0);
                let blocks = k.div_ceil(INT8_BLOCK);
                let (mut q, mut s) = (vec![0u8; rows * k], vec![0f32; rows * blocks]);
                quantize_rows(&x, k, &mut q, &mut s);
                let (mut vq, mut vs) = (vec![0u8; rows * k], vec![0f32; rows * blocks]);
                // SAFETY: Isa::int8() found AVX-512 F and BW; the shapes are as it needs.
                unsafe { x86::quantize_rows_avx512(&x, k, &mut vq, &mut vs) };
                assert_eq!(s, vs, "scales, k = {k}");
                assert_eq!(q, vq, "bytes, k = {k}");
            }
        }
    }

    #[test]
    fn shapes_the_kernels_cannot_take_are_refused() {
        assert!(Int8Weights::quantize(&[0.0; 3 * 16], 3, 16).is_err());
        assert!(Int8Weights::quantize(&[0.0; 4 * 8], 4, 8).is_err());
        assert!(F32Weights::pack(&[0.0; 4], 4, 16).is_err());
    }
}
