//! Proposing: a command or request reaches the leader (one helper,
//! [`Pool::at_leader`]), which writes it to the Raft log, bounded in time.

use std::future::Future;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tessera_core::{ControlCommand, ControlOutcome};
use tessera_proto::ErrorCode;

use super::network::{PeerError, PEER_TIMEOUT};
use super::*;
use crate::refusal::Refusal;

/// Longest a Raft write is awaited. A commit takes a round trip and a disk
/// sync, a leader change about a second; but a write begun by a leader that
/// loses its leadership before the entry commits may never be answered by
/// openraft, and the loops that wait on writes must go on: a donor's answers
/// and the leader's cancels (soak seed 50469: the leader's answer loop waited
/// forever on a cancel, so it never answered or drained again), and the
/// leader's moves, made under the lock that reports also take.
pub const COMMIT_TIMEOUT: Duration = Duration::from_millis(2_000);

/// A request only the leader answers: where it goes and how long it may take.
#[derive(Clone, Copy, Debug)]
pub struct Forward {
    pub path: &'static str,
    pub timeout: Duration,
    /// The refusal's code when the leader does not answer.
    pub unanswered: ErrorCode,
}

/// `POST /v1/peer/command`: a command a server proposes (a donor's release
/// or drain); the leader commits it.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerCommand {
    pub server_id: String,
    pub command: ControlCommand,
}

impl Pool {
    /// Commits `command` through the leader: here if this server leads,
    /// else forwarded. Returns what applying it did.
    pub async fn propose(&self, command: ControlCommand) -> Result<ControlOutcome, Refusal> {
        let ask = PeerCommand {
            server_id: self.server_id.clone(),
            command,
        };
        let forward = Forward {
            path: "/v1/peer/command",
            timeout: PEER_TIMEOUT,
            unanswered: ErrorCode::NoLeader,
        };
        self.at_leader(forward, ask, |ask| self.commit(ask.command))
            .await
    }

    /// Answers `body` with `here` when this server leads; else sends it to
    /// the leader at `forward.path` and returns the leader's answer. The one
    /// way a request reaches the leader.
    pub async fn at_leader<B, T, Here, Answer>(
        &self,
        forward: Forward,
        body: B,
        here: Here,
    ) -> Result<T, Refusal>
    where
        B: Serialize,
        T: DeserializeOwned,
        Here: FnOnce(B) -> Answer,
        Answer: Future<Output = Result<T, Refusal>>,
    {
        let Some((leader_id, address)) = self.leader() else {
            return Err(refused(
                ErrorCode::NoLeader,
                "the pool has no leader right now; retry shortly",
            ));
        };
        if leader_id == self.server_id {
            return here(body).await;
        }
        self.peers
            .post(&address, forward.path, &body, forward.timeout)
            .await
            .map_err(|err| match err {
                PeerError::Refused { code, message } => refused(code, message),
                other => refused(
                    forward.unanswered,
                    format!("the leader {leader_id} did not answer: {other}"),
                ),
            })
    }

    /// Leader: commits `command` and returns what applying it did.
    pub(crate) async fn commit(&self, command: ControlCommand) -> Result<ControlOutcome, Refusal> {
        self.write(command).await
    }

    /// Writes `command` to the Raft log and waits, at most
    /// [`COMMIT_TIMEOUT`], for what applying it did.
    pub(super) async fn write(&self, command: ControlCommand) -> Result<ControlOutcome, Refusal> {
        match tokio::time::timeout(COMMIT_TIMEOUT, self.raft.client_write(command)).await {
            Ok(written) => written
                .map(|response| response.data)
                .map_err(|err| refused(ErrorCode::NoLeader, format!("not committed: {err}"))),
            Err(_) => Err(refused(
                ErrorCode::NoLeader,
                format!(
                    "not committed within {} ms; the leader may have changed (the command may \
                     still apply); retry",
                    COMMIT_TIMEOUT.as_millis()
                ),
            )),
        }
    }

    /// Leader: has a majority confirm this leadership within `timeout`
    /// (refusing with `code` otherwise). Returns the log index a read must
    /// see applied to see everything committed before now.
    pub(crate) async fn confirm_leadership(
        &self,
        timeout: Duration,
        code: ErrorCode,
    ) -> Result<u64, Refusal> {
        let confirmed = tokio::time::timeout(timeout, self.raft.ensure_linearizable())
            .await
            .map_err(|_| refused(code, "leadership not confirmed by a majority in time"))?
            .map_err(|err| refused(code, format!("leadership not confirmed: {err}")))?;
        Ok(confirmed.map_or(0, |id| id.index))
    }

