//! API keys in a header. Only SHA-256 hashes of the configured keys are held; a presented
//! key is hashed and compared with every stored hash in constant time (no early exit, so the
//! time taken says nothing about which key, or which byte, was close).

use std::fmt;

use http::{HeaderMap, HeaderName};
use sha2::{Digest, Sha256};

use super::{Refusal, REALM};
use crate::config::inbound::ApiKeySettings;
use crate::secret::constant_time_eq;

pub(crate) struct ApiKeyCheck {
    header: HeaderName,
    hashes: Vec<[u8; 32]>,
}

impl fmt::Debug for ApiKeyCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeyCheck")
            .field("header", &self.header)
            .field("keys", &self.hashes.len())
            .finish()
    }
}

impl ApiKeyCheck {
    pub(crate) fn new(settings: &ApiKeySettings) -> ApiKeyCheck {
        ApiKeyCheck {
            header: settings.header.clone(),
            hashes: settings.key_hashes.clone(),
        }
    }

    pub(crate) fn check(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        let mut values = headers.get_all(&self.header).iter();
        let Some(value) = values.next() else {
            return Err(self.refusal("no API key was sent", false));
        };
        if values.next().is_some() {
            return Err(self.refusal("the API key header appears more than once", true));
        }
        let presented: [u8; 32] = Sha256::digest(value.as_bytes()).into();
        let mut matched = 0u8;
        for stored in &self.hashes {
            matched |= u8::from(constant_time_eq(stored, &presented));
        }
        if matched == 1 {
            Ok(())
        } else {
            Err(self.refusal("the API key is not valid", true))
        }
    }

    fn refusal(&self, detail: &str, invalid: bool) -> Refusal {
        let mut challenge = format!("ApiKey realm=\"{REALM}\", header=\"{}\"", self.header);
        if invalid {
            challenge.push_str(&format!(
                ", error=\"invalid_token\", error_description=\"{detail}\""
            ));
        }
        Refusal::Unauthenticated {
            detail: detail.to_owned(),
            www_authenticate: challenge,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const KEY_A: &str = "key-a-0123456789abcdef";
    const KEY_B: &str = "key-b-0123456789abcdef";

    fn check() -> ApiKeyCheck {
        ApiKeyCheck::new(&ApiKeySettings {
            header: HeaderName::from_static("x-api-key"),
            key_hashes: [KEY_A, KEY_B]
                .iter()
                .map(|key| Sha256::digest(key.as_bytes()).into())
                .collect(),
        })
    }

    fn with_key(key: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-api-key", HeaderValue::from_str(key).unwrap());
        headers
    }

    #[test]
    fn right_keys_pass_wrong_ones_do_not() {
        let check = check();
        assert_eq!(check.check(&with_key(KEY_A)), Ok(()));
        assert_eq!(check.check(&with_key(KEY_B)), Ok(()));
        for wrong in [
            "key-a-0123456789abcdeX",
            "",
            "key-a",
            "KEY-A-0123456789ABCDEF",
        ] {
            let refusal = check.check(&with_key(wrong)).unwrap_err();
            let Refusal::Unauthenticated {
                detail,
                www_authenticate,
            } = refusal
            else {
                panic!("not a 401: {refusal:?}");
            };
            assert_eq!(detail, "the API key is not valid");
            assert!(
                www_authenticate.starts_with("ApiKey realm=\"tollgate\", header=\"x-api-key\""),
                "{www_authenticate}"
            );
            assert!(!www_authenticate.contains(wrong) || wrong.is_empty());
        }
    }

    #[test]
    fn missing_and_repeated_keys_are_refused() {
        let check = check();
        let refusal = check.check(&HeaderMap::new()).unwrap_err();
        assert_eq!(
            refusal,
            Refusal::Unauthenticated {
                detail: "no API key was sent".into(),
                www_authenticate: "ApiKey realm=\"tollgate\", header=\"x-api-key\"".into(),
            }
        );
        let mut headers = with_key(KEY_A);
        headers.append("x-api-key", HeaderValue::from_static(KEY_B));
        let refusal = check.check(&headers).unwrap_err();
        assert_eq!(
            refusal.detail(),
            "the API key header appears more than once"
        );
        // Another header does not count.
        let mut headers = HeaderMap::new();
        headers.insert("authorization", HeaderValue::from_static(KEY_A));
        assert!(check.check(&headers).is_err());
    }

    #[test]
    fn keys_are_held_only_as_hashes() {
        let check = check();
        let debug = format!("{check:?}");
        assert_eq!(debug, "ApiKeyCheck { header: \"x-api-key\", keys: 2 }");
        assert!(!debug.contains(KEY_A) && !debug.contains(KEY_B));
        let expected: [u8; 32] = Sha256::digest(KEY_A.as_bytes()).into();
        assert_eq!(check.hashes[0], expected);
    }

    #[test]
    fn constant_time_eq_compares_every_byte() {
        let a = [7u8; 32];
        let mut b = a;
        assert!(constant_time_eq(&a, &b));
        b[31] ^= 1;
        assert!(!constant_time_eq(&a, &b));
        b = a;
        b[0] ^= 0x80;
        assert!(!constant_time_eq(&a, &b));
    }
}
