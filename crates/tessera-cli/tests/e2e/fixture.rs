//! The end-to-end fixture: a temporary directory, a vendor key made with the
//! real `tessera vendor keygen`, license codes signed with `tessera license
//! sign`, and `tessera server` processes on loopback, set up exactly as a user
//! would. Every wait is a bounded poll; every server process is killed when
//! its [`Server`] is dropped, panic or not, and its log is printed when the
//! test failed.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde_json::Value;
use tessera_proto::StatusResponse;
use tessera_testkit::{server_command, NotReady, Process, ServerConfig};

/// How long a server may take to answer `/v1/status` after it starts.
pub const SERVER_READY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long one command of the CLI may run (the demo is the slowest, ~10 s).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a server may take to exit after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Time limit of one HTTP request of a test.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between two polls of a condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// The vendor of every test's codes.
pub const VENDOR: &str = "acme";

/// Short lease terms, for tests that wait for a seat to lapse: the shortest
/// lease a code may set, and a heartbeat at half of it.
pub const SHORT_POLICY: &str = "lease_s = 2\nheartbeat_interval_s = 1\n";
/// Long lease terms, for tests whose seats must not lapse while they run,
/// however slow the machine.
pub const LONG_POLICY: &str = "lease_s = 60\nheartbeat_interval_s = 10\n";

pub fn tessera_exe() -> &'static str {
    env!("CARGO_BIN_EXE_tessera")
}

/// What one run of the CLI printed and how it ended.
pub struct Output {
    pub args: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// Both streams, for matching messages wherever the command put them.
    pub fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    /// Panics, showing everything the command printed, unless it succeeded.
    pub fn success(self) -> Output {
        assert!(self.status.success(), "{self}");
        self
    }

    /// Panics unless the command printed every one of `parts`, on either stream.
    pub fn mentions(&self, parts: &[&str]) {
        let text = self.text();
        assert!(parts.iter().all(|part| text.contains(part)), "{self}");
    }

    /// Panics unless the command failed.
    pub fn failure(self) -> Output {
        assert!(!self.status.success(), "expected a failure: {self}");
        self
    }
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`tessera {}` exited with {}\n--- stdout\n{}\n--- stderr\n{}",
            self.args, self.status, self.stdout, self.stderr
        )
    }
}

/// Runs `tessera ARGS` to completion (bounded by [`COMMAND_TIMEOUT`]).
pub async fn tessera<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    tessera_within(COMMAND_TIMEOUT, args).await
}

/// Runs `tessera ARGS` to completion; panics if it runs longer than `timeout`.
pub async fn tessera_within<I, S>(timeout: Duration, args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    tessera_env_within(timeout, &[], args).await
}

/// Runs `tessera ARGS` with these extra environment variables.
pub async fn tessera_env<I, S>(env: &[(&str, &str)], args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    tessera_env_within(COMMAND_TIMEOUT, env, args).await
}

