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

mod allocation;
mod commands;
mod refusal;
mod state;
#[cfg(test)]
mod tests;

pub use allocation::{FeatureAllocation, MoveCounts, ReleaseRequest, TemporaryLicense, Waiter};
pub use commands::{BorrowSource, ControlCommand, ControlOutcome, LOST_MAJORITY};
pub use refusal::ControlRefusal;
pub use state::WAITERS_MAX;
pub use state::{ControlState, REVOKED_RUNS_MAX};
