//! A PredictRequest measured in its protobuf wire form, before prost decodes it. Decoding
//! allocates per value: a one-byte `string_val` costs three bytes on the wire and some 56 in
//! memory, so a 4 MiB message could become 75 MB before any limit is checked. This scan
//! counts the values of every input tensor (and the bytes of its strings) with no
//! allocation, so such a message is refused for what it holds, at the cost of one pass.
//! Field numbers are TF Serving's: PredictRequest.inputs = 2 (map entry: key 1, value 2);
//! TensorProto float_val 5, double_val 6, int_val 7, string_val 8, int64_val 10, bool_val 11,
//! half_val 13. ModelInferRequest's are in [`scan_infer_request`]. Malformed bytes are left
//! for prost to report.

use super::{LimitError, Limits};

/// Reads protobuf wire format without allocating.
struct Reader<'a> {
    bytes: &'a [u8],
}

enum Field<'a> {
    Varint,
    Fixed,
    Bytes(&'a [u8]),
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self.bytes.split_first()?;
            self.bytes = rest;
            value |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Some(value);
            }
        }
        None
    }

    /// The next field's number and payload, or `None` at the end or on malformed input.
    fn field(&mut self) -> Option<(u64, Field<'a>)> {
        if self.bytes.is_empty() {
            return None;
        }
        let key = self.varint()?;
        let field = match key & 7 {
            0 => {
                self.varint()?;
                Field::Varint
            }
            1 => {
                self.bytes = self.bytes.get(8..)?;
                Field::Fixed
            }
            5 => {
                self.bytes = self.bytes.get(4..)?;
                Field::Fixed
            }
            2 => {
                let len = usize::try_from(self.varint()?).ok()?;
                let (payload, rest) = (self.bytes.get(..len)?, self.bytes.get(len..)?);
                self.bytes = rest;
                Field::Bytes(payload)
            }
            _ => return None,
        };
        Some((key >> 3, field))
    }
}

/// Values a packed repeated field holds: fixed-width ones (`width` bytes) by size, varints
/// (`None`) by terminators.
fn packed_count(payload: &[u8], width: Option<usize>) -> usize {
    match width {
        Some(w) => payload.len() / w,
        None => payload.iter().filter(|&&b| b < 0x80).count(),
    }
}

/// Values and decoded bytes counted so far, against the limits.
struct Tally<'a> {
    elements: usize,
    bytes: usize,
    limits: &'a Limits,
}

impl<'a> Tally<'a> {
    fn new(limits: &'a Limits) -> Self {
        Tally {
            elements: 0,
            bytes: 0,
            limits,
        }
    }

    fn add(&mut self, count: usize, size: usize) -> Result<(), LimitError> {
        self.elements = self.elements.saturating_add(count);
        self.bytes = self.bytes.saturating_add(size);
        if self.elements > self.limits.max_elements {
            return Err(LimitError::WireElements {
                limit: self.limits.max_elements,
            });
        }
        if self.bytes > self.limits.max_bytes {
            return Err(LimitError::Bytes {
                limit: self.limits.max_bytes,
            });
        }
        Ok(())
    }

    /// A length-delimited value that decodes to its own vector.
    fn blob(&mut self, payload: &[u8]) -> Result<(), LimitError> {
        self.add(1, payload.len() + std::mem::size_of::<Vec<u8>>())
    }
}

/// Checks the values a PredictRequest's message carries against `limits`: all elements
/// together within `max_elements`, their decoded bytes (strings by length plus the vector
/// that holds each) within `max_bytes`.
pub fn scan_predict_request(message: &[u8], limits: &Limits) -> Result<(), LimitError> {
    let mut tally = Tally::new(limits);
    let mut request = Reader { bytes: message };
    while let Some((number, field)) = request.field() {
        let (2, Field::Bytes(entry)) = (number, field) else {
            continue;
        };
        let mut entry = Reader { bytes: entry };
        while let Some((number, field)) = entry.field() {
            let (2, Field::Bytes(tensor)) = (number, field) else {
                continue;
            };
            let mut tensor = Reader { bytes: tensor };
            while let Some((number, field)) = tensor.field() {
                match (number, field) {
                    (8, Field::Bytes(s)) => tally.blob(s)?,
                    (5 | 6 | 7 | 10 | 11 | 13, Field::Bytes(p)) => {
                        // TensorProto: float_val (5) fixed 4 bytes, double_val (6) fixed 8.
                        let width = match number {
                            5 => Some(4),
                            6 => Some(8),
                            _ => None,
                        };
                        let n = packed_count(p, width);
                        tally.add(n, n * 8)?;
                    }
                    (5 | 6 | 7 | 10 | 11 | 13, _) => tally.add(1, 8)?,
                    _ => {}
                }
            }
        }
    }
    Ok(())
}

