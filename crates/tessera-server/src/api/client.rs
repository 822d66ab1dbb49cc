//! Client routes: a program's checkout, heartbeat and check-in, the status
//! and the metrics. Parses and checks the request, hands it to the request
//! service ([`crate::service`]), and writes the answer.

use std::sync::Arc;

use axum::extract::{ConnectInfo, Extension, State};
use axum::response::IntoResponse;
use axum::Json;
use tessera_proto::{
    self as proto, CheckinRequest, CheckinResponse, CheckoutRequest, ErrorCode, HeartbeatRequest,
    MAX_FIELD_BYTES, MAX_SEATS_PER_REQUEST,
};
use utoipa_axum::routes;

use super::auth::Caller;
use super::openapi::{Monitoring, Refusals, Refuses, EVERY_REQUEST, JSON_BODY};
use super::per_address::SourceAddress;
use super::{api_error, ApiError, Documented, JsonBody, SignedDenial};
use crate::answer::{Asked, Signing};
use crate::config::PublicStatus;
use crate::issuer::{Origin, SeatRequest};
use crate::service::{Deadline, Granted};
use crate::status::Grants;
use crate::App;

/// The programs' routes; each path is in its handler's `#[utoipa::path]`.
pub(super) fn routes() -> Documented {
    Documented::new()
        .routes(routes!(checkout))
        .routes(routes!(heartbeat))
        .routes(routes!(checkin))
        .routes(routes!(activate))
        .routes(routes!(extend_temporary))
        .routes(routes!(return_temporary))
        .routes(routes!(noop))
}

/// The status, the metrics and the API's document: read-only, answered
/// from memory, with a capacity of their own so that an administrator can
/// always look.
pub(super) fn monitoring_routes() -> Documented {
    Documented::new()
        .routes(routes!(status))
        .routes(routes!(metrics))
        .routes(routes!(super::openapi::served))
        .routes(routes!(super::dashboard::page))
        .routes(routes!(super::dashboard::script))
        .routes(routes!(super::dashboard::style))
}

/// What a checkout and a heartbeat may be refused with, besides a bad body.
const SEAT_REQUEST: &[ErrorCode] = &[
    ErrorCode::InvalidField,
    ErrorCode::InvalidCount,
    ErrorCode::CountAboveLimit,
    ErrorCode::VersionNotLicensed,
    ErrorCode::UnknownFeature,
    ErrorCode::LicenseNotServed,
    ErrorCode::PolicyDenied,
    ErrorCode::Forbidden,
    ErrorCode::NoSeatsAvailable,
    ErrorCode::TooManyGrants,
    ErrorCode::GracePeriod,
    ErrorCode::NoQuorum,
    ErrorCode::NoLeader,
    ErrorCode::ClockSetBack,
];

struct CheckoutRefusals;

impl Refuses for CheckoutRefusals {
    const CODES: &'static [&'static [ErrorCode]] =
        &[EVERY_REQUEST, JSON_BODY, SEAT_REQUEST, &[ErrorCode::Queued]];
}

struct HeartbeatRefusals;

impl Refuses for HeartbeatRefusals {
    const CODES: &'static [&'static [ErrorCode]] = &[
        EVERY_REQUEST,
        JSON_BODY,
        SEAT_REQUEST,
        &[
            ErrorCode::GrantProofInvalid,
            ErrorCode::GrantMismatch,
            ErrorCode::UnknownGrant,
            ErrorCode::IdleTimeout,
        ],
    ];
}

struct CheckinRefusals;

impl Refuses for CheckinRefusals {
    const CODES: &'static [&'static [ErrorCode]] = &[
        EVERY_REQUEST,
        JSON_BODY,
        &[
            ErrorCode::InvalidField,
            ErrorCode::UnknownGrant,
            ErrorCode::GrantProofInvalid,
            ErrorCode::GrantMismatch,
            ErrorCode::NoQuorum,
            ErrorCode::NoLeader,
            ErrorCode::ClockSetBack,
        ],
    ];
}

/// What the temporary-license routes may be refused with, besides a bad body.
const TEMPORARY_REQUEST: &[ErrorCode] = &[
    ErrorCode::InvalidField,
    ErrorCode::UnknownFeature,
    ErrorCode::VersionNotLicensed,
    ErrorCode::LicenseNotServed,
    ErrorCode::TemporaryNotAllowed,
    ErrorCode::LicenseWithdrawn,
    ErrorCode::GrantProofInvalid,
    ErrorCode::GracePeriod,
    ErrorCode::NoQuorum,
    ErrorCode::NoLeader,
    ErrorCode::ClockSetBack,
];

