//! License balancing (seed 002): a server short of seats borrows through the
//! leader, and a server asked for seats gives only what no client holds.
//!
//! - A checkout (or fail-over conversion) that finds too few seats asks the
//!   leader for them (the request service's side: `service::borrow`).
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
use tessera_core::control::LOST_MAJORITY;
use tessera_core::{BorrowSource, ControlCommand, ControlOutcome, ControlState, FeatureAllocation};
use tessera_proto::{BorrowAnswer, BorrowAsk, ErrorCode};

use crate::hand_over::LeadHandOver;
use crate::issuer::Issuer;
use crate::pool::admin::SeatsHeld;
use crate::refusal::Refusal;
use crate::App;

/// How often every server looks at the requests and targets addressed to it.
const ANSWER_INTERVAL: Duration = Duration::from_millis(200);
/// An answer not applied within this is sent again.
const ANSWER_RESEND_MS: u64 = 1_000;

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

    /// `W`: how long a server must have been silent before the leader may
    /// give its allocation to others
    /// ([`tessera_core::lease::LeaseTiming::reassign_after_ms`]).
    pub(crate) fn reassign_after_ms(&self) -> u64 {
        if self.mutations.reassign_without_wait {
            // The deliberate bug of `Mutations::reassign_without_wait`.
            return self.timing.quota_report_interval_ms * 3;
        }
        let longest_hold_ms = self.issuer().longest_hold_ms();
        self.timing.lease().reassign_after_ms(longest_hold_ms)
    }

    /// How long, for a borrow of `feature`, the seats parked under `key`
    /// count as silent: as long as `key` has been. Seats a re-formed pool
    /// parked ([`LOST_MAJORITY`]) may also be held by temporary licenses
    /// the lost servers activated, which no survivor need know of and
    /// which run for hours or days: for a feature whose codes allow them,
    /// those seats also wait out the longest such license
    /// ([`App::lost_temporaries_ms`]).
    pub(crate) fn parked_silent_ms(&self, key: &str, feature: &str) -> Option<u64> {
        let silent_ms = self.pool.silent_for_ms(key)?;
        if key != LOST_MAJORITY {
            return Some(silent_ms);
        }
        Some(silent_ms.saturating_sub(self.lost_temporaries_ms(feature)))
    }

    /// The longest a temporary license of `feature` issued before a pool
    /// was re-formed may still run, on the leader's clock: the longest
    /// period or offline borrow any of its codes allows, plus the clock
    /// tolerance, stretched by the drift bound. 0 if no code allows them.
    pub(crate) fn lost_temporaries_ms(&self, feature: &str) -> u64 {
        let issuer = self.issuer();
        let Some(pool) = issuer.control().and_then(|c| c.pool()) else {
            return 0;
        };
        let longest_ms = pool
            .codes
            .iter()
            .filter(|code| code.feature() == feature)
            .filter_map(|code| code.fields().temporary)
            .map(|terms| {
                let period_ms = u64::from(terms.period_s) * 1_000;
                period_ms.max(u64::from(terms.offline_days_max) * 86_400_000)
            })
            .max();
        longest_ms.map_or(0, |ms| {
            let tolerance_ms = tessera_core::answer::CLOCK_TOLERANCE_MS.unsigned_abs();
            tessera_core::lease::stretched_ms(ms + tolerance_ms, self.timing.clock_drift_percent)
        })
    }

    /// Leader: the seats of `feature` clients may hold, per server (and per
    /// removed server whose allocation is parked): its own now; another's as
    /// a report it sent after `since_ms` says; one not heard from since,
    /// up to its allocation, unless it has been silent for `W`, when every
    /// grant it made has lapsed.
    pub(crate) fn seats_held(&self, feature: &str, since_ms: u64) -> BTreeMap<String, SeatsHeld> {
        let pool = &self.pool;
        let allocation = pool.applied.borrow().state.allocation(feature).cloned();
        let Some(allocation) = allocation else {
            return BTreeMap::new();
        };
        let own = self.issuer().usage(feature).map_or(0, |(_, n)| n);
        let wait_ms = self.reassign_after_ms();
        let mut holders = allocation.servers.clone();
        for (server, &parked) in &allocation.parked {
            *holders.entry(server.clone()).or_default() += parked;
        }
        holders
            .into_iter()
            .map(|(server, seats)| {
                let held = if server == pool.server_id {
                    SeatsHeld::Counted(own)
                } else if let Some(in_use) = pool.reported_held_since(&server, feature, since_ms) {
                    SeatsHeld::Counted(in_use)
                } else if self
                    .parked_silent_ms(&server, feature)
                    .is_some_and(|ms| ms >= wait_ms)
                {
                    SeatsHeld::Counted(0)
                } else {
                    SeatsHeld::Unheard { allocation: seats }
                };
                (server, held)
            })
            .collect()
    }

    /// Leader: finds seats for `ask` in the order of seed 002
    /// ([`tessera_core::borrow_plan`]) and commits the moves (or the
    /// requests, for live donors).
    pub async fn lead_borrow(&self, ask: BorrowAsk) -> Result<BorrowAnswer, Refusal> {
        let _moves = self.pool.moves.lock().await;
        let allocation = self.allocation_to_borrow_from(&ask)?;
        let mut hand_over_in_ms = None;
        if let Some(claim) = &ask.hand_over {
            match self.lead_hand_over(&ask, claim).await? {
                LeadHandOver::Moved(seats) => {
                    return Ok(BorrowAnswer {
                        moved: seats,
                        requested: 0,
                        pending: 0,
                        pool_available: None,
                        hand_over_in_ms: None,
                        allocation: None,
                    })
                }
                LeadHandOver::In(ms) => hand_over_in_ms = Some(ms),
                LeadHandOver::Not => {}
            }
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
            hand_over_in_ms,
            allocation: Some(allocation.allocation_of(&ask.server_id)),
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
        answer.moved = self.take(&ask, without_consent, &mut wanted).await?;
        answer.requested = self.ask_donors(&ask, with_consent, &mut wanted).await?;
        Ok(answer)
    }

    /// Leader: the committed allocation of the feature `ask` names, once
    /// this server is sure it leads and the asker is in the pool.
    fn allocation_to_borrow_from(&self, ask: &BorrowAsk) -> Result<FeatureAllocation, Refusal> {
        let pool = &self.pool;
        if pool.observe_term().is_none() {
            return Err(Refusal::new(
                ErrorCode::NoLeader,
                format!("server `{}` is not the leader", pool.server_id),
            ));
        }
        let state = pool.applied.borrow().state.clone();
        let Some(allocation) = state.allocation(&ask.feature).cloned() else {
            return Err(Refusal::new(
                ErrorCode::UnknownFeature,
                format!("feature `{}` is not in the pool", ask.feature),
            ));
        };
        if !allocation.servers.contains_key(&ask.server_id) {
            return Err(Refusal::new(
                ErrorCode::WrongPool,
                format!("server `{}` is not in the pool", ask.server_id),
            ));
        }
        Ok(allocation)
    }

    /// Leader: moves seats that need no consent (the free pool, parked
    /// seats, silent servers' allocations) to the asker. Returns the seats
    /// moved.
    async fn take(
        &self,
        ask: &BorrowAsk,
        offers: Vec<Offer<BorrowSource>>,
        wanted: &mut u32,
    ) -> Result<u32, Refusal> {
        let command = |source: &BorrowSource, seats| ControlCommand::Borrow {
            feature: ask.feature.clone(),
            recipient: ask.server_id.clone(),
            source: source.clone(),
            seats,
        };
        let moved = |source: &BorrowSource, _, outcome| {
            let ControlOutcome::Moved { seats } = outcome else {
                return None;
            };
            let (asker, feature) = (&ask.server_id, &ask.feature);
            tracing::info!("`{asker}` borrowed {seats} seats of `{feature}` from {source:?}");
            self.report_other(
                tessera_core::report::EventKind::Moved,
                feature,
                "",
                seats,
                format!("borrowed by `{asker}` from {}", source_name(source)),
            );
            Some(seats)
        };
        self.commit_offers(offers, wanted, command, moved).await
    }

    /// Leader: asks live donors for their spare seats for the asker.
    /// Returns the seats requested.
    async fn ask_donors(
        &self,
        ask: &BorrowAsk,
        offers: Vec<Offer<String>>,
        wanted: &mut u32,
    ) -> Result<u32, Refusal> {
        let command = |donor: &String, seats| ControlCommand::RequestRelease {
            feature: ask.feature.clone(),
            donor: donor.clone(),
            recipient: ask.server_id.clone(),
            seats,
        };
        let requested = |donor: &String, seats, outcome| {
            let ControlOutcome::Requested { request_id } = outcome else {
                return None;
            };
            let (asker, feature) = (&ask.server_id, &ask.feature);
            tracing::info!(
                "asked `{donor}` for {seats} seats of `{feature}` for `{asker}` (request \
                 {request_id})"
            );
            Some(seats)
        };
        self.commit_offers(offers, wanted, command, requested).await
    }

    /// Leader: commits one command per offer while seats are still wanted.
    /// `command` makes an offer's command for the seats still wanted (at
    /// most the offer); `given` reads from its outcome the seats it gave.
    /// Returns the seats given.
    async fn commit_offers<S>(
        &self,
        offers: Vec<Offer<S>>,
        wanted: &mut u32,
        command: impl Fn(&S, u32) -> ControlCommand,
        given: impl Fn(&S, u32, ControlOutcome) -> Option<u32>,
    ) -> Result<u32, Refusal> {
        let mut total = 0;
        for offer in offers {
            if *wanted == 0 {
                break;
            }
            let seats = (*wanted).min(offer.seats);
            let outcome = self.pool.commit(command(&offer.from, seats)).await?;
            if let Some(seats) = given(&offer.from, seats, outcome) {
                *wanted -= seats.min(*wanted);
                total += seats;
            }
        }
        Ok(total)
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
                let silent_ms = self.parked_silent_ms(server, feature).unwrap_or(0);
                (server.clone(), silent_ms)
            })
            .collect();
        let reported_in_use = servers
            .iter()
            .filter(|server| **server != pool.server_id)
            .filter_map(|server| {
                let held = pool.reported_held(server, feature)?;
                Some((server.clone(), held))
            })
            .collect();
        let leader_seats = {
            let issuer = self.issuer();
            let in_use = issuer.usage(feature).map_or(0, |(_, n)| n);
            let held = issuer.held_allocation(feature, in_use);
            // Where it serves only part of the codes, what it may give is
            // its allocation less what its seats in use require.
            let available = if held == in_use {
                issuer.available(feature)
            } else {
                allocation
                    .allocation_of(&pool.server_id)
                    .saturating_sub(held)
                    .saturating_sub(allocation.reserved(&pool.server_id))
            };
            LeaderSeats {
                in_use: held,
                available,
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

/// Where borrowed seats came from, in words.
fn source_name(source: &BorrowSource) -> String {
    match source {
        BorrowSource::FreePool => "the free pool".into(),
        BorrowSource::DownServer(server) => format!("silent server `{server}`"),
        BorrowSource::Parked(server) => format!("the parked seats of `{server}`"),
        BorrowSource::HandOver { server, grant_id } => {
            format!("`{server}`, handed over with grant {grant_id}")
        }
    }
}

/// Every server: answers the requests and targets addressed to it; the
/// leader also cancels requests nobody answered in time.
pub(crate) fn spawn_answer_loop(app: Arc<App>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        // Answers sent and not yet applied, with when they were sent.
        let mut sent: HashMap<String, u64> = HashMap::new();
        // Leader: when it first saw each pending request.
        let mut first_seen: BTreeMap<(String, u64), u64> = BTreeMap::new();
        let mut taken = app.control_taken.subscribe();
        loop {
            // Woken when the issuer takes a new control state: the answers
            // are computed from it, not from the pool's newest.
            let _ = tokio::time::timeout(ANSWER_INTERVAL, taken.changed()).await;
            let state = app.pool.applied.borrow().state.clone();
            let now_ms = app.clock.now_ms();
            let answers = app.answers_due(&state, now_ms);
            sent.retain(|_, at| now_ms.saturating_sub(*at) < ANSWER_RESEND_MS);
            app.send_answers(answers, &mut sent, now_ms).await;
            if app.pool.observe_term().is_none() {
                first_seen.clear();
                continue;
            }
            app.cancel_unanswered(&state, &mut first_seen, now_ms).await;
            app.drain_silent(&state).await;
        }
    })
}

