//! Grants bound to their holders, driven as an attacker on the network
//! would: read `/v1/status`, then try to release, renew or squat seats with
//! what it shows. Every attempt without the grant's proof is refused with
//! `grant_proof_invalid`, the seat stays its owner's, and no refusal names
//! the owner. Also the pool key itself: `tessera pool key`, and a server
//! without one.

use std::os::unix::fs::PermissionsExt;

use serde_json::{json, Value};
use tessera_client::{Client, ClientConfig};

use crate::fixture::{
    checkout_body, code, heartbeat_body, in_use, tessera, Answer, Fixture, Renewal, ServerSpec,
    StartMode,
};

/// A proof of the right shape that no pool made.
fn forged_proof() -> String {
    "A".repeat(43)
}

/// Panics unless `answer` is the proof refusal and says nothing of `secrets`.
fn refused_without_naming(answer: &Answer, what: &str, secrets: &[&str]) {
    assert_eq!(
        (answer.status, answer.code()),
        (403, "grant_proof_invalid"),
        "{what}: {answer:?}"
    );
    for secret in secrets {
        assert!(
            !answer.message().contains(secret),
            "{what}: the refusal shows `{secret}`: {}",
            answer.message()
        );
    }
}

/// (a) An attacker reads the status, which lists the victim's grant id and
/// client id, and tries to check that grant in or renew it: without a
/// proof, with a forged one, with the proof of its own grant, under another
/// client id. Each is refused; the seat stays held by its owner, whose own
/// heartbeats and check-in still work; no proof shows in the status or the
/// metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_reader_cannot_check_in_or_renew_another_clients_grant() {
    let fixture = Fixture::new().await;
    let server = fixture.serve(&code("cad", 3)).await;
    let mut config = ClientConfig::new([server.address.as_str()]);
    config.client_id = "victim-ws12-4411".into();
    config.user = "victim-user".into();
    config.host = "victim-host".into();
    config.tls = tessera_client::ClientTls::PoolCa(server.credentials.ca_pem());
    config.trust = server.vendor_trust();
    let victim = Client::new(config).expect("SDK client");
    let seat = victim
        .checkout("cad", "1.0", 1)
        .await
        .expect("the victim's seat");
    let victim_proof = seat.grant().proof.as_str().to_string();

    // The attacker's own seat gives it a valid proof, of another grant.
    let own = server
        .post("/v1/checkout", &checkout_body("attacker", "cad", 1))
        .await
        .ok();
    let own_proof = own["proof"].as_str().expect("a proof").to_string();

    let status = server.status().await;
    let seen = status
        .grants
        .iter()
        .find(|g| g.client_id == "victim-ws12-4411")
        .unwrap_or_else(|| panic!("the victim's grant is not listed: {status:#?}"))
        .clone();
    assert_eq!(seen.grant_id, seat.grant_id());
    let secrets = ["victim-ws12-4411", "victim-user", "victim-host"];

    let checkin = |client_id: &str, proof: Option<&str>| {
        let mut body = json!({"grant_id": seen.grant_id, "client_id": client_id});
        if let Some(proof) = proof {
            body["proof"] = proof.into();
        }
        body
    };
    let forged = forged_proof();
    let attempts: [(&str, &str, Value); 7] = [
        (
            "check-in, no proof",
            "/v1/checkin",
            checkin(&seen.client_id, None),
        ),
        (
            "check-in, empty proof",
            "/v1/checkin",
            checkin(&seen.client_id, Some("")),
        ),
        (
            "check-in, forged proof",
            "/v1/checkin",
            checkin(&seen.client_id, Some(&forged)),
        ),
        (
            "check-in, own grant's proof",
            "/v1/checkin",
            checkin(&seen.client_id, Some(&own_proof)),
        ),
        (
            "check-in, wrong client id",
            "/v1/checkin",
            checkin("attacker", None),
        ),
        (
            "heartbeat, no proof",
            "/v1/heartbeat",
            heartbeat_body(&seen.grant_id, &seen.client_id, "cad", 1, ""),
        ),
        (
            "heartbeat, forged proof",
            "/v1/heartbeat",
            heartbeat_body(&seen.grant_id, &seen.client_id, "cad", 1, &forged),
        ),
    ];
    for (what, path, body) in &attempts {
        let answer = server.post(path, body).await;
        refused_without_naming(&answer, what, &secrets);
    }

    // The seat is still the victim's, counted and listed as before.
    let status = server.status().await;
    assert_eq!(in_use(&status, "cad"), 2, "{status:#?}");
    let still = status.grants.iter().find(|g| g.grant_id == seen.grant_id);
    assert_eq!(
        still.map(|g| g.client_id.as_str()),
        Some("victim-ws12-4411"),
        "{status:#?}"
    );
    assert!(seat.is_valid());
    // No proof in what anyone can read.
    let status_text = server.get("/v1/status").await.ok().to_string();
    let metrics = server.metrics().await;
    assert!(metrics.contains("grant_proof_invalid"), "{metrics}");
    for proof in [&victim_proof, &own_proof] {
        assert!(
            !status_text.contains(proof.as_str()),
            "the status shows a proof"
        );
        assert!(!metrics.contains(proof.as_str()), "/metrics shows a proof");
    }

    // The owner renews and gives the seat back with its proof.
    let renewed = server
        .post(
            "/v1/heartbeat",
            &heartbeat_body(&seen.grant_id, &seen.client_id, "cad", 1, &victim_proof),
        )
        .await
        .ok();
    assert_eq!(renewed["converted"].as_bool(), Some(false), "{renewed}");
    seat.release().await.expect("the victim's check-in");
    assert_eq!(in_use(&server.status().await, "cad"), 1);
}

