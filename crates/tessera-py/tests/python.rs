//! The Python package end to end: builds the wheel with maturin in a
//! virtual environment kept under the target directory, installs it, starts
//! a real pool of three `tessera server` processes on loopback (TLS on),
//! and runs the pytest suite of `crates/tessera-py/tests` against it.
//!
//! Needs `python3` (with the `venv` module) and, the first time, PyPI for
//! the pinned maturin and pytest; later runs reuse the environment.
//!
//! Knobs: `TESSERA_PYTHON` (the interpreter that makes the environment,
//! `python3` by default), `TESSERA_PY_PYTEST_ARGS` (more pytest arguments,
//! e.g. `-x -k failover`), `TESSERA_PY_LOG_LINES` (server log lines shown
//! on a failure).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tessera_testkit::cargo::{
    nested_cargo, profile_dir, run_checked as run, tessera_binary, workspace_root,
};
use tessera_testkit::{public_key_of, Pool, PoolSpec};

/// What the virtual environment gets from PyPI, pinned.
const REQUIREMENTS: &[&str] = &["maturin==1.16.0", "pytest==9.2.0"];
/// Seats of feature `app` in the test pool: few, so that the tests can
/// take them all.
const SEATS: u32 = 3;
/// The pool's lease and heartbeat, as the pool tests use them.
const LEASE_S: u32 = 4;
const HEARTBEAT_S: u32 = 1;
/// Longest a pytest run may take before it is killed (it takes well under
/// a minute).
const PYTEST_PATIENCE: Duration = Duration::from_secs(240);

/// Whether the interpreter that makes the environment is there, with
/// `venv`. A machine with only the Rust toolchain skips this test, saying
/// so; CI installs Python and sets `TESSERA_REQUIRE_PYTHON=1`, which makes
/// a missing one a failure.
fn python_available() -> bool {
    let interpreter = std::env::var_os("TESSERA_PYTHON").unwrap_or_else(|| "python3".into());
    let found = Command::new(&interpreter)
        .args(["-c", "import venv, ensurepip"])
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|out| out.status.success());
    if !found {
        assert!(
            std::env::var_os("TESSERA_REQUIRE_PYTHON").is_none(),
            "TESSERA_REQUIRE_PYTHON is set and {} with venv is missing",
            interpreter.to_string_lossy()
        );
        println!(
            "skipped: {} with venv is not installed (`bash scripts/install-sdk-tools.sh`)",
            interpreter.to_string_lossy()
        );
    }
    found
}

/// The virtual environment `<target>/tessera-py-venv` with maturin and
/// pytest, made once and reused while its requirements are the same.
fn venv(target: &Path) -> PathBuf {
    let venv = target.join("tessera-py-venv");
    let python = venv.join("bin/python");
    let stamp = venv.join("tessera-py-requirements.txt");
    let wanted = REQUIREMENTS.join("\n");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) && python.exists() {
        return venv;
    }
    if !python.exists() {
        // --clear: a leftover of a removed interpreter is made anew.
        let interpreter = std::env::var_os("TESSERA_PYTHON").unwrap_or_else(|| "python3".into());
        run(Command::new(interpreter)
            .args(["-m", "venv", "--clear"])
            .arg(&venv));
    }
    let install = || {
        Command::new(&python)
            .args(["-m", "pip", "install", "--disable-pip-version-check", "-q"])
            .args(REQUIREMENTS)
            .stdin(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    };
    // Once more after a pause: the registry may have had a moment's trouble.
    if !install() {
        std::thread::sleep(Duration::from_secs(10));
        run(Command::new(&python)
            .args(["-m", "pip", "install", "--disable-pip-version-check", "-q"])
            .args(REQUIREMENTS));
    }
    std::fs::write(&stamp, wanted).expect("write the venv's stamp");
    venv
}

/// Builds the wheel (dev profile) into `<target>/tessera-py-wheels` and
/// installs it in `venv`.
fn build_and_install_wheel(target: &Path, venv: &Path) {
    let wheels = target.join("tessera-py-wheels");
    if let Ok(entries) = std::fs::read_dir(&wheels) {
        for entry in entries.flatten() {
            if entry.path().extension().is_some_and(|ext| ext == "whl") {
                std::fs::remove_file(entry.path()).expect("remove an old wheel");
            }
        }
    }
    run(nested_cargo(venv.join("bin/maturin"))
        .arg("build")
        .arg("--out")
        .arg(&wheels)
        .arg("--interpreter")
        .arg(venv.join("bin/python"))
        .current_dir(env!("CARGO_MANIFEST_DIR")));
    let built: Vec<PathBuf> = std::fs::read_dir(&wheels)
        .expect("the wheels directory")
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "whl"))
        .collect();
    let [wheel] = built.as_slice() else {
        panic!("expected one wheel in {}: {built:?}", wheels.display());
    };
    let name = wheel.file_name().unwrap_or_default().to_string_lossy();
    assert!(name.contains("abi3"), "not an abi3 wheel: {name}");
    run(Command::new(venv.join("bin/python"))
        .args(["-m", "pip", "install", "--disable-pip-version-check", "-q"])
        .args(["--force-reinstall", "--no-deps"])
        .arg(wheel));
}

