//! BERT servables: sentence embeddings (`BertModel`) and sequence classification
//! (`BertForSequenceClassification`), over the encoder in [`model`].
//! These servables own pooling and the classifier head; tokenising belongs to [`tokenize`]
//! and the encoder to [`model`]. They know nothing of versions, queues or transports.

pub mod config;
mod kernels;
pub mod model;
pub mod packed;
pub mod tokenize;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::{Device, Module, Tensor as CTensor, D};
use candle_nn::{Linear, VarBuilder};
use serde::Deserialize;

use self::config::BertConfig;
use self::model::{Bert, Mode};
use self::tokenize::{input_specs, tokens_from_inputs, IdLimits, TextEncoder, TokenBatch};
use super::{open_weights, read_json, LoadError, LoadOptions};
use crate::servable::{
    BatchPolicy, ClassificationOutputs, Inputs, Outputs, Servable, ServableError, Signature,
    SignatureMap, TensorSpec, DEFAULT_SIGNATURE,
};
use crate::tensor::{DType, Tensor, TensorData};

/// A missing tensor or a shape mismatch: the checkpoint does not match config.json.
fn weights_error(e: candle_core::Error) -> LoadError {
    LoadError::invalid("model.safetensors", e.to_string())
}

/// The longest input in tokens: sentence-transformers' `max_seq_length` when present, else
/// the tokenizer file's truncation, never more than the position table.
fn max_len(dir: &Path, cfg: &BertConfig) -> usize {
    #[derive(Deserialize)]
    struct SentenceBertConfig {
        max_seq_length: usize,
    }
    let cap = cfg.max_position_embeddings;
    read_json::<SentenceBertConfig>(dir, "sentence_bert_config.json")
        .ok()
        .map(|c| c.max_seq_length)
        .or_else(|| TextEncoder::file_max_length(dir))
        .map_or(cap, |n| n.clamp(1, cap))
}

/// Most tokens one pass through the encoder takes; a larger batch runs as several passes of
/// whole sentences. Keeps each layer's activations (12 MB for the FFN of 1024 MiniLM tokens)
/// near the caches and bounds the memory of a huge request; on MiniLM, batches of 32 long
/// sentences ran ~5% faster in two passes than in one.
const MAX_PASS_TOKENS: usize = 1024;

/// The parts both BERT kinds share: encoder, tokenizer and limits.
struct Encoder {
    bert: Bert,
    text: TextEncoder,
    limits: IdLimits,
    device: Device,
}

impl Encoder {
    fn load(
        dir: &Path,
        cfg: &BertConfig,
        vb: VarBuilder,
        with_pooler: bool,
        options: &LoadOptions,
    ) -> Result<Self, LoadError> {
        cfg.validate()
            .map_err(|m| LoadError::invalid("config.json", m))?;
        let mut bert = Bert::load(cfg, Mode::Inference, with_pooler, vb).map_err(weights_error)?;
        if options.int8 {
            if !cfg.hidden_size.is_multiple_of(16) || !cfg.intermediate_size.is_multiple_of(16) {
                return Err(LoadError::invalid(
                    "config.json",
                    "int8 needs hidden_size and intermediate_size to be multiples of 16",
                ));
            }
            bert.quantize_int8().map_err(weights_error)?;
            let isa = packed::Isa::int8();
            if isa == packed::Isa::Portable {
                tracing::warn!(
                    "{}: int8 dense layers on the portable kernel (no AVX2 on this CPU): \
                     slower than fp32",
                    dir.display()
                );
            } else {
                tracing::info!("{}: int8 dense layers ({})", dir.display(), isa.int8_name());
            }
        }
        let max_len = max_len(dir, cfg);
        let text = TextEncoder::load(dir, max_len, cfg.pad_token_id)?;
        Ok(Encoder {
            bert,
            text,
            limits: IdLimits {
                vocab_size: cfg.vocab_size,
                type_vocab_size: cfg.type_vocab_size,
                max_len,
            },
            device: Device::Cpu,
        })
    }

