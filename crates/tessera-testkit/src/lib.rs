//! A pool of real `tessera server` processes on loopback, set up through the
//! CLI the way an administrator would. Used by the end-to-end tests and the
//! benchmarks; everything stays on 127.0.0.1 and every wait is bounded.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tessera_proto::{StatusResponse, POOL_HEADER};

/// Longest wait for any condition in these tests.
pub const PATIENCE: Duration = Duration::from_secs(20);

pub struct Server {
    pub id: String,
    pub address: String,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

pub struct Pool {
    /// The `tessera` binary every command runs.
    pub tessera: PathBuf,
    pub dir: tempfile::TempDir,
    pub servers: Vec<Server>,
    pub pool_id: String,
    http: reqwest::Client,
}

/// Lowest port [`free_port`] picks.
const TEST_PORT_MIN: u16 = 10_000;

/// A loopback port nothing listens on: picked at random below the kernel's
/// range for outgoing ports, so another test's outgoing connection cannot
/// take it between this check and the server's bind.
pub fn free_port() -> u16 {
    use rand::Rng;
    let ephemeral_min = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    if ephemeral_min > TEST_PORT_MIN + 1_000 {
        let mut rng = rand::thread_rng();
        for _ in 0..100 {
            let port = rng.gen_range(TEST_PORT_MIN..ephemeral_min);
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    listener.local_addr().expect("local address").port()
}

/// Signs a code of feature `app` with the pool's vendor key into `out`, as a vendor would.
pub fn sign_code(
    tessera: &Path,
    dir: &Path,
    id: &str,
    seats: u32,
    lease_s: u32,
    heartbeat_s: u32,
    out: &str,
) {
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
            id,
            "--seats",
            &seats.to_string(),
            "--lease-s",
            &lease_s.to_string(),
            "--heartbeat-interval-s",
            &heartbeat_s.to_string(),
            "--out",
            out,
        ],
        dir,
    );
}

fn run(tessera: &Path, args: &[&str], dir: &Path) -> String {
    let out = Command::new(tessera)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run tessera");
    assert!(
        out.status.success(),
        "tessera {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
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
        }
    }
}

