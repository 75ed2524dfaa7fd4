//! CPU kernels for the inference path of the BERT encoder, as candle custom ops. Candle's own
//! versions are scalar: `gelu_erf` calls libm's `erff` once per element and the softmax calls
//! `expf` per element, so on MiniLM they cost more than the matmuls they sit between. These
//! versions use branch-free approximations that LLVM vectorises (compiled for AVX-512 and
//! AVX2 and picked at run time), and split large inputs across gemm's rayon pool.
//!
//! Training never uses them: they have no backward pass (see `Mode` in [`super::model`]).

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use gemm::Parallelism;
use multiversion::multiversion;
use rayon::prelude::*;

use super::packed::{F32Weights, Int8Weights, PackedLayer};

/// Below this many elements an op runs on the calling thread; above, rows are shared out.
const PARALLEL_ELEMENTS: usize = 1 << 16;

/// `e^x` for f32, relative error below 5e-7; inputs are clamped to [-87, 88], so a masked
/// score gives about 1.6e-38, not 0. Range reduction to `r` in [-ln2/2, ln2/2], a degree-6 Taylor
/// polynomial, then the exponent set by bit arithmetic: no branches, so loops vectorise.
#[inline(always)]
fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    let n = (x * std::f32::consts::LOG2_E).round();
    // ln 2 in two parts, so r = x - n ln2 keeps its precision.
    let r = x - n * 0.693_145_75 - n * 1.428_606_8e-6;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // SAFETY: n is a whole number in [-126, 127] (x was clamped), so it fits an i32. The
    // unchecked conversion is one vector instruction; `as i32` saturates and handles NaN,
    // which LLVM does lane by lane, and that had kept the softmax scalar.
    let n = unsafe { n.to_int_unchecked::<i32>() };
    p * f32::from_bits(((n + 127) as u32) << 23)
}

/// `erf(x)` by Abramowitz and Stegun's formula 7.1.26 (absolute error ≤ 1.5e-7).
#[inline(always)]
fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152 + t * 1.061_405_4))));
    let y = 1.0 - poly * exp(-a * a);
    y.copysign(x)
}

/// Softmax of each `len`-long row of `src` after scaling by `scale`. Everything runs 16
/// lanes at a time, the last partial block of a row too (padded): the maximum and the sum
/// are kept in lanes, since LLVM does not reorder a float reduction by itself, and the
/// exponentials of a row's tail would otherwise go through LLVM's narrower and scalar
/// epilogues, which on MiniLM's rows of a few dozen tokens were most of the work.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx512dq+avx512bw", "x86_64+avx2+fma"))]
fn softmax_rows(src: &[f32], len: usize, scale: f32, dst: &mut [f32]) {
    const LANES: usize = 16;
    for (s, d) in src.chunks_exact(len).zip(dst.chunks_exact_mut(len)) {
        let mut lanes = [f32::NEG_INFINITY; LANES];
        let blocks = s.chunks_exact(LANES);
        let mut tail = [f32::NEG_INFINITY; LANES];
        tail[..blocks.remainder().len()].copy_from_slice(blocks.remainder());
        for block in blocks
            .map(|b| <&[f32; LANES]>::try_from(b).expect("a block"))
            .chain([&tail])
        {
            for (m, &x) in lanes.iter_mut().zip(block) {
                *m = if x > *m { x } else { *m };
            }
        }
        let max = fold_lanes(lanes, |a, b| if a > b { a } else { b }) * scale;
        // The padding's lanes (-inf, clamped to -87 by `exp`) are computed with the rest of
        // the tail and zeroed before they are summed.
        let mut sums = [0f32; LANES];
        // The first `keep` lanes of e^(x·scale - max) into `to` and the sums, the rest zeroed.
        let mut exp_block = |from: &[f32; LANES], to: &mut [f32; LANES], keep: usize| {
            for (i, ((t, &x), acc)) in to.iter_mut().zip(from).zip(&mut sums).enumerate() {
                let e = exp(x * scale - max);
                *t = if i < keep { e } else { 0.0 };
                *acc += *t;
            }
        };
        let full = len / LANES * LANES;
        for (from, to) in s[..full]
            .chunks_exact(LANES)
            .zip(d[..full].chunks_exact_mut(LANES))
        {
            exp_block(
                from.try_into().expect("a block"),
                to.try_into().expect("a block"),
                LANES,
            );
        }
        let rest = len - full;
        if rest > 0 {
            // Zeroed rather than summed and taken off afterwards, which was a scalar loop of
            // up to 15 dependent additions.
            let mut tail_out = [0f32; LANES];
            exp_block(&tail, &mut tail_out, rest);
            d[full..].copy_from_slice(&tail_out[..rest]);
        }
        let inv = 1.0 / fold_lanes(sums, |a, b| a + b);
        for d in d.iter_mut() {
            *d *= inv;
        }
    }
}

