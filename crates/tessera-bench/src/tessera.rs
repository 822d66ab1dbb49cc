//! Tessera as a [`Target`]: one real `tessera server` process on loopback,
//! set up through the real CLI (vendor key, signed license code, pool file,
//! config), and driven over its HTTP/JSON API.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tessera_proto::{
    self as proto, CheckinRequest, CheckoutRequest, ErrorBody, ErrorCode, HeartbeatRequest,
};
use tessera_testkit::{
    die_with_parent, server_command, Credentials, Http, NotReady, Process, ServerConfig,
};
use tessera_transport::{FramedConnector, FramedStream, Opened};
use tokio::process::Command;

use crate::http1::{Connection, Response};
use crate::target::{Checkout, OpError, Session, Target};
use crate::Mode;
use crate::{CONNECT_TIMEOUT, REQUEST_TIMEOUT};

/// What a misplaced binary is told to do.
pub const BUILD_HINT: &str = "build it first: cargo build --release -p tessera-cli";
/// Longest a setup command (`tessera vendor keygen`, `license sign`) may run.
const CLI_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for the server to answer `serving` after it starts.
const SERVER_READY_TIMEOUT: Duration = Duration::from_secs(15);
/// Lines of the server log shown when it fails.
const LOG_TAIL_LINES: usize = 30;
/// The feature every benchmark checkout asks for.
pub(crate) const FEATURE: &str = "bench";

/// The vendor whose key signs the benchmark's license code.
pub(crate) const VENDOR: &str = "bench";
/// Heartbeat interval and leases of the benchmark code. No client heartbeats
/// during a run, so a seat held in [`Mode::Hold`] lapses after its lease:
/// that mode gets one long enough to fill a million seats at a few thousand
/// per second.
const HEARTBEAT_INTERVAL_S: u32 = 20;
const CYCLE_LEASE_S: u32 = 60;
pub const HOLD_LEASE_S: u32 = 3_600;

/// What the server is set up with.
#[derive(Clone, Copy, Debug)]
pub struct Setup {
    /// Hard limit of the benchmark feature.
    pub seats: u32,
    pub mode: Mode,
    pub transport: Transport,
    /// `[store] sync = "background"`: grants answered before they are
    /// synced (recovered from heartbeats after a crash).
    pub background_sync: bool,
}

/// How clients reach the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// The framed protocol on TLS, as the SDK talks by default.
    Framed,
    /// HTTP/1.1 and JSON on TLS (REST), to show what the framing saves.
    Rest,
    /// Plain HTTP (`plain_http`), to show what TLS costs.
    Plain,
}

impl Setup {
    pub fn cycle(seats: u32) -> Setup {
        Setup {
            seats,
            mode: Mode::Cycle,
            transport: Transport::Framed,
            background_sync: false,
        }
    }

    pub fn hold(seats: u32) -> Setup {
        Setup {
            seats,
            mode: Mode::Hold,
            transport: Transport::Framed,
            background_sync: false,
        }
    }

    /// The same setup over plain HTTP.
    pub fn plain(self) -> Setup {
        Setup {
            transport: Transport::Plain,
            ..self
        }
    }

    fn lease_s(self) -> u32 {
        match self.mode {
            Mode::Cycle => CYCLE_LEASE_S,
            Mode::Hold => HOLD_LEASE_S,
        }
    }
}

/// The `tessera` binary next to this executable: `target/release/tessera`
/// for `target/release/tessera-bench`.
pub fn binary_next_to_this_exe() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find this executable's path")?;
    let dir = exe
        .parent()
        .context("this executable's path has no directory")?;
    let path = dir.join("tessera");
    if !path.is_file() {
        let hint = if dir.ends_with("debug") {
            "build it first: cargo build -p tessera-cli"
        } else {
            BUILD_HINT
        };
        bail!("there is no tessera binary at {}; {hint}", path.display());
    }
    Ok(path)
}

/// A running `tessera server` in a temporary directory. Dropping it kills
/// the process; on Linux the process also dies when the thread that started
/// it ends, so that Ctrl-C or a crash of the benchmark leaves no server behind.
pub struct TesseraServer {
    /// HTTP address, `127.0.0.1:PORT`.
    pub address: String,
    /// The load clients' TLS (trusting the server's pool CA); `None`: plain.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Framed connections, when the clients speak the framed protocol.
    pub framed: Option<FramedConnector>,
    /// The pool CA (PEM) its clients trust; `None`: plain HTTP.
    pub ca_pem: Option<Vec<u8>>,
    /// The public key (base64) of the vendor that signed its license code.
    pub vendor_public_key: String,
    /// For the status and the metrics, with the admin token.
    http: Http,
    process: Process,
    /// Declared last so that it is removed after the child is killed.
    _dir: tempfile::TempDir,
}

