//! The serving path of the tagger, without a tensor library: one short sentence is a few
//! thousand multiply-adds per character, far less than the cost of dispatching candle ops.
//! The input projection of each LSTM is folded into a per-character table at load time
//! (embedding · W_ihᵀ + biases), so a step is one table row plus h · W_hhᵀ.
//!
//! That recurrent product is the whole cost: 4H × H multiply-adds per character and
//! direction, on weights (64 KB at H = 64) that stream from L2 at every step. Its kernels keep
//! a whole row of gates in registers (16 zmm on AVX-512, 12 ymm at a time on AVX2) while the
//! weights go by once, one fused multiply-add per weight; the portable loop that LLVM made of
//! it loaded and stored every gate again for each of the H inputs. The cell's nonlinearities
//! are compiled for AVX-512 and AVX2+FMA as well as the baseline, and the output layer runs
//! on the encoder's packed dense kernels. All chosen at run time ([`Isa::f32`]).
//! Inference only: it never trains, and its outputs must stay equal to the training network's
//! (the test that checks it lives beside that network, in `crate::train`).

use std::cell::RefCell;

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use multiversion::multiversion;

use super::config::TaggerConfig;
use super::crf::{Crf, ViterbiScratch};
use crate::models::bert::packed::{F32Weights, Isa, Lines, PackedLayer, PANEL};

/// Gate rows and output rows are padded with zeros to whole vectors of this many lanes.
const LANES: usize = PANEL;

/// One LSTM direction, laid out for the step loop.
struct Direction {
    /// `[vocab, G]`: the gate pre-activations each character contributes (G is 4H rounded up
    /// to [`LANES`]; gates i, f, g, o at columns 0, H, 2H, 3H). Each row starts on a cache
    /// line, as G is a whole number of 64-byte vectors.
    input: Lines<f32>,
    /// `[H, G]`: W_hh transposed, padded like `input`, its rows on cache lines too.
    recurrent: Lines<f32>,
}

pub struct FastTagger {
    hidden: usize,
    /// G: gate columns per step.
    width: usize,
    vocab: usize,
    tags: usize,
    isa: Isa,
    forward: Direction,
    backward: Direction,
    /// The output layer, `[2H, tags rounded up to LANES]`.
    output: F32Weights,
    output_bias: Vec<f32>,
    crf: Crf,
}

/// Buffers reused by every call on a thread.
#[derive(Default)]
pub struct Scratch {
    /// `[len, 2H]`: each position's forward then backward hidden state.
    states: Vec<f32>,
    gates: Vec<f32>,
    c: Vec<f32>,
    /// `[len, padded tags]`, as the output layer writes them.
    scores: Vec<f32>,
    /// `[len, tags]`.
    emissions: Vec<f32>,
    viterbi: ViterbiScratch,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

fn matrix(t: &Tensor) -> Result<Vec<Vec<f32>>> {
    t.to_vec2::<f32>()
}

impl FastTagger {
    /// Reads the weights of a `BiLstmCrf` (from a checkpoint, or the `VarMap` a network was
    /// trained in) and folds them into the serving layout.
    pub fn load(cfg: &TaggerConfig, vb: &VarBuilder) -> Result<Self> {
        let (v, e, h, t) = (
            cfg.vocab_size,
            cfg.embedding_dim,
            cfg.hidden_size,
            cfg.tags.len(),
        );
        let width = (4 * h).next_multiple_of(LANES);
        let embedding = matrix(&vb.get((v, e), "embedding.weight")?)?;
        let direction = |suffix: &str| -> Result<Direction> {
            let w_ih = matrix(&vb.get((4 * h, e), &format!("lstm.weight_ih_l0{suffix}"))?)?;
            let w_hh = matrix(&vb.get((4 * h, h), &format!("lstm.weight_hh_l0{suffix}"))?)?;
            let b_ih = vb
                .get(4 * h, &format!("lstm.bias_ih_l0{suffix}"))?
                .to_vec1::<f32>()?;
            let b_hh = vb
                .get(4 * h, &format!("lstm.bias_hh_l0{suffix}"))?
                .to_vec1::<f32>()?;
            let mut input = Lines::zeroed(v * width);
            for (row, out) in embedding.iter().zip(input.chunks_exact_mut(width)) {
                for g in 0..4 * h {
                    let dot: f32 = w_ih[g].iter().zip(row).map(|(w, x)| w * x).sum();
                    out[g] = dot + b_ih[g] + b_hh[g];
                }
            }
            let mut recurrent = Lines::zeroed(h * width);
            for g in 0..4 * h {
                for k in 0..h {
                    recurrent[k * width + g] = w_hh[g][k];
                }
            }
            Ok(Direction { input, recurrent })
        };
        let padded_tags = t.next_multiple_of(LANES);
        let w_out = matrix(&vb.get((t, 2 * h), "output.weight")?)?;
        let mut output = vec![0.0; 2 * h * padded_tags];
        for (j, row) in w_out.iter().enumerate() {
            for (k, &w) in row.iter().enumerate() {
                output[k * padded_tags + j] = w;
            }
        }
        let mut output_bias = vb.get(t, "output.bias")?.to_vec1::<f32>()?;
        output_bias.resize(padded_tags, 0.0);
        let isa = Isa::f32();
        let crf = vb.pp("crf");
        Ok(FastTagger {
            hidden: h,
            width,
            vocab: v,
            tags: t,
            isa,
            forward: direction("")?,
            backward: direction("_reverse")?,
            output: F32Weights::pack_for(&output, 2 * h, padded_tags, isa)
                .map_err(candle_core::Error::msg)?,
            output_bias,
            crf: Crf {
                tags: t,
                transitions: crf.get((t, t), "transitions")?.flatten_all()?.to_vec1()?,
                start: crf.get(t, "start")?.to_vec1()?,
                end: crf.get(t, "end")?.to_vec1()?,
            },
        })
    }

