//! The pool-wide `reserve` and `max` rules of the policy in the
//! simulation: what a seed draws, and the checker that judges the seats the
//! programs believed against them.
//!
//! A third of the seeds give the feature a `[policy]` with a group, one or
//! two `reserve` rules and one or two `max` rules ([`draw`]); their programs
//! then run as users of a small fixed set ([`USERS`]), some in the group and
//! some not, so that the rules bite. The checker ([`breaches`]) takes the
//! seats held at one instant, per user, and the rules as the core parses
//! them from the pool file ([`tessera_core::policy::Policy`]); it counts who
//! each rule names with [`Policy::limits_held`], the core's own membership,
//! so the simulation judges by the rules the servers enforce, not by a
//! second reading of them. What it checks, from the programs' beliefs only:
//! - every `max "N RULE"`: those RULE names hold at most N seats together;
//! - the reserves: the seats held by those no reserve names, plus, per
//!   reserve, the larger of what its holders hold (each holder counted
//!   against the first reserve naming them) and its N, are at most the
//!   feature's nominal seats.

use rand::distributions::{Distribution, WeightedIndex};
use rand::rngs::StdRng;
use rand::Rng;
use tessera_client::ClientError;
use tessera_core::policy::{Asker, Policy};
use tessera_core::PoolFile;
use tessera_proto::ErrorCode;

use crate::scenario::FEATURE;

/// The users programs run as when the seed has rules. The first three are
/// the group's.
pub const USERS: [&str; 6] = ["ana", "ben", "cyd", "dan", "eve", "fox"];
/// How often each of [`USERS`] is drawn. `dan`, whom the second reserve
/// names, runs few programs: his reserve is often partly unused, and then
/// keeps seats from the others, who want more than they may have.
const USER_WEIGHTS: [u32; 6] = [4, 4, 4, 1, 4, 4];
/// The policy's group: `ana`, `ben` and `cyd`.
pub const GROUP: &str = "design";
const GROUP_MEMBERS: usize = 3;

/// How the core's reason for a claim refused by the reserves names each
/// reserve whose seats it kept (`Policy::check_claim`). The code
/// (`no_seats_available`) is the same as for a full pool, and the core
/// refuses a claim in a pool whose seats are all held as `Reserved` too,
/// naming no reserve: only a reason that names one tells that a reserve
/// kept seats from the asker.
const RESERVE_NAMED: &str = "(reserve \"";

/// The `[policy]` tables of one seed, as the pool file carries them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rules {
    pub text: String,
    /// The feature's rules on one line, for reports.
    pub summary: String,
    /// The servers are not told the rules, while the programs run as their
    /// users and the checker judges by them: a pool that does not enforce
    /// them, which the checker must catch ([`crate::Options::withhold_rules`]).
    pub withheld: bool,
}

/// Draws rules for a feature of `seats` seats (the hard limit at the
/// start): a reserve for the group and, more often than not, one for `dan`,
/// together at most half the seats, so that the programs outside them still
/// contend; a max for one user (inside the group or outside it) and perhaps
/// for the whole group, at least the group's reserve, or the reserve could
/// never be filled and the final probe could not check out every seat.
/// With about twice as many programs as seats, each user but `dan` wants
/// about a third of the seats and the group about all of them: the maxima
/// are reached, the group uses its reserve, and `dan` leaves some of his.
pub fn draw(rng: &mut StdRng, seats: u32) -> Rules {
    let seats = seats.max(1);
    let half = (seats / 2).max(1);
    let group_reserve = rng.gen_range(1..=(seats / 4).max(1));
    let mut reserve = vec![format!("{group_reserve} group:{GROUP}")];
    let dan_reserve = rng.gen_range(1..=(seats / 8).max(1));
    if rng.gen_bool(0.7) && group_reserve + dan_reserve <= half {
        reserve.push(format!("{dan_reserve} user:dan"));
    }
    let limited = if rng.gen_bool(0.5) { "ana" } else { "eve" };
    let mut max = vec![format!(
        "{} user:{limited}",
        rng.gen_range(1..=(seats / 5).max(1))
    )];
    if rng.gen_bool(0.5) {
        let group_max = rng.gen_range(group_reserve..=half.max(group_reserve));
        max.push(format!("{group_max} group:{GROUP}"));
    }
    let list = |rules: &[String]| {
        let quoted: Vec<String> = rules.iter().map(|r| format!("\"{r}\"")).collect();
        format!("[{}]", quoted.join(", "))
    };
    let members = list(
        &USERS[..GROUP_MEMBERS]
            .iter()
            .map(|u| u.to_string())
            .collect::<Vec<_>>(),
    );
    let text = format!(
        "[policy.groups]\n{GROUP} = {members}\n\n[policy.features.{FEATURE}]\n\
         reserve = {}\nmax = {}\n\n",
        list(&reserve),
        list(&max)
    );
    Rules {
        summary: format!("reserve {} max {}", list(&reserve), list(&max)),
        text,
        withheld: false,
    }
}

