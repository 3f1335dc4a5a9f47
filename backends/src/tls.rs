//! The one HTTPS client connector (InfluxDB, an OIDC provider's JWKS): rustls with ring,
//! trusting the system's CA bundle or the one `SSL_CERT_FILE` names. An image without any
//! CA bundle can still reach plain `http://` services; a TLS endpoint then fails with a
//! sentence that says what to mount.

use std::sync::Arc;

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;

/// `http` wrapped for `https_or_http` URIs. `tls_needed`: the caller will reach a TLS
/// endpoint, so finding no CA certificate is an error rather than an empty trust store.
pub fn https_connector(
    mut http: HttpConnector,
    tls_needed: bool,
) -> Result<HttpsConnector<HttpConnector>, String> {
    http.enforce_http(false);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = match hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(provider.clone())
    {
        Ok(builder) => builder,
        Err(e) if tls_needed => {
            return Err(format!(
                "no CA certificates to verify TLS with ({e}); install the system's CA bundle or set SSL_CERT_FILE to one (a Pipeline's spec.caSecret does)"
            ));
        }
        Err(_) => {
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("TLS setup failed: {e}"))?
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config)
        }
    };
    Ok(builder.https_or_http().enable_http1().wrap_connector(http))
}
