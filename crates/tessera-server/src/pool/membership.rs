//! The pool file: installing a new one through the leader, and the Raft
//! membership that follows its server list.

use std::collections::{BTreeMap, BTreeSet};

use tessera_core::{ControlCommand, ControlOutcome};
use tessera_proto::{ErrorCode, PoolFileInstalled, PoolFileUpdate};

use super::network::PEER_TIMEOUT;
use super::types::{node_id, Node, NodeId};
use super::*;
use crate::refusal::Refusal;

impl Pool {
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

    pub(super) async fn submit_pool_file(
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
    pub(super) async fn lead_pool_file(
        &self,
        text: String,
        check: SignatureCheck,
    ) -> Result<PoolFileInstalled, Refusal> {
        self.check_pool_file(&text, check)?;
        let installed = self.commit_pool_file(text).await?;
        self.follow_membership_briefly(&installed).await;
        Ok(installed)
    }

    /// Refuses a pool file that does not follow the installed one, is for
    /// another pool, names a server without a credential, or (but for a new
    /// pool's first file) holds a code that does not verify.
    fn check_pool_file(&self, text: &str, check: SignatureCheck) -> Result<(), Refusal> {
        let next = self
            .applied
            .borrow()
            .state
            .check_install(text)
            .map_err(|reason| refused(ErrorCode::PoolFileRefused, reason.to_string()))?;
        if next.pool_id != self.pool_id {
            return Err(refused(
                ErrorCode::PoolFileRefused,
                format!(
                    "the pool file is for pool `{}`, but this is pool `{}`",
                    next.pool_id, self.pool_id
                ),
            ));
        }
        if let Some(server) = next.servers.iter().find(|s| s.credential_sha256.is_none()) {
            return Err(refused(
                ErrorCode::PoolFileRefused,
                format!(
                    "server `{}` has no credential_sha256: it could not prove itself to its peers; \
                     `tessera pool add-server` makes its credential and prints its entry",
                    server.id
                ),
            ));
        }
        if self.applied.borrow().state.pool().is_some() || check == SignatureCheck::Require {
            for code in &next.codes {
                code.verify(&self.vendors)
                    .map_err(|err| refused(ErrorCode::PoolFileRefused, err.to_string()))?;
            }
        }
        Ok(())
    }

    /// Commits a checked pool file: installed, or the pool re-formed from
    /// the survivors of a lost majority.
    async fn commit_pool_file(&self, text: String) -> Result<PoolFileInstalled, Refusal> {
        let command = if self.recovering && self.applied.borrow().state.pool().is_none() {
            tracing::warn!(
                "re-forming the pool from the survivors of a lost majority: every seat waits \
                 until the lost servers' grants have lapsed (and, for a feature whose codes allow \
                 temporary licenses, until those they may have activated have expired), but \
                 those the survivors' clients hold"
            );
            ControlCommand::RecoverPool { text }
        } else {
            ControlCommand::InstallPoolFile { text }
        };
        match self.write(command).await? {
            ControlOutcome::Installed { sequence } => Ok(PoolFileInstalled {
                pool_id: self.pool_id.clone(),
                sequence,
            }),
            ControlOutcome::Refused { reason } => Err(refused(ErrorCode::PoolFileRefused, reason)),
            other => Err(refused(
                ErrorCode::Internal,
                format!("a pool file install answered {other:?}"),
            )),
        }
    }

    /// The file is committed; the answer does not wait long for a
    /// membership change that needs a new server's vote: that server may
    /// not be up yet (the request used to wait for it without end; found by
    /// the fuzz target `fuzz_peer_endpoints`). The membership loop goes on
    /// with it.
    async fn follow_membership_briefly(&self, installed: &PoolFileInstalled) {
        let membership = self.reconcile_membership();
        if tokio::time::timeout(COMMIT_TIMEOUT, membership)
            .await
            .is_err()
        {
            tracing::info!(
                "pool file sequence {} is installed; its membership change waits for the \
                 servers it adds",
                installed.sequence
            );
        }
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
}
