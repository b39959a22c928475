use super::*;

const GOOD: &str = r#"
server:
  listen: ["127.0.0.1:18080"]
  admin: "127.0.0.1:19901"
  threads: 1
providers:
  idp:
    type: oauth2
    token_url: http://127.0.0.1:1/oauth/token
    client_id: reporting
    client_secret: s3cret
    scopes: [reports.read]
    refresh: { before_expiry: 30s, default_ttl: 5m }
  bigid:
    type: bigid
    base_url: https://sandbox.bigid.tools
    user_token: tok
routes:
  - name: bigid
    match: { path_prefix: /bigid/ }
    strip_prefix: true
    upstream: { url: https://sandbox.bigid.tools/api }
    credential: { provider: bigid, header: Authorization, format: "Bearer {token}" }
  - name: reports
    match: { host: Reports.Example, path_prefix: / }
    upstream: { urls: [http://10.0.0.1:8000, http://10.0.0.2:8000] }
    credential: { provider: idp }
"#;

/// The errors `parse` reports for `text`, one string each (panics when it is valid).
pub(crate) fn errors_of(text: &str) -> Vec<String> {
    match parse(text) {
        Ok(_) => panic!("config unexpectedly valid:\n{text}"),
        Err(errors) => errors.0.iter().map(ToString::to_string).collect(),
    }
}

/// One of `errors` starts with `prefix`.
pub(crate) fn assert_reported(errors: &[String], prefix: &str) {
    assert!(
        errors.iter().any(|e| e.starts_with(prefix)),
        "missing {prefix:?} in {errors:#?}"
    );
}

/// A config whose misplaced secret references land in keys whose errors quote the value.
#[test]
fn errors_show_the_reference_not_the_secret_it_expanded_to() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "hunter2-very-secret\n").unwrap();
    let reference = format!("${{file:{}}}", secret.display());
    let text = format!(
        r#"
server:
  admin: "{reference}"
providers:
  idp:
    type: oauth2
    token_url: "{reference}"
    client_id: reporting
    client_secret: s3cret
    refresh: {{ before_expiry: "{reference}" }}
routes:
  - name: api
    match: {{ path_prefix: / }}
    strip_prefix: "{reference}"
    upstream: {{ url: http://127.0.0.1:9000 }}
"#
    );
    let errors = errors_of(&text);
    let all = errors.join("\n");
    assert!(!all.contains("hunter2"), "a secret in config errors: {all}");
    for path in [
        "server.admin",
        "providers.idp.token_url",
        "providers.idp.refresh.before_expiry",
        "routes[0].strip_prefix",
    ] {
        let error = errors
            .iter()
            .find(|e| e.starts_with(path))
            .unwrap_or_else(|| panic!("no error at {path}: {all}"));
        assert!(error.contains(&reference), "{error}");
    }
}

#[test]
fn short_expanded_values_are_left_in_messages() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("zero");
    std::fs::write(&file, "0").unwrap();
    let errors = errors_of(&format!(
        "server: {{ threads: \"${{file:{}}}\" }}\n",
        file.display()
    ));
    assert!(
        errors.iter().any(|e| e.starts_with("server.threads")),
        "{errors:?}"
    );
}

#[test]
fn the_upstream_pool_has_a_default_a_setting_and_a_limit() {
    let config = parse(GOOD).unwrap();
    assert_eq!(config.server.upstream_pool_size, DEFAULT_UPSTREAM_POOL_SIZE);
    let custom = GOOD.replace("threads: 1", "threads: 1\n  upstream_pool_size: 64");
    assert_eq!(parse(&custom).unwrap().server.upstream_pool_size, 64);
    let huge = GOOD.replace("threads: 1", "threads: 1\n  upstream_pool_size: 100000000");
    let errors = errors_of(&huge);
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("server.upstream_pool_size: must be at most")),
        "{errors:?}"
    );
}

#[test]
fn a_good_config_becomes_the_model() {
    let config = parse(GOOD).unwrap();
    assert_eq!(config.server.threads, 1);
    assert_eq!(config.providers.len(), 2);
    let idp = config.providers.iter().find(|p| p.name == "idp").unwrap();
    assert_eq!(
        idp.refresh.before_expiry,
        std::time::Duration::from_secs(30)
    );
    assert_eq!(idp.refresh.default_ttl, std::time::Duration::from_secs(300));
    assert_eq!(idp.timeout, std::time::Duration::from_secs(5));
    let bigid = &config.routes[0];
    assert_eq!(bigid.backends[0].base_path, "/api");
    assert!(bigid.backends[0].tls);
    assert_eq!(bigid.backends[0].port, 443);
    assert_eq!(bigid.on_upstream_status, vec![401]);
    let reports = &config.routes[1];
    assert_eq!(reports.host.as_deref(), Some("reports.example"));
    assert_eq!(reports.backends.len(), 2);
    assert_eq!(reports.backends[1].authority, "10.0.0.2:8000");
    let credential = reports.credential.as_ref().unwrap();
    assert_eq!(credential.header, "authorization");
    assert_eq!(credential.format.render("T", "Bearer"), "Bearer T");
}

