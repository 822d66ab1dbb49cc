//! Start-up: read the config's pool file, open the grant store and the
//! pool, build the [`App`], start the background loops and serve.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tessera_core::PoolFile;

use crate::api::framed::Framed;
use crate::config::ServerConfig;
use crate::issuer::Issuer;
use crate::listener::{self, ConnectionLimits, SecureListener};
use crate::pool::{self, Pool};
use crate::seams::Seams;
use crate::store::{self, Store};
use crate::{api, balance, copies, hostid};

use crate::App;
use crate::{background, quota};

/// Why a server could not start. Each message names the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("config {path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error("pool key file {path}: {message}")]
    PoolKey { path: PathBuf, message: String },
    #[error("pool file {path}: {message}")]
    PoolFile { path: PathBuf, message: String },
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("cannot listen on {address}: {message}")]
    Listen { address: String, message: String },
    #[error(transparent)]
    Pool(#[from] pool::PoolStartError),
    #[error("{0}")]
    Security(String),
    #[error(transparent)]
    Master(#[from] crate::master::MasterStartError),
    #[error(transparent)]
    Vid(#[from] crate::vid::VidStartError),
    #[error("answer key: {0}")]
    AnswerKey(String),
    #[error("clock mark: {0}")]
    ClockMark(String),
    #[error(
        "cannot open the report log in {dir}: {message}; set `[report] dir` to a directory \
         the server may write, or `[report] enabled = false`"
    )]
    ReportLog { dir: PathBuf, message: String },
}

/// A started server: its address, and the task serving it.
pub struct Running {
    pub address: SocketAddr,
    pub done: tokio::task::JoinHandle<()>,
    /// The server's state, for [`crate::reload::reload`].
    pub app: Arc<App>,
}

