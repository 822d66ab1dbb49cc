//! The checker: reads only the clients' log, never a server, and finds the
//! instant at which the most seats were believed valid at once.
//!
//! A client believes in a seat from the moment its checkout returned until
//! the first of: it released or dropped the guard, the guard said the seat was
//! lost, or the guard's `valid_until` (send time of the last renewal plus the
//! lease) passed. A renewal that lands a few microseconds after `valid_until`
//! (the SDK applies an answer that raced its own expiry timer) would leave a
//! gap; the checker ignores such gaps, which can only overcount.

use std::collections::HashMap;

use tokio::time::Instant;

use crate::log::{End, Record, What};

/// One seat one client believed in, over `[from, to)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Belief {
    pub client: usize,
    pub grant_id: String,
    /// The server that granted it first.
    pub server_id: String,
    pub from: Instant,
    pub to: Instant,
    /// How the belief ended; `None` if the log has no end (counted to `log_end`).
    pub end: Option<End>,
}

/// Every belief in the log. A grant with no end is believed until `log_end`,
/// which can only overcount.
pub fn beliefs(records: &[Record], log_end: Instant) -> Vec<Belief> {
    let mut open: HashMap<(usize, &str), Belief> = HashMap::new();
    let mut done = Vec::new();
    for record in records {
        match &record.what {
            What::Granted {
                grant_id,
                server_id,
                valid_until,
            } => {
                let belief = Belief {
                    client: record.client,
                    grant_id: grant_id.clone(),
                    server_id: server_id.clone(),
                    from: record.at,
                    to: *valid_until,
                    end: None,
                };
                let previous = open.insert((record.client, grant_id.as_str()), belief);
                assert!(
                    previous.is_none(),
                    "client {} logged grant {grant_id} twice",
                    record.client
                );
            }
            What::Ended {
                grant_id,
                valid_until,
                how,
            } => {
                let mut belief = open
                    .remove(&(record.client, grant_id.as_str()))
                    .unwrap_or_else(|| {
                        panic!(
                            "client {} ended grant {grant_id} it never logged",
                            record.client
                        )
                    });
                belief.to = (*valid_until).min(record.at);
                belief.end = Some(how.clone());
                done.push(belief);
            }
            What::FailedOver { .. } | What::CheckoutFailed { .. } => {}
        }
    }
    done.extend(open.into_values().map(|mut belief| {
        belief.to = log_end;
        belief
    }));
    done.retain(|belief| belief.from < belief.to);
    done.sort_by_key(|belief| belief.from);
    done
}

/// The most seats believed at one instant, the first instant it happened, and
/// the beliefs held then.
#[derive(Debug)]
pub struct Peak {
    pub held: usize,
    pub at: Option<Instant>,
    pub holders: Vec<Belief>,
}

/// Sweeps the beliefs' ends in time order. Intervals are half-open: a seat
/// released at the instant another is granted is not counted twice.
pub fn peak(beliefs: &[Belief]) -> Peak {
    let mut edges: Vec<(Instant, i8)> = Vec::with_capacity(2 * beliefs.len());
    for belief in beliefs {
        edges.push((belief.from, 1));
        edges.push((belief.to, -1));
    }
    // At equal instants the ends (-1) come before the starts (+1).
    edges.sort();
    let (mut held, mut most, mut most_at) = (0usize, 0usize, None);
    for (at, step) in edges {
        if step > 0 {
            held += 1;
            if held > most {
                most = held;
                most_at = Some(at);
            }
        } else {
            held -= 1;
        }
    }
    let holders = most_at
        .map(|at| {
            beliefs
                .iter()
                .filter(|b| b.from <= at && at < b.to)
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    Peak {
        held: most,
        at: most_at,
        holders,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn at(base: Instant, ms: u64) -> Instant {
        base + Duration::from_millis(ms)
    }

    /// (client, grant, granted at, valid until, ended at) in ms, then the expected peak.
    fn check(seats: &[(usize, &str, u64, u64, Option<u64>)], expected: usize) {
        let base = Instant::now();
        let mut records = Vec::new();
        for &(client, grant, from, valid_until, ended) in seats {
            records.push(Record {
                client,
                at: at(base, from),
                what: What::Granted {
                    grant_id: grant.into(),
                    server_id: "A".into(),
                    valid_until: at(base, valid_until),
                },
            });
            if let Some(ended) = ended {
                records.push(Record {
                    client,
                    at: at(base, ended),
                    what: What::Ended {
                        grant_id: grant.into(),
                        valid_until: at(base, valid_until),
                        how: End::Released,
                    },
                });
            }
        }
        records.sort_by_key(|r| r.at);
        let found = peak(&beliefs(&records, at(base, 100_000)));
        assert_eq!(found.held, expected, "{seats:?}");
        assert_eq!(found.holders.len(), expected);
    }

    #[test]
    fn the_checker_counts_overlapping_beliefs_and_nothing_else() {
        // Three seats at once.
        check(
            &[
                (1, "a", 0, 4_000, Some(3_000)),
                (2, "b", 1_000, 5_000, Some(2_000)),
                (3, "c", 1_500, 5_500, Some(5_000)),
            ],
            3,
        );
        // Released at the instant the next is granted: one seat.
        check(
            &[
                (1, "a", 0, 4_000, Some(1_000)),
                (2, "b", 1_000, 5_000, Some(2_000)),
            ],
            1,
        );
        // A seat whose valid_until passed before its end was logged counts
        // only until valid_until.
        check(
            &[
                (1, "a", 0, 1_000, Some(3_000)),
                (2, "b", 2_000, 6_000, Some(4_000)),
            ],
            1,
        );
        // A grant never ended counts until the end of the log.
        check(
            &[
                (1, "a", 0, 1_000, None),
                (2, "b", 50_000, 60_000, Some(51_000)),
            ],
            2,
        );
        check(&[], 0);
    }
}
