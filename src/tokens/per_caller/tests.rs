//! Unit tests of the per-caller cache against an in-process fake provider: keying, the
//! lifetime rule, single flight per caller, refusals and outages, rejections, the bound.
//!
//! The fake reports each call and can hold calls until the test releases them, so tests
//! wait on events, not for fixed times.

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;

use async_trait::async_trait;
use tokio::sync::Semaphore;

use super::*;

const HOUR: Duration = Duration::from_secs(3600);
/// Only reached when the code under test hangs.
const GUARD: Duration = Duration::from_secs(30);
const OPEN: usize = 1 << 20;

/// What the fake answers a subject (the caller token's value).
#[derive(Clone)]
enum Answer {
    /// A token `minted-for-<subject>-<n>`, for `expires_in`, with a refresh token when set.
    Mint {
        expires_in: Duration,
        refresh: bool,
    },
    Refuse,
    Fail,
}

struct Fake {
    exchanges: AtomicUsize,
    refreshes: AtomicUsize,
    answers: Mutex<HashMap<String, Answer>>,
    default: Mutex<Answer>,
    gate: Semaphore,
}

impl Fake {
    fn new(permits: usize) -> Arc<Fake> {
        Arc::new(Fake {
            exchanges: AtomicUsize::new(0),
            refreshes: AtomicUsize::new(0),
            answers: Mutex::new(HashMap::new()),
            default: Mutex::new(Answer::Mint {
                expires_in: HOUR,
                refresh: false,
            }),
            gate: Semaphore::new(permits),
        })
    }

    fn answer(&self, subject: &str, answer: Answer) {
        self.answers
            .lock()
            .unwrap()
            .insert(subject.to_owned(), answer);
    }

    fn answer_all(&self, answer: Answer) {
        *self.default.lock().unwrap() = answer;
    }

    fn exchanges(&self) -> usize {
        self.exchanges.load(Ordering::SeqCst)
    }

    fn refreshes(&self) -> usize {
        self.refreshes.load(Ordering::SeqCst)
    }

    async fn pass_gate(&self) {
        let permit = self.gate.acquire().await.expect("gate open");
        permit.forget();
    }

    fn grant(subject: &str, n: usize, expires_in: Duration, refresh: bool) -> Grant {
        Grant {
            access_token: Secret::new(format!("minted-for-{subject}-{n}")),
            expires_in: Some(expires_in),
            refresh_token: refresh.then(|| Secret::new(format!("refresh-{subject}-{n}"))),
            refresh_expires_in: None,
            token_type: None,
        }
    }
}

struct FakeProvider(Arc<Fake>);

#[async_trait]
impl Provider for FakeProvider {
    async fn login(&self) -> Result<Grant, ProviderError> {
        Err(ProviderError::Unsupported(
            crate::providers::PER_CALLER_ONLY,
        ))
    }

    async fn exchange(&self, subject: &Secret) -> Result<Grant, ProviderError> {
        let fake = &self.0;
        let n = fake.exchanges.fetch_add(1, Ordering::SeqCst) + 1;
        fake.pass_gate().await;
        let answer = fake
            .answers
            .lock()
            .unwrap()
            .get(subject.expose())
            .cloned()
            .unwrap_or_else(|| fake.default.lock().unwrap().clone());
        match answer {
            Answer::Mint {
                expires_in,
                refresh,
            } => Ok(Fake::grant(subject.expose(), n, expires_in, refresh)),
            Answer::Refuse => Err(ProviderError::CallerRefused {
                status: 400,
                error: Some("invalid_request".into()),
                detail: "invalid_request: not this one".into(),
            }),
            Answer::Fail => Err(ProviderError::Failed {
                status: 500,
                detail: "server_error".into(),
            }),
        }
    }

    async fn refresh(&self, refresh_token: &Secret) -> Result<Grant, ProviderError> {
        let fake = &self.0;
        let n = fake.refreshes.fetch_add(1, Ordering::SeqCst) + 1;
        fake.pass_gate().await;
        let subject = refresh_token
            .expose()
            .strip_prefix("refresh-")
            .and_then(|rest| rest.rsplit_once('-'))
            .map(|(subject, _)| subject.to_owned())
            .unwrap_or_default();
        Ok(Fake::grant(&subject, 1000 + n, HOUR, true))
    }
}

