//! Grants bound to their holders across the pool: a heartbeat to another
//! server, driven as an attacker on the network would, converts nothing
//! without the grant's proof; the holder's own fail-over conversion does.

use serde_json::{json, Value};
use tessera_testkit::{row, Pool, PoolSpec};

use super::start_pool;

/// A heartbeat to server `i`: the HTTP status and the JSON body.
async fn heartbeat(pool: &Pool, i: usize, body: &Value) -> (u16, Value) {
    post(pool, i, "/v1/heartbeat", body).await
}

/// A client's request to server `i`, as a program of the attacker's own
/// sends it: it trusts the pool CA (every client has it) and holds no
/// credential.
async fn post(pool: &Pool, i: usize, path: &str, body: &Value) -> (u16, Value) {
    let response = tessera_testkit::Http::tls(
        &pool.ca_pem(),
        None,
        tessera_testkit::LOOPBACK_REQUEST_TIMEOUT,
    )
    .post(&pool.servers[i].address, path)
    .json(body)
    .send()
    .await
    .unwrap_or_else(|err| panic!("an answer to {path}: {err}"));
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

fn heartbeat_body(grant_id: &str, client_id: &str, proof: Option<&str>) -> Value {
    let mut body = json!({
        "grant_id": grant_id, "client_id": client_id, "user": "u", "host": "h",
        "feature": "app", "version": "1.0", "count": 1,
    });
    if let Some(proof) = proof {
        body["proof"] = proof.into();
    }
    body
}

/// Seats server `i` counts in use of its own allocation.
async fn in_use(pool: &Pool, i: usize) -> u32 {
    let status = pool.status(i).await.expect("status");
    row(&status, &pool.servers[i].id).1.expect("own row")
}

/// An attacker reads A's status (grant ids and client ids), then sends B
/// heartbeats that B would convert into checkouts: for made-up grants, and
/// for A's real grant without its proof. B refuses each with
/// `grant_proof_invalid`, takes no seat, and names no holder. Then the
/// holder fails over to B with its proof: converted, under the same grant
/// id and proof.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_to_another_server_converts_only_with_the_grants_proof() {
    let pool = start_pool(PoolSpec {
        servers: 2,
        seats: 4,
        distribution: "A = 2\nB = 2\n",
        lease_s: 60,
        heartbeat_s: 10,
        ..PoolSpec::default()
    })
    .await;
    let (code, grant) = pool.checkout(0, "victim-ws12", 1).await;
    assert_eq!(code, 200, "{grant}");
    let proof = grant["proof"]
        .as_str()
        .expect("the grant's proof")
        .to_string();

    // What the attacker sees: A's grants, with their holders, and no proof.
    let status = pool.status(0).await.expect("A's status");
    let seen = status.grants[0].clone();
    assert_eq!(seen.client_id, "victim-ws12");
    let status_text = serde_json::to_string(&status).unwrap();
    assert!(!status_text.contains(&proof), "the status shows a proof");
    assert!(
        !pool.metrics(0).await.contains(&proof),
        "/metrics shows a proof"
    );

    let forged = "A".repeat(43);
    let attacks = [
        (
            "a made-up grant, a made-up proof",
            heartbeat_body("squat-1", "attacker", Some(&forged)),
        ),
        (
            "a made-up grant, no proof",
            heartbeat_body("squat-2", "attacker", None),
        ),
        (
            "A's grant without its proof",
            heartbeat_body(&seen.grant_id, &seen.client_id, None),
        ),
        (
            "A's grant with a made-up proof",
            heartbeat_body(&seen.grant_id, &seen.client_id, Some(&forged)),
        ),
        (
            "A's grant and its proof for another client",
            heartbeat_body(&seen.grant_id, "attacker", Some(&proof)),
        ),
    ];
    for (what, body) in &attacks {
        let (code, answer) = heartbeat(&pool, 1, body).await;
        assert_eq!(
            (code, answer["error"]["code"].as_str()),
            (403, Some("grant_proof_invalid")),
            "{what}: {answer}"
        );
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(!message.contains("victim-ws12"), "{what}: {message}");
    }
    assert_eq!(in_use(&pool, 1).await, 0, "B took a seat for an attacker");
    assert_eq!(pool.status(1).await.expect("B's status").grants_total, 0);

    // The holder's own fail-over: converted on B, same grant id and proof.
    let body = heartbeat_body(&seen.grant_id, "victim-ws12", Some(&proof));
    let (code, converted) = heartbeat(&pool, 1, &body).await;
    assert_eq!(code, 200, "{converted}");
    assert_eq!(
        (
            converted["grant_id"].as_str(),
            converted["converted"].as_bool()
        ),
        (Some(seen.grant_id.as_str()), Some(true)),
        "{converted}"
    );
    assert_eq!(converted["proof"].as_str(), Some(proof.as_str()));
    assert_eq!(in_use(&pool, 1).await, 1);
}

