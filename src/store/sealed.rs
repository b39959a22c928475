//! What goes into the store, and how: nothing in clear. A stored value is
//! `<fingerprint>:<base64(nonce ‖ ChaCha20-Poly1305(record))>`, sealed under the store's
//! encryption key with the store key as associated data (so a value cannot be moved to
//! another provider's key). The fingerprint is an HMAC of the token under a key derived
//! from the same secret: replicas compare tokens by it (a purge deletes exactly the token an
//! upstream rejected), and without the key it says nothing. Store keys name the provider and
//! an HMAC of its settings (secrets included), so a rotated secret never finds an old token
//! and a key name reveals no hash of a secret that could be guessed offline.

use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::secret::Secret;

const NONCE_BYTES: usize = 12;

/// A token as replicas share it.
#[derive(Debug)]
pub struct Record {
    pub access_token: Secret,
    pub token_type: Option<String>,
    /// Unix milliseconds.
    pub expires_at_ms: u64,
    /// The lifetime the token had when it was issued, so every replica renews it at the same
    /// point.
    pub lifetime_ms: u64,
    /// Used only by the replica holding the lease.
    pub refresh_token: Option<Secret>,
    pub refresh_expires_at_ms: Option<u64>,
}

/// The serialized form; its buffers are zeroed once sealed or opened.
#[derive(Serialize, Deserialize)]
struct Plain {
    t: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    ty: Option<String>,
    exp: u64,
    life: u64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    rt: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    rexp: Option<u64>,
}

impl Drop for Plain {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.t.zeroize();
        if let Some(refresh) = self.rt.as_mut() {
            refresh.zeroize();
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("a stored value is not in tollgate's format")]
    Malformed,
    /// Another key sealed it (a replica with another `encryption_key`), or it was changed.
    #[error("a stored value does not open with this encryption key")]
    WrongKey,
}

/// Seals and opens records, and derives keys and fingerprints, under one secret.
pub struct Sealer {
    cipher: ChaCha20Poly1305,
    mac_key: Zeroizing<[u8; 32]>,
}

impl Sealer {
    /// `secret` is the store's 32-byte `encryption_key`; the cipher key and the HMAC key are
    /// derived from it apart.
    pub fn new(secret: &[u8; 32]) -> Sealer {
        let derive = |label: &[u8]| -> Zeroizing<[u8; 32]> {
            let mut mac =
                <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes any key size");
            mac.update(label);
            Zeroizing::new(mac.finalize().into_bytes().into())
        };
        let cipher_key = derive(b"tollgate store: seal");
        Sealer {
            cipher: ChaCha20Poly1305::new(cipher_key.as_ref().into()),
            mac_key: derive(b"tollgate store: names"),
        }
    }

    fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.mac_key.as_ref())
            .expect("HMAC takes any key size");
        for part in parts {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }

    /// The name a provider's entries go under: its name, and an HMAC of its identity.
    pub fn provider_tag(&self, name: &str, identity: &[u8; 32]) -> String {
        let mac = self.mac(&[b"provider", name.as_bytes(), identity]);
        format!("{name}/{}", hex(&mac[..16]))
    }

    /// How replicas tell tokens apart: an HMAC of the token, 32 hex digits.
    pub fn fingerprint(&self, token: &Secret) -> String {
        hex(&self.mac(&[b"token", token.expose().as_bytes()])[..16])
    }

    /// The stored value of `record` under store key `key`.
    pub fn seal(&self, key: &str, record: &Record) -> String {
        let plain = Plain {
            t: record.access_token.expose().to_owned(),
            ty: record.token_type.clone(),
            exp: record.expires_at_ms,
            life: record.lifetime_ms,
            rt: record.refresh_token.as_ref().map(|r| r.expose().to_owned()),
            rexp: record.refresh_expires_at_ms,
        };
        let json = Zeroizing::new(serde_json::to_vec(&plain).unwrap_or_default());
        let nonce_bytes: [u8; NONCE_BYTES] = rand::random();
        let nonce = Nonce::from_slice(&nonce_bytes);
        let sealed = self
            .cipher
            .encrypt(
                nonce,
                Payload {
                    msg: &json,
                    aad: key.as_bytes(),
                },
            )
            .unwrap_or_default();
        let mut blob = nonce_bytes.to_vec();
        blob.extend_from_slice(&sealed);
        format!(
            "{}:{}",
            self.fingerprint(&record.access_token),
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(blob)
        )
    }

    /// The fingerprint a stored value starts with, without opening it.
    pub fn fingerprint_of(value: &str) -> Option<&str> {
        value.split_once(':').map(|(fingerprint, _)| fingerprint)
    }

    /// The record in `value`, stored under `key`.
    pub fn open(&self, key: &str, value: &str) -> Result<Record, SealError> {
        let (_, blob) = value.split_once(':').ok_or(SealError::Malformed)?;
        let blob = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(blob)
            .map_err(|_| SealError::Malformed)?;
        if blob.len() <= NONCE_BYTES {
            return Err(SealError::Malformed);
        }
        let (nonce, sealed) = blob.split_at(NONCE_BYTES);
        let json = Zeroizing::new(
            self.cipher
                .decrypt(
                    Nonce::from_slice(nonce),
                    Payload {
                        msg: sealed,
                        aad: key.as_bytes(),
                    },
                )
                .map_err(|_| SealError::WrongKey)?,
        );
        let plain: Plain = serde_json::from_slice(&json).map_err(|_| SealError::Malformed)?;
        Ok(Record {
            access_token: Secret::new(plain.t.clone()),
            token_type: plain.ty.clone(),
            expires_at_ms: plain.exp,
            lifetime_ms: plain.life,
            refresh_token: plain.rt.clone().map(Secret::new),
            refresh_expires_at_ms: plain.rexp,
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        Record {
            access_token: Secret::new("access-token-value-123"),
            token_type: Some("Bearer".into()),
            expires_at_ms: 1_900_000_000_000,
            lifetime_ms: 3_600_000,
            refresh_token: Some(Secret::new("refresh-token-value-456")),
            refresh_expires_at_ms: None,
        }
    }

    #[test]
    fn a_sealed_record_opens_under_its_key_only_and_shows_nothing_in_clear() {
        let sealer = Sealer::new(&[7; 32]);
        let value = sealer.seal("tollgate/token/idp/x", &record());
        assert!(!value.contains("access-token-value") && !value.contains("refresh-token-value"));
        let opened = sealer.open("tollgate/token/idp/x", &value).unwrap();
        assert_eq!(opened.access_token.expose(), "access-token-value-123");
        assert_eq!(
            opened.refresh_token.unwrap().expose(),
            "refresh-token-value-456"
        );
        assert_eq!(opened.expires_at_ms, 1_900_000_000_000);
        // Moved to another key, or opened with another secret: refused.
        assert_eq!(
            sealer.open("tollgate/token/other/x", &value).unwrap_err(),
            SealError::WrongKey
        );
        assert_eq!(
            Sealer::new(&[8; 32])
                .open("tollgate/token/idp/x", &value)
                .unwrap_err(),
            SealError::WrongKey
        );
        assert_eq!(
            sealer.open("k", "garbage").unwrap_err(),
            SealError::Malformed
        );
    }

    #[test]
    fn the_fingerprint_leads_the_value_and_needs_the_key() {
        let sealer = Sealer::new(&[7; 32]);
        let value = sealer.seal("k", &record());
        let fingerprint = sealer.fingerprint(&record().access_token);
        assert_eq!(Sealer::fingerprint_of(&value), Some(fingerprint.as_str()));
        assert_ne!(
            Sealer::new(&[8; 32]).fingerprint(&record().access_token),
            fingerprint
        );
    }

    #[test]
    fn provider_tags_change_with_the_settings_and_hide_them() {
        let sealer = Sealer::new(&[7; 32]);
        let a = sealer.provider_tag("idp", &[1; 32]);
        assert!(a.starts_with("idp/"));
        assert_ne!(a, sealer.provider_tag("idp", &[2; 32]));
        assert_ne!(a, Sealer::new(&[8; 32]).provider_tag("idp", &[1; 32]));
    }
}
