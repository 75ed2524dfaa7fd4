//! Masked-language-model pre-training of a small BERT on plain text (BERT's own objective):
//! 15% of the tokens of each sequence are chosen; of those, 80% become `[MASK]`, 10% a
//! random token and 10% stay; the model predicts the original token at each chosen
//! position through BERT's prediction head (dense, GELU, layer norm, then the word
//! embeddings transposed plus a bias: the output layer is tied to the input one).
//! The result is a BERT folder (`bert.*` and `cls.predictions.*`, HF names) that
//! [`crate::train::classifier`] fine-tunes with `Start::Pretrained`: the encoder then starts
//! knowing how Chinese characters combine instead of from noise.
//! Offline only, like the rest of `crate::train`.

use std::path::Path;

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{Linear, VarBuilder, VarMap};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokenizers::Tokenizer;

use super::bert_folder::write_version_folder;
use crate::models::bert::config::BertConfig;
use crate::models::bert::model::{batch_tensor, linear, Bert, LayerNorm, Mode, TrainRng};
use crate::models::bert::tokenize::{TextEncoder, TokenBatch};
use crate::train::fit::{fit, Fitted, Schedule};
use crate::train::init::{bert_init, init_seeded};

/// Share of a sequence's real tokens that are chosen for prediction.
pub const MASK_SHARE: f64 = 0.15;

#[derive(Debug, Clone)]
pub struct MlmOptions {
    pub schedule: Schedule,
    /// Longest sequence in tokens, `[CLS]` and `[SEP]` included.
    pub max_len: usize,
}

/// The encoder with BERT's masked-token prediction head.
pub struct MaskedLm {
    pub bert: Bert,
    transform: Linear,
    norm: LayerNorm,
    bias: Tensor,
}

impl MaskedLm {
    pub fn new(config: &BertConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        let head = vb.pp("cls").pp("predictions");
        Ok(MaskedLm {
            bert: Bert::load(config, Mode::Trainable, true, vb.pp("bert"))?,
            transform: linear(
                config.hidden_size,
                config.hidden_size,
                head.pp("transform").pp("dense"),
            )?,
            norm: LayerNorm::load(
                config.hidden_size,
                config.layer_norm_eps,
                Mode::Trainable,
                head.pp("transform").pp("LayerNorm"),
            )?,
            bias: head.get_with_hints(config.vocab_size, "bias", candle_nn::Init::Const(0.0))?,
        })
    }

    /// `[positions, vocab]` logits at the flattened (`batch * len + t`) `positions`.
    pub fn logits_at(
        &self,
        tokens: &TokenBatch,
        positions: &[u32],
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
        let width = hidden.dim(D::Minus1)?;
        let chosen = hidden
            .reshape((tokens.batch * tokens.len, width))?
            .index_select(&Tensor::from_slice(positions, positions.len(), device)?, 0)?;
        let h = self
            .norm
            .forward(&self.transform.forward(&chosen)?.gelu_erf()?)?;
        h.matmul(&self.bert.word_embeddings().t()?)?
            .broadcast_add(&self.bias)
    }
}

/// The masking of one batch: the input with its chosen tokens replaced, where they were,
/// and what they were.
struct Masked {
    tokens: TokenBatch,
    positions: Vec<u32>,
    targets: Vec<u32>,
}

/// Token ids a sequence may be masked at or replaced by: everything but the special tokens.
struct Vocabulary {
    special: Vec<u32>,
    mask: u32,
    size: u32,
}

impl Vocabulary {
    fn of(tokenizer: &Tokenizer, config: &BertConfig) -> anyhow::Result<Self> {
        let id = |t: &str| {
            tokenizer
                .token_to_id(t)
                .ok_or_else(|| anyhow::anyhow!("the vocabulary has no {t}"))
        };
        Ok(Vocabulary {
            special: vec![
                id("[CLS]")?,
                id("[SEP]")?,
                id("[UNK]")?,
                config.pad_token_id,
            ],
            mask: id("[MASK]")?,
            size: config.vocab_size as u32,
        })
    }

