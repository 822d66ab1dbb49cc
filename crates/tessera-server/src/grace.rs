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

use std::path::{Path, PathBuf};
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

/// Longest sleep between two looks at the grace period's end.
const LOOK_EVERY: Duration = Duration::from_secs(1);

fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(GRACE_FILE)
}

/// Whether an earlier run's grace period did not run to its end.
pub fn pending(disk: &dyn Disk, data_dir: &Path) -> bool {
    disk.exists(&path(data_dir))
}

/// Records, durably, that a grace period begins.
pub fn begin(disk: &dyn Disk, data_dir: &Path) -> std::io::Result<()> {
    disk.create_dir(data_dir)?;
    disk.replace_file(&path(data_dir), GRACE_TEXT.as_bytes())
}

/// Forgets a pending grace period: `--new-pool` says the pool never issued
/// a seat.
pub fn forget(disk: &dyn Disk, data_dir: &Path) -> std::io::Result<()> {
    let file = path(data_dir);
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
                path(&app.data_dir).display()
            ),
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seams::FileDisk;

    #[test]
    fn a_pending_grace_period_is_recorded_until_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let disk = FileDisk;
        assert!(!pending(&disk, &data_dir));
        forget(&disk, &data_dir).expect("nothing to forget is no error");
        begin(&disk, &data_dir).unwrap();
        assert!(pending(&disk, &data_dir));
        let text = std::fs::read_to_string(data_dir.join(GRACE_FILE)).unwrap();
        assert!(text.contains("grace period"), "{text}");
        forget(&disk, &data_dir).unwrap();
        assert!(!pending(&disk, &data_dir));
    }
}
