//! Human-readable status, in the manner of `lmstat -a`.

use std::fmt::Write as _;

use tessera_proto::StatusResponse;

fn duration(ms: u64) -> String {
    match ms {
        0..=9_999 => format!("{ms} ms"),
        10_000..=599_999 => format!("{} s", ms / 1000),
        _ => format!("{} min", ms / 60_000),
    }
}

/// Pads the columns of `rows` (the first is the header) to equal widths.
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, cell)| format!("{cell:<width$}", width = widths[c]))
            .collect();
        let _ = writeln!(out, "  {}", cells.join("  ").trim_end());
    }
    out
}

fn cells(values: &[&dyn std::fmt::Display]) -> Vec<String> {
    values.iter().map(|v| v.to_string()).collect()
}

pub fn render(status: &StatusResponse) -> String {
    let mut out = String::new();
    let s = &status.server;
    let _ = writeln!(
        out,
        "Pool `{}` (pool file sequence {}), answered by server {} at {}: {}, {}",
        status.pool_id, status.pool_sequence, s.id, s.address, s.role, s.state
    );
    if let Some(reason) = &s.state_reason {
        let _ = writeln!(out, "  not serving: {reason}");
    }
    if let Some(partial) = partial(status) {
        let _ = writeln!(out, "  PARTIAL: {partial}");
    }
    if let Some(grace_ms) = s.grace_remaining_ms {
        let _ = writeln!(
            out,
            "  grace period: only renewals for {}",
            duration(grace_ms)
        );
    }
    if s.store_sync.as_deref() == Some("background") {
        let _ = writeln!(
            out,
            "  grants synced in the background: a crash is followed by a grace period"
        );
    }
    let _ = writeln!(out, "\nServers (leader priority order):");
    let mut rows = vec![cells(&[&"ID", &"ADDRESS", &"ROLE", &"UP", &"LAST CONTACT"])];
    for peer in &status.servers {
        let contact = peer
            .last_contact_ms
            .map_or("never".to_string(), |ms| format!("{} ago", duration(ms)));
        rows.push(cells(&[
            &peer.id,
            &peer.address,
            &peer.role,
            &if peer.up { "up" } else { "DOWN" },
            &contact,
        ]));
    }
    out.push_str(&table(&rows));
    for feature in &status.features {
        let in_use: u32 = feature.servers.iter().filter_map(|r| r.in_use).sum();
        let scope = if !status.pool_wide {
            format!(" on server {} (the other servers' not counted)", s.id)
        } else if !status.unanswered.is_empty() {
            " on the servers that answered".to_string()
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "\nFeature `{}` (vendor {}): {} of {} seats in use{scope}, {} available, {} in the \
             free pool",
            feature.feature,
            feature.vendor,
            in_use,
            feature.hard_limit,
            feature.pool_available,
            feature.free_pool
        );
        let _ = writeln!(
            out,
            "  lease {}, heartbeat every {}, borrow above {}%",
            duration(feature.lease_ms),
            duration(feature.heartbeat_interval_ms),
            feature.borrow_threshold_percent
        );
        let mut rows = vec![cells(&[
            &"SERVER",
            &"ALLOCATION",
            &"IN USE",
            &"AVAILABLE",
            &"HELD BACK",
            &"TARGET",
            &"BORROWS",
            &"MOVED IN/OUT",
        ])];
        for row in &feature.servers {
            let unknown = || "-".to_string();
            let in_use = row.in_use.map_or_else(unknown, |n| n.to_string());
            let available = row.available.map_or_else(unknown, |n| n.to_string());
            let target = row.target.map_or_else(unknown, |n| n.to_string());
            let moved = format!("{}/{}", row.seats_in, row.seats_out);
            rows.push(cells(&[
                &row.server_id,
                &row.allocation,
                &in_use,
                &available,
                &row.reserved,
                &target,
                &row.borrows,
                &moved,
            ]));
        }
        out.push_str(&table(&rows));
        if feature.pending_requests > 0 {
            let _ = writeln!(
                out,
                "  {} request(s) for seats wait for their donor's consent",
                feature.pending_requests
            );
        }
        for code in &feature.codes {
            let verdict = match &code.reason {
                None => "served".to_string(),
                Some(reason) => format!("NOT SERVED: {reason}"),
            };
            let _ = writeln!(
                out,
                "  code {}: {} seats, versions {}-{}, expires {}, host {}: {}",
                code.id,
                code.seats,
                code.version_min,
                code.version_max,
                code.expiry,
                code.hostid,
                verdict
            );
        }
        for (kind, limits) in [("reserve", &feature.reserves), ("max", &feature.maxima)] {
            for limit in limits {
                let _ = writeln!(
                    out,
                    "  {kind} {} for \"{}\": {} held pool-wide",
                    limit.seats, limit.rule, limit.held
                );
            }
        }
        if !feature.waiters.is_empty() {
            let _ = writeln!(out, "  queue: {} programs waiting", feature.waiters.len());
            for waiter in &feature.waiters {
                let who = match (&waiter.user, &waiter.host) {
                    (Some(user), Some(host)) => format!("{user} on {host}, "),
                    _ => String::new(),
                };
                let _ = writeln!(out, "    {}. {who}{} seats", waiter.position, waiter.seats);
            }
        }
        if !feature.denials.is_empty() {
            let total: u64 = feature.denials.iter().map(|d| d.count).sum();
            let by_code: Vec<String> = feature
                .denials
                .iter()
                .map(|d| format!("{} {}", d.code.as_str(), d.count))
                .collect();
            let _ = writeln!(
                out,
                "  refused: {total} checkout requests since the servers started ({})",
                by_code.join(", ")
            );
        }
        if feature.lingering_seats > 0 {
            let _ = writeln!(
                out,
                "  lingering: {} seats checked in and held for the policy's linger",
                feature.lingering_seats
            );
        }
        if feature.temporary_seats > 0 {
            let _ = writeln!(
                out,
                "  temporary licenses: {} seats out on devices",
                feature.temporary_seats
            );
            for license in &feature.temporaries {
                let _ = writeln!(
                    out,
                    "    {} ticket {} device {}: {} seat, until {} ({} Unix ms)",
                    license.license_id,
                    license.ticket.as_deref().unwrap_or("-"),
                    license.device.as_deref().unwrap_or("-"),
                    license.seats,
                    time::OffsetDateTime::from_unix_timestamp(license.expires_unix_ms / 1_000)
                        .map_or_else(|_| "?".to_string(), |t| t.to_string()),
                    license.expires_unix_ms
                );
            }
        }
    }
    let whose = if status.pool_wide {
        "the pool".to_string()
    } else {
        format!("server {}", s.id)
    };
    if status.grants.is_empty() && status.grants_total > 0 {
        let _ = writeln!(
            out,
            "\nGrants on {whose}: {} (who holds them is shown with a read token: \
             --token-file)",
            status.grants_total
        );
        return out;
    }
    let _ = writeln!(
        out,
        "\nGrants on {whose} ({} of {} shown):",
        status.grants.len(),
        status.grants_total
    );
    if !status.grants.is_empty() {
        let mut rows = vec![cells(&[
            &"GRANT",
            &"FEATURE",
            &"SEATS",
            &"USER",
            &"HOST",
            &"DISPLAY",
            &"SERVER",
            &"AGE",
            &"EXPIRES IN",
        ])];
        for g in &status.grants {
            rows.push(cells(&[
                &g.grant_id,
                &g.feature,
                &g.count,
                &g.user,
                &g.host,
                &g.display.as_deref().unwrap_or("-"),
                &if g.server_id.is_empty() {
                    &s.id
                } else {
                    &g.server_id
                },
                &duration(g.age_ms),
                &duration(g.expires_in_ms),
            ]));
        }
        out.push_str(&table(&rows));
    }
    out
}

