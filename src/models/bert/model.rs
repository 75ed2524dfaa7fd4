//! The BERT encoder, written here rather than taken from candle-transformers for two
//! reasons: the same code must train (candle's fused layer-norm and softmax kernels have no
//! backward pass and silently cut the graph), and the serving path needs
//! freedom to change kernels for speed. Tensor names follow the Hugging Face checkpoints
//! (`embeddings.word_embeddings.weight`, `encoder.layer.0.attention.self.query.weight`, ...).
//! It computes from the token batches and weights it is handed: it reads no file of its own
//! and knows nothing of signatures or requests.

use std::sync::Mutex;

use candle_core::{DType, Device, Module, Result, Tensor, D};
use candle_nn::{Embedding, Init, Linear, VarBuilder};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::config::{BertConfig, HiddenAct};
use super::kernels;
use super::tokenize::Packed;

/// Standard deviation of BERT's weight initialisation, used when training from scratch.
const INIT_STD: f64 = 0.02;

/// How the graph is built. `Trainable` uses only ops that backpropagate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Inference,
    Trainable,
}

/// A dense layer with BERT's initialisation (normal(0, 0.02) weights, zero bias) when the
/// variable builder creates it; loading from a checkpoint ignores the hints.
pub fn linear(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Linear> {
    let weight = vb.get_with_hints(
        (out_dim, in_dim),
        "weight",
        Init::Randn {
            mean: 0.0,
            stdev: INIT_STD,
        },
    )?;
    let bias = vb.get_with_hints(out_dim, "bias", Init::Const(0.0))?;
    Ok(Linear::new(weight, Some(bias)))
}

fn embedding(rows: usize, dim: usize, vb: VarBuilder) -> Result<Embedding> {
    let table = vb.get_with_hints(
        (rows, dim),
        "weight",
        Init::Randn {
            mean: 0.0,
            stdev: INIT_STD,
        },
    )?;
    Ok(Embedding::new(table, dim))
}

#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f32,
    /// The vectorised kernel (serving); training keeps candle's ops, which backpropagate.
    serving: Option<kernels::LayerNormKernel>,
}

impl LayerNorm {
    pub fn load(dim: usize, eps: f64, mode: Mode, vb: VarBuilder) -> Result<Self> {
        // Checkpoints converted from TensorFlow name the parameters gamma/beta.
        let (w, b) = if !vb.contains_tensor("weight") && vb.contains_tensor("gamma") {
            ("gamma", "beta")
        } else {
            ("weight", "bias")
        };
        let weight = vb.get_with_hints(dim, w, Init::Const(1.0))?;
        let bias = vb.get_with_hints(dim, b, Init::Const(0.0))?;
        let serving = match mode {
            Mode::Inference => Some(kernels::LayerNormKernel::new(&weight, &bias, eps as f32)?),
            Mode::Trainable => None,
        };
        Ok(LayerNorm {
            weight,
            bias,
            eps: eps as f32,
            serving,
        })
    }
}

impl Module for LayerNorm {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        match &self.serving {
            Some(kernel) => kernel.forward(xs),
            None => candle_nn::ops::layer_norm_slow(xs, &self.weight, &self.bias, self.eps),
        }
    }
}

/// The random source of dropout while training. Seeded, so a training run repeats exactly
/// (candle's own dropout draws from an unseeded generator). Serving passes none.
pub struct TrainRng(Mutex<StdRng>);

impl TrainRng {
    pub fn new(seed: u64) -> Self {
        TrainRng(Mutex::new(StdRng::seed_from_u64(seed)))
    }
}

/// Inverted dropout with probability `p`, only when training.
#[derive(Debug, Clone, Copy)]
pub struct Dropout(f32);

impl Dropout {
    pub fn new(p: f32) -> Self {
        Dropout(p)
    }

    pub fn forward(&self, xs: &Tensor, rng: Option<&TrainRng>) -> Result<Tensor> {
        let (Some(rng), p) = (rng, self.0) else {
            return Ok(xs.clone());
        };
        if p <= 0.0 {
            return Ok(xs.clone());
        }
        let keep = 1.0 - p;
        let mask: Vec<f32> = {
            let mut rng = rng.0.lock().expect("dropout rng lock poisoned");
            (0..xs.elem_count())
                .map(|_| {
                    if rng.random::<f32>() < keep {
                        1.0 / keep
                    } else {
                        0.0
                    }
                })
                .collect()
        };
        let mask = Tensor::from_vec(mask, xs.shape(), xs.device())?.to_dtype(xs.dtype())?;
        xs * mask
    }
}

