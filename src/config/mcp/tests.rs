use std::path::{Path, PathBuf};

use http::Method;

use crate::config::{parse_in, Config, McpSettings, TemplatePart};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config")
}

fn parse(text: &str) -> Config {
    match parse_in(text, &examples()) {
        Ok(config) => config,
        Err(errors) => panic!("invalid:\n{errors}"),
    }
}

fn errors_of(text: &str) -> String {
    match parse_in(text, &examples()) {
        Ok(_) => panic!("config unexpectedly valid"),
        Err(errors) => errors.to_string(),
    }
}

/// The seed 000 capability's binds, the same values in every test that sets them.
fn bind_seed_env() {
    std::env::set_var("BIGID_BASE_URL", "http://127.0.0.1:18082");
    std::env::set_var("BIGID_USER_TOKEN", "unit-test-user-token");
}

const ROUTES: &str = r#"
server: { listen: ["127.0.0.1:18080"], admin: "127.0.0.1:19901" }
providers:
  key: { type: static, value: a-static-api-key }
routes:
  - name: stripped
    match: { path_prefix: /engine/ }
    strip_prefix: true
    upstream: { url: "http://127.0.0.1:1/api/v1" }
    credential: { provider: key, header: X-Auth, format: "{token}" }
  - name: kept
    match: { host: api.example, path_prefix: /v2/ }
    upstream: { url: "http://127.0.0.1:2/base" }
    credential: { provider: key }
  - name: checked
    match: { path_prefix: /checked/ }
    strip_prefix: true
    upstream: { url: "http://127.0.0.1:3" }
    inbound: { api_keys: { header: X-Caller-Key, keys: [caller-key-123456] } }
    credential: { provider: key }
"#;

fn with_tools(tools: &str) -> String {
    format!("{ROUTES}mcp:\n  tools:\n{tools}")
}

fn only(settings: &McpSettings) -> &crate::config::Tool {
    assert_eq!(settings.tools.len(), 1);
    &settings.tools[0]
}

#[test]
fn a_tool_path_is_the_upstream_path_and_maps_to_the_request_the_route_forwards_as_it() {
    let config = parse(&with_tools(
        "    - { name: t, route: stripped, path: \"/api/v1/users/{id}\" }\n",
    ));
    let tool = only(&config.mcp);
    assert_eq!(tool.request_path.to_string(), "/engine/users/{id}");
    assert_eq!(tool.method, Method::GET);
    assert_eq!(tool.host, None);
    assert_eq!(
        tool.input_schema["required"],
        serde_json::json!(["id"]),
        "placeholders are required strings"
    );
    assert!(tool
        .secrets
        .iter()
        .any(|s| s.expose() == "a-static-api-key"));
    let listener = config.server.mcp.expect("tools turn the MCP listener on");
    assert_eq!(listener.listen.to_string(), "127.0.0.1:9090");
    assert_eq!(listener.path, "/mcp");
    assert_eq!(listener.allowed_hosts, ["localhost", "127.0.0.1", "::1"]);

    let config = parse(&with_tools(
        "    - { name: t, route: kept, method: post, path: /base/v2/items, body: item }\n",
    ));
    let tool = only(&config.mcp);
    assert_eq!(tool.request_path.to_string(), "/v2/items");
    assert_eq!(tool.host.as_deref(), Some("api.example"));
    assert_eq!(tool.method, Method::POST);

    let config = parse(&with_tools("    - { name: t, route: checked, path: /x }\n"));
    let tool = only(&config.mcp);
    assert_eq!(
        tool.caller_headers,
        ["x-caller-key"],
        "the route's check reads the MCP caller's key"
    );
}

#[test]
fn no_tools_and_no_server_mcp_mean_no_mcp_listener() {
    assert!(parse(ROUTES).server.mcp.is_none());
    let config = parse(&ROUTES.replace(
        "admin: \"127.0.0.1:19901\" }",
        "admin: \"127.0.0.1:19901\", mcp: { listen: \"0.0.0.0:9191\", path: /tools } }",
    ));
    let listener = config.server.mcp.unwrap();
    assert_eq!(listener.path, "/tools");
    assert!(
        listener.allowed_hosts.is_empty(),
        "beyond loopback, any Host by default"
    );
}

