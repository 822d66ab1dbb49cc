//! The server's config file (`tessera.toml`).
//!
//! ```toml
//! server_id = "A"
//! pool_file = "pool.toml"     # relative to this file
//! data_dir = "data"           # relative to this file; holds the grant store
//! pool_key_file = "pool.key"  # relative to this file; the pool's shared key
//! # master_license_file = "master.toml" # a master server's license (seed 003)
//!
//! [vid]                       # optional: a production server bound to a VID (seed 003)
//! masters = ["master.example:27000"]
//! license_files = ["master.toml"]  # the masters' licenses, to check certificates
//! ca_file = "master-ca.pem"   # the masters' pool CA
//! token_file = "production.token" # a token of role `production` of the masters' pool
//! # listen = "0.0.0.0:27000"  # default: this server's address in the pool file
//! # (no `hostid`: a server's hostid is always its machine's own, `tessera hostid`)
//!
//! [[vendors]]
//! name = "acme"
//! public_key = "base64 of 32 bytes"
//!
//! [limits]                    # all optional
//! grants_max = 1000000
//!
//! [timing]                    # all optional
//! clock_drift_percent = 1
//!
//! [store]                     # optional
//! sync = "before-answer"      # or "background": a crash then costs a grace period
//!
//! [borrowing.cad]             # optional; overrides the pool file's
//! threshold_percent = 90
//!
//! [security]                  # all optional; these are the defaults
//! cert_file = "server.pem"    # this server's certificate, issued by the pool CA
//! key_file = "server.key"
//! ca_file = "ca.pem"          # the pool CA: what peers' certificates are checked against
//! peer_credential_file = "peer.credential" # its SHA-256 is in the pool file
//! public_status = "summary"   # or "full": grants with users and hosts for anyone
//! # plain_http = true         # no TLS: loopback demos and tests only
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;
use tessera_core::{BorrowPolicy, PoolKey, VendorPublicKey};

use crate::StartError;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigText {
    server_id: String,
    pool_file: PathBuf,
    data_dir: PathBuf,
    listen: Option<String>,
    hostid: Option<String>,
    #[serde(default)]
    vendors: Vec<VendorText>,
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    timing: Timing,
    #[serde(default = "default_true")]
    grace_on_missing_store: bool,
    #[serde(default)]
    borrowing: std::collections::BTreeMap<String, BorrowPolicy>,
    #[serde(default)]
    security: SecurityText,
    pool_key_file: Option<PathBuf>,
    master_license_file: Option<PathBuf>,
    vid: Option<VidText>,
    #[serde(default)]
    report: ReportText,
    #[serde(default)]
    store: StoreText,
    #[serde(default)]
    runtime: RuntimeText,
}

/// `[runtime]`: the threads that serve requests.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RuntimeText {
    workers: Option<usize>,
}

/// Most worker threads a config may ask for.
pub const WORKERS_MAX: usize = 1_024;

/// Worker threads of a server whose config names none: one per core.
/// Fewer cost less CPU per request on a small machine but lengthen the tail
/// under load (ARCHITECTURE.md, "The server's threads").
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |cores| cores.get())
}

/// `[store]`: the grant store.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct StoreText {
    sync: StoreSync,
}

/// When a new grant reaches the disk (`[store] sync`).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum StoreSync {
    /// Synced before it is answered: a crash loses no answered grant.
    #[default]
    BeforeAnswer,
    /// Answered at once and synced within the store's deferral (50 ms) or
    /// its next full batch. A run that ended without a clean stop is
    /// followed by a grace period, in which the server converts its holders'
    /// heartbeats instead of reading their grants from the disk
    /// (`crate::grace`, ARCHITECTURE.md timeline 3).
    Background,
}

impl StoreSync {
    /// As the config and the status name it.
    pub fn as_str(self) -> &'static str {
        match self {
            StoreSync::BeforeAnswer => "before-answer",
            StoreSync::Background => "background",
        }
    }
}

/// `[report]`: the report log (`crate::report_log`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ReportText {
    enabled: bool,
    dir: Option<PathBuf>,
    rotate_mb: u64,
    rotate_hours: u64,
}

