//! The one reqwest client set-up of the HTTP backends that do not use the AWS SDK (azure, gcs
//! through OpenDAL's reqwest transport; swift directly): rustls with ring and the platform's
//! trust store, the TLS the S3 client uses, so no second TLS provider is built in.

use std::sync::Arc;
use std::time::Duration;

/// `timeout`, when given, bounds each request, its body included (GCS_CONTEXT_TIMEOUT, as
/// WAL-G's per-operation context).
pub(crate) fn http_client(timeout: Option<Duration>) -> std::result::Result<reqwest::Client, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls_platform_verifier::Verifier::new(provider.clone()).map_err(|e| format!("TLS trust store: {e}"))?;
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    let mut b = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        // Many pooled HTTP/1.1 connections beat one HTTP/2 connection for large transfers.
        .http1_only()
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(120));
    if let Some(t) = timeout {
        b = b.timeout(t);
    }
    b.build().map_err(|e| format!("HTTP client: {e}"))
}
