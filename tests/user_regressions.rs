//! Regressions of a user's sessions found by review, each reproduced before its fix: a
//! regenerate keeps the binding, a login from an ended cookie starts afresh, listings and
//! stale cookies racing a regenerate never take a live session out of the index, and a login
//! after an idle expiry does not inherit the dead session's age.
mod common;

use std::time::Duration;

use axum::extract::Path;
use axum::http::StatusCode;
use axum::{routing::get, Router};
use common::{builder, send, Browser, RedisServer};
use tower_redis_session::{Session, SessionError, SessionStore};

fn app(store: &SessionStore) -> Router {
    Router::new()
        .route(
            "/login/{user}",
            get(|s: Session, Path(user): Path<String>| async move {
                s.login(&user).await?;
                s.insert("device", &"x")?;
                Ok::<_, SessionError>("ok")
            }),
        )
        .route(
            "/whoami",
            get(|s: Session| async move {
                let user = s.user_id().await?.unwrap_or_else(|| "nobody".into());
                Ok::<_, SessionError>(user)
            }),
        )
        // regenerate without reading the session first (as tests/user_sessions.rs does)
        .route(
            "/regenerate",
            get(|s: Session| async move {
                s.regenerate().await?;
                Ok::<_, SessionError>("ok")
            }),
        )
        .route(
            "/load-regenerate",
            get(|s: Session| async move {
                s.load().await?;
                s.regenerate().await?;
                Ok::<_, SessionError>("ok")
            }),
        )
        .route(
            "/device",
            get(|s: Session| async move {
                Ok::<_, SessionError>(
                    s.get::<String>("device")
                        .await?
                        .unwrap_or_else(|| "none".into()),
                )
            }),
        )
        .route(
            "/logout",
            get(|s: Session| async move {
                s.logout().await?;
                Ok::<_, SessionError>("bye")
            }),
        )
        .layer(store.layer())
}

async fn store(redis: Option<&RedisServer>) -> SessionStore {
    let b = match redis {
        Some(r) => builder().redis_url(r.url()),
        None => builder().memory(),
    };
    b.build().await.unwrap()
}

/// Finding: regenerate of a bound session that the request did not load drops `\0user`.
async fn regenerate_keeps_binding(redis: Option<&RedisServer>) {
    let store = store(redis).await;
    let app = app(&store);
    let mut b = Browser::new(app.clone());
    assert_eq!(b.get("/login/alice").await.status, StatusCode::OK);
    assert_eq!(b.get("/regenerate").await.status, StatusCode::OK);
    let who = b.get("/whoami").await.body;
    let listed = store.user_sessions("alice", &[]).await.unwrap().len();
    store.end_user_sessions("alice", None).await.unwrap();
    let after = b.get("/device").await.body;
    assert_eq!(
        (who.as_str(), listed, after.as_str()),
        ("alice", 1, "none"),
        "user after regenerate, listed, session data after end-all"
    );
}

#[tokio::test]
async fn memory_regenerate_keeps_binding() {
    regenerate_keeps_binding(None).await;
}

#[tokio::test]
async fn redis_regenerate_keeps_binding() {
    let r = RedisServer::start();
    regenerate_keeps_binding(Some(&r)).await;
}

/// Finding: README says a login from an ended cookie is never refused.
#[tokio::test]
async fn login_from_ended_cookie() {
    let store = store(None).await;
    let app = app(&store);
    let mut b = Browser::new(app.clone());
    assert_eq!(b.get("/login/alice").await.status, StatusCode::OK);
    store.end_user_sessions("alice", None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let r1 = b.get("/login/alice").await;
    let r2 = b.get("/login/alice").await;
    assert_eq!(
        (r1.status, r2.status),
        (StatusCode::OK, StatusCode::OK),
        "{r1:?} {r2:?}"
    );
}

/// Finding: a listing that reads an entry before a regenerate and removes it (by id) after
/// drops the live, regenerated session from the index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_racing_regenerate() {
    let r = RedisServer::start();
    let store = store(Some(&r)).await;
    let app = app(&store);
    let mut b = Browser::new(app.clone());
    assert_eq!(b.get("/login/alice").await.status, StatusCode::OK);
    let mut lost_at = None;
    for i in 0..300 {
        let (reply, _) = tokio::join!(b.get("/load-regenerate"), store.user_sessions("alice", &[]));
        assert_eq!(reply.status, StatusCode::OK);
        if store.user_sessions("alice", &[]).await.unwrap().is_empty() {
            lost_at = Some(i);
            break;
        }
    }
    let Some(i) = lost_at else { return };
    // The session is live but out of the index: "end all" does not reach it.
    store.end_user_sessions("alice", None).await.unwrap();
    let who = b.get("/whoami").await.body;
    panic!("lost from the index at round {i}; after end-all the browser is still {who:?}");
}