async fn tessera_env_within<I, S>(timeout: Duration, env: &[(&str, &str)], args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let shown = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let run = tokio::process::Command::new(tessera_exe())
        .args(&args)
        .env_remove("TESSERA_SERVER")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = match tokio::time::timeout(timeout, run).await {
        Ok(output) => output.unwrap_or_else(|err| panic!("cannot run `tessera {shown}`: {err}")),
        Err(_) => panic!("`tessera {shown}` did not finish within {timeout:?}"),
    };
    Output {
        args: shown,
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Ports come from the testkit, which avoids the kernel's outgoing range.
pub use tessera_testkit::free_address;

/// A test's own directory and vendor key pair.
pub struct Fixture {
    dir: tempfile::TempDir,
    files_written: AtomicU32,
}

impl Fixture {
    /// A new directory with a vendor key pair made by `tessera vendor keygen`.
    pub async fn new() -> Fixture {
        let dir = tempfile::Builder::new()
            .prefix("tessera-e2e-")
            .tempdir()
            .expect("temporary directory");
        let fixture = Fixture {
            dir,
            files_written: AtomicU32::new(0),
        };
        let keys = fixture.keys_dir();
        tessera([
            OsStr::new("vendor"),
            OsStr::new("keygen"),
            OsStr::new("--vendor"),
            OsStr::new(VENDOR),
            OsStr::new("--out"),
            keys.as_os_str(),
        ])
        .await
        .success();
        let pool_key = fixture.pool_key_file();
        tessera([
            OsStr::new("pool"),
            OsStr::new("key"),
            OsStr::new("--out"),
            pool_key.as_os_str(),
        ])
        .await
        .success();
        fixture
    }

    /// The pool key every server of this fixture shares, made by `tessera
    /// pool key`.
    pub fn pool_key_file(&self) -> PathBuf {
        self.path().join("pool.key")
    }

    /// The proof a server of this fixture answers for a grant: what its
    /// holder keeps, and what an attacker does not have.
    pub fn proof(&self, grant_id: &str, client_id: &str, feature: &str, count: u32) -> String {
        let text = std::fs::read_to_string(self.pool_key_file()).expect("read the pool key");
        let key = tessera_core::PoolKey::parse(&text).expect("a pool key");
        let claim = tessera_core::GrantClaim {
            grant_id,
            client_id,
            feature,
            count,
        };
        tessera_core::grant_proof::prove(&key, &claim).to_string()
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn keys_dir(&self) -> PathBuf {
        self.path().join("keys")
    }

    /// The vendor's secret key file.
    pub fn secret_key(&self) -> PathBuf {
        self.keys_dir().join(format!("{VENDOR}.key"))
    }

    /// The vendor's public key file.
    pub fn public_key(&self) -> PathBuf {
        self.keys_dir().join(format!("{VENDOR}.pub"))
    }

    /// The base64 public key, read from the public key file.
    pub fn public_key_base64(&self) -> String {
        let text = std::fs::read_to_string(self.public_key()).expect("read the public key file");
        let file: toml::Table = toml::from_str(&text).expect("the public key file is TOML");
        assert_eq!(file["vendor"].as_str(), Some(VENDOR), "{text}");
        assert!(file["key_id"].is_str(), "{text}");
        file["public_key"]
            .as_str()
            .unwrap_or_else(|| panic!("no public_key in {text}"))
            .to_string()
    }

    fn next_name(&self, stem: &str) -> PathBuf {
        let n = self.files_written.fetch_add(1, Ordering::Relaxed) + 1;
        self.path().join(format!("{stem}-{n}.toml"))
    }

    /// Signs a file of unsigned `[[license]]` tables with `tessera license
    /// sign`; returns the signed text.
    pub async fn sign(&self, unsigned: &str) -> String {
        let unsigned_path = self.next_name("unsigned");
        std::fs::write(&unsigned_path, unsigned).expect("write the unsigned codes");
        let signed_path = self.next_name("signed");
        self.license_sign([
            OsStr::new("--out"),
            signed_path.as_os_str(),
            unsigned_path.as_os_str(),
        ])
        .await;
        std::fs::read_to_string(&signed_path).expect("read the signed codes")
    }

    /// Signs one code described by `tessera license sign` flags; returns the signed text.
    pub async fn sign_flags(&self, flags: &[&str]) -> String {
        self.license_sign(flags.iter().map(OsStr::new)).await.stdout
    }

    /// Runs `tessera license sign --key VENDOR-SECRET-KEY ARGS`, which must
    /// succeed.
    async fn license_sign<'a>(&self, args: impl IntoIterator<Item = &'a OsStr>) -> Output {
        let mut all = vec![
            "license".into(),
            "sign".into(),
            "--key".into(),
            self.secret_key().into_os_string(),
        ];
        all.extend(args.into_iter().map(OsStr::to_os_string));
        tessera(all).await.success()
    }

    /// Writes a pool file and a server config for one server, as an
    /// administrator would; the server is not started.
    pub fn server(&self, spec: ServerSpec) -> Server {
        self.pool(vec![spec]).remove(0)
    }

    /// Writes the pool file and configs of a pool of these servers, in
    /// leader-priority order, as an administrator would (`tessera pool
    /// init` in the first server's directory): each server's directory gets
    /// the same pool file, all the specs' licenses in it. None is started.
    pub fn pool(&self, specs: Vec<ServerSpec>) -> Vec<Server> {
        let dirs: Vec<PathBuf> = specs
            .iter()
            .map(|spec| self.path().join(format!("server-{}", spec.server_id)))
            .collect();
        for dir in &dirs {
            std::fs::create_dir_all(dir).expect("create the server directory");
        }
        let addresses: Vec<String> = specs
            .iter()
            .map(|_| tessera_testkit::free_address().expect("a free loopback port"))
            .collect();
        let members: Vec<(&str, &str)> = specs
            .iter()
            .zip(&addresses)
            .map(|(spec, address)| (spec.server_id.as_str(), address.as_str()))
            .collect();
        let credentials =
            tessera_testkit::Credentials::init(Path::new(tessera_exe()), &dirs[0], "e2e", &members);
        let mut pool = tessera_testkit::pool_file_head("e2e");
        for (id, address) in &members {
            pool.push_str(&credentials.server_entry(id, address));
        }
        pool.push_str(&credentials.admins());
        for spec in &specs {
            pool.push_str(&spec.licenses);
        }
        let public_key = self.public_key_base64();
        specs
            .into_iter()
            .zip(dirs)
            .zip(addresses)
            .map(|((spec, dir), address)| {
                std::fs::write(dir.join("pool.toml"), &pool).expect("write the pool file");
                let config = ServerConfig {
                    server_id: &spec.server_id,
                    pool_file: "pool.toml",
                    data_dir: "data",
                    // Beside the server directories: one key for the fixture.
                    pool_key_file: "../pool.key",
                    top: &spec.config_top,
                    vendor: VENDOR,
                    public_key: &public_key,
                    tables: &(credentials.security_table(&spec.server_id) + &spec.config_tables),
                }
                .text();
                let config_path = dir.join("tessera.toml");
                std::fs::write(&config_path, config).expect("write the server config");
                Server {
                    address,
                    config: config_path,
                    data_dir: dir.join("data"),
                    pool_file: dir.join("pool.toml"),
                    log: dir.join("server.log"),
                    process: None,
                    http: credentials.http(REQUEST_TIMEOUT),
                    credentials: credentials.clone(),
                    env: spec.env,
                    vendor_key: public_key.clone(),
                }
            })
            .collect()
    }

    /// A pool of the servers `ids`, the first one's spec carrying
    /// `licenses` (codes and pool file tables), every one with `env`:
    /// started as a new pool and serving.
    pub async fn start_pool(
        &self,
        ids: &[&str],
        licenses: &str,
        env: &[(&str, &str)],
    ) -> Vec<Server> {
        let specs = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let mut spec = ServerSpec::new(if i == 0 {
                    licenses.to_string()
                } else {
                    String::new()
                });
                spec.server_id = id.to_string();
                spec.env = env
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                spec
            })
            .collect();
        let mut servers = self.pool(specs);
        for server in &mut servers {
            server.start(StartMode::NewPool).await;
        }
        for server in &mut servers {
            server.wait_state("serving").await;
        }
        servers
    }

    /// A server (not started) of the codes in `unsigned`, signed, whose
    /// grace period, when it starts without its store, lasts `grace_ms`.
    pub async fn server_with_grace(&self, unsigned: &str, grace_ms: u64) -> Server {
        let mut spec = ServerSpec::new(self.sign(unsigned).await);
        spec.config_tables = format!("[timing]\ngrace_ms = {grace_ms}\n");
        self.server(spec)
    }

    /// Signs `unsigned`, writes a pool of one, starts it with `--new-pool`
    /// and waits until it serves.
    pub async fn serve(&self, unsigned: &str) -> Server {
        let licenses = self.sign(unsigned).await;
        let mut server = self.server(ServerSpec::new(licenses));
        server.start(StartMode::NewPool).await;
        server.wait_state("serving").await;
        server
    }
}

