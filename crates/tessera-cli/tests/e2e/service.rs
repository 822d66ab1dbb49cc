//! `tessera server` as a service manager runs it: SIGHUP reads the config
//! and pool file again (a higher sequence is installed across the pool, a
//! bad file is logged and changes nothing), SIGTERM stops it cleanly;
//! `tessera demo --keep` stops its servers on SIGTERM.

use std::time::Duration;

use serde_json::Value;

use crate::fixture::{checkout_body, code, Fixture, ServerSpec, StartMode};

fn as_user(user: &str) -> Value {
    let mut body = checkout_body(&format!("{user}-pc"), "cad", 1);
    body["user"] = user.into();
    body
}

/// The pool file on disk with `sequence` and `extra` appended.
fn with_sequence(installed: &str, sequence: u32, extra: &str) -> String {
    let text = installed.replacen("sequence = 1\n", &format!("sequence = {sequence}\n"), 1);
    assert_ne!(text, installed, "the pool file starts at sequence 1");
    format!("{text}{extra}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_installs_a_newer_pool_file_and_a_bad_one_changes_nothing() {
    let fixture = Fixture::new().await;
    let codes = fixture.sign(&code("cad", 10)).await;
    let mut server = fixture.server(ServerSpec::new(codes));
    server.set_env("TESSERA_LOG_FORMAT", "json");
    server.start(StartMode::NewPool).await;
    server.wait_state("serving").await;
    server.post("/v1/checkout", &as_user("bob")).await.ok();
    let installed = std::fs::read_to_string(&server.pool_file).unwrap();

    // The same file again: nothing to install.
    server.hangup();
    wait_for_log(&server, "the pool file is the pool's current one").await;

    // A policy added at sequence 2: installed, and it applies at once.
    let policy = "\n[policy.features.cad]\nexclude = [\"user:bob\"]\n";
    std::fs::write(&server.pool_file, with_sequence(&installed, 2, policy)).unwrap();
    server.hangup();
    server
        .poll("sequence 2 installed", Duration::from_secs(10), |s| {
            s.pool_sequence == 2
        })
        .await;
    server
        .post("/v1/checkout", &as_user("bob"))
        .await
        .refused(403, "policy_denied");
    server.post("/v1/checkout", &as_user("alice")).await.ok();

    // A broken file: logged with its reason; the server serves on with
    // sequence 2, and the seats it holds stay held.
    std::fs::write(&server.pool_file, with_sequence(&installed, 3, "[policy\n")).unwrap();
    server.hangup();
    wait_for_log(&server, "is not a valid pool file").await;
    // An older one: named, not installed.
    std::fs::write(&server.pool_file, &installed).unwrap();
    server.hangup();
    wait_for_log(
        &server,
        "is older than the pool file the pool has installed",
    )
    .await;
    let status = server.status().await;
    assert_eq!(status.pool_sequence, 2);
    assert_eq!(crate::fixture::in_use(&status, "cad"), 2);

    // A config that no longer parses: logged, the server goes on.
    let config = std::fs::read_to_string(&server.config).unwrap();
    std::fs::write(&server.config, format!("{config}\nthis is not toml ===\n")).unwrap();
    server.hangup();
    wait_for_log(
        &server,
        "the server goes on with the config it started with",
    )
    .await;
    std::fs::write(&server.config, &config).unwrap();
    server.post("/v1/checkout", &as_user("carol")).await.ok();

    // SIGTERM: a clean stop, exit status 0.
    let status = server.terminate().await;
    assert!(status.success(), "{status:?}\n{}", server.log());
    let log = server.log();
    assert!(log.contains("shutting down"), "{log}");
    // Structured lines: every one a JSON object with its level and message.
    for line in log.lines() {
        let event: Value = serde_json::from_str(line)
            .unwrap_or_else(|err| panic!("not a JSON log line ({err}): {line}"));
        assert!(
            event["level"].is_string() && event["message"].is_string(),
            "{line}"
        );
    }
}

/// Waits (bounded) until the server's log holds `text`.
async fn wait_for_log(server: &crate::fixture::Server, text: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let log = server.log();
        if log.contains(text) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the log never said {text:?}:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `tessera demo --keep` stops on SIGTERM as on Ctrl-C: it checks its seats
/// in, stops its servers and exits 0, and no server outlives it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kept_demo_stops_its_servers_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("demo.log");
    let mut command = std::process::Command::new(crate::fixture::tessera_exe());
    command
        .args(["demo", "--keep", "--dir"])
        .arg(dir.path().join("demo"))
        .env("NO_COLOR", "1");
    let demo = tessera_testkit::Process::start(command, &log).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let addresses: Vec<String> = loop {
        let text = demo.log();
        let serving = text.contains("The pool keeps serving (Ctrl-C or SIGTERM stops it)");
        let status_line = text
            .lines()
            .find(|line| line.trim_start().starts_with("tessera status --server "));
        if let (true, Some(line)) = (serving, status_line) {
            let list = line.split_whitespace().nth(3).unwrap();
            break list.split(',').map(str::to_string).collect();
        }
        assert!(demo.exited().is_none(), "the demo ended early:\n{text}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the demo never said it keeps serving:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(addresses.len(), 3, "{}", demo.log());
    for address in &addresses {
        assert!(
            tokio::net::TcpStream::connect(address).await.is_ok(),
            "{address} is not serving"
        );
    }
    let status = demo
        .terminate(Duration::from_secs(60))
        .await
        .unwrap_or_else(|| panic!("the demo did not stop on SIGTERM:\n{}", demo.log()));
    let text = demo.log();
    assert!(status.success(), "{status:?}\n{text}");
    assert!(text.contains("Demo done."), "{text}");
    for address in &addresses {
        assert!(
            tokio::net::TcpStream::connect(address).await.is_err(),
            "{address} still serves after the demo stopped:\n{text}"
        );
    }
}

/// The shipped systemd unit, checked by systemd's own tools where the
/// machine has them: `systemd-analyze verify` finds nothing wrong (with the
/// unit pointed at the binary under test), and `systemd-analyze security`
/// rates its exposure at most 2.0 of 10 (it rates 1.5, "OK").
#[test]
fn the_systemd_unit_verifies_and_is_hardened() {
    let Ok(analyze) = which("systemd-analyze") else {
        eprintln!("skipped: systemd-analyze is not installed");
        return;
    };
    let unit = include_str!("../../../../packaging/systemd/tessera.service")
        .replace("/usr/local/bin/tessera", crate::fixture::tessera_exe());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tessera.service");
    std::fs::write(&path, unit).unwrap();
    let verify = std::process::Command::new(&analyze)
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&verify.stderr);
    assert!(verify.status.success() && said.trim().is_empty(), "{said}");
    // The threshold is the exposure times ten.
    let security = std::process::Command::new(&analyze)
        .args(["security", "--offline=yes", "--threshold=20"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        security.status.success(),
        "{}",
        String::from_utf8_lossy(&security.stdout)
    );
}

fn which(program: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
        .ok_or(())
}
