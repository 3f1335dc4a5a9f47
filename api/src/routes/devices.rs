//! `/api/devices`, `/api/device/{id}/latest`, `/api/device/{id}/history`.

use std::collections::{BTreeMap, HashMap};

use axum::Json;
use axum::extract::{Path, Query, State};
use sensorfleet_backends::HistoryQuery;
use sensorfleet_model::analytics::WindowStats;
use sensorfleet_model::reading::{format_ts, is_valid_device_id, is_valid_name};
use serde::Serialize;
use utoipa::ToSchema;

use super::{Params, now_ms};
use crate::{ApiError, ApiState};

/// One device in the list.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceSummary {
    /// Device id.
    pub device_id: String,
    /// Device type.
    pub device_type: String,
    /// Location.
    pub location: Option<String>,
    /// Health score in [0, 1], while the processor reports it (5 min TTL).
    pub health_score: Option<f64>,
    /// Time of the latest reading (RFC 3339).
    pub last_seen: Option<String>,
    /// `online`, `offline`, or `unknown` (never reported).
    pub status: String,
    /// Owning SensorFleet; none for a device that reported without being declared.
    pub fleet: Option<String>,
}

/// `GET /api/devices`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceList {
    /// The devices, by id.
    pub devices: Vec<DeviceSummary>,
}

/// `GET /api/device/{id}/latest`: the original design's fields plus every latest field.
#[derive(Debug, Serialize, ToSchema)]
pub struct Latest {
    /// Device id.
    pub device_id: String,
    /// Device type.
    pub device_type: String,
    /// Location.
    pub location: Option<String>,
    /// `temperature_celsius`, when the device measures it.
    pub temperature: Option<f64>,
    /// `humidity_percent`, when the device measures it.
    pub humidity: Option<f64>,
    /// Health score in [0, 1].
    pub health_score: Option<f64>,
    /// The device type's main field: the one `moving_average` and `window` follow.
    pub main_field: Option<String>,
    /// Moving average of the main field, for every device type (for temperature and
    /// humidity sensors also the original design's `device:{id}:avg_temp` / `:humidity`).
    pub moving_average: Option<f64>,
    /// Statistics of the main field over the processor's sliding window.
    pub window: Option<Window>,
    /// Time of the reading (RFC 3339).
    pub timestamp: String,
    /// Every field of the latest reading, by name.
    #[serde(flatten)]
    #[schema(additional_properties)]
    pub fields: BTreeMap<String, f64>,
}

/// The main field over the processor's sliding window (all 0 when it is empty).
#[derive(Debug, Serialize, ToSchema)]
pub struct Window {
    /// Readings in the window.
    pub count: u64,
    /// Their mean.
    pub mean: f64,
    /// The smallest.
    pub min: f64,
    /// The largest.
    pub max: f64,
    /// Population standard deviation.
    pub stddev: f64,
}

impl From<WindowStats> for Window {
    fn from(w: WindowStats) -> Self {
        Self {
            count: w.count,
            mean: w.mean,
            min: w.min,
            max: w.max,
            stddev: w.stddev,
        }
    }
}

/// One point of history.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryPoint {
    /// Time (RFC 3339); the hour's start for hourly data.
    pub timestamp: String,
    /// Field name.
    pub field: String,
    /// Value (hourly mean for hourly data).
    pub value: f64,
}

/// `GET /api/device/{id}/history`.
#[derive(Debug, Serialize, ToSchema)]
pub struct History {
    /// Points, ascending by time.
    pub data: Vec<HistoryPoint>,
    /// `raw` or `hourly`.
    pub resolution: String,
}

const MAX_HOURS: f64 = 24.0 * 366.0;
/// Past this range history comes from hourly rollups unless `resolution=raw`.
const RAW_HOURS: f64 = 48.0;
const DEFAULT_LIMIT: usize = 10_000;
const MAX_LIMIT: usize = 100_000;
/// Longest field name a reading can carry.
const MAX_FIELD_NAME: usize = 64;

/// A device's connectivity, as `status` filters it (the schema of the parameter).
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum DeviceStatus {
    /// Reported within its offline threshold.
    Online,
    /// Silent past it.
    Offline,
    /// Never reported.
    Unknown,
}

/// Raw readings or hourly rollups (the schema of `resolution`).
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum Resolution {
    /// Every stored reading.
    Raw,
    /// Hourly mean, min and max.
    Hourly,
}

/// Lists every device: declared ones and ones that reported.
#[utoipa::path(get, path = "/api/devices", tag = "devices",
    params(
        ("device_type" = Option<String>, Query, description = "Only devices of this type"),
        ("status" = Option<DeviceStatus>, Query, description = "Only `online`, `offline` or `unknown` devices"),
        ("limit" = Option<usize>, Query, minimum = 1, maximum = 100000, description = "At most this many (default 10000)"),
    ),
    responses((status = 200, body = DeviceList), (status = 400, body = crate::error::ErrorBody)))]
