//! The AI doctor end to end: the real `candle_model_server` on the shipped tagger and
//! relevance models, a real redis-server and a real ArcadeDB speaking Bolt, and the doctor's
//! HTTP side on a real socket. The same conversation also runs on the embedded defaults.
//! Faults are real too: services are killed and restarted mid-conversation. Who may ask is
//! tested here as well: the chat API's token, WeChat's clock and replay checks, and the
//! separate session key spaces of the two entry points.

use crate::common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use candle_serving::doctor::graph::{
    BoltKnowledgeGraph, BoltSettings, EmbeddedGraph, KnowledgeGraph,
};
use candle_serving::doctor::model_client::ModelClient;
use candle_serving::doctor::redis_conn::RedisConnection;
use candle_serving::doctor::replay::{window_for, RedisReplay};
use candle_serving::doctor::session::{MemoryStore, RedisStore, SessionKey, SessionStore};
use candle_serving::doctor::web::{router, ChatAccess, WebOptions};
use candle_serving::doctor::{reply, wechat, Doctor};
use candle_serving::lexicon::Lexicon;
use common::process::{spawn_server, Spawned};
use common::services::{free_port, Arcade, Redis, ARCADE_PASSWORD};
use common::{post_unsent_body, repo_root};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// The WeChat token.
const TOKEN: &str = "doctor-test-token";
/// The chat API's bearer token.
const CHAT_TOKEN: &str = "doctor-chat-test-token";

/// The model server on the shipped tagger and relevance models, on a fixed port so it can
/// be restarted where the doctor expects it.
struct Models {
    port: u16,
    dir: tempfile::TempDir,
    server: Option<Spawned>,
}

impl Models {
    fn start() -> Models {
        let dir = tempfile::tempdir().unwrap();
        let root = repo_root();
        let config = format!(
            "model_config_list {{\n  config {{ name: \"symptom_ner\" base_path: \"{0}/model_repo/symptom_ner\" model_platform: \"candle\" }}\n  config {{ name: \"dialog_relevance\" base_path: \"{0}/model_repo/dialog_relevance\" model_platform: \"candle\" }}\n  config {{ name: \"entity_review\" base_path: \"{0}/model_repo/entity_review\" model_platform: \"candle\" }}\n}}\n",
            root.display()
        );
        std::fs::write(dir.path().join("models.config"), config).unwrap();
        let mut models = Models {
            port: free_port(),
            dir,
            server: None,
        };
        models.restart();
        models
    }

    fn restart(&mut self) {
        let port = format!("--port={}", self.port);
        let config = format!(
            "--model_config_file={}",
            self.dir.path().join("models.config").display()
        );
        let server = spawn_server(self.dir.path(), &[&port, "--rest_api_port=0", &config])
            .expect("the model server starts");
        self.server = Some(server);
    }

    fn stop(&mut self) {
        self.server = None;
    }

    /// Waits until the three models answer (the server listens before its models are loaded).
    async fn ready(&self) {
        let client = self.client();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let candidate = [("头痛".to_string(), "【头痛】".to_string())];
        while client.entities("头痛").await.is_err()
            || client.related("头痛", "发烧").await.is_err()
            || client.review(&candidate).await.is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the models never became available"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn client(&self) -> ModelClient {
        ModelClient::new(
            &format!("127.0.0.1:{}", self.port),
            "symptom_ner",
            "dialog_relevance",
            Duration::from_secs(2),
        )
        .unwrap()
    }
}

fn bolt(arcade: &Arcade) -> BoltKnowledgeGraph {
    BoltKnowledgeGraph::new(BoltSettings {
        url: arcade.url(),
        user: "root".into(),
        password: ARCADE_PASSWORD.into(),
        database: Some("graphdb".into()),
        timeout: Duration::from_secs(3),
    })
}

/// A doctor on the embedded defaults: sessions in memory, the graph from `data/`.
fn embedded(models: &Models) -> Doctor {
    let lexicon = lexicon();
    let graph = Arc::new(EmbeddedGraph::new(&lexicon));
    Doctor::new(
        models.client(),
        Arc::new(MemoryStore::default()),
        graph,
        lexicon,
        Duration::from_secs(600),
    )
}

fn lexicon() -> Arc<Lexicon> {
    Arc::new(Lexicon::shipped().unwrap())
}

/// A doctor whose model server is a port nobody listens on: enough wherever the models are
/// never asked (events, refused requests) or a degraded 200 will do.
fn offline() -> Doctor {
    let lexicon = lexicon();
    let models = ModelClient::new(
        &format!("127.0.0.1:{}", free_port()),
        "symptom_ner",
        "dialog_relevance",
        Duration::from_secs(2),
    )
    .unwrap();
    Doctor::new(
        models,
        Arc::new(MemoryStore::default()),
        Arc::new(EmbeddedGraph::new(&lexicon)),
        lexicon,
        Duration::from_secs(600),
    )
}

/// The options of most tests: both tokens set, in-memory replay check.
fn options() -> WebOptions {
    WebOptions::new(Some(TOKEN.into()), ChatAccess::Token(CHAT_TOKEN.into()))
}

/// Now, in WeChat's terms (Unix seconds).
fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A nonce no other request of this test binary used.
fn fresh_nonce() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "n{}x{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The query string WeChat signs a request with.
fn signed_query(token: &str, timestamp: &str, nonce: &str) -> String {
    let signature = wechat::signature(token, timestamp, nonce);
    format!("signature={signature}&timestamp={timestamp}&nonce={nonce}")
}

/// The doctor's HTTP side on a free loopback port.
struct Facade {
    base: String,
    http: reqwest::Client,
}

async fn serve(doctor: Doctor) -> Facade {
    serve_with(doctor, options()).await
}

async fn serve_with(doctor: Doctor, options: WebOptions) -> Facade {
    let app = router(Arc::new(doctor), options);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Facade {
        base: format!("http://{address}"),
        http: reqwest::Client::new(),
    }
}

