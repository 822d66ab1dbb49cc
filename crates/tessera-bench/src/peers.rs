//! The systems Tessera is compared with, each as a [`Target`]: Redis 7 with
//! a Lua semaphore and a 3-node etcd semaphore. The benchmark starts its own
//! instances on loopback, with data in a temporary directory, and kills them
//! when done (on drop, and on Linux when the benchmark dies).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde_json::{json, Value};
use tessera_testkit::{die_with_parent, free_port, Process};

use crate::http1::Connection;
use crate::target::{Checkout, OpError, Session, Target};
use crate::{CONNECT_TIMEOUT, REQUEST_TIMEOUT};

/// What to run when a peer's binary is missing.
pub const INSTALL_HINT: &str = "install the peers first: bash scripts/install-bench-peers.sh";
/// Longest wait for a peer to answer after it starts.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
const READY_POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Lease of a seat in the peers' semaphores, as in Tessera's cycle runs.
const LEASE_S: u64 = 60;
/// Lines of a peer's log shown when it fails.
const LOG_TAIL_LINES: usize = 20;

/// The path of `name` on `PATH`, or an error with the install hint.
pub fn find_binary(name: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .with_context(|| format!("there is no `{name}` on PATH; {INSTALL_HINT}"))
}

/// One peer process with its log file.
struct Peer {
    name: String,
    process: Process,
}

impl Peer {
    fn start(name: &str, binary: &Path, args: &[String], dir: &Path) -> Result<Peer> {
        let mut command = std::process::Command::new(binary);
        command.args(args).current_dir(dir);
        die_with_parent(&mut command);
        let process = Process::start(command, &dir.join(format!("{name}.log")))
            .with_context(|| format!("cannot start {}", binary.display()))?;
        Ok(Peer {
            name: name.to_string(),
            process,
        })
    }

    fn check_running(&self) -> Result<()> {
        crate::check_running(&self.name, &self.process, LOG_TAIL_LINES)
    }

    fn cpu_time(&self) -> Option<Duration> {
        crate::cpu::process_cpu_time(self.process.pid())
    }
}

fn temp_dir(prefix: &str) -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .context("cannot make a temporary directory")
}

/// Redis's durability setting for its append-only file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fsync {
    /// fsync before answering every write.
    Always,
    /// fsync once a second: up to a second of writes lost on a crash.
    Everysec,
}

impl Fsync {
    fn as_str(self) -> &'static str {
        match self {
            Fsync::Always => "always",
            Fsync::Everysec => "everysec",
        }
    }
}

/// Check-and-increment with lease expiry: the semaphore is a sorted set of
/// holder -> expiry (ms, Redis's own clock). Expired holders are dropped,
/// a holder already in the set renews, and a new one enters only while fewer
/// than the limit hold. Returns 1 when granted, 0 when denied.
/// KEYS[1]: the set; ARGV: holder, limit, lease in ms.
const REDIS_SEMAPHORE_LUA: &str = r#"
local time = redis.call('TIME')
local now_ms = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms)
local expiry_ms = now_ms + tonumber(ARGV[3])
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  redis.call('ZADD', KEYS[1], expiry_ms, ARGV[1])
  return 1
end
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], expiry_ms, ARGV[1])
  return 1
end
return 0
"#;
const REDIS_KEY: &str = "tessera-bench:semaphore";

/// A `redis-server` of our own: loopback, append-only file in a temporary
/// directory, no RDB snapshots.
pub struct RedisTarget {
    name: String,
    url: String,
    seats: u32,
    script_sha: String,
    process: Peer,
    _dir: tempfile::TempDir,
}

