//! Who is asking, and what they may do.
//!
//! A request names its principal with `Authorization: Bearer <credential>` (or, for the
//! WebSocket, which browsers cannot give headers, the subprotocol `bearer.<credential>`
//! next to `sensorfleet`). A credential is an API key ([`keys`]) or a JWT ([`jwt`]: HS256
//! with a shared secret, RS256/ES256 against an OIDC provider's JWKS). Cookies are never
//! read, so a page on another site cannot make a browser act for its user (no CSRF).
//!
//! Every route declares its [`Access`] where it is added to the router; when no
//! credential source is configured, auth is off and every route is open.

pub mod jwt;
pub mod keys;

use std::fmt;

use axum::http::{HeaderMap, header};

use crate::ApiError;

/// What a principal may do; each role can do everything the ones below it can.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Every read, the live feed and `/metrics`.
    Viewer,
    /// A viewer that may also acknowledge and clear alerts.
    Operator,
    /// Everything.
    Admin,
}

impl Role {
    /// Every role, lowest first.
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Operator, Role::Admin];

    /// The role's name as configured and shown: `viewer`, `operator`, `admin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    /// Parses a role name.
    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == text.trim())
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone: the dashboard's files, the OpenAPI document, the liveness and readiness
    /// probes (which say only up or down).
    Public,
    /// A principal with at least this role (when auth is on).
    Needs(Role),
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The API key's name or the token's `sub`.
    pub name: String,
    /// What it may do.
    pub role: Role,
}

/// Where credentials are checked; empty means auth is off.
#[derive(Default)]
pub struct Authenticator {
    keys: keys::ApiKeys,
    jwt: Option<jwt::JwtVerifier>,
}

impl Authenticator {
    /// Checks API keys and, when given, JWTs.
    pub fn new(keys: keys::ApiKeys, jwt: Option<jwt::JwtVerifier>) -> Self {
        Self { keys, jwt }
    }

    /// Whether any credential source is configured.
    pub fn is_on(&self) -> bool {
        !self.keys.is_empty() || self.jwt.is_some()
    }

    /// The principal a credential stands for.
    pub async fn principal(&self, credential: &str) -> Result<Principal, ApiError> {
        if let Some(principal) = self.keys.find(credential) {
            return Ok(principal);
        }
        match &self.jwt {
            Some(jwt) if jwt::looks_like_jwt(credential) => jwt.verify(credential).await,
            _ => Err(ApiError::unauthorized(
                "the credential is not a known API key (nor a JWT this server verifies); check the key or get a new token",
            )),
        }
    }

    /// Decides whether a request with `headers` may call a route needing `access`:
    /// `Ok(None)` for an anonymous call that is allowed, `Ok(Some(p))` for an
    /// authenticated one, an error (401 or 403) otherwise.
    pub async fn admit(
        &self,
        access: Access,
        headers: &HeaderMap,
    ) -> Result<Option<Principal>, ApiError> {
        let given = credential(headers);
        if !self.is_on() || (access == Access::Public && given.is_none()) {
            return Ok(None);
        }
        let Some(given) = given else {
            return Err(ApiError::unauthorized(
                "this endpoint needs 'Authorization: Bearer <API key or token>'",
            ));
        };
        let principal = self.principal(given).await?;
        match access {
            Access::Needs(role) if principal.role < role => Err(ApiError::forbidden(format!(
                "{} has the role {}; this endpoint needs {role} or above",
                principal.name, principal.role
            ))),
            _ => Ok(Some(principal)),
        }
    }
}

/// The WebSocket subprotocol the live feed speaks; a browser offers it beside
/// `bearer.<credential>`, and the server answers with it.
pub const WS_PROTOCOL: &str = "sensorfleet";

/// The credential a request carries: the bearer token, or the WebSocket subprotocol
/// `bearer.<credential>`.
pub fn credential(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    bearer.or_else(|| {
        headers
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .find_map(|p| p.trim().strip_prefix("bearer."))
    })
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn authenticator() -> Authenticator {
        let keys = keys::ApiKeys::parse(
            "watch=viewer:viewer-key-0123456789,ops=operator:operator-key-0123456789",
        )
        .unwrap();
        Authenticator::new(keys, None)
    }

    #[tokio::test]
    async fn roles_are_checked_against_what_the_route_needs() {
        let auth = authenticator();
        let viewer = headers(&[(header::AUTHORIZATION, "Bearer viewer-key-0123456789")]);
        let ops = headers(&[(header::AUTHORIZATION, "Bearer operator-key-0123456789")]);
        let none = HeaderMap::new();
        let wrong = headers(&[(header::AUTHORIZATION, "Bearer nope")]);
        let read = Access::Needs(Role::Viewer);
        let ack = Access::Needs(Role::Operator);
        assert_eq!(
            auth.admit(read, &viewer).await.unwrap().unwrap().name,
            "watch"
        );
        assert_eq!(auth.admit(ack, &viewer).await.unwrap_err().status(), 403);
        assert_eq!(
            auth.admit(ack, &ops).await.unwrap().unwrap().role,
            Role::Operator
        );
        assert_eq!(auth.admit(read, &none).await.unwrap_err().status(), 401);
        assert_eq!(auth.admit(read, &wrong).await.unwrap_err().status(), 401);
        assert_eq!(auth.admit(Access::Public, &none).await.unwrap(), None);
        assert_eq!(
            auth.admit(Access::Public, &wrong)
                .await
                .unwrap_err()
                .status(),
            401,
            "a wrong credential is refused even where none is needed"
        );
        let off = Authenticator::default();
        assert!(!off.is_on());
        assert_eq!(off.admit(ack, &none).await.unwrap(), None);
    }

    #[test]
    fn the_websocket_carries_its_credential_in_a_subprotocol() {
        let ws = headers(&[(
            header::SEC_WEBSOCKET_PROTOCOL,
            "sensorfleet, bearer.abc.def",
        )]);
        assert_eq!(credential(&ws), Some("abc.def"));
        let both = headers(&[
            (header::AUTHORIZATION, "Bearer first"),
            (header::SEC_WEBSOCKET_PROTOCOL, "bearer.second"),
        ]);
        assert_eq!(credential(&both), Some("first"));
        let cookie = headers(&[(header::COOKIE, "token=viewer-key-0123456789")]);
        assert_eq!(credential(&cookie), None, "cookies are never credentials");
        assert_eq!(
            credential(&headers(&[(header::AUTHORIZATION, "Basic eA==")])),
            None
        );
    }

    #[test]
    fn roles_parse_and_order() {
        assert_eq!(Role::parse("operator"), Some(Role::Operator));
        assert_eq!(Role::parse("root"), None);
        assert!(Role::Viewer < Role::Operator && Role::Operator < Role::Admin);
    }
}
