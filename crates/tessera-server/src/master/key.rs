//! The master's signing key, `master.key` in its data directory.
//!
//! `tessera master init` makes it once, on the physical host the master
//! license will name; the vendor signs a master license naming its public
//! key. The key never leaves the host: a copy of the data directory on
//! another machine is refused there by the license's host binding.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rand::RngCore;
use serde::{Deserialize, Serialize};
use tessera_core::master::{MasterPublicKey, MasterSecretKey};

/// The key's file name in the master's data directory.
pub const MASTER_KEY_FILE: &str = "master.key";

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    key_id: String,
    secret_key: String,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot create {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read the master key {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a master key file: {message}")]
    Malformed { path: PathBuf, message: String },
}

/// The key in `data_dir`, made (mode 0600, directory 0700) if there is
/// none; says whether it was made now.
pub fn init(data_dir: &Path) -> Result<(MasterSecretKey, bool), KeyError> {
    let path = data_dir.join(MASTER_KEY_FILE);
    if path.exists() {
        return Ok((read(data_dir)?, false));
    }
    let create = |source| KeyError::Create {
        path: path.clone(),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)
        .map_err(|source| KeyError::Create {
            path: data_dir.to_path_buf(),
            source,
        })?;
    let mut seed = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut seed);
    let key = MasterSecretKey::from_seed(seed);
    let text = toml::to_string(&KeyFile {
        key_id: key.public().key_id().to_string(),
        secret_key: key.to_base64(),
    })
    .expect("a key file always serializes");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(create)?;
    file.write_all(text.as_bytes()).map_err(create)?;
    file.sync_all().map_err(create)?;
    Ok((key, true))
}

/// The key in `data_dir`.
pub fn read(data_dir: &Path) -> Result<MasterSecretKey, KeyError> {
    let path = data_dir.join(MASTER_KEY_FILE);
    let text = std::fs::read_to_string(&path).map_err(|source| KeyError::Read {
        path: path.clone(),
        source,
    })?;
    let malformed = |message: String| KeyError::Malformed {
        path: path.clone(),
        message,
    };
    let file: KeyFile = toml::from_str(&text).map_err(|err| malformed(err.to_string()))?;
    let key =
        MasterSecretKey::from_base64(&file.secret_key).map_err(|err| malformed(err.to_string()))?;
    if key.public().key_id().as_str() != file.key_id {
        return Err(malformed(
            "key_id does not match the key; the file was edited".into(),
        ));
    }
    Ok(key)
}

/// The public key as `tessera master init` prints it and the vendor's
/// `tessera license sign --master --master-key` takes it.
pub fn public_text(key: &MasterPublicKey) -> String {
    key.to_base64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_makes_a_private_key_once_and_reads_it_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("master");
        let (key, made) = init(&data).unwrap();
        assert!(made);
        let mode = std::fs::metadata(data.join(MASTER_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let (again, made) = init(&data).unwrap();
        assert!(!made);
        assert_eq!(again.public(), key.public());
    }

    #[test]
    fn an_edited_key_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path()).unwrap();
        let path = dir.path().join(MASTER_KEY_FILE);
        let text = std::fs::read_to_string(&path).unwrap();
        let other = MasterSecretKey::from_seed([3; 32]).to_base64();
        let edited: String = text
            .lines()
            .map(|line| {
                if line.starts_with("secret_key") {
                    format!("secret_key = \"{other}\"\n")
                } else {
                    format!("{line}\n")
                }
            })
            .collect();
        std::fs::write(&path, edited).unwrap();
        let err = read(dir.path()).unwrap_err().to_string();
        assert!(err.contains("the file was edited"), "{err}");
    }
}