#[test]
fn every_tool_error_is_named_by_its_key_path() {
    let errors = errors_of(&with_tools(
        r#"    - { name: "bad name", route: stripped, path: /api/v1/x }
    - { name: a, route: kept, path: /base/elsewhere/x }
    - { name: b, route: stripped, path: "/api/v1/{id}", input_schema: { type: object, properties: { id: {} } } }
    - { name: c, route: stripped, method: BREW, path: /api/v1/x, query: [q], input_schema: { type: object, properties: {} } }
    - { name: d, route: stripped, path: "/api/v1/{x}", query: [x], input_schema: { type: object, properties: { x: {} }, required: [x] } }
    - { name: e, route: stripped, path: "/api/v1/{x", input_schema: [] }
    - { name: f, route: stripped, path: /api/v1/x, body: b }
"#,
    ));
    for expected in [
        "mcp.tools[0].name: tool names are 1 to 128 letters",
        "mcp.tools[1].path: route `kept` forwards paths under `/v2/` as they are",
        "mcp.tools[2].path: placeholder `id` must be listed in input_schema.required",
        "mcp.tools[3].method: `BREW` is not one of",
        "mcp.tools[3].query[0]: argument `q` is not in input_schema.properties",
        "mcp.tools[4].query[0]: argument `x` is used twice",
        "mcp.tools[5].path: has a `{` without its `}`",
        "mcp.tools[5].input_schema: must be a JSON Schema object",
        "mcp.tools[6].body: a GET request sends no body",
    ] {
        assert!(
            errors.contains(expected),
            "missing `{expected}` in:\n{errors}"
        );
    }
}

#[test]
fn a_route_forwarding_the_callers_credential_serves_no_tool() {
    let text = with_tools("    - { name: t, route: checked, path: /x }\n").replace(
        "inbound: { api_keys:",
        "inbound: { forward_caller_credential: true, api_keys:",
    );
    assert!(errors_of(&text)
        .contains("mcp.tools[0].route: route `checked` forwards the caller's credential upstream"));
}

#[test]
fn the_mcp_listener_needs_its_own_address_and_a_plain_path() {
    let text = ROUTES.replace(
        "admin: \"127.0.0.1:19901\" }",
        "admin: \"127.0.0.1:19901\", mcp: { listen: \"127.0.0.1:18080\", path: /a/../mcp } }",
    );
    let errors = errors_of(&text);
    assert!(
        errors
            .contains("server.mcp.listen: 127.0.0.1:18080 is already the proxy or admin listener"),
        "{errors}"
    );
    assert!(
        errors.contains("server.mcp.path: must be a canonical path"),
        "{errors}"
    );
}

#[test]
fn mcp_inbound_takes_a_routes_checks_and_serves_resource_metadata_from_them() {
    let text = format!(
        "{ROUTES}mcp:\n  inbound:\n    jwt: {{ secret: \"an-hmac-secret-of-at-least-32-bytes!!\", algorithms: [HS256], issuer: \"https://idp.test/\", audience: mcp, required_scopes: [tools] }}\n"
    );
    let config = parse(&text);
    assert!(
        config.server.mcp.is_some(),
        "mcp.inbound alone turns the listener on"
    );
    let metadata = &config.mcp.resource_metadata;
    assert_eq!(metadata.authorization_servers, ["https://idp.test/"]);
    assert_eq!(metadata.scopes_supported, ["tools"]);

    let bad = text.replace(
        "required_scopes: [tools] }",
        "required_scopes: [tools], forward_caller_credential: true }",
    );
    // `forward_caller_credential` is a key of `inbound`, not of `jwt`: it is refused by its path.
    assert!(errors_of(&bad).contains("mcp.inbound.jwt"));
    let bad = text.replace(
        "required_scopes: [tools] }\n",
        "required_scopes: [tools] }\n    forward_caller_credential: true\n",
    );
    assert!(errors_of(&bad).contains("mcp.inbound.forward_caller_credential: the MCP caller's credential is never passed upstream"));
}

