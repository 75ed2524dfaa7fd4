//! The BiLSTM-CRF as a candle graph, for training (and as the reference the fast serving
//! path is tested against): character embedding → bidirectional LSTM (candle-nn) → linear
//! emissions → CRF. Tensor names follow PyTorch's (`lstm.weight_ih_l0_reverse`, ...).
//! Training only: the server runs `models::tagger::fast`, never this graph.

use candle_core::{DType, IndexOp, Module, Result, Tensor};
use candle_nn::rnn::{LSTMConfig, RNN};
use candle_nn::{Embedding, Init, Linear, VarBuilder, LSTM};
use rand::rngs::StdRng;
use rand::Rng;

use crate::models::tagger::config::TaggerConfig;
use crate::models::tagger::crf::Crf;

pub struct BiLstmCrf {
    embedding: Embedding,
    forward: LSTM,
    backward: LSTM,
    output: Linear,
    transitions: Tensor,
    start: Tensor,
    end: Tensor,
    tags: usize,
    dropout: f32,
}

/// Where each position of a padded batch reads from when every sequence is reversed within
/// its own length (padding stays in place, so it never reaches the backward LSTM's state
/// before the real characters do). Applying it twice is the identity.
fn reverse_index(lengths: &[usize], len: usize) -> Vec<u32> {
    let mut index = Vec::with_capacity(lengths.len() * len);
    for (b, &n) in lengths.iter().enumerate() {
        for t in 0..len {
            let from = if t < n { n - 1 - t } else { t };
            index.push((b * len + from) as u32);
        }
    }
    index
}

/// log Σ exp along `dim`, stable, with the max treated as a constant (its gradient cancels).
fn log_sum_exp(xs: &Tensor, dim: usize) -> Result<Tensor> {
    let max = xs.max_keepdim(dim)?.detach();
    (xs.broadcast_sub(&max)?.exp()?.sum_keepdim(dim)?.log()? + max)?.squeeze(dim)
}

impl BiLstmCrf {
    pub fn new(cfg: &TaggerConfig, vb: VarBuilder) -> Result<Self> {
        let (e, h, t) = (cfg.embedding_dim, cfg.hidden_size, cfg.tags.len());
        let embedding = Embedding::new(
            vb.pp("embedding").get_with_hints(
                (cfg.vocab_size, e),
                "weight",
                Init::Randn {
                    mean: 0.0,
                    stdev: 1.0,
                },
            )?,
            e,
        );
        let lstm = |direction| {
            let config = LSTMConfig {
                direction,
                ..LSTMConfig::default()
            };
            candle_nn::lstm(e, h, config, vb.pp("lstm"))
        };
        let forward = lstm(candle_nn::rnn::Direction::Forward)?;
        let backward = lstm(candle_nn::rnn::Direction::Backward)?;
        let output = candle_nn::linear(2 * h, t, vb.pp("output"))?;
        let crf = vb.pp("crf");
        let small = Init::Uniform { lo: -0.1, up: 0.1 };
        Ok(BiLstmCrf {
            embedding,
            forward,
            backward,
            output,
            transitions: crf.get_with_hints((t, t), "transitions", small)?,
            start: crf.get_with_hints(t, "start", small)?,
            end: crf.get_with_hints(t, "end", small)?,
            tags: t,
            dropout: cfg.dropout,
        })
    }

    /// Emission scores `[batch, len, tags]` for a padded batch of ids `[batch, len]` (u32).
    /// With `rng`, applies dropout (training); its masks come from the seeded generator so a
    /// run can be repeated exactly.
    pub fn emissions(
        &self,
        ids: &Tensor,
        lengths: &[usize],
        rng: Option<&mut StdRng>,
    ) -> Result<Tensor> {
        let (b, len) = ids.dims2()?;
        let xs = self.embedding.forward(ids)?;
        let e = xs.dim(2)?;
        let fwd = self.forward.states_to_tensor(&self.forward.seq(&xs)?)?;
        let index = Tensor::from_vec(reverse_index(lengths, len), b * len, ids.device())?;
        let reversed = xs
            .reshape((b * len, e))?
            .index_select(&index, 0)?
            .reshape((b, len, e))?;
        let bwd = self
            .backward
            .states_to_tensor(&self.backward.seq(&reversed)?)?;
        let h = bwd.dim(2)?;
        let bwd = bwd
            .reshape((b * len, h))?
            .index_select(&index, 0)?
            .reshape((b, len, h))?;
        let mut hidden = Tensor::cat(&[fwd, bwd], 2)?;
        if let Some(rng) = rng {
            if self.dropout > 0.0 {
                let keep = 1.0 - self.dropout;
                let mask: Vec<f32> = (0..hidden.elem_count())
                    .map(|_| {
                        if rng.random::<f32>() < keep {
                            1.0 / keep
                        } else {
                            0.0
                        }
                    })
                    .collect();
                let mask = Tensor::from_vec(mask, hidden.shape(), hidden.device())?;
                hidden = (hidden * mask)?;
            }
        }
        self.output.forward(&hidden)
    }

