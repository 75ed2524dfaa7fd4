//! The Open Inference Protocol (KServe v2) against a live server on the shipped models and
//! the real MiniLM: Triton's own `tritonclient` (gRPC and HTTP, from PyPI, in the venv
//! scripts/setup_python_clients.sh makes), our generated v2 gRPC stubs, and hand-made JSON
//! and binary REST requests. The v2 answers are compared with the TF Serving API's for the
//! same request, and with the sentence-transformers reference.

use crate::common;

use std::process::Command;

use candle_serving::proto::inference::{
    grpc_inference_service_client::GrpcInferenceServiceClient,
    infer_parameter::ParameterChoice,
    model_infer_request::{InferInputTensor, InferRequestedOutputTensor},
    InferParameter, InferTensorContents, ModelInferRequest, ModelMetadataRequest,
    ModelReadyRequest, ServerLiveRequest, ServerMetadataRequest, ServerReadyRequest,
};
use common::*;
use serde_json::{json, Value};
use tonic::transport::Channel;
use tonic::Code;

fn config(dir: &std::path::Path) -> String {
    let root = repo_root();
    format!(
        r#"model_config_list {{
  config {{ name: "minilm" base_path: "{}" model_platform: "candle" }}
  config {{ name: "symptom_ner" base_path: "{}" model_platform: "candle" }}
  config {{ name: "dialog_relevance" base_path: "{}" model_platform: "candle" }}
  config {{ name: "cls" base_path: "{}" model_platform: "candle"
           model_version_policy {{ all {{}} }}
           version_labels {{ key: "stable" value: 1 }} }}
}}"#,
        minilm_dir().parent().unwrap().display(),
        root.join("model_repo/symptom_ner").display(),
        root.join("model_repo/dialog_relevance").display(),
        dir.join("cls").display(),
    )
}

async fn server() -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    publish_tiny_bert(&dir.path().join("cls"), 1, Kind::Classifier, 2);
    publish_tiny_bert(&dir.path().join("cls"), 2, Kind::Classifier, 3);
    let mut s = TestServer::with_config(&config(dir.path()), dir.path()).await;
    s.wait_for("minilm", 1, AVAILABLE).await;
    s.wait_for("symptom_ner", 2, AVAILABLE).await;
    s.wait_for("dialog_relevance", 2, AVAILABLE).await;
    s.wait_for("cls", 1, AVAILABLE).await;
    s.wait_for("cls", 2, AVAILABLE).await;
    (s, dir)
}

