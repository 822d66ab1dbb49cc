//! The master server of seed 003: on one physical host, it lends a vendor's
//! virtual identifier (VID) to at most N production servers at once.
//!
//! A master is a Tessera server whose config names a master license file
//! (`master_license_file`). The file holds the vendor-signed master license
//! and its slot code: feature `vid:<VID>` with N seats, bound to the
//! master's host. The master's pool serves that code like any other, so the
//! pool's own guarantees count the lendings (never more than N held, through
//! crashes, restarts and clock drift; a clean stop frees a slot at once, a
//! silent holder's only when its lease has run out). What the master adds is
//! its key (`key.rs`, made by `tessera master init`) and the check at start
//! below: it serves only on the licensed host, with the licensed key, a
//! license that checks against a trusted vendor key and has not expired.

pub mod key;

use std::path::PathBuf;

use tessera_core::master::{MasterError, MasterLicense, MasterLicenseFile};
use tessera_core::CivilDate;

use crate::config::ServerConfig;
use crate::hostid::{self, Hostid};

/// Why a master does not start.
#[derive(Debug, thiserror::Error)]
#[error("master license {path}: {message}")]
pub struct MasterStartError {
    pub path: PathBuf,
    pub message: String,
}

/// For a server whose config names a master license file: the license,
/// checked whole (vendor signature, this machine's hostid, expiry, the key
/// in the data directory, the slot code). `None` for any other server.
pub fn check_at_start(
    config: &ServerConfig,
    today: CivilDate,
) -> Result<Option<MasterLicense>, MasterStartError> {
    let Some(path) = &config.master_license_file else {
        return Ok(None);
    };
    let refuse = |message: String| MasterStartError {
        path: path.clone(),
        message,
    };
    let text =
        std::fs::read_to_string(path).map_err(|err| refuse(format!("cannot read it: {err}")))?;
    let file = MasterLicenseFile::parse(&text).map_err(|err| refuse(err.to_string()))?;
    let hostid = match hostid::inspect() {
        Hostid::Stable { hostid, .. } => hostid,
        Hostid::Refused { reason } => {
            return Err(refuse(format!(
                "a master runs only on a physical host with a stable hostid, and {reason}"
            )))
        }
    };
    let own_key = key::read(&config.data_dir)
        .map_err(|err| {
            refuse(format!(
                "{err}; run `tessera master init --data-dir {}` on this host first",
                config.data_dir.display()
            ))
        })?
        .public();
    let check = |file: &MasterLicenseFile| -> Result<(), MasterError> {
        file.license
            .check_for_master(&config.vendors, &hostid, today, &own_key)?;
        file.slot_code(&config.vendors)?;
        Ok(())
    };
    check(&file).map_err(|err| refuse(err.to_string()))?;
    tracing::info!(
        "master of VID {} for {} production servers (license {})",
        file.license.vid(),
        file.license.fields().servers,
        file.license.id()
    );
    Ok(Some(file.license))
}
