//! The C example (`examples/c/hold.c`), built with the system C compiler
//! against the library and run against a real pool of three `tessera
//! server` processes: it checks out, holds its seat while the leader that
//! granted it is killed, and checks in. Under valgrind when the machine has
//! it (CI installs it and requires it: `TESSERA_REQUIRE_VALGRIND=1`): no
//! leak, no invalid access.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tessera_testkit::cargo::{cargo, profile_dir, run_checked, tessera_binary, workspace_root};
use tessera_testkit::{Pool, PoolSpec};

const LEASE_S: u32 = 6;

/// The C library (`libtessera.so`) of the code under test: `cargo test`
/// builds only the crate's Rust library, so this builds the rest (seconds,
/// the dependencies being built already).
fn build_library() -> PathBuf {
    run_checked(cargo().args(["build", "--locked", "-p", "tessera-ffi", "--lib"]));
    let lib_dir = profile_dir();
    assert!(
        lib_dir.join("libtessera.so").exists(),
        "no libtessera.so in {}",
        lib_dir.display()
    );
    lib_dir
}

/// Builds the example with the system C compiler, warnings as errors.
fn build_example(out: &Path) -> PathBuf {
    let lib_dir = build_library();
    let exe = out.join("hold");
    let root = workspace_root();
    let output = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-g", "-I"])
        .arg(root.join("crates/tessera-ffi/include"))
        .arg(root.join("examples/c/hold.c"))
        .arg("-L")
        .arg(&lib_dir)
        .arg("-ltessera")
        .arg(format!("-Wl,-rpath,{}", lib_dir.display()))
        .arg("-o")
        .arg(&exe)
        .output()
        .expect("the system C compiler (cc)");
    assert!(
        output.status.success(),
        "cc failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    exe
}

fn valgrind() -> Option<PathBuf> {
    let found = Command::new("valgrind")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("TESSERA_REQUIRE_VALGRIND").is_none(),
            "TESSERA_REQUIRE_VALGRIND is set and valgrind is missing"
        );
        println!("valgrind is not installed: the example runs without it");
    }
    found.then(|| PathBuf::from("valgrind"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_c_example_holds_its_seat_through_a_leader_kill_and_checks_in() {
    let mut pool = Pool::start(
        &tessera_binary(),
        PoolSpec {
            servers: 3,
            seats: 5,
            lease_s: LEASE_S,
            heartbeat_s: 1,
            ..PoolSpec::default()
        },
    )
    .await;
    let leader = pool.wait_leader(&pool.all()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let example = build_example(dir.path());
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, pool.ca_pem()).expect("write the CA");
    // Leader first: the seat is granted by the server about to die.
    let mut order = vec![leader];
    order.extend(pool.all().into_iter().filter(|&i| i != leader));
    let servers: Vec<String> = order
        .iter()
        .map(|&i| pool.servers[i].address.clone())
        .collect();

    let hold_s = 4 * LEASE_S;
    let mut command = match valgrind() {
        Some(valgrind) => {
            let mut command = Command::new(valgrind);
            command.args([
                "--error-exitcode=99",
                "--leak-check=full",
                "--show-leak-kinds=definite",
                "--errors-for-leak-kinds=definite",
                "--quiet",
            ]);
            command.arg(format!(
                "--suppressions={}",
                workspace_root().join("examples/c/valgrind.supp").display()
            ));
            command.arg(&example);
            command
        }
        None => Command::new(&example),
    };
    let mut program = command
        .args(["app", "1.0", &hold_s.to_string()])
        .env("TESSERA_SERVERS", servers.join(","))
        .env("TESSERA_CA_FILE", &ca_file)
        .env("TESSERA_VENDOR", "acme")
        .env("TESSERA_VENDOR_KEY", pool.vendor_public_key())
        .env("XDG_CACHE_HOME", dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the example");
    let stdout = program.stdout.take().expect("stdout");
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let started = Instant::now();
    let mut out = Vec::new();
    loop {
        let line = lines_rx
            .recv_timeout(Duration::from_secs(120).saturating_sub(started.elapsed()))
            .unwrap_or_else(|_| panic!("the example did not get ready:\n{}", out.join("\n")));
        out.push(line.clone());
        if line == "ready" {
            break;
        }
    }
    let first_server = pool.servers[leader].id.clone();
    assert!(
        out.iter()
            .any(|l| l.ends_with(&format!("on {first_server}"))),
        "the seat is not on the leader {first_server}:\n{}",
        out.join("\n")
    );
    pool.kill(leader);
    let status = tokio::task::spawn_blocking(move || program.wait_with_output())
        .await
        .expect("join")
        .expect("the example's end");
    out.extend(lines_rx.try_iter());
    let text = out.join("\n");
    let stderr = String::from_utf8_lossy(&status.stderr);
    println!("{text}\n{stderr}");
    assert_eq!(
        status.status.code(),
        Some(0),
        "the example failed (99: valgrind found errors):\n{text}\n{stderr}"
    );
    assert!(
        text.contains("unknown feature: rejected, server code unknown_feature"),
        "{text}"
    );
    assert!(text.contains(&format!("after {hold_s} s: valid")), "{text}");
    assert!(
        !text.contains(&format!("held on {first_server} (first")),
        "no fail-over:\n{text}"
    );
    assert!(
        text.contains("seat held on"),
        "the callback was not called:\n{text}"
    );
    assert!(text.ends_with("checked in"), "{text}");
}
