//! The durable grant store: the server's key table in `redb`, and the
//! grant journal in front of it ([`journal`]).
//!
//! One writer owns the journal. Requests queue their writes; the writer
//! takes everything queued (up to a batch limit), appends it to the journal
//! in one write and, when the batch holds a new grant, one `fdatasync`, then
//! answers every waiter. Under load many checkouts share one sync; alone, a
//! checkout pays one. On the server's runtime the writer is woken for new
//! grants by a worker that runs out of work rather than by each grant
//! ([`queue`]), so the grants read together share a sync. A full journal
//! segment is folded into the table in
//! the background (a thread of its own), as the net effect of its changes:
//! a grant checked out and in within one segment never reaches the table.
//! At start, what the journal holds beyond the table is folded in before
//! the grants are read.
//!
//! Keys are grant ids, which are time-ordered in production
//! (`Seams::production`): new grants append at the B-tree's right edge,
//! so a fold's pages do not grow with the grants held.
//!
//! Only new grants wait for durability: a lost check-in or expiry only keeps
//! a seat counted for one more lease after a restart, which is safe. Nor do
//! they wake the writer ([`queue`]): they go with the next new grant's
//! batch, in queue order, or within [`queue::DEFER`] when none comes.

mod journal;
mod queue;

pub use journal::JOURNAL_DIR;
pub use queue::workers_idle;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use tessera_core::SharedText;
use tokio::sync::oneshot;

use queue::{Next, Queue, Signal};

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
    pub feature: SharedText,
    pub count: u32,
    pub client_id: SharedText,
    pub user: SharedText,
    pub host: SharedText,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display: Option<SharedText>,
    pub version: SharedText,
    pub issued_unix_ms: i64,
}

#[derive(Debug, PartialEq)]
enum StoreOp {
    /// A new grant; `true` when its id was made for it by a checkout, so no
    /// earlier grant of that id can be in the table.
    Put(SharedText, StoredGrant, bool),
    /// Deletes the grant only if the stored record is the one that was
    /// released: a grant converted later under the same id (and queued
    /// before this delete reached the writer) must stay.
    Delete(SharedText, i64),
}

struct Job {
    /// `None`: nothing to write, only a sync of everything before it.
    op: Option<StoreOp>,
    done: Option<oneshot::Sender<Result<(), StoreError>>>,
}

/// What opening found.
pub struct Opened {
    pub grants: Vec<(SharedText, StoredGrant)>,
}

#[derive(Clone)]
pub struct Store {
    queue: Arc<Sender>,
}

/// The requests' end of the writer's queue; the last one dropped closes
/// it, and the writer stops once it has written what is left.
struct Sender(Arc<Queue>);

