//! [`Client`]: the requests a program makes to the pool, each tried server by server.

use std::sync::Arc;

use tessera_proto::{
    CheckinRequest, CheckinResponse, CheckoutRequest, ErrorCode, Grant, HeartbeatRequest, Proof,
    QueueAsk, QueuePlace, StatusResponse, MAX_SEATS_PER_REQUEST,
};
use tessera_transport::{FramedTransport, HttpTransport, ReqwestOptions, ReqwestTransport};
use tokio::time::Instant;

use crate::config::{check_field, ClientConfig, Protocol};
use crate::error::{describe, pool_error, ClientError, Disposition, Failure, FailureKind};
use crate::guard::{check_grant, lease_duration, SeatGuard};
use crate::http::{self, STATUS_ANSWER_BYTES_MAX};
use crate::trust::Checker;

/// Connections kept open per server between requests: a program heartbeats one
/// or a few grants, so a handful covers it.
const IDLE_CONNECTIONS_PER_SERVER_MAX: usize = 4;
/// How often a program waiting in the queue asks again (well inside the
/// servers' hold of a place, `PLACE_HOLD_MS`, 10 s).
const QUEUE_POLL: std::time::Duration = std::time::Duration::from_millis(500);

/// A handle to the pool. Cheap to clone: clones share one transport (and so
/// one connection pool).
#[derive(Clone, Debug)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: ClientConfig,
    transport: Arc<dyn HttpTransport>,
    checker: Checker,
}

impl Client {
    /// A client for this configuration, over TLS checking the servers as
    /// [`ClientConfig::tls`] says: checkouts, heartbeats and check-ins in
    /// frames ([`FramedTransport`]) unless [`ClientConfig::protocol`] says
    /// REST, everything else over HTTP/1.1 ([`ReqwestTransport`]). Fails only on a configuration that cannot work
    /// (no servers, an address that is not `host:port`, an empty or oversized
    /// field).
    pub fn new(config: ClientConfig) -> Result<Client, ClientError> {
        config.validate()?;
        let options = ReqwestOptions {
            connect_timeout: config.connect_timeout,
            idle_connections_per_server_max: IDLE_CONNECTIONS_PER_SERVER_MAX,
            tls: config.tls.resolve()?,
        };
        let invalid = |message| ClientError::InvalidConfig { message };
        let framed = match config.protocol {
            Protocol::Framed => FramedTransport::new(options.clone()).map_err(invalid)?,
            Protocol::Rest => None,
        };
        let transport: Arc<dyn HttpTransport> = match framed {
            Some(framed) => Arc::new(framed),
            None => Arc::new(ReqwestTransport::new(options).map_err(invalid)?),
        };
        Client::with_transport(config, transport)
    }

    /// A client for this configuration whose requests all go through
    /// `transport` (the deterministic simulator's network, a test double).
    /// Validates the configuration as [`Client::new`] does. Each request
    /// carries [`ClientConfig::request_timeout`]; `connect_timeout` is the
    /// transport's own business.
    pub fn with_transport(
        config: ClientConfig,
        transport: Arc<dyn HttpTransport>,
    ) -> Result<Client, ClientError> {
        config.validate()?;
        let checker = Checker::new(&config);
        Ok(Client {
            inner: Arc::new(Inner {
                config,
                transport,
                checker,
            }),
        })
    }

    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    pub(crate) fn transport(&self) -> &dyn HttpTransport {
        &*self.inner.transport
    }

    pub(crate) fn checker(&self) -> &Checker {
        &self.inner.checker
    }

    /// Checks out `count` seats of `feature` for this program's `version`.
    ///
    /// Tries the configured servers in order. A server that is down, has no
    /// quorum, is in its grace period or has no seats left passes the request
    /// to the next one; a refusal the whole pool shares (unknown feature,
    /// version not licensed, license not served, …) returns at once.
    ///
    /// The returned guard heartbeats in the background and checks the seats
    /// in when dropped or [released](SeatGuard::release). Call it from within
    /// a tokio runtime; the guard's background work runs on that runtime.
    pub async fn checkout(
        &self,
        feature: &str,
        version: &str,
        count: u32,
    ) -> Result<SeatGuard, ClientError> {
        match self.ask_seats(feature, version, count, None).await? {
            Ok(guard) => Ok(guard),
            Err(place) => Err(ClientError::Rejected {
                code: ErrorCode::Queued,
                message: format!("queued unasked, {} of {}", place.position, place.waiting),
            }),
        }
    }

