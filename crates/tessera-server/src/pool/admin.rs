//! Live administrator changes (seed 002 claims 7-12): a new distribution, a
//! license code added or removed. Each is sent to any server, forwarded to
//! the leader, turned there into the next pool file (sequence + 1), checked
//! like any pool file update (signatures, sums, servers) and committed; every
//! server applies it and writes the new file to its data directory.

use std::collections::BTreeMap;

use tessera_core::pool_change::{next_pool_file, PoolFileChange, PoolFileChangeError};
use tessera_proto::{AddLicense, ErrorCode, PoolFileInstalled, RemoveLicense, SetDistribution};

use super::network::PEER_TIMEOUT;
use super::{refused, Forward, Pool, SignatureCheck};
use crate::refusal::Refusal;

/// One administrator change, as received; sent on to the leader as the
/// body it came in.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(untagged)]
pub enum AdminChange {
    Distribution(SetDistribution),
    AddLicense(AddLicense),
    RemoveLicense(RemoveLicense),
}

impl AdminChange {
    /// The admin endpoint that takes this change (the same on every server).
    pub fn path(&self) -> &'static str {
        match self {
            AdminChange::Distribution(_) => "/v1/admin/distribution",
            AdminChange::AddLicense(_) => "/v1/admin/license",
            AdminChange::RemoveLicense(_) => "/v1/admin/license/remove",
        }
    }

    fn expected_sequence(&self) -> Option<u64> {
        match self {
            AdminChange::Distribution(c) => c.expected_sequence,
            AdminChange::AddLicense(c) => c.expected_sequence,
            AdminChange::RemoveLicense(c) => c.expected_sequence,
        }
    }
}

/// What the leader knows of the seats of one feature clients hold on one
/// server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeatsHeld {
    /// Its own count now, or that of a report the server sent after the
    /// change was asked for.
    Counted(u32),
    /// The server has not reported since (it is down or cut off, or a leader
    /// change made this leader forget) and has not been silent long enough
    /// for every grant it made to have lapsed: it may hold up to its
    /// allocation.
    Unheard { allocation: u32 },
}

impl Pool {
    /// `seats_held(feature, since_ms)`: per server, the seats of `feature`
    /// its clients may hold, by reports sent after `since_ms`; asked only if
    /// this server leads (`App::seats_held`).
    pub async fn admin_change<H>(
        &self,
        change: AdminChange,
        seats_held: H,
    ) -> Result<PoolFileInstalled, Refusal>
    where
        H: FnOnce(&str, u64) -> BTreeMap<String, SeatsHeld>,
    {
        let forward = Forward {
            path: change.path(),
            timeout: PEER_TIMEOUT * 5,
            unanswered: ErrorCode::NoLeader,
        };
        self.at_leader(forward, change, |change| {
            self.lead_admin_change(change, seats_held)
        })
        .await
    }

    /// Leader: makes the pool file `change` asks for, and commits it.
    async fn lead_admin_change<H>(
        &self,
        change: AdminChange,
        seats_held: H,
    ) -> Result<PoolFileInstalled, Refusal>
    where
        H: FnOnce(&str, u64) -> BTreeMap<String, SeatsHeld>,
    {
        self.read_committed().await?;
        let state = self.applied.borrow().state.clone();
        let Some(current) = state.pool().cloned() else {
            return Err(refused(
                ErrorCode::NoLeader,
                "no pool file is installed yet",
            ));
        };
        if let AdminChange::RemoveLicense(remove) = &change {
            let code = current.codes.iter().find(|c| c.id() == remove.id);
            // An unknown id is next_pool_file's to refuse.
            if let (Some(code), false) = (code, remove.force) {
                // The followers' last reports may be a report interval old
                // (the seats of a checkout since would be missed): reports
                // sent after this moment count.
                let since_ms = self.clock.now_ms();
                self.await_reports_since(since_ms).await;
                let held = seats_held(code.feature(), since_ms);
                refuse_removal_of_held_seats(&remove.id, code.feature(), &held)?;
            }
        }
        let expected_sequence = change.expected_sequence();
        let next = next_pool_file(
            &current,
            state.allocations(),
            change.into_core(),
            expected_sequence,
        )
        .map_err(refusal)?;
        let text = next
            .to_toml()
            .map_err(|err| refused(ErrorCode::PoolFileRefused, err.to_string()))?;
        self.submit_pool_file(text, SignatureCheck::Require).await
    }
}