impl Default for ReportText {
    fn default() -> ReportText {
        ReportText {
            enabled: true,
            dir: None,
            rotate_mb: 64,
            rotate_hours: 24,
        }
    }
}

/// Where and how the report log is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportConfig {
    pub enabled: bool,
    /// Default: `report` in the data directory.
    pub dir: PathBuf,
    /// A file is closed (and checksummed) at this size or age.
    pub rotate_bytes: u64,
    pub rotate_ms: u64,
}

/// `[vid]`: a production server bound to a VID (seed 003).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VidText {
    masters: Vec<String>,
    license_files: Vec<PathBuf>,
    #[serde(default)]
    ca_file: Option<PathBuf>,
    #[serde(default)]
    token_file: Option<PathBuf>,
    #[serde(default)]
    plain_http: bool,
}

/// A production server's VID: where its masters are and what they are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VidConfig {
    /// `host:port` of the master servers (one master, or a master pool).
    pub masters: Vec<String>,
    /// The master licenses the certificates are checked against (one per
    /// master), all for the same VID.
    pub license_files: Vec<PathBuf>,
    /// The CA of the masters' TLS certificates (their pool's `ca.pem`).
    pub ca_file: Option<PathBuf>,
    /// A token of role `production` of the masters' pool: they lend slots
    /// only to its holders.
    pub token_file: Option<PathBuf>,
    /// Plain HTTP to the masters: loopback demos and tests only.
    pub plain_http: bool,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct SecurityText {
    cert_file: PathBuf,
    key_file: PathBuf,
    ca_file: PathBuf,
    peer_credential_file: PathBuf,
    public_status: PublicStatus,
    plain_http: bool,
}

impl Default for SecurityText {
    fn default() -> SecurityText {
        SecurityText {
            cert_file: "server.pem".into(),
            key_file: "server.key".into(),
            ca_file: "ca.pem".into(),
            peer_credential_file: "peer.credential".into(),
            public_status: PublicStatus::Summary,
            plain_http: false,
        }
    }
}

/// What `/v1/status` shows a caller without a read credential.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PublicStatus {
    /// Servers, features and seat counts; no grant, user or host.
    #[default]
    Summary,
    /// Everything, grants with their users and hosts included.
    Full,
}

/// How the server proves itself and checks who calls it.
#[derive(Clone, Debug)]
pub struct Security {
    /// TLS on the listener and on every connection to peers; `None` only
    /// when the config says `plain_http = true`.
    pub tls: Option<TlsFiles>,
    /// This server's peer credential: the secret whose SHA-256 the pool file
    /// names for it.
    pub peer_credential: String,
    pub public_status: PublicStatus,
}

/// The PEM files of a server's TLS identity.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub ca_file: PathBuf,
}

fn default_true() -> bool {
    true
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VendorText {
    name: String,
    public_key: String,
}

/// Bounds on what one server holds. Every one is checked on the request path.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Grants held at once by this server.
    pub grants_max: usize,
    /// Grants held at once by one client id.
    pub grants_per_client_max: usize,
    /// Distinct client ids holding grants at once.
    pub clients_max: usize,
    /// Client requests in flight at once; more wait in the accept queue.
    pub requests_in_flight_max: usize,
    /// Peer and admin requests in flight at once, counted apart from the
    /// clients' so that clients cannot starve the pool's own traffic.
    pub peer_requests_in_flight_max: usize,
    /// Requests in flight at once from one source address.
    pub requests_in_flight_per_address_max: usize,
    /// Open connections from one source address.
    pub connections_per_address_max: usize,
    /// Open connections in all.
    pub connections_max: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            grants_max: 2_000_000,
            grants_per_client_max: 10_000,
            clients_max: 1_000_000,
            requests_in_flight_max: 4_096,
            peer_requests_in_flight_max: 512,
            requests_in_flight_per_address_max: 2_048,
            connections_per_address_max: 4_096,
            connections_max: 16_384,
        }
    }
}

