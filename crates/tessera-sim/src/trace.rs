//! What happened in a run, as the programs and servers saw it, and the
//! checkers that judge it.
//!
//! - **No over-issue** ([`Trace::over_issue`]): the seats the programs
//!   themselves believed valid, by their own clocks, never exceed the hard
//!   limit at any instant. Only the programs' records count here, never a
//!   server's opinion.
//! - **Committed states add up** ([`Trace::applied`]): in every control state
//!   any server applied, each feature's allocations + parked seats + free pool
//!   equal the seats of its codes, and no two servers applied different
//!   states at the same log index.
//! - **No acknowledged grant is lost** ([`Trace::server_crashed`],
//!   [`Trace::restored`]): a server that crashed while a grant it answered was
//!   still believed by its program reads that grant back from its store.
//! - **Issuer invariants** ([`TraceObserver::invariant_broken`]): after every
//!   change, each server's tables add up and its counted grants hold exactly
//!   the seats its table says are in use.
//! - **Pool-wide rules** ([`Trace::rules`]): where the seed drew `reserve`
//!   and `max` rules, the seats the programs believed valid, by user, never
//!   break them at any instant the over-issue checker looks at
//!   ([`crate::rules::breaches`] says what is checked).
//! - **Liveness** is judged by the probe (see `programs.rs`) and recorded here.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tessera_client::ClientError;
use tessera_core::policy::Policy;
use tessera_core::ControlState;
use tessera_server::seams::Observer;

use crate::clock::true_now;
use crate::rules::{self, RuleKind};
use crate::scenario::FEATURE;

/// The checker of the states servers applied at each log index.
pub const COMMITTED_STATE: &str = "committed-state";

/// One broken rule, with when it was seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub at: Duration,
    pub checker: &'static str,
    pub what: String,
}

/// Whose seats a grant holds, as the pool's rules judge them: the user and
/// host its program sent (for a temporary license, its token's ticket and
/// device).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Whose {
    pub user: String,
    pub host: String,
}

impl Whose {
    pub fn new(user: &str, host: &str) -> Whose {
        Whose {
            user: user.to_string(),
            host: host.to_string(),
        }
    }
}

/// A grant as its program believed in it.
#[derive(Clone, Debug)]
struct Belief {
    program: String,
    whose: Whose,
    count: u32,
    /// When the program got the answer.
    start: Duration,
    /// The latest validity the program saw (send time + lease).
    until: Duration,
    /// When the program stopped believing (released, dropped, lost, crashed).
    end: Option<Duration>,
}

impl Belief {
    fn stop(&self) -> Duration {
        self.end.map_or(self.until, |end| end.min(self.until))
    }

    /// When the program believed in the grant, cut at `until`; `None` if
    /// never. Every checker of beliefs judges these same spans.
    fn span(&self, until: Duration) -> Option<(Duration, Duration)> {
        let stop = self.stop().min(until);
        (stop > self.start).then_some((self.start, stop))
    }
}

/// Totals for the report.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub grants: u64,
    /// Temporary licenses taken (seed 004).
    pub temporaries: u64,
    pub refusals: u64,
    /// Refusals because a `max` rule was reached.
    pub refused_by_max: u64,
    /// Refusals because the free seats were kept by `reserve` rules.
    pub refused_by_reserve: u64,
    pub renewals: u64,
    pub fail_overs: u64,
    pub lost_seats: u64,
    pub states_applied: u64,
    pub admin_changes: u64,
    pub restores_checked: u64,
    /// Grants of silent servers handed over with their seats (the most any
    /// applied state counted).
    pub hand_overs: u64,
    /// Believed grants a server that synced in the background lost in a
    /// crash, and restarted without, in a grace period.
    pub lost_unsynced: u64,
}

