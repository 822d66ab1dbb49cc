//! The API document, `/v1/openapi.json`, against the server that serves it:
//! every documented operation is served, and a property-based fuzzer
//! driven by the document (schemathesis, from PyPI) finds no server error
//! and no answer the document does not describe.
//!
//! The fuzzer is not part of the Rust toolchain: `scripts/install-sdk-tools.sh`
//! installs it (pinned) into `<target>/schemathesis-venv`. Without it the
//! fuzzing test says it is skipped, unless `TESSERA_REQUIRE_SCHEMATHESIS=1`
//! (CI), which makes a missing one a failure. `TESSERA_SCHEMATHESIS` names
//! another `schemathesis` executable; `TESSERA_SCHEMATHESIS_SEED` replays a
//! run; `TESSERA_SCHEMATHESIS_EXAMPLES` fuzzes deeper than CI does.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tessera_proto::POOL_HEADER;

use crate::fixture::{code, Fixture, Server};

/// The pool id the fixture's pools have (`tessera pool init --pool-id`).
const POOL_ID: &str = "e2e";

/// Test cases per operation and phase: a bounded pass, not a search
/// (`TESSERA_SCHEMATHESIS_EXAMPLES` sets another number).
const EXAMPLES_PER_OPERATION: u32 = 20;

/// Longest the fuzzer may run before it is killed (it takes about a
/// minute on two cores).
const FUZZER_PATIENCE: Duration = Duration::from_secs(180);

/// The schemathesis version `scripts/install-sdk-tools.sh` installs.
const SCHEMATHESIS_VERSION: &str = "4.32.5";

/// What the fuzzer checks of every answer: no 5xx, a status the document
/// lists for the operation, its content type, and a body of its schema
/// (for an error: an `ErrorBody` whose code is one of that status's).
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
                      response_schema_conformance";

async fn document(server: &Server) -> Value {
    let answer = server
        .http
        .get(&server.address, "/v1/openapi.json")
        .send()
        .await
        .expect("/v1/openapi.json answers");
    assert_eq!(answer.status(), 200);
    let content_type = answer
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert_eq!(content_type, "application/json");
    answer.json().await.expect("the document is JSON")
}

/// Every `$ref` in `value`.
fn references(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                match (key.as_str(), inner) {
                    ("$ref", Value::String(target)) => found.push(target.clone()),
                    _ => references(inner, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|inner| references(inner, found)),
        _ => {}
    }
}

/// Every operation the document names is served: a request to it is
/// answered by its handler, not by the router's `not_found` or
/// `method_not_allowed` fallback. (The other way round holds by
/// construction: the router serves the client, status, monitoring and
/// admin groups only through the documented handlers, `api::Documented`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_operation_is_served() {
    let fixture = Fixture::new().await;
    let server = fixture.serve(&code("cad", 3)).await;
    let document = document(&server).await;
    assert_eq!(document["openapi"], "3.1.0");
    assert!(document["components"]["schemas"]["ErrorBody"].is_object());
    let mut found = Vec::new();
    references(&document, &mut found);
    for target in &found {
        let pointer = target.strip_prefix('#').expect("a local reference");
        assert!(document.pointer(pointer).is_some(), "{target} resolves");
    }

    let paths = document["paths"].as_object().expect("paths");
    assert!(paths.len() >= 15, "{:?}", paths.keys());
    for (path, item) in paths {
        for method in item.as_object().expect("a path item").keys() {
            let method: reqwest::Method = method.to_uppercase().parse().expect("a method");
            // An empty object: every body route refuses it for its missing
            // fields, in its own handler's extractor.
            let request = server
                .http
                .request(method.clone(), &server.address, path)
                .header(POOL_HEADER, POOL_ID)
                .json(&json!({}));
            let answer = request.send().await.expect("an answer");
            let status = answer.status().as_u16();
            let body = answer.bytes().await.expect("the body");
            let code = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|body| body["error"]["code"].as_str().map(str::to_string));
            assert!(
                !matches!(code.as_deref(), Some("not_found" | "method_not_allowed")),
                "{method} {path} is documented but not served: {status} {}",
                String::from_utf8_lossy(&body)
            );
            assert!(status < 500, "{method} {path}: {status}");
        }
    }
    // And the router does answer its fallbacks elsewhere: the probe above
    // can fail.
    let answer = server.get("/v1/not-a-route").await;
    answer.refused(404, "not_found");
    let answer = server.get("/v1/checkout").await;
    answer.refused(405, "method_not_allowed");
}

