//! The framed protocol ([`tessera_proto::frame`]): a program's checkout,
//! heartbeat and check-in on a TLS connection whose client chose the ALPN
//! protocol `tessera/3`, `tessera/2` or `tessera/1`, without HTTP. On
//! `tessera/2` signed answers are signed in batches
//! ([`crate::answer::BatchSigner`]); on `tessera/3` the first is signed so
//! over the TLS channel too, and later ones are bound to it unsigned
//! ([`crate::answer::Signing::Bound`]).
//!
//! Each frame gets what its REST route would: the caller named from its
//! token as [`auth`](super::auth) names it, a place among the requests in
//! flight from its address ([`per_address`](super::per_address)) and among
//! the server's client requests (the same semaphore as REST's), the body
//! checked as the JSON extractor checks it, and the same handler
//! ([`client`](super::client)). Only the framing differs: no request line,
//! no headers, no router. A connection carries one request at a time.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tessera_proto::frame::{self, FrameError, Op};
use tessera_proto::ErrorCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use super::auth::{self, Caller};
use super::{api_error, client, per_address, ApiError, SignedDenial, BODY_READ_TIMEOUT};
use crate::answer::Signing;
use crate::listener::Connection;
use crate::App;

/// Bytes set aside for a frame before they arrive: a checkout's frame fits,
/// and a prefix announcing more costs no more than this (HTTP's read buffer
/// is 8 KiB per connection).
const FRAME_BYTES_UPFRONT: usize = 4 * 1024;
/// Bytes set aside for an answer frame: a grant's fits (a signed one with
/// its codes may grow once).
const ANSWER_BYTES_UPFRONT: usize = 1024;
/// A connection keeps its frame and answer buffers for the next request up
/// to this size; a larger one (a large frame, an answer with many codes)
/// is let go.
const KEPT_BYTES_MAX: usize = FRAME_BYTES_UPFRONT;

/// Where the listener's framed connections find the server: not yet up,
/// serving, or stopping.
#[derive(Clone)]
pub enum Framed {
    Starting,
    Serving(Arc<App>),
    Stopped,
}

/// The listener's side of [`Framed`].
pub type FramedState = watch::Receiver<Framed>;

/// Serves one framed connection until the client closes it, a frame is
/// malformed, or the server stops (between requests: one being answered is
/// finished first).
pub async fn serve(
    mut state: FramedState,
    mut connection: Connection,
    peer: SocketAddr,
    signing: Signing,
) {
    let app = match state.wait_for(|s| !matches!(s, Framed::Starting)).await {
        Ok(serving) => match &*serving {
            Framed::Serving(app) => app.clone(),
            _ => return,
        },
        Err(_) => return,
    };
    // A connection's frame and answer buffers, used again for each request
    // while they stay small.
    let (mut body, mut out) = (Vec::new(), Vec::new());
    loop {
        let mut prefix = [0u8; 4];
        tokio::select! {
            read = connection.read_exact(&mut prefix) => {
                if read.is_err() {
                    // Closed by the client, or idle too long.
                    return;
                }
            }
            _ = state.wait_for(|s| matches!(s, Framed::Stopped)) => return,
        }
        app.framed_requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let taken = std::mem::take(&mut out);
        let go_on;
        (out, go_on) = match read_frame(&mut connection, prefix, &mut body).await {
            Ok(()) => (
                answer(&app, &body, peer, signing.clone(), taken).await,
                true,
            ),
            Err(err) => (refusal_frame(err, taken), false),
        };
        if connection.write_all(&out).await.is_err() || !go_on {
            return;
        }
        for buffer in [&mut body, &mut out] {
            if buffer.capacity() > KEPT_BYTES_MAX {
                *buffer = Vec::new();
            }
        }
    }
}

/// The rest of a frame whose length prefix is `prefix`, in `bytes`, whole within
/// [`BODY_READ_TIMEOUT`]. Past [`FRAME_BYTES_UPFRONT`] the buffer at most
/// doubles what has arrived: a prefix alone cannot make the server set
/// aside the 66 KiB it may announce, on each of thousands of connections.
async fn read_frame(
    connection: &mut Connection,
    prefix: [u8; 4],
    bytes: &mut Vec<u8>,
) -> Result<(), ApiError> {
    let length = frame::frame_length(prefix, frame::REQUEST_BYTES_MAX).map_err(frame_error)?;
    let read = async {
        bytes.clear();
        bytes.resize(length.min(FRAME_BYTES_UPFRONT), 0);
        let mut arrived = 0;
        loop {
            connection.read_exact(&mut bytes[arrived..]).await?;
            arrived = bytes.len();
            if arrived == length {
                return Ok::<_, std::io::Error>(());
            }
            bytes.resize((arrived * 2).min(length), 0);
        }
    };
    match tokio::time::timeout(BODY_READ_TIMEOUT, read).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(err)) => Err(api_error(
            ErrorCode::MalformedRequest,
            format!("the frame was cut short: {err}"),
        )),
        Err(_) => Err(api_error(
            ErrorCode::BodyTimeout,
            format!(
                "the frame did not arrive within {} ms",
                BODY_READ_TIMEOUT.as_millis()
            ),
        )),
    }
}

