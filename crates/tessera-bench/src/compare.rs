//! `compare`: Tessera and its peers, one after another in one run, with the
//! same load generator, the same clients and the same length, and the
//! Markdown for BENCHMARKS.md.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::extras::{Extras, ExtrasConfig};
use crate::load::LoadConfig;
use crate::peers::{EtcdTarget, Fsync, RedisTarget};
use crate::report::{table_head, Report};
use crate::tessera::{NoopTarget, PoolTarget, Setup, TesseraServer};
use crate::{Mode, SingleConfig, Transport};

/// Longest a peer's `--version` may take.
const VERSION_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
pub struct CompareConfig {
    /// The `tessera` binary to run.
    pub tessera: PathBuf,
    /// Hard limit of every system's semaphore; the default never denies.
    pub seats: u32,
    /// The same for every system; always [`Mode::Cycle`].
    pub load: LoadConfig,
    /// The parts beyond the main table; `None` runs the table only.
    pub extras: Option<ExtrasConfig>,
    /// Times each system of the main table but etcd runs, in turns (see
    /// [`compare`]); at least 1.
    pub rounds: usize,
}

impl CompareConfig {
    /// Every system for one second with two clients, in two rounds.
    pub fn smoke(tessera: PathBuf) -> CompareConfig {
        let single = SingleConfig::smoke(tessera);
        CompareConfig {
            tessera: single.tessera,
            seats: single.seats,
            load: single.load,
            extras: Some(ExtrasConfig::smoke()),
            rounds: 2,
        }
    }
}

/// The systems in the order they run, and so in the table.
const SYSTEMS: [&str; 10] = [
    "tessera",
    "tessera, background sync",
    "tessera, signed answers",
    "tessera, REST",
    "tessera, plain HTTP",
    "tessera pool (3 servers)",
    "tessera noop endpoint",
    "redis (appendfsync always)",
    "redis (appendfsync everysec)",
    "etcd (3 nodes)",
];

/// The systems that run once per round: all but etcd, which is twenty
/// times slower than any goal's threshold and slow to start.
const IN_ROUNDS: usize = 9;

/// One round's figures of one system.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RoundFigures {
    pub per_s: f64,
    pub cpu_us: Option<f64>,
    /// Failed requests: every round counts, not just the median one.
    pub errors: u64,
}

/// Every system's report, in [`SYSTEMS`] order.
pub struct Comparison {
    /// Each system's median round.
    pub reports: Vec<Report>,
    /// Each system's rounds, in the order they ran (one for etcd).
    pub rounds: Vec<Vec<RoundFigures>>,
    pub clients: usize,
    pub warmup: Duration,
    pub measure: Duration,
    pub versions: Vec<(String, String)>,
    pub extras: Option<Extras>,
}

impl Comparison {
    /// Failed requests in every round of every system and in the extra parts.
    pub fn errors_total(&self) -> u64 {
        self.rounds
            .iter()
            .flatten()
            .map(|run| run.errors)
            .sum::<u64>()
            + self.extras.as_ref().map_or(0, Extras::errors_total)
    }
}

/// Has the kernel write out what it holds for the disk before anything is
/// measured. A run started right after a build otherwise shares the disk
/// with the build's write-back: one read 30 µs of server CPU per cycle and
/// 33,045 checkouts/s where the same build, run after it, read 27 µs and
/// 34,618/s.
pub(crate) async fn settle_disk(progress: bool) -> Result<()> {
    let started = std::time::Instant::now();
    // SAFETY: sync(2) takes no arguments and cannot fail.
    tokio::task::spawn_blocking(|| unsafe { libc::sync() }).await?;
    let took = started.elapsed();
    if progress && took >= std::time::Duration::from_millis(500) {
        eprintln!(
            "waited {:.1} s for the disk to write out what the kernel held",
            took.as_secs_f64()
        );
    }
    Ok(())
}

