//! `api_keys:`: keys in a header, kept only as SHA-256 hashes.

use sha2::{Digest, Sha256};

use crate::config::error::{join, Errors};
use crate::config::model::ApiKeySettings;
use crate::config::raw::RawApiKeys;
use crate::config::values::header_name;

const MIN_API_KEY_CHARS: usize = 16;

pub(super) fn validate(raw: RawApiKeys, path: &str, errors: &mut Errors) -> Option<ApiKeySettings> {
    let header_text = raw.header.unwrap_or_else(|| "X-Api-Key".to_owned());
    let header = header_name(&header_text, &join(path, "header"), errors);
    if raw.keys.is_empty() {
        errors.push(join(path, "keys"), "needs at least one key");
        return None;
    }
    let mut key_hashes: Vec<[u8; 32]> = Vec::with_capacity(raw.keys.len());
    let mut ok = true;
    for (index, key) in raw.keys.iter().enumerate() {
        let at = join(path, &format!("keys[{index}]"));
        let value = key.expose();
        if value.chars().count() < MIN_API_KEY_CHARS {
            errors.push(
                at,
                format!("is shorter than {MIN_API_KEY_CHARS} characters (too easy to guess)"),
            );
            ok = false;
            continue;
        }
        if http::HeaderValue::from_str(value).is_err() || value.trim() != value {
            errors.push(
                at,
                "holds characters a header value cannot carry (or surrounding spaces)",
            );
            ok = false;
            continue;
        }
        let hash: [u8; 32] = Sha256::digest(value.as_bytes()).into();
        if key_hashes.contains(&hash) {
            errors.push(at, "the same key is listed twice");
            ok = false;
            continue;
        }
        key_hashes.push(hash);
    }
    if !ok {
        return None;
    }
    Some(ApiKeySettings {
        header: header?,
        key_hashes,
    })
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    use crate::config::inbound::from_yaml;
    use crate::config::inbound::tests::assert_error;

    #[test]
    fn api_keys_are_checked_and_hashed() {
        assert_error(
            "api_keys: { keys: [] }",
            "routes[0].inbound.api_keys.keys: needs at least one key",
        );
        assert_error(
            "api_keys: { keys: [short] }",
            "routes[0].inbound.api_keys.keys[0]: is shorter than 16 characters",
        );
        assert_error(
            "api_keys: { keys: ['0123456789abcdef', '0123456789abcdef'] }",
            "routes[0].inbound.api_keys.keys[1]: the same key is listed twice",
        );
        assert_error(
            "api_keys: { keys: [' 0123456789abcdef'] }",
            "routes[0].inbound.api_keys.keys[0]: holds characters",
        );
        let settings = from_yaml("api_keys: { keys: ['0123456789abcdef'] }").unwrap();
        let expected: [u8; 32] = Sha256::digest(b"0123456789abcdef").into();
        assert_eq!(settings.api_keys.unwrap().key_hashes, [expected]);
    }
}
