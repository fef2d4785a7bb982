//! The call routes of the API (`docs/api.md`, "Calls"): start, answer, decline and leave a
//! call, hand this device's WebRTC offers and answers to the others, the call list and the
//! settings a client needs (STUN and TURN servers).

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::{ApiResult, AppState};

/// The call routes (behind the token or the web app's session, like the rest).
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/calls", get(list).post(start))
        .route("/v1/calls/config", get(config))
        .route("/v1/calls/{id}", get(one))
        .route("/v1/calls/{id}/accept", post(accept))
        .route("/v1/calls/{id}/decline", post(decline))
        .route("/v1/calls/{id}/hangup", post(hang_up))
        .route("/v1/calls/{id}/signal", post(signal))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StartBody {
    to: String,
    #[serde(default)]
    video: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignalBody {
    to: String,
    kind: String,
    sdp: String,
}

async fn start(
    State(s): State<AppState>,
    body: Result<Json<StartBody>, JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    let Json(b) = body?;
    Ok((StatusCode::CREATED, Json(s.node.start_call(&b.to, b.video).await?)))
}

async fn list(State(s): State<AppState>) -> ApiResult<impl IntoResponse> {
    let (current, history) = s.node.calls()?;
    Ok(Json(json!({ "current": current, "history": history })))
}

async fn one(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<impl IntoResponse> {
    Ok(Json(s.node.call(&id)?))
}

async fn config(State(s): State<AppState>) -> ApiResult<impl IntoResponse> {
    let c = s.node.call_config();
    Ok(Json(json!({
        "ice_servers": c.ice_servers,
        "ring_seconds": c.ring_ms / 1000,
        "max_participants": crate::rules::call::MAX_PARTICIPANTS,
    })))
}

async fn accept(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<impl IntoResponse> {
    Ok(Json(s.node.accept_call(&id)?))
}

async fn decline(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(s.node.decline_call(&id)?))
}

async fn hang_up(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(s.node.hang_up(&id)?))
}

async fn signal(
    State(s): State<AppState>,
    Path(id): Path<String>,
    body: Result<Json<SignalBody>, JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    let Json(b) = body?;
    s.node.call_signal(&id, &b.to, &b.kind, b.sdp)?;
    Ok(Json(json!({ "sent": b.kind })))
}
