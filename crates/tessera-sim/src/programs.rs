//! The software on the simulated machines: Tessera servers, programs using
//! the SDK, and an administrator who changes the pool while it runs and, at
//! the end, probes that every seat can be had again.

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tessera_client::{Client, ClientConfig, SeatGuard, Trust};
use tessera_core::LicenseCode;
use tessera_proto::{AddLicense, ErrorCode, PoolFileUpdate, SetDistribution, StatusResponse};
use tessera_server::seams::{Mutations, Seams};
use tessera_transport::{HttpRequest, HttpTransport, Method};
use tokio::task::JoinSet;
use tokio::time::{sleep, sleep_until, Instant};

use crate::clock::{true_now, SimClock};
use crate::disk::{SimDisk, SimDiskSeam};
use crate::net::{NetKnobs, SimListener, SimTransport};
use crate::rules;
use crate::scenario::{self, Scenario, EPOCH_UNIX_MS, FEATURE, VERSION};
use crate::trace::{Shared, TraceObserver, Whose};

/// Where the run is; the runner moves it forward, the machines read it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Programs check seats out and in; faults come and go.
    Work = 0,
    /// Programs give their seats back and stop.
    Stop = 1,
    /// The administrator checks out every seat.
    Probe = 2,
    /// The probe is over.
    Done = 3,
}

/// What every machine of a run shares.
pub struct Ctx {
    pub seed: u64,
    pub scenario: Scenario,
    pub trace: Shared,
    pub phase: AtomicU64,
    pub mutations: Mutations,
    pub dir: std::path::PathBuf,
    /// Per host name: the knobs of its outgoing requests.
    pub knobs: std::collections::BTreeMap<String, Arc<NetKnobs>>,
    pub client_hosts: Vec<String>,
    pub admin: bool,
    /// Programs started and not yet ended (or killed with their machine).
    pub programs_running: AtomicU64,
}

/// Counts a program in [`Ctx::programs_running`] until it ends or its
/// machine dies.
struct ProgramRunning(Arc<Ctx>);

impl ProgramRunning {
    fn start(ctx: &Arc<Ctx>) -> ProgramRunning {
        ctx.programs_running.fetch_add(1, Ordering::SeqCst);
        ProgramRunning(ctx.clone())
    }
}

impl Drop for ProgramRunning {
    fn drop(&mut self) {
        self.0.programs_running.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Ctx {
    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::SeqCst) {
            0 => Phase::Work,
            1 => Phase::Stop,
            2 => Phase::Probe,
            _ => Phase::Done,
        }
    }

    pub fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u64, Ordering::SeqCst);
    }

    fn addresses(&self) -> Vec<String> {
        self.scenario.servers.iter().map(|s| s.address()).collect()
    }

    fn transport(&self, host: &str, stream: u64) -> Arc<SimTransport> {
        let knobs = self.knobs.get(host).cloned().unwrap_or_default();
        let rng = StdRng::seed_from_u64(mix(self.seed, host, stream));
        Arc::new(SimTransport::new(rng, knobs))
    }
}

