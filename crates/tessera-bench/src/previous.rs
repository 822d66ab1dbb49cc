//! Tessera's figures against its own previous run: `compare` reads the
//! BENCHMARKS.md it is about to replace and puts, beside this run's figures
//! for every Tessera system, that file's, so that a regression shows in
//! one run. Only the main table is read (its first columns: system,
//! checkouts/s, p50, p99; and the server CPU per cycle); a file without
//! it, or a system it lacks, is said so, not guessed.

use std::fmt::Write as _;

use crate::report::{table_head, Report};

/// One row of a previous BENCHMARKS.md's main table.
#[derive(Clone, Debug, PartialEq)]
pub struct PreviousRow {
    pub system: String,
    pub per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// `None` where the table says `-`.
    pub cpu_us: Option<f64>,
}

/// The previous run: when it was written, and its rows.
#[derive(Clone, Debug, PartialEq)]
pub struct Previous {
    pub written: String,
    pub rows: Vec<PreviousRow>,
}

/// The header of the main table, as [`crate::compare`] writes it.
const MAIN_TABLE: &str = "| system | checkouts/s | p50 ms | p99 ms |";

/// Reads the main table of a BENCHMARKS.md `compare` wrote; `None` if the
/// text has none.
pub fn parse(markdown: &str) -> Option<Previous> {
    let written = markdown
        .lines()
        .find_map(|line| {
            let rest = line.split_once("Written by `tessera-bench compare` on ")?.1;
            Some(rest.split(';').next()?.to_string())
        })
        .unwrap_or_else(|| "an unknown date".to_string());
    let mut lines = markdown.lines().skip_while(|l| !l.starts_with(MAIN_TABLE));
    lines.next()?;
    lines.next()?; // the alignment row
    let rows = lines
        .take_while(|line| line.starts_with('|'))
        .filter_map(row)
        .collect::<Vec<_>>();
    (!rows.is_empty()).then_some(Previous { written, rows })
}

fn row(line: &str) -> Option<PreviousRow> {
    let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
    if cells.len() < 7 {
        return None;
    }
    Some(PreviousRow {
        system: cells[0].to_string(),
        per_s: cells[1].parse().ok()?,
        p50_ms: cells[2].parse().ok()?,
        p99_ms: cells[3].parse().ok()?,
        cpu_us: cells[6].parse().ok(),
    })
}

/// The Markdown section: every Tessera system of `reports` against the
/// same system in `previous`.
pub fn markdown(reports: &[Report], previous: Option<&Previous>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "\n## Against the previous BENCHMARKS.md\n");
    let Some(previous) = previous else {
        let _ = writeln!(
            out,
            "No previous BENCHMARKS.md with a main table was found where this one was written."
        );
        return out;
    };
    let _ = writeln!(
        out,
        "The previous file was written on {}; now ÷ then per figure (checkouts/s above \
         1.00 is faster, latency and CPU above 1.00 are slower). Machines and their \
         neighbours differ between runs: read a change of a fifth or less as noise.\n",
        previous.written
    );
    table_head(
        &mut out,
        "| system | checkouts/s then → now | ratio | p50 ms then → now | p99 ms then → now | ratio | CPU µs/cycle then → now |",
        "|---|--:|--:|--:|--:|--:|--:|",
    );
    for report in reports.iter().filter(|r| r.system.starts_with("tessera")) {
        let Some(then) = previous.rows.iter().find(|row| row.system == report.system) else {
            let _ = writeln!(out, "| {} | new | - | - | - | - | - |", report.system);
            continue;
        };
        let c = &report.checkout;
        let p50 = c.p50_us as f64 / 1000.0;
        let p99 = c.p99_us as f64 / 1000.0;
        let cpu = report
            .server_cpu
            .filter(|_| report.granted_total > 0)
            .map(|cpu| cpu.as_secs_f64() * 1e6 / report.granted_total as f64);
        let ratio = |now: f64, then: f64| {
            if then > 0.0 {
                format!("{:.2}", now / then)
            } else {
                "-".to_string()
            }
        };
        let cpu_cell = match (then.cpu_us, cpu) {
            (Some(then), Some(now)) => format!("{then:.0} → {now:.0}"),
            _ => "-".to_string(),
        };
        let _ = writeln!(
            out,
            "| {} | {:.0} → {:.0} | {} | {:.3} → {p50:.3} | {:.3} → {p99:.3} | {} | {cpu_cell} |",
            report.system,
            then.per_s,
            c.per_s,
            ratio(c.per_s, then.per_s),
            then.p50_ms,
            then.p99_ms,
            ratio(p99, then.p99_ms),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(system: &str) -> Report {
        Report::new(
            system,
            crate::Mode::Cycle,
            1,
            crate::load::LoadResult::default(),
        )
    }

    const FILE: &str = "# Benchmarks\n\nWritten by `tessera-bench compare` on 2026-12-02 08:06:40 UTC; machine: 2 cores.\n\n\
| system | checkouts/s | p50 ms | p99 ms | p99.9 ms | errors | server CPU µs/cycle | tessera ÷ system |\n\
|---|--:|--:|--:|--:|--:|--:|--:|\n\
| tessera | 18005 | 1.245 | 2.453 | 5.479 | 0 | 69 | 1.00x |\n\
| tessera pool (3 servers) | 13153 | 1.558 | 3.190 | 6.305 | 0 | - | 1.37x |\n\
| redis (appendfsync always) | 21977 | 0.715 | 1.148 | 2.376 | 0 | 28 | 0.82x |\n\
\nEvery system's checkouts/s against every other's.\n\n| row ÷ column | tessera |\n|---|--:|\n| tessera | 1.00 |\n";

    #[test]
    fn the_main_table_of_a_previous_file_is_read_and_nothing_else() {
        let previous = parse(FILE).unwrap();
        assert_eq!(previous.written, "2026-12-02 08:06:40 UTC");
        assert_eq!(previous.rows.len(), 3);
        assert_eq!(
            previous.rows[0],
            PreviousRow {
                system: "tessera".into(),
                per_s: 18005.0,
                p50_ms: 1.245,
                p99_ms: 2.453,
                cpu_us: Some(69.0),
            }
        );
        assert_eq!(previous.rows[1].cpu_us, None);
        assert_eq!(parse("# Benchmarks\n\nnothing measured\n"), None);
    }

    #[test]
    fn a_slower_run_shows_its_ratio_and_a_new_system_says_so() {
        let previous = parse(FILE).unwrap();
        let mut slower = report("tessera");
        slower.checkout.per_s = 9002.5;
        slower.checkout.p50_us = 2_490;
        slower.checkout.p99_us = 4_906;
        let new = report("tessera, framed");
        let peer = report("redis (appendfsync always)");
        let text = markdown(&[slower, new, peer], Some(&previous));
        assert!(
            text.contains(
                "| tessera | 18005 → 9002 | 0.50 | 1.245 → 2.490 | 2.453 → 4.906 | 2.00 | - |"
            ),
            "{text}"
        );
        assert!(text.contains("| tessera, framed | new |"), "{text}");
        assert!(!text.contains("| redis"), "{text}");
        assert!(markdown(&[], None).contains("No previous BENCHMARKS.md"));
    }
}
