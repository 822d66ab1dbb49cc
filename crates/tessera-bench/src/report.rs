//! Turning measured latencies into figures, and the figures into a Markdown
//! table or JSON.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use serde_json::json;

use crate::load::{LoadResult, Mode, Sample};

/// Upper bounds of the active-seat ranges of [`Mode::Hold`], each one ten
/// times the last.
const ACTIVE_SEAT_BOUNDS: [u64; 7] = [10, 100, 1_000, 10_000, 100_000, 1_000_000, u64::MAX];

/// Rate and latency figures of one operation.
#[derive(Clone, Debug, PartialEq)]
pub struct Stats {
    pub count: u64,
    pub per_s: f64,
    pub p50_us: u32,
    pub p99_us: u32,
    pub p999_us: u32,
    pub max_us: u32,
}

impl Stats {
    /// `latencies_us` in any order; `elapsed` is the measured time.
    pub fn of(mut latencies_us: Vec<u32>, elapsed: Duration) -> Stats {
        latencies_us.sort_unstable();
        let seconds = elapsed.as_secs_f64();
        Stats {
            count: latencies_us.len() as u64,
            per_s: if seconds > 0.0 {
                latencies_us.len() as f64 / seconds
            } else {
                0.0
            },
            p50_us: percentile(&latencies_us, 500_000),
            p99_us: percentile(&latencies_us, 990_000),
            p999_us: percentile(&latencies_us, 999_000),
            max_us: latencies_us.last().copied().unwrap_or(0),
        }
    }

    /// The p50, p99 and p99.9 latencies in ms, as cells of a Markdown row.
    pub(crate) fn tail_ms_cells(&self) -> String {
        format!(
            "{} | {} | {}",
            ms(self.p50_us),
            ms(self.p99_us),
            ms(self.p999_us)
        )
    }

    /// [`Stats::tail_ms_cells`] and the maximum.
    pub fn latency_ms_cells(&self) -> String {
        format!("{} | {}", self.tail_ms_cells(), ms(self.max_us))
    }

    fn to_json(&self) -> serde_json::Value {
        json!({
            "count": self.count,
            "per_s": self.per_s.round(),
            "p50_ms": ms_number(self.p50_us),
            "p99_ms": ms_number(self.p99_us),
            "p99_9_ms": ms_number(self.p999_us),
            "max_ms": ms_number(self.max_us),
        })
    }
}