struct ActivateRefusals;

impl Refuses for ActivateRefusals {
    const CODES: &'static [&'static [ErrorCode]] = &[
        EVERY_REQUEST,
        JSON_BODY,
        TEMPORARY_REQUEST,
        &[
            ErrorCode::PolicyDenied,
            ErrorCode::TooManyDevices,
            ErrorCode::NoSeatsAvailable,
        ],
    ];
}

struct TemporaryRefusals;

impl Refuses for TemporaryRefusals {
    const CODES: &'static [&'static [ErrorCode]] = &[EVERY_REQUEST, JSON_BODY, TEMPORARY_REQUEST];
}

struct NoopRefusals;

impl Refuses for NoopRefusals {
    const CODES: &'static [&'static [ErrorCode]] = &[EVERY_REQUEST, JSON_BODY];
}

/// The protocol's ceiling, for benchmarks: parses a checkout request with
/// the same extractor and answers a grant-shaped body of the same size class,
/// without the issuer, the store or the clock. Nothing is issued.
#[utoipa::path(
    post,
    path = "/v1/noop",
    tag = "client",
    summary = "A checkout that issues nothing, for benchmarks",
    request_body(content = CheckoutRequest, example = json!({
        "client_id": "ws12-4411-9f3a", "user": "alice", "host": "ws12",
        "feature": "cad", "version": "2.1", "count": 1})),
    responses(
        (status = 200, description = "A grant-shaped answer with dummy fields", body = proto::Grant),
        Refusals<NoopRefusals>,
    ),
)]
async fn noop(JsonBody(body): JsonBody<CheckoutRequest>) -> Json<proto::Grant> {
    Json(noop_answer(body))
}

/// The no-op's grant-shaped answer, for REST and the framed protocol alike.
pub(super) fn noop_answer(body: CheckoutRequest) -> proto::Grant {
    proto::Grant {
        grant_id: "00000000000000000000000000000000".into(),
        feature: body.feature,
        count: body.count,
        server_id: "noop".into(),
        lease_ms: 0,
        heartbeat_interval_ms: 0,
        servers: Arc::new([]),
        converted: false,
        proof: proto::Proof("0000000000000000000000000000000000000000000".to_string()),
        holding: None,
        certificate: None,
        answer: None,
    }
}

/// Where a request came from, when the listener says (a real socket).
type Source = Option<Extension<ConnectInfo<SourceAddress>>>;

/// The request's source address, as the socket saw it.
fn source_ip(source: &Source) -> Option<std::net::IpAddr> {
    source
        .as_ref()
        .map(|Extension(ConnectInfo(SourceAddress(address)))| address.ip())
}

/// Whether the pool's policy lets this user, host and address use `feature`.
fn admitted(
    app: &App,
    feature: &str,
    (user, host, display): (&str, &str, Option<&str>),
    address: Option<std::net::IpAddr>,
) -> Result<(), ApiError> {
    let asker = tessera_core::policy::Asker {
        user,
        host,
        address,
        display,
    };
    app.pool
        .with_pool_file(|pool| pool.policy.admits(feature, &asker))
        .map_err(|message| api_error(ErrorCode::PolicyDenied, message))
}

#[utoipa::path(
    post,
    path = "/v1/checkout",
    tag = "client",
    summary = "Ask for seats of a feature",
    description = "A request with a `nonce` is answered signed, grant or refusal (`answer`). \
                   On a master, the slots of its VID need a token of role `production`.",
    request_body(content = CheckoutRequest, example = json!({
        "client_id": "ws12-4411-9f3a", "user": "alice", "host": "ws12",
        "feature": "cad", "version": "2.1", "count": 1, "answer_within_ms": 2000,
        "nonce": "6f1c0d2a9b8e4f3aa1b2c3d4e5f60718"})),
    responses(
        (status = 200, description = "The seats are held for the client", body = proto::Grant),
        Refusals<CheckoutRefusals>,
    ),
    security((), ("token" = [])),
)]
async fn checkout(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    source: Source,
    JsonBody(body): JsonBody<CheckoutRequest>,
) -> Result<Json<proto::Grant>, SignedDenial> {
    checkout_answer(&app, &caller, source_ip(&source), body, Signing::Alone)
        .await
        .map(Json)
}

