//! The caller's request head made canonical before anything decides on it: one `Host`, an
//! origin-form target whose path is canonical ([`super::canonical`]), and no header whose
//! name an upstream could read as another's. The router, the inbound checks and the
//! upstream all see this one request, whether it came as HTTP/1.1 or HTTP/2 (whose
//! `:authority` becomes the `Host`).

use pingora::http::RequestHeader;

use crate::canonical::{canonical_path, PathPolicy};
use crate::config::UnderscoreHeaders;

/// `server.paths` and `server.headers_with_underscores`.
#[derive(Debug, Clone, Copy, Default)]
pub struct HeadPolicy {
    pub paths: PathPolicy,
    pub underscores: UnderscoreHeaders,
}

/// What making the head canonical changed that is worth counting.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub underscore_headers_dropped: u64,
}

/// Rewrites `request` in place into its canonical form, or says (as the `detail` of a 400)
/// why it has none.
pub fn make_canonical(
    request: &mut RequestHeader,
    policy: &HeadPolicy,
) -> Result<Changes, &'static str> {
    if request
        .headers
        .get_all(http::header::HOST)
        .iter()
        .nth(1)
        .is_some()
    {
        return Err("the request has more than one Host header");
    }
    authority_as_host(request)?;
    canonical_target(request, policy)?;
    Ok(Changes {
        underscore_headers_dropped: underscore_headers(request, policy.underscores)?,
    })
}

/// HTTP/2 names the authority in `:authority` (RFC 9113 section 8.3.1) and may leave
/// `Host` out: the authority becomes the `Host`, as a proxy forwarding it as HTTP/1.1 must
/// do, and the target its path and query. pingora already refused the two differing.
fn authority_as_host(request: &mut RequestHeader) -> Result<(), &'static str> {
    if request.version != http::Version::HTTP_2 {
        return Ok(());
    }
    let Some(authority) = request.uri.authority().map(|a| a.as_str().to_owned()) else {
        return Ok(());
    };
    if !request.headers.contains_key(http::header::HOST) {
        request
            .insert_header(http::header::HOST, authority)
            .map_err(|_| "the request authority is not a valid Host")?;
    }
    let origin = request
        .uri
        .path_and_query()
        .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
    request
        .set_raw_path(origin.as_bytes())
        .map_err(|_| "the request target is not a valid URI")
}

/// The target in origin form with its path canonical; the query travels as it came. An
/// absolute-form target's authority is the `Host` already (pingora refuses the two
/// differing), so only its path and query are kept.
fn canonical_target(request: &mut RequestHeader, policy: &HeadPolicy) -> Result<(), &'static str> {
    let raw = request.raw_path();
    let origin_form = raw.first() == Some(&b'/');
    let (path, query): (&[u8], Option<&[u8]>) = if origin_form {
        match raw.iter().position(|&b| b == b'?') {
            Some(mark) => (&raw[..mark], Some(&raw[mark + 1..])),
            None => (raw, None),
        }
    } else if raw.windows(3).any(|w| w == b"://") {
        // pingora keeps only the path and query of an absolute-form target in the URI.
        (
            request.uri.path().as_bytes(),
            request.uri.query().map(str::as_bytes),
        )
    } else {
        return Err("the request target is not a path");
    };
    let canonical = canonical_path(path, &policy.paths).map_err(|refusal| refusal.detail())?;
    if origin_form && canonical.as_bytes() == path {
        return Ok(());
    }
    let mut target = Vec::with_capacity(canonical.len() + query.map_or(0, |q| q.len() + 1));
    target.extend_from_slice(canonical.as_bytes());
    if let Some(query) = query {
        target.push(b'?');
        target.extend_from_slice(query);
    }
    request
        .set_raw_path(&target)
        .map_err(|_| "the request target is not a valid URI")
}

