//! A bounded fault run of real `tessera server` processes on loopback: a few
//! hundred SDK clients compete for fewer seats than they want while servers
//! are killed with SIGKILL and restarted, stopped with SIGSTOP and continued,
//! cut off from their peers, and made slow to follow the pool's log.
//!
//! The checker trusts no server. It reads only the clients' own log of the
//! seats they believed they held, by their own clock, and fails if more seats
//! than the hard limit were ever believed valid at one instant (DESIGN.md,
//! "The safety property"). Then, once every fault has healed, the pool must
//! hand seats out again up to about the hard limit.
//!
//! The run prints its seed and its fault schedule. Environment:
//! - `TESSERA_CHAOS_SEED=<n>`: replay a schedule;
//! - `TESSERA_CHAOS_SECONDS=<n>`: inject faults for that long (default 25);
//! - `TESSERA_CHAOS_SERVERS=<3..=5>`: servers in the pool (default 3);
//! - `TESSERA_CHAOS_FAULTED_MAX=<n>`: servers faulted at once (default 1, so
//!   that a majority of three stays up);
//! - `TESSERA_CHAOS_CLIENTS=<n>`: programs (default 200; below the hard limit
//!   of 60 there is no contention and fail-overs find free seats);
//! - `TESSERA_CHAOS_LEASE_S=<n>`: the code's lease (default 4; heartbeat 1 s).
//!
//! When the run fails, the servers' logs and the clients' log are kept in
//! `$TMPDIR/tessera-chaos-<seed>/`.

mod checker;
mod clients;
mod faults;
mod log;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use tessera_testkit::{Pool, PoolSpec, IDS};
use tokio::sync::{watch, RwLock};
use tokio::task::JoinSet;
use tokio::time::{sleep, Instant};

use checker::Peak;
use faults::{stamp, Episode, Plan};
use log::{End, Log, Record, What};

const TESSERA: &str = env!("CARGO_BIN_EXE_tessera");

/// Programs competing for seats: more than the hard limit, so that every
/// server's allocation is contended and fail-overs find full servers.
const CLIENTS_DEFAULT: usize = 200;
const CLIENTS_MAX: usize = 1_000;
/// Seats of feature `app` in the pool (20 per server with three servers).
const HARD_LIMIT: u32 = 60;
const LEASE_S_DEFAULT: u32 = 4;
const LEASE_S: std::ops::RangeInclusive<u32> = 2..=30;
const HEARTBEAT_S: u32 = 1;
const FAULT_SECONDS_DEFAULT: u64 = 25;
/// Longest run the environment may ask for.
const FAULT_SECONDS_MAX: u64 = 3_600;
const SERVERS: std::ops::RangeInclusive<usize> = 3..=5;
/// After the last heal, the pool must be back near the hard limit within two
/// leases and this: one lease for the seats a restarted server holds for its
/// old grants, one for fail-overs counted on two servers, and this margin for
/// elections and the clients' retry pauses.
const LIVENESS_MARGIN: Duration = Duration::from_secs(2);
/// Seats short of the hard limit that still count as "back": the clients
/// hand seats back and take them again all the time, so a few are always
/// between one program and the next.
const LIVENESS_SLACK: usize = HARD_LIMIT as usize / 10;
const LIVENESS_POLL: Duration = Duration::from_millis(50);
/// Longest wait for the clients to give their seats back at the end.
const CLIENTS_STOP_WAIT: Duration = Duration::from_secs(15);

struct Settings {
    seed: u64,
    fault_for: Duration,
    servers: usize,
    faulted_max: usize,
    clients: usize,
    lease_s: u32,
}

