//! Loopback ports for servers a harness starts: one policy for the tests,
//! the benchmark and `tessera demo`.

use rand::Rng;

/// Lowest port [`free_port`] picks.
const PORT_MIN: u16 = 10_000;
/// Random picks tried below the kernel's range for outgoing ports.
const PICKS_MAX: usize = 100;
/// The kernel's default first outgoing port, where `/proc` does not say.
const EPHEMERAL_MIN_DEFAULT: u16 = 32_768;

/// A loopback port nothing listens on: picked at random below the kernel's
/// range for outgoing ports, so another program's outgoing connection cannot
/// take it between this check and the server's bind. Where that range leaves
/// no room, the kernel picks one.
pub fn free_port() -> std::io::Result<u16> {
    let ephemeral_min = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(EPHEMERAL_MIN_DEFAULT);
    if ephemeral_min > PORT_MIN + 1_000 {
        let mut rng = rand::thread_rng();
        for _ in 0..PICKS_MAX {
            let port = rng.gen_range(PORT_MIN..ephemeral_min);
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return Ok(port);
            }
        }
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// `127.0.0.1:PORT` on a [`free_port`].
pub fn free_address() -> std::io::Result<String> {
    Ok(format!("127.0.0.1:{}", free_port()?))
}
