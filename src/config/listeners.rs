//! `server.listen`: each entry an address (`"0.0.0.0:8080"`, plain HTTP/1.1) or a mapping
//! with `address`, `tls` (`cert_file`, `key_file`, `client_ca_file`) and `http2`. The
//! TLS files are read here, so `tollgate check` reports an unreadable file, a key that is
//! not the certificate's, or a client CA that does not parse, at its key path.

use std::collections::HashSet;
use std::path::PathBuf;

use serde_yaml_ng::Value;

use super::error::{join, Errors};
use super::model::{Listener, ListenerTls};
use super::raw::{RawListener, RawListenerTls};
use super::typed;
use crate::tls::PairError;

pub(crate) fn validate_all(entries: Vec<Value>, errors: &mut Errors) -> Vec<Listener> {
    if entries.is_empty() {
        errors.push("server.listen", "at least one listen address is needed");
    }
    let mut seen = HashSet::new();
    let mut listeners = Vec::new();
    for (index, entry) in entries.into_iter().enumerate() {
        let path = format!("server.listen[{index}]");
        let Some(listener) = validate_one(entry, &path, errors) else {
            continue;
        };
        if !seen.insert(listener.address) {
            errors.push(
                &path,
                format!("{} is listed more than once", listener.address),
            );
            continue;
        }
        listeners.push(listener);
    }
    listeners
}

fn validate_one(entry: Value, path: &str, errors: &mut Errors) -> Option<Listener> {
    let raw = match entry {
        Value::String(address) => RawListener {
            address,
            tls: None,
            http2: None,
        },
        Value::Mapping(_) => typed::<RawListener>(entry, path, errors)?,
        _ => {
            errors.push(
                path,
                "must be an address like 0.0.0.0:8080, or a mapping with address, tls and http2",
            );
            return None;
        }
    };
    let address_path = if raw.tls.is_some() || raw.http2.is_some() {
        join(path, "address")
    } else {
        path.to_owned()
    };
    let address = super::socket_addr(&raw.address, &address_path, errors);
    let tls = match raw.tls {
        Some(tls) => Some(validate_tls(tls, &join(path, "tls"), errors)?),
        None => None,
    };
    Some(Listener {
        address: address?,
        tls,
        http2: raw.http2.unwrap_or(false),
    })
}

/// The paths as given; each file is read and checked now (and again at every rotation).
fn validate_tls(raw: RawListenerTls, path: &str, errors: &mut Errors) -> Option<ListenerTls> {
    let tls = ListenerTls {
        cert_file: PathBuf::from(raw.cert_file),
        key_file: PathBuf::from(raw.key_file),
        client_ca_file: raw.client_ca_file.map(PathBuf::from),
    };
    let mut ok = true;
    match crate::tls::load_pair(&tls.cert_file, &tls.key_file) {
        Ok(_) => {}
        Err(PairError::Cert(message)) => {
            errors.push(join(path, "cert_file"), message);
            ok = false;
        }
        Err(PairError::Key(message)) => {
            errors.push(join(path, "key_file"), message);
            ok = false;
        }
        Err(mismatch @ PairError::Mismatch { .. }) => {
            errors.push(path, mismatch.to_string());
            ok = false;
        }
    }
    if let Some(ca) = &tls.client_ca_file {
        if let Err(message) = crate::tls::listener::client_verifier(ca) {
            errors.push(join(path, "client_ca_file"), message);
            ok = false;
        }
    }
    ok.then_some(tls)
}

#[cfg(test)]
mod tests;
