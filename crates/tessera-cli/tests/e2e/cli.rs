//! The commands a user runs first: `tessera demo` and `tessera status`.

use tessera_proto::StatusResponse;

use crate::fixture::{free_address, tessera, Fixture, ServerSpec, StartMode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_to_completion() {
    let output = tessera(["demo"]).await.success();
    assert!(output.stdout.contains("Demo done."), "{output}");
    // The fail-over is told by the demo itself: no log lines of its
    // clients between the demo's own (TESSERA_LOG=info shows them).
    assert!(
        !output.stderr.contains(" INFO "),
        "log lines in the demo's output:\n{output}"
    );
}

/// Seed 003's demo: three production servers hold the VID, the fourth is
/// refused with the holders named, and takes a slot when one stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_master_demo_lends_three_refuses_a_fourth_and_hands_over() {
    let output = tessera(["demo", "--master"]).await.success();
    let text = &output.stdout;
    assert_eq!(
        text.matches(": holds VID acme-demo-vid").count(),
        4,
        "three holders, then the fourth after the hand-over:\n{output}"
    );
    assert_eq!(
        text.matches(": refused, serves no `cad`").count(),
        1,
        "{output}"
    );
    for needle in [
        "the slots of VID acme-demo-vid are held by",
        "VID acme-demo-vid: 3 of 3 production servers hold it",
        "stops cleanly and gives its slot back",
        "Demo done.",
    ] {
        assert!(text.contains(needle), "{needle} missing:\n{output}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_prints_json_and_a_table_naming_the_feature_and_the_server() {
    let fixture = Fixture::new().await;
    let licenses = fixture
        .sign_flags(&[
            "--feature",
            "cad",
            "--seats",
            "7",
            "--lease-s",
            "60",
            "--heartbeat-interval-s",
            "10",
        ])
        .await;
    let mut spec = ServerSpec::new(licenses);
    spec.server_id = "lic-east-1".into();
    let mut server = fixture.server(spec);
    server.start(StartMode::NewPool).await;
    server.wait_state("serving").await;
    let checkout = tessera(server.cli(&["checkout", "cad", "--count", "2", "--detach"]))
        .await
        .success();
    assert!(
        checkout
            .stdout
            .contains("checked out 2 seats of `cad` from server lic-east-1"),
        "{checkout}"
    );

    let json = tessera(server.cli(&["status", "--json"])).await.success();
    let status: StatusResponse = serde_json::from_str(&json.stdout)
        .unwrap_or_else(|err| panic!("status --json is not a StatusResponse ({err}): {json}"));
    assert_eq!(status.pool_id, "e2e");
    assert_eq!(status.server.id, "lic-east-1");
    assert_eq!(status.server.state, "serving");
    assert_eq!(status.grants.len(), 1, "{status:#?}");
    let grant = &status.grants[0];
    assert_eq!((grant.feature.as_str(), grant.count), ("cad", 2));
    let feature = crate::fixture::feature_of(&status, "cad");
    assert_eq!(feature.hard_limit, 7);

    let table = tessera(server.cli(&["status"])).await.success();
    for expected in [
        "Feature `cad`",
        "lic-east-1",
        &server.address,
        &grant.grant_id,
        "2 of 7 seats in use",
    ] {
        assert!(
            table.stdout.contains(expected),
            "no {expected:?} in {table}"
        );
    }

    // Nobody listening: a failure that says what to check.
    let nowhere = free_address().expect("a free loopback port");
    let down = tessera(["status", "--plain-http", "--server", &nowhere])
        .await
        .failure();
    assert!(down.text().contains(&nowhere), "{down}");
}
