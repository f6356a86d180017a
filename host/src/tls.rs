//! The CAs every HTTP client of the host trusts (Consul agents, HTTP peers, the OTLP
//! collector, the CLI's requests): the system's, read once. Where the system has none (a bare
//! container), clients are still made: plain `http` works and an `https` server fails its
//! handshake (`UnknownIssuer`), where reqwest's own default refuses to make any client at all.

use std::sync::LazyLock;

/// The system's CAs: `SSL_CERT_FILE` and `SSL_CERT_DIR` when set, else the distribution's
/// bundle; read on first use, so a host that makes no client reads nothing.
static SYSTEM: LazyLock<Vec<reqwest::Certificate>> = LazyLock::new(|| {
    let found = rustls_native_certs::load_native_certs();
    if let Some(error) = found.errors.first() {
        tracing::warn!("reading the system's CAs: {error}");
    }
    found
        .certs
        .iter()
        .filter_map(|der| reqwest::Certificate::from_der(der).ok())
        .collect()
});

/// A client builder that trusts the system's CAs and no others; add a company's own with
/// `add_root_certificate`.
pub fn client() -> reqwest::ClientBuilder {
    reqwest::Client::builder().tls_certs_only(SYSTEM.iter().cloned())
}

/// [`client`] for a thread that may block (the OTLP exporter's).
pub fn blocking_client() -> reqwest::blocking::ClientBuilder {
    reqwest::blocking::Client::builder().tls_certs_only(SYSTEM.iter().cloned())
}