/// A checkout, answered (and signed where asked), for REST and the framed
/// protocol alike.
pub(super) async fn checkout_answer(
    app: &Arc<App>,
    caller: &Caller,
    address: Option<std::net::IpAddr>,
    body: CheckoutRequest,
    signing: Signing,
) -> Result<proto::Grant, SignedDenial> {
    let asked = Asked::of(&body);
    let who = (&*body.user, &*body.host, body.display.as_deref());
    let answer = match admitted(app, &body.feature, who, address) {
        Ok(()) => checkout_grant(app, caller, body, address).await,
        Err(denied) => {
            let who = (&*body.feature, &*body.user, &*body.host);
            app.report_denied(who, body.count, denied.0.code.as_str());
            Err(denied)
        }
    };
    signed(app, asked, answer, signing).await
}

async fn checkout_grant(
    app: &Arc<App>,
    caller: &Caller,
    body: CheckoutRequest,
    address: Option<std::net::IpAddr>,
) -> Result<proto::Grant, ApiError> {
    let deadline = Deadline::from(app, body.answer_within_ms);
    let holder = Holder::of(app, &body);
    let feature = body.feature.clone();
    check_slot_holder(app, caller, &feature, holder.as_ref())?;
    let queue = body.queue.clone();
    let request = seat_request(body, 0)?;
    let granted = app
        .checkout_in_turn(request, deadline, address, queue)
        .await
        .map_err(|err| with_slot_holders(app, &feature, err.into()))?;
    Ok(wire_grant(app, granted, holder.as_ref()))
}

/// The answer as the program gets it: a master's co-signatures gathered,
/// and signed over the request's nonce where it sent one (`answer`).
async fn signed(
    app: &App,
    asked: Option<Asked>,
    answer: Result<proto::Grant, ApiError>,
    signing: Signing,
) -> Result<proto::Grant, SignedDenial> {
    match answer {
        Ok(mut grant) => {
            // Boxed: a master's co-signing is rare and its future large;
            // inline it would be copied with every checkout's.
            if app.master.is_some() {
                Box::pin(crate::master::cosign::gather(app, &mut grant)).await;
            }
            if let Some(asked) = &asked {
                grant.answer = Some(app.sign_grant(asked, &grant, signing).await);
            }
            Ok(grant)
        }
        Err(err) => {
            let answer = match asked {
                Some(asked) => Some(Box::new(app.sign_denial(&asked, err.0.code, signing).await)),
                None => None,
            };
            Err(SignedDenial { err, answer })
        }
    }
}

/// A master lends its VID's slots, and renews them, only to production
/// servers (a token of role `production`), and never to a revoked run.
fn check_slot_holder(
    app: &App,
    caller: &Caller,
    feature: &str,
    holder: Option<&Holder>,
) -> Result<(), ApiError> {
    let (Some(master), Some(holder)) = (&app.master, holder) else {
        return Ok(());
    };
    if feature == master.slot_feature() && !caller.may_hold_vid_slots() {
        let code = match caller {
            Caller::Anonymous => proto::ErrorCode::Unauthenticated,
            _ => proto::ErrorCode::Forbidden,
        };
        return Err(crate::refusal::Refusal::new(
            code,
            format!(
                "the slots of `{feature}` are lent only to production servers: set `token_file` \
                 in the production server's [vid] to a token of role `production` of this \
                 master's pool"
            ),
        )
        .into());
    }
    let applied = app.pool.applied.borrow();
    Ok(master.check_not_revoked(feature, &holder.instance, &applied.state)?)
}

/// A master's refusal of one of its VID's slots names who holds them (the
/// production servers and their runs), so the administrator knows which to
/// stop or revoke.
fn with_slot_holders(app: &App, feature: &str, err: ApiError) -> ApiError {
    let Some(master) = &app.master else {
        return err;
    };
    if err.0.code != proto::ErrorCode::NoSeatsAvailable || feature != master.slot_feature() {
        return err;
    }
    let mut holders: Vec<String> = app
        .issuer()
        .grants()
        .filter(|(_, grant)| *grant.request.feature == *feature)
        .map(|(_, grant)| format!("{} ({})", grant.request.user, grant.request.client_id))
        .collect();
    holders.sort();
    ApiError(crate::refusal::Refusal::new(
        err.0.code,
        format!(
            "{}; the slots of VID {} are held by {}",
            err.0.message,
            feature.trim_start_matches(tessera_core::master::VID_BINDING_PREFIX),
            holders.join(", ")
        ),
    ))
}

