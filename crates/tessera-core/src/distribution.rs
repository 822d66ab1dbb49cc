//! The distribution table of one feature: hard limit, free pool, and per
//! server allocation and in-use count (seed 001, FIG. 4-11).
//!
//! The pool's one model of a feature's allocation is the committed
//! [`crate::FeatureAllocation`]; a table is a view of it: the initial split
//! of a pool file ([`DistributionTable::initial`], which also checks a
//! distribution), and on a server, each server's allocation capped to the
//! seats served there, with that server's own seats in use taken and given
//! back as its grants come and go. Allocations move only through control
//! commands, never in a table.
//!
//! Invariants, checked after every change in debug builds and by
//! [`DistributionTable::check_invariants`] in tests and the simulator:
//!
//! * the allocations plus the free pool equal the hard limit;
//! * no server has more seats in use than its allocation.
//!
//! Every method either applies its whole change or returns an error and
//! changes nothing.

use std::collections::BTreeMap;

/// One server's row.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Row {
    /// Seats this server may issue.
    pub allocation: u32,
    /// Seats held under its grants.
    pub in_use: u32,
}

impl Row {
    pub fn available(self) -> u32 {
        self.allocation - self.in_use
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DistributionTable {
    hard_limit: u32,
    free_pool: u32,
    /// In leader-priority order.
    rows: Vec<(String, Row)>,
}

/// A request that the server's available seats cannot meet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{requested} seats requested, {available} available")]
pub struct Shortfall {
    pub requested: u32,
    pub available: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DistributionError {
    #[error(
        "the distribution of feature `{feature}` gives {distributed} seats but its hard limit is {hard_limit}"
    )]
    AboveHardLimit {
        feature: String,
        distributed: u64,
        hard_limit: u32,
    },
    #[error(
        "the distribution of feature `{feature}` names server `{server}`, which is not in the pool"
    )]
    UnknownServer { feature: String, server: String },
    #[error("server `{server}` is not in the distribution table")]
    NoSuchServer { server: String },
    #[error("server `{server}` has {in_use} seats in use; it cannot return seats it has issued")]
    SeatsInUse { server: String, in_use: u32 },
    #[error("{0}")]
    Shortfall(#[from] Shortfall),
    #[error("server `{server}` would go below zero seats in use")]
    Underflow { server: String },
}

impl DistributionTable {
    /// The initial table of seed 001: `requested` seats per server if given,
    /// the rest in the free pool; otherwise an even split with the remainder
    /// in the free pool.
    pub fn initial(
        feature: &str,
        hard_limit: u32,
        servers: &[String],
        requested: Option<&BTreeMap<String, u32>>,
    ) -> Result<DistributionTable, DistributionError> {
        assert!(!servers.is_empty(), "a pool has at least one server");
        let rows: Vec<(String, Row)> = match requested {
            Some(requested) => {
                if let Some(unknown) = requested.keys().find(|name| !servers.contains(name)) {
                    return Err(DistributionError::UnknownServer {
                        feature: feature.to_string(),
                        server: unknown.clone(),
                    });
                }
                let distributed: u64 = requested.values().map(|&n| u64::from(n)).sum();
                if distributed > u64::from(hard_limit) {
                    return Err(DistributionError::AboveHardLimit {
                        feature: feature.to_string(),
                        distributed,
                        hard_limit,
                    });
                }
                servers
                    .iter()
                    .map(|server| {
                        let allocation = requested.get(server).copied().unwrap_or(0);
                        (
                            server.clone(),
                            Row {
                                allocation,
                                in_use: 0,
                            },
                        )
                    })
                    .collect()
            }
            None => {
                let each = hard_limit / servers.len() as u32;
                servers
                    .iter()
                    .map(|server| {
                        (
                            server.clone(),
                            Row {
                                allocation: each,
                                in_use: 0,
                            },
                        )
                    })
                    .collect()
            }
        };
        let distributed: u32 = rows.iter().map(|(_, row)| row.allocation).sum();
        let table = DistributionTable {
            hard_limit,
            free_pool: hard_limit - distributed,
            rows,
        };
        table.debug_check();
        Ok(table)
    }

