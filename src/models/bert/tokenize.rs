//! From a request's inputs to token ids: either strings through `tokenizer.json`, or ids the
//! client tokenised itself (`input_ids`, `attention_mask`, `token_type_ids`). Either way the
//! batch is padded to its longest member only, never to the tokenizer file's fixed length,
//! and cut at the model's maximum length.
//! It stops at token ids: it never runs the encoder and knows nothing of versions or
//! transports.

use std::path::Path;

use tokenizers::{EncodeInput, Tokenizer, TruncationParams, TruncationStrategy};

use crate::models::LoadError;
use crate::servable::{Inputs, ServableError, TensorSpec};
use crate::tensor::{DType, TensorData};

/// Token ids of one batch, row-major `[batch, len]`, padded with `pad_id` and mask 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenBatch {
    pub ids: Vec<u32>,
    pub type_ids: Vec<u32>,
    pub mask: Vec<u32>,
    pub batch: usize,
    pub len: usize,
}

impl TokenBatch {
    /// The batch with its padding removed, for the serving encoder. A row whose mask is all
    /// 0 has nothing to encode and is refused.
    pub fn pack(&self) -> Result<Packed, ServableError> {
        let mut packed = Packed {
            bounds: vec![0],
            ..Packed::default()
        };
        for row in 0..self.batch {
            let at = row * self.len;
            for col in 0..self.len {
                if self.mask[at + col] != 0 {
                    packed.ids.push(self.ids[at + col]);
                    packed.type_ids.push(self.type_ids[at + col]);
                    packed.positions.push(col as u32);
                }
            }
            if packed.ids.len() == *packed.bounds.last().expect("starts with 0") {
                return Err(ServableError::InvalidInput(format!(
                    "row {row} has no tokens: its `attention_mask` is all 0"
                )));
            }
            packed.bounds.push(packed.ids.len());
        }
        Ok(packed)
    }
}

/// A batch without padding: the real tokens of every sequence laid end to end, each with
/// the position it had in its padded row. Every layer of BERT but attention works token by
/// token, so the encoder never computes a padding position.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Packed {
    pub ids: Vec<u32>,
    pub type_ids: Vec<u32>,
    pub positions: Vec<u32>,
    /// Sequence `i` is tokens `bounds[i]..bounds[i + 1]`; `bounds` starts at 0.
    pub bounds: Vec<usize>,
}

impl Packed {
    pub fn sequences(&self) -> usize {
        self.bounds.len() - 1
    }

    /// Consecutive groups of whole sequences of at most `max_tokens` tokens each (a longer
    /// sequence is a group of its own), in order.
    pub fn split(self, max_tokens: usize) -> Vec<Packed> {
        if self.ids.len() <= max_tokens {
            return vec![self];
        }
        let mut groups = Vec::new();
        let mut first = 0;
        while first < self.sequences() {
            let start = self.bounds[first];
            let mut last = first + 1;
            while last < self.sequences() && self.bounds[last + 1] - start <= max_tokens {
                last += 1;
            }
            let end = self.bounds[last];
            groups.push(Packed {
                ids: self.ids[start..end].to_vec(),
                type_ids: self.type_ids[start..end].to_vec(),
                positions: self.positions[start..end].to_vec(),
                bounds: self.bounds[first..=last]
                    .iter()
                    .map(|b| b - start)
                    .collect(),
            });
            first = last;
        }
        groups
    }
}

pub struct TextEncoder {
    tokenizer: Tokenizer,
    max_len: usize,
    pad_id: u32,
}

impl TextEncoder {
    /// Loads `dir/tokenizer.json`, cutting inputs at `max_len` tokens.
    pub fn load(dir: &Path, max_len: usize, pad_id: u32) -> Result<Self, LoadError> {
        let path = dir.join("tokenizer.json");
        if !path.is_file() {
            return Err(LoadError::missing("tokenizer.json"));
        }
        let tokenizer = Tokenizer::from_file(&path)
            .map_err(|e| LoadError::invalid("tokenizer.json", e.to_string()))?;
        Self::new(tokenizer, max_len, pad_id)
            .map_err(|e| LoadError::invalid("tokenizer.json", e.to_string()))
    }

    /// Wraps a tokenizer: no padding of its own (batches pad to their longest member here),
    /// truncation at `max_len` tokens.
    pub fn new(mut tokenizer: Tokenizer, max_len: usize, pad_id: u32) -> tokenizers::Result<Self> {
        tokenizer.with_padding(None);
        tokenizer.with_truncation(Some(TruncationParams {
            max_length: max_len,
            strategy: TruncationStrategy::LongestFirst,
            ..Default::default()
        }))?;
        Ok(TextEncoder {
            tokenizer,
            max_len,
            pad_id,
        })
    }

