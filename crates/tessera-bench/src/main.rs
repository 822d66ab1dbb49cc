//! `tessera-bench`: checkout throughput and latency of real Tessera servers.
//!
//! ```text
//! cargo build --release -p tessera-cli -p tessera-bench
//! ./target/release/tessera-bench single --clients 32 --seconds 10
//! bash scripts/install-bench-peers.sh   # redis-server, etcd
//! ./target/release/tessera-bench compare --clients 32 --seconds 10
//! ```

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use tessera_bench::compare::CompareConfig;
use tessera_bench::{LoadConfig, Mode, SingleConfig, Transport};

/// Longest measured part of a run.
const SECONDS_MAX: u64 = 3_600;

#[derive(Parser)]
#[command(
    name = "tessera-bench",
    about = "Benchmarks of Tessera: checkout throughput and latency on loopback"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// One Tessera server (a pool of one, durable store) under closed-loop load.
    Single(SingleArgs),
    /// Tessera against its peers in one run: Tessera, Tessera's no-op
    /// endpoint, Redis (Lua semaphore, appendfsync always and everysec) and a
    /// 3-node etcd semaphore; writes BENCHMARKS.md. Needs `redis-server` and
    /// `etcd`: bash scripts/install-bench-peers.sh
    Compare(CompareArgs),
}

/// The closed-loop load, for each system measured.
#[derive(clap::Args)]
struct LoadArgs {
    /// Concurrent clients, each with its own keep-alive connection.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=tessera_bench::load::CLIENTS_MAX as u64))]
    clients: u64,
    /// Length of the measured part, after the warm-up.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=SECONDS_MAX))]
    seconds: u64,
    /// Warm-up before measuring: requests are sent but not counted.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(0..=60))]
    warmup_s: u64,
}

impl LoadArgs {
    fn config(&self, mode: Mode, checkouts_max: u64, progress: bool) -> LoadConfig {
        LoadConfig {
            clients: self.clients as usize,
            mode,
            warmup: Duration::from_secs(self.warmup_s),
            measure: Duration::from_secs(self.seconds),
            checkouts_max,
            active_seats_max: u64::MAX,
            progress,
        }
    }
}

#[derive(clap::Args)]
struct CompareArgs {
    #[command(flatten)]
    load: LoadArgs,
    /// Stop each system after this many measured checkouts, even before --seconds.
    #[arg(long, default_value_t = 10_000_000)]
    max_requests: u64,
    /// Tiny run to check that everything works: 2 clients, 1 s each, no warm-up.
    #[arg(long, conflicts_with_all = ["clients", "seconds", "warmup_s"])]
    smoke: bool,
    /// Where to write the Markdown (default: BENCHMARKS.md in the current
    /// directory); the plots go to `bench-results/` beside it.
    #[arg(long, default_value = "BENCHMARKS.md")]
    out: PathBuf,
    /// Only the main table: no client sweep, heartbeats, scaling to a
    /// million seats, open loop or fail-over.
    #[arg(long)]
    main_only: bool,
    /// Fail-over runs of the extra parts.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=100))]
    failover_runs: u64,
    /// Seats held at the end of the scaling run.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(100..=2_000_000))]
    scaling_seats: u64,
    /// Times each system of the main table runs (etcd once), in turns, so
    /// that a change in the machine's load weighs on every system alike;
    /// each system's median round is reported. The open-loop part runs as
    /// many rounds and reports each mode's median p99.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=9), conflicts_with = "smoke")]
    rounds: u64,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(clap::Args)]