    pub fn hard_limit(&self) -> u32 {
        self.hard_limit
    }

    pub fn free_pool(&self) -> u32 {
        self.free_pool
    }

    pub fn row(&self, server: &str) -> Option<Row> {
        self.rows
            .iter()
            .find(|(name, _)| name == server)
            .map(|(_, row)| *row)
    }

    /// Rows in leader-priority order.
    pub fn rows(&self) -> impl Iterator<Item = (&str, Row)> {
        self.rows.iter().map(|(name, row)| (name.as_str(), *row))
    }

    /// Issues `count` seats from `server`'s allocation, or changes nothing.
    pub fn take(&mut self, server: &str, count: u32) -> Result<(), DistributionError> {
        let row = self.row_mut(server)?;
        if row.available() < count {
            return Err(Shortfall {
                requested: count,
                available: row.available(),
            }
            .into());
        }
        row.in_use += count;
        self.debug_check();
        Ok(())
    }

    /// Returns `count` seats issued by `server`.
    pub fn give_back(&mut self, server: &str, count: u32) -> Result<(), DistributionError> {
        let row = self.row_mut(server)?;
        if row.in_use < count {
            return Err(DistributionError::Underflow {
                server: server.to_string(),
            });
        }
        row.in_use -= count;
        self.debug_check();
        Ok(())
    }

    /// Checks both invariants; returns a sentence naming the broken one.
    pub fn check_invariants(&self) -> Result<(), String> {
        let allocated: u64 = self.rows.iter().map(|(_, r)| u64::from(r.allocation)).sum();
        if allocated + u64::from(self.free_pool) != u64::from(self.hard_limit) {
            return Err(format!(
                "allocations {allocated} + free pool {} != hard limit {}",
                self.free_pool, self.hard_limit
            ));
        }
        if let Some((name, row)) = self.rows.iter().find(|(_, r)| r.in_use > r.allocation) {
            return Err(format!(
                "server `{name}` has {} seats in use, above its allocation {}",
                row.in_use, row.allocation
            ));
        }
        Ok(())
    }

    fn row_mut(&mut self, server: &str) -> Result<&mut Row, DistributionError> {
        self.rows
            .iter_mut()
            .find(|(name, _)| name == server)
            .map(|(_, row)| row)
            .ok_or_else(|| DistributionError::NoSuchServer {
                server: server.to_string(),
            })
    }

