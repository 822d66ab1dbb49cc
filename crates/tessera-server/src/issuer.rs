//! The issuing path: one server's key table and distribution tables.
//!
//! Everything here is synchronous and takes time as an argument; the HTTP
//! layer holds it under one mutex, and writes new grants to the store before
//! answering. A checkout touches only this server (DESIGN.md point 2).
//!
//! Seats are issued only while the quota lease holds ([`Issuer::set_quota`]);
//! a pool of one renews its own quota, a pool of many gets it from the leader.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use tessera_core::{
    ControlState, DistributionError, DistributionTable, LicenseTable, PoolFile, SharedText, Version,
};
use tessera_proto::{ErrorCode, ServerInfo};

use crate::config::Limits;
use crate::cooling::Cooling;
use crate::refusal::Refusal;
use crate::store::StoredGrant;

/// A request's identity and wants, checked.
#[derive(Clone, Debug)]
pub struct SeatRequest {
    pub client_id: SharedText,
    pub user: SharedText,
    pub host: SharedText,
    /// The program's display, where it sent one (status, lmstat).
    pub display: Option<SharedText>,
    pub feature: SharedText,
    pub version: SharedText,
    pub count: u32,
    /// The SDK's heartbeat number (0 for a checkout, or a client that does
    /// not count): for a held grant, the highest renewal seen.
    pub renewal: u64,
}

/// A grant this server holds.
#[derive(Clone, Debug)]
pub struct LiveGrant {
    pub request: SeatRequest,
    pub issued_at_ms: u64,
    pub issued_unix_ms: i64,
    pub expires_at_ms: u64,
    /// Its place among grants lapsing at the same millisecond in
    /// [`Issuer`]'s expiry queue, set when it is queued.
    expiry_ticket: u64,
    /// False for a grant restored or kept after the table shrank below it:
    /// its seats are held aside until it lapses and it is never renewed.
    pub counted: bool,
    /// Checked in, and held until its expiry all the same (the policy's
    /// `linger_s`).
    pub lingering: bool,
}

impl LiveGrant {
    pub fn stored(&self) -> StoredGrant {
        let r = &self.request;
        StoredGrant {
            feature: r.feature.clone(),
            count: r.count,
            client_id: r.client_id.clone(),
            user: r.user.clone(),
            host: r.host.clone(),
            display: r.display.clone(),
            version: r.version.clone(),
            issued_unix_ms: self.issued_unix_ms,
        }
    }
}

/// A grant that left the key table (checked in or lapsed): what the store
/// must delete. `issued_unix_ms` tells this grant from a later one with the
/// same id (a fail-over heartbeat converted after it lapsed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Released {
    pub grant_id: SharedText,
    pub feature: SharedText,
    pub user: SharedText,
    pub host: SharedText,
    pub seats: u32,
    pub issued_unix_ms: i64,
    /// Whether the pool had other servers when it was released: only they
    /// may hold a copy of the grant to be told of (`crate::copies`).
    pub pool_of_several: bool,
}

impl Released {
    fn of(grant_id: SharedText, grant: &LiveGrant, pool_of_several: bool) -> Released {
        Released {
            grant_id,
            feature: grant.request.feature.clone(),
            user: grant.request.user.clone(),
            host: grant.request.host.clone(),
            seats: grant.request.count,
            issued_unix_ms: grant.issued_unix_ms,
            pool_of_several,
        }
    }
}

/// Lease lengths of a feature, as granted to clients and as held by the server.
#[derive(Clone, Copy, Debug)]
pub struct LeaseTerms {
    pub lease_ms: u64,
    pub heartbeat_interval_ms: u64,
    /// The lease stretched by the drift bound: how long the server keeps the seats.
    pub hold_ms: u64,
}

/// Why the server issues or not, besides seats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IssuingState {
    Serving,
    /// Started without its store: only renewals until this instant.
    Grace {
        until_ms: u64,
    },
    /// The quota lease lapsed.
    NoQuorum,
    /// The wall clock was set back (`crate::clock_mark`).
    ClockSetBack,
}

/// Seats held back for a temporary license being activated.
#[derive(Clone, Debug)]
struct ReservedTemporary {
    feature: String,
    seats: u32,
    /// The activation's serial, once committed.
    serial: Option<u64>,
}

impl ReservedTemporary {
    /// Whether `control` has taken the seats from this server's allocation.
    fn applied_in(&self, control: &ControlState) -> bool {
        self.serial.is_some_and(|serial| {
            control
                .allocation(&self.feature)
                .is_some_and(|a| a.temporary_serial >= serial)
        })
    }
}

pub struct Issuer {
    server_id: String,
    /// The replicated control state; `None` until the pool has formed.
    control: Option<Arc<ControlState>>,
    /// The control state's servers as clients see them, shared by every
    /// grant answered.
    servers: Arc<[ServerInfo]>,
    licenses: LicenseTable,
    tables: BTreeMap<String, DistributionTable>,
    /// Seats of uncounted grants, per feature, held aside until they lapse.
    held_aside: HashMap<String, u32>,
    /// Conversions waiting for their grant's seats to be handed over here
    /// (FIG. 10), by grant id: the feature and the seats. From the moment
    /// the hand-over is asked for, no other checkout may take those seats
    /// when they arrive, nor may this server lend them on; only that
    /// grant's conversion does.
    hand_overs_expected: HashMap<String, (String, u32)>,
    /// Seats held back for temporary licenses this server asked the pool to
    /// activate out of its allocation (seed 004), by license id: until the
    /// control state that took them from the allocation is applied here
    /// (its feature's `temporary_serial` reached the activation's), or the
    /// activation failed.
    temporaries_reserved: HashMap<String, ReservedTemporary>,
    /// A B-tree, not a hash map: a hash table holding a million grants
    /// doubles in one step, moving every grant under the issuer's lock
    /// (a pause of over a second that every request waited out); a
    /// B-tree grows a node at a time.
    grants: BTreeMap<SharedText, LiveGrant>,
    /// Grant ids by when they lapse: (`expires_at_ms`, `expiry_ticket`),
    /// a key a grant carries, so that moving or removing it copies no id.
    expiry_queue: BTreeMap<(u64, u64), SharedText>,
    /// The ticket of the next grant queued.
    expiry_tickets: u64,
    /// A B-tree for the same reason as `grants`.
    grants_per_client: BTreeMap<SharedText, usize>,
    limits: Limits,
    clock_drift_percent: u32,
    grace_until_ms: Option<u64>,
    /// Why the wall clock is not trusted, while it is not (`crate::clock_mark`).
    clock_set_back: Option<String>,
    /// Grants read from the store at start, waiting for the first control
    /// state (their lease terms come from its codes), and when they were read.
    pending_restore: Vec<(SharedText, StoredGrant)>,
    restored_at_ms: u64,
    /// Issue and renew only while the monotonic clock is below this.
    quota_valid_until_ms: u64,
    /// Seats of grants checked in, not yet issued again (`crate::cooling`).
    cooling: Cooling,
}

/// The time of a request: the monotonic clock for leases, the wall clock
/// for the record of when a grant was issued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    pub ms: u64,
    pub unix_ms: i64,
}

/// What a checkout or heartbeat gives: a grant to make durable and answer,
/// or a refusal.
pub type IssueResult = Result<Issued, Refusal>;

/// How a grant came to be on this server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A checkout, or the renewal of a grant this server issued.
    Checkout,
    /// A heartbeat for a grant this server did not hold (fail-over, or a
    /// lapse), converted into a new grant with the same id.
    Conversion,
}

/// Outcome of a checkout or heartbeat that the store must make durable
/// before the answer is sent.
#[derive(Clone, Debug)]
pub struct Issued {
    pub(crate) grant_id: SharedText,
    pub(crate) feature: SharedText,
    pub(crate) count: u32,
    pub(crate) terms: LeaseTerms,
    pub(crate) origin: Origin,
    /// The pool's servers, in priority order: where the client fails over.
    pub(crate) servers: Arc<[ServerInfo]>,
    /// Set when a new grant was made (checkout or conversion); renewals write nothing.
    pub(crate) to_store: Option<StoredGrant>,
    /// Set when copies of this grant on other servers are now stale: it was
    /// converted here, or renewed here after heartbeats went elsewhere. The
    /// pool is told once the grant is durable (`SupersededGrant`).
    pub(crate) supersedes_renewal: Option<u64>,
    /// The copy's heartbeat number and when it lapses here, as held now:
    /// what the holding proof binds (`crate::hand_over`).
    pub(crate) renewal: u64,
    pub(crate) expires_at_ms: u64,
}

