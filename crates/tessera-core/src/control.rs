//! The pool's replicated control state: the installed pool file and the
//! allocations of every feature. Every server applies the same commands in
//! the same order (the Raft log), so this module must be deterministic: no
//! clock, no keys, no host. What depends on the server (signatures, expiry,
//! host binding) is judged by the leader before it proposes a command, and by
//! each server again when it issues.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::distribution::DistributionTable;
use crate::pool_file::PoolFile;

/// Allocations of one feature across the pool.
///
/// Invariant: the servers' allocations + `parked` + `free_pool` equal `nominal_seats`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeatureAllocation {
    /// Seats of every code of the feature in the installed pool file.
    pub nominal_seats: u32,
    pub free_pool: u32,
    /// Allocation per server of the pool.
    pub servers: BTreeMap<String, u32>,
    /// Allocation of servers removed from the pool: nobody issues it, and it
    /// stays here until the removed server's grants must have lapsed.
    pub parked: BTreeMap<String, u32>,
}

impl FeatureAllocation {
    pub fn check_invariants(&self, feature: &str) -> Result<(), String> {
        let total: u64 = self.servers.values().map(|&n| u64::from(n)).sum::<u64>()
            + self.parked.values().map(|&n| u64::from(n)).sum::<u64>()
            + u64::from(self.free_pool);
        if total != u64::from(self.nominal_seats) {
            return Err(format!(
                "feature `{feature}`: allocations, parked seats and free pool add to {total}, \
                 not {}",
                self.nominal_seats
            ));
        }
        Ok(())
    }

    /// The seats `server` may issue when `served_seats` of the nominal seats
    /// are served on it: its allocation scaled down in proportion, rounded
    /// down. The sum over servers never exceeds `served_seats`, whatever
    /// subset of codes a server judges unserved.
    pub fn cap(&self, server: &str, served_seats: u32) -> u32 {
        let allocation = self.servers.get(server).copied().unwrap_or(0);
        if served_seats >= self.nominal_seats || self.nominal_seats == 0 {
            return allocation.min(served_seats);
        }
        (u64::from(allocation) * u64::from(served_seats) / u64::from(self.nominal_seats)) as u32
    }
}

/// A command of the replicated log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlCommand {
    /// Install a pool file with a higher sequence number than the installed one.
    InstallPoolFile { text: String },
}

/// What applying a command did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlOutcome {
    Installed { sequence: u64 },
    Refused { reason: String },
}

/// The state every server of the pool holds alike.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ControlState {
    pool_text: Option<String>,
    #[serde(skip)]
    pool: Option<PoolFile>,
    allocations: BTreeMap<String, FeatureAllocation>,
}

impl PartialEq for ControlState {
    fn eq(&self, other: &Self) -> bool {
        self.pool_text == other.pool_text && self.allocations == other.allocations
    }
}

impl ControlState {
    /// The installed pool file, if any.
    pub fn pool(&self) -> Option<&PoolFile> {
        self.pool.as_ref()
    }

    pub fn pool_text(&self) -> Option<&str> {
        self.pool_text.as_deref()
    }

    pub fn allocations(&self) -> &BTreeMap<String, FeatureAllocation> {
        &self.allocations
    }

    pub fn allocation(&self, feature: &str) -> Option<&FeatureAllocation> {
        self.allocations.get(feature)
    }

    /// Parses the pool file again after loading a snapshot (it is not serialized twice).
    pub fn restore_parsed(&mut self) -> Result<(), String> {
        self.pool = match &self.pool_text {
            Some(text) => Some(PoolFile::parse(text).map_err(|err| err.to_string())?),
            None => None,
        };
        Ok(())
    }

    pub fn apply(&mut self, command: &ControlCommand) -> ControlOutcome {
        match command {
            ControlCommand::InstallPoolFile { text } => match self.install(text) {
                Ok(sequence) => ControlOutcome::Installed { sequence },
                Err(reason) => ControlOutcome::Refused { reason },
            },
        }
    }

