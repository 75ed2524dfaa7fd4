//! The gRPC API against a live server on tiny generated BERT models: Predict (strings,
//! pairs, pre-tokenised ids in typed fields and tensor_content), Classify, metadata,
//! status, and every class of bad request with its code and message.

use crate::common;

use candle_serving::proto::tensorflow::serving::{
    input, ClassificationRequest, ExampleList, GetModelMetadataRequest, GetModelStatusRequest,
    Input, MultiInferenceRequest, RegressionRequest, SignatureDefMap,
};
use candle_serving::proto::tensorflow::{
    feature, BytesList, Example, Feature, Features, TensorProto,
};
use common::*;
use prost::Message;
use tonic::Code;

const CONFIG: &str = r#"
model_config_list {
  config { name: "emb" base_path: "emb" model_platform: "candle" }
  config { name: "cls" base_path: "cls" model_platform: "candle"
           model_version_policy { all {} }
           version_labels { key: "stable" value: 1 } }
}"#;

async fn server() -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    publish_tiny_bert(&dir.path().join("emb"), 1, Kind::Embedding, 1);
    publish_tiny_bert(&dir.path().join("cls"), 1, Kind::Classifier, 2);
    publish_tiny_bert(&dir.path().join("cls"), 2, Kind::Classifier, 3);
    let mut s = TestServer::with_config(CONFIG, dir.path()).await;
    s.wait_for("emb", 1, AVAILABLE).await;
    s.wait_for("cls", 1, AVAILABLE).await;
    s.wait_for("cls", 2, AVAILABLE).await;
    (s, dir)
}

fn err_of<T: std::fmt::Debug>(r: Result<T, tonic::Status>) -> (Code, String) {
    let e = r.expect_err("the request should fail");
    (e.code(), e.message().to_string())
}

#[tokio::test]
async fn embeddings_of_a_batch_match_each_sentence_alone() {
    let (mut s, _dir) = server().await;
    let texts = [
        "the quick brown fox",
        "my head hurts and i have a fever",
        "我最近头痛",
    ];
    let r = s
        .grpc
        .predict(predict_request(
            spec("emb", None),
            &[("text", strings(&texts))],
        ))
        .await
        .unwrap()
        .into_inner();
    let spec_out = r.model_spec.unwrap();
    assert_eq!(spec_out.name, "emb");
    assert_eq!(
        spec_out.version_choice,
        Some(candle_serving::proto::tensorflow::serving::model_spec::VersionChoice::Version(1))
    );
    let e = &r.outputs["embeddings"];
    assert_eq!(dims(e), vec![3, 32]);
    let batch = floats(e);
    for (i, t) in texts.iter().enumerate() {
        let one = s
            .grpc
            .predict(predict_request(
                spec("emb", Some(1)),
                &[("text", strings(&[t]))],
            ))
            .await
            .unwrap()
            .into_inner();
        let alone = floats(&one.outputs["embeddings"]);
        let row = &batch[i * 32..(i + 1) * 32];
        // Padding to the longest member must not change any sentence's vector.
        assert!(
            cosine(row, &alone) > 0.99999,
            "row {i} differs from the sentence alone"
        );
        assert!(row.iter().zip(&alone).all(|(a, b)| (a - b).abs() < 1e-4));
    }
    assert!(
        cosine(&batch[0..32], &batch[32..64]) < 0.999,
        "different sentences give different vectors"
    );
    s.stop().await;
}

