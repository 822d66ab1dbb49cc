//! Temporary licenses (seed 004) in a pool of three: recorded through the
//! pool's log, so a killed leader and a lost disk lose none and count none
//! twice, and any server returns one.

use serde_json::{json, Value};
use tessera_proto::StatusResponse;
use tessera_testkit::Pool;

use super::{evenly, start_pool};

async fn post(pool: &Pool, i: usize, path: &str, body: &Value) -> (u16, Value) {
    let response = pool
        .http
        .post(&pool.servers[i].address, path)
        .json(body)
        .send()
        .await
        .expect("an answer");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON"))
}

/// Every seat of `app` on server `i`'s view: the servers' allocations, the
/// free pool and the temporary licenses.
async fn seats_on(pool: &Pool, i: usize) -> (u32, u32, u32) {
    let status: StatusResponse = pool
        .http
        .get(&pool.servers[i].address, "/v1/status")
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("a status");
    let app = status
        .features
        .iter()
        .find(|f| f.feature == "app")
        .expect("app");
    let allocated: u32 = app.servers.iter().map(|r| r.allocation).sum();
    (allocated, app.free_pool, app.temporary_seats)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_and_a_lost_disk_lose_no_temporary_license_and_count_none_twice() {
    let mut pool = start_pool(evenly(9, "A = 3\nB = 3\nC = 3\n")).await;
    let leader = pool.wait_leader(&pool.all()).await;
    let mut tokens = Vec::new();
    for (i, user) in [(0, "alice"), (1, "bob")] {
        let (code, token) = post(
            &pool,
            i,
            "/v1/temporary/activate",
            &json!({"client_id": user, "user": user, "host": "pc", "feature": "app",
                    "version": "1.0", "device": format!("{user}-pc")}),
        )
        .await;
        assert_eq!(code, 200, "{token}");
        tokens.push(token);
    }
    for i in pool.all() {
        pool.wait_status(i, "both licenses applied", |s| {
            s.features
                .iter()
                .any(|f| f.feature == "app" && f.temporary_seats == 2)
        })
        .await;
    }

    // The leader dies; a new one leads with both licenses and every seat.
    pool.kill(leader);
    let live: Vec<usize> = pool.all().into_iter().filter(|&i| i != leader).collect();
    let new_leader = pool.wait_leader(&live).await;
    let (allocated, free, temporary) = seats_on(&pool, new_leader).await;
    assert_eq!((allocated + free, temporary), (7, 2));

    // A follower loses its disk and comes back: it learns both licenses.
    let follower = *live.iter().find(|&&i| i != new_leader).expect("a follower");
    pool.kill(follower);
    let data = pool
        .path()
        .join(format!("data-{}", pool.servers[follower].id));
    std::fs::remove_dir_all(&data).expect("destroy the disk");
    pool.spawn(follower);
    pool.spawn(leader);
    pool.wait_status(follower, "the lost disk's server caught up", |s| {
        s.features
            .iter()
            .any(|f| f.feature == "app" && f.temporary_seats == 2)
    })
    .await;
    for i in pool.all() {
        let (allocated, free, temporary) = seats_on(&pool, i).await;
        assert_eq!((allocated + free, temporary), (7, 2), "server {i}");
    }

    // Any server returns a license, with its proof; the seat is free again.
    let token = &tokens[0];
    let (code, answer) = post(
        &pool,
        follower,
        "/v1/temporary/return",
        &json!({"feature": "app", "license_id": token["license_id"],
                "device": token["device"], "proof": token["proof"]}),
    )
    .await;
    assert_eq!(
        (code, answer["released_seats"].as_u64()),
        (200, Some(1)),
        "{answer}"
    );
    for i in pool.all() {
        pool.wait_status(i, "the license returned", |s| {
            s.features
                .iter()
                .any(|f| f.feature == "app" && f.temporary_seats == 1)
        })
        .await;
    }
}
