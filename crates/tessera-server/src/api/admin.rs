//! Admin routes, `/v1/admin/*`: a new pool file, a distribution, a license
//! code added or removed. Any server takes them and forwards them to the
//! leader, which commits the change through the pool log.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use tessera_proto::{
    AddLicense, PoolFileInstalled, PoolFileUpdate, RemoveLicense, SetDistribution,
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
