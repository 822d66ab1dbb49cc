//! The report log (FlexNet's report log): every server appends its usage
//! events to files of JSON lines, each line chained to the one before by a
//! SHA-256, so an edited, inserted or removed line shows; `tessera report`
//! merges the files of every server and sums usage per feature and user.
//!
//! A file starts with a header line naming its server; every line holds
//! `prev`, the SHA-256 (hex) of the line before it (of the header for the
//! first event), and the event.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// Seats granted (a checkout, or a fail-over conversion here).
    Checkout,
    /// Seats given back by their program.
    Checkin,
    /// A grant's lease ran out here (its program stopped, or moved).
    Expired,
    /// A checkout refused; `detail` is the error code.
    Denied,
}

/// One usage event of one server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageEvent {
    pub at_unix_ms: i64,
    pub kind: EventKind,
    pub feature: String,
    pub user: String,
    pub host: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub grant_id: String,
    pub count: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The first line of a report file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportHeader {
    pub tessera_report: u32,
    pub pool_id: String,
    pub server: String,
    pub started_unix_ms: i64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    prev: String,
    event: UsageEvent,
}

/// SHA-256 (hex) of a line's bytes, without its newline.
pub fn line_hash(line: &str) -> String {
    hex::encode(Sha256::digest(line.as_bytes()))
}

/// The text of a header line.
pub fn header_line(header: &ReportHeader) -> String {
    serde_json::to_string(header).expect("a header serializes")
}

/// The text of an event's line, chained to the line whose hash is `prev`.
pub fn event_line(prev: &str, event: &UsageEvent) -> String {
    serde_json::to_string(&Line {
        prev: prev.to_string(),
        event: event.clone(),
    })
    .expect("an event serializes")
}

/// A report file read back: its header and events, checked line by line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportFile {
    pub header: ReportHeader,
    pub events: Vec<UsageEvent>,
}

/// Reads a report file's `text`, refusing it at the first line that breaks
/// the chain (edited, inserted, removed or reordered lines) with its number.
pub fn read_report(text: &str) -> Result<ReportFile, String> {
    let mut lines = text.lines().enumerate();
    let (_, first) = lines.next().ok_or("the file is empty")?;
    let header: ReportHeader = serde_json::from_str(first)
        .map_err(|err| format!("line 1 is not a report header: {err}"))?;
    if header.tessera_report != 1 {
        return Err(format!(
            "report format {} is not one this version reads (1)",
            header.tessera_report
        ));
    }
    let mut prev = line_hash(first);
    let mut events = Vec::new();
    for (index, line) in lines {
        let number = index + 1;
        let parsed: Line = serde_json::from_str(line)
            .map_err(|err| format!("line {number} is not a report event: {err}"))?;
        if parsed.prev != prev {
            return Err(format!(
                "line {number} does not follow line {}: the file was changed there",
                number - 1
            ));
        }
        prev = line_hash(line);
        events.push(parsed.event);
    }
    Ok(ReportFile { header, events })
}

/// Usage of one feature by one user over a period.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct UserUsage {
    /// Seat-hours: seats held times hours, within the period.
    pub seat_hours: f64,
    pub checkouts: u64,
    pub denials: u64,
}

/// Usage of one feature over a period.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct FeatureUsage {
    pub seat_hours: f64,
    /// Most seats held at once, pool-wide.
    pub peak_seats: u64,
    pub checkouts: u64,
    pub denials: u64,
    pub users: BTreeMap<String, UserUsage>,
}

