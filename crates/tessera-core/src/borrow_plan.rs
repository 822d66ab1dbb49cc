//! The leader's answer to a server that asks for seats (seed 002): where the
//! seats come from, in the order of ARCHITECTURE.md ("the leader's search
//! for a borrower"): the free pool; the parked seats of removed servers and
//! the allocations of servers silent for at least `W`; its own spare; the
//! live followers' spare, most first. The first two move without consent;
//! the last two are requests the donor answers.
//!
//! Pure: the leader gathers what it knows (the committed allocation, how
//! long each server has been silent, the in-use counts they reported, its
//! own issuer's counts) and executes the plan (commits the moves and the
//! requests).

use std::collections::BTreeMap;

use crate::control::{BorrowSource, FeatureAllocation};

/// Why a server asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BorrowKind {
    /// A checkout or conversion waits for the seats: any spare will do, and
    /// if the pool cannot give what it needs, nothing moves.
    ForWaitingCheckout,
    /// The server went above its threshold: a live donor gives only what
    /// keeps it under its own threshold.
    AheadOfNeed,
}

/// What a server asks the leader for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BorrowRequest {
    /// The server that asks (the recipient).
    pub asker: String,
    /// Seats asked for (the need and a batch beyond it).
    pub seats: u32,
    /// Of those, needed now; 0 means all of them.
    pub needed: u32,
    pub kind: BorrowKind,
}

impl BorrowRequest {
    /// The seats needed now, at most those asked for.
    pub fn needed_now(&self) -> u32 {
        if self.needed == 0 {
            self.seats
        } else {
            self.needed.min(self.seats)
        }
    }
}

/// The leader's own counts of the feature, from its issuer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LeaderSeats {
    pub in_use: u32,
    /// Seats it could issue now (its allocation less in use, held back and
    /// held aside).
    pub available: u32,
}

/// What the leader knows of the pool when it plans.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolView {
    pub leader: String,
    /// The pool's servers in leader-priority order.
    pub servers: Vec<String>,
    /// Per server (and per parked key): how long it has been silent, on the
    /// leader's clock, since its last report or the leader's election.
    /// Missing: not silent.
    pub silent_for_ms: BTreeMap<String, u64>,
    /// Per follower: the in-use count of its last report. Missing: unknown.
    pub reported_in_use: BTreeMap<String, u32>,
    pub leader_seats: LeaderSeats,
    /// `W`: silence after which a server's allocation may move without its
    /// consent ([`crate::lease::LeaseTiming::reassign_after_ms`]).
    pub reassign_after_ms: u64,
    /// Silence after which a server is not asked for consent: it missed
    /// its last reports and cannot answer in time.
    pub answers_within_ms: u64,
    /// The asker's borrowing threshold, percent.
    pub threshold_percent: u32,
}

impl PoolView {
    fn silent_ms(&self, server: &str) -> u64 {
        self.silent_for_ms.get(server).copied().unwrap_or(0)
    }
}

/// Seats a source can give.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Offer<S> {
    pub from: S,
    pub seats: u32,
}

/// The leader's decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BorrowPlan {
    /// The pool cannot give the seats needed now: nothing moves (moving part
    /// would only disturb other servers) and the asker denies at once.
    PoolShort { pending: u32, pool_available: u32 },
    /// Take up to `wanted` seats: first from `without_consent`, in order
    /// (each a [`crate::ControlCommand::Borrow`]), then ask `with_consent`,
    /// in order (each a [`crate::ControlCommand::RequestRelease`]). Each
    /// offer caps what its source gives.
    Give {
        pending: u32,
        pool_available: u32,
        wanted: u32,
        without_consent: Vec<Offer<BorrowSource>>,
        with_consent: Vec<Offer<String>>,
    },
}

/// One step of a plan, as proposed when every step before it went through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BorrowStep {
    Take { source: BorrowSource, seats: u32 },
    Ask { donor: String, seats: u32 },
}

/// Takes from each offer in turn what is still `wanted`, as `step` says.
fn walk<S: Clone>(
    offers: &[Offer<S>],
    wanted: &mut u32,
    step: impl Fn(S, u32) -> BorrowStep,
    steps: &mut Vec<BorrowStep>,
) {
    for offer in offers {
        let seats = (*wanted).min(offer.seats);
        if seats > 0 {
            steps.push(step(offer.from.clone(), seats));
            *wanted -= seats;
        }
    }
}

