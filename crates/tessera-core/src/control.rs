//! The pool's replicated control state: the installed pool file and the
//! allocations of every feature. Every server applies the same commands in
//! the same order (the Raft log), so this module must be deterministic: no
//! clock, no keys, no host. What depends on the server (signatures, expiry,
//! host binding, whether a server is down) is judged by the leader before it
//! proposes a command, and by each server again when it issues.
//!
//! Allocation moves between servers (seed 002) in three ways, each one
//! command, each keeping allocations + parked + free pool equal to the
//! feature's seats:
//! - [`ControlCommand::Borrow`] takes from the free pool, or from a server
//!   the leader judged safe to take from (down long enough, or removed);
//! - from a live server only with its consent: the leader commits a
//!   [`ControlCommand::RequestRelease`]; from the moment a server applies
//!   it, that server holds the requested seats back from new checkouts
//!   ([`FeatureAllocation::reserved`]); it then proposes
//!   [`ControlCommand::Release`] with what it can spare, and that one command
//!   lowers its allocation, raises the borrower's and closes the request;
//! - an administrator's distribution sets targets: a server below its target
//!   fills from the free pool; a server above holds back the excess and
//!   gives it back with [`ControlCommand::Drain`] as its seats return.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::distribution::DistributionTable;
use crate::pool_file::PoolFile;

/// A live server asked to give seats to another (its consent is pending).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseRequest {
    pub donor: String,
    pub recipient: String,
    pub seats: u32,
}

/// Seats moved to and from one server since the feature was installed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveCounts {
    /// Borrows this server received.
    pub borrows: u64,
    /// Seats it received (borrows and distribution changes).
    pub seats_in: u64,
    /// Seats it gave (lent, drained, or reassigned while it was down).
    pub seats_out: u64,
}

/// Allocations of one feature across the pool.
///
/// Invariant: the servers' allocations + `parked` + `free_pool` equal `nominal_seats`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeatureAllocation {
    /// Seats of every code of the feature in the installed pool file.
    pub nominal_seats: u32,
    pub free_pool: u32,
    /// Allocation per server of the pool.
    pub servers: BTreeMap<String, u32>,
    /// Allocation of servers removed from the pool: nobody issues it, and it
    /// stays here until the leader judges the removed server's grants lapsed.
    pub parked: BTreeMap<String, u32>,
    /// A distribution the administrator set that is not reached yet, per server.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub targets: BTreeMap<String, u32>,
    /// Consent requests by id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub requests: BTreeMap<u64, ReleaseRequest>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub moved: BTreeMap<String, MoveCounts>,
    /// Per server: how many committed commands let it issue more than before
    /// (its allocation less what it holds back grew). A donor's answer names
    /// this count and applies only while it is unchanged: between the answer
    /// and its commit the donor may have issued into the larger room, even if
    /// allocation and target are back where they were (target 3, then 4,
    /// then 3 again).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub loosened: BTreeMap<String, u64>,
}

impl FeatureAllocation {
    /// Seats `server` may issue: its allocation less what it holds back.
    pub fn room(&self, server: &str) -> u32 {
        self.allocation_of(server)
            .saturating_sub(self.reserved(server))
    }

    pub fn loosened_count(&self, server: &str) -> u64 {
        self.loosened.get(server).copied().unwrap_or(0)
    }

    /// Counts, for every server whose room grew from `before`, one loosening.
    fn count_loosenings(&mut self, before: &FeatureAllocation) {
        let grown: Vec<String> = self
            .servers
            .keys()
            .filter(|s| self.room(s) > before.room(s))
            .cloned()
            .collect();
        for server in grown {
            *self.loosened.entry(server).or_default() += 1;
        }
    }

    pub fn check_invariants(&self, feature: &str) -> Result<(), String> {
        let total: u64 = self.servers.values().map(|&n| u64::from(n)).sum::<u64>()
            + self.parked.values().map(|&n| u64::from(n)).sum::<u64>()
            + u64::from(self.free_pool);
        if total != u64::from(self.nominal_seats) {
            return Err(format!(
                "feature `{feature}`: allocations, parked seats and free pool add to {total}, \
                 not {}",
                self.nominal_seats
            ));
        }
        for server in self.targets.keys() {
            if !self.servers.contains_key(server) {
                return Err(format!(
                    "feature `{feature}`: a target names server `{server}`, not in the pool"
                ));
            }
        }
        for (id, request) in &self.requests {
            if !self.servers.contains_key(&request.donor)
                || !self.servers.contains_key(&request.recipient)
            {
                return Err(format!(
                    "feature `{feature}`: request {id} names a server not in the pool"
                ));
            }
        }
        Ok(())
    }

    pub fn allocation_of(&self, server: &str) -> u32 {
        self.servers.get(server).copied().unwrap_or(0)
    }

    /// Seats `server` holds back from new checkouts: those asked of it by
    /// pending requests, and its allocation above its target.
    pub fn reserved(&self, server: &str) -> u32 {
        let requested: u64 = self
            .requests
            .values()
            .filter(|r| r.donor == server)
            .map(|r| u64::from(r.seats))
            .sum();
        let excess = self
            .targets
            .get(server)
            .map_or(0, |&t| self.allocation_of(server).saturating_sub(t));
        u32::try_from(requested + u64::from(excess)).unwrap_or(u32::MAX)
    }

    /// The seats `server` may issue when `served_seats` of the nominal seats
    /// are served on it: its allocation scaled down in proportion, rounded
    /// down. The sum over servers never exceeds `served_seats`, whatever
    /// subset of codes a server judges unserved.
    pub fn cap(&self, server: &str, served_seats: u32) -> u32 {
        let allocation = self.allocation_of(server);
        if served_seats >= self.nominal_seats || self.nominal_seats == 0 {
            return allocation.min(served_seats);
        }
        (u64::from(allocation) * u64::from(served_seats) / u64::from(self.nominal_seats)) as u32
    }

