//! A minimal HTTP/1.1 client for the load generator: one keep-alive
//! connection, one request at a time, bodies framed by `Content-Length`.
//!
//! Why not `reqwest`: the load generator shares this machine's cores with
//! the server it measures, so every microsecond it spends is taken from the
//! server. Measured with 32 clients on a 2-core machine, the load generator
//! spent about 110 µs of CPU per checkout and check-in with `reqwest` (pool
//! checkout, URL handling, header maps, body streams) and 35 µs with this,
//! and the server's measured rate doubled. It speaks only what a Tessera server answers (axum: `Content-Length`
//! on every response) and fails loudly on anything else.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest response head (status line and headers), in bytes.
const HEAD_BYTES_MAX: usize = 8 * 1024;
/// Largest response body, in bytes.
const BODY_BYTES_MAX: usize = 64 * 1024;
/// Bytes read from the socket at once.
const READ_CHUNK_BYTES: usize = 4 * 1024;

/// A response: status code and body.
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// One keep-alive connection to `address`, opened on first use and again
/// after any failure.
pub struct Connection {
    address: String,
    connect_timeout: Duration,
    request_timeout: Duration,
    stream: Option<TcpStream>,
    /// Reused for every request and response, so that a request allocates little.
    buffer: Vec<u8>,
}

impl Connection {
    pub fn new(address: &str, connect_timeout: Duration, request_timeout: Duration) -> Connection {
        Connection {
            address: address.to_string(),
            connect_timeout,
            request_timeout,
            stream: None,
            buffer: Vec::with_capacity(READ_CHUNK_BYTES),
        }
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
            self.stream = None;
        }
        result
    }

    async fn exchange(&mut self, path: &str, body: &[u8]) -> Result<Response, String> {
        let address = self.address.clone();
        if self.stream.is_none() {
            let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(&address))
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
            self.stream = Some(stream);
        }
        let Some(stream) = self.stream.as_mut() else {
            unreachable!("connected above");
        };
        self.buffer.clear();
        self.buffer.extend_from_slice(
            format!(
                "POST {path} HTTP/1.1\r\nhost: {address}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        );
        self.buffer.extend_from_slice(body);
        stream
            .write_all(&self.buffer)
            .await
            .map_err(|err| format!("cannot send to {address}: {err}"))?;

        self.buffer.clear();
        let head_end = loop {
            if let Some(at) = find(&self.buffer, b"\r\n\r\n") {
                break at + 4;
            }
            if self.buffer.len() > HEAD_BYTES_MAX {
                return Err(format!(
                    "{address} answered a head longer than {HEAD_BYTES_MAX} bytes"
                ));
            }
            read_more(stream, &mut self.buffer, &address).await?;
        };
        let head = Head::parse(&self.buffer[..head_end])
            .map_err(|err| format!("{address} answered an unreadable head: {err}"))?;
        if head.content_length > BODY_BYTES_MAX {
            return Err(format!(
                "{address} answered a body of {} bytes; at most {BODY_BYTES_MAX} expected",
                head.content_length
            ));
        }
        let total = head_end + head.content_length;
        while self.buffer.len() < total {
            read_more(stream, &mut self.buffer, &address).await?;
        }
        if self.buffer.len() > total {
            return Err(format!("{address} sent bytes after the response"));
        }
        if head.close {
            self.stream = None;
        }
        Ok(Response {
            status: head.status,
            body: self.buffer[head_end..total].to_vec(),
        })
    }
}

async fn read_more(
    stream: &mut TcpStream,
    buffer: &mut Vec<u8>,
    address: &str,
) -> Result<(), String> {
    let start = buffer.len();
    buffer.resize(start + READ_CHUNK_BYTES, 0);
    let read = stream.read(&mut buffer[start..]).await;
    let read = match read {
        Ok(0) => Err(format!("{address} closed the connection")),
        Ok(n) => Ok(n),
        Err(err) => Err(format!("cannot read from {address}: {err}")),
    };
    buffer.truncate(start + *read.as_ref().unwrap_or(&0));
    read.map(|_| ())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// What the benchmark needs of a response head.
#[derive(Debug, PartialEq, Eq)]
struct Head {
    status: u16,
    content_length: usize,
    /// The server will close the connection after this response.
    close: bool,
}

impl Head {
    fn parse(head: &[u8]) -> Result<Head, String> {
        let text = std::str::from_utf8(head).map_err(|_| "not UTF-8".to_string())?;
        let mut lines = text.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let mut parts = status_line.splitn(3, ' ');
        if parts.next() != Some("HTTP/1.1") {
            return Err(format!("status line `{status_line}` is not HTTP/1.1"));
        }
        let status = parts
            .next()
            .and_then(|code| code.parse::<u16>().ok())
            .ok_or_else(|| format!("status line `{status_line}` has no status code"))?;
        let mut content_length = None;
        let mut close = false;
        for line in lines.filter(|line| !line.is_empty()) {
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| format!("header line `{line}` has no colon"))?;
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                content_length = Some(
                    value
                        .parse::<usize>()
                        .map_err(|_| format!("content-length `{value}` is not a number"))?,
                );
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                return Err(format!("transfer-encoding `{value}` is not supported"));
            } else if name.eq_ignore_ascii_case("connection") {
                close = value.eq_ignore_ascii_case("close");
            }
        }
        Ok(Head {
            status,
            content_length: content_length.ok_or("no content-length")?,
            close,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_read_or_refused() {
        let ok = |status, content_length, close| {
            Ok(Head {
                status,
                content_length,
                close,
            })
        };
        for (head, expected) in [
            (
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 17\r\n\r\n",
                ok(200, 17, false),
            ),
            (
                "HTTP/1.1 409 Conflict\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                ok(409, 0, true),
            ),
            (
                "HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n",
                Err("status line `HTTP/1.0 200 OK` is not HTTP/1.1".to_string()),
            ),
            (
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
                Err("transfer-encoding `chunked` is not supported".to_string()),
            ),
            (
                "HTTP/1.1 200 OK\r\n\r\n",
                Err("no content-length".to_string()),
            ),
        ] {
            assert_eq!(Head::parse(head.as_bytes()), expected, "{head:?}");
        }
    }

    #[tokio::test]
    async fn a_keep_alive_connection_carries_several_requests() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            for answer in ["{\"n\":1}", "{\"n\":2}"] {
                let mut request = Vec::new();
                while find(&request, b"\r\n\r\n{}").is_none() {
                    let mut chunk = [0u8; 1024];
                    let n = socket.read(&mut chunk).await.unwrap();
                    assert!(n > 0, "the client closed the connection");
                    request.extend_from_slice(&chunk[..n]);
                }
                seen.push(String::from_utf8(request).unwrap());
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{answer}",
                    answer.len()
                );
                socket.write_all(response.as_bytes()).await.unwrap();
            }
            seen
        });
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
}
