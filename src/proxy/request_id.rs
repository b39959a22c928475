//! Request ids for logs and the `X-Request-Id` header.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::HeaderValue;
use pingora::http::RequestHeader;

/// The longest caller-supplied id that is kept.
const MAX_CALLER_ID_LEN: usize = 128;

/// Request ids: the caller's `X-Request-Id` when it is short and printable, else a new one.
/// Ids are header values so the request path can put the same bytes on the upstream
/// request, the response and the log without formatting them again.
pub(super) struct RequestIds {
    prefix: u32,
    counter: AtomicU64,
}

impl RequestIds {
    pub(super) fn new() -> Self {
        RequestIds {
            prefix: rand::random(),
            counter: AtomicU64::new(0),
        }
    }

    pub(super) fn for_request(&self, request: &RequestHeader) -> HeaderValue {
        if let Some(id) = request.headers.get("x-request-id") {
            let bytes = id.as_bytes();
            if !bytes.is_empty()
                && bytes.len() <= MAX_CALLER_ID_LEN
                && bytes.iter().all(u8::is_ascii_graphic)
            {
                return id.clone();
            }
        }
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        generated_id(self.prefix, n)
    }
}

/// `prefix` as 8 hex digits and `n` as 12: 20 characters, without `format!`'s machinery.
fn generated_id(prefix: u32, n: u64) -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = [0u8; 20];
    for (i, byte) in id[..8].iter_mut().enumerate() {
        *byte = HEX[((prefix >> (28 - 4 * i)) & 0xf) as usize];
    }
    for (i, byte) in id[8..].iter_mut().enumerate() {
        *byte = HEX[((n >> (44 - 4 * i)) & 0xf) as usize];
    }
    // Hex digits only, so this cannot fail; the fallback keeps the request path panic-free.
    HeaderValue::from_maybe_shared(Bytes::copy_from_slice(&id))
        .unwrap_or_else(|_| HeaderValue::from_static("-"))
}

/// The id as log text.
pub(super) fn as_text(id: &HeaderValue) -> &str {
    id.to_str().unwrap_or("-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_id_is_the_prefix_then_the_counter_in_hex() {
        let id = generated_id(0xdead_beef, 0x1234_5678_9abc);
        assert_eq!(id.to_str().unwrap(), "deadbeef123456789abc");
        assert_eq!(generated_id(0, 1).to_str().unwrap(), "00000000000000000001");
    }

    #[test]
    fn a_printable_caller_id_is_kept_and_others_are_replaced() {
        let ids = RequestIds::new();
        let mut request = RequestHeader::build("GET", b"/", None).unwrap();
        request.insert_header("x-request-id", "abc-123").unwrap();
        assert_eq!(ids.for_request(&request), "abc-123");
        request.insert_header("x-request-id", "has space").unwrap();
        assert_eq!(ids.for_request(&request).len(), 20);
        let long = "a".repeat(MAX_CALLER_ID_LEN + 1);
        request.insert_header("x-request-id", long).unwrap();
        assert_eq!(ids.for_request(&request).len(), 20);
    }

    #[test]
    fn ids_differ_between_requests() {
        let ids = RequestIds::new();
        let request = RequestHeader::build("GET", b"/", None).unwrap();
        assert_ne!(ids.for_request(&request), ids.for_request(&request));
    }
}