/// The same check for the Open Inference Protocol's ModelInferRequest, whose every
/// repeated item decodes to something: parameters (4), inputs (5) with their shape (3),
/// parameters (4) and typed contents (5: numbers in 1-7, strings in 8), requested outputs
/// (6) and raw_input_contents (7). Field numbers are the protocol's.
pub fn scan_infer_request(message: &[u8], limits: &Limits) -> Result<(), LimitError> {
    // What one decoded item costs beyond its bytes on the wire: a parameter (a hash-map entry
    // with its key and value), an input or requested output (the struct and its maps).
    const PARAMETER: usize = 96;
    const TENSOR: usize = 160;
    let mut tally = Tally::new(limits);
    let mut request = Reader { bytes: message };
    while let Some((number, field)) = request.field() {
        match (number, field) {
            (4, Field::Bytes(entry)) => tally.add(1, PARAMETER + entry.len())?,
            (7, Field::Bytes(raw)) => tally.blob(raw)?,
            (6, Field::Bytes(output)) => {
                tally.add(1, TENSOR + output.len())?;
                let mut output = Reader { bytes: output };
                while let Some((number, field)) = output.field() {
                    if let (2, Field::Bytes(entry)) = (number, field) {
                        tally.add(1, PARAMETER + entry.len())?;
                    }
                }
            }
            (5, Field::Bytes(input)) => {
                tally.add(1, TENSOR)?;
                let mut input = Reader { bytes: input };
                while let Some((number, field)) = input.field() {
                    match (number, field) {
                        (3, Field::Bytes(p)) => {
                            let n = packed_count(p, None);
                            tally.add(n, n * 8)?;
                        }
                        (3, _) => tally.add(1, 8)?,
                        (4, Field::Bytes(entry)) => tally.add(1, PARAMETER + entry.len())?,
                        (5, Field::Bytes(contents)) => {
                            let mut contents = Reader { bytes: contents };
                            while let Some((number, field)) = contents.field() {
                                match (number, field) {
                                    (8, Field::Bytes(s)) => tally.blob(s)?,
                                    (1..=7, Field::Bytes(p)) => {
                                        // fp32_contents (6) fixed 4 bytes, fp64 (7) fixed 8.
                                        let width = match number {
                                            6 => Some(4),
                                            7 => Some(8),
                                            _ => None,
                                        };
                                        let n = packed_count(p, width);
                                        tally.add(n, n * 8)?;
                                    }
                                    (1..=7, _) => tally.add(1, 8)?,
                                    _ => {}
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            (4..=7, _) => tally.add(1, PARAMETER)?,
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::tensorflow::serving::PredictRequest;
    use crate::proto::tensorflow::TensorProto;
    use prost::Message;

    fn request(tensor: TensorProto) -> Vec<u8> {
        PredictRequest {
            inputs: [("text".to_string(), tensor)].into(),
            ..Default::default()
        }
        .encode_to_vec()
    }

    #[test]
    fn counts_strings_and_packed_values_without_decoding() {
        let limits = Limits::default();
        let ok = request(TensorProto {
            dtype: 7,
            string_val: vec![b"a".to_vec(); 1000],
            int64_val: vec![1; 1000],
            float_val: vec![0.5; 1000],
            ..Default::default()
        });
        scan_predict_request(&ok, &limits).unwrap();
        // 1.3 M one-byte strings: under 4 MiB on the wire, 70 MB once decoded. Each costs
        // its vector too, so the bytes limit trips (at ~168,000 strings)...
        let strings = request(TensorProto {
            dtype: 7,
            string_val: vec![b"a".to_vec(); 1_300_000],
            ..Default::default()
        });
        assert!(strings.len() < 4 << 20);
        assert_eq!(
            scan_predict_request(&strings, &limits),
            Err(LimitError::Bytes { limit: 4 << 20 })
        );
        // ...and with a larger byte budget, the element limit.
        let roomy = Limits {
            max_bytes: 1 << 30,
            ..Limits::default()
        };
        assert_eq!(
            scan_predict_request(&strings, &roomy),
            Err(LimitError::WireElements { limit: 1 << 18 })
        );
        // Few values, but long strings: the bytes limit.
        let long = request(TensorProto {
            dtype: 7,
            string_val: vec![vec![b'x'; 60_000]; 80],
            ..Default::default()
        });
        assert!(scan_predict_request(&long, &limits)
            .unwrap_err()
            .is_too_large());
        // Packed varints count one per value, not per byte.
        let ids = request(TensorProto {
            dtype: 9,
            int64_val: vec![300; 300_000],
            ..Default::default()
        });
        assert!(scan_predict_request(&ids, &limits).is_err());
    }

    #[test]
    fn infer_requests_are_counted_in_every_repeated_field() {
        use crate::proto::inference::{
            model_infer_request::{InferInputTensor, InferRequestedOutputTensor},
            InferParameter, InferTensorContents, ModelInferRequest,
        };
        let limits = Limits::default();
        let input = |contents: InferTensorContents, shape: Vec<i64>| InferInputTensor {
            name: "text".into(),
            datatype: "BYTES".into(),
            shape,
            contents: Some(contents),
            ..Default::default()
        };
        let ok = ModelInferRequest {
            inputs: vec![input(
                InferTensorContents {
                    bytes_contents: vec![b"a".to_vec(); 1000],
                    ..Default::default()
                },
                vec![1000],
            )],
            raw_input_contents: vec![vec![0; 1000]],
            ..Default::default()
        };
        scan_infer_request(&ok.encode_to_vec(), &limits).unwrap();
        // One-byte strings that would take 70 MB once decoded.
        let strings = ModelInferRequest {
            inputs: vec![input(
                InferTensorContents {
                    bytes_contents: vec![b"a".to_vec(); 1_300_000],
                    ..Default::default()
                },
                vec![1],
            )],
            ..Default::default()
        };
        assert!(strings.encoded_len() < 4 << 20);
        assert!(scan_infer_request(&strings.encode_to_vec(), &limits)
            .unwrap_err()
            .is_too_large());
        // A shape of a million dimensions; many empty raw entries; packed floats.
        let dims = ModelInferRequest {
            inputs: vec![input(InferTensorContents::default(), vec![1; 1_000_000])],
            ..Default::default()
        };
        assert!(scan_infer_request(&dims.encode_to_vec(), &limits).is_err());
        let raw = ModelInferRequest {
            raw_input_contents: vec![Vec::new(); 300_000],
            ..Default::default()
        };
        assert!(scan_infer_request(&raw.encode_to_vec(), &limits).is_err());
        // Requested outputs with many parameters each: each entry costs a map entry.
        let output = InferRequestedOutputTensor {
            name: "x".into(),
            parameters: (0..5000)
                .map(|i| (i.to_string(), InferParameter::default()))
                .collect(),
        };
        let outputs = ModelInferRequest {
            outputs: vec![output; 20],
            ..Default::default()
        };
        assert!(outputs.encoded_len() < 4 << 20);
        assert!(scan_infer_request(&outputs.encode_to_vec(), &limits)
            .unwrap_err()
            .is_too_large());
        let floats = ModelInferRequest {
            inputs: vec![input(
                InferTensorContents {
                    fp32_contents: vec![0.5; 300_000],
                    ..Default::default()
                },
                vec![300_000],
            )],
            ..Default::default()
        };
        assert_eq!(
            scan_infer_request(&floats.encode_to_vec(), &limits),
            Err(LimitError::WireElements { limit: 1 << 18 })
        );
    }

    #[test]
    fn malformed_bytes_are_left_for_the_decoder() {
        let limits = Limits::default();
        for bytes in [
            &[0xff_u8; 20][..],
            &[0x12, 0xff, 0xff, 0xff, 0xff, 0x0f],
            &[],
        ] {
            scan_predict_request(bytes, &limits).unwrap();
            scan_infer_request(bytes, &limits).unwrap();
        }
    }
}
