//! License balancing (seed 002): a server short of seats borrows through the
//! leader, and a server asked for seats gives only what no client holds.
//!
//! - A checkout (or fail-over conversion) that finds too few seats asks the
//!   leader for them and waits, bounded by `borrow_wait_ms`, before it is
//!   denied. A grant that lifts in-use / allocation above the borrowing
//!   threshold asks for a batch in the background.
//! - The leader searches, in order: the free pool; the parked seats of
//!   removed servers and the allocations of servers silent for longer than
//!   [`App::reassign_after_ms`]; its own spare; the live followers' spare.
//!   The first two move at once. The last two are requests: the donor holds
//!   the seats back as soon as it applies the request, then answers with
//!   what it can spare ([`tessera_core::FeatureAllocation::answers`]).
//! - Every server answers the requests and targets addressed to it after
//!   each applied change and on a timer; the leader cancels requests left
//!   unanswered.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tessera_core::borrow_plan::{
    plan_borrow, BorrowKind, BorrowPlan, BorrowRequest, LeaderSeats, Offer, PoolView,
};
use tessera_core::{ControlCommand, ControlOutcome, FeatureAllocation};
use tessera_proto::{BorrowAnswer, BorrowAsk, ErrorCode};

use crate::issuer::{IssueError, Issuer};
use crate::pool::network::{PeerError, PEER_TIMEOUT};
use crate::App;

/// How often every server looks at the requests and targets addressed to it.
const ANSWER_INTERVAL: Duration = Duration::from_millis(200);
/// After a borrow ahead of need found nothing, the next one waits this long.
const BORROW_AHEAD_PAUSE: Duration = Duration::from_secs(1);
/// An answer not applied within this is sent again.
const ANSWER_RESEND_MS: u64 = 1_000;
/// The least time kept between the end of a wait for seats and the moment
/// the client stops waiting: for the store's write and the way back.
const ANSWER_MARGIN_MS_MIN: u64 = 50;

/// How a wait for borrowed seats ended.
enum Wait {
    /// This server can issue the seats now.
    Ready,
    /// It cannot, within the wait; `pool_available` is what the pool could
    /// give now (this server's spare included), where the leader said.
    Short { pool_available: Option<u32> },
}

/// The issuer's denial, told with what the pool as a whole could give.
fn short_of_seats(
    denial: IssueError,
    feature: &str,
    count: u32,
    pool_available: Option<u32>,
    here: u32,
) -> IssueError {
    let message = match pool_available {
        Some(seats) if seats < count => format!(
            "{count} seats of `{feature}` requested; the pool can give {seats} now, {here} of \
             them on this server"
        ),
        _ => format!(
            "{}; the other servers could not free enough in time",
            denial.message
        ),
    };
    IssueError::new(denial.code, message)
}

impl App {
    /// The borrowing threshold (percent) and batch of `feature` on this
    /// server: its config, else the pool file, else the license code.
    pub(crate) fn borrow_policy(&self, feature: &str) -> (u32, u32) {
        let issuer = self.issuer();
        self.borrow_policy_in(&issuer, feature)
    }

    pub(crate) fn borrow_policy_in(&self, issuer: &Issuer, feature: &str) -> (u32, u32) {
        let own = self.borrowing.get(feature).copied().unwrap_or_default();
        let pool = issuer
            .control()
            .and_then(|c| c.pool())
            .and_then(|p| p.borrowing.get(feature))
            .copied()
            .unwrap_or_default();
        let policy = own.or(pool);
        let code = issuer
            .licenses()
            .feature(feature)
            .map_or(80, |f| f.policy.borrow_threshold_percent);
        (
            policy.threshold_percent.unwrap_or(code),
            policy.batch.unwrap_or(1),
        )
    }

