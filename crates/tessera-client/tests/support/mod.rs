//! A fake pool of Tessera servers on loopback: each answers checkouts,
//! heartbeats and check-ins from a mode the test sets, and counts what it saw.
//! Like a real pool, it answers every grant with a proof ([`proof_of`]) and
//! refuses a heartbeat or check-in without it (`grant_proof_invalid`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tessera_client::ClientConfig;
use tessera_proto::{
    CheckinRequest, CheckinResponse, CheckoutRequest, ErrorBody, ErrorCode, ErrorDetail, Grant,
    HeartbeatRequest, Proof, ServerInfo, ServerStatus, StatusResponse,
};
use tokio::task::JoinHandle;

/// How a fake server answers one kind of request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Serve,
    Refuse(ErrorCode),
}

pub struct FakeServer {
    pub id: String,
    pub address: String,
    lease_ms: u64,
    heartbeat_interval_ms: u64,
    servers: Vec<ServerInfo>,
    checkout_mode: Mutex<Mode>,
    heartbeat_mode: Mutex<Mode>,
    answer_delay: Mutex<Duration>,
    /// grant id -> seats, the server's key table.
    held: Mutex<HashMap<String, u32>>,
    checkouts: AtomicU32,
    heartbeats: AtomicU32,
    checkins: AtomicU32,
    grants_issued: AtomicU32,
    /// Heartbeats and check-ins refused for a missing or wrong proof.
    proofs_refused: AtomicU32,
}

/// The proof every server of the fake pool answers for `grant_id` (a real
/// pool's is an HMAC under the pool key; any server can check it).
pub fn proof_of(grant_id: &str) -> Proof {
    Proof(format!("proof-of-{grant_id}"))
}

impl FakeServer {
    pub fn set_checkout(&self, mode: Mode) {
        *self.checkout_mode.lock().unwrap() = mode;
    }

    pub fn set_heartbeat(&self, mode: Mode) {
        *self.heartbeat_mode.lock().unwrap() = mode;
    }

    pub fn set_answer_delay(&self, delay: Duration) {
        *self.answer_delay.lock().unwrap() = delay;
    }

    pub fn checkouts(&self) -> u32 {
        self.checkouts.load(Ordering::SeqCst)
    }

    pub fn heartbeats(&self) -> u32 {
        self.heartbeats.load(Ordering::SeqCst)
    }

    pub fn checkins(&self) -> u32 {
        self.checkins.load(Ordering::SeqCst)
    }

    pub fn proofs_refused(&self) -> u32 {
        self.proofs_refused.load(Ordering::SeqCst)
    }

    /// The refusal of a request whose proof is not the grant's, if it is not.
    fn proof_refusal(&self, grant_id: &str, proof: &Proof) -> Option<Response> {
        if *proof == proof_of(grant_id) {
            return None;
        }
        self.proofs_refused.fetch_add(1, Ordering::SeqCst);
        Some(refusal(ErrorCode::GrantProofInvalid, self))
    }

    pub fn holds(&self, grant_id: &str) -> bool {
        self.held.lock().unwrap().contains_key(grant_id)
    }

    fn grant(&self, grant_id: String, count: u32, feature: String, converted: bool) -> Grant {
        self.held.lock().unwrap().insert(grant_id.clone(), count);
        let proof = proof_of(&grant_id);
        Grant {
            grant_id: grant_id.into(),
            feature: feature.into(),
            count,
            server_id: self.id.as_str().into(),
            lease_ms: self.lease_ms,
            heartbeat_interval_ms: self.heartbeat_interval_ms,
            servers: self.servers.clone().into(),
            converted,
            proof,
            holding: None,
            certificate: None,
            answer: None,
        }
    }

    async fn delay(&self) {
        let delay = *self.answer_delay.lock().unwrap();
        tokio::time::sleep(delay).await;
    }
}