    /// What `server`, with `in_use` seats held by clients (counted or held
    /// aside), answers to the requests and the target it has: one
    /// [`ControlCommand::Release`] per request and a [`ControlCommand::Drain`]
    /// of its excess, each giving only seats no client holds. All name the
    /// same allocation, so at most one of them applies; the server answers
    /// again from the state that follows.
    pub fn answers(&self, feature: &str, server: &str, in_use: u32) -> Vec<ControlCommand> {
        let allocation = self.allocation_of(server);
        let mut unused = allocation.saturating_sub(in_use);
        let mut out = Vec::new();
        for (&request_id, request) in self.requests.iter().filter(|(_, r)| r.donor == server) {
            let seats = request.seats.min(unused);
            unused -= seats;
            out.push(ControlCommand::Release {
                feature: feature.to_string(),
                request_id,
                seats,
                allocation_before: allocation,
                loosened_before: self.loosened_count(server),
            });
        }
        if let Some(&target) = self.targets.get(server) {
            let seats = allocation.saturating_sub(target).min(unused);
            if seats > 0 {
                out.push(ControlCommand::Drain {
                    feature: feature.to_string(),
                    server: server.to_string(),
                    seats,
                    allocation_before: allocation,
                    target_before: target,
                    loosened_before: self.loosened_count(server),
                });
            }
        }
        out
    }

    fn count_in(&mut self, server: &str, seats: u32, borrow: bool) {
        let counts = self.moved.entry(server.to_string()).or_default();
        counts.seats_in += u64::from(seats);
        counts.borrows += u64::from(borrow);
    }

    fn count_out(&mut self, server: &str, seats: u32) {
        self.moved.entry(server.to_string()).or_default().seats_out += u64::from(seats);
    }

    /// Moves `seats` of allocation from `from` to `to` (both servers of the
    /// pool) as a borrow. Pending targets follow: the seats come first out of
    /// the donor's excess over its target, and go first to the recipient's
    /// shortfall; beyond those, the targets move with the seats.
    fn move_between(&mut self, from: &str, to: &str, seats: u32) {
        let from_allocation = self.allocation_of(from);
        if let Some(t) = self.targets.get_mut(from) {
            let excess = from_allocation.saturating_sub(*t);
            *t = t.saturating_sub(seats.saturating_sub(excess));
        }
        self.take_into(to, seats, true);
        *self.servers.get_mut(from).expect("checked by the caller") -= seats;
        self.count_out(from, seats);
    }

    /// Adds `seats` to `to`'s allocation (taken from elsewhere by the caller).
    fn take_into(&mut self, to: &str, seats: u32, borrow: bool) {
        let to_allocation = self.allocation_of(to);
        if let Some(t) = self.targets.get_mut(to) {
            let shortfall = t.saturating_sub(to_allocation);
            *t += seats.saturating_sub(shortfall);
        }
        *self.servers.get_mut(to).expect("checked by the caller") += seats;
        self.count_in(to, seats, borrow);
    }

    /// Servers below their target take from the free pool, in `order`.
    fn fill(&mut self, order: &[String]) {
        for server in order {
            let Some(&target) = self.targets.get(server) else {
                continue;
            };
            let allocation = self.allocation_of(server);
            let more = target.saturating_sub(allocation).min(self.free_pool);
            if more > 0 {
                self.free_pool -= more;
                *self.servers.get_mut(server).expect("targets name servers") += more;
                self.count_in(server, more, false);
            }
        }
        let reached = self
            .targets
            .iter()
            .all(|(server, &t)| self.allocation_of(server) == t);
        if reached {
            self.targets.clear();
        }
    }
}

/// Where a borrow takes its seats from, as the leader judged it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BorrowSource {
    FreePool,
    /// A server of the pool that has been silent long enough for every grant
    /// it issued to have lapsed.
    DownServer(String),
    /// The parked allocation of a removed server, once its grants lapsed.
    Parked(String),
}

/// The key under which a pool re-formed from a lost majority parks every
/// seat at first (`ControlCommand::RecoverPool`). Not a valid server id, so
/// no server can be named so.
pub const LOST_MAJORITY: &str = "(lost majority)";

/// A command of the replicated log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlCommand {
    /// Install a pool file with a higher sequence number than the installed one.
    InstallPoolFile { text: String },
    /// The first command of a pool re-formed from the survivors of a lost
    /// majority: installs the pool file into an empty state with every seat
    /// parked under [`LOST_MAJORITY`], since the lost servers may have
    /// issued any of them. The leader gives each survivor back the seats its
    /// own grants hold, and the rest once every grant the lost servers could
    /// have made has lapsed (the wait for a silent server).
    RecoverPool { text: String },
    /// Give up to `seats` to `recipient` from a source that needs no consent.
    Borrow {
        feature: String,
        recipient: String,
        source: BorrowSource,
        seats: u32,
    },
    /// Ask live server `donor` for up to `seats` for `recipient`.
    RequestRelease {
        feature: String,
        donor: String,
        recipient: String,
        seats: u32,
    },
    /// The donor's consent: move `seats` (at most the request's) to the
    /// request's recipient and close it. Applied only while the donor's
    /// allocation is still `allocation_before`, so a stale or repeated
    /// answer changes nothing.
    Release {
        feature: String,
        request_id: u64,
        seats: u32,
        allocation_before: u32,
        /// [`FeatureAllocation::loosened_count`] of the donor when it answered.
        #[serde(default)]
        loosened_before: u64,
    },
    /// Close a request nobody answered.
    CancelRelease { feature: String, request_id: u64 },
    /// A server above its target gives `seats` back to the free pool.
    /// Applied only while its allocation, target and loosening count are
    /// unchanged.
    Drain {
        feature: String,
        server: String,
        seats: u32,
        allocation_before: u32,
        target_before: u32,
        #[serde(default)]
        loosened_before: u64,
    },
}

/// What applying a command did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlOutcome {
    Installed { sequence: u64 },
    Moved { seats: u32 },
    Requested { request_id: u64 },
    Cancelled,
    Refused { reason: String },
}

/// The state every server of the pool holds alike.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ControlState {
    pool_text: Option<String>,
    #[serde(skip)]
    pool: Option<PoolFile>,
    allocations: BTreeMap<String, FeatureAllocation>,
    #[serde(default)]
    next_request_id: u64,
}

impl PartialEq for ControlState {
    fn eq(&self, other: &Self) -> bool {
        self.pool_text == other.pool_text
            && self.allocations == other.allocations
            && self.next_request_id == other.next_request_id
    }
}