impl Issuer {
    pub fn new(
        server_id: String,
        limits: Limits,
        clock_drift_percent: u32,
        restored: Vec<(SharedText, StoredGrant)>,
        now_ms: u64,
    ) -> Issuer {
        let mut issuer = Issuer {
            server_id,
            control: None,
            servers: Arc::new([]),
            licenses: LicenseTable::default(),
            tables: BTreeMap::new(),
            held_aside: HashMap::new(),
            hand_overs_expected: HashMap::new(),
            temporaries_reserved: HashMap::new(),
            grants: BTreeMap::new(),
            expiry_queue: BTreeMap::new(),
            expiry_tickets: 0,
            grants_per_client: BTreeMap::new(),
            limits,
            clock_drift_percent,
            grace_until_ms: None,
            clock_set_back: None,
            pending_restore: restored,
            restored_at_ms: now_ms,
            quota_valid_until_ms: 0,
            cooling: Cooling::default(),
        };
        issuer.rebuild_tables();
        issuer
    }

    /// Every restored grant gets a full hold from now: the server cannot know
    /// how much of its lease ran while it was down.
    fn restore(&mut self, grant_id: SharedText, stored: StoredGrant, now_ms: u64) {
        let hold_ms = self
            .terms(&stored.feature)
            .map(|t| t.hold_ms)
            .unwrap_or_else(|| self.longest_hold_ms());
        let grant = LiveGrant {
            request: SeatRequest {
                client_id: stored.client_id,
                user: stored.user,
                host: stored.host,
                display: stored.display,
                feature: stored.feature,
                version: stored.version,
                count: stored.count,
                // Unknown: any renewal elsewhere is newer than a restored copy.
                renewal: 0,
            },
            issued_at_ms: now_ms,
            issued_unix_ms: stored.issued_unix_ms,
            expires_at_ms: now_ms + hold_ms,
            expiry_ticket: 0,
            counted: false,
            lingering: false,
        };
        self.insert_grant(grant_id, grant);
    }

    /// Brings every feature's table to the control state and the license
    /// table. The committed [`tessera_core::FeatureAllocation`] is the one
    /// model of a feature's seats; a table is this server's view of it (each
    /// server's allocation capped to the seats served here) plus its own
    /// in-use count, kept as grants come and go. A feature whose view did not
    /// change keeps its table; one whose allocation here still holds every
    /// counted seat takes them in one step. Only a feature with grants held
    /// aside, or whose allocation here fell below its seats in use, counts
    /// its grants again. So applying a command costs a look at each feature,
    /// not a walk over the key table.
    fn rebuild_tables(&mut self) {
        let mut previous = std::mem::take(&mut self.tables);
        self.build_tables();
        let features: BTreeSet<String> =
            previous.keys().chain(self.tables.keys()).cloned().collect();
        for feature in features {
            let before = previous.remove(&feature);
            self.carry_over(&feature, before);
        }
    }

    /// Moves the seats in use of `feature` from its previous table into the
    /// new one (see [`Issuer::rebuild_tables`]).
    fn carry_over(&mut self, feature: &str, before: Option<DistributionTable>) {
        let held_aside = self.held_aside.get(feature).copied().unwrap_or(0);
        let own = |table: &DistributionTable| table.row(&self.server_id).unwrap_or_default();
        let in_use = before.as_ref().map_or(0, |t| own(t).in_use);
        if held_aside == 0 {
            match (before, self.tables.get_mut(feature)) {
                (Some(before), Some(after)) if same_view(&before, after) => {
                    *after = before;
                    return;
                }
                (_, Some(after)) if own(after).allocation >= in_use => {
                    if in_use > 0 {
                        after
                            .take(&self.server_id, in_use)
                            .expect("the allocation was checked above");
                    }
                    return;
                }
                (_, None) if in_use == 0 => return,
                _ => {}
            }
        }
        self.recount_grants(feature);
    }

    fn build_tables(&mut self) {
        if let Some(control) = &self.control {
            let servers = control.pool().map(PoolFile::server_ids).unwrap_or_default();
            for feature in self.licenses.features() {
                let Some(allocation) = control.allocation(&feature.feature) else {
                    continue;
                };
                let caps: BTreeMap<String, u32> = servers
                    .iter()
                    .map(|server| (server.clone(), allocation.cap(server, feature.hard_limit)))
                    .collect();
                match DistributionTable::initial(
                    &feature.feature,
                    feature.hard_limit,
                    &servers,
                    Some(&caps),
                ) {
                    Ok(table) => {
                        self.tables.insert(feature.feature.clone(), table);
                    }
                    Err(err) => tracing::error!("feature `{}`: {err}", feature.feature),
                }
            }
        }
    }

    /// Counts every grant of `feature` in its table, oldest first; grants
    /// that no longer fit (the hard limit dropped) are held aside until they
    /// lapse.
    fn recount_grants(&mut self, feature: &str) {
        self.held_aside.remove(feature);
        // Oldest grants first, so that the ones that lose their seats are the newest.
        let mut order: Vec<(u64, SharedText)> = self
            .grants
            .iter()
            .filter(|(_, g)| *g.request.feature == *feature)
            .map(|(id, g)| (g.issued_at_ms, id.clone()))
            .collect();
        order.sort();
        for (_, grant_id) in order {
            let grant = self.grants.get_mut(&grant_id).expect("listed above");
            let fits = self
                .tables
                .get_mut(feature)
                .map(|table| table.take(&self.server_id, grant.request.count).is_ok())
                .unwrap_or(false);
            grant.counted = fits;
            if !fits {
                *self.held_aside.entry(feature.to_string()).or_default() += grant.request.count;
            }
        }
    }

    /// Counts every grant of every feature again (restored grants come in uncounted).
    fn recount_all_grants(&mut self) {
        let features: BTreeSet<String> = self
            .grants
            .values()
            .map(|g| g.request.feature.to_string())
            .chain(self.held_aside.keys().cloned())
            .collect();
        self.held_aside.clear();
        for feature in features {
            self.recount_grants(&feature);
        }
    }

