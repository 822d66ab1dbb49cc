//! This machine's hostid: what license codes and master licenses bind to
//! (`tessera hostid`).
//!
//! The hostid is derived from the machine id systemd writes once per
//! installation. On a physical host that id is stable and its own. In a
//! container it belongs to the image (every container of the image shares
//! it, or it is made fresh at each start), and a virtual machine's can be
//! cloned with its disk: binding there would either break or protect
//! nothing. Those machines are refused, and pointed to the VID route: a
//! master on a physical host lends a virtual identifier (seed 003).

use std::path::Path;

use sha2::{Digest, Sha256};

use crate::pool::{test_faults_enabled, TEST_FAULTS_ENV};

/// The machine-id files, in the order they are read.
const MACHINE_ID_FILES: [&str; 2] = ["/etc/machine-id", "/var/lib/dbus/machine-id"];

/// Test-only: the hostid to report, honoured only with the test fault
/// switch on (`TESSERA_TEST_FAULTS=1`), so tests can stand for two hosts.
pub const TEST_HOSTID_ENV: &str = "TESSERA_TEST_HOSTID";

/// The hostid a machine without a stable one reports: not a valid name,
/// so no license code can be bound to it.
pub const NO_HOSTID: &str = "(none)";

/// What this machine's hostid is, where it came from, or why it has none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hostid {
    /// A hostid fit to bind to.
    Stable { hostid: String, source: String },
    /// This machine's id cannot be trusted to be its own and lasting.
    Refused { reason: String },
}

impl Hostid {
    pub fn stable(&self) -> Option<&str> {
        match self {
            Hostid::Stable { hostid, .. } => Some(hostid),
            Hostid::Refused { .. } => None,
        }
    }
}

/// The advice given with every refusal.
pub const VID_ROUTE: &str = "bind codes to a virtual identifier instead: run a master server on a \
     physical host (`tessera master init`) and have the vendor bind the codes to `vid:<VID>` \
     (README, \"Master server\")";

/// This machine's hostid, or why it has none.
pub fn inspect() -> Hostid {
    if test_faults_enabled() {
        if let Ok(hostid) = std::env::var(TEST_HOSTID_ENV) {
            return Hostid::Stable {
                hostid,
                source: format!("{TEST_HOSTID_ENV} (test-only, with {TEST_FAULTS_ENV}=1)"),
            };
        }
    }
    inspect_at(Path::new("/"))
}

/// [`inspect`], with every file read under `root` (tests give a fake tree).
pub fn inspect_at(root: &Path) -> Hostid {
    let read = |path: &str| std::fs::read_to_string(root.join(path.trim_start_matches('/'))).ok();
    if let Some(reason) = container(root, &read) {
        return Hostid::Refused {
            reason: format!("this machine is a container ({reason}): its machine id belongs to the image, not to a host"),
        };
    }
    if let Some(reason) = virtual_machine(&read) {
        return Hostid::Refused {
            reason: format!("this machine is a virtual machine ({reason}): its machine id is copied with every clone of its disk"),
        };
    }
    let Some((path, machine_id)) = MACHINE_ID_FILES.iter().find_map(|path| {
        let text = read(path)?.trim().to_string();
        (!text.is_empty()).then_some((*path, text))
    }) else {
        return Hostid::Refused {
            reason: "this machine has no machine id (/etc/machine-id is missing or empty)".into(),
        };
    };
    if machine_id == "uninitialized" || machine_id.chars().all(|c| c == '0') {
        return Hostid::Refused {
            reason: format!(
                "{path} holds `{machine_id}`, a placeholder shared by unconfigured systems"
            ),
        };
    }
    Hostid::Stable {
        hostid: hostid_of(&machine_id),
        source: format!(
            "{path} (the first 8 bytes of a SHA-256 of it; the id itself is not shown)"
        ),
    }
}

fn container(root: &Path, read: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    for marker in ["/.dockerenv", "/run/.containerenv"] {
        if root.join(marker.trim_start_matches('/')).exists() {
            return Some(format!("{marker} exists"));
        }
    }
    if let Some(cgroup) = read("/proc/1/cgroup") {
        for runtime in ["docker", "kubepods", "containerd", "libpod", "lxc"] {
            if cgroup.contains(runtime) {
                return Some(format!("/proc/1/cgroup names {runtime}"));
            }
        }
    }
    None
}

