//! Shared helpers of the integration tests: tiny BERT version folders generated on the spot,
//! an in-process server on free loopback ports, gRPC clients, and waits on real readiness
//! signals (model status), never on sleeps.

#![allow(dead_code)]

pub mod process;
pub mod services;

use std::path::{Path, PathBuf};
use std::time::Duration;

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use candle_serving::config::ModelsConfig;
use candle_serving::models::bert::config::{BertConfig, HiddenAct};
use candle_serving::models::bert::model::{linear, Bert, Mode};
use candle_serving::proto::tensorflow::serving::{
    model_service_client::ModelServiceClient, model_spec,
    prediction_service_client::PredictionServiceClient, GetModelStatusRequest, ModelSpec,
    PredictRequest,
};
use candle_serving::proto::tensorflow::{tensor_shape_proto::Dim, TensorProto, TensorShapeProto};
use candle_serving::server::{Server, ServerOptions};
use candle_serving::train::bert_folder::{
    wordpiece_tokenizer, write_version_folder, SPECIAL_TOKENS,
};
use candle_serving::train::init::{bert_init, init_seeded};
use tonic::transport::Channel;

pub const WORDS: &[&str] = &[
    "the", "a", "fox", "dog", "cat", "jumps", "over", "lazy", "quick", "brown", "my", "head",
    "hurts", "fever", "cough", "i", "have", "and", "is", "it", "hello", "world", "how", "are",
    "you", ",", ".", "?", "!", "头", "痛", "发", "烧", "咳", "嗽", "我", "有", "点", "最", "近",
    "还", "肚", "子", "疼",
];

/// Which servable kind a fixture is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Embedding,
    Classifier,
}

pub fn vocab() -> Vec<String> {
    SPECIAL_TOKENS
        .iter()
        .chain(WORDS)
        .map(|s| s.to_string())
        .collect()
}

