//! What the stand-ins' own tests share: a client that sends a request and reads the reply
//! whole, and the checks of what every provider stand-in does alike.

use std::future::Future;
use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use serde_json::Value;

use crate::handle::{Provider, StandIn, Switched};
use crate::jwt;

/// A reply, read whole.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    /// The `Content-Type`, empty when there is none.
    pub(crate) content_type: String,
    pub(crate) headers: HeaderMap,
    pub(crate) text: String,
}

impl Reply {
    /// The body as JSON; panics when it is not.
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.text))
    }
}

pub(crate) async fn send(request: reqwest::RequestBuilder) -> Reply {
    let reply = request.send().await.expect("the stand-in answers");
    let status = reply.status().as_u16();
    let headers = reply.headers().clone();
    let content_type = headers
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let text = reply.text().await.expect("a body");
    Reply {
        status,
        content_type,
        headers,
        text,
    }
}

/// POST `url` with `headers` and, when there is one, `body` as JSON.
pub(crate) async fn post(url: &str, headers: &[(&str, &str)], body: Option<&str>) -> Reply {
    let mut request = reqwest::Client::new().post(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some(body) = body {
        request = request
            .header("Content-Type", "application/json")
            .body(body.to_owned());
    }
    send(request).await
}

/// `POST url` with just an `Authorization` header (when given) and an optional JSON body.
pub(crate) async fn post_auth(url: &str, authorization: Option<&str>, body: Option<&str>) -> Reply {
    let headers: Vec<(&str, &str)> = authorization
        .map(|a| ("Authorization", a))
        .into_iter()
        .collect();
    post(url, &headers, body).await
}

/// `HTTP Basic` of `id:secret`, as is (no form encoding).
pub(crate) fn basic(id: &str, secret: &str) -> String {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
    format!("Basic {encoded}")
}

const DELAY: Duration = Duration::from_millis(300);

/// `set_delay` holds the answer to `request` (one that succeeds: it returns the status)
/// back for that long, and zero answers at once again. "At once" is read from the
/// stand-in's count of held answers, not from a clock: a busy machine may take longer
/// than the delay to answer at all.
pub(crate) async fn assert_delay_applies<S, F, R>(stand_in: &StandIn<S>, request: F)
where
    S: Switched,
    F: Fn() -> R,
    R: Future<Output = u16>,
{
    for (delay, slow) in [(DELAY, true), (Duration::ZERO, false)] {
        stand_in.set_delay(delay);
        let held_before = stand_in.delayed_answers();
        let started = Instant::now();
        assert_eq!(request().await, 200);
        let held = stand_in.delayed_answers() - held_before;
        assert_eq!(
            held > 0,
            slow,
            "delay {delay:?}: {held} answer(s) held back"
        );
        if slow {
            assert!(
                started.elapsed() >= DELAY,
                "held back for less than {DELAY:?}"
            );
        }
    }
}

/// Tokens issued after `set_token_ttl(1 s)` are valid until a second has passed; revoked
/// ones are never valid again. `login` returns a token and the lifetime its reply states
/// (`expires_in`, or the JWT's `exp - iat`). Returns the two tokens it had issued.
pub(crate) async fn assert_ttl_expiry_and_revocation<P, F, R>(
    stand_in: &StandIn<P>,
    login: F,
) -> (String, String)
where
    P: Provider,
    F: Fn() -> R,
    R: Future<Output = (String, u64)>,
{
    let (first, _) = login().await;
    assert!(stand_in.is_valid_token(&first));
    stand_in.revoke_all();
    assert!(!stand_in.is_valid_token(&first));

    stand_in.set_token_ttl(Duration::from_secs(1));
    let (second, stated) = login().await;
    assert_eq!(stated, 1, "the stated lifetime follows set_token_ttl");
    assert!(stand_in.is_valid_token(&second));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(!stand_in.is_valid_token(&second));
    (first, second)
}

/// Every method but POST is refused with 405 on each of `urls`, and not counted
/// (`requests` reads the stand-in's counters).
pub(crate) async fn assert_only_post(urls: &[String], requests: impl Fn() -> usize) {
    let client = reqwest::Client::new();
    for url in urls {
        for method in [reqwest::Method::GET, reqwest::Method::PUT] {
            let status = client.request(method, url).send().await.unwrap().status();
            assert_eq!(status, 405, "{url}");
        }
    }
    assert_eq!(requests(), 0);
}

/// The provider stand-in with its default settings (the demo's), on any loopback port.
pub(crate) async fn started<P: Provider>() -> StandIn<P>
where
    P::Settings: Default,
{
    StandIn::<P>::start(P::Settings::default()).await.unwrap()
}

/// `token` is a JWT of `stand_in`: minted for `subject`, issued by its URL, living `ttl`
/// seconds, and valid there (but `nope` is not).
pub(crate) fn assert_jwt_of<P: Provider>(
    stand_in: &StandIn<P>,
    token: &str,
    subject: &str,
    ttl: u64,
) -> jwt::Claims {
    let claims = jwt::verify(token).unwrap();
    assert_eq!(claims.sub, subject);
    assert_eq!(claims.iss, stand_in.url());
    assert_eq!(claims.exp, claims.iat + ttl);
    assert!(stand_in.is_valid_token(token));
    assert!(!stand_in.is_valid_token("nope"));
    claims
}
