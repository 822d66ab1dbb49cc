//! A real server in this process: a pool of one (`A`, pool `fuzz`, a
//! vendor `acme` whose code gives five seats of `cad`), started with
//! `tessera_server::start_with` on its own runtime and served by its real
//! router, over in-memory connections ([`Listen::Memory`], no ports, a fresh
//! connection per request) or loopback TCP ([`Listen::Tcp`], for tests that
//! need a raw socket). A request whose connection drops without an answer is
//! a handler that panicked; a panic on any of the server's threads is
//! recorded ([`InProcess::panics`]).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, Once};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tessera_core::{CivilDate, LicenseCode, VendorSecretKey};
use tessera_proto::{ErrorBody, ErrorCode, StatusResponse, POOL_HEADER};
use tokio::io::DuplexStream;
use tokio::sync::mpsc;

/// The pool's id.
pub const POOL_ID: &str = "fuzz";
/// Its only server.
pub const SERVER_ID: &str = "A";
/// The feature its code licenses, and the code's id and seats.
pub const FEATURE: &str = "cad";
pub const CODE_ID: &str = "acme-cad";
pub const SEATS: u32 = 5;
/// The server's peer credential: peer requests (and admin requests, which
/// a server may forward) carry it in its name.
pub const PEER_CREDENTIAL: &str = "fuzz-peer-credential-of-server-a-0123456789";
/// Longest one request may take to be answered.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest the server may take to lead and serve after it starts.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How requests reach the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listen {
    /// In-memory connections (tokio duplex streams).
    Memory,
    /// A TCP listener on 127.0.0.1.
    Tcp,
}

/// Panics on server threads, by thread-name prefix.
static PANICS: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());
static HOOK: Once = Once::new();
static SERVERS: AtomicUsize = AtomicUsize::new(0);

fn watch_panics() {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let thread = std::thread::current().name().unwrap_or("").to_string();
            if thread.starts_with("fuzz-server-") {
                PANICS
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((thread, info.to_string()));
            }
            previous(info);
        }));
    });
}

/// The in-memory listener the server accepts from.
/// Starts the server in `runtime` on `listener`, which answers as
/// `address`, until `shutdown` completes.
fn serve_on<L>(
    runtime: &tokio::runtime::Runtime,
    config: tessera_server::ServerConfig,
    listener: L,
    address: SocketAddr,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) where
    L: axum::serve::Listener<Addr = SocketAddr>,
{
    runtime
        .block_on(tessera_server::start_with(
            config,
            tessera_server::Seams::production(),
            move |_| async move { Ok((listener, address)) },
            shutdown,
        ))
        .expect("the server starts");
}

struct MemoryListener {
    incoming: mpsc::Receiver<DuplexStream>,
    address: SocketAddr,
}

impl axum::serve::Listener for MemoryListener {
    type Io = DuplexStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (DuplexStream, SocketAddr) {
        match self.incoming.recv().await {
            Some(stream) => (stream, self.address),
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.address)
    }
}

enum Connect {
    Memory(mpsc::Sender<DuplexStream>),
    Tcp(SocketAddr),
}

/// An answer of the server.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Vec<u8>,
}

