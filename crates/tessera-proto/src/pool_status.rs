//! Merging servers' own status answers into the whole pool's: each server
//! answers for its own seats in use, its grants and its denials, so a
//! pool-wide status (the SDK's `pool_status`, the server's
//! `/v1/status?scope=pool`) asks every server and merges what each says
//! about itself ([`merge`]). A server that does not answer is named in
//! `unanswered`, so a partial figure never passes for the pool's.

use std::collections::BTreeMap;

use crate::{GrantStatus, PeerStatus, StatusResponse, UnansweredServer};

/// `status` (one server's answer) with every other server's own figures:
/// its rows' seats in use, available, held back and target, its lingering
/// seats, its denials, and its grants. A grant on two servers (the copy a fail-over
/// left, until it lapses) is listed once, as the server that renewed it
/// last holds it. An answer from another pool or another server than the
/// one asked counts as none.
pub fn merge(
    mut status: StatusResponse,
    others: Vec<(PeerStatus, Result<StatusResponse, String>)>,
) -> StatusResponse {
    status.pool_wide = true;
    let own = status.server.id.clone();
    for grant in &mut status.grants {
        if grant.server_id.is_empty() {
            grant.server_id = own.clone();
        }
    }
    for (peer, answer) in others {
        let theirs = match answer {
            Ok(theirs) if theirs.pool_id != status.pool_id => Err(format!(
                "answered for pool `{}`, not `{}`",
                theirs.pool_id, status.pool_id
            )),
            Ok(theirs) if theirs.server.id != peer.id => Err(format!(
                "answered as server {}, not {}",
                theirs.server.id, peer.id
            )),
            other => other,
        };
        let theirs = match theirs {
            Ok(theirs) => theirs,
            Err(error) => {
                status.unanswered.push(UnansweredServer {
                    id: peer.id,
                    address: peer.address,
                    error,
                });
                continue;
            }
        };
        for feature in &mut status.features {
            let Some(their_feature) = theirs
                .features
                .iter()
                .find(|f| f.feature == feature.feature)
            else {
                continue;
            };
            feature.lingering_seats += their_feature.lingering_seats;
            for denial in &their_feature.denials {
                match feature.denials.iter_mut().find(|d| d.code == denial.code) {
                    Some(ours) => ours.count += denial.count,
                    None => feature.denials.push(denial.clone()),
                }
            }
            let their_row = their_feature
                .servers
                .iter()
                .find(|row| row.server_id == peer.id);
            let row = feature
                .servers
                .iter_mut()
                .find(|row| row.server_id == peer.id);
            if let (Some(row), Some(their_row)) = (row, their_row) {
                row.in_use = their_row.in_use;
                row.available = their_row.available;
                row.reserved = their_row.reserved;
                row.target = their_row.target;
            }
        }
        status.grants_total += theirs.grants_total;
        status
            .grants
            .extend(theirs.grants.into_iter().map(|grant| GrantStatus {
                server_id: if grant.server_id.is_empty() {
                    peer.id.clone()
                } else {
                    grant.server_id
                },
                ..grant
            }));
    }
    // A grant listed by two servers counts once in the total, too.
    let listed = status.grants.len();
    status.grants = newest_copies(std::mem::take(&mut status.grants));
    status.grants_total = status
        .grants_total
        .saturating_sub((listed - status.grants.len()) as u64);
    status
}

/// [`merge`] with `answers[i]` the answer of `others[i]`, if any: a
/// server whose request was dropped before it answered counts as
/// unanswered.
pub fn merge_answers(
    status: StatusResponse,
    others: Vec<PeerStatus>,
    answers: Vec<Option<Result<StatusResponse, String>>>,
) -> StatusResponse {
    let mut answers = answers.into_iter();
    let paired = others
        .into_iter()
        .map(|peer| {
            let answer = answers
                .next()
                .flatten()
                .unwrap_or_else(|| Err("the request was dropped".into()));
            (peer, answer)
        })
        .collect();
    merge(status, paired)
}

