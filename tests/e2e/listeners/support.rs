//! Support for the `listeners` tests: certificates made at test time (the stand-ins'
//! PKI), a Secret mount laid out as Kubernetes does it (files behind a `..data` symlink
//! that a rotation swaps), TLS, HTTP/1.1 and HTTP/2 clients, and the real peers in this
//! directory run by Python: a gRPC server and client (grpcio, `grpc_peer.py`) and a TLS
//! client pinned to one protocol version (OpenSSL, `tls_version.py`). `.ci/deps` installs
//! grpcio.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

use crate::common::venv_python;

/// The directory of the Python peers.
fn support_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/listeners")
}

// ---------------------------------------------------------------------------------------
// Certificates: the tests' PKI ([`Pki`]), and what a test reads back from them.
// ---------------------------------------------------------------------------------------

pub use tollgate_standins::pki::{new_year, Leaf, Pki, SanType};

/// The common name of a certificate.
pub fn common_name(der: &[u8]) -> String {
    let (_, cert) = x509_parser::parse_x509_certificate(der).expect("a certificate");
    let name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default()
        .to_owned();
    name
}

// ---------------------------------------------------------------------------------------
// A Secret mount.
// ---------------------------------------------------------------------------------------

/// Files as a Kubernetes Secret volume shows them: `tls.crt -> ..data/tls.crt`, `..data ->
/// ..<generation>`. A rotation writes a new generation and renames a new `..data` symlink
/// over the old one, so the files change all at once.
pub struct SecretMount {
    dir: tempfile::TempDir,
    generation: usize,
}

impl SecretMount {
    pub fn new(files: &[(&str, &str)]) -> SecretMount {
        let mut mount = SecretMount {
            dir: tempfile::tempdir().expect("tempdir"),
            generation: 0,
        };
        mount.swap(files);
        for (name, _) in files {
            std::os::unix::fs::symlink(format!("..data/{name}"), mount.path(name))
                .expect("file symlink");
        }
        mount
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `files` as the next generation and points `..data` at it atomically.
    pub fn swap(&mut self, files: &[(&str, &str)]) {
        self.generation += 1;
        let generation = format!(
            "..2026_01_01_00_00_{:02}.{}",
            self.generation, self.generation
        );
        let dir = self.dir.path().join(&generation);
        std::fs::create_dir(&dir).expect("generation dir");
        for (name, content) in files {
            std::fs::write(dir.join(name), content).expect("write secret file");
        }
        let staged = self.dir.path().join("..data_tmp");
        std::os::unix::fs::symlink(&generation, &staged).expect("..data_tmp");
        std::fs::rename(&staged, self.dir.path().join("..data")).expect("swap ..data");
    }
}

// ---------------------------------------------------------------------------------------
// TLS, HTTP/1.1 and HTTP/2 clients.
// ---------------------------------------------------------------------------------------

/// A client config trusting `ca_pem`, presenting `identity` when given, offering `alpn`.
pub fn tls_config(ca_pem: &str, identity: Option<&Leaf>, alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("CA certificate");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots);
    let mut config = match identity {
        Some(leaf) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from(leaf.der.clone())],
                PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).expect("key PEM"),
            )
            .expect("client identity"),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// A TLS connection to `addr` for the name `localhost`.
pub async fn tls_connect(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").expect("server name");
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
}

/// The leaf certificate the server presented.
pub fn server_cert(stream: &TlsStream<TcpStream>) -> Vec<u8> {
    stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first())
        .map(|cert| cert.as_ref().to_vec())
        .expect("the server presented a certificate")
}

/// The ALPN protocol the server chose.
pub fn alpn(stream: &TlsStream<TcpStream>) -> Option<Vec<u8>> {
    stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec)
}

/// One HTTP/1.1 `GET` on a kept-alive connection: status and body (by `Content-Length`).
pub async fn http1_get<S>(stream: &mut S, path: &str) -> std::io::Result<(u16, String)>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    http1_get_with(stream, path, &[]).await
}

