//! Peer transport: HTTP/JSON over TLS to other servers of the pool under
//! `/v1/peer`, every request naming the pool and this server, and carrying
//! this server's peer credential.
//! It also carries openraft's RPCs. Every request goes through an
//! [`HttpTransport`]: [`peer_transport`] in programs, the simulator's own
//! network in `tessera-sim`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::AnyError;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tessera_proto::{ErrorBody, PEER_HEADER, POOL_HEADER};
use tessera_transport::{
    HttpRequest, HttpTransport, Method, ReqwestOptions, ReqwestTransport, TransportError,
    TransportTls,
};

use super::bounds::Bounded;
use crate::config::Security;

use super::types::{Node, NodeId, TypeConfig};

/// Longest any peer request may take.
pub const PEER_TIMEOUT: Duration = Duration::from_millis(1_000);
/// Largest peer answer read, in bytes.
const PEER_ANSWER_BYTES_MAX: usize = 32 * 1024 * 1024;

/// Why a peer request failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("{address} is unreachable: {message}")]
    Unreachable { address: String, message: String },
    #[error("{address} failed: {message}")]
    Failed { address: String, message: String },
    #[error("{message}")]
    Refused {
        code: tessera_proto::ErrorCode,
        message: String,
    },
}

/// The production peer transport: HTTP/1.1 over TLS (peers' certificates
/// checked against the pool CA), or plain TCP when the config says
/// `plain_http`; connecting within [`PEER_TIMEOUT`], a few idle connections
/// kept per peer.
pub fn peer_transport(security: &Security) -> Result<Arc<dyn HttpTransport>, String> {
    let tls = match &security.tls {
        Some(files) => TransportTls::from_ca_file(&files.ca_file)?,
        None => TransportTls::Plain,
    };
    let transport = ReqwestTransport::new(ReqwestOptions {
        connect_timeout: PEER_TIMEOUT,
        idle_connections_per_server_max: 4,
        tls,
    })?;
    Ok(Arc::new(transport))
}

/// A plain peer transport, for seams that are replaced before use.
pub fn plain_transport() -> Arc<dyn HttpTransport> {
    let transport = ReqwestTransport::new(ReqwestOptions {
        connect_timeout: PEER_TIMEOUT,
        idle_connections_per_server_max: 4,
        tls: TransportTls::Plain,
    })
    .unwrap_or_else(|message| panic!("a plain HTTP client always builds, yet: {message}"));
    Arc::new(transport)
}

#[derive(Clone)]
pub struct PeerClient {
    transport: Arc<dyn HttpTransport>,
    /// The test fault switch ([`super::Pool::set_partitioned`]).
    partitioned: Arc<AtomicBool>,
    pool_id: String,
    server_id: String,
    credential: String,
}

impl PeerClient {
    pub fn new(
        pool_id: String,
        server_id: String,
        credential: String,
        transport: Arc<dyn HttpTransport>,
    ) -> PeerClient {
        PeerClient {
            transport,
            partitioned: Arc::new(AtomicBool::new(false)),
            pool_id,
            server_id,
            credential,
        }
    }

    pub fn partitioned(&self) -> Arc<AtomicBool> {
        self.partitioned.clone()
    }

    /// The headers every peer request carries: the pool, this server, and
    /// its credential.
    fn headers(&self) -> Vec<(String, String)> {
        vec![
            (POOL_HEADER.to_string(), self.pool_id.clone()),
            (PEER_HEADER.to_string(), self.server_id.clone()),
            (
                "authorization".to_string(),
                format!("Bearer {}", self.credential),
            ),
        ]
    }