#[utoipa::path(
    post,
    path = "/v1/heartbeat",
    tag = "client",
    summary = "Renew a grant (or convert it into a checkout on another server)",
    request_body(content = HeartbeatRequest, example = json!({
        "grant_id": "6039d9bf67bf4103b23d468ff879fd50", "client_id": "ws12-4411-9f3a",
        "user": "alice", "host": "ws12", "feature": "cad", "version": "2.1", "count": 1,
        "renewal": 1, "proof": "nGsPKtgjUOo6dSZpB-J8S87b0xSuZPMKF3VxAwmKSUE"})),
    responses(
        (status = 200, description = "The grant, renewed or converted", body = proto::Grant),
        Refusals<HeartbeatRefusals>,
    ),
    security((), ("token" = [])),
)]
async fn heartbeat(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    JsonBody(body): JsonBody<HeartbeatRequest>,
) -> Result<Json<proto::Grant>, SignedDenial> {
    heartbeat_answer(&app, &caller, body, Signing::Alone)
        .await
        .map(Json)
}

/// A heartbeat, answered (and signed where asked), for REST and the framed
/// protocol alike.
pub(super) async fn heartbeat_answer(
    app: &Arc<App>,
    caller: &Caller,
    body: HeartbeatRequest,
    signing: Signing,
) -> Result<proto::Grant, SignedDenial> {
    let checkout = body.as_checkout();
    let asked = Asked::of(&checkout);
    let answer = renewal(app, caller, body, checkout).await;
    signed(app, asked, answer, signing).await
}

async fn renewal(
    app: &Arc<App>,
    caller: &Caller,
    body: HeartbeatRequest,
    checkout: CheckoutRequest,
) -> Result<proto::Grant, ApiError> {
    check_field("grant_id", &body.grant_id)?;
    let deadline = Deadline::from(app, body.answer_within_ms);
    let holder = Holder::of(app, &checkout);
    check_slot_holder(app, caller, &checkout.feature, holder.as_ref())?;
    let idle_ms = body.idle_ms;
    let request = seat_request(checkout, body.renewal)?;
    if let Some(idle_ms) = idle_ms {
        app.idle_timeout(&body.grant_id, &request, body.proof.as_str(), idle_ms)
            .await?;
    }
    let granted = app
        .heartbeat(
            body.grant_id,
            request,
            body.proof.as_str(),
            body.holding,
            deadline,
        )
        .await?;
    Ok(wire_grant(app, granted, holder.as_ref()))
}

/// Who holds a grant, as a master names them in a VID certificate: the
/// production server (the request's `user`), its run (`client_id`) and
/// its answer key.
struct Holder {
    server_id: String,
    instance: String,
    server_key: Option<String>,
}

impl Holder {
    /// Only a master names holders: elsewhere, `None`.
    fn of(app: &App, request: &CheckoutRequest) -> Option<Holder> {
        app.master.as_ref().map(|_| Holder {
            server_id: request.user.to_string(),
            instance: request.client_id.to_string(),
            server_key: request.server_key.clone(),
        })
    }
}

#[utoipa::path(
    post,
    path = "/v1/checkin",
    tag = "client",
    summary = "Give a grant's seats back",
    request_body(content = CheckinRequest, example = json!({
        "grant_id": "6039d9bf67bf4103b23d468ff879fd50", "client_id": "ws12-4411-9f3a",
        "proof": "nGsPKtgjUOo6dSZpB-J8S87b0xSuZPMKF3VxAwmKSUE"})),
    responses(
        (status = 200, description = "The seats are free", body = CheckinResponse),
        Refusals<CheckinRefusals>,
    ),
)]
async fn checkin(
    State(app): State<Arc<App>>,
    JsonBody(body): JsonBody<CheckinRequest>,
) -> Result<Json<CheckinResponse>, ApiError> {
    checkin_answer(&app, body).await.map(Json)
}

/// A check-in, answered, for REST and the framed protocol alike.
pub(super) async fn checkin_answer(
    app: &App,
    body: CheckinRequest,
) -> Result<CheckinResponse, ApiError> {
    check_field("grant_id", &body.grant_id)?;
    check_field("client_id", &body.client_id)?;
    let released_seats = app
        .checkin(&body.grant_id, &body.client_id, body.proof.as_str())
        .await?;
    Ok(CheckinResponse { released_seats })
}

