//! Where connections come in: TLS (or plain TCP, only by the config's
//! explicit `plain_http`), with a cap on connections per source address and
//! in all, a deadline for the TLS handshake and one for idle connections.
//!
//! Handshakes run in their own tasks, so a caller that connects and then
//! says nothing holds up no one but itself, and only until
//! [`HANDSHAKE_TIMEOUT`].

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};

use crate::api::framed::{self, FramedState};
use crate::config::TlsFiles;

use crate::answer::{Channel, Signing};
use tessera_proto::frame::{alpn_protocols, ALPNS, ALPN_V1, ALPN_V2, ALPN_V3};

/// Longest a TLS handshake may take before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection that neither sends nor receives a byte for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Connections accepted and ready, waiting for the HTTP server to take them.
const READY_QUEUE: usize = 256;

/// Caps on open connections.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// Open connections from one source address; more are closed at once.
    pub per_address_max: usize,
    /// Open connections in all.
    pub total_max: usize,
}

/// The rustls configuration of a server's listener: its certificate chain
/// and key from `files`. Clients and peers check the chain against the pool
/// CA.
pub fn server_tls_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(&files.cert_file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|err| {
            format!(
                "cannot read the certificate {}: {err}; `tessera pool init` makes one per server",
                files.cert_file.display()
            )
        })?;
    if chain.is_empty() {
        return Err(format!(
            "{} holds no certificate",
            files.cert_file.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key_file).map_err(|err| {
        format!(
            "cannot read the private key {}: {err}",
            files.key_file.display()
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| format!("cannot set up TLS: {err}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|err| {
            format!(
                "the certificate {} and key {} do not make a TLS identity: {err}",
                files.cert_file.display(),
                files.key_file.display()
            )
        })?;
    // A client offering the framed protocol gets its latest version; any
    // other, HTTP/1.1.
    config.alpn_protocols = alpn_protocols(&ALPNS);
    Ok(Arc::new(config))
}

/// A listener for [`axum::serve`]: connections already past their TLS
/// handshake, each holding a slot of the caps until it closes.
pub struct SecureListener {
    ready: mpsc::Receiver<(Connection, SocketAddr)>,
    local: SocketAddr,
    accepting: tokio::task::JoinHandle<()>,
}

impl Drop for SecureListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl SecureListener {
    /// Listens on `address`; `tls: None` is plain TCP. A TLS connection
    /// whose client chose the framed protocol is served by
    /// [`framed::serve`] once `framed` names the server; every other goes
    /// to the HTTP server.
    pub async fn bind(
        address: &str,
        tls: Option<Arc<rustls::ServerConfig>>,
        limits: ConnectionLimits,
        framed: FramedState,
    ) -> io::Result<SecureListener> {
        let listener = TcpListener::bind(address).await?;
        let local = listener.local_addr()?;
        let (sender, ready) = mpsc::channel(READY_QUEUE);
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        let slots = Slots::new(limits);
        let accepting = tokio::spawn(accept_loop(listener, acceptor, slots, sender, framed));
        Ok(SecureListener {
            ready,
            local,
            accepting,
        })
    }
}

impl axum::serve::Listener for SecureListener {
    type Io = Connection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Connection, SocketAddr) {
        match self.ready.recv().await {
            Some(ready) => ready,
            // The accept loop ended (it never does but by abort): wait for
            // the shutdown that aborted it.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    slots: Slots,
    ready: mpsc::Sender<(Connection, SocketAddr)>,
    framed: FramedState,
) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of file descriptors and the like: wait, then go on.
                tracing::warn!("cannot accept a connection: {err}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(slot) = slots.take(peer.ip()) else {
            tracing::debug!("closed a connection from {peer}: over the connection caps");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let ready = ready.clone();
        let framed = framed.clone();
        tokio::spawn(async move {
            let io = match acceptor {
                None => Io::Plain(tcp),
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => match framed_signing(&tls) {
                            Some(signing) => {
                                let connection = Connection::new(Io::Tls(Box::new(tls)), slot);
                                return framed::serve(framed, connection, peer, signing).await;
                            }
                            None => Io::Tls(Box::new(tls)),
                        },
                        Ok(Err(err)) => {
                            tracing::debug!("TLS handshake with {peer} failed: {err}");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!("TLS handshake with {peer} took too long");
                            return;
                        }
                    }
                }
            };
            let _ = ready.send((Connection::new(io, slot), peer)).await;
        });
    }
}

/// How a framed connection's signed answers are signed, by the version
/// its client chose; `None` for HTTP. `tessera/3` binds answers to the
/// channel where the program derives one too
/// ([`tessera_transport::channel_exported`]: TLS 1.3); otherwise its answers
/// are signed in batches, as the program then expects.
fn framed_signing(tls: &tokio_rustls::server::TlsStream<TcpStream>) -> Option<Signing> {
    let connection = tls.get_ref().1;
    match connection.alpn_protocol() {
        Some(ALPN_V3) => Some(
            tessera_transport::channel_exported(connection)
                .map_or(Signing::InBatches, |exported| {
                    Signing::Bound(Channel::new(&exported))
                }),
        ),
        Some(ALPN_V2) => Some(Signing::InBatches),
        Some(ALPN_V1) => Some(Signing::Alone),
        _ => None,
    }
}

/// The open connections, per source address and in all.
#[derive(Clone)]
struct Slots {
    limits: ConnectionLimits,
    open: Arc<Mutex<SlotCounts>>,
}

#[derive(Default)]
struct SlotCounts {
    total: usize,
    per_address: HashMap<IpAddr, usize>,
}

impl Slots {
    fn new(limits: ConnectionLimits) -> Slots {
        Slots {
            limits,
            open: Arc::default(),
        }
    }

    fn take(&self, address: IpAddr) -> Option<Slot> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let from_address = open.per_address.get(&address).copied().unwrap_or(0);
        if open.total >= self.limits.total_max || from_address >= self.limits.per_address_max {
            return None;
        }
        open.total += 1;
        open.per_address.insert(address, from_address + 1);
        Some(Slot {
            slots: self.clone(),
            address,
        })
    }
}

