//! The whole pool's status from any one server: each server answers for
//! its own seats in use and its own grants, so the SDK asks the first
//! server that answers, then every other server it lists, and merges their
//! own figures into one answer ([`merge`]). A server that does not answer
//! is named in `unanswered`, so a partial figure never passes for the
//! pool's.

use std::collections::BTreeMap;

use tessera_proto::{GrantStatus, PeerStatus, StatusResponse, UnansweredServer};

use crate::client::Client;
use crate::http::{self, STATUS_ANSWER_BYTES_MAX};

/// Asks every server of `first.servers` but the one that answered `first`,
/// side by side, with the same credentials (`headers`), and merges what
/// they say about themselves into `first`.
pub(crate) async fn gather(
    client: &Client,
    first: StatusResponse,
    headers: Vec<(String, String)>,
) -> StatusResponse {
    let mut asks = tokio::task::JoinSet::new();
    let others: Vec<PeerStatus> = first
        .servers
        .iter()
        .filter(|peer| peer.id != first.server.id)
        .cloned()
        .collect();
    for (index, peer) in others.iter().enumerate() {
        let (client, address, headers) = (client.clone(), peer.address.clone(), headers.clone());
        asks.spawn(async move {
            let answer = http::get_json::<StatusResponse>(
                &client,
                &address,
                "/status",
                headers,
                STATUS_ANSWER_BYTES_MAX,
            )
            .await
            .map_err(|failure| failure.to_string());
            (index, answer)
        });
    }
    let mut answers: Vec<Option<Result<StatusResponse, String>>> = vec![None; others.len()];
    while let Some(joined) = asks.join_next().await {
        if let Ok((index, answer)) = joined {
            answers[index] = Some(answer);
        }
    }
    let answers = others
        .into_iter()
        .zip(answers)
        .map(|(peer, answer)| {
            let answer = answer.unwrap_or_else(|| Err("the request was dropped".into()));
            (peer, answer)
        })
        .collect();
    merge(first, answers)
}

/// `status` (one server's answer) with every other server's own figures:
/// its rows' seats in use, available, held back and target, its lingering
/// seats, and its grants. A grant on two servers (the copy a fail-over
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
    status.grants = newest_copies(std::mem::take(&mut status.grants));
    status
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
