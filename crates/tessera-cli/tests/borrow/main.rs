//! License balancing and live admin changes (seed 002), end to end: real
//! `tessera server` processes on loopback, driven over HTTP and through the
//! `tessera admin` command.

use std::path::Path;
use std::time::{Duration, Instant};

use tessera_proto::{DistributionRow, StatusResponse};
use tessera_testkit::{CodeSpec, Pool, PoolSpec, PATIENCE};

const TESSERA: &str = env!("CARGO_BIN_EXE_tessera");

async fn start_pool(spec: PoolSpec<'_>) -> Pool {
    Pool::start(Path::new(TESSERA), spec).await
}

/// A pool of three whose seats no test here outlasts (lease 30 s, heartbeat
/// 10 s), with this `[distribution.app]` (empty: even thirds) and more pool
/// file text, such as a `[borrowing.app]` section.
async fn long_lease_pool(distribution: &str, extra: &str) -> Pool {
    start_pool(PoolSpec {
        distribution,
        extra,
        lease_s: 30,
        heartbeat_s: 10,
        ..PoolSpec::default()
    })
    .await
}

fn rows(status: &StatusResponse) -> Vec<DistributionRow> {
    status
        .features
        .iter()
        .find(|f| f.feature == "app")
        .expect("feature app")
        .servers
        .clone()
}

fn own_row(status: &StatusResponse) -> DistributionRow {
    rows(status)
        .into_iter()
        .find(|r| r.server_id == status.server.id)
        .expect("own row")
}

fn allocations(status: &StatusResponse) -> Vec<u32> {
    rows(status).iter().map(|r| r.allocation).collect()
}

fn free_pool(status: &StatusResponse) -> u32 {
    status
        .features
        .iter()
        .find(|f| f.feature == "app")
        .expect("feature app")
        .free_pool
}

/// Checks out `n` seats on server `i`, one per client `TAG-k`; returns
/// the grants as answered (with their proofs).
async fn fill(pool: &Pool, i: usize, n: u32, tag: &str) -> Vec<serde_json::Value> {
    let mut grants = Vec::new();
    for k in 0..n {
        let (code, body) = pool.checkout(i, &format!("{tag}-{k}"), 1).await;
        if code != 200 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            for j in 0..pool.servers.len() {
                eprintln!("--- log of {}:\n{}", pool.servers[j].id, pool.log(j));
                if let Some(s) = pool.status(j).await {
                    eprintln!("--- status of {}: {:?}", pool.servers[j].id, s.features[0]);
                }
            }
        }
        assert_eq!(code, 200, "seat {k} on {}: {body}", pool.servers[i].id);
        grants.push(body);
    }
    grants
}

/// Checks `grant` (as answered to client `client`) in on server `i`.
async fn check_in(pool: &Pool, i: usize, grant: &serde_json::Value, client: &str) {
    let response = pool
        .http
        .post(&pool.servers[i].address, "/v1/checkin")
        .json(&serde_json::json!({
            "grant_id": grant["grant_id"], "client_id": client, "proof": grant["proof"],
        }))
        .send()
        .await
        .expect("checkin");
    assert!(response.status().is_success(), "check-in on {i}");
}

/// Seed 002 claim 2: B at 25 of 30 is above its 80% threshold and borrows a
/// batch from the free pool, so it never runs out on the way to 30.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_above_its_threshold_borrows_before_it_runs_out() {
    let pool = long_lease_pool("A = 30\nB = 30\nC = 30\n", "[borrowing.app]\nbatch = 5\n").await;
    fill(&pool, 1, 24, "b").await;
    let status = pool.status(1).await.expect("status");
    assert_eq!(
        own_row(&status).allocation,
        30,
        "at 24 of 30 (80%) no borrow yet"
    );
    fill(&pool, 1, 1, "b25").await;
    let status = pool
        .wait_status(1, "B borrowed a batch at 25 of 30", |s| {
            own_row(s).allocation == 35
        })
        .await;
    assert_eq!(free_pool(&status), 5, "the batch came from the free pool");
    fill(&pool, 1, 4, "b26").await;
    let status = pool.status(1).await.expect("status");
    let b = own_row(&status);
    assert_eq!(b.in_use, Some(29));
    assert!(b.allocation >= 35, "B at 29 holds {} seats", b.allocation);
    assert!(b.borrows >= 1 && b.seats_in >= 5, "{b:?}");
    let leader = pool.wait_leader(&[0, 1, 2]).await;
    let status = pool.status(leader).await.expect("status");
    let total = allocations(&status).iter().sum::<u32>() + free_pool(&status);
    assert_eq!(total, 100, "no seat created or destroyed");
}