    /// Checks out as [`Client::checkout`] does, but when no seat is free
    /// waits in the pool's queue for up to `wait`: seats go to waiting
    /// programs first come first served, pool-wide, and a program keeps its
    /// place when the server it asked dies (it asks the next with its
    /// ticket). `on_place` is told the program's place whenever it changes.
    /// After `wait`, [`ClientError::NoSeatsAvailable`]; the place lapses
    /// on the servers soon after.
    pub async fn checkout_waiting(
        &self,
        feature: &str,
        version: &str,
        count: u32,
        wait: std::time::Duration,
        mut on_place: impl FnMut(&QueuePlace) + Send,
    ) -> Result<SeatGuard, ClientError> {
        let until = Instant::now() + wait;
        let mut ticket: Option<String> = None;
        let mut last: Option<(u32, u32)> = None;
        loop {
            let ask = QueueAsk {
                ticket: ticket.clone(),
                leave: false,
            };
            let waited = match self.ask_seats(feature, version, count, Some(ask)).await {
                Ok(Ok(guard)) => return Ok(guard),
                Ok(Err(place)) => {
                    if last != Some((place.position, place.waiting)) {
                        last = Some((place.position, place.waiting));
                        on_place(&place);
                    }
                    ticket = Some(place.ticket);
                    None
                }
                Err(err) if err.is_retryable() => Some(err),
                Err(err) => return Err(err),
            };
            let now = Instant::now();
            if now >= until {
                if ticket.is_some() {
                    // Out of the queue at once, rather than keep those
                    // behind waiting until the place lapses.
                    let leave = QueueAsk {
                        ticket: ticket.clone(),
                        leave: true,
                    };
                    let _ = self.ask_seats(feature, version, count, Some(leave)).await;
                }
                return Err(waited.unwrap_or_else(|| ClientError::NoSeatsAvailable {
                    feature: feature.to_string(),
                    message: format!(
                        "no seat was free within {} ms; the program was {} in the queue",
                        wait.as_millis(),
                        last.map_or("nowhere".to_string(), |(p, n)| format!("{p} of {n}"))
                    ),
                }));
            }
            tokio::time::sleep(QUEUE_POLL.min(until - now)).await;
        }
    }

    /// One round of the servers for a checkout: the seats, or, where it
    /// asked to wait, its place in the queue.
    async fn ask_seats(
        &self,
        feature: &str,
        version: &str,
        count: u32,
        queue: Option<QueueAsk>,
    ) -> Result<Result<SeatGuard, QueuePlace>, ClientError> {
        check_checkout(feature, version, count)?;
        self.checker().check_clock()?;
        let config = self.config();
        let mut request = CheckoutRequest {
            client_id: config.client_id.as_str().into(),
            user: config.user.as_str().into(),
            host: config.host.as_str().into(),
            display: config.display.as_deref().map(Into::into),
            feature: feature.into(),
            version: version.into(),
            count,
            // The server answers within our wait, a denial included.
            answer_within_ms: Some(crate::guard::wait_ms(config.request_timeout)),
            nonce: None,
            codes_held: self.checker().codes_held(feature),
            server_key: config.server_key.clone(),
            queue,
        };
        let mut failures = Vec::new();
        for address in &config.servers {
            // A fresh nonce per server: one server's answer does not check
            // as another request's.
            request.nonce = self.checker().nonce();
            // The lease runs from the send time, not the answer's arrival: the
            // server's own lease started no earlier than this instant.
            let send_instant = Instant::now();
            let (answer, channel) =
                http::post_for_grant(self, address, "/checkout", &request).await;
            let channel = channel.as_deref();
            let answer =
                answer.map_err(|failure| self.checker().screen_refusal(&request, failure, channel));
            match answer {
                Ok(grant) => match usable_grant(&grant, &request, send_instant)
                    .map_err(|text| Failure::no_answer(address, text))
                    .and_then(|()| {
                        self.checker()
                            .check(&request, &grant, channel)
                            .map_err(|text| Failure {
                                kind: FailureKind::Untrusted(text),
                                ..Failure::no_answer(address, "")
                            })
                    }) {
                    Ok(()) => {
                        tracing::debug!(%address, grant_id = %grant.grant_id, "checked out");
                        return Ok(Ok(SeatGuard::start(
                            self.clone(),
                            request,
                            grant,
                            address.clone(),
                            send_instant,
                        )));
                    }
                    Err(failure) => {
                        // Given back: a grant this program does not use
                        // would hold its seats until its lease ran out.
                        self.forget(address, &grant.grant_id, &grant.proof).await;
                        failures.push(failure);
                    }
                },
                Err(Failure {
                    queue: Some(place),
                    kind:
                        FailureKind::Refused {
                            code: ErrorCode::Queued,
                            ..
                        },
                    ..
                }) if request.queue.is_some() => return Ok(Err(place)),
                Err(failure) if failure.disposition() == Disposition::Definitive => {
                    return Err(into_error(feature, failure));
                }
                Err(failure) => {
                    tracing::debug!(%failure, "checkout refused; trying the next server");
                    failures.push(failure);
                }
            }
        }
        Err(pool_error(feature, failures))
    }