impl App {
    /// This server's answers to the requests and targets addressed to it,
    /// computed under one hold of the issuer's lock from the control state
    /// the issuer enforces. Once that state shows a request or a target, the
    /// issuer holds the seats it asks for back from new checkouts
    /// ([`FeatureAllocation::reserved`]), so the seats in use counted here
    /// only fall until the answer is applied or the request goes. A newer
    /// state the issuer has not taken yet would not do: until it takes it,
    /// the issuer still issues its whole allocation, and a seat given away
    /// from that state could be issued here as well. A feature whose
    /// allocation here the `newest` state has changed is left for the next
    /// state the issuer takes: its answers would be refused.
    fn answers_due(&self, newest: &ControlState, now_ms: u64) -> Vec<ControlCommand> {
        let me = &self.pool.server_id;
        let issuer = self.issuer();
        let state: &ControlState = if self.mutations.answer_from_the_newest_state {
            newest
        } else {
            match issuer.control() {
                Some(state) => state,
                None => return Vec::new(),
            }
        };
        let grace = issuer.in_grace(now_ms);
        let mut answers = Vec::new();
        for (feature, allocation) in state.allocations() {
            let addressed = allocation.requests.values().any(|r| &r.donor == me)
                || allocation.targets.contains_key(me);
            let moved_since = newest.allocation(feature).is_none_or(|a| {
                a.allocation_of(me) != allocation.allocation_of(me)
                    || a.loosened_count(me) != allocation.loosened_count(me)
            });
            if !addressed || moved_since {
                continue;
            }
            let in_use = issuer.usage(feature).map_or(0, |(_, n)| n);
            let in_use = issuer.held_allocation(feature, in_use);
            // In its grace period a server does not know the seats its
            // clients hold from before it lost its store: every seat of its
            // allocation may be held, so it gives none away.
            let in_use = if grace {
                allocation.allocation_of(me).max(in_use)
            } else {
                in_use
            };
            answers.extend(allocation.answers(feature, me, in_use));
        }
        answers
    }

