//! `config.json` of a `BiLstmCrf` version folder: what the serving path reads and the
//! trainer writes.
//! Deserialisation and validation only: it reads no file itself.

use serde::{Deserialize, Serialize};

/// `config.json` of a `BiLstmCrf` version folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaggerConfig {
    pub architectures: Vec<String>,
    #[serde(default = "model_type")]
    pub model_type: String,
    /// Characters in `vocab.txt`, padding and unknown included.
    pub vocab_size: usize,
    pub embedding_dim: usize,
    /// LSTM units per direction.
    pub hidden_size: usize,
    /// BIO tag names; the CRF's tag `i` is `tags[i]`.
    pub tags: Vec<String>,
    /// Longest text in characters; longer input is refused.
    pub max_length: usize,
    #[serde(default = "vocab_file")]
    pub vocab_file: String,
    /// Dropout on the LSTM outputs while training.
    #[serde(default)]
    pub dropout: f32,
}

fn model_type() -> String {
    "bilstm_crf".into()
}

fn vocab_file() -> String {
    "vocab.txt".into()
}

impl TaggerConfig {
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.tags.is_empty() || self.tags.len() > u16::MAX as usize {
            return Err(format!("`tags` must list between 1 and {} tags", u16::MAX));
        }
        if self.vocab_size < 2
            || self.embedding_dim == 0
            || self.hidden_size == 0
            || self.max_length == 0
        {
            return Err(
                "vocab_size, embedding_dim, hidden_size and max_length must be positive".into(),
            );
        }
        Ok(())
    }
}
