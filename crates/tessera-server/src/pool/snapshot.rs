//! Receiving a leader's snapshot: its chunks put together here, not by
//! openraft, so that the whole control state is checked before Raft installs
//! it. A snapshot that does not read as a control state, or breaks one of its
//! invariants ([`ControlState::restored`]: every feature's allocations +
//! parked + free pool equal its codes' seats, allocations of the pool's own
//! servers, ...), is refused with `snapshot_refused` and logged; nothing of it
//! is installed. openraft would treat a refusal from the state machine itself
//! as a storage failure and stop, so the state machine never sees one.

use std::io::Cursor;

use openraft::error::{InstallSnapshotError, RaftError, SnapshotMismatch};
use openraft::raft::{InstallSnapshotRequest, InstallSnapshotResponse};
use openraft::storage::Snapshot;
use openraft::SnapshotSegmentId;
use tessera_core::ControlState;
use tessera_proto::ErrorCode;

use super::types::{NodeId, TypeConfig};
use super::*;
use crate::refusal::Refusal;

/// Largest snapshot taken, in bytes: the control state's JSON holds the
/// pool file (at most [`tessera_core::POOL_FILE_BYTES_MAX`], escaped) and
/// the allocations.
pub const SNAPSHOT_BYTES_MAX: usize = 4 * tessera_core::POOL_FILE_BYTES_MAX;

/// The snapshot being received, one at a time (as openraft does).
#[derive(Debug, Default)]
pub struct Receiving {
    snapshot_id: String,
    data: Vec<u8>,
}

/// What one chunk of a snapshot leaves.
enum Chunk {
    /// It does not follow the chunks received: the leader is told where to
    /// go on from.
    Mismatch(SnapshotMismatch),
    /// More chunks are to come.
    Partial,
    /// The last chunk: the whole snapshot's bytes.
    Whole(Vec<u8>),
}

/// What a Raft peer answers to one chunk, as openraft's own would.
pub type SnapshotAnswer =
    Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>;

impl Pool {
    /// One chunk of a leader's snapshot. The last chunk installs the whole
    /// snapshot, once checked.
    pub async fn receive_snapshot(
        &self,
        request: InstallSnapshotRequest<TypeConfig>,
    ) -> Result<SnapshotAnswer, Refusal> {
        let my_vote = self.raft.metrics().borrow().vote;
        if request.vote < my_vote {
            // A stale leader: nothing to take (openraft answers the same).
            return Ok(Ok(InstallSnapshotResponse { vote: my_vote }));
        }
        let data = match self.receive_chunk(&request).await? {
            Chunk::Mismatch(mismatch) => {
                return Ok(Err(RaftError::APIError(
                    InstallSnapshotError::SnapshotMismatch(mismatch),
                )))
            }
            Chunk::Partial => return Ok(Ok(InstallSnapshotResponse { vote: my_vote })),
            Chunk::Whole(data) => data,
        };
        self.check_snapshot(&request.meta.snapshot_id, &data)?;
        let snapshot = Snapshot {
            meta: request.meta,
            snapshot: Box::new(Cursor::new(data)),
        };
        Ok(
            match self
                .raft
                .install_full_snapshot(request.vote, snapshot)
                .await
            {
                Ok(answer) => Ok(answer.into()),
                Err(fatal) => Err(RaftError::Fatal(fatal)),
            },
        )
    }

    /// Adds a chunk to the snapshot being received: a chunk again (a retry)
    /// or the next one, nothing skipped, and never more than
    /// [`SNAPSHOT_BYTES_MAX`] in all.
    async fn receive_chunk(
        &self,
        request: &InstallSnapshotRequest<TypeConfig>,
    ) -> Result<Chunk, Refusal> {
        let mut receiving = self.receiving.lock().await;
        let offset = request.offset;
        let id = request.meta.snapshot_id.clone();
        let current = receiving
            .as_ref()
            .filter(|r| r.snapshot_id == id)
            .map(|r| r.data.len() as u64);
        let expected = current.unwrap_or(0);
        if offset > expected {
            return Ok(Chunk::Mismatch(SnapshotMismatch {
                expect: SnapshotSegmentId {
                    id: id.clone(),
                    offset: expected,
                },
                got: SnapshotSegmentId { id, offset },
            }));
        }
        let end = (offset as usize).saturating_add(request.data.len());
        if end > SNAPSHOT_BYTES_MAX {
            *receiving = None;
            return Err(
                self.snapshot_refused(&id, format!("it is larger than {SNAPSHOT_BYTES_MAX} bytes"))
            );
        }
        let into = receiving.get_or_insert_with(Receiving::default);
        if current.is_none() {
            *into = Receiving {
                snapshot_id: id,
                data: Vec::new(),
            };
        }
        into.data.truncate(offset as usize);
        into.data.extend_from_slice(&request.data);
        if !request.done {
            return Ok(Chunk::Partial);
        }
        Ok(Chunk::Whole(
            receiving.take().map(|r| r.data).unwrap_or_default(),
        ))
    }

    /// Refuses a whole snapshot that does not read as a control state or
    /// breaks one of its invariants.
    fn check_snapshot(&self, id: &str, data: &[u8]) -> Result<(), Refusal> {
        let state: ControlState = serde_json::from_slice(data).map_err(|err| {
            self.snapshot_refused(id, format!("it is not a control state: {err}"))
        })?;
        state
            .restored()
            .map_err(|reason| self.snapshot_refused(id, reason.to_string()))?;
        Ok(())
    }

    fn snapshot_refused(&self, id: &str, reason: String) -> Refusal {
        let message = format!(
            "server `{}` refused snapshot {id} and installed nothing of it: {reason}",
            self.server_id
        );
        tracing::warn!("{message}");
        Refusal::new(ErrorCode::SnapshotRefused, message)
    }
}
