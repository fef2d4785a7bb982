//! The planning routes of the API (`docs/api.md`, "Planning together"): events and answers,
//! shared lists, bills, payments and payment requests, and live location.

use std::time::Duration;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use kith_protocol::plan::Answer;
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, ApiResult, AppState};
use crate::rules::lists::ListKind;
use crate::services::plans::{ListEdit, MethodsSpec, Position, SplitSpec};

/// The planning routes.
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/plans/events", get(events).post(propose))
        .route("/v1/plans/events/{id}", get(event).post(change))
        .route("/v1/plans/events/{id}/rsvp", post(rsvp))
        .route("/v1/plans/lists", get(lists).post(new_list))
        .route("/v1/plans/lists/{id}", get(list).post(edit_list))
        .route("/v1/plans/bills", get(bills))
        .route("/v1/plans/expenses", post(expense))
        .route("/v1/plans/payments", post(payment))
        .route("/v1/plans/payments/{id}/confirm", post(confirm))
        .route("/v1/plans/requests", post(request))
        .route("/v1/plans/requests/{id}/pay", post(pay))
        .route("/v1/locations/live", post(start_live))
        .route("/v1/locations/live/{session}", get(track).post(update_live))
        .route("/v1/locations/stop", post(stop_live))
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
}

/// An amount: minor units (an integer), or text in the currency's units ("45.50").
#[derive(Deserialize)]
#[serde(untagged)]
enum Amount {
    Minor(i64),
    Text(String),
}

impl Amount {
    fn minor(&self, currency: &str) -> ApiResult<i64> {
        match self {
            Amount::Minor(a) => Ok(*a),
            Amount::Text(t) => {
                crate::rules::currency::parse_amount(t, currency).map_err(|e| bad(e.to_string()))
            }
        }
    }
}

fn code(c: &str) -> String {
    c.trim().to_ascii_uppercase()
}

#[derive(Deserialize)]
pub(super) struct With {
    with: String,
}

fn with(q: Result<Query<With>, QueryRejection>) -> ApiResult<String> {
    q.map(|Query(w)| w.with)
        .map_err(|e| bad(format!("{} (give ?with=@name or ?with=%23id)", e.body_text())))
}

/// A time as RFC 3339 with an offset ("2027-06-12T18:00:00+02:00"): ms since the epoch and the
/// offset in minutes.
fn parse_time(at: &str) -> ApiResult<(u64, i16)> {
    let t = chrono::DateTime::parse_from_rfc3339(at.trim())
        .or_else(|_| chrono::DateTime::parse_from_str(at.trim(), "%Y-%m-%dT%H:%M%:z"))
        .map_err(|e| bad(format!("{at:?} is not an RFC 3339 time with an offset ({e})")))?;
    let ms = u64::try_from(t.timestamp_millis()).map_err(|_| bad("a time before 1970"))?;
    let zone = i16::try_from(t.offset().local_minus_utc() / 60)
        .map_err(|_| bad("an offset out of range"))?;
    Ok((ms, zone))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventBody {
    to: String,
    title: String,
    at: String,
    place: Option<String>,
    note: Option<String>,
}

async fn propose(
    State(s): State<AppState>,
    body: Result<Json<EventBody>, JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    let Json(b) = body?;
    let (start, zone) = parse_time(&b.at)?;
    let m = s.node.plans().propose_event(&b.to, &b.title, start, zone, b.place, b.note).await?;
    Ok((StatusCode::ACCEPTED, Json(m)))
}

async fn events(
    State(s): State<AppState>,
    q: Result<Query<With>, QueryRejection>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(s.node.plans().events(&with(q)?)?))
}

