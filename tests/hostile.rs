//! A catalogue of hostile inputs: what an attacker (or a broken client) sends, over gRPC,
//! REST, the WeChat webhook and config files, each answered with its exact code and
//! message, and the server still answering an ordinary request after every one of them.
//! The servers are real (a model server and a doctor facade on loopback sockets); the
//! models are tiny BERTs and the shipped symptom tagger.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use candle_serving::config::ModelsConfig;
use candle_serving::doctor::graph::EmbeddedGraph;
use candle_serving::doctor::model_client::ModelClient;
use candle_serving::doctor::session::MemoryStore;
use candle_serving::doctor::web::{router, ChatAccess, WebOptions};
use candle_serving::doctor::{wechat, Doctor};
use candle_serving::lexicon::Lexicon;
use candle_serving::proto::tensorflow::serving::{
    model_server_config::Config, ModelConfig, ModelConfigList, ModelServerConfig,
    ReloadConfigRequest, StatusProto,
};
use candle_serving::proto::tensorflow::TensorProto;
use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tonic::Code;

const WECHAT_TOKEN: &str = "hostile-wechat-token";

struct Rig {
    s: TestServer,
    rest: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

async fn rig() -> Rig {
    let dir = tempfile::tempdir().unwrap();
    publish_tiny_bert(&dir.path().join("emb"), 1, Kind::Embedding, 1);
    publish_tiny_bert(&dir.path().join("cls"), 1, Kind::Classifier, 2);
    let ner = repo_root().join("model_repo/symptom_ner");
    let config = format!(
        r#"model_config_list {{
            config {{ name: "emb" base_path: "emb" model_platform: "candle" }}
            config {{ name: "cls" base_path: "cls" model_platform: "candle" }}
            config {{ name: "ner" base_path: "{}" model_platform: "candle"
                     model_version_policy {{ specific {{ versions: 1 }} }} }}
        }}"#,
        ner.display()
    );
    let mut s = TestServer::with_config(&config, dir.path()).await;
    s.grpc = s
        .grpc
        .clone()
        .max_encoding_message_size(64 << 20)
        .max_decoding_message_size(64 << 20);
    for model in ["emb", "cls", "ner"] {
        s.wait_for(model, 1, AVAILABLE).await;
    }
    let rest = format!("http://{}", s.server.rest_addr.unwrap());
    Rig {
        s,
        rest,
        http: reqwest::Client::new(),
        _dir: dir,
    }
}

impl Rig {
    /// An ordinary request on each transport still works.
    async fn still_serves(&mut self, after: &str) {
        let request = predict_request(spec("emb", None), &[("text", strings(&["the quick fox"]))]);
        let response = self
            .s
            .grpc
            .predict(request)
            .await
            .unwrap_or_else(|e| panic!("after {after}: gRPC predict failed: {e}"));
        assert_eq!(
            dims(&response.into_inner().outputs["embeddings"]),
            vec![1, 32],
            "after {after}"
        );
        let (status, body) = self
            .post(
                "/v1/models/emb:predict",
                json!({"instances": ["a fox"]}).to_string(),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "after {after}: {body}");
    }

    async fn grpc(&mut self, inputs: &[(&str, TensorProto)]) -> tonic::Status {
        self.grpc_to("emb", inputs).await
    }

    async fn grpc_to(&mut self, model: &str, inputs: &[(&str, TensorProto)]) -> tonic::Status {
        self.s
            .grpc
            .predict(predict_request(spec(model, None), inputs))
            .await
            .expect_err("a hostile request is refused")
    }

    async fn post(&self, path: &str, body: impl Into<reqwest::Body>) -> (StatusCode, String) {
        let r = self
            .http
            .post(format!("{}{path}", self.rest))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        (r.status(), r.text().await.unwrap())
    }

    /// HandleReloadConfigRequest with one model; the status it answers.
    async fn reload(&mut self, model: ModelConfig) -> StatusProto {
        let config = ModelServerConfig {
            config: Some(Config::ModelConfigList(ModelConfigList {
                config: vec![model],
            })),
        };
        self.s
            .models
            .handle_reload_config_request(ReloadConfigRequest {
                config: Some(config),
                ..Default::default()
            })
            .await
            .expect("ReloadConfig answers in its status")
            .into_inner()
            .status
            .expect("a status")
    }

