//! Configuration that cannot work is refused at build time, and error responses tell the
//! client no more than it may know.

#[allow(unused_imports)] // no redis-server here: memory backend and bare routes
mod common;

use axum::{http::StatusCode, routing::get, Router};
use common::{app, builder, send};
use tower_redis_session::{ConfigError, SameSite, SessionError, StoreError};

#[tokio::test]
async fn bad_cookie_path_is_refused() {
    let mut accepted = Vec::new();
    for path in [
        "",
        "app",
        "/app\n",
        "/app ",
        "/a;b",
        "/a\tb",
        "/a\u{7f}",
        "/caf\u{e9}",
    ] {
        match builder().memory().cookie_path(path).build().await {
            Err(ConfigError::CookiePath(p)) => assert_eq!(p, path),
            other => accepted.push(format!("{path:?}: {other:?}")),
        }
    }
    assert!(accepted.is_empty(), "not refused: {accepted:#?}");
    let err = builder().memory().cookie_path("/app\n").build().await;
    let msg = err.map(|_| ()).expect_err("refused").to_string();
    assert!(
        msg.contains(r#""/app\n""#) && msg.contains("must start with '/'"),
        "{msg}"
    );
}

#[tokio::test]
async fn bad_cookie_domain_is_refused() {
    let too_long = format!("a{}com", "a.".repeat(125)); // 254 characters
    let mut accepted = Vec::new();
    for domain in [
        "",
        ".",
        "example.com\n",
        " example.com",
        "example.com;x",
        "a..com",
        "..example.com",
        "example.com.",
        "example.com:8080",
        "https://example.com",
        "exa_mple.com",
        "b\u{fc}cher.de",
        &too_long,
    ] {
        match builder().memory().cookie_domain(domain).build().await {
            Err(ConfigError::CookieDomain(d)) => assert_eq!(d, domain),
            other => accepted.push(format!("{domain:?}: {other:?}")),
        }
    }
    assert!(accepted.is_empty(), "not refused: {accepted:#?}");
}

#[tokio::test]
async fn same_site_none_requires_secure() {
    let err = builder()
        .memory()
        .cookie_same_site(SameSite::None)
        .cookie_secure(false)
        .build()
        .await;
    assert!(
        matches!(err, Err(ConfigError::SameSiteNoneInsecure)),
        "{err:?}"
    );
    let ok = builder()
        .memory()
        .cookie_same_site(SameSite::None)
        .build()
        .await;
    assert!(ok.is_ok(), "SameSite=None with Secure: {ok:?}");
}

#[tokio::test]
async fn valid_cookie_attributes_build_and_set_the_cookie() {
    for (path, domain) in [("/app", "example.com"), ("/", ".Example-1.co.uk")] {
        let store = builder()
            .memory()
            .cookie_path(path)
            .cookie_domain(domain)
            .build()
            .await
            .expect("valid attributes");
        let r = send(&app(&store), "/set/user/alice", None).await;
        assert_eq!(r.status, StatusCode::OK);
        let cookie = r.set_cookie.first().expect("a Set-Cookie");
        assert!(cookie.contains(&format!("Path={path}")), "{cookie}");
        let bare = domain.trim_start_matches('.');
        assert!(cookie.contains(&format!("Domain={bare}")), "{cookie}");
    }
    let longest = format!("{}com", "a.".repeat(125));
    assert_eq!(longest.len(), 253);
    let built = builder().memory().cookie_domain(longest).build().await;
    assert!(built.is_ok(), "{built:?}");
}

/// A real serde_json error, as `Session::get` would wrap it.
fn serde_error() -> serde_json::Error {
    serde_json::from_str::<i64>("\"abc\"").expect_err("not an i64")
}

/// One route per error; each answers with that error.
fn failing() -> Router {
    Router::new()
        .route(
            "/moved",
            get(|| async {
                Err::<(), _>(SessionError::Corrupt("MOVED 1234 10.0.0.7:6379".into()))
            }),
        )
        .route(
            "/decode",
            get(|| async {
                Err::<(), _>(SessionError::Decode {
                    key: "user".into(),
                    source: serde_error(),
                })
            }),
        )
        .route(
            "/noperm",
            get(|| async {
                Err::<(), _>(SessionError::Unavailable(StoreError::Connect(
                    "NOPERM user alice".into(),
                )))
            }),
        )
        .route(
            "/ended",
            get(|| async { Err::<(), _>(SessionError::Ended) }),
        )
}

#[tokio::test]
async fn error_bodies_do_not_leak_internals() {
    let app = failing();
    let serde_message = serde_error().to_string();
    let cases: [(&str, StatusCode, &str, &[&str]); 4] = [
        (
            "/moved",
            StatusCode::INTERNAL_SERVER_ERROR,
            "session error",
            &["10.0.0.7", "MOVED", "1234"],
        ),
        (
            "/decode",
            StatusCode::INTERNAL_SERVER_ERROR,
            "session error",
            &[&serde_message, "invalid type", "user"],
        ),
        (
            "/noperm",
            StatusCode::SERVICE_UNAVAILABLE,
            "session store unavailable",
            &["alice", "NOPERM"],
        ),
        (
            "/ended",
            StatusCode::CONFLICT,
            "the session ended while this request ran; nothing was saved",
            &[],
        ),
    ];
    let mut leaks = Vec::new();
    for (path, status, body, secrets) in cases {
        let r = send(&app, path, None).await;
        assert_eq!(r.status, status, "{path}");
        leaks.extend(
            secrets
                .iter()
                .filter(|s| r.body.contains(**s))
                .map(|s| format!("{path} leaks {s:?}: {}", r.body)),
        );
        if leaks.is_empty() {
            assert_eq!(r.body, body, "{path}");
        }
    }
    assert!(leaks.is_empty(), "{leaks:#?}");
}

/// Durations too long to be deadlines (`Duration::MAX` among them) are refused with an error
/// that names the setting, never a panic, on every backend's path through `build`.
#[tokio::test]
async fn durations_beyond_their_limits_are_refused() {
    use std::time::Duration;
    type Set =
        fn(tower_redis_session::SessionStoreBuilder) -> tower_redis_session::SessionStoreBuilder;
    let cases: [(&str, Set); 4] = [
        ("command_timeout", |b| b.command_timeout(Duration::MAX)),
        ("connect_timeout", |b| b.connect_timeout(Duration::MAX)),
        ("idle_timeout", |b| {
            b.idle_timeout(Duration::MAX)
                .absolute_timeout(Duration::MAX)
        }),
        ("absolute_timeout", |b| b.absolute_timeout(Duration::MAX)),
    ];
    for (name, set) in cases {
        for redis in [false, true] {
            let b = if redis {
                builder().redis_url("redis://127.0.0.1:1")
            } else {
                builder().memory()
            };
            match set(b).build().await {
                Err(ConfigError::TooLong { setting, .. }) => assert_eq!(setting, name),
                other => panic!("{name}: {:?}", other.map(|_| ())),
            }
        }
    }
    // The longest accepted ones build.
    let day = Duration::from_secs(24 * 3600);
    let built = builder()
        .memory()
        .command_timeout(day)
        .connect_timeout(day)
        .build()
        .await;
    assert!(built.is_ok(), "{:?}", built.map(|_| ()));
}
