//! The one harness for real `tessera server` processes on loopback: the
//! files an administrator writes ([`ServerConfig`], [`Credentials`]), a free
//! port ([`free_port`]), starting and stopping a server ([`server_command`],
//! [`Process`]), waiting until it is ready ([`Process::wait_status`],
//! [`wait_for_leader`]), and a whole pool set up through the CLI ([`Pool`]).
//! Used by the end-to-end, pool, borrow and chaos tests, the benchmark and
//! `tessera demo`; everything stays on 127.0.0.1 and every wait is bounded.
//! It starts the `tessera` binary it is given and links no server code.

pub mod cargo;
mod files;
mod port;
mod process;
mod secure;
mod status;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tessera_proto::{StatusResponse, POOL_HEADER};

pub use files::{pool_file_head, public_key_of, ServerConfig};
pub use port::{free_address, free_port};
pub use process::{die_with_parent, server_command, Process};
pub use secure::Credentials;
pub use status::{status, wait_for_leader, Http, NotReady, LOOPBACK_REQUEST_TIMEOUT};

/// Longest wait for any condition in these tests.
pub const PATIENCE: Duration = Duration::from_secs(20);

pub struct Server {
    pub id: String,
    pub address: String,
    config: PathBuf,
    log: PathBuf,
    process: Option<Process>,
}

pub struct Pool {
    /// The `tessera` binary every command runs.
    pub tessera: PathBuf,
    pub dir: tempfile::TempDir,
    pub servers: Vec<Server>,
    pub pool_id: String,
    public_key: String,
    config_extra: String,
    /// The pool CA, the servers' credentials, the administrators' tokens.
    pub credentials: Credentials,
    /// Trusts the pool CA and carries the admin token.
    pub http: Http,
    /// Held by a pool made with [`Pool::start`]: see [`one_pool_at_a_time`].
    _one_at_a_time: Option<tokio::sync::MutexGuard<'static, ()>>,
}

/// A license code of feature `app`, signed with the pool's vendor key.
pub struct CodeSpec<'a> {
    pub id: &'a str,
    pub seats: u32,
    pub lease_s: u32,
    pub heartbeat_s: u32,
    /// The signed file, in the pool's directory.
    pub out: &'a str,
    /// Allow temporary licenses with the seed's terms.
    pub temporary: bool,
}

/// Signs `code` with the vendor key in `dir`, as a vendor would.
fn sign_code(tessera: &Path, dir: &Path, code: &CodeSpec) {
    run(
        tessera,
        &[
            "license",
            "sign",
            "--key",
            "acme.key",
            "--feature",
            "app",
            "--id",
            code.id,
            "--seats",
            &code.seats.to_string(),
            "--lease-s",
            &code.lease_s.to_string(),
            "--heartbeat-interval-s",
            &code.heartbeat_s.to_string(),
            "--out",
            code.out,
        ]
        .into_iter()
        .chain(code.temporary.then_some("--temporary"))
        .collect::<Vec<_>>(),
        dir,
    );
}

pub(crate) fn run(tessera: &Path, args: &[&str], dir: &Path) -> String {
    cargo::run_checked(Command::new(tessera).args(args).current_dir(dir))
}

/// How a test pool is made.
pub struct PoolSpec<'a> {
    pub servers: usize,
    pub seats: u32,
    /// `[distribution.app]` lines, e.g. "A = 40\nB = 30\nC = 30\n".
    pub distribution: &'a str,
    pub lease_s: u32,
    pub heartbeat_s: u32,
    /// More pool file text, e.g. a `[borrowing.app]` section.
    pub extra: &'a str,
    /// More server config text, e.g. a `[timing]` section.
    pub config_extra: &'a str,
    /// Whether the code allows temporary licenses (seed 004's terms).
    pub temporary: bool,
}

impl Default for PoolSpec<'_> {
    fn default() -> Self {
        PoolSpec {
            servers: 3,
            seats: 100,
            distribution: "",
            lease_s: 4,
            heartbeat_s: 1,
            extra: "",
            config_extra: "",
            temporary: true,
        }
    }
}

pub const IDS: [&str; 7] = ["A", "B", "C", "D", "E", "F", "G"];

/// The pool key file of a [`Pool`], in its directory, shared by its servers.
pub const POOL_KEY_FILE: &str = "pool.key";

