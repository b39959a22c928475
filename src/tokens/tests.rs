//! Unit tests of the token manager against a scripted, in-process fake provider.
//!
//! The fake counts logins and refreshes apart, answers from a script, reports every call as
//! an event and can hold calls until the test releases them. So the tests wait on events (a
//! call arriving, a token reaching the cache), never for a fixed time; the only deadline is
//! a generous guard against a hang.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::AtomicUsize;

use async_trait::async_trait;
use tokio::sync::{mpsc, Semaphore};

use super::*;
use crate::providers::Grant;

/// Only ever reached when the code under test hangs.
const GUARD: Duration = Duration::from_secs(30);
/// Pause between two looks at a condition that has no event of its own.
const POLL: Duration = Duration::from_millis(5);
const HOUR: Duration = Duration::from_secs(3600);
/// Permits that leave the fake's gate open for good.
const OPEN: usize = 1 << 20;

// ---------------------------------------------------------------------------------------
// The fake provider

#[derive(Debug, Clone, PartialEq, Eq)]
enum Call {
    Login,
    /// With the refresh token it was handed.
    Refresh(String),
}

struct Event {
    call: Call,
    at: Instant,
}

enum Reply {
    Grant {
        value: String,
        expires_in: Duration,
        refresh_token: Option<(String, Option<Duration>)>,
    },
    Fail(ProviderError),
}

fn grant(value: &str, expires_in: Duration) -> Reply {
    Reply::Grant {
        value: value.to_owned(),
        expires_in,
        refresh_token: None,
    }
}

fn grant_with_refresh(value: &str, expires_in: Duration, refresh_token: &str) -> Reply {
    Reply::Grant {
        value: value.to_owned(),
        expires_in,
        refresh_token: Some((refresh_token.to_owned(), None)),
    }
}

fn unreachable(detail: &str) -> Reply {
    Reply::Fail(ProviderError::Unreachable(detail.to_owned()))
}

/// The endpoint refuses the refresh token it was sent (RFC 6749 `invalid_grant`).
fn refresh_refused() -> Reply {
    Reply::Fail(ProviderError::RefreshRejected {
        status: 400,
        detail: "invalid_grant".to_owned(),
    })
}

/// What the test sees of a provider; the manager gets a [`FakeProvider`] pointing at it.
struct Fake {
    name: String,
    logins: AtomicUsize,
    refreshes: AtomicUsize,
    issued: AtomicUsize,
    /// Replies in call order (logins and refreshes alike); when empty, a fresh token
    /// valid for an hour.
    script: Mutex<VecDeque<Reply>>,
    /// Every call takes a permit after reporting itself: no permits holds calls open.
    gate: Semaphore,
    ends_sessions: bool,
    ended: Mutex<Vec<String>>,
    sender: mpsc::UnboundedSender<Event>,
    events: tokio::sync::Mutex<mpsc::UnboundedReceiver<Event>>,
}

impl Fake {
    /// Answers every call at once.
    fn open(name: &str) -> Arc<Fake> {
        Fake::build(name, OPEN, false)
    }

    /// Holds every call until the test releases it.
    fn held(name: &str) -> Arc<Fake> {
        Fake::build(name, 0, false)
    }

    fn ending_sessions(name: &str) -> Arc<Fake> {
        Fake::build(name, OPEN, true)
    }

    fn build(name: &str, permits: usize, ends_sessions: bool) -> Arc<Fake> {
        let (sender, events) = mpsc::unbounded_channel();
        Arc::new(Fake {
            name: name.to_owned(),
            logins: AtomicUsize::new(0),
            refreshes: AtomicUsize::new(0),
            issued: AtomicUsize::new(0),
            script: Mutex::new(VecDeque::new()),
            gate: Semaphore::new(permits),
            ends_sessions,
            ended: Mutex::new(Vec::new()),
            sender,
            events: tokio::sync::Mutex::new(events),
        })
    }

    fn then(&self, reply: Reply) -> &Fake {
        self.script.lock().unwrap().push_back(reply);
        self
    }

    fn provider(self: &Arc<Self>) -> Arc<dyn Provider> {
        Arc::new(FakeProvider(Arc::clone(self)))
    }

    fn logins(&self) -> usize {
        self.logins.load(Ordering::SeqCst)
    }

    fn refreshes(&self) -> usize {
        self.refreshes.load(Ordering::SeqCst)
    }

    /// Lets `calls` held calls (and later ones) go on.
    fn release(&self, calls: usize) {
        self.gate.add_permits(calls);
    }

    fn open_gate(&self) {
        self.gate.add_permits(OPEN);
    }

    /// The next call the manager made, in order; waits for it.
    async fn next_call(&self) -> Event {
        let mut events = self.events.lock().await;
        within(&format!("a call to provider {}", self.name), events.recv())
            .await
            .expect("the fake holds its own sender")
    }

