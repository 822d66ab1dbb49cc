//! The whole pool's status from any one server: each server answers for
//! its own seats in use and its own grants, so the SDK asks the first
//! server that answers, then every other server it lists, and merges their
//! own figures into one answer ([`tessera_proto::pool_status::merge`]). A
//! server that does not answer is named in `unanswered`, so a partial
//! figure never passes for the pool's.

use tessera_proto::pool_status::merge_answers;
use tessera_proto::{PeerStatus, StatusResponse};

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
    merge_answers(first, others, answers)
}
