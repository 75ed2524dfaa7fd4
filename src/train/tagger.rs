//! Training and evaluating the BiLSTM-CRF: CRF negative log-likelihood with AdamW on
//! mini-batches, gradient clipping, dev F1 after every epoch, early stopping, and the best
//! epoch's weights written as a complete version folder.
//! Offline only: nothing on the serving path calls it, and it must not change how
//! `crate::models::tagger` loads a version.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use rand::rngs::StdRng;
use rand::Rng;

use super::tagger_network::BiLstmCrf;
use crate::models::tagger::config::TaggerConfig;
use crate::models::tagger::fast::FastTagger;
use crate::models::tagger::text::{entities, CharVocab, Entity};
use crate::train::corpus::ner::Sample;
use crate::train::fit::{fit, Fitted, Schedule, Score};
use crate::train::init::{init_seeded, Init};

#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Epochs, batches, AdamW and early stopping (a constant learning rate).
    pub schedule: Schedule,
    pub embedding_dim: usize,
    pub hidden_size: usize,
    pub dropout: f32,
    /// Share of characters outside entities replaced by `[UNK]` while training, and share
    /// replaced by a random character, so the model leans on the entity words rather than
    /// on the exact wording around them.
    pub unk_rate: f64,
    pub random_char_rate: f64,
    pub max_length: usize,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            schedule: Schedule {
                epochs: 20,
                batch_size: 32,
                learning_rate: 0.005,
                weight_decay: 1e-4,
                clip: 5.0,
                patience: 4,
                seed: 42,
                warmup: None,
            },
            embedding_dim: 64,
            hidden_size: 64,
            dropout: 0.2,
            unk_rate: 0.05,
            random_char_rate: 0.1,
            max_length: 512,
        }
    }
}

/// What the trainer reports as it goes; the dev score is the entity report.
pub type Progress = crate::train::fit::Progress<Report>;

/// A trained model, ready to be written as a version folder.
pub struct Trained {
    pub config: TaggerConfig,
    pub vocab: CharVocab,
    pub varmap: VarMap,
    pub best_epoch: usize,
    pub best_dev: Report,
}

/// Entity-level scores per type and over all types (micro-averaged).
#[derive(Debug, Clone)]
pub struct Report {
    pub per_type: BTreeMap<String, Score>,
    pub overall: Score,
}

/// Scores predicted entities against gold ones: an entity counts only with the same type
/// and exactly the same span.
pub fn score(gold: &[Vec<Entity>], predicted: &[Vec<Entity>]) -> Report {
    let mut counts: BTreeMap<String, (usize, usize, usize)> = BTreeMap::new();
    for (g, p) in gold.iter().zip(predicted) {
        for e in g {
            counts.entry(e.kind.clone()).or_default().2 += 1;
        }
        for e in p {
            let c = counts.entry(e.kind.clone()).or_default();
            c.1 += 1;
            if g.iter()
                .any(|x| x.kind == e.kind && x.start == e.start && x.end == e.end)
            {
                c.0 += 1;
            }
        }
    }
    let total = counts
        .values()
        .fold((0, 0, 0), |a, c| (a.0 + c.0, a.1 + c.1, a.2 + c.2));
    Report {
        per_type: counts
            .into_iter()
            .map(|(k, (tp, p, g))| (k, Score::from_counts(tp, p, g)))
            .collect(),
        overall: Score::from_counts(total.0, total.1, total.2),
    }
}

/// Tags every sample with the serving path and scores it.
pub fn evaluate(
    fast: &FastTagger,
    vocab: &CharVocab,
    tags: &[String],
    samples: &[Sample],
) -> Report {
    let gold: Vec<Vec<Entity>> = samples.iter().map(Sample::entities).collect();
    let predicted: Vec<Vec<Entity>> = samples
        .iter()
        .map(|s| {
            let path = fast.decode(&vocab.encode(&s.chars));
            let names: Vec<&str> = path.iter().map(|&t| tags[t].as_str()).collect();
            entities(&s.chars, &names)
        })
        .collect();
    score(&gold, &predicted)
}

