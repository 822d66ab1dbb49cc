//! Raft terms and log indexes that come from the network, bounded before
//! openraft sees them. openraft adds to both (a candidate's term + 1, an
//! index + 1) and persists the vote it is given: one append naming term
//! 2^64 - 1 made it panic at its next election, every time it restarted.
//! A pool's own terms and indexes grow by one at a time and never come near
//! [`RAFT_TERM_MAX`] / [`RAFT_INDEX_MAX`]; anything above is a hostile or
//! broken peer, refused with `raft_out_of_range`. Requests are checked in
//! the peer handlers (`api/peer.rs`), answers in the peer client
//! (`network.rs`).

use openraft::error::RaftError;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{LogId, SnapshotMeta, Vote};
use tessera_proto::{ErrorCode, RAFT_INDEX_MAX, RAFT_TERM_MAX};

use super::types::{Node, NodeId, TypeConfig};
use crate::refusal::Refusal;

/// A Raft message whose terms and indexes are all within the limits.
pub trait Bounded {
    /// Refuses (`raft_out_of_range`) the first term or index above its limit,
    /// naming where it is.
    fn check_bounds(&self) -> Result<(), Refusal>;
}

fn term(what: &str, term: u64) -> Result<(), Refusal> {
    if term > RAFT_TERM_MAX {
        return Err(Refusal::new(
            ErrorCode::RaftOutOfRange,
            format!("{what} has Raft term {term}, above the limit {RAFT_TERM_MAX}"),
        ));
    }
    Ok(())
}

fn vote(what: &str, vote: &Vote<NodeId>) -> Result<(), Refusal> {
    term(&format!("{what}'s vote"), vote.leader_id().term)
}

fn log_id(what: &str, log_id: Option<&LogId<NodeId>>) -> Result<(), Refusal> {
    let Some(log_id) = log_id else {
        return Ok(());
    };
    term(what, log_id.leader_id.term)?;
    if log_id.index > RAFT_INDEX_MAX {
        return Err(Refusal::new(
            ErrorCode::RaftOutOfRange,
            format!(
                "{what} has log index {}, above the limit {RAFT_INDEX_MAX}",
                log_id.index
            ),
        ));
    }
    Ok(())
}

/// A vote request or answer: its vote and the last log id it names.
fn vote_and_last_log_id(
    what: &str,
    vote_given: &Vote<NodeId>,
    last_log_id: Option<&LogId<NodeId>>,
) -> Result<(), Refusal> {
    vote(what, vote_given)?;
    log_id(&format!("{what}'s last log id"), last_log_id)
}

fn snapshot_meta(what: &str, meta: &SnapshotMeta<NodeId, Node>) -> Result<(), Refusal> {
    log_id(&format!("{what}'s last log id"), meta.last_log_id.as_ref())?;
    log_id(
        &format!("{what}'s membership"),
        meta.last_membership.log_id().as_ref(),
    )
}

impl Bounded for AppendEntriesRequest<TypeConfig> {
    fn check_bounds(&self) -> Result<(), Refusal> {
        vote("the append", &self.vote)?;
        log_id("the append's previous log id", self.prev_log_id.as_ref())?;
        log_id("the append's commit", self.leader_commit.as_ref())?;
        for entry in &self.entries {
            log_id("an appended entry", Some(&entry.log_id))?;
        }
        Ok(())
    }
}

impl Bounded for VoteRequest<NodeId> {
    fn check_bounds(&self) -> Result<(), Refusal> {
        vote_and_last_log_id("the vote request", &self.vote, self.last_log_id.as_ref())
    }
}

impl Bounded for InstallSnapshotRequest<TypeConfig> {
    fn check_bounds(&self) -> Result<(), Refusal> {
        vote("the snapshot", &self.vote)?;
        snapshot_meta("the snapshot", &self.meta)
    }
}

impl Bounded for VoteResponse<NodeId> {
    fn check_bounds(&self) -> Result<(), Refusal> {
        vote_and_last_log_id("the vote answer", &self.vote, self.last_log_id.as_ref())
    }
}

impl Bounded for AppendEntriesResponse<NodeId> {
    fn check_bounds(&self) -> Result<(), Refusal> {
        match self {
            AppendEntriesResponse::Success | AppendEntriesResponse::Conflict => Ok(()),
            AppendEntriesResponse::PartialSuccess(matching) => {
                log_id("the append answer", matching.as_ref())
            }
            AppendEntriesResponse::HigherVote(higher) => vote("the append answer", higher),
        }
    }
}

impl Bounded for InstallSnapshotResponse<NodeId> {
    fn check_bounds(&self) -> Result<(), Refusal> {
        vote("the snapshot answer", &self.vote)
    }
}

/// An answer of a peer's Raft: an error answer carries no term openraft adopts.
impl<T: Bounded, E> Bounded for Result<T, RaftError<NodeId, E>>
where
    E: std::error::Error,
{
    fn check_bounds(&self) -> Result<(), Refusal> {
        match self {
            Ok(answer) => answer.check_bounds(),
            Err(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LeaderId};

    use super::*;

    fn id(term: u64, index: u64) -> LogId<NodeId> {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    fn vote_of(term: u64) -> Vote<NodeId> {
        Vote {
            leader_id: LeaderId::new(term, 1),
            committed: true,
        }
    }

    fn append(term: u64, index: u64) -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest {
            vote: vote_of(term.min(5)),
            prev_log_id: Some(id(1, 1)),
            entries: vec![Entry {
                log_id: id(term, index),
                payload: EntryPayload::Blank,
            }],
            leader_commit: None,
        }
    }

    #[test]
    fn terms_and_indexes_above_the_limits_are_refused() {
        let within = [(1, 2), (RAFT_TERM_MAX, RAFT_INDEX_MAX)];
        for (term, index) in within {
            assert_eq!(append(term, index).check_bounds(), Ok(()));
        }
        let beyond = [
            (RAFT_TERM_MAX + 1, 2, "term 4611686018427387905"),
            (u64::MAX, 2, "term 18446744073709551615"),
            (1, RAFT_INDEX_MAX + 1, "log index 4611686018427387905"),
            (1, u64::MAX, "log index 18446744073709551615"),
        ];
        for (term, index, expected) in beyond {
            let refusal = append(term, index).check_bounds().unwrap_err();
            assert_eq!(refusal.code, ErrorCode::RaftOutOfRange);
            assert!(
                refusal.message.contains(expected) && refusal.message.contains("appended entry"),
                "{refusal:?}"
            );
        }
        let vote = VoteRequest {
            vote: vote_of(u64::MAX),
            last_log_id: None,
        };
        assert!(vote
            .check_bounds()
            .unwrap_err()
            .message
            .contains("vote request"));
        let higher: Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>> =
            Ok(AppendEntriesResponse::HigherVote(vote_of(u64::MAX)));
        assert!(higher.check_bounds().is_err());
    }
}