    pub fn tags(&self) -> usize {
        self.tags
    }

    /// Emission scores `[len, tags]` of one sequence of ids (each < vocab size).
    pub fn emissions(&self, ids: &[u32]) -> Vec<f32> {
        SCRATCH.with(|s| {
            let s = &mut *s.borrow_mut();
            self.run(ids, s);
            s.emissions.clone()
        })
    }

    /// The best tag path of one sequence of ids.
    pub fn decode(&self, ids: &[u32]) -> Vec<usize> {
        if ids.is_empty() {
            return Vec::new();
        }
        SCRATCH.with(|s| {
            let s = &mut *s.borrow_mut();
            self.run(ids, s);
            let Scratch {
                emissions, viterbi, ..
            } = s;
            self.crf.viterbi(emissions, viterbi).1
        })
    }

    fn run(&self, ids: &[u32], s: &mut Scratch) {
        debug_assert!(ids.iter().all(|&i| (i as usize) < self.vocab));
        let len = ids.len();
        s.states.resize(len * 2 * self.hidden, 0.0);
        s.gates.resize(self.width, 0.0);
        s.c.resize(self.hidden, 0.0);
        self.lstm(&self.forward, ids, false, s);
        self.lstm(&self.backward, ids, true, s);
        // Emissions = [h_fwd; h_bwd] · W_outᵀ + b, on rows padded to whole vectors.
        self.output
            .compute(&s.states, &self.output_bias, None, &mut s.scores, 1, false);
        s.emissions.clear();
        let padded = self.output_bias.len();
        for row in s.scores.chunks_exact(padded) {
            s.emissions.extend_from_slice(&row[..self.tags]);
        }
    }