impl Settings {
    fn from_env() -> Settings {
        let seed = env_number("TESSERA_CHAOS_SEED").unwrap_or_else(rand::random);
        let seconds = env_number("TESSERA_CHAOS_SECONDS").unwrap_or(FAULT_SECONDS_DEFAULT);
        assert!(
            (1..=FAULT_SECONDS_MAX).contains(&seconds),
            "TESSERA_CHAOS_SECONDS must be 1 to {FAULT_SECONDS_MAX}"
        );
        let servers = env_number("TESSERA_CHAOS_SERVERS").unwrap_or(*SERVERS.start());
        assert!(
            SERVERS.contains(&servers),
            "TESSERA_CHAOS_SERVERS must be in {SERVERS:?}"
        );
        let faulted_max = env_number("TESSERA_CHAOS_FAULTED_MAX").unwrap_or(1);
        assert!(
            (1..servers).contains(&faulted_max),
            "TESSERA_CHAOS_FAULTED_MAX must be 1 to {}",
            servers - 1
        );
        let clients = env_number("TESSERA_CHAOS_CLIENTS").unwrap_or(CLIENTS_DEFAULT);
        assert!(
            (servers..=CLIENTS_MAX).contains(&clients),
            "TESSERA_CHAOS_CLIENTS must be {servers} (one per server) to {CLIENTS_MAX}"
        );
        let lease_s = env_number("TESSERA_CHAOS_LEASE_S").unwrap_or(LEASE_S_DEFAULT);
        assert!(
            LEASE_S.contains(&lease_s),
            "TESSERA_CHAOS_LEASE_S must be in {LEASE_S:?}"
        );
        Settings {
            seed,
            fault_for: Duration::from_secs(seconds),
            servers,
            faulted_max,
            clients,
            lease_s,
        }
    }

    /// Seats the clients should hold again once every fault has healed.
    fn liveness_target(&self) -> usize {
        self.clients
            .min(HARD_LIMIT as usize)
            .saturating_sub(LIVENESS_SLACK)
    }

    fn liveness_wait(&self) -> Duration {
        2 * Duration::from_secs(self.lease_s.into()) + LIVENESS_MARGIN
    }
}

fn env_number<T: FromStr>(name: &str) -> Option<T> {
    let text = std::env::var(name).ok()?;
    let number = text
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{name}={text:?} is not a number"));
    Some(number)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seats_believed_never_exceed_the_hard_limit_under_faults() {
    let settings = Settings::from_env();
    println!(
        "chaos seed {seed} (replay with TESSERA_CHAOS_SEED={seed}): {servers} servers, \
         {clients} clients, hard limit {HARD_LIMIT}, lease {lease_s} s, heartbeat {HEARTBEAT_S} s, \
         faults for {fault_s} s, at most {faulted_max} at once",
        seed = settings.seed,
        servers = settings.servers,
        clients = settings.clients,
        lease_s = settings.lease_s,
        fault_s = settings.fault_for.as_secs(),
        faulted_max = settings.faulted_max,
    );
    let run = run(&settings).await;
    let peak = checker::peak(&checker::beliefs(&run.records, run.ended_at));
    let tally = Tally::of(&run.records);
    let losses = Losses::of(&run, settings.lease_s);
    println!("{}", summary(&settings, &run, &tally, &peak));
    println!("{losses}");
    let problems = problems(&run, &tally, &peak);
    if !problems.is_empty() {
        let pool = run.pool.read().await;
        let kept = keep_evidence(&pool, &run.records, settings.seed, run.epoch);
        panic!(
            "chaos seed {} failed (evidence in {}):\n- {}",
            settings.seed,
            kept.display(),
            problems.join("\n- ")
        );
    }
}

/// Lost seats by whether the server holding them was faulted: a client of a
/// server killed, stopped, cut off or slowed within one lease before the loss may
/// lose its seat when every other server is full; a client of a live server
/// should not.
#[derive(Debug, Default)]
struct Losses {
    of_faulted_server: usize,
    of_live_server: Vec<String>,
}

impl Losses {
    fn of(run: &Run, lease_s: u32) -> Losses {
        let lease = Duration::from_secs(lease_s.into());
        let mut holder: BTreeMap<&str, &str> = BTreeMap::new();
        let mut losses = Losses::default();
        for record in &run.records {
            match &record.what {
                What::Granted {
                    grant_id,
                    server_id,
                    ..
                } => {
                    holder.insert(grant_id, server_id);
                }
                What::FailedOver { grant_id, to, .. } => {
                    holder.insert(grant_id, to);
                }
                What::Ended {
                    grant_id,
                    how: End::Lost { reason },
                    ..
                } => {
                    let server = holder.get(grant_id.as_str()).copied().unwrap_or("?");
                    let since = record.at.checked_sub(lease).unwrap_or(run.epoch);
                    let faulted = run.episodes.iter().any(|episode| {
                        IDS[episode.server] == server
                            && episode.started <= record.at
                            && episode.serving_again.unwrap_or(run.ended_at) >= since
                    });
                    if faulted {
                        losses.of_faulted_server += 1;
                    } else {
                        losses.of_live_server.push(format!(
                            "{} on {server}: {reason}",
                            stamp(run.epoch, record.at)
                        ));
                    }
                }
                _ => {}
            }
        }
        losses
    }
}

impl std::fmt::Display for Losses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "  seats lost by clients of a faulted server: {}; of a live server: {}",
            self.of_faulted_server,
            self.of_live_server.len()
        )?;
        for loss in self.of_live_server.iter().take(5) {
            writeln!(f, "    {loss}")?;
        }
        Ok(())
    }
}