    async fn metrics_len(&self) -> usize {
        self.http
            .get(format!("{}/monitoring/prometheus/metrics", self.rest))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
            .len()
    }
}

fn tensor(dtype: i32, dims: &[i64]) -> TensorProto {
    TensorProto {
        dtype,
        tensor_shape: shape(dims),
        ..Default::default()
    }
}

fn one_string(dims: &[i64], value: Vec<u8>) -> TensorProto {
    TensorProto {
        string_val: vec![value],
        ..tensor(7, dims)
    }
}

fn ids(dims: &[i64], values: Vec<i64>) -> TensorProto {
    TensorProto {
        int64_val: values,
        ..tensor(9, dims)
    }
}

fn error_of(body: &str) -> String {
    serde_json::from_str::<Value>(body).unwrap()["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error in {body}"))
        .to_string()
}

#[track_caller]
fn refused(status: &tonic::Status, code: Code, message: &str) {
    assert_eq!(
        (status.code(), status.message()),
        (code, message),
        "{status:?}"
    );
}

/// gRPC: shape, byte and element bombs, wrong types, bad strings, unknown names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_hostile_inputs_are_refused_exactly_and_the_server_keeps_serving() {
    let mut r = rig().await;
    let v1 = "model `emb` version 1";
    let rss_before = status_kib(None, "VmRSS:");

    // 1. The 1 KB message of the issue: one 1 KiB string claimed to fill [67108864].
    let e = r
        .grpc(&[("text", one_string(&[67_108_864], vec![b'a'; 1024]))])
        .await;
    refused(&e, Code::InvalidArgument, &format!("{v1}: input `text`: dimension 0 of shape [67108864] is 67108864, above the limit of 65536 (--max_request_dim)"));
    r.still_serves("a 64 M string shape bomb").await;

    // 2. The same at [4194304].
    let e = r
        .grpc(&[("text", one_string(&[4_194_304], vec![b'a'; 1024]))])
        .await;
    refused(&e, Code::InvalidArgument, &format!("{v1}: input `text`: dimension 0 of shape [4194304] is 4194304, above the limit of 65536 (--max_request_dim)"));

    // 3. Within every dimension limit, but 60,000 copies of 1 KiB are 60 MB.
    let e = r
        .grpc(&[("text", one_string(&[60_000], vec![b'a'; 1024]))])
        .await;
    refused(&e, Code::InvalidArgument, &format!("{v1}: input `text`: the request decodes to more than 4194304 bytes (--max_request_bytes)"));
    r.still_serves("a byte bomb").await;

    // 3b. 1.39 M one-byte strings: under 4 MiB on the wire, ~75 MB once protobuf-decoded.
    // Counted on the wire and refused before tonic decodes the message.
    // Each string counts its bytes and the vector holding it, so the bytes limit trips first.
    let mut one_byte = strings(&[]);
    one_byte.string_val = vec![b"a".to_vec(); 1_390_000];
    one_byte.tensor_shape = shape(&[1_390_000]);
    let e = r.grpc(&[("text", one_byte)]).await;
    refused(
        &e,
        Code::InvalidArgument,
        "the request decodes to more than 4194304 bytes (--max_request_bytes)",
    );
    r.still_serves("a message of one-byte strings").await;

    // 3c. 300,000 packed int64 values (one byte each on the wire): counted, not decoded.
    let e = r
        .grpc(&[("input_ids", ids(&[1, 300_000], vec![1; 300_000]))])
        .await;
    refused(
        &e,
        Code::InvalidArgument,
        "the request holds more than 262144 values in its tensors (--max_request_elements)",
    );

    // 4. int64 [8192, 8192] with one value: 512 MiB if expanded.
    let e = r.grpc(&[("input_ids", ids(&[8192, 8192], vec![1]))]).await;
    refused(&e, Code::InvalidArgument, &format!("{v1}: input `input_ids`: shape [8192,8192] has 67108864 elements; a request may hold at most 262144 elements in all its inputs (--max_request_elements)"));

    // 5. Dimensions whose product overflows 64 bits.
    let e = r
        .grpc(&[("input_ids", ids(&[1 << 62, 1 << 62], vec![1]))])
        .await;
    refused(&e, Code::InvalidArgument, &format!("{v1}: input `input_ids`: dimension 0 of shape [4611686018427387904,4611686018427387904] is 4611686018427387904, above the limit of 65536 (--max_request_dim)"));

    // 6. Several inputs that each fit but together do not.
    let half = ids(&[256, 512], vec![1]);
    let e = r
        .grpc(&[
            ("input_ids", half.clone()),
            ("attention_mask", half.clone()),
            ("token_type_ids", half),
        ])
        .await;
    refused(&e, Code::InvalidArgument, &format!("{v1}: input `token_type_ids`: shape [256,512] has 131072 elements; a request may hold at most 262144 elements in all its inputs (--max_request_elements)"));

    // 7. A negative dimension.
    let e = r.grpc(&[("text", one_string(&[-5], b"x".to_vec()))]).await;
    refused(
        &e,
        Code::InvalidArgument,
        &format!("{v1}: input `text`: tensor_shape has a negative dimension -5"),
    );

    // 8. Unknown rank.
    let mut unknown = one_string(&[1], b"x".to_vec());
    unknown.tensor_shape.as_mut().unwrap().unknown_rank = true;
    let e = r.grpc(&[("text", unknown)]).await;
    refused(&e, Code::InvalidArgument, &format!("{v1}: input `text`: tensor_shape has unknown_rank set; a request tensor needs a known shape"));

    // 9. tensor_content that does not match the claimed shape (3 MB for one element).
    let content = TensorProto {
        tensor_content: vec![0; 3 << 20],
        ..tensor(9, &[1, 1])
    };
    let e = r.grpc(&[("input_ids", content)]).await;
    refused(&e, Code::InvalidArgument, &format!("{v1}: input `input_ids`: tensor_content has 3145728 bytes but shape [1,1] of DT_INT64 needs 8"));

    // 10. DT_HALF and a DataType number that does not exist.
    let e = r.grpc(&[("text", tensor(19, &[1]))]).await;
    refused(
        &e,
        Code::InvalidArgument,
        &format!("{v1}: input `text`: dtype DT_HALF is not supported by this server"),
    );
    let e = r.grpc(&[("text", tensor(999, &[1]))]).await;
    refused(
        &e,
        Code::InvalidArgument,
        &format!("{v1}: input `text`: dtype DataType 999 is not supported by this server"),
    );

    // 11. A message above --max_request_bytes is refused from its length prefix.
    let e = r
        .grpc(&[("text", one_string(&[1], vec![b'a'; 5 << 20]))])
        .await;
    assert_eq!(e.code(), Code::OutOfRange, "{e:?}");
    assert!(e.message().contains("4194304"), "{e:?}");
    r.still_serves("a 5 MiB message").await;

    // 12. One string of 70,000 characters: refused before any tokenizer sees it.
    let e = r
        .grpc(&[("text", one_string(&[1], "痛".repeat(70_000).into_bytes()))])
        .await;
    refused(
        &e,
        Code::InvalidArgument,
        &format!(
            "{v1}: input `text`: string 0 has more than 65536 characters (--max_string_length)"
        ),
    );

    // 13. Invalid UTF-8.
    let e = r
        .grpc(&[("text", one_string(&[1], vec![0xff, 0xfe, b'a']))])
        .await;
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(
        e.message().starts_with(v1) && e.message().contains("UTF-8"),
        "{e:?}"
    );

    // 14. A batch larger than --max_request_batch_size, and an empty one.
    let many: Vec<&str> = vec!["a"; 257];
    let e = r.grpc(&[("text", strings(&many))]).await;
    refused(&e, Code::InvalidArgument, &format!("{v1}: input `text` has a batch of 257, more than the 256 this server accepts in one request"));
    let e = r.grpc(&[("text", strings(&[]))]).await;
    refused(
        &e,
        Code::InvalidArgument,
        &format!("{v1}: input `text` is an empty batch; send at least one entry"),
    );

    // 15. Token ids the model does not have, negative ids, a mask that is not 0/1.
    let e = r
        .grpc(&[("input_ids", ids(&[1, 3], vec![2, 1_000_000_000, 3]))])
        .await;
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(
        e.message().starts_with(v1) && e.message().contains("1000000000"),
        "{e:?}"
    );
    let e = r.grpc(&[("input_ids", ids(&[1, 2], vec![2, -7]))]).await;
    assert!(
        e.code() == Code::InvalidArgument && e.message().contains("-7"),
        "{e:?}"
    );
    let e = r
        .grpc(&[
            ("input_ids", ids(&[1, 2], vec![2, 3])),
            ("attention_mask", ids(&[1, 2], vec![1, 5])),
        ])
        .await;
    assert!(
        e.code() == Code::InvalidArgument && e.message().contains("attention_mask"),
        "{e:?}"
    );

    // 16. Wrong dtype for an input, an unknown input, an unknown signature and output.
    let e = r.grpc(&[("text", ids(&[1], vec![1]))]).await;
    refused(
        &e,
        Code::InvalidArgument,
        &format!("{v1}: input `text` must be DT_STRING, got DT_INT64"),
    );
    let e = r.grpc(&[("txt", strings(&["a"]))]).await;
    assert!(
        e.code() == Code::InvalidArgument
            && e.message()
                .starts_with(&format!("{v1}: unknown input `txt`")),
        "{e:?}"
    );
    let mut request = predict_request(spec("emb", None), &[("text", strings(&["a"]))]);
    request.model_spec.as_mut().unwrap().signature_name = "nope".into();
    let e = r.s.grpc.predict(request).await.unwrap_err();
    refused(
        &e,
        Code::InvalidArgument,
        &format!("{v1} has no signature `nope`; its signatures: serving_default"),
    );
    let mut request = predict_request(spec("emb", None), &[("text", strings(&["a"]))]);
    request.output_filter = vec!["secrets".into()];
    let e = r.s.grpc.predict(request).await.unwrap_err();
    assert!(
        e.code() == Code::InvalidArgument && e.message().contains("output_filter names `secrets`"),
        "{e:?}"
    );

    // 17. The tagger refuses text beyond its max_length in characters.
    let e = r
        .grpc_to("ner", &[("text", strings(&[&"头".repeat(5000)]))])
        .await;
    assert!(
        e.code() == Code::InvalidArgument && e.message().starts_with("model `ner` version 1"),
        "{e:?}"
    );

    // 18. Unknown model, absurd version, a 10,000-character label.
    let e = r.grpc_to("ghost", &[("text", strings(&["a"]))]).await;
    refused(
        &e,
        Code::NotFound,
        "model `ghost` is not served here; served models: cls, emb, ner",
    );
    let e =
        r.s.grpc
            .predict(predict_request(
                spec("emb", Some(i64::MAX)),
                &[("text", strings(&["a"]))],
            ))
            .await
            .unwrap_err();
    refused(
        &e,
        Code::NotFound,
        &format!(
            "model `emb` version {} does not exist; available versions: [1]",
            i64::MAX
        ),
    );
    let label = "x".repeat(10_000);
    let e =
        r.s.grpc
            .predict(predict_request(
                label_spec("emb", &label),
                &[("text", strings(&["a"]))],
            ))
            .await
            .unwrap_err();
    // The message quoting it is cut at 4 KiB: gRPC clients cap the status header at 8-16 KiB
    // and would report a longer one as a broken stream.
    let full = format!("model `emb` has no version label `{label}`; its labels: none");
    let mut cut = full[..4096].to_string();
    cut.push_str(" (truncated)");
    refused(&e, Code::InvalidArgument, &cut);
    r.still_serves("names that do not exist").await;

    // 19. A grpc-timeout header that would overflow is no deadline, not a crash.
    let mut request = tonic::Request::new(predict_request(
        spec("emb", None),
        &[("text", strings(&["a"]))],
    ));
    request
        .metadata_mut()
        .insert("grpc-timeout", "99999999H".parse().unwrap());
    r.s.grpc
        .predict(request)
        .await
        .expect("a long deadline is fine");

    let rss_after = status_kib(None, "VmRSS:");
    assert!(
        rss_after < rss_before + 600 * 1024,
        "the bombs were refused without allocating: RSS {rss_before} → {rss_after} KiB"
    );
    r.still_serves("every gRPC case").await;
    r.s.stop().await;
}

