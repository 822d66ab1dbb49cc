//! The pool-wide `reserve` and `max` rules of the policy, the server's side.
//!
//! A grant of a feature with such rules is recorded in the pool's log
//! ([`ControlCommand::Claim`]) before it is issued, and the state machine
//! judges the rules against every claim of the pool, so two servers cannot
//! each give away the last seat a reserve or a max allows. Renewals touch
//! nothing; a fail-over conversion moves its grant's claim to the new
//! server. A claim is forgotten ([`ControlCommand::Unclaim`]) at once only
//! when its grant is checked in or its checkout did not issue: a lapse is
//! no proof, since the program may have failed over to a server cut off
//! from the leader that converted the grant and renews it on its quota
//! without being able to move the claim (simulation seed 147). The rest is
//! kept true by a loop: every server claims, forced, the grants it holds
//! that no claim records (a feature whose rules are new, a lost notice),
//! and forgets its claims that no grant of its has backed for the wait W,
//! by when any such conversion has lapsed by its program's clock; the
//! leader forgets the claims of a server silent for W.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tessera_core::control::{ControlCommand, ControlOutcome, ControlState};
use tessera_core::policy::Claim;
use tessera_proto::ErrorCode;

use crate::issuer::{Released, SeatRequest};
use crate::refusal::Refusal;
use crate::App;

/// How often the claims are compared with the grants.
const RECONCILE_INTERVAL: Duration = Duration::from_secs(1);
/// A grant this young may have its claim on the way: not claimed again.
const YOUNG_GRANT_MS: u64 = 2_000;

/// The refusal of a claim the policy's rules forbid.
pub(crate) fn limited(outcome: ControlOutcome) -> Refusal {
    match outcome {
        // Seats kept for others: the feature is full for this asker.
        ControlOutcome::Limited {
            reserve: true,
            reason,
        } => Refusal::new(ErrorCode::NoSeatsAvailable, reason),
        ControlOutcome::Limited { reason, .. } => Refusal::new(ErrorCode::PolicyDenied, reason),
        other => Refusal::new(ErrorCode::Internal, format!("a claim applied as {other:?}")),
    }
}

/// Forgets, from [`App::claiming`], a grant whose checkout ended.
pub(crate) struct Claiming<'a> {
    app: &'a App,
    grant_id: String,
}

impl Drop for Claiming<'_> {
    fn drop(&mut self) {
        self.app
            .claiming
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.grant_id);
    }
}

impl App {
    /// True if the installed policy has `reserve` or `max` rules for `feature`.
    pub(crate) fn counts(&self, feature: &str) -> bool {
        self.pool.with_pool_file(|pool| pool.policy.counts(feature))
    }

