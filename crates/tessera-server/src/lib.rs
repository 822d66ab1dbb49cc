//! The Tessera license server as a library: [`run`] a server from a
//! [`ServerConfig`] until a shutdown future resolves.
//!
//! Layout: [`http`] parses and answers requests; [`issuer`] decides (pure,
//! under one mutex); [`store`] makes new grants durable; [`clock`] is the
//! time seam. See ARCHITECTURE.md.

pub mod clock;
pub mod config;
pub mod hostid;
pub mod http;
pub mod issuer;
pub mod store;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use tessera_core::{CivilDate, LicenseTable, PoolFile};
use tessera_proto as proto;
use tokio::net::TcpListener;

use crate::clock::{Clock, SystemClock};
use crate::config::Limits;
pub use crate::config::ServerConfig;
use crate::issuer::{Issuer, IssuingState};
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
    #[error("{0}")]
    Unsupported(String),
}

/// Shared state of a running server.
pub struct App {
    issuer: Mutex<Issuer>,
    store: Store,
    clock: Arc<dyn Clock>,
    limits: Limits,
    hostid: String,
    address: String,
    started_ms: u64,
}

impl App {
    /// The issuer, locked. Never held across an `.await`.
    fn issuer(&self) -> MutexGuard<'_, Issuer> {
        // A panic while holding the lock would be a bug; the state is still
        // the last consistent one, since every method applies all or nothing.
        self.issuer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn status(&self) -> proto::StatusResponse {
        let now_ms = self.clock.now_ms();
        let issuer = self.issuer();
        let empty_pool;
        let pool = match issuer.pool() {
            Some(pool) => pool,
            None => {
                empty_pool = PoolFile {
                    pool_id: String::new(),
                    sequence: 0,
                    servers: Vec::new(),
                    distribution: Default::default(),
                    codes: Vec::new(),
                };
                &empty_pool
            }
        };
        let state = issuer.state(now_ms);
        let server_id = issuer.server_id().to_string();
        let features = issuer
            .licenses()
            .features()
            .map(|feature| feature_status(&issuer, feature))
            .collect();
        let mut grants: Vec<proto::GrantStatus> = issuer
            .grants()
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
            pool_id: pool.pool_id.clone(),
            pool_sequence: pool.sequence,
            server: proto::ServerStatus {
                id: server_id.clone(),
                address: self.address.clone(),
                role: "leader".into(),
                leader_id: Some(server_id.clone()),
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
            servers: pool
                .servers
                .iter()
                .map(|s| proto::PeerStatus {
                    id: s.id.clone(),
                    address: s.address.clone(),
                    role: if s.id == server_id {
                        "leader"
                    } else {
                        "follower"
                    }
                    .into(),
                    up: s.id == server_id,
                    last_contact_ms: (s.id == server_id).then_some(0),
                })
                .collect(),
            features,
            grants,
            grants_total: issuer.grants_total() as u64,
        }
    }
}