impl Answer {
    /// The error body, if the answer is one.
    pub fn error(&self) -> Option<ErrorBody> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The error code, if the answer is an error.
    pub fn code(&self) -> Option<ErrorCode> {
        self.error().map(|e| e.error.code)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// What every answer to any input must be: JSON; a success, or an error
    /// with a code this build knows and a sentence; never a 500.
    pub fn check_well_formed(&self) -> Result<(), String> {
        if (200..300).contains(&self.status) {
            return serde_json::from_slice::<serde_json::Value>(&self.body)
                .map(|_| ())
                .map_err(|err| {
                    format!(
                        "{} answer is not JSON ({err}): {}",
                        self.status,
                        self.text()
                    )
                });
        }
        let Some(error) = self.error() else {
            return Err(format!(
                "{} answer is not an error body: {}",
                self.status,
                self.text()
            ));
        };
        if error.error.code == ErrorCode::Unknown || error.error.message.is_empty() {
            return Err(format!(
                "{} answer without a stable code and a sentence: {}",
                self.status,
                self.text()
            ));
        }
        if error.error.code.http_status() != self.status {
            return Err(format!(
                "code {} answered with status {}",
                error.error.code, self.status
            ));
        }
        if self.status == 500 {
            return Err(format!("the server failed: {}", self.text()));
        }
        Ok(())
    }
}

/// A running in-process server.
pub struct InProcess {
    runtime: Option<tokio::runtime::Runtime>,
    connect: Connect,
    name: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    /// The vendor key its code is signed with.
    pub vendor_key: VendorSecretKey,
    /// The pool file it started with (sequence 1).
    pub pool_text: String,
    /// Its address, as the pool file names it.
    pub address: SocketAddr,
    _dir: tempfile::TempDir,
}

/// The vendor's key: the protocol's test vector seed.
pub fn vendor_key() -> VendorSecretKey {
    VendorSecretKey::from_seed("acme", [7; 32]).expect("a valid seed")
}

/// Signed `[[license]]` tables: one code per `(id, feature, seats)`.
pub fn license_text(key: &VendorSecretKey, codes: &[(&str, &str, u32)]) -> String {
    let codes: Vec<LicenseCode> = codes
        .iter()
        .map(|(id, feature, seats)| {
            let table = format!(
                "[[license]]\nid = \"{id}\"\nfeature = \"{feature}\"\nseats = {seats}\n\
                 issued = \"2026-01-01\"\nexpiry = \"permanent\"\nlease_s = 30\n\
                 heartbeat_interval_s = 10\n"
            );
            let unsigned = tessera_core::parse_unsigned_file(&table)
                .expect("a valid table")
                .remove(0)
                .into_unsigned(
                    "acme",
                    CivilDate::parse("2026-01-01").expect("a date"),
                    [0; 4],
                )
                .expect("valid fields");
            key.sign(unsigned).expect("a valid code")
        })
        .collect();
    LicenseCode::write_file(&codes)
}

/// The pool file of the pool of one at `address`.
pub fn pool_text(sequence: u64, address: &SocketAddr, licenses: &str) -> String {
    format!(
        "pool_id = \"{POOL_ID}\"\nsequence = {sequence}\n\n[[servers]]\nid = \"{SERVER_ID}\"\n\
         address = \"{address}\"\ncredential_sha256 = \"{}\"\n\n{licenses}",
        tessera_core::credential_sha256(PEER_CREDENTIAL)
    )
}

/// The second server of [`Members::WithSilentPeer`]: listed in the pool
/// file with its credential, never started. Tests speak in its name.
pub const SILENT_PEER_ID: &str = "Z";
pub const SILENT_PEER_CREDENTIAL: &str = "fuzz-peer-credential-of-server-z-0123456789";

/// The headers of a peer request sent by [`SILENT_PEER_ID`].
pub fn silent_peer_headers() -> Vec<(&'static str, &'static str)> {
    vec![
        (POOL_HEADER, POOL_ID),
        (tessera_proto::PEER_HEADER, SILENT_PEER_ID),
        (
            "authorization",
            "Bearer fuzz-peer-credential-of-server-z-0123456789",
        ),
    ]
}

/// Who the pool file lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Members {
    /// Server `A` alone: it leads.
    Alone,
    /// `A` and a silent `Z`: `A` cannot lead, and takes a leader's messages
    /// from `Z` as a follower would.
    WithSilentPeer,
}

impl InProcess {
    /// Starts the server and waits (bounded) until it leads and serves.
    pub fn start(listen: Listen) -> InProcess {
        InProcess::start_with(listen, Members::Alone)
    }

