//! The server-wide refusal: a stable [`ErrorCode`] and a sentence a person
//! can act on. Every layer returns it (the issuer, the pool, the request
//! service); only `api` turns it into an HTTP answer.

use tessera_proto::ErrorCode;

/// A refused request or operation.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
    /// With [`ErrorCode::Queued`]: where the program waits.
    pub queue: Option<tessera_proto::QueuePlace>,
}

impl Refusal {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Refusal {
        Refusal {
            code,
            message: message.into(),
            queue: None,
        }
    }
}