/// Nearest-rank percentile of sorted values, the percentile given in parts
/// per million (integers, so that p99.9 of 1000 values is the 999th); 0 when
/// there are none.
pub fn percentile(sorted: &[u32], parts_per_million: u64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let n = sorted.len() as u64;
    let rank = (parts_per_million * n).div_ceil(1_000_000) as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Checkout latencies of the seats sent while `active_seats_below` were held.
#[derive(Clone, Debug, PartialEq)]
pub struct ActiveSeatsRange {
    pub active_seats_from: u64,
    pub active_seats_below: u64,
    pub checkout: Stats,
}

/// Everything a run of one system measured.
#[derive(Clone, Debug)]
pub struct Report {
    pub system: String,
    pub mode: Mode,
    pub clients: usize,
    pub measured: Duration,
    pub checkout: Stats,
    /// `None` in [`Mode::Hold`], which does not check in.
    pub checkin: Option<Stats>,
    /// Checkouts in each range of active seats ([`Mode::Hold`] only).
    pub by_active_seats: Vec<ActiveSeatsRange>,
    pub denied: u64,
    pub errors: BTreeMap<String, u64>,
    pub first_error: Option<String>,
    /// Seats the clients held at the end, and grants the system says it holds.
    pub active_seats_end: u64,
    pub system_grants_end: Option<u64>,
    /// Checkouts granted, warm-up included: what the CPU times below paid for.
    pub granted_total: u64,
    /// CPU time the server and the load generator used during the load,
    /// warm-up included.
    pub server_cpu: Option<Duration>,
    pub load_cpu: Option<Duration>,
    /// Resident memory of the server before and after the load.
    pub resident_bytes_before: Option<u64>,
    pub resident_bytes_after: Option<u64>,
    /// Tessera: the longest time between two quota renewals of the server
    /// during the run (`/metrics`); near `quota_lease_ms` it would refuse
    /// with `no_quorum`.
    pub quota_renewal_gap_max_ms: Option<u64>,
    /// The checkout latency distribution: (latency in ms, fraction of
    /// checkouts at most that slow), for plots.
    pub cdf: Vec<(f64, f64)>,
    /// The server's resident memory against the seats held, sampled during the run.
    pub memory: Vec<(u64, u64)>,
}

/// Points of a latency distribution: (ms, fraction at or below), at
/// percentiles spread densely towards the tail.
pub fn cdf(latencies_us: &[u32]) -> Vec<(f64, f64)> {
    let mut sorted = latencies_us.to_vec();
    sorted.sort_unstable();
    if sorted.is_empty() {
        return Vec::new();
    }
    let mut ppms: Vec<u64> = (1..=19).map(|i| i * 50_000).collect();
    ppms.extend([
        960_000, 970_000, 980_000, 990_000, 995_000, 999_000, 999_900, 1_000_000,
    ]);
    ppms.into_iter()
        .map(|ppm| {
            (
                f64::from(percentile(&sorted, ppm)) / 1_000.0,
                ppm as f64 / 1_000_000.0,
            )
        })
        .collect()
}

impl Report {
    pub fn new(system: &str, mode: Mode, clients: usize, result: LoadResult) -> Report {
        let elapsed = result.measured;
        let by_active_seats = match mode {
            Mode::Hold => by_active_seats(&result.checkouts, elapsed),
            Mode::Cycle => Vec::new(),
        };
        let checkout_us: Vec<u32> = result.checkouts.iter().map(|s| s.latency_us).collect();
        let cdf = cdf(&checkout_us);
        Report {
            system: system.to_string(),
            mode,
            clients,
            measured: elapsed,
            checkout: Stats::of(checkout_us, elapsed),
            checkin: (mode == Mode::Cycle).then(|| Stats::of(result.checkins_us, elapsed)),
            by_active_seats,
            denied: result.denied,
            errors: result.errors,
            first_error: result.first_error,
            active_seats_end: result.active_seats,
            system_grants_end: None,
            granted_total: result.granted_total,
            server_cpu: None,
            load_cpu: None,
            resident_bytes_before: None,
            resident_bytes_after: None,
            quota_renewal_gap_max_ms: None,
            cdf,
            memory: result.memory,
        }
    }

    pub fn errors_total(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Growth of the server's resident memory per seat held at the end.
    pub fn resident_bytes_per_active_seat(&self) -> Option<f64> {
        let (before, after) = (self.resident_bytes_before?, self.resident_bytes_after?);
        (self.active_seats_end > 0)
            .then(|| after.saturating_sub(before) as f64 / self.active_seats_end as f64)
    }

    /// CPU microseconds per granted checkout (with its check-in, in [`Mode::Cycle`]).
    fn cpu_us_per_checkout(&self, cpu: Option<Duration>) -> Option<f64> {
        let cpu = cpu?;
        (self.granted_total > 0).then(|| cpu.as_secs_f64() * 1e6 / self.granted_total as f64)
    }

    pub fn markdown(&self) -> String {
        let mut out = String::new();
        table_head(&mut out, "| system | mode | clients | checkouts/s | p50 ms | p99 ms | p99.9 ms | max ms | denied | errors |", "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|");
        let c = &self.checkout;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            self.system,
            self.mode.as_str(),
            self.clients,
            thousands(c.per_s.round() as u64),
            c.latency_ms_cells(),
            self.denied,
            self.errors_total()
        );
        if let Some(c) = &self.checkin {
            table_head(
                &mut out,
                "\n| system | clients | checkins/s | p50 ms | p99 ms | p99.9 ms | max ms |",
                "|---|--:|--:|--:|--:|--:|--:|",
            );
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} |",
                self.system,
                self.clients,
                thousands(c.per_s.round() as u64),
                c.latency_ms_cells(),
            );
        }
        if !self.by_active_seats.is_empty() {
            table_head(
                &mut out,
                "\n| active seats | checkouts | p50 ms | p99 ms | p99.9 ms | max ms |",
                "|---|--:|--:|--:|--:|--:|",
            );
            for range in &self.by_active_seats {
                let c = &range.checkout;
                let _ = writeln!(
                    out,
                    "| {} | {} | {} |",
                    range_label(range),
                    thousands(c.count),
                    c.latency_ms_cells(),
                );
            }
        }
        let _ = writeln!(
            out,
            "\nmeasured {:.2} s; {} checkouts, {} seats held at the end{}",
            self.measured.as_secs_f64(),
            thousands(self.checkout.count),
            thousands(self.active_seats_end),
            match self.system_grants_end {
                Some(grants) => format!(" ({} grants on the server)", thousands(grants)),
                None => String::new(),
            }
        );
        if let Some(gap_ms) = self.quota_renewal_gap_max_ms {
            let _ = writeln!(
                out,
                "quota lease renewals: at most {gap_ms} ms between two (the lease is 2,500 ms)"
            );
        }
        if let (Some(server), Some(load)) = (
            self.cpu_us_per_checkout(self.server_cpu),
            self.cpu_us_per_checkout(self.load_cpu),
        ) {
            let _ = writeln!(
                out,
                "CPU per checkout{}: server {server:.1} us, load generator {load:.1} us (warm-up included)",
                if self.mode == Mode::Cycle { " and check-in" } else { "" },
            );
        }
        if let (Some(before), Some(after)) = (self.resident_bytes_before, self.resident_bytes_after)
        {
            let _ = write!(
                out,
                "server resident memory {:.1} MiB -> {:.1} MiB",
                before as f64 / 1_048_576.0,
                after as f64 / 1_048_576.0
            );
            match self.resident_bytes_per_active_seat() {
                Some(per_seat) if self.mode == Mode::Hold => {
                    let _ = writeln!(out, " ({per_seat:.0} bytes per held seat)");
                }
                _ => out.push('\n'),
            }
        }
        for (kind, count) in &self.errors {
            let _ = writeln!(out, "errors: {count} x {kind}");
        }
        if let Some(first) = &self.first_error {
            let _ = writeln!(out, "first error: {first}");
        }
        out
    }

    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "system": self.system,
            "mode": self.mode.as_str(),
            "clients": self.clients,
            "measured_s": self.measured.as_secs_f64(),
            "checkout": self.checkout.to_json(),
            "checkin": self.checkin.as_ref().map(Stats::to_json),
            "by_active_seats": self.by_active_seats.iter().map(|range| json!({
                "active_seats_from": range.active_seats_from,
                "active_seats_below": (range.active_seats_below != u64::MAX)
                    .then_some(range.active_seats_below),
                "checkout": range.checkout.to_json(),
            })).collect::<Vec<_>>(),
            "denied": self.denied,
            "errors": self.errors_total(),
            "errors_by_kind": self.errors,
            "first_error": self.first_error,
            "active_seats_end": self.active_seats_end,
            "system_grants_end": self.system_grants_end,
            "granted_total": self.granted_total,
            "server_cpu_us_per_checkout": self.cpu_us_per_checkout(self.server_cpu).map(f64::round),
            "load_cpu_us_per_checkout": self.cpu_us_per_checkout(self.load_cpu).map(f64::round),
            "resident_bytes_before": self.resident_bytes_before,
            "resident_bytes_after": self.resident_bytes_after,
            "quota_renewal_gap_max_ms": self.quota_renewal_gap_max_ms,
        })
    }
}

