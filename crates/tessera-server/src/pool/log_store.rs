//! The Raft log, vote and commit index in `redb` (`raft.redb` in the data
//! directory), each write committed durably before openraft is told.
//!
//! The state machine is rebuilt at start from its last snapshot
//! (`control-snapshot.json`, see `state_machine.rs`) and the log after it.
//! openraft purges the log a snapshot covers, keeping the last
//! `log_kept_after_snapshot` entries for followers that lag a little.

use super::error::PoolStartError;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{AnyError, Entry, LogId, StorageError, StorageIOError, Vote};
use redb::{Database, Durability, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::types::{NodeId, TypeConfig};
use crate::seams::Disk;

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

pub const RAFT_FILE: &str = "raft.redb";
/// Meta key: set while the server catches up after losing its log.
const CATCHING_UP: &str = "catching_up";
/// redb's page cache for the log: it holds a few thousand entries at most.
const LOG_CACHE_BYTES: usize = 16 * 1024 * 1024;

#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
    disk: Arc<dyn Disk>,
}

fn write_error(err: impl ToString) -> StorageError<NodeId> {
    StorageIOError::write_logs(AnyError::error(err.to_string())).into()
}

fn read_error(err: impl ToString) -> StorageError<NodeId> {
    StorageIOError::read_logs(AnyError::error(err.to_string())).into()
}

impl LogStore {
    pub fn open(data_dir: &Path, disk: Arc<dyn Disk>) -> Result<LogStore, PoolStartError> {
        let path = data_dir.join(RAFT_FILE);
        let db =
            disk.open_database(&path, LOG_CACHE_BYTES)
                .map_err(|err| PoolStartError::LogOpen {
                    path: path.clone(),
                    message: err.to_string(),
                })?;
        let failed = |err: &dyn std::fmt::Display| PoolStartError::LogWrite {
            path: path.clone(),
            message: err.to_string(),
        };
        let txn = db.begin_write().map_err(|e| failed(&e))?;
        txn.open_table(LOG).map_err(|e| failed(&e))?;
        txn.open_table(META).map_err(|e| failed(&e))?;
        txn.commit().map_err(|e| failed(&e))?;
        Ok(LogStore {
            db: Arc::new(db),
            disk,
        })
    }

    /// True if this server must catch up with the pool before it votes or
    /// answers a leader: its log is empty, or it was catching up when it
    /// stopped (a partial log, written by a leader it followed before it
    /// could vote, may lack entries its lost log had helped commit).
    pub fn must_catch_up(&self) -> bool {
        self.is_empty()
            || self
                .read_meta::<bool>(CATCHING_UP)
                .ok()
                .flatten()
                .unwrap_or(false)
    }

    /// Records durably whether this server is catching up (see
    /// [`LogStore::must_catch_up`]); set before openraft writes anything.
    pub async fn set_catching_up(&self, on: bool) -> Result<(), StorageError<NodeId>> {
        self.write_meta(CATCHING_UP, &on).await
    }

    /// True if this server has ever been part of a formed pool.
    fn is_empty(&self) -> bool {
        self.read_meta::<Vote<NodeId>>("vote")
            .ok()
            .flatten()
            .is_none()
            && self.last_index().ok().flatten().is_none()
    }

    fn last_index(&self) -> Result<Option<u64>, String> {
        let txn = self.db.begin_read().map_err(|e| e.to_string())?;
        let table = txn.open_table(LOG).map_err(|e| e.to_string())?;
        let last = table.last().map_err(|e| e.to_string())?;
        Ok(last.map(|(key, _)| key.value()))
    }

    fn read_meta<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, String> {
        let txn = self.db.begin_read().map_err(|e| e.to_string())?;
        let table = txn.open_table(META).map_err(|e| e.to_string())?;
        let Some(value) = table.get(key).map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        serde_json::from_slice(value.value())
            .map(Some)
            .map_err(|e| e.to_string())
    }

    /// Runs one durable write transaction: on a blocking thread on a real
    /// disk, inline on a simulated one.
    async fn write<F>(&self, f: F) -> Result<(), StorageError<NodeId>>
    where
        F: FnOnce(&redb::WriteTransaction) -> Result<(), String> + Send + 'static,
    {
        let db = self.db.clone();
        let transaction = move || {
            let mut txn = db.begin_write().map_err(|e| e.to_string())?;
            txn.set_durability(Durability::Immediate);
            f(&txn)?;
            txn.commit().map_err(|e| e.to_string())
        };
        if !self.disk.commit_on_threads() {
            let delay = self.disk.commit_delay();
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            return transaction().map_err(write_error);
        }
        tokio::task::spawn_blocking(transaction)
            .await
            .map_err(write_error)?
            .map_err(write_error)
    }

    async fn write_meta<T: Serialize>(
        &self,
        key: &'static str,
        value: &T,
    ) -> Result<(), StorageError<NodeId>> {
        let bytes = serde_json::to_vec(value).map_err(write_error)?;
        self.write(move |txn| {
            let mut table = txn.open_table(META).map_err(|e| e.to_string())?;
            table
                .insert(key, bytes.as_slice())
                .map_err(|e| e.to_string())?;
            Ok(())
        })
        .await
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        if let Some((first, end)) = reversed(&range) {
            // openraft asks for `last applied + 1 .. committed + 1` to
            // apply; a range running backwards means the committed index
            // went back below what this server applied, which Raft never
            // does and only a log that lost committed entries can cause.
            // An empty answer would make openraft index an empty list and
            // panic; an error stops Raft on this server with the reason.
            return Err(read_error(format!(
                "entries {first}..{end} asked for: the committed index went back below \
                 the last applied entry ({}); this server's log no longer matches what \
                 it applied",
                first.saturating_sub(1)
            )));
        }
        let txn = self.db.begin_read().map_err(read_error)?;
        let table = txn.open_table(LOG).map_err(read_error)?;
        let mut entries = Vec::new();
        for item in table.range(range).map_err(read_error)? {
            let (_, value) = item.map_err(read_error)?;
            entries.push(serde_json::from_slice(value.value()).map_err(read_error)?);
        }
        Ok(entries)
    }
}

