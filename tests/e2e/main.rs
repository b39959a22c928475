//! The end-to-end tests, in one test binary (one link of the gateway instead of one per
//! file): each module runs the real `tollgate` binary against the in-process stand-ins of
//! `tollgate_standins`. `cargo test --test e2e NAME` runs the tests whose path holds NAME,
//! for example `cargo test --test e2e abuse::` or `cargo test --test e2e sighup`.

// The harness shared by every module.
mod common;

// What the gateway forwards and answers.
mod admin;
mod providers;
mod proxying;
mod token_lifecycle;
mod tokens;

// Provider types.
mod provider_types;
mod provider_types_bagid;
mod provider_types_leaks;
mod provider_types_static_http;

// Credentials minted per caller, and tokens shared by a fleet of gateways.
mod fleet;
mod per_caller;

// The MCP endpoint, driven by the official MCP Python SDK (mcp/client.py).
mod mcp;

// Listeners: TLS, mTLS, HTTP/2, gRPC (a grpcio peer, listeners/) and WebSocket.
mod listeners;

// Inbound checks and the attacker's view.
mod abuse;
mod authorization_boundary;
mod inbound;
mod secrets;

// Faults, reload, shutdown.
mod faults_provider;
mod faults_upstream;
mod reload;
mod shutdown;

// The command line: check, token, demo, the example configs.
mod cli_token;
mod config_errors;
mod config_examples;
#[cfg(feature = "demo")]
mod demo;
