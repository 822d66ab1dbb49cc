//! Temporary licenses (seed 004) through the HTTP API of a real server:
//! activation per device up to the vendor's limit, seats counted against
//! the hard limit with ordinary checkouts, extension by the newest device
//! only, return, and expiry by the leader's clock after a restart.

use serde_json::{json, Value};
use tessera_core::answer::ServerPublicKey;

use crate::fixture::{
    checkout_body, code_with, feature_of, Fixture, Server, ServerSpec, StartMode, LONG_POLICY,
};

fn activate_body(user: &str, device: &str) -> Value {
    json!({
        "client_id": format!("{user}-{device}"),
        "user": user,
        "host": device,
        "feature": "cad",
        "version": "1.0",
        "device": device,
    })
}

fn allocation_of_a(status: &tessera_proto::StatusResponse) -> u32 {
    feature_of(status, "cad").servers[0].allocation
}

/// The token's signature checks under the key it names.
fn check_token(token: &Value) {
    let token: tessera_proto::TemporaryToken =
        serde_json::from_value(token.clone()).expect("a temporary license token");
    let codes: Vec<tessera_core::LicenseCode> = token
        .codes
        .iter()
        .map(|text| tessera_core::LicenseCode::from_text(text).unwrap())
        .collect();
    let fields = token.fields(tessera_core::answer::codes_sha256(&codes));
    let key = ServerPublicKey::from_base64(&token.server_key).unwrap();
    key.verify_text(&fields.canonical_form(&key.key_id()), &token.signature)
        .expect("the token's signature checks");
}

async fn serve_temporary(fixture: &Fixture, terms: &str) -> Server {
    let policy = format!("{LONG_POLICY}{terms}");
    fixture.serve(&code_with("cad", 5, &policy)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporary_licenses_count_against_the_hard_limit_three_devices_a_ticket() {
    let fixture = Fixture::new().await;
    let mut server = serve_temporary(&fixture, "temporary_period_s = 28800\n").await;
    let mut tokens = Vec::new();
    for device in ["pc1", "pc2", "pc3"] {
        let token = server
            .post("/v1/temporary/activate", &activate_body("alice", device))
            .await
            .ok();
        check_token(&token);
        assert_eq!(token["ticket"], "alice");
        assert_eq!(
            token["expires_unix_ms"].as_i64().unwrap() - token["issued_unix_ms"].as_i64().unwrap(),
            28_800_000
        );
        tokens.push(token);
    }
    server
        .post("/v1/temporary/activate", &activate_body("alice", "pc4"))
        .await
        .refused(409, "too_many_devices");
    // Three seats are out on devices: two are left for checkouts. The
    // status lists them, the metrics count them.
    let status = server.status().await;
    assert_eq!(allocation_of_a(&status), 2);
    let cad = feature_of(&status, "cad");
    assert_eq!((cad.temporary_seats, cad.temporaries.len()), (3, 3));
    assert_eq!(cad.temporaries[0].ticket.as_deref(), Some("alice"));
    let text = crate::fixture::tessera(server.cli(&["status"]))
        .await
        .success()
        .stdout;
    assert!(
        text.contains("temporary licenses: 3 seats out on devices"),
        "{text}"
    );
    assert!(text.contains("ticket alice device pc"), "{text}");
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("tessera_temporary_seats{feature=\"cad\"} 3"),
        "{metrics}"
    );
    for n in 0..2 {
        server
            .post("/v1/checkout", &checkout_body(&format!("c{n}"), "cad", 1))
            .await
            .ok();
    }
    server
        .post("/v1/checkout", &checkout_body("c9", "cad", 1))
        .await
        .refused(409, "no_seats_available");

    let request = |token: &Value| {
        json!({
            "feature": "cad",
            "license_id": token["license_id"],
            "device": token["device"],
            "proof": token["proof"],
        })
    };
    // The oldest device is withdrawn at its extension; the newest extends.
    server
        .post("/v1/temporary/extend", &request(&tokens[0]))
        .await
        .refused(409, "license_withdrawn");
    let extended = server
        .post("/v1/temporary/extend", &request(&tokens[2]))
        .await
        .ok();
    check_token(&extended);
    // A proof of another license does not return this one.
    let mut forged = request(&tokens[1]);
    forged["proof"] = tokens[0]["proof"].clone();
    server
        .post("/v1/temporary/return", &forged)
        .await
        .refused(403, "grant_proof_invalid");
    // Returned: the seat is the pool's again.
    let returned = server
        .post("/v1/temporary/return", &request(&tokens[1]))
        .await
        .ok();
    assert_eq!(returned["released_seats"], 1);
    server
        .post("/v1/temporary/return", &request(&tokens[1]))
        .await
        .refused(409, "license_withdrawn");
    server
        .poll(
            "the returned seat",
            std::time::Duration::from_secs(10),
            |s| feature_of(s, "cad").free_pool == 1,
        )
        .await;
    server
        .post("/v1/checkout", &checkout_body("c9", "cad", 1))
        .await
        .ok();
}

/// Licenses are in the pool's log: a restart keeps them, and the leader
/// expires them by its clock once their time and the clock tolerance have
/// passed (here the server restarts an hour later by its clock).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_temporary_licenses_until_the_leader_expires_them() {
    let fixture = Fixture::new().await;
    let mut server = serve_temporary(&fixture, "temporary_period_s = 60\n").await;
    server
        .post("/v1/temporary/activate", &activate_body("bob", "laptop"))
        .await
        .ok();
    server
        .post("/v1/temporary/activate", &activate_body("bob", "laptop"))
        .await
        .refused(403, "temporary_not_allowed");
    assert_eq!(allocation_of_a(&server.status().await), 4);
    server.terminate().await;
    server.start(StartMode::Plain).await;
    let status = server.wait_state("serving").await;
    assert_eq!(allocation_of_a(&status), 4, "kept across the restart");
    server.terminate().await;
    server.set_env("TESSERA_TEST_FAULTS", "1");
    server.set_env("TESSERA_TEST_CLOCK_OFFSET_MS", "3600000");
    server.start(StartMode::Plain).await;
    server
        .poll(
            "the expired license's seat back",
            std::time::Duration::from_secs(20),
            |s| feature_of(s, "cad").free_pool == 1,
        )
        .await;
}