/// The sum of `values`, kept in 16 lanes so that it vectorises (see [`softmax_rows`]).
#[inline(always)]
fn lane_sum(values: &[f32], mut term: impl FnMut(f32) -> f32) -> f32 {
    const LANES: usize = 16;
    let mut sums = [0f32; LANES];
    let mut blocks = values.chunks_exact(LANES);
    for block in &mut blocks {
        for (acc, &x) in sums.iter_mut().zip(block) {
            *acc += term(x);
        }
    }
    for (acc, &x) in sums.iter_mut().zip(blocks.remainder()) {
        *acc += term(x);
    }
    fold_lanes(sums, |a, b| a + b)
}

/// Folds the 16 lanes of a reduction kept in lanes (see [`softmax_rows`]) into one value by
/// halves, 8 pairs, then 4, 2 and 1, which LLVM turns into a few shuffles. A fold from left
/// to right is 16 dependent scalar steps, about as long as the vector work around it on the
/// softmax's rows of a few dozen scores and on a block of 32 inputs to quantise. (The
/// softmax's AVX-512 version went from 40 scalar maxima and sums to 16.)
#[inline(always)]
pub(super) fn fold_lanes(mut lanes: [f32; 16], op: impl Fn(f32, f32) -> f32) -> f32 {
    for i in 0..8 {
        lanes[i] = op(lanes[i], lanes[i + 8]);
    }
    for i in 0..4 {
        lanes[i] = op(lanes[i], lanes[i + 4]);
    }
    for i in 0..2 {
        lanes[i] = op(lanes[i], lanes[i + 2]);
    }
    op(lanes[0], lanes[1])
}

/// Layer normalisation of each row of `src` (as long as `weight`): the mean and the
/// variance (two passes, so a large mean costs no precision), then `weight`, `bias`.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx512dq+avx512bw", "x86_64+avx2+fma"))]
fn layer_norm_rows(src: &[f32], weight: &[f32], bias: &[f32], eps: f32, dst: &mut [f32]) {
    let dim = weight.len();
    for (s, d) in src.chunks_exact(dim).zip(dst.chunks_exact_mut(dim)) {
        let mean = lane_sum(s, |x| x) / dim as f32;
        let var = lane_sum(s, |x| (x - mean) * (x - mean)) / dim as f32;
        let inv = 1.0 / (var + eps).sqrt();
        for (((d, &x), &w), &b) in d.iter_mut().zip(s).zip(weight).zip(bias) {
            *d = (x - mean) * inv * w + b;
        }
    }
}

/// BERT's LayerNorm for serving, over the last dimension. Candle's CPU kernel is scalar and
/// shares out every row as its own rayon task; this one vectorises, and splits only inputs
/// large enough for a second thread to pay.
#[derive(Debug, Clone)]
pub struct LayerNormKernel {
    weight: Vec<f32>,
    bias: Vec<f32>,
    eps: f32,
}

impl LayerNormKernel {
    pub fn new(weight: &Tensor, bias: &Tensor, eps: f32) -> Result<Self> {
        let values = |t: &Tensor| t.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>();
        let (weight, bias) = (values(weight)?, values(bias)?);
        if weight.len() != bias.len() || weight.is_empty() {
            candle_core::bail!(
                "layer norm: {} weights and {} biases",
                weight.len(),
                bias.len()
            );
        }
        Ok(LayerNormKernel { weight, bias, eps })
    }

    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        xs.contiguous()?.apply_op1_no_bwd(self)
    }
}

impl CustomOp1 for LayerNormKernel {
    fn name(&self) -> &'static str {
        "layer-norm"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let src = contiguous(storage, layout, self.name())?;
        let dim = self.weight.len();
        if layout.shape().dims().last() != Some(&dim) {
            candle_core::bail!(
                "layer norm: input {:?} does not end in {dim} features",
                layout.shape()
            );
        }
        let mut dst = vec![0f32; src.len()];
        let norm = |(s, d): (&[f32], &mut [f32])| {
            layer_norm_rows(s, &self.weight, &self.bias, self.eps, d)
        };
        let threads = rayon::current_num_threads();
        if src.len() < PARALLEL_ELEMENTS || threads < 2 {
            norm((src, &mut dst));
        } else {
            let rows = (src.len() / dim).div_ceil(threads * 4);
            src.par_chunks(rows * dim)
                .zip(dst.par_chunks_mut(rows * dim))
                .for_each(norm);
        }
        Ok((CpuStorage::F32(dst), layout.shape().clone()))
    }
}