fn by_active_seats(samples: &[Sample], elapsed: Duration) -> Vec<ActiveSeatsRange> {
    let mut ranges = Vec::new();
    let mut from = 0;
    for below in ACTIVE_SEAT_BOUNDS {
        let latencies: Vec<u32> = samples
            .iter()
            .filter(|s| (from..below).contains(&s.active_seats))
            .map(|s| s.latency_us)
            .collect();
        if !latencies.is_empty() {
            ranges.push(ActiveSeatsRange {
                active_seats_from: from,
                active_seats_below: below,
                // The rate of a range means little: report the run's.
                checkout: Stats::of(latencies, elapsed),
            });
        }
        from = below;
    }
    ranges
}

fn range_label(range: &ActiveSeatsRange) -> String {
    if range.active_seats_below == u64::MAX {
        format!("{}+", thousands(range.active_seats_from))
    } else {
        format!(
            "{} to {}",
            thousands(range.active_seats_from),
            thousands(range.active_seats_below - 1)
        )
    }
}

/// A Markdown table's header and alignment rows.
pub(crate) fn table_head(out: &mut String, header: &str, alignment: &str) {
    out.push_str(header);
    out.push('\n');
    out.push_str(alignment);
    out.push('\n');
}

/// Microseconds as milliseconds with three decimals.
pub(crate) fn ms(us: u32) -> String {
    format!("{}.{:03}", us / 1000, us % 1000)
}

fn ms_number(us: u32) -> f64 {
    f64::from(us) / 1000.0
}

/// `1234567` as `1,234,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let groups: Vec<&str> = digits
        .as_bytes()
        .rchunks(3)
        .rev()
        .map(|group| std::str::from_utf8(group).unwrap_or_default())
        .collect();
    groups.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let values: Vec<u32> = (1..=1000).collect();
        for (ppm, expected) in [
            (0, 1),
            (500_000, 500),
            (990_000, 990),
            (999_000, 999),
            (999_001, 1000),
            (1_000_000, 1000),
        ] {
            assert_eq!(percentile(&values, ppm), expected, "{ppm} ppm");
        }
        assert_eq!(percentile(&[7], 999_000), 7);
        assert_eq!(percentile(&[], 500_000), 0);
    }

    #[test]
    fn figures_are_formatted_for_people() {
        for (us, text) in [(0, "0.000"), (999, "0.999"), (1_234_567, "1234.567")] {
            assert_eq!(ms(us), text);
        }
        for (n, text) in [
            (0, "0"),
            (999, "999"),
            (1000, "1,000"),
            (1_234_567, "1,234,567"),
        ] {
            assert_eq!(thousands(n), text);
        }
    }

    #[test]
    fn held_seats_are_split_by_decade() {
        let samples: Vec<Sample> = [0, 9, 10, 5_000, 2_000_000]
            .iter()
            .map(|&active_seats| Sample {
                latency_us: 100,
                active_seats,
            })
            .collect();
        let ranges = by_active_seats(&samples, Duration::from_secs(1));
        let shape: Vec<(u64, u64)> = ranges
            .iter()
            .map(|r| (r.active_seats_from, r.checkout.count))
            .collect();
        assert_eq!(shape, vec![(0, 2), (10, 1), (1_000, 1), (1_000_000, 1)]);
    }
}
