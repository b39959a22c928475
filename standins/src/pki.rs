//! Certificates made at test time (rcgen): a CA, and the server and client certificates it
//! signs, as PEM text or as files. The one PKI of tollgate's TLS tests, unit and end to end
//! alike (the `pki` feature, which only the tests turn on).

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair};

pub use rcgen::SanType;

/// The organisation of every leaf: with a comma, which a subject string must escape.
pub const ORGANIZATION: &str = "Example, Inc";

/// A CA that signs server and client certificates, with a directory for their files.
pub struct Pki {
    cert: rcgen::Certificate,
    key: KeyPair,
    dir: tempfile::TempDir,
}

/// A certificate and its key, PEM, and the certificate's DER.
#[derive(Clone)]
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: Vec<u8>,
}

impl Pki {
    /// A new CA whose common name is `name`.
    pub fn new(name: &str) -> Pki {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).expect("CA certificate");
        Pki {
            cert,
            key,
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn ca_pem(&self) -> String {
        self.cert.pem()
    }

    /// The CA certificate as the PEM file `ca.crt` in the PKI's directory.
    pub fn ca_file(&self) -> PathBuf {
        let path = self.path("ca.crt");
        std::fs::write(&path, self.ca_pem()).expect("write the CA");
        path
    }

    /// `file` in the PKI's directory, which lives as long as the PKI.
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// A server certificate for `localhost` and 127.0.0.1, with `common_name` to tell
    /// certificates apart, valid until 1 January of `not_after_year`.
    pub fn server(&self, common_name: &str, not_after_year: i32) -> Leaf {
        let sans = vec![
            SanType::DnsName("localhost".try_into().expect("DNS name")),
            SanType::IpAddress([127, 0, 0, 1].into()),
        ];
        self.leaf(common_name, sans, not_after_year)
    }

    /// A client certificate (or any leaf without the server's names), valid until 2040.
    pub fn client(&self, common_name: &str, sans: Vec<SanType>) -> Leaf {
        self.leaf(common_name, sans, 2040)
    }

    fn leaf(&self, common_name: &str, sans: Vec<SanType>, not_after_year: i32) -> Leaf {
        let key = KeyPair::generate().expect("leaf key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("leaf params");
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, ORGANIZATION);
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.subject_alt_names = sans;
        params.not_before = rcgen::date_time_ymd(2024, 1, 1);
        params.not_after = rcgen::date_time_ymd(not_after_year, 1, 1);
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("leaf certificate");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }

    /// `leaf` as the files `{stem}.crt` and `{stem}.key` in the PKI's directory.
    pub fn write(&self, stem: &str, leaf: &Leaf) -> (PathBuf, PathBuf) {
        let (cert, key) = (
            self.path(&format!("{stem}.crt")),
            self.path(&format!("{stem}.key")),
        );
        std::fs::write(&cert, &leaf.cert_pem).expect("write the certificate");
        std::fs::write(&key, &leaf.key_pem).expect("write the key");
        (cert, key)
    }

    /// What a kubernetes.io/tls Secret mounts (`tls.crt`, `tls.key` and `ca.crt`) for a
    /// new server certificate, in `dir`.
    pub fn write_tls_secret(&self, dir: &Path) {
        let leaf = self.server("gateway", 2040);
        std::fs::write(dir.join("tls.crt"), &leaf.cert_pem).expect("tls.crt");
        std::fs::write(dir.join("tls.key"), &leaf.key_pem).expect("tls.key");
        std::fs::write(dir.join("ca.crt"), self.ca_pem()).expect("ca.crt");
    }
}

/// Unix time of 1 January of `year`, as the certificates made here carry it in `notAfter`.
pub fn new_year(year: i32) -> i64 {
    rcgen::date_time_ymd(year, 1, 1).unix_timestamp()
}
