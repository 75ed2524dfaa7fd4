//! The doctor's HTTP side: the WeChat webhook (`GET`/`POST /wechat`), the JSON chat API
//! (`POST /v1/doctor/chat`) and `/healthz`. WeChat gives a server 5 seconds, so every
//! answer is bounded below that, and WeChat never sees a 500: a failure becomes a polite
//! text reply.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::{reply, wechat, ChatReply, Doctor};

/// Largest request body accepted (WeChat text messages are far smaller).
pub const MAX_BODY: usize = 64 * 1024;
/// Longest text the chat API takes, in characters.
pub const MAX_TEXT: usize = 1000;

#[derive(Clone)]
pub struct WebOptions {
    /// The token configured in the WeChat console; requests are signed with it. Without
    /// one, every WeChat request is refused.
    pub wechat_token: Option<String>,
    /// The whole answer must be ready within this (below WeChat's 5 s).
    pub budget: Duration,
}

#[derive(Clone)]
struct App {
    doctor: Arc<Doctor>,
    options: Arc<WebOptions>,
}

pub fn router(doctor: Arc<Doctor>, options: WebOptions) -> Router {
    Router::new()
        .route("/wechat", get(verify).post(message))
        .route("/v1/doctor/chat", post(chat))
        .route("/healthz", get(healthz))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(App {
            doctor,
            options: Arc::new(options),
        })
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

fn signed(app: &App, q: &HashMap<String, String>) -> bool {
    match (
        &app.options.wechat_token,
        q.get("signature"),
        q.get("timestamp"),
        q.get("nonce"),
    ) {
        (Some(token), Some(sig), Some(ts), Some(nonce)) => wechat::verify(token, ts, nonce, sig),
        _ => false,
    }
}

/// WeChat's server check: echo `echostr` when the signature matches.
async fn verify(State(app): State<App>, Query(q): Query<HashMap<String, String>>) -> Response {
    if !signed(&app, &q) {
        return (StatusCode::FORBIDDEN, "invalid signature").into_response();
    }
    q.get("echostr")
        .cloned()
        .unwrap_or_default()
        .into_response()
}

fn xml(body: String) -> Response {
    (
        [(header::CONTENT_TYPE, "application/xml; charset=utf-8")],
        body,
    )
        .into_response()
}

/// WeChat's "received, no reply".
fn success() -> Response {
    "success".into_response()
}

async fn message(
    State(app): State<App>,
    Query(q): Query<HashMap<String, String>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if !signed(&app, &q) {
        return (StatusCode::FORBIDDEN, "invalid signature").into_response();
    }
    let body = match body {
        Ok(b) => b,
        Err(rejection) => {
            tracing::warn!(error = %rejection.body_text(), "WeChat message rejected");
            return (rejection.status(), rejection.body_text()).into_response();
        }
    };
    let text = String::from_utf8_lossy(&body);
    let incoming = match wechat::parse(&text) {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(error = %e, "unreadable WeChat message; not answered");
            return success();
        }
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let answer = |content: &str| {
        xml(wechat::text_reply(
            &incoming.from_user,
            &incoming.to_user,
            content,
            now,
        ))
    };
    match (
        incoming.msg_type.as_str(),
        incoming.event.as_deref(),
        incoming.content.as_deref(),
    ) {
        ("event", Some("subscribe"), _) => answer(reply::WELCOME),
        ("event", _, _) => success(),
        ("text", _, Some(content)) if !content.trim().is_empty() => {
            let content: String = content.chars().take(MAX_TEXT).collect();
            match tokio::time::timeout(
                app.options.budget,
                app.doctor.chat(&incoming.from_user, &content),
            )
            .await
            {
                Ok(reply) => answer(&reply.reply),
                Err(_) => {
                    tracing::warn!(user = %incoming.from_user, "answer not ready within WeChat's budget");
                    answer(reply::TOO_SLOW)
                }
            }
        }
        ("text", _, _) => answer(reply::NO_SYMPTOMS),
        _ => answer(reply::TEXT_ONLY),
    }
}

#[derive(Deserialize)]
struct ChatRequest {
    user: String,
    text: String,
}

async fn chat(State(app): State<App>, body: Result<Bytes, BytesRejection>) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(rejection) => return error(rejection.status(), rejection.body_text()),
    };
    let request: ChatRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("the body must be {{\"user\": \"...\", \"text\": \"...\"}}: {e}"),
            )
        }
    };
    if request.user.trim().is_empty() || request.user.chars().count() > 128 {
        return error(
            StatusCode::BAD_REQUEST,
            "`user` must be 1 to 128 characters",
        );
    }
    if request.text.trim().is_empty() {
        return error(StatusCode::BAD_REQUEST, "`text` is empty");
    }
    if request.text.chars().count() > MAX_TEXT {
        return error(
            StatusCode::BAD_REQUEST,
            format!("`text` is longer than {MAX_TEXT} characters"),
        );
    }
    match tokio::time::timeout(
        app.options.budget,
        app.doctor.chat(&request.user, &request.text),
    )
    .await
    {
        Ok(reply) => Json::<ChatReply>(reply).into_response(),
        Err(_) => error(StatusCode::GATEWAY_TIMEOUT, reply::TOO_SLOW),
    }
}

async fn healthz(State(app): State<App>) -> Response {
    Json(json!({ "status": "alive", "backends": app.doctor.describe() })).into_response()
}