    async fn answer(&self, call: Call) -> Result<Grant, ProviderError> {
        let _ = self.sender.send(Event {
            call,
            at: Instant::now(),
        });
        self.gate
            .acquire()
            .await
            .expect("gate never closed")
            .forget();
        let reply = self.script.lock().unwrap().pop_front();
        let n = self.issued.fetch_add(1, Ordering::SeqCst) + 1;
        match reply.unwrap_or_else(|| grant(&format!("{}-token-{n}", self.name), HOUR)) {
            Reply::Grant {
                value,
                expires_in,
                refresh_token,
            } => {
                let mut grant = Grant::bare(Secret::new(value));
                grant.expires_in = Some(expires_in);
                if let Some((refresh_token, refresh_expires_in)) = refresh_token {
                    grant.refresh_token = Some(Secret::new(refresh_token));
                    grant.refresh_expires_in = refresh_expires_in;
                }
                Ok(grant)
            }
            Reply::Fail(error) => Err(error),
        }
    }
}

struct FakeProvider(Arc<Fake>);

#[async_trait]
impl Provider for FakeProvider {
    async fn login(&self) -> Result<Grant, ProviderError> {
        self.0.logins.fetch_add(1, Ordering::SeqCst);
        self.0.answer(Call::Login).await
    }

    async fn refresh(&self, refresh_token: &Secret) -> Result<Grant, ProviderError> {
        self.0.refreshes.fetch_add(1, Ordering::SeqCst);
        self.0
            .answer(Call::Refresh(refresh_token.expose().to_owned()))
            .await
    }

    async fn end_session(&self, token: &Secret) -> Result<(), ProviderError> {
        self.0.ended.lock().unwrap().push(token.expose().to_owned());
        Ok(())
    }

    fn ends_sessions(&self) -> bool {
        self.0.ends_sessions
    }
}

// ---------------------------------------------------------------------------------------
// Helpers

/// A provider spec as the config parser builds it; the fake ignores its settings. (A
/// config needs a route; this one is never built.)
fn spec(name: &str) -> ProviderSpec {
    let text = format!(
        "providers:\n  {name}: {{ type: static, value: not-used-by-the-fake }}\n\
         routes:\n  - {{ name: r, match: {{ path_prefix: / }}, upstream: {{ url: \"http://127.0.0.1:9\" }} }}\n"
    );
    let mut config = crate::config::parse(&text).expect("test provider config");
    config.providers.remove(0)
}

fn spec_with(name: &str, policy: RefreshPolicy) -> ProviderSpec {
    let mut spec = spec(name);
    spec.refresh = policy;
    spec
}

fn backoff(min_backoff: Duration, max_backoff: Duration) -> RefreshPolicy {
    RefreshPolicy {
        min_backoff,
        max_backoff,
        ..RefreshPolicy::default()
    }
}

/// The fake `api` whose first token comes with the refresh token `r1`, which it then
/// refuses; the test scripts what follows.
fn refusing_its_refresh_token() -> Arc<Fake> {
    let fake = Fake::open("api");
    fake.then(grant_with_refresh("first", HOUR, "r1"))
        .then(refresh_refused());
    fake
}

/// Backoffs longer than any test: a failure is the last call the test sees.
fn long_backoff() -> RefreshPolicy {
    backoff(Duration::from_secs(60), Duration::from_secs(120))
}

/// Short backoffs: the test polls through them (the count of provider calls is exact).
fn short_backoff() -> RefreshPolicy {
    backoff(Duration::from_millis(20), Duration::from_millis(40))
}

/// `name` as a reload changes it: another refresh policy, so the provider is rebuilt.
fn changed_spec(name: &str) -> ProviderSpec {
    let mut changed = spec(name);
    changed.refresh.before_expiry = Duration::from_secs(30);
    changed
}

/// A manager on the test's runtime, as the app builds it (refreshers not started).
fn manager(providers: &[(&ProviderSpec, &Arc<Fake>)]) -> Arc<TokenManager> {
    let providers = providers
        .iter()
        .map(|(spec, fake)| (*spec, fake.provider()))
        .collect();
    let metrics = Arc::new(Metrics::new().expect("metrics"));
    TokenManager::new(providers, Handle::current(), metrics, None)
}

/// A manager of `fakes`, each under its own name with the default refresh policy.
fn manager_of(fakes: &[&Arc<Fake>]) -> Arc<TokenManager> {
    let specs: Vec<ProviderSpec> = fakes.iter().map(|fake| spec(&fake.name)).collect();
    let providers: Vec<(&ProviderSpec, &Arc<Fake>)> =
        specs.iter().zip(fakes.iter().copied()).collect();
    manager(&providers)
}

fn id(manager: &TokenManager, name: &str) -> ProviderId {
    manager.provider_id(name).expect("provider configured")
}

/// One provider, `api`, behind its fake: the set-up of most tests.
struct One {
    fake: Arc<Fake>,
    manager: Arc<TokenManager>,
    api: ProviderId,
}

impl One {
    /// `api` with the default refresh policy, answered by `fake` (scripted or held).
    fn new(fake: Arc<Fake>) -> One {
        One::with_policy(fake, RefreshPolicy::default())
    }

    fn with_policy(fake: Arc<Fake>, policy: RefreshPolicy) -> One {
        let spec = spec_with("api", policy);
        let manager = manager(&[(&spec, &fake)]);
        let api = id(&manager, "api");
        One { fake, manager, api }
    }
}

