//! One suite of session semantics, run against both backends: a real redis-server and the
//! in-process store.

mod common;

use std::time::Duration;

use axum::http::StatusCode;
use common::{app, builder, Browser, RedisServer};
use tower_redis_session::{SessionStore, SessionStoreBuilder};

#[derive(Clone, Copy)]
enum Kind {
    Memory,
    Redis,
}

struct Fixture {
    store: SessionStore,
    redis: Option<RedisServer>,
}

async fn fixture(
    kind: Kind,
    configure: impl FnOnce(SessionStoreBuilder) -> SessionStoreBuilder,
) -> Fixture {
    let (b, redis) = match kind {
        Kind::Memory => (builder().memory(), None),
        Kind::Redis => {
            let server = RedisServer::start();
            (builder().redis_url(server.url()), Some(server))
        }
    };
    let store = configure(b).build().await.expect("store");
    Fixture { store, redis }
}

impl Fixture {
    fn browser(&self) -> Browser {
        Browser::new(app(&self.store))
    }
    /// Number of session hashes in Redis (None for the memory backend).
    fn stored(&self) -> Option<usize> {
        self.redis.as_ref().map(|r| r.keys().len())
    }
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::Kind::Memory).await })*
        }
        mod redis {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::Kind::Redis).await })*
        }
    };
}

conformance!(
    reading_without_cookie_creates_nothing,
    write_creates_session_and_reads_back,
    remove_and_clear,
    concurrent_writes_to_distinct_keys_all_land,
    concurrent_incr_is_exact,
    incr_after_insert_in_same_request_counts_from_it,
    incr_on_non_integer_is_a_clear_error,
    undecodable_value_is_a_clear_error,
    destroy_expires_cookie_and_kills_session,
    logout_wins_over_slow_writer,
    regenerate_keeps_data_and_kills_old_id,
    dead_cookie_write_starts_new_session_under_new_token,
    dead_cookie_read_expires_cookie,
    idle_timeout_expires_session,
    activity_slides_expiry,
    untouched_requests_still_slide_expiry,
    absolute_timeout_ends_even_an_active_session,
    persistent_cookie_max_age_follows_ttl,
);

async fn reading_without_cookie_creates_nothing(kind: Kind) {
    let f = fixture(kind, |b| b).await;
    let mut b = f.browser();
    let r = b.get("/get/user").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, "none");
    assert!(r.set_cookie.is_empty());
    assert_eq!(f.stored().unwrap_or(0), 0);
}

async fn write_creates_session_and_reads_back(kind: Kind) {
    let f = fixture(kind, |b| b).await;
    let mut b = f.browser();
    let r = b.get("/set/user/alice").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.set_cookie.len(), 1);
    assert_eq!(b.get("/get/user").await.body, "alice");
    // A read of an existing browser-session cookie sets no cookie again.
    assert!(b.get("/get/user").await.set_cookie.is_empty());
    assert_eq!(f.stored().unwrap_or(1), 1);
}

async fn remove_and_clear(kind: Kind) {
    let f = fixture(kind, |b| b).await;
    let mut b = f.browser();
    b.get("/set/a/1").await;
    b.get("/set/b/2").await;
    b.get("/set/c/3").await;
    b.get("/remove/b").await;
    assert_eq!(b.get("/keys").await.body, "a,c");
    b.get("/clear").await;
    assert_eq!(b.get("/keys").await.body, "");
    // The session itself survives a clear.
    b.get("/set/d/4").await;
    assert_eq!(b.get("/keys").await.body, "d");
    assert_eq!(f.stored().unwrap_or(1), 1);
}

async fn concurrent_writes_to_distinct_keys_all_land(kind: Kind) {
    let f = fixture(kind, |b| b).await;
    let mut b = f.browser();
    b.get("/set/seed/x").await;
    let n = 32;
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let b = b.clone();
            // Each request loads before any other saves: a blob store would lose updates.
            tokio::spawn(async move { b.peek(&format!("/slow-set/30/k{i:02}/v{i}")).await })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().status, StatusCode::OK);
    }
    let keys = b.get("/keys").await.body;
    assert_eq!(keys.split(',').count(), n + 1, "{keys}");
}

async fn concurrent_incr_is_exact(kind: Kind) {
    let f = fixture(kind, |b| b).await;
    let mut b = f.browser();
    b.get("/incr/n/1").await;
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let b = b.clone();
            tokio::spawn(async move { b.peek("/incr/n/2").await })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().status, StatusCode::OK);
    }
    assert_eq!(b.get("/incr/n/0").await.body, "101");
}

async fn incr_after_insert_in_same_request_counts_from_it(kind: Kind) {
    let f = fixture(kind, |b| b).await;
    let mut b = f.browser();
    b.get("/set-int/n/5").await;
    assert_eq!(b.get("/incr/n/1").await.body, "6");
    assert_eq!(
        b.get("/get/n").await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    ); // an i64, not a String
    assert_eq!(b.get("/incr/n/-6").await.body, "0");
}

async fn incr_on_non_integer_is_a_clear_error(kind: Kind) {
    let f = fixture(kind, |b| b).await;
    let mut b = f.browser();
    b.get("/set/n/abc").await;
    let r = b.get("/incr/n/1").await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(r.body.contains("not an integer"), "{}", r.body);
    assert_eq!(b.get("/get/n").await.body, "abc", "nothing was changed");
}

async fn undecodable_value_is_a_clear_error(kind: Kind) {
    let f = fixture(kind, |b| b).await;
    let mut b = f.browser();
    b.get("/incr/n/3").await;
    let r = b.get("/get/n").await; // asks for a String, holds an integer
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(r.body.contains("does not decode"), "{}", r.body);
}