impl BorrowPlan {
    /// Seats already asked of donors for the asker (its pending requests).
    pub fn pending(&self) -> u32 {
        match self {
            BorrowPlan::PoolShort { pending, .. } | BorrowPlan::Give { pending, .. } => *pending,
        }
    }

    /// What the pool could give the asker now: pending requests, free and
    /// reassignable seats, and the live donors' spare.
    pub fn pool_available(&self) -> u32 {
        match self {
            BorrowPlan::PoolShort { pool_available, .. }
            | BorrowPlan::Give { pool_available, .. } => *pool_available,
        }
    }

    /// The steps in order, each for what is still wanted, when every step
    /// moves or requests all it asks for. The leader executes the same
    /// walk, counting what each committed step really did.
    pub fn steps(&self) -> Vec<BorrowStep> {
        let BorrowPlan::Give {
            wanted,
            without_consent,
            with_consent,
            ..
        } = self
        else {
            return Vec::new();
        };
        let mut wanted = *wanted;
        let mut steps = Vec::new();
        let take = |source, seats| BorrowStep::Take { source, seats };
        walk(without_consent, &mut wanted, take, &mut steps);
        let ask = |donor, seats| BorrowStep::Ask { donor, seats };
        walk(with_consent, &mut wanted, ask, &mut steps);
        steps
    }
}

/// Plans the answer to `request` for a feature whose committed allocation
/// is `allocation`. The asker must be a server of the pool.
pub fn plan_borrow(
    allocation: &FeatureAllocation,
    view: &PoolView,
    request: &BorrowRequest,
) -> BorrowPlan {
    let pending: u64 = allocation
        .requests
        .values()
        .filter(|r| r.recipient == request.asker)
        .map(|r| u64::from(r.seats))
        .sum();
    let pending = u32::try_from(pending).unwrap_or(u32::MAX);
    let without_consent = without_consent(allocation, view, &request.asker);
    let with_consent = with_consent(allocation, view, request);
    let pool_available = u64::from(pending)
        + without_consent
            .iter()
            .map(|o| u64::from(o.seats))
            .sum::<u64>()
        + with_consent.iter().map(|o| u64::from(o.seats)).sum::<u64>();
    let pool_available = u32::try_from(pool_available).unwrap_or(u32::MAX);
    if request.kind == BorrowKind::ForWaitingCheckout && pool_available < request.needed_now() {
        return BorrowPlan::PoolShort {
            pending,
            pool_available,
        };
    }
    BorrowPlan::Give {
        pending,
        pool_available,
        wanted: request.seats,
        without_consent,
        with_consent,
    }
}

/// The free pool, then parked seats and the allocations of servers other
/// than the asker and the leader, of those silent for at least `W`.
fn without_consent(
    allocation: &FeatureAllocation,
    view: &PoolView,
    asker: &str,
) -> Vec<Offer<BorrowSource>> {
    let safe = |server: &str| view.silent_ms(server) >= view.reassign_after_ms;
    let mut offers = vec![Offer {
        from: BorrowSource::FreePool,
        seats: allocation.free_pool,
    }];
    for (server, &seats) in &allocation.parked {
        if safe(server) {
            offers.push(Offer {
                from: BorrowSource::Parked(server.clone()),
                seats,
            });
        }
    }
    for server in &view.servers {
        let seats = allocation.allocation_of(server);
        if server != asker && *server != view.leader && seats > 0 && safe(server) {
            offers.push(Offer {
                from: BorrowSource::DownServer(server.clone()),
                seats,
            });
        }
    }
    offers.retain(|o| o.seats > 0);
    offers
}

