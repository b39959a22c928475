//! The route's credential: obtained at admission and again for the retry after the
//! upstream rejected it, and purged (exactly the token that was sent) on that rejection.
//! A provider that mints a token per caller gets the caller's verified token from the
//! inbound checks, and its cache entry is that caller's alone.

use std::sync::Arc;

use super::context::Exchange;
use super::refusal::Refusal;
use crate::inbound::Identity;
use crate::metrics::Metrics;
use crate::routing::{Admission, CompiledRoute};
use crate::tokens::{CallerCredentialError, CallerKey, Rejection, Token, TokenManager};

/// The token for this request, and the caller's place in a per-caller provider's cache.
#[derive(Default)]
pub struct Obtained {
    pub token: Option<Arc<Token>>,
    pub caller_key: Option<CallerKey>,
}

/// The route's token now: a cache hit returns at once; a miss joins the provider call
/// (for a per-caller provider, the call for this caller).
pub async fn obtain(
    tokens: &Arc<TokenManager>,
    route: &CompiledRoute,
    identity: &Identity,
) -> Result<Obtained, Refusal> {
    let Some(credential) = &route.credential else {
        return Ok(Obtained::default());
    };
    if !credential.per_caller {
        let token = tokens
            .credential(credential.provider)
            .await
            .map_err(Refusal::CredentialUnavailable)?;
        return Ok(Obtained {
            token: Some(token),
            caller_key: None,
        });
    }
    // The route's inbound check keeps the verified token on every route of a per-caller
    // provider (see `CompiledRoute::build`); without one, nothing is forwarded.
    let Some(caller) = &identity.caller_token else {
        return Err(Refusal::Internal);
    };
    match tokens.caller_credential(credential.provider, caller).await {
        Ok((token, key)) => Ok(Obtained {
            token: Some(token),
            caller_key: Some(key),
        }),
        Err(CallerCredentialError::Refused(refused)) => Err(Refusal::CallerRefused(refused)),
        Err(CallerCredentialError::Unavailable(unavailable)) => {
            Err(Refusal::CredentialUnavailable(unavailable))
        }
        Err(CallerCredentialError::Expired) => Err(expired(route)),
    }
}

/// The caller's token expired between the inbound check and the credential step: the
/// check's own answer to an expired token.
fn expired(route: &CompiledRoute) -> Refusal {
    route
        .admission
        .iter()
        .find_map(|step| match step {
            Admission::Inbound(inbound) => Some(Refusal::Caller(inbound.expired())),
            _ => None,
        })
        .unwrap_or(Refusal::Internal)
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
    let rejection = match &exchange.caller_key {
        Some(key) => {
            exchange
                .tokens
                .reject_caller(credential.provider, key, token.id)
                .await
        }
        None => exchange.tokens.reject(credential.provider, token.id).await,
    };
    match rejection {
        Rejection::Renewing => exchange.retry.on_rejection(replayable),
        Rejection::Paused => false,
    }
}

/// The upstream answered with anything but a rejection status: the token works.
pub async fn accepted(exchange: &Exchange) {
    if let Some(credential) = &exchange.route.credential {
        match &exchange.caller_key {
            Some(key) => {
                exchange
                    .tokens
                    .accepted_caller(credential.provider, key)
                    .await
            }
            None => exchange.tokens.accepted(credential.provider),
        }
    }
}
