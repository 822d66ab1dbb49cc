//! The Tessera license server as a library: [`run`] a server from a
//! [`ServerConfig`] until a shutdown future resolves.
//!
//! Layout: [`http`] parses and answers requests; [`issuer`] decides (pure,
//! under one mutex); [`store`] makes new grants durable; [`clock`] is the
//! time seam. See ARCHITECTURE.md.

pub mod api;
pub mod balance;
pub mod clock;
pub mod config;
pub mod copies;
pub mod hostid;
pub mod issuer;
pub mod pool;
pub mod refusal;
pub mod seams;
pub mod service;
pub mod store;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use tessera_core::{CivilDate, ControlState, LicenseTable, PoolFile};
use tessera_proto as proto;
use tokio::net::TcpListener;

use crate::clock::Clock;
use crate::config::Limits;
pub use crate::config::ServerConfig;
use crate::issuer::{Issuer, IssuingState};
use crate::pool::Pool;
pub use crate::seams::Seams;
use crate::store::Store;

/// Why a server could not start. Each message names the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("config {path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error("pool file {path}: {message}")]
    PoolFile { path: PathBuf, message: String },
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("cannot listen on {address}: {message}")]
    Listen { address: String, message: String },
    #[error(transparent)]
    Pool(#[from] pool::PoolStartError),
}

/// Shared state of a running server.
pub struct App {
    issuer: Mutex<Issuer>,
    store: Store,
    pool: Arc<Pool>,
    clock: Arc<dyn Clock>,
    limits: Limits,
    hostid: String,
    address: String,
    started_ms: u64,
    peer_secret: Option<String>,
    vendors: Vec<tessera_core::VendorPublicKey>,
    data_dir: PathBuf,
    /// Requests answered, by endpoint and outcome, for `/metrics`.
    requests: Mutex<std::collections::BTreeMap<(&'static str, &'static str), u64>>,
    timing: config::Timing,
    borrowing: std::collections::BTreeMap<String, tessera_core::BorrowPolicy>,
    /// One borrower per feature at a time.
    borrow_locks: Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Per feature: no borrow ahead of need before this (the last found nothing).
    borrow_quiet: Mutex<std::collections::HashMap<String, tokio::time::Instant>>,
    grant_ids: seams::IdSource,
    mutations: seams::Mutations,
    /// Stale copies of grants to tell the pool about with the next report.
    superseded: Mutex<copies::Outbox>,
    /// Bumped whenever seats may have come free here (a control state taken,
    /// a check-in, a lapse, a stale copy dropped): checkouts waiting for
    /// seats wait on it.
    seats_changed: tokio::sync::watch::Sender<u64>,
    /// How regularly the quota lease was renewed, for `/metrics`.
    quota_renewals: Mutex<QuotaRenewals>,
}

/// The quota loop's record: renewals, and the longest time between two
/// (a gap near `quota_lease_ms` means the lease nearly lapsed).
#[derive(Clone, Copy, Debug, Default)]
struct QuotaRenewals {
    count: u64,
    last_ms: Option<u64>,
    gap_max_ms: u64,
}

impl QuotaRenewals {
    fn renewed(&mut self, now_ms: u64) {
        if let Some(last_ms) = self.last_ms {
            self.gap_max_ms = self.gap_max_ms.max(now_ms.saturating_sub(last_ms));
        }
        self.last_ms = Some(now_ms);
        self.count += 1;
    }
}

impl App {
    /// Wakes the checkouts waiting for seats of this server.
    fn seats_freed(&self) {
        self.seats_changed
            .send_modify(|generation| *generation += 1);
    }

    /// Grants that left the key table (checked in, lapsed, dropped as stale,
    /// undone): wakes the checkouts waiting for their seats, then deletes
    /// them from the store.
    async fn released(&self, released: Vec<issuer::Released>) {
        if released.is_empty() {
            return;
        }
        self.seats_freed();
        for grant in released {
            self.store
                .delete(grant.grant_id, grant.issued_unix_ms)
                .await;
        }
    }

