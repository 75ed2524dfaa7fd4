//! The real pre-trained MiniLM (all-MiniLM-L6-v2 from PyPI) served over gRPC gives the
//! reference embeddings computed with sentence-transformers.

use crate::common;

use candle_serving::config::ModelsConfig;
use candle_serving::server::ServerOptions;
use common::*;

#[tokio::test]
async fn embeddings_match_the_sentence_transformers_reference() {
    let dir = minilm_dir();
    let config = ModelsConfig::single("minilm", dir.parent().unwrap()).unwrap();
    let mut s = TestServer::start(ServerOptions::local(config)).await;
    s.wait_for("minilm", 1, AVAILABLE).await;

    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("tests/data/minilm_embeddings.json"))
            .expect("tests/data/minilm_embeddings.json (scripts/make_reference.sh)"),
    )
    .unwrap();
    let cases = reference["cases"].as_array().unwrap();
    let texts: Vec<&str> = cases.iter().map(|c| c["text"].as_str().unwrap()).collect();
    let r = s
        .grpc
        .predict(predict_request(
            spec("minilm", None),
            &[("text", strings(&texts))],
        ))
        .await
        .unwrap()
        .into_inner();
    let e = &r.outputs["embeddings"];
    assert_eq!(dims(e), vec![texts.len() as i64, 384]);
    let values = floats(e);
    let rows: Vec<&[f32]> = values.chunks(384).collect();
    for (case, row) in cases.iter().zip(&rows) {
        let first8: Vec<f32> = case["first8"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let cos = cosine(&row[..8], &first8);
        assert!(
            cos >= 0.9999,
            "{}: cosine {cos} over the reference's first 8 values",
            case["text"]
        );
        for (got, want) in row[..8].iter().zip(&first8) {
            assert!(
                (got - want).abs() < 1e-4,
                "{}: {got} vs {want}",
                case["text"]
            );
        }
        let sum: f32 = row.iter().sum();
        assert!(
            (sum - case["sum"].as_f64().unwrap() as f32).abs() < 1e-3,
            "{}: sum {sum}",
            case["text"]
        );
        let norm: f32 = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!(
            (norm - 1.0).abs() < 1e-4,
            "sentence-transformers normalises: norm {norm}"
        );
    }
    let cos01 = cosine(rows[0], rows[1]);
    assert!(
        (cos01 - reference["cosine_0_1"].as_f64().unwrap() as f32).abs() < 1e-4,
        "cosine(0, 1) = {cos01}"
    );
    s.stop().await;
}

/// `--int8_models`: the same weights served with int8 dense layers stay within cosine 0.999
/// of fp32 on every reference and benchmark sentence, and really are different numbers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn int8_embeddings_stay_within_cosine_0_999_of_fp32() {
    let base = minilm_dir().parent().unwrap().to_path_buf();
    let config = format!(
        r#"model_config_list {{
             config {{ name: "fp32" base_path: "{0}" }}
             config {{ name: "int8" base_path: "{0}" }}
           }}"#,
        base.display()
    );
    let mut options = ServerOptions::local(
        ModelsConfig::from_text(&config, &repo_root(), "test config").unwrap(),
    );
    options.manager.int8_models = ["int8".to_string()].into();
    let mut s = TestServer::start(options).await;
    s.wait_for("fp32", 1, AVAILABLE).await;
    s.wait_for("int8", 1, AVAILABLE).await;

    let texts = minilm_accuracy_sentences();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let embed = |model: &'static str| {
        let mut grpc = s.grpc.clone();
        let request = predict_request(spec(model, None), &[("text", strings(&refs))]);
        async move { floats(&grpc.predict(request).await.unwrap().into_inner().outputs["embeddings"]) }
    };
    let (fp32, int8) = (embed("fp32").await, embed("int8").await);
    let mut lowest = 1f32;
    for (a, b) in fp32.chunks(384).zip(int8.chunks(384)) {
        lowest = lowest.min(cosine(a, b));
    }
    assert!(
        lowest >= 0.999,
        "lowest cosine int8 vs fp32 over {} sentences: {lowest}",
        texts.len()
    );
    let max_diff = fp32
        .iter()
        .zip(&int8)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        max_diff > 1e-4,
        "int8 outputs equal fp32 ({max_diff}): nothing was quantised"
    );
    println!(
        "int8 vs fp32 over {} sentences: lowest cosine {lowest}, max |diff| {max_diff}",
        texts.len()
    );
    s.stop().await;
}