struct SingleArgs {
    #[command(flatten)]
    load: LoadArgs,
    /// Stop after this many measured checkouts, even before --seconds.
    #[arg(long, default_value_t = 1_000_000)]
    max_requests: u64,
    /// Hard limit of the benchmark feature; the default never denies.
    #[arg(long = "seats", default_value_t = 1_000_000)]
    hard_limit: u32,
    /// `cycle`: check out then check in; `hold`: check out and keep the
    /// seat, to show the cost of a checkout as active seats grow.
    #[arg(long, value_enum, default_value_t = Mode::Cycle)]
    mode: Mode,
    /// Tiny run to check that everything works: 2 clients, 1 s, no warm-up.
    #[arg(long, conflicts_with_all = ["clients", "seconds", "warmup_s"])]
    smoke: bool,
    /// Print the results as JSON instead of a Markdown table.
    #[arg(long)]
    json: bool,
    /// Open loop instead: checkouts (each with its check-in) due at this
    /// many a second, sent by whichever of 64 clients is free, latency
    /// counted from when each was due (the open-loop part of `compare`).
    #[arg(long, value_name = "RATE", conflicts_with_all = ["smoke", "json"])]
    open_loop: Option<u32>,
    /// Plain HTTP instead of TLS, to see what TLS costs.
    #[arg(long, conflicts_with = "rest")]
    plain_http: bool,
    /// HTTP/1.1 and JSON (REST) on TLS instead of the framed protocol the
    /// SDK speaks, to see what the framing saves.
    #[arg(long)]
    rest: bool,
    /// Checkouts carry a nonce, so the server signs every answer (what a
    /// program with its vendor's keys asks for), to see what signing costs.
    #[arg(long)]
    signed: bool,
    /// The server answers grants before syncing them (`[store] sync =
    /// "background"`), to see what waiting for the disk costs.
    #[arg(long)]
    background_sync: bool,
    /// The clients are the SDK itself (`tessera_client::Client` with the
    /// vendor's key, as a vendor's program embeds it), so the load
    /// generator's CPU per checkout is the SDK's, every check included.
    #[arg(long, conflicts_with_all = ["open_loop", "plain_http", "rest", "signed"])]
    sdk: bool,
    #[command(flatten)]
    run: RunArgs,
}

/// How the benchmark itself runs.
#[derive(clap::Args)]
struct RunArgs {
    /// Do not redraw a progress line on stderr.
    #[arg(long)]
    no_progress: bool,
    /// Threads of the load generator's runtime. The servers and the load
    /// generator share the machine's cores; fewer threads here leave more to
    /// the servers.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
    client_threads: u64,
    /// The tessera binary (default: the one next to this executable).
    #[arg(long)]
    tessera: Option<PathBuf>,
}

fn main() {
    let cli = Cli::parse();
    match run(cli) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::exit(1);
        }
    }
}

/// Returns false when the run saw failed requests.
fn run(cli: Cli) -> Result<bool> {
    match cli.command {
        Command::Single(args) => single(args),
        Command::Compare(args) => compare(args),
    }
}

/// The tessera binary given, made absolute (pools of servers run it from
/// their own directories), or the one next to this executable.
fn tessera_binary(given: Option<PathBuf>) -> Result<PathBuf> {
    match given {
        Some(path) => std::fs::canonicalize(&path)
            .with_context(|| format!("no tessera binary at {}", path.display())),
        None => tessera_bench::tessera::binary_next_to_this_exe(),
    }
}

