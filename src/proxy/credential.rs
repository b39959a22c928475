//! The route's credential: obtained at admission and again for the retry after the
//! upstream rejected it, and purged (exactly the token that was sent) on that rejection.

use std::sync::Arc;

use super::context::Exchange;
use super::refusal::Refusal;
use crate::metrics::Metrics;
use crate::routing::CompiledRoute;
use crate::tokens::{Rejection, Token, TokenManager};

/// The route's token now: a cache hit returns at once; a miss joins the provider call.
pub async fn obtain(
    tokens: &Arc<TokenManager>,
    route: &CompiledRoute,
) -> Result<Option<Arc<Token>>, Refusal> {
    let Some(credential) = &route.credential else {
        return Ok(None);
    };
    tokens
        .credential(credential.provider)
        .await
        .map(Some)
        .map_err(Refusal::CredentialUnavailable)
}

/// The upstream answered one of the route's rejection statuses: the token that was sent is
/// purged (a newer one another request fetched survives) unless renewals on rejection are
/// paused, and the answer is whether to send the request once more with a fresh one.
pub async fn rejected(exchange: &mut Exchange, replayable: bool, metrics: &Metrics) -> bool {
    let (Some(credential), Some(token)) = (&exchange.route.credential, &exchange.token) else {
        return false;
    };
    metrics
        .token_rejections
        .with_label_values(&[&credential.provider_name, &exchange.route.name])
        .inc();
    match exchange.tokens.reject(credential.provider, token.id).await {
        Rejection::Renewing => exchange.retry.on_rejection(replayable),
        Rejection::Paused => false,
    }
}

/// The upstream answered with anything but a rejection status: the token works.
pub fn accepted(exchange: &Exchange) {
    if let Some(credential) = &exchange.route.credential {
        exchange.tokens.accepted(credential.provider);
    }
}
