//! Quota and the leader's picture: every server reports its in-use counts
//! to the leader, whose acknowledgement renews the reporter's quota lease;
//! the leader keeps what it last heard from each, and followers keep the
//! leader's description of the pool.

use std::collections::BTreeMap;
use std::time::Duration;

use openraft::ServerState;
use tessera_core::PoolFile;
use tessera_proto::{ErrorCode, PeerReport, PeerReportAck, PeerStatus, SupersededGrant};

use super::network::PEER_TIMEOUT;
use super::*;
use crate::refusal::Refusal;

impl Pool {
    /// Leader: a server's report. Acknowledged only after a quorum confirms
    /// this leadership, so no other leader can exist at the time of the ack.
    pub async fn handle_report(&self, report: PeerReport) -> Result<PeerReportAck, Refusal> {
        let pool = self.pool_file();
        if pool.server(&report.server_id).is_none() {
            return Err(refused(
                ErrorCode::WrongPool,
                format!(
                    "server `{}` is not in pool `{}`",
                    report.server_id, self.pool_id
                ),
            ));
        }
        if !self.is_leader() {
            return Err(refused(
                ErrorCode::NoLeader,
                format!("server `{}` is not the leader", self.server_id),
            ));
        }
        self.record_report(&report, &pool).await;
        let confirmed = self
            .confirm_leadership(PEER_TIMEOUT, ErrorCode::NoQuorum)
            .await?;
        // Only seats its clients hold: a seat held back for a hand-over
        // that is then given up would otherwise come free on a survivor
        // while the lost server's client still holds it.
        let holding = report
            .clients_hold
            .clone()
            .unwrap_or_else(|| held_allocations(&report));
        self.restore_holders(&report.server_id, &holding).await;
        let now_ms = self.clock.now_ms();
        let last_log = self.raft.metrics().borrow().last_log_index.unwrap_or(0);
        let superseded = self
            .relay
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take(&report.server_id);
        // What it is told may make it drop copies: recorded before it is sent.
        self.hand_overs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .told(&report.server_id, report.report, &superseded);
        Ok(PeerReportAck {
            leader_id: self.server_id.clone(),
            applied_index_required: confirmed.max(last_log),
            servers: self.leader_view(&pool, now_ms),
            superseded,
        })
    }

    /// Leader: records a report: the sender's in-use counts, the stale
    /// copies it names (for the others, and for hand-overs).
    async fn record_report(&self, report: &PeerReport, pool: &PoolFile) {
        // Recorded before leadership is confirmed, and under the lock that
        // moves allocation: a borrow that judged this server silent has
        // either not been decided yet (and now will not be), or is committed
        // already, and then the index named below includes it.
        let _moves = self.moves.lock().await;
        self.observe_term();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let previous_at_ms = seen.get(&report.server_id).map(|s| s.at_ms);
        seen.insert(
            report.server_id.clone(),
            Seen {
                at_ms: self.clock.now_ms(),
                in_use: report.in_use.clone(),
                held: held_allocations(report),
                previous_at_ms,
            },
        );
        drop(seen);
        self.relay
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .forward(&report.server_id, &pool.server_ids(), &report.superseded);
        self.hand_overs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .reported(
                &report.server_id,
                (report.boot, report.report, report.sent_ms),
                &report.superseded,
            );
    }

