//! Live administrator changes (seed 002 claims 7-12): a new distribution, a
//! license code added or removed. Each is sent to any server, forwarded to
//! the leader, turned there into the next pool file (sequence + 1), checked
//! like any pool file update (signatures, sums, servers) and committed; every
//! server applies it and writes the new file to its data directory.

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

impl Pool {
    pub async fn admin_change(&self, change: AdminChange) -> Result<PoolFileInstalled, Refusal> {
        let forward = Forward {
            path: change.path(),
            timeout: PEER_TIMEOUT * 5,
            unanswered: ErrorCode::NoLeader,
        };
        self.at_leader(forward, change, |change| self.lead_admin_change(change))
            .await
    }

    /// Leader: makes the pool file `change` asks for, and commits it.
    async fn lead_admin_change(&self, change: AdminChange) -> Result<PoolFileInstalled, Refusal> {
        self.read_committed().await?;
        let state = self.applied.borrow().state.clone();
        let Some(current) = state.pool().cloned() else {
            return Err(refused(
                ErrorCode::NoLeader,
                "no pool file is installed yet",
            ));
        };
        let expected_sequence = change.expected_sequence();
        let next = next_pool_file(
            &current,
            state.allocations(),
            change.into_core(),
            expected_sequence,
        )
        .map_err(refusal)?;
        self.submit_pool_file(next.to_toml(), SignatureCheck::Require)
            .await
    }
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
