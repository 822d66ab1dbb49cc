//! End-to-end tests: the real `tessera` binary, set up through its own
//! commands and served on loopback, driven over HTTP, through the SDK and
//! through the CLI (STYLE.md, "Tests"; Garage `src/garage/tests/`).
//!
//! Every test has its own directory and its own server on a free loopback
//! port, so the tests run in parallel. Nothing here asserts how fast anything
//! happens: waits are bounded polls, and the only time bound checked is the
//! safety one (a seat is never freed before its lease ran).
//!
//! Areas, one module each:
//! - [`seats`]: checkout to the hard limit, check-in, lapse, grace period.
//! - [`restart`]: `kill -9` under load and restart, a damaged store.
//! - [`codes`]: tampered, expired and host-bound license codes.
//! - [`api`]: bad requests, each with its stable error code.
//! - [`framed`]: the framed protocol through the SDK, and hostile frames.
//! - [`proofs`]: grants bound to their holders, against a status reader
//!   who tries to release, renew or squat seats; the pool key.
//! - [`cli`]: `tessera demo` and `tessera status`.
//! - [`hostile`]: remove-license while seats are held, a weak peer secret.
//! - [`master`]: `tessera hostid`, `tessera master init` and the master
//!   license the vendor signs for it; a config that claims a hostid.
//! - [`openapi`]: `/v1/openapi.json` against the routes served, and
//!   schemathesis fuzzing the server from it.
//! - [`queue`]: programs waiting for seats, in order, through a leader kill.
//! - [`report`]: the report log over a scripted day, and `tessera report`.
//! - [`service`]: `tessera server` under a service manager: SIGHUP reloads,
//!   SIGTERM stops cleanly; `tessera demo --keep` stops on SIGTERM.
//! - [`status`]: `tessera status` from any server answers for the whole
//!   pool, and names a server that does not answer.
//! - [`temporary`]: temporary licenses (seed 004) through the HTTP API.
//! - [`trust`]: a program trusts its vendor's key, not the server: a key
//!   the customer adds, a fake server, a replayed answer, a clock set back.

mod api;
mod cli;
mod codes;
mod dashboard;
mod fixture;
mod framed;
mod hostile;
mod master;
mod openapi;
mod policy;
mod proofs;
mod queue;
mod report;
mod restart;
mod seats;
mod service;
mod status;
mod temporary;
mod trust;