    /// One direction over `ids`: its hidden states into `s.states`, columns 0..H (forward)
    /// or H..2H (backward) of each position's row.
    fn lstm(&self, dir: &Direction, ids: &[u32], reverse: bool, s: &mut Scratch) {
        let (h, width, len) = (self.hidden, self.width, ids.len());
        let (column, stride) = (if reverse { h } else { 0 }, 2 * h);
        s.c.fill(0.0);
        let mut prev: Option<usize> = None;
        for step in 0..len {
            let t = if reverse { len - 1 - step } else { step };
            let id = ids[t] as usize;
            let table = &dir.input[id * width..(id + 1) * width];
            match prev {
                None => s.gates.copy_from_slice(table),
                Some(p) => {
                    let h_prev = &s.states[p * stride + column..p * stride + column + h];
                    recur(self.isa, table, h_prev, &dir.recurrent, &mut s.gates);
                }
            }
            let at = t * stride + column;
            cell(&s.gates, &mut s.c, &mut s.states[at..at + h]);
            prev = Some(t);
        }
    }
}

/// tanh by a rational approximation (max error ~1e-7 on f32), written so the loops that use
/// it vectorise; libm's tanhf is a scalar call per element.
#[inline(always)]
fn tanh(x: f32) -> f32 {
    let x = x.clamp(-7.905_311, 7.905_311);
    let x2 = x * x;
    let p = x2 * -2.760_768_5e-16 + 2.000_188e-13;
    let p = x2 * p + -8.604_672e-11;
    let p = x2 * p + 5.122_297e-8;
    let p = x2 * p + 1.485_722_4e-5;
    let p = x2 * p + 6.372_619_3e-4;
    let p = x2 * p + 4.893_524_6e-3;
    let q = x2 * 1.198_258_4e-6 + 1.185_347e-4;
    let q = x2 * q + 2.268_434_6e-3;
    let q = x2 * q + 4.893_525e-3;
    x * p / q
}

#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    0.5 + 0.5 * tanh(0.5 * x)
}

/// The LSTM cell after its gates `[i, f, g, o]` (H each; padding after them is ignored):
/// updates `c` and writes the hidden state into `h_out`. Zipped iterators rather than
/// indexing, so that nothing is bounds-checked and the loop vectorises.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx512dq+avx512bw", "x86_64+avx2+fma"))]
fn cell(gates: &[f32], c: &mut [f32], h_out: &mut [f32]) {
    let h = c.len();
    let (i, rest) = gates.split_at(h);
    let (f, rest) = rest.split_at(h);
    let (g, o) = rest.split_at(h);
    let gates = i.iter().zip(f).zip(g).zip(o);
    for ((c, out), (((&i, &f), &g), &o)) in c.iter_mut().zip(h_out).zip(gates) {
        let c_new = sigmoid(f) * *c + sigmoid(i) * tanh(g);
        *c = c_new;
        *out = sigmoid(o) * tanh(c_new);
    }
}

