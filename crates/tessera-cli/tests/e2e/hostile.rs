//! What an administrator's slip or a hostile config must not do, with the
//! real binary: remove a license code whose seats clients hold, or run a
//! server with the shared peer secret of old.

use std::ffi::OsStr;
use std::time::Duration;

use crate::fixture::{checkout_body, code, tessera, tessera_within, Fixture, ServerSpec};

/// `remove-license` took a code out while clients held seats of its
/// feature; the README promises "its seats must be free first". The leader
/// refuses (`seats_in_use`, how many, and `--force`) unless forced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_license_is_refused_while_seats_are_held_unless_forced() {
    let fixture = Fixture::new().await;
    let mut server = fixture
        .serve(&format!("{}{}", code("cad", 3), code("sim", 2)))
        .await;
    server
        .post("/v1/checkout", &checkout_body("holder", "cad", 2))
        .await
        .ok();
    let remove = |id: &'static str, force: bool| {
        let mut args = vec!["admin", "remove-license", id];
        if force {
            args.push("--force");
        }
        tessera(server.cli(&args))
    };

    let refused = remove("acme-cad", false).await.failure();
    refused.mentions(&[
        "seats_in_use",
        "clients hold 2 seats of feature `cad` (A: 2)",
        "tessera admin remove-license acme-cad --force",
    ]);
    let status = server.status().await;
    assert_eq!(status.pool_sequence, 1, "nothing changed: {status:#?}");

    // A code whose feature has no seat held goes without --force.
    remove("acme-sim", false).await.success();
    let forced = remove("acme-cad", true).await.success();
    forced.mentions(&["sequence 3"]);
    server
        .poll(
            "the codes removed",
            crate::fixture::SERVER_READY_TIMEOUT,
            |s| s.pool_sequence == 3 && s.features.is_empty(),
        )
        .await;
}

/// `peer_secret = ""` once let every peer and admin request in without an
/// `Authorization` header. The shared secret is gone (each server has its
/// own credential): a config that still sets one stops the server at start,
/// saying which key it does not know.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_with_the_old_peer_secret_stops_the_server_at_start() {
    let fixture = Fixture::new().await;
    let licenses = fixture.sign(&code("cad", 1)).await;
    for secret in ["", "   ", "a-long-enough-shared-secret"] {
        let mut spec = ServerSpec::new(licenses.clone());
        spec.server_id = format!("S{}", secret.len());
        spec.config_top = format!("peer_secret = \"{secret}\"\n");
        let server = fixture.server(spec);
        let out = tessera_within(
            Duration::from_secs(20),
            [
                OsStr::new("server"),
                OsStr::new("--config"),
                server.config.as_os_str(),
                OsStr::new("--new-pool"),
            ],
        )
        .await
        .failure();
        out.mentions(&["unknown field `peer_secret`"]);
    }
}
