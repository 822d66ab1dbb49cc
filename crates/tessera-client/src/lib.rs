//! Tessera's client SDK: check out seats of a licensed feature from a pool of
//! Tessera servers, keep them alive in the background, fail over between the
//! servers, and give them back when done.
//!
//! ```no_run
//! use tessera_client::{Client, ClientConfig, ClientError, SeatState, Trust, VendorPublicKey};
//!
//! # async fn run() -> Result<(), ClientError> {
//! // The vendor's public key, built into the program (`tessera vendor keygen` prints it).
//! let acme = VendorPublicKey::from_base64("acme", "tQ2nYq6e8Nk1M0oVYp9mV1s1X1f6Vf5yqYx0y7QGq9E=")
//!     .expect("a vendor key");
//! let mut config = ClientConfig::new(["10.0.0.1:7001", "10.0.0.2:7001"]);
//! config.trust = Trust::Vendor(vec![acme]);
//! let client = Client::new(config)?;
//! let seat = match client.checkout("cad", "2.1", 1).await {
//!     Ok(seat) => seat,
//!     Err(error @ ClientError::NoSeatsAvailable { .. }) => {
//!         eprintln!("{error}");
//!         return Err(error);
//!     }
//!     Err(error) => return Err(error),
//! };
//!
//! // Stop working if the seat is ever lost (every server refused before it expired).
//! let mut events = seat.subscribe();
//! tokio::spawn(async move {
//!     while events.changed().await.is_ok() {
//!         if let SeatState::Lost { reason } = &*events.borrow() {
//!             eprintln!("license lost: {reason}");
//!         }
//!     }
//! });
//!
//! // ... the program's work, checking `seat.is_valid()` where it matters ...
//!
//! seat.release().await?; // or just drop it: that checks in without waiting
//! # Ok(())
//! # }
//! ```
//!
//! A seat is valid until the send time of the request that last granted or
//! renewed it plus the grant's lease (DESIGN.md, "The safety property", point
//! 5). The guard renews every `heartbeat_interval_ms`; when the holding server
//! does not renew, it sends the heartbeat to the next servers of the grant's
//! priority list, which convert it into a checkout. The program notices nothing
//! unless every server refuses until the seat expires: then the guard publishes
//! [`SeatState::Lost`] and stops.
//!
//! Every request has a timeout ([`ClientConfig::request_timeout`]); answers are
//! size-bounded; the SDK never retries without a bound.

pub mod admin;
pub mod blocking;
mod client;
mod config;
mod error;
mod guard;
mod http;
pub mod pool_status;
mod temporary;
mod trust;

pub use admin::{Admin, AdminChange};
pub use client::Client;
pub use config::{
    BearerToken, ClientConfig, ClientTls, Protocol, WallClock, CA_FILE_ENV,
    CONNECT_TIMEOUT_DEFAULT, REQUEST_TIMEOUT_DEFAULT, SERVERS_MAX,
};
pub use error::ClientError;
pub use guard::{
    SeatGuard, SeatState, HEARTBEAT_INTERVAL_MS_MIN, LEASE_MS_MAX, RETRY_PAUSE_MS_MAX,
};
pub use temporary::{TemporaryLicense, TemporaryState};
pub use tessera_core::VendorPublicKey;
pub use tessera_proto::TemporaryToken;
pub use tessera_proto::{ErrorCode, Grant, HeartbeatRequest, Proof, StatusResponse};
/// The seam every request goes through: name [`transport::HttpTransport`] to
/// give [`Client::with_transport`] a transport of your own.
pub use tessera_transport as transport;
/// The clock of [`SeatGuard::valid_until`]: tokio's monotonic instant
/// (`into_std()` converts it).
pub use tokio::time::Instant;
pub use trust::Trust;
