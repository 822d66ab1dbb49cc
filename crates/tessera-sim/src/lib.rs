//! Deterministic simulation of a Tessera pool under faults.
//!
//! One seed fixes everything: the pool (3 to 7 servers, their clock rates,
//! the seats and their distribution), the programs' behaviour, and the fault
//! schedule. [`run`] builds it on [turmoil](https://docs.rs/turmoil)'s
//! simulated network and clock, runs the real server (`tessera-server`,
//! openraft and redb included) and the real SDK (`tessera-client`) on it,
//! injects the faults, and judges the run with the checkers of
//! [`trace`]. The same seed replays the same run: its digest says so.
//!
//! What is simulated, and how:
//! - **network**: turmoil's TCP; partitions (symmetric and one-way), flapping
//!   links, held (late) messages and latency are turmoil's; lost and
//!   duplicated requests are made by the transport seam ([`net`]);
//! - **clocks**: every server's clock runs at its own rate within the drift
//!   bound ([`clock`]); programs run at the slowest rate the bound allows,
//!   so their beliefs last longest;
//! - **disks**: redb runs on a simulated disk that loses unsynced writes in a
//!   crash and can be slow or replaced ([`disk`]).
//!
//! A third of the seeds also give the feature pool-wide `reserve` and `max`
//! rules, and their programs run as users those rules name ([`rules`]).

pub mod clock;
pub mod disk;
pub mod net;
pub mod plan;
pub mod programs;
pub mod rules;
pub mod scenario;
pub mod trace;

use std::collections::{BTreeMap, BTreeSet};
use std::ops::{ControlFlow, RangeInclusive};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tessera_server::seams::Mutations;

use crate::disk::SimDisk;
use crate::net::NetKnobs;
use crate::plan::{Episode, Fault, Names, Shown};
use crate::programs::{Ctx, Phase};
use crate::scenario::{Scenario, EPOCH_UNIX_MS};
use crate::trace::{Counts, Shared, Violation};

/// How a run is shaped; the seed decides the rest.
#[derive(Clone, Debug)]
pub struct Options {
    /// Servers in the pool, drawn from this range.
    pub servers: RangeInclusive<usize>,
    /// Seats per server of the pool's hard limit, drawn from this range.
    pub seats_per_server: RangeInclusive<u32>,
    /// The codes' lease in seconds, drawn from this range. Leases longer
    /// than the wait for a silent server's quota (about 3 s) let its
    /// clients' seats be handed over (ARCHITECTURE.md, timeline 8). The
    /// default, one value, draws nothing, so every seed keeps its story.
    pub lease_s: RangeInclusive<u32>,
    /// Programs using the SDK; by default about twice the hard limit.
    pub programs: Option<usize>,
    /// Machines the programs run on.
    pub client_hosts: usize,
    /// How long faults are injected.
    pub fault_span: Duration,
    /// Mean time between the starts of two faults.
    pub fault_gap: Duration,
    pub faults: bool,
    /// The administrator changes the pool during the run.
    pub admin: bool,
    /// One code per server, bound to its host: each server serves only its
    /// own, as in a pool of masters; the hard limit is one code's seats.
    /// The administrator then only changes distributions.
    pub host_codes: bool,
    /// Deliberate bugs, to show the checkers catch them.
    pub mutations: Mutations,
    /// A fault schedule to run instead of the seed's own.
    pub plan: Option<Vec<Episode>>,
    /// A third of the seeds draw `reserve` and `max` rules ([`rules`]).
    /// Off, every seed runs as it did before there were rules: the draw
    /// comes after every other, so it changes no other choice of a seed,
    /// but the rules change its story.
    pub rules: bool,
    /// The seeds' rules are left out of the servers' pool files, so nothing
    /// enforces them: the rules' checker must object.
    pub withhold_rules: bool,
    /// Every server answers grants before it syncs them (`[store] sync =
    /// "background"`): a crash loses the grants of its last moments, and
    /// the restarted server must recover them from heartbeats.
    pub background_sync: bool,
    /// Over the seed's own faults, servers whose issuers take each new
    /// control state late ([`plan::draw_slow_follow`], from a random
    /// source of its own: every other choice of the seed stays as it was).
    pub slow_follow: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            servers: 3..=5,
            seats_per_server: 3..=5,
            lease_s: scenario::LEASE_S..=scenario::LEASE_S,
            programs: None,
            client_hosts: 4,
            fault_span: Duration::from_secs(12),
            fault_gap: Duration::from_millis(1_200),
            faults: true,
            admin: true,
            host_codes: false,
            mutations: Mutations::default(),
            plan: None,
            rules: true,
            withhold_rules: false,
            background_sync: false,
            slow_follow: false,
        }
    }
}

