//! Live administrator changes (seed 002 claims 7-12) turned into the next
//! pool file: a new distribution, license codes added, a code removed. The
//! leader makes the next file here (sequence + 1), checks it like any pool
//! file (it must parse back to itself) and proposes it; signatures are the
//! leader's to check, as for any pool file update.

use std::collections::BTreeMap;

use crate::control::FeatureAllocation;
use crate::license::{LicenseCode, LicenseError};
use crate::pool_file::{PoolFile, PoolFileError, SEQUENCE_MAX};

/// One administrator change to the installed pool file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PoolFileChange {
    /// The feature's distribution becomes `servers` (servers not named get 0).
    Distribution {
        feature: String,
        servers: BTreeMap<String, u32>,
    },
    /// Add the codes of a file of `[[license]]` tables. With `server`, their
    /// seats go to it and every other server keeps what it holds now;
    /// without, they go to the free pool.
    AddCodes {
        codes_text: String,
        server: Option<String>,
    },
    /// Take the code with this id out of the pool.
    RemoveCode { id: String },
}

/// Why an administrator change is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PoolFileChangeError {
    #[error(
        "the change was made against pool file sequence {expected}, but sequence {installed} \
         is installed; look at the status and try again"
    )]
    SequenceMoved { expected: u64, installed: u64 },
    #[error("feature `{feature}` is not in the pool")]
    UnknownFeature { feature: String },
    #[error("server `{server}` is not in the pool (its servers are {servers})")]
    DistributionNamesUnknownServer { server: String, servers: String },
    #[error("server `{server}` is not in the pool")]
    UnknownServer { server: String },
    #[error("the license codes do not parse: {0}")]
    CodesDoNotParse(LicenseError),
    #[error("the file holds no [[license]] table")]
    NoCodes,
    #[error("the pool has no license code `{id}`")]
    UnknownCode { id: String },
    #[error(
        "the installed pool file has sequence {sequence}, the highest there is \
         ({SEQUENCE_MAX}); no change can follow it. Install a pool file with a lower sequence \
         by re-forming the pool (`tessera server --recover-pool`)"
    )]
    SequenceExhausted { sequence: u64 },
    /// The next file is not a valid pool file (a distribution above the
    /// hard limit, a code twice, ...).
    #[error(transparent)]
    Invalid(PoolFileError),
}

/// The pool file `change` makes of `current`, whose committed allocations
/// are `allocations`. `expected_sequence`, when given, must be `current`'s.
/// The result has the next sequence number and is a valid pool file.
pub fn next_pool_file(
    current: &PoolFile,
    allocations: &BTreeMap<String, FeatureAllocation>,
    change: PoolFileChange,
    expected_sequence: Option<u64>,
) -> Result<PoolFile, PoolFileChangeError> {
    if let Some(expected) = expected_sequence {
        if expected != current.sequence {
            return Err(PoolFileChangeError::SequenceMoved {
                expected,
                installed: current.sequence,
            });
        }
    }
    let mut next = current.clone();
    next.sequence = current
        .next_sequence()
        .ok_or(PoolFileChangeError::SequenceExhausted {
            sequence: current.sequence,
        })?;
    match change {
        PoolFileChange::Distribution { feature, servers } => {
            set_distribution(current, &mut next, feature, servers)?
        }
        PoolFileChange::AddCodes { codes_text, server } => {
            add_codes(current, allocations, &mut next, &codes_text, server)?
        }
        PoolFileChange::RemoveCode { id } => remove_code(&mut next, &id)?,
    }
    let text = next.to_toml().map_err(PoolFileChangeError::Invalid)?;
    let parsed = PoolFile::parse(&text).map_err(PoolFileChangeError::Invalid)?;
    debug_assert_eq!(parsed, next, "a pool file reads back as it was written");
    Ok(next)
}

fn set_distribution(
    current: &PoolFile,
    next: &mut PoolFile,
    feature: String,
    servers: BTreeMap<String, u32>,
) -> Result<(), PoolFileChangeError> {
    if current.nominal_seats(&feature) == 0 {
        return Err(PoolFileChangeError::UnknownFeature { feature });
    }
    if let Some(server) = servers.keys().find(|s| current.server(s).is_none()) {
        return Err(PoolFileChangeError::DistributionNamesUnknownServer {
            server: server.clone(),
            servers: current.server_ids().join(", "),
        });
    }
    let distribution: BTreeMap<String, u32> = current
        .server_ids()
        .into_iter()
        .map(|s| {
            let seats = servers.get(&s).copied().unwrap_or(0);
            (s, seats)
        })
        .collect();
    next.distribution.insert(feature, distribution);
    Ok(())
}