/// The rules and the feature's nominal seats, as the core reads them from
/// the pool file `pool_text` (the simulator's own, always valid).
pub fn parse(pool_text: &str) -> (Policy, u64) {
    let pool = PoolFile::parse(pool_text).expect("the simulator writes a valid pool file");
    let nominal = pool.nominal_seats(FEATURE);
    (pool.policy, nominal)
}

/// A program's user under rules, drawn from `rng`: the caller gives a
/// stream of the program's own, so that the program keeps its user across
/// restarts of its machine and the draw takes nothing from the streams the
/// seed's other choices come from.
pub fn user_of(rng: &mut StdRng) -> &'static str {
    let weights = WeightedIndex::new(USER_WEIGHTS).expect("the weights are positive");
    USERS[weights.sample(rng)]
}

/// The users of [`USERS`] some reserve of `policy` counts, in order: the
/// final probe checks the reserved seats out as them.
pub fn reserved_users(policy: &Policy) -> Vec<&'static str> {
    USERS
        .into_iter()
        .filter(|user| {
            let alone = [(asker(user, ""), 1)];
            let (reserves, _) = policy.limits_held(FEATURE, alone.iter().copied());
            reserves.iter().any(|(_, held)| *held > 0)
        })
        .collect()
}

/// Who asks, as the rules see a program: its user and host (no address:
/// the simulation's rules name none).
pub fn asker<'a>(user: &'a str, host: &'a str) -> Asker<'a> {
    Asker {
        user,
        host,
        address: None,
        display: None,
    }
}

/// The kind of rule a refusal came from or a breach broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleKind {
    /// A `max` was reached (`policy_denied`).
    Max,
    /// Free seats are kept by a `reserve` (`no_seats_available`, with the
    /// core's reason naming the reserve).
    Reserve,
}

/// Classifies a refused checkout or activation.
pub fn refusal(err: &ClientError) -> Option<RuleKind> {
    match err {
        ClientError::Rejected {
            code: ErrorCode::PolicyDenied,
            ..
        } => Some(RuleKind::Max),
        ClientError::NoSeatsAvailable { message, .. } if message.contains(RESERVE_NAMED) => {
            Some(RuleKind::Reserve)
        }
        _ => None,
    }
}

/// One rule broken at one instant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Breach {
    pub kind: RuleKind,
    /// What was held against what the rule allows.
    pub what: String,
}

