//! TLS on both ports from TF Serving's `--ssl_config_file`, with certificates made in the
//! test (rcgen): a CA, a server certificate for `localhost`, a client certificate. Checked
//! with clients we did not write (the official Python TF Serving client over
//! `grpc.ssl_channel_credentials`, `requests` over https), with tonic, and with the doctor's
//! model client; under mutual TLS a client without a certificate is refused.

use crate::common;

use std::process::Command;

use candle_serving::config::ssl::SslSettings;
use candle_serving::config::ModelsConfig;
use candle_serving::doctor::model_client::ModelClient;
use candle_serving::proto::tensorflow::serving::prediction_service_client::PredictionServiceClient;
use candle_serving::server::{Server, ServerOptions};
use common::*;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

struct Pki {
    ca: String,
    server_cert: String,
    server_key: String,
    client_cert: String,
    client_key: String,
}

fn pki() -> Pki {
    // Each certificate gets its own subject: with rcgen's one default name for all, a
    // leaf's subject would equal its issuer and clients would take it for self-signed.
    let named = |sans: Vec<String>, cn: &str| {
        let mut params = CertificateParams::new(sans).unwrap();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        params
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = named(Vec::new(), "candle-serving test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate().unwrap();
    let server = named(vec!["localhost".to_string()], "localhost")
        .signed_by(&server_key, &issuer)
        .unwrap();
    let client_key = KeyPair::generate().unwrap();
    let client = named(vec!["a-client".to_string()], "a-client")
        .signed_by(&client_key, &issuer)
        .unwrap();
    Pki {
        ca: ca.pem(),
        server_cert: server.pem(),
        server_key: server_key.serialize_pem(),
        client_cert: client.pem(),
        client_key: client_key.serialize_pem(),
    }
}

/// The SSLConfig text a user would write (PEM inline, as TF Serving reads it).
fn ssl_config(pki: &Pki, client_verify: bool) -> String {
    format!(
        "server_key: {:?}\nserver_cert: {:?}\ncustom_ca: {:?}\nclient_verify: {client_verify}\n",
        pki.server_key, pki.server_cert, pki.ca
    )
}

async fn tls_server(pki: &Pki, client_verify: bool) -> Server {
    let ner = repo_root().join("model_repo/symptom_ner");
    let mut options = ServerOptions::local(ModelsConfig::single("symptom_ner", &ner).unwrap());
    options.tls =
        Some(SslSettings::from_text(&ssl_config(pki, client_verify), "ssl.config").unwrap());
    Server::start(options).await.expect("a TLS server starts")
}

async fn tls_client(
    server: &Server,
    pki: &Pki,
    with_client_cert: bool,
) -> Result<PredictionServiceClient<Channel>, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca))
        .domain_name("localhost");
    if with_client_cert {
        tls = tls.identity(Identity::from_pem(&pki.client_cert, &pki.client_key));
    }
    let channel = Channel::from_shared(format!("https://localhost:{}", server.grpc_addr.port()))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await?;
    Ok(PredictionServiceClient::new(channel))
}

