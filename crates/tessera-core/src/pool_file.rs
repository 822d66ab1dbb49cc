//! The pool file (the seeds' redundant license file): pool id, sequence
//! number, servers in leader-priority order, per-feature initial
//! distribution, and the embedded license codes.
//!
//! ```toml
//! pool_id = "acme-eng"
//! sequence = 1
//!
//! [[servers]]
//! id = "A"
//! address = "10.0.0.1:27000"
//! credential_sha256 = "…"  # SHA-256 (hex) of A's peer credential
//!
//! [[admins]]           # who may read the status in full, or change the pool
//! name = "admin"
//! role = "admin"       # or "read", or "production" (a master's production servers)
//! token_sha256 = "…"   # SHA-256 (hex) of the administrator's token
//!
//! [distribution.cad]   # optional; none given: even split
//! A = 40
//!
//! [borrowing.cad]      # optional; the license code's threshold otherwise
//! threshold_percent = 80
//! batch = 5
//!
//! [policy.groups]      # optional: who may use what (`crate::policy`)
//! design = ["alice", "bob"]
//! [policy.features.cad]
//! include = ["group:design"]
//!
//! [temporary.cad]      # optional; tightens the vendor's temporary terms
//! devices_max = 2
//! period_s = 14400
//!
//! [[license]]          # as `tessera license sign` writes them
//! id = "..."
//! ```
//!
//! Parsing checks the file's own consistency; signatures are checked when a
//! server evaluates its [`crate::LicenseTable`] with its trusted keys.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::distribution::{DistributionError, DistributionTable};
use crate::license::{LicenseCode, LicenseCodeText, LicenseError};
use crate::names::check_name;
use crate::policy::{Policy, PolicyText};
use crate::temporary::{TemporaryLimits, TemporaryPolicy};
use crate::{FEATURES_MAX, LICENSE_CODES_MAX, POOL_FILE_BYTES_MAX, POOL_SERVERS_MAX};

/// Highest pool file sequence number: 2^53, the largest integer every JSON
/// reader carries exactly, and far below what TOML holds (2^63 - 1). An
/// administrator raising it by one a second would need 285 million years;
/// a file at the limit takes no further change, so the next sequence is
/// always representable.
pub const SEQUENCE_MAX: u64 = 1 << 53;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PoolFileError {
    #[error("pool file is not valid TOML: {0}")]
    Syntax(String),
    #[error("pool file is {bytes} bytes; the limit is {POOL_FILE_BYTES_MAX}")]
    TooLarge { bytes: usize },
    #[error("pool file: {0}")]
    Invalid(String),
    #[error("pool file: {0}")]
    License(#[from] LicenseError),
    #[error("pool file: {0}")]
    Distribution(#[from] DistributionError),
    #[error(
        "pool file: sequence {sequence} is above the limit {SEQUENCE_MAX}; number pool files \
         from 1 upwards"
    )]
    SequenceTooLarge { sequence: u64 },
}

/// One server of the pool.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerEntry {
    pub id: String,
    /// `host:port` of the server's HTTP API, as clients and peers reach it.
    pub address: String,
    /// SHA-256 (hex) of the secret this server proves itself with to its
    /// peers. A server without one cannot take part in the pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_sha256: Option<String>,
}

/// What an administrator's token allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdminRole {
    /// A production server of a master pool (seed 003): may hold a slot of
    /// the master's VID, and nothing more.
    Production,
    /// The full status: grants, users, hosts.
    Read,
    /// Everything `Read` allows, and changes to the pool.
    Admin,
}

impl AdminRole {
    /// The role as the pool file writes it.
    pub fn name(self) -> &'static str {
        match self {
            AdminRole::Production => "production",
            AdminRole::Read => "read",
            AdminRole::Admin => "admin",
        }
    }
}

/// One administrator's credential.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminEntry {
    pub name: String,
    pub role: AdminRole,
    /// SHA-256 (hex) of the administrator's bearer token.
    pub token_sha256: String,
}

