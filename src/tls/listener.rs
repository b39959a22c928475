//! A TLS listener's live material: the serving certificate (a rustls
//! [`ResolvesServerCert`] whose pair can be swapped while the listener runs), the client
//! CA of an mTLS listener (a [`ClientCertVerifier`] that can be swapped too), and what the
//! handshake leaves on the connection for the request path (the verified [`ClientCert`]).
//!
//! pingora builds the rustls `ServerConfig` once per listener, so rotation goes through
//! these two hooks instead of a new config: every new handshake asks the resolver and the
//! verifier in force, and established connections keep the keys they agreed on.

use std::any::Any;
use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::{TlsAccept, ALPN};
use pingora::protocols::tls::TlsRef;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};

use super::client_cert::ClientCert;
use super::pair::{load_pair, provider, CertPair, PairError};
use crate::config::{Listener, ListenerTls};

/// Why a listener's TLS material cannot be used. Texts name files, never their content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsLoadError {
    #[error(transparent)]
    Pair(#[from] PairError),
    #[error("{0}")]
    ClientCa(String),
}

/// One TLS listener's certificate, client CA and the file contents they were read from.
pub struct TlsListener {
    /// The listen address, as the `listener` label of the TLS metrics.
    pub label: String,
    files: ListenerTls,
    cert: Arc<ServingCert>,
    client_ca: Option<Arc<ClientCa>>,
    /// SHA-256 of the files last tried, so a bad new pair is reported once, not every poll.
    last_seen: Mutex<[u8; 32]>,
    not_after: AtomicI64,
}

impl fmt::Debug for TlsListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsListener")
            .field("label", &self.label)
            .field("files", &self.files)
            .finish()
    }
}

/// What a check of the files found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reload {
    /// Same content as last time.
    Unchanged,
    /// A new pair (or client CA) is serving new handshakes.
    Loaded { not_after: i64, subject: String },
    /// The new content cannot serve; the previous material stays in force.
    Failed(TlsLoadError),
}

impl TlsListener {
    /// Reads the listener's files; the pair must belong together and the client CA parse.
    pub fn load(listener: &Listener) -> Result<Option<TlsListener>, TlsLoadError> {
        let Some(files) = &listener.tls else {
            return Ok(None);
        };
        let digest = files_digest(files);
        let pair = load_pair(&files.cert_file, &files.key_file)?;
        let client_ca = match &files.client_ca_file {
            Some(path) => Some(Arc::new(ClientCa {
                current: ArcSwap::from_pointee(Verifier(
                    client_verifier(path).map_err(TlsLoadError::ClientCa)?,
                )),
            })),
            None => None,
        };
        Ok(Some(TlsListener {
            label: listener.address.to_string(),
            files: files.clone(),
            not_after: AtomicI64::new(pair.not_after),
            cert: Arc::new(ServingCert {
                current: ArcSwap::new(pair.certified),
            }),
            client_ca,
            last_seen: Mutex::new(digest),
        }))
    }

    /// The leaf certificate's `notAfter` in force, in Unix seconds.
    pub fn not_after(&self) -> i64 {
        self.not_after.load(Ordering::Relaxed)
    }

    /// pingora's settings for this listener: the certificate from the resolver, the client
    /// CA from the verifier, ALPN `h2` and `http/1.1` when HTTP/2 is on (else none, which
    /// is HTTP/1.1), and the handshake callback that keeps the client certificate. pingora
    /// itself allows TLS 1.2 and 1.3 only.
    pub fn settings(&self, http2: bool) -> pingora::Result<TlsSettings> {
        let mut settings = TlsSettings::with_callbacks(Box::new(Handshakes {
            client_certs: self.client_ca.is_some(),
        }))?;
        settings.set_cert_resolver(Arc::clone(&self.cert) as Arc<dyn ResolvesServerCert>);
        if let Some(client_ca) = &self.client_ca {
            settings.set_client_cert_verifier(Arc::clone(client_ca) as Arc<dyn ClientCertVerifier>);
        }
        if http2 {
            settings.set_alpn(ALPN::H2H1);
        }
        Ok(settings)
    }