/// Why a status is not the whole pool's, if it is not.
fn partial(status: &StatusResponse) -> Option<String> {
    if !status.pool_wide {
        return Some(format!(
            "server {}'s own figures only; the other servers' seats in use and grants are not \
             shown",
            status.server.id
        ));
    }
    if status.unanswered.is_empty() {
        return None;
    }
    let missing: Vec<String> = status
        .unanswered
        .iter()
        .map(|u| {
            // The SDK's error names the address again.
            let error = u
                .error
                .strip_prefix(&format!("{}: ", u.address))
                .unwrap_or(&u.error);
            format!("server {} at {} did not answer ({error})", u.id, u.address)
        })
        .collect();
    let whose = if missing.len() == 1 { "its" } else { "their" };
    Some(format!(
        "{}; {whose} seats in use and grants are not counted",
        missing.join("; ")
    ))
}

/// `host` and `port` of a `host:port` address.
fn host_and_port(address: &str) -> (&str, &str) {
    address.rsplit_once(':').unwrap_or((address, "0"))
}

/// A grant's handle in `lmstat` lines: a number derived from its id, the
/// same on every server and for the grant's whole life (FNV-1a, 32 bits).
pub fn lmstat_handle(grant_id: &str) -> u32 {
    grant_id.bytes().fold(0x811c_9dc5_u32, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    })
}