impl Pool {
    /// Keys, a signed code for feature `app`, a pool file and one config per server.
    pub fn new(tessera: &Path, spec: PoolSpec) -> Pool {
        let dir = tempfile::Builder::new()
            .prefix("tessera-pool-test-")
            .tempdir()
            .expect("tempdir");
        let path = dir.path();
        run(
            tessera,
            &["vendor", "keygen", "--vendor", "acme", "--out", "."],
            path,
        );
        run(tessera, &["pool", "key", "--out", POOL_KEY_FILE], path);
        let code = CodeSpec {
            id: "app-1",
            seats: spec.seats,
            lease_s: spec.lease_s,
            heartbeat_s: spec.heartbeat_s,
            out: "codes.lic",
            temporary: spec.temporary,
        };
        sign_code(tessera, path, &code);
        let public = std::fs::read_to_string(path.join("acme.pub")).expect("acme.pub");
        let pool_id = "test";
        let addresses: Vec<String> = (0..spec.servers)
            .map(|_| free_address().expect("a free loopback port"))
            .collect();
        let servers: Vec<(&str, &str)> = IDS[..spec.servers]
            .iter()
            .zip(&addresses)
            .map(|(id, address)| (*id, address.as_str()))
            .collect();
        let credentials = Credentials::init(tessera, path, pool_id, &servers);
        let mut pool = Pool {
            tessera: tessera.to_path_buf(),
            dir,
            servers: Vec::new(),
            pool_id: pool_id.to_string(),
            public_key: public_key_of(&public).expect("public_key line"),
            config_extra: spec.config_extra.to_string(),
            http: credentials.http(LOOPBACK_REQUEST_TIMEOUT),
            credentials,
            _one_at_a_time: None,
        };
        let mut pool_file = pool_file_head(&pool.pool_id);
        for (id, address) in &servers {
            pool.add_server_at(id, address, "pool.toml");
            pool_file.push_str(&pool.credentials.server_entry(id, address));
        }
        pool_file.push_str(&pool.credentials.admins());
        if !spec.distribution.is_empty() {
            pool_file.push_str(&format!("[distribution.app]\n{}\n", spec.distribution));
        }
        let codes = std::fs::read_to_string(pool.path().join("codes.lic")).expect("codes");
        pool_file.push_str(&format!("{}\n{codes}", spec.extra));
        std::fs::write(pool.path().join("pool.toml"), pool_file).expect("write pool file");
        pool
    }

    /// Adds a server joining later: its credentials (`tessera pool
    /// add-server`) and its config, with a fresh address, reading
    /// `pool_file`. Its pool file entry is [`Pool::server_entry`].
    pub fn add_server(&mut self, id: &str, pool_file: &str) -> usize {
        let address = free_address().expect("a free loopback port");
        self.credentials
            .add(&self.tessera, &self.pool_id, id, &address);
        self.add_server_at(id, &address, pool_file)
    }

    /// Server `i`'s `[[servers]]` entry for a pool file.
    pub fn server_entry(&self, i: usize) -> String {
        let server = &self.servers[i];
        self.credentials.server_entry(&server.id, &server.address)
    }

    /// The pool's vendor (`acme`) public key in base64: what a program of
    /// that vendor has built in.
    pub fn vendor_public_key(&self) -> &str {
        &self.public_key
    }

    /// The same key as a program of that vendor holds it
    /// (`Trust::Vendor(vec![pool.vendor_key()])`).
    pub fn vendor_key(&self) -> tessera_core::VendorPublicKey {
        tessera_core::VendorPublicKey::from_base64("acme", &self.public_key)
            .expect("the pool's vendor key")
    }

    /// The pool CA (PEM), for clients.
    pub fn ca_pem(&self) -> Vec<u8> {
        self.credentials.ca_pem()
    }

    fn add_server_at(&mut self, id: &str, address: &str, pool_file: &str) -> usize {
        let address = address.to_string();
        let config = self.path().join(format!("{id}.toml"));
        let tables = self.credentials.security_table(id) + &self.config_extra;
        let text = ServerConfig {
            server_id: id,
            pool_file,
            data_dir: &format!("data-{id}"),
            pool_key_file: POOL_KEY_FILE,
            top: "",
            vendor: "acme",
            public_key: &self.public_key,
            tables: &tables,
        }
        .text();
        std::fs::write(&config, text).expect("write config");
        self.servers.push(Server {
            id: id.to_string(),
            address,
            config,
            log: self.path().join(format!("{id}.log")),
            process: None,
        });
        self.servers.len() - 1
    }

    /// A pool made by [`Pool::new`], every server started and serving. It
    /// waits for the pool before it, if any, to be dropped
    /// ([`one_pool_at_a_time`]).
    pub async fn start(tessera: &Path, spec: PoolSpec<'_>) -> Pool {
        let mut pool = Pool::prepared(tessera, spec).await;
        pool.spawn_all();
        for i in 0..pool.servers.len() {
            pool.wait_serving(i).await;
        }
        pool
    }