    /// Leader: waits, bounded by [`COMMIT_TIMEOUT`], until a majority has
    /// confirmed this leadership and this server has applied every entry
    /// committed before now. A decision made on the applied state then sees
    /// every earlier command: a new leader may not yet have applied the last
    /// entries of its predecessor (an admin change retried after a leader
    /// was killed would otherwise be built on the sequence before it).
    pub(crate) async fn read_committed(&self) -> Result<(), Refusal> {
        let index = self
            .confirm_leadership(COMMIT_TIMEOUT, ErrorCode::NoLeader)
            .await?;
        if !self.wait_applied(index, COMMIT_TIMEOUT).await {
            return Err(refused(
                ErrorCode::NoLeader,
                format!("the pool log was not applied to index {index} in time; retry"),
            ));
        }
        Ok(())
    }

    /// Waits (bounded) until this server has applied the log to `index`.
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> bool {
        let mut applied = self.applied.clone();
        tokio::time::timeout(timeout, applied.wait_for(|a| a.index >= index))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;
    use crate::seams::{Disk, FileDisk, Seams};

    /// A disk whose commits can be made to take as long as the test likes.
    #[derive(Default)]
    struct StallingDisk {
        commit_delay_ms: AtomicU64,
    }

    impl Disk for StallingDisk {
        fn open_database(
            &self,
            path: &std::path::Path,
            cache_bytes: usize,
        ) -> Result<redb::Database, redb::DatabaseError> {
            FileDisk.open_database(path, cache_bytes)
        }

        fn exists(&self, path: &std::path::Path) -> bool {
            path.exists()
        }

        fn commit_on_threads(&self) -> bool {
            false
        }

        fn commit_delay(&self) -> Duration {
            Duration::from_millis(self.commit_delay_ms.load(Ordering::SeqCst))
        }

        fn read_file(&self, path: &std::path::Path) -> std::io::Result<Option<Vec<u8>>> {
            FileDisk.read_file(path)
        }

        fn replace_file(&self, path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
            FileDisk.replace_file(path, bytes)
        }

        fn rename(&self, from: &std::path::Path, to: &std::path::Path) -> std::io::Result<bool> {
            FileDisk.rename(from, to)
        }

        fn open_file(
            &self,
            path: &std::path::Path,
        ) -> std::io::Result<Box<dyn redb::StorageBackend>> {
            FileDisk.open_file(path)
        }

        fn create_dir(&self, path: &std::path::Path) -> std::io::Result<()> {
            FileDisk.create_dir(path)
        }

        fn list_dir(&self, path: &std::path::Path) -> std::io::Result<Vec<std::path::PathBuf>> {
            FileDisk.list_dir(path)
        }

        fn remove_file(&self, path: &std::path::Path) -> std::io::Result<()> {
            FileDisk.remove_file(path)
        }

        fn sync_dir(&self, path: &std::path::Path) -> std::io::Result<()> {
            FileDisk.sync_dir(path)
        }
    }

    /// Soak seed 50469: a write openraft does not answer (there, one begun
    /// by a leader that then lost its leadership; here, one stuck on the
    /// disk) must not hold up its caller beyond [`COMMIT_TIMEOUT`].
    #[tokio::test(start_paused = true)]
    async fn a_write_that_is_never_answered_is_given_up_after_the_commit_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let credential = "x".repeat(32);
        let text = format!(
            "pool_id = \"t\"\nsequence = 1\n\n[[servers]]\nid = \"A\"\naddress = \"127.0.0.1:9\"\n\
             credential_sha256 = \"{}\"\n",
            tessera_core::credential_sha256(&credential)
        );
        let disk = Arc::new(StallingDisk::default());
        let seams = Seams {
            disk: disk.clone(),
            ..Seams::production()
        };
        let pool = Arc::new(
            Pool::start(
                PoolSettings {
                    server_id: "A".into(),
                    vendors: Vec::new(),
                    timing: Timing::default(),
                    peer_credential: credential,
                    data_dir: dir.path().to_path_buf(),
                    recovering: false,
                },
                PoolFile::parse(&text).unwrap(),
                text.clone(),
                &seams,
            )
            .await
            .unwrap(),
        );
        tokio::time::timeout(Duration::from_secs(30), pool.clone().bootstrap())
            .await
            .expect("a pool of one forms and installs its pool file");

        disk.commit_delay_ms.store(3_600_000, Ordering::SeqCst);
        let next = text.replace("sequence = 1", "sequence = 2");
        let started = tokio::time::Instant::now();
        let written = pool
            .commit(ControlCommand::InstallPoolFile { text: next })
            .await;
        let waited = started.elapsed();
        assert!(written.is_err(), "{written:?}");
        assert!(waited <= COMMIT_TIMEOUT, "waited {waited:?}");
    }
}