/// What a run did and found.
#[derive(Clone, Debug)]
pub struct Report {
    pub seed: u64,
    pub servers: usize,
    pub hard_limit: u32,
    /// The hard limit at the end (added codes raise it).
    pub hard_limit_final: u32,
    pub programs: usize,
    /// The feature's `reserve` and `max` rules, if the seed drew them.
    pub rules: Option<String>,
    /// The fault schedule, one line an episode.
    pub schedule: Vec<String>,
    pub counts: Counts,
    /// Most seats the programs believed valid at once.
    pub peak_seats: u32,
    pub violations: Vec<Violation>,
    /// Hash of the run's whole story: equal for two runs of one seed.
    pub digest: String,
    pub simulated: Duration,
    /// The last lines of the story, for a failure report.
    pub tail: String,
    /// The whole story, a line an event.
    pub story: Vec<String>,
    /// The command that runs this seed again as it ran here
    /// ([`replay_command`]).
    pub replay: String,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    /// A failure report: the seed, how to replay it, the schedule, what broke.
    pub fn explain(&self) -> String {
        let mut out = format!(
            "seed {} ({} servers, hard limit {}, {} programs{}): {} violation(s)\n\
             replay: {}\n\
             fault schedule:\n",
            self.seed,
            self.servers,
            self.hard_limit,
            self.programs,
            self.rules
                .as_ref()
                .map_or(String::new(), |rules| format!(", rules {rules}")),
            self.violations.len(),
            self.replay
        );
        for line in &self.schedule {
            out.push_str("  ");
            out.push_str(line);
            out.push('\n');
        }
        out.push_str("violations:\n");
        for v in &self.violations {
            out.push_str(&format!(
                "  [{}] at {:.3} s: {}\n",
                v.checker,
                v.at.as_secs_f64(),
                v.what
            ));
        }
        out
    }
}

/// Shortens `text` to about `bytes_max` bytes, on a character boundary.
pub fn short(text: &str, bytes_max: usize) -> &str {
    if text.len() <= bytes_max {
        return text;
    }
    let mut end = bytes_max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The administrator's machine.
pub const ADMIN_HOST: &str = "admin";
/// Simulated time per step: every machine runs this long, then the network delivers.
const TICK: Duration = Duration::from_millis(1);
/// Faults begin once the pool has formed and programs hold seats.
const FAULTS_FROM: Duration = Duration::from_secs(3);
/// After the last fault heals, programs keep working this long before they
/// stop: the safe wait for a silent server (about 3.9 s with a 2 s lease)
/// plus two leases (grants a restarted server holds for the full lease,
/// fail-overs counted on two servers) plus a margin for elections: 10 s for
/// a 2 s lease.
fn settle(lease_s: u32) -> Duration {
    Duration::from_secs(6 + 2 * u64::from(lease_s))
}
/// Time the programs get to give their seats back, at least: the probe
/// also waits for the last of them to end.
const STOP_WAIT: Duration = Duration::from_secs(3);
/// Connections a simulated socket queues (turmoil's default is 64).
const TCP_BACKLOG: usize = 16_384;
/// Normal latency of every link.
const LATENCY_MAX: Duration = Duration::from_millis(2);
/// A run that has not finished by then is cut short (the probe reports it).
const RUN_MAX: Duration = Duration::from_secs(600);

/// What the runner has applied to the simulated world.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct World {
    down: BTreeSet<usize>,
    /// Ordered pairs whose messages are dropped.
    cut: BTreeSet<(usize, usize)>,
    /// Unordered pairs (a < b) whose messages are held.
    held: BTreeSet<(usize, usize)>,
    latency: BTreeMap<(usize, usize), Duration>,
    loss: BTreeMap<usize, u32>,
    duplicate: BTreeMap<usize, u32>,
    slow: BTreeMap<usize, Duration>,
    follow_lag: BTreeMap<usize, Duration>,
}