    /// How long a server must have been silent before the leader may give
    /// its allocation to others: its quota lease plus the longest client
    /// hold (already stretched by the drift bound), stretched once more for
    /// the leader's own clock, plus one report interval.
    pub(crate) fn reassign_after_ms(&self) -> u64 {
        if self.mutations.reassign_without_wait {
            // The deliberate bug of `Mutations::reassign_without_wait`.
            return self.timing.quota_report_interval_ms * 3;
        }
        let hold_ms = self.issuer().longest_hold_ms();
        let drift = u64::from(self.timing.clock_drift_percent);
        let quota = self.timing.quota_lease_ms;
        let base = quota + quota * drift / 100 + hold_ms;
        base + base * drift / 100 + self.timing.quota_report_interval_ms
    }

    /// How long a checkout or conversion may wait for borrowed seats: at
    /// most `borrow_wait_ms`, and short enough that the answer, a grant or a
    /// denial, reaches the client well before it stops waiting
    /// (`answer_within_ms` of the request).
    pub(crate) fn seat_wait(&self, answer_within_ms: Option<u32>) -> Duration {
        let configured_ms = self.timing.borrow_wait_ms;
        let wait_ms = match answer_within_ms {
            None => configured_ms,
            Some(within_ms) => {
                let within_ms = u64::from(within_ms);
                let margin_ms = (within_ms / 4).max(ANSWER_MARGIN_MS_MIN);
                configured_ms.min(within_ms.saturating_sub(margin_ms))
            }
        };
        Duration::from_millis(wait_ms)
    }

    /// After a checkout or conversion: when the issuer was short of seats,
    /// borrow (waiting at most `wait`) and try once more; when the grant
    /// lifted use above the threshold, borrow a batch in the background.
    pub(crate) async fn with_borrowing<T>(
        self: &Arc<Self>,
        feature: &str,
        count: u32,
        wait: Duration,
        mut attempt: impl FnMut(&App) -> Result<T, IssueError>,
    ) -> Result<T, IssueError> {
        match attempt(self) {
            Err(err) if err.code == ErrorCode::NoSeatsAvailable && self.could_borrow(feature) => {
                let wait = self.borrow_for(feature, count, wait).await;
                // Once more either way: seats may have come at the last moment,
                // and a denial should tell the seats as they are now.
                attempt(self).map_err(|err| match wait {
                    Wait::Short { pool_available } if err.code == ErrorCode::NoSeatsAvailable => {
                        short_of_seats(
                            err,
                            feature,
                            count,
                            pool_available,
                            self.issuer().available(feature),
                        )
                    }
                    _ => err,
                })
            }
            Ok(done) => {
                self.borrow_ahead(feature);
                Ok(done)
            }
            Err(err) => Err(err),
        }
    }

    /// A server borrows a feature it serves, unless the administrator set
    /// it a distribution it has not reached: borrowing would work against it.
    fn could_borrow(&self, feature: &str) -> bool {
        let issuer = self.issuer();
        let has_target = issuer
            .control()
            .and_then(|c| c.allocation(feature))
            .is_some_and(|a| a.targets.contains_key(&self.pool.server_id));
        issuer.usage(feature).is_some() && !has_target
    }