/// Every client on one server: all 100 seats are usable through it, taken
/// from the leader's and the other follower's spare with their consent, none
/// stranded; the 101st is denied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skewed_load_uses_every_seat_through_one_server() {
    let pool = long_lease_pool("", "[borrowing.app]\nbatch = 10\n").await;
    let started = Instant::now();
    fill(&pool, 2, 100, "c").await;
    let took = started.elapsed();
    let (code, body) = pool.checkout(2, "c-101", 1).await;
    assert_eq!(code, 409, "the 101st seat: {body}");
    assert_eq!(body["error"]["code"], "no_seats_available");
    for i in 0..3 {
        pool.wait_status(i, "C holds all 100 seats", |s| {
            allocations(s) == vec![0, 0, 100]
        })
        .await;
    }
    let status = pool.status(2).await.expect("status");
    let lent: u64 = rows(&status).iter().map(|r| r.seats_out).sum();
    assert_eq!(lent, 66, "A and B gave all their seats");
    println!("100 seats through one server in {took:?}");
    let metrics = pool
        .http
        .get(&pool.servers[2].address, "/metrics")
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    let moved_in = metrics
        .lines()
        .find_map(|l| l.strip_prefix("tessera_seats_moved_in_total{feature=\"app\",server=\"C\"} "))
        .expect("moved-in metric for C");
    assert_eq!(moved_in, "67", "{metrics}");
}

/// Clients on every server at once ask for more than the pool has: servers
/// borrow from each other concurrently, exactly the hard limit is granted,
/// and every server ends with allocations + free pool = the hard limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_borrows_neither_create_nor_destroy_seats() {
    let pool = std::sync::Arc::new(
        long_lease_pool("A = 20\nB = 30\nC = 40\n", "[borrowing.app]\nbatch = 3\n").await,
    );
    let mut tasks = Vec::new();
    for server in 0..3 {
        for worker in 0..4 {
            let pool = pool.clone();
            tasks.push(tokio::spawn(async move {
                let mut granted = 0u32;
                for k in 0..10 {
                    let (code, body) = pool
                        .checkout(server, &format!("{server}-{worker}-{k}"), 1)
                        .await;
                    match code {
                        200 => granted += 1,
                        409 => assert_eq!(body["error"]["code"], "no_seats_available"),
                        other => panic!("unexpected {other}: {body}"),
                    }
                }
                granted
            }));
        }
    }
    let mut granted = 0;
    for task in tasks {
        granted += task.await.expect("worker");
    }
    assert_eq!(granted, 100, "120 asked, the hard limit granted");
    for i in 0..3 {
        let status = pool
            .wait_status(i, "no request pending", |s| {
                s.features[0].pending_requests == 0
            })
            .await;
        let total = allocations(&status).iter().sum::<u32>() + free_pool(&status);
        assert_eq!(total, 100, "server {i}: {status:#?}");
    }
}

