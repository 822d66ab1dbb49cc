//! The shared state of a running server ([`App`]) and the few things every
//! part of it does with that state: lock the issuer, free seats, evaluate
//! the license codes.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use tessera_core::{CivilDate, ControlState, LicenseTable, SharedText};

use crate::clock::Clock;
use crate::config::{self, Limits};
use crate::copies;
use crate::issuer::{self, Issuer};
use crate::pool::Pool;
use crate::seams::{self};
use crate::store::Store;

/// Shared state of a running server.
pub struct App {
    pub(crate) issuer: Mutex<Issuer>,
    pub(crate) store: Store,
    pub(crate) pool: Arc<Pool>,
    /// The pool's `server_id` of this server, shared into every grant it
    /// answers.
    pub(crate) server_id: SharedText,
    /// The pool's id, shared into every signed answer.
    pub(crate) pool_id: SharedText,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) limits: Limits,
    pub(crate) hostid: SharedText,
    pub(crate) address: String,
    pub(crate) started_ms: u64,
    /// What `/v1/status` shows a caller without a credential.
    pub(crate) public_status: config::PublicStatus,
    /// Requests in flight per source address.
    pub(crate) in_flight: crate::api::per_address::InFlight,
    /// Client requests in flight, REST and framed alike
    /// (`limits.requests_in_flight_max`).
    pub(crate) client_requests: Arc<tokio::sync::Semaphore>,
    /// Request frames answered (the framed protocol), for `/metrics`.
    pub(crate) framed_requests: std::sync::atomic::AtomicU64,
    pub(crate) vendors: Vec<tessera_core::VendorPublicKey>,
    pub(crate) data_dir: PathBuf,
    /// Where the installed pool file is written.
    pub(crate) disk: Arc<dyn seams::Disk>,
    /// A simulator's checker, told of broken invariants.
    pub(crate) observer: Option<Arc<dyn seams::Observer>>,
    /// Requests answered, by endpoint and outcome, for `/metrics`.
    pub(crate) requests: Mutex<std::collections::BTreeMap<(&'static str, &'static str), u64>>,
    /// Checkouts refused, by feature (only those this server serves) and
    /// error code, for the status and the dashboard.
    pub(crate) denials: Mutex<std::collections::HashMap<(String, tessera_proto::ErrorCode), u64>>,
    pub(crate) timing: config::Timing,
    /// When a new grant reaches the disk (`[store] sync`).
    pub(crate) store_sync: config::StoreSync,
    pub(crate) borrowing: std::collections::BTreeMap<String, tessera_core::BorrowPolicy>,
    /// One borrower per feature at a time.
    pub(crate) borrow_locks: Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Per feature: no borrow ahead of need before this (the last found nothing).
    pub(crate) borrow_quiet: Mutex<std::collections::HashMap<String, tokio::time::Instant>>,
    pub(crate) grant_ids: seams::IdSource,
    pub(crate) mutations: seams::Mutations,
    /// Stale copies of grants to tell the pool about with the next report.
    pub(crate) superseded: Mutex<copies::Outbox>,
    /// Bumped whenever seats may have come free here (a control state taken,
    /// a check-in, a lapse, a stale copy dropped): checkouts waiting for
    /// seats wait on it.
    pub(crate) seats_changed: tokio::sync::watch::Sender<u64>,
    /// How regularly the quota lease was renewed, for `/metrics`.
    pub(crate) quota_renewals: Mutex<crate::quota::QuotaRenewals>,
    /// The pool's shared key: proves grants to their holders (`service`).
    pub(crate) pool_key: tessera_core::PoolKey,
    /// Signs what this server answers programs (`answer`), and its public
    /// half in base64 as answers carry it.
    pub(crate) answer_key: tessera_core::answer::ServerSecretKey,
    pub(crate) answer_key_public: SharedText,
    /// The answer key's id, which every canonical form names.
    pub(crate) answer_key_id: String,
    /// Signs the answers of framed `tessera/2` connections in batches.
    pub(crate) batch_signer: crate::answer::BatchSigner,
    /// The latest time this server trusted (`crate::clock_mark`).
    pub(crate) clock_mark: Mutex<crate::clock_mark::ClockMark>,
    /// On a master server (seed 003): signs the certificates of its VID.
    pub(crate) master: Option<crate::master::MasterSigner>,
    /// On a production server bound to a VID: where its certificate stands.
    pub(crate) vid: Mutex<Option<crate::vid::VidHold>>,
    /// Told when the VIDs this server may serve change, so the license
    /// table is evaluated again (`background::follow_control`).
    pub(crate) identity_changed: tokio::sync::Notify,
    /// Grants claimed in the pool's log and not yet issued or given up
    /// (`crate::claims`): not claims to forget.
    pub(crate) claiming: Mutex<std::collections::HashSet<String>>,
    /// Usage events, for `tessera report` (`crate::report_log`).
    pub(crate) report: crate::report_log::ReportLog,
    /// The log index of the control state the issuer enforces, sent each
    /// time it takes a new one (`background::follow_control`): a donor
    /// answers requests from that state (`crate::balance`), and the quota
    /// lease is renewed only once it is as new as the leader requires
    /// (`crate::quota`).
    pub(crate) control_taken: tokio::sync::watch::Sender<u64>,
    /// How late the issuer takes each new control state
    /// ([`seams::Seams::control_lag_ms`]).
    pub(crate) control_lag_ms: Arc<std::sync::atomic::AtomicU64>,
}