#[derive(Default)]
pub struct Trace {
    lines: Vec<String>,
    digest: Sha256,
    beliefs: BTreeMap<String, Belief>,
    /// Per grant, the server that last answered for it.
    holder: BTreeMap<String, String>,
    /// Per (grant, server): the latest validity that server's answers gave.
    acks: BTreeMap<(String, String), Duration>,
    /// Per server: grants it must read back at its next start.
    expected_restore: BTreeMap<String, (Duration, BTreeSet<String>)>,
    /// (server, grant): copies a server dropped on the pool's word since its
    /// last start. A program may still believe such a copy when the answer
    /// of the server that superseded it was lost; that server's newer,
    /// durable copy holds the seat then.
    dropped: BTreeSet<(String, String)>,
    /// Per log index: the digest of the state and the first server to apply it.
    states: BTreeMap<u64, ([u8; 32], String)>,
    /// When the hard limit grew, as committed states show.
    limits: Vec<(Duration, u32)>,
    /// The servers' hostids, with host-bound codes: the hard limit is then
    /// the most seats one server serves (codes for any host, and its own),
    /// not the seats of every code.
    hostids: Vec<String>,
    /// The feature's `reserve` and `max` rules, as the core parsed them
    /// from the pool file, if the seed drew them.
    rules: Option<Policy>,
    /// When the feature's nominal seats (every code's) grew, as committed
    /// states show: the total the reserves are judged against.
    nominal: Vec<(Duration, u64)>,
    /// The servers answer grants before syncing them
    /// ([`crate::Options::background_sync`]): a crash may lose some, provided
    /// the restart begins a grace period.
    background_sync: bool,
    pub violations: Vec<Violation>,
    pub counts: Counts,
}

/// The trace, shared by every host of a run (they all run on one thread).
#[derive(Clone, Default)]
pub struct Shared(Arc<Mutex<Trace>>);

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, Trace> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Lines kept for a failure report are the last this many.
pub const TAIL_LINES: usize = 400;

fn ms(t: Duration) -> String {
    format!("{:>9.3}", t.as_secs_f64())
}

impl Trace {
    /// Records a line of the run's story; every line goes into the digest
    /// that shows two runs of one seed were the same.
    pub fn note(&mut self, who: &str, what: &str) {
        let line = format!("{} {who:<10} {what}", ms(true_now()));
        self.digest.update(line.as_bytes());
        self.digest.update(b"\n");
        self.lines.push(line);
    }

    pub fn digest(&self) -> String {
        hex::encode(self.digest.clone().finalize())
    }

    pub fn story(&self) -> Vec<String> {
        self.lines.clone()
    }

    pub fn tail(&self, lines: usize) -> String {
        let start = self.lines.len().saturating_sub(lines);
        let mut out = String::new();
        for line in &self.lines[start..] {
            let _ = writeln!(out, "{line}");
        }
        out
    }

    pub fn violate(&mut self, checker: &'static str, what: String) {
        self.note("CHECKER", &format!("VIOLATION {checker}: {what}"));
        self.violations.push(Violation {
            at: true_now(),
            checker,
            what,
        });
    }

    /// The servers answer grants before syncing them.
    pub fn set_background_sync(&mut self, background_sync: bool) {
        self.background_sync = background_sync;
    }

    /// The servers' hostids, with host-bound codes.
    pub fn set_hostids(&mut self, hostids: Vec<String>) {
        self.hostids = hostids;
    }

    pub fn set_initial_limit(&mut self, seats: u32) {
        self.limits = vec![(Duration::ZERO, seats)];
    }

    /// The feature's `reserve` and `max` rules, and its nominal seats at
    /// the start.
    pub fn set_rules(&mut self, rules: Policy, nominal: u64) {
        self.rules = Some(rules);
        self.nominal = vec![(Duration::ZERO, nominal)];
    }

    pub fn hard_limit_now(&self) -> u32 {
        self.limits.last().map_or(0, |(_, seats)| *seats)
    }

    // ----- what programs report -----

