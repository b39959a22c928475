//! Request ids for logs and the `X-Request-Id` header.

use std::sync::atomic::{AtomicU64, Ordering};

use pingora::http::RequestHeader;

/// Request ids: the caller's `X-Request-Id` when it is short and printable, else a new one.
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

    pub(super) fn for_request(&self, request: &RequestHeader) -> String {
        if let Some(id) = request
            .headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
        {
            if !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic()) {
                return id.to_owned();
            }
        }
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!("{:08x}{n:012x}", self.prefix)
    }
}
