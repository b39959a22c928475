//! The identity a verified client certificate gives (mTLS): its subject and its subject
//! alternative names, as header-safe text, read once per connection at the end of the
//! handshake.

use std::fmt::Write as _;
use std::net::IpAddr;

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::x509::X509Name;

/// What a route's inbound check `client_cert` reads, and the identity headers
/// `client_cert.subject` and `client_cert.sans` are set from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    /// The subject as an RFC 4514 string, most specific attribute first
    /// (`CN=reporting,O=Example Corp,C=DE`).
    pub subject: String,
    /// The subject alternative names, each with its type (`DNS:api.example`,
    /// `URI:spiffe://cluster.local/ns/reports/sa/api`, `IP:10.0.0.7`, `email:ops@example`).
    pub sans: Vec<String>,
}

impl ClientCert {
    /// Reads the leaf certificate the handshake verified; `None` when it does not parse
    /// (rustls has verified it, so this does not happen with a well-formed chain).
    pub fn from_der(der: &[u8]) -> Option<ClientCert> {
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        Some(ClientCert {
            subject: rfc4514(cert.subject()),
            sans: sans(&cert),
        })
    }

    /// The subject alternative names joined with `,` (no name holds a bare `,`: URIs have
    /// it percent-encoded).
    pub fn sans_text(&self) -> String {
        self.sans.join(",")
    }
}

/// RFC 4514 short names of the attribute types it lists; others are written as their OID.
const SHORT_NAMES: [(&str, &str); 9] = [
    ("2.5.4.3", "CN"),
    ("2.5.4.7", "L"),
    ("2.5.4.8", "ST"),
    ("2.5.4.10", "O"),
    ("2.5.4.11", "OU"),
    ("2.5.4.6", "C"),
    ("2.5.4.9", "STREET"),
    ("0.9.2342.19200300.100.1.25", "DC"),
    ("0.9.2342.19200300.100.1.1", "UID"),
];

/// The name in RFC 4514 form: RDNs in reverse order of the encoding, `,` between them,
/// `+` inside a multi-valued RDN, special characters escaped, and every byte outside
/// printable ASCII written as `\XX` so that the text is a valid header value.
fn rfc4514(name: &X509Name<'_>) -> String {
    let mut out = String::new();
    let rdns: Vec<_> = name.iter().collect();
    for (index, rdn) in rdns.iter().rev().enumerate() {
        if index > 0 {
            out.push(',');
        }
        for (position, attribute) in rdn.iter().enumerate() {
            if position > 0 {
                out.push('+');
            }
            let oid = attribute.attr_type().to_id_string();
            let short = SHORT_NAMES
                .iter()
                .find(|(id, _)| *id == oid)
                .map(|(_, short)| *short);
            out.push_str(short.unwrap_or(&oid));
            out.push('=');
            match attribute.as_str() {
                Ok(text) => escape_value(text, &mut out),
                // Not a string type: the DER of the value in hex (RFC 4514 section 2.4).
                Err(_) => {
                    out.push('#');
                    for byte in attribute.attr_value().data {
                        let _ = write!(out, "{byte:02x}");
                    }
                }
            }
        }
    }
    out
}

fn escape_value(text: &str, out: &mut String) {
    let last = text.len().saturating_sub(1);
    for (index, byte) in text.bytes().enumerate() {
        let leading = index == 0 && (byte == b' ' || byte == b'#');
        let trailing = index == last && byte == b' ';
        match byte {
            b'"' | b'+' | b',' | b';' | b'<' | b'>' | b'\\' | b'=' => {
                out.push('\\');
                out.push(byte as char);
            }
            _ if leading || trailing => {
                out.push('\\');
                out.push(byte as char);
            }
            0x21..=0x7e | b' ' => out.push(byte as char),
            _ => {
                let _ = write!(out, "\\{byte:02X}");
            }
        }
    }
}

fn sans(cert: &X509Certificate<'_>) -> Vec<String> {
    let Ok(Some(extension)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    extension
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => visible("DNS:", dns),
            GeneralName::URI(uri) => visible("URI:", &uri.replace(',', "%2C")),
            GeneralName::RFC822Name(email) => visible("email:", email),
            GeneralName::IPAddress(bytes) => ip(bytes).map(|ip| format!("IP:{ip}")),
            _ => None,
        })
        .collect()
}

/// `prefix` + `text` when `text` is visible ASCII (a header value can carry it as it is).
fn visible(prefix: &str, text: &str) -> Option<String> {
    (!text.is_empty() && text.bytes().all(|b| (0x21..=0x7e).contains(&b)) && !text.contains(','))
        .then(|| format!("{prefix}{text}"))
}

fn ip(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(text: &str) -> String {
        let mut out = String::new();
        escape_value(text, &mut out);
        out
    }

    #[test]
    fn values_are_escaped_as_rfc_4514_says() {
        assert_eq!(escaped("Example Corp"), "Example Corp");
        assert_eq!(escaped("a,b+c"), "a\\,b\\+c");
        assert_eq!(escaped(" lead"), "\\ lead");
        assert_eq!(escaped("#x"), "\\#x");
        assert_eq!(escaped("trail "), "trail\\ ");
        assert_eq!(escaped("Zürich"), "Z\\C3\\BCrich");
        assert_eq!(escaped("a\nb"), "a\\0Ab");
    }

    #[test]
    fn subject_and_sans_are_read_from_the_certificate() {
        use tollgate_standins::pki::{Pki, SanType};
        let ca = Pki::new("Test CA");
        let leaf = ca.client(
            "reporting",
            vec![
                SanType::DnsName("reports.example".try_into().unwrap()),
                SanType::URI("spiffe://cluster.local/ns/r/sa/api".try_into().unwrap()),
                SanType::IpAddress([10, 0, 0, 7].into()),
                SanType::Rfc822Name("ops@example.com".try_into().unwrap()),
            ],
        );
        let cert = ClientCert::from_der(&leaf.der).unwrap();
        assert_eq!(cert.subject, "CN=reporting,O=Example\\, Inc");
        assert_eq!(
            cert.sans_text(),
            "DNS:reports.example,URI:spiffe://cluster.local/ns/r/sa/api,IP:10.0.0.7,email:ops@example.com"
        );
    }

    #[test]
    fn names_a_header_cannot_carry_are_left_out() {
        assert_eq!(visible("DNS:", "a.example"), Some("DNS:a.example".into()));
        assert_eq!(visible("DNS:", "a b"), None);
        assert_eq!(visible("DNS:", ""), None);
        assert_eq!(ip(&[10, 0, 0, 7]), Some(IpAddr::from([10, 0, 0, 7])));
        assert_eq!(ip(&[1, 2, 3]), None);
    }
}
