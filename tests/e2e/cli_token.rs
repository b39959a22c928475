//! `tollgate token`: one login, its lifetime, claims and fingerprint; the token only with
//! `--show`.

use std::process::Command;
use std::time::Duration;

use tollgate_standins::oauth2::{OAuth2Settings, OAuth2StandIn};

fn config(idp: &OAuth2StandIn) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().expect("temp file");
    let text = format!(
        "providers:\n  idp:\n    type: oauth2\n    token_url: {}\n    client_id: demo-client\n    client_secret: demo-secret\n\
         routes:\n  - {{ name: r, match: {{ path_prefix: / }}, upstream: {{ url: http://127.0.0.1:9 }}, credential: {{ provider: idp }} }}\n",
        idp.token_url()
    );
    std::fs::write(file.path(), text).expect("write config");
    file
}

async fn token_command(config: &tempfile::NamedTempFile, extra: &[&str]) -> std::process::Output {
    let path = config.path().to_owned();
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(["token", "--provider", "idp", "--config"])
            .arg(path)
            .args(extra)
            .output()
            .expect("tollgate runs")
    })
    .await
    .expect("join")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_prints_lifetime_claims_and_fingerprint_but_not_the_token() {
    let idp = OAuth2StandIn::start(OAuth2Settings {
        token_ttl: Duration::from_secs(600),
        ..OAuth2Settings::default()
    })
    .await
    .expect("stand-in");
    let config = config(&idp);

    let output = token_command(&config, &[]).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(idp.token_requests(), 1);
    let token = idp.issued_tokens().pop().expect("a token was issued");
    assert!(
        !stdout.contains(&token),
        "the token was printed without --show"
    );
    assert!(stdout.contains("lifetime:    59"), "{stdout}");
    assert!(stdout.contains("ExpiresIn"), "{stdout}");
    assert!(
        stdout.contains("\"sub\":\"demo-client\""),
        "claims missing: {stdout}"
    );
    let fingerprint = stdout
        .lines()
        .find_map(|line| line.strip_prefix("fingerprint: "))
        .expect("a fingerprint line");
    assert_eq!(fingerprint.trim().len(), 12);

    let shown = token_command(&config, &["--show"]).await;
    let shown_stdout = String::from_utf8_lossy(&shown.stdout);
    let second = idp.issued_tokens().pop().expect("a second token");
    assert!(
        shown_stdout.contains(&second),
        "--show did not print the token"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_reports_a_rejected_login_without_the_secret() {
    let idp = OAuth2StandIn::start(OAuth2Settings {
        clients: vec![("demo-client".to_owned(), "another-secret".into())],
        ..OAuth2Settings::default()
    })
    .await
    .expect("stand-in");
    let config = config(&idp);
    let output = token_command(&config, &[]).await;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("rejected the credentials (HTTP 401)"),
        "{stderr}"
    );
    assert!(stderr.contains("invalid_client"), "{stderr}");
    assert!(
        !stderr.contains("demo-secret") && !stderr.contains("another-secret"),
        "{stderr}"
    );
}
