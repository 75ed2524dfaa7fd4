//! candle-serving: a TensorFlow-Serving-compatible model server for Candle models.
//!
//! Control path: [`source`] watches each model's base path and reports the version folders it
//! finds → [`manager`] applies the version policy, loads new versions through [`models`] on
//! its own thread pool and publishes an immutable snapshot of what serves.
//! Data path: a transport ([`transport`]) converts a request → [`serving::Core`] resolves the
//! model spec to a servable, checks the inputs against its signature and runs it on the
//! inference pool → the transport converts the outputs back.
//!
//! This file only declares the modules (and which features compile `doctor`, `train` and
//! `lexicon`); no logic lives here. ARCHITECTURE.md draws both paths in full.

pub mod admission;
pub mod batching;
pub mod config;
pub mod connect;
#[cfg(feature = "doctor")]
pub mod doctor;
pub mod error;
pub mod jobs;
#[cfg(any(feature = "doctor", feature = "train"))]
pub mod lexicon;
pub mod manager;
pub mod metrics;
pub mod models;
pub mod pool;
pub mod proto;
pub mod redis_conn;
pub mod rollout;
pub mod servable;
pub mod server;
pub mod serving;
pub mod source;
pub mod tensor;
#[cfg(feature = "train")]
pub mod train;
pub mod transport;
pub mod util;

/// Makes ring the process's TLS crypto provider, for the libraries that take the process
/// default (tonic's TLS, object storage's HTTP client). rustls picks one by itself only when
/// exactly one is compiled in, and a build with other crates' providers (the tests' HTTP
/// client brings aws-lc) would otherwise refuse to start TLS. Idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
