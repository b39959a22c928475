//! Certificates made at test time (rcgen): a CA, and leaf certificates it signs, written
//! as PEM files in a temporary directory.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, SanType,
};

pub struct TestCa {
    cert: rcgen::Certificate,
    key: KeyPair,
    pub dir: tempfile::TempDir,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).expect("CA cert");
        TestCa {
            cert,
            key,
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// The CA certificate as a PEM file named `file`.
    pub fn write_ca(&self, file: &str) -> PathBuf {
        let path = self.dir.path().join(file);
        std::fs::write(&path, self.cert.pem()).expect("write CA");
        path
    }

    /// A leaf for `subject` (common name and organisation) with the given SANs, written
    /// as `{stem}.crt` and `{stem}.key`; returns both paths.
    pub fn leaf(&self, stem: &str, common_name: &str, sans: Vec<SanType>) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().expect("leaf key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("leaf params");
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Example, Inc");
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.subject_alt_names = sans;
        params.not_after = rcgen::date_time_ymd(2040, 1, 1);
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("leaf cert");
        let crt = self.dir.path().join(format!("{stem}.crt"));
        let pem_key = self.dir.path().join(format!("{stem}.key"));
        std::fs::write(&crt, cert.pem()).expect("write cert");
        std::fs::write(&pem_key, key.serialize_pem()).expect("write key");
        (crt, pem_key)
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }
}

/// The DER of the first certificate in a PEM file.
pub fn der_of(path: &Path) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::from_pem_file(path)
        .expect("PEM certificate")
        .as_ref()
        .to_vec()
}