fn contiguous<'a>(storage: &'a CpuStorage, layout: &Layout, op: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("{op}: only f32 is supported, got {:?}", storage.dtype());
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{op}: the input must be contiguous"),
    }
}

/// A matrix operand of [`product`]: its first element and the steps between rows and
/// between columns.
#[derive(Clone, Copy)]
struct View {
    ptr: *const f32,
    row: isize,
    col: isize,
}

impl View {
    /// Row-major rows `stride` apart.
    fn rows(ptr: *const f32, stride: usize) -> View {
        View {
            ptr,
            row: stride as isize,
            col: 1,
        }
    }
}

/// `dst = lhs · rhs`, or `dst += lhs · rhs` when `accumulate`; `dst` is `m × n`, row-major
/// with rows `dst_stride` apart.
///
/// # Safety
/// Through their strides `lhs` must address `m × k` readable values, `rhs` `k × n`, and `dst`
/// `m × n` writable ones.
#[allow(clippy::too_many_arguments)]
unsafe fn product(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_stride: usize,
    accumulate: bool,
    lhs: View,
    rhs: View,
    parallelism: Parallelism,
) {
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_stride as isize,
        accumulate,
        lhs.ptr,
        lhs.col,
        lhs.row,
        rhs.ptr,
        rhs.col,
        rhs.row,
        if accumulate { 1.0 } else { 0.0 },
        1.0,
        false,
        false,
        false,
        parallelism,
    )
}

/// Scaled dot-product attention of packed sequences (see `Packed` in the tokenizer module):
/// `qkv` is `[tokens, 3 × hidden]` (queries, keys, values side by side) and sequence `i` is
/// rows `bounds[i]..bounds[i + 1]`. No sequence sees another's tokens and there is no
/// padding to mask. Each (sequence, head) is one task, two small single-threaded GEMMs
/// around a softmax, and the tasks are spread over the rayon pool; candle would run the same
/// products as hundreds of tiny GEMMs, each parallelised on its own and waited for.
struct PackedAttention<'a> {
    bounds: &'a [usize],
    heads: usize,
}

impl PackedAttention<'_> {
    /// One task: the context of `head` over rows `start..end`, written into `out`
    /// (`[tokens, hidden]`) at those rows and the head's columns; `scratch` holds the scores
    /// and probabilities, and is kept from one task to the next.
    ///
    /// # Safety
    /// `out` addresses `end × hidden` writable values, and no other task writes these rows of
    /// the head's columns while this one runs.
    unsafe fn task(
        &self,
        qkv: &[f32],
        width: usize,
        (start, end, head): (usize, usize, usize),
        out: *mut f32,
        scratch: &mut Vec<f32>,
    ) {
        let hidden = width / 3;
        let head_dim = hidden / self.heads;
        let len = end - start;
        let rows = &qkv[start * width..end * width];
        let q = &rows[head * head_dim..];
        let k = &rows[hidden + head * head_dim..];
        let v = &rows[2 * hidden + head * head_dim..];
        scratch.clear();
        scratch.resize(2 * len * len, 0.0);
        let (scores, probs) = scratch.split_at_mut(len * len);
        let rows_of = |m: &[f32]| View::rows(m.as_ptr(), width);
        // SAFETY: q, k and v are read as `len` rows `width` apart of `head_dim` contiguous
        // columns, starting inside `rows` at offsets below `width - head_dim + 1`, so the last
        // row ends within it; `scores` is len × len.
        unsafe {
            // scores[i, j] = q[i] · k[j]: k read transposed.
            let k_t = View {
                ptr: k.as_ptr(),
                row: 1,
                col: width as isize,
            };
            product(
                len,
                len,
                head_dim,
                scores.as_mut_ptr(),
                len,
                false,
                rows_of(q),
                k_t,
                Parallelism::None,
            );
        }
        softmax_rows(scores, len, 1.0 / (head_dim as f32).sqrt(), probs);
        // SAFETY: as above; probs is len × len, and the destination, rows start..end of the
        // head's head_dim columns `hidden` apart, is inside `out` and this task's (caller).
        unsafe {
            product(
                len,
                head_dim,
                len,
                out.add(start * hidden + head * head_dim),
                hidden,
                false,
                View::rows(probs.as_ptr(), len),
                rows_of(v),
                Parallelism::None,
            );
        }
    }
}