/// The load generator's runtime.
fn runtime(threads: u64) -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads as usize)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn compare(args: CompareArgs) -> Result<bool> {
    // `--out`'s directory ("" for a bare file name: the current one),
    // refused before minutes of measuring, not after.
    let out_dir = args.out.parent().unwrap_or(std::path::Path::new("."));
    if !out_dir.as_os_str().is_empty() && !out_dir.is_dir() {
        bail!(
            "--out {}: no directory {}; create it or write elsewhere",
            args.out.display(),
            out_dir.display()
        );
    }
    let tessera = tessera_binary(args.run.tessera)?;
    let mut config = if args.smoke {
        CompareConfig::smoke(tessera)
    } else {
        CompareConfig {
            tessera,
            seats: 1_000_000,
            load: args.load.config(Mode::Cycle, args.max_requests, true),
            extras: Some(tessera_bench::extras::ExtrasConfig {
                failover_runs: args.failover_runs as usize,
                scaling_seats: args.scaling_seats,
                open_loop_rounds: args.rounds as usize,
                ..tessera_bench::extras::ExtrasConfig::full()
            }),
            rounds: args.rounds as usize,
        }
    };
    if args.main_only {
        config.extras = None;
    }
    config.load.progress = !args.run.no_progress;
    let runtime = runtime(args.run.client_threads)?;
    let comparison = runtime.block_on(async {
        tokio::select! {
            comparison = tessera_bench::compare::compare(&config) => comparison,
            // Dropping the run kills every process it started.
            _ = tokio::signal::ctrl_c() => bail!("interrupted"),
        }
    })?;
    let date = time::OffsetDateTime::now_utc()
        .format(time::macros::format_description!(
            "[year]-[month]-[day] [hour]:[minute]:[second] UTC"
        ))
        .context("cannot format the date")?;
    // The file about to be replaced: Tessera's figures are set against it.
    let previous = std::fs::read_to_string(&args.out)
        .ok()
        .and_then(|text| tessera_bench::previous::parse(&text));
    let mut markdown = comparison.markdown(&date, previous.as_ref())?;
    // The latest profile (scripts/profile-server.sh), kept with the figures;
    // the plots are written beside it.
    let results = out_dir.join("bench-results");
    if let Ok(profile) = std::fs::read_to_string(results.join("profile.md")) {
        markdown.push('\n');
        markdown.push_str(&profile);
    }
    // Printed first: a file that cannot be written loses no figures.
    print!("{markdown}");
    std::fs::write(&args.out, &markdown)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    eprintln!("written to {}", args.out.display());
    if let Some(extras) = &comparison.extras {
        for path in extras.write_plots(&results, &comparison.reports)? {
            eprintln!("plot: {}", path.display());
        }
    }
    let errors = comparison.errors_total();
    if errors > 0 {
        eprintln!("{errors} requests failed");
    }
    Ok(errors == 0)
}

fn single(args: SingleArgs) -> Result<bool> {
    let tessera = tessera_binary(args.run.tessera)?;
    let lease_s = u64::from(tessera_bench::tessera::HOLD_LEASE_S);
    if args.mode == Mode::Hold && args.load.warmup_s + args.load.seconds >= lease_s {
        bail!(
            "--mode hold runs must be shorter than the {lease_s} s lease of the benchmark code, \
             or held seats lapse during the run"
        );
    }
    let transport = match (args.plain_http, args.rest) {
        (true, _) => Transport::Plain,
        (false, true) => Transport::Rest,
        (false, false) => Transport::Framed,
    };
    let config = if args.smoke {
        let mut config = SingleConfig::smoke(tessera);
        config.transport = transport;
        config.signed = args.signed;
        config.background_sync = args.background_sync;
        config.sdk = args.sdk;
        config.seats = args.hard_limit;
        config.load.mode = args.mode;
        config.load.progress = !args.run.no_progress;
        config
    } else {
        SingleConfig {
            tessera,
            seats: args.hard_limit,
            load: args
                .load
                .config(args.mode, args.max_requests, !args.run.no_progress),
            transport,
            signed: args.signed,
            background_sync: args.background_sync,
            sdk: args.sdk,
        }
    };
    let runtime = runtime(args.run.client_threads)?;
    if let Some(rate) = args.open_loop {
        let run = runtime.block_on(async {
            tokio::select! {
                run = tessera_bench::single_open_loop(&config, f64::from(rate.max(1))) => run,
                _ = tokio::signal::ctrl_c() => bail!("interrupted"),
            }
        })?;
        println!(
            "| open loop | due/s | checkouts | p50 ms | p99 ms | p99.9 ms | max ms | errors |"
        );
        println!("|---|--:|--:|--:|--:|--:|--:|--:|");
        println!(
            "| {} | {rate} | {} | {} | {} |",
            run.system,
            run.stats.count,
            run.stats.latency_ms_cells(),
            run.errors
        );
        if run.errors > 0 {
            eprintln!(
                "{} requests failed; first: {}",
                run.errors,
                run.first_error.as_deref().unwrap_or("?")
            );
        }
        return Ok(run.errors == 0);
    }
    let report = runtime.block_on(async {
        tokio::select! {
            report = tessera_bench::single(&config) => report,
            // Dropping the run kills the server.
            _ = tokio::signal::ctrl_c() => bail!("interrupted"),
        }
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report.to_json())?);
    } else {
        print!("{}", report.markdown());
    }
    let errors = report.errors_total();
    if errors > 0 {
        eprintln!(
            "{errors} requests failed; first: {}",
            report.first_error.as_deref().unwrap_or("?")
        );
    }
    Ok(errors == 0)
}
