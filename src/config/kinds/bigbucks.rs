//! `type: bigbucks`: the BigBucks Solutions Auth Engine's `POST /signin`.

use super::{http_url, require_secret};
use crate::config::error::{join, Errors};
use crate::config::model::*;
use crate::config::raw::*;

pub(crate) fn validate(
    raw: RawBigBucks,
    path: &str,
    errors: &mut Errors,
) -> Option<BigBucksSettings> {
    let base_url = http_url(&raw.base_url, &join(path, "base_url"), errors);
    if raw.username.trim().is_empty() {
        errors.push(join(path, "username"), "is empty");
    }
    let password = require_secret(Some(raw.password), &join(path, "password"), "", errors);
    Some(BigBucksSettings {
        base_url: base_url?,
        username: raw.username,
        password: password?,
        recaptcha: raw.recaptcha,
    })
}
