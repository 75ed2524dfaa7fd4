//! `--batching_parameters_file`: TF Serving's `BatchingParameters` in protobuf text format,
//! validated into [`BatchingOptions`].
//! Parsing and validation only: `crate::batching` acts on the result.

use std::path::Path;
use std::time::Duration;

use crate::config::text_format;
use crate::proto::tensorflow::serving::BatchingParameters;

/// How requests to one model version are gathered into batches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchingOptions {
    /// Most rows (sum of the requests' batch sizes) in one batch.
    pub max_batch_size: usize,
    /// Longest the oldest request of a batch waits for more to join. 0: a batch goes as soon
    /// as a batch thread is free, with whatever queued while the previous one ran. A batch
    /// stops waiting as soon as it has as many rows as the previous batch (see the
    /// scheduler), so a lone client never waits.
    pub batch_timeout: Duration,
    /// Queue capacity, in batches of `max_batch_size` rows; beyond it requests are refused
    /// with RESOURCE_EXHAUSTED.
    pub max_enqueued_batches: usize,
    /// Batches of one version that may run at once.
    pub num_batch_threads: usize,
    /// Accepted and checked as TF Serving checks them; batches are not padded up to these
    /// sizes, since candle runs any batch size.
    pub allowed_batch_sizes: Vec<usize>,
    /// Merge requests whose rank-2 inputs differ in length, padding with zeros (ids and
    /// masks) or empty strings; without it only equal shapes merge.
    pub pad_variable_length_inputs: bool,
}

impl Default for BatchingOptions {
    /// Used for every field the file leaves unset. Sized for CPU encoders: one batch at a
    /// time uses every core through the matmuls.
    fn default() -> Self {
        BatchingOptions {
            max_batch_size: 32,
            batch_timeout: Duration::from_millis(2),
            max_enqueued_batches: 16,
            num_batch_threads: 1,
            allowed_batch_sizes: Vec::new(),
            pad_variable_length_inputs: false,
        }
    }
}

/// A wrapper value that must be positive.
fn positive(name: &str, value: Option<i64>, default: usize) -> Result<usize, String> {
    match value {
        None => Ok(default),
        Some(v) if v >= 1 => usize::try_from(v).map_err(|_| format!("{name} is too large: {v}")),
        Some(v) => Err(format!("{name} must be at least 1, got {v}")),
    }
}

impl BatchingOptions {
    pub fn from_proto(p: &BatchingParameters) -> Result<Self, String> {
        let d = BatchingOptions::default();
        let max_batch_size = positive("max_batch_size", p.max_batch_size, d.max_batch_size)?;
        let batch_timeout = match p.batch_timeout_micros {
            None => d.batch_timeout,
            Some(us) if us >= 0 => Duration::from_micros(us as u64),
            Some(us) => {
                return Err(format!(
                    "batch_timeout_micros must not be negative, got {us}"
                ))
            }
        };
        let mut allowed = Vec::with_capacity(p.allowed_batch_sizes.len());
        for &size in &p.allowed_batch_sizes {
            if size < 1 || allowed.last().is_some_and(|&last| size as usize <= last) {
                return Err(format!(
                    "allowed_batch_sizes must be positive and increasing, got {:?}",
                    p.allowed_batch_sizes
                ));
            }
            allowed.push(size as usize);
        }
        if allowed.last().is_some_and(|&last| last != max_batch_size) {
            return Err(format!(
                "the last of allowed_batch_sizes ({:?}) must equal max_batch_size ({max_batch_size})",
                p.allowed_batch_sizes
            ));
        }
        Ok(BatchingOptions {
            max_batch_size,
            batch_timeout,
            max_enqueued_batches: positive(
                "max_enqueued_batches",
                p.max_enqueued_batches,
                d.max_enqueued_batches,
            )?,
            num_batch_threads: positive(
                "num_batch_threads",
                p.num_batch_threads,
                d.num_batch_threads,
            )?,
            allowed_batch_sizes: allowed,
            pad_variable_length_inputs: p.pad_variable_length_inputs,
        })
    }

    /// Parses text-format `BatchingParameters`; `origin` names the text in errors.
    pub fn from_text(text: &str, origin: &str) -> anyhow::Result<Self> {
        let proto: BatchingParameters =
            text_format::parse("tensorflow.serving.BatchingParameters", text, origin)?;
        Self::from_proto(&proto).map_err(|m| anyhow::anyhow!("{origin}: {m}"))
    }

    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("--batching_parameters_file {}: {e}", path.display()))?;
        Self::from_text(&text, &path.display().to_string())
    }

    /// Rows that may wait at once.
    pub fn queue_capacity(&self) -> usize {
        self.max_batch_size
            .saturating_mul(self.max_enqueued_batches)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_tf_servings_text_format_and_fills_defaults() {
        let o = BatchingOptions::from_text(
            "max_batch_size { value: 16 }\nbatch_timeout_micros { value: 2000 }\n\
             num_batch_threads { value: 2 }\nallowed_batch_sizes: 4\nallowed_batch_sizes: 16\n\
             pad_variable_length_inputs: true\nthread_pool_name { value: \"x\" }",
            "batching.config",
        )
        .unwrap();
        assert_eq!(o.max_batch_size, 16);
        assert_eq!(o.batch_timeout, Duration::from_millis(2));
        assert_eq!(o.num_batch_threads, 2);
        assert_eq!(
            o.max_enqueued_batches,
            BatchingOptions::default().max_enqueued_batches
        );
        assert_eq!(o.allowed_batch_sizes, vec![4, 16]);
        assert!(o.pad_variable_length_inputs);
        assert_eq!(
            BatchingOptions::from_text("", "empty").unwrap(),
            BatchingOptions::default()
        );
    }

    #[test]
    fn refuses_what_tf_serving_refuses_with_the_reason() {
        for (text, why) in [
            (
                "max_batch_size { value: 0 }",
                "max_batch_size must be at least 1",
            ),
            ("batch_timeout_micros { value: -5 }", "must not be negative"),
            (
                "max_batch_size { value: 8 } allowed_batch_sizes: 4 allowed_batch_sizes: 2",
                "increasing",
            ),
            (
                "max_batch_size { value: 8 } allowed_batch_sizes: 4",
                "must equal max_batch_size",
            ),
            ("max_batch_size: 8", "b.config:1:"),
        ] {
            let err = BatchingOptions::from_text(text, "b.config")
                .unwrap_err()
                .to_string();
            assert!(err.contains(why), "{text}: {err}");
        }
    }
}