async fn destroy_expires_cookie_and_kills_session(kind: Kind) {
    let f = fixture(kind, |b| b).await;
    let mut b = f.browser();
    b.get("/set/user/alice").await;
    let old = b.cookie.clone();
    let r = b.get("/destroy").await;
    assert!(r.set_cookie[0].contains("Max-Age=0"), "{:?}", r.set_cookie);
    assert!(b.cookie.is_none());
    // The old cookie, replayed, finds nothing.
    let replay = Browser {
        cookie: old,
        ..f.browser()
    };
    assert_eq!(replay.peek("/get/user").await.body, "none");
    assert_eq!(f.stored().unwrap_or(0), 0);
}

async fn logout_wins_over_slow_writer(kind: Kind) {
    let f = fixture(kind, |b| b).await;
    let mut b = f.browser();
    b.get("/set/user/alice").await;
    let slow = {
        let b = b.clone();
        tokio::spawn(async move { b.peek("/slow-set/300/cart/full").await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let replay = b.clone();
    b.get("/destroy").await;
    let r = slow.await.unwrap();
    assert_eq!(r.status, StatusCode::CONFLICT, "the slow write is refused");
    assert_eq!(replay.peek("/get/user").await.body, "none");
    assert_eq!(replay.peek("/get/cart").await.body, "none");
    assert_eq!(f.stored().unwrap_or(0), 0, "no partial hash left behind");
}

async fn regenerate_keeps_data_and_kills_old_id(kind: Kind) {
    let f = fixture(kind, |b| b).await;
    let mut b = f.browser();
    b.get("/set/user/alice").await;
    let old = b.clone();
    let r = b.get("/regenerate").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_ne!(b.cookie, old.cookie);
    assert_eq!(b.get("/get/user").await.body, "alice");
    assert_eq!(old.peek("/get/user").await.body, "none");
    let r = old.peek("/set/evil/1").await;
    assert_ne!(r.cookie_pair(), old.cookie, "the old id is never revived");
    assert_eq!(b.get("/get/evil").await.body, "none");
}

async fn dead_cookie_write_starts_new_session_under_new_token(kind: Kind) {
    let f = fixture(kind, |b| b.idle_timeout(Duration::from_millis(300))).await;
    let mut b = f.browser();
    b.get("/set/a/1").await;
    let old = b.cookie.clone();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = b.get("/set/b/2").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(b.cookie.is_some());
    assert_ne!(b.cookie, old);
    assert_eq!(b.get("/keys").await.body, "b");
}

async fn dead_cookie_read_expires_cookie(kind: Kind) {
    let f = fixture(kind, |b| b.idle_timeout(Duration::from_millis(300))).await;
    let mut b = f.browser();
    b.get("/set/a/1").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = b.get("/get/a").await;
    assert_eq!(r.body, "none");
    assert!(r.set_cookie[0].contains("Max-Age=0"));
}

async fn idle_timeout_expires_session(kind: Kind) {
    let f = fixture(kind, |b| b.idle_timeout(Duration::from_millis(400))).await;
    let mut b = f.browser();
    b.get("/set/a/1").await;
    assert_eq!(b.peek("/get/a").await.body, "1");
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(b.peek("/get/a").await.body, "none");
    assert_eq!(f.stored().unwrap_or(0), 0);
}

async fn activity_slides_expiry(kind: Kind) {
    let f = fixture(kind, |b| b.idle_timeout(Duration::from_millis(1000))).await;
    let mut b = f.browser();
    b.get("/set/a/1").await;
    // 8 × 250 ms = 2 s, twice the idle timeout, with margin for a loaded machine.
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(b.peek("/get/a").await.body, "1");
    }
}

async fn untouched_requests_still_slide_expiry(kind: Kind) {
    let f = fixture(kind, |b| b.idle_timeout(Duration::from_millis(1000))).await;
    let mut b = f.browser();
    b.get("/set/a/1").await;
    // 8 × 250 ms = 2 s, twice the idle timeout, with margin for a loaded machine.
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(b.peek("/untouched").await.status, StatusCode::OK);
    }
    assert_eq!(b.peek("/get/a").await.body, "1");
}

async fn absolute_timeout_ends_even_an_active_session(kind: Kind) {
    let f = fixture(kind, |b| {
        b.idle_timeout(Duration::from_millis(500))
            .absolute_timeout(Duration::from_millis(1200))
    })
    .await;
    let mut b = f.browser();
    b.get("/set/a/1").await;
    let mut seen_alive = 0;
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if b.peek("/get/a").await.body == "1" {
            seen_alive += 1;
        }
    }
    assert!(
        seen_alive >= 4,
        "alive while active and young: {seen_alive}"
    );
    assert_eq!(
        b.peek("/get/a").await.body,
        "none",
        "ended after 1.2 s despite activity"
    );
    // Regenerating does not restart the clock: covered by the same rule on the stored
    // creation time.
}

async fn persistent_cookie_max_age_follows_ttl(kind: Kind) {
    let f = fixture(kind, |b| {
        b.persistent(true).idle_timeout(Duration::from_secs(600))
    })
    .await;
    let mut b = f.browser();
    let r = b.get("/set/a/1").await;
    assert!(
        r.set_cookie[0].contains("Max-Age=600") || r.set_cookie[0].contains("Max-Age=599"),
        "{:?}",
        r.set_cookie
    );
    let r = b.get("/get/a").await;
    assert!(
        r.set_cookie[0].contains("Max-Age=5") || r.set_cookie[0].contains("Max-Age=600"),
        "refreshed on reads: {:?}",
        r.set_cookie
    );
}