#[test]
fn unknown_keys_are_errors_with_their_path() {
    let text = GOOD
        .replace("threads: 1", "threads: 1\n  thread: 2")
        .replace("strip_prefix: true", "strip_prefix: true\n    strip: true")
        .replace(
            "client_id: reporting",
            "client_id: reporting\n    clientid: x",
        );
    let errors = errors_of(&text);
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("server.thread: unknown field")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("routes[0].strip: unknown field")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("providers.idp.clientid: unknown field")),
        "{errors:?}"
    );
}

#[test]
fn every_error_is_reported_in_one_run() {
    let text = GOOD
        .replace("http://127.0.0.1:1/oauth/token", "not a url")
        .replace("default_ttl: 5m", "default_ttl: five")
        .replace("provider: idp", "provider: nope")
        .replace("name: reports", "name: bigid")
        .replace(
            "user_token: tok",
            "user_token: ${env:TOLLGATE_TEST_UNSET_VARIABLE}",
        );
    let errors = errors_of(&text);
    let expect = [
        "providers.idp.token_url: `not a url` is not a valid URL",
        "providers.idp.refresh.default_ttl: invalid duration `five`",
        "routes[1].credential.provider: no provider named `nope`",
        "routes[1].name: duplicate route name `bigid`",
        "providers.bigid.user_token: env TOLLGATE_TEST_UNSET_VARIABLE is not set",
    ];
    for prefix in expect {
        assert_reported(&errors, prefix);
    }
}

#[test]
fn header_injection_in_format_is_refused() {
    let text = GOOD.replace(
        "format: \"Bearer {token}\"",
        "format: \"Bearer {token}\\r\\nX-Evil: 1\"",
    );
    let errors = errors_of(&text);
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("routes[0].credential.format: must not contain CR")),
        "{errors:?}"
    );
}

#[test]
fn format_needs_exactly_one_placeholder() {
    let errors = errors_of(&GOOD.replace("format: \"Bearer {token}\"", "format: \"Bearer\""));
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("routes[0].credential.format: must contain `{token}`")),
        "{errors:?}"
    );
}

#[test]
fn bad_addresses_and_types_are_named() {
    let text = GOOD
        .replace("\"127.0.0.1:19901\"", "\"localhost\"")
        .replace("type: bigid", "type: bigidd");
    let errors = errors_of(&text);
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("server.admin: `localhost` is not an address")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("providers.bigid.type: unknown provider type `bigidd`")),
        "{errors:?}"
    );
}

#[test]
fn grants_need_their_credentials() {
    let text = GOOD.replace(
        "client_id: reporting",
        "client_id: reporting\n    grant: password",
    );
    let errors = errors_of(&text);
    assert!(
        errors
            .iter()
            .any(|e| e == "providers.idp.username: missing (needed by grant: password)"),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e == "providers.idp.password: missing (needed by grant: password)"),
        "{errors:?}"
    );
}

#[test]
fn secrets_never_appear_in_debug_output() {
    let config = parse(GOOD).unwrap();
    let dump = format!("{config:?}");
    assert!(!dump.contains("s3cret"));
    assert!(!dump.contains("user_token: tok") && !dump.contains("\"tok\""));
}

#[test]
fn yaml_syntax_errors_are_reported() {
    let errors = errors_of("server: [unclosed");
    assert!(errors[0].starts_with("invalid YAML"), "{errors:?}");
}

#[test]
fn format_may_name_the_token_type() {
    let text = GOOD.replace(
        "format: \"Bearer {token}\"",
        "format: \"{token_type} {token}\"",
    );
    let config = parse(&text).unwrap();
    let format = &config.routes[0].credential.as_ref().unwrap().format;
    assert_eq!(format.render("T", "DPoP"), "DPoP T");
    let errors =
        errors_of(&GOOD.replace("format: \"Bearer {token}\"", "format: \"{tokn} {token}\""));
    assert!(
        errors
            .iter()
            .any(|e| e.contains("only `{token}` and `{token_type}`")),
        "{errors:?}"
    );
}

mod properties {
    use super::super::*;
    use proptest::prelude::*;

