//! `doctor_facade`: the AI doctor as a WeChat webhook and a JSON chat API, over the model
//! server's gRPC API (TLS with `https://` and `--model_server_ca_file`). Sessions in Redis
//! (`--redis_url`) or in a bounded in-memory store; the knowledge graph on a Bolt server
//! (`--graph_url`) or embedded from `data/`. The chat API needs `--chat_api_token` (or
//! `--chat_api_open` for local use); WeChat requests must be signed, recent and new.
//! Wiring only: flags into the parts of `candle_serving::doctor`, where the logic lives; it
//! reaches the model server over gRPC only.
//!
//!     doctor_facade --wechat_token=secret --chat_api_token=other    # everything embedded
//!     doctor_facade --redis_url=redis://127.0.0.1/ --graph_url=bolt://127.0.0.1:7687 --graph_password=...
//!     doctor_facade load-graph --graph_url=bolt://127.0.0.1:7687 --graph_password=...
//!     doctor_facade build-graph --texts data/disease_texts --dry_run

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use candle_serving::config::LogFormat;
use candle_serving::doctor::graph::{
    BoltKnowledgeGraph, BoltSettings, EmbeddedGraph, KnowledgeGraph,
};
use candle_serving::doctor::model_client::ModelClient;
use candle_serving::doctor::pipeline::{
    build, read_texts, sentences, BuildOptions, DEFAULT_REVIEW_THRESHOLD,
};
use candle_serving::doctor::redis_conn::RedisConnection;
use candle_serving::doctor::replay::{window_for, RedisReplay, ReplayGuard};
use candle_serving::doctor::session::{
    MemoryStore, RedisStore, SessionStore, DEFAULT_MEMORY_SESSIONS, EXPIRY_SWEEP,
};
use candle_serving::doctor::web::{memory_replay, router, ChatAccess, WebOptions};
use candle_serving::doctor::Doctor;
use candle_serving::lexicon::Lexicon;
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
    /// Seed 000's offline pipeline: disease descriptions → symptom_ner (over gRPC) → the
    /// lexicon → entity_review → reviewed decisions (CSV) → links merged into the Bolt graph.
    BuildGraph {
        #[command(flatten)]
        graph: GraphArgs,
        /// A folder of `<disease>.txt` files (`# <disease>` heading, then text).
        #[arg(long, default_value = "data/disease_texts")]
        texts: PathBuf,
        /// Where `reviewed.csv` (every decision, its reason and score) goes.
        #[arg(long, default_value = "structured")]
        out: PathBuf,
        #[arg(long, default_value = "data")]
        data: PathBuf,
        #[arg(long = "model_server", default_value = "127.0.0.1:8500")]
        model_server: String,
        #[arg(long = "ner_model", default_value = "symptom_ner")]
        ner_model: String,
        /// Sentences per tagger request, mentions per review request.
        #[arg(long = "batch_size", default_value_t = 32)]
        batch_size: usize,
        #[arg(long = "review_model", default_value = "entity_review")]
        review_model: String,
        /// Mentions the review model gives a lower probability of being a real symptom
        /// mention are rejected (the default allows for the prior of disease texts, where
        /// most mentions are real).
        #[arg(long = "review_threshold", default_value_t = DEFAULT_REVIEW_THRESHOLD)]
        review_threshold: f32,
        /// Skip the entity review: every mention the tagger and the lexicon accept is kept.
        #[arg(long = "no_review")]
        no_review: bool,
        /// Compare with the graph (or, without --graph_url, with data/) but write nothing to it.
        #[arg(long = "dry_run")]
        dry_run: bool,
    },
}

