//! Canonical request paths: the one path that is routed, checked and forwarded.
//!
//! A router that matches the raw path while the upstream resolves `..` (or decodes `%2e`)
//! lets `/public/%2e%2e/private/x` pass the public route's (absent) checks and reach a
//! private file. So before routing, the path is normalised as RFC 3986 section 6 says:
//! percent-encoded unreserved characters are decoded and other escapes upper-cased,
//! characters that may not appear in a path are escaped, repeated slashes are merged (by
//! default), and `.` and `..` segments are removed. What cannot be made safe is refused:
//! climbing above `/`, an encoded slash or backslash (by default), a raw backslash, NUL and
//! control characters, a malformed escape, and a dot segment carrying `;` parameters
//! (`..;`), which Java servers read as `..`.
//!
//! Most paths are canonical already; they are recognised in one pass and borrowed.

use std::borrow::Cow;

/// `server.paths`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathPolicy {
    pub merge_slashes: bool,
    pub escaped_slashes: EscapedSlashes,
}

impl Default for PathPolicy {
    fn default() -> Self {
        PathPolicy {
            merge_slashes: true,
            escaped_slashes: EscapedSlashes::Reject,
        }
    }
}

/// What to do with `%2F` and `%5C` in a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EscapedSlashes {
    /// Refuse the request: an upstream that decodes them would see other segments.
    #[default]
    Reject,
    /// Keep them encoded, as data inside a segment (for APIs that put ids with slashes in
    /// a segment). A dot segment next to one is still refused.
    Keep,
}

/// Why a path cannot be made canonical; the request gets a 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathRefusal {
    NotAPath,
    ClimbsAboveRoot,
    EncodedSlash,
    Backslash,
    ControlCharacter,
    BadEscape,
    DotSegmentWithParameters,
}

impl PathRefusal {
    /// The `detail` of the 400.
    pub fn detail(self) -> &'static str {
        match self {
            PathRefusal::NotAPath => "the request target is not a path",
            PathRefusal::ClimbsAboveRoot => "the path climbs above `/` with `..` segments",
            PathRefusal::EncodedSlash => {
                "the path holds an encoded slash or backslash (%2F, %5C), which is refused (server.paths.escaped_slashes)"
            }
            PathRefusal::Backslash => "the path holds a backslash",
            PathRefusal::ControlCharacter => "the path holds a NUL or control character",
            PathRefusal::BadEscape => "the path holds a `%` that is not followed by two hex digits",
            PathRefusal::DotSegmentWithParameters => {
                "the path holds a `.` or `..` segment with `;` parameters"
            }
        }
    }
}

/// The canonical form of `path` (the part of the request target before `?`), or why there
/// is none. Borrows when `path` is canonical already.
pub fn canonical_path<'a>(
    path: &'a [u8],
    policy: &PathPolicy,
) -> Result<Cow<'a, str>, PathRefusal> {
    if path.is_empty() {
        return Ok(Cow::Borrowed("/"));
    }
    if path[0] != b'/' {
        return Err(PathRefusal::NotAPath);
    }
    if is_canonical(path, policy) {
        // Only ASCII passed the check.
        return std::str::from_utf8(path)
            .map(Cow::Borrowed)
            .map_err(|_| PathRefusal::ControlCharacter);
    }
    normalise(path, policy).map(Cow::Owned)
}

/// Characters a path segment may hold as they are (RFC 3986 `pchar` without `%`).
fn is_plain(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&byte)
}

fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"-._~".contains(&byte)
}

/// One pass over a path that needs no change: plain characters only, no empty segment
/// inside it (when slashes are merged), no dot segment.
fn is_canonical(path: &[u8], policy: &PathPolicy) -> bool {
    let mut segments = path[1..].split(|&b| b == b'/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        if segment.is_empty() {
            if policy.merge_slashes && !last {
                return false;
            }
            continue;
        }
        if !is_canonical_segment_text(segment) || is_dot_segment(segment) {
            return false;
        }
        if segment[0] == b'.' && dot_before_parameters(segment) {
            return false;
        }
    }
    true
}

/// Plain characters, and escapes already in canonical form: upper-case hex of a character
/// that must stay escaped (not unreserved, not a control, not a slash or backslash).
fn is_canonical_segment_text(segment: &[u8]) -> bool {
    let mut index = 0;
    while index < segment.len() {
        let byte = segment[index];
        if byte == b'%' {
            let upper_hex = |b: &u8| b.is_ascii_digit() || (b'A'..=b'F').contains(b);
            let Some(hex) = segment.get(index + 1..index + 3) else {
                return false;
            };
            if !hex.iter().all(upper_hex) {
                return false;
            }
            let value = (hex_value(hex[0]).unwrap_or(0) << 4) | hex_value(hex[1]).unwrap_or(0);
            if is_unreserved(value)
                || value < 0x20
                || value == 0x7f
                || value == b'/'
                || value == b'\\'
            {
                return false;
            }
            index += 3;
        } else if is_plain(byte) {
            index += 1;
        } else {
            return false;
        }
    }
    true
}

