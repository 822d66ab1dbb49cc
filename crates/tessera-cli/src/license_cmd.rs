//! `tessera license sign|verify|show`.

use std::path::Path;

use anyhow::{bail, Context, Result};
use rand::RngCore;
use serde::Deserialize;
use tessera_core::license::{HostBinding, Policy, UnsignedCode};
use tessera_core::{
    CivilDate, Expiry, LicenseCode, LicenseTable, PoolFile, VendorPublicKey, VendorSecretKey,
    Version,
};

/// One `[[license]]` table of an unsigned code file; omitted fields take defaults.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnsignedText {
    pub id: Option<String>,
    pub feature: String,
    pub seats: u32,
    #[serde(default = "default_version_min")]
    pub version_min: String,
    #[serde(default = "default_version_max")]
    pub version_max: String,
    pub issued: Option<String>,
    pub expiry: String,
    #[serde(default = "default_hostid")]
    pub hostid: String,
    #[serde(default = "default_threshold")]
    pub borrow_threshold_percent: u32,
    #[serde(default = "default_heartbeat")]
    pub heartbeat_interval_s: u32,
    #[serde(default = "default_lease")]
    pub lease_s: u32,
}

fn default_version_min() -> String {
    "0".into()
}
fn default_version_max() -> String {
    "999999".into()
}
fn default_hostid() -> String {
    "any".into()
}
fn default_threshold() -> u32 {
    Policy::DEFAULT.borrow_threshold_percent
}
fn default_heartbeat() -> u32 {
    Policy::DEFAULT.heartbeat_interval_s
}
fn default_lease() -> u32 {
    Policy::DEFAULT.lease_s
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UnsignedFile {
    license: Vec<UnsignedText>,
}

pub fn today() -> CivilDate {
    let unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    CivilDate::from_unix_ms(unix_ms)
}

pub fn sign_one(key: &VendorSecretKey, text: UnsignedText) -> Result<LicenseCode> {
    let id = match text.id {
        Some(id) => id,
        None => {
            let mut bytes = [0u8; 4];
            rand::rngs::OsRng.fill_bytes(&mut bytes);
            format!("{}-{}-{}", key.vendor, text.feature, hex::encode(bytes))
        }
    };
    let bad = |what: &str, err: String| anyhow::anyhow!("code {id}: {what}: {err}");
    let unsigned = UnsignedCode {
        vendor: key.vendor.clone(),
        feature: text.feature,
        version_min: Version::parse(&text.version_min).map_err(|e| bad("version_min", e))?,
        version_max: Version::parse(&text.version_max).map_err(|e| bad("version_max", e))?,
        seats: text.seats,
        issued: match text.issued {
            Some(day) => CivilDate::parse(&day).map_err(|e| bad("issued", e))?,
            None => today(),
        },
        expiry: Expiry::parse(&text.expiry).map_err(|e| bad("expiry", e))?,
        hostid: HostBinding::parse(&text.hostid).map_err(|e| bad("hostid", e))?,
        policy: Policy {
            borrow_threshold_percent: text.borrow_threshold_percent,
            heartbeat_interval_s: text.heartbeat_interval_s,
            lease_s: text.lease_s,
        },
        id: id.clone(),
    };
    Ok(key.sign(unsigned)?)
}

/// Signs every code of an unsigned code file.
pub fn sign_file(key: &VendorSecretKey, path: &Path) -> Result<Vec<LicenseCode>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let file: UnsignedFile = toml::from_str(&text).with_context(|| {
        format!(
            "{} is not a file of unsigned [[license]] tables",
            path.display()
        )
    })?;
    if file.license.is_empty() {
        bail!("{} holds no [[license]] tables", path.display());
    }
    file.license.into_iter().map(|t| sign_one(key, t)).collect()
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
