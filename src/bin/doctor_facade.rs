//! `doctor_facade`: the AI doctor as a WeChat webhook and a JSON chat API, over the model
//! server's gRPC API. Sessions in Redis (`--redis_url`) or in memory; the knowledge graph
//! on a Bolt server (`--graph_url`) or embedded from `data/`.
//!
//!     doctor_facade --wechat_token=secret                      # everything embedded
//!     doctor_facade --redis_url=redis://127.0.0.1/ --graph_url=bolt://127.0.0.1:7687 --graph_password=...
//!     doctor_facade load-graph --graph_url=bolt://127.0.0.1:7687 --graph_password=...

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use candle_serving::config::LogFormat;
use candle_serving::corpus::Lexicon;
use candle_serving::doctor::graph::{
    BoltKnowledgeGraph, BoltSettings, EmbeddedGraph, KnowledgeGraph,
};
use candle_serving::doctor::models::ModelClient;
use candle_serving::doctor::session::{MemoryStore, RedisStore, SessionStore};
use candle_serving::doctor::web::{router, WebOptions};
use candle_serving::doctor::Doctor;
use candle_serving::server::init_logging;

#[derive(Parser)]
#[command(
    name = "doctor_facade",
    version,
    about = "The AI doctor: WeChat webhook and chat API over the model server"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: Serve,
}

#[derive(Subcommand)]
enum Command {
    /// Write the lexicon in data/ into a Bolt graph server (MERGE, so it can be rerun).
    LoadGraph {
        #[command(flatten)]
        graph: GraphArgs,
        #[arg(long, default_value = "data")]
        data: PathBuf,
    },
}

#[derive(Args, Clone)]
struct GraphArgs {
    /// A Bolt server (bolt://host:7687); without it the embedded graph from data/ is used.
    #[arg(long = "graph_url")]
    graph_url: Option<String>,
    #[arg(long = "graph_user", default_value = "neo4j")]
    graph_user: String,
    #[arg(long = "graph_password", env = "GRAPH_PASSWORD", default_value = "")]
    graph_password: String,
    #[arg(long = "graph_database")]
    graph_database: Option<String>,
}

#[derive(Args, Clone)]
struct Serve {
    #[arg(long = "port", default_value_t = 8080)]
    port: u16,
    #[arg(long = "host", default_value = "0.0.0.0")]
    host: IpAddr,
    /// The token set in the WeChat console.
    #[arg(long = "wechat_token", env = "WECHAT_TOKEN", default_value = "")]
    wechat_token: String,
    /// The model server's gRPC address.
    #[arg(long = "model_server", default_value = "127.0.0.1:8500")]
    model_server: String,
    #[arg(long = "ner_model", default_value = "symptom_ner")]
    ner_model: String,
    #[arg(long = "relevance_model", default_value = "dialog_relevance")]
    relevance_model: String,
    /// Redis for sessions (redis://host:6379/); without it sessions live in memory.
    #[arg(long = "redis_url")]
    redis_url: Option<String>,
    #[command(flatten)]
    graph: GraphArgs,
    /// Sessions expire after this long without a message.
    #[arg(long = "session_ttl_seconds", default_value_t = 1800)]
    session_ttl_seconds: u64,
    /// The lexicon (symptom names and aliases, the embedded graph).
    #[arg(long = "data", default_value = "data")]
    data: PathBuf,
    #[arg(long = "log_format", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

fn bolt(graph: &GraphArgs, url: &str) -> BoltKnowledgeGraph {
    BoltKnowledgeGraph::new(BoltSettings {
        url: url.to_string(),
        user: graph.graph_user.clone(),
        password: graph.graph_password.clone(),
        database: graph.graph_database.clone(),
        timeout: Duration::from_millis(1200),
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.serve.log_format);
    if let Some(Command::LoadGraph { graph, data }) = cli.command {
        let url = graph
            .graph_url
            .clone()
            .context("load-graph needs --graph_url")?;
        let lexicon = Lexicon::load(&data).map_err(anyhow::Error::msg)?;
        let links = bolt(&graph, &url).load_lexicon(&lexicon).await?;
        println!(
            "wrote {} symptoms, {} diseases and {links} links into {url}",
            lexicon.symptoms.len(),
            lexicon.diseases.len()
        );
        return Ok(());
    }
    let serve = cli.serve;
    if serve.wechat_token.is_empty() {
        tracing::warn!("no --wechat_token (or WECHAT_TOKEN): /wechat rejects every request; the chat API works");
    }
    let lexicon = Arc::new(Lexicon::load(&serve.data).map_err(anyhow::Error::msg)?);
    let models = ModelClient::new(
        &serve.model_server,
        &serve.ner_model,
        &serve.relevance_model,
        Duration::from_millis(1200),
    )?;
    let sessions: Arc<dyn SessionStore> = match &serve.redis_url {
        Some(url) => Arc::new(RedisStore::new(url, Duration::from_millis(300))?),
        None => Arc::new(MemoryStore::default()),
    };
    let graph: Arc<dyn KnowledgeGraph> = match &serve.graph.graph_url {
        Some(url) => Arc::new(bolt(&serve.graph, url)),
        None => Arc::new(EmbeddedGraph::new(&lexicon)),
    };
    let doctor = Arc::new(Doctor::new(
        models,
        sessions,
        graph,
        lexicon,
        Duration::from_secs(serve.session_ttl_seconds),
    ));
    tracing::info!(backends = %doctor.describe(), "doctor ready");
    let token = (!serve.wechat_token.is_empty()).then(|| serve.wechat_token.clone());
    let app = router(
        doctor,
        WebOptions {
            wechat_token: token,
            budget: Duration::from_millis(4500),
        },
    );
    let listener = tokio::net::TcpListener::bind(SocketAddr::new(serve.host, serve.port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", serve.host, serve.port))?;
    tracing::info!(address = %listener.local_addr()?, "doctor listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(candle_serving::server::wait_for_signal())
        .await?;
    Ok(())
}