/// The first index and the end (exclusive) of `range` when it runs
/// backwards: its first index is past its end, not merely equal to it.
fn reversed(range: &impl RangeBounds<u64>) -> Option<(u64, u64)> {
    let first = match range.start_bound() {
        Bound::Included(i) => *i,
        Bound::Excluded(i) => i.checked_add(1)?,
        Bound::Unbounded => return None,
    };
    let end = match range.end_bound() {
        Bound::Included(i) => i.checked_add(1)?,
        Bound::Excluded(i) => *i,
        Bound::Unbounded => return None,
    };
    (first > end).then_some((first, end))
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let last_purged: Option<LogId<NodeId>> =
            self.read_meta("last_purged").map_err(read_error)?;
        let txn = self.db.begin_read().map_err(read_error)?;
        let table = txn.open_table(LOG).map_err(read_error)?;
        let last = match table.last().map_err(read_error)? {
            Some((_, value)) => {
                let entry: Entry<TypeConfig> =
                    serde_json::from_slice(value.value()).map_err(read_error)?;
                Some(entry.log_id)
            }
            None => last_purged,
        };
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.write_meta("vote", vote).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        self.read_meta("vote").map_err(read_error)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        self.write_meta("committed", &committed).await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        Ok(self
            .read_meta::<Option<LogId<NodeId>>>("committed")
            .map_err(read_error)?
            .flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut rows = Vec::new();
        for entry in entries {
            rows.push((
                entry.log_id.index,
                serde_json::to_vec(&entry).map_err(write_error)?,
            ));
        }
        let result = self
            .write(move |txn| {
                let mut table = txn.open_table(LOG).map_err(|e| e.to_string())?;
                for (index, bytes) in &rows {
                    table
                        .insert(*index, bytes.as_slice())
                        .map_err(|e| e.to_string())?;
                }
                Ok(())
            })
            .await;
        callback.log_io_completed(
            result
                .as_ref()
                .map(|_| ())
                .map_err(|err| std::io::Error::other(err.to_string())),
        );
        result
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.write(move |txn| {
            let mut table = txn.open_table(LOG).map_err(|e| e.to_string())?;
            table
                .retain(|index, _| index < log_id.index)
                .map_err(|e| e.to_string())
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let bytes = serde_json::to_vec(&log_id).map_err(write_error)?;
        self.write(move |txn| {
            let mut meta = txn.open_table(META).map_err(|e| e.to_string())?;
            meta.insert("last_purged", bytes.as_slice())
                .map_err(|e| e.to_string())?;
            let mut table = txn.open_table(LOG).map_err(|e| e.to_string())?;
            table
                .retain(|index, _| index > log_id.index)
                .map_err(|e| e.to_string())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seams::FileDisk;

    fn open(dir: &Path) -> LogStore {
        LogStore::open(dir, Arc::new(FileDisk)).unwrap()
    }

    /// A server that lost its log, followed a leader for a while and
    /// stopped holds a vote and a partial log: it must still catch up, not
    /// vote with that log at its next start.
    #[tokio::test]
    async fn a_server_that_stopped_while_catching_up_catches_up_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path());
        assert!(store.must_catch_up(), "an empty log must catch up");
        store.set_catching_up(true).await.unwrap();
        store.save_vote(&Vote::new_committed(7, 1)).await.unwrap();
        drop(store);

        let store = open(dir.path());
        assert!(
            store.must_catch_up(),
            "a partial log left while catching up"
        );
        store.set_catching_up(false).await.unwrap();
        drop(store);

        assert!(!open(dir.path()).must_catch_up(), "caught up, it votes");
    }

    #[tokio::test]
    async fn a_log_that_never_lost_anything_votes() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path());
        store.save_vote(&Vote::new(3, 2)).await.unwrap();
        drop(store);
        assert!(!open(dir.path()).must_catch_up());
    }

    /// openraft applies `last applied + 1 .. committed + 1`; with a
    /// committed index gone back below the last applied entry the range
    /// runs backwards, and an empty answer would make openraft panic on
    /// the empty list. The reader answers with an error instead.
    #[tokio::test]
    async fn a_range_running_backwards_is_an_error_and_an_empty_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path());
        // Applied up to 11, committed back at 9, as openraft would ask.
        let (applied, committed) = (11, 9);
        let backwards = std::ops::Range {
            start: applied + 1,
            end: committed + 1,
        };
        let err = store.try_get_log_entries(backwards).await.unwrap_err();
        assert!(
            err.to_string().contains("the committed index went back"),
            "{err}"
        );
        assert!(store.try_get_log_entries(10..10).await.unwrap().is_empty());
        let empty = std::ops::RangeInclusive::new(3, 2);
        assert!(store.try_get_log_entries(empty).await.unwrap().is_empty());
        assert!(store.try_get_log_entries(5..).await.unwrap().is_empty());
        assert_eq!(reversed(&std::ops::RangeInclusive::new(4, 2)), Some((4, 3)));
        assert_eq!(reversed(&(0..u64::MAX)), None);
    }
}
