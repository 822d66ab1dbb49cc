//! The pool's state machine: applies [`ControlCommand`]s to a
//! [`ControlState`] and publishes every new state on a watch channel, which
//! the issuer and the quota loop follow.
//!
//! It lives in memory. A snapshot (JSON of the state) is written to
//! `control-snapshot.json` in the data directory, durably, before openraft
//! purges the log it covers; at start the state machine loads it and the log
//! after it is applied again. A server that missed purged entries receives
//! the leader's snapshot.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    AnyError, Entry, EntryPayload, LogId, RaftSnapshotBuilder, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership,
};
use tessera_core::{ControlOutcome, ControlState};
use tokio::sync::{watch, RwLock};

use super::error::PoolStartError;
use super::types::{Node, NodeId, TypeConfig};
use crate::seams::{Disk, Observer};

/// What the state machine publishes after each batch it applies.
#[derive(Clone, Debug, Default)]
pub struct Applied {
    /// Index of the last applied log entry (0 before any).
    pub index: u64,
    pub state: Arc<ControlState>,
    pub membership: StoredMembership<NodeId, Node>,
}

struct Inner {
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, Node>,
    state: ControlState,
    snapshot: Option<(SnapshotMeta<NodeId, Node>, Vec<u8>)>,
    snapshots_built: u64,
}

#[derive(Clone)]
pub struct StateMachine {
    inner: Arc<RwLock<Inner>>,
    published: Arc<watch::Sender<Applied>>,
    /// Where the latest snapshot is kept.
    snapshot_path: PathBuf,
    disk: Arc<dyn Disk>,
    /// A simulator's checker, told of every state reached, and whose.
    observer: Option<(String, Arc<dyn Observer>)>,
}

/// The snapshot file: openraft's metadata and the state's JSON.
#[derive(serde::Serialize, serde::Deserialize)]
struct SnapshotFile {
    meta: SnapshotMeta<NodeId, Node>,
    state: String,
}

/// The snapshot file's name in the data directory.
pub const SNAPSHOT_FILE: &str = "control-snapshot.json";

fn sm_error(err: impl ToString) -> StorageError<NodeId> {
    StorageIOError::write_state_machine(AnyError::error(err.to_string())).into()
}

impl StateMachine {
    /// The state machine of the server whose data directory is `data_dir`:
    /// empty, or as of the snapshot kept there.
    pub fn open(
        data_dir: &Path,
        disk: Arc<dyn Disk>,
        observer: Option<(String, Arc<dyn Observer>)>,
    ) -> Result<(StateMachine, watch::Receiver<Applied>), PoolStartError> {
        let snapshot_path = data_dir.join(SNAPSHOT_FILE);
        let mut inner = Inner {
            last_applied: None,
            membership: StoredMembership::default(),
            state: ControlState::default(),
            snapshot: None,
            snapshots_built: 0,
        };
        match disk.read_file(&snapshot_path) {
            Ok(Some(bytes)) => {
                let damaged = |message: String| PoolStartError::SnapshotDamaged {
                    path: snapshot_path.clone(),
                    message,
                };
                let file: SnapshotFile =
                    serde_json::from_slice(&bytes).map_err(|e| damaged(e.to_string()))?;
                let state: ControlState =
                    serde_json::from_str(&file.state).map_err(|e| damaged(e.to_string()))?;
                inner.state = state.restored().map_err(|e| damaged(e.to_string()))?;
                inner.last_applied = file.meta.last_log_id;
                inner.membership = file.meta.last_membership.clone();
                inner.snapshot = Some((file.meta, file.state.into_bytes()));
            }
            Ok(None) => {}
            Err(source) => {
                return Err(PoolStartError::SnapshotRead {
                    path: snapshot_path,
                    source,
                })
            }
        }
        let (sender, receiver) = watch::channel(Applied::default());
        let machine = StateMachine {
            inner: Arc::new(RwLock::new(inner)),
            published: Arc::new(sender),
            snapshot_path,
            disk,
            observer,
        };
        if let Ok(inner) = machine.inner.try_read() {
            machine.publish(&inner);
        }
        Ok((machine, receiver))
    }

