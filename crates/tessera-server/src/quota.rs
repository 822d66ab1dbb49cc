//! The quota lease, a follower's side (the leader's is `pool/quota.rs`):
//! every server reports its in-use counts to the leader; an acknowledged
//! report renews its quota lease from the report's send time, once its
//! issuer enforces the control state as far into the log as the leader
//! says: applying the log is not enough, since the issuer takes each state
//! after the log applied it (`background::follow_control`), and until then
//! it would issue seats the pool has already moved elsewhere (simulation
//! seed 317 with `--slow-follow`: a server restarted with an old log issued
//! from its old allocation). The issuer issues only while the lease holds
//! ([`crate::issuer::Issuer::set_quota`]). The stale grant
//! copies the pool must hear of ride along (`crate::copies`).

use std::sync::Arc;
use std::time::Duration;

use tessera_proto::{ErrorCode, PeerReportAck, SupersededGrant, SUPERSEDED_PER_MESSAGE_MAX};

use crate::refusal::Refusal;
use crate::App;

/// The quota loop's record: renewals, and the longest time between two
/// (a gap near `quota_lease_ms` means the lease nearly lapsed).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct QuotaRenewals {
    pub(crate) count: u64,
    last_ms: Option<u64>,
    pub(crate) gap_max_ms: u64,
}

impl QuotaRenewals {
    fn renewed(&mut self, now_ms: u64) {
        if let Some(last_ms) = self.last_ms {
            self.gap_max_ms = self.gap_max_ms.max(now_ms.saturating_sub(last_ms));
        }
        self.last_ms = Some(now_ms);
        self.count += 1;
    }
}

/// When the next report goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Next {
    /// At the next tick, or as soon as the leader changes.
    OnTick,
    /// At once: the leader changed while the last report was on its way,
    /// or more stale copies wait to be told of than one message carries.
    Now,
}

/// Reports to the leader every `quota_report_interval_ms`, and to a new
/// leader at once: the quota lease must outlast a leader change.
pub(crate) fn spawn_quota_loop(app: Arc<App>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let interval = Duration::from_millis(app.timing.quota_report_interval_ms);
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        if app.mutations.issue_without_quorum {
            // The deliberate bug of `Mutations::issue_without_quorum`.
            app.issuer().set_quota(u64::MAX);
        }
        let mut next = Next::OnTick;
        loop {
            if next == Next::OnTick {
                let leader = app.pool.leader_node();
                tokio::select! {
                    _ = ticker.tick() => {}
                    () = app.pool.leader_changed_from(leader) => ticker.reset(),
                }
            }
            next = app.report_for_quota(interval).await;
        }
    })
}

impl App {
    /// Sends one report and renews the quota lease from its answer.
    async fn report_for_quota(&self, interval: Duration) -> Next {
        let leader = self.pool.leader_node();
        let sent_ms = self.clock.now_ms();
        let (in_use, held) = {
            let issuer = self.issuer();
            let in_use = issuer.in_use_counts();
            let held = issuer.held_allocations(&in_use);
            let clients_hold = issuer.clients_hold(&in_use);
            (in_use, (held, clients_hold))
        };
        let superseded = self.superseded_outbox().take();
        // A report to a leader that stopped answering (SIGSTOP, a cut link)
        // is given up as soon as another leader is known, and the new one is
        // reported to at once.
        let (answer, next) = tokio::select! {
            answer = self.pool.report(in_use, held, superseded.clone(), sent_ms) => (answer, Next::OnTick),
            () = self.pool.leader_changed_from(leader) => {
                let changed = Refusal::new(
                    ErrorCode::NoLeader,
                    "the leader changed while the report was on its way",
                );
                (Err(changed), Next::Now)
            }
        };
        match answer {
            Ok(ack) => {
                // A full message either way: more are waiting, here or at
                // the leader. Reported again at once, so that notices drain
                // as fast as they come and check-ins' seats do not stay
                // cooling for many report intervals under a high rate of
                // check-ins.
                let more = superseded.len() >= SUPERSEDED_PER_MESSAGE_MAX
                    || ack.superseded.len() >= SUPERSEDED_PER_MESSAGE_MAX;
                // The leader has heard of these check-ins: their seats may
                // be issued again (`crate::cooling`).
                let checked_in = superseded
                    .iter()
                    .filter(|s| s.renewal == SupersededGrant::CHECKED_IN)
                    .map(|s| s.grant_id.as_str());
                if self.issuer().check_ins_acknowledged(checked_in) {
                    self.seats_freed();
                }
                self.acknowledged(ack, sent_ms, interval).await;
                match more {
                    true => Next::Now,
                    false => next,
                }
            }
            Err(err) => {
                tracing::debug!("quota not renewed: {err}");
                self.superseded_outbox().put_back(superseded);
                next
            }
        }
    }

    /// The leader took the report sent at `sent_ms`: once this server's
    /// issuer enforces the log as far as the leader says (within `interval`
    /// or half the lease, the longer), the quota lease runs
    /// `quota_lease_ms` from the send time.
    async fn acknowledged(&self, ack: PeerReportAck, sent_ms: u64, interval: Duration) {
        let wait = interval.max(Duration::from_millis(self.timing.quota_lease_ms / 2));
        let taken = if self.mutations.renew_before_the_issuer_follows {
            // The deliberate bug: the log applied, the issuer perhaps not.
            self.pool
                .wait_applied(ack.applied_index_required, interval)
                .await
        } else {
            self.wait_taken(ack.applied_index_required, wait).await
        };
        if taken && !self.mutations.issue_without_quorum {
            let valid_until_ms = self.timing.lease().quota_valid_until_ms(sent_ms);
            self.issuer().set_quota(valid_until_ms);
            self.quota_renewals
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .renewed(self.clock.now_ms());
        }
        self.drop_superseded(&ack.superseded).await;
    }

    /// Waits up to `timeout` for the issuer to take the control state at
    /// log index `index` or a later one; false if it did not.
    async fn wait_taken(&self, index: u64, timeout: Duration) -> bool {
        let mut taken = self.control_taken.subscribe();
        tokio::time::timeout(timeout, taken.wait_for(|&taken| taken >= index))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}
