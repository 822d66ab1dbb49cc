//! Errors a program can act on, and how one server's answer is classified.

use std::fmt;

use tessera_proto::ErrorCode;

/// Why a request to the pool failed. Match on the variant to decide what to
/// do; [`ClientError::code`] gives the server's machine code when there is one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Every seat is taken on every server that answered. Retry later.
    #[error("no seat of feature `{feature}` is available: {message}; retry later or ask the license administrator for more seats")]
    NoSeatsAvailable { feature: String, message: String },

    /// The feature's license codes exist but none can be served (expired,
    /// bound to another host, unknown vendor key); the message says which.
    #[error("the license is not served: {message}")]
    LicenseNotServed { message: String },

    /// The servers that answered cannot reach a majority of their pool (or are
    /// in their grace period after a restart), so none may issue seats.
    #[error("the license servers are up but may not issue seats now: {message}; retry in a few seconds, and if it persists ask the license administrator to check the pool with `tessera status`")]
    NoQuorum { message: String },

    /// No server gave a usable answer: each was unreachable, timed out or failed.
    #[error("no license server could serve the request (tried {}): {last_error}; check that the servers are running and that ClientConfig::servers lists their host:port", .tried.join(", "))]
    NoServerReachable {
        tried: Vec<String>,
        last_error: String,
    },

    /// A server refused the request for a reason that retrying will not change.
    #[error("the license server refused the request ({code}): {message}")]
    Rejected { code: ErrorCode, message: String },

    /// No server holds this grant: it was checked in already or has expired.
    #[error("no license server holds this grant; it was already checked in or has expired")]
    UnknownGrant,

    /// The seat was lost: no server renewed it before it expired, or the pool
    /// stopped serving its license.
    #[error("the seat was lost: {message}")]
    SeatLost { message: String },

    /// Servers answered, but no answer showed a seat of this program's
    /// vendor: unsigned, signed over another request (a replay), or backed
    /// by a license code the vendor's keys did not sign. The message says
    /// which, server by server.
    #[error("no license server gave an answer this program can trust: {message}")]
    UntrustedAnswer { message: String },

    /// This machine's clock reads earlier than the latest time this program
    /// trusted: it was set back. Nothing is checked out until it is right.
    #[error("the clock was set back: {message}")]
    ClockSetBack { message: String },

    /// The caller's deadline passed before any server gave a final answer
    /// ([`crate::blocking`]). Retry later, or with a longer deadline.
    #[error(
        "no final answer within the deadline of {deadline_ms} ms; retry later or allow longer"
    )]
    DeadlineExceeded { deadline_ms: u64 },

    /// The [`ClientConfig`](crate::ClientConfig) cannot work; the message names the field.
    #[error("invalid client configuration: {message}")]
    InvalidConfig { message: String },
}

impl ClientError {
    /// The server's machine code behind this error, when a server gave one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::NoSeatsAvailable { .. } => Some(ErrorCode::NoSeatsAvailable),
            ClientError::LicenseNotServed { .. } => Some(ErrorCode::LicenseNotServed),
            ClientError::NoQuorum { .. } => Some(ErrorCode::NoQuorum),
            ClientError::Rejected { code, .. } => Some(*code),
            ClientError::UnknownGrant => Some(ErrorCode::UnknownGrant),
            ClientError::ClockSetBack { .. } => Some(ErrorCode::ClockSetBack),
            ClientError::NoServerReachable { .. }
            | ClientError::SeatLost { .. }
            | ClientError::UntrustedAnswer { .. }
            | ClientError::DeadlineExceeded { .. }
            | ClientError::InvalidConfig { .. } => None,
        }
    }

    /// True when the same request may succeed later without any change
    /// (seats free up, a majority comes back, a server restarts).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ClientError::NoSeatsAvailable { .. }
                | ClientError::NoQuorum { .. }
                | ClientError::NoServerReachable { .. }
                | ClientError::DeadlineExceeded { .. }
        )
    }

    /// The error for one server's refusal, when it is the final word.
    pub(crate) fn from_server(feature: &str, code: ErrorCode, message: String) -> ClientError {
        match code {
            ErrorCode::NoSeatsAvailable => ClientError::NoSeatsAvailable {
                feature: feature.to_string(),
                message,
            },
            ErrorCode::LicenseNotServed => ClientError::LicenseNotServed { message },
            ErrorCode::NoQuorum | ErrorCode::GracePeriod => ClientError::NoQuorum { message },
            ErrorCode::UnknownGrant => ClientError::UnknownGrant,
            _ => ClientError::Rejected { code, message },
        }
    }
}

