//! One request to one server: address check, body limits, and turning the
//! answer into either the expected type or a [`Failure`]. The request itself
//! goes through the client's [`HttpTransport`](tessera_transport::HttpTransport).

use serde::de::DeserializeOwned;
use serde::Serialize;
use tessera_proto::{ErrorBody, Grant, API_PREFIX};
use tessera_transport::{AnswerChannel, HttpAnswer, HttpRequest, Method, TransportError};

use crate::client::Client;
use crate::error::Failure;

/// Largest answer to a checkout, heartbeat or check-in, in bytes: a grant
/// lists at most a pool's servers, so this is generous.
pub(crate) const ANSWER_BYTES_MAX: usize = 1024 * 1024;
/// Largest `/v1/status` answer, in bytes: it lists up to
/// [`tessera_proto::STATUS_GRANTS_MAX`] grants and every feature's codes.
pub(crate) const STATUS_ANSWER_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Longest `host:port` accepted, in bytes.
const ADDRESS_BYTES_MAX: usize = 512;

/// A server address must be a bare `host:port`: anything else would let a
/// configured or advertised address point the request somewhere unintended.
pub(crate) fn check_address(address: &str) -> Result<(), String> {
    if address.is_empty() {
        return Err("a server address is empty; write it as host:port".to_string());
    }
    if address.len() > ADDRESS_BYTES_MAX {
        return Err(format!(
            "server address `{}…` is longer than {ADDRESS_BYTES_MAX} bytes",
            crate::config::prefix(address, 32)
        ));
    }
    let forbidden = |c: char| c.is_whitespace() || c.is_control() || "/?#@\\".contains(c);
    if address.contains(forbidden) || !address.contains(':') {
        return Err(format!(
            "server address `{address}` is not of the form host:port (no scheme, no path)"
        ));
    }
    Ok(())
}

/// The request's path, after checking that `address` is a bare `host:port`
/// whose port is a number.
fn endpoint(address: &str, path: &str) -> Result<String, Failure> {
    check_address(address).map_err(|text| Failure::no_answer(address, text))?;
    check_host_port(address).map_err(|reason| {
        Failure::no_answer(
            address,
            format!("`{address}` is not a valid host:port: {reason}"),
        )
    })?;
    Ok(format!("{API_PREFIX}{path}"))
}

/// What a URL parser would refuse in a `host:port` that [`check_address`]
/// lets through: an empty host, a colon outside IPv6 brackets, a port that is
/// not a number from 0 to 65535.
fn check_host_port(address: &str) -> Result<(), &'static str> {
    let (host, port) = address.rsplit_once(':').ok_or("no port")?;
    if host.is_empty() {
        return Err("empty host");
    }
    let bracketed = host.starts_with('[') && host.ends_with(']') && host.len() > 2;
    if !bracketed && (host.contains(['[', ']', ':'])) {
        return Err("invalid host (write an IPv6 address in brackets)");
    }
    if port.parse::<u16>().is_err() {
        return Err("invalid port number");
    }
    Ok(())
}

/// `POST {API_PREFIX}{path}` with a JSON body.
pub(crate) async fn post_json<Req, Resp>(
    client: &Client,
    address: &str,
    path: &str,
    body: &Req,
) -> Result<Resp, Failure>
where
    Req: Serialize + ?Sized,
    Resp: DeserializeOwned,
{
    post_json_with_headers(client, address, path, token_headers(client), body).await
}

/// A checkout's or heartbeat's [`post_json`], with the TLS channel the
/// answer came on (framed `tessera/3`), which its check needs. Keep the
/// channel until the check is done: its connection carries no other
/// request until then, so the check's binding is in place before the
/// channel's next (unsigned) answer is checked.
pub(crate) async fn post_for_grant<Req>(
    client: &Client,
    address: &str,
    path: &str,
    body: &Req,
) -> (Result<Grant, Failure>, Option<AnswerChannel>)
where
    Req: Serialize + ?Sized,
{
    let sent = send_post(client, address, path, token_headers(client), body).await;
    let channel = sent.as_ref().ok().and_then(|answer| answer.channel.clone());
    (decode(address, sent), channel)
}

fn token_headers(client: &Client) -> Vec<(String, String)> {
    client
        .config()
        .token
        .iter()
        .map(crate::config::BearerToken::header)
        .collect()
}

