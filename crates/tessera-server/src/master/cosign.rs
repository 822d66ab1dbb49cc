//! Co-signing (seed 003, several masters to a VID): where the master
//! licenses of a VID say that k masters share its N, a production server
//! takes a certificate only if a majority of them signed it. The master
//! that lends a slot signs the certificate and asks the other masters of
//! its pool to co-sign; each co-signs only for a server of its own pool.
//! So only the one pool that holds a majority of the VID's masters can
//! lend, and within it the pool's allocation rules keep the lendings to N
//! (ARCHITECTURE.md, "Backup masters").

use std::time::Duration;

use tessera_proto as proto;
use tokio::task::JoinSet;

use crate::App;

/// How long a master waits for its peers' co-signatures.
pub const COSIGN_TIMEOUT: Duration = Duration::from_millis(800);

/// Adds the co-signatures `grant`'s certificate needs, asking every other
/// server of the pool at once and keeping what comes back in time. A
/// certificate short of a majority still goes out: the production server
/// refuses it with the count, and asks again.
pub async fn gather(app: &App, grant: &mut proto::Grant) {
    let (Some(master), Some(certificate)) = (&app.master, &mut grant.certificate) else {
        return;
    };
    let needed = master.cosignatures_needed();
    if needed == 0 {
        return;
    }
    let request = proto::CosignRequest {
        server_id: app.pool.server_id.clone(),
        certificate: certificate.clone(),
    };
    let mut asking = JoinSet::new();
    for server in app.pool.pool_file().servers {
        if server.id == app.pool.server_id {
            continue;
        }
        let peers = app.pool.peers.clone();
        let request = request.clone();
        asking.spawn(async move {
            let answer: Result<proto::Cosignature, _> = peers
                .post(&server.address, "/v1/peer/cosign", &request, COSIGN_TIMEOUT)
                .await;
            (server.id, answer)
        });
    }
    let deadline = tokio::time::Instant::now() + COSIGN_TIMEOUT;
    while certificate.cosignatures.len() < needed {
        let Ok(Some(joined)) = tokio::time::timeout_at(deadline, asking.join_next()).await else {
            break;
        };
        match joined {
            Ok((_, Ok(cosignature))) => certificate.cosignatures.push(cosignature),
            Ok((server, Err(err))) => {
                tracing::warn!("master `{server}` did not co-sign a certificate: {err}");
            }
            Err(err) => tracing::warn!("a co-signature request failed: {err}"),
        }
    }
    if certificate.cosignatures.len() < needed {
        tracing::warn!(
            "certificate {} for `{}` has {} of the {needed} co-signatures it needs",
            certificate.serial,
            certificate.server_id,
            certificate.cosignatures.len()
        );
    }
}