#[tokio::test]
async fn pre_tokenised_ids_in_tensor_content_equal_the_text_path() {
    let (mut s, _dir) = server().await;
    let text = s
        .grpc
        .predict(predict_request(
            spec("emb", None),
            &[("text", strings(&["the lazy dog"]))],
        ))
        .await
        .unwrap()
        .into_inner();
    // [CLS]=2 the lazy dog [SEP]=3, ids from the fixture vocabulary.
    let v = vocab();
    let id = |w: &str| v.iter().position(|t| t == w).unwrap() as i64;
    let ids = [id("[CLS]"), id("the"), id("lazy"), id("dog"), id("[SEP]")];
    let as_content = TensorProto {
        dtype: 9,
        tensor_shape: shape(&[1, 5]),
        tensor_content: ids.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    };
    let int32_typed = TensorProto {
        dtype: 3,
        tensor_shape: shape(&[1, 5]),
        int_val: ids.iter().map(|&v| v as i32).collect(),
        ..Default::default()
    };
    for ids_tensor in [as_content, int32_typed] {
        let r = s
            .grpc
            .predict(predict_request(
                spec("emb", None),
                &[("input_ids", ids_tensor)],
            ))
            .await
            .unwrap()
            .into_inner();
        let (a, b) = (
            floats(&text.outputs["embeddings"]),
            floats(&r.outputs["embeddings"]),
        );
        assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-5));
    }
    s.stop().await;
}

