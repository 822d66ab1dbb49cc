//! Seats: checkout up to the hard limit, the next one denied, check-in frees
//! one; a seat whose heartbeats stop lapses after its lease and not before;
//! a server that lost its store issues only renewals until its grace ends.

use std::time::Duration;

use serde_json::Value;
use tessera_client::{Client, ClientConfig, ClientError};
use tokio::time::Instant;

use crate::fixture::{
    checkout_body, code, code_with, feature_of, heartbeat_body, in_use, tessera, Fixture, Renewal,
    Server, ServerSpec, StartMode, POLL_INTERVAL, SHORT_POLICY,
};

/// Longest wait for a lapsed seat to be freed, or for a grace period to end.
const LAPSE_TIMEOUT: Duration = Duration::from_secs(10);

/// The answering server counts `expected` seats of `feature` in use, in its
/// distribution table and in its list of grants alike.
async fn check(server: &Server, feature: &str, expected: u32, step: &str) {
    let status = server.status().await;
    let listed: u32 = status
        .grants
        .iter()
        .filter(|g| g.feature == feature)
        .map(|g| g.count)
        .sum();
    assert_eq!(
        (in_use(&status, feature), listed),
        (expected, expected),
        "{step}: seats of `{feature}` in use (table, grants); status: {status:#?}"
    );
}