    /// The status of the pool as seen by the first configured server that answers.
    pub async fn status(&self) -> Result<StatusResponse, ClientError> {
        let mut failures = Vec::new();
        for address in &self.config().servers {
            match http::get_json(
                self,
                address,
                "/status",
                Vec::new(),
                STATUS_ANSWER_BYTES_MAX,
            )
            .await
            {
                Ok(status) => return Ok(status),
                Err(failure) => failures.push(failure),
            }
        }
        Err(ClientError::NoServerReachable {
            last_error: describe(&failures),
            tried: failures.into_iter().map(|f| f.address).collect(),
        })
    }

    /// The whole pool's status: [`Client::status`] from the first server
    /// that answers, with every other server's own seats in use and grants
    /// merged in (`pool_wide`); servers that do not answer are listed in
    /// `unanswered`, and their figures are missing.
    pub async fn pool_status(&self) -> Result<StatusResponse, ClientError> {
        let first = self.status().await?;
        Ok(crate::pool_status::gather(self, first, Vec::new()).await)
    }

    /// Checks in the grant `grant_id` held by this client's id, with the
    /// `proof` its checkout answered ([`Grant::proof`]), trying the
    /// configured servers in order until one releases it. Returns the number
    /// of seats released. A [`SeatGuard`] checks itself in; this is for grants
    /// known only by id (a command-line `tessera checkin`). Checking in a grant
    /// that a live guard still heartbeats does not end it: the guard's next
    /// heartbeat makes a server convert it into a new grant.
    pub async fn checkin(&self, grant_id: &str, proof: &str) -> Result<u32, ClientError> {
        let invalid_field = |message| ClientError::Rejected {
            code: ErrorCode::InvalidField,
            message,
        };
        check_field("grant_id", grant_id).map_err(invalid_field)?;
        check_field("proof", proof).map_err(invalid_field)?;
        let proof = Proof(proof.to_string());
        self.checkin_on(&self.config().servers, grant_id, &proof)
            .await
    }

    /// One heartbeat to one server, without fail-over: what [`SeatGuard`]
    /// does on each renewal. Mostly useful for tests and tools.
    pub async fn heartbeat_once(
        &self,
        address: &str,
        request: &HeartbeatRequest,
    ) -> Result<Grant, ClientError> {
        let (answer, channel) = http::post_for_grant(self, address, "/heartbeat", request).await;
        self.checker()
            .screen(address, &request.as_checkout(), answer, channel.as_deref())
            .map_err(|failure| into_error(&request.feature, failure))
    }

    pub(crate) async fn checkin_on(
        &self,
        addresses: &[String],
        grant_id: &str,
        proof: &Proof,
    ) -> Result<u32, ClientError> {
        let request = CheckinRequest {
            grant_id: grant_id.into(),
            client_id: self.config().client_id.clone(),
            proof: proof.clone(),
        };
        let mut failures = Vec::new();
        for address in addresses {
            let answer: Result<CheckinResponse, Failure> =
                http::post_json(self, address, "/checkin", &request).await;
            match answer {
                Ok(released) => return Ok(released.released_seats),
                Err(failure) => failures.push(failure),
            }
        }
        Err(checkin_error(failures))
    }

