//! The grace period of a server whose grant store may lack grants its
//! clients still hold (ARCHITECTURE.md, "Why no seat is issued twice",
//! timeline 4), kept across restarts.
//!
//! A server that starts without its store waits one longest hold before it
//! issues new seats. The store it makes meanwhile holds only the renewals it
//! converted, so a restart during the grace period must not count that
//! store as whole: clients from before the loss may still hold seats it
//! never recorded. Before the new store is made, [`GRACE_FILE`] is written
//! (synced, with its folder); a server that finds it starts a new grace
//! period, from its own start, whatever its store holds. The file goes only
//! once a grace period has run to its end.
//!
//! A server whose store syncs in the background (`[store] sync =
//! "background"`) answers grants before they are on its disk, so a crash
//! may lose some its clients hold, as a lost store does. [`RUN_FILE`] is
//! written (synced) before such a run serves and removed only after a clean
//! stop has synced every grant; a start that finds it begins a grace period
//! (and records it as above) instead of trusting its store.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::seams::Disk;
use crate::App;

/// In the data directory while a grace period has not run to its end.
pub const GRACE_FILE: &str = "grace-period";

/// What the file says to someone who finds it.
const GRACE_TEXT: &str = "This server started without its grant store and has not yet \
waited out its grace period (one longest hold): clients may hold seats its store does not \
record. While this file exists the server starts in a grace period, issuing only renewals. \
It removes the file itself when a grace period ends; removing it by hand can let the pool \
issue more seats than it has.\n";

/// In the data directory while a run that syncs grants in the background
/// is serving, and after it if it did not stop cleanly.
pub const RUN_FILE: &str = "unsynced-run";

const RUN_TEXT: &str = "This server answers grants before its grant store syncs them \
([store] sync = \"background\"). This file exists while it runs and is removed once a clean \
stop has synced every grant. A server that finds it at start has lost the grants of a run that \
did not stop cleanly, and begins a grace period (one longest hold), issuing only renewals. \
Removing it by hand can let the pool issue more seats than it has.\n";

/// Longest sleep between two looks at the grace period's end.
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// Whether an earlier run's grace period did not run to its end.
pub fn pending(disk: &dyn Disk, data_dir: &Path) -> bool {
    has_record(disk, data_dir, GRACE_FILE)
}

/// Records, durably, that a grace period begins.
pub fn begin(disk: &dyn Disk, data_dir: &Path) -> std::io::Result<()> {
    write_record(disk, data_dir, GRACE_FILE, GRACE_TEXT)
}

/// Removes the record of a grace period that has run to its end. Nothing
/// else does: `--new-pool` waives only a missing store's grace period.
pub fn forget(disk: &dyn Disk, data_dir: &Path) -> std::io::Result<()> {
    remove_record(disk, data_dir, GRACE_FILE)
}

/// Whether a run that synced grants in the background did not stop cleanly.
pub fn unclean_run(disk: &dyn Disk, data_dir: &Path) -> bool {
    has_record(disk, data_dir, RUN_FILE)
}

/// Records, durably, that this run answers grants before they are synced.
pub fn begin_run(disk: &dyn Disk, data_dir: &Path) -> std::io::Result<()> {
    write_record(disk, data_dir, RUN_FILE, RUN_TEXT)
}

/// Removes the record of [`begin_run`]: every grant answered is synced (a
/// clean stop), or a grace period was recorded in its place.
pub fn end_run(disk: &dyn Disk, data_dir: &Path) -> std::io::Result<()> {
    remove_record(disk, data_dir, RUN_FILE)
}

/// Whether the record `name` is there.
fn has_record(disk: &dyn Disk, data_dir: &Path, name: &str) -> bool {
    disk.exists(&data_dir.join(name))
}

/// Writes the record `name` (synced, with its folder).
fn write_record(disk: &dyn Disk, data_dir: &Path, name: &str, text: &str) -> std::io::Result<()> {
    disk.create_dir(data_dir)?;
    disk.replace_file(&data_dir.join(name), text.as_bytes())
}

/// Removes the record `name`, if there is one, and syncs its folder.
fn remove_record(disk: &dyn Disk, data_dir: &Path, name: &str) -> std::io::Result<()> {
    let file = data_dir.join(name);
    if !disk.exists(&file) {
        return Ok(());
    }
    disk.remove_file(&file)?;
    disk.sync_dir(data_dir)
}

/// Waits until the issuer's grace period is over, then removes the file.
/// Called once the grace period's length is final (the codes are known).
pub(crate) fn end_when_over(app: Arc<App>) {
    tokio::spawn(async move {
        loop {
            let left_ms = {
                let issuer = app.issuer();
                issuer
                    .grace_until_ms()
                    .map_or(0, |until_ms| until_ms.saturating_sub(app.clock.now_ms()))
            };
            if left_ms == 0 {
                break;
            }
            tokio::time::sleep(LOOK_EVERY.min(Duration::from_millis(left_ms))).await;
        }
        match forget(app.disk.as_ref(), &app.data_dir) {
            Ok(()) => tracing::info!("the grace period is over: new checkouts are served"),
            Err(err) => tracing::error!(
                "the grace period is over, but {} cannot be removed ({err}); the next start \
                 waits out another grace period",
                app.data_dir.join(GRACE_FILE).display()
            ),
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seams::FileDisk;

    /// A record's life: absent, written, read, removed; removing none is
    /// no error, and the other record is left alone.
    fn check_record(
        file: &str,
        says: &str,
        exists: fn(&dyn Disk, &Path) -> bool,
        write: fn(&dyn Disk, &Path) -> std::io::Result<()>,
        remove: fn(&dyn Disk, &Path) -> std::io::Result<()>,
        other: fn(&dyn Disk, &Path) -> bool,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let disk = FileDisk;
        assert!(!exists(&disk, &data_dir));
        remove(&disk, &data_dir).expect("removing no record is no error");
        write(&disk, &data_dir).unwrap();
        assert!(exists(&disk, &data_dir));
        let text = std::fs::read_to_string(data_dir.join(file)).unwrap();
        assert!(text.contains(says), "{text}");
        assert!(!other(&disk, &data_dir), "the two records are apart");
        remove(&disk, &data_dir).unwrap();
        assert!(!exists(&disk, &data_dir));
    }

    #[test]
    fn a_pending_grace_period_is_recorded_until_forgotten() {
        check_record(
            GRACE_FILE,
            "grace period",
            pending,
            begin,
            forget,
            unclean_run,
        );
    }

    #[test]
    fn a_run_that_syncs_in_the_background_is_recorded_until_it_ends() {
        check_record(
            RUN_FILE,
            "clean stop",
            unclean_run,
            begin_run,
            end_run,
            pending,
        );
    }
}
