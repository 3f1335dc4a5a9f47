//! The OpenAPI document, generated from the handler annotations and response types; the
//! committed copy in `api/openapi.json` is checked against it by a test.

use axum::Json;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Content, Ref, RefOr, Response};
use utoipa::{Modify, OpenApi};

use crate::auth::Access;
use crate::error::ErrorBody;
use crate::routes::{alerts, dashboard, devices, health, live, metrics};

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(title = "SensorFleet API", description = "Devices, readings, history, alerts, dashboard numbers and health of a SensorFleet platform."),
    paths(
        devices::list, devices::latest, devices::history,
        alerts::list, alerts::acknowledge, alerts::clear,
        dashboard::stats, live::upgrade,
        health::devices, health::services, health::system, health::live, health::ready,
        metrics::serve,
    ),
    components(schemas(
        ErrorBody, devices::DeviceStatus, devices::Resolution, alerts::StateFilter, devices::DeviceList, devices::DeviceSummary, devices::Latest, devices::Window, devices::History,
        devices::HistoryPoint, alerts::AlertList, dashboard::DashboardStats, health::SystemStatus,
        health::ServiceHealth, health::ServicesHealth, health::DevicesHealth, health::SystemHealth,
    )),
    modifiers(&Guarded),
    tags(
        (name = "devices", description = "Devices, latest readings and history"),
        (name = "alerts", description = "Alerts and their lifecycle"),
        (name = "dashboard", description = "Fleet-wide numbers"),
        (name = "live", description = "WebSocket feed"),
        (name = "health", description = "Health, readiness and metrics"),
    )
)]
pub struct ApiDoc;

/// States what the guard in front of every route does, from the same table the router
/// is built with ([`crate::routes`]): the bearer scheme, a route's 401 and 403 when it
/// needs a credential, and the 429 of the rate limit on every route.
struct Guarded;

impl Modify for Guarded {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.description = Some(
            "An API key or a JWT (when the server has auth on: --api-keys, --api-token, --jwt-secret, --jwt-jwks-url)".into(),
        );
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
        let access = crate::routes().access;
        let error = |description: &str| -> RefOr<Response> {
            let mut response = Response::new(description);
            response.content.insert(
                "application/json".into(),
                RefOr::T(Content::new(Some(Ref::from_schema_name("ErrorBody")))),
            );
            RefOr::T(response)
        };
        for (path, item) in openapi.paths.paths.iter_mut() {
            let needs = access.get(path.as_str()).copied();
            for operation in [&mut item.get, &mut item.post].into_iter().flatten() {
                let answers = &mut operation.responses.responses;
                if let Some(Access::Needs(role)) = needs {
                    operation.security = Some(vec![SecurityRequirement::new(
                        "bearer",
                        Vec::<String>::new(),
                    )]);
                    answers.insert(
                        "401".into(),
                        error("No credential, or one this server does not accept (auth on)"),
                    );
                    answers.insert(
                        "403".into(),
                        error(&format!("The credential's role is below {role}")),
                    );
                }
                answers.insert(
                    "429".into(),
                    error("Too many requests from this principal or address (--rate-limit)"),
                );
            }
        }
    }
}

/// The document as pretty JSON (what `api/openapi.json` holds).
pub fn document() -> String {
    ApiDoc::openapi().to_pretty_json().unwrap_or_default()
}

/// `GET /api/openapi.json`: generated once (the modifier walks the route table), then
/// served from memory.
pub async fn serve() -> Json<&'static utoipa::openapi::OpenApi> {
    static DOCUMENT: std::sync::OnceLock<utoipa::openapi::OpenApi> = std::sync::OnceLock::new();
    Json(DOCUMENT.get_or_init(ApiDoc::openapi))
}

#[cfg(test)]
mod tests {
    #[test]
    fn committed_document_matches_the_types() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json");
        let generated = super::document();
        if std::env::var_os("SENSORFLEET_BLESS").is_some() {
            std::fs::write(path, &generated).expect("write openapi.json");
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == generated,
            "api/openapi.json drifted from the API types; regenerate with SENSORFLEET_BLESS=1 cargo test -p sensorfleet-api openapi"
        );
    }
}
