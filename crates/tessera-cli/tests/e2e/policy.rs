//! The administrator's policy (`[policy]` of the pool file, FlexNet's
//! options file): who may use a feature, by user, group, host and address;
//! a denial names the rule; a change applies live; an invalid policy is
//! refused with its line and reason.

use serde_json::Value;

use crate::fixture::{checkout_body, code, tessera, Fixture, ServerSpec, StartMode};

fn as_user(user: &str, host: &str, feature: &str) -> Value {
    let mut body = checkout_body(&format!("{user}-{host}"), feature, 1);
    body["user"] = user.into();
    body["host"] = host.into();
    body
}

const POLICY: &str = "
[policy.groups]
design = [\"alice\", \"bob\"]
[policy.host_groups]
lab = [\"ws1\"]
[policy.features.cad]
include = [\"group:design\", \"user:dave\"]
exclude = [\"user:bob\", \"host_group:lab\"]
[policy.features.cam]
exclude = [\"address:127.0.0.0/8\"]
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_admits_and_denies_by_rule_and_changes_live() {
    let fixture = Fixture::new().await;
    let codes = format!(
        "{}{}",
        fixture.sign(&code("cad", 10)).await,
        fixture.sign(&code("cam", 10)).await
    );
    let mut server = fixture.server(ServerSpec::new(format!("{codes}{POLICY}")));
    server.start(StartMode::NewPool).await;
    server.wait_state("serving").await;

    server
        .post("/v1/checkout", &as_user("alice", "pc1", "cad"))
        .await
        .ok();
    server
        .post("/v1/checkout", &as_user("dave", "pc1", "cad"))
        .await
        .ok();
    let bob = server
        .post("/v1/checkout", &as_user("bob", "pc1", "cad"))
        .await;
    bob.refused(403, "policy_denied");
    assert!(
        bob.message()
            .contains("user `bob` on host `pc1` (127.0.0.1) is excluded from `cad` by the pool's policy (exclude \"user:bob\", line"),
        "{}",
        bob.message()
    );
    let lab = server
        .post("/v1/checkout", &as_user("alice", "ws1", "cad"))
        .await;
    lab.refused(403, "policy_denied");
    assert!(
        lab.message().contains("host_group:lab"),
        "{}",
        lab.message()
    );
    let carol = server
        .post("/v1/checkout", &as_user("carol", "pc1", "cad"))
        .await;
    carol.refused(403, "policy_denied");
    assert!(
        carol
            .message()
            .contains("not among those the pool's policy includes"),
        "{}",
        carol.message()
    );
    // An address range: every loopback client is kept from `cam`, temporary
    // licenses included.
    server
        .post("/v1/checkout", &as_user("alice", "pc1", "cam"))
        .await
        .refused(403, "policy_denied");
    let mut activate = as_user("alice", "pc1", "cam");
    activate.as_object_mut().unwrap().remove("count");
    activate["device"] = "dev-1".into();
    server
        .post("/v1/temporary/activate", &activate)
        .await
        .refused(403, "policy_denied");

    // An invalid policy is refused with its line and reason; the pool keeps
    // the one it has.
    let installed = std::fs::read_to_string(&server.pool_file).unwrap();
    let update = |sequence: u32, text: &str| {
        let path = fixture.path().join(format!("pool-{sequence}.toml"));
        let text = text.replacen("sequence = 1\n", &format!("sequence = {sequence}\n"), 1);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    };
    let bad = update(
        2,
        &installed.replace("\"group:design\"", "\"group:designers\""),
    );
    tessera(server.cli(&["admin", "update-pool-file", &bad]))
        .await
        .failure()
        .mentions(&[
            "is not a valid pool file",
            "include rule \"group:designers\": no group `designers`",
        ]);
    // Carol joins the group: admitted at once.
    let good = update(
        2,
        &installed.replace("\"alice\", \"bob\"", "\"alice\", \"bob\", \"carol\""),
    );
    tessera(server.cli(&["admin", "update-pool-file", &good]))
        .await
        .success();
    server
        .post("/v1/checkout", &as_user("carol", "pc1", "cad"))
        .await
        .ok();
    assert_eq!(server.status().await.pool_sequence, 2);
}

/// `linger_s`: a checked-in seat stays held that long (nobody else gets
/// it), the status says so, and then it is free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checked_in_seat_lingers_for_the_policys_seconds_and_then_frees() {
    let fixture = Fixture::new().await;
    let codes = fixture.sign(&code("cad", 1)).await;
    let policy = "\n[policy.features.cad]\nlinger_s = 3\n";
    let mut server = fixture.server(ServerSpec::new(format!("{codes}{policy}")));
    server.start(StartMode::NewPool).await;
    server.wait_state("serving").await;

    let grant = server
        .post("/v1/checkout", &as_user("alice", "pc1", "cad"))
        .await
        .ok();
    let checked_in_at = std::time::Instant::now();
    let checkin = serde_json::json!({
        "grant_id": grant["grant_id"],
        "client_id": "alice-pc1",
        "proof": grant["proof"],
    });
    let answer = server.post("/v1/checkin", &checkin).await.ok();
    assert_eq!(answer["released_seats"], 0, "the seat lingers");
    server
        .post("/v1/checkout", &as_user("bob", "pc2", "cad"))
        .await
        .refused(409, "no_seats_available");
    let status = server.status().await;
    assert_eq!(
        crate::fixture::feature_of(&status, "cad").lingering_seats,
        1
    );
    let text = tessera(server.cli(&["status"])).await.success().stdout;
    assert!(text.contains("lingering: 1 seats"), "{text}");
    // A second check-in of the lingering grant changes nothing.
    server.post("/v1/checkin", &checkin).await.ok();
    server
        .poll(
            "the lingering seat free",
            std::time::Duration::from_secs(10),
            |s| crate::fixture::feature_of(s, "cad").lingering_seats == 0,
        )
        .await;
    let lingered = checked_in_at.elapsed();
    assert!(
        lingered >= std::time::Duration::from_millis(2_900),
        "freed after {lingered:?}, before the 3 s linger"
    );
    server
        .post("/v1/checkout", &as_user("bob", "pc2", "cad"))
        .await
        .ok();
}
