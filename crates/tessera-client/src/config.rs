//! What a client tells the servers about itself, and how long it waits for them.

use std::time::Duration;

use tessera_proto::MAX_FIELD_BYTES;

use crate::error::ClientError;
use crate::trust::Trust;

/// How long one request may take from connect to the last byte of the answer.
pub const REQUEST_TIMEOUT_DEFAULT: Duration = Duration::from_secs(2);
/// How long opening a TCP connection to one server may take. Short, because a
/// dead server should cost the fail-over as little as possible.
pub const CONNECT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(1);
/// Most servers a client is configured with (a pool has 1 to 11).
pub const SERVERS_MAX: usize = 32;

/// How a [`Client`](crate::Client) reaches the pool and names itself.
///
/// Build one with [`ClientConfig::new`], then change any public field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientConfig {
    /// `host:port` of the pool's servers, in the order checkouts try them.
    pub servers: Vec<String>,
    /// Names this process to the servers; grants are bound to it. The default
    /// is unique per process: `<host>-<pid>-<random>`.
    pub client_id: String,
    /// The person running the program, as shown by `tessera status`.
    pub user: String,
    /// The machine running the program, as shown by `tessera status`.
    pub host: String,
    /// The program's display, as FlexNet's DISPLAY: `$DISPLAY`, else the
    /// terminal of its standard input (`/dev/pts/3`); `None` where it has
    /// neither. The pool's `display:` rules name it.
    pub display: Option<String>,
    /// Time limit of one request to one server.
    pub request_timeout: Duration,
    /// Time limit of opening a connection to one server.
    pub connect_timeout: Duration,
    /// How the servers are checked: by default, against the pool CA in the
    /// file that `TESSERA_CA_FILE` names.
    pub tls: ClientTls,
    /// How checkouts, heartbeats and check-ins travel: the framed protocol
    /// by default (over TLS; REST on plain HTTP and to servers that do not
    /// speak it), or REST always.
    pub protocol: Protocol,
    /// A bearer token of the pool file's `[[admins]]`, sent with every
    /// checkout, heartbeat and check-in: a master's VID slots are lent only
    /// to callers with a token of role `production`. `None` for programs.
    pub token: Option<BearerToken>,
    /// Whose word makes a seat valid: the vendor's public keys, set by the
    /// vendor's code (never read from a file its user edits). The default,
    /// no keys, is refused by [`Client::new`](crate::Client::new).
    pub trust: Trust,
    /// Where the latest time this program trusted is kept, so a clock set
    /// back is noticed (`$XDG_CACHE_HOME/tessera/clock`, or
    /// `~/.cache/tessera/clock`); `None`: kept in memory only.
    pub clock_file: Option<std::path::PathBuf>,
    /// A production server asking a master for its VID: its answer key
    /// (base64), which the VID certificate will name. `None` for programs.
    pub server_key: Option<String>,
    /// This device, as temporary licenses name it: by default derived from
    /// the machine's id and the user (`dev-` and 16 hex digits), so a token
    /// copied to another machine does not count there.
    pub device: String,
    /// Where temporary licenses are kept between runs
    /// (`$XDG_CACHE_HOME/tessera/temporary`, or `~/.cache/tessera/temporary`).
    pub temporary_dir: Option<std::path::PathBuf>,
    /// The wall clock the SDK judges dates by: the machine's, or a
    /// simulator's.
    pub wall_clock: WallClock,
}

/// Where the SDK reads the time of day (Unix ms): the system clock by
/// default; a simulator or a test gives its own. The SDK reads it again at
/// least every [`WallClock::recheck`] while it waits for a date (a
/// temporary license's extension), since a wall clock may jump (a laptop
/// waking up, a test moving days on).
#[derive(Clone)]
pub struct WallClock {
    now: Option<std::sync::Arc<dyn Fn() -> i64 + Send + Sync>>,
    recheck: std::time::Duration,
}

impl Default for WallClock {
    fn default() -> Self {
        WallClock {
            now: None,
            recheck: WallClock::RECHECK,
        }
    }
}

impl WallClock {
    /// How often a wait for a date reads the clock again, by default.
    pub const RECHECK: std::time::Duration = std::time::Duration::from_secs(60);

    pub fn new(now_unix_ms: impl Fn() -> i64 + Send + Sync + 'static) -> WallClock {
        WallClock {
            now: Some(std::sync::Arc::new(now_unix_ms)),
            recheck: WallClock::RECHECK,
        }
    }

    /// This clock, read again at least every `recheck` while waiting.
    pub fn rechecked_every(mut self, recheck: std::time::Duration) -> WallClock {
        self.recheck = recheck.max(std::time::Duration::from_millis(1));
        self
    }

