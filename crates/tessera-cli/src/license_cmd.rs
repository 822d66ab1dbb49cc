//! `tessera license sign|verify|show`.

use std::path::Path;

use anyhow::{Context, Result};
use rand::RngCore;
use tessera_core::unsigned::GENERATED_ID_RANDOM_BYTES;
pub use tessera_core::UnsignedText;
use tessera_core::{
    parse_unsigned_file, CivilDate, LicenseCode, LicenseTable, PoolFile, VendorPublicKey,
    VendorSecretKey,
};

pub fn today() -> CivilDate {
    CivilDate::from_unix_ms(unix_ms_now())
}

/// The machine's clock, in Unix milliseconds (0 before 1970).
pub fn unix_ms_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub fn sign_one(key: &VendorSecretKey, text: UnsignedText) -> Result<LicenseCode> {
    let mut random = [0u8; GENERATED_ID_RANDOM_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut random);
    let unsigned = text.into_unsigned(&key.vendor, today(), random)?;
    Ok(key.sign(unsigned)?)
}

/// Signs every code of an unsigned code file.
pub fn sign_file(key: &VendorSecretKey, path: &Path) -> Result<Vec<LicenseCode>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let tables =
        parse_unsigned_file(&text).map_err(|err| anyhow::anyhow!("{}: {err}", path.display()))?;
    tables.into_iter().map(|t| sign_one(key, t)).collect()
}

/// Reads the codes of a license file or of a pool file.
pub fn read_codes(path: &Path) -> Result<Vec<LicenseCode>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    match LicenseCode::parse_file(&text) {
        Ok(codes) => Ok(codes),
        Err(license_err) => match PoolFile::parse(&text) {
            Ok(pool) => Ok(pool.codes),
            Err(_) => Err(anyhow::anyhow!("{}: {license_err}", path.display())),
        },
    }
}

/// Prints one line per code; returns how many failed.
pub fn verify(codes: &[LicenseCode], keys: &[VendorPublicKey], hostid: &str, json: bool) -> usize {
    let table = LicenseTable::evaluate(codes, keys, hostid, today());
    let mut failed = 0;
    let mut rows = Vec::new();
    for feature in table.features() {
        for verdict in &feature.codes {
            let reason = verdict.not_served.as_ref().map(|r| r.to_string());
            if reason.is_some() {
                failed += 1;
            }
            if json {
                rows.push(serde_json::json!({
                    "id": verdict.code.id(),
                    "feature": verdict.code.feature(),
                    "valid": reason.is_none(),
                    "reason": reason,
                }));
            } else {
                match reason {
                    None => println!(
                        "ok      {} ({} seats of `{}`)",
                        verdict.code.id(),
                        verdict.code.seats(),
                        verdict.code.feature()
                    ),
                    Some(reason) => println!("FAILED  {}: {reason}", verdict.code.id()),
                }
            }
        }
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).unwrap_or_default()
        );
    }
    failed
}

pub fn show(codes: &[LicenseCode], json: bool) {
    if json {
        let texts: Vec<_> = codes.iter().map(LicenseCode::to_text).collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&texts).unwrap_or_default()
        );
        return;
    }
    for code in codes {
        let f = code.fields();
        println!("license code {}", f.id);
        println!("  vendor          {} (key {})", f.vendor, code.key_id());
        println!("  feature         {}", f.feature);
        println!("  versions        {} to {}", f.version_min, f.version_max);
        println!("  seats           {}", f.seats);
        println!("  issued          {}", f.issued);
        println!("  expiry          {}", f.expiry);
        println!("  hostid          {}", f.hostid);
        println!(
            "  policy          borrow at {}%, heartbeat every {} s, lease {} s",
            f.policy.borrow_threshold_percent, f.policy.heartbeat_interval_s, f.policy.lease_s
        );
    }
}