fn softmax_last(xs: &Tensor, mode: Mode) -> Result<Tensor> {
    match mode {
        Mode::Inference => candle_nn::ops::softmax_last_dim(xs),
        Mode::Trainable => candle_nn::ops::softmax(xs, D::Minus1),
    }
}

struct Embeddings {
    word: Embedding,
    position: Embedding,
    token_type: Embedding,
    norm: LayerNorm,
    dropout: Dropout,
}

impl Embeddings {
    fn load(cfg: &BertConfig, mode: Mode, vb: VarBuilder) -> Result<Self> {
        Ok(Embeddings {
            word: embedding(cfg.vocab_size, cfg.hidden_size, vb.pp("word_embeddings"))?,
            position: embedding(
                cfg.max_position_embeddings,
                cfg.hidden_size,
                vb.pp("position_embeddings"),
            )?,
            token_type: embedding(
                cfg.type_vocab_size,
                cfg.hidden_size,
                vb.pp("token_type_embeddings"),
            )?,
            norm: LayerNorm::load(
                cfg.hidden_size,
                cfg.layer_norm_eps,
                mode,
                vb.pp("LayerNorm"),
            )?,
            dropout: Dropout::new(cfg.hidden_dropout_prob as f32),
        })
    }

    fn forward(&self, ids: &Tensor, type_ids: &Tensor, rng: Option<&TrainRng>) -> Result<Tensor> {
        let (_, len) = ids.dims2()?;
        let positions = Tensor::arange(0u32, len as u32, ids.device())?;
        let xs = self
            .word
            .forward(ids)?
            .add(&self.token_type.forward(type_ids)?)?
            .broadcast_add(&self.position.forward(&positions)?)?;
        self.dropout.forward(&self.norm.forward(&xs)?, rng)
    }

    /// `[tokens, hidden]` for packed tokens with their own positions.
    fn forward_packed(&self, packed: &Packed, device: &Device) -> Result<Tensor> {
        let t = |v: &[u32]| Tensor::from_slice(v, v.len(), device);
        let xs = self
            .word
            .forward(&t(&packed.ids)?)?
            .add(&self.token_type.forward(&t(&packed.type_ids)?)?)?
            .add(&self.position.forward(&t(&packed.positions)?)?)?;
        self.norm.forward(&xs)
    }
}

/// A dense layer in the form each mode wants.
enum Dense {
    /// candle's `Linear` (`x · Wᵀ + b`), which backpropagates.
    Train(Linear),
    /// One fused GEMM over every token of the batch (see [`kernels::DenseKernel`]).
    Infer(kernels::DenseKernel),
}