/// Runs every system; a system that cannot start fails the whole run (with
/// the install hint when a peer's binary is missing).
///
/// The systems but etcd run `rounds` times, one after another in each
/// round, each round starting one system further on: a machine whose load
/// changes during the run (a shared or virtual one) weighs on every system
/// alike, not on whichever ran in its worst minute. Each system's median
/// round is its report.
pub async fn compare(config: &CompareConfig) -> Result<Comparison> {
    let mut load = config.load.clone();
    load.mode = Mode::Cycle;
    let rounds = config.rounds.max(1);
    let announce = |round: usize, index: usize| {
        if load.progress {
            let of = if index < IN_ROUNDS { rounds } else { 1 };
            eprintln!(
                "[round {}/{of}, {}/{}] {}",
                (round + 1).min(of),
                index + 1,
                SYSTEMS.len(),
                SYSTEMS[index]
            );
        }
    };
    // Missing peers fail before anything runs.
    crate::peers::find_binary("redis-server")?;
    crate::peers::find_binary("etcd")?;
    settle_disk(load.progress).await?;
    let mut runs: Vec<Vec<Report>> = (0..SYSTEMS.len()).map(|_| Vec::new()).collect();
    for round in 0..rounds {
        for turn in 0..IN_ROUNDS {
            let index = (turn + round) % IN_ROUNDS;
            announce(round, index);
            runs[index].push(run_system(index, config, &load).await?);
        }
    }
    for (index, system_runs) in runs.iter_mut().enumerate().skip(IN_ROUNDS) {
        announce(0, index);
        system_runs.push(run_system(index, config, &load).await?);
    }
    let rounds: Vec<Vec<RoundFigures>> = runs
        .iter()
        .map(|system_runs| {
            system_runs
                .iter()
                .map(|report| RoundFigures {
                    per_s: report.checkout.per_s,
                    cpu_us: cpu_us_per_cycle(report),
                    errors: report.errors_total(),
                })
                .collect()
        })
        .collect();
    let reports: Vec<Report> = runs
        .into_iter()
        .map(|system_runs| median_by(system_runs, |report| report.checkout.per_s))
        .collect();

    let extras = match &config.extras {
        Some(extras) => {
            let peak = reports.first().map_or(0.0, |r| r.checkout.per_s);
            let peak_background = reports.get(1).map_or(0.0, |r| r.checkout.per_s);
            let extras =
                crate::extras::run(&config.tessera, extras, &load, peak, peak_background).await?;
            Some(extras)
        }
        None => None,
    };
    let versions = vec![
        ("redis-server".to_string(), version("redis-server").await),
        ("etcd".to_string(), version("etcd").await),
    ];
    Ok(Comparison {
        reports,
        rounds,
        clients: load.clients,
        warmup: load.warmup,
        measure: load.measure,
        versions,
        extras,
    })
}

/// The run of [`SYSTEMS`]`[index]`, started afresh.
async fn run_system(index: usize, config: &CompareConfig, load: &LoadConfig) -> Result<Report> {
    let single = SingleConfig {
        tessera: config.tessera.clone(),
        seats: config.seats,
        load: load.clone(),
        transport: Transport::Framed,
        signed: false,
        background_sync: false,
        sdk: false,
    };
    match index {
        0 => crate::single(&single).await,
        1 => {
            crate::single(&SingleConfig {
                background_sync: true,
                ..single
            })
            .await
        }
        2 => {
            crate::single(&SingleConfig {
                signed: true,
                ..single
            })
            .await
        }
        3 => {
            crate::single(&SingleConfig {
                transport: Transport::Rest,
                ..single
            })
            .await
        }
        4 => {
            crate::single(&SingleConfig {
                transport: Transport::Plain,
                ..single
            })
            .await
        }
        5 => {
            let pool = Arc::new(PoolTarget::start(&config.tessera, config.seats).await?);
            crate::peers::measure(pool, load, PoolTarget::cpu_time).await
        }
        6 => {
            let server = TesseraServer::start(&config.tessera, Setup::cycle(config.seats)).await?;
            let noop = Arc::new(NoopTarget { server });
            crate::peers::measure(noop, load, |t| t.server.cpu_time()).await
        }
        7 | 8 => {
            let fsync = if index == 7 {
                Fsync::Always
            } else {
                Fsync::Everysec
            };
            let redis = Arc::new(RedisTarget::start(fsync, config.seats).await?);
            crate::peers::measure(redis, load, RedisTarget::cpu_time).await
        }
        _ => {
            let etcd = Arc::new(EtcdTarget::start(config.seats).await?);
            crate::peers::measure(etcd, load, EtcdTarget::cpu_time).await
        }
    }
}

/// The run with the median `rate` (the lower of the middle two of an even
/// number). `runs` is not empty.
pub(crate) fn median_by<T>(mut runs: Vec<T>, rate: impl Fn(&T) -> f64) -> T {
    runs.sort_by(|a, b| rate(a).total_cmp(&rate(b)));
    let middle = (runs.len() - 1) / 2;
    runs.swap_remove(middle)
}

