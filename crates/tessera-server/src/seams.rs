//! What a simulator replaces: the server's clock, network, disk and id
//! source, behind narrow seams (the pattern of tokio's `loom` seam). A
//! program uses [`Seams::production`]; `tessera-sim` passes its own, so the
//! very same server code runs on a simulated network, clock and disk.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tessera_core::{ControlState, SharedText};
use tessera_transport::HttpTransport;

use crate::clock::{Clock, SystemClock};

/// Where everything a server keeps lives: its embedded stores
/// (`grants.redb`, `raft.redb`), the control snapshot and the installed
/// pool file.
pub trait Disk: Send + Sync + 'static {
    /// Opens or creates the database at `path`.
    fn open_database(
        &self,
        path: &Path,
        cache_bytes: usize,
    ) -> Result<redb::Database, redb::DatabaseError>;
    /// Whether a database exists at `path`.
    fn exists(&self, path: &Path) -> bool;
    /// True for a real disk: blocking commits run on threads of their own.
    /// False: they run inline on the calling task, after [`Disk::commit_delay`],
    /// so that a simulator decides every step.
    fn commit_on_threads(&self) -> bool;
    /// Extra time each commit takes (a slow disk), for inline commits.
    fn commit_delay(&self) -> Duration {
        Duration::ZERO
    }
    /// The whole file at `path`, or `None` where there is none.
    fn read_file(&self, path: &Path) -> io::Result<Option<Vec<u8>>>;
    /// Replaces the file at `path` with `bytes`, all or nothing, durably:
    /// after a crash it holds either the old bytes or the new.
    fn replace_file(&self, path: &Path, bytes: &[u8]) -> io::Result<()>;
    /// Renames a file or database; `Ok(false)` when there is none at `from`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<bool>;
    /// Writes a new file only its owner may read (a key), durably; fails if
    /// one exists.
    fn create_secret_file(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        self.replace_file(path, bytes)
    }
    /// Opens or creates a file written in place (a grant journal segment),
    /// without changing what it holds.
    fn open_file(&self, path: &Path) -> io::Result<Box<dyn redb::StorageBackend>>;
    /// Creates a folder (and its parents) if there is none.
    fn create_dir(&self, path: &Path) -> io::Result<()>;
    /// The files in a folder.
    fn list_dir(&self, path: &Path) -> io::Result<Vec<PathBuf>>;
    /// Removes a file; nothing to do when there is none.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Makes the files made and removed in a folder durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// The size of a grant journal segment.
    fn journal_segment_bytes(&self) -> u64 {
        JOURNAL_SEGMENT_BYTES
    }
}

/// A grant journal segment on a real disk: about 35,000 checkouts and their
/// check-ins, a second of a busy server.
pub const JOURNAL_SEGMENT_BYTES: u64 = 8 * 1024 * 1024;

/// The machine's file system.
#[derive(Debug, Default)]
pub struct FileDisk;

