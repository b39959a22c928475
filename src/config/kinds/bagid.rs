//! `type: bagid`: BagID's federated, B2B-secret, attestation and guest logins.

use std::path::PathBuf;
use std::time::Duration;

use super::{http_url, one_of, require_secret, OneOf};
use crate::config::error::{join, Errors};
use crate::config::model::*;
use crate::config::raw::*;

const DEFAULT_ATTESTOR_TIMEOUT: Duration = Duration::from_secs(5);
/// `federated_token: from_caller`: the caller's verified token is the federated token.
const FROM_CALLER: &str = "from_caller";

pub(crate) fn validate(raw: RawBagId, path: &str, errors: &mut Errors) -> Option<BagIdSettings> {
    let base_url = http_url(&raw.base_url, &join(path, "base_url"), errors);
    let flow_name = match raw.flow {
        RawBagIdFlow::Federated => "federated",
        RawBagIdFlow::B2bSecret => "b2b_secret",
        RawBagIdFlow::Attestation => "attestation",
        RawBagIdFlow::Guest => "guest",
    };
    let needed = format!("needed by flow: {flow_name}");
    let unused = |present: bool, key: &str, errors: &mut Errors| {
        if present {
            errors.push(join(path, key), format!("is not used by flow: {flow_name}"));
        }
    };
    let flow = match raw.flow {
        RawBagIdFlow::Federated => {
            unused(raw.b2b_secret.is_some(), "b2b_secret", errors);
            unused(raw.username.is_some(), "username", errors);
            unused(raw.password.is_some(), "password", errors);
            unused(raw.attestor.is_some(), "attestor", errors);
            let app_key = require_secret(raw.app_key, &join(path, "app_key"), &needed, errors);
            let token = match (raw.federated_token, raw.federated_token_file) {
                // Not a token: the caller's verified token, one session per caller.
                (Some(token), None) if token.expose() == FROM_CALLER => {
                    Some(FederatedToken::FromCaller)
                }
                (Some(token), None) => {
                    require_secret(Some(token), &join(path, "federated_token"), "", errors)
                        .map(FederatedToken::Value)
                }
                (None, Some(file)) => Some(FederatedToken::File(PathBuf::from(file))),
                (None, None) => {
                    errors.push(
                        join(path, "federated_token"),
                        "missing (give federated_token or federated_token_file)",
                    );
                    None
                }
                (Some(_), Some(_)) => {
                    errors.push(
                        join(path, "federated_token"),
                        "give federated_token or federated_token_file, not both",
                    );
                    None
                }
            };
            app_key
                .zip(token)
                .map(|(app_key, token)| BagIdFlow::Federated { app_key, token })
        }
        RawBagIdFlow::B2bSecret => {
            unused(raw.federated_token.is_some(), "federated_token", errors);
            unused(
                raw.federated_token_file.is_some(),
                "federated_token_file",
                errors,
            );
            unused(raw.attestor.is_some(), "attestor", errors);
            let app_key = require_secret(raw.app_key, &join(path, "app_key"), &needed, errors);
            let b2b_secret =
                require_secret(raw.b2b_secret, &join(path, "b2b_secret"), &needed, errors);
            let username = raw.username.filter(|u| !u.trim().is_empty());
            if username.is_none() {
                errors.push(join(path, "username"), format!("missing ({needed})"));
            }
            let password = require_secret(raw.password, &join(path, "password"), &needed, errors);
            match (app_key, b2b_secret, username, password) {
                (Some(app_key), Some(b2b_secret), Some(username), Some(password)) => {
                    Some(BagIdFlow::B2bSecret {
                        app_key,
                        b2b_secret,
                        username,
                        password,
                    })
                }
                _ => None,
            }
        }
        RawBagIdFlow::Attestation | RawBagIdFlow::Guest => {
            unused(raw.app_key.is_some(), "app_key", errors);
            unused(raw.b2b_secret.is_some(), "b2b_secret", errors);
            unused(raw.username.is_some(), "username", errors);
            unused(raw.password.is_some(), "password", errors);
            unused(raw.federated_token.is_some(), "federated_token", errors);
            unused(
                raw.federated_token_file.is_some(),
                "federated_token_file",
                errors,
            );
            let attestor = match raw.attestor {
                Some(attestor) => attestor_settings(attestor, &join(path, "attestor"), errors),
                None => {
                    errors.push(
                        join(path, "attestor"),
                        format!("missing ({needed}): give url or command"),
                    );
                    None
                }
            };
            attestor.map(|attestor| {
                if raw.flow == RawBagIdFlow::Guest {
                    BagIdFlow::Guest { attestor }
                } else {
                    BagIdFlow::Attestation { attestor }
                }
            })
        }
    };
    Some(BagIdSettings {
        base_url: base_url?,
        flow: flow?,
    })
}

fn attestor_settings(raw: RawAttestor, path: &str, errors: &mut Errors) -> Option<Attestor> {
    let timeout = raw.timeout.map_or(DEFAULT_ATTESTOR_TIMEOUT, |t| t.0);
    let given = one_of(
        raw.url,
        raw.command,
        path,
        "give url (an HTTP attestor) or command (a program handed the nonce)",
        "give url or command, not both",
        errors,
    );
    match given? {
        OneOf::First(url) => {
            http_url(&url, &join(path, "url"), errors).map(|url| Attestor::Http { url, timeout })
        }
        OneOf::Second(mut command) => {
            if command.is_empty() || command[0].trim().is_empty() {
                errors.push(join(path, "command"), "needs at least the program to run");
                return None;
            }
            let program = command.remove(0);
            Some(Attestor::Command {
                program,
                args: command,
                timeout,
            })
        }
    }
}