/// Fake servers listening on loopback until dropped.
pub struct Pool {
    pub servers: Vec<Arc<FakeServer>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Pool {
    /// Servers named by `ids`, in priority order, all serving.
    pub async fn start(ids: &[&str], lease_ms: u64, heartbeat_interval_ms: u64) -> Pool {
        let mut listeners = Vec::new();
        let mut infos = Vec::new();
        for id in ids {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            infos.push(ServerInfo {
                id: id.to_string(),
                address: listener.local_addr().unwrap().to_string(),
            });
            listeners.push(listener);
        }
        let mut servers = Vec::new();
        let mut tasks = Vec::new();
        for (listener, info) in listeners.into_iter().zip(&infos) {
            let server = Arc::new(FakeServer {
                id: info.id.clone(),
                address: info.address.clone(),
                lease_ms,
                heartbeat_interval_ms,
                servers: infos.clone(),
                checkout_mode: Mutex::new(Mode::Serve),
                heartbeat_mode: Mutex::new(Mode::Serve),
                answer_delay: Mutex::new(Duration::ZERO),
                held: Mutex::new(HashMap::new()),
                checkouts: AtomicU32::new(0),
                heartbeats: AtomicU32::new(0),
                checkins: AtomicU32::new(0),
                grants_issued: AtomicU32::new(0),
                proofs_refused: AtomicU32::new(0),
            });
            let router = Router::new()
                .route("/v1/checkout", post(checkout))
                .route("/v1/heartbeat", post(heartbeat))
                .route("/v1/checkin", post(checkin))
                .route("/v1/status", get(status))
                .with_state(server.clone());
            tasks.push(tokio::spawn(async move {
                axum::serve(listener, router).await.unwrap();
            }));
            servers.push(server);
        }
        Pool { servers, tasks }
    }

    pub fn server(&self, id: &str) -> &FakeServer {
        self.servers.iter().find(|s| s.id == id).unwrap()
    }

    pub fn address(&self, id: &str) -> String {
        self.server(id).address.clone()
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// A loopback address nothing listens on: connections are refused at once.
pub fn dead_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// A client configuration for these addresses, with timeouts short enough
/// for tests.
pub fn config(addresses: &[String]) -> ClientConfig {
    let mut config = ClientConfig::new(addresses.iter().cloned());
    config.request_timeout = Duration::from_millis(500);
    config.connect_timeout = Duration::from_millis(200);
    // The mock servers speak plain HTTP on loopback.
    config.tls = tessera_client::ClientTls::Plain;
    // The mock servers sign nothing; the SDK's checks of signed answers
    // have tests of their own (`trust`).
    config.trust = tessera_client::Trust::AnyServer;
    config.clock_file = None;
    config
}

/// Waits until `condition` holds, failing the test after a bound.
pub async fn eventually(what: &str, condition: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn refusal(code: ErrorCode, server: &FakeServer) -> Response {
    let status = StatusCode::from_u16(code.http_status()).unwrap();
    let body = ErrorBody {
        error: ErrorDetail {
            code,
            message: format!("{} refuses: {code}", server.id),
            queue: None,
        },
        answer: None,
    };
    (status, Json(body)).into_response()
}

/// Counts a request in `count`, waits the server's delay, and answers the
/// refusal `mode` asks for, if any.
async fn arrive(
    server: &FakeServer,
    count: &AtomicU32,
    mode: &Mutex<Mode>,
) -> Result<(), Response> {
    count.fetch_add(1, Ordering::SeqCst);
    server.delay().await;
    let mode = *mode.lock().unwrap();
    match mode {
        Mode::Refuse(code) => Err(refusal(code, server)),
        Mode::Serve => Ok(()),
    }
}

async fn checkout(
    State(server): State<Arc<FakeServer>>,
    Json(request): Json<CheckoutRequest>,
) -> Result<Response, Response> {
    arrive(&server, &server.checkouts, &server.checkout_mode).await?;
    let number = server.grants_issued.fetch_add(1, Ordering::SeqCst);
    let grant_id = format!("{}-g{number}", server.id);
    Ok(
        Json(server.grant(grant_id, request.count, request.feature.to_string(), false))
            .into_response(),
    )
}

async fn heartbeat(
    State(server): State<Arc<FakeServer>>,
    Json(request): Json<HeartbeatRequest>,
) -> Result<Json<Grant>, Response> {
    arrive(&server, &server.heartbeats, &server.heartbeat_mode).await?;
    if let Some(refused) = server.proof_refusal(&request.grant_id, &request.proof) {
        return Err(refused);
    }
    let converted = !server.holds(&request.grant_id);
    Ok(Json(server.grant(
        request.grant_id.to_string(),
        request.count,
        request.feature.to_string(),
        converted,
    )))
}

async fn checkin(
    State(server): State<Arc<FakeServer>>,
    Json(request): Json<CheckinRequest>,
) -> Response {
    server.checkins.fetch_add(1, Ordering::SeqCst);
    if let Some(refused) = server.proof_refusal(&request.grant_id, &request.proof) {
        return refused;
    }
    let released = server
        .held
        .lock()
        .unwrap()
        .remove(request.grant_id.as_str());
    match released {
        Some(released_seats) => Json(CheckinResponse { released_seats }).into_response(),
        None => refusal(ErrorCode::UnknownGrant, &server),
    }
}

async fn status(State(server): State<Arc<FakeServer>>) -> Json<StatusResponse> {
    Json(StatusResponse {
        pool_id: "fake-pool".to_string(),
        pool_sequence: 1,
        server: ServerStatus {
            id: server.id.clone(),
            address: server.address.clone(),
            role: "leader".to_string(),
            leader_id: Some(server.id.clone()),
            state: "serving".to_string(),
            software_version: "test".to_string(),
            uptime_ms: 0,
            grace_remaining_ms: None,
            state_reason: None,
            store_sync: None,
            hostid: "test".to_string(),
            vid: None,
        },
        servers: Vec::new(),
        features: Vec::new(),
        grants: Vec::new(),
        grants_total: 0,
        pool_wide: false,
        unanswered: Vec::new(),
    })
}
