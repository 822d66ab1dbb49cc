//! Tessera's benchmarks: checkout throughput and latency of real servers on
//! loopback, measured by a closed-loop load generator.
//!
//! - [`target`]: what a benchmarked system offers (checkout, check-in); one
//!   implementation per system, so that `compare` can add Redis and etcd.
//! - [`load`]: the load generator, generic over the target.
//! - [`tessera`]: a real `tessera server`, set up through the real CLI.
//! - [`sdk`]: the SDK itself as the load, as a vendor's program embeds it.
//! - [`peers`]: Redis (Lua semaphore) and etcd (lease and transaction
//!   semaphore) as targets, each started and stopped by the benchmark.
//! - [`compare`]: every system in one run, and BENCHMARKS.md.
//! - [`previous`]: Tessera's figures against the previous BENCHMARKS.md.
//! - [`http1`]: the load generator's HTTP/1.1 client (hyper's connection API).
//! - [`report`]: percentiles, the Markdown table and the JSON.
//! - [`cpu`]: CPU time of the server and of the load generator.
//!
//! The goals these numbers are held against are in DESIGN.md, "Goals to
//! design for".
//!
//! Reading the numbers: the load generator runs on the same cores as the
//! server, so it is kept cheap (one runtime thread by default, no `reqwest` pool)
//! and the report gives the CPU each side spent per checkout. On a shared or
//! virtual machine, checkouts per second vary by a fifth or more from run to
//! run, and fsync latency dominates runs with few clients: compare runs made
//! back to back, and compare CPU per checkout as well as rates.

pub mod compare;
pub mod cpu;
pub mod extras;
pub mod failover;
pub mod http1;
pub mod load;
pub mod peers;
pub mod previous;
pub mod report;
pub mod sdk;
pub mod svg;
pub mod target;
pub mod tessera;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;

pub use crate::load::{LoadConfig, Mode};
pub use crate::report::{Report, Stats};
pub use crate::tessera::Transport;
use crate::tessera::{Setup, TesseraServer, TesseraTarget};

/// `single`: one Tessera server under load.
#[derive(Clone, Debug)]
pub struct SingleConfig {
    /// The `tessera` binary to run.
    pub tessera: PathBuf,
    /// Hard limit of the benchmark feature.
    pub seats: u32,
    pub load: LoadConfig,
    /// TLS (the product's default) or plain HTTP.
    pub transport: Transport,
    /// Every checkout carries a nonce, so the server signs its answer and
    /// sends the codes behind it, as to a program with its vendor's keys.
    pub signed: bool,
    /// The server answers grants before syncing them (`[store] sync =
    /// "background"`).
    pub background_sync: bool,
    /// The load's clients are the SDK itself ([`sdk`]), with the vendor's
    /// key, instead of the load generator's own requests.
    pub sdk: bool,
}

impl SingleConfig {
    /// The smallest run that exercises every part: two clients for one second.
    pub fn smoke(tessera: PathBuf) -> SingleConfig {
        SingleConfig {
            tessera,
            seats: 1_000_000,
            load: LoadConfig {
                clients: 2,
                mode: Mode::Cycle,
                warmup: Duration::ZERO,
                measure: Duration::from_secs(1),
                checkouts_max: 1_000_000,
                active_seats_max: u64::MAX,
                progress: false,
            },
            transport: Transport::Framed,
            signed: false,
            background_sync: false,
            sdk: false,
        }
    }
}

/// Starts a server, runs the load against it, stops it.
pub async fn single(config: &SingleConfig) -> Result<Report> {
    let setup = Setup {
        seats: config.seats,
        mode: config.load.mode,
        transport: config.transport,
        background_sync: config.background_sync,
    };
    let server = TesseraServer::start(&config.tessera, setup).await?;
    if config.sdk {
        let target = Arc::new(sdk::SdkTarget::new(server)?);
        return measure_server(target, config, |target| &target.server).await;
    }
    let target = Arc::new(TesseraTarget {
        server,
        signed: config.signed,
        background_sync: config.background_sync,
    });
    measure_server(target, config, |target| &target.server).await
}

/// Runs `config`'s load against `target`, whose server `server` gives; then
/// stops it.
async fn measure_server<T: target::Target>(
    target: Arc<T>,
    config: &SingleConfig,
    server: fn(&T) -> &TesseraServer,
) -> Result<Report> {
    let resident_bytes_before = server(&target).resident_bytes();
    let mut report =
        peers::measure(target.clone(), &config.load, |t: &T| server(t).cpu_time()).await?;
    let served = server(&target);
    report.resident_bytes_before = resident_bytes_before;
    report.resident_bytes_after = served.resident_bytes();
    report.system_grants_end = Some(served.grants_total().await?);
    report.quota_renewal_gap_max_ms = served.quota_renewal_gap_max_ms().await;
    if Arc::strong_count(&target) != 1 {
        anyhow::bail!("the load generator still holds the target");
    }
    // Dropping the target kills the server and waits for it to be gone.
    drop(target);
    Ok(report)
}

/// One Tessera server under an open-loop load: checkouts (each followed by
/// its check-in) due at `rate` a second, sent by whichever of
/// [`extras::OPEN_LOOP_CLIENTS`] clients is free, latency counted from when
/// each was due. The open-loop part of `compare`, alone; its `peak` is
/// left 0 for the caller to set.
pub async fn single_open_loop(config: &SingleConfig, rate: f64) -> Result<extras::OpenLoop> {
    let setup = Setup {
        seats: config.seats,
        mode: Mode::Cycle,
        transport: config.transport,
        background_sync: config.background_sync,
    };
    let server = TesseraServer::start(&config.tessera, setup).await?;
    let target = Arc::new(TesseraTarget {
        server,
        signed: config.signed,
        background_sync: config.background_sync,
    });
    let system = target.system_name();
    let result = load::open_loop(
        target.clone(),
        extras::OPEN_LOOP_CLIENTS,
        rate,
        config.load.warmup,
        config.load.measure,
    )
    .await?;
    let Ok(target) = Arc::try_unwrap(target) else {
        anyhow::bail!("the load generator still holds the target");
    };
    target.server.stop().await?;
    let stats = Stats::of(result.latencies_us, result.measured);
    Ok(extras::OpenLoop {
        system,
        rate,
        peak: 0.0,
        clients: extras::OPEN_LOOP_CLIENTS,
        errors: result.errors.values().sum(),
        first_error: result.first_error,
        rounds_p99_us: vec![stats.p99_us],
        stats,
    })
}

/// The last `lines` lines of a process's log file, for an error message.
/// Timeout of one benchmark request to any system (connection included);
/// far above any latency worth measuring.
pub(crate) const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
pub(crate) const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// An error with the last `lines` of its log unless `process` still runs.
pub(crate) fn check_running(
    name: &str,
    process: &tessera_testkit::Process,
    lines: usize,
) -> anyhow::Result<()> {
    match process.exited() {
        None => Ok(()),
        Some(status) => anyhow::bail!(
            "{name} exited ({status}); its log:\n{}",
            log_tail(process.log_path(), lines)
        ),
    }
}

pub(crate) fn log_tail(log: &std::path::Path, lines: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