    /// Asks for enough seats for `count`, then waits, at most `wait`, until
    /// this server can issue them: woken by every change of its seats (a
    /// control state taken, a check-in, a lapse), not by polling. One
    /// borrower per feature at a time; the others wait for its seats. When
    /// the leader says the pool cannot give them now, it stops at once.
    async fn borrow_for(self: &Arc<Self>, feature: &str, count: u32, wait: Duration) -> Wait {
        let deadline = tokio::time::Instant::now() + wait;
        let unknown = Wait::Short {
            pool_available: None,
        };
        // Subscribed before any look at the seats, so no change is missed.
        let mut seats_changed = self.seats_changed.subscribe();
        let lock = self.borrow_lock(feature);
        let Ok(_turn) = tokio::time::timeout_at(deadline, lock.lock()).await else {
            return unknown;
        };
        let (_, batch) = self.borrow_policy(feature);
        let available = self.issuer().available(feature);
        if available >= count {
            return Wait::Ready;
        }
        let needed = count - available;
        let ask = needed.max(batch);
        match tokio::time::timeout_at(deadline, self.borrow(feature, ask, needed, false)).await {
            Ok(Ok(answer)) => {
                let coming = answer.moved + answer.requested + answer.pending;
                // Nothing on its way, or not enough anywhere: deny now, not
                // at the end of the wait.
                let pool_short = answer.pool_available.is_some_and(|seats| seats < needed);
                if coming == 0 || pool_short {
                    return Wait::Short {
                        pool_available: answer.pool_available.map(|seats| seats + available),
                    };
                }
            }
            Ok(Err(err)) => {
                tracing::info!("borrowing {ask} seats of `{feature}`: {err}");
                return unknown;
            }
            Err(_) => return unknown,
        }
        loop {
            if self.issuer().available(feature) >= count {
                return Wait::Ready;
            }
            let changed = tokio::time::timeout_at(deadline, seats_changed.changed()).await;
            if !matches!(changed, Ok(Ok(()))) {
                return if self.issuer().available(feature) >= count {
                    Wait::Ready
                } else {
                    unknown
                };
            }
        }
    }

    fn borrow_lock(&self, feature: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.borrow_locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(feature.to_string())
            .or_default()
            .clone()
    }

    /// Above the threshold: ask for a batch in the background, unless a
    /// borrow of the feature is already under way.
    fn borrow_ahead(self: &Arc<Self>, feature: &str) {
        let Some((allocation, in_use)) = self.issuer().usage(feature) else {
            return;
        };
        if !self.could_borrow(feature) {
            return;
        }
        let (threshold, batch) = self.borrow_policy(feature);
        if u64::from(in_use) * 100 <= u64::from(allocation) * u64::from(threshold) {
            return;
        }
        let now = tokio::time::Instant::now();
        {
            let quiet = self.borrow_quiet.lock().unwrap_or_else(|p| p.into_inner());
            if quiet.get(feature).is_some_and(|until| now < *until) {
                return;
            }
        }
        let lock = self.borrow_lock(feature);
        let Ok(turn) = lock.try_lock_owned() else {
            return;
        };
        let app = self.clone();
        let feature = feature.to_string();
        tokio::spawn(async move {
            let _turn = turn;
            let found = match app.borrow(&feature, batch, batch, true).await {
                Ok(answer) => answer.moved + answer.requested > 0,
                Err(err) => {
                    tracing::debug!("borrowing ahead for `{feature}`: {err}");
                    false
                }
            };
            // Nothing to be had: ask again only after a pause, not after
            // every checkout of a full pool.
            if !found {
                app.borrow_quiet
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(feature, tokio::time::Instant::now() + BORROW_AHEAD_PAUSE);
            }
        });
    }

    /// Asks the leader for `seats` of `feature` for this server, of which
    /// `needed` are needed now.
    pub async fn borrow(
        &self,
        feature: &str,
        seats: u32,
        needed: u32,
        ahead: bool,
    ) -> Result<BorrowAnswer, IssueError> {
        let ask = BorrowAsk {
            server_id: self.pool.server_id.clone(),
            feature: feature.to_string(),
            seats,
            ahead,
            needed,
        };
        let Some((leader_id, address)) = self.pool.leader() else {
            return Err(IssueError::new(ErrorCode::NoLeader, "no leader known"));
        };
        if leader_id == self.pool.server_id {
            return self.lead_borrow(ask).await;
        }
        self.pool
            .peers
            .post(&address, "/v1/peer/borrow", &ask, PEER_TIMEOUT * 2)
            .await
            .map_err(|err| match err {
                PeerError::Refused { code, message } => IssueError::new(code, message),
                other => IssueError::new(ErrorCode::NoLeader, other.to_string()),
            })
    }

