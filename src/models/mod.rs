//! Loading a version folder into a [`Servable`]: `config.json`'s `architectures[0]` picks the
//! kind. This module owns the model code and the files of a version folder; it does not know
//! about versions, policies or requests in flight.

pub mod bert;
pub mod tagger;

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::servable::Servable;

/// Why a version folder could not become a servable. The manager prefixes the model and
/// version: "model `ner` version 3 failed to load: tokenizer.json: missing".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    #[error("{file}: missing")]
    Missing { file: String },
    #[error("{file}: {message}")]
    Invalid { file: String, message: String },
    #[error("config.json: architecture `{0}` is not supported; this server loads BertModel, BertForSequenceClassification and BiLstmCrf")]
    UnsupportedArchitecture(String),
    #[error("the version folder {0} does not exist (removed during the load?)")]
    FolderGone(String),
}

impl LoadError {
    pub fn missing(file: &str) -> Self {
        LoadError::Missing { file: file.into() }
    }

    pub fn invalid(file: &str, message: impl Into<String>) -> Self {
        LoadError::Invalid {
            file: file.into(),
            message: message.into(),
        }
    }
}

/// Reads and parses a JSON file of the version folder.
pub(crate) fn read_json<T: DeserializeOwned>(dir: &Path, file: &str) -> Result<T, LoadError> {
    let text = match std::fs::read_to_string(dir.join(file)) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(LoadError::missing(file)),
        Err(e) => return Err(LoadError::invalid(file, e.to_string())),
    };
    serde_json::from_str(&text).map_err(|e| LoadError::invalid(file, e.to_string()))
}

/// Opens `model.safetensors` as a variable builder on the CPU in f32. The file is read into
/// memory, not mapped: a writer that rewrites or truncates it in place while it loads then
/// gives a parse error (and a retry), where a mapping would kill the process with SIGBUS.
/// The buffer lives only as long as the builder, while the weights are copied out.
pub fn open_weights(dir: &Path) -> Result<VarBuilder<'static>, LoadError> {
    let path = dir.join("model.safetensors");
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(LoadError::missing("model.safetensors"))
        }
        Err(e) => return Err(LoadError::invalid("model.safetensors", e.to_string())),
    };
    VarBuilder::from_buffered_safetensors(bytes, DType::F32, &Device::Cpu)
        .map_err(|e| LoadError::invalid("model.safetensors", e.to_string()))
}

/// How to load a version, beyond what its folder says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Quantise a BERT encoder's dense layers to 8 bits (`--int8_models`).
    pub int8: bool,
}

/// Loads the version folder `dir`.
pub fn load_servable(dir: &Path) -> Result<Arc<dyn Servable>, LoadError> {
    load_servable_with(dir, &LoadOptions::default())
}

/// Loads the version folder `dir` with `options`.
pub fn load_servable_with(
    dir: &Path,
    options: &LoadOptions,
) -> Result<Arc<dyn Servable>, LoadError> {
    if !dir.is_dir() {
        return Err(LoadError::FolderGone(dir.display().to_string()));
    }
    #[derive(Deserialize)]
    struct Architectures {
        #[serde(default)]
        architectures: Vec<String>,
    }
    let arch: Architectures = read_json(dir, "config.json")?;
    let Some(kind) = arch.architectures.first() else {
        return Err(LoadError::invalid(
            "config.json",
            "`architectures` is missing or empty; it names the kind of model",
        ));
    };
    Ok(match kind.as_str() {
        "BertModel" => Arc::new(bert::EmbeddingServable::load(
            dir,
            &read_json(dir, "config.json")?,
            options,
        )?),
        "BertForSequenceClassification" => Arc::new(bert::ClassifierServable::load(
            dir,
            &read_json(dir, "config.json")?,
            options,
        )?),
        "BiLstmCrf" if options.int8 => {
            return Err(LoadError::invalid(
                "config.json",
                "int8 is offered for BERT models only; remove this model from --int8_models",
            ))
        }
        "BiLstmCrf" => Arc::new(tagger::TaggerServable::load(dir)?),
        other => return Err(LoadError::UnsupportedArchitecture(other.to_string())),
    })
}