/// The `schemathesis` executable: `TESSERA_SCHEMATHESIS`, else the one
/// `scripts/install-sdk-tools.sh` installs under the target directory,
/// else none (the test is skipped, or fails under
/// `TESSERA_REQUIRE_SCHEMATHESIS`).
fn schemathesis() -> Option<PathBuf> {
    let installed = tessera_testkit::cargo::profile_dir()
        .parent()
        .expect("the target directory")
        .join("schemathesis-venv/bin/schemathesis");
    let executable = std::env::var_os("TESSERA_SCHEMATHESIS")
        .map(PathBuf::from)
        .unwrap_or(installed);
    let found = std::process::Command::new(&executable)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|out| out.status.success());
    if found {
        return Some(executable);
    }
    assert!(
        std::env::var_os("TESSERA_REQUIRE_SCHEMATHESIS").is_none(),
        "TESSERA_REQUIRE_SCHEMATHESIS is set and {} does not run (`bash \
         scripts/install-sdk-tools.sh` installs schemathesis {SCHEMATHESIS_VERSION})",
        executable.display()
    );
    println!(
        "skipped: schemathesis is not installed at {} (`bash scripts/install-sdk-tools.sh`)",
        executable.display()
    );
    None
}

/// schemathesis against a real server, as an administrator (its token and
/// its pool's header on every request, so that the admin routes are
/// reached, not only refused): a bounded pass of every documented
/// operation. The admin routes stay in: the fuzzer's pool files, codes and
/// distributions are refused, and a removal names a code it cannot guess.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_undocumented_answer() {
    let Some(schemathesis) = schemathesis() else {
        return;
    };
    let started = Instant::now();
    let fixture = Fixture::new().await;
    let server = fixture.serve(&code("cad", 3)).await;
    let seed = std::env::var("TESSERA_SCHEMATHESIS_SEED")
        .ok()
        .and_then(|seed| seed.parse::<u64>().ok())
        .unwrap_or_else(|| u64::from(rand::random::<u32>()));
    println!("schemathesis seed {seed} (TESSERA_SCHEMATHESIS_SEED={seed} replays it)");
    let examples = std::env::var("TESSERA_SCHEMATHESIS_EXAMPLES")
        .ok()
        .and_then(|examples| examples.parse::<u32>().ok())
        .unwrap_or(EXAMPLES_PER_OPERATION);
    let token = server.credentials.admin_token();
    let location = format!("https://{}/v1/openapi.json", server.address);
    let mut command = tokio::process::Command::new(&schemathesis);
    command
        .arg("run")
        .arg(&location)
        .arg("--tls-verify")
        .arg(server.credentials.ca_file())
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args(["--header", &format!("{POOL_HEADER}: {POOL_ID}")])
        .args(["--checks", CHECKS])
        .args(["--max-examples", &examples.to_string()])
        .args(["--seed", &seed.to_string()])
        .args(["--workers", "2", "--request-timeout", "10"])
        // A connection the shared machine's load breaks (a TLS stream cut
        // short) is tried again once; a route that breaks its connection
        // every time still fails, and a panic is caught in the log below.
        .args(["--request-retries", "1"])
        .args(["--report-dir"])
        .arg(fixture.path().join("schemathesis-report"))
        .env("NO_COLOR", "1")
        .current_dir(fixture.path())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(FUZZER_PATIENCE, command.output())
        .await
        .unwrap_or_else(|_| {
            panic!("schemathesis ran longer than {FUZZER_PATIENCE:?} (seed {seed})")
        })
        .expect("schemathesis runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "schemathesis found answers the document does not describe (seed {seed}):\n{text}\n\
         the server's log:\n{}",
        server.log()
    );
    let log = server.log();
    assert!(
        !log.contains("panicked"),
        "a request schemathesis sent (seed {seed}) made the server panic:\n{log}"
    );
    println!("{text}");
    println!("schemathesis passed in {:?}", started.elapsed());
}
