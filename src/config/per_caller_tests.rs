//! Config of per-caller providers: `type: token_exchange`, BagID's
//! `federated_token: from_caller`, the `per_caller` key, and the routes that may use them.

use super::tests::{assert_reported, errors_of};
use super::*;

const JWT_CHECK: &str =
    "inbound: { jwt: { secret: an-hmac-secret-of-at-least-32-bytes, algorithms: [HS256] } }";

fn config(providers: &str, route_extra: &str) -> String {
    format!(
        r#"
providers:
{providers}
routes:
  - name: reports
    match: {{ path_prefix: /reports/ }}
    upstream: {{ url: http://127.0.0.1:9000 }}
    credential: {{ provider: sts }}
{route_extra}
"#
    )
}

const STS: &str = r#"  sts:
    type: token_exchange
    token_url: https://sts.example/oauth/token
    client_id: gateway
    client_secret: s3cret"#;

/// A `bagid` provider `sts` with the federated flow and `federated_token: token`, caching
/// at most 7 callers.
fn bagid_federated(token: &str) -> String {
    format!(
        "  sts:\n    type: bagid\n    flow: federated\n    base_url: https://api.bagid.example\n    app_key: key\n    federated_token: {token}\n    per_caller: {{ max_entries: 7 }}"
    )
}

#[test]
fn a_token_exchange_provider_with_its_defaults() {
    let config = parse(&config(STS, &format!("    {JWT_CHECK}"))).unwrap();
    let spec = &config.providers[0];
    assert_eq!(
        spec.per_caller,
        Some(PerCallerSettings {
            max_entries: 100_000
        })
    );
    let ProviderSettings::TokenExchange(settings) = &spec.settings else {
        panic!("not token_exchange: {:?}", spec.settings);
    };
    assert_eq!(settings.subject_token_type, ACCESS_TOKEN_TYPE);
    assert_eq!(settings.client.client_auth, ClientAuth::Basic);
    assert!(settings.audiences.is_empty() && settings.resources.is_empty());
    assert!(settings.actor.is_none());
    assert_eq!(spec.settings.kind(), "token_exchange");
}

#[test]
fn every_token_exchange_key() {
    let providers = format!(
        r#"{STS}
    client_auth: post
    subject_token_type: urn:ietf:params:oauth:token-type:jwt
    requested_token_type: urn:ietf:params:oauth:token-type:access_token
    audience: [reports, audit]
    resource: https://reports.example/api
    scopes: [reports.read]
    actor_token: gateway-actor-token
    actor_token_type: urn:ietf:params:oauth:token-type:jwt
    per_caller: {{ max_entries: 500 }}"#
    );
    let config = parse(&config(&providers, &format!("    {JWT_CHECK}"))).unwrap();
    let spec = &config.providers[0];
    let ProviderSettings::TokenExchange(settings) = &spec.settings else {
        panic!("not token_exchange");
    };
    assert_eq!(settings.audiences, ["reports", "audit"]);
    assert_eq!(settings.resources, ["https://reports.example/api"]);
    assert_eq!(settings.scopes, ["reports.read"]);
    let actor = settings.actor.as_ref().unwrap();
    assert_eq!(actor.token.expose(), "gateway-actor-token");
    assert_eq!(actor.token_type, "urn:ietf:params:oauth:token-type:jwt");
    assert_eq!(spec.per_caller.unwrap().max_entries, 500);
}

#[test]
fn token_exchange_errors_name_their_keys() {
    let providers = r#"  sts:
    type: token_exchange
    token_url: ftp://sts.example
    client_id: ""
    subject_token_type: not a uri
    requested_token_type: "also not"
    resource: [https://ok.example, "relative/path", "https://x.example/#frag"]
    audience: ""
    scopes: ["two words"]
    actor_token_type: urn:ietf:params:oauth:token-type:jwt
    per_caller: { max_entries: 0 }"#;
    let errors = errors_of(&config(providers, &format!("    {JWT_CHECK}")));
    for prefix in [
        "providers.sts.token_url: `ftp://sts.example` is not an http:// or https:// URL",
        "providers.sts.client_id: is empty",
        "providers.sts.subject_token_type: `not a uri` is not a token type URI",
        "providers.sts.requested_token_type: `also not` is not a token type URI",
        "providers.sts.resource[1]: `relative/path` is not an absolute URI",
        "providers.sts.resource[2]: a resource indicator has no fragment",
        "providers.sts.audience: an audience is a non-empty name",
        "providers.sts.scopes[0]: a scope is one non-empty word",
        "providers.sts.actor_token_type: is sent only with an actor_token",
    ] {
        assert_reported(&errors, prefix);
    }
    let valid_otherwise = format!("{STS}\n    per_caller: {{ max_entries: 0 }}");
    let errors = errors_of(&config(&valid_otherwise, &format!("    {JWT_CHECK}")));
    assert_reported(
        &errors,
        "providers.sts.per_caller.max_entries: must be between 1 and",
    );
    let typo = format!("{STS}\n    per_caller: {{ max_entry: 5 }}");
    assert_reported(
        &errors_of(&config(&typo, &format!("    {JWT_CHECK}"))),
        "providers.sts.per_caller.max_entry: unknown field",
    );
}

#[test]
fn bagid_federated_from_caller_is_per_caller() {
    let providers = bagid_federated("from_caller");
    let config = parse(&config(&providers, &format!("    {JWT_CHECK}"))).unwrap();
    let spec = &config.providers[0];
    assert!(spec.settings.is_per_caller());
    assert_eq!(spec.per_caller.unwrap().max_entries, 7);
    let ProviderSettings::BagId(settings) = &spec.settings else {
        panic!("not bagid");
    };
    assert!(matches!(
        settings.flow,
        BagIdFlow::Federated {
            token: FederatedToken::FromCaller,
            ..
        }
    ));
}

#[test]
fn per_caller_is_refused_on_a_provider_with_a_token_of_its_own() {
    let errors = errors_of(&config(&bagid_federated("a-fixed-host-token"), ""));
    assert_reported(
        &errors,
        "providers.sts.per_caller: only a provider that mints a token per caller takes it",
    );
}

#[test]
fn a_per_caller_provider_needs_a_route_check_that_verifies_a_token() {
    let without = errors_of(&config(STS, ""));
    assert_reported(
        &without,
        "routes[0].credential.provider: provider `sts` mints a token per caller from the caller's verified token: the route needs an inbound check",
    );
    let keys_only = errors_of(&config(
        STS,
        "    inbound: { api_keys: { header: X-Api-Key, keys: [caller-key-0123456789] } }",
    ));
    assert_reported(&keys_only, "routes[0].inbound: provider `sts` exchanges the caller's verified token, and an API key is none");
    let fail_open = errors_of(&config(
        STS,
        "    inbound: { authorize: { url: http://127.0.0.1:8000/api/v1, resource: r, scope: s, action: read, fail_open: true } }",
    ));
    assert_reported(&fail_open, "routes[0].inbound.authorize.fail_open: a fail-open pass has not verified the caller's token");
    // With a JWT check beside it, the JWT's token is exchanged: fail_open is no matter.
    let both = config(
        STS,
        "    inbound:\n      jwt: { secret: an-hmac-secret-of-at-least-32-bytes, algorithms: [HS256] }\n      authorize: { url: http://127.0.0.1:8000/api/v1, resource: r, scope: s, action: read, fail_open: true }",
    );
    assert!(parse(&both).is_ok());
    let authorize = config(
        STS,
        "    inbound: { authorize: { url: http://127.0.0.1:8000/api/v1, resource: r, scope: s, action: read } }",
    );
    assert!(parse(&authorize).is_ok());
}

#[test]
fn a_per_caller_route_never_forwards_the_callers_own_token() {
    let errors = errors_of(&config(
        STS,
        "    inbound: { jwt: { secret: an-hmac-secret-of-at-least-32-bytes, algorithms: [HS256] }, forward_caller_credential: true }",
    ));
    assert_reported(
        &errors,
        "routes[0].inbound.forward_caller_credential: must not be true on a route whose provider `sts` mints a token per caller",
    );
}