fn pair(a: usize, b: usize) -> (usize, usize) {
    (a.min(b), a.max(b))
}

/// The world the active episodes call for at `now`.
fn desired(episodes: &[Episode], hosts: usize, now: Duration) -> World {
    let mut world = World::default();
    for episode in episodes.iter().filter(|e| e.start <= now && now < e.end()) {
        match &episode.fault {
            Fault::Crash { server, .. } => {
                world.down.insert(*server);
            }
            Fault::ClientCrash { host } => {
                world.down.insert(*host);
            }
            Fault::Partition { side } => {
                for a in 0..hosts {
                    for b in 0..hosts {
                        if side.contains(&a) != side.contains(&b) {
                            world.cut.insert((a, b));
                        }
                    }
                }
            }
            Fault::OneWay { from, to } => {
                world.cut.insert((*from, *to));
            }
            Fault::Flap { a, b, period } => {
                let phase = (now - episode.start).as_millis() / period.as_millis().max(1);
                if phase.is_multiple_of(2) {
                    world.cut.insert((*a, *b));
                    world.cut.insert((*b, *a));
                }
            }
            Fault::Hold { a, b } => {
                world.held.insert(pair(*a, *b));
            }
            Fault::Latency { a, b, max } => {
                let entry = world.latency.entry(pair(*a, *b)).or_default();
                *entry = (*entry).max(*max);
            }
            Fault::Loss { host, per_mille } => {
                let entry = world.loss.entry(*host).or_default();
                *entry = (*entry).max(*per_mille);
            }
            Fault::Duplicate { host, per_mille } => {
                let entry = world.duplicate.entry(*host).or_default();
                *entry = (*entry).max(*per_mille);
            }
            Fault::SlowDisk { server, delay } => {
                let entry = world.slow.entry(*server).or_default();
                *entry = (*entry).max(*delay);
            }
            Fault::SlowFollow { server, lag } => {
                let entry = world.follow_lag.entry(*server).or_default();
                *entry = (*entry).max(*lag);
            }
        }
    }
    world
}

/// Runs seed `seed` to the end and judges it, on a thread of its own. A
/// panic anywhere in the run (an assertion of the server, of openraft, or
/// of the simulator) ends it and is reported as a violation of checker
/// `panic`, with the first panic's message and place.
pub fn run(seed: u64, options: &Options) -> Report {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            FIRST_PANIC.with(|first| {
                first.borrow_mut().get_or_insert_with(|| info.to_string());
            });
            previous(info);
        }));
    });
    let options = options.clone();
    let replay = replay_command(seed, &options);
    let mut report = std::thread::Builder::new()
        .name(format!("sim-{seed}"))
        .spawn(move || {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_here(seed, &options)))
                .unwrap_or_else(|_| {
                    let what = FIRST_PANIC
                        .with(|first| first.borrow_mut().take())
                        .unwrap_or_else(|| "a panic without a message".into());
                    panicked(seed, what)
                })
        })
        .expect("a thread for the run")
        .join()
        .unwrap_or_else(|_| panicked(seed, "the run's thread died".into()));
    report.replay = replay;
    report
}