/// The first line `binary --version` prints, or why there is none.
async fn version(binary: &str) -> String {
    let output = tokio::time::timeout(
        VERSION_TIMEOUT,
        tokio::process::Command::new(binary)
            .arg("--version")
            .kill_on_drop(true)
            .output(),
    )
    .await;
    match output {
        Ok(Ok(output)) => String::from_utf8_lossy(&output.stdout)
            .lines()
            .next()
            .unwrap_or("?")
            .trim()
            .to_string(),
        _ => "unknown".to_string(),
    }
}

/// The machine: cores, CPU model, kernel.
fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name")?.split_once(':'))
        .map_or("unknown CPU", |(_, model)| model.trim());
    format!("{cores} cores ({model}), Linux {}", kernel.trim())
}

/// The server's CPU time per cycle, in µs, where it was measured.
fn cpu_us_per_cycle(report: &Report) -> Option<f64> {
    report
        .server_cpu
        .filter(|_| report.granted_total > 0)
        .map(|cpu| cpu.as_secs_f64() * 1e6 / report.granted_total as f64)
}

/// A goal's verdict from a ratio and its threshold.
pub(crate) fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "missed"
    }
}

impl Comparison {
    /// The most rounds any system ran.
    fn round_count(&self) -> usize {
        self.rounds.iter().map(Vec::len).max().unwrap_or(1)
    }

    /// Every round's figures of the systems that ran in rounds, and the
    /// goals' ratios round by round: a ratio that holds in every round is
    /// not the luck of one minute.
    fn rounds_markdown(&self, out: &mut String) {
        let count = self.round_count();
        if count < 2 {
            return;
        }
        let _ = writeln!(
            out,
            "\n## Rounds\n\nThe systems above but etcd, {count} times in turns (each round \
             starting one system further on), checkouts/s and server CPU µs/cycle of each \
             round, then the goals' ratios round by round; the main table shows each \
             system's median round.\n"
        );
        let mut head = "| system |".to_string();
        let mut align = "|---|".to_string();
        for round in 1..=count {
            let _ = write!(head, " round {round} |");
            align.push_str("--:|");
        }
        table_head(out, &head, &align);
        let runs_of = |name: &str| {
            SYSTEMS
                .iter()
                .position(|system| *system == name)
                .and_then(|index| self.rounds.get(index))
                .filter(|runs| runs.len() == count)
        };
        for (system, runs) in SYSTEMS.iter().zip(&self.rounds) {
            if runs.len() != count {
                continue;
            }
            let _ = write!(out, "| {system} |");
            for run in runs {
                let cpu = run
                    .cpu_us
                    .map_or("-".to_string(), |cpu| format!("{cpu:.1}"));
                let errors = match run.errors {
                    0 => String::new(),
                    n => format!(", {n} errors"),
                };
                let _ = write!(out, " {:.0} ({cpu}{errors}) |", run.per_s);
            }
            out.push('\n');
        }
        let ratios = [
            ("tessera", "redis (appendfsync always)"),
            ("tessera, background sync", "redis (appendfsync always)"),
            ("tessera, signed answers", "redis (appendfsync always)"),
            // The no-op goal's own ratio (within 2x of the no-op endpoint).
            ("tessera noop endpoint", "tessera"),
        ];
        for (system, peer) in ratios {
            let (Some(runs), Some(peers)) = (runs_of(system), runs_of(peer)) else {
                continue;
            };
            let _ = write!(out, "| {system} ÷ {peer} |");
            for (run, peer) in runs.iter().zip(peers) {
                if peer.per_s > 0.0 {
                    let _ = write!(out, " {:.2}x |", run.per_s / peer.per_s);
                } else {
                    out.push_str(" - |");
                }
            }
            out.push('\n');
        }
    }

