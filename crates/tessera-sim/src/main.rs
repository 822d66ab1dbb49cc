//! `tessera-sim`: run seeds of the deterministic pool simulation.
//!
//! ```sh
//! tessera-sim --seed 42 --verbose          # one run, its story and verdict
//! tessera-sim --seeds 100000 --jobs 2      # a soak: progress, then a summary
//! tessera-sim --seeds 200 --mutation issue-without-quorum   # the checkers must object
//! tessera-sim --seed 1806 --no-rules     # a seed as it ran before reserve and max rules
//! tessera-sim --seeds 20 --withhold-rules   # servers not told the rules: the checker must object
//! tessera-sim --seeds 500 --slow-follow   # issuers that take control states late, over the faults
//! ```

use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use tessera_server::seams::Mutations;
use tessera_sim::{mutation_switches, run, Options, Report};

#[derive(Parser, Debug)]
#[command(
    name = "tessera-sim",
    about = "Deterministic simulation of a Tessera pool under faults"
)]
struct Args {
    /// Run this one seed.
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// Run this many seeds, starting at --from.
    #[arg(long)]
    seeds: Option<u64>,
    #[arg(long, default_value_t = 1)]
    from: u64,
    /// Seeds run at once, one thread each.
    #[arg(long, default_value_t = 1)]
    jobs: usize,
    /// Fewest and most servers of a pool.
    #[arg(long, default_value_t = 3)]
    servers_min: usize,
    #[arg(long, default_value_t = 7)]
    servers_max: usize,
    /// Most seats per server of the hard limit (at least 3 are drawn): 25
    /// makes pools of up to 180 seats and 450 programs.
    #[arg(long, default_value_t = 25)]
    seats_per_server_max: u32,
    /// Longest lease of the codes, in seconds: each seed draws its lease
    /// from 2 to this. Leases above about 3 s let the seats of a dead
    /// server's clients be handed over (default 2: no draw, every seed as
    /// before).
    #[arg(long, default_value_t = 2)]
    lease_s_max: u32,
    /// Programs using the SDK (default: about twice the hard limit).
    #[arg(long)]
    programs: Option<usize>,
    /// Seconds of faults per run.
    #[arg(long, default_value_t = 12)]
    fault_seconds: u64,
    /// Run without faults.
    #[arg(long)]
    no_faults: bool,
    /// One code per server, bound to its host, as in a pool of masters:
    /// each server serves only its own, and the pool may hold one code's
    /// seats.
    #[arg(long)]
    host_codes: bool,
    /// Give no seed `reserve` and `max` rules (by default a third draw
    /// them): seeds found before there were rules replay as they ran then.
    #[arg(long)]
    no_rules: bool,
    /// Leave the seeds' rules out of the servers' pool files: nothing
    /// enforces them, and the rules' checker must object.
    #[arg(long, conflicts_with = "no_rules")]
    withhold_rules: bool,
    /// Every server answers grants before it syncs them (`[store] sync =
    /// "background"`), so a crash loses some and costs a grace period.
    #[arg(long)]
    background_sync: bool,
    /// Over each seed's faults, servers whose issuers take each new control
    /// state late (20 to 1,500 ms), drawn apart from the rest of the seed.
    #[arg(long)]
    slow_follow: bool,
    /// Deliberately break the server: issue-without-quorum, reassign-without-wait,
    /// vote-while-catching-up, answer-from-the-newest-state, hand-over-without-wait,
    /// trust-an-unclean-run or renew-before-the-issuer-follows.
    #[arg(long)]
    mutation: Option<String>,
    /// Start no new seed after this many minutes (a soak with a time budget).
    #[arg(long)]
    minutes: Option<u64>,
    /// Stop at the first failing seed.
    #[arg(long)]
    stop_on_failure: bool,
    /// Print the run's whole story (with --seed).
    #[arg(long)]
    verbose: bool,
    /// Log the servers' own tracing output (TESSERA_LOG filter syntax).
    #[arg(long)]
    log: Option<String>,
}

fn main() {
    match real_main() {
        Ok(code) => std::process::exit(code),
        Err(err) => {
            eprintln!("tessera-sim: {err:#}");
            std::process::exit(2);
        }
    }
}