/// Sums the events of every server between `from_unix_ms` and
/// `to_unix_ms`. A grant counts from its checkout to its check-in or
/// expiry on the server that held it last; one still held at the end of
/// the period counts to the end.
pub fn usage(
    events: &[UsageEvent],
    from_unix_ms: i64,
    to_unix_ms: i64,
) -> BTreeMap<String, FeatureUsage> {
    let mut sorted: Vec<&UsageEvent> = events.iter().collect();
    sorted.sort_by_key(|e| e.at_unix_ms);
    let mut out: BTreeMap<String, FeatureUsage> = BTreeMap::new();
    // Per grant: when it began, its seats and user; a fail-over's checkout
    // on another server of the same grant does not begin it again.
    let mut open: BTreeMap<&str, (i64, u32, &str, &str)> = BTreeMap::new();
    let mut held: BTreeMap<&str, u64> = BTreeMap::new();
    let hours = |from: i64, to: i64| {
        let (from, to) = (from.max(from_unix_ms), to.min(to_unix_ms));
        (to - from).max(0) as f64 / 3_600_000.0
    };
    for event in sorted {
        if event.at_unix_ms > to_unix_ms {
            break;
        }
        let feature = out.entry(event.feature.clone()).or_default();
        let in_period = event.at_unix_ms >= from_unix_ms;
        match event.kind {
            EventKind::Checkout => {
                if open.contains_key(event.grant_id.as_str()) {
                    continue;
                }
                open.insert(
                    &event.grant_id,
                    (event.at_unix_ms, event.count, &event.user, &event.feature),
                );
                let now = held.entry(&event.feature).or_default();
                *now += u64::from(event.count);
                if in_period {
                    feature.peak_seats = feature.peak_seats.max(*now);
                    feature.checkouts += 1;
                    feature
                        .users
                        .entry(event.user.clone())
                        .or_default()
                        .checkouts += 1;
                }
            }
            EventKind::Checkin | EventKind::Expired => {
                let Some((began, count, user, name)) = open.remove(event.grant_id.as_str()) else {
                    continue;
                };
                add_seat_hours(
                    &mut out,
                    name,
                    user,
                    f64::from(count) * hours(began, event.at_unix_ms),
                );
                if let Some(now) = held.get_mut(name) {
                    *now = now.saturating_sub(u64::from(count));
                }
            }
            EventKind::Denied => {
                if in_period {
                    feature.denials += 1;
                    feature.users.entry(event.user.clone()).or_default().denials += 1;
                }
            }
        }
    }
    for (began, count, user, name) in open.into_values() {
        add_seat_hours(
            &mut out,
            name,
            user,
            f64::from(count) * hours(began, to_unix_ms),
        );
    }
    out
}

/// Counts a grant's `seat_hours` to its feature and its user.
fn add_seat_hours(
    out: &mut BTreeMap<String, FeatureUsage>,
    feature: &str,
    user: &str,
    seat_hours: f64,
) {
    let usage = out.entry(feature.to_string()).or_default();
    usage.seat_hours += seat_hours;
    usage.users.entry(user.to_string()).or_default().seat_hours += seat_hours;
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;

    fn event(at: i64, kind: EventKind, user: &str, grant: &str, count: u32) -> UsageEvent {
        UsageEvent {
            at_unix_ms: at,
            kind,
            feature: "cad".into(),
            user: user.into(),
            host: "pc".into(),
            grant_id: grant.into(),
            count,
            detail: None,
        }
    }

    fn file(events: &[UsageEvent]) -> String {
        let header = ReportHeader {
            tessera_report: 1,
            pool_id: "p".into(),
            server: "A".into(),
            started_unix_ms: 0,
        };
        let mut text = header_line(&header);
        let mut prev = line_hash(&text);
        text.push('\n');
        for e in events {
            let line = event_line(&prev, e);
            prev = line_hash(&line);
            text.push_str(&line);
            text.push('\n');
        }
        text
    }

    #[test]
    fn a_changed_line_breaks_the_chain_where_it_was_changed() {
        let events = vec![
            event(0, EventKind::Checkout, "alice", "g1", 1),
            event(H, EventKind::Checkin, "alice", "g1", 1),
            event(2 * H, EventKind::Denied, "bob", "", 1),
        ];
        let text = file(&events);
        assert_eq!(read_report(&text).unwrap().events, events);
        let edited = text.replacen("\"alice\"", "\"carol\"", 1);
        let err = read_report(&edited).unwrap_err();
        assert!(err.contains("line 3 does not follow line 2"), "{err}");
        let lines: Vec<&str> = text.lines().collect();
        let removed = format!("{}\n{}\n{}\n", lines[0], lines[1], lines[3]);
        let err = read_report(&removed).unwrap_err();
        assert!(err.contains("line 3 does not follow line 2"), "{err}");
        assert!(read_report("").is_err());
    }

    #[test]
    fn usage_counts_seat_hours_peaks_and_denials_once_per_grant() {
        let events = vec![
            event(0, EventKind::Checkout, "alice", "g1", 2),
            event(H, EventKind::Checkout, "bob", "g2", 1),
            // g1 fails over to another server: the same grant, not a new one.
            event(H + 5, EventKind::Checkout, "alice", "g1", 2),
            event(2 * H, EventKind::Checkin, "bob", "g2", 1),
            event(2 * H, EventKind::Denied, "carol", "", 1),
            event(3 * H, EventKind::Expired, "alice", "g1", 2),
        ];
        let usage = usage(&events, 0, 4 * H);
        let cad = &usage["cad"];
        assert_eq!(cad.peak_seats, 3);
        assert_eq!((cad.checkouts, cad.denials), (2, 1));
        assert!((cad.users["alice"].seat_hours - 6.0).abs() < 1e-9);
        assert!((cad.users["bob"].seat_hours - 1.0).abs() < 1e-9);
        assert!((cad.seat_hours - 7.0).abs() < 1e-9);
        // A period of the second hour only.
        let usage = super::usage(&events, H, 2 * H);
        assert!((usage["cad"].seat_hours - 3.0).abs() < 1e-9);
    }
}
