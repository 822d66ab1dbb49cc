//! Fuzz targets through the real server: every endpoint, with mutated
//! bodies. Every answer must be JSON, an error with a stable code and the
//! status the protocol gives it, never a dropped connection (a panicking
//! handler) or a 500; afterwards nothing on the server's threads panicked,
//! and it is whole.

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestRunner;
use serde_json::Value;
use tessera_fuzz::mutate::{mutated_bytes, mutated_json, mutated_json_with_text};
use tessera_fuzz::server::{peer_headers, InProcess, Listen, ROUTES};

use crate::seeds;

/// Cases of each target (each is one request to the server).
const CASES: u32 = 2_000;

fn run<S>(
    server: &InProcess,
    strategy: S,
    check: impl Fn(&InProcess, &S::Value) -> Result<(), TestCaseError>,
) where
    S: Strategy,
    S::Value: std::fmt::Debug,
{
    let mut runner = TestRunner::new(tessera_fuzz::config(tessera_fuzz::cases(CASES)));
    if let Err(failure) = runner.run(&strategy, |case| check(server, &case)) {
        panic!("{failure}\npanics on the server: {:#?}", server.panics());
    }
}

/// Posts `body` to `path` and checks the answer is well formed.
fn post_checked(server: &InProcess, path: &str, body: &[u8]) -> Result<(), TestCaseError> {
    let answer = server
        .post(path, body.to_vec())
        .map_err(|err| TestCaseError::fail(format!("POST {path}: {err}")))?;
    answer
        .check_well_formed()
        .map_err(|err| TestCaseError::fail(format!("POST {path}: {err}")))?;
    let panics = server.panics();
    prop_assert!(
        panics.is_empty(),
        "POST {path}: the server panicked: {panics:#?}"
    );
    Ok(())
}