/// A vendor key other than the pool's, for the untrusted-answer test.
fn other_vendor_key(tessera: &Path, dir: &Path) -> String {
    run(Command::new(tessera)
        .args(["vendor", "keygen", "--vendor", "acme", "--out", "."])
        .current_dir(dir));
    let public = std::fs::read_to_string(dir.join("acme.pub")).expect("acme.pub");
    public_key_of(&public).expect("a public_key line")
}

/// How many of a server's last log lines a failure shows
/// (`TESSERA_PY_LOG_LINES`, 40 by default).
fn log_lines() -> usize {
    std::env::var("TESSERA_PY_LOG_LINES")
        .ok()
        .and_then(|lines| lines.parse().ok())
        .unwrap_or(40)
}

/// The last lines of a server's log.
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(log_lines())..].join("\n")
}

#[test]
fn python_package_against_a_real_pool() {
    if !python_available() {
        return;
    }
    let started = Instant::now();
    let tessera = tessera_binary();
    let target = profile_dir()
        .parent()
        .expect("the target directory")
        .to_path_buf();
    let venv = venv(&target);
    println!("virtual environment ready after {:?}", started.elapsed());
    build_and_install_wheel(&target, &venv);
    println!("wheel built and installed after {:?}", started.elapsed());

    let scratch = tempfile::Builder::new()
        .prefix("tessera-py-test-")
        .tempdir()
        .expect("a scratch directory");
    let other_key = other_vendor_key(&tessera, scratch.path());

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let pool = runtime.block_on(Pool::start(
        &tessera,
        PoolSpec {
            seats: SEATS,
            lease_s: LEASE_S,
            heartbeat_s: HEARTBEAT_S,
            // No borrowing ahead: the seats stay spread over the servers
            // as the pool starts (one each) until a checkout is short.
            // A program idle a minute loses its seat (`Seat.set_idle`).
            extra: "[borrowing.app]\nthreshold_percent = 100\n\n\
                    [policy.features.app]\nidle_timeout_s = 60\n",
            ..PoolSpec::default()
        },
    ));
    let leader = runtime.block_on(pool.wait_leader(&pool.all()));
    let mut servers = vec![pool.servers[leader].address.clone()];
    servers.extend(
        pool.all()
            .into_iter()
            .filter(|&i| i != leader)
            .map(|i| pool.servers[i].address.clone()),
    );
    println!("pool serving after {:?}", started.elapsed());
    let leader_pid = pool.pid(leader).expect("the leader runs");
    let ca_file = scratch.path().join("ca.pem");
    std::fs::write(&ca_file, pool.ca_pem()).expect("write the pool CA");
    let cache = scratch.path().join("cache");

    let log = scratch.path().join("pytest.log");
    let log_file = std::fs::File::create(&log).expect("the pytest log");
    let pytest_started = Instant::now();
    let mut pytest = Command::new(venv.join("bin/python"))
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg("crates/tessera-py/tests")
        // More pytest arguments, e.g. `-x -k failover`, for a developer.
        .args(
            std::env::var("TESSERA_PY_PYTEST_ARGS")
                .unwrap_or_default()
                .split_whitespace(),
        )
        .current_dir(workspace_root())
        .env_remove("TESSERA_CA_FILE")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("XDG_CACHE_HOME", &cache)
        .env("TESSERA_TEST_SERVERS", servers.join(","))
        .env("TESSERA_TEST_CA_FILE", &ca_file)
        .env("TESSERA_TEST_VENDOR", "acme")
        .env("TESSERA_TEST_VENDOR_KEY", pool.vendor_public_key())
        .env("TESSERA_TEST_OTHER_VENDOR_KEY", &other_key)
        .env("TESSERA_TEST_LEADER_ID", &pool.servers[leader].id)
        .env("TESSERA_TEST_LEADER_PID", leader_pid.to_string())
        .env("TESSERA_TEST_SEATS", SEATS.to_string())
        .env("TESSERA_TEST_LEASE_S", LEASE_S.to_string())
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().expect("the pytest log"))
        .stderr(log_file)
        .spawn()
        .expect("start pytest");
    let status = loop {
        if let Some(status) = pytest.try_wait().expect("pytest's status") {
            break Some(status);
        }
        if pytest_started.elapsed() > PYTEST_PATIENCE {
            let _ = pytest.kill();
            let _ = pytest.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = std::fs::read_to_string(&log).unwrap_or_default();
    println!("pytest ran {:?}:\n{output}", pytest_started.elapsed());
    let logs: String = pool
        .all()
        .into_iter()
        .map(|i| {
            format!(
                "--- server {} log (end):\n{}\n",
                pool.servers[i].id,
                tail(&pool.log(i))
            )
        })
        .collect();
    let Some(status) = status else {
        panic!("pytest ran longer than {PYTEST_PATIENCE:?} and was killed\n{logs}");
    };
    assert!(status.success(), "pytest failed: {status}\n{logs}");
    assert!(
        output.contains(" passed") && !output.contains("skipped"),
        "pytest ran no test or skipped some:\n{output}"
    );
    drop(pool);
}
