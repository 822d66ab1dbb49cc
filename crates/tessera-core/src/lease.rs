//! Lease arithmetic: how long a server keeps a client's seats, how long its
//! quota lets it issue, how long the leader waits before it gives a silent
//! server's allocation to others, and how long a server that lost its store
//! waits before it issues new seats. ARCHITECTURE.md ("Why no seat is issued
//! twice") argues these lengths safe; the property tests below state the
//! relations that argument relies on.
//!
//! All lengths are milliseconds on one clock; the *drift bound* `d`
//! (`clock_drift_percent`) means the rates of any two clocks of a pool and
//! its clients differ by a factor of at most `1 + d`. Stretching a length by
//! the drift bound turns "at most `x` on some clock" into "at most the
//! stretched length on this one".

/// `duration_ms` stretched by the drift bound: `x + x·d/100`, rounded down.
/// Exact for whole seconds and whole percents, which is what leases are.
pub fn stretched_ms(duration_ms: u64, clock_drift_percent: u32) -> u64 {
    duration_ms.saturating_add(duration_ms.saturating_mul(u64::from(clock_drift_percent)) / 100)
}

/// How long a server keeps a grant of a client lease of `lease_ms` (a
/// client measures its lease on its own clock from its send time, the
/// server from its later receipt, on its own clock).
pub fn hold_ms(lease_ms: u64, clock_drift_percent: u32) -> u64 {
    stretched_ms(lease_ms, clock_drift_percent)
}

/// The timing settings the pool's leases are made of (`[timing]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseTiming {
    /// `Q`: how long an acknowledged report lets a server issue, from its send time.
    pub quota_lease_ms: u64,
    /// How often a server reports its in-use counts to the leader.
    pub quota_report_interval_ms: u64,
    /// `d`, in percent.
    pub clock_drift_percent: u32,
}

impl LeaseTiming {
    /// Until when (on the server's monotonic clock) an acknowledged report
    /// sent at `report_sent_ms` lets the server issue and renew: its *send*
    /// time plus the quota lease. Measured from the send, not from the
    /// acknowledgement, so the leader's view of the quota (it heard the
    /// report after it was sent) never ends before the server's.
    pub fn quota_valid_until_ms(&self, report_sent_ms: u64) -> u64 {
        report_sent_ms.saturating_add(self.quota_lease_ms)
    }

    /// `W`: how long (on the leader's clock) a server must have been silent
    /// before the leader may give its allocation to others:
    /// `(Q(1+d) + hold)(1+d) + report interval`, where `longest_hold_ms` is
    /// the longest client lease already stretched by the drift bound
    /// ([`hold_ms`]). By then the silent server's quota has ended, so it
    /// issues nothing more, and every grant it made has lapsed by its
    /// clients' clocks.
    pub fn reassign_after_ms(&self, longest_hold_ms: u64) -> u64 {
        let drift = self.clock_drift_percent;
        let base = stretched_ms(self.quota_lease_ms, drift).saturating_add(longest_hold_ms);
        stretched_ms(base, drift).saturating_add(self.quota_report_interval_ms)
    }

    /// How long (on the leader's clock) a server must have been silent
    /// before its quota has surely ended: `W` without the hold, for a seat
    /// handed over with its grant, whose client still holds it.
    pub fn quota_over_after_ms(&self) -> u64 {
        self.reassign_after_ms(0)
    }
}

/// How long a server that started without its grant store waits before it
/// issues new seats (accepting only renewals meanwhile): the configured
/// `grace_ms`, or else one longest hold, by which time every grant the lost
/// store held has lapsed by its clients' clocks.
pub fn grace_ms(configured_grace_ms: Option<u64>, longest_hold_ms: u64) -> u64 {
    configured_grace_ms.unwrap_or(longest_hold_ms)
}

