use super::*;

fn canonical(path: &str) -> Result<String, PathRefusal> {
    canonical_path(path.as_bytes(), &PathPolicy::default()).map(Cow::into_owned)
}

fn keeping_slashes(path: &str) -> Result<String, PathRefusal> {
    let policy = PathPolicy {
        merge_slashes: false,
        escaped_slashes: EscapedSlashes::Keep,
    };
    canonical_path(path.as_bytes(), &policy).map(Cow::into_owned)
}

#[test]
fn canonical_paths_are_borrowed() {
    for path in [
        "/",
        "/a",
        "/a/b/",
        "/files/public/x.txt",
        "/a;b=c/d",
        "/.well-known/x",
        "/~u",
    ] {
        let result = canonical_path(path.as_bytes(), &PathPolicy::default()).unwrap();
        assert!(matches!(result, Cow::Borrowed(_)), "{path}");
        assert_eq!(result, path);
    }
}

#[test]
fn every_spelling_of_a_dot_segment_is_resolved() {
    let cases = [
        (
            "/files/public/../private/secret.txt",
            "/files/private/secret.txt",
        ),
        (
            "/files/public/%2e%2e/private/secret.txt",
            "/files/private/secret.txt",
        ),
        (
            "/files/public/%2E%2E/private/secret.txt",
            "/files/private/secret.txt",
        ),
        (
            "/files/public/.%2e/private/secret.txt",
            "/files/private/secret.txt",
        ),
        (
            "/files/public/%2e./private/secret.txt",
            "/files/private/secret.txt",
        ),
        (
            "/files/public/./../private/secret.txt",
            "/files/private/secret.txt",
        ),
        (
            "/files/public/%2e/../private/secret.txt",
            "/files/private/secret.txt",
        ),
        ("/a/b/..", "/a/"),
        ("/a/b/.", "/a/b/"),
        ("/a/./b", "/a/b"),
        ("/a/b/../../c", "/c"),
    ];
    for (path, expected) in cases {
        assert_eq!(canonical(path).as_deref(), Ok(expected), "{path}");
    }
}

#[test]
fn climbing_above_the_root_is_refused() {
    for path in [
        "/..",
        "/../etc/passwd",
        "/s/../../admin",
        "/a/%2e%2e/%2e%2e/b",
        "/./..",
    ] {
        assert_eq!(canonical(path), Err(PathRefusal::ClimbsAboveRoot), "{path}");
    }
}

#[test]
fn encoded_slashes_are_refused_by_default_and_kept_as_data_when_asked() {
    for path in [
        "/a/..%2Fb",
        "/a/%2f",
        "/a%5Cb",
        "/files/public/..%2Fprivate/x",
    ] {
        assert_eq!(canonical(path), Err(PathRefusal::EncodedSlash), "{path}");
    }
    assert_eq!(keeping_slashes("/ids/a%2fb").as_deref(), Ok("/ids/a%2Fb"));
    // Kept, an encoded slash still never hides a dot segment from an upstream that decodes it.
    for path in ["/a/..%2Fb", "/a/b%2F..", "/a/%2e%2e%5Cb", "/a/x%2F.%2Fy"] {
        assert_eq!(
            keeping_slashes(path),
            Err(PathRefusal::EncodedSlash),
            "{path}"
        );
    }
}

#[test]
fn backslashes_controls_and_bad_escapes_are_refused() {
    assert_eq!(canonical("/a\\..\\b"), Err(PathRefusal::Backslash));
    assert_eq!(canonical("/a%00b"), Err(PathRefusal::ControlCharacter));
    assert_eq!(
        canonical("/a%0d%0aX: y"),
        Err(PathRefusal::ControlCharacter)
    );
    assert_eq!(canonical("/a%7f"), Err(PathRefusal::ControlCharacter));
    assert_eq!(
        canonical_path(b"/a\x01b", &PathPolicy::default()),
        Err(PathRefusal::ControlCharacter)
    );
    assert_eq!(canonical("/a%zz"), Err(PathRefusal::BadEscape));
    assert_eq!(canonical("/a%2"), Err(PathRefusal::BadEscape));
    assert_eq!(canonical("x/y"), Err(PathRefusal::NotAPath));
    assert_eq!(canonical("*"), Err(PathRefusal::NotAPath));
}

#[test]
fn dot_segments_with_parameters_are_refused() {
    for path in ["/a/..;/b", "/a/..;x=1/b", "/a/.;/b", "/a/%2e%2e;/b"] {
        assert_eq!(
            canonical(path),
            Err(PathRefusal::DotSegmentWithParameters),
            "{path}"
        );
    }
    assert_eq!(canonical("/a/..x;/b").as_deref(), Ok("/a/..x;/b"));
}

#[test]
fn slashes_are_merged_unless_told_not_to() {
    assert_eq!(canonical("//a///b//").as_deref(), Ok("/a/b/"));
    assert_eq!(keeping_slashes("//a///b//").as_deref(), Ok("//a///b//"));
    assert_eq!(canonical("/a//..").as_deref(), Ok("/"));
    assert_eq!(keeping_slashes("/a//..").as_deref(), Ok("/a/"));
}

