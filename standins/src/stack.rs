//! What `tollgate demo` runs beside the gateway: the stand-ins on the fixed loopback ports
//! that `config/demo.yaml` points at.

use std::net::SocketAddr;
use std::time::Duration;

use crate::bagid::{AttestorStandIn, BagIdSettings, BagIdStandIn};
use crate::bigbucks::{BigBucksSettings, BigBucksStandIn};
use crate::bigid::{BigIdSettings, BigIdStandIn};
use crate::echo::EchoUpstream;
use crate::fortanix::{FortanixSettings, FortanixStandIn};
use crate::handle::{Provider, StandIn};
use crate::oauth2::{OAuth2Settings, OAuth2StandIn};

/// The gateway config of the demo, validated like any other config file.
pub const CONFIG: &str = include_str!("../../config/demo.yaml");

const OAUTH2_PORT: u16 = 18081;
const BIGID_PORT: u16 = 18082;
const FORTANIX_PORT: u16 = 18083;
const BIGBUCKS_PORT: u16 = 18084;
const BAGID_PORT: u16 = 18085;
const ATTESTOR_PORT: u16 = 18086;
const ECHO_PORT: u16 = 18090;

/// The stand-ins stop when this is dropped.
pub struct DemoStack {
    pub oauth2: OAuth2StandIn,
    pub bigid: BigIdStandIn,
    pub fortanix: FortanixStandIn,
    pub bigbucks: BigBucksStandIn,
    pub bagid: BagIdStandIn,
    pub attestor: AttestorStandIn,
    pub echo: EchoUpstream,
}

impl DemoStack {
    pub async fn start() -> std::io::Result<DemoStack> {
        let oauth2_settings = OAuth2Settings {
            token_ttl: Duration::from_secs(120),
            ..OAuth2Settings::default()
        };
        Ok(DemoStack {
            oauth2: provider(OAUTH2_PORT, oauth2_settings).await?,
            bigid: provider(BIGID_PORT, BigIdSettings::default()).await?,
            fortanix: provider(FORTANIX_PORT, FortanixSettings::default()).await?,
            bigbucks: provider(BIGBUCKS_PORT, BigBucksSettings::default()).await?,
            bagid: provider(BAGID_PORT, BagIdSettings::default()).await?,
            attestor: at(
                ATTESTOR_PORT,
                AttestorStandIn::start_on(addr(ATTESTOR_PORT)).await,
            )?,
            echo: at(ECHO_PORT, EchoUpstream::start_on(addr(ECHO_PORT)).await)?,
        })
    }
}

/// A provider stand-in on its demo port.
async fn provider<P: Provider>(port: u16, settings: P::Settings) -> std::io::Result<StandIn<P>> {
    at(port, StandIn::<P>::start_on(addr(port), settings).await)
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Names the port in a bind failure, the usual cause being another demo still running.
fn at<T>(port: u16, started: std::io::Result<T>) -> std::io::Result<T> {
    started.map_err(|error| {
        std::io::Error::new(
            error.kind(),
            format!("demo stand-in cannot listen on {}: {error}", addr(port)),
        )
    })
}

/// The issuer of the demo callers' tokens, as the per-caller routes of `config/demo.yaml`
/// check it.
pub const CALLER_ISSUER: &str = "https://login.demo";

/// A demo caller's token: a JWT for `subject`, signed with the public demo key, valid for
/// an hour.
pub fn caller_token(subject: &str) -> String {
    crate::jwt::mint(subject, CALLER_ISSUER, Duration::from_secs(3600))
}

/// What to try once the demo runs; the per-caller lines carry two fresh caller tokens.
pub fn instructions() -> String {
    let alice = caller_token("alice");
    let bob = caller_token("bob");
    let per_caller = format!(
        "
Per caller: the route verifies the caller's JWT, and the upstream gets a token minted for
that caller (two callers, alice and bob; their tokens are valid for an hour):
  ALICE={alice}
  BOB={bob}
  curl -s -H \"Authorization: Bearer $ALICE\" localhost:8080/per-caller/anything   # RFC 8693 token exchange: a token for alice
  curl -s -H \"Authorization: Bearer $BOB\" localhost:8080/per-caller/anything     # ...and another one for bob (its JWT's sub)
  curl -s -H \"Authorization: Bearer $ALICE\" localhost:8080/bagid-user/anything   # bagid federated login as alice
  curl -si localhost:8080/per-caller/anything                              # 401 without a caller token
"
    );
    [
        "tollgate demo is running: gateway on http://127.0.0.1:8080, admin on http://127.0.0.1:9901, MCP on http://127.0.0.1:9090/mcp",
        "stand-ins: OAuth2 :18081, BigID :18082, Fortanix DSM :18083, BigBucks Auth Engine :18084,",
        "           BagID :18085 (attestor :18086), echo upstream :18090",
        "",
        "Each route injects its provider's credential; the echo upstream shows what it received:",
        "  curl -s localhost:8080/oauth2/anything          # oauth2 client_credentials: Authorization: Bearer <JWT>",
        "  curl -s localhost:8080/bigid/anything           # bigid user token -> system token",
        "  curl -s localhost:8080/bigid-session/anything   # bigid username/password session",
        "  curl -s localhost:8080/dsm/anything             # fortanix app id + secret (HTTP Basic)",
        "  curl -s localhost:8080/engine/anything          # bigbucks signin: X-Auth: <JWT>",
        "  curl -s localhost:8080/bagid/anything           # bagid b2b_secret: Authorization: <tokenType> <JWT>",
        "  curl -s localhost:8080/bagid-guest/anything     # bagid guest: nonce + attestation",
        "  curl -s localhost:8080/static/anything          # static API key: X-Api-Key",
        "  curl -s localhost:8080/declared/anything        # http: the BigID login declared in YAML",
        "  curl -s -H 'Authorization: Bearer mine' localhost:8080/oauth2/x   # your header is replaced",
        "  curl -si localhost:8080/ingress/x                                    # ingress check: 401 without a key",
        "  curl -s -H 'X-Api-Key: demo-caller-key-0001' localhost:8080/ingress/x  # ...and a pass with one",
        "  curl -s localhost:8080/nowhere                  # 404 no_route",
        "  curl -s localhost:9901/status                   # token state and fingerprints, never tokens",
        "  curl -s localhost:9901/metrics | grep tollgate_",
        "",
        "MCP endpoint for agents: http://127.0.0.1:9090/mcp (streamable HTTP; tools echo-get, echo-post,",
        "bigid-create-session). Point an MCP client at it, or speak JSON-RPC with curl:",
        "  curl -s localhost:9090/mcp -H 'content-type: application/json' -H 'accept: application/json, text/event-stream' \\",
        "    -d '{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\"}'",
        "  curl -s localhost:9090/mcp -H 'content-type: application/json' -H 'accept: application/json, text/event-stream' \\",
        "    -d '{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"tools/call\",\"params\":{\"name\":\"echo-get\",\"arguments\":{\"item\":\"42\"}}}'",
        "  (the echo shows the request the route sent: its Authorization is blanked in the result)",
        &per_caller,
        "Ctrl-C stops it.",
    ]
    .join("\n")
}