/// One connection's place under the caps, given back when it closes.
struct Slot {
    slots: Slots,
    address: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().unwrap_or_else(|p| p.into_inner());
        open.total = open.total.saturating_sub(1);
        if let Some(count) = open.per_address.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                open.per_address.remove(&self.address);
            }
        }
    }
}

enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// What a connection reads and writes through, plain or TLS.
trait Stream: AsyncRead + AsyncWrite + Unpin {}

impl<T: AsyncRead + AsyncWrite + Unpin> Stream for T {}

impl Io {
    fn stream(&mut self) -> Pin<&mut dyn Stream> {
        match self {
            Io::Plain(tcp) => Pin::new(tcp),
            Io::Tls(tls) => Pin::new(tls.as_mut()),
        }
    }
}

/// An accepted connection: closed with an error once idle for
/// [`IDLE_TIMEOUT`].
///
/// A read or write only notes the time; the timer is moved when it fires
/// early, not on every byte, so that a busy connection costs no timer work.
pub struct Connection {
    io: Io,
    /// When a byte last went either way.
    last_busy: Instant,
    /// Fires at or before `last_busy + IDLE_TIMEOUT`.
    idle: Pin<Box<Sleep>>,
    _slot: Slot,
}

impl Connection {
    fn new(io: Io, slot: Slot) -> Connection {
        Connection {
            io,
            last_busy: Instant::now(),
            idle: Box::pin(tokio::time::sleep(IDLE_TIMEOUT)),
            _slot: slot,
        }
    }

    fn busy(&mut self) {
        self.last_busy = Instant::now();
    }

    /// After a write: a finished one marks the connection busy, a pending
    /// one waits for the idle deadline.
    fn after_write(
        &mut self,
        cx: &mut Context<'_>,
        written: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match written {
            Poll::Ready(result) => {
                self.busy();
                Poll::Ready(result)
            }
            Poll::Pending => self.idle_out(cx).map(Err),
        }
    }

    /// On a pending read or write: the idle deadline's error, once passed.
    fn idle_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        loop {
            if self.idle.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let deadline = self.last_busy + IDLE_TIMEOUT;
            if Instant::now() >= deadline {
                return Poll::Ready(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the connection was idle too long",
                ));
            }
            // Busy since the timer was set: wait until the new deadline.
            self.idle.as_mut().reset(deadline);
        }
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = this.io.stream().poll_read(cx, buf);
        match read {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    this.busy();
                }
                Poll::Ready(result)
            }
            Poll::Pending => this.idle_out(cx).map(Err),
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = this.io.stream().poll_write(cx, data);
        this.after_write(cx, written)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buffers: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = this.io.stream().poll_write_vectored(cx, buffers);
        this.after_write(cx, written)
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(tcp) => tcp.is_write_vectored(),
            Io::Tls(tls) => tls.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().io.stream().poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().io.stream().poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_cap_each_address_and_the_total() {
        let slots = Slots::new(ConnectionLimits {
            per_address_max: 2,
            total_max: 3,
        });
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let a1 = slots.take(a).expect("first from a");
        let _a2 = slots.take(a).expect("second from a");
        assert!(
            slots.take(a).is_none(),
            "a third from one address is refused"
        );
        let _b1 = slots.take(b).expect("first from b");
        assert!(slots.take(b).is_none(), "the total is reached");
        drop(a1);
        assert!(
            slots.take(a).is_some(),
            "a closed connection frees its slot"
        );
    }

    /// A connection that says nothing is closed after the idle timeout; one
    /// that keeps talking is not.
    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_is_closed() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let mut peer = TcpStream::connect(address).await.unwrap();
        let (tcp, from) = listener.accept().await.unwrap();
        let slots = Slots::new(ConnectionLimits {
            per_address_max: 1,
            total_max: 1,
        });
        let mut connection = Connection::new(Io::Plain(tcp), slots.take(from.ip()).unwrap());
        let mut buffer = [0u8; 8];
        // Talking: a byte every half timeout keeps it open.
        for _ in 0..3 {
            tokio::time::sleep(IDLE_TIMEOUT / 2).await;
            peer.write_all(b"x").await.unwrap();
            assert_eq!(connection.read(&mut buffer).await.unwrap(), 1);
        }
        // Silent: the read fails once the timeout passes.
        let started = Instant::now();
        let err = connection.read(&mut buffer).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= IDLE_TIMEOUT);
        drop(connection);
        assert!(slots.take(from.ip()).is_some(), "its slot is free again");
    }
}
