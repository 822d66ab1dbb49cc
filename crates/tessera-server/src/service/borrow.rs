//! The borrower's side of license balancing (seed 002): a checkout or
//! conversion short of seats asks the leader for them and waits, bounded by
//! `borrow_wait_ms` and by the client's own deadline, before it is denied. A
//! grant that lifts in-use / allocation above the borrowing threshold asks
//! for a batch in the background. The leader's side is [`crate::balance`].

use std::sync::Arc;
use std::time::Duration;

use tessera_proto::{BorrowAnswer, BorrowAsk, ErrorCode, HandOverClaim};

use super::Deadline;
use crate::issuer::SeatRequest;
use crate::pool::network::PEER_TIMEOUT;
use crate::pool::Forward;
use crate::refusal::Refusal;
use crate::App;

/// After a borrow ahead of need found nothing, the next one waits this long.
const BORROW_AHEAD_PAUSE: Duration = Duration::from_secs(1);
/// The least pause before asking again for a hand-over the leader may
/// decide later.
const HAND_OVER_RETRY_MS_MIN: u64 = 20;
/// The least time kept between the end of a wait for seats and the moment
/// the client stops waiting: for the store's write and the way back.
const ANSWER_MARGIN_MS_MIN: u64 = 50;

/// What a borrow is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// A request waits for this many of the seats asked.
    Now { needed: u32 },
    /// A batch ahead of need, above the borrowing threshold.
    Ahead,
}

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
    denial: Refusal,
    feature: &str,
    count: u32,
    pool_available: Option<u32>,
    here: u32,
) -> Refusal {
    let message = match pool_available {
        Some(seats) if seats < count => format!(
            "{count} {} of `{feature}` requested; the pool can give {seats} now, {here} of \
             them on this server",
            if count == 1 { "seat" } else { "seats" }
        ),
        _ => format!(
            "{}; the other servers could not free enough in time",
            denial.message
        ),
    };
    Refusal::new(denial.code, message)
}