/// The output of the attention tasks, each writing its own rows × columns.
#[derive(Clone, Copy)]
struct Shared(*mut f32);
// SAFETY: the tasks write disjoint parts (see `PackedAttention::task`).
unsafe impl Sync for Shared {}
unsafe impl Send for Shared {}

impl Shared {
    /// The pointer (a method, so that closures capture the `Sync` wrapper, not its field).
    fn get(self) -> *mut f32 {
        self.0
    }
}

impl CustomOp1 for PackedAttention<'_> {
    fn name(&self) -> &'static str {
        "packed-attention"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let qkv = contiguous(storage, layout, self.name())?;
        let (tokens, width) = layout.shape().dims2()?;
        let heads = self.heads;
        if width % (3 * heads) != 0 || self.bounds.last() != Some(&tokens) {
            candle_core::bail!(
                "{}: qkv {:?} does not fit {heads} heads and sequence bounds ending at {:?}",
                self.name(),
                layout.shape(),
                self.bounds.last()
            );
        }
        // The bounds are increasing (the tokenizer's packing), so the tasks' rows never overlap.
        if self.bounds.windows(2).any(|w| w[0] > w[1]) {
            candle_core::bail!("{}: sequence bounds out of order", self.name());
        }
        let (hidden, head_dim) = (width / 3, width / 3 / heads);
        let tasks: Vec<(usize, usize, usize)> = self
            .bounds
            .windows(2)
            .flat_map(|w| (0..heads).map(move |h| (w[0], w[1], h)))
            .collect();
        let work: usize = tasks.iter().map(|(s, e, _)| (e - s) * (e - s)).sum();
        let mut out = vec![0f32; tokens * hidden];
        let shared = Shared(out.as_mut_ptr());
        // SAFETY: `out` is tokens × hidden, and each task writes its own sequence's rows of
        // its own head's columns.
        let run = |scratch: &mut Vec<f32>, &task: &(usize, usize, usize)| unsafe {
            self.task(qkv, width, task, shared.get(), scratch)
        };
        if work * head_dim < PARALLEL_ELEMENTS || rayon::current_num_threads() < 2 {
            let mut scratch = Vec::new();
            tasks.iter().for_each(|task| run(&mut scratch, task));
        } else {
            tasks.par_iter().for_each_init(Vec::new, run);
        }
        Ok((CpuStorage::F32(out), Shape::from_dims(&[tokens, hidden])))
    }
}

/// The attention context `[tokens, hidden]` of packed sequences from their fused
/// projection `qkv` (`[tokens, 3 × hidden]`); sequence `i` is rows `bounds[i]..bounds[i + 1]`.
pub fn packed_attention(qkv: &Tensor, bounds: &[usize], heads: usize) -> Result<Tensor> {
    qkv.contiguous()?
        .apply_op1_no_bwd(&PackedAttention { bounds, heads })
}

/// Exact (erf) GELU, BERT's `hidden_act: gelu`, in place.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx512dq+avx512bw", "x86_64+avx2+fma"))]
fn gelu_in_place(values: &mut [f32]) {
    for x in values.iter_mut() {
        *x = 0.5 * *x * (1.0 + erf(*x * std::f32::consts::FRAC_1_SQRT_2));
    }
}

/// A dense layer for serving: `x · Wᵀ + b`, plus an optional residual and GELU, as one GEMM
/// into a destination that already holds the bias (and residual) rows. Candle would add the
/// bias and the residual in two more passes, each on its own thread pool, whose workers
/// spin against gemm's on a small machine.
///
/// The weights are packed at load for the microkernels of [`super::packed`] when the shape
/// allows (outputs a multiple of 16: every real BERT); other shapes go through `gemm`.
/// [`quantize_int8`](Self::quantize_int8) swaps them for int8 ones; the bias, residual and
/// GELU stay the same.
pub struct DenseKernel {
    weights: Weights,
    bias: Vec<f32>,
    inputs: usize,
}

enum Weights {
    Packed(F32Weights),
    Int8(Int8Weights),
    /// `Wᵀ`, row-major `[inputs, outputs]`, for `gemm`.
    Plain(Vec<f32>),
}