fn virtual_machine(read: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    const HYPERVISORS: [&str; 11] = [
        "KVM",
        "QEMU",
        "VirtualBox",
        "VMware",
        "Xen",
        "Virtual Machine",
        "Google Compute Engine",
        "Amazon EC2",
        "BHYVE",
        "OpenStack",
        "Parallels",
    ];
    for path in [
        "/sys/class/dmi/id/product_name",
        "/sys/class/dmi/id/sys_vendor",
    ] {
        if let Some(text) = read(path) {
            let text = text.trim();
            if let Some(name) = HYPERVISORS.iter().find(|name| text.contains(*name)) {
                return Some(format!("{path} says {name}"));
            }
        }
    }
    if let Some(kind) = read("/sys/hypervisor/type") {
        if !kind.trim().is_empty() {
            return Some(format!("/sys/hypervisor/type is {}", kind.trim()));
        }
    }
    let cpuinfo = read("/proc/cpuinfo")?;
    cpuinfo
        .lines()
        .filter(|line| line.starts_with("flags"))
        .any(|line| line.split_whitespace().any(|flag| flag == "hypervisor"))
        .then(|| "/proc/cpuinfo has the hypervisor flag".to_string())
}

/// This machine's hostid if it has a stable one ([`inspect`]).
pub fn machine_hostid() -> Option<String> {
    inspect().stable().map(str::to_string)
}

pub fn hostid_of(machine_id: &str) -> String {
    let digest = Sha256::digest(format!("tessera-hostid-v1:{machine_id}").as_bytes());
    format!("mid-{}", hex::encode(&digest[..8]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_and_opaque() {
        let id = hostid_of("0123456789abcdef");
        assert_eq!(id, hostid_of("0123456789abcdef"));
        assert_eq!(id.len(), 4 + 16);
        assert!(!id.contains("0123456789abcdef"));
    }

    /// A fake root with these files.
    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let path = root.path().join(path.trim_start_matches('/'));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        root
    }

    const PHYSICAL_CPU: &str = "processor : 0\nflags : fpu vme de pse tsc msr\n";

    #[test]
    fn a_physical_host_has_a_stable_hostid_and_says_whence() {
        let root = tree(&[
            ("/etc/machine-id", "4f1d0c8a2b3e4d5f6a7b8c9d0e1f2a3b\n"),
            ("/proc/cpuinfo", PHYSICAL_CPU),
            ("/sys/class/dmi/id/product_name", "PowerEdge R650\n"),
        ]);
        match inspect_at(root.path()) {
            Hostid::Stable { hostid, source } => {
                assert_eq!(hostid, hostid_of("4f1d0c8a2b3e4d5f6a7b8c9d0e1f2a3b"));
                assert!(source.starts_with("/etc/machine-id"), "{source}");
            }
            refused => panic!("{refused:?}"),
        }
    }

    #[test]
    fn containers_virtual_machines_and_placeholders_are_refused_with_the_reason() {
        let id = ("/etc/machine-id", "4f1d0c8a2b3e4d5f6a7b8c9d0e1f2a3b\n");
        let cases: [(Vec<(&str, &str)>, &str); 7] = [
            (vec![id, ("/.dockerenv", "")], "/.dockerenv exists"),
            (vec![id, ("/run/.containerenv", "")], "container"),
            (
                vec![id, ("/proc/1/cgroup", "0::/kubepods/besteffort/pod1\n")],
                "/proc/1/cgroup names kubepods",
            ),
            (
                vec![id, ("/sys/class/dmi/id/sys_vendor", "QEMU\n")],
                "sys_vendor says QEMU",
            ),
            (
                vec![id, ("/proc/cpuinfo", "flags : fpu hypervisor vme\n")],
                "hypervisor flag",
            ),
            (vec![("/etc/machine-id", "uninitialized\n")], "placeholder"),
            (vec![("/proc/cpuinfo", PHYSICAL_CPU)], "no machine id"),
        ];
        for (files, needle) in cases {
            let root = tree(&files);
            match inspect_at(root.path()) {
                Hostid::Refused { reason } => {
                    assert!(reason.contains(needle), "{reason} lacks {needle}")
                }
                stable => panic!("{files:?} gave {stable:?}"),
            }
        }
    }
}
