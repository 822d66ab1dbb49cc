//! The framed protocol: a program's checkout, heartbeat and check-in
//! without HTTP.
//!
//! A client that offers the TLS ALPN protocol [`ALPN_V3`], [`ALPN_V2`] or
//! [`ALPN_V1`] and sees the server choose it speaks frames on that
//! connection instead of HTTP/1.1. The versions frame alike; on `tessera/2`
//! a signed answer may carry one signature for a batch of answers and its
//! place in that batch (PROTOCOL.md, "Signed answers"), which a `tessera/1`
//! client would not know; on `tessera/3` over TLS 1.3 only the first signed
//! answer of a connection is signed, over the TLS channel too, and later
//! ones come unsigned, bound to that channel. Each request is one frame and is answered by one frame,
//! in order:
//!
//! ```text
//! request: u32 length | u8 op | u16 token length | token | JSON body
//! answer:  u32 length | u16 status | JSON body
//! ```
//!
//! Integers are big-endian; `length` counts the bytes after itself. The op
//! names the REST route whose body the frame carries ([`Op`]); the token is
//! what REST sends as `Authorization: Bearer <token>` (empty: none); the
//! status and body are what REST answers, error bodies included. A frame
//! read whole is answered, whatever it holds, and the connection goes on;
//! one that is too long, cut short or too slow is answered with an error
//! frame and the connection closed, since the next frame's start is lost.

use crate::MAX_BODY_BYTES;

/// The ALPN protocol name of the framed protocol, version 1: every signed
/// answer signed alone.
pub const ALPN_V1: &[u8] = b"tessera/1";
/// Version 2: signed answers may be signed in batches.
pub const ALPN_V2: &[u8] = b"tessera/2";
/// Version 3: on TLS 1.3, the first signed answer also signs the TLS
/// channel (its exporter value, `tessera_core::answer::CHANNEL_EXPORTER_LABEL`);
/// later answers on the connection come unsigned, bound to it (PROTOCOL.md,
/// "Answers bound to the channel").
pub const ALPN_V3: &[u8] = b"tessera/3";
/// All three, in the order of preference: what a client offers before
/// `http/1.1`, and what a server chooses first.
pub const ALPNS: [&[u8]; 3] = [ALPN_V3, ALPN_V2, ALPN_V1];

/// The ALPN list of a TLS config: the framed `versions` in order, then
/// `http/1.1`, as a server chooses and a client offers them.
pub fn alpn_protocols(versions: &[&[u8]]) -> Vec<Vec<u8>> {
    versions
        .iter()
        .map(|alpn| alpn.to_vec())
        .chain([b"http/1.1".to_vec()])
        .collect()
}
/// Longest token a request frame may carry, in bytes.
pub const TOKEN_BYTES_MAX: usize = 1024;
/// Largest request frame after its length: op, token and a body of at most
/// [`MAX_BODY_BYTES`], as REST takes.
pub const REQUEST_BYTES_MAX: usize = 1 + 2 + TOKEN_BYTES_MAX + MAX_BODY_BYTES;
/// Bytes before a request's token: length, op, token length.
const REQUEST_HEAD_BYTES: usize = 4 + 1 + 2;

/// What a request frame asks: the REST route of the same body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `POST /v1/checkout`.
    Checkout = 1,
    /// `POST /v1/heartbeat`.
    Heartbeat = 2,
    /// `POST /v1/checkin`.
    Checkin = 3,
    /// `POST /v1/noop`, the benchmark's ceiling.
    Noop = 4,
}

impl Op {
    pub const ALL: [Op; 4] = [Op::Checkout, Op::Heartbeat, Op::Checkin, Op::Noop];

    pub fn from_byte(byte: u8) -> Option<Op> {
        Op::ALL.into_iter().find(|op| *op as u8 == byte)
    }

