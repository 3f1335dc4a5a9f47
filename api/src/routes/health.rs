//! `/health/devices`, `/health/services`, `/health/system`, and the probes
//! `/health/live` and `/health/ready` for Kubernetes.

use std::collections::HashMap;
use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use super::now_ms;
use crate::{ApiError, ApiState};

/// Overall status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SystemStatus {
    /// Everything answers and the processor reports.
    Healthy,
    /// Storage answers, but a component is down or the processor is silent.
    Degraded,
    /// A store does not answer.
    Unhealthy,
}

/// One backend or component.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ServiceHealth {
    /// Concern, e.g. `time_series`, `registry`, `cache`, `mqtt`, `processor`.
    pub name: String,
    /// What implements it, e.g. `sqlite`, `memory`, `embedded`.
    pub backend: String,
    /// `up` or `down`.
    pub status: String,
    /// How long the probe took, milliseconds.
    pub latency_ms: Option<f64>,
    /// What went wrong, when down.
    pub detail: Option<String>,
}

/// `GET /health/services`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServicesHealth {
    /// Overall status.
    pub status: SystemStatus,
    /// Each backend and component.
    pub services: Vec<ServiceHealth>,
}

/// Device connectivity counts.
#[derive(Debug, Serialize, ToSchema)]
pub struct DevicesHealth {
    /// Known devices.
    pub total: u64,
    /// Reported within their offline threshold.
    pub online: u64,
    /// Silent past their offline threshold.
    pub offline: u64,
    /// Declared but never reported.
    pub unknown: u64,
    /// Up to 100 offline device ids.
    pub offline_devices: Vec<String>,
}

/// `GET /health/system`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SystemHealth {
    /// Overall status.
    pub status: SystemStatus,
    /// Version of this binary.
    pub version: String,
    /// Seconds since the process started.
    pub uptime_seconds: u64,
    /// Each backend and component.
    pub services: Vec<ServiceHealth>,
    /// Device connectivity.
    pub devices: DevicesHealth,
}

async fn probe<T, E: std::fmt::Display>(
    name: &str,
    backend: &str,
    call: impl std::future::Future<Output = Result<T, E>>,
) -> ServiceHealth {
    let started = Instant::now();
    let result = tokio::time::timeout(std::time::Duration::from_secs(2), call).await;
    let latency_ms = Some((started.elapsed().as_secs_f64() * 1e6).round() / 1e3);
    let (status, detail) = match result {
        Ok(Ok(_)) => ("up", None),
        Ok(Err(e)) => ("down", Some(e.to_string())),
        Err(_) => ("down", Some("no answer within 2 s".to_owned())),
    };
    ServiceHealth {
        name: name.to_owned(),
        backend: backend.to_owned(),
        status: status.to_owned(),
        latency_ms,
        detail,
    }
}

/// Probes every store and component; the overall status follows from them.
pub async fn overall(state: &ApiState) -> (SystemStatus, Vec<ServiceHealth>) {
    let now = now_ms();
    let (series, registry, cache) = tokio::join!(
        probe(
            "time_series",
            state.series.name(),
            state.series.count("", 0, 1)
        ),
        probe("registry", state.registry.name(), state.registry.alert("")),
        probe("cache", state.cache.name(), state.cache.dashboard(now)),
    );
    let mut services = vec![series, registry, cache];
    let stores_up = services.iter().all(|s| s.status == "up");
    for component in (state.probe)() {
        services.push(ServiceHealth {
            name: component.name,
            backend: component.backend,
            status: if component.up { "up" } else { "down" }.to_owned(),
            latency_ms: None,
            detail: (!component.up).then_some(component.detail),
        });
    }
    let status = if !stores_up {
        SystemStatus::Unhealthy
    } else if services.iter().any(|s| s.status != "up") {
        SystemStatus::Degraded
    } else {
        SystemStatus::Healthy
    };
    (status, services)
}

fn code_of(status: SystemStatus) -> StatusCode {
    if status == SystemStatus::Unhealthy {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    }
}

/// Backend and component status; 503 when a store does not answer.
#[utoipa::path(get, path = "/health/services", tag = "health",
    responses((status = 200, body = ServicesHealth), (status = 503, body = ServicesHealth)))]
pub async fn services(State(state): State<ApiState>) -> (StatusCode, Json<ServicesHealth>) {
    let (status, services) = overall(&state).await;
    (code_of(status), Json(ServicesHealth { status, services }))
}

async fn device_health(state: &ApiState) -> Result<DevicesHealth, ApiError> {
    let now = now_ms();
    let devices = state.registry.devices().await?;
    let seen: HashMap<String, i64> = state.cache.last_seen().await?.into_iter().collect();
    let mut health = DevicesHealth {
        total: devices.len() as u64,
        online: 0,
        offline: 0,
        unknown: 0,
        offline_devices: Vec::new(),
    };
    for device in devices {
        match seen.get(&device.device_id) {
            None => health.unknown += 1,
            Some(&t) if now - t <= device.offline_after_ms.unwrap_or(300_000) => health.online += 1,
            Some(_) => {
                health.offline += 1;
                if health.offline_devices.len() < 100 {
                    health.offline_devices.push(device.device_id);
                }
            }
        }
    }
    Ok(health)
}

/// Device connectivity.
#[utoipa::path(get, path = "/health/devices", tag = "health",
    responses((status = 200, body = DevicesHealth)))]
pub async fn devices(State(state): State<ApiState>) -> Result<Json<DevicesHealth>, ApiError> {
    Ok(Json(device_health(&state).await?))
}

/// Overall health: services, devices, version and uptime; 503 when unhealthy.
#[utoipa::path(get, path = "/health/system", tag = "health",
    responses((status = 200, body = SystemHealth), (status = 503, body = SystemHealth)))]
pub async fn system(
    State(state): State<ApiState>,
) -> Result<(StatusCode, Json<SystemHealth>), ApiError> {
    let (status, services) = overall(&state).await;
    let devices = device_health(&state).await?;
    Ok((
        code_of(status),
        Json(SystemHealth {
            status,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_seconds: state.started.elapsed().as_secs(),
            services,
            devices,
        }),
    ))
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/health/live", tag = "health", responses((status = 200, body = Object)))]
pub async fn live() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "alive"}))
}

/// Readiness: the stores answer.
#[utoipa::path(get, path = "/health/ready", tag = "health", responses((status = 200, body = Object), (status = 503, body = Object)))]
pub async fn ready(State(state): State<ApiState>) -> (StatusCode, Json<serde_json::Value>) {
    let (status, _) = overall(&state).await;
    let ready = status != SystemStatus::Unhealthy;
    (
        if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        Json(serde_json::json!({"ready": ready})),
    )
}
