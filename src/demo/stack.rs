//! What `tollgate demo` runs beside the gateway: the stand-ins on the fixed loopback ports
//! that `config/demo.yaml` points at.

use std::net::SocketAddr;
use std::time::Duration;

use super::bigid::{BigIdSettings, BigIdStandIn};
use super::echo::EchoUpstream;
use super::oauth2::{OAuth2Settings, OAuth2StandIn};

/// The gateway config of the demo, validated like any other config file.
pub const CONFIG: &str = include_str!("../../config/demo.yaml");

const OAUTH2_ADDR: ([u8; 4], u16) = ([127, 0, 0, 1], 18081);
const BIGID_ADDR: ([u8; 4], u16) = ([127, 0, 0, 1], 18082);
const ECHO_ADDR: ([u8; 4], u16) = ([127, 0, 0, 1], 18090);

pub struct DemoStack {
    pub oauth2: OAuth2StandIn,
    pub bigid: BigIdStandIn,
    pub echo: EchoUpstream,
}

impl DemoStack {
    pub async fn start() -> std::io::Result<DemoStack> {
        let oauth2 = OAuth2StandIn::start_on(
            SocketAddr::from(OAUTH2_ADDR),
            OAuth2Settings {
                token_ttl: Duration::from_secs(120),
                ..OAuth2Settings::default()
            },
        )
        .await
        .map_err(|e| with_addr(e, OAUTH2_ADDR))?;
        let bigid = BigIdStandIn::start_on(SocketAddr::from(BIGID_ADDR), BigIdSettings::default())
            .await
            .map_err(|e| with_addr(e, BIGID_ADDR))?;
        let echo = EchoUpstream::start_on(SocketAddr::from(ECHO_ADDR))
            .await
            .map_err(|e| with_addr(e, ECHO_ADDR))?;
        Ok(DemoStack {
            oauth2,
            bigid,
            echo,
        })
    }
}

fn with_addr(error: std::io::Error, addr: ([u8; 4], u16)) -> std::io::Error {
    std::io::Error::new(
        error.kind(),
        format!(
            "demo stand-in cannot listen on {}: {error}",
            SocketAddr::from(addr)
        ),
    )
}

/// What to try once the demo runs.
pub fn instructions() -> String {
    [
        "tollgate demo is running: gateway on http://127.0.0.1:8080, admin on http://127.0.0.1:9901",
        "stand-ins: OAuth2 token endpoint :18081, BigID :18082, echo upstream :18090",
        "",
        "Try (the echo upstream shows the headers it received, with the injected credential):",
        "  curl -s localhost:8080/oauth2/anything                        # Bearer token from the OAuth2 client_credentials grant",
        "  curl -s localhost:8080/bigid/anything                         # BigID system token (user token exchange)",
        "  curl -s localhost:8080/bigid-session/anything                 # BigID session token (username/password)",
        "  curl -s -H 'Authorization: Bearer mine' localhost:8080/oauth2/x  # your header is replaced",
        "  curl -s localhost:8080/nowhere                                # 404 no_route",
        "  curl -s localhost:9901/status                                 # token state and fingerprints, never tokens",
        "  curl -s localhost:9901/metrics | grep tollgate_",
        "",
        "Ctrl-C stops it.",
    ]
    .join("\n")
}
