//! The parts of `compare` beyond the main table: throughput against
//! clients, heartbeats with many seats held, cost against active seats up to
//! a million, the open-loop latency at half of Tessera's peak, and fail-over.
//! Each has a Markdown section and, where a picture says more, an SVG plot.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::failover::{FailoverConfig, FailoverResult};
use crate::load::{FixedResult, LoadConfig};
use crate::peers::{EtcdTarget, Fsync, RedisTarget};
use crate::report::{ms, table_head, Report, Stats};
use crate::svg::{Chart, Scale, Series};
use crate::target::Target;
use crate::tessera::{NoopTarget, Setup, TesseraServer, TesseraTarget};
use crate::Mode;

/// Most seats the etcd semaphore is asked to hold: it grants about 300 a
/// second here, so more would take minutes.
const ETCD_HELD_MAX: u64 = 1_000;
/// Clients of the open-loop run: enough that the requests in flight never
/// run out at half of the peak rate.
pub const OPEN_LOOP_CLIENTS: usize = 64;
/// The server's quota lease and how often it is renewed, as the benchmark's
/// servers run (the defaults of `[timing]`).
const QUOTA_LEASE_MS: u64 = 2_500;
const QUOTA_RENEWAL_INTERVAL_MS: u64 = 300;

/// Clients of the heartbeat and scaling runs.
const HELD_CLIENTS: usize = 32;

#[derive(Clone, Debug)]
pub struct ExtrasConfig {
    /// Client counts of the throughput sweep.
    pub sweep_clients: Vec<usize>,
    pub sweep_measure: Duration,
    /// Seats held during the heartbeat runs.
    pub heartbeat_held: Vec<u64>,
    pub heartbeat_measure: Duration,
    /// The scaling run ends at this many seats held, or after `scaling_max`.
    pub scaling_seats: u64,
    pub scaling_max: Duration,
    pub open_loop_measure: Duration,
    /// Runs of each open-loop mode, the two modes in turns; each mode's
    /// report is its run with the median p99.
    pub open_loop_rounds: usize,
    pub failover_runs: usize,
}

impl ExtrasConfig {
    /// The full run: about five minutes on two cores.
    pub fn full() -> ExtrasConfig {
        ExtrasConfig {
            sweep_clients: vec![1, 8, 32, 64],
            sweep_measure: Duration::from_secs(3),
            heartbeat_held: vec![1_000, 10_000, 100_000],
            heartbeat_measure: Duration::from_secs(5),
            scaling_seats: 1_000_000,
            scaling_max: Duration::from_secs(400),
            open_loop_measure: Duration::from_secs(10),
            open_loop_rounds: 3,
            failover_runs: 5,
        }
    }

    /// Seconds in all.
    pub fn smoke() -> ExtrasConfig {
        ExtrasConfig {
            sweep_clients: vec![1, 2],
            sweep_measure: Duration::from_millis(500),
            heartbeat_held: vec![40],
            heartbeat_measure: Duration::from_millis(500),
            scaling_seats: 300,
            scaling_max: Duration::from_secs(20),
            open_loop_measure: Duration::from_secs(1),
            open_loop_rounds: 2,
            failover_runs: 1,
        }
    }
}

/// One point of the throughput sweep.
#[derive(Clone, Debug)]
pub struct SweepPoint {
    pub system: String,
    pub clients: usize,
    pub per_s: f64,
    pub p99_us: u32,
    pub errors: u64,
}

#[derive(Clone, Debug)]
pub struct HeartbeatRow {
    pub system: String,
    pub held: u64,
    pub stats: Stats,
    pub errors: u64,
    pub first_error: Option<String>,
}

#[derive(Clone, Debug)]
pub struct OpenLoop {
    /// The system's name, as in the main table.
    pub system: &'static str,
    pub rate: f64,
    pub peak: f64,
    pub clients: usize,
    pub stats: Stats,
    /// Failed requests of this run; in a report of several rounds, of
    /// every round.
    pub errors: u64,
    pub first_error: Option<String>,
    /// Every round's p99 in microseconds, in the order they ran (one entry
    /// for a single run).
    pub rounds_p99_us: Vec<u32>,
}

