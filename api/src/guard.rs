//! What stands in front of every request, in order: who is asking and whether the route
//! lets them ([`crate::auth`]), the WebSocket's Origin, a rate limit per principal (per
//! client address for anonymous calls), security headers on every answer, and request
//! metrics.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::auth::{Access, Authenticator, Principal, Role};
use crate::{ApiError, ApiState, telemetry};

/// Most clients tracked by the rate limiter; beyond it the oldest are forgotten.
const MAX_TRACKED_CLIENTS: usize = 10_000;

/// Auth, Origin and rate-limit settings.
#[derive(Default)]
pub struct GuardConfig {
    /// API keys and JWT verification; empty: auth is off.
    pub auth: Authenticator,
    /// Requests per second each principal (or anonymous client address) may make, with a
    /// burst of twice that; 0 turns limiting off.
    pub rate_per_second: f64,
    /// Origins besides the API's own that may open the live feed from a browser, e.g.
    /// `https://grafana.example.com`.
    pub allowed_origins: Vec<String>,
    /// A header a trusted proxy (an ingress) sets to the client's address, e.g.
    /// `x-forwarded-for`: anonymous callers are then limited by its last address. None:
    /// by the connection's address (a header anyone can send is never trusted by default).
    pub client_ip_header: Option<HeaderName>,
}

/// Whom a rate-limit bucket belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Client {
    /// An authenticated principal, by name.
    Principal(String),
    /// An anonymous caller, by address.
    Address(IpAddr),
}

/// Rate-limit buckets, credentials and the Origin allow-list.
pub struct Guard {
    config: GuardConfig,
    buckets: Mutex<HashMap<Client, (f64, Instant)>>,
}

