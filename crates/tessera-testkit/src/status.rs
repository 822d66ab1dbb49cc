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

/// An HTTP client for loopback servers: TLS trusting a pool CA (or plain
/// HTTP for servers that set `plain_http`), no proxy, every request bounded
/// by its timeout, and a token sent with every request if it has one.
#[derive(Clone, Debug)]
pub struct Http {
    client: reqwest::Client,
    scheme: &'static str,
    token: Option<String>,
}

impl Http {
    /// TLS, trusting the CA certificate `ca_pem` only.
    pub fn tls(ca_pem: &[u8], token: Option<String>, timeout: Duration) -> Http {
        let ca = reqwest::Certificate::from_pem(ca_pem).expect("the pool CA is a PEM certificate");
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(timeout)
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca)
            .build()
            .expect("an HTTPS client with one root always builds");
        Http {
            client,
            scheme: "https",
            token,
        }
    }

    /// Plain HTTP.
    pub fn plain(timeout: Duration) -> Http {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(timeout)
            .build()
            .expect("an HTTP client without TLS or proxy always builds");
        Http {
            client,
            scheme: "http",
            token: None,
        }
    }

    pub fn url(&self, address: &str, path: &str) -> String {
        format!("{}://{address}{path}", self.scheme)
    }

    pub fn request(
        &self,
        method: reqwest::Method,
        address: &str,
        path: &str,
    ) -> reqwest::RequestBuilder {
        self.authorized(self.client.request(method, self.url(address, path)))
    }

    pub fn get(&self, address: &str, path: &str) -> reqwest::RequestBuilder {
        self.authorized(self.client.get(self.url(address, path)))
    }

    pub fn post(&self, address: &str, path: &str) -> reqwest::RequestBuilder {
        self.authorized(self.client.post(self.url(address, path)))
    }

    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }
}

/// The server's `/v1/status`, or what went wrong, in words.
pub async fn status(http: &Http, address: &str) -> Result<StatusResponse, String> {
    let response = http
        .get(address, "/v1/status")
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
        http: &Http,
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
    http: &Http,
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
