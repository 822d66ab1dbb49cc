//! The `/v1` HTTP/JSON API: request parsing, validation, error mapping.
//!
//! Every error leaves here as `{"error": {"code", "message"}}` with the HTTP
//! status of [`ErrorCode::http_status`]; nothing a client sends can make a
//! handler panic.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use tessera_proto::{
    self as proto, CheckinRequest, CheckinResponse, CheckoutRequest, ErrorCode, HeartbeatRequest,
    MAX_BODY_BYTES, MAX_FIELD_BYTES, MAX_SEATS_PER_REQUEST,
};

use crate::issuer::{Issued, SeatRequest};
use crate::refusal::Refusal;
use crate::App;

/// An error answer.
pub struct ApiError(pub Refusal);

impl From<Refusal> for ApiError {
    fn from(err: Refusal) -> ApiError {
        ApiError(err)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = proto::ErrorBody {
            error: proto::ErrorDetail {
                code: self.0.code,
                message: self.0.message,
            },
        };
        (status, Json(body)).into_response()
    }
}

fn api_error(code: ErrorCode, message: impl Into<String>) -> ApiError {
    ApiError(Refusal::new(code, message))
}

/// A JSON body parsed by us, so that every failure gets a stable code.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    api_error(
                        ErrorCode::BodyTooLarge,
                        format!("request body is larger than {MAX_BODY_BYTES} bytes"),
                    )
                } else {
                    api_error(ErrorCode::MalformedRequest, rejection.body_text())
                }
            })?;
        serde_json::from_slice(&bytes).map(JsonBody).map_err(|err| {
            api_error(
                ErrorCode::MalformedRequest,
                format!("request body is not the JSON this endpoint takes: {err}"),
            )
        })
    }
}

pub fn router(app: Arc<App>) -> Router {
    let prefix = proto::API_PREFIX;
    Router::new()
        .route(&format!("{prefix}/checkout"), post(checkout))
        .route(&format!("{prefix}/heartbeat"), post(heartbeat))
        .route(&format!("{prefix}/checkin"), post(checkin))
        .route(&format!("{prefix}/status"), get(status))
        .route(&format!("{prefix}/noop"), post(noop))
        .route("/metrics", get(metrics))
        .merge(crate::pool::peer_api::routes(app.clone()))
        .fallback(|| async {
            api_error(
                ErrorCode::NotFound,
                format!(
                    "no such endpoint; the API lives under {}",
                    proto::API_PREFIX
                ),
            )
        })
        .method_not_allowed_fallback(|| async {
            api_error(
                ErrorCode::MethodNotAllowed,
                "this endpoint does not take that method",
            )
        })
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            app.limits.requests_in_flight_max,
        ))
        .with_state(app)
}

/// The protocol's ceiling, for benchmarks: parses a checkout request with
/// the same extractor and answers a grant-shaped body of the same size class,
/// without the issuer, the store or the clock. Nothing is issued.
async fn noop(JsonBody(body): JsonBody<CheckoutRequest>) -> Json<proto::Grant> {
    Json(proto::Grant {
        grant_id: "00000000000000000000000000000000".to_string(),
        feature: body.feature,
        count: body.count,
        server_id: "noop".to_string(),
        lease_ms: 0,
        heartbeat_interval_ms: 0,
        servers: Vec::new(),
        converted: false,
    })
}

async fn checkout(
    State(app): State<Arc<App>>,
    JsonBody(body): JsonBody<CheckoutRequest>,
) -> Result<Json<proto::Grant>, ApiError> {
    let deadline = Deadline::from(&app, body.answer_within_ms);
    let request = seat_request(body, 0)?;
    let grant_id = (app.grant_ids)();
    let (feature, count) = (request.feature.clone(), request.count);
    let wait = app.seat_wait(deadline.answer_within_ms);
    let issued = app
        .with_borrowing(&feature, count, wait, |app| {
            app.issuer().checkout(
                grant_id.clone(),
                request.clone(),
                app.clock.now_ms(),
                app.clock.unix_ms(),
                false,
            )
        })
        .await;
    app.answer("checkout", issued, deadline).await
}

async fn heartbeat(
    State(app): State<Arc<App>>,
    JsonBody(body): JsonBody<HeartbeatRequest>,
) -> Result<Json<proto::Grant>, ApiError> {
    check_field("grant_id", &body.grant_id)?;
    let deadline = Deadline::from(&app, body.answer_within_ms);
    let request = seat_request(body.as_checkout(), body.renewal)?;
    let (feature, count) = (request.feature.clone(), request.count);
    let wait = app.seat_wait(deadline.answer_within_ms);
    let issued = app
        .with_borrowing(&feature, count, wait, |app| {
            app.issuer().heartbeat(
                body.grant_id.clone(),
                request.clone(),
                app.clock.now_ms(),
                app.clock.unix_ms(),
            )
        })
        .await;
    app.answer("heartbeat", issued, deadline).await
}

