//! The serving path of the tagger, without a tensor library: one short sentence is a few
//! thousand multiply-adds per character, far less than the cost of dispatching candle ops.
//! The input projection of each LSTM is folded into a per-character table at load time
//! (embedding · W_ihᵀ + biases), so a step is one table row plus W_hh · h. The loops are
//! compiled for AVX-512 and AVX2+FMA as well as the baseline and chosen at run time.
//! Inference only: it never trains, and its outputs must stay equal to the training network's
//! (the test that checks it lives beside that network, in `crate::train`).

use std::cell::RefCell;

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use multiversion::multiversion;

use super::config::TaggerConfig;
use super::crf::{Crf, ViterbiScratch};

/// One LSTM direction, laid out for the step loop.
struct Direction {
    /// `[vocab, 4H]`: the gate pre-activations each character contributes.
    input: Vec<f32>,
    /// `[H, 4H]`: W_hh transposed, so the recurrent term is H vector updates of length 4H.
    recurrent: Vec<f32>,
}

pub struct FastTagger {
    hidden: usize,
    vocab: usize,
    tags: usize,
    forward: Direction,
    backward: Direction,
    /// `[2H, tags]`: the output layer transposed.
    output: Vec<f32>,
    output_bias: Vec<f32>,
    crf: Crf,
}

/// Buffers reused by every call on a thread.
#[derive(Default)]
pub struct Scratch {
    forward: Vec<f32>,
    backward: Vec<f32>,
    gates: Vec<f32>,
    c: Vec<f32>,
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
            let mut input = Vec::with_capacity(v * 4 * h);
            for row in &embedding {
                for g in 0..4 * h {
                    let dot: f32 = w_ih[g].iter().zip(row).map(|(w, x)| w * x).sum();
                    input.push(dot + b_ih[g] + b_hh[g]);
                }
            }
            let mut recurrent = vec![0.0; h * 4 * h];
            for g in 0..4 * h {
                for k in 0..h {
                    recurrent[k * 4 * h + g] = w_hh[g][k];
                }
            }
            Ok(Direction { input, recurrent })
        };
        let w_out = matrix(&vb.get((t, 2 * h), "output.weight")?)?;
        let mut output = vec![0.0; 2 * h * t];
        for j in 0..t {
            for k in 0..2 * h {
                output[k * t + j] = w_out[j][k];
            }
        }
        let crf = vb.pp("crf");
        Ok(FastTagger {
            hidden: h,
            vocab: v,
            tags: t,
            forward: direction("")?,
            backward: direction("_reverse")?,
            output,
            output_bias: vb.get(t, "output.bias")?.to_vec1::<f32>()?,
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
        let (h, len) = (self.hidden, ids.len());
        s.forward.resize(len * h, 0.0);
        s.backward.resize(len * h, 0.0);
        s.gates.resize(4 * h, 0.0);
        s.c.resize(h, 0.0);
        lstm(
            &self.forward.input,
            &self.forward.recurrent,
            ids,
            h,
            false,
            &mut s.forward,
            &mut s.gates,
            &mut s.c,
        );
        lstm(
            &self.backward.input,
            &self.backward.recurrent,
            ids,
            h,
            true,
            &mut s.backward,
            &mut s.gates,
            &mut s.c,
        );
        s.emissions.resize(len * self.tags, 0.0);
        emit(
            &s.forward,
            &s.backward,
            &self.output,
            &self.output_bias,
            h,
            self.tags,
            &mut s.emissions,
        );
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

/// One LSTM direction over `ids`, hidden states into `out` (`[len, H]`, in text order).
#[multiversion(targets("x86_64+avx512f+avx512vl+avx512dq+avx512bw", "x86_64+avx2+fma"))]
#[allow(clippy::too_many_arguments)]
fn lstm(
    table: &[f32],
    recurrent: &[f32],
    ids: &[u32],
    h: usize,
    reverse: bool,
    out: &mut [f32],
    gates: &mut [f32],
    c: &mut [f32],
) {
    let len = ids.len();
    let g4 = 4 * h;
    c.fill(0.0);
    for step in 0..len {
        let t = if reverse { len - 1 - step } else { step };
        let id = ids[t] as usize;
        gates.copy_from_slice(&table[id * g4..(id + 1) * g4]);
        if step > 0 {
            let prev = if reverse { t + 1 } else { t - 1 };
            let (before, after) = out.split_at(t * h);
            let h_prev = if reverse {
                &after[h..2 * h]
            } else {
                &before[prev * h..prev * h + h]
            };
            for (k, &hk) in h_prev.iter().enumerate() {
                let row = &recurrent[k * g4..(k + 1) * g4];
                for (g, &w) in gates.iter_mut().zip(row) {
                    *g += hk * w;
                }
            }
        }
        let (i_f, g_o) = gates.split_at_mut(2 * h);
        let (i, f) = i_f.split_at_mut(h);
        let (g, o) = g_o.split_at_mut(h);
        let h_out = &mut out[t * h..(t + 1) * h];
        for k in 0..h {
            let c_new = sigmoid(f[k]) * c[k] + sigmoid(i[k]) * tanh(g[k]);
            c[k] = c_new;
            h_out[k] = sigmoid(o[k]) * tanh(c_new);
        }
    }
}

/// Emissions `[len, tags]` = [h_fwd; h_bwd] · W_outᵀ + b.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx512dq+avx512bw", "x86_64+avx2+fma"))]
fn emit(
    forward: &[f32],
    backward: &[f32],
    output: &[f32],
    bias: &[f32],
    h: usize,
    tags: usize,
    out: &mut [f32],
) {
    for (t, row) in out.chunks_exact_mut(tags).enumerate() {
        row.copy_from_slice(bias);
        let states = forward[t * h..(t + 1) * h]
            .iter()
            .chain(&backward[t * h..(t + 1) * h]);
        for (k, &x) in states.enumerate() {
            for (e, &w) in row.iter_mut().zip(&output[k * tags..(k + 1) * tags]) {
                *e += x * w;
            }
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
}