impl ControlState {
    /// The installed pool file, if any.
    pub fn pool(&self) -> Option<&PoolFile> {
        self.pool.as_ref()
    }

    pub fn pool_text(&self) -> Option<&str> {
        self.pool_text.as_deref()
    }

    pub fn allocations(&self) -> &BTreeMap<String, FeatureAllocation> {
        &self.allocations
    }

    pub fn allocation(&self, feature: &str) -> Option<&FeatureAllocation> {
        self.allocations.get(feature)
    }

    /// Parses the pool file again after loading a snapshot (it is not serialized twice).
    pub fn restore_parsed(&mut self) -> Result<(), String> {
        self.pool = match &self.pool_text {
            Some(text) => Some(PoolFile::parse(text).map_err(|err| err.to_string())?),
            None => None,
        };
        Ok(())
    }

    /// Applies `command` all or nothing: a refused command changes nothing.
    pub fn apply(&mut self, command: &ControlCommand) -> ControlOutcome {
        let before = self.allocations.clone();
        let result = match command {
            ControlCommand::InstallPoolFile { text } => self
                .install(text)
                .map(|sequence| ControlOutcome::Installed { sequence }),
            ControlCommand::RecoverPool { text } => self
                .recover(text)
                .map(|sequence| ControlOutcome::Installed { sequence }),
            ControlCommand::Borrow {
                feature,
                recipient,
                source,
                seats,
            } => self.borrow(feature, recipient, source, *seats),
            ControlCommand::RequestRelease {
                feature,
                donor,
                recipient,
                seats,
            } => self.request_release(feature, donor, recipient, *seats),
            ControlCommand::Release {
                feature,
                request_id,
                seats,
                allocation_before,
                loosened_before,
            } => self.release(
                feature,
                *request_id,
                *seats,
                (*allocation_before, *loosened_before),
            ),
            ControlCommand::CancelRelease {
                feature,
                request_id,
            } => self.feature_mut(feature).and_then(|a| {
                a.requests
                    .remove(request_id)
                    .map(|_| ControlOutcome::Cancelled)
                    .ok_or_else(|| format!("request {request_id} is not pending"))
            }),
            ControlCommand::Drain {
                feature,
                server,
                seats,
                allocation_before,
                target_before,
                loosened_before,
            } => self.drain(
                feature,
                server,
                *seats,
                (*allocation_before, *target_before, *loosened_before),
            ),
        };
        // Every committed state keeps each feature's seats; a command that
        // would not is refused whole (a bug, caught in debug builds).
        let result = result.and_then(|outcome| {
            for (feature, allocation) in &self.allocations {
                if let Err(reason) = allocation.check_invariants(feature) {
                    debug_assert!(false, "{command:?}: {reason}");
                    return Err(reason);
                }
            }
            Ok(outcome)
        });
        if result.is_ok() {
            for (feature, allocation) in self.allocations.iter_mut() {
                if let Some(previous) = before.get(feature) {
                    allocation.count_loosenings(previous);
                }
            }
        }
        match result {
            Ok(outcome) => outcome,
            Err(reason) => {
                self.allocations = before;
                ControlOutcome::Refused { reason }
            }
        }
    }

    fn servers_in_order(&self) -> Vec<String> {
        self.pool
            .as_ref()
            .map(PoolFile::server_ids)
            .unwrap_or_default()
    }

    fn feature_mut(&mut self, feature: &str) -> Result<&mut FeatureAllocation, String> {
        self.allocations
            .get_mut(feature)
            .ok_or_else(|| format!("feature `{feature}` is not in the pool"))
    }

    fn borrow(
        &mut self,
        feature: &str,
        recipient: &str,
        source: &BorrowSource,
        seats: u32,
    ) -> Result<ControlOutcome, String> {
        let order = self.servers_in_order();
        let a = self.feature_mut(feature)?;
        if !a.servers.contains_key(recipient) {
            return Err(format!("server `{recipient}` is not in the pool"));
        }
        let moved = match source {
            BorrowSource::FreePool => {
                let n = seats.min(a.free_pool);
                a.free_pool -= n;
                a.take_into(recipient, n, true);
                n
            }
            BorrowSource::DownServer(donor) => {
                if donor == recipient || !a.servers.contains_key(donor) {
                    return Err(format!("server `{donor}` cannot lend to `{recipient}`"));
                }
                // Its requests are void: it may not answer them any more.
                a.requests.retain(|_, r| &r.donor != donor);
                let n = seats.min(a.allocation_of(donor));
                a.move_between(donor, recipient, n);
                n
            }
            BorrowSource::Parked(donor) => {
                let parked = a.parked.get(donor).copied().unwrap_or(0);
                let n = seats.min(parked);
                if parked == n {
                    a.parked.remove(donor);
                } else {
                    a.parked.insert(donor.clone(), parked - n);
                }
                a.take_into(recipient, n, true);
                n
            }
        };
        a.fill(&order);
        if moved == 0 {
            return Err(format!("no seats of `{feature}` to take from {source:?}"));
        }
        Ok(ControlOutcome::Moved { seats: moved })
    }

    fn request_release(
        &mut self,
        feature: &str,
        donor: &str,
        recipient: &str,
        seats: u32,
    ) -> Result<ControlOutcome, String> {
        let id = self.next_request_id;
        let a = self.feature_mut(feature)?;
        if donor == recipient
            || !a.servers.contains_key(donor)
            || !a.servers.contains_key(recipient)
        {
            return Err(format!(
                "server `{donor}` cannot be asked to lend to `{recipient}`"
            ));
        }
        if seats == 0 {
            return Err("a request asks for at least one seat".into());
        }
        a.requests.insert(
            id,
            ReleaseRequest {
                donor: donor.to_string(),
                recipient: recipient.to_string(),
                seats,
            },
        );
        self.next_request_id += 1;
        Ok(ControlOutcome::Requested { request_id: id })
    }