    pub fn granted(
        &mut self,
        program: &str,
        whose: &Whose,
        grant: &str,
        count: u32,
        server: &str,
        until: Duration,
    ) {
        self.counts.grants += 1;
        self.note(program, &format!("granted {grant} x{count} by {server}"));
        self.beliefs.insert(
            grant.to_string(),
            Belief {
                program: program.to_string(),
                whose: whose.clone(),
                count,
                start: true_now(),
                until,
                end: None,
            },
        );
        self.holder.insert(grant.to_string(), server.to_string());
        self.ack(grant, server, until);
    }

    /// A program took a temporary license (seed 004): believed like a seat
    /// until its expiry or return, but kept by the pool's log, not by a
    /// server's store, so no restore is expected of it.
    pub fn temporary(
        &mut self,
        program: &str,
        whose: &Whose,
        license: &str,
        seats: u32,
        server: &str,
        until: Duration,
    ) {
        self.counts.grants += 1;
        self.counts.temporaries += 1;
        self.note(
            program,
            &format!("temporary {license} x{seats} by {server}"),
        );
        self.beliefs.insert(
            license.to_string(),
            Belief {
                program: program.to_string(),
                whose: whose.clone(),
                count: seats,
                start: true_now(),
                until,
                end: None,
            },
        );
    }

    pub fn refused(&mut self, program: &str, err: &ClientError) {
        self.counts.refusals += 1;
        match rules::refusal(err) {
            Some(RuleKind::Max) => self.counts.refused_by_max += 1,
            Some(RuleKind::Reserve) => self.counts.refused_by_reserve += 1,
            None => {}
        }
        self.note(program, &format!("refused: {err}"));
    }

    /// The program saw its seat renewed (or moved to another server).
    pub fn held(&mut self, grant: &str, server: &str, until: Duration) {
        let Some(belief) = self.beliefs.get_mut(grant) else {
            return;
        };
        if until > belief.until {
            belief.until = until;
            self.counts.renewals += 1;
        }
        if self.holder.get(grant).is_some_and(|s| s != server) {
            self.counts.fail_overs += 1;
            let program = belief.program.clone();
            self.note(&program, &format!("{grant} now held by {server}"));
        }
        self.holder.insert(grant.to_string(), server.to_string());
        self.ack(grant, server, until);
    }

    fn ack(&mut self, grant: &str, server: &str, until: Duration) {
        // The program now believes this server's answer; copies of the grant
        // on other servers are stale, and the pool drops them
        // (`tessera_server::copies`): they need not survive a crash.
        let stale: Vec<(String, String)> = self
            .acks
            .range((grant.to_string(), String::new())..)
            .take_while(|((g, _), _)| g == grant)
            .filter(|((_, at), _)| at != server)
            .map(|(key, _)| key.clone())
            .collect();
        for key in stale {
            self.acks.remove(&key);
        }
        let entry = self
            .acks
            .entry((grant.to_string(), server.to_string()))
            .or_default();
        *entry = (*entry).max(until);
    }

    /// The program stopped believing in the grant (`how`: released, dropped, lost).
    pub fn ended(&mut self, grant: &str, until: Duration, how: &str) {
        let Some(belief) = self.beliefs.get_mut(grant) else {
            return;
        };
        belief.until = belief.until.max(until);
        belief.end = Some(true_now());
        if how.starts_with("lost") {
            self.counts.lost_seats += 1;
        }
        let program = belief.program.clone();
        self.note(&program, &format!("{how} {grant}"));
    }

    /// Every program of `host` died with it.
    pub fn host_crashed(&mut self, host: &str) {
        let now = true_now();
        let prefix = format!("{host}/");
        for belief in self.beliefs.values_mut() {
            if belief.end.is_none() && belief.program.starts_with(&prefix) {
                belief.end = Some(now);
            }
        }
    }

    // ----- what servers report -----

