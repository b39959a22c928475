//! End to end: the MCP endpoint (`server.mcp`) driven by the official MCP Python SDK (a
//! client this project did not write; `.ci/deps` installs it in `.ci/venv`), in front of
//! the real binary, the stand-ins and the echo upstream. Tools are requests through their
//! routes: the injected credential reaches the upstream and never the result, a rejected
//! token is replaced by one retry, an upstream 404 is an error result, `mcp.inbound` turns
//! the endpoint into an OAuth resource server, and seed 000's Naftiko capability, loaded
//! unchanged, serves its REST and its MCP adapter.

use std::path::Path;
use std::time::Duration;

use crate::common::*;
use serde_json::{json, Value};
use tollgate_standins::bigid::{BigIdSettings, BigIdStandIn};
use tollgate_standins::echo::EchoUpstream;
use tollgate_standins::inbound as kit;
use tollgate_standins::oauth2::{OAuth2Settings, OAuth2StandIn};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs tests/e2e/mcp/client.py with `script` and returns one JSON value per printed line.
async fn mcp_client(script: Value) -> Vec<Value> {
    let run = tokio::process::Command::new(venv_python())
        .arg(repo().join("tests/e2e/mcp/client.py"))
        .arg(script.to_string())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the MCP client finishes within 60 s")
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the MCP client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
        .lines()
        .map(|line| serde_json::from_str(line).expect("the client prints JSON lines"))
        .collect()
}

/// One call of `tool` in a `legacy` session: the client's lines (the session's, then the
/// call's result).
async fn call_tool(url: &str, tool: &str, args: Value) -> Vec<Value> {
    let steps = json!([{"call": tool, "args": args}]);
    mcp_client(json!({"url": url, "mode": "legacy", "steps": steps})).await
}

/// A config whose server section has `server.mcp` on a free loopback port, then `rest`
/// (providers, routes, `mcp`); returns the YAML and the endpoint URL.
fn mcp_config(rest: &str) -> (String, String) {
    let port = free_port();
    let yaml = format!(
        "server:\n  listen: [\"{{listen}}\"]\n  admin: \"{{admin}}\"\n  threads: 1\n  mcp: {{ listen: \"127.0.0.1:{port}\", path: /mcp }}\n{rest}"
    );
    (yaml, format!("http://127.0.0.1:{port}/mcp"))
}

/// A JSON-RPC `body` POSTed to the MCP endpoint at `url`, with `mcp-protocol-version` when
/// `version` is given.
async fn mcp_post(
    client: &reqwest::Client,
    url: &str,
    body: &Value,
    version: Option<&str>,
) -> reqwest::Result<reqwest::Response> {
    let mut request = client
        .post(url)
        .header("accept", "application/json, text/event-stream")
        .json(body);
    if let Some(version) = version {
        request = request.header("mcp-protocol-version", version);
    }
    request.send().await
}

/// A config with the `idp` OAuth2 provider, the `echo` route (upstream base path `/api`)
/// and three tools on it; `mcp_extra` goes into the `mcp` section.
fn echo_tools_config(
    idp: &OAuth2StandIn,
    echo: &EchoUpstream,
    mcp_extra: &str,
) -> (String, String) {
    mcp_config(&format!(
        r#"providers:
{provider}routes:
  - name: echo
    match: {{ path_prefix: /echo/ }}
    strip_prefix: true
    upstream: {{ url: "{echo}/api" }}
    credential: {{ provider: idp }}
  - name: echo-admin
    match: {{ path_prefix: /echo/admin/ }}
    strip_prefix: true
    upstream: {{ url: "{echo}/admin" }}
mcp:
{mcp_extra}  tools:
    - name: get-user
      description: Read one user
      route: echo
      method: GET
      path: /api/users/{{id}}
      query: [verbose]
      input_schema:
        type: object
        properties: {{ id: {{ type: string }}, verbose: {{ type: boolean }} }}
        required: [id]
      hints: {{ read_only: true, idempotent: true }}
    - name: create-item
      description: Create an item
      route: echo
      method: POST
      path: /api/items
      body: item
      input_schema:
        type: object
        properties: {{ item: {{ type: object }} }}
        required: [item]
      hints: {{ read_only: false, destructive: false, idempotent: false }}
    - name: get-thing
      route: echo
      path: /api/{{kind}}/x
"#,
        provider = oauth2("idp", &idp.token_url(), "grant: client_credentials"),
        echo = echo.url(),
    ))
}

