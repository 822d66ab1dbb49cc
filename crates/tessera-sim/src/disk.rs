//! A simulated disk for everything a server keeps (its `redb` stores, the
//! control snapshot, the installed pool file) that loses unsynced
//! writes in a crash.
//!
//! Each file keeps two images: what the process sees (`current`) and what
//! would survive a power cut (`durable`). A write changes `current` and marks
//! its pages dirty; `sync_data` copies the dirty pages to `durable`. A crash
//! copies them back the other way, so everything written since the last sync
//! is gone, exactly what a real disk may do. The database handles of the
//! crashed process keep failing afterwards, so a dying process cannot write.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use redb::StorageBackend;
use tessera_server::seams::Disk;

const PAGE_BYTES: u64 = 4096;

#[derive(Debug, Default)]
struct File {
    current: Vec<u8>,
    durable: Vec<u8>,
    /// Pages of `current` that differ from `durable`.
    dirty: BTreeSet<u64>,
}

impl File {
    fn sync(&mut self) {
        self.durable.resize(self.current.len(), 0);
        for page in std::mem::take(&mut self.dirty) {
            let (start, end) = page_range(page, self.current.len());
            self.durable[start..end].copy_from_slice(&self.current[start..end]);
        }
    }

    fn lose_unsynced(&mut self) {
        self.current.resize(self.durable.len(), 0);
        for page in std::mem::take(&mut self.dirty) {
            let (start, end) = page_range(page, self.durable.len());
            self.current[start..end].copy_from_slice(&self.durable[start..end]);
        }
    }

    fn mark(&mut self, offset: u64, len: u64) {
        if len == 0 {
            return;
        }
        for page in offset / PAGE_BYTES..=(offset + len - 1) / PAGE_BYTES {
            self.dirty.insert(page);
        }
    }
}

fn page_range(page: u64, len: usize) -> (usize, usize) {
    let start = ((page * PAGE_BYTES) as usize).min(len);
    let end = (((page + 1) * PAGE_BYTES) as usize).min(len);
    (start, end)
}

/// One machine's disk; it outlives the server processes that run on it.
#[derive(Debug, Default)]
pub struct SimDisk {
    files: Mutex<BTreeMap<PathBuf, Arc<Mutex<File>>>>,
    /// Bumped by every crash: handles of an earlier process stop working.
    generation: AtomicU64,
    commit_delay_ms: AtomicU64,
    syncs: AtomicU64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl SimDisk {
    pub fn new() -> Arc<SimDisk> {
        Arc::new(SimDisk::default())
    }

    /// The process dies: unsynced writes are lost and its handles go dead.
    pub fn crash(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        for file in lock(&self.files).values() {
            lock(file).lose_unsynced();
        }
    }

    /// The disk is replaced: every file is gone.
    pub fn wipe(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        lock(&self.files).clear();
    }

    /// Every commit takes this much longer (a slow disk), until set back to zero.
    pub fn set_commit_delay(&self, delay: Duration) {
        self.commit_delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// How many syncs reached the disk so far.
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::SeqCst)
    }
}

/// The [`Disk`] seam of one server process on a [`SimDisk`].
#[derive(Clone, Debug)]
pub struct SimDiskSeam(pub Arc<SimDisk>);

impl Disk for SimDiskSeam {
    fn open_database(
        &self,
        path: &Path,
        cache_bytes: usize,
    ) -> Result<redb::Database, redb::DatabaseError> {
        let file = lock(&self.0.files)
            .entry(path.to_path_buf())
            .or_default()
            .clone();
        let backend = Backend {
            disk: self.0.clone(),
            file,
            generation: self.0.generation.load(Ordering::SeqCst),
            name: path.display().to_string(),
        };
        redb::Builder::new()
            .set_cache_size(cache_bytes)
            .create_with_backend(backend)
    }

    fn exists(&self, path: &Path) -> bool {
        lock(&self.0.files)
            .get(path)
            .is_some_and(|file| !lock(file).durable.is_empty())
    }

    fn commit_on_threads(&self) -> bool {
        false
    }

    fn commit_delay(&self) -> Duration {
        Duration::from_millis(self.0.commit_delay_ms.load(Ordering::SeqCst))
    }

    fn read_file(&self, path: &Path) -> io::Result<Option<Vec<u8>>> {
        let file = lock(&self.0.files).get(path).cloned();
        Ok(file.map(|file| lock(&file).current.clone()))
    }

