use crate::config::tests::{assert_reported, errors_of};
use crate::config::{parse, Listener};
use tollgate_standins::pki::Pki;

const REST: &str = "providers: {}\nroutes:\n  - { name: api, match: { path_prefix: / }, upstream: { url: \"http://127.0.0.1:9\" } }\n";

fn listen(entries: &str) -> String {
    format!("server:\n  listen:\n{entries}{REST}")
}

fn assert_error(text: &str, expected: &str) {
    assert_reported(&errors_of(text), expected);
}

#[test]
fn strings_and_mappings_both_make_listeners() {
    let ca = Pki::new("Test CA");
    let (crt, key) = ca.write("server", &ca.client("localhost", vec![]));
    let client_ca = ca.ca_file();
    let text = listen(&format!(
        "    - \"127.0.0.1:8080\"\n    - {{ address: \"127.0.0.1:8081\", http2: true }}\n    - address: \"127.0.0.1:8443\"\n      tls: {{ cert_file: {}, key_file: {}, client_ca_file: {} }}\n      http2: true\n",
        crt.display(),
        key.display(),
        client_ca.display()
    ));
    let config = parse(&text).unwrap();
    let listen = &config.server.listen;
    assert_eq!(listen.len(), 3, "{text}");
    assert_eq!(
        listen[0],
        Listener::plain("127.0.0.1:8080".parse().unwrap())
    );
    assert!(listen[1].http2 && listen[1].tls.is_none());
    let tls = listen[2].tls.as_ref().unwrap();
    assert_eq!(tls.cert_file, crt);
    assert_eq!(tls.client_ca_file.as_deref(), Some(client_ca.as_path()));
    assert!(listen[2].mtls());
    assert_eq!(listen[2].to_string(), "127.0.0.1:8443 (mtls, h2)");
    assert_eq!(listen[1].to_string(), "127.0.0.1:8081 (h2c)");
}

#[test]
fn every_listener_problem_names_its_key() {
    let ca = Pki::new("Test CA");
    let (crt, key) = ca.write("server", &ca.client("localhost", vec![]));
    let (_, other_key) = ca.write("other", &ca.client("other", vec![]));
    let missing = ca.path("missing.pem");
    std::fs::write(ca.path("garbage.pem"), "not pem at all").unwrap();
    let garbage = ca.path("garbage.pem");
    assert_error(
        &listen("    - \"nowhere\"\n"),
        "server.listen[0]: `nowhere` is not an address",
    );
    assert_error(
        &listen("    - { address: \"nowhere\", http2: true }\n"),
        "server.listen[0].address: `nowhere` is not an address",
    );
    assert_error(
        &listen("    - { address: \"127.0.0.1:1\", h2: true }\n"),
        "server.listen[0].h2: unknown field `h2`",
    );
    assert_error(
        &listen("    - 8080\n"),
        "server.listen[0]: must be an address",
    );
    assert_error(
        &listen("    - \"127.0.0.1:1\"\n    - { address: \"127.0.0.1:1\" }\n"),
        "server.listen[1]: 127.0.0.1:1 is listed more than once",
    );
    assert_error(
        &listen(&format!(
            "    - {{ address: \"127.0.0.1:1\", tls: {{ cert_file: {}, key_file: {} }} }}\n",
            missing.display(),
            key.display()
        )),
        "server.listen[0].tls.cert_file: cannot read",
    );
    assert_error(
        &listen(&format!(
            "    - {{ address: \"127.0.0.1:1\", tls: {{ cert_file: {}, key_file: {} }} }}\n",
            crt.display(),
            garbage.display()
        )),
        "server.listen[0].tls.key_file: ",
    );
    assert_error(
        &listen(&format!(
            "    - {{ address: \"127.0.0.1:1\", tls: {{ cert_file: {}, key_file: {} }} }}\n",
            crt.display(),
            other_key.display()
        )),
        "server.listen[0].tls: the private key in",
    );
    assert_error(
        &listen(&format!(
            "    - {{ address: \"127.0.0.1:1\", tls: {{ cert_file: {}, key_file: {}, client_ca_file: {} }} }}\n",
            crt.display(),
            key.display(),
            garbage.display()
        )),
        "server.listen[0].tls.client_ca_file: ",
    );
    assert_error(
        &listen("    - { address: \"127.0.0.1:1\", tls: { cert_file: a.pem } }\n"),
        "server.listen[0].tls: missing field `key_file`",
    );
}

#[test]
fn a_client_cert_check_needs_an_mtls_listener() {
    let text = "server:\n  listen: [\"127.0.0.1:1\"]\nproviders: {}\nroutes:\n  - name: api\n    match: { path_prefix: / }\n    upstream: { url: \"http://127.0.0.1:9\" }\n    inbound: { client_cert: {}, identity_headers: { X-Client-Subject: client_cert.subject } }\n";
    assert_error(
        text,
        "routes[0].inbound.client_cert: no listener asks for client certificates",
    );
}

#[test]
fn an_upstream_may_speak_http2() {
    let text = "providers: {}\nroutes:\n  - { name: api, match: { path_prefix: / }, upstream: { url: \"http://127.0.0.1:9\", http2: true } }\n  - { name: web, match: { path_prefix: /w/ }, upstream: { url: \"https://127.0.0.1:9\" } }\n";
    let config = parse(text).unwrap();
    assert!(config.routes[0].backends[0].http2);
    assert!(!config.routes[1].backends[0].http2);
}