    /// The last hidden state of a request's tokens, packed without padding
    /// (`[tokens, hidden]`), and where each sequence's tokens start and end.
    fn hidden(&self, inputs: &Inputs) -> Result<(CTensor, Vec<usize>), ServableError> {
        let tokens: TokenBatch = tokens_from_inputs(inputs, &self.text, &self.limits)?;
        let packed = tokens.pack()?;
        let bounds = packed.bounds.clone();
        // The encoder's parallel loops (dense layers, attention) fork from a rayon worker:
        // run from any other thread, each of them would be handed to the pool and waited
        // for, a sleep and a wake-up per layer (perf showed it at batch 1).
        let parts = on_rayon_worker(|| {
            packed
                .split(MAX_PASS_TOKENS)
                .iter()
                .map(|group| self.bert.forward_packed(group, &self.device))
                .collect::<candle_core::Result<Vec<_>>>()
        })?;
        let hidden = if parts.len() == 1 {
            parts.into_iter().next().expect("one part")
        } else {
            CTensor::cat(&parts, 0)?
        };
        Ok((hidden, bounds))
    }
}

/// Runs `work` on a thread of rayon's global pool (where it already is, on the spot), with
/// the pool's other threads kept awake for it (see [`spin_beside`]).
fn on_rayon_worker<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        return spin_beside(work);
    }
    // `rayon::scope` runs its body inside the pool.
    rayon::scope(|_| spin_beside(work))
}

/// How long a helper of [`spin_beside`] spins with nothing to do before it lets its thread
/// sleep after all. Far longer than the serial steps between two parallel loops of a forward
/// pass (tens of microseconds). It bounds the waste when the end of a pass goes unnoticed,
/// and the stall when a helper happens to run on top of work that the pass itself waits for.
const SPIN_LIMIT: Duration = Duration::from_micros(500);

/// Runs `work` (on a rayon worker) while the pool's other threads spin, taking its parallel
/// jobs as they appear, instead of going to sleep between them.
///
/// A forward pass is a few dozen parallel loops (dense layers, attention) with short serial
/// steps between them (layer norms, copies). An idle rayon worker soon sleeps, and waking it
/// costs a futex call and, in a virtual machine, a wake-up of the virtual CPU: perf showed
/// 10% of a long sentence's samples in sleeping and waking, and a serial layer norm instead
/// of a parallel one made a short sentence take 36% longer by letting the second thread doze
/// off between layers. Onnxruntime's thread pool spins between its loops for the same reason.
///
/// The helpers are detached tasks: a helper busy with other work (it runs whatever the pool
/// has, another request's pass included) never holds this pass up, and one that sees the
/// pass over, or nothing to do for [`SPIN_LIMIT`], stops.
fn spin_beside<R>(work: impl FnOnce() -> R) -> R {
    let threads = rayon::current_num_threads();
    if threads < 2 {
        return work();
    }
    let done = Arc::new(AtomicBool::new(false));
    let caller = rayon::current_thread_index();
    for _ in 1..threads {
        let done = done.clone();
        rayon::spawn(move || {
            // On the caller's own thread (it picked this task up while waiting inside the
            // pass) spinning would wait for the very work beneath it.
            if rayon::current_thread_index() == caller {
                return;
            }
            let (mut idle_since, mut idle_rounds) = (Instant::now(), 0u32);
            while !done.load(Ordering::Acquire) {
                if let Some(rayon::Yield::Executed) = rayon::yield_now() {
                    idle_rounds = 0;
                    continue;
                }
                // The clock is read once per 64 idle rounds, not on every one.
                if idle_rounds % 64 == 0 {
                    let now = Instant::now();
                    if idle_rounds == 0 {
                        idle_since = now;
                    } else if now - idle_since > SPIN_LIMIT {
                        return;
                    }
                }
                idle_rounds = idle_rounds.wrapping_add(1);
                std::hint::spin_loop();
            }
        });
    }
    let result = work();
    done.store(true, Ordering::Release);
    result
}

/// How token vectors become one sentence vector (sentence-transformers' Pooling module).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Pooling {
    #[serde(default)]
    pub pooling_mode_cls_token: bool,
    #[serde(default)]
    pub pooling_mode_max_tokens: bool,
    #[serde(default = "yes")]
    pub pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pub pooling_mode_mean_sqrt_len_tokens: bool,
}

fn yes() -> bool {
    true
}

impl Default for Pooling {
    fn default() -> Self {
        Pooling {
            pooling_mode_cls_token: false,
            pooling_mode_max_tokens: false,
            pooling_mode_mean_tokens: true,
            pooling_mode_mean_sqrt_len_tokens: false,
        }
    }
}

impl Pooling {
    fn modes(&self) -> usize {
        [
            self.pooling_mode_cls_token,
            self.pooling_mode_max_tokens,
            self.pooling_mode_mean_tokens,
            self.pooling_mode_mean_sqrt_len_tokens,
        ]
        .iter()
        .filter(|&&m| m)
        .count()
    }

