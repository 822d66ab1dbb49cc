//! The fault schedule, drawn from the seed: after a pause, a fault on a server
//! (kill -9 then restart, SIGSTOP then SIGCONT, a cut from its peers then the
//! heal, or an issuer that takes each control state late, then on time); an
//! episode ends when that server serves again. At most
//! `faulted_max` episodes run at once.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tessera_testkit::{Pool, IDS};
use tokio::sync::RwLock;
use tokio::task::JoinSet;
use tokio::time::{sleep, Instant};

/// Pause before each fault.
const PAUSE_MS: Range<u64> = 1_000..3_000;
/// Longest wait for a healed server to serve again, its restart included.
pub const REJOIN_WAIT: Duration = Duration::from_secs(10);
/// How often a healed server's status is read.
const REJOIN_POLL: Duration = Duration::from_millis(50);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// `kill -9`, then a restart on the same store.
    Kill,
    /// SIGSTOP, then SIGCONT: a server that hangs and comes back with stale timers.
    Stop,
    /// The test fault switch: no peer message in or out; clients still reach it.
    Partition,
    /// The test fault switch: the server's issuer takes each new control
    /// state `lag_ms` late, as a server too busy to follow the pool's log
    /// would; it answers borrow requests from the state its issuer enforces.
    SlowFollow { lag_ms: u64 },
}

impl Fault {
    pub fn name(self) -> &'static str {
        match self {
            Fault::Kill => "kill -9",
            Fault::Stop => "SIGSTOP",
            Fault::Partition => "partition",
            Fault::SlowFollow { .. } => "slow follow",
        }
    }

    /// How long the server stays down, stopped or cut off.
    fn length_ms(self) -> Range<u64> {
        match self {
            Fault::Kill => 500..3_000,
            Fault::Stop => 500..4_000,
            Fault::Partition | Fault::SlowFollow { .. } => 1_000..4_000,
        }
    }
}

pub struct Plan {
    pub seed: u64,
    /// No fault starts after this long.
    pub run_for: Duration,
    pub faulted_max: usize,
}

pub struct Episode {
    pub server: usize,
    pub fault: Fault,
    pub length: Duration,
    pub started: Instant,
    pub healed: Instant,
    /// When the server served again, if it did within [`REJOIN_WAIT`].
    pub serving_again: Option<Instant>,
}

/// Seconds since `epoch`, for the printed schedule.
pub fn stamp(epoch: Instant, at: Instant) -> String {
    format!(
        "{:7.2} s",
        at.saturating_duration_since(epoch).as_secs_f64()
    )
}

/// Runs the schedule; returns once every episode has healed.
pub async fn run(pool: Arc<RwLock<Pool>>, plan: &Plan, epoch: Instant) -> Vec<Episode> {
    let mut rng = StdRng::seed_from_u64(plan.seed);
    let servers = pool.read().await.servers.len();
    let deadline = Instant::now() + plan.run_for;
    let mut running: JoinSet<Episode> = JoinSet::new();
    let mut faulted = vec![false; servers];
    let mut done = Vec::new();
    let mut finished = |episode: Episode, faulted: &mut Vec<bool>| {
        faulted[episode.server] = false;
        done.push(episode);
    };
    loop {
        while running.len() >= plan.faulted_max {
            finished(join(running.join_next().await), &mut faulted);
        }
        sleep(Duration::from_millis(rng.gen_range(PAUSE_MS))).await;
        if Instant::now() >= deadline {
            break;
        }
        while let Some(result) = running.try_join_next() {
            finished(join(Some(result)), &mut faulted);
        }
        let fault = match rng.gen_range(0..4) {
            0 => Fault::Kill,
            1 => Fault::Stop,
            2 => Fault::Partition,
            _ => Fault::SlowFollow {
                lag_ms: rng.gen_range(100..1_500),
            },
        };
        let length = Duration::from_millis(rng.gen_range(fault.length_ms()));
        let lag = match fault {
            Fault::SlowFollow { lag_ms } => format!(" ({lag_ms} ms late)"),
            _ => String::new(),
        };
        let healthy: Vec<usize> = (0..servers).filter(|&i| !faulted[i]).collect();
        let server = healthy[rng.gen_range(0..healthy.len())];
        faulted[server] = true;
        println!(
            "[{}] {} {}{lag} for {} ms",
            stamp(epoch, Instant::now()),
            fault.name(),
            IDS[server],
            length.as_millis()
        );
        running.spawn(episode(pool.clone(), server, fault, length, epoch));
    }
    while let Some(result) = running.join_next().await {
        finished(join(Some(result)), &mut faulted);
    }
    done.sort_by_key(|episode| episode.started);
    done
}

fn join(result: Option<Result<Episode, tokio::task::JoinError>>) -> Episode {
    match result.expect("an episode is running") {
        Ok(episode) => episode,
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        Err(error) => panic!("a fault episode was cancelled: {error}"),
    }
}

async fn episode(
    pool: Arc<RwLock<Pool>>,
    server: usize,
    fault: Fault,
    length: Duration,
    epoch: Instant,
) -> Episode {
    let started = Instant::now();
    match fault {
        Fault::Kill => {
            pool.write().await.kill(server);
            sleep(length).await;
            pool.write().await.spawn(server);
        }
        Fault::Stop => {
            assert!(pool.read().await.signal(server, libc::SIGSTOP), "SIGSTOP");
            sleep(length).await;
            assert!(pool.read().await.signal(server, libc::SIGCONT), "SIGCONT");
        }
        Fault::Partition => {
            pool.read().await.partition(server, true).await;
            sleep(length).await;
            pool.read().await.partition(server, false).await;
        }
        Fault::SlowFollow { lag_ms } => {
            pool.read().await.control_lag(server, lag_ms).await;
            sleep(length).await;
            pool.read().await.control_lag(server, 0).await;
        }
    }
    let healed = Instant::now();
    let serving_again = wait_serving(&pool, server).await;
    let outcome = match serving_again {
        Some(at) => format!("serving again {} ms later", (at - healed).as_millis()),
        None => format!("NOT serving {} s later", REJOIN_WAIT.as_secs()),
    };
    println!(
        "[{}] {} {} healed; {outcome}",
        stamp(epoch, healed),
        fault.name(),
        IDS[server]
    );
    Episode {
        server,
        fault,
        length,
        started,
        healed,
        serving_again,
    }
}

async fn wait_serving(pool: &RwLock<Pool>, server: usize) -> Option<Instant> {
    let deadline = Instant::now() + REJOIN_WAIT;
    while Instant::now() < deadline {
        let status = pool.read().await.status(server).await;
        if status.is_some_and(|s| s.server.state == "serving") {
            return Some(Instant::now());
        }
        sleep(REJOIN_POLL).await;
    }
    None
}
