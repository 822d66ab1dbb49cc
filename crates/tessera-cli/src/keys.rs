//! Vendor key files: `NAME.key` (secret, keep it safe) and `NAME.pub`; the
//! pool key file every server of a pool shares (`tessera pool key`).

use std::path::Path;

use anyhow::{bail, Context, Result};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use tessera_core::{PoolKey, VendorPublicKey, VendorSecretKey};

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretKeyFile {
    vendor: String,
    key_id: String,
    secret_key: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PublicKeyFile {
    vendor: String,
    key_id: String,
    public_key: String,
}

pub fn generate(vendor: &str) -> Result<VendorSecretKey> {
    let mut seed = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut seed);
    Ok(VendorSecretKey::from_seed(vendor, seed)?)
}

/// Writes `DIR/VENDOR.key` (mode 0600) and `DIR/VENDOR.pub`; refuses to overwrite.
pub fn write_pair(
    key: &VendorSecretKey,
    dir: &Path,
) -> Result<(std::path::PathBuf, std::path::PathBuf)> {
    let public = key.public();
    let secret_path = dir.join(format!("{}.key", key.vendor));
    let public_path = dir.join(format!("{}.pub", key.vendor));
    for path in [&secret_path, &public_path] {
        if path.exists() {
            bail!(
                "{} exists; move it away or choose another --out directory",
                path.display()
            );
        }
    }
    let secret = SecretKeyFile {
        vendor: key.vendor.clone(),
        key_id: public.key_id().to_string(),
        secret_key: key.to_base64(),
    };
    let public_file = PublicKeyFile {
        vendor: key.vendor.clone(),
        key_id: public.key_id().to_string(),
        public_key: public.to_base64(),
    };
    write_private(&secret_path, &toml::to_string(&secret)?)?;
    std::fs::write(&public_path, toml::to_string(&public_file)?)
        .with_context(|| format!("cannot write {}", public_path.display()))?;
    Ok((secret_path, public_path))
}

/// Writes a fresh random pool key to `path` (mode 0600); refuses to
/// overwrite, since the servers of a pool holding that key would stop
/// taking their clients' proofs.
pub fn write_pool_key(path: &Path) -> Result<()> {
    if path.exists() {
        bail!(
            "{} exists; a pool has one key, shared by all its servers: keep it, or move it away \
             to make a new one (every server then needs the new file)",
            path.display()
        );
    }
    let mut bytes = [0u8; tessera_core::grant_proof::POOL_KEY_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    write_private(path, &PoolKey::from_bytes(bytes).to_file_text())
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

pub fn read_secret(path: &Path) -> Result<VendorSecretKey> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read vendor key {}", path.display()))?;
    let file: SecretKeyFile = toml::from_str(&text)
        .with_context(|| format!("{} is not a vendor secret key file", path.display()))?;
    let key = VendorSecretKey::from_base64(&file.vendor, &file.secret_key)
        .with_context(|| format!("{}", path.display()))?;
    if key.public().key_id().as_str() != file.key_id {
        bail!(
            "{}: key_id does not match the key; the file was edited",
            path.display()
        );
    }
    Ok(key)
}

pub fn read_public(path: &Path) -> Result<VendorPublicKey> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read vendor public key {}", path.display()))?;
    if let Ok(file) = toml::from_str::<PublicKeyFile>(&text) {
        return Ok(VendorPublicKey::from_base64(
            &file.vendor,
            &file.public_key,
        )?);
    }
    // A secret key file also names its public key.
    Ok(read_secret(path)?.public())
}

/// The `[[vendors]]` entry a server config needs to trust `key`.
pub fn config_snippet(key: &VendorPublicKey) -> String {
    format!(
        "[[vendors]]\nname = \"{}\"\npublic_key = \"{}\"\n",
        key.vendor,
        key.to_base64()
    )
}
