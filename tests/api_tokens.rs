//! Tokens in a request header, for clients that keep no cookies: `x-auth-token`, and
//! `Authorization: Bearer`, alone or beside the cookie, through the real tower stack on a
//! real redis-server. (The conformance suite runs on the header too: `tests/conformance.rs`
//! `header::*`.)

mod common;

use axum::body::Body;
use axum::http::{header, HeaderName, Request, StatusCode};
use axum::{routing::get, Router};
use common::{builder, RedisServer};
use http_body_util::BodyExt;
use tower::ServiceExt;
use tower_redis_session::{Session, SessionError, SessionLayer, SessionStore};

const TOKEN: &str = "x-auth-token";

fn app(layer: SessionLayer) -> Router {
    Router::new()
        .route(
            "/set/{v}",
            get(
                |s: Session, axum::extract::Path(v): axum::extract::Path<String>| async move {
                    s.insert("v", &v)?;
                    Ok::<_, SessionError>("ok")
                },
            ),
        )
        .route(
            "/get",
            get(|s: Session| async move {
                Ok::<_, SessionError>(s.get::<String>("v").await?.unwrap_or_else(|| "none".into()))
            }),
        )
        .route(
            "/logout",
            get(|s: Session| async move {
                s.logout().await?;
                Ok::<_, SessionError>("bye")
            }),
        )
        .layer(layer)
}

struct Answer {
    status: StatusCode,
    token: Option<String>,
    set_cookie: Option<String>,
    body: String,
}

async fn call(app: &Router, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut req = Request::get(path);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let res = app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let text = |name: &str| {
        res.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let (token, set_cookie) = (text(TOKEN), text(header::SET_COOKIE.as_str()));
    let status = res.status();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        token,
        set_cookie,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

async fn store(redis: &RedisServer) -> SessionStore {
    builder().redis_url(redis.url()).build().await.unwrap()
}

fn header() -> HeaderName {
    HeaderName::from_static(TOKEN)
}

#[tokio::test]
async fn a_bearer_token_carries_the_session_and_logout_empties_it() {
    let redis = RedisServer::start();
    let store = store(&redis).await;
    let app = app(store.layer().bearer_token(header()));
    let a = call(&app, "/set/hello", &[]).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.set_cookie, None, "no cookie for an API client");
    let token = a.token.expect("a new token in the response header");
    let bearer = format!("Bearer {token}");
    let auth = [("authorization", bearer.as_str())];
    let b = call(&app, "/get", &auth).await;
    assert_eq!(b.body, "hello");
    assert_eq!(b.token, None, "nothing new to say");
    // The scheme is case-insensitive; another scheme is no token.
    let lower = format!("bearer {token}");
    assert_eq!(
        call(&app, "/get", &[("authorization", &lower)]).await.body,
        "hello"
    );
    let basic = format!("Basic {token}");
    assert_eq!(
        call(&app, "/get", &[("authorization", &basic)]).await.body,
        "none"
    );
    let out = call(&app, "/logout", &auth).await;
    assert_eq!(
        out.token.as_deref(),
        Some(""),
        "an ended session empties the header"
    );
    assert_eq!(call(&app, "/get", &auth).await.body, "none");
}

#[tokio::test]
async fn header_values_that_are_not_tokens_are_no_tokens() {
    let redis = RedisServer::start();
    let store = store(&redis).await;
    let app = app(store.layer().token_header(header()));
    let token = call(&app, "/set/v1", &[]).await.token.unwrap();
    // A header that smuggles cookie syntax, a tampered MAC, junk: no session, no error.
    let tampered = format!("{}x", &token[..token.len() - 1]);
    let smuggled = format!("{token}; session={token}");
    let long = "a".repeat(10_000);
    for bad in [smuggled.as_str(), &tampered, "", " ", "%%%", &long] {
        let a = call(&app, "/get", &[(TOKEN, bad)]).await;
        assert_eq!(
            (a.status, a.body.as_str()),
            (StatusCode::OK, "none"),
            "{bad:?}"
        );
    }
    assert_eq!(call(&app, "/get", &[(TOKEN, &token)]).await.body, "v1");
}

#[tokio::test]
async fn cookie_and_header_on_one_route_when_asked() {
    let redis = RedisServer::start();
    let store = store(&redis).await;
    let header_only = app(store.layer().token_header(header()));
    let both = app(store.layer().token_header(header()).with_cookie());
    // A cookie means nothing to a header-only route.
    let first = call(&both, "/set/v1", &[]).await;
    let (token, cookie) = (first.token.unwrap(), first.set_cookie.unwrap());
    let pair = cookie.split(';').next().unwrap().to_owned();
    assert!(
        pair.ends_with(&token),
        "one token, both ways: {pair} {token}"
    );
    assert_eq!(
        call(&header_only, "/get", &[("cookie", &pair)]).await.body,
        "none"
    );
    // Both accepted; each answered the way it came.
    let by_cookie = call(&both, "/set/v2", &[("cookie", &pair)]).await;
    assert_eq!((by_cookie.token, by_cookie.set_cookie), (None, None));
    assert_eq!(call(&both, "/get", &[(TOKEN, &token)]).await.body, "v2");
    let out = call(&both, "/logout", &[(TOKEN, &token)]).await;
    assert_eq!(out.token.as_deref(), Some(""));
    assert_eq!(out.set_cookie, None, "the request came by header");
    assert_eq!(call(&both, "/get", &[("cookie", &pair)]).await.body, "none");
    // The cookie-only layer ignores the header.
    let cookie_only = app(store.layer());
    let token = call(&header_only, "/set/v3", &[]).await.token.unwrap();
    assert_eq!(
        call(&cookie_only, "/get", &[(TOKEN, &token)]).await.body,
        "none"
    );
}
