//! A listener's certificate chain and private key, read from their PEM files and checked
//! to belong together: what config validation, start-up and every rotation load.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A certificate chain with its private key, ready for the handshake.
#[derive(Debug, Clone)]
pub struct CertPair {
    pub certified: Arc<CertifiedKey>,
    /// The leaf certificate's `notAfter`, in Unix seconds.
    pub not_after: i64,
    /// The leaf certificate's subject, for logs.
    pub subject: String,
}

/// Why a pair cannot serve. The texts name files, never their content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PairError {
    #[error("{0}")]
    Cert(String),
    #[error("{0}")]
    Key(String),
    #[error("the private key in {key} does not belong to the certificate in {cert}")]
    Mismatch { cert: String, key: String },
}

/// The process-wide rustls crypto provider (ring), installed once.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    pingora::tls::install_default_crypto_provider();
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()))
}

/// Reads and checks the pair. The first certificate of `cert_file` is the leaf; the
/// others are sent as its chain.
pub fn load_pair(cert_file: &Path, key_file: &Path) -> Result<CertPair, PairError> {
    let chain = read_chain(cert_file).map_err(PairError::Cert)?;
    let key = read_key(key_file).map_err(PairError::Key)?;
    let leaf = chain
        .first()
        .ok_or_else(|| PairError::Cert(format!("{} holds no certificate", cert_file.display())))?;
    let (not_after, subject) = leaf_facts(leaf).ok_or_else(|| {
        PairError::Cert(format!(
            "{} holds a certificate that does not parse",
            cert_file.display()
        ))
    })?;
    let signing_key = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|error| {
            PairError::Key(format!(
                "{} holds a private key rustls cannot use: {error}",
                key_file.display()
            ))
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    if certified.keys_match().is_err() {
        return Err(PairError::Mismatch {
            cert: cert_file.display().to_string(),
            key: key_file.display().to_string(),
        });
    }
    Ok(CertPair {
        certified: Arc::new(certified),
        not_after,
        subject,
    })
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes =
        std::fs::read(path).map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| format!("{} is not a PEM certificate file: {error}", path.display()))?;
    if chain.is_empty() {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let bytes =
        std::fs::read(path).map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    // The parser's own error text could quote what it read; only the file is named.
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|_| {
        format!(
            "{} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)",
            path.display()
        )
    })
}

/// The leaf's `notAfter` (Unix seconds) and subject.
fn leaf_facts(leaf: &CertificateDer<'_>) -> Option<(i64, String)> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    Some((
        cert.validity().not_after.timestamp(),
        cert.subject().to_string(),
    ))
}