impl OpenLoop {
    /// The run with the median p99 (the lower middle of an even count),
    /// with every run's p99 and the failed requests of all of them.
    pub fn median_of(runs: Vec<OpenLoop>) -> Option<OpenLoop> {
        if runs.is_empty() {
            return None;
        }
        let rounds_p99_us: Vec<u32> = runs.iter().map(|run| run.stats.p99_us).collect();
        let errors = runs.iter().map(|run| run.errors).sum();
        let first_error = runs.iter().find_map(|run| run.first_error.clone());
        let mut median = crate::compare::median_by(runs, |run| f64::from(run.stats.p99_us));
        median.rounds_p99_us = rounds_p99_us;
        median.errors = errors;
        median.first_error = first_error;
        Some(median)
    }
}

#[derive(Clone, Debug)]
pub struct Extras {
    pub sweep_measure: Duration,
    pub sweep: Vec<SweepPoint>,
    pub heartbeats: Vec<HeartbeatRow>,
    pub scaling: Report,
    pub open_loop: OpenLoop,
    /// The same with `[store] sync = "background"`, at half of its own peak.
    pub open_loop_background: OpenLoop,
    pub failover: FailoverResult,
}

fn announce(progress: bool, what: &str) {
    if progress {
        eprintln!("[extra] {what}");
    }
}

/// Runs every extra part; `peak` is Tessera's rate in the main table,
/// `peak_background` that of its row with grants synced in the background.
pub async fn run(
    tessera: &Path,
    config: &ExtrasConfig,
    main: &LoadConfig,
    peak: f64,
    peak_background: f64,
) -> Result<Extras> {
    let progress = main.progress;
    let quiet = LoadConfig {
        progress: false,
        ..main.clone()
    };

    announce(progress, "throughput against clients");
    let mut sweep = Vec::new();
    let sweep_load = |clients: usize| LoadConfig {
        clients,
        mode: Mode::Cycle,
        warmup: Duration::from_millis(300),
        measure: config.sweep_measure,
        ..quiet.clone()
    };
    let seats = 1_000_000;
    {
        for background_sync in [false, true] {
            let setup = Setup {
                background_sync,
                ..Setup::cycle(seats)
            };
            let server = TesseraServer::start(tessera, setup).await?;
            let target = Arc::new(TesseraTarget {
                server,
                signed: false,
                background_sync,
            });
            let system = target.system_name();
            for &clients in &config.sweep_clients {
                let report = crate::peers::measure(target.clone(), &sweep_load(clients), |t| {
                    t.server.cpu_time()
                })
                .await?;
                sweep.push(point(system, clients, &report));
            }
        }
        let server = TesseraServer::start(tessera, Setup::cycle(seats)).await?;
        let noop = Arc::new(NoopTarget { server });
        for &clients in &config.sweep_clients {
            let report =
                crate::peers::measure(noop.clone(), &sweep_load(clients), |t| t.server.cpu_time())
                    .await?;
            sweep.push(point("tessera noop endpoint", clients, &report));
        }
        drop(noop);
        for fsync in [Fsync::Always, Fsync::Everysec] {
            let redis = Arc::new(RedisTarget::start(fsync, seats).await?);
            let name = redis.name().to_string();
            for &clients in &config.sweep_clients {
                let report = crate::peers::measure(
                    redis.clone(),
                    &sweep_load(clients),
                    RedisTarget::cpu_time,
                )
                .await?;
                sweep.push(point(&name, clients, &report));
            }
        }
        let etcd = Arc::new(EtcdTarget::start(seats).await?);
        for &clients in &config.sweep_clients {
            let report =
                crate::peers::measure(etcd.clone(), &sweep_load(clients), EtcdTarget::cpu_time)
                    .await?;
            sweep.push(point("etcd (3 nodes)", clients, &report));
        }
    }

    // Before the parts that hold many seats: a server that held them
    // leaves the machine its store's pages to write out (116 MB once in six
    // 500,000-seat trials) and its memory to take back, and the first
    // open-loop run after the million seats read p99 2.3 and 10.9 ms where
    // runs 15 s later read 1.5 and 1.4. Each mode runs in rounds, in
    // turns, and reports its median round: one stall of the host in ten
    // seconds is enough to move a p99.
    crate::compare::settle_disk(progress).await?;
    let (mut synced, mut background) = (Vec::new(), Vec::new());
    for round in 0..config.open_loop_rounds.max(1) {
        let order = match round % 2 {
            0 => [false, true],
            _ => [true, false],
        };
        for background_sync in order {
            let (runs, peak) = match background_sync {
                false => (&mut synced, peak),
                true => (&mut background, peak_background),
            };
            let run = open_loop_at_half(tessera, config, seats, peak, background_sync, progress);
            runs.push(run.await?);
        }
    }
    let open_loop = OpenLoop::median_of(synced).context("no open-loop round ran")?;
    let open_loop_background = OpenLoop::median_of(background).context("no open-loop round ran")?;

    announce(progress, "heartbeats with seats held");
    let mut heartbeats = Vec::new();
    for &held in &config.heartbeat_held {
        let seats = u32::try_from(held * 2).unwrap_or(u32::MAX);
        let server = TesseraServer::start(tessera, Setup::hold(seats)).await?;
        let measure = config.heartbeat_measure;
        let tessera = TesseraTarget {
            server,
            signed: false,
            background_sync: false,
        };
        heartbeats.push(heartbeat_row("tessera", tessera, held, measure).await?);
        let redis = RedisTarget::start(Fsync::Always, seats).await?;
        let name = redis.name().to_string();
        heartbeats.push(heartbeat_row(&name, redis, held, measure).await?);
        if held <= ETCD_HELD_MAX {
            let etcd = EtcdTarget::start(seats).await?;
            heartbeats.push(heartbeat_row("etcd (3 nodes)", etcd, held, measure).await?);
        }
    }

    announce(
        progress,
        &format!(
            "cost per checkout up to {} seats held",
            config.scaling_seats
        ),
    );
    let scaling = crate::single(&crate::SingleConfig {
        tessera: tessera.to_path_buf(),
        seats: u32::try_from(config.scaling_seats + 1_000).unwrap_or(u32::MAX),
        load: LoadConfig {
            clients: HELD_CLIENTS,
            mode: Mode::Hold,
            warmup: Duration::ZERO,
            measure: config.scaling_max,
            checkouts_max: u64::MAX,
            active_seats_max: config.scaling_seats,
            progress,
        },
        transport: crate::Transport::Framed,
        signed: false,
        background_sync: false,
        sdk: false,
    })
    .await?;

    announce(progress, "fail-over after kill -9 of the leader");
    let failover = crate::failover::run(
        tessera,
        &FailoverConfig {
            runs: config.failover_runs,
            clients: 30,
            heartbeat_s: 1,
            progress,
        },
    )
    .await?;

    Ok(Extras {
        sweep_measure: config.sweep_measure,
        sweep,
        heartbeats,
        scaling,
        open_loop,
        open_loop_background,
        failover,
    })
}