/// Most administrator entries in a pool file.
pub const ADMINS_MAX: usize = 64;

/// A parsed, self-consistent pool file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolFile {
    pub pool_id: String,
    /// Higher replaces lower; the same number never carries two contents.
    pub sequence: u64,
    /// In leader-priority order.
    pub servers: Vec<ServerEntry>,
    /// Per feature, per server: the initial allocation.
    pub distribution: BTreeMap<String, BTreeMap<String, u32>>,
    /// Per feature: when and how much a server borrows.
    pub borrowing: BTreeMap<String, BorrowPolicy>,
    /// Per feature: the administrator's tightening of the vendor's terms
    /// for temporary licenses.
    pub temporary: BTreeMap<String, TemporaryLimits>,
    /// The administrator's usage policy (`[policy]`).
    pub policy: Policy,
    /// Administrators' credentials; none: nobody may change the pool or
    /// read its grants.
    pub admins: Vec<AdminEntry>,
    pub codes: Vec<LicenseCode>,
}

/// When a server asks the leader for more seats of a feature, and how many.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BorrowPolicy {
    /// Borrow once in-use / allocation exceeds this percentage (1 to 100);
    /// unset: the license code's `borrow_threshold_percent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold_percent: Option<u32>,
    /// Seats asked for at once beyond what a request needs; unset: 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<u32>,
}

impl BorrowPolicy {
    pub fn validate(&self, what: &str) -> Result<(), String> {
        if let Some(t) = self.threshold_percent {
            if !(1..=100).contains(&t) {
                return Err(format!(
                    "{what}: threshold_percent is {t}; it must be 1 to 100"
                ));
            }
        }
        if let Some(b) = self.batch {
            if !(1..=100_000).contains(&b) {
                return Err(format!("{what}: batch is {b}; it must be 1 to 100000"));
            }
        }
        Ok(())
    }

