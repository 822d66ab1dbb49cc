//! Admin routes, `/v1/admin/*`: a new pool file, a distribution, a license
//! code added or removed. Any server takes them and forwards them to the
//! leader, which commits the change through the pool log.

use std::sync::Arc;

use axum::extract::State;
use axum::{Extension, Json};
use tessera_proto::{
    AddLicense, ErrorCode, InstanceRevoked, PoolFileInstalled, PoolFileUpdate, RemoveLicense,
    RevokeInstance, SetDistribution,
};

use tessera_core::control::{ControlCommand, ControlOutcome};
use utoipa_axum::routes;

use crate::api::auth::Caller;

use super::openapi::{Refusals, Refuses, ADMIN_REQUEST, EVERY_REQUEST, JSON_BODY};
use super::{ApiError, Documented, JsonBody};
use crate::pool::admin::AdminChange;
use crate::pool::network::PEER_TIMEOUT;
use crate::pool::Forward;
use crate::refusal::Refusal;
use crate::App;

/// The administrator's routes; each path is in its handler's `#[utoipa::path]`.
pub(super) fn routes() -> Documented {
    Documented::new()
        .routes(routes!(update_pool_file))
        .routes(routes!(set_distribution))
        .routes(routes!(add_license))
        .routes(routes!(remove_license))
        .routes(routes!(revoke_instance))
}

/// What every change of the pool may be refused with: it is forwarded to
/// the leader and committed through the pool log.
const POOL_CHANGE: &[ErrorCode] = &[
    ErrorCode::PoolFileRefused,
    ErrorCode::NoLeader,
    ErrorCode::NoQuorum,
];

struct PoolFileRefusals;

impl Refuses for PoolFileRefusals {
    const CODES: &'static [&'static [ErrorCode]] =
        &[EVERY_REQUEST, JSON_BODY, ADMIN_REQUEST, POOL_CHANGE];
}

struct DistributionRefusals;

impl Refuses for DistributionRefusals {
    const CODES: &'static [&'static [ErrorCode]] = &[
        EVERY_REQUEST,
        JSON_BODY,
        ADMIN_REQUEST,
        POOL_CHANGE,
        &[ErrorCode::UnknownFeature],
    ];
}

struct RemoveLicenseRefusals;

impl Refuses for RemoveLicenseRefusals {
    const CODES: &'static [&'static [ErrorCode]] = &[
        EVERY_REQUEST,
        JSON_BODY,
        ADMIN_REQUEST,
        POOL_CHANGE,
        &[ErrorCode::NotFound, ErrorCode::SeatsInUse],
    ];
}

struct RevokeRefusals;

impl Refuses for RevokeRefusals {
    const CODES: &'static [&'static [ErrorCode]] = &[
        EVERY_REQUEST,
        JSON_BODY,
        ADMIN_REQUEST,
        &[
            ErrorCode::NotFound,
            ErrorCode::InvalidField,
            ErrorCode::NoLeader,
            ErrorCode::NoQuorum,
        ],
    ];
}

/// The masters of the pool stop renewing one run's certificates; its slot
/// comes free when the last one lapses. Committed through the pool log, so
/// every master of a pool refuses the run, and a restart forgets nothing.
#[utoipa::path(
    post,
    path = "/v1/admin/master/revoke",
    tag = "admin",
    summary = "Stop renewing one production server run's VID certificates (a master server)",
    description = "A server that is not a master answers `not_found`.",
    params(("x-tessera-pool" = String, Header, description = "The pool's id")),
    request_body(content = RevokeInstance, example = json!({"instance": "P1.0a1b2c3d"})),
    responses(
        (status = 200, description = "The run is revoked", body = InstanceRevoked),
        Refusals<RevokeRefusals>,
    ),
    security(("token" = [])),
)]
async fn revoke_instance(
    State(app): State<Arc<App>>,
    JsonBody(request): JsonBody<RevokeInstance>,
) -> Result<Json<InstanceRevoked>, ApiError> {
    if app.master.is_none() {
        return Err(Refusal::new(
            ErrorCode::NotFound,
            format!(
                "server `{}` is not a master server (its config names no master_license_file)",
                app.pool.server_id
            ),
        )
        .into());
    }
    super::client::check_field("instance", &request.instance)?;
    let forward = Forward {
        path: "/v1/admin/master/revoke",
        timeout: PEER_TIMEOUT * 5,
        unanswered: ErrorCode::NoLeader,
    };
    let mut answer = app
        .pool
        .at_leader(forward, request, |request| lead_revocation(&app, request))
        .await?;
    // The run's slot may be lent by this master rather than the leader.
    answer.slot_free_in_ms = answer
        .slot_free_in_ms
        .max(slot_free_in_ms(&app, &answer.instance));
    Ok(Json(answer))
}

/// Leader: commits the revocation.
async fn lead_revocation(app: &App, request: RevokeInstance) -> Result<InstanceRevoked, Refusal> {
    let command = ControlCommand::RevokeRun {
        instance: request.instance.clone(),
    };
    let newly = match app.pool.commit(command).await? {
        ControlOutcome::Revoked { newly } => newly,
        ControlOutcome::Refused { reason } => {
            return Err(Refusal::new(ErrorCode::MalformedRequest, reason))
        }
        other => {
            return Err(Refusal::new(
                ErrorCode::Internal,
                format!("the revocation applied as {other:?}"),
            ))
        }
    };
    let slot_free_in_ms = slot_free_in_ms(app, &request.instance);
    tracing::warn!(
        "run `{}` revoked: no master of the pool renews its certificates{}",
        request.instance,
        slot_free_in_ms.map_or(String::new(), |ms| format!(
            "; its slot here comes free in {ms} ms"
        ))
    );
    Ok(InstanceRevoked {
        instance: request.instance,
        newly,
        slot_free_in_ms,
    })
}

