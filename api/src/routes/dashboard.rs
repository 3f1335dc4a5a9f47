//! `/api/dashboard/stats`.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use super::health::{SystemStatus, overall};
use super::now_ms;
use crate::{ApiError, ApiState};

/// The original design's dashboard numbers.
#[derive(Debug, Serialize, ToSchema)]
pub struct DashboardStats {
    /// Devices that reported within their offline threshold.
    pub active_devices: u64,
    /// Alerts firing or acknowledged.
    pub total_alerts: u64,
    /// Mean health score of the known devices.
    pub average_health_score: f64,
    /// `healthy`, `degraded` or `unhealthy` (see `/health/system`).
    pub system_status: SystemStatus,
}

/// Fleet-wide numbers for the dashboard.
#[utoipa::path(get, path = "/api/dashboard/stats", tag = "dashboard",
    responses((status = 200, body = DashboardStats)))]
pub async fn stats(State(state): State<ApiState>) -> Result<Json<DashboardStats>, ApiError> {
    let now = now_ms();
    let counters = state.cache.dashboard(now).await?;
    let (system_status, _) = overall(&state).await;
    // The processor refreshes the counters every second; none means it is not running
    // (or has seen nothing yet), which the status says.
    let counters = counters.unwrap_or(sensorfleet_backends::DashboardCounters {
        active_devices: 0,
        total_alerts: 0,
        average_health_score: 0.0,
    });
    Ok(Json(DashboardStats {
        active_devices: counters.active_devices,
        total_alerts: counters.total_alerts,
        average_health_score: counters.average_health_score,
        system_status,
    }))
}
