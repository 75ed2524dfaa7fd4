//! The doctor's client of the model server: gRPC Predict on the tagger (symptoms in a
//! message), the relevance classifier (does a message continue the previous one) and the
//! entity review model (is a candidate span a real symptom mention).
//! One lazily connected channel, reused by every call, each call with a deadline; over TLS
//! when the address is `https://`, since patients' messages cross the network to it. It
//! reads no files: the caller hands it the CA certificate's PEM.

use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::admission::Budget;
use crate::proto::tensorflow::serving::{
    prediction_service_client::PredictionServiceClient, ModelSpec, PredictRequest,
};
use crate::tensor::{tensor_from_proto, tensor_to_proto, Tensor, TensorData};

#[derive(Debug, Clone, thiserror::Error)]
#[error("model server: {0}")]
pub struct ModelError(pub String);

/// A symptom mention the tagger found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mention {
    pub text: String,
    pub kind: String,
}

#[derive(Clone)]
pub struct ModelClient {
    client: PredictionServiceClient<Channel>,
    address: String,
    ner_model: String,
    relevance_model: String,
    review_model: String,
    timeout: Duration,
}

impl ModelClient {
    /// `address` is `host:port` or an `http://` URL (plain text); nothing connects until the
    /// first call. For `https://`, see [`ModelClient::with_ca`].
    pub fn new(
        address: &str,
        ner_model: &str,
        relevance_model: &str,
        timeout: Duration,
    ) -> Result<Self, ModelError> {
        Self::with_ca(address, None, ner_model, relevance_model, timeout)
    }