async fn v2_client(s: &TestServer) -> GrpcInferenceServiceClient<Channel> {
    let channel = Channel::from_shared(format!("http://{}", s.server.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    GrpcInferenceServiceClient::new(channel).max_decoding_message_size(1 << 30)
}

const SENTENCES: [&str; 3] = [
    "The quick brown fox jumps over the lazy dog.",
    "How do I reset my password?",
    "我最近总是头痛，还有点发烧。",
];

/// `raw_input_contents` of BYTES elements: each preceded by its length, 4 bytes LE.
fn raw_strings(values: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for v in values {
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        out.extend_from_slice(v.as_bytes());
    }
    out
}

fn bytes_input(name: &str, n: usize) -> InferInputTensor {
    InferInputTensor {
        name: name.into(),
        datatype: "BYTES".into(),
        shape: vec![n as i64],
        ..Default::default()
    }
}

fn infer_raw(model: &str, inputs: &[(&str, &[&str])]) -> ModelInferRequest {
    ModelInferRequest {
        model_name: model.into(),
        inputs: inputs
            .iter()
            .map(|(name, v)| bytes_input(name, v.len()))
            .collect(),
        raw_input_contents: inputs.iter().map(|(_, v)| raw_strings(v)).collect(),
        ..Default::default()
    }
}

fn f32s(raw: &[u8]) -> Vec<f32> {
    raw.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn decode_strings(mut raw: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    while !raw.is_empty() {
        let len = u32::from_le_bytes(raw[..4].try_into().unwrap()) as usize;
        out.push(String::from_utf8(raw[4..4 + len].to_vec()).unwrap());
        raw = &raw[4 + len..];
    }
    out
}

/// The TF Serving API's embeddings for the same sentences.
async fn tf_embeddings(s: &mut TestServer) -> Vec<f32> {
    let r = s
        .grpc
        .predict(predict_request(
            spec("minilm", None),
            &[("text", strings(&SENTENCES))],
        ))
        .await
        .unwrap()
        .into_inner();
    floats(&r.outputs["embeddings"])
}

fn err_of<T: std::fmt::Debug>(r: Result<T, tonic::Status>) -> (Code, String) {
    let e = r.expect_err("the request should fail");
    (e.code(), e.message().to_string())
}

#[tokio::test]
async fn v2_grpc_answers_health_metadata_and_inference_like_the_tf_api() {
    let (mut s, _dir) = server().await;
    let mut v2 = v2_client(&s).await;

    assert!(
        v2.server_live(ServerLiveRequest {})
            .await
            .unwrap()
            .into_inner()
            .live
    );
    assert!(
        v2.server_ready(ServerReadyRequest {})
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    let ready = |name: &str, version: &str| ModelReadyRequest {
        name: name.into(),
        version: version.into(),
    };
    assert!(
        v2.model_ready(ready("minilm", ""))
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    assert!(
        v2.model_ready(ready("cls", "1"))
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    assert!(
        !v2.model_ready(ready("cls", "7"))
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    // As Triton answers: a model that is not served is not ready (not an error).
    assert!(
        !v2.model_ready(ready("nope", ""))
            .await
            .unwrap()
            .into_inner()
            .ready
    );

    let meta = v2
        .server_metadata(ServerMetadataRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(meta.name, "candle-serving");
    assert!(meta.extensions.contains(&"binary_tensor_data".to_string()));

    let meta = v2
        .model_metadata(ModelMetadataRequest {
            name: "cls".into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(meta.versions, ["1", "2"]);
    let meta = v2
        .model_metadata(ModelMetadataRequest {
            name: "minilm".into(),
            version: "1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(meta.platform, "candle");
    let inputs: Vec<(&str, &str, &[i64])> = meta
        .inputs
        .iter()
        .map(|t| (t.name.as_str(), t.datatype.as_str(), t.shape.as_slice()))
        .collect();
    assert_eq!(inputs[0], ("text", "BYTES", &[-1][..]));
    assert!(inputs.contains(&("input_ids", "INT64", &[-1, -1][..])));
    assert_eq!(meta.outputs[0].name, "embeddings");
    assert_eq!(meta.outputs[0].datatype, "FP32");
    assert_eq!(meta.outputs[0].shape, [-1, 384]);

    // Raw inputs, as tritonclient sends them: the same floats as the TF API's.
    let r = v2
        .model_infer(ModelInferRequest {
            id: "req-7".into(),
            ..infer_raw("minilm", &[("text", &SENTENCES)])
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            r.model_name.as_str(),
            r.model_version.as_str(),
            r.id.as_str()
        ),
        ("minilm", "1", "req-7")
    );
    assert_eq!(r.outputs.len(), 1);
    assert_eq!(r.outputs[0].datatype, "FP32");
    assert_eq!(r.outputs[0].shape, [3, 384]);
    let v2_embeddings = f32s(&r.raw_output_contents[0]);
    assert_eq!(v2_embeddings, tf_embeddings(&mut s).await);

    // Typed contents, a requested output order, the tagger's string outputs.
    let r = v2
        .model_infer(ModelInferRequest {
            model_name: "symptom_ner".into(),
            inputs: vec![InferInputTensor {
                contents: Some(InferTensorContents {
                    bytes_contents: vec!["我头疼，还有点发烧".as_bytes().to_vec()],
                    ..Default::default()
                }),
                ..bytes_input("text", 1)
            }],
            outputs: vec![
                InferRequestedOutputTensor {
                    name: "entities".into(),
                    ..Default::default()
                },
                InferRequestedOutputTensor {
                    name: "entity_spans".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let names: Vec<&str> = r.outputs.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["entities", "entity_spans"]);
    assert_eq!(decode_strings(&r.raw_output_contents[0]), ["头疼", "发烧"]);
    assert_eq!(r.outputs[1].datatype, "INT32");
    assert_eq!(r.outputs[1].shape, [1, 2, 2]);

    // A pair classifier, a label through the `version_label` parameter.
    let mut labelled = infer_raw("cls", &[("text", &["my head hurts"])]);
    labelled.parameters.insert(
        "version_label".into(),
        InferParameter {
            parameter_choice: Some(ParameterChoice::StringParam("stable".into())),
        },
    );
    let r = v2.model_infer(labelled).await.unwrap().into_inner();
    assert_eq!(r.model_version, "1");
    let r = v2
        .model_infer(infer_raw("cls", &[("text", &["my head hurts"])]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.model_version, "2");
    let r = v2
        .model_infer(infer_raw(
            "dialog_relevance",
            &[("text", &["我咳嗽"]), ("text_pair", &["痰是黄的"])],
        ))
        .await
        .unwrap()
        .into_inner();
    let labels_at = r.outputs.iter().position(|o| o.name == "labels").unwrap();
    let labels = decode_strings(&r.raw_output_contents[labels_at]);
    assert!(
        labels == ["related"] || labels == ["unrelated"],
        "{labels:?}"
    );
    s.stop().await;
}

#[tokio::test]
async fn v2_grpc_refuses_bad_and_hostile_requests_with_the_model_and_cause() {
    let (s, _dir) = server().await;
    let mut v2 = v2_client(&s).await;
    let text = |v: &[&str]| infer_raw("minilm", &[("text", v)]);

    let mut r = text(&["a"]);
    r.model_name = "nope".into();
    let (code, m) = err_of(v2.model_infer(r).await);
    assert_eq!(code, Code::NotFound, "{m}");

    let mut r = text(&["a"]);
    r.inputs[0].datatype = "FP16".into();
    let (code, m) = err_of(v2.model_infer(r).await);
    assert_eq!(code, Code::InvalidArgument);
    assert!(
        m.contains("minilm") && m.contains("version 1") && m.contains("FP16"),
        "{m}"
    );

    let mut r = text(&["a"]);
    r.inputs[0].datatype = "FP32".into();
    r.raw_input_contents = vec![0.5f32.to_le_bytes().to_vec()];
    let (code, m) = err_of(v2.model_infer(r).await);
    assert_eq!(code, Code::InvalidArgument);
    assert!(m.contains("input `text` must be DT_STRING"), "{m}");

    let mut r = text(&["a"]);
    r.raw_input_contents.push(Vec::new());
    let (code, m) = err_of(v2.model_infer(r).await);
    assert_eq!(code, Code::InvalidArgument);
    assert!(
        m.contains("raw_input_contents has 2 entries for 1 inputs"),
        "{m}"
    );

    let mut r = text(&["a"]);
    r.raw_input_contents.clear();
    let (_, m) = err_of(v2.model_infer(r).await);
    assert!(m.contains("has no values"), "{m}");

    let mut r = text(&["a"]);
    r.raw_input_contents[0].truncate(3);
    let (code, m) = err_of(v2.model_infer(r).await);
    assert_eq!(code, Code::InvalidArgument);
    assert!(m.contains("input `text`"), "{m}");

    let mut r = text(&["a"]);
    r.model_version = "stable".into();
    let (_, m) = err_of(v2.model_infer(r).await);
    assert!(m.contains("version_label"), "{m}");

    let mut r = text(&["a"]);
    r.outputs.push(InferRequestedOutputTensor {
        name: "logits".into(),
        ..Default::default()
    });
    let (_, m) = err_of(v2.model_infer(r).await);
    assert!(
        m.contains("requested output `logits`") && m.contains("embeddings"),
        "{m}"
    );

    // A 1 KB request claiming 2^40 strings, and a 4 MB one holding 1.3 M of them: refused
    // for what they claim and hold, before anything is allocated for them.
    let mut r = text(&["a"]);
    r.inputs[0].shape = vec![1 << 40];
    let (code, m) = err_of(v2.model_infer(r).await);
    assert_eq!(code, Code::InvalidArgument);
    assert!(m.contains("--max_request_dim"), "{m}");
    let mut r = text(&[]);
    r.raw_input_contents.clear();
    r.inputs[0].shape = vec![1_300_000];
    r.inputs[0].contents = Some(InferTensorContents {
        bytes_contents: vec![b"a".to_vec(); 1_300_000],
        ..Default::default()
    });
    let (code, m) = err_of(v2.model_infer(r).await);
    assert!(
        matches!(code, Code::InvalidArgument | Code::OutOfRange),
        "{code:?} {m}"
    );
    assert!(
        m.contains("--max_request_bytes") || m.contains("--max_request_elements"),
        "{m}"
    );

    // Parameters of unimplemented extensions are refused, not silently ignored.
    let mut r = text(&["a"]);
    r.inputs[0].parameters.insert(
        "shared_memory_region".into(),
        InferParameter {
            parameter_choice: Some(ParameterChoice::StringParam("region0".into())),
        },
    );
    let (code, m) = err_of(v2.model_infer(r).await);
    assert_eq!(code, Code::Unimplemented);
    assert!(
        m.contains("`shared_memory_region` of the shared-memory extension"),
        "{m}"
    );
    let mut r = text(&["a"]);
    r.parameters.insert(
        "sequence_id".into(),
        InferParameter {
            parameter_choice: Some(ParameterChoice::Int64Param(7)),
        },
    );
    let (code, m) = err_of(v2.model_infer(r).await);
    assert_eq!(code, Code::Unimplemented, "{m}");

    // A shape of a thousand dimensions is refused without quoting it back.
    let mut r = text(&["a"]);
    r.inputs[0].shape = vec![1; 1000];
    let (code, m) = err_of(v2.model_infer(r).await);
    assert_eq!(code, Code::InvalidArgument);
    assert!(
        m.ends_with("the shape has 1000 dimensions; a request tensor may have at most 32"),
        "{m}"
    );

    // Triton's extensions of the service are named, not a bare UNIMPLEMENTED.
    let mut raw = tonic::client::Grpc::new(
        Channel::from_shared(format!("http://{}", s.server.grpc_addr))
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    raw.ready().await.unwrap();
    let answer: Result<tonic::Response<candle_serving::proto::inference::ModelReadyResponse>, _> =
        raw.unary(
            tonic::Request::new(ModelReadyRequest {
                name: "minilm".into(),
                version: String::new(),
            }),
            http::uri::PathAndQuery::from_static("/inference.GRPCInferenceService/ModelConfig"),
            tonic_prost::ProstCodec::default(),
        )
        .await;
    let (code, m) = err_of(answer);
    assert_eq!(code, Code::Unimplemented);
    assert!(
        m.contains("ModelConfig is not implemented") && m.contains("ModelInfer"),
        "{m}"
    );

    // The server still serves.
    assert!(v2.model_infer(text(&["still here"])).await.is_ok());
    s.stop().await;
}

fn rest(s: &TestServer, path: &str) -> String {
    format!("http://{}{path}", s.server.rest_addr.unwrap())
}

#[tokio::test]
async fn v2_rest_answers_json_and_binary_tensors_with_the_v1_error_statuses() {
    let (mut s, _dir) = server().await;
    let tf = tf_embeddings(&mut s).await;
    let http = reqwest::Client::new();
    let get = |path: &str| http.get(rest(&s, path)).send();

    let r = get("/v2").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["name"], "candle-serving");
    assert_eq!(get("/v2/health/live").await.unwrap().status(), 200);
    assert_eq!(get("/v2/health/ready").await.unwrap().status(), 200);
    assert_eq!(get("/v2/models/minilm/ready").await.unwrap().status(), 200);
    assert_eq!(
        get("/v2/models/cls/versions/7/ready")
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(get("/v2/models/nope/ready").await.unwrap().status(), 404);
    let meta: Value = get("/v2/models/cls/versions/2")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(meta["versions"], json!(["1", "2"]));
    assert_eq!(
        meta["inputs"][0],
        json!({"name": "text", "datatype": "BYTES", "shape": [-1]})
    );

    // JSON tensors give the TF API's floats; a shape the signature does not take is refused.
    let infer = |body: Value| {
        http.post(rest(&s, "/v2/models/minilm/infer"))
            .json(&body)
            .send()
    };
    let flat: Value = infer(json!({
        "id": "a1",
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [3], "data": SENTENCES}],
    }))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(flat["id"], "a1");
    assert_eq!(flat["model_version"], "1");
    assert_eq!(flat["outputs"][0]["shape"], json!([3, 384]));
    let values: Vec<f32> = flat["outputs"][0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    assert_eq!(values, tf);
    let nested: Value = infer(json!({
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [3, 1], "data": [[SENTENCES[0]], [SENTENCES[1]], [SENTENCES[2]]]}],
    }))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert!(
        nested["error"]
            .as_str()
            .unwrap()
            .contains("must have shape [-1]"),
        "{nested}"
    );

    // Triton's binary-data extension both ways.
    let header = json!({
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [3], "parameters": {"binary_data_size": raw_strings(&SENTENCES).len()}}],
        "outputs": [{"name": "embeddings", "parameters": {"binary_data": true}}],
    })
    .to_string();
    let mut body = header.clone().into_bytes();
    body.extend_from_slice(&raw_strings(&SENTENCES));
    let r = http
        .post(rest(&s, "/v2/models/minilm/infer"))
        .header("Inference-Header-Content-Length", header.len())
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let json_len: usize = r.headers()["inference-header-content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let bytes = r.bytes().await.unwrap();
    let answer: Value = serde_json::from_slice(&bytes[..json_len]).unwrap();
    assert_eq!(
        answer["outputs"][0]["parameters"]["binary_data_size"],
        3 * 384 * 4
    );
    assert_eq!(f32s(&bytes[json_len..]), tf);

    // The tagger's strings as JSON.
    let r: Value = http
        .post(rest(&s, "/v2/models/symptom_ner/infer"))
        .json(&json!({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["我头疼，还有点发烧"]}], "outputs": [{"name": "entities"}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["outputs"][0]["data"], json!(["头疼", "发烧"]));

    // Errors: the v1 statuses and `{"error": ...}`, naming model and cause.
    let status_and_error = |r: reqwest::Response| async move {
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap();
        (
            status,
            body["error"].as_str().unwrap_or_default().to_string(),
        )
    };
    let post = |path: &str, body: &str| {
        http.post(rest(&s, path))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
    };
    let one = r#"{"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["a"]}]}"#;
    let (status, e) = status_and_error(post("/v2/models/nope/infer", one).await.unwrap()).await;
    assert_eq!(status, 404, "{e}");
    let (status, e) =
        status_and_error(post("/v2/models/minilm/infer", "{not json").await.unwrap()).await;
    assert_eq!(status, 400, "{e}");
    let bad_type = one.replace("BYTES", "INT8");
    let (status, e) =
        status_and_error(post("/v2/models/minilm/infer", &bad_type).await.unwrap()).await;
    assert_eq!(status, 400);
    assert!(e.contains("minilm") && e.contains("INT8"), "{e}");
    let (status, e) = status_and_error(
        post("/v2/models/minilm/versions/9/infer", one)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 404, "{e}");
    let (status, e) = status_and_error(get("/v2/models/minilm/infer").await.unwrap()).await;
    assert_eq!(status, 405, "{e}");
    let (status, e) = status_and_error(get("/v2/models/minilm/config").await.unwrap()).await;
    assert_eq!(status, 501, "{e}");
    let (status, e) = status_and_error(get("/v2/repository/index").await.unwrap()).await;
    assert_eq!(status, 501, "{e}");
    let (status, e) = status_and_error(get("/v2/models/stats").await.unwrap()).await;
    assert_eq!(status, 501, "{e}");
    // A readiness probe never reads a body, whatever is sent with it.
    let r = http
        .post(rest(&s, "/v2/models/minilm/ready"))
        .body(vec![b'x'; 1 << 20])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    let mismatched = http
        .post(rest(&s, "/v2/models/minilm/infer"))
        .header("Inference-Header-Content-Length", one.len())
        .body(format!("{one}extra"))
        .send()
        .await
        .unwrap();
    let (status, e) = status_and_error(mismatched).await;
    assert_eq!(status, 400);
    assert!(e.contains("model `minilm`: the inputs' binary_data_size add up to 0 bytes but the body has 5 bytes"), "{e}");
    let shm = one.replace(
        r#""data": ["a"]"#,
        r#""data": ["a"], "parameters": {"shared_memory_region": "r0"}"#,
    );
    let (status, e) = status_and_error(post("/v2/models/minilm/infer", &shm).await.unwrap()).await;
    assert_eq!(status, 501, "{e}");
    let r = http
        .post(rest(&s, "/v2/models/minilm/infer"))
        .header("Inference-Header-Content-Length", "9999")
        .body(one)
        .send()
        .await
        .unwrap();
    let (status, e) = status_and_error(r).await;
    assert_eq!(status, 400);
    assert!(e.contains("Inference-Header-Content-Length is 9999"), "{e}");
    let huge = format!(
        r#"{{"inputs": [{{"name": "text", "datatype": "BYTES", "shape": [{}], "data": ["a"]}}]}}"#,
        1u64 << 40
    );
    let (status, e) = status_and_error(post("/v2/models/minilm/infer", &huge).await.unwrap()).await;
    assert_eq!(status, 400);
    assert!(e.contains("--max_request_dim"), "{e}");
    let big = vec![b' '; 9 << 20];
    let r = http
        .post(rest(&s, "/v2/models/minilm/infer"))
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);

    // The metrics name the API and the transport.
    let metrics = get("/monitoring/prometheus/metrics")
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with(":tensorflow:serving:request_count{")
                && l.contains("model_name=\"minilm\"")
                && l.contains("API=\"model_infer\"")
                && l.contains("entrypoint=\"REST\"")
                && l.contains("status=\"OK\"")
        })
        .unwrap_or_else(|| panic!("no model_infer count in\n{metrics}"));
    let count: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(count >= 2.0, "{line}");
    s.stop().await;
}

/// `.cache/venv-triton` (or `$TRITON_PYTHON`), made by scripts/setup_python_clients.sh.
fn triton_python() -> String {
    if let Ok(p) = std::env::var("TRITON_PYTHON") {
        return p;
    }
    let p = repo_root().join(".cache/venv-triton/bin/python");
    assert!(
        p.is_file(),
        "no tritonclient venv: run scripts/setup_python_clients.sh (the test command does)"
    );
    p.display().to_string()
}

fn triton_client(args: Vec<String>) -> (i32, String) {
    let out = Command::new(triton_python())
        .arg(repo_root().join("clients/python/triton_client.py"))
        .args(args)
        .output()
        .expect("python runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    }
    (out.status.code().unwrap_or(-1), text)
}

#[tokio::test]
async fn tritonclient_grpc_and_http_get_the_reference_embeddings_and_the_models_outputs() {
    let (s, _dir) = server().await;
    let reference = repo_root()
        .join("tests/data/minilm_embeddings.json")
        .display()
        .to_string();
    for (protocol, addr) in [
        ("grpc", s.server.grpc_addr),
        ("http", s.server.rest_addr.unwrap()),
    ] {
        let run = |extra: &[&str]| {
            let mut args: Vec<String> = vec![
                "--url".into(),
                addr.to_string(),
                "--protocol".into(),
                protocol.into(),
            ];
            args.extend(extra.iter().map(|a| a.to_string()));
            tokio::task::spawn_blocking(move || triton_client(args))
        };
        let (code, out) = run(&["--server-info", "--model", "minilm"]).await.unwrap();
        println!("{out}");
        assert_eq!(code, 0, "{out}");
        assert_eq!(out.matches("OK ").count(), 5, "{out}");

        let (code, out) = run(&["--model", "minilm", "--reference", &reference])
            .await
            .unwrap();
        println!("{out}");
        assert_eq!(code, 0, "{out}");
        let checks = if protocol == "http" { 8 } else { 4 };
        assert_eq!(out.matches("OK ").count(), checks, "{out}");
        assert!(!out.contains("BAD"), "{out}");

        let (code, out) = run(&["--model", "symptom_ner", "我头疼，还有点发烧"])
            .await
            .unwrap();
        println!("{out}");
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("model symptom_ner version 2"), "{out}");
        assert!(
            out.contains(r#"entities (1, 2): [["头疼", "发烧"]]"#),
            "{out}"
        );
        assert!(
            out.contains("entity_spans (1, 2, 2): [[[1, 3], [7, 9]]]"),
            "{out}"
        );

        let (code, out) = run(&[
            "--model",
            "dialog_relevance",
            "我咳嗽",
            "--pair",
            "痰是黄的",
        ])
        .await
        .unwrap();
        println!("{out}");
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("probabilities (1, 2)"), "{out}");
        assert!(
            out.contains(r#"labels (1,): ["related"]"#)
                || out.contains(r#"labels (1,): ["unrelated"]"#),
            "{out}"
        );

        let (code, out) = run(&["--model", "cls", "--label", "stable", "hello"])
            .await
            .unwrap();
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("model cls version 1"), "{out}");

        let (code, out) = run(&["--model", "nope", "x"]).await.unwrap();
        assert_eq!(code, 2, "{out}");
        assert!(out.contains("404") || out.contains("NOT_FOUND"), "{out}");
        assert!(out.contains("model `nope` is not served here"), "{out}");
    }
    s.stop().await;
}

/// The KServe manifests (a ClusterServingRuntime and two InferenceServices) against KServe's
/// generated API classes (scripts/validate_kserve.py, venv by scripts/setup_validators.sh);
/// and a copy with a misspelt field is refused by its path, so the check can fail.
#[test]
fn kserve_manifests_pass_the_schema_check_and_a_broken_copy_does_not() {
    let python = repo_root().join(".cache/venv-validate/bin/python");
    assert!(
        python.is_file(),
        "no validator venv: run scripts/setup_validators.sh (the test command does)"
    );
    let validate = |files: &[std::path::PathBuf]| {
        let out = Command::new(&python)
            .arg(repo_root().join("scripts/validate_kserve.py"))
            .args(files)
            .output()
            .expect("python runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let deploy = repo_root().join("deploy/kserve");
    let manifests = vec![
        deploy.join("cluster-serving-runtime.yaml"),
        deploy.join("inference-service.yaml"),
    ];
    let (code, out) = validate(&manifests);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(out.matches("OK ").count(), 2, "{out}");

    let dir = tempfile::tempdir().unwrap();
    let runtime = std::fs::read_to_string(&manifests[0]).unwrap();
    assert!(runtime.contains("readinessProbe:"));
    let broken = dir.path().join("runtime.yaml");
    std::fs::write(
        &broken,
        runtime.replace("readinessProbe:", "readynessProbe:"),
    )
    .unwrap();
    let (code, out) = validate(&[broken]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("spec.containers[0].readynessProbe: unknown field"),
        "{out}"
    );
}

/// The v2 API goes through the same manager and batcher as the TF API: ModelInfer requests
/// from eight clients share batches, and a new version published under that load takes over
/// without a failed request or a client going back to the old version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_requests_are_batched_and_swap_versions_without_a_failure() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("m");
    publish_tiny_bert(&base, 1, Kind::Embedding, 1);
    let config = candle_serving::config::ModelsConfig::from_text(
        r#"model_config_list { config { name: "m" base_path: "m" model_platform: "candle" } }"#,
        dir.path(),
        "test config",
    )
    .unwrap();
    let mut options = candle_serving::server::ServerOptions::local(config);
    options.core.batching = Some(candle_serving::batching::BatchingOptions {
        max_batch_size: 16,
        batch_timeout: Duration::from_millis(5),
        ..Default::default()
    });
    let mut s = TestServer::start(options).await;
    s.wait_for("m", 1, AVAILABLE).await;

    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..8 {
        let mut v2 = v2_client(&s).await;
        let stop = stop.clone();
        clients.push(tokio::spawn(async move {
            let (mut versions, mut failures) = (Vec::new(), Vec::new());
            while !stop.load(Ordering::Relaxed) {
                match v2
                    .model_infer(infer_raw("m", &[("text", &["my head hurts"])]))
                    .await
                {
                    Ok(r) => versions.push(r.into_inner().model_version.parse::<i64>().unwrap()),
                    Err(e) => failures.push(e.to_string()),
                }
            }
            (versions, failures)
        }));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    publish_tiny_bert(&base, 2, Kind::Embedding, 2);
    s.wait_for("m", 2, AVAILABLE).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    stop.store(true, Ordering::Relaxed);

    let (mut total, mut saw_first) = (0, false);
    for client in clients {
        let (versions, failures) = client.await.unwrap();
        saw_first |= versions.contains(&1);
        assert!(
            failures.is_empty(),
            "failed requests during the swap: {failures:?}"
        );
        assert!(
            versions.windows(2).all(|w| w[0] <= w[1]),
            "a client went back to an older version: {versions:?}"
        );
        assert_eq!(versions.last(), Some(&2), "{versions:?}");
        total += versions.len();
    }
    assert!(
        saw_first,
        "no client was answered by version 1 before the swap"
    );
    let metrics = reqwest::get(rest(&s, "/monitoring/prometheus/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let sum_of = |prefix: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(prefix))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum()
    };
    let (batches, rows) = (
        sum_of(":candle_serving:batch_size_count{"),
        sum_of(":candle_serving:batch_size_sum{"),
    );
    assert_eq!(
        rows as usize, total,
        "every ModelInfer row went through the batcher"
    );
    assert!(
        batches < rows,
        "{rows} rows ran as {batches} batches: none were merged"
    );
    s.stop().await;
}