/// A donor gives only seats no client holds: B full, C asks; nothing moves
/// from B, the request is cancelled, and C is denied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_follower_gives_seats_only_with_its_consent() {
    let pool = long_lease_pool("A = 0\nB = 50\nC = 50\n", "").await;
    let leader = pool.wait_leader(&[0, 1, 2]).await;
    // Whether or not B's report shows it full when C asks, B gives nothing
    // its clients hold.
    let b_grants = fill(&pool, 1, 50, "b").await;
    fill(&pool, 2, 50, "c").await;
    let (code, body) = pool.checkout(2, "c-51", 1).await;
    assert_eq!(code, 409, "{body}");
    let status = pool
        .wait_status(leader, "no request left pending", |s| {
            s.features[0].pending_requests == 0
        })
        .await;
    assert_eq!(allocations(&status), vec![0, 50, 50]);
    // B checks one seat in: now it can consent, and C gets it.
    let (code, body) = pool.checkout(1, "b-extra", 1).await;
    assert_eq!(code, 409, "B is full: {body}");
    check_in(&pool, 1, &b_grants[0], "b-0").await;
    pool.wait_status(leader, "B reported its free seat", |s| {
        rows(s)[1].in_use == Some(49)
    })
    .await;
    let (code, body) = pool.checkout(2, "c-51", 1).await;
    assert_eq!(code, 200, "B consented to one seat: {body}");
    let status = pool
        .wait_status(leader, "one seat moved from B to C", |s| {
            allocations(s) == vec![0, 49, 51]
        })
        .await;
    assert!(rows(&status)[1].seats_out >= 1);
}

/// A donor answers from the control state its issuer enforces, never from
/// a newer one its issuer has not taken yet: B's issuer takes every state
/// 1.5 s late (a server too busy to follow the log at once). While it
/// still issues B's whole allocation, B gives nothing away; had it answered
/// A's request from the newer state, its last seat and the one A borrowed
/// would both be issued, 5 seats of 4.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_donor_whose_issuer_lags_gives_no_seat_it_may_still_issue() {
    let pool = start_pool(PoolSpec {
        seats: 4,
        distribution: "A = 0\nB = 2\nC = 2\n",
        lease_s: 30,
        heartbeat_s: 10,
        // No borrowing ahead of need: only A asks, and only for its checkout.
        extra: "[borrowing.app]\nthreshold_percent = 100\n",
        ..PoolSpec::default()
    })
    .await;
    let leader = pool.wait_leader(&[0, 1, 2]).await;
    let b_grants = fill(&pool, 1, 1, "b").await;
    fill(&pool, 2, 2, "c").await;
    pool.wait_status(leader, "the leader sees B with one spare seat", |s| {
        rows(s)[1].in_use == Some(1) && rows(s)[2].in_use == Some(2)
    })
    .await;
    pool.control_lag(1, 1_500).await;
    // A's request to B is committed well before B's issuer takes it.
    let ((a_code, a_body), (b_code, b_body)) = tokio::join!(pool.checkout(0, "a-0", 1), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        pool.checkout(1, "b-late", 1).await
    });
    assert!(
        !(a_code == 200 && b_code == 200),
        "B issued its last seat and gave it to A as well: 5 seats of 4\n\
         A: {a_body}\nB: {b_body}\n--- log of B:\n{}",
        pool.log(1)
    );
    let mut in_use = 0;
    for i in 0..3 {
        let status = pool.status(i).await.expect("status");
        in_use += own_row(&status).in_use.unwrap_or(0);
    }
    assert!(in_use <= 4, "{in_use} seats in use of 4");
    // Still lagging, B answers once its issuer holds the seat back: with a
    // seat checked in, A borrows it.
    pool.control_lag(1, 300).await;
    check_in(&pool, 1, &b_grants[0], "b-0").await;
    let b_held = u32::from(b_code == 200);
    pool.wait_status(leader, "B reported its free seat", |s| {
        rows(s)[1].in_use == Some(b_held)
    })
    .await;
    let (code, body) = pool.checkout(0, "a-1", 1).await;
    assert_eq!(
        code, 200,
        "B consented once its issuer took the request: {body}"
    );
}