    pub fn recheck(&self) -> std::time::Duration {
        self.recheck
    }

    pub fn now_unix_ms(&self) -> i64 {
        match &self.now {
            Some(now) => now(),
            None => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |elapsed| elapsed.as_millis() as i64),
        }
    }
}

impl std::fmt::Debug for WallClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.now {
            Some(_) => "WallClock(given)",
            None => "WallClock(system)",
        })
    }
}

impl PartialEq for WallClock {
    fn eq(&self, other: &WallClock) -> bool {
        let same = match (&self.now, &other.now) {
            (None, None) => true,
            (Some(a), Some(b)) => std::sync::Arc::ptr_eq(a, b),
            _ => false,
        };
        same && self.recheck == other.recheck
    }
}

impl Eq for WallClock {}

/// How a client's checkouts, heartbeats and check-ins travel
/// (PROTOCOL.md, "The framed protocol").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Protocol {
    /// One small frame each way on a TLS connection that chose ALPN
    /// `tessera/1`: the same JSON bodies as REST without HTTP's request
    /// line and headers, about a quarter less server CPU per checkout.
    /// Status and every other request go over REST.
    #[default]
    Framed,
    /// HTTP/1.1 and JSON for every request.
    Rest,
}

/// The environment variable naming the pool CA file (`ca.pem` of `tessera
/// pool init`) when [`ClientConfig::tls`] is [`ClientTls::FromEnvironment`].
pub const CA_FILE_ENV: &str = "TESSERA_CA_FILE";

/// How a client checks that it talks to the pool's servers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ClientTls {
    /// TLS, trusting the pool CA in the file named by `TESSERA_CA_FILE`
    /// (read when the [`Client`](crate::Client) is made).
    #[default]
    FromEnvironment,
    /// TLS, trusting this pool CA (PEM): for programs that ship or fetch it.
    PoolCa(Vec<u8>),
    /// Plain HTTP: anyone on the network path reads and rewrites the
    /// traffic. Only for loopback demos and tests.
    Plain,
}

impl ClientTls {
    /// The transport's TLS setting, the pool CA read if from the environment.
    pub(crate) fn resolve(&self) -> Result<tessera_transport::TransportTls, ClientError> {
        use tessera_transport::TransportTls;
        match self {
            ClientTls::PoolCa(ca_pem) => Ok(TransportTls::Verify {
                ca_pem: ca_pem.clone(),
            }),
            ClientTls::Plain => Ok(TransportTls::Plain),
            ClientTls::FromEnvironment => {
                let Some(path) = std::env::var_os(CA_FILE_ENV) else {
                    return Err(invalid(format!(
                        "no pool CA to check the servers with: set {CA_FILE_ENV} to the pool's \
                         ca.pem (from `tessera pool init`), or set ClientConfig::tls"
                    )));
                };
                TransportTls::from_ca_file(std::path::Path::new(&path)).map_err(invalid)
            }
        }
    }
}

impl ClientConfig {
    /// A configuration for these servers (`host:port`, in priority order), with
    /// user and host read from the environment and a fresh client id.
    pub fn new<I, S>(servers: I) -> ClientConfig
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let host = local_host_name();
        let device = local_device(&host);
        let client_id = format!(
            "{host}-{pid}-{random}",
            pid = std::process::id(),
            random = &uuid::Uuid::new_v4().simple().to_string()[..8],
        );
        ClientConfig {
            servers: servers.into_iter().map(Into::into).collect(),
            client_id,
            user: local_user_name(),
            host,
            display: local_display(),
            request_timeout: REQUEST_TIMEOUT_DEFAULT,
            connect_timeout: CONNECT_TIMEOUT_DEFAULT,
            tls: ClientTls::default(),
            protocol: Protocol::default(),
            token: None,
            trust: Trust::default(),
            clock_file: crate::trust::default_clock_file(),
            server_key: None,
            device,
            wall_clock: WallClock::default(),
            temporary_dir: crate::trust::default_clock_file()
                .and_then(|clock| clock.parent().map(|dir| dir.join("temporary"))),
        }
    }

    /// Checks what the servers would refuse anyway, so that a misconfigured
    /// program fails at start with a message naming the field to fix.
    pub(crate) fn validate(&self) -> Result<(), ClientError> {
        if self.servers.is_empty() {
            return Err(invalid(
                "no license servers are configured; list their host:port in ClientConfig::servers",
            ));
        }
        if self.servers.len() > SERVERS_MAX {
            return Err(invalid(format!(
                "{} license servers are configured, more than the {SERVERS_MAX} a client accepts",
                self.servers.len()
            )));
        }
        for address in &self.servers {
            crate::http::check_address(address).map_err(invalid)?;
        }
        for (name, value) in [
            ("client_id", &self.client_id),
            ("user", &self.user),
            ("host", &self.host),
        ] {
            check_field(name, value).map_err(invalid)?;
        }
        if let Some(display) = &self.display {
            check_field("display", display).map_err(invalid)?;
        }
        if let Some(token) = &self.token {
            if token.0.is_empty()
                || token.0.len() > MAX_FIELD_BYTES
                || token.0.contains(char::is_control)
            {
                return Err(invalid(
                    "the bearer token is empty, too long or holds control characters",
                ));
            }
        }
        if self.trust == Trust::Vendor(Vec::new()) {
            return Err(invalid(
                "no vendor key to check the servers' answers with: set ClientConfig::trust to \
                 Trust::Vendor with your vendor public key(s) (`tessera vendor keygen` prints \
                 them), built into the program; Trust::AnyServer only for tools and tests",
            ));
        }
        if self.request_timeout.is_zero() || self.connect_timeout.is_zero() {
            return Err(invalid(
                "request_timeout and connect_timeout must be longer than zero",
            ));
        }
        Ok(())
    }
}