    /// The truncation length configured for this tokenizer file (sentence-transformers and
    /// transformers both cut at this when they have no better setting).
    pub fn file_max_length(dir: &Path) -> Option<usize> {
        let text = std::fs::read_to_string(dir.join("tokenizer.json")).ok()?;
        let json: serde_json::Value = serde_json::from_str(&text).ok()?;
        json.get("truncation")?
            .get("max_length")?
            .as_u64()
            .map(|n| n as usize)
    }

    pub fn max_len(&self) -> usize {
        self.max_len
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Tokenises a batch of texts, or of text pairs when `pairs` is given.
    pub fn encode(
        &self,
        texts: &[Vec<u8>],
        pairs: Option<&[Vec<u8>]>,
    ) -> Result<TokenBatch, ServableError> {
        let mut encodings = Vec::with_capacity(texts.len());
        for (i, text) in texts.iter().enumerate() {
            let first = utf8("text", i, text)?;
            let input = match pairs {
                Some(pairs) => {
                    EncodeInput::Dual(first.into(), utf8("text_pair", i, &pairs[i])?.into())
                }
                None => EncodeInput::Single(first.into()),
            };
            let encoding = self.tokenizer.encode(input, true).map_err(|e| {
                ServableError::InvalidInput(format!("cannot tokenise input `text`[{i}]: {e}"))
            })?;
            encodings.push(encoding);
        }
        let len = encodings
            .iter()
            .map(|e| e.get_ids().len())
            .max()
            .unwrap_or(0);
        let mut batch = TokenBatch {
            ids: vec![self.pad_id; texts.len() * len],
            type_ids: vec![0; texts.len() * len],
            mask: vec![0; texts.len() * len],
            batch: texts.len(),
            len,
        };
        for (row, encoding) in encodings.iter().enumerate() {
            let n = encoding.get_ids().len();
            let at = row * len;
            batch.ids[at..at + n].copy_from_slice(encoding.get_ids());
            batch.type_ids[at..at + n].copy_from_slice(encoding.get_type_ids());
            batch.mask[at..at + n].fill(1);
        }
        Ok(batch)
    }
}

fn utf8<'a>(input: &str, index: usize, bytes: &'a [u8]) -> Result<&'a str, ServableError> {
    std::str::from_utf8(bytes).map_err(|e| {
        ServableError::InvalidInput(format!("input `{input}`[{index}] is not valid UTF-8: {e}"))
    })
}

/// The inputs every BERT servable takes: strings, or pre-tokenised ids.
pub fn input_specs(with_pair: bool) -> Vec<TensorSpec> {
    let mut specs = vec![TensorSpec::new("text", DType::String, &[-1]).optional()];
    if with_pair {
        specs.push(TensorSpec::new("text_pair", DType::String, &[-1]).optional());
    }
    for name in ["input_ids", "attention_mask", "token_type_ids"] {
        specs.push(
            TensorSpec::new(name, DType::Int64, &[-1, -1])
                .or_dtype(DType::Int32)
                .optional(),
        );
    }
    specs
}

/// Limits that pre-tokenised ids must respect.
pub struct IdLimits {
    pub vocab_size: usize,
    pub type_vocab_size: usize,
    pub max_len: usize,
}

/// Turns checked inputs into a token batch: `text` (and `text_pair`) through the tokenizer,
/// or `input_ids` with optional `attention_mask` / `token_type_ids`.
pub fn tokens_from_inputs(
    inputs: &Inputs,
    encoder: &TextEncoder,
    limits: &IdLimits,
) -> Result<TokenBatch, ServableError> {
    let strings = |name: &str| match inputs.get(name).map(|t| t.data()) {
        Some(TensorData::String(v)) => Some(v.as_slice()),
        _ => None,
    };
    let has_ids = inputs.contains_key("input_ids");
    match (strings("text"), has_ids) {
        (Some(_), true) => Err(ServableError::InvalidInput(
            "send either `text` or `input_ids`, not both".into(),
        )),
        (Some(texts), false) => {
            if let Some(extra) = ["attention_mask", "token_type_ids"]
                .into_iter()
                .find(|n| inputs.contains_key(*n))
            {
                return Err(ServableError::InvalidInput(format!(
                    "`{extra}` goes with `input_ids`; with `text` the server tokenises and builds it"
                )));
            }
            encoder.encode(texts, strings("text_pair"))
        }
        (None, true) => {
            if inputs.contains_key("text_pair") {
                return Err(ServableError::InvalidInput(
                    "`text_pair` goes with `text`; with `input_ids` encode the pair in the ids and `token_type_ids`".into(),
                ));
            }
            tokens_from_ids(inputs, limits)
        }
        (None, false) => Err(ServableError::InvalidInput(
            "send `text` (strings) or `input_ids` (token ids)".into(),
        )),
    }
}

