//! The attacker's tools, on loopback: an impostor server with a certificate
//! of its own, a relay that flips bytes of the real server's answers, a
//! relay that ends TLS with the real server's own certificate and passes
//! frames on, and a client that uploads a body one byte at a time.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Longest any tool here runs.
const TOOL_LIFETIME: Duration = Duration::from_secs(30);

async fn listen() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    (listener, address)
}

/// A TLS server for 127.0.0.1 whose certificate no pool CA issued.
pub struct Impostor {
    pub address: String,
    handshakes: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Impostor {
    pub async fn start() -> Impostor {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let (listener, address) = listen().await;
        let handshakes = Arc::new(AtomicBool::new(false));
        let seen = handshakes.clone();
        let task = tokio::spawn(async move {
            let _ = tokio::time::timeout(TOOL_LIFETIME, async {
                while let Ok((tcp, _)) = listener.accept().await {
                    if let Ok(mut tls) = acceptor.accept(tcp).await {
                        seen.store(true, Ordering::SeqCst);
                        let forged = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                                      content-length: 2\r\n\r\n{}";
                        let _ = tls.write_all(forged.as_bytes()).await;
                    }
                }
            })
            .await;
        });
        Impostor {
            address,
            handshakes,
            task,
        }
    }

    /// A client finished a TLS handshake with it (and so might have sent it
    /// a request).
    pub fn answered(&self) -> bool {
        self.handshakes.load(Ordering::SeqCst)
    }
}

impl Drop for Impostor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A TCP relay to `target` that flips the last byte of every chunk the
/// server sends after its first (past the handshake's first flight).
pub struct Relay {
    pub address: String,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    pub async fn start(target: String) -> Relay {
        let (listener, address) = listen().await;
        let task = tokio::spawn(async move {
            let _ = tokio::time::timeout(TOOL_LIFETIME, async {
                while let Ok((client, _)) = listener.accept().await {
                    let Ok(server) = TcpStream::connect(&target).await else {
                        continue;
                    };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::spawn(copy(client_read, server_write, false));
                    tokio::spawn(copy(server_read, client_write, true));
                }
            })
            .await;
        });
        Relay { address, task }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn copy(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    flip: bool,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    let mut chunks = 0;
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        chunks += 1;
        if flip && chunks > 1 {
            buffer[n - 1] ^= 0x01;
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}

/// A relay the customer runs in front of a real server with that server's
/// own certificate and key (the customer owns the machine): it ends each
/// program's TLS connection itself, offering the framed protocol, opens its
/// own to the real server, and passes every request frame on and every
/// answer frame back. With `strip`, it takes each answer's signature (and
/// batch place) off before passing it back, as if the channel vouched for
/// it.
pub struct TlsRelay {
    pub address: String,
    task: tokio::task::JoinHandle<()>,
}

impl TlsRelay {
    pub async fn start(
        target: String,
        (cert, key): (std::path::PathBuf, std::path::PathBuf),
        ca_pem: Vec<u8>,
        strip: bool,
    ) -> TlsRelay {
        use rustls_pki_types::pem::PemObject;
        let chain = rustls_pki_types::CertificateDer::pem_file_iter(&cert)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = rustls_pki_types::PrivateKeyDer::from_pem_file(&key).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        config.alpn_protocols = tessera_proto::frame::alpn_protocols(&tessera_proto::frame::ALPNS);
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let connector =
            tessera_transport::FramedConnector::new(&ca_pem, Duration::from_secs(5)).unwrap();
        let (listener, address) = listen().await;
        let task = tokio::spawn(async move {
            let _ = tokio::time::timeout(TOOL_LIFETIME, async {
                while let Ok((tcp, _)) = listener.accept().await {
                    let Ok(program) = acceptor.accept(tcp).await else {
                        continue;
                    };
                    let Ok(tessera_transport::Opened::Framed(server)) =
                        connector.connect(&target).await
                    else {
                        continue;
                    };
                    tokio::spawn(pass_frames(program, server, strip));
                }
            })
            .await;
        });
        TlsRelay { address, task }
    }
}

impl Drop for TlsRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Passes `program`'s request frames to `server` and its answers back, one
/// at a time, until either side closes.
async fn pass_frames(
    mut program: tokio_rustls::server::TlsStream<TcpStream>,
    mut server: Box<tessera_transport::FramedStream>,
    strip: bool,
) {
    loop {
        let mut prefix = [0u8; 4];
        if program.read_exact(&mut prefix).await.is_err() {
            return;
        }
        let mut frame = prefix.to_vec();
        frame.resize(4 + u32::from_be_bytes(prefix) as usize, 0);
        if program.read_exact(&mut frame[4..]).await.is_err() {
            return;
        }
        let Ok(answer) = tessera_transport::exchange(&mut server, &frame, 1 << 20).await else {
            return;
        };
        let mut body = answer.body;
        if strip {
            if let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(&body) {
                if let Some(signed) = value
                    .get_mut("answer")
                    .and_then(serde_json::Value::as_object_mut)
                {
                    signed.remove("signature");
                    signed.remove("batch");
                }
                body = serde_json::to_vec(&value).unwrap();
            }
        }
        let out = tessera_proto::frame::encode_answer(answer.status, &body);
        if program.write_all(&out).await.is_err() {
            return;
        }
    }
}

/// Opens a TLS connection to `address`, sends a checkout's headers, then
/// one byte of its body every 300 ms, for at most [`TOOL_LIFETIME`].
pub async fn trickle(ca_pem: Vec<u8>, address: String, client: String) {
    let config = tessera_transport::client_tls_config(&ca_pem).unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(&address).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let Ok(mut tls) = connector.connect(name, tcp).await else {
        return;
    };
    let body = format!(
        "{{\"client_id\": \"{client}\", \"user\": \"u\", \"host\": \"h\", \"feature\": \"app\", \
         \"version\": \"1.0\", \"count\": 1}}"
    );
    let head = format!(
        "POST /v1/checkout HTTP/1.1\r\nhost: {address}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n",
        body.len()
    );
    if tls.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(TOOL_LIFETIME, async {
        for byte in body.bytes() {
            if tls.write_all(&[byte]).await.is_err() || tls.flush().await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    })
    .await;
}