    /// Mean negative log-likelihood of the gold tags `[batch][len]` under the CRF, with the
    /// forward algorithm over the batch; positions past each length are masked out.
    pub fn nll(&self, emissions: &Tensor, gold: &[Vec<u32>], lengths: &[usize]) -> Result<Tensor> {
        let (b, len, t) = emissions.dims3()?;
        let device = emissions.device();
        let mask: Vec<f32> = lengths
            .iter()
            .flat_map(|&n| (0..len).map(move |i| if i < n { 1.0 } else { 0.0 }))
            .collect();
        let mask = Tensor::from_vec(mask, (b, len), device)?;

        let mut alpha = emissions.i((.., 0, ..))?.broadcast_add(&self.start)?;
        for i in 1..len {
            let scores = alpha
                .unsqueeze(2)?
                .broadcast_add(&self.transitions.unsqueeze(0)?)?
                .broadcast_add(&emissions.i((.., i, ..))?.unsqueeze(1)?)?;
            let next = log_sum_exp(&scores, 1)?;
            let m = mask.i((.., i))?.unsqueeze(1)?;
            alpha = (next.broadcast_mul(&m)? + alpha.broadcast_mul(&(1.0 - m)?)?)?;
        }
        let log_z = log_sum_exp(&alpha.broadcast_add(&self.end)?, 1)?;

        let padded: Vec<u32> = gold
            .iter()
            .flat_map(|g| (0..len).map(move |i| g.get(i).copied().unwrap_or(0)))
            .collect();
        let gold_tensor = Tensor::from_vec(padded.clone(), (b, len, 1), device)?;
        let emitted = (emissions.gather(&gold_tensor, 2)?.squeeze(2)? * &mask)?.sum(1)?;
        let pairs: Vec<u32> = (0..b)
            .flat_map(|r| {
                let padded = &padded;
                (1..len).map(move |i| padded[r * len + i - 1] * t as u32 + padded[r * len + i])
            })
            .collect();
        let transitioned = if len > 1 {
            let pairs = Tensor::from_vec(pairs, b * (len - 1), device)?;
            (self
                .transitions
                .flatten_all()?
                .index_select(&pairs, 0)?
                .reshape((b, len - 1))?
                * mask.narrow(1, 1, len - 1)?)?
            .sum(1)?
        } else {
            Tensor::zeros(b, DType::F32, device)?
        };
        let firsts = Tensor::from_vec(gold.iter().map(|g| g[0]).collect::<Vec<_>>(), b, device)?;
        let lasts = Tensor::from_vec(
            gold.iter()
                .zip(lengths)
                .map(|(g, &n)| g[n - 1])
                .collect::<Vec<_>>(),
            b,
            device,
        )?;
        let gold_score = (emitted
            + transitioned
            + self.start.index_select(&firsts, 0)?
            + self.end.index_select(&lasts, 0)?)?;
        (log_z - gold_score)?.mean_all()
    }

