//! `type: fortanix`: a Fortanix DSM session by HTTP Basic or a body method.

use super::{http_url, one_of, require_secret, OneOf};
use crate::config::error::{join, Errors};
use crate::config::model::*;
use crate::config::raw::*;

pub(crate) fn validate(
    raw: RawFortanix,
    path: &str,
    errors: &mut Errors,
) -> Option<FortanixSettings> {
    let base_url = http_url(&raw.base_url, &join(path, "base_url"), errors);
    let given = one_of(
        raw.basic,
        raw.body,
        path,
        "needs `basic` (user or app credentials) or `body` (a DSM login method)",
        "give either `basic` or `body`, not both",
        errors,
    );
    let login = match given {
        Some(OneOf::First(basic)) => {
            let basic_path = join(path, "basic");
            non_empty(&basic.username, &join(&basic_path, "username"), errors);
            require_secret(
                Some(basic.password),
                &join(&basic_path, "password"),
                "",
                errors,
            )
            .map(|password| FortanixLogin::Basic {
                username: basic.username,
                password,
            })
        }
        Some(OneOf::Second(body)) => body_login(body, &join(path, "body"), errors),
        None => None,
    };
    Some(FortanixSettings {
        base_url: base_url?,
        login: login?,
        terminate_on_shutdown: raw.terminate_on_shutdown.unwrap_or(false),
    })
}

fn body_login(body: RawFortanixBody, path: &str, errors: &mut Errors) -> Option<FortanixLogin> {
    let password_path = join(path, "password");
    match body {
        RawFortanixBody::Password { email, password } => {
            non_empty(&email, &join(path, "email"), errors);
            require_secret(Some(password), &password_path, "", errors)
                .map(|password| FortanixLogin::Password { email, password })
        }
        RawFortanixBody::AppName {
            acct_id,
            name,
            password,
        } => {
            non_empty(&acct_id, &join(path, "acct_id"), errors);
            if name.trim().is_empty() || name.contains('\n') {
                errors.push(join(path, "name"), "must be a non-empty single line");
            }
            require_secret(Some(password), &password_path, "", errors).map(|password| {
                FortanixLogin::AppName {
                    acct_id,
                    name,
                    password,
                }
            })
        }
        RawFortanixBody::Ldap {
            idp_id,
            email,
            password,
            acct_id,
        } => {
            non_empty(&idp_id, &join(path, "idp_id"), errors);
            non_empty(&email, &join(path, "email"), errors);
            require_secret(Some(password), &password_path, "", errors).map(|password| {
                FortanixLogin::Ldap {
                    idp_id,
                    email,
                    password,
                    acct_id,
                }
            })
        }
    }
}

fn non_empty(value: &str, path: &str, errors: &mut Errors) {
    if value.trim().is_empty() {
        errors.push(path, "is empty");
    }
}
