//! Keys fetched from a real OIDC issuer: a server this test starts on loopback publishes a
//! discovery document and a JWKS, rotates its keys mid-test, and counts the fetches, so that
//! refreshing on an unknown `kid`, its rate limit, several keys at once, the withdrawal of a
//! key and an unreachable or lying issuer are each seen from the outside.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use portcullis_engine::attest::{
    AttestError, Attestor, DEFAULT_JWKS_MAX_AGE, Refreshed, TrustProvider, TrustProviderSpec,
};
use portcullis_engine::jwks::{FetchError, JwksSource};
use portcullis_lang::schema::ProviderKind;
use serde_json::json;

/// What the issuer publishes, and how often its JWKS was fetched.
#[derive(Default)]
struct Published {
    keys: Vec<Jwk>,
    /// The `issuer` its discovery document names; its own URL unless a test lies.
    names_issuer: Option<String>,
    jwks_fetches: usize,
    /// Bytes of padding in the JWKS, to make it too large.
    padding: usize,
    /// When set, the JWKS is answered only once every issuer sharing it has been asked.
    rendezvous: Option<Arc<Rendezvous>>,
}

/// A meeting of `expected` requests to different issuers: each waits for the others, at most
/// a few seconds, and says whether all came.
struct Rendezvous {
    expected: usize,
    arrived: Mutex<usize>,
    all_here: std::sync::Condvar,
}

impl Rendezvous {
    fn new(expected: usize) -> Rendezvous {
        Rendezvous {
            expected,
            arrived: Mutex::new(0),
            all_here: std::sync::Condvar::new(),
        }
    }

    fn meet(&self) -> bool {
        let mut arrived = self.arrived.lock().unwrap();
        *arrived += 1;
        self.all_here.notify_all();
        let (arrived, _) = self
            .all_here
            .wait_timeout_while(arrived, Duration::from_secs(5), |arrived| {
                *arrived < self.expected
            })
            .unwrap();
        *arrived >= self.expected
    }
}

struct Issuer {
    url: String,
    published: Arc<Mutex<Published>>,
}

impl Issuer {
    fn start() -> Issuer {
        let published = Arc::new(Mutex::new(Published::default()));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let url = format!("http://{addr}");
        let state = (Arc::clone(&published), url.clone());
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let app = Router::new()
                    .route("/.well-known/openid-configuration", get(discovery))
                    .route("/keys", get(jwks))
                    .with_state(state);
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(listener, app).await.unwrap();
            });
        });
        Issuer { url, published }
    }

    fn publish(&self, names: &[&str]) {
        let mut published = self.published.lock().unwrap();
        published.keys = names.iter().map(|name| public_jwk(name)).collect();
    }

    fn fetches(&self) -> usize {
        self.published.lock().unwrap().jwks_fetches
    }
}

type IssuerState = (Arc<Mutex<Published>>, String);

async fn discovery(State((published, url)): State<IssuerState>) -> impl IntoResponse {
    let named = published.lock().unwrap().names_issuer.clone();
    axum::Json(json!({
        "issuer": named.unwrap_or_else(|| url.clone()),
        "jwks_uri": format!("{url}/keys"),
        "id_token_signing_alg_values_supported": ["ES256"],
    }))
}