/// (c) During the grace period of a server that started without its store
/// (no `--new-pool`), which takes only heartbeats of grants it may have
/// issued: an attacker's heartbeats for made-up grants are refused and take
/// no seat, while the real holder, whose proof predates the lost store,
/// gets its grant converted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_grants_take_no_seat_during_the_grace_period() {
    let fixture = Fixture::new().await;
    // A grace far longer than the test: it must not end while the attacker
    // tries.
    let mut server = fixture.server_with_grace(&code("cad", 3), 120_000).await;
    server.start(StartMode::NewPool).await;
    server.wait_state("serving").await;
    let held = server
        .post("/v1/checkout", &checkout_body("holder-ws7", "cad", 1))
        .await
        .ok();
    let grant_id = held["grant_id"].as_str().expect("grant_id").to_string();
    let proof = held["proof"].as_str().expect("proof").to_string();

    // The store is lost; the server comes back without --new-pool.
    server.kill();
    std::fs::remove_dir_all(&server.data_dir).expect("remove the data directory");
    server.start(StartMode::Plain).await;
    let status = server.wait_grace().await;
    assert_eq!(status.grants_total, 0, "{status:#?}");

    let forged = forged_proof();
    let attempts = [
        (
            "made-up grant, forged proof",
            heartbeat_body("squat-1", "attacker", "cad", 1, &forged),
        ),
        (
            "made-up grant, no proof",
            heartbeat_body("squat-2", "attacker", "cad", 1, ""),
        ),
        (
            "made-up grant, a real proof of another grant",
            heartbeat_body("squat-3", "holder-ws7", "cad", 1, &proof),
        ),
        (
            "the holder's grant id without its proof",
            heartbeat_body(&grant_id, "holder-ws7", "cad", 1, ""),
        ),
        (
            "the holder's grant id and proof, more seats",
            heartbeat_body(&grant_id, "holder-ws7", "cad", 3, &proof),
        ),
    ];
    for (what, body) in &attempts {
        let answer = server.post("/v1/heartbeat", body).await;
        refused_without_naming(&answer, what, &["holder-ws7"]);
    }
    let status = server.status().await;
    assert_eq!(
        (in_use(&status, "cad"), status.grants_total),
        (0, 0),
        "an attacker took a seat in the grace period: {status:#?}"
    );
    assert_eq!(status.server.state, "grace");

    // The real holder renews with its proof: converted, one seat.
    server
        .renews(
            &heartbeat_body(&grant_id, "holder-ws7", "cad", 1, &proof),
            Renewal::Converted,
        )
        .await;
    assert_eq!(in_use(&server.status().await, "cad"), 1);
}

/// `tessera pool key --out FILE` writes 64 hex characters and a newline,
/// mode 0600, and never overwrites; a server whose config names no key, or
/// a key file that is not a key, does not start and says how to make one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_keys_are_made_by_the_cli_and_required_by_the_server() {
    let fixture = Fixture::new().await;
    let key_path = fixture.path().join("another.key");
    let key_arg = key_path.to_str().unwrap();
    let made = tessera(["pool", "key", "--out", key_arg]).await.success();
    made.mentions(&["pool_key_file = \"another.key\""]);
    let text = std::fs::read_to_string(&key_path).unwrap();
    assert_eq!(text.len(), 65, "{text:?}");
    assert!(text.ends_with('\n') && text[..64].chars().all(|c| c.is_ascii_hexdigit()));
    let mode = std::fs::metadata(&key_path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "mode {mode:o}");
    let again = tessera(["pool", "key", "--out", key_arg]).await.failure();
    again.mentions(&["exists"]);
    assert_eq!(
        std::fs::read_to_string(&key_path).unwrap(),
        text,
        "overwritten"
    );

    let server = fixture.server(ServerSpec::new(fixture.sign(&code("cad", 1)).await));
    let config_text = std::fs::read_to_string(&server.config).unwrap();
    let config = server.config.to_str().unwrap();
    // No `pool_key_file` in the config.
    std::fs::write(
        &server.config,
        config_text.replace("pool_key_file = \"../pool.key\"\n", ""),
    )
    .unwrap();
    let output = tessera(["server", "--config", config, "--new-pool"])
        .await
        .failure();
    output.mentions(&["pool_key_file", "tessera pool key --out"]);
    // A key file that is not a key.
    std::fs::write(
        &server.config,
        config_text.replace("../pool.key", "bad.key"),
    )
    .unwrap();
    std::fs::write(server.config.with_file_name("bad.key"), "not a key\n").unwrap();
    let output = tessera(["server", "--config", config, "--new-pool"])
        .await
        .failure();
    output.mentions(&["bad.key", "hexadecimal", "tessera pool key --out"]);
}