impl Drop for Sender {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Set by [`crate::runtime`]: this process's runtime calls
/// [`workers_idle`] when a worker runs out of work, so writers on the
/// machine's disk may wait for that instead of being woken by each grant.
static RUNTIME_REPORTS_IDLE: AtomicBool = AtomicBool::new(false);

/// Records that the process's runtime calls [`workers_idle`] whenever a
/// worker is about to park.
pub(crate) fn runtime_reports_idle() {
    RUNTIME_REPORTS_IDLE.store(true, Ordering::Relaxed);
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

    /// Whether `data_dir` on `disk` holds a store: false for a new server,
    /// or one that lost it.
    pub fn exists_on(disk: &dyn Disk, data_dir: &Path) -> bool {
        disk.exists(&data_dir.join(STORE_FILE))
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
        let on_idle = RUNTIME_REPORTS_IDLE.load(Ordering::Relaxed);
        Store::open_with(disk, data_dir, pool_id, server_id, batch_max, on_idle)
    }

    /// As [`Store::open_on`]; `on_idle`: a writer thread is woken for new
    /// grants by idle workers ([`workers_idle`]) rather than by each grant.
    fn open_with(
        disk: &Arc<dyn Disk>,
        data_dir: &Path,
        pool_id: &str,
        server_id: &str,
        batch_max: usize,
        on_idle: bool,
    ) -> Result<(Store, Opened), StoreError> {
        let path = data_dir.join(STORE_FILE);
        let open_error = |message: String| StoreError::Open {
            path: path.clone(),
            message,
        };
        std::fs::create_dir_all(data_dir)
            .map_err(|err| open_error(format!("cannot create the data directory: {err}")))?;
        let db = disk.open_database(&path, CACHE_BYTES).map_err(|err| {
            open_error(format!(
                "cannot open it ({err}); if the file is damaged, move it away: the server then \
                 starts empty and waits out one lease before issuing"
            ))
        })?;
        check_owner(&db, &path, pool_id, server_id)?;
        let db = Arc::new(db);
        let (journal, mut folder) = journal::open(disk, data_dir, &db).map_err(open_error)?;
        let grants = load(&db, &path)?;
        let signal = match disk.commit_on_threads() {
            true => Signal::Thread(std::sync::OnceLock::new()),
            false => Signal::Task(tokio::sync::Notify::new()),
        };
        let queue = match on_idle && disk.commit_on_threads() {
            true => Queue::woken_on_idle(signal, QUEUE_CAPACITY, batch_max),
            false => Arc::new(Queue::new(signal, QUEUE_CAPACITY, batch_max)),
        };
        if disk.commit_on_threads() {
            let (windows, folds) = std::sync::mpsc::channel::<journal::Window>();
            let writing = journal.writing();
            std::thread::Builder::new()
                .name("tessera-fold".into())
                .spawn(move || {
                    folder.make_next(writing);
                    for window in folds {
                        folder.fold(window);
                    }
                })
                .map_err(|err| open_error(format!("cannot start the fold thread: {err}")))?;
            let writer = queue.clone();
            let thread = std::thread::Builder::new()
                .name("tessera-store".into())
                .spawn(move || {
                    let mut fold = |window| {
                        let _ = windows.send(window);
                    };
                    write_loop(journal, &writer, &mut fold)
                })
                .map_err(|err| open_error(format!("cannot start the writer thread: {err}")))?;
            if let Signal::Thread(handle) = &queue.signal {
                let _ = handle.set(thread.thread().clone());
            }
        } else {
            tokio::spawn(write_loop_inline(
                journal,
                folder,
                queue.clone(),
                disk.clone(),
            ));
        }
        let store = Store {
            queue: Arc::new(Sender(queue)),
        };
        Ok((store, Opened { grants }))
    }

    /// Writes a grant; returns once it is durable. `fresh`: a checkout made
    /// the id for this grant, so no earlier grant has it.
    pub async fn put(
        &self,
        grant_id: SharedText,
        grant: StoredGrant,
        fresh: bool,
    ) -> Result<(), StoreError> {
        let (done, mut wait) = oneshot::channel();
        let job = Job {
            op: Some(StoreOp::Put(grant_id, grant, fresh)),
            done: Some(done),
        };
        match self.queue.0.push_reported(job).await {
            None => return Err(StoreError::Stopped),
            Some(true) => {}
            // Left for an idle worker to report; should none idle in time,
            // this grant wakes the writer itself.
            Some(false) => {
                if let Ok(done) = tokio::time::timeout(queue::UNREPORTED_MAX, &mut wait).await {
                    return done.map_err(|_| StoreError::Stopped)?;
                }
                self.queue.0.report_late();
            }
        }
        wait.await.map_err(|_| StoreError::Stopped)?
    }

    /// Queues a grant without waiting for it to be durable (`[store] sync =
    /// "background"`): it is written and synced with the next full batch,
    /// or within [`queue::DEFER`]. `Err` only once the store has stopped.
    pub async fn put_unsynced(
        &self,
        grant_id: SharedText,
        grant: StoredGrant,
        fresh: bool,
    ) -> Result<(), StoreError> {
        // A journal that stopped at an error makes nothing durable: refuse,
        // as a put that waits would.
        if let Some(reason) = self.queue.0.failed() {
            return Err(StoreError::Write(reason.to_string()));
        }
        let job = Job {
            op: Some(StoreOp::Put(grant_id, grant, fresh)),
            done: None,
        };
        match self.queue.0.push(job).await {
            true => Ok(()),
            false => Err(StoreError::Stopped),
        }
    }

    /// A clean stop: takes no more writes, and returns once everything
    /// queued before is written and synced.
    pub async fn finish(&self) -> Result<(), StoreError> {
        let (done, wait) = oneshot::channel();
        let job = Job {
            op: None,
            done: Some(done),
        };
        if !self.queue.0.close_after(job) {
            return Err(StoreError::Stopped);
        }
        wait.await.map_err(|_| StoreError::Stopped)?
    }

    /// Queues the removal of a grant; does not wait for it to be durable,
    /// nor wake the writer: it goes with the next new grant's batch, or
    /// within [`queue::DEFER`].
    pub async fn delete(&self, grant_id: SharedText, issued_unix_ms: i64) {
        let job = Job {
            op: Some(StoreOp::Delete(grant_id, issued_unix_ms)),
            done: None,
        };
        // A stopped writer means the server is going down; the grant is then
        // restored at restart and lapses after one lease, which is safe.
        let _ = self.queue.0.push(job).await;
    }
}

fn check_owner(
    db: &Database,
    path: &Path,
    pool_id: &str,
    server_id: &str,
) -> Result<(), StoreError> {
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
    txn.commit().map_err(|e| open_error(e.to_string()))
}

fn load(db: &Database, path: &Path) -> Result<Vec<(SharedText, StoredGrant)>, StoreError> {
    let open_error = |message: String| StoreError::Open {
        path: path.to_path_buf(),
        message,
    };
    let read = db.begin_read().map_err(|e| open_error(e.to_string()))?;
    let table = read
        .open_table(GRANTS)
        .map_err(|e| open_error(e.to_string()))?;
    let mut grants = Vec::new();
    for entry in table.iter().map_err(|e| open_error(e.to_string()))? {
        let (key, value) = entry.map_err(|e| open_error(e.to_string()))?;
        let grant: StoredGrant = serde_json::from_slice(value.value())
            .map_err(|err| open_error(format!("grant {} is unreadable: {err}", key.value())))?;
        grants.push((SharedText::from(key.value()), grant));
    }
    Ok(grants)
}

fn write_loop(mut journal: journal::Journal, queue: &Queue, fold: &mut dyn FnMut(journal::Window)) {
    loop {
        match queue.next(tokio::time::Instant::now()) {
            Next::Write(jobs) => write_jobs(&mut journal, jobs, fold, queue),
            Next::Sleep(None) => std::thread::park(),
            Next::Sleep(Some(at_most)) => std::thread::park_timeout(at_most),
            Next::Stop => return,
        }
    }
}

/// Appends `jobs` to the journal in one write, syncs it if it holds a new
/// grant, then answers every waiter; a failure is also recorded in `queue`
/// for the writes no one waits for.
fn write_jobs(
    journal: &mut journal::Journal,
    jobs: Vec<Job>,
    fold: &mut dyn FnMut(journal::Window),
    queue: &Queue,
) {
    let mut ops = Vec::with_capacity(jobs.len());
    let mut waiting: Vec<oneshot::Sender<Result<(), StoreError>>> = Vec::new();
    // Only new grants must be on disk before they are answered; a batch of
    // check-ins and expiries alone is written without a sync (a lost one
    // keeps a seat reserved one lease longer after a crash, which is safe).
    // A later sync makes it durable too, as does a sync asked for alone.
    let mut sync = false;
    for job in jobs {
        match job.op {
            Some(op) => {
                sync |= matches!(op, StoreOp::Put(..));
                ops.push(op);
            }
            None => sync = true,
        }
        waiting.extend(job.done);
    }
    let result = journal.append(ops, sync, fold).map_err(StoreError::Write);
    if let Err(err) = &result {
        tracing::error!("{err}");
    }
    if let Err(StoreError::Write(reason)) = &result {
        queue.fail(reason.clone());
    }
    for done in waiting {
        let _ = done.send(result.clone());
    }
}

/// The writer as a task on the caller's runtime, writing and folding
/// inline: on a simulated disk every step is the simulator's to schedule.
async fn write_loop_inline(
    mut journal: journal::Journal,
    mut folder: journal::Folder,
    queue: Arc<Queue>,
    disk: Arc<dyn Disk>,
) {
    let mut fold = |window| folder.fold(window);
    let Signal::Task(notify) = &queue.signal else {
        return;
    };
    loop {
        match queue.next(tokio::time::Instant::now()) {
            Next::Write(jobs) => {
                let delay = disk.commit_delay();
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                write_jobs(&mut journal, jobs, &mut fold, &queue);
            }
            Next::Sleep(None) => notify.notified().await,
            Next::Sleep(Some(at_most)) => {
                let _ = tokio::time::timeout(at_most, notify.notified()).await;
            }
            Next::Stop => return,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Opens the store again once the previous writer thread has let go of
    /// the file (it does when its queue closes); bounded.
    fn reopen(dir: &Path, server: &str) -> Result<(Store, Opened), StoreError> {
        reopen_on(&(Arc::new(FileDisk) as Arc<dyn Disk>), dir, server)
    }

    fn reopen_on(
        disk: &Arc<dyn Disk>,
        dir: &Path,
        server: &str,
    ) -> Result<(Store, Opened), StoreError> {
        for _ in 0..200 {
            match Store::open_on(disk, dir, "p", server, 16) {
                Err(StoreError::Open { message, .. }) if message.contains("already open") => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                other => return other,
            }
        }
        Store::open_on(disk, dir, "p", server, 16)
    }

    /// The machine's disk, for tests: journal segments of `segment_bytes`
    /// (one page, so that a few grants fill several and the fold thread
    /// folds them), whose writes and syncs fail once `failing` is set.
    #[derive(Default)]
    struct TestDisk {
        segment_bytes: Option<u64>,
        failing: Arc<std::sync::atomic::AtomicBool>,
    }

    impl TestDisk {
        fn small_segments() -> TestDisk {
            TestDisk {
                segment_bytes: Some(4096),
                ..TestDisk::default()
            }
        }
    }

    /// A segment of [`TestDisk`].
    #[derive(Debug)]
    struct TestFile {
        file: Box<dyn redb::StorageBackend>,
        failing: Arc<std::sync::atomic::AtomicBool>,
    }

    impl TestFile {
        fn check(&self) -> std::io::Result<()> {
            match self.failing.load(std::sync::atomic::Ordering::SeqCst) {
                true => Err(std::io::Error::other("the disk failed")),
                false => Ok(()),
            }
        }
    }

    impl redb::StorageBackend for TestFile {
        fn len(&self) -> std::io::Result<u64> {
            self.file.len()
        }
        fn read(&self, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
            self.file.read(offset, len)
        }
        fn set_len(&self, len: u64) -> std::io::Result<()> {
            self.check()?;
            self.file.set_len(len)
        }
        fn sync_data(&self, eventual: bool) -> std::io::Result<()> {
            self.check()?;
            self.file.sync_data(eventual)
        }
        fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
            self.check()?;
            self.file.write(offset, data)
        }
    }

    impl Disk for TestDisk {
        fn open_database(
            &self,
            path: &Path,
            cache_bytes: usize,
        ) -> Result<Database, redb::DatabaseError> {
            FileDisk.open_database(path, cache_bytes)
        }
        fn exists(&self, path: &Path) -> bool {
            FileDisk.exists(path)
        }
        fn commit_on_threads(&self) -> bool {
            true
        }
        fn read_file(&self, path: &Path) -> std::io::Result<Option<Vec<u8>>> {
            FileDisk.read_file(path)
        }
        fn replace_file(&self, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
            FileDisk.replace_file(path, bytes)
        }
        fn rename(&self, from: &Path, to: &Path) -> std::io::Result<bool> {
            FileDisk.rename(from, to)
        }
        fn open_file(&self, path: &Path) -> std::io::Result<Box<dyn redb::StorageBackend>> {
            Ok(Box::new(TestFile {
                file: FileDisk.open_file(path)?,
                failing: self.failing.clone(),
            }))
        }
        fn create_dir(&self, path: &Path) -> std::io::Result<()> {
            FileDisk.create_dir(path)
        }
        fn list_dir(&self, path: &Path) -> std::io::Result<Vec<PathBuf>> {
            FileDisk.list_dir(path)
        }
        fn remove_file(&self, path: &Path) -> std::io::Result<()> {
            FileDisk.remove_file(path)
        }
        fn sync_dir(&self, path: &Path) -> std::io::Result<()> {
            FileDisk.sync_dir(path)
        }
        fn journal_segment_bytes(&self) -> u64 {
            self.segment_bytes
                .unwrap_or_else(|| FileDisk.journal_segment_bytes())
        }
    }

    fn segment_files(dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join(JOURNAL_DIR))
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .collect();
        files.sort();
        files
    }

    /// The segment the writer wrote to (the one after it, made ahead, is
    /// all zeros).
    fn written_segment(dir: &Path) -> PathBuf {
        segment_files(dir)
            .into_iter()
            .find(|path| std::fs::read(path).unwrap().iter().any(|b| *b != 0))
            .expect("a segment with records")
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
            assert!(!Store::exists_on(&FileDisk, dir.path()));
            let (store, _opened) = Store::open(dir.path(), "p", "A", 16).unwrap();
            store.put("g1".into(), grant("cad"), true).await.unwrap();
            store.put("g2".into(), grant("sim"), true).await.unwrap();
            store.delete("g1".into(), 5).await;
            // A delete of an older grant with the same id leaves the newer one.
            store.put("g9".into(), grant("sim"), true).await.unwrap();
            store.delete("g9".into(), 4).await;
            // A put after the delete is committed after it: wait on it.
            store.put("g3".into(), grant("cad"), true).await.unwrap();
        }
        assert!(Store::exists_on(&FileDisk, dir.path()));
        let (_store, opened) = reopen(dir.path(), "A").unwrap();
        let mut ids: Vec<String> = opened.grants.iter().map(|(id, _)| id.to_string()).collect();
        ids.sort();
        assert_eq!(ids, vec!["g2", "g3", "g9"]);
        assert_eq!(opened.grants[0].1.count, 2);
    }