    fn yaml_scalar() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z_]{0,12}",
            "[0-9]{1,6}(ms|s|m|h)?",
            "(http|https|ftp)://[a-z0-9.:/-]{0,24}",
            Just("${env:TOLLGATE_PROPTEST_UNSET}".to_owned()),
            Just("${file:/nonexistent}".to_owned()),
            Just("\"{token}\"".to_owned()),
            Just("[]".to_owned()),
            Just("{}".to_owned()),
            Just("~".to_owned()),
        ]
    }

    /// YAML shaped like a config, with random keys and values in the known sections.
    fn config_like() -> impl Strategy<Value = String> {
        let key = prop_oneof![
            Just("type"),
            Just("token_url"),
            Just("base_url"),
            Just("client_id"),
            Just("grant"),
            Just("refresh"),
            Just("timeout"),
            Just("basic"),
            Just("flow"),
            Just("value"),
            Just("login"),
            Just("token_pointer"),
            Just("bogus"),
        ];
        let provider = proptest::collection::vec((key, yaml_scalar()), 0..6);
        let route_key = prop_oneof![
            Just("name"),
            Just("match"),
            Just("upstream"),
            Just("credential"),
            Just("timeouts"),
            Just("max_request_body"),
            Just("strip_prefix"),
        ];
        let route = proptest::collection::vec((route_key, yaml_scalar()), 0..6);
        (provider, route, "[a-z]{1,8}").prop_map(|(provider, route, name)| {
            let mut text = format!("providers:\n  {name}:\n");
            for (key, value) in provider {
                text.push_str(&format!("    {key}: {value}\n"));
            }
            text.push_str("routes:\n  -");
            for (key, value) in route {
                text.push_str(&format!(" {key}: {value}\n   "));
            }
            text.push('\n');
            text
        })
    }

    proptest! {
        // Cases it finds become named tests, not a seed file at the top of the repository.
        #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_text_is_a_config_or_clear_errors(text in "\\PC{0,400}") {
            if let Err(errors) = parse(&text) {
                prop_assert!(!errors.0.is_empty());
                prop_assert!(errors.0.iter().all(|e| !e.message.is_empty()));
            }
        }

        #[test]
        fn config_shaped_yaml_is_a_config_or_clear_errors(text in config_like()) {
            if let Err(errors) = parse(&text) {
                prop_assert!(!errors.0.is_empty());
                prop_assert!(errors.0.iter().all(|e| !e.message.is_empty()));
            }
        }

        #[test]
        fn reference_expansion_never_panics(text in "\\PC{0,80}(\\$\\{(env|file|x):\\PC{0,20}\\}?)?\\PC{0,20}") {
            if let Err(message) = expand_references(&text) {
                prop_assert!(!message.is_empty());
            }
        }
    }
}

/// Keys where exactly one of two may be given name the pair, at the parent key.
#[test]
fn keys_that_exclude_each_other_name_the_pair() {
    let route =
        "routes: [{ name: r, match: { path_prefix: / }, upstream: { url: 'http://127.0.0.1:9000' }";
    let cases = [
        (
            "{ type: fortanix, base_url: 'https://dsm.example' }",
            "providers.p: needs `basic` (user or app credentials) or `body` (a DSM login method)",
        ),
        (
            "{ type: fortanix, base_url: 'https://dsm.example', basic: { username: u, password: pw }, body: { method: password, email: e, password: pw } }",
            "providers.p: give either `basic` or `body`, not both",
        ),
        (
            "{ type: static }",
            "providers.p: needs `value` (e.g. an API key) or `basic` (username, password)",
        ),
        (
            "{ type: static, value: v, basic: { username: u, password: pw } }",
            "providers.p: give either `value` or `basic`, not both",
        ),
        (
            "{ type: bagid, base_url: 'https://bagid.example', flow: guest, attestor: {} }",
            "providers.p.attestor: give url (an HTTP attestor) or command (a program handed the nonce)",
        ),
        (
            "{ type: bagid, base_url: 'https://bagid.example', flow: guest, attestor: { url: 'http://attestor', command: [attest] } }",
            "providers.p.attestor: give url or command, not both",
        ),
    ];
    for (provider, expected) in cases {
        let errors = errors_of(&format!("providers: {{ p: {provider} }}\n{route} }}]\n"));
        assert!(
            errors.iter().any(|e| e == expected),
            "{expected}: {errors:?}"
        );
    }
    let inbound = [
        (
            "{ jwt: { from: {}, algorithms: [RS256], jwks_url: 'https://idp/jwks' } }",
            "routes[0].inbound.jwt.from: give header (with an optional scheme) or cookie",
        ),
        (
            "{ api_keys: { keys: ['0123456789abcdef'] }, authorize: { url: 'http://engine', resource: r, scope: s, from: { header: X, cookie: c } } }",
            "routes[0].inbound.authorize.from: give header or cookie, not both",
        ),
    ];
    for (section, expected) in inbound {
        let errors = errors_of(&format!("{route}, inbound: {section} }}]\n"));
        assert!(
            errors.iter().any(|e| e == expected),
            "{expected}: {errors:?}"
        );
    }
}