/// What a run leaves for the checker and the summary.
struct Run {
    pool: Arc<RwLock<Pool>>,
    /// Time zero of the printed schedule: when the clients started.
    epoch: Instant,
    episodes: Vec<Episode>,
    /// When the last fault had healed.
    healed_at: Instant,
    liveness: Liveness,
    clients_stopped: bool,
    records: Vec<Record>,
    /// After the last record: a grant never ended is believed until then.
    ended_at: Instant,
}

/// Starts the pool and the clients, runs the fault schedule, waits for the
/// healed pool to hand seats out again, and stops the clients.
async fn run(settings: &Settings) -> Run {
    let pool = start_pool(settings).await;
    let addresses = pool.addresses();
    let ca_pem = pool.ca_pem();
    let vendor = tessera_client::VendorPublicKey::from_base64("acme", pool.vendor_public_key())
        .expect("the pool's vendor key");
    let pool = Arc::new(RwLock::new(pool));
    let epoch = Instant::now();
    let log = Log::new();
    let (stop, stop_receiver) = watch::channel(false);
    let programs = clients::start(
        &addresses,
        &ca_pem,
        &vendor,
        settings.clients,
        settings.seed,
        &log,
        &stop_receiver,
    );
    let plan = Plan {
        seed: settings.seed,
        run_for: settings.fault_for,
        faulted_max: settings.faulted_max,
    };
    let episodes = faults::run(pool.clone(), &plan, epoch).await;
    let healed_at = Instant::now();
    let liveness = wait_for_seats(settings, &log, healed_at).await;
    stop.send_replace(true);
    let clients_stopped = stop_clients(programs).await;
    Run {
        pool,
        epoch,
        episodes,
        healed_at,
        liveness,
        clients_stopped,
        records: log.records(),
        ended_at: Instant::now(),
    }
}

/// Waits for every program to give its seat back; false if some did not in time.
async fn stop_clients(mut programs: JoinSet<()>) -> bool {
    let stopped = tokio::time::timeout(CLIENTS_STOP_WAIT, async {
        while let Some(result) = programs.join_next().await {
            if let Err(error) = result {
                std::panic::resume_unwind(error.into_panic());
            }
        }
    })
    .await
    .is_ok();
    programs.abort_all();
    stopped
}

/// Everything that makes the run fail, each as a sentence.
fn problems(run: &Run, tally: &Tally, peak: &Peak) -> Vec<String> {
    let mut problems = Vec::new();
    if peak.held > HARD_LIMIT as usize {
        problems.push(violation(peak, &run.records, run.epoch));
    }
    problems.extend(run.liveness.problem(run.healed_at, run.epoch));
    if !tally.final_refusals.is_empty() {
        problems.push(format!(
            "{} checkouts were refused for good (the program would stop); see the summary",
            tally.final_refusals.len()
        ));
    }
    for episode in run.episodes.iter().filter(|e| e.serving_again.is_none()) {
        problems.push(format!(
            "server {} did not serve again within {} s after the {} healed at {}",
            IDS[episode.server],
            faults::REJOIN_WAIT.as_secs(),
            episode.fault.name(),
            stamp(run.epoch, episode.healed)
        ));
    }
    if !run.clients_stopped {
        problems.push(format!(
            "the clients did not stop within {} s",
            CLIENTS_STOP_WAIT.as_secs()
        ));
    }
    problems
}

