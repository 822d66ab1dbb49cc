//! The durable grant store: the server's key table in `redb`.
//!
//! One writer thread owns every write transaction. Requests queue their
//! writes; the thread takes everything queued (up to a batch limit), commits
//! it in one durable transaction (`Durability::Immediate`: fsync before the
//! commit returns), then answers every waiter. Under load many checkouts
//! share one fsync; alone, a checkout pays one.
//!
//! Keys are grant ids, which are time-ordered in production
//! (`Seams::production`): new grants append at the B-tree's right edge,
//! so a commit's pages do not grow with the grants held.
//!
//! Only new grants wait for durability: a lost check-in or expiry only keeps
//! a seat counted for one more lease after a restart, which is safe.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, Durability, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::seams::{Disk, FileDisk};

const GRANTS: TableDefinition<&str, &[u8]> = TableDefinition::new("grants");
const META: TableDefinition<&str, &str> = TableDefinition::new("meta");

/// File name of the store inside the data directory.
pub const STORE_FILE: &str = "grants.redb";
/// Writes queued at once before requests wait for room.
const QUEUE_CAPACITY: usize = 65_536;

#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    #[error("grant store {path}: {message}")]
    Open { path: PathBuf, message: String },
    #[error(
        "grant store {path} belongs to pool `{found_pool}` server `{found_server}`, not pool \
         `{pool}` server `{server}`; point data_dir at this server's own directory"
    )]
    WrongOwner {
        path: PathBuf,
        found_pool: String,
        found_server: String,
        pool: String,
        server: String,
    },
    #[error("grant store write failed: {0}")]
    Write(String),
    #[error("grant store writer has stopped")]
    Stopped,
}

/// A grant as written to disk. Expiry is not stored: after a restart every
/// grant gets a full lease from the restart, since neither the wall clock
/// nor the old monotonic clock can be trusted across it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredGrant {
    pub feature: String,
    pub count: u32,
    pub client_id: String,
    pub user: String,
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display: Option<String>,
    pub version: String,
    pub issued_unix_ms: i64,
}

enum StoreOp {
    Put(String, StoredGrant),
    /// Deletes the grant only if the stored record is the one that was
    /// released: a grant converted later under the same id (and queued
    /// before this delete reached the writer) must stay.
    Delete(String, i64),
}

struct Job {
    op: StoreOp,
    done: Option<oneshot::Sender<Result<(), StoreError>>>,
}

/// What opening found.
pub struct Opened {
    /// False when the store file did not exist: a new server, or a lost disk.
    pub existed: bool,
    pub grants: Vec<(String, StoredGrant)>,
}

#[derive(Clone)]
pub struct Store {
    queue: mpsc::Sender<Job>,
}

/// redb's page cache for the grant store. Its default (1 GiB) would keep
/// most of a large store resident; the upper levels of the B-tree, all a
/// checkout needs, fit in far less, and the kernel's page cache keeps the
/// rest close.
const CACHE_BYTES: usize = 64 * 1024 * 1024;

impl Store {
    /// Opens (or creates) the store in `data_dir` on the machine's disk.
    pub fn open(
        data_dir: &Path,
        pool_id: &str,
        server_id: &str,
        batch_max: usize,
    ) -> Result<(Store, Opened), StoreError> {
        let disk: Arc<dyn Disk> = Arc::new(FileDisk);
        Store::open_on(&disk, data_dir, pool_id, server_id, batch_max)
    }

    /// Opens (or creates) the store in `data_dir` on `disk` and starts its
    /// writer: a thread of its own on a real disk, a task on a simulated one.
    pub fn open_on(
        disk: &Arc<dyn Disk>,
        data_dir: &Path,
        pool_id: &str,
        server_id: &str,
        batch_max: usize,
    ) -> Result<(Store, Opened), StoreError> {
        let path = data_dir.join(STORE_FILE);
        let open_error = |message: String| StoreError::Open {
            path: path.clone(),
            message,
        };
        std::fs::create_dir_all(data_dir)
            .map_err(|err| open_error(format!("cannot create the data directory: {err}")))?;
        let existed = disk.exists(&path);
        let db = disk.open_database(&path, CACHE_BYTES).map_err(|err| {
            open_error(format!(
                "cannot open it ({err}); if the file is damaged, move it away: the server then \
                 starts empty and waits out one lease before issuing"
            ))
        })?;
        let grants = check_owner_and_load(&db, &path, pool_id, server_id)?;
        let (queue, receiver) = mpsc::channel(QUEUE_CAPACITY);
        let db = Arc::new(db);
        if disk.commit_on_threads() {
            std::thread::Builder::new()
                .name("tessera-store".into())
                .spawn(move || write_loop(db, receiver, batch_max))
                .map_err(|err| open_error(format!("cannot start the writer thread: {err}")))?;
        } else {
            tokio::spawn(write_loop_inline(db, receiver, batch_max, disk.clone()));
        }
        Ok((Store { queue }, Opened { existed, grants }))
    }