/// REST: byte, nesting and value-count bombs, ragged lists, malformed JSON, NaN, bad
/// base64 and routes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_hostile_inputs_are_refused_exactly_and_the_server_keeps_serving() {
    let mut r = rig().await;
    let v1 = "model `emb` version 1";

    // 20. A body above --rest_api_max_body_bytes.
    let rest_addr = r.rest.trim_start_matches("http://").to_string();
    let (status, body) = post_unsent_body(&rest_addr, "/v1/models/emb:predict", 10 << 20).await;
    assert_eq!(
        (
            StatusCode::from_u16(status).unwrap(),
            error_of(&body).as_str()
        ),
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            "the request body is larger than 8388608 bytes (--rest_api_max_body_bytes)"
        )
    );
    r.still_serves("a 10 MiB body").await;

    // 21. 100,000 nested lists: measured before serde recurses into them.
    let deep = format!("{{\"instances\": {}}}", "[".repeat(100_000));
    let (status, body) = r.post("/v1/models/emb:predict", deep).await;
    assert_eq!(
        (status, error_of(&body).as_str()),
        (
            StatusCode::BAD_REQUEST,
            "the request body: the JSON body nests deeper than 32 levels (--max_json_depth)"
        )
    );

    // 22. 300,000 numbers: counted before a value tree is built.
    let numbers = format!(
        "{{\"inputs\": {{\"input_ids\": [[{}1]]}}}}",
        "1,".repeat(300_000)
    );
    let (status, body) = r.post("/v1/models/emb:predict", numbers).await;
    assert_eq!((status, error_of(&body).as_str()), (StatusCode::BAD_REQUEST, "the request body: the JSON body holds more than 262144 values (--max_request_elements)"));
    r.still_serves("JSON bombs").await;

    // 23-25. Ragged lists are refused, never reshaped.
    for (ragged, message) in [
        (
            json!({"inputs": {"input_ids": [[1, 2], [3]]}}),
            "ragged list in `input_ids`: lists at depth 1 differ in length",
        ),
        (
            json!({"inputs": {"input_ids": [1, [2]]}}),
            "ragged list in `input_ids`: a list where a value was expected at depth 1",
        ),
        (
            json!({"instances": [{"input_ids": [1, 2]}, {"input_ids": [3]}]}),
            "ragged instances: `input_ids` has shape [1] in instance 1 but [2] in instance 0",
        ),
    ] {
        let (status, body) = r.post("/v1/models/emb:predict", ragged.to_string()).await;
        assert_eq!(
            (status, error_of(&body)),
            (StatusCode::BAD_REQUEST, format!("{v1}: {message}"))
        );
    }

    // 26. Malformed JSON, NaN and a number beyond f64.
    for bad in [
        r#"{"instances": ["a"#,
        r#"{"instances": [NaN]}"#,
        r#"{"inputs": {"input_ids": [[1e400]]}}"#,
    ] {
        let (status, body) = r.post("/v1/models/emb:predict", bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert!(
            error_of(&body).starts_with("malformed JSON in the request body: "),
            "{bad}: {body}"
        );
    }

    // 27. A string of 70,000 characters.
    let long = json!({"instances": ["痛".repeat(70_000)]}).to_string();
    let (status, body) = r.post("/v1/models/emb:predict", long).await;
    assert_eq!(
        (status, error_of(&body)),
        (
            StatusCode::BAD_REQUEST,
            format!(
                "{v1}: input `text`: string 0 has more than 65536 characters (--max_string_length)"
            )
        )
    );

    // 28. Strings that each fit but together decode past --max_request_bytes: 413.
    let chunk = "a".repeat(60_000);
    let many: Vec<&str> = vec![chunk.as_str(); 80];
    let (status, body) = r
        .post(
            "/v1/models/emb:predict",
            json!({"instances": many}).to_string(),
        )
        .await;
    assert_eq!((status, error_of(&body)), (StatusCode::PAYLOAD_TOO_LARGE, format!("{v1}: input `text`: the request decodes to more than 4194304 bytes (--max_request_bytes)")));

    // 29. Wrong types, bad base64, a list where an object goes.
    let (status, body) = r
        .post(
            "/v1/models/emb:predict",
            json!({"instances": [1]}).to_string(),
        )
        .await;
    assert_eq!(
        (status, error_of(&body)),
        (
            StatusCode::BAD_REQUEST,
            format!("{v1}: `text` of instance 0 must hold strings (DT_STRING), got a number")
        )
    );
    let (status, body) = r
        .post(
            "/v1/models/emb:predict",
            json!({"instances": [{"b64": "%%%"}]}).to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(error_of(&body).contains("invalid base64"), "{body}");
    let (status, body) = r.post("/v1/models/emb:predict", "[1, 2]").await;
    assert_eq!(
        (status, error_of(&body).as_str()),
        (
            StatusCode::BAD_REQUEST,
            "the request body must be a JSON object"
        )
    );

    // 30. Routes: a version that is not a number, an unknown model, a wrong method.
    let (status, body) = r
        .post("/v1/models/emb/versions/99999999999999999999:predict", "{}")
        .await;
    assert_eq!(
        (status, error_of(&body).as_str()),
        (
            StatusCode::NOT_FOUND,
            "version `99999999999999999999` is not a number"
        )
    );
    let (status, body) = r
        .post(
            "/v1/models/ghost:predict",
            json!({"instances": ["a"]}).to_string(),
        )
        .await;
    assert_eq!(
        (status, error_of(&body).as_str()),
        (
            StatusCode::NOT_FOUND,
            "model `ghost` is not served here; served models: cls, emb, ner"
        )
    );
    let status = r
        .http
        .get(format!("{}/v1/models/emb:predict", r.rest))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    r.still_serves("every REST case").await;
    r.s.stop().await;
}

/// Label cardinality: 10,000 requests for made-up model names leave the metrics page as it
/// was (they are counted under one label), over both transports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_model_names_do_not_grow_the_metrics() {
    let mut r = rig().await;
    r.still_serves("start").await;
    // The first unknown name on each transport adds the fixed `_unknown_` series.
    for name in ["warm-1", "warm-2"] {
        let _ = r.grpc_to(name, &[("text", strings(&["a"]))]).await;
        let _ = r.post(&format!("/v1/models/{name}:predict"), "{}").await;
    }
    let before = r.metrics_len().await;
    for i in 0..5_000 {
        let name = format!("ghost-{i}-{}", "x".repeat(i % 50));
        let e = r.grpc_to(&name, &[("text", strings(&["a"]))]).await;
        assert_eq!(e.code(), Code::NotFound);
        let (status, _) = r.post(&format!("/v1/models/{name}:predict"), "{}").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    let after = r.metrics_len().await;
    assert!(
        after < before + 1024,
        "metrics page {before} → {after} bytes after 10,000 made-up names"
    );
    let page = r
        .http
        .get(format!("{}/monitoring/prometheus/metrics", r.rest))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!page.contains("ghost-"), "no made-up name becomes a label");
    assert!(
        page.contains("model_name=\"_unknown_\""),
        "they are counted under one label"
    );
    r.still_serves("10,000 names").await;
    r.s.stop().await;
}

