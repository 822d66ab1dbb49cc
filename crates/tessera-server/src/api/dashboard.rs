//! The web dashboard, `GET /dashboard`: one read-only page, its script and
//! its style sheet, compiled into the binary. The page asks
//! `/v1/status?scope=pool` of the server that served it every second and
//! draws the pool from the answer; it holds no state of the server's and
//! can change nothing.
//!
//! Who sees what is the status's rule: anyone gets the seat counts, a
//! token of role `read` or `admin` (given in the address's fragment,
//! `#token=...`, which browsers never send to the server, or typed into
//! the page) also users, hosts and the queue. The page keeps the token in
//! the tab's session storage and takes it out of the address bar.
//!
//! Every answer carries a strict content security policy: scripts and
//! styles only from this server, requests only to it, no frames. The
//! script writes what servers say as text, never as markup, so a user
//! name cannot inject anything into the page.

use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS};
use axum::http::HeaderName;
use axum::response::IntoResponse;

use super::openapi::{Monitoring, Refusals};

/// Where the page is served.
pub const DASHBOARD_PATH: &str = "/dashboard";

const PAGE: &str = include_str!("dashboard/index.html");
const SCRIPT: &str = include_str!("dashboard/app.js");
const STYLE: &str = include_str!("dashboard/style.css");

/// The policy every dashboard answer carries.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

fn served(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (CONTENT_TYPE, content_type),
            (
                HeaderName::from_static("content-security-policy"),
                CONTENT_SECURITY_POLICY,
            ),
            (X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (HeaderName::from_static("referrer-policy"), "no-referrer"),
            (CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

/// `GET /dashboard`.
#[utoipa::path(
    get,
    path = "/dashboard",
    tag = "monitoring",
    summary = "The web dashboard (read-only)",
    description = "A page that shows the pool live from `/v1/status?scope=pool`: servers and \
                   leader, each feature's seats in use against its hard limit over time, who \
                   holds seats, denials and the queue, allocations per server. Users and \
                   hosts need a token of role `read` or `admin`, given as `#token=...`.",
    responses(
        (status = 200, description = "The page", body = String, content_type = "text/html"),
        Refusals<Monitoring>,
    ),
)]
pub(super) async fn page() -> impl IntoResponse {
    served("text/html; charset=utf-8", PAGE)
}

/// `GET /dashboard/app.js`.
#[utoipa::path(
    get,
    path = "/dashboard/app.js",
    tag = "monitoring",
    summary = "The dashboard's script",
    responses(
        (status = 200, description = "The script", body = String,
         content_type = "text/javascript"),
        Refusals<Monitoring>,
    ),
)]
pub(super) async fn script() -> impl IntoResponse {
    served("text/javascript; charset=utf-8", SCRIPT)
}

/// `GET /dashboard/style.css`.
#[utoipa::path(
    get,
    path = "/dashboard/style.css",
    tag = "monitoring",
    summary = "The dashboard's style sheet",
    responses(
        (status = 200, description = "The style sheet", body = String, content_type = "text/css"),
        Refusals<Monitoring>,
    ),
)]
pub(super) async fn style() -> impl IntoResponse {
    served("text/css; charset=utf-8", STYLE)
}