impl TesseraServer {
    /// Sets up a pool of one server with `seats` seats of feature `bench`
    /// and starts it; returns once it answers `serving`.
    pub async fn start(tessera: &Path, setup: Setup) -> Result<TesseraServer> {
        // Absolute, since the server runs in the temporary directory.
        let tessera = &std::fs::canonicalize(tessera).with_context(|| {
            format!(
                "there is no tessera binary at {}; {BUILD_HINT}",
                tessera.display()
            )
        })?;
        let dir = tempfile::Builder::new()
            .prefix("tessera-bench-")
            .tempdir()
            .context("cannot make a temporary directory")?;
        let root = dir.path();
        let (address, credentials, vendor_public_key) = write_setup(tessera, root, setup).await?;
        let (tls, http) = match setup.transport {
            Transport::Framed | Transport::Rest => {
                let config = tessera_transport::client_tls_config(&credentials.ca_pem())
                    .map_err(anyhow::Error::msg)?;
                (Some(Arc::new(config)), credentials.http(REQUEST_TIMEOUT))
            }
            Transport::Plain => (None, Http::plain(REQUEST_TIMEOUT)),
        };
        let framed = match setup.transport {
            Transport::Framed => Some(
                FramedConnector::new(&credentials.ca_pem(), CONNECT_TIMEOUT)
                    .map_err(anyhow::Error::msg)?,
            ),
            Transport::Rest | Transport::Plain => None,
        };
        let mut command = server_command(tessera, &root.join("tessera.toml"), &["--new-pool"]);
        command.env("TESSERA_LOG", "warn");
        die_with_parent(&mut command);
        let ca_pem = tls.is_some().then(|| credentials.ca_pem());
        let server = TesseraServer {
            address,
            tls,
            framed,
            ca_pem,
            vendor_public_key,
            http,
            process: Process::start(command, &root.join("server.log"))
                .with_context(|| format!("cannot start {} server", tessera.display()))?,
            _dir: dir,
        };
        server.wait_serving().await?;
        Ok(server)
    }

    /// One load client's connection to `address`, as the server's clients talk.
    fn wire(&self, address: &str) -> Wire {
        match &self.framed {
            Some(connector) => Wire::Framed(FramedWire::new(connector.clone(), address)),
            None => Wire::Http(
                Connection::new(address, CONNECT_TIMEOUT, REQUEST_TIMEOUT)
                    .with_tls(self.tls.clone()),
            ),
        }
    }

    /// Polls `/v1/status` (bounded) until the server says it is serving.
    async fn wait_serving(&self) -> Result<()> {
        let serving = self
            .process
            .wait_status(&self.http, &self.address, SERVER_READY_TIMEOUT, |status| {
                status.server.state == "serving"
            })
            .await;
        match serving {
            Ok(_) => Ok(()),
            Err(NotReady::Exited(_)) => self.check_running(),
            Err(NotReady::TimedOut { last }) => bail!(
                "the server at {} did not serve within {SERVER_READY_TIMEOUT:?} ({last}); its log:\n{}",
                self.address,
                self.log_tail()
            ),
        }
    }

    /// How many grants the server holds now.
    pub async fn grants_total(&self) -> Result<u64> {
        let status = tessera_testkit::status(&self.http, &self.address)
            .await
            .map_err(anyhow::Error::msg)
            .context("the server did not answer /v1/status")?;
        Ok(status.grants_total)
    }

    /// The longest time between two quota renewals so far, from `/metrics`.
    pub async fn quota_renewal_gap_max_ms(&self) -> Option<u64> {
        let text = self
            .http
            .get(&self.address, "/metrics")
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .find_map(|line| line.strip_prefix("tessera_quota_renewal_gap_max_ms "))?
            .trim()
            .parse()
            .ok()
    }

    /// Resident memory of the server process, in bytes (Linux `/proc`).
    pub fn resident_bytes(&self) -> Option<u64> {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.process.pid())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    /// CPU time (user and system) the server process has used so far (Linux `/proc`).
    pub fn cpu_time(&self) -> Option<Duration> {
        crate::cpu::process_cpu_time(self.process.pid())
    }

