//! Loopback ports for servers a harness starts: one policy for the tests,
//! the benchmark and `tessera demo`.

use std::collections::BTreeSet;
use std::sync::Mutex;

use rand::Rng;

/// Lowest port [`free_port`] picks.
const PORT_MIN: u16 = 10_000;
/// Random picks tried below the kernel's range for outgoing ports.
const PICKS_MAX: usize = 100;
/// The kernel's default first outgoing port, where `/proc` does not say.
const EPHEMERAL_MIN_DEFAULT: u16 = 32_768;

/// Every port [`free_port`] has given in this process: a pool's servers get
/// their ports before any of them binds, so a free port can be picked twice.
static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A loopback port nothing listens on and this process has not been given
/// before: picked at random below the kernel's range for outgoing ports, so
/// another program's outgoing connection cannot take it between this check
/// and the server's bind. Where that range leaves no room, the kernel picks
/// one.
pub fn free_port() -> std::io::Result<u16> {
    let ephemeral_min = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(EPHEMERAL_MIN_DEFAULT);
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    if ephemeral_min > PORT_MIN + 1_000 {
        let mut rng = rand::thread_rng();
        for _ in 0..PICKS_MAX {
            let port = rng.gen_range(PORT_MIN..ephemeral_min);
            if !given.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                given.insert(port);
                return Ok(port);
            }
        }
    }
    for _ in 0..PICKS_MAX {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        if given.insert(port) {
            return Ok(port);
        }
    }
    Err(std::io::Error::other(
        "no loopback port is free that this process was not given before",
    ))
}

/// `127.0.0.1:PORT` on a [`free_port`].
pub fn free_address() -> std::io::Result<String> {
    Ok(format!("127.0.0.1:{}", free_port()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pool's servers each get their port before any binds: no two may
    /// share one (1,000 random picks would repeat one almost surely).
    #[test]
    fn no_port_is_given_twice() {
        let mut seen = BTreeSet::new();
        for _ in 0..1_000 {
            let port = free_port().unwrap();
            assert!(seen.insert(port), "port {port} was given twice");
        }
    }
}
