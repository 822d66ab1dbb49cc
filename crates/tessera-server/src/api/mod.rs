//! The HTTP/JSON API: the router, the one error answer, the JSON extractor.
//!
//! Every error leaves here as `{"error": {"code", "message"}}` with the HTTP
//! status of [`ErrorCode::http_status`]; nothing a client sends can make a
//! handler panic. Handlers only parse, call the request service or the pool,
//! and map the answer:
//!
//! - [`client`]: `/v1/checkout`, `/v1/heartbeat`, `/v1/checkin`, `/v1/status`,
//!   `/v1/noop`, `/metrics`;
//! - [`peer`]: `/v1/peer/*`, what servers of one pool say to each other;
//! - [`admin`]: `/v1/admin/*`, the administrator's changes.
//!
//! Peer and admin routes pass [`pool_guard`] first.

pub mod admin;
pub mod client;
pub mod peer;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use tessera_proto::{self as proto, ErrorCode, MAX_BODY_BYTES, POOL_HEADER};

use crate::refusal::Refusal;
use crate::App;

/// Largest peer or admin request body (a pool file with many codes, a batch
/// of log entries).
pub const PEER_BODY_BYTES_MAX: usize = 32 * 1024 * 1024;

/// Longest a request body may take to arrive
/// ([`tessera_proto::BODY_READ_TIMEOUT_MS`]).
pub const BODY_READ_TIMEOUT: Duration = Duration::from_millis(proto::BODY_READ_TIMEOUT_MS);

/// An error answer.
pub struct ApiError(pub Refusal);

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> ApiError {
        ApiError(refusal)
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
        let mut response = (status, Json(body)).into_response();
        if self.0.code == ErrorCode::BodyTimeout {
            // The rest of the body may still be on its way: the connection
            // cannot carry another request.
            response.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
        }
        response
    }
}

pub(crate) fn api_error(code: ErrorCode, message: impl Into<String>) -> ApiError {
    ApiError(Refusal::new(code, message))
}

/// A JSON body parsed by us, so that every failure gets a stable code. The
/// whole body must arrive within [`BODY_READ_TIMEOUT`].
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let read = tokio::time::timeout(BODY_READ_TIMEOUT, Bytes::from_request(request, state));
        let bytes = read
            .await
            .map_err(|_| {
                api_error(
                    ErrorCode::BodyTimeout,
                    format!(
                        "the request body did not arrive within {} ms",
                        BODY_READ_TIMEOUT.as_millis()
                    ),
                )
            })?
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
    let pool_routes = peer::routes()
        .merge(admin::routes())
        .layer(axum::extract::DefaultBodyLimit::max(PEER_BODY_BYTES_MAX))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            pool_guard,
        ));
    client::routes()
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .merge(pool_routes)
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
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            app.limits.requests_in_flight_max,
        ))
        .with_state(app)
}

/// Peer and admin requests must name this pool in the `x-tessera-pool`
/// header and, when the config sets `peer_secret`, carry it as a bearer
/// token; others are refused with `wrong_pool` before they reach Raft.
async fn pool_guard(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    if app.pool.is_partitioned() && request.uri().path().starts_with("/v1/peer/") {
        let message = "cut off by the test fault switch";
        return api_error(ErrorCode::Internal, message).into_response();
    }
    let pool_id = &app.pool.pool_id;
    let named = request
        .headers()
        .get(POOL_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if named != pool_id {
        let message = format!(
            "this server belongs to pool `{pool_id}`; the request names pool `{named}` \
             (header {POOL_HEADER})"
        );
        return api_error(ErrorCode::WrongPool, message).into_response();
    }
    if let Some(secret) = &app.peer_secret {
        let given = request
            .headers()
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !constant_time_eq(given.as_bytes(), secret.as_bytes()) {
            let message = "the request does not carry this pool's peer_secret";
            return api_error(ErrorCode::WrongPool, message).into_response();
        }
    }
    next.run(request).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
