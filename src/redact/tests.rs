use base64::Engine;

use super::*;

const SECRET: &str = "s3cr3t/P@ss w0rd+é\"x";

fn cleaned(text: &str) -> String {
    clean(text.as_bytes(), &[&Secret::new(SECRET)], 200)
}

fn form(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// No piece of the secret of 6 characters or more survives.
fn assert_no_trace(output: &str) {
    let chars: Vec<char> = SECRET.chars().collect();
    for window in chars.windows(6) {
        let piece: String = window.iter().collect();
        assert!(!output.contains(&piece), "`{piece}` survived in {output}");
    }
    for encoded in plain_forms(SECRET).iter().chain(&base64_forms(SECRET)) {
        assert!(
            !output.contains(encoded.as_str()),
            "{encoded} survived in {output}"
        );
    }
}

#[test]
fn a_secret_is_blanked_as_is() {
    let output = cleaned(&format!("bad password {SECRET} given"));
    assert_eq!(output, "bad password *** given");
}

#[test]
fn a_secret_straddling_the_cut_is_blanked_before_the_cut() {
    let text = format!("{}{SECRET}", "a".repeat(195));
    let output = cleaned(&text);
    assert_no_trace(&output);
    assert!(output.chars().count() <= 200);
    assert!(!output.contains("s3cr"), "{output}");
}

#[test]
fn form_and_percent_encoded_secrets_are_blanked_in_any_hex_case() {
    let encoded = form(SECRET);
    assert_no_trace(&cleaned(&format!("client_secret={encoded}&grant_type=x")));
    assert_no_trace(&cleaned(&format!(
        "client_secret={}",
        encoded.to_ascii_lowercase().replace("p%40", "P%40")
    )));
    let all = crate::canonical::escape_all(SECRET);
    assert_no_trace(&cleaned(&format!("echo: {all}")));
    assert_no_trace(&cleaned(&format!("echo: {}", all.replace("%2F", "%2f"))));
}

#[test]
fn json_escaped_secrets_are_blanked() {
    let json = serde_json::json!({ "error": format!("bad {SECRET}") }).to_string();
    assert_no_trace(&cleaned(&json));
    assert_no_trace(&cleaned(&json.replace('/', "\\/")));
    assert_no_trace(&cleaned(&json.replace('é', "\\u00e9")));
    assert_no_trace(&cleaned(&json.replace('é', "\\u00E9")));
}

#[test]
fn basic_credentials_holding_a_secret_are_blanked() {
    let engine = base64::engine::general_purpose::STANDARD;
    // RFC 6749 section 2.3.1: id and secret form-encoded, then joined and base64-encoded.
    let oauth2 = engine.encode(format!("client:{}", form(SECRET)));
    let output = cleaned(&format!("{{\"echo\":\"Authorization: Basic {oauth2}\"}}"));
    assert!(!output.contains(&oauth2), "{output}");
    let plain = engine.encode(format!("app-id:{SECRET}"));
    let output = cleaned(&format!("Authorization=Basic%20{}", form(&plain)));
    assert!(!output.contains(&plain[..20]), "{output}");
    let alone = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(SECRET);
    assert!(!cleaned(&format!("token {alone}.")).contains(&alone));
}

#[test]
fn text_without_secrets_is_kept_and_shortened() {
    assert_eq!(
        cleaned("{\"error\":\"invalid_client\"}"),
        "{\"error\":\"invalid_client\"}"
    );
    assert_eq!(cleaned("line\r\nbreak"), "linebreak");
    assert_eq!(cleaned("   "), "(empty body)");
    assert_eq!(clean(&[b'a'; 1000], &[], 200).len(), 200);
    let base64_word = "dGhpcyBpcyBmaW5l";
    assert_eq!(cleaned(base64_word), base64_word);
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn encodings(secret: &str) -> Vec<String> {
        let engine = base64::engine::general_purpose::STANDARD;
        let mut forms = plain_forms(secret);
        forms.extend(base64_forms(secret));
        forms.push(engine.encode(format!("user:{secret}")));
        forms.push(engine.encode(format!("id:{}", form(secret))));
        forms
    }

    proptest! {
        // Cases it finds become named tests, not a seed file at the top of the repository.
        #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn no_encoding_of_a_secret_survives_anywhere(
            secret in "[ -~é]{8,24}",
            before in 0usize..260,
            choice in any::<prop::sample::Index>(),
        ) {
            let forms = encodings(&secret);
            let encoded = choice.get(&forms);
            let text = format!("{} {encoded} tail", "x".repeat(before));
            let output = clean(text.as_bytes(), &[&Secret::new(secret.clone())], 200);
            prop_assert!(!output.contains(encoded.as_str()), "{} in {}", encoded, output);
            prop_assert!(!output.contains(&secret), "{}", output);
            prop_assert!(output.chars().count() <= 200);
        }
    }
}