impl DenseKernel {
    /// From `Wᵀ` (`[inputs, outputs]`) and the bias (`[outputs]`).
    pub fn new(weight_t: &Tensor, bias: &Tensor) -> Result<Self> {
        let (inputs, outputs) = weight_t.dims2()?;
        let bias = bias.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>()?;
        if bias.len() != outputs {
            candle_core::bail!(
                "a dense layer's bias has {} values for {outputs} outputs",
                bias.len()
            );
        }
        let weight_t = weight_t
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let weights = match F32Weights::pack(&weight_t, inputs, outputs) {
            Ok(packed) => Weights::Packed(packed),
            Err(_) => Weights::Plain(weight_t),
        };
        Ok(DenseKernel {
            weights,
            bias,
            inputs,
        })
    }

    /// Quantises the weights to int8 (needs `inputs` a multiple of 4, outputs of 16).
    pub fn quantize_int8(&mut self) -> Result<()> {
        let weight_t = match &self.weights {
            Weights::Int8(_) => return Ok(()),
            Weights::Packed(packed) => packed.unpacked(),
            Weights::Plain(w) => w.clone(),
        };
        let int8 = Int8Weights::quantize(&weight_t, self.inputs, self.outputs())
            .map_err(candle_core::Error::Msg)?;
        self.weights = Weights::Int8(int8);
        Ok(())
    }

    pub fn outputs(&self) -> usize {
        self.bias.len()
    }

    /// `rows` rows of the bias, plus `residual` when given.
    fn start(&self, rows: usize, residual: Option<&[f32]>) -> Vec<f32> {
        let n = self.outputs();
        let mut dst = Vec::with_capacity(rows * n);
        match residual {
            Some(residual) => {
                for row in residual.chunks_exact(n) {
                    dst.extend(row.iter().zip(&self.bias).map(|(r, b)| r + b));
                }
            }
            None => {
                for _ in 0..rows {
                    dst.extend_from_slice(&self.bias);
                }
            }
        }
        dst
    }

    fn threads() -> usize {
        rayon::current_num_threads()
    }

    fn finish(dst: &mut [f32], gelu: bool) {
        if !gelu {
            return;
        }
        let threads = Self::threads();
        if dst.len() < PARALLEL_ELEMENTS || threads < 2 {
            gelu_in_place(dst);
        } else {
            let per = dst.len().div_ceil(threads * 4);
            dst.par_chunks_mut(per).for_each(gelu_in_place);
        }
    }

    fn run(&self, x: &[f32], residual: Option<&[f32]>, gelu: bool) -> Vec<f32> {
        let (k, n) = (self.inputs, self.outputs());
        let rows = x.len() / k;
        let threads = Self::threads();
        // The packed kernels take each tile's bias and residual as they reach it.
        let mut dst = Vec::new();
        let gelu_done = match &self.weights {
            Weights::Packed(w) => w.compute(x, &self.bias, residual, &mut dst, threads, gelu),
            Weights::Int8(w) => w.compute(x, &self.bias, residual, &mut dst, threads, gelu),
            Weights::Plain(w) => {
                dst = self.start(rows, residual);
                let parallelism = if threads > 1 {
                    Parallelism::Rayon(threads)
                } else {
                    Parallelism::None
                };
                // SAFETY: dst is rows × n, x is rows × k and w is k × n, all row-major.
                unsafe {
                    let (x, w) = (View::rows(x.as_ptr(), k), View::rows(w.as_ptr(), n));
                    product(rows, n, k, dst.as_mut_ptr(), n, true, x, w, parallelism);
                }
                false
            }
        };
        Self::finish(&mut dst, gelu && !gelu_done);
        dst
    }

    /// `xs` (`[..., inputs]`) through the layer; `residual` (shaped like the output) is
    /// added, then GELU applied when `gelu`.
    pub fn forward(&self, xs: &Tensor, residual: Option<&Tensor>, gelu: bool) -> Result<Tensor> {
        let xs = xs.contiguous()?;
        let op = DenseOp { kernel: self, gelu };
        match residual {
            Some(r) => xs.apply_op2_no_bwd(&r.contiguous()?, &op),
            None => xs.apply_op1_no_bwd(&op),
        }
    }
}

/// The dense layer as a candle op.
struct DenseOp<'a> {
    kernel: &'a DenseKernel,
    gelu: bool,
}

