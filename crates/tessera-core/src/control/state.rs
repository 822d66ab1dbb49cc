//! The state every server applies alike, and how each command changes it
//! (all or nothing, keeping every feature's seats).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::refusal::ControlRefusal;
use super::{
    BorrowSource, ControlCommand, ControlOutcome, FeatureAllocation, ReleaseRequest,
    TemporaryLicense, LOST_MAJORITY,
};
use crate::distribution::DistributionTable;
use crate::policy::{Claim, ClaimRefused};
use crate::pool_file::PoolFile;

/// The most programs one feature's queue holds.
pub const WAITERS_MAX: usize = 10_000;

/// The most runs a pool records as revoked, keeping its snapshots small.
pub const REVOKED_RUNS_MAX: usize = 10_000;

/// The state every server of the pool holds alike.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ControlState {
    pool_text: Option<String>,
    #[serde(skip)]
    pool: Option<PoolFile>,
    allocations: BTreeMap<String, FeatureAllocation>,
    #[serde(default)]
    next_request_id: u64,
    /// Runs of production servers whose VID certificates no master of the
    /// pool renews ([`ControlCommand::RevokeRun`]).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    revoked_runs: BTreeSet<String>,
}

impl PartialEq for ControlState {
    fn eq(&self, other: &Self) -> bool {
        self.pool_text == other.pool_text
            && self.allocations == other.allocations
            && self.next_request_id == other.next_request_id
            && self.revoked_runs == other.revoked_runs
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

    /// True if run `instance` was revoked (seed 003).
    pub fn is_revoked(&self, instance: &str) -> bool {
        self.revoked_runs.contains(instance)
    }

    pub fn allocations(&self) -> &BTreeMap<String, FeatureAllocation> {
        &self.allocations
    }

    pub fn allocation(&self, feature: &str) -> Option<&FeatureAllocation> {
        self.allocations.get(feature)
    }

    /// Parses the pool file again after loading a snapshot (it is not serialized twice).
    pub fn restore_parsed(&mut self) -> Result<(), ControlRefusal> {
        self.pool = match &self.pool_text {
            Some(text) => Some(PoolFile::parse(text)?),
            None => None,
        };
        Ok(())
    }

    /// A state read from a snapshot (a leader's, or this server's own
    /// file), made whole: its pool file parsed again, and every invariant an
    /// applied state keeps checked ([`ControlState::check_invariants`]). A
    /// snapshot that breaks one is refused whole.
    pub fn restored(mut self) -> Result<ControlState, ControlRefusal> {
        self.restore_parsed()?;
        self.check_invariants().map_err(ControlRefusal::Broken)?;
        Ok(self)
    }

    /// What every state reached by applying commands keeps: per feature of
    /// the installed codes, one allocation whose servers are the pool's and
    /// whose allocations + parked + free pool equal the codes' seats
    /// ([`FeatureAllocation::check_invariants`]), and request ids below the
    /// next one. No pool file installed: no allocation.
    pub fn check_invariants(&self) -> Result<(), String> {
        let Some(pool) = &self.pool else {
            if self.pool_text.is_some() {
                return Err("the pool file was not parsed".into());
            }
            if !self.allocations.is_empty() {
                return Err("allocations without an installed pool file".into());
            }
            return Ok(());
        };
        let mut features: Vec<&str> = pool.codes.iter().map(|c| c.feature()).collect();
        features.sort();
        features.dedup();
        let allocated: Vec<&str> = self.allocations.keys().map(String::as_str).collect();
        if features != allocated {
            return Err(format!(
                "the allocations are of features [{}] but the pool file's codes name [{}]",
                allocated.join(", "),
                features.join(", ")
            ));
        }
        let servers = pool.server_ids();
        let pool_servers: std::collections::BTreeSet<&String> = servers.iter().collect();
        for (feature, allocation) in &self.allocations {
            let nominal = pool.nominal_seats(feature);
            if u64::from(allocation.nominal_seats) != nominal {
                return Err(format!(
                    "feature `{feature}`: the allocation counts {} seats but its codes carry \
                     {nominal}",
                    allocation.nominal_seats
                ));
            }
            allocation.check_invariants(feature)?;
            if !allocation.servers.keys().eq(pool_servers.iter().copied()) {
                return Err(format!(
                    "feature `{feature}`: allocations of servers [{}], but the pool's servers \
                     are [{}]",
                    allocation
                        .servers
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", "),
                    servers.join(", ")
                ));
            }
            if let Some(id) = allocation
                .requests
                .keys()
                .find(|&&id| id >= self.next_request_id)
            {
                return Err(format!(
                    "feature `{feature}`: request {id} is not below the next request id {}",
                    self.next_request_id
                ));
            }
        }
        Ok(())
    }

