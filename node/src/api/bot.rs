//! The bot routes of the API (`docs/api.md`, "Bots"): the inbox of a business's or bot's node
//! (every incoming message, at least once, until marked done) and the state a bot keeps per
//! conversation, for bots written in any language.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{ApiError, ApiResult, AppState};

/// The bot routes.
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/bot/inbox", get(inbox))
        .route("/v1/bot/inbox/{key}/done", post(done))
        .route("/v1/bot/state/{conversation}", get(states))
        .route("/v1/bot/state/{conversation}/{key}", get(state).put(set_state).delete(remove_state))
}

#[derive(Deserialize)]
struct StatesQuery {
    prefix: Option<String>,
}

async fn states(
    State(s): State<AppState>,
    Path(c): Path<String>,
    Query(q): Query<StatesQuery>,
) -> ApiResult<impl IntoResponse> {
    let prefix = q.prefix.unwrap_or_default();
    let found = s.node.bot_states::<Value>(&conversation(&c)?, &prefix)?;
    let out: Vec<Value> = found.into_iter().map(|(k, v)| json!({"key": k, "value": v})).collect();
    Ok(Json(Value::Array(out)))
}

#[derive(Deserialize)]
struct InboxQuery {
    after: Option<u64>,
    limit: Option<usize>,
}

/// Most inbox entries one request lists.
const MAX_LIST: usize = 1000;

async fn inbox(
    State(s): State<AppState>,
    Query(q): Query<InboxQuery>,
) -> ApiResult<impl IntoResponse> {
    if !s.node.inbox_on() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_a_bot",
            "the inbox is on only for a business or a bot: kith profile set --kind bot",
        ));
    }
    let limit = q.limit.unwrap_or(100).clamp(1, MAX_LIST);
    let mut out = Vec::new();
    for (key, id) in s.node.inbox_after(q.after, limit)? {
        match s.node.stored_view(&id)? {
            Some(m) => out.push(json!({ "key": key, "message": m })),
            // Deleted from the history meanwhile: nothing to hand out.
            None => {
                s.node.inbox_done(key)?;
            }
        }
    }
    Ok(Json(Value::Array(out)))
}

async fn done(State(s): State<AppState>, Path(key): Path<u64>) -> ApiResult<impl IntoResponse> {
    let was = s.node.inbox_done(key)?;
    Ok(Json(json!({ "key": key, "done": was })))
}

fn conversation(id: &str) -> Result<[u8; 16], ApiError> {
    let mut c = [0u8; 16];
    hex::decode_to_slice(id.trim_start_matches('#'), &mut c).map_err(|_| {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", "a conversation id is 32 hex digits")
    })?;
    Ok(c)
}

async fn state(
    State(s): State<AppState>,
    Path((c, key)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    match s.node.bot_state::<Value>(&conversation(&c)?, &key)? {
        Some(v) => Ok(Json(v)),
        None => Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no state {key:?}"))),
    }
}

async fn set_state(
    State(s): State<AppState>,
    Path((c, key)): Path<(String, String)>,
    body: Result<Json<Value>, JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    let Json(v) = body?;
    s.node.set_bot_state(&conversation(&c)?, &key, Some(&v))?;
    Ok(Json(v))
}

async fn remove_state(
    State(s): State<AppState>,
    Path((c, key)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    s.node.set_bot_state::<Value>(&conversation(&c)?, &key, None)?;
    Ok(StatusCode::NO_CONTENT)
}