pub const IDS: [&str; 7] = ["A", "B", "C", "D", "E", "F", "G"];

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
        sign_code(
            tessera,
            path,
            "app-1",
            spec.seats,
            spec.lease_s,
            spec.heartbeat_s,
            "codes.lic",
        );
        let public = std::fs::read_to_string(path.join("acme.pub")).expect("acme.pub");
        let public_key = public
            .lines()
            .find_map(|l| l.strip_prefix("public_key = "))
            .expect("public_key line")
            .trim_matches('"')
            .to_string();
        let pool_id = "test".to_string();
        let mut servers = Vec::new();
        let mut servers_toml = String::new();
        for id in &IDS[..spec.servers] {
            let address = format!("127.0.0.1:{}", free_port());
            servers_toml.push_str(&format!(
                "[[servers]]\nid = \"{id}\"\naddress = \"{address}\"\n\n"
            ));
            let config = path.join(format!("{id}.toml"));
            std::fs::write(
                &config,
                format!(
                    "server_id = \"{id}\"\npool_file = \"pool.toml\"\ndata_dir = \"data-{id}\"\n\
                     [[vendors]]\nname = \"acme\"\npublic_key = \"{public_key}\"\n{}",
                    spec.config_extra
                ),
            )
            .expect("write config");
            servers.push(Server {
                id: id.to_string(),
                address,
                config,
                log: path.join(format!("{id}.log")),
                child: None,
            });
        }
        let distribution = if spec.distribution.is_empty() {
            String::new()
        } else {
            format!("[distribution.app]\n{}\n", spec.distribution)
        };
        let codes = std::fs::read_to_string(path.join("codes.lic")).expect("codes");
        std::fs::write(
            path.join("pool.toml"),
            format!(
                "pool_id = \"{pool_id}\"\nsequence = 1\n\n{servers_toml}{distribution}{}\n{codes}",
                spec.extra
            ),
        )
        .expect("write pool file");
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(3))
            .build()
            .expect("http client");
        Pool {
            tessera: tessera.to_path_buf(),
            dir,
            servers,
            pool_id,
            http,
        }
    }

    /// Adds a server config with a fresh address, reading `pool_file`.
    pub fn add_server(&mut self, id: &str, pool_file: &str) -> usize {
        let address = format!("127.0.0.1:{}", free_port());
        let first = std::fs::read_to_string(&self.servers[0].config).expect("config");
        let config = self.path().join(format!("{id}.toml"));
        let text = first
            .replacen(
                &format!("server_id = \"{}\"", self.servers[0].id),
                &format!("server_id = \"{id}\""),
                1,
            )
            .replacen(
                &format!("data-{}", self.servers[0].id),
                &format!("data-{id}"),
                1,
            )
            .replacen(
                "pool_file = \"pool.toml\"",
                &format!("pool_file = \"{pool_file}\""),
                1,
            );
        std::fs::write(&config, text).expect("write config");
        self.servers.push(Server {
            id: id.to_string(),
            address,
            config,
            log: self.path().join(format!("{id}.log")),
            child: None,
        });
        self.servers.len() - 1
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
            if self.servers[i].child.is_none() {
                self.spawn(i);
            }
        }
    }

    pub fn spawn(&mut self, i: usize) {
        self.spawn_with(i, &["--new-pool"]);
    }

    /// Starts server `i` with these arguments after `server --config FILE`.
    pub fn spawn_with(&mut self, i: usize, args: &[&str]) {
        let server = &mut self.servers[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&server.log)
            .expect("log");
        let child = Command::new(&self.tessera)
            .args(["server", "--config"])
            .arg(&server.config)
            .args(args)
            .env("TESSERA_TEST_FAULTS", "1")
            .env("TESSERA_LOG", "info,openraft=error")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn tessera server");
        server.child = Some(child);
    }

    pub fn spawn_all(&mut self) {
        for i in 0..self.servers.len() {
            self.spawn(i);
        }
    }

    /// `kill -9`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.servers[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The process id of server `i` while it runs (killed servers have none).
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.servers[i].child.as_ref().map(Child::id)
    }

    /// Sends `signal` (`libc::SIGSTOP`, `libc::SIGCONT`, …) to server `i`;
    /// false if it is not running. The child is reaped only by [`Pool::kill`],
    /// so its pid cannot have been reused by another process.
    pub fn signal(&self, i: usize, signal: libc::c_int) -> bool {
        let Some(pid) = self.pid(i) else {
            return false;
        };
        let pid = libc::pid_t::try_from(pid).expect("a pid fits pid_t");
        // SAFETY: kill(2) only sends a signal; it touches no memory of ours.
        unsafe { libc::kill(pid, signal) == 0 }
    }

    pub async fn status(&self, i: usize) -> Option<StatusResponse> {
        let url = format!("http://{}/v1/status", self.servers[i].address);
        let response = self.http.get(url).send().await.ok()?;
        response.json().await.ok()
    }

    /// Server `i`'s `/metrics` text (empty if it does not answer).
    pub async fn metrics(&self, i: usize) -> String {
        let url = format!("http://{}/metrics", self.servers[i].address);
        match self.http.get(url).send().await {
            Ok(response) => response.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Polls until `check` holds for server `i`'s status, or panics with the last one.
    pub async fn wait_status(
        &self,
        i: usize,
        what: &str,
        check: impl Fn(&StatusResponse) -> bool,
    ) -> StatusResponse {
        let deadline = Instant::now() + PATIENCE;
        let mut last = None;
        while Instant::now() < deadline {
            if let Some(status) = self.status(i).await {
                if check(&status) {
                    return status;
                }
                last = Some(status);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!(
            "server {} never reached: {what}; last status: {last:#?}\nlog:\n{}",
            self.servers[i].id,
            self.log(i)
        );
    }

    pub async fn wait_serving(&self, i: usize) -> StatusResponse {
        self.wait_status(i, "serving", |s| s.server.state == "serving")
            .await
    }

    /// The index of the server every live server agrees leads, once it serves.
    pub async fn wait_leader(&self, live: &[usize]) -> usize {
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            for &i in live {
                if let Some(status) = self.status(i).await {
                    if status.server.role == "leader" && status.server.state == "serving" {
                        return i;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no leader among {live:?}");
    }

    /// Flips the test fault switch of server `i`.
    pub async fn partition(&self, i: usize, on: bool) {
        let url = format!("http://{}/v1/test/partition", self.servers[i].address);
        let response = self
            .http
            .post(url)
            .header(POOL_HEADER, &self.pool_id)
            .json(&serde_json::json!({ "on": on }))
            .send()
            .await
            .expect("fault switch");
        assert!(response.status().is_success(), "fault switch refused");
    }

    /// A raw checkout on server `i`: the HTTP status and the JSON body.
    pub async fn checkout(&self, i: usize, client: &str, count: u32) -> (u16, serde_json::Value) {
        let url = format!("http://{}/v1/checkout", self.servers[i].address);
        let body = serde_json::json!({
            "client_id": client, "user": "u", "host": "h", "feature": "app", "version": "1.0", "count": count
        });
        let response = self
            .http
            .post(url)
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

    /// Runs `tessera admin ARGS --server ADDRESS-OF-i`.
    pub fn admin(&self, i: usize, args: &[&str]) -> std::process::Output {
        Command::new(&self.tessera)
            .arg("admin")
            .args(args)
            .args(["--server", &self.servers[i].address])
            .current_dir(self.path())
            .output()
            .expect("run tessera admin")
    }

    /// Runs `tessera admin update-pool-file` against server `i`.
    pub fn update_pool_file(&self, i: usize, file: &Path) -> std::process::Output {
        Command::new(&self.tessera)
            .args(["admin", "update-pool-file"])
            .arg(file)
            .args(["--server", &self.servers[i].address])
            .output()
            .expect("run tessera admin")
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        for server in &mut self.servers {
            if let Some(mut child) = server.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
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

pub fn pool_available(status: &StatusResponse) -> u32 {
    status
        .features
        .iter()
        .find(|f| f.feature == "app")
        .expect("feature app")
        .pool_available
}
