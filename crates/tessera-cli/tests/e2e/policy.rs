//! The administrator's policy (`[policy]` of the pool file, FlexNet's
//! options file): who may use a feature, by user, group, host and address;
//! a denial names the rule; a change applies live; an invalid policy is
//! refused with its line and reason.

use serde_json::Value;

use crate::fixture::{checkout_body, code, tessera, Fixture, Server, ServerSpec, StartMode};

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

/// `idle_timeout_s` (FlexNet's TIMEOUT) and `display:` rules (DISPLAY),
/// through the SDK as a program drives them: a program idle less than the
/// timeout keeps its seat; idle longer, it loses it with `idle_timeout` and
/// another user gets the seat. A stranger who says someone's program is
/// idle frees nothing, and an excluded display is refused by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_program_loses_its_seat_and_a_display_is_ruled_by_name() {
    use std::time::Duration;
    use tessera_client::{Client, ClientConfig, ClientTls, SeatState};

    let fixture = Fixture::new().await;
    let codes = fixture
        .sign(&crate::fixture::code_with(
            "cad",
            1,
            crate::fixture::SHORT_POLICY,
        ))
        .await;
    let policy = "\n[policy.features.cad]\nidle_timeout_s = 60\n\
                  exclude = [\"display:/dev/pts/9\"]\n";
    let mut server = fixture.server(ServerSpec::new(format!("{codes}{policy}")));
    server.start(StartMode::NewPool).await;
    server.wait_state("serving").await;

    let sdk = |display: &str| {
        let mut config = ClientConfig::new([server.address.as_str()]);
        config.tls = ClientTls::PoolCa(server.credentials.ca_pem());
        config.trust = server.vendor_trust();
        config.clock_file = None;
        config.user = "alice".into();
        config.display = Some(display.into());
        Client::new(config).expect("a program's configuration")
    };
    match sdk("/dev/pts/9").checkout("cad", "1.0", 1).await {
        Err(err) => {
            let text = err.to_string();
            assert!(
                text.contains("at display `/dev/pts/9` (127.0.0.1) is excluded from `cad`")
                    && text.contains("exclude \"display:/dev/pts/9\""),
                "{text}"
            );
        }
        Ok(_) => panic!("an excluded display was given a seat"),
    }

    let seat = sdk(":0").checkout("cad", "1.0", 1).await.unwrap();
    // Idle half the timeout: heartbeats (every second) keep the seat.
    seat.set_idle_for(Duration::from_secs(30));
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert!(seat.is_valid(), "{:?}", seat.state());
    assert!(seat.idle_for().unwrap() >= Duration::from_secs(32));

    // A stranger says the program has been idle for a day, without the
    // grant's proof: refused, and the seat stays.
    let mut forged = crate::fixture::heartbeat_body(
        &seat.grant_id(),
        &tessera_client::ClientConfig::new(["x:1"]).client_id,
        "cad",
        1,
        "bm90IHRoZSBwcm9vZg",
    );
    forged["idle_ms"] = 86_400_000u64.into();
    server
        .post("/v1/heartbeat", &forged)
        .await
        .refused(403, "grant_proof_invalid");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(seat.is_valid(), "{:?}", seat.state());

    // In use again, then idle past the timeout: the next heartbeat frees it.
    seat.set_idle(false);
    assert_eq!(seat.idle_for(), None);
    seat.set_idle_for(Duration::from_secs(61));
    let mut events = seat.subscribe();
    let reason = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let SeatState::Lost { reason } = events.borrow_and_update().clone() {
                return reason;
            }
            events.changed().await.unwrap();
        }
    })
    .await
    .expect("the idle seat lost within 10 s");
    assert!(
        reason.contains("idle_timeout") && reason.contains("idle timeout for `cad` (60 s"),
        "{reason}"
    );
    // Freed at once, not at the lease's end: another user gets it.
    let other = server
        .post("/v1/checkout", &as_user("bob", "pc2", "cad"))
        .await
        .ok();
    assert_eq!(other["count"], 1);
    let metrics = server.metrics().await;
    assert!(metrics.contains("idle_timeout"), "{metrics}");
    drop(seat);
}