    /// The server crashed (its disk kept, unless `wiped`): every grant it
    /// answered that a program still believed must come back at its restart.
    pub fn server_crashed(&mut self, server: &str, wiped: bool) {
        let now = true_now();
        if wiped {
            // What it answered before is gone with the disk, by design.
            self.expected_restore.remove(server);
            self.acks.retain(|(_, at), _| at != server);
            return;
        }
        let expected: BTreeSet<String> = self
            .acks
            .iter()
            .filter(|((grant, at), until)| {
                at == server
                    && **until > now
                    && self
                        .beliefs
                        .get(grant)
                        .is_some_and(|b| b.end.is_none_or(|end| end > now))
            })
            .map(|((grant, _), _)| grant.clone())
            .collect();
        self.expected_restore
            .insert(server.to_string(), (now, expected));
    }

    /// `server` started with `grants` from its store, in a grace period
    /// if `grace`. A server that syncs in the background may have lost
    /// grants its programs believe, only if it then begins a grace period
    /// (which the over-issue checker judges).
    pub fn restored(&mut self, server: &str, grants: &[String], grace: bool) {
        let in_grace = if grace { ", in a grace period" } else { "" };
        self.note(
            server,
            &format!(
                "started with {} grants from its store{in_grace}",
                grants.len()
            ),
        );
        let Some((crashed_at, expected)) = self.expected_restore.remove(server) else {
            return;
        };
        self.counts.restores_checked += 1;
        let found: BTreeSet<&String> = grants.iter().collect();
        let missing: Vec<&String> = expected
            .iter()
            .filter(|g| !found.contains(g))
            .filter(|g| !self.dropped.contains(&(server.to_string(), g.to_string())))
            .collect();
        self.dropped.retain(|(at, _)| at != server);
        if !missing.is_empty() && self.background_sync && grace {
            self.counts.lost_unsynced += missing.len() as u64;
            self.note(
                server,
                &format!("lost {missing:?}, answered but not yet synced, to the crash"),
            );
        } else if !missing.is_empty() {
            self.violate(
                "grant-durability",
                format!(
                    "server {server} crashed at {} s while programs held {} grants it had \
                     answered; after the restart it lacks {missing:?}",
                    crashed_at.as_secs_f64(),
                    expected.len()
                ),
            );
        }
    }

    /// With host-bound codes: the most seats of the feature one server
    /// serves, its own host's codes and those for any host.
    fn served_limit(&self, state: &ControlState) -> Option<u64> {
        if self.hostids.is_empty() {
            return None;
        }
        let codes = &state.pool()?.codes;
        self.hostids
            .iter()
            .map(|hostid| {
                codes
                    .iter()
                    .filter(|code| code.feature() == FEATURE)
                    .filter(|code| match &code.fields().hostid {
                        tessera_core::HostBinding::Host(bound) => bound == hostid,
                        _ => true,
                    })
                    .map(|code| u64::from(code.seats()))
                    .sum()
            })
            .max()
    }

