//! The closed-loop load generator: `clients` tasks, each with its own
//! session, each sending its next request as soon as the last one answered.
//!
//! Closed loop means the offered load adapts to the system: latencies are
//! those of a system kept busy by `clients` callers, not of a fixed arrival
//! rate (so a stall delays requests instead of queueing them; see
//! "coordinated omission"). Requests that start during the warm-up are sent
//! but not measured. Every loop ends by a deadline and by a request count.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::target::{Checkout, Session, Target};

/// How often the progress line is redrawn and the target checked.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(500);
/// Pause of a client after a failed request, so that a broken target is not
/// hammered in a tight loop until the deadline.
const ERROR_PAUSE: Duration = Duration::from_millis(10);
/// Most clients one run simulates.
pub const CLIENTS_MAX: usize = 10_000;
/// Longest wait for the clients to finish after the deadline: one request
/// timeout and some.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(15);

/// What the clients do with a seat.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Check out, check in, repeat: the number of active seats stays at most
    /// the number of clients.
    Cycle,
    /// Check out and keep the seat (it lapses after its lease): active seats
    /// grow, to show the cost of a checkout against the seats already held.
    Hold,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Cycle => "cycle",
            Mode::Hold => "hold",
        }
    }
}

#[derive(Clone, Debug)]
pub struct LoadConfig {
    pub clients: usize,
    pub mode: Mode,
    /// Requests started before this are not measured.
    pub warmup: Duration,
    /// Length of the measured part.
    pub measure: Duration,
    /// Most measured checkouts.
    pub checkouts_max: u64,
    /// Redraw a progress line on stderr.
    pub progress: bool,
}

/// One measured checkout: its latency and the seats active when it was sent.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub latency_us: u32,
    pub active_seats: u64,
}

/// What the clients measured.
#[derive(Debug, Default)]
pub struct LoadResult {
    /// Granted checkouts of the measured part.
    pub checkouts: Vec<Sample>,
    /// Check-in latencies of the measured part, in microseconds.
    pub checkins_us: Vec<u32>,
    /// From the end of the warm-up until the last measured request answered.
    pub measured: Duration,
    /// Measured checkouts answered "no seats available".
    pub denied: u64,
    /// Failed measured requests by kind (`checkout: transport`, ...).
    pub errors: BTreeMap<String, u64>,
    /// The first failure, verbatim, to say what went wrong.
    pub first_error: Option<String>,
    /// Seats granted and not checked in at the end, warm-up included.
    pub active_seats: u64,
    /// Checkouts granted, warm-up included.
    pub granted_total: u64,
}

