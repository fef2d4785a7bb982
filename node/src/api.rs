//! The local HTTP/JSON API (`docs/api.md`): a bearer token, JSON bodies, one-line errors, and
//! a server-sent event stream.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::Stream;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::broadcast;

use crate::error::NodeError;
use crate::node::{Node, NodeEvent, MAX_HISTORY};

mod accounts;
mod bot;
mod calls;
mod interactive;
mod listen;
mod media;
mod plans;

/// Largest request body.
pub const MAX_BODY: usize = 64 * 1024;
/// Interval of keep-alive comments on the event stream.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

#[derive(Clone)]
struct AppState {
    node: Node,
    token: String,
    /// The web app's login codes and sessions (`crate::web`).
    web: std::sync::Arc<std::sync::Mutex<crate::web::Sessions>>,
    /// The session cookie's name (`crate::web::cookie_name`).
    cookie: std::sync::Arc<str>,
}

/// An API error: an HTTP status, a machine code and a line for a person.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into() }
    }
}

impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> Self {
        let (status, code) = match &e {
            NodeError::InvalidName(_) => (StatusCode::BAD_REQUEST, "invalid_name"),
            NodeError::BadInput(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            NodeError::NameNotFound(_) | NodeError::NotFound(_) => {
                (StatusCode::NOT_FOUND, "not_found")
            }
            NodeError::NameTaken(_) => (StatusCode::CONFLICT, "name_taken"),
            NodeError::KeyChanged { .. } => (StatusCode::CONFLICT, "key_changed"),
            NodeError::NotAllowed(_) => (StatusCode::FORBIDDEN, "not_allowed"),
            NodeError::Refused(_) => (StatusCode::FORBIDDEN, "refused"),
            NodeError::NoIdentityKey => (StatusCode::CONFLICT, "no_identity_key"),
            NodeError::Link(_) => (StatusCode::CONFLICT, "link"),
            NodeError::Dht(_) => (StatusCode::BAD_GATEWAY, "dht"),
            NodeError::Mailbox(_) => (StatusCode::BAD_GATEWAY, "mailbox"),
            NodeError::Network(_) => (StatusCode::BAD_GATEWAY, "network"),
            NodeError::Busy(_) => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
            NodeError::NetworkStopped => (StatusCode::SERVICE_UNAVAILABLE, "stopping"),
            NodeError::Store { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "store"),
            NodeError::Transfer(_) => (StatusCode::BAD_GATEWAY, "transfer"),
            NodeError::Blob(crate::blobs::BlobStoreError::Quota { .. }) => {
                (StatusCode::INSUFFICIENT_STORAGE, "quota")
            }
            NodeError::Io { .. } | NodeError::Blob(_) => (StatusCode::INTERNAL_SERVER_ERROR, "io"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> Self {
        let status = if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            e.status()
        } else {
            StatusCode::BAD_REQUEST
        };
        let code =
            if status == StatusCode::PAYLOAD_TOO_LARGE { "too_large" } else { "bad_request" };
        ApiError::new(status, code, e.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let line = self.message.replace('\n', " ");
        (self.status, Json(json!({ "error": line, "code": self.code }))).into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// The API's routes, behind the bearer token, for an API listening on `port` (which names the
/// web app's session cookie).
pub fn router(node: Node, token: String, port: u16) -> Router {
    let cookie = crate::web::cookie_name(port).into();
    let state = AppState { node, token, web: Default::default(), cookie };
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/register", post(register))
        .route("/v1/resolve/{name}", get(resolve))
        .route("/v1/messages", get(messages).post(send))
        .route("/v1/messages/{id}", get(message))
        .route("/v1/messages/{id}/cancel", post(cancel))
        .route("/v1/messages/{id}/react", post(react))
        .route("/v1/locations", get(plans::locations).post(share_location))
        .route("/v1/messages/{id}/edit", post(edit))
        .route("/v1/messages/{id}/delete", post(delete))
        .route("/v1/contacts", get(contacts))
        .route("/v1/blocks", get(blocks).post(block))
        .route("/v1/trust", post(trust))
        .route("/v1/events", get(events))
        .route("/v1/mailboxes", get(mailboxes).post(add_mailbox))
        .route("/v1/conversations", get(conversations))
        .route("/v1/conversations/{id}/members", get(members))
        .route("/v1/conversations/{id}/leave", post(leave))
        .route("/v1/conversations/{id}/remove", post(remove))
        .route("/v1/mailboxes/{peer_id}", axum::routing::delete(remove_mailbox))
        .route("/v1/read", post(read))
        .route("/v1/devices", get(devices))
        .route("/v1/devices/link", post(link_start))
        .route("/v1/devices/link/{id}", get(link_status))
        .route("/v1/devices/{peer_id}/revoke", post(revoke))
        .route("/v1/web/login", post(web_login))
        .route("/v1/qr", get(qr))
        .merge(media::routes())
        .merge(calls::routes())
        .merge(listen::routes())
        .merge(plans::routes())
        .merge(interactive::routes())
        .merge(accounts::routes())
        .merge(bot::routes())
        .layer(middleware::from_fn(whole_small_body))
        .layer(middleware::from_fn_with_state(state.clone(), auth))
        // Metrics need no token (docs/api.md): a local Prometheus scrapes them.
        .route("/metrics", get(metrics))
        // The web app's page and files are the same for everyone; its login link is the
        // one-time code (docs/web.md).
        .route("/", get(|| async { crate::web::index() }))
        .route(
            "/app/{file}",
            get(|Path(file): Path<String>| async move { crate::web::asset(&file) }),
        )
        .route("/login", get(web_redeem))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// Serves the API on `listener` until `shutdown` completes, with the connection limits of
/// [`crate::http`].
pub async fn serve<F>(
    node: Node,
    listener: tokio::net::TcpListener,
    token: String,
    shutdown: F,
) -> Result<(), NodeError>
where
    F: Future<Output = ()> + Send + 'static,
{
    let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
    crate::http::serve(listener, router(node, token, port), shutdown).await;
    Ok(())
}

impl AppState {
    /// The web app's login codes and sessions.
    fn sessions(&self) -> std::sync::MutexGuard<'_, crate::web::Sessions> {
        self.web.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Fills `bytes` from the operating system's random source (login codes, sessions).
fn os_random(bytes: &mut [u8]) {
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, bytes)
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Lets a request through with the bearer token, or with a web app session (`crate::web`)
/// when it only reads or comes from the app's own origin.
async fn auth(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| constant_time_eq(t.trim().as_bytes(), state.token.as_bytes()));
    let session = !bearer
        && crate::web::session_cookie(req.headers(), &state.cookie)
            .is_some_and(|s| state.sessions().valid(s, crate::now_ms()));
    if session && !crate::web::same_origin(req.method(), req.headers()) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "cross_origin",
            "a request with the web app's session that changes something must come from the app \
             (its Origin header must name this server)",
        )
        .into_response();
    }
    if bearer || session {
        if let Some(slot) = req.extensions().get::<crate::http::ConnSlot>() {
            slot.0.authenticated();
        }
    } else {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong bearer token (see api.token in the home directory), and no web \
             app session (log in with the link `kith open` prints)",
        )
        .into_response();
    }
    next.run(req).await
}

/// Reads a request's body whole before its handler runs when it declares at most [`MAX_BODY`]
/// bytes. A handler that takes no body (`POST .../download` with `{}`) would otherwise drop it
/// unread; if its bytes had not all arrived by then, hyper closes the connection after the
/// response, without saying so, and the client's next request on that kept-alive connection
/// fails as "disconnected". Larger bodies (file uploads) stream to handlers that read them.
async fn whole_small_body(req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let req = match declared {
        Some(len) if len > 0 && len <= MAX_BODY => {
            let (parts, body) = req.into_parts();
            match axum::body::to_bytes(body, MAX_BODY).await {
                Ok(bytes) => Request::from_parts(parts, axum::body::Body::from(bytes)),
                Err(e) => {
                    return ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "bad_request",
                        format!("cannot read the request's body: {e}"),
                    )
                    .into_response()
                }
            }
        }
        _ => req,
    };
    next.run(req).await
}

#[derive(Deserialize)]
struct QrQuery {
    text: String,
}

/// A QR code of `text` (at most 512 bytes), as SVG.
async fn qr(q: Result<Query<QrQuery>, QueryRejection>) -> ApiResult<Response> {
    let Query(q) =
        q.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text()))?;
    let svg = crate::web::qr_svg(&q.text)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e))?;
    Ok(crate::web::qr_response(svg))
}

