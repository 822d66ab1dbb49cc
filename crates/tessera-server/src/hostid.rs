//! This machine's hostid: what license codes bind to (`tessera hostid`).

use sha2::{Digest, Sha256};

/// `mid-` and 16 hex digits derived from `/etc/machine-id` (or the D-Bus
/// machine id), so the raw id never leaves the machine. `None` if neither exists.
pub fn machine_hostid() -> Option<String> {
    ["/etc/machine-id", "/var/lib/dbus/machine-id"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .map(|text| text.trim().to_string())
        .find(|text| !text.is_empty())
        .map(|machine_id| hostid_of(&machine_id))
}

pub fn hostid_of(machine_id: &str) -> String {
    let digest = Sha256::digest(format!("tessera-hostid-v1:{machine_id}").as_bytes());
    format!("mid-{}", hex::encode(&digest[..8]))
}

#[cfg(test)]
mod tests {
    #[test]
    fn stable_and_opaque() {
        let id = super::hostid_of("0123456789abcdef");
        assert_eq!(id, super::hostid_of("0123456789abcdef"));
        assert_eq!(id.len(), 4 + 16);
        assert!(!id.contains("0123456789abcdef"));
    }
}