    /// Starts the server of a pool of `members`; waits (bounded) until it
    /// leads and serves (and, beside a silent peer, has installed the pool
    /// file that adds it).
    pub fn start_with(listen: Listen, members: Members) -> InProcess {
        watch_panics();
        let name = format!("fuzz-server-{}-", SERVERS.fetch_add(1, Ordering::SeqCst));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(name.clone())
            .enable_all()
            .build()
            .expect("a runtime");
        let shm = std::path::Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::Builder::new()
                .prefix("tessera-fuzz-")
                .tempdir_in(shm)
        } else {
            tempfile::Builder::new().prefix("tessera-fuzz-").tempdir()
        }
        .expect("a temporary directory");
        let tcp = match listen {
            Listen::Tcp => Some(
                runtime
                    .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
                    .expect("a loopback port"),
            ),
            Listen::Memory => None,
        };
        let address = match &tcp {
            Some(listener) => listener.local_addr().expect("an address"),
            None => "127.0.0.1:9".parse().expect("an address"),
        };
        let key = vendor_key();
        let pool = pool_text(
            1,
            &address,
            &license_text(&key, &[(CODE_ID, FEATURE, SEATS)]),
        );
        std::fs::write(dir.path().join("pool.toml"), &pool).expect("write the pool file");
        std::fs::write(dir.path().join("peer.credential"), PEER_CREDENTIAL)
            .expect("write the peer credential");
        std::fs::write(
            dir.path().join("pool.key"),
            format!("{}\n", "5a".repeat(32)),
        )
        .expect("write the pool key");
        let config = format!(
            "server_id = \"{SERVER_ID}\"\npool_file = \"pool.toml\"\ndata_dir = \"data\"\n\
             pool_key_file = \"pool.key\"\ngrace_on_missing_store = false\n\n\
             [[vendors]]\nname = \"acme\"\npublic_key = \"{}\"\n\n\
             [security]\nplain_http = true\n",
            key.public().to_base64()
        );
        let config =
            tessera_server::ServerConfig::parse(&config, dir.path()).expect("a valid config");
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        let stopped = async move {
            let _ = stopped.await;
        };
        let connect = match tcp {
            Some(listener) => {
                serve_on(&runtime, config, listener, address, stopped);
                Connect::Tcp(address)
            }
            None => {
                let (sender, incoming) = mpsc::channel(64);
                let listener = MemoryListener { incoming, address };
                serve_on(&runtime, config, listener, address, stopped);
                Connect::Memory(sender)
            }
        };
        let server = InProcess {
            runtime: Some(runtime),
            connect,
            name,
            shutdown: Some(shutdown),
            vendor_key: key,
            pool_text: pool,
            address,
            _dir: dir,
        };
        let mut server = server;
        server.wait_until("it leads and serves", |s| {
            s.server.role == "leader" && s.server.state == "serving" && s.pool_sequence >= 1
        });
        if members == Members::WithSilentPeer {
            server.add_silent_peer();
        }
        server
    }

    /// Installs the pool file (sequence 2) that adds [`SILENT_PEER_ID`];
    /// the server keeps leading, the membership change waiting for `Z`.
    fn add_silent_peer(&mut self) {
        let entry = format!(
            "[[servers]]\nid = \"{SILENT_PEER_ID}\"\naddress = \"127.0.0.1:10\"\n\
             credential_sha256 = \"{}\"\n\n[[license]]",
            tessera_core::credential_sha256(SILENT_PEER_CREDENTIAL)
        );
        let text = self
            .pool_text
            .replacen("sequence = 1", "sequence = 2", 1)
            .replacen("[[license]]", &entry, 1);
        let answer = self.post_json("/v1/admin/pool-file", &serde_json::json!({ "text": text }));
        assert_eq!(answer.status, 200, "{}", answer.text());
        self.wait_until("the pool file that adds Z", |s| s.pool_sequence == 2);
        self.pool_text = text;
    }

    fn runtime(&self) -> &tokio::runtime::Runtime {
        self.runtime.as_ref().expect("running")
    }

    /// Spawns `future` on the server's runtime.
    pub fn spawn<F>(&self, future: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.runtime().spawn(future)
    }

    /// Runs `future` on the server's runtime (from a test's thread).
    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime().block_on(future)
    }

    /// Sends one request on a connection of its own, from a test's thread;
    /// `Err` if the connection ended without an answer (a handler that
    /// panicked) or none came in time.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<Answer, String> {
        let request = {
            let mut request = hyper::Request::builder()
                .method(method)
                .uri(path)
                .header(hyper::header::HOST, self.address.to_string());
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            request
                .body(Full::new(Bytes::from(body)))
                .map_err(|err| format!("cannot build the request: {err}"))?
        };
        let exchange = async {
            match &self.connect {
                Connect::Memory(sender) => {
                    let (client, server) = tokio::io::duplex(256 * 1024);
                    sender
                        .send(server)
                        .await
                        .map_err(|_| "the server stopped accepting".to_string())?;
                    exchange(client, request).await
                }
                Connect::Tcp(address) => {
                    let stream = tokio::net::TcpStream::connect(address)
                        .await
                        .map_err(|err| format!("cannot connect: {err}"))?;
                    exchange(stream, request).await
                }
            }
        };
        self.block_on(async { tokio::time::timeout(ANSWER_TIMEOUT, exchange).await })
            .map_err(|_| format!("no answer to {method} {path} within {ANSWER_TIMEOUT:?}"))?
    }

    /// A POST of `body` as JSON, with the pool's headers and secret when the
    /// path is a peer or admin one.
    pub fn post(&self, path: &str, body: Vec<u8>) -> Result<Answer, String> {
        let mut headers = vec![("content-type", "application/json")];
        if path.starts_with("/v1/peer/") || path.starts_with("/v1/admin/") {
            headers.extend(peer_headers());
        }
        self.request("POST", path, &headers, body)
    }

    pub fn post_json(&self, path: &str, body: &serde_json::Value) -> Answer {
        self.post(path, serde_json::to_vec(body).expect("JSON"))
            .unwrap_or_else(|err| panic!("POST {path}: {err}"))
    }

    pub fn status(&self) -> StatusResponse {
        let answer = self
            .request("GET", "/v1/status", &[], Vec::new())
            .unwrap_or_else(|err| panic!("GET /v1/status: {err}"));
        assert_eq!(answer.status, 200, "{}", answer.text());
        serde_json::from_slice(&answer.body).expect("a StatusResponse")
    }

    /// Polls the status (bounded) until `done` holds.
    pub fn wait_until(&self, what: &str, done: impl Fn(&StatusResponse) -> bool) -> StatusResponse {
        let started = std::time::Instant::now();
        loop {
            let status = self.status();
            if done(&status) {
                return status;
            }
            assert!(
                started.elapsed() < READY_TIMEOUT,
                "waited {READY_TIMEOUT:?} for {what}; last status: {status:#?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Panics on this server's threads so far.
    pub fn panics(&self) -> Vec<String> {
        PANICS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(thread, _)| thread.starts_with(&self.name))
            .map(|(thread, message)| format!("{thread}: {message}"))
            .collect()
    }

    /// Asserts the server is whole after hostile input: nothing panicked,
    /// it answers its status, and its Raft still runs (it may follow a
    /// leader the input made up, or wait for a server the input added).
    pub fn assert_whole(&self) {
        assert_eq!(self.panics(), Vec::<String>::new(), "the server panicked");
        let status = self.status();
        assert_ne!(
            status.server.role, "stopped",
            "its Raft stopped: {status:#?}"
        );
    }

    /// Asserts the server is whole after hostile input: nothing panicked,
    /// its Raft runs, it leads again (bounded wait), and it still issues a
    /// seat or says why not with a stable code.
    pub fn assert_healthy(&self) {
        assert_eq!(self.panics(), Vec::<String>::new(), "the server panicked");
        self.wait_until("it leads again", |s| s.server.role == "leader");
        let checkout = serde_json::json!({"client_id": "health", "user": "u", "host": "h",
            "feature": FEATURE, "version": "1.0", "count": 1});
        let answer = self.post_json("/v1/checkout", &checkout);
        answer.check_well_formed().unwrap();
        assert_eq!(self.panics(), Vec::<String>::new(), "the server panicked");
    }
}

/// The headers of a peer or admin request of this pool, sent by its server.
pub fn peer_headers() -> Vec<(&'static str, &'static str)> {
    vec![
        (POOL_HEADER, POOL_ID),
        (tessera_proto::PEER_HEADER, SERVER_ID),
        (
            "authorization",
            "Bearer fuzz-peer-credential-of-server-a-0123456789",
        ),
    ]
}

async fn exchange<S>(stream: S, request: hyper::Request<Full<Bytes>>) -> Result<Answer, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|err| format!("handshake: {err}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let response = sender
        .send_request(request)
        .await
        .map_err(|err| format!("the connection ended without an answer: {err}"))?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|err| format!("the answer's body broke off: {err}"))?
        .to_bytes()
        .to_vec();
    Ok(Answer {
        status,
        headers,
        body,
    })
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

/// Every request path of the API, with its method.
pub const ROUTES: &[(&str, &str)] = &[
    ("POST", "/v1/checkout"),
    ("POST", "/v1/heartbeat"),
    ("POST", "/v1/checkin"),
    ("POST", "/v1/noop"),
    ("GET", "/v1/status"),
    ("GET", "/metrics"),
    ("POST", "/v1/admin/pool-file"),
    ("POST", "/v1/admin/distribution"),
    ("POST", "/v1/admin/license"),
    ("POST", "/v1/admin/license/remove"),
    ("POST", "/v1/admin/master/revoke"),
    ("POST", "/v1/peer/raft/append"),
    ("POST", "/v1/peer/raft/vote"),
    ("POST", "/v1/peer/raft/snapshot"),
    ("GET", "/v1/peer/hello"),
    ("POST", "/v1/peer/report"),
    ("POST", "/v1/peer/first-pool-file"),
    ("POST", "/v1/peer/borrow"),
    ("POST", "/v1/peer/command"),
    ("POST", "/v1/peer/cosign"),
];
