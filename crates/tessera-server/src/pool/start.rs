//! Starting a server's part of the pool: Raft's configuration from the
//! timing, the log and state machine opened on the disk seam.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tessera_core::{PoolFile, VendorPublicKey};

use super::error::PoolStartError;
use super::network::PeerClient;
use super::types::{node_id, Raft};
use super::*;
use crate::config::{ServerConfig, Timing};

/// What a server's part of the pool is started with, from its config.
#[derive(Clone, Debug)]
pub struct PoolSettings {
    pub server_id: String,
    pub vendors: Vec<VendorPublicKey>,
    pub timing: Timing,
    /// This server's peer credential (see `config::Security`).
    pub peer_credential: String,
    pub data_dir: PathBuf,
    /// Started with `--recover-pool` (see `recovery.rs`).
    pub recovering: bool,
}

impl PoolSettings {
    pub fn of(config: &ServerConfig) -> PoolSettings {
        PoolSettings {
            server_id: config.server_id.clone(),
            vendors: config.vendors.clone(),
            timing: config.timing,
            peer_credential: config.security.peer_credential.clone(),
            data_dir: config.data_dir.clone(),
            recovering: config.recover_pool,
        }
    }

    /// Raft's configuration: elections staggered by the server's rank in
    /// the pool file, so the first in priority usually leads.
    fn raft_config(&self, bootstrap: &PoolFile) -> Result<openraft::Config, PoolStartError> {
        let timing = &self.timing;
        let rank = bootstrap
            .servers
            .iter()
            .position(|s| s.id == self.server_id)
            .unwrap_or(bootstrap.servers.len()) as u64;
        let election_timeout_min =
            timing.election_timeout_ms + rank * timing.election_timeout_step_ms;
        openraft::Config {
            cluster_name: bootstrap.pool_id.clone(),
            heartbeat_interval: timing.raft_heartbeat_interval_ms,
            election_timeout_min,
            election_timeout_max: election_timeout_min + timing.election_jitter_ms,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(timing.snapshot_every_entries),
            max_in_snapshot_log_to_keep: timing.log_kept_after_snapshot,
            ..Default::default()
        }
        .validate()
        .map_err(|err| PoolStartError::Timing(Box::new(err)))
    }
}

impl Pool {
    pub async fn start(
        settings: PoolSettings,
        bootstrap: PoolFile,
        bootstrap_text: String,
        seams: &crate::seams::Seams,
    ) -> Result<Pool, PoolStartError> {
        let config = settings.raft_config(&bootstrap)?;
        let PoolSettings {
            server_id,
            vendors,
            timing,
            peer_credential,
            data_dir,
            recovering,
        } = settings;
        let data_dir = data_dir.as_path();
        let (log_store, catch_up) = open_log(data_dir, seams).await?;
        let observer = seams
            .observer
            .clone()
            .map(|observer| (server_id.clone(), observer));
        let (state_machine, applied) =
            state_machine::StateMachine::open(data_dir, seams.disk.clone(), observer)?;
        let peers = PeerClient::new(
            bootstrap.pool_id.clone(),
            server_id.clone(),
            peer_credential,
            seams.transport.clone(),
        );
        let partitioned = peers.partitioned();
        let node_id = node_id(&server_id);
        let behind = Arc::new(tokio::sync::Notify::new());
        let raft = Raft::new(
            node_id,
            Arc::new(config),
            network::Network {
                peers: peers.clone(),
                behind: behind.clone(),
            },
            log_store.clone(),
            state_machine,
        )
        .await
        .map_err(|err| PoolStartError::Raft(err.to_string()))?;
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
            clock: seams.clock.clone(),
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
            receiving: tokio::sync::Mutex::new(None),
            boot: boot_number(&(seams.grant_ids)()),
            next_report: std::sync::atomic::AtomicU64::new(1),
            hand_overs: Mutex::new(crate::hand_over::HandOverWatch::default()),
            behind,
        })
    }
}

/// Opens the Raft log and decides whether this server must catch up
/// before it votes ([`CatchUp`]); that decision is durable before openraft
/// writes its first entry or vote.
async fn open_log(
    data_dir: &std::path::Path,
    seams: &crate::seams::Seams,
) -> Result<(log_store::LogStore, CatchUp), PoolStartError> {
    let log_store = log_store::LogStore::open(data_dir, seams.disk.clone())?;
    if !log_store.must_catch_up() || seams.mutations.vote_while_catching_up {
        return Ok((log_store, CatchUp::Voting));
    }
    log_store
        .set_catching_up(true)
        .await
        .map_err(|err| PoolStartError::LogWrite {
            path: data_dir.join(log_store::RAFT_FILE),
            message: err.to_string(),
        })?;
    Ok((log_store, CatchUp::Unknown))
}

/// A run's number, from a fresh id of the server's id source (random in
/// production, seeded in the simulation).
fn boot_number(fresh_id: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    fresh_id.hash(&mut hasher);
    hasher.finish()
}
