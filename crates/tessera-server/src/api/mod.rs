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
//! - [`admin`]: `/v1/admin/*`, the administrator's changes;
//! - [`openapi`]: `/v1/openapi.json`, the document of every route but the
//!   peers', generated from the handlers the router serves ([`Documented`]);
//! - [`dashboard`]: `/dashboard`, the read-only web page over `/v1/status`.
//!
//! Every request passes [`auth::identify`] (who is calling, and may they
//! call this route), then [`per_address::limit`] (requests in flight from
//! one source address, servers of the pool apart) first.

pub mod admin;
pub mod auth;
pub mod client;
pub mod dashboard;
pub mod framed;
pub mod openapi;
pub mod peer;
pub mod per_address;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use tessera_proto::{self as proto, ErrorCode, MAX_BODY_BYTES};

use crate::refusal::Refusal;
use crate::App;

/// Largest peer or admin request body (a pool file with many codes, a batch
/// of log entries).
pub const PEER_BODY_BYTES_MAX: usize = 32 * 1024 * 1024;

/// Status and metrics requests in flight at once, apart from the clients'.
pub const MONITORING_REQUESTS_IN_FLIGHT_MAX: usize = 64;

/// Longest a request body may take to arrive
/// ([`tessera_proto::BODY_READ_TIMEOUT_MS`]).
pub const BODY_READ_TIMEOUT: Duration = Duration::from_millis(proto::BODY_READ_TIMEOUT_MS);

/// The largest body a route group takes, as its requests carry it (an
/// extension), so that a refusal names the limit that applied.
#[derive(Clone, Copy, Debug)]
pub struct BodyLimit(pub usize);

impl BodyLimit {
    /// `routes` refusing bodies over this limit, and telling the JSON
    /// extractor which limit that was: one number for both.
    fn apply(self, routes: Router<Arc<App>>) -> Router<Arc<App>> {
        routes
            .layer(axum::extract::DefaultBodyLimit::max(self.0))
            .layer(axum::Extension(self))
    }
}

/// An error answer.
pub struct ApiError(pub Refusal);

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> ApiError {
        ApiError(refusal)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        SignedDenial {
            err: self,
            answer: None,
        }
        .into_response()
    }
}

/// A refusal of a program's checkout or heartbeat, signed over its nonce
/// where it sent one (`crate::answer`).
pub struct SignedDenial {
    pub err: ApiError,
    pub answer: Option<Box<proto::SignedAnswer>>,
}

impl From<ApiError> for SignedDenial {
    fn from(err: ApiError) -> SignedDenial {
        SignedDenial { err, answer: None }
    }
}

impl SignedDenial {
    /// The HTTP status and the error body, as REST and the framed protocol
    /// both answer them.
    pub(crate) fn into_parts(self) -> (StatusCode, proto::ErrorBody) {
        let refusal = self.err.0;
        let status = StatusCode::from_u16(refusal.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = proto::ErrorBody {
            error: proto::ErrorDetail {
                code: refusal.code,
                message: refusal.message,
                queue: refusal.queue,
            },
            answer: self.answer.map(|answer| *answer),
        };
        (status, body)
    }
}

impl IntoResponse for SignedDenial {
    fn into_response(self) -> Response {
        let (status, body) = self.into_parts();
        let code = body.error.code;
        let mut response = (status, Json(body)).into_response();
        if code == ErrorCode::BodyTimeout {
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
        let limit = request
            .extensions()
            .get::<BodyLimit>()
            .map_or(MAX_BODY_BYTES, |limit| limit.0);
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
                        format!("request body is larger than {limit} bytes"),
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

/// A group of routes each of which is in `/v1/openapi.json`: only handlers
/// with a `#[utoipa::path]` go in, through `utoipa_axum::routes!`, which
/// routes each at the path and method its document names. No plain
/// `axum` route can be added, so the group serves nothing undocumented.
pub struct Documented(utoipa_axum::router::OpenApiRouter<Arc<App>>);

impl Documented {
    fn new() -> Documented {
        Documented(utoipa_axum::router::OpenApiRouter::default())
    }

    fn routes(self, routes: utoipa_axum::router::UtoipaMethodRouter<Arc<App>>) -> Documented {
        Documented(self.0.routes(routes))
    }

    fn into_router(self) -> Router<Arc<App>> {
        self.0.split_for_parts().0
    }

    fn into_openapi(self) -> utoipa::openapi::OpenApi {
        self.0.into_openapi()
    }
}

/// Every documented route group, as the router serves them and as
/// [`openapi::openapi`] documents them: both take the groups from here.
pub(crate) struct DocumentedGroups {
    client: Documented,
    monitoring: Documented,
    admin: Documented,
}

impl DocumentedGroups {
    fn new() -> DocumentedGroups {
        DocumentedGroups {
            client: client::routes(),
            monitoring: client::monitoring_routes(),
            admin: admin::routes(),
        }
    }

    fn into_openapi(self) -> utoipa::openapi::OpenApi {
        let DocumentedGroups {
            client,
            monitoring,
            admin,
        } = self;
        let mut document = client.into_openapi();
        document.merge(monitoring.into_openapi());
        document.merge(admin.into_openapi());
        document
    }
}

pub fn router(app: Arc<App>) -> Router {
    let DocumentedGroups {
        client,
        monitoring,
        admin,
    } = DocumentedGroups::new();
    // Peer and admin requests have their own capacity: no number of client
    // requests can starve the pool's own traffic.
    let pool_routes = BodyLimit(PEER_BODY_BYTES_MAX)
        .apply(peer::routes().merge(admin.into_router()))
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            app.limits.peer_requests_in_flight_max,
        ));
    // The framed protocol's requests take their places from the same
    // semaphore (`framed`).
    let client_routes = BodyLimit(MAX_BODY_BYTES).apply(client.into_router()).layer(
        tower::limit::GlobalConcurrencyLimitLayer::with_semaphore(app.client_requests.clone()),
    );
    let monitoring_routes =
        monitoring
            .into_router()
            .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
                MONITORING_REQUESTS_IN_FLIGHT_MAX,
            ));
    client_routes
        .merge(monitoring_routes)
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
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            per_address::limit,
        ))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            auth::identify,
        ))
        .with_state(app)
}