    fn release(
        &mut self,
        feature: &str,
        request_id: u64,
        seats: u32,
        (allocation_before, loosened_before): (u32, u64),
    ) -> Result<ControlOutcome, String> {
        let order = self.servers_in_order();
        let a = self.feature_mut(feature)?;
        let Some(request) = a.requests.get(&request_id).cloned() else {
            return Err(format!("request {request_id} is not pending"));
        };
        let allocation = a.allocation_of(&request.donor);
        if allocation != allocation_before {
            return Err(format!(
                "the allocation of `{}` changed from {allocation_before} to {allocation}; \
                 answer again",
                request.donor
            ));
        }
        if a.loosened_count(&request.donor) != loosened_before {
            return Err(format!(
                "`{}` may have issued more seats since it answered; answer again",
                request.donor
            ));
        }
        if seats > request.seats || seats > allocation {
            return Err(format!(
                "request {request_id} asked for {} seats; {seats} cannot be given",
                request.seats
            ));
        }
        a.requests.remove(&request_id);
        if seats > 0 {
            a.move_between(&request.donor, &request.recipient, seats);
        }
        a.fill(&order);
        Ok(ControlOutcome::Moved { seats })
    }

    fn drain(
        &mut self,
        feature: &str,
        server: &str,
        seats: u32,
        (allocation_before, target_before, loosened_before): (u32, u32, u64),
    ) -> Result<ControlOutcome, String> {
        let order = self.servers_in_order();
        let a = self.feature_mut(feature)?;
        let allocation = a.allocation_of(server);
        let Some(&target) = a.targets.get(server) else {
            return Err(format!("server `{server}` has no target for `{feature}`"));
        };
        if allocation != allocation_before
            || target != target_before
            || a.loosened_count(server) != loosened_before
        {
            return Err(format!(
                "the allocation or target of `{server}` changed, or it may have issued more \
                 seats since it answered; drain again"
            ));
        }
        if seats == 0 || seats > allocation.saturating_sub(target) {
            return Err(format!(
                "server `{server}` holds {allocation} against a target of {target}; \
                 {seats} cannot be drained"
            ));
        }
        *a.servers.get_mut(server).expect("has a target") -= seats;
        a.free_pool += seats;
        a.count_out(server, seats);
        a.fill(&order);
        Ok(ControlOutcome::Moved { seats })
    }

    /// Checks whether `text` would be installed, without installing it.
    pub fn check_install(&self, text: &str) -> Result<PoolFile, String> {
        let next = PoolFile::parse(text).map_err(|err| err.to_string())?;
        if let Some(current) = &self.pool {
            if next.pool_id != current.pool_id {
                return Err(format!(
                    "the pool file is for pool `{}`, but this is pool `{}`",
                    next.pool_id, current.pool_id
                ));
            }
            if next.sequence <= current.sequence {
                return Err(format!(
                    "the pool file has sequence {}, not above the installed sequence {}",
                    next.sequence, current.sequence
                ));
            }
        }
        self.next_allocations(&next)?;
        Ok(next)
    }

    fn recover(&mut self, text: &str) -> Result<u64, String> {
        if self.pool.is_some() {
            return Err(
                "a pool is re-formed from a lost majority only as its first command".into(),
            );
        }
        let next = self.check_install(text)?;
        let mut allocations = self.next_allocations(&next)?;
        for allocation in allocations.values_mut() {
            allocation.free_pool = 0;
            allocation.servers.values_mut().for_each(|seats| *seats = 0);
            allocation.targets.clear();
            allocation
                .parked
                .insert(LOST_MAJORITY.to_string(), allocation.nominal_seats);
        }
        self.allocations = allocations;
        let sequence = next.sequence;
        self.pool = Some(next);
        self.pool_text = Some(text.to_string());
        Ok(sequence)
    }

    fn install(&mut self, text: &str) -> Result<u64, String> {
        let next = self.check_install(text)?;
        self.allocations = self.next_allocations(&next)?;
        let sequence = next.sequence;
        self.pool = Some(next);
        self.pool_text = Some(text.to_string());
        Ok(sequence)
    }

    /// The allocations after installing `next`:
    /// - a feature new to the pool gets the file's initial distribution;
    /// - a feature already in the pool keeps every present server's
    ///   allocation, since moving seats away from a live server needs its
    ///   consent; seats added by new codes go to the free pool, and seats
    ///   removed must come from the free pool;
    /// - a distribution that differs from the installed file's becomes the
    ///   feature's targets: a server below fills from the free pool now, a
    ///   server above drains as its seats return;
    /// - the allocation of a server that leaves the pool is parked.
    fn next_allocations(
        &self,
        next: &PoolFile,
    ) -> Result<BTreeMap<String, FeatureAllocation>, String> {
        let servers = next.server_ids();
        let mut features: Vec<&str> = next.codes.iter().map(|c| c.feature()).collect();
        features.sort();
        features.dedup();
        let mut result = BTreeMap::new();
        for feature in features {
            let nominal = u32::try_from(next.nominal_seats(feature))
                .map_err(|_| format!("feature `{feature}` has more than {} seats", u32::MAX))?;
            let requested = next.distribution.get(feature);
            let allocation = match self.allocations.get(feature) {
                None => initial(feature, nominal, &servers, requested)?,
                Some(current) => {
                    let installed = self.pool.as_ref().and_then(|p| p.distribution.get(feature));
                    let changed = requested.filter(|r| Some(*r) != installed);
                    carried_over(feature, current, nominal, &servers, changed)?
                }
            };
            allocation.check_invariants(feature)?;
            result.insert(feature.to_string(), allocation);
        }
        Ok(result)
    }
}

fn initial(
    feature: &str,
    nominal: u32,
    servers: &[String],
    requested: Option<&BTreeMap<String, u32>>,
) -> Result<FeatureAllocation, String> {
    let table = DistributionTable::initial(feature, nominal, servers, requested)
        .map_err(|err| err.to_string())?;
    Ok(FeatureAllocation {
        nominal_seats: nominal,
        free_pool: table.free_pool(),
        servers: table
            .rows()
            .map(|(server, row)| (server.to_string(), row.allocation))
            .collect(),
        ..FeatureAllocation::default()
    })
}

