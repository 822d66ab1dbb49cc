//! Hostile input against the real code, on the stable toolchain.
//!
//! - [`parsers`]: fuzz targets for the pure parsers: license codes, unsigned
//!   code tables, pool files, the server config, a control state from a
//!   snapshot, and every wire request type (client, admin, peer).
//! - [`requests`]: fuzz targets through the real server in-process: every
//!   endpoint, client, admin and peer (Raft's messages included), with
//!   mutated bodies; every answer JSON with a stable code, never a panic or
//!   a 500, and the server whole afterwards.
//! - [`attacks`]: the attacks of the security review, each driven against
//!   the server (they worked before the fix), and the crashes the targets
//!   found, each a named regression test.
//!
//! Bounded here (a few thousand cases per target); run longer with
//! `TESSERA_FUZZ_CASES=1000000 cargo test --release -p tessera-fuzz`.

mod attacks;
mod parsers;
mod requests;
mod seeds;