    /// Checks whether `text` would be installed, without installing it.
    pub fn check_install(&self, text: &str) -> Result<PoolFile, String> {
        let next = PoolFile::parse(text).map_err(|err| err.to_string())?;
        if let Some(current) = &self.pool {
            if next.pool_id != current.pool_id {
                return Err(format!(
                    "the pool file is for pool `{}`, but this is pool `{}`",
                    next.pool_id, current.pool_id
                ));
            }
            if next.sequence <= current.sequence {
                return Err(format!(
                    "the pool file has sequence {}, not above the installed sequence {}",
                    next.sequence, current.sequence
                ));
            }
        }
        self.next_allocations(&next)?;
        Ok(next)
    }

    fn install(&mut self, text: &str) -> Result<u64, String> {
        let next = self.check_install(text)?;
        self.allocations = self.next_allocations(&next)?;
        let sequence = next.sequence;
        self.pool = Some(next);
        self.pool_text = Some(text.to_string());
        Ok(sequence)
    }

    /// The allocations after installing `next`:
    /// - a feature new to the pool gets the file's initial distribution;
    /// - a feature already in the pool keeps every present server's
    ///   allocation, since moving seats away from a live server needs its
    ///   consent; seats added by new codes go to the free pool, and seats
    ///   removed must come from the free pool; a server the file's
    ///   distribution gives more seats than it has gets them from the free
    ///   pool (a smaller number is kept as is: shrinking is a distribution
    ///   change with the server's consent);
    /// - the allocation of a server that leaves the pool is parked.
    fn next_allocations(
        &self,
        next: &PoolFile,
    ) -> Result<BTreeMap<String, FeatureAllocation>, String> {
        let servers = next.server_ids();
        let mut features: Vec<&str> = next.codes.iter().map(|c| c.feature()).collect();
        features.sort();
        features.dedup();
        let mut result = BTreeMap::new();
        for feature in features {
            let nominal = u32::try_from(next.nominal_seats(feature))
                .map_err(|_| format!("feature `{feature}` has more than {} seats", u32::MAX))?;
            let requested = next.distribution.get(feature);
            let allocation = match self.allocations.get(feature) {
                None => initial(feature, nominal, &servers, requested)?,
                Some(current) => carried_over(feature, current, nominal, &servers, requested)?,
            };
            allocation.check_invariants(feature)?;
            result.insert(feature.to_string(), allocation);
        }
        Ok(result)
    }
}

fn initial(
    feature: &str,
    nominal: u32,
    servers: &[String],
    requested: Option<&BTreeMap<String, u32>>,
) -> Result<FeatureAllocation, String> {
    let table = DistributionTable::initial(feature, nominal, servers, requested)
        .map_err(|err| err.to_string())?;
    Ok(FeatureAllocation {
        nominal_seats: nominal,
        free_pool: table.free_pool(),
        servers: table
            .rows()
            .map(|(server, row)| (server.to_string(), row.allocation))
            .collect(),
        parked: BTreeMap::new(),
    })
}