#[tokio::test]
async fn classifier_outputs_probabilities_ids_and_labels_and_reads_pairs() {
    let (mut s, _dir) = server().await;
    let texts = ["i have a fever", "hello world"];
    let pairs = ["my head hurts", "how are you"];
    let single = s
        .grpc
        .predict(predict_request(
            spec("cls", Some(2)),
            &[("text", strings(&texts))],
        ))
        .await
        .unwrap()
        .into_inner();
    let paired = s
        .grpc
        .predict(predict_request(
            spec("cls", Some(2)),
            &[("text", strings(&texts)), ("text_pair", strings(&pairs))],
        ))
        .await
        .unwrap()
        .into_inner();
    for r in [&single, &paired] {
        let p = floats(&r.outputs["probabilities"]);
        assert_eq!(dims(&r.outputs["probabilities"]), vec![2, 3]);
        let ids = &r.outputs["class_ids"].int64_val;
        let labels: Vec<String> = r.outputs["labels"]
            .string_val
            .iter()
            .map(|b| String::from_utf8(b.clone()).unwrap())
            .collect();
        for row in 0..2 {
            let probs = &p[row * 3..row * 3 + 3];
            assert!((probs.iter().sum::<f32>() - 1.0).abs() < 1e-5);
            let best = (0..3)
                .max_by(|&a, &b| probs[a].total_cmp(&probs[b]))
                .unwrap();
            assert_eq!(ids[row], best as i64);
            assert_eq!(labels[row], ["negative", "neutral", "positive"][best]);
        }
    }
    assert_ne!(
        floats(&single.outputs["probabilities"]),
        floats(&paired.outputs["probabilities"]),
        "the pair must be read"
    );
    // Versions are different models: asking for each gives each.
    let v1 = s
        .grpc
        .predict(predict_request(
            spec("cls", Some(1)),
            &[("text", strings(&texts))],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(
        floats(&v1.outputs["probabilities"]),
        floats(&single.outputs["probabilities"])
    );
    let by_label = s
        .grpc
        .predict(predict_request(
            label_spec("cls", "stable"),
            &[("text", strings(&texts))],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        floats(&by_label.outputs["probabilities"]),
        floats(&v1.outputs["probabilities"])
    );
    let latest = s
        .grpc
        .predict(predict_request(
            spec("cls", None),
            &[("text", strings(&texts))],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        floats(&latest.outputs["probabilities"]),
        floats(&single.outputs["probabilities"]),
        "no version means the highest"
    );
    s.stop().await;
}

#[tokio::test]
async fn output_filter_is_honoured() {
    let (mut s, _dir) = server().await;
    let mut request = predict_request(spec("cls", None), &[("text", strings(&["hello"]))]);
    request.output_filter = vec!["labels".into()];
    let r = s.grpc.predict(request.clone()).await.unwrap().into_inner();
    assert_eq!(r.outputs.keys().collect::<Vec<_>>(), vec!["labels"]);
    request.output_filter = vec!["logits".into()];
    let (code, msg) = err_of(s.grpc.predict(request).await);
    assert_eq!(code, Code::InvalidArgument);
    assert_eq!(msg, "model `cls` version 2: output_filter names `logits`, which signature `serving_default` does not produce; its outputs: probabilities, class_ids, labels");
    s.stop().await;
}

#[tokio::test]
async fn classify_api_reads_example_features() {
    let (mut s, _dir) = server().await;
    let example = |text: &str, pair: Option<&str>| {
        let mut feature = std::collections::HashMap::new();
        let bytes = |v: &str| Feature {
            kind: Some(feature::Kind::BytesList(BytesList {
                value: vec![v.as_bytes().to_vec()],
            })),
        };
        feature.insert("text".to_string(), bytes(text));
        if let Some(p) = pair {
            feature.insert("text_pair".to_string(), bytes(p));
        }
        Example {
            features: Some(Features { feature }),
        }
    };
    let request = |examples: Vec<Example>| ClassificationRequest {
        model_spec: Some(spec("cls", None)),
        input: Some(Input {
            kind: Some(input::Kind::ExampleList(ExampleList { examples })),
        }),
    };
    let r = s
        .grpc
        .classify(request(vec![example(
            "i have a fever",
            Some("my head hurts"),
        )]))
        .await
        .unwrap()
        .into_inner();
    let classes = &r.result.unwrap().classifications[0].classes;
    let predicted = s
        .grpc
        .predict(predict_request(
            spec("cls", None),
            &[
                ("text", strings(&["i have a fever"])),
                ("text_pair", strings(&["my head hurts"])),
            ],
        ))
        .await
        .unwrap()
        .into_inner();
    let probs = floats(&predicted.outputs["probabilities"]);
    let labels: Vec<&str> = classes.iter().map(|c| c.label.as_str()).collect();
    assert_eq!(labels, vec!["negative", "neutral", "positive"]);
    for (c, p) in classes.iter().zip(&probs) {
        assert!((c.score - p).abs() < 1e-6);
    }
    let (code, msg) = err_of(
        s.grpc
            .classify(request(vec![example("a", Some("b")), example("c", None)]))
            .await,
    );
    assert_eq!(code, Code::InvalidArgument);
    assert!(
        msg.contains("feature `text_pair` is in 1 of 2 examples"),
        "{msg}"
    );
    // An embedding model does not classify.
    let mut not_a_classifier = request(vec![example("a", None)]);
    not_a_classifier.model_spec = Some(spec("emb", None));
    let (code, msg) = err_of(s.grpc.classify(not_a_classifier).await);
    assert_eq!(code, Code::InvalidArgument);
    assert_eq!(
        msg,
        "model `emb` version 1 (embedding) does not classify; use Predict"
    );
    s.stop().await;
}

#[tokio::test]
async fn metadata_is_a_signature_def_map_in_any() {
    let (mut s, _dir) = server().await;
    let request = |fields: &[&str]| GetModelMetadataRequest {
        model_spec: Some(spec("cls", Some(1))),
        metadata_field: fields.iter().map(|f| f.to_string()).collect(),
    };
    let r = s
        .grpc
        .get_model_metadata(request(&["signature_def"]))
        .await
        .unwrap()
        .into_inner();
    let any = &r.metadata["signature_def"];
    assert_eq!(
        any.type_url,
        "type.googleapis.com/tensorflow.serving.SignatureDefMap"
    );
    let map = SignatureDefMap::decode(any.value.as_slice()).unwrap();
    let sig = &map.signature_def["serving_default"];
    assert_eq!(sig.method_name, "tensorflow/serving/predict");
    assert_eq!(sig.inputs["text"].dtype, 7);
    assert_eq!(sig.inputs["input_ids"].dtype, 9);
    let probs = &sig.outputs["probabilities"];
    assert_eq!(probs.dtype, 1);
    let dims: Vec<i64> = probs
        .tensor_shape
        .as_ref()
        .unwrap()
        .dim
        .iter()
        .map(|d| d.size)
        .collect();
    assert_eq!(dims, vec![-1, 3]);
    let (code, msg) = err_of(s.grpc.get_model_metadata(request(&["graph"])).await);
    assert_eq!(code, Code::InvalidArgument);
    assert_eq!(
        msg,
        "metadata_field `graph` is not available; this server offers `signature_def`"
    );
    s.stop().await;
}

#[tokio::test]
async fn status_lists_every_version() {
    let (mut s, _dir) = server().await;
    let r = s
        .models
        .get_model_status(GetModelStatusRequest {
            model_spec: Some(spec("cls", None)),
        })
        .await
        .unwrap()
        .into_inner();
    let seen: Vec<(i64, i32, i32)> = r
        .model_version_status
        .iter()
        .map(|v| (v.version, v.state, v.status.as_ref().unwrap().error_code))
        .collect();
    assert_eq!(seen, vec![(2, AVAILABLE, 0), (1, AVAILABLE, 0)]);
    let (code, msg) = err_of(
        s.models
            .get_model_status(GetModelStatusRequest {
                model_spec: Some(spec("nope", None)),
            })
            .await,
    );
    assert_eq!(code, Code::NotFound);
    assert_eq!(
        msg,
        "model `nope` is not served here; served models: cls, emb"
    );
    s.stop().await;
}

#[tokio::test]
async fn resolution_errors_name_the_model_and_what_is_there() {
    let (mut s, _dir) = server().await;
    let ask = |spec| predict_request(spec, &[("text", strings(&["hello"]))]);
    let (code, msg) = err_of(s.grpc.predict(ask(spec("ghost", None))).await);
    assert_eq!(
        (code, msg.as_str()),
        (
            Code::NotFound,
            "model `ghost` is not served here; served models: cls, emb"
        )
    );
    let (code, msg) = err_of(s.grpc.predict(ask(spec("cls", Some(7)))).await);
    assert_eq!(
        (code, msg.as_str()),
        (
            Code::NotFound,
            "model `cls` version 7 does not exist; available versions: [1, 2]"
        )
    );
    let (code, msg) = err_of(s.grpc.predict(ask(label_spec("cls", "canary"))).await);
    assert_eq!(
        (code, msg.as_str()),
        (
            Code::InvalidArgument,
            "model `cls` has no version label `canary`; its labels: stable → 1"
        )
    );
    let mut no_name = ask(spec("", None));
    no_name.model_spec.as_mut().unwrap().name.clear();
    assert_eq!(
        err_of(s.grpc.predict(no_name).await),
        (Code::InvalidArgument, "model_spec.name is empty".into())
    );
    let mut bad_sig = ask(spec("emb", None));
    bad_sig.model_spec.as_mut().unwrap().signature_name = "classify".into();
    assert_eq!(
        err_of(s.grpc.predict(bad_sig).await),
        (
            Code::InvalidArgument,
            "model `emb` version 1 has no signature `classify`; its signatures: serving_default"
                .into()
        )
    );
    s.stop().await;
}

#[tokio::test]
async fn bad_inputs_are_invalid_argument_naming_input_expected_and_given() {
    let (mut s, _dir) = server().await;
    let cases: Vec<(Vec<(&str, TensorProto)>, &str)> = vec![
        (
            vec![("txt", strings(&["a"]))],
            "model `emb` version 1: unknown input `txt`; the signature takes `text` (DT_STRING [-1], optional), `input_ids` (DT_INT64|DT_INT32 [-1,-1], optional), `attention_mask` (DT_INT64|DT_INT32 [-1,-1], optional), `token_type_ids` (DT_INT64|DT_INT32 [-1,-1], optional)",
        ),
        (
            vec![("text", TensorProto { dtype: 1, tensor_shape: shape(&[1]), float_val: vec![1.0], ..Default::default() })],
            "model `emb` version 1: input `text` must be DT_STRING, got DT_FLOAT",
        ),
        (
            vec![("text", TensorProto { dtype: 7, tensor_shape: shape(&[1, 1]), string_val: vec![b"a".to_vec()], ..Default::default() })],
            "model `emb` version 1: input `text` must have shape [-1], got [1,1]",
        ),
        (vec![("text", strings(&[]))], "model `emb` version 1: input `text` is an empty batch; send at least one entry"),
        (vec![], "model `emb` version 1: the request has no inputs"),
        (
            vec![("text", TensorProto { dtype: 7, tensor_shape: shape(&[3]), string_val: vec![b"a".to_vec()], ..Default::default() }), ("input_ids", TensorProto { dtype: 9, tensor_shape: shape(&[3, 2]), int64_val: vec![1; 6], ..Default::default() })],
            "model `emb` version 1: send either `text` or `input_ids`, not both",
        ),
        (
            vec![("input_ids", TensorProto { dtype: 9, tensor_shape: shape(&[1, 2]), int64_val: vec![2, 999], ..Default::default() })],
            "model `emb` version 1: `input_ids`[0][1] = 999 is outside [0, 49)",
        ),
        (
            vec![("text", TensorProto { dtype: 7, tensor_shape: shape(&[1]), string_val: vec![vec![0xff, 0xfe]], ..Default::default() })],
            "model `emb` version 1: input `text`[0] is not valid UTF-8: invalid utf-8 sequence of 1 bytes from index 0",
        ),
        (
            vec![("text", TensorProto { dtype: 7, tensor_shape: shape(&[2]), string_val: vec![b"a".to_vec(); 3], ..Default::default() })],
            "model `emb` version 1: input `text`: shape [2] needs 2 values but 3 were given in string_val",
        ),
        (
            vec![("text", TensorProto { dtype: 19, ..Default::default() })],
            "model `emb` version 1: input `text`: dtype DT_HALF is not supported by this server",
        ),
    ];
    for (inputs, expected) in cases {
        let (code, msg) = err_of(
            s.grpc
                .predict(predict_request(spec("emb", None), &inputs))
                .await,
        );
        assert_eq!((code, msg.as_str()), (Code::InvalidArgument, expected));
    }
    let ragged = [
        ("text", strings(&["a", "b"])),
        ("text_pair", strings(&["c"])),
    ];
    let (code, msg) = err_of(
        s.grpc
            .predict(predict_request(spec("cls", None), &ragged))
            .await,
    );
    assert_eq!((code, msg.as_str()), (Code::InvalidArgument, "model `cls` version 2: inputs disagree on the batch size: `text` has 2 entries but `text_pair` has 1"));
    let too_many: Vec<&str> = vec!["a"; 257];
    let (code, msg) = err_of(
        s.grpc
            .predict(predict_request(
                spec("emb", None),
                &[("text", strings(&too_many))],
            ))
            .await,
    );
    assert_eq!((code, msg.as_str()), (Code::InvalidArgument, "model `emb` version 1: input `text` has a batch of 257, more than the 256 this server accepts in one request"));
    // The server keeps serving after all of that.
    s.grpc
        .predict(predict_request(
            spec("emb", None),
            &[("text", strings(&["still fine"]))],
        ))
        .await
        .unwrap();
    s.stop().await;
}

#[tokio::test]
async fn long_texts_are_cut_at_the_model_maximum() {
    let (mut s, _dir) = server().await;
    let long = "the quick brown fox jumps over the lazy dog ".repeat(40);
    let r = s
        .grpc
        .predict(predict_request(
            spec("emb", None),
            &[("text", strings(&[&long, "short"]))],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(dims(&r.outputs["embeddings"]), vec![2, 32]);
    assert!(floats(&r.outputs["embeddings"])
        .iter()
        .all(|v| v.is_finite()));
    let ids = TensorProto {
        dtype: 9,
        tensor_shape: shape(&[1, 65]),
        int64_val: vec![5; 65],
        ..Default::default()
    };
    let (code, msg) = err_of(
        s.grpc
            .predict(predict_request(spec("emb", None), &[("input_ids", ids)]))
            .await,
    );
    assert_eq!((code, msg.as_str()), (Code::InvalidArgument, "model `emb` version 1: `input_ids` has sequences of 65 tokens; this model takes at most 64"));
    s.stop().await;
}

#[tokio::test]
async fn regress_and_multi_inference_are_unimplemented_with_a_reason() {
    let (mut s, _dir) = server().await;
    let e = s
        .grpc
        .regress(RegressionRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented);
    assert!(e.message().starts_with("Regress is not implemented"));
    let e = s
        .grpc
        .multi_inference(MultiInferenceRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented);
    assert!(e
        .message()
        .contains("send one Predict or Classify per task"));
    s.stop().await;
}
