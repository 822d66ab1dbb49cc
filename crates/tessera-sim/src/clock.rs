//! Simulated clocks: each machine's clock runs at its own rate, within the
//! drift bound, from an offset of its own.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tessera_server::clock::Clock;

thread_local! {
    /// The runner's reading of simulated time, for code running between
    /// steps (outside any machine's turn, where turmoil has no current host).
    static BETWEEN_STEPS: Cell<Duration> = const { Cell::new(Duration::ZERO) };
}

/// Simulated time: how long the simulation has run, as turmoil counts it.
pub fn true_now() -> Duration {
    turmoil::sim_elapsed().unwrap_or_else(|| BETWEEN_STEPS.with(Cell::get))
}

/// The runner says what time it is before it acts between steps.
pub fn set_between_steps(now: Duration) {
    BETWEEN_STEPS.with(|cell| cell.set(now));
}

/// A machine's clock: `offset_ms + true time × (1 + rate_ppm / 10⁶)`.
#[derive(Debug)]
pub struct SimClock {
    pub offset_ms: u64,
    pub rate_ppm: i64,
    epoch_unix_ms: i64,
    last_ms: AtomicU64,
}

impl SimClock {
    pub fn new(offset_ms: u64, rate_ppm: i64, epoch_unix_ms: i64) -> SimClock {
        SimClock {
            offset_ms,
            rate_ppm,
            epoch_unix_ms,
            last_ms: AtomicU64::new(0),
        }
    }

    /// This clock's reading at true time `t`.
    pub fn reading_at(&self, t: Duration) -> u64 {
        let micros = t.as_micros() as i128;
        let scaled = micros * (1_000_000 + self.rate_ppm as i128) / 1_000_000;
        self.offset_ms + (scaled / 1000) as u64
    }

    /// True time at which this clock reads `ms` (the earliest such instant).
    pub fn true_time_of(&self, ms: u64) -> Duration {
        let local_micros = (ms.saturating_sub(self.offset_ms) as i128) * 1000;
        let micros = local_micros * 1_000_000 / (1_000_000 + self.rate_ppm as i128);
        Duration::from_micros(micros.max(0) as u64)
    }
}

impl Clock for SimClock {
    fn now_ms(&self) -> u64 {
        let reading = self.reading_at(true_now());
        // Monotonic even if asked outside a host's turn.
        self.last_ms
            .fetch_max(reading, Ordering::SeqCst)
            .max(reading)
    }

    fn unix_ms(&self) -> i64 {
        self.epoch_unix_ms + true_now().as_millis() as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_and_true_times_agree() {
        for rate_ppm in [-10_000, -1, 0, 7, 10_000] {
            let clock = SimClock::new(5_000, rate_ppm, 0);
            for t_ms in [0u64, 1, 999, 12_345, 3_600_000] {
                let t = Duration::from_millis(t_ms);
                let reading = clock.reading_at(t);
                let back = clock.true_time_of(reading);
                // The reading is floored to a millisecond, so the instant it
                // names is at most a millisecond (stretched) before t.
                assert!(back <= t, "rate {rate_ppm}: {back:?} > {t:?}");
                assert!(t - back <= Duration::from_micros(1_011), "rate {rate_ppm}");
            }
        }
        let fast = SimClock::new(0, 10_000, 0);
        assert_eq!(fast.reading_at(Duration::from_secs(100)), 101_000);
    }
}
