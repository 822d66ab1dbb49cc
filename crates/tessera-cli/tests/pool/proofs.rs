//! Grants bound to their holders across the pool: a heartbeat to another
//! server, driven as an attacker on the network would, converts nothing
//! without the grant's proof; the holder's own fail-over conversion does.

use serde_json::{json, Value};
use tessera_testkit::{row, Pool, PoolSpec};

use super::start_pool;

/// A heartbeat to server `i`: the HTTP status and the JSON body.
async fn heartbeat(pool: &Pool, i: usize, body: &Value) -> (u16, Value) {
    // Trusts the pool CA (every client has it), holds no credential.
    let response = tessera_testkit::Http::tls(
        &pool.ca_pem(),
        None,
        tessera_testkit::LOOPBACK_REQUEST_TIMEOUT,
    )
    .post(&pool.servers[i].address, "/v1/heartbeat")
    .json(body)
    .send()
    .await
    .expect("an answer to the heartbeat");
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