/// A code that does not allow temporary licenses refuses them, and an
/// offline borrow beyond the vendor's days is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporary_licenses_only_as_the_vendor_allows() {
    let fixture = Fixture::new().await;
    let plain = fixture.serve(&code_with("cad", 5, LONG_POLICY)).await;
    plain
        .post("/v1/temporary/activate", &activate_body("alice", "pc1"))
        .await
        .refused(403, "temporary_not_allowed");
    let fixture = Fixture::new().await;
    let server = serve_temporary(&fixture, "temporary_offline_days_max = 3\n").await;
    let mut borrow = activate_body("alice", "pc1");
    borrow["days"] = 4.into();
    server
        .post("/v1/temporary/activate", &borrow)
        .await
        .refused(403, "temporary_not_allowed");
    borrow["days"] = 3.into();
    let token = server.post("/v1/temporary/activate", &borrow).await.ok();
    assert_eq!(
        token["expires_unix_ms"].as_i64().unwrap() - token["issued_unix_ms"].as_i64().unwrap(),
        3 * 86_400_000
    );
}

/// Seed 004 as a user lives it: a program takes a temporary license and
/// ends without returning it; the whole pool stops; the program starts
/// again with no network and runs on the cached token (a token copied to
/// another device does not count); the pool comes back and `tessera
/// return` gives the license back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_runs_offline_on_its_temporary_license_and_returns_it_later() {
    let fixture = Fixture::new().await;
    let mut server = serve_temporary(&fixture, "temporary_period_s = 28800\n").await;
    let cache = fixture.path().join("cache");
    let program = |server: &Server, device: Option<&str>| {
        let mut config = tessera_client::ClientConfig::new([server.address.as_str()]);
        config.tls = tessera_client::ClientTls::PoolCa(server.credentials.ca_pem());
        config.trust = server.vendor_trust();
        config.clock_file = None;
        config.temporary_dir = Some(cache.join("tessera").join("temporary"));
        if let Some(device) = device {
            config.device = device.to_string();
        }
        tessera_client::Client::new(config).unwrap()
    };
    // Closing the program returns a license whose terms say so.
    let closed = program(&server, Some("dev-closed"))
        .activate("cad", "1.0", None)
        .await
        .unwrap();
    assert!(closed.token().return_on_close);
    drop(closed);
    server
        .poll(
            "the closed program's seat",
            std::time::Duration::from_secs(10),
            |s| feature_of(s, "cad").free_pool == 1,
        )
        .await;
    let license = program(&server, None)
        .activate("cad", "1.0", None)
        .await
        .unwrap();
    assert!(license.is_valid());
    let (license_id, device) = (license.token().license_id, license.token().device);
    // A second device of the same user takes the ticket: the first is
    // withdrawn at its next extension, with its own error and state.
    let newer = program(&server, Some("dev-newer"))
        .activate("cad", "1.0", None)
        .await
        .unwrap();
    match license.extend().await {
        Err(error) => assert_eq!(
            error.code(),
            Some(tessera_proto::ErrorCode::LicenseWithdrawn),
            "{error}"
        ),
        Ok(()) => panic!("an older device extended its license"),
    }
    newer.extend().await.expect("the newest device extends");
    newer.return_license().await.unwrap();
    // The program is killed: nothing returns the license.
    std::mem::forget(license);
    assert_eq!(allocation_of_a(&server.status().await), 2);

    server.terminate().await;
    let offline = program(&server, None)
        .cached_temporary("cad", "1.0")
        .expect("the cached license counts with no server up");
    assert!(offline.is_valid());
    assert_eq!(offline.token().license_id, license_id);
    std::mem::forget(offline);
    // Copied to another machine (and renamed for its device), it does not count.
    let dir = cache.join("tessera").join("temporary");
    std::fs::copy(
        dir.join(format!("cad.{device}.json")),
        dir.join("cad.dev-another-machine.json"),
    )
    .unwrap();
    match program(&server, Some("dev-another-machine")).cached_temporary("cad", "1.0") {
        Err(error) => assert!(
            error.to_string().contains("copied from another device"),
            "{error}"
        ),
        Ok(_) => panic!("a token counted on another device"),
    }

    server.start(StartMode::Plain).await;
    server.wait_state("serving").await;
    let cache_env = cache.display().to_string();
    crate::fixture::tessera_env(
        &[("XDG_CACHE_HOME", cache_env.as_str())],
        server.cli(&["return", "cad"]),
    )
    .await
    .success()
    .mentions(&["returned the temporary license of `cad`"]);
    server
        .poll(
            "the returned seat",
            std::time::Duration::from_secs(10),
            |s| feature_of(s, "cad").free_pool == 3,
        )
        .await;
}