/// What to do after one server refused a checkout or a heartbeat.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Disposition {
    /// The whole pool would answer the same: stop and tell the program.
    Definitive,
    /// This server has no seats; another server of the pool may have some.
    NoSeats,
    /// This server may not issue now (no majority, grace period).
    NoQuorum,
    /// Something local to this server or this moment: try the next one.
    TryNext,
}

pub(crate) fn disposition(code: ErrorCode) -> Disposition {
    match code {
        ErrorCode::MalformedRequest
        | ErrorCode::BodyTooLarge
        | ErrorCode::InvalidField
        | ErrorCode::UnknownFeature
        | ErrorCode::InvalidCount
        | ErrorCode::CountAboveLimit
        | ErrorCode::VersionNotLicensed
        | ErrorCode::LicenseNotServed
        | ErrorCode::TemporaryNotAllowed
        | ErrorCode::TooManyDevices
        | ErrorCode::LicenseWithdrawn
        | ErrorCode::PolicyDenied
        // Every server judges the same idle time by the same policy.
        | ErrorCode::IdleTimeout
        // The queue is the pool's: every server gives the same place.
        | ErrorCode::Queued => Disposition::Definitive,
        ErrorCode::NoSeatsAvailable => Disposition::NoSeats,
        ErrorCode::NoQuorum | ErrorCode::GracePeriod | ErrorCode::NoLeader => Disposition::NoQuorum,
        // That server's clock was set back; another's may be right.
        ErrorCode::ClockSetBack => Disposition::TryNext,
        // A grant this server does not know or holds for someone else is what
        // fail-over exists for; the other codes are one server's trouble or a
        // server newer than this client. A refused proof too: a server given
        // another pool key by mistake refuses what the rest of the pool takes.
        ErrorCode::UnknownGrant
        | ErrorCode::GrantMismatch
        | ErrorCode::GrantProofInvalid
        | ErrorCode::TooManyGrants
        | ErrorCode::NotFound
        | ErrorCode::MethodNotAllowed
        | ErrorCode::WrongPool
        | ErrorCode::PoolFileRefused
        | ErrorCode::Unauthenticated
        | ErrorCode::Forbidden
        | ErrorCode::TooManyRequests
        | ErrorCode::SeatsInUse
        | ErrorCode::RaftOutOfRange
        | ErrorCode::SnapshotRefused
        | ErrorCode::BodyTimeout
        | ErrorCode::Internal
        | ErrorCode::Unknown => Disposition::TryNext,
    }
}

/// One server's failed answer to one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Failure {
    pub address: String,
    pub kind: FailureKind,
    /// The server's signature of its refusal, where it sent one.
    pub signed: Option<Box<tessera_proto::SignedAnswer>>,
    /// With `queued`: the program's place in the pool's queue.
    pub queue: Option<tessera_proto::QueuePlace>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum FailureKind {
    /// No usable answer: connection refused, timeout, or a body that is not Tessera's.
    NoAnswer(String),
    /// The server answered with an error body.
    Refused { code: ErrorCode, message: String },
    /// The server answered, but not in a way this program may trust
    /// ([`crate::Trust`]); the text says why.
    Untrusted(String),
}

impl Failure {
    pub fn no_answer(address: &str, text: impl Into<String>) -> Failure {
        Failure {
            address: address.to_string(),
            kind: FailureKind::NoAnswer(text.into()),
            signed: None,
            queue: None,
        }
    }

    /// The server at `address` answered with this error.
    pub fn refused(address: &str, code: ErrorCode, message: impl Into<String>) -> Failure {
        Failure {
            address: address.to_string(),
            kind: FailureKind::Refused {
                code,
                message: message.into(),
            },
            signed: None,
            queue: None,
        }
    }

