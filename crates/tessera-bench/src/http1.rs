//! The load generator's HTTP/1.1 client: one keep-alive connection, one
//! request at a time, on hyper's low-level connection API.
//!
//! Why not `reqwest`: the load generator shares this machine's cores with
//! the server it measures, so every microsecond it spends is taken from the
//! server. Measured with 32 clients on a 2-core machine, the load generator
//! spent about 110 µs of CPU per checkout and check-in with `reqwest` (pool
//! checkout, URL handling, header maps, body streams). hyper's
//! `client::conn::http1` is the same parser and writer without the pool: one
//! connection per load client, which is what the benchmark wants anyway.
//! Over TLS (rustls, as the SDK) or plain TCP, as the server is set up.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::{Builder, SendRequest};
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A connection's bytes: TLS or plain TCP.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_write(cx, data),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, data),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Longest response head (status line and headers), in bytes: hyper's read
/// buffer, which it refuses to grow past this while looking for a head end.
/// hyper takes nothing below 8 KiB.
const HEAD_BYTES_MAX: usize = 8 * 1024;
/// Largest response body, in bytes.
const BODY_BYTES_MAX: usize = 64 * 1024;

/// A response: status code and body.
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

type Driver = hyper::client::conn::http1::Connection<TokioIo<Stream>, Full<Bytes>>;

/// An open connection: requests go through `sender`; `driver` reads and
/// writes the socket. The driver is polled by the client's own task while it
/// waits for an answer, not spawned: a hand-off to another task per request
/// costs the load generator about a third more CPU per checkout.
struct Open {
    sender: SendRequest<Full<Bytes>>,
    driver: Pin<Box<Driver>>,
    /// The driver finished: the connection is closed.
    driver_done: bool,
}

/// Awaits `future` while driving the connection of `driver`.
async fn drive<F: Future>(
    driver: &mut Pin<Box<Driver>>,
    driver_done: &mut bool,
    future: F,
) -> F::Output {
    let mut future = std::pin::pin!(future);
    if !*driver_done {
        tokio::select! {
            biased;
            output = &mut future => return output,
            // Its error, if any, reaches `future` as a failed request.
            _ = driver.as_mut() => *driver_done = true,
        }
    }
    future.await
}

/// One keep-alive connection to `address`, opened on first use and again
/// after any failure or when the server closed it.
pub struct Connection {
    address: String,
    connect_timeout: Duration,
    request_timeout: Duration,
    /// TLS with this configuration; `None`: plain TCP.
    tls: Option<Arc<rustls::ClientConfig>>,
    open: Option<Open>,
}

impl Connection {
    pub fn new(address: &str, connect_timeout: Duration, request_timeout: Duration) -> Connection {
        Connection {
            address: address.to_string(),
            connect_timeout,
            request_timeout,
            tls: None,
            open: None,
        }
    }

    /// The same connection over TLS with `tls` (none: plain TCP).
    pub fn with_tls(mut self, tls: Option<Arc<rustls::ClientConfig>>) -> Connection {
        self.tls = tls;
        self
    }

    /// `POST path` with a JSON body; the whole exchange within the request timeout.
    pub async fn post_json(&mut self, path: &str, body: &[u8]) -> Result<Response, String> {
        let timeout = self.request_timeout;
        let result = match tokio::time::timeout(timeout, self.exchange(path, body)).await {
            Ok(result) => result,
            Err(_) => Err(format!(
                "no answer from {} within {timeout:?}",
                self.address
            )),
        };
        if result.is_err() {
            // The connection may hold half a response: never reuse it.
            self.open = None;
        }
        result
    }

