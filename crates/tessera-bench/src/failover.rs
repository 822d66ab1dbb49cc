//! Fail-over: kills the leader of a 3-server pool on loopback, again and
//! again, with clients holding seats, and measures the leader takeover time
//! and the clients' re-grant time.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use tessera_client::{Client, ClientConfig, SeatState};
use tessera_testkit::{Pool, PoolSpec};

#[derive(Clone, Debug)]
pub struct FailoverConfig {
    /// Kills to measure (each on a fresh pool).
    pub runs: usize,
    /// Clients holding one seat each, spread over the three servers.
    pub clients: usize,
    /// Client heartbeat interval, in seconds (the lease is four of them).
    pub heartbeat_s: u32,
    /// A line on stderr per run.
    pub progress: bool,
}

/// Every run's takeover time and every moved client's re-grant time, sorted.
#[derive(Clone, Debug, Default)]
pub struct FailoverResult {
    pub heartbeat_s: u32,
    pub takeovers: Vec<Duration>,
    pub regrants: Vec<Duration>,
}

/// Runs `config.runs` kills, each on a fresh pool.
pub async fn run(tessera: &Path, config: &FailoverConfig) -> Result<FailoverResult> {
    let mut result = FailoverResult {
        heartbeat_s: config.heartbeat_s,
        ..FailoverResult::default()
    };
    for run in 1..=config.runs {
        let one = one_run(tessera, config).await?;
        if config.progress {
            eprintln!(
                "  fail-over run {run}/{}: takeover {} ms, {} clients re-granted",
                config.runs,
                one.takeover.as_millis(),
                one.regrants.len()
            );
        }
        result.takeovers.push(one.takeover);
        result.regrants.extend(one.regrants);
    }
    result.takeovers.sort();
    result.regrants.sort();
    Ok(result)
}

impl FailoverResult {
    /// Median, p90 and max of both distributions as a Markdown table.
    pub fn markdown(&self) -> String {
        let ms = |d: Duration| format!("{:.0}", d.as_secs_f64() * 1000.0);
        let row = |name: String, samples: &[Duration]| {
            format!(
                "| {name} | {} | {} | {} | {} |\n",
                samples.len(),
                ms(percentile(samples, 0.5)),
                ms(percentile(samples, 0.9)),
                ms(samples.last().copied().unwrap_or_default())
            )
        };
        let mut out = String::from(
            "| measure | runs / samples | median ms | p90 ms | max ms |\n| --- | --: | --: | --: | --: |\n",
        );
        out.push_str(&row(
            "leader takeover after kill -9".into(),
            &self.takeovers,
        ));
        out.push_str(&row(
            format!(
                "client re-grant after kill -9 (heartbeat {} s)",
                self.heartbeat_s
            ),
            &self.regrants,
        ));
        out
    }
}

/// Bound on every wait of one run.
const RUN_PATIENCE: Duration = Duration::from_secs(30);

struct RunResult {
    takeover: Duration,
    regrants: Vec<Duration>,
}

async fn one_run(tessera: &std::path::Path, args: &FailoverConfig) -> Result<RunResult> {
    let spec = PoolSpec {
        servers: 3,
        seats: (args.clients as u32) * 3,
        lease_s: args.heartbeat_s * 4,
        heartbeat_s: args.heartbeat_s,
        ..PoolSpec::default()
    };
    let mut pool = Pool::start(tessera, spec).await;
    let leader = pool.wait_leader(&[0, 1, 2]).await;
    let mut seats = Vec::new();
    for n in 0..args.clients {
        let mut order = pool.addresses();
        order.rotate_left(n % 3);
        let mut config = ClientConfig::new(order);
        config.client_id = format!("failover-{n}");
        config.tls = tessera_client::ClientTls::PoolCa(pool.ca_pem());
        config.trust = tessera_client::Trust::AnyServer;
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
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index]
}
