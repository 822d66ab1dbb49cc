//! The committed allocation of one feature across the pool, and what a
//! donor answers to the requests and the target addressed to it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{ControlCommand, ControlRefusal};
use crate::policy::{Asker, Claim};

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
    /// Grants of silent servers handed over to it with their seats.
    #[serde(default)]
    pub hand_overs: u64,
}

/// A temporary license the pool recorded (seed 004): seats of the feature
/// that no server holds, out until returned or expired.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemporaryLicense {
    /// The user whose ticket it is.
    pub ticket: String,
    pub device: String,
    pub seats: u32,
    /// The allocation it took out of its server: `seats` where that server
    /// serves every code of the feature, more where it serves part of them
    /// ([`FeatureAllocation::nominal_in_use`]); what `Return` and `Expire`
    /// give back. 0 in states from before: `seats`.
    #[serde(default)]
    pub allocation: u32,
    /// When it lapses, by the wall clock of the server that activated or
    /// last extended it.
    pub expires_unix_ms: i64,
    /// Activation order within the feature: a ticket's newest device is
    /// the one with the highest; only it may extend.
    pub serial: u64,
}

impl TemporaryLicense {
    /// The allocation it holds ([`TemporaryLicense::allocation`]).
    pub fn allocation(&self) -> u32 {
        self.allocation.max(self.seats)
    }
}

/// Allocations of one feature across the pool.
///
/// Invariant: the servers' allocations + `parked` + `free_pool` + the
/// seats of `temporaries` equal `nominal_seats`.
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
    /// Temporary licenses out, by license id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub temporaries: BTreeMap<String, TemporaryLicense>,
    /// The last [`TemporaryLicense::serial`] given.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub temporary_serial: u64,
    /// The grants of a feature with `reserve` or `max` rules, by grant id
    /// ([`crate::policy::Claim`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub claims: BTreeMap<String, Claim>,
    /// Programs waiting for seats, first come first served, pool-wide.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waiters: Vec<Waiter>,
}

/// A program in a feature's queue ([`ControlCommand::Wait`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Waiter {
    /// What the program shows to keep its place, on any server.
    pub ticket: String,
    /// The program; only it may use the ticket.
    pub client_id: String,
    pub user: String,
    pub host: String,
    pub seats: u32,
    /// When it joined, and until when its place holds unless it asks
    /// again, by the wall clock of the server it asked.
    pub since_unix_ms: i64,
    pub until_unix_ms: i64,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

impl FeatureAllocation {
    /// Who holds the seats the policy's `reserve` and `max` rules count:
    /// the claims, and the temporary licenses (by ticket and device).
    pub fn holders(&self) -> impl Iterator<Item = (Asker<'_>, u32)> + Clone {
        let claims = self.claims.values().map(|c| (c.asker(), c.seats));
        let temporaries = self.temporaries.values().map(|t| {
            let asker = Asker {
                user: &t.ticket,
                host: &t.device,
                address: None,
                display: None,
            };
            (asker, t.seats)
        });
        claims.chain(temporaries)
    }

    /// Seats `server` may issue: its allocation less what it holds back.
    pub fn room(&self, server: &str) -> u32 {
        self.allocation_of(server)
            .saturating_sub(self.reserved(server))
    }

    pub fn loosened_count(&self, server: &str) -> u64 {
        self.loosened.get(server).copied().unwrap_or(0)
    }

