//! `tessera report`: merges the report logs of every server of a pool
//! (`[report] dir` of each, copied to one place or read where they lie) and
//! prints usage per feature and user over a period: seat-hours, the
//! pool-wide peak, checkouts, denials and queue waits.
//!
//! Every file is checked before anything is summed: its chain of line
//! hashes (an edited, inserted or removed line is refused with its number)
//! and, for a closed file, its `.sha256` (a file cut short or replaced).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tessera_core::report::{self, FeatureUsage, UsageEvent};

/// How `tessera report` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    Table,
    Csv,
    Json,
}

/// The files of `paths`: each file itself, each directory's `*.jsonl`.
fn report_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let entries = std::fs::read_dir(path)
                .with_context(|| format!("cannot read directory {}", path.display()))?;
            for entry in entries {
                let file = entry?.path();
                if file.extension().is_some_and(|e| e == "jsonl") {
                    files.push(file);
                }
            }
        } else {
            files.push(path.clone());
        }
    }
    files.sort();
    if files.is_empty() {
        bail!(
            "no report files (*.jsonl) in {}; a server writes them to `[report] dir`, by \
             default `report` in its data directory",
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(files)
}

/// Reads and checks one file; says whether it was closed (has a checksum).
fn read_file(path: &Path) -> Result<(report::ReportFile, bool)> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut sum_path = path.as_os_str().to_owned();
    sum_path.push(".sha256");
    let closed = match std::fs::read_to_string(&sum_path) {
        Ok(sum) => {
            let expected = sum.split_whitespace().next().unwrap_or_default();
            let actual = hex::encode(Sha256::digest(&bytes));
            if expected != actual {
                bail!(
                    "{}: its SHA-256 is {actual}, not the {expected} written when it was closed \
                     ({}); the file was changed or cut short",
                    path.display(),
                    Path::new(&sum_path).display()
                );
            }
            true
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => false,
        Err(err) => bail!("cannot read {}: {err}", Path::new(&sum_path).display()),
    };
    let text = String::from_utf8(bytes)
        .map_err(|_| anyhow::anyhow!("{}: not UTF-8 text", path.display()))?;
    let file = report::read_report(&text)
        .map_err(|reason| anyhow::anyhow!("{}: {reason}", path.display()))?;
    Ok((file, closed))
}

#[derive(Serialize)]
struct JsonReport<'a> {
    from_unix_ms: i64,
    to_unix_ms: i64,
    files: usize,
    events: usize,
    features: &'a BTreeMap<String, FeatureUsage>,
}

/// `tessera report PATH... [--from] [--to] [--format]`.
pub fn report(
    paths: &[PathBuf],
    from: Option<&str>,
    to: Option<&str>,
    format: ReportFormat,
) -> Result<()> {
    let files = report_files(paths)?;
    let mut events: Vec<UsageEvent> = Vec::new();
    let mut pools = std::collections::BTreeSet::new();
    for path in &files {
        let (file, closed) = read_file(path)?;
        if !closed {
            eprintln!(
                "note: {} has no checksum yet: its server is running, or stopped without \
                 closing it",
                path.display()
            );
        }
        pools.insert(file.header.pool_id.clone());
        events.extend(file.events);
    }
    if pools.len() > 1 {
        bail!(
            "the files are of several pools ({}); report one pool at a time",
            pools.into_iter().collect::<Vec<_>>().join(", ")
        );
    }
    let parse = |text: Option<&str>, what: &str| -> Result<Option<i64>> {
        text.map(|t| report::parse_instant(t).map_err(|e| anyhow::anyhow!("--{what}: {e}")))
            .transpose()
    };
    let first = events.iter().map(|e| e.at_unix_ms).min().unwrap_or(0);
    let last = events.iter().map(|e| e.at_unix_ms).max().unwrap_or(0);
    let from_unix_ms = parse(from, "from")?.unwrap_or(first);
    let to_unix_ms = parse(to, "to")?.unwrap_or(last);
    if to_unix_ms < from_unix_ms {
        bail!("--to is before --from");
    }
    let usage = report::usage(&events, from_unix_ms, to_unix_ms);
    let text = match format {
        ReportFormat::Json => serde_json::to_string_pretty(&JsonReport {
            from_unix_ms,
            to_unix_ms,
            files: files.len(),
            events: events.len(),
            features: &usage,
        })?,
        ReportFormat::Csv => csv(&usage),
        ReportFormat::Table => table(&usage, (from_unix_ms, to_unix_ms), files.len()),
    };
    println!("{text}");
    Ok(())
}

fn mean_wait_s(waits: u64, total_s: f64) -> f64 {
    if waits == 0 {
        0.0
    } else {
        total_s / waits as f64
    }
}

/// One line per feature (user `*`, with the peak) and per user of it.
fn csv(usage: &BTreeMap<String, FeatureUsage>) -> String {
    let mut out = String::from(
        "feature,user,seat_hours,peak_seats,checkouts,denials,queue_waits,mean_queue_wait_s",
    );
    for (feature, f) in usage {
        let _ = write!(
            out,
            "\n{feature},*,{:.3},{},{},{},{},{:.1}",
            f.seat_hours,
            f.peak_seats,
            f.checkouts,
            f.denials,
            f.queue_waits,
            mean_wait_s(f.queue_waits, f.queue_wait_s)
        );
        for (user, u) in &f.users {
            let _ = write!(
                out,
                "\n{feature},{user},{:.3},,{},{},{},{:.1}",
                u.seat_hours,
                u.checkouts,
                u.denials,
                u.queue_waits,
                mean_wait_s(u.queue_waits, u.queue_wait_s)
            );
        }
    }
    out
}

fn table(usage: &BTreeMap<String, FeatureUsage>, (from, to): (i64, i64), files: usize) -> String {
    let when = |unix_ms: i64| {
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_ms) * 1_000_000)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_else(|| unix_ms.to_string())
    };
    let mut out = format!(
        "usage from {} to {} ({files} report files)\n",
        when(from),
        when(to)
    );
    let _ = writeln!(
        out,
        "{:<16} {:<16} {:>10} {:>5} {:>9} {:>7} {:>12}",
        "FEATURE", "USER", "SEAT-HOURS", "PEAK", "CHECKOUTS", "DENIALS", "QUEUE WAITS"
    );
    for (feature, f) in usage {
        let waits = |n: u64, s: f64| {
            if n == 0 {
                "0".to_string()
            } else {
                format!("{n} ({:.0} s)", mean_wait_s(n, s))
            }
        };
        let _ = writeln!(
            out,
            "{:<16} {:<16} {:>10.2} {:>5} {:>9} {:>7} {:>12}",
            feature,
            "(all)",
            f.seat_hours,
            f.peak_seats,
            f.checkouts,
            f.denials,
            waits(f.queue_waits, f.queue_wait_s)
        );
        for (user, u) in &f.users {
            let _ = writeln!(
                out,
                "{:<16} {:<16} {:>10.2} {:>5} {:>9} {:>7} {:>12}",
                "",
                user,
                u.seat_hours,
                "",
                u.checkouts,
                u.denials,
                waits(u.queue_waits, u.queue_wait_s)
            );
        }
    }
    out.trim_end().to_string()
}