/// A bearer token; its `Debug` form hides it, so a logged configuration
/// does not leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct BearerToken(String);

impl BearerToken {
    /// The token as read from its file, surrounding whitespace removed.
    pub fn new(token: &str) -> BearerToken {
        BearerToken(token.trim().to_string())
    }

    /// The `Authorization` header that carries it.
    pub(crate) fn header(&self) -> (String, String) {
        ("authorization".to_string(), format!("Bearer {}", self.0))
    }
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(..)")
    }
}

/// The server's rule for every identifier a client sends: present and bounded.
pub(crate) fn check_field(name: &str, value: &str) -> Result<(), String> {
    match value.len() {
        0 => return Err(format!("`{name}` is empty; give it a value")),
        bytes if bytes > MAX_FIELD_BYTES => {
            return Err(format!(
                "`{name}` is {bytes} bytes long, more than the {MAX_FIELD_BYTES} bytes a server accepts"
            ))
        }
        _ => {}
    }
    Ok(())
}

fn invalid(message: impl Into<String>) -> ClientError {
    ClientError::InvalidConfig {
        message: message.into(),
    }
}

/// `$DISPLAY`, else the terminal of standard input, where usable as a
/// field of a request.
fn local_display() -> Option<String> {
    let usable = |name: String| check_field("display", &name).is_ok().then_some(name);
    std::env::var("DISPLAY")
        .ok()
        .and_then(usable)
        .or_else(|| terminal_name().and_then(usable))
}

/// The terminal of standard input (`/dev/pts/3`), if it is one.
#[cfg(unix)]
fn terminal_name() -> Option<String> {
    use std::io::IsTerminal;
    if !std::io::stdin().is_terminal() {
        return None;
    }
    std::fs::read_link("/proc/self/fd/0")
        .ok()
        .and_then(|path| path.to_str().map(str::to_string))
        .filter(|path| path.starts_with("/dev/"))
}

#[cfg(not(unix))]
fn terminal_name() -> Option<String> {
    None
}

fn local_host_name() -> String {
    let from_kernel = std::fs::read_to_string("/proc/sys/kernel/hostname").ok();
    let from_env = || {
        std::env::var("HOSTNAME")
            .or_else(|_| std::env::var("COMPUTERNAME"))
            .ok()
    };
    first_usable(from_kernel.or_else(from_env))
}

/// This machine and user as a device id: SHA-256 of the machine id (or the
/// host name where there is none) and the user name.
fn local_device(host: &str) -> String {
    use sha2::{Digest, Sha256};
    let machine = std::fs::read_to_string("/etc/machine-id")
        .or_else(|_| std::fs::read_to_string("/var/lib/dbus/machine-id"))
        .unwrap_or_else(|_| host.to_string());
    let mut digest = Sha256::new();
    digest.update(machine.trim().as_bytes());
    digest.update([0]);
    digest.update(local_user_name().as_bytes());
    format!("dev-{}", hex::encode(&digest.finalize()[..8]))
}

/// The account this process runs as: the operating system's name for it
/// (what a pool's policy names), else `$USER` or `%USERNAME%`.
fn local_user_name() -> String {
    let name = os_account_name()
        .or_else(|| std::env::var("USER").ok())
        .or_else(|| std::env::var("USERNAME").ok());
    first_usable(name)
}

