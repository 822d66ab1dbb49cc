//! The SDK against a fake pool on loopback: checkout fall-through, heartbeats,
//! fail-over, loss of the seat, and check-in.

mod support;

use std::time::Duration;

use support::{config, dead_address, eventually, Mode, Pool};
use tessera_client::{Client, ClientError, ErrorCode, Instant, SeatState};

/// Short enough for fast tests, with the usual ratio of lease to heartbeat.
const LEASE_MS: u64 = 300;
const HEARTBEAT_INTERVAL_MS: u64 = 100;

async fn pool(ids: &[&str]) -> Pool {
    Pool::start(ids, LEASE_MS, HEARTBEAT_INTERVAL_MS).await
}

fn client(addresses: &[String]) -> Client {
    Client::new(config(addresses)).expect("valid configuration")
}

#[tokio::test]
async fn checkout_is_served_by_the_first_server() {
    let pool = pool(&["a", "b"]).await;
    let client = client(&[pool.address("a"), pool.address("b")]);

    let seat = client.checkout("cad", "2.1", 3).await.expect("a seat");

    assert_eq!(seat.server_id(), "a");
    assert_eq!((seat.feature(), seat.count()), ("cad", 3));
    assert!(seat.is_valid());
    assert!(pool.server("a").holds(&seat.grant_id()));
    assert_eq!(pool.server("b").checkouts(), 0);
}

#[tokio::test]
async fn a_dead_first_server_passes_the_checkout_to_the_next() {
    let pool = pool(&["b"]).await;
    let client = client(&[dead_address(), pool.address("b")]);

    let seat = client.checkout("cad", "2.1", 1).await.expect("a seat");

    assert_eq!(seat.server_id(), "b");
}

/// Each row: how server `a` refuses a checkout, and what the program gets
/// (`None`: server `b` serves it, which shows that `a`'s answer passed it on).
#[tokio::test]
async fn checkout_refusals_either_pass_to_the_next_server_or_end_it() {
    let cases = [
        (ErrorCode::NoQuorum, None),
        (ErrorCode::GracePeriod, None),
        (ErrorCode::Internal, None),
        (ErrorCode::NoSeatsAvailable, None),
        (ErrorCode::UnknownFeature, Some(ErrorCode::UnknownFeature)),
        (
            ErrorCode::VersionNotLicensed,
            Some(ErrorCode::VersionNotLicensed),
        ),
        (ErrorCode::CountAboveLimit, Some(ErrorCode::CountAboveLimit)),
        (
            ErrorCode::LicenseNotServed,
            Some(ErrorCode::LicenseNotServed),
        ),
        (ErrorCode::InvalidField, Some(ErrorCode::InvalidField)),
    ];
    let pool = pool(&["a", "b"]).await;
    let client = client(&[pool.address("a"), pool.address("b")]);
    for (refusal, expected) in cases {
        pool.server("a").set_checkout(Mode::Refuse(refusal));
        let checkouts_of_b = pool.server("b").checkouts();

        let result = client.checkout("cad", "2.1", 1).await;

        match (result, expected) {
            (Ok(seat), None) => assert_eq!(seat.server_id(), "b", "after {refusal}"),
            (Err(error), Some(code)) => {
                assert_eq!(error.code(), Some(code), "after {refusal}: {error}");
                assert!(error.to_string().contains("a refuses"), "{error}");
                assert_eq!(
                    pool.server("b").checkouts(),
                    checkouts_of_b,
                    "after {refusal}"
                );
            }
            (result, expected) => panic!("after {refusal}: got {result:?}, expected {expected:?}"),
        }
    }
}

#[tokio::test]
async fn checkout_reports_what_the_whole_pool_said() {
    let pool = pool(&["a", "b"]).await;
    let dead = dead_address();
    let client = client(&[pool.address("a"), dead.clone(), pool.address("b")]);

    pool.server("a")
        .set_checkout(Mode::Refuse(ErrorCode::NoSeatsAvailable));
    pool.server("b")
        .set_checkout(Mode::Refuse(ErrorCode::NoSeatsAvailable));
    let error = client.checkout("cad", "2.1", 1).await.unwrap_err();
    assert!(
        matches!(&error, ClientError::NoSeatsAvailable { feature, .. } if feature == "cad"),
        "{error:?}"
    );
    assert_eq!(
        pool.server("b").checkouts(),
        1,
        "every server must be asked"
    );

    pool.server("a")
        .set_checkout(Mode::Refuse(ErrorCode::NoQuorum));
    pool.server("b")
        .set_checkout(Mode::Refuse(ErrorCode::GracePeriod));
    let error = client.checkout("cad", "2.1", 1).await.unwrap_err();
    assert!(matches!(error, ClientError::NoQuorum { .. }), "{error:?}");
    assert!(error.is_retryable());

    let nobody = client_for_dead_pool(&dead).checkout("cad", "2.1", 1).await;
    match nobody {
        Err(ClientError::NoServerReachable { tried, .. }) => assert_eq!(tried, [dead]),
        other => panic!("expected NoServerReachable, got {other:?}"),
    }
}

