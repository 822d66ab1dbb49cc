//! Hostile input, on the stable toolchain.
//!
//! Fuzzing here is `proptest` with mutation strategies ([`mutate`]): valid
//! seed inputs (a license file, a pool file, every client, admin and peer
//! request body, openraft's messages as a server reads them) changed byte by
//! byte, spliced, truncated, their numbers set to extremes (`u64::MAX`,
//! `i64::MAX`, negatives, 2^62 + 1) and their strings to huge or odd ones,
//! their JSON fields added, dropped or retyped. Pure parsers are called
//! directly; everything a server reads goes through the real server
//! ([`server::InProcess`]: a pool of one, its real router served over
//! in-memory connections), and every answer must be JSON, an error with a
//! stable code, never a dropped connection (a panic) or a 500.
//!
//! Bounded for the test suite ([`cases`]); `TESSERA_FUZZ_CASES=1000000`
//! runs longer. The tests live in `tests/hostile/`: the fuzz targets, the
//! attacks of the security review, each driven against the server, and the
//! crashes the targets found, each kept as a named regression test.

pub mod mutate;
pub mod server;

/// Cases each fuzz target runs: `TESSERA_FUZZ_CASES` if set, else `default`.
pub fn cases(default: u32) -> u32 {
    std::env::var("TESSERA_FUZZ_CASES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// A proptest configuration for a fuzz target of `cases` cases: no failure
/// files written next to the sources (a crash becomes a named test instead),
/// and shrinking bounded so a failure is reported quickly.
pub fn config(cases: u32) -> proptest::test_runner::Config {
    proptest::test_runner::Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 2_000,
        ..proptest::test_runner::Config::default()
    }
}
