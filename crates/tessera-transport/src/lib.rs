//! The seam between Tessera's HTTP/JSON requests and the network that
//! carries them.
//!
//! The SDK ([`tessera-client`]) and the server's peer client send every
//! request through an [`HttpTransport`]. Programs use [`FramedTransport`]
//! (the framed protocol over TLS for checkout, heartbeat and check-in,
//! HTTP/1.1 for the rest) or [`ReqwestTransport`] (HTTP/1.1 over TLS, or
//! over plain TCP by explicit choice); the
//! deterministic simulator (`tessera-sim`) plugs in its own, which carries
//! the same bytes over a simulated network. Nothing here knows what the
//! requests mean.

mod framed;

pub use framed::{
    channel_exported, channel_of, exchange, Exchanged, FramedConnector, FramedStream,
    FramedTransport, Opened,
};

use std::error::Error as _;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// HTTP method of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
}

/// One request to one server.
#[derive(Clone, Debug)]
pub struct HttpRequest {
    pub method: Method,
    /// `host:port`, already checked by the caller.
    pub address: String,
    /// Path and query, starting with `/`.
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Longest the whole exchange may take, connecting included.
    pub timeout: Duration,
    /// Largest answer body read; a larger one fails with [`TransportError::TooLarge`].
    pub answer_bytes_max: usize,
}

/// The server's answer: any status, with its body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpAnswer {
    pub status: u16,
    pub body: Vec<u8>,
    /// The TLS channel of the framed `tessera/3` connection it came on
    /// (TLS 1.3); `None` on any other.
    pub channel: Option<AnswerChannel>,
}

/// The channel an answer came on, holding its connection on loan: the
/// transport sends nothing more on that connection until the last clone of
/// this is dropped. A caller that keeps it while it checks the answer (which
/// may bind the channel, [`Channel::bind`]) therefore never has another
/// answer on the same connection checked before the binding it made.
#[derive(Clone)]
pub struct AnswerChannel {
    channel: Arc<Channel>,
    /// Gives the connection back when the last clone is dropped.
    _lent: Arc<dyn Send + Sync>,
}

impl AnswerChannel {
    /// `channel`, keeping `lent` alive until the last clone is dropped.
    pub fn lending(channel: Arc<Channel>, lent: Arc<dyn Send + Sync>) -> AnswerChannel {
        AnswerChannel {
            channel,
            _lent: lent,
        }
    }
}

impl std::ops::Deref for AnswerChannel {
    type Target = Channel;

    fn deref(&self) -> &Channel {
        &self.channel
    }
}

impl fmt::Debug for AnswerChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnswerChannel")
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

impl PartialEq for AnswerChannel {
    fn eq(&self, other: &AnswerChannel) -> bool {
        self.channel == other.channel
    }
}

impl Eq for AnswerChannel {}

/// A framed `tessera/3` connection's TLS channel, as this end derived it
/// (`tessera_core::answer::CHANNEL_EXPORTER_LABEL`), and the server answer
/// key that an answer signed over it bound the connection to. Shared by
/// the answers the connection carries; a new connection has a new one.
#[derive(Debug)]
pub struct Channel {
    value: String,
    bound_key: std::sync::Mutex<Option<String>>,
}

impl Channel {
    pub fn new(exported: &[u8; tessera_core::answer::CHANNEL_BYTES]) -> Arc<Channel> {
        Arc::new(Channel {
            value: tessera_core::answer::channel_text(exported),
            bound_key: std::sync::Mutex::new(None),
        })
    }

    /// The channel value an answer signed over it names.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// The answer key the connection is bound to, once an answer signed
    /// over the channel has checked.
    pub fn bound_key(&self) -> Option<String> {
        self.lock().clone()
    }

    /// Binds the connection to `server_key` (base64), whose signature over
    /// this channel checked; the first binding stays.
    pub fn bind(&self, server_key: &str) {
        self.lock().get_or_insert_with(|| server_key.to_string());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.bound_key
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Channels are one when their values are: two handshakes never share one.
impl PartialEq for Channel {
    fn eq(&self, other: &Channel) -> bool {
        self.value == other.value
    }
}

impl Eq for Channel {}

impl HttpAnswer {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Why no answer came back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransportError {
    /// No connection could be made (refused, unreachable, connect timeout).
    Connect(String),
    /// Connected, but no whole answer within the request's timeout.
    Timeout(String),
    /// The answer was larger than the request allows.
    TooLarge { bytes_max: usize },
    /// Anything else (connection reset, malformed HTTP).
    Failed(String),
}

impl TransportError {
    /// True when the server may never have seen the request.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            TransportError::Connect(_) | TransportError::Timeout(_)
        )
    }
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransportError::Connect(text)
            | TransportError::Timeout(text)
            | TransportError::Failed(text) => f.write_str(text),
            TransportError::TooLarge { bytes_max } => {
                write!(f, "answered with a body larger than {bytes_max} bytes")
            }
        }
    }
}