/// Raw sockets: a slow-loris body that never completes, garbage on the gRPC port and a
/// truncated HTTP/2 frame. Each leaves the server answering others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_broken_connections_do_not_stop_the_server() {
    let mut r = rig().await;
    let rest: SocketAddr = r.s.server.rest_addr.unwrap();
    let grpc: SocketAddr = r.s.server.grpc_addr;

    // 31. Slow loris: headers promise 1,000 bytes; 10 arrive, then nothing.
    let mut slow = std::net::TcpStream::connect(rest).unwrap();
    slow.write_all(b"POST /v1/models/emb:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"instance").unwrap();
    r.still_serves("a stalled body").await;

    // 32. Garbage instead of the HTTP/2 preface on the gRPC port.
    let mut garbage = std::net::TcpStream::connect(grpc).unwrap();
    garbage
        .write_all(&[0xde, 0xad, 0xbe, 0xef].repeat(1000))
        .unwrap();
    let _ = garbage.shutdown(std::net::Shutdown::Write);
    let mut sink = Vec::new();
    garbage
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = garbage.read_to_end(&mut sink);
    r.still_serves("garbage on the gRPC port").await;

    // 33. A valid preface, then a HEADERS frame cut off in the middle.
    let mut truncated = std::net::TcpStream::connect(grpc).unwrap();
    truncated
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .unwrap();
    truncated.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).unwrap(); // empty SETTINGS
    truncated
        .write_all(&[0, 0x40, 0, 1, 0x04, 0, 0, 0, 1, 0x82, 0x86])
        .unwrap(); // HEADERS claiming 16 KiB, 2 bytes sent
    drop(truncated);
    r.still_serves("a truncated HTTP/2 frame").await;

    // 34. The same on the REST port: half a request line.
    let mut half = std::net::TcpStream::connect(rest).unwrap();
    half.write_all(b"POST /v1/mod").unwrap();
    drop(half);
    drop(slow);
    r.still_serves("half an HTTP request").await;
    r.s.stop().await;
}