impl Dense {
    /// One layer from `parts` laid side by side along the output (one part: itself).
    fn new(parts: Vec<Linear>, mode: Mode) -> Result<Self> {
        if mode == Mode::Trainable && parts.len() == 1 {
            return Ok(Dense::Train(parts.into_iter().next().expect("one part")));
        }
        let weights: Vec<Tensor> = parts.iter().map(|l| l.weight().clone()).collect();
        let biases = parts
            .iter()
            .map(|l| {
                l.bias()
                    .cloned()
                    .ok_or_else(|| candle_core::Error::Msg("a BERT dense layer has a bias".into()))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Dense::Infer(kernels::DenseKernel::new(
            &Tensor::cat(&weights, 0)?.t()?,
            &Tensor::cat(&biases, 0)?,
        )?))
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.forward_with(xs, None, false)
    }

    /// The layer, then `+ residual`, then GELU when `gelu`.
    fn forward_with(&self, xs: &Tensor, residual: Option<&Tensor>, gelu: bool) -> Result<Tensor> {
        match self {
            Dense::Infer(kernel) => kernel.forward(xs, residual, gelu),
            Dense::Train(linear) => {
                let mut out = linear.forward(xs)?;
                if let Some(r) = residual {
                    out = out.add(r)?;
                }
                if gelu {
                    out = out.gelu_erf()?;
                }
                Ok(out)
            }
        }
    }
}

enum Projections {
    /// Separate query, key and value layers (training).
    Separate {
        query: Linear,
        key: Linear,
        value: Linear,
    },
    /// One `[hidden, 3 × hidden]` layer feeding the fused attention kernel (serving).
    Fused(Dense),
}

struct Attention {
    projections: Projections,
    output: Dense,
    norm: LayerNorm,
    heads: usize,
    head_dim: usize,
    probs_dropout: Dropout,
    dropout: Dropout,
    mode: Mode,
}

impl Attention {
    fn load(cfg: &BertConfig, mode: Mode, vb: VarBuilder) -> Result<Self> {
        let h = cfg.hidden_size;
        let sa = vb.pp("self");
        let out = vb.pp("output");
        let (query, key, value) = (
            linear(h, h, sa.pp("query"))?,
            linear(h, h, sa.pp("key"))?,
            linear(h, h, sa.pp("value"))?,
        );
        let projections = match mode {
            Mode::Trainable => Projections::Separate { query, key, value },
            Mode::Inference => Projections::Fused(Dense::new(vec![query, key, value], mode)?),
        };
        Ok(Attention {
            projections,
            output: Dense::new(vec![linear(h, h, out.pp("dense"))?], mode)?,
            norm: LayerNorm::load(h, cfg.layer_norm_eps, mode, out.pp("LayerNorm"))?,
            heads: cfg.num_attention_heads,
            head_dim: h / cfg.num_attention_heads,
            probs_dropout: Dropout::new(cfg.attention_probs_dropout_prob as f32),
            dropout: Dropout::new(cfg.hidden_dropout_prob as f32),
            mode,
        })
    }

    /// `mask` is additive, `[batch, len]`: 0 where a token is kept, large negative where it
    /// is padding.
    fn forward(&self, xs: &Tensor, mask: &Tensor, rng: Option<&TrainRng>) -> Result<Tensor> {
        let Projections::Separate { query, key, value } = &self.projections else {
            candle_core::bail!("the serving encoder runs packed batches (Bert::forward_packed)");
        };
        let context = self.attend(xs, [query, key, value], mask, rng)?;
        let projected = self.dropout.forward(&self.output.forward(&context)?, rng)?;
        self.norm.forward(&projected.add(xs)?)
    }

    /// Packed tokens `[tokens, hidden]`; sequence `i` is rows `bounds[i]..bounds[i + 1]`.
    fn forward_packed(&self, xs: &Tensor, bounds: &[usize]) -> Result<Tensor> {
        let Projections::Fused(qkv) = &self.projections else {
            candle_core::bail!("packed batches are for the serving encoder (Mode::Inference)");
        };
        let context = kernels::packed_attention(&qkv.forward(xs)?, bounds, self.heads)?;
        self.norm
            .forward(&self.output.forward_with(&context, Some(xs), false)?)
    }

    /// Attention from candle ops only, so gradients flow.
    fn attend(
        &self,
        xs: &Tensor,
        [query, key, value]: [&Linear; 3],
        mask: &Tensor,
        rng: Option<&TrainRng>,
    ) -> Result<Tensor> {
        let (b, len, h) = xs.dims3()?;
        let split = |t: Tensor| -> Result<Tensor> {
            t.reshape((b, len, self.heads, self.head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = split(query.forward(xs)?)?;
        let k = split(key.forward(xs)?)?;
        let v = split(value.forward(xs)?)?;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let scores = (q.matmul(&k.t()?)? * scale)?.broadcast_add(&mask.reshape((b, 1, 1, len))?)?;
        let probs = self
            .probs_dropout
            .forward(&softmax_last(&scores, self.mode)?, rng)?;
        probs
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, len, h))
    }
}

struct FeedForward {
    intermediate: Dense,
    output: Dense,
    norm: LayerNorm,
    act: HiddenAct,
    dropout: Dropout,
    mode: Mode,
}

impl FeedForward {
    fn load(cfg: &BertConfig, mode: Mode, vb: VarBuilder) -> Result<Self> {
        let intermediate = linear(
            cfg.hidden_size,
            cfg.intermediate_size,
            vb.pp("intermediate").pp("dense"),
        )?;
        let output = linear(
            cfg.intermediate_size,
            cfg.hidden_size,
            vb.pp("output").pp("dense"),
        )?;
        Ok(FeedForward {
            intermediate: Dense::new(vec![intermediate], mode)?,
            output: Dense::new(vec![output], mode)?,
            norm: LayerNorm::load(
                cfg.hidden_size,
                cfg.layer_norm_eps,
                mode,
                vb.pp("output").pp("LayerNorm"),
            )?,
            act: cfg.hidden_act,
            dropout: Dropout::new(cfg.hidden_dropout_prob as f32),
            mode,
        })
    }