/// A temporary license (seed 004) for the user's ticket on a device.
#[utoipa::path(
    post,
    path = "/v1/temporary/activate",
    tag = "temporary",
    summary = "A temporary license for the user's ticket on a device",
    request_body(content = proto::ActivateRequest, example = json!({
        "client_id": "ws12-4411-9f3a", "user": "alice", "host": "ws12",
        "feature": "cad", "version": "2.1", "device": "dev-0011223344556677"})),
    responses(
        (status = 200, description = "The signed license", body = proto::TemporaryToken),
        Refusals<ActivateRefusals>,
    ),
)]
async fn activate(
    State(app): State<Arc<App>>,
    source: Source,
    JsonBody(body): JsonBody<proto::ActivateRequest>,
) -> Result<Json<proto::TemporaryToken>, ApiError> {
    for (name, value) in [
        ("client_id", &body.client_id),
        ("user", &body.user),
        ("host", &body.host),
        ("feature", &body.feature),
        ("version", &body.version),
    ] {
        check_field(name, value)?;
    }
    tessera_core::temporary::check_device(&body.device)
        .map_err(|message| api_error(ErrorCode::InvalidField, message))?;
    admitted(
        &app,
        &body.feature,
        (&body.user, &body.host, None),
        source_ip(&source),
    )?;
    let deadline = Deadline::from(&app, body.answer_within_ms);
    Ok(Json(app.activate(body, deadline).await?))
}

fn check_temporary(body: &proto::TemporaryRequest) -> Result<(), ApiError> {
    for (name, value) in [
        ("feature", &body.feature),
        ("license_id", &body.license_id),
        ("device", &body.device),
    ] {
        check_field(name, value)?;
    }
    Ok(())
}

#[utoipa::path(
    post,
    path = "/v1/temporary/extend",
    tag = "temporary",
    summary = "Extend a temporary license",
    request_body(content = proto::TemporaryRequest, example = json!({
        "feature": "cad", "license_id": "t-6039d9bf67bf4103", "device": "dev-0011223344556677",
        "proof": "nGsPKtgjUOo6dSZpB-J8S87b0xSuZPMKF3VxAwmKSUE"})),
    responses(
        (status = 200, description = "The license, extended", body = proto::TemporaryToken),
        Refusals<TemporaryRefusals>,
    ),
)]
async fn extend_temporary(
    State(app): State<Arc<App>>,
    JsonBody(body): JsonBody<proto::TemporaryRequest>,
) -> Result<Json<proto::TemporaryToken>, ApiError> {
    check_temporary(&body)?;
    Ok(Json(app.extend_temporary(body).await?))
}

#[utoipa::path(
    post,
    path = "/v1/temporary/return",
    tag = "temporary",
    summary = "Return a temporary license",
    request_body(content = proto::TemporaryRequest, example = json!({
        "feature": "cad", "license_id": "t-6039d9bf67bf4103", "device": "dev-0011223344556677",
        "proof": "nGsPKtgjUOo6dSZpB-J8S87b0xSuZPMKF3VxAwmKSUE"})),
    responses(
        (status = 200, description = "The seats are free", body = CheckinResponse),
        Refusals<TemporaryRefusals>,
    ),
)]
async fn return_temporary(
    State(app): State<Arc<App>>,
    JsonBody(body): JsonBody<proto::TemporaryRequest>,
) -> Result<Json<CheckinResponse>, ApiError> {
    check_temporary(&body)?;
    let released_seats = app.return_temporary(body).await?;
    Ok(Json(CheckinResponse { released_seats }))
}

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "monitoring",
    summary = "Prometheus metrics (text exposition format 0.0.4)",
    responses(
        (status = 200, description = "The metrics, as PROTOCOL.md lists them", body = String,
         content_type = "text/plain"),
        Refusals<Monitoring>,
    ),
)]
async fn metrics(State(app): State<Arc<App>>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        app.metrics(),
    )
}

/// Which servers' figures a status answers with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// The answering server's own figures: only its own row's seats in use
    /// and its own grants.
    #[default]
    Server,
    /// The whole pool's: the answering server asks every other server and
    /// merges their own figures; servers that did not answer are named in
    /// `unanswered`.
    Pool,
}

/// The status's query parameters.
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StatusQuery {
    /// `server` (the default) or `pool`.
    #[serde(default)]
    #[param(inline)]
    scope: Scope,
}