    pub fn applied(&mut self, server: &str, index: u64, state: &ControlState) {
        self.counts.states_applied += 1;
        let hand_overs = state
            .allocations()
            .values()
            .flat_map(|allocation| allocation.moved.values())
            .map(|counts| counts.hand_overs)
            .sum();
        self.counts.hand_overs = self.counts.hand_overs.max(hand_overs);
        for (feature, allocation) in state.allocations() {
            let code_seats: u64 = state
                .pool()
                .map(|pool| {
                    pool.codes
                        .iter()
                        .filter(|code| code.feature() == feature.as_str())
                        .map(|code| u64::from(code.seats()))
                        .sum()
                })
                .unwrap_or(0);
            let allocated: u64 = allocation.servers.values().map(|&n| u64::from(n)).sum();
            let parked: u64 = allocation.parked.values().map(|&n| u64::from(n)).sum();
            // Temporary licenses (seed 004) are seats of no server.
            let temporary: u64 = allocation.temporary_allocation();
            let total = allocated + parked + u64::from(allocation.free_pool) + temporary;
            if total != code_seats {
                self.violate(
                    COMMITTED_STATE,
                    format!(
                        "server {server} at log index {index}: feature {feature} has \
                         allocations {allocated} + parked {parked} + temporary {temporary} + \
                         free pool {} = {total}, but its codes carry {code_seats} seats",
                        allocation.free_pool
                    ),
                );
            }
            if feature == FEATURE {
                let seats = self.served_limit(state).unwrap_or(code_seats) as u32;
                if seats > self.hard_limit_now() {
                    self.limits.push((true_now(), seats));
                    self.note(server, &format!("hard limit now {seats}"));
                }
                if self.rules.is_some() && self.nominal.last().is_some_and(|(_, n)| code_seats > *n)
                {
                    self.nominal.push((true_now(), code_seats));
                }
            }
        }
        let bytes = serde_json::to_vec(state).unwrap_or_default();
        let digest: [u8; 32] = Sha256::digest(&bytes).into();
        match self.states.get(&index) {
            Some((seen, first)) if *seen != digest => {
                let first = first.clone();
                self.violate(
                    COMMITTED_STATE,
                    format!(
                        "servers {first} and {server} applied different states at log index {index}"
                    ),
                );
            }
            Some(_) => {}
            None => {
                self.states.insert(index, (digest, server.to_string()));
            }
        }
    }

    // ----- the over-issue checker -----

    /// Sweeps every program's belief over time; returns the peak seats
    /// believed at once, and records a violation for every instant the hard
    /// limit (as committed so far) was exceeded.
    pub fn over_issue(&mut self, until: Duration) -> u32 {
        let mut changes: BTreeMap<Duration, i64> = BTreeMap::new();
        for belief in self.beliefs.values() {
            let Some((start, stop)) = belief.span(until) else {
                continue;
            };
            *changes.entry(start).or_default() += i64::from(belief.count);
            *changes.entry(stop).or_default() -= i64::from(belief.count);
        }
        let mut held: i64 = 0;
        let mut peak: i64 = 0;
        let mut reported = 0;
        let mut found = Vec::new();
        for (at, change) in changes {
            held += change;
            peak = peak.max(held);
            let limit = self.limit_at(at);
            if held > i64::from(limit) && reported < 5 {
                reported += 1;
                found.push((at, held, limit));
            }
        }
        for (at, held, limit) in found {
            let holders = self.holders_at(at);
            self.violations.push(Violation {
                at,
                checker: "over-issue",
                what: format!(
                    "at {:.3} s programs believed {held} seats valid, hard limit {limit}: {holders}",
                    at.as_secs_f64()
                ),
            });
        }
        peak as u32
    }

    // ----- the checker of the pool-wide rules -----

    /// Sweeps the beliefs as [`Trace::over_issue`] does and, at each instant
    /// it looks at, judges the seats believed valid, by whose they are,
    /// against the feature's `reserve` and `max` rules
    /// ([`rules::breaches`]); records a violation for each rule broken (the
    /// first few instants of each).
    pub fn rules(&mut self, until: Duration) {
        const REPORTED_MAX: usize = 5;
        let Some(policy) = &self.rules else {
            return;
        };
        let mut changes: BTreeMap<Duration, BTreeMap<&Whose, i64>> = BTreeMap::new();
        for belief in self.beliefs.values() {
            let Some((start, stop)) = belief.span(until) else {
                continue;
            };
            let count = i64::from(belief.count);
            *changes
                .entry(start)
                .or_default()
                .entry(&belief.whose)
                .or_default() += count;
            *changes
                .entry(stop)
                .or_default()
                .entry(&belief.whose)
                .or_default() -= count;
        }
        let mut held: BTreeMap<&Whose, i64> = BTreeMap::new();
        let mut found: Vec<(Duration, rules::Breach, u64)> = Vec::new();
        let (mut max_reported, mut reserve_reported) = (0, 0);
        for (at, change) in changes {
            for (whose, delta) in change {
                let seats = held.entry(whose).or_default();
                *seats += delta;
                if *seats == 0 {
                    held.remove(whose);
                }
            }
            let holding: Vec<_> = held
                .iter()
                .map(|(whose, &seats)| {
                    (
                        rules::asker(&whose.user, &whose.host),
                        u32::try_from(seats).unwrap_or(0),
                    )
                })
                .collect();
            let total = self.nominal_at(at);
            for breach in rules::breaches(policy, total, &holding) {
                let reported = match breach.kind {
                    RuleKind::Max => &mut max_reported,
                    RuleKind::Reserve => &mut reserve_reported,
                };
                if *reported < REPORTED_MAX {
                    *reported += 1;
                    found.push((at, breach, total));
                }
            }
        }
        for (at, breach, total) in found {
            let checker = match breach.kind {
                RuleKind::Max => "policy-max",
                RuleKind::Reserve => "policy-reserve",
            };
            let by_user = self.seats_by_user_at(at);
            let holders = self.holders_at(at);
            self.violations.push(Violation {
                at,
                checker,
                what: format!(
                    "at {:.3} s, of {total} nominal seats, {}; seats by user: {by_user:?}; \
                     {holders}",
                    at.as_secs_f64(),
                    breach.what
                ),
            });
        }
    }

