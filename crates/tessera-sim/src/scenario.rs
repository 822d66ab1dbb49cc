//! What one seed builds: the pool (servers, seats, clocks), its license
//! codes and pool file, and the server configs.

use std::collections::BTreeMap;
use std::path::Path;

use rand::rngs::StdRng;
use rand::Rng;
use tessera_core::license::UnsignedCode;
use tessera_core::{
    CivilDate, Expiry, HostBinding, LicenseCode, Policy, VendorPublicKey, VendorSecretKey, Version,
};
use tessera_server::ServerConfig;

use crate::rules::Rules;
use crate::Options;

pub const VENDOR: &str = "acme";
pub const FEATURE: &str = "app";
pub const VERSION: &str = "1.0";
pub const POOL_ID: &str = "sim";
pub const PORT: u16 = 27000;
/// The code's lease and heartbeat: the shortest a code may set, so that the
/// safe wait for a silent server (quota lease + lease, stretched) is short.
pub const LEASE_S: u32 = 2;
pub const HEARTBEAT_S: u32 = 1;
/// Drift bound of the pool's config: the ratio of any two clocks' rates is
/// at most 1 + this.
pub const DRIFT_PERCENT: u32 = 1;
/// Wall-clock start of every run: codes are issued before and expire after.
pub const EPOCH_UNIX_MS: i64 = 1_780_000_000_000; // 2026-05-28
pub const CODES_ISSUED: &str = "2026-01-01";
pub const CODES_EXPIRE: &str = "2099-12-31";
/// The pool key file every server's config names. The same key for every
/// seed: it is drawn from no generator, so a seed's run is what it was
/// before servers had keys.
pub const POOL_KEY_FILE: &str = "pool.key";

/// The text of the pool's key file.
pub fn pool_key_text() -> String {
    tessera_core::PoolKey::from_bytes([0x5e; 32]).to_file_text()
}

/// One server of the simulated pool.
#[derive(Clone, Debug)]
pub struct ServerSpec {
    pub id: String,
    /// Turmoil host name, also the name in its address.
    pub host: String,
    /// Its clock runs this many parts per million fast, within the bound.
    pub rate_ppm: i64,
    /// Its machine's hostid, with host-bound codes ([`Options::host_codes`]).
    pub hostid: Option<String>,
}

impl ServerSpec {
    pub fn address(&self) -> String {
        format!("{}:{PORT}", self.host)
    }
}

/// Everything fixed before the run starts.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub servers: Vec<ServerSpec>,
    pub hard_limit: u32,
    /// The codes' lease, in seconds.
    pub lease_s: u32,
    pub programs: usize,
    pub client_hosts: usize,
    pub key: VendorSecretKey,
    pub pool_text: String,
    pub codes: Vec<LicenseCode>,
    /// Each server serves only its own host's code ([`Options::host_codes`]).
    pub host_codes: bool,
    /// The pool file's distribution at the start.
    pub distribution: Option<BTreeMap<String, u32>>,
    /// The feature's pool-wide `reserve` and `max` rules, if the seed drew
    /// them ([`Scenario::set_rules`]).
    pub rules: Option<Rules>,
    /// Servers answer grants before syncing them ([`Options::background_sync`]).
    pub background_sync: bool,
}

pub const SERVER_IDS: [&str; 7] = ["A", "B", "C", "D", "E", "F", "G"];