/// A silent server's allocation moves only once every grant it issued must
/// have lapsed: its quota lease plus the longest lease, from its last report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_servers_seats_move_only_after_the_safe_wait() {
    let spec = PoolSpec {
        distribution: "A = 40\nB = 30\nC = 30\n",
        lease_s: 4,
        heartbeat_s: 1,
        // No borrowing ahead: B takes C's seats only when it runs out.
        extra: "[borrowing.app]\nthreshold_percent = 100\n",
        ..PoolSpec::default()
    };
    let mut pool = start_pool(spec).await;
    let leader = pool.wait_leader(&[0, 1, 2]).await;
    let borrower = (leader + 1) % 3;
    let victim = (leader + 2) % 3;
    let before = allocations(&pool.status(leader).await.expect("status"));
    // The leader and the borrower full: the only seats left are the victim's.
    let mut held = Vec::new();
    for i in [leader, borrower] {
        for k in 0..before[i] {
            let mut config =
                tessera_client::ClientConfig::new(vec![pool.servers[i].address.clone()]);
            config.client_id = format!("{i}-{k}");
            config.tls = tessera_client::ClientTls::PoolCa(pool.ca_pem());
            config.trust = tessera_client::Trust::Vendor(vec![pool.vendor_key()]);
            let client = tessera_client::Client::new(config).expect("client");
            held.push(client.checkout("app", "1.0", 1).await.expect("seat"));
        }
    }
    pool.wait_status(leader, "the borrower reported full", |s| {
        rows(s)[borrower].in_use == Some(before[borrower]) && allocations(s) == before
    })
    .await;
    pool.kill(victim);
    let killed = Instant::now();
    // Quota lease 2.5 s + lease 4 s, each stretched by the 1% drift bound.
    let safe_wait = Duration::from_millis(2_525 + 4_040);
    let mut first_grant = None;
    while killed.elapsed() < PATIENCE {
        let (code, body) = pool.checkout(borrower, "more", 1).await;
        match code {
            200 => {
                first_grant = Some(killed.elapsed());
                break;
            }
            409 => assert_eq!(body["error"]["code"], "no_seats_available", "{body}"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    let first_grant = first_grant.expect("the victim's seats moved in the end");
    println!(
        "a killed server's seats moved {first_grant:?} after the kill (safe wait {safe_wait:?})"
    );
    assert!(
        first_grant >= safe_wait,
        "seats moved after {first_grant:?}, before the safe wait {safe_wait:?}"
    );
    let status = pool.status(leader).await.expect("status");
    let now = allocations(&status);
    assert_eq!(
        now[victim] + now[borrower],
        before[victim] + before[borrower]
    );
    assert!(rows(&status)[victim].seats_out >= 1);
    drop(held);
}

/// An admin change sent to a follower reaches every server within a second;
/// bad changes are refused with their reason and change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_changes_reach_every_server_and_bad_ones_change_nothing() {
    let pool = long_lease_pool("A = 40\nB = 30\nC = 30\n", "").await;
    let leader = pool.wait_leader(&[0, 1, 2]).await;
    let follower = (leader + 1) % 3;
    fill(&pool, 0, 30, "a").await;

    let sent = Instant::now();
    let out = pool.admin(
        follower,
        &[
            "set-distribution",
            "app",
            "A=20,B=40,C=40",
            "--sequence",
            "1",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut seen = Vec::new();
    for i in 0..3 {
        pool.wait_status(i, "sequence 2", |s| s.pool_sequence == 2)
            .await;
        seen.push(sent.elapsed());
    }
    println!("set-distribution visible on all servers after {seen:?}");
    assert!(seen[2] <= Duration::from_secs(1), "{seen:?}");
    // A holds 30: it keeps them and gives the other 10 at once.
    let status = pool
        .wait_status(leader, "A down to its in-use count", |s| {
            allocations(s) == vec![30, 40, 30]
        })
        .await;
    assert_eq!(rows(&status)[0].target, Some(20));
    let (code, _) = pool.checkout(0, "a-over", 1).await;
    assert_eq!(code, 409, "A issues nothing above its target");

    let refusals: [(&[&str], &str); 4] = [
        (
            &["set-distribution", "app", "A=60,B=30,C=30"],
            "hard limit is 100",
        ),
        (&["set-distribution", "app", "A=10,Z=10"], "server `Z`"),
        (
            &[
                "set-distribution",
                "app",
                "A=20,B=40,C=40",
                "--sequence",
                "1",
            ],
            "sequence 1, but sequence 2",
        ),
        (&["remove-license", "app-9"], "no license code `app-9`"),
    ];
    for (args, reason) in refusals {
        let out = pool.admin(follower, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(stderr.contains(reason), "{args:?}: {stderr}");
    }
    // A tampered code is refused for its signature.
    pool.sign_code(CodeSpec {
        id: "app-2",
        seats: 20,
        lease_s: 30,
        heartbeat_s: 10,
        out: "more.lic",
        temporary: true,
    });
    let good = std::fs::read_to_string(pool.path().join("more.lic")).expect("codes");
    let tampered = good.replace("seats = 20", "seats = 21");
    std::fs::write(pool.path().join("tampered.lic"), tampered).expect("write");
    let out = pool.admin(follower, &["add-license", "tampered.lic"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("signature"), "{stderr}");
    let status = pool.status(leader).await.expect("status");
    assert_eq!(status.pool_sequence, 2, "refused changes change nothing");

    // The real code, its seats to C.
    pool.admin_ok(follower, &["add-license", "more.lic", "--to", "C"]);
    for i in 0..3 {
        pool.wait_status(i, "C got the 20 new seats", |s| {
            s.features[0].hard_limit == 120 && allocations(s) == vec![30, 40, 50]
        })
        .await;
    }
    // Clients hold seats of `app`: the code is not taken out.
    let out = pool.admin(follower, &["remove-license", "app-2"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("seats_in_use") && stderr.contains("--force"),
        "{stderr}"
    );
    // Forced, neither: its seats are C's now, not free.
    let out = pool.admin(follower, &["remove-license", "app-2", "--force"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("20 fewer seats"), "{stderr}");
}

/// The leader killed right after an admin change is sent: the change is
/// applied once (the retry with the same expected sequence is refused as
/// stale, or takes effect if the first never committed), nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_killed_mid_change_applies_it_once() {
    let mut pool = long_lease_pool("A = 40\nB = 30\nC = 30\n", "").await;
    let leader = pool.wait_leader(&[0, 1, 2]).await;
    let follower = (leader + 1) % 3;
    let args = [
        "set-distribution",
        "app",
        "A=30,B=30,C=40",
        "--sequence",
        "1",
    ];
    let mut command = std::process::Command::new(TESSERA);
    command
        .arg("admin")
        .args(args)
        .args(["--server", &pool.servers[follower].address])
        .arg("--ca")
        .arg(pool.credentials.ca_file())
        .arg("--token-file")
        .arg(pool.credentials.admin_token_file());
    let child = command.spawn().expect("tessera admin");
    tokio::time::sleep(Duration::from_millis(15)).await;
    pool.kill(leader);
    let first = child.wait_with_output().expect("admin");
    let live: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let new_leader = pool.wait_leader(&live).await;
    let retry = pool.admin(new_leader, &args);
    let stderr = String::from_utf8_lossy(&retry.stderr);
    assert!(
        retry.status.success() || stderr.contains("sequence 1, but sequence 2"),
        "first: {:?}, retry: {stderr}",
        first.status
    );
    for &i in &live {
        pool.wait_status(i, "the change applied once", |s| s.pool_sequence == 2)
            .await;
    }
    // The old leader returns and gives its excess back.
    pool.spawn(leader);
    for i in 0..3 {
        let status = pool
            .wait_status(i, "the distribution reached", |s| {
                s.pool_sequence == 2 && allocations(s) == vec![30, 30, 40]
            })
            .await;
        assert_eq!(free_pool(&status), 0);
    }
}
