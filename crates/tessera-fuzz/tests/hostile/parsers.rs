//! Fuzz targets for the pure parsers. Each asserts more than "no panic":
//! what parses writes back to text that parses to the same value.

use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tessera_core::{parse_unsigned_file, CivilDate, ControlState, LicenseCode, PoolFile};
use tessera_fuzz::mutate::{mutated_bytes, mutated_json, mutated_text};
use tessera_proto as proto;

use crate::seeds;

/// Cases of each parser target (cheap: microseconds each).
const CASES: u32 = 4_000;

fn run<S: Strategy>(strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    let mut runner = TestRunner::new(tessera_fuzz::config(tessera_fuzz::cases(CASES)));
    if let Err(failure) = runner.run(&strategy, test) {
        panic!("{failure}");
    }
}

#[test]
fn fuzz_license_code_files() {
    run(mutated_text(seeds::license_files(), 6), |text| {
        if let Ok(codes) = LicenseCode::parse_file(&text) {
            let written = LicenseCode::write_file(&codes);
            prop_assert_eq!(LicenseCode::parse_file(&written), Ok(codes));
        }
        Ok(())
    });
}

#[test]
fn fuzz_unsigned_code_tables() {
    let key = tessera_fuzz::server::vendor_key();
    let today = CivilDate::parse("2026-06-01").unwrap();
    run(mutated_text(seeds::unsigned_files(), 6), |text| {
        if let Ok(tables) = parse_unsigned_file(&text) {
            for table in tables {
                if let Ok(unsigned) = table.into_unsigned("acme", today, [1, 2, 3, 4]) {
                    if let Ok(code) = key.sign(unsigned) {
                        prop_assert_eq!(code.verify(&[key.public()]), Ok(()));
                    }
                }
            }
        }
        Ok(())
    });
}

#[test]
fn fuzz_pool_files() {
    run(mutated_text(seeds::pool_files(), 6), |text| {
        if let Ok(pool) = PoolFile::parse(&text) {
            let written = pool.to_toml();
            prop_assert!(written.is_ok(), "{written:?}");
            prop_assert_eq!(PoolFile::parse(&written.unwrap()), Ok(pool.clone()));
            prop_assert!(pool.sequence <= tessera_core::pool_file::SEQUENCE_MAX);
            // Whatever the file, installing it decides, and what it
            // installs keeps the invariants.
            let mut state = ControlState::default();
            state.apply(&tessera_core::ControlCommand::InstallPoolFile { text });
            prop_assert_eq!(state.check_invariants(), Ok(()));
        }
        Ok(())
    });
}

#[test]
fn fuzz_server_configs() {
    // A directory with the credential file the configs name by default.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("peer.credential"), "c".repeat(64)).unwrap();
    let base = dir.path();
    run(mutated_text(seeds::configs(), 6), |text| {
        if let Ok(config) = tessera_server::ServerConfig::parse(&text, base) {
            let credential = &config.security.peer_credential;
            prop_assert!(credential.len() >= 32, "{credential:?}");
        }
        Ok(())
    });
}

#[test]
fn fuzz_control_state_snapshots() {
    let states: Vec<serde_json::Value> = seeds::control_states()
        .iter()
        .map(|s| serde_json::to_value(s).unwrap())
        .collect();
    run(mutated_json(states), |bytes| {
        let Ok(state) = serde_json::from_slice::<ControlState>(&bytes) else {
            return Ok(());
        };
        if let Ok(restored) = state.restored() {
            let again = serde_json::to_vec(&restored).unwrap();
            let reread: ControlState = serde_json::from_slice(&again).unwrap();
            prop_assert_eq!(reread.restored(), Ok(restored));
        }
        Ok(())
    });
}

/// What parses writes back to JSON that parses to the same value.
fn round_trips<T>(bytes: &[u8]) -> Result<(), TestCaseError>
where
    T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug,
{
    if let Ok(value) = serde_json::from_slice::<T>(bytes) {
        let written = serde_json::to_vec(&value).unwrap();
        prop_assert_eq!(serde_json::from_slice::<T>(&written).ok(), Some(value));
    }
    Ok(())
}

#[test]
fn fuzz_client_request_types() {
    let mut all = seeds::checkouts();
    all.extend(seeds::heartbeats("g-1"));
    all.extend(seeds::checkins("g-1"));
    run(mutated_json(all), |bytes| {
        round_trips::<proto::CheckoutRequest>(&bytes)?;
        round_trips::<proto::HeartbeatRequest>(&bytes)?;
        round_trips::<proto::CheckinRequest>(&bytes)
    });
}

#[test]
fn fuzz_admin_and_peer_request_types() {
    let mut all = seeds::distributions();
    all.extend(seeds::add_licenses());
    all.extend(seeds::remove_licenses());
    all.extend(seeds::reports());
    all.extend(seeds::borrows());
    all.extend(seeds::pool_file_updates());
    all.extend(seeds::peer_commands());
    run(mutated_json(all), |bytes| {
        round_trips::<proto::SetDistribution>(&bytes)?;
        round_trips::<proto::AddLicense>(&bytes)?;
        round_trips::<proto::RemoveLicense>(&bytes)?;
        round_trips::<proto::PeerReport>(&bytes)?;
        round_trips::<proto::BorrowAsk>(&bytes)?;
        round_trips::<proto::PoolFileUpdate>(&bytes)?;
        round_trips::<tessera_core::ControlCommand>(&bytes)?;
        if let Ok(command) = serde_json::from_slice::<tessera_server::pool::PeerCommand>(&bytes) {
            let written = serde_json::to_vec(&command).unwrap();
            prop_assert!(
                serde_json::from_slice::<tessera_server::pool::PeerCommand>(&written).is_ok()
            );
        }
        Ok(())
    });
}

/// Raw bytes, not only mutated seeds, for the JSON reader itself.
#[test]
fn fuzz_request_types_on_arbitrary_bytes() {
    let seeds: Vec<Vec<u8>> = seeds::checkouts()
        .iter()
        .chain(seeds::reports().iter())
        .map(|v| serde_json::to_vec(v).unwrap())
        .chain([Vec::new(), b"{}".to_vec(), b"[]".to_vec()])
        .collect();
    run(mutated_bytes(seeds, 12), |bytes| {
        round_trips::<proto::CheckoutRequest>(&bytes)?;
        round_trips::<proto::PeerReport>(&bytes)
    });
}
