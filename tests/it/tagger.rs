//! The BiLSTM-CRF tagger: the trainer overfits a tiny set and repeats itself with the same
//! seed; the shipped symptom model, served over gRPC, finds symptoms in real sentences,
//! leaves denied ones alone, and handles empty, unknown and over-long input.

use crate::common;

use candle_serving::config::ModelsConfig;
use candle_serving::lexicon::Lexicon;
use candle_serving::models::tagger::text::CharVocab;
use candle_serving::proto::tensorflow::serving::{GetModelMetadataRequest, SignatureDefMap};
use candle_serving::server::ServerOptions;
use candle_serving::train::corpus::ner::{Generator, Split, TAGS};
use candle_serving::train::fit::Schedule;
use candle_serving::train::tagger::{evaluate, train, TrainOptions};
use common::*;
use prost::Message;

fn tiny_options(seed: u64) -> TrainOptions {
    TrainOptions {
        schedule: Schedule {
            epochs: 40,
            batch_size: 8,
            learning_rate: 0.02,
            patience: 40,
            seed,
            ..TrainOptions::default().schedule
        },
        embedding_dim: 16,
        hidden_size: 16,
        dropout: 0.0,
        unk_rate: 0.0,
        random_char_rate: 0.0,
        ..TrainOptions::default()
    }
}

#[test]
fn training_overfits_a_tiny_set_and_repeats_with_the_same_seed() {
    let lexicon = Lexicon::shipped().unwrap();
    let samples = Generator::new(&lexicon, 3).corpus(Split::Train, 24);
    let vocab = || CharVocab::build(samples.iter().flat_map(|s| s.chars.iter().copied()));
    let trained = train(&samples, &samples, vocab(), &TAGS, &tiny_options(5), |_| {}).unwrap();
    let report = evaluate(
        &trained.fast().unwrap(),
        &trained.vocab,
        &trained.config.tags,
        &samples,
    );
    assert!(
        report.overall.f1 > 0.99,
        "F1 on the training set itself: {:?}",
        report.overall
    );

    // Same seed, same model, bit for bit; another seed, another model.
    let mut options = tiny_options(5);
    options.schedule.epochs = 2;
    let weights = |seed| {
        let t = train(
            &samples,
            &samples,
            vocab(),
            &TAGS,
            &TrainOptions {
                schedule: Schedule {
                    seed,
                    ..options.schedule.clone()
                },
                ..options.clone()
            },
            |_| {},
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        t.write(dir.path()).unwrap();
        std::fs::read(dir.path().join("model.safetensors")).unwrap()
    };
    let a = weights(5);
    assert_eq!(a, weights(5));
    assert_ne!(a, weights(6));
}

fn texts(r: &candle_serving::proto::tensorflow::TensorProto) -> Vec<String> {
    r.string_val
        .iter()
        .map(|b| String::from_utf8(b.clone()).unwrap())
        .collect()
}

#[tokio::test]
async fn the_shipped_model_finds_symptoms_over_grpc() {
    let base = repo_root().join("model_repo/symptom_ner");
    let mut s = TestServer::start(ServerOptions::local(
        ModelsConfig::single("symptom_ner", &base).unwrap(),
    ))
    .await;
    // The latest shipped version (version 1 stays in the repository for rollback).
    s.wait_for("symptom_ner", 2, AVAILABLE).await;
    let sentences = [
        "我最近总是头痛，还有点发烧",
        "医生你好，我头疼，但是没有发烧",
        "",
        "孩子咳嗽三天了，晚上还拉肚子😣",
    ];
    let r = s
        .grpc
        .predict(predict_request(
            spec("symptom_ner", None),
            &[("text", strings(&sentences))],
        ))
        .await
        .unwrap()
        .into_inner();
    let lengths = &r.outputs["lengths"].int_val;
    assert_eq!(lengths, &vec![13, 15, 0, 15]);
    let width = dims(&r.outputs["entities"])[1] as usize;
    let names = texts(&r.outputs["entities"]);
    let kinds = texts(&r.outputs["entity_types"]);
    let row = |i: usize| -> Vec<(String, String)> {
        (0..width)
            .map(|j| (names[i * width + j].clone(), kinds[i * width + j].clone()))
            .filter(|(n, _)| !n.is_empty())
            .collect()
    };
    let pair = |n: &str, k: &str| (n.to_string(), k.to_string());
    assert_eq!(row(0), vec![pair("头痛", "SYM"), pair("发烧", "SYM")]);
    assert_eq!(
        row(1),
        vec![pair("头疼", "SYM")],
        "the denied fever is not a symptom"
    );
    assert_eq!(row(2), vec![]);
    assert_eq!(
        row(3),
        vec![
            pair("咳嗽", "SYM"),
            pair("三天", "DUR"),
            pair("拉肚子", "SYM")
        ]
    );
    // Spans are character offsets, padded with -1.
    let spans = &r.outputs["entity_spans"].int_val;
    assert_eq!(&spans[..4], &[5, 7, 11, 13]);
    assert_eq!(dims(&r.outputs["entity_spans"]), vec![4, width as i64, 2]);
    assert_eq!(spans[(2 * width) * 2], -1);
    let tags = texts(&r.outputs["tags"]);
    assert_eq!(&tags[4..8], &["O", "B-SYM", "I-SYM", "O"]);

    let too_long = "头痛".repeat(300);
    let e = s
        .grpc
        .predict(predict_request(
            spec("symptom_ner", None),
            &[("text", strings(&["发烧", &too_long]))],
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert_eq!(e.message(), "model `symptom_ner` version 2: input `text`[1] has 600 characters; this model takes at most 512");

    // The limit is stated in the metadata, as the name of the text dimension.
    let m = s
        .grpc
        .get_model_metadata(GetModelMetadataRequest {
            model_spec: Some(spec("symptom_ner", None)),
            metadata_field: vec!["signature_def".into()],
        })
        .await
        .unwrap()
        .into_inner();
    let map = SignatureDefMap::decode(m.metadata["signature_def"].value.as_slice()).unwrap();
    let text = &map.signature_def["serving_default"].inputs["text"];
    assert_eq!(
        text.tensor_shape.as_ref().unwrap().dim[0].name,
        "batch (at most 512 characters per text)"
    );
    s.stop().await;
}