/// Targets of several endpoints: a case picks one path and its strategy's body.
fn endpoints(
    targets: Vec<(&'static str, BoxedStrategy<Vec<u8>>)>,
) -> impl Strategy<Value = (&'static str, Vec<u8>)> {
    let strategies: Vec<BoxedStrategy<(&'static str, Vec<u8>)>> = targets
        .into_iter()
        .map(|(path, strategy)| strategy.prop_map(move |body| (path, body)).boxed())
        .collect();
    proptest::strategy::Union::new(strategies)
}

fn fuzz_endpoints(server: &InProcess, targets: Vec<(&'static str, BoxedStrategy<Vec<u8>>)>) {
    run(server, endpoints(targets), |server, (path, body)| {
        post_checked(server, path, body)
    });
}

/// A grant the server holds, for heartbeats and check-ins to name.
fn held_grant(server: &InProcess) -> String {
    let answer = server.post_json("/v1/checkout", &seeds::checkouts()[0]);
    assert_eq!(answer.status, 200, "{}", answer.text());
    let grant: Value = serde_json::from_slice(&answer.body).unwrap();
    grant["grant_id"].as_str().unwrap().to_string()
}

#[test]
fn fuzz_client_endpoints() {
    let server = InProcess::start(Listen::Memory);
    let grant = held_grant(&server);
    fuzz_endpoints(
        &server,
        vec![
            ("/v1/checkout", mutated_json(seeds::checkouts()).boxed()),
            ("/v1/noop", mutated_json(seeds::checkouts()).boxed()),
            (
                "/v1/heartbeat",
                mutated_json(seeds::heartbeats(&grant)).boxed(),
            ),
            ("/v1/checkin", mutated_json(seeds::checkins(&grant)).boxed()),
        ],
    );
    server.assert_healthy();
}

#[test]
fn fuzz_admin_endpoints() {
    let server = InProcess::start(Listen::Memory);
    let pool_files = vec![server.pool_text.replace("sequence = 1", "sequence = 2")];
    let mut pool_files_and_more = pool_files.clone();
    pool_files_and_more.extend(seeds::pool_files_of_one());
    fuzz_endpoints(
        &server,
        vec![
            (
                "/v1/admin/pool-file",
                mutated_json_with_text(seeds::pool_file_updates(), "text", pool_files_and_more)
                    .boxed(),
            ),
            (
                "/v1/admin/distribution",
                mutated_json(seeds::distributions()).boxed(),
            ),
            (
                "/v1/admin/license",
                mutated_json_with_text(seeds::add_licenses(), "text", seeds::license_files())
                    .boxed(),
            ),
            (
                "/v1/admin/license/remove",
                mutated_json(seeds::remove_licenses()).boxed(),
            ),
        ],
    );
    // An administrator's changes may have left the pool as they asked (a
    // second server it waits for, fewer seats): it answers, and nothing
    // panicked.
    server.assert_whole();
}

#[test]
fn fuzz_peer_endpoints() {
    let server = InProcess::start(Listen::Memory);
    fuzz_endpoints(
        &server,
        vec![
            ("/v1/peer/report", mutated_json(seeds::reports()).boxed()),
            ("/v1/peer/borrow", mutated_json(seeds::borrows()).boxed()),
            (
                "/v1/peer/first-pool-file",
                mutated_json_with_text(
                    seeds::pool_file_updates(),
                    "text",
                    seeds::pool_files_of_one(),
                )
                .boxed(),
            ),
            (
                "/v1/peer/command",
                mutated_json(seeds::peer_commands()).boxed(),
            ),
        ],
    );
    server.assert_healthy();
}

#[test]
fn fuzz_raft_append() {
    let server = InProcess::start(Listen::Memory);
    fuzz_endpoints(
        &server,
        vec![(
            "/v1/peer/raft/append",
            mutated_json(seeds::appends()).boxed(),
        )],
    );
    // A peer that really leads may replace this server's log: Raft trusts
    // its authenticated peers. The server answers, nothing panicked, and
    // its Raft still runs.
    server.assert_whole();
}

#[test]
fn fuzz_raft_vote() {
    let server = InProcess::start(Listen::Memory);
    fuzz_endpoints(
        &server,
        vec![("/v1/peer/raft/vote", mutated_json(seeds::votes()).boxed())],
    );
    server.assert_healthy();
}

/// A snapshot's chunk around a mutated control state (reaching the checks
/// of the state), or the whole request mutated (reaching the chunking).
fn snapshots() -> impl Strategy<Value = Vec<u8>> {
    let states = seeds::control_states();
    let state_values: Vec<Value> = states
        .iter()
        .map(|s| serde_json::to_value(s).unwrap())
        .collect();
    let wrapper = seeds::snapshot(7, &states[0]);
    let around_state = mutated_json(state_values).prop_map(move |data| {
        let mut request = wrapper.clone();
        request["data"] = serde_json::to_value(data).unwrap();
        serde_json::to_vec(&request).unwrap()
    });
    let whole: Vec<Value> = states.iter().map(|s| seeds::snapshot(7, s)).collect();
    prop_oneof![3 => around_state, 1 => mutated_json(whole)]
}

#[test]
fn fuzz_raft_snapshot() {
    let server = InProcess::start(Listen::Memory);
    fuzz_endpoints(
        &server,
        vec![("/v1/peer/raft/snapshot", snapshots().boxed())],
    );
    server.assert_whole();
}

/// Any endpoint, any method, arbitrary bytes, with and without the pool's
/// headers: the router and the extractor themselves.
#[test]
fn fuzz_any_endpoint_with_arbitrary_bytes() {
    let server = InProcess::start(Listen::Memory);
    let mut all: Vec<Value> = seeds::checkouts();
    all.extend(seeds::reports());
    all.extend(seeds::votes());
    all.extend(seeds::distributions());
    let bytes: Vec<Vec<u8>> = all.iter().map(|v| serde_json::to_vec(v).unwrap()).collect();
    let strategy = (
        any::<Index>(),
        any::<bool>(),
        0u8..4,
        mutated_bytes(bytes, 16),
    );
    run(
        &server,
        strategy,
        |server, (route, post_instead, headers, body)| {
            let (method, path) = route.get(ROUTES);
            let method = if *post_instead { "POST" } else { method };
            let mut sent = Vec::new();
            if headers & 1 == 1 {
                sent.push(("content-type", "application/json"));
            }
            if headers & 2 == 2 {
                sent.extend(peer_headers());
            }
            let answer = server
                .request(method, path, &sent, body.clone())
                .map_err(|err| TestCaseError::fail(format!("{method} {path}: {err}")))?;
            if *path == "/metrics" && answer.status == 200 {
                return Ok(()); // Prometheus text, not JSON
            }
            answer
                .check_well_formed()
                .map_err(|err| TestCaseError::fail(format!("{method} {path}: {err}")))?;
            Ok(())
        },
    );
    server.assert_healthy();
}
