//! Admission: what every request is checked against before the server does work in
//! proportion to what the request claims. A 1 KB message may claim a shape of 64 M strings;
//! the claim is checked ([`Budget`]) before a byte is allocated for it, decoded bytes and
//! elements are counted per request, strings are measured before any tokenizer sees them,
//! JSON nesting is measured before it is parsed ([`check_json`]), and a concurrency gate
//! ([`Gate`]) shared by both transports bounds how many requests are decoded and run at
//! once. Memory under load is then bounded by these settings, not by clients.
//!
//! This module owns the limits and their error messages; it knows nothing of models,
//! signatures or wire formats beyond raw JSON bytes.

mod gate;
mod wire;

pub use gate::{Gate, GateLayer, Permit};
pub use wire::{scan_infer_request, scan_predict_request};

use std::time::Duration;

use crate::tensor::{format_shape, Tensor, TensorData};

/// The request limits, from the server's flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// `--max_request_batch_size`: rows (dimension 0) of one request.
    pub max_batch: usize,
    /// `--max_request_dim`: any one dimension of an input.
    pub max_dim: usize,
    /// `--max_request_elements`: elements of all inputs of one request together.
    pub max_elements: usize,
    /// `--max_request_bytes`: bytes of one request, on the wire (gRPC message, REST body)
    /// and once decoded (all inputs together, strings counted by length).
    pub max_bytes: usize,
    /// `--max_string_length`: characters of one string input.
    pub max_string_chars: usize,
    /// `--max_json_depth`: nesting of a REST body.
    pub max_json_depth: usize,
    /// `--max_concurrent_requests`: requests decoded and run at once, gRPC and REST
    /// together. 0 disables the gate.
    pub max_concurrent: usize,
    /// `--admission_wait_ms`: how long a request beyond the budget waits for a turn before
    /// RESOURCE_EXHAUSTED / 429.
    pub max_wait: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_batch: 256,
            max_dim: 1 << 16,
            max_elements: 1 << 18,
            max_bytes: 4 << 20,
            max_string_chars: 1 << 16,
            max_json_depth: 32,
            max_concurrent: 32,
            max_wait: Duration::from_secs(2),
        }
    }
}

/// A request beyond a limit. The message names the limit and the flag that sets it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("dimension {index} of shape {shape} is {size}, above the limit of {limit} (--max_request_dim)")]
    Dim {
        shape: String,
        index: usize,
        size: u64,
        limit: usize,
    },
    #[error("shape {shape} has {count} elements; a request may hold at most {limit} elements in all its inputs (--max_request_elements)")]
    Elements {
        shape: String,
        count: String,
        limit: usize,
    },
    #[error("the request holds more than {limit} values in its tensors (--max_request_elements)")]
    WireElements { limit: usize },
    #[error("the request decodes to more than {limit} bytes (--max_request_bytes)")]
    Bytes { limit: usize },
    #[error("string {index} has more than {limit} characters (--max_string_length)")]
    StringLength { index: usize, limit: usize },
    #[error("the JSON body nests deeper than {limit} levels (--max_json_depth)")]
    Depth { limit: usize },
    #[error("the JSON body holds more than {limit} values (--max_request_elements)")]
    JsonValues { limit: usize },
}

impl LimitError {
    /// Whether the request is refused for its size (HTTP 413 over REST).
    pub fn is_too_large(&self) -> bool {
        matches!(self, LimitError::Bytes { .. })
    }
}

/// What one request may still decode. Every input of a request draws from the same budget.
#[derive(Debug, Clone)]
pub struct Budget {
    max_dim: usize,
    max_string_chars: usize,
    elements_left: usize,
    bytes_left: usize,
    max_elements: usize,
    max_bytes: usize,
}

impl Budget {
    pub fn new(limits: &Limits) -> Self {
        Budget {
            max_dim: limits.max_dim,
            max_string_chars: limits.max_string_chars,
            elements_left: limits.max_elements,
            bytes_left: limits.max_bytes,
            max_elements: limits.max_elements,
            max_bytes: limits.max_bytes,
        }
    }