/// Config files and ReloadConfig: what an operator's mistake (or an attacker with access to
/// the admin API) can send is refused whole, and what serves is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_configs_are_refused_and_change_nothing() {
    let mut r = rig().await;
    let origin = "models.config";
    let dir = std::path::Path::new("/models");

    // 35. Deep nesting in text format.
    let deep = format!("model_config_list {}", "{ config ".repeat(10_000));
    let e = ModelsConfig::from_text(&deep, dir, origin)
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("models.config:1:"), "{e}");

    // 36. A platform this server does not serve.
    let e = ModelsConfig::from_text(r#"model_config_list { config { name: "a" base_path: "/a" model_platform: "tensorflow" } }"#, dir, origin).unwrap_err().to_string();
    assert_eq!(e, "models.config:1: model `a`: model_platform \"tensorflow\" is not supported; this server serves model_platform \"candle\"");

    // 37. A label name with characters TF Serving does not allow.
    let e = ModelsConfig::from_text(r#"model_config_list { config { name: "a" base_path: "/a" version_labels { key: "bad label!" value: 1 } } }"#, dir, origin).unwrap_err().to_string();
    assert!(e.contains("bad label!"), "{e}");

    // 38. Not text at all.
    let e = ModelsConfig::from_text("\u{0}\u{1}\u{2}\u{7f}", dir, origin)
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("models.config:1:"), "{e}");

    // 39. ReloadConfig with 10,000 labels pointing at versions that do not exist: refused
    // whole, with a message, and the served models unchanged.
    let labels = (0..10_000)
        .map(|i| (format!("l{i}"), 1000 + i as i64))
        .collect();
    let config = ModelConfig {
        name: "emb".into(),
        base_path: r._dir.path().join("emb").display().to_string(),
        model_platform: "candle".into(),
        version_labels: labels,
        ..Default::default()
    };
    let status = r.reload(config).await;
    assert_eq!(
        status.error_code,
        Code::FailedPrecondition as i32,
        "{}",
        &status.error_message[..200.min(status.error_message.len())]
    );
    assert!(
        status.error_message.contains("label `l0` → 1000"),
        "{}",
        &status.error_message[..200]
    );
    assert!(status.error_message.ends_with("the configuration was not changed (labels may only point at AVAILABLE versions unless --allow_version_labels_for_unavailable_models is set)"));

    // 40. ReloadConfig with a platform this server does not serve.
    let config = ModelConfig {
        name: "x".into(),
        base_path: "/x".into(),
        model_platform: "onnx".into(),
        ..Default::default()
    };
    let status = r.reload(config).await;
    assert_eq!(
        status.error_code,
        Code::InvalidArgument as i32,
        "{}",
        status.error_message
    );
    assert!(
        status
            .error_message
            .contains("model_platform \"onnx\" is not supported"),
        "{}",
        status.error_message
    );
    r.still_serves("hostile configs").await;
    r.s.stop().await;
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The WeChat webhook: forged and replayed signatures, stale clocks, entity bombs, huge and
/// invalid bodies. Its model server is never reached for any of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wechat_hostile_requests_are_refused() {
    let lexicon = Arc::new(Lexicon::shipped().unwrap());
    let models = ModelClient::new(
        &format!("127.0.0.1:{}", services::free_port()),
        "symptom_ner",
        "dialog_relevance",
        Duration::from_secs(1),
    )
    .unwrap();
    let doctor = Doctor::new(
        models,
        Arc::new(MemoryStore::default()),
        Arc::new(EmbeddedGraph::new(&lexicon)),
        lexicon,
        Duration::from_secs(600),
    );
    let app = router(
        Arc::new(doctor),
        WebOptions::new(Some(WECHAT_TOKEN.into()), ChatAccess::Token("t".into())),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let http = reqwest::Client::new();
    let mut nonces = 0u32;
    let mut signed = |timestamp: u64| {
        nonces += 1;
        let (ts, nonce) = (timestamp.to_string(), format!("hostile{nonces}"));
        let sig = wechat::signature(WECHAT_TOKEN, &ts, &nonce);
        format!("signature={sig}&timestamp={ts}&nonce={nonce}")
    };
    let post = |query: String, body: Vec<u8>| {
        let http = http.clone();
        let url = format!("{base}/wechat?{query}");
        async move {
            let r = http.post(url).body(body).send().await.unwrap();
            (r.status(), r.text().await.unwrap())
        }
    };
    let message = |content: &str| {
        format!("<xml><ToUserName><![CDATA[doctor]]></ToUserName><FromUserName><![CDATA[patient]]></FromUserName><CreateTime>1</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[subscribe]]></Event><Content><![CDATA[{content}]]></Content></xml>").into_bytes()
    };
    let welcomed =
        |(status, body): &(StatusCode, String)| *status == StatusCode::OK && body.contains("<xml>");

    // 41. A correct event is welcomed (the baseline every case below departs from).
    assert!(welcomed(&post(signed(now()), message("hi")).await));

    // 42. No signature, a forged one.
    let (status, _) = post(String::new(), message("hi")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = post(
        format!("signature={}&timestamp={}&nonce=x", "0".repeat(40), now()),
        message("hi"),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // 43. A replay of a request that was accepted.
    let query = signed(now());
    assert!(welcomed(&post(query.clone(), message("hi")).await));
    let (status, _) = post(query, message("hi")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // 44. Timestamps an hour old, an hour ahead, and the largest u64.
    for ts in [now() - 3600, now() + 3600, u64::MAX] {
        let (status, _) = post(signed(ts), message("hi")).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "timestamp {ts}");
    }

    // WeChat retries a message that gets no answer, so an unreadable one is acknowledged
    // with "success" (and a warning in the log), never processed.
    let dropped =
        |(status, body): &(StatusCode, String)| *status == StatusCode::OK && body == "success";

    // 45. Entity expansion (billion laughs) and a DOCTYPE: refused, never expanded.
    let laughs = br#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;"><!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]><xml><ToUserName>a</ToUserName><FromUserName>b</FromUserName><CreateTime>1</CreateTime><MsgType>text</MsgType><Content>&lol3;</Content></xml>"#.to_vec();
    let answer = post(signed(now()), laughs).await;
    assert!(dropped(&answer), "{answer:?}");

    // 46. A body of 2 MiB, invalid UTF-8, 20,000 nested elements, missing fields.
    let wechat = base.trim_start_matches("http://").to_string();
    let (status, _) =
        post_unsent_body(&wechat, &format!("/wechat?{}", signed(now())), 2 << 20).await;
    assert_eq!(status, 413);
    let answer = post(signed(now()), vec![0xff, 0xfe, 0xfd]).await;
    assert!(dropped(&answer), "{answer:?}");
    let nested = format!("<xml>{}</xml>", "<a>".repeat(20_000)).into_bytes();
    let answer = post(signed(now()), nested).await;
    assert!(dropped(&answer), "{answer:?}");
    // A text message without the fields WeChat always sends.
    let answer = post(signed(now()), b"<xml><Content>hi</Content></xml>".to_vec()).await;
    assert!(dropped(&answer), "{answer:?}");

    // 47. Base64 where text goes is just text: no decoding, no crash.
    let odd = base64::engine::general_purpose::STANDARD.encode([0u8; 64]);
    assert!(welcomed(&post(signed(now()), message(&odd)).await));

    // And the baseline still holds.
    assert!(welcomed(&post(signed(now()), message("hi")).await));
}
