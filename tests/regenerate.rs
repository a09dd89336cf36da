//! `regenerate` at the edges, each case a bug found by review and reproduced before its fix:
//! on a session that expired, it must not lock the browser out nor hide what the request
//! inserted; over the key limit the browser keeps a usable session; and it obeys the session
//! size limit as a plain write does. (The suite on every backend is in `conformance.rs`.)
mod common;

use std::time::Duration;

use axum::{routing::get, Router};
use common::{builder, Browser};
use tower_redis_session::{Session, SessionError, SessionStore};

fn regenerate_app(store: &SessionStore) -> Router {
    Router::new()
        .route(
            "/login",
            get(|s: Session| async move {
                s.insert("user", &"alice")?;
                Ok::<_, SessionError>("ok")
            }),
        )
        // insert, then regenerate, then read back what was just inserted
        .route(
            "/insert-regen-get",
            get(|s: Session| async move {
                s.insert("a", &"1")?;
                s.regenerate().await?;
                Ok::<_, SessionError>(format!("{:?}", s.get::<String>("a").await?))
            }),
        )
        .route(
            "/regen",
            get(|s: Session| async move {
                s.regenerate().await?;
                Ok::<_, SessionError>("ok")
            }),
        )
        .route(
            "/set/{k}",
            get(
                |s: Session, axum::extract::Path(k): axum::extract::Path<String>| async move {
                    s.insert(&k, &"v")?;
                    Ok::<_, SessionError>("ok")
                },
            ),
        )
        .route(
            "/set-c-regen",
            get(|s: Session| async move {
                s.insert("c", &"v")?;
                s.regenerate().await?;
                Ok::<_, SessionError>("ok")
            }),
        )
        .route(
            "/big/{k}/{n}",
            get(|s: Session, axum::extract::Path((k, n)): axum::extract::Path<(String, usize)>| async move {
                s.insert(&k, &"x".repeat(n))?;
                Ok::<_, SessionError>("ok")
            }),
        )
        .route(
            "/big-regen/{k}/{n}",
            get(|s: Session, axum::extract::Path((k, n)): axum::extract::Path<(String, usize)>| async move {
                s.insert(&k, &"x".repeat(n))?;
                s.regenerate().await?;
                Ok::<_, SessionError>("ok")
            }),
        )
        .route("/keys", get(common::keys))
        .layer(store.layer())
}

async fn memory(idle_ms: u64) -> SessionStore {
    builder()
        .memory()
        .idle_timeout(Duration::from_millis(idle_ms))
        .build()
        .await
        .unwrap()
}

/// regenerate() on a session that expired: a value inserted before it must still read back.
#[tokio::test]
async fn regenerate_on_expired_session_keeps_staged_inserts_visible() {
    let store = memory(1000).await;
    let mut b = Browser::new(regenerate_app(&store));
    assert_eq!(b.get("/login").await.status, 200);
    tokio::time::sleep(Duration::from_millis(1200)).await; // the session expires
    let r = b.get("/insert-regen-get").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.body, "Some(\"1\")",
        "staged insert invisible after regenerate"
    );
}

/// regenerate() alone on an expired session: the old id is marked ended, and the browser
/// gets no new cookie nor a removal; afterwards every write from it is refused (409).
#[tokio::test]
async fn regenerate_on_expired_session_does_not_lock_the_browser_out() {
    let store = memory(1000).await;
    let mut b = Browser::new(regenerate_app(&store));
    assert_eq!(b.get("/login").await.status, 200);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let r = b.get("/regen").await;
    assert_eq!(r.status, 200, "{r:?}");
    println!("set-cookie after regenerate on expired: {:?}", r.set_cookie);
    let r = b.get("/set/x").await;
    assert_eq!(r.status, 200, "a later write is refused: {r:?}");
}

/// A key staged before regenerate() that takes the session over max_keys: the request fails,
/// but the browser is never left with a dead cookie (whose writes would all get 409): it
/// holds the session under its new id, data intact, and writes within the limit work.
#[tokio::test]
async fn regenerate_over_the_key_limit_keeps_the_browser_usable() {
    let store = builder().memory().max_keys(2).build().await.unwrap();
    let mut b = Browser::new(regenerate_app(&store));
    assert_eq!(b.get("/set/a").await.status, 200);
    assert_eq!(b.get("/set/b").await.status, 200);
    let before = b.cookie.clone();
    let r = b.get("/set-c-regen").await;
    assert_eq!(r.status, 500, "over the key limit: {r:?}");
    assert_ne!(b.cookie, before, "the new id reached the browser");
    assert_eq!(b.get("/keys").await.body, "a,b");
    let r = b.get("/set/a").await;
    assert_eq!(
        r.status, 200,
        "writes refused after a failed regenerate: {r:?}"
    );
}

/// max_session_bytes is enforced by the store for an unloaded write, but not when the same
/// write goes through regenerate().
#[tokio::test]
async fn regenerate_obeys_the_session_size_limit() {
    let server = common::RedisServer::start();
    let store = builder()
        .redis_url(server.url())
        .max_session_bytes(100)
        .build()
        .await
        .unwrap();
    let mut b = Browser::new(regenerate_app(&store));
    assert_eq!(b.get("/big/a/50").await.status, 200);
    let plain = b.peek("/big/b/60").await.status;
    let regen = b.get("/big-regen/b/60").await.status;
    assert_eq!(
        regen, plain,
        "regenerate let the session past max_session_bytes"
    );
    // Nothing over the limit is stored (the regenerated session, refused, is gone, and its
    // cookie with it).
    for key in server.sessions() {
        let stored: Vec<String> = server.cmd(&["HGETALL", &key]);
        let bytes: usize = stored
            .chunks(2)
            .filter(|kv| !kv[0].is_empty() && !kv[0].starts_with('\0'))
            .map(|kv| kv[0].len() + kv[1].len())
            .sum();
        assert!(bytes <= 100, "{bytes} bytes stored");
    }
}
