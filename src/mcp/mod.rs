//! The MCP endpoint (`server.mcp`): routes as MCP tools, served with the official Rust SDK
//! (`rmcp`) over streamable HTTP, statelessly.
//!
//! A tool call is a request through its route: [`call`] sends it to tollgate's own proxy
//! listener on loopback, so the route's whole pipeline applies unchanged (canonical path,
//! route match, inbound check, credential injection, the 401 purge and retry, timeouts,
//! body limit, access log and metrics). The result is the upstream's answer with every
//! secret of the route's provider and its current token blanked; a non-2xx answer is a
//! result with `isError: true`.
//!
//! - [`path`]: a call's path, query and body from its arguments; no argument can leave
//!   its path segment, and so its route.
//! - [`handler`]: the rmcp `ServerHandler` (`tools/list`, `tools/call`).
//! - [`endpoint`]: the listener: `mcp.inbound` and the RFC 9728 protected resource
//!   metadata in front of the rmcp service.

pub mod call;
pub mod endpoint;
pub mod handler;
pub mod path;

use std::sync::Arc;

use crate::config::{McpSettings, ResourceMetadata, Tool};
use crate::inbound::{Inbound, InboundBuildError};

/// What the MCP endpoint serves from in one generation: the tools and the caller checks.
pub struct Catalog {
    pub tools: Vec<Arc<Tool>>,
    /// The tools as `tools/list` shows them, built once.
    pub listed: Vec<rmcp::model::Tool>,
    pub inbound: Option<Inbound>,
    /// Whether `mcp.inbound` verifies a JWT: the endpoint is then an OAuth resource server
    /// and serves its RFC 9728 metadata.
    pub oauth: bool,
    pub resource_metadata: ResourceMetadata,
}

impl Catalog {
    pub fn build(
        settings: &McpSettings,
        control: &tokio::runtime::Handle,
    ) -> Result<Catalog, InboundBuildError> {
        let inbound = settings
            .inbound
            .as_ref()
            .map(|inbound| Inbound::build(inbound, control.clone()))
            .transpose()?;
        Ok(Catalog {
            tools: settings.tools.iter().cloned().map(Arc::new).collect(),
            listed: settings.tools.iter().map(handler::listed).collect(),
            inbound,
            oauth: settings
                .inbound
                .as_ref()
                .is_some_and(|inbound| inbound.jwt.is_some()),
            resource_metadata: settings.resource_metadata.clone(),
        })
    }

    pub fn tool(&self, name: &str) -> Option<&Arc<Tool>> {
        self.tools.iter().find(|tool| tool.name == name)
    }
}

/// How a tool call ended: the `outcome` label of `tollgate_mcp_tool_calls_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream answered 2xx.
    Success,
    /// The upstream (or tollgate's proxy, refusing) answered another status.
    HttpError,
    /// The arguments could not make a request; nothing was sent.
    InvalidArguments,
    /// No answer: the proxy listener could not be reached, or the answer was cut or too
    /// large.
    Failure,
}

impl Outcome {
    pub const ALL: [Outcome; 4] = [
        Outcome::Success,
        Outcome::HttpError,
        Outcome::InvalidArguments,
        Outcome::Failure,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::HttpError => "http_error",
            Outcome::InvalidArguments => "invalid_arguments",
            Outcome::Failure => "failure",
        }
    }
}