impl LoadResult {
    pub fn errors_total(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// State shared by the clients and the progress task.
struct Shared {
    start: Instant,
    measure_from: Instant,
    deadline: Instant,
    checkouts_max: u64,
    /// Measured checkouts started: a client takes a number before it sends.
    measured_started: AtomicU64,
    /// Checkouts granted, warm-up included (for the progress line).
    granted: AtomicU64,
    active_seats: AtomicU64,
    /// Next holder number in [`Mode::Hold`].
    next_holder: AtomicU64,
    stop: AtomicBool,
}

/// What one client measured.
#[derive(Default)]
struct ClientResult {
    checkouts: Vec<Sample>,
    checkins_us: Vec<u32>,
    denied: u64,
    errors: BTreeMap<String, u64>,
    first_error: Option<String>,
    /// When its last measured request answered.
    last_answer: Option<Instant>,
}

impl ClientResult {
    fn error(&mut self, operation: &str, kind: &str, message: String) {
        *self
            .errors
            .entry(format!("{operation}: {kind}"))
            .or_default() += 1;
        if self.first_error.is_none() {
            self.first_error = Some(format!("{operation}: {message}"));
        }
    }
}

/// Runs the load against `target` and returns what the clients measured.
pub async fn run<T: Target>(target: Arc<T>, config: &LoadConfig) -> Result<LoadResult> {
    if config.clients == 0 || config.clients > CLIENTS_MAX {
        bail!(
            "clients is {}; it must be 1 to {CLIENTS_MAX}",
            config.clients
        );
    }
    let mut sessions = Vec::with_capacity(config.clients);
    for index in 0..config.clients {
        sessions.push(
            target
                .session(index)
                .with_context(|| format!("cannot open the session of client {index}"))?,
        );
    }
    let start = Instant::now();
    let shared = Arc::new(Shared {
        start,
        measure_from: start + config.warmup,
        deadline: start + config.warmup + config.measure,
        checkouts_max: config.checkouts_max,
        measured_started: AtomicU64::new(0),
        granted: AtomicU64::new(0),
        active_seats: AtomicU64::new(0),
        // Client numbers come first; held seats get numbers above them.
        next_holder: AtomicU64::new(config.clients as u64),
        stop: AtomicBool::new(false),
    });
    let clients: Vec<_> = sessions
        .into_iter()
        .enumerate()
        .map(|(index, session)| {
            tokio::spawn(client_loop(
                session,
                index as u64,
                config.mode,
                shared.clone(),
            ))
        })
        .collect();

    let watched = watch(&*target, &shared, config.progress).await;
    shared.stop.store(true, Ordering::Relaxed);
    if let Err(err) = watched {
        for client in &clients {
            client.abort();
        }
        return Err(err);
    }
    let mut result = LoadResult::default();
    let mut last_answer = shared.measure_from;
    for client in clients {
        let client = tokio::time::timeout(DRAIN_TIMEOUT, client)
            .await
            .context("a client did not finish within the drain timeout")?
            .context("a client task failed")?;
        result.checkouts.extend(client.checkouts);
        result.checkins_us.extend(client.checkins_us);
        result.denied += client.denied;
        for (kind, count) in client.errors {
            *result.errors.entry(kind).or_default() += count;
        }
        if result.first_error.is_none() {
            result.first_error = client.first_error;
        }
        if let Some(at) = client.last_answer {
            last_answer = last_answer.max(at);
        }
    }
    result.measured = last_answer.saturating_duration_since(shared.measure_from);
    result.active_seats = shared.active_seats.load(Ordering::Relaxed);
    result.granted_total = shared.granted.load(Ordering::Relaxed);
    Ok(result)
}

/// Redraws the progress line and checks the target until the clients are
/// done (deadline or request count) or the target dies.
async fn watch<T: Target>(target: &T, shared: &Shared, progress: bool) -> Result<()> {
    let terminal = std::io::stderr().is_terminal();
    let mut last = (Instant::now(), 0u64);
    let outcome = loop {
        let wake = shared.deadline.min(Instant::now() + PROGRESS_INTERVAL);
        tokio::time::sleep_until(wake.into()).await;
        let now = Instant::now();
        if progress {
            let granted = shared.granted.load(Ordering::Relaxed);
            let rate = (granted - last.1) as f64 / now.duration_since(last.0).as_secs_f64();
            last = (now, granted);
            let phase = if now < shared.measure_from {
                "warm-up"
            } else {
                "measuring"
            };
            let line = format!(
                "  {phase:<9} {:>6.1} s  {granted:>9} checkouts  {rate:>9.0}/s   ",
                now.duration_since(shared.start).as_secs_f64()
            );
            let mut stderr = std::io::stderr().lock();
            // A log file gets one line per redraw instead of one long line.
            let _ = if terminal {
                write!(stderr, "\r{line}")
            } else {
                writeln!(stderr, "{line}")
            };
            let _ = stderr.flush();
        }
        if let Err(err) = target.check_alive() {
            break Err(err);
        }
        let counted_out = shared.measured_started.load(Ordering::Relaxed) >= shared.checkouts_max;
        if now >= shared.deadline || counted_out {
            break Ok(());
        }
    };
    if progress && terminal {
        eprintln!();
    }
    outcome
}

async fn client_loop<S: Session>(
    mut session: S,
    index: u64,
    mode: Mode,
    shared: Arc<Shared>,
) -> ClientResult {
    let mut result = ClientResult::default();
    loop {
        let now = Instant::now();
        if shared.stop.load(Ordering::Relaxed) || now >= shared.deadline {
            break;
        }
        let measured = now >= shared.measure_from;
        if measured
            && shared.measured_started.fetch_add(1, Ordering::Relaxed) >= shared.checkouts_max
        {
            break;
        }
        let holder = match mode {
            Mode::Cycle => index,
            Mode::Hold => shared.next_holder.fetch_add(1, Ordering::Relaxed),
        };
        let active_seats = shared.active_seats.load(Ordering::Relaxed);
        let sent = Instant::now();
        let answer = session.checkout(holder).await;
        let checkout_us = micros(sent.elapsed());
        if measured {
            result.last_answer = Some(Instant::now());
        }
        let hold = match answer {
            Ok(Checkout::Granted(hold)) => {
                shared.granted.fetch_add(1, Ordering::Relaxed);
                shared.active_seats.fetch_add(1, Ordering::Relaxed);
                if measured {
                    result.checkouts.push(Sample {
                        latency_us: checkout_us,
                        active_seats,
                    });
                }
                hold
            }
            Ok(Checkout::Denied) => {
                if measured {
                    result.denied += 1;
                }
                continue;
            }
            Err(err) => {
                if measured {
                    result.error("checkout", &err.kind, err.message);
                }
                tokio::time::sleep(ERROR_PAUSE).await;
                continue;
            }
        };
        if mode == Mode::Hold {
            continue;
        }
        let sent = Instant::now();
        let answer = session.checkin(hold).await;
        let checkin_us = micros(sent.elapsed());
        if measured {
            result.last_answer = Some(Instant::now());
        }
        match answer {
            Ok(()) => {
                shared.active_seats.fetch_sub(1, Ordering::Relaxed);
                if measured {
                    result.checkins_us.push(checkin_us);
                }
            }
            Err(err) => {
                if measured {
                    result.error("checkin", &err.kind, err.message);
                }
                tokio::time::sleep(ERROR_PAUSE).await;
            }
        }
    }
    result
}

fn micros(duration: Duration) -> u32 {
    u32::try_from(duration.as_micros()).unwrap_or(u32::MAX)
}
