//! The doctor's HTTP side: the WeChat webhook (`GET`/`POST /wechat`), the JSON chat API
//! (`POST /v1/doctor/chat`) and `/healthz`. It owns who may ask: WeChat requests must be
//! signed, recent and never seen before; chat requests must carry the configured bearer
//! token. It reaches sessions and models only through [`Doctor`], and the replay memory
//! only through [`ReplayGuard`]. WeChat gives a server 5 seconds, so every answer is
//! bounded below that, and WeChat never sees a 500: a failure to answer becomes a polite
//! text reply (a refused request is a 403, or a 503 when the replay memory cannot be
//! consulted).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;

use super::replay::{self, MemoryReplay, ReplayGuard, Signed};
use super::session::{SessionKey, EXPIRY_SWEEP};
use super::{reply, wechat, ChatReply, Doctor};

/// Largest request body accepted (WeChat text messages are far smaller).
pub const MAX_BODY: usize = 64 * 1024;
/// Longest text the chat API takes, in characters.
pub const MAX_TEXT: usize = 1000;

/// Who may use the chat API. Its `user` is whatever the client says, so an open API lets
/// anyone read any chat user's conversation: it is closed unless configured.
#[derive(Clone)]
pub enum ChatAccess {
    /// Requests must carry `Authorization: Bearer <token>`.
    Token(String),
    /// No credential asked: explicitly opened for local use (`--chat_api_open`).
    Open,
    /// Every request refused: neither a token nor opening was configured.
    Closed,
}

impl ChatAccess {
    /// From the facade's flags. A token wins over `open`: asking for the token when both
    /// are given is the safer reading of a contradictory configuration, and it costs a
    /// local user nothing they do not already have.
    pub fn from_flags(token: Option<String>, open: bool) -> Self {
        match token.filter(|t| !t.is_empty()) {
            Some(token) => ChatAccess::Token(token),
            None if open => ChatAccess::Open,
            None => ChatAccess::Closed,
        }
    }
}

#[derive(Clone)]
pub struct WebOptions {
    /// The token configured in the WeChat console; requests are signed with it. Without
    /// one, every WeChat request is refused.
    pub wechat_token: Option<String>,
    /// The whole answer must be ready within this (below WeChat's 5 s).
    pub budget: Duration,
    pub chat_access: ChatAccess,
    /// How far a WeChat request's timestamp may be from this server's clock.
    pub max_clock_skew: Duration,
    /// Signed WeChat requests already received.
    pub replay: Arc<dyn ReplayGuard>,
}

impl WebOptions {
    /// WeChat's budget, [`wechat::MAX_CLOCK_SKEW`], and an in-process replay memory whose
    /// expiry task starts here (so this must run inside a Tokio runtime).
    pub fn new(wechat_token: Option<String>, chat_access: ChatAccess) -> Self {
        let max_clock_skew = wechat::MAX_CLOCK_SKEW;
        WebOptions {
            wechat_token,
            budget: Duration::from_millis(4500),
            chat_access,
            max_clock_skew,
            replay: memory_replay(max_clock_skew),
        }
    }
}

/// An in-process replay memory sized for `max_clock_skew`, with its expiry task running.
pub fn memory_replay(max_clock_skew: Duration) -> Arc<dyn ReplayGuard> {
    let memory = Arc::new(MemoryReplay::new(
        replay::DEFAULT_REPLAY_CAPACITY,
        replay::window_for(max_clock_skew),
    ));
    // The task holds the memory weakly and ends with it; no need to keep its handle.
    drop(memory.spawn_expiry(EXPIRY_SWEEP));
    memory
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
        .layer(middleware::from_fn(refuse_announced_oversize))
        .with_state(App {
            doctor,
            options: Arc::new(options),
        })
}

/// A body whose `Content-Length` is over [`MAX_BODY`] is refused before any of it is read.
async fn refuse_announced_oversize(request: Request, next: Next) -> Response {
    if crate::transport::announced_body_over(request.headers(), MAX_BODY).is_some() {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than {MAX_BODY} bytes"),
        );
    }
    next.run(request).await
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A refused request: the status and the text saying why.
type Refusal = (StatusCode, String);

fn forbidden(message: impl Into<String>) -> Refusal {
    (StatusCode::FORBIDDEN, message.into())
}

/// Admits a WeChat request only if it is signed with the token, its timestamp is within
/// the clock window, and the same `(timestamp, nonce, signature)` was never admitted
/// before; otherwise the refusal to send. Checked in that order, so that only WeChat can
/// write into the replay memory.
async fn admit_wechat(app: &App, q: &HashMap<String, String>) -> Result<(), Refusal> {
    let (Some(token), Some(signature), Some(timestamp), Some(nonce)) = (
        &app.options.wechat_token,
        q.get("signature"),
        q.get("timestamp"),
        q.get("nonce"),
    ) else {
        return Err(forbidden("invalid signature"));
    };
    if !wechat::verify(token, timestamp, nonce, signature) {
        return Err(forbidden("invalid signature"));
    }
    if let Err(e) = wechat::check_clock(timestamp, unix_now(), app.options.max_clock_skew) {
        tracing::warn!(error = %e, "WeChat request outside the clock window");
        return Err(forbidden(e.to_string()));
    }
    let request = Signed {
        timestamp: timestamp.as_str(),
        nonce: nonce.as_str(),
        signature: signature.as_str(),
    };
    match app.options.replay.first_seen(request).await {
        Ok(true) => Ok(()),
        Ok(false) => {
            tracing::warn!(timestamp = %timestamp, "replayed WeChat request refused");
            Err(forbidden(
                "refused: this signed request was already received (replay)",
            ))
        }
        Err(e) => {
            // Fail closed: without the memory a captured request could be replayed.
            tracing::error!(error = %e, "cannot check WeChat requests for replays; refusing them");
            Err((
                StatusCode::SERVICE_UNAVAILABLE,
                "the replay check is unavailable; try again later".into(),
            ))
        }
    }
}