    /// Sends this server's report to the leader (itself, if it leads).
    pub async fn report(
        &self,
        in_use: BTreeMap<String, u32>,
        (held, clients_hold): (BTreeMap<String, u32>, BTreeMap<String, u32>),
        superseded: Vec<SupersededGrant>,
        sent_ms: u64,
    ) -> Result<PeerReportAck, Refusal> {
        let report = PeerReport {
            server_id: self.server_id.clone(),
            in_use,
            held,
            clients_hold: Some(clients_hold),
            superseded,
            boot: self.boot,
            report: self
                .next_report
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst),
            sent_ms,
        };
        let forward = Forward {
            path: "/v1/peer/report",
            timeout: PEER_TIMEOUT,
            unanswered: ErrorCode::NoQuorum,
        };
        let ack = self
            .at_leader(forward, report, |report| self.handle_report(report))
            .await?;
        *self.view.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((self.clock.now_ms(), ack.servers.clone()));
        Ok(ack)
    }

    /// Leader: notices a new term of its own leadership, and then forgets
    /// what it heard from servers under earlier terms: a new leader measures
    /// a server's silence from its own election at the earliest.
    pub(crate) fn observe_term(&self) -> Option<u64> {
        let (state, term) = {
            let metrics = self.raft.metrics();
            let metrics = metrics.borrow();
            (metrics.state, metrics.current_term)
        };
        let mut led = self.term.lock().unwrap_or_else(|p| p.into_inner());
        if state != ServerState::Leader {
            *led = None;
            return None;
        }
        match *led {
            Some((t, since)) if t == term => Some(since),
            _ => {
                let now_ms = self.clock.now_ms();
                *led = Some((term, now_ms));
                self.seen.lock().unwrap_or_else(|p| p.into_inner()).clear();
                self.hand_overs
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clear();
                Some(now_ms)
            }
        }
    }

    /// Leader: how long `server` has been silent, measured from its last
    /// report under this leadership, or from this leadership's start.
    pub(crate) fn silent_for_ms(&self, server: &str) -> Option<u64> {
        let since = self.observe_term()?;
        let now_ms = self.clock.now_ms();
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let last = seen.get(server).map_or(since, |s| s.at_ms.max(since));
        Some(now_ms.saturating_sub(last))
    }

    /// Is `server` up, as the leader judges from its reports?
    pub(super) fn leader_view(&self, pool: &PoolFile, now_ms: u64) -> Vec<PeerStatus> {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let up_within_ms = self.timing.quota_report_interval_ms * 3;
        pool.servers
            .iter()
            .map(|s| {
                let last = seen
                    .get(&s.id)
                    .map(|seen| now_ms.saturating_sub(seen.at_ms));
                let me = s.id == self.server_id;
                PeerStatus {
                    id: s.id.clone(),
                    address: s.address.clone(),
                    role: if me { "leader" } else { "follower" }.into(),
                    up: me || last.is_some_and(|ms| ms <= up_within_ms),
                    last_contact_ms: if me { Some(0) } else { last },
                }
            })
            .collect()
    }

    /// Every server of the pool as this server knows it.
    pub fn peer_statuses(&self) -> Vec<PeerStatus> {
        let pool = self.pool_file();
        let now_ms = self.clock.now_ms();
        if self.is_leader() {
            return self.leader_view(&pool, now_ms);
        }
        let view = self.view.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let leader = self.leader().map(|(id, _)| id);
        pool.servers
            .iter()
            .map(|s| {
                let reported = view.as_ref().and_then(|(at_ms, servers)| {
                    servers.iter().find(|p| p.id == s.id).map(|p| (at_ms, p))
                });
                let age = |at_ms: &u64| now_ms.saturating_sub(*at_ms);
                PeerStatus {
                    id: s.id.clone(),
                    address: s.address.clone(),
                    role: if Some(&s.id) == leader.as_ref() {
                        "leader"
                    } else {
                        "follower"
                    }
                    .into(),
                    up: s.id == self.server_id || reported.is_some_and(|(_, p)| p.up),
                    last_contact_ms: if s.id == self.server_id {
                        Some(0)
                    } else {
                        reported.and_then(|(at_ms, p)| p.last_contact_ms.map(|ms| ms + age(at_ms)))
                    },
                }
            })
            .collect()
    }

    /// Leader: waits, at most four report intervals, until every other
    /// server of the pool has sent a report after `since_ms` (this server's
    /// clock; see [`Seen::previous_at_ms`]); a server down or cut off is
    /// waited for in vain.
    pub(crate) async fn await_reports_since(&self, since_ms: u64) {
        let waited_ms = self.timing.quota_report_interval_ms * 4;
        let others: Vec<String> = self
            .pool_file()
            .server_ids()
            .into_iter()
            .filter(|s| *s != self.server_id)
            .collect();
        let all_reported = || {
            let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            others
                .iter()
                .all(|s| seen.get(s).is_some_and(|seen| seen.sent_since(since_ms)))
        };
        let deadline = tokio::time::Instant::now() + Duration::from_millis(waited_ms);
        while !all_reported() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(LEADER_LOOK_INTERVAL).await;
        }
    }

    /// Leader: the allocation `server`'s seats in use of `feature` require,
    /// by a report it sent after `since_ms`.
    pub fn reported_held_since(&self, server: &str, feature: &str, since_ms: u64) -> Option<u32> {
        self.last_report(server, |s| {
            s.sent_since(since_ms).then(|| count_of(&s.held, feature))
        })
    }

    /// Leader: the allocation `server`'s seats in use of `feature` require,
    /// by its last report: what it may not give away.
    pub fn reported_held(&self, server: &str, feature: &str) -> Option<u32> {
        self.last_report(server, |s| Some(count_of(&s.held, feature)))
    }

    /// Leader: the in-use counts last reported by `server`.
    pub fn reported_in_use(&self, server: &str, feature: &str) -> Option<u32> {
        self.last_report(server, |s| Some(count_of(&s.in_use, feature)))
    }

    /// Leader: `read` of what `server` last reported; `None` on a follower
    /// or before its first report to this leader.
    fn last_report<T>(&self, server: &str, read: impl FnOnce(&Seen) -> Option<T>) -> Option<T> {
        if !self.is_leader() {
            return None;
        }
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.get(server).and_then(read)
    }
}

impl Seen {
    /// Whether this report was sent after `since_ms` (the leader's clock):
    /// the one before it arrived after then.
    fn sent_since(&self, since_ms: u64) -> bool {
        self.previous_at_ms.is_some_and(|at_ms| at_ms >= since_ms)
    }
}

/// `counts`' entry for `feature`; none is 0.
fn count_of(counts: &BTreeMap<String, u32>, feature: &str) -> u32 {
    counts.get(feature).copied().unwrap_or(0)
}

/// A report's seats in use per feature, as the allocation they require:
/// `held` where the sender named it, `in_use` elsewhere.
fn held_allocations(report: &PeerReport) -> BTreeMap<String, u32> {
    let mut held = report.in_use.clone();
    for (feature, &seats) in &report.held {
        let entry = held.entry(feature.clone()).or_default();
        *entry = (*entry).max(seats);
    }
    held
}