fn ids_of(inputs: &Inputs, name: &str) -> Option<(Vec<i64>, usize, usize)> {
    let t = inputs.get(name)?;
    let (b, l) = (t.shape()[0], t.shape()[1]);
    let values = match t.data() {
        TensorData::Int64(v) => v.clone(),
        TensorData::Int32(v) => v.iter().map(|&x| x as i64).collect(),
        _ => return None,
    };
    Some((values, b, l))
}

fn tokens_from_ids(inputs: &Inputs, limits: &IdLimits) -> Result<TokenBatch, ServableError> {
    let bad = |m: String| Err(ServableError::InvalidInput(m));
    let (ids, batch, len) = ids_of(inputs, "input_ids").expect("checked by the signature");
    if len == 0 {
        return bad("`input_ids` has sequences of length 0".into());
    }
    if len > limits.max_len {
        return bad(format!(
            "`input_ids` has sequences of {len} tokens; this model takes at most {}",
            limits.max_len
        ));
    }
    let check = |name: &str, values: &[i64], bound: usize| -> Result<Vec<u32>, ServableError> {
        values
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                if v < 0 || v as usize >= bound {
                    Err(ServableError::InvalidInput(format!(
                        "`{name}`[{}][{}] = {v} is outside [0, {bound})",
                        i / len,
                        i % len
                    )))
                } else {
                    Ok(v as u32)
                }
            })
            .collect()
    };
    let same_shape = |name: &str, b: usize, l: usize| -> Result<(), ServableError> {
        if (b, l) != (batch, len) {
            return Err(ServableError::InvalidInput(format!(
                "`{name}` has shape [{b},{l}] but `input_ids` has [{batch},{len}]"
            )));
        }
        Ok(())
    };
    let ids = check("input_ids", &ids, limits.vocab_size)?;
    let mask = match ids_of(inputs, "attention_mask") {
        Some((m, b, l)) => {
            same_shape("attention_mask", b, l)?;
            check("attention_mask", &m, 2)?
        }
        None => vec![1; ids.len()],
    };
    let type_ids = match ids_of(inputs, "token_type_ids") {
        Some((t, b, l)) => {
            same_shape("token_type_ids", b, l)?;
            check("token_type_ids", &t, limits.type_vocab_size)?
        }
        None => vec![0; ids.len()],
    };
    if let Some(row) = mask.chunks(len).position(|r| r.iter().all(|&m| m == 0)) {
        return bad(format!("`attention_mask`[{row}] masks every token"));
    }
    Ok(TokenBatch {
        ids,
        type_ids,
        mask,
        batch,
        len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_drops_padding_and_splitting_keeps_whole_sequences_in_order() {
        // Rows of 3, 1 and 4 real tokens, padded to 4.
        let batch = TokenBatch {
            ids: vec![5, 6, 7, 0, 8, 0, 0, 0, 9, 10, 11, 12],
            type_ids: vec![0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 1],
            mask: vec![1, 1, 1, 0, 1, 0, 0, 0, 1, 1, 1, 1],
            batch: 3,
            len: 4,
        };
        let packed = batch.pack().unwrap();
        assert_eq!(packed.ids, vec![5, 6, 7, 8, 9, 10, 11, 12]);
        assert_eq!(packed.type_ids, vec![0, 0, 1, 0, 0, 0, 1, 1]);
        assert_eq!(packed.positions, vec![0, 1, 2, 0, 0, 1, 2, 3]);
        assert_eq!(packed.bounds, vec![0, 3, 4, 8]);

        let groups = packed.clone().split(4);
        let bounds: Vec<Vec<usize>> = groups.iter().map(|g| g.bounds.clone()).collect();
        assert_eq!(bounds, vec![vec![0, 3, 4], vec![0, 4]]);
        assert_eq!(groups[1].ids, vec![9, 10, 11, 12]);
        // A sequence longer than the budget is a group of its own.
        let groups = packed.clone().split(2);
        assert_eq!(groups.len(), 3);
        assert_eq!(groups.iter().map(|g| g.ids.len()).sum::<usize>(), 8);
        assert_eq!(packed.clone().split(100), vec![packed]);

        let mut empty_row = batch.clone();
        empty_row.mask[4] = 0;
        assert!(empty_row
            .pack()
            .unwrap_err()
            .to_string()
            .contains("row 1 has no tokens"));
    }
}
