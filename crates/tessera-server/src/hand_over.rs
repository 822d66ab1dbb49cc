//! Fail-over in a full pool (seed 001, FIG. 10): the seat a client of a
//! silent server holds moves with its grant to the server the client failed
//! over to, instead of waiting `W` for every grant of the silent server to
//! lapse. ARCHITECTURE.md, "Fail-over in a full pool", gives the argument;
//! in short, the hand-over of grant `g` from server `S` adds nothing to the
//! seats held when `S` can no longer issue (its quota has ended) and has
//! not freed `g`'s seat for another client while it still could:
//!
//! - `S` frees a copy early in two ways only: a check-in there, which it
//!   reports (`SupersededGrant::CHECKED_IN`) and whose seat it does not
//!   issue again until that report is acknowledged (the issuer's cooling),
//!   and a stale copy dropped on the leader's word, which the leader knows
//!   it delivered;
//! - a copy that lapses frees its seat only after the holding proof's
//!   `expires_ms`; when that is after the end of `S`'s quota (both on `S`'s
//!   clock), `S` could not issue that seat again.
//!
//! The leader keeps, for this term only, what each server reported and
//! was told with each report ([`HandOverWatch`]); [`HandOverWatch::judge`]
//! decides a claim from it. A new leader has heard nothing yet and hands
//! nothing over for a server it has not heard from in its own term.

use std::collections::{BTreeMap, VecDeque};

use tessera_core::grant_proof::{self, GrantClaim, HoldingClaim};
use tessera_core::{BorrowSource, ControlCommand, ControlOutcome, SharedText};
use tessera_proto::{BorrowAsk, HandOverClaim, SupersededGrant};

use crate::refusal::Refusal;
use crate::App;

/// Reports kept per server: about twenty minutes at the default interval,
/// longer than any heartbeat interval a code sets.
pub const REPORTS_KEPT: usize = 4_096;
/// Stale-copy entries kept per server, over all its kept reports.
pub const ENTRIES_KEPT: usize = 100_000;

/// What one report of a server carried, and what its acknowledgement told it.
#[derive(Debug, Default)]
struct ReportRecord {
    number: u64,
    /// (grant id, renewal) the server reported superseded or checked in,
    /// and those the leader passed on to it.
    entries: Vec<(SharedText, u64)>,
}

/// The leader's record of one server in this term.
#[derive(Debug)]
struct ServerRecord {
    boot: u64,
    /// Latest `sent_ms` of its reports (its monotonic clock).
    last_sent_ms: u64,
    reports: VecDeque<ReportRecord>,
    entries: usize,
}

/// A grant on a silent server, as its client claims it with the holding
/// proof (already verified).
#[derive(Clone, Copy, Debug)]
pub struct Claim<'a> {
    pub grant_id: &'a str,
    pub server_id: &'a str,
    pub boot: u64,
    pub report: u64,
    pub renewal: u64,
    pub expires_ms: u64,
}

/// The leader's judgement of a claim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Judgement {
    /// Hand the grant's seats over now.
    Now,
    /// Not before the silent server's quota has surely ended: in this many ms.
    In { ms: u64 },
    /// Never, and why (for the log; the client is told only of seats).
    Refused(Unvouched),
}

/// Why the leader cannot vouch for a claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unvouched {
    #[error("the leader has not heard from that server in its term")]
    NotHeard,
    #[error("the server restarted since it answered for the grant")]
    Restarted,
    #[error("the leader's record of that server starts after the claim")]
    RecordTooShort,
    #[error("the copy was checked in, handed over or superseded since")]
    Freed,
    #[error("the copy lapses on that server before its quota ends")]
    LapsesInQuota,
}

/// What the leader knows of the server's silence and its quota.
#[derive(Clone, Copy, Debug)]
pub struct Silence {
    /// How long it has been silent, on the leader's clock.
    pub silent_for_ms: u64,
    /// How long it must be silent before its quota has surely ended.
    pub quota_over_after_ms: u64,
    /// Its quota lease `Q`.
    pub quota_lease_ms: u64,
}

/// The leader's record of every server in this term (cleared with the term).
#[derive(Debug, Default)]
pub struct HandOverWatch {
    servers: BTreeMap<String, ServerRecord>,
}

