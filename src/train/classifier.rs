//! Training `BertForSequenceClassification` with candle autograd, on single texts or text
//! pairs: from a pre-trained BERT folder (fine-tuning) or from a fresh small config with a
//! WordPiece vocabulary trained on the corpus. The encoder is [`crate::models::bert::model::Bert`] in
//! `Mode::Trainable`, whose every op backpropagates (a test checks the gradients against
//! finite differences). AdamW with warm-up and linear decay, gradient clipping, dev accuracy
//! every epoch, early stopping, seeded weights, batch order and dropout.
//! Offline only: nothing on the serving path calls it, and it must not change how
//! `crate::models` loads a version.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{Linear, VarBuilder, VarMap};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokenizers::Tokenizer;

use super::bert_folder::write_version_folder;
use crate::models::bert::config::BertConfig;
use crate::models::bert::model::{batch_tensor, linear, Bert, Dropout, Mode, TrainRng};
use crate::models::bert::tokenize::{TextEncoder, TokenBatch};
use crate::train::fit::{fit, sorted_vars, Fitted, Schedule};
use crate::train::init::{bert_init, init_seeded};

/// One training example: a text, an optional second text, and its class id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    pub text: String,
    pub pair: Option<String>,
    pub label: u32,
}

#[derive(Debug, Clone)]
pub struct ClassifierOptions {
    /// Epochs, batches, AdamW with warm-up and linear decay, early stopping.
    pub schedule: Schedule,
    pub max_len: usize,
    /// Dropout before the classification head.
    pub head_dropout: f32,
    /// Share of input tokens (not [CLS], [SEP] or padding) replaced by [UNK] in training,
    /// so the model learns to read past characters it has never seen: wording outside the
    /// training templates arrives as [UNK] at serving time.
    pub token_dropout: f64,
}

impl Default for ClassifierOptions {
    fn default() -> Self {
        ClassifierOptions {
            schedule: Schedule {
                epochs: 10,
                batch_size: 32,
                learning_rate: 5e-4,
                weight_decay: 0.01,
                clip: 1.0,
                patience: 3,
                seed: 42,
                warmup: Some(0.1),
            },
            max_len: 128,
            head_dropout: 0.1,
            token_dropout: 0.0,
        }
    }
}

/// Where training starts.
#[allow(clippy::large_enum_variant)] // made once per training run
pub enum Start {
    /// A Hugging Face BERT folder (config.json, model.safetensors, tokenizer.json).
    Pretrained(PathBuf),
    /// Random weights of this shape, with this tokenizer.
    Fresh {
        config: BertConfig,
        tokenizer: Tokenizer,
    },
}

/// The encoder, pooler and classification head, as the classifier servable loads them
/// (`bert.*`, `classifier.*`).
pub struct Classifier {
    pub bert: Bert,
    head: Linear,
    dropout: Dropout,
}

impl Classifier {
    pub fn new(
        config: &BertConfig,
        classes: usize,
        head_dropout: f32,
        vb: VarBuilder,
    ) -> candle_core::Result<Self> {
        Ok(Classifier {
            bert: Bert::load(config, Mode::Trainable, true, vb.pp("bert"))?,
            head: linear(config.hidden_size, classes, vb.pp("classifier"))?,
            dropout: Dropout::new(head_dropout),
        })
    }

    /// `[batch, classes]` logits.
    pub fn logits(
        &self,
        tokens: &TokenBatch,
        device: &Device,
        rng: Option<&TrainRng>,
    ) -> candle_core::Result<Tensor> {
        let t = |v: &[u32]| batch_tensor(v, tokens.batch, tokens.len, device);
        let hidden = self.bert.forward(
            &t(&tokens.ids)?,
            &t(&tokens.type_ids)?,
            &t(&tokens.mask)?,
            rng,
        )?;
        let pooled = self.dropout.forward(&self.bert.pool(&hidden)?, rng)?;
        self.head.forward(&pooled)
    }
}

/// Progress the trainer reports; the dev score is the accuracy.
pub type Progress = crate::train::fit::Progress<f64>;

pub struct TrainedClassifier {
    pub config: BertConfig,
    pub tokenizer: Tokenizer,
    pub varmap: VarMap,
    pub model: Classifier,
    pub best_epoch: usize,
    pub best_dev_accuracy: f64,
    encoder: TextEncoder,
}

