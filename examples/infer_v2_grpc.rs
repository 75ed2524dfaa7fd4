//! A Rust client of the Open Inference Protocol (KServe v2) over gRPC, doing what
//! `tritonclient.grpc` does: readiness and metadata, then ModelInfer with the inputs in
//! `raw_input_contents` (BYTES elements each preceded by a 4-byte little-endian length) and
//! the outputs read from `raw_output_contents` (or from typed `contents`, where other v2
//! servers put them). Works against this server, Triton, or any other v2 server.
//!
//!     cargo run --example infer_v2_grpc -- http://127.0.0.1:8500 symptom_ner "我头疼，还有点发烧"

use candle_serving::proto::inference::{
    grpc_inference_service_client::GrpcInferenceServiceClient,
    model_infer_request::InferInputTensor, InferTensorContents, ModelInferRequest,
    ModelMetadataRequest, ModelReadyRequest, ServerReadyRequest,
};

/// One output's values, decoded from its raw bytes by its datatype.
fn preview(datatype: &str, raw: &[u8]) -> Vec<String> {
    fn words<const N: usize>(raw: &[u8], f: impl Fn([u8; N]) -> String) -> Vec<String> {
        raw.chunks_exact(N)
            .map(|c| f(c.try_into().expect("N bytes")))
            .collect()
    }
    match datatype {
        "FP32" => words(raw, |b| format!("{:.4}", f32::from_le_bytes(b))),
        "FP64" => words(raw, |b| format!("{:.4}", f64::from_le_bytes(b))),
        "INT32" => words(raw, |b| i32::from_le_bytes(b).to_string()),
        "INT64" => words(raw, |b| i64::from_le_bytes(b).to_string()),
        "BOOL" => raw.iter().map(|&b| (b != 0).to_string()).collect(),
        "BYTES" => {
            let mut out = Vec::new();
            let mut rest = raw;
            while let Some((len, tail)) = rest.split_first_chunk::<4>() {
                let len = (u32::from_le_bytes(*len) as usize).min(tail.len());
                out.push(String::from_utf8_lossy(&tail[..len]).into_owned());
                rest = &tail[len..];
            }
            out
        }
        other => vec![format!("({} bytes of {other})", raw.len())],
    }
}

/// Values from typed contents, whichever field is set.
fn contents(c: &InferTensorContents) -> Vec<String> {
    fn all<T: ToString>(v: &[T]) -> Vec<String> {
        v.iter().map(T::to_string).collect()
    }
    [
        all(&c.fp32_contents),
        all(&c.fp64_contents),
        all(&c.int_contents),
        all(&c.int64_contents),
        all(&c.uint_contents),
        all(&c.uint64_contents),
        all(&c.bool_contents),
        c.bytes_contents
            .iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect(),
    ]
    .into_iter()
    .find(|v| !v.is_empty())
    .unwrap_or_default()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let server = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:8500".into());
    let model = args.next().unwrap_or_else(|| "minilm".into());
    let texts: Vec<String> = args.collect();
    let texts = if texts.is_empty() {
        vec!["How do I reset my password?".to_string()]
    } else {
        texts
    };

    let mut client = GrpcInferenceServiceClient::connect(server)
        .await?
        .max_decoding_message_size(64 << 20);
    let ready = client
        .server_ready(ServerReadyRequest {})
        .await?
        .into_inner();
    let model_ready = client
        .model_ready(ModelReadyRequest {
            name: model.clone(),
            version: String::new(),
        })
        .await?
        .into_inner();
    println!(
        "server ready: {}, model {model} ready: {}",
        ready.ready, model_ready.ready
    );
    let metadata = client
        .model_metadata(ModelMetadataRequest {
            name: model.clone(),
            version: String::new(),
        })
        .await?
        .into_inner();
    for (what, tensors) in [("input", &metadata.inputs), ("output", &metadata.outputs)] {
        for t in tensors {
            println!("  {what} {} {} {:?}", t.name, t.datatype, t.shape);
        }
    }

    let mut raw = Vec::new();
    for text in &texts {
        raw.extend_from_slice(&(text.len() as u32).to_le_bytes());
        raw.extend_from_slice(text.as_bytes());
    }
    let request = ModelInferRequest {
        model_name: model,
        inputs: vec![InferInputTensor {
            name: "text".into(),
            datatype: "BYTES".into(),
            shape: vec![texts.len() as i64],
            ..Default::default()
        }],
        raw_input_contents: vec![raw],
        ..Default::default()
    };
    let response = client.model_infer(request).await?.into_inner();
    println!(
        "model {} version {}",
        response.model_name, response.model_version
    );
    for (i, output) in response.outputs.iter().enumerate() {
        // tritonclient-style servers answer in raw_output_contents; others (MLServer,
        // KServe's Python servers) in each output's typed contents.
        let values = match (response.raw_output_contents.get(i), &output.contents) {
            (Some(raw), _) => preview(&output.datatype, raw),
            (None, Some(c)) => contents(c),
            (None, None) => Vec::new(),
        };
        let shown: Vec<&str> = values.iter().take(8).map(String::as_str).collect();
        let more = if values.len() > 8 { ", ..." } else { "" };
        println!(
            "{} {} {:?}: [{}{more}]",
            output.name,
            output.datatype,
            output.shape,
            shown.join(", ")
        );
    }
    Ok(())
}
