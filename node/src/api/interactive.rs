//! The interactive-message routes of the API (`docs/api.md`, "Interactive messages"): send one,
//! update or close one's own, answer one.

use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use kith_protocol::interactive::Element;
use serde::Deserialize;

use super::{ApiResult, AppState};

/// The interactive-message routes.
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/interactive", post(send))
        .route("/v1/messages/{id}/answer", post(answer))
        .route("/v1/messages/{id}/update", post(update))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendBody {
    to: String,
    #[serde(default)]
    text: String,
    element: Element,
    expires_in_s: Option<u64>,
}

async fn send(
    State(s): State<AppState>,
    headers: axum::http::HeaderMap,
    body: Result<Json<SendBody>, JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    let Json(b) = body?;
    let expires = b.expires_in_s.map(Duration::from_secs);
    let send = s.node.interactions().send(&b.to, &b.text, b.element, expires);
    let m = match super::idempotency_key(&headers)? {
        Some(key) => s.node.send_once_with(key, send).await?.0,
        None => send.await?,
    };
    Ok((StatusCode::ACCEPTED, Json(m)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AnswerBody {
    #[serde(default)]
    choices: Vec<String>,
    #[serde(default)]
    fields: std::collections::BTreeMap<String, String>,
}

async fn answer(
    State(s): State<AppState>,
    Path(id): Path<String>,
    body: Result<Json<AnswerBody>, JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    let Json(b) = body?;
    let m = s.node.interactions().answer(&id, b.choices, b.fields.into_iter().collect()).await?;
    Ok((StatusCode::ACCEPTED, Json(m)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateBody {
    text: Option<String>,
    element: Option<Element>,
    #[serde(default)]
    closed: bool,
}

async fn update(
    State(s): State<AppState>,
    Path(id): Path<String>,
    body: Result<Json<UpdateBody>, JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    let Json(b) = body?;
    let m = s.node.interactions().update(&id, b.text, b.element, b.closed).await?;
    Ok((StatusCode::ACCEPTED, Json(m)))
}