/// `tessera checkout FEATURE --detach --json`: the grant it printed.
async fn cli_checkout(server: &Server, feature: &str) -> Value {
    let output = tessera(server.cli(&["checkout", feature, "--detach", "--json"]))
        .await
        .success();
    serde_json::from_str(output.stdout.trim())
        .unwrap_or_else(|err| panic!("checkout --json printed no JSON ({err}): {output}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkout_to_the_hard_limit_then_denied_and_checkin_frees_a_seat() {
    let fixture = Fixture::new().await;
    let server = fixture.serve(&code("cad", 5)).await;
    check(&server, "cad", 0, "fresh server").await;

    // Two seats through the HTTP API.
    let by_http = server
        .post("/v1/checkout", &checkout_body("http-client", "cad", 2))
        .await
        .ok();
    assert_eq!(
        (by_http["count"].as_u64(), by_http["converted"].as_bool()),
        (Some(2), Some(false)),
        "{by_http}"
    );
    assert_eq!(by_http["lease_ms"].as_u64(), Some(60_000), "{by_http}");
    check(&server, "cad", 2, "after the HTTP checkout").await;

    // One seat through the command, detached: it lapses unless checked in.
    let by_cli = cli_checkout(&server, "cad").await;
    let cli_grant_id = by_cli["grant_id"].as_str().expect("grant_id").to_string();
    let cli_client_id = by_cli["client_id"].as_str().expect("client_id").to_string();
    let cli_proof = by_cli["proof"].as_str().expect("proof").to_string();
    assert_eq!(by_cli["server_id"].as_str(), Some("A"), "{by_cli}");
    check(&server, "cad", 3, "after the CLI checkout").await;

    // Two seats through the SDK, which heartbeats them in the background.
    let sdk = Client::new(sdk_config(&server)).expect("SDK client");
    let seat = sdk.checkout("cad", "1.0", 2).await.expect("SDK checkout");
    assert!(seat.is_valid());
    check(&server, "cad", 5, "at the hard limit").await;

    // Full: every way of asking is denied with `no_seats_available`.
    server
        .post("/v1/checkout", &checkout_body("http-client", "cad", 1))
        .await
        .refused(409, "no_seats_available");
    match sdk.checkout("cad", "1.0", 1).await {
        Err(ClientError::NoSeatsAvailable { .. }) => {}
        other => panic!("the SDK got {other:?} at the hard limit"),
    }
    let denied = tessera(server.cli(&["checkout", "cad", "--detach"]))
        .await
        .failure();
    assert!(denied.text().contains("no_seats_available"), "{denied}");
    check(&server, "cad", 5, "after the denials").await;

    // Check-in through the API frees the grant's two seats...
    let released = server
        .post(
            "/v1/checkin",
            &serde_json::json!({
                "grant_id": by_http["grant_id"],
                "client_id": "http-client",
                "proof": by_http["proof"],
            }),
        )
        .await
        .ok();
    assert_eq!(released["released_seats"].as_u64(), Some(2), "{released}");
    check(&server, "cad", 3, "after the HTTP check-in").await;

    // ...and `tessera checkin` frees the detached one.
    let checked_in = tessera(server.cli(&[
        "checkin",
        &cli_grant_id,
        "--client-id",
        &cli_client_id,
        "--proof",
        &cli_proof,
    ]))
    .await
    .success();
    assert!(
        checked_in.stdout.contains("1 seats returned"),
        "{checked_in}"
    );
    check(&server, "cad", 2, "after the CLI check-in").await;

    // The freed seats can be taken again, and no more.
    server
        .post("/v1/checkout", &checkout_body("http-client", "cad", 3))
        .await
        .ok();
    server
        .post("/v1/checkout", &checkout_body("http-client", "cad", 1))
        .await
        .refused(409, "no_seats_available");
    seat.release().await.expect("SDK check-in");
    check(&server, "cad", 3, "after the SDK check-in").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seat_without_heartbeats_is_freed_after_its_lease_and_not_before() {
    let fixture = Fixture::new().await;
    let mut server = fixture.serve(&code_with("cad", 2, SHORT_POLICY)).await;
    // A seat the SDK keeps renewing, next to the one left to lapse.
    let sdk = Client::new(sdk_config(&server)).expect("SDK client");
    let kept = sdk.checkout("cad", "1.0", 1).await.expect("SDK checkout");

    let asked_at = Instant::now();
    let detached = cli_checkout(&server, "cad").await;
    let grant_id = detached["grant_id"].as_str().expect("grant_id").to_string();
    let lease = Duration::from_millis(detached["lease_ms"].as_u64().expect("lease_ms"));
    assert_eq!(lease, Duration::from_secs(2), "{detached}");

    let status = server.status().await;
    let held = status
        .grants
        .iter()
        .find(|g| g.grant_id == grant_id)
        .unwrap_or_else(|| panic!("grant {grant_id} not held right after checkout: {status:#?}"));
    assert!(held.expires_in_ms > 0, "{held:?}");
    assert_eq!(in_use(&status, "cad"), 2, "{status:#?}");

    let freed = server
        .poll("the detached seat to lapse", LAPSE_TIMEOUT, |s| {
            in_use(s, "cad") == 1 && s.grants.iter().all(|g| g.grant_id != grant_id)
        })
        .await;
    // One-sided, so it cannot flake: the server's lease began after `asked_at`.
    assert!(
        asked_at.elapsed() >= lease,
        "the seat was freed {:?} after the checkout was sent, before its {lease:?} lease ran",
        asked_at.elapsed()
    );
    assert!(
        freed.grants.iter().any(|g| g.grant_id == kept.grant_id()),
        "the heartbeated seat lapsed too: {freed:#?}"
    );
    assert!(kept.is_valid());
    kept.release().await.expect("SDK check-in");
    check(&server, "cad", 0, "after the SDK check-in").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_its_store_accepts_only_renewals_until_its_grace_ends() {
    let fixture = Fixture::new().await;
    // A lease longer than the grace, so that the converted grant is still
    // held when the grace ends.
    let mut server = fixture.server_with_grace(&code("cad", 3), 2_500).await;
    // No --new-pool and a fresh data directory: the store is "lost".
    server.start(StartMode::Plain).await;
    let status = server.wait_grace().await;
    assert!(
        status.server.grace_remaining_ms.is_some_and(|ms| ms > 0),
        "{status:#?}"
    );

    server
        .post("/v1/checkout", &checkout_body("new-client", "cad", 1))
        .await
        .refused(503, "grace_period");
    // A holder from before the restart renews with its grant's proof: the
    // server converts it.
    renews_from_before(&fixture, &server, "held-before-restart", "old-client").await;
    check(&server, "cad", 1, "after the converted heartbeat").await;

    // Once the grace ends, new checkouts are served.
    let deadline = Instant::now() + LAPSE_TIMEOUT;
    loop {
        let answer = server
            .post("/v1/checkout", &checkout_body("new-client", "cad", 1))
            .await;
        if answer.status == 200 {
            break;
        }
        answer.refused(503, "grace_period");
        assert!(
            Instant::now() < deadline,
            "still in grace after {LAPSE_TIMEOUT:?}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    let status = server.status().await;
    assert_eq!(status.server.state, "serving", "{status:#?}");
    assert_eq!(feature_of(&status, "cad").hard_limit, 3);
    check(&server, "cad", 2, "after the grace").await;
}

/// A server that dies during its grace period starts the next run in a new
/// one: the store it made since records only the renewals it converted, and
/// holders from before the loss may still hold seats it never recorded. A
/// clean stop during the grace period does not end it either; only a grace
/// period run to its end does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grace_period_cut_short_by_a_crash_begins_again_at_the_next_start() {
    let fixture = Fixture::new().await;
    let mut server = fixture.server_with_grace(&code("cad", 3), 120_000).await;
    server.start(StartMode::Plain).await;
    server.wait_grace().await;
    renews_from_before(&fixture, &server, "held-before-loss", "old-client").await;

    // kill -9 in the grace period: the store now exists, holding one grant.
    server.kill();
    server.start(StartMode::Plain).await;
    server.wait_grace().await;
    check(&server, "cad", 1, "the converted grant, after the crash").await;
    server
        .post("/v1/checkout", &checkout_body("new-client", "cad", 1))
        .await
        .refused(503, "grace_period");
    // Another holder from before the loss is still taken back.
    renews_from_before(&fixture, &server, "also-held-before-loss", "other-client").await;

    // A clean stop in the grace period keeps it too.
    assert!(server.terminate().await.success());
    server.start(StartMode::Plain).await;
    server.wait_grace().await;
    check(&server, "cad", 2, "both converted grants, after the stop").await;
    assert!(server.log().contains("a new grace period begins"));

    // `--new-pool` (a service unit that always passes it) waives only a
    // missing store's grace period: this one is still owed.
    assert!(server.terminate().await.success());
    server.start(StartMode::NewPool).await;
    server.wait_grace().await;
    assert!(server.log().contains("--new-pool says"), "{}", server.log());
    server
        .post("/v1/checkout", &checkout_body("new-client", "cad", 1))
        .await
        .refused(503, "grace_period");
    check(&server, "cad", 2, "both converted grants, after --new-pool").await;
}

/// Once a grace period has run to its end, a crash starts no new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grace_period_run_to_its_end_is_not_waited_again_after_a_crash() {
    let fixture = Fixture::new().await;
    let mut server = fixture.server_with_grace(&code("cad", 3), 1_500).await;
    server.start(StartMode::Plain).await;
    server.wait_grace().await;
    wait_grace_over(&server).await;

    server.kill();
    server.start(StartMode::Plain).await;
    let status = server.wait_formed().await;
    assert_eq!(status.server.state, "serving", "{status:#?}");
    server
        .post("/v1/checkout", &checkout_body("new-client", "cad", 1))
        .await
        .ok();
}

/// `[runtime] workers`: the server serves on that many worker threads and
/// says so when it listens; a count outside 1 to 1,024 is refused at start
/// with the range.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_serves_on_the_workers_its_config_names() {
    let fixture = Fixture::new().await;
    let mut spec = ServerSpec::new(fixture.sign(&code("cad", 3)).await);
    spec.config_tables = "[runtime]\nworkers = 1\n".into();
    let mut server = fixture.server(spec);
    server.start(StartMode::NewPool).await;
    server.wait_state("serving").await;
    let log = server.log();
    assert!(log.contains(", 1 worker thread\n"), "{log}");
    for n in 0..3 {
        let holder = format!("holder-{n}");
        server
            .post("/v1/checkout", &checkout_body(&holder, "cad", 1))
            .await
            .ok();
    }
    assert!(server.terminate().await.success());

    let text = std::fs::read_to_string(&server.config).unwrap();
    std::fs::write(&server.config, text.replace("workers = 1", "workers = 0")).unwrap();
    let config = server.config.to_str().unwrap();
    tessera(["server", "--config", config])
        .await
        .failure()
        .mentions(&["runtime.workers is 0", "from 1 to 1024"]);
}

/// `[store] sync = "background"`: grants are answered before they are
/// synced, so a run that did not stop cleanly (`kill -9`) is followed by a
/// grace period, `--new-pool` or not, in which a holder's heartbeat keeps its seat and nothing
/// new is issued; a clean stop syncs every grant and is followed by none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_syncs_in_the_background_waits_a_grace_period_after_a_crash_only() {
    let fixture = Fixture::new().await;
    let mut spec = ServerSpec::new(fixture.sign(&code("cad", 3)).await);
    spec.config_tables = "[timing]\ngrace_ms = 4000\n\n[store]\nsync = \"background\"\n".into();
    let mut server = fixture.server(spec);
    let run_file = server.data_dir.join(tessera_server::grace::RUN_FILE);
    server.start(StartMode::NewPool).await;
    server.wait_state("serving").await;
    assert!(
        run_file.exists(),
        "a run that syncs in the background is not recorded"
    );
    let status = server.status().await;
    assert_eq!(status.server.store_sync.as_deref(), Some("background"));
    let answer = server
        .post("/v1/checkout", &checkout_body("holder", "cad", 1))
        .await
        .ok();
    let grant_id = answer["grant_id"].as_str().expect("a grant id").to_string();
    let proof = fixture.proof(&grant_id, "holder", "cad", 1);
    let heartbeat = heartbeat_body(&grant_id, "holder", "cad", 1, &proof);

    // Restarted with `--new-pool`, as a service unit that always passes it
    // would: the run's record shows the pool served, so the grace period
    // is kept.
    server.kill();
    server.start(StartMode::NewPool).await;
    server.wait_grace().await;
    let log = server.log();
    assert!(
        log.contains("did not stop cleanly") && log.contains("--new-pool says"),
        "{log}"
    );
    server
        .post("/v1/checkout", &checkout_body("new-client", "cad", 1))
        .await
        .refused(503, "grace_period");
    // Read back from the disk or converted: the holder keeps its seat.
    let renewed = server.post("/v1/heartbeat", &heartbeat).await.ok();
    assert_eq!(renewed["grant_id"].as_str(), Some(grant_id.as_str()));
    wait_grace_over(&server).await;
    check(
        &server,
        "cad",
        1,
        "the holder's grant, after the grace period",
    )
    .await;

    // A clean stop syncs every grant: no grace period, nothing lost.
    assert!(server.terminate().await.success());
    assert!(!run_file.exists(), "a clean stop left the run's record");
    server.start(StartMode::Plain).await;
    let status = server.wait_formed().await;
    assert_eq!(status.server.state, "serving", "{status:#?}");
    check(&server, "cad", 1, "the holder's grant, after a clean stop").await;
    assert!(run_file.exists(), "the new run is not recorded");
    server
        .post("/v1/checkout", &checkout_body("new-client", "cad", 1))
        .await
        .ok();
}

/// Waits (bounded) until `server`'s grace period has run to its end and
/// its record is gone; it then serves.
async fn wait_grace_over(server: &Server) {
    let grace_file = server.data_dir.join(tessera_server::grace::GRACE_FILE);
    let deadline = Instant::now() + LAPSE_TIMEOUT;
    while grace_file.exists() {
        assert!(
            Instant::now() < deadline,
            "the grace period's record outlived it by {LAPSE_TIMEOUT:?}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    assert_eq!(server.status().await.server.state, "serving");
}

/// A holder of one seat of `cad` from before the server lost its store
/// renews `grant_id` with the grant's proof; the server converts it.
async fn renews_from_before(fixture: &Fixture, server: &Server, grant_id: &str, client_id: &str) {
    let proof = fixture.proof(grant_id, client_id, "cad", 1);
    server
        .renews(
            &heartbeat_body(grant_id, client_id, "cad", 1, &proof),
            Renewal::Converted,
        )
        .await;
}

/// The SDK's configuration for `server`, trusting its pool CA.
fn sdk_config(server: &Server) -> ClientConfig {
    let mut config = ClientConfig::new([server.address.as_str()]);
    config.tls = tessera_client::ClientTls::PoolCa(server.credentials.ca_pem());
    config.trust = server.vendor_trust();
    config
}
