//! `type: bigid`: a user token exchange or a user session.

use super::{http_url, require_secret};
use crate::config::error::{join, Errors};
use crate::config::model::*;
use crate::config::raw::*;

pub(crate) fn validate(raw: RawBigId, path: &str, errors: &mut Errors) -> Option<BigIdSettings> {
    let base_url = http_url(&raw.base_url, &join(path, "base_url"), errors);
    let login = match (raw.user_token, raw.username, raw.password) {
        (Some(token), None, None) => {
            require_secret(Some(token), &join(path, "user_token"), "", errors)
                .map(BigIdLogin::UserToken)
        }
        (None, Some(username), password) => {
            let password = require_secret(
                password,
                &join(path, "password"),
                "needed with username",
                errors,
            );
            password.map(|password| BigIdLogin::Password { username, password })
        }
        (None, None, Some(_)) => {
            errors.push(join(path, "username"), "missing (needed with password)");
            None
        }
        (None, None, None) => {
            errors.push(path, "needs either user_token, or username and password");
            None
        }
        (Some(_), _, _) => {
            errors.push(
                join(path, "user_token"),
                "give either user_token or username and password, not both",
            );
            None
        }
    };
    Some(BigIdSettings {
        base_url: base_url?,
        login: login?,
    })
}