fn client_for_dead_pool(dead: &str) -> Client {
    client(&[dead.to_string()])
}

#[tokio::test]
async fn a_seat_is_valid_from_the_send_time_not_the_answer_time() {
    let pool = Pool::start(&["a"], 2_000, 500).await;
    let answer_delay = Duration::from_millis(150);
    pool.server("a").set_answer_delay(answer_delay);
    let client = client(&[pool.address("a")]);

    let before_send = Instant::now();
    let seat = client.checkout("cad", "2.1", 1).await.expect("a seat");
    let after_answer = Instant::now();

    let lease = Duration::from_millis(2_000);
    assert!(seat.valid_until() >= before_send + lease);
    // Measured from the answer it would be at least `after_answer + lease`
    // minus the time between the answer's arrival and checkout's return.
    assert!(seat.valid_until() <= after_answer - answer_delay + lease);
}

#[tokio::test]
async fn the_guard_heartbeats_its_server() {
    let pool = pool(&["a", "b"]).await;
    let client = client(&[pool.address("a"), pool.address("b")]);
    let seat = client.checkout("cad", "2.1", 1).await.expect("a seat");
    let first_valid_until = seat.valid_until();

    eventually("three heartbeats reached a", || {
        pool.server("a").heartbeats() >= 3
    })
    .await;

    assert!(seat.is_valid());
    assert!(seat.valid_until() > first_valid_until);
    assert_eq!(seat.server_id(), "a");
    assert_eq!(pool.server("b").heartbeats(), 0);
}

#[tokio::test]
async fn the_guard_fails_over_in_priority_order_after_its_server() {
    let pool = pool(&["a", "b", "c"]).await;
    // Only b is configured: the rest of the pool is learned from the grant.
    let client = client(&[pool.address("b")]);
    let seat = client.checkout("cad", "2.1", 1).await.expect("a seat");
    assert_eq!(seat.server_id(), "b");
    let grant_id = seat.grant_id();
    assert_eq!(seat.grant().proof, support::proof_of(&grant_id));
    let mut events = seat.subscribe();

    pool.server("b")
        .set_heartbeat(Mode::Refuse(ErrorCode::NoQuorum));
    eventually("the seat moved to c", || seat.server_id() == "c").await;

    assert_eq!(
        pool.server("a").heartbeats(),
        0,
        "c comes after b, before a"
    );
    assert!(seat.grant().converted);
    assert!(pool.server("c").holds(&seat.grant_id()));
    assert!(seat.is_valid());
    events.changed().await.expect("the guard is alive");
    assert!(matches!(&*events.borrow(), SeatState::Held { server_id, .. } if server_id == "c"));

    pool.server("c")
        .set_heartbeat(Mode::Refuse(ErrorCode::NoSeatsAvailable));
    eventually("the seat wrapped around to a", || seat.server_id() == "a").await;
    assert!(seat.is_valid());

    // Every heartbeat, renewal and conversion alike, and the check-in
    // carried the proof the checkout answered.
    seat.release().await.expect("checked in");
    assert!(!pool.server("a").holds(&grant_id));
    for id in ["a", "b", "c"] {
        assert_eq!(pool.server(id).proofs_refused(), 0, "server {id}");
    }
}

/// A server that takes the request and never answers (stopped with
/// SIGSTOP) gets only its share of the seat's remaining time: the next server
/// renews the seat before it expires, though the request timeout is longer.
#[tokio::test]
async fn a_server_that_hangs_does_not_cost_the_seat() {
    let pool = pool(&["a", "b"]).await;
    let mut config = config(&[pool.address("a"), pool.address("b")]);
    config.request_timeout = Duration::from_secs(10);
    let client = Client::new(config).expect("valid configuration");
    let seat = client.checkout("cad", "2.1", 1).await.expect("a seat");
    assert_eq!(seat.server_id(), "a");

    pool.server("a").set_answer_delay(Duration::from_secs(10));
    eventually("the seat moved to b", || seat.server_id() == "b").await;
    assert!(seat.is_valid());
    tokio::time::sleep(Duration::from_millis(3 * LEASE_MS)).await;
    assert!(seat.is_valid(), "{:?}", seat.state());
}