#[test]
fn seed_000_capability_becomes_routes_a_provider_and_tools() {
    bind_seed_env();
    let config = parse(
        "server: { listen: [\"127.0.0.1:18080\"], admin: \"127.0.0.1:19901\" }\nmcp:\n  import:\n    - naftiko: capabilities/bigid-authentication-sessions.yaml\n",
    );
    let provider = &config.providers[0];
    assert_eq!(provider.name, "authentication-sessions");
    assert_eq!(provider.settings.kind(), "static");
    assert!(provider
        .reference_values
        .iter()
        .any(|s| s.expose() == "unit-test-user-token"));

    let names: Vec<&str> = config.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "authentication-sessions-rest.sessions",
            "authentication-sessions-rest.refresh-access-token"
        ]
    );
    let sessions = &config.routes[0];
    assert_eq!(sessions.path_prefix, "/v1/sessions");
    assert!(!sessions.strip_prefix);
    assert_eq!(
        sessions.backends[0].base_path, "/api",
        "/v1/sessions is sent as /api/v1/sessions"
    );
    assert_eq!(
        sessions.credential.as_ref().map(|c| c.provider.as_str()),
        Some("authentication-sessions")
    );

    let tools = &config.mcp.tools;
    assert_eq!(tools.len(), 2);
    assert_eq!(tools[0].name, "bigid-create-session");
    assert_eq!(tools[0].upstream_path.to_string(), "/api/v1/sessions");
    assert_eq!(tools[0].request_path.to_string(), "/v1/sessions");
    assert_eq!(tools[0].body.as_deref(), Some("body"));
    assert_eq!(tools[0].hints.idempotent, Some(false));
    assert_eq!(tools[1].name, "bigid-refresh-access-token");
    assert_eq!(tools[1].hints.idempotent, Some(true));
    assert_eq!(
        tools[1].route,
        "authentication-sessions-rest.refresh-access-token"
    );
    assert!(config.server.mcp.is_some());
}

#[test]
fn a_configured_provider_can_stand_behind_a_capabilitys_consumed_api() {
    bind_seed_env();
    let config = parse(
        r#"server: { listen: ["127.0.0.1:18080"], admin: "127.0.0.1:19901" }
providers:
  bigid: { type: bigid, base_url: "http://127.0.0.1:18082", user_token: a-user-token }
mcp:
  import:
    - naftiko:
        file: capabilities/bigid-authentication-sessions.yaml
        providers: { authentication-sessions: bigid }
"#,
    );
    assert_eq!(config.providers.len(), 1, "no static provider is made");
    for tool in &config.mcp.tools {
        assert!(
            tool.secrets.iter().any(|s| s.expose() == "a-user-token"),
            "an inline secret of the route's provider is blanked from results"
        );
    }
    for route in &config.routes {
        assert_eq!(
            route.credential.as_ref().map(|c| c.provider.as_str()),
            Some("bigid")
        );
    }
    let errors = errors_of(
        "server: { listen: [\"127.0.0.1:18080\"], admin: \"127.0.0.1:19901\" }\nmcp:\n  import:\n    - naftiko: { file: capabilities/bigid-authentication-sessions.yaml, providers: { other: bigid } }\n",
    );
    assert!(errors.contains("mcp.import[0].naftiko.providers.other: the capability consumes no API of that namespace"), "{errors}");
    assert!(
        errors.contains("no provider named `bigid` is configured") || errors.contains("providers"),
        "{errors}"
    );
}

#[test]
fn an_unbound_variable_and_unserved_features_are_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("cap.yaml"),
        r#"naftiko: 1.0.0-alpha2
binds:
  - namespace: env
    keys: { BASE: TOLLGATE_UNIT_SURELY_UNSET_BASE }
capability:
  consumes:
    - type: http
      namespace: api
      baseUri: '{{env.BASE}}'
      resources:
        - name: r
          path: /r
          operations: [{ name: op, method: GET }]
  exposes:
    - type: skill
      namespace: s
    - type: rest
      namespace: rest
      resources:
        - path: /r
          name: r
          operations: [{ method: POST, call: api.op, with: { q: rest.other } }]
"#,
    )
    .unwrap();
    let text = "server: { listen: [\"127.0.0.1:18080\"], admin: \"127.0.0.1:19901\" }\nmcp:\n  import:\n    - naftiko: cap.yaml\n";
    let errors = match parse_in(text, dir.path()) {
        Ok(_) => panic!("valid"),
        Err(errors) => errors.to_string(),
    };
    for expected in [
        "mcp.import[0].naftiko(cap.yaml).capability.consumes[0].baseUri: env TOLLGATE_UNIT_SURELY_UNSET_BASE is not set (bound to {{env.BASE}})",
        "mcp.import[0].naftiko(cap.yaml).capability.exposes[0].type: `skill` exposures are not served",
        "capability.exposes[1].resources[0].operations[0].with.q: `rest.other`: only `rest.q`",
        "capability.exposes[1].resources[0].operations[0].method: POST calls a GET operation",
    ] {
        assert!(errors.contains(expected), "missing `{expected}` in:\n{errors}");
    }
}