/// `N license` or `N licenses`, as FlexNet writes them.
fn licenses(n: u32) -> String {
    if n == 1 {
        "1 license".to_string()
    } else {
        format!("{n} licenses")
    }
}

/// `lmstat -a` text (FlexNet), line for line where monitoring parses it:
/// the server lines, `Users of FEATURE:  (Total of N licenses issued;
/// Total of M licenses in use)`, the feature line, and one line per grant,
/// `user host display (vVERSION) (server/port handle), start Www M/D
/// H:MM[, N licenses]`.
pub fn render_lmstat(status: &StatusResponse, now: time::OffsetDateTime) -> String {
    let mut out = String::new();
    let s = &status.server;
    let _ = writeln!(
        out,
        "License server status: {}",
        status
            .servers
            .iter()
            .map(|p| {
                let (host, port) = host_and_port(&p.address);
                format!("{port}@{host}")
            })
            .collect::<Vec<_>>()
            .join(",")
    );
    let (own_host, _) = host_and_port(&s.address);
    let _ = writeln!(
        out,
        "    License file(s) on {own_host}: pool {} sequence {}:\n",
        status.pool_id, status.pool_sequence
    );
    for peer in &status.servers {
        let state = if peer.up { "UP" } else { "DOWN" };
        let master = if peer.role == "leader" {
            " (MASTER)"
        } else {
            ""
        };
        let (host, _) = host_and_port(&peer.address);
        let _ = writeln!(
            out,
            "{host:>10}: license server {state}{master} v{}",
            s.software_version
        );
    }
    let mut vendors: Vec<&str> = status.features.iter().map(|f| f.vendor.as_str()).collect();
    vendors.sort_unstable();
    vendors.dedup();
    let _ = writeln!(out, "\nVendor daemon status (on {own_host}):\n");
    for vendor in vendors {
        let _ = writeln!(out, "{vendor:>10}: UP v{}", s.software_version);
    }
    let _ = writeln!(out, "\nFeature usage info:\n");
    for feature in &status.features {
        let in_use: u32 = feature.servers.iter().filter_map(|r| r.in_use).sum();
        let _ = writeln!(
            out,
            "Users of {}:  (Total of {} issued;  Total of {} in use)\n",
            feature.feature,
            licenses(feature.hard_limit),
            licenses(in_use)
        );
        let expiry = feature
            .codes
            .iter()
            .filter(|c| c.served)
            .map(|c| c.expiry.as_str())
            .next()
            .unwrap_or("-");
        let _ = writeln!(
            out,
            "  \"{}\" v{}, vendor: {}, expiry: {expiry}",
            feature.feature,
            feature
                .codes
                .first()
                .map_or("0", |c| c.version_max.as_str()),
            feature.vendor
        );
        let _ = writeln!(out, "  floating license\n");
        for grant in status
            .grants
            .iter()
            .filter(|g| g.feature == feature.feature)
        {
            let start = now - time::Duration::milliseconds(grant.age_ms as i64);
            let start = format!(
                "{} {}/{} {}:{:02}",
                &start.weekday().to_string()[..3],
                u8::from(start.month()),
                start.day(),
                start.hour(),
                start.minute()
            );
            let seats = if grant.count == 1 {
                String::new()
            } else {
                format!(", {}", licenses(grant.count))
            };
            let holder = status
                .servers
                .iter()
                .find(|p| p.id == grant.server_id)
                .map_or(s.address.as_str(), |p| p.address.as_str());
            let (server_host, port) = host_and_port(holder);
            let _ = writeln!(
                out,
                "    {} {} {} (v{}) ({server_host}/{port} {}), start {start}{seats}",
                grant.user,
                grant.host,
                grant.display.as_deref().unwrap_or(&grant.host),
                grant.version,
                lmstat_handle(&grant.grant_id)
            );
        }
        out.push('\n');
    }
    if let Some(partial) = partial(status) {
        let _ = writeln!(out, "NOTE: PARTIAL: {partial}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_proto::*;

    fn feature(name: &str, seats: u32, in_use: [u32; 2]) -> FeatureStatus {
        let row = |server_id: &str, in_use: u32| DistributionRow {
            server_id: server_id.into(),
            allocation: seats / 2,
            in_use: Some(in_use),
            available: Some(seats / 2 - in_use),
            reserved: 0,
            target: None,
            borrows: 0,
            seats_in: 0,
            seats_out: 0,
        };
        FeatureStatus {
            feature: name.into(),
            vendor: "acme".into(),
            hard_limit: seats,
            free_pool: 0,
            pool_available: seats - in_use[0] - in_use[1],
            lease_ms: 30_000,
            heartbeat_interval_ms: 10_000,
            borrow_threshold_percent: 80,
            pending_requests: 0,
            servers: vec![row("A", in_use[0]), row("B", in_use[1])],
            codes: vec![CodeStatus {
                id: format!("acme-{name}"),
                vendor: "acme".into(),
                seats,
                version_min: "1.0".into(),
                version_max: "2.0".into(),
                expiry: "permanent".into(),
                hostid: "any".into(),
                served: true,
                reason: None,
            }],
            temporary_seats: 0,
            temporary_allocation: 0,
            temporaries: Vec::new(),
            lingering_seats: 0,
            reserves: Vec::new(),
            maxima: Vec::new(),
            waiters: Vec::new(),
            denials: Vec::new(),
        }
    }

    fn grant(id: &str, feature: &str, count: u32, user: &str, server: &str) -> GrantStatus {
        GrantStatus {
            grant_id: id.into(),
            feature: feature.into(),
            count,
            client_id: format!("{user}-1"),
            user: user.into(),
            host: format!("ws-{user}"),
            display: (user == "alice").then(|| "/dev/pts/3".to_string()),
            server_id: server.into(),
            version: "2.0".into(),
            age_ms: 60_000,
            expires_in_ms: 20_000,
        }
    }

    /// A pool of two servers, A (leader, answering) and B; `cad` of 10
    /// seats with 3 in use, `cam` of 2 with 1 in use.
    fn status() -> StatusResponse {
        let peer = |id: &str, address: &str, role: &str| PeerStatus {
            id: id.into(),
            address: address.into(),
            role: role.into(),
            up: true,
            last_contact_ms: Some(0),
        };
        StatusResponse {
            pool_id: "eng".into(),
            pool_sequence: 3,
            server: ServerStatus {
                id: "A".into(),
                address: "lic1:27000".into(),
                role: "leader".into(),
                leader_id: Some("A".into()),
                state: "serving".into(),
                software_version: "0.1.0".into(),
                uptime_ms: 1,
                grace_remaining_ms: None,
                state_reason: None,
                store_sync: None,
                hostid: "mid-1".into(),
                vid: None,
            },
            servers: vec![
                peer("A", "lic1:27000", "leader"),
                peer("B", "lic2.example.com:27001", "follower"),
            ],
            features: vec![feature("cad", 10, [2, 1]), feature("cam", 2, [0, 1])],
            grants: vec![
                grant("6039d9bf67bf4103b23d468ff879fd50", "cad", 2, "alice", "A"),
                grant("9f1c", "cad", 1, "bob.smith", "B"),
                grant("c0ffee", "cam", 1, "carol", "B"),
            ],
            grants_total: 3,
            pool_wide: true,
            unanswered: Vec::new(),
        }
    }

    fn regex(pattern: &str) -> regex_automata::meta::Regex {
        regex_automata::meta::Regex::new(pattern).expect("a valid expression")
    }

    /// The named groups of `pattern` in `line`, or `None` if it does not match.
    fn groups(pattern: &regex_automata::meta::Regex, line: &str) -> Option<Vec<String>> {
        let mut captures = pattern.create_captures();
        pattern.captures(line, &mut captures);
        if !captures.is_match() {
            return None;
        }
        Some(
            (1..captures.group_len())
                .map(|i| {
                    captures
                        .get_group(i)
                        .map_or("", |span| &line[span.range()])
                        .to_string()
                })
                .collect(),
        )
    }

    /// What a parser reads of one `lmstat -a` text: per feature, the
    /// licenses issued and in use; per user line, user, host, display,
    /// version, server, port, handle and licenses.
    #[derive(Debug, Default, PartialEq)]
    struct Read {
        totals: Vec<(String, u32, u32)>,
        users: Vec<UserLine>,
    }

    /// One user line as a parser reads it.
    #[derive(Clone, Debug, PartialEq)]
    struct UserLine {
        user: String,
        host: String,
        display: String,
        version: String,
        server: String,
        port: String,
        handle: u32,
        licenses: u32,
    }

    impl UserLine {
        fn from_groups(g: &[String], licenses: u32) -> Option<Self> {
            Some(Self {
                user: g[0].clone(),
                host: g[1].clone(),
                display: g[2].clone(),
                version: g[3].clone(),
                server: g[4].clone(),
                port: g[5].clone(),
                handle: g[6].parse().ok()?,
                licenses,
            })
        }
    }

    /// The expressions of the Prometheus `flexlm_exporter`
    /// (mjtrangoni/flexlm_exporter, `collector/regexp.go`), as documented there.
    fn read_as_flexlm_exporter(text: &str) -> Read {
        let feature = regex(
            r"^Users of (?P<name>.*):\s+\(Total of (?P<issued>\d+) \w+ issued;\s+Total of (?P<used>\d+) \w+ in use\)$",
        );
        let user = regex(
            r"^\s+(?P<user>[\w[:print:]]+) (?P<host>[\w\-\.]+) (?P<display>[[:print:]]+) \(v(?P<ver>[\w\.]+)\) \((?P<server>[\w\-\.]+)/(?P<port>\d+) (?P<handle>\d+)\), start (?P<since>\w+ \d+/\d+ \d+:\d+)(?:, (?P<licenses>\d+) \w+)?$",
        );
        let server = regex(
            r"(?P<fqdn>[\w\.\-]+): license server (?P<status>\w+)(?P<master>\s\(MASTER\))? (?P<version>v[\d\.]+)$",
        );
        let servers = regex(r"^License server status: (?P<servers>[\w,.@\-]+)");
        let vendor = regex(r"^\s+(?P<vendor>\w+): (?P<status>UP|DOWN) (?P<version>v[\d\.]+)$");
        assert!(
            text.lines().any(|l| groups(&servers, l).is_some()),
            "{text}"
        );
        let up: Vec<Vec<String>> = text.lines().filter_map(|l| groups(&server, l)).collect();
        assert_eq!(up.len(), 2, "{text}");
        assert_eq!(
            (up[0][0].as_str(), up[0][2].as_str()),
            ("lic1", " (MASTER)")
        );
        assert_eq!(up[1][0], "lic2.example.com");
        assert!(text
            .lines()
            .any(|l| groups(&vendor, l).is_some_and(|g| g[0] == "acme")));
        read(text, &feature, |line| {
            let g = groups(&user, line)?;
            let licenses = if g[8].is_empty() {
                1
            } else {
                g[8].parse().ok()?
            };
            UserLine::from_groups(&g, licenses)
        })
    }

    /// The expressions of the `FlexLM-License-Usage-Logger`
    /// (tvapdx/FlexLM-License-Usage-Logger, `logLicenseUsage.py`).
    fn read_as_usage_logger(text: &str) -> Read {
        let feature = regex(
            r"^Users of (.+):  \(Total of (\d+?) license[s]* issued;  Total of (\d+?) license[s]* in use\)",
        );
        let user = regex(
            r"^\s+(.+) (.+) (.+) \(v(.+)\) \((.+)/(.+) (.+)\), start (.+) (\d+)/(\d+) (\d*):(\d*)",
        );
        read(text, &feature, |line| {
            let g = groups(&user, line)?;
            // The logger counts one license per line and reads no count.
            UserLine::from_groups(&g, 0)
        })
    }

    fn read(
        text: &str,
        feature: &regex_automata::meta::Regex,
        user: impl Fn(&str) -> Option<UserLine>,
    ) -> Read {
        let mut out = Read::default();
        for line in text.lines() {
            if let Some(g) = groups(feature, line) {
                out.totals
                    .push((g[0].clone(), g[1].parse().unwrap(), g[2].parse().unwrap()));
            } else if let Some(read) = user(line) {
                out.users.push(read);
            }
        }
        out
    }

    #[test]
    fn two_public_lmstat_parsers_read_back_every_user_and_total() {
        let now = time::macros::datetime!(2026-11-22 10:03 UTC);
        let status = status();
        let text = render_lmstat(&status, now);
        assert!(
            text.contains(
                "Users of cam:  (Total of 2 licenses issued;  Total of 1 license in use)"
            ),
            "{text}"
        );
        assert!(
            text.starts_with("License server status: 27000@lic1,27001@lic2.example.com\n"),
            "{text}"
        );
        let want_totals = vec![("cad".to_string(), 10, 3), ("cam".to_string(), 2, 1)];
        let want_users: Vec<_> = status
            .grants
            .iter()
            .map(|g| {
                let (host, port) = if g.server_id == "A" {
                    ("lic1", "27000")
                } else {
                    ("lic2.example.com", "27001")
                };
                UserLine {
                    user: g.user.clone(),
                    host: g.host.clone(),
                    display: g.display.clone().unwrap_or_else(|| g.host.clone()),
                    version: g.version.clone(),
                    server: host.to_string(),
                    port: port.to_string(),
                    handle: lmstat_handle(&g.grant_id),
                    licenses: g.count,
                }
            })
            .collect();
        let exporter = read_as_flexlm_exporter(&text);
        assert_eq!(exporter.totals, want_totals, "{text}");
        assert_eq!(exporter.users, want_users, "{text}");
        let logger = read_as_usage_logger(&text);
        assert_eq!(logger.totals, want_totals, "{text}");
        let without_counts: Vec<_> = want_users
            .iter()
            .map(|u| UserLine {
                licenses: 0,
                ..u.clone()
            })
            .collect();
        assert_eq!(logger.users, without_counts, "{text}");
        assert!(
            text.lines().any(|l| l
                == "    alice ws-alice /dev/pts/3 (v2.0) (lic1/27000 3085957935), start Sun 11/22 10:02, 2 licenses"),
            "{text}"
        );
        assert!(!text.contains("PARTIAL"), "{text}");
    }

    /// A server that syncs grants in the background says so, and what a
    /// crash then costs; one that syncs before it answers says nothing.
    #[test]
    fn a_server_that_syncs_in_the_background_says_so() {
        let mut status = status();
        let line = "grants synced in the background: a crash is followed by a grace period";
        assert!(!render(&status).contains(line));
        status.server.store_sync = Some("before-answer".into());
        assert!(!render(&status).contains(line));
        status.server.store_sync = Some("background".into());
        let text = render(&status);
        assert!(
            text.lines().nth(1).is_some_and(|l| l.trim() == line),
            "{text}"
        );
    }

    #[test]
    fn a_handle_is_a_number_stable_for_its_grant() {
        let id = "6039d9bf67bf4103b23d468ff879fd50";
        assert_eq!(lmstat_handle(id), lmstat_handle(id));
        assert_ne!(lmstat_handle(id), lmstat_handle("9f1c"));
    }

    /// A server's own answer, or a pool-wide one some server did not
    /// answer, says so rather than passing for the pool's figures.
    #[test]
    fn a_partial_status_says_so_in_every_format() {
        let mut own = status();
        own.pool_wide = false;
        let table = render(&own);
        assert!(
            table.contains("3 of 10 seats in use on server A (the other servers' not counted)"),
            "{table}"
        );
        assert!(
            table.contains("PARTIAL: server A's own figures only"),
            "{table}"
        );
        let mut partial = status();
        partial.unanswered.push(UnansweredServer {
            id: "B".into(),
            address: "lic2.example.com:27001".into(),
            error: "connection refused".into(),
        });
        let table = render(&partial);
        assert!(
            table.contains("seats in use on the servers that answered"),
            "{table}"
        );
        assert!(
            table
                .contains("PARTIAL: server B at lic2.example.com:27001 did not answer (connection refused); its seats in use"),
            "{table}"
        );
        let text = render_lmstat(&partial, time::OffsetDateTime::UNIX_EPOCH);
        assert!(
            text.lines()
                .last()
                .unwrap()
                .starts_with("NOTE: PARTIAL: server B"),
            "{text}"
        );
        let whole = render(&status());
        assert!(
            whole.contains("3 of 10 seats in use, 7 available"),
            "{whole}"
        );
        assert!(!whole.contains("PARTIAL"), "{whole}");
    }
}