fn add_codes(
    current: &PoolFile,
    allocations: &BTreeMap<String, FeatureAllocation>,
    next: &mut PoolFile,
    codes_text: &str,
    server: Option<String>,
) -> Result<(), PoolFileChangeError> {
    let codes =
        LicenseCode::parse_file(codes_text).map_err(PoolFileChangeError::CodesDoNotParse)?;
    if codes.is_empty() {
        return Err(PoolFileChangeError::NoCodes);
    }
    if let Some(server) = &server {
        if current.server(server).is_none() {
            return Err(PoolFileChangeError::UnknownServer {
                server: server.clone(),
            });
        }
    }
    // With a server named, the new seats go to it and every other server
    // keeps what it holds now.
    let mut given: BTreeMap<String, BTreeMap<String, u32>> = BTreeMap::new();
    for code in codes {
        if let Some(server) = &server {
            let feature = code.feature().to_string();
            let distribution =
                given
                    .entry(feature.clone())
                    .or_insert_with(|| match allocations.get(&feature) {
                        Some(a) => a.servers.clone(),
                        None => current.server_ids().into_iter().map(|s| (s, 0)).collect(),
                    });
            *distribution.entry(server.clone()).or_default() += code.seats();
        }
        next.codes.push(code);
    }
    next.distribution.extend(given);
    Ok(())
}

