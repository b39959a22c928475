//! End to end: `tollgate check` and `tollgate run` on good and bad configs. Every error
//! names its key path; one run reports them all; nothing is served on a bad config.

use crate::common::*;

/// A valid config. Nothing listens at the provider or upstream addresses: `check` must not
/// need them, and the bad variants must fail before any network use.
fn good() -> String {
    config(
        &[
            oauth2(
                "idp",
                "http://127.0.0.1:9/oauth/token",
                "grant: client_credentials\nclient_auth: basic\nscopes: [reports.read]\ntimeout: 5s",
            ),
            bigid_user_token("bigid", "http://127.0.0.1:9", "demo-bigid-user-token", ""),
        ],
        &[
            route("reports", "/reports/", "http://127.0.0.1:9", "idp", ""),
            route("bigid", "/bigid/", "http://127.0.0.1:9", "bigid", ""),
        ],
    )
}

fn replaced(from: &str, to: &str) -> String {
    let text = good();
    assert!(
        text.contains(from),
        "the good config lacks {from:?}:\n{text}"
    );
    text.replacen(from, to, 1)
}

/// `check` fails and some stderr line starts with each of `paths` followed by `:`;
/// `run` fails too (without serving) and its output names each path.
fn assert_rejected(yaml: &str, paths: &[&str]) {
    assert_rejected_with_env(yaml, paths, &[]);
}

fn assert_rejected_with_env(yaml: &str, paths: &[&str], env: &[(&str, &str)]) {
    let check = run_to_exit("check", yaml, env);
    assert!(!check.timed_out, "check did not exit: {check:?}");
    assert_ne!(
        check.code,
        Some(0),
        "check accepted a bad config: {check:?}"
    );
    assert!(check.code.is_some(), "check was killed: {check:?}");
    for path in paths {
        let prefix = format!("{path}:");
        assert!(
            check
                .stderr
                .lines()
                .any(|line| line.trim_start().starts_with(&prefix)),
            "check's stderr has no line `{prefix} ...`:\n{}",
            check.stderr
        );
    }

    let run = run_to_exit("run", yaml, env);
    assert!(
        !run.timed_out,
        "run kept running on a bad config: {}",
        run.output()
    );
    assert_ne!(run.code, Some(0), "run exited 0 on a bad config: {run:?}");
    for path in paths {
        assert!(
            run.output().contains(&format!("{path}:")),
            "run's output does not name {path}:\n{}",
            run.output()
        );
    }
}

#[test]
fn check_accepts_a_good_config_and_summarises_it() {
    let (code, stdout, stderr) = run_check(&good());
    assert_eq!(code, Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    for name in ["idp", "bigid", "reports"] {
        assert!(
            stdout.contains(name),
            "the summary does not mention {name}:\n{stdout}"
        );
    }
    assert!(
        !stdout.contains("demo-secret") && !stdout.contains("demo-bigid-user-token"),
        "the summary shows a secret:\n{stdout}"
    );
    assert!(!stderr.contains("demo-secret"));
}

#[test]
fn unknown_key_is_named() {
    assert_rejected(
        &replaced(
            "    grant: client_credentials\n",
            "    grant: client_credentials\n    grnat: x\n",
        ),
        &["providers.idp.grnat"],
    );
    assert_rejected(
        &replaced("  threads: 1\n", "  threads: 1\n  thread: 2\n"),
        &["server.thread"],
    );
}

#[test]
fn missing_env_secret_is_named() {
    let yaml = replaced(
        "client_secret: demo-secret",
        "client_secret: ${env:TOLLGATE_E2E_SURELY_UNSET}",
    );
    assert_rejected(&yaml, &["providers.idp.client_secret"]);
    let (_, _, stderr) = run_check(&yaml);
    assert!(
        stderr.contains("providers.idp.client_secret: env TOLLGATE_E2E_SURELY_UNSET is not set"),
        "{stderr}"
    );
    // The same file is fine once the variable is set.
    let exit = run_to_exit(
        "check",
        &yaml,
        &[("TOLLGATE_E2E_SURELY_UNSET", "demo-secret")],
    );
    assert_eq!(exit.code, Some(0), "{exit:?}");
}

#[test]
fn unreadable_file_secret_is_named() {
    assert_rejected(
        &replaced(
            "client_secret: demo-secret",
            "client_secret: ${file:/nonexistent/tollgate-e2e/secret}",
        ),
        &["providers.idp.client_secret"],
    );
}

#[test]
fn bad_url_is_named() {
    assert_rejected(
        &replaced("http://127.0.0.1:9/oauth/token", "not a url"),
        &["providers.idp.token_url"],
    );
    assert_rejected(
        &replaced(
            "upstream: { url: http://127.0.0.1:9 }",
            "upstream: { url: \"::nope\" }",
        ),
        &["routes[0].upstream.url"],
    );
}

#[test]
fn bad_duration_is_named() {
    assert_rejected(
        &replaced("timeout: 5s", "timeout: five"),
        &["providers.idp.timeout"],
    );
    assert_rejected(
        &replaced("min_backoff: 200ms", "min_backoff: 200"),
        &["providers.idp.refresh.min_backoff"],
    );
}

#[test]
fn route_naming_an_unknown_provider_is_named() {
    assert_rejected(
        &replaced("provider: idp,", "provider: nobody,"),
        &["routes[0].credential.provider"],
    );
}

#[test]
fn duplicate_route_names_are_named() {
    assert_rejected(
        &replaced("name: bigid", "name: reports"),
        &["routes[1].name"],
    );
}

#[test]
fn every_error_is_reported_in_one_run() {
    let yaml = good()
        .replacen(
            "    grant: client_credentials\n",
            "    grant: client_credentials\n    grnat: x\n",
            1,
        )
        .replacen("timeout: 5s", "timeout: five", 1)
        .replacen(
            "user_token: demo-bigid-user-token",
            "user_token: ${env:TOLLGATE_E2E_SURELY_UNSET}",
            1,
        )
        .replacen("provider: idp,", "provider: nobody,", 1)
        .replacen("name: bigid", "name: reports", 1);
    // Unknown keys may stop the typing of their own section; the other sections still
    // report.
    assert_rejected(
        &yaml,
        &[
            "providers.idp.grnat",
            "providers.bigid.user_token",
            "routes[0].credential.provider",
            "routes[1].name",
        ],
    );
    let yaml = good()
        .replacen("timeout: 5s", "timeout: five", 1)
        .replacen("http://127.0.0.1:9/oauth/token", "not a url", 1)
        .replacen("  admin: \"{admin}\"", "  admin: \"localhost\"", 1);
    let stderr = check_refuses(&yaml, &[]);
    for path in [
        "providers.idp.timeout:",
        "providers.idp.token_url:",
        "server.admin:",
    ] {
        assert!(
            stderr.lines().any(|l| l.trim_start().starts_with(path)),
            "missing {path} in:\n{stderr}"
        );
    }
}

#[test]
fn missing_config_file_fails_cleanly() {
    let output = std::process::Command::new(BIN)
        .args(["check", "--config", "/nonexistent/tollgate-e2e.yaml"])
        .env_remove("TOLLGATE_CONFIG")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("/nonexistent/tollgate-e2e.yaml"),
        "{stderr}"
    );
}