/// Drops (or refuses) headers whose names hold `_`; returns how many were dropped.
fn underscore_headers(
    request: &mut RequestHeader,
    policy: UnderscoreHeaders,
) -> Result<u64, &'static str> {
    if policy == UnderscoreHeaders::Allow {
        return Ok(0);
    }
    let has_underscore = |name: &http::HeaderName| name.as_str().contains('_');
    if !request.headers.keys().any(has_underscore) {
        return Ok(0);
    }
    if policy == UnderscoreHeaders::Reject {
        return Err("header names with `_` are refused (server.headers_with_underscores)");
    }
    let names: Vec<http::HeaderName> = request
        .headers
        .keys()
        .filter(|name| has_underscore(name))
        .cloned()
        .collect();
    let mut dropped = 0;
    for name in names {
        dropped += request.headers.get_all(&name).iter().count() as u64;
        request.remove_header(&name);
    }
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(target: &[u8], headers: &[(&str, &str)]) -> RequestHeader {
        let mut request = RequestHeader::build("GET", target, None).unwrap();
        for (name, value) in headers {
            request.append_header(name.to_string(), *value).unwrap();
        }
        request
    }

    #[test]
    fn a_canonical_request_is_left_as_it_is() {
        let mut request = head(b"/a/b?x=%2e%2e", &[("host", "h")]);
        assert_eq!(
            make_canonical(&mut request, &HeadPolicy::default()),
            Ok(Changes::default())
        );
        assert_eq!(request.raw_path(), b"/a/b?x=%2e%2e");
    }

    #[test]
    fn the_path_is_made_canonical_and_the_query_kept() {
        let mut request = head(b"/a/%2e%2e/b/./c?q=../x", &[]);
        make_canonical(&mut request, &HeadPolicy::default()).unwrap();
        assert_eq!(request.raw_path(), b"/b/c?q=../x");
        assert_eq!(request.uri.path(), "/b/c");
    }

    #[test]
    fn an_absolute_form_target_becomes_its_canonical_path() {
        let mut request = head(b"http://h.example/a/../b?q", &[("host", "h.example")]);
        make_canonical(&mut request, &HeadPolicy::default()).unwrap();
        assert_eq!(request.raw_path(), b"/b?q");
    }

    #[test]
    fn what_cannot_be_made_canonical_is_refused() {
        for target in [&b"/../x"[..], b"/a%2fb", b"*", b"/a\\b"] {
            let mut request = head(target, &[]);
            assert!(make_canonical(&mut request, &HeadPolicy::default()).is_err());
        }
        let mut request = head(b"/", &[("host", "a"), ("host", "b")]);
        assert!(make_canonical(&mut request, &HeadPolicy::default()).is_err());
    }

    #[test]
    fn an_http2_authority_becomes_the_host() {
        let parts = http::Request::builder()
            .version(http::Version::HTTP_2)
            .uri("https://api.example:8443/a/./b?q=1")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        let mut request = RequestHeader::from(parts);
        make_canonical(&mut request, &HeadPolicy::default()).unwrap();
        assert_eq!(request.headers.get("host").unwrap(), "api.example:8443");
        assert_eq!(request.raw_path(), b"/a/b?q=1");
        assert_eq!(request.uri.authority(), None);
    }

    #[test]
    fn headers_with_underscores_are_dropped_refused_or_allowed() {
        let headers = [
            ("x_auth_subject", "admin"),
            ("X_Auth_Subject", "root"),
            ("x-trace_id", "t"),
            ("x-ok", "1"),
        ];
        let mut request = head(b"/", &headers);
        let changes = make_canonical(&mut request, &HeadPolicy::default()).unwrap();
        assert_eq!(changes.underscore_headers_dropped, 3);
        assert!(request.headers.get("x-trace_id").is_none());
        assert!(request.headers.get("x_auth_subject").is_none());
        assert_eq!(request.headers.get("x-ok").unwrap(), "1");

        let reject = HeadPolicy {
            underscores: UnderscoreHeaders::Reject,
            ..HeadPolicy::default()
        };
        assert!(make_canonical(&mut head(b"/", &headers), &reject).is_err());

        let allow = HeadPolicy {
            underscores: UnderscoreHeaders::Allow,
            ..HeadPolicy::default()
        };
        let mut request = head(b"/", &headers);
        make_canonical(&mut request, &allow).unwrap();
        assert!(request.headers.get("x_auth_subject").is_some());
    }
}