    async fn connect(&self) -> Result<Open, String> {
        let address = &self.address;
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(address))
            .await
            .map_err(|_| {
                format!(
                    "cannot connect to {address} within {:?}",
                    self.connect_timeout
                )
            })?
            .map_err(|err| format!("cannot connect to {address}: {err}"))?;
        stream
            .set_nodelay(true)
            .map_err(|err| format!("cannot set TCP_NODELAY: {err}"))?;
        let stream = match &self.tls {
            None => Stream::Plain(stream),
            Some(tls) => {
                let host = address
                    .rsplit_once(':')
                    .map_or(address.as_str(), |(h, _)| h);
                let name = rustls_pki_types::ServerName::try_from(host.to_string())
                    .map_err(|err| format!("`{host}` cannot name a TLS server: {err}"))?;
                let tls = tokio_rustls::TlsConnector::from(tls.clone())
                    .connect(name, stream)
                    .await
                    .map_err(|err| format!("TLS with {address} failed: {err}"))?;
                Stream::Tls(Box::new(tls))
            }
        };
        let (sender, connection) = Builder::new()
            .max_buf_size(HEAD_BYTES_MAX)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|err| format!("cannot start HTTP/1.1 with {address}: {err}"))?;
        Ok(Open {
            sender,
            driver: Box::pin(connection),
            driver_done: false,
        })
    }

    async fn exchange(&mut self, path: &str, body: &[u8]) -> Result<Response, String> {
        let address = self.address.clone();
        if self
            .open
            .as_ref()
            .is_none_or(|open| open.driver_done || open.sender.is_closed())
        {
            self.open = Some(self.connect().await?);
        }
        let Some(open) = self.open.as_mut() else {
            unreachable!("connected above");
        };
        let request = Request::post(path)
            .header(HOST, address.as_str())
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::copy_from_slice(body)))
            .map_err(|err| format!("cannot build a request for {path}: {err}"))?;
        let Open {
            sender,
            driver,
            driver_done,
        } = open;
        // The previous answer is read, but the driver may not have seen its end yet.
        drive(driver, driver_done, sender.ready())
            .await
            .map_err(|err| format!("{address} closed the connection: {err}"))?;
        let sent = sender.send_request(request);
        let response = drive(driver, driver_done, sent)
            .await
            .map_err(|err| format!("no answer from {address}: {err}"))?;
        let status = response.status().as_u16();
        let declared = response
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok()?.parse::<usize>().ok());
        if declared.is_some_and(|length| length > BODY_BYTES_MAX) {
            return Err(format!(
                "{address} answered a body of {} bytes; at most {BODY_BYTES_MAX} expected",
                declared.unwrap_or_default()
            ));
        }
        let collected = Limited::new(response.into_body(), BODY_BYTES_MAX).collect();
        let body = drive(driver, driver_done, collected)
            .await
            .map_err(|err| format!("cannot read the body {address} answered: {err}"))?
            .to_bytes();
        Ok(Response {
            status,
            body: Vec::from(body),
        })
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::task::JoinHandle;

    use super::*;

    fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
        haystack
            .windows(needle.len())
            .position(|window| window == needle)
    }

    /// A server that accepts one connection and answers each request, read
    /// up to its `{}` body, with the next of `answers` (whole responses).
    fn serve(listener: tokio::net::TcpListener, answers: Vec<String>) -> JoinHandle<Vec<String>> {
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            for answer in answers {
                let mut request = Vec::new();
                while find(&request, b"\r\n\r\n{}").is_none() {
                    let mut chunk = [0u8; 1024];
                    let n = socket.read(&mut chunk).await.unwrap();
                    assert!(n > 0, "the client closed the connection");
                    request.extend_from_slice(&chunk[..n]);
                }
                seen.push(String::from_utf8(request).unwrap());
                socket.write_all(answer.as_bytes()).await.unwrap();
            }
            seen
        })
    }

    fn ok(body: &str) -> String {
        format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    #[tokio::test]
    async fn a_keep_alive_connection_carries_several_requests() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let server = serve(listener, vec![ok("{\"n\":1}"), ok("{\"n\":2}")]);
        let mut connection =
            Connection::new(&address, Duration::from_secs(2), Duration::from_secs(5));
        for expected in ["{\"n\":1}", "{\"n\":2}"] {
            let response = connection.post_json("/v1/x", b"{}").await.unwrap();
            assert_eq!(response.status, 200);
            assert_eq!(response.body, expected.as_bytes());
        }
        let seen = server.await.unwrap();
        assert_eq!(
            seen.len(),
            2,
            "both requests used the one accepted connection"
        );
        assert!(
            seen[0].starts_with("POST /v1/x HTTP/1.1\r\n"),
            "{}",
            seen[0]
        );
        assert!(seen[0].contains("content-length: 2\r\n"), "{}", seen[0]);
    }

    #[tokio::test]
    async fn oversized_or_silent_answers_fail() {
        let too_long = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n",
            BODY_BYTES_MAX + 1
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let _server = serve(listener, vec![too_long]);
        let mut connection =
            Connection::new(&address, Duration::from_secs(2), Duration::from_secs(5));
        let err = connection.post_json("/v1/x", b"{}").await.err().unwrap();
        assert!(err.contains("at most 65536 expected"), "{err}");

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        // Reads the request and never answers.
        let _server = serve(listener, vec![String::new()]);
        let mut connection =
            Connection::new(&address, Duration::from_secs(2), Duration::from_millis(200));
        let err = connection.post_json("/v1/x", b"{}").await.err().unwrap();
        assert!(err.contains("no answer from"), "{err}");
    }
}
