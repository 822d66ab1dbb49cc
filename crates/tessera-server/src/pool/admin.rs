//! Live administrator changes (seed 002 claims 7-12): a new distribution, a
//! license code added or removed. Each is sent to any server, forwarded to
//! the leader, turned there into the next pool file (sequence + 1), checked
//! like any pool file update (signatures, sums, servers) and committed; every
//! server applies it and writes the new file to its data directory.

use std::collections::BTreeMap;

use tessera_core::{LicenseCode, PoolFile};
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

fn refuse(message: impl Into<String>) -> Refusal {
    refused(ErrorCode::PoolFileRefused, message)
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
        let state = self.applied.borrow().state.clone();
        let Some(current) = state.pool().cloned() else {
            return Err(refused(
                ErrorCode::NoLeader,
                "no pool file is installed yet",
            ));
        };
        if let Some(expected) = change.expected_sequence() {
            if expected != current.sequence {
                return Err(refuse(format!(
                    "the change was made against pool file sequence {expected}, but sequence {} \
                     is installed; look at the status and try again",
                    current.sequence
                )));
            }
        }
        let next = next_pool_file(&current, &state, change)?;
        let text = next.to_toml();
        PoolFile::parse(&text).map_err(|err| refuse(err.to_string()))?;
        self.submit_pool_file(text, SignatureCheck::Require).await
    }
}

/// The pool file `change` makes of `current`.
fn next_pool_file(
    current: &PoolFile,
    state: &tessera_core::ControlState,
    change: AdminChange,
) -> Result<PoolFile, Refusal> {
    let mut next = current.clone();
    next.sequence = current.sequence + 1;
    match change {
        AdminChange::Distribution(change) => {
            if current.nominal_seats(&change.feature) == 0 {
                return Err(refused(
                    ErrorCode::UnknownFeature,
                    format!("feature `{}` is not in the pool", change.feature),
                ));
            }
            for server in change.servers.keys() {
                if current.server(server).is_none() {
                    return Err(refuse(format!(
                        "server `{server}` is not in the pool (its servers are {})",
                        current.server_ids().join(", ")
                    )));
                }
            }
            let distribution: BTreeMap<String, u32> = current
                .server_ids()
                .into_iter()
                .map(|s| {
                    let seats = change.servers.get(&s).copied().unwrap_or(0);
                    (s, seats)
                })
                .collect();
            next.distribution.insert(change.feature, distribution);
        }
        AdminChange::AddLicense(change) => {
            let codes = LicenseCode::parse_file(&change.text)
                .map_err(|err| refuse(format!("the license codes do not parse: {err}")))?;
            if codes.is_empty() {
                return Err(refuse("the file holds no [[license]] table"));
            }
            if let Some(server) = &change.server {
                if current.server(server).is_none() {
                    return Err(refuse(format!("server `{server}` is not in the pool")));
                }
            }
            // With a server named, the new seats go to it and every other
            // server keeps what it holds now.
            let mut given: BTreeMap<String, BTreeMap<String, u32>> = BTreeMap::new();
            for code in codes {
                if let Some(server) = &change.server {
                    let feature = code.feature().to_string();
                    let distribution = given.entry(feature.clone()).or_insert_with(|| match state
                        .allocation(&feature)
                    {
                        Some(a) => a.servers.clone(),
                        None => current.server_ids().into_iter().map(|s| (s, 0)).collect(),
                    });
                    *distribution.entry(server.clone()).or_default() += code.seats();
                }
                next.codes.push(code);
            }
            next.distribution.extend(given);
        }
        AdminChange::RemoveLicense(change) => {
            let Some(removed) = next.codes.iter().find(|c| c.id() == change.id).cloned() else {
                return Err(refused(
                    ErrorCode::NotFound,
                    format!("the pool has no license code `{}`", change.id),
                ));
            };
            next.codes.retain(|c| c.id() != change.id);
            // The distribution last set for the feature counted the removed
            // seats; the servers keep what they hold, and the seats must be
            // free (see ControlState) for the removal to go through.
            next.distribution.remove(removed.feature());
            // A feature whose last code goes drops its distribution and borrowing sections.
            let features: Vec<String> =
                next.codes.iter().map(|c| c.feature().to_string()).collect();
            next.distribution.retain(|f, _| features.contains(f));
            next.borrowing.retain(|f, _| features.contains(f));
        }
    }
    Ok(next)
}