fn carried_over(
    feature: &str,
    current: &FeatureAllocation,
    nominal: u32,
    servers: &[String],
    requested: Option<&BTreeMap<String, u32>>,
) -> Result<FeatureAllocation, String> {
    let mut next = FeatureAllocation {
        nominal_seats: nominal,
        free_pool: current.free_pool,
        servers: BTreeMap::new(),
        parked: current.parked.clone(),
    };
    for server in servers {
        let kept = current.servers.get(server).copied().unwrap_or(0);
        next.servers.insert(server.clone(), kept);
    }
    for (server, &allocation) in &current.servers {
        if !servers.contains(server) && allocation > 0 {
            *next.parked.entry(server.clone()).or_default() += allocation;
        }
    }
    if nominal >= current.nominal_seats {
        next.free_pool += nominal - current.nominal_seats;
    } else {
        let removed = current.nominal_seats - nominal;
        if removed > next.free_pool {
            return Err(format!(
                "the new codes of feature `{feature}` have {removed} fewer seats, but its free \
                 pool holds only {}; move allocation to the free pool first",
                next.free_pool
            ));
        }
        next.free_pool -= removed;
    }
    for (server, &wanted) in requested.into_iter().flatten() {
        let Some(allocation) = next.servers.get_mut(server) else {
            return Err(format!(
                "the distribution of feature `{feature}` names server `{server}`, which is not in the pool"
            ));
        };
        if wanted > *allocation {
            let more = wanted - *allocation;
            if more > next.free_pool {
                return Err(format!(
                    "the distribution of feature `{feature}` gives server `{server}` {more} more seats, but the free pool holds only {}",
                    next.free_pool
                ));
            }
            next.free_pool -= more;
            *allocation = wanted;
        }
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::license::tests::{test_key, unsigned};
    use crate::LicenseCode;

    fn pool_text(
        sequence: u64,
        servers: &[&str],
        codes: &[(&str, &str, u32)],
        dist: &str,
    ) -> String {
        let key = test_key("acme", 1);
        let signed: Vec<LicenseCode> = codes
            .iter()
            .map(|(id, feature, seats)| key.sign(unsigned(id, feature, *seats)).unwrap())
            .collect();
        let servers: String = servers
            .iter()
            .enumerate()
            .map(|(i, id)| {
                format!(
                    "[[servers]]\nid = \"{id}\"\naddress = \"127.0.0.1:{}\"\n",
                    27001 + i
                )
            })
            .collect();
        format!(
            "pool_id = \"p\"\nsequence = {sequence}\n{servers}{dist}\n{}",
            LicenseCode::write_file(&signed)
        )
    }

    type Seats = Vec<(String, u32)>;

    fn alloc(state: &ControlState, feature: &str) -> (Seats, u32, Seats) {
        let a = state.allocation(feature).unwrap();
        (
            a.servers.iter().map(|(s, n)| (s.clone(), *n)).collect(),
            a.free_pool,
            a.parked.iter().map(|(s, n)| (s.clone(), *n)).collect(),
        )
    }

    fn pairs(items: &[(&str, u32)]) -> Vec<(String, u32)> {
        items.iter().map(|(s, n)| (s.to_string(), *n)).collect()
    }

    #[test]
    fn first_install_uses_the_initial_distribution_of_fig_4() {
        let mut state = ControlState::default();
        let text = pool_text(
            1,
            &["A", "B", "C"],
            &[("c1", "app", 100)],
            "[distribution.app]\nA = 40\nB = 30\nC = 30\n",
        );
        assert_eq!(
            state.apply(&ControlCommand::InstallPoolFile { text }),
            ControlOutcome::Installed { sequence: 1 }
        );
        assert_eq!(
            alloc(&state, "app"),
            (pairs(&[("A", 40), ("B", 30), ("C", 30)]), 0, vec![])
        );
    }

    #[test]
    fn updates_need_a_higher_sequence_and_the_same_pool() {
        let mut state = ControlState::default();
        let one = pool_text(2, &["A"], &[("c1", "app", 10)], "");
        state.apply(&ControlCommand::InstallPoolFile { text: one.clone() });
        let before = state.clone();
        let outcome = state.apply(&ControlCommand::InstallPoolFile { text: one });
        assert!(
            matches!(outcome, ControlOutcome::Refused { reason } if reason.contains("not above the installed sequence 2"))
        );
        let other_pool = pool_text(3, &["A"], &[("c1", "app", 10)], "")
            .replace("pool_id = \"p\"", "pool_id = \"q\"");
        let outcome = state.apply(&ControlCommand::InstallPoolFile { text: other_pool });
        assert!(
            matches!(outcome, ControlOutcome::Refused { reason } if reason.contains("pool `q`"))
        );
        let garbage = state.apply(&ControlCommand::InstallPoolFile {
            text: "sequence = ".into(),
        });
        assert!(matches!(garbage, ControlOutcome::Refused { .. }));
        assert_eq!(state, before, "a refused command changes nothing");
    }

    #[test]
    fn live_allocations_are_kept_added_seats_go_to_the_free_pool_removed_servers_are_parked() {
        let mut state = ControlState::default();
        state.apply(&ControlCommand::InstallPoolFile {
            text: pool_text(
                1,
                &["A", "B", "C"],
                &[("c1", "app", 100)],
                "[distribution.app]\nA = 40\nB = 30\nC = 30\n",
            ),
        });
        // D joins, C leaves, an additive code brings 20 seats, the distribution is ignored for a live feature.
        let update = pool_text(
            2,
            &["A", "B", "D"],
            &[("c1", "app", 100), ("c2", "app", 20), ("n1", "new", 9)],
            "[distribution.app]\nA = 1\n",
        );
        assert_eq!(
            state.apply(&ControlCommand::InstallPoolFile { text: update }),
            ControlOutcome::Installed { sequence: 2 }
        );
        assert_eq!(
            alloc(&state, "app"),
            (
                pairs(&[("A", 40), ("B", 30), ("D", 0)]),
                20,
                pairs(&[("C", 30)])
            )
        );
        assert_eq!(
            alloc(&state, "new"),
            (pairs(&[("A", 3), ("B", 3), ("D", 3)]), 0, vec![])
        );
        // A distribution that grows D takes from the free pool; too much is refused.
        let both = [("c1", "app", 100), ("c2", "app", 20), ("n1", "new", 9)];
        let grow = pool_text(
            3,
            &["A", "B", "D"],
            &both,
            "[distribution.app]\nA = 1\nD = 15\n",
        );
        let outcome = state.apply(&ControlCommand::InstallPoolFile { text: grow });
        assert!(
            matches!(outcome, ControlOutcome::Installed { .. }),
            "{outcome:?}"
        );
        assert_eq!(
            alloc(&state, "app"),
            (
                pairs(&[("A", 40), ("B", 30), ("D", 15)]),
                5,
                pairs(&[("C", 30)])
            )
        );
        let greedy = pool_text(4, &["A", "B", "D"], &both, "[distribution.app]\nD = 21\n");
        let outcome = state.apply(&ControlCommand::InstallPoolFile { text: greedy });
        assert!(
            matches!(&outcome, ControlOutcome::Refused { reason } if reason.contains("6 more seats, but the free pool holds only 5")),
            "{outcome:?}"
        );
        // Removing the additive code needs its 20 seats in the free pool: only 5 are.
        let shrink = pool_text(
            5,
            &["A", "B", "D"],
            &[("c1", "app", 100), ("n1", "new", 9)],
            "",
        );
        let outcome = state.apply(&ControlCommand::InstallPoolFile { text: shrink });
        assert!(
            matches!(&outcome, ControlOutcome::Refused { reason } if reason.contains("20 fewer seats")),
            "{outcome:?}"
        );
    }

    #[test]
    fn caps_never_add_up_above_the_served_seats() {
        let allocation = FeatureAllocation {
            nominal_seats: 100,
            free_pool: 0,
            servers: [
                ("A".to_string(), 40),
                ("B".to_string(), 30),
                ("C".to_string(), 30),
            ]
            .into(),
            parked: BTreeMap::new(),
        };
        for served in 0..=100 {
            let total: u32 = ["A", "B", "C"]
                .iter()
                .map(|s| allocation.cap(s, served))
                .sum();
            assert!(total <= served, "{total} > {served}");
        }
        assert_eq!(allocation.cap("A", 100), 40);
        assert_eq!(allocation.cap("A", 50), 20);
        assert_eq!(allocation.cap("Z", 100), 0);
    }

    #[test]
    fn snapshots_round_trip() {
        let mut state = ControlState::default();
        state.apply(&ControlCommand::InstallPoolFile {
            text: pool_text(1, &["A"], &[("c1", "app", 10)], ""),
        });
        let json = serde_json::to_string(&state).unwrap();
        let mut back: ControlState = serde_json::from_str(&json).unwrap();
        back.restore_parsed().unwrap();
        assert_eq!(back, state);
        assert_eq!(back.pool().unwrap().sequence, 1);
    }
}
