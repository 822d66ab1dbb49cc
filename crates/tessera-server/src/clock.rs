//! The server's clocks, behind a seam so a simulator can drive time.

use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

pub trait Clock: Send + Sync + 'static {
    /// Monotonic milliseconds since an arbitrary start; never goes back.
    fn now_ms(&self) -> u64;
    /// Wall-clock milliseconds since the Unix epoch; only for dates and display.
    fn unix_ms(&self) -> i64;
}

pub struct SystemClock {
    start: Instant,
    /// Added to the wall clock: only a test's ([`crate::clock_mark::test_offset_ms`]).
    offset_ms: i64,
    /// A file whose offset is added as well, read at every reading: only a
    /// test's ([`crate::clock_mark::test_offset_file`]).
    offset_file: Option<PathBuf>,
}

impl SystemClock {
    pub fn new() -> SystemClock {
        SystemClock {
            start: Instant::now(),
            offset_ms: crate::clock_mark::test_offset_ms().unwrap_or(0),
            offset_file: crate::clock_mark::test_offset_file(),
        }
    }

    fn file_offset_ms(&self) -> i64 {
        self.offset_file.as_ref().map_or(0, |path| {
            std::fs::read_to_string(path)
                .ok()
                .and_then(|text| text.trim().parse().ok())
                .unwrap_or(0)
        })
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock::new()
    }
}

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn unix_ms(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
            .saturating_add(self.offset_ms)
            .saturating_add(self.file_offset_ms())
    }
}