async fn wait_available(server: &Server) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while server.core.readiness().iter().any(|m| m.problem.is_some()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the tagger never loaded"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

fn python() -> String {
    let p = repo_root().join(".cache/venv-clients/bin/python");
    assert!(
        p.is_file(),
        "no Python client venv: run scripts/setup_python_clients.sh (the test command does)"
    );
    p.display().to_string()
}

/// Runs `code` in the clients' venv with the PEM files and ports in its environment.
fn run_python(code: &str, env: &[(&str, String)]) -> (bool, String) {
    let out = Command::new(python())
        .arg("-c")
        .arg(code)
        .envs(env.iter().map(|(k, v)| (k.to_string(), v.clone())))
        .env("TF_CPP_MIN_LOG_LEVEL", "3")
        .output()
        .expect("python runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

const PYTHON_CLIENTS: &str = r#"
import os, grpc, requests
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
import tensorflow as tf

read = lambda name: open(os.environ[name], "rb").read()
creds = grpc.ssl_channel_credentials(
    root_certificates=read("CA"), private_key=read("CLIENT_KEY"), certificate_chain=read("CLIENT_CERT"))
channel = grpc.secure_channel("localhost:" + os.environ["GRPC_PORT"], creds)
stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
request = predict_pb2.PredictRequest()
request.model_spec.name = "symptom_ner"
request.inputs["text"].CopyFrom(tf.make_tensor_proto(["我头痛，还有点发烧"]))
response = stub.Predict(request, timeout=30)
print("grpc entities", [e.decode() for e in response.outputs["entities"].string_val if e])

url = "https://localhost:" + os.environ["REST_PORT"] + "/v1/models/symptom_ner:predict"
r = requests.post(url, json={"instances": ["我咳嗽"]}, verify=os.environ["CA"],
                  cert=(os.environ["CLIENT_CERT"], os.environ["CLIENT_KEY"]), timeout=30)
print("rest", r.status_code, r.json()["predictions"][0]["entities"])
try:
    requests.get("https://localhost:" + os.environ["REST_PORT"] + "/v1/models/symptom_ner",
                 verify=os.environ["CA"], timeout=10)
    print("rest without a client certificate: ACCEPTED")
except requests.exceptions.RequestException as e:
    print("rest without a client certificate: refused")
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_serves_the_official_clients_and_refuses_strangers() {
    let pki = pki();
    let server = tls_server(&pki, true).await;
    wait_available(&server).await;

    // tonic with a client certificate.
    let mut client = tls_client(&server, &pki, true)
        .await
        .expect("connects with a certificate");
    let response = client
        .predict(predict_request(
            spec("symptom_ner", None),
            &[("text", strings(&["我头痛"]))],
        ))
        .await
        .expect("predicts over mutual TLS")
        .into_inner();
    assert!(response.outputs["entities"]
        .string_val
        .iter()
        .any(|e| e == "头痛".as_bytes()));

    // Without one, the handshake (or the first call) fails.
    let refused = match tls_client(&server, &pki, false).await {
        Err(_) => true,
        Ok(mut c) => c
            .predict(predict_request(
                spec("symptom_ner", None),
                &[("text", strings(&["头痛"]))],
            ))
            .await
            .is_err(),
    };
    assert!(
        refused,
        "a client without a certificate is refused under client_verify"
    );

    // Plain text on the TLS port gets nowhere.
    let plain = Channel::from_shared(format!("http://{}", server.grpc_addr))
        .unwrap()
        .connect()
        .await;
    if let Ok(channel) = plain {
        let mut c = PredictionServiceClient::new(channel);
        assert!(c
            .predict(predict_request(
                spec("symptom_ner", None),
                &[("text", strings(&["头痛"]))]
            ))
            .await
            .is_err());
    }

    // The official Python client and requests.
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, pem: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, pem).unwrap();
        path.display().to_string()
    };
    let env = [
        ("CA", file("ca.pem", &pki.ca)),
        ("CLIENT_CERT", file("client.pem", &pki.client_cert)),
        ("CLIENT_KEY", file("client.key", &pki.client_key)),
        ("GRPC_PORT", server.grpc_addr.port().to_string()),
        ("REST_PORT", server.rest_addr.unwrap().port().to_string()),
    ];
    let (ok, out) = tokio::task::spawn_blocking(move || run_python(PYTHON_CLIENTS, &env))
        .await
        .unwrap();
    assert!(ok, "{out}");
    assert!(out.contains("grpc entities ['头痛'"), "{out}");
    assert!(out.contains("rest 200 ['咳嗽']"), "{out}");
    assert!(
        out.contains("rest without a client certificate: refused"),
        "{out}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_only_tls_serves_any_client_that_trusts_the_ca_and_the_doctor_reaches_it() {
    let pki = pki();
    let server = tls_server(&pki, false).await;
    wait_available(&server).await;
    let mut client = tls_client(&server, &pki, false).await.expect("connects");
    client
        .predict(predict_request(
            spec("symptom_ner", None),
            &[("text", strings(&["我咳嗽"]))],
        ))
        .await
        .expect("predicts over TLS");

    // The doctor's model client over https with the CA file's PEM.
    let doctor = ModelClient::with_ca(
        &format!("https://localhost:{}", server.grpc_addr.port()),
        Some(pki.ca.as_bytes()),
        "symptom_ner",
        "dialog_relevance",
        std::time::Duration::from_secs(10),
    )
    .unwrap();
    let mentions = doctor
        .entities("我头痛")
        .await
        .expect("the tagger answers over TLS");
    assert!(mentions.iter().any(|m| m.text == "头痛"), "{mentions:?}");
    // A client that does not trust the CA is refused by the handshake.
    let other_ca = self::pki().ca;
    let stranger = ModelClient::with_ca(
        &format!("https://localhost:{}", server.grpc_addr.port()),
        Some(other_ca.as_bytes()),
        "symptom_ner",
        "dialog_relevance",
        std::time::Duration::from_secs(5),
    )
    .unwrap();
    assert!(stranger.entities("我头痛").await.is_err());
    server.shutdown().await.unwrap();
}
