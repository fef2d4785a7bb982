//! The listening routes of the API (`docs/api.md`, "Listening together"): start a session with
//! audio attachments of a conversation, join or leave it from this device's page, control it.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::{ApiError, ApiResult, AppState};
use crate::node::ListenControl;

/// The listening routes.
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/listen", get(list).post(start))
        .route("/v1/listen/{id}", get(one))
        .route("/v1/listen/{id}/join", post(join))
        .route("/v1/listen/{id}/leave", post(leave))
        .route("/v1/listen/{id}/control", post(control))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StartBody {
    to: String,
    tracks: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ControlBody {
    op: String,
    position_ms: Option<u64>,
    track: Option<String>,
}

async fn start(
    State(s): State<AppState>,
    body: Result<Json<StartBody>, JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    let Json(b) = body?;
    Ok((StatusCode::CREATED, Json(s.node.start_listening(&b.to, &b.tracks).await?)))
}

async fn list(State(s): State<AppState>) -> ApiResult<impl IntoResponse> {
    Ok(Json(s.node.listening()?))
}

async fn one(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<impl IntoResponse> {
    Ok(Json(s.node.listening_session(&id)?))
}

async fn join(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<impl IntoResponse> {
    Ok(Json(s.node.listen_join(&id, true)?))
}

async fn leave(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<impl IntoResponse> {
    Ok(Json(s.node.listen_join(&id, false)?))
}

fn bad(message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
}

async fn control(
    State(s): State<AppState>,
    Path(id): Path<String>,
    body: Result<Json<ControlBody>, JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    let Json(b) = body?;
    let position = || b.position_ms.ok_or_else(|| bad(format!("{} needs position_ms", b.op)));
    let control = match b.op.as_str() {
        "play" => ListenControl::Play { at_ms: b.position_ms },
        "pause" => ListenControl::Pause,
        "seek" => ListenControl::Seek { position_ms: position()? },
        "next" => ListenControl::Next,
        "add" => {
            let track = b.track.as_deref().ok_or_else(|| bad("add needs track".into()))?;
            let id = kith_protocol::MessageId::parse(track).map_err(|e| bad(e.to_string()))?;
            ListenControl::Add { track: id }
        }
        "stop" => ListenControl::Stop,
        other => {
            return Err(bad(format!(
                "op must be play, pause, seek, next, add or stop, not {other:?}"
            )))
        }
    };
    Ok(Json(s.node.listen_control(&id, control)?))
}
