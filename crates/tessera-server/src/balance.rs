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

use tessera_core::{BorrowSource, ControlCommand, ControlOutcome};
use tessera_proto::{BorrowAnswer, BorrowAsk, ErrorCode};

use crate::issuer::Issuer;
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

    /// Leader: finds seats for `ask` in the order of seed 002 and commits
    /// the moves (or the requests, for live donors).
    pub async fn lead_borrow(&self, ask: BorrowAsk) -> Result<BorrowAnswer, Refusal> {
        let pool = &self.pool;
        let _moves = pool.moves.lock().await;
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
        let order = pool.pool_file().server_ids();
        let reassign_after = self.reassign_after_ms();
        let silent = |server: &str| pool.silent_for_ms(server).unwrap_or(0) >= reassign_after;
        let mut wanted = ask.seats;
        let pending: u64 = allocation
            .requests
            .values()
            .filter(|r| r.recipient == ask.server_id)
            .map(|r| u64::from(r.seats))
            .sum();
        let mut answer = BorrowAnswer {
            moved: 0,
            requested: 0,
            pending: u32::try_from(pending).unwrap_or(u32::MAX),
            pool_available: None,
        };
        let mut sources: Vec<(BorrowSource, u32)> = Vec::new();
        sources.push((BorrowSource::FreePool, allocation.free_pool));
        for (server, &seats) in &allocation.parked {
            if silent(server) {
                sources.push((BorrowSource::Parked(server.clone()), seats));
            }
        }
        for server in &order {
            let seats = allocation.allocation_of(server);
            if server != &ask.server_id && server != &pool.server_id && seats > 0 && silent(server)
            {
                sources.push((BorrowSource::DownServer(server.clone()), seats));
            }
        }
        // Live donors: the leader first, then the followers with the most spare.
        let mut donors: Vec<(u32, String)> = Vec::new();
        let (threshold, _) = self.borrow_policy(&ask.feature);
        let mut leader_spare = 0;
        // A server that missed its last reports cannot answer in time.
        let up_within = 3 * self.timing.quota_report_interval_ms;
        for server in &order {
            if server == &ask.server_id || pool.silent_for_ms(server).unwrap_or(0) > up_within {
                continue;
            }
            let (spare, in_use) = if server == &pool.server_id {
                let in_use = self.issuer().usage(&ask.feature).map_or(0, |(_, n)| n);
                (self.issuer().available(&ask.feature), in_use)
            } else {
                let Some(in_use) = pool.reported_in_use(server, &ask.feature) else {
                    continue;
                };
                let spare = allocation
                    .allocation_of(server)
                    .saturating_sub(in_use)
                    .saturating_sub(allocation.reserved(server));
                (spare, in_use)
            };
            // Ahead of need, a donor keeps enough to stay under its threshold.
            let spare = if ask.ahead {
                let keep = (u64::from(in_use) * 100).div_ceil(u64::from(threshold.max(1)));
                let keep = u32::try_from(keep).unwrap_or(u32::MAX);
                spare.min(
                    allocation
                        .allocation_of(server)
                        .saturating_sub(allocation.reserved(server))
                        .saturating_sub(keep),
                )
            } else {
                spare
            };
            if spare > 0 {
                let rank = if server == &pool.server_id {
                    leader_spare = spare;
                    u32::MAX
                } else {
                    spare
                };
                donors.push((rank, server.clone()));
            }
        }
        donors.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let donor_spare = |rank: u32, donor: &str| {
            if donor == pool.server_id {
                leader_spare
            } else {
                rank
            }
        };
        let obtainable = u64::from(answer.pending)
            + sources
                .iter()
                .map(|(_, seats)| u64::from(*seats))
                .sum::<u64>()
            + donors
                .iter()
                .map(|(rank, donor)| u64::from(donor_spare(*rank, donor)))
                .sum::<u64>();
        let obtainable = u32::try_from(obtainable).unwrap_or(u32::MAX);
        answer.pool_available = Some(obtainable);
        let needed = if ask.needed == 0 {
            ask.seats
        } else {
            ask.needed.min(ask.seats)
        };
        if !ask.ahead && obtainable < needed {
            // The pool cannot meet the request now: moving part of it would
            // only disturb other servers, and the asker denies at once.
            return Ok(answer);
        }
        for (source, seats) in sources {
            if wanted == 0 {
                break;
            }
            if seats == 0 {
                continue;
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
        for (rank, donor) in donors {
            if wanted == 0 {
                break;
            }
            let seats = wanted.min(donor_spare(rank, &donor));
            if seats == 0 {
                continue;
            }
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
