//! Asking servers for `/v1/status` until they are ready: serving, leading,
//! or whatever the caller waits for. Every wait is bounded.

use std::fmt;
use std::process::ExitStatus;
use std::time::Duration;

use tessera_proto::StatusResponse;
use tokio::time::Instant;

use crate::Process;

/// Time limit of one request to a server on loopback: far above any answer
/// of a live server, so that a stopped one is noticed.
pub const LOOPBACK_REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// Pause between two status polls of one server.
const STATUS_POLL_INTERVAL: Duration = Duration::from_millis(25);
/// Pause between two rounds over the servers of a pool, waiting for a leader.
const LEADER_POLL_INTERVAL: Duration = Duration::from_millis(10);

/// An HTTP client for loopback servers: no proxy, every request bounded by `timeout`.
pub fn http_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(timeout)
        .build()
        .expect("an HTTP client without TLS or proxy always builds")
}

/// The server's `/v1/status`, or what went wrong, in words.
pub async fn status(http: &reqwest::Client, address: &str) -> Result<StatusResponse, String> {
    let response = http
        .get(format!("http://{address}/v1/status"))
        .send()
        .await
        .map_err(|err| err.to_string())?;
    if !response.status().is_success() {
        return Err(format!("HTTP {}", response.status()));
    }
    response.json().await.map_err(|err| err.to_string())
}

/// Why a wait for a status ended without it.
#[derive(Debug)]
pub enum NotReady {
    /// The process ended first.
    Exited(ExitStatus),
    /// The time was up; the last status or error seen.
    TimedOut { last: String },
}

impl fmt::Display for NotReady {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotReady::Exited(status) => write!(f, "the server exited ({status})"),
            NotReady::TimedOut { last } => write!(f, "last: {last}"),
        }
    }
}

impl Process {
    /// Polls `/v1/status` at `address` until `done` holds, the process
    /// ends, or `timeout` passes.
    pub async fn wait_status(
        &self,
        http: &reqwest::Client,
        address: &str,
        timeout: Duration,
        mut done: impl FnMut(&StatusResponse) -> bool,
    ) -> Result<StatusResponse, NotReady> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(exit) = self.exited() {
                return Err(NotReady::Exited(exit));
            }
            let last = match status(http, address).await {
                Ok(status) if done(&status) => return Ok(status),
                Ok(status) => format!("{status:#?}"),
                Err(err) => err,
            };
            if Instant::now() >= deadline {
                return Err(NotReady::TimedOut { last });
            }
            tokio::time::sleep(STATUS_POLL_INTERVAL).await;
        }
    }
}

/// The index in `addresses` of the first server that says it leads and
/// serves, polling them all until `timeout` passes.
pub async fn wait_for_leader(
    http: &reqwest::Client,
    addresses: &[String],
    timeout: Duration,
) -> Option<usize> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        for (index, address) in addresses.iter().enumerate() {
            if let Ok(status) = status(http, address).await {
                if status.server.role == "leader" && status.server.state == "serving" {
                    return Some(index);
                }
            }
        }
        tokio::time::sleep(LEADER_POLL_INTERVAL).await;
    }
    None
}