impl Guard {
    /// A guard with `config`.
    pub fn new(config: GuardConfig) -> Self {
        Self {
            config,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Whether auth is on.
    pub fn auth_is_on(&self) -> bool {
        self.config.auth.is_on()
    }

    /// Takes one token from `client`'s bucket; false when it is empty.
    pub fn admit(&self, client: &Client, now: Instant) -> bool {
        let rate = self.config.rate_per_second;
        if rate <= 0.0 {
            return true;
        }
        let burst = rate * 2.0;
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_TRACKED_CLIENTS && !buckets.contains_key(client) {
            // Full buckets are the same as forgotten ones: drop those first.
            buckets.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * rate < burst
            });
            if buckets.len() >= MAX_TRACKED_CLIENTS {
                buckets.clear();
            }
        }
        let (tokens, at) = buckets.entry(client.clone()).or_insert((burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * rate).min(burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// The address an anonymous caller is limited by: the configured proxy header's last
    /// entry (the one the proxy added), else the connection's.
    pub fn client_address(&self, headers: &HeaderMap, peer: Option<IpAddr>) -> Option<IpAddr> {
        let forwarded = self.config.client_ip_header.as_ref().and_then(|name| {
            headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .next_back()
                .and_then(|last| last.trim().parse().ok())
        });
        forwarded.or(peer)
    }

    /// Whether a browser page from `origin` may open the live feed of the API at `host`:
    /// its own origin, or one allowed by configuration. Clients that send no Origin are
    /// not browsers and need only their credential.
    pub fn origin_allowed(&self, origin: Option<&str>, host: Option<&str>) -> bool {
        let Some(origin) = origin else {
            return true;
        };
        let own = host.is_some_and(|host| {
            origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"))
                .is_some_and(|rest| rest.eq_ignore_ascii_case(host))
        });
        own || self
            .config
            .allowed_origins
            .iter()
            .any(|allowed| allowed.trim_end_matches('/').eq_ignore_ascii_case(origin))
    }
}

/// What the middleware needs: the handlers' state and each route's access.
#[derive(Clone)]
pub struct Gate {
    /// The handlers' state (the guard is in it).
    pub state: ApiState,
    /// Access by route pattern; a matched route missing here needs `admin` (fail closed).
    pub access: Arc<HashMap<&'static str, Access>>,
}

/// The middleware: auth, Origin, rate limit, headers, metrics.
pub async fn middleware(State(gate): State<Gate>, mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let access = match &route {
        Some(route) => gate
            .access
            .get(route.as_str())
            .copied()
            .unwrap_or(Access::Needs(Role::Admin)),
        None => Access::Public, // the fallback: 404
    };
    let guard = &gate.state.guard;
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let mut response = match guard.config.auth.admit(access, request.headers()).await {
        Err(refused) => {
            // Failed attempts count against the caller's address, which slows guessing.
            let address = guard.client_address(request.headers(), peer);
            if address.is_some_and(|ip| !guard.admit(&Client::Address(ip), started)) {
                limited()
            } else {
                refused.into_response()
            }
        }
        Ok(principal) => {
            let client = match &principal {
                Some(Principal { name, .. }) => Some(Client::Principal(name.clone())),
                None => guard
                    .client_address(request.headers(), peer)
                    .map(Client::Address),
            };
            let headers = request.headers();
            let is_upgrade = headers.contains_key(header::UPGRADE);
            let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
            let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
            if is_upgrade && !guard.origin_allowed(origin, host) {
                ApiError::forbidden(format!(
                    "pages from {} may not open the live feed; add the origin to the API's allowed origins",
                    origin.unwrap_or_default()
                ))
                .into_response()
            } else if client.is_some_and(|c| !guard.admit(&c, started)) {
                limited()
            } else {
                if let Some(principal) = principal {
                    request.extensions_mut().insert(principal);
                }
                next.run(request).await
            }
        }
    };
    secure_headers(response.headers_mut());
    telemetry::record(
        route.as_deref().unwrap_or("unmatched"),
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

fn limited() -> Response {
    ApiError::rate_limited("too many requests; slow down and retry in a second").into_response()
}

/// The dashboard loads only its own files and talks only to its own origin; no page may
/// frame it; browsers must not guess content types.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; connect-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn secure_headers(headers: &mut HeaderMap) {
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn rate_limit_allows_a_burst_then_refills() {
        let guard = Guard::new(GuardConfig {
            rate_per_second: 5.0,
            ..GuardConfig::default()
        });
        let ip = Client::Address("127.0.0.1".parse().unwrap());
        let t0 = Instant::now();
        let admitted = (0..20).filter(|_| guard.admit(&ip, t0)).count();
        assert_eq!(admitted, 10, "a burst of twice the rate");
        assert!(!guard.admit(&ip, t0));
        assert!(
            guard.admit(&ip, t0 + Duration::from_millis(250)),
            "refilled after 1/rate"
        );
        assert!(
            guard.admit(&Client::Address("::1".parse().unwrap()), t0),
            "buckets are per client"
        );
        assert!(
            guard.admit(&Client::Principal("ci".into()), t0),
            "a principal has its own bucket, wherever it calls from"
        );
    }

    #[test]
    fn the_forwarded_address_counts_only_when_configured() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("6.6.6.6, 10.1.2.3"),
        );
        let peer: IpAddr = "10.0.0.9".parse().unwrap();
        let default = Guard::new(GuardConfig::default());
        assert_eq!(default.client_address(&headers, Some(peer)), Some(peer));
        let behind = Guard::new(GuardConfig {
            client_ip_header: Some(HeaderName::from_static("x-forwarded-for")),
            ..GuardConfig::default()
        });
        assert_eq!(
            behind.client_address(&headers, Some(peer)),
            Some("10.1.2.3".parse().unwrap()),
            "the entry the proxy appended, not the one the client wrote"
        );
        assert_eq!(
            behind.client_address(&HeaderMap::new(), Some(peer)),
            Some(peer)
        );
    }

    #[test]
    fn only_the_own_and_allowed_origins_open_the_feed() {
        let guard = Guard::new(GuardConfig {
            allowed_origins: vec!["https://grafana.example.com/".into()],
            ..GuardConfig::default()
        });
        let host = Some("127.0.0.1:8080");
        assert!(guard.origin_allowed(None, host), "not a browser");
        assert!(guard.origin_allowed(Some("http://127.0.0.1:8080"), host));
        assert!(guard.origin_allowed(Some("https://grafana.example.com"), host));
        assert!(!guard.origin_allowed(Some("https://evil.example"), host));
        assert!(!guard.origin_allowed(Some("http://127.0.0.1:8080.evil.example"), host));
        assert!(!guard.origin_allowed(Some("null"), host));
    }
}
