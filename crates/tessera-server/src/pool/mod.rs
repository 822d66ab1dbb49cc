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
pub mod log_store;
pub mod network;
pub mod recovery;
pub mod state_machine;
pub mod types;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::ServerState;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tessera_core::{ControlCommand, ControlOutcome, PoolFile, VendorPublicKey};
use tessera_proto::{
    ErrorCode, PeerHello, PeerReport, PeerReportAck, PeerStatus, PoolFileInstalled, PoolFileUpdate,
    SupersededGrant,
};
use tokio::sync::watch;

use crate::clock::Clock;
use crate::config::Timing;
use crate::refusal::Refusal;
use network::{PeerClient, PeerError, PEER_TIMEOUT};
use state_machine::Applied;
use types::{node_id, Node, NodeId, Raft};

/// What the leader last heard from a server.
#[derive(Clone, Debug)]
struct Seen {
    at_ms: u64,
    in_use: BTreeMap<String, u32>,
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
}

/// A server that starts without its Raft log (a new disk, or a server added
/// to a running pool) must not vote until it holds every committed entry
/// again: its empty log would let a candidate that lacks a committed entry
/// win, and the entry would be lost (openraft's FAQ, "Can I wipe out the
/// data of ONE node"). It follows the leader meanwhile, but only a leader
/// of a term at least the one its peers report: with its vote it also lost
/// the term it had promised, and a stale leader it answered could count it
/// in a majority and commit over entries the pool committed in a later
/// term (soak seeds 70203 and 70481). The state is kept durably
/// ([`log_store::LogStore::must_catch_up`]) until it has caught up, so a
/// crash halfway does not make its partial log a voter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CatchUp {
    /// The log survived, or the pool is new: vote as Raft says.
    Voting,
    /// The log is empty and the peers have not said yet whether the pool
    /// has a history.
    Unknown,
    /// The pool has a history: no votes until the log is applied as far as
    /// the leader's commit index (once the leader has named it).
    Behind { target: Option<u64> },
}

/// Longest a Raft write is awaited. A commit takes a round trip and a disk
/// sync, a leader change about a second; but a write begun by a leader that
/// loses its leadership before the entry commits may never be answered by
/// openraft, and the loops that wait on writes must go on: a donor's answers
/// and the leader's cancels (soak seed 50469: the leader's answer loop waited
/// forever on a cancel, so it never answered or drained again), and the
/// leader's moves, made under the lock that reports also take.
pub const COMMIT_TIMEOUT: Duration = Duration::from_millis(2_000);

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

impl Pool {
    #[allow(clippy::too_many_arguments)]
    pub async fn start(
        server_id: String,
        bootstrap: PoolFile,
        bootstrap_text: String,
        vendors: Vec<VendorPublicKey>,
        timing: Timing,
        peer_secret: Option<String>,
        data_dir: &std::path::Path,
        seams: &crate::seams::Seams,
        recovering: bool,
    ) -> Result<Pool, String> {
        let clock = seams.clock.clone();
        let rank = bootstrap
            .servers
            .iter()
            .position(|s| s.id == server_id)
            .unwrap_or(bootstrap.servers.len()) as u64;
        let election_timeout_min =
            timing.election_timeout_ms + rank * timing.election_timeout_step_ms;
        let config = openraft::Config {
            cluster_name: bootstrap.pool_id.clone(),
            heartbeat_interval: timing.raft_heartbeat_interval_ms,
            election_timeout_min,
            election_timeout_max: election_timeout_min + timing.election_jitter_ms,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(timing.snapshot_every_entries),
            max_in_snapshot_log_to_keep: timing.log_kept_after_snapshot,
            ..Default::default()
        }
        .validate()
        .map_err(|err| format!("pool timing: {err}"))?;
        let log_store = log_store::LogStore::open(data_dir, seams.disk.clone())?;
        let catch_up = if log_store.must_catch_up() && !seams.mutations.vote_while_catching_up {
            // Durable before openraft writes its first entry or vote.
            log_store
                .set_catching_up(true)
                .await
                .map_err(|err| format!("pool log: {err}"))?;
            CatchUp::Unknown
        } else {
            CatchUp::Voting
        };
        let observer = seams
            .observer
            .clone()
            .map(|observer| (server_id.clone(), observer));
        let (state_machine, applied) = state_machine::StateMachine::open(data_dir, observer)?;
        let peers = PeerClient::new(
            bootstrap.pool_id.clone(),
            server_id.clone(),
            peer_secret,
            seams.transport.clone(),
        );
        let partitioned = peers.partitioned();
        let node_id = node_id(&server_id);
        let raft = Raft::new(
            node_id,
            Arc::new(config),
            network::Network {
                peers: peers.clone(),
            },
            log_store.clone(),
            state_machine,
        )
        .await
        .map_err(|err| format!("cannot start the pool's Raft: {err}"))?;
        Ok(Pool {
            raft,
            node_id,
            pool_id: bootstrap.pool_id.clone(),
            server_id,
            peers,
            applied,
            bootstrap,
            bootstrap_text,
            vendors,
            timing,
            clock,
            seen: Mutex::new(HashMap::new()),
            view: Mutex::new(None),
            partitioned,
            moves: tokio::sync::Mutex::new(()),
            term: Mutex::new(None),
            catch_up: Mutex::new(catch_up),
            relay: Mutex::new(crate::copies::Relay::default()),
            recovering,
            term_floor: Mutex::new(None),
            log_store,
        })
    }

