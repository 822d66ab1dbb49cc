//! `tessera-bench`'s own command line, as a user runs it.

use std::process::Command;
use std::time::{Duration, Instant};

/// An `--out` in a directory that does not exist is refused at once, before
/// minutes of measuring whose figures would then be lost.
#[test]
fn compare_refuses_an_out_file_in_a_missing_directory_before_measuring() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("no-such-dir").join("BENCHMARKS.md");
    let started = Instant::now();
    let run = Command::new(env!("CARGO_BIN_EXE_tessera-bench"))
        .args(["compare", "--main-only", "--no-progress", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "accepted: {stderr}");
    assert!(
        stderr.contains("no directory") && stderr.contains("no-such-dir"),
        "unclear refusal: {stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "refused only after {:?}: it measured first",
        started.elapsed()
    );
    assert!(!out.exists());
}

/// Rounds are 1 to 9, and not a smoke run's (which has its own two): a
/// bad count is refused before anything runs.
#[test]
fn compare_refuses_rounds_out_of_range_or_with_smoke() {
    for (args, says) in [
        (vec!["--rounds", "0"], "0 is not in 1..=9"),
        (vec!["--rounds", "10"], "10 is not in 1..=9"),
        (vec!["--rounds", "2", "--smoke"], "cannot be used with"),
    ] {
        let run = Command::new(env!("CARGO_BIN_EXE_tessera-bench"))
            .arg("compare")
            .args(&args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success(), "{args:?} accepted: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}