/// The administrator tightens the vendor's terms in the pool file, live:
/// one device a ticket and one hour a license; a loosening is refused with
/// the term named, and `allowed = false` stops new licenses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_file_tightens_the_vendors_terms_and_never_loosens_them() {
    let fixture = Fixture::new().await;
    let server = serve_temporary(&fixture, "temporary_period_s = 28800\n").await;
    let installed = std::fs::read_to_string(&server.pool_file).unwrap();
    let update = |sequence: u32, terms: &str| {
        let text = format!(
            "{}\n[temporary.cad]\n{terms}",
            installed.replacen("sequence = 1\n", &format!("sequence = {sequence}\n"), 1)
        );
        let path = fixture.path().join(format!("pool-{sequence}.toml"));
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    };
    let looser = update(2, "devices_max = 5\n");
    crate::fixture::tessera(server.cli(&["admin", "update-pool-file", &looser]))
        .await
        .failure()
        .mentions(&["devices_max is 5, looser than the vendor's 3"]);
    let tighter = update(
        2,
        "devices_max = 1\nperiod_s = 3600\nextend_after_s = 1800\n",
    );
    crate::fixture::tessera(server.cli(&["admin", "update-pool-file", &tighter]))
        .await
        .success();
    let token = server
        .post("/v1/temporary/activate", &activate_body("alice", "pc1"))
        .await
        .ok();
    let issued = token["issued_unix_ms"].as_i64().unwrap();
    assert_eq!(
        token["expires_unix_ms"].as_i64().unwrap() - issued,
        3_600_000
    );
    assert_eq!(
        token["extend_after_unix_ms"].as_i64().unwrap() - issued,
        1_800_000
    );
    server
        .post("/v1/temporary/activate", &activate_body("alice", "pc2"))
        .await
        .refused(409, "too_many_devices");
    let closed = update(3, "allowed = false\n");
    crate::fixture::tessera(server.cli(&["admin", "update-pool-file", &closed]))
        .await
        .success();
    server
        .post("/v1/temporary/activate", &activate_body("bob", "pc1"))
        .await
        .refused(403, "temporary_not_allowed");
}