fn spec(max_entries: u64) -> ProviderSpec {
    let config = crate::config::parse(&format!(
        r#"
providers:
  sts:
    type: token_exchange
    token_url: http://127.0.0.1:1/oauth/token
    client_id: gateway
    per_caller: {{ max_entries: {max_entries} }}
    refresh: {{ min_backoff: 5s, max_backoff: 20s }}
routes:
  - name: r
    match: {{ path_prefix: / }}
    upstream: {{ url: http://127.0.0.1:2 }}
    inbound: {{ jwt: {{ secret: an-hmac-secret-of-at-least-32-bytes, algorithms: [HS256] }} }}
    credential: {{ provider: sts }}
"#
    ))
    .expect("test config");
    config.providers[0].clone()
}

fn per_caller(fake: &Arc<Fake>, max_entries: u64) -> Arc<PerCaller> {
    let spec = spec(max_entries);
    let metrics = Arc::new(Metrics::new().expect("metrics"));
    let settings = spec.per_caller.expect("per-caller provider");
    Arc::new(PerCaller::new(
        &spec,
        settings,
        Arc::new(FakeProvider(Arc::clone(fake))),
        &metrics,
    ))
}

/// A caller token `value` for subject `sub`, expiring in `ttl` seconds.
fn caller(value: &str, sub: &str, ttl: u64) -> CallerToken {
    CallerToken {
        value: Secret::new(value),
        expires_at_unix: Some(crate::clock::unix_now() + ttl),
        subject: Some(sub.to_owned()),
    }
}

async fn obtain(
    pc: &Arc<PerCaller>,
    caller: &CallerToken,
) -> Result<Arc<Token>, CallerCredentialError> {
    let control = Handle::current();
    tokio::time::timeout(GUARD, pc.obtain(caller, &control))
        .await
        .expect("obtain hung")
        .map(|(token, _)| token)
}

fn value(token: &Token) -> &str {
    token.value.expose()
}

// ---------------------------------------------------------------------------------------
// Keying and lifetimes

#[test]
fn the_key_hashes_provider_and_caller_token_and_shows_neither() {
    let token = "eyJhbGciOi.caller-token.sig";
    let key = CallerKey::of("sts", token);
    assert_eq!(key, CallerKey::of("sts", token));
    assert_ne!(key, CallerKey::of("sts", "eyJhbGciOi.other-token.sig"));
    assert_ne!(key, CallerKey::of("sts2", token));
    // The provider name and token are framed: moving bytes between them is another key.
    assert_ne!(CallerKey::of("ab", "c"), CallerKey::of("a", "bc"));
    assert!(!key
        .0
        .windows(6)
        .any(|w| token.as_bytes().windows(6).any(|t| t == w)));
    assert_eq!(format!("{key:?}"), "CallerKey(..)");
    let caller = caller(token, "alice", 60);
    let shown = format!("{caller:?}");
    assert!(
        !shown.contains("caller-token") && !shown.contains("alice"),
        "{shown}"
    );
}

#[test]
fn a_caller_token_is_usable_only_before_its_exp() {
    let now = Instant::now();
    let past = CallerToken {
        expires_at_unix: Some(crate::clock::unix_now() - 1),
        ..caller("t", "s", 0)
    };
    assert_eq!(past.usable_until(now), None);
    let this_second = CallerToken {
        expires_at_unix: Some(crate::clock::unix_now()),
        ..caller("t", "s", 0)
    };
    assert_eq!(
        this_second.usable_until(now),
        None,
        "no leeway at exp itself"
    );
    let until = caller("t", "s", 100).usable_until(now).unwrap();
    let left = until - now;
    assert!(
        left > Duration::from_secs(98) && left <= Duration::from_secs(100),
        "{left:?}"
    );
    let without_exp = CallerToken {
        expires_at_unix: None,
        ..caller("t", "s", 0)
    };
    assert_eq!(without_exp.usable_until(now), Some(now + FAR));
}

fn token_expiring_in(lifetime: Duration) -> Token {
    let mut grant = Grant::bare(Secret::new("minted"));
    grant.expires_in = Some(lifetime);
    Token::from_grant(1, &grant, &RefreshPolicy::default()).unwrap()
}

#[test]
fn a_minted_token_is_served_until_the_earlier_of_its_expiry_and_the_callers() {
    let now = Instant::now();
    let token = token_expiring_in(Duration::from_secs(600));
    // The caller's token ends first: it bounds serving and keeping alike.
    let caller_until = now + Duration::from_secs(60);
    let (serve, keep) = lifetime(&token, None, caller_until);
    assert_eq!(serve, caller_until);
    assert_eq!(keep, caller_until);
    // The minted token ends first.
    let caller_until = now + Duration::from_secs(6000);
    let (serve, keep) = lifetime(&token, None, caller_until);
    assert_eq!(serve, token.expires_at);
    assert_eq!(keep, token.expires_at);
    // A refresh token keeps the entry (not the serving) as long as it lives...
    let refresh = (Secret::new("r"), Some(now + Duration::from_secs(3000)));
    let (serve, keep) = lifetime(&token, Some(&refresh), caller_until);
    assert_eq!(serve, token.expires_at);
    assert_eq!(keep, now + Duration::from_secs(3000));
    // ...never past the caller's token; one without expiry lives as long as the caller's.
    let (_, keep) = lifetime(&token, Some(&refresh), now + Duration::from_secs(2000));
    assert_eq!(keep, now + Duration::from_secs(2000));
    let endless = (Secret::new("r"), None);
    assert_eq!(
        lifetime(&token, Some(&endless), caller_until).1,
        caller_until
    );
}

// ---------------------------------------------------------------------------------------
// The cache at work

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_concurrent_requests_of_one_caller_make_one_exchange() {
    let fake = Fake::new(0);
    let pc = per_caller(&fake, 100);
    let alice = caller("alice-token", "alice", 600);
    let mut requests = Vec::new();
    for _ in 0..100 {
        let (pc, alice) = (Arc::clone(&pc), alice.clone());
        requests.push(tokio::spawn(async move { obtain(&pc, &alice).await }));
    }
    // Every request missed the cache while the first exchange is held at the gate.
    let started = Instant::now();
    while pc.lookups.miss.get() < 100 {
        assert!(
            started.elapsed() < GUARD,
            "only {} misses",
            pc.lookups.miss.get()
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    fake.gate.add_permits(OPEN);
    let mut values = Vec::new();
    for request in requests {
        values.push(value(&request.await.unwrap().unwrap()).to_owned());
    }
    assert_eq!(fake.exchanges(), 1);
    assert!(
        values.iter().all(|v| v == "minted-for-alice-token-1"),
        "{values:?}"
    );
}

#[tokio::test]
async fn each_caller_gets_its_own_token_and_a_hit_makes_no_call() {
    let fake = Fake::new(OPEN);
    let pc = per_caller(&fake, 100);
    let alice = caller("alice-token", "alice", 600);
    let bob = caller("bob-token", "bob", 600);
    let a = obtain(&pc, &alice).await.unwrap();
    let b = obtain(&pc, &bob).await.unwrap();
    assert_eq!(value(&a), "minted-for-alice-token-1");
    assert_eq!(value(&b), "minted-for-bob-token-2");
    assert_eq!(value(&obtain(&pc, &alice).await.unwrap()), value(&a));
    assert_eq!(fake.exchanges(), 2);
    let status = pc.status().await;
    let counts = status.per_caller.unwrap();
    assert_eq!(counts.cached_callers, 2);
    assert_eq!(counts.exchanges.minted, 2);
    assert_eq!(status.state, "per_caller");
    assert!(status.token_fingerprint.is_none());
}

#[tokio::test]
async fn an_expired_caller_token_gets_nothing() {
    let fake = Fake::new(OPEN);
    let pc = per_caller(&fake, 100);
    let expired = CallerToken {
        expires_at_unix: Some(crate::clock::unix_now() - 5),
        ..caller("old-token", "old", 0)
    };
    assert!(matches!(
        obtain(&pc, &expired).await,
        Err(CallerCredentialError::Expired)
    ));
    assert_eq!(fake.exchanges(), 0);
}

#[tokio::test]
async fn a_refused_caller_is_held_back_and_nobody_else_is() {
    let fake = Fake::new(OPEN);
    let pc = per_caller(&fake, 100);
    fake.answer("mallory-token", Answer::Refuse);
    let mallory = caller("mallory-token", "mallory", 600);
    for _ in 0..5 {
        let Err(CallerCredentialError::Refused(refused)) = obtain(&pc, &mallory).await else {
            panic!("mallory was not refused");
        };
        assert!(
            refused.detail.contains("invalid_request"),
            "{}",
            refused.detail
        );
        assert!(!refused.detail.contains("mallory-token"));
    }
    // Held for min_backoff: one exchange for five requests.
    assert_eq!(fake.exchanges(), 1);
    let alice = caller("alice-token", "alice", 600);
    assert!(obtain(&pc, &alice).await.is_ok());
    let counts = pc.status().await.per_caller.unwrap();
    assert_eq!((counts.refused_callers, counts.cached_callers), (1, 1));
}

#[tokio::test]
async fn one_failing_caller_cannot_lock_the_others_out() {
    let fake = Fake::new(OPEN);
    let pc = per_caller(&fake, 100);
    fake.answer("bad-token", Answer::Fail);
    let bad = caller("bad-token", "bad", 600);
    let Err(CallerCredentialError::Unavailable(unavailable)) = obtain(&pc, &bad).await else {
        panic!("the failing caller got a token");
    };
    assert!(unavailable.retry_after > Duration::ZERO);
    // Held: its next requests make no call.
    assert!(obtain(&pc, &bad).await.is_err());
    assert_eq!(fake.exchanges(), 1);
    // The same subject with another token is still one witness.
    let bad_again = caller("bad-token-2", "bad", 600);
    fake.answer("bad-token-2", Answer::Fail);
    assert!(obtain(&pc, &bad_again).await.is_err());
    for name in ["alice", "bob", "carol"] {
        let token = format!("{name}-token");
        assert!(
            obtain(&pc, &caller(&token, name, 600)).await.is_ok(),
            "{name}"
        );
    }
    assert_eq!(fake.exchanges(), 5);
    assert_eq!(pc.status().await.state, "per_caller");
}

#[tokio::test]
async fn callers_with_two_subjects_failing_back_the_whole_provider_off() {
    let fake = Fake::new(OPEN);
    let pc = per_caller(&fake, 100);
    fake.answer_all(Answer::Fail);
    assert!(obtain(&pc, &caller("a-token", "a", 600)).await.is_err());
    assert!(obtain(&pc, &caller("b-token", "b", 600)).await.is_err());
    assert_eq!(fake.exchanges(), 2);
    // A third caller gets the provider's backoff without a call.
    let Err(CallerCredentialError::Unavailable(unavailable)) =
        obtain(&pc, &caller("c-token", "c", 600)).await
    else {
        panic!("the third caller was not held back");
    };
    assert_eq!(fake.exchanges(), 2);
    assert!(unavailable.retry_after >= Duration::from_secs(1));
    let status = pc.status().await;
    assert_eq!(status.state, "unavailable");
    assert_eq!(
        status.last_error.as_deref(),
        Some("provider failed (HTTP 500)")
    );
    assert!(status.retry_in_seconds.is_some());
}

#[tokio::test]
async fn an_upstream_rejection_renews_that_caller_once_then_pauses() {
    let fake = Fake::new(OPEN);
    let pc = per_caller(&fake, 100);
    let control = Handle::current();
    let alice = caller("alice-token", "alice", 600);
    let bob = caller("bob-token", "bob", 600);
    let (first, key) = pc.obtain(&alice, &control).await.unwrap();
    let (bobs, bob_key) = pc.obtain(&bob, &control).await.unwrap();
    assert_eq!(pc.reject(&key, first.id).await, Rejection::Renewing);
    let (second, _) = pc.obtain(&alice, &control).await.unwrap();
    assert_ne!(value(&second), value(&first));
    // A late rejection of the first token does not purge the second.
    assert_eq!(pc.reject(&key, first.id).await, Rejection::Renewing);
    assert_eq!(
        value(&pc.obtain(&alice, &control).await.unwrap().0),
        value(&second)
    );
    // The replacement rejected too: kept, the caller gets the upstream's answer.
    assert_eq!(pc.reject(&key, second.id).await, Rejection::Paused);
    assert_eq!(
        value(&pc.obtain(&alice, &control).await.unwrap().0),
        value(&second)
    );
    // Accepted once: a later rejection renews again.
    pc.accepted(&key).await;
    assert_eq!(pc.reject(&key, second.id).await, Rejection::Renewing);
    assert_ne!(
        value(&pc.obtain(&alice, &control).await.unwrap().0),
        value(&second)
    );
    // Bob's token was never touched.
    assert_eq!(
        value(&pc.obtain(&bob, &control).await.unwrap().0),
        value(&bobs)
    );
    assert_eq!(pc.reject(&bob_key, bobs.id).await, Rejection::Renewing);
    assert_eq!(fake.exchanges(), 4);
    // Replaced entries left the census: two callers, two entries.
    assert_eq!(pc.status().await.per_caller.unwrap().cached_callers, 2);
}

#[tokio::test]
async fn an_expired_minted_token_is_renewed_with_its_refresh_token() {
    let fake = Fake::new(OPEN);
    let pc = per_caller(&fake, 100);
    fake.answer_all(Answer::Mint {
        expires_in: Duration::from_millis(1500),
        refresh: true,
    });
    let alice = caller("alice-token", "alice", 600);
    let first = obtain(&pc, &alice).await.unwrap();
    // Wait for the token's own expiry (its end is the event under test).
    tokio::time::sleep_until(first.expires_at.into()).await;
    let second = obtain(&pc, &alice).await.unwrap();
    assert_ne!(value(&second), value(&first));
    assert!(
        value(&second).starts_with("minted-for-alice-token-100"),
        "{}",
        value(&second)
    );
    assert_eq!((fake.exchanges(), fake.refreshes()), (1, 1));
}

#[tokio::test]
async fn the_cache_stays_within_its_bound_under_ten_times_more_callers() {
    let fake = Fake::new(OPEN);
    let pc = per_caller(&fake, 10);
    for n in 0..100 {
        let token = format!("caller-{n}");
        assert!(obtain(&pc, &caller(&token, &token, 600)).await.is_ok());
    }
    assert_eq!(fake.exchanges(), 100);
    pc.cache.run_pending_tasks().await;
    assert!(pc.cache.entry_count() <= 10, "{}", pc.cache.entry_count());
    let counted = pc.status().await.per_caller.unwrap().cached_callers;
    assert_eq!(counted, pc.cache.entry_count());
}

// ---------------------------------------------------------------------------------------
// Measurement

/// This process's resident set size, in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS")
        * 1024
}

/// Fills a cache with 100,000 callers whose minted tokens are about
/// `TOLLGATE_MEASURE_TOKEN_BYTES` long (default 1000), and prints the resident memory it
/// took. Run alone, one size per process (freed memory stays with the allocator):
/// `TOLLGATE_MEASURE_TOKEN_BYTES=1000 cargo test --lib memory_of_a_hundred_thousand -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check: run it alone (see its doc comment)"]
async fn memory_of_a_hundred_thousand_cached_callers() {
    const CALLERS: usize = 100_000;
    let token_bytes: usize = std::env::var("TOLLGATE_MEASURE_TOKEN_BYTES")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(1000);
    let fake = Fake::new(OPEN);
    let pc = per_caller(&fake, CALLERS as u64);
    // The minted token is `minted-for-<caller token>-<n>`: the padding makes it long. The
    // callers' tokens exist before and after: they are the requests', not the cache's.
    let padding = "x".repeat(token_bytes.saturating_sub(40));
    let callers: Vec<CallerToken> = (0..CALLERS)
        .map(|n| {
            caller(
                &format!("{padding}caller-{n:06}"),
                &format!("user-{n}"),
                3600,
            )
        })
        .collect();
    pc.cache.run_pending_tasks().await;
    let before = rss();
    let control = Handle::current();
    for caller in &callers {
        pc.obtain(caller, &control).await.expect("minted");
    }
    pc.cache.run_pending_tasks().await;
    let after = rss();
    assert_eq!(pc.cache.entry_count(), CALLERS as u64);
    let started = Instant::now();
    let status = pc.status().await;
    let status_time = started.elapsed();
    assert_eq!(status.per_caller.unwrap().cached_callers, CALLERS as u64);
    let minted_len = obtain(&pc, &callers[0]).await.unwrap().value.expose().len();
    println!(
        "{CALLERS} cached callers, minted tokens of {minted_len} bytes: RSS {} -> {} MiB, {:.1} MiB for the cache, {} bytes per entry; /status counted them in {status_time:?}",
        before >> 20,
        after >> 20,
        (after - before) as f64 / f64::from(1 << 20),
        (after - before) / CALLERS as u64,
    );
}
