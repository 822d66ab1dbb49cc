//! The customer as the vendor's adversary (SECURITY.md, "What a config edit
//! cannot do"): each way to get seats the vendor did not sell, tried with
//! the real binary, and refused by the program or the server with a clear
//! error.

use std::ffi::OsStr;
use std::time::Duration;

use serde_json::{json, Value};
use tessera_client::{Client, ClientConfig, ClientError, ClientTls};

use crate::fixture::{
    checkout_body, code, fake_server, feature_of, in_use, tessera, Fixture, Server, ServerSpec,
    StartMode, VENDOR,
};

/// A program of the fixture's vendor, aimed at `address`.
fn program(server: &Server, address: &str, tls: ClientTls) -> Client {
    let mut config = ClientConfig::new([address]);
    config.tls = tls;
    config.trust = server.vendor_trust();
    config.clock_file = None;
    config.request_timeout = Duration::from_secs(5);
    Client::new(config).expect("a program's configuration")
}

fn untrusted(result: Result<tessera_client::SeatGuard, ClientError>) -> String {
    match result {
        Err(ClientError::UntrustedAnswer { message }) => message,
        other => panic!("expected an untrusted answer, got {other:?}"),
    }
}

/// The customer makes a key pair named like the vendor, signs a 1,000-seat
/// code with it and lists the key in the server's config. The server
/// serves the code (the config says to trust the key), but no program of
/// the vendor accepts a seat of the feature: the pool's hard limit rests
/// on a code the vendor did not sign. The seat it was granted is given
/// back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vendor_key_the_customer_adds_makes_no_program_accept_a_seat() {
    let fixture = Fixture::new().await;
    let customer = fixture.path().join("customer");
    tessera([
        OsStr::new("vendor"),
        OsStr::new("keygen"),
        OsStr::new("--vendor"),
        OsStr::new(VENDOR),
        OsStr::new("--out"),
        customer.as_os_str(),
    ])
    .await
    .success();
    let unsigned = fixture.path().join("more.toml");
    std::fs::write(
        &unsigned,
        "[[license]]\nid = \"acme-cad-more\"\nfeature = \"cad\"\nseats = 1000\nexpiry = \"permanent\"\n",
    )
    .unwrap();
    let forged = tessera([
        OsStr::new("license"),
        OsStr::new("sign"),
        OsStr::new("--key"),
        customer.join(format!("{VENDOR}.key")).as_os_str(),
        unsigned.as_os_str(),
    ])
    .await
    .success()
    .stdout;
    let customer_key = tessera_testkit::public_key_of(
        &std::fs::read_to_string(customer.join(format!("{VENDOR}.pub"))).unwrap(),
    )
    .unwrap();
    let mut spec = ServerSpec::new(fixture.sign(&code("cad", 5)).await + &forged);
    spec.config_tables =
        format!("[[vendors]]\nname = \"{VENDOR}\"\npublic_key = \"{customer_key}\"\n");
    let mut server = fixture.server(spec);
    server.start(StartMode::NewPool).await;
    server.wait_state("serving").await;
    assert_eq!(feature_of(&server.status().await, "cad").hard_limit, 1005);

    let tls = ClientTls::PoolCa(server.credentials.ca_pem());
    let message = untrusted(
        program(&server, &server.address, tls)
            .checkout("cad", "1.0", 1)
            .await,
    );
    assert!(
        message.contains("license code acme-cad-more")
            && message.contains("no vendor key built into this program signed"),
        "{message}"
    );
    // The command line, given the vendor's key, refuses it the same way.
    let vendor_key = fixture.public_key().display().to_string();
    tessera(server.cli(&["checkout", "cad", "--detach", "--vendor-key", &vendor_key]))
        .await
        .failure()
        .mentions(&[
            "acme-cad-more",
            "no vendor key built into this program signed",
        ]);
    // The refused grant was checked in, not left to lapse.
    server
        .poll(
            "the refused seat given back",
            Duration::from_secs(10),
            |s| in_use(s, "cad") == 0,
        )
        .await;
}

/// What a fake server answers: a grant of whatever was asked, with no
/// signature, or a genuine signed answer captured earlier.
fn fake_grant(asked: &Value, own: &str) -> Value {
    json!({
        "grant_id": "fake-grant",
        "feature": asked["feature"],
        "count": asked["count"],
        "server_id": "A",
        "lease_ms": 3_600_000u64,
        "heartbeat_interval_ms": 60_000u64,
        "servers": [{"id": "A", "address": own}],
        "converted": false,
        "proof": "fake",
    })
}

