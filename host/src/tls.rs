//! The CAs the host's HTTPS clients trust (Consul agents, the OTLP collector, the CLI's
//! requests): the system's, read once. Where the system has none (a bare container), clients
//! are still made: plain `http` works and an `https` server fails its handshake
//! (`UnknownIssuer`), where reqwest's own default refuses to make any client at all.

use std::sync::OnceLock;

/// The system's CAs that rustls takes, and what went wrong reading them.
struct System {
    /// The CAs, each one rustls parses (one it cannot would fail every client's build).
    cas: Vec<reqwest::Certificate>,
    /// Files that could not be read and CAs left out, for the log.
    problems: Vec<String>,
}

/// Read on first use, so a host that makes no client reads nothing.
static SYSTEM: OnceLock<System> = OnceLock::new();

/// The system's CAs: `SSL_CERT_FILE` and `SSL_CERT_DIR` when set (instead of the rest), else
/// the distribution's bundle.
fn system() -> &'static System {
    SYSTEM.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        let mut problems: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
        let mut cas = Vec::with_capacity(found.certs.len());
        let mut unusable = 0;
        for der in &found.certs {
            let usable = rustls::RootCertStore::empty().add(der.clone()).is_ok();
            match reqwest::Certificate::from_der(der) {
                Ok(ca) if usable => cas.push(ca),
                _ => unusable += 1,
            }
        }
        if unusable > 0 {
            problems.push(format!(
                "{unusable} CA certificates rustls cannot read, left out"
            ));
        }
        let system = System { cas, problems };
        for problem in &system.problems {
            tracing::warn!("reading the system's CAs: {problem}");
        }
        system
    })
}

/// What went wrong reading the system's CAs, if they were read already: the log of a host
/// that read them before its log started (its telemetry's client) says it late, not never.
pub fn problems() -> &'static [String] {
    SYSTEM.get().map_or(&[], |system| &system.problems)
}

/// A client builder that trusts the system's CAs and no others.
pub fn client() -> reqwest::ClientBuilder {
    reqwest::Client::builder().tls_certs_only(system().cas.iter().cloned())
}

/// [`client`] for a thread that may block (the OTLP exporter's).
pub fn blocking_client() -> reqwest::blocking::ClientBuilder {
    reqwest::blocking::Client::builder().tls_certs_only(system().cas.iter().cloned())
}