async fn idp_and_echo() -> (OAuth2StandIn, EchoUpstream) {
    let idp = OAuth2StandIn::start(OAuth2Settings::default())
        .await
        .unwrap();
    let echo = EchoUpstream::start().await.unwrap();
    (idp, echo)
}

fn text_of(result: &Value) -> String {
    result["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tools_are_listed_and_called_through_their_routes_with_the_credential_kept_home() {
    let (idp, echo) = idp_and_echo().await;
    let (yaml, url) = echo_tools_config(&idp, &echo, "");
    let gateway = Gateway::start(&yaml).await;
    let out = mcp_client(json!({
        "url": url,
        "mode": "legacy",
        "steps": [
            {"list": true},
            {"call": "get-user", "args": {"id": "a b", "verbose": true}},
            {"call": "create-item", "args": {"item": {"name": "widget", "count": 2}}},
        ]
    }))
    .await;
    assert_eq!(out[0]["protocol_version"], "2025-11-25", "{out:?}");
    assert_eq!(out[0]["server"]["name"], "tollgate");

    let tools = out[1]["tools"].as_array().expect("tools/list has tools");
    let names: Vec<&str> = tools.iter().filter_map(|t| t["name"].as_str()).collect();
    assert_eq!(names, ["get-user", "create-item", "get-thing"]);
    assert_eq!(tools[0]["annotations"]["readOnlyHint"], true);
    assert_eq!(tools[0]["annotations"]["idempotentHint"], true);
    assert_eq!(tools[1]["annotations"]["destructiveHint"], false);
    assert_eq!(tools[0]["inputSchema"]["required"], json!(["id"]));
    // A tool without a schema gets one from its placeholders.
    assert_eq!(tools[2]["inputSchema"]["required"], json!(["kind"]));

    // GET with a placeholder: percent-encoded into its segment, the query from arguments,
    // the route's credential injected at the upstream.
    let get = &out[2];
    assert_eq!(get["isError"], false, "{get}");
    let requests = echo.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(requests[0].method, "GET");
    assert_eq!(requests[0].path, "/api/users/a%20b");
    assert_eq!(requests[0].query.as_deref(), Some("verbose=true"));
    let injected = requests[0]
        .header("authorization")
        .and_then(bearer)
        .expect("the route injected a bearer token")
        .to_owned();
    assert!(idp.is_valid_token(&injected));
    // The echo reflects the request, credential included: the result has it blanked.
    let text = text_of(get);
    assert!(
        !text.contains(&injected),
        "the token reached the MCP caller: {text}"
    );
    assert!(text.contains("Bearer ***"), "{text}");
    assert_eq!(get["structuredContent"]["path"], "/api/users/a%20b");

    // POST with a JSON body.
    let post = &out[3];
    assert_eq!(post["isError"], false, "{post}");
    assert_eq!(requests[1].method, "POST");
    assert_eq!(requests[1].path, "/api/items");
    assert_eq!(requests[1].header("content-type"), Some("application/json"));
    let body: Value = serde_json::from_slice(&requests[1].body).unwrap();
    assert_eq!(body, json!({"name": "widget", "count": 2}));
    assert!(!text_of(post).contains(&injected));

    // Each call is the route's request: counted and logged as such, and as a tool call.
    assert_eq!(
        gateway
            .metric(r#"tollgate_requests_total{route="echo",code="200"}"#)
            .await,
        2.0
    );
    assert_eq!(
        gateway
            .metric(r#"tollgate_mcp_tool_calls_total{tool="get-user",outcome="success"}"#)
            .await,
        1.0
    );
    let logs = gateway.logs_once_written("\"tool\":\"create-item\"").await;
    assert!(logs.contains("\"route\":\"echo\""), "{logs}");
    assert!(!logs.contains(&injected), "a token in the logs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_argument_leaves_the_tools_route() {
    let (idp, echo) = idp_and_echo().await;
    let (yaml, url) = echo_tools_config(&idp, &echo, "");
    let _gateway = Gateway::start(&yaml).await;
    let attempts = [
        "..",
        "../admin",
        "%2e%2e",
        "a/../../admin",
        "\\..\\admin",
        ".",
    ];
    let mut steps: Vec<Value> = attempts
        .iter()
        .map(|id| json!({"call": "get-user", "args": {"id": id}}))
        .collect();
    // `/echo/admin/...` is another route's prefix: a value that lands there is refused,
    // not sent with the wrong route's checks and credential.
    steps.push(json!({"call": "get-thing", "args": {"kind": "admin"}}));
    steps.push(json!({"call": "get-user", "args": {"id": "x", "extra": 1}}));
    // The SDK's default mode: it discovers the server and picks the newest revision.
    let out = mcp_client(json!({"url": url, "mode": "auto", "steps": steps})).await;
    assert_eq!(out[0]["protocol_version"], "2026-07-28", "{:?}", out[0]);
    for (index, attempt) in attempts.iter().enumerate() {
        let result = &out[index + 1];
        if *attempt == "%2e%2e" {
            // Escapes are data: sent as `%252e%252e`, inside the route.
            assert_eq!(result["isError"], false, "{result}");
            continue;
        }
        assert_eq!(result["isError"], true, "{attempt}: {result}");
    }
    let landed = &out[attempts.len() + 1];
    assert_eq!(landed["isError"], true, "{landed}");
    assert!(text_of(landed).contains("does not serve"), "{landed}");
    assert!(text_of(&out[attempts.len() + 2]).contains("unknown argument `extra`"));
    let paths: Vec<String> = echo.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(
        paths,
        ["/api/users/%252e%252e"],
        "only the escaped value was sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rejected_token_is_replaced_by_one_retry_and_a_404_is_an_error_result() {
    let (idp, echo) = idp_and_echo().await;
    let (yaml, url) = echo_tools_config(&idp, &echo, "");
    let gateway = Gateway::start(&yaml).await;
    gateway.wait_ready().await;
    let first = idp.issued_tokens();
    assert_eq!(first.len(), 1);
    // The upstream refuses the token the gateway holds (revoked): the route purges it,
    // logs in again and sends the call once more. The stateless 2026-07-28 revision here.
    echo.respond_next_with(401, 1);
    let out = mcp_client(json!({
        "url": url,
        "mode": "2026-07-28",
        "steps": [{"call": "create-item", "args": {"item": {"n": 1}}}],
    }))
    .await;
    assert_eq!(out[0]["protocol_version"], "2026-07-28");
    assert_eq!(out[1]["isError"], false, "{:?}", out[1]);
    let requests = echo.requests();
    assert_eq!(requests.len(), 2, "the call and its one retry");
    let sent: Vec<&str> = requests
        .iter()
        .filter_map(|r| r.header("authorization").and_then(bearer))
        .collect();
    assert_eq!(sent[0], first[0]);
    assert_ne!(sent[1], first[0], "the retry carries a new token");
    assert_eq!(idp.issued_tokens().len(), 2, "one new login");
    assert_eq!(
        requests[1].body, requests[0].body,
        "the body is sent again whole"
    );
    assert_eq!(
        gateway
            .metric(r#"tollgate_upstream_retries_total{route="echo",reason="credential_rejected"}"#)
            .await,
        1.0
    );

    echo.respond_next_with(404, 1);
    let out = call_tool(&url, "get-user", json!({"id": "nobody"})).await;
    let missing = &out[1];
    assert_eq!(missing["isError"], true, "{missing}");
    assert!(
        text_of(missing).starts_with("HTTP 404 Not Found: "),
        "{missing}"
    );
    assert_eq!(missing["structuredContent"]["status"], 404);
    assert_eq!(
        gateway
            .metric(r#"tollgate_mcp_tool_calls_total{tool="get-user",outcome="http_error"}"#)
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_2025_06_18_revision_is_negotiated() {
    let (idp, echo) = idp_and_echo().await;
    let (yaml, url) = echo_tools_config(&idp, &echo, "");
    let gateway = Gateway::start(&yaml).await;
    let post = |body: Value, version: Option<&'static str>| {
        let (client, url) = (gateway.client(), url.as_str());
        async move { mcp_post(client, url, &body, version).await.unwrap() }
    };
    let rpc = |body: Value| async {
        let reply = post(body, Some("2025-06-18")).await;
        reply.json::<Value>().await.expect("JSON-RPC")
    };
    let init = post(
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "raw", "version": "0"}}}),
        None,
    )
    .await;
    assert_eq!(init.status(), 200);
    assert!(
        init.headers().get("mcp-session-id").is_none(),
        "stateless: no session"
    );
    let init: Value = init.json().await.unwrap();
    assert_eq!(init["result"]["protocolVersion"], "2025-06-18", "{init}");
    let listed = rpc(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"})).await;
    assert_eq!(
        listed["result"]["tools"].as_array().map(Vec::len),
        Some(3),
        "{listed}"
    );

    // A loopback listener answers loopback names only: a page that rebinds its own name to
    // 127.0.0.1 still sends its own Host.
    let rebound = gateway
        .client()
        .post(&url)
        .header("host", "attacker.example")
        .header("accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "id": 3, "method": "tools/list"}))
        .send()
        .await
        .unwrap();
    assert!(rebound.status().is_client_error(), "{}", rebound.status());
    // An unknown tool is a JSON-RPC error, not a result (and not a metric label).
    let unknown = rpc(json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "nope", "arguments": {}}})).await;
    assert!(unknown["error"]["code"].is_i64(), "{unknown}");
    assert!(!gateway.metrics().await.contains("tool=\"nope\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mcp_inbound_answers_401_with_resource_metadata_and_keeps_the_callers_token_home() {
    let (idp, echo) = idp_and_echo().await;
    let inbound = format!(
        "  inbound:\n    jwt: {{ secret: \"{}\", algorithms: [HS256], issuer: \"{}\", audience: \"{}\" }}\n",
        kit::HMAC_SECRET,
        kit::ISSUER,
        kit::AUDIENCE
    );
    let (yaml, url) = echo_tools_config(&idp, &echo, &inbound);
    let _gateway = Gateway::start(&yaml).await;
    let token = kit::mint(
        jsonwebtoken::Algorithm::HS256,
        kit::HMAC_SECRET.as_bytes(),
        None,
        &kit::claims(),
    );
    let out = mcp_client(json!({
        "url": url,
        "mode": "legacy",
        "token": token,
        "steps": [
            {"unauthenticated": true},
            {"call": "get-user", "args": {"id": "alice"}},
        ],
    }))
    .await;
    // Lines: the session's header, the unauthenticated probe, the session's call.
    let probe = &out[1];
    assert_eq!(probe["status"], 401, "{probe}");
    let challenge = probe["www_authenticate"].as_str().unwrap();
    assert!(challenge.starts_with("Bearer "), "{challenge}");
    let metadata_url = url.replace("/mcp", "/.well-known/oauth-protected-resource/mcp");
    assert_eq!(probe["metadata_url"], metadata_url.as_str(), "{challenge}");
    assert_eq!(probe["metadata"]["resource"], url.as_str());
    assert_eq!(
        probe["metadata"]["authorization_servers"],
        json!([kit::ISSUER])
    );
    assert_eq!(
        probe["metadata"]["bearer_methods_supported"],
        json!(["header"])
    );

    let call = &out[2];
    assert_eq!(call["isError"], false, "{call}");
    let requests = echo.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    let sent = request.header("authorization").and_then(bearer).unwrap();
    assert!(
        idp.is_valid_token(sent),
        "the route's own credential went upstream"
    );
    for (name, value) in &request.headers {
        assert!(
            !value.contains(&token),
            "the caller's token reached the upstream in {name}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn seed_000_capability_serves_its_rest_and_its_mcp_adapter_unchanged() {
    let bigid = BigIdStandIn::start(BigIdSettings::default()).await.unwrap();
    let capability = repo().join("config/capabilities/bigid-authentication-sessions.yaml");
    let seed = std::fs::read_to_string(
        std::fs::read_dir(repo().join("../shared/seeds"))
            .map(|dir| {
                dir.filter_map(Result::ok)
                    .map(|entry| entry.path())
                    .find(|path| {
                        path.file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with("000_"))
                    })
            })
            .ok()
            .flatten()
            .unwrap_or_else(|| capability.clone()),
    )
    .unwrap();
    let file = std::fs::read_to_string(&capability).unwrap();
    assert!(
        seed.contains(file.trim_end()),
        "config/capabilities holds seed 000's YAML as published"
    );

    let (yaml, url) = mcp_config(&format!(
        "mcp:\n  import:\n    - naftiko: {}\n",
        capability.display()
    ));
    let gateway = Gateway::start_with_env(
        &yaml,
        &[
            ("BIGID_BASE_URL", &bigid.url()),
            ("BIGID_USER_TOKEN", "demo-bigid-user-token"),
        ],
    )
    .await;
    // The REST adapter, on the proxy listener: each call answers 200 with JSON.
    let rest = |path: &'static str, body: Option<Value>| {
        let gateway = &gateway;
        async move {
            let mut request = gateway.client().post(gateway.proxy_url(path));
            if let Some(body) = body {
                request = request.json(&body);
            }
            let reply = request.send().await.unwrap();
            assert_eq!(reply.status(), 200, "{path}");
            reply.json::<Value>().await.unwrap()
        }
    };
    let login = json!({"username": "bigid-admin", "password": "bigid-password"});
    let session = rest("/v1/sessions", Some(login)).await;
    assert!(session["auth_token"].is_string(), "{session}");
    let refreshed = rest("/v1/refresh-access-token", None).await;
    assert!(refreshed["systemToken"].is_string(), "{refreshed}");

    // The MCP adapter, on the MCP listener.
    let out = mcp_client(json!({
        "url": url,
        "mode": "legacy",
        "steps": [
            {"list": true},
            {"call": "bigid-create-session", "args": {"body": {"username": "bigid-admin", "password": "bigid-password"}}},
            {"call": "bigid-refresh-access-token", "args": {}},
        ],
    }))
    .await;
    let tools = out[1]["tools"].as_array().unwrap();
    let names: Vec<&str> = tools.iter().filter_map(|t| t["name"].as_str()).collect();
    assert_eq!(
        names,
        ["bigid-create-session", "bigid-refresh-access-token"]
    );
    assert_eq!(tools[0]["description"], "BigID Create A User Session");
    assert_eq!(tools[1]["annotations"]["idempotentHint"], true);
    assert_eq!(tools[0]["inputSchema"]["required"], json!(["body"]));
    assert_eq!(out[2]["isError"], false, "{}", out[2]);
    assert!(
        out[2]["structuredContent"]["auth_token"].is_string(),
        "{}",
        out[2]
    );
    assert_eq!(out[3]["isError"], false, "{}", out[3]);
    assert!(
        out[3]["structuredContent"]["systemToken"].is_string(),
        "{}",
        out[3]
    );
    assert_eq!(bigid.session_requests(), 2);
    assert_eq!(bigid.refresh_requests(), 2);
    let logs = gateway.logs();
    assert!(
        !logs.contains("demo-bigid-user-token"),
        "the bound user token in the logs"
    );
}

#[test]
fn check_names_unknown_routes_placeholders_outside_the_schema_and_duplicate_tools() {
    let yaml = r#"
server: { listen: ["127.0.0.1:18999"], admin: "127.0.0.1:18998" }
providers:
  key: { type: static, value: some-api-key }
routes:
  - name: api
    match: { path_prefix: /api/ }
    strip_prefix: true
    upstream: { url: "http://127.0.0.1:1/v1" }
    credential: { provider: key }
mcp:
  tools:
    - name: one
      route: nowhere
      path: /v1/x
    - name: two
      route: api
      path: /v1/users/{id}
      input_schema: { type: object, properties: { other: { type: string } } }
    - name: two
      route: api
      path: /elsewhere/x
    - name: four
      route: api
      path: /v1/../x
"#;
    check_refuses(
        yaml,
        &[
            "mcp.tools[0].route: no route named `nowhere` is configured",
            "mcp.tools[1].path: argument `id` is not in input_schema.properties",
            "mcp.tools[2].name: duplicate tool name `two`",
            "mcp.tools[2].path: is the path the upstream receives, so it starts with the route's upstream base path `/v1`",
            "mcp.tools[3].path: is not a canonical path",
        ],
    );
}

/// `tollgate demo` on its fixed ports (one at a time: see `demo`): the MCP listener with its
/// tools, and the curl lines it prints to try them.
#[cfg(feature = "demo")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_serves_tools_and_prints_how_to_try_them() {
    let demo = crate::demo::Demo::start().await;
    let client = client();
    // The printed curl line, sent as printed: a stateless tools/list.
    let listed: Value = client
        .post("http://127.0.0.1:9090/mcp")
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#)
        .send()
        .await
        .expect("the MCP listener answers")
        .json()
        .await
        .expect("JSON-RPC");
    let names: Vec<&str> = listed["result"]["tools"]
        .as_array()
        .map(|tools| tools.iter().filter_map(|t| t["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        names,
        ["echo-get", "echo-post", "bigid-create-session"],
        "{listed}"
    );

    let out = mcp_client(json!({
        "url": "http://127.0.0.1:9090/mcp",
        "mode": "legacy",
        "steps": [
            {"call": "echo-get", "args": {"item": "42"}},
            {"call": "bigid-create-session", "args": {"body": {"username": "bigid-admin", "password": "bigid-password"}}},
        ],
    }))
    .await;
    assert_eq!(out[1]["isError"], false, "{}", out[1]);
    assert_eq!(out[1]["structuredContent"]["path"], "/items/42");
    assert_eq!(
        out[1]["structuredContent"]["headers"]["authorization"],
        "Bearer ***"
    );
    assert!(
        out[2]["structuredContent"]["auth_token"].is_string(),
        "{}",
        out[2]
    );

    let printed = demo.printed().join("\n");
    assert!(
        printed.contains("MCP endpoint for agents: http://127.0.0.1:9090/mcp"),
        "{printed}"
    );
    assert!(printed.contains(r#""method":"tools/list""#), "{printed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_routes_own_check_applies_to_the_mcp_caller_and_a_static_secret_never_shows() {
    let echo = EchoUpstream::start().await.unwrap();
    let (yaml, url) = mcp_config(&format!(
        r#"providers:
  key: {{ type: static, value: static-upstream-key-9f3k }}
routes:
  - name: checked
    match: {{ path_prefix: /checked/ }}
    strip_prefix: true
    upstream: {{ url: "{echo}" }}
    inbound: {{ api_keys: {{ header: X-Caller-Key, keys: [caller-key-0001-abcdef] }} }}
    credential: {{ provider: key, header: X-Upstream-Key, format: "{{token}}" }}
mcp:
  tools:
    - {{ name: look, route: checked, path: /look }}
"#,
        echo = echo.url()
    ));
    let _gateway = Gateway::start(&yaml).await;
    let without = call_tool(&url, "look", json!({})).await;
    assert_eq!(without[1]["isError"], true, "{}", without[1]);
    assert!(
        text_of(&without[1]).starts_with("HTTP 401"),
        "{}",
        without[1]
    );
    assert!(
        echo.requests().is_empty(),
        "refused by the route's check, never forwarded"
    );

    let with = mcp_client(json!({
        "url": url, "mode": "legacy",
        "headers": {"X-Caller-Key": "caller-key-0001-abcdef"},
        "steps": [{"call": "look", "args": {}}],
    }))
    .await;
    assert_eq!(with[1]["isError"], false, "{}", with[1]);
    let request = echo.last_request().expect("forwarded");
    assert_eq!(
        request.header("x-upstream-key"),
        Some("static-upstream-key-9f3k")
    );
    assert_eq!(
        request.header("x-caller-key"),
        None,
        "the route removed the caller's key"
    );
    let text = text_of(&with[1]);
    assert!(!text.contains("static-upstream-key-9f3k"), "{text}");
    assert!(text.contains("***"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tools_reload_with_the_config() {
    let (idp, echo) = idp_and_echo().await;
    let (yaml, url) = echo_tools_config(&idp, &echo, "");
    let gateway = Gateway::start(&yaml).await;
    let added = yaml.replace(
        "    - name: get-thing\n",
        "    - name: added-later\n      route: echo\n      path: /api/later\n    - name: get-thing\n",
    );
    assert_ne!(added, yaml);
    gateway.rewrite_config(&added);
    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});
    let listed = eventually(Duration::from_secs(15), || async {
        match mcp_post(gateway.client(), &url, &list, None).await {
            Ok(reply) => reply
                .json::<Value>()
                .await
                .is_ok_and(|body| body.to_string().contains("added-later")),
            Err(_) => false,
        }
    })
    .await;
    assert!(listed, "the reloaded config's tool is not listed");
    let out = call_tool(&url, "added-later", json!({})).await;
    assert_eq!(out[1]["isError"], false, "{}", out[1]);
    assert_eq!(
        echo.last_request().map(|r| r.path),
        Some("/api/later".to_owned())
    );
}
