//! `doctor_eval`: the whole AI doctor (facade logic, the model server's models over real
//! gRPC, the embedded graph, in-memory sessions) on the hand-written evaluation set in
//! `data/eval/`. Prints symptom precision/recall/F1, relatedness accuracy and the top-3
//! diagnosis rate, then the misses. It only measures: nothing is tuned on the set.
//!
//!     cargo run --release --features doctor --bin doctor_eval
//!     cargo run --release --features doctor --bin doctor_eval -- --errors 50
//!     cargo run --release --features doctor --bin doctor_eval -- --model_server 127.0.0.1:8500
//!     cargo run --release --features doctor --bin doctor_eval -- --read "嗓子眼儿有点疼"

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;

use candle_serving::config::ModelsConfig;
use candle_serving::doctor::eval::{evaluate, EvalSet};
use candle_serving::doctor::graph::EmbeddedGraph;
use candle_serving::doctor::model_client::ModelClient;
use candle_serving::doctor::session::MemoryStore;
use candle_serving::doctor::Doctor;
use candle_serving::lexicon::{Lexicon, Reader};
use candle_serving::server::{Server, ServerOptions};

#[derive(Parser)]
#[command(
    name = "doctor_eval",
    version,
    about = "Score the AI doctor on the hand-written evaluation set"
)]
struct Cli {
    /// The evaluation set: messages.jsonl, pairs.jsonl, conversations.jsonl.
    #[arg(long, default_value = "data/eval")]
    eval: PathBuf,
    /// The lexicon (symptoms, diseases, links, language tables).
    #[arg(long, default_value = "data")]
    data: PathBuf,
    /// The models to serve in-process (ignored with --model_server).
    #[arg(long = "model_config_file", default_value = "models.config")]
    model_config_file: PathBuf,
    /// Use a running model server (host:port) instead of starting one in-process.
    #[arg(long = "model_server")]
    model_server: Option<String>,
    #[arg(long = "ner_model", default_value = "symptom_ner")]
    ner_model: String,
    #[arg(long = "relevance_model", default_value = "dialog_relevance")]
    relevance_model: String,
    /// Have the entity review model (`entity_review`) judge every mention and drop those
    /// under this probability, as `doctor_facade --review_threshold` does.
    #[arg(long = "review_threshold")]
    review_threshold: Option<f32>,
    #[arg(long = "review_model", default_value = "entity_review")]
    review_model: String,
    /// How many misses of each kind to print.
    #[arg(long, default_value_t = 15)]
    errors: usize,
    /// Instead of scoring, show how the doctor reads this message: each reading of the
    /// lexicon (how, where, negated or not), the tagger's spans and the symptoms kept.
    /// Repeat the flag for several messages.
    #[arg(long)]
    read: Vec<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let set = EvalSet::load(&cli.eval).map_err(anyhow::Error::msg)?;
    let lexicon = Arc::new(Lexicon::load(&cli.data).map_err(anyhow::Error::msg)?);
    let (address, server) = match &cli.model_server {
        Some(address) => (address.clone(), None),
        None => {
            let config = ModelsConfig::from_file(&cli.model_config_file).with_context(|| {
                format!("--model_config_file {}", cli.model_config_file.display())
            })?;
            let server = Server::start(ServerOptions::local(config)).await?;
            let mut needed = vec![cli.ner_model.as_str(), cli.relevance_model.as_str()];
            if cli.review_threshold.is_some() {
                needed.push(&cli.review_model);
            }
            wait_until_served(&server, &needed).await?;
            (server.grpc_addr.to_string(), Some(server))
        }
    };
    let models = ModelClient::new(
        &address,
        &cli.ner_model,
        &cli.relevance_model,
        Duration::from_secs(10),
    )?
    .with_review_model(&cli.review_model);
    if !cli.read.is_empty() {
        let reader = Reader::new(&lexicon);
        for text in &cli.read {
            explain(&reader, &models, text).await?;
        }
        if let Some(server) = server {
            server.shutdown().await?;
        }
        return Ok(());
    }
    let doctor = Doctor::new(
        models,
        Arc::new(MemoryStore::default()),
        Arc::new(EmbeddedGraph::new(&lexicon)),
        lexicon,
        Duration::from_secs(3600),
    )
    .with_review(cli.review_threshold);
    let started = Instant::now();
    let report = evaluate(&doctor, &set).await;
    print!("{}", report.render(cli.errors));
    println!(
        "\n{} messages, {} pairs and {} conversations in {:.1} s",
        set.messages.len(),
        set.pairs.len(),
        set.conversations.len(),
        started.elapsed().as_secs_f64()
    );
    if let Some(server) = server {
        server.shutdown().await?;
    }
    anyhow::ensure!(
        report.degraded == 0,
        "{} answers had a dependency down",
        report.degraded
    );
    Ok(())
}

/// Prints the readings of `text`, the tagger's spans and the symptoms the doctor keeps.
async fn explain(reader: &Reader, models: &ModelClient, text: &str) -> anyhow::Result<()> {
    let chars: Vec<char> = text.chars().collect();
    println!("{text}");
    for f in reader.scan(text) {
        let said: String = chars[f.start..f.end].iter().collect();
        let negated = if f.negated { "  (negated)" } else { "" };
        println!(
            "  {:<12} {said} → {}{negated}",
            format!("{:?}", f.how),
            f.symptom
        );
    }
    let spans: Vec<String> = models
        .entities(text)
        .await?
        .into_iter()
        .filter(|m| m.kind == "SYM")
        .map(|m| m.text)
        .collect();
    println!("  tagger spans {spans:?}");
    let (located, dropped) = reader.locate_with_spans(text, &spans);
    let mut kept: Vec<String> = Vec::new();
    for l in located {
        if !kept.contains(&l.symptom) {
            kept.push(l.symptom);
        }
    }
    println!("  symptoms {kept:?}  dropped spans {dropped:?}");
    Ok(())
}

/// Waits until every model in `names` has a version available, or says why not.
async fn wait_until_served(server: &Server, names: &[&str]) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let readiness = server.core.readiness();
        let waiting: Vec<String> = names
            .iter()
            .filter(|n| {
                !readiness
                    .iter()
                    .any(|r| r.model == **n && !r.available_versions.is_empty())
            })
            .map(|n| n.to_string())
            .collect();
        if waiting.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!("not served after 120 s: {}", waiting.join(", "));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