    fn forward(&self, xs: &Tensor, rng: Option<&TrainRng>) -> Result<Tensor> {
        if self.mode == Mode::Inference {
            // GELU and the residual inside the two GEMMs; no dropout when serving.
            let inner = match self.act {
                HiddenAct::Gelu => self.intermediate.forward_with(xs, None, true)?,
                HiddenAct::GeluNew => self.intermediate.forward(xs)?.gelu()?,
                HiddenAct::Relu => self.intermediate.forward(xs)?.relu()?,
            };
            return self
                .norm
                .forward(&self.output.forward_with(&inner, Some(xs), false)?);
        }
        let inner = self.intermediate.forward(xs)?;
        let inner = match self.act {
            HiddenAct::Gelu => inner.gelu_erf()?,
            HiddenAct::GeluNew => inner.gelu()?,
            HiddenAct::Relu => inner.relu()?,
        };
        let out = self.dropout.forward(&self.output.forward(&inner)?, rng)?;
        self.norm.forward(&out.add(xs)?)
    }
}

struct Layer {
    attention: Attention,
    feed_forward: FeedForward,
}

/// BERT's encoder stack with its embeddings and (when the checkpoint has one) the pooler.
pub struct Bert {
    embeddings: Embeddings,
    layers: Vec<Layer>,
    pooler: Option<Linear>,
    span: tracing::Span,
}

impl Bert {
    /// `vb` points at the encoder's root (the folder prefix `bert.` of a classifier
    /// checkpoint already applied). `with_pooler` requires `pooler.dense` to exist.
    pub fn load(cfg: &BertConfig, mode: Mode, with_pooler: bool, vb: VarBuilder) -> Result<Self> {
        let embeddings = Embeddings::load(cfg, mode, vb.pp("embeddings"))?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| {
                let lvb = vb.pp("encoder").pp("layer").pp(i);
                Ok(Layer {
                    attention: Attention::load(cfg, mode, lvb.pp("attention"))?,
                    feed_forward: FeedForward::load(cfg, mode, lvb.clone())?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let pooler = if with_pooler {
            Some(linear(
                cfg.hidden_size,
                cfg.hidden_size,
                vb.pp("pooler").pp("dense"),
            )?)
        } else {
            None
        };
        Ok(Bert {
            embeddings,
            layers,
            pooler,
            span: tracing::trace_span!("bert"),
        })
    }

    /// The last hidden state, `[batch, len, hidden]`. `ids`, `type_ids` and `mask` are
    /// `[batch, len]` u32; `mask` is 1 for real tokens and 0 for padding. `rng` turns
    /// dropout on (training).
    pub fn forward(
        &self,
        ids: &Tensor,
        type_ids: &Tensor,
        mask: &Tensor,
        rng: Option<&TrainRng>,
    ) -> Result<Tensor> {
        let _enter = self.span.enter();
        let mut xs = self.embeddings.forward(ids, type_ids, rng)?;
        let additive = additive_mask(mask, xs.dtype())?;
        for layer in &self.layers {
            let _layer = tracing::trace_span!("layer").entered();
            xs = layer.attention.forward(&xs, &additive, rng)?;
            xs = layer.feed_forward.forward(&xs, rng)?;
        }
        Ok(xs)
    }

    /// Swaps every dense layer of the encoder (not the pooler) for int8 weights, one scale per
    /// output column, multiplied with int8 activations (see `int8`). Serving only; an opt-in
    /// per model, since it changes the outputs.
    pub fn quantize_int8(&mut self) -> Result<()> {
        for layer in &mut self.layers {
            let mut dense: Vec<&mut Dense> = vec![
                &mut layer.attention.output,
                &mut layer.feed_forward.intermediate,
                &mut layer.feed_forward.output,
            ];
            if let Projections::Fused(qkv) = &mut layer.attention.projections {
                dense.push(qkv);
            }
            for d in dense {
                match d {
                    Dense::Infer(kernel) => kernel.quantize_int8()?,
                    Dense::Train(_) => candle_core::bail!("int8 is for the serving encoder"),
                }
            }
        }
        Ok(())
    }

    /// The last hidden state of a packed batch, `[tokens, hidden]` (serving only).
    pub fn forward_packed(&self, packed: &Packed, device: &Device) -> Result<Tensor> {
        let _enter = self.span.enter();
        let mut xs = self.embeddings.forward_packed(packed, device)?;
        for layer in &self.layers {
            let _layer = tracing::trace_span!("layer").entered();
            xs = layer.attention.forward_packed(&xs, &packed.bounds)?;
            xs = layer.feed_forward.forward(&xs, None)?;
        }
        Ok(xs)
    }

    /// The word embedding table, `[vocab, hidden]` (a masked-LM head's tied output layer).
    pub fn word_embeddings(&self) -> &Tensor {
        self.embeddings.word.embeddings()
    }

    /// BERT's pooler: `tanh(dense(h[:, 0]))`, the sentence vector classifiers read.
    pub fn pool(&self, hidden: &Tensor) -> Result<Tensor> {
        self.pool_first(&hidden.narrow(1, 0, 1)?.squeeze(1)?)
    }

    /// The pooler over each sequence's first token, `[batch, hidden]`.
    pub fn pool_first(&self, cls: &Tensor) -> Result<Tensor> {
        match &self.pooler {
            Some(dense) => dense.forward(cls)?.tanh(),
            None => Ok(cls.clone()),
        }
    }
}

/// `[batch, len]` 0/1 → `[batch, len]` with 0 for kept tokens and -10000 for padding, the
/// value BERT was trained with.
fn additive_mask(mask: &Tensor, dtype: DType) -> Result<Tensor> {
    (mask.to_dtype(dtype)? - 1.0)? * 10000.0
}

/// A `[batch, len]` u32 tensor from row-major values.
pub fn batch_tensor(values: &[u32], batch: usize, len: usize, device: &Device) -> Result<Tensor> {
    Tensor::from_slice(values, (batch, len), device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_nn::VarMap;

    /// The serving path (packed tokens, fused projections and attention, vectorised GELU
    /// and softmax) computes what the trainable path of plain candle ops computes on the
    /// padded batch, at every real token.
    #[test]
    fn the_packed_serving_path_equals_the_padded_trainable_path() {
        use super::super::tokenize::TokenBatch;
        let device = Device::Cpu;
        let cfg = BertConfig::fresh(50, 48, 2, 4, 64, 0);
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
        let trainable = Bert::load(&cfg, Mode::Trainable, true, vb.clone()).unwrap();
        let serving = Bert::load(&cfg, Mode::Inference, true, vb).unwrap();
        // Lengths 7, 3 and 5 padded to 7; 40 copies also take the kernels' parallel paths.
        for copies in [1usize, 40] {
            let lens = [7usize, 3, 5];
            let b = lens.len() * copies;
            let mut batch = TokenBatch {
                ids: vec![0; b * 7],
                type_ids: vec![0; b * 7],
                mask: vec![0; b * 7],
                batch: b,
                len: 7,
            };
            for row in 0..b {
                for t in 0..lens[row % 3] {
                    batch.ids[row * 7 + t] = ((row * 7 + t * 3) % 49 + 1) as u32;
                    batch.type_ids[row * 7 + t] = (t >= 2) as u32;
                    batch.mask[row * 7 + t] = 1;
                }
            }
            let t = |v: &[u32]| batch_tensor(v, b, 7, &device).unwrap();
            let padded = trainable
                .forward(&t(&batch.ids), &t(&batch.type_ids), &t(&batch.mask), None)
                .unwrap();
            let packed = batch.pack().unwrap();
            let got = serving.forward_packed(&packed, &device).unwrap();
            let mut diff = 0f32;
            for row in 0..b {
                let start = packed.bounds[row];
                let n = packed.bounds[row + 1] - start;
                let want = padded.get(row).unwrap().narrow(0, 0, n).unwrap();
                let mine = got.narrow(0, start, n).unwrap();
                let d: f32 = (want - mine)
                    .unwrap()
                    .abs()
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .max(0)
                    .unwrap()
                    .to_scalar()
                    .unwrap();
                diff = diff.max(d);
            }
            assert!(diff < 1e-4, "batch {b}: max difference {diff}");
        }
    }
}
