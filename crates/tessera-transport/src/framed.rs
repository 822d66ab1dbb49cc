//! The framed protocol's client ([`tessera_proto::frame`]): a program's
//! checkout, heartbeat and check-in as one frame each way on a TLS
//! connection that chose ALPN `tessera/3` (or `tessera/2` or `tessera/1`,
//! from an older server), and everything else over REST. A `tessera/3`
//! connection's answers carry its [`Channel`], which the SDK binds to the
//! server's answer key once an answer signed over it checks.
//!
//! The requests and answers are those of REST, byte for byte in their JSON
//! bodies, so the SDK above cannot tell the two apart; only the framing is
//! lighter. A server that does not choose the framed protocol (an older
//! version) is asked over REST from then on.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tessera_proto::frame::{self, Op};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::client::TlsStream;

use crate::{
    client_tls_config, AnswerChannel, Channel, Exchange, HttpAnswer, HttpRequest, HttpTransport,
    Method, ReqwestOptions, ReqwestTransport, TransportError, TransportTls,
};

/// An idle connection is used again only this soon after its last answer:
/// a server closes connections idle for 60 s.
const REUSE_WITHIN: Duration = Duration::from_secs(30);

/// One framed connection, TLS on TCP.
pub type FramedStream = TlsStream<TcpStream>;

/// A connection waiting for its next request, since when, with its
/// channel ([`channel_of`]).
type Idle = (Instant, Box<FramedStream>, Option<Arc<Channel>>);

/// Frames for the checkout, heartbeat and check-in; REST ([`ReqwestTransport`])
/// for every other request and for servers that do not speak frames.
#[derive(Debug)]
pub struct FramedTransport {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    rest: ReqwestTransport,
    connector: FramedConnector,
    idle_per_server_max: usize,
    idle: Mutex<HashMap<String, Vec<Idle>>>,
    /// Servers that did not choose the framed protocol.
    rest_only: Mutex<HashSet<String>>,
}

/// Opens framed connections: TLS checked against the pool CA, offering
/// ALPN `tessera/3`, `tessera/2`, `tessera/1` and then `http/1.1`: a server that knows only HTTP
/// chooses the latter (a server with ALPN protocols of its own ends a
/// handshake that offers none of them), and is then asked over REST.
#[derive(Clone)]
pub struct FramedConnector {
    tls: tokio_rustls::TlsConnector,
    connect_timeout: Duration,
}

impl std::fmt::Debug for FramedConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FramedConnector")
            .field("connect_timeout", &self.connect_timeout)
            .finish_non_exhaustive()
    }
}

/// A connection opened, or why not.
pub enum Opened {
    Framed(Box<FramedStream>),
    /// The server answered TLS but did not choose the framed protocol.
    RestOnly,
}

impl FramedConnector {
    /// A connector trusting exactly the CA certificates in `ca_pem`.
    pub fn new(ca_pem: &[u8], connect_timeout: Duration) -> Result<FramedConnector, String> {
        FramedConnector::offering(ca_pem, connect_timeout, &frame::ALPNS)
    }

    /// A connector offering only the framed versions `versions` (then
    /// `http/1.1`): what a program built against an older SDK offers.
    pub fn offering(
        ca_pem: &[u8],
        connect_timeout: Duration,
        versions: &[&[u8]],
    ) -> Result<FramedConnector, String> {
        let mut config = client_tls_config(ca_pem)?;
        config.alpn_protocols = frame::alpn_protocols(versions);
        Ok(FramedConnector {
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
            connect_timeout,
        })
    }