    /// Takes a new control state (a pool file installed, allocations moved)
    /// and the license table evaluated from its codes on this server.
    pub fn set_control(&mut self, control: Arc<ControlState>, licenses: LicenseTable) {
        // Seats of a temporary license leave the reservation exactly when
        // they leave the allocation.
        self.temporaries_reserved
            .retain(|_, reserved| !reserved.applied_in(&control));
        self.servers = control
            .pool()
            .map(|pool| {
                pool.servers
                    .iter()
                    .map(|server| ServerInfo {
                        id: server.id.clone(),
                        address: server.address.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        self.control = Some(control);
        self.licenses = licenses;
        let restored = std::mem::take(&mut self.pending_restore);
        let any_restored = !restored.is_empty();
        for (grant_id, stored) in restored {
            self.restore(grant_id, stored, self.restored_at_ms);
        }
        if any_restored {
            // Restored grants are not counted yet: every grant is counted again.
            self.tables.clear();
            self.build_tables();
            self.recount_all_grants();
        } else {
            self.rebuild_tables();
        }
    }

    /// Grants read from the store that wait for the pool's control state.
    pub fn restored_pending(&self) -> usize {
        self.pending_restore.len()
    }

    /// Evaluates the license table again (a new day).
    pub fn reload_licenses(&mut self, licenses: LicenseTable) {
        self.licenses = licenses;
        self.rebuild_tables();
    }

    pub fn control(&self) -> Option<&Arc<ControlState>> {
        self.control.as_ref()
    }

    /// The pool of one renews its own quota; the pool sets it from the leader's answer.
    pub fn set_quota(&mut self, valid_until_ms: u64) {
        self.quota_valid_until_ms = valid_until_ms;
    }

    pub fn state(&self, now_ms: u64) -> IssuingState {
        if self.clock_set_back.is_some() {
            return IssuingState::ClockSetBack;
        }
        if now_ms >= self.quota_valid_until_ms || self.control.is_none() {
            return IssuingState::NoQuorum;
        }
        match self.grace_until_ms {
            Some(until_ms) if now_ms < until_ms => IssuingState::Grace { until_ms },
            _ => IssuingState::Serving,
        }
    }

    pub fn terms(&self, feature: &str) -> Option<LeaseTerms> {
        let policy = self.licenses.feature(feature)?.policy;
        let lease_ms = u64::from(policy.lease_s) * 1000;
        Some(LeaseTerms {
            lease_ms,
            heartbeat_interval_ms: u64::from(policy.heartbeat_interval_s) * 1000,
            hold_ms: tessera_core::lease::hold_ms(lease_ms, self.clock_drift_percent),
        })
    }

    /// The longest hold of any feature: the grace period after a lost store.
    pub fn longest_hold_ms(&self) -> u64 {
        self.licenses
            .features()
            .filter_map(|f| self.terms(&f.feature))
            .map(|t| t.hold_ms)
            .max()
            .unwrap_or(0)
    }

    pub fn checkout(
        &mut self,
        grant_id: SharedText,
        request: SeatRequest,
        now: Now,
    ) -> IssueResult {
        self.issue(grant_id, request, now, Origin::Checkout)
    }

    fn issue(
        &mut self,
        grant_id: SharedText,
        request: SeatRequest,
        Now {
            ms: now_ms,
            unix_ms: now_unix_ms,
        }: Now,
        origin: Origin,
    ) -> IssueResult {
        let terms = self.check_servable(&request)?;
        self.check_issuing(origin, now_ms)?;
        self.check_limits(&request.client_id)?;
        // A conversion may take the seats held back for its own hand-over.
        let available = self.available_to(&request.feature, Some(&grant_id));
        let table = self
            .tables
            .get_mut(&*request.feature)
            .expect("check_servable found the feature's table");
        let row = table.row(&self.server_id).unwrap_or_default();
        if available < request.count {
            return Err(Refusal::new(
                ErrorCode::NoSeatsAvailable,
                format!(
                    "no seats of `{}` free on server `{}`: {} requested, {} available of {} \
                     allocated (hard limit {})",
                    request.feature,
                    self.server_id,
                    request.count,
                    available,
                    row.allocation,
                    table.hard_limit()
                ),
            ));
        }
        table
            .take(&self.server_id, request.count)
            .expect("availability checked above");
        let grant = LiveGrant {
            request,
            issued_at_ms: now_ms,
            issued_unix_ms: now_unix_ms,
            expires_at_ms: now_ms + terms.hold_ms,
            expiry_ticket: 0,
            counted: true,
            lingering: false,
        };
        let stored = grant.stored();
        let supersedes_renewal = (origin == Origin::Conversion && grant.request.renewal > 0)
            .then_some(grant.request.renewal);
        let (renewal, expires_at_ms) = (grant.request.renewal, grant.expires_at_ms);
        let issued = Issued {
            grant_id: grant_id.clone(),
            feature: grant.request.feature.clone(),
            count: grant.request.count,
            terms,
            origin,
            servers: self.servers(),
            to_store: Some(stored),
            supersedes_renewal,
            renewal,
            expires_at_ms,
        };
        self.insert_grant(grant_id, grant);
        Ok(issued)
    }

    /// Whether this server may issue new seats now: only with a quota, and
    /// in its grace period only to a conversion (a client it may have
    /// served before it lost its store).
    fn check_issuing(&self, origin: Origin, now_ms: u64) -> Result<(), Refusal> {
        match self.state(now_ms) {
            IssuingState::Serving => Ok(()),
            IssuingState::NoQuorum => Err(no_quorum(&self.server_id)),
            IssuingState::Grace { until_ms } if origin == Origin::Checkout => Err(Refusal::new(
                ErrorCode::GracePeriod,
                format!(
                    "server `{}` is in its grace period (after a lost grant store, or a crash with \
                     grants not yet synced, it may lack seats clients hold) and accepts only \
                     renewals for {} more ms",
                    self.server_id,
                    until_ms - now_ms
                ),
            )),
            IssuingState::Grace { .. } => Ok(()),
            IssuingState::ClockSetBack => Err(self.clock_refusal()),
        }
    }

    fn clock_refusal(&self) -> Refusal {
        Refusal::new(
            ErrorCode::ClockSetBack,
            format!(
                "server `{}`: {}; try another server",
                self.server_id,
                self.clock_set_back
                    .as_deref()
                    .unwrap_or("the clock was set back")
            ),
        )
    }

    /// Why the wall clock is not trusted (`None`: it is).
    pub fn set_clock_set_back(&mut self, reason: Option<String>) {
        self.clock_set_back = reason;
    }

    pub fn clock_set_back(&self) -> Option<&str> {
        self.clock_set_back.as_deref()
    }

    /// Renews a held grant, or converts an unknown one into a checkout with the same id.
    pub fn heartbeat(
        &mut self,
        grant_id: SharedText,
        request: SeatRequest,
        now: Now,
    ) -> IssueResult {
        let now_ms = now.ms;
        let Some(grant) = self.grants.get(&grant_id) else {
            return self.issue(grant_id, request, now, Origin::Conversion);
        };
        let held = &grant.request;
        if held.client_id != request.client_id
            || held.feature != request.feature
            || held.count != request.count
        {
            // Nothing about the holder: the message goes to whoever asked.
            return Err(Refusal::new(
                ErrorCode::GrantMismatch,
                format!(
                    "grant {grant_id} on server `{}` is held for another client, feature or \
                     count than the heartbeat names",
                    self.server_id
                ),
            ));
        }
        let terms = self.check_servable(&request)?;
        match self.state(now_ms) {
            IssuingState::NoQuorum => return Err(no_quorum(&self.server_id)),
            IssuingState::ClockSetBack => return Err(self.clock_refusal()),
            IssuingState::Serving | IssuingState::Grace { .. } => {}
        }
        if !grant.counted {
            return Err(Refusal::new(
                ErrorCode::NoSeatsAvailable,
                format!(
                    "grant {grant_id} no longer fits the seats of `{}` on server `{}` (the hard \
                     limit dropped); it is not renewed",
                    request.feature, self.server_id
                ),
            ));
        }
        let new_expiry = now_ms + terms.hold_ms;
        // Heartbeats this server did not see went elsewhere: another server
        // may hold a copy renewed since this one, now stale.
        let went_elsewhere = request.renewal > grant.request.renewal.saturating_add(1);
        let grant = self.expire_at(&grant_id, new_expiry);
        // A heartbeat that crossed its own check-in: held again.
        grant.lingering = false;
        grant.request.renewal = grant.request.renewal.max(request.renewal);
        let renewal = grant.request.renewal;
        Ok(Issued {
            grant_id,
            feature: request.feature.clone(),
            count: request.count,
            terms,
            origin: Origin::Checkout,
            servers: self.servers(),
            to_store: None,
            supersedes_renewal: went_elsewhere.then_some(request.renewal),
            renewal,
            expires_at_ms: new_expiry,
        })
    }

    /// Undoes a checkout whose grant could not be made durable.
    pub fn rollback(&mut self, grant_id: &str) -> Option<Released> {
        self.release_grant(grant_id)
    }

    /// A check-in of a feature whose policy makes seats linger: the grant
    /// stays held, never renewed, until `now_ms` plus the linger, and then
    /// lapses as any grant does. `Some(until_ms)` if it lingers now; `None`
    /// when it does not (no linger, or not this client's grant: the check-in
    /// says why).
    pub fn linger(&mut self, grant_id: &str, client_id: &str, now_ms: u64) -> Option<u64> {
        let grant = self.grants.get(grant_id)?;
        if *grant.request.client_id != *client_id || !grant.counted {
            return None;
        }
        if grant.lingering {
            // Checked in again: it lingers as it did.
            return Some(grant.expires_at_ms);
        }
        let linger_ms = self
            .pool()
            .map_or(0, |pool| pool.policy.linger_ms(&grant.request.feature));
        if linger_ms == 0 {
            return None;
        }
        let until_ms = now_ms + linger_ms;
        let grant = self.expire_at(grant_id, until_ms);
        grant.lingering = true;
        Some(until_ms)
    }

    /// Seats of `feature` checked in and lingering here.
    pub fn lingering_seats(&self, feature: &str) -> u32 {
        self.grants
            .values()
            .filter(|g| g.lingering && *g.request.feature == *feature)
            .map(|g| g.request.count)
            .sum()
    }

    pub fn checkin(&mut self, grant_id: &str, client_id: &str) -> Result<Released, Refusal> {
        let grant = self.grants.get(grant_id).ok_or_else(|| {
            Refusal::new(
                ErrorCode::UnknownGrant,
                format!(
                    "server `{}` holds no grant {grant_id}; it may have lapsed or been issued \
                     by another server",
                    self.server_id
                ),
            )
        })?;
        if *grant.request.client_id != *client_id {
            return Err(Refusal::new(
                ErrorCode::GrantMismatch,
                format!("grant {grant_id} is not held by client `{client_id}`"),
            ));
        }
        let (grant_id, grant) = self.remove_grant(grant_id).expect("found above");
        let pool_of_several = self.pool_of_several();
        // In a pool of several servers a check-in's seats cool until the
        // leader has heard of it (`crate::cooling`); a pool of one hands
        // nothing over.
        if pool_of_several {
            let r = &grant.request;
            self.cooling
                .cool(&grant_id, &r.feature, r.count, grant.expires_at_ms);
        }
        Ok(Released::of(grant_id, &grant, pool_of_several))
    }

    /// Whether the pool has servers other than this one.
    fn pool_of_several(&self) -> bool {
        self.pool().is_some_and(|pool| pool.servers.len() > 1)
    }

    /// The leader acknowledged a report carrying these check-ins. Whether
    /// any seats may be issued again.
    pub fn check_ins_acknowledged<'a>(
        &mut self,
        grant_ids: impl IntoIterator<Item = &'a str>,
    ) -> bool {
        self.cooling.acknowledged(grant_ids)
    }

    /// Seats of every feature cooling after a check-in (`crate::cooling`).
    pub fn cooling_seats(&self) -> u64 {
        self.cooling
            .per_feature()
            .map(|(_, seats)| u64::from(*seats))
            .sum()
    }

    /// Ends the cooling of checked-in copies that would have lapsed by
    /// `now_ms`. Whether any seats may be issued again.
    pub fn cooling_lapsed(&mut self, now_ms: u64) -> bool {
        self.cooling.lapse(now_ms)
    }

    /// Drops this server's copy of a grant that another server renewed at
    /// heartbeat `renewal` or later, or that was checked in
    /// (`SupersededGrant::CHECKED_IN`). A copy renewed here at `renewal` or
    /// later is the newest and stays. Dropping only frees seats: the client
    /// believes in its newest renewal, which the other server holds.
    pub fn drop_superseded(&mut self, grant_id: &str, renewal: u64) -> Option<Released> {
        if self.grants.get(grant_id)?.request.renewal >= renewal {
            return None;
        }
        self.release_grant(grant_id)
    }

    /// Removes every grant whose hold ended by `now_ms`.
    pub fn expire(&mut self, now_ms: u64) -> Vec<Released> {
        let mut expired = Vec::new();
        while let Some(entry) = self.expiry_queue.first_entry() {
            if entry.key().0 > now_ms {
                break;
            }
            let queued = entry.remove();
            expired.extend(self.release_grant(&queued));
        }
        expired
    }

    fn insert_grant(&mut self, grant_id: SharedText, mut grant: LiveGrant) {
        *self
            .grants_per_client
            .entry(grant.request.client_id.clone())
            .or_default() += 1;
        grant.expiry_ticket = self.next_expiry_ticket();
        self.expiry_queue
            .insert((grant.expires_at_ms, grant.expiry_ticket), grant_id.clone());
        self.grants.insert(grant_id, grant);
    }

    fn next_expiry_ticket(&mut self) -> u64 {
        self.expiry_tickets += 1;
        self.expiry_tickets
    }

    /// Moves held grant `grant_id` to lapse at `at_ms`, and returns it.
    fn expire_at(&mut self, grant_id: &str, at_ms: u64) -> &mut LiveGrant {
        let ticket = self.next_expiry_ticket();
        let grant = self.grants.get_mut(grant_id).expect("a held grant");
        let id = self
            .expiry_queue
            .remove(&(grant.expires_at_ms, grant.expiry_ticket))
            .unwrap_or_else(|| grant_id.into());
        (grant.expires_at_ms, grant.expiry_ticket) = (at_ms, ticket);
        self.expiry_queue.insert((at_ms, ticket), id);
        grant
    }

    /// Removes a held grant; what was released.
    fn release_grant(&mut self, grant_id: &str) -> Option<Released> {
        let (grant_id, grant) = self.remove_grant(grant_id)?;
        Some(Released::of(grant_id, &grant, self.pool_of_several()))
    }

    /// Removes a held grant; returns it with its id (the map's own).
    fn remove_grant(&mut self, grant_id: &str) -> Option<(SharedText, LiveGrant)> {
        let (grant_id, grant) = self.grants.remove_entry(grant_id)?;
        self.expiry_queue
            .remove(&(grant.expires_at_ms, grant.expiry_ticket));
        let client = &grant.request.client_id;
        if let Some(count) = self.grants_per_client.get_mut(client) {
            *count -= 1;
            if *count == 0 {
                self.grants_per_client.remove(client);
            }
        }
        let feature = &grant.request.feature;
        if grant.counted {
            if let Some(table) = self.tables.get_mut(&**feature) {
                let result: Result<(), DistributionError> =
                    table.give_back(&self.server_id, grant.request.count);
                debug_assert!(result.is_ok(), "a counted grant is in the table");
            }
        } else if let Some(aside) = self.held_aside.get_mut(&**feature) {
            *aside = aside.saturating_sub(grant.request.count);
        }
        Some((grant_id, grant))
    }

    /// Whether `request` names a feature, version and count this server
    /// serves, seats aside.
    pub fn servable(&self, request: &SeatRequest) -> Result<(), Refusal> {
        self.check_servable(request).map(|_| ())
    }

    fn check_servable(&self, request: &SeatRequest) -> Result<LeaseTerms, Refusal> {
        if self.control.is_none() {
            return Err(Refusal::new(
                ErrorCode::NoQuorum,
                format!(
                    "server `{}` has not joined a formed pool yet; retry shortly or try another server",
                    self.server_id
                ),
            ));
        }
        let feature = self.licenses.feature(&request.feature).ok_or_else(|| {
            Refusal::new(
                ErrorCode::UnknownFeature,
                format!(
                    "no license code in pool `{}` names feature `{}`",
                    self.pool().map_or("(not formed)", |p| p.pool_id.as_str()),
                    request.feature
                ),
            )
        })?;
        if feature.hard_limit == 0 {
            return Err(Refusal::new(
                ErrorCode::LicenseNotServed,
                format!(
                    "feature `{}` is not served: {}",
                    request.feature,
                    feature.why_not_served()
                ),
            ));
        }
        let version = Version::parse(&request.version)
            .map_err(|err| Refusal::new(ErrorCode::InvalidField, err))?;
        if !feature.covers(&version) {
            return Err(Refusal::new(
                ErrorCode::VersionNotLicensed,
                format!(
                    "no served code of `{}` covers version {version}",
                    request.feature
                ),
            ));
        }
        if request.count > feature.hard_limit {
            return Err(Refusal::new(
                ErrorCode::CountAboveLimit,
                format!(
                    "{} seats of `{}` requested; the hard limit is {}",
                    request.count, request.feature, feature.hard_limit
                ),
            ));
        }
        if !self.tables.contains_key(&*request.feature) {
            return Err(Refusal::new(
                ErrorCode::Internal,
                format!("feature `{}` has no distribution table", request.feature),
            ));
        }
        Ok(self.terms(&request.feature).expect("feature exists"))
    }

    fn check_limits(&self, client_id: &str) -> Result<(), Refusal> {
        if self.grants.len() >= self.limits.grants_max {
            return Err(Refusal::new(
                ErrorCode::TooManyGrants,
                format!(
                    "server `{}` holds {} grants, its limit (limits.grants_max)",
                    self.server_id,
                    self.grants.len()
                ),
            ));
        }
        match self.grants_per_client.get(client_id) {
            Some(&held) if held >= self.limits.grants_per_client_max => Err(Refusal::new(
                ErrorCode::TooManyGrants,
                format!(
                    "client `{client_id}` holds {held} grants, the limit per client \
                     (limits.grants_per_client_max)"
                ),
            )),
            None if self.grants_per_client.len() >= self.limits.clients_max => Err(Refusal::new(
                ErrorCode::TooManyGrants,
                format!(
                    "server `{}` serves {} clients, its limit (limits.clients_max)",
                    self.server_id,
                    self.grants_per_client.len()
                ),
            )),
            _ => Ok(()),
        }
    }

    /// The pool's servers, in priority order.
    pub fn servers(&self) -> Arc<[ServerInfo]> {
        self.servers.clone()
    }

    pub fn pool(&self) -> Option<&PoolFile> {
        self.control.as_ref().and_then(|c| c.pool())
    }

    pub fn server_id(&self) -> &str {
        &self.server_id
    }

    pub fn licenses(&self) -> &LicenseTable {
        &self.licenses
    }

    pub fn table(&self, feature: &str) -> Option<&DistributionTable> {
        self.tables.get(feature)
    }

    /// The grant held here under `grant_id`, if any.
    pub fn grant(&self, grant_id: &str) -> Option<&LiveGrant> {
        self.grants.get(grant_id)
    }

    pub fn grants(&self) -> impl Iterator<Item = (&SharedText, &LiveGrant)> {
        self.grants.iter()
    }

    /// Seats of `feature` a new checkout may take here: the allocation less
    /// the seats in use, those held aside, and those the pool asked this
    /// server to give up (held back from the moment the request is applied).
    pub fn available(&self, feature: &str) -> u32 {
        self.available_to(feature, None)
    }

    /// [`Self::available`] to the conversion of `grant_id`, which may take
    /// the seats held back for its own hand-over.
    fn available_to(&self, feature: &str, grant_id: Option<&str>) -> u32 {
        let Some(row) = self
            .tables
            .get(feature)
            .and_then(|t| t.row(&self.server_id))
        else {
            return 0;
        };
        let own = grant_id
            .and_then(|id| self.hand_overs_expected.get(id))
            .filter(|(f, _)| f == feature)
            .map_or(0, |(_, seats)| *seats);
        let held_aside = self.held_aside_of(feature) - own;
        let reserved = self
            .control
            .as_ref()
            .and_then(|c| c.allocation(feature))
            .map_or(0, |a| a.reserved(&self.server_id));
        row.available()
            .saturating_sub(held_aside)
            .saturating_sub(self.cooling.seats(feature))
            .saturating_sub(reserved)
    }

    /// This server's allocation of `feature` as it issues it, and the seats
    /// its clients hold (counted or held aside).
    pub fn usage(&self, feature: &str) -> Option<(u32, u32)> {
        let row = self.tables.get(feature)?.row(&self.server_id)?;
        let held_aside = self.held_aside_of(feature);
        let cooling = self.cooling.seats(feature);
        Some((row.allocation, row.in_use + held_aside + cooling))
    }

    /// The allocation of `feature` this server must keep while its clients
    /// hold `in_use` seats ([`FeatureAllocation::nominal_in_use`]): more
    /// than `in_use` where it serves only part of the feature's codes.
    pub fn held_allocation(&self, feature: &str, in_use: u32) -> u32 {
        let Some(allocation) = self.control.as_ref().and_then(|c| c.allocation(feature)) else {
            return in_use;
        };
        let served = self.licenses.feature(feature).map_or(0, |f| f.hard_limit);
        allocation.nominal_in_use(&self.server_id, in_use, served)
    }

    /// How much allocation of `feature` to borrow so that `count` more
    /// seats fit here, when `short` of them do not fit now: `short` itself
    /// where this server serves every code of the feature, and where it
    /// serves only part of them, the allocation those seats require
    /// ([`FeatureAllocation::nominal_in_use`]) less what it holds.
    pub fn allocation_short(&self, feature: &str, count: u32, short: u32) -> u32 {
        let (Some((_, in_use)), Some(allocation)) = (
            self.usage(feature),
            self.control.as_ref().and_then(|c| c.allocation(feature)),
        ) else {
            return short;
        };
        let wanted = in_use.saturating_add(count);
        let held = self.held_allocation(feature, wanted);
        if held == wanted {
            return short;
        }
        let me = &self.server_id;
        held.saturating_add(allocation.reserved(me))
            .saturating_sub(allocation.allocation_of(me))
            .max(short)
    }

    /// For the report: the allocation each feature's seats in use require,
    /// where it is more than the seats themselves.
    pub fn held_allocations(&self, in_use: &BTreeMap<String, u32>) -> BTreeMap<String, u32> {
        in_use
            .iter()
            .filter_map(|(feature, &seats)| {
                let held = self.held_allocation(feature, seats);
                (held != seats).then(|| (feature.clone(), held))
            })
            .collect()
    }

    /// Holds back `seats` of `feature` for the conversion of `grant_id`,
    /// whose hand-over is about to be asked for (see `hand_overs_expected`).
    pub fn expect_hand_over(&mut self, grant_id: &str, feature: &str, seats: u32) {
        self.hand_overs_expected
            .insert(grant_id.to_string(), (feature.to_string(), seats));
    }

    /// The conversion of `grant_id` is done, or gave up: its seats, if they
    /// came, are either its grant's now or free again.
    pub fn end_hand_over(&mut self, grant_id: &str) {
        self.hand_overs_expected.remove(grant_id);
    }

    /// Holds back `seats` of `feature` for temporary license `license_id`,
    /// which this server is about to ask the pool to activate out of its
    /// allocation: only while it issues, and only seats a checkout could
    /// take. Returns the allocation the license must take with it: what
    /// those seats require here ([`Issuer::held_allocation`]), so that what
    /// stays still covers every seat in use.
    pub fn reserve_temporary(
        &mut self,
        license_id: &str,
        feature: &str,
        seats: u32,
        now_ms: u64,
    ) -> Result<u32, Refusal> {
        self.check_issuing(Origin::Checkout, now_ms)?;
        let available = self.available(feature);
        let in_use = self.usage(feature).map_or(0, |(_, in_use)| in_use);
        let before = self.held_allocation(feature, in_use);
        let after = self.held_allocation(feature, in_use.saturating_add(seats));
        let (allocation, reserved) = self
            .control
            .as_ref()
            .and_then(|c| c.allocation(feature))
            .map_or((0, 0), |a| {
                (
                    a.allocation_of(&self.server_id),
                    a.reserved(&self.server_id),
                )
            });
        if available < seats || after.saturating_add(reserved) > allocation {
            return Err(Refusal::new(
                ErrorCode::NoSeatsAvailable,
                format!(
                    "{seats} seats of `{feature}` asked for a temporary license; server `{}` has \
                     {available} free",
                    self.server_id
                ),
            ));
        }
        self.temporaries_reserved.insert(
            license_id.to_string(),
            ReservedTemporary {
                feature: feature.to_string(),
                seats,
                serial: None,
            },
        );
        Ok(after - before)
    }

    /// The pool activated `license_id` as its feature's `serial`th: its
    /// seats stay held back until that state is applied here.
    pub fn temporary_committed(&mut self, license_id: &str, serial: u64) {
        let control = self.control.clone();
        if let Some(reserved) = self.temporaries_reserved.get_mut(license_id) {
            reserved.serial = Some(serial);
            if control.is_some_and(|c| reserved.applied_in(&c)) {
                self.temporaries_reserved.remove(license_id);
            }
        }
    }

    /// The activation of `license_id` failed: its seats are free again.
    pub fn end_temporary(&mut self, license_id: &str) {
        self.temporaries_reserved.remove(license_id);
    }

    /// Seats of `feature` no new checkout may take though no grant here
    /// counts them: those of uncounted grants, those expected by
    /// hand-overs, and those held back for temporary licenses.
    fn held_aside_of(&self, feature: &str) -> u32 {
        let expected: u32 = self
            .hand_overs_expected
            .values()
            .filter(|(f, _)| f == feature)
            .map(|(_, seats)| *seats)
            .sum();
        let temporary: u32 = self
            .temporaries_reserved
            .values()
            .filter(|t| t.feature == feature)
            .map(|t| t.seats)
            .sum();
        self.held_aside.get(feature).copied().unwrap_or(0) + expected + temporary
    }

    /// The allocation the seats this server's clients hold require, per
    /// feature of `in_use` ([`Issuer::in_use_counts`]): less the seats only
    /// held back for hand-overs and temporary licenses being activated.
    pub fn clients_hold(&self, in_use: &BTreeMap<String, u32>) -> BTreeMap<String, u32> {
        in_use
            .iter()
            .map(|(feature, &seats)| {
                let expected: u32 = self
                    .hand_overs_expected
                    .values()
                    .filter(|(f, _)| f == feature)
                    .map(|(_, n)| *n)
                    .chain(
                        self.temporaries_reserved
                            .values()
                            .filter(|t| &t.feature == feature)
                            .map(|t| t.seats),
                    )
                    .sum();
                let held = seats.saturating_sub(expected);
                (feature.clone(), self.held_allocation(feature, held))
            })
            .collect()
    }

    /// Seats in use per feature, as reported to the leader.
    pub fn in_use_counts(&self) -> BTreeMap<String, u32> {
        let mut counts: BTreeMap<String, u32> = self
            .tables
            .iter()
            .map(|(feature, table)| {
                (
                    feature.clone(),
                    table.row(&self.server_id).map_or(0, |r| r.in_use),
                )
            })
            .collect();
        let expected = self.hand_overs_expected.values().map(|(f, n)| (f, n));
        let temporary = self
            .temporaries_reserved
            .values()
            .map(|t| (&t.feature, &t.seats));
        for (feature, seats) in self
            .held_aside
            .iter()
            .chain(self.cooling.per_feature())
            .chain(expected)
            .chain(temporary)
        {
            *counts.entry(feature.clone()).or_default() += seats;
        }
        counts
    }

    pub fn grants_total(&self) -> usize {
        self.grants.len()
    }

    /// Checks every table's invariants and that the key table matches the
    /// in-use counts; for tests and debug builds.
    /// The issuer's invariants: each table's own (allocations and free
    /// pool add up, in use never above allocation), and, with
    /// `every_grant`, the counted grants hold exactly the seats the tables
    /// say are in use (a walk over every grant).
    pub fn check_invariants(&self, every_grant: bool) -> Result<(), String> {
        if every_grant {
            self.check_expiry_queue()?;
        }
        for (feature, table) in &self.tables {
            table.check_invariants()?;
            if !every_grant {
                continue;
            }
            let counted: u32 = self
                .grants
                .values()
                .filter(|g| g.counted && *g.request.feature == **feature)
                .map(|g| g.request.count)
                .sum();
            let in_use = table.row(&self.server_id).map_or(0, |r| r.in_use);
            if counted != in_use {
                return Err(format!(
                    "feature `{feature}`: grants hold {counted} seats, table says {in_use}"
                ));
            }
        }
        Ok(())
    }

    /// Every grant waits in the expiry queue once, at its expiry, and
    /// nothing else does.
    fn check_expiry_queue(&self) -> Result<(), String> {
        if self.expiry_queue.len() != self.grants.len() {
            return Err(format!(
                "{} grants, {} in the expiry queue",
                self.grants.len(),
                self.expiry_queue.len()
            ));
        }
        for (grant_id, grant) in &self.grants {
            let queued = self
                .expiry_queue
                .get(&(grant.expires_at_ms, grant.expiry_ticket));
            if queued != Some(grant_id) {
                return Err(format!(
                    "grant {grant_id} lapses at {} but the expiry queue has {queued:?} there",
                    grant.expires_at_ms
                ));
            }
        }
        Ok(())
    }

    /// Whether the grace period of a server that lost its store still runs,
    /// whatever the quota says: until it ends, the seats clients hold from
    /// before are unknown.
    pub fn in_grace(&self, now_ms: u64) -> bool {
        self.grace_until_ms
            .is_some_and(|until_ms| now_ms < until_ms)
    }

    /// When the grace period ends (or ended), if there is one.
    pub fn grace_until_ms(&self) -> Option<u64> {
        self.grace_until_ms
    }

    /// Starts the grace period of a server that lost its store.
    pub fn set_grace_until(&mut self, until_ms: Option<u64>) {
        self.grace_until_ms = until_ms;
    }
}

/// Whether two tables of a feature give every server the same allocation
/// and have the same hard limit (in-use counts aside).
fn same_view(a: &DistributionTable, b: &DistributionTable) -> bool {
    a.hard_limit() == b.hard_limit()
        && a.free_pool() == b.free_pool()
        && a.rows()
            .map(|(s, r)| (s, r.allocation))
            .eq(b.rows().map(|(s, r)| (s, r.allocation)))
}

fn no_quorum(server_id: &str) -> Refusal {
    Refusal::new(
        ErrorCode::NoQuorum,
        format!(
            "server `{server_id}` cannot reach a majority of its pool and does not issue or renew \
             seats; try another server"
        ),
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use tessera_core::license::{HostBinding, Policy, UnsignedCode};
    use tessera_core::{CivilDate, Expiry, LicenseCode, VendorSecretKey};

    const DAY: &str = "2026-11-22";

    fn pool_and_key(seats: u32) -> (PoolFile, VendorSecretKey) {
        pool_of(seats, &["A"])
    }

    /// A pool of `servers` (ids) and one code of `seats` seats of `cad`.
    fn pool_of(seats: u32, servers: &[&str]) -> (PoolFile, VendorSecretKey) {
        let key = VendorSecretKey::from_seed("acme", [3; 32]).unwrap();
        let code = key
            .sign(UnsignedCode {
                id: "c1".into(),
                vendor: String::new(),
                feature: "cad".into(),
                version_min: Version::parse("1").unwrap(),
                version_max: Version::parse("2").unwrap(),
                seats,
                issued: CivilDate::parse("2026-01-01").unwrap(),
                expiry: Expiry::Permanent,
                hostid: HostBinding::Any,
                policy: Policy {
                    borrow_threshold_percent: 80,
                    heartbeat_interval_s: 1,
                    lease_s: 10,
                },
                temporary: None,
            })
            .unwrap();
        let servers: String = servers
            .iter()
            .enumerate()
            .map(|(n, id)| {
                format!(
                    "[[servers]]\nid = \"{id}\"\naddress = \"127.0.0.1:{}\"\n",
                    n + 1
                )
            })
            .collect();
        let text = format!(
            "pool_id = \"p\"\nsequence = 1\n{servers}{}",
            LicenseCode::write_file(&[code])
        );
        (PoolFile::parse(&text).unwrap(), key)
    }

    fn licenses_of(pool: &PoolFile, key: &VendorSecretKey) -> LicenseTable {
        LicenseTable::evaluate(
            &pool.codes,
            &[key.public()],
            "h",
            CivilDate::parse(DAY).unwrap(),
        )
    }

    fn control_of(pool: &PoolFile) -> ControlState {
        let mut control = ControlState::default();
        control.apply(&tessera_core::ControlCommand::InstallPoolFile {
            text: pool.to_toml().unwrap(),
        });
        control
    }

    /// A grant as the store keeps it.
    fn stored(client: &str, count: u32) -> StoredGrant {
        StoredGrant {
            feature: "cad".into(),
            count,
            client_id: client.into(),
            user: "u".into(),
            host: "h".into(),
            display: None,
            version: "1".into(),
            issued_unix_ms: 0,
        }
    }

    fn issuer_with(seats: u32, limits: Limits, restored: Vec<(SharedText, StoredGrant)>) -> Issuer {
        issuer_in(pool_and_key(seats), limits, restored)
    }

    /// Server A's issuer of `pool`, its quota held.
    fn issuer_in(
        (pool, key): (PoolFile, VendorSecretKey),
        limits: Limits,
        restored: Vec<(SharedText, StoredGrant)>,
    ) -> Issuer {
        let mut issuer = Issuer::new("A".into(), limits, 0, restored, 0);
        issuer.set_control(Arc::new(control_of(&pool)), licenses_of(&pool, &key));
        issuer.set_quota(u64::MAX);
        issuer
    }

    fn at(ms: u64) -> Now {
        Now { ms, unix_ms: 0 }
    }

    /// An issuer of `seats` seats with grants checked out by client `c` at 0.
    pub(crate) fn issuer_holding(seats: u32, grants: &[(&str, u32)]) -> Issuer {
        let mut issuer = issuer_with(seats, Limits::default(), vec![]);
        for (grant_id, count) in grants {
            let request = request("c", *count);
            issuer.checkout((*grant_id).into(), request, at(0)).unwrap();
        }
        issuer
    }

    /// A check-in is for the other servers to hear of (their copies of the
    /// grant are stale) and its seats cool until the leader has, only where
    /// there are other servers: in a pool of one, nothing waits and nobody
    /// is told (`crate::copies`, `crate::cooling`).
    #[test]
    fn only_a_pool_of_several_is_told_of_check_ins_and_cools_them() {
        for (servers, several) in [(&["A"][..], false), (&["A", "B"][..], true)] {
            let mut issuer = issuer_in(pool_of(4, servers), Limits::default(), vec![]);
            issuer
                .checkout("g1".into(), request("c", 1), at(0))
                .unwrap();
            let released = issuer.checkin("g1", "c").unwrap();
            assert_eq!(released.pool_of_several, several, "servers {servers:?}");
            assert_eq!(issuer.cooling.seats("cad"), u32::from(several));
            issuer
                .checkout("g2".into(), request("c", 1), at(0))
                .unwrap();
            let lapsed = issuer.expire(60_000);
            assert_eq!(lapsed.len(), 1);
            assert_eq!(lapsed[0].pool_of_several, several, "servers {servers:?}");
        }
    }

    pub(crate) fn request(client: &str, count: u32) -> SeatRequest {
        SeatRequest {
            client_id: client.into(),
            user: "u".into(),
            host: "h".into(),
            display: None,
            feature: "cad".into(),
            version: "1.5".into(),
            count,
            renewal: 0,
        }
    }

    fn code_of<T>(result: Result<T, Refusal>) -> ErrorCode {
        match result {
            Ok(_) => panic!("expected an error"),
            Err(err) => err.code,
        }
    }

    /// Control changes keep the seats in use without walking the key table
    /// when the allocation here still holds them; a feature whose seats here
    /// fall below them holds its newest grants aside, and counts them again
    /// once they fit.
    #[test]
    fn control_changes_carry_the_seats_in_use_over() {
        let (pool, key) = pool_and_key(5);
        let served = licenses_of(&pool, &key);
        let control = Arc::new(control_of(&pool));
        let mut issuer = Issuer::new("A".into(), Limits::default(), 0, vec![], 0);
        issuer.set_control(control.clone(), served.clone());
        issuer.set_quota(u64::MAX);
        issuer
            .checkout("g1".into(), request("c", 2), at(0))
            .unwrap();
        issuer
            .checkout("g2".into(), request("d", 2), at(1))
            .unwrap();
        issuer.set_control(control.clone(), served.clone());
        assert_eq!(issuer.usage("cad"), Some((5, 4)));
        issuer.check_invariants(true).unwrap();
        // The code is no longer served here (no trusted key): nothing is counted.
        let unserved =
            LicenseTable::evaluate(&pool.codes, &[], "h", CivilDate::parse(DAY).unwrap());
        issuer.reload_licenses(unserved);
        assert_eq!(issuer.in_use_counts().get("cad").copied().unwrap_or(0), 4);
        assert_eq!(issuer.available("cad"), 0);
        issuer.check_invariants(true).unwrap();
        // Served again: both grants count again, and a renewal goes through.
        issuer.set_control(control, served);
        assert_eq!(issuer.usage("cad"), Some((5, 4)));
        assert_eq!(issuer.available("cad"), 1);
        issuer
            .heartbeat("g2".into(), request("d", 2), at(2))
            .unwrap();
        issuer.check_invariants(true).unwrap();
    }

    #[test]
    fn checkout_to_the_limit_then_denied_then_checkin_frees() {
        let mut issuer = issuer_holding(3, &[("g1", 2), ("g2", 1)]);
        let denied = issuer.checkout("g3".into(), request("c", 1), at(0));
        assert_eq!(code_of(denied), ErrorCode::NoSeatsAvailable);
        assert_eq!(issuer.checkin("g1", "c").unwrap().seats, 2);
        let freed = issuer.checkout("g3".into(), request("c", 2), at(0));
        assert!(freed.is_ok(), "the seats checked in are free: {freed:?}");
        issuer.check_invariants(true).unwrap();
    }

    #[test]
    fn bad_requests_get_their_codes() {
        let mut issuer = issuer_with(3, Limits::default(), vec![]);
        type Edit = fn(&mut SeatRequest);
        let cases: Vec<(Edit, ErrorCode)> = vec![
            (|r| r.feature = "cam".into(), ErrorCode::UnknownFeature),
            (|r| r.version = "3.0".into(), ErrorCode::VersionNotLicensed),
            (|r| r.version = "x".into(), ErrorCode::InvalidField),
            (|r| r.count = 4, ErrorCode::CountAboveLimit),
        ];
        for (edit, code) in cases {
            let mut r = request("c", 1);
            edit(&mut r);
            assert_eq!(code_of(issuer.checkout("g".into(), r, at(0))), code);
        }
        assert_eq!(
            code_of(issuer.checkin("nope", "c")),
            ErrorCode::UnknownGrant
        );
        issuer
            .checkout("g1".into(), request("c", 1), at(0))
            .unwrap();
        assert_eq!(
            code_of(issuer.checkin("g1", "other")),
            ErrorCode::GrantMismatch
        );
        assert_eq!(
            code_of(issuer.heartbeat("g1".into(), request("other", 1), at(0))),
            ErrorCode::GrantMismatch
        );
        issuer.check_invariants(true).unwrap();
    }

    /// A heartbeat or check-in naming another client, feature or count
    /// than the grant's is refused without naming the grant's holder.
    #[test]
    fn mismatches_do_not_name_the_holder() {
        let mut issuer = issuer_with(3, Limits::default(), vec![]);
        let held = SeatRequest {
            user: "holder-user".into(),
            host: "holder-host".into(),
            ..request("holder-7f3a", 1)
        };
        issuer.checkout("g1".into(), held, at(0)).unwrap();
        let refusals = [
            issuer.checkin("g1", "attacker").unwrap_err(),
            issuer
                .heartbeat("g1".into(), request("attacker", 1), at(0))
                .unwrap_err(),
            issuer
                .heartbeat("g1".into(), request("holder-7f3a", 2), at(0))
                .unwrap_err(),
        ];
        for refusal in refusals {
            assert_eq!(refusal.code, ErrorCode::GrantMismatch);
            for secret in ["holder-7f3a", "holder-user", "holder-host"] {
                assert!(!refusal.message.contains(secret), "{}", refusal.message);
            }
        }
        assert_eq!(issuer.checkin("g1", "holder-7f3a").unwrap().seats, 1);
    }

    #[test]
    fn lapsed_grants_free_their_seats_and_heartbeats_extend_them() {
        let mut issuer = issuer_holding(2, &[("g1", 1), ("g2", 1)]);
        let renewed = issuer
            .heartbeat("g2".into(), request("c", 1), at(9_000))
            .unwrap();
        assert!(renewed.to_store.is_none() && renewed.origin == Origin::Checkout);
        assert!(issuer.expire(9_999).is_empty());
        let ids = |released: Vec<Released>| -> Vec<String> {
            released.into_iter().map(|r| r.grant_id.into()).collect()
        };
        assert_eq!(ids(issuer.expire(10_000)), vec!["g1".to_string()]);
        assert_eq!(issuer.table("cad").unwrap().row("A").unwrap().in_use, 1);
        assert_eq!(ids(issuer.expire(19_000)), vec!["g2".to_string()]);
        issuer.check_invariants(true).unwrap();
    }

    /// Grants lapsing in the same millisecond each keep their own place in
    /// the expiry queue: renewing one, even to that same millisecond, or
    /// checking one in moves or removes only that one.
    #[test]
    fn grants_lapsing_together_keep_their_own_places() {
        let mut issuer = issuer_holding(4, &[("g1", 1), ("g2", 1), ("g3", 1), ("g4", 1)]);
        issuer.check_invariants(true).unwrap();
        // Renewed at the time of checkout: the same expiry, a new place.
        issuer
            .heartbeat("g2".into(), request("c", 1), at(0))
            .unwrap();
        issuer
            .heartbeat("g3".into(), request("c", 1), at(4_000))
            .unwrap();
        issuer.checkin("g4", "c").unwrap();
        issuer.check_invariants(true).unwrap();
        let ids = |released: Vec<Released>| -> Vec<String> {
            let mut ids: Vec<String> = released.into_iter().map(|r| r.grant_id.into()).collect();
            ids.sort();
            ids
        };
        assert!(issuer.expire(9_999).is_empty());
        assert_eq!(ids(issuer.expire(10_000)), ["g1", "g2"]);
        issuer.check_invariants(true).unwrap();
        assert!(issuer.expire(13_999).is_empty());
        assert_eq!(ids(issuer.expire(14_000)), ["g3"]);
        issuer.check_invariants(true).unwrap();
    }

    #[test]
    fn unknown_heartbeat_converts_into_a_checkout_with_the_same_id() {
        let mut issuer = issuer_with(1, Limits::default(), vec![]);
        let issued = issuer
            .heartbeat("from-B".into(), request("c", 1), at(0))
            .unwrap();
        assert!(issued.origin == Origin::Conversion);
        assert_eq!(issued.grant_id, "from-B");
        assert!(issued.to_store.is_some());
        let full = issuer.heartbeat("other".into(), request("d", 1), at(0));
        assert_eq!(code_of(full), ErrorCode::NoSeatsAvailable);
    }

    /// A control change that only moves allocation keeps every grant on
    /// its side, in one step per feature; a restored grant that did not fit
    /// is counted once its server has room again.
    #[test]
    fn allocation_changes_keep_the_grants_counted() {
        let (pool, key) = pool_and_key(5);
        let text = pool
            .to_toml()
            .unwrap()
            .replace(
                "[[servers]]",
                "[distribution.cad]\nA = 2\nB = 0\n\n[[servers]]\nid = \"B\"\naddress = \"127.0.0.1:2\"\n\n[[servers]]",
            );
        let pool = PoolFile::parse(&text).expect("two servers");
        let licenses = || licenses_of(&pool, &key);
        let mut control = control_of(&pool);
        // Three grants come back from the store; A may issue two.
        let restored = ["r1", "r2", "r3"]
            .map(|c| (c.into(), stored(c, 1)))
            .to_vec();
        let mut issuer = Issuer::new("A".into(), Limits::default(), 0, restored, 0);
        issuer.set_control(Arc::new(control.clone()), licenses());
        issuer.set_quota(u64::MAX);
        assert_eq!(issuer.usage("cad"), Some((2, 3)), "one held aside");
        assert_eq!(issuer.available("cad"), 0);
        for seats in [1, 2] {
            control.apply(&tessera_core::ControlCommand::Borrow {
                feature: "cad".into(),
                recipient: "A".into(),
                source: tessera_core::BorrowSource::FreePool,
                seats: 1,
            });
            issuer.set_control(Arc::new(control.clone()), licenses());
            issuer.check_invariants(true).unwrap();
            assert_eq!(issuer.usage("cad"), Some((2 + seats, 3)));
            assert_eq!(
                issuer.available("cad"),
                seats - 1,
                "the held-aside grant counts first"
            );
        }
        issuer.checkout("g".into(), request("c", 1), at(0)).unwrap();
        assert_eq!(issuer.available("cad"), 0);
        issuer.check_invariants(true).unwrap();
    }

    /// Which heartbeats tell the pool that copies elsewhere are stale, and
    /// which stale copies a server drops.
    #[test]
    fn the_newest_copy_of_a_grant_stays_and_stale_ones_go() {
        let renewal = |n: u64| SeatRequest {
            renewal: n,
            ..request("c", 1)
        };
        let mut issuer = issuer_with(2, Limits::default(), vec![]);
        // A conversion at heartbeat 5 supersedes copies renewed before it.
        let converted = issuer.heartbeat("g".into(), renewal(5), at(0)).unwrap();
        assert_eq!(converted.supersedes_renewal, Some(5));
        // The next heartbeat, here: nothing went elsewhere.
        let next = issuer.heartbeat("g".into(), renewal(6), at(0)).unwrap();
        assert_eq!(next.supersedes_renewal, None);
        // Heartbeats 7 and 8 went to another server: 9 here supersedes it.
        let back = issuer.heartbeat("g".into(), renewal(9), at(0)).unwrap();
        assert_eq!(back.supersedes_renewal, Some(9));
        // A conversion elsewhere at 8 is older than this copy: it stays.
        assert_eq!(issuer.drop_superseded("g", 8), None);
        assert_eq!(issuer.drop_superseded("g", 9), None);
        // One at 10 is newer: this copy goes, and its seat is free.
        let dropped = issuer.drop_superseded("g", 10).expect("stale copy dropped");
        assert_eq!(dropped.seats, 1);
        assert_eq!(issuer.available("cad"), 2);
        issuer.check_invariants(true).unwrap();
        // A checkout counts no renewal: a check-in elsewhere drops it; a
        // client that does not count its heartbeats supersedes nothing.
        issuer.checkout("h".into(), request("d", 1), at(0)).unwrap();
        let uncounted = issuer
            .heartbeat("u".into(), request("e", 1), at(0))
            .unwrap();
        assert_eq!(uncounted.supersedes_renewal, None);
        assert!(issuer
            .drop_superseded("h", tessera_proto::SupersededGrant::CHECKED_IN)
            .is_some());
        assert_eq!(issuer.drop_superseded("unknown", 1), None);
        issuer.check_invariants(true).unwrap();
    }

    #[test]
    fn grace_accepts_only_renewals_and_no_quota_stops_everything() {
        let mut issuer = issuer_with(2, Limits::default(), vec![]);
        issuer.set_grace_until(Some(5_000));
        let fresh = issuer.checkout("g1".into(), request("c", 1), at(0));
        assert_eq!(code_of(fresh), ErrorCode::GracePeriod);
        issuer
            .heartbeat("held".into(), request("c", 1), at(0))
            .unwrap();
        issuer
            .checkout("g1".into(), request("c", 1), at(5_000))
            .unwrap();
        issuer.set_quota(6_000);
        assert_eq!(
            code_of(issuer.heartbeat("g1".into(), request("c", 1), at(6_000))),
            ErrorCode::NoQuorum
        );
    }

    #[test]
    fn restored_grants_count_and_the_excess_is_held_aside_until_it_lapses() {
        // Three seats held before the restart, but the limit is now two.
        let restored = vec![("a".into(), stored("c", 2)), ("b".into(), stored("d", 1))];
        let mut issuer = issuer_with(2, Limits::default(), restored);
        issuer.check_invariants(true).unwrap();
        let none_left = issuer.checkout("n".into(), request("e", 1), at(0));
        assert_eq!(code_of(none_left), ErrorCode::NoSeatsAvailable);
        let total_held: u32 = issuer.grants().map(|(_, g)| g.request.count).sum();
        assert_eq!(
            total_held, 3,
            "nothing restored is dropped before it lapses"
        );
        // Every restored grant gets a full hold from the restart (10 s here).
        assert!(issuer.expire(9_999).is_empty());
        assert_eq!(issuer.expire(10_000).len(), 2);
        issuer
            .checkout("n".into(), request("e", 2), at(10_000))
            .unwrap();
    }

    /// Seats a conversion waits to have handed over are its own: no other
    /// checkout takes them, the server does not count them spare, and the
    /// conversion of that very grant does take them.
    #[test]
    fn seats_expected_by_a_hand_over_are_kept_for_their_grant() {
        let mut issuer = issuer_with(3, Limits::default(), vec![]);
        issuer.checkout("a".into(), request("x", 1), at(0)).unwrap();
        issuer.expect_hand_over("g", "cad", 2);
        assert_eq!(issuer.available("cad"), 0);
        assert_eq!(issuer.in_use_counts()["cad"], 3, "reported as held");
        // ... but not as held by this server's clients: a pool re-formed
        // from a lost majority gives back only those (recovery.rs).
        let counts = issuer.in_use_counts();
        assert_eq!(issuer.clients_hold(&counts)["cad"], 1);
        let other = issuer.checkout("b".into(), request("y", 1), at(0));
        assert_eq!(code_of(other), ErrorCode::NoSeatsAvailable);
        // Another grant's conversion does not take them either.
        let stranger = issuer.heartbeat("h".into(), request("z", 1), at(0));
        assert_eq!(code_of(stranger), ErrorCode::NoSeatsAvailable);
        issuer
            .heartbeat("g".into(), request("w", 2), at(0))
            .unwrap();
        issuer.end_hand_over("g");
        assert_eq!(issuer.in_use_counts()["cad"], 3);
        let counts = issuer.in_use_counts();
        assert_eq!(
            issuer.clients_hold(&counts)["cad"],
            3,
            "the grant holds them now"
        );
        issuer.check_invariants(true).unwrap();
    }

    #[test]
    fn limits_are_enforced() {
        let limits = Limits {
            grants_max: 3,
            grants_per_client_max: 2,
            clients_max: 2,
            ..Limits::default()
        };
        let mut issuer = issuer_with(10, limits, vec![]);
        issuer.checkout("1".into(), request("a", 1), at(0)).unwrap();
        issuer.checkout("2".into(), request("a", 1), at(0)).unwrap();
        let per_client = issuer.checkout("3".into(), request("a", 1), at(0));
        assert_eq!(code_of(per_client), ErrorCode::TooManyGrants);
        issuer.checkout("3".into(), request("b", 1), at(0)).unwrap();
        let total = issuer.checkout("4".into(), request("b", 1), at(0));
        assert_eq!(code_of(total), ErrorCode::TooManyGrants);
        issuer.checkin("3", "b").unwrap();
        issuer
            .checkout("4".into(), request("c2", 1), at(0))
            .unwrap();
        issuer.checkin("1", "a").unwrap();
        let third_client = issuer.checkout("5".into(), request("d", 1), at(0));
        assert_eq!(code_of(third_client), ErrorCode::TooManyGrants);
    }
}
