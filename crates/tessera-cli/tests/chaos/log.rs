//! The clients' own log: what each program believed about its seats, in its
//! own clock (tokio's monotonic `Instant`, the clock of
//! `SeatGuard::valid_until`). Nothing in it comes from a server's status.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tessera_client::{ClientError, SeatGuard};
use tokio::time::Instant;

/// Most records one run may write: a bound on memory whatever the run's length
/// (a 120 s run writes well under 100,000).
const RECORDS_MAX: usize = 2_000_000;

#[derive(Clone, Debug)]
pub struct Record {
    pub client: usize,
    /// When the client saw it, by its own clock.
    pub at: Instant,
    pub what: What,
}

#[derive(Clone, Debug)]
pub enum What {
    /// A checkout returned this grant; the client believes in the seat from
    /// `at` until `valid_until` unless it renews.
    Granted {
        grant_id: String,
        server_id: String,
        valid_until: Instant,
    },
    /// The guard's heartbeat moved the grant to another server.
    FailedOver {
        grant_id: String,
        from: String,
        to: String,
    },
    /// The client stopped believing in the seat at `at`, or at `valid_until`
    /// (its last renewal's send time plus the lease) if that came first.
    Ended {
        grant_id: String,
        valid_until: Instant,
        how: End,
    },
    /// A checkout that every server refused or that reached no server.
    CheckoutFailed {
        /// The server's error code, or the SDK's kind when no server answered.
        kind: &'static str,
        /// The whole message of a refusal a program cannot retry (it would
        /// stop); retryable ones are many and alike, so only their kind is kept.
        final_message: Option<String>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    /// `SeatGuard::release` was called (at the end of the hold, or at the end of the run).
    Released,
    /// The guard was dropped without `release`: it checks in on its own.
    Dropped,
    /// The guard published `SeatState::Lost`.
    Lost { reason: String },
}

/// Shared by every client; appends only.
#[derive(Clone)]
pub struct Log {
    records: Arc<Mutex<Vec<Record>>>,
    /// Seats believed held now: one per `Granted` not yet `Ended`.
    held_now: Arc<AtomicUsize>,
}

impl Log {
    pub fn new() -> Log {
        Log {
            records: Arc::new(Mutex::new(Vec::new())),
            held_now: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Record>> {
        // Every push is whole: a panicking client leaves a sound log.
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn push(&self, client: usize, at: Instant, what: What) {
        let mut records = self.lock();
        assert!(
            records.len() < RECORDS_MAX,
            "the log reached {RECORDS_MAX} records; shorten the run"
        );
        records.push(Record { client, at, what });
    }

    pub fn granted(&self, client: usize, seat: &SeatGuard, at: Instant) {
        self.held_now.fetch_add(1, Ordering::SeqCst);
        let what = What::Granted {
            grant_id: seat.grant_id(),
            server_id: seat.server_id(),
            valid_until: seat.valid_until(),
        };
        self.push(client, at, what);
    }

    pub fn failed_over(&self, client: usize, grant_id: String, from: String, to: String) {
        let what = What::FailedOver { grant_id, from, to };
        self.push(client, Instant::now(), what);
    }

    pub fn ended(&self, client: usize, seat: &SeatGuard, at: Instant, how: End) {
        let what = What::Ended {
            grant_id: seat.grant_id(),
            valid_until: seat.valid_until(),
            how,
        };
        self.push(client, at, what);
        self.held_now.fetch_sub(1, Ordering::SeqCst);
    }

    pub fn checkout_failed(&self, client: usize, at: Instant, error: &ClientError) {
        let kind = match error.code() {
            Some(code) => code.as_str(),
            None if matches!(error, ClientError::NoServerReachable { .. }) => "no_server_reachable",
            None => "other",
        };
        let what = What::CheckoutFailed {
            kind,
            final_message: (!error.is_retryable()).then(|| error.to_string()),
        };
        self.push(client, at, what);
    }

    pub fn held_now(&self) -> usize {
        self.held_now.load(Ordering::SeqCst)
    }

    /// Servers that granted a checkout at or after `since`.
    pub fn servers_granting_since(&self, since: Instant) -> std::collections::BTreeSet<String> {
        self.lock()
            .iter()
            .rev()
            .filter(|record| record.at >= since)
            .filter_map(|record| match &record.what {
                What::Granted { server_id, .. } => Some(server_id.clone()),
                _ => None,
            })
            .collect()
    }

    pub fn records(&self) -> Vec<Record> {
        self.lock().clone()
    }
}