    /// A pool made by [`Pool::new`] with no server started yet, once the
    /// pool before it, if any, has been dropped ([`one_pool_at_a_time`]).
    pub async fn prepared(tessera: &Path, spec: PoolSpec<'_>) -> Pool {
        let one_at_a_time = one_pool_at_a_time().await;
        let mut pool = Pool::new(tessera, spec);
        pool._one_at_a_time = Some(one_at_a_time);
        pool
    }

    /// Every server's index.
    pub fn all(&self) -> Vec<usize> {
        (0..self.servers.len()).collect()
    }

    /// Signs another code with the pool's vendor key.
    pub fn sign_code(&self, code: CodeSpec) {
        sign_code(&self.tessera, self.path(), &code);
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn addresses(&self) -> Vec<String> {
        self.servers.iter().map(|s| s.address.clone()).collect()
    }

    /// Starts server `i` (with `--new-pool`: a fresh pool, no grace period).
    /// Starts every server that is not running.
    pub fn spawn_missing(&mut self) {
        for i in 0..self.servers.len() {
            if self.servers[i].process.is_none() {
                self.spawn(i);
            }
        }
    }

    pub fn spawn(&mut self, i: usize) {
        self.spawn_with(i, &["--new-pool"]);
    }

    /// Starts server `i` with these arguments after `server --config FILE`.
    pub fn spawn_with(&mut self, i: usize, args: &[&str]) {
        self.spawn_with_env(i, args, &[]);
    }

    /// Starts server `i` (with `--new-pool`, as [`Pool::spawn`]) whose
    /// issuer takes each new control state `ms` late from the start: the
    /// control-lag fault switch already on ([`Pool::control_lag`]).
    pub fn spawn_lagging(&mut self, i: usize, ms: u64) {
        let ms = ms.to_string();
        // The server's `seams::TEST_CONTROL_LAG_ENV`.
        let env = [("TESSERA_TEST_CONTROL_LAG_MS", ms.as_str())];
        self.spawn_with_env(i, &["--new-pool"], &env);
    }

    fn spawn_with_env(&mut self, i: usize, args: &[&str], env: &[(&str, &str)]) {
        let server = &mut self.servers[i];
        let mut command = server_command(&self.tessera, &server.config, args);
        command
            .env("TESSERA_TEST_FAULTS", "1")
            .env("TESSERA_LOG", "info,openraft=error")
            .envs(env.iter().copied());
        let process = Process::start(command, &server.log).expect("spawn tessera server");
        server.process = Some(process);
    }

    pub fn spawn_all(&mut self) {
        for i in 0..self.servers.len() {
            self.spawn(i);
        }
    }

    /// `kill -9`.
    pub fn kill(&mut self, i: usize) {
        if let Some(process) = self.servers[i].process.take() {
            process.kill();
        }
    }

    /// The process id of server `i` while it runs (killed servers have none).
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.servers[i].process.as_ref().map(Process::pid)
    }

    /// Sends `signal` (`libc::SIGSTOP`, `libc::SIGCONT`, …) to server `i`;
    /// false if it is not running.
    pub fn signal(&self, i: usize, signal: libc::c_int) -> bool {
        self.servers[i]
            .process
            .as_ref()
            .is_some_and(|process| process.signal(signal))
    }

    pub async fn status(&self, i: usize) -> Option<StatusResponse> {
        status(&self.http, &self.servers[i].address).await.ok()
    }

