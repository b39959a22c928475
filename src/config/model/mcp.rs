//! The validated `mcp` section and `server.mcp`: what the MCP endpoint serves.

use std::net::SocketAddr;

use http::{HeaderName, Method};
use url::Url;

use super::InboundSettings;
use crate::secret::Secret;

/// `server.mcp`: where the MCP endpoint listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpListener {
    pub listen: SocketAddr,
    /// The endpoint's path (`/mcp`).
    pub path: String,
    /// `Host` values accepted (DNS-rebinding protection); empty: any host.
    pub allowed_hosts: Vec<String>,
}

/// The `mcp` section, imports already turned into tools (and their routes and providers
/// into the config's `routes` and `providers`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct McpSettings {
    /// Checks of the MCP caller, as a route's `inbound`.
    pub inbound: Option<InboundSettings>,
    pub resource_metadata: ResourceMetadata,
    pub tools: Vec<Tool>,
}

/// RFC 9728 protected resource metadata, served when `mcp.inbound` verifies a JWT.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ResourceMetadata {
    /// The resource identifier; when absent, `http://{Host}{path}` of the request.
    pub resource: Option<Url>,
    pub authorization_servers: Vec<String>,
    pub scopes_supported: Vec<String>,
}

/// One MCP tool: a request through a route.
#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    pub name: String,
    pub title: Option<String>,
    pub description: String,
    /// The route the request goes through (credential, retry, timeouts, limits, logs).
    pub route: String,
    pub method: Method,
    /// The path as the route's upstream receives it (as written in `path`).
    pub upstream_path: PathTemplate,
    /// The path sent to the proxy listener so that the route forwards `upstream_path`.
    pub request_path: PathTemplate,
    /// The route's `match.host`, sent as `Host`.
    pub host: Option<String>,
    /// Arguments sent as query parameters.
    pub query: Vec<String>,
    /// The argument sent as the JSON body.
    pub body: Option<String>,
    /// A JSON Schema object.
    pub input_schema: serde_json::Map<String, serde_json::Value>,
    pub hints: ToolHints,
    /// Caller headers the route's own inbound check reads: passed from the MCP request to
    /// the route's check (which removes them before forwarding).
    pub caller_headers: Vec<HeaderName>,
    /// Values never shown in a tool result: the route provider's secrets (the token it
    /// currently holds is added at call time).
    pub secrets: Vec<Secret>,
    /// Where it was declared, for messages (`mcp.tools[0]`, `mcp.import[1]`).
    pub source: String,
}

/// MCP tool annotations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ToolHints {
    pub read_only: Option<bool>,
    pub destructive: Option<bool>,
    pub idempotent: Option<bool>,
    pub open_world: Option<bool>,
}

/// A path with `{argument}` placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    pub parts: Vec<TemplatePart>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplatePart {
    Literal(String),
    Argument(String),
}

impl PathTemplate {
    /// The arguments named in placeholders, in order.
    pub fn arguments(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|part| match part {
            TemplatePart::Argument(name) => Some(name.as_str()),
            TemplatePart::Literal(_) => None,
        })
    }

    /// The literal text before the first placeholder.
    pub fn literal_start(&self) -> &str {
        match self.parts.first() {
            Some(TemplatePart::Literal(text)) => text,
            _ => "",
        }
    }
}

impl std::fmt::Display for PathTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for part in &self.parts {
            match part {
                TemplatePart::Literal(text) => f.write_str(text)?,
                TemplatePart::Argument(name) => write!(f, "{{{name}}}")?,
            }
        }
        Ok(())
    }
}