/// Timing knobs. The lease and heartbeat lengths come from the license codes.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Timing {
    /// Largest rate difference between any two clocks of the pool and its
    /// clients. Every lease the server measures is stretched by it, so a
    /// server whose clock runs fast never frees a seat a client still holds.
    pub clock_drift_percent: u32,
    /// How often expired grants are swept, in milliseconds.
    pub expiry_sweep_interval_ms: u64,
    /// Grace period after starting without a store, in milliseconds; by
    /// default the longest lease of any served feature, stretched by the drift bound.
    pub grace_ms: Option<u64>,
    /// How often the license table is evaluated again (codes expire at midnight UTC).
    pub license_check_interval_ms: u64,
    /// Most grant writes grouped into one durable commit.
    pub store_batch_max: usize,
    /// How often the Raft leader sends heartbeats to the other servers.
    pub raft_heartbeat_interval_ms: u64,
    /// Election timeout of the first server in leader-priority order; each
    /// later server waits `election_timeout_step_ms` longer, so the highest
    /// surviving priority stands for election first.
    pub election_timeout_ms: u64,
    pub election_timeout_step_ms: u64,
    /// Random spread added to each election timeout, against split votes.
    pub election_jitter_ms: u64,
    /// How often a server reports its in-use counts to the leader.
    pub quota_report_interval_ms: u64,
    /// How long a server may issue after sending a report the leader
    /// acknowledged. A server cut off from the majority stops within this.
    pub quota_lease_ms: u64,
    /// Longest a checkout waits for seats borrowed from the pool before it
    /// is denied.
    pub borrow_wait_ms: u64,
    /// Leader: a request for a live server's seats that its donor has not
    /// answered within this is cancelled (the donor keeps its seats).
    pub release_request_timeout_ms: u64,
    /// A snapshot of the control state is taken after this many log entries,
    /// and the log before it purged but for `log_kept_after_snapshot`.
    pub snapshot_every_entries: u64,
    pub log_kept_after_snapshot: u64,
}

impl Timing {
    /// The settings the pool's lease arithmetic is made of.
    pub fn lease(&self) -> tessera_core::lease::LeaseTiming {
        tessera_core::lease::LeaseTiming {
            quota_lease_ms: self.quota_lease_ms,
            quota_report_interval_ms: self.quota_report_interval_ms,
            clock_drift_percent: self.clock_drift_percent,
        }
    }
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            clock_drift_percent: 1,
            expiry_sweep_interval_ms: 100,
            grace_ms: None,
            license_check_interval_ms: 60_000,
            store_batch_max: 1_024,
            raft_heartbeat_interval_ms: 50,
            election_timeout_ms: 250,
            election_timeout_step_ms: 100,
            election_jitter_ms: 80,
            quota_report_interval_ms: 300,
            quota_lease_ms: 2_500,
            borrow_wait_ms: 2_000,
            release_request_timeout_ms: 3_000,
            snapshot_every_entries: 1_000,
            log_kept_after_snapshot: 100,
        }
    }
}

/// A loaded config, its paths made absolute.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub server_id: String,
    pub pool_file: PathBuf,
    pub data_dir: PathBuf,
    pub listen: Option<String>,
    pub vendors: Vec<VendorPublicKey>,
    pub limits: Limits,
    pub timing: Timing,
    /// When false, a server without a store issues at once. Only right for a
    /// pool that has never issued a seat (`tessera server --new-pool`).
    pub grace_on_missing_store: bool,
    pub security: Security,
    /// Per feature: this server's own borrowing threshold and batch, over
    /// the pool file's.
    pub borrowing: std::collections::BTreeMap<String, BorrowPolicy>,
    /// Re-form the pool from the survivors of a lost majority
    /// (`tessera server --recover-pool FILE`): the pool log is set aside and
    /// `pool_file` (the survivors' pool file) starts a new pool whose seats
    /// wait out the lost servers' grants.
    pub recover_pool: bool,
    /// The pool's shared key, which proves grants to their holders: the same
    /// file on every server of the pool ([`ServerConfig::read_pool_key`]).
    pub pool_key_file: PathBuf,
    /// Set on a master server (seed 003): its master license file, checked
    /// at start (`crate::master::check_at_start`).
    pub master_license_file: Option<PathBuf>,
    /// Set on a production server bound to a VID (`crate::vid`).
    pub vid: Option<VidConfig>,
    pub report: ReportConfig,
    /// When a new grant reaches the disk.
    pub store_sync: StoreSync,
    /// `[runtime] workers`: threads serving requests; `None`:
    /// [`default_workers`] ([`ServerConfig::workers`]).
    pub workers: Option<usize>,
}