impl Scenario {
    pub fn new(rng: &mut StdRng, options: &Options) -> Scenario {
        let count = rng.gen_range(options.servers.clone());
        let servers: Vec<ServerSpec> = SERVER_IDS[..count]
            .iter()
            .map(|id| ServerSpec {
                id: id.to_string(),
                host: format!("server-{}", id.to_lowercase()),
                // Spread over the whole band, its edges often: a pair at the
                // two edges differs by exactly the bound.
                rate_ppm: match rng.gen_range(0..4) {
                    0 => 0,
                    1 => i64::from(DRIFT_PERCENT) * 10_000,
                    _ => rng.gen_range(0..=i64::from(DRIFT_PERCENT) * 10_000),
                },
                hostid: options.host_codes.then(|| host_of(id)),
            })
            .collect();
        let hard_limit = (count as u32) * rng.gen_range(options.seats_per_server.clone())
            + rng.gen_range(0..count as u32);
        // More programs than seats, so every server's allocation is contended.
        let programs = options.programs.unwrap_or_else(|| {
            (hard_limit as usize) * rng.gen_range(15..=25) / 10 + rng.gen_range(0..8)
        });
        let key = VendorSecretKey::from_seed(VENDOR, rng.gen()).expect("a valid vendor name");
        let lease_s = if options.lease_s.start() == options.lease_s.end() {
            *options.lease_s.start()
        } else {
            rng.gen_range(options.lease_s.clone())
        };
        let codes = if options.host_codes {
            // One code per server, each of the hard limit and bound to that
            // server's host: each server serves one of them, a pool of
            // masters' shape, and the pool holds at most one code's seats.
            servers
                .iter()
                .map(|s| {
                    let id = format!("app-{}", s.id);
                    sign_for(
                        &key,
                        &id,
                        hard_limit,
                        lease_s,
                        HostBinding::Host(host_of(&s.id)),
                    )
                })
                .collect()
        } else {
            vec![sign(&key, "app-1", hard_limit, lease_s)]
        };
        let nominal = hard_limit * codes.len() as u32;
        let distribution = random_distribution(rng, &servers, nominal);
        let pool_text = pool_text(1, &servers, &distribution, &codes, "");
        Scenario {
            servers,
            hard_limit,
            lease_s,
            programs,
            client_hosts: options.client_hosts,
            key,
            pool_text,
            codes,
            host_codes: options.host_codes,
            distribution,
            rules: None,
            background_sync: options.background_sync,
        }
    }

    /// Gives the feature `rules`: the pool file carries them from the
    /// start, and the administrator's pool files keep them
    /// ([`Scenario::policy_text`]), unless they are
    /// [withheld](Rules::withheld).
    pub fn set_rules(&mut self, rules: Rules) {
        self.rules = Some(rules);
        self.pool_text = pool_text(
            1,
            &self.servers,
            &self.distribution,
            &self.codes,
            self.policy_text(),
        );
    }

    /// The `[policy]` tables every pool file the servers get carries:
    /// empty without rules, or with rules withheld.
    pub fn policy_text(&self) -> &str {
        match &self.rules {
            Some(rules) if !rules.withheld => &rules.text,
            _ => "",
        }
    }

    /// The rules the checker judges by, as the core parses them from the
    /// first pool file (with them, even where they are withheld from the
    /// servers), and the feature's nominal seats in it.
    pub fn rules_policy(&self) -> Option<(tessera_core::policy::Policy, u64)> {
        let rules = self.rules.as_ref()?;
        let text = pool_text(
            1,
            &self.servers,
            &self.distribution,
            &self.codes,
            &rules.text,
        );
        Some(crate::rules::parse(&text))
    }

    pub fn vendor(&self) -> VendorPublicKey {
        self.key.public()
    }

    pub fn server_config(&self, server: &ServerSpec, dir: &Path) -> ServerConfig {
        let vendor = self.vendor();
        // The simulated network carries plain HTTP, but every peer request
        // proves its sender with its credential, as on a real network.
        let credential_file = format!("peer-{}.credential", server.id);
        std::fs::write(dir.join(&credential_file), peer_credential(&server.id))
            .expect("write the peer credential");
        let text = format!(
            "server_id = \"{id}\"\npool_file = \"pool.toml\"\ndata_dir = \"data-{id}\"\n\
             pool_key_file = \"{POOL_KEY_FILE}\"\n\
             listen = \"0.0.0.0:{PORT}\"\n\
             grace_on_missing_store = true\n\n\
             [[vendors]]\nname = \"{VENDOR}\"\npublic_key = \"{key}\"\n\n\
             [timing]\nclock_drift_percent = {DRIFT_PERCENT}\nelection_jitter_ms = 1\n\n\
             [security]\nplain_http = true\npeer_credential_file = \"{credential_file}\"\n\n\
             [store]\nsync = \"{sync}\"\n",
            id = server.id,
            key = vendor.to_base64(),
            sync = if self.background_sync {
                "background"
            } else {
                "before-answer"
            },
        );
        ServerConfig::parse(&text, dir).expect("the simulator writes a valid config")
    }
}