impl RedisTarget {
    pub async fn start(fsync: Fsync, seats: u32) -> Result<RedisTarget> {
        let binary = find_binary("redis-server")?;
        let dir = temp_dir("tessera-bench-redis-")?;
        let port = free_port().context("cannot bind loopback")?;
        let args: Vec<String> = [
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--dir",
            &dir.path().display().to_string(),
            "--appendonly",
            "yes",
            "--appendfsync",
            fsync.as_str(),
            "--save",
            "",
            "--daemonize",
            "no",
            "--maxclients",
            "20000",
        ]
        .iter()
        .map(|arg| arg.to_string())
        .collect();
        let process = Peer::start("redis-server", &binary, &args, dir.path())?;
        let url = format!("redis://127.0.0.1:{port}/");
        let client = redis::Client::open(url.as_str()).context("bad Redis URL")?;
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        let mut connection = loop {
            process.check_running()?;
            match client.get_multiplexed_async_connection().await {
                Ok(connection) => break connection,
                Err(err) if tokio::time::Instant::now() >= deadline => {
                    bail!("redis-server did not answer within {READY_TIMEOUT:?}: {err}")
                }
                Err(_) => tokio::time::sleep(READY_POLL_INTERVAL).await,
            }
        };
        let script_sha: String = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(REDIS_SEMAPHORE_LUA)
            .query_async(&mut connection)
            .await
            .context("SCRIPT LOAD of the semaphore failed")?;
        Ok(RedisTarget {
            name: format!("redis (appendfsync {})", fsync.as_str()),
            url,
            seats,
            script_sha,
            process,
            _dir: dir,
        })
    }

    pub fn cpu_time(&self) -> Option<Duration> {
        self.process.cpu_time()
    }
}

impl Target for RedisTarget {
    type Session = RedisSession;

    fn name(&self) -> &str {
        &self.name
    }

    fn session(&self, _client_index: usize) -> Result<RedisSession> {
        Ok(RedisSession {
            client: redis::Client::open(self.url.as_str()).context("bad Redis URL")?,
            connection: None,
            script_sha: self.script_sha.clone(),
            seats: self.seats,
        })
    }

    fn check_alive(&self) -> Result<()> {
        self.process.check_running()
    }
}

/// One client's own connection to Redis (opened on first use, again after
/// a failure).
pub struct RedisSession {
    client: redis::Client,
    connection: Option<redis::aio::MultiplexedConnection>,
    script_sha: String,
    seats: u32,
}

impl RedisSession {
    async fn query<T: redis::FromRedisValue>(
        &mut self,
        command: &redis::Cmd,
    ) -> Result<T, OpError> {
        let transport = |err: redis::RedisError| OpError::new("transport", err.to_string());
        if self.connection.is_none() {
            let connection = tokio::time::timeout(
                CONNECT_TIMEOUT,
                self.client.get_multiplexed_async_connection(),
            )
            .await
            .map_err(|_| OpError::new("transport", "cannot connect to Redis in time"))?
            .map_err(transport)?;
            self.connection = Some(connection);
        }
        let Some(connection) = self.connection.as_mut() else {
            unreachable!("connected above");
        };
        let answer = tokio::time::timeout(REQUEST_TIMEOUT, command.query_async(connection)).await;
        let result = match answer {
            Ok(result) => result.map_err(transport),
            Err(_) => Err(OpError::new("transport", "no answer from Redis in time")),
        };
        if result.is_err() {
            self.connection = None;
        }
        result
    }
}

impl Session for RedisSession {
    type Hold = u64;

    async fn checkout(&mut self, holder: u64) -> Result<Checkout<u64>, OpError> {
        let mut command = redis::cmd("EVALSHA");
        command
            .arg(&self.script_sha)
            .arg(1)
            .arg(REDIS_KEY)
            .arg(holder)
            .arg(self.seats)
            .arg(LEASE_S * 1_000);
        let granted: i64 = self.query(&command).await?;
        Ok(if granted == 1 {
            Checkout::Granted(holder)
        } else {
            Checkout::Denied
        })
    }

    async fn checkin(&mut self, holder: u64) -> Result<(), OpError> {
        let mut command = redis::cmd("ZREM");
        command.arg(REDIS_KEY).arg(holder);
        let _removed: i64 = self.query(&command).await?;
        Ok(())
    }

    /// The checkout script renews a present holder's expiry.
    async fn heartbeat(&mut self, holder: &u64) -> Result<(), OpError> {
        match self.checkout(*holder).await? {
            Checkout::Granted(_) => Ok(()),
            Checkout::Denied => Err(OpError::new(
                "lost",
                format!("holder {holder} was not renewed"),
            )),
        }
    }
}

/// Members of the etcd cluster.
const ETCD_MEMBERS: usize = 3;
/// Prefix of the semaphore's holder keys.
const ETCD_PREFIX: &str = "tessera-bench/semaphore/";

