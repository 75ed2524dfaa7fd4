//! What a loaded model version is to the rest of the server: a [`Servable`] with named
//! signatures that turns input tensors into output tensors. This module owns the signature
//! description and the checks every request passes before a model sees it; it knows nothing
//! about protos, transports or how versions are managed.

mod signature;

pub use signature::{Signature, SignatureMap, TensorSpec, DEFAULT_SIGNATURE, PREDICT_METHOD};

use std::collections::BTreeMap;

use crate::tensor::Tensor;

/// Named input tensors of one request.
pub type Inputs = BTreeMap<String, Tensor>;
/// Named output tensors of one request.
pub type Outputs = BTreeMap<String, Tensor>;

/// Why a servable refused or failed a request. `Clone` so one failure can fan out to every
/// request of a batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServableError {
    /// The request does not fit the model (too long, bad token id, invalid UTF-8...).
    #[error("{0}")]
    InvalidInput(String),
    /// The model itself failed; the message is the underlying error.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<candle_core::Error> for ServableError {
    fn from(e: candle_core::Error) -> Self {
        ServableError::Internal(e.to_string())
    }
}

/// A model version ready to serve. Implementations are immutable after loading, so one
/// instance serves any number of concurrent requests.
pub trait Servable: Send + Sync + 'static {
    /// A short name for the kind (`embedding`, `classifier`, `tagger`), for logs and status.
    fn kind(&self) -> &'static str;

    fn signatures(&self) -> &SignatureMap;

    /// Runs one batch through `signature`. The caller has already checked `inputs` against
    /// the signature with [`Signature::check_inputs`] (names, dtypes, ranks, batch sizes).
    fn run(&self, signature: &str, inputs: &Inputs) -> Result<Outputs, ServableError>;

    /// For the Classify API: the signature to run and the names of its label and score
    /// outputs, when this servable classifies. Examples' features map onto that signature's
    /// string inputs by name.
    fn classification(&self) -> Option<ClassificationOutputs> {
        None
    }

    /// Whether server-side batching may merge requests to this servable.
    fn batch_policy(&self) -> BatchPolicy {
        BatchPolicy::Never
    }

    /// When batching pads a rank-2 input of this servable to a common width, the input
    /// that marks real positions (1) against padding (0): `(padded input, mask input)`.
    /// The batcher writes the mask for requests that did not send one, so padding is never
    /// read as tokens.
    fn padding_mask(&self) -> Option<(&'static str, &'static str)> {
        None
    }
}

/// How server-side batching may treat a servable's requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchPolicy {
    /// Requests run one by one (outputs that are not one row per input row, for example).
    Never,
    /// Rows are independent and every output has one row per input row; the cost of a batch
    /// does not depend on how row lengths mix (the model packs rows without padding).
    Rows,
    /// As `Rows`, but the model pads each batch to its longest row, so requests of similar
    /// length should be batched together.
    ByLength,
}

/// Where the Classify API finds its answer in a servable's outputs.
#[derive(Debug, Clone)]
pub struct ClassificationOutputs {
    pub signature: &'static str,
    /// `[batch, classes]` probabilities.
    pub scores: &'static str,
    /// The class names, in the order of the score columns.
    pub class_names: Vec<String>,
}