    fn mask(&self, mut tokens: TokenBatch, rng: &mut StdRng) -> Masked {
        let (mut positions, mut targets) = (Vec::new(), Vec::new());
        let candidates: Vec<usize> = (0..tokens.ids.len())
            .filter(|&i| tokens.mask[i] == 1 && !self.special.contains(&tokens.ids[i]))
            .collect();
        for &i in &candidates {
            if rng.random_bool(MASK_SHARE) {
                positions.push(i);
            }
        }
        // A batch with no chosen token has no loss; take one so every step learns.
        if positions.is_empty() && !candidates.is_empty() {
            positions.push(candidates[rng.random_range(0..candidates.len())]);
        }
        for &i in &positions {
            targets.push(tokens.ids[i]);
            let roll: f64 = rng.random();
            if roll < 0.8 {
                tokens.ids[i] = self.mask;
            } else if roll < 0.9 {
                tokens.ids[i] = loop {
                    let id = rng.random_range(0..self.size);
                    if !self.special.contains(&id) && id != self.mask {
                        break id;
                    }
                };
            }
        }
        Masked {
            tokens,
            positions: positions.into_iter().map(|i| i as u32).collect(),
            targets,
        }
    }
}

fn encode(encoder: &TextEncoder, texts: &[&String]) -> anyhow::Result<TokenBatch> {
    let bytes: Vec<Vec<u8>> = texts.iter().map(|t| t.as_bytes().to_vec()).collect();
    encoder
        .encode(&bytes, None)
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// Share of the chosen tokens of `texts` the model predicts exactly (dropout off, a fixed
/// masking so that epochs compare).
fn masked_accuracy(
    model: &MaskedLm,
    encoder: &TextEncoder,
    vocabulary: &Vocabulary,
    texts: &[String],
) -> anyhow::Result<f64> {
    let mut rng = StdRng::seed_from_u64(7);
    let (mut correct, mut total) = (0usize, 0usize);
    for chunk in texts.chunks(64) {
        let refs: Vec<&String> = chunk.iter().collect();
        let masked = vocabulary.mask(encode(encoder, &refs)?, &mut rng);
        if masked.positions.is_empty() {
            continue;
        }
        let predicted = model
            .logits_at(&masked.tokens, &masked.positions, &Device::Cpu, None)?
            .argmax(D::Minus1)?
            .to_vec1::<u32>()?;
        correct += predicted
            .iter()
            .zip(&masked.targets)
            .filter(|(p, t)| p == t)
            .count();
        total += masked.targets.len();
    }
    Ok(correct as f64 / total.max(1) as f64)
}

pub type Progress = crate::train::fit::Progress<f64>;

pub struct Pretrained {
    pub config: BertConfig,
    pub tokenizer: Tokenizer,
    pub varmap: VarMap,
    pub best_epoch: usize,
    pub best_dev_accuracy: f64,
}

/// Pre-trains a fresh BERT of `config` with `tokenizer` on `train` texts; `dev` texts give
/// the masked-token accuracy that picks the best epoch.
pub fn pretrain(
    mut config: BertConfig,
    tokenizer: Tokenizer,
    train: &[String],
    dev: &[String],
    options: &MlmOptions,
    progress: impl FnMut(Progress),
) -> anyhow::Result<Pretrained> {
    let device = Device::Cpu;
    config.validate().map_err(anyhow::Error::msg)?;
    config.architectures = vec!["BertForMaskedLM".into()];
    let varmap = VarMap::new();
    let model = MaskedLm::new(
        &config,
        VarBuilder::from_varmap(&varmap, DType::F32, &device),
    )?;
    init_seeded(&varmap, options.schedule.seed, bert_init)?;
    let max_len = options.max_len.min(config.max_position_embeddings);
    let encoder = TextEncoder::new(tokenizer.clone(), max_len, config.pad_token_id)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let vocabulary = Vocabulary::of(&tokenizer, &config)?;
    let dropout_rng = TrainRng::new(options.schedule.seed.wrapping_add(1));
    let batch_loss = |chunk: &[usize], rng: &mut StdRng| -> anyhow::Result<Tensor> {
        let texts: Vec<&String> = chunk.iter().map(|&i| &train[i]).collect();
        let masked = vocabulary.mask(encode(&encoder, &texts)?, rng);
        let logits = model.logits_at(
            &masked.tokens,
            &masked.positions,
            &device,
            Some(&dropout_rng),
        )?;
        let targets = Tensor::from_slice(&masked.targets, masked.targets.len(), &device)?;
        Ok(candle_nn::loss::cross_entropy(&logits, &targets)?)
    };
    let dev_accuracy = || masked_accuracy(&model, &encoder, &vocabulary, dev);
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
    Ok(Pretrained {
        config,
        tokenizer,
        varmap,
        best_epoch,
        best_dev_accuracy,
    })
}

impl Pretrained {
    /// Writes a BERT folder that `train_classifier train --from` fine-tunes.
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        write_version_folder(dir, &self.config, &self.varmap, &self.tokenizer)
    }
}