    fn catch_up(&self) -> CatchUp {
        *self.catch_up.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether this server refuses to vote for now (see [`CatchUp`]).
    pub async fn refuses_votes(&self) -> bool {
        self.check_caught_up().await;
        self.catch_up() != CatchUp::Voting
    }

    /// Votes again once the log is applied as far as the target.
    pub async fn check_caught_up(&self) {
        let caught_up = {
            let mut catch_up = self.catch_up.lock().unwrap_or_else(|p| p.into_inner());
            match *catch_up {
                CatchUp::Behind {
                    target: Some(target),
                } if self.applied.borrow().index >= target => {
                    tracing::info!("caught up with the pool's log to index {target}; voting again");
                    *catch_up = CatchUp::Voting;
                    true
                }
                _ => false,
            }
        };
        if caught_up {
            self.record_voting().await;
        }
    }

    async fn record_voting(&self) {
        if let Err(err) = self.log_store.set_catching_up(false).await {
            tracing::warn!(
                "cannot record in the pool log that this server caught up ({err}); it catches \
                 up again at its next start"
            );
        }
    }

    /// Whether this server answers a leader of `term` (an append or a
    /// snapshot): always once it votes; while it catches up, only once it
    /// knows the pool's term and `term` is not below it.
    pub fn answers_leader(&self, term: u64) -> Result<(), Refusal> {
        if self.catch_up() == CatchUp::Voting {
            return Ok(());
        }
        let floor = *self.term_floor.lock().unwrap_or_else(|p| p.into_inner());
        match floor {
            None => Err(refused(
                ErrorCode::NoQuorum,
                format!(
                    "server `{}` lost its pool log and answers no leader until its peers have \
                     told it the pool's term",
                    self.server_id
                ),
            )),
            Some(floor) if term < floor => Err(refused(
                ErrorCode::NoQuorum,
                format!(
                    "server `{}` is catching up and its peers are at term {floor}: a leader of \
                     term {term} is stale",
                    self.server_id
                ),
            )),
            Some(_) => Ok(()),
        }
    }

    /// Until this server votes: asks its peers for their terms until at
    /// least half the pool's servers other than itself (rounded up) have
    /// answered, and keeps the highest as the term below which a leader is
    /// stale ([`Pool::answers_leader`]). Any majority that elected a leader,
    /// with or without this server's lost vote, includes one of them, so no
    /// leader elected before now has a higher term; leaders elected later
    /// were elected without this server.
    pub async fn learn_pool_term(self: Arc<Self>) {
        let retry = Duration::from_millis(300);
        loop {
            if self.catch_up() == CatchUp::Voting {
                return;
            }
            let pool = self.pool_file();
            let others: Vec<_> = pool
                .servers
                .iter()
                .filter(|s| s.id != self.server_id)
                .collect();
            let needed = pool.servers.len().div_ceil(2).min(others.len());
            let mut answered = 0;
            let mut highest = 0;
            for server in others {
                if let Ok(hello) = self
                    .peers
                    .get::<PeerHello>(&server.address, "/v1/peer/hello")
                    .await
                {
                    if let Some(term) = hello.term {
                        answered += 1;
                        highest = highest.max(term);
                    }
                }
            }
            if answered >= needed {
                tracing::info!(
                    "{answered} peers report the pool at term {highest} or below: this server \
                     follows no leader of an earlier term while it catches up"
                );
                *self.term_floor.lock().unwrap_or_else(|p| p.into_inner()) = Some(highest);
                return;
            }
            tokio::time::sleep(retry).await;
        }
    }

    /// The leader's commit index, as an append request names it: the
    /// target of a server that is catching up.
    pub fn leader_committed(&self, index: u64) {
        let mut catch_up = self.catch_up.lock().unwrap_or_else(|p| p.into_inner());
        match *catch_up {
            CatchUp::Voting => {}
            // A leader exists, so the pool does: catch up before voting.
            CatchUp::Unknown => {
                *catch_up = CatchUp::Behind {
                    target: Some(index),
                }
            }
            CatchUp::Behind { target } => {
                *catch_up = CatchUp::Behind {
                    target: Some(target.map_or(index, |t| t.max(index))),
                }
            }
        }
    }

    /// What the survey of peers says about the pool's history.
    async fn surveyed(&self, pool_has_history: bool) {
        let voting = {
            let mut catch_up = self.catch_up.lock().unwrap_or_else(|p| p.into_inner());
            if *catch_up != CatchUp::Unknown {
                return;
            }
            *catch_up = if pool_has_history {
                tracing::warn!(
                    "this server has no pool log but the pool has a history: it follows the \
                     leader and votes again once it has caught up"
                );
                CatchUp::Behind { target: None }
            } else {
                CatchUp::Voting
            };
            *catch_up == CatchUp::Voting
        };
        if voting {
            self.record_voting().await;
        }
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

    /// Forms the pool if it has never formed, then makes sure the pool file
    /// this server started with is installed if it is newer. Runs until done.
    pub async fn bootstrap(self: Arc<Self>) {
        let retry = Duration::from_millis(300);
        while !self.raft.is_initialized().await.unwrap_or(true) {
            match self.survey_peers().await {
                Survey::SomeoneFormed => break,
                Survey::MajorityNew => {
                    let members: BTreeMap<NodeId, Node> = self
                        .bootstrap
                        .servers
                        .iter()
                        .map(|s| (node_id(&s.id), Node::new(s.address.clone())))
                        .collect();
                    match self.raft.initialize(members).await {
                        Ok(()) => tracing::info!("pool `{}` formed", self.pool_id),
                        Err(err) => tracing::debug!("initialize: {err}"),
                    }
                    break;
                }
                Survey::Wait => tokio::time::sleep(retry).await,
            }
        }
        loop {
            let installed = self.applied.borrow().state.pool().map(|p| p.sequence);
            if installed.is_some_and(|sequence| sequence >= self.bootstrap.sequence) {
                break;
            }
            if self.leader().is_some() {
                // The first pool file is installed even if some of its codes
                // do not verify: each server then refuses those codes and
                // says why in its status. Later updates must verify.
                let check = if installed.is_none() {
                    SignatureCheck::Skip
                } else {
                    SignatureCheck::Require
                };
                match self
                    .submit_pool_file(self.bootstrap_text.clone(), check)
                    .await
                {
                    Ok(done) => {
                        tracing::info!("pool file sequence {} installed", done.sequence);
                        break;
                    }
                    Err(err) if err.code == ErrorCode::PoolFileRefused => {
                        tracing::warn!(
                            "the pool file this server started with is not installed: {err}"
                        );
                        break;
                    }
                    Err(err) => tracing::debug!("pool file not installed yet: {err}"),
                }
            }
            tokio::time::sleep(retry).await;
        }
    }

    /// Forms a new pool only when a majority of its servers answer that they
    /// have never formed one, and none has: a server added to a running pool
    /// must never start a pool of its own. Of the fresh servers, the one first
    /// in leader priority forms it (and campaigns first), so priority settles
    /// who leads a new pool.
    async fn survey_peers(&self) -> Survey {
        let survey = self.survey_answers().await;
        if let Some(history) = survey.1 {
            self.surveyed(history).await;
        }
        survey.0
    }

    /// The survey, and whether any peer answered that the pool has
    /// installed a pool file (has a history), if any peer answered.
    async fn survey_answers(&self) -> (Survey, Option<bool>) {
        let mut fresh = 1;
        let mut higher_priority_fresh = false;
        let mut before_me = true;
        // A pool of one has nobody to catch up from.
        let mut history: Option<bool> = (self.bootstrap.servers.len() == 1).then_some(false);
        let mut formed = false;
        for server in &self.bootstrap.servers {
            if server.id == self.server_id {
                before_me = false;
                continue;
            }
            if let Ok(hello) = self
                .peers
                .get::<PeerHello>(&server.address, "/v1/peer/hello")
                .await
            {
                *history.get_or_insert(false) |= hello.installed_sequence.is_some();
                if hello.initialized {
                    formed = true;
                } else {
                    fresh += 1;
                    higher_priority_fresh |= before_me;
                }
            }
        }
        let survey = if formed {
            Survey::SomeoneFormed
        } else if fresh * 2 > self.bootstrap.servers.len() && !higher_priority_fresh {
            Survey::MajorityNew
        } else {
            Survey::Wait
        };
        (survey, history)
    }

    /// Installs a pool file: forwarded to the leader, validated there
    /// (sequence, pool id, sums, signatures), committed, applied by all.
    pub async fn update_pool_file(&self, text: String) -> Result<PoolFileInstalled, Refusal> {
        self.submit_pool_file(text, SignatureCheck::Require).await
    }

    /// The first pool file of a new pool, forwarded by a peer: installed only
    /// while no pool file is; codes that do not verify are kept and refused
    /// by every server at issue time, with their reason in the status.
    pub async fn install_first_pool_file(
        &self,
        text: String,
    ) -> Result<PoolFileInstalled, Refusal> {
        self.submit_pool_file(text, SignatureCheck::Skip).await
    }

    async fn submit_pool_file(
        &self,
        text: String,
        check: SignatureCheck,
    ) -> Result<PoolFileInstalled, Refusal> {
        let path = match check {
            SignatureCheck::Require => "/v1/admin/pool-file",
            SignatureCheck::Skip => "/v1/peer/first-pool-file",
        };
        let forward = Forward {
            path,
            timeout: PEER_TIMEOUT * 5,
            unanswered: ErrorCode::NoLeader,
        };
        self.at_leader(forward, PoolFileUpdate { text }, |update| {
            self.lead_pool_file(update.text, check)
        })
        .await
    }

    /// Leader: checks and commits a new pool file.
    async fn lead_pool_file(
        &self,
        text: String,
        check: SignatureCheck,
    ) -> Result<PoolFileInstalled, Refusal> {
        let next = self
            .applied
            .borrow()
            .state
            .check_install(&text)
            .map_err(|reason| refused(ErrorCode::PoolFileRefused, reason))?;
        if next.pool_id != self.pool_id {
            return Err(refused(
                ErrorCode::PoolFileRefused,
                format!(
                    "the pool file is for pool `{}`, but this is pool `{}`",
                    next.pool_id, self.pool_id
                ),
            ));
        }
        if self.applied.borrow().state.pool().is_some() || check == SignatureCheck::Require {
            for code in &next.codes {
                code.verify(&self.vendors)
                    .map_err(|err| refused(ErrorCode::PoolFileRefused, err.to_string()))?;
            }
        }
        let command = if self.recovering && self.applied.borrow().state.pool().is_none() {
            tracing::warn!(
                "re-forming the pool from the survivors of a lost majority: every seat waits \
                 until the lost servers' grants have lapsed, but those the survivors' clients hold"
            );
            ControlCommand::RecoverPool { text }
        } else {
            ControlCommand::InstallPoolFile { text }
        };
        let installed = match self.write(command).await? {
            ControlOutcome::Installed { sequence } => PoolFileInstalled {
                pool_id: self.pool_id.clone(),
                sequence,
            },
            ControlOutcome::Refused { reason } => {
                return Err(refused(ErrorCode::PoolFileRefused, reason))
            }
            other => {
                return Err(refused(
                    ErrorCode::Internal,
                    format!("a pool file install answered {other:?}"),
                ))
            }
        };
        self.reconcile_membership().await;
        Ok(installed)
    }

    /// Leader: makes the Raft voters equal the installed pool file's servers.
    pub async fn reconcile_membership(&self) {
        if !self.is_leader() {
            return;
        }
        let Some(pool) = self.applied.borrow().state.pool().cloned() else {
            return;
        };
        let desired: BTreeMap<NodeId, Node> = pool
            .servers
            .iter()
            .map(|s| (node_id(&s.id), Node::new(s.address.clone())))
            .collect();
        let (voters, known): (BTreeSet<NodeId>, BTreeSet<NodeId>) = {
            let metrics = self.raft.metrics();
            let metrics = metrics.borrow();
            let membership = metrics.membership_config.membership();
            (
                membership.voter_ids().collect(),
                membership.nodes().map(|(id, _)| *id).collect(),
            )
        };
        let desired_ids: BTreeSet<NodeId> = desired.keys().copied().collect();
        if voters == desired_ids {
            return;
        }
        for (id, node) in &desired {
            if !known.contains(id) {
                if let Err(err) = self.raft.add_learner(*id, node.clone(), false).await {
                    tracing::warn!("cannot add a server to the pool: {err}");
                    return;
                }
            }
        }
        match self.raft.change_membership(desired_ids, false).await {
            Ok(_) => tracing::info!(
                "pool membership now follows pool file sequence {}",
                pool.sequence
            ),
            Err(err) => tracing::warn!("membership change not done yet: {err}"),
        }
    }

    /// Leader: a server's report. Acknowledged only after a quorum confirms
    /// this leadership, so no other leader can exist at the time of the ack.
    pub async fn handle_report(&self, report: PeerReport) -> Result<PeerReportAck, Refusal> {
        let pool = self.pool_file();
        if pool.server(&report.server_id).is_none() {
            return Err(refused(
                ErrorCode::WrongPool,
                format!(
                    "server `{}` is not in pool `{}`",
                    report.server_id, self.pool_id
                ),
            ));
        }
        if !self.is_leader() {
            return Err(refused(
                ErrorCode::NoLeader,
                format!("server `{}` is not the leader", self.server_id),
            ));
        }
        // Recorded before leadership is confirmed, and under the lock that
        // moves allocation: a borrow that judged this server silent has
        // either not been decided yet (and now will not be), or is committed
        // already, and then the index named below includes it.
        {
            let _moves = self.moves.lock().await;
            self.observe_term();
            self.seen.lock().unwrap_or_else(|p| p.into_inner()).insert(
                report.server_id.clone(),
                Seen {
                    at_ms: self.clock.now_ms(),
                    in_use: report.in_use.clone(),
                },
            );
            self.relay
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .forward(&report.server_id, &pool.server_ids(), &report.superseded);
        }
        let confirmed = tokio::time::timeout(PEER_TIMEOUT, self.raft.ensure_linearizable())
            .await
            .map_err(|_| {
                refused(
                    ErrorCode::NoQuorum,
                    "leadership not confirmed by a majority in time",
                )
            })?
            .map_err(|err| {
                refused(
                    ErrorCode::NoQuorum,
                    format!("leadership not confirmed: {err}"),
                )
            })?;
        self.restore_holders(&report.server_id, &report.in_use)
            .await;
        let now_ms = self.clock.now_ms();
        let last_log = self.raft.metrics().borrow().last_log_index.unwrap_or(0);
        Ok(PeerReportAck {
            leader_id: self.server_id.clone(),
            applied_index_required: confirmed.map_or(0, |id| id.index).max(last_log),
            servers: self.leader_view(&pool, now_ms),
            superseded: self
                .relay
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take(&report.server_id),
        })
    }

    /// Sends this server's report to the leader (itself, if it leads).
    pub async fn report(
        &self,
        in_use: BTreeMap<String, u32>,
        superseded: Vec<SupersededGrant>,
    ) -> Result<PeerReportAck, Refusal> {
        let report = PeerReport {
            server_id: self.server_id.clone(),
            in_use,
            superseded,
        };
        let forward = Forward {
            path: "/v1/peer/report",
            timeout: PEER_TIMEOUT,
            unanswered: ErrorCode::NoQuorum,
        };
        let ack = self
            .at_leader(forward, report, |report| self.handle_report(report))
            .await?;
        *self.view.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((self.clock.now_ms(), ack.servers.clone()));
        Ok(ack)
    }

    /// Leader: notices a new term of its own leadership, and then forgets
    /// what it heard from servers under earlier terms: a new leader measures
    /// a server's silence from its own election at the earliest.
    pub(crate) fn observe_term(&self) -> Option<u64> {
        let (state, term) = {
            let metrics = self.raft.metrics();
            let metrics = metrics.borrow();
            (metrics.state, metrics.current_term)
        };
        let mut led = self.term.lock().unwrap_or_else(|p| p.into_inner());
        if state != ServerState::Leader {
            *led = None;
            return None;
        }
        match *led {
            Some((t, since)) if t == term => Some(since),
            _ => {
                let now_ms = self.clock.now_ms();
                *led = Some((term, now_ms));
                self.seen.lock().unwrap_or_else(|p| p.into_inner()).clear();
                Some(now_ms)
            }
        }
    }

    /// Leader: how long `server` has been silent, measured from its last
    /// report under this leadership, or from this leadership's start.
    pub(crate) fn silent_for_ms(&self, server: &str) -> Option<u64> {
        let since = self.observe_term()?;
        let now_ms = self.clock.now_ms();
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let last = seen.get(server).map_or(since, |s| s.at_ms.max(since));
        Some(now_ms.saturating_sub(last))
    }

    /// Commits `command` through the leader: here if this server leads,
    /// else forwarded. Returns what applying it did.
    pub async fn propose(&self, command: ControlCommand) -> Result<ControlOutcome, Refusal> {
        let ask = PeerCommand {
            server_id: self.server_id.clone(),
            command,
        };
        let forward = Forward {
            path: "/v1/peer/command",
            timeout: PEER_TIMEOUT,
            unanswered: ErrorCode::NoLeader,
        };
        self.at_leader(forward, ask, |ask| self.commit(ask.command))
            .await
    }

    /// Answers `body` with `here` when this server leads; else sends it to
    /// the leader at `forward.path` and returns the leader's answer. The one
    /// way a request reaches the leader.
    pub async fn at_leader<B, T, Here, Answer>(
        &self,
        forward: Forward,
        body: B,
        here: Here,
    ) -> Result<T, Refusal>
    where
        B: Serialize,
        T: DeserializeOwned,
        Here: FnOnce(B) -> Answer,
        Answer: Future<Output = Result<T, Refusal>>,
    {
        let Some((leader_id, address)) = self.leader() else {
            return Err(refused(
                ErrorCode::NoLeader,
                "the pool has no leader right now; retry shortly",
            ));
        };
        if leader_id == self.server_id {
            return here(body).await;
        }
        self.peers
            .post(&address, forward.path, &body, forward.timeout)
            .await
            .map_err(|err| match err {
                PeerError::Refused { code, message } => refused(code, message),
                other => refused(
                    forward.unanswered,
                    format!("the leader {leader_id} did not answer: {other}"),
                ),
            })
    }

    /// Leader: commits `command` and returns what applying it did.
    pub(crate) async fn commit(&self, command: ControlCommand) -> Result<ControlOutcome, Refusal> {
        self.write(command).await
    }

    /// Writes `command` to the Raft log and waits, at most
    /// [`COMMIT_TIMEOUT`], for what applying it did.
    async fn write(&self, command: ControlCommand) -> Result<ControlOutcome, Refusal> {
        match tokio::time::timeout(COMMIT_TIMEOUT, self.raft.client_write(command)).await {
            Ok(written) => written
                .map(|response| response.data)
                .map_err(|err| refused(ErrorCode::NoLeader, format!("not committed: {err}"))),
            Err(_) => Err(refused(
                ErrorCode::NoLeader,
                format!(
                    "not committed within {} ms; the leader may have changed (the command may \
                     still apply); retry",
                    COMMIT_TIMEOUT.as_millis()
                ),
            )),
        }
    }

    /// Waits (bounded) until this server has applied the log to `index`.
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> bool {
        let mut applied = self.applied.clone();
        tokio::time::timeout(timeout, applied.wait_for(|a| a.index >= index))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Is `server` up, as the leader judges from its reports?
    fn leader_view(&self, pool: &PoolFile, now_ms: u64) -> Vec<PeerStatus> {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let up_within_ms = self.timing.quota_report_interval_ms * 3;
        pool.servers
            .iter()
            .map(|s| {
                let last = seen
                    .get(&s.id)
                    .map(|seen| now_ms.saturating_sub(seen.at_ms));
                let me = s.id == self.server_id;
                PeerStatus {
                    id: s.id.clone(),
                    address: s.address.clone(),
                    role: if me { "leader" } else { "follower" }.into(),
                    up: me || last.is_some_and(|ms| ms <= up_within_ms),
                    last_contact_ms: if me { Some(0) } else { last },
                }
            })
            .collect()
    }

    /// Every server of the pool as this server knows it.
    pub fn peer_statuses(&self) -> Vec<PeerStatus> {
        let pool = self.pool_file();
        let now_ms = self.clock.now_ms();
        if self.is_leader() {
            return self.leader_view(&pool, now_ms);
        }
        let view = self.view.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let leader = self.leader().map(|(id, _)| id);
        pool.servers
            .iter()
            .map(|s| {
                let reported = view.as_ref().and_then(|(at_ms, servers)| {
                    servers.iter().find(|p| p.id == s.id).map(|p| (at_ms, p))
                });
                let age = |at_ms: &u64| now_ms.saturating_sub(*at_ms);
                PeerStatus {
                    id: s.id.clone(),
                    address: s.address.clone(),
                    role: if Some(&s.id) == leader.as_ref() {
                        "leader"
                    } else {
                        "follower"
                    }
                    .into(),
                    up: s.id == self.server_id || reported.is_some_and(|(_, p)| p.up),
                    last_contact_ms: if s.id == self.server_id {
                        Some(0)
                    } else {
                        reported.and_then(|(at_ms, p)| p.last_contact_ms.map(|ms| ms + age(at_ms)))
                    },
                }
            })
            .collect()
    }

    /// Leader: the in-use counts last reported by `server`.
    pub fn reported_in_use(&self, server: &str, feature: &str) -> Option<u32> {
        if !self.is_leader() {
            return None;
        }
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.get(server)
            .map(|s| s.in_use.get(feature).copied().unwrap_or(0))
    }
}

/// A request only the leader answers: where it goes and how long it may take.
#[derive(Clone, Copy, Debug)]
pub struct Forward {
    pub path: &'static str,
    pub timeout: Duration,
    /// The refusal's code when the leader does not answer.
    pub unanswered: ErrorCode,
}

/// `POST /v1/peer/command`: a command a server proposes (a donor's release
/// or drain); the leader commits it.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct PeerCommand {
    pub server_id: String,
    pub command: ControlCommand,
}

/// Whether the leader checks every code's signature before installing a pool file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignatureCheck {
    Require,
    /// Only for the first pool file of a new pool.
    Skip,
}

enum Survey {
    SomeoneFormed,
    MajorityNew,
    Wait,
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;
    use crate::seams::{Disk, FileDisk, Seams};