    /// Packed token vectors (`[tokens, dim]` row-major, sequence `i` at rows
    /// `bounds[i]..bounds[i + 1]`) → `[batch, dim × modes]`, concatenated in
    /// sentence-transformers' order (cls, max, mean, mean-sqrt-len).
    fn pool(&self, hidden: &[f32], dim: usize, bounds: &[usize]) -> Vec<f32> {
        let mut out = Vec::with_capacity((bounds.len() - 1) * dim * self.modes());
        for w in bounds.windows(2) {
            let rows = &hidden[w[0] * dim..w[1] * dim];
            let count = (w[1] - w[0]) as f32;
            if self.pooling_mode_cls_token {
                out.extend_from_slice(&rows[..dim]);
            }
            if self.pooling_mode_max_tokens {
                let mut max = vec![f32::NEG_INFINITY; dim];
                for row in rows.chunks_exact(dim) {
                    max.iter_mut().zip(row).for_each(|(m, &x)| *m = m.max(x));
                }
                out.extend(max);
            }
            if self.pooling_mode_mean_tokens || self.pooling_mode_mean_sqrt_len_tokens {
                let mut sum = vec![0f32; dim];
                for row in rows.chunks_exact(dim) {
                    sum.iter_mut().zip(row).for_each(|(s, &x)| *s += x);
                }
                if self.pooling_mode_mean_tokens {
                    out.extend(sum.iter().map(|s| s / count));
                }
                if self.pooling_mode_mean_sqrt_len_tokens {
                    out.extend(sum.iter().map(|s| s / count.sqrt()));
                }
            }
        }
        out
    }
}

/// Scales each `dim`-long row to unit length.
fn l2_normalize(values: &mut [f32], dim: usize) {
    for row in values.chunks_exact_mut(dim) {
        let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        row.iter_mut().for_each(|x| *x /= norm);
    }
}

/// Whether sentence-transformers would L2-normalise: a `2_Normalize` folder, or a
/// `Normalize` module listed in `modules.json`.
fn wants_normalize(dir: &Path) -> bool {
    #[derive(Deserialize)]
    struct Module {
        #[serde(rename = "type")]
        kind: String,
    }
    dir.join("2_Normalize").is_dir()
        || read_json::<Vec<Module>>(dir, "modules.json")
            .map(|ms| ms.iter().any(|m| m.kind.ends_with(".Normalize")))
            .unwrap_or(false)
}

/// `BertModel`: text → one vector per text.
pub struct EmbeddingServable {
    encoder: Encoder,
    pooling: Pooling,
    normalize: bool,
    signatures: SignatureMap,
}

impl EmbeddingServable {
    pub fn load(dir: &Path, cfg: &BertConfig, options: &LoadOptions) -> Result<Self, LoadError> {
        let pooling = if dir.join("1_Pooling/config.json").is_file() {
            read_json::<Pooling>(dir, "1_Pooling/config.json")?
        } else {
            Pooling::default()
        };
        if pooling.modes() == 0 {
            return Err(LoadError::invalid(
                "1_Pooling/config.json",
                "no pooling mode this server supports is enabled (cls, max, mean, mean_sqrt_len)",
            ));
        }
        let vb = open_weights(dir)?;
        let vb = if vb.contains_tensor("bert.embeddings.word_embeddings.weight") {
            vb.pp("bert")
        } else {
            vb
        };
        let encoder = Encoder::load(dir, cfg, vb, false, options)?;
        let dim = (cfg.hidden_size * pooling.modes()) as i64;
        let signature = Signature::predict(
            input_specs(false),
            vec![TensorSpec::new("embeddings", DType::Float, &[-1, dim])],
        );
        Ok(EmbeddingServable {
            encoder,
            pooling,
            normalize: wants_normalize(dir),
            signatures: SignatureMap::from([(DEFAULT_SIGNATURE.to_string(), signature)]),
        })
    }
}

impl Servable for EmbeddingServable {
    fn kind(&self) -> &'static str {
        "embedding"
    }

    /// Rows are packed without padding, so any mix of lengths batches well.
    fn batch_policy(&self) -> BatchPolicy {
        BatchPolicy::Rows
    }

    fn padding_mask(&self) -> Option<(&'static str, &'static str)> {
        Some(("input_ids", "attention_mask"))
    }

    fn signatures(&self) -> &SignatureMap {
        &self.signatures
    }

    fn run(&self, _signature: &str, inputs: &Inputs) -> Result<Outputs, ServableError> {
        let (hidden, bounds) = self.encoder.hidden(inputs)?;
        let width = hidden.dim(1)?;
        let hidden = hidden.flatten_all()?.to_vec1::<f32>()?;
        let mut values = self.pooling.pool(&hidden, width, &bounds);
        let (batch, dim) = (bounds.len() - 1, width * self.pooling.modes());
        if self.normalize {
            l2_normalize(&mut values, dim);
        }
        let embeddings = Tensor::new(vec![batch, dim], TensorData::Float(values))
            .map_err(|e| ServableError::Internal(e.to_string()))?;
        Ok(Outputs::from([("embeddings".to_string(), embeddings)]))
    }
}

