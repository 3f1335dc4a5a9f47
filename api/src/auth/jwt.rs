//! Bearer JWTs: HS256 with a shared secret, or RS256/ES256 signed by a key an OIDC
//! provider lists at its JWKS URL (so Keycloak, Dex, Auth0, Entra ID… all work). A token
//! must not be expired (30 s of leeway), must come from the configured issuer and for the
//! configured audience when those are set, and must name a role in its role claim (a
//! string or a list; the highest known role counts).
//!
//! The JWKS is fetched at start, again when a token names a key it does not list (at
//! most every 30 s, for key rotation), and when it is 15 minutes old.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde_json::{Map, Value};

use super::{Principal, Role};
use crate::ApiError;

/// Fewest bytes of an HS256 secret (RFC 7518 asks for at least the hash's size).
pub const MIN_SECRET_BYTES: usize = 32;
const LEEWAY_SECONDS: u64 = 30;
const REFETCH_UNKNOWN_KID_AFTER: Duration = Duration::from_secs(30);
const JWKS_MAX_AGE: Duration = Duration::from_secs(15 * 60);
const JWKS_MAX_BYTES: usize = 1 << 20;
const JWKS_TIMEOUT: Duration = Duration::from_secs(5);

/// How tokens are checked.
#[derive(Debug, Clone, Default)]
pub struct JwtConfig {
    /// The HS256 shared secret; none: HS256 tokens are refused.
    pub hs256_secret: Option<Vec<u8>>,
    /// Where the provider lists its signing keys; none: RS256/ES256 tokens are refused.
    pub jwks_url: Option<String>,
    /// The `iss` a token must carry, when set.
    pub issuer: Option<String>,
    /// An `aud` a token must carry, when set.
    pub audience: Option<String>,
    /// The claim holding the role (default `role`).
    pub role_claim: String,
}

/// Whether a credential has a JWT's shape (three base64url parts), so it is not looked
/// up as an API key only.
pub fn looks_like_jwt(credential: &str) -> bool {
    credential.split('.').count() == 3 && credential.starts_with("eyJ")
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

struct KeySet {
    by_kid: HashMap<String, (Algorithm, DecodingKey)>,
    unnamed: Vec<(Algorithm, DecodingKey)>,
    fetched: Option<Instant>,
}

struct Jwks {
    url: String,
    client: HttpsClient,
    keys: RwLock<KeySet>,
    fetching: tokio::sync::Mutex<Option<Instant>>,
}

/// Verifies tokens.
pub struct JwtVerifier {
    config: JwtConfig,
    hs256: Option<DecodingKey>,
    jwks: Option<Jwks>,
}

impl JwtVerifier {
    /// A verifier for `config`; fetches the JWKS once (a failure is logged, and retried
    /// when a token arrives).
    pub async fn new(config: JwtConfig) -> Result<JwtVerifier, String> {
        let hs256 = match &config.hs256_secret {
            Some(s) if s.len() < MIN_SECRET_BYTES => {
                return Err(format!(
                    "the JWT secret has {} bytes; HS256 needs at least {MIN_SECRET_BYTES} (`openssl rand -hex 32`)",
                    s.len()
                ));
            }
            Some(s) => Some(DecodingKey::from_secret(s)),
            None => None,
        };
        let jwks = match &config.jwks_url {
            Some(url) => Some(Jwks::new(url)?),
            None => None,
        };
        if hs256.is_none() && jwks.is_none() {
            return Err("JWT auth needs a secret (HS256) or a JWKS URL (RS256/ES256)".into());
        }
        let verifier = JwtVerifier {
            config,
            hs256,
            jwks,
        };
        if let Some(jwks) = &verifier.jwks
            && let Err(e) = jwks.refresh().await
        {
            tracing::warn!(jwks = %jwks.url, error = %e, "cannot load the JWKS yet; tokens signed with its keys are refused until it loads");
        }
        Ok(verifier)
    }

    /// The principal a token stands for.
    pub async fn verify(&self, token: &str) -> Result<Principal, ApiError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| ApiError::unauthorized("the bearer token is not a well-formed JWT"))?;
        let key = match header.alg {
            Algorithm::HS256 => self.hs256.clone().ok_or_else(|| {
                ApiError::unauthorized(
                    "HS256 tokens are not accepted here (no JWT secret is configured)",
                )
            })?,
            Algorithm::RS256 | Algorithm::ES256 => {
                let Some(jwks) = &self.jwks else {
                    return Err(ApiError::unauthorized(format!(
                        "{:?} tokens are not accepted here (no JWKS URL is configured)",
                        header.alg
                    )));
                };
                jwks.key(header.alg, header.kid.as_deref()).await?
            }
            other => {
                return Err(ApiError::unauthorized(format!(
                    "tokens signed with {other:?} are not accepted; HS256, RS256 and ES256 are"
                )));
            }
        };
        let mut validation = Validation::new(header.alg);
        validation.leeway = LEEWAY_SECONDS;
        validation.set_required_spec_claims(&["exp"]);
        if let Some(issuer) = &self.config.issuer {
            validation.set_issuer(&[issuer]);
        }
        match &self.config.audience {
            Some(audience) => validation.set_audience(&[audience]),
            None => validation.validate_aud = false,
        }
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation)
            .map_err(|e| ApiError::unauthorized(refusal(e.kind())))?
            .claims;
        principal(&claims, &self.config.role_claim)
    }
}

