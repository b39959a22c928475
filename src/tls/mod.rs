//! TLS: the certificate files named in the config, and the listeners' TLS termination.
//!
//! - [`read_ca_file`]: CA files (`tls.ca_file` of upstreams and providers, a listener's
//!   `client_ca_file`), read and checked at load time.
//! - [`pair`]: a listener's certificate chain and key, checked to belong together.
//! - [`listener`]: what a TLS listener serves from: a certificate resolver and a client
//!   CA verifier whose material can be swapped while it runs, and the verified client
//!   certificate kept with each connection ([`client_cert`]).
//! - [`watch`]: re-reads the files every [`watch::INTERVAL`] and swaps in what changed.
//! - [`failures`]: refused handshakes, counted by reason.

pub mod client_cert;
pub mod failures;
pub mod listener;
pub mod pair;
pub mod watch;

pub use client_cert::ClientCert;
pub use listener::{client_cert_of, TlsListener, TlsLoadError};
pub use pair::{load_pair, CertPair, PairError};

use std::path::Path;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

/// The DER certificates of a PEM file; an error says why the file is unusable.
pub fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let iter = CertificateDer::pem_file_iter(path)
        .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    let certs = iter
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| format!("{} is not a PEM certificate file: {error}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    for cert in &certs {
        if x509_parser::parse_x509_certificate(cert.as_ref()).is_err() {
            return Err(format!(
                "{} holds a certificate that does not parse",
                path.display()
            ));
        }
    }
    Ok(certs)
}