    /// Leader: finds seats for `ask` in the order of seed 002
    /// ([`tessera_core::borrow_plan`]) and commits the moves (or the
    /// requests, for live donors).
    pub async fn lead_borrow(&self, ask: BorrowAsk) -> Result<BorrowAnswer, IssueError> {
        let pool = &self.pool;
        let _moves = pool.moves.lock().await;
        if pool.observe_term().is_none() {
            return Err(IssueError::new(
                ErrorCode::NoLeader,
                format!("server `{}` is not the leader", pool.server_id),
            ));
        }
        let state = pool.applied.borrow().state.clone();
        let Some(allocation) = state.allocation(&ask.feature).cloned() else {
            return Err(IssueError::new(
                ErrorCode::UnknownFeature,
                format!("feature `{}` is not in the pool", ask.feature),
            ));
        };
        if !allocation.servers.contains_key(&ask.server_id) {
            return Err(IssueError::new(
                ErrorCode::WrongPool,
                format!("server `{}` is not in the pool", ask.server_id),
            ));
        }
        let view = self.borrow_view(&ask.feature, &allocation);
        let request = BorrowRequest {
            asker: ask.server_id.clone(),
            seats: ask.seats,
            needed: ask.needed,
            kind: if ask.ahead {
                BorrowKind::AheadOfNeed
            } else {
                BorrowKind::ForWaitingCheckout
            },
        };
        let plan = plan_borrow(&allocation, &view, &request);
        let mut answer = BorrowAnswer {
            moved: 0,
            requested: 0,
            pending: plan.pending(),
            pool_available: Some(plan.pool_available()),
        };
        let BorrowPlan::Give {
            mut wanted,
            without_consent,
            with_consent,
            ..
        } = plan
        else {
            // The pool cannot meet the request now: the asker denies at once.
            return Ok(answer);
        };
        // Each step takes what is still wanted, counting what the committed
        // steps before it really did.
        for Offer {
            from: source,
            seats,
        } in without_consent
        {
            if wanted == 0 {
                break;
            }
            let command = ControlCommand::Borrow {
                feature: ask.feature.clone(),
                recipient: ask.server_id.clone(),
                source: source.clone(),
                seats: wanted.min(seats),
            };
            if let ControlOutcome::Moved { seats } = pool.commit(command).await? {
                tracing::info!(
                    "`{}` borrowed {seats} seats of `{}` from {source:?}",
                    ask.server_id,
                    ask.feature
                );
                wanted -= seats.min(wanted);
                answer.moved += seats;
            }
        }
        for Offer { from: donor, seats } in with_consent {
            if wanted == 0 {
                break;
            }
            let seats = wanted.min(seats);
            let command = ControlCommand::RequestRelease {
                feature: ask.feature.clone(),
                donor: donor.clone(),
                recipient: ask.server_id.clone(),
                seats,
            };
            if let ControlOutcome::Requested { request_id } = pool.commit(command).await? {
                tracing::info!(
                    "asked `{donor}` for {seats} seats of `{}` for `{}` (request {request_id})",
                    ask.feature,
                    ask.server_id
                );
                wanted -= seats;
                answer.requested += seats;
            }
        }
        Ok(answer)
    }

    /// What the leader knows of the pool for a borrow of `feature`: who has
    /// been silent how long, the followers' reports, its own seats.
    fn borrow_view(&self, feature: &str, allocation: &FeatureAllocation) -> PoolView {
        let pool = &self.pool;
        let servers = pool.pool_file().server_ids();
        let silent_for_ms = servers
            .iter()
            .chain(allocation.parked.keys())
            .map(|server| {
                let silent_ms = pool.silent_for_ms(server).unwrap_or(0);
                (server.clone(), silent_ms)
            })
            .collect();
        let reported_in_use = servers
            .iter()
            .filter(|server| **server != pool.server_id)
            .filter_map(|server| {
                let in_use = pool.reported_in_use(server, feature)?;
                Some((server.clone(), in_use))
            })
            .collect();
        let leader_seats = {
            let issuer = self.issuer();
            LeaderSeats {
                in_use: issuer.usage(feature).map_or(0, |(_, n)| n),
                available: issuer.available(feature),
            }
        };
        let (threshold_percent, _) = self.borrow_policy(feature);
        PoolView {
            leader: pool.server_id.clone(),
            servers,
            silent_for_ms,
            reported_in_use,
            leader_seats,
            reassign_after_ms: self.reassign_after_ms(),
            // A server that missed its last reports cannot answer in time.
            answers_within_ms: 3 * self.timing.quota_report_interval_ms,
            threshold_percent,
        }
    }
}