/// A one-time login link for the web app (`kith open` asks for it with the token).
async fn web_login(State(s): State<AppState>) -> ApiResult<impl IntoResponse> {
    let code = s.sessions().new_code(crate::now_ms(), &mut os_random);
    let expires_in_s = crate::web::LOGIN_CODE_TTL_MS / 1000;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "path": format!("/login?code={code}"), "expires_in_s": expires_in_s })),
    ))
}

#[derive(Deserialize)]
struct LoginQuery {
    code: String,
}

/// Opens a web app session from a login link: the cookie, and on to the app.
async fn web_redeem(
    State(s): State<AppState>,
    q: Result<Query<LoginQuery>, QueryRejection>,
) -> Response {
    let Ok(Query(q)) = q else {
        return crate::web::login_refused();
    };
    let session = s.sessions().redeem(&q.code, crate::now_ms(), &mut os_random);
    match session {
        Some(session) => (
            StatusCode::SEE_OTHER,
            [
                (header::SET_COOKIE, crate::web::set_cookie(&s.cookie, &session)),
                (header::LOCATION, "/".to_owned()),
                (header::CACHE_CONTROL, "no-store".to_owned()),
            ],
        )
            .into_response(),
        None => crate::web::login_refused(),
    }
}

async fn status(State(s): State<AppState>) -> ApiResult<impl IntoResponse> {
    Ok(Json(s.node.status().await?))
}

