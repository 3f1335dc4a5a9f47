//! API access control on a real `sensorfleet up` with auth on: the OpenAPI document is
//! walked route by route (every one but the page's files, the document and the probes
//! answers 401 without a credential), roles hold (a viewer cannot acknowledge), API
//! keys, the admin token and HS256 JWTs all work, the WebSocket takes its credential as
//! a subprotocol and refuses foreign origins, cookies are never credentials, every
//! answer carries the security headers, the rate limit is per principal, and no
//! credential reaches the log.

mod support;

use jsonwebtoken::{EncodingKey, Header};
use sensorfleet::http::HttpClient;
use serde_json::{Value, json};
use support::Up;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

const VIEWER: &str = "viewer-key-7f3a9c2e41d8b6a0";
const OPERATOR: &str = "operator-key-5e1b8d0c97a2f4";
const ADMIN: &str = "admin-token-93c4e7a1b2d6f8e5";
const JWT_SECRET: &str = "jwt-secret-0123456789abcdef0123456789";
const PUBLIC: [&str; 2] = ["/health/live", "/health/ready"];

fn jwt(role: &str) -> String {
    let exp = chrono::Utc::now().timestamp() + 600;
    jsonwebtoken::encode(
        &Header::default(),
        &json!({"sub": "ada@example.com", "role": role, "exp": exp}),
        &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .expect("sign")
}

async fn start(dir: &std::path::Path, rate: &str) -> Up {
    let keys = format!("grafana=viewer:{VIEWER},oncall=operator:{OPERATOR}");
    Up::start_as(
        dir,
        &["--rate-limit", rate],
        &[
            ("SENSORFLEET_API_KEYS", keys.as_str()),
            ("SENSORFLEET_API_TOKEN", ADMIN),
            ("SENSORFLEET_JWT_SECRET", JWT_SECRET),
        ],
        Some(VIEWER),
    )
    .await
}

/// Each documented route and method, with `{id}` filled in.
async fn documented_routes(up: &Up) -> Vec<(String, String, String)> {
    let doc = HttpClient::new(up.http)
        .get("/api/openapi.json")
        .await
        .expect("the document");
    assert_eq!(doc.status, 200, "the OpenAPI document is public");
    let doc = doc.json();
    let mut routes = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("methods").keys() {
            let concrete = path.replace("{id}", "t-1");
            routes.push((method.to_uppercase(), path.clone(), concrete));
        }
    }
    routes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_auth_on_every_route_needs_a_credential_and_each_role_only_its_rights() {
    let dir = tempfile::tempdir().expect("temp dir");
    let up = start(dir.path(), "0").await;
    let routes = documented_routes(&up).await;
    assert!(
        routes.len() >= 14,
        "the document lists the routes: {routes:?}"
    );
    let mut anonymous = HttpClient::new(up.http);
    let mut viewer = HttpClient::new(up.http).with_bearer(VIEWER);
    let mut operator = HttpClient::new(up.http).with_bearer(OPERATOR);
    let mut admin = HttpClient::new(up.http).with_bearer(ADMIN);
    let mut jwt_viewer = HttpClient::new(up.http).with_bearer(&jwt("viewer"));
    let mut jwt_operator = HttpClient::new(up.http).with_bearer(&jwt("operator"));
    let mut wrong = HttpClient::new(up.http).with_bearer("not-a-key-of-this-server-0000");
    for (method, path, concrete) in &routes {
        let what = format!("{method} {concrete}");
        let status = |r: std::io::Result<sensorfleet::http::HttpResponse>| r.expect(&what).status;
        let open = PUBLIC.contains(&path.as_str());
        let anon = status(anonymous.request(method, concrete, &[]).await);
        if open {
            assert_eq!(anon, 200, "{what} is a probe: open");
            continue;
        }
        assert_eq!(anon, 401, "{what} without a credential");
        assert_eq!(
            status(wrong.request(method, concrete, &[]).await),
            401,
            "{what} with a wrong key"
        );
        let cookie = [("Cookie", format!("sensorfleet-api-token={VIEWER}"))];
        let cookie: Vec<(&str, &str)> = cookie.iter().map(|(n, v)| (*n, v.as_str())).collect();
        assert_eq!(
            status(anonymous.request(method, concrete, &cookie).await),
            401,
            "{what}: a cookie is never a credential"
        );
        let changes = method == "POST";
        for (who, client) in [("viewer key", &mut viewer), ("viewer JWT", &mut jwt_viewer)] {
            let got = status(client.request(method, concrete, &[]).await);
            if changes {
                assert_eq!(got, 403, "{what} as {who}");
            } else {
                assert!(got != 401 && got != 403, "{what} as {who}: {got}");
            }
        }
        for (who, client) in [
            ("operator key", &mut operator),
            ("operator JWT", &mut jwt_operator),
            ("admin token", &mut admin),
        ] {
            let got = status(client.request(method, concrete, &[]).await);
            assert!(got != 401 && got != 403, "{what} as {who}: {got}");
        }
    }
    // The page's own files are open, and every answer carries the security headers.
    for path in ["/", "/app.js", "/style.css", "/api/devices"] {
        let r = anonymous.get(path).await.expect(path);
        assert_eq!(
            r.status,
            if path == "/api/devices" { 401 } else { 200 },
            "{path}"
        );
        assert_eq!(r.header("x-frame-options"), Some("DENY"), "{path}");
        assert_eq!(
            r.header("x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
        let csp = r.header("content-security-policy").unwrap_or_default();
        assert!(
            csp.contains("frame-ancestors 'none'") && csp.contains("default-src 'self'"),
            "{path}: {csp}"
        );
    }
    let log = up.log_text();
    assert!(log.contains("API auth is on"), "says so at start:\n{log}");
    for secret in [VIEWER, OPERATOR, ADMIN, JWT_SECRET] {
        assert!(!log.contains(secret), "the log shows a credential:\n{log}");
    }
}

async fn open_feed(
    up: &Up,
    protocols: Option<&str>,
    origin: Option<&str>,
) -> Result<Option<String>, u16> {
    let mut request = format!("ws://{}/api/ws", up.http)
        .into_client_request()
        .expect("request");
    if let Some(protocols) = protocols {
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_str(protocols).unwrap(),
        );
    }
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("Origin", HeaderValue::from_str(origin).unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((_, response)) => Ok(response
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(e) => panic!("the handshake failed otherwise: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_feed_takes_its_credential_as_a_subprotocol_and_refuses_foreign_pages() {
    let dir = tempfile::tempdir().expect("temp dir");
    let up = start(dir.path(), "0").await;
    let as_viewer = format!("sensorfleet, bearer.{VIEWER}");
    let own = format!("http://{}", up.http);
    assert_eq!(open_feed(&up, None, None).await, Err(401), "anonymous");
    // Not a handshake at all: a JSON error, as documented, not the library's plain text.
    let plain = up.client().get("/api/ws").await.expect("plain GET");
    assert_eq!(plain.status, 400);
    assert_eq!(plain.header("content-type"), Some("application/json"));
    assert_eq!(
        plain.json()["code"],
        "not_a_websocket",
        "{:?}",
        plain.json()
    );
    assert_eq!(
        open_feed(&up, Some("sensorfleet"), Some(&own)).await,
        Err(401),
        "no credential"
    );
    assert_eq!(
        open_feed(&up, Some(&as_viewer), None).await,
        Ok(Some("sensorfleet".into())),
        "a viewer, answered with the feed's own subprotocol (never the credential)"
    );
    assert_eq!(
        open_feed(
            &up,
            Some(&format!("sensorfleet, bearer.{}", jwt("viewer"))),
            Some(&own)
        )
        .await,
        Ok(Some("sensorfleet".into())),
        "a JWT from the dashboard's own origin"
    );
    assert_eq!(
        open_feed(&up, Some(&as_viewer), Some("https://evil.example")).await,
        Err(403),
        "a page of another site, even with a credential"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_is_per_principal() {
    let dir = tempfile::tempdir().expect("temp dir");
    let up = start(dir.path(), "50").await;
    let mut viewer = HttpClient::new(up.http).with_bearer(VIEWER);
    let mut limited = 0;
    for _ in 0..600 {
        let status = viewer.get("/api/devices").await.expect("devices").status;
        assert!(status == 200 || status == 429, "{status}");
        limited += usize::from(status == 429);
    }
    assert!(
        limited > 0,
        "600 requests at once exceed 50/s with a burst of 100"
    );
    let r = HttpClient::new(up.http)
        .with_bearer(OPERATOR)
        .get("/api/devices")
        .await
        .expect("devices");
    assert_eq!(r.status, 200, "another principal has its own bucket");
    let body: Value = r.json();
    assert!(body.is_object(), "{body}");
}