/// Cuts text into pieces of at most `chars` characters, at sentence ends where it can, so
/// long lines fill sequences instead of being truncated. Blank pieces are dropped.
pub fn pieces(text: &str, chars: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut count = 0;
    for c in text.chars() {
        if c.is_whitespace() && count == 0 {
            continue;
        }
        current.push(c);
        count += 1;
        let sentence_end = matches!(c, '。' | '！' | '？' | '!' | '?' | '；' | '\n');
        if count >= chars || (sentence_end && count >= chars / 2) {
            out.push(std::mem::take(&mut current).trim().to_string());
            count = 0;
        }
    }
    if !current.trim().is_empty() {
        out.push(current.trim().to_string());
    }
    out.retain(|p| !p.is_empty());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::bert_folder::train_wordpiece;

    #[test]
    fn pieces_stay_within_the_limit_and_keep_every_character() {
        let text = "今天天气很好。我们去公园散步吧！公园里人很多，孩子们在放风筝，老人们在下棋";
        let cut = pieces(text, 12);
        assert!(cut.len() >= 3, "{cut:?}");
        assert!(cut.iter().all(|p| p.chars().count() <= 12), "{cut:?}");
        assert_eq!(cut.concat(), text);
        assert_eq!(pieces("  \n ", 10), Vec::<String>::new());
    }

    /// The masking chooses only real tokens, never the special ones, records what was there,
    /// and replaces most of them with [MASK].
    #[test]
    fn masking_chooses_real_tokens_and_records_them() {
        let texts: Vec<String> = (0..50)
            .map(|i| format!("第{i}句话里有好几个不同的汉字和词语"))
            .collect();
        let tokenizer = train_wordpiece(texts.iter(), 200, true, 32).unwrap();
        let config = BertConfig::fresh(tokenizer.get_vocab_size(true), 8, 1, 2, 32, 0);
        let vocabulary = Vocabulary::of(&tokenizer, &config).unwrap();
        let encoder = TextEncoder::new(tokenizer.clone(), 32, 0).unwrap();
        let refs: Vec<&String> = texts.iter().collect();
        let original = encode(&encoder, &refs).unwrap();
        let masked = vocabulary.mask(
            encode(&encoder, &refs).unwrap(),
            &mut StdRng::seed_from_u64(3),
        );
        let real = original.mask.iter().filter(|&&m| m == 1).count();
        let share = masked.positions.len() as f64 / real as f64;
        assert!((0.08..0.2).contains(&share), "{share}");
        let mut replaced = 0;
        for (&p, &target) in masked.positions.iter().zip(&masked.targets) {
            let p = p as usize;
            assert_eq!(original.ids[p], target);
            assert!(!vocabulary.special.contains(&target));
            assert_eq!(original.mask[p], 1);
            if masked.tokens.ids[p] == vocabulary.mask {
                replaced += 1;
            }
        }
        assert!(replaced * 10 >= masked.positions.len() * 6, "{replaced}");
        let untouched = (0..original.ids.len())
            .filter(|i| !masked.positions.contains(&(*i as u32)))
            .all(|i| original.ids[i] == masked.tokens.ids[i]);
        assert!(untouched);
    }

    /// A few steps on a tiny repeated text lower the loss: the head, the tied embeddings
    /// and the encoder learn together.
    #[test]
    fn pretraining_learns_a_repeated_text() {
        let texts: Vec<String> = (0..64).map(|_| "我今天头疼还发烧".to_string()).collect();
        let tokenizer = train_wordpiece(texts.iter(), 100, true, 16).unwrap();
        let mut config = BertConfig::fresh(tokenizer.get_vocab_size(true), 16, 1, 2, 16, 0);
        config.hidden_dropout_prob = 0.0;
        config.attention_probs_dropout_prob = 0.0;
        let options = MlmOptions {
            schedule: Schedule {
                epochs: 30,
                batch_size: 16,
                learning_rate: 1e-2,
                weight_decay: 0.0,
                clip: 1.0,
                patience: 30,
                seed: 5,
                warmup: None,
            },
            max_len: 16,
        };
        let mut first = None;
        let mut last = 0.0;
        let trained = pretrain(config, tokenizer, &texts, &texts, &options, |p| {
            if let Progress::Epoch { mean_loss, .. } = p {
                first.get_or_insert(mean_loss);
                last = mean_loss;
            }
        })
        .unwrap();
        assert!(last < first.unwrap() * 0.5, "{first:?} → {last}");
        assert!(
            trained.best_dev_accuracy > 0.5,
            "{}",
            trained.best_dev_accuracy
        );
    }
}
