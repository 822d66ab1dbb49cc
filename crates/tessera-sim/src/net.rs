//! The simulated network's ends: the same HTTP/1.1 bytes the programs send,
//! carried by turmoil's simulated TCP instead of the kernel's.
//!
//! [`SimTransport`] is the client side (the SDK's and the servers' peer
//! requests), [`SimListener`] the server side (axum serves it as it serves a
//! TCP listener). Duplicated requests are made here: with the configured
//! probability a request is sent a second time after its answer, as a
//! retransmission or a retrying proxy would.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use rand::rngs::StdRng;
use rand::Rng;
use tessera_transport::{Exchange, HttpAnswer, HttpRequest, HttpTransport, Method, TransportError};

/// Knobs the fault schedule turns while a run goes on, per sending machine.
#[derive(Debug, Default)]
pub struct NetKnobs {
    /// Probability, in parts per thousand, that a request is sent twice.
    pub duplicate_per_mille: AtomicU32,
    /// Probability, in parts per thousand, that a request or its answer is
    /// lost (half each): the sender hears nothing until its timeout.
    pub loss_per_mille: AtomicU32,
}

/// What befalls one request.
enum Fate {
    Delivered,
    Duplicated,
    RequestLost,
    AnswerLost,
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;
/// Idle connections per server address, reused as reqwest reuses them.
type Idle = Arc<Mutex<BTreeMap<String, Vec<Sender>>>>;
/// Idle connections kept per server (the production transport keeps 4).
const IDLE_PER_SERVER_MAX: usize = 4;

/// One machine's outgoing requests.
pub struct SimTransport {
    rng: Mutex<StdRng>,
    knobs: Arc<NetKnobs>,
    idle: Idle,
}

impl std::fmt::Debug for SimTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimTransport").finish_non_exhaustive()
    }
}

impl SimTransport {
    pub fn new(rng: StdRng, knobs: Arc<NetKnobs>) -> SimTransport {
        SimTransport {
            rng: Mutex::new(rng),
            knobs,
            idle: Idle::default(),
        }
    }

    fn fate(&self) -> Fate {
        let duplicate = self.knobs.duplicate_per_mille.load(Ordering::SeqCst);
        let loss = self.knobs.loss_per_mille.load(Ordering::SeqCst);
        if duplicate == 0 && loss == 0 {
            return Fate::Delivered;
        }
        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        let roll = rng.gen_range(0..2000);
        if roll < loss {
            Fate::RequestLost
        } else if roll < 2 * loss {
            Fate::AnswerLost
        } else if rng.gen_range(0..1000) < duplicate {
            Fate::Duplicated
        } else {
            Fate::Delivered
        }
    }
}

impl HttpTransport for SimTransport {
    fn send(&self, request: HttpRequest) -> Exchange {
        let fate = self.fate();
        let idle = self.idle.clone();
        Box::pin(async move {
            let timeout = request.timeout;
            let timed_out = || {
                Err(TransportError::Timeout(
                    "no answer within the request timeout".into(),
                ))
            };
            match fate {
                Fate::Delivered => tokio::time::timeout(timeout, exchange(&idle, request))
                    .await
                    .unwrap_or_else(|_| timed_out()),
                Fate::Duplicated => {
                    let copy = request.clone();
                    let answer = tokio::time::timeout(timeout, exchange(&idle, request))
                        .await
                        .unwrap_or_else(|_| timed_out());
                    tokio::spawn(async move {
                        let _ = tokio::time::timeout(timeout, exchange(&idle, copy)).await;
                    });
                    answer
                }
                Fate::RequestLost => {
                    tokio::time::sleep(timeout).await;
                    timed_out()
                }
                Fate::AnswerLost => {
                    let deadline = tokio::time::Instant::now() + timeout;
                    let _ = tokio::time::timeout(timeout, exchange(&idle, request)).await;
                    tokio::time::sleep_until(deadline).await;
                    timed_out()
                }
            }
        })
    }
}

/// An idle connection to `address` that is still open, if any.
fn take_idle(idle: &Idle, address: &str) -> Option<Sender> {
    let mut idle = idle.lock().unwrap_or_else(|p| p.into_inner());
    let senders = idle.get_mut(address)?;
    while let Some(sender) = senders.pop() {
        if !sender.is_closed() && sender.is_ready() {
            return Some(sender);
        }
    }
    None
}

fn put_idle(idle: &Idle, address: &str, sender: Sender) {
    if sender.is_closed() {
        return;
    }
    let mut idle = idle.lock().unwrap_or_else(|p| p.into_inner());
    let senders = idle.entry(address.to_string()).or_default();
    if senders.len() < IDLE_PER_SERVER_MAX {
        senders.push(sender);
    }
}

async fn connect(address: &str) -> Result<Sender, TransportError> {
    let stream = turmoil::net::TcpStream::connect(address)
        .await
        .map_err(|err| TransportError::Connect(format!("could not connect: {err}")))?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|err| TransportError::Failed(format!("request failed: {err}")))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

async fn exchange(idle: &Idle, request: HttpRequest) -> Result<HttpAnswer, TransportError> {
    let mut sender = match take_idle(idle, &request.address) {
        Some(sender) => sender,
        None => connect(&request.address).await?,
    };
    let mut builder = hyper::Request::builder()
        .method(match request.method {
            Method::Get => hyper::Method::GET,
            Method::Post => hyper::Method::POST,
        })
        .uri(request.path.as_str())
        .header("host", request.address.as_str());
    for (name, value) in &request.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    let outgoing = builder
        .body(Full::new(Bytes::from(request.body)))
        .map_err(|err| TransportError::Failed(format!("request failed: {err}")))?;
    let response = sender
        .send_request(outgoing)
        .await
        .map_err(|err| TransportError::Failed(format!("request failed: {err}")))?;
    let status = response.status().as_u16();
    put_idle(idle, &request.address, sender);
    let bytes_max = request.answer_bytes_max;
    let body = Limited::new(response.into_body(), bytes_max)
        .collect()
        .await
        .map_err(|err| {
            if err
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                TransportError::TooLarge { bytes_max }
            } else {
                TransportError::Failed(format!("request failed: {err}"))
            }
        })?
        .to_bytes();
    Ok(HttpAnswer {
        status,
        body: body.to_vec(),
        channel: None,
    })
}

/// A server's listening socket on the simulated network.
pub struct SimListener(pub turmoil::net::TcpListener);

impl SimListener {
    pub async fn bind(address: &str) -> io::Result<(SimListener, SocketAddr)> {
        let listener = turmoil::net::TcpListener::bind(address).await?;
        let local = listener.local_addr()?;
        Ok((SimListener(listener), local))
    }
}

impl axum::serve::Listener for SimListener {
    type Io = turmoil::net::TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok(accepted) => return accepted,
                // As axum does for a TCP listener: pause, then accept again.
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(1)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}
