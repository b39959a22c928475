//! Text from the outside (a provider's error reply) made safe to show in a 503 `detail`,
//! `/status` and the logs: our own secrets blanked in every form a server may echo them
//! in, and only then shortened, so that no secret survives in part across the cut.
//!
//! The forms: as is; JSON-escaped (`\"`, `\/`, `\u00e9`); percent- or form-encoded, in
//! either case of hex digit (a `client_secret` sent in a form body); and base64, alone or
//! inside a longer value such as `Authorization: Basic base64(id:secret)`, found by
//! decoding every base64-looking word.

use base64::Engine;

use crate::secret::Secret;

/// What a blanked secret reads as.
const BLANK: &str = "***";
/// Base64 words shorter than this cannot hold a secret worth blanking.
const MIN_BASE64_WORD: usize = 8;
/// How many encodings deep a secret is looked for.
const DECODING_DEPTH: u8 = 2;

/// `text` with every form of every secret blanked, control characters removed, at most
/// `max_chars` characters long; `(empty body)` when nothing printable is left.
pub fn clean(text: &[u8], secrets: &[&Secret], max_chars: usize) -> String {
    let cleaned = blank(text, secrets);
    let shortened: String = cleaned
        .chars()
        .filter(|c| !c.is_control())
        .take(max_chars)
        .collect();
    if shortened.trim().is_empty() {
        "(empty body)".to_owned()
    } else {
        shortened
    }
}

/// `text` with every form of every secret blanked, and nothing else changed (line breaks
/// kept, nothing cut): for a whole answer shown as it came, such as an MCP tool result.
pub fn blank(text: &[u8], secrets: &[&Secret]) -> String {
    let mut cleaned = String::from_utf8_lossy(text).into_owned();
    let secrets: Vec<&str> = secrets
        .iter()
        .map(|secret| secret.expose())
        .filter(|secret| !secret.is_empty())
        .collect();
    if !secrets.is_empty() {
        let plain_forms: Vec<String> = secrets.iter().flat_map(|s| plain_forms(s)).collect();
        let mut all_forms = plain_forms.clone();
        all_forms.extend(secrets.iter().flat_map(|s| base64_forms(s)));
        // Longest first, so a form that contains another is blanked whole.
        all_forms.sort_by_key(|form| std::cmp::Reverse(form.len()));
        for form in &all_forms {
            cleaned = replace_ignoring_escape_case(&cleaned, form);
        }
        // Encodings inside encodings: `Basic%20` + base64 of `id:secret`, say.
        cleaned = blank_words(&cleaned, is_url_word_char, |word| {
            word.contains('%') && reveals(word, &plain_forms, DECODING_DEPTH)
        });
        cleaned = blank_words(&cleaned, is_base64_char, |word| {
            word.len() >= MIN_BASE64_WORD
                && base64_decodings(word)
                    .any(|decoded| reveals(&decoded, &plain_forms, DECODING_DEPTH - 1))
        });
    }
    cleaned
}

/// The secret as text may carry it: as is, JSON-escaped three ways, percent- and
/// form-encoded.
fn plain_forms(secret: &str) -> Vec<String> {
    let mut forms = vec![secret.to_owned()];
    let json = serde_json::to_string(secret).unwrap_or_default();
    let json = json.trim_matches('"').to_owned();
    forms.push(json.replace('/', "\\/"));
    let ascii_json: String = json
        .chars()
        .map(|c| {
            if c.is_ascii() {
                c.to_string()
            } else {
                let mut units = [0u16; 2];
                c.encode_utf16(&mut units)
                    .iter()
                    .map(|unit| format!("\\u{unit:04x}"))
                    .collect()
            }
        })
        .collect();
    forms.push(ascii_json);
    forms.push(json);
    forms.push(url::form_urlencoded::byte_serialize(secret.as_bytes()).collect());
    forms.push(crate::canonical::escape_all(secret));
    forms.sort();
    forms.dedup();
    forms
}

fn base64_forms(secret: &str) -> Vec<String> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let bytes = secret.as_bytes();
    let mut forms: Vec<String> = [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .map(|engine| engine.encode(bytes))
        .collect();
    forms.sort();
    forms.dedup();
    forms
}

