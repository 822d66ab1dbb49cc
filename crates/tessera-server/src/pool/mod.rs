//! The pool's control plane: Raft (openraft) over the peer transport, the
//! replicated [`tessera_core::ControlState`], the leader's global picture,
//! and the quota lease (DESIGN.md points 1 and 3).
//!
//! - Every server of the pool file is a Raft voter; a pool of one is a Raft
//!   cluster of one on the same path.
//! - Leader priority: a server's election timeout grows with its rank in the
//!   pool file, so the highest-priority survivor stands first. A returning
//!   server hears the current leader's heartbeats and stays a follower.
//! - Quota lease: every server reports its in-use counts to the leader every
//!   `quota_report_interval_ms`. The leader confirms its leadership with a
//!   quorum (`ensure_linearizable`) before it acknowledges, and names the log
//!   index the sender must have applied. The sender then issues until its own
//!   send time of that report plus `quota_lease_ms`.

pub mod admin;
pub mod bounds;
mod catch_up;
mod error;
mod forming;
pub mod log_store;
mod membership;
pub mod network;
mod propose;
mod quota;
pub mod recovery;
pub mod snapshot;
mod stand_down;
mod start;
pub mod state_machine;
pub mod types;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::ServerState;
use tessera_core::{PoolFile, VendorPublicKey};
use tessera_proto::{ErrorCode, PeerHello, PeerStatus};
use tokio::sync::watch;

use crate::clock::Clock;
use crate::config::Timing;
use crate::refusal::Refusal;
use network::PeerClient;
use state_machine::Applied;
use types::{node_id, NodeId, Raft};

/// What the leader last heard from a server.
#[derive(Clone, Debug)]
struct Seen {
    at_ms: u64,
    in_use: BTreeMap<String, u32>,
    /// The allocation those seats require (`PeerReport::held` over `in_use`).
    held: BTreeMap<String, u32>,
    /// When the report before this one arrived. A server sends its next
    /// report only once the last is answered, so this report was sent after
    /// that moment.
    previous_at_ms: Option<u64>,
}

pub struct Pool {
    pub raft: Raft,
    pub server_id: String,
    pub node_id: NodeId,
    pub pool_id: String,
    pub peers: PeerClient,
    pub applied: watch::Receiver<Applied>,
    /// The pool file this server was started with.
    bootstrap: PoolFile,
    bootstrap_text: String,
    vendors: Vec<VendorPublicKey>,
    timing: Timing,
    clock: Arc<dyn Clock>,
    /// Leader: the last report of every server.
    seen: Mutex<HashMap<String, Seen>>,
    /// Follower: the servers as the leader last described them, and when.
    view: Mutex<Option<(u64, Vec<PeerStatus>)>>,
    /// The test fault switch: when set, no peer message leaves or enters.
    partitioned: Arc<std::sync::atomic::AtomicBool>,
    /// Leader: held while deciding and committing a move of allocation, and
    /// while recording a report, so that a server the leader judged silent
    /// cannot be acknowledged on its old allocation (see [`Pool::handle_report`]).
    pub(crate) moves: tokio::sync::Mutex<()>,
    /// Leader: the term it leads and when it noticed it leads it.
    term: Mutex<Option<(u64, u64)>>,
    /// Whether this server may vote (see [`CatchUp`]).
    catch_up: Mutex<CatchUp>,
    /// Leader: stale grant copies each server must still be told of
    /// (`crate::copies`).
    relay: Mutex<crate::copies::Relay>,
    /// Started with `--recover-pool`: as leader of an empty pool, it installs
    /// the first pool file with every seat parked (`recovery.rs`).
    recovering: bool,
    /// While catching up: the highest term enough peers reported (see
    /// [`Pool::learn_pool_term`]); a leader of a lower term is stale.
    term_floor: Mutex<Option<u64>>,
    /// The log, to record durably whether this server is catching up.
    log_store: log_store::LogStore,
    /// The leader's snapshot being received, chunk by chunk (`snapshot.rs`).
    receiving: tokio::sync::Mutex<Option<snapshot::Receiving>>,
    /// This run of the server: a number drawn at start, named in its
    /// reports and holding proofs (`crate::hand_over`).
    pub boot: u64,
    /// The number of the next quota report this run sends, from 1.
    next_report: std::sync::atomic::AtomicU64,
    /// Leader: what each server reported and was told in this term, to
    /// judge hand-overs (`crate::hand_over`).
    pub(crate) hand_overs: Mutex<crate::hand_over::HandOverWatch>,
    /// Told by the network when a peer refused this server's vote request
    /// because the peer's log is longer (`stand_down.rs`).
    behind: Arc<tokio::sync::Notify>,
}

