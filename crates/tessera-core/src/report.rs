//! The report log (FlexNet's report log): every server appends its usage
//! events to files of JSON lines, each line chained to the one before by a
//! SHA-256, so an edited, inserted or removed line shows; `tessera report`
//! merges the files of every server and sums usage per feature and user.
//!
//! A file starts with a header line naming its server; every line holds
//! `prev`, the SHA-256 (hex) of the line before it (of the header for the
//! first event), and the event.

use crate::SharedText;
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
    /// A checkout joined the pool's queue to wait for seats.
    Queued,
    /// Seats moved between servers' allocations; `detail` says from where
    /// to where, `user` is empty.
    Moved,
    /// An administrator changed the pool: `user` is who, `detail` what.
    Admin,
}

/// One usage event of one server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageEvent {
    pub at_unix_ms: i64,
    pub kind: EventKind,
    pub feature: SharedText,
    pub user: SharedText,
    pub host: SharedText,
    #[serde(default, skip_serializing_if = "SharedText::is_empty")]
    pub grant_id: SharedText,
    pub count: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// A checkout served from the queue: how long it waited, in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waited_ms: Option<u64>,
    /// The server that wrote it: not in the line, taken from its file's
    /// header when read.
    #[serde(default, skip_serializing)]
    pub server: String,
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

/// A line as it is written: the same fields as [`Line`], borrowed.
#[derive(Serialize)]
struct LineRef<'a> {
    prev: &'a str,
    event: &'a UsageEvent,
}

/// SHA-256 (hex) of a line's bytes, without its newline.
pub fn line_hash(line: &str) -> String {
    hash_hex(line.as_bytes())
}

fn hash_hex(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(64);
    set_hash_hex(bytes, &mut text);
    text
}

/// Makes `text` the SHA-256 (hex) of `bytes`, in the room it has.
fn set_hash_hex(bytes: &[u8], text: &mut String) {
    let mut hex = [0u8; 64];
    hex::encode_to_slice(Sha256::digest(bytes), &mut hex).expect("64 hex digits for 32 bytes");
    text.clear();
    text.push_str(std::str::from_utf8(&hex).expect("hex digits are ASCII"));
}

/// The text of a header line.
pub fn header_line(header: &ReportHeader) -> String {
    serde_json::to_string(header).expect("a header serializes")
}

/// The text of an event's line, chained to the line whose hash is `prev`.
pub fn event_line(prev: &str, event: &UsageEvent) -> String {
    serde_json::to_string(&LineRef { prev, event }).expect("an event serializes")
}

/// Appends the [`event_line`] of `event`, chained to `prev`, and its
/// newline to `out`; `prev` becomes the line's [`line_hash`], the next
/// line's `prev`.
pub fn append_event_line(prev: &mut String, event: &UsageEvent, out: &mut Vec<u8>) {
    let start = out.len();
    serde_json::to_writer(&mut *out, &LineRef { prev, event }).expect("an event serializes");
    set_hash_hex(&out[start..], prev);
    out.push(b'\n');
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
        events.push(UsageEvent {
            server: header.server.clone(),
            ..parsed.event
        });
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
    /// Checkouts served after waiting in the queue, and their waits.
    pub queue_waits: u64,
    pub queue_wait_s: f64,
}

/// Usage of one feature over a period.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct FeatureUsage {
    pub seat_hours: f64,
    /// Most seats held at once, pool-wide.
    pub peak_seats: u64,
    pub checkouts: u64,
    pub denials: u64,
    pub queue_waits: u64,
    pub queue_wait_s: f64,
    pub users: BTreeMap<String, UserUsage>,
}

/// Sums the events of every server between `from_unix_ms` and
/// `to_unix_ms`. A grant counts from its checkout to its check-in, or to
/// its expiry on the server that held it last (a fail-over's checkout of
/// the same grant elsewhere moves it there, and the copy left behind
/// lapsing ends nothing); one still held at the end of the period counts
/// to the end.
pub fn usage(
    events: &[UsageEvent],
    from_unix_ms: i64,
    to_unix_ms: i64,
) -> BTreeMap<String, FeatureUsage> {
    struct Open<'a> {
        began: i64,
        count: u32,
        user: &'a str,
        feature: &'a str,
        server: &'a str,
    }
    let mut sorted: Vec<&UsageEvent> = events.iter().collect();
    sorted.sort_by_key(|e| e.at_unix_ms);
    let mut out: BTreeMap<String, FeatureUsage> = BTreeMap::new();
    let mut open: BTreeMap<&str, Open> = BTreeMap::new();
    let mut held: BTreeMap<&str, u64> = BTreeMap::new();
    let hours = |from: i64, to: i64| {
        let (from, to) = (from.max(from_unix_ms), to.min(to_unix_ms));
        (to - from).max(0) as f64 / 3_600_000.0
    };
    for event in sorted {
        if event.at_unix_ms > to_unix_ms {
            break;
        }
        if matches!(event.kind, EventKind::Moved | EventKind::Admin) {
            continue;
        }
        let feature = out.entry(event.feature.to_string()).or_default();
        let in_period = event.at_unix_ms >= from_unix_ms;
        match event.kind {
            EventKind::Checkout => {
                if let Some(grant) = open.get_mut(event.grant_id.as_str()) {
                    grant.server = &event.server;
                    continue;
                }
                open.insert(
                    &event.grant_id,
                    Open {
                        began: event.at_unix_ms,
                        count: event.count,
                        user: &event.user,
                        feature: &event.feature,
                        server: &event.server,
                    },
                );
                let now = held.entry(&event.feature).or_default();
                *now += u64::from(event.count);
                if in_period {
                    feature.peak_seats = feature.peak_seats.max(*now);
                    feature.checkouts += 1;
                    let user = feature.users.entry(event.user.to_string()).or_default();
                    user.checkouts += 1;
                    if let Some(waited_ms) = event.waited_ms {
                        let waited_s = waited_ms as f64 / 1_000.0;
                        user.queue_waits += 1;
                        user.queue_wait_s += waited_s;
                        feature.queue_waits += 1;
                        feature.queue_wait_s += waited_s;
                    }
                }
            }
            EventKind::Checkin | EventKind::Expired => {
                let ends = open.get(event.grant_id.as_str()).is_some_and(|grant| {
                    event.kind == EventKind::Checkin || grant.server == event.server
                });
                if !ends {
                    continue;
                }
                let grant = open
                    .remove(event.grant_id.as_str())
                    .expect("found just above");
                add_seat_hours(
                    &mut out,
                    grant.feature,
                    grant.user,
                    f64::from(grant.count) * hours(grant.began, event.at_unix_ms),
                );
                if let Some(now) = held.get_mut(grant.feature) {
                    *now = now.saturating_sub(u64::from(grant.count));
                }
            }
            EventKind::Denied => {
                if in_period {
                    feature.denials += 1;
                    feature
                        .users
                        .entry(event.user.to_string())
                        .or_default()
                        .denials += 1;
                }
            }
            EventKind::Queued | EventKind::Moved | EventKind::Admin => {}
        }
    }
    for grant in open.into_values() {
        add_seat_hours(
            &mut out,
            grant.feature,
            grant.user,
            f64::from(grant.count) * hours(grant.began, to_unix_ms),
        );
    }
    out
}

