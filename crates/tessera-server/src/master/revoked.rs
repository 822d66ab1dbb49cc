//! Revoked production server runs (`tessera master revoke INSTANCE`): their
//! certificates are not renewed, so they stop serving the VID's codes when
//! the last one lapses, and the slot is lent to another run once it has.
//!
//! Kept in `revoked-instances` in the master's data directory, one run per
//! line, replaced whole and durably before the revocation is answered: a
//! master restart forgets none.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::seams::Disk;

/// The file's name in the master's data directory.
pub const REVOKED_FILE: &str = "revoked-instances";

pub struct Revocations {
    path: PathBuf,
    instances: Mutex<BTreeSet<String>>,
}

impl Revocations {
    pub fn load(disk: &dyn Disk, data_dir: &Path) -> Result<Revocations, String> {
        let path = data_dir.join(REVOKED_FILE);
        let bytes = disk
            .read_file(&path)
            .map_err(|err| format!("cannot read {}: {err}", path.display()))?
            .unwrap_or_default();
        let text = String::from_utf8(bytes)
            .map_err(|_| format!("{} is not UTF-8 text", path.display()))?;
        let instances = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .map(str::to_string)
            .collect();
        Ok(Revocations {
            path,
            instances: Mutex::new(instances),
        })
    }

    pub fn contains(&self, instance: &str) -> bool {
        self.lock().contains(instance)
    }

    /// Revokes `instance`, durably; false if it was revoked already.
    pub fn revoke(&self, disk: &dyn Disk, instance: &str) -> std::io::Result<bool> {
        let mut instances = self.lock();
        if instances.contains(instance) {
            return Ok(false);
        }
        let mut after = instances.clone();
        after.insert(instance.to_string());
        let text: String = after.iter().map(|i| format!("{i}\n")).collect();
        disk.replace_file(&self.path, text.as_bytes())?;
        *instances = after;
        Ok(true)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.instances.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revocation_is_durable_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let disk = crate::seams::FileDisk;
        let revoked = Revocations::load(&disk, dir.path()).unwrap();
        assert!(!revoked.contains("P1.abc"));
        assert!(revoked.revoke(&disk, "P1.abc").unwrap());
        assert!(!revoked.revoke(&disk, "P1.abc").unwrap());
        let again = Revocations::load(&disk, dir.path()).unwrap();
        assert!(again.contains("P1.abc"));
        assert!(!again.contains("P2.def"));
    }
}
