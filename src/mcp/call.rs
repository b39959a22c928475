//! One tool call: a request to tollgate's own proxy listener on loopback, so it goes
//! through the tool's route exactly as any caller's request does.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::HeaderMap;
use rmcp::model::{CallToolResult, ContentBlock as Content};
use serde_json::{Map, Value as Json};

use super::path;
use super::Outcome;
use crate::canonical::PathPolicy;
use crate::config::Tool;
use crate::generation::Live;
use crate::metrics::Metrics;
use crate::secret::Secret;

/// A successful answer larger than this is not passed to the caller.
pub const MAX_RESULT_BYTES: usize = 1 << 20;
/// How much of a non-2xx answer's body an error result shows.
const ERROR_BODY_CHARS: usize = 2000;
/// The proxy answers a slow upstream itself (504) at the route's total timeout; the call
/// waits this much longer for that answer.
const TIMEOUT_MARGIN: Duration = Duration::from_secs(5);

/// What every tool call needs; one per MCP listener.
pub struct Caller {
    pub live: Arc<Live>,
    pub metrics: Arc<Metrics>,
    client: reqwest::Client,
    /// A proxy listener, reachable on loopback.
    proxy: SocketAddr,
    policy: PathPolicy,
}

/// The result of a call, and what the access line and metrics say about it.
pub struct Called {
    pub result: CallToolResult,
    pub outcome: Outcome,
    pub status: Option<u16>,
    pub request_id: String,
}

impl Caller {
    pub fn new(
        live: Arc<Live>,
        metrics: Arc<Metrics>,
        proxy: SocketAddr,
        policy: PathPolicy,
    ) -> Result<Caller, reqwest::Error> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(30))
            .build()?;
        Ok(Caller {
            live,
            metrics,
            client,
            proxy,
            policy,
        })
    }

    /// Calls `tool` with `arguments`; `caller` holds the MCP request's headers, of which
    /// only those the route's own inbound check reads are passed on.
    pub async fn call(
        &self,
        tool: &Tool,
        arguments: Map<String, Json>,
        caller: Option<&HeaderMap>,
    ) -> Called {
        let request_id = request_id();
        let invalid = |error: path::ArgumentError, request_id: String| Called {
            result: CallToolResult::error(vec![Content::text(error.0)]),
            outcome: Outcome::InvalidArguments,
            status: None,
            request_id,
        };
        if let Err(error) = path::check(&tool.input_schema, &arguments) {
            return invalid(error, request_id);
        }
        let request_path = match path::expand(&tool.request_path, &arguments, &self.policy) {
            Ok(path) => path,
            Err(error) => return invalid(error, request_id),
        };
        let query = match path::query(&tool.query, &arguments) {
            Ok(query) => query,
            Err(error) => return invalid(error, request_id),
        };
        let generation = self.live.load_full();
        // The path must land on the tool's route, not on a longer prefix beside it.
        let route = generation
            .router
            .find(tool.host.as_deref(), &request_path)
            .filter(|route| route.name == tool.route);
        let Some(route) = route else {
            return invalid(
                path::ArgumentError(format!(
                    "the arguments make a path that route `{}` does not serve",
                    tool.route
                )),
                request_id,
            );
        };
        let provider = route.credential.as_ref().map(|c| c.provider);
        let timeout = route.timeouts.total + TIMEOUT_MARGIN;
        let token_before = match provider {
            Some(id) => generation.tokens.peek(id).await,
            None => None,
        };

        let mut url = format!("http://{}{request_path}", self.proxy);
        if let Some(query) = query {
            url.push('?');
            url.push_str(&query);
        }
        let mut request = self
            .client
            .request(tool.method.clone(), url)
            .timeout(timeout)
            .header("x-request-id", &request_id)
            .header(http::header::ACCEPT, "application/json, */*;q=0.5");
        if let Some(host) = &tool.host {
            request = request.header(http::header::HOST, host);
        }
        if let Some(headers) = caller {
            for name in &tool.caller_headers {
                for value in headers.get_all(name) {
                    request = request.header(name, value);
                }
            }
        }
        if let Some(name) = &tool.body {
            if let Some(body) = arguments.get(name) {
                match serde_json::to_vec(body) {
                    Ok(bytes) => {
                        request = request
                            .header(http::header::CONTENT_TYPE, "application/json")
                            .body(bytes);
                    }
                    Err(_) => {
                        return invalid(
                            path::ArgumentError(format!(
                                "argument `{name}` cannot be sent as JSON"
                            )),
                            request_id,
                        )
                    }
                }
            }
        }
        let answer = read(request).await;
        let token_after = match provider {
            Some(id) => generation.tokens.peek(id).await,
            None => None,
        };
        let mut secrets: Vec<&Secret> = tool.secrets.iter().collect();
        secrets.extend(token_before.as_ref().map(|t| &t.value));
        secrets.extend(token_after.as_ref().map(|t| &t.value));
        match answer {
            Err(failure) => Called {
                result: CallToolResult::error(vec![Content::text(format!(
                    "the call through route `{}` failed: {failure}",
                    tool.route
                ))]),
                outcome: Outcome::Failure,
                status: None,
                request_id,
            },
            Ok((status, body)) if status.is_success() => {
                let text = crate::redact::blank(&body, &secrets);
                let mut result = CallToolResult::success(vec![Content::text(text.clone())]);
                if let Ok(Json::Object(object)) = serde_json::from_str::<Json>(&text) {
                    result.structured_content = Some(Json::Object(object));
                }
                Called {
                    result,
                    outcome: Outcome::Success,
                    status: Some(status.as_u16()),
                    request_id,
                }
            }
            Ok((status, body)) => {
                let text = crate::redact::clean(&body, &secrets, ERROR_BODY_CHARS);
                let reason = status.canonical_reason().unwrap_or("");
                let mut result = CallToolResult::error(vec![Content::text(format!(
                    "HTTP {} {reason}: {text}",
                    status.as_u16()
                ))]);
                result.structured_content = Some(serde_json::json!({
                    "status": status.as_u16(),
                    "body": text,
                }));
                Called {
                    result,
                    outcome: Outcome::HttpError,
                    status: Some(status.as_u16()),
                    request_id,
                }
            }
        }
    }
}

/// Sends the request and reads the answer up to [`MAX_RESULT_BYTES`]. The error text
/// holds no URL (and so no argument).
async fn read(request: reqwest::RequestBuilder) -> Result<(http::StatusCode, Vec<u8>), String> {
    let started = Instant::now();
    let describe = |error: reqwest::Error| {
        if error.is_timeout() {
            format!("no answer after {}s", started.elapsed().as_secs())
        } else if error.is_connect() {
            "the proxy listener could not be reached".to_owned()
        } else {
            "the exchange with the proxy listener broke off".to_owned()
        }
    };
    let mut response = request.send().await.map_err(describe)?;
    let status = response.status();
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(describe)? {
        if body.len() + chunk.len() > MAX_RESULT_BYTES {
            return Err(format!(
                "the answer (HTTP {}) is larger than {} KiB",
                status.as_u16(),
                MAX_RESULT_BYTES >> 10
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((status, body))
}

/// 20 hex digits, as the proxy makes its own; the access line of the routed request
/// carries it, so a tool call and its request are found together.
fn request_id() -> String {
    let bytes: [u8; 10] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
