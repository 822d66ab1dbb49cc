//! Admin routes, `/v1/admin/*`: a new pool file, a distribution, a license
//! code added or removed. Any server takes them and forwards them to the
//! leader, which commits the change through the pool log.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use tessera_proto::{
    AddLicense, ErrorCode, InstanceRevoked, PoolFileInstalled, PoolFileUpdate, RemoveLicense,
    RevokeInstance, SetDistribution,
};

use super::{ApiError, JsonBody};
use crate::pool::admin::AdminChange;
use crate::App;

pub(super) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/v1/admin/pool-file", post(update_pool_file))
        .route("/v1/admin/distribution", post(set_distribution))
        .route("/v1/admin/license", post(add_license))
        .route("/v1/admin/license/remove", post(remove_license))
        .route("/v1/admin/master/revoke", post(revoke_instance))
}

/// A master stops renewing one run's certificates; its slot comes free when
/// the last one lapses.
async fn revoke_instance(
    State(app): State<Arc<App>>,
    JsonBody(request): JsonBody<RevokeInstance>,
) -> Result<Json<InstanceRevoked>, ApiError> {
    let Some(master) = &app.master else {
        return Err(crate::refusal::Refusal::new(
            ErrorCode::NotFound,
            format!(
                "server `{}` is not a master server (its config names no master_license_file)",
                app.pool.server_id
            ),
        )
        .into());
    };
    super::client::check_field("instance", &request.instance)?;
    let newly = master
        .revoked
        .revoke(app.disk.as_ref(), &request.instance)
        .map_err(|err| {
            crate::refusal::Refusal::new(
                ErrorCode::Internal,
                format!("cannot record the revocation: {err}"),
            )
        })?;
    let feature = master.slot_feature();
    let now_ms = app.clock.now_ms();
    let slot_free_in_ms = app
        .issuer()
        .grants()
        .filter(|(_, grant)| {
            grant.request.feature == feature && grant.request.client_id == request.instance
        })
        .map(|(_, grant)| grant.expires_at_ms.saturating_sub(now_ms))
        .max();
    tracing::warn!(
        "run `{}` revoked: its certificates are not renewed{}",
        request.instance,
        slot_free_in_ms.map_or(String::new(), |ms| format!(
            "; its slot comes free in {ms} ms"
        ))
    );
    Ok(Json(InstanceRevoked {
        instance: request.instance,
        newly,
        slot_free_in_ms,
    }))
}

async fn update_pool_file(
    State(app): State<Arc<App>>,
    JsonBody(update): JsonBody<PoolFileUpdate>,
) -> Result<Json<PoolFileInstalled>, ApiError> {
    Ok(Json(app.pool.update_pool_file(update.text).await?))
}

async fn set_distribution(
    State(app): State<Arc<App>>,
    JsonBody(change): JsonBody<SetDistribution>,
) -> Result<Json<PoolFileInstalled>, ApiError> {
    change_pool(&app, AdminChange::Distribution(change)).await
}

async fn add_license(
    State(app): State<Arc<App>>,
    JsonBody(change): JsonBody<AddLicense>,
) -> Result<Json<PoolFileInstalled>, ApiError> {
    change_pool(&app, AdminChange::AddLicense(change)).await
}

async fn remove_license(
    State(app): State<Arc<App>>,
    JsonBody(change): JsonBody<RemoveLicense>,
) -> Result<Json<PoolFileInstalled>, ApiError> {
    change_pool(&app, AdminChange::RemoveLicense(change)).await
}

async fn change_pool(app: &App, change: AdminChange) -> Result<Json<PoolFileInstalled>, ApiError> {
    let seats_held = |feature: &str, since_ms| app.seats_held(feature, since_ms);
    Ok(Json(app.pool.admin_change(change, seats_held).await?))
}