pub async fn list(
    State(state): State<ApiState>,
    Query(params): Query<Params>,
) -> Result<Json<DeviceList>, ApiError> {
    let limit = params.usize_in("limit", DEFAULT_LIMIT, 1, MAX_LIMIT)?;
    let type_filter = params.get("device_type");
    let status_filter = params.one_of("status", &["online", "offline", "unknown"])?;
    let now = now_ms();
    let registry = state.registry.devices().await?;
    let last_seen: HashMap<String, i64> = state.cache.last_seen().await?.into_iter().collect();
    let metrics: HashMap<String, _> = state
        .cache
        .all_metrics(now)
        .await?
        .into_iter()
        .map(|m| (m.device_id.clone(), m))
        .collect();
    let mut devices: Vec<DeviceSummary> = registry
        .into_iter()
        .map(|d| {
            let seen = last_seen.get(&d.device_id).copied();
            let metric = metrics.get(&d.device_id);
            let offline_after = d.offline_after_ms.unwrap_or(300_000);
            DeviceSummary {
                status: status_of(seen, metric.map(|m| m.status.as_str()), now, offline_after),
                health_score: metric.map(|m| m.health_score),
                last_seen: seen.map(format_ts),
                device_id: d.device_id,
                device_type: d.device_type,
                location: d.location,
                fleet: d.fleet,
            }
        })
        .filter(|d| type_filter.is_none_or(|t| d.device_type == t))
        .filter(|d| status_filter.is_none_or(|s| d.status == s))
        .collect();
    devices.truncate(limit);
    Ok(Json(DeviceList { devices }))
}

fn status_of(
    last_seen: Option<i64>,
    processor_says: Option<&str>,
    now: i64,
    offline_after_ms: i64,
) -> String {
    match (last_seen, processor_says) {
        (_, Some(status)) => status.to_owned(),
        (Some(seen), None) if now - seen <= offline_after_ms => "online".to_owned(),
        (Some(_), None) => "offline".to_owned(),
        (None, _) => "unknown".to_owned(),
    }
}

fn checked_id(id: &str) -> Result<(), ApiError> {
    if is_valid_device_id(id) {
        Ok(())
    } else {
        Err(ApiError::bad_parameter(format!(
            "device id {id:?} is not 1-128 characters of [A-Za-z0-9._:-]"
        )))
    }
}

/// The latest reading of one device, with its health score.
#[utoipa::path(get, path = "/api/device/{id}/latest", tag = "devices",
    params(("id" = String, Path, pattern = r"^[A-Za-z0-9._:-]{1,128}$", description = "Device id")),
    responses((status = 200, body = Latest), (status = 400, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody)))]
pub async fn latest(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Latest>, ApiError> {
    checked_id(&id)?;
    let Some(reading) = state.cache.latest(&id).await? else {
        let known = state.registry.device(&id).await?.is_some();
        return Err(ApiError::not_found(if known {
            format!("device {id:?} is declared but has not reported yet")
        } else {
            format!("no device {id:?}; GET /api/devices lists them")
        }));
    };
    let metrics = state.cache.metrics(&id, now_ms()).await?;
    Ok(Json(Latest {
        temperature: reading.field("temperature_celsius"),
        humidity: reading.field("humidity_percent"),
        health_score: metrics.as_ref().map(|m| m.health_score),
        main_field: metrics.as_ref().and_then(|m| m.main_field.clone()),
        moving_average: metrics.as_ref().and_then(|m| m.moving_average),
        window: metrics.as_ref().and_then(|m| m.window).map(Window::from),
        timestamp: reading.timestamp(),
        device_id: reading.device_id,
        device_type: reading.device_type,
        location: reading.location,
        fields: reading.fields,
    }))
}

/// The history of one device.
#[utoipa::path(get, path = "/api/device/{id}/history", tag = "devices",
    params(
        ("id" = String, Path, pattern = r"^[A-Za-z0-9._:-]{1,128}$", description = "Device id"),
        ("hours" = Option<f64>, Query, exclusive_minimum = 0, maximum = 8784, description = "How far back, in hours (default 24)"),
        ("field" = Option<String>, Query, pattern = r"^[A-Za-z0-9_]{1,64}$", description = "Only this field"),
        ("resolution" = Option<Resolution>, Query, description = "`raw` or `hourly`; default raw up to 48 h, hourly beyond"),
        ("limit" = Option<usize>, Query, minimum = 1, maximum = 100000, description = "At most this many points, newest kept (default 10000)"),
    ),
    responses((status = 200, body = History), (status = 400, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody)))]
pub async fn history(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Query(params): Query<Params>,
) -> Result<Json<History>, ApiError> {
    checked_id(&id)?;
    let hours = params.f64_in("hours", 24.0, 0.0, MAX_HOURS)?;
    let limit = params.usize_in("limit", DEFAULT_LIMIT, 1, MAX_LIMIT)?;
    let field = params.get("field").map(str::to_owned);
    if let Some(name) = &field
        && !is_valid_name(name, MAX_FIELD_NAME)
    {
        return Err(ApiError::bad_parameter(format!(
            "field must be 1-{MAX_FIELD_NAME} characters of [A-Za-z0-9_], got {name:?}"
        )));
    }
    let resolution = params
        .one_of("resolution", &["raw", "hourly"])?
        .unwrap_or(if hours > RAW_HOURS { "hourly" } else { "raw" });
    if state.cache.latest(&id).await?.is_none() && state.registry.device(&id).await?.is_none() {
        return Err(ApiError::not_found(format!(
            "no device {id:?}; GET /api/devices lists them"
        )));
    }
    let now = now_ms();
    let points = state
        .series
        .history(&HistoryQuery {
            device_id: id,
            since_ms: now - (hours * 3_600_000.0) as i64,
            until_ms: now + 300_000, // readings stamped slightly ahead by a fast device clock
            field,
            limit,
            rollup: resolution == "hourly",
        })
        .await?;
    Ok(Json(History {
        data: points
            .into_iter()
            .map(|p| HistoryPoint {
                timestamp: format_ts(p.ts_ms),
                field: p.field,
                value: p.value,
            })
            .collect(),
        resolution: resolution.to_owned(),
    }))
}