    /// BENCHMARKS.md: the table, the ratios, the goals, Tessera against
    /// `previous` (the file this one replaces), how it was measured.
    pub fn markdown(
        &self,
        date: &str,
        previous: Option<&crate::previous::Previous>,
    ) -> Result<String> {
        let tessera = self
            .reports
            .first()
            .context("the comparison has no Tessera result")?;
        let rate = |report: &Report| report.checkout.per_s;
        let mut out = String::new();
        let _ = writeln!(out, "# Benchmarks\n");
        let _ = writeln!(
            out,
            "Written by `tessera-bench compare` on {date}; machine: {}. \
             Closed loop, {} clients for every system, {} s measured after {} s of warm-up, \
             each client with its own connection; a cycle is one checkout and one check-in \
             (or release), so checkouts/s counts cycles. All traffic on loopback; every \
             system runs on the same cores as the load generator. {}\n",
            machine(),
            self.clients,
            self.measure.as_secs(),
            self.warmup.as_secs(),
            match self.round_count() {
                1 => "Each system ran once.".to_string(),
                n => format!(
                    "Each system but etcd ran {n} times, in turns; each row is its median \
                     round (\"Rounds\" below)."
                ),
            },
        );
        table_head(&mut out, "| system | checkouts/s | p50 ms | p99 ms | p99.9 ms | errors | server CPU µs/cycle | tessera ÷ system |", "|---|--:|--:|--:|--:|--:|--:|--:|");
        for report in &self.reports {
            let c = &report.checkout;
            let ratio = if rate(report) > 0.0 {
                format!("{:.2}x", rate(tessera) / rate(report))
            } else {
                "-".to_string()
            };
            let cpu = cpu_us_per_cycle(report).map_or("-".to_string(), |cpu| format!("{cpu:.0}"));
            let _ = writeln!(
                out,
                "| {} | {:.0} | {} | {} | {cpu} | {ratio} |",
                report.system,
                c.per_s,
                c.tail_ms_cells(),
                report.errors_total(),
            );
        }
        let _ = writeln!(
            out,
            "\nEvery system's checkouts/s against every other's, from this run (row ÷ column). \
             Plot of the latency distributions: `bench-results/latency-cdf.svg`.\n"
        );
        let _ = write!(out, "| row ÷ column |");
        for report in &self.reports {
            let _ = write!(out, " {} |", report.system);
        }
        let _ = write!(out, "\n|---|");
        for _ in &self.reports {
            let _ = write!(out, "--:|");
        }
        out.push('\n');
        for row in &self.reports {
            let _ = write!(out, "| {} |", row.system);
            for column in &self.reports {
                if rate(column) > 0.0 {
                    let _ = write!(out, " {:.2} |", rate(row) / rate(column));
                } else {
                    out.push_str(" - |");
                }
            }
            out.push('\n');
        }
        self.rounds_markdown(&mut out);
        let find = |name: &str| self.reports.iter().find(|r| r.system == name).map(rate);
        let ratio_to = |name: &str| {
            find(name)
                .filter(|peer| *peer > 0.0)
                .map(|peer| rate(tessera) / peer)
        };
        let _ = writeln!(out, "\n## Goals (DESIGN.md), from this run\n");
        table_head(&mut out, "| goal | figure | verdict |", "|---|--:|---|");
        if let Some(ratio) = ratio_to("etcd (3 nodes)") {
            let _ = writeln!(
                out,
                "| at least 10x the 3-node etcd semaphore | {ratio:.2}x | {} |",
                verdict(ratio >= 10.0)
            );
        }
        if let Some(ratio) = ratio_to("redis (appendfsync always)") {
            let _ = writeln!(
                out,
                "| at least Redis at appendfsync always | {ratio:.2}x | {} |",
                verdict(ratio >= 1.0)
            );
        }
        let redis_always = find("redis (appendfsync always)").filter(|redis| *redis > 0.0);
        if let (Some(background), Some(redis)) = (find("tessera, background sync"), redis_always) {
            let _ = writeln!(
                out,
                "| at least Redis at appendfsync always, grants synced in the background \
                 (recovered from heartbeats after a crash) | {:.2}x | {} |",
                background / redis,
                verdict(background / redis >= 1.0)
            );
        }
        if let (Some(signed), Some(redis)) = (find("tessera, signed answers"), redis_always) {
            let _ = writeln!(
                out,
                "| at least Redis at appendfsync always, signed answers (a program with its \
                 vendor's keys) | {:.2}x | {} |",
                signed / redis,
                verdict(signed / redis >= 1.0)
            );
        }
        let cpu_of = |name: &str| {
            self.reports
                .iter()
                .find(|r| r.system == name)
                .and_then(cpu_us_per_cycle)
        };
        if let Some(redis) = cpu_of("redis (appendfsync always)") {
            for system in [
                "tessera",
                "tessera, background sync",
                "tessera, signed answers",
            ] {
                if let Some(cpu) = cpu_of(system) {
                    let _ = writeln!(
                        out,
                        "| server CPU per cycle at or below Redis's at appendfsync always \
                         ({system}) | {cpu:.1} µs against {redis:.1} | {} |",
                        verdict(cpu <= redis)
                    );
                }
            }
        }
        if let Some(ratio) = ratio_to("tessera noop endpoint") {
            let _ = writeln!(
                out,
                "| within 2x of the no-op endpoint | noop ÷ tessera = {:.2}x | {} |",
                1.0 / ratio,
                verdict(ratio >= 0.5)
            );
        }
        if let Some(signed) = find("tessera, signed answers").filter(|signed| *signed > 0.0) {
            let _ = writeln!(
                out,
                "| what signing answers costs (unsigned ÷ signed, checkouts/s) | {:.2}x | - |",
                rate(tessera) / signed
            );
        }
        if let Some(rest) = find("tessera, REST").filter(|rest| *rest > 0.0) {
            let _ = writeln!(
                out,
                "| what the framed protocol saves (framed ÷ REST, checkouts/s) | {:.2}x | - |",
                rate(tessera) / rest
            );
            if let Some(plain) = find("tessera, plain HTTP") {
                let _ = writeln!(
                    out,
                    "| what TLS costs (plain HTTP ÷ TLS, both REST, checkouts/s) | {:.2}x | - |",
                    plain / rest
                );
            }
        }
        if self.extras.is_none() {
            let _ = writeln!(
                out,
                "| p99 under 2 ms at half of peak load | not measured (run without the extra parts) | - |"
            );
        }
        if let Some(extras) = &self.extras {
            out.push_str(&extras.markdown());
        }
        out.push_str(&crate::previous::markdown(&self.reports, previous));
        let _ = writeln!(out, "\n## Systems\n");
        let _ = writeln!(
            out,
            "- **tessera**: one `tessera server` (a pool of one; every grant in the synced grant journal before it is answered), a \
             checkout then a check-in in the framed protocol the SDK speaks (one frame each \
             way, the REST routes' JSON bodies), over TLS 1.3 (rustls, the default), each \
             client keeping its connection.\n\
             - **tessera, background sync**: the same with `[store] sync = \"background\"`: \
             a grant is answered before it is synced, its journal synced within 50 ms; a run \
             that did not stop cleanly is followed by a grace period in which the server takes \
             its grants back from its holders' heartbeats (ARCHITECTURE.md, timeline 3).\n\
             - **tessera, signed answers**: the same, each checkout with a nonce, as a program \
             with its vendor's keys sends it, naming the license codes it holds once a grant \
             brought them, so later grants leave them out (PROTOCOL.md, \"Codes the program \
             holds\"); on `tessera/3` (TLS 1.3) a connection's first answer is signed \
             over the TLS channel too and later answers come unsigned, bound to that channel \
             (PROTOCOL.md, \"Answers bound to the channel\").\n\
             - **tessera, REST**: the same as `POST /v1/checkout` then `POST /v1/checkin` \
             (HTTP/1.1 and JSON) over TLS: what the framing saves.\n\
             - **tessera, plain HTTP**: REST over plain HTTP (`plain_http`, loopback \
             only): what TLS costs.\n\
             - **tessera pool (3 servers)**: three servers of one pool (Raft control plane, \
             each with its durable store and a third of the seats), client n on server n mod 3.\n\
             - **tessera noop endpoint**: the same server's no-op (frame op 4, `POST /v1/noop` \
             in REST), which parses a checkout request and answers a grant-shaped body without \
             the issuer or the store; called twice per cycle, in frames. The ceiling of the \
             protocol.\n\
             - **redis**: `redis-server` started by the benchmark with `--appendonly yes \
             --appendfsync always|everysec --save \"\"`. Checkout: `EVALSHA` of a Lua script \
             (loaded with `SCRIPT LOAD`) on a sorted set of holder -> expiry: drop expired \
             holders (`ZREMRANGEBYSCORE`), renew a present holder, else `ZADD` with now + lease \
             while `ZCARD` is below the limit. Check-in: `ZREM`. Client: the `redis` crate, \
             one multiplexed connection per client.\n\
             - **etcd (3 nodes)**: three `etcd` members on loopback, clients spread over them, \
             through the v3 JSON gateway. Checkout: `/v3/lease/grant` (TTL = the lease), then \
             one `/v3/kv/txn` that puts the holder's key under the semaphore prefix with the \
             lease and counts the keys under the prefix (`count_only`); at most the limit: \
             granted, else `/v3/lease/revoke` and denied. Check-in: `/v3/lease/revoke` (deletes \
             the key; expiry does the same). Safe because the newest granted key's transaction \
             counted every other granted key.\n"
        );
        let _ = writeln!(out, "Versions:");
        for (name, version) in &self.versions {
            let _ = writeln!(out, "- {name}: {version}");
        }
        let _ = writeln!(
            out,
            "\nOn a shared or virtual machine rates vary by a fifth or more between runs; \
             compare figures from the same run. Reproduce:\n\n```text\n\
             bash scripts/install-bench-peers.sh\n\
             cargo build --release -p tessera-cli -p tessera-bench\n\
             ./target/release/tessera-bench compare --clients {} --seconds {} --warmup-s {} \
             --rounds {}\n```",
            self.clients,
            self.measure.as_secs(),
            self.warmup.as_secs(),
            self.round_count()
        );
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_round_is_the_middle_one_or_the_lower_of_two() {
        let rate = |run: &(f64, &str)| run.0;
        assert_eq!(median_by(vec![(5.0, "a")], rate).1, "a");
        assert_eq!(
            median_by(vec![(9.0, "a"), (3.0, "b"), (5.0, "c")], rate).1,
            "c"
        );
        assert_eq!(
            median_by(vec![(9.0, "a"), (3.0, "b"), (5.0, "c"), (7.0, "d")], rate).1,
            "c"
        );
    }

    fn comparison(rounds: Vec<Vec<RoundFigures>>) -> Comparison {
        Comparison {
            reports: Vec::new(),
            rounds,
            clients: 32,
            warmup: Duration::from_secs(1),
            measure: Duration::from_secs(10),
            versions: Vec::new(),
            extras: None,
        }
    }

    fn figures(per_s: f64, cpu_us: f64) -> RoundFigures {
        RoundFigures {
            per_s,
            cpu_us: Some(cpu_us),
            errors: 0,
        }
    }

    #[test]
    fn rounds_show_every_round_and_the_goals_ratios_round_by_round() {
        // Tessera gains on Redis in the second round only: the section
        // shows both rounds, not the median alone.
        let mut rounds: Vec<Vec<RoundFigures>> = (0..IN_ROUNDS)
            .map(|_| vec![figures(100.0, 10.0), figures(100.0, 10.0)])
            .collect();
        rounds[0] = vec![figures(30_000.0, 27.0), figures(36_000.0, 25.5)];
        rounds[6] = vec![figures(63_000.0, 13.0), figures(66_000.0, 12.5)];
        rounds[7] = vec![figures(33_000.0, 24.0), figures(30_000.0, 24.5)];
        // A failure in a round that is not the median still shows, and counts.
        rounds[1][0].errors = 3;
        rounds.push(vec![figures(1_500.0, 1_100.0)]);
        let mut out = String::new();
        let comparison = comparison(rounds);
        assert_eq!(comparison.errors_total(), 3);
        comparison.rounds_markdown(&mut out);
        assert!(out.contains("## Rounds"), "{out}");
        assert!(
            out.contains("| system | round 1 | round 2 |\n|---|--:|--:|"),
            "{out}"
        );
        assert!(
            out.contains("| tessera | 30000 (27.0) | 36000 (25.5) |"),
            "{out}"
        );
        assert!(
            out.contains("| tessera ÷ redis (appendfsync always) | 0.91x | 1.20x |"),
            "{out}"
        );
        assert!(
            out.contains("| tessera noop endpoint ÷ tessera | 2.10x | 1.83x |"),
            "{out}"
        );
        assert!(
            out.contains("| tessera, background sync | 100 (10.0, 3 errors) | 100 (10.0) |"),
            "{out}"
        );
        // etcd ran once: no row of its own.
        assert!(!out.contains("| etcd (3 nodes) |"), "{out}");
    }

    #[test]
    fn one_round_adds_no_section() {
        let rounds = (0..SYSTEMS.len())
            .map(|_| vec![figures(100.0, 10.0)])
            .collect();
        let mut out = String::new();
        comparison(rounds).rounds_markdown(&mut out);
        assert_eq!(out, "");
    }
}