/// The deliberate bugs of [`Mutations`], by the names `tessera-sim
/// --mutation` takes.
pub fn mutation_switches(mutations: &mut Mutations) -> [(&'static str, &mut bool); 7] {
    [
        ("issue-without-quorum", &mut mutations.issue_without_quorum),
        (
            "reassign-without-wait",
            &mut mutations.reassign_without_wait,
        ),
        (
            "vote-while-catching-up",
            &mut mutations.vote_while_catching_up,
        ),
        (
            "answer-from-the-newest-state",
            &mut mutations.answer_from_the_newest_state,
        ),
        (
            "hand-over-without-wait",
            &mut mutations.hand_over_without_wait,
        ),
        ("trust-an-unclean-run", &mut mutations.trust_an_unclean_run),
        (
            "renew-before-the-issuer-follows",
            &mut mutations.renew_before_the_issuer_follows,
        ),
    ]
}

/// The `tessera-sim` command that runs `seed` with `options` again, or,
/// for a run the command cannot shape (a fixed fault schedule, ranges it
/// has no flag for), the test to run instead.
pub fn replay_command(seed: u64, options: &Options) -> String {
    let shaped_by_flags = options.plan.is_none()
        && *options.seats_per_server.start() == 3
        && *options.lease_s.start() == 2
        && options.fault_gap == Options::default().fault_gap
        && options.admin;
    if !shaped_by_flags {
        return format!(
            "seed {seed} of the test that ran it (its options have no tessera-sim flags)"
        );
    }
    let mut command = format!(
        "cargo run --release -p tessera-sim -- --seed {seed} --verbose --servers-min {} \
         --servers-max {} --seats-per-server-max {} --lease-s-max {} --fault-seconds {}",
        options.servers.start(),
        options.servers.end(),
        options.seats_per_server.end(),
        options.lease_s.end(),
        options.fault_span.as_secs(),
    );
    let flags = [
        (options.programs.map(|n| format!("--programs {n}"))),
        (!options.faults).then(|| "--no-faults".to_string()),
        options.host_codes.then(|| "--host-codes".to_string()),
        (!options.rules).then(|| "--no-rules".to_string()),
        options
            .withhold_rules
            .then(|| "--withhold-rules".to_string()),
        options
            .background_sync
            .then(|| "--background-sync".to_string()),
        options.slow_follow.then(|| "--slow-follow".to_string()),
    ];
    for flag in flags.into_iter().flatten() {
        command.push(' ');
        command.push_str(&flag);
    }
    let mut mutations = options.mutations;
    for (name, on) in mutation_switches(&mut mutations) {
        if *on {
            command.push_str(&format!(" --mutation {name}"));
        }
    }
    command
}

thread_local! {
    /// The first panic on this thread: later ones are its consequences.
    static FIRST_PANIC: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
    /// The run on this thread, so a run stopped by a panic still tells its story.
    static RUNNING: std::cell::RefCell<Option<Running>> = const { std::cell::RefCell::new(None) };
}

/// What a report needs of a run that may stop on a panic.
struct Running {
    servers: usize,
    hard_limit: u32,
    programs: usize,
    rules: Option<String>,
    schedule: Vec<String>,
    trace: Shared,
}

fn panicked(seed: u64, what: String) -> Report {
    let running = RUNNING.with(|running| running.borrow_mut().take());
    let mut report = Report {
        seed,
        servers: 0,
        hard_limit: 0,
        hard_limit_final: 0,
        programs: 0,
        rules: None,
        schedule: Vec::new(),
        counts: Counts::default(),
        peak_seats: 0,
        violations: Vec::new(),
        digest: String::new(),
        simulated: Duration::ZERO,
        tail: String::new(),
        story: Vec::new(),
        replay: String::new(),
    };
    if let Some(running) = running {
        let trace = running.trace.lock();
        report.servers = running.servers;
        report.hard_limit = running.hard_limit;
        report.hard_limit_final = trace.hard_limit_now();
        report.programs = running.programs;
        report.rules = running.rules;
        report.schedule = running.schedule;
        report.counts = trace.counts.clone();
        report.violations = trace.violations.clone();
        report.digest = trace.digest();
        report.simulated = clock::true_now();
        report.tail = trace.tail(trace::TAIL_LINES);
        report.story = trace.story();
    }
    report.violations.push(Violation {
        at: report.simulated,
        checker: "panic",
        what: format!("the run stopped on a panic: {what}"),
    });
    report
}

/// Mixed into a seed for the random source of its slow-follow episodes.
const SLOW_FOLLOW_STREAM: u64 = 0x5107_f011_0000_0001;

fn run_here(seed: u64, options: &Options) -> Report {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut scenario = Scenario::new(&mut rng, options);
    let client_hosts: Vec<String> = (1..=options.client_hosts)
        .map(|i| format!("client-{i}"))
        .collect();
    let mut episodes = draw_episodes(
        &mut rng,
        options,
        scenario.servers.len(),
        client_hosts.len(),
    );
    if options.slow_follow {
        let mut own = StdRng::seed_from_u64(seed ^ SLOW_FOLLOW_STREAM);
        episodes.extend(plan::draw_slow_follow(
            &mut own,
            scenario.servers.len(),
            FAULTS_FROM,
            options.fault_span,
        ));
        episodes.sort_by_key(|episode| episode.start);
    }
    // Last, so that every other choice of the seed is what it was before
    // there were rules.
    if options.rules && rng.gen_ratio(1, 3) {
        let drawn = rules::draw(&mut rng, scenario.hard_limit);
        scenario.set_rules(rules::Rules {
            withheld: options.withhold_rules,
            ..drawn
        });
    }
    let runner = Runner::new(seed, options, &scenario, client_hosts, episodes);
    let mut sim = runner.build_sim(seed);
    let simulated = runner.drive(&mut sim);
    drop(sim);
    RUNNING.with(|running| running.borrow_mut().take());
    let mut trace = runner.trace.lock();
    let peak_seats = trace.over_issue(simulated);
    trace.rules(simulated);
    Report {
        seed,
        servers: scenario.servers.len(),
        hard_limit: scenario.hard_limit,
        hard_limit_final: trace.hard_limit_now(),
        programs: scenario.programs,
        rules: scenario.rules.as_ref().map(|rules| rules.summary.clone()),
        schedule: runner.schedule.clone(),
        counts: trace.counts.clone(),
        peak_seats,
        violations: trace.violations.clone(),
        digest: trace.digest(),
        simulated,
        tail: trace.tail(trace::TAIL_LINES),
        story: trace.story(),
        replay: String::new(),
    }
}

/// The run's fault episodes: the options' own plan, or the seed's.
fn draw_episodes(
    rng: &mut StdRng,
    options: &Options,
    servers: usize,
    client_hosts: usize,
) -> Vec<Episode> {
    if let Some(plan) = &options.plan {
        plan.clone()
    } else if options.faults {
        plan::draw(
            rng,
            servers,
            client_hosts,
            FAULTS_FROM,
            options.fault_span,
            options.fault_gap,
        )
    } else {
        Vec::new()
    }
}

/// A temporary directory with the pool file and the pool key every server
/// starts from.
fn write_start_files(scenario: &Scenario) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("tessera-sim-")
        .tempdir()
        .expect("a temporary directory");
    std::fs::write(dir.path().join("pool.toml"), &scenario.pool_text).expect("write the pool file");
    std::fs::write(
        dir.path().join(scenario::POOL_KEY_FILE),
        scenario::pool_key_text(),
    )
    .expect("write the pool key file");
    dir
}