    #[tokio::test]
    async fn grants_across_many_segments_are_folded_into_the_table_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let disk: Arc<dyn Disk> = Arc::new(TestDisk::small_segments());
        let mut held = std::collections::BTreeSet::new();
        {
            let (store, _) = Store::open_on(&disk, dir.path(), "p", "A", 16).unwrap();
            for i in 0..400 {
                let id = format!("g{i:04}");
                // Every third grant is a conversion: the table may hold
                // its id from before.
                store
                    .put(id.as_str().into(), grant("cad"), i % 3 != 0)
                    .await
                    .unwrap();
                held.insert(id);
                if i % 2 == 1 {
                    let id = format!("g{:04}", i - 1);
                    store.delete(id.as_str().into(), 5).await;
                    held.remove(&id);
                }
            }
            // The last delete reaches the journal before this put answers.
            store.put("last".into(), grant("cad"), true).await.unwrap();
            held.insert("last".into());
        }
        let (store, opened) = reopen_on(&disk, dir.path(), "A").unwrap();
        let ids: std::collections::BTreeSet<String> =
            opened.grants.into_iter().map(|(id, _)| id.into()).collect();
        assert_eq!(ids, held);
        // Opening folded the whole journal: the new segment is left, the
        // one made ahead of it, and at most two spares, however many
        // segments the writes filled.
        drop(store);
        let left = segment_files(dir.path());
        assert!(left.len() <= 4, "{left:?}");
    }

    #[tokio::test]
    async fn a_write_cut_short_by_a_crash_ends_the_journal_and_loses_nothing_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (store, _) = Store::open(dir.path(), "p", "A", 16).unwrap();
            store.put("g1".into(), grant("cad"), true).await.unwrap();
            store.put("g2".into(), grant("cad"), true).await.unwrap();
        }
        // Half a record after the acknowledged ones: a batch whose write
        // the crash cut short, never answered.
        let segment = written_segment(dir.path());
        let mut bytes = std::fs::read(&segment).unwrap();
        let end = bytes.iter().rposition(|b| *b != 0).unwrap() + 1;
        bytes[end..end + 12].copy_from_slice(&[200, 0, 0, 0, 1, 2, 3, 4, 1, 3, 0, b'g']);
        std::fs::write(&segment, &bytes).unwrap();
        let (_store, opened) = reopen(dir.path(), "A").unwrap();
        let mut ids: Vec<String> = opened.grants.into_iter().map(|(id, _)| id.into()).collect();
        ids.sort();
        assert_eq!(ids, ["g1", "g2"]);
    }

    /// The data directory as a `kill -9` would leave it now: what the
    /// store has written, synced or not.
    fn crashed_copy(dir: &Path) -> tempfile::TempDir {
        fn copy(from: &Path, to: &Path) {
            std::fs::create_dir_all(to).unwrap();
            for entry in std::fs::read_dir(from).unwrap() {
                let entry = entry.unwrap();
                let target = to.join(entry.file_name());
                if entry.file_type().unwrap().is_dir() {
                    copy(&entry.path(), &target);
                } else {
                    std::fs::copy(entry.path(), target).unwrap();
                }
            }
        }
        let copied = tempfile::tempdir().unwrap();
        copy(dir, copied.path());
        copied
    }

    fn ids_after_crash(dir: &Path) -> Vec<String> {
        let copied = crashed_copy(dir);
        let (_store, opened) = reopen(copied.path(), "A").unwrap();
        let mut ids: Vec<String> = opened.grants.into_iter().map(|(id, _)| id.into()).collect();
        ids.sort();
        ids
    }

    static IDLE_WORKERS: std::sync::Mutex<()> = std::sync::Mutex::new(());

    /// Held by the tests that run the server's runtime, whose idle workers
    /// wake every store's writer in this process ([`queue::workers_idle`]),
    /// and by the test that needs none to: run at once, the first would
    /// wake the second's writer for it.
    pub(crate) fn idle_workers_alone() -> std::sync::MutexGuard<'static, ()> {
        IDLE_WORKERS.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// On a runtime whose workers never report idling (this test's), a
    /// new grant queued for a writer between batches wakes it itself after
    /// [`queue::UNREPORTED_MAX`] rather than waiting out the writer's
    /// sleep (up to [`queue::DEFER`]).
    #[test]
    fn a_new_grant_no_idle_worker_reports_wakes_the_writer_itself() {
        let _alone = idle_workers_alone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let disk: Arc<dyn Disk> = Arc::new(FileDisk);
            let (store, _) = Store::open_with(&disk, dir.path(), "p", "A", 16, true).unwrap();
            // Idle: the first grant wakes the writer at once; afterwards it is
            // busy of late and sleeps up to the deferral between batches.
            let mut ids = Vec::new();
            for n in 0..10 {
                // A grant queued while the writer finishes a batch is taken
                // with its next look, unreported; a loaded machine can keep
                // the writer there. Wait until it is between batches.
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
                while store.queue.0.writing() && std::time::Instant::now() < deadline {
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
                let id = format!("g{n}");
                store
                    .put(id.as_str().into(), grant("cad"), true)
                    .await
                    .unwrap();
                ids.push(id);
            }
            assert!(store.queue.0.late() >= 1, "no grant woke the writer itself");
            ids.sort();
            assert_eq!(ids_after_crash(dir.path()), ids);
        });
    }

    /// On the server's runtime ([`crate::runtime`]) a worker that runs out
    /// of work wakes the writer: no grant has to wake it itself, with one
    /// worker (`[runtime] workers = 1`) or more.
    #[test]
    fn on_the_servers_runtime_idle_workers_wake_the_writer() {
        let _alone = idle_workers_alone();
        for workers in [1, 2] {
            idle_workers_wake_the_writer(workers);
        }
    }

    fn idle_workers_wake_the_writer(workers: usize) {
        let runtime = crate::runtime_builder(workers).build().unwrap();
        runtime.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let disk: Arc<dyn Disk> = Arc::new(FileDisk);
            let (store, _) = Store::open_with(&disk, dir.path(), "p", "A", 16, true).unwrap();
            let puts: Vec<_> = (0..64)
                .map(|n| {
                    let store = store.clone();
                    tokio::spawn(async move {
                        store.put(format!("g{n}").into(), grant("cad"), true).await
                    })
                })
                .collect();
            for put in puts {
                put.await.unwrap().unwrap();
            }
            // One at a time, from a task as a request's: its worker idles
            // as the grant waits.
            let one_by_one = store.clone();
            tokio::spawn(async move {
                for n in 64..96 {
                    let id = format!("g{n}").into();
                    one_by_one.put(id, grant("cad"), true).await.unwrap();
                }
            })
            .await
            .unwrap();
            // Without the report each of the 32 would wake it itself; a
            // worker the machine holds back for the bound may, rarely.
            let late = store.queue.0.late();
            assert!(
                late < 8,
                "{workers} workers: {late} of 32 grants waited for no idle worker"
            );
        });
    }

    /// A check-in does not wake the writer, but it is never overtaken: a
    /// grant answered after it is durable with it, and alone it reaches the
    /// journal within the deferral.
    #[tokio::test]
    async fn a_check_in_is_durable_with_the_next_grant_or_within_the_deferral() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path(), "p", "A", 16).unwrap();
        store.put("g1".into(), grant("cad"), true).await.unwrap();
        store.delete("g1".into(), grant("cad").issued_unix_ms).await;
        store.put("g2".into(), grant("cad"), true).await.unwrap();
        // g2 was answered: a crash now keeps g2 and the check-in before it.
        assert_eq!(ids_after_crash(dir.path()), ["g2"]);

        store.delete("g2".into(), grant("cad").issued_unix_ms).await;
        // Alone: written within the deferral (bounded wait, 5 s).
        let started = std::time::Instant::now();
        loop {
            let ids = ids_after_crash(dir.path());
            if ids.is_empty() {
                break;
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(5),
                "a check-in alone was not written within 5 s: {ids:?}"
            );
            tokio::time::sleep(queue::DEFER / 2).await;
        }
    }

    /// `[store] sync = "background"`: a grant is queued, not waited for; a
    /// clean stop syncs everything queued and takes nothing after.
    #[tokio::test]
    async fn a_clean_stop_syncs_every_grant_queued_unsynced_and_then_takes_none() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path(), "p", "A", 1_024).unwrap();
        for id in ["g1", "g2", "g3"] {
            store
                .put_unsynced(id.into(), grant("cad"), true)
                .await
                .unwrap();
        }
        store.delete("g2".into(), grant("cad").issued_unix_ms).await;
        store.finish().await.unwrap();
        assert_eq!(ids_after_crash(dir.path()), ["g1", "g3"]);
        let late = store.put_unsynced("g4".into(), grant("cad"), true).await;
        assert!(matches!(late, Err(StoreError::Stopped)), "{late:?}");
        let late = store.put("g5".into(), grant("cad"), true).await;
        assert!(matches!(late, Err(StoreError::Stopped)), "{late:?}");
        assert!(matches!(store.finish().await, Err(StoreError::Stopped)));
        drop(store);
        assert_eq!(ids_after_crash(dir.path()), ["g1", "g3"]);
    }

    /// A journal that stopped at an error makes nothing durable: a grant
    /// queued unsynced is refused from then on, as one waited for is.
    #[tokio::test]
    async fn a_failed_journal_refuses_grants_queued_unsynced_too() {
        let dir = tempfile::tempdir().unwrap();
        let test_disk = TestDisk::default();
        let failing = test_disk.failing.clone();
        let disk: Arc<dyn Disk> = Arc::new(test_disk);
        let (store, _) = Store::open_on(&disk, dir.path(), "p", "A", 1_024).unwrap();
        store
            .put_unsynced("g1".into(), grant("cad"), true)
            .await
            .unwrap();
        failing.store(true, std::sync::atomic::Ordering::SeqCst);
        // Accepted: the writer has not tried it yet.
        store
            .put_unsynced("g2".into(), grant("cad"), true)
            .await
            .unwrap();
        let err = store
            .put("g3".into(), grant("cad"), true)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("the disk failed"), "{err}");
        let err = store
            .put_unsynced("g4".into(), grant("cad"), true)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::Write(reason) if reason.contains("the disk failed")),
            "{err}"
        );
        assert!(store.finish().await.is_err(), "a failed journal synced");
    }

    #[tokio::test]
    async fn a_damaged_segment_followed_by_grants_is_refused_with_advice_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (store, _) = Store::open(dir.path(), "p", "A", 16).unwrap();
            store.put("g1".into(), grant("cad"), true).await.unwrap();
        }
        // The segment's first record damaged, and a later segment that
        // holds grants: acknowledged grants may be lost, so no guessing.
        let segment = written_segment(dir.path());
        let good = std::fs::read(&segment).unwrap();
        let mut damaged = good.clone();
        damaged[12] ^= 0x40;
        std::fs::write(&segment, &damaged).unwrap();
        let seq = segment.file_stem().unwrap().to_str().unwrap();
        let (ops, _) = journal::decode(&good, u64::from_str_radix(seq, 16).unwrap());
        assert_eq!(ops.len(), 1);
        let mut later_bytes = Vec::new();
        journal::encode(&ops[0], 0xff, &mut later_bytes).unwrap();
        later_bytes.resize(good.len(), 0);
        let later = segment.with_file_name("00000000000000ff.log");
        std::fs::write(&later, &later_bytes).unwrap();
        let err = reopen(dir.path(), "A").err().unwrap().to_string();
        assert!(
            err.contains("grant journal is damaged") && err.contains("move grants.redb"),
            "{err}"
        );
        assert_eq!(std::fs::read(&segment).unwrap(), damaged);
        assert_eq!(std::fs::read(&later).unwrap(), later_bytes);
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