    /// Like [`ModelClient::new`], and an `https://host:port` address is reached over TLS,
    /// trusting only the CA whose PEM is `ca_pem` and checking that the server's
    /// certificate names `host`. An https address without a CA, or a CA with a plain-text
    /// address, is an error rather than a silent downgrade.
    pub fn with_ca(
        address: &str,
        ca_pem: Option<&[u8]>,
        ner_model: &str,
        relevance_model: &str,
        timeout: Duration,
    ) -> Result<Self, ModelError> {
        let url = if address.contains("://") {
            address.to_string()
        } else {
            format!("http://{address}")
        };
        let invalid = |e: &dyn std::fmt::Display| {
            ModelError(format!("invalid model server address {address}: {e}"))
        };
        let endpoint = Endpoint::from_shared(url.clone()).map_err(|e| invalid(&e))?;
        let https = endpoint.uri().scheme_str() == Some("https");
        let endpoint = match (https, ca_pem) {
            (true, Some(pem)) => {
                if !String::from_utf8_lossy(pem).contains("-----BEGIN CERTIFICATE-----") {
                    return Err(ModelError(
                        "the model server's CA file (--model_server_ca_file) holds no PEM \
                         certificate"
                            .into(),
                    ));
                }
                let host = endpoint
                    .uri()
                    .host()
                    .ok_or_else(|| invalid(&"no host"))?
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string();
                crate::install_crypto_provider();
                let tls = ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(pem))
                    .domain_name(host);
                endpoint
                    .tls_config(tls)
                    .map_err(|e| ModelError(format!("TLS to the model server at {url}: {e}")))?
            }
            (true, None) => {
                return Err(ModelError(format!(
                    "{url} is https: give the CA certificate that signed the model server's \
                     certificate (--model_server_ca_file PATH, PEM)"
                )))
            }
            (false, Some(_)) => {
                return Err(ModelError(format!(
                    "a CA certificate (--model_server_ca_file) was given but {url} is not \
                     https://; use --model_server=https://host:port"
                )))
            }
            (false, None) => endpoint,
        };
        let channel = endpoint
            .connect_timeout(timeout)
            .timeout(timeout)
            .tcp_nodelay(true)
            .connect_lazy();
        Ok(ModelClient {
            client: PredictionServiceClient::new(channel),
            address: url,
            ner_model: ner_model.to_string(),
            relevance_model: relevance_model.to_string(),
            review_model: "entity_review".to_string(),
            timeout,
        })
    }

    /// The entity review model's name (`entity_review` unless changed here).
    pub fn with_review_model(mut self, name: &str) -> Self {
        self.review_model = name.to_string();
        self
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    async fn predict(
        &self,
        model: &str,
        inputs: Vec<(&str, Tensor)>,
    ) -> Result<std::collections::HashMap<String, Tensor>, ModelError> {
        let request = PredictRequest {
            model_spec: Some(ModelSpec {
                name: model.to_string(),
                ..Default::default()
            }),
            inputs: inputs
                .into_iter()
                .map(|(k, t)| (k.to_string(), tensor_to_proto(&t)))
                .collect(),
            ..Default::default()
        };
        let mut client = self.client.clone();
        let response = tokio::time::timeout(self.timeout, client.predict(request))
            .await
            .map_err(|_| {
                ModelError(format!(
                    "`{model}` did not answer within {:?}",
                    self.timeout
                ))
            })?
            .map_err(|s| {
                ModelError(format!(
                    "`{model}` at {}: {}: {}",
                    self.address,
                    s.code(),
                    s.message()
                ))
            })?
            .into_inner();
        response
            .outputs
            .iter()
            .map(|(k, v)| {
                Ok((
                    k.clone(),
                    tensor_from_proto(v, &mut Budget::unbounded())
                        .map_err(|e| ModelError(format!("`{model}` output `{k}`: {e}")))?,
                ))
            })
            .collect()
    }

    /// The entities the tagger finds in `text`.
    pub async fn entities(&self, text: &str) -> Result<Vec<Mention>, ModelError> {
        let mut rows = self.entities_batch(&[text]).await?;
        Ok(rows.pop().unwrap_or_default())
    }

    /// The entities the tagger finds in each of `texts`, in one request.
    pub async fn entities_batch(&self, texts: &[&str]) -> Result<Vec<Vec<Mention>>, ModelError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let outputs = self
            .predict(&self.ner_model, vec![("text", Tensor::strings(texts))])
            .await?;
        let strings = |name: &str| -> Result<(Vec<String>, Vec<usize>), ModelError> {
            match outputs.get(name) {
                Some(t) => match t.data() {
                    TensorData::String(v) => Ok((
                        v.iter()
                            .map(|b| String::from_utf8_lossy(b).into_owned())
                            .collect(),
                        t.shape().to_vec(),
                    )),
                    _ => Err(self.not_a_tagger(name)),
                },
                None => Err(self.not_a_tagger(name)),
            }
        };
        let ((names, shape), (kinds, _)) = (strings("entities")?, strings("entity_types")?);
        // [batch, width]: one row of entities per text, padded with empty strings.
        let width = match shape.as_slice() {
            [rows, width] if *rows == texts.len() => *width,
            [width] if texts.len() == 1 => *width,
            _ => {
                return Err(ModelError(format!(
                    "`{}` answered entities of shape {shape:?} for {} texts",
                    self.ner_model,
                    texts.len()
                )))
            }
        };
        if names.len() != kinds.len() || names.len() != width * texts.len() {
            return Err(ModelError(format!(
                "`{}` answered {} entities and {} types for {} texts of width {width}",
                self.ner_model,
                names.len(),
                kinds.len(),
                texts.len()
            )));
        }
        Ok((0..texts.len())
            .map(|row| {
                (row * width..(row + 1) * width)
                    .filter(|&i| !names[i].is_empty())
                    .map(|i| Mention {
                        text: names[i].clone(),
                        kind: kinds[i].clone(),
                    })
                    .collect()
            })
            .collect())
    }

    fn not_a_tagger(&self, output: &str) -> ModelError {
        ModelError(format!(
            "`{}` returned no `{output}` strings; is it a tagger?",
            self.ner_model
        ))
    }

    /// Whether `new` continues `previous`, and the probability of that.
    pub async fn related(&self, previous: &str, new: &str) -> Result<(bool, f32), ModelError> {
        let outputs = self
            .predict(
                &self.relevance_model,
                vec![
                    ("text", Tensor::strings([previous])),
                    ("text_pair", Tensor::strings([new])),
                ],
            )
            .await?;
        let (Some(TensorData::String(labels)), Some(TensorData::Float(probabilities))) = (
            outputs.get("labels").map(Tensor::data),
            outputs.get("probabilities").map(Tensor::data),
        ) else {
            return Err(ModelError(format!(
                "`{}` returned no labels; is it a classifier?",
                self.relevance_model
            )));
        };
        let label = labels
            .first()
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .unwrap_or_default();
        let related = label == "related";
        let p = if probabilities.len() >= 2 {
            probabilities[1]
        } else if related {
            1.0
        } else {
            0.0
        };
        Ok((related, p))
    }

    /// For each `(span, context)` (as [`crate::lexicon::review::review_input`] makes them),
    /// the review model's probability that the span is a real symptom mention; one request.
    pub async fn review(&self, candidates: &[(String, String)]) -> Result<Vec<f32>, ModelError> {
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let outputs = self
            .predict(
                &self.review_model,
                vec![
                    (
                        "text",
                        Tensor::strings(candidates.iter().map(|c| c.0.as_str())),
                    ),
                    (
                        "text_pair",
                        Tensor::strings(candidates.iter().map(|c| c.1.as_str())),
                    ),
                ],
            )
            .await?;
        let classes = crate::lexicon::review::LABELS.len();
        match outputs.get("probabilities").map(Tensor::data) {
            Some(TensorData::Float(p)) if p.len() == candidates.len() * classes => {
                let symptom = crate::lexicon::review::LABELS
                    .iter()
                    .position(|l| *l == "symptom")
                    .expect("the review labels name `symptom`");
                Ok(p.chunks(classes).map(|row| row[symptom]).collect())
            }
            _ => Err(ModelError(format!(
                "`{}` returned no probabilities of {classes} classes for {} candidates; is it \
                 the entity review classifier?",
                self.review_model,
                candidates.len()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(address: &str, ca_pem: Option<&[u8]>) -> Result<ModelClient, ModelError> {
        ModelClient::with_ca(address, ca_pem, "ner", "relevance", Duration::from_secs(1))
    }

    #[tokio::test]
    async fn https_needs_a_ca_and_a_ca_needs_https() {
        let e = client("https://models.internal:8500", None).err().unwrap();
        assert!(e.to_string().contains("--model_server_ca_file"), "{e}");
        let pem: &[u8] = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let e = client("127.0.0.1:8500", Some(pem)).err().unwrap();
        assert!(e.to_string().contains("not https"), "{e}");
        let e = client("http://127.0.0.1:8500", Some(pem)).err().unwrap();
        assert!(e.to_string().contains("not https"), "{e}");
        let e = client(
            "https://models.internal:8500",
            Some(b"not a certificate".as_slice()),
        )
        .err()
        .unwrap();
        assert!(e.to_string().contains("no PEM certificate"), "{e}");
    }

    #[tokio::test]
    async fn plain_addresses_work_as_before() {
        assert_eq!(
            client("127.0.0.1:8500", None).unwrap().address(),
            "http://127.0.0.1:8500"
        );
        assert_eq!(
            client("http://127.0.0.1:8500", None).unwrap().address(),
            "http://127.0.0.1:8500"
        );
    }
}