#[test]
fn escapes_are_normalised() {
    assert_eq!(canonical("/%61%7e%41").as_deref(), Ok("/a~A"));
    assert_eq!(canonical("/a%3bb%2c").as_deref(), Ok("/a%3Bb%2C"));
    assert_eq!(
        canonical_path("/caf\u{e9}/\"q\"".as_bytes(), &PathPolicy::default()).as_deref(),
        Ok("/caf%C3%A9/%22q%22")
    );
    assert_eq!(canonical("").as_deref(), Ok("/"));
}

/// RFC 3986 section 5.2.4, written as the RFC states it, over a path that starts with `/`;
/// `None` when a `..` would remove a segment from an empty output (climbing above `/`).
fn remove_dot_segments(path: &str) -> Option<String> {
    let mut input = path.to_owned();
    let mut output = String::new();
    while !input.is_empty() {
        if input.starts_with("/./") {
            input.replace_range(..3, "/");
        } else if input == "/." {
            input = "/".to_owned();
        } else if input.starts_with("/../") || input == "/.." {
            let cut = if input == "/.." { 3 } else { 4 };
            input.replace_range(..cut, "/");
            if output.is_empty() {
                return None;
            }
            let last = output.rfind('/').unwrap_or(0);
            output.truncate(last);
        } else if input == "." || input == ".." {
            input.clear();
        } else {
            let start = usize::from(input.starts_with('/'));
            let end = input[start..].find('/').map_or(input.len(), |i| i + start);
            output.push_str(&input[..end]);
            input.replace_range(..end, "");
        }
    }
    Some(output)
}

/// The independent reference: decode escapes of unreserved characters and upper-case the
/// others (section 6.2.2), merge slashes when asked, then remove dot segments.
fn reference(path: &str, merge_slashes: bool) -> Option<String> {
    let mut decoded = String::new();
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let value = u8::from_str_radix(&path[i + 1..i + 3], 16).ok()?;
            if value.is_ascii_alphanumeric() || b"-._~".contains(&value) {
                decoded.push(char::from(value));
            } else {
                decoded.push_str(&format!("%{value:02X}"));
            }
            i += 3;
        } else {
            decoded.push(char::from(bytes[i]));
            i += 1;
        }
    }
    if merge_slashes {
        while decoded.contains("//") {
            decoded = decoded.replace("//", "/");
        }
    }
    let resolved = remove_dot_segments(&decoded)?;
    Some(if resolved.is_empty() {
        "/".to_owned()
    } else {
        resolved
    })
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    /// Paths built from the pieces that matter: dot segments in every spelling, escapes of
    /// unreserved and reserved characters, empty segments, parameters.
    fn paths() -> impl Strategy<Value = String> {
        let segment = prop_oneof![
            Just("a"),
            Just("b"),
            Just("%61"),
            Just("."),
            Just(".."),
            Just("%2e"),
            Just("%2E"),
            Just(".%2e"),
            Just("%2e."),
            Just("%2E%2e"),
            Just(""),
            Just("~x"),
            Just("%7e"),
            Just("%3b"),
            Just("x;y"),
            Just("%20"),
            Just("..a"),
        ];
        proptest::collection::vec(segment, 0..8).prop_map(|segments| {
            let mut path = String::new();
            for segment in segments {
                path.push('/');
                path.push_str(segment);
            }
            if path.is_empty() {
                path.push('/');
            }
            path
        })
    }

    proptest! {
        // Cases it finds become named tests, not a seed file at the top of the repository.
        #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn the_normaliser_agrees_with_rfc_3986(path in paths(), merge_slashes in any::<bool>()) {
            let policy = PathPolicy { merge_slashes, escaped_slashes: EscapedSlashes::Reject };
            let ours = canonical_path(path.as_bytes(), &policy).map(Cow::into_owned);
            match reference(&path, merge_slashes) {
                Some(expected) => prop_assert_eq!(ours, Ok(expected), "{}", path),
                None => prop_assert_eq!(ours, Err(PathRefusal::ClimbsAboveRoot), "{}", path),
            }
        }

        #[test]
        fn a_canonical_path_is_its_own_canonical_form(path in paths(), merge_slashes in any::<bool>()) {
            let policy = PathPolicy { merge_slashes, escaped_slashes: EscapedSlashes::Reject };
            if let Ok(once) = canonical_path(path.as_bytes(), &policy) {
                let twice = canonical_path(once.as_bytes(), &policy);
                prop_assert!(matches!(twice, Ok(Cow::Borrowed(_))), "{} -> {}", path, once);
                prop_assert_eq!(twice.as_deref(), Ok(once.as_ref()));
            }
        }

        #[test]
        fn any_bytes_give_a_path_without_dot_segments_or_a_refusal(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut path = vec![b'/'];
            path.extend(bytes);
            for escaped_slashes in [EscapedSlashes::Reject, EscapedSlashes::Keep] {
                let policy = PathPolicy { merge_slashes: true, escaped_slashes };
                if let Ok(canonical) = canonical_path(&path, &policy) {
                    prop_assert!(canonical.starts_with('/'));
                    prop_assert!(canonical.bytes().all(|b| b.is_ascii_graphic()));
                    for segment in canonical.split('/') {
                        let name = segment.split(';').next().unwrap_or(segment);
                        prop_assert!(name != "." && name != "..", "{}", canonical);
                        let decoded = segment.replace("%2F", "/").replace("%5C", "/");
                        prop_assert!(!decoded.split('/').any(|p| p == ".." || p == "."), "{}", canonical);
                    }
                    prop_assert!(!canonical.contains("//"), "{}", canonical);
                }
            }
        }
    }
}