    /// All or nothing and synced at once, like a rename over a synced file.
    fn replace_file(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let file = File {
            current: bytes.to_vec(),
            durable: bytes.to_vec(),
            dirty: BTreeSet::new(),
        };
        lock(&self.0.files).insert(path.to_path_buf(), Arc::new(Mutex::new(file)));
        self.0.syncs.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<bool> {
        let mut files = lock(&self.0.files);
        let Some(file) = files.remove(from) else {
            return Ok(false);
        };
        files.insert(to.to_path_buf(), file);
        Ok(true)
    }

    fn open_file(&self, path: &Path) -> io::Result<Box<dyn StorageBackend>> {
        let file = lock(&self.0.files)
            .entry(path.to_path_buf())
            .or_default()
            .clone();
        Ok(Box::new(Backend {
            disk: self.0.clone(),
            file,
            generation: self.0.generation.load(Ordering::SeqCst),
            name: path.display().to_string(),
        }))
    }

    /// Folders are implied by the files in them.
    fn create_dir(&self, _path: &Path) -> io::Result<()> {
        Ok(())
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<PathBuf>> {
        Ok(lock(&self.0.files)
            .keys()
            .filter(|file| file.parent() == Some(path))
            .cloned()
            .collect())
    }

    /// Durable at once, like a removal followed by a sync of its folder.
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        lock(&self.0.files).remove(path);
        Ok(())
    }

    /// Files made and removed are durable at once here.
    fn sync_dir(&self, _path: &Path) -> io::Result<()> {
        Ok(())
    }

    /// Small, so that simulated runs fill segments and fold them.
    fn journal_segment_bytes(&self) -> u64 {
        8 * PAGE_BYTES
    }
}

#[derive(Debug)]
struct Backend {
    disk: Arc<SimDisk>,
    file: Arc<Mutex<File>>,
    generation: u64,
    name: String,
}

impl Backend {
    fn file(&self) -> io::Result<MutexGuard<'_, File>> {
        if self.disk.generation.load(Ordering::SeqCst) != self.generation {
            return Err(io::Error::other(format!(
                "{}: the process that opened it has crashed",
                self.name
            )));
        }
        Ok(lock(&self.file))
    }
}

impl StorageBackend for Backend {
    fn len(&self) -> io::Result<u64> {
        Ok(self.file()?.current.len() as u64)
    }

    fn read(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let file = self.file()?;
        let start = offset as usize;
        let end = start + len;
        if end > file.current.len() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{}: read past the end", self.name),
            ));
        }
        Ok(file.current[start..end].to_vec())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut file = self.file()?;
        let old = file.current.len() as u64;
        file.current.resize(len as usize, 0);
        if len > old {
            file.mark(old, len - old);
        } else if len < old {
            file.mark(len, old - len);
        }
        Ok(())
    }

    fn sync_data(&self, _eventual: bool) -> io::Result<()> {
        self.file()?.sync();
        self.disk.syncs.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut file = self.file()?;
        let end = offset as usize + data.len();
        if end > file.current.len() {
            let old = file.current.len() as u64;
            file.current.resize(end, 0);
            file.mark(old, end as u64 - old);
        }
        file.current[offset as usize..end].copy_from_slice(data);
        file.mark(offset, data.len() as u64);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::TableDefinition;

    const T: TableDefinition<&str, u64> = TableDefinition::new("t");

    fn put(db: &redb::Database, key: &str, durable: bool) {
        let mut txn = db.begin_write().unwrap();
        txn.set_durability(if durable {
            redb::Durability::Immediate
        } else {
            redb::Durability::None
        });
        txn.open_table(T).unwrap().insert(key, 1).unwrap();
        txn.commit().unwrap();
    }

    fn keys(db: &redb::Database) -> Vec<String> {
        let txn = db.begin_read().unwrap();
        let Ok(table) = txn.open_table(T) else {
            return Vec::new();
        };
        redb::ReadableTable::iter(&table)
            .unwrap()
            .map(|e| e.unwrap().0.value().to_string())
            .collect()
    }

    #[test]
    fn a_crash_keeps_synced_commits_and_loses_the_rest() {
        let disk = SimDisk::new();
        let seam = SimDiskSeam(disk.clone());
        let path = Path::new("/sim/a/grants.redb");
        assert!(!seam.exists(path));
        let db = seam.open_database(path, 1 << 20).unwrap();
        put(&db, "synced", true);
        put(&db, "unsynced", false);
        assert_eq!(keys(&db), ["synced", "unsynced"]);
        disk.crash();
        // The dead process can no longer make anything durable.
        let late = (|| -> Result<(), String> {
            let txn = db.begin_write().map_err(|e| e.to_string())?;
            txn.open_table(T)
                .map_err(|e| e.to_string())?
                .insert("late", 1)
                .map_err(|e| e.to_string())?;
            txn.commit().map_err(|e| e.to_string())
        })();
        assert!(late.is_err(), "a crashed process committed");
        drop(db);
        assert!(seam.exists(path));
        let db = seam.open_database(path, 1 << 20).unwrap();
        assert_eq!(keys(&db), ["synced"]);
        drop(db);
        disk.wipe();
        assert!(!seam.exists(path));
        let db = seam.open_database(path, 1 << 20).unwrap();
        assert!(keys(&db).is_empty());
    }

    #[test]
    fn a_replaced_file_survives_a_crash_and_not_a_lost_disk() {
        let disk = SimDisk::new();
        let seam = SimDiskSeam(disk.clone());
        let path = Path::new("/sim/a/control-snapshot.json");
        assert_eq!(seam.read_file(path).unwrap(), None);
        seam.replace_file(path, b"one").unwrap();
        seam.replace_file(path, b"two").unwrap();
        disk.crash();
        assert_eq!(seam.read_file(path).unwrap().as_deref(), Some(&b"two"[..]));
        let aside = Path::new("/sim/a/control-snapshot.json.aside");
        assert!(seam.rename(path, aside).unwrap());
        assert!(!seam.rename(path, aside).unwrap());
        assert_eq!(seam.read_file(path).unwrap(), None);
        disk.wipe();
        assert_eq!(seam.read_file(aside).unwrap(), None);
    }
}