async fn start_pool(settings: &Settings) -> Pool {
    let spec = PoolSpec {
        servers: settings.servers,
        seats: HARD_LIMIT,
        lease_s: settings.lease_s,
        heartbeat_s: HEARTBEAT_S,
        ..PoolSpec::default()
    };
    let pool = Pool::start(std::path::Path::new(TESSERA), spec).await;
    pool.wait_leader(&pool.all()).await;
    pool
}

/// What the pool did once every fault had healed.
struct Liveness {
    target: usize,
    waited: Duration,
    /// How long after the heal the clients held `target` seats and every
    /// server had granted a checkout.
    reached_after: Option<Duration>,
    held_most: usize,
    servers_granting: Vec<String>,
}

impl Liveness {
    fn problem(&self, healed_at: Instant, epoch: Instant) -> Option<String> {
        if self.reached_after.is_some() {
            return None;
        }
        Some(format!(
            "after the last heal at {}, within {} s the clients held at most {} seats (wanted \
             {}) and only servers {:?} granted checkouts",
            stamp(epoch, healed_at),
            self.waited.as_secs(),
            self.held_most,
            self.target,
            self.servers_granting
        ))
    }
}

/// Waits until the clients believe in nearly as many seats as they may hold,
/// and every server has granted since the heal.
async fn wait_for_seats(settings: &Settings, log: &Log, healed_at: Instant) -> Liveness {
    let server_ids = &IDS[..settings.servers];
    let target = settings.liveness_target();
    let waited = settings.liveness_wait();
    let mut held_most = 0;
    loop {
        let held = log.held_now();
        held_most = held_most.max(held);
        let granting = log.servers_granting_since(healed_at);
        let now = Instant::now();
        let reached = held >= target && server_ids.iter().all(|&id| granting.contains(id));
        if reached || now >= healed_at + waited {
            return Liveness {
                target,
                waited,
                reached_after: reached.then(|| now - healed_at),
                held_most,
                servers_granting: granting.into_iter().collect(),
            };
        }
        sleep(LIVENESS_POLL).await;
    }
}

fn violation(peak: &Peak, records: &[Record], epoch: Instant) -> String {
    let at = peak.at.expect("a peak above zero has an instant");
    let mut text = format!(
        "{} seats believed valid at once at {}, above the hard limit {HARD_LIMIT}; the holders:",
        peak.held,
        stamp(epoch, at)
    );
    for belief in &peak.holders {
        let moves: Vec<String> = records
            .iter()
            .filter(|r| r.client == belief.client)
            .filter_map(|r| match &r.what {
                What::FailedOver { grant_id, from, to } if *grant_id == belief.grant_id => {
                    Some(format!("{from}->{to} at {}", stamp(epoch, r.at)))
                }
                _ => None,
            })
            .collect();
        let _ = write!(
            text,
            "\n    client {} grant {} from {} on {} until {} ({:?}); fail-overs: {:?}",
            belief.client,
            belief.grant_id,
            stamp(epoch, belief.from),
            belief.server_id,
            stamp(epoch, belief.to),
            belief.end,
            moves
        );
    }
    text
}

/// The clients' log, counted.
#[derive(Default)]
struct Tally<'a> {
    grants_by_server: BTreeMap<&'a str, usize>,
    fail_overs: usize,
    ends: BTreeMap<&'static str, usize>,
    losses_by_reason: BTreeMap<String, usize>,
    refusals_by_code: BTreeMap<&'static str, usize>,
    /// Refusals a program cannot retry: it would stop.
    final_refusals: Vec<&'a str>,
}