/// Every server: answers the requests and targets addressed to it; the
/// leader also cancels requests nobody answered in time.
pub(crate) fn spawn_answer_loop(app: Arc<App>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut applied = app.pool.applied.clone();
        // Answers sent and not yet applied, with when they were sent.
        let mut sent: HashMap<String, u64> = HashMap::new();
        // Leader: when it first saw each pending request.
        let mut first_seen: BTreeMap<(String, u64), u64> = BTreeMap::new();
        loop {
            let _ = tokio::time::timeout(ANSWER_INTERVAL, applied.changed()).await;
            // Let the issuer take the new state first.
            tokio::time::sleep(Duration::from_millis(2)).await;
            let state = app.pool.applied.borrow().state.clone();
            let now_ms = app.clock.now_ms();
            let me = app.pool.server_id.clone();
            let mut answers = Vec::new();
            for (feature, allocation) in state.allocations() {
                let addressed = allocation.requests.values().any(|r| r.donor == me)
                    || allocation.targets.contains_key(&me);
                if !addressed {
                    continue;
                }
                let (in_use, grace) = {
                    let issuer = app.issuer();
                    let in_use = issuer.usage(feature).map_or(0, |(_, n)| n);
                    let grace = issuer.in_grace(now_ms);
                    (in_use, grace)
                };
                // In its grace period a server does not know the seats its
                // clients hold from before it lost its store: every seat of
                // its allocation may be held, so it gives none away.
                let in_use = if grace {
                    allocation.allocation_of(&me).max(in_use)
                } else {
                    in_use
                };
                answers.extend(allocation.answers(feature, &me, in_use));
            }
            sent.retain(|_, at| now_ms.saturating_sub(*at) < ANSWER_RESEND_MS);
            for answer in answers {
                let key = format!("{answer:?}");
                if sent.contains_key(&key) {
                    continue;
                }
                match app.pool.propose(answer.clone()).await {
                    Ok(ControlOutcome::Moved { seats }) if seats > 0 => {
                        sent.insert(key, now_ms);
                        tracing::info!("gave up {seats} seats: {answer:?}")
                    }
                    Ok(outcome) => {
                        sent.insert(key, now_ms);
                        tracing::info!("answer {answer:?}: {outcome:?}");
                    }
                    // Not committed: answered again at the next tick.
                    Err(err) => tracing::info!("answer {answer:?} not committed: {err}"),
                }
            }
            if app.pool.observe_term().is_none() {
                first_seen.clear();
                continue;
            }
            let timeout_ms = app.timing.release_request_timeout_ms;
            let mut pending = Vec::new();
            for (feature, allocation) in state.allocations() {
                for &id in allocation.requests.keys() {
                    pending.push((feature.clone(), id));
                }
            }
            first_seen.retain(|key, _| pending.contains(key));
            for key in pending {
                let seen_at = *first_seen.entry(key.clone()).or_insert(now_ms);
                if now_ms.saturating_sub(seen_at) >= timeout_ms {
                    let (feature, request_id) = key;
                    let cancel = ControlCommand::CancelRelease {
                        feature,
                        request_id,
                    };
                    if let Err(err) = app.pool.commit(cancel).await {
                        tracing::debug!("cancel not committed: {err}");
                    }
                }
            }
        }
    })
}
