//! The smoke benchmark end to end: a real `tessera` server set up through the
//! real CLI, two clients for one second. It checks that the benchmark
//! measures something and that every request succeeded, not how fast.
//!
//! It needs the `tessera` binary of the same build: run `cargo build
//! --workspace` (as CI does) before `cargo test`.

use std::path::PathBuf;

use tessera_bench::SingleConfig;

/// `target/<profile>/tessera`: next to this test's `deps` directory, or
/// under the workspace's default target directory.
fn tessera_binary() -> PathBuf {
    let next_to_test = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("tessera")));
    let in_workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/debug/tessera");
    let candidates: Vec<PathBuf> = next_to_test.into_iter().chain([in_workspace]).collect();
    match candidates.iter().find(|path| path.is_file()) {
        Some(path) => path.clone(),
        None => panic!(
            "the smoke benchmark needs the tessera binary, and there is none at {}; \
             build it first: cargo build --workspace (or cargo build -p tessera-cli)",
            candidates
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(" or ")
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_smoke_benchmark_checks_seats_out_and_in_against_a_real_server() {
    let config = SingleConfig::smoke(tessera_binary());
    let report = tessera_bench::single(&config)
        .await
        .expect("the smoke benchmark runs");
    let table = report.markdown();

    assert_eq!(report.errors_total(), 0, "{table}");
    assert_eq!(report.denied, 0, "{table}");
    assert!(report.checkout.count > 0, "no checkout measured:\n{table}");
    let checkins = report.checkin.as_ref().map_or(0, |c| c.count);
    assert_eq!(
        checkins, report.checkout.count,
        "every seat is checked in:\n{table}"
    );
    assert!(report.checkout.p50_us > 0 && report.checkout.p50_us <= report.checkout.max_us);
    assert_eq!(
        report.system_grants_end,
        Some(0),
        "the server holds no grant at the end:\n{table}"
    );
    assert!(table.contains("| tessera | cycle | 2 |"), "{table}");
    let json = report.to_json();
    assert_eq!(json["checkout"]["count"], report.checkout.count);
}

/// With `--sdk` the load's clients are the SDK itself, each a program with
/// the vendor's key: every checkout checks (signed answers, a bound
/// channel, held codes) and every seat is checked in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_smoke_benchmark_checks_out_and_in_through_the_sdk() {
    let mut config = SingleConfig::smoke(tessera_binary());
    config.sdk = true;
    let report = tessera_bench::single(&config)
        .await
        .expect("the SDK smoke benchmark runs");
    let table = report.markdown();
    assert_eq!(report.errors_total(), 0, "{table}");
    assert!(report.checkout.count > 0, "no checkout measured:\n{table}");
    let checkins = report.checkin.as_ref().map_or(0, |c| c.count);
    assert_eq!(checkins, report.checkout.count, "{table}");
    assert_eq!(report.system_grants_end, Some(0), "{table}");
    assert!(table.contains("| tessera, SDK | cycle | 2 |"), "{table}");
}

/// The open loop sends what is due at its rate, whoever is free, and counts
/// each checkout from when it was due: one second at 200 a second is 200
/// checkouts, none failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_open_loop_sends_what_is_due_at_its_rate() {
    let mut config = SingleConfig::smoke(tessera_binary());
    config.load.warmup = std::time::Duration::ZERO;
    config.load.measure = std::time::Duration::from_secs(1);
    let run = tessera_bench::single_open_loop(&config, 200.0)
        .await
        .expect("the open loop runs");
    let stats = run.stats;
    assert_eq!(run.errors, 0, "{:?}", run.first_error);
    assert_eq!(run.system, "tessera");
    assert_eq!(stats.count, 200);
    assert!(
        stats.p50_us > 0 && stats.p50_us <= stats.max_us,
        "{stats:?}"
    );
}

