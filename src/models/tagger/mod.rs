//! The `BiLstmCrf` servable: Chinese (or any) text in, BIO tags and entities with character
//! spans out. Characters map through `vocab.txt` (unknown ones to `[UNK]`); texts longer than
//! the model's `max_length` are refused, and the limit is in the signature's metadata.
//! It serves only: training and the candle graph live in `crate::train`; it knows nothing of
//! versions or transports.

pub mod config;
pub mod crf;
pub mod fast;
pub mod text;

use std::path::Path;

use crate::models::{read_json, LoadError};
use crate::servable::{
    Inputs, Outputs, Servable, ServableError, Signature, SignatureMap, TensorSpec,
    DEFAULT_SIGNATURE,
};
use crate::tensor::{DType, Tensor, TensorData};

use self::config::TaggerConfig;
use self::fast::FastTagger;
use self::text::{entities, CharVocab};

pub struct TaggerServable {
    config: TaggerConfig,
    vocab: CharVocab,
    fast: FastTagger,
    signatures: SignatureMap,
}

impl TaggerServable {
    pub fn load(dir: &Path) -> Result<Self, LoadError> {
        let config: TaggerConfig = read_json(dir, "config.json")?;
        config
            .validate()
            .map_err(|m| LoadError::invalid("config.json", m))?;
        let vocab_path = dir.join(&config.vocab_file);
        if !vocab_path.is_file() {
            return Err(LoadError::missing(&config.vocab_file));
        }
        let vocab =
            CharVocab::read(&vocab_path).map_err(|m| LoadError::invalid(&config.vocab_file, m))?;
        if vocab.len() != config.vocab_size {
            return Err(LoadError::invalid(
                &config.vocab_file,
                format!(
                    "has {} entries but config.json says vocab_size {}",
                    vocab.len(),
                    config.vocab_size
                ),
            ));
        }
        let vb = super::open_weights(dir)?;
        let fast = FastTagger::load(&config, &vb)
            .map_err(|e| LoadError::invalid("model.safetensors", e.to_string()))?;
        let limit = format!("at most {} characters per text", config.max_length);
        let batch_by_chars = |name: &str, dtype: DType| {
            TensorSpec::new(name, dtype, &[-1, -1]).with_dim_names(&["batch", &limit])
        };
        let signature = Signature::predict(
            vec![TensorSpec::new("text", DType::String, &[-1])
                .with_dim_names(&[&format!("batch ({limit})")])],
            vec![
                batch_by_chars("tags", DType::String),
                TensorSpec::new("lengths", DType::Int32, &[-1]),
                TensorSpec::new("entities", DType::String, &[-1, -1]),
                TensorSpec::new("entity_types", DType::String, &[-1, -1]),
                TensorSpec::new("entity_spans", DType::Int32, &[-1, -1, 2]),
            ],
        );
        Ok(TaggerServable {
            config,
            vocab,
            fast,
            signatures: SignatureMap::from([(DEFAULT_SIGNATURE.to_string(), signature)]),
        })
    }

    pub fn max_length(&self) -> usize {
        self.config.max_length
    }
}

impl Servable for TaggerServable {
    fn kind(&self) -> &'static str {
        "tagger"
    }

    fn signatures(&self) -> &SignatureMap {
        &self.signatures
    }

    fn run(&self, _signature: &str, inputs: &Inputs) -> Result<Outputs, ServableError> {
        let Some(TensorData::String(texts)) = inputs.get("text").map(Tensor::data) else {
            return Err(ServableError::InvalidInput("send `text`".into()));
        };
        let mut all_tags: Vec<Vec<&str>> = Vec::with_capacity(texts.len());
        let mut found = Vec::with_capacity(texts.len());
        for (i, bytes) in texts.iter().enumerate() {
            let text = std::str::from_utf8(bytes).map_err(|e| {
                ServableError::InvalidInput(format!("input `text`[{i}] is not valid UTF-8: {e}"))
            })?;
            let chars: Vec<char> = text.chars().collect();
            if chars.len() > self.config.max_length {
                return Err(ServableError::InvalidInput(format!(
                    "input `text`[{i}] has {} characters; this model takes at most {}",
                    chars.len(),
                    self.config.max_length
                )));
            }
            let path = self.fast.decode(&self.vocab.encode(&chars));
            let tags: Vec<&str> = path.iter().map(|&t| self.config.tags[t].as_str()).collect();
            found.push(entities(&chars, &tags));
            all_tags.push(tags);
        }
        let batch = texts.len();
        let width = all_tags.iter().map(Vec::len).max().unwrap_or(0);
        let most = found.iter().map(Vec::len).max().unwrap_or(0);
        let mut tags = Vec::with_capacity(batch * width);
        let mut names = Vec::with_capacity(batch * most);
        let mut kinds = Vec::with_capacity(batch * most);
        let mut spans = Vec::with_capacity(batch * most * 2);
        for (row_tags, row_entities) in all_tags.iter().zip(&found) {
            tags.extend(row_tags.iter().map(|t| t.as_bytes().to_vec()));
            tags.extend(std::iter::repeat_n(Vec::new(), width - row_tags.len()));
            for e in row_entities {
                names.push(e.text.as_bytes().to_vec());
                kinds.push(e.kind.as_bytes().to_vec());
                spans.extend([e.start as i32, e.end as i32]);
            }
            let pad = most - row_entities.len();
            names.extend(std::iter::repeat_n(Vec::new(), pad));
            kinds.extend(std::iter::repeat_n(Vec::new(), pad));
            spans.extend(std::iter::repeat_n(-1, 2 * pad));
        }
        let tensor = |shape: Vec<usize>, data| {
            Tensor::new(shape, data).map_err(|e| ServableError::Internal(e.to_string()))
        };
        Ok(Outputs::from([
            (
                "tags".to_string(),
                tensor(vec![batch, width], TensorData::String(tags))?,
            ),
            (
                "lengths".to_string(),
                tensor(
                    vec![batch],
                    TensorData::Int32(all_tags.iter().map(|t| t.len() as i32).collect()),
                )?,
            ),
            (
                "entities".to_string(),
                tensor(vec![batch, most], TensorData::String(names))?,
            ),
            (
                "entity_types".to_string(),
                tensor(vec![batch, most], TensorData::String(kinds))?,
            ),
            (
                "entity_spans".to_string(),
                tensor(vec![batch, most, 2], TensorData::Int32(spans))?,
            ),
        ]))
    }
}