    fn debug_check(&self) {
        if cfg!(debug_assertions) {
            if let Err(broken) = self.check_invariants() {
                panic!("distribution table invariant broken: {broken}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn servers(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn dist(pairs: &[(&str, u32)]) -> BTreeMap<String, u32> {
        pairs.iter().map(|(s, n)| (s.to_string(), *n)).collect()
    }

    fn allocations(table: &DistributionTable) -> Vec<u32> {
        table.rows().map(|(_, row)| row.allocation).collect()
    }

    #[test]
    fn initial_distributions_of_seed_001() {
        let abc = servers(&["A", "B", "C"]);
        // FIG. 5: A:40 B:30 C:30 over 100.
        let t = DistributionTable::initial(
            "app",
            100,
            &abc,
            Some(&dist(&[("A", 40), ("B", 30), ("C", 30)])),
        )
        .unwrap();
        assert_eq!((allocations(&t), t.free_pool()), (vec![40, 30, 30], 0));
        // No distribution: 33 each, one in the free pool.
        let t = DistributionTable::initial("app", 100, &abc, None).unwrap();
        assert_eq!((allocations(&t), t.free_pool()), (vec![33, 33, 33], 1));
        // Below the hard limit: the rest to the free pool; unnamed servers get 0.
        let t = DistributionTable::initial("app", 100, &abc, Some(&dist(&[("A", 50)]))).unwrap();
        assert_eq!((allocations(&t), t.free_pool()), (vec![50, 0, 0], 50));
        // Above: an error naming the feature and the numbers.
        let err =
            DistributionTable::initial("app", 100, &abc, Some(&dist(&[("A", 50), ("B", 51)])))
                .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the distribution of feature `app` gives 101 seats but its hard limit is 100"
        );
        let err =
            DistributionTable::initial("app", 100, &abc, Some(&dist(&[("D", 1)]))).unwrap_err();
        assert!(err.to_string().contains("server `D`"));
    }

    #[test]
    fn take_and_give_back_follow_fig_6_to_8() {
        let abc = servers(&["A", "B", "C"]);
        let mut t = DistributionTable::initial(
            "app",
            100,
            &abc,
            Some(&dist(&[("A", 40), ("B", 30), ("C", 30)])),
        )
        .unwrap();
        t.take("B", 1).unwrap();
        t.take("C", 1).unwrap();
        t.take("A", 1).unwrap();
        assert_eq!(
            t.row("A").unwrap(),
            Row {
                allocation: 40,
                in_use: 1
            }
        );
        assert_eq!(t.row("B").unwrap().available(), 29);
        let err = t.take("B", 30).unwrap_err();
        assert_eq!(err.to_string(), "30 seats requested, 29 available");
        assert_eq!(
            t.row("B").unwrap().in_use,
            1,
            "a failed take changes nothing"
        );
        t.give_back("B", 1).unwrap();
        assert!(t.give_back("B", 1).is_err());
        assert!(t.take("Z", 1).is_err());
    }

    #[derive(Clone, Debug)]
    enum Op {
        Take(usize, u32),
        GiveBack(usize, u32),
    }

    fn op() -> impl Strategy<Value = Op> {
        let server = 0..4usize;
        let count = 0..40u32;
        prop_oneof![
            (server.clone(), count.clone()).prop_map(|(s, n)| Op::Take(s, n)),
            (server, count).prop_map(|(s, n)| Op::GiveBack(s, n)),
        ]
    }

    proptest! {
        /// Any sequence of operations keeps both invariants, a failed
        /// operation changes nothing, and seats are neither made nor lost.
        #[test]
        fn invariants_hold_under_any_operations(
            hard_limit in 0..500u32,
            shares in proptest::collection::vec(0..200u32, 3),
            even in any::<bool>(),
            ops in proptest::collection::vec(op(), 0..200),
        ) {
            let names = servers(&["A", "B", "C"]);
            let requested: BTreeMap<String, u32> =
                names.iter().cloned().zip(shares.iter().copied()).collect();
            let initial = DistributionTable::initial(
                "f", hard_limit, &names, if even { None } else { Some(&requested) });
            let sum: u32 = shares.iter().sum();
            let mut table = match initial {
                Ok(table) => { prop_assert!(even || sum <= hard_limit); table }
                Err(DistributionError::AboveHardLimit { .. }) => {
                    prop_assert!(!even && sum > hard_limit);
                    return Ok(());
                }
                Err(other) => { prop_assert!(false, "unexpected {other}"); unreachable!() }
            };
            table.check_invariants().map_err(TestCaseError::fail)?;
            // "D" (index 3) is not in the table: every operation on it must fail.
            let name = |i: usize| ["A", "B", "C", "D"][i];
            let mut issued: u64 = 0;
            for op in ops {
                let before = table.clone();
                let result = match op {
                    Op::Take(s, n) => table.take(name(s), n).map(|_| issued += u64::from(n)),
                    Op::GiveBack(s, n) => table.give_back(name(s), n).map(|_| issued -= u64::from(n)),
                };
                if result.is_err() {
                    prop_assert_eq!(&table, &before);
                }
                table.check_invariants().map_err(TestCaseError::fail)?;
                let in_use: u64 = table.rows().map(|(_, r)| u64::from(r.in_use)).sum();
                prop_assert_eq!(in_use, issued);
                prop_assert!(in_use <= u64::from(table.hard_limit()));
                let available: u64 = table.rows().map(|(_, r)| u64::from(r.available())).sum();
                prop_assert_eq!(
                    u64::from(table.free_pool()) + available + in_use,
                    u64::from(table.hard_limit())
                );
            }
        }
    }
}