/// The name of the process's effective user in the account database.
#[cfg(unix)]
fn os_account_name() -> Option<String> {
    let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buffer = vec![0u8; 16 * 1024];
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: getpwuid_r writes into `entry` and `buffer` (of the length
    // given) and sets `found` to `&entry` or NULL; nothing is kept after.
    let rc = unsafe {
        libc::getpwuid_r(
            libc::geteuid(),
            &mut entry,
            buffer.as_mut_ptr().cast(),
            buffer.len(),
            &mut found,
        )
    };
    if rc != 0 || found.is_null() || entry.pw_name.is_null() {
        return None;
    }
    // SAFETY: a NUL-terminated name inside `buffer`, which is still alive.
    let name = unsafe { std::ffi::CStr::from_ptr(entry.pw_name) };
    name.to_str().ok().map(str::to_string)
}

#[cfg(not(unix))]
fn os_account_name() -> Option<String> {
    None
}

/// Trims and bounds a name from the environment so that a default never makes
/// the configuration invalid.
fn first_usable(name: Option<String>) -> String {
    let trimmed = name.as_deref().map(str::trim).unwrap_or_default();
    if trimmed.is_empty() {
        return "unknown".to_string();
    }
    // Half the field limit leaves room for the pid and random suffix of the client id.
    prefix(trimmed, MAX_FIELD_BYTES / 2).to_string()
}

/// The longest start of `text` that fits in `bytes_max` without splitting a character.
pub(crate) fn prefix(text: &str, bytes_max: usize) -> &str {
    let mut end = text.len().min(bytes_max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_never_printed_and_must_be_one_clean_line() {
        let mut config = ClientConfig::new(["127.0.0.1:7001"]);
        config.trust = Trust::AnyServer;
        config.token = Some(BearerToken::new("  s3cret-token\n"));
        config.validate().expect("a trimmed token is valid");
        let printed = format!("{config:?}");
        assert!(!printed.contains("s3cret"), "{printed}");
        assert_eq!(
            config.token.as_ref().unwrap().header().1,
            "Bearer s3cret-token"
        );
        for bad in ["", "two\nlines", &"x".repeat(MAX_FIELD_BYTES + 1)] {
            config.token = Some(BearerToken::new(&format!("a{bad}")[1..]));
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains("bearer token"), "{bad:?}: {err}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn the_user_is_the_accounts_name_whatever_the_environment_says() {
        let id = std::process::Command::new("id")
            .arg("-un")
            .output()
            .unwrap();
        let account = String::from_utf8(id.stdout).unwrap().trim().to_string();
        assert_eq!(os_account_name().as_deref(), Some(account.as_str()));
        // `$USER` is not read while the account has a name.
        assert_eq!(local_user_name(), account);
    }

    #[test]
    fn defaults_are_valid_and_client_ids_differ() {
        let mut first = ClientConfig::new(["127.0.0.1:7001"]);
        let second = ClientConfig::new(["127.0.0.1:7001"]);
        let refused = first.validate().unwrap_err().to_string();
        assert!(refused.contains("no vendor key"), "{refused}");
        first.trust = Trust::AnyServer;
        first
            .validate()
            .expect("defaults with a trust must be valid");
        assert_ne!(first.client_id, second.client_id);
        assert_eq!(first.request_timeout, REQUEST_TIMEOUT_DEFAULT);
    }

    #[test]
    fn invalid_configurations_name_the_field() {
        let check = |change: fn(&mut ClientConfig), expected: &str| {
            let mut config = ClientConfig::new(["127.0.0.1:7001"]);
            config.trust = Trust::AnyServer;
            change(&mut config);
            let message = config.validate().expect_err("must be refused").to_string();
            assert!(message.contains(expected), "{message:?} lacks {expected:?}");
        };
        check(|c| c.servers.clear(), "ClientConfig::servers");
        check(|c| c.servers = vec!["http://x:1".into()], "http://x:1");
        check(|c| c.servers = vec!["".into()], "empty");
        check(|c| c.user = String::new(), "`user`");
        check(|c| c.host = "h".repeat(MAX_FIELD_BYTES + 1), "`host`");
        check(|c| c.request_timeout = Duration::ZERO, "request_timeout");
    }

    #[test]
    fn names_from_the_environment_are_trimmed_and_bounded() {
        assert_eq!(first_usable(None), "unknown");
        assert_eq!(first_usable(Some(" \n".into())), "unknown");
        assert_eq!(first_usable(Some("box\n".into())), "box");
        let long = "é".repeat(MAX_FIELD_BYTES);
        assert!(first_usable(Some(long)).len() <= MAX_FIELD_BYTES / 2);
    }
}