/// Checks out one seat of `feature` for `user` on `server`, retrying a
/// refusal for up to 10 s (a check-in elsewhere reaches the pool's log
/// within a second or so).
async fn checkout_within(server: &Server, user: &str, host: &str, feature: &str) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let answer = server
            .post("/v1/checkout", &as_user(user, host, feature))
            .await;
        if answer.code().is_empty() || std::time::Instant::now() > deadline {
            return answer.ok();
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// `reserve` and `max` hold across a pool of three servers, not per
/// server: bob's `max 2` is reached with one seat on A and one on B, so C
/// refuses him; the seat kept for group `design` stays free while others
/// are refused, and a member of the group gets it; a check-in frees a
/// place under the max on another server; a live change of the rules
/// reaches every server within a second; the status shows the rules at
/// work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserves_and_maxima_hold_across_the_pool() {
    let fixture = Fixture::new().await;
    let policy = "
[policy.groups]
design = [\"alice\", \"dan\"]
[policy.features.cad]
reserve = [\"1 group:design\"]
max = [\"2 user:bob\"]
";
    let codes = fixture.sign(&code("cad", 4)).await;
    let licenses = format!("{codes}{policy}");
    let mut servers = fixture.start_pool(&["A", "B", "C"], &licenses, &[]).await;
    let [a, b, c] = [&servers[0], &servers[1], &servers[2]];

    let bobs_first = checkout_within(a, "bob", "pc1", "cad").await;
    checkout_within(b, "bob", "pc2", "cad").await;
    let bob = c.post("/v1/checkout", &as_user("bob", "pc3", "cad")).await;
    bob.refused(403, "policy_denied");
    assert!(
        bob.message().contains(
            "those \"user:bob\" names hold 2 already, and the pool's policy allows them 2 (max \"2 user:bob\", line"
        ),
        "{}",
        bob.message()
    );
    checkout_within(c, "carol", "pc4", "cad").await;
    // Three of four seats held; the fourth is design's.
    for server in [a, b, c] {
        let erin = server
            .post("/v1/checkout", &as_user("erin", "pc5", "cad"))
            .await;
        erin.refused(409, "no_seats_available");
        assert!(
            erin.message()
                .contains("kept by the pool's policy, 1 for \"group:design\" (reserve \"1 group:design\", line"),
            "{}",
            erin.message()
        );
    }
    // A applies the claims made through B and C within a moment.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let status = tessera(a.cli(&["status"])).await.success().stdout;
        let shown = status.contains("reserve 1 for \"group:design\": 0 held pool-wide")
            && status.contains("max 2 for \"user:bob\": 2 held pool-wide");
        if shown {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{status}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    checkout_within(b, "alice", "pc6", "cad").await;

    // Bob checks in on A: C takes him now.
    let checkin = serde_json::json!({
        "grant_id": bobs_first["grant_id"],
        "client_id": "bob-pc1",
        "proof": bobs_first["proof"],
    });
    a.post("/v1/checkin", &checkin).await.ok();
    checkout_within(c, "bob", "pc3", "cad").await;

    // A live change: bob may hold 3. Every server has it within a second.
    let installed = std::fs::read_to_string(&a.pool_file).unwrap();
    let next = installed
        .replacen("sequence = 1\n", "sequence = 2\n", 1)
        .replace("\"2 user:bob\"", "\"3 user:bob\"");
    let path = fixture.path().join("pool-2.toml");
    std::fs::write(&path, next).unwrap();
    tessera(a.cli(&["admin", "update-pool-file", path.to_str().unwrap()]))
        .await
        .success();
    let changed = std::time::Instant::now();
    for server in &mut servers {
        server
            .poll("the new policy", std::time::Duration::from_secs(1), |s| {
                s.pool_sequence == 2
            })
            .await;
    }
    let reached = changed.elapsed();
    assert!(reached < std::time::Duration::from_secs(1), "{reached:?}");
    let status = servers[2]
        .poll(
            "the rules at work",
            std::time::Duration::from_secs(5),
            |s| {
                let cad = crate::fixture::feature_of(s, "cad");
                cad.maxima
                    .first()
                    .is_some_and(|m| (m.seats, m.held) == (3, 2))
            },
        )
        .await;
    let cad = crate::fixture::feature_of(&status, "cad");
    assert_eq!(cad.maxima[0].rule, "user:bob");
    assert_eq!((cad.reserves[0].seats, cad.reserves[0].held), (1, 1));
}