/// The first request's token, from the login the fake saw.
async fn first_login(manager: &Arc<TokenManager>, api: ProviderId, fake: &Fake) -> Arc<Token> {
    let first = manager.credential(api).await.unwrap();
    assert_eq!(fake.next_call().await.call, Call::Login);
    first
}

/// Rejects `token` as an upstream 401 would, then asks again: the next request's token.
async fn reject_and_ask_again(
    manager: &Arc<TokenManager>,
    api: ProviderId,
    token: &Token,
) -> Arc<Token> {
    manager.reject(api, token.id).await;
    manager.credential(api).await.unwrap()
}

/// Starts the refreshers and waits for the token of their first login.
async fn started(manager: &Arc<TokenManager>, fake: &Fake, name: &str) -> Arc<Token> {
    manager.start_refreshers();
    assert_eq!(fake.next_call().await.call, Call::Login);
    until_cached(manager, name, "the startup token", |_| true).await
}

/// Asks for a token until one comes (through backoffs short enough to poll through).
async fn until_token(manager: &Arc<TokenManager>, api: ProviderId, what: &str) -> Arc<Token> {
    within(what, async {
        loop {
            match manager.credential(api).await {
                Ok(token) => return token,
                Err(_) => tokio::time::sleep(POLL).await,
            }
        }
    })
    .await
}

/// The error's reason names `words`.
fn assert_reason(error: &CredentialUnavailable, words: &str) {
    assert!(error.reason.contains(words), "{}", error.reason);
}

fn slot(manager: &TokenManager, name: &str) -> Arc<Slot> {
    Arc::clone(&manager.slots[id(manager, name).0])
}

/// The usable token in the cache, looked at without counting a lookup or fetching.
async fn cached(manager: &TokenManager, name: &str) -> Option<Arc<Token>> {
    let key = slot(manager, name).key;
    manager
        .shared
        .cache
        .get(&key)
        .await
        .filter(|token| token.is_usable(Instant::now()))
}

fn misses(manager: &TokenManager, name: &str) -> u64 {
    slot(manager, name).lookups.miss.get()
}

async fn status_of(manager: &TokenManager, name: &str) -> ProviderStatus {
    manager
        .status()
        .await
        .into_iter()
        .find(|status| status.provider == name)
        .expect("provider in status")
}

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(GUARD, future)
        .await
        .unwrap_or_else(|_| panic!("timed out after {GUARD:?} waiting for {what}"))
}

/// Waits until the cache holds a token `wanted` accepts (the insert follows the provider's
/// answer, which the test cannot await directly).
async fn until_cached(
    manager: &TokenManager,
    name: &str,
    what: &str,
    wanted: impl Fn(&Token) -> bool,
) -> Arc<Token> {
    within(what, async {
        loop {
            if let Some(token) = cached(manager, name).await.filter(|t| wanted(t)) {
                return token;
            }
            tokio::time::sleep(POLL).await;
        }
    })
    .await
}

async fn until_misses(manager: &TokenManager, name: &str, count: u64) {
    within(&format!("{count} cache misses"), async {
        while misses(manager, name) < count {
            tokio::time::sleep(POLL).await;
        }
    })
    .await;
}

/// `count` concurrent `credential()` calls.
fn spawn_credentials(
    manager: &Arc<TokenManager>,
    name: &str,
    count: usize,
) -> Vec<tokio::task::JoinHandle<Result<Arc<Token>, CredentialUnavailable>>> {
    let id = id(manager, name);
    (0..count)
        .map(|_| {
            let manager = Arc::clone(manager);
            tokio::spawn(async move { manager.credential(id).await })
        })
        .collect()
}

async fn join_all<T>(tasks: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut results = Vec::with_capacity(tasks.len());
    for task in tasks {
        results.push(within("a credential call", task).await.expect("task"));
    }
    results
}