/// What goes into a server's pool file and config.
pub struct ServerSpec {
    pub server_id: String,
    /// Signed `[[license]]` tables, appended to the pool file (no
    /// distribution: a pool of one gets every seat).
    pub licenses: String,
    /// Top-level keys of the config (`peer_secret = "..."`).
    pub config_top: String,
    /// Tables of the config after `[[vendors]]` (`[timing]`).
    pub config_tables: String,
    /// Extra environment of the server process.
    pub env: Vec<(String, String)>,
}

impl ServerSpec {
    pub fn new(licenses: String) -> ServerSpec {
        ServerSpec {
            server_id: "A".into(),
            licenses,
            config_top: String::new(),
            config_tables: String::new(),
            env: Vec::new(),
        }
    }
}

/// How `tessera server` is started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartMode {
    /// `--new-pool`: issue at once although the store is new.
    NewPool,
    /// No flag: a server without its store waits out a grace period.
    Plain,
}

/// An answer of the HTTP API.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl Answer {
    /// The `error.code` of an error answer, or "" when there is none.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    pub fn message(&self) -> &str {
        self.body["error"]["message"].as_str().unwrap_or("")
    }

    /// Panics unless the answer is 200; returns the body.
    pub fn ok(self) -> Value {
        assert_eq!(self.status, 200, "expected 200, got {self:?}");
        self.body
    }

    /// Panics unless the answer is an error with this HTTP status and code.
    pub fn refused(&self, status: u16, code: &str) {
        assert_eq!(
            (self.status, self.code()),
            (status, code),
            "unexpected answer {self:?}"
        );
        assert!(!self.message().is_empty(), "no message in {self:?}");
    }
}

