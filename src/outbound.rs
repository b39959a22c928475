//! Every HTTP call tollgate makes itself (provider logins, JWKS fetches, authorization
//! decisions) goes through here: one pooled reqwest client (rustls) per party with its
//! whole-call timeout, CA file and TLS settings, redirects off; one exchange that reads the
//! reply only up to a size limit, as its bytes arrive; and transport errors whose text
//! never holds a URL or a header.

use std::time::Duration;

use reqwest::{RequestBuilder, StatusCode};

use crate::config::TlsSettings;

pub struct Outbound {
    client: reqwest::Client,
    timeout: Duration,
}

/// A reply read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Vec<u8>,
}

/// Why no whole reply came back. The text is safe to log and to show: the cause below
/// reqwest's error (refused, DNS, TLS), never the URL or a header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutboundError {
    #[error("did not answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Unreachable(String),
    #[error("reply larger than {0} bytes")]
    TooLarge(usize),
    #[error("reply body was cut off")]
    CutOff,
}

impl Outbound {
    pub fn new(timeout: Duration, tls: &TlsSettings) -> Result<Outbound, String> {
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("tollgate/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none());
        if let Some(path) = &tls.ca_file {
            for der in crate::tls::read_ca_file(path)? {
                let cert =
                    reqwest::Certificate::from_der(der.as_ref()).map_err(|e| e.to_string())?;
                builder = builder.add_root_certificate(cert);
            }
        }
        if tls.insecure_skip_verify {
            builder = builder.danger_accept_invalid_certs(true);
        }
        let client = builder.build().map_err(|e| e.to_string())?;
        Ok(Outbound { client, timeout })
    }

    /// For building requests; send them with [`Outbound::exchange`].
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends `request` and reads the whole reply, stopping as soon as it grows past `limit`
    /// bytes (a declared length over it is refused before any byte is read).
    pub async fn exchange(
        &self,
        request: RequestBuilder,
        limit: usize,
    ) -> Result<Reply, OutboundError> {
        let mut response = request.send().await.map_err(|e| self.transport(&e))?;
        let status = response.status();
        if response
            .content_length()
            .is_some_and(|length| length > limit as u64)
        {
            return Err(OutboundError::TooLarge(limit));
        }
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > limit {
                        return Err(OutboundError::TooLarge(limit));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => return Ok(Reply { status, body }),
                Err(error) if error.is_timeout() => {
                    return Err(OutboundError::Timeout(self.timeout))
                }
                Err(_) => return Err(OutboundError::CutOff),
            }
        }
    }

    fn transport(&self, error: &reqwest::Error) -> OutboundError {
        if error.is_timeout() {
            return OutboundError::Timeout(self.timeout);
        }
        let kind = if error.is_connect() {
            "connection failed"
        } else {
            "request failed"
        };
        let mut cause = String::new();
        let mut source = std::error::Error::source(error);
        while let Some(inner) = source {
            cause = inner.to_string();
            source = inner.source();
        }
        OutboundError::Unreachable(if cause.is_empty() {
            kind.to_owned()
        } else {
            format!("{kind}: {cause}")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server that answers one request with a chunked body of `chunks` pieces of 1 KiB,
    /// and counts the chunks it managed to write.
    async fn chunked_server(chunks: usize) -> (String, tokio::task::JoinHandle<usize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut head = [0u8; 4096];
            let _ = stream.read(&mut head).await;
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                .await;
            let piece = format!("400\r\n{}\r\n", "x".repeat(1024));
            let mut written = 0;
            for _ in 0..chunks {
                if stream.write_all(piece.as_bytes()).await.is_err() {
                    break;
                }
                written += 1;
            }
            let _ = stream.write_all(b"0\r\n\r\n").await;
            written
        });
        (url, task)
    }

    fn outbound() -> Outbound {
        Outbound::new(Duration::from_secs(5), &TlsSettings::default()).unwrap()
    }

    #[tokio::test]
    async fn a_reply_within_the_limit_is_read_whole() {
        let (url, _server) = chunked_server(3).await;
        let outbound = outbound();
        let reply = outbound
            .exchange(outbound.client().get(url), 4096)
            .await
            .unwrap();
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body.len(), 3 * 1024);
    }

    #[tokio::test]
    async fn a_chunked_reply_past_the_limit_is_refused_before_it_is_all_read() {
        // 64 MiB on offer; the exchange stops at 4 KiB and drops the connection.
        let (url, server) = chunked_server(64 * 1024).await;
        let outbound = outbound();
        let error = outbound
            .exchange(outbound.client().get(url), 4096)
            .await
            .unwrap_err();
        assert_eq!(error, OutboundError::TooLarge(4096));
        let written = server.await.unwrap();
        assert!(
            written < 64 * 1024,
            "the whole reply was read: {written} chunks"
        );
    }

    #[tokio::test]
    async fn a_refused_connection_names_the_cause_not_the_url() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!(
            "http://{}/secret-path?key=abc",
            listener.local_addr().unwrap()
        );
        drop(listener);
        let outbound = outbound();
        let error = outbound
            .exchange(outbound.client().get(url), 4096)
            .await
            .unwrap_err();
        let text = error.to_string();
        assert!(text.starts_with("connection failed"), "{text}");
        assert!(
            !text.contains("secret-path") && !text.contains("key=abc"),
            "{text}"
        );
    }
}