#[derive(Deserialize)]
struct NameBody {
    name: String,
}

async fn register(
    State(s): State<AppState>,
    body: Result<Json<NameBody>, JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    let Json(b) = body?;
    Ok(Json(s.node.register(&b.name).await?))
}

async fn resolve(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(s.node.resolve(&name).await?))
}

#[derive(Deserialize)]
struct SendBody {
    to: String,
    text: String,
    /// A message of the same conversation this one answers.
    reply_to: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReactBody {
    emoji: String,
    #[serde(default)]
    remove: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BlockBody {
    name: String,
    #[serde(default = "yes")]
    blocked: bool,
}

fn yes() -> bool {
    true
}

async fn block(
    State(s): State<AppState>,
    body: Result<Json<BlockBody>, JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    let Json(b) = body?;
    Ok(Json(s.node.block(&b.name, b.blocked).await?))
}

async fn blocks(State(s): State<AppState>) -> ApiResult<impl IntoResponse> {
    Ok(Json(s.node.blocked()?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LocationBody {
    to: String,
    lat: f64,
    lon: f64,
    accuracy_m: Option<f32>,
    label: Option<String>,
}

async fn share_location(
    State(s): State<AppState>,
    body: Result<Json<LocationBody>, JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    let Json(b) = body?;
    let m = s.node.share_location(&b.to, b.lat, b.lon, b.accuracy_m, b.label).await?;
    Ok((StatusCode::ACCEPTED, Json(m)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EditBody {
    text: String,
}

async fn react(
    State(s): State<AppState>,
    Path(id): Path<String>,
    body: Result<Json<ReactBody>, JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    let Json(b) = body?;
    Ok((StatusCode::ACCEPTED, Json(s.node.react(&id, &b.emoji, b.remove).await?)))
}

async fn edit(
    State(s): State<AppState>,
    Path(id): Path<String>,
    body: Result<Json<EditBody>, JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    let Json(b) = body?;
    Ok((StatusCode::ACCEPTED, Json(s.node.edit_message(&id, &b.text).await?)))
}

async fn delete(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<impl IntoResponse> {
    Ok((StatusCode::ACCEPTED, Json(s.node.delete_message(&id).await?)))
}

/// The header that makes a send safe to retry (`docs/api.md`).
const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The `Idempotency-Key` header, if given.
fn idempotency_key(headers: &axum::http::HeaderMap) -> Result<Option<&str>, ApiError> {
    match headers.get(IDEMPOTENCY_KEY) {
        None => Ok(None),
        Some(v) => Ok(Some(v.to_str().map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "the Idempotency-Key header must be visible ASCII",
            )
        })?)),
    }
}

async fn send(
    State(s): State<AppState>,
    headers: axum::http::HeaderMap,
    body: Result<Json<SendBody>, JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    let Json(b) = body?;
    let key = idempotency_key(&headers)?;
    if let Some(reply_to) = &b.reply_to {
        // A reply goes to the conversation of the message it answers, which must be `to`'s.
        let target = s.node.message(reply_to)?;
        let conversation = s.node.conversation_id(&b.to)?;
        if conversation.as_deref() != Some(target.conversation.as_str()) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("message {reply_to} is not in the conversation with {}", b.to),
            ));
        }
        let m = s.node.reply(reply_to, &b.text).await?;
        let answer = json!({ "id": m.id, "conversation": m.conversation, "status": m.status });
        return Ok((StatusCode::ACCEPTED, Json(answer)));
    }
    let (sent, replayed) = match key {
        Some(key) => s.node.send_message_once(key, &b.to, &b.text).await?,
        None => (s.node.send_message(&b.to, &b.text).await?, false),
    };
    let m = &sent.message;
    let mut answer = json!({ "id": m.id, "conversation": m.conversation, "status": m.status });
    if !sent.not_invited.is_empty() {
        answer["not_invited"] = json!(sent.not_invited);
    }
    if replayed {
        // The first send with this key created the message; nothing was sent now.
        answer["replayed"] = json!(true);
        return Ok((StatusCode::OK, Json(answer)));
    }
    Ok((StatusCode::ACCEPTED, Json(answer)))
}

#[derive(Deserialize)]
struct HistoryQuery {
    with: Option<String>,
    limit: Option<usize>,
}

async fn messages(
    State(s): State<AppState>,
    q: Result<Query<HistoryQuery>, QueryRejection>,
) -> ApiResult<impl IntoResponse> {
    let Query(q) =
        q.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text()))?;
    Ok(Json(s.node.messages(q.with.as_deref(), q.limit.unwrap_or(MAX_HISTORY))?))
}

async fn message(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(s.node.message(&id)?))
}