/// A `tessera server` process (or the files for one).
pub struct Server {
    /// `127.0.0.1:PORT`, as in the pool file.
    pub address: String,
    pub config: PathBuf,
    pub data_dir: PathBuf,
    pub pool_file: PathBuf,
    log: PathBuf,
    process: Option<Process>,
    /// Trusts the server's pool CA and carries its admin token.
    pub http: tessera_testkit::Http,
    pub credentials: tessera_testkit::Credentials,
    env: Vec<(String, String)>,
    /// The vendor's public key (base64), as its programs have it built in.
    vendor_key: String,
}

impl Server {
    /// Sets a variable of the server process's environment, for its next start.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.to_string()));
    }

    /// What a program of the fixture's vendor trusts: its public key.
    pub fn vendor_trust(&self) -> tessera_client::Trust {
        tessera_client::Trust::Vendor(vec![tessera_client::VendorPublicKey::from_base64(
            VENDOR,
            &self.vendor_key,
        )
        .expect("the fixture's vendor key")])
    }

    /// Starts `tessera server --config F [--new-pool]` and waits (bounded)
    /// until `/v1/status` answers.
    pub async fn start(&mut self, mode: StartMode) {
        assert!(self.process.is_none(), "the server is running already");
        let args: &[&str] = match mode {
            StartMode::NewPool => &["--new-pool"],
            StartMode::Plain => &[],
        };
        let mut command = server_command(Path::new(tessera_exe()), &self.config, args);
        command.env("NO_COLOR", "1");
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        let process = Process::start(command, &self.log).expect("start `tessera server`");
        self.process = Some(process);
        // Pooled connections to the last process are dead.
        self.http = self.credentials.http(REQUEST_TIMEOUT);
        self.poll("/v1/status to answer", SERVER_READY_TIMEOUT, |_| true)
            .await;
    }

    /// Kills the process with SIGKILL (`kill -9`) and reaps it.
    pub fn kill(&mut self) {
        if let Some(process) = self.process.take() {
            process.kill();
        }
    }

    /// Sends SIGHUP: the server reads its config and pool file again.
    pub fn hangup(&self) {
        let process = self.process.as_ref().expect("the server is running");
        assert!(process.signal(libc::SIGHUP), "the server has exited");
    }

    /// Sends SIGTERM and waits (bounded) for the process to exit.
    pub async fn terminate(&mut self) -> ExitStatus {
        let process = self.process.take().expect("the server is running");
        match process.terminate(STOP_TIMEOUT).await {
            Some(status) => status,
            None => {
                process.kill();
                panic!(
                    "the server did not exit within {STOP_TIMEOUT:?} of SIGTERM; its log:\n{}",
                    self.log()
                );
            }
        }
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        self.http
            .get(&self.address, "/metrics")
            .send()
            .await
            .expect("/metrics answers")
            .text()
            .await
            .expect("/metrics text")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_else(|err| format!("(no log: {err})"))
    }

    pub async fn get(&self, path: &str) -> Answer {
        let request = self.http.get(&self.address, path);
        self.send(request).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Answer {
        let request = self.http.post(&self.address, path).json(body);
        self.send(request).await
    }

    /// `ARGS --server ADDRESS --ca CA` (and `--token-file ADMIN-TOKEN` for
    /// `admin` and `status`): a command line of `tessera` aimed at this
    /// server, as its administrator.
    pub fn cli(&self, args: &[&str]) -> Vec<String> {
        let mut line: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        line.extend(["--server".to_string(), self.address.clone()]);
        line.push("--ca".into());
        line.push(self.credentials.ca_file().display().to_string());
        if matches!(
            args.first(),
            Some(&"admin") | Some(&"status") | Some(&"master")
        ) {
            line.push("--token-file".into());
            line.push(self.credentials.admin_token_file().display().to_string());
        }
        line
    }

    pub async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        let response = request.send().await.unwrap_or_else(|err| {
            panic!("no answer from the server: {err}; its log:\n{}", self.log())
        });
        let status = response.status().as_u16();
        let bytes = response.bytes().await.expect("read the answer");
        let body = serde_json::from_slice(&bytes).unwrap_or_else(|err| {
            panic!(
                "answer {status} is not JSON ({err}): {}",
                String::from_utf8_lossy(&bytes)
            )
        });
        Answer { status, body }
    }

    pub async fn status(&self) -> StatusResponse {
        let body = self.get("/v1/status").await.ok();
        serde_json::from_value(body).expect("/v1/status answers a StatusResponse")
    }

    /// Polls `/v1/status` until `done` holds; panics with the server's log
    /// if that takes longer than `timeout` or the process exits.
    pub async fn poll(
        &mut self,
        what: &str,
        timeout: Duration,
        done: impl FnMut(&StatusResponse) -> bool,
    ) -> StatusResponse {
        let process = self.process.as_ref().expect("the server is running");
        match process
            .wait_status(&self.http, &self.address, timeout, done)
            .await
        {
            Ok(status) => status,
            Err(NotReady::Exited(exit)) => {
                self.process = None;
                panic!(
                    "the server exited ({exit}) while waiting for {what}; its log:\n{}",
                    self.log()
                );
            }
            Err(NotReady::TimedOut { last }) => panic!(
                "waited {timeout:?} for {what}; last: {last}\nserver log:\n{}",
                self.log()
            ),
        }
    }

    /// Waits (bounded) until the server has formed its pool: its state is
    /// no longer `no_quorum`.
    pub async fn wait_formed(&mut self) -> StatusResponse {
        self.poll("the pool to form", SERVER_READY_TIMEOUT, |s| {
            s.server.state != "no_quorum"
        })
        .await
    }

    /// Waits (bounded) until a server started without its store has formed
    /// its pool; asserts that it is in its grace period.
    pub async fn wait_grace(&mut self) -> StatusResponse {
        let status = self.wait_formed().await;
        assert_eq!(status.server.state, "grace", "{status:#?}");
        status
    }

    /// Sends the heartbeat `body` and asserts that the server took its
    /// grant as `renewal` says: answered for the same grant id, converted or
    /// not.
    pub async fn renews(&self, body: &Value, renewal: Renewal) {
        let renewed = self.post("/v1/heartbeat", body).await.ok();
        assert_eq!(
            (renewed["grant_id"].as_str(), renewed["converted"].as_bool()),
            (
                body["grant_id"].as_str(),
                Some(renewal == Renewal::Converted)
            ),
            "{renewed}"
        );
    }

    /// Waits (bounded) until the server's state is `state`.
    pub async fn wait_state(&mut self, state: &str) -> StatusResponse {
        self.poll(&format!("state `{state}`"), SERVER_READY_TIMEOUT, |s| {
            s.server.state == state
        })
        .await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- log of the server at {}:\n{}", self.address, self.log());
        }
    }
}

