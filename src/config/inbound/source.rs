//! Where a check reads the caller's credential, and RFC 9110 tokens (auth schemes, cookie
//! names, methods).

use crate::config::error::{join, Errors};
use crate::config::model::TokenSource;
use crate::config::raw::RawTokenSource;
use crate::config::values::{header_name, one_of, OneOf};

/// The `from:` of a check; `default` when it is not written.
pub(super) fn validate(
    raw: Option<RawTokenSource>,
    default: TokenSource,
    path: &str,
    errors: &mut Errors,
) -> Option<TokenSource> {
    let Some(raw) = raw else {
        return Some(default);
    };
    let given = one_of(
        raw.header,
        raw.cookie,
        path,
        "give header (with an optional scheme) or cookie",
        "give header or cookie, not both",
        errors,
    );
    match given? {
        OneOf::First(header) => {
            let name = header_name(&header, &join(path, "header"), errors);
            let scheme = match raw.scheme {
                Some(scheme) if !is_token(&scheme) => {
                    errors.push(
                        join(path, "scheme"),
                        format!("`{scheme}` is not an auth scheme like Bearer"),
                    );
                    return None;
                }
                other => other,
            };
            Some(TokenSource::Header {
                name: name?,
                scheme,
            })
        }
        OneOf::Second(cookie) => {
            if raw.scheme.is_some() {
                errors.push(join(path, "scheme"), "only a header has a scheme");
                return None;
            }
            if !is_token(&cookie) {
                errors.push(
                    join(path, "cookie"),
                    format!("`{cookie}` is not a valid cookie name"),
                );
                return None;
            }
            Some(TokenSource::Cookie { name: cookie })
        }
    }
}

/// An RFC 9110 token (header names, auth schemes, cookie names, methods).
pub(super) fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}