/// `BertForSequenceClassification`: text (or a text pair) → class probabilities.
pub struct ClassifierServable {
    encoder: Encoder,
    classifier: Linear,
    labels: Vec<String>,
    signatures: SignatureMap,
}

impl ClassifierServable {
    pub fn load(dir: &Path, cfg: &BertConfig, options: &LoadOptions) -> Result<Self, LoadError> {
        let vb = open_weights(dir)?;
        let num_labels = cfg.id2label.as_ref().map_or(0, |m| m.len());
        if num_labels < 2 {
            return Err(LoadError::invalid(
                "config.json",
                "a BertForSequenceClassification needs `id2label` with at least two classes",
            ));
        }
        let classifier = model::linear(cfg.hidden_size, num_labels, vb.pp("classifier"))
            .map_err(weights_error)?;
        let root = if vb.contains_tensor("bert.embeddings.word_embeddings.weight") {
            vb.pp("bert")
        } else {
            vb
        };
        let encoder = Encoder::load(dir, cfg, root, true, options)?;
        let c = num_labels as i64;
        let signature = Signature::predict(
            input_specs(true),
            vec![
                TensorSpec::new("probabilities", DType::Float, &[-1, c]),
                TensorSpec::new("class_ids", DType::Int64, &[-1]),
                TensorSpec::new("labels", DType::String, &[-1]),
            ],
        );
        Ok(ClassifierServable {
            encoder,
            classifier,
            labels: cfg.class_names(num_labels),
            signatures: SignatureMap::from([(DEFAULT_SIGNATURE.to_string(), signature)]),
        })
    }

    pub fn labels(&self) -> &[String] {
        &self.labels
    }
}

impl Servable for ClassifierServable {
    fn kind(&self) -> &'static str {
        "classifier"
    }

    fn signatures(&self) -> &SignatureMap {
        &self.signatures
    }

    fn run(&self, _signature: &str, inputs: &Inputs) -> Result<Outputs, ServableError> {
        let (hidden, bounds) = self.encoder.hidden(inputs)?;
        let starts: Vec<u32> = bounds[..bounds.len() - 1]
            .iter()
            .map(|&s| s as u32)
            .collect();
        let first = hidden.index_select(
            &CTensor::from_slice(&starts, starts.len(), &self.encoder.device)?,
            0,
        )?;
        let pooled = self.encoder.bert.pool_first(&first)?;
        let logits = self.classifier.forward(&pooled)?;
        let probs = candle_nn::ops::softmax(&logits, D::Minus1)?;
        let (batch, classes) = probs.dims2()?;
        let ids = probs.argmax(D::Minus1)?.to_vec1::<u32>()?;
        let probs = probs.flatten_all()?.to_vec1::<f32>()?;
        let labels: Vec<Vec<u8>> = ids
            .iter()
            .map(|&i| self.labels[i as usize].as_bytes().to_vec())
            .collect();
        let internal = |e: crate::tensor::ShapeMismatch| ServableError::Internal(e.to_string());
        Ok(Outputs::from([
            (
                "probabilities".to_string(),
                Tensor::new(vec![batch, classes], TensorData::Float(probs)).map_err(internal)?,
            ),
            (
                "class_ids".to_string(),
                Tensor::new(
                    vec![batch],
                    TensorData::Int64(ids.iter().map(|&i| i as i64).collect()),
                )
                .map_err(internal)?,
            ),
            ("labels".to_string(), Tensor::strings(labels)),
        ]))
    }

    fn batch_policy(&self) -> BatchPolicy {
        BatchPolicy::Rows
    }

    fn padding_mask(&self) -> Option<(&'static str, &'static str)> {
        Some(("input_ids", "attention_mask"))
    }

    fn classification(&self) -> Option<ClassificationOutputs> {
        Some(ClassificationOutputs {
            signature: DEFAULT_SIGNATURE,
            scores: "probabilities",
            class_names: self.labels.clone(),
        })
    }
}