impl HandOverWatch {
    /// Forgets everything: a new term.
    pub fn clear(&mut self) {
        self.servers.clear();
    }

    /// Records a report of `server`: its run, number, send time and the
    /// stale copies it reported. A new run starts the record afresh.
    pub fn reported(
        &mut self,
        server: &str,
        (boot, number, sent_ms): (u64, u64, u64),
        superseded: &[SupersededGrant],
    ) {
        let fresh = || ServerRecord {
            boot,
            last_sent_ms: 0,
            reports: VecDeque::new(),
            entries: 0,
        };
        let record = self.servers.entry(server.to_string()).or_insert_with(fresh);
        if record.boot != boot {
            *record = fresh();
        }
        record.last_sent_ms = record.last_sent_ms.max(sent_ms);
        record.reports.push_back(ReportRecord {
            number,
            entries: Vec::new(),
        });
        record.add(number, superseded);
        record.trim();
    }

    /// Records the stale copies the leader passed on to `server` with the
    /// acknowledgement of its report `number`.
    pub fn told(&mut self, server: &str, number: u64, superseded: &[SupersededGrant]) {
        if let Some(record) = self.servers.get_mut(server) {
            record.add(number, superseded);
        }
    }

    /// Records a grant handed over from `server`: it is never handed over again.
    pub fn handed_over(&mut self, server: &str, grant_id: &str) {
        if let Some(record) = self.servers.get_mut(server) {
            let number = record.reports.back().map_or(0, |r| r.number);
            let entry = SupersededGrant {
                grant_id: grant_id.into(),
                renewal: SupersededGrant::CHECKED_IN,
            };
            record.add(number, &[entry]);
        }
    }

    /// Judges a claim by what this leader heard in its term.
    pub fn judge(&self, claim: &Claim, silence: Silence) -> Judgement {
        let Some(record) = self.servers.get(claim.server_id) else {
            return Judgement::Refused(Unvouched::NotHeard);
        };
        if record.boot != claim.boot {
            return Judgement::Refused(Unvouched::Restarted);
        }
        // Every report from the one before the claim's on must be known:
        // a copy freed after the answer is reported in one of them.
        let first = record.reports.front().map_or(u64::MAX, |r| r.number);
        if first >= claim.report {
            return Judgement::Refused(Unvouched::RecordTooShort);
        }
        let freed = record
            .reports
            .iter()
            .flat_map(|r| &r.entries)
            .any(|(grant_id, renewal)| grant_id == claim.grant_id && *renewal > claim.renewal);
        if freed {
            return Judgement::Refused(Unvouched::Freed);
        }
        // Its quota ends Q after its last report's send time; a copy lapsing
        // no later could have been issued again before it ended.
        let quota_until_ms = record.last_sent_ms.saturating_add(silence.quota_lease_ms);
        if claim.expires_ms <= quota_until_ms {
            return Judgement::Refused(Unvouched::LapsesInQuota);
        }
        match silence
            .quota_over_after_ms
            .checked_sub(silence.silent_for_ms)
        {
            Some(ms) if ms > 0 => Judgement::In { ms },
            _ => Judgement::Now,
        }
    }
}

impl ServerRecord {
    /// Adds entries to the record of report `number` (or the latest one
    /// before it).
    fn add(&mut self, number: u64, superseded: &[SupersededGrant]) {
        if superseded.is_empty() {
            return;
        }
        let Some(report) = self.reports.iter_mut().rev().find(|r| r.number <= number) else {
            return;
        };
        report
            .entries
            .extend(superseded.iter().map(|s| (s.grant_id.clone(), s.renewal)));
        self.entries += superseded.len();
        self.trim();
    }

    /// Forgets the oldest reports beyond [`REPORTS_KEPT`] and [`ENTRIES_KEPT`].
    fn trim(&mut self) {
        while self.reports.len() > REPORTS_KEPT
            || (self.entries > ENTRIES_KEPT && self.reports.len() > 1)
        {
            let oldest = self.reports.pop_front().expect("more than one report");
            self.entries -= oldest.entries.len();
        }
    }
}

/// What the leader did with a hand-over claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeadHandOver {
    /// The grant's seats moved to the asker.
    Moved(u32),
    /// It may be decided in this many ms.
    In(u64),
    /// Not handed over; the borrow goes on as any other.
    Not,
}