/// Refuses to remove code `id` while clients may hold seats of its
/// `feature` (the README's promise: "its seats must be free first").
fn refuse_removal_of_held_seats(
    id: &str,
    feature: &str,
    held: &BTreeMap<String, SeatsHeld>,
) -> Result<(), Refusal> {
    let counted: Vec<(&String, u32)> = held
        .iter()
        .filter_map(|(server, held)| match held {
            SeatsHeld::Counted(seats) if *seats > 0 => Some((server, *seats)),
            _ => None,
        })
        .collect();
    let unheard: Vec<(&String, u32)> = held
        .iter()
        .filter_map(|(server, held)| match held {
            SeatsHeld::Unheard { allocation } if *allocation > 0 => Some((server, *allocation)),
            _ => None,
        })
        .collect();
    if counted.is_empty() && unheard.is_empty() {
        return Ok(());
    }
    let mut reasons = Vec::new();
    if !counted.is_empty() {
        let total: u64 = counted.iter().map(|(_, n)| u64::from(*n)).sum();
        let by_server: Vec<String> = counted
            .iter()
            .map(|(server, seats)| format!("{server}: {seats}"))
            .collect();
        reasons.push(format!(
            "clients hold {total} seat{} of feature `{feature}` ({})",
            if total == 1 { "" } else { "s" },
            by_server.join(", ")
        ));
    }
    for (server, allocation) in unheard {
        reasons.push(format!(
            "server `{server}` has not reported to the leader, and its clients may hold up to \
             {allocation} seats of `{feature}`"
        ));
    }
    Err(refused(
        ErrorCode::SeatsInUse,
        format!(
            "license code `{id}` is not removed: {}; remove it once the seats are returned, or \
             now with `tessera admin remove-license {id} --force`",
            reasons.join("; ")
        ),
    ))
}

impl AdminChange {
    /// The same change, in the core's terms.
    fn into_core(self) -> PoolFileChange {
        match self {
            AdminChange::Distribution(c) => PoolFileChange::Distribution {
                feature: c.feature,
                servers: c.servers,
            },
            AdminChange::AddLicense(c) => PoolFileChange::AddCodes {
                codes_text: c.text,
                server: c.server,
            },
            AdminChange::RemoveLicense(c) => PoolFileChange::RemoveCode { id: c.id },
        }
    }
}

/// The one place a refused change gets its error code.
fn refusal(err: PoolFileChangeError) -> Refusal {
    let code = match &err {
        PoolFileChangeError::UnknownFeature { .. } => ErrorCode::UnknownFeature,
        PoolFileChangeError::UnknownCode { .. } => ErrorCode::NotFound,
        _ => ErrorCode::PoolFileRefused,
    };
    refused(code, err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_removal_is_refused_while_seats_may_be_held_and_says_why() {
        let held = |entries: &[(&str, SeatsHeld)]| -> BTreeMap<String, SeatsHeld> {
            entries.iter().map(|(s, h)| (s.to_string(), *h)).collect()
        };
        let free = held(&[
            ("A", SeatsHeld::Counted(0)),
            ("B", SeatsHeld::Unheard { allocation: 0 }),
        ]);
        assert_eq!(refuse_removal_of_held_seats("c1", "cad", &free), Ok(()));
        let cases = [
            (
                held(&[("A", SeatsHeld::Counted(1)), ("B", SeatsHeld::Counted(0))]),
                "clients hold 1 seat of feature `cad` (A: 1); remove it once",
            ),
            (
                held(&[("A", SeatsHeld::Counted(2)), ("B", SeatsHeld::Counted(3))]),
                "clients hold 5 seats of feature `cad` (A: 2, B: 3)",
            ),
            (
                held(&[
                    ("A", SeatsHeld::Counted(0)),
                    ("C", SeatsHeld::Unheard { allocation: 4 }),
                ]),
                "server `C` has not reported to the leader, and its clients may hold up to 4 \
                 seats of `cad`",
            ),
        ];
        for (held, expected) in cases {
            let refusal = refuse_removal_of_held_seats("c1", "cad", &held).unwrap_err();
            assert_eq!(refusal.code, ErrorCode::SeatsInUse);
            assert!(refusal.message.contains(expected), "{}", refusal.message);
            assert!(
                refusal
                    .message
                    .contains("`tessera admin remove-license c1 --force`"),
                "{}",
                refusal.message
            );
        }
    }
}
