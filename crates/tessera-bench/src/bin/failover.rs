//! `failover`: kills the leader of a 3-server pool on loopback, again and
//! again, with clients holding seats, and prints the distribution of the
//! leader takeover time and of the clients' re-grant time.
//!
//! ```sh
//! cargo build --release -p tessera-cli -p tessera-bench
//! ./target/release/failover --runs 20 --clients 30
//! ```

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Parser;
use tessera_bench::failover::{self, FailoverConfig};

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

fn main() -> Result<()> {
    let args = Args::parse();
    let tessera = tessera_binary(args.tessera.clone())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let config = FailoverConfig {
        runs: args.runs,
        clients: args.clients,
        heartbeat_s: args.heartbeat_s,
        progress: true,
    };
    let result = runtime.block_on(failover::run(&tessera, &config))?;
    print!("{}", result.markdown());
    Ok(())
}
