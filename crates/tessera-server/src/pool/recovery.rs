//! Re-forming a pool that lost a majority of its servers for good (etcd's
//! `--force-new-cluster` is the model).
//!
//! A pool whose majority of disks is gone cannot elect a leader again: it
//! stops issuing, which is safe, but stays stopped. The administrator writes
//! a pool file that lists only the survivors, with a higher sequence, and
//! starts every survivor once with `tessera server --recover-pool FILE`:
//!
//! 1. Each survivor sets its pool log and control snapshot aside (renamed,
//!    not deleted) and starts as a fresh server of the survivors' pool; its
//!    grant store stays, so it knows every seat its clients hold.
//! 2. The first survivor in priority forms the new pool, and its first
//!    command is `ControlCommand::RecoverPool`: every seat is parked under
//!    `LOST_MAJORITY`, because the lost servers may have issued any seat
//!    the survivors do not hold, and their clients believe in those seats
//!    until their leases run out.
//! 3. A survivor's restored grants do not fit its empty allocation, so they
//!    are held aside and counted in its reports. The leader gives it back
//!    exactly that many parked seats ([`Pool::restore_holders`]): seats its
//!    own clients already hold, so the seats held do not grow. Seats a
//!    survivor only holds back (a lost server's grant it expects handed
//!    over, a temporary license being activated) are not its clients' and
//!    are not given back (`PeerReport::clients_hold`): given up, they would
//!    be free while the lost server's client still held its seat.
//! 4. The rest stays parked until the leader has led for the wait for a
//!    silent server (`App::reassign_after_ms`: quota lease plus the longest
//!    client lease, stretched by the drift bound), measured from its own
//!    election, which came after the lost servers were gone. Then the
//!    ordinary borrowing takes them (a parked source, as for a removed
//!    server).
//!
//! Why no seat is issued twice: before the loss the seats held on all
//! servers never exceeded the hard limit. After it, the survivors hold at
//! most what they held when their quota lapsed (they cannot issue without
//! a quorum), and the lost servers' clients at most the rest, until their
//! leases run out. Until then the new pool lets each survivor issue only
//! into seats its own clients freed. The one condition is the one etcd
//! states: the lost servers must really be gone. A lost server that is only
//! cut off, with a majority of its own, is a pool still serving; re-forming
//! the minority beside it doubles the seats.

use std::collections::BTreeMap;
use std::path::Path;

use tessera_core::control::LOST_MAJORITY;
use tessera_core::{BorrowSource, ControlCommand, ControlOutcome};

use super::error::PoolStartError;
use super::log_store::RAFT_FILE;
use super::state_machine::SNAPSHOT_FILE;
use super::Pool;
use crate::seams::Disk;

/// Renames the pool log and the control snapshot in `data_dir` to
/// `<name>.before-recovery-<unix_ms>`, so the server starts without a pool
/// history; the grant store stays. Files that are not there are skipped.
pub fn set_log_aside(disk: &dyn Disk, data_dir: &Path, unix_ms: i64) -> Result<(), PoolStartError> {
    for name in [RAFT_FILE, SNAPSHOT_FILE] {
        let path = data_dir.join(name);
        let aside = data_dir.join(format!("{name}.before-recovery-{unix_ms}"));
        match disk.rename(&path, &aside) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(source) => {
                return Err(PoolStartError::SetAside {
                    path,
                    aside,
                    source,
                })
            }
        }
        tracing::warn!(
            "the pool log is set aside as {} to re-form the pool",
            aside.display()
        );
    }
    Ok(())
}

impl Pool {
    /// Leader, in a re-formed pool: gives `server` parked seats for the
    /// grants it holds beyond its allocation (restored from its store), so
    /// it can renew them. Nothing else: those seats are already held.
    pub(crate) async fn restore_holders(&self, server: &str, in_use: &BTreeMap<String, u32>) {
        let recovering = self
            .applied
            .borrow()
            .state
            .allocations()
            .values()
            .any(|a| a.parked.contains_key(LOST_MAJORITY));
        if !recovering {
            return;
        }
        let _moves = self.moves.lock().await;
        for (feature, &held) in in_use {
            let (allocation, parked) = {
                let applied = self.applied.borrow();
                let Some(a) = applied.state.allocation(feature) else {
                    continue;
                };
                let parked = a.parked.get(LOST_MAJORITY).copied().unwrap_or(0);
                (a.allocation_of(server), parked)
            };
            if held <= allocation || parked == 0 {
                continue;
            }
            let command = ControlCommand::Borrow {
                feature: feature.clone(),
                recipient: server.to_string(),
                source: BorrowSource::Parked(LOST_MAJORITY.to_string()),
                seats: held - allocation,
            };
            match self.commit(command).await {
                Ok(ControlOutcome::Moved { seats }) => tracing::info!(
                    "gave `{server}` back {seats} seats of `{feature}` its clients hold"
                ),
                Ok(outcome) => tracing::debug!("restoring `{server}`'s holders: {outcome:?}"),
                Err(err) => tracing::info!("restoring `{server}`'s holders: {err}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_is_set_aside_and_the_grants_stay() {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in [RAFT_FILE, SNAPSHOT_FILE, "grants.redb"] {
            std::fs::write(dir.path().join(name), name).expect("write");
        }
        set_log_aside(&crate::seams::FileDisk, dir.path(), 42).expect("set aside");
        assert!(!dir.path().join(RAFT_FILE).exists());
        assert!(!dir.path().join(SNAPSHOT_FILE).exists());
        assert!(dir.path().join("grants.redb").exists());
        let aside =
            std::fs::read_to_string(dir.path().join(format!("{RAFT_FILE}.before-recovery-42")))
                .expect("kept");
        assert_eq!(aside, RAFT_FILE);
        // Nothing to set aside: no error.
        set_log_aside(&crate::seams::FileDisk, dir.path(), 43).expect("nothing to do");
    }
}
