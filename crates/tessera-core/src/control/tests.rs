use super::*;
use crate::license::tests::{test_key, unsigned};
use crate::LicenseCode;

fn pool_text(sequence: u64, servers: &[&str], codes: &[(&str, &str, u32)], dist: &str) -> String {
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

/// Installs the pool file of `servers` and `codes` at `sequence`.
fn install(
    state: &mut ControlState,
    sequence: u64,
    servers: &[&str],
    codes: &[(&str, &str, u32)],
    dist: &str,
) -> ControlOutcome {
    state.apply(&ControlCommand::InstallPoolFile {
        text: pool_text(sequence, servers, codes, dist),
    })
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

/// A pool re-formed from the survivors of a lost majority parks every
/// seat; holders get theirs back by borrowing the parked seats.
#[test]
fn a_recovered_pool_starts_with_every_seat_parked() {
    let text = pool_text(
        2,
        &["A", "B"],
        &[("c1", "cad", 10)],
        "[distribution.cad]\nA = 6\nB = 4\n",
    );
    let mut state = ControlState::default();
    let outcome = state.apply(&ControlCommand::RecoverPool { text: text.clone() });
    assert_eq!(outcome, ControlOutcome::Installed { sequence: 2 });
    assert_eq!(
        alloc(&state, "cad"),
        (
            pairs(&[("A", 0), ("B", 0)]),
            0,
            pairs(&[(LOST_MAJORITY, 10)])
        )
    );
    // Only as the first command.
    let again = state.apply(&ControlCommand::RecoverPool { text });
    assert!(matches!(again, ControlOutcome::Refused { .. }), "{again:?}");
    let moved = state.apply(&ControlCommand::Borrow {
        feature: "cad".into(),
        recipient: "B".into(),
        source: BorrowSource::Parked(LOST_MAJORITY.into()),
        seats: 3,
    });
    assert_eq!(moved, ControlOutcome::Moved { seats: 3 });
    assert_eq!(
        alloc(&state, "cad"),
        (
            pairs(&[("A", 0), ("B", 3)]),
            0,
            pairs(&[(LOST_MAJORITY, 7)])
        )
    );
    // A later pool file keeps the parked seats parked.
    let next = pool_text(3, &["A", "B"], &[("c1", "cad", 10)], "");
    state.apply(&ControlCommand::InstallPoolFile { text: next });
    assert_eq!(
        alloc(&state, "cad"),
        (
            pairs(&[("A", 0), ("B", 3)]),
            0,
            pairs(&[(LOST_MAJORITY, 7)])
        )
    );
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
    assert!(matches!(outcome, ControlOutcome::Refused { reason } if reason.contains("pool `q`")));
    let garbage = state.apply(&ControlCommand::InstallPoolFile {
        text: "sequence = ".into(),
    });
    assert!(matches!(garbage, ControlOutcome::Refused { .. }));
    assert_eq!(state, before, "a refused command changes nothing");
}

#[test]
fn live_allocations_are_kept_added_seats_go_to_the_free_pool_removed_servers_are_parked() {
    let mut state = ControlState::default();
    install(
        &mut state,
        1,
        &["A", "B", "C"],
        &[("c1", "app", 100)],
        "[distribution.app]\nA = 40\nB = 30\nC = 30\n",
    );
    // D joins, C leaves, an additive code brings 20 seats; no distribution keeps what servers hold.
    let abd = ["A", "B", "D"];
    let both = [("c1", "app", 100), ("c2", "app", 20), ("n1", "new", 9)];
    assert_eq!(
        install(&mut state, 2, &abd, &both, ""),
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
    let grow = "[distribution.app]\nA = 40\nD = 15\n";
    let outcome = install(&mut state, 3, &abd, &both, grow);
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
    let greedy = "[distribution.app]\nA = 40\nD = 21\n";
    let outcome = install(&mut state, 4, &abd, &both, greedy);
    assert!(
        matches!(&outcome, ControlOutcome::Refused { reason } if reason.contains("asks for 61 seats, but only 60")),
        "{outcome:?}"
    );
    // Removing the additive code needs its 20 seats in the free pool: only 5 are.
    let shrink = [("c1", "app", 100), ("n1", "new", 9)];
    let outcome = install(&mut state, 5, &abd, &shrink, "");
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
        ..FeatureAllocation::default()
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

fn three_servers(dist: &str) -> ControlState {
    let mut state = ControlState::default();
    let outcome = state.apply(&ControlCommand::InstallPoolFile {
        text: pool_text(1, &["A", "B", "C"], &[("c1", "app", 100)], dist),
    });
    assert!(matches!(outcome, ControlOutcome::Installed { .. }));
    state
}

fn borrow(feature: &str, to: &str, source: BorrowSource, seats: u32) -> ControlCommand {
    ControlCommand::Borrow {
        feature: feature.into(),
        recipient: to.into(),
        source,
        seats,
    }
}

#[test]
fn borrows_take_from_the_free_pool_a_down_server_or_parked_seats() {
    let mut state = three_servers("[distribution.app]\nA = 30\nB = 30\nC = 30\n");
    assert_eq!(
        state.apply(&borrow("app", "A", BorrowSource::FreePool, 15)),
        ControlOutcome::Moved { seats: 10 },
        "only what the free pool holds"
    );
    assert_eq!(
        state.apply(&borrow("app", "A", BorrowSource::DownServer("C".into()), 5)),
        ControlOutcome::Moved { seats: 5 }
    );
    assert_eq!(
        alloc(&state, "app"),
        (pairs(&[("A", 45), ("B", 30), ("C", 25)]), 0, vec![])
    );
    let moved = &state.allocation("app").unwrap().moved;
    assert_eq!(moved["A"].borrows, 2);
    assert_eq!(moved["A"].seats_in, 15);
    assert_eq!(moved["C"].seats_out, 5);
    for refused in [
        borrow("app", "A", BorrowSource::FreePool, 1),
        borrow("app", "A", BorrowSource::DownServer("A".into()), 1),
        borrow("app", "Z", BorrowSource::FreePool, 1),
        borrow("nope", "A", BorrowSource::FreePool, 1),
        borrow("app", "A", BorrowSource::Parked("C".into()), 1),
    ] {
        let before = state.clone();
        assert!(matches!(
            state.apply(&refused),
            ControlOutcome::Refused { .. }
        ));
        assert_eq!(state, before);
    }
    // C leaves: its 25 seats are parked until the leader reassigns them.
    state.apply(&ControlCommand::InstallPoolFile {
        text: pool_text(2, &["A", "B"], &[("c1", "app", 100)], ""),
    });
    assert_eq!(
        state.apply(&borrow("app", "B", BorrowSource::Parked("C".into()), 100)),
        ControlOutcome::Moved { seats: 25 }
    );
    assert_eq!(
        alloc(&state, "app"),
        (pairs(&[("A", 45), ("B", 55)]), 0, vec![])
    );
}

/// A hand-over moves exactly one grant's seats from the silent server to
/// the one its client failed over to, voids the silent server's pending
/// requests, and moves nothing when that server has fewer seats left.
#[test]
fn a_hand_over_moves_exactly_the_grants_seats_or_nothing() {
    let mut state = three_servers("[distribution.app]\nA = 30\nB = 30\nC = 30\n");
    let hand_over = |from: &str, to: &str, seats: u32| {
        let source = BorrowSource::HandOver {
            server: from.into(),
            grant_id: "g1".into(),
        };
        borrow("app", to, source, seats)
    };
    state.apply(&ControlCommand::RequestRelease {
        feature: "app".into(),
        donor: "C".into(),
        recipient: "A".into(),
        seats: 3,
    });
    assert_eq!(
        state.apply(&hand_over("C", "B", 2)),
        ControlOutcome::Moved { seats: 2 }
    );
    assert_eq!(
        alloc(&state, "app"),
        (pairs(&[("A", 30), ("B", 32), ("C", 28)]), 10, vec![])
    );
    assert!(state.allocation("app").unwrap().requests.is_empty());
    assert_eq!(state.allocation("app").unwrap().moved["B"].hand_overs, 1);
    for refused in [
        hand_over("C", "B", 29),
        hand_over("B", "B", 1),
        hand_over("Z", "B", 1),
    ] {
        let before = state.clone();
        assert!(matches!(
            state.apply(&refused),
            ControlOutcome::Refused { .. }
        ));
        assert_eq!(state, before);
    }
}

#[test]
fn a_live_server_gives_seats_only_by_its_own_release() {
    let mut state = three_servers("[distribution.app]\nA = 40\nB = 30\nC = 30\n");
    let outcome = state.apply(&ControlCommand::RequestRelease {
        feature: "app".into(),
        donor: "B".into(),
        recipient: "A".into(),
        seats: 10,
    });
    let ControlOutcome::Requested { request_id } = outcome else {
        panic!("{outcome:?}")
    };
    let app = state.allocation("app").unwrap();
    assert_eq!(
        app.reserved("B"),
        10,
        "B holds the asked seats back at once"
    );
    assert_eq!(app.reserved("A"), 0);
    // B has 26 in use: it can spare 4.
    let answers = app.answers("app", "B", 26);
    let release = |seats, allocation_before| ControlCommand::Release {
        feature: "app".into(),
        request_id,
        seats,
        allocation_before,
        loosened_before: 0,
    };
    assert_eq!(answers, vec![release(4, 30)]);
    // More seats than were asked for, and an answer for an allocation B
    // no longer has.
    for (what, command) in [("too many", release(11, 30)), ("stale", release(4, 31))] {
        assert!(
            matches!(state.apply(&command), ControlOutcome::Refused { .. }),
            "{what}: {command:?}"
        );
    }
    assert_eq!(state.apply(&answers[0]), ControlOutcome::Moved { seats: 4 });
    assert!(
        matches!(state.apply(&answers[0]), ControlOutcome::Refused { .. }),
        "a repeated answer changes nothing"
    );
    let app = state.allocation("app").unwrap();
    assert_eq!(app.reserved("B"), 0, "the request closed with the move");
    assert_eq!(
        alloc(&state, "app"),
        (pairs(&[("A", 44), ("B", 26), ("C", 30)]), 0, vec![])
    );
    // An unanswered request can be cancelled.
    let ControlOutcome::Requested { request_id } = state.apply(&ControlCommand::RequestRelease {
        feature: "app".into(),
        donor: "C".into(),
        recipient: "A".into(),
        seats: 3,
    }) else {
        panic!()
    };
    let cancel = ControlCommand::CancelRelease {
        feature: "app".into(),
        request_id,
    };
    assert_eq!(state.apply(&cancel), ControlOutcome::Cancelled);
    assert!(matches!(
        state.apply(&cancel),
        ControlOutcome::Refused { .. }
    ));
    assert_eq!(state.allocation("app").unwrap().reserved("C"), 0);
}

#[test]
fn a_new_distribution_fills_from_the_free_pool_and_drains_as_seats_return() {
    let mut state = three_servers("[distribution.app]\nA = 40\nB = 30\nC = 30\n");
    let outcome = state.apply(&ControlCommand::InstallPoolFile {
        text: pool_text(
            2,
            &["A", "B", "C"],
            &[("c1", "app", 100)],
            "[distribution.app]\nA = 20\nB = 50\nC = 30\n",
        ),
    });
    assert!(matches!(outcome, ControlOutcome::Installed { .. }));
    let app = state.allocation("app").unwrap().clone();
    assert_eq!(app.reserved("A"), 20, "A stops issuing above its target");
    assert_eq!(
        app.allocation_of("A"),
        40,
        "but keeps its seats until it gives them"
    );
    // A has 35 in use: it drains 5 now.
    let answers = app.answers("app", "A", 35);
    assert_eq!(answers.len(), 1);
    assert_eq!(state.apply(&answers[0]), ControlOutcome::Moved { seats: 5 });
    assert_eq!(
        alloc(&state, "app"),
        (pairs(&[("A", 35), ("B", 35), ("C", 30)]), 0, vec![])
    );
    // Then the rest as its seats return.
    let answers = state.allocation("app").unwrap().answers("app", "A", 10);
    assert_eq!(
        state.apply(&answers[0]),
        ControlOutcome::Moved { seats: 15 }
    );
    let app = state.allocation("app").unwrap();
    assert_eq!(
        alloc(&state, "app"),
        (pairs(&[("A", 20), ("B", 50), ("C", 30)]), 0, vec![])
    );
    assert!(app.targets.is_empty(), "reached targets are cleared");
    assert_eq!(app.moved["B"].seats_in, 20);
    // Reinstalling the same distribution later sets no targets again.
    state.apply(&borrow(
        "app",
        "C",
        BorrowSource::DownServer("B".into()),
        10,
    ));
    state.apply(&ControlCommand::InstallPoolFile {
        text: pool_text(
            3,
            &["A", "B", "C"],
            &[("c1", "app", 100)],
            "[distribution.app]\nA = 20\nB = 50\nC = 30\n",
        ),
    });
    assert!(state.allocation("app").unwrap().targets.is_empty());
    assert_eq!(
        alloc(&state, "app"),
        (pairs(&[("A", 20), ("B", 40), ("C", 40)]), 0, vec![])
    );
}

#[test]
fn a_drain_is_refused_once_the_target_rose_and_fell_again_since_the_answer() {
    // The proptest case that found it: B answers with 2 in use against a
    // target of 3; the target rises to 4 (B issues 2 more), then falls to
    // 3. Allocation and target are as they were, but B holds 4.
    let mut state = three_servers("[distribution.app]\nA = 30\nB = 30\nC = 30\n");
    let distribute = |state: &mut ControlState, sequence: u64, b: u32| {
        state.apply(&ControlCommand::InstallPoolFile {
            text: pool_text(
                sequence,
                &["A", "B", "C"],
                &[("c1", "app", 100)],
                &format!("[distribution.app]\nA = 0\nB = {b}\n"),
            ),
        })
    };
    assert!(matches!(
        distribute(&mut state, 2, 3),
        ControlOutcome::Installed { .. }
    ));
    let stale = state.allocation("app").unwrap().answers("app", "B", 2);
    assert_eq!(stale.len(), 1);
    distribute(&mut state, 3, 4);
    distribute(&mut state, 4, 3);
    let app = state.allocation("app").unwrap();
    assert_eq!((app.allocation_of("B"), app.targets["B"]), (30, 3));
    assert!(
        matches!(state.apply(&stale[0]), ControlOutcome::Refused { .. }),
        "a drain computed before the target rose applied"
    );
    // Answered again, with the 4 seats B now holds, it gives 26.
    let fresh = state.allocation("app").unwrap().answers("app", "B", 4);
    assert_eq!(state.apply(&fresh[0]), ControlOutcome::Moved { seats: 26 });
    assert_eq!(state.allocation("app").unwrap().allocation_of("B"), 4);
}

/// A snapshot is taken whole only if it keeps every invariant an applied
/// state keeps; a leader (or a disk) that sends one breaking them is refused.
#[test]
fn snapshots_that_break_the_invariants_are_refused() {
    let mut state = three_servers("[distribution.app]\nA = 30\nB = 30\nC = 30\n");
    state.apply(&ControlCommand::RequestRelease {
        feature: "app".into(),
        donor: "A".into(),
        recipient: "B".into(),
        seats: 2,
    });
    let from_snapshot = |json: &serde_json::Value| {
        serde_json::from_value::<ControlState>(json.clone())
            .unwrap()
            .restored()
    };
    let good = serde_json::to_value(&state).unwrap();
    assert_eq!(from_snapshot(&good).unwrap(), state);
    let empty = serde_json::to_value(ControlState::default()).unwrap();
    assert_eq!(from_snapshot(&empty).unwrap(), ControlState::default());
    type Edit = fn(&mut serde_json::Value);
    let cases: [(&str, Edit, &str); 9] = [
        (
            "a seat made",
            |s| s["allocations"]["app"]["free_pool"] = 11.into(),
            "add to 101, not 100",
        ),
        (
            "a seat lost",
            |s| s["allocations"]["app"]["servers"]["A"] = 29.into(),
            "add to 99, not 100",
        ),
        (
            "more seats than the codes",
            |s| {
                s["allocations"]["app"]["nominal_seats"] = 101.into();
                s["allocations"]["app"]["free_pool"] = 11.into();
            },
            "counts 101 seats but its codes carry 100",
        ),
        (
            "a feature without codes",
            |s| {
                s["allocations"]["cam"] = s["allocations"]["app"].clone();
            },
            "features [app, cam]",
        ),
        (
            "a feature without allocation",
            |s| {
                s["allocations"] = serde_json::json!({});
            },
            "the pool file's codes name [app]",
        ),
        (
            "a server not in the pool",
            |s| {
                s["allocations"]["app"]["servers"]["D"] = 0.into();
            },
            "allocations of servers [A, B, C, D]",
        ),
        (
            "a request id not yet given",
            |s| s["next_request_id"] = 0.into(),
            "request 0 is not below",
        ),
        (
            "allocations without a pool file",
            |s| s["pool_text"] = serde_json::Value::Null,
            "without an installed pool file",
        ),
        (
            "a pool file that does not parse",
            |s| s["pool_text"] = "pool_id = ".into(),
            "not valid TOML",
        ),
    ];
    for (name, edit, expected) in cases {
        let mut tampered = good.clone();
        edit(&mut tampered);
        let err = from_snapshot(&tampered)
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(expected),
            "{name}: `{err}` should contain `{expected}`"
        );
    }
}

/// Commands arrive from peers (in appends and in `/v1/peer/command`): an
/// unknown field is refused, not ignored.
#[test]
fn commands_with_unknown_fields_are_refused() {
    let command = ControlCommand::CancelRelease {
        feature: "app".into(),
        request_id: 3,
    };
    let mut json = serde_json::to_value(&command).unwrap();
    assert_eq!(
        serde_json::from_value::<ControlCommand>(json.clone()).unwrap(),
        command
    );
    json["CancelRelease"]["seats"] = 1.into();
    let err = serde_json::from_value::<ControlCommand>(json)
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field `seats`"), "{err}");
}

#[test]
fn a_revoked_run_is_recorded_once_kept_in_snapshots_and_bounded() {
    let mut state = three_servers("");
    let revoke = |instance: &str| ControlCommand::RevokeRun {
        instance: instance.into(),
    };
    assert_eq!(
        state.apply(&revoke("p1.abc")),
        ControlOutcome::Revoked { newly: true }
    );
    assert_eq!(
        state.apply(&revoke("p1.abc")),
        ControlOutcome::Revoked { newly: false }
    );
    assert!(state.is_revoked("p1.abc") && !state.is_revoked("p2.def"));
    // A server that catches up from a snapshot knows the revocation too.
    let mut restored: ControlState =
        serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();
    restored.restore_parsed().unwrap();
    assert!(restored.is_revoked("p1.abc"));
    assert_eq!(restored, state);
    for n in 1..REVOKED_RUNS_MAX {
        state.apply(&revoke(&format!("run{n}")));
    }
    let ControlOutcome::Refused { reason } = state.apply(&revoke("one-too-many")) else {
        panic!("the 10,001st revocation is refused");
    };
    assert!(
        reason.contains("10000 runs are revoked already"),
        "{reason}"
    );
    assert!(!state.is_revoked("one-too-many"));
}

mod model {
    //! The consent rules against a model of clients: whatever order the
    //! commands commit in, stale or repeated, no server's allocation ever
    //! drops below the seats its clients hold, and no seat is created or
    //! destroyed.
    use super::*;
    use proptest::prelude::*;

    const SERVERS: [&str; 3] = ["A", "B", "C"];

    #[derive(Clone, Debug)]
    enum Op {
        Issue(usize),
        Return(usize),
        Answer(usize),
        Commit(usize),
        Request(usize, usize, u32),
        FromFreePool(usize, u32),
        Distribute(u32, u32),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..3usize).prop_map(Op::Issue),
            2 => (0..3usize).prop_map(Op::Return),
            2 => (0..3usize).prop_map(Op::Answer),
            3 => (0..16usize).prop_map(Op::Commit),
            1 => (0..3usize, 0..3usize, 1..20u32).prop_map(|(a, b, n)| Op::Request(a, b, n)),
            1 => (0..3usize, 1..10u32).prop_map(|(a, n)| Op::FromFreePool(a, n)),
            1 => (0..40u32, 0..40u32).prop_map(|(a, b)| Op::Distribute(a, b)),
        ]
    }

    /// Runs `ops` against three servers and the pool's `codes`, each server
    /// serving `served` seats of them; checks after every step.
    fn run(ops: Vec<Op>, codes: &[(&str, &str, u32)], served: u32) -> Result<(), TestCaseError> {
        let mut state = ControlState::default();
        state.apply(&ControlCommand::InstallPoolFile {
            text: pool_text(
                1,
                &SERVERS,
                codes,
                "[distribution.app]\nA = 30\nB = 30\nC = 30\n",
            ),
        });
        let mut in_use = [0u32; 3];
        let mut queue: Vec<ControlCommand> = Vec::new();
        let mut sequence = 1;
        for op in ops {
            let app = state.allocation("app").unwrap().clone();
            match op {
                Op::Issue(s) => {
                    // As the issuer: its cap less what it holds back.
                    let server = SERVERS[s];
                    let free = app.cap(server, served).saturating_sub(app.reserved(server));
                    if in_use[s] < free {
                        in_use[s] += 1;
                    }
                }
                Op::Return(s) => in_use[s] = in_use[s].saturating_sub(1),
                Op::Answer(s) => {
                    let server = SERVERS[s];
                    let held = app.nominal_in_use(server, in_use[s], served);
                    queue.extend(app.answers("app", server, held));
                }
                Op::Commit(k) => {
                    if !queue.is_empty() {
                        // Commands may commit late, out of order, or twice.
                        let command = queue[k % queue.len()].clone();
                        if k % 3 != 0 {
                            queue.remove(k % queue.len());
                        }
                        state.apply(&command);
                    }
                }
                Op::Request(a, b, n) => {
                    state.apply(&ControlCommand::RequestRelease {
                        feature: "app".into(),
                        donor: SERVERS[a].into(),
                        recipient: SERVERS[b].into(),
                        seats: n,
                    });
                }
                Op::FromFreePool(s, n) => {
                    state.apply(&borrow("app", SERVERS[s], BorrowSource::FreePool, n));
                }
                Op::Distribute(a, b) => {
                    sequence += 1;
                    state.apply(&ControlCommand::InstallPoolFile {
                        text: pool_text(
                            sequence,
                            &SERVERS,
                            codes,
                            &format!("[distribution.app]\nA = {a}\nB = {b}\n"),
                        ),
                    });
                }
            }
            let app = state.allocation("app").unwrap();
            prop_assert!(
                app.check_invariants("app").is_ok(),
                "{:?}",
                app.check_invariants("app")
            );
            prop_assert!(
                state.check_invariants().is_ok(),
                "{:?}",
                state.check_invariants()
            );
            for (s, server) in SERVERS.iter().enumerate() {
                prop_assert!(
                    in_use[s] <= app.cap(server, served),
                    "server {server}: {} in use, allocation {} (cap {})",
                    in_use[s],
                    app.allocation_of(server),
                    app.cap(server, served)
                );
            }
            let held: u32 = in_use.iter().sum();
            prop_assert!(held <= served, "{held} seats held, {served} served");
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn allocation_never_drops_below_what_clients_hold(ops in proptest::collection::vec(op(), 1..120)) {
            run(ops, &[("c1", "app", 100)], 100)?;
        }

        /// A pool of three masters: each serves only its own host's slot
        /// code of 30, so each issues one seat per three of allocation, and
        /// the pool never holds more than 30 however allocation moves.
        #[test]
        fn a_pool_serving_part_of_its_codes_never_holds_more_than_it_serves(
            ops in proptest::collection::vec(op(), 1..160)
        ) {
            run(ops, &[("m1", "app", 30), ("m2", "app", 30), ("m3", "app", 30)], 30)?;
        }
    }
}

fn activate(license_id: &str, ticket: &str, device: &str, from: &str) -> ControlCommand {
    ControlCommand::Activate {
        feature: "cad".into(),
        license_id: license_id.into(),
        ticket: ticket.into(),
        device: device.into(),
        seats: 1,
        from: from.into(),
        expires_unix_ms: 1_000,
        devices_max: 3,
        allocation: 0,
    }
}

fn refused_because(outcome: ControlOutcome, part: &str) {
    match outcome {
        ControlOutcome::Refused { reason } | ControlOutcome::Limited { reason, .. } => {
            assert!(reason.contains(part), "{reason}")
        }
        other => panic!("expected a refusal naming {part:?}, got {other:?}"),
    }
}

/// Seed 004: a temporary license takes seats out of the asking server's
/// allocation into no server's; three devices per ticket, not a fourth
/// nor the same twice; only the newest device extends (the others are
/// withdrawn); a return or an expiry gives the seats to the free pool,
/// and on to a server below its target. Every state keeps the seats.
#[test]
fn temporary_licenses_leave_every_allocation_and_come_back_to_the_free_pool() {
    let mut state = ControlState::default();
    install(&mut state, 1, &["A", "B"], &[("c1", "cad", 10)], "");
    assert_eq!(
        alloc(&state, "cad"),
        (pairs(&[("A", 5), ("B", 5)]), 0, vec![])
    );
    for (i, device) in ["pc1", "pc2", "pc3"].iter().enumerate() {
        let outcome = state.apply(&activate(&format!("t{i}"), "alice", device, "A"));
        assert_eq!(
            outcome,
            ControlOutcome::Temporary {
                serial: i as u64 + 1
            }
        );
    }
    assert_eq!(
        alloc(&state, "cad"),
        (pairs(&[("A", 2), ("B", 5)]), 0, vec![])
    );
    refused_because(
        state.apply(&activate("t9", "alice", "pc4", "B")),
        "on 3 devices",
    );
    refused_because(
        state.apply(&activate("t9", "alice", "pc2", "B")),
        "extend it",
    );
    refused_because(
        state.apply(&ControlCommand::Activate {
            feature: "cad".into(),
            license_id: "t9".into(),
            ticket: "bob".into(),
            device: "pc1".into(),
            seats: 6,
            from: "B".into(),
            expires_unix_ms: 1_000,
            devices_max: 3,
            allocation: 0,
        }),
        "fewer than the 6 asked",
    );
    let extend = |license: &str, device: &str| ControlCommand::Extend {
        feature: "cad".into(),
        license_id: license.into(),
        device: device.into(),
        expires_unix_ms: 2_000,
    };
    refused_because(state.apply(&extend("t0", "pc1")), "withdrawn");
    refused_because(state.apply(&extend("t2", "pc1")), "another device");
    assert_eq!(
        state.apply(&extend("t2", "pc3")),
        ControlOutcome::Temporary { serial: 3 }
    );
    let a = state.allocation("cad").unwrap();
    assert_eq!(a.temporaries["t2"].expires_unix_ms, 2_000);
    assert_eq!(a.temporary_seats(), 3);

    // A pool file with more servers carries the licenses over.
    install(&mut state, 2, &["A", "B", "C"], &[("c1", "cad", 10)], "");
    assert_eq!(state.allocation("cad").unwrap().temporaries.len(), 3);
    let give = |license: &str, device: &str| ControlCommand::Return {
        feature: "cad".into(),
        license_id: license.into(),
        device: device.into(),
    };
    refused_because(state.apply(&give("t0", "pc2")), "another device");
    assert_eq!(
        state.apply(&give("t0", "pc1")),
        ControlOutcome::Moved { seats: 1 }
    );
    refused_because(state.apply(&give("t0", "pc1")), "returned or expired");
    assert_eq!(
        state.apply(&ControlCommand::Expire {
            feature: "cad".into(),
            license_ids: vec!["t1".into(), "t2".into(), "gone".into()],
        }),
        ControlOutcome::Moved { seats: 2 }
    );
    assert_eq!(
        alloc(&state, "cad"),
        (pairs(&[("A", 2), ("B", 5), ("C", 0)]), 3, vec![])
    );
    state.check_invariants().unwrap();
    // The state travels (snapshots) with its licenses.
    let json = serde_json::to_string(&state).unwrap();
    let back: ControlState = serde_json::from_str(&json).unwrap();
    assert_eq!(back.allocation("cad"), state.allocation("cad"));
}

fn claim_of(grant_id: &str, user: &str, server: &str, force: bool) -> ControlCommand {
    ControlCommand::Claim {
        feature: "cad".into(),
        grant_id: grant_id.into(),
        claim: crate::policy::Claim {
            user: user.into(),
            host: "pc".into(),
            address: None,
            seats: 1,
            server: server.into(),
            renewal: 0,
        },
        force,
    }
}

/// The claims of a feature with `reserve` and `max` rules: judged alike
/// by every server from the log, moved (not doubled) by a fail-over,
/// forgotten only for the server that holds them, and gone with the rules.
#[test]
fn claims_keep_reserves_and_maxima_across_the_pool() {
    let policy = "[policy.groups]\ndesign = [\"alice\"]\n[policy.features.cad]\n\
                  reserve = [\"1 group:design\"]\nmax = [\"1 user:bob\"]\n";
    let codes = [("c1", "cad", 3)];
    let mut state = ControlState::default();
    install(&mut state, 1, &["A", "B"], &codes, policy);
    let claims = |state: &ControlState| -> Vec<(String, String)> {
        let a = state.allocation("cad").unwrap();
        a.claims
            .iter()
            .map(|(id, c)| (id.clone(), c.server.clone()))
            .collect()
    };
    let counted =
        |outcome: ControlOutcome| assert_eq!(outcome, ControlOutcome::Claims { count: 1 });
    counted(state.apply(&claim_of("g1", "bob", "A", false)));
    refused_because(
        state.apply(&claim_of("g2", "bob", "B", false)),
        "the pool's policy allows them 1 (max \"1 user:bob\"",
    );
    counted(state.apply(&claim_of("g3", "carol", "B", false)));
    refused_because(
        state.apply(&claim_of("g4", "dave", "A", false)),
        "1 for \"group:design\" (reserve \"1 group:design\"",
    );
    // A temporary license counts too.
    refused_because(
        state.apply(&activate("t1", "dave", "laptop", "A")),
        "kept by the pool's policy",
    );
    counted(state.apply(&claim_of("g5", "alice", "A", false)));
    // Bob's grant fails over to B: moved, not counted twice.
    counted(state.apply(&claim_of("g1", "bob", "B", false)));
    // A stale forget from A leaves it; B's forgets it.
    assert_eq!(
        state.apply(&ControlCommand::Unclaim {
            feature: "cad".into(),
            server: "A".into(),
            grant_ids: vec!["g1".into(), "g5".into()],
        }),
        ControlOutcome::Claims { count: 1 }
    );
    assert_eq!(
        claims(&state),
        vec![("g1".into(), "B".into()), ("g3".into(), "B".into())]
    );
    // Seats a program held already are recorded whatever the rules say.
    counted(state.apply(&claim_of("g6", "bob", "A", true)));
    let snapshot = serde_json::to_string(&state).unwrap();
    let restored: ControlState = serde_json::from_str(&snapshot).unwrap();
    assert_eq!(restored.restored().unwrap(), state);
    // Rules gone: no claims.
    install(&mut state, 2, &["A", "B"], &codes, "");
    assert!(claims(&state).is_empty());
    assert_eq!(
        state.apply(&claim_of("g7", "bob", "A", false)),
        ControlOutcome::Claims { count: 0 }
    );
    assert!(claims(&state).is_empty());
}

/// A claim follows the copy its program renews: a fail-over's move names
/// the newest heartbeat the new copy answered, and a copy left behind,
/// renewed earlier, neither takes the claim back nor forgets it. Without
/// the renewal, the server of a copy left behind took the claim, dropped
/// its copy, and forgot the claim while the program held the grant
/// elsewhere, so a max was exceeded (simulation seed 46).
#[test]
fn a_claim_moves_only_to_a_copy_renewed_as_late_or_later() {
    let policy = "[policy.features.cad]\nmax = [\"1 user:bob\"]\n";
    let mut state = ControlState::default();
    install(&mut state, 1, &["A", "B", "C"], &[("c1", "cad", 3)], policy);
    let moved = |server: &str, renewal: u64| {
        let mut command = claim_of("g1", "bob", server, true);
        if let ControlCommand::Claim { claim, .. } = &mut command {
            claim.renewal = renewal;
        }
        command
    };
    let holder = |state: &ControlState| {
        let claim = &state.allocation("cad").unwrap().claims["g1"];
        (claim.server.clone(), claim.renewal)
    };
    let counted = ControlOutcome::Claims { count: 1 };
    assert_eq!(state.apply(&claim_of("g1", "bob", "A", false)), counted);
    // Converted on C at heartbeat 7, then on B at heartbeat 5 of a copy
    // left behind: the claim stays with C's.
    assert_eq!(state.apply(&moved("C", 7)), counted);
    assert_eq!(state.apply(&moved("B", 5)), counted);
    assert_eq!(holder(&state), ("C".into(), 7));
    // B's copy is dropped: its forget leaves C's claim.
    let unclaim = |server: &str| ControlCommand::Unclaim {
        feature: "cad".into(),
        server: server.into(),
        grant_ids: vec!["g1".into()],
    };
    assert_eq!(
        state.apply(&unclaim("B")),
        ControlOutcome::Claims { count: 0 }
    );
    // The program comes back to A at heartbeat 9: the claim follows.
    assert_eq!(state.apply(&moved("A", 9)), counted);
    assert_eq!(holder(&state), ("A".into(), 9));
    assert_eq!(
        state.apply(&unclaim("C")),
        ControlOutcome::Claims { count: 0 }
    );
    // Still one claim: a second grant of bob's is refused by the max.
    refused_because(
        state.apply(&claim_of("g2", "bob", "B", false)),
        "the pool's policy allows them 1",
    );
    // States from before the renewal was recorded read it as 0.
    let json = serde_json::to_string(&state).unwrap();
    let old = json.replace(",\"renewal\":9", "");
    assert_ne!(old, json);
    let back: ControlState = serde_json::from_str(&old).unwrap();
    assert_eq!(back.allocation("cad").unwrap().claims["g1"].renewal, 0);
}

fn wait(ticket: &str, client: &str, until: i64) -> ControlCommand {
    ControlCommand::Wait {
        feature: "cad".into(),
        waiter: Waiter {
            ticket: ticket.into(),
            client_id: client.into(),
            user: "u".into(),
            host: "h".into(),
            seats: 1,
            since_unix_ms: 0,
            until_unix_ms: until,
        },
    }
}

/// The queue: first come first served, a program asking again keeps its
/// place (and only that program), leavers go, and snapshots keep it.
#[test]
fn the_queue_keeps_its_order_and_each_programs_place() {
    let mut state = ControlState::default();
    install(&mut state, 1, &["A", "B"], &[("c1", "cad", 1)], "");
    let position = |outcome: ControlOutcome| match outcome {
        ControlOutcome::Queue { position } => position,
        other => panic!("{other:?}"),
    };
    assert_eq!(position(state.apply(&wait("t1", "p1", 10))), 1);
    assert_eq!(position(state.apply(&wait("t2", "p2", 10))), 2);
    assert_eq!(position(state.apply(&wait("t3", "p3", 10))), 3);
    // Asking again keeps the place and the later time, never an earlier one.
    assert_eq!(position(state.apply(&wait("t2", "p2", 30))), 2);
    assert_eq!(position(state.apply(&wait("t2", "p2", 20))), 2);
    assert_eq!(
        state.allocation("cad").unwrap().waiters[1].until_unix_ms,
        30
    );
    refused_because(state.apply(&wait("t2", "intruder", 99)), "another program");
    assert_eq!(
        position(state.apply(&ControlCommand::LeaveQueue {
            feature: "cad".into(),
            tickets: vec!["t1".into(), "gone".into()],
        })),
        1
    );
    let order: Vec<&str> = state
        .allocation("cad")
        .unwrap()
        .waiters
        .iter()
        .map(|w| w.ticket.as_str())
        .collect();
    assert_eq!(order, ["t2", "t3"]);
    let restored: ControlState =
        serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();
    assert_eq!(restored.restored().unwrap(), state);
    // A new pool file keeps the queue.
    install(&mut state, 2, &["A", "B"], &[("c1", "cad", 2)], "");
    assert_eq!(state.allocation("cad").unwrap().waiters.len(), 2);
}