fn is_dot_segment(segment: &[u8]) -> bool {
    segment == b"." || segment == b".."
}

/// `.;x` or `..;x`: a dot segment to servers that strip `;` parameters from segments.
fn dot_before_parameters(segment: &[u8]) -> bool {
    let name = segment.split(|&b| b == b';').next().unwrap_or(segment);
    name.len() < segment.len() && is_dot_segment(name)
}

/// The slow path: each segment decoded into canonical text, then dot segments resolved
/// against the segments kept so far.
fn normalise(path: &[u8], policy: &PathPolicy) -> Result<String, PathRefusal> {
    let mut out = String::with_capacity(path.len() + 8);
    // Where each kept segment's leading `/` sits in `out`, for `..` to cut back to.
    let mut starts: Vec<usize> = Vec::new();
    let mut segments = path[1..].split(|&b| b == b'/').peekable();
    let mut decoded = String::new();
    while let Some(raw) = segments.next() {
        let last = segments.peek().is_none();
        let encoded_slash = decode_segment(raw, policy, &mut decoded)?;
        let bytes = decoded.as_bytes();
        if bytes.is_empty() && policy.merge_slashes && !last {
            continue;
        }
        if bytes.first() == Some(&b'.') && dot_before_parameters(bytes) {
            return Err(PathRefusal::DotSegmentWithParameters);
        }
        if encoded_slash && holds_dot_segment_between_escaped_slashes(&decoded) {
            return Err(PathRefusal::EncodedSlash);
        }
        match bytes {
            b"." => {}
            b".." => {
                let start = starts.pop().ok_or(PathRefusal::ClimbsAboveRoot)?;
                out.truncate(start);
            }
            _ => {
                starts.push(out.len());
                out.push('/');
                out.push_str(&decoded);
                continue;
            }
        }
        // A dot segment at the end leaves a directory: `/a/b/..` is `/a/`.
        if last {
            out.push('/');
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// Writes the canonical text of one raw segment into `out`; returns whether it holds an
/// escaped slash or backslash that was kept.
fn decode_segment(raw: &[u8], policy: &PathPolicy, out: &mut String) -> Result<bool, PathRefusal> {
    out.clear();
    let mut encoded_slash = false;
    let mut index = 0;
    while index < raw.len() {
        let byte = raw[index];
        match byte {
            b'%' => {
                let value = raw
                    .get(index + 1..index + 3)
                    .and_then(|hex| Some(hex_value(hex[0])? << 4 | hex_value(hex[1])?))
                    .ok_or(PathRefusal::BadEscape)?;
                index += 3;
                if is_unreserved(value) {
                    out.push(char::from(value));
                    continue;
                }
                if value < 0x20 || value == 0x7f {
                    return Err(PathRefusal::ControlCharacter);
                }
                if value == b'/' || value == b'\\' {
                    if policy.escaped_slashes == EscapedSlashes::Reject {
                        return Err(PathRefusal::EncodedSlash);
                    }
                    encoded_slash = true;
                }
                push_escape(out, value);
                continue;
            }
            b'\\' => return Err(PathRefusal::Backslash),
            _ if byte < 0x20 || byte == 0x7f => return Err(PathRefusal::ControlCharacter),
            _ if is_plain(byte) => out.push(char::from(byte)),
            // Anything else (non-ASCII bytes, `"`, `<`, `{`, ...) travels escaped.
            _ => push_escape(out, byte),
        }
        index += 1;
    }
    Ok(encoded_slash)
}

/// With `escaped_slashes: keep`, `..%2F` or `%2F..` in a segment becomes a dot segment
/// for any upstream that decodes the slash; such a segment is never forwarded.
fn holds_dot_segment_between_escaped_slashes(segment: &str) -> bool {
    // The segment is canonical text here, so its escapes are upper-case.
    segment
        .split("%2F")
        .flat_map(|piece| piece.split("%5C"))
        .any(|piece| {
            let name = piece.split(';').next().unwrap_or(piece);
            name == "." || name == ".."
        })
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

/// `text` with every byte but the unreserved ones (RFC 3986 section 2.3) as `%XX`: a value
/// that stays one path segment, or data anywhere in a URL.
pub fn escape_all(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for &byte in text.as_bytes() {
        if is_unreserved(byte) {
            out.push(char::from(byte));
        } else {
            push_escape(&mut out, byte);
        }
    }
    out
}

fn push_escape(out: &mut String, byte: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(char::from(HEX[usize::from(byte >> 4)]));
    out.push(char::from(HEX[usize::from(byte & 0xf)]));
}

#[cfg(test)]
mod tests;