impl App {
    /// How long a checkout or conversion may wait for borrowed seats: at
    /// most `borrow_wait_ms`, and short enough that the answer, a grant or a
    /// denial, reaches the client well before it stops waiting
    /// (`answer_within_ms` of the request).
    fn seat_wait(&self, answer_within_ms: Option<u32>) -> Duration {
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

    /// Issues with `attempt`; when the issuer was short of seats, borrows
    /// (waiting at most [`App::seat_wait`] of the deadline) and tries once
    /// more; when the grant lifted use above the threshold, borrows a batch
    /// in the background.
    pub(super) async fn issue_with_borrowing<T>(
        self: &Arc<Self>,
        request: &SeatRequest,
        deadline: Deadline,
        hand_over: Option<HandOverClaim>,
        mut attempt: impl FnMut(&App) -> Result<T, Refusal>,
    ) -> Result<T, Refusal> {
        let (feature, count) = (&*request.feature, request.count);
        match attempt(self) {
            Err(err)
                if err.code == ErrorCode::NoSeatsAvailable
                    && (hand_over.is_some() || self.could_borrow(feature)) =>
            {
                let wait = self.seat_wait(deadline.answer_within_ms);
                // Seats handed over with the grant are its own: held back
                // from every other checkout from before they are asked for
                // until this conversion has taken them or given up.
                // Ended when dropped: also when the request is abandoned
                // while it waits.
                let expected = hand_over.as_ref().map(|claim| {
                    self.issuer()
                        .expect_hand_over(&claim.grant_id, feature, count);
                    ExpectedHandOver {
                        app: self,
                        grant_id: claim.grant_id.clone(),
                    }
                });
                // Boxed: borrowing is rare and its future large; inline it
                // would be copied with every checkout's.
                let wait = Box::pin(self.borrow_for(feature, count, wait, hand_over)).await;
                // Once more either way: seats may have come at the last moment,
                // and a denial should tell the seats as they are now.
                let last = attempt(self);
                drop(expected);
                last.map_err(|err| match wait {
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
    /// A conversion's `hand_over` claim goes with the ask, and is asked again
    /// when the leader says when it may decide it.
    async fn borrow_for(
        self: &Arc<Self>,
        feature: &str,
        count: u32,
        wait: Duration,
        hand_over: Option<HandOverClaim>,
    ) -> Wait {
        let deadline = tokio::time::Instant::now() + wait;
        let unknown = Wait::Short {
            pool_available: None,
        };
        // Subscribed before any look at the seats, so no change is missed.
        let mut seats_changed = self.seats_changed.subscribe();
        // A hand-over is for one grant's seats: it waits for no other borrower.
        let lock = self.borrow_lock(feature);
        let _turn = match hand_over {
            Some(_) => None,
            None => match tokio::time::timeout_at(deadline, lock.lock()).await {
                Ok(turn) => Some(turn),
                Err(_) => return unknown,
            },
        };
        let (_, batch) = self.borrow_policy(feature);
        let available = self.issuer().available(feature);
        if available >= count {
            return Wait::Ready;
        }
        let needed = self
            .issuer()
            .allocation_short(feature, count, count - available);
        let ask = needed.max(batch);
        let need = Need::Now { needed };
        let asked =
            tokio::time::timeout_at(deadline, self.borrow(feature, ask, need, hand_over)).await;
        match asked {
            Ok(Ok(answer)) => {
                // Seats the leader committed to this server that it has not
                // applied yet (a move just before this ask) are on their way
                // too: the pool counts them as this server's already.
                let applied = self
                    .issuer()
                    .control()
                    .and_then(|control| control.allocation(feature))
                    .map_or(0, |allocation| {
                        allocation.allocation_of(&self.pool.server_id)
                    });
                let unapplied = answer
                    .allocation
                    .map_or(0, |committed| committed.saturating_sub(applied));
                let coming = answer.moved + answer.requested + answer.pending + unapplied;
                // Nothing on its way, or not enough anywhere: deny now, not
                // at the end of the wait.
                let pool_short = answer
                    .pool_available
                    .is_some_and(|seats| seats + unapplied < needed);
                if coming == 0 || pool_short {
                    return Wait::Short {
                        pool_available: answer
                            .pool_available
                            .map(|seats| seats + unapplied + available),
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
            let found = match app.borrow(&feature, batch, Need::Ahead, None).await {
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

    /// Asks the leader for `seats` of `feature` for this server; for a
    /// conversion, with the claim to the grant's seat on its silent server.
    /// While the leader says that hand-over may be decided later and nothing
    /// else is coming, asks again then (the caller bounds the wait).
    pub async fn borrow(
        &self,
        feature: &str,
        seats: u32,
        need: Need,
        hand_over: Option<HandOverClaim>,
    ) -> Result<BorrowAnswer, Refusal> {
        loop {
            let answer = self
                .ask_leader(feature, seats, need, hand_over.clone())
                .await?;
            let coming = answer.moved + answer.requested + answer.pending;
            match answer.hand_over_in_ms {
                Some(ms) if coming == 0 => {
                    tokio::time::sleep(Duration::from_millis(ms.max(HAND_OVER_RETRY_MS_MIN))).await;
                }
                _ => return Ok(answer),
            }
        }
    }

    async fn ask_leader(
        &self,
        feature: &str,
        seats: u32,
        need: Need,
        hand_over: Option<HandOverClaim>,
    ) -> Result<BorrowAnswer, Refusal> {
        let ask = BorrowAsk {
            hand_over,
            server_id: self.pool.server_id.clone(),
            feature: feature.to_string(),
            seats,
            ahead: need == Need::Ahead,
            needed: match need {
                Need::Now { needed } => needed,
                Need::Ahead => seats,
            },
        };
        let forward = Forward {
            path: "/v1/peer/borrow",
            timeout: PEER_TIMEOUT * 2,
            unanswered: ErrorCode::NoLeader,
        };
        self.pool
            .at_leader(forward, ask, |ask| self.lead_borrow(ask))
            .await
    }
}

/// The seats held back for one conversion's hand-over, given back when
/// dropped: once the conversion has taken them or given up, or when its
/// request is abandoned while it waits.
struct ExpectedHandOver<'a> {
    app: &'a App,
    grant_id: String,
}

impl Drop for ExpectedHandOver<'_> {
    fn drop(&mut self) {
        self.app.issuer().end_hand_over(&self.grant_id);
    }
}