    /// Server `i`'s `/metrics` text (empty if it does not answer).
    pub async fn metrics(&self, i: usize) -> String {
        match self
            .http
            .get(&self.servers[i].address, "/metrics")
            .send()
            .await
        {
            Ok(response) => response.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Polls until `check` holds for server `i`'s status, or panics with the
    /// last one (at once if the server is not running or exits).
    pub async fn wait_status(
        &self,
        i: usize,
        what: &str,
        check: impl Fn(&StatusResponse) -> bool,
    ) -> StatusResponse {
        let server = &self.servers[i];
        let Some(process) = &server.process else {
            panic!("server {} is not running; waited for: {what}", server.id);
        };
        match process
            .wait_status(&self.http, &server.address, PATIENCE, check)
            .await
        {
            Ok(status) => status,
            Err(not_ready) => panic!(
                "server {} never reached: {what}; {not_ready}\nlog:\n{}",
                server.id,
                self.log(i)
            ),
        }
    }

    pub async fn wait_serving(&self, i: usize) -> StatusResponse {
        self.wait_status(i, "serving", |s| s.server.state == "serving")
            .await
    }

    /// The index of the first of `live` that says it leads and serves.
    pub async fn wait_leader(&self, live: &[usize]) -> usize {
        let addresses: Vec<String> = live
            .iter()
            .map(|&i| self.servers[i].address.clone())
            .collect();
        match wait_for_leader(&self.http, &addresses, PATIENCE).await {
            Some(index) => live[index],
            None => panic!("no leader among {live:?}"),
        }
    }

    /// Flips the test fault switch of server `i`.
    pub async fn partition(&self, i: usize, on: bool) {
        self.fault_switch(i, "/v1/test/partition", serde_json::json!({ "on": on }))
            .await;
    }

    /// Sets the test fault switch of server `i` that makes its issuer take
    /// each new control state `ms` late (0: at once).
    pub async fn control_lag(&self, i: usize, ms: u64) {
        self.fault_switch(i, "/v1/test/control-lag", serde_json::json!({ "ms": ms }))
            .await;
    }

    /// Posts `body` to the test fault switch at `path` of server `i`.
    async fn fault_switch(&self, i: usize, path: &str, body: serde_json::Value) {
        let response = self
            .http
            .post(&self.servers[i].address, path)
            .header(POOL_HEADER, &self.pool_id)
            .json(&body)
            .send()
            .await
            .expect("fault switch");
        assert!(
            response.status().is_success(),
            "fault switch {path} refused"
        );
    }

    /// A raw checkout on server `i`: the HTTP status and the JSON body.
    pub async fn checkout(&self, i: usize, client: &str, count: u32) -> (u16, serde_json::Value) {
        let body = serde_json::json!({
            "client_id": client, "user": "u", "host": "h", "feature": "app", "version": "1.0", "count": count
        });
        let response = self
            .http
            .post(&self.servers[i].address, "/v1/checkout")
            .json(&body)
            .send()
            .await
            .expect("checkout");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or_default())
    }

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.servers[i].log).unwrap_or_default()
    }

    /// Runs `tessera admin ARGS --server ADDRESS-OF-i`, with the pool CA and
    /// the admin token.
    pub fn admin(&self, i: usize, args: &[&str]) -> std::process::Output {
        self.tessera_command(i, "admin", args)
    }

    /// [`Pool::admin`], which must succeed: a failure panics with its
    /// standard error.
    pub fn admin_ok(&self, i: usize, args: &[&str]) {
        let out = self.admin(i, args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs `tessera COMMAND ARGS --server ADDRESS-OF-i --ca CA
    /// --token-file ADMIN-TOKEN` in the pool's directory.
    pub fn tessera_command(&self, i: usize, command: &str, args: &[&str]) -> std::process::Output {
        Command::new(&self.tessera)
            .arg(command)
            .args(args)
            .args(["--server", &self.servers[i].address])
            .arg("--ca")
            .arg(self.credentials.ca_file())
            .arg("--token-file")
            .arg(self.credentials.admin_token_file())
            .current_dir(self.path())
            .output()
            .expect("run tessera")
    }

    /// Runs `tessera admin update-pool-file` against server `i`.
    pub fn update_pool_file(&self, i: usize, file: &Path) -> std::process::Output {
        let file = file.to_string_lossy();
        self.admin(i, &["update-pool-file", &file])
    }
}

impl Drop for Pool {
    /// Kills the servers before their directory goes, and lets the next pool
    /// start only then.
    fn drop(&mut self) {
        self.servers.clear();
    }
}

/// The leader's view of one server's row: (allocation, in use, available).
pub fn row(status: &StatusResponse, server: &str) -> (u32, Option<u32>, Option<u32>) {
    let feature = status
        .features
        .iter()
        .find(|f| f.feature == "app")
        .expect("feature app");
    let row = feature
        .servers
        .iter()
        .find(|r| r.server_id == server)
        .expect("row");
    (row.allocation, row.in_use, row.available)
}

/// The value of the unlabelled metric `name` in `/metrics` text, if any.
pub fn metric(metrics: &str, name: &str) -> Option<u64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

pub fn pool_available(status: &StatusResponse) -> u32 {
    status
        .features
        .iter()
        .find(|f| f.feature == "app")
        .expect("feature app")
        .pool_available
}

/// Pools of real processes run one at a time within a test binary: several
/// on two cores would starve each other's heartbeats and test the machine,
/// not the pool. [`Pool::start`] holds it while its pool lives; a test that
/// starts its servers itself holds it for its length.
pub async fn one_pool_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static ONE_POOL_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    ONE_POOL_AT_A_TIME.lock().await
}