async fn cancel(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<impl IntoResponse> {
    Ok(Json(s.node.cancel(&id).await?))
}

async fn contacts(State(s): State<AppState>) -> ApiResult<impl IntoResponse> {
    Ok(Json(s.node.contacts()?))
}

async fn trust(
    State(s): State<AppState>,
    body: Result<Json<NameBody>, JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    let Json(b) = body?;
    Ok(Json(s.node.trust(&b.name).await?))
}

async fn conversations(State(s): State<AppState>) -> ApiResult<impl IntoResponse> {
    Ok(Json(s.node.conversation_summaries()?))
}

fn conv(id: &str) -> String {
    format!("#{}", id.trim_start_matches('#'))
}

async fn members(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(s.node.members(&conv(&id))?))
}

async fn leave(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<impl IntoResponse> {
    s.node.leave(&conv(&id)).await?;
    Ok(Json(json!({ "left": id })))
}

async fn remove(
    State(s): State<AppState>,
    Path(id): Path<String>,
    body: Result<Json<NameBody>, JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    let Json(b) = body?;
    s.node.remove_member(&conv(&id), &b.name).await?;
    Ok(Json(json!({ "removed": b.name })))
}

#[derive(Deserialize)]
struct AddrBody {
    addr: String,
}

async fn mailboxes(State(s): State<AppState>) -> ApiResult<impl IntoResponse> {
    Ok(Json(s.node.mailboxes()?))
}

async fn add_mailbox(
    State(s): State<AppState>,
    body: Result<Json<AddrBody>, JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    let Json(b) = body?;
    Ok(Json(s.node.add_mailbox(&b.addr).await?))
}

async fn remove_mailbox(
    State(s): State<AppState>,
    Path(peer): Path<String>,
) -> ApiResult<impl IntoResponse> {
    s.node.remove_mailbox(&peer).await?;
    Ok(Json(json!({ "removed": peer })))
}

#[derive(Deserialize)]
struct WithBody {
    with: String,
}

async fn read(
    State(s): State<AppState>,
    body: Result<Json<WithBody>, JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    let Json(b) = body?;
    Ok(Json(json!({ "read": s.node.mark_read(&b.with).await? })))
}

async fn devices(State(s): State<AppState>) -> ApiResult<impl IntoResponse> {
    Ok(Json(s.node.devices().await?))
}

#[derive(Deserialize, Default)]
struct LinkBody {
    /// Seconds the code stays valid (default and most: 300).
    ttl_secs: Option<u64>,
}

async fn link_start(
    State(s): State<AppState>,
    body: Option<Json<LinkBody>>,
) -> ApiResult<impl IntoResponse> {
    let ttl = body
        .and_then(|Json(b)| b.ttl_secs)
        .map_or(crate::services::devices::LINK_CODE_TTL_MS, |t| t.saturating_mul(1000));
    Ok((StatusCode::CREATED, Json(s.node.link_start_with(ttl).await?)))
}

async fn link_status(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(s.node.link_status(&id)?))
}