#[tokio::test]
async fn the_seat_is_lost_only_when_every_server_refuses_until_it_expires() {
    let pool = pool(&["a", "b"]).await;
    let client = client(&[pool.address("a"), pool.address("b")]);
    let seat = client.checkout("cad", "2.1", 1).await.expect("a seat");
    let mut events = seat.subscribe();

    pool.server("a")
        .set_heartbeat(Mode::Refuse(ErrorCode::NoQuorum));
    pool.server("b")
        .set_heartbeat(Mode::Refuse(ErrorCode::Internal));
    let valid_until = seat.valid_until();

    let lost = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            events.changed().await.expect("the guard is alive");
            if let SeatState::Lost { reason } = &*events.borrow() {
                return reason.clone();
            }
        }
    })
    .await
    .expect("the seat must be reported lost");

    assert!(Instant::now() >= valid_until, "lost before it expired");
    assert!(!seat.is_valid());
    assert!(
        lost.contains("a refuses") && lost.contains("b refuses"),
        "{lost}"
    );
    assert!(pool.server("b").heartbeats() >= 1, "b must have been tried");
}

#[tokio::test]
async fn a_definitive_refusal_loses_the_seat_at_once() {
    // A long lease: the seat is reported lost long before it would expire.
    let pool = Pool::start(&["a", "b"], 10_000, 50).await;
    let client = client(&[pool.address("a"), pool.address("b")]);
    let seat = client.checkout("cad", "2.1", 1).await.expect("a seat");

    pool.server("a")
        .set_heartbeat(Mode::Refuse(ErrorCode::LicenseNotServed));
    eventually("the seat is lost", || !seat.is_valid()).await;

    assert!(Instant::now() < seat.valid_until());
    match seat.state() {
        SeatState::Lost { reason } => assert!(reason.contains("license_not_served"), "{reason}"),
        state => panic!("expected Lost, got {state:?}"),
    }
    assert_eq!(pool.server("b").heartbeats(), 0);
}

#[tokio::test]
async fn dropping_the_guard_checks_the_seat_in() {
    let pool = pool(&["a"]).await;
    let client = client(&[pool.address("a")]);
    let seat = client.checkout("cad", "2.1", 2).await.expect("a seat");
    let grant_id = seat.grant_id();

    drop(seat);

    eventually("a saw the check-in", || pool.server("a").checkins() == 1).await;
    assert!(!pool.server("a").holds(&grant_id));
}

#[tokio::test]
async fn release_checks_in_on_the_server_holding_the_seat_now() {
    let pool = pool(&["a", "b"]).await;
    let client = client(&[pool.address("a"), pool.address("b")]);
    let seat = client.checkout("cad", "2.1", 1).await.expect("a seat");
    pool.server("a")
        .set_heartbeat(Mode::Refuse(ErrorCode::NoQuorum));
    eventually("the seat moved to b", || seat.server_id() == "b").await;
    let grant_id = seat.grant_id();

    seat.release().await.expect("checked in");

    assert!(!pool.server("b").holds(&grant_id));
    assert_eq!(pool.server("a").checkins(), 0, "the holder answered first");
}

#[tokio::test]
async fn checkin_by_id_releases_seats_or_says_nobody_holds_them() {
    // Heartbeats far apart: one landing between the two check-ins would make
    // `a` convert it into a new grant.
    let pool = Pool::start(&["a", "b"], 60_000, 30_000).await;
    let client = client(&[pool.address("a"), pool.address("b")]);
    let seat = client.checkout("cad", "2.1", 4).await.expect("a seat");

    let (grant_id, proof) = (seat.grant_id(), seat.grant().proof);
    let refused = client.checkin(&grant_id, "not-the-proof").await;
    assert_eq!(
        refused.map_err(|e| e.code()),
        Err(Some(ErrorCode::GrantProofInvalid))
    );
    assert_eq!(client.checkin(&grant_id, proof.as_str()).await, Ok(4));
    assert_eq!(
        client.checkin(&grant_id, proof.as_str()).await,
        Err(ClientError::UnknownGrant)
    );
    assert_eq!(
        pool.server("b").checkins(),
        2,
        "b was asked after a refused the wrong proof and after a said unknown"
    );
}

#[tokio::test]
async fn status_comes_from_the_first_server_that_answers() {
    let pool = pool(&["b"]).await;
    let client = client(&[dead_address(), pool.address("b")]);

    let status = client.status().await.expect("a status");

    assert_eq!(status.server.id, "b");
}

#[test]
fn dropping_a_guard_after_its_runtime_is_gone_does_not_panic() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let (pool, seat) = runtime.block_on(async {
        let pool = pool(&["a"]).await;
        let seat = client(&[pool.address("a")])
            .checkout("cad", "2.1", 1)
            .await
            .expect("a seat");
        (pool, seat)
    });
    drop(runtime);

    // Nothing can check the seat in now; it lapses with its lease.
    drop(seat);
    drop(pool);
}