impl Disk for FileDisk {
    fn open_database(
        &self,
        path: &Path,
        cache_bytes: usize,
    ) -> Result<redb::Database, redb::DatabaseError> {
        redb::Builder::new()
            .set_cache_size(cache_bytes)
            .create(path)
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn commit_on_threads(&self) -> bool {
        true
    }

    fn read_file(&self, path: &Path) -> io::Result<Option<Vec<u8>>> {
        match std::fs::read(path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// A temporary file, synced, renamed over the old one, and the folder
    /// synced.
    fn replace_file(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let mut temporary = path.as_os_str().to_owned();
        temporary.push(".tmp");
        let temporary = std::path::PathBuf::from(temporary);
        let mut out = std::fs::File::create(&temporary)?;
        out.write_all(bytes)?;
        out.sync_all()?;
        std::fs::rename(&temporary, path)?;
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    /// Mode 0600 from the start, in a folder made 0700 if there is none.
    fn create_secret_file(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        out.write_all(bytes)?;
        out.sync_all()?;
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<bool> {
        match std::fs::rename(from, to) {
            Ok(()) => Ok(true),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// Locked against a second process, as `redb` locks its databases.
    fn open_file(&self, path: &Path) -> io::Result<Box<dyn redb::StorageBackend>> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let backend = redb::backends::FileBackend::new(file).map_err(|err| match err {
            redb::DatabaseError::DatabaseAlreadyOpen => io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("{} is already open in another process", path.display()),
            ),
            other => io::Error::other(other.to_string()),
        })?;
        Ok(Box::new(backend))
    }

    fn create_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<PathBuf>> {
        std::fs::read_dir(path)?
            .map(|entry| entry.map(|entry| entry.path()))
            .collect()
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        match std::fs::remove_file(path) {
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::File::open(path)?.sync_all()
    }
}

/// Sees what a server does, for a simulator's checkers. Never consulted.
pub trait Observer: Send + Sync + 'static {
    /// `server` applied the control log up to `index`, reaching `state`.
    fn applied(&self, server: &str, index: u64, state: &ControlState);
    /// `server` started and read these grants from its store, in a grace
    /// period if `grace`.
    fn restored(&self, server: &str, grant_ids: &[String], grace: bool);
    /// `server`'s issuer broke one of its invariants, checked after every
    /// change ([`crate::issuer::Issuer::check_invariants`]).
    fn invariant_broken(&self, server: &str, broken: &str);
    /// `server` dropped its copy of `grant_id` on the pool's word: another
    /// server made a newer copy durable, or the grant was checked in
    /// (`crate::copies`).
    fn dropped_stale_copy(&self, _server: &str, _grant_id: &str) {}
}

/// Deliberate bugs, so that a simulator can show its checkers catch them.
/// Only reachable through the library API; no config file can set them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mutations {
    /// Issue and renew without a quota lease from a majority's leader.
    pub issue_without_quorum: bool,
    /// Reassign a silent server's allocation as soon as it looks down
    /// (three report intervals), without waiting for its quota lease and
    /// its clients' leases to lapse.
    pub reassign_without_wait: bool,
    /// Let a server that lost its Raft log vote before it has caught up.
    pub vote_while_catching_up: bool,
    /// A donor answers the requests addressed to it from the pool's newest
    /// control state, which its issuer may not have taken yet.
    pub answer_from_the_newest_state: bool,
    /// Hand a silent server's grant over at once, without waiting for its
    /// quota to end and without checking the copy outlives that quota.
    pub hand_over_without_wait: bool,
    /// Start serving at once after a run that synced grants in the
    /// background and did not stop cleanly, trusting its store.
    pub trust_an_unclean_run: bool,
    /// Renew the quota lease once the log is applied as far as the leader
    /// says, though the issuer may not have taken that state yet.
    pub renew_before_the_issuer_follows: bool,
}

/// Makes grant ids.
pub type IdSource = Arc<dyn Fn() -> SharedText + Send + Sync>;

/// Everything a server takes from its environment.
#[derive(Clone)]
pub struct Seams {
    pub clock: Arc<dyn Clock>,
    pub transport: Arc<dyn HttpTransport>,
    pub disk: Arc<dyn Disk>,
    pub grant_ids: IdSource,
    pub observer: Option<Arc<dyn Observer>>,
    pub mutations: Mutations,
    /// The machine's hostid as the simulator gives each of its servers;
    /// `None`, always outside the simulator: read it from the machine
    /// (`hostid::inspect`).
    pub hostid: Option<String>,
    /// The bytes of this server's answer key if its data directory has
    /// none yet (`answer.key`): random, or the simulator's.
    pub answer_key_seed: [u8; 32],
    /// How late, in ms, the issuer takes each new control state: 0, but
    /// for the simulator's slow-follow fault and the test fault switch
    /// (`POST /v1/test/control-lag`, or [`TEST_CONTROL_LAG_ENV`] from the
    /// start), which stand for a server too busy to follow the pool's log
    /// at once.
    pub control_lag_ms: Arc<std::sync::atomic::AtomicU64>,
}

/// Test-only: the issuer takes each new control state this many ms late
/// from the server's start, honoured only with the test fault switch on
/// (`TESSERA_TEST_FAULTS=1`), so that a test can restart a server already
/// slow to follow the pool's log.
pub const TEST_CONTROL_LAG_ENV: &str = "TESSERA_TEST_CONTROL_LAG_MS";

impl Seams {
    /// The real clock, TCP, file system and random ids.
    pub fn production() -> Seams {
        Seams {
            clock: Arc::new(SystemClock::new()),
            transport: crate::pool::network::plain_transport(),
            disk: Arc::new(FileDisk),
            // Time-ordered (UUIDv7: milliseconds, then random bits): the
            // grant store's B-tree then takes each batch of new grants at
            // its right edge, a few pages per commit however many grants
            // it holds, where random ids dirty a leaf and its branches per
            // grant. An id is no secret; the grant's proof is.
            grant_ids: Arc::new(|| {
                let mut text = uuid::Uuid::encode_buffer();
                SharedText::from(&*uuid::Uuid::now_v7().simple().encode_lower(&mut text))
            }),
            observer: None,
            mutations: Mutations::default(),
            hostid: None,
            control_lag_ms: Arc::new(std::sync::atomic::AtomicU64::new(
                std::env::var(TEST_CONTROL_LAG_ENV)
                    .ok()
                    .filter(|_| crate::pool::test_faults_enabled())
                    .and_then(|ms| ms.parse().ok())
                    .unwrap_or(0),
            )),
            answer_key_seed: {
                use rand::RngCore;
                let mut seed = [0u8; 32];
                rand::rngs::OsRng.fill_bytes(&mut seed);
                seed
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Production grant ids sort in the order they were issued, so the
    /// grant store appends each batch at its B-tree's right edge; each is
    /// still unique and 32 hex digits, as the wire and the proofs take it.
    #[test]
    fn production_grant_ids_are_unique_and_sort_in_issue_order() {
        let ids = Seams::production().grant_ids;
        let issued: Vec<SharedText> = (0..10_000).map(|_| ids()).collect();
        let mut sorted = issued.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted, issued);
        assert!(issued
            .iter()
            .all(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())));
    }
}