    /// Applies `command` all or nothing: a refused command changes nothing.
    pub fn apply(&mut self, command: &ControlCommand) -> ControlOutcome {
        let before = self.allocations.clone();
        let result = self.apply_command(command);
        // Every committed state keeps each feature's seats; a command that
        // would not is refused whole (a bug, caught in debug builds).
        let result = result.and_then(|outcome| {
            for (feature, allocation) in &self.allocations {
                if let Err(reason) = allocation.check_invariants(feature) {
                    debug_assert!(false, "{command:?}: {reason}");
                    return Err(ControlRefusal::Broken(reason));
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
            Err(refusal) => {
                self.allocations = before;
                match refusal {
                    ControlRefusal::MaxReached(reason) => ControlOutcome::Limited {
                        reserve: false,
                        reason,
                    },
                    ControlRefusal::Reserved(reason) => ControlOutcome::Limited {
                        reserve: true,
                        reason,
                    },
                    refusal => ControlOutcome::Refused {
                        reason: refusal.to_string(),
                    },
                }
            }
        }
    }

    /// What `command` does, before the sums are checked.
    fn apply_command(
        &mut self,
        command: &ControlCommand,
    ) -> Result<ControlOutcome, ControlRefusal> {
        match command {
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
                    .ok_or(ControlRefusal::NotPending {
                        request_id: *request_id,
                    })
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
            ControlCommand::RevokeRun { instance } => self.revoke_run(instance),
            ControlCommand::Activate {
                feature,
                license_id,
                ticket,
                device,
                seats,
                from,
                expires_unix_ms,
                devices_max,
                allocation,
            } => {
                self.check_claim(
                    feature,
                    &Claim {
                        user: ticket.clone(),
                        host: device.clone(),
                        address: None,
                        seats: *seats,
                        server: from.clone(),
                        renewal: 0,
                    },
                )?;
                let a = self.feature_mut(feature)?;
                a.activate(
                    feature,
                    license_id,
                    TemporaryLicense {
                        ticket: ticket.clone(),
                        device: device.clone(),
                        seats: *seats,
                        allocation: *allocation,
                        expires_unix_ms: *expires_unix_ms,
                        serial: 0,
                    },
                    from,
                    *devices_max,
                )
            }
            ControlCommand::Extend {
                feature,
                license_id,
                device,
                expires_unix_ms,
            } => self
                .feature_mut(feature)?
                .extend(feature, license_id, device, *expires_unix_ms),
            ControlCommand::Return {
                feature,
                license_id,
                device,
            } => {
                let servers = self.servers_in_order();
                let a = self.feature_mut(feature)?;
                match a.temporaries.get(license_id) {
                    Some(license) if license.device != *device => {
                        Err(ControlRefusal::OtherDevice {
                            license_id: license_id.clone(),
                        })
                    }
                    Some(_) => Ok(a.give_back(std::slice::from_ref(license_id), &servers)),
                    None => Err(ControlRefusal::NotOut {
                        feature: feature.clone(),
                        license_id: license_id.clone(),
                    }),
                }
            }
            ControlCommand::Expire {
                feature,
                license_ids,
            } => {
                let servers = self.servers_in_order();
                Ok(self.feature_mut(feature)?.give_back(license_ids, &servers))
            }
            ControlCommand::Claim {
                feature,
                grant_id,
                claim,
                force,
            } => self.claim(feature, grant_id, claim, *force),
            ControlCommand::Wait { feature, waiter } => {
                let a = self.feature_mut(feature)?;
                let place = a.waiters.iter().position(|w| w.ticket == waiter.ticket);
                let position = match place {
                    Some(i) if a.waiters[i].client_id != waiter.client_id => {
                        return Err(ControlRefusal::NotYourTicket);
                    }
                    Some(i) => {
                        let held = &mut a.waiters[i];
                        held.until_unix_ms = held.until_unix_ms.max(waiter.until_unix_ms);
                        i + 1
                    }
                    None if a.waiters.len() >= WAITERS_MAX => {
                        return Err(ControlRefusal::QueueFull {
                            feature: feature.clone(),
                            max: WAITERS_MAX,
                        });
                    }
                    None => {
                        a.waiters.push(waiter.clone());
                        a.waiters.len()
                    }
                };
                Ok(ControlOutcome::Queue {
                    position: position as u32,
                })
            }
            ControlCommand::LeaveQueue { feature, tickets } => {
                let a = self.feature_mut(feature)?;
                let before = a.waiters.len();
                a.waiters.retain(|w| !tickets.contains(&w.ticket));
                Ok(ControlOutcome::Queue {
                    position: (before - a.waiters.len()) as u32,
                })
            }
            ControlCommand::Unclaim {
                feature,
                server,
                grant_ids,
            } => {
                let a = self.feature_mut(feature)?;
                let mut count = 0;
                for grant_id in grant_ids {
                    if a.claims.get(grant_id).is_some_and(|c| c.server == *server) {
                        a.claims.remove(grant_id);
                        count += 1;
                    }
                }
                Ok(ControlOutcome::Claims { count })
            }
        }
    }

    /// Whether the policy's `reserve` and `max` rules let `claim` hold its
    /// seats of `feature` besides those recorded.
    fn check_claim(&self, feature: &str, claim: &Claim) -> Result<(), ControlRefusal> {
        let (Some(pool), Some(a)) = (&self.pool, self.allocations.get(feature)) else {
            return Ok(());
        };
        pool.policy
            .check_claim(
                feature,
                a.nominal_seats,
                a.holders(),
                (claim.asker(), claim.seats),
            )
            .map_err(|refused| match refused {
                ClaimRefused::Max(reason) => ControlRefusal::MaxReached(reason),
                ClaimRefused::Reserved(reason) => ControlRefusal::Reserved(reason),
            })
    }

    fn claim(
        &mut self,
        feature: &str,
        grant_id: &str,
        claim: &Claim,
        force: bool,
    ) -> Result<ControlOutcome, ControlRefusal> {
        let counts = self.pool.as_ref().is_some_and(|p| p.policy.counts(feature));
        if !counts {
            self.feature_mut(feature)?;
            return Ok(ControlOutcome::Claims { count: 0 });
        }
        if let Some(existing) = self.feature_mut(feature)?.claims.get_mut(grant_id) {
            // A move by a fail-over; never back to an older copy.
            if claim.renewal >= existing.renewal {
                existing.server = claim.server.clone();
                existing.renewal = claim.renewal;
            }
            return Ok(ControlOutcome::Claims { count: 1 });
        }
        if !force {
            self.check_claim(feature, claim)?;
        }
        self.feature_mut(feature)?
            .claims
            .insert(grant_id.to_string(), claim.clone());
        Ok(ControlOutcome::Claims { count: 1 })
    }

    fn revoke_run(&mut self, instance: &str) -> Result<ControlOutcome, ControlRefusal> {
        if self.revoked_runs.contains(instance) {
            return Ok(ControlOutcome::Revoked { newly: false });
        }
        if self.revoked_runs.len() >= REVOKED_RUNS_MAX {
            return Err(ControlRefusal::TooManyRevoked {
                max: REVOKED_RUNS_MAX,
            });
        }
        self.revoked_runs.insert(instance.to_string());
        Ok(ControlOutcome::Revoked { newly: true })
    }

    fn servers_in_order(&self) -> Vec<String> {
        self.pool
            .as_ref()
            .map(PoolFile::server_ids)
            .unwrap_or_default()
    }

    fn feature_mut(&mut self, feature: &str) -> Result<&mut FeatureAllocation, ControlRefusal> {
        self.allocations
            .get_mut(feature)
            .ok_or_else(|| ControlRefusal::UnknownFeature {
                feature: feature.to_string(),
            })
    }

    fn borrow(
        &mut self,
        feature: &str,
        recipient: &str,
        source: &BorrowSource,
        seats: u32,
    ) -> Result<ControlOutcome, ControlRefusal> {
        let order = self.servers_in_order();
        let a = self.feature_mut(feature)?;
        if !a.servers.contains_key(recipient) {
            return Err(ControlRefusal::UnknownServer {
                server: recipient.to_string(),
            });
        }
        let moved = match source {
            BorrowSource::FreePool => {
                let n = seats.min(a.free_pool);
                a.free_pool -= n;
                a.take_into(recipient, n, true);
                n
            }
            BorrowSource::DownServer(donor) => {
                a.take_from_silent(donor, recipient)?;
                let n = seats.min(a.allocation_of(donor));
                a.move_between(donor, recipient, n);
                n
            }
            BorrowSource::HandOver { server, .. } => {
                if a.allocation_of(server) < seats {
                    return Err(ControlRefusal::NothingToTake {
                        feature: feature.to_string(),
                        source_name: format!("{source:?}"),
                    });
                }
                a.take_from_silent(server, recipient)?;
                a.move_between(server, recipient, seats);
                a.moved.entry(recipient.to_string()).or_default().hand_overs += 1;
                seats
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
            return Err(ControlRefusal::NothingToTake {
                feature: feature.to_string(),
                source_name: format!("{source:?}"),
            });
        }
        Ok(ControlOutcome::Moved { seats: moved })
    }

    fn request_release(
        &mut self,
        feature: &str,
        donor: &str,
        recipient: &str,
        seats: u32,
    ) -> Result<ControlOutcome, ControlRefusal> {
        let id = self.next_request_id;
        let a = self.feature_mut(feature)?;
        if donor == recipient
            || !a.servers.contains_key(donor)
            || !a.servers.contains_key(recipient)
        {
            return Err(ControlRefusal::CannotAsk {
                donor: donor.to_string(),
                recipient: recipient.to_string(),
            });
        }
        if seats == 0 {
            return Err(ControlRefusal::EmptyRequest);
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
    ) -> Result<ControlOutcome, ControlRefusal> {
        let order = self.servers_in_order();
        let a = self.feature_mut(feature)?;
        let Some(request) = a.requests.get(&request_id).cloned() else {
            return Err(ControlRefusal::NotPending { request_id });
        };
        let allocation = a.allocation_of(&request.donor);
        if allocation != allocation_before {
            return Err(ControlRefusal::AllocationChanged {
                server: request.donor,
                allocation_before,
                allocation,
            });
        }
        if a.loosened_count(&request.donor) != loosened_before {
            return Err(ControlRefusal::IssuedSinceAnswer {
                server: request.donor,
            });
        }
        if seats > request.seats || seats > allocation {
            return Err(ControlRefusal::CannotGive {
                request_id,
                asked: request.seats,
                seats,
            });
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
    ) -> Result<ControlOutcome, ControlRefusal> {
        let order = self.servers_in_order();
        let a = self.feature_mut(feature)?;
        let allocation = a.allocation_of(server);
        let Some(&target) = a.targets.get(server) else {
            return Err(ControlRefusal::NoTarget {
                server: server.to_string(),
                feature: feature.to_string(),
            });
        };
        if allocation != allocation_before
            || target != target_before
            || a.loosened_count(server) != loosened_before
        {
            return Err(ControlRefusal::DrainOutdated {
                server: server.to_string(),
            });
        }
        if seats == 0 || seats > allocation.saturating_sub(target) {
            return Err(ControlRefusal::CannotDrain {
                server: server.to_string(),
                allocation,
                target,
                seats,
            });
        }
        *a.servers.get_mut(server).expect("has a target") -= seats;
        a.free_pool += seats;
        a.count_out(server, seats);
        a.fill(&order);
        Ok(ControlOutcome::Moved { seats })
    }

    /// Checks whether `text` would be installed, without installing it.
    pub fn check_install(&self, text: &str) -> Result<PoolFile, ControlRefusal> {
        let next = PoolFile::parse(text)?;
        if let Some(current) = &self.pool {
            if next.pool_id != current.pool_id {
                return Err(ControlRefusal::WrongPool {
                    file_pool: next.pool_id,
                    pool: current.pool_id.clone(),
                });
            }
            if next.sequence <= current.sequence {
                return Err(ControlRefusal::NotNewer {
                    sequence: next.sequence,
                    installed: current.sequence,
                });
            }
        }
        self.next_allocations(&next)?;
        Ok(next)
    }

    fn recover(&mut self, text: &str) -> Result<u64, ControlRefusal> {
        if self.pool.is_some() {
            return Err(ControlRefusal::RecoverNotFirst);
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

    fn install(&mut self, text: &str) -> Result<u64, ControlRefusal> {
        let next = self.check_install(text)?;
        self.allocations = self.next_allocations(&next)?;
        // A feature whose `reserve` and `max` rules are gone records no claims.
        for (feature, allocation) in self.allocations.iter_mut() {
            if !next.policy.counts(feature) {
                allocation.claims.clear();
            }
        }
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
    ) -> Result<BTreeMap<String, FeatureAllocation>, ControlRefusal> {
        let servers = next.server_ids();
        let mut features: Vec<&str> = next.codes.iter().map(|c| c.feature()).collect();
        features.sort();
        features.dedup();
        let mut result = BTreeMap::new();
        for feature in features {
            let nominal = u32::try_from(next.nominal_seats(feature)).map_err(|_| {
                ControlRefusal::TooManySeats {
                    feature: feature.to_string(),
                }
            })?;
            let requested = next.distribution.get(feature);
            let allocation = match self.allocations.get(feature) {
                None => initial(feature, nominal, &servers, requested)?,
                Some(current) => {
                    let installed = self.pool.as_ref().and_then(|p| p.distribution.get(feature));
                    let changed = requested.filter(|r| Some(*r) != installed);
                    carried_over(feature, current, nominal, &servers, changed)?
                }
            };
            allocation
                .check_invariants(feature)
                .map_err(ControlRefusal::Broken)?;
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
) -> Result<FeatureAllocation, ControlRefusal> {
    let table = DistributionTable::initial(feature, nominal, servers, requested)?;
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
) -> Result<FeatureAllocation, ControlRefusal> {
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
        // Out on devices, perhaps offline: they stay until returned or expired.
        temporaries: current.temporaries.clone(),
        temporary_serial: current.temporary_serial,
        claims: current.claims.clone(),
        waiters: current.waiters.clone(),
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
            return Err(ControlRefusal::FewerSeats {
                feature: feature.to_string(),
                removed,
                free_pool: next.free_pool,
            });
        }
        next.free_pool -= removed;
    }
    if let Some(requested) = changed_distribution {
        set_targets(&mut next, feature, nominal, requested)?;
    }
    next.fill(servers);
    Ok(next)
}

/// Makes `requested` the feature's targets, if the seats can ever meet them.
fn set_targets(
    next: &mut FeatureAllocation,
    feature: &str,
    nominal: u32,
    requested: &BTreeMap<String, u32>,
) -> Result<(), ControlRefusal> {
    for server in requested.keys() {
        if !next.servers.contains_key(server) {
            return Err(ControlRefusal::DistributionNamesUnknown {
                feature: feature.to_string(),
                server: server.clone(),
            });
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
        return Err(ControlRefusal::DistributionTooLarge {
            feature: feature.to_string(),
            wanted,
            available: u64::from(nominal).saturating_sub(untouched),
        });
    }
    next.targets = requested.clone();
    Ok(())
}