#[test]
fn openapi_operations_become_tools_on_their_route() {
    let config = parse(
        r#"server: { listen: ["127.0.0.1:18080"], admin: "127.0.0.1:19901" }
providers:
  key: { type: static, value: a-static-api-key }
routes:
  - name: engine
    match: { path_prefix: /engine/ }
    strip_prefix: true
    upstream: { url: "http://127.0.0.1:1/api/v1" }
    credential: { provider: key, header: X-Auth, format: "{token}" }
  - name: bigid
    match: { path_prefix: /bigid/ }
    strip_prefix: true
    upstream: { url: "http://127.0.0.1:2/api/v1" }
    credential: { provider: key }
mcp:
  import:
    - openapi: { file: openapi/auth-engine.yaml, route: engine, include: [getMe, listUsers, listUserSessions, revokeSession], name_prefix: engine- }
    - openapi: { file: openapi/bigid-authentication.yaml, route: bigid }
"#,
    );
    let tool = |name: &str| {
        config
            .mcp
            .tools
            .iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("no tool {name}"))
    };
    assert_eq!(config.mcp.tools.len(), 6);
    let me = tool("engine-getMe");
    assert_eq!(me.request_path.to_string(), "/engine/me");
    assert_eq!(me.hints.read_only, Some(true));
    assert!(
        !me.input_schema["properties"]
            .as_object()
            .unwrap()
            .contains_key("X-Auth"),
        "header parameters are the route's business"
    );
    let users = tool("engine-listUsers");
    assert_eq!(users.query, ["org_id", "page", "page_size", "role_id"]);
    let sessions = tool("engine-listUserSessions");
    assert_eq!(
        sessions.request_path.parts[1],
        TemplatePart::Argument("user_id".into())
    );
    let revoke = tool("engine-revokeSession");
    assert_eq!(revoke.method, Method::DELETE);
    assert_eq!(revoke.hints.destructive, Some(true));

    let create = tool("createSession");
    assert_eq!(create.request_path.to_string(), "/bigid/sessions");
    assert_eq!(create.body.as_deref(), Some("body"));
    let body = &create.input_schema["properties"]["body"];
    assert_eq!(
        body["required"],
        serde_json::json!(["username", "password"]),
        "$ref inlined: {body}"
    );
    assert_eq!(create.input_schema["required"], serde_json::json!(["body"]));
    assert_eq!(tool("refreshAccessToken").method, Method::POST);

    let errors = errors_of(
        &ROUTES.replace("routes:", "mcp:\n  import:\n    - openapi: { file: openapi/auth-engine.yaml, route: stripped, include: [nope] }\nroutes:"),
    );
    assert!(
        errors
            .contains("mcp.import[0].openapi.include[0]: no operation has the operationId `nope`"),
        "{errors}"
    );
}

#[test]
fn tools_need_a_plain_listener_and_no_client_certificate() {
    let ca = tollgate_standins::pki::Pki::new("Test CA");
    let (crt, key) = ca.write("server", &ca.client("localhost", vec![]));
    let client_ca = ca.ca_file();
    let mtls = format!(
        "{{ address: \"127.0.0.1:18443\", tls: {{ cert_file: {}, key_file: {}, client_ca_file: {} }} }}",
        crt.display(),
        key.display(),
        client_ca.display()
    );
    let tool = "    - { name: t, route: checked, path: /x }\n";

    // Only TLS listeners: a tool call has no plain listener to go through.
    let text = with_tools(tool).replace(
        "listen: [\"127.0.0.1:18080\"]",
        &format!("listen: [{mtls}]"),
    );
    let errors = errors_of(&text);
    assert!(
        errors.contains("server.mcp: tool calls go through a plain (not TLS) proxy listener"),
        "{errors}"
    );

    // Beside a plain one, the mTLS listener is fine, but a route that wants the client
    // certificate cannot be a tool, and the MCP endpoint itself cannot ask for one.
    let both = format!("listen: [\"127.0.0.1:18080\", {mtls}]");
    let text = with_tools(tool)
        .replace("listen: [\"127.0.0.1:18080\"]", &both)
        .replace(
            "inbound: { api_keys:",
            "inbound: { client_cert: {}, api_keys:",
        );
    let errors = errors_of(&text);
    assert!(
        errors
            .contains("mcp.tools[0].route: route `checked` checks the caller's client certificate"),
        "{errors}"
    );
    assert!(!errors.contains("server.mcp:"), "{errors}");
    let text = format!(
        "{}mcp:\n  inbound: {{ client_cert: {{}} }}\n",
        ROUTES.replace("listen: [\"127.0.0.1:18080\"]", &both)
    );
    let errors = errors_of(&text);
    assert!(
        errors.contains("mcp.inbound.client_cert: the MCP listener is plain HTTP"),
        "{errors}"
    );
}