    /// The issuer, locked. Never held across an `.await`.
    fn issuer(&self) -> MutexGuard<'_, Issuer> {
        // A panic while holding the lock would be a bug; the state is still
        // the last consistent one, since every method applies all or nothing.
        self.issuer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn licenses_for(&self, control: &ControlState) -> LicenseTable {
        let today = CivilDate::from_unix_ms(self.clock.unix_ms());
        let codes = control
            .pool()
            .map(|p| p.codes.as_slice())
            .unwrap_or_default();
        LicenseTable::evaluate(codes, &self.vendors, &self.hostid, today)
    }

    fn status(&self) -> proto::StatusResponse {
        let now_ms = self.clock.now_ms();
        let pool_file = self.pool.pool_file();
        let leader_id = self.pool.leader().map(|(id, _)| id);
        let role = self.pool.role();
        let peers = self.pool.peer_statuses();
        let issuer = self.issuer();
        let state = issuer.state(now_ms);
        let server_id = self.pool.server_id.clone();
        let features = issuer
            .licenses()
            .features()
            .map(|feature| self.feature_status(&issuer, feature))
            .collect();
        // The oldest grants, chosen before any is described: a server may
        // hold a million, and the status lists at most STATUS_GRANTS_MAX.
        let mut oldest: Vec<(&String, &issuer::LiveGrant)> = issuer.grants().collect();
        if oldest.len() > proto::STATUS_GRANTS_MAX {
            oldest.select_nth_unstable_by(proto::STATUS_GRANTS_MAX, |a, b| {
                a.1.issued_at_ms
                    .cmp(&b.1.issued_at_ms)
                    .then_with(|| a.0.cmp(b.0))
            });
            oldest.truncate(proto::STATUS_GRANTS_MAX);
        }
        let mut grants: Vec<proto::GrantStatus> = oldest
            .into_iter()
            .map(|(grant_id, grant)| proto::GrantStatus {
                grant_id: grant_id.clone(),
                feature: grant.request.feature.clone(),
                count: grant.request.count,
                client_id: grant.request.client_id.clone(),
                user: grant.request.user.clone(),
                host: grant.request.host.clone(),
                version: grant.request.version.clone(),
                age_ms: now_ms.saturating_sub(grant.issued_at_ms),
                expires_in_ms: grant.expires_at_ms.saturating_sub(now_ms),
            })
            .collect();
        grants.sort_by(|a, b| b.age_ms.cmp(&a.age_ms).then(a.grant_id.cmp(&b.grant_id)));
        grants.truncate(proto::STATUS_GRANTS_MAX);
        proto::StatusResponse {
            pool_id: pool_file.pool_id.clone(),
            pool_sequence: issuer.pool().map_or(0, |p| p.sequence),
            server: proto::ServerStatus {
                id: server_id,
                address: self.address.clone(),
                role: role.into(),
                leader_id,
                state: match state {
                    IssuingState::Serving => "serving",
                    IssuingState::Grace { .. } => "grace",
                    IssuingState::NoQuorum => "no_quorum",
                }
                .into(),
                software_version: env!("CARGO_PKG_VERSION").into(),
                uptime_ms: now_ms.saturating_sub(self.started_ms),
                grace_remaining_ms: match state {
                    IssuingState::Grace { until_ms } => Some(until_ms - now_ms),
                    _ => None,
                },
                hostid: self.hostid.clone(),
            },
            servers: peers,
            features,
            grants,
            grants_total: (issuer.grants_total() + issuer.restored_pending()) as u64,
        }
    }

