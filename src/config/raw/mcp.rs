//! The `mcp` section and `server.mcp` as written. Every struct rejects unknown keys.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::RawInbound;

/// `server.mcp`: the MCP listener.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawMcpServer {
    pub listen: Option<String>,
    pub path: Option<String>,
    pub allowed_hosts: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawMcp {
    pub inbound: Option<RawInbound>,
    pub resource_metadata: Option<RawResourceMetadata>,
    pub tools: Option<Vec<serde_yaml_ng::Value>>,
    pub import: Option<Vec<serde_yaml_ng::Value>>,
}

/// RFC 9728 protected resource metadata, served with `mcp.inbound`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawResourceMetadata {
    pub resource: Option<String>,
    pub authorization_servers: Option<Vec<String>>,
    pub scopes_supported: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTool {
    pub name: String,
    pub title: Option<String>,
    pub description: Option<String>,
    pub route: String,
    pub method: Option<String>,
    pub path: String,
    pub query: Option<Vec<String>>,
    pub body: Option<String>,
    pub input_schema: Option<serde_json::Value>,
    pub hints: Option<RawHints>,
}

#[derive(Debug, Deserialize, Default, Clone, Copy)]
#[serde(deny_unknown_fields)]
pub struct RawHints {
    pub read_only: Option<bool>,
    pub destructive: Option<bool>,
    pub idempotent: Option<bool>,
    pub open_world: Option<bool>,
}

/// One entry of `mcp.import`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawImport {
    pub naftiko: Option<RawNaftikoImport>,
    pub openapi: Option<RawOpenApiImport>,
}

/// `naftiko: file.yaml`, or `naftiko: { file, providers: { <consumes namespace>: <provider> } }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawNaftikoImport {
    File(String),
    Detailed(RawNaftikoDetailed),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNaftikoDetailed {
    pub file: String,
    /// A configured provider put behind a consumed API instead of its own authentication.
    pub providers: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOpenApiImport {
    pub file: String,
    pub route: String,
    /// Operation ids to turn into tools; all operations when absent.
    pub include: Option<Vec<String>>,
    /// Put before each operation id to make the tool name (`engine-`).
    pub name_prefix: Option<String>,
}