async fn event(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<impl IntoResponse> {
    Ok(Json(s.node.plans().event(&id)?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangeBody {
    title: Option<String>,
    at: Option<String>,
    place: Option<String>,
    #[serde(default)]
    cancelled: bool,
}

async fn change(
    State(s): State<AppState>,
    Path(id): Path<String>,
    body: Result<Json<ChangeBody>, JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    let Json(b) = body?;
    let start = b.at.as_deref().map(parse_time).transpose()?;
    let m = s.node.plans().change_event(&id, b.title, start, b.place, b.cancelled).await?;
    Ok((StatusCode::ACCEPTED, Json(m)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RsvpBody {
    answer: String,
}

async fn rsvp(
    State(s): State<AppState>,
    Path(id): Path<String>,
    body: Result<Json<RsvpBody>, JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    let Json(b) = body?;
    let answer = Answer::parse(&b.answer).ok_or_else(|| bad("the answer is yes, maybe or no"))?;
    Ok(Json(s.node.plans().rsvp(&id, answer).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewListBody {
    to: String,
    title: String,
    #[serde(default)]
    kind: Option<String>,
}

async fn new_list(
    State(s): State<AppState>,
    body: Result<Json<NewListBody>, JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    let Json(b) = body?;
    let kind = match b.kind.as_deref() {
        None => ListKind::Shopping,
        Some(k) => k.parse::<ListKind>().map_err(|_| bad("a list is of kind shopping or todo"))?,
    };
    let m = s.node.plans().new_list(&b.to, &b.title, kind).await?;
    Ok((StatusCode::ACCEPTED, Json(m)))
}

async fn lists(
    State(s): State<AppState>,
    q: Result<Query<With>, QueryRejection>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(s.node.plans().lists(&with(q)?)?))
}

async fn list(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<impl IntoResponse> {
    Ok(Json(s.node.plans().list(&id)?))
}

async fn edit_list(
    State(s): State<AppState>,
    Path(id): Path<String>,
    body: Result<Json<ListEdit>, JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    let Json(edit) = body?;
    Ok(Json(s.node.plans().edit_list(&id, edit).await?))
}

async fn bills(
    State(s): State<AppState>,
    q: Result<Query<With>, QueryRejection>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(s.node.plans().bills(&with(q)?)?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpenseBody {
    to: String,
    description: String,
    amount: Amount,
    currency: String,
    paid_by: Option<String>,
    #[serde(default)]
    split: SplitSpec,
}

async fn expense(
    State(s): State<AppState>,
    body: Result<Json<ExpenseBody>, JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    let Json(b) = body?;
    let cur = code(&b.currency);
    let m = s
        .node
        .plans()
        .add_expense(
            &b.to,
            &b.description,
            b.amount.minor(&cur)?,
            &cur,
            b.paid_by.as_deref(),
            b.split,
        )
        .await?;
    Ok((StatusCode::ACCEPTED, Json(m)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PaymentBody {
    to: String,
    payee: String,
    amount: Amount,
    currency: String,
    /// The payment request it answers.
    request: Option<String>,
}

async fn payment(
    State(s): State<AppState>,
    body: Result<Json<PaymentBody>, JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    let Json(b) = body?;
    let cur = code(&b.currency);
    let request = b
        .request
        .as_deref()
        .map(kith_protocol::MessageId::parse)
        .transpose()
        .map_err(|e| bad(format!("request: {e}")))?
        .map(|r| r.0);
    let m = s
        .node
        .plans()
        .record_payment(&b.to, &b.payee, b.amount.minor(&cur)?, &cur, request)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(m)))
}

async fn confirm(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    Ok((StatusCode::ACCEPTED, Json(s.node.plans().confirm_payment(&id).await?)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestBody {
    to: String,
    payer: Option<String>,
    amount: Option<Amount>,
    currency: String,
    #[serde(default)]
    reference: String,
    iban: Option<String>,
    name: Option<String>,
    bic: Option<String>,
    lightning: Option<String>,
    link: Option<String>,
}

async fn request(
    State(s): State<AppState>,
    body: Result<Json<RequestBody>, JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    let Json(b) = body?;
    let cur = code(&b.currency);
    let amount = b.amount.as_ref().map(|a| a.minor(&cur)).transpose()?;
    let methods = MethodsSpec {
        iban: b.iban,
        name: b.name,
        bic: b.bic,
        lightning: b.lightning,
        link: b.link,
    };
    let m = s
        .node
        .plans()
        .request_payment(&b.to, b.payer.as_deref(), amount, &cur, &b.reference, methods)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(m)))
}

async fn pay(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<impl IntoResponse> {
    Ok((StatusCode::ACCEPTED, Json(s.node.plans().pay_request(&id).await?)))
}

pub(super) async fn locations(
    State(s): State<AppState>,
    q: Result<Query<With>, QueryRejection>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(s.node.plans().locations(&with(q)?)?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LiveBody {
    to: String,
    seconds: u64,
    lat: f64,
    lon: f64,
    accuracy_m: Option<f32>,
}

async fn start_live(
    State(s): State<AppState>,
    body: Result<Json<LiveBody>, JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    let Json(b) = body?;
    let at = Position { lat: b.lat, lon: b.lon, accuracy_m: b.accuracy_m };
    let (session, message) =
        s.node.plans().start_live(&b.to, Duration::from_secs(b.seconds), at).await?;
    Ok((StatusCode::CREATED, Json(json!({ "session": session, "message": message }))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PointBody {
    lat: f64,
    lon: f64,
    accuracy_m: Option<f32>,
}

async fn update_live(
    State(s): State<AppState>,
    Path(session): Path<String>,
    body: Result<Json<PointBody>, JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    let Json(b) = body?;
    s.node
        .plans()
        .update_live(&session, Position { lat: b.lat, lon: b.lon, accuracy_m: b.accuracy_m })?;
    Ok(StatusCode::NO_CONTENT)
}

async fn track(
    State(s): State<AppState>,
    Path(session): Path<String>,
    q: Result<Query<With>, QueryRejection>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(s.node.plans().track(&with(q)?, &session)?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StopBody {
    session: Option<String>,
    to: Option<String>,
}

async fn stop_live(
    State(s): State<AppState>,
    body: Result<Json<StopBody>, JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    let Json(b) = body?;
    let stopped = s.node.plans().stop_live(b.session.as_deref(), b.to.as_deref())?;
    Ok(Json(json!({ "stopped": stopped })))
}
