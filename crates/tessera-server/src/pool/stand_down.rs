//! Standing down from elections while another server's log is longer.
//!
//! Elections are staggered by rank, so the first server in priority order
//! usually campaigns first. If that server's log is behind (it was cut off
//! while the others committed), every peer with a longer log refuses it,
//! and openraft's refusal does not move the refusing peer's term on. The
//! server that could win then campaigns in the same term, and meets the
//! first server's own vote for itself, which openraft orders above its own
//! in that term (same term, higher node id): it gives up. The first server
//! times out first again in the next term, and the pool can stay without a
//! leader for as long as this lasts (soak seed 1000639, seven servers, no
//! leader for the 20 s after every fault healed).
//!
//! A server whose vote request was refused by a peer whose log is longer
//! than its own therefore stops campaigning for two of the pool's longest
//! election timeouts, long enough for a server with the longer log to
//! time out and win, then campaigns again as usual. It still votes and
//! follows meanwhile. Elections only bear on liveness; no vote or entry
//! changes, so safety is untouched.

use std::sync::Arc;
use std::time::Duration;

use super::Pool;

impl Pool {
    /// How long a server whose log is behind stops campaigning.
    pub(crate) fn stand_down_ms(&self) -> u64 {
        let timing = &self.timing;
        let servers = self.bootstrap.servers.len().max(1) as u64;
        let longest_timeout = timing.election_timeout_ms
            + (servers - 1) * timing.election_timeout_step_ms
            + timing.election_jitter_ms;
        2 * longest_timeout
    }

    /// Runs for the server's life: stands down whenever the network says a
    /// peer refused this server's vote request for a longer log.
    pub async fn stand_down_when_behind(self: Arc<Self>) {
        let stand_down = Duration::from_millis(self.stand_down_ms());
        loop {
            self.behind.notified().await;
            if self.raft.metrics().borrow().current_leader == Some(self.node_id) {
                continue;
            }
            tracing::info!(
                "server `{}` stops campaigning for {} ms: a peer refused its vote request because \
                 the peer's pool log is longer",
                self.server_id,
                stand_down.as_millis()
            );
            self.raft.runtime_config().elect(false);
            tokio::time::sleep(stand_down).await;
            self.raft.runtime_config().elect(true);
        }
    }
}
