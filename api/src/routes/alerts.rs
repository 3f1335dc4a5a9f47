//! `/api/alerts` and acknowledging or clearing one.

use axum::Json;
use axum::extract::{Path, Query, State};
use sensorfleet_model::Alert;
use serde::Serialize;
use utoipa::ToSchema;

use super::Params;
use crate::{ApiError, ApiState};

/// `GET /api/alerts`.
#[derive(Debug, Serialize, ToSchema)]
pub struct AlertList {
    /// Alerts, newest first; each alert id once, in its latest state.
    #[schema(value_type = Vec<Object>)]
    pub alerts: Vec<Alert>,
}

/// Recent alerts, newest first.
/// Which alerts `state` selects (the schema of the parameter).
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum StateFilter {
    /// Firing, not acknowledged.
    Firing,
    /// Acknowledged, still active.
    Acknowledged,
    /// Resolved, by itself or by hand.
    Resolved,
    /// Firing or acknowledged.
    Active,
}

#[utoipa::path(get, path = "/api/alerts", tag = "alerts",
    params(
        ("limit" = Option<usize>, Query, minimum = 1, maximum = 1000, description = "At most this many (default 100)"),
        ("state" = Option<StateFilter>, Query, description = "Only `firing`, `acknowledged`, `resolved` or `active` (firing or acknowledged)"),
        ("device_id" = Option<String>, Query, description = "Only this device's alerts"),
    ),
    responses((status = 200, body = AlertList), (status = 400, body = crate::error::ErrorBody)))]
pub async fn list(
    State(state): State<ApiState>,
    Query(params): Query<Params>,
) -> Result<Json<AlertList>, ApiError> {
    let limit = params.usize_in("limit", 100, 1, 1000)?;
    let wanted = params.one_of("state", &["firing", "acknowledged", "resolved", "active"])?;
    let device = params.get("device_id");
    // The registry keeps the history; a filter may need more than `limit` rows of it.
    let fetch = if wanted.is_some() || device.is_some() {
        10_000
    } else {
        limit
    };
    let alerts = state
        .registry
        .alerts(fetch)
        .await?
        .into_iter()
        .filter(|a| device.is_none_or(|d| a.device_id == d))
        .filter(|a| match wanted {
            None => true,
            Some("active") => matches!(a.state.as_str(), "firing" | "acknowledged"),
            Some(state) => a.state.as_str() == state,
        })
        .take(limit)
        .collect();
    Ok(Json(AlertList { alerts }))
}

/// Acknowledges a firing alert: it stays until its condition clears, without notifying again.
#[utoipa::path(post, path = "/api/alerts/{id}/ack", tag = "alerts",
    params(("id" = String, Path, description = "Alert id (URL-encoded)")),
    responses((status = 200, body = Object), (status = 401, body = crate::error::ErrorBody),
              (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)))]
pub async fn acknowledge(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Alert>, ApiError> {
    let control = control(&state)?;
    answer(control.acknowledge(&id).await, &id)
}

/// Clears an alert by hand: it resolves now, and fires again if its condition persists.
#[utoipa::path(post, path = "/api/alerts/{id}/clear", tag = "alerts",
    params(("id" = String, Path, description = "Alert id (URL-encoded)")),
    responses((status = 200, body = Object), (status = 401, body = crate::error::ErrorBody),
              (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)))]
pub async fn clear(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Alert>, ApiError> {
    let control = control(&state)?;
    answer(control.clear(&id).await, &id)
}

fn control(state: &ApiState) -> Result<std::sync::Arc<dyn crate::AlertControl>, ApiError> {
    state.control.clone().ok_or_else(|| {
        ApiError::unavailable(
            "this API process runs no processor; send the request to one that does",
        )
    })
}

fn answer(result: Result<Option<Alert>, String>, id: &str) -> Result<Json<Alert>, ApiError> {
    match result {
        Ok(Some(alert)) => Ok(Json(alert)),
        Ok(None) => Err(ApiError::not_found(format!(
            "no active alert {id:?}; GET /api/alerts?state=active lists them"
        ))),
        Err(e) => Err(ApiError::unavailable(e)),
    }
}