/// Set to `1` where the peers must be there: `.ci/run` sets it after
/// `scripts/install-bench-peers.sh` installed them, so CI always compares.
/// Elsewhere a machine without `redis-server` and `etcd` (a fresh one with
/// only the Rust toolchain) skips the comparison and says so.
const REQUIRE_PEERS_ENV: &str = "TESSERA_BENCH_REQUIRE_PEERS";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_smoke_comparison_runs_every_system_without_errors() {
    let missing: Vec<&str> = ["redis-server", "etcd"]
        .into_iter()
        .filter(|name| tessera_bench::peers::find_binary(name).is_err())
        .collect();
    let required = std::env::var(REQUIRE_PEERS_ENV).as_deref() == Ok("1");
    if !missing.is_empty() {
        assert!(
            !required,
            "{REQUIRE_PEERS_ENV}=1 but {} is not installed: bash scripts/install-bench-peers.sh",
            missing.join(" and ")
        );
        eprintln!(
            "skipped the smoke comparison: {} is not installed \
             (bash scripts/install-bench-peers.sh installs the peers; CI always runs it)",
            missing.join(" and ")
        );
        return;
    }
    let config = tessera_bench::compare::CompareConfig::smoke(tessera_binary());
    let comparison = match tessera_bench::compare::compare(&config).await {
        Ok(comparison) => comparison,
        Err(err) => panic!(
            "the smoke comparison failed: {err:#}\n(are the peers installed? \
             bash scripts/install-bench-peers.sh)"
        ),
    };
    // The committed BENCHMARKS.md is the previous run: it must read back.
    let committed = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../BENCHMARKS.md"),
    )
    .unwrap();
    let previous = tessera_bench::previous::parse(&committed)
        .expect("BENCHMARKS.md has the main table compare writes");
    let markdown = comparison.markdown("today", Some(&previous)).unwrap();
    let against = markdown
        .split("## Against the previous BENCHMARKS.md")
        .nth(1)
        .expect("the section against the previous run");
    for system in [
        "tessera",
        "tessera, signed answers",
        "tessera noop endpoint",
    ] {
        assert!(
            against.contains(&format!("| {system} | "))
                && !against.contains(&format!("| {system} | new")),
            "{system} not set against the previous run:\n{against}"
        );
    }
    assert_eq!(comparison.reports.len(), 10, "{markdown}");
    for report in &comparison.reports {
        assert_eq!(report.errors_total(), 0, "{}: {markdown}", report.system);
        assert_eq!(report.denied, 0, "{}: {markdown}", report.system);
        assert!(
            report.checkout.count > 0,
            "{} measured no checkout:\n{markdown}",
            report.system
        );
    }
    // The smoke run's two rounds: each system but etcd twice, etcd once.
    assert_eq!(comparison.rounds.len(), 10, "{markdown}");
    for (index, runs) in comparison.rounds.iter().enumerate() {
        assert_eq!(runs.len(), if index < 9 { 2 } else { 1 }, "{markdown}");
        assert!(runs.iter().all(|run| run.errors == 0), "{markdown}");
    }
    assert_eq!(comparison.errors_total(), 0, "{markdown}");
    for system in [
        "| tessera |",
        "| tessera, background sync |",
        "| tessera, signed answers |",
        "| tessera, REST |",
        "| tessera, plain HTTP |",
        "| redis (appendfsync always) |",
        "| etcd (3 nodes) |",
    ] {
        assert!(markdown.contains(system), "{system} missing:\n{markdown}");
    }
    let extras = comparison
        .extras
        .as_ref()
        .expect("the smoke run has every part");
    assert_eq!(extras.errors_total(), 0, "{markdown}");
    for section in [
        "| row ÷ column |",
        "## Rounds",
        "| tessera, signed answers ÷ redis (appendfsync always) |",
        "## Throughput against clients",
        "## Heartbeats with seats held",
        "## Cost against active seats",
        "## Open loop at half of the peak",
        "## Fail-over",
        "| p99 under 2 ms at half of peak load (open loop) |",
        "| at least Redis at appendfsync always, grants synced in the background",
        "| server CPU per cycle at or below Redis's at appendfsync always (tessera) |",
        "| server CPU per cycle at or below Redis's at appendfsync always (tessera, background sync) |",
        "| at least Redis at appendfsync always at ",
    ] {
        assert!(markdown.contains(section), "{section} missing:\n{markdown}");
    }
    assert_eq!(extras.sweep.len(), 6 * 2, "six systems, two client counts");
    assert!(
        extras.heartbeats.iter().all(|h| h.stats.count > 0),
        "{markdown}"
    );
    assert!(extras.scaling.active_seats_end >= 300, "{markdown}");
    assert!(extras.open_loop.stats.count > 0, "{markdown}");
    let open_loop = markdown
        .split("## Open loop at half of the peak")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("the open-loop section");
    assert!(
        extras.open_loop_background.stats.count > 0
            && open_loop.contains("| tessera | ")
            && open_loop.contains("| tessera, background sync | "),
        "{open_loop}"
    );
    // Two rounds of each mode in the smoke run, every one's p99 shown.
    for run in [&extras.open_loop, &extras.open_loop_background] {
        assert_eq!(run.rounds_p99_us.len(), 2, "{open_loop}");
        assert!(run.rounds_p99_us.contains(&run.stats.p99_us), "{open_loop}");
    }
    assert!(
        open_loop.contains("Each ran 2 times") && open_loop.contains("p99 ms, every run"),
        "{open_loop}"
    );
    assert_eq!(extras.failover.takeovers.len(), 1);
    let dir = tempfile::tempdir().expect("tempdir");
    let plots = extras
        .write_plots(dir.path(), &comparison.reports)
        .expect("plots");
    assert_eq!(plots.len(), 4);
    for plot in plots {
        let svg = std::fs::read_to_string(&plot).expect("plot");
        assert!(
            svg.starts_with("<svg") && svg.contains("<circle"),
            "{}",
            plot.display()
        );
    }
}