    /// No limits: for decoding what a trusted peer (our own model server) answers.
    pub fn unbounded() -> Self {
        Budget {
            max_dim: usize::MAX,
            max_string_chars: usize::MAX,
            elements_left: usize::MAX,
            bytes_left: usize::MAX,
            max_elements: usize::MAX,
            max_bytes: usize::MAX,
        }
    }

    /// Admits a claimed shape, before anything is allocated for it: every dimension within
    /// `max_dim`, the element count (computed without overflow) within what is left.
    /// Returns the element count.
    pub fn admit_shape(&mut self, shape: &[u64]) -> Result<usize, LimitError> {
        let text = || format_shape(shape);
        let mut count: u128 = 1;
        for (index, &size) in shape.iter().enumerate() {
            if size > self.max_dim as u64 {
                return Err(LimitError::Dim {
                    shape: text(),
                    index,
                    size,
                    limit: self.max_dim,
                });
            }
            count = count.saturating_mul(size as u128);
        }
        if count > self.elements_left as u128 {
            return Err(LimitError::Elements {
                shape: text(),
                count: count.to_string(),
                limit: self.max_elements,
            });
        }
        let count = count as usize;
        self.elements_left -= count;
        Ok(count)
    }

    /// Admits `items × item_bytes` decoded bytes, computed without overflow.
    pub fn admit_bytes(&mut self, items: usize, item_bytes: usize) -> Result<(), LimitError> {
        match items.checked_mul(item_bytes) {
            Some(n) if n <= self.bytes_left => {
                self.bytes_left -= n;
                Ok(())
            }
            _ => Err(LimitError::Bytes {
                limit: self.max_bytes,
            }),
        }
    }

    /// Admits string `index` (its bytes, `copies` times, and its length in characters).
    /// Measuring stops at the limit, so a 20 MB string costs at most that much work.
    pub fn admit_string(
        &mut self,
        index: usize,
        bytes: &[u8],
        copies: usize,
    ) -> Result<(), LimitError> {
        if bytes.len() > self.max_string_chars && too_many_chars(bytes, self.max_string_chars) {
            return Err(LimitError::StringLength {
                index,
                limit: self.max_string_chars,
            });
        }
        // A string costs its bytes plus the vector that holds it.
        self.admit_bytes(copies, bytes.len() + std::mem::size_of::<Vec<u8>>())
    }
}

/// Whether `bytes` holds more than `limit` characters (UTF-8 lead bytes; invalid UTF-8 is
/// counted byte by byte, which only errs towards refusing).
fn too_many_chars(bytes: &[u8], limit: usize) -> bool {
    if bytes.len() > limit.saturating_mul(4) {
        return true;
    }
    bytes.iter().filter(|&&b| (b & 0xC0) != 0x80).count() > limit
}

impl Budget {
    /// Admits a tensor that was built from a body already read in full (REST JSON): its
    /// shape, its bytes and every string's length.
    pub fn admit_tensor(&mut self, tensor: &Tensor) -> Result<(), LimitError> {
        let dims: Vec<u64> = tensor.shape().iter().map(|&d| d as u64).collect();
        let count = self.admit_shape(&dims)?;
        match tensor.data() {
            TensorData::String(values) => {
                for (index, value) in values.iter().enumerate() {
                    self.admit_string(index, value, 1)?;
                }
                Ok(())
            }
            other => self.admit_bytes(count, other.item_size()),
        }
    }
}

