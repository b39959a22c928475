//! Validation of `server.store` (fleet mode), without connecting to the store.

use std::time::Duration;

use base64::Engine;

use super::error::{join, Errors};
use super::model::{SentinelEndpoint, StoreEndpoint, StoreSettings};
use super::raw::RawStore;
use crate::secret::Secret;

const PATH: &str = "server.store";
const DEFAULT_KEY_PREFIX: &str = "tollgate/";
const DEFAULT_LEASE: Duration = Duration::from_secs(10);
const MAX_LEASE: Duration = Duration::from_secs(300);
const DEFAULT_TIMEOUT: Duration = Duration::from_millis(500);
const MAX_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_SENTINEL_PORT: u16 = 26379;

pub(crate) fn validate(raw: Option<RawStore>, errors: &mut Errors) -> Option<StoreSettings> {
    let raw = raw?;
    let endpoint = endpoint(raw.url.expose(), &join(PATH, "url"), errors);
    let key_path = join(PATH, "encryption_key");
    let key = base64::engine::general_purpose::STANDARD
        .decode(raw.encryption_key.expose().trim())
        .ok()
        .filter(|bytes| bytes.len() == 32);
    if key.is_none() {
        errors.push(
            key_path,
            "must be 32 random bytes, base64-encoded (for example `openssl rand -base64 32`)",
        );
    }
    let key_prefix = raw
        .key_prefix
        .unwrap_or_else(|| DEFAULT_KEY_PREFIX.to_owned());
    if key_prefix
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        errors.push(
            join(PATH, "key_prefix"),
            "must hold no spaces or control characters",
        );
    }
    let lease = raw.lease.map_or(DEFAULT_LEASE, |d| d.0);
    if lease < Duration::from_secs(1) || lease > MAX_LEASE {
        errors.push(
            join(PATH, "lease"),
            format!("must be between 1s and {}s", MAX_LEASE.as_secs()),
        );
    }
    let timeout = raw.timeout.map_or(DEFAULT_TIMEOUT, |d| d.0);
    if timeout.is_zero() || timeout > MAX_TIMEOUT {
        errors.push(
            join(PATH, "timeout"),
            format!(
                "must be longer than 0s and at most {}s",
                MAX_TIMEOUT.as_secs()
            ),
        );
    }
    Some(StoreSettings {
        endpoint: endpoint?,
        key_prefix,
        encryption_key: raw.encryption_key,
        lease,
        timeout,
    })
}

fn endpoint(url: &str, path: &str, errors: &mut Errors) -> Option<StoreEndpoint> {
    let scheme = url.split("://").next().unwrap_or_default();
    match scheme {
        "redis" | "rediss" | "valkey" | "valkeys" => match url::Url::parse(url) {
            Ok(parsed) if parsed.host_str().is_some_and(|h| !h.is_empty()) => {
                Some(StoreEndpoint::Direct(Secret::new(url)))
            }
            // The URL may hold a password: the message never quotes it.
            _ => {
                errors.push(path, "is not a URL like redis://host:6379/0");
                None
            }
        },
        "redis+sentinel" | "rediss+sentinel" => match sentinel(url, scheme == "rediss+sentinel") {
            Ok(endpoint) => Some(StoreEndpoint::Sentinel(endpoint)),
            Err(why) => {
                errors.push(path, why);
                None
            }
        },
        _ => {
            errors.push(
                path,
                "must start with redis://, rediss:// (TLS), valkey://, valkeys://, redis+sentinel:// or rediss+sentinel://",
            );
            None
        }
    }
}

/// `redis+sentinel://[user:password@]host[:port][,host[:port]...]/service[/db]`.
fn sentinel(url: &str, tls: bool) -> Result<SentinelEndpoint, &'static str> {
    const SHAPE: &str =
        "is not a URL like redis+sentinel://sentinel-1:26379,sentinel-2:26379/mymaster/0";
    let rest = url.split_once("://").map(|(_, rest)| rest).ok_or(SHAPE)?;
    let (credentials, rest) = match rest.rsplit_once('@') {
        Some((credentials, rest)) => (Some(credentials), rest),
        None => (None, rest),
    };
    let (hosts, path) = rest.split_once('/').ok_or(SHAPE)?;
    let mut sentinels = Vec::new();
    for host in hosts.split(',') {
        let (name, port) = match host.rsplit_once(':') {
            Some((name, port)) => (name, port.parse::<u16>().map_err(|_| SHAPE)?),
            None => (host, DEFAULT_SENTINEL_PORT),
        };
        if name.is_empty() {
            return Err(SHAPE);
        }
        sentinels.push((name.to_owned(), port));
    }
    let mut segments = path.split('/').filter(|s| !s.is_empty());
    let service = segments.next().ok_or(SHAPE)?.to_owned();
    let db = match segments.next() {
        Some(db) => db.parse().map_err(|_| SHAPE)?,
        None => 0,
    };
    let decode = |text: &str| {
        url::form_urlencoded::parse(format!("x={text}").as_bytes())
            .next()
            .map(|(_, value)| value.into_owned())
            .unwrap_or_default()
    };
    let (username, password) = match credentials {
        None => (None, None),
        Some(credentials) => match credentials.split_once(':') {
            Some((user, password)) => (
                Some(decode(user)).filter(|u| !u.is_empty()),
                Some(Secret::new(decode(password))),
            ),
            None => (Some(decode(credentials)), None),
        },
    };
    Ok(SentinelEndpoint {
        sentinels,
        service,
        db,
        username,
        password,
        tls,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint_of(url: &str) -> Result<StoreEndpoint, Vec<String>> {
        let mut errors = Errors::default();
        let endpoint = endpoint(url, "server.store.url", &mut errors);
        endpoint.ok_or_else(|| {
            errors
                .into_errors()
                .0
                .iter()
                .map(|e| e.to_string())
                .collect()
        })
    }

    #[test]
    fn direct_urls_are_kept_as_written() {
        for url in [
            "redis://127.0.0.1:6379/0",
            "rediss://:pw@redis.example:6380",
            "valkey://v",
        ] {
            assert_eq!(
                endpoint_of(url),
                Ok(StoreEndpoint::Direct(Secret::new(url))),
                "{url}"
            );
        }
    }

    #[test]
    fn sentinel_urls_name_their_sentinels_service_and_db() {
        let Ok(StoreEndpoint::Sentinel(endpoint)) =
            endpoint_of("rediss+sentinel://app:s3cret@s1:26380,s2/mymaster/2")
        else {
            panic!("not a sentinel endpoint");
        };
        assert_eq!(
            endpoint.sentinels,
            [
                ("s1".to_owned(), 26380),
                ("s2".to_owned(), DEFAULT_SENTINEL_PORT)
            ]
        );
        assert_eq!(
            (endpoint.service.as_str(), endpoint.db, endpoint.tls),
            ("mymaster", 2, true)
        );
        assert_eq!(endpoint.username.as_deref(), Some("app"));
        assert_eq!(
            endpoint.password.as_ref().map(Secret::expose),
            Some("s3cret")
        );
    }

    #[test]
    fn bad_urls_are_named_without_their_password() {
        for url in [
            "http://x",
            "redis://",
            "redis+sentinel://s1",
            "redis+sentinel://s1:x/m",
        ] {
            let errors = endpoint_of(url).unwrap_err();
            assert!(
                errors[0].starts_with("server.store.url"),
                "{url}: {errors:?}"
            );
        }
        let errors = endpoint_of("memcached://user:hunter2@x").unwrap_err();
        assert!(!errors[0].contains("hunter2"), "{errors:?}");
    }
}