/// The seed's cycle over three days, the wall clocks of the server and the
/// program moved together (days in seconds): the SDK extends the 8 h
/// license once 4 h have passed and not before, from the same device, for a
/// full period each time; a license nobody extends expires once 8 h and the
/// clock tolerance have passed; closing the program returns its license.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_8_hour_license_extends_itself_every_4_hours_for_three_days() {
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};
    use tessera_client::{TemporaryState, WallClock};
    const HOUR_MS: i64 = 3_600_000;

    let fixture = Fixture::new().await;
    let clock_file = fixture.path().join("clock-offset-ms");
    std::fs::write(&clock_file, "0").unwrap();
    let policy = format!("{LONG_POLICY}temporary_period_s = 28800\n");
    let mut spec = ServerSpec::new(fixture.sign(&code_with("cad", 5, &policy)).await);
    spec.env = vec![
        ("TESSERA_TEST_FAULTS".into(), "1".into()),
        (
            "TESSERA_TEST_CLOCK_FILE".into(),
            clock_file.display().to_string(),
        ),
    ];
    let mut server = fixture.server(spec);
    server.start(StartMode::NewPool).await;
    server.wait_state("serving").await;

    let offset = Arc::new(AtomicI64::new(0));
    let move_clocks = |by_ms: i64| {
        let now = offset.fetch_add(by_ms, Ordering::SeqCst) + by_ms;
        std::fs::write(&clock_file, now.to_string()).unwrap();
    };
    let mut config = tessera_client::ClientConfig::new([server.address.as_str()]);
    config.tls = tessera_client::ClientTls::PoolCa(server.credentials.ca_pem());
    config.trust = server.vendor_trust();
    config.clock_file = None;
    config.temporary_dir = Some(fixture.path().join("cache"));
    config.device = "dev-laptop".into();
    config.wall_clock = {
        let offset = offset.clone();
        WallClock::new(move || WallClock::default().now_unix_ms() + offset.load(Ordering::SeqCst))
            .rechecked_every(Duration::from_millis(50))
    };
    let program = tessera_client::Client::new(config).unwrap();
    let license = program.activate("cad", "1.0", None).await.unwrap();
    // Another user's license, which nothing extends.
    server
        .post("/v1/temporary/activate", &activate_body("bob", "pc1"))
        .await
        .ok();

    let first = license.token();
    let mut last = first.clone();
    for step in 1..=18 {
        move_clocks(4 * HOUR_MS - 60_000);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(license.token(), last, "extended before 4 h, step {step}");
        move_clocks(2 * 60_000);
        let deadline = Instant::now() + Duration::from_secs(10);
        while license.token().issued_unix_ms == last.issued_unix_ms {
            assert!(
                Instant::now() < deadline,
                "not extended after 4 h, step {step}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let token = license.token();
        assert_eq!(
            (token.license_id.as_str(), token.device.as_str()),
            (first.license_id.as_str(), "dev-laptop")
        );
        assert_eq!(token.expires_unix_ms - token.issued_unix_ms, 8 * HOUR_MS);
        assert_eq!(
            token.extend_after_unix_ms - token.issued_unix_ms,
            4 * HOUR_MS
        );
        assert!(token.issued_unix_ms >= last.issued_unix_ms + 4 * HOUR_MS);
        assert!(license.is_valid(), "step {step}");
        assert_eq!(
            *license.subscribe().borrow(),
            TemporaryState::Valid {
                expires_unix_ms: token.expires_unix_ms
            }
        );
        last = token;
        // Bob's license ran out 8 h 10 min after it began: by 12 h the
        // leader has expired it, and only the laptop's is out.
        if step == 3 {
            server
                .poll("bob's expired license", Duration::from_secs(10), |s| {
                    feature_of(s, "cad").temporary_seats == 1
                })
                .await;
        }
    }
    let days = (last.issued_unix_ms - first.issued_unix_ms) as f64 / (24 * HOUR_MS) as f64;
    println!("18 extensions over {days:.2} days of the license's clock");
    assert!(days > 3.0);
    // Closing the program returns its license at once.
    drop(license);
    server
        .poll("the closed program's seat", Duration::from_secs(10), |s| {
            feature_of(s, "cad").temporary_seats == 0
        })
        .await;
}
