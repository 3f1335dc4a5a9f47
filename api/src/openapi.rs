//! The OpenAPI document, generated from the handler annotations and response types; the
//! committed copy in `api/openapi.json` is checked against it by a test.

use axum::Json;
use utoipa::OpenApi;

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
        ErrorBody, devices::DeviceList, devices::DeviceSummary, devices::Latest, devices::Window, devices::History,
        devices::HistoryPoint, alerts::AlertList, dashboard::DashboardStats, health::SystemStatus,
        health::ServiceHealth, health::ServicesHealth, health::DevicesHealth, health::SystemHealth,
    )),
    tags(
        (name = "devices", description = "Devices, latest readings and history"),
        (name = "alerts", description = "Alerts and their lifecycle"),
        (name = "dashboard", description = "Fleet-wide numbers"),
        (name = "live", description = "WebSocket feed"),
        (name = "health", description = "Health, readiness and metrics"),
    )
)]
pub struct ApiDoc;

/// The document as pretty JSON (what `api/openapi.json` holds).
pub fn document() -> String {
    ApiDoc::openapi().to_pretty_json().unwrap_or_default()
}

/// `GET /api/openapi.json`.
pub async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
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