    /// Prometheus text exposition of this server's state.
    fn metrics(&self) -> String {
        use std::fmt::Write as _;
        let status = self.status();
        let server = &status.server;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# TYPE tessera_leader gauge\ntessera_leader {}",
            u8::from(server.role == "leader")
        );
        let _ = writeln!(
            out,
            "# TYPE tessera_serving gauge\ntessera_serving {}",
            u8::from(server.state == "serving")
        );
        let _ = writeln!(
            out,
            "# TYPE tessera_pool_sequence gauge\ntessera_pool_sequence {}",
            status.pool_sequence
        );
        let _ = writeln!(
            out,
            "# TYPE tessera_grants gauge\ntessera_grants {}",
            status.grants_total
        );
        let _ = writeln!(
            out,
            "# TYPE tessera_servers_up gauge\ntessera_servers_up {}",
            status.servers.iter().filter(|p| p.up).count()
        );
        let _ = writeln!(out, "# TYPE tessera_hard_limit gauge");
        for f in &status.features {
            let _ = writeln!(
                out,
                "tessera_hard_limit{{feature=\"{}\"}} {}",
                f.feature, f.hard_limit
            );
        }
        let _ = writeln!(out, "# TYPE tessera_seats_allocated gauge");
        let _ = writeln!(out, "# TYPE tessera_seats_in_use gauge");
        for f in &status.features {
            for row in f.servers.iter().filter(|r| r.in_use.is_some()) {
                let labels = format!("feature=\"{}\",server=\"{}\"", f.feature, row.server_id);
                let _ = writeln!(
                    out,
                    "tessera_seats_allocated{{{labels}}} {}",
                    row.allocation
                );
                let _ = writeln!(
                    out,
                    "tessera_seats_in_use{{{labels}}} {}",
                    row.in_use.unwrap_or(0)
                );
            }
        }
        let _ = writeln!(out, "# TYPE tessera_seats_reserved gauge");
        let _ = writeln!(out, "# TYPE tessera_borrows_total counter");
        let _ = writeln!(out, "# TYPE tessera_seats_moved_in_total counter");
        let _ = writeln!(out, "# TYPE tessera_seats_moved_out_total counter");
        for f in &status.features {
            for row in &f.servers {
                let labels = format!("feature=\"{}\",server=\"{}\"", f.feature, row.server_id);
                let _ = writeln!(out, "tessera_seats_reserved{{{labels}}} {}", row.reserved);
                let _ = writeln!(out, "tessera_borrows_total{{{labels}}} {}", row.borrows);
                let _ = writeln!(
                    out,
                    "tessera_seats_moved_in_total{{{labels}}} {}",
                    row.seats_in
                );
                let _ = writeln!(
                    out,
                    "tessera_seats_moved_out_total{{{labels}}} {}",
                    row.seats_out
                );
            }
        }
        let renewals = *self
            .quota_renewals
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(
            out,
            "# TYPE tessera_quota_renewals_total counter\ntessera_quota_renewals_total {}",
            renewals.count
        );
        let _ = writeln!(
            out,
            "# TYPE tessera_quota_renewal_gap_max_ms gauge\ntessera_quota_renewal_gap_max_ms {}",
            renewals.gap_max_ms
        );
        let _ = writeln!(out, "# TYPE tessera_requests_total counter");
        let counts = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        for ((endpoint, outcome), count) in counts.iter() {
            let _ = writeln!(
                out,
                "tessera_requests_total{{endpoint=\"{endpoint}\",outcome=\"{outcome}\"}} {count}"
            );
        }
        out
    }

    /// One feature's row set: this server's own row from its table; on the
    /// leader, every other server's in-use from its last report.
    fn feature_status(
        &self,
        issuer: &Issuer,
        feature: &tessera_core::FeatureLicense,
    ) -> proto::FeatureStatus {
        let terms = issuer.terms(&feature.feature);
        let table = issuer.table(&feature.feature);
        let allocation = issuer
            .control()
            .and_then(|c| c.allocation(&feature.feature));
        let own_id = &self.pool.server_id;
        let rows: Vec<proto::DistributionRow> = table
            .map(|t| {
                t.rows()
                    .map(|(server_id, row)| {
                        let in_use = if server_id == own_id {
                            Some(row.in_use)
                        } else {
                            self.pool.reported_in_use(server_id, &feature.feature)
                        };
                        let moved = allocation
                            .and_then(|a| a.moved.get(server_id))
                            .copied()
                            .unwrap_or_default();
                        let reserved = allocation.map_or(0, |a| a.reserved(server_id));
                        proto::DistributionRow {
                            server_id: server_id.to_string(),
                            allocation: row.allocation,
                            in_use,
                            available: in_use
                                .map(|n| row.allocation.saturating_sub(n).saturating_sub(reserved)),
                            reserved,
                            target: allocation.and_then(|a| a.targets.get(server_id).copied()),
                            borrows: moved.borrows,
                            seats_in: moved.seats_in,
                            seats_out: moved.seats_out,
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        let free_pool = table.map_or(0, |t| t.free_pool());
        let pool_available = free_pool + rows.iter().map(|r| r.available.unwrap_or(0)).sum::<u32>();
        proto::FeatureStatus {
            feature: feature.feature.clone(),
            vendor: feature.vendor.clone(),
            hard_limit: feature.hard_limit,
            free_pool: allocation.map_or(free_pool, |a| {
                free_pool.min(a.free_pool + a.parked.values().sum::<u32>())
            }),
            pool_available,
            lease_ms: terms.map_or(0, |t| t.lease_ms),
            heartbeat_interval_ms: terms.map_or(0, |t| t.heartbeat_interval_ms),
            borrow_threshold_percent: self.borrow_policy_in(issuer, &feature.feature).0,
            pending_requests: allocation.map_or(0, |a| a.requests.len() as u32),
            servers: rows,
            codes: feature
                .codes
                .iter()
                .map(|verdict| {
                    let fields = verdict.code.fields();
                    proto::CodeStatus {
                        id: fields.id.clone(),
                        vendor: fields.vendor.clone(),
                        seats: fields.seats,
                        version_min: fields.version_min.to_string(),
                        version_max: fields.version_max.to_string(),
                        expiry: fields.expiry.to_string(),
                        hostid: fields.hostid.to_string(),
                        served: verdict.not_served.is_none(),
                        reason: verdict.not_served.as_ref().map(|r| r.to_string()),
                    }
                })
                .collect(),
        }
    }
}

/// A started server: its address, and the task serving it.
pub struct Running {
    pub address: SocketAddr,
    pub done: tokio::task::JoinHandle<()>,
}

/// The installed copy of the pool file in the data directory.
const INSTALLED_POOL_FILE: &str = "installed-pool.toml";
/// Longest wait at start for the local pool log to be applied again.
const REPLAY_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Starts a server and returns once it listens; it serves until `shutdown` resolves.
pub async fn start(
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Running, StartError> {
    let bind = |address: String| async move {
        let listener = TcpListener::bind(&address).await?;
        let local = listener.local_addr()?;
        use axum::serve::ListenerExt;
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        Ok((listener, local))
    };
    start_with(config, Seams::production(), bind, shutdown).await
}

/// [`start`] on the given seams, listening with `bind` (which gets the
/// address to listen on and returns the listener and its local address).
pub async fn start_with<L, B, F>(
    config: ServerConfig,
    seams: Seams,
    bind: B,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Running, StartError>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
    B: FnOnce(String) -> F,
    F: Future<Output = std::io::Result<(L, SocketAddr)>>,
{
    let clock = seams.clock.clone();
    if config.recover_pool {
        pool::recovery::set_log_aside(&config.data_dir, clock.unix_ms())?;
    }
    let (pool_file, pool_text) = load_pool_file(&config)?;
    let Some(own_entry) = pool_file.server(&config.server_id).cloned() else {
        return Err(StartError::PoolFile {
            path: config.pool_file.clone(),
            message: format!(
                "server_id `{}` of the config is not among the pool's servers ({})",
                config.server_id,
                pool_file.server_ids().join(", ")
            ),
        });
    };
    let hostid = config
        .hostid
        .clone()
        .or_else(hostid::machine_hostid)
        .unwrap_or_else(|| "unknown".to_string());
    let (store, opened) = Store::open_on(
        &seams.disk,
        &config.data_dir,
        &pool_file.pool_id,
        &config.server_id,
        config.timing.store_batch_max,
    )?;
    let now_ms = clock.now_ms();
    tracing::info!(
        "read {} grants from {}",
        opened.grants.len(),
        config.data_dir.display()
    );
    if let Some(observer) = &seams.observer {
        let ids: Vec<String> = opened.grants.iter().map(|(id, _)| id.clone()).collect();
        observer.restored(&config.server_id, &ids);
    }
    let mut issuer = Issuer::new(
        config.server_id.clone(),
        config.limits,
        config.timing.clock_drift_percent,
        opened.grants,
        now_ms,
    );
    let pool = Pool::start(
        config.server_id.clone(),
        pool_file.clone(),
        pool_text,
        config.vendors.clone(),
        config.timing,
        config.peer_secret.clone(),
        &config.data_dir,
        &seams,
        config.recover_pool,
    )
    .await?;
    let pool = Arc::new(pool);
    // A returning server applies its own log before it serves, so that its
    // allocation and its restored grants are in place (seed FIG. 11).
    let committed = pool.raft.metrics().borrow().last_log_index.unwrap_or(0);
    if committed > 0 && !pool.wait_applied(committed, REPLAY_WAIT).await {
        tracing::warn!("the pool log was not applied again within {REPLAY_WAIT:?}");
    }
    if !opened.existed && config.grace_on_missing_store {
        // The longest lease is known once the codes are; until then the
        // longest any code may set.
        let grace_ms = config
            .timing
            .grace_ms
            .unwrap_or(u64::from(tessera_core::license::LEASE_S_MAX) * 1000);
        issuer.set_grace_until(Some(now_ms + grace_ms));
    }

    let listen = config.listen.clone().unwrap_or(own_entry.address.clone());
    let (listener, address) = bind(listen.clone())
        .await
        .map_err(|err| StartError::Listen {
            address: listen.clone(),
            message: err.to_string(),
        })?;
    let app = Arc::new(App {
        issuer: Mutex::new(issuer),
        store,
        pool: pool.clone(),
        clock: clock.clone(),
        limits: config.limits,
        hostid: hostid.clone(),
        address: own_entry.address.clone(),
        started_ms: now_ms,
        peer_secret: config.peer_secret.clone(),
        vendors: config.vendors.clone(),
        data_dir: config.data_dir.clone(),
        requests: Mutex::new(Default::default()),
        timing: config.timing,
        borrowing: config.borrowing.clone(),
        borrow_locks: Mutex::new(Default::default()),
        borrow_quiet: Mutex::new(Default::default()),
        grant_ids: seams.grant_ids.clone(),
        mutations: seams.mutations,
        superseded: Mutex::new(copies::Outbox::default()),
        seats_changed: tokio::sync::watch::Sender::new(0),
        quota_renewals: Mutex::new(QuotaRenewals::default()),
    });
    follow_control(
        &app,
        !opened.existed && config.grace_on_missing_store,
        &config,
    );
    let background = vec![
        spawn_sweeps(app.clone(), config.clone()),
        tokio::spawn(pool.clone().bootstrap()),
        tokio::spawn(pool.clone().learn_pool_term()),
        spawn_quota_loop(app.clone(), config.timing),
        spawn_membership_loop(pool.clone()),
        balance::spawn_answer_loop(app.clone()),
    ];
    let router = api::router(app.clone());
    let done = tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!("server stopped: {err}");
        }
        for task in background {
            task.abort();
        }
        let _ = app.pool.raft.shutdown().await;
    });
    tracing::info!("listening on {address}");
    Ok(Running { address, done })
}

/// Runs a server until `shutdown` resolves.
pub async fn run(
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let running = start(config, shutdown).await?;
    let _ = running.done.await;
    Ok(())
}

fn load_pool_file(config: &ServerConfig) -> Result<(PoolFile, String), StartError> {
    let pool_error = |message: String| StartError::PoolFile {
        path: config.pool_file.clone(),
        message,
    };
    let text = std::fs::read_to_string(&config.pool_file)
        .map_err(|err| pool_error(format!("cannot read it: {err}")))?;
    let pool = PoolFile::parse(&text).map_err(|err| pool_error(err.to_string()))?;
    // A copy installed by the pool earlier, if newer, is what this server last agreed to.
    let installed_path = config.data_dir.join(INSTALLED_POOL_FILE);
    if let Ok(installed_text) = std::fs::read_to_string(&installed_path) {
        if let Ok(installed) = PoolFile::parse(&installed_text) {
            if installed.pool_id == pool.pool_id && installed.sequence > pool.sequence {
                return Ok((installed, installed_text));
            }
        }
    }
    Ok((pool, text))
}

/// Applies every new control state to the issuer, and writes a newly
/// installed pool file to the data directory.
fn follow_control(app: &Arc<App>, grace: bool, config: &ServerConfig) {
    let app = app.clone();
    let mut applied = app.pool.applied.clone();
    let grace_ms = config.timing.grace_ms;
    tokio::spawn(async move {
        let mut written_sequence = None;
        let mut grace_fitted = !grace;
        loop {
            let control = applied.borrow_and_update().state.clone();
            if control.pool().is_some() {
                let licenses = app.licenses_for(&control);
                log_unserved(&licenses);
                let sequence = control.pool().map(|p| p.sequence);
                {
                    let mut issuer = app.issuer();
                    issuer.set_control(control.clone(), licenses);
                    if !grace_fitted {
                        // Now that the codes are known, the grace period is one longest hold.
                        let grace_ms = grace_ms.unwrap_or(issuer.longest_hold_ms());
                        issuer.set_grace_until(Some(app.started_ms + grace_ms));
                        grace_fitted = true;
                    }
                }
                app.seats_freed();
                if sequence != written_sequence {
                    if let Some(text) = control.pool_text() {
                        let path = app.data_dir.join(INSTALLED_POOL_FILE);
                        if let Err(err) = std::fs::write(&path, text) {
                            tracing::error!("cannot write {}: {err}", path.display());
                        }
                    }
                    written_sequence = sequence;
                }
            }
            if applied.changed().await.is_err() {
                return;
            }
        }
    });
}

fn log_unserved(licenses: &LicenseTable) {
    for feature in licenses.features() {
        for verdict in &feature.codes {
            if let Some(reason) = &verdict.not_served {
                tracing::warn!("license code {} is not served: {reason}", verdict.code.id());
            }
        }
    }
}

/// Every server: report in-use counts to the leader; an acknowledged report
/// renews the quota lease from its send time, once the log is applied as far
/// as the leader says.
fn spawn_quota_loop(app: Arc<App>, timing: config::Timing) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let interval = std::time::Duration::from_millis(timing.quota_report_interval_ms);
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        if app.mutations.issue_without_quorum {
            // The deliberate bug of `Mutations::issue_without_quorum`.
            app.issuer().set_quota(u64::MAX);
        }
        let mut report_now = false;
        loop {
            // A new leader is reported to at once, not at the next tick: the
            // quota lease must outlast the leader change.
            let leader = app.pool.leader_node();
            if !report_now {
                tokio::select! {
                    _ = ticker.tick() => {}
                    () = app.pool.leader_changed_from(leader) => ticker.reset(),
                }
            }
            report_now = false;
            let leader = app.pool.leader_node();
            let sent_ms = app.clock.now_ms();
            let in_use = app.issuer().in_use_counts();
            let superseded = app
                .superseded
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            // A report to a leader that stopped answering (SIGSTOP, a cut
            // link) is given up as soon as another leader is known, and the
            // new one is reported to at once.
            let answer = tokio::select! {
                answer = app.pool.report(in_use, superseded.clone()) => answer,
                () = app.pool.leader_changed_from(leader) => {
                    report_now = true;
                    Err(refusal::Refusal::new(
                        proto::ErrorCode::NoLeader,
                        "the leader changed while the report was on its way",
                    ))
                }
            };
            match answer {
                Ok(ack) => {
                    if app
                        .pool
                        .wait_applied(ack.applied_index_required, interval)
                        .await
                        && !app.mutations.issue_without_quorum
                    {
                        app.issuer().set_quota(sent_ms + timing.quota_lease_ms);
                        app.quota_renewals
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .renewed(app.clock.now_ms());
                    }
                    app.drop_superseded(&ack.superseded).await;
                }
                Err(err) => {
                    tracing::debug!("quota not renewed: {err}");
                    app.superseded
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .put_back(superseded);
                }
            }
        }
    })
}

