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
        let mut rows = vec![cells(&[&"SERVER", &"ALLOCATION", &"IN USE", &"AVAILABLE"])];
        for row in &feature.servers {
            let unknown = || "-".to_string();
            let in_use = row.in_use.map_or_else(unknown, |n| n.to_string());
            let available = row.available.map_or_else(unknown, |n| n.to_string());
            rows.push(cells(&[
                &row.server_id,
                &row.allocation,
                &in_use,
                &available,
            ]));
        }
        out.push_str(&table(&rows));
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