    /// Counts, for every server whose room grew from `before`, one loosening.
    pub(super) fn count_loosenings(&mut self, before: &FeatureAllocation) {
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
            + u64::from(self.free_pool)
            + self.temporary_allocation();
        if total != u64::from(self.nominal_seats) {
            return Err(format!(
                "feature `{feature}`: allocations, parked seats, free pool and temporary \
                 licenses add to {total}, not {}",
                self.nominal_seats
            ));
        }
        if let Some((id, _)) = self
            .temporaries
            .iter()
            .find(|(_, t)| t.serial == 0 || t.serial > self.temporary_serial)
        {
            return Err(format!(
                "feature `{feature}`: temporary license {id} has a serial not given"
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

    /// Seats out as temporary licenses.
    pub fn temporary_seats(&self) -> u64 {
        self.temporaries.values().map(|t| u64::from(t.seats)).sum()
    }

    /// Allocation out as temporary licenses: what they took from servers.
    pub fn temporary_allocation(&self) -> u64 {
        self.temporaries
            .values()
            .map(TemporaryLicense::allocation)
            .map(u64::from)
            .sum()
    }

    /// The temporary licenses of `ticket`, by license id.
    pub fn temporaries_of<'a>(
        &'a self,
        ticket: &'a str,
    ) -> impl Iterator<Item = (&'a String, &'a TemporaryLicense)> + 'a {
        self.temporaries
            .iter()
            .filter(move |(_, t)| t.ticket == ticket)
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

    /// The allocation `server` must keep while its clients hold `in_use`
    /// seats and `served_seats` of the nominal seats are served on it: the
    /// least allocation whose [`cap`](Self::cap) still covers them. Every
    /// question of what a server may give away asks this, never `in_use`
    /// itself: a server that serves only part of the nominal seats (a pool
    /// of masters, each serving its own host's slot code) issues one seat
    /// per several seats of allocation, and a donor that gave all but
    /// `in_use` would hold more than its cap while the recipient's cap grew,
    /// so the pool could hold more than `served_seats`. A server that serves
    /// none of them keeps its whole allocation while any seat is held.
    pub fn nominal_in_use(&self, server: &str, in_use: u32, served_seats: u32) -> u32 {
        let nominal = self.nominal_seats;
        if in_use == 0 || served_seats >= nominal || nominal == 0 {
            return in_use;
        }
        if served_seats == 0 {
            return self.allocation_of(server).max(in_use);
        }
        let needed = (u64::from(in_use) * u64::from(nominal)).div_ceil(u64::from(served_seats));
        u32::try_from(needed).unwrap_or(u32::MAX)
    }

    /// What `server`, with `in_use` seats held by clients (counted or held
    /// aside, in [nominal](Self::nominal_in_use) seats), answers to the requests and the target it has: one
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

    pub(super) fn count_in(&mut self, server: &str, seats: u32, borrow: bool) {
        let counts = self.moved.entry(server.to_string()).or_default();
        counts.seats_in += u64::from(seats);
        counts.borrows += u64::from(borrow);
    }

    pub(super) fn count_out(&mut self, server: &str, seats: u32) {
        self.moved.entry(server.to_string()).or_default().seats_out += u64::from(seats);
    }

    /// Moves `seats` of allocation from `from` to `to` (both servers of the
    /// pool) as a borrow. Pending targets follow: the seats come first out of
    /// the donor's excess over its target, and go first to the recipient's
    /// shortfall; beyond those, the targets move with the seats.
    pub(super) fn move_between(&mut self, from: &str, to: &str, seats: u32) {
        let from_allocation = self.allocation_of(from);
        if let Some(t) = self.targets.get_mut(from) {
            let excess = from_allocation.saturating_sub(*t);
            *t = t.saturating_sub(seats.saturating_sub(excess));
        }
        self.take_into(to, seats, true);
        *self.servers.get_mut(from).expect("checked by the caller") -= seats;
        self.count_out(from, seats);
    }

    /// Readies taking seats from `donor`, a server the leader judged
    /// silent, for `recipient`: both must be distinct servers of the
    /// feature, and the donor's pending requests are void, since it may not
    /// answer them any more.
    pub(super) fn take_from_silent(
        &mut self,
        donor: &str,
        recipient: &str,
    ) -> Result<(), ControlRefusal> {
        if donor == recipient || !self.servers.contains_key(donor) {
            return Err(ControlRefusal::CannotLend {
                donor: donor.to_string(),
                recipient: recipient.to_string(),
            });
        }
        self.requests.retain(|_, r| r.donor != donor);
        Ok(())
    }

    /// Adds `seats` to `to`'s allocation (taken from elsewhere by the caller).
    pub(super) fn take_into(&mut self, to: &str, seats: u32, borrow: bool) {
        let to_allocation = self.allocation_of(to);
        if let Some(t) = self.targets.get_mut(to) {
            let shortfall = t.saturating_sub(to_allocation);
            *t += seats.saturating_sub(shortfall);
        }
        *self.servers.get_mut(to).expect("checked by the caller") += seats;
        self.count_in(to, seats, borrow);
    }

    /// Servers below their target take from the free pool, in `order`.
    pub(super) fn fill(&mut self, order: &[String]) {
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

    /// [`ControlCommand::Activate`]: `license` (its serial given here) out
    /// of `from`'s allocation.
    pub(super) fn activate(
        &mut self,
        feature: &str,
        license_id: &str,
        mut license: TemporaryLicense,
        from: &str,
        devices_max: u32,
    ) -> Result<super::ControlOutcome, ControlRefusal> {
        let on_device = self
            .temporaries_of(&license.ticket)
            .any(|(_, t)| t.device == license.device);
        if on_device || self.temporaries.contains_key(license_id) {
            return Err(ControlRefusal::AlreadyOnDevice {
                ticket: license.ticket,
                feature: feature.to_string(),
                device: license.device,
            });
        }
        let devices = self.temporaries_of(&license.ticket).count() as u32;
        if devices >= devices_max {
            return Err(ControlRefusal::TooManyDevices {
                ticket: license.ticket,
                feature: feature.to_string(),
                devices,
            });
        }
        let allocation = self.allocation_of(from);
        let taken = license.allocation();
        if !self.servers.contains_key(from)
            || license.seats == 0
            || taken < license.seats
            || allocation < taken
        {
            return Err(ControlRefusal::TooFewSeats {
                server: from.to_string(),
                feature: feature.to_string(),
                allocation,
                seats: taken,
            });
        }
        license.allocation = taken;
        // Out of `from`'s allocation as a lend would take it: its target,
        // if any, keeps what it still wants.
        if let Some(t) = self.targets.get_mut(from) {
            let excess = allocation.saturating_sub(*t);
            *t = t.saturating_sub(taken.saturating_sub(excess));
        }
        *self.servers.get_mut(from).expect("checked above") -= taken;
        self.count_out(from, taken);
        self.temporary_serial += 1;
        license.serial = self.temporary_serial;
        self.temporaries.insert(license_id.to_string(), license);
        Ok(super::ControlOutcome::Temporary {
            serial: self.temporary_serial,
        })
    }

    /// [`ControlCommand::Extend`].
    pub(super) fn extend(
        &mut self,
        feature: &str,
        license_id: &str,
        device: &str,
        expires_unix_ms: i64,
    ) -> Result<super::ControlOutcome, ControlRefusal> {
        let Some(license) = self.temporaries.get(license_id) else {
            return Err(ControlRefusal::NotOut {
                feature: feature.to_string(),
                license_id: license_id.to_string(),
            });
        };
        if license.device != device {
            return Err(ControlRefusal::OtherDevice {
                license_id: license_id.to_string(),
            });
        }
        let newest = self
            .temporaries_of(&license.ticket)
            .map(|(_, t)| t.serial)
            .max()
            .unwrap_or(0);
        if license.serial != newest {
            return Err(ControlRefusal::Withdrawn {
                license_id: license_id.to_string(),
                ticket: license.ticket.clone(),
            });
        }
        let license = self.temporaries.get_mut(license_id).expect("found above");
        license.expires_unix_ms = license.expires_unix_ms.max(expires_unix_ms);
        Ok(super::ControlOutcome::Temporary {
            serial: license.serial,
        })
    }

    /// The seats of these licenses (those still out) back to the free
    /// pool, and on to servers below their targets.
    pub(super) fn give_back(
        &mut self,
        license_ids: &[String],
        servers: &[String],
    ) -> super::ControlOutcome {
        let mut seats = 0;
        for id in license_ids {
            if let Some(license) = self.temporaries.remove(id) {
                seats += license.allocation();
            }
        }
        self.free_pool += seats;
        self.fill(servers);
        super::ControlOutcome::Moved { seats }
    }
}
