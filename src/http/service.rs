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

/// The dashboard's files, built into the binary: (path under `dashboard/`, content type, body).
macro_rules! dashboard_assets {
    ($($path:literal),* $(,)?) => {
        &[$(($path, asset_type($path), include_str!(concat!("../../dashboard/", $path)))),*]
    };
}

const fn asset_type(path: &str) -> &'static str {
    let bytes = path.as_bytes();
    match bytes[bytes.len() - 1] {
        b's' if bytes[bytes.len() - 2] == b's' => "text/css; charset=utf-8",
        b's' => "text/javascript; charset=utf-8",
        _ => "text/html; charset=utf-8",
    }
}

/// Every file of the dashboard (a test checks that none in `dashboard/` is missing).
const DASHBOARD: &[(&str, &str, &str)] = dashboard_assets!(
    "index.html",
    "app.css",
    "app.js",
    "api.js",
    "chart.js",
    "dom.js",
    "router.js",
    "ui.js",
    "pages/agent.js",
    "pages/agents.js",
    "pages/common.js",
    "pages/conversations.js",
    "pages/keys.js",
    "pages/members.js",
    "pages/overview.js",
    "pages/providers.js",
    "pages/settings.js",
    "pages/tools.js",
    "pages/try.js",
    "pages/users.js",
    "pages/webhooks.js",
);

/// `/dashboard`: the operator web app, built into the binary. It uses only the public API.
pub fn dashboard_router() -> axum::Router<AppState> {
    use axum::extract::Path;
    use axum::routing::get;
    fn asset(content_type: &'static str, body: &'static str) -> axum::response::Response {
        (
            [
                (header::CONTENT_TYPE, content_type),
                (header::CACHE_CONTROL, "no-cache"),
                // Only this server's own scripts, styles and API: no inline code, no third parties.
                (
                    header::CONTENT_SECURITY_POLICY,
                    "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
                ),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                (header::REFERRER_POLICY, "no-referrer"),
            ],
            body,
        )
            .into_response()
    }
    fn file(path: &str) -> axum::response::Response {
        match DASHBOARD.iter().find(|(name, _, _)| *name == path) {
            Some((_, content_type, body)) => asset(content_type, body),
            None => (axum::http::StatusCode::NOT_FOUND, "no such dashboard file").into_response(),
        }
    }
    axum::Router::new()
        // The root has nothing of its own: send people to the dashboard.
        .route("/", get(|| async { axum::response::Redirect::to("/dashboard") }))
        .route("/dashboard", get(|| async { file("index.html") }))
        .route("/dashboard/", get(|| async { file("index.html") }))
        .route(
            "/dashboard/{*path}",
            get(|Path(path): Path<String>| async move { file(&path) }),
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
/// completion replies by status, tool calls, database connections, provider calls running and the
/// provider lanes carrying them.
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
    let lanes = state.provider_lanes();
    let db = state.db();
    let body = state.metrics().render(
        (&db.pool_state(), db.combined_reads(), db.combined_writes()),
        (lanes.lanes(), lanes.running()),
    );
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

#[cfg(test)]
mod tests {
    use super::DASHBOARD;

    fn files(dir: &std::path::Path, root: &std::path::Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files(&path, root, out);
            } else {
                out.push(path.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/"));
            }
        }
    }

    #[test]
    fn every_dashboard_file_is_served_with_its_type() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboard");
        let mut on_disk = Vec::new();
        files(&root, &root, &mut on_disk);
        on_disk.sort();
        let mut served: Vec<String> = DASHBOARD.iter().map(|(name, _, _)| (*name).to_owned()).collect();
        served.sort();
        assert_eq!(
            served, on_disk,
            "add new dashboard files to DASHBOARD in src/http/service.rs"
        );
        for (name, content_type, _) in DASHBOARD {
            let want = match name.rsplit('.').next() {
                Some("js") => "text/javascript",
                Some("css") => "text/css",
                _ => "text/html",
            };
            assert!(content_type.starts_with(want), "{name}: {content_type}");
        }
    }
}