    /// Writes a grant; returns once it is durable.
    pub async fn put(&self, grant_id: String, grant: StoredGrant) -> Result<(), StoreError> {
        let (done, wait) = oneshot::channel();
        let job = Job {
            op: StoreOp::Put(grant_id, grant),
            done: Some(done),
        };
        self.queue
            .send(job)
            .await
            .map_err(|_| StoreError::Stopped)?;
        wait.await.map_err(|_| StoreError::Stopped)?
    }

    /// Queues the removal of a grant; does not wait for it to be durable.
    pub async fn delete(&self, grant_id: String, issued_unix_ms: i64) {
        let job = Job {
            op: StoreOp::Delete(grant_id, issued_unix_ms),
            done: None,
        };
        // A stopped writer means the server is going down; the grant is then
        // restored at restart and lapses after one lease, which is safe.
        let _ = self.queue.send(job).await;
    }
}

fn check_owner_and_load(
    db: &Database,
    path: &Path,
    pool_id: &str,
    server_id: &str,
) -> Result<Vec<(String, StoredGrant)>, StoreError> {
    let open_error = |message: String| StoreError::Open {
        path: path.to_path_buf(),
        message,
    };
    let txn = db.begin_write().map_err(|e| open_error(e.to_string()))?;
    {
        let mut meta = txn
            .open_table(META)
            .map_err(|e| open_error(e.to_string()))?;
        let found_pool = meta
            .get("pool_id")
            .map_err(|e| open_error(e.to_string()))?
            .map(|v| v.value().to_string());
        let found_server = meta
            .get("server_id")
            .map_err(|e| open_error(e.to_string()))?
            .map(|v| v.value().to_string());
        match (found_pool, found_server) {
            (Some(found_pool), Some(found_server)) => {
                if found_pool != pool_id || found_server != server_id {
                    return Err(StoreError::WrongOwner {
                        path: path.to_path_buf(),
                        found_pool,
                        found_server,
                        pool: pool_id.to_string(),
                        server: server_id.to_string(),
                    });
                }
            }
            _ => {
                meta.insert("pool_id", pool_id)
                    .map_err(|e| open_error(e.to_string()))?;
                meta.insert("server_id", server_id)
                    .map_err(|e| open_error(e.to_string()))?;
            }
        }
        txn.open_table(GRANTS)
            .map_err(|e| open_error(e.to_string()))?;
    }
    txn.commit().map_err(|e| open_error(e.to_string()))?;

    let read = db.begin_read().map_err(|e| open_error(e.to_string()))?;
    let table = read
        .open_table(GRANTS)
        .map_err(|e| open_error(e.to_string()))?;
    let mut grants = Vec::new();
    for entry in table.iter().map_err(|e| open_error(e.to_string()))? {
        let (key, value) = entry.map_err(|e| open_error(e.to_string()))?;
        let grant: StoredGrant = serde_json::from_slice(value.value())
            .map_err(|err| open_error(format!("grant {} is unreadable: {err}", key.value())))?;
        grants.push((key.value().to_string(), grant));
    }
    Ok(grants)
}

fn write_loop(db: Arc<Database>, mut receiver: mpsc::Receiver<Job>, batch_max: usize) {
    while let Some(first) = receiver.blocking_recv() {
        commit_queued(&db, first, &mut receiver, batch_max);
    }
}

