//! TLS: a relay that terminates TLS in front of a plain server, with a certificate of the
//! tests' PKI (`tollgate_standins::pki`), for the certificate checks.

use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::Value;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tollgate_standins::pki::Leaf;
pub use tollgate_standins::pki::Pki;

use super::raw::serve_raw;
use super::Gateway;

/// Terminates TLS with a server certificate (for 127.0.0.1) and relays the plain bytes to
/// `target`.
pub struct TlsRelay {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl TlsRelay {
    pub async fn start(server: &Leaf, target: SocketAddr) -> TlsRelay {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let certs = vec![CertificateDer::from(server.der.clone())];
        let key = PrivateKeyDer::from_pem_slice(server.key_pem.as_bytes()).unwrap();
        let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(Arc::new(
            tokio_rustls::rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let (addr, task) = serve_raw(move |stream| {
            let acceptor = acceptor.clone();
            async move {
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                let Ok(mut plain) = TcpStream::connect(target).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            }
        })
        .await;
        TlsRelay { addr, task }
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }
}

impl Drop for TlsRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `path` as a string for YAML (a `ca_file:` value).
pub fn yaml_path(path: &std::path::Path) -> String {
    path.to_str().expect("utf-8 path").to_owned()
}

/// The TLS checks' routes `/with-ca/` (the test CA as `tls.ca_file`) and `/unverified/`
/// (`insecure_skip_verify`) answer 200 through the [`TlsRelay`].
pub async fn assert_ca_file_trusted_and_skip_verify_skips(gateway: &Gateway) {
    let (status, _, body) = gateway.get_json("/with-ca/x").await;
    assert_eq!(status, 200, "the configured CA was not trusted: {body}");
    let (status, _, body) = gateway.get_json("/unverified/x").await;
    assert_eq!(status, 200, "insecure_skip_verify did not skip: {body}");
}

/// The gateway warned once that certificate verification is off, for the `unverified`
/// one: `field` is `provider` or `route`.
pub fn assert_one_verification_off_warning(gateway: &Gateway, field: &str) {
    let warnings: Vec<Value> = gateway
        .log_lines()
        .into_iter()
        .filter(|line| {
            line["level"] == "WARN"
                && line["message"]
                    .as_str()
                    .is_some_and(|m| m.to_ascii_lowercase().contains("verification is off"))
        })
        .collect();
    assert_eq!(
        warnings.len(),
        1,
        "one warning, for the unverified {field} only:\n{}",
        gateway.stdout()
    );
    assert_eq!(warnings[0][field], "unverified", "{}", warnings[0]);
}
