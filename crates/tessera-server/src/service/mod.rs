//! The request service: owns a client's checkout, heartbeat and check-in
//! from the parsed request to the answer.
//!
//! A checkout or heartbeat goes: issue ([`crate::issuer`]); when this server
//! is short of seats, borrow through the leader and issue once more
//! ([`borrow`]); make a new grant durable ([`crate::store`]); answer, or
//! roll back when the store failed or the client stopped waiting. Once a
//! grant stands, the pool is told of the copies it made stale
//! ([`crate::copies`]).

mod borrow;

pub use borrow::Need;

use std::sync::Arc;

use tessera_proto::{self as proto, ErrorCode};

use crate::issuer::{Issued, Now, SeatRequest};
use crate::refusal::Refusal;
use crate::App;

/// What a client asks for seats with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ask {
    Checkout,
    Heartbeat,
}

impl Ask {
    /// The endpoint, as `/metrics` counts requests.
    fn endpoint(self) -> &'static str {
        match self {
            Ask::Checkout => "checkout",
            Ask::Heartbeat => "heartbeat",
        }
    }
}

/// When a request arrived and how long its client waits for the answer.
#[derive(Clone, Copy, Debug)]
pub struct Deadline {
    received_ms: u64,
    answer_within_ms: Option<u32>,
}

impl Deadline {
    pub fn from(app: &App, answer_within_ms: Option<u32>) -> Deadline {
        Deadline {
            received_ms: app.clock.now_ms(),
            answer_within_ms,
        }
    }

    /// By how much the client's wait has run out at `now_ms`, if it has. The
    /// client started waiting before the request arrived, so this is never
    /// early.
    fn passed_by_ms(&self, now_ms: u64) -> Option<u64> {
        let elapsed_ms = now_ms.saturating_sub(self.received_ms);
        let within_ms = u64::from(self.answer_within_ms?);
        (elapsed_ms > within_ms).then(|| elapsed_ms - within_ms)
    }
}

impl App {
    /// A checkout: new seats under a new grant id.
    pub async fn checkout(
        self: &Arc<Self>,
        request: SeatRequest,
        deadline: Deadline,
    ) -> Result<Issued, Refusal> {
        let grant_id = (self.grant_ids)();
        self.seats(Ask::Checkout, grant_id, request, deadline).await
    }

    /// A heartbeat: renews a grant held here, or converts one held elsewhere
    /// (fail-over) into a grant of this server with the same id.
    pub async fn heartbeat(
        self: &Arc<Self>,
        grant_id: String,
        request: SeatRequest,
        deadline: Deadline,
    ) -> Result<Issued, Refusal> {
        self.seats(Ask::Heartbeat, grant_id, request, deadline)
            .await
    }

    /// Issues (borrowing when short), persists and answers.
    async fn seats(
        self: &Arc<Self>,
        ask: Ask,
        grant_id: String,
        request: SeatRequest,
        deadline: Deadline,
    ) -> Result<Issued, Refusal> {
        let issued = self
            .issue_with_borrowing(&request, deadline, |app| {
                let now = Now {
                    ms: app.clock.now_ms(),
                    unix_ms: app.clock.unix_ms(),
                };
                let (grant_id, request) = (grant_id.clone(), request.clone());
                let mut issuer = app.issuer();
                match ask {
                    Ask::Checkout => issuer.checkout(grant_id, request, now),
                    Ask::Heartbeat => issuer.heartbeat(grant_id, request, now),
                }
            })
            .await;
        self.answer(ask.endpoint(), issued, deadline).await
    }

    /// A check-in: frees the grant's seats here and, through the pool, any
    /// copy of it on another server (from before a fail-over). Returns the
    /// seats freed.
    pub async fn checkin(&self, grant_id: &str, client_id: &str) -> Result<u32, Refusal> {
        let result = self.issuer().checkin(grant_id, client_id);
        self.count("checkin", &result);
        let released = result?;
        let released_seats = released.seats;
        self.supersede(&released.grant_id, proto::SupersededGrant::CHECKED_IN);
        self.released(vec![released]).await;
        Ok(released_seats)
    }

    /// Counts a request by endpoint and outcome (`ok` or the error code).
    fn count<T>(&self, endpoint: &'static str, result: &Result<T, Refusal>) {
        let outcome = match result {
            Ok(_) => "ok",
            Err(refusal) => refusal.code.as_str(),
        };
        let mut counts = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        *counts.entry((endpoint, outcome)).or_default() += 1;
    }

    /// Persists an issued grant (if new), counts the outcome, answers.
    async fn answer(
        &self,
        endpoint: &'static str,
        issued: Result<Issued, Refusal>,
        deadline: Deadline,
    ) -> Result<Issued, Refusal> {
        let result = match issued {
            Ok(issued) => self.persist(issued, deadline).await,
            Err(refusal) => Err(refusal),
        };
        self.count(endpoint, &result);
        result
    }

    /// Makes a new grant durable before it is answered; undoes it if that
    /// fails, or if the client has stopped waiting by then. Once the grant
    /// stands, the pool is told of the copies it makes stale.
    async fn persist(&self, mut issued: Issued, deadline: Deadline) -> Result<Issued, Refusal> {
        if let Some(stored) = issued.to_store.take() {
            if let Err(err) = self.store.put(issued.grant_id.clone(), stored).await {
                self.issuer().rollback(&issued.grant_id);
                return Err(Refusal::new(
                    ErrorCode::Internal,
                    format!("the grant could not be stored durably, so it was not issued: {err}"),
                ));
            }
            if let Some(late_ms) = deadline.passed_by_ms(self.clock.now_ms()) {
                // No seat for a client that has given up: it would hold
                // seats nobody uses for a whole lease.
                let undone = self.issuer().rollback(&issued.grant_id);
                self.released(undone.into_iter().collect()).await;
                return Err(Refusal::new(
                    ErrorCode::NoSeatsAvailable,
                    format!(
                        "the seats were found {late_ms} ms after the client stopped waiting; \
                         they were given back"
                    ),
                ));
            }
        }
        if let Some(renewal) = issued.supersedes_renewal {
            self.supersede(&issued.grant_id, renewal);
        }
        Ok(issued)
    }
}