    pub async fn post<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        address: &str,
        path: &str,
        body: &Req,
        timeout: Duration,
    ) -> Result<Resp, PeerError> {
        let body = serde_json::to_vec(body).map_err(|err| PeerError::Failed {
            address: address.to_string(),
            message: format!("cannot encode the request: {err}"),
        })?;
        let mut headers = self.headers();
        headers.push(("content-type".to_string(), "application/json".to_string()));
        let request = HttpRequest {
            method: Method::Post,
            address: address.to_string(),
            path: path.to_string(),
            headers,
            body,
            timeout,
            answer_bytes_max: PEER_ANSWER_BYTES_MAX,
        };
        self.finish(request).await
    }

    pub async fn get<Resp: DeserializeOwned>(
        &self,
        address: &str,
        path: &str,
    ) -> Result<Resp, PeerError> {
        let request = HttpRequest {
            method: Method::Get,
            address: address.to_string(),
            path: path.to_string(),
            headers: self.headers(),
            body: Vec::new(),
            timeout: PEER_TIMEOUT,
            answer_bytes_max: PEER_ANSWER_BYTES_MAX,
        };
        self.finish(request).await
    }

    async fn finish<Resp: DeserializeOwned>(
        &self,
        request: HttpRequest,
    ) -> Result<Resp, PeerError> {
        let address = request.address.clone();
        if self.partitioned.load(Ordering::SeqCst) {
            return Err(PeerError::Unreachable {
                address,
                message: "cut off by the test fault switch".into(),
            });
        }
        let answer = self.transport.send(request).await.map_err(|err| {
            let message = err.to_string();
            match err {
                TransportError::Connect(_) | TransportError::Timeout(_) => PeerError::Unreachable {
                    address: address.clone(),
                    message,
                },
                TransportError::TooLarge { .. } | TransportError::Failed(_) => PeerError::Failed {
                    address: address.clone(),
                    message,
                },
            }
        })?;
        if !answer.is_success() {
            return Err(match serde_json::from_slice::<ErrorBody>(&answer.body) {
                Ok(body) => PeerError::Refused {
                    code: body.error.code,
                    message: body.error.message,
                },
                Err(_) => PeerError::Failed {
                    address,
                    message: format!("HTTP {}", answer.status),
                },
            });
        }
        serde_json::from_slice(&answer.body).map_err(|err| PeerError::Failed {
            address,
            message: format!("unreadable answer: {err}"),
        })
    }
}

/// openraft's view of the peer transport.
pub struct Network {
    pub peers: PeerClient,
    /// Told when a peer refuses this server's vote request because the
    /// peer's log is longer (`stand_down.rs`).
    pub behind: Arc<tokio::sync::Notify>,
}

pub struct Connection {
    peers: PeerClient,
    target: NodeId,
    address: String,
    behind: Arc<tokio::sync::Notify>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> Connection {
        Connection {
            peers: self.peers.clone(),
            target,
            address: node.addr.clone(),
            behind: self.behind.clone(),
        }
    }
}

impl Connection {
    async fn rpc<Req, Resp, Err>(
        &self,
        path: &str,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, Node, RaftError<NodeId, Err>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned + Bounded,
        Err: std::error::Error + DeserializeOwned,
    {
        let timeout = option.hard_ttl().min(PEER_TIMEOUT);
        let answer: Result<Resp, RaftError<NodeId, Err>> = self
            .peers
            .post(&self.address, path, request, timeout)
            .await
            .map_err(|err| match err {
                PeerError::Unreachable { .. } => {
                    RPCError::Unreachable(Unreachable::new(&AnyError::error(err.to_string())))
                }
                _ => RPCError::Network(NetworkError::new(&AnyError::error(err.to_string()))),
            })?;
        // A term or index above the limits from a peer is a broken answer,
        // never adopted (see `bounds.rs`).
        answer.check_bounds().map_err(|refusal| {
            RPCError::Network(NetworkError::new(&AnyError::error(format!(
                "{} answered out of range: {refusal}",
                self.address
            ))))
        })?;
        answer.map_err(|err| RPCError::RemoteError(RemoteError::new(self.target, err)))
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        request: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        self.rpc("/v1/peer/raft/append", &request, &option).await
    }

    async fn install_snapshot(
        &mut self,
        request: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, Node, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.rpc("/v1/peer/raft/snapshot", &request, &option).await
    }

    async fn vote(
        &mut self,
        request: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        let answer: VoteResponse<NodeId> =
            self.rpc("/v1/peer/raft/vote", &request, &option).await?;
        if !answer.vote_granted && answer.last_log_id > request.last_log_id {
            self.behind.notify_one();
        }
        Ok(answer)
    }
}