async fn jwks(State((published, _)): State<IssuerState>) -> axum::response::Response {
    let rendezvous = published.lock().unwrap().rendezvous.clone();
    // Each issuer runs on its own thread, so waiting here holds up no other issuer.
    if rendezvous.is_some_and(|meeting| !meeting.meet()) {
        return axum::http::StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let mut published = published.lock().unwrap();
    published.jwks_fetches += 1;
    let mut body = serde_json::to_value(JwkSet {
        keys: published.keys.clone(),
    })
    .unwrap();
    if published.padding > 0 {
        body["padding"] = json!("x".repeat(published.padding));
    }
    axum::Json(body).into_response()
}

fn encoding_key(name: &str) -> EncodingKey {
    let path = format!("{}/tests/keys/{name}.key.pem", env!("CARGO_MANIFEST_DIR"));
    EncodingKey::from_ec_pem(&std::fs::read(path).unwrap()).unwrap()
}

fn public_jwk(name: &str) -> Jwk {
    let mut jwk = Jwk::from_encoding_key(&encoding_key(name), Algorithm::ES256).unwrap();
    jwk.common.key_id = Some(name.to_owned());
    jwk
}

fn attestor(issuer: &str, jwks: JwksSource, refresh_min: Duration) -> Attestor {
    Attestor::new(vec![provider("local", issuer, jwks, refresh_min)]).unwrap()
}

fn provider(name: &str, issuer: &str, jwks: JwksSource, refresh_min: Duration) -> TrustProvider {
    TrustProvider::new(TrustProviderSpec {
        name: name.to_owned(),
        kind: ProviderKind::Oidc,
        issuer: issuer.to_owned(),
        audiences: vec!["portcullis".to_owned()],
        jwks,
        jwks_refresh_min: refresh_min,
        jwks_max_age: DEFAULT_JWKS_MAX_AGE,
        leeway_s: 60,
        custom_claims: Vec::new(),
        trust_domain: None,
        ca: portcullis_engine::http::TrustRoots::default(),
        example_only: false,
    })
    .unwrap()
}

fn token(issuer: &str, key: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({
        "iss": issuer, "aud": "portcullis", "sub": format!("signed-by-{key}"),
        "iat": now, "exp": now + 300,
    });
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(key.to_owned());
    jsonwebtoken::encode(&header, &claims, &encoding_key(key)).unwrap()
}

/// What the decision API does: attest; on an unknown key, fetch and try once more.
fn attest_as_the_api_does(attestor: &Attestor, token: &str) -> Result<String, AttestError> {
    match attestor.attest(token) {
        Ok(attested) => Ok(attested.subject),
        Err(rejected) => {
            let Some(idx) = attestor.refresh_for(&rejected) else {
                return Err(rejected.error);
            };
            match attestor.refresh(idx) {
                Refreshed::Keys(_) | Refreshed::TooSoon => attestor
                    .attest(token)
                    .map(|attested| attested.subject)
                    .map_err(|rejected| rejected.error),
                Refreshed::Failed(_) | Refreshed::NotRemote => Err(rejected.error),
            }
        }
    }
}

#[test]
fn keys_found_by_discovery_follow_a_rotation() {
    let issuer = Issuer::start();
    issuer.publish(&["p256"]);
    let attestor = attestor(&issuer.url, JwksSource::Discovery, Duration::ZERO);
    let fetched = attestor.fetch_remote_keys();
    assert_eq!(fetched, vec![("local".to_owned(), Refreshed::Keys(1))]);
    assert_eq!(issuer.fetches(), 1);
    let old = token(&issuer.url, "p256");
    assert_eq!(
        attest_as_the_api_does(&attestor, &old).unwrap(),
        "signed-by-p256"
    );

    // The issuer starts a rotation: the new key beside the old. A token signed with the new
    // key makes the provider fetch once, and both keys verify afterwards.
    issuer.publish(&["p256", "p256-second"]);
    let new = token(&issuer.url, "p256-second");
    assert_eq!(
        attest_as_the_api_does(&attestor, &new).unwrap(),
        "signed-by-p256-second"
    );
    assert_eq!(issuer.fetches(), 2);
    assert!(attest_as_the_api_does(&attestor, &old).is_ok());
    assert_eq!(issuer.fetches(), 2, "a known key needs no fetch");

    // The issuer withdraws the old key; the next fetch drops it, and a token it signed,
    // verified before, no longer passes on the strength of having been seen.
    issuer.publish(&["p256-second"]);
    assert_eq!(attestor.refresh(0), Refreshed::Keys(1));
    let error = attest_as_the_api_does(&attestor, &old).unwrap_err();
    assert_eq!(error.code(), "unknown_key", "{error}");
    assert!(attest_as_the_api_does(&attestor, &new).is_ok());
}

/// At start, the keys of every issuer are fetched at once: here each issuer answers only when
/// the other has been asked too, which fetches one after the other would never see.
#[test]
fn the_keys_of_several_issuers_are_fetched_at_once() {
    let meeting = Arc::new(Rendezvous::new(2));
    let issuers = [Issuer::start(), Issuer::start()];
    let mut providers = Vec::new();
    for (n, issuer) in issuers.iter().enumerate() {
        issuer.publish(&["p256"]);
        issuer.published.lock().unwrap().rendezvous = Some(Arc::clone(&meeting));
        let name = format!("issuer-{n}");
        providers.push(provider(
            &name,
            &issuer.url,
            JwksSource::Discovery,
            Duration::from_secs(30),
        ));
    }
    let attestor = Attestor::new(providers).unwrap();
    let fetched = attestor.fetch_remote_keys();
    assert_eq!(fetched.len(), 2);
    for (name, refreshed) in fetched {
        assert!(
            matches!(refreshed, Refreshed::Keys(1)),
            "{name}: {refreshed:?}"
        );
    }
    for issuer in &issuers {
        assert_eq!(issuer.fetches(), 1);
    }
}

#[test]
fn unknown_kids_fetch_at_most_once_per_interval() {
    let issuer = Issuer::start();
    issuer.publish(&["p256"]);
    let attestor = attestor(
        &issuer.url,
        JwksSource::Url(format!("{}/keys", issuer.url)),
        Duration::from_secs(3600),
    );
    attestor.fetch_remote_keys();
    assert_eq!(issuer.fetches(), 1);
    // A flood of tokens naming a key the issuer does not have: no fetch, each an unknown key.
    issuer.publish(&["p256", "p256-second"]);
    for _ in 0..20 {
        let error = attest_as_the_api_does(&attestor, &token(&issuer.url, "p256-second"));
        assert_eq!(error.unwrap_err().code(), "unknown_key");
    }
    assert_eq!(
        issuer.fetches(),
        1,
        "the interval since the last fetch has not passed"
    );
    assert!(attest_as_the_api_does(&attestor, &token(&issuer.url, "p256")).is_ok());
}

#[test]
fn an_unreachable_issuer_leaves_its_callers_denied_with_the_reason() {
    // A port that was free a moment ago: nothing listens there.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let url = format!("http://{addr}");
    let attestor = attestor(&url, JwksSource::Discovery, Duration::ZERO);
    let fetched = attestor.fetch_remote_keys();
    assert!(matches!(
        fetched[0].1,
        Refreshed::Failed(FetchError::Http { .. })
    ));
    let error = attest_as_the_api_does(&attestor, &token(&url, "p256")).unwrap_err();
    assert_eq!(error.code(), "keys_unavailable");
    let message = error.to_string();
    assert!(message.contains("openid-configuration"), "{message}");
}

#[test]
fn a_fetched_jwks_holding_a_published_example_key_is_refused_by_its_url() {
    let issuer = Issuer::start();
    let example: JwkSet = serde_json::from_str(include_str!(
        "../../examples/dev/example-github-issuer.jwks.json"
    ))
    .unwrap();
    issuer.published.lock().unwrap().keys = example.keys;
    let url = format!("{}/keys", issuer.url);
    let attestor = attestor(&issuer.url, JwksSource::Url(url.clone()), Duration::ZERO);
    let fetched = attestor.fetch_remote_keys();
    let Refreshed::Failed(error) = &fetched[0].1 else {
        panic!("{fetched:?}")
    };
    let message = error.to_string();
    assert!(matches!(error, FetchError::Refused { .. }), "{message}");
    assert!(
        message.contains(&format!("`{url}` answered with keys that are refused"))
            && message.contains("example key published in"),
        "{message}"
    );
    let error = attest_as_the_api_does(&attestor, &token(&issuer.url, "p256")).unwrap_err();
    assert_eq!(error.code(), "keys_unavailable");
}

#[test]
fn a_discovery_document_for_another_issuer_is_refused() {
    let issuer = Issuer::start();
    issuer.publish(&["p256"]);
    issuer.published.lock().unwrap().names_issuer = Some("https://elsewhere.invalid".to_owned());
    let attestor = attestor(&issuer.url, JwksSource::Discovery, Duration::ZERO);
    let fetched = attestor.fetch_remote_keys();
    assert!(
        matches!(
            fetched[0].1,
            Refreshed::Failed(FetchError::IssuerMismatch { .. })
        ),
        "{fetched:?}"
    );
    assert_eq!(
        issuer.fetches(),
        0,
        "no key is fetched from a document that lies"
    );
    let error = attest_as_the_api_does(&attestor, &token(&issuer.url, "p256")).unwrap_err();
    assert_eq!(error.code(), "keys_unavailable");
}

#[test]
fn an_oversized_jwks_is_refused_and_the_keys_in_use_stay() {
    let issuer = Issuer::start();
    issuer.publish(&["p256"]);
    let attestor = attestor(
        &issuer.url,
        JwksSource::Url(format!("{}/keys", issuer.url)),
        Duration::ZERO,
    );
    attestor.fetch_remote_keys();
    issuer.published.lock().unwrap().padding = 2 * 1024 * 1024;
    match attestor.refresh(0) {
        Refreshed::Failed(FetchError::Http { detail, .. }) => {
            assert!(detail.contains("larger than"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
    assert!(attest_as_the_api_does(&attestor, &token(&issuer.url, "p256")).is_ok());
}

#[test]
fn keys_are_not_fetched_over_plain_http_from_elsewhere() {
    let error = TrustProvider::new(TrustProviderSpec {
        name: "far".to_owned(),
        kind: ProviderKind::Oidc,
        issuer: "http://idp.example.invalid".to_owned(),
        audiences: vec!["portcullis".to_owned()],
        jwks: JwksSource::Discovery,
        jwks_refresh_min: Duration::ZERO,
        jwks_max_age: DEFAULT_JWKS_MAX_AGE,
        leeway_s: 60,
        custom_claims: Vec::new(),
        trust_domain: None,
        ca: portcullis_engine::http::TrustRoots::default(),
        example_only: false,
    })
    .unwrap_err()
    .to_string();
    assert!(error.contains("only from a loopback address"), "{error}");
}