/// Environment variable that enables the test-only fault switch
/// (`POST /v1/test/partition`). Never set it in production.
pub const TEST_FAULTS_ENV: &str = "TESSERA_TEST_FAULTS";

/// How often the quota loop looks whether the leader changed: a small part
/// of a leader change (about a second).
pub const LEADER_LOOK_INTERVAL: Duration = Duration::from_millis(25);

/// Whether this process was started with the fault switch enabled.
pub fn test_faults_enabled() -> bool {
    std::env::var(TEST_FAULTS_ENV).is_ok_and(|v| v == "1")
}

fn refused(code: ErrorCode, message: impl Into<String>) -> Refusal {
    Refusal::new(code, message)
}

pub use catch_up::CatchUp;
pub use error::PoolStartError;
pub use propose::{Forward, PeerCommand, COMMIT_TIMEOUT};
pub use start::PoolSettings;

impl Pool {
    /// The number the next quota report will carry. Read before a grant is
    /// issued or renewed, so that a check-in after it is reported under
    /// that number or a later one.
    pub fn next_report(&self) -> u64 {
        self.next_report.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Test-only: cut (or heal) every peer link of this server, both ways.
    pub fn set_partitioned(&self, on: bool) {
        self.partitioned
            .store(on, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn is_partitioned(&self) -> bool {
        self.partitioned.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The installed pool file, or the one this server started with.
    pub fn pool_file(&self) -> PoolFile {
        let applied = self.applied.borrow();
        applied
            .state
            .pool()
            .cloned()
            .unwrap_or_else(|| self.bootstrap.clone())
    }

    /// Reads the installed pool file (or the one this server started with)
    /// without copying it.
    pub fn with_pool_file<T>(&self, read: impl FnOnce(&PoolFile) -> T) -> T {
        let applied = self.applied.borrow();
        read(applied.state.pool().unwrap_or(&self.bootstrap))
    }

    fn server_of(&self, node: NodeId) -> Option<String> {
        let pool = self.pool_file();
        pool.servers
            .iter()
            .chain(self.bootstrap.servers.iter())
            .find(|s| node_id(&s.id) == node)
            .map(|s| s.id.clone())
    }

    pub fn is_leader(&self) -> bool {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        metrics.state == ServerState::Leader
    }

    pub fn role(&self) -> &'static str {
        match self.raft.metrics().borrow().state {
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Candidate => "candidate",
            ServerState::Learner => "learner",
            ServerState::Shutdown => "stopped",
        }
    }

    /// The leader's Raft node id, if one is known.
    pub fn leader_node(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    /// Resolves once the known leader is no longer `known` (a new leader, or
    /// none during an election), looking every [`LEADER_LOOK_INTERVAL`]. It
    /// looks rather than waits on openraft's metrics channel: when openraft
    /// panics in the simulator, a task woken by its teardown cannot be
    /// scheduled on the runtime being dropped, and the process aborts.
    pub async fn leader_changed_from(&self, known: Option<NodeId>) {
        while self.leader_node() == known {
            tokio::time::sleep(LEADER_LOOK_INTERVAL).await;
        }
    }

    /// The leader's server id and address, if one is known.
    pub fn leader(&self) -> Option<(String, String)> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let leader = metrics.current_leader?;
        let address = metrics
            .membership_config
            .membership()
            .get_node(&leader)
            .map(|node| node.addr.clone())?;
        drop(metrics);
        Some((self.server_of(leader)?, address))
    }

    pub fn hello(&self) -> PeerHello {
        let initialized = {
            let metrics = self.raft.metrics();
            let metrics = metrics.borrow();
            metrics.last_log_index.is_some() || metrics.current_term > 0
        };
        let term =
            (self.catch_up() == CatchUp::Voting).then(|| self.raft.metrics().borrow().current_term);
        PeerHello {
            pool_id: self.pool_id.clone(),
            server_id: self.server_id.clone(),
            initialized,
            installed_sequence: self.applied.borrow().state.pool().map(|p| p.sequence),
            term,
        }
    }
}

/// Whether the leader checks every code's signature before installing a pool file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignatureCheck {
    Require,
    /// Only for the first pool file of a new pool.
    Skip,
}
