//! Outbound HTTP(S): the one place that makes the `ureq` agent of every worker job that talks
//! to another host (HTTP checks, webhook actions, registry requests), so that all of them trust
//! the same roots and report TLS failures the same way.
//!
//! Invariants:
//! - Only the worker thread calls [`agent`]: it reads `security.ca_file`, and the requests it
//!   serves block (DNS, connect, the TLS handshake).
//! - Trust is the Mozilla roots compiled into the binary (edge hosts often have no CA bundle)
//!   plus every certificate of `security.ca_file`, a PEM file of at most [`CA_FILE_BYTES`] read
//!   with [`crate::state::read_small_file`] for each agent, so a replaced file applies to the
//!   next request without a reload. A CA file that cannot be read, is not PEM, holds a private
//!   key or a certificate that cannot be a trust anchor fails the request with that reason:
//!   it never falls back to the bundled roots alone.
//! - TLS is rustls with the ring provider, installed as the process default once, before the
//!   first agent exists (ureq is built without a provider of its own).
//! - No redirects are followed and a non-2xx status is an answer, not an error: each caller
//!   decides what a status means. Every request says `User-Agent: vsm-daemon/VERSION`.

use std::sync::Once;
use std::time::Duration;
use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};

/// Largest `security.ca_file` read (a whole CA bundle is about 220 KB).
pub const CA_FILE_BYTES: u64 = 1024 * 1024;

/// Largest token file read (a bearer token for a webhook or an API).
pub const TOKEN_FILE_BYTES: u64 = 4096;

/// The bearer token on the first line of `path` (at most [`TOKEN_FILE_BYTES`], read on the
/// worker each time it is needed, so a rotated token applies at once).
///
/// # Errors
/// The file cannot be read, is not UTF-8, or its first line is empty or holds a character
/// that cannot be in a header (a space, a control character).
pub fn bearer_from_file(path: &str) -> Result<String, String> {
    let bytes = crate::state::read_small_file(std::path::Path::new(path), TOKEN_FILE_BYTES)
        .map_err(|e| format!("token file {path}: {e}"))?;
    let text = String::from_utf8(bytes).map_err(|_| format!("token file {path} is not UTF-8"))?;
    let first = text.lines().next().unwrap_or("").trim().to_string();
    if first.is_empty() || !first.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "token file {path} has no usable token on its first line"
        ));
    }
    Ok(first)
}

/// An agent whose requests time out after `timeout` in all (resolve, connect, TLS, send,
/// receive) and trust the bundled roots plus the certificates of `ca_file` (empty: none).
///
/// # Errors
/// Why `ca_file` cannot be used (unreadable, too large, not PEM, a private key inside, a
/// certificate that cannot be a trust anchor, no certificate at all).
pub fn agent(ca_file: &str, timeout: Duration) -> Result<ureq::Agent, String> {
    static PROVIDER: Once = Once::new();
    PROVIDER.call_once(|| {
        // Err means a default is already installed, which is just as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    let mut roots: Vec<Certificate<'static>> = webpki_root_certs::TLS_SERVER_ROOT_CERTS
        .iter()
        .map(|der| Certificate::from_der(der.as_ref()))
        .collect();
    if !ca_file.is_empty() {
        roots.extend(ca_certificates(ca_file)?);
    }
    Ok(ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(timeout))
        .user_agent(concat!("vsm-daemon/", env!("CARGO_PKG_VERSION")))
        .tls_config(
            TlsConfig::builder()
                .root_certs(RootCerts::from(roots))
                .build(),
        )
        .build()
        .into())
}

/// The certificates of the PEM file `path`, each checked to be usable as a trust anchor
/// (ureq would silently skip one that is not).
fn ca_certificates(path: &str) -> Result<Vec<Certificate<'static>>, String> {
    let pem = crate::state::read_small_file(std::path::Path::new(path), CA_FILE_BYTES)
        .map_err(|e| format!("CA file {path}: {e}"))?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(PemItem::Certificate(cert)) => {
                let der = rustls::pki_types::CertificateDer::from(cert.der());
                rustls::RootCertStore::empty().add(der).map_err(|e| {
                    format!(
                        "CA file {path}: certificate {} cannot be a trust anchor: {e}",
                        certs.len() + 1
                    )
                })?;
                certs.push(cert);
            }
            Ok(PemItem::PrivateKey(_)) => {
                return Err(format!(
                    "CA file {path} holds a private key; it must hold CA certificates only"
                ))
            }
            Ok(_) => {}
            Err(e) => return Err(format!("CA file {path} is not valid PEM: {e}")),
        }
    }
    if certs.is_empty() {
        return Err(format!("CA file {path} holds no PEM certificate"));
    }
    Ok(certs)
}

/// Says what went wrong with a request: TLS failures start with `TLS:` and name the reason
/// (an untrusted, expired or misnamed certificate, a failed handshake); anything else is
/// ureq's own message.
pub fn describe(error: &ureq::Error) -> String {
    let tls = match error {
        ureq::Error::Rustls(e) => Some(e),
        // A handshake failure reaches ureq as an I/O error that carries rustls' error.
        ureq::Error::Io(io) => io.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()),
        _ => None,
    };
    match tls {
        Some(rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)) => {
            "TLS: the server's certificate is not trusted: its issuer is neither among the \
             bundled roots nor in security.ca_file"
                .to_string()
        }
        Some(e) => format!("TLS: {e}"),
        None => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str, text: &str) -> String {
        let path = std::env::temp_dir().join(format!("vsm-outbound-{}-{name}", std::process::id()));
        std::fs::write(&path, text).expect("write");
        path.display().to_string()
    }

    #[test]
    fn the_bundled_roots_are_usable_trust_anchors() {
        assert!(webpki_root_certs::TLS_SERVER_ROOT_CERTS.len() > 50);
        let mut store = rustls::RootCertStore::empty();
        let (added, ignored) =
            store.add_parsable_certificates(webpki_root_certs::TLS_SERVER_ROOT_CERTS.to_vec());
        assert_eq!(ignored, 0);
        assert_eq!(added, webpki_root_certs::TLS_SERVER_ROOT_CERTS.len());
    }

    #[test]
    fn unusable_ca_files_are_refused_with_the_reason() {
        let missing = "/nonexistent/vsm-ca.pem";
        assert!(agent(missing, Duration::from_secs(1))
            .unwrap_err()
            .contains(missing));
        let empty = temp("empty.pem", "no pem here\n");
        assert!(ca_certificates(&empty)
            .unwrap_err()
            .contains("no PEM certificate"));
        let garbage = temp(
            "garbage.pem",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        );
        assert!(ca_certificates(&garbage)
            .unwrap_err()
            .contains("trust anchor"));
        let key = temp(
            "key.pem",
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        );
        assert!(ca_certificates(&key).unwrap_err().contains("private key"));
        for p in [empty, garbage, key] {
            let _ = std::fs::remove_file(p);
        }
        assert!(agent("", Duration::from_secs(1)).is_ok());
    }
}