impl App {
    /// Leader, under the lock that moves allocation (reports take it too,
    /// so the silent server cannot report between judgement and commit):
    /// hands the claimed grant's seats over to the asker when the claim
    /// holds ([`HandOverWatch::judge`]).
    pub(crate) async fn lead_hand_over(
        &self,
        ask: &BorrowAsk,
        claim: &HandOverClaim,
    ) -> Result<LeadHandOver, Refusal> {
        let holding = &claim.holding;
        if holding.server_id == ask.server_id || !self.holding_proven(ask, claim) {
            return Ok(LeadHandOver::Not);
        }
        let Some(silent_for_ms) = self.pool.silent_for_ms(&holding.server_id) else {
            return Ok(LeadHandOver::Not);
        };
        let silence = Silence {
            silent_for_ms,
            quota_over_after_ms: self.timing.lease().quota_over_after_ms(),
            quota_lease_ms: self.timing.quota_lease_ms,
        };
        match self.judge_hand_over(claim, silence) {
            Judgement::Now => self.commit_hand_over(ask, claim).await,
            Judgement::In { ms } => Ok(LeadHandOver::In(ms)),
            Judgement::Refused(reason) => {
                tracing::debug!(
                    "grant {} of `{}` is not handed over: {reason}",
                    claim.grant_id,
                    holding.server_id
                );
                Ok(LeadHandOver::Not)
            }
        }
    }

    /// Whether the claim's holding proof proves it, for the ask's feature.
    fn holding_proven(&self, ask: &BorrowAsk, claim: &HandOverClaim) -> bool {
        let holding = &claim.holding;
        let proven = HoldingClaim {
            grant: GrantClaim {
                grant_id: &claim.grant_id,
                client_id: &claim.client_id,
                feature: &ask.feature,
                count: claim.count,
            },
            server_id: &holding.server_id,
            boot: holding.boot,
            report: holding.report,
            renewal: holding.renewal,
            expires_ms: holding.expires_ms,
        };
        grant_proof::verify_holding(&self.pool_key, &proven, holding.proof.as_str()).is_ok()
    }

    /// The watch's judgement; a grant judged `Now` is recorded as handed
    /// over before the commit, so whatever becomes of that, it is never
    /// handed over twice.
    fn judge_hand_over(&self, claim: &HandOverClaim, silence: Silence) -> Judgement {
        let holding = &claim.holding;
        let watched = Claim {
            grant_id: &claim.grant_id,
            server_id: &holding.server_id,
            boot: holding.boot,
            report: holding.report,
            renewal: holding.renewal,
            expires_ms: holding.expires_ms,
        };
        let mut watch = self
            .pool
            .hand_overs
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let judgement = match watch.judge(&watched, silence) {
            // The deliberate bug of `Mutations::hand_over_without_wait`.
            Judgement::In { .. } if self.mutations.hand_over_without_wait => Judgement::Now,
            Judgement::Refused(Unvouched::LapsesInQuota)
                if self.mutations.hand_over_without_wait =>
            {
                Judgement::Now
            }
            judgement => judgement,
        };
        if judgement == Judgement::Now {
            watch.handed_over(&holding.server_id, &claim.grant_id);
        }
        judgement
    }