/// WeChat's server check: echo `echostr` when the request is admitted.
async fn verify(State(app): State<App>, Query(q): Query<HashMap<String, String>>) -> Response {
    if let Err(refusal) = admit_wechat(&app, &q).await {
        return refusal.into_response();
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
    if let Err(refusal) = admit_wechat(&app, &q).await {
        return refusal.into_response();
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
    let now = unix_now();
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
                app.doctor
                    .chat(&SessionKey::wechat(incoming.from_user.as_str()), &content),
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

/// The token of an `Authorization: Bearer <token>` value (the scheme in any case).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Compared in constant time, so the answer's timing does not reveal how much of a guess
/// was right (only whether its length was).
fn same_secret(expected: &str, given: &str) -> bool {
    expected.len() == given.len() && bool::from(expected.as_bytes().ct_eq(given.as_bytes()))
}

/// Checked before the body is looked at.
fn authorize_chat(
    access: &ChatAccess,
    headers: &HeaderMap,
) -> Result<(), (StatusCode, &'static str)> {
    let unauthorized = |message: &'static str| -> Result<(), (StatusCode, &'static str)> {
        Err((StatusCode::UNAUTHORIZED, message))
    };
    let expected = match access {
        ChatAccess::Open => return Ok(()),
        ChatAccess::Closed => {
            return Err((
                StatusCode::FORBIDDEN,
                "the chat API is disabled: start the facade with --chat_api_token (or \
                 CHAT_API_TOKEN) and send `Authorization: Bearer <token>`, or with \
                 --chat_api_open for local use",
            ))
        }
        ChatAccess::Token(token) => token,
    };
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return unauthorized(
            "missing `Authorization: Bearer <token>` header (the facade's --chat_api_token)",
        );
    };
    let Some(given) = value.to_str().ok().and_then(bearer) else {
        return unauthorized("the Authorization header must be `Bearer <token>`");
    };
    if !same_secret(expected, given) {
        return unauthorized("invalid bearer token");
    }
    Ok(())
}

async fn chat(
    State(app): State<App>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if let Err((status, message)) = authorize_chat(&app.options.chat_access, &headers) {
        let mut response = error(status, message);
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        return response;
    }
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
        app.doctor
            .chat(&SessionKey::chat(request.user.as_str()), &request.text),
    )
    .await
    {
        Ok(reply) => Json::<ChatReply>(reply).into_response(),
        Err(_) => error(StatusCode::GATEWAY_TIMEOUT, reply::TOO_SLOW),
    }
}

async fn healthz(State(app): State<App>) -> Response {
    Json(json!({
        "status": "alive",
        "backends": app.doctor.describe(),
        "wechat_replay_check": app.options.replay.describe(),
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(authorization: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(a) = authorization {
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(a).unwrap());
        }
        h
    }

    fn status(result: Result<(), (StatusCode, &'static str)>) -> Option<StatusCode> {
        result.err().map(|(status, _)| status)
    }

    #[test]
    fn the_chat_api_wants_the_bearer_token() {
        let access = ChatAccess::Token("s3cret".into());
        let check = |a| status(authorize_chat(&access, &headers(a)));
        assert_eq!(check(Some("Bearer s3cret")), None);
        assert_eq!(check(Some("bearer  s3cret ")), None);
        assert_eq!(check(None), Some(StatusCode::UNAUTHORIZED));
        assert_eq!(check(Some("Bearer wrong")), Some(StatusCode::UNAUTHORIZED));
        assert_eq!(check(Some("Bearer s3cre")), Some(StatusCode::UNAUTHORIZED));
        assert_eq!(check(Some("Basic s3cret")), Some(StatusCode::UNAUTHORIZED));
        assert_eq!(check(Some("s3cret")), Some(StatusCode::UNAUTHORIZED));
        assert_eq!(
            status(authorize_chat(&ChatAccess::Open, &headers(None))),
            None
        );
        assert_eq!(
            status(authorize_chat(
                &ChatAccess::Closed,
                &headers(Some("Bearer s3cret"))
            )),
            Some(StatusCode::FORBIDDEN)
        );
    }

    #[test]
    fn a_token_wins_over_opening() {
        assert!(matches!(
            ChatAccess::from_flags(Some("t".into()), true),
            ChatAccess::Token(t) if t == "t"
        ));
        assert!(matches!(
            ChatAccess::from_flags(Some(String::new()), true),
            ChatAccess::Open
        ));
        assert!(matches!(
            ChatAccess::from_flags(None, false),
            ChatAccess::Closed
        ));
    }
}
