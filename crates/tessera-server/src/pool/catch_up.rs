//! Catching up: a server that lost its log does not vote, nor answer a
//! stale leader, until it holds every committed entry again.

use std::sync::Arc;
use std::time::Duration;

use tessera_proto::{ErrorCode, PeerHello};

use super::*;
use crate::refusal::Refusal;

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

impl Pool {
    pub(super) fn catch_up(&self) -> CatchUp {
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

    pub(super) async fn record_voting(&self) {
        if let Err(err) = self.log_store.set_catching_up(false).await {
            tracing::warn!(
                "cannot record in the pool log that this server caught up ({err}); it catches \
                 up again at its next start"
            );
        }
    }

    /// A leader's or a candidate's message (an append, a snapshot, a vote
    /// request) comes from another server: none sends one in this server's
    /// own name, and openraft, leading, panics taking an append in its own
    /// name as a follower would (found by the fuzz target `fuzz_raft_append`).
    pub fn from_another_leader(&self, leader: NodeId) -> Result<(), Refusal> {
        if leader == self.node_id {
            return Err(refused(
                ErrorCode::MalformedRequest,
                format!(
                    "the message names this server itself (`{}`, Raft node {leader}) as its \
                     leader",
                    self.server_id
                ),
            ));
        }
        Ok(())
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
                    // A term above the limit is a broken or hostile
                    // peer's: it would make every leader look stale.
                    let term = hello
                        .term
                        .filter(|&term| term <= tessera_proto::RAFT_TERM_MAX);
                    if let Some(term) = term {
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
    pub(super) async fn surveyed(&self, pool_has_history: bool) {
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
}