/// One run's world: what the seed drew, the files the servers start from,
/// and what the programs and the runner share.
struct Runner {
    episodes: Vec<Episode>,
    /// The fault schedule, one line an episode.
    schedule: Vec<String>,
    server_ids: Vec<String>,
    client_hosts: Vec<String>,
    /// Servers, then client machines, then the administrator's machine
    /// (which faults never aim at, but partitions leave on the larger side).
    host_names: Vec<String>,
    knobs: BTreeMap<String, Arc<NetKnobs>>,
    disks: Vec<Arc<SimDisk>>,
    /// Per server: how late its issuer takes each control state, in ms.
    follow_lags: Vec<Arc<AtomicU64>>,
    trace: Shared,
    ctx: Arc<Ctx>,
    /// The pool file, the pool key and the servers' data; removed with the runner.
    dir: tempfile::TempDir,
}

impl Runner {
    /// Writes the files the servers start from and notes the run as
    /// [`RUNNING`], so a panic still tells its story.
    fn new(
        seed: u64,
        options: &Options,
        scenario: &Scenario,
        client_hosts: Vec<String>,
        episodes: Vec<Episode>,
    ) -> Runner {
        let servers = scenario.servers.len();
        let server_ids: Vec<String> = scenario.servers.iter().map(|s| s.id.clone()).collect();
        let names = Names {
            servers: &server_ids,
            clients: &client_hosts,
        };
        let schedule: Vec<String> = episodes
            .iter()
            .map(|e| Shown(e, &names).to_string())
            .collect();

        let dir = write_start_files(scenario);
        let trace = Shared::default();
        trace.lock().set_initial_limit(scenario.hard_limit);
        trace.lock().set_background_sync(scenario.background_sync);
        trace.lock().set_hostids(
            scenario
                .servers
                .iter()
                .filter_map(|s| s.hostid.clone())
                .collect(),
        );
        // The core parses the rules from the pool file, and the checker
        // judges by what it parsed.
        if let Some((policy, nominal)) = scenario.rules_policy() {
            trace.lock().set_rules(policy, nominal);
        }
        RUNNING.with(|running| {
            *running.borrow_mut() = Some(Running {
                servers,
                hard_limit: scenario.hard_limit,
                programs: scenario.programs,
                rules: scenario.rules.as_ref().map(|rules| rules.summary.clone()),
                schedule: schedule.clone(),
                trace: trace.clone(),
            });
        });
        let host_names: Vec<String> = scenario
            .servers
            .iter()
            .map(|s| s.host.clone())
            .chain(client_hosts.iter().cloned())
            .chain(std::iter::once(ADMIN_HOST.to_string()))
            .collect();
        let knobs: BTreeMap<String, Arc<NetKnobs>> = host_names
            .iter()
            .map(|h| (h.clone(), Arc::new(NetKnobs::default())))
            .collect();
        let ctx = Arc::new(Ctx {
            seed,
            scenario: scenario.clone(),
            trace: trace.clone(),
            phase: AtomicU64::new(Phase::Work as u64),
            mutations: options.mutations,
            dir: dir.path().to_path_buf(),
            knobs: knobs.clone(),
            client_hosts: client_hosts.clone(),
            admin: options.admin,
            programs_running: AtomicU64::new(0),
        });
        Runner {
            episodes,
            schedule,
            server_ids,
            client_hosts,
            host_names,
            knobs,
            disks: (0..servers).map(|_| SimDisk::new()).collect(),
            follow_lags: (0..servers).map(|_| Default::default()).collect(),
            trace,
            ctx,
            dir,
        }
    }