async fn checkin(
    State(app): State<Arc<App>>,
    JsonBody(body): JsonBody<CheckinRequest>,
) -> Result<Json<CheckinResponse>, ApiError> {
    check_field("grant_id", &body.grant_id)?;
    check_field("client_id", &body.client_id)?;
    let result = app
        .issuer()
        .checkin(&body.grant_id, &body.client_id)
        .map_err(ApiError);
    app.count("checkin", &result);
    let released = result?;
    let released_seats = released.seats;
    // Copies on other servers (from before a fail-over) go too.
    app.supersede(&released.grant_id, proto::SupersededGrant::CHECKED_IN);
    app.released(vec![released]).await;
    Ok(Json(CheckinResponse { released_seats }))
}

async fn metrics(State(app): State<Arc<App>>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        app.metrics(),
    )
}

async fn status(State(app): State<Arc<App>>) -> Json<proto::StatusResponse> {
    Json(app.status())
}

impl App {
    /// Counts a request by endpoint and outcome (`ok` or the error code).
    fn count<T>(&self, endpoint: &'static str, result: &Result<T, ApiError>) {
        let outcome = match result {
            Ok(_) => "ok",
            Err(ApiError(err)) => err.code.as_str(),
        };
        let mut counts = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        *counts.entry((endpoint, outcome)).or_default() += 1;
    }

    /// Persists an issued grant (if new), counts the outcome, answers.
    async fn answer(
        &self,
        endpoint: &'static str,
        issued: Result<Issued, Refusal>,
        deadline: Deadline,
    ) -> Result<Json<proto::Grant>, ApiError> {
        let result = match issued {
            Ok(issued) => self.persist(issued, deadline).await,
            Err(err) => Err(ApiError(err)),
        };
        self.count(endpoint, &result);
        result.map(Json)
    }

    /// Makes a new grant durable before it is answered; undoes it if that
    /// fails, or if the client has stopped waiting by then. Once the grant
    /// stands, the pool is told of the copies it makes stale.
    async fn persist(&self, issued: Issued, deadline: Deadline) -> Result<proto::Grant, ApiError> {
        if let Some(stored) = issued.to_store {
            if let Err(err) = self.store.put(issued.grant_id.clone(), stored).await {
                self.issuer().rollback(&issued.grant_id);
                return Err(api_error(
                    ErrorCode::Internal,
                    format!("the grant could not be stored durably, so it was not issued: {err}"),
                ));
            }
            if let Some(late_ms) = deadline.passed_by_ms(self.clock.now_ms()) {
                // No seat for a client that has given up: it would hold
                // seats nobody uses for a whole lease.
                let undone = self.issuer().rollback(&issued.grant_id);
                self.released(undone.into_iter().collect()).await;
                return Err(api_error(
                    ErrorCode::NoSeatsAvailable,
                    format!(
                        "the seats were found {late_ms} ms after the client stopped waiting; \
                         they were given back"
                    ),
                ));
            }
        }
        if let Some(renewal) = issued.supersedes_renewal {
            self.supersede(&issued.grant_id, renewal);
        }
        Ok(issued.grant)
    }
}

/// When a request arrived and how long its client waits for the answer.
#[derive(Clone, Copy, Debug)]
struct Deadline {
    received_ms: u64,
    answer_within_ms: Option<u32>,
}

impl Deadline {
    fn from(app: &App, answer_within_ms: Option<u32>) -> Deadline {
        Deadline {
            received_ms: app.clock.now_ms(),
            answer_within_ms,
        }
    }

    /// By how much the client's wait has run out at `now_ms`, if it has. The
    /// client started waiting before the request arrived, so this is never
    /// early.
    fn passed_by_ms(&self, now_ms: u64) -> Option<u64> {
        let elapsed_ms = now_ms.saturating_sub(self.received_ms);
        let within_ms = u64::from(self.answer_within_ms?);
        (elapsed_ms > within_ms).then(|| elapsed_ms - within_ms)
    }
}

fn seat_request(body: CheckoutRequest, renewal: u64) -> Result<SeatRequest, ApiError> {
    let CheckoutRequest {
        client_id,
        user,
        host,
        feature,
        version,
        count,
        answer_within_ms: _,
    } = body;
    check_field("client_id", &client_id)?;
    check_field("user", &user)?;
    check_field("host", &host)?;
    check_field("feature", &feature)?;
    check_field("version", &version)?;
    if count == 0 || count > MAX_SEATS_PER_REQUEST {
        return Err(api_error(
            ErrorCode::InvalidCount,
            format!("count is {count}; it must be 1 to {MAX_SEATS_PER_REQUEST}"),
        ));
    }
    Ok(SeatRequest {
        client_id,
        user,
        host,
        feature,
        version,
        count,
        renewal,
    })
}

fn check_field(name: &str, value: &str) -> Result<(), ApiError> {
    if value.is_empty() || value.len() > MAX_FIELD_BYTES {
        return Err(api_error(
            ErrorCode::InvalidField,
            format!(
                "{name} must be 1 to {MAX_FIELD_BYTES} bytes; it is {}",
                value.len()
            ),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(api_error(
            ErrorCode::InvalidField,
            format!("{name} contains control characters"),
        ));
    }
    Ok(())
}
