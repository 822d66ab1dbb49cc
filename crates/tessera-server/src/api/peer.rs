//! Peer routes, `/v1/peer/*`: Raft's messages, quota reports, the first pool
//! file, borrowing, the commands a server proposes for itself, and hello.
//! With `TESSERA_TEST_FAULTS=1`, also the test fault switch.

use std::sync::Arc;

use axum::extract::{Extension, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, VoteRequest,
};
use openraft::Vote;
use tessera_core::{ControlCommand, ControlOutcome};
use tessera_proto::{
    BorrowAnswer, BorrowAsk, ErrorCode, PeerReport, PeerReportAck, PoolFileInstalled,
    PoolFileUpdate,
};

use super::auth::Caller;
use super::{api_error, ApiError, JsonBody};
use crate::pool::bounds::Bounded;
use crate::pool::types::{node_id, NodeId, TypeConfig};
use crate::pool::{self, PeerCommand};
use crate::App;

pub(super) fn routes() -> Router<Arc<App>> {
    let router = if pool::test_faults_enabled() {
        tracing::warn!(
            "{} is set: the test fault switch is on",
            pool::TEST_FAULTS_ENV
        );
        Router::new()
            .route("/v1/test/partition", post(partition))
            .route("/v1/test/control-lag", post(control_lag))
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
        .route("/v1/peer/cosign", post(cosign))
}

/// Refuses a Raft message whose sender (the leader or candidate it names)
/// is not the server that sent it.
fn require_node(caller: &Caller, node: Option<NodeId>) -> Result<(), ApiError> {
    let Caller::Server(sender) = caller else {
        return caller.require_server("");
    };
    if node == Some(node_id(sender)) {
        return Ok(());
    }
    Err(api_error(
        ErrorCode::Forbidden,
        format!("server `{sender}` may send Raft messages only in its own name"),
    ))
}

/// Admits a leader's or a candidate's Raft message: its terms and indexes
/// bounded first (a pure check that keeps nothing), then its sender speaking
/// in its own name, and never in this server's.
fn admit_raft(
    app: &App,
    caller: &Caller,
    request: &impl Bounded,
    vote: &Vote<NodeId>,
) -> Result<(), ApiError> {
    request.check_bounds()?;
    require_node(caller, vote.leader_id().voted_for())?;
    app.pool.from_another_leader(vote.leader_id().node_id)?;
    Ok(())
}

async fn append(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    JsonBody(request): JsonBody<AppendEntriesRequest<TypeConfig>>,
) -> Result<Response, ApiError> {
    admit_raft(&app, &caller, &request, &request.vote)?;
    let term = request.vote.leader_id().term;
    app.pool.answers_leader(term)?;
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
    Extension(caller): Extension<Caller>,
    JsonBody(request): JsonBody<VoteRequest<NodeId>>,
) -> Result<Response, ApiError> {
    admit_raft(&app, &caller, &request, &request.vote)?;
    if app.pool.refuses_votes().await {
        return Err(api_error(
            ErrorCode::NoQuorum,
            format!(
                "server `{}` lost its pool log and does not vote until it has caught up",
                app.pool.server_id
            ),
        ));
    }
    Ok(Json(app.pool.raft.vote(request).await).into_response())
}

async fn snapshot(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    JsonBody(request): JsonBody<InstallSnapshotRequest<TypeConfig>>,
) -> Result<Response, ApiError> {
    admit_raft(&app, &caller, &request, &request.vote)?;
    app.pool.answers_leader(request.vote.leader_id().term)?;
    Ok(Json(app.pool.receive_snapshot(request).await?).into_response())
}

async fn hello(State(app): State<Arc<App>>) -> impl IntoResponse {
    Json(app.pool.hello())
}

async fn report(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    JsonBody(report): JsonBody<PeerReport>,
) -> Result<Json<PeerReportAck>, ApiError> {
    caller.require_server(&report.server_id)?;
    Ok(Json(app.pool.handle_report(report).await?))
}

async fn first_pool_file(
    State(app): State<Arc<App>>,
    JsonBody(update): JsonBody<PoolFileUpdate>,
) -> Result<Json<PoolFileInstalled>, ApiError> {
    Ok(Json(app.pool.install_first_pool_file(update.text).await?))
}

async fn borrow(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    JsonBody(ask): JsonBody<BorrowAsk>,
) -> Result<Json<BorrowAnswer>, ApiError> {
    caller.require_server(&ask.server_id)?;
    Ok(Json(app.lead_borrow(ask).await?))
}

/// Another master of the pool asks this one to co-sign a VID certificate.
async fn cosign(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    JsonBody(ask): JsonBody<tessera_proto::CosignRequest>,
) -> Result<Json<tessera_proto::Cosignature>, ApiError> {
    caller.require_server(&ask.server_id)?;
    let Some(master) = &app.master else {
        return Err(api_error(
            ErrorCode::NotFound,
            format!("server `{}` is not a master server", app.pool.server_id),
        ));
    };
    Ok(Json(master.cosign(&ask.certificate)?))
}

/// A server's answer to a request for its seats, or its drain; only the
/// commands a server may propose for itself are taken.
async fn command(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    JsonBody(ask): JsonBody<PeerCommand>,
) -> Result<Json<ControlOutcome>, ApiError> {
    caller.require_server(&ask.server_id)?;
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
        // A temporary license out of the asker's own allocation, and the
        // extensions and returns it relays for the licenses' devices.
        ControlCommand::Activate { from, .. } => from == &ask.server_id,
        ControlCommand::Extend { .. } | ControlCommand::Return { .. } => true,
        // Claims of its own grants (`crate::claims`).
        ControlCommand::Claim { claim, .. } => claim.server == ask.server_id,
        ControlCommand::Unclaim { server, .. } => server == &ask.server_id,
        _ => false,
    };
    if !own {
        return Err(api_error(
            ErrorCode::MalformedRequest,
            format!(
                "server `{}` may propose only its own releases, drains, activations and claims, \
                 and extensions and returns",
                ask.server_id
            ),
        ));
    }
    if !app.pool.is_leader() {
        return Err(api_error(
            ErrorCode::NoLeader,
            format!("server `{}` is not the leader", app.pool.server_id),
        ));
    }
    Ok(Json(app.pool.commit(ask.command).await?))
}

/// Test-only: `{"on": true}` cuts every peer link of this server, both ways.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
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

/// Test-only: `{"ms": N}` makes this server's issuer take each new control
/// state N ms after the pool applied it, as a server too busy to follow
/// its log at once would; 0 ends it.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ControlLag {
    ms: u64,
}

async fn control_lag(
    State(app): State<Arc<App>>,
    JsonBody(lag): JsonBody<ControlLag>,
) -> Json<u64> {
    app.control_lag_ms
        .store(lag.ms, std::sync::atomic::Ordering::Relaxed);
    tracing::warn!("test fault switch: control states taken {} ms late", lag.ms);
    Json(lag.ms)
}