    /// Commits the move of the grant's seats from its silent server to the asker.
    async fn commit_hand_over(
        &self,
        ask: &BorrowAsk,
        claim: &HandOverClaim,
    ) -> Result<LeadHandOver, Refusal> {
        let from = &claim.holding.server_id;
        let command = ControlCommand::Borrow {
            feature: ask.feature.clone(),
            recipient: ask.server_id.clone(),
            source: BorrowSource::HandOver {
                server: from.clone(),
                grant_id: claim.grant_id.clone(),
            },
            seats: claim.count,
        };
        match self.pool.commit(command).await? {
            ControlOutcome::Moved { seats } => {
                tracing::info!(
                    "grant {} of `{}` handed over from `{from}` to `{}` with its {seats} seats",
                    claim.grant_id,
                    ask.feature,
                    ask.server_id
                );
                Ok(LeadHandOver::Moved(seats))
            }
            _ => Ok(LeadHandOver::Not),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const Q: u64 = 2_500;

    fn silence(silent_for_ms: u64) -> Silence {
        Silence {
            silent_for_ms,
            quota_over_after_ms: 2_900,
            quota_lease_ms: Q,
        }
    }

    fn claim(report: u64, renewal: u64, expires_ms: u64) -> Claim<'static> {
        Claim {
            grant_id: "g",
            server_id: "A",
            boot: 7,
            report,
            renewal,
            expires_ms,
        }
    }

    fn entry(grant_id: &str, renewal: u64) -> SupersededGrant {
        SupersededGrant {
            grant_id: grant_id.into(),
            renewal,
        }
    }

    /// A's reports 1..=5, sent every 300 ms from 1,000 ms on its clock.
    fn watch() -> HandOverWatch {
        let mut watch = HandOverWatch::default();
        for number in 1..=5 {
            watch.reported("A", (7, number, 700 + 300 * number), &[]);
        }
        watch
    }

    #[test]
    fn a_claim_is_handed_over_once_the_quota_has_surely_ended() {
        let watch = watch();
        // Last report sent at 2,200: the quota runs to 4,700.
        let fresh = claim(5, 3, 6_000);
        assert_eq!(
            watch.judge(&fresh, silence(1_000)),
            Judgement::In { ms: 1_900 }
        );
        assert_eq!(watch.judge(&fresh, silence(2_900)), Judgement::Now);
    }

    #[test]
    fn claims_the_leader_cannot_vouch_for_are_refused() {
        let mut watch = watch();
        let cases = [
            (
                Claim {
                    server_id: "B",
                    ..claim(5, 3, 6_000)
                },
                Unvouched::NotHeard,
            ),
            (
                Claim {
                    boot: 8,
                    ..claim(5, 3, 6_000)
                },
                Unvouched::Restarted,
            ),
            (claim(1, 3, 6_000), Unvouched::RecordTooShort),
            (claim(5, 3, 4_700), Unvouched::LapsesInQuota),
        ];
        for (claim, why) in cases {
            assert_eq!(
                watch.judge(&claim, silence(5_000)),
                Judgement::Refused(why),
                "{claim:?}"
            );
        }
        // Checked in on A (reported with report 5), or superseded by a later
        // heartbeat elsewhere that the leader passed on to A: refused.
        watch.reported(
            "A",
            (7, 6, 2_500),
            &[entry("g", SupersededGrant::CHECKED_IN)],
        );
        assert!(matches!(
            watch.judge(&claim(5, 3, 6_000), silence(5_000)),
            Judgement::Refused(_)
        ));
        let mut watch = self::watch();
        watch.told("A", 5, &[entry("g", 4)]);
        assert!(matches!(
            watch.judge(&claim(5, 3, 6_000), silence(5_000)),
            Judgement::Refused(_)
        ));
        // A supersede up to the claim's own renewal (its own conversion) is no obstacle.
        assert_eq!(
            watch.judge(&claim(5, 4, 6_000), silence(5_000)),
            Judgement::Now
        );
    }

    #[test]
    fn a_grant_is_handed_over_once_and_a_new_run_starts_afresh() {
        let mut watch = watch();
        watch.handed_over("A", "g");
        assert!(matches!(
            watch.judge(&claim(5, 3, 6_000), silence(5_000)),
            Judgement::Refused(_)
        ));
        watch.reported("A", (9, 1, 100), &[]);
        let old_run = claim(5, 3, 6_000);
        assert!(matches!(
            watch.judge(&old_run, silence(5_000)),
            Judgement::Refused(_)
        ));
        watch.clear();
        assert!(matches!(
            watch.judge(&old_run, silence(5_000)),
            Judgement::Refused(_)
        ));
    }

    #[test]
    fn the_record_is_bounded_and_a_claim_older_than_it_is_refused() {
        let mut watch = HandOverWatch::default();
        for number in 1..=(REPORTS_KEPT as u64 + 10) {
            watch.reported("A", (7, number, number), &[entry("x", 1)]);
        }
        let record = &watch.servers["A"];
        assert_eq!(record.reports.len(), REPORTS_KEPT);
        assert_eq!(record.entries, REPORTS_KEPT);
        assert!(matches!(
            watch.judge(&claim(5, 3, u64::MAX), silence(5_000)),
            Judgement::Refused(_)
        ));
    }
}