/// An instant as `tessera report` takes it: `YYYY-MM-DD` (the start of
/// that UTC day), RFC 3339 (`2026-12-01T08:00:00Z`), or Unix ms.
pub fn parse_instant(text: &str) -> Result<i64, String> {
    if let Ok(unix_ms) = text.parse::<i64>() {
        return Ok(unix_ms);
    }
    if let Ok(date) = crate::date::CivilDate::parse(text) {
        return Ok(i64::from(date.days_since_epoch()) * 86_400_000);
    }
    let at = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|_| {
            format!("`{text}` is not a date (2026-12-01), a time (2026-12-01T08:00:00Z) or Unix ms")
        })?;
    Ok((at.unix_timestamp_nanos() / 1_000_000) as i64)
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
            waited_ms: None,
            server: "A".into(),
        }
    }

    /// The server writes lines straight into its batch: the same bytes
    /// and chain as [`event_line`], which `read_report` checks.
    #[test]
    fn a_line_appended_to_a_batch_is_the_event_line_and_chains() {
        let header = ReportHeader {
            tessera_report: 1,
            pool_id: "p".into(),
            server: "A".into(),
            started_unix_ms: 0,
        };
        let first = header_line(&header);
        let mut batch = format!("{first}\n").into_bytes();
        let mut prev = line_hash(&first);
        let events = [
            event(H, EventKind::Checkout, "alice \"quoted\" ü", "g1", 2),
            event(2 * H, EventKind::Checkin, "alice", "g1", 2),
        ];
        for e in &events {
            let line = event_line(&prev, e);
            let start = batch.len();
            append_event_line(&mut prev, e, &mut batch);
            assert_eq!(&batch[start..], format!("{line}\n").as_bytes());
            assert_eq!(prev, line_hash(&line));
        }
        let read = read_report(std::str::from_utf8(&batch).unwrap()).unwrap();
        assert_eq!(read.events.len(), 2);
        assert_eq!(&*read.events[0].user, "alice \"quoted\" ü");
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
            // g1 fails over to B: the same grant, not a new one; the copy
            // left on A lapsing ends nothing.
            UsageEvent {
                server: "B".into(),
                ..event(H + 5, EventKind::Checkout, "alice", "g1", 2)
            },
            event(H + 10, EventKind::Expired, "alice", "g1", 2),
            event(2 * H, EventKind::Checkin, "bob", "g2", 1),
            event(2 * H, EventKind::Denied, "carol", "", 1),
            UsageEvent {
                waited_ms: Some(90_000),
                ..event(2 * H + 1, EventKind::Checkout, "carol", "g3", 1)
            },
            UsageEvent {
                server: "B".into(),
                ..event(3 * H, EventKind::Expired, "alice", "g1", 2)
            },
        ];
        let usage = usage(&events, 0, 4 * H);
        let cad = &usage["cad"];
        assert_eq!(cad.peak_seats, 3);
        assert_eq!((cad.checkouts, cad.denials), (3, 1));
        assert!((cad.users["alice"].seat_hours - 6.0).abs() < 1e-9);
        assert!((cad.users["bob"].seat_hours - 1.0).abs() < 1e-9);
        // Carol's grant is still held at the end: 2 h to the period's end.
        assert!((cad.users["carol"].seat_hours - (2.0 * H as f64 - 1.0) / H as f64).abs() < 1e-9);
        assert_eq!((cad.queue_waits, cad.users["carol"].queue_waits), (1, 1));
        assert!((cad.queue_wait_s - 90.0).abs() < 1e-9);
        // A period of the second hour only.
        let usage = super::usage(&events, H, 2 * H);
        assert!((usage["cad"].seat_hours - 3.0).abs() < 1e-9);
        assert_eq!(parse_instant("2026-12-01"), Ok(1_796_083_200_000));
        assert_eq!(
            parse_instant("2026-12-01T01:00:00Z"),
            Ok(1_796_083_200_000 + H)
        );
        assert_eq!(parse_instant("5"), Ok(5));
        assert!(parse_instant("yesterday")
            .unwrap_err()
            .contains("is not a date"));
    }
}