/// The rules of the feature that `held` (seats per asker, at one instant)
/// breaks, with the numbers, out of `total` seats (the nominal seats of the
/// feature's codes).
pub fn breaches(policy: &Policy, total: u64, held: &[(Asker<'_>, u32)]) -> Vec<Breach> {
    let (reserves, maxima) = policy.limits_held(FEATURE, held.iter().copied());
    let mut out = Vec::new();
    for (limit, holding) in &maxima {
        if *holding > u64::from(limit.seats) {
            out.push(Breach {
                kind: RuleKind::Max,
                what: format!(
                    "max \"{} {}\": those it names held {holding} seats",
                    limit.seats, limit.rule.text
                ),
            });
        }
    }
    if reserves.is_empty() {
        return out;
    }
    let all: u64 = held.iter().map(|(_, seats)| u64::from(*seats)).sum();
    let reserved_holders: u64 = reserves.iter().map(|(_, holding)| holding).sum();
    let others = all - reserved_holders;
    let counted = others
        + reserves
            .iter()
            .map(|(limit, holding)| (*holding).max(u64::from(limit.seats)))
            .sum::<u64>();
    if counted > total {
        let per_reserve: Vec<String> = reserves
            .iter()
            .map(|(limit, holding)| {
                format!(
                    "reserve \"{} {}\" held {holding}",
                    limit.seats, limit.rule.text
                )
            })
            .collect();
        out.push(Breach {
            kind: RuleKind::Reserve,
            what: format!(
                "others held {others}, {}: {counted} seats counted with each reserve's unused \
                 part, of {total}",
                per_reserve.join(", ")
            ),
        });
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use rand::SeedableRng;
    use tessera_core::policy::ClaimRefused;

    use super::*;
    use crate::scenario;

    /// The policy of a pool file of `seats` seats with `rules`, parsed by the core.
    pub(crate) fn policy(seats: u32, rules: &str) -> Policy {
        let key = tessera_core::VendorSecretKey::from_seed(scenario::VENDOR, [7; 32]).unwrap();
        let code = scenario::sign(&key, "app-1", seats, scenario::LEASE_S);
        let server = scenario::ServerSpec {
            id: "A".into(),
            host: "server-a".into(),
            rate_ppm: 0,
            hostid: None,
        };
        let text = scenario::pool_text(1, &[server], &None, &[code], rules);
        let (policy, nominal) = parse(&text);
        assert!(policy.counts(FEATURE));
        assert_eq!(nominal, u64::from(seats));
        policy
    }

    /// A reserve for the group and one for `dan`; a max for `eve` and one
    /// for the group.
    pub(crate) const RULES: &str = "[policy.groups]\ndesign = [\"ana\", \"ben\", \"cyd\"]\n\n\
        [policy.features.app]\nreserve = [\"2 group:design\", \"1 user:dan\"]\n\
        max = [\"1 user:eve\", \"3 group:design\"]\n\n";

    fn held_as<'a>(seats: &[(&'a str, u32)]) -> Vec<(Asker<'a>, u32)> {
        seats
            .iter()
            .map(|&(user, n)| (asker(user, "client-1"), n))
            .collect()
    }

    #[test]
    fn holdings_within_the_rules_break_none() {
        let p = policy(8, RULES);
        // 2 + 1 reserved, 5 for everyone: others 4, design 3 (one beyond
        // its reserve, from the general seats), dan none: 4 + 3 + 1 = 8.
        let within = held_as(&[("fox", 3), ("eve", 1), ("ana", 2), ("ben", 1)]);
        assert_eq!(breaches(&p, 8, &within), Vec::new());
        assert_eq!(breaches(&p, 8, &[]), Vec::new());
    }

    #[test]
    fn a_max_exceeded_is_reported_with_its_numbers() {
        let p = policy(20, RULES);
        let over = held_as(&[("eve", 1), ("fox", 1), ("eve", 1)]);
        let found = breaches(&p, 20, &over);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].kind, RuleKind::Max);
        assert!(
            found[0]
                .what
                .contains("max \"1 user:eve\": those it names held 2 seats"),
            "{}",
            found[0].what
        );
        // The group's max counts every member together.
        let group = held_as(&[("ana", 2), ("cyd", 2)]);
        let found = breaches(&p, 20, &group);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].what.contains("max \"3 group:design\""));
    }

    #[test]
    fn seats_taken_from_a_reserve_by_others_are_reported() {
        let p = policy(8, RULES);
        // Others hold 6 while design holds 1 and dan none: 6 + 2 + 1 = 9 of 8.
        let over = held_as(&[("fox", 3), ("eve", 1), ("ben", 1), ("dan-not", 2)]);
        let found = breaches(&p, 8, &over);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].kind, RuleKind::Reserve);
        assert!(
            found[0].what.contains(
                "others held 6, reserve \"2 group:design\" held 1, reserve \"1 user:dan\" held 0: \
                 9 seats counted"
            ) && found[0].what.ends_with("of 8"),
            "{}",
            found[0].what
        );
        // The same holdings fit once the codes carry a seat more.
        assert_eq!(breaches(&p, 9, &over), Vec::new());
    }

    /// Checks out `seats` seats one at a time as the final probe does: as
    /// a user no rule names, else as the users the reserves count, each
    /// judged by the core's own [`Policy::check_claim`]. Returns how many it got.
    fn fill(p: &Policy, seats: u32) -> u32 {
        let reserved = reserved_users(p);
        let others: Vec<String> = (0..=seats).map(|i| format!("probe-{i}")).collect();
        let mut held: Vec<(Asker, u32)> = Vec::new();
        for other in &others {
            let candidates = std::iter::once(other.as_str()).chain(reserved.iter().copied());
            let mut taken = false;
            for user in candidates {
                let new = (asker(user, "admin"), 1);
                if p.check_claim(FEATURE, seats, held.iter().copied(), new)
                    .is_ok()
                {
                    held.push(new);
                    taken = true;
                    break;
                }
            }
            if !taken {
                break;
            }
        }
        held.len() as u32
    }

    #[test]
    fn drawn_rules_parse_and_leave_every_seat_to_be_checked_out() {
        let mut rng = StdRng::seed_from_u64(5);
        for seats in [1, 2, 3, 9, 35, 180] {
            for _ in 0..50 {
                let rules = draw(&mut rng, seats);
                let p = policy(seats, &rules.text);
                assert!(
                    p.reserved_seats(FEATURE) <= u64::from(seats.div_ceil(2)),
                    "{}",
                    rules.text
                );
                assert_eq!(fill(&p, seats), seats, "{}", rules.text);
            }
        }
    }

    #[test]
    fn every_user_runs_programs_and_dan_fewest() {
        let mut rng = StdRng::seed_from_u64(9);
        let mut drawn = std::collections::BTreeMap::new();
        for _ in 0..2_000 {
            *drawn.entry(user_of(&mut rng)).or_insert(0) += 1;
        }
        assert_eq!(drawn.len(), USERS.len(), "{drawn:?}");
        let dan = drawn["dan"];
        assert!(
            drawn.iter().all(|(user, &n)| *user == "dan" || n > 2 * dan),
            "{drawn:?}"
        );
    }

    #[test]
    fn refusals_by_the_rules_are_told_apart() {
        let p = policy(3, RULES);
        let refused = |held: &[(&str, u32)], user| {
            let held = held_as(held);
            p.check_claim(FEATURE, 3, held.iter().copied(), (asker(user, "c"), 1))
                .unwrap_err()
        };
        // The core's reasons, as a server sends them.
        let ClaimRefused::Max(max) = refused(&[("eve", 1)], "eve") else {
            panic!("eve is over her max")
        };
        let max = ClientError::Rejected {
            code: ErrorCode::PolicyDenied,
            message: max,
        };
        assert_eq!(refusal(&max), Some(RuleKind::Max));
        let ClaimRefused::Reserved(reserved) = refused(&[], "fox") else {
            panic!("all 3 seats are reserved")
        };
        let reserved = ClientError::NoSeatsAvailable {
            feature: FEATURE.into(),
            message: format!("server-a:27000: {reserved} (no_seats_available)"),
        };
        assert_eq!(refusal(&reserved), Some(RuleKind::Reserve));
        let full = ClientError::NoSeatsAvailable {
            feature: FEATURE.into(),
            message: "server-a:27000: all 3 seats of `app` are in use".into(),
        };
        assert_eq!(refusal(&full), None);
        // Every seat held, each reserve's too: the core refuses as
        // `Reserved`, but no reserve kept a seat from the asker.
        let ClaimRefused::Reserved(full) = refused(&[("ana", 2), ("dan", 1)], "fox") else {
            panic!("all 3 seats are held")
        };
        let full = ClientError::NoSeatsAvailable {
            feature: FEATURE.into(),
            message: format!("server-a:27000: {full} (no_seats_available)"),
        };
        assert_eq!(refusal(&full), None);
    }
}
