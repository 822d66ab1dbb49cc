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
    /// The run ends once this many seats are held ([`Mode::Hold`]).
    pub active_seats_max: u64,
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
    /// The target's resident memory against the seats held, sampled at
    /// every progress tick (targets that can tell).
    pub memory: Vec<(u64, u64)>,
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
    /// The run ends once this many seats are held.
    active_seats_max: u64,
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
        active_seats_max: config.active_seats_max,
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

    let mut memory = Vec::new();
    let watched = watch(&*target, &shared, config.progress, &mut memory).await;
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
    result.memory = memory;
    Ok(result)
}

/// Redraws the progress line and checks the target until the clients are
/// done (deadline or request count) or the target dies.
async fn watch<T: Target>(
    target: &T,
    shared: &Shared,
    progress: bool,
    memory: &mut Vec<(u64, u64)>,
) -> Result<()> {
    let terminal = std::io::stderr().is_terminal();
    let mut last = (Instant::now(), 0u64);
    let outcome = loop {
        let wake = shared.deadline.min(Instant::now() + PROGRESS_INTERVAL);
        tokio::time::sleep_until(wake.into()).await;
        let now = Instant::now();
        if let Some(bytes) = target.resident_bytes() {
            memory.push((shared.active_seats.load(Ordering::Relaxed), bytes));
        }
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
        let counted_out = shared.measured_started.load(Ordering::Relaxed) >= shared.checkouts_max
            || shared.active_seats.load(Ordering::Relaxed) >= shared.active_seats_max;
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
        if shared.stop.load(Ordering::Relaxed)
            || now >= shared.deadline
            || shared.active_seats.load(Ordering::Relaxed) >= shared.active_seats_max
        {
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

/// What an open-loop or heartbeat run measured.
#[derive(Debug, Default)]
pub struct FixedResult {
    /// Latencies of the measured operations, in microseconds; in an open
    /// loop, from the moment each request was due to be sent.
    pub latencies_us: Vec<u32>,
    pub measured: Duration,
    pub errors: BTreeMap<String, u64>,
    pub first_error: Option<String>,
}

impl FixedResult {
    fn merge(&mut self, other: ClientResult) {
        for (kind, count) in other.errors {
            *self.errors.entry(kind).or_default() += count;
        }
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

/// Open loop: checkouts (each followed by its check-in, not measured) due at
/// a fixed `rate` per second, whoever is free sends the next one. A
/// checkout's latency counts from when it was due, so a stall is paid by
/// every request that waited behind it (no coordinated omission). `clients`
/// bounds the requests in flight.
///
/// The due times are kept by a pacer thread of its own, which sleeps to
/// each with the operating system's fine timer and hands it to the next
/// free client: the runtime's timer wakes in whole milliseconds, which
/// would add up to a millisecond of the load generator's own lateness to
/// every latency.
pub async fn open_loop<T: Target>(
    target: Arc<T>,
    clients: usize,
    rate: f64,
    warmup: Duration,
    measure: Duration,
) -> Result<FixedResult> {
    if clients == 0 || clients > CLIENTS_MAX || rate.is_nan() || rate <= 0.0 {
        bail!("open loop: {clients} clients at {rate}/s is not a load");
    }
    let start = Instant::now() + Duration::from_millis(50);
    let measure_from = start + warmup;
    let deadline = measure_from + measure;
    let (due_times, receiver) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let stop = Arc::new(AtomicBool::new(false));
    let pacer = {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("open-loop-pacer".into())
            .spawn(move || {
                for n in 0u64.. {
                    let due = start + Duration::from_secs_f64(n as f64 / rate);
                    if due >= deadline || stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let now = Instant::now();
                    if due > now {
                        std::thread::sleep(due - now);
                    }
                    if due_times.send(due).is_err() {
                        break;
                    }
                }
            })
            .context("cannot start the open-loop pacer")?
    };
    let receiver = Arc::new(tokio::sync::Mutex::new(receiver));
    let mut tasks = Vec::new();
    for index in 0..clients {
        let mut session = target.session(index)?;
        let receiver = receiver.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut result = ClientResult::default();
            loop {
                // The next due checkout, to whichever client is free first.
                let Some(due) = receiver.lock().await.recv().await else {
                    break;
                };
                let answer = session.checkout(index as u64).await;
                let latency = micros(due.elapsed());
                let measured = due >= measure_from;
                match answer {
                    Ok(Checkout::Granted(hold)) => {
                        if measured {
                            latencies.push(latency);
                        }
                        if let Err(err) = session.checkin(hold).await {
                            result.error("checkin", &err.kind, err.message);
                        }
                    }
                    Ok(Checkout::Denied) => result.error("checkout", "denied", "no seat".into()),
                    Err(err) => result.error("checkout", &err.kind, err.message),
                }
            }
            (latencies, result)
        }));
    }
    let mut out = FixedResult {
        measured: measure,
        ..FixedResult::default()
    };
    for task in tasks {
        let joined = tokio::time::timeout(measure + warmup + DRAIN_TIMEOUT, task).await;
        if !matches!(joined, Ok(Ok(_))) {
            // The run ends here: the pacer need not keep sending.
            stop.store(true, Ordering::Relaxed);
        }
        let (latencies, result) = joined
            .context("an open-loop client did not finish")?
            .context("an open-loop client failed")?;
        out.latencies_us.extend(latencies);
        out.merge(result);
    }
    let _ = pacer.join();
    Ok(out)
}

/// Heartbeats: the clients first check out `held` seats between them (not
/// measured), then each renews its own seats in turn, in a closed loop.
pub async fn heartbeats<T: Target>(
    target: Arc<T>,
    clients: usize,
    held: u64,
    warmup: Duration,
    measure: Duration,
) -> Result<FixedResult> {
    if clients == 0 || clients > CLIENTS_MAX || held < clients as u64 {
        bail!("heartbeats: {held} seats over {clients} clients is not a load");
    }
    let mut tasks = Vec::new();
    let next_holder = Arc::new(AtomicU64::new(0));
    let ready = Arc::new(tokio::sync::Barrier::new(clients));
    let timing: Arc<std::sync::Mutex<Option<(Instant, Instant)>>> = Default::default();
    for index in 0..clients {
        let mut session = target.session(index)?;
        let (next_holder, ready, timing) = (next_holder.clone(), ready.clone(), timing.clone());
        let share = held / clients as u64 + u64::from((index as u64) < held % clients as u64);
        tasks.push(tokio::spawn(async move {
            let mut result = ClientResult::default();
            let mut holds = Vec::new();
            let fill_until = Instant::now() + DRAIN_TIMEOUT * 20;
            while (holds.len() as u64) < share && Instant::now() < fill_until {
                let holder = next_holder.fetch_add(1, Ordering::Relaxed);
                match session.checkout(holder).await {
                    Ok(Checkout::Granted(hold)) => holds.push(hold),
                    Ok(Checkout::Denied) => {
                        result.error("checkout", "denied", "no seat".into());
                        break;
                    }
                    Err(err) => {
                        result.error("checkout", &err.kind, err.message);
                        tokio::time::sleep(ERROR_PAUSE).await;
                    }
                }
            }
            ready.wait().await;
            let (measure_from, deadline) = {
                let mut timing = timing.lock().expect("timing");
                *timing.get_or_insert_with(|| {
                    let now = Instant::now();
                    (now + warmup, now + warmup + measure)
                })
            };
            let mut latencies = Vec::new();
            let mut turn = 0;
            while !holds.is_empty() && Instant::now() < deadline {
                let sent = Instant::now();
                let answer = session.heartbeat(&holds[turn % holds.len()]).await;
                turn += 1;
                match answer {
                    Ok(()) if sent >= measure_from => latencies.push(micros(sent.elapsed())),
                    Ok(()) => {}
                    Err(err) => {
                        result.error("heartbeat", &err.kind, err.message);
                        tokio::time::sleep(ERROR_PAUSE).await;
                    }
                }
            }
            (latencies, result)
        }));
    }
    let mut out = FixedResult {
        measured: measure,
        ..FixedResult::default()
    };
    for task in tasks {
        let (latencies, result) = task.await.context("a heartbeat client failed")?;
        out.latencies_us.extend(latencies);
        out.merge(result);
    }
    Ok(out)
}