    /// The REST path (below [`crate::API_PREFIX`]) this op stands for.
    pub fn path(self) -> &'static str {
        match self {
            Op::Checkout => "/checkout",
            Op::Heartbeat => "/heartbeat",
            Op::Checkin => "/checkin",
            Op::Noop => "/noop",
        }
    }

    /// The op for a full REST path (`/v1/checkout`), if it has one.
    pub fn for_path(path: &str) -> Option<Op> {
        let below = path.strip_prefix(crate::API_PREFIX)?;
        Op::ALL.into_iter().find(|op| op.path() == below)
    }
}

/// A request frame, length prefix included: ready to write.
pub fn encode_request(op: Op, token: Option<&str>, body: &[u8]) -> Result<Vec<u8>, String> {
    let token = token.unwrap_or("").as_bytes();
    if token.len() > TOKEN_BYTES_MAX {
        return Err(format!(
            "the token is {} bytes long; a frame carries at most {TOKEN_BYTES_MAX}",
            token.len()
        ));
    }
    if body.len() > MAX_BODY_BYTES {
        return Err(format!(
            "the request body is {} bytes long; at most {MAX_BODY_BYTES} are taken",
            body.len()
        ));
    }
    let length = 1 + 2 + token.len() + body.len();
    let mut frame = Vec::with_capacity(4 + length);
    frame.extend_from_slice(&(length as u32).to_be_bytes());
    frame.push(op as u8);
    frame.extend_from_slice(&(token.len() as u16).to_be_bytes());
    frame.extend_from_slice(token);
    frame.extend_from_slice(body);
    Ok(frame)
}

/// A request frame's parts, borrowed from the bytes after its length.
#[derive(Debug, PartialEq, Eq)]
pub struct Request<'a> {
    /// The op byte as sent: an unknown one is refused, but the frame's end
    /// is known, so the connection can go on.
    pub op: u8,
    pub token: Option<&'a str>,
    pub body: &'a [u8],
}

/// Why a frame cannot be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// Its length is over the limit; nothing after the length was read.
    TooLarge { length: usize, max: usize },
    /// Its parts do not add up.
    Malformed(String),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::TooLarge { length, max } => {
                write!(f, "a frame of {length} bytes; at most {max} are taken")
            }
            FrameError::Malformed(text) => f.write_str(text),
        }
    }
}

/// The length a frame's 4-byte prefix announces, checked against `max`.
pub fn frame_length(prefix: [u8; 4], max: usize) -> Result<usize, FrameError> {
    let length = u32::from_be_bytes(prefix) as usize;
    if length > max {
        return Err(FrameError::TooLarge { length, max });
    }
    Ok(length)
}

/// Splits a request frame (the bytes after its length prefix).
pub fn decode_request(frame: &[u8]) -> Result<Request<'_>, FrameError> {
    let malformed = |text: &str| FrameError::Malformed(text.to_string());
    if frame.len() < REQUEST_HEAD_BYTES - 4 {
        return Err(malformed(
            "a request frame is shorter than its op and token length",
        ));
    }
    let op = frame[0];
    let token_bytes = u16::from_be_bytes([frame[1], frame[2]]) as usize;
    if token_bytes > TOKEN_BYTES_MAX {
        return Err(FrameError::Malformed(format!(
            "a token of {token_bytes} bytes; at most {TOKEN_BYTES_MAX} are taken"
        )));
    }
    let rest = &frame[3..];
    if rest.len() < token_bytes {
        return Err(malformed(
            "the frame ends inside its token: the token length is wrong",
        ));
    }
    let (token, body) = rest.split_at(token_bytes);
    let token = match token_bytes {
        0 => None,
        _ => Some(std::str::from_utf8(token).map_err(|_| malformed("the token is not UTF-8"))?),
    };
    Ok(Request { op, token, body })
}

/// An answer frame, length prefix included.
pub fn encode_answer(status: u16, body: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(ANSWER_HEAD_BYTES + body.len());
    frame.resize(ANSWER_HEAD_BYTES, 0);
    frame.extend_from_slice(body);
    seal_answer(&mut frame, status);
    frame
}