    /// Proposes each answer not sent within the last `ANSWER_RESEND_MS`.
    async fn send_answers(
        &self,
        answers: Vec<ControlCommand>,
        sent: &mut HashMap<String, u64>,
        now_ms: u64,
    ) {
        for answer in answers {
            let key = format!("{answer:?}");
            if sent.contains_key(&key) {
                continue;
            }
            match self.pool.propose(answer.clone()).await {
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
    }

    /// Leader: gives back, for a server silent for longer than
    /// [`App::reassign_after_ms`], its allocation above its target, so an
    /// administrator's distribution is reached while that server is down.
    /// Its quota has run out by then, so none of those seats can be in use,
    /// as when a borrow takes from it. The server learns of it from the log
    /// before it serves again.
    async fn drain_silent(&self, state: &ControlState) {
        let wait_ms = self.reassign_after_ms();
        for (feature, allocation) in state.allocations() {
            for server in allocation.targets.keys() {
                if *server == self.pool.server_id
                    || self
                        .pool
                        .silent_for_ms(server)
                        .is_none_or(|ms| ms < wait_ms)
                {
                    continue;
                }
                let drains = allocation
                    .answers(feature, server, 0)
                    .into_iter()
                    .filter(|c| matches!(c, ControlCommand::Drain { .. }));
                for drain in drains {
                    match self.pool.commit(drain).await {
                        Ok(ControlOutcome::Moved { seats }) if seats > 0 => tracing::info!(
                            "gave back {seats} seats of `{feature}` above the target of \
                             `{server}`, silent for longer than {wait_ms} ms"
                        ),
                        Ok(_) => {}
                        Err(err) => tracing::debug!("drain of `{server}` not committed: {err}"),
                    }
                }
            }
        }
    }

    /// Leader: cancels the requests pending for longer than
    /// `release_request_timeout_ms` since it first saw them.
    async fn cancel_unanswered(
        &self,
        state: &ControlState,
        first_seen: &mut BTreeMap<(String, u64), u64>,
        now_ms: u64,
    ) {
        let timeout_ms = self.timing.release_request_timeout_ms;
        let pending: Vec<(String, u64)> = state
            .allocations()
            .iter()
            .flat_map(|(feature, a)| a.requests.keys().map(|&id| (feature.clone(), id)))
            .collect();
        first_seen.retain(|key, _| pending.contains(key));
        for key in pending {
            let seen_at = *first_seen.entry(key.clone()).or_insert(now_ms);
            if now_ms.saturating_sub(seen_at) < timeout_ms {
                continue;
            }
            let (feature, request_id) = key;
            let cancel = ControlCommand::CancelRelease {
                feature,
                request_id,
            };
            if let Err(err) = self.pool.commit(cancel).await {
                tracing::debug!("cancel not committed: {err}");
            }
        }
    }
}