/// Commits `first` and whatever else is queued (up to `batch_max`) in one
/// transaction, then answers every waiter.
fn commit_queued(db: &Database, first: Job, receiver: &mut mpsc::Receiver<Job>, batch_max: usize) {
    let mut batch = vec![first];
    while batch.len() < batch_max {
        match receiver.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
    let result = commit(db, &batch).map_err(StoreError::Write);
    if let Err(err) = &result {
        tracing::error!("{err}");
    }
    for job in batch {
        if let Some(done) = job.done {
            let _ = done.send(result.clone());
        }
    }
}

/// The writer as a task on the caller's runtime, committing inline: on a
/// simulated disk every step is the simulator's to schedule.
async fn write_loop_inline(
    db: Arc<Database>,
    mut receiver: mpsc::Receiver<Job>,
    batch_max: usize,
    disk: Arc<dyn Disk>,
) {
    while let Some(first) = receiver.recv().await {
        let delay = disk.commit_delay();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        commit_queued(&db, first, &mut receiver, batch_max);
    }
}

fn commit(db: &Database, batch: &[Job]) -> Result<(), String> {
    let mut txn = db.begin_write().map_err(|e| e.to_string())?;
    // Only new grants must be on disk before they are answered; a batch of
    // check-ins and expiries alone is written without an fsync (a lost one
    // keeps a seat reserved one lease longer after a crash, which is safe).
    // A later durable commit makes it durable too.
    let has_grant = batch.iter().any(|job| matches!(job.op, StoreOp::Put(..)));
    txn.set_durability(if has_grant {
        Durability::Immediate
    } else {
        Durability::None
    });
    {
        let mut grants = txn.open_table(GRANTS).map_err(|e| e.to_string())?;
        for job in batch {
            match &job.op {
                StoreOp::Put(id, grant) => {
                    let bytes = serde_json::to_vec(grant).map_err(|e| e.to_string())?;
                    grants
                        .insert(id.as_str(), bytes.as_slice())
                        .map_err(|e| e.to_string())?;
                }
                StoreOp::Delete(id, issued_unix_ms) => {
                    let stored = grants
                        .get(id.as_str())
                        .map_err(|e| e.to_string())?
                        .and_then(|v| serde_json::from_slice::<StoredGrant>(v.value()).ok());
                    if stored.is_some_and(|g| g.issued_unix_ms == *issued_unix_ms) {
                        grants.remove(id.as_str()).map_err(|e| e.to_string())?;
                    }
                }
            }
        }
    }
    txn.commit().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Opens the store again once the previous writer thread has let go of
    /// the file (it does when its queue closes); bounded.
    fn reopen(dir: &Path, server: &str) -> Result<(Store, Opened), StoreError> {
        for _ in 0..200 {
            match Store::open(dir, "p", server, 16) {
                Err(StoreError::Open { message, .. }) if message.contains("already open") => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                other => return other,
            }
        }
        Store::open(dir, "p", server, 16)
    }

    fn grant(feature: &str) -> StoredGrant {
        StoredGrant {
            feature: feature.into(),
            count: 2,
            client_id: "c".into(),
            user: "u".into(),
            host: "h".into(),
            display: None,
            version: "1.0".into(),
            issued_unix_ms: 5,
        }
    }

    #[tokio::test]
    async fn grants_survive_reopen_and_deletes_apply_in_order() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (store, opened) = Store::open(dir.path(), "p", "A", 16).unwrap();
            assert!(!opened.existed);
            store.put("g1".into(), grant("cad")).await.unwrap();
            store.put("g2".into(), grant("sim")).await.unwrap();
            store.delete("g1".into(), 5).await;
            // A delete of an older grant with the same id leaves the newer one.
            store.put("g9".into(), grant("sim")).await.unwrap();
            store.delete("g9".into(), 4).await;
            // A put after the delete is committed after it: wait on it.
            store.put("g3".into(), grant("cad")).await.unwrap();
        }
        let (_store, opened) = reopen(dir.path(), "A").unwrap();
        assert!(opened.existed);
        let mut ids: Vec<String> = opened.grants.iter().map(|(id, _)| id.clone()).collect();
        ids.sort();
        assert_eq!(ids, vec!["g2", "g3", "g9"]);
        assert_eq!(opened.grants[0].1.count, 2);
    }

    #[tokio::test]
    async fn a_store_of_another_server_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path(), "p", "A", 16).unwrap());
        let err = reopen(dir.path(), "B").err().unwrap();
        assert!(
            err.to_string().contains("belongs to pool `p` server `A`"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_damaged_store_is_refused_with_advice() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(STORE_FILE), vec![0x5a; 8192]).unwrap();
        let err = Store::open(dir.path(), "p", "A", 16).err().unwrap();
        assert!(err.to_string().contains("move it away"), "{err}");
    }
}
