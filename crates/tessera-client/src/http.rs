//! One request to one server: URL, body limits, and turning the answer into
//! either the expected type or a [`Failure`].

use std::error::Error as _;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tessera_proto::{ErrorBody, API_PREFIX};

use crate::error::{Failure, FailureKind};

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

fn endpoint(address: &str, path: &str) -> Result<reqwest::Url, Failure> {
    check_address(address).map_err(|text| Failure::no_answer(address, text))?;
    reqwest::Url::parse(&format!("http://{address}{API_PREFIX}{path}")).map_err(|error| {
        Failure::no_answer(
            address,
            format!("`{address}` is not a valid host:port: {error}"),
        )
    })
}

/// `POST {API_PREFIX}{path}` with a JSON body.
pub(crate) async fn post_json<Req, Resp>(
    http: &reqwest::Client,
    address: &str,
    path: &str,
    body: &Req,
) -> Result<Resp, Failure>
where
    Req: Serialize + ?Sized,
    Resp: DeserializeOwned,
{
    let url = endpoint(address, path)?;
    let sent = http.post(url).json(body).send().await;
    decode(address, sent, ANSWER_BYTES_MAX).await
}

/// `GET {API_PREFIX}{path}`.
pub(crate) async fn get_json<Resp>(
    http: &reqwest::Client,
    address: &str,
    path: &str,
    answer_bytes_max: usize,
) -> Result<Resp, Failure>
where
    Resp: DeserializeOwned,
{
    let url = endpoint(address, path)?;
    let sent = http.get(url).send().await;
    decode(address, sent, answer_bytes_max).await
}

async fn decode<Resp: DeserializeOwned>(
    address: &str,
    sent: reqwest::Result<reqwest::Response>,
    answer_bytes_max: usize,
) -> Result<Resp, Failure> {
    let response = sent.map_err(|error| Failure::no_answer(address, describe_error(&error)))?;
    let status = response.status();
    let body = read_bounded(response, answer_bytes_max)
        .await
        .map_err(|text| Failure::no_answer(address, text))?;
    if status.is_success() {
        return serde_json::from_slice(&body).map_err(|error| {
            Failure::no_answer(
                address,
                format!("answered HTTP {status} with a body this client cannot read: {error}"),
            )
        });
    }
    match serde_json::from_slice::<ErrorBody>(&body) {
        Ok(ErrorBody { error }) => Err(Failure {
            address: address.to_string(),
            kind: FailureKind::Refused {
                code: error.code,
                message: error.message,
            },
        }),
        Err(_) => Err(Failure::no_answer(
            address,
            format!("answered HTTP {status} without a Tessera error body; is a Tessera server listening there?"),
        )),
    }
}

/// Reads the body but never more than `bytes_max`, so that a broken or hostile
/// server cannot make the client allocate without bound.
async fn read_bounded(
    mut response: reqwest::Response,
    bytes_max: usize,
) -> Result<Vec<u8>, String> {
    let too_large = || format!("answered with a body larger than {bytes_max} bytes");
    let declared = response.content_length().unwrap_or(0);
    if declared > bytes_max as u64 {
        return Err(too_large());
    }
    let mut body = Vec::with_capacity(declared as usize);
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|error| describe_error(&error))?
    {
        if body.len() + chunk.len() > bytes_max {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// reqwest's own message says only "error sending request"; the cause is in
/// the source chain ("connection refused", "operation timed out").
fn describe_error(error: &reqwest::Error) -> String {
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
    text
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
        assert!(endpoint("127.0.0.1:notaport", "/checkout").is_err());
    }
}
