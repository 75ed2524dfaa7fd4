//! The AI doctor end to end: the real `candle_model_server` on the shipped tagger and
//! relevance models, a real redis-server and a real ArcadeDB speaking Bolt, and the doctor's
//! HTTP side on a real socket. The same conversation also runs on the embedded defaults.
//! Faults are real too: services are killed and restarted mid-conversation.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use candle_serving::corpus::Lexicon;
use candle_serving::doctor::graph::{
    BoltKnowledgeGraph, BoltSettings, EmbeddedGraph, KnowledgeGraph,
};
use candle_serving::doctor::models::ModelClient;
use candle_serving::doctor::session::{MemoryStore, RedisStore, SessionStore};
use candle_serving::doctor::web::{router, WebOptions};
use candle_serving::doctor::{reply, wechat, Doctor};
use common::process::{spawn_server, Spawned};
use common::repo_root;
use common::services::{free_port, Arcade, Redis, ARCADE_PASSWORD};
use reqwest::StatusCode;
use serde_json::{json, Value};

const TOKEN: &str = "doctor-test-token";

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
            "model_config_list {{\n  config {{ name: \"symptom_ner\" base_path: \"{0}/model_repo/symptom_ner\" model_platform: \"candle\" }}\n  config {{ name: \"dialog_relevance\" base_path: \"{0}/model_repo/dialog_relevance\" model_platform: \"candle\" }}\n}}\n",
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

    /// Waits until both models answer (the server listens before its models are loaded).
    async fn ready(&self) {
        let client = self.client();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while client.entities("头痛").await.is_err()
            || client.related("头痛", "发烧").await.is_err()
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

/// The doctor's HTTP side on a free loopback port.
struct Facade {
    base: String,
    http: reqwest::Client,
}

async fn serve(doctor: Doctor) -> Facade {
    let app = router(
        Arc::new(doctor),
        WebOptions {
            wechat_token: Some(TOKEN.into()),
            budget: Duration::from_millis(4500),
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Facade {
        base: format!("http://{address}"),
        http: reqwest::Client::new(),
    }
}

impl Facade {
    async fn chat(&self, user: &str, text: &str) -> Value {
        let response = self
            .http
            .post(format!("{}/v1/doctor/chat", self.base))
            .json(&json!({ "user": user, "text": text }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{text}");
        response.json().await.unwrap()
    }

    /// Posts raw XML to the webhook, signed with `token`; (status, body).
    async fn wechat(&self, token: &str, xml: impl Into<reqwest::Body>) -> (StatusCode, String) {
        let (timestamp, nonce) = ("1700000000", "n0nce");
        let signature = wechat::signature(token, timestamp, nonce);
        let response = self
            .http
            .post(format!(
                "{}/wechat?signature={signature}&timestamp={timestamp}&nonce={nonce}",
                self.base
            ))
            .body(xml)
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

async fn write_graph(arcade: &Arcade) {
    let url = arcade.url();
    let run = move || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_doctor_facade"))
            .current_dir(repo_root())
            .args([
                "load-graph",
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
    let printed = tokio::task::spawn_blocking(run).await.unwrap();
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
    let ttl = redis.command(&["TTL", &RedisStore::key("alice")]).unwrap();
    let seconds: i64 = ttl.trim_start_matches(':').parse().unwrap();
    assert!((1..=600).contains(&seconds), "TTL {ttl}");
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
        assert!(
            store.load("carol").await.unwrap().is_some(),
            "{}",
            store.describe()
        );
        tokio::time::sleep(Duration::from_millis(2200)).await;
        assert_eq!(
            store.load("carol").await.unwrap(),
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
    let signature = wechat::signature(TOKEN, "123", "abc");
    let get = |query: String| {
        let url = format!("{}/wechat?{query}", facade.base);
        async move {
            let r = http.get(url).send().await.unwrap();
            (r.status(), r.text().await.unwrap())
        }
    };
    assert_eq!(
        get(format!(
            "signature={signature}&timestamp=123&nonce=abc&echostr=hello"
        ))
        .await,
        (StatusCode::OK, "hello".into())
    );
    assert_eq!(
        get(format!(
            "signature={signature}&timestamp=124&nonce=abc&echostr=hello"
        ))
        .await
        .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        get("timestamp=123&nonce=abc&echostr=hello".into()).await.0,
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
    let huge = text_message("o_user3", &"头痛".repeat(40_000));
    assert_eq!(
        facade.wechat(TOKEN, huge).await.0,
        StatusCode::PAYLOAD_TOO_LARGE
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