fn real_main() -> Result<i32> {
    let args = Args::parse();
    if let Some(filter) = &args.log {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
    if args.servers_min < 1 || args.servers_min > args.servers_max || args.servers_max > 7 {
        bail!("servers must satisfy 1 <= --servers-min <= --servers-max <= 7");
    }
    let options = Options {
        servers: args.servers_min..=args.servers_max,
        seats_per_server: 3..=args.seats_per_server_max.max(3),
        lease_s: 2..=args.lease_s_max.clamp(2, 60),
        programs: args.programs,
        fault_span: Duration::from_secs(args.fault_seconds),
        faults: !args.no_faults,
        host_codes: args.host_codes,
        mutations: mutations(args.mutation.as_deref())?,
        rules: !args.no_rules,
        withhold_rules: args.withhold_rules,
        background_sync: args.background_sync,
        slow_follow: args.slow_follow,
        ..Options::default()
    };
    if let Some(seed) = args.seed {
        let report = run(seed, &options);
        if args.verbose {
            for line in &report.story {
                println!("{line}");
            }
        }
        print_one(&report);
        return Ok(if report.passed() { 0 } else { 1 });
    }
    let seeds = args.seeds.context("give --seed N or --seeds N")?;
    soak(&args, &options, seeds)
}

fn mutations(name: Option<&str>) -> Result<Mutations> {
    let mut mutations = Mutations::default();
    let Some(name) = name else {
        return Ok(mutations);
    };
    let mut names = Vec::new();
    let mut found = false;
    for (switch, on) in mutation_switches(&mut mutations) {
        if switch == name {
            *on = true;
            found = true;
        }
        names.push(switch);
    }
    if !found {
        bail!(
            "unknown mutation `{name}`; the mutations are {}",
            names.join(", ")
        );
    }
    Ok(mutations)
}

fn print_one(report: &Report) {
    println!(
        "seed {}: {} servers, hard limit {}, {} programs, {:.1} s simulated; {} faults; \
         {} grants ({} temporary licenses), {} renewals, {} fail-overs, {} hand-overs, \
         {} refusals ({} by a max, {} by reserves), {} admin changes, {} restores checked \
         ({} grants lost unsynced), {} states applied; peak {} of {} seats; {}; digest {}",
        report.seed,
        report.servers,
        report.hard_limit,
        report.programs,
        report.simulated.as_secs_f64(),
        report.schedule.len(),
        report.counts.grants,
        report.counts.temporaries,
        report.counts.renewals,
        report.counts.fail_overs,
        report.counts.hand_overs,
        report.counts.refusals,
        report.counts.refused_by_max,
        report.counts.refused_by_reserve,
        report.counts.admin_changes,
        report.counts.restores_checked,
        report.counts.lost_unsynced,
        report.counts.states_applied,
        report.peak_seats,
        report.hard_limit_final,
        report
            .rules
            .as_ref()
            .map_or("no rules".to_string(), |rules| format!("rules {rules}")),
        report.digest.get(..16).unwrap_or("-"),
    );
    if report.passed() {
        println!("no violations");
    } else {
        print!("{}", report.explain());
    }
}

#[derive(Default)]
struct Totals {
    runs: u64,
    faults: u64,
    grants: u64,
    temporaries: u64,
    fail_overs: u64,
    hand_overs: u64,
    /// Seeds with `reserve` and `max` rules, and their refusals by them.
    with_rules: u64,
    refused_by_max: u64,
    refused_by_reserve: u64,
    failed: Vec<u64>,
    violations: u64,
}

fn soak(args: &Args, options: &Options, seeds: u64) -> Result<i32> {
    let next = Arc::new(AtomicU64::new(args.from));
    let end = args.from + seeds;
    let totals = Arc::new(Mutex::new(Totals::default()));
    let started = Instant::now();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let budget = args.minutes.map(|m| Duration::from_secs(m * 60));
    let workers: Vec<_> = (0..args.jobs.max(1))
        .map(|_| {
            let (next, totals, stop, options) =
                (next.clone(), totals.clone(), stop.clone(), options.clone());
            let stop_on_failure = args.stop_on_failure;
            std::thread::spawn(move || loop {
                if stop.load(Ordering::SeqCst) || budget.is_some_and(|b| started.elapsed() >= b) {
                    return;
                }
                let seed = next.fetch_add(1, Ordering::SeqCst);
                if seed >= end {
                    return;
                }
                let report = run(seed, &options);
                let mut totals = totals.lock().unwrap_or_else(|p| p.into_inner());
                totals.runs += 1;
                totals.faults += report.schedule.len() as u64;
                totals.grants += report.counts.grants;
                totals.temporaries += report.counts.temporaries;
                totals.fail_overs += report.counts.fail_overs;
                totals.hand_overs += report.counts.hand_overs;
                totals.with_rules += u64::from(report.rules.is_some());
                totals.refused_by_max += report.counts.refused_by_max;
                totals.refused_by_reserve += report.counts.refused_by_reserve;
                if !report.passed() {
                    totals.failed.push(seed);
                    totals.violations += report.violations.len() as u64;
                    eprintln!("\n{}", report.explain());
                    if stop_on_failure {
                        stop.store(true, Ordering::SeqCst);
                    }
                }
                progress(&totals, seeds, started);
            })
        })
        .collect();
    for worker in workers {
        let _ = worker.join();
    }
    let totals = totals.lock().unwrap_or_else(|p| p.into_inner());
    eprintln!();
    println!(
        "{} seeds ({}..{}) in {:.0} s: {} faults injected, {} grants issued ({} temporary \
         licenses), {} fail-overs, {} hand-overs; {} seeds with rules, {} refusals by a max, \
         {} by reserves; {} violations in {} seeds{}",
        totals.runs,
        args.from,
        args.from + totals.runs,
        started.elapsed().as_secs_f64(),
        totals.faults,
        totals.grants,
        totals.temporaries,
        totals.fail_overs,
        totals.hand_overs,
        totals.with_rules,
        totals.refused_by_max,
        totals.refused_by_reserve,
        totals.violations,
        totals.failed.len(),
        if totals.failed.is_empty() {
            String::new()
        } else {
            format!(": {:?}", totals.failed)
        }
    );
    Ok(if totals.failed.is_empty() { 0 } else { 1 })
}

fn progress(totals: &Totals, seeds: u64, started: Instant) {
    const WIDTH: u64 = 30;
    let done = totals.runs.min(seeds);
    let filled = (done * WIDTH / seeds.max(1)) as usize;
    let elapsed = started.elapsed().as_secs_f64();
    let left = if done > 0 {
        elapsed / done as f64 * (seeds - done) as f64
    } else {
        0.0
    };
    eprint!(
        "\r[{}{}] {done}/{seeds} seeds, {} faults, {} grants, {} failing, {:.0} s left   ",
        "#".repeat(filled),
        "-".repeat(WIDTH as usize - filled),
        totals.faults,
        totals.grants,
        totals.failed.len(),
        left
    );
    let _ = std::io::stderr().flush();
}