fn refusal(kind: &ErrorKind) -> &'static str {
    match kind {
        ErrorKind::ExpiredSignature => "the token has expired; get a new one",
        ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)",
        ErrorKind::InvalidIssuer => "the token is from another issuer than the one configured",
        ErrorKind::InvalidAudience => "the token is for another audience than this API",
        ErrorKind::MissingRequiredClaim(_) => "the token has no expiry (exp)",
        ErrorKind::InvalidSignature => "the token's signature does not verify",
        _ => "the token is not valid",
    }
}

/// The principal of verified `claims`: `sub` names it, `role_claim` gives its role.
pub fn principal(claims: &Map<String, Value>, role_claim: &str) -> Result<Principal, ApiError> {
    let name = claims
        .get("sub")
        .and_then(Value::as_str)
        .unwrap_or("token")
        .to_owned();
    let named: Vec<&str> = match claims.get(role_claim) {
        Some(Value::String(one)) => vec![one.as_str()],
        Some(Value::Array(many)) => many.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    match named.into_iter().filter_map(Role::parse).max() {
        Some(role) => Ok(Principal { name, role }),
        None => Err(ApiError::forbidden(format!(
            "the token of {name} names no role in its {role_claim:?} claim (viewer, operator or admin)"
        ))),
    }
}

impl Jwks {
    fn new(url: &str) -> Result<Jwks, String> {
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(format!(
                "the JWKS URL must be http:// or https://, got {url:?}"
            ));
        }
        let https = sensorfleet_backends::tls::https_connector(
            HttpConnector::new(),
            url.starts_with("https://"),
        )
        .map_err(|e| format!("the JWKS URL: {e}"))?;
        Ok(Jwks {
            url: url.to_owned(),
            client: Client::builder(TokioExecutor::new()).build(https),
            keys: RwLock::new(KeySet {
                by_kid: HashMap::new(),
                unnamed: Vec::new(),
                fetched: None,
            }),
            fetching: tokio::sync::Mutex::new(None),
        })
    }

    fn lookup(&self, alg: Algorithm, kid: Option<&str>) -> (Option<DecodingKey>, bool) {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        let fresh = keys.fetched.is_some_and(|at| at.elapsed() < JWKS_MAX_AGE);
        let found = match kid {
            Some(kid) => keys
                .by_kid
                .get(kid)
                .filter(|(a, _)| *a == alg)
                .map(|(_, k)| k.clone()),
            None => keys
                .unnamed
                .iter()
                .find(|(a, _)| *a == alg)
                .map(|(_, k)| k.clone()),
        };
        (found, fresh)
    }

    async fn key(&self, alg: Algorithm, kid: Option<&str>) -> Result<DecodingKey, ApiError> {
        let (found, fresh) = self.lookup(alg, kid);
        if let Some(key) = found.as_ref().filter(|_| fresh) {
            return Ok(key.clone());
        }
        {
            let mut last = self.fetching.lock().await;
            let due = last.is_none_or(|at| at.elapsed() >= REFETCH_UNKNOWN_KID_AFTER) || !fresh;
            if due {
                *last = Some(Instant::now());
                if let Err(e) = self.refresh().await {
                    tracing::warn!(jwks = %self.url, error = %e, "refreshing the JWKS failed");
                }
            }
        }
        self.lookup(alg, kid).0.or(found).ok_or_else(|| {
            ApiError::unauthorized(format!(
                "the token is signed by a key the JWKS at {} does not list",
                self.url
            ))
        })
    }

    async fn refresh(&self) -> Result<(), String> {
        let body = tokio::time::timeout(JWKS_TIMEOUT, self.fetch())
            .await
            .map_err(|_| format!("no answer in {JWKS_TIMEOUT:?}"))??;
        let set: JwkSet = serde_json::from_slice(&body).map_err(|e| format!("not a JWKS: {e}"))?;
        let mut next = KeySet {
            by_kid: HashMap::new(),
            unnamed: Vec::new(),
            fetched: Some(Instant::now()),
        };
        for jwk in &set.keys {
            let alg = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => Algorithm::RS256,
                AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
                    Algorithm::ES256
                }
                _ => continue,
            };
            let Ok(key) = DecodingKey::from_jwk(jwk) else {
                continue;
            };
            match &jwk.common.key_id {
                Some(kid) => {
                    next.by_kid.insert(kid.clone(), (alg, key));
                }
                None => next.unnamed.push((alg, key)),
            }
        }
        tracing::info!(jwks = %self.url, keys = next.by_kid.len() + next.unnamed.len(), "JWKS loaded");
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = next;
        Ok(())
    }

    async fn fetch(&self) -> Result<Bytes, String> {
        let uri: http::Uri = self.url.parse().map_err(|e| format!("bad URL: {e}"))?;
        let response = self
            .client
            .get(uri)
            .await
            .map_err(|e| format!("cannot reach it: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("it answered HTTP {}", response.status()));
        }
        Limited::new(response.into_body(), JWKS_MAX_BYTES)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .map_err(|e| format!("reading it failed: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use jsonwebtoken::{EncodingKey, Header};
    use ring::rand::SystemRandom;
    use ring::signature::{self, KeyPair};
    use serde_json::json;

    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    /// A 2048-bit RSA key made for these tests only (PKCS#1 DER, `openssl genrsa`).
    const RSA_KEY: &[u8] = include_bytes!("../../testdata/rsa-2048-test-only.der");

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn claims(role: Value, exp_in: i64) -> Value {
        json!({"sub": "ada", "role": role, "exp": (now() as i64 + exp_in), "iss": "https://idp.test", "aud": "sensorfleet"})
    }

    fn sign(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Value) -> String {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, key).unwrap()
    }

    async fn hs256() -> JwtVerifier {
        JwtVerifier::new(JwtConfig {
            hs256_secret: Some(SECRET.to_vec()),
            issuer: Some("https://idp.test".into()),
            audience: Some("sensorfleet".into()),
            role_claim: "role".into(),
            ..JwtConfig::default()
        })
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn hs256_tokens_are_checked_for_signature_expiry_issuer_audience_and_role() {
        let verifier = hs256().await;
        let key = EncodingKey::from_secret(SECRET);
        let good = sign(
            Algorithm::HS256,
            None,
            &key,
            &claims(json!("operator"), 600),
        );
        assert!(looks_like_jwt(&good));
        let p = verifier.verify(&good).await.unwrap();
        assert_eq!((p.name.as_str(), p.role), ("ada", Role::Operator));
        let highest = sign(
            Algorithm::HS256,
            None,
            &key,
            &claims(json!(["viewer", "admin", "x"]), 600),
        );
        assert_eq!(verifier.verify(&highest).await.unwrap().role, Role::Admin);

        let expired = sign(Algorithm::HS256, None, &key, &claims(json!("viewer"), -120));
        let wrong_key = sign(
            Algorithm::HS256,
            None,
            &EncodingKey::from_secret(b"another secret another secret!!!"),
            &claims(json!("viewer"), 600),
        );
        let mut other_issuer = claims(json!("viewer"), 600);
        other_issuer["iss"] = json!("https://evil.test");
        let mut other_audience = claims(json!("viewer"), 600);
        other_audience["aud"] = json!("someone-else");
        let mut no_exp = claims(json!("viewer"), 600);
        no_exp.as_object_mut().unwrap().remove("exp");
        for (token, says) in [
            (expired, "expired"),
            (wrong_key, "signature"),
            (sign(Algorithm::HS256, None, &key, &other_issuer), "issuer"),
            (
                sign(Algorithm::HS256, None, &key, &other_audience),
                "audience",
            ),
            (sign(Algorithm::HS256, None, &key, &no_exp), "exp"),
        ] {
            let e = verifier.verify(&token).await.unwrap_err();
            assert_eq!(e.status(), 401, "{says}");
            assert!(format!("{e:?}").contains(says), "{says}: {e:?}");
        }
        let no_role = sign(Algorithm::HS256, None, &key, &claims(json!("root"), 600));
        assert_eq!(verifier.verify(&no_role).await.unwrap_err().status(), 403);
    }

    #[tokio::test]
    async fn unsigned_and_unexpected_algorithms_are_refused() {
        let verifier = hs256().await;
        let body = B64.encode(claims(json!("admin"), 600).to_string());
        for header in [
            json!({"alg": "none", "typ": "JWT"}),
            json!({"alg": "HS512"}),
        ] {
            let head = B64.encode(header.to_string());
            let forged = format!("{head}.{body}.");
            assert_eq!(
                verifier.verify(&forged).await.unwrap_err().status(),
                401,
                "{header}"
            );
        }
        let es = EncodingKey::from_ec_der(&ec_key().0);
        let no_jwks = sign(
            Algorithm::ES256,
            Some("k"),
            &es,
            &claims(json!("admin"), 600),
        );
        let e = verifier.verify(&no_jwks).await.unwrap_err();
        assert!(format!("{e:?}").contains("no JWKS"), "{e:?}");
        assert!(
            JwtVerifier::new(JwtConfig {
                hs256_secret: Some(b"short".to_vec()),
                ..JwtConfig::default()
            })
            .await
            .is_err()
        );
    }

    /// A fresh P-256 key: its PKCS#8 and its public point as a JWK's x and y.
    fn ec_key() -> (Vec<u8>, String, String) {
        let rng = SystemRandom::new();
        let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = signature::EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        let pair = signature::EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap();
        let point = pair.public_key().as_ref(); // 0x04 · x · y
        (
            pkcs8.as_ref().to_vec(),
            B64.encode(&point[1..33]),
            B64.encode(&point[33..65]),
        )
    }

    /// Serves `jwks` at http://127.0.0.1:<port>/jwks and counts the fetches.
    async fn jwks_server(
        jwks: std::sync::Arc<std::sync::Mutex<Value>>,
    ) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let fetches = std::sync::Arc::new(AtomicUsize::new(0));
        let counted = fetches.clone();
        let app = axum::Router::new().route(
            "/jwks",
            axum::routing::get(move || {
                counted.fetch_add(1, Ordering::SeqCst);
                let body = jwks.lock().unwrap().clone();
                async move { axum::Json(body) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}/jwks"), fetches)
    }

    #[tokio::test]
    async fn rs256_and_es256_tokens_verify_against_the_providers_jwks_and_its_rotation() {
        use std::sync::atomic::Ordering;
        let rsa = signature::RsaKeyPair::from_der(RSA_KEY).unwrap();
        let public: ring::rsa::PublicKeyComponents<Vec<u8>> = rsa.public().into();
        let (n, e) = (B64.encode(&public.n), B64.encode(&public.e));
        let (ec_pkcs8, x, y) = ec_key();
        let jwks = std::sync::Arc::new(std::sync::Mutex::new(json!({"keys": [
            {"kty": "RSA", "kid": "rsa-1", "alg": "RS256", "use": "sig", "n": n, "e": e},
        ]})));
        let (url, fetches) = jwks_server(jwks.clone()).await;
        let verifier = JwtVerifier::new(JwtConfig {
            jwks_url: Some(url),
            role_claim: "role".into(),
            ..JwtConfig::default()
        })
        .await
        .unwrap();
        assert_eq!(fetches.load(Ordering::SeqCst), 1, "fetched at start");

        let rs = EncodingKey::from_rsa_der(RSA_KEY);
        let token = sign(
            Algorithm::RS256,
            Some("rsa-1"),
            &rs,
            &claims(json!("viewer"), 600),
        );
        assert_eq!(verifier.verify(&token).await.unwrap().role, Role::Viewer);
        let hs_signed = sign(
            Algorithm::HS256,
            Some("rsa-1"),
            &EncodingKey::from_secret(SECRET),
            &claims(json!("admin"), 600),
        );
        assert_eq!(
            verifier.verify(&hs_signed).await.unwrap_err().status(),
            401,
            "no HS256 without a secret"
        );

        // The provider rotates to an EC key: the first token that names it refetches.
        jwks.lock().unwrap()["keys"]
            .as_array_mut()
            .unwrap()
            .push(json!({"kty": "EC", "crv": "P-256", "kid": "ec-2", "x": x, "y": y}));
        let es = EncodingKey::from_ec_der(&ec_pkcs8);
        let rotated = sign(
            Algorithm::ES256,
            Some("ec-2"),
            &es,
            &claims(json!("operator"), 600),
        );
        assert_eq!(
            verifier.verify(&rotated).await.unwrap().role,
            Role::Operator
        );
        assert_eq!(fetches.load(Ordering::SeqCst), 2);

        // Unknown key ids do not make every request refetch.
        let unknown = sign(
            Algorithm::ES256,
            Some("ec-9"),
            &es,
            &claims(json!("operator"), 600),
        );
        for _ in 0..5 {
            assert_eq!(verifier.verify(&unknown).await.unwrap_err().status(), 401);
        }
        assert_eq!(
            fetches.load(Ordering::SeqCst),
            2,
            "at most one fetch per 30 s"
        );
        // A key listed as EC cannot verify a token that claims RS256 under its id.
        let confused = sign(
            Algorithm::RS256,
            Some("ec-2"),
            &rs,
            &claims(json!("admin"), 600),
        );
        assert_eq!(verifier.verify(&confused).await.unwrap_err().status(), 401);
    }
}