/// `POST {API_PREFIX}{path}` with a JSON body and these headers besides its content type.
pub(crate) async fn post_json_with_headers<Req, Resp>(
    client: &Client,
    address: &str,
    path: &str,
    headers: Vec<(String, String)>,
    body: &Req,
) -> Result<Resp, Failure>
where
    Req: Serialize + ?Sized,
    Resp: DeserializeOwned,
{
    decode(
        address,
        send_post(client, address, path, headers, body).await,
    )
}

/// Sends `POST {API_PREFIX}{path}` with a JSON body and these headers
/// besides its content type; any status is an answer.
async fn send_post<Req>(
    client: &Client,
    address: &str,
    path: &str,
    mut headers: Vec<(String, String)>,
    body: &Req,
) -> Result<HttpAnswer, Failure>
where
    Req: Serialize + ?Sized,
{
    let path = endpoint(address, path)?;
    headers.push(("content-type".to_string(), "application/json".to_string()));
    let body = serde_json::to_vec(body).map_err(|error| {
        Failure::no_answer(address, format!("cannot encode the request: {error}"))
    })?;
    let request = HttpRequest {
        method: Method::Post,
        address: address.to_string(),
        path,
        headers,
        body,
        timeout: client.config().request_timeout,
        answer_bytes_max: ANSWER_BYTES_MAX,
    };
    sent(address, client.transport().send(request).await)
}

fn sent(address: &str, sent: Result<HttpAnswer, TransportError>) -> Result<HttpAnswer, Failure> {
    sent.map_err(|error| Failure::no_answer(address, error.to_string()))
}

/// `GET {API_PREFIX}{path}`.
pub(crate) async fn get_json<Resp>(
    client: &Client,
    address: &str,
    path: &str,
    headers: Vec<(String, String)>,
    answer_bytes_max: usize,
) -> Result<Resp, Failure>
where
    Resp: DeserializeOwned,
{
    let path = endpoint(address, path)?;
    let request = HttpRequest {
        method: Method::Get,
        address: address.to_string(),
        path,
        headers,
        body: Vec::new(),
        timeout: client.config().request_timeout,
        answer_bytes_max,
    };
    decode(
        address,
        sent(address, client.transport().send(request).await),
    )
}

/// The transport already bounds the body to the request's `answer_bytes_max`,
/// so that a broken or hostile server cannot make the client allocate without
/// bound; its errors ("could not connect: …", "no answer within the request
/// timeout", "answered with a body larger than N bytes") are the failure's text.
fn decode<Resp: DeserializeOwned>(
    address: &str,
    sent: Result<HttpAnswer, Failure>,
) -> Result<Resp, Failure> {
    let answer = sent?;
    let status = answer.status;
    if answer.is_success() {
        return serde_json::from_slice(&answer.body).map_err(|error| {
            Failure::no_answer(
                address,
                format!("answered HTTP {status} with a body this client cannot read: {error}"),
            )
        });
    }
    match serde_json::from_slice::<ErrorBody>(&answer.body) {
        Ok(ErrorBody { error, answer }) => Err(Failure {
            signed: answer.map(Box::new),
            queue: error.queue,
            ..Failure::refused(address, error.code, error.message)
        }),
        Err(_) => Err(Failure::no_answer(
            address,
            format!("answered HTTP {status} without a Tessera error body; is a Tessera server listening there?"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bare_host_port_addresses_are_accepted() {
        for good in ["127.0.0.1:7001", "licenses.example:7001", "[::1]:7001"] {
            assert_eq!(check_address(good), Ok(()), "{good}");
            assert!(endpoint(good, "/checkout").is_ok(), "{good}");
        }
        for bad in [
            "",
            "127.0.0.1",
            "http://127.0.0.1:7001",
            "127.0.0.1:7001/x",
            "user@127.0.0.1:7001",
            "127.0.0.1:7001?x",
            "a b:1",
        ] {
            assert!(check_address(bad).is_err(), "{bad:?} accepted");
        }
        for bad in [
            "127.0.0.1:notaport",
            "127.0.0.1:70000",
            ":7001",
            "a:b:7001",
            "[::1:7001",
        ] {
            assert!(endpoint(bad, "/checkout").is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            endpoint("127.0.0.1:7001", "/checkout").ok().as_deref(),
            Some("/v1/checkout")
        );
    }
}