    /// Gives back a grant this client will not use: left alone it would
    /// hold its seats until its lease ran out. Waited for (one request,
    /// bounded by the timeout), so that a program that exits next has
    /// given it back.
    async fn forget(&self, address: &str, grant_id: &str, proof: &Proof) {
        let addresses = [address.to_string()];
        if let Err(error) = self.checkin_on(&addresses, grant_id, proof).await {
            tracing::debug!(%error, "could not check in an unusable grant");
        }
    }
}

fn check_checkout(feature: &str, version: &str, count: u32) -> Result<(), ClientError> {
    let invalid_field = |message| ClientError::Rejected {
        code: ErrorCode::InvalidField,
        message,
    };
    check_field("feature", feature).map_err(invalid_field)?;
    check_field("version", version).map_err(invalid_field)?;
    if count == 0 || count > MAX_SEATS_PER_REQUEST {
        return Err(ClientError::Rejected {
            code: ErrorCode::InvalidCount,
            message: format!(
                "asked for {count} seats; ask for 1 to {MAX_SEATS_PER_REQUEST} seats at a time"
            ),
        });
    }
    Ok(())
}

/// A grant must be the one asked for and still valid when it arrives.
fn usable_grant(
    grant: &Grant,
    request: &CheckoutRequest,
    send_instant: Instant,
) -> Result<(), String> {
    check_grant(grant, &request.feature, request.count)?;
    if send_instant + lease_duration(grant) <= Instant::now() {
        return Err(format!(
            "answered after the {} ms lease had already run out; the network or the server is too slow",
            grant.lease_ms
        ));
    }
    Ok(())
}

fn into_error(feature: &str, failure: Failure) -> ClientError {
    match failure.kind {
        FailureKind::NoAnswer(text) => ClientError::NoServerReachable {
            last_error: format!("{}: {text}", failure.address),
            tried: vec![failure.address],
        },
        FailureKind::Untrusted(text) => ClientError::UntrustedAnswer {
            message: format!("{}: {text}", failure.address),
        },
        FailureKind::Refused { code, message } => {
            ClientError::from_server(feature, code, format!("{}: {message}", failure.address))
        }
    }
}

/// A server that did not answer may be the one holding the grant, so that
/// outweighs the others' "unknown grant".
fn checkin_error(failures: Vec<Failure>) -> ClientError {
    if failures
        .iter()
        .any(|f| matches!(f.kind, FailureKind::NoAnswer(_)))
    {
        return ClientError::NoServerReachable {
            last_error: describe(&failures),
            tried: failures.into_iter().map(|f| f.address).collect(),
        };
    }
    let refusal = failures.into_iter().find(|f| {
        !matches!(
            f.kind,
            FailureKind::Refused {
                code: ErrorCode::UnknownGrant,
                ..
            }
        )
    });
    match refusal {
        Some(failure) => into_error("", failure),
        None => ClientError::UnknownGrant,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(address: &str, code: ErrorCode) -> Failure {
        Failure::refused(address, code, "no")
    }

    #[test]
    fn checkin_error_prefers_a_silent_server_over_unknown_grant() {
        let unknown = refused("a:1", ErrorCode::UnknownGrant);
        let down = Failure::no_answer("b:1", "connection refused");
        let mismatch = refused("b:1", ErrorCode::GrantMismatch);
        let cases = [
            (vec![unknown.clone()], Some(ErrorCode::UnknownGrant)),
            (vec![unknown.clone(), down], None),
            (vec![unknown, mismatch], Some(ErrorCode::GrantMismatch)),
        ];
        for (failures, expected) in cases {
            assert_eq!(checkin_error(failures).code(), expected);
        }
    }

    #[test]
    fn impossible_checkouts_are_refused_before_any_request() {
        let cases = [
            ("", "1.0", 1, ErrorCode::InvalidField),
            ("cad", "", 1, ErrorCode::InvalidField),
            ("cad", "1.0", 0, ErrorCode::InvalidCount),
            (
                "cad",
                "1.0",
                MAX_SEATS_PER_REQUEST + 1,
                ErrorCode::InvalidCount,
            ),
        ];
        for (feature, version, count, expected) in cases {
            let error = check_checkout(feature, version, count).expect_err("must be refused");
            assert_eq!(error.code(), Some(expected));
        }
        assert_eq!(check_checkout("cad", "1.0", 1), Ok(()));
    }
}