    /// The simulation, with the servers, the client machines and the
    /// administrator's machine on it.
    fn build_sim(&self, seed: u64) -> turmoil::Sim<'static> {
        let mut sim = turmoil::Builder::new()
            .simulation_duration(RUN_MAX + Duration::from_secs(60))
            .tick_duration(TICK)
            // Held connection attempts arrive all at once when a link is released.
            .tcp_capacity(TCP_BACKLOG)
            .ephemeral_ports(1024..=65535)
            .rng_seed(seed)
            .min_message_latency(Duration::ZERO)
            .max_message_latency(LATENCY_MAX)
            .epoch(UNIX_EPOCH + Duration::from_millis(EPOCH_UNIX_MS as u64))
            .build();
        for (index, spec) in self.ctx.scenario.servers.iter().enumerate() {
            let (ctx, disk) = (self.ctx.clone(), self.disks[index].clone());
            let lag = self.follow_lags[index].clone();
            let boots = Arc::new(AtomicU64::new(0));
            sim.host(spec.host.as_str(), move || {
                programs::server(ctx.clone(), index, disk.clone(), lag.clone(), boots.clone())
            });
        }
        for (index, host) in self.client_hosts.iter().enumerate() {
            let ctx = self.ctx.clone();
            let boots = Arc::new(AtomicU64::new(0));
            sim.host(host.as_str(), move || {
                programs::client_machine(ctx.clone(), index, boots.clone())
            });
        }
        let ctx = self.ctx.clone();
        let boots = Arc::new(AtomicU64::new(0));
        sim.host(ADMIN_HOST, move || {
            programs::admin(ctx.clone(), boots.clone())
        });
        sim
    }

    /// Steps the simulation to its end, applying the episodes' faults as
    /// they come and go; returns the simulated time it took.
    fn drive(&self, sim: &mut turmoil::Sim<'_>) -> Duration {
        let healed_at = self
            .episodes
            .iter()
            .map(Episode::end)
            .max()
            .unwrap_or(FAULTS_FROM)
            .max(FAULTS_FROM);
        let mut applied = World::default();
        let mut previous = Duration::ZERO;
        loop {
            let now = sim.elapsed();
            clock::set_between_steps(now);
            self.replace_disks(sim, &mut applied, previous, now);
            let want = desired(&self.episodes, self.host_names.len(), now);
            apply(
                sim,
                &self.trace,
                &self.host_names,
                &self.server_ids,
                &self.disks,
                &self.follow_lags,
                &self.knobs,
                &mut applied,
                &want,
                self.server_ids.len(),
            );
            previous = now;
            if self.steer(now, healed_at).is_break() || self.raft_broken() {
                break;
            }
            if let Err(err) = sim.step() {
                self.trace
                    .lock()
                    .violate("host", format!("a simulated machine failed: {err}"));
                break;
            }
        }
        let simulated = sim.elapsed();
        clock::set_between_steps(simulated);
        simulated
    }

    /// True once two servers applied different states at one log index:
    /// Raft is broken (only a deliberate bug does it), the run has found
    /// what it can, and openraft, whose every assumption no longer holds,
    /// may panic on the states that follow. The run ends there.
    fn raft_broken(&self) -> bool {
        let mut trace = self.trace.lock();
        let broken = trace
            .violations
            .iter()
            .any(|v| v.checker == trace::COMMITTED_STATE);
        if broken {
            trace.note("runner", "the run ends: servers applied different states");
        }
        broken
    }

    /// Wipes happen at the start of their crash: the disks of the crashes
    /// that began after `previous`, up to `now`.
    fn replace_disks(
        &self,
        sim: &mut turmoil::Sim<'_>,
        applied: &mut World,
        previous: Duration,
        now: Duration,
    ) {
        for episode in &self.episodes {
            if let Fault::Crash { server, wipe: true } = episode.fault {
                if previous < episode.start && episode.start <= now {
                    let server_id = &self.server_ids[server];
                    // Grants on a lost disk cannot come back: nothing to check.
                    self.trace.lock().server_crashed(server_id, true);
                    if !applied.down.contains(&server) {
                        crash_silently(sim, &self.host_names, server, applied);
                        applied.down.insert(server);
                    }
                    self.disks[server].wipe();
                    let data = self.dir.path().join(format!("data-{server_id}"));
                    let _ = std::fs::remove_dir_all(data);
                    self.trace
                        .lock()
                        .note("runner", &format!("{server_id}'s disk replaced"));
                }
            }
        }
    }

    /// Moves the programs on once the faults have healed and settled; breaks
    /// when the probe is done or the run took too long.
    fn steer(&self, now: Duration, healed_at: Duration) -> ControlFlow<()> {
        let settle = settle(self.ctx.scenario.lease_s);
        match self.ctx.phase() {
            Phase::Work if now >= healed_at + settle => {
                self.trace.lock().note("runner", "programs stop");
                self.ctx.set_phase(Phase::Stop);
            }
            // Every program has ended: one still asking when told to stop
            // (a checkout or an activation going round the servers) may
            // yet take a seat, which the probe must see as taken.
            Phase::Stop
                if now >= healed_at + settle + STOP_WAIT
                    && self.ctx.programs_running.load(Ordering::SeqCst) == 0 =>
            {
                self.trace.lock().note("runner", "probe");
                self.ctx.set_phase(Phase::Probe);
            }
            Phase::Done => return ControlFlow::Break(()),
            _ => {}
        }
        if now >= RUN_MAX {
            self.trace.lock().violate(
                "liveness",
                format!("the run did not finish within {} s", RUN_MAX.as_secs()),
            );
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }
}

