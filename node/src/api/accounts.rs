//! The account routes of the API (`docs/api.md`, "Profiles, consent, mutes and reports"):
//! this user's profile, subscribing to a business or bot, muting, reporting.

use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, ApiResult, AppState};
use crate::node::ProfileInput;

/// The account routes.
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/profile", get(profile).put(set_profile).delete(remove_profile))
        .route("/v1/profile/avatar", post(set_avatar))
        .route("/v1/resolve/{name}/avatar", get(avatar))
        .route("/v1/subscriptions", post(subscribe))
        .route("/v1/mutes", get(mutes).post(mute))
        .route("/v1/reports", get(reports).post(report))
}

async fn profile(State(s): State<AppState>) -> ApiResult<impl IntoResponse> {
    Ok(Json(s.node.profile()))
}

async fn set_profile(
    State(s): State<AppState>,
    body: Result<Json<ProfileInput>, JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    let Json(p) = body?;
    Ok(Json(s.node.set_profile(Some(p)).await?))
}

async fn set_avatar(State(s): State<AppState>, request: Request) -> ApiResult<impl IntoResponse> {
    let max = kith_protocol::profile::MAX_AVATAR as usize;
    let bytes = axum::body::to_bytes(request.into_body(), max).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("an avatar is at most {max} bytes"),
        )
    })?;
    let path = s.node.upload_path()?;
    tokio::fs::write(&path, &bytes).await.map_err(|e| crate::NodeError::io(&path, e))?;
    let set = s.node.set_avatar(&path).await;
    let _ = tokio::fs::remove_file(&path).await;
    Ok(Json(set?))
}

async fn avatar(State(s): State<AppState>, Path(name): Path<String>) -> ApiResult<Response> {
    let (mime, bytes) = s.node.avatar(&name).await?;
    Ok(([(header::CONTENT_TYPE, mime)], bytes).into_response())
}

async fn remove_profile(State(s): State<AppState>) -> ApiResult<impl IntoResponse> {
    Ok(Json(s.node.set_profile(None).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubscribeBody {
    name: String,
    #[serde(default = "yes")]
    subscribed: bool,
}

fn yes() -> bool {
    true
}

async fn subscribe(
    State(s): State<AppState>,
    body: Result<Json<SubscribeBody>, JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    let Json(b) = body?;
    Ok(Json(s.node.subscribe_to(&b.name, b.subscribed).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MuteBody {
    to: String,
    #[serde(default = "yes")]
    muted: bool,
    /// For how long, in seconds; absent: until unmuted.
    for_s: Option<u64>,
}

async fn mute(
    State(s): State<AppState>,
    body: Result<Json<MuteBody>, JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    let Json(b) = body?;
    if !b.muted {
        s.node.unmute(&b.to).await?;
        return Ok(Json(json!({ "to": b.to, "muted": false })));
    }
    let view = s.node.mute(&b.to, b.for_s.map(Duration::from_secs)).await?;
    Ok(Json(
        json!({ "to": b.to, "muted": true, "conversation": view.conversation, "until": view.until }),
    ))
}

async fn mutes(State(s): State<AppState>) -> ApiResult<impl IntoResponse> {
    Ok(Json(s.node.mutes()?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportBody {
    name: String,
    reason: String,
    #[serde(default = "yes")]
    block: bool,
}

async fn report(
    State(s): State<AppState>,
    body: Result<Json<ReportBody>, JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    let Json(b) = body?;
    Ok(Json(s.node.report(&b.name, &b.reason, b.block).await?))
}

async fn reports(State(s): State<AppState>) -> ApiResult<impl IntoResponse> {
    Ok(Json(s.node.reports()?))
}
