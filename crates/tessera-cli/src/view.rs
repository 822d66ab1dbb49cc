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
    if let Some(grace_ms) = s.grace_remaining_ms {
        let _ = writeln!(
            out,
            "  grace period: only renewals for {}",
            duration(grace_ms)
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
        let _ = writeln!(
            out,
            "\nFeature `{}` (vendor {}): {} of {} seats in use, {} available, {} in the free pool",
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
    if status.grants.is_empty() && status.grants_total > 0 {
        let _ = writeln!(
            out,
            "\nGrants on server {}: {} (who holds them is shown with a read token: \
             --token-file)",
            s.id, status.grants_total
        );
        return out;
    }
    let _ = writeln!(
        out,
        "\nGrants on server {} ({} of {} shown):",
        s.id,
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
            &"CLIENT",
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
                &g.client_id,
                &duration(g.age_ms),
                &duration(g.expires_in_ms),
            ]));
        }
        out.push_str(&table(&rows));
    }
    out
}

/// `lmstat -a` style text (FlexNet), for monitoring scripts that parse it.
pub fn render_lmstat(status: &StatusResponse, now: time::OffsetDateTime) -> String {
    let mut out = String::new();
    let s = &status.server;
    let _ = writeln!(
        out,
        "License server status: {}",
        status
            .servers
            .iter()
            .map(|p| p.address.as_str())
            .collect::<Vec<_>>()
            .join(",")
    );
    let _ = writeln!(
        out,
        "    License file(s) on {}: pool `{}` sequence {}:\n",
        s.id, status.pool_id, status.pool_sequence
    );
    for peer in &status.servers {
        let state = if peer.up { "UP" } else { "DOWN" };
        let master = if peer.role == "leader" {
            " (MASTER)"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "{:>10}: license server {state}{master} v{}",
            peer.address, s.software_version
        );
    }
    let _ = writeln!(out, "\nFeature usage info:\n");
    for feature in &status.features {
        let in_use: u32 = feature.servers.iter().filter_map(|r| r.in_use).sum();
        let plural = |n: u32| if n == 1 { "license" } else { "licenses" };
        let _ = writeln!(
            out,
            "Users of {}:  (Total of {} {} issued;  Total of {} {} in use)\n",
            feature.feature,
            feature.hard_limit,
            plural(feature.hard_limit),
            in_use,
            plural(in_use)
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
                format!(", {} licenses", grant.count)
            };
            let _ = writeln!(
                out,
                "    {} {} {} (v{}) ({} {}), start {start}{seats}",
                grant.user, grant.host, grant.client_id, grant.version, s.address, grant.grant_id
            );
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_proto::*;

    fn status() -> StatusResponse {
        StatusResponse {
            pool_id: "eng".into(),
            pool_sequence: 3,
            server: ServerStatus {
                id: "A".into(),
                address: "10.0.0.5:27000".into(),
                role: "leader".into(),
                leader_id: Some("A".into()),
                state: "serving".into(),
                software_version: "0.1.0".into(),
                uptime_ms: 1,
                grace_remaining_ms: None,
                state_reason: None,
                hostid: "mid-1".into(),
                vid: None,
            },
            servers: vec![PeerStatus {
                id: "A".into(),
                address: "10.0.0.5:27000".into(),
                role: "leader".into(),
                up: true,
                last_contact_ms: Some(0),
            }],
            features: vec![FeatureStatus {
                feature: "cad".into(),
                vendor: "acme".into(),
                hard_limit: 10,
                free_pool: 0,
                pool_available: 8,
                lease_ms: 30_000,
                heartbeat_interval_ms: 10_000,
                borrow_threshold_percent: 80,
                pending_requests: 0,
                servers: vec![DistributionRow {
                    server_id: "A".into(),
                    allocation: 10,
                    in_use: Some(2),
                    available: Some(8),
                    reserved: 0,
                    target: None,
                    borrows: 0,
                    seats_in: 0,
                    seats_out: 0,
                }],
                codes: vec![CodeStatus {
                    id: "c1".into(),
                    vendor: "acme".into(),
                    seats: 10,
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
            }],
            grants: vec![GrantStatus {
                grant_id: "g1".into(),
                feature: "cad".into(),
                count: 2,
                client_id: "c-1".into(),
                user: "alice".into(),
                host: "ws12".into(),
                version: "2.0".into(),
                age_ms: 60_000,
                expires_in_ms: 20_000,
            }],
            grants_total: 1,
        }
    }

    #[test]
    fn lmstat_lines_that_monitoring_parses() {
        let now = time::macros::datetime!(2026-11-22 10:03 UTC);
        let text = render_lmstat(&status(), now);
        for line in [
            "10.0.0.5:27000: license server UP (MASTER) v0.1.0",
            "Users of cad:  (Total of 10 licenses issued;  Total of 2 licenses in use)",
            "  \"cad\" v2.0, vendor: acme, expiry: permanent",
            "    alice ws12 c-1 (v2.0) (10.0.0.5:27000 g1), start Sun 11/22 10:02, 2 licenses",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing `{line}` in:\n{text}"
            );
        }
    }
}
