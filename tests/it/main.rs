//! The integration tests, as one test binary whose modules are the former test files: each
//! binary links the whole server, and twenty of them took gigabytes of disk and minutes of
//! linking for nothing. `tests/hostile.rs` stays a binary of its own, because it measures
//! its own process's memory, which other tests running beside it would grow.
//!
//! One module: `cargo test --all-features --test it jobs::`.

#[path = "../common/mod.rs"]
mod common;

mod batching;
mod binary;
mod cli;
mod deploy;
#[cfg(feature = "doctor")]
mod doctor;
mod grpc_api;
mod hot_updates;
mod jobs;
mod minilm;
mod object_storage;
mod oip;
mod python_clients;
mod relevance;
mod reload_config;
mod replicas;
mod rest_api;
mod rollouts;
mod tagger;
#[cfg(feature = "doctor")]
mod tls;