/// A seed for one random stream of one host: the run's seed, the host, a number.
pub fn mix(seed: u64, host: &str, stream: u64) -> u64 {
    let mut value = seed ^ 0x9e37_79b9_7f4a_7c15 ^ stream.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    for byte in host.bytes() {
        value = (value ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    value
}

/// True time at which the SDK's `instant` (on this host's clock) falls.
fn to_true(instant: Instant) -> Duration {
    let now = Instant::now();
    let now_true = true_now();
    if instant >= now {
        now_true + (instant - now)
    } else {
        now_true.saturating_sub(now - instant)
    }
}

// ----- servers -----

/// One boot of server `index`: the real server on simulated seams.
pub async fn server(
    ctx: Arc<Ctx>,
    index: usize,
    disk: Arc<SimDisk>,
    control_lag_ms: Arc<AtomicU64>,
    boots: Arc<AtomicU64>,
) -> turmoil::Result {
    let spec = ctx.scenario.servers[index].clone();
    let boot = boots.fetch_add(1, Ordering::SeqCst);
    let config = ctx.scenario.server_config(&spec, &ctx.dir);
    let ids = Arc::new(AtomicU64::new(0));
    let id_prefix = format!("{}{}", spec.id.to_lowercase(), boot);
    let mut clock_rng = StdRng::seed_from_u64(mix(ctx.seed, &spec.host, 1000 + boot));
    let seams = Seams {
        // A restarted process's monotonic clock starts anywhere.
        clock: Arc::new(SimClock::new(
            clock_rng.gen_range(0..1_000_000),
            spec.rate_ppm,
            EPOCH_UNIX_MS,
        )),
        transport: ctx.transport(&spec.host, boot),
        disk: Arc::new(SimDiskSeam(disk)),
        grant_ids: Arc::new(move || {
            format!("{id_prefix}-{}", ids.fetch_add(1, Ordering::SeqCst)).into()
        }),
        observer: Some(Arc::new(TraceObserver(ctx.trace.clone()))),
        mutations: ctx.mutations,
        hostid: spec.hostid.clone(),
        answer_key_seed: clock_rng.gen(),
        control_lag_ms,
    };
    ctx.trace.lock().note(
        &spec.id,
        &format!("boot {boot}, clock rate +{} ppm", spec.rate_ppm),
    );
    let started = tessera_server::start_with(
        config,
        seams,
        |address: String| async move { SimListener::bind(&address).await },
        std::future::pending(),
    )
    .await;
    match started {
        Ok(running) => {
            let _ = running.done.await;
        }
        Err(err) => ctx.trace.lock().violate(
            "restart",
            format!("server {} did not start: {err}", spec.id),
        ),
    }
    Ok(())
}

// ----- programs -----

/// A client machine: its share of the programs, all started at boot.
pub async fn client_machine(
    ctx: Arc<Ctx>,
    host_index: usize,
    boots: Arc<AtomicU64>,
) -> turmoil::Result {
    let boot = boots.fetch_add(1, Ordering::SeqCst);
    let host = ctx.client_hosts[host_index].clone();
    let mut programs = JoinSet::new();
    let servers = ctx.scenario.servers.len();
    for index in (host_index..ctx.scenario.programs).step_by(ctx.client_hosts.len()) {
        let name = format!("{host}/p{index}.{boot}");
        let mut rng = StdRng::seed_from_u64(mix(ctx.seed, &name, 0));
        // Half the programs prefer the first server: skewed load makes the
        // servers borrow from each other.
        let mut order = ctx.addresses();
        if rng.gen_bool(0.5) {
            order.rotate_left(index % servers);
        }
        let mut config = ClientConfig::new(order);
        config.client_id = name.replace(['/', '.'], "-");
        config.user = config.client_id.clone();
        if ctx.scenario.rules.is_some() {
            // Users the rules name, so they bite; each program a device of
            // its own, or programs of one user would share one temporary
            // license (a ticket holds one license per device).
            let mut users = StdRng::seed_from_u64(mix(ctx.seed, "user", index as u64));
            config.user = rules::user_of(&mut users).to_string();
            config.device = format!("dev-{}", config.client_id);
        }
        config.host = host.clone();
        // Programs check every answer against the vendor's key, as shipped programs do.
        config.trust = Trust::Vendor(vec![ctx.scenario.vendor()]);
        config.clock_file = None;
        config.temporary_dir = None;
        config.wall_clock = sim_wall_clock();
        let whose = Whose::new(&config.user, &config.host);
        let client =
            Client::with_transport(config, ctx.transport(&host, 1 + index as u64 * 100 + boot))
                .expect("a valid client configuration");
        let running = ProgramRunning::start(&ctx);
        let program = program(ctx.clone(), name, whose, client, rng);
        programs.spawn(async move {
            let _running = running;
            program.await;
        });
    }
    while programs.join_next().await.is_some() {}
    Ok(())
}

/// How a program gives a seat back.
enum Ending {
    Release,
    Drop,
}

/// Checks a seat out, holds it a while, gives it back; again, until told to stop.
/// The programs' wall clock: the simulation's true time from its epoch
/// (servers' clocks drift from it by parts per million).
fn sim_wall_clock() -> tessera_client::WallClock {
    tessera_client::WallClock::new(|| EPOCH_UNIX_MS + true_now().as_millis() as i64)
}

/// A temporary license (seed 004) instead of a seat: believed from its
/// answer until it is returned (or dropped, which returns it), never past
/// its expiry.
async fn temporary(ctx: &Ctx, name: &str, client: &Client, rng: &mut StdRng) {
    let license = match client.activate(FEATURE, VERSION, None).await {
        Ok(license) => license,
        Err(err) => {
            ctx.trace.lock().refused(name, &err);
            sleep(Duration::from_millis(rng.gen_range(100..700))).await;
            return;
        }
    };
    let token = license.token();
    let until = Duration::from_millis((token.expires_unix_ms - EPOCH_UNIX_MS).max(0) as u64);
    ctx.trace.lock().temporary(
        name,
        // The pool counts a temporary license as its ticket's on its device.
        &Whose::new(&token.ticket, &token.device),
        &token.license_id,
        token.seats,
        &token.server_id,
        until,
    );
    let hold_until = Instant::now() + Duration::from_millis(rng.gen_range(200..4_000));
    while Instant::now() < hold_until && ctx.phase() == Phase::Work {
        sleep(Duration::from_millis(100)).await;
    }
    if rng.gen_bool(0.75) {
        ctx.trace.lock().ended(&token.license_id, until, "returned");
        let _ = license.return_license().await;
    } else {
        ctx.trace.lock().ended(&token.license_id, until, "dropped");
        drop(license);
    }
}

async fn program(ctx: Arc<Ctx>, name: String, whose: Whose, client: Client, mut rng: StdRng) {
    const CHECKOUTS_MAX: usize = 10_000;
    for _ in 0..CHECKOUTS_MAX {
        if ctx.phase() != Phase::Work {
            return;
        }
        if rng.gen_bool(0.08) {
            temporary(&ctx, &name, &client, &mut rng).await;
            continue;
        }
        let count = if rng.gen_bool(0.15) { 2 } else { 1 };
        let seat = match client.checkout(FEATURE, VERSION, count).await {
            Ok(seat) => seat,
            Err(err) => {
                ctx.trace.lock().refused(&name, &err);
                sleep(Duration::from_millis(rng.gen_range(100..700))).await;
                continue;
            }
        };
        let grant = seat.grant_id();
        ctx.trace.lock().granted(
            &name,
            &whose,
            &grant,
            count,
            &seat.server_id(),
            to_true(seat.valid_until()),
        );
        let hold_ms = if rng.gen_bool(0.1) {
            rng.gen_range(3_000..9_000)
        } else {
            rng.gen_range(200..2_500)
        };
        let ending = if rng.gen_bool(0.75) {
            Ending::Release
        } else {
            Ending::Drop
        };
        let lost = hold(
            &ctx,
            &grant,
            &seat,
            Instant::now() + Duration::from_millis(hold_ms),
        )
        .await;
        let until = to_true(seat.valid_until());
        match (lost, ending) {
            (Some(reason), _) => ctx
                .trace
                .lock()
                .ended(&grant, until, &format!("lost ({reason})")),
            (None, Ending::Release) => {
                ctx.trace.lock().ended(&grant, until, "released");
                let _ = seat.release().await;
            }
            (None, Ending::Drop) => {
                ctx.trace.lock().ended(&grant, until, "dropped");
                drop(seat);
            }
        }
        sleep(Duration::from_millis(rng.gen_range(0..300))).await;
    }
}

/// Holds until `until`, the stop, or the seat's loss; records every renewal
/// and fail-over the program sees. Returns the reason if the seat was lost.
async fn hold(ctx: &Ctx, grant: &str, seat: &SeatGuard, until: Instant) -> Option<String> {
    let work = || async move {
        tokio::select! {
            biased;
            () = sleep_until(until) => ControlFlow::Break(()),
            () = sleep(Duration::from_millis(100)) => {
                if ctx.phase() != Phase::Work {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            }
        }
    };
    seat.hold_while(work, |server_id, valid_until| {
        ctx.trace
            .lock()
            .held(grant, server_id, to_true(valid_until));
    })
    .await
}

// ----- the administrator -----

/// Changes the pool now and then while programs work, then probes.
pub async fn admin(ctx: Arc<Ctx>, boots: Arc<AtomicU64>) -> turmoil::Result {
    let boot = boots.fetch_add(1, Ordering::SeqCst);
    let mut rng = StdRng::seed_from_u64(mix(ctx.seed, "admin", boot));
    let transport = ctx.transport("admin", boot);
    let mut extra_codes: Vec<LicenseCode> = Vec::new();
    while ctx.phase() == Phase::Work {
        sleep(Duration::from_millis(rng.gen_range(2_000..5_000))).await;
        if !ctx.admin || ctx.phase() != Phase::Work {
            continue;
        }
        change_pool(&ctx, &mut rng, transport.as_ref(), &mut extra_codes).await;
    }
    while ctx.phase() < Phase::Probe {
        sleep(Duration::from_millis(50)).await;
    }
    probe(&ctx, boot).await;
    ctx.set_phase(Phase::Done);
    Ok(())
}

const ADMIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Most codes the administrator adds in one run.
const EXTRA_CODES_MAX: usize = 3;

async fn change_pool(
    ctx: &Ctx,
    rng: &mut StdRng,
    transport: &dyn HttpTransport,
    extra_codes: &mut Vec<LicenseCode>,
) {
    let servers = &ctx.scenario.servers;
    let address = servers[rng.gen_range(0..servers.len())].address();
    let limit = ctx.trace.lock().hard_limit_now();
    // With host-bound codes the administrator only moves the codes' seats.
    let (choice, nominal) = if ctx.scenario.host_codes {
        (0, limit * ctx.scenario.codes.len() as u32)
    } else {
        (rng.gen_range(0..3), limit)
    };
    let (what, outcome) = match choice {
        0 => {
            let split = scenario::random_distribution(rng, servers, nominal).unwrap_or_default();
            let body = SetDistribution {
                feature: FEATURE.into(),
                servers: split.clone(),
                expected_sequence: None,
            };
            let outcome = post(transport, &address, "/v1/admin/distribution", &body).await;
            (format!("set distribution {split:?}"), outcome)
        }
        1 if extra_codes.len() < EXTRA_CODES_MAX => {
            let id = format!("app-extra-{}", extra_codes.len() + 1);
            let seats = rng.gen_range(1..=3);
            let code = scenario::sign(&ctx.scenario.key, &id, seats, ctx.scenario.lease_s);
            extra_codes.push(code.clone());
            let to = rng
                .gen_bool(0.5)
                .then(|| servers[rng.gen_range(0..servers.len())].id.clone());
            let body = AddLicense {
                text: LicenseCode::write_file(&[code]),
                server: to.clone(),
                expected_sequence: None,
            };
            let outcome = post(transport, &address, "/v1/admin/license", &body).await;
            (format!("add license {id} to {to:?}"), outcome)
        }
        _ => {
            let sequence = match get_status(transport, &address).await {
                Some(status) => status.pool_sequence,
                None => return,
            };
            let mut codes = ctx.scenario.codes.clone();
            codes.extend(extra_codes.iter().cloned());
            let distribution = scenario::random_distribution(rng, servers, limit);
            let text = scenario::pool_text(
                sequence + 1,
                servers,
                &distribution,
                &codes,
                ctx.scenario.policy_text(),
            );
            let outcome = post(
                transport,
                &address,
                "/v1/admin/pool-file",
                &PoolFileUpdate { text },
            )
            .await;
            (format!("pool file sequence {}", sequence + 1), outcome)
        }
    };
    let mut trace = ctx.trace.lock();
    if outcome.starts_with("200") {
        trace.counts.admin_changes += 1;
    }
    trace.note("admin", &format!("{what} via {address}: {outcome}"));
}

async fn post<T: Serialize>(
    transport: &dyn HttpTransport,
    address: &str,
    path: &str,
    body: &T,
) -> String {
    let request = HttpRequest {
        method: Method::Post,
        address: address.to_string(),
        path: path.to_string(),
        headers: vec![
            ("content-type".into(), "application/json".into()),
            (tessera_proto::POOL_HEADER.into(), scenario::POOL_ID.into()),
            scenario::admin_authorization(),
        ],
        body: serde_json::to_vec(body).expect("admin requests serialize"),
        timeout: ADMIN_TIMEOUT,
        answer_bytes_max: 1 << 20,
    };
    match transport.send(request).await {
        Ok(answer) => {
            let text = String::from_utf8_lossy(&answer.body);
            format!("{} {}", answer.status, crate::short(&text, 160))
        }
        Err(err) => format!("no answer: {err}"),
    }
}

async fn get_status(transport: &dyn HttpTransport, address: &str) -> Option<StatusResponse> {
    let request = HttpRequest {
        method: Method::Get,
        address: address.to_string(),
        path: "/v1/status".into(),
        headers: vec![
            (tessera_proto::POOL_HEADER.into(), scenario::POOL_ID.into()),
            scenario::admin_authorization(),
        ],
        body: Vec::new(),
        timeout: ADMIN_TIMEOUT,
        answer_bytes_max: 16 << 20,
    };
    let answer = transport.send(request).await.ok()?;
    serde_json::from_slice(&answer.body).ok()
}

// ----- the probe -----

/// Longest the probe may take to check out every seat once the faults healed.
pub const PROBE_BOUND: Duration = Duration::from_secs(20);

/// After the faults have healed and the programs stopped: every seat of the
/// hard limit can be checked out within [`PROBE_BOUND`], and not one more.
async fn probe(ctx: &Ctx, boot: u64) {
    let limit = ctx.trace.lock().hard_limit_now();
    let servers = ctx.scenario.servers.len();
    let started = Instant::now();
    let deadline = started + PROBE_BOUND;
    let mut seats = Vec::new();
    let mut last_error = String::new();
    // Under rules, seats a reserve keeps go only to those it counts: the
    // probe asks as a user no rule names, and as these when the rules
    // refuse that one.
    let reserved_users = ctx
        .scenario
        .rules_policy()
        .map_or_else(Vec::new, |(policy, _)| rules::reserved_users(&policy));
    let client_for = |index: u32, user: Option<&str>| {
        let mut order = ctx.addresses();
        order.rotate_left(index as usize % servers);
        let mut config = ClientConfig::new(order);
        config.client_id = format!("probe-{index}");
        config.user = user.map_or_else(|| config.client_id.clone(), str::to_string);
        config.host = "admin".into();
        config.trust = Trust::Vendor(vec![ctx.scenario.vendor()]);
        config.clock_file = None;
        config.wall_clock = sim_wall_clock();
        Client::with_transport(
            config,
            ctx.transport("admin", 10_000 + u64::from(index) + boot),
        )
        .expect("a valid client configuration")
    };
    // Seats out as temporary licenses (seed 004) are the pool's until
    // returned or expired; they are not free, and the probe must not get them.
    // Where servers serve part of the codes, a license took more allocation
    // than its seats, and each seat of allocation out costs at most one
    // servable seat: the probe then asks for what is certainly left, and
    // the over-issue checker judges the rest.
    let temporary_out = || async {
        match client_for(0, None).status().await {
            Ok(status) => status
                .features
                .iter()
                .find(|f| f.feature == FEATURE)
                .map_or((0, 0), |f| (f.temporary_seats, f.temporary_allocation)),
            Err(_) => (0, 0),
        }
    };
    let out = temporary_out().await;
    let (out_seats, out_allocation) = out;
    let exact = out_allocation <= out_seats;
    let full_limit = limit;
    let limit = limit.saturating_sub(out_allocation.max(out_seats));
    let out = out_seats;
    let mut index = 0;
    while index < limit && Instant::now() < deadline {
        let users = std::iter::once(None).chain(reserved_users.iter().copied().map(Some));
        let mut taken = false;
        for user in users {
            let client = client_for(index, user);
            match client.checkout(FEATURE, VERSION, 1).await {
                Ok(seat) => {
                    let name = format!("probe/{index}");
                    let user = user.map_or_else(|| format!("probe-{index}"), str::to_string);
                    ctx.trace.lock().granted(
                        &name,
                        &Whose::new(&user, "admin"),
                        &seat.grant_id(),
                        1,
                        &seat.server_id(),
                        to_true(seat.valid_until()),
                    );
                    seats.push(seat);
                    index += 1;
                    taken = true;
                    break;
                }
                Err(err) => {
                    last_error = err.to_string();
                    // Refused by the rules: another user may have the seat.
                    if rules::refusal(&err).is_none() {
                        break;
                    }
                }
            }
        }
        if !taken {
            sleep(Duration::from_millis(200)).await;
        }
    }
    let took = Instant::now() - started;
    if index < limit {
        ctx.trace.lock().violate(
            "liveness",
            format!(
                "after the faults healed, only {index} of {limit} free seats ({out} of \
                 {full_limit} out as temporary licenses) were checked out within {} s; the last \
                 refusal: {last_error}",
                PROBE_BOUND.as_secs()
            ),
        );
    } else if temporary_out().await.0 != out || !exact {
        ctx.trace.lock().note(
            "probe",
            &format!("all {limit} free seats checked out; temporary licenses came back meanwhile"),
        );
    } else {
        let extra = client_for(limit, None).checkout(FEATURE, VERSION, 1).await;
        let mut trace = ctx.trace.lock();
        match extra {
            Err(err) if err.code() == Some(ErrorCode::NoSeatsAvailable) => {
                trace.note(
                    "probe",
                    &format!(
                        "all {limit} seats checked out in {:.3} s, one more refused",
                        took.as_secs_f64()
                    ),
                );
            }
            Err(err) => trace.note("probe", &format!("one more than the limit refused: {err}")),
            Ok(seat) => {
                let grant = seat.grant_id();
                trace.granted(
                    "probe/extra",
                    &Whose::new(&format!("probe-{limit}"), "admin"),
                    &grant,
                    1,
                    &seat.server_id(),
                    to_true(seat.valid_until()),
                );
                trace.violate(
                    "liveness",
                    format!(
                        "the probe got seat {} of a hard limit of {limit}",
                        limit + 1
                    ),
                );
                seats.push(seat);
            }
        }
    }
    for seat in seats {
        let grant = seat.grant_id();
        ctx.trace
            .lock()
            .ended(&grant, to_true(seat.valid_until()), "released");
        let _ = seat.release().await;
    }
}