/// One server under an open-loop load at half of `peak`, its closed-loop
/// rate.
async fn open_loop_at_half(
    tessera: &Path,
    config: &ExtrasConfig,
    seats: u32,
    peak: f64,
    background_sync: bool,
    progress: bool,
) -> Result<OpenLoop> {
    let rate = (peak / 2.0).max(1.0);
    let single = crate::SingleConfig {
        tessera: tessera.to_path_buf(),
        seats,
        load: LoadConfig {
            clients: OPEN_LOOP_CLIENTS,
            mode: Mode::Cycle,
            warmup: Duration::from_secs(1).min(config.open_loop_measure),
            measure: config.open_loop_measure,
            checkouts_max: u64::MAX,
            active_seats_max: u64::MAX,
            progress: false,
        },
        transport: crate::Transport::Framed,
        signed: false,
        background_sync,
        sdk: false,
    };
    let label = match background_sync {
        true => "grants synced in the background",
        false => "grants synced before answered",
    };
    announce(
        progress,
        &format!("open loop, {label}, at {rate:.0} checkouts/s (half of {peak:.0})"),
    );
    let mut run = crate::single_open_loop(&single, rate).await?;
    run.peak = peak;
    Ok(run)
}

fn point(system: &str, clients: usize, report: &Report) -> SweepPoint {
    SweepPoint {
        system: system.to_string(),
        clients,
        per_s: report.checkout.per_s,
        p99_us: report.checkout.p99_us,
        errors: report.errors_total(),
    }
}