#[derive(Args, Clone)]
struct GraphArgs {
    /// A Bolt server (bolt://host:7687); without it the embedded graph from data/ is used.
    #[arg(long = "graph_url")]
    graph_url: Option<String>,
    #[arg(long = "graph_user", default_value = "neo4j")]
    graph_user: String,
    #[arg(
        long = "graph_password",
        env = "GRAPH_PASSWORD",
        default_value = "",
        hide_env_values = true
    )]
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
    /// The token set in the WeChat console; without it /wechat refuses every request.
    #[arg(
        long = "wechat_token",
        env = "WECHAT_TOKEN",
        default_value = "",
        hide_env_values = true
    )]
    wechat_token: String,
    /// A signed WeChat request whose timestamp is further than this from this server's
    /// clock is refused (403); each admitted request is remembered for twice this long and
    /// refused if it comes again (a replay).
    #[arg(long = "wechat_max_clock_skew_seconds", default_value_t = 300)]
    wechat_max_clock_skew_seconds: u64,
    /// Clients of the chat API (POST /v1/doctor/chat) must send `Authorization: Bearer
    /// <token>` with this token. Without it the chat API refuses every request, unless
    /// --chat_api_open.
    #[arg(
        long = "chat_api_token",
        env = "CHAT_API_TOKEN",
        default_value = "",
        hide_env_values = true
    )]
    chat_api_token: String,
    /// Serve the chat API without a token, to anyone who can reach the port: for local use
    /// only. Ignored when --chat_api_token is set (the token is still required).
    #[arg(long = "chat_api_open")]
    chat_api_open: bool,
    /// The model server's gRPC address: host:port or http://host:port in plain text, or
    /// https://host:port over TLS (with --model_server_ca_file).
    #[arg(long = "model_server", default_value = "127.0.0.1:8500")]
    model_server: String,
    /// The PEM certificate of the CA that signed the model server's TLS certificate; needed
    /// for (and only valid with) an https:// --model_server. The certificate must name the
    /// URL's host.
    #[arg(long = "model_server_ca_file")]
    model_server_ca_file: Option<PathBuf>,
    #[arg(long = "ner_model", default_value = "symptom_ner")]
    ner_model: String,
    #[arg(long = "relevance_model", default_value = "dialog_relevance")]
    relevance_model: String,
    #[arg(long = "review_model", default_value = "entity_review")]
    review_model: String,
    /// Ask the entity review model about every symptom mention and drop those it gives a
    /// lower probability of being real (0 to 1). Off unless given.
    #[arg(long = "review_threshold")]
    review_threshold: Option<f32>,
    /// Redis for sessions and the WeChat replay memory (redis://host:6379/); without it
    /// both live in this process. If Redis is down, answers go without history and WeChat
    /// requests are refused (503), since replays could no longer be detected.
    #[arg(long = "redis_url")]
    redis_url: Option<String>,
    /// Without --redis_url: the most sessions kept in memory; beyond it the least recently
    /// used is dropped.
    #[arg(long = "max_memory_sessions", default_value_t = DEFAULT_MEMORY_SESSIONS)]
    max_memory_sessions: usize,
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
    if let Some(Command::BuildGraph {
        graph,
        texts,
        out,
        data,
        model_server,
        ner_model,
        batch_size,
        review_model,
        review_threshold,
        no_review,
        dry_run,
    }) = cli.command
    {
        if !(0.0..=1.0).contains(&review_threshold) {
            anyhow::bail!("--review_threshold must be between 0 and 1, not {review_threshold}");
        }
        let lexicon = Lexicon::load(&data).map_err(anyhow::Error::msg)?;
        let texts = read_texts(&texts, &lexicon).map_err(anyhow::Error::msg)?;
        let models = ModelClient::new(
            &model_server,
            &ner_model,
            "dialog_relevance",
            Duration::from_secs(30),
        )?
        .with_review_model(&review_model);
        let bolt_graph = graph.graph_url.as_deref().map(|url| bolt(&graph, url));
        let total: usize = texts.iter().map(|t| sentences(&t.text).len()).sum();
        let bar = indicatif::ProgressBar::new(total as u64).with_style(
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} sentences {elapsed}")
                .expect("a valid template"),
        );
        let summary = build(
            &models,
            &lexicon,
            &texts,
            &BuildOptions {
                out: Some(&out),
                graph: bolt_graph.as_ref(),
                dry_run,
                batch: batch_size,
                review: (!no_review).then_some(review_threshold),
            },
            |n| bar.inc(n as u64),
        )
        .await
        .map_err(anyhow::Error::msg)?;
        bar.finish_and_clear();
        println!("{summary}");
        println!("every decision: {}", out.join("reviewed.csv").display());
        return Ok(());
    }
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
        tracing::warn!("no --wechat_token (or WECHAT_TOKEN): /wechat rejects every request");
    }
    let chat_token = (!serve.chat_api_token.is_empty()).then(|| serve.chat_api_token.clone());
    let chat_access = ChatAccess::from_flags(chat_token, serve.chat_api_open);
    match (&chat_access, serve.chat_api_open) {
        (ChatAccess::Token(_), true) => tracing::warn!(
            "--chat_api_open is ignored: --chat_api_token is set, so the chat API still requires it"
        ),
        (ChatAccess::Open, _) => tracing::warn!(
            "the chat API is open (--chat_api_open): anyone who reaches this port can read and \
             write any chat user's conversation; use it only locally"
        ),
        (ChatAccess::Closed, _) => tracing::warn!(
            "no --chat_api_token (or CHAT_API_TOKEN) and no --chat_api_open: the chat API \
             refuses every request"
        ),
        (ChatAccess::Token(_), false) => {}
    }
    let lexicon = Arc::new(Lexicon::load(&serve.data).map_err(anyhow::Error::msg)?);
    let ca_pem =
        match &serve.model_server_ca_file {
            Some(path) => Some(std::fs::read(path).with_context(|| {
                format!("cannot read --model_server_ca_file {}", path.display())
            })?),
            None => None,
        };
    let models = ModelClient::with_ca(
        &serve.model_server,
        ca_pem.as_deref(),
        &serve.ner_model,
        &serve.relevance_model,
        Duration::from_millis(1200),
    )?
    .with_review_model(&serve.review_model);
    if let Some(t) = serve.review_threshold {
        anyhow::ensure!(
            (0.0..=1.0).contains(&t),
            "--review_threshold must be between 0 and 1, not {t}"
        );
    }
    let max_clock_skew = Duration::from_secs(serve.wechat_max_clock_skew_seconds);
    // One Redis connection serves both the sessions and the replay memory.
    let (sessions, replay): (Arc<dyn SessionStore>, Arc<dyn ReplayGuard>) = match &serve.redis_url {
        Some(url) => {
            let redis = RedisConnection::new(url, Duration::from_millis(300))
                .map_err(anyhow::Error::msg)?;
            let redis = Arc::new(redis);
            let sessions: Arc<dyn SessionStore> =
                Arc::new(RedisStore::with_connection(redis.clone()));
            let replay: Arc<dyn ReplayGuard> =
                Arc::new(RedisReplay::new(redis, window_for(max_clock_skew)));
            (sessions, replay)
        }
        None => {
            let memory = Arc::new(MemoryStore::new(serve.max_memory_sessions));
            // The task holds the store weakly and ends with it.
            drop(memory.spawn_expiry(EXPIRY_SWEEP));
            let sessions: Arc<dyn SessionStore> = memory;
            (sessions, memory_replay(max_clock_skew))
        }
    };
    let graph: Arc<dyn KnowledgeGraph> = match &serve.graph.graph_url {
        Some(url) => Arc::new(bolt(&serve.graph, url)),
        None => Arc::new(EmbeddedGraph::new(&lexicon)),
    };
    let doctor = Arc::new(
        Doctor::new(
            models,
            sessions,
            graph,
            lexicon,
            Duration::from_secs(serve.session_ttl_seconds),
        )
        .with_review(serve.review_threshold),
    );
    tracing::info!(backends = %doctor.describe(), "doctor ready");
    let token = (!serve.wechat_token.is_empty()).then(|| serve.wechat_token.clone());
    let app = router(
        doctor,
        WebOptions {
            wechat_token: token,
            budget: Duration::from_millis(4500),
            chat_access,
            max_clock_skew,
            replay,
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
