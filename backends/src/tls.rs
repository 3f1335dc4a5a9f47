//! The one TLS client setup of every link that is not PostgreSQL's (InfluxDB and an OIDC
//! provider's JWKS over HTTPS, MQTT over `mqtts://`): rustls with ring, trusting the
//! system's CA bundle or the one `SSL_CERT_FILE` names. An image without any CA bundle
//! can still reach plain services; a TLS endpoint then fails with a sentence that says
//! what to mount.

use std::sync::Arc;

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;

/// A client configuration that verifies servers against the system's CA bundle (or
/// `SSL_CERT_FILE`). `tls_needed`: the caller will reach a TLS endpoint, so finding no
/// CA certificate is an error rather than an empty trust store.
pub fn client_config(tls_needed: bool) -> Result<rustls::ClientConfig, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 && tls_needed {
        let why = found
            .errors
            .first()
            .map_or_else(|| "none found".to_owned(), ToString::to_string);
        return Err(format!(
            "no CA certificates to verify TLS with ({why}); install the system's CA bundle or set SSL_CERT_FILE to one (a Pipeline's spec.caSecret does)"
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// `http` wrapped for `https_or_http` URIs, with [`client_config`].
pub fn https_connector(
    mut http: HttpConnector,
    tls_needed: bool,
) -> Result<HttpsConnector<HttpConnector>, String> {
    http.enforce_http(false);
    let config = client_config(tls_needed)?;
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http))
}
