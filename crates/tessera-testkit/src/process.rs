//! Starting `tessera server` (or any program a harness runs beside it) with
//! its output in a log file, and stopping it again.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Pause between two looks at a process that was asked to stop.
const EXIT_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// `tessera server --config CONFIG ARGS`: how every harness starts a server.
/// `args` follow the config: `--new-pool`, `--recover-pool`, ….
pub fn server_command<S: AsRef<OsStr>>(tessera: &Path, config: &Path, args: &[S]) -> Command {
    let mut command = Command::new(tessera);
    command.arg("server").arg("--config").arg(config).args(args);
    command
}

/// On Linux, the process gets SIGKILL when the thread that started it ends,
/// so that a program stopped by Ctrl-C or a crash leaves none behind.
#[cfg(target_os = "linux")]
pub fn die_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt as _;
    // SAFETY: prctl is async-signal-safe and touches only the new process.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
pub fn die_with_parent(_command: &mut Command) {}

/// A started process whose output goes to its log file. Dropping it kills
/// the process (`kill -9`) and reaps it.
pub struct Process {
    pid: u32,
    log: PathBuf,
    /// Reaped only by [`Process::kill`], a finished [`Process::terminate`] or
    /// drop, or once [`Process::exited`] saw it gone: until then its pid
    /// cannot belong to another process.
    child: Mutex<Child>,
}

impl Process {
    /// Starts `command` with stdin closed and stdout and stderr appended to
    /// `log`, so that a restarted server's output follows the last one's.
    pub fn start(mut command: Command, log: &Path) -> std::io::Result<Process> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let child = command
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()?;
        Ok(Process {
            pid: child.id(),
            log: log.to_path_buf(),
            child: Mutex::new(child),
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Everything the process wrote so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_else(|err| format!("(no log: {err})"))
    }

    fn child(&self) -> std::sync::MutexGuard<'_, Child> {
        self.child.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How the process ended, if it has.
    pub fn exited(&self) -> Option<ExitStatus> {
        self.child().try_wait().ok().flatten()
    }

    /// Sends `signal` (`libc::SIGSTOP`, `libc::SIGTERM`, …); false if the
    /// process has ended.
    pub fn signal(&self, signal: libc::c_int) -> bool {
        let mut child = self.child();
        if !matches!(child.try_wait(), Ok(None)) {
            return false;
        }
        let Ok(pid) = libc::pid_t::try_from(self.pid) else {
            return false;
        };
        // SAFETY: kill(2) only sends a signal; it touches no memory of ours,
        // and the child is not reaped while we hold its lock.
        unsafe { libc::kill(pid, signal) == 0 }
    }

    /// `kill -9`, and reaps it.
    pub fn kill(self) {
        drop(self);
    }

    /// SIGTERM, then waits up to `timeout` for the exit; None if the process
    /// still runs then (it is left running: kill it or drop it).
    pub async fn terminate(&self, timeout: Duration) -> Option<ExitStatus> {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(EXIT_POLL_INTERVAL).await;
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(|p| p.into_inner());
        let _ = child.kill();
        let _ = child.wait();
    }
}