    /// Reads the files again; when their content changed, loads and swaps in the new
    /// material, or keeps the old one and says why the new one cannot serve.
    pub fn reload(&self) -> Reload {
        let digest = files_digest(&self.files);
        {
            let mut last = self
                .last_seen
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if *last == digest {
                return Reload::Unchanged;
            }
            *last = digest;
        }
        let pair: CertPair = match load_pair(&self.files.cert_file, &self.files.key_file) {
            Ok(pair) => pair,
            Err(error) => return Reload::Failed(error.into()),
        };
        let verifier = match (&self.files.client_ca_file, &self.client_ca) {
            (Some(path), Some(_)) => match client_verifier(path) {
                Ok(verifier) => Some(verifier),
                Err(error) => return Reload::Failed(TlsLoadError::ClientCa(error)),
            },
            _ => None,
        };
        self.cert.current.store(pair.certified);
        if let (Some(verifier), Some(client_ca)) = (verifier, &self.client_ca) {
            client_ca.current.store(Arc::new(Verifier(verifier)));
        }
        self.not_after.store(pair.not_after, Ordering::Relaxed);
        Reload::Loaded {
            not_after: pair.not_after,
            subject: pair.subject,
        }
    }
}

/// SHA-256 over the listener's files as they read now (an unreadable file counts as
/// empty: the load that follows reports it).
fn files_digest(files: &ListenerTls) -> [u8; 32] {
    let mut hash = Sha256::new();
    let paths = [
        Some(files.cert_file.as_path()),
        Some(files.key_file.as_path()),
        files.client_ca_file.as_deref(),
    ];
    for path in paths.into_iter().flatten() {
        let content = std::fs::read(path).unwrap_or_default();
        hash.update((content.len() as u64).to_be_bytes());
        hash.update(&content);
    }
    hash.finalize().into()
}

/// A verifier of client certificates chaining to the CAs in `path`, or why there is none.
pub fn client_verifier(path: &Path) -> Result<Arc<dyn ClientCertVerifier>, String> {
    let certs = super::read_ca_file(path)?;
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|error| {
            format!(
                "{} holds a certificate that cannot be a trust anchor: {error}",
                path.display()
            )
        })?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|error| {
            format!(
                "{} cannot verify client certificates: {error}",
                path.display()
            )
        })
}

/// The serving certificate in force; every handshake takes the current one.
#[derive(Debug)]
struct ServingCert {
    current: ArcSwap<CertifiedKey>,
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

#[derive(Debug)]
struct Verifier(Arc<dyn ClientCertVerifier>);

/// The client CA in force: a certificate is required, and must chain to it.
#[derive(Debug)]
struct ClientCa {
    current: ArcSwap<Verifier>,
}

impl ClientCertVerifier for ClientCa {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    /// No CA names are hinted: they could not follow a rotation of the CA file (rustls
    /// borrows them from the verifier). An empty list asks the client for any certificate
    /// it has.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.current
            .load()
            .0
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current
            .load()
            .0
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current
            .load()
            .0
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.current.load().0.supported_verify_schemes()
    }
}

/// Runs once per connection when its handshake is done: on an mTLS listener, the verified
/// client certificate is read into a [`ClientCert`] kept with the connection.
struct Handshakes {
    client_certs: bool,
}

#[async_trait]
impl TlsAccept for Handshakes {
    async fn handshake_complete_callback(
        &self,
        tls: &TlsRef,
    ) -> Option<Arc<dyn Any + Send + Sync>> {
        if !self.client_certs {
            return None;
        }
        let cert = ClientCert::from_der(tls.peer_certificate_der()?)?;
        Some(Arc::new(cert))
    }
}

/// The verified client certificate of the connection a request came on, if any.
pub fn client_cert_of(digest: Option<&pingora::protocols::Digest>) -> Option<&ClientCert> {
    digest?.ssl_digest.as_ref()?.extension.get::<ClientCert>()
}