    /// Writes a snapshot durably, replacing the last one all or nothing.
    fn persist(&self, meta: &SnapshotMeta<NodeId, Node>, data: &[u8]) -> std::io::Result<()> {
        let file = SnapshotFile {
            meta: meta.clone(),
            state: String::from_utf8(data.to_vec())
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?,
        };
        let bytes = serde_json::to_vec(&file)?;
        self.disk.replace_file(&self.snapshot_path, &bytes)
    }

    fn observe(&self, inner: &Inner) {
        if let Some((server, observer)) = &self.observer {
            let index = inner.last_applied.map_or(0, |id| id.index);
            observer.applied(server, index, &inner.state);
        }
    }

    fn publish(&self, inner: &Inner) {
        self.published.send_replace(Applied {
            index: inner.last_applied.map_or(0, |id| id.index),
            state: Arc::new(inner.state.clone()),
            membership: inner.membership.clone(),
        });
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let mut inner = self.inner.write().await;
        let data = serde_json::to_vec(&inner.state).map_err(sm_error)?;
        inner.snapshots_built += 1;
        let snapshot_id = match inner.last_applied {
            Some(id) => format!("{}-{}-{}", id.leader_id, id.index, inner.snapshots_built),
            None => format!("--{}", inner.snapshots_built),
        };
        let meta = SnapshotMeta {
            last_log_id: inner.last_applied,
            last_membership: inner.membership.clone(),
            snapshot_id,
        };
        // Durable before openraft may purge the log it covers.
        self.persist(&meta, &data).map_err(sm_error)?;
        inner.snapshot = Some((meta.clone(), data.clone()));
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, Node>), StorageError<NodeId>> {
        let inner = self.inner.read().await;
        Ok((inner.last_applied, inner.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<ControlOutcome>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut inner = self.inner.write().await;
        let mut outcomes = Vec::new();
        for entry in entries {
            inner.last_applied = Some(entry.log_id);
            let observed = matches!(entry.payload, EntryPayload::Normal(_));
            let outcome = match &entry.payload {
                EntryPayload::Blank => ControlOutcome::Refused {
                    reason: "blank entry".into(),
                },
                EntryPayload::Normal(command) => {
                    let outcome = inner.state.apply(command);
                    if let ControlOutcome::Refused { reason } = &outcome {
                        tracing::warn!(
                            "control command at index {} refused: {reason}",
                            entry.log_id.index
                        );
                    }
                    outcome
                }
                EntryPayload::Membership(membership) => {
                    inner.membership =
                        StoredMembership::new(Some(entry.log_id), membership.clone());
                    ControlOutcome::Refused {
                        reason: "membership entry".into(),
                    }
                }
            };
            if observed {
                self.observe(&inner);
            }
            outcomes.push(outcome);
        }
        self.publish(&inner);
        Ok(outcomes)
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, Node>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let data = snapshot.into_inner();
        // Checked already by the peer handler (`snapshot.rs`): a refusal
        // here would stop openraft.
        let state: ControlState = serde_json::from_slice(&data).map_err(sm_error)?;
        let state = state.restored().map_err(sm_error)?;
        self.persist(meta, &data).map_err(sm_error)?;
        tracing::info!(
            "installed the leader's snapshot up to log index {}",
            meta.last_log_id.map_or(0, |id| id.index)
        );
        let mut inner = self.inner.write().await;
        inner.state = state;
        inner.last_applied = meta.last_log_id;
        inner.membership = meta.last_membership.clone();
        inner.snapshot = Some((meta.clone(), data));
        self.observe(&inner);
        self.publish(&inner);
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let inner = self.inner.read().await;
        Ok(inner.snapshot.as_ref().map(|(meta, data)| Snapshot {
            meta: meta.clone(),
            snapshot: Box::new(Cursor::new(data.clone())),
        }))
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }
}
