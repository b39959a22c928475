//! Helpers of the end-to-end tests of the provider types `fortanix`, `bigbucks`, `bagid`,
//! `static` and `http` (the `provider_types*` modules), on top of the shared harness in
//! `common`.

use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;

use crate::common::{assert_error_body, bearer, eventually, Gateway, FAST_REFRESH};

/// Renewal ahead of expiry for the short-lived tokens of these tests.
pub const SHORT_REFRESH: &str =
    "refresh: { before_expiry: 1s, min_backoff: 200ms, max_backoff: 1s }";

/// A provider block `name` of `type: kind`; `keys` are its own keys, flush left, one per
/// line (nested blocks indented as in YAML). Without a `refresh:` line, [`FAST_REFRESH`].
pub fn provider(name: &str, kind: &str, keys: &str) -> String {
    let mut keys = keys.to_owned();
    if !keys.contains("refresh:") {
        keys.push('\n');
        keys.push_str(FAST_REFRESH);
    }
    let mut block = format!("  {name}:\n    type: {kind}\n");
    for line in keys.lines().filter(|l| !l.trim().is_empty()) {
        block.push_str("    ");
        block.push_str(line);
        block.push('\n');
    }
    block
}

/// A route `name` on `prefix` (stripped) to `upstream`, injecting `header` with `format`.
pub fn route_with(
    name: &str,
    prefix: &str,
    upstream: &str,
    provider: &str,
    header: &str,
    format: &str,
) -> String {
    format!(
        "  - name: {name}\n    match: {{ path_prefix: {prefix} }}\n    strip_prefix: true\n    upstream: {{ url: {upstream} }}\n    credential: {{ provider: {provider}, header: {header}, format: \"{format}\" }}\n"
    )
}

/// The token of an `Authorization: Bearer <token>` value.
pub fn bearer_of(value: &str) -> String {
    bearer(value)
        .unwrap_or_else(|| panic!("not a Bearer value: {value}"))
        .to_owned()
}

/// `base64(user:password)`, as HTTP Basic sends it.
pub fn basic_pair(user: &str, password: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}

/// `GET path` through the gateway, which must answer 200 from the echo upstream; returns the
/// one value of `header` the upstream received (panics if it got none or several).
pub async fn upstream_header(gateway: &Gateway, path: &str, header: &str) -> String {
    upstream_header_sending(gateway, path, header, &[]).await
}

/// As [`upstream_header`], with headers the client sends itself.
pub async fn upstream_header_sending(
    gateway: &Gateway,
    path: &str,
    header: &str,
    sent: &[(&str, &str)],
) -> String {
    let mut request = gateway.client().get(gateway.proxy_url(path));
    for (name, value) in sent {
        request = request.header(*name, *value);
    }
    let reply = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path} through the gateway failed: {e:?}"));
    let status = reply.status().as_u16();
    let text = reply.text().await.unwrap_or_default();
    assert_eq!(status, 200, "GET {path}: {text}");
    let body: Value = serde_json::from_str(&text)
        .unwrap_or_else(|_| panic!("GET {path}: not the echo's JSON: {text}"));
    let value = body["headers"][header.to_ascii_lowercase()]
        .as_str()
        .unwrap_or_else(|| panic!("GET {path}: the upstream got no {header}: {body}"));
    assert!(
        !value.contains(", "),
        "GET {path}: the upstream got several {header} values: {value}"
    );
    value.to_owned()
}

/// `GET path` through the gateway must be `503 credential_unavailable` from `provider` with
/// `Retry-After`; returns the body and its `detail`.
pub async fn unavailable(gateway: &Gateway, path: &str, provider: &str) -> (Value, String) {
    let (status, headers, body) = gateway.get_json(path).await;
    assert_eq!(status, 503, "GET {path}: {body}");
    assert_error_body(&body, "credential_unavailable");
    assert_eq!(body["provider"], provider, "{body}");
    assert!(
        headers.contains_key("retry-after"),
        "no Retry-After: {body}"
    );
    let detail = body["detail"].as_str().unwrap().to_owned();
    (body, detail)
}

/// Waits (up to 5 s) until `/status` reports a failed attempt of `provider`; returns its
/// entry.
pub async fn wait_failed(gateway: &Gateway, provider: &str) -> Value {
    let failed = eventually(Duration::from_secs(5), || async {
        gateway.provider_status(provider).await["consecutive_failures"]
            .as_u64()
            .unwrap_or(0)
            >= 1
    })
    .await;
    let status = gateway.provider_status(provider).await;
    assert!(failed, "{provider} never failed: {status}");
    status
}

/// The `sub` claim of a demo JWT.
pub fn subject(token: &str) -> String {
    tollgate_standins::jwt::verify(token)
        .unwrap_or_else(|e| panic!("not a demo JWT ({e}): {token}"))
        .sub
}

/// Asserts that none of `needles` (secrets, tokens) occurs in `haystack`, naming `what`.
pub fn assert_absent(what: &str, haystack: &str, needles: &[String]) {
    for needle in needles {
        assert!(!needle.is_empty(), "an empty needle for {what}");
        assert!(
            !haystack.contains(needle.as_str()),
            "{what} contains `{needle}`:\n{haystack}"
        );
    }
}

/// The pid of the gateway process: the one whose command line names its config file.
pub fn gateway_pid(gateway: &Gateway) -> u32 {
    let config = gateway.dir().join("tollgate.yaml");
    let config = config.to_str().unwrap();
    for entry in std::fs::read_dir("/proc").expect("/proc") {
        let entry = entry.unwrap();
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        if args.contains(&b"run".as_slice()) && args.contains(&config.as_bytes()) {
            return pid;
        }
    }
    panic!("no process runs with {config}")
}
