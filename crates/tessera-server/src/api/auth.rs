//! Who is calling: every request passes [`identify`] first, which names the
//! caller from its credential and refuses a credential the pool does not
//! know. The route groups then say who may call them:
//!
//! - `/v1/peer/*`: only a server of the pool, proven by its peer credential
//!   (the pool file holds each server's credential's SHA-256); the server id
//!   a message carries must be the caller's ([`Caller::require_server`]);
//! - `/v1/admin/*`: an administrator token of role `admin`, or a server of
//!   the pool forwarding a change it took to the leader;
//! - `/v1/status` in full: a token of role `read` or `admin`, or a server;
//!   others see the summary unless the config's `public_status` is `full`;
//! - the client routes: anyone; a grant is guarded by its proof. On a
//!   master, the slots of its VID only a token of role `production` (or
//!   `admin`): anyone else could hold them all.
//!
//! The pool id is no credential: it names the pool, which `/v1/status` shows
//! to anyone.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tessera_core::{credential_sha256, AdminRole};
use tessera_proto::{ErrorCode, PEER_HEADER, POOL_HEADER};

use super::{api_error, ApiError};
use crate::App;

/// Who sent a request, as its credential proves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// No credential.
    Anonymous,
    /// A server of the pool.
    Server(String),
    /// An administrator of the pool file's `[[admins]]`.
    Admin { name: String, role: AdminRole },
}

impl Caller {
    /// Refuses unless the caller is the server `server_id` claims to be.
    pub fn require_server(&self, server_id: &str) -> Result<(), ApiError> {
        match self {
            Caller::Server(id) if id == server_id => Ok(()),
            Caller::Server(id) => Err(api_error(
                ErrorCode::Forbidden,
                format!("server `{id}` may speak only for itself, not for `{server_id}`"),
            )),
            _ => Err(not_a_server()),
        }
    }

    /// May see grants, users and hosts.
    pub fn reads_all(&self) -> bool {
        match self {
            Caller::Anonymous => false,
            Caller::Server(_) => true,
            Caller::Admin { role, .. } => *role >= AdminRole::Read,
        }
    }

    /// May hold a slot of a master's VID: a production server's token, or
    /// an administrator's.
    pub fn may_hold_vid_slots(&self) -> bool {
        matches!(
            self,
            Caller::Admin {
                role: AdminRole::Production | AdminRole::Admin,
                ..
            }
        )
    }
}

fn not_a_server() -> ApiError {
    api_error(
        ErrorCode::Unauthenticated,
        "peer requests need the credential of a server of this pool",
    )
}

/// Names the caller of every request (an extension [`Caller`]) and lets
/// through only the callers each route group takes.
pub(super) async fn identify(
    State(app): State<Arc<App>>,
    mut request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    let peer_route = path.starts_with("/v1/peer/");
    // The test fault switch (only with TESSERA_TEST_FAULTS) is an admin route.
    let admin_route = path.starts_with("/v1/admin/") || path.starts_with("/v1/test/");
    if peer_route && app.pool.is_partitioned() {
        let message = "cut off by the test fault switch";
        return api_error(ErrorCode::Internal, message).into_response();
    }
    if peer_route || admin_route {
        if let Err(err) = check_pool_named(&app, &request) {
            return err.into_response();
        }
    }
    let caller = match caller(&app, &request) {
        Ok(caller) => caller,
        Err(err) => return err.into_response(),
    };
    let allowed = match (&caller, peer_route, admin_route) {
        (Caller::Server(_), _, _) => Ok(()),
        (_, true, _) => Err(not_a_server()),
        (Caller::Admin { role, .. }, _, true) if *role < AdminRole::Admin => Err(api_error(
            ErrorCode::Forbidden,
            format!(
                "a token of role `{}` may not change the pool; use a token of role `admin`",
                role.name()
            ),
        )),
        (Caller::Anonymous, _, true) => Err(api_error(
            ErrorCode::Unauthenticated,
            "changes to the pool need an administrator's token (tessera admin --token-file)",
        )),
        _ => Ok(()),
    };
    if let Err(err) = allowed {
        return err.into_response();
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}

fn check_pool_named(app: &App, request: &Request) -> Result<(), ApiError> {
    let pool_id = &app.pool.pool_id;
    let named = header(request, POOL_HEADER).unwrap_or("");
    if named == pool_id {
        return Ok(());
    }
    Err(api_error(
        ErrorCode::WrongPool,
        format!(
            "this server belongs to pool `{pool_id}`; the request names pool `{named}` \
             (header {POOL_HEADER})"
        ),
    ))
}

/// The caller its credential proves; a credential that proves no one is
/// refused rather than taken as anonymous.
fn caller(app: &App, request: &Request) -> Result<Caller, ApiError> {
    let Some(authorization) = header(request, AUTHORIZATION.as_str()) else {
        return Ok(Caller::Anonymous);
    };
    let Some(secret) = authorization.strip_prefix("Bearer ") else {
        return Err(api_error(
            ErrorCode::Unauthenticated,
            "the Authorization header must be `Bearer <token>`",
        ));
    };
    if let Some(server_id) = header(request, PEER_HEADER) {
        let hash = credential_sha256(secret);
        let known = app.pool.with_pool_file(|pool_file| {
            pool_file
                .server(server_id)
                .and_then(|s| s.credential_sha256.as_deref())
                .is_some_and(|expected| constant_time_eq(expected.as_bytes(), hash.as_bytes()))
        });
        return if known {
            Ok(Caller::Server(server_id.to_string()))
        } else {
            Err(api_error(
                ErrorCode::Unauthenticated,
                format!(
                    "the request does not carry the peer credential of server `{server_id}` \
                     of pool `{}`",
                    app.pool.pool_id
                ),
            ))
        };
    }
    admin_caller(app, secret)
}

/// The administrator (or production server) whose token is `secret`; a
/// token the pool file does not list is refused. The framed protocol's
/// callers are named here too: their frames carry no peer credential.
pub(super) fn admin_caller(app: &App, secret: &str) -> Result<Caller, ApiError> {
    let hash = credential_sha256(secret);
    let admin = app.pool.with_pool_file(|pool_file| {
        pool_file
            .admins
            .iter()
            .find(|a| constant_time_eq(a.token_sha256.as_bytes(), hash.as_bytes()))
            .map(|a| (a.name.clone(), a.role))
    });
    match admin {
        Some((name, role)) => Ok(Caller::Admin { name, role }),
        None => Err(api_error(
            ErrorCode::Unauthenticated,
            "the token is not one of this pool's administrator tokens",
        )),
    }
}

fn header<'r>(request: &'r Request, name: &str) -> Option<&'r str> {
    request.headers().get(name).and_then(|v| v.to_str().ok())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
