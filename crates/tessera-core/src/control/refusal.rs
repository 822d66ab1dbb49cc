//! Why a control command or a pool file is refused by the control state.
//! A refused command changes nothing; its reason travels in
//! [`super::ControlOutcome::Refused`].

use crate::distribution::DistributionError;
use crate::pool_file::PoolFileError;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ControlRefusal {
    #[error(
        "ticket `{ticket}` holds temporary licenses of `{feature}` on {devices} devices, the \
         most its license allows; return one (closing the program on it does) or wait for one \
         to expire"
    )]
    TooManyDevices {
        ticket: String,
        feature: String,
        devices: u32,
    },
    #[error("ticket `{ticket}` holds a temporary license of `{feature}` on device `{device}` already; extend it")]
    AlreadyOnDevice {
        ticket: String,
        feature: String,
        device: String,
    },
    #[error(
        "server `{server}` holds {allocation} seats of `{feature}`, fewer than the {seats} asked"
    )]
    TooFewSeats {
        server: String,
        feature: String,
        allocation: u32,
        seats: u32,
    },
    #[error("no temporary license `{license_id}` of `{feature}` is out (returned or expired)")]
    NotOut { feature: String, license_id: String },
    #[error(
        "temporary license `{license_id}` was withdrawn: ticket `{ticket}` was activated on a \
         newer device since, so this device may not extend it"
    )]
    Withdrawn { license_id: String, ticket: String },
    #[error("temporary license `{license_id}` belongs to another device")]
    OtherDevice { license_id: String },
    #[error("{max} runs are revoked already, the most a pool records")]
    TooManyRevoked { max: usize },
    #[error("feature `{feature}` is not in the pool")]
    UnknownFeature { feature: String },
    #[error("server `{server}` is not in the pool")]
    UnknownServer { server: String },
    #[error("server `{donor}` cannot lend to `{recipient}`")]
    CannotLend { donor: String, recipient: String },
    #[error("no seats of `{feature}` to take from {source_name}")]
    NothingToTake {
        feature: String,
        source_name: String,
    },
    #[error("server `{donor}` cannot be asked to lend to `{recipient}`")]
    CannotAsk { donor: String, recipient: String },
    #[error("a request asks for at least one seat")]
    EmptyRequest,
    #[error("request {request_id} is not pending")]
    NotPending { request_id: u64 },
    #[error(
        "the allocation of `{server}` changed from {allocation_before} to {allocation}; answer \
         again"
    )]
    AllocationChanged {
        server: String,
        allocation_before: u32,
        allocation: u32,
    },
    #[error("`{server}` may have issued more seats since it answered; answer again")]
    IssuedSinceAnswer { server: String },
    #[error("request {request_id} asked for {asked} seats; {seats} cannot be given")]
    CannotGive {
        request_id: u64,
        asked: u32,
        seats: u32,
    },
    #[error("server `{server}` has no target for `{feature}`")]
    NoTarget { server: String, feature: String },
    #[error(
        "the allocation or target of `{server}` changed, or it may have issued more seats since \
         it answered; drain again"
    )]
    DrainOutdated { server: String },
    #[error(
        "server `{server}` holds {allocation} against a target of {target}; {seats} cannot be \
         drained"
    )]
    CannotDrain {
        server: String,
        allocation: u32,
        target: u32,
        seats: u32,
    },
    #[error("{0}")]
    PoolFile(String),
    #[error("the pool file is for pool `{file_pool}`, but this is pool `{pool}`")]
    WrongPool { file_pool: String, pool: String },
    #[error("the pool file has sequence {sequence}, not above the installed sequence {installed}")]
    NotNewer { sequence: u64, installed: u64 },
    #[error("a pool is re-formed from a lost majority only as its first command")]
    RecoverNotFirst,
    #[error("feature `{feature}` has more than {} seats", u32::MAX)]
    TooManySeats { feature: String },
    #[error(transparent)]
    Distribution(#[from] DistributionError),
    #[error(
        "the new codes of feature `{feature}` have {removed} fewer seats, but its free pool \
         holds only {free_pool}; set a distribution that leaves them free first"
    )]
    FewerSeats {
        feature: String,
        removed: u32,
        free_pool: u32,
    },
    #[error(
        "the distribution of feature `{feature}` names server `{server}`, which is not in the pool"
    )]
    DistributionNamesUnknown { feature: String, server: String },
    #[error(
        "the distribution of feature `{feature}` asks for {wanted} seats, but only {available} \
         are not held by servers it leaves alone or parked"
    )]
    DistributionTooLarge {
        feature: String,
        wanted: u64,
        available: u64,
    },
    /// The pool's `max` rules forbid the claim.
    #[error("{0}")]
    MaxReached(String),
    /// The free seats are kept by the pool's `reserve` rules.
    #[error("{0}")]
    Reserved(String),
    #[error("the queue ticket belongs to another program")]
    NotYourTicket,
    #[error("{max} programs wait for seats of `{feature}` already, the most a queue holds")]
    QueueFull { feature: String, max: usize },
    /// A command that would break a feature's seat sums (a bug), or a
    /// snapshot that breaks them.
    #[error("{0}")]
    Broken(String),
}

impl From<PoolFileError> for ControlRefusal {
    fn from(err: PoolFileError) -> ControlRefusal {
        ControlRefusal::PoolFile(err.to_string())
    }
}
