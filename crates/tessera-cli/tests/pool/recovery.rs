//! Re-forming a pool from the survivors of a lost majority, with real
//! processes: five servers, three disks destroyed, the two survivors started
//! with `--recover-pool`. The clients' own beliefs are the judge.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tessera_client::SeatGuard;
use tessera_testkit::PoolSpec;

use super::{client, held_pool, start_pool, HeldPool};

const SEATS: u32 = 50;
const LEASE_S: u32 = 10;

/// Seats the programs believe valid now, by their own clocks.
fn believed(guards: &Mutex<Vec<SeatGuard>>) -> u32 {
    let guards = guards.lock().unwrap();
    guards
        .iter()
        .filter(|g| g.is_valid())
        .map(SeatGuard::count)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_that_lost_its_majority_is_re_formed_from_the_survivors() {
    let spec = PoolSpec {
        servers: 5,
        seats: SEATS,
        lease_s: LEASE_S,
        heartbeat_s: 1,
        // Codes that allow temporary licenses keep the lost majority's
        // seats for hours (the test below): these wait only for leases.
        temporary: false,
        ..PoolSpec::default()
    };
    // A full pool: every seat held, ten on each server.
    let HeldPool {
        mut pool, seats, ..
    } = held_pool(spec, SEATS as usize).await;
    let guards = Arc::new(Mutex::new(seats));
    let on_survivors = guards
        .lock()
        .unwrap()
        .iter()
        .filter(|g| ["A", "B"].contains(&g.server_id().as_str()))
        .count();
    // The judge: seats believed at once, sampled until the end.
    let peak = Arc::new(Mutex::new(0u32));
    let sampler = tokio::spawn({
        let (guards, peak) = (guards.clone(), peak.clone());
        async move {
            loop {
                let now = believed(&guards);
                {
                    let mut peak = peak.lock().unwrap();
                    *peak = (*peak).max(now);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    });

    // C, D and E die with their disks; A and B cannot reach a majority.
    for i in [2, 3, 4] {
        pool.kill(i);
        let data = pool.path().join(format!("data-{}", pool.servers[i].id));
        std::fs::remove_dir_all(&data).expect("destroy the disk");
    }
    let text = std::fs::read_to_string(pool.path().join("pool.toml")).expect("pool file");
    let survivors_file = pool.path().join("survivors.toml");
    let survivors = survivors_pool_file(&text, &["C", "D", "E"]);
    let parsed = tessera_core::PoolFile::parse(&survivors).expect("the survivors' pool file");
    assert_eq!(parsed.server_ids(), ["A", "B"]);
    assert_eq!(parsed.sequence, 2);
    std::fs::write(&survivors_file, survivors).expect("write the survivors' pool file");
    // The administrator restarts the survivors to re-form the pool.
    let lost_at = Instant::now();
    for i in [0, 1] {
        pool.kill(i);
    }
    let file = survivors_file.to_str().expect("path");
    for i in [0, 1] {
        pool.spawn_with(i, &["--recover-pool", file]);
    }
    let leader = pool.wait_leader(&[0, 1]).await;
    println!(
        "re-formed from A and B in {} ms; {on_survivors} seats were held on them",
        lost_at.elapsed().as_millis()
    );
    let log = pool.log(leader);
    assert!(
        log.contains("re-forming the pool from the survivors"),
        "the leader did not re-form the pool:\n{log}"
    );

    // New programs ask for seats all along: none may be believed beyond
    // the hard limit while the lost servers' clients still believe theirs,
    // and the whole hard limit is held again once those have lapsed.
    let deadline = Instant::now() + Duration::from_secs(4 * u64::from(LEASE_S));
    let mut asked = 0;
    let mut first_new = None;
    let lease = Duration::from_secs(LEASE_S.into());
    loop {
        // The lost servers' clients believe in their seats for one more
        // lease at most; the pool must then be full again with new ones.
        if lost_at.elapsed() > lease + Duration::from_secs(1) && believed(&guards) == SEATS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {SEATS} seats held again after {} s",
            believed(&guards),
            lost_at.elapsed().as_secs()
        );
        asked += 1;
        if let Ok(seat) = client(&pool, asked % 2, &format!("new{asked}"))
            .checkout("app", "1.0", 1)
            .await
        {
            first_new.get_or_insert(lost_at.elapsed());
            guards.lock().unwrap().push(seat);
        } else {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    sampler.abort();
    let peak = *peak.lock().unwrap();
    println!(
        "first new seat {} ms after the loss; all {SEATS} held again after {} ms; \
         at most {peak} believed at once",
        first_new.map_or(0, |d| d.as_millis()),
        lost_at.elapsed().as_millis()
    );
    assert!(
        peak <= SEATS,
        "{peak} seats believed at once, above the hard limit of {SEATS}"
    );
}

/// A lost server may have activated temporary licenses no survivor knows
/// of, and they run for hours: a re-formed pool keeps the lost majority's
/// seats back until those could have expired, long after every ordinary
/// lease has lapsed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_re_formed_pool_keeps_back_the_seats_of_temporary_licenses_it_cannot_see() {
    const LEASE_S: u32 = 4;
    let spec = PoolSpec {
        servers: 3,
        seats: 6,
        lease_s: LEASE_S,
        heartbeat_s: 1,
        ..PoolSpec::default()
    };
    let mut pool = start_pool(spec).await;
    pool.wait_leader(&pool.all()).await;
    // Two licenses on C's devices; B and C are then lost with their disks.
    for user in ["alice", "bob"] {
        let response = pool
            .http
            .post(&pool.servers[2].address, "/v1/temporary/activate")
            .json(
                &serde_json::json!({"client_id": user, "user": user, "host": "pc",
                    "feature": "app", "version": "1.0", "device": format!("{user}-pc")}),
            )
            .send()
            .await
            .expect("an answer");
        assert_eq!(
            response.status().as_u16(),
            200,
            "{}",
            response.text().await.unwrap()
        );
    }
    for i in [1, 2] {
        pool.kill(i);
        let data = pool.path().join(format!("data-{}", pool.servers[i].id));
        std::fs::remove_dir_all(&data).expect("destroy the disk");
    }
    let text = std::fs::read_to_string(pool.path().join("pool.toml")).expect("pool file");
    let survivors_file = pool.path().join("survivors.toml");
    std::fs::write(&survivors_file, survivors_pool_file(&text, &["B", "C"])).expect("write");
    pool.kill(0);
    pool.spawn_with(
        0,
        &["--recover-pool", survivors_file.to_str().expect("path")],
    );
    pool.wait_leader(&[0]).await;
    let re_formed = Instant::now();
    // W is under 7 s here; the seats stay back three times as long (and,
    // by the codes' terms, 8 h and the clock tolerance).
    let mut asked = 0;
    while re_formed.elapsed() < Duration::from_secs(5 * u64::from(LEASE_S)) {
        asked += 1;
        let answer = client(&pool, 0, &format!("new{asked}"))
            .checkout("app", "1.0", 1)
            .await;
        assert!(
            answer.is_err(),
            "a seat the lost servers' temporary licenses may hold was issued after {} ms",
            re_formed.elapsed().as_millis()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "{asked} checkouts refused in the {} s after the pool was re-formed",
        re_formed.elapsed().as_secs()
    );
}

/// The pool file without the lost servers, one sequence higher.
fn survivors_pool_file(text: &str, lost: &[&str]) -> String {
    let mut out = String::new();
    for block in text.split("[[servers]]") {
        if lost
            .iter()
            .any(|id| block.contains(&format!("id = \"{id}\"")))
        {
            // Keep what follows the lost server's entry (the codes after the last one).
            if let Some(rest) = block.split_once("\n\n") {
                out.push_str(rest.1);
            }
            continue;
        }
        if !out.is_empty() || text.starts_with("[[servers]]") {
            out.push_str("[[servers]]");
        }
        out.push_str(block);
    }
    out.replacen("sequence = 1\n", "sequence = 2\n", 1)
}
