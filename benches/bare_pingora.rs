//! The floor for tollgate's speed: a pingora proxy that does nothing but inject a static
//! `Authorization` header, built with tollgate's allocator and release profile.
//! `benches/load.py` runs it beside nginx and tollgate, so the share of the cost that is
//! pingora's own shows up in the same run.
//!
//! Built only on request (`--features bench-bare`), as it is a bench tool, not a product:
//!     cargo build --release --features bench-bare --bin bare-pingora
//!     target/release/bare-pingora 127.0.0.1:8081 127.0.0.1:8000

use std::net::SocketAddr;

use async_trait::async_trait;
use pingora::http::RequestHeader;
use pingora::prelude::HttpPeer;
use pingora::proxy::{ProxyHttp, Session};
use pingora::server::configuration::ServerConf;
use pingora::server::Server;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct StaticHeader {
    upstream: SocketAddr,
}

#[async_trait]
impl ProxyHttp for StaticHeader {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut (),
    ) -> pingora::Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        request: &mut RequestHeader,
        _ctx: &mut (),
    ) -> pingora::Result<()> {
        request.insert_header("Authorization", "Bearer static-token")
    }
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: bare-pingora LISTEN_ADDR UPSTREAM_ADDR");
    };
    let upstream: SocketAddr = upstream.parse()?;
    let conf = ServerConf {
        threads: 1,
        // The same runtime layout and upstream pool as tollgate with one thread: with
        // pingora's pool of 128, 256 callers reopened upstream connections all the time.
        work_stealing: false,
        upstream_keepalive_pool_size: 1024,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut service =
        pingora::proxy::http_proxy_service(&server.configuration, StaticHeader { upstream });
    service.add_tcp(&listen);
    server.add_service(service);
    server.run_forever()
}
