//! Live administrator changes (seed 002 claims 7-12): a new distribution, a
//! license code added or removed. Each is sent to any server, forwarded to
//! the leader, turned there into the next pool file (sequence + 1), checked
//! like any pool file update (signatures, sums, servers) and committed; every
//! server applies it and writes the new file to its data directory.

use std::collections::BTreeMap;

use tessera_core::pool_change::{next_pool_file, PoolFileChange, PoolFileChangeError};
use tessera_core::PoolFile;
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
    /// `own_in_use`: the seats this server's clients hold now, per feature;
    /// used if it leads (see [`Pool::seats_held`]).
    pub async fn admin_change(
        &self,
        change: AdminChange,
        own_in_use: BTreeMap<String, u32>,
    ) -> Result<PoolFileInstalled, Refusal> {
        let forward = Forward {
            path: change.path(),
            timeout: PEER_TIMEOUT * 5,
            unanswered: ErrorCode::NoLeader,
        };
        self.at_leader(forward, change, |change| {
            self.lead_admin_change(change, own_in_use)
        })
        .await
    }

    /// Leader: makes the pool file `change` asks for, and commits it.
    async fn lead_admin_change(
        &self,
        change: AdminChange,
        own_in_use: BTreeMap<String, u32>,
    ) -> Result<PoolFileInstalled, Refusal> {
        self.read_committed().await?;
        let state = self.applied.borrow().state.clone();
        let Some(current) = state.pool().cloned() else {
            return Err(refused(
                ErrorCode::NoLeader,
                "no pool file is installed yet",
            ));
        };
        if let AdminChange::RemoveLicense(remove) = &change {
            if !remove.force {
                self.refuse_removal_of_held_seats(&current, &remove.id, &own_in_use)?;
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

    /// Leader: refuses to remove code `id` while clients hold seats of its
    /// feature, as far as it knows: its own clients now, the others' as
    /// their last reports under this leadership said. (The README's promise:
    /// "its seats must be free first".)
    fn refuse_removal_of_held_seats(
        &self,
        current: &PoolFile,
        id: &str,
        own_in_use: &BTreeMap<String, u32>,
    ) -> Result<(), Refusal> {
        let Some(code) = current.codes.iter().find(|c| c.id() == id) else {
            return Ok(()); // next_pool_file says it is unknown
        };
        let feature = code.feature();
        let held = self.seats_held(current, feature, own_in_use);
        let total: u64 = held.values().map(|&n| u64::from(n)).sum();
        if total == 0 {
            return Ok(());
        }
        let by_server: Vec<String> = held
            .iter()
            .map(|(server, seats)| format!("{server}: {seats}"))
            .collect();
        Err(refused(
            ErrorCode::SeatsInUse,
            format!(
                "license code `{id}` is not removed: clients hold {total} seat{} of feature \
                 `{feature}` ({}); remove it once they are returned, or now with \
                 `tessera admin remove-license {id} --force`",
                if total == 1 { "" } else { "s" },
                by_server.join(", ")
            ),
        ))
    }

    /// Leader: the seats of `feature` held per server (those holding any):
    /// its own from `own_in_use`, the others' from their last reports.
    fn seats_held(
        &self,
        pool: &PoolFile,
        feature: &str,
        own_in_use: &BTreeMap<String, u32>,
    ) -> BTreeMap<String, u32> {
        pool.servers
            .iter()
            .map(|server| {
                let seats = if server.id == self.server_id {
                    own_in_use.get(feature).copied().unwrap_or(0)
                } else {
                    self.reported_in_use(&server.id, feature).unwrap_or(0)
                };
                (server.id.clone(), seats)
            })
            .filter(|(_, seats)| *seats > 0)
            .collect()
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