fn remove_code(next: &mut PoolFile, id: &str) -> Result<(), PoolFileChangeError> {
    let Some(removed) = next.codes.iter().find(|c| c.id() == id).cloned() else {
        return Err(PoolFileChangeError::UnknownCode { id: id.to_string() });
    };
    next.codes.retain(|c| c.id() != id);
    // The distribution last set for the feature counted the removed seats;
    // the servers keep what they hold, and the seats must be free (see
    // ControlState) for the removal to go through.
    next.distribution.remove(removed.feature());
    // A feature whose last code goes drops its distribution and borrowing sections.
    let features: Vec<String> = next.codes.iter().map(|c| c.feature().to_string()).collect();
    next.distribution.retain(|f, _| features.contains(f));
    next.borrowing.retain(|f, _| features.contains(f));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{ControlCommand, ControlOutcome, ControlState};
    use crate::license::tests::{test_key, unsigned};
    use proptest::prelude::*;

    const FEATURES: [&str; 3] = ["cad", "sim", "cam"];

    /// A pool of `servers` servers with one code per `(feature index, seats)`.
    fn pool(servers: usize, codes: &[(usize, u32)]) -> PoolFile {
        let key = test_key("acme", 1);
        let codes: Vec<LicenseCode> = codes
            .iter()
            .enumerate()
            .map(|(i, &(f, seats))| {
                key.sign(unsigned(&format!("c{i}"), FEATURES[f], seats))
                    .unwrap()
            })
            .collect();
        let servers: String = (0..servers)
            .map(|i| {
                format!(
                    "[[servers]]\nid = \"S{i}\"\naddress = \"h:{}\"\n",
                    27000 + i
                )
            })
            .collect();
        let text = format!(
            "pool_id = \"p\"\nsequence = 7\n{servers}{}",
            LicenseCode::write_file(&codes)
        );
        PoolFile::parse(&text).unwrap()
    }

    fn state_of(pool: &PoolFile) -> ControlState {
        let mut state = ControlState::default();
        let outcome = state.apply(&ControlCommand::InstallPoolFile {
            text: pool.to_toml().unwrap(),
        });
        assert!(
            matches!(outcome, ControlOutcome::Installed { .. }),
            "{outcome:?}"
        );
        state
    }

    fn change(current: &PoolFile, change: PoolFileChange) -> Result<PoolFile, PoolFileChangeError> {
        next_pool_file(current, state_of(current).allocations(), change, None)
    }

    fn seats(servers: &[(&str, u32)]) -> BTreeMap<String, u32> {
        servers.iter().map(|&(s, n)| (s.to_string(), n)).collect()
    }

    #[test]
    fn refusals_say_what_is_wrong() {
        let current = pool(2, &[(0, 10)]);
        let state = state_of(&current);
        let cases: [(PoolFileChange, Option<u64>, &str); 7] = [
            (
                PoolFileChange::RemoveCode { id: "c0".into() },
                Some(6),
                "made against pool file sequence 6, but sequence 7",
            ),
            (
                PoolFileChange::Distribution {
                    feature: "sim".into(),
                    servers: seats(&[("S0", 1)]),
                },
                None,
                "feature `sim` is not in the pool",
            ),
            (
                PoolFileChange::Distribution {
                    feature: "cad".into(),
                    servers: seats(&[("S9", 1)]),
                },
                None,
                "server `S9` is not in the pool (its servers are S0, S1)",
            ),
            (
                PoolFileChange::Distribution {
                    feature: "cad".into(),
                    servers: seats(&[("S0", 6), ("S1", 5)]),
                },
                None,
                "gives 11 seats but its hard limit is 10",
            ),
            (
                PoolFileChange::AddCodes {
                    codes_text: "license = []".into(),
                    server: None,
                },
                None,
                "the file holds no [[license]] table",
            ),
            (
                PoolFileChange::AddCodes {
                    codes_text: "[[license]]".into(),
                    server: None,
                },
                None,
                "the license codes do not parse",
            ),
            (
                PoolFileChange::RemoveCode { id: "c9".into() },
                None,
                "the pool has no license code `c9`",
            ),
        ];
        for (change, expected_sequence, expected) in cases {
            let err = next_pool_file(
                &current,
                state.allocations(),
                change.clone(),
                expected_sequence,
            )
            .unwrap_err()
            .to_string();
            assert!(
                err.contains(expected),
                "{change:?}: `{err}` should contain `{expected}`"
            );
        }
        let text =
            LicenseCode::write_file(&[test_key("acme", 1).sign(unsigned("n", "cad", 1)).unwrap()]);
        let err = change(
            &current,
            PoolFileChange::AddCodes {
                codes_text: text,
                server: Some("S7".into()),
            },
        )
        .unwrap_err();
        assert_eq!(
            err,
            PoolFileChangeError::UnknownServer {
                server: "S7".into()
            }
        );
    }

    /// A pool file at the highest sequence takes no change, and says so;
    /// nothing overflows making the next file.
    #[test]
    fn no_change_follows_the_highest_sequence() {
        let mut current = pool(2, &[(0, 10)]);
        current.sequence = crate::pool_file::SEQUENCE_MAX;
        let state = state_of(&pool(2, &[(0, 10)]));
        let err = next_pool_file(
            &current,
            state.allocations(),
            PoolFileChange::Distribution {
                feature: "cad".into(),
                servers: seats(&[("S0", 1)]),
            },
            None,
        )
        .unwrap_err();
        assert_eq!(
            err,
            PoolFileChangeError::SequenceExhausted {
                sequence: crate::pool_file::SEQUENCE_MAX
            }
        );
        assert!(err.to_string().contains("no change can follow"), "{err}");
        current.sequence = crate::pool_file::SEQUENCE_MAX - 1;
        let next = change(
            &current,
            PoolFileChange::Distribution {
                feature: "cad".into(),
                servers: seats(&[("S0", 1)]),
            },
        )
        .unwrap();
        assert_eq!(next.sequence, crate::pool_file::SEQUENCE_MAX);
    }

    fn arb_pool() -> impl Strategy<Value = PoolFile> {
        (
            1usize..=4,
            proptest::collection::vec((0usize..FEATURES.len(), 1u32..50), 1..5),
        )
            .prop_map(|(servers, codes)| pool(servers, &codes))
    }

    #[derive(Clone, Debug)]
    enum Op {
        Distribution {
            feature: usize,
            seats: Vec<u32>,
        },
        Add {
            feature: usize,
            seats: u32,
            server: Option<usize>,
        },
        Remove {
            code: usize,
        },
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (
                0usize..FEATURES.len(),
                proptest::collection::vec(0u32..30, 0..5)
            )
                .prop_map(|(feature, seats)| Op::Distribution { feature, seats }),
            (
                0usize..FEATURES.len(),
                1u32..40,
                proptest::option::of(0usize..5)
            )
                .prop_map(|(feature, seats, server)| Op::Add {
                    feature,
                    seats,
                    server
                }),
            (0usize..6).prop_map(|code| Op::Remove { code }),
        ]
    }

    fn nominal(pool: &PoolFile) -> BTreeMap<String, u64> {
        FEATURES
            .iter()
            .map(|f| (f.to_string(), pool.nominal_seats(f)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Every accepted change gives a valid pool file of the next sequence,
        /// of the same pool and servers, whose seats changed exactly as asked;
        /// a change is refused exactly when it names what the pool lacks or
        /// would give more seats than the codes carry.
        #[test]
        fn changes_give_the_next_valid_pool_file(current in arb_pool(), ops in proptest::collection::vec(arb_op(), 1..8), fresh in 0u32..1000) {
            let mut current = current;
            for (step, op) in ops.into_iter().enumerate() {
                let state = state_of(&current);
                let before = nominal(&current);
                let servers = current.server_ids();
                let (change, accepted_expected) = match &op {
                    Op::Distribution { feature, seats } => {
                        let feature = FEATURES[*feature].to_string();
                        let asked: BTreeMap<String, u32> = seats.iter().enumerate()
                            .map(|(i, &n)| (format!("S{i}"), n)).collect();
                        let known = before.contains_key(&feature)
                            && asked.keys().all(|s| servers.contains(s));
                        let total: u64 = asked.values().map(|&n| u64::from(n)).sum();
                        let fits = before.get(&feature).is_some_and(|&n| total <= n);
                        (PoolFileChange::Distribution { feature, servers: asked }, known && fits)
                    }
                    Op::Add { feature, seats, server } => {
                        let code = test_key("acme", 1)
                            .sign(unsigned(&format!("n{fresh}-{step}"), FEATURES[*feature], *seats))
                            .unwrap();
                        let server = server.map(|i| format!("S{i}"));
                        let known = server.as_ref().is_none_or(|s| servers.contains(s));
                        (PoolFileChange::AddCodes { codes_text: LicenseCode::write_file(&[code]), server }, known)
                    }
                    Op::Remove { code } => {
                        let id = format!("c{code}");
                        let known = current.codes.iter().any(|c| c.id() == id);
                        (PoolFileChange::RemoveCode { id }, known)
                    }
                };
                let result = next_pool_file(&current, state.allocations(), change.clone(), Some(current.sequence));
                prop_assert_eq!(result.is_ok(), accepted_expected, "{:?} gave {:?}", op, result);
                let Ok(next) = result else { continue };
                let reread = PoolFile::parse(&next.to_toml().unwrap());
                prop_assert_eq!(reread.as_ref(), Ok(&next));
                prop_assert_eq!(next.sequence, current.sequence + 1);
                prop_assert_eq!(&next.pool_id, &current.pool_id);
                prop_assert_eq!(&next.servers, &current.servers);
                for (feature, distribution) in &next.distribution {
                    let total: u64 = distribution.values().map(|&n| u64::from(n)).sum();
                    prop_assert!(total <= next.nominal_seats(feature), "{} over its seats", feature);
                }
                let after = nominal(&next);
                match (&op, &change) {
                    (Op::Distribution { .. }, PoolFileChange::Distribution { feature, servers: asked }) => {
                        prop_assert_eq!(&after, &before);
                        let set = &next.distribution[feature];
                        prop_assert_eq!(set.len(), servers.len(), "every server has a share");
                        for server in &servers {
                            prop_assert_eq!(set[server], asked.get(server).copied().unwrap_or(0));
                        }
                    }
                    (Op::Add { feature, seats, .. }, PoolFileChange::AddCodes { server, .. }) => {
                        let feature = FEATURES[*feature];
                        prop_assert_eq!(after.get(feature).copied().unwrap_or(0),
                            before.get(feature).copied().unwrap_or(0) + u64::from(*seats));
                        if let Some(server) = server {
                            let held = state.allocation(feature).map(|a| a.allocation_of(server)).unwrap_or(0);
                            prop_assert_eq!(next.distribution[feature][server], held + seats,
                                "the named server gets the new seats on top of what it holds");
                            for other in servers.iter().filter(|s| *s != server) {
                                let held = state.allocation(feature).map(|a| a.allocation_of(other)).unwrap_or(0);
                                prop_assert_eq!(next.distribution[feature][other], held);
                            }
                        } else {
                            prop_assert_eq!(next.distribution.get(feature), current.distribution.get(feature));
                        }
                    }
                    (Op::Remove { .. }, PoolFileChange::RemoveCode { id }) => {
                        let removed = current.codes.iter().find(|c| c.id() == id).unwrap();
                        prop_assert!(next.codes.iter().all(|c| c.id() != id));
                        prop_assert_eq!(after.get(removed.feature()).copied().unwrap_or(0),
                            before[removed.feature()] - u64::from(removed.seats()));
                        prop_assert!(!next.distribution.contains_key(removed.feature()));
                    }
                    _ => unreachable!(),
                }
                // A change against a stale sequence is refused.
                let stale = next_pool_file(&next, state.allocations(), change, Some(current.sequence));
                let is_stale_refusal = matches!(stale, Err(PoolFileChangeError::SequenceMoved { .. }));
                prop_assert!(is_stale_refusal);
                current = next;
            }
        }
    }
}