/// The tokens of credential calls that must all have got one.
async fn join_tokens(
    tasks: Vec<tokio::task::JoinHandle<Result<Arc<Token>, CredentialUnavailable>>>,
) -> Vec<Arc<Token>> {
    join_all(tasks)
        .await
        .into_iter()
        .map(|result| result.expect("a token"))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Single flight

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_join_the_one_held_call() {
    const CALLERS: usize = 50;
    let One { fake, manager, api } = One::new(Fake::held("api"));

    let tasks = spawn_credentials(&manager, "api", CALLERS);
    assert_eq!(fake.next_call().await.call, Call::Login);
    // The call is held open until every caller has missed the cache and so is joining it.
    until_misses(&manager, "api", CALLERS as u64).await;
    // Permits for all: a manager that called again per caller fails the count, not a hang.
    fake.open_gate();
    let tokens = join_tokens(tasks).await;

    assert_eq!(fake.logins(), 1, "one provider call for {CALLERS} misses");
    assert_eq!(fake.refreshes(), 0);
    assert!(tokens.iter().all(|token| token.id == tokens[0].id));
    assert!(tokens
        .iter()
        .all(|token| token.value.expose() == "api-token-1"));
    // Later requests are cache hits.
    let again = manager.credential(api).await.unwrap();
    assert_eq!(again.id, tokens[0].id);
    assert_eq!(fake.logins(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replacing_fetch_calls_the_provider_while_requests_keep_the_old_token() {
    let One { fake, manager, api } = One::new(Fake::held("api"));
    fake.release(1);
    let old = manager.credential(api).await.unwrap();
    assert_eq!(fake.next_call().await.call, Call::Login);

    // What the refresher does when a token is due: replace it although it is still usable.
    let replacing = {
        let manager = Arc::clone(&manager);
        let slot = slot(&manager, "api");
        let old = Arc::clone(&old);
        tokio::spawn(async move { manager.shared.fetch(&slot, Some(old)).await })
    };
    assert_eq!(fake.next_call().await.call, Call::Login);
    // While that call is held open, requests take the old token and make no call.
    for _ in 0..10 {
        assert_eq!(manager.credential(api).await.unwrap().id, old.id);
    }
    assert_eq!(fake.logins(), 2);
    fake.release(1);
    let new = within("the replacing fetch", replacing)
        .await
        .unwrap()
        .unwrap();

    assert_ne!(new.id, old.id);
    assert_ne!(new.fingerprint, old.fingerprint);
    assert_eq!(manager.credential(api).await.unwrap().id, new.id);
    assert_eq!(fake.logins(), 2);
}

// ---------------------------------------------------------------------------------------
// Rejecting exactly the token sent

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejecting_the_current_token_purges_it_and_the_next_request_logs_in_once() {
    let One { fake, manager, api } = One::new(Fake::open("api"));
    let first = manager.credential(api).await.unwrap();

    manager.reject(api, first.id).await;
    assert!(cached(&manager, "api").await.is_none(), "purged");
    let second = manager.credential(api).await.unwrap();
    let third = manager.credential(api).await.unwrap();

    assert_ne!(second.id, first.id);
    assert_ne!(second.fingerprint, first.fingerprint);
    assert_eq!(third.id, second.id);
    assert_eq!(fake.logins(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejecting_an_older_token_keeps_the_newer_one() {
    let One { fake, manager, api } = One::new(Fake::open("api"));
    let old = manager.credential(api).await.unwrap();
    let newer = reject_and_ask_again(&manager, api, &old).await;
    assert_eq!(fake.logins(), 2);

    // A late 401 for a request that was sent with the old token.
    manager.reject(api, old.id).await;

    assert_eq!(cached(&manager, "api").await.map(|t| t.id), Some(newer.id));
    assert_eq!(manager.credential(api).await.unwrap().id, newer.id);
    assert_eq!(fake.logins(), 2, "no new login");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_rejections_of_one_token_make_one_login() {
    const REQUESTS: usize = 20;
    let One { fake, manager, api } = One::new(Fake::held("api"));
    fake.release(1);
    let old = manager.credential(api).await.unwrap();
    assert_eq!(fake.next_call().await.call, Call::Login);

    // Each request got a 401 for `old`: it rejects it, then asks for a token to retry with.
    let old_id = old.id;
    let retry = |manager: &Arc<TokenManager>| {
        let manager = Arc::clone(manager);
        tokio::spawn(async move {
            manager.reject(api, old_id).await;
            manager.credential(api).await
        })
    };
    let tasks: Vec<_> = (0..REQUESTS).map(|_| retry(&manager)).collect();
    assert_eq!(fake.next_call().await.call, Call::Login);
    until_misses(&manager, "api", 1 + REQUESTS as u64).await;
    fake.open_gate();
    let tokens = join_tokens(tasks).await;
    let new = &tokens[0];
    assert_ne!(new.id, old.id);
    assert!(tokens.iter().all(|token| token.id == new.id));
    assert_eq!(fake.logins(), 2);

    // Stragglers rejecting `old` once the new token is in: nothing is purged.
    let tasks: Vec<_> = (0..REQUESTS).map(|_| retry(&manager)).collect();
    for result in join_all(tasks).await {
        assert_eq!(result.expect("a token").id, new.id);
    }
    assert_eq!(fake.logins(), 2);
}

// ---------------------------------------------------------------------------------------
// Successor tokens and refresh

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_refresher_logs_in_at_start_without_a_request() {
    let One { fake, manager, api } = One::new(Fake::open("api"));

    let token = started(&manager, &fake, "api").await;

    assert_eq!(manager.credential(api).await.unwrap().id, token.id);
    assert_eq!(fake.logins(), 1);
    assert_eq!(misses(&manager, "api"), 0, "no request had to wait");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_refresher_renews_ahead_of_expiry_with_the_refresh_token() {
    // A 4 s token with before_expiry 2 s: renewal due after 2 s, usable until 3.6 s.
    let fake = Fake::open("api");
    fake.then(grant_with_refresh("first", Duration::from_secs(4), "r1"))
        .then(grant_with_refresh("second", HOUR, "r2"));
    let One { fake, manager, api } = One::with_policy(
        fake,
        RefreshPolicy {
            before_expiry: Duration::from_secs(2),
            ..RefreshPolicy::default()
        },
    );
    let first = first_login(&manager, api, &fake).await;

    manager.start_refreshers();
    let renewal = fake.next_call().await;
    assert_eq!(renewal.call, Call::Refresh("r1".to_owned()));
    assert!(
        renewal.at >= first.refresh_at,
        "not renewed before it is due"
    );
    assert!(
        renewal.at < first.expires_at,
        "renewed {:?} after the old token expired",
        renewal.at - first.expires_at
    );
    let second = until_cached(&manager, "api", "the renewed token", |t| t.id != first.id).await;

    assert_eq!(second.value.expose(), "second");
    assert_ne!(second.fingerprint, first.fingerprint);
    assert_eq!((fake.logins(), fake.refreshes()), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_wakes_the_refresher_which_fetches_the_successor() {
    let One { fake, manager, api } = One::new(Fake::open("api"));
    let first = started(&manager, &fake, "api").await;

    // The token is good for an hour: only the purge can make the refresher call now.
    manager.reject(api, first.id).await;
    assert_eq!(fake.next_call().await.call, Call::Login);
    let second = until_cached(&manager, "api", "the successor", |t| t.id != first.id).await;

    assert_ne!(second.fingerprint, first.fingerprint);
    assert_eq!(fake.logins(), 2);
    assert_eq!(misses(&manager, "api"), 0, "fetched without a request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_refresh_token_is_used_and_replaced_by_the_one_the_refresh_returns() {
    let fake = Fake::open("api");
    fake.then(grant_with_refresh("first", HOUR, "r1"))
        .then(grant_with_refresh("second", HOUR, "r2"))
        .then(grant("third", HOUR));
    let One { fake, manager, api } = One::new(fake);

    let first = first_login(&manager, api, &fake).await;
    let second = reject_and_ask_again(&manager, api, &first).await;
    assert_eq!(fake.next_call().await.call, Call::Refresh("r1".to_owned()));
    // The upstream took the second token for a while before it rejected it too (a second
    // revocation, not an upstream that refuses every token).
    manager.accepted(api);
    let third = reject_and_ask_again(&manager, api, &second).await;
    assert_eq!(fake.next_call().await.call, Call::Refresh("r2".to_owned()));

    assert_eq!(
        [&first, &second, &third].map(|t| t.value.expose().to_owned()),
        ["first", "second", "third"]
    );
    assert!(first.id != second.id && second.id != third.id && first.id != third.id);
    assert!(
        first.fingerprint != second.fingerprint
            && second.fingerprint != third.fingerprint
            && first.fingerprint != third.fingerprint
    );
    assert_eq!((fake.logins(), fake.refreshes()), (1, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_refresh_token_is_not_used() {
    let fake = Fake::open("api");
    fake.then(Reply::Grant {
        value: "first".to_owned(),
        expires_in: HOUR,
        // Expires the instant it is received.
        refresh_token: Some(("r1".to_owned(), Some(Duration::ZERO))),
    });
    let One { fake, manager, api } = One::new(fake);
    let first = first_login(&manager, api, &fake).await;

    reject_and_ask_again(&manager, api, &first).await;

    assert_eq!(fake.next_call().await.call, Call::Login);
    assert_eq!((fake.logins(), fake.refreshes()), (2, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_refresh_token_costs_exactly_one_login() {
    let fake = refusing_its_refresh_token();
    fake.then(grant("second", HOUR));
    let One { fake, manager, api } = One::new(fake);
    let first = first_login(&manager, api, &fake).await;

    manager.reject(api, first.id).await;
    let second = manager
        .credential(api)
        .await
        .expect("the login after the refusal");

    assert_eq!(fake.next_call().await.call, Call::Refresh("r1".to_owned()));
    assert_eq!(fake.next_call().await.call, Call::Login);
    assert_eq!(second.value.expose(), "second");
    assert_eq!((fake.logins(), fake.refreshes()), (2, 1));
    let status = status_of(&manager, "api").await;
    assert_eq!((status.state, status.consecutive_failures), ("valid", 0));

    // The refused refresh token is gone: the next renewal logs in, it does not retry it.
    manager.accepted(api);
    reject_and_ask_again(&manager, api, &second).await;
    assert_eq!(fake.next_call().await.call, Call::Login);
    assert_eq!((fake.logins(), fake.refreshes()), (3, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_refresh_token_is_not_tried_again_when_the_login_after_it_fails() {
    let fake = refusing_its_refresh_token();
    fake.then(unreachable("login endpoint down"))
        .then(grant("second", HOUR));
    let One { fake, manager, api } = One::with_policy(fake, short_backoff());
    let first = first_login(&manager, api, &fake).await;

    manager.reject(api, first.id).await;
    let error = manager.credential(api).await.unwrap_err();
    assert_reason(&error, "login endpoint down");
    assert_eq!(fake.next_call().await.call, Call::Refresh("r1".to_owned()));
    assert_eq!(fake.next_call().await.call, Call::Login);
    let second = until_token(&manager, api, "a token once the login works again").await;

    assert_eq!(second.value.expose(), "second");
    assert_eq!(
        fake.next_call().await.call,
        Call::Login,
        "not the refused token"
    );
    assert_eq!((fake.logins(), fake.refreshes()), (3, 1));
}

// ---------------------------------------------------------------------------------------
// Backoff

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn within_the_backoff_requests_fail_fast_without_a_provider_call() {
    let fake = Fake::open("api");
    fake.then(unreachable("connection refused"));
    let One { fake, manager, api } = One::with_policy(fake, long_backoff());

    let first = manager.credential(api).await.unwrap_err();
    assert_eq!(first.provider, "api");
    assert_eq!(first.retry_after, Duration::from_secs(60), "min_backoff");
    assert_reason(&first, "connection refused");

    for _ in 0..5 {
        let again = manager.credential(api).await.unwrap_err();
        assert!(
            again.retry_after > Duration::ZERO && again.retry_after <= first.retry_after,
            "{:?}",
            again.retry_after
        );
        assert_reason(&again, "connection refused");
        assert_reason(&again, "after 1 failed attempts");
    }
    assert_eq!(fake.logins(), 1, "no call while backing off");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_queued_behind_a_failed_call_take_its_backoff() {
    const CALLERS: usize = 20;
    let fake = Fake::held("api");
    fake.then(unreachable("connection refused"));
    let One { fake, manager, .. } = One::with_policy(fake, long_backoff());

    let tasks = spawn_credentials(&manager, "api", CALLERS);
    assert_eq!(fake.next_call().await.call, Call::Login);
    until_misses(&manager, "api", CALLERS as u64).await;
    fake.open_gate();

    for result in join_all(tasks).await {
        let error = result.expect_err("no token");
        assert_reason(&error, "connection refused");
        assert!(error.retry_after > Duration::ZERO);
    }
    assert_eq!(fake.logins(), 1, "the queued callers did not call again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_error_waits_max_backoff() {
    let policy = backoff(Duration::from_secs(1), HOUR);
    let mfa = Fake::open("mfa");
    mfa.then(Reply::Fail(ProviderError::MfaRequired));
    let flaky = Fake::open("flaky");
    flaky.then(unreachable("connection refused"));
    let (mfa_spec, flaky_spec) = (spec_with("mfa", policy), spec_with("flaky", policy));
    let manager = manager(&[(&mfa_spec, &mfa), (&flaky_spec, &flaky)]);

    let error = manager.credential(id(&manager, "mfa")).await.unwrap_err();
    assert_eq!(error.retry_after, HOUR, "max_backoff");
    assert_reason(&error, "multi-factor");
    let again = manager.credential(id(&manager, "mfa")).await.unwrap_err();
    assert!(again.retry_after > Duration::from_secs(3000));
    assert_eq!(mfa.logins(), 1);
    // The same policy with a transient error starts at min_backoff.
    let error = manager.credential(id(&manager, "flaky")).await.unwrap_err();
    assert_eq!(error.retry_after, Duration::from_secs(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn success_resets_the_failure_state() {
    let fake = Fake::open("api");
    fake.then(unreachable("first outage"))
        .then(Reply::Fail(ProviderError::Timeout(Duration::from_secs(5))))
        .then(grant("good", HOUR))
        .then(unreachable("second outage"));
    let One { fake, manager, api } = One::with_policy(fake, short_backoff());

    manager.credential(api).await.unwrap_err();
    let token = until_token(&manager, api, "a token after two failures").await;
    assert_eq!(token.value.expose(), "good");
    assert_eq!(fake.logins(), 3);
    let status = status_of(&manager, "api").await;
    assert_eq!(status.state, "valid");
    assert_eq!(status.consecutive_failures, 0);
    assert_eq!(status.last_error, None);
    assert_eq!(status.retry_in_seconds, None);

    // The next failure counts from one again and backs off min_backoff, not the third step.
    manager.reject(api, token.id).await;
    let error = manager.credential(api).await.unwrap_err();
    assert_reason(&error, "second outage");
    assert_reason(&error, "after 1 failed attempts");
    assert_eq!(error.retry_after, short_backoff().min_backoff);
    assert_eq!(fake.logins(), 4);
}

// ---------------------------------------------------------------------------------------
// Status

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_each_state_and_fingerprints_never_the_token() {
    let policy = long_backoff();
    let idle = Fake::open("idle");
    let down = Fake::open("down");
    down.then(unreachable("no route to host"));
    let up = Fake::open("up");
    up.then(grant("s3cret-token-of-up", HOUR))
        .then(unreachable("refresh endpoint down"));
    let specs = [
        spec_with("idle", policy),
        spec_with("down", policy),
        spec_with("up", policy),
    ];
    let manager = manager(&[(&specs[0], &idle), (&specs[1], &down), (&specs[2], &up)]);

    let idle_status = status_of(&manager, "idle").await;
    assert_eq!(idle_status.state, "pending");
    assert_eq!(idle_status.token_fingerprint, None);
    assert_eq!(idle_status.seconds_to_expiry, None);

    manager.credential(id(&manager, "down")).await.unwrap_err();
    let down_status = status_of(&manager, "down").await;
    assert_eq!(down_status.state, "unavailable");
    assert_eq!(down_status.consecutive_failures, 1);
    assert!(down_status
        .last_error
        .as_deref()
        .is_some_and(|e| e.contains("no route to host")));
    assert!(down_status
        .retry_in_seconds
        .is_some_and(|s| (1..=60).contains(&s)));
    assert_eq!(down_status.token_fingerprint, None);

    let token = manager.credential(id(&manager, "up")).await.unwrap();
    let up_status = status_of(&manager, "up").await;
    assert_eq!(up_status.state, "valid");
    assert!(up_status.seconds_to_expiry.is_some_and(|s| s > 3000));
    assert!(up_status.last_refresh_unix.is_some());
    let expected = fingerprint(&Secret::new("s3cret-token-of-up"));
    assert_eq!(up_status.token_fingerprint.as_deref(), Some(&*expected));
    assert_eq!(token.fingerprint, expected);

    // A renewal fails while the token is still valid: it keeps being served.
    let slot = slot(&manager, "up");
    manager
        .shared
        .fetch(&slot, Some(Arc::clone(&token)))
        .await
        .unwrap_err();
    let up_status = status_of(&manager, "up").await;
    assert_eq!(up_status.state, "valid_refresh_failing");
    assert_eq!(up_status.consecutive_failures, 1);
    assert_eq!(up_status.token_fingerprint.as_deref(), Some(&*expected));
    assert_eq!(
        manager.credential(id(&manager, "up")).await.unwrap().id,
        token.id
    );
    assert_eq!(up.logins(), 2);

    let json = serde_json::to_string(&manager.status().await).unwrap();
    assert!(!json.contains("s3cret"), "{json}");
    assert!(json.contains(&expected), "{json}");
}

// ---------------------------------------------------------------------------------------
// Config reloads

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_unchanged_providers_and_rebuilds_the_others() {
    let (kept, changed, removed) = (
        Fake::open("kept"),
        Fake::open("changed"),
        Fake::open("removed"),
    );
    let old = manager_of(&[&kept, &changed, &removed]);
    let mut tokens = HashMap::new();
    for name in ["kept", "changed", "removed"] {
        let token = old.credential(id(&old, name)).await.unwrap();
        tokens.insert(name, token);
    }

    let new_specs = [spec("kept"), changed_spec("changed"), spec("added")];
    let (rebuilt, added) = (Fake::open("changed"), Fake::open("added"));
    let mut built = Vec::new();
    let new = old
        .successor(&new_specs, |spec| {
            built.push(spec.name.clone());
            Ok(match spec.name.as_str() {
                "changed" => rebuilt.provider(),
                "added" => added.provider(),
                other => panic!("built {other}, which was unchanged"),
            })
        })
        .unwrap();

    assert_eq!(built, ["changed", "added"]);
    assert!(old.keeps_provider(&new, "kept"));
    assert!(!old.keeps_provider(&new, "changed"));
    assert!(!old.keeps_provider(&new, "added"));
    assert!(!old.keeps_provider(&new, "removed"));
    assert!(new.provider_id("removed").is_none());
    // The kept provider's token carries over: no login.
    let token = new.credential(id(&new, "kept")).await.unwrap();
    assert_eq!(token.id, tokens["kept"].id);
    assert_eq!(kept.logins(), 1);
    // The changed provider is a new one: its new client logs in.
    let token = new.credential(id(&new, "changed")).await.unwrap();
    assert_ne!(token.id, tokens["changed"].id);
    assert_eq!((changed.logins(), rebuilt.logins()), (1, 1));
    // Until retirement, requests still on the old config keep their tokens.
    assert!(cached(&old, "changed").await.is_some());

    old.retire_replaced(&new).await;

    assert!(cached(&old, "changed").await.is_none(), "dropped");
    assert!(cached(&old, "removed").await.is_none(), "dropped");
    assert!(slot(&old, "changed").retired.load(Ordering::Acquire));
    assert!(slot(&old, "removed").retired.load(Ordering::Acquire));
    assert!(!slot(&new, "kept").retired.load(Ordering::Acquire));
    let token = new.credential(id(&new, "kept")).await.unwrap();
    assert_eq!(token.id, tokens["kept"].id);
    assert_eq!(kept.logins(), 1);
    assert_eq!(
        new.credential(id(&new, "changed"))
            .await
            .unwrap()
            .value
            .expose(),
        "changed-token-1"
    );
    assert_eq!(rebuilt.logins(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_whose_provider_cannot_be_built_changes_nothing() {
    let One {
        fake,
        manager: old,
        api,
    } = One::new(Fake::open("api"));
    let token = old.credential(api).await.unwrap();

    let error = old
        .successor(&[changed_spec("api")], |spec| {
            Err(BuildError {
                provider: spec.name.clone(),
                reason: "bad CA file".to_owned(),
            })
        })
        .err()
        .expect("the build error");

    assert_eq!(error.provider, "api");
    assert!(!slot(&old, "api").retired.load(Ordering::Acquire));
    assert_eq!(old.credential(api).await.unwrap().id, token.id);
    assert_eq!(fake.logins(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retiring_a_replaced_provider_stops_its_refresher() {
    let One {
        fake, manager: old, ..
    } = One::new(Fake::open("api"));
    started(&old, &fake, "api").await;

    let rebuilt = Fake::open("api");
    let new = old
        .successor(&[changed_spec("api")], |_| Ok(rebuilt.provider()))
        .unwrap();
    new.start_refreshers();
    assert_eq!(rebuilt.next_call().await.call, Call::Login);
    let old_provider = Arc::downgrade(&slot(&old, "api").provider);

    old.retire_replaced(&new).await;
    assert!(cached(&old, "api").await.is_none(), "its token is dropped");
    // The refresher owns the old manager and so its provider: both go once it stops.
    // (The old token had an hour to run, so only the retirement can end it now.)
    drop(old);
    within("the old refresher to stop", async {
        while old_provider.upgrade().is_some() {
            tokio::time::sleep(POLL).await;
        }
    })
    .await;

    assert_eq!(
        fake.logins(),
        1,
        "the retired provider was not called again"
    );
    let token = until_cached(&new, "api", "the new provider's token", |_| true).await;
    assert_eq!(token.value.expose(), "api-token-1");
    assert_eq!(rebuilt.logins(), 1);
}

/// A kept provider's refresher was started by the old manager; it must not keep that
/// manager, and with it the providers the reload retired, alive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_manager_is_freed_while_a_kept_provider_refreshes_on() {
    let kept = Fake::open("kept");
    let replaced = Fake::open("api");
    let old = manager_of(&[&kept, &replaced]);
    old.start_refreshers();
    until_cached(&old, "kept", "the kept provider's token", |_| true).await;
    until_cached(&old, "api", "the replaced provider's token", |_| true).await;

    let rebuilt = Fake::open("api");
    let new = old
        .successor(&[spec("kept"), changed_spec("api")], |_| {
            Ok(rebuilt.provider())
        })
        .unwrap();
    new.start_refreshers();
    let replaced_provider = Arc::downgrade(&slot(&old, "api").provider);
    let old_manager = Arc::downgrade(&old);
    old.retire_replaced(&new).await;
    drop(old);
    within("the replaced manager and its provider to be freed", async {
        while replaced_provider.upgrade().is_some() || old_manager.upgrade().is_some() {
            tokio::time::sleep(POLL).await;
        }
    })
    .await;
    // The kept provider still has its refresher and its token in the new manager.
    assert!(new.keeps_provider(&new, "kept"));
    assert!(cached(&new, "kept").await.is_some());
}

/// An upstream that refuses every token: one renewal, then its replacement rejected too
/// pauses renewals on rejection; a thousand more rejections make no provider call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_rejecting_every_token_costs_one_renewal_then_a_pause() {
    let One { fake, manager, api } = One::new(Fake::open("api"));
    let first = manager.credential(api).await.unwrap();
    assert_eq!(manager.reject(api, first.id).await, Rejection::Renewing);
    let second = manager.credential(api).await.unwrap();
    assert_ne!(second.id, first.id);
    assert_eq!(manager.reject(api, second.id).await, Rejection::Paused);
    for _ in 0..1000 {
        assert_eq!(manager.reject(api, second.id).await, Rejection::Paused);
        let token = manager.credential(api).await.unwrap();
        assert_eq!(token.id, second.id, "the paused token is kept in use");
    }
    assert_eq!(fake.logins(), 2);
    let status = &manager.status().await[0];
    assert_eq!(status.upstream_rejections, 1);
    assert!(status.rejection_pause_seconds.is_some(), "{status:?}");
}

/// A genuine revocation after the upstream took the token is renewed at once, paused or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accepted_token_ends_the_pause() {
    let One { fake, manager, api } = One::new(Fake::open("api"));
    let first = manager.credential(api).await.unwrap();
    let second = reject_and_ask_again(&manager, api, &first).await;
    assert_eq!(manager.reject(api, second.id).await, Rejection::Paused);
    manager.accepted(api);
    assert_eq!(manager.status().await[0].rejection_pause_seconds, None);
    assert_eq!(manager.reject(api, second.id).await, Rejection::Renewing);
    let third = manager.credential(api).await.unwrap();
    assert_ne!(third.id, second.id);
    assert_eq!(fake.logins(), 3);
}

// ---------------------------------------------------------------------------------------
// Shutdown

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_sessions_ends_the_current_session_and_drops_its_token() {
    let ending = Fake::ending_sessions("ending");
    let plain = Fake::open("plain");
    let manager = manager_of(&[&ending, &plain]);
    let token = manager.credential(id(&manager, "ending")).await.unwrap();
    let plain_token = manager.credential(id(&manager, "plain")).await.unwrap();

    manager.end_sessions().await;

    assert_eq!(*ending.ended.lock().unwrap(), [token.value.expose()]);
    assert!(cached(&manager, "ending").await.is_none());
    assert_eq!(
        cached(&manager, "plain").await.map(|t| t.id),
        Some(plain_token.id)
    );
    assert!(plain.ended.lock().unwrap().is_empty());
}