/// Bytes before an answer's body: length and status.
pub const ANSWER_HEAD_BYTES: usize = 4 + 2;

/// An answer frame written in place: `frame` holds [`ANSWER_HEAD_BYTES`]
/// bytes of any value, then the body; the head is filled in for `status`.
/// [`encode_answer`] is this over a copy of the body.
pub fn seal_answer(frame: &mut [u8], status: u16) {
    assert!(
        frame.len() >= ANSWER_HEAD_BYTES,
        "an answer frame without its head"
    );
    let length = (frame.len() - 4) as u32;
    frame[..4].copy_from_slice(&length.to_be_bytes());
    frame[4..ANSWER_HEAD_BYTES].copy_from_slice(&status.to_be_bytes());
}

/// An answer frame's status and body (the bytes after its length prefix).
pub fn decode_answer(frame: &[u8]) -> Result<(u16, &[u8]), FrameError> {
    if frame.len() < 2 {
        return Err(FrameError::Malformed(
            "an answer frame is shorter than its status".to_string(),
        ));
    }
    Ok((u16::from_be_bytes([frame[0], frame[1]]), &frame[2..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_sealed_in_place_is_the_encoded_one() {
        let body = br#"{"grant_id":"g"}"#;
        let mut frame = vec![0xff; ANSWER_HEAD_BYTES];
        frame.extend_from_slice(body);
        seal_answer(&mut frame, 409);
        assert_eq!(frame, encode_answer(409, body));
        assert_eq!(decode_answer(&frame[4..]).unwrap(), (409, &body[..]));
    }

    #[test]
    fn a_request_frame_reads_back_as_written() {
        for token in [None, Some("s3cret")] {
            let frame = encode_request(Op::Heartbeat, token, b"{\"a\":1}").unwrap();
            let length = frame_length(frame[..4].try_into().unwrap(), REQUEST_BYTES_MAX).unwrap();
            assert_eq!(length, frame.len() - 4);
            let request = decode_request(&frame[4..]).unwrap();
            assert_eq!(Op::from_byte(request.op), Some(Op::Heartbeat));
            assert_eq!(request.token, token);
            assert_eq!(request.body, b"{\"a\":1}");
        }
        let answer = encode_answer(409, b"{}");
        assert_eq!(decode_answer(&answer[4..]).unwrap(), (409, &b"{}"[..]));
    }

    #[test]
    fn ops_name_their_rest_routes() {
        for op in Op::ALL {
            assert_eq!(Op::for_path(&format!("/v1{}", op.path())), Some(op));
        }
        assert_eq!(Op::for_path("/v1/status"), None);
        assert_eq!(Op::from_byte(0), None);
        assert_eq!(Op::from_byte(5), None);
    }

    #[test]
    fn bad_frames_are_refused_with_the_reason() {
        let too_long = frame_length(
            (REQUEST_BYTES_MAX as u32 + 1).to_be_bytes(),
            REQUEST_BYTES_MAX,
        );
        assert!(matches!(too_long, Err(FrameError::TooLarge { .. })));
        assert!(decode_request(&[1, 0]).is_err());
        let err = decode_request(&[1, 0, 9, b'x']).unwrap_err();
        assert!(err.to_string().contains("inside its token"), "{err}");
        let err = decode_request(&[1, 0xff, 0xff]).unwrap_err();
        assert!(err.to_string().contains("at most 1024"), "{err}");
        let err = decode_request(&[1, 0, 1, 0xff]).unwrap_err();
        assert!(err.to_string().contains("UTF-8"), "{err}");
        assert!(encode_request(Op::Checkout, None, &vec![b' '; MAX_BODY_BYTES + 1]).is_err());
        assert!(encode_request(Op::Checkout, Some(&"t".repeat(1025)), b"{}").is_err());
        assert!(decode_answer(&[2]).is_err());
    }
}