    /// `self`, with unset fields taken from `fallback`.
    pub fn or(self, fallback: BorrowPolicy) -> BorrowPolicy {
        BorrowPolicy {
            threshold_percent: self.threshold_percent.or(fallback.threshold_percent),
            batch: self.batch.or(fallback.batch),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PoolFileText {
    pool_id: String,
    sequence: u64,
    servers: Vec<ServerEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    admins: Vec<AdminEntry>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    distribution: BTreeMap<String, BTreeMap<String, u32>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    borrowing: BTreeMap<String, BorrowPolicy>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    temporary: BTreeMap<String, TemporaryLimits>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    policy: Option<PolicyText>,
    #[serde(default)]
    license: Vec<LicenseCodeText>,
}

impl PoolFile {
    pub fn parse(text: &str) -> Result<PoolFile, PoolFileError> {
        if text.len() > POOL_FILE_BYTES_MAX {
            return Err(PoolFileError::TooLarge { bytes: text.len() });
        }
        let raw: PoolFileText =
            toml::from_str(text).map_err(|err| PoolFileError::Syntax(err.to_string()))?;
        let codes = raw
            .license
            .iter()
            .map(LicenseCode::from_text)
            .collect::<Result<Vec<_>, _>>()?;
        let pool = PoolFile {
            pool_id: raw.pool_id,
            sequence: raw.sequence,
            servers: raw.servers,
            distribution: raw.distribution,
            borrowing: raw.borrowing,
            temporary: raw.temporary,
            policy: Policy::from_text(&raw.policy.unwrap_or_default(), text)
                .map_err(|reason| PoolFileError::Invalid(format!("policy: {reason}")))?,
            admins: raw.admins,
            codes,
        };
        pool.validate()?;
        Ok(pool)
    }

    /// The file as TOML text, which parses back to `self` when `self` is
    /// valid. Fails only on a sequence above [`SEQUENCE_MAX`] (TOML holds no
    /// integer above 2^63 - 1).
    pub fn to_toml(&self) -> Result<String, PoolFileError> {
        if self.sequence > SEQUENCE_MAX {
            return Err(PoolFileError::SequenceTooLarge {
                sequence: self.sequence,
            });
        }
        let raw = PoolFileText {
            pool_id: self.pool_id.clone(),
            sequence: self.sequence,
            servers: self.servers.clone(),
            distribution: self.distribution.clone(),
            borrowing: self.borrowing.clone(),
            temporary: self.temporary.clone(),
            policy: (!self.policy.is_empty()).then(|| self.policy.to_text()),
            admins: self.admins.clone(),
            license: self.codes.iter().map(LicenseCode::to_text).collect(),
        };
        toml::to_string(&raw).map_err(|err| PoolFileError::Invalid(err.to_string()))
    }

    /// The sequence of the file that follows this one, or `None` at [`SEQUENCE_MAX`].
    pub fn next_sequence(&self) -> Option<u64> {
        self.sequence
            .checked_add(1)
            .filter(|&next| next <= SEQUENCE_MAX)
    }

    pub fn server_ids(&self) -> Vec<String> {
        self.servers.iter().map(|s| s.id.clone()).collect()
    }

    pub fn server(&self, id: &str) -> Option<&ServerEntry> {
        self.servers.iter().find(|s| s.id == id)
    }

    /// Seats of every code for `feature`, served or not.
    pub fn nominal_seats(&self, feature: &str) -> u64 {
        self.codes
            .iter()
            .filter(|c| c.feature() == feature)
            .map(|c| u64::from(c.seats()))
            .sum()
    }

    /// The administrator whose token hashes to `token_sha256`, if any.
    pub fn admin_with_token(&self, token_sha256: &str) -> Option<&AdminEntry> {
        self.admins.iter().find(|a| a.token_sha256 == token_sha256)
    }

    fn validate_admins(&self) -> Result<(), PoolFileError> {
        let invalid = PoolFileError::Invalid;
        if self.admins.len() > ADMINS_MAX {
            return Err(invalid(format!(
                "{} admins; the limit is {ADMINS_MAX}",
                self.admins.len()
            )));
        }
        let mut names = BTreeSet::new();
        for admin in &self.admins {
            check_name("admin name", &admin.name).map_err(invalid)?;
            check_sha256(
                &format!("token_sha256 of admin `{}`", admin.name),
                &admin.token_sha256,
            )
            .map_err(invalid)?;
            if !names.insert(admin.name.as_str()) {
                return Err(invalid(format!("admin `{}` is listed twice", admin.name)));
            }
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), PoolFileError> {
        let invalid = PoolFileError::Invalid;
        check_name("pool_id", &self.pool_id).map_err(invalid)?;
        if self.sequence > SEQUENCE_MAX {
            return Err(PoolFileError::SequenceTooLarge {
                sequence: self.sequence,
            });
        }
        if self.servers.is_empty() || self.servers.len() > POOL_SERVERS_MAX {
            return Err(invalid(format!(
                "a pool has 1 to {POOL_SERVERS_MAX} servers; this file lists {}",
                self.servers.len()
            )));
        }
        let mut ids = BTreeSet::new();
        let mut addresses = BTreeSet::new();
        for server in &self.servers {
            check_name("server id", &server.id).map_err(invalid)?;
            check_address(&server.address).map_err(invalid)?;
            if !ids.insert(server.id.as_str()) {
                return Err(invalid(format!(
                    "server id `{}` is listed twice",
                    server.id
                )));
            }
            if !addresses.insert(server.address.as_str()) {
                return Err(invalid(format!(
                    "address {} is listed for two servers",
                    server.address
                )));
            }
            if let Some(hash) = &server.credential_sha256 {
                check_sha256(
                    &format!("credential_sha256 of server `{}`", server.id),
                    hash,
                )
                .map_err(invalid)?;
            }
        }
        self.validate_admins()?;
        if self.codes.len() > LICENSE_CODES_MAX {
            return Err(invalid(format!(
                "{} license codes; the limit is {LICENSE_CODES_MAX}",
                self.codes.len()
            )));
        }
        let mut code_ids = BTreeSet::new();
        let mut vendor_of: BTreeMap<&str, &str> = BTreeMap::new();
        for code in &self.codes {
            if !code_ids.insert(code.id()) {
                return Err(invalid(format!(
                    "license code {} appears twice; the same code never adds up",
                    code.id()
                )));
            }
            let vendor = vendor_of.entry(code.feature()).or_insert(code.vendor());
            if *vendor != code.vendor() {
                return Err(invalid(format!(
                    "feature `{}` is licensed by two vendors (`{}` and `{}`); a feature name must \
                     belong to one vendor in a pool",
                    code.feature(),
                    vendor,
                    code.vendor()
                )));
            }
        }
        if vendor_of.len() > FEATURES_MAX {
            return Err(invalid(format!(
                "{} features; the limit is {FEATURES_MAX}",
                vendor_of.len()
            )));
        }
        let server_ids = self.server_ids();
        for (feature, requested) in &self.distribution {
            if !vendor_of.contains_key(feature.as_str()) {
                return Err(invalid(format!(
                    "the distribution names feature `{feature}`, which no license code in this file names"
                )));
            }
            let nominal = self.nominal_seats(feature);
            let hard_limit = u32::try_from(nominal).unwrap_or(u32::MAX);
            DistributionTable::initial(feature, hard_limit, &server_ids, Some(requested))?;
        }
        for (feature, policy) in &self.borrowing {
            if !vendor_of.contains_key(feature.as_str()) {
                return Err(invalid(format!(
                    "the borrowing section names feature `{feature}`, which no license code in this file names"
                )));
            }
            policy
                .validate(&format!("borrowing of feature `{feature}`"))
                .map_err(invalid)?;
        }
        for feature in self.policy.features.keys() {
            if !vendor_of.contains_key(feature.as_str()) {
                return Err(invalid(format!(
                    "policy: the rules name feature `{feature}`, which no license code in this \
                     file names"
                )));
            }
            let (reserved, seats) = (
                self.policy.reserved_seats(feature),
                self.nominal_seats(feature),
            );
            if reserved > seats {
                return Err(invalid(format!(
                    "policy: the reserve rules of feature `{feature}` keep {reserved} seats, but \
                     its codes have {seats}"
                )));
            }
        }
        for (feature, limits) in &self.temporary {
            let what = format!("temporary licenses of feature `{feature}`");
            if !vendor_of.contains_key(feature.as_str()) {
                return Err(invalid(format!(
                    "the temporary section names feature `{feature}`, which no license code in \
                     this file names"
                )));
            }
            if limits.allowed == Some(false) {
                continue;
            }
            let vendor = self.vendor_temporary_terms(feature).ok_or_else(|| {
                invalid(format!(
                    "{what}: the vendor's codes do not all allow them; only `allowed = false` \
                     may be set"
                ))
            })?;
            limits
                .check(&vendor)
                .map_err(|reason| invalid(format!("{what}: {reason}")))?;
        }
        Ok(())
    }

    /// The vendor's terms for temporary licenses of `feature`: the
    /// strictest of its codes', if every one allows them.
    pub fn vendor_temporary_terms(&self, feature: &str) -> Option<TemporaryPolicy> {
        let policies: Option<Vec<TemporaryPolicy>> = self
            .codes
            .iter()
            .filter(|c| c.feature() == feature)
            .map(|c| c.fields().temporary)
            .collect();
        TemporaryPolicy::strictest(&policies?)
    }
}

/// `hash` is a SHA-256 in lowercase hex.
fn check_sha256(what: &str, hash: &str) -> Result<(), String> {
    let hex = hash.len() == 64
        && hash
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if hex {
        Ok(())
    } else {
        Err(format!(
            "{what} must be 64 lowercase hex digits (a SHA-256)"
        ))
    }
}

/// SHA-256 of a secret, in lowercase hex: how a pool file names a credential.
pub fn credential_sha256(secret: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(secret.trim().as_bytes()))
}

fn check_address(address: &str) -> Result<(), String> {
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| format!("address `{address}` is not of the form host:port"))?;
    if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(format!(
            "address `{address}` is not of the form host:port with a port of 1 to 65535"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::license::tests::{test_key, unsigned};

    fn pool_text(extra: &str) -> String {
        let key = test_key("acme", 1);
        let codes = LicenseCode::write_file(&[
            key.sign(unsigned("c1", "cad", 60)).unwrap(),
            key.sign(unsigned("c2", "cad", 40)).unwrap(),
        ]);
        pool_text_with(extra, &codes)
    }

    fn pool_text_with(extra: &str, codes: &str) -> String {
        format!(
            "pool_id = \"eng\"\nsequence = 3\n\
             [[servers]]\nid = \"A\"\naddress = \"127.0.0.1:27001\"\n\
             [[servers]]\nid = \"B\"\naddress = \"127.0.0.1:27002\"\n\
             [[servers]]\nid = \"C\"\naddress = \"127.0.0.1:27003\"\n{extra}\n{codes}"
        )
    }

    #[test]
    fn parses_and_round_trips() {
        let pool = PoolFile::parse(&pool_text(
            "[distribution.cad]\nA = 40\nB = 30\nC = 30\n[borrowing.cad]\nthreshold_percent = 90\nbatch = 4\n",
        ))
        .unwrap();
        assert_eq!(pool.borrowing["cad"].threshold_percent, Some(90));
        assert_eq!(pool.sequence, 3);
        assert_eq!(pool.server_ids(), vec!["A", "B", "C"]);
        assert_eq!(
            pool.nominal_seats("cad"),
            100,
            "codes of one feature add up"
        );
        assert_eq!(PoolFile::parse(&pool.to_toml().unwrap()).unwrap(), pool);
    }

    /// A sequence of i64::MAX (the largest TOML integer) once froze the pool:
    /// every later change overflowed making the next file. Sequences are
    /// bounded well below it, and the file at the bound has no next.
    #[test]
    fn sequences_stop_at_the_limit() {
        let at = |sequence: &str| pool_text("").replace("sequence = 3", sequence);
        for too_large in [
            format!("sequence = {}", SEQUENCE_MAX + 1),
            format!("sequence = {}", i64::MAX),
        ] {
            let err = PoolFile::parse(&at(&too_large)).unwrap_err();
            assert!(
                matches!(err, PoolFileError::SequenceTooLarge { .. }),
                "{too_large}: {err}"
            );
            assert!(err.to_string().contains("above the limit"), "{err}");
        }
        for not_a_sequence in ["sequence = -1", "sequence = 18446744073709551615"] {
            assert!(
                matches!(
                    PoolFile::parse(&at(not_a_sequence)),
                    Err(PoolFileError::Syntax(_))
                ),
                "{not_a_sequence}"
            );
        }
        let last = PoolFile::parse(&at(&format!("sequence = {SEQUENCE_MAX}"))).unwrap();
        assert_eq!(last.next_sequence(), None);
        assert_eq!(PoolFile::parse(&last.to_toml().unwrap()).unwrap(), last);
        let mut beyond = last.clone();
        beyond.sequence = u64::MAX;
        assert!(matches!(
            beyond.to_toml(),
            Err(PoolFileError::SequenceTooLarge { .. })
        ));
    }

    #[test]
    fn admins_and_credentials_are_checked_and_kept() {
        let token_hash = credential_sha256("a token");
        let admins = format!(
            "[[admins]]\nname = \"ops\"\nrole = \"read\"\ntoken_sha256 = \"{token_hash}\"\n"
        );
        let pool = PoolFile::parse(&pool_text(&admins)).unwrap();
        assert_eq!(pool.admins[0].role, AdminRole::Read);
        assert_eq!(pool.admin_with_token(&token_hash).unwrap().name, "ops");
        assert_eq!(
            PoolFile::parse(&pool.to_toml().unwrap()).unwrap(),
            pool,
            "kept"
        );
        assert!(AdminRole::Read < AdminRole::Admin);
        for (bad, expected) in [
            (admins.replace(&token_hash, "ABC"), "64 lowercase hex"),
            (admins.replace("\"read\"", "\"root\""), "role"),
            (format!("{admins}{admins}"), "listed twice"),
        ] {
            let err = PoolFile::parse(&pool_text(&bad)).unwrap_err().to_string();
            assert!(err.contains(expected), "{bad}: {err}");
        }
        let credential = pool_text("").replace(
            "address = \"127.0.0.1:27001\"\n",
            "address = \"127.0.0.1:27001\"\ncredential_sha256 = \"short\"\n",
        );
        let err = PoolFile::parse(&credential).unwrap_err().to_string();
        assert!(err.contains("credential_sha256 of server `A`"), "{err}");
    }

    #[test]
    fn the_pool_tightens_the_vendors_temporary_terms_and_never_loosens_them() {
        let key = test_key("acme", 1);
        let mut strict = unsigned("c1", "cad", 60);
        strict.temporary = Some(TemporaryPolicy {
            devices_max: 2,
            ..TemporaryPolicy::DEFAULT
        });
        let mut loose = unsigned("c2", "cad", 40);
        loose.temporary = Some(TemporaryPolicy {
            offline_days_max: 7,
            ..TemporaryPolicy::DEFAULT
        });
        let codes = LicenseCode::write_file(&[key.sign(strict).unwrap(), key.sign(loose).unwrap()]);
        let text = |terms: &str| pool_text_with(&format!("[temporary.cad]\n{terms}"), &codes);
        let pool = PoolFile::parse(&text(
            "devices_max = 1\nperiod_s = 3600\nextend_after_s = 600\n",
        ))
        .unwrap();
        let vendor = pool.vendor_temporary_terms("cad").unwrap();
        // The strictest of the two codes: 2 devices, no offline days.
        assert_eq!((vendor.devices_max, vendor.offline_days_max), (2, 0));
        let terms = pool.temporary["cad"].apply(vendor).unwrap();
        assert_eq!(
            (terms.devices_max, terms.period_s, terms.extend_after_s),
            (1, 3600, 600)
        );
        assert_eq!(
            PoolFile::parse(&pool.to_toml().unwrap()).unwrap(),
            pool,
            "kept"
        );
        let off = PoolFile::parse(&text("allowed = false\n")).unwrap();
        assert_eq!(off.temporary["cad"].apply(vendor), None);
        for (terms, expected) in [
            (
                "devices_max = 3\n",
                "devices_max is 3, looser than the vendor's 2",
            ),
            (
                "period_s = 28801\n",
                "period_s is 28801, looser than the vendor's 28800",
            ),
            (
                "offline_days_max = 1\n",
                "offline_days_max is 1, looser than the vendor's 0",
            ),
            ("return_on_close = false\n", "return_on_close is false"),
            (
                "period_s = 3600\n",
                "extend_after_s is 14400; it must be at least 1 and below",
            ),
            ("period_s = 10\n", "period_s is 10; it must be at least 60"),
            ("devices_max = 0\n", "devices_max is 0"),
            ("seats = 1\n", "unknown field `seats`"),
        ] {
            let err = PoolFile::parse(&text(terms)).unwrap_err().to_string();
            assert!(err.contains(expected), "{terms}: {err}");
        }
        // Codes that allow no temporary licenses take only `allowed = false`.
        let err = PoolFile::parse(&pool_text("[temporary.cad]\ndevices_max = 1\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("do not all allow them"), "{err}");
        PoolFile::parse(&pool_text("[temporary.cad]\nallowed = false\n")).unwrap();
        let err = PoolFile::parse(&pool_text("[temporary.cam]\nallowed = false\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("names feature `cam`"), "{err}");
    }

    #[test]
    fn the_policy_is_kept_with_the_pool_file_and_refused_with_its_line() {
        let rules = "[policy.groups]\ndesign = [\"alice\"]\n[policy.features.cad]\n\
                     include = [\"group:design\"]\nexclude = [\"address:10.0.0.0/8\"]\n";
        let pool = PoolFile::parse(&pool_text(rules)).unwrap();
        let asker = crate::policy::Asker {
            user: "bob",
            host: "pc",
            address: None,
            display: None,
        };
        assert!(pool.policy.admits("cad", &asker).is_err());
        assert_eq!(
            PoolFile::parse(&pool.to_toml().unwrap()).unwrap(),
            pool,
            "kept"
        );
        let err = PoolFile::parse(&pool_text(&rules.replace("group:design", "group:ops")))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("pool file: policy: line 15: include rule \"group:ops\": no group `ops`"),
            "{err}"
        );
        let err = PoolFile::parse(&pool_text(&rules.replace("features.cad", "features.cam")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("name feature `cam`"), "{err}");
    }

    #[test]
    fn inconsistent_files_are_refused_with_the_reason() {
        let cases = [
            (
                "[distribution.cad]\nA = 60\nB = 41\n",
                "the distribution of feature `cad` gives 101 seats but its hard limit is 100",
            ),
            (
                "[distribution.cam]\nA = 1\n",
                "feature `cam`, which no license code",
            ),
            ("[distribution.cad]\nD = 1\n", "server `D`"),
            (
                "[borrowing.cad]\nthreshold_percent = 0\n",
                "threshold_percent is 0",
            ),
            (
                "[borrowing.cam]\nbatch = 2\n",
                "borrowing section names feature `cam`",
            ),
            ("bogus = 1\n", "unknown field `bogus`"),
        ];
        for (extra, expected) in cases {
            let err = PoolFile::parse(&pool_text(extra)).unwrap_err().to_string();
            assert!(
                err.contains(expected),
                "`{err}` should contain `{expected}`"
            );
        }
        let twice = pool_text("").replace("id = \"B\"", "id = \"A\"");
        assert!(PoolFile::parse(&twice)
            .unwrap_err()
            .to_string()
            .contains("listed twice"));
        let no_port = pool_text("").replace("127.0.0.1:27003", "127.0.0.1");
        assert!(PoolFile::parse(&no_port)
            .unwrap_err()
            .to_string()
            .contains("host:port"));
        let duplicate_code = pool_text("").replace("id = \"c2\"", "id = \"c1\"");
        assert!(PoolFile::parse(&duplicate_code)
            .unwrap_err()
            .to_string()
            .contains("appears twice"));
        assert!(matches!(
            PoolFile::parse("pool_id = "),
            Err(PoolFileError::Syntax(_))
        ));
    }

    #[test]
    fn a_feature_belongs_to_one_vendor() {
        let acme = test_key("acme", 1);
        let globex = test_key("globex", 2);
        let codes = LicenseCode::write_file(&[
            acme.sign(unsigned("c1", "cad", 1)).unwrap(),
            globex.sign(unsigned("g1", "cad", 1)).unwrap(),
        ]);
        let text = format!(
            "pool_id = \"p\"\nsequence = 1\n[[servers]]\nid = \"A\"\naddress = \"h:1\"\n{codes}"
        );
        let err = PoolFile::parse(&text).unwrap_err().to_string();
        assert!(err.contains("licensed by two vendors"), "{err}");
    }
}