/// Three `etcd` members on loopback, data in a temporary directory. The
/// semaphore, through etcd's v3 JSON gateway:
///
/// - checkout: grant a lease (TTL = the seat's lease); then one transaction
///   that puts the holder's key under the semaphore prefix, attached to the
///   lease, and counts the keys under the prefix. At most `seats` keys:
///   granted; more: denied, and the lease is revoked (which deletes the key).
/// - check-in: revoke the lease, which deletes the key; expiry does the same.
///
/// Safe: take the granted holder whose key is newest; every other granted
/// key existed when its transaction counted, so the granted holders number
/// at most `seats`.
pub struct EtcdTarget {
    client_addresses: Vec<String>,
    seats: u32,
    members: Vec<Peer>,
    _dir: tempfile::TempDir,
}

impl EtcdTarget {
    pub async fn start(seats: u32) -> Result<EtcdTarget> {
        let binary = find_binary("etcd")?;
        let dir = temp_dir("tessera-bench-etcd-")?;
        let mut client_ports = Vec::new();
        let mut peer_ports = Vec::new();
        for _ in 0..ETCD_MEMBERS {
            client_ports.push(free_port().context("cannot bind loopback")?);
            peer_ports.push(free_port().context("cannot bind loopback")?);
        }
        let initial_cluster = peer_ports
            .iter()
            .enumerate()
            .map(|(index, port)| format!("m{index}=http://127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut members = Vec::new();
        for index in 0..ETCD_MEMBERS {
            let name = format!("m{index}");
            let client_url = format!("http://127.0.0.1:{}", client_ports[index]);
            let peer_url = format!("http://127.0.0.1:{}", peer_ports[index]);
            let data_dir = dir.path().join(&name);
            let args: Vec<String> = vec![
                "--name".into(),
                name.clone(),
                "--data-dir".into(),
                data_dir.display().to_string(),
                "--listen-client-urls".into(),
                client_url.clone(),
                "--advertise-client-urls".into(),
                client_url,
                "--listen-peer-urls".into(),
                peer_url.clone(),
                "--initial-advertise-peer-urls".into(),
                peer_url,
                "--initial-cluster".into(),
                initial_cluster.clone(),
                "--initial-cluster-state".into(),
                "new".into(),
                "--initial-cluster-token".into(),
                "tessera-bench".into(),
                "--log-level".into(),
                "warn".into(),
            ];
            members.push(Peer::start(
                &format!("etcd-{name}"),
                &binary,
                &args,
                dir.path(),
            )?);
        }
        let target = EtcdTarget {
            client_addresses: client_ports
                .iter()
                .map(|port| format!("127.0.0.1:{port}"))
                .collect(),
            seats,
            members,
            _dir: dir,
        };
        target.wait_ready().await?;
        Ok(target)
    }

    /// Until every member answers a linearizable read (so a leader exists).
    async fn wait_ready(&self) -> Result<()> {
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        for address in &self.client_addresses {
            let mut connection = Connection::new(address, CONNECT_TIMEOUT, REQUEST_TIMEOUT);
            let body = json!({ "key": BASE64.encode("ready") }).to_string();
            loop {
                self.check_alive()?;
                let answer = connection.post_json("/v3/kv/range", body.as_bytes()).await;
                match answer {
                    Ok(response) if response.status == 200 => break,
                    _ if tokio::time::Instant::now() >= deadline => {
                        bail!("etcd at {address} did not serve within {READY_TIMEOUT:?}")
                    }
                    _ => tokio::time::sleep(READY_POLL_INTERVAL).await,
                }
            }
        }
        Ok(())
    }

    pub fn cpu_time(&self) -> Option<Duration> {
        self.members
            .iter()
            .map(Peer::cpu_time)
            .sum::<Option<Duration>>()
    }
}

impl Target for EtcdTarget {
    type Session = EtcdSession;

    fn name(&self) -> &str {
        "etcd (3 nodes)"
    }

    fn session(&self, client_index: usize) -> Result<EtcdSession> {
        // Clients spread over the members, as a real deployment's would.
        let address = &self.client_addresses[client_index % self.client_addresses.len()];
        Ok(EtcdSession {
            connection: Connection::new(address, CONNECT_TIMEOUT, REQUEST_TIMEOUT),
            seats: self.seats,
            prefix_key: BASE64.encode(ETCD_PREFIX),
            prefix_end: BASE64.encode(prefix_end(ETCD_PREFIX)),
        })
    }

    fn check_alive(&self) -> Result<()> {
        self.members.iter().try_for_each(Peer::check_running)
    }
}

/// The end of the range of keys that start with `prefix`.
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

pub struct EtcdSession {
    connection: Connection,
    seats: u32,
    prefix_key: String,
    prefix_end: String,
}

/// A held etcd seat: its lease id (int64 as the gateway writes it, a string).
pub struct EtcdHold {
    lease_id: String,
}

impl EtcdSession {
    async fn call(&mut self, path: &str, body: Value) -> Result<Value, OpError> {
        let response = self
            .connection
            .post_json(path, body.to_string().as_bytes())
            .await
            .map_err(|message| OpError::new("transport", message))?;
        if response.status != 200 {
            return Err(OpError::new(
                "refused",
                format!(
                    "{path}: {}: {}",
                    response.status,
                    String::from_utf8_lossy(&response.body)
                ),
            ));
        }
        serde_json::from_slice(&response.body)
            .map_err(|err| OpError::new("bad_answer", format!("{path}: {err}")))
    }

    async fn revoke(&mut self, lease_id: &str) -> Result<(), OpError> {
        self.call("/v3/lease/revoke", json!({ "ID": lease_id }))
            .await
            .map(|_| ())
    }
}

/// An int64 as the JSON gateway writes it: a string, or absent for zero.
fn int64(value: &Value) -> Option<i64> {
    match value {
        Value::Null => Some(0),
        Value::String(text) => text.parse().ok(),
        Value::Number(number) => number.as_i64(),
        _ => None,
    }
}

impl Session for EtcdSession {
    type Hold = EtcdHold;

    async fn checkout(&mut self, holder: u64) -> Result<Checkout<EtcdHold>, OpError> {
        let lease = self
            .call("/v3/lease/grant", json!({ "TTL": LEASE_S.to_string() }))
            .await?;
        let lease_id = match &lease["ID"] {
            Value::String(id) => id.clone(),
            Value::Number(id) => id.to_string(),
            other => {
                return Err(OpError::new(
                    "bad_answer",
                    format!("lease grant without an ID: {other}"),
                ))
            }
        };
        let key = BASE64.encode(format!("{ETCD_PREFIX}{holder}"));
        let txn = json!({
            "success": [
                { "request_put": { "key": key, "value": BASE64.encode("1"), "lease": lease_id } },
                { "request_range": {
                    "key": self.prefix_key, "range_end": self.prefix_end, "count_only": true
                } }
            ]
        });
        let answer = self.call("/v3/kv/txn", txn).await?;
        let count = int64(&answer["responses"][1]["response_range"]["count"]).ok_or_else(|| {
            OpError::new(
                "bad_answer",
                format!("txn answer without a count: {answer}"),
            )
        })?;
        if count <= i64::from(self.seats) {
            return Ok(Checkout::Granted(EtcdHold { lease_id }));
        }
        self.revoke(&lease_id).await?;
        Ok(Checkout::Denied)
    }

    async fn checkin(&mut self, hold: EtcdHold) -> Result<(), OpError> {
        self.revoke(&hold.lease_id).await
    }

    /// One keep-alive of the seat's lease (the gateway answers one message
    /// per message sent).
    async fn heartbeat(&mut self, hold: &EtcdHold) -> Result<(), OpError> {
        let response = self
            .connection
            .post_json(
                "/v3/lease/keepalive",
                json!({ "ID": hold.lease_id }).to_string().as_bytes(),
            )
            .await
            .map_err(|message| OpError::new("transport", message))?;
        let text = String::from_utf8_lossy(&response.body);
        if response.status != 200 || !text.contains("\"TTL\"") {
            return Err(OpError::new(
                "refused",
                format!("/v3/lease/keepalive: {}: {text}", response.status),
            ));
        }
        Ok(())
    }
}

/// Runs `target` under the load and reports, with the CPU its processes used.
pub async fn measure<T: Target>(
    target: Arc<T>,
    load: &crate::LoadConfig,
    cpu_time: impl Fn(&T) -> Option<Duration>,
) -> Result<crate::Report> {
    let cpu_before = (cpu_time(&target), crate::cpu::own_cpu_time());
    let result = crate::load::run(target.clone(), load).await?;
    let cpu_after = (cpu_time(&target), crate::cpu::own_cpu_time());
    let mut report = crate::Report::new(target.name(), load.mode, load.clients, result);
    report.server_cpu = cpu_after
        .0
        .zip(cpu_before.0)
        .map(|(a, b)| a.saturating_sub(b));
    report.load_cpu = cpu_after
        .1
        .zip(cpu_before.1)
        .map(|(a, b)| a.saturating_sub(b));
    Ok(report)
}
