//! `incr` beyond the conformance suite (`conformance.rs`), each case a bug reproduced before
//! its fix: two counters started concurrently by a request without a session land in one
//! session, and counters beyond 2^53 come back exact from Redis.
mod common;

use std::time::Duration;

use axum::{routing::get, Router};
use common::{builder, Browser};
use tower_redis_session::{Session, SessionError, SessionStore};

/// Two `incr` at once, and the session's keys.
fn counters_app(store: &SessionStore) -> Router {
    Router::new()
        .route(
            "/two-incr",
            get(|s: Session| async move {
                let (a, b) = tokio::join!(s.incr("a", 1), s.incr("b", 1));
                Ok::<_, SessionError>(format!("{} {}", a?, b?))
            }),
        )
        .route("/keys", get(common::keys))
        .layer(store.layer())
}

/// Two concurrent incr() on a request without a session: both counters must land in the
/// one session the browser ends up with.
#[tokio::test]
async fn concurrent_increments_on_a_new_session_share_one_session() {
    let store = builder()
        .memory()
        .idle_timeout(Duration::from_millis(60_000))
        .build()
        .await
        .unwrap();
    let mut b = Browser::new(counters_app(&store));
    let r = b.get("/two-incr").await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = b.get("/keys").await;
    assert_eq!(r.body, "a,b", "one counter went to an orphaned session");
}

/// Same as above, on Redis, where the two incr really interleave.
#[tokio::test]
async fn concurrent_increments_on_a_new_session_share_one_session_redis() {
    let server = common::RedisServer::start();
    let store = builder().redis_url(server.url()).build().await.unwrap();
    let mut b = Browser::new(counters_app(&store));
    let r = b.get("/two-incr").await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = b.get("/keys").await;
    println!("sessions in redis: {:?}", server.sessions());
    assert_eq!(r.body, "a,b", "one counter went to an orphaned session");
}

/// A counter beyond 2^53 on Redis: incr.lua returned HINCRBY's reply, which a script holds as
/// a Lua number (a double), so the value came back rounded, and `i64::MAX` as `i64::MIN`
/// (found by `tests/differential.rs`: the in-process store answered right).
#[tokio::test]
async fn incr_returns_large_counters_exactly_on_redis() {
    let server = common::RedisServer::start();
    let store = builder().redis_url(server.url()).build().await.unwrap();
    let mut b = Browser::new(common::app(&store));
    let cases = [
        (0, i64::MAX),
        ((1 << 53) + 1, 0),
        (-(1 << 53) - 3, 0),
        (i64::MIN + 1, -1),
    ];
    for (start, delta) in cases {
        assert_eq!(b.get(&format!("/set-int/n/{start}")).await.status, 200);
        let r = b.get(&format!("/incr/n/{delta}")).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.body, (start + delta).to_string(), "{start} + {delta}");
    }
}
