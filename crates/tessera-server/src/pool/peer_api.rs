//! `/v1/peer/*` (Raft RPCs, reports, hello) and `/v1/admin/*` routes. Every
//! request must name this pool in the `x-tessera-pool` header and, when the
//! config sets `peer_secret`, carry it as a bearer token; others are refused
//! with `wrong_pool` before they reach Raft.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, VoteRequest,
};
use tessera_proto::{ErrorCode, PeerReport, PoolFileUpdate, POOL_HEADER};

use super::types::{NodeId, TypeConfig};
use crate::http::{ApiError, JsonBody};
use crate::refusal::Refusal;
use crate::App;

/// Largest peer request body (a pool file with many codes, a batch of log entries).
pub const PEER_BODY_BYTES_MAX: usize = 32 * 1024 * 1024;

pub fn routes(app: Arc<App>) -> Router<Arc<App>> {
    let router = if super::test_faults_enabled() {
        tracing::warn!(
            "{} is set: the test fault switch is on",
            super::TEST_FAULTS_ENV
        );
        Router::new().route("/v1/test/partition", post(partition))
    } else {
        Router::new()
    };
    router
        .route("/v1/peer/raft/append", post(append))
        .route("/v1/peer/raft/vote", post(vote))
        .route("/v1/peer/raft/snapshot", post(snapshot))
        .route("/v1/peer/hello", get(hello))
        .route("/v1/peer/report", post(report))
        .route("/v1/peer/first-pool-file", post(first_pool_file))
        .route("/v1/peer/borrow", post(borrow))
        .route("/v1/peer/command", post(command))
        .route("/v1/admin/pool-file", post(update_pool_file))
        .route("/v1/admin/distribution", post(set_distribution))
        .route("/v1/admin/license", post(add_license))
        .route("/v1/admin/license/remove", post(remove_license))
        .layer(axum::extract::DefaultBodyLimit::max(PEER_BODY_BYTES_MAX))
        .layer(axum::middleware::from_fn_with_state(app, check_pool))
}

async fn check_pool(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    if app.pool.is_partitioned() && request.uri().path().starts_with("/v1/peer/") {
        let message = "cut off by the test fault switch";
        return ApiError(Refusal::new(ErrorCode::Internal, message)).into_response();
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
        return ApiError(Refusal::new(ErrorCode::WrongPool, message)).into_response();
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
            return ApiError(Refusal::new(ErrorCode::WrongPool, message)).into_response();
        }
    }
    next.run(request).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn append(
    State(app): State<Arc<App>>,
    JsonBody(request): JsonBody<AppendEntriesRequest<TypeConfig>>,
) -> Result<Response, ApiError> {
    let term = request.vote.leader_id().term;
    app.pool
        .answers_leader(term)
        .map_err(|message| ApiError(Refusal::new(ErrorCode::NoQuorum, message)))?;
    // Only an index committed in the leader's own term covers every entry
    // committed before it: the target of a server catching up.
    let committed = request
        .leader_commit
        .filter(|id| id.leader_id.term == term)
        .map(|id| id.index);
    let answer = app.pool.raft.append_entries(request).await;
    if let (Ok(AppendEntriesResponse::Success), Some(committed)) = (&answer, committed) {
        app.pool.leader_committed(committed);
    }
    app.pool.check_caught_up().await;
    Ok(Json(answer).into_response())
}

async fn vote(
    State(app): State<Arc<App>>,
    JsonBody(request): JsonBody<VoteRequest<NodeId>>,
) -> Result<Response, ApiError> {
    if app.pool.refuses_votes().await {
        return Err(ApiError(Refusal::new(
            ErrorCode::NoQuorum,
            format!(
                "server `{}` lost its pool log and does not vote until it has caught up",
                app.pool.server_id
            ),
        )));
    }
    Ok(Json(app.pool.raft.vote(request).await).into_response())
}

async fn snapshot(
    State(app): State<Arc<App>>,
    JsonBody(request): JsonBody<InstallSnapshotRequest<TypeConfig>>,
) -> Result<Response, ApiError> {
    app.pool
        .answers_leader(request.vote.leader_id().term)
        .map_err(|message| ApiError(Refusal::new(ErrorCode::NoQuorum, message)))?;
    Ok(Json(app.pool.raft.install_snapshot(request).await).into_response())
}

