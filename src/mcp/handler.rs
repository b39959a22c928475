//! The rmcp server handler: `tools/list` from the generation in force, `tools/call`
//! through [`super::call::Caller`].

use std::sync::Arc;
use std::time::Instant;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, Implementation, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, ToolAnnotations,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler};

use super::call::Caller;
use crate::config::Tool;

const INSTRUCTIONS: &str = "Each tool is a request to an API through tollgate, which adds the API's credential itself: never pass credentials as arguments. A result with isError holds the API's HTTP status and its answer.";

/// One per MCP request (the service is stateless); they share the caller.
#[derive(Clone)]
pub struct Handler {
    pub caller: Arc<Caller>,
}

/// A configured tool as `tools/list` shows it.
pub fn listed(tool: &Tool) -> rmcp::model::Tool {
    let mut listed = rmcp::model::Tool::new(
        tool.name.clone(),
        tool.description.clone(),
        Arc::new(tool.input_schema.clone()),
    );
    if let Some(title) = &tool.title {
        listed = listed.with_title(title.clone());
    }
    let hints = tool.hints;
    if hints != Default::default() {
        listed = listed.with_annotations(ToolAnnotations::from_raw(
            None,
            hints.read_only,
            hints.destructive,
            hints.idempotent,
            hints.open_world,
        ));
    }
    listed
}

impl ServerHandler for Handler {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("tollgate", env!("CARGO_PKG_VERSION")))
            .with_instructions(INSTRUCTIONS)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let generation = self.caller.live.load();
        Ok(ListToolsResult::with_all_items(
            generation.mcp.listed.clone(),
        ))
    }

    fn get_tool(&self, name: &str) -> Option<rmcp::model::Tool> {
        let generation = self.caller.live.load();
        generation.mcp.tool(name).map(|tool| listed(tool))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let started = Instant::now();
        let tool = self.caller.live.load().mcp.tool(&request.name).cloned();
        let Some(tool) = tool else {
            return Err(ErrorData::invalid_params("no tool of that name", None));
        };
        let parts = context.extensions.get::<http::request::Parts>();
        let called = self
            .caller
            .call(
                &tool,
                request.arguments.unwrap_or_default(),
                parts.map(|parts| &parts.headers),
            )
            .await;
        let elapsed = started.elapsed();
        let metrics = &self.caller.metrics;
        metrics
            .mcp_tool_calls
            .with_label_values(&[&tool.name, called.outcome.label()])
            .inc();
        metrics
            .mcp_tool_call_duration
            .with_label_values(&[&tool.name])
            .observe(elapsed.as_secs_f64());
        tracing::info!(
            target: "mcp",
            tool = %tool.name,
            route = %tool.route,
            request_id = %called.request_id,
            outcome = called.outcome.label(),
            status = called.status,
            duration_ms = elapsed.as_millis() as u64,
            "tool call"
        );
        Ok(CallToolResponse::Complete(called.result))
    }
}