/// Measures a JSON body before it is parsed: nesting within `max_depth` and at most
/// `max_values` scalars and containers in all, so neither serde's recursion nor the parsed
/// tree can grow beyond what the limits allow. One pass over the bytes, no allocation.
/// Malformed JSON is left for the parser to report.
pub fn check_json(body: &[u8], max_depth: usize, max_values: usize) -> Result<(), LimitError> {
    let mut depth = 0usize;
    let mut values = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut in_scalar = false;
    for &b in body {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        let starts_value = match b {
            b'"' => {
                in_string = true;
                in_scalar = false;
                true
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > max_depth {
                    return Err(LimitError::Depth { limit: max_depth });
                }
                in_scalar = false;
                true
            }
            b']' | b'}' => {
                depth = depth.saturating_sub(1);
                in_scalar = false;
                false
            }
            b',' | b':' | b' ' | b'\t' | b'\n' | b'\r' => {
                in_scalar = false;
                false
            }
            _ => !std::mem::replace(&mut in_scalar, true),
        };
        if starts_value {
            values += 1;
            if values > max_values {
                return Err(LimitError::JsonValues { limit: max_values });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shape_bomb_is_refused_before_anything_is_allocated() {
        let mut budget = Budget::new(&Limits::default());
        let e = budget.admit_shape(&[67_108_864]).unwrap_err();
        assert!(matches!(e, LimitError::Dim { .. }), "{e}");
        assert!(e.to_string().contains("--max_request_dim"));
        let e = budget.admit_shape(&[8192, 8192]).unwrap_err();
        assert!(matches!(e, LimitError::Elements { .. }), "{e}");
        // Products that overflow u64 are still refused, not wrapped.
        let mut wide = Budget::new(&Limits {
            max_dim: usize::MAX,
            ..Limits::default()
        });
        let e = wide.admit_shape(&[u64::MAX, u64::MAX, 2]).unwrap_err();
        assert!(matches!(e, LimitError::Elements { .. }), "{e}");
    }

    #[test]
    fn inputs_of_one_request_share_the_budget() {
        let limits = Limits {
            max_elements: 10,
            ..Limits::default()
        };
        let mut budget = Budget::new(&limits);
        assert_eq!(budget.admit_shape(&[2, 3]).unwrap(), 6);
        assert!(budget.admit_shape(&[5]).is_err());
        assert_eq!(budget.admit_shape(&[4]).unwrap(), 4);
    }

    #[test]
    fn bytes_are_counted_without_overflow() {
        let mut budget = Budget::new(&Limits::default());
        assert!(budget
            .admit_bytes(usize::MAX, 8)
            .unwrap_err()
            .is_too_large());
        budget.admit_bytes(1000, 8).unwrap();
        let e = budget
            .admit_string(0, &vec![b'a'; 1024], 1 << 16)
            .unwrap_err();
        assert!(e.to_string().contains("--max_request_bytes"), "{e}");
    }

    #[test]
    fn strings_are_measured_in_characters() {
        let limits = Limits {
            max_string_chars: 4,
            ..Limits::default()
        };
        let mut budget = Budget::new(&limits);
        budget.admit_string(0, "头痛发烧".as_bytes(), 1).unwrap();
        let e = budget
            .admit_string(3, "头痛发烧了".as_bytes(), 1)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "string 3 has more than 4 characters (--max_string_length)"
        );
        assert!(budget.admit_string(1, &vec![b'x'; 20 << 20], 1).is_err());
    }

    #[test]
    fn json_is_measured_before_it_is_parsed() {
        let deep = "[".repeat(100_000);
        assert_eq!(
            check_json(deep.as_bytes(), 32, 1000),
            Err(LimitError::Depth { limit: 32 })
        );
        let ok = br#"{"instances": [[1, 2], [3, 4]], "s": "[[[[[[[[ not nesting \" ["}"#;
        check_json(ok, 3, 100).unwrap();
        assert!(check_json(ok, 2, 100).is_err());
        // 1 object + 1 string key... every scalar, container and key counts once.
        check_json(br#"[1,2,3]"#, 4, 4).unwrap();
        assert_eq!(
            check_json(br#"[1,2,3,4]"#, 4, 4),
            Err(LimitError::JsonValues { limit: 4 })
        );
        check_json(br#"[-1.5e3, true, null]"#, 4, 4).unwrap();
    }
}