    /// Connects to `address` (`host:port`) and shakes hands.
    pub async fn connect(&self, address: &str) -> Result<Opened, TransportError> {
        let failed = |text: String| TransportError::Connect(format!("could not connect: {text}"));
        let tcp = tokio::time::timeout(self.connect_timeout, TcpStream::connect(address))
            .await
            .map_err(|_| failed(format!("no connection within {:?}", self.connect_timeout)))?
            .map_err(|err| failed(err.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = rustls_pki_types::ServerName::try_from(host.to_string())
            .map_err(|err| failed(format!("`{host}` cannot name a TLS server: {err}")))?;
        let tls = tokio::time::timeout(self.connect_timeout, self.tls.connect(name, tcp))
            .await
            .map_err(|_| {
                failed(format!(
                    "no TLS handshake within {:?}",
                    self.connect_timeout
                ))
            })?
            .map_err(|err| failed(format!("TLS handshake failed: {err}")))?;
        let chosen = tls.get_ref().1.alpn_protocol();
        if frame::ALPNS.iter().any(|alpn| chosen == Some(*alpn)) {
            Ok(Opened::Framed(Box::new(tls)))
        } else {
            Ok(Opened::RestOnly)
        }
    }
}

/// The channel of a `tessera/3` connection over TLS 1.3, which answers may
/// be bound to; `None` for any other (their answers are all signed).
pub fn channel_of(stream: &FramedStream) -> Option<Arc<Channel>> {
    channel_exported(stream.get_ref().1).map(|exported| Channel::new(&exported))
}

/// What either end of a connection derives as its channel value
/// (`tessera_core::answer::CHANNEL_EXPORTER_LABEL`), the server's and the
/// program's alike: only for `tessera/3` over TLS 1.3, whose exporter covers
/// the whole handshake; `None` for any other connection (and should the
/// exporter fail), whose answers are then all signed.
pub fn channel_exported<Data>(
    connection: &rustls::ConnectionCommon<Data>,
) -> Option<[u8; tessera_core::answer::CHANNEL_BYTES]> {
    if connection.alpn_protocol() != Some(frame::ALPN_V3)
        || connection.protocol_version() != Some(rustls::ProtocolVersion::TLSv1_3)
    {
        return None;
    }
    connection
        .export_keying_material(
            [0u8; tessera_core::answer::CHANNEL_BYTES],
            tessera_core::answer::CHANNEL_EXPORTER_LABEL,
            None,
        )
        .ok()
}

/// Sends one request frame on `stream` and reads its answer, at most
/// `answer_bytes_max` bytes of body. An error before any byte of the answer
/// came back is [`Exchanged::NotAnswered`]: a connection the server closed
/// while idle fails so.
pub async fn exchange(
    stream: &mut FramedStream,
    request: &[u8],
    answer_bytes_max: usize,
) -> Result<HttpAnswer, Exchanged> {
    let unanswered = |err: std::io::Error| Exchanged::NotAnswered(err.to_string());
    stream.write_all(request).await.map_err(unanswered)?;
    stream.flush().await.map_err(unanswered)?;
    let mut prefix = [0u8; 4];
    stream.read_exact(&mut prefix).await.map_err(unanswered)?;
    let failed = |text: String| Exchanged::Failed(TransportError::Failed(text));
    let length = frame::frame_length(prefix, answer_bytes_max.saturating_add(2)).map_err(|_| {
        Exchanged::Failed(TransportError::TooLarge {
            bytes_max: answer_bytes_max,
        })
    })?;
    let mut bytes = vec![0u8; length];
    stream
        .read_exact(&mut bytes)
        .await
        .map_err(|err| failed(format!("request failed: the answer was cut short: {err}")))?;
    let (status, body) = frame::decode_answer(&bytes)
        .map_err(|err| failed(format!("request failed: a malformed answer frame: {err}")))?;
    Ok(HttpAnswer {
        status,
        body: body.to_vec(),
        channel: None,
    })
}

/// How a frame exchange failed.
#[derive(Debug)]
pub enum Exchanged {
    /// Nothing came back: the server may not have read the request.
    NotAnswered(String),
    Failed(TransportError),
}

impl FramedTransport {
    /// Frames over TLS as `options.tls` says; `None` for plain TCP, which
    /// carries REST only.
    pub fn new(options: ReqwestOptions) -> Result<Option<FramedTransport>, String> {
        let TransportTls::Verify { ca_pem } = &options.tls else {
            return Ok(None);
        };
        let connector = FramedConnector::new(ca_pem, options.connect_timeout)?;
        let idle_per_server_max = options.idle_connections_per_server_max;
        let rest = ReqwestTransport::new(options)?;
        Ok(Some(FramedTransport {
            inner: Arc::new(Inner {
                rest,
                connector,
                idle_per_server_max,
                idle: Mutex::default(),
                rest_only: Mutex::default(),
            }),
        }))
    }
}

impl HttpTransport for FramedTransport {
    fn send(&self, request: HttpRequest) -> Exchange {
        let op = match request.method {
            Method::Post => Op::for_path(&request.path),
            Method::Get => None,
        };
        let token = bearer_token(&request.headers);
        let rest_only = lock(&self.inner.rest_only).contains(&request.address);
        match (op, token) {
            (Some(op), Ok(token)) if !rest_only => {
                let inner = self.inner.clone();
                Box::pin(async move {
                    let timeout = request.timeout;
                    let sent = inner.send_framed(op, token.as_deref(), request);
                    match tokio::time::timeout(timeout, sent).await {
                        Ok(answer) => answer,
                        Err(_) => Err(TransportError::Timeout(
                            "no answer within the request timeout".to_string(),
                        )),
                    }
                })
            }
            _ => self.inner.rest.send(request),
        }
    }
}

/// The request's bearer token; `Err` for an `Authorization` header of
/// another kind, which REST carries as it is (and the server refuses).
fn bearer_token(headers: &[(String, String)]) -> Result<Option<String>, ()> {
    match headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("authorization"))
    {
        None => Ok(None),
        Some((_, value)) => match value.strip_prefix("Bearer ") {
            Some(token) if token.len() <= frame::TOKEN_BYTES_MAX => Ok(Some(token.to_string())),
            _ => Err(()),
        },
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Inner {
    async fn send_framed(
        self: &Arc<Self>,
        op: Op,
        token: Option<&str>,
        request: HttpRequest,
    ) -> Result<HttpAnswer, TransportError> {
        let address = request.address.as_str();
        let bytes = frame::encode_request(op, token, &request.body)
            .map_err(|text| TransportError::Failed(format!("request failed: {text}")))?;
        // An idle connection the server has closed fails before any answer:
        // then once more on a new one.
        if let Some((mut stream, channel)) = self.take_idle(address) {
            match exchange(&mut stream, &bytes, request.answer_bytes_max).await {
                Ok(answer) => return Ok(self.answered(address, stream, channel, answer)),
                Err(Exchanged::Failed(err)) => return Err(err),
                Err(Exchanged::NotAnswered(_)) => {}
            }
        }
        let mut stream = match self.connector.connect(address).await? {
            Opened::Framed(stream) => stream,
            Opened::RestOnly => {
                lock(&self.rest_only).insert(address.to_string());
                return self.rest.send(request).await;
            }
        };
        let channel = channel_of(&stream);
        match exchange(&mut stream, &bytes, request.answer_bytes_max).await {
            Ok(answer) => Ok(self.answered(address, stream, channel, answer)),
            Err(Exchanged::Failed(err)) => Err(err),
            Err(Exchanged::NotAnswered(text)) => {
                Err(TransportError::Failed(format!("request failed: {text}")))
            }
        }
    }

    /// `answer`, which came on `stream`, and the connection made ready for
    /// the next request. A connection with a channel goes back to the idle
    /// pool only once the caller has dropped the answer's channel
    /// ([`AnswerChannel`]): the caller's check of this answer may bind the
    /// channel, and the server answers the channel's later requests
    /// unsigned, counting on that binding. One without goes back at once.
    fn answered(
        self: &Arc<Self>,
        address: &str,
        stream: Box<FramedStream>,
        channel: Option<Arc<Channel>>,
        answer: HttpAnswer,
    ) -> HttpAnswer {
        let Some(channel) = channel else {
            self.put_idle(address, stream, None);
            return answer;
        };
        let lent = Lent {
            inner: self.clone(),
            address: address.to_string(),
            stream: Some(stream),
            channel: channel.clone(),
        };
        HttpAnswer {
            channel: Some(AnswerChannel::lending(channel, Arc::new(lent))),
            ..answer
        }
    }

    fn take_idle(&self, address: &str) -> Option<(Box<FramedStream>, Option<Arc<Channel>>)> {
        let mut idle = lock(&self.idle);
        let streams = idle.get_mut(address)?;
        while let Some((since, stream, channel)) = streams.pop() {
            if since.elapsed() < REUSE_WITHIN {
                return Some((stream, channel));
            }
        }
        None
    }

    fn put_idle(&self, address: &str, stream: Box<FramedStream>, channel: Option<Arc<Channel>>) {
        let mut idle = lock(&self.idle);
        let streams = idle.entry(address.to_string()).or_default();
        streams.retain(|(since, _, _)| since.elapsed() < REUSE_WITHIN);
        if streams.len() < self.idle_per_server_max {
            streams.push((Instant::now(), stream, channel));
        }
    }
}

/// A `tessera/3` connection on loan to the answer it carried; back in the
/// idle pool when dropped.
struct Lent {
    inner: Arc<Inner>,
    address: String,
    stream: Option<Box<FramedStream>>,
    channel: Arc<Channel>,
}

impl Drop for Lent {
    fn drop(&mut self) {
        if let Some(stream) = self.stream.take() {
            self.inner
                .put_idle(&self.address, stream, Some(self.channel.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    use tokio::io::AsyncBufReadExt;
    use tokio::net::TcpListener;

    use super::*;

    /// How the test server answers.
    #[derive(Clone, Copy)]
    enum Speaks {
        /// HTTP/1.1 only, as a server from before the framed protocol.
        RestOnly,
        /// Frames; one request per connection, which it then closes, as a
        /// server closes a connection left idle too long.
        OneFrameThenClose,
        /// `tessera/3` frames, every request on a connection answered.
        FramesV3,
    }

    /// A TLS server on loopback with a CA of its own: the CA (PEM), its
    /// address, and the connections it accepted.
    struct TestServer {
        ca_pem: Vec<u8>,
        address: String,
        accepted: Arc<AtomicUsize>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Drop for TestServer {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    async fn serve(speaks: Speaks) -> TestServer {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_pem = ca_params.self_signed(&ca_key).unwrap().pem().into_bytes();
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap();
        config.alpn_protocols = match speaks {
            Speaks::RestOnly => vec![b"http/1.1".to_vec()],
            Speaks::OneFrameThenClose => vec![frame::ALPN_V1.to_vec()],
            Speaks::FramesV3 => vec![frame::ALPN_V3.to_vec()],
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counted = accepted.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let _ = match speaks {
                        Speaks::RestOnly => answer_http(tls).await,
                        Speaks::OneFrameThenClose => answer_one_frame(tls).await,
                        Speaks::FramesV3 => loop {
                            if let Err(err) = answer_frame(&mut tls).await {
                                break Err(err);
                            }
                        },
                    };
                });
            }
        });
        TestServer {
            ca_pem,
            address,
            accepted,
            task,
        }
    }

    /// Answers every HTTP request `{"via":"rest"}`.
    async fn answer_http(tls: tokio_rustls::server::TlsStream<TcpStream>) -> std::io::Result<()> {
        let mut tls = tokio::io::BufReader::new(tls);
        loop {
            let mut length = 0;
            loop {
                let mut line = String::new();
                if tls.read_line(&mut line).await? == 0 {
                    return Ok(());
                }
                if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = value.trim().parse().unwrap_or(0);
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0u8; length];
            tls.read_exact(&mut body).await?;
            let answer = "HTTP/1.1 200 OK\r\ncontent-length: 14\r\n\r\n{\"via\":\"rest\"}";
            tls.get_mut().write_all(answer.as_bytes()).await?;
        }
    }

    /// Answers one frame `{"via":"frame"}` naming its op, then closes.
    async fn answer_one_frame(
        mut tls: tokio_rustls::server::TlsStream<TcpStream>,
    ) -> std::io::Result<()> {
        answer_frame(&mut tls).await?;
        tls.shutdown().await
    }

    /// Reads one request frame and answers `{"via":"frame"}` naming its op.
    async fn answer_frame(
        tls: &mut tokio_rustls::server::TlsStream<TcpStream>,
    ) -> std::io::Result<()> {
        let mut prefix = [0u8; 4];
        tls.read_exact(&mut prefix).await?;
        let mut request = vec![0u8; u32::from_be_bytes(prefix) as usize];
        tls.read_exact(&mut request).await?;
        let body = format!("{{\"via\":\"frame\",\"op\":{}}}", request[0]);
        tls.write_all(&frame::encode_answer(200, body.as_bytes()))
            .await
    }

    fn transport(server: &TestServer) -> FramedTransport {
        FramedTransport::new(ReqwestOptions {
            connect_timeout: Duration::from_secs(5),
            idle_connections_per_server_max: 4,
            tls: TransportTls::Verify {
                ca_pem: server.ca_pem.clone(),
            },
        })
        .unwrap()
        .expect("TLS carries frames")
    }

    fn checkout(server: &TestServer) -> HttpRequest {
        HttpRequest {
            method: Method::Post,
            address: server.address.clone(),
            path: "/v1/checkout".into(),
            headers: vec![("content-type".into(), "application/json".into())],
            body: b"{}".to_vec(),
            timeout: Duration::from_secs(10),
            answer_bytes_max: 1024,
        }
    }

    /// A server that does not choose `tessera/1` is asked over REST, then
    /// and from then on, without another framed handshake.
    #[tokio::test]
    async fn a_server_without_frames_is_asked_over_rest() {
        let server = serve(Speaks::RestOnly).await;
        let transport = transport(&server);
        for _ in 0..3 {
            let answer = transport.send(checkout(&server)).await.unwrap();
            assert_eq!(
                (answer.status, answer.body.as_slice()),
                (200, &b"{\"via\":\"rest\"}"[..])
            );
        }
        assert_eq!(
            server.accepted.load(Ordering::SeqCst),
            2,
            "one framed handshake, then one REST connection kept alive"
        );
    }

    /// A kept connection the server has closed fails before any answer: the
    /// request goes again on a new connection, once, and is answered.
    #[tokio::test]
    async fn a_request_on_a_connection_the_server_closed_goes_again_on_a_new_one() {
        let server = serve(Speaks::OneFrameThenClose).await;
        let transport = transport(&server);
        for _ in 0..3 {
            let answer = transport.send(checkout(&server)).await.unwrap();
            assert_eq!(
                (answer.status, answer.body.as_slice()),
                (200, &b"{\"via\":\"frame\",\"op\":1}"[..])
            );
        }
        assert_eq!(
            server.accepted.load(Ordering::SeqCst),
            3,
            "each request after the first found its kept connection closed"
        );
        // Requests without a frame op go over REST (here: to a server that
        // speaks no HTTP, so they fail), never as frames.
        let mut status = checkout(&server);
        status.method = Method::Get;
        status.path = "/v1/status".into();
        status.timeout = Duration::from_millis(500);
        assert!(transport.send(status).await.is_err());
    }

    /// A `tessera/3` connection is lent to the answer it carried: while the
    /// caller holds the answer's channel (checking it, and binding the
    /// channel), the next request goes on another connection; once dropped,
    /// the connection and its channel carry the next request.
    #[tokio::test]
    async fn a_channel_connection_is_used_again_only_after_its_answer_is_dropped() {
        let server = serve(Speaks::FramesV3).await;
        let transport = transport(&server);
        let first = transport.send(checkout(&server)).await.unwrap();
        let first_channel = first.channel.clone().expect("tessera/3 over TLS 1.3");
        let second = transport.send(checkout(&server)).await.unwrap();
        let second_channel = second.channel.clone().expect("tessera/3 over TLS 1.3");
        assert_eq!(
            server.accepted.load(Ordering::SeqCst),
            2,
            "the first connection is still on loan to its answer"
        );
        assert_ne!(first_channel, second_channel);
        first_channel.bind("server key");
        drop((first, first_channel));
        let third = transport.send(checkout(&server)).await.unwrap();
        let third_channel = third.channel.clone().unwrap();
        assert_eq!(server.accepted.load(Ordering::SeqCst), 2);
        assert_eq!(
            third_channel.bound_key().as_deref(),
            Some("server key"),
            "the first connection came back, with the binding its answer's check made"
        );
        drop((second, second_channel, third, third_channel));
        for _ in 0..3 {
            transport.send(checkout(&server)).await.unwrap();
        }
        assert_eq!(
            server.accepted.load(Ordering::SeqCst),
            2,
            "answers dropped at once give their connection back at once"
        );
    }
}
