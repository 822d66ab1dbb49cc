//! For tests that build more than `cargo test` builds for them (the C
//! library, the Python wheel) or run the `tessera` binary from another
//! package: where this build's outputs are, and cargo run from a test.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// `<target>/<profile>`: the directory of the running test's `deps/`.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    exe.parent()
        .and_then(Path::parent)
        .expect("the test runs from <target>/<profile>/deps")
        .to_path_buf()
}

/// The workspace's root directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the workspace root")
}

/// Runs `command`, panicking with its output if it fails; answers its
/// standard output.
pub fn run_checked(command: &mut Command) -> String {
    let shown = format!("{command:?}");
    let out = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|err| panic!("cannot run {shown}: {err}"));
    assert!(
        out.status.success(),
        "{shown} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `program` (cargo, or a tool that runs it), without the variables cargo
/// sets for the running test (CARGO_MANIFEST_DIR, CARGO_PKG_NAME, ...):
/// build scripts such as ring's rerun when they change, and they differ
/// from a plain `cargo` run's, so inheriting them would rebuild half the
/// tree every time.
pub fn nested_cargo(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut command = Command::new(program);
    for (name, _) in std::env::vars_os() {
        let name_text = name.to_string_lossy();
        let set_by_cargo = [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_BIN_",
            "CARGO_CRATE_NAME",
            "CARGO_PRIMARY_PACKAGE",
            "CARGO_TARGET_TMPDIR",
            "CARGO_RUSTC_CURRENT_DIR",
            "OUT_DIR",
        ]
        .iter()
        .any(|prefix| name_text.starts_with(prefix));
        if set_by_cargo {
            command.env_remove(&name);
        }
    }
    command.current_dir(workspace_root());
    command
}

/// `cargo` as the running test was built with.
pub fn cargo() -> Command {
    nested_cargo(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// The `tessera` binary that `cargo test --workspace` builds beside the
/// running test; built here if missing (`cargo test -p <one package>`).
pub fn tessera_binary() -> PathBuf {
    let tessera = profile_dir().join(format!("tessera{}", std::env::consts::EXE_SUFFIX));
    if !tessera.exists() {
        run_checked(cargo().args(["build", "-p", "tessera-cli", "--bin", "tessera"]));
    }
    assert!(
        tessera.exists(),
        "no tessera binary at {}",
        tessera.display()
    );
    tessera
}