fn spawn_membership_loop(pool: Arc<Pool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            ticker.tick().await;
            pool.reconcile_membership().await;
        }
    })
}

/// The expiry sweep and the daily license check.
fn spawn_sweeps(app: Arc<App>, config: ServerConfig) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let sweep = std::time::Duration::from_millis(config.timing.expiry_sweep_interval_ms);
        let license_check_every = config.timing.license_check_interval_ms;
        let mut last_license_check_ms = app.clock.now_ms();
        let mut last_day = CivilDate::from_unix_ms(app.clock.unix_ms());
        let mut ticker = tokio::time::interval(sweep);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let now_ms = app.clock.now_ms();
            let expired = app.issuer().expire(now_ms);
            for released in &expired {
                tracing::debug!("grant {} lapsed", released.grant_id);
            }
            app.released(expired).await;
            if now_ms - last_license_check_ms >= license_check_every {
                last_license_check_ms = now_ms;
                let today = CivilDate::from_unix_ms(app.clock.unix_ms());
                if today != last_day {
                    last_day = today;
                    let control = app.pool.applied.borrow().state.clone();
                    let licenses = app.licenses_for(&control);
                    app.issuer().reload_licenses(licenses);
                    tracing::info!("license table evaluated again for {today}");
                }
            }
        }
    })
}
