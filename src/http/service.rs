//! Health, readiness, the OpenAPI document and the offline API reference page.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::{Config, SwaggerUi};

use super::Json;
use crate::AppState;
use crate::auth::credentials::Credentials;
use crate::crypto;
use crate::error::{Error, Result};

/// The committed document (`openapi/openapi.json`); a test keeps it equal to the generated one.
pub const OPENAPI_JSON: &str = include_str!("../../openapi/openapi.json");

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
        .routes(routes!(openapi_json))
}

/// `/dashboard`: the operator web app, built into the binary. It uses only the public API.
pub fn dashboard_router() -> axum::Router<AppState> {
    use axum::routing::get;
    fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse + Clone {
        (
            [
                (header::CONTENT_TYPE, content_type),
                (header::CACHE_CONTROL, "no-cache"),
                // Only this server's own scripts, styles and API: no inline code, no third parties.
                (
                    header::CONTENT_SECURITY_POLICY,
                    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
                ),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                (header::REFERRER_POLICY, "no-referrer"),
            ],
            body,
        )
    }
    let index = asset("text/html; charset=utf-8", include_str!("../../dashboard/index.html"));
    axum::Router::new()
        // The root has nothing of its own: send people to the dashboard.
        .route("/", get(|| async { axum::response::Redirect::to("/dashboard") }))
        .route("/dashboard", get(index.clone()))
        .route("/dashboard/", get(index))
        .route(
            "/dashboard/app.js",
            get(asset(
                "text/javascript; charset=utf-8",
                include_str!("../../dashboard/app.js"),
            )),
        )
        .route(
            "/dashboard/dom.js",
            get(asset(
                "text/javascript; charset=utf-8",
                include_str!("../../dashboard/dom.js"),
            )),
        )
        .route(
            "/dashboard/tools.js",
            get(asset(
                "text/javascript; charset=utf-8",
                include_str!("../../dashboard/tools.js"),
            )),
        )
        .route(
            "/dashboard/webhooks.js",
            get(asset(
                "text/javascript; charset=utf-8",
                include_str!("../../dashboard/webhooks.js"),
            )),
        )
        .route(
            "/dashboard/app.css",
            get(asset(
                "text/css; charset=utf-8",
                include_str!("../../dashboard/app.css"),
            )),
        )
}

/// `/docs`: Swagger UI with its assets built into the binary, reading `/openapi.json`.
pub fn docs_router() -> axum::Router<AppState> {
    SwaggerUi::new("/docs").config(Config::new(["/openapi.json"])).into()
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok`
    pub status: &'static str,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "service", responses((status = 200, description = "Up", body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// The database answers.
#[utoipa::path(
    get, path = "/readyz", tag = "service",
    responses((status = 200, description = "Ready", body = Health))
)]
async fn readyz(State(state): State<AppState>) -> Result<Json<Health>> {
    if state.db().ping().await {
        Ok(Json(Health { status: "ok" }))
    } else {
        Err(Error::Unavailable)
    }
}

/// Prometheus metrics (text exposition format): requests by status class, request latency,
/// completion replies by status, database connections.
#[utoipa::path(
    get, path = "/metrics", tag = "service",
    security((), ("metrics_token" = [])),
    responses(
        (status = 200, description = "Prometheus text format", content_type = "text/plain; version=0.0.4", body = String),
        (status = 401, description = "`missing_credentials` / `invalid_token`: the server requires `CONFIDANT_METRICS_TOKEN` and it was not sent", body = crate::error::ErrorBody),
    )
)]
async fn metrics(State(state): State<AppState>, headers: axum::http::HeaderMap) -> Result<impl IntoResponse> {
    if let Some(expected) = &state.settings().metrics_token {
        let sent = Credentials::read(&headers)
            .user_token()?
            .ok_or_else(|| Error::MissingCredentials("send Authorization: Bearer <CONFIDANT_METRICS_TOKEN>".into()))?;
        if !crypto::constant_time_eq(sent.as_bytes(), expected.expose().as_bytes()) {
            return Err(Error::unauthorized("invalid_token", "the metrics token is wrong"));
        }
    }
    let body = state.metrics().render(&state.db().pool_state());
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        body,
    ))
}

/// This API's OpenAPI 3.1 document.
#[utoipa::path(
    get, path = "/openapi.json", tag = "service",
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json", body = Object))
)]
async fn openapi_json() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON)
}
