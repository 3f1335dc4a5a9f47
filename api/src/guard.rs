//! What stands in front of every request: per-client rate limiting, bearer-token auth on
//! the endpoints that change something, and request metrics.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::Instant;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::{ApiError, ApiState, telemetry};

/// Most clients tracked by the rate limiter; beyond it the oldest are forgotten.
const MAX_TRACKED_CLIENTS: usize = 10_000;

/// Auth and rate-limit settings.
#[derive(Debug, Clone, Default)]
pub struct GuardConfig {
    /// When set, `POST` endpoints (acknowledge, clear) need `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// Requests per second each client IP may make (a burst of twice that is allowed);
    /// 0 turns limiting off.
    pub rate_per_second: f64,
}

/// Rate-limit buckets and the token.
pub struct Guard {
    config: GuardConfig,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl Guard {
    /// A guard with `config`.
    pub fn new(config: GuardConfig) -> Self {
        Self {
            config,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token from `ip`'s bucket; false when it is empty.
    pub fn admit(&self, ip: IpAddr, now: Instant) -> bool {
        let rate = self.config.rate_per_second;
        if rate <= 0.0 {
            return true;
        }
        let burst = rate * 2.0;
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_TRACKED_CLIENTS && !buckets.contains_key(&ip) {
            // Full buckets are the same as forgotten ones: drop those first.
            buckets.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * rate < burst
            });
            if buckets.len() >= MAX_TRACKED_CLIENTS {
                buckets.clear();
            }
        }
        let (tokens, at) = buckets.entry(ip).or_insert((burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * rate).min(burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Checks the bearer token of a request that changes something.
    pub fn authorize(&self, authorization: Option<&str>) -> Result<(), ApiError> {
        let Some(expected) = &self.config.token else {
            return Ok(());
        };
        match authorization.and_then(|h| h.strip_prefix("Bearer ")) {
            None => Err(ApiError::unauthorized(
                "this endpoint needs 'Authorization: Bearer <token>' (the --api-token the server was started with)",
            )),
            Some(given) if constant_time_eq(given.as_bytes(), expected.as_bytes()) => Ok(()),
            Some(_) => Err(ApiError::forbidden(
                "the bearer token is not the one this server accepts",
            )),
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The middleware: rate limit, auth for `POST`, then metrics by route and status.
pub async fn middleware(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    let client = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let response = if client.is_some_and(|ip| !state.guard.admit(ip, started)) {
        ApiError::rate_limited(
            "too many requests from this address; slow down and retry in a second",
        )
        .into_response()
    } else if request.method() == Method::POST {
        let authorization = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        match state.guard.authorize(authorization) {
            Ok(()) => next.run(request).await,
            Err(e) => e.into_response(),
        }
    } else {
        next.run(request).await
    };
    telemetry::record(&route, response.status().as_u16(), started.elapsed());
    response
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn rate_limit_allows_a_burst_then_refills() {
        let guard = Guard::new(GuardConfig {
            token: None,
            rate_per_second: 5.0,
        });
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let t0 = Instant::now();
        let admitted = (0..20).filter(|_| guard.admit(ip, t0)).count();
        assert_eq!(admitted, 10, "a burst of twice the rate");
        assert!(!guard.admit(ip, t0));
        assert!(
            guard.admit(ip, t0 + Duration::from_millis(250)),
            "refilled after 1/rate"
        );
        let other: IpAddr = "::1".parse().unwrap();
        assert!(guard.admit(other, t0), "buckets are per client");
    }

    #[test]
    fn token_auth_distinguishes_missing_from_wrong() {
        let guard = Guard::new(GuardConfig {
            token: Some("s3cret".into()),
            rate_per_second: 0.0,
        });
        assert_eq!(guard.authorize(None).unwrap_err().status(), 401);
        assert_eq!(
            guard.authorize(Some("Bearer nope")).unwrap_err().status(),
            403
        );
        assert!(guard.authorize(Some("Bearer s3cret")).is_ok());
        let open = Guard::new(GuardConfig::default());
        assert!(open.authorize(None).is_ok());
    }
}