/// How long the lease of `instance`'s slot still runs on this master, if
/// it lends it one.
fn slot_free_in_ms(app: &App, instance: &str) -> Option<u64> {
    let master = app.master.as_ref()?;
    let feature = master.slot_feature();
    let now_ms = app.clock.now_ms();
    app.issuer()
        .grants()
        .filter(|(_, grant)| {
            *grant.request.feature == *feature && *grant.request.client_id == *instance
        })
        .map(|(_, grant)| grant.expires_at_ms.saturating_sub(now_ms))
        .max()
}

#[utoipa::path(
    post,
    path = "/v1/admin/pool-file",
    tag = "admin",
    summary = "Install a pool file with a higher sequence",
    params(("x-tessera-pool" = String, Header, description = "The pool's id")),
    request_body(content = PoolFileUpdate, example = json!({
        "text": "pool_id = \"acme-eng\"\nsequence = 2\n"})),
    responses(
        (status = 200, description = "The pool file is installed", body = PoolFileInstalled),
        Refusals<PoolFileRefusals>,
    ),
    security(("token" = [])),
)]
async fn update_pool_file(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    JsonBody(update): JsonBody<PoolFileUpdate>,
) -> Result<Json<PoolFileInstalled>, ApiError> {
    let installed = app.pool.update_pool_file(update.text).await?;
    report_admin(&app, &caller, "update-pool-file", &installed);
    Ok(Json(installed))
}

/// Records an administrator's change in the report log, with who made it.
fn report_admin(app: &App, caller: &Caller, what: &str, installed: &PoolFileInstalled) {
    let who = match caller {
        Caller::Admin { name, .. } => name.as_str(),
        Caller::Server(server) => server.as_str(),
        Caller::Anonymous => "",
    };
    app.report_other(
        tessera_core::report::EventKind::Admin,
        "",
        who,
        0,
        format!(
            "{what}: pool file sequence {} installed",
            installed.sequence
        ),
    );
}

#[utoipa::path(
    post,
    path = "/v1/admin/distribution",
    tag = "admin",
    summary = "A new distribution of one feature's seats",
    params(("x-tessera-pool" = String, Header, description = "The pool's id")),
    request_body(content = SetDistribution, example = json!({
        "feature": "cad", "servers": {"A": 2}})),
    responses(
        (status = 200, description = "The pool file with it is installed", body = PoolFileInstalled),
        Refusals<DistributionRefusals>,
    ),
    security(("token" = [])),
)]
async fn set_distribution(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    JsonBody(change): JsonBody<SetDistribution>,
) -> Result<Json<PoolFileInstalled>, ApiError> {
    change_pool(&app, &caller, AdminChange::Distribution(change)).await
}

#[utoipa::path(
    post,
    path = "/v1/admin/license",
    tag = "admin",
    summary = "Add license codes (`[[license]]` tables)",
    params(("x-tessera-pool" = String, Header, description = "The pool's id")),
    request_body(content = AddLicense, example = json!({
        "text": "[[license]]\nid = \"acme-cad-0002\"\n"})),
    responses(
        (status = 200, description = "The pool file with them is installed", body = PoolFileInstalled),
        Refusals<PoolFileRefusals>,
    ),
    security(("token" = [])),
)]
async fn add_license(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    JsonBody(change): JsonBody<AddLicense>,
) -> Result<Json<PoolFileInstalled>, ApiError> {
    change_pool(&app, &caller, AdminChange::AddLicense(change)).await
}

#[utoipa::path(
    post,
    path = "/v1/admin/license/remove",
    tag = "admin",
    summary = "Take a license code out of the pool",
    description = "Refused (`seats_in_use`) while seats of its feature are held, unless `force`.",
    params(("x-tessera-pool" = String, Header, description = "The pool's id")),
    request_body(content = RemoveLicense, example = json!({"id": "acme-cad-0002"})),
    responses(
        (status = 200, description = "The pool file without it is installed", body = PoolFileInstalled),
        Refusals<RemoveLicenseRefusals>,
    ),
    security(("token" = [])),
)]
async fn remove_license(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    JsonBody(change): JsonBody<RemoveLicense>,
) -> Result<Json<PoolFileInstalled>, ApiError> {
    change_pool(&app, &caller, AdminChange::RemoveLicense(change)).await
}

async fn change_pool(
    app: &App,
    caller: &Caller,
    change: AdminChange,
) -> Result<Json<PoolFileInstalled>, ApiError> {
    let what = match &change {
        AdminChange::Distribution(_) => "set-distribution",
        AdminChange::AddLicense(_) => "add-license",
        AdminChange::RemoveLicense(_) => "remove-license",
    };
    let seats_held = |feature: &str, since_ms| app.seats_held(feature, since_ms);
    let installed = app.pool.admin_change(change, seats_held).await?;
    report_admin(app, caller, what, &installed);
    Ok(Json(installed))
}
