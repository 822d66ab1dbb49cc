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

/// The runtime a server process runs on: tokio's, with `workers` worker
/// threads ([`ServerConfig::workers`]), whose workers tell the grant store's
/// writer when they run out of work ([`store::workers_idle`]), so that the
/// new grants read together share one sync.
pub fn runtime(workers: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let runtime = runtime_builder(workers).build()?;
    store::runtime_reports_idle();
    Ok(runtime)
}

fn runtime_builder(workers: usize) -> tokio::runtime::Builder {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder
        .worker_threads(workers)
        .on_thread_park(store::workers_idle)
        .enable_all();
    builder
}

#[cfg(test)]
mod tests {
    /// On [`super::runtime_builder`]: [`super::runtime`] would also mark
    /// the stores this test process opens later as woken by idle workers.
    #[test]
    fn the_runtime_has_the_workers_asked_for() {
        let _alone = crate::store::tests::idle_workers_alone();
        for workers in [1, 3] {
            let runtime = super::runtime_builder(workers).build().unwrap();
            assert_eq!(runtime.metrics().num_workers(), workers);
        }
    }
}