impl App {
    /// Wakes the checkouts waiting for seats of this server.
    ///
    /// With no checkout waiting, it touches nothing shared: every check-in
    /// passes here, and a send takes the channel's locks even when no one
    /// listens. A checkout that starts waiting later subscribes before it
    /// looks at the seats, under the issuer's lock that the change was made
    /// under, so it sees the freed seats or this count of its subscription.
    pub(crate) fn seats_freed(&self) {
        if self.seats_changed.receiver_count() == 0 {
            return;
        }
        self.seats_changed
            .send_modify(|generation| *generation += 1);
    }

    /// Grants that left the key table (checked in, lapsed, dropped as stale,
    /// undone): wakes the checkouts waiting for their seats, then deletes
    /// them from the store.
    pub(crate) async fn released(&self, released: Vec<issuer::Released>) {
        if released.is_empty() {
            return;
        }
        self.seats_freed();
        for grant in released {
            self.store
                .delete(grant.grant_id, grant.issued_unix_ms)
                .await;
        }
    }

    /// The issuer, locked. Never held across an `.await`. A change made
    /// through it is checked when the lock is let go (see [`IssuerLock`]).
    pub(crate) fn issuer(&self) -> IssuerLock<'_> {
        // A panic while holding the lock would be a bug; the state is still
        // the last consistent one, since every method applies all or nothing.
        let guard = self
            .issuer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        IssuerLock {
            guard,
            changed: false,
            app: self,
        }
    }

    pub(crate) fn licenses_for(&self, control: &ControlState) -> LicenseTable {
        let today = CivilDate::from_unix_ms(self.clock.unix_ms());
        let codes = control
            .pool()
            .map(|p| p.codes.as_slice())
            .unwrap_or_default();
        let vids: Vec<String> = self
            .vid
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|hold| hold.held())
            .map(|hold| hold.vid.clone())
            .collect();
        let identity = tessera_core::Identity {
            hostid: &self.hostid,
            vids: &vids,
        };
        LicenseTable::evaluate_for(codes, &self.vendors, identity, today)
    }

    /// Looks at the wall clock against the mark: a clock set back stops
    /// the issuer until it is right again.
    pub(crate) fn watch_clock(&self) {
        let now = self.clock.unix_ms();
        let verdict = {
            let mut mark = self.clock_mark.lock().unwrap_or_else(|p| p.into_inner());
            mark.observe(self.disk.as_ref(), now).map(str::to_string)
        };
        let mut issuer = self.issuer();
        if issuer.clock_set_back() != verdict.as_deref() {
            issuer.set_clock_set_back(verdict);
        }
    }

    /// Records the chain a new certificate gives this server's answers
    /// (master licenses, certificate); [`Self::set_vid`] follows.
    pub(crate) fn set_vid_chain(&self, chain: tessera_proto::AnswerChain) {
        let mut vid = self.vid.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(hold) = vid.as_mut() {
            hold.chain = Some(chain);
        }
    }

    /// Records where the VID stands; the license table is evaluated again
    /// (a renewal too: cheap at a renewal every quarter lease).
    pub(crate) fn set_vid(
        &self,
        valid_until: Option<tokio::time::Instant>,
        master: Option<String>,
        reason: Option<String>,
    ) {
        {
            let mut vid = self.vid.lock().unwrap_or_else(|p| p.into_inner());
            let Some(hold) = vid.as_mut() else {
                return;
            };
            let was_held = hold.held();
            if let Some(reason) = &reason {
                if hold.reason.as_ref() != Some(reason) {
                    tracing::warn!("VID {}: {reason}", hold.vid);
                }
            } else if !was_held {
                tracing::info!(
                    "VID {}: certificate from {}",
                    hold.vid,
                    master.as_deref().unwrap_or("a master")
                );
            }
            if valid_until.is_none() {
                hold.chain = None;
            }
            hold.valid_until = valid_until;
            hold.master = master.or(hold.master.take());
            hold.reason = reason;
        }
        self.identity_changed.notify_one();
    }
}

/// Grants above which the per-change check counts only the tables, not
/// every grant: a debug build must stay usable with many grants.
const INVARIANT_GRANTS_MAX: usize = 10_000;

/// The locked issuer. After a change (any `&mut` use), when let go, it
/// checks the issuer's invariants ([`Issuer::check_invariants`]) in debug
/// builds and under a simulator; a broken one is a bug: a debug build stops
/// on it, a simulator's observer records it as a violation.
pub(crate) struct IssuerLock<'a> {
    guard: MutexGuard<'a, Issuer>,
    changed: bool,
    app: &'a App,
}

impl std::ops::Deref for IssuerLock<'_> {
    type Target = Issuer;

    fn deref(&self) -> &Issuer {
        &self.guard
    }
}

impl std::ops::DerefMut for IssuerLock<'_> {
    fn deref_mut(&mut self) -> &mut Issuer {
        self.changed = true;
        &mut self.guard
    }
}

impl Drop for IssuerLock<'_> {
    fn drop(&mut self) {
        let observer = self.app.observer.as_ref();
        if !self.changed || !(cfg!(debug_assertions) || observer.is_some()) {
            return;
        }
        let every_grant = self.guard.grants_total() <= INVARIANT_GRANTS_MAX;
        let Err(broken) = self.guard.check_invariants(every_grant) else {
            return;
        };
        let server = &self.app.pool.server_id;
        match observer {
            Some(observer) => observer.invariant_broken(server, &broken),
            None if !std::thread::panicking() => {
                panic!("server `{server}`: issuer invariant broken: {broken}")
            }
            None => {}
        }
    }
}