fn carried_over(
    feature: &str,
    current: &FeatureAllocation,
    nominal: u32,
    servers: &[String],
    changed_distribution: Option<&BTreeMap<String, u32>>,
) -> Result<FeatureAllocation, String> {
    let mut next = FeatureAllocation {
        nominal_seats: nominal,
        free_pool: current.free_pool,
        servers: BTreeMap::new(),
        parked: current.parked.clone(),
        targets: current
            .targets
            .iter()
            .filter(|(s, _)| servers.contains(s))
            .map(|(s, &t)| (s.clone(), t))
            .collect(),
        requests: current
            .requests
            .iter()
            .filter(|(_, r)| servers.contains(&r.donor) && servers.contains(&r.recipient))
            .map(|(&id, r)| (id, r.clone()))
            .collect(),
        moved: current.moved.clone(),
        loosened: current.loosened.clone(),
    };
    for server in servers {
        let kept = current.servers.get(server).copied().unwrap_or(0);
        next.servers.insert(server.clone(), kept);
    }
    for (server, &allocation) in &current.servers {
        if !servers.contains(server) && allocation > 0 {
            *next.parked.entry(server.clone()).or_default() += allocation;
        }
    }
    if nominal >= current.nominal_seats {
        next.free_pool += nominal - current.nominal_seats;
    } else {
        let removed = current.nominal_seats - nominal;
        if removed > next.free_pool {
            return Err(format!(
                "the new codes of feature `{feature}` have {removed} fewer seats, but its free \
                 pool holds only {}; set a distribution that leaves them free first",
                next.free_pool
            ));
        }
        next.free_pool -= removed;
    }
    if let Some(requested) = changed_distribution {
        for server in requested.keys() {
            if !next.servers.contains_key(server) {
                return Err(format!(
                    "the distribution of feature `{feature}` names server `{server}`, which is not in the pool"
                ));
            }
        }
        // What the targets need can never exceed the seats: servers without
        // a target keep what they hold, and parked seats are not free yet.
        let untouched: u64 = next
            .servers
            .iter()
            .filter(|(s, _)| !requested.contains_key(*s))
            .map(|(_, &n)| u64::from(n))
            .sum::<u64>()
            + next.parked.values().map(|&n| u64::from(n)).sum::<u64>();
        let wanted: u64 = requested.values().map(|&n| u64::from(n)).sum();
        if wanted + untouched > u64::from(nominal) {
            return Err(format!(
                "the distribution of feature `{feature}` asks for {wanted} seats, but only {} \
                 are not held by servers it leaves alone or parked",
                u64::from(nominal).saturating_sub(untouched)
            ));
        }
        next.targets = requested.clone();
    }
    next.fill(servers);
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::license::tests::{test_key, unsigned};
    use crate::LicenseCode;

    fn pool_text(
        sequence: u64,
        servers: &[&str],
        codes: &[(&str, &str, u32)],
        dist: &str,
    ) -> String {
        let key = test_key("acme", 1);
        let signed: Vec<LicenseCode> = codes
            .iter()
            .map(|(id, feature, seats)| key.sign(unsigned(id, feature, *seats)).unwrap())
            .collect();
        let servers: String = servers
            .iter()
            .enumerate()
            .map(|(i, id)| {
                format!(
                    "[[servers]]\nid = \"{id}\"\naddress = \"127.0.0.1:{}\"\n",
                    27001 + i
                )
            })
            .collect();
        format!(
            "pool_id = \"p\"\nsequence = {sequence}\n{servers}{dist}\n{}",
            LicenseCode::write_file(&signed)
        )
    }

    type Seats = Vec<(String, u32)>;

    fn alloc(state: &ControlState, feature: &str) -> (Seats, u32, Seats) {
        let a = state.allocation(feature).unwrap();
        (
            a.servers.iter().map(|(s, n)| (s.clone(), *n)).collect(),
            a.free_pool,
            a.parked.iter().map(|(s, n)| (s.clone(), *n)).collect(),
        )
    }

    fn pairs(items: &[(&str, u32)]) -> Vec<(String, u32)> {
        items.iter().map(|(s, n)| (s.to_string(), *n)).collect()
    }

    /// A pool re-formed from the survivors of a lost majority parks every
    /// seat; holders get theirs back by borrowing the parked seats.
    #[test]
    fn a_recovered_pool_starts_with_every_seat_parked() {
        let text = pool_text(
            2,
            &["A", "B"],
            &[("c1", "cad", 10)],
            "[distribution.cad]\nA = 6\nB = 4\n",
        );
        let mut state = ControlState::default();
        let outcome = state.apply(&ControlCommand::RecoverPool { text: text.clone() });
        assert_eq!(outcome, ControlOutcome::Installed { sequence: 2 });
        assert_eq!(
            alloc(&state, "cad"),
            (
                pairs(&[("A", 0), ("B", 0)]),
                0,
                pairs(&[(LOST_MAJORITY, 10)])
            )
        );
        // Only as the first command.
        let again = state.apply(&ControlCommand::RecoverPool { text });
        assert!(matches!(again, ControlOutcome::Refused { .. }), "{again:?}");
        let moved = state.apply(&ControlCommand::Borrow {
            feature: "cad".into(),
            recipient: "B".into(),
            source: BorrowSource::Parked(LOST_MAJORITY.into()),
            seats: 3,
        });
        assert_eq!(moved, ControlOutcome::Moved { seats: 3 });
        assert_eq!(
            alloc(&state, "cad"),
            (
                pairs(&[("A", 0), ("B", 3)]),
                0,
                pairs(&[(LOST_MAJORITY, 7)])
            )
        );
        // A later pool file keeps the parked seats parked.
        let next = pool_text(3, &["A", "B"], &[("c1", "cad", 10)], "");
        state.apply(&ControlCommand::InstallPoolFile { text: next });
        assert_eq!(
            alloc(&state, "cad"),
            (
                pairs(&[("A", 0), ("B", 3)]),
                0,
                pairs(&[(LOST_MAJORITY, 7)])
            )
        );
    }

    #[test]
    fn first_install_uses_the_initial_distribution_of_fig_4() {
        let mut state = ControlState::default();
        let text = pool_text(
            1,
            &["A", "B", "C"],
            &[("c1", "app", 100)],
            "[distribution.app]\nA = 40\nB = 30\nC = 30\n",
        );
        assert_eq!(
            state.apply(&ControlCommand::InstallPoolFile { text }),
            ControlOutcome::Installed { sequence: 1 }
        );
        assert_eq!(
            alloc(&state, "app"),
            (pairs(&[("A", 40), ("B", 30), ("C", 30)]), 0, vec![])
        );
    }

    #[test]
    fn updates_need_a_higher_sequence_and_the_same_pool() {
        let mut state = ControlState::default();
        let one = pool_text(2, &["A"], &[("c1", "app", 10)], "");
        state.apply(&ControlCommand::InstallPoolFile { text: one.clone() });
        let before = state.clone();
        let outcome = state.apply(&ControlCommand::InstallPoolFile { text: one });
        assert!(
            matches!(outcome, ControlOutcome::Refused { reason } if reason.contains("not above the installed sequence 2"))
        );
        let other_pool = pool_text(3, &["A"], &[("c1", "app", 10)], "")
            .replace("pool_id = \"p\"", "pool_id = \"q\"");
        let outcome = state.apply(&ControlCommand::InstallPoolFile { text: other_pool });
        assert!(
            matches!(outcome, ControlOutcome::Refused { reason } if reason.contains("pool `q`"))
        );
        let garbage = state.apply(&ControlCommand::InstallPoolFile {
            text: "sequence = ".into(),
        });
        assert!(matches!(garbage, ControlOutcome::Refused { .. }));
        assert_eq!(state, before, "a refused command changes nothing");
    }

    #[test]
    fn live_allocations_are_kept_added_seats_go_to_the_free_pool_removed_servers_are_parked() {
        let mut state = ControlState::default();
        state.apply(&ControlCommand::InstallPoolFile {
            text: pool_text(
                1,
                &["A", "B", "C"],
                &[("c1", "app", 100)],
                "[distribution.app]\nA = 40\nB = 30\nC = 30\n",
            ),
        });
        // D joins, C leaves, an additive code brings 20 seats; no distribution keeps what servers hold.
        let update = pool_text(
            2,
            &["A", "B", "D"],
            &[("c1", "app", 100), ("c2", "app", 20), ("n1", "new", 9)],
            "",
        );
        assert_eq!(
            state.apply(&ControlCommand::InstallPoolFile { text: update }),
            ControlOutcome::Installed { sequence: 2 }
        );
        assert_eq!(
            alloc(&state, "app"),
            (
                pairs(&[("A", 40), ("B", 30), ("D", 0)]),
                20,
                pairs(&[("C", 30)])
            )
        );
        assert_eq!(
            alloc(&state, "new"),
            (pairs(&[("A", 3), ("B", 3), ("D", 3)]), 0, vec![])
        );
        // A distribution that grows D takes from the free pool; too much is refused.
        let both = [("c1", "app", 100), ("c2", "app", 20), ("n1", "new", 9)];
        let grow = pool_text(
            3,
            &["A", "B", "D"],
            &both,
            "[distribution.app]\nA = 40\nD = 15\n",
        );
        let outcome = state.apply(&ControlCommand::InstallPoolFile { text: grow });
        assert!(
            matches!(outcome, ControlOutcome::Installed { .. }),
            "{outcome:?}"
        );
        assert_eq!(
            alloc(&state, "app"),
            (
                pairs(&[("A", 40), ("B", 30), ("D", 15)]),
                5,
                pairs(&[("C", 30)])
            )
        );
        let greedy = pool_text(
            4,
            &["A", "B", "D"],
            &both,
            "[distribution.app]\nA = 40\nD = 21\n",
        );
        let outcome = state.apply(&ControlCommand::InstallPoolFile { text: greedy });
        assert!(
            matches!(&outcome, ControlOutcome::Refused { reason } if reason.contains("asks for 61 seats, but only 60")),
            "{outcome:?}"
        );
        // Removing the additive code needs its 20 seats in the free pool: only 5 are.
        let shrink = pool_text(
            5,
            &["A", "B", "D"],
            &[("c1", "app", 100), ("n1", "new", 9)],
            "",
        );
        let outcome = state.apply(&ControlCommand::InstallPoolFile { text: shrink });
        assert!(
            matches!(&outcome, ControlOutcome::Refused { reason } if reason.contains("20 fewer seats")),
            "{outcome:?}"
        );
    }

    #[test]
    fn caps_never_add_up_above_the_served_seats() {
        let allocation = FeatureAllocation {
            nominal_seats: 100,
            free_pool: 0,
            servers: [
                ("A".to_string(), 40),
                ("B".to_string(), 30),
                ("C".to_string(), 30),
            ]
            .into(),
            ..FeatureAllocation::default()
        };
        for served in 0..=100 {
            let total: u32 = ["A", "B", "C"]
                .iter()
                .map(|s| allocation.cap(s, served))
                .sum();
            assert!(total <= served, "{total} > {served}");
        }
        assert_eq!(allocation.cap("A", 100), 40);
        assert_eq!(allocation.cap("A", 50), 20);
        assert_eq!(allocation.cap("Z", 100), 0);
    }

    #[test]
    fn snapshots_round_trip() {
        let mut state = ControlState::default();
        state.apply(&ControlCommand::InstallPoolFile {
            text: pool_text(1, &["A"], &[("c1", "app", 10)], ""),
        });
        let json = serde_json::to_string(&state).unwrap();
        let mut back: ControlState = serde_json::from_str(&json).unwrap();
        back.restore_parsed().unwrap();
        assert_eq!(back, state);
        assert_eq!(back.pool().unwrap().sequence, 1);
    }

    fn three_servers(dist: &str) -> ControlState {
        let mut state = ControlState::default();
        let outcome = state.apply(&ControlCommand::InstallPoolFile {
            text: pool_text(1, &["A", "B", "C"], &[("c1", "app", 100)], dist),
        });
        assert!(matches!(outcome, ControlOutcome::Installed { .. }));
        state
    }

    fn borrow(feature: &str, to: &str, source: BorrowSource, seats: u32) -> ControlCommand {
        ControlCommand::Borrow {
            feature: feature.into(),
            recipient: to.into(),
            source,
            seats,
        }
    }

    #[test]
    fn borrows_take_from_the_free_pool_a_down_server_or_parked_seats() {
        let mut state = three_servers("[distribution.app]\nA = 30\nB = 30\nC = 30\n");
        assert_eq!(
            state.apply(&borrow("app", "A", BorrowSource::FreePool, 15)),
            ControlOutcome::Moved { seats: 10 },
            "only what the free pool holds"
        );
        assert_eq!(
            state.apply(&borrow("app", "A", BorrowSource::DownServer("C".into()), 5)),
            ControlOutcome::Moved { seats: 5 }
        );
        assert_eq!(
            alloc(&state, "app"),
            (pairs(&[("A", 45), ("B", 30), ("C", 25)]), 0, vec![])
        );
        let moved = &state.allocation("app").unwrap().moved;
        assert_eq!(moved["A"].borrows, 2);
        assert_eq!(moved["A"].seats_in, 15);
        assert_eq!(moved["C"].seats_out, 5);
        for refused in [
            borrow("app", "A", BorrowSource::FreePool, 1),
            borrow("app", "A", BorrowSource::DownServer("A".into()), 1),
            borrow("app", "Z", BorrowSource::FreePool, 1),
            borrow("nope", "A", BorrowSource::FreePool, 1),
            borrow("app", "A", BorrowSource::Parked("C".into()), 1),
        ] {
            let before = state.clone();
            assert!(matches!(
                state.apply(&refused),
                ControlOutcome::Refused { .. }
            ));
            assert_eq!(state, before);
        }
        // C leaves: its 25 seats are parked until the leader reassigns them.
        state.apply(&ControlCommand::InstallPoolFile {
            text: pool_text(2, &["A", "B"], &[("c1", "app", 100)], ""),
        });
        assert_eq!(
            state.apply(&borrow("app", "B", BorrowSource::Parked("C".into()), 100)),
            ControlOutcome::Moved { seats: 25 }
        );
        assert_eq!(
            alloc(&state, "app"),
            (pairs(&[("A", 45), ("B", 55)]), 0, vec![])
        );
    }

    #[test]
    fn a_live_server_gives_seats_only_by_its_own_release() {
        let mut state = three_servers("[distribution.app]\nA = 40\nB = 30\nC = 30\n");
        let outcome = state.apply(&ControlCommand::RequestRelease {
            feature: "app".into(),
            donor: "B".into(),
            recipient: "A".into(),
            seats: 10,
        });
        let ControlOutcome::Requested { request_id } = outcome else {
            panic!("{outcome:?}")
        };
        let app = state.allocation("app").unwrap();
        assert_eq!(
            app.reserved("B"),
            10,
            "B holds the asked seats back at once"
        );
        assert_eq!(app.reserved("A"), 0);
        // B has 26 in use: it can spare 4.
        let answers = app.answers("app", "B", 26);
        assert_eq!(
            answers,
            vec![ControlCommand::Release {
                feature: "app".into(),
                request_id,
                seats: 4,
                allocation_before: 30,
                loosened_before: 0,
            }]
        );
        let too_many = ControlCommand::Release {
            feature: "app".into(),
            request_id,
            seats: 11,
            allocation_before: 30,
            loosened_before: 0,
        };
        assert!(matches!(
            state.apply(&too_many),
            ControlOutcome::Refused { .. }
        ));
        let stale = ControlCommand::Release {
            feature: "app".into(),
            request_id,
            seats: 4,
            allocation_before: 31,
            loosened_before: 0,
        };
        assert!(matches!(
            state.apply(&stale),
            ControlOutcome::Refused { .. }
        ));
        assert_eq!(state.apply(&answers[0]), ControlOutcome::Moved { seats: 4 });
        assert!(
            matches!(state.apply(&answers[0]), ControlOutcome::Refused { .. }),
            "a repeated answer changes nothing"
        );
        let app = state.allocation("app").unwrap();
        assert_eq!(app.reserved("B"), 0, "the request closed with the move");
        assert_eq!(
            alloc(&state, "app"),
            (pairs(&[("A", 44), ("B", 26), ("C", 30)]), 0, vec![])
        );
        // An unanswered request can be cancelled.
        let ControlOutcome::Requested { request_id } =
            state.apply(&ControlCommand::RequestRelease {
                feature: "app".into(),
                donor: "C".into(),
                recipient: "A".into(),
                seats: 3,
            })
        else {
            panic!()
        };
        let cancel = ControlCommand::CancelRelease {
            feature: "app".into(),
            request_id,
        };
        assert_eq!(state.apply(&cancel), ControlOutcome::Cancelled);
        assert!(matches!(
            state.apply(&cancel),
            ControlOutcome::Refused { .. }
        ));
        assert_eq!(state.allocation("app").unwrap().reserved("C"), 0);
    }

    #[test]
    fn a_new_distribution_fills_from_the_free_pool_and_drains_as_seats_return() {
        let mut state = three_servers("[distribution.app]\nA = 40\nB = 30\nC = 30\n");
        let outcome = state.apply(&ControlCommand::InstallPoolFile {
            text: pool_text(
                2,
                &["A", "B", "C"],
                &[("c1", "app", 100)],
                "[distribution.app]\nA = 20\nB = 50\nC = 30\n",
            ),
        });
        assert!(matches!(outcome, ControlOutcome::Installed { .. }));
        let app = state.allocation("app").unwrap().clone();
        assert_eq!(app.reserved("A"), 20, "A stops issuing above its target");
        assert_eq!(
            app.allocation_of("A"),
            40,
            "but keeps its seats until it gives them"
        );
        // A has 35 in use: it drains 5 now.
        let answers = app.answers("app", "A", 35);
        assert_eq!(answers.len(), 1);
        assert_eq!(state.apply(&answers[0]), ControlOutcome::Moved { seats: 5 });
        assert_eq!(
            alloc(&state, "app"),
            (pairs(&[("A", 35), ("B", 35), ("C", 30)]), 0, vec![])
        );
        // Then the rest as its seats return.
        let answers = state.allocation("app").unwrap().answers("app", "A", 10);
        assert_eq!(
            state.apply(&answers[0]),
            ControlOutcome::Moved { seats: 15 }
        );
        let app = state.allocation("app").unwrap();
        assert_eq!(
            alloc(&state, "app"),
            (pairs(&[("A", 20), ("B", 50), ("C", 30)]), 0, vec![])
        );
        assert!(app.targets.is_empty(), "reached targets are cleared");
        assert_eq!(app.moved["B"].seats_in, 20);
        // Reinstalling the same distribution later sets no targets again.
        state.apply(&borrow(
            "app",
            "C",
            BorrowSource::DownServer("B".into()),
            10,
        ));
        state.apply(&ControlCommand::InstallPoolFile {
            text: pool_text(
                3,
                &["A", "B", "C"],
                &[("c1", "app", 100)],
                "[distribution.app]\nA = 20\nB = 50\nC = 30\n",
            ),
        });
        assert!(state.allocation("app").unwrap().targets.is_empty());
        assert_eq!(
            alloc(&state, "app"),
            (pairs(&[("A", 20), ("B", 40), ("C", 40)]), 0, vec![])
        );
    }

    #[test]
    fn a_drain_is_refused_once_the_target_rose_and_fell_again_since_the_answer() {
        // The proptest case that found it: B answers with 2 in use against a
        // target of 3; the target rises to 4 (B issues 2 more), then falls to
        // 3. Allocation and target are as they were, but B holds 4.
        let mut state = three_servers("[distribution.app]\nA = 30\nB = 30\nC = 30\n");
        let distribute = |state: &mut ControlState, sequence: u64, b: u32| {
            state.apply(&ControlCommand::InstallPoolFile {
                text: pool_text(
                    sequence,
                    &["A", "B", "C"],
                    &[("c1", "app", 100)],
                    &format!("[distribution.app]\nA = 0\nB = {b}\n"),
                ),
            })
        };
        assert!(matches!(
            distribute(&mut state, 2, 3),
            ControlOutcome::Installed { .. }
        ));
        let stale = state.allocation("app").unwrap().answers("app", "B", 2);
        assert_eq!(stale.len(), 1);
        distribute(&mut state, 3, 4);
        distribute(&mut state, 4, 3);
        let app = state.allocation("app").unwrap();
        assert_eq!((app.allocation_of("B"), app.targets["B"]), (30, 3));
        assert!(
            matches!(state.apply(&stale[0]), ControlOutcome::Refused { .. }),
            "a drain computed before the target rose applied"
        );
        // Answered again, with the 4 seats B now holds, it gives 26.
        let fresh = state.allocation("app").unwrap().answers("app", "B", 4);
        assert_eq!(state.apply(&fresh[0]), ControlOutcome::Moved { seats: 26 });
        assert_eq!(state.allocation("app").unwrap().allocation_of("B"), 4);
    }

    mod model {
        //! The consent rules against a model of clients: whatever order the
        //! commands commit in, stale or repeated, no server's allocation ever
        //! drops below the seats its clients hold, and no seat is created or
        //! destroyed.
        use super::*;
        use proptest::prelude::*;

        const SERVERS: [&str; 3] = ["A", "B", "C"];

        #[derive(Clone, Debug)]
        enum Op {
            Issue(usize),
            Return(usize),
            Answer(usize),
            Commit(usize),
            Request(usize, usize, u32),
            FromFreePool(usize, u32),
            Distribute(u32, u32),
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                4 => (0..3usize).prop_map(Op::Issue),
                2 => (0..3usize).prop_map(Op::Return),
                2 => (0..3usize).prop_map(Op::Answer),
                3 => (0..16usize).prop_map(Op::Commit),
                1 => (0..3usize, 0..3usize, 1..20u32).prop_map(|(a, b, n)| Op::Request(a, b, n)),
                1 => (0..3usize, 1..10u32).prop_map(|(a, n)| Op::FromFreePool(a, n)),
                1 => (0..40u32, 0..40u32).prop_map(|(a, b)| Op::Distribute(a, b)),
            ]
        }

        proptest! {
            #[test]
            fn allocation_never_drops_below_what_clients_hold(ops in proptest::collection::vec(op(), 1..120)) {
                let mut state = three_servers("[distribution.app]\nA = 30\nB = 30\nC = 30\n");
                let mut in_use = [0u32; 3];
                let mut queue: Vec<ControlCommand> = Vec::new();
                let mut sequence = 1;
                for op in ops {
                    let app = state.allocation("app").unwrap().clone();
                    match op {
                        Op::Issue(s) => {
                            let server = SERVERS[s];
                            let free = app.allocation_of(server).saturating_sub(app.reserved(server));
                            if in_use[s] < free {
                                in_use[s] += 1;
                            }
                        }
                        Op::Return(s) => in_use[s] = in_use[s].saturating_sub(1),
                        Op::Answer(s) => queue.extend(app.answers("app", SERVERS[s], in_use[s])),
                        Op::Commit(k) => {
                            if !queue.is_empty() {
                                // Commands may commit late, out of order, or twice.
                                let command = queue[k % queue.len()].clone();
                                if k % 3 != 0 {
                                    queue.remove(k % queue.len());
                                }
                                state.apply(&command);
                            }
                        }
                        Op::Request(a, b, n) => {
                            state.apply(&ControlCommand::RequestRelease {
                                feature: "app".into(),
                                donor: SERVERS[a].into(),
                                recipient: SERVERS[b].into(),
                                seats: n,
                            });
                        }
                        Op::FromFreePool(s, n) => {
                            state.apply(&borrow("app", SERVERS[s], BorrowSource::FreePool, n));
                        }
                        Op::Distribute(a, b) => {
                            sequence += 1;
                            state.apply(&ControlCommand::InstallPoolFile {
                                text: pool_text(
                                    sequence,
                                    &SERVERS,
                                    &[("c1", "app", 100)],
                                    &format!("[distribution.app]\nA = {a}\nB = {b}\n"),
                                ),
                            });
                        }
                    }
                    let app = state.allocation("app").unwrap();
                    prop_assert!(app.check_invariants("app").is_ok(), "{:?}", app.check_invariants("app"));
                    for (s, server) in SERVERS.iter().enumerate() {
                        prop_assert!(
                            in_use[s] <= app.allocation_of(server),
                            "server {server}: {} in use, allocation {}", in_use[s], app.allocation_of(server)
                        );
                    }
                }
            }
        }
    }
}