/// Brings the simulated world from `applied` to `want`.
#[allow(clippy::too_many_arguments)]
fn apply(
    sim: &mut turmoil::Sim<'_>,
    trace: &Shared,
    host_names: &[String],
    server_ids: &[String],
    disks: &[Arc<SimDisk>],
    follow_lags: &[Arc<AtomicU64>],
    knobs: &BTreeMap<String, Arc<NetKnobs>>,
    applied: &mut World,
    want: &World,
    servers: usize,
) {
    if applied == want {
        return;
    }
    let name = |host: usize| host_names[host].as_str();
    for &host in want.down.difference(&applied.down.clone()) {
        if host < servers {
            trace.lock().server_crashed(&server_ids[host], false);
            disks[host].crash();
        } else {
            trace.lock().host_crashed(name(host));
        }
        trace
            .lock()
            .note("runner", &format!("crash {}", name(host)));
        crash_silently(sim, host_names, host, applied);
    }
    for &host in applied.down.difference(&want.down.clone()) {
        trace
            .lock()
            .note("runner", &format!("restart {}", name(host)));
        sim.bounce(name(host));
    }
    // Links: every unordered pair whose wanted state changed.
    let hosts = host_names.len();
    for a in 0..hosts {
        for b in a + 1..hosts {
            let (was, now) = (link(applied, a, b), link(want, a, b));
            if was != now {
                set_link(sim, host_names, a, b, was, now);
            }
        }
    }
    for key in applied.latency.keys().chain(want.latency.keys()) {
        let value = want.latency.get(key).copied().unwrap_or(LATENCY_MAX);
        if applied.latency.get(key) != want.latency.get(key) {
            sim.set_link_max_message_latency(name(key.0), name(key.1), value);
        }
    }
    for (host, name) in host_names.iter().enumerate() {
        let knob = &knobs[name];
        knob.loss_per_mille
            .store(want.loss.get(&host).copied().unwrap_or(0), Ordering::SeqCst);
        knob.duplicate_per_mille.store(
            want.duplicate.get(&host).copied().unwrap_or(0),
            Ordering::SeqCst,
        );
    }
    for (server, disk) in disks.iter().enumerate() {
        disk.set_commit_delay(want.slow.get(&server).copied().unwrap_or_default());
    }
    for (server, lag) in follow_lags.iter().enumerate() {
        let ms = want.follow_lag.get(&server).map_or(0, |d| d.as_millis());
        lag.store(u64::try_from(ms).unwrap_or(u64::MAX), Ordering::SeqCst);
    }
    *applied = want.clone();
}