/// The status; grants (with their users and hosts) only for a caller with a
/// credential, unless the config makes them public.
#[utoipa::path(
    get,
    path = "/v1/status",
    tag = "monitoring",
    summary = "The answering server's status and the pool's, as it sees them",
    description = "Grants, users and hosts only for a token of role `read` or `admin` \
                   (or for anyone, with `public_status = \"full\"`). With `scope=pool` \
                   the answering server gathers every server's own figures (seats in use, \
                   grants, denials) into one answer, `pool_wide` true, and names in \
                   `unanswered` the servers that did not answer within a second.",
    params(StatusQuery),
    responses(
        (status = 200, description = "The status", body = proto::StatusResponse),
        Refusals<StatusRefusals>,
    ),
    security((), ("token" = [])),
)]
async fn status(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    query: Result<axum::extract::Query<StatusQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<proto::StatusResponse>, ApiError> {
    let axum::extract::Query(query) = query.map_err(|rejection| {
        api_error(
            ErrorCode::InvalidField,
            format!(
                "the query takes only scope=server or scope=pool: {}",
                rejection.body_text()
            ),
        )
    })?;
    // Grants are not even listed for a caller who may not see them: a
    // server may hold a million, and anyone may ask.
    let grants = if caller.reads_all() || app.public_status == PublicStatus::Full {
        Grants::Listed
    } else {
        Grants::Counted
    };
    Ok(Json(match query.scope {
        Scope::Server => app.status(grants),
        Scope::Pool => app.pool_status(grants).await,
    }))
}

struct StatusRefusals;

impl Refuses for StatusRefusals {
    const CODES: &'static [&'static [ErrorCode]] = &[EVERY_REQUEST, &[ErrorCode::InvalidField]];
}

/// The grant as the client is told of it; `app` is the server that issued
/// it. A master adds the certificate of its VID to a grant of its slots.
fn wire_grant(
    app: &App,
    Granted {
        issued: granted,
        proof,
        holding,
    }: Granted,
    holder: Option<&Holder>,
) -> proto::Grant {
    let certificate = app
        .master
        .as_ref()
        .zip(holder)
        .and_then(|(master, holder)| {
            master.certify(
                &granted.feature,
                &holder.server_id,
                &holder.instance,
                granted.terms.lease_ms,
                app.clock.unix_ms(),
                holder.server_key.as_deref(),
            )
        });
    proto::Grant {
        certificate,
        proof: proto::Proof(proof.to_string()),
        holding,
        grant_id: granted.grant_id,
        feature: granted.feature,
        count: granted.count,
        server_id: app.server_id.clone(),
        lease_ms: granted.terms.lease_ms,
        heartbeat_interval_ms: granted.terms.heartbeat_interval_ms,
        servers: granted.servers,
        converted: granted.origin == Origin::Conversion,
        answer: None,
    }
}

fn seat_request(body: CheckoutRequest, renewal: u64) -> Result<SeatRequest, ApiError> {
    let fields = [
        ("client_id", &body.client_id),
        ("user", &body.user),
        ("host", &body.host),
        ("feature", &body.feature),
        ("version", &body.version),
    ];
    for (name, value) in fields {
        check_field(name, value)?;
    }
    for (name, value) in [
        ("nonce", body.nonce.as_deref()),
        ("server_key", body.server_key.as_deref()),
        ("display", body.display.as_deref()),
    ] {
        if let Some(value) = value {
            check_field(name, value)?;
        }
    }
    if let Some(nonce) = &body.nonce {
        tessera_core::answer::check_nonce(nonce)
            .map_err(|message| api_error(ErrorCode::InvalidField, message))?;
    }
    if let Some(held) = &body.codes_held {
        tessera_core::answer::check_codes_sha256(held)
            .map_err(|message| api_error(ErrorCode::InvalidField, message))?;
    }
    let count = body.count;
    if count == 0 || count > MAX_SEATS_PER_REQUEST {
        return Err(api_error(
            ErrorCode::InvalidCount,
            format!("count is {count}; it must be 1 to {MAX_SEATS_PER_REQUEST}"),
        ));
    }
    Ok(SeatRequest {
        client_id: body.client_id,
        user: body.user,
        host: body.host,
        display: body.display,
        feature: body.feature,
        version: body.version,
        count,
        renewal,
    })
}

pub(super) fn check_field(name: &str, value: &str) -> Result<(), ApiError> {
    if value.is_empty() || value.len() > MAX_FIELD_BYTES {
        return Err(api_error(
            ErrorCode::InvalidField,
            format!(
                "{name} must be 1 to {MAX_FIELD_BYTES} bytes; it is {}",
                value.len()
            ),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(api_error(
            ErrorCode::InvalidField,
            format!("{name} contains control characters"),
        ));
    }
    Ok(())
}