impl std::error::Error for TransportError {}

/// The future an [`HttpTransport`] returns.
pub type Exchange = Pin<Box<dyn Future<Output = Result<HttpAnswer, TransportError>> + Send>>;

/// Carries one request and brings back its answer.
pub trait HttpTransport: Send + Sync + fmt::Debug + 'static {
    fn send(&self, request: HttpRequest) -> Exchange;
}

/// HTTP/1.1 over TLS (or plain TCP), with a small pool of idle connections
/// per server.
#[derive(Clone, Debug)]
pub struct ReqwestTransport {
    http: reqwest::Client,
    scheme: &'static str,
}

/// How a [`ReqwestTransport`] connects.
#[derive(Clone, Debug)]
pub struct ReqwestOptions {
    pub connect_timeout: Duration,
    pub idle_connections_per_server_max: usize,
    pub tls: TransportTls,
}

/// Whether, and how, a transport checks who answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransportTls {
    /// TLS 1.2 or 1.3; a server is trusted only with a certificate issued by
    /// one of these CA certificates (PEM): the pool's CA.
    Verify { ca_pem: Vec<u8> },
    /// Plain HTTP: anyone on the path reads and rewrites every request.
    /// Only for loopback demos and tests, by explicit choice.
    Plain,
}

impl TransportTls {
    /// The pool CA in the PEM file at `path`.
    pub fn from_ca_file(path: &std::path::Path) -> Result<TransportTls, String> {
        let ca_pem = std::fs::read(path)
            .map_err(|err| format!("cannot read the pool CA {}: {err}", path.display()))?;
        Ok(TransportTls::Verify { ca_pem })
    }
}

/// A rustls client configuration that trusts exactly the CA certificates
/// in `ca_pem`.
pub fn client_tls_config(ca_pem: &[u8]) -> Result<rustls::ClientConfig, String> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem) {
        let cert = cert.map_err(|err| format!("the pool CA is not a PEM certificate: {err}"))?;
        roots
            .add(cert)
            .map_err(|err| format!("the pool CA certificate is not usable: {err}"))?;
    }
    if roots.is_empty() {
        return Err("the pool CA file holds no certificate".to_string());
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| format!("cannot set up TLS: {err}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

impl ReqwestTransport {
    pub fn new(options: ReqwestOptions) -> Result<ReqwestTransport, String> {
        let mut builder = reqwest::Client::builder();
        let scheme = match &options.tls {
            TransportTls::Verify { ca_pem } => {
                builder = builder.use_preconfigured_tls(client_tls_config(ca_pem)?);
                "https"
            }
            TransportTls::Plain => "http",
        };
        let http = builder
            .connect_timeout(options.connect_timeout)
            .pool_max_idle_per_host(options.idle_connections_per_server_max)
            .tcp_nodelay(true)
            // License servers sit on the customer's own network: sending
            // requests through an HTTP proxy picked up from the environment
            // would add a hop that can fail on its own and hide the servers.
            .no_proxy()
            .build()
            .map_err(|error| format!("cannot create the HTTP client: {error}"))?;
        Ok(ReqwestTransport { http, scheme })
    }
}

impl HttpTransport for ReqwestTransport {
    fn send(&self, request: HttpRequest) -> Exchange {
        let http = self.http.clone();
        let scheme = self.scheme;
        Box::pin(async move {
            let url = format!("{scheme}://{}{}", request.address, request.path);
            let mut builder = match request.method {
                Method::Get => http.get(url),
                Method::Post => http.post(url).body(request.body),
            }
            .timeout(request.timeout);
            for (name, value) in &request.headers {
                builder = builder.header(name.as_str(), value.as_str());
            }
            let mut response = builder.send().await.map_err(classify)?;
            let status = response.status().as_u16();
            let bytes_max = request.answer_bytes_max;
            if response.content_length().unwrap_or(0) > bytes_max as u64 {
                return Err(TransportError::TooLarge { bytes_max });
            }
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(classify)? {
                if body.len() + chunk.len() > bytes_max {
                    return Err(TransportError::TooLarge { bytes_max });
                }
                body.extend_from_slice(&chunk);
            }
            Ok(HttpAnswer {
                status,
                body,
                channel: None,
            })
        })
    }
}

/// reqwest's own message says only "error sending request"; the cause is in
/// the source chain ("connection refused", "operation timed out").
fn classify(error: reqwest::Error) -> TransportError {
    let summary = if error.is_timeout() {
        "no answer within the request timeout"
    } else if error.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    let mut text = summary.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    if error.is_timeout() {
        TransportError::Timeout(text)
    } else if error.is_connect() {
        TransportError::Connect(text)
    } else {
        TransportError::Failed(text)
    }
}
