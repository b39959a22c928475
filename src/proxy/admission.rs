//! Whether a request may go on to its upstream: the route's admission steps, compiled once
//! per route ([`Admission`]), run in order; the first refusal is the answer.

use pingora::http::RequestHeader;

use super::context::Exchange;
use super::credential;
use super::refusal::Refusal;
use crate::inbound::outcome_label;
use crate::metrics::Metrics;
use crate::routing::Admission;
use crate::tls::ClientCert;

/// `client_cert` is the certificate the connection's mTLS handshake verified, if any.
pub async fn admit(
    exchange: &mut Exchange,
    request: &RequestHeader,
    client_cert: Option<&ClientCert>,
    metrics: &Metrics,
) -> Result<(), Refusal> {
    let Exchange {
        route,
        tokens,
        identity,
        token,
        caller_key,
        ..
    } = exchange;
    for step in &route.admission {
        match step {
            Admission::DeclaredBodyLimit => {
                if declared_body_length(request)
                    .is_some_and(|length| length > route.max_request_body)
                {
                    return Err(Refusal::PayloadTooLarge {
                        limit: route.max_request_body,
                    });
                }
            }
            Admission::Inbound(inbound) => {
                let outcome = inbound
                    .check(&request.method, &request.headers, client_cert)
                    .await;
                metrics
                    .inbound_auth
                    .with_label_values(&[&route.name, outcome_label(&outcome)])
                    .inc();
                *identity = outcome.map_err(Refusal::Caller)?;
            }
            Admission::Credential => {
                let obtained = credential::obtain(tokens, route, identity).await?;
                *token = obtained.token;
                *caller_key = obtained.caller_key;
            }
        }
    }
    Ok(())
}

/// The `Content-Length` the caller declared, if any.
fn declared_body_length(request: &RequestHeader) -> Option<u64> {
    request
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.trim().parse().ok())
}