/// A link's state: (a -> b cut, b -> a cut, held).
type Link = (bool, bool, bool);

fn link(world: &World, a: usize, b: usize) -> Link {
    (
        world.cut.contains(&(a, b)),
        world.cut.contains(&(b, a)),
        world.held.contains(&pair(a, b)),
    )
}

fn set_link(
    sim: &mut turmoil::Sim<'_>,
    names: &[String],
    a: usize,
    b: usize,
    was: Link,
    now: Link,
) {
    let name = |host: usize| names[host].as_str();
    let (cut_ab, cut_ba, hold) = now;
    if cut_ab || cut_ba {
        for (from, to, cut) in [(a, b, cut_ab), (b, a, cut_ba)] {
            if cut {
                sim.partition_oneway(name(from), name(to));
            } else {
                sim.repair_oneway(name(from), name(to));
            }
        }
    } else if hold {
        sim.hold(name(a), name(b));
    } else if was.2 {
        sim.release(name(a), name(b));
    } else {
        sim.repair(name(a), name(b));
    }
}

/// The machine stops at once, as in a power cut: every link to it is cut
/// while its software is torn down, so no goodbye (FIN, RST) leaves it; its
/// peers find out by their timeouts. (It also keeps the run deterministic:
/// the order in which tokio drops a runtime's tasks depends on task ids,
/// which are global to the process.) Then the links are as they were.
fn crash_silently(sim: &mut turmoil::Sim<'_>, names: &[String], host: usize, world: &World) {
    let cut = (true, true, false);
    for other in (0..names.len()).filter(|&o| o != host) {
        let (a, b) = pair(host, other);
        set_link(sim, names, a, b, link(world, a, b), cut);
    }
    sim.crash(names[host].as_str());
    for other in (0..names.len()).filter(|&o| o != host) {
        let (a, b) = pair(host, other);
        set_link(sim, names, a, b, cut, link(world, a, b));
    }
}

/// Wall-clock seconds since the Unix epoch, for reports.
pub fn wall_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