/// `gates = start + h · w`: `w` is `[h.len(), gates.len()]` row-major, `gates.len()` a
/// multiple of [`LANES`], with the kernels of `isa`.
fn recur(isa: Isa, start: &[f32], h: &[f32], w: &[f32], gates: &mut [f32]) {
    let n = gates.len();
    assert!(
        n.is_multiple_of(LANES) && start.len() == n && w.len() == h.len() * n,
        "recurrent product: shapes"
    );
    match isa {
        // SAFETY: Isa::f32() saw AVX-512 F; the assertion above bounds every access.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { x86::recur_avx512(start, h, w, gates) },
        // SAFETY: Isa::f32() saw AVX2 and FMA; as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { x86::recur_avx2(start, h, w, gates) },
        _ => {
            gates.copy_from_slice(start);
            for (&x, row) in h.iter().zip(w.chunks_exact(n)) {
                for (g, &w) in gates.iter_mut().zip(row) {
                    *g += x * w;
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The recurrent product with a block of gates held in registers: for each input k, one
    //! broadcast of h[k] and one FMA per register against row k of the weights.
    //! Callers check the shapes (see `recur`): `gates` and `start` hold `n` values, `w` holds
    //! `h.len() × n`, and `n` is a multiple of 16.

    use std::arch::x86_64::*;

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn recur_avx512(start: &[f32], h: &[f32], w: &[f32], gates: &mut [f32]) {
        let n = gates.len();
        let (s, wp, g) = (start.as_ptr(), w.as_ptr(), gates.as_mut_ptr());
        // Blocks of up to 16 registers: the 4H = 256 gates of a 64-wide LSTM at once.
        let mut col = 0;
        while col < n {
            let width = match (n - col) / 16 {
                16.. => 16,
                8.. => 8,
                4.. => 4,
                2.. => 2,
                _ => 1,
            };
            unsafe {
                match width {
                    16 => block_avx512::<16>(col, n, s, h, wp, g),
                    8 => block_avx512::<8>(col, n, s, h, wp, g),
                    4 => block_avx512::<4>(col, n, s, h, wp, g),
                    2 => block_avx512::<2>(col, n, s, h, wp, g),
                    _ => block_avx512::<1>(col, n, s, h, wp, g),
                }
            }
            col += width * 16;
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn block_avx512<const N: usize>(
        col: usize,
        n: usize,
        start: *const f32,
        h: &[f32],
        w: *const f32,
        gates: *mut f32,
    ) {
        let mut acc = [_mm512_setzero_ps(); N];
        for (v, acc) in acc.iter_mut().enumerate() {
            *acc = unsafe { _mm512_loadu_ps(start.add(col + 16 * v)) };
        }
        for (k, &x) in h.iter().enumerate() {
            let x = _mm512_set1_ps(x);
            let row = unsafe { w.add(k * n + col) };
            for (v, acc) in acc.iter_mut().enumerate() {
                *acc = _mm512_fmadd_ps(x, unsafe { _mm512_loadu_ps(row.add(16 * v)) }, *acc);
            }
        }
        for (v, acc) in acc.iter().enumerate() {
            unsafe { _mm512_storeu_ps(gates.add(col + 16 * v), *acc) };
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn recur_avx2(start: &[f32], h: &[f32], w: &[f32], gates: &mut [f32]) {
        let n = gates.len();
        let (s, wp, g) = (start.as_ptr(), w.as_ptr(), gates.as_mut_ptr());
        // Blocks of up to 12 of the 16 ymm registers, leaving room for the broadcast and the
        // loads; n is a multiple of 16, so whole pairs are always left.
        let mut col = 0;
        while col < n {
            let width = match (n - col) / 8 {
                12.. => 12,
                8.. => 8,
                4.. => 4,
                _ => 2,
            };
            unsafe {
                match width {
                    12 => block_avx2::<12>(col, n, s, h, wp, g),
                    8 => block_avx2::<8>(col, n, s, h, wp, g),
                    4 => block_avx2::<4>(col, n, s, h, wp, g),
                    _ => block_avx2::<2>(col, n, s, h, wp, g),
                }
            }
            col += width * 8;
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn block_avx2<const N: usize>(
        col: usize,
        n: usize,
        start: *const f32,
        h: &[f32],
        w: *const f32,
        gates: *mut f32,
    ) {
        let mut acc = [_mm256_setzero_ps(); N];
        for (v, acc) in acc.iter_mut().enumerate() {
            *acc = unsafe { _mm256_loadu_ps(start.add(col + 8 * v)) };
        }
        for (k, &x) in h.iter().enumerate() {
            let x = _mm256_set1_ps(x);
            let row = unsafe { w.add(k * n + col) };
            for (v, acc) in acc.iter_mut().enumerate() {
                *acc = _mm256_fmadd_ps(x, unsafe { _mm256_loadu_ps(row.add(8 * v)) }, *acc);
            }
        }
        for (v, acc) in acc.iter().enumerate() {
            unsafe { _mm256_storeu_ps(gates.add(col + 8 * v), *acc) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_approximations_match_libm() {
        for i in -2000..=2000 {
            let x = i as f32 / 100.0;
            assert!((tanh(x) - x.tanh()).abs() < 2e-6, "tanh({x})");
            assert!(
                (sigmoid(x) - 1.0 / (1.0 + (-x).exp())).abs() < 2e-6,
                "sigmoid({x})"
            );
        }
    }

    /// Every recurrent kernel this CPU runs against the definition in f64, on widths that
    /// take each block size (and several at once), and on a zero-length input.
    #[test]
    fn the_recurrent_kernels_match_the_definition() {
        let mut seed = 7u32;
        let mut next = move || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        };
        for isa in Isa::f32().with_fallbacks() {
            for (inputs, n) in [(64, 256), (24, 96), (7, 16), (33, 272), (64, 512), (0, 48)] {
                let start: Vec<f32> = (0..n).map(|_| next()).collect();
                let h: Vec<f32> = (0..inputs).map(|_| next()).collect();
                let w: Vec<f32> = (0..inputs * n).map(|_| next()).collect();
                let mut gates = vec![f32::NAN; n];
                recur(isa, &start, &h, &w, &mut gates);
                for (j, &got) in gates.iter().enumerate() {
                    let want = start[j] as f64
                        + (0..inputs)
                            .map(|k| h[k] as f64 * w[k * n + j] as f64)
                            .sum::<f64>();
                    assert!(
                        (got as f64 - want).abs() < 1e-5,
                        "{isa:?}, {inputs} × {n}, column {j}: {got} against {want}"
                    );
                }
            }
        }
    }
}