pub fn tiny_config(kind: Kind) -> BertConfig {
    let classifier = kind == Kind::Classifier;
    BertConfig {
        architectures: vec![if classifier {
            "BertForSequenceClassification"
        } else {
            "BertModel"
        }
        .into()],
        model_type: "bert".into(),
        vocab_size: vocab().len(),
        hidden_size: 32,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        intermediate_size: 64,
        hidden_act: HiddenAct::Gelu,
        hidden_dropout_prob: 0.1,
        attention_probs_dropout_prob: 0.1,
        max_position_embeddings: 64,
        type_vocab_size: 2,
        layer_norm_eps: 1e-12,
        pad_token_id: 0,
        position_embedding_type: "absolute".into(),
        id2label: classifier.then(|| {
            [("0", "negative"), ("1", "neutral"), ("2", "positive")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        }),
        label2id: None,
    }
}

/// Writes a random (seeded) tiny BERT of `kind` into `dir`.
pub fn write_tiny_bert(dir: &Path, kind: Kind, seed: u64) {
    let cfg = tiny_config(kind);
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    match kind {
        Kind::Embedding => {
            Bert::load(&cfg, Mode::Trainable, false, vb).unwrap();
        }
        Kind::Classifier => {
            Bert::load(&cfg, Mode::Trainable, true, vb.pp("bert")).unwrap();
            linear(cfg.hidden_size, 3, vb.pp("classifier")).unwrap();
        }
    }
    init_seeded(&varmap, seed, |name, shape| {
        // Larger weights than BERT's 0.02 so that different inputs give visibly different outputs.
        match bert_init(name, shape) {
            candle_serving::train::init::Init::Normal(_) => {
                candle_serving::train::init::Init::Normal(0.3)
            }
            other => other,
        }
    })
    .unwrap();
    let tokenizer = wordpiece_tokenizer(&vocab(), true, cfg.max_position_embeddings).unwrap();
    write_version_folder(dir, &cfg, &varmap, &tokenizer).unwrap();
}

/// Writes a version folder the way a careful deployer does: into a hidden temporary folder
/// beside the target, then one rename.
pub fn publish_tiny_bert(base: &Path, version: i64, kind: Kind, seed: u64) -> PathBuf {
    std::fs::create_dir_all(base).unwrap();
    let tmp = base.join(format!(".tmp-{version}"));
    write_tiny_bert(&tmp, kind, seed);
    let dst = base.join(version.to_string());
    std::fs::rename(&tmp, &dst).unwrap();
    dst
}

pub struct TestServer {
    pub server: Server,
    pub grpc: PredictionServiceClient<Channel>,
    pub models: ModelServiceClient<Channel>,
}

impl TestServer {
    pub async fn start(options: ServerOptions) -> TestServer {
        let server = Server::start(options).await.expect("server starts");
        let url = format!("http://{}", server.grpc_addr);
        let channel = Channel::from_shared(url)
            .unwrap()
            .connect()
            .await
            .expect("connects");
        TestServer {
            server,
            grpc: PredictionServiceClient::new(channel.clone()).max_decoding_message_size(1 << 30),
            models: ModelServiceClient::new(channel),
        }
    }

    /// Starts a server on `config_text` (relative base paths resolve against `dir`).
    pub async fn with_config(config_text: &str, dir: &Path) -> TestServer {
        let config =
            ModelsConfig::from_text(config_text, dir, "test config").expect("valid test config");
        TestServer::start(ServerOptions::local(config)).await
    }

    /// Waits until `model` version `version` reports `state` (a name like "AVAILABLE").
    pub async fn wait_for(&mut self, model: &str, version: i64, state: i32) {
        wait_for_state(&mut self.models, model, version, state).await
    }

    pub async fn stop(self) {
        self.server.shutdown().await.expect("clean shutdown");
    }
}

pub const LOADING: i32 = 20;
pub const AVAILABLE: i32 = 30;
pub const END: i32 = 50;

/// Polls GetModelStatus until `version` of `model` is in `state`, up to 60 seconds.
pub async fn wait_for_state(
    client: &mut ModelServiceClient<Channel>,
    model: &str,
    version: i64,
    state: i32,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    while tokio::time::Instant::now() < deadline {
        let request = GetModelStatusRequest {
            model_spec: Some(spec(model, None)),
        };
        match client.get_model_status(request).await {
            Ok(r) => {
                let r = r.into_inner();
                if r.model_version_status
                    .iter()
                    .any(|s| s.version == version && s.state == state)
                {
                    return;
                }
                last = format!("{:?}", r.model_version_status);
            }
            Err(e) => last = e.message().to_string(),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("model {model} version {version} never reached state {state}; last status: {last}");
}

pub fn spec(model: &str, version: Option<i64>) -> ModelSpec {
    ModelSpec {
        name: model.to_string(),
        signature_name: String::new(),
        version_choice: version.map(model_spec::VersionChoice::Version),
    }
}

pub fn label_spec(model: &str, label: &str) -> ModelSpec {
    ModelSpec {
        name: model.to_string(),
        signature_name: String::new(),
        version_choice: Some(model_spec::VersionChoice::VersionLabel(label.to_string())),
    }
}

pub fn shape(dims: &[i64]) -> Option<TensorShapeProto> {
    Some(TensorShapeProto {
        dim: dims
            .iter()
            .map(|&size| Dim {
                size,
                name: String::new(),
            })
            .collect(),
        unknown_rank: false,
    })
}

pub fn strings(values: &[&str]) -> TensorProto {
    TensorProto {
        dtype: 7,
        tensor_shape: shape(&[values.len() as i64]),
        string_val: values.iter().map(|s| s.as_bytes().to_vec()).collect(),
        ..Default::default()
    }
}

pub fn predict_request(spec: ModelSpec, inputs: &[(&str, TensorProto)]) -> PredictRequest {
    PredictRequest {
        model_spec: Some(spec),
        inputs: inputs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
        output_filter: vec![],
        ..Default::default()
    }
}

/// The float values of a response tensor (typed field or tensor_content).
pub fn floats(t: &TensorProto) -> Vec<f32> {
    if !t.float_val.is_empty() {
        t.float_val.clone()
    } else {
        t.tensor_content
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }
}

pub fn dims(t: &TensorProto) -> Vec<i64> {
    t.tensor_shape
        .as_ref()
        .map(|s| s.dim.iter().map(|d| d.size).collect())
        .unwrap_or_default()
}

/// The sentences int8 MiniLM is held to: the reference cases and both benchmark files.
pub fn minilm_accuracy_sentences() -> Vec<String> {
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("tests/data/minilm_embeddings.json")).unwrap(),
    )
    .unwrap();
    let mut texts: Vec<String> = reference["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["text"].as_str().unwrap().to_string())
        .collect();
    for file in ["short", "long"] {
        let text =
            std::fs::read_to_string(repo_root().join(format!("data/bench/{file}.txt"))).unwrap();
        texts.extend(
            text.lines()
                .filter(|l| !l.trim().is_empty())
                .map(String::from),
        );
    }
    texts
}

pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

/// The repository root (where `model_repo/` and `models.config` live).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The real MiniLM version folder, fetched by `scripts/fetch_weights.sh` (the README's test
/// command runs it). Missing weights fail the test with a message, never skip it.
pub fn minilm_dir() -> PathBuf {
    let dir = repo_root().join("model_repo/minilm/1");
    assert!(
        dir.join("model.safetensors").is_file(),
        "the real MiniLM weights are missing: run scripts/fetch_weights.sh (the test command does)"
    );
    dir
}

/// The value after `name` on the command line (`--seconds 5`): the benchmarks' options.
pub fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// A memory field of `/proc/<pid>/status` in KiB (`"VmRSS:"`, `"VmHWM:"`); `None` reads this
/// process. 0 when it cannot be read.
pub fn status_kib(pid: Option<u32>, field: &str) -> u64 {
    let pid = pid.map_or("self".to_string(), |p| p.to_string());
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

/// POSTs headers announcing a body of `content_length` bytes, sends none of it, and returns
/// the status and body the server answers. A server that refuses an oversized body by its
/// `Content-Length` answers at once; one that waits for the body times out here. (Sending the
/// body for real races the server's refusal: once it has answered and closed, the client's
/// write fails with a broken pipe before it reads the 413.)
pub async fn post_unsent_body(
    addr: &str,
    path_and_query: &str,
    content_length: usize,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path_and_query} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {content_length}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            let n = stream.read(&mut buf).await.unwrap_or(0);
            answer.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&answer);
            if let Some(end) = text.find("\r\n\r\n") {
                let length = text[..end]
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                if answer.len() >= end + 4 + length || n == 0 {
                    break;
                }
            } else if n == 0 {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("the server answers an oversized body without reading it");
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"));
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string());
    (status, body.unwrap_or_default())
}
