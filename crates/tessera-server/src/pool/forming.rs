//! Forming a pool: the first server up among a majority in priority
//! order initialises Raft and installs the first pool file.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tessera_proto::{ErrorCode, PeerHello};

use super::types::{node_id, Node, NodeId};
use super::*;

/// How long a fresh server waits, per server before it in leader
/// priority, for those servers to answer before it forms the pool without
/// them. Servers started together then leave the forming to the first in
/// priority even when it is a little slower to listen.
pub(super) const FORMING_PATIENCE_PER_RANK: Duration = Duration::from_secs(2);

pub(super) enum Survey {
    SomeoneFormed,
    MajorityNew,
    Wait,
}

impl Pool {
    /// Forms the pool if it has never formed, then makes sure the pool file
    /// this server started with is installed if it is newer. Runs until done.
    pub async fn bootstrap(self: Arc<Self>) {
        let retry = Duration::from_millis(300);
        let surveying_since = tokio::time::Instant::now();
        while !self.raft.is_initialized().await.unwrap_or(true) {
            match self.survey_peers(surveying_since.elapsed()).await {
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
    /// who leads a new pool. A server forms a pool without the servers
    /// before it only after it has waited [`FORMING_PATIENCE_PER_RANK`] for
    /// each of them (`surveying` is how long it has been surveying).
    pub(super) async fn survey_peers(&self, surveying: Duration) -> Survey {
        let survey = self.survey_answers(surveying).await;
        if let Some(history) = survey.1 {
            self.surveyed(history).await;
        }
        survey.0
    }

    /// The survey, and whether any peer answered that the pool has
    /// installed a pool file (has a history), if any peer answered.
    pub(super) async fn survey_answers(&self, surveying: Duration) -> (Survey, Option<bool>) {
        let mut fresh = 1;
        let mut rank = 0u32;
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
            if before_me {
                rank += 1;
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
        } else if fresh * 2 > self.bootstrap.servers.len()
            && !higher_priority_fresh
            && surveying >= FORMING_PATIENCE_PER_RANK * rank
        {
            Survey::MajorityNew
        } else {
            Survey::Wait
        };
        (survey, history)
    }
}