/// How a server takes a holder's heartbeat.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Renewal {
    /// A grant it holds: renewed.
    Renewed,
    /// A grant it does not know (its store was lost): converted.
    Converted,
}

/// A fake server on loopback, plain HTTP: answers every request with
/// `answer(its own address, the request's JSON body)`, an HTTP status and
/// a JSON body; returns its address. It stands for anything a customer
/// could run in place of a Tessera server.
pub async fn fake_server<F>(answer: F) -> String
where
    F: Fn(&str, Value) -> (u16, Value) + Send + Sync + 'static,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let own = address.clone();
    let answer = std::sync::Arc::new(answer);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let (answer, own) = (answer.clone(), own.clone());
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buffer = [0u8; 4096];
                // The head, then as many body bytes as it announces.
                let body = loop {
                    let Ok(n) = stream.read(&mut buffer).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    request.extend_from_slice(&buffer[..n]);
                    let text = String::from_utf8_lossy(&request).to_string();
                    let Some(end) = text.find("\r\n\r\n") else {
                        continue;
                    };
                    let length = text[..end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if request.len() >= end + 4 + length {
                        break request[end + 4..end + 4 + length].to_vec();
                    }
                };
                let asked: Value = serde_json::from_slice(&body).unwrap_or_default();
                let (status, reply) = answer(&own, asked);
                let json = serde_json::to_vec(&reply).unwrap();
                let head = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                     connection: close\r\n\r\n",
                    json.len()
                );
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(&json).await;
            });
        }
    });
    address
}