impl<'a> Tally<'a> {
    fn of(records: &'a [Record]) -> Tally<'a> {
        let mut tally = Tally::default();
        for record in records {
            match &record.what {
                What::Granted { server_id, .. } => {
                    *tally.grants_by_server.entry(server_id).or_default() += 1;
                }
                What::FailedOver { .. } => tally.fail_overs += 1,
                What::Ended { how, .. } => {
                    let name = match how {
                        End::Released => "released",
                        End::Dropped => "dropped",
                        End::Lost { reason } => {
                            *tally.losses_by_reason.entry(loss_kind(reason)).or_default() += 1;
                            "lost"
                        }
                    };
                    *tally.ends.entry(name).or_default() += 1;
                }
                What::CheckoutFailed {
                    kind,
                    final_message,
                } => {
                    *tally.refusals_by_code.entry(kind).or_default() += 1;
                    tally.final_refusals.extend(final_message.as_deref());
                }
            }
        }
        tally
    }
}

fn summary(settings: &Settings, run: &Run, tally: &Tally, peak: &Peak) -> String {
    let epoch = run.epoch;
    let mut faults: BTreeMap<&str, usize> = BTreeMap::new();
    for episode in &run.episodes {
        *faults.entry(episode.fault.name()).or_default() += 1;
    }
    let faults: Vec<String> = faults
        .iter()
        .map(|(fault, n)| format!("{fault} {n}"))
        .collect();
    let mut text = String::new();
    let _ = writeln!(text, "chaos summary, seed {}:", settings.seed);
    let _ = writeln!(
        text,
        "  faults: {} ({})",
        run.episodes.len(),
        faults.join(", ")
    );
    for episode in &run.episodes {
        let _ = writeln!(
            text,
            "    {} {} {} for {} ms; serving again at {}",
            stamp(epoch, episode.started),
            episode.fault.name(),
            IDS[episode.server],
            episode.length.as_millis(),
            episode
                .serving_again
                .map_or("never".to_string(), |at| stamp(epoch, at))
        );
    }
    let grants: usize = tally.grants_by_server.values().sum();
    let _ = writeln!(text, "  grants: {grants} {:?}", tally.grants_by_server);
    let _ = writeln!(text, "  fail-overs: {}", tally.fail_overs);
    let _ = writeln!(text, "  ends: {:?}", tally.ends);
    let _ = writeln!(text, "  losses by reason: {:?}", tally.losses_by_reason);
    let _ = writeln!(text, "  refused checkouts: {:?}", tally.refusals_by_code);
    if !tally.final_refusals.is_empty() {
        let first: Vec<&str> = tally.final_refusals.iter().take(5).copied().collect();
        let _ = writeln!(text, "  refusals a program cannot retry: {first:#?}");
    }
    let _ = writeln!(
        text,
        "  most seats believed at once: {} of {HARD_LIMIT}, at {}",
        peak.held,
        peak.at.map_or("-".to_string(), |at| stamp(epoch, at))
    );
    let _ = write!(
        text,
        "  after the last heal: {} seats held after {}",
        run.liveness.target,
        run.liveness
            .reached_after
            .map_or("never".to_string(), |d| format!("{} ms", d.as_millis()))
    );
    text
}

/// The lost seats' reasons without the addresses and numbers that make each unique.
fn loss_kind(reason: &str) -> String {
    let kinds = [
        "no_seats_available",
        "no_quorum",
        "grace_period",
        "no server answered in time",
        "timed out",
        "connection refused",
    ];
    let found: Vec<&str> = kinds
        .iter()
        .copied()
        .filter(|kind| reason.contains(kind))
        .collect();
    if found.is_empty() {
        reason.chars().take(120).collect()
    } else {
        found.join("+")
    }
}

/// Copies the servers' logs and writes the clients' log next to them.
fn keep_evidence(pool: &Pool, records: &[Record], seed: u64, epoch: Instant) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tessera-chaos-{seed}"));
    let _ = std::fs::create_dir_all(&dir);
    for server in &pool.servers {
        let log = pool.path().join(format!("{}.log", server.id));
        let _ = std::fs::copy(&log, dir.join(format!("{}.log", server.id)));
    }
    let mut text = String::new();
    for record in records {
        let what = match &record.what {
            What::Granted {
                grant_id,
                server_id,
                valid_until,
            } => format!(
                "granted {grant_id} by {server_id}, valid until {}",
                stamp(epoch, *valid_until)
            ),
            What::FailedOver { grant_id, from, to } => {
                format!("failed over {grant_id} {from}->{to}")
            }
            What::Ended {
                grant_id,
                valid_until,
                how,
            } => format!(
                "ended {grant_id} ({how:?}), valid until {}",
                stamp(epoch, *valid_until)
            ),
            What::CheckoutFailed {
                kind,
                final_message,
            } => format!(
                "checkout refused ({kind}){}",
                final_message.as_deref().unwrap_or_default()
            ),
        };
        let _ = writeln!(
            text,
            "{} client {} {what}",
            stamp(epoch, record.at),
            record.client
        );
    }
    let _ = std::fs::write(dir.join("clients.log"), text);
    dir
}