    /// The CRF parameters as plain numbers.
    pub fn crf(&self) -> Result<Crf> {
        Ok(Crf {
            tags: self.tags,
            transitions: self.transitions.flatten_all()?.to_vec1()?,
            start: self.start.to_vec1()?,
            end: self.end.to_vec1()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::tagger::crf::tests::all_paths;
    use candle_core::Device;
    use candle_nn::VarMap;
    use rand::SeedableRng;

    fn tiny() -> (VarMap, BiLstmCrf) {
        let cfg = TaggerConfig {
            architectures: vec!["BiLstmCrf".into()],
            model_type: "bilstm_crf".into(),
            vocab_size: 9,
            embedding_dim: 4,
            hidden_size: 3,
            tags: vec!["O".into(), "B-X".into(), "I-X".into()],
            max_length: 16,
            vocab_file: "vocab.txt".into(),
            dropout: 0.0,
        };
        let varmap = VarMap::new();
        let net = BiLstmCrf::new(
            &cfg,
            VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
        )
        .unwrap();
        crate::train::init::init_seeded(&varmap, 3, |_, _| crate::train::init::Init::Uniform(0.8))
            .unwrap();
        (varmap, net)
    }

    #[test]
    fn reversing_within_lengths_is_its_own_inverse() {
        let index = reverse_index(&[3, 1], 4);
        assert_eq!(index, vec![2, 1, 0, 3, 4, 5, 6, 7]);
    }

    #[test]
    fn the_batched_masked_nll_matches_brute_force_over_all_paths() {
        let (_varmap, net) = tiny();
        let mut rng = StdRng::seed_from_u64(5);
        let lengths = [3usize, 1, 2];
        let ids = Tensor::from_vec(
            (0..9)
                .map(|_| rng.random_range(0..9u32))
                .collect::<Vec<_>>(),
            (3, 3),
            &Device::Cpu,
        )
        .unwrap();
        let gold: Vec<Vec<u32>> = lengths
            .iter()
            .map(|&n| (0..n).map(|_| rng.random_range(0..3u32)).collect())
            .collect();
        let emissions = net.emissions(&ids, &lengths, None).unwrap();
        let nll = net
            .nll(&emissions, &gold, &lengths)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();

        let crf = net.crf().unwrap();
        let values = emissions.to_vec3::<f32>().unwrap();
        let mut expected = 0.0;
        for (r, &n) in lengths.iter().enumerate() {
            let e: Vec<f32> = values[r][..n].iter().flatten().copied().collect();
            let scores: Vec<f32> = all_paths(n, 3)
                .iter()
                .map(|p| crf.path_score(&e, p))
                .collect();
            let log_z = crate::models::tagger::crf::log_sum_exp(scores.iter().copied());
            let path: Vec<usize> = gold[r].iter().map(|&g| g as usize).collect();
            expected += log_z - crf.path_score(&e, &path);
        }
        expected /= lengths.len() as f32;
        assert!((nll - expected).abs() < 1e-4, "{nll} vs {expected}");
    }

    #[test]
    fn padding_does_not_change_a_sequences_emissions() {
        let (_varmap, net) = tiny();
        let alone = Tensor::from_vec(vec![4u32, 5, 6], (1, 3), &Device::Cpu).unwrap();
        let padded = Tensor::from_vec(vec![4u32, 5, 6, 0, 0], (1, 5), &Device::Cpu).unwrap();
        let a = net
            .emissions(&alone, &[3], None)
            .unwrap()
            .to_vec3::<f32>()
            .unwrap();
        let b = net
            .emissions(&padded, &[3], None)
            .unwrap()
            .to_vec3::<f32>()
            .unwrap();
        for t in 0..3 {
            for j in 0..3 {
                assert!((a[0][t][j] - b[0][t][j]).abs() < 1e-6);
            }
        }
    }

    #[test]
    fn every_variable_gets_a_gradient() {
        let (varmap, net) = tiny();
        let ids = Tensor::from_vec(vec![1u32, 2, 3, 4, 5, 6], (2, 3), &Device::Cpu).unwrap();
        let lengths = [3, 2];
        let gold = vec![vec![1, 2, 0], vec![0, 1]];
        let mut rng = StdRng::seed_from_u64(1);
        let loss = net
            .nll(
                &net.emissions(&ids, &lengths, Some(&mut rng)).unwrap(),
                &gold,
                &lengths,
            )
            .unwrap();
        let grads = loss.backward().unwrap();
        let data = varmap.data().lock().unwrap();
        assert_eq!(data.len(), 14);
        for (name, var) in data.iter() {
            let g = grads
                .get(var)
                .unwrap_or_else(|| panic!("{name} has no gradient"));
            let norm = g
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(norm > 0.0, "{name} has a zero gradient");
        }
    }

    #[test]
    fn the_fast_path_equals_the_candle_network() {
        let cfg = TaggerConfig {
            architectures: vec!["BiLstmCrf".into()],
            model_type: "bilstm_crf".into(),
            vocab_size: 50,
            embedding_dim: 16,
            hidden_size: 24,
            tags: ["O", "B-SYM", "I-SYM", "B-DUR", "I-DUR"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            max_length: 64,
            vocab_file: "vocab.txt".into(),
            dropout: 0.0,
        };
        let varmap = VarMap::new();
        let net = BiLstmCrf::new(
            &cfg,
            VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
        )
        .unwrap();
        crate::train::init::init_seeded(&varmap, 11, |_, _| crate::train::init::Init::Uniform(0.5))
            .unwrap();
        let fast = crate::models::tagger::fast::FastTagger::load(
            &cfg,
            &VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
        )
        .unwrap();
        let mut rng = StdRng::seed_from_u64(2);
        for len in [1usize, 2, 7, 33] {
            let ids: Vec<u32> = (0..len).map(|_| rng.random_range(0..50)).collect();
            let reference = net
                .emissions(
                    &Tensor::from_vec(ids.clone(), (1, len), &Device::Cpu).unwrap(),
                    &[len],
                    None,
                )
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let got = fast.emissions(&ids);
            assert_eq!(got.len(), reference.len());
            for (a, b) in got.iter().zip(&reference) {
                assert!((a - b).abs() < 1e-4, "length {len}: {a} vs {b}");
            }
            let mut scratch = crate::models::tagger::crf::ViterbiScratch::default();
            assert_eq!(
                fast.decode(&ids),
                net.crf().unwrap().viterbi(&reference, &mut scratch).1
            );
        }
    }
}