    /// The feature's nominal seats at `at`, as committed so far.
    fn nominal_at(&self, at: Duration) -> u64 {
        self.nominal
            .iter()
            .filter(|(since, _)| *since <= at)
            .map(|(_, seats)| *seats)
            .max()
            .unwrap_or(0)
    }

    fn seats_by_user_at(&self, at: Duration) -> BTreeMap<&str, u32> {
        let mut by_user: BTreeMap<&str, u32> = BTreeMap::new();
        for belief in self.beliefs.values() {
            if belief.start <= at && at < belief.stop() {
                *by_user.entry(belief.whose.user.as_str()).or_default() += belief.count;
            }
        }
        by_user
    }

    fn limit_at(&self, at: Duration) -> u32 {
        self.limits
            .iter()
            .filter(|(since, _)| *since <= at)
            .map(|(_, seats)| *seats)
            .max()
            .unwrap_or(0)
    }

    fn holders_at(&self, at: Duration) -> String {
        const LISTED_MAX: usize = 12;
        let mut per_server: BTreeMap<&str, u32> = BTreeMap::new();
        for (grant, belief) in &self.beliefs {
            if belief.start <= at && at < belief.stop() {
                let server = self.holder.get(grant).map_or("?", String::as_str);
                *per_server.entry(server).or_default() += belief.count;
            }
        }
        let mut out = format!("seats by the server that last answered: {per_server:?}; ");
        let holding = self
            .beliefs
            .iter()
            .filter(|(_, belief)| belief.start <= at && at < belief.stop());
        for (listed, (grant, belief)) in holding.enumerate() {
            if listed == LISTED_MAX {
                out.push('…');
                break;
            }
            {
                let server = self.holder.get(grant).map_or("?", String::as_str);
                let _ = write!(
                    out,
                    "{grant} x{} ({} as {}, last by {server}, until {:.3} s); ",
                    belief.count,
                    belief.program,
                    belief.whose.user,
                    belief.until.as_secs_f64()
                );
            }
        }
        out
    }
}

/// The servers' view into the trace.
pub struct TraceObserver(pub Shared);

impl Observer for TraceObserver {
    fn applied(&self, server: &str, index: u64, state: &ControlState) {
        self.0.lock().applied(server, index, state);
    }

    fn restored(&self, server: &str, grant_ids: &[String], grace: bool) {
        self.0.lock().restored(server, grant_ids, grace);
    }

    fn invariant_broken(&self, server: &str, broken: &str) {
        self.0
            .lock()
            .violate("issuer-invariants", format!("server {server}: {broken}"));
    }