async fn hello(State(app): State<Arc<App>>) -> impl IntoResponse {
    Json(app.pool.hello())
}

async fn report(
    State(app): State<Arc<App>>,
    JsonBody(report): JsonBody<PeerReport>,
) -> Result<Json<tessera_proto::PeerReportAck>, ApiError> {
    Ok(Json(app.pool.handle_report(report).await?))
}

async fn first_pool_file(
    State(app): State<Arc<App>>,
    JsonBody(update): JsonBody<PoolFileUpdate>,
) -> Result<Json<tessera_proto::PoolFileInstalled>, ApiError> {
    Ok(Json(app.pool.install_first_pool_file(update.text).await?))
}

async fn update_pool_file(
    State(app): State<Arc<App>>,
    JsonBody(update): JsonBody<PoolFileUpdate>,
) -> Result<Json<tessera_proto::PoolFileInstalled>, ApiError> {
    Ok(Json(app.pool.update_pool_file(update.text).await?))
}

async fn borrow(
    State(app): State<Arc<App>>,
    JsonBody(ask): JsonBody<tessera_proto::BorrowAsk>,
) -> Result<Json<tessera_proto::BorrowAnswer>, ApiError> {
    Ok(Json(app.lead_borrow(ask).await?))
}

/// A server's answer to a request for its seats, or its drain; only the
/// commands a server may propose for itself are taken.
async fn command(
    State(app): State<Arc<App>>,
    JsonBody(ask): JsonBody<super::PeerCommand>,
) -> Result<Json<tessera_core::ControlOutcome>, ApiError> {
    use tessera_core::ControlCommand;
    let own = match &ask.command {
        ControlCommand::Release {
            feature,
            request_id,
            ..
        } => app
            .pool
            .applied
            .borrow()
            .state
            .allocation(feature)
            .and_then(|a| a.requests.get(request_id))
            .is_none_or(|r| r.donor == ask.server_id),
        ControlCommand::Drain { server, .. } => server == &ask.server_id,
        _ => false,
    };
    if !own {
        return Err(ApiError(Refusal::new(
            ErrorCode::MalformedRequest,
            format!(
                "server `{}` may propose only its own releases and drains",
                ask.server_id
            ),
        )));
    }
    if !app.pool.is_leader() {
        return Err(ApiError(Refusal::new(
            ErrorCode::NoLeader,
            format!("server `{}` is not the leader", app.pool.server_id),
        )));
    }
    Ok(Json(app.pool.commit(ask.command).await?))
}

async fn set_distribution(
    State(app): State<Arc<App>>,
    JsonBody(change): JsonBody<tessera_proto::SetDistribution>,
) -> Result<Json<tessera_proto::PoolFileInstalled>, ApiError> {
    Ok(Json(
        app.pool
            .admin_change(super::admin::AdminChange::Distribution(change))
            .await?,
    ))
}

async fn add_license(
    State(app): State<Arc<App>>,
    JsonBody(change): JsonBody<tessera_proto::AddLicense>,
) -> Result<Json<tessera_proto::PoolFileInstalled>, ApiError> {
    Ok(Json(
        app.pool
            .admin_change(super::admin::AdminChange::AddLicense(change))
            .await?,
    ))
}

async fn remove_license(
    State(app): State<Arc<App>>,
    JsonBody(change): JsonBody<tessera_proto::RemoveLicense>,
) -> Result<Json<tessera_proto::PoolFileInstalled>, ApiError> {
    Ok(Json(
        app.pool
            .admin_change(super::admin::AdminChange::RemoveLicense(change))
            .await?,
    ))
}

/// Test-only: `{"on": true}` cuts every peer link of this server, both ways.
#[derive(serde::Deserialize)]
struct PartitionSwitch {
    on: bool,
}

async fn partition(
    State(app): State<Arc<App>>,
    JsonBody(switch): JsonBody<PartitionSwitch>,
) -> Json<bool> {
    app.pool.set_partitioned(switch.on);
    tracing::warn!("test fault switch: partitioned = {}", switch.on);
    Json(switch.on)
}