    pub(crate) fn check_running(&self) -> Result<()> {
        crate::check_running("the tessera server", &self.process, LOG_TAIL_LINES)
    }

    fn log_tail(&self) -> String {
        crate::log_tail(self.process.log_path(), LOG_TAIL_LINES)
    }

    /// Kills the server and waits for it to be gone.
    pub async fn stop(self) -> Result<()> {
        self.process.kill();
        Ok(())
    }
}

/// Makes the vendor key, the license code, the pool's credentials, the pool
/// file and the config in `dir` with the CLI; returns the server's address,
/// the credentials and the vendor's public key.
async fn write_setup(
    tessera: &Path,
    dir: &Path,
    setup: Setup,
) -> Result<(String, Credentials, String)> {
    run_cli(
        tessera,
        &[
            "vendor".as_ref(),
            "keygen".as_ref(),
            "--vendor".as_ref(),
            VENDOR.as_ref(),
            "--out".as_ref(),
            dir.as_os_str(),
        ],
    )
    .await?;
    let codes_path = dir.join("codes.lic");
    run_cli(
        tessera,
        &[
            "license".as_ref(),
            "sign".as_ref(),
            "--key".as_ref(),
            dir.join("bench.key").as_os_str(),
            "--feature".as_ref(),
            FEATURE.as_ref(),
            "--seats".as_ref(),
            setup.seats.to_string().as_ref(),
            "--lease-s".as_ref(),
            setup.lease_s().to_string().as_ref(),
            "--heartbeat-interval-s".as_ref(),
            HEARTBEAT_INTERVAL_S.to_string().as_ref(),
            "--out".as_ref(),
            codes_path.as_os_str(),
        ],
    )
    .await?;
    run_cli(
        tessera,
        &[
            "pool".as_ref(),
            "key".as_ref(),
            "--out".as_ref(),
            dir.join("pool.key").as_os_str(),
        ],
    )
    .await?;
    let codes = read(&codes_path)?;
    let public_path = dir.join("bench.pub");
    let public_key = tessera_testkit::public_key_of(&read(&public_path)?)
        .with_context(|| format!("{} is not a vendor public key file", public_path.display()))?;

    let address = tessera_testkit::free_address().context("cannot bind loopback")?;
    let credentials = Credentials::init(tessera, dir, "bench", &[("A", &address)]);
    let pool = tessera_testkit::pool_file_head("bench")
        + &credentials.server_entry("A", &address)
        + &credentials.admins()
        + &codes;
    write(&dir.join("pool.toml"), &pool)?;
    // Every held seat is a client of its own: the server must take as many
    // clients as there are seats, or the last checkouts of a scaling run
    // are refused by the default `limits.clients_max`, not by the seats.
    let limits = match setup.mode {
        Mode::Hold => format!("[limits]\nclients_max = {}\n", setup.seats),
        Mode::Cycle => String::new(),
    };
    let security = match setup.transport {
        Transport::Framed | Transport::Rest => credentials.security_table("A"),
        Transport::Plain => credentials.plain_security_table("A"),
    };
    let store = match setup.background_sync {
        true => "[store]\nsync = \"background\"\n",
        false => "",
    };
    let tables = security + &limits + store;
    let config = ServerConfig {
        server_id: "A",
        pool_file: "pool.toml",
        data_dir: "data",
        pool_key_file: "pool.key",
        top: "",
        vendor: VENDOR,
        public_key: &public_key,
        tables: &tables,
    };
    write(&dir.join("tessera.toml"), &config.text())?;
    Ok((address, credentials, public_key))
}

