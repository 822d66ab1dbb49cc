//! The reliability round: a seat counted once across the pool, a denial
//! instead of a timeout, and a check-in that wakes a waiting checkout.

use std::time::{Duration, Instant};

use tessera_client::{ClientError, SeatGuard};
use tessera_testkit::{metric, row, PoolSpec};

use super::{assert_all_held, client, held_pool, start_pool, HeldPool};

/// Seats in use over the whole pool, each server counting its own grants.
async fn in_use_everywhere(pool: &tessera_testkit::Pool, live: &[usize]) -> Option<u32> {
    let mut total = 0;
    for &i in live {
        let status = pool.status(i).await?;
        total += row(&status, &pool.servers[i].id).1?;
    }
    Some(total)
}

/// 100 clients hold seats while the leader is killed and restarted three
/// times. Clients of a killed server fail over (their grant converted on the
/// next server), the killed server comes back with its old copies from its
/// store, and clients may fail back. Once every client checks in, no copy
/// may be left anywhere: the lease is 30 s, so only the pool's own clean-up
/// can bring the count to 0 in time, and the whole hard limit can be checked
/// out again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_ghost_seats_after_three_leader_kills() {
    const CLIENTS: usize = 100;
    const SEATS: u32 = 300;
    let HeldPool {
        mut pool, seats, ..
    } = held_pool(
        PoolSpec {
            seats: SEATS,
            lease_s: 30,
            heartbeat_s: 1,
            ..PoolSpec::default()
        },
        CLIENTS,
    )
    .await;
    let all = [0, 1, 2];
    for round in 0..3 {
        let leader = pool.wait_leader(&all).await;
        let killed = pool.servers[leader].id.clone();
        pool.kill(leader);
        let survivors: Vec<usize> = all.iter().copied().filter(|&i| i != leader).collect();
        pool.wait_leader(&survivors).await;
        // Every client of the killed server holds its seat elsewhere.
        let deadline = Instant::now() + tessera_testkit::PATIENCE;
        while seats.iter().any(|s| s.server_id() == killed) {
            assert!(
                Instant::now() < deadline,
                "round {round}: clients never moved"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        pool.spawn(leader);
        pool.wait_serving(leader).await;
        // A few heartbeats with the old copies back on the returning server.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    assert_all_held(&seats);
    for seat in seats {
        seat.release().await.expect("check in");
    }
    let released_at = Instant::now();
    let deadline = released_at + Duration::from_secs(10);
    loop {
        let in_use = in_use_everywhere(&pool, &all).await;
        if in_use == Some(0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{in_use:?} seats still in use 10 s after every client checked in (lease 30 s)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "pool-wide in use 0 after {} ms",
        released_at.elapsed().as_millis()
    );
    // The whole hard limit again: each server gives its whole allocation.
    // Allocations may still be moving back after the check-ins, so a server
    // that cannot give what the leader last listed is asked again with the
    // next status, until the patience runs out.
    let deadline = Instant::now() + tessera_testkit::PATIENCE;
    let (taken, _held) = loop {
        match whole_hard_limit(&pool, &all).await {
            Ok(taken) => break taken,
            Err(err) if Instant::now() < deadline => {
                println!("retrying the whole hard limit: {err}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(err) => panic!("{err}"),
        }
    };
    assert_eq!(taken, SEATS, "the allocations add up to the hard limit");
}

/// Checks out every server's whole allocation as the leader lists it: the
/// seats taken and their guards, or which server could not give its share.
async fn whole_hard_limit(
    pool: &tessera_testkit::Pool,
    all: &[usize],
) -> Result<(u32, Vec<SeatGuard>), String> {
    let leader = pool.wait_leader(all).await;
    let status = pool.wait_status(leader, "reports in", |_| true).await;
    let mut taken = 0;
    let mut held = Vec::new();
    for &i in all {
        let (allocation, _, _) = row(&status, &pool.servers[i].id);
        if allocation == 0 {
            continue;
        }
        let mut config = tessera_client::ClientConfig::new([pool.servers[i].address.clone()]);
        config.client_id = format!("all-{i}");
        config.tls = tessera_client::ClientTls::PoolCa(pool.ca_pem());
        config.trust = tessera_client::Trust::Vendor(vec![pool.vendor_key()]);
        let seat = tessera_client::Client::new(config)
            .expect("config")
            .checkout("app", "1.0", allocation)
            .await
            .map_err(|err| {
                format!(
                    "server {} could not give its {allocation} seats: {err}",
                    pool.servers[i].id
                )
            })?;
        taken += allocation;
        held.push(seat);
    }
    Ok((taken, held))
}

/// Requests of every size from 1 to twice the hard limit, against a pool of
/// three whose load is skewed onto one server: every answer is a grant or a
/// `no_seats_available` denial, never "no answer in time".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_size_gets_a_grant_or_a_denial_in_time() {
    const SEATS: u32 = 12;
    let pool = start_pool(PoolSpec {
        seats: SEATS,
        distribution: "A = 4\nB = 4\nC = 4\n",
        // Reports a second apart, so the leader's view lags; a server's own
        // wait for borrowed seats longer than the clients wait.
        config_extra: "[timing]\nquota_report_interval_ms = 1000\nquota_lease_ms = 3000\n\
                       borrow_wait_ms = 5000\n",
        ..PoolSpec::default()
    })
    .await;
    // Skewed: A's clients hold more than A has, so A borrows.
    let mut held = Vec::new();
    for n in 0..6 {
        held.push(
            client(&pool, 0, &format!("skew{n}"))
                .checkout("app", "1.0", 1)
                .await
                .expect("skewed load"),
        );
    }
    let free = SEATS - 6;
    for count in 1..=2 * SEATS {
        // The grants of a round are held through it: the servers asked later
        // in the round know of them only from reports, one interval behind,
        // so the leader may count on seats that are gone, and the server
        // asked must still answer in time.
        let mut granted = Vec::new();
        for first in 0..3 {
            let mut config = tessera_client::ClientConfig::new(pool.addresses());
            config.servers.rotate_left(first);
            config.client_id = format!("ask{count}-{first}");
            config.tls = tessera_client::ClientTls::PoolCa(pool.ca_pem());
            config.trust = tessera_client::Trust::Vendor(vec![pool.vendor_key()]);
            config.request_timeout = Duration::from_secs(1);
            let asked = Instant::now();
            let answer = tessera_client::Client::new(config)
                .expect("config")
                .checkout("app", "1.0", count)
                .await;
            let took = asked.elapsed();
            match answer {
                Ok(seat) => granted.push(seat),
                Err(ClientError::NoSeatsAvailable { .. }) => {}
                Err(ClientError::Rejected {
                    code: tessera_proto::ErrorCode::CountAboveLimit,
                    ..
                }) if count > SEATS => {}
                Err(err) => panic!(
                    "{count} seats asked first of server {}: neither a grant nor a denial \
                     after {took:?}: {err}",
                    pool.servers[first].id
                ),
            }
        }
        // A denial may come from a view one report behind (seats checked
        // in moments ago look taken); a grant never exceeds what is free.
        let taken: u32 = granted.iter().map(|s| s.count()).sum();
        assert!(taken <= free, "{taken} seats granted with {free} free");
        for seat in granted {
            seat.release().await.expect("check in");
        }
    }
    drop(held);
}

/// A pool in which one follower, the short server, has no seats left and
/// the leader believes the other follower, the donor, can spare two when it
/// can spare one: the donor's client took a seat right after the donor
/// reported, and reports are two seconds apart. The leader's own seats are
/// all held. The short server's own wait for borrowed seats is 20 s; it
/// holds two seats, one of them for client `x1`.
struct ShortPool {
    pool: tessera_testkit::Pool,
    short: usize,
    x1: SeatGuard,
    _held: Vec<SeatGuard>,
}

fn client_of(
    pool: &tessera_testkit::Pool,
    i: usize,
    name: &str,
    wait: Duration,
) -> tessera_client::Client {
    let mut config = tessera_client::ClientConfig::new([pool.servers[i].address.clone()]);
    config.client_id = name.to_string();
    config.request_timeout = wait;
    config.tls = tessera_client::ClientTls::PoolCa(pool.ca_pem());
    config.trust = tessera_client::Trust::Vendor(vec![pool.vendor_key()]);
    tessera_client::Client::new(config).expect("config")
}

async fn short_pool() -> ShortPool {
    let pool = start_pool(PoolSpec {
        seats: 6,
        distribution: "A = 2\nB = 2\nC = 2\n",
        // No borrowing ahead of need: seats move only for the checkout.
        extra: "[borrowing.app]\nthreshold_percent = 100\n",
        config_extra: "[timing]\nquota_report_interval_ms = 2000\nquota_lease_ms = 6000\n\
                       borrow_wait_ms = 20000\n",
        ..PoolSpec::default()
    })
    .await;
    let leader = pool.wait_leader(&[0, 1, 2]).await;
    let followers: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let (short, donor) = (followers[0], followers[1]);
    let long = Duration::from_secs(30);
    let take = |i: usize, name: &str, count: u32| {
        let client = client_of(&pool, i, name, long);
        async move {
            client
                .checkout("app", "1.0", count)
                .await
                .expect("a seat to hold")
        }
    };
    let mut held = vec![take(leader, "l", 2).await, take(short, "x2", 1).await];
    let x1 = take(short, "x1", 1).await;
    let donor_id = pool.servers[donor].id.clone();
    pool.wait_status(leader, "the donor just reported", |s| {
        s.servers
            .iter()
            .any(|p| p.id == donor_id && p.last_contact_ms.is_some_and(|ms| ms < 300))
    })
    .await;
    held.push(take(donor, "y", 1).await);
    ShortPool {
        pool,
        short,
        x1,
        _held: held,
    }
}

/// The SDK says how long it waits; B's wait for seats that will not all
/// come ends inside it, with a denial, and B keeps no grant for the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_for_seats_ends_inside_the_clients_wait() {
    let short = short_pool().await;
    let asked = Instant::now();
    let answer = client_of(&short.pool, short.short, "z", Duration::from_secs(1))
        .checkout("app", "1.0", 2)
        .await;
    let took = asked.elapsed();
    match answer {
        Err(ClientError::NoSeatsAvailable { message, .. }) => {
            println!("denied after {took:?}: {message}")
        }
        other => panic!("after {took:?}, not a denial: {other:?}"),
    }
    let status = short.pool.status(short.short).await.expect("status");
    assert!(
        status.grants.iter().all(|g| g.client_id != "z"),
        "the short server holds a grant for a client that gave up: {:?}",
        status.grants
    );
}

/// A checkout that waits for borrowed seats is woken by a check-in on its
/// own server, not only by a change of the pool's allocations: with a wait
/// of 20 s, it is granted as soon as the seat comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_in_wakes_a_checkout_waiting_for_seats() {
    let ShortPool {
        pool,
        short,
        x1,
        _held: _still_held,
    } = short_pool().await;
    let asked = Instant::now();
    let waiting = tokio::spawn({
        let client = client_of(&pool, short, "z", Duration::from_secs(30));
        async move { client.checkout("app", "1.0", 2).await }
    });
    // The donor gives the one seat it can spare: one of the two.
    let short_id = pool.servers[short].id.clone();
    pool.wait_status(short, "the donor's seat moved", |s| {
        row(s, &short_id).0 == 3
    })
    .await;
    if waiting.is_finished() {
        let answer = waiting.await.expect("task");
        panic!("the checkout did not wait for the second seat: {answer:?}");
    }
    x1.release().await.expect("check in");
    let seat = waiting
        .await
        .expect("task")
        .expect("granted after the check-in");
    let took = asked.elapsed();
    assert_eq!(seat.count(), 2);
    assert!(
        took < Duration::from_secs(10),
        "granted after {took:?}: woken by the wait's end, not by the check-in"
    );
}

/// The surviving follower's quota lease outlasts a leader change with
/// margin: the longest gap between two of its renewals, through two leader
/// kills and then a leader stopped with SIGSTOP, leaves at least a third of
/// the default `quota_lease_ms` (2.5 s) to spare, so it never refuses a
/// renewal for lack of quorum and its clients keep their seats. (With the
/// former 1.5 s lease and no early report, the SIGSTOP case took 1.3 s.) A follower reports to the new
/// leader as soon as it knows it, giving up a report the stopped leader
/// will never answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_change_costs_no_quota_on_a_live_follower() {
    let mut pool = start_pool(PoolSpec::default()).await;
    let all = [0, 1, 2];
    let mut gaps = Vec::new();
    for round in 0..3 {
        let leader = pool.wait_leader(&all).await;
        let watched = (leader + 1) % 3;
        // The last time the leader hangs (SIGSTOP): reports to it get no
        // answer at all. (Last, because a stopped server's own longest gap
        // includes its stop; a killed one starts its count again.)
        let stopped = round == 2;
        if stopped {
            assert!(pool.signal(leader, libc::SIGSTOP), "SIGSTOP");
        } else {
            pool.kill(leader);
        }
        let survivors: Vec<usize> = all.iter().copied().filter(|&i| i != leader).collect();
        pool.wait_leader(&survivors).await;
        // Two more renewals under the new leader.
        tokio::time::sleep(Duration::from_millis(700)).await;
        let metrics = pool.metrics(watched).await;
        let gap = metric(&metrics, "tessera_quota_renewal_gap_max_ms").expect("the gap metric");
        gaps.push((pool.servers[watched].id.clone(), gap));
        if stopped {
            assert!(pool.signal(leader, libc::SIGCONT), "SIGCONT");
        } else {
            pool.spawn(leader);
        }
        pool.wait_serving(leader).await;
    }
    println!("longest quota renewal gaps through a leader kill: {gaps:?}");
    let lease_ms = tessera_server::config::Timing::default().quota_lease_ms;
    for (server, gap) in gaps {
        assert!(
            gap * 3 < lease_ms * 2,
            "server {server} went {gap} ms without a quota renewal: less than a third of its \
             {lease_ms} ms quota lease to spare"
        );
    }
}

/// A gauge of server `i`'s `/metrics`; `None` while it does not answer.
async fn gauge(pool: &tessera_testkit::Pool, i: usize, name: &str) -> Option<u64> {
    metric(&pool.metrics(i).await, name)
}

/// Check-ins faster than one report carries (at most
/// `SUPERSEDED_PER_MESSAGE_MAX` notices each): the pool hears of them in
/// back-to-back reports, so the seats they keep cooling are issued again
/// within about one report interval, not one interval per message's worth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_check_ins_reaches_the_pool_within_a_report_interval() {
    const GRANTS: usize = 5 * tessera_proto::SUPERSEDED_PER_MESSAGE_MAX;
    const INTERVAL: Duration = Duration::from_millis(1_500);
    let pool = start_pool(PoolSpec {
        seats: 3 * GRANTS as u32,
        distribution: "A = 2000\nB = 2000\nC = 2000\n",
        // Long leases: a cooling seat lapses only with its grant's lease.
        lease_s: 300,
        config_extra: "[timing]\nquota_report_interval_ms = 1500\nquota_lease_ms = 4500\n",
        ..PoolSpec::default()
    })
    .await;
    pool.wait_leader(&pool.all()).await;
    let pool = std::sync::Arc::new(pool);
    // Checkouts then check-ins on A, from 16 tasks.
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..16 {
        let pool = pool.clone();
        tasks.spawn(async move {
            for n in (task..GRANTS).step_by(16) {
                let client = format!("burst{n}");
                let (status, grant) = pool.checkout(0, &client, 1).await;
                assert_eq!(status, 200, "checkout {n}: {grant}");
                let checkin = serde_json::json!({
                    "grant_id": grant["grant_id"], "client_id": client, "proof": grant["proof"],
                });
                let response = pool
                    .http
                    .post(&pool.servers[0].address, "/v1/checkin")
                    .json(&checkin)
                    .send()
                    .await
                    .expect("an answer to a check-in");
                assert_eq!(response.status().as_u16(), 200, "check-in {n}");
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("a task of checkouts and check-ins");
    }
    let checked_in = Instant::now();
    // Without back-to-back reports, the last of the notices would leave A
    // four intervals later; with them, at the next report, within one.
    loop {
        let queued = gauge(&pool, 0, "tessera_superseded_queued").await;
        let cooling = gauge(&pool, 0, "tessera_seats_cooling").await;
        if queued == Some(0) && cooling == Some(0) {
            break;
        }
        assert!(
            checked_in.elapsed() < INTERVAL * 5 / 2,
            "{GRANTS} check-ins: {queued:?} notices queued and {cooling:?} seats cooling \
             on A {:?} after the last",
            checked_in.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Every seat of A is A's to issue again.
    let status = pool.status(0).await.expect("A's status");
    assert_eq!(row(&status, "A").1, Some(0), "nothing in use on A");
}