/// The installed copy of the pool file in the data directory.
pub(crate) const INSTALLED_POOL_FILE: &str = "installed-pool.toml";
/// Longest wait at a clean stop for the VID's slot to be checked in.
const VID_RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(3);
/// Longest wait at start for the local pool log to be applied again.
const REPLAY_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Starts a server and returns once it listens; it serves until `shutdown` resolves.
pub async fn start(
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Running, StartError> {
    let tls = match &config.security.tls {
        Some(files) => Some(listener::server_tls_config(files).map_err(StartError::Security)?),
        None => None,
    };
    let seams = Seams {
        transport: pool::network::peer_transport(&config.security).map_err(StartError::Security)?,
        ..Seams::production()
    };
    let limits = ConnectionLimits {
        per_address_max: config.limits.connections_per_address_max,
        total_max: config.limits.connections_max,
    };
    // Framed connections wait for the server to be up, and stop with it.
    let (framed, framed_state) = tokio::sync::watch::channel(Framed::Starting);
    let framed = Arc::new(framed);
    let stopped = framed.clone();
    let shutdown = async move {
        shutdown.await;
        stopped.send_replace(Framed::Stopped);
    };
    let bind = move |address: String| async move {
        let plain = tls.is_none();
        let listener = SecureListener::bind(&address, tls, limits, framed_state).await?;
        let local = axum::serve::Listener::local_addr(&listener)?;
        if plain && !local.ip().is_loopback() {
            return Err(std::io::Error::other(
                "plain_http (no TLS) serves only on a loopback address; give the server a \
                 certificate (`tessera pool init`) to serve on the network",
            ));
        }
        Ok((listener, local))
    };
    let running = start_with(config, seams, bind, shutdown).await?;
    framed.send_if_modified(|state| match state {
        Framed::Starting => {
            *state = Framed::Serving(running.app.clone());
            true
        }
        _ => false,
    });
    Ok(running)
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
    L: axum::serve::Listener<Addr = SocketAddr>,
    B: FnOnce(String) -> F,
    F: Future<Output = std::io::Result<(L, SocketAddr)>>,
{
    let pool_key = config.read_pool_key()?;
    let answer_key =
        crate::answer::load_key(seams.disk.as_ref(), &config.data_dir, seams.answer_key_seed)
            .map_err(StartError::AnswerKey)?;
    let clock_mark = crate::clock_mark::ClockMark::read(seams.disk.as_ref(), &config.data_dir)
        .map_err(StartError::ClockMark)?;
    let today = tessera_core::CivilDate::from_unix_ms(seams.clock.unix_ms());
    let master = crate::master::check_at_start(&config, today, seams.clock.unix_ms())?;
    let vid = match &config.vid {
        Some(vid) => Some(crate::vid::setup(
            vid,
            &config.server_id,
            &config.vendors,
            &answer_key.public(),
        )?),
        None => None,
    };
    if config.recover_pool {
        let unix_ms = seams.clock.unix_ms();
        pool::recovery::set_log_aside(seams.disk.as_ref(), &config.data_dir, unix_ms)?;
    }
    let (pool_file, pool_text) = load_pool_file(&config, seams.disk.as_ref())?;
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
    check_own_credential(&config, &own_entry)?;
    let (issuer, store, grace) = open_issuer(&config, &seams, &pool_file.pool_id)?;
    // Real files only: a simulated disk keeps none.
    let report = if config.report.enabled && seams.disk.commit_on_threads() {
        crate::report_log::ReportLog::start(
            &config.report,
            &pool_file.pool_id,
            &config.server_id,
            seams.clock.unix_ms(),
        )
        .map_err(|err| StartError::ReportLog {
            dir: config.report.dir.clone(),
            message: err.to_string(),
        })?
    } else {
        crate::report_log::ReportLog::disabled()
    };
    let settings = pool::PoolSettings::of(&config);
    let pool = Arc::new(Pool::start(settings, pool_file, pool_text, &seams).await?);
    // A returning server applies its own log before it serves, so that its
    // allocation and its restored grants are in place (seed FIG. 11).
    let committed = pool.raft.metrics().borrow().last_log_index.unwrap_or(0);
    if committed > 0 && !pool.wait_applied(committed, REPLAY_WAIT).await {
        tracing::warn!("the pool log was not applied again within {REPLAY_WAIT:?}");
    }
    let listen = config.listen.clone().unwrap_or(own_entry.address.clone());
    let (listener, address) = bind(listen.clone())
        .await
        .map_err(|err| StartError::Listen {
            address: listen.clone(),
            message: err.to_string(),
        })?;
    let app = Arc::new(App::new(
        &config,
        &seams,
        Parts {
            issuer,
            store,
            pool,
            pool_key,
            answer_key,
            clock_mark,
            master,
            vid: vid.as_ref().map(crate::vid::VidHold::asking),
            report,
        },
        own_entry.address,
    ));
    app.watch_clock();
    background::follow_control(&app, grace, &config);
    let done = tokio::spawn(serve(app.clone(), listener, config, vid, shutdown));
    let workers = tokio::runtime::Handle::current().metrics().num_workers();
    let threads = if workers == 1 { "thread" } else { "threads" };
    tracing::info!("listening on {address}, {workers} worker {threads}");
    Ok(Running { address, done, app })
}

/// This server's peer credential must be the one its pool file entry names,
/// or its peers would refuse everything it says.
fn check_own_credential(
    config: &ServerConfig,
    entry: &tessera_core::ServerEntry,
) -> Result<(), StartError> {
    let pool_error = |message: String| StartError::PoolFile {
        path: config.pool_file.clone(),
        message,
    };
    let own = tessera_core::credential_sha256(&config.security.peer_credential);
    match &entry.credential_sha256 {
        None => Err(pool_error(format!(
            "server `{}` has no credential_sha256; `tessera pool init` (or `tessera pool \
             add-server`) makes its credential and entry",
            entry.id
        ))),
        Some(listed) if *listed != own => Err(pool_error(format!(
            "the credential_sha256 of server `{}` is not the SHA-256 of this server's peer \
             credential ({own}); the pool file or the credential file is another server's",
            entry.id
        ))),
        Some(_) => Ok(()),
    }
}

/// Opens the grant store and builds the issuer from the grants in it.
/// Also says whether a grace period began: the store was missing, or the
/// last run stopped before its grace period ended ([`crate::grace`]).
fn open_issuer(
    config: &ServerConfig,
    seams: &Seams,
    pool_id: &str,
) -> Result<(Issuer, Store, bool), StartError> {
    // A store that may lack grants its clients hold: none (it was lost), or
    // one made during a grace period that did not run to its end. The grace
    // period is recorded before a new store is made, so a crash between the
    // two still finds it.
    let disk = seams.disk.as_ref();
    let store_missing = !Store::exists_on(disk, &config.data_dir);
    let grace_pending = crate::grace::pending(disk, &config.data_dir);
    // A record of `crate::grace` (`file`) that could not be written or
    // removed: the server does not start without it.
    let record_error = |file: &str, what: &str, err: std::io::Error| {
        StartError::Store(crate::store::StoreError::Open {
            path: config.data_dir.join(file),
            message: format!("cannot record {what}: {err}"),
        })
    };
    let grace_error = |err| record_error(crate::grace::GRACE_FILE, "the grace period", err);
    // A run that answered grants before syncing them and did not stop
    // cleanly: its store may lack grants too.
    let unclean_run =
        crate::grace::unclean_run(disk, &config.data_dir) && !seams.mutations.trust_an_unclean_run;
    // `--new-pool` says the pool never issued a seat, which waives the
    // grace period of a missing store only: a pending grace period or an
    // unclean run's record shows that an earlier run served.
    let grace = unclean_run || grace_pending || (config.grace_on_missing_store && store_missing);
    if grace && !config.grace_on_missing_store {
        tracing::warn!(
            "--new-pool says this pool never issued a seat, but an earlier run served from this \
             data directory and its grace period is still owed: it is kept"
        );
    }
    if grace && !grace_pending {
        crate::grace::begin(disk, &config.data_dir).map_err(grace_error)?;
    }
    if grace && grace_pending && !store_missing {
        tracing::warn!(
            "the last run stopped before its grace period ended: its grant store may lack seats \
             clients hold, so a new grace period begins"
        );
    } else if grace && unclean_run && !store_missing {
        tracing::warn!(
            "the last run answered grants before syncing them ([store] sync = \"background\") \
             and did not stop cleanly: its grant store may lack seats clients hold, so a grace \
             period begins"
        );
    }
    // Recorded before this run answers a grant it has not synced; the
    // grace period above, if any, was recorded before the old record goes.
    let run_record = match config.store_sync {
        crate::config::StoreSync::Background => crate::grace::begin_run(disk, &config.data_dir),
        crate::config::StoreSync::BeforeAnswer => crate::grace::end_run(disk, &config.data_dir),
    };
    run_record.map_err(|err| {
        record_error(crate::grace::RUN_FILE, "how this run syncs its grants", err)
    })?;
    let (store, opened) = Store::open_on(
        &seams.disk,
        &config.data_dir,
        pool_id,
        &config.server_id,
        config.timing.store_batch_max,
    )?;
    tracing::info!(
        "read {} grants from {}",
        opened.grants.len(),
        config.data_dir.display()
    );
    if let Some(observer) = &seams.observer {
        let ids: Vec<String> = opened.grants.iter().map(|(id, _)| id.to_string()).collect();
        observer.restored(&config.server_id, &ids, grace);
    }
    let now_ms = seams.clock.now_ms();
    let mut issuer = Issuer::new(
        config.server_id.clone(),
        config.limits,
        config.timing.clock_drift_percent,
        opened.grants,
        now_ms,
    );
    if grace {
        issuer.set_grace_until(Some(now_ms + grace_ms(&config.timing, None)));
    }
    Ok((issuer, store, grace))
}

/// What start-up made for the [`App`].
struct Parts {
    issuer: Issuer,
    store: Store,
    pool: Arc<Pool>,
    pool_key: tessera_core::PoolKey,
    answer_key: tessera_core::answer::ServerSecretKey,
    clock_mark: crate::clock_mark::ClockMark,
    master: Option<crate::master::MasterSigner>,
    /// A production server's VID, before any master answered.
    vid: Option<crate::vid::VidHold>,
    report: crate::report_log::ReportLog,
}

impl App {
    fn new(config: &ServerConfig, seams: &Seams, parts: Parts, address: String) -> App {
        let Parts {
            issuer,
            store,
            pool,
            pool_key,
            answer_key,
            clock_mark,
            master,
            vid,
            report,
        } = parts;
        App {
            issuer: Mutex::new(issuer),
            store,
            server_id: pool.server_id.as_str().into(),
            pool_id: pool.pool_id.as_str().into(),
            pool,
            clock: seams.clock.clone(),
            limits: config.limits,
            hostid: seams.hostid.clone().unwrap_or_else(this_hostid).into(),
            address,
            started_ms: seams.clock.now_ms(),
            public_status: config.security.public_status,
            in_flight: Default::default(),
            client_requests: Arc::new(tokio::sync::Semaphore::new(
                config.limits.requests_in_flight_max,
            )),
            framed_requests: Default::default(),
            control_taken: tokio::sync::watch::Sender::new(0),
            control_lag_ms: seams.control_lag_ms.clone(),
            vendors: config.vendors.clone(),
            data_dir: config.data_dir.clone(),
            disk: seams.disk.clone(),
            observer: seams.observer.clone(),
            requests: Mutex::new(Default::default()),
            denials: Mutex::new(Default::default()),
            timing: config.timing,
            store_sync: config.store_sync,
            borrowing: config.borrowing.clone(),
            borrow_locks: Mutex::new(Default::default()),
            borrow_quiet: Mutex::new(Default::default()),
            claiming: Mutex::new(Default::default()),
            report,
            grant_ids: seams.grant_ids.clone(),
            mutations: seams.mutations,
            superseded: Mutex::new(copies::Outbox::default()),
            seats_changed: tokio::sync::watch::Sender::new(0),
            quota_renewals: Mutex::new(Default::default()),
            pool_key,
            answer_key_public: answer_key.public().to_base64().into(),
            answer_key_id: answer_key.public().key_id(),
            batch_signer: crate::answer::BatchSigner::new(answer_key.clone()),
            clock_mark: Mutex::new(clock_mark),
            answer_key,
            vid: std::sync::Mutex::new(vid),
            identity_changed: tokio::sync::Notify::new(),
            master,
        }
    }
}

/// This machine's hostid, or `(none)` (which no code can name) with the
/// reason in the log: codes bound to a hostid are then not served.
fn this_hostid() -> String {
    match hostid::inspect() {
        hostid::Hostid::Stable { hostid, source } => {
            tracing::info!("hostid {hostid}, from {source}");
            hostid
        }
        hostid::Hostid::Refused { reason } => {
            tracing::warn!(
                "no hostid: {reason}; codes bound to a hostid are not served here; {}",
                hostid::VID_ROUTE
            );
            hostid::NO_HOSTID.to_string()
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, with the
/// background loops running meanwhile.
async fn serve<L>(
    app: Arc<App>,
    listener: L,
    config: ServerConfig,
    vid: Option<crate::vid::VidSetup>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) where
    L: axum::serve::Listener<Addr = SocketAddr>,
{
    let pool = app.pool.clone();
    let vid_stop = Arc::new(tokio::sync::Notify::new());
    let vid_holder =
        vid.map(|setup| tokio::spawn(crate::vid::hold(app.clone(), setup, vid_stop.clone())));
    let background = [
        background::spawn_sweeps(app.clone(), config.clone()),
        tokio::spawn(pool.clone().bootstrap()),
        tokio::spawn(pool.clone().learn_pool_term()),
        tokio::spawn(pool.clone().stand_down_when_behind()),
        quota::spawn_quota_loop(app.clone()),
        background::spawn_membership_loop(pool.clone()),
        balance::spawn_answer_loop(app.clone()),
        crate::claims::spawn_claims_loop(app.clone()),
    ];
    let router = api::router(app.clone());
    let service = router.into_make_service_with_connect_info::<api::per_address::SourceAddress>();
    let listener = api::per_address::Addressed(listener);
    if let Err(err) = axum::serve(listener, service)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!("server stopped: {err}");
    }
    if let Some(holder) = vid_holder {
        // A clean stop gives the VID's slot back at once.
        vid_stop.notify_one();
        let _ = tokio::time::timeout(VID_RELEASE_WAIT, holder).await;
    }
    for task in background {
        task.abort();
    }
    let _ = pool.raft.shutdown().await;
    // Every grant queued is synced, and none comes after: a run that
    // answered grants before syncing them has then lost none.
    match app.store.finish().await {
        Ok(()) => {
            if let Err(err) = crate::grace::end_run(app.disk.as_ref(), &app.data_dir) {
                tracing::error!(
                    "every grant is synced, but {} cannot be removed ({err}); the next start \
                     waits out a grace period",
                    app.data_dir.join(crate::grace::RUN_FILE).display()
                );
            }
        }
        Err(err) => tracing::error!(
            "the grant store could not sync its last writes ({err}); the next start waits out a \
             grace period if this run synced grants in the background"
        ),
    }
    // The report file closed with its checksum.
    let report_app = app.clone();
    let _ = tokio::task::spawn_blocking(move || report_app.report.close()).await;
}

/// The grace period of a server that started without its grant store:
/// long enough for every grant it may have lost to lapse or be renewed. The
/// configured `grace_ms`, else the longest hold of the codes it serves,
/// else (while the codes are not known yet) the longest lease any code may
/// set.
pub(crate) fn grace_ms(timing: &crate::config::Timing, longest_hold_ms: Option<u64>) -> u64 {
    let longest_lease_ms = u64::from(tessera_core::license::LEASE_S_MAX) * 1000;
    tessera_core::lease::grace_ms(timing.grace_ms, longest_hold_ms.unwrap_or(longest_lease_ms))
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

fn load_pool_file(
    config: &ServerConfig,
    disk: &dyn crate::seams::Disk,
) -> Result<(PoolFile, String), StartError> {
    let pool_error = |message: String| StartError::PoolFile {
        path: config.pool_file.clone(),
        message,
    };
    let text = std::fs::read_to_string(&config.pool_file)
        .map_err(|err| pool_error(format!("cannot read it: {err}")))?;
    let pool = PoolFile::parse(&text).map_err(|err| pool_error(err.to_string()))?;
    // A copy installed by the pool earlier, if newer, is what this server last agreed to.
    let installed_path = config.data_dir.join(INSTALLED_POOL_FILE);
    let installed = disk.read_file(&installed_path).ok().flatten();
    if let Some(installed_text) = installed.and_then(|bytes| String::from_utf8(bytes).ok()) {
        if let Ok(installed) = PoolFile::parse(&installed_text) {
            if installed.pool_id == pool.pool_id && installed.sequence > pool.sequence {
                return Ok((installed, installed_text));
            }
        }
    }
    Ok((pool, text))
}