/// A checkout request body.
pub fn checkout_body(client_id: &str, feature: &str, count: u32) -> Value {
    serde_json::json!({
        "client_id": client_id,
        "user": "e2e",
        "host": "loopback",
        "feature": feature,
        "version": "1.0",
        "count": count,
    })
}

/// The heartbeat that renews (or converts) `grant_id` held by `client_id`,
/// with the grant's `proof`.
pub fn heartbeat_body(
    grant_id: &str,
    client_id: &str,
    feature: &str,
    count: u32,
    proof: &str,
) -> Value {
    let mut body = checkout_body(client_id, feature, count);
    body["grant_id"] = grant_id.into();
    body["proof"] = proof.into();
    body
}

/// Seats in use of `feature` on every row of the answering server's table.
pub fn in_use(status: &StatusResponse, feature: &str) -> u32 {
    feature_of(status, feature)
        .servers
        .iter()
        .map(|row| row.in_use.unwrap_or(0))
        .sum()
}

pub fn feature_of<'a>(
    status: &'a StatusResponse,
    feature: &str,
) -> &'a tessera_proto::FeatureStatus {
    status
        .features
        .iter()
        .find(|f| f.feature == feature)
        .unwrap_or_else(|| panic!("no feature `{feature}` in {status:#?}"))
}

/// An unsigned `[[license]]` table whose seats do not lapse during a test.
pub fn code(feature: &str, seats: u32) -> String {
    code_with(feature, seats, LONG_POLICY)
}

/// An unsigned `[[license]]` table with these lease terms.
pub fn code_with(feature: &str, seats: u32, policy: &str) -> String {
    format!(
        "[[license]]\nid = \"{VENDOR}-{feature}\"\nfeature = \"{feature}\"\nseats = {seats}\n\
         expiry = \"permanent\"\n{policy}\n"
    )
}