impl DenseOp<'_> {
    fn output_shape(&self, layout: &Layout) -> Result<Shape> {
        let mut dims = layout.shape().dims().to_vec();
        match dims.last_mut() {
            Some(last) if *last == self.kernel.inputs => *last = self.kernel.outputs(),
            _ => candle_core::bail!(
                "dense layer: input {:?} does not end in {} features",
                layout.shape(),
                self.kernel.inputs
            ),
        }
        Ok(Shape::from_dims(&dims))
    }

    fn apply(&self, x: &[f32], residual: Option<&[f32]>) -> Vec<f32> {
        self.kernel.run(x, residual, self.gelu)
    }
}

impl CustomOp1 for DenseOp<'_> {
    fn name(&self) -> &'static str {
        "fused-dense"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let shape = self.output_shape(layout)?;
        let x = contiguous(storage, layout, "fused-dense")?;
        Ok((CpuStorage::F32(self.apply(x, None)), shape))
    }
}

impl CustomOp2 for DenseOp<'_> {
    fn name(&self) -> &'static str {
        "fused-dense-residual"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
        residual: &CpuStorage,
        residual_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let shape = self.output_shape(layout)?;
        if residual_layout.shape() != &shape {
            candle_core::bail!(
                "dense layer: residual {:?} does not match the output {shape:?}",
                residual_layout.shape()
            );
        }
        let x = contiguous(storage, layout, "fused-dense")?;
        let residual = contiguous(residual, residual_layout, "fused-dense")?;
        Ok((CpuStorage::F32(self.apply(x, Some(residual))), shape))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, D};

    fn max_difference(got: &[f32], want: &[f32]) -> f32 {
        assert_eq!(got.len(), want.len());
        got.iter()
            .zip(want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max)
    }

    #[test]
    fn the_approximations_match_libm() {
        for i in -4000..=4000 {
            let x = i as f32 / 400.0;
            let want = x.exp();
            assert!(
                ((exp(x) - want) / want).abs() < 5e-7,
                "exp({x}) = {} want {want}",
                exp(x)
            );
            let erf_want = libm::erff(x);
            assert!(
                (erf(x) - erf_want).abs() < 1e-6,
                "erf({x}) = {} want {erf_want}",
                erf(x)
            );
        }
        assert!(exp(-200.0) < 2e-38);
        assert!(exp(100.0).is_finite());
    }

    #[test]
    fn gelu_equals_candles_exact_gelu() {
        let xs = Tensor::randn(0f32, 3.0, 10_000, &Device::Cpu).unwrap();
        let want = xs.gelu_erf().unwrap().to_vec1::<f32>().unwrap();
        let mut got = xs.to_vec1::<f32>().unwrap();
        gelu_in_place(&mut got);
        let diff = max_difference(&got, &want);
        assert!(diff < 2e-6, "max difference {diff}");
    }

    #[test]
    fn layer_norm_equals_candles() {
        let device = Device::Cpu;
        // Rows with a large mean and one outlier channel, as BERT's hidden states have.
        let xs = (Tensor::randn(0f32, 2.0, (300, 384), &device).unwrap() + 40.0).unwrap();
        let xs = xs
            .slice_assign(
                &[0..300, 7..8],
                &Tensor::full(-250f32, (300, 1), &device).unwrap(),
            )
            .unwrap();
        let weight = Tensor::randn(1f32, 0.2, 384, &device).unwrap();
        let bias = Tensor::randn(0f32, 0.2, 384, &device).unwrap();
        let want = candle_nn::ops::layer_norm_slow(&xs, &weight, &bias, 1e-12)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        // 300 rows take the parallel path, one row the serial one.
        for rows in [300, 1] {
            let input = xs.narrow(0, 0, rows).unwrap();
            let got = LayerNormKernel::new(&weight, &bias, 1e-12)
                .unwrap()
                .forward(&input)
                .unwrap();
            assert_eq!(got.dims(), &[rows, 384]);
            let got = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let diff = max_difference(&got, &want[..got.len()]);
            assert!(diff < 1e-4, "{rows} rows: max difference {diff}");
        }
    }

    #[test]
    fn softmax_rows_equals_candles_softmax() {
        let device = Device::Cpu;
        // Rows shorter than a block, whole blocks only, and blocks with a tail.
        for len in [5, 16, 37, 64] {
            let scores = Tensor::randn(0f32, 4.0, (6, len), &device).unwrap();
            let want = candle_nn::ops::softmax(&(&scores * 0.25).unwrap(), D::Minus1)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let src = scores.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let mut got = vec![0f32; src.len()];
            softmax_rows(&src, len, 0.25, &mut got);
            let diff = max_difference(&got, &want);
            assert!(diff < 1e-6, "rows of {len}: max difference {diff}");
        }
    }
}