/// The customer's attack on the hand-over (seed 001, FIG. 10): a program
/// of its own checks a seat out on a follower and in again, keeping the
/// answer's holding proof; the follower gives the seat to another program
/// and is killed. The holding proof of the checked-in grant then claims
/// the seat on the other servers, long past the dead server's quota: the
/// leader heard of the check-in and hands nothing over, so the pool stays
/// at its three seats. A holding proof changed in any field is refused
/// outright.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_holding_proof_of_a_checked_in_grant_hands_nothing_over() {
    let mut pool = start_pool(super::evenly(3, "A = 1\nB = 1\nC = 1\n")).await;
    let leader = pool.wait_leader(&pool.all()).await;
    let victim = (leader + 1) % 3;
    let others = [leader, (leader + 2) % 3];
    let held: Vec<_> = {
        let mut held = Vec::new();
        for (n, &i) in others.iter().enumerate() {
            held.push(super::seat_on(&pool, i, &format!("held-{n}")).await);
        }
        held
    };
    let (code, grant) = pool.checkout(victim, "attacker", 1).await;
    assert_eq!(code, 200, "{grant}");
    let grant_id = grant["grant_id"].as_str().unwrap().to_string();
    let proof = grant["proof"].as_str().unwrap().to_string();
    let holding = grant["holding"].clone();
    assert!(
        holding.is_object(),
        "a pool of three answers where a grant is held: {grant}"
    );

    let mut tampered = heartbeat_body(&grant_id, "attacker", Some(&proof));
    tampered["holding"] = holding.clone();
    tampered["holding"]["expires_ms"] = (holding["expires_ms"].as_u64().unwrap() + 60_000).into();
    let (code, answer) = heartbeat(&pool, others[0], &tampered).await;
    assert_eq!(
        (code, answer["error"]["code"].as_str()),
        (403, Some("grant_proof_invalid")),
        "{answer}"
    );

    let checkin = json!({ "grant_id": grant_id, "client_id": "attacker", "proof": proof });
    let (code, answer) = post(&pool, victim, "/v1/checkin", &checkin).await;
    assert_eq!(code, 200, "{answer}");
    // The follower issues the seat again once the leader heard of the check-in.
    let deadline = std::time::Instant::now() + tessera_testkit::PATIENCE;
    loop {
        let (code, answer) = pool.checkout(victim, "another", 1).await;
        if code == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the seat never came back: {answer}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    pool.kill(victim);

    let mut replay = heartbeat_body(&grant_id, "attacker", Some(&proof));
    replay["holding"] = holding;
    let until = std::time::Instant::now() + std::time::Duration::from_secs(6);
    while std::time::Instant::now() < until {
        for &i in &others {
            let (code, answer) = heartbeat(&pool, i, &replay).await;
            assert_ne!(code, 200, "a checked-in grant was handed over: {answer}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    for seat in &held {
        assert!(seat.is_valid(), "a seat of a live server was lost");
    }
}