/// Finding: a login as someone else, racing a regenerate of the same cookie, takes the
/// session out of the first user's index even when it loses the race.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_login_racing_regenerate() {
    let r = RedisServer::start();
    let store = store(Some(&r)).await;
    let app = app(&store);
    let mut survivors = 0;
    for _ in 0..300 {
        let mut b = Browser::new(app.clone());
        assert_eq!(b.get("/login/alice").await.status, StatusCode::OK);
        let cookie = b.cookie.clone();
        let (regen, _other) = tokio::join!(
            send(&app, "/load-regenerate", cookie.as_deref()),
            send(&app, "/login/mallory", cookie.as_deref())
        );
        if regen.status != StatusCode::OK {
            continue;
        }
        let new = regen.cookie_pair();
        if send(&app, "/whoami", new.as_deref()).await.body != "alice" {
            continue;
        }
        store.end_user_sessions("alice", None).await.unwrap();
        if send(&app, "/whoami", new.as_deref()).await.body == "alice" {
            survivors += 1;
        }
    }
    assert_eq!(survivors, 0, "alice sessions that survived end-all");
}

/// Finding: a logout sent with an old cookie of a regenerated session takes the live
/// successor out of the index (leave_index removes by id, whatever key the entry holds).
#[tokio::test]
async fn stale_logout_unindexes_successor() {
    let store = store(None).await;
    let app = app(&store);
    let mut b = Browser::new(app.clone());
    assert_eq!(b.get("/login/alice").await.status, StatusCode::OK);
    let old = b.cookie.clone();
    assert_eq!(b.get("/load-regenerate").await.status, StatusCode::OK);
    let logout = send(&app, "/logout", old.as_deref()).await;
    let listed = store.user_sessions("alice", &[]).await.unwrap().len();
    let ended = store.end_user_sessions("alice", None).await.unwrap();
    let after = b.get("/device").await.body;
    assert_eq!(
        (listed, ended, after.as_str()),
        (1, 1, "none"),
        "listed, ended, successor's data after end-all (logout with old cookie: {:?})",
        logout.status
    );
}

/// Finding: a login whose old session had expired (Absent) inherits the dead session's
/// creation time, so the new login is cut short by the old absolute deadline.
#[tokio::test]
async fn login_after_idle_expiry_starts_a_new_age() {
    let store = builder()
        .memory()
        .idle_timeout(Duration::from_millis(1000))
        .absolute_timeout(Duration::from_millis(2500))
        .build()
        .await
        .unwrap();
    let app = app(&store);
    let mut b = Browser::new(app.clone());
    assert_eq!(b.get("/login/alice").await.status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1800)).await; // idle-expired
    let before = std::time::SystemTime::now();
    assert_eq!(b.get("/login/alice").await.status, StatusCode::OK);
    let listed = store.user_sessions("alice", &[]).await.unwrap();
    let s = &listed[0];
    let left = s.expires.duration_since(before).unwrap_or_default();
    assert!(
        s.created >= before - Duration::from_millis(5),
        "new login created {:?} before the login; expires {left:?} after it",
        before.duration_since(s.created).unwrap_or_default()
    );
}

/// Finding: a regenerate (or login) sent with an old cookie fails with 409, but its Move
/// (Add) already re-pointed the index entry to a key it never creates: the live successor
/// is no longer reachable by "end all" (no listing needed).
#[tokio::test]
async fn stale_regenerate_repoints_index() {
    let store = store(None).await;
    let app = app(&store);
    let mut b = Browser::new(app.clone());
    assert_eq!(b.get("/login/alice").await.status, StatusCode::OK);
    let old = b.cookie.clone();
    assert_eq!(b.get("/load-regenerate").await.status, StatusCode::OK);
    let stale = send(&app, "/regenerate", old.as_deref()).await;
    let ended = store.end_user_sessions("alice", None).await.unwrap();
    let after = b.get("/device").await.body;
    assert_eq!(
        after.as_str(),
        "none",
        "successor's data after end-all (stale regenerate: {:?}, end-all ended {ended})",
        stale.status
    );
}