/// Replaces `form` in `text`; where the form holds `%XX` escapes, their hex digits match
/// in either case.
fn replace_ignoring_escape_case(text: &str, form: &str) -> String {
    if !form.contains('%') && !form.contains("\\u") {
        return text.replace(form, BLANK);
    }
    let lower_text = text.to_ascii_lowercase();
    let lower_form = form.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut rest = 0;
    let mut search = 0;
    while let Some(found) = lower_text[search..].find(&lower_form) {
        let start = search + found;
        let end = start + lower_form.len();
        // Letters outside escapes must match in case; only hex digits may differ.
        if same_but_escape_case(&text[start..end], form) {
            out.push_str(&text[rest..start]);
            out.push_str(BLANK);
            rest = end;
            search = end;
        } else {
            search = start + 1;
        }
        while !lower_text.is_char_boundary(search) {
            search += 1;
        }
    }
    out.push_str(&text[rest..]);
    out
}

fn same_but_escape_case(candidate: &str, form: &str) -> bool {
    let (candidate, form) = (candidate.as_bytes(), form.as_bytes());
    let mut hex_left = 0;
    for (index, (&a, &b)) in candidate.iter().zip(form).enumerate() {
        if hex_left > 0 {
            hex_left -= 1;
            if !a.eq_ignore_ascii_case(&b) {
                return false;
            }
            continue;
        }
        if a != b {
            return false;
        }
        if b == b'%' {
            hex_left = 2;
        } else if b == b'u' && index > 0 && form[index - 1] == b'\\' {
            hex_left = 4;
        }
    }
    true
}

fn is_url_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "%+._~*!'()-".contains(c)
}

fn is_base64_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "+/_-=".contains(c)
}

/// Replaces each maximal run of `in_word` characters for which `leaks` holds.
fn blank_words(
    text: &str,
    in_word: fn(char) -> bool,
    mut leaks: impl FnMut(&str) -> bool,
) -> String {
    let mut out = String::with_capacity(text.len());
    let mut word_start: Option<usize> = None;
    for (index, c) in text
        .char_indices()
        .chain(std::iter::once((text.len(), ' ')))
    {
        match (in_word(c) && index < text.len(), word_start) {
            (true, None) => word_start = Some(index),
            (false, Some(start)) => {
                let word = &text[start..index];
                out.push_str(if leaks(word) { BLANK } else { word });
                word_start = None;
                if index < text.len() {
                    out.push(c);
                }
            }
            (false, None) if index < text.len() => out.push(c),
            _ => {}
        }
    }
    out
}

/// Form-decoding (`+` is a space) of a word; escapes that are not valid stay as they are.
fn percent_decode(word: &str) -> String {
    url::form_urlencoded::parse(format!("x={word}").as_bytes())
        .next()
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default()
}

fn base64_decodings(word: &str) -> impl Iterator<Item = String> + '_ {
    use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
    use base64::engine::DecodePaddingMode;
    let lenient =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    let engines = [
        GeneralPurpose::new(&base64::alphabet::STANDARD, lenient),
        GeneralPurpose::new(&base64::alphabet::URL_SAFE, lenient),
    ];
    engines.into_iter().filter_map(move |engine| {
        engine
            .decode(word)
            .ok()
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
    })
}

/// Whether `text`, or what it decodes to (percent- or base64-encoded words in it, down to
/// `depth` layers), holds one of `forms`.
fn reveals(text: &str, forms: &[String], depth: u8) -> bool {
    if contains_any(text, forms) {
        return true;
    }
    if depth == 0 {
        return false;
    }
    if text.contains('%') && reveals(&percent_decode(text), forms, depth - 1) {
        return true;
    }
    let mut found = false;
    blank_words(text, is_base64_char, |word| {
        found |= word.len() >= MIN_BASE64_WORD
            && base64_decodings(word).any(|decoded| reveals(&decoded, forms, depth - 1));
        false
    });
    found
}

fn contains_any(text: &str, forms: &[String]) -> bool {
    forms.iter().any(|form| text.contains(form.as_str()))
}

#[cfg(test)]
mod tests;
