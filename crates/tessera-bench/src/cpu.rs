//! CPU time of processes, so that a run can say what one checkout cost the
//! server and the load generator. On a machine shared with other work, CPU
//! per checkout holds steadier than checkouts per second.

use std::time::Duration;

/// User plus system CPU time of process `pid` so far (Linux `/proc`).
pub fn process_cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let ticks_per_s = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    cpu_time_of_stat(&stat, u64::try_from(ticks_per_s).ok()?)
}

/// User plus system CPU time of this process so far.
pub fn own_cpu_time() -> Option<Duration> {
    // SAFETY: getrusage writes only into the struct it is given.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        if libc::getrusage(libc::RUSAGE_SELF, &mut usage) != 0 {
            return None;
        }
        usage
    };
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    Some(time(usage.ru_utime) + time(usage.ru_stime))
}

/// Fields 14 and 15 (utime, stime, in clock ticks) of a `/proc/PID/stat`
/// line. The command name (field 2) may hold spaces and parentheses, so the
/// fields are counted from its closing parenthesis.
fn cpu_time_of_stat(stat: &str, ticks_per_s: u64) -> Option<Duration> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    if ticks_per_s == 0 {
        return None;
    }
    Some(Duration::from_micros(
        (user + system) * 1_000_000 / ticks_per_s,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_are_read_past_odd_command_names() {
        let line =
            "4242 (tes (se) ra) S 1 4242 4242 0 -1 4194560 1363 0 0 0 250 50 0 0 20 0 9 0 5000";
        assert_eq!(
            cpu_time_of_stat(line, 100),
            Some(Duration::from_millis(3_000))
        );
        assert_eq!(cpu_time_of_stat("garbage", 100), None);
    }

    #[test]
    fn this_process_has_used_some_cpu() {
        let spin: u64 = (0..1_000_000u64).map(std::hint::black_box).sum();
        assert!(spin > 0);
        assert!(own_cpu_time().is_some_and(|t| t > Duration::ZERO));
        assert!(process_cpu_time(std::process::id()).is_some());
    }
}