async fn revoke(
    State(s): State<AppState>,
    Path(peer): Path<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(s.node.revoke_device(&peer).await?))
}

async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], s.node.metrics_text())
}

fn sse_event(e: NodeEvent) -> SseEvent {
    match e {
        NodeEvent::Message(m) => {
            SseEvent::default().event("message").data(serde_json::to_string(&m).unwrap_or_default())
        }
        NodeEvent::Status { id, status } => SseEvent::default()
            .event("status")
            .data(json!({ "id": id, "status": status }).to_string()),
        NodeEvent::NameConflict(c) => SseEvent::default()
            .event("name_conflict")
            .data(serde_json::to_string(&c).unwrap_or_default()),
        NodeEvent::Transfer(t) => SseEvent::default()
            .event("transfer")
            .data(serde_json::to_string(&t).unwrap_or_default()),
        NodeEvent::Call(c) => {
            SseEvent::default().event("call").data(serde_json::to_string(&c).unwrap_or_default())
        }
        NodeEvent::Listen(l) => {
            SseEvent::default().event("listen").data(serde_json::to_string(&l).unwrap_or_default())
        }
        NodeEvent::CallSignal(c) => SseEvent::default()
            .event("call_signal")
            .data(serde_json::to_string(&c).unwrap_or_default()),
    }
}

async fn events(
    State(s): State<AppState>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let rx = s.node.subscribe();
    let stop = s.node.stopping();
    // The stream ends when the node stops, so a graceful shutdown never waits on a subscriber.
    let stream = futures::stream::unfold((rx, stop), |(mut rx, mut stop)| async move {
        let item = tokio::select! {
            r = rx.recv() => r,
            _ = stop.wait_for(|s| *s) => return None,
        };
        let event = match item {
            Ok(e) => sse_event(e),
            Err(broadcast::error::RecvError::Lagged(n)) => {
                SseEvent::default().comment(format!("missed {n} events"))
            }
            Err(broadcast::error::RecvError::Closed) => return None,
        };
        Some((Ok(event), (rx, stop)))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each kind of failure has its own status and code (docs/api.md lists them).
    #[test]
    fn errors_map_to_their_own_status_and_code() {
        let cases = [
            (NodeError::BadInput("empty message".into()), 400, "bad_request"),
            (NodeError::NotAllowed("joined before you".into()), 403, "not_allowed"),
            (NodeError::Refused("allow list".into()), 403, "refused"),
            (NodeError::NotFound("message".into()), 404, "not_found"),
            (NodeError::NameNotFound("bob".into()), 404, "not_found"),
            (NodeError::NameTaken("bob".into()), 409, "name_taken"),
            (NodeError::NoIdentityKey, 409, "no_identity_key"),
            (NodeError::Dht("timeout".into()), 502, "dht"),
            (NodeError::Mailbox("unreachable".into()), 502, "mailbox"),
            (NodeError::Network("unreachable".into()), 502, "network"),
            (NodeError::Busy("recipient".into()), 503, "busy"),
            (NodeError::NetworkStopped, 503, "stopping"),
            (NodeError::Store { path: "s".into(), reason: "disk full".into() }, 500, "store"),
            (NodeError::Internal("bug".into()), 500, "internal"),
            (NodeError::Transfer("no holder".into()), 502, "transfer"),
            (
                NodeError::Blob(crate::blobs::BlobStoreError::Quota {
                    quota: 1,
                    used: 1,
                    wanted: 1,
                }),
                507,
                "quota",
            ),
        ];
        for (error, status, code) in cases {
            let line = error.to_string();
            let e = ApiError::from(error);
            assert_eq!((e.status.as_u16(), e.code), (status, code), "{line}");
            assert_eq!(e.message, line);
        }
    }
}
