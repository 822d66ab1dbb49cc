//! Peer transport: HTTP/JSON to other servers of the pool under `/v1/peer`,
//! every request naming the pool (and carrying the pool's secret, if set).
//! It also carries openraft's RPCs.

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

#[derive(Clone)]
pub struct PeerClient {
    http: reqwest::Client,
    /// The test fault switch ([`super::Pool::set_partitioned`]).
    partitioned: Arc<AtomicBool>,
    pool_id: String,
    server_id: String,
    secret: Option<String>,
}

impl PeerClient {
    pub fn new(pool_id: String, server_id: String, secret: Option<String>) -> PeerClient {
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(PEER_TIMEOUT)
            .timeout(PEER_TIMEOUT)
            .pool_max_idle_per_host(4)
            .tcp_nodelay(true)
            .build()
            .expect("a plain HTTP client always builds");
        PeerClient {
            http,
            partitioned: Arc::new(AtomicBool::new(false)),
            pool_id,
            server_id,
            secret,
        }
    }

    pub fn partitioned(&self) -> Arc<AtomicBool> {
        self.partitioned.clone()
    }

    fn request(&self, builder: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let builder = builder
            .header(POOL_HEADER, &self.pool_id)
            .header(PEER_HEADER, &self.server_id);
        match &self.secret {
            Some(secret) => builder.bearer_auth(secret),
            None => builder,
        }
    }

    pub async fn post<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        address: &str,
        path: &str,
        body: &Req,
        timeout: Duration,
    ) -> Result<Resp, PeerError> {
        let url = format!("http://{address}{path}");
        let builder = self.request(self.http.post(url).json(body).timeout(timeout));
        self.finish(address, builder).await
    }

    pub async fn get<Resp: DeserializeOwned>(
        &self,
        address: &str,
        path: &str,
    ) -> Result<Resp, PeerError> {
        let url = format!("http://{address}{path}");
        let builder = self.request(self.http.get(url));
        self.finish(address, builder).await
    }

    async fn finish<Resp: DeserializeOwned>(
        &self,
        address: &str,
        builder: reqwest::RequestBuilder,
    ) -> Result<Resp, PeerError> {
        if self.partitioned.load(Ordering::SeqCst) {
            return Err(PeerError::Unreachable {
                address: address.to_string(),
                message: "cut off by the test fault switch".into(),
            });
        }
        let response = builder.send().await.map_err(|err| {
            let message = err.to_string();
            if err.is_connect() || err.is_timeout() {
                PeerError::Unreachable {
                    address: address.to_string(),
                    message,
                }
            } else {
                PeerError::Failed {
                    address: address.to_string(),
                    message,
                }
            }
        })?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|err| PeerError::Failed {
            address: address.to_string(),
            message: err.to_string(),
        })?;
        if bytes.len() > PEER_ANSWER_BYTES_MAX {
            return Err(PeerError::Failed {
                address: address.to_string(),
                message: format!("answer of {} bytes is too large", bytes.len()),
            });
        }
        if !status.is_success() {
            return Err(match serde_json::from_slice::<ErrorBody>(&bytes) {
                Ok(body) => PeerError::Refused {
                    code: body.error.code,
                    message: body.error.message,
                },
                Err(_) => PeerError::Failed {
                    address: address.to_string(),
                    message: format!("HTTP {status}"),
                },
            });
        }
        serde_json::from_slice(&bytes).map_err(|err| PeerError::Failed {
            address: address.to_string(),
            message: format!("unreadable answer: {err}"),
        })
    }
}

/// openraft's view of the peer transport.
pub struct Network {
    pub peers: PeerClient,
}

pub struct Connection {
    peers: PeerClient,
    target: NodeId,
    address: String,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> Connection {
        Connection {
            peers: self.peers.clone(),
            target,
            address: node.addr.clone(),
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
        Resp: DeserializeOwned,
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
        self.rpc("/v1/peer/raft/vote", &request, &option).await
    }
}