/// What a config without `pool_key_file` is told.
const NO_POOL_KEY: &str = "`pool_key_file` is missing: every server of a pool needs the pool's \
     shared key, which proves each grant to its holder. Create it once per pool with `tessera pool \
     key --out pool.key`, copy that file to every server of the pool (readable only by the \
     server's user), and add `pool_key_file = \"pool.key\"` to this config";

impl ServerConfig {
    /// Worker threads to serve requests on: `[runtime] workers`, or
    /// [`default_workers`].
    pub fn workers(&self) -> usize {
        self.workers.unwrap_or_else(default_workers)
    }

    pub fn load(path: &Path) -> Result<ServerConfig, StartError> {
        let text = std::fs::read_to_string(path).map_err(|err| StartError::Config {
            path: path.to_path_buf(),
            message: format!("cannot read it: {err}"),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        ServerConfig::parse(&text, base).map_err(|message| StartError::Config {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Parses config text; relative paths are taken from `base`.
    pub fn parse(text: &str, base: &Path) -> Result<ServerConfig, String> {
        let raw: ConfigText = toml::from_str(text).map_err(|err| err.to_string())?;
        let vendors = raw
            .vendors
            .iter()
            .map(|v| VendorPublicKey::from_base64(&v.name, &v.public_key))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| err.to_string())?;
        if raw.timing.clock_drift_percent > 50 {
            return Err("timing.clock_drift_percent must be at most 50".into());
        }
        for (feature, policy) in &raw.borrowing {
            policy.validate(&format!("borrowing.{feature}"))?;
        }
        if raw.timing.snapshot_every_entries == 0 {
            return Err("timing.snapshot_every_entries must be above 0".into());
        }
        if raw.timing.store_batch_max == 0 || raw.timing.expiry_sweep_interval_ms == 0 {
            return Err(
                "timing.store_batch_max and expiry_sweep_interval_ms must be above 0".into(),
            );
        }
        if let Some(hostid) = &raw.hostid {
            return Err(format!(
                "`hostid = \"{hostid}\"`: a server's hostid can no longer be set in its config, \
                 since that let any machine serve codes bound to another; it is always the \
                 machine's own (`tessera hostid`). Remove the line; on a virtual machine or in a \
                 container, {}",
                crate::hostid::VID_ROUTE
            ));
        }
        let pool_key_file = raw.pool_key_file.ok_or(NO_POOL_KEY)?;
        if raw.report.rotate_mb == 0 || raw.report.rotate_hours == 0 {
            return Err("report.rotate_mb and report.rotate_hours must be above 0".into());
        }
        if let Some(workers) = raw.runtime.workers {
            if !(1..=WORKERS_MAX).contains(&workers) {
                return Err(format!(
                    "runtime.workers is {workers}; it must be from 1 to {WORKERS_MAX} (leave it \
                     out for the default, {} on this machine)",
                    default_workers()
                ));
            }
        }
        let data_dir = base.join(&raw.data_dir);
        let report = ReportConfig {
            enabled: raw.report.enabled,
            dir: raw
                .report
                .dir
                .map_or_else(|| data_dir.join("report"), |dir| base.join(dir)),
            rotate_bytes: raw.report.rotate_mb.saturating_mul(1 << 20),
            rotate_ms: raw.report.rotate_hours.saturating_mul(3_600_000),
        };
        Ok(ServerConfig {
            report,
            store_sync: raw.store.sync,
            workers: raw.runtime.workers,
            pool_key_file: base.join(pool_key_file),
            master_license_file: raw.master_license_file.map(|path| base.join(path)),
            vid: raw.vid.map(|vid| VidConfig {
                masters: vid.masters,
                license_files: vid.license_files.iter().map(|p| base.join(p)).collect(),
                ca_file: vid.ca_file.map(|p| base.join(p)),
                token_file: vid.token_file.map(|p| base.join(p)),
                plain_http: vid.plain_http,
            }),
            server_id: raw.server_id,
            pool_file: base.join(raw.pool_file),
            data_dir: base.join(raw.data_dir),
            listen: raw.listen,
            vendors,
            limits: raw.limits,
            timing: raw.timing,
            grace_on_missing_store: raw.grace_on_missing_store,
            security: load_security(&raw.security, base)?,
            borrowing: raw.borrowing,
            recover_pool: false,
        })
    }

    /// Reads the pool key file: 64 hex characters, the same on every server
    /// of the pool.
    pub fn read_pool_key(&self) -> Result<PoolKey, StartError> {
        let path = &self.pool_key_file;
        let error = |message: String| StartError::PoolKey {
            path: path.clone(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|err| {
            error(format!(
                "cannot read it: {err}; create it once per pool with `tessera pool key --out \
                 FILE` and copy it to every server of the pool"
            ))
        })?;
        warn_if_others_may_read(path);
        PoolKey::parse(&text).map_err(|err| {
            error(format!(
                "{err}; write one with `tessera pool key --out FILE`, the same file on every \
                 server of the pool"
            ))
        })
    }
}

/// A pool key readable by other users of the host lets them forge proofs.
fn warn_if_others_may_read(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(metadata) = std::fs::metadata(path) {
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                "pool key file {} has mode {mode:o}: other users of this host can read it; \
                 `chmod 600` it",
                path.display()
            );
        }
    }
}

/// Shortest peer credential accepted, in bytes.
pub const PEER_CREDENTIAL_BYTES_MIN: usize = 32;

fn load_security(text: &SecurityText, base: &Path) -> Result<Security, String> {
    let credential_path = base.join(&text.peer_credential_file);
    let peer_credential = std::fs::read_to_string(&credential_path)
        .map_err(|err| {
            format!(
                "cannot read this server's peer credential {}: {err}; `tessera pool init` \
                 makes one per server",
                credential_path.display()
            )
        })?
        .trim()
        .to_string();
    if peer_credential.len() < PEER_CREDENTIAL_BYTES_MIN {
        return Err(format!(
            "the peer credential {} is shorter than {PEER_CREDENTIAL_BYTES_MIN} characters; \
             `tessera pool init` makes one per server",
            credential_path.display()
        ));
    }
    let tls = (!text.plain_http).then(|| TlsFiles {
        cert_file: base.join(&text.cert_file),
        key_file: base.join(&text.key_file),
        ca_file: base.join(&text.ca_file),
    });
    Ok(Security {
        tls,
        peer_credential,
        public_status: text.public_status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str =
        "server_id = \"A\"\npool_file = \"pool.toml\"\ndata_dir = \"d\"\npool_key_file = \"pool.key\"\n";

    #[test]
    fn parses_with_defaults_and_refuses_bad_keys() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("peer.credential"), "c".repeat(64)).unwrap();
        let base = MINIMAL;
        let config = ServerConfig::parse(base, dir.path()).unwrap();
        assert_eq!(config.pool_file, dir.path().join("pool.toml"));
        assert_eq!(config.pool_key_file, dir.path().join("pool.key"));
        assert_eq!(config.limits, Limits::default());
        assert!(config.grace_on_missing_store);
        let tls = config.security.tls.expect("TLS by default");
        assert_eq!(tls.cert_file, dir.path().join("server.pem"));
        assert_eq!(config.security.peer_credential, "c".repeat(64));
        assert_eq!(config.security.public_status, PublicStatus::Summary);
        let plain = format!("{base}[security]\nplain_http = true\npublic_status = \"full\"\n");
        let config = ServerConfig::parse(&plain, dir.path()).unwrap();
        assert!(config.security.tls.is_none());
        assert_eq!(config.security.public_status, PublicStatus::Full);
        assert_eq!(config.store_sync, StoreSync::BeforeAnswer);
        // Each mode parses from the name the status gives it.
        for sync in [StoreSync::BeforeAnswer, StoreSync::Background] {
            let text = format!("{base}[store]\nsync = \"{}\"\n", sync.as_str());
            let config = ServerConfig::parse(&text, dir.path()).unwrap();
            assert_eq!(config.store_sync, sync);
        }
        assert_eq!(config.workers, None);
        let cores = std::thread::available_parallelism().unwrap().get();
        assert_eq!(config.workers(), cores);
        let text = format!("{base}[runtime]\nworkers = 3\n");
        let config = ServerConfig::parse(&text, dir.path()).unwrap();
        assert_eq!((config.workers, config.workers()), (Some(3), 3));
        for workers in [0, WORKERS_MAX + 1] {
            let text = format!("{base}[runtime]\nworkers = {workers}\n");
            let err = ServerConfig::parse(&text, dir.path()).unwrap_err();
            assert!(
                err.contains("runtime.workers is") && err.contains("from 1 to"),
                "{err}"
            );
        }
        let err = ServerConfig::parse(&format!("{base}[runtime]\nthreads = 2\n"), dir.path())
            .unwrap_err();
        assert!(err.contains("threads"), "{err}");
        let err = ServerConfig::parse(&format!("{base}[store]\nsync = \"never\"\n"), dir.path())
            .unwrap_err();
        assert!(
            err.contains("before-answer") && err.contains("background"),
            "{err}"
        );
        let err = ServerConfig::parse(
            &format!("{MINIMAL}[[vendors]]\nname = \"acme\"\npublic_key = \"nope\"\n"),
            dir.path(),
        )
        .unwrap_err();
        assert!(err.contains("public key of `acme`"), "{err}");
        let err = ServerConfig::parse("server_id = 1", dir.path()).unwrap_err();
        assert!(err.contains("server_id"), "{err}");
        // The shared secret of old is no credential any more.
        let err =
            ServerConfig::parse(&format!("{base}peer_secret = \"\"\n"), dir.path()).unwrap_err();
        assert!(err.contains("peer_secret"), "{err}");
        // A credential too short, or missing.
        std::fs::write(dir.path().join("peer.credential"), "short\n").unwrap();
        let err = ServerConfig::parse(base, dir.path()).unwrap_err();
        assert!(err.contains("shorter than 32"), "{err}");
        std::fs::remove_file(dir.path().join("peer.credential")).unwrap();
        let err = ServerConfig::parse(base, dir.path()).unwrap_err();
        assert!(err.contains("tessera pool init"), "{err}");
    }

    /// The customer's attack on host binding: a config that claims another
    /// machine's hostid, to serve codes bound to it, does not start.
    #[test]
    fn a_config_cannot_claim_a_hostid() {
        let claimed = format!("hostid = \"mid-0123456789abcdef\"\n{MINIMAL}");
        let err = ServerConfig::parse(&claimed, Path::new(".")).unwrap_err();
        assert!(
            err.contains("can no longer be set in its config")
                && err.contains("tessera master init"),
            "{err}"
        );
    }

    /// A config without `pool_key_file`, or whose key file is missing or
    /// not a key, does not start, and the message says how to make one.
    #[test]
    fn the_pool_key_file_is_required_and_checked() {
        let without = MINIMAL.replace("pool_key_file = \"pool.key\"\n", "");
        let err = ServerConfig::parse(&without, Path::new(".")).unwrap_err();
        assert!(
            err.contains("`pool_key_file` is missing") && err.contains("tessera pool key --out"),
            "{err}"
        );

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("peer.credential"), "c".repeat(64)).unwrap();
        let config = ServerConfig::parse(MINIMAL, dir.path()).unwrap();
        let key_hex = "ab".repeat(32);
        let cases = [
            (None, "cannot read it"),
            (Some("abc\n".to_string()), "this one has 3 characters"),
            (
                Some(format!("{}zz\n", &key_hex[..62])),
                "character 63 of the pool key",
            ),
            (Some(format!("{key_hex}\n")), ""),
            (Some(key_hex.clone()), ""),
        ];
        for (text, expected) in cases {
            let path = dir.path().join("pool.key");
            let _ = std::fs::remove_file(&path);
            if let Some(text) = &text {
                std::fs::write(&path, text).unwrap();
            }
            match config.read_pool_key() {
                Ok(_) => assert_eq!(expected, "", "{text:?} was taken"),
                Err(err) => {
                    let err = err.to_string();
                    assert!(
                        !expected.is_empty()
                            && err.contains(expected)
                            && err.contains("pool.key")
                            && err.contains("tessera pool key --out"),
                        "{text:?}: {err}"
                    );
                }
            }
        }
    }
}