    fn dropped_stale_copy(&self, server: &str, grant_id: &str) {
        self.0
            .lock()
            .dropped
            .insert((server.to_string(), grant_id.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::set_between_steps;
    use crate::rules::tests::{policy, RULES};

    fn at(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    /// A trace of a feature of `seats` seats under [`RULES`] (2 kept for the
    /// group, 1 for `dan`; `eve` 1 at most, the group 3).
    fn traced(seats: u32) -> Trace {
        let mut trace = Trace::default();
        trace.set_initial_limit(seats);
        trace.set_rules(policy(seats, RULES), u64::from(seats));
        trace
    }

    /// `user` on client-1 is granted `count` seats at `from` ms, believed
    /// until `until` ms.
    fn grant(trace: &mut Trace, grant: &str, user: &str, count: u32, from: u64, until: u64) {
        set_between_steps(at(from));
        let whose = Whose::new(user, "client-1");
        trace.granted(
            &format!("client-1/{user}"),
            &whose,
            grant,
            count,
            "A",
            at(until),
        );
    }

    fn checkers(trace: &Trace) -> Vec<(&'static str, Duration)> {
        trace.violations.iter().map(|v| (v.checker, v.at)).collect()
    }

    #[test]
    fn beliefs_within_the_rules_break_none() {
        let mut trace = traced(6);
        // Others take the 3 unreserved seats, the group its 2, dan his 1.
        grant(&mut trace, "g1", "fox", 2, 0, 2_000);
        grant(&mut trace, "g2", "eve", 1, 100, 2_000);
        grant(&mut trace, "g3", "ana", 2, 200, 2_000);
        grant(&mut trace, "g4", "dan", 1, 300, 2_000);
        // Released by fox, then taken by the group beyond its reserve.
        set_between_steps(at(1_000));
        trace.ended("g1", at(2_000), "released");
        grant(&mut trace, "g5", "ben", 1, 1_000, 2_000);
        trace.rules(at(5_000));
        assert_eq!(checkers(&trace), Vec::new(), "{:?}", trace.violations);
    }

    #[test]
    fn a_max_believed_beyond_is_a_violation_at_its_instant() {
        let mut trace = traced(10);
        grant(&mut trace, "g1", "eve", 1, 0, 2_000);
        // A temporary license of eve's ticket counts as eve's, on any device.
        set_between_steps(at(500));
        let device = Whose::new("eve", "dev-client-2-p4-0");
        trace.temporary("client-2/p4.0", &device, "ta1", 1, "B", at(9_000));
        trace.rules(at(5_000));
        assert_eq!(checkers(&trace), vec![("policy-max", at(500))]);
        let what = &trace.violations[0].what;
        assert!(
            what.contains("max \"1 user:eve\": those it names held 2 seats")
                && what.contains("of 10 nominal seats")
                && what.contains("\"eve\": 2"),
            "{what}"
        );
    }

    #[test]
    fn others_believed_in_reserved_seats_are_a_violation() {
        let mut trace = traced(6);
        grant(&mut trace, "g1", "fox", 2, 0, 2_000);
        grant(&mut trace, "g2", "eve", 1, 100, 2_000);
        // The group holds none and dan none: only 3 seats were others'.
        grant(&mut trace, "g3", "carl", 1, 300, 1_000);
        trace.rules(at(5_000));
        assert_eq!(checkers(&trace), vec![("policy-reserve", at(300))]);
        let what = &trace.violations[0].what;
        assert!(
            what.contains("others held 4, reserve \"2 group:design\" held 0, reserve \"1 user:dan\" held 0: 7 seats counted")
                && what.contains("of 6"),
            "{what}"
        );
        // A seat more in the pool's codes, committed before, and it fits.
        let mut trace = traced(6);
        trace.nominal.push((at(200), 7));
        grant(&mut trace, "g1", "fox", 2, 0, 2_000);
        grant(&mut trace, "g2", "eve", 1, 100, 2_000);
        grant(&mut trace, "g3", "carl", 1, 300, 1_000);
        trace.rules(at(5_000));
        assert_eq!(checkers(&trace), Vec::new());
    }
}