fn fast_from(config: &TaggerConfig, varmap: &VarMap) -> candle_core::Result<FastTagger> {
    FastTagger::load(
        config,
        &VarBuilder::from_varmap(varmap, DType::F32, &Device::Cpu),
    )
}

/// Trains on `train`, selects the epoch with the best dev F1.
pub fn train(
    train: &[Sample],
    dev: &[Sample],
    vocab: CharVocab,
    tags: &[&str],
    options: &TrainOptions,
    progress: impl FnMut(Progress),
) -> anyhow::Result<Trained> {
    let config = TaggerConfig {
        architectures: vec!["BiLstmCrf".into()],
        model_type: "bilstm_crf".into(),
        vocab_size: vocab.len(),
        embedding_dim: options.embedding_dim,
        hidden_size: options.hidden_size,
        tags: tags.iter().map(|t| t.to_string()).collect(),
        max_length: options.max_length,
        vocab_file: "vocab.txt".into(),
        dropout: options.dropout,
    };
    let device = Device::Cpu;
    let varmap = VarMap::new();
    let net = BiLstmCrf::new(
        &config,
        VarBuilder::from_varmap(&varmap, DType::F32, &device),
    )?;
    let bound = 1.0 / (options.hidden_size as f32).sqrt();
    init_seeded(&varmap, options.schedule.seed, |name, _| {
        if name.starts_with("embedding") {
            Init::Normal(0.5)
        } else if name.contains("bias") {
            Init::Zeros
        } else if name.starts_with("crf") {
            Init::Uniform(0.1)
        } else {
            Init::Uniform(bound)
        }
    })?;
    let batch_loss = |chunk: &[usize], rng: &mut StdRng| -> anyhow::Result<Tensor> {
        let batch: Vec<&Sample> = chunk
            .iter()
            .map(|&i| &train[i])
            .filter(|s| !s.chars.is_empty())
            .collect();
        let lengths: Vec<usize> = batch
            .iter()
            .map(|s| s.chars.len().min(options.max_length))
            .collect();
        let len = *lengths.iter().max().unwrap_or(&1);
        let mut ids = vec![0u32; batch.len() * len];
        for (r, s) in batch.iter().enumerate() {
            let encoded = vocab.encode(&s.chars[..lengths[r]]);
            for (i, id) in encoded.into_iter().enumerate() {
                let roll: f64 = rng.random();
                ids[r * len + i] = if s.tags[i] != 0 {
                    id
                } else if roll < options.unk_rate {
                    1
                } else if roll < options.unk_rate + options.random_char_rate {
                    rng.random_range(2..vocab.len() as u32)
                } else {
                    id
                };
            }
        }
        let gold: Vec<Vec<u32>> = batch
            .iter()
            .zip(&lengths)
            .map(|(s, &n)| s.tags[..n].to_vec())
            .collect();
        let ids = Tensor::from_vec(ids, (batch.len(), len), &device)?;
        let emissions = net.emissions(&ids, &lengths, Some(rng))?;
        Ok(net.nll(&emissions, &gold, &lengths)?)
    };
    let dev_score = || -> anyhow::Result<Report> {
        Ok(evaluate(
            &fast_from(&config, &varmap)?,
            &vocab,
            &config.tags,
            dev,
        ))
    };
    let better = |a: &Report, b: &Report| a.overall.f1 > b.overall.f1;
    let Fitted {
        best_epoch,
        best_dev,
    } = fit(
        &varmap,
        train.len(),
        &options.schedule,
        batch_loss,
        dev_score,
        better,
        progress,
    )?;
    Ok(Trained {
        config,
        vocab,
        varmap,
        best_epoch,
        best_dev,
    })
}

impl Trained {
    pub fn fast(&self) -> candle_core::Result<FastTagger> {
        fast_from(&self.config, &self.varmap)
    }

    /// Writes `config.json`, `vocab.txt` and `model.safetensors` into `dir`.
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(
            dir.join("config.json"),
            serde_json::to_string_pretty(&self.config)?,
        )?;
        self.vocab.write(&dir.join("vocab.txt"))?;
        self.varmap.save(dir.join("model.safetensors"))?;
        Ok(())
    }
}