fn feature_status(issuer: &Issuer, feature: &tessera_core::FeatureLicense) -> proto::FeatureStatus {
    let terms = issuer.terms(&feature.feature);
    let table = issuer.table(&feature.feature);
    proto::FeatureStatus {
        feature: feature.feature.clone(),
        vendor: feature.vendor.clone(),
        hard_limit: feature.hard_limit,
        free_pool: table.map_or(0, |t| t.free_pool()),
        pool_available: table.map_or(0, |t| t.pool_available()),
        lease_ms: terms.map_or(0, |t| t.lease_ms),
        heartbeat_interval_ms: terms.map_or(0, |t| t.heartbeat_interval_ms),
        borrow_threshold_percent: feature.policy.borrow_threshold_percent,
        servers: table
            .map(|t| {
                t.rows()
                    .map(|(server_id, row)| proto::DistributionRow {
                        server_id: server_id.to_string(),
                        allocation: row.allocation,
                        in_use: Some(row.in_use),
                        available: Some(row.available()),
                    })
                    .collect()
            })
            .unwrap_or_default(),
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

/// A started server: its address, and the task serving it.
pub struct Running {
    pub address: SocketAddr,
    pub done: tokio::task::JoinHandle<()>,
}

/// Starts a server and returns once it listens; it serves until `shutdown` resolves.
pub async fn start(
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Running, StartError> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
    let pool = load_pool_file(&config)?;
    let Some(own_entry) = pool.server(&config.server_id).cloned() else {
        return Err(StartError::PoolFile {
            path: config.pool_file.clone(),
            message: format!(
                "server_id `{}` of the config is not among the pool's servers ({})",
                config.server_id,
                pool.server_ids().join(", ")
            ),
        });
    };
    if pool.servers.len() > 1 {
        return Err(StartError::Unsupported(format!(
            "pool `{}` lists {} servers; this release serves pools of one server",
            pool.pool_id,
            pool.servers.len()
        )));
    }
    let hostid = config
        .hostid
        .clone()
        .or_else(hostid::machine_hostid)
        .unwrap_or_else(|| "unknown".to_string());
    let licenses = evaluate_licenses(&pool, &config, &hostid, clock.as_ref());
    for feature in licenses.features() {
        for verdict in &feature.codes {
            if let Some(reason) = &verdict.not_served {
                tracing::warn!("license code {} is not served: {reason}", verdict.code.id());
            }
        }
    }
    let (store, opened) = Store::open(
        &config.data_dir,
        &pool.pool_id,
        &config.server_id,
        config.timing.store_batch_max,
    )?;
    let now_ms = clock.now_ms();
    tracing::info!(
        "restored {} grants from {}",
        opened.grants.len(),
        config.data_dir.display()
    );
    let mut control = tessera_core::ControlState::default();
    if let tessera_core::ControlOutcome::Refused { reason } =
        control.apply(&tessera_core::ControlCommand::InstallPoolFile {
            text: pool.to_toml(),
        })
    {
        return Err(StartError::PoolFile {
            path: config.pool_file.clone(),
            message: reason,
        });
    }
    let mut issuer = Issuer::new(
        config.server_id.clone(),
        config.limits,
        config.timing.clock_drift_percent,
        opened.grants,
        now_ms,
    );
    issuer.set_control(Arc::new(control), licenses);
    if !opened.existed && config.grace_on_missing_store {
        let grace_ms = config.timing.grace_ms.unwrap_or(issuer.longest_hold_ms());
        tracing::warn!(
            "no grant store in {}: accepting only renewals for {grace_ms} ms",
            config.data_dir.display()
        );
        issuer.set_grace_until(Some(now_ms + grace_ms));
    }
    // A pool of one is a majority of one: its quota never lapses.
    issuer.set_quota(u64::MAX);

    let listen = config.listen.clone().unwrap_or(own_entry.address.clone());
    let listener = TcpListener::bind(&listen)
        .await
        .map_err(|err| StartError::Listen {
            address: listen.clone(),
            message: err.to_string(),
        })?;
    let address = listener.local_addr().map_err(|err| StartError::Listen {
        address: listen.clone(),
        message: err.to_string(),
    })?;
    let app = Arc::new(App {
        issuer: Mutex::new(issuer),
        store,
        clock: clock.clone(),
        limits: config.limits,
        hostid: hostid.clone(),
        address: own_entry.address.clone(),
        started_ms: now_ms,
    });
    let background = spawn_background(app.clone(), config, pool, hostid);
    let router = http::router(app);
    let done = tokio::spawn(async move {
        use axum::serve::ListenerExt;
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        if let Err(err) = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!("server stopped: {err}");
        }
        background.abort();
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

fn load_pool_file(config: &ServerConfig) -> Result<PoolFile, StartError> {
    let pool_error = |message: String| StartError::PoolFile {
        path: config.pool_file.clone(),
        message,
    };
    let text = std::fs::read_to_string(&config.pool_file)
        .map_err(|err| pool_error(format!("cannot read it: {err}")))?;
    PoolFile::parse(&text).map_err(|err| pool_error(err.to_string()))
}

fn evaluate_licenses(
    pool: &PoolFile,
    config: &ServerConfig,
    hostid: &str,
    clock: &dyn Clock,
) -> LicenseTable {
    let today = CivilDate::from_unix_ms(clock.unix_ms());
    LicenseTable::evaluate(&pool.codes, &config.vendors, hostid, today)
}

/// The expiry sweep and the daily license check.
fn spawn_background(
    app: Arc<App>,
    config: ServerConfig,
    pool: PoolFile,
    hostid: String,
) -> tokio::task::JoinHandle<()> {
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
            for grant_id in expired {
                tracing::debug!("grant {grant_id} lapsed");
                app.store.delete(grant_id).await;
            }
            if now_ms - last_license_check_ms >= license_check_every {
                last_license_check_ms = now_ms;
                let today = CivilDate::from_unix_ms(app.clock.unix_ms());
                if today != last_day {
                    last_day = today;
                    let licenses = evaluate_licenses(&pool, &config, &hostid, app.clock.as_ref());
                    app.issuer().reload_licenses(licenses);
                    tracing::info!("license table evaluated again for {today}");
                }
            }
        }
    })
}