/// `held` seats renewed by [`HELD_CLIENTS`] clients of `target`, which is
/// stopped after.
async fn heartbeat_row<T: Target>(
    system: &str,
    target: T,
    held: u64,
    measure: Duration,
) -> Result<HeartbeatRow> {
    let warmup = Duration::from_millis(300);
    let result =
        crate::load::heartbeats(Arc::new(target), HELD_CLIENTS, held, warmup, measure).await?;
    Ok(row(system, held, result))
}

fn row(system: &str, held: u64, result: FixedResult) -> HeartbeatRow {
    HeartbeatRow {
        system: system.to_string(),
        held,
        errors: result.errors.values().sum(),
        first_error: result.first_error.clone(),
        stats: Stats::of(result.latencies_us, result.measured),
    }
}

impl Extras {
    pub fn errors_total(&self) -> u64 {
        self.sweep.iter().map(|p| p.errors).sum::<u64>()
            + self.heartbeats.iter().map(|h| h.errors).sum::<u64>()
            + self.scaling.errors_total()
            + self.open_loop.errors
            + self.open_loop_background.errors
    }

    /// Resident bytes per held seat at each decade of seats held, from the
    /// memory samples of the scaling run: growth since the start ÷ seats.
    pub fn bytes_per_seat(&self) -> Vec<(u64, f64)> {
        let base = self
            .scaling
            .resident_bytes_before
            .or_else(|| self.scaling.memory.first().map(|m| m.1))
            .unwrap_or(0);
        let mut out = Vec::new();
        let mut decade = 1_000u64;
        while decade <= self.scaling.active_seats_end.max(1) {
            if let Some(&(seats, bytes)) = self.scaling.memory.iter().find(|m| m.0 >= decade) {
                out.push((seats, bytes.saturating_sub(base) as f64 / seats as f64));
            }
            decade *= 10;
        }
        if let Some(per_seat) = self.scaling.resident_bytes_per_active_seat() {
            if out.last().map(|l| l.0) != Some(self.scaling.active_seats_end) {
                out.push((self.scaling.active_seats_end, per_seat));
            }
        }
        out
    }

    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "\n## Throughput against clients\n");
        let _ = writeln!(
            out,
            "Closed loop, {:.1} s measured per point after 0.3 s of warm-up. Plot: \
             `bench-results/throughput-vs-clients.svg`.\n",
            self.sweep_measure.as_secs_f64()
        );
        let mut clients: Vec<usize> = self.sweep.iter().map(|p| p.clients).collect();
        clients.sort_unstable();
        clients.dedup();
        let mut systems: Vec<&str> = self.sweep.iter().map(|p| p.system.as_str()).collect();
        systems.dedup();
        let _ = write!(out, "| system |");
        for c in &clients {
            let _ = write!(out, " {c} clients/s (p99 ms) |");
        }
        let _ = write!(out, "\n|---|");
        for _ in &clients {
            let _ = write!(out, "--:|");
        }
        out.push('\n');
        for system in &systems {
            let _ = write!(out, "| {system} |");
            for c in &clients {
                match self
                    .sweep
                    .iter()
                    .find(|p| p.system == *system && p.clients == *c)
                {
                    Some(p) => {
                        let _ = write!(out, " {:.0} ({}) |", p.per_s, ms(p.p99_us));
                    }
                    None => out.push_str(" - |"),
                }
            }
            out.push('\n');
        }
        for p in self.sweep.iter().filter(|p| p.errors > 0) {
            let _ = writeln!(
                out,
                "\n{}, {} clients: {} requests failed.",
                p.system, p.clients, p.errors
            );
        }

        let _ = writeln!(out, "\n## Heartbeats with seats held\n");
        let _ = writeln!(
            out,
            "{HELD_CLIENTS} clients check out the seats between them, then renew their own \
             seats in turn, closed loop. Tessera: `POST /v1/heartbeat`; Redis: the checkout \
             script, which renews a present holder; etcd: `/v3/lease/keepalive` (held seats up \
             to {ETCD_HELD_MAX} only: etcd grants about 300 a second).\n"
        );
        table_head(&mut out, "| system | seats held | heartbeats/s | p50 ms | p99 ms | p99.9 ms | errors | tessera ÷ system |", "|---|--:|--:|--:|--:|--:|--:|--:|");
        for h in &self.heartbeats {
            let tessera = self
                .heartbeats
                .iter()
                .find(|t| t.system == "tessera" && t.held == h.held)
                .map_or(0.0, |t| t.stats.per_s);
            let ratio = if h.stats.per_s > 0.0 {
                format!("{:.2}x", tessera / h.stats.per_s)
            } else {
                "-".into()
            };
            let _ = writeln!(
                out,
                "| {} | {} | {:.0} | {} | {} | {ratio} |",
                h.system,
                h.held,
                h.stats.per_s,
                h.stats.tail_ms_cells(),
                h.errors
            );
        }

        let _ = writeln!(out, "\n## Cost against active seats\n");
        let _ = writeln!(
            out,
            "One Tessera server, {HELD_CLIENTS} clients checking out seats and keeping them \
             (lease one hour) until {} are held. Checkout latency by the seats held when it \
             was sent, and resident memory per held seat (growth since start ÷ seats). \
             Plots: `bench-results/cost-vs-seats.svg`, `bench-results/memory-per-seat.svg`.\n",
            self.scaling.active_seats_end
        );
        table_head(
            &mut out,
            "| seats held | checkouts | p50 ms | p99 ms | p99.9 ms | max ms |",
            "|---|--:|--:|--:|--:|--:|",
        );
        for range in &self.scaling.by_active_seats {
            let c = &range.checkout;
            let _ = writeln!(
                out,
                "| {} to {} | {} | {} |",
                range.active_seats_from,
                if range.active_seats_below == u64::MAX {
                    "more".to_string()
                } else {
                    (range.active_seats_below - 1).to_string()
                },
                c.count,
                c.latency_ms_cells()
            );
        }
        if let Some(gap_ms) = self.scaling.quota_renewal_gap_max_ms {
            let _ = writeln!(
                out,
                "\nLongest gap between two renewals of the server's quota lease during the \
                 run: {gap_ms} ms (renewed every {QUOTA_RENEWAL_INTERVAL_MS} ms; the lease is \
                 {QUOTA_LEASE_MS} ms, after which the server stops issuing)."
            );
        }
        let _ = writeln!(
            out,
            "\n{} checkouts failed{}.",
            self.scaling.errors_total(),
            self.scaling
                .first_error
                .as_ref()
                .map_or(String::new(), |e| format!("; first: {e}"))
        );
        table_head(
            &mut out,
            "\n| seats held | resident bytes per seat |",
            "|--:|--:|",
        );
        for (seats, per_seat) in self.bytes_per_seat() {
            let _ = writeln!(out, "| {seats} | {per_seat:.0} |");
        }
        let first = self
            .scaling
            .by_active_seats
            .iter()
            .find(|r| r.checkout.count > 100);
        let last = self
            .scaling
            .by_active_seats
            .iter()
            .rev()
            .find(|r| r.checkout.count > 100);
        let flat = match (first, last) {
            (Some(a), Some(b)) if a.checkout.p50_us > 0 => {
                format!(
                    "{:.2}x",
                    f64::from(b.checkout.p50_us) / f64::from(a.checkout.p50_us)
                )
            }
            _ => "-".into(),
        };
        let per_seat_end = self.scaling.resident_bytes_per_active_seat();

        let o = &self.open_loop;
        let ob = &self.open_loop_background;
        let _ = writeln!(out, "\n## Open loop at half of the peak\n");
        let rounds = o.rounds_p99_us.len().max(ob.rounds_p99_us.len());
        let _ = writeln!(
            out,
            "Checkouts (each followed by its check-in) due at half of each system's \
             closed-loop rate above, sent by whichever of {} clients is free; latency counts \
             from when each checkout was due, so stalls are not hidden. {}\n",
            o.clients,
            match rounds {
                0 | 1 => "One run each.".to_string(),
                n => format!(
                    "Each ran {n} times, the two in turns; each row is its run with the median \
                     p99, and the last column has every run's p99 in the order they ran \
                     (errors count every run's)."
                ),
            }
        );
        table_head(
            &mut out,
            "| system | due/s | half of | checkouts | p50 ms | p99 ms | p99.9 ms | max ms | errors | p99 ms, every run |",
            "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
        );
        for run in [o, ob] {
            let every: Vec<String> = run.rounds_p99_us.iter().map(|&us| ms(us)).collect();
            let _ = writeln!(
                out,
                "| {} | {:.0} | {:.0} | {} | {} | {} | {} |",
                run.system,
                run.rate,
                run.peak,
                run.stats.count,
                run.stats.latency_ms_cells(),
                run.errors,
                every.join(", ")
            );
        }

        let _ = writeln!(out, "\n## Fail-over\n");
        let _ = writeln!(
            out,
            "A 3-server pool, 30 clients holding a seat each, the leader killed with kill -9; \
             each run on a fresh pool.\n"
        );
        out.push_str(&self.failover.markdown());

        let _ = writeln!(out, "\n## More goals, from this run\n");
        table_head(&mut out, "| goal | figure | verdict |", "|---|--:|---|");
        for (run, how) in [(o, ""), (ob, ", grants synced in the background")] {
            let _ = writeln!(
                out,
                "| p99 under 2 ms at half of peak load (open loop){how} | {} ms | {} |",
                ms(run.stats.p99_us),
                crate::compare::verdict(run.stats.p99_us < 2_000)
            );
        }
        // The sweep's largest client count, against Redis at `always`.
        let most = self.sweep.iter().map(|p| p.clients).max().unwrap_or(0);
        let at_most = |system: &str| {
            self.sweep
                .iter()
                .find(|p| p.system == system && p.clients == most)
                .map(|p| p.per_s)
        };
        if let Some(redis) = at_most("redis (appendfsync always)").filter(|r| *r > 0.0) {
            for system in ["tessera", "tessera, background sync"] {
                if let Some(per_s) = at_most(system) {
                    let _ = writeln!(
                        out,
                        "| at least Redis at appendfsync always at {most} clients ({system}, \
                         the sweep) | {:.2}x | {} |",
                        per_s / redis,
                        crate::compare::verdict(per_s >= redis)
                    );
                }
            }
        }
        let _ = writeln!(
            out,
            "| flat cost per checkout up to 10^6 seats (p50, last decade ÷ first) | {flat} | {} |",
            match (first, last) {
                (Some(a), Some(b)) if b.checkout.p50_us <= a.checkout.p50_us * 2 => "met",
                (Some(_), Some(_)) => "missed",
                _ => "-",
            }
        );
        let _ = writeln!(
            out,
            "| under 1 KiB per active seat | {} | {} |",
            per_seat_end.map_or("-".into(), |b| format!("{b:.0} bytes")),
            match per_seat_end {
                Some(b) if b < 1024.0 => "met",
                Some(_) => "missed",
                None => "-",
            }
        );
        let median = |d: &[Duration]| {
            d.get(d.len().saturating_sub(1) / 2)
                .map_or(0, |d| d.as_millis())
        };
        if let Some(gap_ms) = self.scaling.quota_renewal_gap_max_ms {
            let _ = writeln!(
                out,
                "| no pause near the quota lease while the seats are taken (longest \
                 renewal gap under half of the {QUOTA_LEASE_MS} ms lease) | {gap_ms} ms | {} |",
                if gap_ms < QUOTA_LEASE_MS / 2 {
                    "met"
                } else {
                    "missed"
                }
            );
        }
        let _ = writeln!(
            out,
            "| new leader within a second (median takeover) | {} ms | {} |",
            median(&self.failover.takeovers),
            if median(&self.failover.takeovers) < 1_000 {
                "met"
            } else {
                "missed"
            }
        );
        out
    }

    /// Writes the SVG plots into `dir`; returns their paths.
    pub fn write_plots(&self, dir: &Path, main: &[Report]) -> Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let mut written = Vec::new();
        let mut write = |name: &str, chart: Chart| -> Result<()> {
            let path = dir.join(name);
            std::fs::write(&path, chart.to_svg())
                .with_context(|| format!("cannot write {}", path.display()))?;
            written.push(path);
            Ok(())
        };
        write(
            "latency-cdf.svg",
            Chart {
                title: "Checkout latency distribution (closed loop)".into(),
                x_label: "latency, ms".into(),
                y_label: "fraction of checkouts".into(),
                x_scale: Scale::Log,
                y_scale: Scale::Linear,
                series: main
                    .iter()
                    .map(|r| Series {
                        name: r.system.clone(),
                        points: r.cdf.clone(),
                    })
                    .collect(),
            },
        )?;
        let mut systems: Vec<&str> = self.sweep.iter().map(|p| p.system.as_str()).collect();
        systems.dedup();
        write(
            "throughput-vs-clients.svg",
            Chart {
                title: "Checkouts per second against clients".into(),
                x_label: "concurrent clients".into(),
                y_label: "checkouts/s".into(),
                x_scale: Scale::Log,
                y_scale: Scale::Linear,
                series: systems
                    .iter()
                    .map(|system| Series {
                        name: system.to_string(),
                        points: self
                            .sweep
                            .iter()
                            .filter(|p| p.system == *system)
                            .map(|p| (p.clients as f64, p.per_s))
                            .collect(),
                    })
                    .collect(),
            },
        )?;
        let ranges = &self.scaling.by_active_seats;
        let middle = |r: &crate::report::ActiveSeatsRange| {
            if r.active_seats_below == u64::MAX {
                r.active_seats_from as f64
            } else {
                ((r.active_seats_from.max(1) as f64) * (r.active_seats_below as f64)).sqrt()
            }
        };
        write(
            "cost-vs-seats.svg",
            Chart {
                title: "Checkout latency against seats held".into(),
                x_label: "seats held".into(),
                y_label: "checkout latency, ms".into(),
                x_scale: Scale::Log,
                y_scale: Scale::Linear,
                series: vec![
                    Series {
                        name: "p50".into(),
                        points: ranges
                            .iter()
                            .map(|r| (middle(r), f64::from(r.checkout.p50_us) / 1000.0))
                            .collect(),
                    },
                    Series {
                        name: "p99".into(),
                        points: ranges
                            .iter()
                            .map(|r| (middle(r), f64::from(r.checkout.p99_us) / 1000.0))
                            .collect(),
                    },
                ],
            },
        )?;
        write(
            "memory-per-seat.svg",
            Chart {
                title: "Server resident memory per held seat".into(),
                x_label: "seats held".into(),
                y_label: "bytes per seat".into(),
                x_scale: Scale::Log,
                y_scale: Scale::Linear,
                series: vec![Series {
                    name: "tessera".into(),
                    points: self
                        .bytes_per_seat()
                        .into_iter()
                        .map(|(s, b)| (s as f64, b))
                        .collect(),
                }],
            },
        )?;
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(p99_us: u32, errors: u64) -> OpenLoop {
        OpenLoop {
            system: "tessera",
            rate: 100.0,
            peak: 200.0,
            clients: OPEN_LOOP_CLIENTS,
            stats: Stats {
                count: 1_000,
                per_s: 100.0,
                p50_us: 300,
                p99_us,
                p999_us: p99_us * 2,
                max_us: p99_us * 3,
            },
            errors,
            first_error: (errors > 0).then(|| format!("{errors} failed")),
            rounds_p99_us: vec![p99_us],
        }
    }

    #[test]
    fn the_open_loop_reports_its_median_round_with_every_rounds_p99_and_errors() {
        let median = OpenLoop::median_of(vec![run(10_900, 0), run(1_460, 2), run(1_400, 0)])
            .expect("three rounds");
        assert_eq!(median.stats.p99_us, 1_460);
        assert_eq!(median.stats.p999_us, 2_920, "the median run's own figures");
        assert_eq!(
            median.rounds_p99_us,
            vec![10_900, 1_460, 1_400],
            "in run order"
        );
        assert_eq!(median.errors, 2, "every round's failures count");
        assert_eq!(median.first_error.as_deref(), Some("2 failed"));
        // An even count takes the lower middle; none is no report.
        let two = OpenLoop::median_of(vec![run(3_000, 0), run(1_000, 0)]).expect("two");
        assert_eq!(two.stats.p99_us, 1_000);
        assert!(OpenLoop::median_of(Vec::new()).is_none());
    }
}
