//! The server's config file (`tessera.toml`).
//!
//! ```toml
//! server_id = "A"
//! pool_file = "pool.toml"     # relative to this file
//! data_dir = "data"           # relative to this file; holds the grant store
//! # listen = "0.0.0.0:27000"  # default: this server's address in the pool file
//! # hostid = "mid-..."        # default: derived from /etc/machine-id
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
//! [borrowing.cad]             # optional; overrides the pool file's
//! threshold_percent = 90
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;
use tessera_core::{BorrowPolicy, VendorPublicKey};

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
    peer_secret: Option<String>,
    #[serde(default)]
    borrowing: std::collections::BTreeMap<String, BorrowPolicy>,
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
    /// Requests in flight at once; more wait in the accept queue.
    pub requests_in_flight_max: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            grants_max: 2_000_000,
            grants_per_client_max: 10_000,
            clients_max: 1_000_000,
            requests_in_flight_max: 4_096,
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
    pub hostid: Option<String>,
    pub vendors: Vec<VendorPublicKey>,
    pub limits: Limits,
    pub timing: Timing,
    /// When false, a server without a store issues at once. Only right for a
    /// pool that has never issued a seat (`tessera server --new-pool`).
    pub grace_on_missing_store: bool,
    /// When set, peers and administrators must present it as a bearer token.
    pub peer_secret: Option<String>,
    /// Per feature: this server's own borrowing threshold and batch, over
    /// the pool file's.
    pub borrowing: std::collections::BTreeMap<String, BorrowPolicy>,
    /// Re-form the pool from the survivors of a lost majority
    /// (`tessera server --recover-pool FILE`): the pool log is set aside and
    /// `pool_file` (the survivors' pool file) starts a new pool whose seats
    /// wait out the lost servers' grants.
    pub recover_pool: bool,
}

impl ServerConfig {
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
        if let Some(secret) = &raw.peer_secret {
            check_peer_secret(secret)?;
        }
        if raw.timing.store_batch_max == 0 || raw.timing.expiry_sweep_interval_ms == 0 {
            return Err(
                "timing.store_batch_max and expiry_sweep_interval_ms must be above 0".into(),
            );
        }
        Ok(ServerConfig {
            server_id: raw.server_id,
            pool_file: base.join(raw.pool_file),
            data_dir: base.join(raw.data_dir),
            listen: raw.listen,
            hostid: raw.hostid,
            vendors,
            limits: raw.limits,
            timing: raw.timing,
            grace_on_missing_store: raw.grace_on_missing_store,
            peer_secret: raw.peer_secret,
            borrowing: raw.borrowing,
            recover_pool: false,
        })
    }
}

/// Shortest `peer_secret` taken, in bytes. An empty one once let requests
/// without any `Authorization` header in; a short one is guessed.
pub const PEER_SECRET_BYTES_MIN: usize = 16;

fn check_peer_secret(secret: &str) -> Result<(), String> {
    if secret.trim().len() < PEER_SECRET_BYTES_MIN {
        return Err(format!(
            "peer_secret is {} bytes{}; it must be at least {PEER_SECRET_BYTES_MIN} bytes other \
             than spaces (for example 32 random characters: `openssl rand -hex 16`), or left \
             out",
            secret.len(),
            if secret.trim().is_empty() && !secret.is_empty() {
                " of spaces"
            } else {
                ""
            }
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_with_defaults_and_refuses_bad_keys() {
        let config = ServerConfig::parse(
            "server_id = \"A\"\npool_file = \"pool.toml\"\ndata_dir = \"d\"\n",
            Path::new("/etc/tessera"),
        )
        .unwrap();
        assert_eq!(config.pool_file, Path::new("/etc/tessera/pool.toml"));
        assert_eq!(config.limits, Limits::default());
        assert!(config.grace_on_missing_store);
        let err = ServerConfig::parse(
            "server_id = \"A\"\npool_file = \"p\"\ndata_dir = \"d\"\n[[vendors]]\nname = \"acme\"\npublic_key = \"nope\"\n",
            Path::new("."),
        )
        .unwrap_err();
        assert!(err.contains("public key of `acme`"), "{err}");
        let err = ServerConfig::parse("server_id = 1", Path::new(".")).unwrap_err();
        assert!(err.contains("server_id"), "{err}");
    }

    /// `peer_secret = ""` once let peer and admin requests in without any
    /// `Authorization` header: an empty, blank or short secret is refused.
    #[test]
    fn weak_peer_secrets_are_refused() {
        let with = |secret: &str| {
            ServerConfig::parse(
                &format!(
                    "server_id = \"A\"\npool_file = \"p\"\ndata_dir = \"d\"\npeer_secret = \"{secret}\"\n"
                ),
                Path::new("."),
            )
        };
        for weak in [
            "",
            "   ",
            "\\t\\n",
            "short",
            "fifteen-bytes!!",
            "   padded-to-16  ",
        ] {
            let err = with(weak).unwrap_err();
            assert!(err.contains("at least 16 bytes"), "{weak:?}: {err}");
        }
        let strong = "0123456789abcdef";
        assert_eq!(with(strong).unwrap().peer_secret.as_deref(), Some(strong));
    }
}
