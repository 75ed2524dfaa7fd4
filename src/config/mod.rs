//! Configuration files in TensorFlow Serving's formats: `models.config` and the other
//! text-format files the flags point at. Parsing and validation only; nothing here acts.

pub mod batching;
pub mod flags;
pub mod model_server_config;
pub mod ssl;
pub mod text_format;

pub use batching::BatchingOptions;
pub use flags::{LogFormat, ServerArgs};
pub use model_server_config::{BasePath, ConfigError, ModelDef, ModelsConfig, VersionPolicy};