/// One entry per grant: the copy with the most time left, which the
/// program renewed last.
fn newest_copies(grants: Vec<GrantStatus>) -> Vec<GrantStatus> {
    let mut by_id: BTreeMap<String, GrantStatus> = BTreeMap::new();
    for grant in grants {
        match by_id.get(&grant.grant_id) {
            Some(kept) if kept.expires_in_ms >= grant.expires_in_ms => {}
            _ => {
                by_id.insert(grant.grant_id.clone(), grant);
            }
        }
    }
    let mut grants: Vec<GrantStatus> = by_id.into_values().collect();
    grants.sort_by(|a, b| b.age_ms.cmp(&a.age_ms).then(a.grant_id.cmp(&b.grant_id)));
    grants
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn status(server: &str, pool: &str, grants: &[(&str, u64)], total: u64) -> StatusResponse {
        let grants: Vec<_> = grants
            .iter()
            .map(|(id, expires_in_ms)| {
                json!({"grant_id": id, "feature": "cad", "count": 1, "client_id": "c",
                       "user": "u", "host": "h", "version": "1.0", "age_ms": 5,
                       "expires_in_ms": expires_in_ms})
            })
            .collect();
        serde_json::from_value(json!({
            "pool_id": pool, "pool_sequence": 1,
            "server": {"id": server, "address": format!("{server}:1"), "role": "follower",
                       "leader_id": null, "state": "serving", "software_version": "0",
                       "uptime_ms": 1, "grace_remaining_ms": null, "hostid": "h"},
            "servers": [], "features": [], "grants": grants, "grants_total": total
        }))
        .unwrap()
    }

    fn peer(id: &str) -> PeerStatus {
        PeerStatus {
            id: id.into(),
            address: format!("{id}:1"),
            role: "follower".into(),
            up: true,
            last_contact_ms: None,
        }
    }

    /// A grant a fail-over left on two servers is listed and counted once,
    /// as the copy renewed last; a server that answers for another pool, or
    /// as another server, counts as unanswered.
    #[test]
    fn a_grant_on_two_servers_counts_once_and_a_wrong_answer_is_none() {
        let merged = merge(
            status("A", "p", &[("g1", 100), ("g2", 100)], 2),
            vec![
                (peer("B"), Ok(status("B", "p", &[("g1", 900)], 1))),
                (peer("C"), Ok(status("C", "other", &[("g3", 1)], 1))),
                (peer("D"), Ok(status("E", "p", &[("g4", 1)], 1))),
                (peer("F"), Err("F:1: connection refused".into())),
            ],
        );
        assert!(merged.pool_wide);
        let held: Vec<(&str, &str)> = merged
            .grants
            .iter()
            .map(|g| (g.grant_id.as_str(), g.server_id.as_str()))
            .collect();
        assert_eq!(held, [("g1", "B"), ("g2", "A")]);
        assert_eq!(merged.grants_total, 2);
        let unanswered: Vec<&str> = merged.unanswered.iter().map(|u| u.id.as_str()).collect();
        assert_eq!(unanswered, ["C", "D", "F"]);
        assert!(merged.unanswered[0].error.contains("pool `other`"));
    }

    /// A server whose request was dropped before it answered is named as
    /// unanswered, not passed over.
    #[test]
    fn a_dropped_request_counts_as_unanswered() {
        let merged = merge_answers(
            status("A", "p", &[("g1", 100)], 1),
            vec![peer("B"), peer("C")],
            vec![Some(Ok(status("B", "p", &[("g2", 100)], 1))), None],
        );
        assert_eq!(merged.grants_total, 2);
        assert_eq!(merged.unanswered.len(), 1);
        assert_eq!(merged.unanswered[0].id, "C");
        assert_eq!(merged.unanswered[0].error, "the request was dropped");
    }
}