/// A code for `seats` seats of the feature with a lease of `lease_s`,
/// signed by the vendor.
pub fn sign(key: &VendorSecretKey, id: &str, seats: u32, lease_s: u32) -> LicenseCode {
    sign_for(key, id, seats, lease_s, HostBinding::Any)
}

/// Server `id`'s hostid with host-bound codes.
pub fn host_of(id: &str) -> String {
    format!("mid-51{:014x}", u64::from(id.as_bytes()[0]))
}

/// [`sign`], bound to `hostid`.
pub fn sign_for(
    key: &VendorSecretKey,
    id: &str,
    seats: u32,
    lease_s: u32,
    hostid: HostBinding,
) -> LicenseCode {
    key.sign(UnsignedCode {
        id: id.to_string(),
        vendor: VENDOR.to_string(),
        feature: FEATURE.to_string(),
        version_min: Version::parse("1.0").expect("a version"),
        version_max: Version::parse("1.99").expect("a version"),
        seats,
        issued: CivilDate::parse(CODES_ISSUED).expect("a date"),
        expiry: Expiry::parse(CODES_EXPIRE).expect("a date"),
        hostid,
        policy: Policy {
            borrow_threshold_percent: 80,
            heartbeat_interval_s: HEARTBEAT_S,
            lease_s,
        },
        // Temporary licenses of the shortest period: programs take some.
        temporary: Some(tessera_core::temporary::TemporaryPolicy {
            period_s: tessera_core::temporary::PERIOD_S_MIN,
            extend_after_s: tessera_core::temporary::PERIOD_S_MIN / 2,
            ..tessera_core::temporary::TemporaryPolicy::DEFAULT
        }),
    })
    .expect("a valid code")
}

/// Seats per server summing to at most `hard_limit` (the rest in the free
/// pool), or none: the pool file then splits them evenly.
pub fn random_distribution(
    rng: &mut StdRng,
    servers: &[ServerSpec],
    hard_limit: u32,
) -> Option<BTreeMap<String, u32>> {
    if rng.gen_bool(0.3) {
        return None;
    }
    let mut left = hard_limit - rng.gen_range(0..=hard_limit / 4);
    let mut split = BTreeMap::new();
    for (i, server) in servers.iter().enumerate() {
        let seats = if i + 1 == servers.len() {
            left
        } else {
            rng.gen_range(0..=left)
        };
        left -= seats;
        split.insert(server.id.clone(), seats);
    }
    Some(split)
}

/// The simulated administrator's token (role `admin`).
const ADMIN_TOKEN: &str = "simulated-administrator-token-of-the-pool";

/// The header that carries the administrator's token.
pub fn admin_authorization() -> (String, String) {
    ("authorization".into(), format!("Bearer {ADMIN_TOKEN}"))
}

/// Server `id`'s peer credential: fixed, so that a run replays exactly.
pub fn peer_credential(id: &str) -> String {
    format!("simulated-peer-credential-of-server-{id}")
}

/// The pool file: servers in priority order, the distribution, the
/// `[policy]` tables (`policy`, as written), the codes.
pub fn pool_text(
    sequence: u64,
    servers: &[ServerSpec],
    distribution: &Option<BTreeMap<String, u32>>,
    codes: &[LicenseCode],
    policy: &str,
) -> String {
    let mut text = format!("pool_id = \"{POOL_ID}\"\nsequence = {sequence}\n\n");
    for server in servers {
        text.push_str(&format!(
            "[[servers]]\nid = \"{}\"\naddress = \"{}\"\ncredential_sha256 = \"{}\"\n\n",
            server.id,
            server.address(),
            tessera_core::credential_sha256(&peer_credential(&server.id))
        ));
    }
    text.push_str(&format!(
        "[[admins]]\nname = \"admin\"\nrole = \"admin\"\ntoken_sha256 = \"{}\"\n\n",
        tessera_core::credential_sha256(ADMIN_TOKEN)
    ));
    if let Some(split) = distribution {
        text.push_str(&format!("[distribution.{FEATURE}]\n"));
        for (id, seats) in split {
            text.push_str(&format!("{id} = {seats}\n"));
        }
        text.push('\n');
    }
    text.push_str(policy);
    text.push_str(&LicenseCode::write_file(codes));
    text
}