/// A fake server that grants everything, and one that replays a genuine
/// signed grant (captured from the real server) to every request: neither
/// satisfies a program. The replay is refused because the answer is signed
/// over another request's nonce, for a checkout and a heartbeat alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fake_server_and_a_replayed_answer_satisfy_no_program() {
    let fixture = Fixture::new().await;
    let server = fixture.serve(&code("cad", 5)).await;

    let always = fake_server(|own, asked| (200, fake_grant(&asked, own))).await;
    let message = untrusted(
        program(&server, &always, ClientTls::Plain)
            .checkout("cad", "1.0", 1)
            .await,
    );
    assert!(
        message.contains("a grant without a signed answer"),
        "{message}"
    );

    // A genuine answer, as a customer could record it off a real server.
    let mut body = checkout_body("recorded-run", "cad", 1);
    body["nonce"] = "recordedrecordedrecordedrecorded".into();
    let genuine = server.post("/v1/checkout", &body).await.ok();
    assert!(genuine["answer"]["signature"].is_string(), "{genuine}");
    let replay = genuine.clone();
    let replaying = fake_server(move |_, _| (200, replay.clone())).await;
    let client = program(&server, &replaying, ClientTls::Plain);
    let message = untrusted(client.checkout("cad", "1.0", 1).await);
    assert!(message.contains("a replay"), "{message}");
    // As a renewal: the heartbeat's own nonce is not the recorded one.
    let heartbeat = tessera_proto::HeartbeatRequest {
        grant_id: genuine["grant_id"].as_str().unwrap().into(),
        client_id: "recorded-run".into(),
        user: "e2e".into(),
        host: "loopback".into(),
        display: None,
        idle_ms: None,
        feature: "cad".into(),
        version: "1.0".into(),
        count: 1,
        answer_within_ms: None,
        nonce: Some("freshfreshfreshfreshfreshfresh".into()),
        codes_held: None,
        server_key: None,
        renewal: 1,
        proof: tessera_proto::Proof(genuine["proof"].as_str().unwrap().into()),
        holding: None,
    };
    match client.heartbeat_once(&replaying, &heartbeat).await {
        Err(ClientError::UntrustedAnswer { message }) => {
            assert!(message.contains("a replay"), "{message}")
        }
        other => panic!("a replayed renewal was accepted: {other:?}"),
    }
    // The real server's answer to the program's own request checks.
    let seat = program(
        &server,
        &server.address,
        ClientTls::PoolCa(server.credentials.ca_pem()),
    )
    .checkout("cad", "1.0", 1)
    .await
    .expect("a genuine grant is accepted");
    seat.release().await.unwrap();
}

/// The clock set back by a day. The server, restarted with its clock a day
/// behind the time it kept on disk, serves nothing and its status says
/// why; a program whose kept time is a day ahead of its clock checks
/// nothing out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_set_back_a_day_stops_the_server_and_the_program() {
    let fixture = Fixture::new().await;
    let mut server = fixture.serve(&code("cad", 5)).await;
    assert!(server.data_dir.join("clock.mark").exists());
    server.terminate().await;
    server.set_env("TESSERA_TEST_FAULTS", "1");
    server.set_env("TESSERA_TEST_CLOCK_OFFSET_MS", "-86400000");
    server.start(StartMode::Plain).await;
    let status = server.wait_state("clock_set_back").await;
    let reason = status.server.state_reason.unwrap_or_default();
    assert!(
        reason.contains("s earlier than the latest time") && reason.contains("set back"),
        "{reason}"
    );
    server
        .post("/v1/checkout", &checkout_body("late", "cad", 1))
        .await
        .refused(503, "clock_set_back");
    let text = tessera(server.cli(&["status"])).await.success().stdout;
    assert!(
        text.contains("clock_set_back") && text.contains("not serving: the clock reads"),
        "{text}"
    );

    let clock_file = fixture.path().join("program-clock");
    let day_ahead = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        + 86_400_000;
    std::fs::write(&clock_file, day_ahead.to_string()).unwrap();
    let mut config = ClientConfig::new([server.address.as_str()]);
    config.tls = ClientTls::PoolCa(server.credentials.ca_pem());
    config.trust = server.vendor_trust();
    config.clock_file = Some(clock_file);
    match Client::new(config).unwrap().checkout("cad", "1.0", 1).await {
        Err(error @ ClientError::ClockSetBack { .. }) => {
            assert!(error.to_string().contains("set the clock right"), "{error}")
        }
        other => panic!("a program with its clock set back checked out: {other:?}"),
    }
}