fn encode(encoder: &TextEncoder, batch: &[&Example]) -> anyhow::Result<TokenBatch> {
    let texts: Vec<Vec<u8>> = batch.iter().map(|e| e.text.as_bytes().to_vec()).collect();
    let pairs: Option<Vec<Vec<u8>>> = batch
        .iter()
        .map(|e| e.pair.as_ref().map(|p| p.as_bytes().to_vec()))
        .collect();
    encoder
        .encode(&texts, pairs.as_deref())
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// Share of `examples` the model classifies correctly (dropout off).
pub fn accuracy(
    model: &Classifier,
    encoder: &TextEncoder,
    examples: &[Example],
) -> anyhow::Result<f64> {
    if examples.is_empty() {
        return Ok(0.0);
    }
    let mut correct = 0;
    for chunk in examples.chunks(64) {
        let refs: Vec<&Example> = chunk.iter().collect();
        let tokens = encode(encoder, &refs)?;
        let predicted = model
            .logits(&tokens, &Device::Cpu, None)?
            .argmax(D::Minus1)?
            .to_vec1::<u32>()?;
        correct += predicted
            .iter()
            .zip(chunk)
            .filter(|(p, e)| **p == e.label)
            .count();
    }
    Ok(correct as f64 / examples.len() as f64)
}

/// Copies the weights a checkpoint has into the matching variables (with or without the
/// `bert.` prefix). Returns how many variables were loaded.
fn load_pretrained(varmap: &VarMap, path: &Path) -> anyhow::Result<usize> {
    let tensors = candle_core::safetensors::load(path, &Device::Cpu)?;
    let mut loaded = 0;
    for (name, var) in sorted_vars(varmap) {
        let stripped = name.strip_prefix("bert.").unwrap_or(&name);
        let Some(t) = tensors.get(&name).or_else(|| tensors.get(stripped)) else {
            continue;
        };
        if t.dims() != var.dims() {
            anyhow::bail!(
                "{}: {name} has shape {:?}, the config says {:?}",
                path.display(),
                t.dims(),
                var.dims()
            );
        }
        var.set(&t.to_dtype(DType::F32)?)?;
        loaded += 1;
    }
    Ok(loaded)
}

pub fn train_classifier(
    start: Start,
    labels: &[&str],
    train: &[Example],
    dev: &[Example],
    options: &ClassifierOptions,
    progress: impl FnMut(Progress),
) -> anyhow::Result<TrainedClassifier> {
    let device = Device::Cpu;
    let (mut config, tokenizer, pretrained) = match start {
        Start::Pretrained(dir) => {
            let config: BertConfig =
                serde_json::from_str(&std::fs::read_to_string(dir.join("config.json"))?)?;
            let tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
                .map_err(|e| anyhow::anyhow!("tokenizer.json: {e}"))?;
            (config, tokenizer, Some(dir.join("model.safetensors")))
        }
        Start::Fresh { config, tokenizer } => (config, tokenizer, None),
    };
    config.validate().map_err(anyhow::Error::msg)?;
    config.architectures = vec!["BertForSequenceClassification".into()];
    config.id2label = Some(
        labels
            .iter()
            .enumerate()
            .map(|(i, l)| (i.to_string(), l.to_string()))
            .collect(),
    );
    config.label2id = Some(
        labels
            .iter()
            .enumerate()
            .map(|(i, l)| (l.to_string(), i as i64))
            .collect(),
    );
    let max_len = options.max_len.min(config.max_position_embeddings);

    let varmap = VarMap::new();
    let model = Classifier::new(
        &config,
        labels.len(),
        options.head_dropout,
        VarBuilder::from_varmap(&varmap, DType::F32, &device),
    )?;
    init_seeded(&varmap, options.schedule.seed, bert_init)?;
    if let Some(path) = pretrained {
        let loaded = load_pretrained(&varmap, &path)?;
        if loaded < sorted_vars(&varmap).len() - 2 {
            anyhow::bail!(
                "{} holds only {loaded} of the encoder's weights",
                path.display()
            );
        }
    }
    let encoder = TextEncoder::new(tokenizer.clone(), max_len, config.pad_token_id)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let special: Vec<u32> = ["[CLS]", "[SEP]", "[PAD]"]
        .iter()
        .filter_map(|t| tokenizer.token_to_id(t))
        .chain([config.pad_token_id])
        .collect();
    let unk = tokenizer.token_to_id("[UNK]");
    let mut token_rng = StdRng::seed_from_u64(options.schedule.seed.wrapping_add(2));

    let dropout_rng = TrainRng::new(options.schedule.seed.wrapping_add(1));
    let batch_loss = |chunk: &[usize], _: &mut StdRng| -> anyhow::Result<Tensor> {
        let batch: Vec<&Example> = chunk.iter().map(|&i| &train[i]).collect();
        let mut tokens = encode(&encoder, &batch)?;
        if let (Some(unk), true) = (unk, options.token_dropout > 0.0) {
            for (id, mask) in tokens.ids.iter_mut().zip(&tokens.mask) {
                if *mask == 1
                    && !special.contains(id)
                    && token_rng.random_bool(options.token_dropout)
                {
                    *id = unk;
                }
            }
        }
        let targets = Tensor::from_vec(
            batch.iter().map(|e| e.label).collect::<Vec<_>>(),
            batch.len(),
            &device,
        )?;
        let logits = model.logits(&tokens, &device, Some(&dropout_rng))?;
        Ok(candle_nn::loss::cross_entropy(&logits, &targets)?)
    };
    let dev_accuracy = || accuracy(&model, &encoder, dev);
    let Fitted {
        best_epoch,
        best_dev: best_dev_accuracy,
    } = fit(
        &varmap,
        train.len(),
        &options.schedule,
        batch_loss,
        dev_accuracy,
        |a: &f64, b: &f64| a > b,
        progress,
    )?;
    Ok(TrainedClassifier {
        config,
        tokenizer,
        varmap,
        model,
        best_epoch,
        best_dev_accuracy,
        encoder,
    })
}

impl TrainedClassifier {
    pub fn accuracy(&self, examples: &[Example]) -> anyhow::Result<f64> {
        accuracy(&self.model, &self.encoder, examples)
    }

    /// Writes a version folder the classifier servable loads unchanged.
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        write_version_folder(dir, &self.config, &self.varmap, &self.tokenizer)
    }

    pub fn labels(&self) -> BTreeMap<String, String> {
        self.config.id2label.clone().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_config() -> BertConfig {
        BertConfig {
            architectures: vec![],
            model_type: "bert".into(),
            vocab_size: 20,
            hidden_size: 8,
            num_hidden_layers: 2,
            num_attention_heads: 2,
            intermediate_size: 16,
            hidden_act: crate::models::bert::config::HiddenAct::Gelu,
            hidden_dropout_prob: 0.1,
            attention_probs_dropout_prob: 0.1,
            max_position_embeddings: 16,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            pad_token_id: 0,
            position_embedding_type: "absolute".into(),
            id2label: None,
            label2id: None,
        }
    }

    /// The trainable encoder's analytic gradients (candle autograd) agree with central
    /// finite differences, in f64, for entries of every variable; and every variable gets a
    /// non-zero gradient (candle's fused layer-norm would leave most of them at none).
    #[test]
    fn gradients_match_finite_differences_for_every_variable() {
        let device = Device::Cpu;
        let varmap = VarMap::new();
        let model = Classifier::new(
            &tiny_config(),
            3,
            0.0,
            VarBuilder::from_varmap(&varmap, DType::F64, &device),
        )
        .unwrap();
        init_seeded(&varmap, 1, |name, shape| match bert_init(name, shape) {
            crate::train::init::Init::Normal(_) => crate::train::init::Init::Normal(0.5),
            crate::train::init::Init::Ones => crate::train::init::Init::Uniform(1.5),
            crate::train::init::Init::Zeros => crate::train::init::Init::Uniform(0.3),
            other => other,
        })
        .unwrap();
        let tokens = TokenBatch {
            ids: vec![2, 5, 7, 3, 9, 3, 2, 11, 3, 0, 0, 0],
            type_ids: vec![0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0],
            mask: vec![1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
            batch: 2,
            len: 6,
        };
        let targets = Tensor::from_vec(vec![2u32, 0], 2, &device).unwrap();
        let loss = |m: &Classifier| -> Tensor {
            candle_nn::loss::cross_entropy(&m.logits(&tokens, &device, None).unwrap(), &targets)
                .unwrap()
        };
        let grads = loss(&model).backward().unwrap();
        let vars = sorted_vars(&varmap);
        assert_eq!(
            vars.len(),
            41,
            "embeddings 5, 2 layers of 16, pooler 2, head 2"
        );
        let mut rng = StdRng::seed_from_u64(9);
        for (name, var) in &vars {
            let analytic = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("{name} gets no gradient"));
            let analytic: Vec<f64> = analytic.flatten_all().unwrap().to_vec1().unwrap();
            assert!(
                analytic.iter().any(|g| g.abs() > 0.0),
                "{name} has an all-zero gradient"
            );
            let original: Vec<f64> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
            let shape = var.as_tensor().shape().clone();
            for _ in 0..2 {
                let i = rng.random_range(0..original.len());
                let eps = 1e-6;
                let at = |delta: f64| {
                    let mut values = original.clone();
                    values[i] += delta;
                    var.set(&Tensor::from_vec(values, &shape, &device).unwrap())
                        .unwrap();
                    loss(&model).to_scalar::<f64>().unwrap()
                };
                let numeric = (at(eps) - at(-eps)) / (2.0 * eps);
                var.set(&Tensor::from_vec(original.clone(), &shape, &device).unwrap())
                    .unwrap();
                let tolerance = 1e-6 + 1e-4 * numeric.abs().max(analytic[i].abs());
                assert!(
                    (numeric - analytic[i]).abs() < tolerance,
                    "{name}[{i}]: analytic {} vs numeric {numeric}",
                    analytic[i]
                );
            }
        }
    }
}
