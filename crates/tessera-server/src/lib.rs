//! The Tessera license server as a library: [`run`] a server from a
//! [`ServerConfig`] until a shutdown future resolves.
//!
//! Layout: [`api`] parses requests and maps answers; [`service`] owns a
//! client's request from start to answer; [`issuer`] decides (pure, under
//! one mutex); [`store`] makes new grants durable; [`pool`] is the Raft
//! control plane and [`balance`] the leader's side of borrowing; [`seams`]
//! holds every source of nondeterminism. See ARCHITECTURE.md.

pub mod answer;
pub mod api;
mod app;
mod background;
pub mod balance;
mod claims;
pub mod clock;
pub mod clock_mark;
pub mod config;
pub mod cooling;
pub mod copies;
pub mod grace;
pub mod hand_over;
pub mod hostid;
pub mod issuer;
pub mod listener;
pub mod master;
pub mod pool;
mod quota;
pub mod refusal;
pub mod reload;
mod report_log;
pub mod seams;
pub mod service;
mod start;
mod status;
pub mod store;
pub mod vid;

pub use crate::app::App;
pub use crate::config::{ServerConfig, StoreSync};
pub use crate::seams::Seams;
pub use crate::start::{run, start, start_with, Running, StartError};