/// Live donors with spare: the leader first, then the followers with the
/// most spare (by id among equals). A follower is asked only with a known
/// in-use report and only if it reported lately.
fn with_consent(
    allocation: &FeatureAllocation,
    view: &PoolView,
    request: &BorrowRequest,
) -> Vec<Offer<String>> {
    let mut donors: Vec<(u32, Offer<String>)> = Vec::new();
    for server in &view.servers {
        if *server == request.asker || view.silent_ms(server) > view.answers_within_ms {
            continue;
        }
        let is_leader = *server == view.leader;
        let (spare, in_use) = if is_leader {
            (view.leader_seats.available, view.leader_seats.in_use)
        } else {
            let Some(&in_use) = view.reported_in_use.get(server) else {
                continue;
            };
            let spare = allocation
                .allocation_of(server)
                .saturating_sub(in_use)
                .saturating_sub(allocation.reserved(server));
            (spare, in_use)
        };
        let spare = match request.kind {
            BorrowKind::ForWaitingCheckout => spare,
            // Ahead of need, a donor keeps enough to stay under its threshold.
            BorrowKind::AheadOfNeed => {
                let keep =
                    (u64::from(in_use) * 100).div_ceil(u64::from(view.threshold_percent.max(1)));
                let keep = u32::try_from(keep).unwrap_or(u32::MAX);
                spare.min(
                    allocation
                        .allocation_of(server)
                        .saturating_sub(allocation.reserved(server))
                        .saturating_sub(keep),
                )
            }
        };
        if spare > 0 {
            let rank = if is_leader { u32::MAX } else { spare };
            donors.push((
                rank,
                Offer {
                    from: server.clone(),
                    seats: spare,
                },
            ));
        }
    }
    donors.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.from.cmp(&b.1.from)));
    donors.into_iter().map(|(_, offer)| offer).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::ReleaseRequest;
    use proptest::prelude::*;

    const W_MS: u64 = 10_000;
    const ANSWERS_WITHIN_MS: u64 = 900;

    /// One server as the test draws it.
    #[derive(Clone, Debug)]
    struct Drawn {
        allocation: u32,
        in_use: u32,
        silent_for_ms: u64,
        reported: bool,
    }

    #[derive(Clone, Debug)]
    struct Case {
        allocation: FeatureAllocation,
        view: PoolView,
        request: BorrowRequest,
        in_use: BTreeMap<String, u32>,
    }

    fn silence() -> impl Strategy<Value = u64> {
        prop_oneof![
            Just(0u64),
            0u64..ANSWERS_WITHIN_MS * 2,
            W_MS - 1..W_MS + 1,
            W_MS..W_MS * 3
        ]
    }

    fn case() -> impl Strategy<Value = Case> {
        let server = (0u32..20, 0u32..25, silence(), any::<bool>()).prop_map(
            |(allocation, in_use, silent_for_ms, reported)| Drawn {
                allocation,
                in_use: in_use.min(allocation),
                silent_for_ms,
                reported,
            },
        );
        (
            proptest::collection::vec(server, 1..6),
            0u32..20,
            proptest::collection::vec((0u32..10, silence()), 0..3),
            proptest::collection::vec((0usize..6, 0usize..6, 1u32..5), 0..3),
            (
                0usize..6,
                0usize..6,
                1u32..30,
                0u32..30,
                any::<bool>(),
                1u32..=100,
            ),
        )
            .prop_map(|(servers, free_pool, parked, requests, ask)| {
                let n = servers.len();
                let ids: Vec<String> = (0..n).map(|i| format!("S{i}")).collect();
                let (asker, leader, seats, needed, ahead, threshold_percent) = ask;
                let (asker, leader) = (ids[asker % n].clone(), ids[leader % n].clone());
                let mut allocation = FeatureAllocation {
                    free_pool,
                    servers: ids
                        .iter()
                        .cloned()
                        .zip(servers.iter().map(|s| s.allocation))
                        .collect(),
                    parked: parked
                        .iter()
                        .enumerate()
                        .map(|(i, &(seats, _))| (format!("R{i}"), seats))
                        .collect(),
                    ..FeatureAllocation::default()
                };
                for (id, &(donor, recipient, seats)) in requests.iter().enumerate() {
                    allocation.requests.insert(
                        id as u64,
                        ReleaseRequest {
                            donor: ids[donor % n].clone(),
                            recipient: ids[recipient % n].clone(),
                            seats,
                        },
                    );
                }
                allocation.nominal_seats = allocation.servers.values().sum::<u32>()
                    + allocation.parked.values().sum::<u32>()
                    + free_pool;
                let mut silent_for_ms: BTreeMap<String, u64> = ids
                    .iter()
                    .zip(&servers)
                    .map(|(id, s)| (id.clone(), s.silent_for_ms))
                    .collect();
                for (i, &(_, silent)) in parked.iter().enumerate() {
                    silent_for_ms.insert(format!("R{i}"), silent);
                }
                let in_use: BTreeMap<String, u32> = ids
                    .iter()
                    .zip(&servers)
                    .map(|(id, s)| (id.clone(), s.in_use))
                    .collect();
                let reported_in_use = ids
                    .iter()
                    .zip(&servers)
                    .filter(|(id, s)| s.reported && **id != leader)
                    .map(|(id, s)| (id.clone(), s.in_use))
                    .collect();
                let leader_in_use = in_use[&leader];
                let leader_seats = LeaderSeats {
                    in_use: leader_in_use,
                    available: allocation
                        .allocation_of(&leader)
                        .saturating_sub(leader_in_use)
                        .saturating_sub(allocation.reserved(&leader)),
                };
                Case {
                    view: PoolView {
                        leader,
                        servers: ids,
                        silent_for_ms,
                        reported_in_use,
                        leader_seats,
                        reassign_after_ms: W_MS,
                        answers_within_ms: ANSWERS_WITHIN_MS,
                        threshold_percent,
                    },
                    request: BorrowRequest {
                        asker,
                        seats,
                        needed,
                        kind: if ahead {
                            BorrowKind::AheadOfNeed
                        } else {
                            BorrowKind::ForWaitingCheckout
                        },
                    },
                    allocation,
                    in_use,
                }
            })
    }

    /// What donors can spare: allocation less in use less held back.
    fn spare(case: &Case, server: &str) -> u32 {
        case.allocation
            .allocation_of(server)
            .saturating_sub(case.in_use[server])
            .saturating_sub(case.allocation.reserved(server))
    }

    #[test]
    fn the_search_order_of_seed_002() {
        let mut allocation = FeatureAllocation {
            nominal_seats: 20,
            free_pool: 1,
            servers: [("A", 6), ("B", 5), ("C", 4), ("D", 4)]
                .map(|(s, n)| (s.to_string(), n))
                .into(),
            ..FeatureAllocation::default()
        };
        allocation.parked.insert("R".into(), 0);
        let view = PoolView {
            leader: "A".into(),
            servers: ["A", "B", "C", "D"].map(String::from).to_vec(),
            silent_for_ms: [("D".to_string(), W_MS)].into(),
            reported_in_use: [("B".to_string(), 4), ("C".to_string(), 1)].into(),
            leader_seats: LeaderSeats {
                in_use: 3,
                available: 3,
            },
            reassign_after_ms: W_MS,
            answers_within_ms: ANSWERS_WITHIN_MS,
            threshold_percent: 80,
        };
        let request = BorrowRequest {
            asker: "B".into(),
            seats: 12,
            needed: 5,
            kind: BorrowKind::ForWaitingCheckout,
        };
        let plan = plan_borrow(&allocation, &view, &request);
        assert_eq!(plan.pool_available(), 1 + 4 + 3 + 3);
        assert_eq!(
            plan.steps(),
            vec![
                BorrowStep::Take {
                    source: BorrowSource::FreePool,
                    seats: 1
                },
                BorrowStep::Take {
                    source: BorrowSource::DownServer("D".into()),
                    seats: 4
                },
                BorrowStep::Ask {
                    donor: "A".into(),
                    seats: 3
                },
                BorrowStep::Ask {
                    donor: "C".into(),
                    seats: 3
                },
            ]
        );
        // Ahead of need, C keeps 2 seats (1 in use is under 80 % of 2).
        let ahead = BorrowRequest {
            kind: BorrowKind::AheadOfNeed,
            ..request.clone()
        };
        let plan = plan_borrow(&allocation, &view, &ahead);
        assert_eq!(
            plan.steps().last(),
            Some(&BorrowStep::Ask {
                donor: "C".into(),
                seats: 2
            })
        );
        // Needing more than the pool has: nothing moves.
        let greedy = BorrowRequest {
            needed: 12,
            ..request
        };
        assert_eq!(
            plan_borrow(&allocation, &view, &greedy),
            BorrowPlan::PoolShort {
                pending: 0,
                pool_available: 11
            }
        );
        allocation.requests.insert(
            0,
            ReleaseRequest {
                donor: "C".into(),
                recipient: "B".into(),
                seats: 2,
            },
        );
        let plan = plan_borrow(&allocation, &view, &greedy);
        assert_eq!(plan.pending(), 2);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn a_plan_moves_only_what_donors_can_spare(case in case()) {
            let Case { allocation, view, request, .. } = &case;
            let plan = plan_borrow(allocation, view, request);
            let steps = plan.steps();
            let mut after = allocation.clone();
            let mut asked: BTreeMap<String, u32> = BTreeMap::new();
            let mut total = 0u64;
            for step in &steps {
                match step {
                    BorrowStep::Take { source, seats } => {
                        total += u64::from(*seats);
                        let from = match source {
                            BorrowSource::FreePool => &mut after.free_pool,
                            BorrowSource::Parked(key) => {
                                prop_assert!(view.silent_ms(key) >= W_MS, "parked {} taken before W", key);
                                after.parked.get_mut(key).unwrap()
                            }
                            BorrowSource::DownServer(server) => {
                                prop_assert!(view.silent_ms(server) >= W_MS, "{} taken without waiting W", server);
                                prop_assert!(*server != request.asker && *server != view.leader);
                                after.servers.get_mut(server).unwrap()
                            }
                            BorrowSource::HandOver { .. } => {
                                prop_assert!(false, "a plan never hands over: {:?}", source);
                                unreachable!()
                            }
                        };
                        prop_assert!(*from >= *seats, "{:?} gives more than it has", source);
                        *from -= seats;
                        *after.servers.get_mut(&request.asker).unwrap() += seats;
                    }
                    BorrowStep::Ask { donor, seats } => {
                        total += u64::from(*seats);
                        prop_assert!(*donor != request.asker);
                        prop_assert!(view.silent_ms(donor) <= ANSWERS_WITHIN_MS, "{} is not answering", donor);
                        prop_assert!(
                            *donor == view.leader || view.reported_in_use.contains_key(donor),
                            "{} asked with its in-use count unknown", donor
                        );
                        prop_assert!(asked.insert(donor.clone(), *seats).is_none(), "{} asked twice", donor);
                        // The donor can spare them: what it holds less what clients hold and what it holds back.
                        prop_assert!(*seats <= spare(&case, donor), "{} asked for {} of {}", donor, seats, spare(&case, donor));
                        if request.kind == BorrowKind::AheadOfNeed {
                            let left = u64::from(allocation.allocation_of(donor) - allocation.reserved(donor).min(allocation.allocation_of(donor)) - seats);
                            prop_assert!(u64::from(case.in_use[donor]) * 100 <= left * u64::from(view.threshold_percent),
                                "ahead of need, {} would go above its threshold", donor);
                        }
                    }
                }
            }
            prop_assert!(total <= u64::from(request.seats), "more than asked");
            // Moves keep every seat: the total allocation stays the hard limit.
            let sum = after.servers.values().map(|&n| u64::from(n)).sum::<u64>()
                + after.parked.values().map(|&n| u64::from(n)).sum::<u64>()
                + u64::from(after.free_pool);
            prop_assert_eq!(sum, u64::from(allocation.nominal_seats));
            // Asking would, if every donor gave, still keep within the hard limit.
            let asked_total: u64 = asked.values().map(|&n| u64::from(n)).sum();
            prop_assert!(u64::from(after.allocation_of(&request.asker)) + asked_total <= u64::from(allocation.nominal_seats));
        }

        #[test]
        fn the_pool_cannot_give_exactly_when_its_spare_seats_are_short(case in case()) {
            let Case { allocation, view, request, .. } = &case;
            let plan = plan_borrow(allocation, view, request);
            let free_and_safe: u64 = u64::from(allocation.free_pool)
                + allocation.parked.iter().filter(|(k, _)| view.silent_ms(k) >= W_MS).map(|(_, &n)| u64::from(n)).sum::<u64>()
                + view.servers.iter()
                    .filter(|s| **s != request.asker && **s != view.leader && view.silent_ms(s) >= W_MS)
                    .map(|s| u64::from(allocation.allocation_of(s))).sum::<u64>();
            // Live donors: answering, with a known in-use count, not the asker.
            let live_spare: u64 = match request.kind {
                BorrowKind::ForWaitingCheckout => view.servers.iter()
                    .filter(|d| **d != request.asker && view.silent_ms(d) <= ANSWERS_WITHIN_MS)
                    .filter(|d| **d == view.leader || view.reported_in_use.contains_key(*d))
                    .map(|d| u64::from(spare(&case, d)))
                    .sum(),
                BorrowKind::AheadOfNeed => match &plan {
                    BorrowPlan::Give { with_consent, .. } => with_consent.iter().map(|o| u64::from(o.seats)).sum(),
                    BorrowPlan::PoolShort { .. } => { prop_assert!(false, "ahead of need is never short"); 0 }
                },
            };
            let pending = u64::from(plan.pending());
            let available = pending + free_and_safe + live_spare;
            prop_assert_eq!(u64::from(plan.pool_available()), available);
            let short = request.kind == BorrowKind::ForWaitingCheckout && available < u64::from(request.needed_now());
            prop_assert_eq!(matches!(plan, BorrowPlan::PoolShort { .. }), short);
            if !short {
                // Whatever is short of the ask is short in the pool too.
                let given: u64 = plan.steps().iter().map(|s| match s {
                    BorrowStep::Take { seats, .. } | BorrowStep::Ask { seats, .. } => u64::from(*seats),
                }).sum();
                prop_assert_eq!(given, u64::from(request.seats).min(available - pending));
            }
        }
    }
}
