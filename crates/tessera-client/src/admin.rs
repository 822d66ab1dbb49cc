//! Changes an administrator makes to a running pool (`tessera admin …`):
//! sent to the first server that takes them; any server forwards a change
//! to the leader, so a server that is down or between leaders passes the
//! change to the next one.

use tessera_proto::{
    AddLicense, ErrorCode, InstanceRevoked, PoolFileInstalled, PoolFileUpdate, RemoveLicense,
    RevokeInstance, SetDistribution, POOL_HEADER,
};

use crate::error::{describe, Failure, FailureKind};
use crate::http::{self, STATUS_ANSWER_BYTES_MAX};
use crate::{Client, ClientConfig, ClientError, StatusResponse};

/// One change to the pool's replicated state.
#[derive(Clone, Debug)]
pub enum AdminChange {
    /// A pool file with a higher sequence, and the pool id it names.
    PoolFile {
        pool_id: String,
        update: PoolFileUpdate,
    },
    Distribution(SetDistribution),
    AddLicense(AddLicense),
    RemoveLicense(RemoveLicense),
}

impl AdminChange {
    /// The endpoint, below [`tessera_proto::API_PREFIX`].
    fn path(&self) -> &'static str {
        match self {
            AdminChange::PoolFile { .. } => "/admin/pool-file",
            AdminChange::Distribution(_) => "/admin/distribution",
            AdminChange::AddLicense(_) => "/admin/license",
            AdminChange::RemoveLicense(_) => "/admin/license/remove",
        }
    }

    fn body(&self) -> serde_json::Result<serde_json::Value> {
        match self {
            AdminChange::PoolFile { update, .. } => serde_json::to_value(update),
            AdminChange::Distribution(change) => serde_json::to_value(change),
            AdminChange::AddLicense(change) => serde_json::to_value(change),
            AdminChange::RemoveLicense(change) => serde_json::to_value(change),
        }
    }
}

/// A pool's administrator: the servers to try in order and an
/// administrator's token (of the pool file's `[[admins]]`).
#[derive(Clone, Debug)]
pub struct Admin {
    client: Client,
    token: String,
}

impl Admin {
    pub fn new(mut config: ClientConfig, token: String) -> Result<Admin, ClientError> {
        // An administrator checks out no seats: no vendor key is needed.
        if config.trust == crate::Trust::default() {
            config.trust = crate::Trust::AnyServer;
        }
        Ok(Admin {
            client: Client::new(config)?,
            token: token.trim().to_string(),
        })
    }

    fn authorization(&self) -> (String, String) {
        (
            "authorization".to_string(),
            format!("Bearer {}", self.token),
        )
    }

    /// The full status (grants, users, hosts) of the first server that
    /// answers; the token needs role `read` or `admin`. Any refusal is the
    /// pool's answer.
    pub async fn status(&self) -> Result<StatusResponse, ClientError> {
        self.first_answer(
            |address| {
                let headers = vec![self.authorization()];
                http::get_json(
                    &self.client,
                    address,
                    "/status",
                    headers,
                    STATUS_ANSWER_BYTES_MAX,
                )
            },
            |_| false,
        )
        .await
    }

    /// The whole pool's status, grants listed: see [`Client::pool_status`].
    pub async fn pool_status(&self) -> Result<StatusResponse, ClientError> {
        let first = self.status().await?;
        let headers = vec![self.authorization()];
        Ok(crate::pool_status::gather(&self.client, first, headers).await)
    }

    /// Sends `change` to the configured servers in order until one takes it;
    /// returns the pool file the pool runs then. A server that does not
    /// answer, has no leader or fails passes the change to the next; any
    /// other refusal is the pool's answer and returns at once.
    pub async fn change(&self, change: &AdminChange) -> Result<PoolFileInstalled, ClientError> {
        let body = change.body().map_err(|error| ClientError::InvalidConfig {
            message: format!("cannot encode the admin change: {error}"),
        })?;
        self.first_answer(
            |address| self.change_on(address, change, &body),
            |code| matches!(code, ErrorCode::NoLeader | ErrorCode::Internal),
        )
        .await
    }

    /// `ask` of the configured servers in order: the first answer, or the
    /// first refusal whose code `passes_on` does not hand to the next server.
    async fn first_answer<'a, T, F, Fut>(
        &'a self,
        ask: F,
        passes_on: impl Fn(ErrorCode) -> bool,
    ) -> Result<T, ClientError>
    where
        F: Fn(&'a str) -> Fut,
        Fut: std::future::Future<Output = Result<T, Failure>>,
    {
        let mut failures = Vec::new();
        for address in &self.client.config().servers {
            match ask(address).await {
                Ok(answer) => return Ok(answer),
                Err(failure) => match &failure.kind {
                    FailureKind::Refused { code, message } if !passes_on(*code) => {
                        return Err(ClientError::Rejected {
                            code: *code,
                            message: message.clone(),
                        })
                    }
                    _ => failures.push(failure),
                },
            }
        }
        Err(ClientError::NoServerReachable {
            last_error: describe(&failures),
            tried: failures.into_iter().map(|f| f.address).collect(),
        })
    }

    /// On a master server (seed 003): stops renewing the certificates of
    /// production server run `instance`.
    pub async fn revoke_instance(&self, instance: &str) -> Result<InstanceRevoked, ClientError> {
        let body = RevokeInstance {
            instance: instance.to_string(),
        };
        self.first_answer(
            |address| self.revoke_on(address, &body),
            |code| matches!(code, ErrorCode::Internal),
        )
        .await
    }

    async fn revoke_on(
        &self,
        address: &str,
        body: &RevokeInstance,
    ) -> Result<InstanceRevoked, Failure> {
        let pool_id = self.pool_id_of(address).await?;
        let headers = vec![(POOL_HEADER.to_string(), pool_id), self.authorization()];
        http::post_json_with_headers(&self.client, address, "/admin/master/revoke", headers, body)
            .await
    }

    /// The pool `address` belongs to, as its status says: what an admin
    /// request must name.
    async fn pool_id_of(&self, address: &str) -> Result<String, Failure> {
        let status: StatusResponse = http::get_json(
            &self.client,
            address,
            "/status",
            Vec::new(),
            STATUS_ANSWER_BYTES_MAX,
        )
        .await?;
        Ok(status.pool_id)
    }

    /// The change sent to one server, named with the pool's id: the change's
    /// own, or the one the server's status gives.
    async fn change_on(
        &self,
        address: &str,
        change: &AdminChange,
        body: &serde_json::Value,
    ) -> Result<PoolFileInstalled, Failure> {
        let pool_id = match change {
            AdminChange::PoolFile { pool_id, .. } => pool_id.clone(),
            _ => self.pool_id_of(address).await?,
        };
        let headers = vec![(POOL_HEADER.to_string(), pool_id), self.authorization()];
        http::post_json_with_headers(&self.client, address, change.path(), headers, body).await
    }
}
