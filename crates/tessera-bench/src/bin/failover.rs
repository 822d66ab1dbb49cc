//! `failover`: kills the leader of a 3-server pool on loopback, again and
//! again, with clients holding seats, and prints the distribution of the
//! leader takeover time and of the clients' re-grant time.
//!
//! ```sh
//! cargo build --release -p tessera-cli -p tessera-bench
//! ./target/release/failover --runs 20 --clients 30
//! ```

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use tessera_client::{Client, ClientConfig, SeatState};
use tessera_testkit::{Pool, PoolSpec};

#[derive(Parser)]
#[command(about = "Leader takeover and client re-grant times after kill -9")]
struct Args {
    /// Kills to measure (each on a fresh pool).
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// Clients holding one seat each, spread over the three servers.
    #[arg(long, default_value_t = 30)]
    clients: usize,
    /// Client heartbeat interval, in seconds (the lease is four of them).
    #[arg(long, default_value_t = 1)]
    heartbeat_s: u32,
    /// The `tessera` binary (default: next to this one).
    #[arg(long)]
    tessera: Option<PathBuf>,
}

fn tessera_binary(given: Option<PathBuf>) -> Result<PathBuf> {
    let path = match given {
        Some(path) => path,
        None => std::env::current_exe()?
            .parent()
            .context("no directory")?
            .join("tessera"),
    };
    if !path.exists() {
        bail!(
            "{} not found; build it first: cargo build --release -p tessera-cli",
            path.display()
        );
    }
    Ok(path)
}

/// Bound on every wait of one run.
const RUN_PATIENCE: Duration = Duration::from_secs(30);

struct RunResult {
    takeover: Duration,
    regrants: Vec<Duration>,
}

async fn one_run(tessera: &std::path::Path, args: &Args) -> Result<RunResult> {
    let mut pool = Pool::new(
        tessera,
        PoolSpec {
            servers: 3,
            seats: (args.clients as u32) * 3,
            lease_s: args.heartbeat_s * 4,
            heartbeat_s: args.heartbeat_s,
            ..PoolSpec::default()
        },
    );
    pool.spawn_all();
    for i in 0..3 {
        pool.wait_serving(i).await;
    }
    let leader = pool.wait_leader(&[0, 1, 2]).await;
    let mut seats = Vec::new();
    for n in 0..args.clients {
        let mut order = pool.addresses();
        order.rotate_left(n % 3);
        let mut config = ClientConfig::new(order);
        config.client_id = format!("failover-{n}");
        let seat = Client::new(config)?.checkout("app", "1.0", 1).await?;
        seats.push(seat);
    }
    let killed = pool.servers[leader].id.clone();
    let mut pending: Vec<usize> = (0..seats.len())
        .filter(|&n| seats[n].server_id() == killed)
        .collect();

    let killed_at = Instant::now();
    pool.kill(leader);
    let survivors: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let mut takeover = None;
    let mut regrants = Vec::new();
    while takeover.is_none() || !pending.is_empty() {
        if killed_at.elapsed() > RUN_PATIENCE {
            bail!(
                "run did not settle: takeover {takeover:?}, {} clients not moved",
                pending.len()
            );
        }
        pending.retain(|&n| {
            if seats[n].server_id() != killed {
                regrants.push(killed_at.elapsed());
                false
            } else {
                true
            }
        });
        if takeover.is_none() {
            for &i in &survivors {
                if let Some(status) = pool.status(i).await {
                    if status.server.role == "leader" && status.server.state == "serving" {
                        takeover = Some(killed_at.elapsed());
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for seat in &seats {
        if let SeatState::Lost { reason } = seat.state() {
            bail!("a client lost its seat: {reason}");
        }
    }
    Ok(RunResult {
        takeover: takeover.expect("loop ends with a takeover"),
        regrants,
    })
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index]
}

fn main() -> Result<()> {
    let args = Args::parse();
    let tessera = tessera_binary(args.tessera.clone())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut takeovers = Vec::new();
    let mut regrants = Vec::new();
    for run in 1..=args.runs {
        let result = runtime.block_on(one_run(&tessera, &args))?;
        eprint!(
            "\rrun {run}/{}: takeover {} ms, {} clients re-granted   ",
            args.runs,
            result.takeover.as_millis(),
            result.regrants.len()
        );
        takeovers.push(result.takeover);
        regrants.extend(result.regrants);
    }
    eprintln!();
    takeovers.sort();
    regrants.sort();
    let ms = |d: Duration| format!("{:.0}", d.as_secs_f64() * 1000.0);
    println!("| measure | runs / samples | median ms | p90 ms | max ms |");
    println!("| --- | --- | --- | --- | --- |");
    println!(
        "| leader takeover after kill -9 | {} | {} | {} | {} |",
        takeovers.len(),
        ms(percentile(&takeovers, 0.5)),
        ms(percentile(&takeovers, 0.9)),
        ms(*takeovers.last().expect("runs"))
    );
    println!(
        "| client re-grant after kill -9 (heartbeat {} s) | {} | {} | {} | {} |",
        args.heartbeat_s,
        regrants.len(),
        ms(percentile(&regrants, 0.5)),
        ms(percentile(&regrants, 0.9)),
        ms(*regrants.last().expect("samples"))
    );
    Ok(())
}