async fn run_cli(tessera: &Path, args: &[&std::ffi::OsStr]) -> Result<Output> {
    let shown = || {
        let args: Vec<_> = args.iter().map(|a| a.to_string_lossy()).collect();
        format!("tessera {}", args.join(" "))
    };
    let output = tokio::time::timeout(
        CLI_TIMEOUT,
        Command::new(tessera)
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .with_context(|| format!("`{}` did not finish within {CLI_TIMEOUT:?}", shown()))?
    .with_context(|| format!("cannot run `{}`", shown()))?;
    if !output.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            shown(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(output)
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// The benchmark's view of a Tessera server.
pub struct TesseraTarget {
    pub server: TesseraServer,
    /// Checkouts carry a nonce: the server signs every answer.
    pub signed: bool,
    /// The server syncs grants in the background.
    pub background_sync: bool,
}

impl TesseraTarget {
    /// The system's name, as in `compare`'s tables.
    pub fn system_name(&self) -> &'static str {
        match (&self.server.tls, &self.server.framed, self.signed) {
            _ if self.background_sync => "tessera, background sync",
            (Some(_), _, true) => "tessera, signed answers",
            (Some(_), Some(_), false) => "tessera",
            (Some(_), None, false) => "tessera, REST",
            (None, _, _) => "tessera, plain HTTP",
        }
    }
}

impl Target for TesseraTarget {
    type Session = TesseraSession;

    fn name(&self) -> &str {
        self.system_name()
    }

    fn session(&self, client_index: usize) -> Result<TesseraSession> {
        // Each simulated client has its own keep-alive connection, as a
        // program would, so none queues behind another's request.
        Ok(TesseraSession {
            wire: self.server.wire(&self.server.address),
            feature: FEATURE,
            nonces: self.signed.then_some((client_index as u64, 0)),
            codes_held: None,
        })
    }

    fn check_alive(&self) -> Result<()> {
        self.server.check_running()
    }

    fn resident_bytes(&self) -> Option<u64> {
        self.server.resident_bytes()
    }
}

pub struct TesseraSession {
    wire: Wire,
    /// The feature every checkout asks for.
    feature: &'static str,
    /// With signed answers: this client's number and its requests so far,
    /// which make each request's nonce unique.
    nonces: Option<(u64, u64)>,
    /// With signed answers: the SHA-256 of the license codes the last
    /// grant carried, which each checkout names as held (as the SDK does,
    /// PROTOCOL.md "Codes the program holds").
    codes_held: Option<String>,
}

/// A granted seat: what its check-in needs.
pub struct TesseraHold {
    grant_id: proto::SharedText,
    client_id: String,
    proof: proto::Proof,
}

/// Endpoints, below [`proto::API_PREFIX`].
const CHECKOUT_PATH: &str = "/checkout";
const CHECKIN_PATH: &str = "/checkin";
const HEARTBEAT_PATH: &str = "/heartbeat";

impl TesseraSession {
    async fn post<Req: serde::Serialize, Resp: serde::de::DeserializeOwned>(
        &mut self,
        endpoint: &str,
        body: &Req,
    ) -> Result<Resp, Refusal> {
        let other = |kind: &str, message: String| Refusal::Other(OpError::new(kind, message));
        let path = format!("{}{endpoint}", proto::API_PREFIX);
        let body = serde_json::to_vec(body).map_err(|err| other("encode", err.to_string()))?;
        let response = self
            .wire
            .post_json(&path, &body)
            .await
            .map_err(|message| other("transport", message))?;
        let status = response.status;
        if (200..300).contains(&status) {
            return serde_json::from_slice(&response.body)
                .map_err(|err| other("bad_answer", format!("{path}: {status}: {err}")));
        }
        match serde_json::from_slice::<ErrorBody>(&response.body) {
            Ok(body) => Err(Refusal::Code(body.error.code, body.error.message)),
            Err(_) => Err(other(
                "bad_answer",
                format!(
                    "{path}: {status}: {}",
                    String::from_utf8_lossy(&response.body)
                ),
            )),
        }
    }
}

impl Session for TesseraSession {
    type Hold = TesseraHold;

    async fn checkout(&mut self, holder: u64) -> Result<Checkout<TesseraHold>, OpError> {
        let mut body = checkout_request(holder, self.feature);
        if let Some((client, sent)) = &mut self.nonces {
            *sent += 1;
            body.nonce = Some(format!("{client:016x}{sent:016x}"));
            body.codes_held = self.codes_held.clone();
        }
        let client_id = body.client_id.to_string();
        match self.post::<_, proto::Grant>(CHECKOUT_PATH, &body).await {
            Ok(grant) => {
                if let Some(answer) = grant.answer.as_ref().filter(|a| !a.codes.is_empty()) {
                    self.codes_held = Some(codes_sha256(&answer.codes)?);
                }
                Ok(Checkout::Granted(TesseraHold {
                    grant_id: grant.grant_id,
                    client_id,
                    proof: grant.proof,
                }))
            }
            Err(Refusal::Code(ErrorCode::NoSeatsAvailable, _)) => Ok(Checkout::Denied),
            Err(refusal) => Err(refusal.into()),
        }
    }

    async fn checkin(&mut self, hold: TesseraHold) -> Result<(), OpError> {
        let body = CheckinRequest {
            grant_id: hold.grant_id,
            client_id: hold.client_id,
            proof: hold.proof,
        };
        self.post::<_, proto::CheckinResponse>(CHECKIN_PATH, &body)
            .await
            .map(|_| ())
            .map_err(OpError::from)
    }

    async fn heartbeat(&mut self, hold: &TesseraHold) -> Result<(), OpError> {
        let body = HeartbeatRequest {
            grant_id: hold.grant_id.clone(),
            client_id: hold.client_id.as_str().into(),
            user: "bench".into(),
            host: "localhost".into(),
            display: None,
            idle_ms: None,
            feature: self.feature.into(),
            version: "1.0".into(),
            count: 1,
            answer_within_ms: None,
            nonce: None,
            codes_held: None,
            server_key: None,
            renewal: 0,
            proof: hold.proof.clone(),
            holding: None,
        };
        self.post::<_, proto::Grant>(HEARTBEAT_PATH, &body)
            .await
            .map(|_| ())
            .map_err(OpError::from)
    }
}

/// The SHA-256 of license codes as a signed answer covers them, which a
/// request names as held.
fn codes_sha256(texts: &[proto::LicenseCodeText]) -> Result<String, OpError> {
    let codes = texts
        .iter()
        .map(tessera_core::LicenseCode::from_text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| OpError::new("bad_answer", format!("a license code: {err}")))?;
    Ok(tessera_core::answer::codes_sha256(&codes))
}

/// One seat of `feature` for the benchmark's client number `holder`.
fn checkout_request(holder: u64, feature: &str) -> CheckoutRequest {
    CheckoutRequest {
        client_id: format!("bench-{holder}").into(),
        user: "bench".into(),
        host: "localhost".into(),
        display: None,
        feature: feature.into(),
        version: "1.0".into(),
        count: 1,
        answer_within_ms: None,
        nonce: None,
        codes_held: None,
        server_key: None,
        queue: None,
    }
}

/// Why a request did not get the expected answer.
enum Refusal {
    /// The server answered with an error code.
    Code(ErrorCode, String),
    /// No answer, or one that is not the protocol's.
    Other(OpError),
}

impl From<Refusal> for OpError {
    fn from(refusal: Refusal) -> OpError {
        match refusal {
            Refusal::Code(code, message) => OpError::new(code.as_str(), message),
            Refusal::Other(err) => err,
        }
    }
}

/// Tessera's HTTP stack without the issuer: `POST /v1/noop` parses a
/// checkout request and answers a grant-shaped body. The protocol's ceiling:
/// both halves of a cycle (checkout, check-in) go to it, so that a noop cycle
/// makes the same two round trips as a real one.
pub struct NoopTarget {
    pub server: TesseraServer,
}

const NOOP_PATH: &str = "/noop";

impl Target for NoopTarget {
    type Session = NoopSession;

    fn name(&self) -> &str {
        "tessera noop endpoint"
    }

    fn session(&self, _client_index: usize) -> Result<NoopSession> {
        Ok(NoopSession(TesseraSession {
            nonces: None,
            codes_held: None,
            wire: self.server.wire(&self.server.address),
            feature: FEATURE,
        }))
    }

    fn check_alive(&self) -> Result<()> {
        self.server.check_running()
    }
}

pub struct NoopSession(TesseraSession);

impl NoopSession {
    async fn noop(&mut self, holder: u64) -> Result<(), OpError> {
        let body = checkout_request(holder, FEATURE);
        self.0
            .post::<_, proto::Grant>(NOOP_PATH, &body)
            .await
            .map(|_| ())
            .map_err(OpError::from)
    }
}

impl Session for NoopSession {
    type Hold = u64;

    async fn checkout(&mut self, holder: u64) -> Result<Checkout<u64>, OpError> {
        self.noop(holder).await.map(|()| Checkout::Granted(holder))
    }

    async fn checkin(&mut self, holder: u64) -> Result<(), OpError> {
        self.noop(holder).await
    }

    async fn heartbeat(&mut self, holder: &u64) -> Result<(), OpError> {
        self.noop(*holder).await
    }
}

/// Feature of the test kit's pools.
const POOL_FEATURE: &str = "app";
/// Servers of the benchmarked pool.
pub const POOL_SERVERS: usize = 3;

/// A pool of three Tessera servers (the test kit's [`tessera_testkit::Pool`]:
/// durable stores, Raft control plane), clients spread over the servers, each
/// server issuing from its own third of the seats.
pub struct PoolTarget {
    pub pool: tessera_testkit::Pool,
    /// The load clients' framed connections, trusting the pool CA.
    framed: FramedConnector,
}

impl PoolTarget {
    /// Starts the pool and returns once every server serves and a leader leads.
    pub async fn start(tessera: &Path, seats: u32) -> Result<PoolTarget> {
        let tessera = std::fs::canonicalize(tessera).with_context(|| {
            format!(
                "there is no tessera binary at {}; {BUILD_HINT}",
                tessera.display()
            )
        })?;
        let spec = tessera_testkit::PoolSpec {
            servers: POOL_SERVERS,
            seats,
            lease_s: CYCLE_LEASE_S,
            heartbeat_s: HEARTBEAT_INTERVAL_S,
            ..tessera_testkit::PoolSpec::default()
        };
        let pool = tessera_testkit::Pool::start(&tessera, spec).await;
        pool.wait_leader(&pool.all()).await;
        let framed =
            FramedConnector::new(&pool.ca_pem(), CONNECT_TIMEOUT).map_err(anyhow::Error::msg)?;
        Ok(PoolTarget { pool, framed })
    }

    /// CPU time of all the pool's servers.
    pub fn cpu_time(&self) -> Option<Duration> {
        (0..POOL_SERVERS)
            .map(|index| crate::cpu::process_cpu_time(self.pool.pid(index)?))
            .sum()
    }
}

impl Target for PoolTarget {
    type Session = TesseraSession;

    fn name(&self) -> &str {
        "tessera pool (3 servers)"
    }

    fn session(&self, client_index: usize) -> Result<TesseraSession> {
        let addresses = self.pool.addresses();
        Ok(TesseraSession {
            wire: Wire::Framed(FramedWire::new(
                self.framed.clone(),
                &addresses[client_index % addresses.len()],
            )),
            feature: POOL_FEATURE,
            nonces: None,
            codes_held: None,
        })
    }

    fn check_alive(&self) -> Result<()> {
        for index in 0..POOL_SERVERS {
            if self.pool.pid(index).is_none() {
                bail!("server {index} of the pool is not running");
            }
        }
        Ok(())
    }
}

/// A load client's connection: HTTP/1.1 (REST) or frames.
enum Wire {
    Http(Connection),
    Framed(FramedWire),
}

impl Wire {
    async fn post_json(&mut self, path: &str, body: &[u8]) -> Result<Response, String> {
        match self {
            Wire::Http(connection) => connection.post_json(path, body).await,
            Wire::Framed(framed) => framed.post_json(path, body).await,
        }
    }
}

/// One framed connection, opened on first use and again after any failure.
struct FramedWire {
    connector: FramedConnector,
    address: String,
    stream: Option<Box<FramedStream>>,
}

impl FramedWire {
    fn new(connector: FramedConnector, address: &str) -> FramedWire {
        FramedWire {
            connector,
            address: address.to_string(),
            stream: None,
        }
    }

    async fn post_json(&mut self, path: &str, body: &[u8]) -> Result<Response, String> {
        let op =
            proto::frame::Op::for_path(path).ok_or_else(|| format!("{path} has no frame op"))?;
        let frame = proto::frame::encode_request(op, None, body)?;
        let result = tokio::time::timeout(REQUEST_TIMEOUT, self.exchange(&frame)).await;
        let result = result.unwrap_or_else(|_| {
            Err(format!(
                "no answer from {} within {REQUEST_TIMEOUT:?}",
                self.address
            ))
        });
        if result.is_err() {
            // The connection may hold half an answer: never reuse it.
            self.stream = None;
        }
        result
    }

    async fn exchange(&mut self, frame: &[u8]) -> Result<Response, String> {
        let address = &self.address;
        let stream = match &mut self.stream {
            Some(stream) => stream,
            empty @ None => match self.connector.connect(address).await {
                Ok(Opened::Framed(stream)) => empty.insert(stream),
                Ok(Opened::RestOnly) => {
                    return Err(format!("{address} does not speak the framed protocol"))
                }
                Err(err) => return Err(format!("{address}: {err}")),
            },
        };
        let answer = tessera_transport::exchange(stream, frame, BODY_BYTES_MAX)
            .await
            .map_err(|err| format!("{address}: {err:?}"))?;
        Ok(Response {
            status: answer.status,
            body: answer.body,
        })
    }
}

/// Largest answer body a load client reads, in bytes.
const BODY_BYTES_MAX: usize = 64 * 1024;
