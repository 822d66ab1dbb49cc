//! The commands of the replicated log and what applying one did.

use serde::{Deserialize, Serialize};

use super::Waiter;
use crate::policy::Claim;

/// Where a borrow takes its seats from, as the leader judged it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BorrowSource {
    FreePool,
    /// A server of the pool that has been silent long enough for every grant
    /// it issued to have lapsed.
    DownServer(String),
    /// The parked allocation of a removed server, once its grants lapsed.
    Parked(String),
    /// Exactly the seats of one grant of a server whose quota has ended,
    /// moved with that grant to the server its client failed over to (seed
    /// 001, FIG. 10): the seats stay held by the same client, so nothing is
    /// added to what is held. All the grant's seats or none.
    HandOver {
        server: String,
        grant_id: String,
    },
}

/// The key under which a pool re-formed from a lost majority parks every
/// seat at first (`ControlCommand::RecoverPool`). Not a valid server id, so
/// no server can be named so.
pub const LOST_MAJORITY: &str = "(lost majority)";

/// A command of the replicated log. Commands arrive from peers, so an
/// unknown field is refused rather than ignored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
    /// A master's administrator revoked run `instance` of a production
    /// server (seed 003): no master of the pool renews its certificates.
    RevokeRun { instance: String },
    /// A temporary license (seed 004): `seats` of `from`'s allocation (held
    /// back there from new checkouts since it asked) become license
    /// `license_id` of `ticket` on `device`. Refused when the ticket holds
    /// licenses on `devices_max` other devices already, or on this device.
    Activate {
        feature: String,
        license_id: String,
        ticket: String,
        device: String,
        seats: u32,
        from: String,
        expires_unix_ms: i64,
        devices_max: u32,
        /// The allocation taken from `from` for those seats (at least
        /// `seats`; more where `from` serves part of the feature's codes).
        #[serde(default)]
        allocation: u32,
    },
    /// Extends license `license_id` to `expires_unix_ms`: only from its own
    /// device, and only while it is its ticket's newest.
    Extend {
        feature: String,
        license_id: String,
        device: String,
        expires_unix_ms: i64,
    },
    /// The license's seats go back to the free pool: returned by its
    /// device, or expired by the leader's clock.
    Return {
        feature: String,
        license_id: String,
        device: String,
    },
    Expire {
        feature: String,
        license_ids: Vec<String>,
    },
    /// Records grant `grant_id` of a feature with `reserve` or `max` rules
    /// before its server issues it; refused when the rules forbid it. A
    /// grant claimed already moves to the claim's server (a fail-over
    /// conversion). `force`: recorded whatever the rules say (seats a
    /// program held already, found unrecorded). A feature without such
    /// rules records nothing.
    Claim {
        feature: String,
        grant_id: String,
        claim: Claim,
        #[serde(default)]
        force: bool,
    },
    /// Forgets the claims of `grant_ids` still held by `server` (checked
    /// in, lapsed, or never issued).
    Unclaim {
        feature: String,
        server: String,
        grant_ids: Vec<String>,
    },
    /// Puts a program at the back of the feature's queue, or, if its ticket
    /// is there already (same program), keeps its place until the new
    /// `until_unix_ms`.
    Wait { feature: String, waiter: Waiter },
    /// Takes `tickets` out of the queue: served, or their time ran out.
    LeaveQueue {
        feature: String,
        tickets: Vec<String>,
    },
}

/// What applying a command did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlOutcome {
    Installed {
        sequence: u64,
    },
    Moved {
        seats: u32,
    },
    Requested {
        request_id: u64,
    },
    Cancelled,
    /// `newly`: the run was not revoked before.
    Revoked {
        newly: bool,
    },
    /// A temporary license activated or extended; `serial` its activation's.
    Temporary {
        serial: u64,
    },
    /// Grants claimed, or forgotten.
    Claims {
        count: u32,
    },
    /// A waiter's place in the queue (1: first), or for `LeaveQueue` how
    /// many left.
    Queue {
        position: u32,
    },
    Refused {
        reason: String,
    },
    /// Refused by the policy's rules: its `reserve` rules (`reserve`) or a
    /// `max`.
    Limited {
        reserve: bool,
        reason: String,
    },
}