/// [`http1_get`] with more request headers.
pub async fn http1_get_with<S>(
    stream: &mut S,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<(u16, String)>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let extra: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n{extra}\r\n");
    stream.write_all(request.as_bytes()).await?;
    stream.flush().await?;
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    if reader.read_line(&mut status_line).await? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {status_line:?}")))?;
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).await?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).await?;
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// One HTTP/2 `GET` over an established connection (TLS, or plain for h2c): status and
/// body.
pub async fn h2_get<S>(stream: S, authority: &str, path: &str) -> (u16, String)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut client, connection) = h2::client::handshake(stream).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let request = http::Request::get(format!("https://{authority}{path}"))
        .body(())
        .expect("request");
    let (response, _) = client.send_request(request, true).expect("send request");
    let response = response.await.expect("h2 response");
    let status = response.status().as_u16();
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("h2 body");
        body.flow_control()
            .release_capacity(chunk.len())
            .expect("flow control");
        bytes.extend_from_slice(&chunk);
    }
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// A reqwest client trusting `ca_pem` (HTTP/1.1).
pub fn https_client(ca_pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).expect("CA"))
        .timeout(Duration::from_secs(15))
        .build()
        .expect("reqwest client")
}

// ---------------------------------------------------------------------------------------
// The Python peers.
// ---------------------------------------------------------------------------------------

/// A command of the tests' Python ([`venv_python`]), killed when dropped.
fn python() -> tokio::process::Command {
    let mut command = tokio::process::Command::new(venv_python());
    command
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

/// A grpcio server (`grpc_peer.py serve`): `/echo.v1.Echo/Unary` answers with the
/// metadata it received and sets the trailer `x-echo-trailer: kept`; `/echo.v1.Echo/Fail`
/// answers NOT_FOUND. Killed when dropped.
pub struct GrpcServer {
    _child: tokio::process::Child,
    pub port: u16,
}

impl GrpcServer {
    /// Plain HTTP/2 (h2c), or TLS with the given certificate and key files.
    pub async fn start(tls: Option<(&Path, &Path)>) -> GrpcServer {
        let mut command = python();
        command.arg(support_dir().join("grpc_peer.py")).arg("serve");
        if let Some((cert, key)) = tls {
            command.arg(cert).arg(key);
        }
        // The server stops when its stdin closes, that is when this process is gone.
        command.stdin(Stdio::piped()).stdout(Stdio::piped());
        let mut child = command.spawn().expect("python3 in .ci/venv");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("the gRPC server did not start within 30 s")
            .expect("gRPC server output");
        let port = line
            .as_deref()
            .and_then(|l| l.strip_prefix("PORT "))
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| {
                panic!("the gRPC server said {line:?}, not PORT n (is grpcio installed? run `bash .ci/deps`)")
            });
        GrpcServer {
            _child: child,
            port,
        }
    }
}

/// One unary call with grpcio (`grpc_peer.py call`); `args` are its flags (`--ca FILE`,
/// `--name NAME`, `--metadata K=V`). The outcome as JSON: `code`, `details`, `reply`,
/// `initial` and `trailing` metadata.
pub async fn grpc_call(target: &str, method: &str, args: &[&str]) -> Value {
    let output = python()
        .arg(support_dir().join("grpc_peer.py"))
        .args(["call", target, method])
        .args(args)
        .output()
        .await
        .expect("python3");
    let text = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|_| {
        panic!(
            "grpc_peer.py call printed {text:?}; stderr: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// One TLS handshake pinned to `version` (`TLSv1_1`, `TLSv1_2`, `TLSv1_3`) by OpenSSL:
/// `ok <version>` or `refused <reason>`.
pub async fn handshake_with_version(port: u16, ca_file: &Path, version: &str) -> String {
    let output = python()
        .arg(support_dir().join("tls_version.py"))
        .args(["127.0.0.1", &port.to_string()])
        .arg(ca_file)
        .arg(version)
        .output()
        .await
        .expect("python3");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}