/// Posts to the chat API at `base` with the given Authorization header; (status, JSON).
async fn post_chat(
    http: &reqwest::Client,
    base: &str,
    authorization: Option<&str>,
    user: &str,
    text: &str,
) -> (StatusCode, Value) {
    let mut request = http
        .post(format!("{base}/v1/doctor/chat"))
        .json(&json!({ "user": user, "text": text }));
    if let Some(a) = authorization {
        request = request.header("authorization", a);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let body = response.text().await.unwrap();
    let json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    (status, json)
}

/// `Authorization` with [`CHAT_TOKEN`].
const BEARER: &str = "Bearer doctor-chat-test-token";

impl Facade {
    async fn chat(&self, user: &str, text: &str) -> Value {
        let (status, answer) = post_chat(&self.http, &self.base, Some(BEARER), user, text).await;
        assert_eq!(status, StatusCode::OK, "{text}: {answer}");
        answer
    }

    /// Posts raw XML to the webhook, signed with `token` now and with a fresh nonce;
    /// (status, body).
    async fn wechat(&self, token: &str, xml: impl Into<reqwest::Body>) -> (StatusCode, String) {
        let query = signed_query(token, &now().to_string(), &fresh_nonce());
        self.wechat_query(&query, xml).await
    }

    /// Posts raw XML to the webhook with exactly this query string; (status, body).
    async fn wechat_query(
        &self,
        query: &str,
        xml: impl Into<reqwest::Body>,
    ) -> (StatusCode, String) {
        let response = self
            .http
            .post(format!("{}/wechat?{query}", self.base))
            .body(xml)
            .send()
            .await
            .unwrap();
        (response.status(), response.text().await.unwrap())
    }

    /// The webhook's server check (GET) with this query string; (status, body).
    async fn wechat_get(&self, query: &str) -> (StatusCode, String) {
        let response = self
            .http
            .get(format!("{}/wechat?{query}", self.base))
            .send()
            .await
            .unwrap();
        (response.status(), response.text().await.unwrap())
    }

    /// Sends a signed message; asserts a 200 (WeChat never sees an error status) and
    /// returns the text of the XML reply.
    async fn wechat_reply(&self, xml: impl Into<reqwest::Body>) -> String {
        let (status, body) = self.wechat(TOKEN, xml).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let answer = wechat::parse(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
        answer.content.unwrap_or_default()
    }
}

fn symptoms(answer: &Value) -> BTreeSet<String> {
    answer["symptoms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// Seed 000's flow: a complaint, a follow-up that adds symptoms, a new complaint that
/// starts over; another user is not affected.
async fn conversation(facade: &Facade, user: &str) {
    let first = facade.chat(user, "我这两天咳嗽，还有点发烧").await;
    assert_eq!(symptoms(&first), set(&["咳嗽", "发热"]), "{first}");
    assert_eq!(
        first["related"],
        Value::Null,
        "nothing to continue: {first}"
    );
    assert_eq!(first["session"]["turns"], 1);
    assert_eq!(first["session"]["history"], true);
    let diseases = first["diseases"].as_array().unwrap();
    assert!(!diseases.is_empty(), "{first}");
    assert_eq!(
        diseases[0]["matched"].as_array().unwrap().len(),
        2,
        "the best disease explains both: {first}"
    );
    let reply = first["reply"].as_str().unwrap();
    assert!(
        reply.contains("可能的疾病") && reply.contains(diseases[0]["name"].as_str().unwrap()),
        "{reply}"
    );
    assert!(
        reply.contains(diseases[0]["department"].as_str().unwrap()),
        "{reply}"
    );

    let follow = facade.chat(user, "而且痰多").await;
    assert_eq!(follow["related"], true, "{follow}");
    assert_eq!(
        symptoms(&follow),
        set(&["咳嗽", "发热", "咳痰"]),
        "{follow}"
    );
    assert_eq!(follow["session"]["turns"], 2);
    assert_eq!(
        follow["diseases"][0]["matched"].as_array().unwrap().len(),
        3,
        "{follow}"
    );

    let other = facade.chat(user, "还有个事，我眼睛痒").await;
    assert_eq!(other["related"], false, "{other}");
    assert_eq!(
        symptoms(&other),
        set(&["眼痒"]),
        "the session starts over: {other}"
    );
    assert_eq!(other["session"]["turns"], 1);

    let stranger = facade.chat(&format!("{user}-other"), "你好").await;
    assert_eq!(stranger["related"], Value::Null);
    assert!(symptoms(&stranger).is_empty());
    assert_eq!(stranger["reply"], reply::NO_SYMPTOMS);
    assert_eq!(stranger["degraded"], json!([]));
}

/// Runs `doctor_facade <args>` against the ArcadeDB graph; returns what it printed.
async fn graph_command(arcade: &Arcade, args: Vec<String>) -> String {
    let url = arcade.url();
    let run = move || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_doctor_facade"))
            .current_dir(repo_root())
            .args(&args)
            .args([
                &format!("--graph_url={url}"),
                "--graph_user=root",
                "--graph_database=graphdb",
            ])
            .env("GRAPH_PASSWORD", ARCADE_PASSWORD)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    tokio::task::spawn_blocking(run).await.unwrap()
}

async fn write_graph(arcade: &Arcade) {
    let printed = graph_command(arcade, vec!["load-graph".into()]).await;
    assert!(printed.contains("wrote"), "{printed}");
}

async fn count(graph: &neo4rs::Graph, cypher: &str) -> i64 {
    let mut rows = graph.execute(neo4rs::query(cypher)).await.unwrap();
    rows.next().await.unwrap().unwrap().get::<i64>("n").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_on_redis_and_a_bolt_graph() {
    let redis = Redis::start();
    let arcade = Arcade::start();
    let models = Models::start();
    models.ready().await;
    let lexicon = lexicon();

    // load-graph writes the lexicon, and writing it again changes nothing (MERGE).
    write_graph(&arcade).await;
    let config = neo4rs::ConfigBuilder::default()
        .uri(arcade.url())
        .user("root")
        .password(ARCADE_PASSWORD)
        .db("graphdb")
        .build()
        .unwrap();
    let graph = neo4rs::Graph::connect(config).await.unwrap();
    let counts = [
        count(&graph, "MATCH (s:Symptom) RETURN count(s) AS n").await,
        count(&graph, "MATCH (d:Disease) RETURN count(d) AS n").await,
        count(
            &graph,
            "MATCH (:Symptom)-[r:SYMPTOM_OF]->(:Disease) RETURN count(r) AS n",
        )
        .await,
    ];
    assert_eq!(
        counts,
        [
            lexicon.symptoms.len() as i64,
            lexicon.diseases.len() as i64,
            lexicon.links.len() as i64
        ]
    );
    write_graph(&arcade).await;
    let again = [
        count(&graph, "MATCH (s:Symptom) RETURN count(s) AS n").await,
        count(&graph, "MATCH (d:Disease) RETURN count(d) AS n").await,
        count(
            &graph,
            "MATCH (:Symptom)-[r:SYMPTOM_OF]->(:Disease) RETURN count(r) AS n",
        )
        .await,
    ];
    assert_eq!(again, counts, "load-graph is idempotent");

    // The Bolt graph answers exactly as the embedded one does.
    let embedded = EmbeddedGraph::new(&lexicon);
    let remote = bolt(&arcade);
    for query in [
        vec!["咳嗽", "发热"],
        vec!["头痛", "恶心", "发热"],
        vec!["皮疹"],
        vec!["不存在"],
    ] {
        let query: Vec<String> = query.into_iter().map(String::from).collect();
        assert_eq!(
            remote.diseases_for(&query, 5).await.unwrap(),
            embedded.diseases_for(&query, 5).await.unwrap(),
            "{query:?}"
        );
    }

    let sessions = Arc::new(RedisStore::new(&redis.url(), Duration::from_secs(1)).unwrap());
    let doctor = Doctor::new(
        models.client(),
        sessions,
        Arc::new(remote),
        lexicon,
        Duration::from_secs(600),
    );
    let facade = serve(doctor).await;
    conversation(&facade, "alice").await;

    // The session is in Redis, under a namespaced key, with the TTL.
    let key = RedisStore::key(&SessionKey::chat("alice"));
    assert_eq!(key, "doctor:session:chat:alice");
    let ttl = redis.command(&["TTL", &key]).unwrap();
    let seconds: i64 = ttl.trim_start_matches(':').parse().unwrap();
    assert!((1..=600).contains(&seconds), "TTL {ttl}");
}

/// Two facades (two replicas behind a load balancer) on one Redis share sessions: a
/// conversation may hop between them turn by turn and keeps its history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_hops_between_two_facades_on_one_redis() {
    let redis = Redis::start();
    let models = Models::start();
    models.ready().await;
    let facade = || {
        let sessions = Arc::new(RedisStore::new(&redis.url(), Duration::from_secs(1)).unwrap());
        let lexicon = lexicon();
        Doctor::new(
            models.client(),
            sessions,
            Arc::new(EmbeddedGraph::new(&lexicon)),
            lexicon,
            Duration::from_secs(600),
        )
    };
    let (a, b) = (serve(facade()).await, serve(facade()).await);

    let first = a.chat("hopper", "我这两天咳嗽，还有点发烧").await;
    assert_eq!(symptoms(&first), set(&["咳嗽", "发热"]), "{first}");
    assert_eq!(first["session"]["turns"], 1);
    let second = b.chat("hopper", "而且痰多").await;
    assert_eq!(second["related"], true, "{second}");
    assert_eq!(
        symptoms(&second),
        set(&["咳嗽", "发热", "咳痰"]),
        "{second}"
    );
    assert_eq!(second["session"]["turns"], 2, "{second}");
    let third = a.chat("hopper", "晚上咳得更厉害").await;
    assert_eq!(third["session"]["turns"], 3, "{third}");
    assert!(
        symptoms(&third).is_superset(&set(&["咳嗽", "发热", "咳痰"])),
        "{third}"
    );
    // Another user on the other facade starts alone.
    let other = b.chat("someone-else", "我眼睛痒").await;
    assert_eq!(symptoms(&other), set(&["眼痒"]), "{other}");
    assert_eq!(other["session"]["turns"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_conversation_on_the_embedded_defaults() {
    let models = Models::start();
    models.ready().await;
    conversation(&serve(embedded(&models)).await, "bob").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_expire_in_redis_and_in_memory() {
    let redis = Redis::start();
    let models = Models::start();
    models.ready().await;
    let lexicon = lexicon();
    let stores: [Arc<dyn SessionStore>; 2] = [
        Arc::new(RedisStore::new(&redis.url(), Duration::from_secs(1)).unwrap()),
        Arc::new(MemoryStore::default()),
    ];
    for store in stores {
        let graph = Arc::new(EmbeddedGraph::new(&lexicon));
        let facade = serve(Doctor::new(
            models.client(),
            store.clone(),
            graph,
            lexicon.clone(),
            Duration::from_secs(1),
        ))
        .await;
        facade.chat("carol", "我这两天咳嗽，还有点发烧").await;
        let carol = SessionKey::chat("carol");
        assert!(
            store.load(&carol).await.unwrap().is_some(),
            "{}",
            store.describe()
        );
        tokio::time::sleep(Duration::from_millis(2200)).await;
        assert_eq!(
            store.load(&carol).await.unwrap(),
            None,
            "{}",
            store.describe()
        );
        let later = facade.chat("carol", "而且痰多").await;
        assert_eq!(
            later["related"],
            Value::Null,
            "an expired session is no history: {later}"
        );
        assert_eq!(symptoms(&later), set(&["咳痰"]), "{later}");
        assert_eq!(later["session"]["turns"], 1);
    }
}

fn text_message(from: &str, content: &str) -> String {
    format!(
        "<xml><ToUserName><![CDATA[gh_doctor]]></ToUserName><FromUserName><![CDATA[{from}]]></FromUserName><CreateTime>1700000000</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[{content}]]></Content><MsgId>1</MsgId></xml>"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wechat_webhook_checks_signatures_and_answers_in_xml() {
    let models = Models::start();
    models.ready().await;
    let facade = serve(embedded(&models)).await;
    let http = &facade.http;

    // Server verification: echo echostr only when the signature matches.
    let (timestamp, nonce) = (now(), fresh_nonce());
    let signature = wechat::signature(TOKEN, &timestamp.to_string(), &nonce);
    let get = |query: String| {
        let url = format!("{}/wechat?{query}", facade.base);
        async move {
            let r = http.get(url).send().await.unwrap();
            (r.status(), r.text().await.unwrap())
        }
    };
    assert_eq!(
        get(format!(
            "signature={signature}&timestamp={timestamp}&nonce={nonce}&echostr=hello"
        ))
        .await,
        (StatusCode::OK, "hello".into())
    );
    assert_eq!(
        get(format!(
            "signature={signature}&timestamp={}&nonce={nonce}&echostr=hello",
            timestamp + 1
        ))
        .await
        .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        get(format!("timestamp={timestamp}&nonce={nonce}&echostr=hello"))
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        facade
            .wechat("not-the-token", text_message("u1", "头痛"))
            .await
            .0,
        StatusCode::FORBIDDEN
    );

    // A text message gets a text reply addressed back to the sender.
    let (status, body) = facade
        .wechat(TOKEN, text_message("o_user1", "我最近总是头痛，还有点发烧"))
        .await;
    assert_eq!(status, StatusCode::OK);
    let answer = wechat::parse(&body).unwrap();
    assert_eq!(
        (
            answer.to_user.as_str(),
            answer.from_user.as_str(),
            answer.msg_type.as_str()
        ),
        ("o_user1", "gh_doctor", "text")
    );
    let content = answer.content.unwrap();
    assert!(
        content.contains("头痛") && content.contains("发热") && content.contains("可能的疾病"),
        "{content}"
    );

    // Following gets a welcome; other kinds of message a polite text reply.
    let subscribe = "<xml><ToUserName>gh_doctor</ToUserName><FromUserName>o_new</FromUserName><CreateTime>1</CreateTime><MsgType>event</MsgType><Event>subscribe</Event></xml>";
    assert_eq!(facade.wechat_reply(subscribe).await, reply::WELCOME);
    let image = "<xml><ToUserName>gh_doctor</ToUserName><FromUserName>o_user1</FromUserName><CreateTime>1</CreateTime><MsgType>image</MsgType><PicUrl>http://x/y.png</PicUrl><MediaId>m</MediaId></xml>";
    assert_eq!(facade.wechat_reply(image).await, reply::TEXT_ONLY);

    // Entity expansion is refused: no reply content, nothing read from disk.
    let xxe = "<?xml version=\"1.0\"?><!DOCTYPE xml [<!ENTITY e SYSTEM \"file:///etc/passwd\">]><xml><ToUserName>gh_doctor</ToUserName><FromUserName>o_x</FromUserName><MsgType>text</MsgType><Content>&e;</Content></xml>";
    assert_eq!(
        facade.wechat(TOKEN, xxe).await,
        (StatusCode::OK, "success".into())
    );
    let bomb = format!(
        "<!DOCTYPE xml [<!ENTITY a \"aaaaaaaaaa\">{}]><xml><Content>&z;</Content></xml>",
        (b'b'..=b'z')
            .map(|c| format!(
                "<!ENTITY {} \"&{};&{};&{};&{};&{};&{};&{};&{};&{};&{};\">",
                c as char,
                (c - 1) as char,
                (c - 1) as char,
                (c - 1) as char,
                (c - 1) as char,
                (c - 1) as char,
                (c - 1) as char,
                (c - 1) as char,
                (c - 1) as char,
                (c - 1) as char,
                (c - 1) as char
            ))
            .collect::<String>()
    );
    assert_eq!(
        facade.wechat(TOKEN, bomb).await,
        (StatusCode::OK, "success".into())
    );

    // Missing fields, broken XML: acknowledged, not answered, and the server goes on.
    let no_sender = "<xml><ToUserName>gh_doctor</ToUserName><MsgType>text</MsgType><Content>头痛</Content></xml>";
    assert_eq!(
        facade.wechat(TOKEN, no_sender).await,
        (StatusCode::OK, "success".into())
    );
    assert_eq!(
        facade.wechat(TOKEN, "<xml><ToUserName>").await,
        (StatusCode::OK, "success".into())
    );
    let empty = text_message("o_user2", "   ");
    assert_eq!(facade.wechat_reply(empty).await, reply::NO_SYMPTOMS);

    // A huge body is refused before it is read.
    let huge = text_message("o_user3", &"头痛".repeat(40_000)).len();
    let query = signed_query(TOKEN, &now().to_string(), &fresh_nonce());
    let address = facade.base.trim_start_matches("http://").to_string();
    assert_eq!(
        post_unsent_body(&address, &format!("/wechat?{query}"), huge)
            .await
            .0,
        413
    );

    // And it still answers.
    assert!(facade
        .wechat_reply(text_message("o_user4", "肚子疼"))
        .await
        .contains("腹痛"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chat_api_rejects_bad_requests_clearly() {
    let models = Models::start();
    models.ready().await;
    let facade = serve(embedded(&models)).await;
    let post = |body: String| {
        let request = facade
            .http
            .post(format!("{}/v1/doctor/chat", facade.base))
            .header("content-type", "application/json")
            .header("authorization", BEARER)
            .body(body);
        async move {
            let r = request.send().await.unwrap();
            (r.status(), r.json::<Value>().await.unwrap())
        }
    };
    for (body, says) in [
        ("{\"user\": \"u\"}".to_string(), "text"),
        ("not json".to_string(), "body must be"),
        (json!({"user": "", "text": "头痛"}).to_string(), "`user`"),
        (
            json!({"user": "u", "text": "  "}).to_string(),
            "`text` is empty",
        ),
        (
            json!({"user": "u", "text": "痛".repeat(1001)}).to_string(),
            "longer than 1000",
        ),
    ] {
        let (status, answer) = post(body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(answer["error"].as_str().unwrap().contains(says), "{answer}");
    }
}

/// Polls until `check` holds for an answer (a restarted service takes a moment to be
/// reconnected), failing after 30 s.
async fn until(facade: &Facade, user: &str, text: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let answer = facade.chat(user, text).await;
        if check(&answer) {
            return answer;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never recovered: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_answers_without_history_and_recovers() {
    let mut redis = Redis::start();
    let models = Models::start();
    models.ready().await;
    let lexicon = lexicon();
    let graph = Arc::new(EmbeddedGraph::new(&lexicon));
    let sessions = Arc::new(RedisStore::new(&redis.url(), Duration::from_millis(500)).unwrap());
    let facade = serve(Doctor::new(
        models.client(),
        sessions,
        graph,
        lexicon,
        Duration::from_secs(600),
    ))
    .await;

    let first = facade.chat("dave", "我这两天咳嗽，还有点发烧").await;
    assert_eq!(first["session"]["history"], true);
    redis.stop();
    let blind = facade.chat("dave", "而且痰多").await;
    assert_eq!(blind["session"]["history"], false, "{blind}");
    assert_eq!(
        symptoms(&blind),
        set(&["咳痰"]),
        "no history to add to: {blind}"
    );
    assert!(
        blind["degraded"][0]
            .as_str()
            .unwrap()
            .contains("session store"),
        "{blind}"
    );
    assert!(
        blind["reply"].as_str().unwrap().contains("可能的疾病"),
        "still answered: {blind}"
    );
    assert!(facade
        .wechat_reply(text_message("dave", "头痛"))
        .await
        .contains("头痛"));

    redis.restart();
    until(
        &facade,
        "dave",
        "我这两天咳嗽，还有点发烧",
        |a| a["session"]["history"] == true,
    )
    .await;
    let follow = facade.chat("dave", "而且痰多").await;
    assert_eq!(
        symptoms(&follow),
        set(&["咳嗽", "发热", "咳痰"]),
        "history is back: {follow}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_down_says_so_and_recovers() {
    let mut arcade = Arcade::start();
    let models = Models::start();
    models.ready().await;
    write_graph(&arcade).await;
    let lexicon = lexicon();
    let facade = serve(Doctor::new(
        models.client(),
        Arc::new(MemoryStore::default()),
        Arc::new(bolt(&arcade)),
        lexicon,
        Duration::from_secs(600),
    ))
    .await;

    let ok = facade.chat("erin", "头痛").await;
    assert!(!ok["diseases"].as_array().unwrap().is_empty(), "{ok}");
    arcade.stop();
    let down = facade.chat("erin", "还有点发烧").await;
    assert!(
        down["reply"].as_str().unwrap().contains("知识库暂时不可用"),
        "{down}"
    );
    assert!(down["diseases"].as_array().unwrap().is_empty());
    assert!(
        down["degraded"][0]
            .as_str()
            .unwrap()
            .contains("knowledge graph"),
        "{down}"
    );
    assert!(
        symptoms(&down).contains("发热"),
        "the symptoms are still understood: {down}"
    );
    assert!(facade
        .wechat_reply(text_message("erin2", "头痛"))
        .await
        .contains("知识库暂时不可用"));

    let restart = tokio::task::spawn_blocking(move || {
        arcade.restart();
        arcade
    });
    let _arcade = restart.await.unwrap();
    until(&facade, "erin3", "头痛", |a| {
        !a["diseases"].as_array().unwrap().is_empty()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_server_down_says_so_and_recovers() {
    let mut models = Models::start();
    models.ready().await;
    let facade = serve(embedded(&models)).await;

    facade.chat("frank", "我这两天咳嗽，还有点发烧").await;
    models.stop();
    let down = facade.chat("frank", "而且痰多").await;
    assert_eq!(down["reply"], reply::MODELS_DOWN, "{down}");
    assert!(
        down["degraded"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d.as_str().unwrap().contains("model server")),
        "{down}"
    );
    assert_eq!(
        facade.wechat_reply(text_message("frank", "头痛")).await,
        reply::MODELS_DOWN
    );

    let models = tokio::task::spawn_blocking(move || {
        models.restart();
        models
    })
    .await
    .unwrap();
    models.ready().await;
    let back = until(&facade, "frank2", "头痛", |a| {
        a["reply"] != reply::MODELS_DOWN
    })
    .await;
    assert_eq!(symptoms(&back), set(&["头痛"]));
    drop(models);
}

#[test]
fn the_binary_and_the_wechat_simulator() {
    let models = Models::start();
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(models.ready());
    let port = free_port();
    let mut facade = std::process::Command::new(env!("CARGO_BIN_EXE_doctor_facade"))
        .current_dir(repo_root())
        .args([
            &format!("--port={port}"),
            "--host=127.0.0.1",
            &format!("--model_server=127.0.0.1:{}", models.port),
            &format!("--wechat_token={TOKEN}"),
        ])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "doctor_facade did not listen"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = std::process::Command::new("python3")
        .current_dir(repo_root())
        .args([
            "clients/wechat_simulator.py",
            &format!("--url=http://127.0.0.1:{port}/wechat"),
            &format!("--token={TOKEN}"),
            "--user=o_sim",
            "--subscribe",
            "我这两天咳嗽，还有点发烧",
            "而且痰多",
        ])
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{printed}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(printed.contains("感谢关注"), "{printed}");
    let turns: Vec<&str> = printed.split("医生：").skip(1).collect();
    assert_eq!(turns.len(), 3, "{printed}");
    assert!(
        turns[1].contains("咳嗽") && turns[1].contains("发热"),
        "{printed}"
    );
    assert!(
        turns[2].contains("咳痰") && turns[2].contains("咳嗽"),
        "symptoms add up: {printed}"
    );

    // A wrong token is refused, and the simulator says so.
    let refused = std::process::Command::new("python3")
        .current_dir(repo_root())
        .args([
            "clients/wechat_simulator.py",
            &format!("--url=http://127.0.0.1:{port}/wechat"),
            "--token=wrong",
            "头痛",
        ])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let _ = facade.kill();
    let _ = facade.wait();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("403"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

/// The `subscribe` event of `from`: answered with the welcome, without asking any model.
fn subscribe(from: &str) -> String {
    format!(
        "<xml><ToUserName>gh_doctor</ToUserName><FromUserName>{from}</FromUserName><CreateTime>1</CreateTime><MsgType>event</MsgType><Event>subscribe</Event></xml>"
    )
}

fn welcomed(answer: &(StatusCode, String)) -> bool {
    answer.0 == StatusCode::OK
        && wechat::parse(&answer.1)
            .ok()
            .and_then(|m| m.content)
            .as_deref()
            == Some(reply::WELCOME)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chat_api_needs_its_token() {
    let facade = serve(offline()).await;
    let (http, base) = (&facade.http, facade.base.as_str());

    let (status, answer) = post_chat(http, base, None, "u", "头痛").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
    let says = answer["error"].as_str().unwrap();
    assert!(says.contains("missing `Authorization: Bearer"), "{answer}");

    let (status, answer) = post_chat(http, base, Some("Bearer wrong-token"), "u", "头痛").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("invalid bearer token"),
        "{answer}"
    );
    let (status, answer) = post_chat(http, base, Some(CHAT_TOKEN), "u", "头痛").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "no scheme: {answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("Bearer <token>"),
        "{answer}"
    );

    // The refusal names the scheme, as RFC 6750 asks.
    let refused = http
        .post(format!("{base}/v1/doctor/chat"))
        .json(&json!({ "user": "u", "text": "头痛" }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        refused
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some("Bearer")
    );

    // The right token is answered (degraded: no model server here, but a 200).
    let (status, answer) = post_chat(http, base, Some(BEARER), "u", "头痛").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["reply"], reply::MODELS_DOWN, "{answer}");
    // The token is checked before the body: a bad body without it is still a 401.
    let bad_body = http
        .post(format!("{base}/v1/doctor/chat"))
        .header("content-type", "application/json")
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(bad_body.status(), StatusCode::UNAUTHORIZED);

    // Closed (no token, not opened): refused, saying how to open it.
    let closed_options = WebOptions::new(Some(TOKEN.into()), ChatAccess::Closed);
    let closed = serve_with(offline(), closed_options).await;
    let (status, answer) = post_chat(&closed.http, &closed.base, Some(BEARER), "u", "头痛").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    let says = answer["error"].as_str().unwrap();
    assert!(
        says.contains("--chat_api_token") && says.contains("--chat_api_open"),
        "{answer}"
    );

    // Opened for local use: no header needed.
    let open_options = WebOptions::new(Some(TOKEN.into()), ChatAccess::Open);
    let open = serve_with(offline(), open_options).await;
    let (status, answer) = post_chat(&open.http, &open.base, None, "u", "头痛").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
}

/// `doctor_facade` on a free port with `args`, its model server a port nobody listens on;
/// killed when dropped.
struct FacadeProcess {
    child: std::process::Child,
    base: String,
}

impl Drop for FacadeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn spawn_facade(args: &[&str], envs: &[(&str, &str)]) -> FacadeProcess {
    let port = free_port();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_doctor_facade"))
        .current_dir(repo_root())
        .arg(format!("--port={port}"))
        .arg("--host=127.0.0.1")
        .arg(format!("--model_server=127.0.0.1:{}", free_port()))
        .args(args)
        .env_remove("CHAT_API_TOKEN")
        .env_remove("WECHAT_TOKEN")
        .envs(envs.iter().copied())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut facade = FacadeProcess {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        if let Some(status) = facade.child.try_wait().unwrap() {
            panic!("doctor_facade {args:?} exited: {status}");
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "doctor_facade {args:?} did not listen"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    facade
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_keeps_the_chat_api_closed_unless_told_otherwise() {
    let http = reqwest::Client::new();

    // No token, not opened: refused.
    let closed = spawn_facade(&[], &[]).await;
    let (status, answer) = post_chat(&http, &closed.base, Some(BEARER), "u", "头痛").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("--chat_api_token"),
        "{answer}"
    );
    drop(closed);

    // Opened for local use: answered without a header.
    let open = spawn_facade(&["--chat_api_open"], &[]).await;
    let (status, answer) = post_chat(&http, &open.base, None, "u", "头痛").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    drop(open);

    // A token (here from CHAT_API_TOKEN) and --chat_api_open: the token is still required,
    // the safer reading of a contradictory configuration.
    let both = spawn_facade(&["--chat_api_open"], &[("CHAT_API_TOKEN", CHAT_TOKEN)]).await;
    let (status, answer) = post_chat(&http, &both.base, None, "u", "头痛").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
    let (status, answer) = post_chat(&http, &both.base, Some("Bearer nope"), "u", "头痛").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
    let (status, answer) = post_chat(&http, &both.base, Some(BEARER), "u", "头痛").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wechat_requests_must_be_recent_and_new() {
    let facade = serve(offline()).await;
    let body = subscribe("o_replay");

    // A fresh request is answered; the very same request again is a replay.
    let (timestamp, nonce) = (now().to_string(), fresh_nonce());
    let query = signed_query(TOKEN, &timestamp, &nonce);
    assert!(welcomed(&facade.wechat_query(&query, body.clone()).await));
    let (status, text) = facade.wechat_query(&query, body.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{text}");
    assert!(text.contains("replay"), "{text}");
    // The signature's case does not make it a new request (the check accepts either).
    let upper = format!(
        "signature={}&timestamp={timestamp}&nonce={nonce}",
        wechat::signature(TOKEN, &timestamp, &nonce).to_uppercase()
    );
    let (status, text) = facade.wechat_query(&upper, body.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{text}");
    assert!(text.contains("replay"), "{text}");
    // Nor does another body: the signature does not cover it.
    let (status, _) = facade.wechat_query(&query, subscribe("o_other")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // A fresh nonce at the same second is a new request.
    let again = signed_query(TOKEN, &now().to_string(), &fresh_nonce());
    assert!(welcomed(&facade.wechat_query(&again, body.clone()).await));

    // Within the window is fine; beyond it, either way, is refused.
    let recent = signed_query(TOKEN, &(now() - 100).to_string(), &fresh_nonce());
    assert!(welcomed(&facade.wechat_query(&recent, body.clone()).await));
    let old = signed_query(TOKEN, &(now() - 600).to_string(), &fresh_nonce());
    let (status, text) = facade.wechat_query(&old, body.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{text}");
    assert!(text.contains("old"), "{text}");
    let future = signed_query(TOKEN, &(now() + 600).to_string(), &fresh_nonce());
    let (status, text) = facade.wechat_query(&future, body.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{text}");
    assert!(text.contains("ahead"), "{text}");
    let words = signed_query(TOKEN, "yesterday", &fresh_nonce());
    let (status, text) = facade.wechat_query(&words, body.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{text}");
    assert!(text.contains("not a whole number"), "{text}");

    // The server check (GET) is held to the same rules.
    let (status, _) = facade.wechat_get(&format!("{old}&echostr=hi")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let fresh = signed_query(TOKEN, &now().to_string(), &fresh_nonce());
    assert_eq!(
        facade.wechat_get(&format!("{fresh}&echostr=hi")).await,
        (StatusCode::OK, "hi".to_string())
    );
    assert_eq!(
        facade.wechat_get(&format!("{fresh}&echostr=hi")).await.0,
        StatusCode::FORBIDDEN
    );
    // A server check's signed query cannot be reused to post a message.
    assert_eq!(
        facade.wechat_query(&fresh, body.clone()).await.0,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_are_caught_in_redis_across_facades_and_redis_down_fails_closed() {
    let mut redis = Redis::start();
    let connection = Arc::new(RedisConnection::new(&redis.url(), Duration::from_secs(1)).unwrap());
    let with_redis = || {
        let mut o = options();
        o.replay = Arc::new(RedisReplay::new(
            connection.clone(),
            window_for(o.max_clock_skew),
        ));
        o
    };
    let first = serve_with(offline(), with_redis()).await;
    let second = serve_with(offline(), with_redis()).await;
    let body = subscribe("o_redis");

    let (timestamp, nonce) = (now().to_string(), fresh_nonce());
    let query = signed_query(TOKEN, &timestamp, &nonce);
    assert!(welcomed(&first.wechat_query(&query, body.clone()).await));
    let (status, text) = first.wechat_query(&query, body.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{text}");
    assert!(text.contains("replay"), "{text}");
    // Another facade on the same Redis knows it too.
    assert_eq!(
        second.wechat_query(&query, body.clone()).await.0,
        StatusCode::FORBIDDEN
    );

    // Remembered under its own key for twice the clock window.
    let signature = wechat::signature(TOKEN, &timestamp, &nonce);
    let key = format!("doctor:wechat:seen:{timestamp}:{nonce}:{signature}");
    let ttl = redis.command(&["TTL", &key]).unwrap();
    let seconds: i64 = ttl.trim_start_matches(':').parse().unwrap();
    assert!((1..=600).contains(&seconds), "TTL of {key}: {ttl}");

    // A fresh nonce is new, on either facade.
    let fresh = signed_query(TOKEN, &now().to_string(), &fresh_nonce());
    assert!(welcomed(&second.wechat_query(&fresh, body.clone()).await));

    // Without Redis, replays cannot be told apart: refused, not let through.
    redis.stop();
    let (status, text) = first.wechat(TOKEN, body.clone()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wechat_and_chat_sessions_never_mix() {
    let redis = Redis::start();
    let models = Models::start();
    models.ready().await;
    let lexicon = lexicon();
    let redis_store: Arc<dyn SessionStore> =
        Arc::new(RedisStore::new(&redis.url(), Duration::from_secs(1)).unwrap());
    let memory_store: Arc<dyn SessionStore> = Arc::new(MemoryStore::default());
    for (store, in_redis) in [(redis_store, true), (memory_store, false)] {
        let graph = Arc::new(EmbeddedGraph::new(&lexicon));
        let facade = serve(Doctor::new(
            models.client(),
            store.clone(),
            graph,
            lexicon.clone(),
            Duration::from_secs(600),
        ))
        .await;
        let what = store.describe();

        // A WeChat patient, OpenID u1, starts a conversation.
        let first = facade
            .wechat_reply(text_message("u1", "我这两天咳嗽，还有点发烧"))
            .await;
        assert!(first.contains("咳嗽"), "{what}: {first}");
        let wechat_u1 = SessionKey::wechat("u1");
        let before = store.load(&wechat_u1).await.unwrap().expect("a session");

        // A chat API client calling itself u1 sees none of it...
        let chat = facade.chat("u1", "而且痰多").await;
        assert_eq!(chat["related"], Value::Null, "{what}: {chat}");
        assert_eq!(symptoms(&chat), set(&["咳痰"]), "{what}: {chat}");
        assert_eq!(chat["session"]["turns"], 1, "{what}: {chat}");
        // ...and starting over there resets nothing of the patient's.
        let other = facade.chat("u1", "还有个事，我眼睛痒").await;
        assert!(!symptoms(&other).contains("咳嗽"), "{what}: {other}");
        assert_eq!(
            store.load(&wechat_u1).await.unwrap().as_ref(),
            Some(&before),
            "{what}"
        );
        assert_eq!(
            before.symptoms.iter().cloned().collect::<BTreeSet<_>>(),
            set(&["咳嗽", "发热"]),
            "{what}"
        );

        // The patient's conversation goes on where it was.
        let follow = facade.wechat_reply(text_message("u1", "而且痰多")).await;
        assert!(
            follow.contains("咳嗽") && follow.contains("咳痰"),
            "{what}: symptoms add up: {follow}"
        );

        if in_redis {
            // Two keys, one per entry point, and none in the old shared space.
            let exists = |key: &str| redis.command(&["EXISTS", key]).unwrap();
            assert_eq!(exists("doctor:session:wechat:u1"), ":1");
            assert_eq!(exists("doctor:session:chat:u1"), ":1");
            assert_eq!(exists("doctor:session:u1"), ":0");
        }
    }
}

/// One turn of a conversation written for this test the way patients type: what the
/// doctor must find in it, whether it continues the conversation (`None`: not asserted),
/// and for the last turn a disease its top 3 must hold.
struct Turn {
    text: &'static str,
    finds: &'static [&'static str],
    related: Option<bool>,
}

const fn turn(text: &'static str, finds: &'static [&'static str], related: Option<bool>) -> Turn {
    Turn {
        text,
        finds,
        related,
    }
}

/// A dozen consultations in patients' own words (written here, not taken from `data/eval`):
/// words between the body part and the complaint, temperatures, dialect, negations,
/// follow-ups that ask about the complaint, thanks and a new complaint that starts over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patients_in_their_own_words() {
    let models = Models::start();
    models.ready().await;
    let facade = serve(embedded(&models)).await;
    let consultations: &[(&[Turn], &str)] = &[
        (
            &[
                turn("嗓子眼儿有点疼，咽口水都疼", &["咽痛"], None),
                turn("烧到38度5了", &["发热"], Some(true)),
                turn("要紧吗", &[], Some(true)),
            ],
            "急性咽炎",
        ),
        (
            &[
                turn("肚子又开始疼了，右下边那块", &["腹痛"], None),
                turn(
                    "还吐了两回，一点胃口都没有",
                    &["呕吐", "食欲不振"],
                    Some(true),
                ),
            ],
            "阑尾炎",
        ),
        (
            &[
                turn("眼睛老是很干，一到晚上还发红", &["眼干", "眼红"], None),
                turn("不痒，也没有眼屎", &[], Some(true)),
            ],
            "干眼症",
        ),
        (
            &[
                turn("我咳嗽快一个礼拜了", &["咳嗽"], None),
                turn("痰是黄的，黏糊糊的", &["黄痰"], Some(true)),
                turn("没发烧", &[], None),
            ],
            "急性支气管炎",
        ),
        (
            &[
                turn(
                    "孩子身上起了好多风疙瘩，一块一块的，痒得直挠",
                    &["风团", "瘙痒"],
                    None,
                ),
                turn("谢谢医生", &[], Some(false)),
            ],
            "荨麻疹",
        ),
        (
            &[
                turn("最近总是头晕，血压高", &["头晕", "血压升高"], None),
                turn("量了下160/100", &[], None),
            ],
            "高血压",
        ),
        (
            &[
                turn("尿尿的时候疼，老想上厕所", &["尿痛"], None),
                turn("尿完了还想尿", &["尿不尽"], Some(true)),
            ],
            "尿路感染",
        ),
        (
            &[
                turn("牙疼了好几天", &["牙痛"], None),
                turn("对了，我膝盖也疼，上下楼更疼", &["膝关节疼痛"], Some(false)),
            ],
            "骨关节炎",
        ),
        (
            &[
                turn("心口烧得慌，老是反酸水", &["烧心", "反酸"], None),
                turn("吃完饭躺下更明显", &[], None),
            ],
            "胃食管反流病",
        ),
        (
            &[
                turn("我妈晚上睡不着，一晚上醒好几次", &["失眠"], None),
                turn(
                    "心情也不好，对啥都没兴趣",
                    &["情绪低落", "兴趣减退"],
                    Some(true),
                ),
            ],
            "抑郁症",
        ),
        (
            &[
                turn("鼻子不通气，一直流清鼻涕", &["鼻塞", "流鼻涕"], None),
                turn("老打喷嚏，嗓子也有点痒", &["打喷嚏", "咽痒"], Some(true)),
            ],
            "感冒",
        ),
        (
            &[
                turn("右边腰疼得直不起来", &["腰痛"], None),
                turn("尿有点发红", &["血尿"], Some(true)),
                turn("还老想尿尿", &["尿频"], Some(true)),
            ],
            "肾结石",
        ),
    ];
    for (i, (turns, disease)) in consultations.iter().enumerate() {
        let user = format!("patient{i}");
        let mut last = Value::Null;
        for t in turns.iter() {
            let answer = facade.chat(&user, t.text).await;
            let found = symptoms(&answer);
            for s in t.finds {
                assert!(found.contains(*s), "`{}` names {s}: {answer}", t.text);
            }
            if let Some(related) = t.related {
                assert_eq!(answer["related"], related, "`{}`: {answer}", t.text);
            }
            last = answer;
        }
        let top3: Vec<&str> = last["diseases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["name"].as_str().unwrap())
            .collect();
        assert!(
            top3.contains(disease),
            "conversation {i}: {disease} not in {top3:?}: {last}"
        );
        // Every symptom reported is a lexicon name.
        let lexicon = lexicon();
        for s in symptoms(&last) {
            assert!(
                lexicon.symptoms.iter().any(|x| x.name == s),
                "`{s}` is not a lexicon name"
            );
        }
    }
}

/// Runs `doctor_facade build-graph` on `texts` against the model server and the graph;
/// returns what it printed.
async fn build_graph(
    models: &Models,
    arcade: &Arcade,
    texts: &std::path::Path,
    out: &std::path::Path,
) -> String {
    let args = vec![
        "build-graph".to_string(),
        format!("--texts={}", texts.display()),
        format!("--out={}", out.display()),
        format!("--model_server=127.0.0.1:{}", models.port),
        "--batch_size=2".to_string(),
    ];
    graph_command(arcade, args).await
}

/// Seed 000's offline pipeline end to end: texts → the tagger over gRPC → the lexicon →
/// entity_review → reviewed decisions → links merged into a real Bolt graph; every mention
/// is a link or a review decision; rerunning adds nothing; a text whose symptoms are all
/// negated adds no link; without the review every presented symptom is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_offline_pipeline_grows_the_graph_from_texts() {
    let arcade = Arcade::start();
    let models = Models::start();
    models.ready().await;
    let dir = tempfile::tempdir().unwrap();
    let (texts, out) = (dir.path().join("texts"), dir.path().join("structured"));
    std::fs::create_dir_all(&texts).unwrap();
    for (disease, body) in [
        ("感冒", "多由病毒引起。常见鼻塞、流清鼻涕、打喷嚏，可伴嗓子疼和低烧。\n\n一般不伴有腹泻，查血常规多正常。"),
        ("偏头痛", "发作时一侧头痛，一跳一跳的，常伴恶心、怕光。"),
        ("痛风", "这里只写它不会引起咳嗽，也没有发热和腹泻。"),
    ] {
        std::fs::write(texts.join(format!("{disease}.txt")), format!("# {disease}\n\n{body}\n")).unwrap();
    }

    let first = build_graph(&models, &arcade, &texts, &out).await;
    let graph = neo4rs::Graph::connect(
        neo4rs::ConfigBuilder::default()
            .uri(arcade.url())
            .user("root")
            .password(ARCADE_PASSWORD)
            .db("graphdb")
            .build()
            .unwrap(),
    )
    .await
    .unwrap();
    let links = |disease: &str| {
        format!("MATCH (s:Symptom)-[:SYMPTOM_OF]->(d:Disease {{name: '{disease}'}}) RETURN count(s) AS n")
    };
    let linked = |disease: &'static str, symptom: &'static str| {
        format!("MATCH (s:Symptom {{name: '{symptom}'}})-[:SYMPTOM_OF]->(d:Disease {{name: '{disease}'}}) RETURN count(s) AS n")
    };
    // Each mention is either a link now or a decision of the review model, in the CSV.
    let csv = std::fs::read_to_string(out.join("reviewed.csv")).unwrap();
    let expected = [
        (
            "感冒",
            ["鼻塞", "流鼻涕", "打喷嚏", "咽痛", "发热"].as_slice(),
        ),
        ("偏头痛", ["头痛", "恶心", "畏光"].as_slice()),
    ];
    let mut kept = 0;
    for (disease, symptoms) in expected {
        for symptom in symptoms {
            let in_graph = count(&graph, &linked(disease, symptom)).await == 1;
            let reviewed_out = csv.lines().any(|l| {
                l.starts_with(&format!("{disease},{symptom},")) && l.contains(",rejected,review,")
            });
            assert!(
                in_graph != reviewed_out,
                "{disease} → {symptom}: linked {in_graph}, rejected by review {reviewed_out}\n{first}\n{csv}"
            );
            kept += in_graph as usize;
        }
    }
    assert!(kept > 0, "{first}");
    assert_eq!(
        count(&graph, &linked("感冒", "腹泻")).await,
        0,
        "a negated symptom is no link"
    );
    assert_eq!(
        count(&graph, &links("痛风")).await,
        0,
        "only negated symptoms: {first}"
    );
    let total = count(
        &graph,
        "MATCH (s:Symptom)-[r:SYMPTOM_OF]->(d:Disease) RETURN count(r) AS n",
    )
    .await;
    assert!(
        first.contains(&format!(
            "{total} disease-symptom links: {total} added, 0 unchanged"
        )),
        "{first}"
    );

    assert!(
        first.contains("the entity review model rejected"),
        "{first}"
    );

    // Every decision is in the CSV, with its reason.
    assert!(
        csv.starts_with("disease,symptom,span,decision,reason,score,sentence"),
        "{csv}"
    );
    assert!(
        csv.lines()
            .any(|l| l.starts_with("感冒,腹泻,") && l.contains(",rejected,negated,")),
        "{csv}"
    );
    assert!(
        csv.lines()
            .any(|l| l.starts_with("痛风,咳嗽,") && l.contains(",rejected,negated,")),
        "{csv}"
    );

    // Idempotent: the same texts again add nothing and change nothing.
    let second = build_graph(&models, &arcade, &texts, &out).await;
    assert!(
        second.contains(&format!(
            "{total} disease-symptom links: 0 added, {total} unchanged"
        )),
        "{second}"
    );
    assert_eq!(
        count(
            &graph,
            "MATCH (s:Symptom)-[r:SYMPTOM_OF]->(d:Disease) RETURN count(r) AS n"
        )
        .await,
        total
    );

    // The review only ever removes: without it, at least as many links, and no review line.
    let args = vec![
        "build-graph".to_string(),
        format!("--texts={}", texts.display()),
        format!("--out={}", dir.path().join("noreview").display()),
        format!("--model_server=127.0.0.1:{}", models.port),
        "--dry_run".to_string(),
        "--no_review".to_string(),
    ];
    let unreviewed = graph_command(&arcade, args).await;
    assert!(unreviewed.contains("no entity review"), "{unreviewed}");
    // Without the review, every presented symptom is accepted.
    let unreviewed_csv =
        std::fs::read_to_string(dir.path().join("noreview").join("reviewed.csv")).unwrap();
    for (disease, symptoms) in expected {
        for symptom in symptoms {
            assert!(
                unreviewed_csv
                    .lines()
                    .any(|l| l.starts_with(&format!("{disease},{symptom},"))
                        && l.contains(",accepted,")),
                "{disease} → {symptom}\n{unreviewed_csv}"
            );
        }
    }
    let links_of = |summary: &str| -> i64 {
        summary
            .lines()
            .find_map(|l| l.split_once(" disease-symptom links"))
            .and_then(|(n, _)| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no link count in {summary}"))
    };
    assert!(
        links_of(&unreviewed) >= links_of(&first),
        "{unreviewed}\n{first}"
    );
}

/// The entity review model, served by a real model server and asked over gRPC, on spans in
/// their sentences: whole affirmed mentions pass; denied ones, cut-short spans, times and
/// examinations do not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_review_model_judges_spans_in_their_sentence() {
    use candle_serving::doctor::pipeline::DEFAULT_REVIEW_THRESHOLD;
    use candle_serving::lexicon::review::{locate, review_input};
    let models = Models::start();
    models.ready().await;
    let cases = [
        ("起病急，常伴有发热、咳嗽和全身酸痛", "发热", true),
        ("我这两天嗓子疼得厉害", "嗓子疼", true),
        ("孩子昨晚开始拉肚子，拉了四五次", "拉肚子", true),
        ("本病一般不伴有腹泻", "腹泻", false),
        ("我头痛了三天", "头", false),
        ("我头痛了三天", "三天", false),
        ("确诊可以查血常规", "血常规", false),
    ];
    let inputs: Vec<(String, String)> = cases
        .iter()
        .map(|(sentence, span, _)| {
            let chars: Vec<char> = sentence.chars().collect();
            let (start, end) = locate(&chars, span, 0).unwrap();
            review_input(&chars, start, end)
        })
        .collect();
    let scores = models.client().review(&inputs).await.unwrap();
    assert_eq!(scores.len(), cases.len());
    for ((sentence, span, real), p) in cases.iter().zip(&scores) {
        assert!((0.0..=1.0).contains(p));
        assert_eq!(
            *p >= DEFAULT_REVIEW_THRESHOLD,
            *real,
            "{span} in {sentence}: p = {p}"
        );
    }
}
