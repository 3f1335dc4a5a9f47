//! `/api/ws`: live readings and alerts over a WebSocket, optionally for one device.
//!
//! Frames are JSON text: `{"type":"reading","data":{…reading…}}` and
//! `{"type":"alert","data":{…alert…}}`. A client too slow for the stream skips what it
//! missed (it is a live view; history is in `/history`) and is told so with
//! `{"type":"lagged","skipped":N}`.

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket};
use axum::extract::{Query, State, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use sensorfleet_backends::LiveEvent;
use sensorfleet_model::reading::is_valid_device_id;
use tokio::sync::broadcast::error::RecvError;

use super::Params;
use crate::{ApiError, ApiState, telemetry};

/// Most WebSocket clients at once.
const MAX_CLIENTS: i64 = 1000;

/// Upgrades to the live feed.
#[utoipa::path(get, path = "/api/ws", tag = "live",
    params(
        ("device" = Option<String>, Query, pattern = r"^[A-Za-z0-9._:-]{1,128}$", description = "Only this device's readings and alerts"),
        ("Connection" = String, Header, pattern = r"^[Uu]pgrade$", description = "The WebSocket handshake (RFC 6455): `Upgrade`"),
        ("Upgrade" = String, Header, pattern = r"^websocket$", description = "`websocket`"),
        ("Sec-WebSocket-Version" = String, Header, pattern = r"^13$", description = "`13`"),
        ("Sec-WebSocket-Key" = String, Header, pattern = r"^[A-Za-z0-9+/]{21}[AQgw]==$", description = "16 random bytes, base64"),
        ("Sec-WebSocket-Protocol" = Option<String>, Header, description = "`sensorfleet`, and `bearer.<credential>` where a browser cannot send Authorization"),
    ),
    responses((status = 101, description = "Switching to the WebSocket feed"),
              (status = 400, body = crate::error::ErrorBody, description = "A bad parameter, or not a WebSocket handshake"),
              (status = 426, body = crate::error::ErrorBody, description = "The connection cannot be upgraded (e.g. HTTP/2)")))]
pub async fn upgrade(
    State(state): State<ApiState>,
    Query(params): Query<Params>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => {
            return ApiError::not_a_websocket(
                rejection.status(),
                format!(
                    "{}: open /api/ws with a WebSocket client",
                    rejection.body_text()
                ),
            )
            .into_response();
        }
    };
    let device = params.get("device").map(str::to_owned);
    if let Some(id) = &device
        && !is_valid_device_id(id)
    {
        return ApiError::bad_parameter(format!("device {id:?} is not a valid device id"))
            .into_response();
    }
    if telemetry::WS_CLIENTS.get() >= MAX_CLIENTS {
        return ApiError::rate_limited(format!(
            "{MAX_CLIENTS} live clients are connected; try again later"
        ))
        .into_response();
    }
    ws.protocols([crate::auth::WS_PROTOCOL])
        .on_upgrade(move |socket| feed(socket, state, device))
}

fn frame(event: &LiveEvent, device: Option<&str>) -> Option<String> {
    let (kind, device_id, data) = match event {
        LiveEvent::Reading(r) => ("reading", r.device_id.as_str(), serde_json::to_value(&**r)),
        LiveEvent::Alert(a) => ("alert", a.device_id.as_str(), serde_json::to_value(&**a)),
    };
    if device.is_some_and(|d| d != device_id) {
        return None;
    }
    let data = data.ok()?;
    Some(serde_json::json!({"type": kind, "data": data}).to_string())
}

async fn feed(mut socket: WebSocket, state: ApiState, device: Option<String>) {
    telemetry::WS_CLIENTS.inc();
    let mut live = state.cache.live();
    loop {
        tokio::select! {
            event = live.recv() => {
                let text = match event {
                    Ok(event) => match frame(&event, device.as_deref()) {
                        Some(text) => text,
                        None => continue,
                    },
                    Err(RecvError::Lagged(skipped)) => serde_json::json!({"type": "lagged", "skipped": skipped}).to_string(),
                    Err(RecvError::Closed) => break,
                };
                if socket.send(Message::Text(text.into())).await.is_err() {
                    break;
                }
            }
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {} // pings are answered by the library; other input is ignored
            },
        }
    }
    telemetry::WS_CLIENTS.dec();
}