    /// Claims `grant_id` for `request` before it is issued; refused as the
    /// rules say. The returned guard keeps the claim from being forgotten
    /// as unbacked until the checkout ends.
    pub(crate) async fn claim(
        &self,
        grant_id: &str,
        request: &SeatRequest,
        address: Option<IpAddr>,
    ) -> Result<Claiming<'_>, Refusal> {
        self.claiming
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(grant_id.to_string());
        let guard = Claiming {
            app: self,
            grant_id: grant_id.to_string(),
        };
        let command = ControlCommand::Claim {
            feature: request.feature.to_string(),
            grant_id: grant_id.to_string(),
            claim: Claim {
                user: request.user.to_string(),
                host: request.host.to_string(),
                address,
                seats: request.count,
                server: self.pool.server_id.clone(),
                renewal: 0,
            },
            force: false,
        };
        match self.pool.propose(command).await? {
            ControlOutcome::Claims { .. } => Ok(guard),
            ControlOutcome::Refused { reason } => {
                Err(Refusal::new(ErrorCode::UnknownFeature, reason))
            }
            other => Err(limited(other)),
        }
    }

    /// Records, whatever the rules say, a grant converted here from
    /// another server: its claim moves here, or is made if it was lost.
    /// The claim names the newest heartbeat this copy answered
    /// (`request.renewal`): it does not move back to an older copy.
    pub(crate) fn claim_converted(&self, grant_id: &str, request: &SeatRequest) {
        if !self.counts(&request.feature) {
            return;
        }
        let command = ControlCommand::Claim {
            feature: request.feature.to_string(),
            grant_id: grant_id.to_string(),
            claim: Claim {
                user: request.user.to_string(),
                host: request.host.to_string(),
                address: None,
                seats: request.count,
                server: self.pool.server_id.clone(),
                renewal: request.renewal,
            },
            force: true,
        };
        self.propose_later(command);
    }

    /// Forgets the claims of grants that left this server.
    pub(crate) fn unclaim(&self, released: &[Released]) {
        let mut by_feature: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        // Only features with claims (most have none: nothing to build).
        for grant in released.iter().filter(|grant| self.counts(&grant.feature)) {
            by_feature
                .entry(&grant.feature)
                .or_default()
                .push(grant.grant_id.to_string());
        }
        for (feature, grant_ids) in by_feature {
            self.forget(feature, &self.pool.server_id.clone(), grant_ids);
        }
    }

    /// Forgets the claim of a checkout that did not issue.
    pub(crate) fn forget_claim(&self, feature: &str, grant_id: String) {
        self.forget(feature, &self.pool.server_id.clone(), vec![grant_id]);
    }

    fn forget(&self, feature: &str, server: &str, grant_ids: Vec<String>) {
        self.propose_later(ControlCommand::Unclaim {
            feature: feature.to_string(),
            server: server.to_string(),
            grant_ids,
        });
    }

    /// Proposes `command` without waiting for it; the loop mends a loss.
    fn propose_later(&self, command: ControlCommand) {
        let pool = self.pool.clone();
        tokio::spawn(async move {
            if let Err(err) = pool.propose(command).await {
                tracing::debug!("claim not committed: {err}");
            }
        });
    }

    /// One round of the loop: what this server's grants and claims differ
    /// by, and, on the leader, the claims of silent servers.
    fn reconcile(
        &self,
        state: &ControlState,
        unbacked_since: &mut BTreeMap<(String, String), u64>,
    ) {
        let Some(pool) = state.pool() else {
            return;
        };
        let me = self.pool.server_id.clone();
        let now_ms = self.clock.now_ms();
        let (held, in_grace) = {
            let issuer = self.issuer();
            let held: HashMap<String, (String, SeatRequest, u64)> = issuer
                .grants()
                .filter(|(_, g)| pool.policy.counts(&g.request.feature))
                .map(|(id, g)| {
                    (
                        id.to_string(),
                        (
                            g.request.feature.to_string(),
                            g.request.clone(),
                            g.issued_at_ms,
                        ),
                    )
                })
                .collect();
            (held, issuer.in_grace(now_ms))
        };
        let claiming = self
            .claiming
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut unbacked = BTreeMap::new();
        let wait_ms = self.reassign_after_ms();
        for (feature, allocation) in state.allocations() {
            if !pool.policy.counts(feature) {
                continue;
            }
            let mut forget = Vec::new();
            for (grant_id, claim) in &allocation.claims {
                if claim.server != me || held.contains_key(grant_id) || claiming.contains(grant_id)
                {
                    continue;
                }
                let key = (feature.clone(), grant_id.clone());
                // Unbacked for the wait W; never in a grace period, when
                // clients may hold grants this server forgot.
                let since = *unbacked_since.get(&key).unwrap_or(&now_ms);
                if now_ms.saturating_sub(since) >= wait_ms && !in_grace {
                    forget.push(grant_id.clone());
                }
                unbacked.insert(key, since);
            }
            if !forget.is_empty() {
                self.forget(feature, &me, forget);
            }
        }
        *unbacked_since = unbacked;
        for (grant_id, (feature, request, issued_at_ms)) in held {
            let claim = state
                .allocation(&feature)
                .and_then(|a| a.claims.get(&grant_id));
            let wanted = match claim {
                // Made here, or moved here.
                Some(claim) if claim.server == me => false,
                // Claimed by another server for a copy renewed later than
                // this one: this copy was left behind by a fail-over, and is
                // dropped soon. Claimed for an older copy: this one is newer
                // and the move its conversion proposed was lost (the copy the
                // claim names may be gone, and its server forgets the claim
                // once it has been unbacked for W).
                Some(claim) => claim.renewal < request.renewal,
                None => now_ms.saturating_sub(issued_at_ms) >= YOUNG_GRANT_MS,
            };
            if wanted && !claiming.contains(&grant_id) {
                self.claim_converted(&grant_id, &request);
            }
        }
    }

    /// Leader: forgets the claims of servers silent for the wait W, or no
    /// longer in the pool for as long.
    fn forget_silent(&self, state: &ControlState, gone_since: &mut BTreeMap<String, u64>) {
        if self.pool.observe_term().is_none() {
            gone_since.clear();
            return;
        }
        let Some(pool) = state.pool() else {
            return;
        };
        let members: BTreeSet<&str> = pool.servers.iter().map(|s| s.id.as_str()).collect();
        let now_ms = self.clock.now_ms();
        let wait_ms = self.reassign_after_ms();
        let mut seen = BTreeSet::new();
        for (feature, allocation) in state.allocations() {
            let mut by_server: BTreeMap<&str, Vec<String>> = BTreeMap::new();
            for (grant_id, claim) in &allocation.claims {
                let server = claim.server.as_str();
                if server == self.pool.server_id {
                    continue;
                }
                let silent = if members.contains(server) {
                    self.pool.silent_for_ms(server).unwrap_or(0) >= wait_ms
                } else {
                    seen.insert(server.to_string());
                    let since = *gone_since.entry(server.to_string()).or_insert(now_ms);
                    now_ms.saturating_sub(since) >= wait_ms
                };
                if silent {
                    by_server.entry(server).or_default().push(grant_id.clone());
                }
            }
            for (server, grant_ids) in by_server {
                tracing::info!(
                    "forgetting {} claims of `{feature}` held by `{server}`, silent for longer \
                     than {wait_ms} ms",
                    grant_ids.len()
                );
                self.forget(feature, server, grant_ids);
            }
        }
        gone_since.retain(|server, _| seen.contains(server));
    }
}

/// Every server: keeps the claims true to the grants (module docs).
pub(crate) fn spawn_claims_loop(app: Arc<App>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut unbacked = BTreeMap::new();
        let mut gone_since = BTreeMap::new();
        let mut ticker = tokio::time::interval(RECONCILE_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let state = app.pool.applied.borrow().state.clone();
            if !state.allocations().values().any(|a| !a.claims.is_empty())
                && !state
                    .pool()
                    .is_some_and(|p| p.policy.features.keys().any(|f| p.policy.counts(f)))
            {
                unbacked.clear();
                continue;
            }
            app.reconcile(&state, &mut unbacked);
            app.forget_silent(&state, &mut gone_since);
        }
    })
}
