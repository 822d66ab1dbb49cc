//! Tessera's pure domain: license codes and their canonical signed form, the
//! pool file, the license and distribution tables, and lease arithmetic.
//!
//! Nothing here does I/O or reads a clock: time comes in as a value
//! ([`CivilDate`], milliseconds), files come in as strings. Every function
//! that can fail does so only on bad input, and says which in its error type.

pub mod answer;
pub mod borrow_plan;
pub mod control;
pub mod date;
pub mod distribution;
pub mod grant_proof;
pub mod lease;
pub mod license;
pub mod license_table;
pub mod master;
pub mod merkle;
pub mod names;
pub mod policy;
pub mod pool_change;
pub mod pool_file;
pub mod report;
pub mod temporary;
pub mod text;
pub mod unsigned;
pub mod version;

pub use control::{
    BorrowSource, ControlCommand, ControlOutcome, ControlState, FeatureAllocation, MoveCounts,
    ReleaseRequest,
};
pub use date::{CivilDate, Expiry};
pub use distribution::{DistributionError, DistributionTable, Row, Shortfall};
pub use grant_proof::{GrantClaim, GrantProof, PoolKey, PoolKeyError, ProofRefused};
pub use lease::LeaseTiming;
pub use license::{
    HostBinding, LicenseCode, LicenseError, Policy, VendorKeyId, VendorPublicKey, VendorSecretKey,
};
pub use license_table::{CodeVerdict, FeatureLicense, Identity, LicenseTable, NotServedReason};
pub use pool_file::{
    credential_sha256, AdminEntry, AdminRole, BorrowPolicy, PoolFile, PoolFileError, ServerEntry,
};
pub use text::SharedText;
pub use unsigned::{parse_unsigned_file, UnsignedError, UnsignedText};
pub use version::Version;

/// Most servers a pool may have.
pub const POOL_SERVERS_MAX: usize = 11;
/// Most license codes one pool file may hold.
pub const LICENSE_CODES_MAX: usize = 10_000;
/// Most distinct features one pool file may license.
pub const FEATURES_MAX: usize = 4_096;
/// Largest pool file accepted, in bytes.
pub const POOL_FILE_BYTES_MAX: usize = 16 * 1024 * 1024;