    pub fn disposition(&self) -> Disposition {
        match &self.kind {
            FailureKind::NoAnswer(_) | FailureKind::Untrusted(_) => Disposition::TryNext,
            FailureKind::Refused { code, .. } => disposition(*code),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            FailureKind::NoAnswer(text) => write!(f, "{}: {text}", self.address),
            FailureKind::Untrusted(text) => write!(f, "{}: untrusted answer: {text}", self.address),
            FailureKind::Refused { code, message } => {
                write!(f, "{}: {message} ({code})", self.address)
            }
        }
    }
}

/// Every server's answer in one line, so that the error shows the whole pool.
pub(crate) fn describe(failures: &[Failure]) -> String {
    let parts: Vec<String> = failures.iter().map(Failure::to_string).collect();
    parts.join("; ")
}

/// The error of a request that no server granted, from every server's answer,
/// in the order tried. A definitive refusal is not expected here: callers
/// return it as soon as it arrives.
pub(crate) fn pool_error(feature: &str, failures: Vec<Failure>) -> ClientError {
    let has = |wanted: Disposition| failures.iter().any(|f| f.disposition() == wanted);
    let message = describe(&failures);
    // Seats taken is the answer a person can act on best, even when some other
    // servers were down: the servers that answered are full.
    if has(Disposition::NoSeats) {
        return ClientError::NoSeatsAvailable {
            feature: feature.to_string(),
            message,
        };
    }
    if has(Disposition::NoQuorum) {
        return ClientError::NoQuorum { message };
    }
    if let Some(definitive) = failures
        .iter()
        .find(|f| f.disposition() == Disposition::Definitive)
    {
        if let FailureKind::Refused { code, message } = &definitive.kind {
            return ClientError::from_server(feature, *code, message.clone());
        }
    }
    if failures
        .iter()
        .any(|f| matches!(f.kind, FailureKind::Untrusted(_)))
    {
        return ClientError::UntrustedAnswer { message };
    }
    let last_error = if failures.is_empty() {
        "no server was tried".to_string()
    } else {
        message
    };
    ClientError::NoServerReachable {
        tried: failures.into_iter().map(|f| f.address).collect(),
        last_error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(address: &str, code: ErrorCode) -> Failure {
        Failure::refused(address, code, format!("{address} says {code}"))
    }

    #[test]
    fn pool_error_prefers_the_most_actionable_answer() {
        let down = Failure::no_answer("a:1", "connection refused");
        let cases: Vec<(Vec<Failure>, Option<ErrorCode>)> = vec![
            (vec![down.clone()], None),
            (
                vec![down.clone(), refused("b:1", ErrorCode::NoQuorum)],
                Some(ErrorCode::NoQuorum),
            ),
            (
                vec![refused("a:1", ErrorCode::GracePeriod)],
                Some(ErrorCode::NoQuorum),
            ),
            (
                vec![
                    refused("a:1", ErrorCode::NoQuorum),
                    refused("b:1", ErrorCode::NoSeatsAvailable),
                    down.clone(),
                ],
                Some(ErrorCode::NoSeatsAvailable),
            ),
            (vec![refused("a:1", ErrorCode::Internal)], None),
        ];
        for (failures, expected) in cases {
            let error = pool_error("cad", failures.clone());
            assert_eq!(error.code(), expected, "{failures:?} -> {error:?}");
            for failure in &failures {
                assert!(error.to_string().contains(&failure.address), "{error}");
            }
        }
    }

    #[test]
    fn unreachable_pool_lists_every_address_tried() {
        let error = pool_error(
            "cad",
            vec![
                Failure::no_answer("a:1", "connection refused"),
                Failure::no_answer("b:1", "timed out"),
            ],
        );
        let ClientError::NoServerReachable { tried, last_error } = error else {
            panic!("expected NoServerReachable");
        };
        assert_eq!(tried, ["a:1", "b:1"]);
        assert!(last_error.contains("timed out"));
    }

    #[test]
    fn only_refusals_the_whole_pool_shares_are_definitive() {
        assert_eq!(
            disposition(ErrorCode::LicenseNotServed),
            Disposition::Definitive
        );
        assert_eq!(
            disposition(ErrorCode::CountAboveLimit),
            Disposition::Definitive
        );
        assert_eq!(disposition(ErrorCode::UnknownGrant), Disposition::TryNext);
        assert_eq!(disposition(ErrorCode::Unknown), Disposition::TryNext);
        assert_eq!(disposition(ErrorCode::GracePeriod), Disposition::NoQuorum);
    }
}