/// The end of the grace period of a server started at `started_ms` (its
/// monotonic clock): see [`grace_ms`].
pub fn grace_until_ms(
    started_ms: u64,
    configured_grace_ms: Option<u64>,
    longest_hold_ms: u64,
) -> u64 {
    started_ms.saturating_add(grace_ms(configured_grace_ms, longest_hold_ms))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::license::{LEASE_S_MAX, LEASE_S_MIN};
    use proptest::prelude::*;

    /// The defaults of ARCHITECTURE.md's timing table, and the default code lease.
    #[test]
    fn the_defaults_give_the_documented_waits() {
        let timing = LeaseTiming {
            quota_lease_ms: 2_500,
            quota_report_interval_ms: 300,
            clock_drift_percent: 1,
        };
        let hold = hold_ms(30_000, 1);
        assert_eq!(hold, 30_300);
        assert_eq!(timing.quota_valid_until_ms(10_000), 12_500);
        // (2500 + 25 + 30300) * 1.01 + 300, rounded down.
        assert_eq!(timing.reassign_after_ms(hold), 32_825 + 328 + 300);
        assert_eq!(grace_ms(None, hold), hold);
        assert_eq!(grace_ms(Some(5), hold), 5);
        assert_eq!(grace_until_ms(1_000, None, hold), 31_300);
    }

    /// A clock's rate, in thousandths of the slowest clock's: the drift bound
    /// lets every clock run at 1000 to 1000 + 10·d of them.
    fn rate(clock_drift_percent: u32) -> impl Strategy<Value = u64> {
        1000u64..=1000 + 10 * u64::from(clock_drift_percent)
    }

    fn timing() -> impl Strategy<Value = LeaseTiming> {
        (100u64..20_000, 10u64..2_000, 0u32..=10).prop_map(
            |(quota_lease_ms, quota_report_interval_ms, clock_drift_percent)| LeaseTiming {
                quota_lease_ms,
                quota_report_interval_ms,
                clock_drift_percent,
            },
        )
    }

    fn lease_ms() -> impl Strategy<Value = u64> {
        (u64::from(LEASE_S_MIN)..=u64::from(LEASE_S_MAX)).prop_map(|s| s * 1000)
    }

    proptest! {
        /// Timeline 1 of the safety argument, in true time (the slowest
        /// clock's). The leader last hears the silent server at 0; the
        /// report was sent no later. The server issues until `Q` on its own
        /// clock after that send; a seat it issues or renews at the last
        /// moment is believed by its client for `L` on the client's clock.
        /// The leader's wait `W`, on the leader's clock, outlasts both, for
        /// every rate in the drift band.
        #[test]
        fn the_wait_for_a_silent_server_outlasts_its_quota_and_its_grants(
            timing in timing(),
            lease_ms in lease_ms(),
            rates in (rate(10), rate(10), rate(10)),
        ) {
            let band = 1000 + 10 * u64::from(timing.clock_drift_percent);
            let (server, client, leader) = (rates.0.min(band), rates.1.min(band), rates.2.min(band));
            let wait = timing.reassign_after_ms(hold_ms(lease_ms, timing.clock_drift_percent));
            // True durations are clock durations · 1000 / rate; compare
            // wait/leader ≥ Q/server + L/client without division.
            let wait_true = u128::from(wait) * u128::from(server) * u128::from(client);
            let believed_true = (u128::from(timing.quota_lease_ms) * u128::from(client)
                + u128::from(lease_ms) * u128::from(server))
                * u128::from(leader);
            prop_assert!(wait_true >= believed_true, "W = {} ms", wait);
        }

        /// The wait before a hand-over outlasts the silent server's quota,
        /// in true time, for every rate in the drift band: the leader last
        /// hears it at 0, the report was sent no later, and the server
        /// issues until `Q` on its own clock after that send.
        #[test]
        fn the_wait_before_a_hand_over_outlasts_the_quota(
            timing in timing(),
            rates in (rate(10), rate(10)),
        ) {
            let band = 1000 + 10 * u64::from(timing.clock_drift_percent);
            let (server, leader) = (rates.0.min(band), rates.1.min(band));
            let wait = timing.quota_over_after_ms();
            prop_assert!(
                u128::from(wait) * u128::from(server)
                    > u128::from(timing.quota_lease_ms) * u128::from(leader),
                "wait = {} ms", wait
            );
        }

        /// W exceeds the quota lease plus its drift margin, the longest hold,
        /// and a report interval (a report lost on the way is not silence).
        #[test]
        fn the_wait_exceeds_each_lease_it_covers(timing in timing(), lease_ms in lease_ms()) {
            let d = timing.clock_drift_percent;
            let hold = hold_ms(lease_ms, d);
            let wait = timing.reassign_after_ms(hold);
            prop_assert!(wait > stretched_ms(timing.quota_lease_ms, d));
            prop_assert!(wait >= stretched_ms(timing.quota_lease_ms, d) + hold + timing.quota_report_interval_ms);
            prop_assert!(wait > timing.quota_lease_ms + lease_ms);
            // A longer lease never shortens the wait.
            prop_assert!(timing.reassign_after_ms(hold + 1) >= wait);
        }

        /// A server holds a grant at least as long as its client believes in
        /// it: the client's lease, on the slowest clock the band allows,
        /// is within the server's hold on the fastest.
        #[test]
        fn a_hold_outlasts_the_clients_lease(lease_ms in lease_ms(), d in 0u32..=10, rates in (rate(10), rate(10))) {
            let band = 1000 + 10 * u64::from(d);
            let (server, client) = (rates.0.min(band), rates.1.min(band));
            let hold = hold_ms(lease_ms, d);
            prop_assert!(hold >= lease_ms);
            prop_assert!(u128::from(hold) * u128::from(client) >= u128::from(lease_ms) * u128::from(server));
        }

        /// The default grace period covers the longest lease any code of
        /// the lost store could have granted, by its clients' clocks; a
        /// configured one is taken as it is.
        #[test]
        fn the_default_grace_covers_every_lost_grant(
            leases in proptest::collection::vec(lease_ms(), 1..10),
            d in 0u32..=10,
            started_ms in 0u64..1 << 40,
            configured in 0u64..100_000,
            rates in (rate(10), rate(10)),
        ) {
            let band = 1000 + 10 * u64::from(d);
            let (server, client) = (rates.0.min(band), rates.1.min(band));
            let longest_hold = leases.iter().map(|&l| hold_ms(l, d)).max().unwrap();
            let until = grace_until_ms(started_ms, None, longest_hold);
            for &lease in &leases {
                // The lost grant was last renewed before the start; the
                // client believes it for `lease` on its clock after that.
                let grace_true = u128::from(until - started_ms) * u128::from(client);
                prop_assert!(grace_true >= u128::from(lease) * u128::from(server));
            }
            prop_assert_eq!(grace_until_ms(started_ms, Some(configured), longest_hold), started_ms + configured);
        }

        /// A quota runs exactly `Q` from the report's send time, so a later
        /// report never shortens it.
        #[test]
        fn a_quota_runs_from_the_send_time(timing in timing(), sent_ms in 0u64..1 << 40, later_ms in 0u64..100_000) {
            let until = timing.quota_valid_until_ms(sent_ms);
            prop_assert_eq!(until - sent_ms, timing.quota_lease_ms);
            prop_assert!(timing.quota_valid_until_ms(sent_ms + later_ms) >= until);
        }
    }
}
