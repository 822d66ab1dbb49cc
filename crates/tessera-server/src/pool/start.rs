//! Starting a server's part of the pool: Raft's configuration from the
//! timing, the log and state machine opened on the disk seam.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tessera_core::{PoolFile, VendorPublicKey};

use super::error::PoolStartError;
use super::network::PeerClient;
use super::types::{node_id, Raft};
use super::*;
use crate::config::Timing;

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
    ) -> Result<Pool, PoolStartError> {
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
        .map_err(|err| PoolStartError::Timing(Box::new(err)))?;
        let log_store = log_store::LogStore::open(data_dir, seams.disk.clone())?;
        let catch_up = if log_store.must_catch_up() && !seams.mutations.vote_while_catching_up {
            // Durable before openraft writes its first entry or vote.
            log_store
                .set_catching_up(true)
                .await
                .map_err(|err| PoolStartError::LogWrite {
                    path: data_dir.join(log_store::RAFT_FILE),
                    message: err.to_string(),
                })?;
            CatchUp::Unknown
        } else {
            CatchUp::Voting
        };
        let observer = seams
            .observer
            .clone()
            .map(|observer| (server_id.clone(), observer));
        let (state_machine, applied) =
            state_machine::StateMachine::open(data_dir, seams.disk.clone(), observer)?;
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
}
