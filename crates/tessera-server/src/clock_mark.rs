//! The latest time this server trusted, kept on disk (`clock.mark` in the
//! data directory): a clock set back beyond the tolerance
//! ([`CLOCK_TOLERANCE_MS`]) would revive expired codes, so the server
//! issues and renews nothing until the clock passes the mark again, and its
//! status says why (`clock_set_back`).
//!
//! The mark is raised to the clock at start and then at most once a
//! minute; the file is replaced whole and durably. A file that does not
//! hold a time is refused at start: it was edited.

use std::path::{Path, PathBuf};

use tessera_core::answer::CLOCK_TOLERANCE_MS;

use crate::seams::Disk;

/// The mark's file in the data directory.
pub const CLOCK_MARK_FILE: &str = "clock.mark";
/// Least time between two writes of the mark.
pub const CLOCK_MARK_WRITE_INTERVAL_MS: i64 = 60_000;
/// Test-only: milliseconds added to the wall clock, honoured only with the
/// test fault switch on (`TESSERA_TEST_FAULTS=1`); negative sets it back.
pub const TEST_CLOCK_OFFSET_ENV: &str = "TESSERA_TEST_CLOCK_OFFSET_MS";
/// Test-only, as [`TEST_CLOCK_OFFSET_ENV`]: a file holding the offset,
/// read at every reading of the wall clock, so a test moves a running
/// server's clock (days in seconds).
pub const TEST_CLOCK_FILE_ENV: &str = "TESSERA_TEST_CLOCK_FILE";

/// The mark as read at start, and kept up to date.
#[derive(Debug)]
pub struct ClockMark {
    path: PathBuf,
    mark_ms: i64,
    written_ms: i64,
    /// Why the clock is not trusted now, if it is not.
    set_back: Option<String>,
}

impl ClockMark {
    /// Reads the mark in `data_dir` (none yet: 0).
    pub fn read(disk: &dyn Disk, data_dir: &Path) -> Result<ClockMark, String> {
        let path = data_dir.join(CLOCK_MARK_FILE);
        let mark_ms = match disk.read_file(&path) {
            Ok(None) => 0,
            Ok(Some(bytes)) => std::str::from_utf8(&bytes)
                .ok()
                .and_then(|text| text.trim().parse::<i64>().ok())
                .filter(|ms| *ms >= 0)
                .ok_or_else(|| {
                    format!(
                        "{} does not hold a time (Unix milliseconds); it was edited. Restore it \
                         from a backup of the data directory",
                        path.display()
                    )
                })?,
            Err(err) => return Err(format!("cannot read {}: {err}", path.display())),
        };
        Ok(ClockMark {
            path,
            mark_ms,
            written_ms: i64::MIN,
            set_back: None,
        })
    }

    /// Looks at the clock: `Some(reason)` while it reads earlier than the
    /// mark by more than the tolerance; otherwise raises the mark, writing
    /// it when a minute has passed since the last write.
    pub fn observe(&mut self, disk: &dyn Disk, now_unix_ms: i64) -> Option<&str> {
        if now_unix_ms.saturating_add(CLOCK_TOLERANCE_MS) < self.mark_ms {
            let behind_s = (self.mark_ms - now_unix_ms) / 1_000;
            let reason = format!(
                "the clock reads {behind_s} s earlier than the latest time this server trusted \
                 ({}, kept in {}): it was set back, and would revive expired licenses. The \
                 server issues and renews nothing until the clock is right",
                tessera_core::CivilDate::from_unix_ms(self.mark_ms),
                self.path.display()
            );
            if self.set_back.as_ref() != Some(&reason) && self.set_back.is_none() {
                tracing::error!("{reason}");
            }
            self.set_back = Some(reason);
            return self.set_back.as_deref();
        }
        if self.set_back.take().is_some() {
            tracing::info!("the clock is right again; serving");
        }
        self.mark_ms = self.mark_ms.max(now_unix_ms);
        if now_unix_ms.saturating_sub(self.written_ms) >= CLOCK_MARK_WRITE_INTERVAL_MS {
            let text = self.mark_ms.to_string();
            match disk.replace_file(&self.path, text.as_bytes()) {
                Ok(()) => self.written_ms = now_unix_ms,
                Err(err) => tracing::warn!("cannot write {}: {err}", self.path.display()),
            }
        }
        None
    }
}

/// The clock offset a test asked for, with the fault switch on.
pub fn test_offset_ms() -> Option<i64> {
    if !crate::pool::test_faults_enabled() {
        return None;
    }
    std::env::var(TEST_CLOCK_OFFSET_ENV).ok()?.parse().ok()
}

/// The clock offset file a test named, with the fault switch on.
pub fn test_offset_file() -> Option<PathBuf> {
    if !crate::pool::test_faults_enabled() {
        return None;
    }
    std::env::var_os(TEST_CLOCK_FILE_ENV).map(PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seams::FileDisk;

    const DAY_MS: i64 = 86_400_000;

    #[test]
    fn a_clock_set_back_beyond_the_tolerance_is_refused_until_it_is_right() {
        let dir = tempfile::tempdir().unwrap();
        let now = 1_796_083_200_000;
        let mut mark = ClockMark::read(&FileDisk, dir.path()).unwrap();
        assert_eq!(mark.observe(&FileDisk, now), None);
        // Read again after a restart: the mark survived on disk.
        let mut mark = ClockMark::read(&FileDisk, dir.path()).unwrap();
        assert_eq!(mark.observe(&FileDisk, now - CLOCK_TOLERANCE_MS + 1), None);
        let reason = mark.observe(&FileDisk, now - DAY_MS).map(str::to_string);
        let reason = reason.expect("a day back is refused");
        assert!(reason.contains("86400 s earlier"), "{reason}");
        assert_eq!(mark.observe(&FileDisk, now + 1), None, "right again");
    }

    #[test]
    fn an_edited_mark_is_refused_at_start() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CLOCK_MARK_FILE), "yesterday").unwrap();
        let err = ClockMark::read(&FileDisk, dir.path()).unwrap_err();
        assert!(err.contains("does not hold a time"), "{err}");
    }
}