fn frame_error(err: FrameError) -> ApiError {
    match err {
        FrameError::TooLarge { .. } => api_error(ErrorCode::BodyTooLarge, err.to_string()),
        FrameError::Malformed(text) => api_error(ErrorCode::MalformedRequest, text),
    }
}

/// The answer frame to one request frame, written in `out`.
async fn answer(
    app: &Arc<App>,
    bytes: &[u8],
    peer: SocketAddr,
    signing: Signing,
    out: Vec<u8>,
) -> Vec<u8> {
    let request = match frame::decode_request(bytes) {
        Ok(request) => request,
        Err(err) => return refusal_frame(frame_error(err), out),
    };
    let Some(op) = Op::from_byte(request.op) else {
        return refusal_frame(
            api_error(
                ErrorCode::NotFound,
                format!(
                    "no such frame op {}; this server takes 1 (checkout), 2 (heartbeat), \
                 3 (check-in) and 4 (no-op)",
                    request.op
                ),
            ),
            out,
        );
    };
    let caller = match request.token {
        None => Caller::Anonymous,
        Some(token) => match auth::admin_caller(app, token) {
            Ok(caller) => caller,
            Err(err) => return refusal_frame(err, out),
        },
    };
    let address = peer.ip();
    let _place = match per_address::enter(app, address) {
        Ok(place) => place,
        Err(err) => return refusal_frame(err, out),
    };
    let Ok(_permit) = app.client_requests.acquire().await else {
        return refusal_frame(
            api_error(ErrorCode::Internal, "the server is stopping"),
            out,
        );
    };
    let body = request.body;
    match op {
        Op::Checkout => match parse(body) {
            Ok(body) => to_frame(
                client::checkout_answer(app, &caller, Some(address), body, signing).await,
                out,
            ),
            Err(err) => refusal_frame(err, out),
        },
        Op::Heartbeat => match parse(body) {
            Ok(body) => to_frame(
                client::heartbeat_answer(app, &caller, body, signing).await,
                out,
            ),
            Err(err) => refusal_frame(err, out),
        },
        Op::Checkin => match parse(body) {
            Ok(body) => to_frame(
                client::checkin_answer(app, body).await.map_err(Into::into),
                out,
            ),
            Err(err) => refusal_frame(err, out),
        },
        Op::Noop => match parse(body) {
            Ok(body) => to_frame::<_>(Ok(client::noop_answer(body)), out),
            Err(err) => refusal_frame(err, out),
        },
    }
}

/// A frame's JSON body, refused as the REST extractor refuses it.
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|err| {
        api_error(
            ErrorCode::MalformedRequest,
            format!("request body is not the JSON this endpoint takes: {err}"),
        )
    })
}

fn to_frame<T: Serialize>(answer: Result<T, SignedDenial>, out: Vec<u8>) -> Vec<u8> {
    match answer {
        Ok(body) => json_frame(StatusCode::OK, &body, out),
        Err(denial) => {
            let (status, body) = denial.into_parts();
            json_frame(status, &body, out)
        }
    }
}

fn refusal_frame(err: ApiError, out: Vec<u8>) -> Vec<u8> {
    to_frame::<()>(Err(err.into()), out)
}

/// The answer frame of `body` in `out` (whatever it held before), the body
/// serialized straight after the frame's head.
fn json_frame<T: Serialize>(status: StatusCode, body: &T, mut out: Vec<u8>) -> Vec<u8> {
    out.clear();
    out.reserve(ANSWER_BYTES_UPFRONT);
    out.resize(frame::ANSWER_HEAD_BYTES, 0);
    match serde_json::to_writer(&mut out, body) {
        Ok(()) => {
            frame::seal_answer(&mut out, status.as_u16());
            out
        }
        Err(_) => frame::encode_answer(
            500,
            br#"{"error":{"code":"internal","message":"cannot encode the answer"}}"#,
        ),
    }
}