    /// A disk whose commits can be made to take as long as the test likes.
    #[derive(Default)]
    struct StallingDisk {
        commit_delay_ms: AtomicU64,
    }

    impl Disk for StallingDisk {
        fn open_database(
            &self,
            path: &std::path::Path,
            cache_bytes: usize,
        ) -> Result<redb::Database, redb::DatabaseError> {
            FileDisk.open_database(path, cache_bytes)
        }

        fn exists(&self, path: &std::path::Path) -> bool {
            path.exists()
        }

        fn commit_on_threads(&self) -> bool {
            false
        }

        fn commit_delay(&self) -> Duration {
            Duration::from_millis(self.commit_delay_ms.load(Ordering::SeqCst))
        }
    }

    /// Soak seed 50469: a write openraft does not answer (there, one begun
    /// by a leader that then lost its leadership; here, one stuck on the
    /// disk) must not hold up its caller beyond [`COMMIT_TIMEOUT`].
    #[tokio::test(start_paused = true)]
    async fn a_write_that_is_never_answered_is_given_up_after_the_commit_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let text =
            "pool_id = \"t\"\nsequence = 1\n\n[[servers]]\nid = \"A\"\naddress = \"127.0.0.1:9\"\n";
        let disk = Arc::new(StallingDisk::default());
        let seams = Seams {
            disk: disk.clone(),
            ..Seams::production()
        };
        let pool = Arc::new(
            Pool::start(
                "A".into(),
                PoolFile::parse(text).unwrap(),
                text.into(),
                Vec::new(),
                Timing::default(),
                None,
                dir.path(),
                &seams,
                false,
            )
            .await
            .unwrap(),
        );
        tokio::time::timeout(Duration::from_secs(30), pool.clone().bootstrap())
            .await
            .expect("a pool of one forms and installs its pool file");

        disk.commit_delay_ms.store(3_600_000, Ordering::SeqCst);
        let next = text.replace("sequence = 1", "sequence = 2");
        let started = tokio::time::Instant::now();
        let written = pool
            .commit(ControlCommand::InstallPoolFile { text: next })
            .await;
        let waited = started.elapsed();
        assert!(written.is_err(), "{written:?}");
        assert!(waited <= COMMIT_TIMEOUT, "waited {waited:?}");
    }
}
